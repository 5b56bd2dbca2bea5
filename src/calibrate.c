/* calibrate.c — channel statistics, rankings, the JSON sidecar and the paper's JSON.
 * See calibrate.h for the API and double-sparsity.md §3 for the method. */
#include "calibrate.h"
#include "common.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Sanity bounds on dimensions read from files or passed in: far above any real model, low
 * enough that every product below fits in size_t / int and channel ids fit in int16_t. */
#define MAX_LAYERS 4096
#define MAX_HEADS 4096
#define MAX_HEAD_DIM 4096
#define MAX_FILE_BYTES ((long)256 << 20)
#define FORMAT_NAME "dsinfer-calibration"
#define FORMAT_VERSION 1

static const char *const STAT_NAMES[DS_STAT_COUNT] = {"q", "k", "qk", "qkv", "mass"};
/* The paper's key per statistic; NULL: the paper's format has none (import never sets it,
 * export skips it). */
static const char *const PAPER_PROJ[DS_STAT_COUNT] = {"q_proj", "k_proj", "qk_proj", NULL, NULL};
/* Order of the statistics in our sidecar: qk first (the default), then each newer statistic
 * after the older ones, so the older statistics' text did not move when one was added. */
static const ds_stat SAVE_ORDER[DS_STAT_COUNT] = {DS_STAT_QK, DS_STAT_K, DS_STAT_Q, DS_STAT_QKV, DS_STAT_MASS};

const char *ds_calib_stat_name(ds_stat s) {
    return (unsigned)s < DS_STAT_COUNT ? STAT_NAMES[s] : "?";
}

ds_status ds_calib_stat_parse(const char *name, ds_stat *out) {
    for (int s = 0; s < DS_STAT_COUNT; s++)
        if (name && strcmp(name, STAT_NAMES[s]) == 0) { *out = (ds_stat)s; return DS_OK; }
    return ds_error(DS_ERR_ARG, "unknown calibration statistic '%s' (expected q, k, qk, qkv or mass)",
                    name ? name : "(null)");
}

static int dims_ok(int n_layer, int n_head, int n_head_kv, int head_dim) {
    return n_layer >= 1 && n_layer <= MAX_LAYERS && n_head >= 1 && n_head <= MAX_HEADS &&
           n_head_kv >= 1 && n_head_kv <= n_head && n_head % n_head_kv == 0 && head_dim >= 1 &&
           head_dim <= MAX_HEAD_DIM;
}

/* ---------------------------------------------------------------- accumulation */

struct ds_calib_acc {
    int n_layer, n_head, n_head_kv, head_dim;
    long n_tokens;
    /* Sums in double: millions of small terms would lose their tails in float.
     * sum[Q], sum[QK]: [n_layer][n_head][head_dim] (per query head; the group is reduced in
     * finish, so a per-query-head ranking stays possible later). sum[K]: [n_layer][n_head_kv][head_dim].
     * sum[QKV] is unused: qkv needs three sums, below. */
    double *sum[DS_STAT_COUNT];
    /* qkv: [n_layer][n_head_kv][head_dim] sums of qsum^2 (qsum = the group's query heads
     * summed), k and k^2, and [n_layer] token counts. qsum is formed per token before squaring,
     * because the cross terms q_h q_h' are what shared-group scoring sees. The one-pass
     * variance sum(k^2)/N - mean^2 is off by about eps * mean^2 * sqrt(N) from rounding (about
     * 1e-11 for keys of size 10 over 131k tokens), far below the variance of any channel that
     * matters; a two-pass variance would need every key kept or a second run over the text. */
    double *qkv_q2, *qkv_k, *qkv_k2;
    long *qkv_n;
    uint8_t *fed;              /* [n_layer] bit s set once statistic s received data */
    struct ds_calib_mass *mass;   /* non-NULL: q and k go to the mass sampler instead */
};

void ds_calib_acc_set_mass(ds_calib_acc *a, struct ds_calib_mass *m) { a->mass = m; }

ds_calib_acc *ds_calib_acc_new(int n_layer, int n_head, int n_head_kv, int head_dim) {
    if (!dims_ok(n_layer, n_head, n_head_kv, head_dim)) return NULL;
    ds_calib_acc *a = ds_alloc(sizeof *a);
    if (!a) return NULL;
    a->n_layer = n_layer; a->n_head = n_head; a->n_head_kv = n_head_kv; a->head_dim = head_dim;
    size_t per_q = (size_t)n_layer * (size_t)n_head * (size_t)head_dim;
    size_t per_k = (size_t)n_layer * (size_t)n_head_kv * (size_t)head_dim;
    a->sum[DS_STAT_Q] = ds_alloc(per_q * sizeof(double));
    a->sum[DS_STAT_QK] = ds_alloc(per_q * sizeof(double));
    a->sum[DS_STAT_K] = ds_alloc(per_k * sizeof(double));
    a->qkv_q2 = ds_alloc(per_k * sizeof(double));
    a->qkv_k = ds_alloc(per_k * sizeof(double));
    a->qkv_k2 = ds_alloc(per_k * sizeof(double));
    a->qkv_n = ds_alloc((size_t)n_layer * sizeof(long));
    a->fed = ds_alloc((size_t)n_layer);
    if (!a->sum[DS_STAT_Q] || !a->sum[DS_STAT_K] || !a->sum[DS_STAT_QK] || !a->qkv_q2 || !a->qkv_k ||
        !a->qkv_k2 || !a->qkv_n || !a->fed) {
        ds_calib_acc_free(a);
        return NULL;
    }
    return a;
}

void ds_calib_acc_free(ds_calib_acc *a) {
    if (!a) return;
    for (int s = 0; s < DS_STAT_COUNT; s++) ds_free(a->sum[s]);
    ds_free(a->qkv_q2); ds_free(a->qkv_k); ds_free(a->qkv_k2); ds_free(a->qkv_n);
    ds_free(a->fed);
    ds_free(a);
}

void ds_calib_acc_add_pre_rope(ds_calib_acc *a, int layer, const float *q, const float *k, int T) {
    DS_ASSERT(a && layer >= 0 && layer < a->n_layer && T >= 0);
    if (a->mass) return;
    const size_t d = (size_t)a->head_dim, nq = (size_t)a->n_head * d, nk = (size_t)a->n_head_kv * d;
    double *sq = a->sum[DS_STAT_Q] + (size_t)layer * nq;
    double *sk = a->sum[DS_STAT_K] + (size_t)layer * nk;
    for (size_t t = 0; t < (size_t)T; t++) {
        for (size_t i = 0; i < nq; i++) sq[i] += fabs((double)q[t * nq + i]);
        for (size_t i = 0; i < nk; i++) sk[i] += fabs((double)k[t * nk + i]);
    }
    a->fed[layer] |= (uint8_t)(1u << DS_STAT_Q | 1u << DS_STAT_K);
}

