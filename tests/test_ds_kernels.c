/* test_ds_kernels.c — Double Sparsity selection kernels: label encode/decode error bounds,
 * quantised scoring against exact dot products, every SIMD level against the scalar reference,
 * and top-k against a sort-based reference (as sets) including ties, NaN and infinities. */
#include "test.h"
#include "ds_kernels.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <float.h>

static const char *const k_levels[] = { "scalar", "avx2", "avx512" };
#define N_LEVELS 3

static uint64_t g_rng = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) { g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17; return g_rng; }
static float rnd_uniform(void) { return (float)((rnd() >> 40) * (1.0 / 16777216.0)); }   /* [0, 1) */
static float rnd_normal(void) {             /* sum of 4 uniforms: cheap, roughly normal */
    float s = 0;
    for (int i = 0; i < 4; i++) s += rnd_uniform();
    return (s - 2.0f) * 1.7320508f;
}

/* A label row of varied character: plain normal, large offset, outlier, tiny range, constant. */
static void rand_row(float *x, int r, int kind) {
    float scale = 0.05f + 20.0f * rnd_uniform(), off = 0;
    if (kind % 5 == 1) off = 50.0f * (rnd_uniform() - 0.5f);
    for (int j = 0; j < r; j++) x[j] = off + scale * rnd_normal();
    if (kind % 5 == 2) x[rnd() % (uint64_t)r] *= 30.0f;
    if (kind % 5 == 3) for (int j = 0; j < r; j++) x[j] = 1.0f + 1e-4f * rnd_normal();
    if (kind % 5 == 4) for (int j = 0; j < r; j++) x[j] = kind % 2 ? 0.3f : 2.5f;   /* 0.3 is not a half */
}

TEST(ds_label_row_bytes_values) {
    CHECK(ds_label_row_bytes(8, 16) == 16);
    CHECK(ds_label_row_bytes(16, 4) == 8);
    CHECK(ds_label_row_bytes(32, 4) == 16);
    CHECK(ds_label_row_bytes(64, 2) == 16);
    CHECK(ds_label_row_bytes(5, 4) == 3);
    CHECK(ds_label_row_bytes(3, 2) == 1);
    CHECK(ds_label_row_bytes(128, 8) == 128);
}

TEST(ds_label_roundtrip_error_within_half_step) {
    static const int rs[] = { 1, 2, 3, 4, 5, 7, 8, 12, 16, 31, 32, 64, 100, 128 };
    static const int bs[] = { 2, 4, 8, 16 };
    float x[128], y[128];
    uint8_t codes[256];
    for (size_t ri = 0; ri < sizeof rs / sizeof rs[0]; ri++)
        for (size_t bi = 0; bi < 4; bi++)
            for (int it = 0; it < 200; it++) {
                int r = rs[ri], bits = bs[bi];
                rand_row(x, r, it);
                uint16_t lo = 0, st = 0;
                size_t rb = ds_label_row_bytes(r, bits);
                memset(codes, 0xa5, sizeof codes);
                ds_label_encode(x, r, bits, codes, &lo, &st);
                ds_label_decode(codes, r, bits, lo, st, y);
                if (bits == 16) {
                    for (int j = 0; j < r; j++)
                        CHECK(y[j] == ds_fp16_to_fp32(ds_fp32_to_fp16(x[j])));
                    continue;
                }
                float lof = ds_fp16_to_fp32(lo), stf = ds_fp16_to_fp32(st);
                int L = (1 << bits) - 1;
                float mn = x[0], mx = x[0];
                for (int j = 1; j < r; j++) { mn = DS_MIN(mn, x[j]); mx = DS_MAX(mx, x[j]); }
                CHECK(lof <= mn);
                CHECK(stf >= 0);
                CHECK(mx == lof ? stf == 0 : stf > 0);
                if (r * bits % 8) {                   /* padding bits of the last byte are zero */
                    int used = r * bits % 8;
                    CHECK((codes[rb - 1] >> used) == 0);
                }
                double slack = 3e-7 * (fabs(lof) + L * stf) + 1e-30;
                for (int j = 0; j < r; j++)
                    CHECK_MSG(fabs((double)y[j] - x[j]) <= stf / 2.0 + slack,
                              "r=%d bits=%d j=%d x=%g decoded=%g lo=%g step=%g", r, bits, j, x[j],
                              y[j], lof, stf);
                /* the step is not wastefully large: at most 1 half-ulp + range/L */
                CHECK(stf <= (mx - lof) / L * 1.002 + 1e-7);
            }
}

