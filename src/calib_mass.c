/* calib_mass.c — the "mass" channel ranking: label channels chosen for the attention they find.
 *
 * The per-channel statistics (calibrate.c) rank channels one at a time. What decode needs is a
 * set of r channels whose partial scores pick tokens that carry the attention: two channels of
 * a RoPE pair are worth more together than either is alone, and a channel with large but
 * nearly constant products moves no token past another. So after the statistics pass, a few
 * long blocks of the calibration text are run densely and, per (layer, KV head), the qk
 * ranking's first r channels (r = head_dim / 4: 1/16 of the key bits at 4-bit labels) are
 * improved by a local search: each member in turn is swapped for the non-member that most
 * raises the objective, for two sweeps or until no swap helps. The objective is the shared
 * group's attention mass (the mean over the group's query heads of the softmax weights)
 * captured by the top k = n/16 tokens of the approximate scores sum_{c in S} qsum_c k_c, for
 * sampled queries in the last quarter of each block, averaged. The search starts from qk and
 * only accepts gains, so on the calibration samples the set is never worse than qk's.
 *
 * Where the default label width is wider than head_dim / 4 (head_dim 64: 32 channels, see
 * ds_sparse_default_channels), a second stage extends the set to that width the same way with
 * the first set fixed, so the ranking's prefixes of both widths are searched sets and the
 * narrower one is exactly what a one-stage search gives. Channels past the last set keep their
 * qk order; the ranking is a full permutation like the others. */
#include "calibrate.h"
#include "common.h"
#include "threads.h"

#include <math.h>
#include <string.h>

#define MASS_QUERIES 64      /* sampled query positions per block */
#define MASS_BUDGET 16       /* the objective's token budget: k = n / MASS_BUDGET */
#define MASS_SWEEPS 2

struct ds_calib_mass {
    int n_layer, n_head, n_head_kv, head_dim, window, n_blocks, blk;
    int *fill;    /* [n_layer] tokens of the current block received so far */
    float **k;    /* [n_layer] -> [n_blocks][window][n_head_kv][head_dim] post-RoPE keys */
    float **q;    /* [n_layer] -> [n_blocks][MASS_QUERIES][n_head][head_dim] post-RoPE queries */
};

/* Position of sampled query j (0..MASS_QUERIES-1) in a block: spread over the last quarter. */
static int query_pos(int window, int j) {
    int span = window / 4 > MASS_QUERIES ? window / 4 : MASS_QUERIES;
    if (span > window) span = window;
    return window - 1 - (int)((long)j * span / MASS_QUERIES);
}

ds_calib_mass *ds_calib_mass_new(int n_layer, int n_head, int n_head_kv, int head_dim, int window, int n_blocks) {
    if (n_layer < 1 || n_head < 1 || n_head_kv < 1 || n_head % n_head_kv || head_dim < 4 ||
        window < MASS_QUERIES || n_blocks < 1)
        return NULL;
    ds_calib_mass *m = ds_alloc(sizeof *m);
    if (!m) return NULL;
    m->n_layer = n_layer; m->n_head = n_head; m->n_head_kv = n_head_kv; m->head_dim = head_dim;
    m->window = window; m->n_blocks = n_blocks; m->blk = -1;
    m->k = ds_alloc((size_t)n_layer * sizeof *m->k);
    m->q = ds_alloc((size_t)n_layer * sizeof *m->q);
    m->fill = ds_alloc((size_t)n_layer * sizeof *m->fill);
    if (!m->k || !m->q || !m->fill) { ds_calib_mass_free(m); return NULL; }
    const size_t nk = (size_t)n_blocks * window * n_head_kv * head_dim;
    const size_t nq = (size_t)n_blocks * MASS_QUERIES * n_head * head_dim;
    for (int l = 0; l < n_layer; l++) {
        m->k[l] = ds_alloc(nk * sizeof(float));
        m->q[l] = ds_alloc(nq * sizeof(float));
        if (!m->k[l] || !m->q[l]) { ds_calib_mass_free(m); return NULL; }
    }
    return m;
}

