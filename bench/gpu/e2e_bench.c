/* e2e_bench.c — end-to-end GPU decode speed at real model shapes with random fp16 weights:
 * our dense decode vs our Double Sparsity decode on the same weights and the same cache,
 * alternating in rounds, each step one CUDA graph replay timed with events.
 *
 *   build-cuda/e2e_bench [--preset llama2-7b|llama3-8b] [--batches 1,4,8] [--depths 4096,16384,32768]
 *                        [--steps 20] [--rounds 3] [--r 8 --bits 16] [--out FILE.md]
 *
 * The KV cache (and labels) of every sequence is filled with random values up to the depth
 * (speed does not depend on values); each measured step appends one token. Floors: the bytes a
 * step must read (all weights once + K/V of every layer for dense; weights + labels + selected
 * rows for DS) over the device-to-device copy bandwidth measured in the same run. Shapes that
 * do not fit the card are reported as such. */
#include "backend.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *name;
    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab;
    float theta;
} preset;

static const preset PRESETS[] = {
    {"llama2-7b", 32, 4096, 32, 32, 128, 11008, 32000, 10000.0f},
    {"llama3-8b", 32, 4096, 32, 8, 128, 14336, 128256, 500000.0f},
};

static double copy_bw_gbs(void) {
    size_t n = (size_t)1 << 30;
    void *a, *b;
    if (cudaMalloc(&a, n) || cudaMalloc(&b, n)) return 0;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float best = 1e30f;
    for (int i = 0; i < 8; i++) {
        cudaEventRecord(e0, 0);
        cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (i >= 2 && ms < best) best = ms;
    }
    cudaFree(a);
    cudaFree(b);
    return 2.0 * n / (best / 1e3) / 1e9;
}