void ds_calib_acc_add_post_rope(ds_calib_acc *a, int layer, const float *q, const float *k, int T) {
    DS_ASSERT(a && layer >= 0 && layer < a->n_layer && T >= 0);
    if (a->mass) { ds_calib_mass_add(a->mass, layer, q, k, T); return; }
    const size_t d = (size_t)a->head_dim, nq = (size_t)a->n_head * d, nk = (size_t)a->n_head_kv * d;
    const size_t group = (size_t)(a->n_head / a->n_head_kv);
    double *sqk = a->sum[DS_STAT_QK] + (size_t)layer * nq;
    for (size_t t = 0; t < (size_t)T; t++)
        for (size_t h = 0; h < (size_t)a->n_head; h++) {
            const float *qh = q + t * nq + h * d, *kh = k + t * nk + (h / group) * d;
            double *s = sqk + h * d;
            for (size_t c = 0; c < d; c++) s[c] += fabs((double)qh[c] * (double)kh[c]);
        }
    double *sq2 = a->qkv_q2 + (size_t)layer * nk, *sk = a->qkv_k + (size_t)layer * nk,
           *sk2 = a->qkv_k2 + (size_t)layer * nk;
    for (size_t t = 0; t < (size_t)T; t++)
        for (size_t g = 0; g < (size_t)a->n_head_kv; g++) {
            const float *qg = q + t * nq + g * group * d, *kg = k + t * nk + g * d;
            const size_t o = g * d;
            for (size_t c = 0; c < d; c++) {
                double qs = 0;   /* head order: fixed, so the sums are bit-reproducible */
                for (size_t j = 0; j < group; j++) qs += (double)qg[j * d + c];
                double kv = (double)kg[c];
                sq2[o + c] += qs * qs;
                sk[o + c] += kv;
                sk2[o + c] += kv * kv;
            }
        }
    a->qkv_n[layer] += T;
    a->fed[layer] |= (uint8_t)(1u << DS_STAT_QK | 1u << DS_STAT_QKV);
}

void ds_calib_acc_tokens(ds_calib_acc *a, long n) { a->n_tokens += n; }
long ds_calib_acc_get_tokens(const ds_calib_acc *a) { return a->n_tokens; }

double ds_calib_acc_value(const ds_calib_acc *a, ds_stat s, int layer, int kv_head, int channel) {
    if (!a || (unsigned)s >= DS_STAT_COUNT || layer < 0 || layer >= a->n_layer || kv_head < 0 ||
        kv_head >= a->n_head_kv || channel < 0 || channel >= a->head_dim || !((a->fed[layer] >> s) & 1))
        return NAN;
    const size_t d = (size_t)a->head_dim, group = (size_t)(a->n_head / a->n_head_kv);
    const size_t kv_at = ((size_t)layer * (size_t)a->n_head_kv + (size_t)kv_head) * d + (size_t)channel;
    if (s == DS_STAT_K) return a->sum[s][kv_at];
    if (s == DS_STAT_QKV) {
        double n = (double)a->qkv_n[layer];
        if (n <= 0) return 0;   /* fed with T = 0: no tokens, no information */
        double mean = a->qkv_k[kv_at] / n, var = a->qkv_k2[kv_at] / n - mean * mean;
        return a->qkv_q2[kv_at] / n * (var > 0 ? var : 0);   /* rounding may leave var just below 0 */
    }
    /* q and qk are kept per query head: sum the group, in head order (fixed, so the result is
     * bit-reproducible). */
    const double *src = a->sum[s] + ((size_t)layer * (size_t)a->n_head + (size_t)kv_head * group) * d + (size_t)channel;
    double v = 0;
    for (size_t j = 0; j < group; j++) v += src[j * d];
    return v;
}

/* ---------------------------------------------------------------- rankings */

struct ds_calibration {
    ds_calib_info info;
    int16_t *rank[DS_STAT_COUNT];   /* [n_layer][n_head_kv][head_dim] or NULL (absent) */
    float *kmean, *kstd;            /* [n_layer][n_head_kv][head_dim] post-RoPE key moments, or NULL */
    float *curve[DS_STAT_COUNT];    /* [n_layer][n_head_kv][DS_CALIB_CURVE_N] per statistic, or NULL */
};

static ds_calibration *calib_new(int n_layer, int n_head, int n_head_kv, int head_dim) {
    ds_calibration *c = ds_alloc(sizeof *c);
    if (!c) return NULL;
    c->info.n_layer = n_layer; c->info.n_head = n_head;
    c->info.n_head_kv = n_head_kv; c->info.head_dim = head_dim;
    return c;
}

static size_t rank_count(const ds_calibration *c) {
    return (size_t)c->info.n_layer * (size_t)c->info.n_head_kv * (size_t)c->info.head_dim;
}

/* Allocates statistic s (idempotent); NULL on out of memory. */
static int16_t *calib_stat(ds_calibration *c, int s) {
    if (!c->rank[s]) c->rank[s] = ds_alloc(rank_count(c) * sizeof(int16_t));
    return c->rank[s];
}

void ds_calibration_free(ds_calibration *c) {
    if (!c) return;
    for (int s = 0; s < DS_STAT_COUNT; s++) ds_free(c->rank[s]);
    ds_free(c->kmean);
    ds_free(c->kstd);
    for (int s = 0; s < DS_STAT_COUNT; s++) ds_free(c->curve[s]);
    ds_free(c);
}

const ds_calib_info *ds_calib_get_info(const ds_calibration *c) { return &c->info; }

/* Writable ranking of (s, layer, kv_head); the statistic must be allocated. */
static int16_t *rank_at(ds_calibration *c, int s, int layer, int kv_head) {
    size_t d = (size_t)c->info.head_dim;
    return c->rank[s] + ((size_t)layer * (size_t)c->info.n_head_kv + (size_t)kv_head) * d;
}

const int16_t *ds_calib_ranking(const ds_calibration *c, ds_stat stat, int layer, int kv_head) {
    if (!c || (unsigned)stat >= DS_STAT_COUNT || !c->rank[stat] || layer < 0 ||
        layer >= c->info.n_layer || kv_head < 0 || kv_head >= c->info.n_head_kv)
        return NULL;
    return rank_at((ds_calibration *)c, stat, layer, kv_head);
}

/* Row (layer, kv_head) of a [n_layer][n_head_kv][head_dim] moment array; NULL if absent or out of range. */
static const float *moment_row(const ds_calibration *c, const float *v, int layer, int kv_head) {
    if (!c || !v || layer < 0 || layer >= c->info.n_layer || kv_head < 0 || kv_head >= c->info.n_head_kv) return NULL;
    return v + ((size_t)layer * (size_t)c->info.n_head_kv + (size_t)kv_head) * (size_t)c->info.head_dim;
}

const float *ds_calib_kmean(const ds_calibration *c, int layer, int kv_head) {
    return moment_row(c, c ? c->kmean : NULL, layer, kv_head);
}

const float *ds_calib_kstd(const ds_calibration *c, int layer, int kv_head) {
    return moment_row(c, c ? c->kstd : NULL, layer, kv_head);
}

int ds_calib_curve_width(int head_dim, int p) { return DS_MAX(1, (p + 1) * head_dim / 16); }

const float *ds_calib_curve(const ds_calibration *c, ds_stat stat, int layer, int kv_head) {
    if (!c || (unsigned)stat >= DS_STAT_COUNT || !c->curve[stat] || layer < 0 || layer >= c->info.n_layer ||
        kv_head < 0 || kv_head >= c->info.n_head_kv)
        return NULL;
    return c->curve[stat] + ((size_t)layer * c->info.n_head_kv + kv_head) * DS_CALIB_CURVE_N;
}

ds_status ds_calib_set_curve(ds_calibration *c, ds_stat stat, const float *curve) {
    if ((unsigned)stat >= DS_STAT_COUNT) return ds_error(DS_ERR_ARG, "calibration: unknown statistic %d", (int)stat);
    const size_t n = (size_t)c->info.n_layer * c->info.n_head_kv * DS_CALIB_CURVE_N;
    for (size_t i = 0; i < n; i++)
        if (!(curve[i] >= 0.0f && curve[i] <= 1.001f))   /* also refuses NaN */
            return ds_error(DS_ERR_ARG, "calibration: curve value %g is not in [0, 1]", (double)curve[i]);
    if (!c->curve[stat] && !(c->curve[stat] = ds_alloc(n * sizeof(float))))
        return ds_error(DS_ERR_OOM, "calibration: out of memory");
    memcpy(c->curve[stat], curve, n * sizeof(float));
    return DS_OK;
}