typedef struct {
    int r, bits, n;
    float *x;         /* exact labels [n][r] */
    uint8_t *codes;
    uint16_t *lo, *st;
    float *q;
} label_set;

static void set_make(label_set *s, int r, int bits, int n) {
    s->r = r; s->bits = bits; s->n = n;
    s->x = malloc((size_t)n * r * 4 + 4);
    s->codes = malloc(ds_label_row_bytes(r, bits) * (size_t)n + 1);
    s->lo = malloc((size_t)n * 2 + 2);
    s->st = malloc((size_t)n * 2 + 2);
    s->q = malloc((size_t)r * 4);
    for (int t = 0; t < n; t++) {
        float *xt = s->x + (size_t)t * r;
        rand_row(xt, r, (int)(rnd() % 4));       /* no constant rows: the varied cases above */
        ds_label_encode(xt, r, bits, s->codes + ds_label_row_bytes(r, bits) * (size_t)t,
                        s->lo + t, s->st + t);
    }
    for (int j = 0; j < r; j++) s->q[j] = rnd_normal() * (j % 3 ? 1.0f : 4.0f);
}
static void set_free(label_set *s) { free(s->x); free(s->codes); free(s->lo); free(s->st); free(s->q); }

/* scale of |score| terms for a token: sum_j |q_j| * (|lo| + L*step), the size of the largest
 * intermediate in s = step*sum q*code + lo*sum q */
static double term_scale(const label_set *s, int t) {
    double a = 0;
    for (int j = 0; j < s->r; j++) a += fabs(s->q[j]);
    if (s->bits == 16) {
        double m = 0;
        for (int j = 0; j < s->r; j++) m += fabs(s->q[j] * s->x[(size_t)t * s->r + j]);
        return m;
    }
    return a * (fabs(ds_fp16_to_fp32(s->lo[t])) + ((1 << s->bits) - 1) * ds_fp16_to_fp32(s->st[t]));
}

/* How far a SIMD level's score of token t may lie from the scalar reference: float rounding of
 * the terms, and at the AVX-512 level qsum rounded to 16 bits (an error <= max|qsum| / 65024
 * per channel, times codes <= L = 2^bits - 1 and the token's step). */
static double fast_tol(const label_set *s, int t, const char *level) {
    double tol = 1e-5 * term_scale(s, t) + 1e-30;
    if (s->bits < 16 && !strcmp(level, "avx512")) {
        double mq = 0;
        for (int j = 0; j < s->r; j++) mq = fmax(mq, fabs(s->q[j]));
        tol += mq / 65024.0 * s->r * ((1 << s->bits) - 1) * ds_fp16_to_fp32(s->st[t]);
    }
    return tol;
}

static const int k_shapes[][2] = {   /* (r, bits): fast-path shapes first, then scalar-only ones */
    { 4, 16 }, { 16, 4 }, { 8, 16 }, { 32, 4 }, { 64, 2 }, { 8, 8 }, { 16, 8 }, { 32, 2 },
    { 2, 16 }, { 16, 2 }, { 8, 4 }, { 4, 8 }, { 16, 16 }, { 32, 16 }, { 64, 4 }, { 64, 8 },
    { 128, 2 }, { 128, 4 }, { 128, 8 }, { 64, 16 }, { 128, 16 },
    { 4, 4 }, { 12, 4 }, { 5, 8 }, { 3, 2 }, { 1, 16 }, { 7, 16 }, { 24, 4 }, { 48, 2 },
};
static const int k_ns[] = { 1, 7, 15, 16, 17, 33, 100, 1000 };

