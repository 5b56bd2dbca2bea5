/* bench_ds_kernels.c — micro-benchmark of Double Sparsity's selection kernels (label scoring
 * and top-k) per SIMD level, single thread.
 *
 * Build and run from the repo root:
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Iinclude -Isrc bench/bench_ds_kernels.c src/ds_kernels*.c \
 *       src/attention.c src/util.c -lm -o /tmp/bench_dsk && /tmp/bench_dsk [seconds_per_case]
 *
 * Score: s[t] = qsum . label[t] over n tokens for (r, bits) shapes. Bytes per token = packed
 * codes + 4 (fp16 lo and step) below 16 bits. "hot": one label array reused (L1/L2 resident,
 * like a head whose labels were just written); "stream": cycling through enough copies
 * (>= 64 MiB) that the labels come from L3/DRAM. The memcpy line gives the machine's copy rate
 * for scale (GB/s of bytes copied; a copy reads and writes each byte).
 * Top-k: k = n/16 on the scores of the (32, 4) labels (a realistic distribution), cycling through
 * 16 score arrays (different queries) so branch predictors see fresh data; ns/element.
 * Group score (best level only, n = 8192, G = 3 query heads per KV group as SmolLM2, 4-bit labels
 * at 16 and 32 channels): what one KV group's selection costs with the summed query (one score
 * pass, then the top-k) against the largest head (--ds-group-score max: the G heads scored in one
 * pass, each head's largest score kept while scoring, the shifted combine (ds_group_max_keys), then
 * the top-k; beside it the combine that finds the maxima by reading the rows again, ds_group_max,
 * which the heads scored one at a time still take); us per group.
 * Attention (n = 8192, G = 3, head_dim 64, fp16 K and V as SmolLM2's cache): one KV group's exact
 * attention over k = n/16 selected rows as decode runs it (ds_attn_partial over slices of 128 rows,
 * then ds_attn_merge), the rows at random positions in ascending order (as the top-k leaves them);
 * "hot": one group's rows reused (cache-resident); "cold": 90 groups (SmolLM2's 30 layers x 3 KV
 * heads, 180 MiB of K and V) in turn after a 128 MiB write has evicted the caches, as in decode,
 * where a step's weights stream through the caches between one token's gathers and the next's;
 * "touch": the same cold rows only loaded (one value per 64-byte line), this machine's floor for
 * the gather; "dense": the whole 8192 rows, cold. us per group.
 * Step (n = 8192, k = 512, 16 channels at 4 bits, G = 3): one KV group's whole decode step, cold
 * as above (90 groups, their labels and K/V evicted): the selection (summed or largest-head score,
 * top-k), then the attention over k rows; with and without the previous step's selection
 * prefetched during the label scan (ds_row_prefetch), that selection sharing 3/4 of its rows with
 * this one (SmolLM2 at 8K decoding `dsinfer bench`'s random tokens: 0.72-0.75 of consecutive
 * selections shared). The rows attended are fixed per group (one per stretch of 16) so that the
 * overlap is what is set; the top-k's own output is computed and discarded. Median and range over
 * 7 alternated sweeps.
 * Times: thread CPU time, best of 5 (the step: median of 7). */
#include "ds_kernels.h"
#include "attention.h"
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t g_s = 88172645463325252ULL;
static uint64_t rnd(void) { g_s ^= g_s << 13; g_s ^= g_s >> 7; g_s ^= g_s << 17; return g_s; }
static float rndn(void) {
    float s = 0;
    for (int i = 0; i < 4; i++) s += (float)((rnd() >> 40) * (1.0 / 16777216.0));
    return (s - 2.0f) * 1.7320508f;
}

static volatile float g_sink;

/* Calls timed between two clock reads: this clock is a system call of ~0.5 us in some VMs,
 * as long as a short call itself. */
enum { BATCH = 16 };

