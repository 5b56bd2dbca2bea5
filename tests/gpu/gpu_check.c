/* gpu_check.c — every GPU attention kernel against the CPU path, on random inputs.
 *
 *   make CUDA=1 gpu-check      (needs an NVIDIA GPU; builds build-cuda/gpu_check and runs it)
 *
 * For each shape: fresh random K, V, q (fp16) and random label channels; outputs poisoned
 * (NaN) before every run. Checks, in order:
 *   - label build: GPU label rows == ds_label_encode rows, bit for bit;
 *   - selection: per (sequence, KV head) exactly k distinct positions, the current token and
 *     the recent window's W positions before it among them, and for the rest a valid top-k of
 *     the CPU's scores (ds_label_score) over [0, n - 1 - W) up to the fp16 rounding of the GPU's
 *     16-bit keys: nothing selected scores below the (k-1-W)-th largest minus that tolerance,
 *     nothing left out scores above it plus the tolerance;
 *   - DS output == CPU attention (ds_attn_partial + ds_attn_merge) over the GPU's selected set;
 *   - dense output == CPU attention over all rows;
 *   - the same DS call captured in a CUDA graph, replayed after the lengths change on the
 *     device, equals a direct call;
 *   - for each GGUF named on the command line (e.g. made by `dsinfer gen-model`): logits of a
 *     GPU session against a CPU session in precise mode (fp32 activations), after a prefill
 *     and over decode steps: dense with the weights kept quantised on the GPU (where it has
 *     kernels for their types) and with fp16 weights, and with sparse attention (random label
 *     channels, k = 16, so the CPU and GPU use the same channels without a calibration file).
 * `gpu_check --models-only M.gguf...` runs the model checks alone.
 * Prints one line per check with the relative error; exits non-zero on any failure. */
#include "attention.h"
#include "backend.h"
#include "ds_kernels.h"
#include "dsinfer.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_fail = 0, g_checks = 0;