/* A layer's captured mass at curve index p, summed over its KV heads. */
static double layer_mass(const ds_calibration *c, ds_stat stat, int layer, int p) {
    double v = 0;
    for (int g = 0; g < c->info.n_head_kv; g++) v += ds_calib_curve(c, stat, layer, g)[p];
    return v;
}

ds_status ds_calib_alloc(const ds_calibration *c, ds_stat stat, int r, int cap, const uint8_t *dense_layer,
                         int *widths) {
    const ds_calib_info *in = &c->info;
    const int d = in->head_dim, step = d / 16, L = in->n_layer;
    if (!ds_calib_curve(c, stat, 0, 0))
        return ds_error(DS_ERR_ARG, "--ds-channel-alloc needs the '%s' curves in the calibration, and this one has "
                        "none (written before dsinfer stored them, made with --mass-blocks 0, or a paper import): "
                        "recalibrate with `dsinfer calibrate -m MODEL -f TEXT -o FILE`", ds_calib_stat_name(stat));
    if (step < 1 || r % step || r < step)
        return ds_error(DS_ERR_ARG, "--ds-channel-alloc: the label width (%d channels) must be a multiple of head_dim/16 "
                        "= %d", r, step);
    /* widths as curve indices: w = (p + 1) * step */
    const int p0 = r / step - 1, lo = DS_MAX(0, (r / 2) / step - 1);
    const int hi = DS_MIN(DS_CALIB_CURVE_N - 1, DS_MIN(2 * r, cap) / step - 1);
    int *p = widths;
    for (int l = 0; l < L; l++) p[l] = p0;
    /* every move raises the summed mass by more than 1e-6, and the sum is bounded: ends */
    for (int it = 0; it < L * DS_CALIB_CURVE_N; it++) {
        int a = -1, b = -1, ns = 0;
        double best = 1e-6;
        for (int n = 1; n <= hi - lo; n++) {
            int ga = -1, lb = -1;
            double gain = 0, loss = 0;
            for (int l = 0; l < L; l++) {
                if (dense_layer && dense_layer[l]) continue;
                if (p[l] + n <= hi) {
                    const double v = layer_mass(c, stat, l, p[l] + n) - layer_mass(c, stat, l, p[l]);
                    if (ga < 0 || v > gain) { ga = l; gain = v; }
                }
                if (p[l] - n >= lo) {
                    const double v = layer_mass(c, stat, l, p[l]) - layer_mass(c, stat, l, p[l] - n);
                    if (lb < 0 || v < loss) { lb = l; loss = v; }
                }
            }
            if (ga >= 0 && lb >= 0 && ga != lb && gain - loss > best) { best = gain - loss; a = ga; b = lb; ns = n; }
        }
        if (a < 0) break;
        p[a] += ns;
        p[b] -= ns;
    }
    for (int l = 0; l < L; l++) widths[l] = (p[l] + 1) * step;
    return DS_OK;
}

ds_status ds_calib_require(const ds_calibration *c, ds_stat stat) {
    if (!c) return ds_error(DS_ERR_ARG, "no calibration is loaded");
    if ((unsigned)stat >= DS_STAT_COUNT)
        return ds_error(DS_ERR_ARG, "unknown calibration statistic %d (expected q, k, qk, qkv or mass)", (int)stat);
    if (c->rank[stat]) return DS_OK;
    char have[64] = "";
    for (int i = 0; i < DS_STAT_COUNT; i++) {
        ds_stat s = SAVE_ORDER[i];
        if (c->rank[s]) snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s", have[0] ? ", " : "", STAT_NAMES[s]);
    }
    const int paper = strncmp(c->info.text_name, "paper:", 6) == 0;
    const char *why = "";
    if (stat == DS_STAT_QKV)
        why = paper ? " (the paper's format has no qkv)" : " (the file was written before dsinfer had the qkv statistic)";
    else if (stat == DS_STAT_MASS)
        why = paper ? " (the paper's format has no mass)"
                    : " (the file was calibrated without it: `--mass-blocks 0`, a text too short for one mass block, "
                      "or before dsinfer had it)";
    return ds_error(DS_ERR_ARG,
                    "the calibration has no '%s' statistic%s, only %s: recalibrate with "
                    "`dsinfer calibrate -m MODEL -f TEXT -o FILE` to get it, or pick one of those with --ds-stat",
                    STAT_NAMES[stat], why, have);
}

ds_status ds_calib_set_ranking(ds_calibration *c, ds_stat stat, const int16_t *rank) {
    if (!c || (unsigned)stat >= DS_STAT_COUNT || !rank) return ds_error(DS_ERR_ARG, "calibration: bad ranking");
    const int d = c->info.head_dim;
    uint8_t seen[MAX_HEAD_DIM];
    for (size_t row = 0; row < (size_t)c->info.n_layer * c->info.n_head_kv; row++) {
        memset(seen, 0, (size_t)d);
        for (int i = 0; i < d; i++) {
            const int ch = rank[row * d + i];
            if (ch < 0 || ch >= d || seen[ch]) return ds_error(DS_ERR_ARG, "calibration: a %s ranking is not a permutation", STAT_NAMES[stat]);
            seen[ch] = 1;
        }
    }
    if (!calib_stat(c, stat)) return ds_error(DS_ERR_OOM, "calibration: out of memory");
    memcpy(c->rank[stat], rank, rank_count(c) * sizeof *rank);
    return DS_OK;
}

typedef struct { double v; int id; } scored;

/* Descending value, then ascending id: a total order, so qsort's instability cannot show.
 * NaN (a broken model) sorts as the least important. */