static int cmpd(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static int parse_list(const char *s, int *out, int cap) {
    int n = 0;
    while (*s && n < cap) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

int main(int argc, char **argv) {
    const preset *P = &PRESETS[0];
    int batches[8] = {1, 4, 8}, nb = 3, depths[8] = {4096, 16384, 32768}, nd = 3;
    int steps = 20, rounds = 3, r = 8, bits = 16;
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--preset") && v) {
            P = NULL;
            for (size_t j = 0; j < sizeof PRESETS / sizeof PRESETS[0]; j++) if (!strcmp(v, PRESETS[j].name)) P = &PRESETS[j];
            if (!P) { fprintf(stderr, "e2e_bench: unknown preset '%s' (llama2-7b, llama3-8b)\n", v); return 2; }
            i++;
        } else if (!strcmp(a, "--batches") && v) { nb = parse_list(v, batches, 8); i++; }
        else if (!strcmp(a, "--depths") && v) { nd = parse_list(v, depths, 8); i++; }
        else if (!strcmp(a, "--steps") && v) { steps = atoi(v); i++; }
        else if (!strcmp(a, "--rounds") && v) { rounds = atoi(v); i++; }
        else if (!strcmp(a, "--r") && v) { r = atoi(v); i++; }
        else if (!strcmp(a, "--bits") && v) { bits = atoi(v); i++; }
        else if (!strcmp(a, "--out") && v) { out = v; i++; }
        else { fprintf(stderr, "usage: see the header of bench/gpu/e2e_bench.c\n"); return 2; }
    }
    if (steps < 1 || rounds < 1 || nb < 1 || nd < 1) { fprintf(stderr, "e2e_bench: bad arguments\n"); return 2; }
    if (ds_backend_gpu_count() < 1) { fprintf(stderr, "e2e_bench: no CUDA device\n"); return 2; }
    char dev[256];
    ds_backend_gpu_describe(0, dev, sizeof dev);
    const double bw = copy_bw_gbs();
    FILE *fo = out ? fopen(out, "w") : NULL;
    char line[1024];
#define EMIT(...) do { snprintf(line, sizeof line, __VA_ARGS__); fputs(line, stdout); if (fo) fputs(line, fo); fflush(stdout); } while (0)
    EMIT("# End-to-end decode, %s shape, random fp16 weights\n\n", P->name);
    EMIT("- device: %s; copy bandwidth %.0f GB/s (read+write); DS: k = n/16, r = %d at %d bits, shared GQA, no dense layers\n",
         dev, bw, r, bits);
    EMIT("- each cell: median step time over %d rounds x %d steps, dense and DS alternating by round; tok/s = B / step\n\n",
         rounds, steps);
    EMIT("| B | n | dense ms | dense tok/s | dense %%floor | DS ms | DS tok/s | DS %%floor | DS speedup |\n");
    EMIT("|---|---|---|---|---|---|---|---|---|\n");
    const double L = P->n_layer, E = P->n_embd, H = P->n_head, KVH = P->n_head_kv, hd = P->head_dim, F = P->n_ff, V = P->n_vocab;
    const double w_bytes = 2 * (L * (((H + 2 * KVH) * hd) * E + E * H * hd + 3 * F * E) + V * E);   /* + output matrix */
    const double rb = bits == 16 ? 2.0 * r : ceil(r * bits / 8.0) + 4;
    float inv_freq[256];
    for (int i = 0; i < P->head_dim / 2; i++) inv_freq[i] = powf(P->theta, -2.0f * i / P->head_dim);
    int16_t *chan = malloc(sizeof(int16_t) * P->n_layer * P->n_head_kv * r);
    for (int i = 0; i < P->n_layer * P->n_head_kv; i++)
        for (int j = 0; j < r; j++) chan[i * r + j] = (int16_t)((j * 37 + i * 11) % P->head_dim);   /* distinct for r <= 128 */
    for (int bi = 0; bi < nb; bi++)
        for (int di = 0; di < nd; di++) {
            const int B = batches[bi], n = depths[di];
            ds_gpu_forward_cfg c;
            memset(&c, 0, sizeof c);
            c.n_layer = P->n_layer; c.n_embd = P->n_embd; c.n_head = P->n_head; c.n_head_kv = P->n_head_kv;
            c.head_dim = P->head_dim; c.n_ff = P->n_ff; c.n_vocab = P->n_vocab; c.rms_eps = 1e-5f;
            c.inv_freq = inv_freq; c.max_batch = B; c.n_ctx = n + 2 * rounds * (steps + 1) + 8; c.max_prefill = 16;
            c.sparse = 1; c.r = r; c.bits = bits; c.tokens_frac = 1.0f / 16; c.chan = chan;
            ds_gpu_forward *f = NULL;
            int e = ds_gpu_forward_new(&c, &f);
            if (!e) e = ds_gpu_forward_random_weights(f, 1);
            if (!e) e = ds_gpu_forward_fill_kv_random(f, B, n, 2);
            if (e) {
                EMIT("| %d | %d | does not fit (%s) | | | | | | |\n", B, n, ds_gpu_error_string(e));
                ds_gpu_forward_free(f);
                cudaGetLastError();
                continue;
            }
            int32_t tok[64];
            for (int b = 0; b < B; b++) tok[b] = (b * 7919 + 13) % P->n_vocab;
            double *td = malloc(sizeof(double) * rounds * steps), *ts = malloc(sizeof(double) * rounds * steps);
            int nt = 0, fail = 0;
            for (int mode = 0; mode < 2 && !fail; mode++) {   /* warm up both graphs */
                ds_gpu_forward_set_sparse(f, mode);
                for (int i = 0; i < 2 && !fail; i++) fail = ds_gpu_forward_decode(f, B, tok, NULL);
            }
            for (int rd = 0; rd < rounds && !fail; rd++) {
                for (int mode = 0; mode < 2 && !fail; mode++) {
                    ds_gpu_forward_set_sparse(f, mode);
                    if ((fail = ds_gpu_forward_decode(f, B, tok, NULL))) break;   /* graph (re)build */
                    for (int s = 0; s < steps && !fail; s++) {
                        fail = ds_gpu_forward_decode(f, B, tok, NULL);
                        (mode ? ts : td)[rd * steps + s] = ds_gpu_forward_last_step_seconds(f);
                    }
                }
                nt += steps;
            }
            if (fail) {
                EMIT("| %d | %d | failed: %s | | | | | | |\n", B, n, ds_gpu_error_string(fail));
            } else {
                qsort(td, nt, sizeof(double), cmpd);
                qsort(ts, nt, sizeof(double), cmpd);
                const double md = td[nt / 2], ms = ts[nt / 2];
                const double navg = n + rounds * steps + 2;           /* cached tokens during the runs */
                const double k = ceil(navg / 16);
                const double kv_d = 2 * L * B * KVH * navg * hd * 2;
                const double kv_s = L * B * KVH * (navg * rb + 2 * k * hd * 2);
                const double fd = (w_bytes + kv_d) / (bw * 1e9), fs = (w_bytes + kv_s) / (bw * 1e9);
                EMIT("| %d | %d | %.2f | %.1f | %.0f%% | %.2f | %.1f | %.0f%% | %.2fx |\n", B, n, md * 1e3, B / md,
                     100 * fd / md, ms * 1e3, B / ms, 100 * fs / ms, md / ms);
            }
            free(td);
            free(ts);
            ds_gpu_forward_free(f);
        }
    EMIT("\nfloors: weights %.2f GB per step; dense adds 2*L*B*KVH*n*d*2 bytes of K/V, DS the labels and 2*L*B*KVH*k*d*2 "
         "bytes of selected rows\n", w_bytes / 1e9);
    if (fo) fclose(fo);
    free(chan);
    return 0;
}
