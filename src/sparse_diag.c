/* sparse_diag.c — what a sparse selection keeps of the exact attention (opt-in diagnostics).
 *
 * With DSINFER_SEL_DIAG=FILE set, every selection of a decode step (any method that selects
 * positions: ds, oracle, random, streaming, sparq, quest) appends one line to FILE:
 *
 *   method layer kvh n m  mass_mean mass_min  oracle_mean oracle_min  recall  top1 G
 *
 * mass: the share of each query head's exact softmax probability (over all n positions) that
 * falls on the m selected rows, averaged over the group's G heads and its smallest; oracle: the
 * same for the exact top-(m-1) of the group-summed scores plus the current token (what
 * --method oracle would select); recall: |selected ∩ oracle| / m; top1: how many of the G heads
 * have their most attended position among the selected rows. Nothing the session computes
 * changes: this only reads the caches and the selection. It costs a dense pass per selection,
 * so it is for one case at a time (e.g. a retrieval case a method missed), not for timing.
 *
 * With DSINFER_SEL_SHUFFLE=SEED (a positive integer) every selection is permuted before the
 * attention reads it: the same rows, summed in another order. Results then move only by float
 * rounding, and where a rounding flips a near-tie of a later selection, by what that flip does:
 * running one setting under a few seeds measures that noise band (README: perplexity). */
#include "sparse.h"
#include "attention.h"
#include "ds_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

ds_status ds_sparse_diag_open(ds_session *s) {
    const char *sh = getenv("DSINFER_SEL_SHUFFLE");
    if (sh && *sh) {
        char *end;
        unsigned long long v = strtoull(sh, &end, 10);
        if (*end || v == 0) return ds_error(DS_ERR_ARG, "DSINFER_SEL_SHUFFLE must be a positive integer (got '%s')", sh);
        s->sp_shuffle = v;
    }
    const char *path = getenv("DSINFER_SEL_DIAG");
    if (!path || !*path) return DS_OK;
    s->sp_diag = fopen(path, "a");
    if (!s->sp_diag) return ds_error(DS_ERR_IO, "DSINFER_SEL_DIAG: cannot open %s for appending", path);
    setvbuf(s->sp_diag, NULL, _IOLBF, 0);   /* whole lines: forked sessions append to one file */
    return DS_OK;
}

/* Share of head g's softmax over logits lg[0, n) that lies on positions with in[i] set. */
static float mass_on(const float *lg, int n, const uint8_t *in) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = lg[i] > mx ? lg[i] : mx;
    double z = 0, on = 0;
    for (int i = 0; i < n; i++) {
        double e = exp((double)lg[i] - mx);
        z += e;
        if (in[i]) on += e;
    }
    return (float)(on / z);
}

void ds_sparse_diag(ds_session *s, int layer, int kvh, const float *q, int G, int n, const int32_t *idx, int m) {
    const ds_model_info *c = &s->m->info;
    const int hd = c->head_dim, KVH = c->n_head_kv;
    const uint16_t *K = s->k_cache + ((size_t)layer * KVH + kvh) * s->n_ctx * hd;
    float *lg = malloc(sizeof(float) * (size_t)n * (G + 1));           /* [G][n] logits, [n] group scores */
    uint8_t *sel = calloc((size_t)n * 2, 1);                           /* [n] selected, [n] oracle */
    int32_t *orc = malloc(sizeof(int32_t) * (size_t)n);
    void *scratch = malloc(ds_topk_scratch_bytes(n));
    if (!lg || !sel || !orc || !scratch) {   /* a diagnostic: skip the line rather than fail the step */
        free(lg); free(sel); free(orc); free(scratch);
        return;
    }
    float *gs = lg + (size_t)G * n, qsum[512];
    uint8_t *osel = sel + n;
    for (int i = 0; i < hd; i++) {
        qsum[i] = 0;
        for (int g = 0; g < G; g++) qsum[i] += q[(size_t)g * hd + i];
    }
    for (int i = 0; i < n; i++) {
        const uint16_t *kr = K + (size_t)i * hd;
        for (int g = 0; g < G; g++) lg[(size_t)g * n + i] = ds_dot_f16_f32(kr, q + (size_t)g * hd, hd);
        gs[i] = ds_dot_f16_f32(kr, qsum, hd);
    }
    for (int j = 0; j < m; j++) sel[idx[j]] = 1;
    int mo = m > 1 ? ds_topk(gs, n - 1, m - 1, orc, scratch) : 0;
    for (int j = 0; j < mo; j++) osel[orc[j]] = 1;
    osel[n - 1] = 1;
    int both = 0, top1 = 0;
    for (int i = 0; i < n; i++) both += sel[i] & osel[i];
    float ms = 0, ms_min = 1, mo_sum = 0, mo_min = 1;
    for (int g = 0; g < G; g++) {
        const float *l = lg + (size_t)g * n;
        float a = mass_on(l, n, sel), b = mass_on(l, n, osel);
        ms += a; mo_sum += b;
        ms_min = a < ms_min ? a : ms_min;
        mo_min = b < mo_min ? b : mo_min;
        int best = 0;
        for (int i = 1; i < n; i++) best = l[i] > l[best] ? i : best;
        top1 += sel[best];
    }
    fprintf(s->sp_diag, "%s %d %d %d %d %.4f %.4f %.4f %.4f %.4f %d %d\n", ds_attn_method_name(s->opts.sparse.method),
            layer, kvh, n, m, ms / G, ms_min, mo_sum / G, mo_min, (float)both / (float)m, top1, G);
    free(lg); free(sel); free(orc); free(scratch);
}

void ds_sparse_shuffle(const ds_session *s, int layer, int kvh, int n, int32_t *idx, int m) {
    uint64_t x = s->sp_shuffle * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)layer << 40) ^ ((uint64_t)kvh << 32) ^ (uint64_t)n;
    for (int i = m - 1; i > 0; i--) {   /* Fisher-Yates, xorshift64* */
        x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
        const int j = (int)(((x * 0x2545f4914f6cdd1dULL) >> 33) % (uint64_t)(i + 1));
        const int32_t t = idx[i]; idx[i] = idx[j]; idx[j] = t;
    }
}