TEST(ds_label_score_quantised_within_bound_all_levels) {
    for (int lv = 0; lv < N_LEVELS; lv++) {
        ds_kernels_force_level(k_levels[lv]);
        for (size_t si = 0; si < sizeof k_shapes / sizeof k_shapes[0]; si++)
            for (size_t ni = 0; ni < sizeof k_ns / sizeof k_ns[0]; ni++) {
                int r = k_shapes[si][0], bits = k_shapes[si][1], n = k_ns[ni];
                label_set s;
                set_make(&s, r, bits, n);
                float *fast = malloc((size_t)n * 4), *ref = malloc((size_t)n * 4);
                ds_label_score(s.q, r, bits, s.codes, s.lo, s.st, n, fast, NULL);
                ds_label_score_ref(s.q, r, bits, s.codes, s.lo, s.st, n, ref);
                double aq = 0;
                for (int j = 0; j < r; j++) aq += fabs(s.q[j]);
                for (int t = 0; t < n; t++) {
                    double exact = 0;
                    const float *xt = s.x + (size_t)t * r;
                    for (int j = 0; j < r; j++)
                        exact += (double)s.q[j] *
                                 (bits == 16 ? ds_fp16_to_fp32(ds_fp32_to_fp16(xt[j])) : xt[j]);
                    double bound = bits == 16 ? 0 : aq * ds_fp16_to_fp32(s.st[t]) / 2;
                    const double fp = fast_tol(&s, t, k_levels[lv]);
                    bound += fp;
                    CHECK_MSG(fabs(fast[t] - exact) <= bound,
                              "%s r=%d bits=%d n=%d t=%d: score %g exact %g bound %g", k_levels[lv],
                              r, bits, n, t, fast[t], exact, bound);
                    CHECK_MSG(fabs(fast[t] - ref[t]) <= fp,
                              "%s r=%d bits=%d n=%d t=%d: fast %.9g ref %.9g", k_levels[lv], r,
                              bits, n, t, fast[t], ref[t]);
                }
                free(fast); free(ref);
                set_free(&s);
            }
    }
    ds_kernels_force_level(NULL);
}

/* ds_label_score_multi: G queries over one set of label rows give, row by row, exactly what
 * ds_label_score gives each query alone (the AVX-512 level shares the loads and unpacking and
 * must keep every rounding), for every shape, lengths with tails, G = 1..8, queries at a stride,
 * and a query with a NaN among finite ones (that call takes the single-query path); and each
 * query's largest score key, kept while scoring, is its scores' largest. */
TEST(ds_label_score_multi_equals_single_all_levels) {
    for (int lv = 0; lv < N_LEVELS; lv++) {
        ds_kernels_force_level(k_levels[lv]);
        for (size_t si = 0; si < sizeof k_shapes / sizeof k_shapes[0]; si++)
            for (size_t ni = 0; ni < sizeof k_ns / sizeof k_ns[0]; ni += 2) {
                const int r = k_shapes[si][0], bits = k_shapes[si][1], n = k_ns[ni];
                const size_t qstride = (size_t)r + 3, sstride = (size_t)n + 5;
                label_set s;
                set_make(&s, r, bits, n);
                float *q = malloc(sizeof(float) * 8 * qstride), *multi = malloc(sizeof(float) * 8 * sstride);
                float *one = malloc(sizeof(float) * (size_t)n);
                for (int G = 1; G <= 8; G += (G < 3 ? 1 : 3)) {
                    for (int g = 0; g < G; g++)
                        for (int j = 0; j < r; j++) q[(size_t)g * qstride + j] = rnd_normal() * (float)(1 + 10 * g);
                    if (G == 7) q[3 * qstride + r / 2] = NAN;
                    uint32_t kmax[8];
                    ds_label_score_multi(q, qstride, G, r, bits, s.codes, s.lo, s.st, n, multi, sstride, kmax, NULL);
                    for (int g = 0; g < G; g++) {
                        ds_label_score(q + (size_t)g * qstride, r, bits, s.codes, s.lo, s.st, n, one, NULL);
                        int bad = 0;
                        uint32_t km = 0;   /* the row's largest key, as ds_group_max finds it */
                        for (int t = 0; t < n; t++) {
                            bad += memcmp(&one[t], &multi[(size_t)g * sstride + t], 4) != 0;
                            km = ds_score_key(one[t]) > km ? ds_score_key(one[t]) : km;
                        }
                        CHECK_MSG(!bad, "%s r=%d bits=%d n=%d G=%d query %d: %d of %d scores differ", k_levels[lv], r,
                                  bits, n, G, g, bad, n);
                        CHECK_MSG(kmax[g] == km, "%s r=%d bits=%d n=%d G=%d query %d: largest key %08x, the scores' %08x",
                                  k_levels[lv], r, bits, n, G, g, kmax[g], km);
                    }
                }
                free(q); free(multi); free(one);
                set_free(&s);
            }
    }
    ds_kernels_force_level(NULL);
}