static int cmp_scored(const void *pa, const void *pb) {
    const scored *a = pa, *b = pb;
    double va = isnan(a->v) ? -INFINITY : a->v, vb = isnan(b->v) ? -INFINITY : b->v;
    if (va != vb) return va > vb ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

static void rank_scores(scored *sc, int d, int16_t *out) {
    for (int c = 0; c < d; c++) sc[c].id = c;
    qsort(sc, (size_t)d, sizeof *sc, cmp_scored);
    for (int c = 0; c < d; c++) out[c] = (int16_t)sc[c].id;
}

ds_status ds_calib_finish(const ds_calib_acc *a, ds_calibration **out) {
    *out = NULL;
    int present[DS_STAT_COUNT], any = 0;
    for (int s = 0; s < DS_STAT_COUNT; s++) {
        int n = 0;
        for (int l = 0; l < a->n_layer; l++) n += (a->fed[l] >> s) & 1;
        if (n != 0 && n != a->n_layer)
            return ds_error(DS_ERR_ARG, "calibration: statistic %s was fed for %d of %d layers",
                            STAT_NAMES[s], n, a->n_layer);
        present[s] = n != 0;
        any |= present[s];
    }
    if (!any) return ds_error(DS_ERR_ARG, "calibration: no statistics were accumulated");
    const int d = a->head_dim;
    ds_calibration *c = calib_new(a->n_layer, a->n_head, a->n_head_kv, d);
    scored *sc = ds_alloc((size_t)d * sizeof *sc);
    if (!c || !sc) { ds_free(sc); ds_calibration_free(c); return ds_error(DS_ERR_OOM, "calibration: out of memory"); }
    c->info.text_tokens = a->n_tokens;
    for (int s = 0; s < DS_STAT_COUNT; s++) {
        if (!present[s]) continue;
        if (!calib_stat(c, s)) {
            ds_free(sc); ds_calibration_free(c);
            return ds_error(DS_ERR_OOM, "calibration: out of memory");
        }
        for (int l = 0; l < a->n_layer; l++)
            for (int g = 0; g < a->n_head_kv; g++) {
                for (int ch = 0; ch < d; ch++) sc[ch].v = ds_calib_acc_value(a, (ds_stat)s, l, g, ch);
                rank_scores(sc, d, rank_at(c, s, l, g));
            }
    }
    ds_free(sc);
    if (present[DS_STAT_QKV]) {   /* key moments from the qkv sums */
        c->kmean = ds_alloc(rank_count(c) * sizeof(float));
        c->kstd = ds_alloc(rank_count(c) * sizeof(float));
        if (!c->kmean || !c->kstd) { ds_calibration_free(c); return ds_error(DS_ERR_OOM, "calibration: out of memory"); }
        for (int l = 0; l < a->n_layer; l++) {
            const double n = (double)a->qkv_n[l];
            for (size_t i = (size_t)l * a->n_head_kv * d; i < (size_t)(l + 1) * a->n_head_kv * d; i++) {
                const double mean = n > 0 ? a->qkv_k[i] / n : 0, var = n > 0 ? a->qkv_k2[i] / n - mean * mean : 0;
                c->kmean[i] = (float)mean;
                c->kstd[i] = (float)sqrt(var > 0 ? var : 0);   /* rounding may leave var just below 0 */
            }
        }
    }
    *out = c;
    return DS_OK;
}

int ds_calib_hf_to_gguf(int c, int head_dim) {
    if (head_dim <= 0 || head_dim % 2 || c < 0 || c >= head_dim) return -1;
    int half = head_dim / 2;
    return 2 * (c % half) + (c >= half);
}

static int gguf_to_hf(int g, int head_dim) { return g / 2 + (g % 2) * (head_dim / 2); }

/* ---------------------------------------------------------------- file helpers */

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Reads a whole file, NUL-terminated (cJSON wants a terminator for require_null_terminated). */
static ds_status read_file(const char *path, char **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return ds_error(DS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return ds_error(DS_ERR_IO, "%s: not a regular file", path);
    }
    long n = (long)sb.st_size;
    if (n > MAX_FILE_BYTES) {
        fclose(f);
        return ds_error(DS_ERR_FORMAT, "%s: %ld bytes is too large for a calibration file", path, n);
    }
    char *b = malloc((size_t)n + 1);
    if (!b) { fclose(f); return ds_error(DS_ERR_OOM, "%s: out of memory", path); }
    size_t got = fread(b, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) { free(b); return ds_error(DS_ERR_IO, "%s: short read", path); }
    b[n] = 0;
    *buf = b; *len = (size_t)n;
    return DS_OK;
}

/* Parses JSON text with cJSON; syntax errors name the line and column. */
static ds_status parse_json(const char *path, cJSON **root) {
    char *buf = NULL; size_t len = 0;
    ds_status st = read_file(path, &buf, &len);
    if (st) return st;
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(buf, len + 1, &end, 1);
    if (!*root) {
        int line = 1, col = 1;
        for (const char *p = buf; end && p < end && p < buf + len; p++) {
            if (*p == '\n') { line++; col = 1; } else col++;
        }
        st = len == 0 ? ds_error(DS_ERR_FORMAT, "%s: empty file", path)
                      : ds_error(DS_ERR_FORMAT, "%s: not valid JSON (truncated or malformed) at line %d, column %d",
                                 path, line, col);
    }
    free(buf);
    return st;
}

static const char *json_kind(const cJSON *j) {
    if (!j) return "nothing (missing)";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsArray(j)) return "a list";
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "an invalid value";
}

/* An integral JSON number in [lo, hi]; else DS_ERR_FORMAT naming `what`. hi <= 2^53 keeps
 * every such value exact in the double that cJSON stores. */
static ds_status json_int(const char *path, const cJSON *j, const char *what, double lo, double hi,
                          double *out) {
    if (!cJSON_IsNumber(j))
        return ds_error(DS_ERR_FORMAT, "%s: %s: expected an integer, got %s", path, what, json_kind(j));
    double v = j->valuedouble;
    if (!isfinite(v) || v != floor(v) || v < lo || v > hi)
        return ds_error(DS_ERR_FORMAT, "%s: %s: expected an integer in [%.0f, %.0f], got %g",
                        path, what, lo, hi, v);
    *out = v;
    return DS_OK;
}

static int cmp_key(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Rejects an object that names a key twice (cJSON keeps both; lookups would see only one).
 * Sorted, not pairwise, so a hostile file with millions of keys stays fast. */
static ds_status json_unique_keys(const char *path, const cJSON *obj, const char *what) {
    size_t n = 0, i = 0;
    for (const cJSON *a = obj->child; a; a = a->next) n++;
    if (n < 2) return DS_OK;
    const char **keys = malloc(n * sizeof *keys);
    if (!keys) return ds_error(DS_ERR_OOM, "calibration: out of memory");
    for (const cJSON *a = obj->child; a; a = a->next) keys[i++] = a->string;
    qsort(keys, n, sizeof *keys, cmp_key);
    ds_status st = DS_OK;
    for (i = 1; i < n && !st; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0)
            st = ds_error(DS_ERR_FORMAT, "%s: %s: key \"%s\" appears twice", path, what, keys[i]);
    free(keys);
    return st;
}

/* A list of exactly d channel ids forming a permutation of 0..d-1, into out[d]. */
static ds_status parse_perm(const char *path, const cJSON *j, int d, int16_t *out, const char *where) {
    if (!cJSON_IsArray(j))
        return ds_error(DS_ERR_FORMAT, "%s: %s: expected a list of %d channel ids, got %s",
                        path, where, d, json_kind(j));
    uint8_t seen[MAX_HEAD_DIM] = {0};
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        if (n == d)
            return ds_error(DS_ERR_FORMAT, "%s: %s: more than head_dim = %d channel ids", path, where, d);
        char what[160];
        snprintf(what, sizeof what, "%s entry %d", where, n);
        double v;
        ds_status st = json_int(path, e, what, 0, d - 1, &v);
        if (st) return st;
        if (seen[(int)v]++)
            return ds_error(DS_ERR_FORMAT, "%s: %s: channel %d appears twice (not a permutation of 0..%d)",
                            path, where, (int)v, d - 1);
        out[n++] = (int16_t)v;
    }
    if (n != d)
        return ds_error(DS_ERR_FORMAT, "%s: %s: %d channel ids, expected head_dim = %d", path, where, n, d);
    return DS_OK;
}

/* Writes a ranking as a JSON list, mapped to HF layout if to_hf. */
static void write_list(FILE *f, const int16_t *r, int d, int to_hf) {
    fputc('[', f);
    for (int c = 0; c < d; c++) fprintf(f, c ? ",%d" : "%d", to_hf ? gguf_to_hf(r[c], d) : r[c]);
    fputc(']', f);
}