void ds_calib_mass_free(ds_calib_mass *m) {
    if (!m) return;
    for (int l = 0; l < m->n_layer; l++) {
        if (m->k) ds_free(m->k[l]);
        if (m->q) ds_free(m->q[l]);
    }
    ds_free(m->k);
    ds_free(m->q);
    ds_free(m->fill);
    ds_free(m);
}

void ds_calib_mass_block(ds_calib_mass *m, int blk) {
    m->blk = blk;
    memset(m->fill, 0, (size_t)m->n_layer * sizeof *m->fill);
}

/* The block may arrive in chunks (the session's prefill batches): positions continue from
 * the layer's fill count. */
void ds_calib_mass_add(ds_calib_mass *m, int layer, const float *q, const float *k, int T) {
    DS_ASSERT(m && layer >= 0 && layer < m->n_layer && m->blk >= 0 && m->blk < m->n_blocks && T >= 0 &&
              m->fill[layer] + T <= m->window);
    const size_t d = (size_t)m->head_dim, rk = (size_t)m->n_head_kv * d, rq = (size_t)m->n_head * d;
    const int p0 = m->fill[layer];
    memcpy(m->k[layer] + ((size_t)m->blk * m->window + p0) * rk, k, (size_t)T * rk * sizeof(float));
    float *dq = m->q[layer] + (size_t)m->blk * MASS_QUERIES * rq;
    for (int j = 0; j < MASS_QUERIES; j++) {
        const int p = query_pos(m->window, j);
        if (p >= p0 && p < p0 + T) memcpy(dq + (size_t)j * rq, q + (size_t)(p - p0) * rq, rq * sizeof(float));
    }
    m->fill[layer] = p0 + T;
}

/* ---------------------------------------------------------------- the search */

typedef struct { float a, p; } ap;   /* approximate score, attention weight */

/* Sum of p over the k entries of largest a (ties: whichever the partition leaves; the sum
 * differs only where equal scores carry unequal weight). Quickselect with a median-of-three
 * pivot: deterministic, O(n) expected. */
static double top_mass(ap *v, int n, int k) {
    if (k >= n) { double s = 0; for (int i = 0; i < n; i++) s += v[i].p; return s; }
    double s = 0;
    int lo = 0, hi = n;   /* the k largest of v[lo, hi) still to find */
    while (k > 0) {
        if (hi - lo <= k) { for (int i = lo; i < hi; i++) s += v[i].p; break; }
        const float x = v[lo].a, y = v[lo + (hi - lo) / 2].a, z = v[hi - 1].a;
        const float piv = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        /* three-way: [lo, gt) > piv, [gt, eq) == piv, [eq, hi) < piv */
        int gt = lo, i = lo, lt = hi;
        while (i < lt) {
            if (v[i].a > piv) { ap t = v[gt]; v[gt] = v[i]; v[i] = t; gt++; i++; }
            else if (v[i].a < piv) { lt--; ap t = v[lt]; v[lt] = v[i]; v[i] = t; }
            else i++;
        }
        const int n_gt = gt - lo, n_eq = lt - gt;
        if (k <= n_gt) { hi = gt; continue; }
        for (int j = lo; j < gt; j++) s += v[j].p;
        k -= n_gt;
        for (int j = gt; j < gt + (k < n_eq ? k : n_eq); j++) s += v[j].p;
        k -= k < n_eq ? k : n_eq;
        lo = lt;   /* k > 0 only if every tie was taken: continue below the pivot */
    }
    return s;
}

typedef struct {
    const ds_calib_mass *m;
    const ds_calibration *c;
    int16_t *out;            /* [n_layer][n_head_kv][head_dim] */
    double *gain;            /* [n_layer][n_head_kv][2]: objective of qk's set, of the result */
    float *curve;            /* [DS_STAT_COUNT][n_layer][n_head_kv][DS_CALIB_CURVE_N]: each ranking's prefix
                              * objectives (a statistic the calibration lacks stays 0 and is not set) */
    int oom;                 /* set (atomically) when a unit could not get its buffers */
} search_job;

/* One unit's search data: per sampled query (nqt of them, MASS_QUERIES per block) the group's
 * summed query qs [nqt][d], the attention weights pw [nqt][W] and the current set's approximate
 * scores A [nqt][W]; the keys channel-major kt [block][d][W]; tmp [W] scratch. */