/* A prefetch list (ds_row_prefetch) changes nothing in the scores, single or multi, at every
 * level: fewer rows than blocks, more (several a block), one base array or two, wider rows. */
TEST(ds_label_score_prefetch_changes_nothing) {
    enum { NROWS = 4096 };
    uint16_t *K = calloc((size_t)NROWS * 128, 2), *V = calloc((size_t)NROWS * 128, 2);
    int32_t idx[3000];
    for (int i = 0; i < 3000; i++) idx[i] = (int)(rnd() % NROWS);
    for (int lv = 0; lv < N_LEVELS; lv++) {
        ds_kernels_force_level(k_levels[lv]);
        static const int shapes[][2] = { { 16, 4 }, { 32, 4 }, { 64, 2 }, { 8, 16 } };
        for (int si = 0; si < 4; si++) {
            const int r = shapes[si][0], bits = shapes[si][1], n = 1000;
            label_set s;
            set_make(&s, r, bits, n);
            float *a = malloc(sizeof(float) * n * 3), *b = malloc(sizeof(float) * n * 3);
            float q[3 * 64];
            for (int i = 0; i < 3 * r; i++) q[i] = rnd_normal();
            const int npf[] = { 0, 7, 62, 3000 };
            for (int pi = 0; pi < 4; pi++) {
                const ds_row_prefetch pf = { { K, pi % 2 ? NULL : V }, idx, npf[pi], pi == 3 ? 256 : 128 };
                ds_label_score(s.q, r, bits, s.codes, s.lo, s.st, n, a, NULL);
                ds_label_score(s.q, r, bits, s.codes, s.lo, s.st, n, b, &pf);
                CHECK_MSG(!memcmp(a, b, sizeof(float) * n), "%s r=%d bits=%d: %d rows prefetched change the scores",
                          k_levels[lv], r, bits, npf[pi]);
                uint32_t ka[3], kb[3];
                ds_label_score_multi(q, (size_t)r, 3, r, bits, s.codes, s.lo, s.st, n, a, (size_t)n, ka, NULL);
                ds_label_score_multi(q, (size_t)r, 3, r, bits, s.codes, s.lo, s.st, n, b, (size_t)n, kb, &pf);
                CHECK_MSG(!memcmp(a, b, sizeof(float) * n * 3) && !memcmp(ka, kb, sizeof ka),
                          "%s r=%d bits=%d: %d rows prefetched change the multi scores", k_levels[lv], r, bits, npf[pi]);
            }
            free(a); free(b);
            set_free(&s);
        }
    }
    ds_kernels_force_level(NULL);
    free(K); free(V);
}

/* Offsets into the arrays (unaligned codes / lo / step / scores) must not matter. */
TEST(ds_label_score_unaligned_and_offset) {
    for (int lv = 0; lv < N_LEVELS; lv++) {
        ds_kernels_force_level(k_levels[lv]);
        static const int shapes[][2] = { { 16, 4 }, { 8, 16 }, { 32, 4 }, { 64, 2 } };
        for (int si = 0; si < 4; si++) {
            int r = shapes[si][0], bits = shapes[si][1], n = 203;
            label_set s;
            set_make(&s, r, bits, n);
            size_t rb = ds_label_row_bytes(r, bits);
            uint8_t *c2 = malloc(rb * n + 3);
            uint16_t *lo2 = malloc(n * 2 + 4), *st2 = malloc(n * 2 + 4);
            memcpy(c2 + 3, s.codes, rb * n);
            memcpy(lo2 + 1, s.lo, n * 2);
            memcpy(st2 + 1, s.st, n * 2);
            float *a = malloc(n * 4 + 8), *b = malloc(n * 4);
            ds_label_score(s.q, r, bits, c2 + 3, lo2 + 1, st2 + 1, n, a + 1, NULL);
            ds_label_score_ref(s.q, r, bits, s.codes, s.lo, s.st, n, b);
            for (int t = 0; t < n; t++) CHECK(fabs(a[1 + t] - b[t]) <= fast_tol(&s, t, k_levels[lv]));
            /* a later start (block boundaries shift) gives the same per-token scores */
            ds_label_score(s.q, r, bits, s.codes + rb * 5, s.lo + 5, s.st + 5, n - 5, a, NULL);
            for (int t = 5; t < n; t++) CHECK(fabs(a[t - 5] - b[t]) <= fast_tol(&s, t, k_levels[lv]));
            free(c2); free(lo2); free(st2); free(a); free(b);
            set_free(&s);
        }
    }
    ds_kernels_force_level(NULL);
}

