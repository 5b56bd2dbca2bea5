/* Attention kernels: the SIMD partial-attention kernel against the scalar reference, and the
 * split-KV merge against one pass over all positions. */
#include "test.h"
#include "attention.h"
#include "dsinfer.h"

#include <string.h>

#include <stdlib.h>

static uint64_t rng_state = 42;
static float frand(void) { /* uniform [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static double max_rel(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        num = d > num ? d : num;
        den = fabs(b[i]) > den ? fabs(b[i]) : den;
    }
    return den > 0 ? num / den : num;
}

TEST(attention_partial_matches_reference) {
    /* every group size the SIMD kernels specialise (1..8), two past them (12, 16), and a head
     * size above the compute-lean kernel's 128 */
    const int hds[] = {64, 128, 256}, Gs[] = {1, 2, 3, 4, 5, 6, 7, 8, 12, 16}, ns[] = {1, 7, 33, 300};
    for (int a = 0; a < 3; a++) for (int b = 0; b < 10; b++) for (int c = 0; c < 4; c++) {
        int hd = hds[a], G = Gs[b], n = ns[c];
        float *q = malloc(sizeof(float) * G * hd), *o1 = malloc(sizeof(float) * G * hd),
              *o2 = malloc(sizeof(float) * G * hd), *acc = malloc(sizeof(float) * G * hd);
        uint16_t *K = malloc(2 * (size_t)n * hd), *V = malloc(2 * (size_t)n * hd);
        int32_t *idx = malloc(sizeof(int32_t) * n);
        for (int i = 0; i < G * hd; i++) q[i] = frand() * 0.5f;
        for (int i = 0; i < n * hd; i++) { K[i] = ds_fp32_to_fp16(frand() * 3); V[i] = ds_fp32_to_fp16(frand()); }
        /* a scattered index list: every other position, then the rest (a sparse-attention shape) */
        int m = 0;
        for (int i = 0; i < n; i += 2) idx[m++] = i;
        for (int i = 1; i < n; i += 2) idx[m++] = i;
        ds_attn_stats s1, s2;
        for (int use_idx = 0; use_idx < 2; use_idx++) {
            ds_attn_partial(q, G, hd, K, V, use_idx ? idx : NULL, 0, n, acc, &s1);
            ds_attn_merge(1, G, hd, acc, &s1, o1);
            ds_attn_partial_ref(q, G, hd, K, V, use_idx ? idx : NULL, 0, n, acc, &s2);
            ds_attn_merge(1, G, hd, acc, &s2, o2);
            double e = max_rel(o1, o2, G * hd);
            CHECK_MSG(e < 1e-5, "hd %d G %d n %d idx %d: rel err %g", hd, G, n, use_idx, e);
        }
        free(q); free(o1); free(o2); free(acc); free(K); free(V); free(idx);
    }
}

TEST(attention_split_merge_equals_single_pass) {
    const int hd = 64, G = 3, n = 1000, chunk = 128;
    int nch = (n + chunk - 1) / chunk;
    float q[3 * 64], out1[3 * 64], out2[3 * 64];
    float *accs = malloc(sizeof(float) * nch * G * hd), acc[3 * 64];
    ds_attn_stats *sts = malloc(sizeof(ds_attn_stats) * nch), st;
    uint16_t *K = malloc(2 * (size_t)n * hd), *V = malloc(2 * (size_t)n * hd);
    for (int i = 0; i < G * hd; i++) q[i] = frand();
    for (int i = 0; i < n * hd; i++) { K[i] = ds_fp32_to_fp16(frand() * 4); V[i] = ds_fp32_to_fp16(frand()); }
    for (int c = 0; c < nch; c++) {
        int b = c * chunk, e = b + chunk < n ? b + chunk : n;
        ds_attn_partial(q, G, hd, K, V, NULL, b, e, accs + (size_t)c * G * hd, &sts[c]);
    }
    /* ds_attn_merge expects accs as [chunk][G][hd] */
    ds_attn_merge(nch, G, hd, accs, sts, out1);
    ds_attn_partial_ref(q, G, hd, K, V, NULL, 0, n, acc, &st);
    ds_attn_merge(1, G, hd, acc, &st, out2);
    double e = max_rel(out1, out2, G * hd);
    free(accs); free(sts); free(K); free(V);
    CHECK_MSG(e < 1e-5, "split vs single rel err %g", e);
}

TEST(attention_fp16_row_conversion) {
    float x[37];
    uint16_t y[37];
    for (int i = 0; i < 37; i++) x[i] = frand() * 1000;
    x[3] = 65504.0f; x[4] = 1e-7f; x[5] = -0.0f;
    ds_fp32_to_fp16_row(x, y, 37);
    for (int i = 0; i < 37; i++) CHECK_MSG(y[i] == ds_fp32_to_fp16(x[i]), "element %d: %04x vs %04x", i, y[i], ds_fp32_to_fp16(x[i]));
}

/* The GPU seam in a CPU-only build reports no devices and says so, rather than failing. */
TEST(backend_cpu_only_build_reports_no_gpu) {
#ifndef DS_CUDA
    CHECK(strcmp(ds_build_backend(), "cpu-only") == 0);
    CHECK(ds_gpu_count() == 0);
#else
    CHECK(strcmp(ds_build_backend(), "cuda") == 0);
#endif
}