/* Writes via PATH.tmp + rename, so a crash never leaves a half-written file at PATH. */
static FILE *open_tmp(const char *path, char *tmp, size_t cap) {
    if ((size_t)snprintf(tmp, cap, "%s.tmp", path) >= cap) {
        ds_error(DS_ERR_ARG, "%s: path too long", path);
        return NULL;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) ds_error(DS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    return f;
}

static ds_status close_tmp(FILE *f, const char *tmp, const char *path) {
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return ds_error(DS_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    return DS_OK;
}

/* A JSON string or null, escaped by cJSON. */
static void add_str(cJSON *obj, const char *key, const char *s) {
    cJSON_AddItemToObject(obj, key, s ? cJSON_CreateString(s) : cJSON_CreateNull());
}

/* ---------------------------------------------------------------- our sidecar */

/* v [L][KVH][n] as nested JSON lists, one KV head per line, each float with 9 significant
 * digits (exact round trip): the layout of "k_moments" and "curves". */
static void write_grid(FILE *f, const float *v, int L, int KVH, int n) {
    fputc('[', f);
    for (int l = 0; l < L; l++) {
        fprintf(f, "%s\n      [", l ? "," : "");
        for (int g = 0; g < KVH; g++) {
            fputs(g ? ",\n       [" : "[", f);
            const float *row = v + ((size_t)l * KVH + g) * n;
            for (int i = 0; i < n; i++) fprintf(f, "%s%.9g", i ? ", " : "", (double)row[i]);
            fputc(']', f);
        }
        fputc(']', f);
    }
    fputs("\n    ]", f);
}

ds_status ds_calib_save(const ds_calibration *c, const ds_calib_meta *meta, const char *path) {
    const ds_calib_info *in = &c->info;
    /* Without meta, re-save what the calibration knows (a load -> save round trip keeps it). */
    const ds_calib_meta own = {in->arch, 0, 0, 0, 0, NULL, 0, in->text_name[0] ? in->text_name : NULL,
                               in->text_sha256[0] ? in->text_sha256 : NULL, in->text_tokens};
    if (!meta) meta = &own;
    if ((meta->n_layer > 0 && meta->n_layer != in->n_layer) ||
        (meta->n_head > 0 && meta->n_head != in->n_head) ||
        (meta->n_head_kv > 0 && meta->n_head_kv != in->n_head_kv) ||
        (meta->head_dim > 0 && meta->head_dim != in->head_dim))
        return ds_error(DS_ERR_ARG, "calibration: meta dimensions disagree with the calibration's");
    if (meta->model_size > ((uint64_t)1 << 53) || meta->text_tokens < 0)
        return ds_error(DS_ERR_ARG, "calibration: model size %llu / text tokens %ld out of range",
                        (unsigned long long)meta->model_size, meta->text_tokens);
    /* The two small objects go through cJSON (string escaping); the rankings are written by
     * hand, one (layer, KV head) per line, so the file stays readable and diffable. */
    cJSON *model = cJSON_CreateObject(), *text = cJSON_CreateObject();
    char *ms = NULL, *ts = NULL;
    if (model && text) {
        add_str(model, "arch", meta->arch ? meta->arch : in->arch);
        cJSON_AddNumberToObject(model, "n_layer", in->n_layer);
        cJSON_AddNumberToObject(model, "n_head", in->n_head);
        cJSON_AddNumberToObject(model, "n_head_kv", in->n_head_kv);
        cJSON_AddNumberToObject(model, "head_dim", in->head_dim);
        add_str(model, "file", meta->model_file ? base_name(meta->model_file) : NULL);
        /* Raw digits: cJSON prints large doubles with 15 significant digits, which would
         * round a multi-GB size (its round-trip check is approximate). */
        char num[2][32];
        snprintf(num[0], sizeof num[0], "%llu", (unsigned long long)meta->model_size);
        snprintf(num[1], sizeof num[1], "%ld", meta->text_tokens);
        cJSON_AddRawToObject(model, "size", num[0]);
        add_str(text, "name", meta->text_name);
        add_str(text, "sha256", meta->text_sha256);
        cJSON_AddRawToObject(text, "tokens", num[1]);
        ms = cJSON_PrintUnformatted(model);
        ts = cJSON_PrintUnformatted(text);
    }
    cJSON_Delete(model); cJSON_Delete(text);
    if (!ms || !ts) { free(ms); free(ts); return ds_error(DS_ERR_OOM, "calibration: out of memory"); }
    char tmp[4096];
    FILE *f = open_tmp(path, tmp, sizeof tmp);
    if (!f) { free(ms); free(ts); return DS_ERR_IO; }
    fprintf(f, "{\n  \"format\": \"%s\",\n  \"version\": %d,\n  \"model\": %s,\n  \"text\": %s,\n"
               "  \"layout\": \"gguf\",\n  \"stats\": {",
            FORMAT_NAME, FORMAT_VERSION, ms, ts);
    free(ms); free(ts);
    int first = 1;
    for (int i = 0; i < DS_STAT_COUNT; i++) {
        const ds_stat s = SAVE_ORDER[i];
        if (!c->rank[s]) continue;
        fprintf(f, "%s\n    \"%s\": [", first ? "" : ",", STAT_NAMES[s]);
        first = 0;
        for (int l = 0; l < in->n_layer; l++) {
            fprintf(f, "%s\n      [", l ? "," : "");
            for (int g = 0; g < in->n_head_kv; g++) {
                if (g) fputs(",\n       ", f);
                write_list(f, ds_calib_ranking(c, (ds_stat)s, l, g), in->head_dim, 0);
            }
            fputc(']', f);
        }
        fputs("\n    ]", f);
    }
    fputs("\n  }", f);
    if (c->kmean && c->kstd) {
        fputs(",\n  \"k_moments\": {", f);
        for (int m = 0; m < 2; m++) {
            const float *v = m ? c->kstd : c->kmean;
            fprintf(f, "%s\n    \"%s\": ", m ? "," : "", m ? "std" : "mean");
            write_grid(f, v, in->n_layer, in->n_head_kv, in->head_dim);
        }
        fputs("\n  }", f);
    }
    int any_curve = 0;
    for (int s = 0; s < DS_STAT_COUNT; s++) any_curve |= c->curve[s] != NULL;
    if (any_curve) {
        fputs(",\n  \"curves\": {\n    \"widths\": [", f);
        for (int p = 0; p < DS_CALIB_CURVE_N; p++) fprintf(f, "%s%d", p ? ", " : "", ds_calib_curve_width(in->head_dim, p));
        fputc(']', f);
        for (int i = 0; i < DS_STAT_COUNT; i++) {
            const int s = SAVE_ORDER[i];
            if (!c->curve[s]) continue;
            fprintf(f, ",\n    \"%s\": ", STAT_NAMES[s]);
            write_grid(f, c->curve[s], in->n_layer, in->n_head_kv, DS_CALIB_CURVE_N);
        }
        fputs("\n  }", f);
    }
    fputs("\n}\n", f);
    return close_tmp(f, tmp, path);
}

/* The member `key` of obj; an object's keys must be unique already. */
static const cJSON *member(const cJSON *obj, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* A string member (or null where allow_null) copied into out[cap]. */
static ds_status get_str(const char *path, const cJSON *obj, const char *key, const char *what,
                         int allow_null, char *out, size_t cap) {
    const cJSON *j = member(obj, key);
    out[0] = 0;
    if (allow_null && cJSON_IsNull(j)) return DS_OK;
    if (!cJSON_IsString(j))
        return ds_error(DS_ERR_FORMAT, "%s: %s: expected a string, got %s", path, what, json_kind(j));
    if (strlen(j->valuestring) >= cap)
        return ds_error(DS_ERR_FORMAT, "%s: %s: string too long", path, what);
    strcpy(out, j->valuestring);
    return DS_OK;
}

/* Identity of the file (from "model" and "text") against the caller's expectation. */
static ds_status check_identity(const char *path, const ds_calib_info *in, const char *file,
                                double size, const ds_calib_meta *ex) {
    if (ex->arch && strcmp(ex->arch, in->arch) != 0)
        return ds_error(DS_ERR_UNSUPPORTED, "%s: calibration is for arch \"%s\", model is \"%s\"",
                        path, in->arch, ex->arch);
    const int got[4] = {in->n_layer, in->n_head, in->n_head_kv, in->head_dim};
    const int want[4] = {ex->n_layer, ex->n_head, ex->n_head_kv, ex->head_dim};
    static const char *const names[4] = {"layers", "attention heads", "KV heads", "channels per head (head_dim)"};
    for (int i = 0; i < 4; i++)
        if (want[i] > 0 && got[i] != want[i])
            return ds_error(DS_ERR_UNSUPPORTED, "%s: calibration is for %d %s, model has %d",
                            path, got[i], names[i], want[i]);
    if (ex->model_file && strcmp(base_name(ex->model_file), file) != 0)
        return ds_error(DS_ERR_UNSUPPORTED, "%s: calibration is for model file \"%s\", model is \"%s\"",
                        path, file, base_name(ex->model_file));
    if (ex->model_size && (double)ex->model_size != size)
        return ds_error(DS_ERR_UNSUPPORTED, "%s: calibration is for a model file of %.0f bytes, model file has %llu",
                        path, size, (unsigned long long)ex->model_size);
    if (ex->text_sha256 && strcmp(ex->text_sha256, in->text_sha256) != 0)
        return ds_error(DS_ERR_UNSUPPORTED, "%s: calibration text sha256 %s differs from the expected %s",
                        path, in->text_sha256[0] ? in->text_sha256 : "(none)", ex->text_sha256);
    return DS_OK;
}

/* What a value of a grid may not be (NULL: accepted), for parse_grid. */
static const char *bad_mean(double x) { return isfinite(x) && fabs(x) <= 3.0e38 ? NULL : "expected a finite number"; }
static const char *bad_std(double x) {
    return isfinite(x) && fabs(x) <= 3.0e38 && x >= 0 ? NULL : "expected a finite number >= 0";
}
static const char *bad_mass(double x) { return x >= 0 && x <= 1.001 ? NULL : "expected a number in [0, 1]"; }

/* j: L lists of KVH lists of n numbers, into dst [L][KVH][n]; `what` names j in messages
 * ("k_moments.mean"), `item` an entry of a row ("channel"); bad(x) says why x is refused. */
static ds_status parse_grid(const char *path, const cJSON *j, const char *what, int L, int KVH, int n,
                            const char *item, const char *(*bad)(double), float *dst) {
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) != L)
        return ds_error(DS_ERR_FORMAT, "%s: %s: expected a list of %d layers, got %s", path, what, L, json_kind(j));
    int l = 0;
    for (const cJSON *lj = j->child; lj; lj = lj->next, l++) {
        if (!cJSON_IsArray(lj) || cJSON_GetArraySize(lj) != KVH)
            return ds_error(DS_ERR_FORMAT, "%s: %s layer %d: expected a list of %d KV heads", path, what, l, KVH);
        int g = 0;
        for (const cJSON *hj = lj->child; hj; hj = hj->next, g++) {
            if (!cJSON_IsArray(hj) || cJSON_GetArraySize(hj) != n)
                return ds_error(DS_ERR_FORMAT, "%s: %s layer %d kv head %d: expected %d numbers", path, what, l, g, n);
            int i = 0;
            for (const cJSON *xj = hj->child; xj; xj = xj->next, i++) {
                const double x = cJSON_IsNumber(xj) ? xj->valuedouble : NAN;
                const char *why = bad(x);
                if (why) return ds_error(DS_ERR_FORMAT, "%s: %s layer %d kv head %d %s %d: %s", path, what, l, g, item, i, why);
                dst[((size_t)l * KVH + g) * n + i] = (float)x;
            }
        }
    }
    return DS_OK;
}

/* The optional "k_moments" object: {"mean": L x KVH x d numbers, "std": the same, all >= 0}. */
static ds_status load_moments(const char *path, const cJSON *mj, ds_calibration *c) {
    if (!mj) return DS_OK;
    ds_status st;
    if (!cJSON_IsObject(mj))
        return ds_error(DS_ERR_FORMAT, "%s: \"k_moments\": expected an object, got %s", path, json_kind(mj));
    if ((st = json_unique_keys(path, mj, "k_moments"))) return st;
    const ds_calib_info *in = &c->info;
    c->kmean = ds_alloc(rank_count(c) * sizeof(float));
    c->kstd = ds_alloc(rank_count(c) * sizeof(float));
    if (!c->kmean || !c->kstd) return ds_error(DS_ERR_OOM, "calibration: out of memory");
    if ((st = parse_grid(path, member(mj, "mean"), "k_moments.mean", in->n_layer, in->n_head_kv, in->head_dim,
                         "channel", bad_mean, c->kmean)))
        return st;
    return parse_grid(path, member(mj, "std"), "k_moments.std", in->n_layer, in->n_head_kv, in->head_dim, "channel",
                      bad_std, c->kstd);
}

/* The optional "curves" object: {"widths": the DS_CALIB_CURVE_N widths of the grid, then per
 * statistic name: L x KVH x DS_CALIB_CURVE_N numbers in [0, 1]}. */
static ds_status load_curves(const char *path, const cJSON *cj, ds_calibration *c) {
    if (!cj) return DS_OK;
    ds_status st;
    if (!cJSON_IsObject(cj))
        return ds_error(DS_ERR_FORMAT, "%s: \"curves\": expected an object, got %s", path, json_kind(cj));
    if ((st = json_unique_keys(path, cj, "curves"))) return st;
    const ds_calib_info *in = &c->info;
    const cJSON *wj = member(cj, "widths");
    int ok = cJSON_IsArray(wj) && cJSON_GetArraySize(wj) == DS_CALIB_CURVE_N;
    int p = 0;
    for (const cJSON *x = ok ? wj->child : NULL; x; x = x->next, p++)
        ok &= cJSON_IsNumber(x) && x->valuedouble == ds_calib_curve_width(in->head_dim, p);
    if (!ok)
        return ds_error(DS_ERR_FORMAT, "%s: curves.widths: expected the %d widths (p + 1) * head_dim / 16", path,
                        DS_CALIB_CURVE_N);
    float *v = ds_alloc((size_t)in->n_layer * in->n_head_kv * DS_CALIB_CURVE_N * sizeof(float));
    if (!v) return ds_error(DS_ERR_OOM, "calibration: out of memory");
    for (const cJSON *oj = cj->child; oj && !st; oj = oj->next) {
        if (!strcmp(oj->string, "widths")) continue;
        ds_stat s;
        char what[64];
        snprintf(what, sizeof what, "curves.%s", oj->string);
        if (ds_calib_stat_parse(oj->string, &s))
            st = ds_error(DS_ERR_FORMAT, "%s: curves: unknown statistic \"%s\"", path, oj->string);
        else if (!(st = parse_grid(path, oj, what, in->n_layer, in->n_head_kv, DS_CALIB_CURVE_N, "value", bad_mass, v)))
            st = ds_calib_set_curve(c, s, v);
    }
    ds_free(v);
    return st;
}

static ds_status load_tree(const char *path, const cJSON *root, const ds_calib_meta *ex, ds_calibration **out) {
    ds_status st;
    if (!cJSON_IsObject(root))
        return ds_error(DS_ERR_FORMAT, "%s: expected a JSON object at the top, got %s", path, json_kind(root));
    if ((st = json_unique_keys(path, root, "top level"))) return st;
    const cJSON *fmt = member(root, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, FORMAT_NAME) != 0)
        return ds_error(DS_ERR_FORMAT, "%s: not a dsinfer calibration file (\"format\" is not \"%s\")",
                        path, FORMAT_NAME);
    double v, size;
    if ((st = json_int(path, member(root, "version"), "version", 0, 1e9, &v))) return st;
    if (v != FORMAT_VERSION)
        return ds_error(DS_ERR_FORMAT, "%s: calibration format version %.0f, this build reads version %d",
                        path, v, FORMAT_VERSION);
    const cJSON *layout = member(root, "layout");
    if (!cJSON_IsString(layout) || strcmp(layout->valuestring, "gguf") != 0)
        return ds_error(DS_ERR_FORMAT, "%s: \"layout\" must be \"gguf\" (channel ids in GGUF layout)", path);

    const cJSON *model = member(root, "model"), *text = member(root, "text"), *stats = member(root, "stats");
    const cJSON *objs[3] = {model, text, stats};
    static const char *const obj_names[3] = {"model", "text", "stats"};
    for (int i = 0; i < 3; i++)
        if (!cJSON_IsObject(objs[i]))
            return ds_error(DS_ERR_FORMAT, "%s: \"%s\": expected an object, got %s", path, obj_names[i],
                            json_kind(objs[i]));
    if ((st = json_unique_keys(path, model, "model")) || (st = json_unique_keys(path, text, "text")) ||
        (st = json_unique_keys(path, stats, "stats")))
        return st;

    ds_calib_info in = {0};
    char file[256];
    double dim[4];
    static const char *const dim_keys[4] = {"n_layer", "n_head", "n_head_kv", "head_dim"};
    static const double dim_max[4] = {MAX_LAYERS, MAX_HEADS, MAX_HEADS, MAX_HEAD_DIM};
    for (int i = 0; i < 4; i++) {
        char what[64];
        snprintf(what, sizeof what, "model.%s", dim_keys[i]);
        if ((st = json_int(path, member(model, dim_keys[i]), what, 1, dim_max[i], &dim[i]))) return st;
    }
    in.n_layer = (int)dim[0]; in.n_head = (int)dim[1]; in.n_head_kv = (int)dim[2]; in.head_dim = (int)dim[3];
    if (!dims_ok(in.n_layer, in.n_head, in.n_head_kv, in.head_dim))
        return ds_error(DS_ERR_FORMAT, "%s: model.n_head = %d is not a multiple of model.n_head_kv = %d",
                        path, in.n_head, in.n_head_kv);
    if ((st = get_str(path, model, "arch", "model.arch", 0, in.arch, sizeof in.arch)) ||
        (st = get_str(path, model, "file", "model.file", 1, file, sizeof file)) ||
        (st = json_int(path, member(model, "size"), "model.size", 0, 9007199254740992.0, &size)) ||
        (st = get_str(path, text, "name", "text.name", 1, in.text_name, sizeof in.text_name)) ||
        (st = get_str(path, text, "sha256", "text.sha256", 1, in.text_sha256, sizeof in.text_sha256)) ||
        (st = json_int(path, member(text, "tokens"), "text.tokens", 0, 9007199254740992.0, &v)))
        return st;
    in.text_tokens = (long)v;
    if (ex && (st = check_identity(path, &in, file, size, ex))) return st;

    ds_calibration *c = calib_new(in.n_layer, in.n_head, in.n_head_kv, in.head_dim);
    if (!c) return ds_error(DS_ERR_OOM, "calibration: out of memory");
    c->info = in;
    int any = 0;
    for (const cJSON *sj = stats->child; sj; sj = sj->next) {
        ds_stat s;
        if (ds_calib_stat_parse(sj->string, &s) != DS_OK) {
            st = ds_error(DS_ERR_FORMAT, "%s: stats: unknown statistic \"%s\" (expected q, k, qk, qkv or mass)", path, sj->string);
            goto fail;
        }
        if (!calib_stat(c, s)) { st = ds_error(DS_ERR_OOM, "calibration: out of memory"); goto fail; }
        if (!cJSON_IsArray(sj) || cJSON_GetArraySize(sj) != in.n_layer) {
            st = ds_error(DS_ERR_FORMAT, "%s: stats.%s: expected a list of %d layers, got %s (%d entries)", path,
                          sj->string, in.n_layer, json_kind(sj), cJSON_GetArraySize(sj));
            goto fail;
        }
        int l = 0;
        for (const cJSON *lj = sj->child; lj; lj = lj->next, l++) {
            if (!cJSON_IsArray(lj) || cJSON_GetArraySize(lj) != in.n_head_kv) {
                st = ds_error(DS_ERR_FORMAT,
                              "%s: stats.%s layer %d: expected a list of %d KV heads, got %s (%d entries)",
                              path, sj->string, l, in.n_head_kv, json_kind(lj), cJSON_GetArraySize(lj));
                goto fail;
            }
            int g = 0;
            for (const cJSON *hj = lj->child; hj; hj = hj->next, g++) {
                char where[96];
                snprintf(where, sizeof where, "stats.%s layer %d kv head %d", sj->string, l, g);
                if ((st = parse_perm(path, hj, in.head_dim, rank_at(c, s, l, g), where))) goto fail;
            }
        }
        any = 1;
    }
    if (!any) { st = ds_error(DS_ERR_FORMAT, "%s: \"stats\" holds no statistic", path); goto fail; }
    if ((st = load_moments(path, member(root, "k_moments"), c))) goto fail;
    if ((st = load_curves(path, member(root, "curves"), c))) goto fail;
    *out = c;
    return DS_OK;
fail:
    ds_calibration_free(c);
    return st;
}

