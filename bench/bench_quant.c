/* bench_quant.c — matrix-vector micro-benchmark of the quantised dot kernels per SIMD level.
 *
 * Build and run from the repo root:
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Iinclude -Isrc bench/bench_quant.c src/quant*.c src/util.c \
 *       -lm -o /tmp/bench_quant && /tmp/bench_quant [seconds_per_case [case_filter]]
 *
 * For each case it times out[r] = dot(W[r], a) over all rows three ways: ds_vec_dot_rows in one
 * call for the whole matrix ("rows"), ds_vec_dot_rows on 16-row chunks as src/forward.c calls it
 * ("rows16"), and a per-row ds_vec_dot loop ("dot"), at each available SIMD level, single thread. "L2" cases reuse one matrix (it stays in cache when small); "stream" cases cycle
 * through enough copies (>= 64 MiB) that the weights come from L3/DRAM as in real decoding.
 * Reported: ns per row and GB/s of weight bytes read. Single-thread, best of 5 runs. Times are
 * thread CPU time (CLOCK_THREAD_CPUTIME_ID), so a busy machine that preempts the benchmark
 * inflates them less than wall-clock time would. */
#include "quant.h"

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
static float rndf(void) { return (float)((rnd() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

/* random blocks with sane scales: quantisable types via a fake "weight" quantiser is not
 * available here, so fill random payload and patch fp16 scale fields */
static void fill(ds_type t, uint8_t *p, size_t bytes) {
    const ds_type_info *ti = ds_type_info_get(t);
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)rnd();
    uint16_t s = ds_fp32_to_fp16(0.01f);
    for (size_t b = 0; b < bytes / (size_t)ti->bytes; b++) {
        uint8_t *q = p + b * (size_t)ti->bytes;
        switch (t) {
        case DS_TYPE_Q6_K: memcpy(q + 208, &s, 2); break;
        case DS_TYPE_F16: memcpy(q, &s, 2); break;
        case DS_TYPE_Q4_0: case DS_TYPE_Q5_0: case DS_TYPE_Q8_0: memcpy(q, &s, 2); break;
        default: memcpy(q, &s, 2); memcpy(q + 2, &s, 2); break;
        }
    }
}

typedef struct { const char *name; ds_type t; int rows, n; } bench_case;

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 0.15;
    static const bench_case cases[] = {
        { "Q4_1 1536x576 (SmolLM2 ffn_up)", DS_TYPE_Q4_1, 1536, 576 },
        { "Q4_1 576x1536 (SmolLM2 ffn_down)", DS_TYPE_Q4_1, 576, 1536 },
        { "Q8_0 49152x576 (SmolLM2 LM head)", DS_TYPE_Q8_0, 49152, 576 },
        { "Q4_K 8960x1536 (Qwen2.5-1.5B ffn_up)", DS_TYPE_Q4_K, 8960, 1536 },
        { "Q6_K 1536x8960 (Qwen2.5-1.5B ffn_down)", DS_TYPE_Q6_K, 1536, 8960 },
        { "Q8_0 1536x576 (L2-sized)", DS_TYPE_Q8_0, 1536, 576 },
        { "Q5_0 1536x1536", DS_TYPE_Q5_0, 1536, 1536 },
        { "Q4_0 1536x1536", DS_TYPE_Q4_0, 1536, 1536 },
        { "Q5_K 1536x1536", DS_TYPE_Q5_K, 1536, 1536 },
        { "F16 1536x1536", DS_TYPE_F16, 1536, 1536 },
    };
    static const char *const levels[] = { "scalar", "avx2", "avx512" };
    printf("# best of 5, single thread, thread CPU time; GB/s = weight bytes / time\n");
    printf("%-40s %-7s %-6s %8s %6s %8s %6s %8s %6s\n", "case", "level", "cache", "rows", "GB/s",
           "rows16", "GB/s", "dot", "GB/s");
    printf("%-40s %-7s %-6s %8s %6s %8s %6s %8s %6s\n", "", "", "", "ns/row", "", "ns/row", "", "ns/row", "");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const bench_case *bc = &cases[c];
        if (argc > 2 && !strstr(bc->name, argv[2])) continue;
        ds_type dt = ds_type_info_get(bc->t)->dot_type;
        size_t rb = ds_row_bytes(bc->t, bc->n), mb = rb * (size_t)bc->rows;
        int copies = (int)((64u << 20) / mb) + 1;
        uint8_t *w = ds_alloc(mb * (size_t)copies);
        fill(bc->t, w, mb * (size_t)copies);
        float *x = malloc((size_t)bc->n * 4), *out = malloc((size_t)bc->rows * 4);
        for (int i = 0; i < bc->n; i++) x[i] = rndf();
        void *a = ds_alloc(ds_row_bytes(dt, bc->n) + 64);
        ds_quantize_row(dt, x, a, bc->n);
        for (int l = 0; l < 3; l++) {
            ds_quant_force_level(levels[l]);
            if (strcmp(ds_quant_level(), levels[l])) continue;
            for (int stream = 0; stream < 2; stream++) {
                if (stream && copies <= 2) continue;   /* already bigger than the caches */
                int ncop = stream ? copies : 1;
                double best[3] = { 1e30, 1e30, 1e30 };
                for (int mode = 0; mode < 3; mode++) {
                    if (l == 0 && mode > 0) { best[mode] = 0; continue; }
                    for (int rep = 0; rep < 5; rep++) {
                        double t0 = cpu_s(), t1;
                        long iters = 0;
                        do {
                            const uint8_t *m = w + mb * (size_t)(iters % ncop);
                            if (mode == 0) ds_vec_dot_rows(bc->t, bc->n, m, rb, bc->rows, a, out);
                            else if (mode == 1)
                                for (int r = 0; r < bc->rows; r += 16)
                                    ds_vec_dot_rows(bc->t, bc->n, m + rb * r, rb, bc->rows - r < 16 ? bc->rows - r : 16,
                                                    a, out + r);
                            else for (int r = 0; r < bc->rows; r++) out[r] = ds_vec_dot(bc->t, bc->n, m + rb * r, a);
                            iters++;
                            t1 = cpu_s();
                        } while (t1 - t0 < secs / 5 || iters < 2);
                        double per = (t1 - t0) / (double)iters;
                        if (per < best[mode]) best[mode] = per;
                    }
                }
                printf("%-40s %-7s %-6s", bc->name, levels[l], stream ? "stream" : "L2");
                for (int mode = 0; mode < 3; mode++)
                    printf(" %8.1f %6.2f", best[mode] * 1e9 / bc->rows,
                           best[mode] > 0 ? (double)mb / best[mode] * 1e-9 : 0.0);
                printf("\n");
                fflush(stdout);
            }
        }
        ds_quant_force_level(NULL);
        /* cost of quantising the activation once per matvec */
        double t0 = cpu_s();
        int it = 0;
        do { for (int k = 0; k < 100; k++) ds_quantize_row(dt, x, a, bc->n); it += 100; } while (cpu_s() - t0 < 0.01);
        printf("%-40s quantize_row %s: %.0f ns\n", "", ds_type_name(dt), (cpu_s() - t0) / it * 1e9);
        ds_free(w); ds_free(a); free(x); free(out);
    }
    return 0;
}