typedef struct {
    const float *qs, *pw;
    float *A;   /* updated by add_channel and the swaps; objective only reads it */
    const float *kt;
    ap *tmp;
    int d, W, nqt;
} unit_data;

/* The objective for the current set with channel out_c taken out and in_c put in (-1: none):
 * the attention weight the top n/MASS_BUDGET approximate scores capture, averaged over the
 * sampled queries. */
static double objective(const unit_data *U, int out_c, int in_c) {
    const int d = U->d, W = U->W;
    double tot = 0;
    for (int qi = 0; qi < U->nqt; qi++) {
        const int b = qi / MASS_QUERIES, n = query_pos(W, qi % MASS_QUERIES) + 1;
        const float *a = U->A + (size_t)qi * W, *w = U->pw + (size_t)qi * W;
        const float so = out_c >= 0 ? U->qs[(size_t)qi * d + out_c] : 0.0f;
        const float si = in_c >= 0 ? U->qs[(size_t)qi * d + in_c] : 0.0f;
        const float *ko = U->kt + ((size_t)b * d + (out_c >= 0 ? out_c : 0)) * W;
        const float *ki = U->kt + ((size_t)b * d + (in_c >= 0 ? in_c : 0)) * W;
        for (int t = 0; t < n; t++) {
            U->tmp[t].a = a[t] - so * ko[t] + si * ki[t];
            U->tmp[t].p = w[t];
        }
        tot += top_mass(U->tmp, n, n / MASS_BUDGET > 1 ? n / MASS_BUDGET : 1);
    }
    return tot / U->nqt;
}

/* Adds channel c's products to every sampled query's approximate scores: A += qs[., c] * k[., c]. */
static void add_channel(const unit_data *U, int c) {
    const int d = U->d, W = U->W;
    for (int qi = 0; qi < U->nqt; qi++) {
        const float s = U->qs[(size_t)qi * d + c], *kc = U->kt + ((size_t)(qi / MASS_QUERIES) * d + c) * W;
        float *a = U->A + (size_t)qi * W;
        for (int t = 0; t < W; t++) a[t] += s * kc[t];
    }
}