ds_status ds_calib_load(const char *path, const ds_calib_meta *expect, ds_calibration **out) {
    *out = NULL;
    cJSON *root;
    ds_status st = parse_json(path, &root);
    if (st) return st;
    st = load_tree(path, root, expect, out);
    cJSON_Delete(root);
    return st;
}

/* ---------------------------------------------------------------- the paper's JSON */

/* "model.layers.{i}.self_attn.{proj}" -> layer, stat; -1 if the key is not of that shape
 * (such keys are ignored, so files with extra entries still import). */
static int paper_key(const char *key, int *layer, int *stat) {
    static const char prefix[] = "model.layers.", mid[] = ".self_attn.";
    if (strncmp(key, prefix, sizeof prefix - 1) != 0) return -1;
    const char *p = key + sizeof prefix - 1;
    long l = 0;
    int nd = 0;
    for (; *p >= '0' && *p <= '9'; p++, nd++)   /* saturates: reported as a too-large layer */
        l = DS_MIN(l * 10 + (*p - '0'), 100000000L);
    if (nd == 0 || strncmp(p, mid, sizeof mid - 1) != 0) return -1;
    p += sizeof mid - 1;
    for (int s = 0; s < DS_STAT_COUNT; s++)
        if (PAPER_PROJ[s] && strcmp(p, PAPER_PROJ[s]) == 0) { *layer = (int)l; *stat = s; return 0; }
    return -1;
}