#define CK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #call); exit(2); } } while (0)
#define CKD(call) do { int e_ = (call); if (e_) { \
    fprintf(stderr, "dsinfer GPU error %s at %s:%d: %s\n", ds_gpu_error_string(e_), __FILE__, __LINE__, #call); exit(2); } } while (0)

static void result(const char *what, int ok, const char *fmt, ...) {
    va_list ap;
    g_checks++;
    if (!ok) g_fail++;
    printf("%-4s %-58s ", ok ? "ok" : "FAIL", what);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static uint64_t g_rng = 0x243F6A8885A308D3ull;
static double urand(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float nrand(void) { return (float)(sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand())); }

typedef struct {
    const char *name;
    int B, H, H_kv, d, r, bits, tokens;
    float frac;
    int lens[4];
    int ties;   /* keys of only two values per channel: most label scores tie */
    int norm;   /* label normalisation: random per-channel mean and scale */
    int drift;  /* key amplitude growing with position (1 to 8x): the top-k crowds the end of
                 * the cache, so most of a unit's selection comes from one block of its cluster */
    int recent; /* ds_gpu_attn_args.recent: 0 none, > 0 that many, DS_RECENT_AUTO the default */
    int gmax;   /* ds_gpu_attn_args.group_max: the reference is ds_group_max over per-head scores */
} shape;

/* relative L2 error of a (fp16 on the GPU) against b (float CPU) */
static double rel_err(const uint16_t *a, const float *b, size_t n, int *nan_seen) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        float x = ds_fp16_to_fp32(a[i]);
        if (x != x) { *nan_seen = 1; continue; }
        num += (double)(x - b[i]) * (x - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static int cmp_desc(const void *x, const void *y) {
    float a = *(const float *)x, b = *(const float *)y;
    return a < b ? 1 : a > b ? -1 : 0;
}

static int k_of(const shape *s, int n) {
    int k = s->tokens > 0 ? s->tokens : (int)ceilf(s->frac * (float)n - 1e-6f);
    return k < 1 ? 1 : k;
}

/* The recent window of a sparse unit: the library's rule (src/sparse.c recent_window) */
static int window_of(const shape *s, int n, int k) {
    int w = s->recent < 0 ? (k / 8 < DS_RECENT_DEFAULT ? k / 8 : DS_RECENT_DEFAULT) : (s->recent < k - 1 ? s->recent : k - 1);
    return w < n - 1 ? w : n - 1;
}

static void run_shape(const shape *s) {
    const int B = s->B, H = s->H, KVH = s->H_kv, d = s->d, G = H / KVH, U = B * KVH;
    int max_len = 0;
    for (int b = 0; b < B; b++) if (s->lens[b] > max_len) max_len = s->lens[b];
    const int n_max = max_len + 7;
    const size_t kv_elems = (size_t)U * n_max * d;
    const int rb = (int)ds_label_row_bytes(s->r, s->bits);
    const float scale = 1.0f / sqrtf((float)d);
    char tag[96];

    uint16_t *hk = malloc(kv_elems * 2), *hv = malloc(kv_elems * 2), *hq = malloc((size_t)B * H * d * 2);
    int16_t *hch = malloc((size_t)KVH * s->r * 2);
    float *hmu = malloc(sizeof(float) * (size_t)KVH * s->r), *hsc = malloc(sizeof(float) * (size_t)KVH * s->r);
    for (int i = 0; i < KVH * s->r; i++) { hmu[i] = 0.5f * nrand(); hsc[i] = 0.25f + 3.0f * (float)urand(); }
    /* keys with a few outlier channels per head, like real post-RoPE keys, so the labels matter */
    for (size_t i = 0; i < kv_elems; i++) {
        int c = (int)(i % d);
        float amp = (c % 16 == 3) ? 4.0f : 1.0f;
        if (s->drift) {
            const double t = (double)((i / (size_t)d) % (size_t)n_max) / max_len;
            amp *= (float)(1.0 + 7.0 * t * t);
        }
        float x = nrand();
        hk[i] = ds_fp32_to_fp16(amp * (s->ties ? (x < 0 ? -1.0f : 1.0f) : x));
        hv[i] = ds_fp32_to_fp16(nrand());
    }
    for (size_t i = 0; i < (size_t)B * H * d; i++) hq[i] = ds_fp32_to_fp16(((i % d) % 16 == 3 ? 3.0f : 1.0f) * nrand());
    for (int h = 0; h < KVH; h++) {   /* a random subset of channels per KV head */
        int perm[256];
        for (int i = 0; i < d; i++) perm[i] = i;
        for (int i = d - 1; i > 0; i--) { int j = (int)(urand() * (i + 1)); int t = perm[i]; perm[i] = perm[j]; perm[j] = t; }
        for (int j = 0; j < s->r; j++) hch[h * s->r + j] = (int16_t)perm[j];
    }

    uint16_t *dk, *dv, *dq, *dout, *dlo, *dst;
    uint8_t *dlab;
    int16_t *dch;
    int *dlen;
    float *dmu = NULL, *dsc = NULL;
    CK(cudaMalloc((void **)&dk, kv_elems * 2));
    CK(cudaMalloc((void **)&dv, kv_elems * 2));
    CK(cudaMalloc((void **)&dq, (size_t)B * H * d * 2));
    CK(cudaMalloc((void **)&dout, (size_t)B * H * d * 2));
    CK(cudaMalloc((void **)&dlab, (size_t)U * n_max * rb));
    CK(cudaMalloc((void **)&dlo, (size_t)U * n_max * 2));
    CK(cudaMalloc((void **)&dst, (size_t)U * n_max * 2));
    CK(cudaMalloc((void **)&dch, (size_t)KVH * s->r * 2));
    CK(cudaMalloc((void **)&dlen, sizeof(int) * B));
    CK(cudaMemcpy(dk, hk, kv_elems * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dv, hv, kv_elems * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dq, hq, (size_t)B * H * d * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dch, hch, (size_t)KVH * s->r * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dlen, s->lens, sizeof(int) * B, cudaMemcpyHostToDevice));
    CK(cudaMemset(dlab, 0xA5, (size_t)U * n_max * rb));
    if (s->norm) {
        CK(cudaMalloc((void **)&dmu, sizeof(float) * (size_t)KVH * s->r));
        CK(cudaMalloc((void **)&dsc, sizeof(float) * (size_t)KVH * s->r));
        CK(cudaMemcpy(dmu, hmu, sizeof(float) * (size_t)KVH * s->r, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dsc, hsc, sizeof(float) * (size_t)KVH * s->r, cudaMemcpyHostToDevice));
    }

    ds_gpu_attn_args a;
    memset(&a, 0, sizeof a);
    a.B = B; a.H = H; a.H_kv = KVH; a.d = d; a.n_max = n_max; a.max_len = max_len;
    a.seq_len = dlen; a.q = dq; a.k = dk; a.v = dv; a.out = dout; a.scale = scale;
    a.r = s->r; a.bits = s->bits; a.chan = dch; a.labels = dlab; a.lab_lo = dlo; a.lab_step = dst;
    a.tokens = s->tokens; a.tokens_frac = s->frac; a.recent = s->recent;
    a.lab_mean = dmu; a.lab_scale = dsc;
    a.group_max = s->gmax;
    void *ws;
    size_t wsb = ds_gpu_attn_workspace_bytes(&a);
    if (!wsb) { result(s->name, 0, "workspace: arguments rejected"); return; }
    CK(cudaMalloc(&ws, wsb));
    CKD(ds_gpu_attn_workspace_init(ws, &a, NULL));

    /* 1. labels */
    CKD(ds_gpu_label_build(&a, 0, max_len, NULL));
    CK(cudaDeviceSynchronize());
    uint8_t *glab = malloc((size_t)U * n_max * rb);
    uint16_t *glo = malloc((size_t)U * n_max * 2), *gst = malloc((size_t)U * n_max * 2);
    CK(cudaMemcpy(glab, dlab, (size_t)U * n_max * rb, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(glo, dlo, (size_t)U * n_max * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gst, dst, (size_t)U * n_max * 2, cudaMemcpyDeviceToHost));
    long bad = 0;
    for (int u = 0; u < U; u++)
        for (int p = 0; p < max_len; p++) {
            float x[256];
            uint8_t codes[512];
            uint16_t lo = 0, st = 0;
            const uint16_t *kr = hk + ((size_t)u * n_max + p) * d;
            for (int j = 0; j < s->r; j++) {   /* as the CPU's labels_append */
                const int at = (u % KVH) * s->r + j;
                x[j] = ds_fp16_to_fp32(kr[hch[at]]);
                if (s->norm) x[j] = (x[j] - hmu[at]) / hsc[at];
            }
            ds_label_encode(x, s->r, s->bits, codes, &lo, &st);
            size_t row = (size_t)u * n_max + p;
            if (memcmp(codes, glab + row * rb, rb) || (s->bits < 16 && (lo != glo[row] || st != gst[row]))) bad++;
        }
    snprintf(tag, sizeof tag, "%s: label build == ds_label_encode", s->name);
    result(tag, bad == 0, "%ld of %ld rows differ", bad, (long)U * max_len);

    /* 2-3. DS selection and output */
    CK(cudaMemset(dout, 0xFF, (size_t)B * H * d * 2));
    CKD(ds_gpu_attn_ds(&a, ws, NULL));
    CK(cudaDeviceSynchronize());
    int k_cap = 0;
    const int32_t *dsel = ds_gpu_attn_selected(ws, &a, &k_cap);
    int32_t *gsel = malloc(sizeof(int32_t) * (size_t)U * k_cap);
    uint16_t *gout = malloc((size_t)B * H * d * 2);
    CK(cudaMemcpy(gsel, dsel, sizeof(int32_t) * (size_t)U * k_cap, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gout, dout, (size_t)B * H * d * 2, cudaMemcpyDeviceToHost));
    float *ref = calloc((size_t)B * H * d, sizeof(float));
    float *scores = malloc(sizeof(float) * n_max), *sorted = malloc(sizeof(float) * n_max);
    float *heads = s->gmax ? malloc(sizeof(float) * (size_t)G * n_max) : NULL;   /* [G][n_max] per-head scores */
    long sum_differs = 0;   /* group_max: selected positions outside the summed score's top-k */
    float *acc = malloc(sizeof(float) * 16 * d), qf[8 * 256];
    uint8_t *mark = malloc(n_max);
    long sel_bad = 0, order_bad = 0;
    int sparse_units = 0;
    for (int u = 0; u < U; u++) {
        const int b = u / KVH, kvh = u % KVH, n = s->lens[b], k = k_of(s, n);
        for (int g = 0; g < G; g++)
            for (int c = 0; c < d; c++) qf[g * d + c] = ds_fp16_to_fp32(hq[((size_t)b * H + kvh * G + g) * d + c]) * scale;
        const uint16_t *K = hk + (size_t)u * n_max * d, *V = hv + (size_t)u * n_max * d;
        ds_attn_stats st;
        if (n <= k) {
            ds_attn_partial(qf, G, d, K, V, NULL, 0, n, acc, &st);
        } else {
            sparse_units++;
            const int W = window_of(s, n, k), nc = n - 1 - W, kt = k - 1 - W;   /* scored [0, nc); top kt */
            float qs[256], ql[256];
            for (int c = 0; c < d; c++) {   /* the GPU sums the group's fp16 queries, then scales */
                float t = 0;
                for (int g = 0; g < G; g++) t += ds_fp16_to_fp32(hq[((size_t)b * H + kvh * G + g) * d + c]);
                qs[c] = t;
            }
            for (int j = 0; j < s->r; j++)
                ql[j] = qs[hch[kvh * s->r + j]] * scale * (s->norm ? hsc[kvh * s->r + j] : 1.0f);
            size_t row0 = (size_t)u * n_max;
            ds_label_score(ql, s->r, s->bits, glab + row0 * rb, glo + row0, gst + row0, nc, scores, NULL);
            float sum_kth = INFINITY, sum_tol = 0;
            if (s->gmax) {   /* the summed score's threshold, then the reference: each head on its own */
                memcpy(sorted, scores, sizeof(float) * nc);
                qsort(sorted, nc, sizeof(float), cmp_desc);
                sum_kth = kt > 0 ? sorted[kt - 1] : INFINITY;
                sum_tol = fabsf(sum_kth) * (1.0f / 1024) + 1e-6f;
                for (int g = 0; g < G; g++) {
                    for (int j = 0; j < s->r; j++)
                        ql[j] = ds_fp16_to_fp32(hq[((size_t)b * H + kvh * G + g) * d + hch[kvh * s->r + j]]) * scale *
                                (s->norm ? hsc[kvh * s->r + j] : 1.0f);
                    /* in plain floats, as the GPU's group-max scan computes them */
                    ds_label_score_ref(ql, s->r, s->bits, glab + row0 * rb, glo + row0, gst + row0, nc,
                                       heads + (size_t)g * n_max);
                }
                ds_group_max(heads, G, (size_t)n_max, nc, heads);      /* into row 0 */
                for (int p = 0; p < nc; p++) { const float t = scores[p]; scores[p] = heads[p]; heads[p] = t; }
            }
            const float *sum_sc = heads;   /* gmax: the summed scores, moved to row 0 of heads */
            memcpy(sorted, scores, sizeof(float) * nc);
            qsort(sorted, nc, sizeof(float), cmp_desc);
            float kth = kt > 0 ? sorted[kt - 1] : INFINITY;
            float tol = fabsf(kth) * (1.0f / 1024) + 1e-6f;
            memset(mark, 0, n_max);
            const int32_t *sl = gsel + (size_t)u * k_cap;
            int kept = 0;   /* of the window and the current token, [nc, n) */
            for (int i = 0; i < k; i++) {
                int p = sl[i];
                if (p < 0 || p >= n || mark[p]) { sel_bad++; continue; }
                mark[p] = 1;
                if (p >= nc) { kept++; continue; }
                if (scores[p] < kth - tol) order_bad++;
                if (s->gmax && sum_sc[p] < sum_kth - sum_tol) sum_differs++;
            }
            if (kept != W + 1) sel_bad++;
            for (int p = 0; p < nc; p++) if (!mark[p] && scores[p] > kth + tol) order_bad++;
            ds_attn_partial(qf, G, d, K, V, sl, 0, k, acc, &st);
        }
        ds_attn_merge(1, G, d, acc, &st, ref + ((size_t)b * H + kvh * G) * d);
    }
    snprintf(tag, sizeof tag, "%s: selection valid (%d sparse units)", s->name, sparse_units);
    if (s->gmax && G > 1) {
        /* the group max must select what the summed score does not (else this check could not
         * tell the two rules apart) */
        result(tag, sel_bad == 0 && order_bad == 0 && sum_differs > 0,
               "%ld malformed, %ld out of top-k order (group max), %ld outside the summed score's top-k", sel_bad,
               order_bad, sum_differs);
    } else
        result(tag, sel_bad == 0 && order_bad == 0, "%ld malformed, %ld out of top-k order", sel_bad, order_bad);
    int nan_seen = 0;
    double e = rel_err(gout, ref, (size_t)B * H * d, &nan_seen);
    snprintf(tag, sizeof tag, "%s: DS output == CPU over the selection", s->name);
    result(tag, !nan_seen && e < 2e-3, "rel err %.2e%s", e, nan_seen ? " (unwritten/NaN)" : "");

    /* 4. dense */
    CK(cudaMemset(dout, 0xFF, (size_t)B * H * d * 2));
    CKD(ds_gpu_attn_dense(&a, ws, NULL));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(gout, dout, (size_t)B * H * d * 2, cudaMemcpyDeviceToHost));
    for (int u = 0; u < U; u++) {
        const int b = u / KVH, kvh = u % KVH, n = s->lens[b];
        for (int g = 0; g < G; g++)
            for (int c = 0; c < d; c++) qf[g * d + c] = ds_fp16_to_fp32(hq[((size_t)b * H + kvh * G + g) * d + c]) * scale;
        ds_attn_stats st;
        ds_attn_partial(qf, G, d, hk + (size_t)u * n_max * d, hv + (size_t)u * n_max * d, NULL, 0, n, acc, &st);
        ds_attn_merge(1, G, d, acc, &st, ref + ((size_t)b * H + kvh * G) * d);
    }
    nan_seen = 0;
    e = rel_err(gout, ref, (size_t)B * H * d, &nan_seen);
    snprintf(tag, sizeof tag, "%s: dense output == CPU", s->name);
    result(tag, !nan_seen && e < 2e-3, "rel err %.2e%s", e, nan_seen ? " (unwritten/NaN)" : "");

    /* 5. graph: capture with the lengths shortened by 3, replay, compare with a direct call */
    {
        int lens2[4];
        for (int b = 0; b < B; b++) lens2[b] = s->lens[b] > 4 ? s->lens[b] - 3 : s->lens[b];
        cudaStream_t stream;
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CK(cudaStreamCreate(&stream));
        CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
        CKD(ds_gpu_attn_ds(&a, ws, stream));
        CK(cudaStreamEndCapture(stream, &graph));
        CK(cudaGraphInstantiate(&exec, graph, 0));
        CK(cudaMemcpy(dlen, lens2, sizeof(int) * B, cudaMemcpyHostToDevice));
        CK(cudaMemset(dout, 0xFF, (size_t)B * H * d * 2));
        CK(cudaGraphLaunch(exec, stream));
        CK(cudaStreamSynchronize(stream));
        uint16_t *gout2 = malloc((size_t)B * H * d * 2);
        CK(cudaMemcpy(gout2, dout, (size_t)B * H * d * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemset(dout, 0xFF, (size_t)B * H * d * 2));
        CKD(ds_gpu_attn_ds(&a, ws, stream));
        CK(cudaStreamSynchronize(stream));
        CK(cudaMemcpy(gout, dout, (size_t)B * H * d * 2, cudaMemcpyDeviceToHost));
        float *f = malloc(sizeof(float) * (size_t)B * H * d);
        for (size_t i = 0; i < (size_t)B * H * d; i++) f[i] = ds_fp16_to_fp32(gout[i]);
        nan_seen = 0;
        e = rel_err(gout2, f, (size_t)B * H * d, &nan_seen);
        snprintf(tag, sizeof tag, "%s: graph replay (lengths -3) == direct call", s->name);
        result(tag, !nan_seen && e < 1e-3, "rel err %.2e", e);
        CK(cudaMemcpy(dlen, s->lens, sizeof(int) * B, cudaMemcpyHostToDevice));
        CK(cudaGraphExecDestroy(exec));
        CK(cudaGraphDestroy(graph));
        CK(cudaStreamDestroy(stream));
        free(gout2); free(f);
    }

    cudaFree(dk); cudaFree(dv); cudaFree(dq); cudaFree(dout); cudaFree(dlab); cudaFree(dlo); cudaFree(dst);
    cudaFree(dch); cudaFree(dlen); cudaFree(ws); cudaFree(dmu); cudaFree(dsc);
    free(hk); free(hv); free(hq); free(hch); free(hmu); free(hsc); free(glab); free(glo); free(gst); free(gsel); free(gout);
    free(ref); free(scores); free(sorted); free(heads); free(acc); free(mark);
}

/* GPU vs CPU logits on one model: prefill P tokens, then D decode steps. */
static void check_model(const char *path) {
    ds_model *m;
    if (ds_model_load(path, &m)) { result(path, 0, "load: %s", ds_last_error()); return; }
    const ds_model_info *c = ds_model_get_info(m);
    const int P = 40, D = 6, V = c->n_vocab;
    int32_t toks[64];
    for (int i = 0; i < P + D; i++) toks[i] = (int32_t)((i * 7919u + 101u) % (unsigned)V);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    /* a calibration (with key moments) for the label-normalised DS run, from a short text */
    char text[4096];
    size_t tl = 0;
    for (int i = 0; tl + 64 < sizeof text; i++)
        tl += (size_t)snprintf(text + tl, sizeof text - tl, "Line %d: the %s of the river was %d miles. ", i,
                               i % 3 ? "length" : "width", (i * 37) % 101);
    const int calibrated = ds_model_calibrate(m, text, tl, "gpu_check", NULL, 64, 256, 8, 0, NULL, NULL, NULL) == DS_OK;
    if (!calibrated) result(base, 0, "calibration: %s", ds_last_error());
    /* dense twice: with the matrices kept quantised on the GPU where it has kernels for their
     * types (DSINFER_GPU_QUANT=1), and with every matrix dequantised to fp16 on upload. The sparse modes
     * run on fp16 weights, so that they test the attention path alone. */
    static const char *mode_name[] = {"dense", "dense fp16-weights", "sparse k=16 recent 5", "ds+label-norm sum k=16",
                                      "ds group-max k=16"};
    for (int mode = 0; mode < 3 + 2 * calibrated; mode++) {
        setenv("DSINFER_GPU_QUANT", mode == 0 ? "1" : "0", 1);
        ds_session_opts o = ds_session_default_opts();
        o.n_ctx = 256;
        o.n_threads = 8;
        if (mode == 2) {   /* an explicit recent window here; mode 3 has the default one (2 at k = 16) */
            o.sparse.method = DS_ATTN_RANDOM; o.sparse.tokens = 16; o.sparse.min_context = 0; o.sparse.seed = 3; o.sparse.recent = 5;
        }
        if (mode == 3) {
            o.sparse.method = DS_ATTN_DS; o.sparse.tokens = 16; o.sparse.min_context = 0; o.sparse.label_norm = 1;
            o.sparse.label_bits = 4;
            o.sparse.group_max = 0;   /* the summed group score (mode 4: the largest head, DS's default) */
        }
        if (mode == 4) {   /* the group score by the largest head (a no-op where a group has one head) */
            o.sparse.method = DS_ATTN_DS; o.sparse.tokens = 16; o.sparse.min_context = 0; o.sparse.group_max = 1;
        }
        ds_session *cpu = NULL, *gpu = NULL, *cpu_q = NULL;
        /* The quantised GEMV takes its activations in int8 blocks, as the CPU's default path does
         * (precise mode keeps them in fp32): it is held to the CPU default path's own distance
         * from precise mode, measured here on the same tokens. */
        if (mode == 0) {
            setenv("DSINFER_PRECISE", "0", 1);
            if (ds_session_new(m, &o, &cpu_q)) cpu_q = NULL;
        }
        setenv("DSINFER_PRECISE", "1", 1);
        ds_status st = ds_session_new(m, &o, &cpu);
        o.gpu = 1;
        if (!st) st = ds_session_new(m, &o, &gpu);
        char tag[160];
        const int sparse = mode >= 2;
        snprintf(tag, sizeof tag, "%s %s: GPU logits %s CPU (precise)", base, mode_name[mode], sparse ? "~" : "==");
        if (st) { result(tag, 0, "session: %s", ds_last_error()); ds_session_free(cpu); continue; }
        double worst = 0, worst_q = 0;
        int agree = 0, steps = 0, bad = 0;
        for (int step = 0; step <= D && !bad; step++) {
            const int32_t *t = step ? toks + P + step - 1 : toks;
            const int n = step ? 1 : P;
            if (ds_session_eval(cpu, t, n, NULL) || ds_session_eval(gpu, t, n, NULL) ||
                (cpu_q && ds_session_eval(cpu_q, t, n, NULL))) { bad = 1; break; }
            const float *a = ds_session_logits(gpu), *b = ds_session_logits(cpu);
            double num = 0, den = 0, num_q = 0;
            int ia = 0, ib = 0;
            for (int i = 0; i < V; i++) {
                if (a[i] != a[i]) { num = INFINITY; break; }
                num += (double)(a[i] - b[i]) * (a[i] - b[i]);
                den += (double)b[i] * b[i];
                if (a[i] > a[ia]) ia = i;
                if (b[i] > b[ib]) ib = i;
            }
            if (cpu_q) {
                const float *cq = ds_session_logits(cpu_q);
                for (int i = 0; i < V; i++) num_q += (double)(cq[i] - b[i]) * (cq[i] - b[i]);
            }
            double e = sqrt(num / (den > 0 ? den : 1)), eq = sqrt(num_q / (den > 0 ? den : 1));
            if (e > worst) worst = e;
            if (eq > worst_q) worst_q = eq;
            agree += ia == ib;
            steps++;
        }
        /* fp16 weights: within 2e-2; quantised: also within 1.5x the CPU default path's error */
        const double tol = mode == 0 && 1.5 * worst_q > 2e-2 ? 1.5 * worst_q : 2e-2;
        if (bad) result(tag, 0, "eval: %s", ds_last_error());
        else if (mode == 0)
            result(tag, worst < tol, "worst rel err %.2e over %d steps (CPU default path: %.2e), top-1 agree %d/%d", worst,
                   steps, worst_q, agree, steps);
        else if (!sparse) result(tag, worst < 2e-2, "worst rel err %.2e over %d steps, top-1 agree %d/%d", worst, steps, agree, steps);
        else {
            /* Sparse: the GPU ranks by fp16 keys and the CPU by fp32 scores, so a near-tie at the
             * k-th place can pick another token; on random weights attention is nearly uniform and
             * one swapped token moves the logits by several percent. The selection itself is
             * checked exactly above (valid top-k up to fp16 rounding); here only gross errors
             * fail (NaN, or logits unrelated to the CPU's). */
            result(tag, worst < 0.5, "worst rel err %.2e over %d steps, top-1 agree %d/%d (near-tie swaps expected)",
                   worst, steps, agree, steps);
        }
        ds_session_free(cpu);
        ds_session_free(gpu);
        ds_session_free(cpu_q);
    }
    ds_model_free(m);
}

int main(int argc, char **argv) {
    int n = ds_backend_gpu_count();
    if (n < 1) { fprintf(stderr, "gpu_check: no CUDA device\n"); return 2; }
    char desc[256];
    ds_backend_gpu_describe(0, desc, sizeof desc);
    printf("device: %s\n", desc);
    const shape shapes[] = {
        /* the paper's operator shape, small n; fp16 labels r=8 and 4-bit r=32 */
        {"MHA d128 r8@16", 2, 4, 4, 128, 8, 16, 0, 1.0f / 16, {5000, 1777}, 0, 0, 0, 0, 0},
        {"MHA d128 r32@4", 2, 4, 4, 128, 32, 4, 0, 1.0f / 16, {4097, 3000}, 0, 0, 0, 0, 0},
        {"GQA4 d128 r16@8", 3, 8, 2, 128, 16, 8, 0, 1.0f / 16, {6000, 900, 10}, 0, 0, 0, 0, 0},
        {"GQA4 d128 r64@2", 1, 8, 2, 128, 64, 2, 0, 1.0f / 16, {3333}, 0, 0, 0, 0, 0},
        /* SmolLM2's attention shape (9 heads / 3 KV, d 64), k as a count, and a dense-fallback row */
        {"GQA3 d64 r16@4 k=128", 3, 9, 3, 64, 16, 4, 128, 0, {2048, 129, 100}, 0, 0, 0, 0, 0},
        {"GQA3 d64 r4@16", 2, 9, 3, 64, 4, 16, 0, 1.0f / 16, {8192, 2500}, 0, 0, 0, 0, 0},
        /* Qwen2.5-1.5B: 12 heads / 2 KV, d 128 */
        {"GQA6 d128 r32@4", 2, 12, 2, 128, 32, 4, 0, 1.0f / 16, {16384, 7000}, 0, 0, 0, 0, 0},
        /* 8 and 2 query heads per KV head (the tensor-core attention's widest and narrowest group) */
        {"GQA8 d128 r16@16", 2, 16, 2, 128, 16, 16, 0, 1.0f / 16, {7000, 3001}, 0, 0, 0, 0, 0},
        {"GQA2 d64 r8@16", 2, 8, 4, 64, 8, 16, 0, 1.0f / 16, {5000, 1234}, 0, 0, 0, 0, 0},
        /* k = 1: only the current token */
        {"k=1", 1, 4, 4, 128, 8, 16, 1, 0, {600}, 0, 0, 0, 0, 0},
        /* long contexts (many scan blocks per unit, large candidate lists) */
        {"MHA d128 r8@16 64K", 1, 2, 2, 128, 8, 16, 0, 1.0f / 16, {65536}, 0, 0, 0, 0, 0},
        /* longer still: 12.5K positions per block of the selection cluster */
        {"MHA d128 r8@16 100K", 1, 2, 2, 128, 8, 16, 0, 1.0f / 16, {100000}, 0, 0, 0, 0, 0},
        {"GQA4 d128 r32@4 40K", 2, 8, 2, 128, 32, 4, 0, 1.0f / 32, {40000, 12345}, 0, 0, 0, 0, 0},
        /* mass ties at the threshold key (ranked in shared memory, or by position search) */
        {"ties r4@16", 2, 2, 2, 128, 4, 16, 0, 1.0f / 16, {20000, 3000}, 1, 0, 0, 0, 0},
        {"ties r32@2", 1, 4, 2, 128, 32, 2, 100, 0, {9000}, 1, 0, 0, 0, 0},
        /* label normalisation ((k - mean) / scale labels, q * scale scoring) */
        {"norm GQA4 d128 r32@4", 2, 8, 2, 128, 32, 4, 0, 1.0f / 16, {9000, 2222}, 0, 1, 0, 0, 0},
        {"norm GQA3 d64 r16@16", 1, 9, 3, 64, 16, 16, 0, 1.0f / 16, {5000}, 0, 1, 0, 0, 0},
        /* scores that grow along the cache (the top-k unevenly spread over the cluster's blocks) */
        {"drift r8@16 32K", 1, 4, 4, 128, 8, 16, 0, 1.0f / 16, {32768}, 0, 0, 1, 0, 0},
        {"drift GQA4 r32@4 24K", 2, 8, 2, 128, 32, 4, 0, 1.0f / 16, {24000, 20000}, 0, 0, 1, 0, 0},
        /* a recent window (--ds-recent): explicit, the default min(16, k/8), one that leaves the
         * top-k one position (n = k + 1), one that fills k with the current token; short caches
         * (one-kernel path) and long ones (k_select, the ready queue) */
        {"window 16 GQA3 d64 r16@4 k=128", 3, 9, 3, 64, 16, 4, 128, 0, {2048, 129, 100}, 0, 0, 0, 16, 0},
        {"window auto GQA6 d128 r32@4", 2, 12, 2, 128, 32, 4, 0, 1.0f / 16, {16384, 7000}, 0, 1, 0, DS_RECENT_AUTO, 0},
        {"window fills k=17", 1, 4, 4, 128, 8, 16, 17, 0, {600}, 0, 0, 0, 16, 0},
        {"window 5 ties r32@2", 1, 4, 2, 128, 32, 2, 100, 0, {9000}, 1, 0, 0, 5, 0},
        {"window auto MHA r8@16 64K", 1, 2, 2, 128, 8, 16, 0, 1.0f / 16, {65536}, 0, 0, 0, DS_RECENT_AUTO, 0},
        {"window 40 drift GQA4 r32@4 40K", 2, 8, 2, 128, 32, 4, 0, 1.0f / 32, {40000, 12345}, 0, 0, 1, 40, 0},
        /* the group score by the largest head (--ds-group-score max): every label width, SmolLM2's
         * and Qwen2.5's groups, 2 to 8 heads, ties, normalised labels, windows, long caches */
        {"gmax GQA3 d64 r16@4 k=128", 3, 9, 3, 64, 16, 4, 128, 0, {2048, 129, 100}, 0, 0, 0, 0, 1},
        {"gmax GQA3 d64 r16@16 8K", 2, 9, 3, 64, 16, 16, 0, 1.0f / 16, {8192, 2500}, 0, 0, 0, DS_RECENT_AUTO, 1},
        {"gmax GQA6 d128 r32@4 16K", 2, 12, 2, 128, 32, 4, 0, 1.0f / 16, {16384, 7000}, 0, 1, 0, DS_RECENT_AUTO, 1},
        {"gmax GQA4 d128 r16@8", 3, 8, 2, 128, 16, 8, 0, 1.0f / 16, {6000, 900, 10}, 0, 0, 0, 0, 1},
        {"gmax GQA4 d128 r64@2", 1, 8, 2, 128, 64, 2, 0, 1.0f / 16, {3333}, 0, 0, 0, 0, 1},
        {"gmax GQA8 d128 r16@16", 2, 16, 2, 128, 16, 16, 0, 1.0f / 16, {7000, 3001}, 0, 0, 0, 0, 1},
        {"gmax GQA2 d64 r8@16 ties", 2, 8, 4, 64, 8, 16, 0, 1.0f / 16, {5000, 1234}, 1, 0, 0, 0, 1},
        {"gmax GQA4 r32@4 64K drift", 1, 8, 2, 128, 32, 4, 0, 1.0f / 16, {65536}, 0, 0, 1, DS_RECENT_AUTO, 1},
        {"gmax MHA d128 r8@16", 1, 4, 4, 128, 8, 16, 0, 1.0f / 16, {5000}, 0, 0, 0, 0, 1},
    };
    /* --models-only: skip the kernel shapes (~80 s), e.g. to check one weight-kernel variant */
    int first = 1;
    const int models_only = argc > 1 && !strcmp(argv[1], "--models-only");
    if (models_only) first = 2;
    else
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) run_shape(&shapes[i]);
    for (int i = first; i < argc; i++) check_model(argv[i]);
    printf("%d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