TEST(ds_label_score_nonfinite_qsum_like_reference) {
    static const int shapes[][2] = { { 16, 4 }, { 32, 4 }, { 64, 2 }, { 16, 8 }, { 8, 16 } };
    for (int lv = 0; lv < N_LEVELS; lv++) {
        ds_kernels_force_level(k_levels[lv]);
        for (int si = 0; si < 5; si++)
            for (int v = 0; v < 3; v++) {
                int r = shapes[si][0], bits = shapes[si][1];
                label_set s;
                set_make(&s, r, bits, 64);
                s.q[3] = v == 0 ? NAN : v == 1 ? INFINITY : -INFINITY;
                float out[64], ref[64];
                ds_label_score(s.q, r, bits, s.codes, s.lo, s.st, 64, out, NULL);
                ds_label_score_ref(s.q, r, bits, s.codes, s.lo, s.st, 64, ref);
                for (int t = 0; t < 64; t++) {
                    if (v == 0) CHECK(isnan(out[t]));
                    CHECK_MSG(isnan(out[t]) == isnan(ref[t]) && (isnan(ref[t]) || out[t] == ref[t]),
                              "%s r=%d bits=%d t=%d: %g vs ref %g", k_levels[lv], r, bits, t, out[t], ref[t]);
                }
                set_free(&s);
            }
    }
    ds_kernels_force_level(NULL);
}

/* ds_group_max at every level: each head's scores less its own best, the largest over the heads,
 * exactly as plain float code computes it (one subtraction and max per element: no rounding
 * freedom), for group sizes 1..8, lengths with and without a SIMD tail, rows at a stride, heads
 * of very different scale, and in place (scores = row 0). */
TEST(ds_group_max_all_levels) {
    const int ns[] = {1, 7, 8, 15, 16, 17, 100, 1029};
    const size_t stride = 1100;
    float *s = malloc(sizeof(float) * 8 * stride), *in = malloc(sizeof(float) * 8 * stride);
    float *out = malloc(sizeof(float) * stride), *ref = malloc(sizeof(float) * stride);
    for (int lv = 0; lv < N_LEVELS; lv++) {
        ds_kernels_force_level(k_levels[lv]);
        for (int G = 1; G <= 8; G++)
            for (int ni = 0; ni < 8; ni++) {
                const int n = ns[ni];
                for (int g = 0; g < G; g++) {
                    float scale = g % 3 == 0 ? 100.0f : g % 3 == 1 ? 0.01f : 3.0f;
                    for (int t = 0; t < n; t++) s[(size_t)g * stride + t] = scale * rnd_normal() - 7.0f * g;
                }
                int best0 = 0;   /* head 0's best position must come out as 0 */
                for (int t = 0; t < n; t++) {
                    float v = -FLT_MAX;
                    for (int g = 0; g < G; g++) {
                        float mx = -FLT_MAX;
                        for (int u = 0; u < n; u++) mx = s[(size_t)g * stride + u] > mx ? s[(size_t)g * stride + u] : mx;
                        float x = s[(size_t)g * stride + t] - mx;
                        v = x > v ? x : v;
                    }
                    ref[t] = v;
                    if (s[t] > s[best0]) best0 = t;
                }
                ds_group_max(s, G, stride, n, out);
                int bad = 0;
                for (int t = 0; t < n; t++) bad += out[t] != ref[t] || out[t] > 0;
                CHECK_MSG(!bad && out[best0] == 0, "%s G=%d n=%d: %d of %d differ from the reference",
                          k_levels[lv], G, n, bad, n);
                memcpy(in, s, sizeof(float) * 8 * stride);
                ds_group_max(in, G, stride, n, in);   /* in place */
                CHECK_MSG(!memcmp(in, out, sizeof(float) * (size_t)n), "%s G=%d n=%d: in place differs",
                          k_levels[lv], G, n);
            }
    }
    ds_kernels_force_level(NULL);
    free(s); free(in); free(out); free(ref);
}