/* Merges the query heads' rankings of one GQA group into one KV-head ranking. Without the
 * statistic values, the sum over the group (what our own calibration does) is approximated by
 * reciprocal-rank fusion: score(c) = sum_h 1 / (1 + position of c in head h). The statistics are
 * heavy-tailed (a few outliers dominate), so a channel at the top of one head should beat one
 * that is middling everywhere; a linear (Borda) score would prefer the middling one, and taking
 * only the first head would ignore the rest of the group. Each channel's terms are summed in
 * ascending position order, so equal position multisets give bit-equal scores and true ties
 * fall to the lower channel id. pos: [group][d] inverse permutations. */
static void merge_group(const int16_t *pos, int group, int d, scored *sc, int16_t *out) {
    for (int c = 0; c < d; c++) {
        int p[64], n = 0;   /* insertion-sorted positions; groups beyond 64 heads merge in order */
        double v = 0;
        for (int h = 0; h < group; h++) {
            int x = pos[(size_t)h * (size_t)d + (size_t)c];
            if (group > 64) { v += 1.0 / (1 + x); continue; }
            int i = n++;
            while (i > 0 && p[i - 1] > x) { p[i] = p[i - 1]; i--; }
            p[i] = x;
        }
        for (int i = 0; i < n; i++) v += 1.0 / (1 + p[i]);
        sc[c].v = v;
    }
    rank_scores(sc, d, out);
}