/* One (layer, KV head): the objective's data, then the swaps. */
static void search_unit(search_job *J, int layer, int g, const int r[2]) {
    const ds_calib_mass *m = J->m;
    const int d = m->head_dim, W = m->window, NB = m->n_blocks, NQ = MASS_QUERIES;
    const int G = m->n_head / m->n_head_kv;
    const size_t rk = (size_t)m->n_head_kv * d, rq = (size_t)m->n_head * d;
    const int nqt = NB * NQ;
    /* per sampled query: qsum [nqt][d], weights [nqt][W], the channel products are formed on
     * the fly; approximate scores of the current set A [nqt][W] */
    float *qs = ds_alloc((size_t)nqt * d * sizeof(float));
    float *pw = ds_alloc((size_t)nqt * W * sizeof(float));
    float *A = ds_alloc((size_t)nqt * W * sizeof(float));
    float *kt = ds_alloc((size_t)NB * d * W * sizeof(float));   /* keys channel-major: [blk][c][t] */
    ap *tmp = ds_alloc((size_t)W * sizeof(ap));
    double *lg = ds_alloc((size_t)W * sizeof(double));
    int16_t *dst = J->out + ((size_t)layer * m->n_head_kv + g) * d;
    const int16_t *qk = ds_calib_ranking(J->c, DS_STAT_QK, layer, g);
    memcpy(dst, qk, (size_t)d * sizeof *dst);
    if (!qs || !pw || !A || !kt || !tmp || !lg) {
        __atomic_store_n(&J->oom, 1, __ATOMIC_RELAXED);
        goto done;
    }
    for (int b = 0; b < NB; b++)
        for (int t = 0; t < W; t++)
            for (int c = 0; c < d; c++)
                kt[((size_t)b * d + c) * W + t] = m->k[layer][((size_t)b * W + t) * rk + (size_t)g * d + c];
    const double scale = 1.0 / sqrt((double)d);
    for (int b = 0; b < NB; b++)
        for (int j = 0; j < NQ; j++) {
            const int qi = b * NQ + j, n = query_pos(W, j) + 1;
            float *w = pw + (size_t)qi * W;
            memset(w, 0, (size_t)W * sizeof(float));
            for (int c = 0; c < d; c++) qs[(size_t)qi * d + c] = 0;
            for (int h = 0; h < G; h++) {
                const float *qh = m->q[layer] + ((size_t)b * NQ + j) * rq + (size_t)(g * G + h) * d;
                for (int c = 0; c < d; c++) qs[(size_t)qi * d + c] += qh[c];
                double mx = -INFINITY, sum = 0;
                for (int t = 0; t < n; t++) {
                    const float *kk = m->k[layer] + ((size_t)b * W + t) * rk + (size_t)g * d;
                    double s = 0;
                    for (int c = 0; c < d; c++) s += (double)qh[c] * kk[c];
                    lg[t] = s * scale;
                    if (lg[t] > mx) mx = lg[t];
                }
                for (int t = 0; t < n; t++) { lg[t] = exp(lg[t] - mx); sum += lg[t]; }
                for (int t = 0; t < n; t++) w[t] += (float)(lg[t] / sum / G);
            }
        }
    unsigned char member[4096] = {0};
    /* stage st searches members [r0, r1) with [0, r0) fixed: the first stage's set stays the
     * ranking's prefix, so a calibration serves both widths */
    for (int st = 0, r0 = 0; st < 2 && r[st] > r0; r0 = r[st], st++) {
        const int r1 = r[st];
        const unit_data U = {qs, pw, A, kt, tmp, d, W, nqt};
        memset(A, 0, (size_t)nqt * W * sizeof(float));
        for (int i = 0; i < r1; i++) {
            member[dst[i]] = 1;
            add_channel(&U, dst[i]);
        }
        double base = objective(&U, -1, -1);
        if (st == 0) J->gain[((size_t)layer * m->n_head_kv + g) * 2] = base;
        for (int sweep = 0; sweep < MASS_SWEEPS; sweep++) {
            int swapped = 0;
            for (int i = r0; i < r1; i++) {
                const int out_c = dst[i];
                double best = base + 1e-5;   /* a swap must gain more than rounding noise */
                int best_c = -1;
                for (int c = 0; c < d; c++) {
                    if (member[c]) continue;
                    const double v = objective(&U, out_c, c);
                    if (v > best) { best = v; best_c = c; }
                }
                if (best_c < 0) continue;
                for (int qi = 0; qi < nqt; qi++) {
                    const float so = qs[(size_t)qi * d + out_c], si = qs[(size_t)qi * d + best_c];
                    const float *ko = kt + ((size_t)(qi / NQ) * d + out_c) * W, *ki = kt + ((size_t)(qi / NQ) * d + best_c) * W;
                    float *a = A + (size_t)qi * W;
                    for (int t = 0; t < W; t++) a[t] = a[t] - so * ko[t] + si * ki[t];
                }
                base = objective(&U, -1, -1);   /* recomputed from the updated scores (the same up to rounding) */
                member[out_c] = 0;
                member[best_c] = 1;
                dst[i] = (int16_t)best_c;
                swapped = 1;
            }
            if (!swapped) break;
        }
        if (st == 0) J->gain[((size_t)layer * m->n_head_kv + g) * 2 + 1] = base;
        /* the rest: qk order of the channels not in the set (the next stage starts from it) */
        int at = r1;
        for (int i = 0; i < d; i++)
            if (!member[qk[i]]) dst[at++] = qk[i];
        DS_ASSERT(at == d);
    }
    /* the curves: per ranking (every statistic c has, and the result), the objective of its
     * first w channels, w = d/16, 2d/16, ..., d (all channels: the group's exact shared scores),
     * for ds_calib_alloc */
    for (int st = 0; st < DS_STAT_COUNT; st++) {
        const int16_t *rank = st == DS_STAT_MASS ? dst : ds_calib_ranking(J->c, (ds_stat)st, layer, g);
        if (!rank) continue;
        const size_t units = (size_t)m->n_layer * m->n_head_kv;
        float *cv = J->curve + ((size_t)st * units + (size_t)layer * m->n_head_kv + g) * DS_CALIB_CURVE_N;
        const unit_data U = {qs, pw, A, kt, tmp, d, W, nqt};
        memset(A, 0, (size_t)nqt * W * sizeof(float));
        for (int i = 0, p = 0; i < d; i++) {
            add_channel(&U, rank[i]);
            if (p < DS_CALIB_CURVE_N && i + 1 == ds_calib_curve_width(d, p)) {
                const float v = (float)objective(&U, -1, -1);
                while (p < DS_CALIB_CURVE_N && i + 1 == ds_calib_curve_width(d, p)) cv[p++] = v;   /* d < 16 repeats widths */
            }
        }
    }
done:
    ds_free(qs); ds_free(pw); ds_free(A); ds_free(kt); ds_free(tmp); ds_free(lg);
}