TEST(ds_kernels_level_names) {
    const char *best = ds_kernels_level();
    CHECK(!strcmp(best, "scalar") || !strcmp(best, "avx2") || !strcmp(best, "avx512"));
    ds_kernels_force_level("scalar");
    CHECK(!strcmp(ds_kernels_level(), "scalar"));
    ds_kernels_force_level(NULL);
    CHECK(!strcmp(ds_kernels_level(), best));
    fprintf(stderr, "    best level here: %s\n", best);
}

/* ---------------------------------------------------------------- top-k */

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* ds_topk at every level vs ds_topk_ref as sets; also checks it writes nothing past its count */
static int topk_matches(const float *s, int n, int k, const char **why) {
    static char msg[256];
    int cap = (k < n ? k : n) + 0;
    if (cap < 0) cap = 0;
    int32_t *ref = malloc(((size_t)(n > 0 ? n : 0) + 1) * 4), *got = malloc(((size_t)cap + 4) * 4);
    void *scratch = malloc(ds_topk_scratch_bytes(n));
    int nr = ds_topk_ref(s, n, k, ref), ok = 1;
    qsort(ref, (size_t)nr, 4, cmp_i32);
    for (int lv = 0; lv < N_LEVELS && ok; lv++) {
        ds_kernels_force_level(k_levels[lv]);
        for (int i = 0; i < cap + 4; i++) got[i] = -7;
        int ng = ds_topk(s, n, k, got, scratch);
        if (ng != nr) { snprintf(msg, sizeof msg, "%s n=%d k=%d: count %d vs %d", k_levels[lv], n, k, ng, nr); ok = 0; break; }
        for (int i = cap; i < cap + 4; i++)
            if (got[i] != -7) { snprintf(msg, sizeof msg, "%s n=%d k=%d: wrote past the end", k_levels[lv], n, k); ok = 0; }
        qsort(got, (size_t)ng, 4, cmp_i32);
        for (int i = 0; i < ng && ok; i++)
            if (got[i] != ref[i]) {
                snprintf(msg, sizeof msg, "%s n=%d k=%d: sets differ at %d (%d vs %d)", k_levels[lv], n, k, i, got[i], ref[i]);
                ok = 0;
            }
    }
    ds_kernels_force_level(NULL);
    free(ref); free(got); free(scratch);
    *why = msg;
    return ok;
}

static void k_list(int n, int *ks, int *nk) {
    int c = 0;
    ks[c++] = 0; ks[c++] = 1; ks[c++] = 2; ks[c++] = n / 16; ks[c++] = n / 8; ks[c++] = n / 2;
    ks[c++] = n - 1; ks[c++] = n; ks[c++] = n + 5; ks[c++] = -3;
    ks[c++] = n > 0 ? (int)(rnd() % (uint64_t)n) : 0;
    *nk = c;
}

static const int k_topk_ns[] = { 1, 2, 3, 5, 16, 17, 100, 1000, 4095, 4096, 5000, 20000, 40000 };

TEST(ds_topk_random_matches_reference) {
    const char *why;
    for (size_t ni = 0; ni < sizeof k_topk_ns / sizeof k_topk_ns[0]; ni++) {
        int n = k_topk_ns[ni], ks[16], nk;
        float *s = malloc((size_t)n * 4);
        for (int dist = 0; dist < 3; dist++) {
            for (int i = 0; i < n; i++)
                s[i] = dist == 0 ? rnd_normal() : dist == 1 ? 1000.0f + rnd_uniform() : -expf(8 * rnd_normal());
            k_list(n, ks, &nk);
            for (int ki = 0; ki < nk; ki++) CHECK_MSG(topk_matches(s, n, ks[ki], &why), "dist %d: %s", dist, why);
        }
        free(s);
    }
}