/* n label rows of r channels at `bits` from keys of sd 3 (a realistic spread for the codes) */
static void random_labels(int r, int bits, int n, uint8_t *codes, uint16_t *lo, uint16_t *st) {
    const size_t rb = ds_label_row_bytes(r, bits);
    float x[128];
    for (int t = 0; t < n; t++) {
        for (int j = 0; j < r; j++) x[j] = 3.0f * rndn();
        ds_label_encode(x, r, bits, codes + rb * t, lo + t, st + t);
    }
}

/* Sum of one value per 64-byte line of the selected K and V rows (the "touch" floor). */
static float touch_rows(const uint16_t *K, const uint16_t *V, const int32_t *idx, int k, int hd) {
    float s = 0;
    for (int j = 0; j < k; j++) {
        const uint16_t *a = K + (size_t)idx[j] * hd, *b = V + (size_t)idx[j] * hd;
        for (int c = 0; c < hd; c += 32) s += (float)(a[c] + b[c]);
    }
    return s;
}

static void bench_attention(void) {
    enum { NG = 90, G = 3, HD = 64, SLICE = 128, N = 8192, KSEL = N / 16, NS = KSEL / SLICE };
    const int n = N, k = KSEL, ns = NS;
    const size_t per = (size_t)n * HD, flush_bytes = (size_t)128 << 20;
    uint16_t *K = ds_alloc(per * NG * 2), *V = ds_alloc(per * NG * 2);
    uint8_t *flush = ds_alloc(flush_bytes);
    int32_t *idx = ds_alloc((size_t)k * NG * 4);
    float q[G * HD], acc[NS][G * HD], out[G * HD];
    ds_attn_stats sts[NS];
    if (!K || !V || !flush || !idx) { fprintf(stderr, "bench_ds_kernels: out of memory\n"); exit(1); }
    for (size_t i = 0; i < per * NG; i++) {
        K[i] = ds_fp32_to_fp16(0.5f * rndn());
        V[i] = ds_fp32_to_fp16(rndn());
    }
    for (int i = 0; i < G * HD; i++) q[i] = 0.125f * rndn();
    for (int g = 0; g < NG; g++) {   /* k distinct positions, ascending: one per stretch of 16 */
        for (int j = 0; j < k; j++) idx[(size_t)g * k + j] = 16 * j + (int)(rnd() % 16);
    }
    /* 0 DS hot, 1 DS cold, 2 touch cold, 3 dense cold; best of 5 sweeps over the groups */
    double t[4];
    for (int p = 0; p < 4; p++) {
        t[p] = 1e9;
        for (int rep = 0; rep < 5; rep++) {
            if (p) memset(flush, rep + 1, flush_bytes);
            double t0 = cpu_s();
            for (int g = 0; g < NG; g++) {
                const int gg = p == 0 ? 0 : g;
                const uint16_t *Kg = K + per * gg, *Vg = V + per * gg;
                const int32_t *ig = idx + (size_t)g * k;
                if (p <= 1) {
                    for (int j = 0; j < ns; j++)
                        ds_attn_partial(q, G, HD, Kg, Vg, ig, j * SLICE, (j + 1) * SLICE, acc[j], &sts[j]);
                    ds_attn_merge(ns, G, HD, &acc[0][0], sts, out);
                    g_sink = out[0];
                } else if (p == 2) {
                    g_sink = touch_rows(Kg, Vg, ig, k, HD);
                } else {
                    ds_attn_partial(q, G, HD, Kg, Vg, NULL, 0, n, acc[0], &sts[0]);
                    g_sink = acc[0][0];
                }
            }
            const double dt = (cpu_s() - t0) / NG;
            t[p] = dt < t[p] ? dt : t[p];
        }
    }
    printf("\n# attention per KV group, n = %d, k = %d, G = %d, head_dim %d, fp16 K/V; us per group\n", n, k, G, HD);
    printf("%8s %8s %8s %8s  %s\n", "DS hot", "DS cold", "touch", "dense", "dense / DS cold");
    printf("%8.2f %8.2f %8.2f %8.2f  %.2fx\n", t[0] * 1e6, t[1] * 1e6, t[2] * 1e6, t[3] * 1e6, t[3] / t[1]);
    ds_free(K); ds_free(V); ds_free(flush); ds_free(idx);
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void bench_step(void) {
    enum { NG = 90, G = 3, HD = 64, SLICE = 128, N = 8192, KSEL = N / 16, NS = KSEL / SLICE, R = 16, BITS = 4,
           SWEEPS = 7, NV = 4 };
    const size_t per = (size_t)N * HD, rb = ds_label_row_bytes(R, BITS), flush_bytes = (size_t)128 << 20;
    uint16_t *K = ds_alloc(per * NG * 2), *V = ds_alloc(per * NG * 2);
    uint8_t *codes = ds_alloc(rb * N * NG), *flush = ds_alloc(flush_bytes);
    uint16_t *lo = ds_alloc((size_t)N * NG * 2), *st = ds_alloc((size_t)N * NG * 2);
    int32_t *cur = ds_alloc((size_t)KSEL * NG * 4), *prev = ds_alloc((size_t)KSEL * NG * 4), *idx = ds_alloc(N * 4);
    float *rows = ds_alloc(sizeof(float) * G * N);
    void *scratch = ds_alloc(ds_topk_scratch_bytes(N));
    if (!K || !V || !codes || !flush || !lo || !st || !cur || !prev || !idx || !rows || !scratch) {
        fprintf(stderr, "bench_ds_kernels: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < per * NG; i++) {
        K[i] = ds_fp32_to_fp16(0.5f * rndn());
        V[i] = ds_fp32_to_fp16(rndn());
    }
    random_labels(R, BITS, N * NG, codes, lo, st);
    for (int i = 0; i < KSEL * NG; i++) {   /* one per stretch of 16; the previous step's: 3/4 the same */
        const int j = i % KSEL;
        cur[i] = 16 * j + (int)(rnd() % 16);
        prev[i] = rnd() % 4 ? cur[i] : 16 * j + (int)(rnd() % 16);
    }
    float q[G * HD], acc[NS][G * HD], out[G * HD];
    ds_attn_stats sts[NS];
    for (int i = 0; i < G * HD; i++) q[i] = 0.125f * rndn();
    double t[NV][SWEEPS];
    for (int sw = 0; sw < SWEEPS; sw++)
        for (int v = 0; v < NV; v++) {   /* 0 sum, 1 sum + prefetch, 2 max, 3 max + prefetch */
            memset(flush, sw * NV + v + 1, flush_bytes);
            double t0 = cpu_s();
            for (int g = 0; g < NG; g++) {
                const uint16_t *Kg = K + per * g, *Vg = V + per * g;
                const uint8_t *cg = codes + rb * N * g;
                const uint16_t *lg = lo + (size_t)N * g, *sg = st + (size_t)N * g;
                const ds_row_prefetch pf = { { Kg, Vg }, prev + (size_t)g * KSEL, KSEL, HD * 2 };
                const ds_row_prefetch *pp = v & 1 ? &pf : NULL;
                if (v < 2) {
                    float qs[R];
                    for (int j = 0; j < R; j++) qs[j] = q[j] + q[HD + j] + q[2 * HD + j];
                    ds_label_score(qs, R, BITS, cg, lg, sg, N, rows, pp);
                } else {
                    uint32_t kmax[G];
                    ds_label_score_multi(q, HD, G, R, BITS, cg, lg, sg, N, rows, N, kmax, pp);
                    ds_group_max_keys(rows, G, N, N, kmax, rows);
                }
                g_sink = (float)ds_topk(rows, N, KSEL, idx, scratch);
                const int32_t *ig = cur + (size_t)g * KSEL;
                for (int j = 0; j < NS; j++)
                    ds_attn_partial(q, G, HD, Kg, Vg, ig, j * SLICE, (j + 1) * SLICE, acc[j], &sts[j]);
                ds_attn_merge(NS, G, HD, &acc[0][0], sts, out);
                g_sink = out[0];
            }
            t[v][sw] = (cpu_s() - t0) / NG;
        }
    static const char *const names[NV] = { "sum", "sum + prefetch", "max", "max + prefetch" };
    printf("\n# step per KV group, cold, n = %d, k = %d, %d channels at %d bits, G = %d, 3/4 of the previous\n"
           "# selection selected again; us per group, median [min, max] of %d alternated sweeps\n",
           N, KSEL, R, BITS, G, SWEEPS);
    double med[NV];
    for (int v = 0; v < NV; v++) {
        qsort(t[v], SWEEPS, sizeof(double), cmp_dbl);
        med[v] = t[v][SWEEPS / 2];
        printf("%-16s %7.2f  [%6.2f, %6.2f]", names[v], med[v] * 1e6, t[v][0] * 1e6, t[v][SWEEPS - 1] * 1e6);
        if (v & 1) printf("  %.2fx", med[v - 1] / med[v]);
        printf("\n");
    }
    ds_free(K); ds_free(V); ds_free(codes); ds_free(flush); ds_free(lo); ds_free(st);
    ds_free(cur); ds_free(prev); ds_free(idx); ds_free(rows); ds_free(scratch);
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 0.1;
    static const int ns[] = { 1024, 8192, 32768 };
    static const int shapes[][2] = { { 4, 16 }, { 16, 4 }, { 8, 16 }, { 32, 4 }, { 64, 2 } };
    static const char *const levels[] = { "scalar", "avx2", "avx512" };

    /* memcpy reference */
    {
        size_t sz = 64u << 20;
        char *a = malloc(sz), *b = malloc(sz);
        memset(a, 1, sz); memset(b, 2, sz);
        double best = 1e9;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = cpu_s();
            memcpy(b, a, sz);
            double dt = cpu_s() - t0;
            best = dt < best ? dt : best;
            a[rep] = b[sz - 1 - rep];
        }
        printf("# memcpy 64 MiB: %.1f GB/s copied (single thread)\n", sz / best * 1e-9);
        free(a); free(b);
    }
    ds_kernels_force_level(NULL);
    printf("# best level: %s; thread CPU time, best of 5\n", ds_kernels_level());
    printf("%-7s %6s %9s %5s  %9s %7s  %9s %7s\n", "level", "n", "r@bits", "B/tok",
           "hot ns/t", "GB/s", "strm ns/t", "GB/s");
    for (int lv = 0; lv < 3; lv++) {
        ds_kernels_force_level(levels[lv]);
        if (strcmp(ds_kernels_level(), levels[lv])) continue;   /* not available here */
        for (int ni = 0; ni < 3; ni++)
            for (int si = 0; si < 5; si++) {
                int n = ns[ni], r = shapes[si][0], bits = shapes[si][1];
                size_t rb = ds_label_row_bytes(r, bits), tok_b = rb + (bits < 16 ? 4 : 0);
                size_t set_b = tok_b * (size_t)n;
                int copies = (int)((64u << 20) / set_b) + 1;
                uint8_t *codes = ds_alloc(rb * (size_t)n * copies);
                uint16_t *lo = ds_alloc((size_t)n * 2 * copies), *st = ds_alloc((size_t)n * 2 * copies);
                float q[128], *out = ds_alloc((size_t)n * 4);
                random_labels(r, bits, n, codes, lo, st);
                for (int c = 1; c < copies; c++) {
                    memcpy(codes + rb * (size_t)n * c, codes, rb * (size_t)n);
                    memcpy(lo + (size_t)n * c, lo, (size_t)n * 2);
                    memcpy(st + (size_t)n * c, st, (size_t)n * 2);
                }
                for (int j = 0; j < r; j++) q[j] = rndn();
                double best[2] = { 1e9, 1e9 };
                for (int mode = 0; mode < 2; mode++) {
                    int cyc = 0;
                    for (int rep = 0; rep < 5; rep++) {
                        long iters = 0;
                        double t0 = cpu_s(), dt;
                        do {
                            for (int b = 0; b < BATCH; b++, iters++) {
                                int c = mode ? cyc : 0;
                                cyc = (cyc + 1) % copies;
                                ds_label_score(q, r, bits, codes + rb * (size_t)n * c, lo + (size_t)n * c,
                                               st + (size_t)n * c, n, out, NULL);
                            }
                            dt = cpu_s() - t0;
                        } while (dt < secs / 5);
                        dt /= (double)iters;
                        best[mode] = dt < best[mode] ? dt : best[mode];
                    }
                }
                g_sink = out[n / 2];
                char shape[16];
                snprintf(shape, sizeof shape, "%d@%d", r, bits);
                printf("%-7s %6d %9s %5zu  %9.3f %7.1f  %9.3f %7.1f\n", levels[lv], n, shape, tok_b,
                       best[0] / n * 1e9, set_b / best[0] * 1e-9, best[1] / n * 1e9,
                       set_b / best[1] * 1e-9);
                ds_free(codes); ds_free(lo); ds_free(st); ds_free(out);
            }
    }

    printf("\n%-7s %6s %6s  %9s %9s\n", "level", "n", "k", "topk ns/e", "us/call");
    for (int lv = 0; lv < 3; lv++) {
        ds_kernels_force_level(levels[lv]);
        if (strcmp(ds_kernels_level(), levels[lv])) continue;
        for (int ni = 0; ni < 3; ni++) {
            /* NS different score arrays in turn, so the branch predictor cannot learn one */
            enum { NS = 16 };
            int n = ns[ni], k = n / 16, r = 32, bits = 4;
            size_t rb = ds_label_row_bytes(r, bits);
            uint8_t *codes = ds_alloc(rb * (size_t)n);
            uint16_t *lo = ds_alloc((size_t)n * 2), *st = ds_alloc((size_t)n * 2);
            float q[32], *sc = ds_alloc((size_t)n * 4 * NS);
            int32_t *idx = ds_alloc((size_t)k * 4);
            void *scratch = ds_alloc(ds_topk_scratch_bytes(n));
            random_labels(r, bits, n, codes, lo, st);
            for (int a = 0; a < NS; a++) {
                for (int j = 0; j < r; j++) q[j] = rndn();
                ds_label_score(q, r, bits, codes, lo, st, n, sc + (size_t)n * a, NULL);
            }
            double best = 1e9;
            for (int rep = 0; rep < 5; rep++) {
                long iters = 0;
                double t0 = cpu_s(), dt;
                do {
                    for (int b = 0; b < BATCH; b++, iters++)
                        g_sink = (float)ds_topk(sc + (size_t)n * (iters % NS), n, k, idx, scratch);
                    dt = cpu_s() - t0;
                } while (dt < secs / 5 || iters < NS);
                dt /= (double)iters;
                best = dt < best ? dt : best;
            }
            printf("%-7s %6d %6d  %9.3f %9.2f\n", levels[lv], n, k, best / n * 1e9, best * 1e6);
            ds_free(codes); ds_free(lo); ds_free(st); ds_free(sc); ds_free(idx); ds_free(scratch);
        }
    }
    ds_kernels_force_level(NULL);

    printf("\n# group score, %s, n = 8192, G = 3, k = n/16, us per KV group; max as DS runs it (each head's\n"
           "# largest key kept while scoring, then the combine) and with the maxima found by re-reading the rows\n",
           ds_kernels_level());
    printf("%9s  %7s %7s %7s  %7s %7s %7s %7s  %7s %7s %7s  %8s\n", "r@bits", "sum:scr", "topk", "total", "max:scr",
           "combine", "topk", "total", "reread", "combine", "total", "max/sum");
    for (int ri = 0; ri < 2; ri++) {
        enum { G = 3, NP = 7 };
        const int n = 8192, k = n / 16, r = ri ? 32 : 16, bits = 4;
        size_t rb = ds_label_row_bytes(r, bits);
        uint8_t *codes = ds_alloc(rb * (size_t)n);
        uint16_t *lo = ds_alloc((size_t)n * 2), *st = ds_alloc((size_t)n * 2);
        float q[G][128], qs[128];
        float *sc = ds_alloc((size_t)n * 4 * G), *gs = ds_alloc((size_t)n * 4 * G);
        uint32_t kmax[G];
        int32_t *idx = ds_alloc((size_t)k * 4);
        void *scratch = ds_alloc(ds_topk_scratch_bytes(n));
        random_labels(r, bits, n, codes, lo, st);
        for (int j = 0; j < r; j++) {
            qs[j] = 0;
            for (int g = 0; g < G; g++) { q[g][j] = rndn(); qs[j] += q[g][j]; }
        }
        /* parts, best of 5 each: 0 sum score, 1 its top-k, 2 multi score keeping the keys, 3 the
         * combine from them, 4 the top-k of the max scores, 5 multi score alone, 6 ds_group_max
         * (finds the maxima by reading the rows again, then combines) */
        double t[NP];
        for (int p = 0; p < NP; p++) {
            t[p] = 1e9;
            for (int rep = 0; rep < 5; rep++) {
                long iters = 0;
                double t0 = cpu_s(), dt;
                do {
                    for (int b = 0; b < BATCH; b++, iters++) {
                        if (p == 0) ds_label_score(qs, r, bits, codes, lo, st, n, sc, NULL);
                        else if (p == 1 || p == 4) g_sink = (float)ds_topk(p == 1 ? sc : gs, n, k, idx, scratch);
                        else if (p == 2 || p == 5)
                            ds_label_score_multi(&q[0][0], 128, G, r, bits, codes, lo, st, n, gs, (size_t)n,
                                                 p == 2 ? kmax : NULL, NULL);
                        /* the combines run in place, as in decode; they are branch-free passes, so
                         * combining row 0 again (already combined) takes the same time */
                        else if (p == 3) ds_group_max_keys(gs, G, (size_t)n, n, kmax, gs);
                        else ds_group_max(gs, G, (size_t)n, n, gs);
                    }
                    dt = cpu_s() - t0;
                } while (dt < secs / 5);
                dt /= (double)iters;
                t[p] = dt < t[p] ? dt : t[p];
            }
            if (p == 3) {   /* leave the group's max scores for the top-k */
                ds_label_score_multi(&q[0][0], 128, G, r, bits, codes, lo, st, n, gs, (size_t)n, kmax, NULL);
                ds_group_max_keys(gs, G, (size_t)n, n, kmax, gs);
            }
        }
        const double sum = t[0] + t[1], mx = t[2] + t[3] + t[4], mx_re = t[5] + t[6] + t[4];
        char shape[16];
        snprintf(shape, sizeof shape, "%d@%d", r, bits);
        printf("%9s  %7.2f %7.2f %7.2f  %7.2f %7.2f %7.2f %7.2f  %7.2f %7.2f %7.2f  %7.2fx\n", shape, t[0] * 1e6,
               t[1] * 1e6, sum * 1e6, t[2] * 1e6, t[3] * 1e6, t[4] * 1e6, mx * 1e6, t[5] * 1e6, t[6] * 1e6,
               mx_re * 1e6, mx / sum);
        ds_free(codes); ds_free(lo); ds_free(st); ds_free(sc); ds_free(gs); ds_free(idx); ds_free(scratch);
    }
    bench_attention();
    bench_step();
    return 0;
}