static ds_status paper_tree(const char *path, const cJSON *root, const ds_calib_meta *ex, int remap,
                            ds_calibration *c) {
    ds_status st;
    const int L = ex->n_layer, H = ex->n_head, G = ex->n_head_kv, d = ex->head_dim, group = H / G;
    if (!cJSON_IsObject(root))
        return ds_error(DS_ERR_FORMAT, "%s: expected a JSON object at the top, got %s", path, json_kind(root));
    if ((st = json_unique_keys(path, root, "top level"))) return st;
    uint8_t *seen = ds_alloc((size_t)L);
    int16_t *lists = ds_alloc((size_t)H * (size_t)d * sizeof(int16_t));
    int16_t *pos = ds_alloc((size_t)H * (size_t)d * sizeof(int16_t));
    scored *sc = ds_alloc((size_t)d * sizeof *sc);
    if (!seen || !lists || !pos || !sc) { st = ds_error(DS_ERR_OOM, "calibration: out of memory"); goto done; }
    for (const cJSON *kj = root->child; kj; kj = kj->next) {
        int l, s;
        if (paper_key(kj->string, &l, &s) != 0) continue;
        if (l >= L) {
            st = ds_error(DS_ERR_UNSUPPORTED, "%s: \"%s\": calibration has layer %d, model has %d layers",
                          path, kj->string, l, L);
            goto done;
        }
        int n = cJSON_GetArraySize(kj);
        if (!cJSON_IsArray(kj) || (n != H && n != G)) {
            st = ds_error(DS_ERR_FORMAT,
                          "%s: \"%s\": expected a list of %d (query heads) or %d (KV heads) lists, got %s of %d",
                          path, kj->string, H, G, json_kind(kj), cJSON_IsArray(kj) ? n : 0);
            goto done;
        }
        if (!calib_stat(c, s)) { st = ds_error(DS_ERR_OOM, "calibration: out of memory"); goto done; }
        seen[l] |= (uint8_t)(1u << s);
        int h = 0;
        for (const cJSON *hj = kj->child; hj; hj = hj->next, h++) {
            char where[160];
            snprintf(where, sizeof where, "\"%s\" head %d", kj->string, h);
            int16_t *r = lists + (size_t)h * (size_t)d;
            if ((st = parse_perm(path, hj, d, r, where))) goto done;
            for (int i = 0; i < d && remap; i++) r[i] = (int16_t)ds_calib_hf_to_gguf(r[i], d);
            for (int i = 0; i < d; i++) pos[(size_t)h * (size_t)d + (size_t)r[i]] = (int16_t)i;
        }
        for (int g = 0; g < G; g++) {
            int16_t *dst = rank_at(c, s, l, g);
            if (n == G) memcpy(dst, lists + (size_t)g * (size_t)d, (size_t)d * sizeof *dst);
            else merge_group(pos + (size_t)g * (size_t)group * (size_t)d, group, d, sc, dst);
        }
    }
    st = DS_OK;
    int any = 0;
    for (int s = 0; s < DS_STAT_COUNT && !st; s++) {
        if (!c->rank[s]) continue;
        any = 1;
        for (int l = 0; l < L; l++)
            if (!((seen[l] >> s) & 1)) {
                st = ds_error(DS_ERR_FORMAT, "%s: %s has no entry for layer %d (model has %d layers)",
                              path, PAPER_PROJ[s], l, L);
                break;
            }
    }
    if (!st && !any)
        st = ds_error(DS_ERR_FORMAT, "%s: no \"model.layers.N.self_attn.{q_proj,k_proj,qk_proj}\" entries", path);
done:
    ds_free(seen); ds_free(lists); ds_free(pos); ds_free(sc);
    return st;
}

ds_status ds_calib_import_paper(const char *path, const ds_calib_meta *expect, int remap_llama,
                                ds_calibration **out) {
    *out = NULL;
    if (!expect || !dims_ok(expect->n_layer, expect->n_head, expect->n_head_kv, expect->head_dim))
        return ds_error(DS_ERR_ARG, "paper calibration import: the model's dimensions are required");
    if (remap_llama && expect->head_dim % 2)
        return ds_error(DS_ERR_ARG, "paper calibration import: odd head_dim %d cannot be remapped", expect->head_dim);
    cJSON *root;
    ds_status st = parse_json(path, &root);
    if (st) return st;
    ds_calibration *c = calib_new(expect->n_layer, expect->n_head, expect->n_head_kv, expect->head_dim);
    if (!c) st = ds_error(DS_ERR_OOM, "calibration: out of memory");
    else st = paper_tree(path, root, expect, remap_llama, c);
    cJSON_Delete(root);
    if (st) { ds_calibration_free(c); return st; }
    if (expect->arch) snprintf(c->info.arch, sizeof c->info.arch, "%s", expect->arch);
    snprintf(c->info.text_name, sizeof c->info.text_name, "paper:%s", base_name(path));
    *out = c;
    return DS_OK;
}

ds_status ds_calib_export_paper(const ds_calibration *c, const char *path, int remap_llama) {
    const ds_calib_info *in = &c->info;
    if (remap_llama && in->head_dim % 2)
        return ds_error(DS_ERR_ARG, "paper calibration export: odd head_dim %d cannot be remapped", in->head_dim);
    int exportable = 0;
    for (int s = 0; s < DS_STAT_COUNT; s++) exportable |= c->rank[s] && PAPER_PROJ[s];
    if (!exportable)   /* an empty object would not import again */
        return ds_error(DS_ERR_ARG, "paper calibration export: the calibration has none of q, k, qk "
                        "(the paper's format cannot hold qkv or mass)");
    char tmp[4096];
    FILE *f = open_tmp(path, tmp, sizeof tmp);
    if (!f) return DS_ERR_IO;
    int first = 1, group = in->n_head / in->n_head_kv;
    fputc('{', f);
    for (int l = 0; l < in->n_layer; l++)
        for (int s = 0; s < DS_STAT_COUNT; s++) {
            if (!c->rank[s] || !PAPER_PROJ[s]) continue;   /* qkv: the paper's format has no key for it */
            fprintf(f, "%s\n  \"model.layers.%d.self_attn.%s\": [", first ? "" : ",", l, PAPER_PROJ[s]);
            first = 0;
            for (int h = 0; h < in->n_head; h++) {
                if (h) fputs(",\n    ", f);
                write_list(f, ds_calib_ranking(c, (ds_stat)s, l, h / group), in->head_dim, remap_llama);
            }
            fputc(']', f);
        }
    fputs("\n}\n", f);
    return close_tmp(f, tmp, path);
}