TEST(ds_topk_ties_lowest_index_wins) {
    const char *why;
    for (size_t ni = 0; ni < sizeof k_topk_ns / sizeof k_topk_ns[0]; ni++) {
        int n = k_topk_ns[ni], ks[16], nk;
        float *s = malloc((size_t)n * 4);
        k_list(n, ks, &nk);
        for (int i = 0; i < n; i++) s[i] = 3.0f;                          /* all equal */
        for (int ki = 0; ki < nk; ki++) CHECK_MSG(topk_matches(s, n, ks[ki], &why), "%s", why);
        for (int i = 0; i < n; i++) s[i] = (float)(rnd() % 4);            /* 4 levels */
        for (int ki = 0; ki < nk; ki++) CHECK_MSG(topk_matches(s, n, ks[ki], &why), "%s", why);
        for (int i = 0; i < n; i++) s[i] = (rnd() & 1) ? 0.0f : -0.0f;    /* -0 == +0 */
        for (int ki = 0; ki < nk; ki++) CHECK_MSG(topk_matches(s, n, ks[ki], &why), "%s", why);
        if (n >= 3) {                                                    /* explicit tie rule */
            for (int i = 0; i < n; i++) s[i] = 1.0f;
            s[n - 1] = 2.0f;
            int32_t out[2];
            void *scratch = malloc(ds_topk_scratch_bytes(n));
            CHECK(ds_topk(s, n, 2, out, scratch) == 2);
            qsort(out, 2, 4, cmp_i32);
            CHECK(out[0] == 0 && out[1] == n - 1);
            free(scratch);
        }
        free(s);
    }
}

TEST(ds_topk_nan_and_infinities) {
    const char *why;
    for (size_t ni = 0; ni < sizeof k_topk_ns / sizeof k_topk_ns[0]; ni++) {
        int n = k_topk_ns[ni], ks[16], nk;
        float *s = malloc((size_t)n * 4);
        for (int mode = 0; mode < 5; mode++) {
            for (int i = 0; i < n; i++) {
                unsigned u = (unsigned)(rnd() % 100);
                float v = rnd_normal();
                if (mode == 0) v = u < 10 ? NAN : u < 15 ? INFINITY : u < 20 ? -INFINITY : u < 25 ? -0.0f : v;
                if (mode == 1) v = NAN;                                    /* all NaN */
                if (mode == 2) v = u < 90 ? -NAN : v;                      /* mostly NaN */
                if (mode == 3) v = u < 50 ? -INFINITY : u < 60 ? INFINITY : v;
                if (mode == 4) v = u < 30 ? v * 3e38f : u < 60 ? v * 1e-40f : u < 70 ? -FLT_MAX : v;
                s[i] = v;
            }
            k_list(n, ks, &nk);
            for (int ki = 0; ki < nk; ki++) CHECK_MSG(topk_matches(s, n, ks[ki], &why), "mode %d: %s", mode, why);
        }
        free(s);
    }
}

/* Inputs that defeat the sample bracket (sorted runs, a period equal to the sample stride,
 * heavy ties at the threshold) must still give the exact answer through the fallback. */
TEST(ds_topk_adversarial_orders) {
    const char *why;
    static const int ns[] = { 4096, 8192, 16384, 32768, 50000 };
    for (int ni = 0; ni < 5; ni++) {
        int n = ns[ni], ks[16], nk;
        float *s = malloc((size_t)n * 4);
        int stride = n >= 16384 ? n / 1024 : 16;
        for (int mode = 0; mode < 5; mode++) {
            for (int i = 0; i < n; i++) {
                if (mode == 0) s[i] = (float)i;                            /* ascending */
                if (mode == 1) s[i] = (float)(n - i);                      /* descending */
                if (mode == 2) s[i] = i % stride == 0 ? 10.0f + rnd_uniform() : rnd_uniform();
                if (mode == 3) s[i] = i % stride == 0 ? -1.0f : rnd_uniform();
                if (mode == 4) s[i] = i < n / 20 ? 5.0f : i % 7 ? rnd_normal() : 5.0f;
            }
            k_list(n, ks, &nk);
            for (int ki = 0; ki < nk; ki++) CHECK_MSG(topk_matches(s, n, ks[ki], &why), "mode %d: %s", mode, why);
        }
        free(s);
    }
}

/* The realistic pipeline: scores from quantised labels, then top-k at n/16. */
TEST(ds_topk_on_label_scores) {
    const char *why;
    label_set s;
    set_make(&s, 32, 4, 33000);
    float *sc = malloc(33000 * 4);
    ds_label_score(s.q, 32, 4, s.codes, s.lo, s.st, 33000, sc, NULL);
    CHECK_MSG(topk_matches(sc, 33000, 33000 / 16, &why), "%s", why);
    CHECK_MSG(topk_matches(sc, 33000, 128, &why), "%s", why);
    free(sc);
    set_free(&s);
}