typedef struct {
    search_job *job;
    int r[2];   /* the two stages' set sizes (ds_calib_mass_rank) */
    int n_units;
    void (*progress)(int done, int total, void *user);
    void *user;
    int done;   /* units finished (atomic) */
} search_ctx;

static void search_task(void *arg, int ith, int nth) {
    search_ctx *x = arg;
    const int nkv = x->job->m->n_head_kv;
    for (int u = ith; u < x->n_units; u += nth) {   /* a fixed split: each unit alone decides its result */
        search_unit(x->job, u / nkv, u % nkv, x->r);
        const int d = __atomic_add_fetch(&x->done, 1, __ATOMIC_RELAXED);
        if (ith == 0 && x->progress) x->progress(d, x->n_units, x->user);
    }
}

ds_status ds_calib_mass_rank(const ds_calib_mass *m, ds_calibration *c, struct ds_pool *pool,
                             void (*progress)(int done, int total, void *user), void *user, double *qk_obj,
                             double *mass_obj) {
    const ds_calib_info *in = ds_calib_get_info(c);
    if (in->n_layer != m->n_layer || in->n_head_kv != m->n_head_kv || in->head_dim != m->head_dim || m->head_dim > 4096)
        return ds_error(DS_ERR_ARG, "calibration: mass samples and calibration disagree on the model's shape");
    ds_status rs = ds_calib_require(c, DS_STAT_QK);
    if (rs) return rs;
    const size_t units = (size_t)m->n_layer * m->n_head_kv;
    int16_t *out = ds_alloc(units * m->head_dim * sizeof *out);
    double *gain = ds_alloc(units * 2 * sizeof *gain);
    float *curve = ds_alloc(DS_STAT_COUNT * units * DS_CALIB_CURVE_N * sizeof *curve);
    if (!out || !gain || !curve) {
        ds_free(out); ds_free(gain); ds_free(curve);
        return ds_error(DS_ERR_OOM, "calibration: out of memory");
    }
    search_job job = {m, c, out, gain, curve, 0};
    /* stage 1: head_dim / 4 channels (1/16 of the key bits at 4-bit labels); stage 2, where the
     * default label width is larger (head_dim < 128: SmolLM2's 32 of 64), that many, at most half */
    const int d = m->head_dim, wide = DS_MIN(ds_sparse_default_channels(d, 4), d / 2);
    search_ctx x = {&job, {d / 4, wide > d / 4 ? wide : d / 4}, (int)units, progress, user, 0};
    if (pool) ds_pool_run(pool, search_task, &x);
    else search_task(&x, 0, 1);
    if (job.oom) {
        ds_free(out); ds_free(gain); ds_free(curve);
        return ds_error(DS_ERR_OOM, "calibration: out of memory in the mass search");
    }
    double a = 0, b = 0;
    for (size_t u = 0; u < units; u++) { a += gain[2 * u]; b += gain[2 * u + 1]; }
    if (qk_obj) *qk_obj = a / units;
    if (mass_obj) *mass_obj = b / units;
    ds_status st = ds_calib_set_ranking(c, DS_STAT_MASS, out);
    for (int s = 0; s < DS_STAT_COUNT && !st; s++)
        if (ds_calib_ranking(c, (ds_stat)s, 0, 0))
            st = ds_calib_set_curve(c, (ds_stat)s, curve + (size_t)s * units * DS_CALIB_CURVE_N);
    ds_free(out);
    ds_free(gain);
    ds_free(curve);
    return st;
}
