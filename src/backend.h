/* backend.h — the only seam between the C library and GPU code (plain C functions).
 *
 * A CPU-only build (the default) compiles backend_cpu.c, whose functions report that no GPU
 * backend exists; `make CUDA=1` compiles the .cu files in src/cuda/ instead (extern "C", same
 * declarations). The CUDA forward pass and Double Sparsity kernels land behind this header. */
#ifndef DS_BACKEND_H
#define DS_BACKEND_H

#include "common.h"

/* Number of usable CUDA devices; 0 in CPU-only builds or when no driver/device is present. */
int ds_backend_gpu_count(void);
/* One line describing device `i` (name, memory, compute capability) into buf. */
ds_status ds_backend_gpu_describe(int i, char *buf, size_t cap);
/* "cuda" or "cpu-only": what this binary was built with. */
const char *ds_backend_name(void);

/* ---- GPU decode attention (src/cuda/attn.cu): device pointers, a cudaStream_t as void* ----
 * One call runs one layer's decode attention for B sequences of different lengths. Everything
 * the kernels need that changes between steps is read on the device (seq_len), so a captured
 * CUDA graph replays correctly as the sequences grow; grids are sized from max_len. Functions
 * return 0 or a cudaError_t code (ds_gpu_error_string). Only built with make CUDA=1. */
typedef struct {
    int B, H, H_kv, d;          /* sequences, query heads, KV heads, head_dim (64 or 128) */
    int n_max;                  /* cache rows per (sequence, KV head): the row stride */
    int max_len;                /* upper bound of seq_len[] (sizes grids and workspace) */
    const int *seq_len;         /* [B] visible tokens per sequence, the current one included */
    const uint16_t *q;          /* [B][H][d] fp16, post-RoPE (not pre-scaled) */
    const uint16_t *k, *v;      /* [B][H_kv][n_max][d] fp16; the current token already appended */
    uint16_t *out;              /* [B][H][d] fp16 */
    float scale;                /* softmax scale (1/sqrt(d)) */
    /* Double Sparsity only (double-sparsity.md §1, §4, §5: GQA shared, current token kept) */
    int r, bits;                /* label channels; label bits 16, 8, 4 or 2 */
    const int16_t *chan;        /* [H_kv][r] this layer's label channels */
    uint8_t *labels;            /* [B][H_kv][n_max][row_bytes] label codes (ds_kernels.h format) */
    uint16_t *lab_lo, *lab_step;/* [B][H_kv][n_max] fp16 (bits < 16) */
    int tokens;                 /* k as a count (> 0), or 0 to use tokens_frac */
    float tokens_frac;          /* k = ceil(tokens_frac * n) */
    int min_context;            /* sequences shorter than this decode densely */
    int recent;                 /* recent window: the W tokens before the current one are always
                                 * selected and the top-k of the rest fills k: W = min(recent, k - 1),
                                 * or min(DS_RECENT_DEFAULT, k / 8) for DS_RECENT_AUTO (< 0); at most
                                 * n - 1 (double-sparsity.md; the CPU's recent_window) */
    int kv_batch_shared;        /* dense only: every "sequence" b reads sequence 0's cache (prefill:
                                 * one query row per b, each with its own causal length) */
    int ws_batch;               /* the workspace is laid out for this many sequences (>= B; 0 =
                                 * B), so calls with fewer sequences can share it */
    const float *lab_mean, *lab_scale;  /* [H_kv][r] label normalisation (ds_sparse_opts.label_norm):
                                 * labels of (k - mean) / scale, scored with q * scale; or NULL */
    int group_max;              /* 1: a position's group score is the largest over the group's query
                                 * heads of (the head's score - that head's best score), as the CPU's
                                 * ds_group_max (ds_sparse_opts.group_max); 0: the summed query's score.
                                 * Taken by the single-kernel selection only (no fused kernel, no
                                 * ready queue, no split=1 pipeline) */
} ds_gpu_attn_args;

/* Scratch for one layer call (reusable across layers and steps of the same shape). It holds
 * histograms and counters that the kernels leave zeroed for the next call: initialise once. */
size_t ds_gpu_attn_workspace_bytes(const ds_gpu_attn_args *a);
int ds_gpu_attn_workspace_init(void *ws, const ds_gpu_attn_args *a, void *stream);
/* Dense split-KV decode attention over all seq_len[b] rows. */
int ds_gpu_attn_dense(const ds_gpu_attn_args *a, void *ws, void *stream);
/* Double Sparsity: label scores -> radix top-k per (sequence, KV head) -> attention over the
 * selected rows (dense for sequences with n <= k). */
int ds_gpu_attn_ds(const ds_gpu_attn_args *a, void *ws, void *stream);
/* Stages of ds_gpu_attn_ds alone (1 scoring, 2 selection, 4 attention; benchmarks only). */
int ds_gpu_attn_ds_parts(const ds_gpu_attn_args *a, void *ws, void *stream, int parts);
/* Write labels for rows [pos0, pos1) of every (sequence, KV head) from the K cache (prefill,
 * and the benchmark's cache fill); the same bits as ds_label_encode. */
int ds_gpu_label_build(const ds_gpu_attn_args *a, int pos0, int pos1, void *stream);
/* The selection of the last ds_gpu_attn_ds call: [B*H_kv][k_cap] positions (order unspecified,
 * the first k_b entries valid for sequence b), k_cap = k at max_len. For checks. */
const int32_t *ds_gpu_attn_selected(const void *ws, const ds_gpu_attn_args *a, int *k_cap);
const char *ds_gpu_error_string(int err);

/* ---- GPU forward pass (src/cuda/forward.cu) ----
 * Weights fp16 on the device, or (quant_weights) kept in their GGUF type where the GPU has a
 * kernel for it (Q8_0, Q4_1, Q4_K, Q6_K: src/cuda/qweights.cu) and fp16 otherwise; fused QKV and
 * gate/up matrices, fp32 residual stream, cuBLAS GEMMs, the attention kernels above. Up to
 * max_batch sequence slots, each with its own position; decode of the first B slots runs from
 * a CUDA graph captured per B. */
typedef struct {
    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab;
    float rms_eps;
    int rope_neox, has_bias, tied;
    const float *inv_freq;        /* host [head_dim/2] RoPE frequencies */
    int max_batch, n_ctx, max_prefill;  /* slots, positions per slot, rows per prefill chunk */
    int quant_weights;            /* matrices come through ds_gpu_forward_upload_q where possible */
    /* Double Sparsity (sparse = 0: dense everywhere) */
    int sparse, r, bits, tokens, min_context;
    float tokens_frac;
    int recent;                   /* ds_gpu_attn_args.recent (DS_RECENT_AUTO: the default window) */
    int group_max;                /* ds_gpu_attn_args.group_max */
    const int16_t *chan;          /* host [n_layer][n_head_kv][r] */
    const uint8_t *dense_layers;  /* host [n_layer] (1 = dense) or NULL */
    const float *lab_mean, *lab_scale;  /* host [n_layer][n_head_kv][r] label normalisation or NULL */
} ds_gpu_forward_cfg;

typedef struct ds_gpu_forward ds_gpu_forward;
enum {
    DS_GW_TOK_EMBD, DS_GW_OUTPUT, DS_GW_OUTPUT_NORM,               /* layer ignored */
    DS_GW_ATTN_NORM, DS_GW_WQKV, DS_GW_BQKV, DS_GW_WO, DS_GW_FFN_NORM, DS_GW_WGU, DS_GW_WDOWN
};
int ds_gpu_forward_new(const ds_gpu_forward_cfg *c, ds_gpu_forward **out);
void ds_gpu_forward_free(ds_gpu_forward *f);
size_t ds_gpu_forward_bytes(const ds_gpu_forward *f);
/* Copy n elements to weight `which` of `layer` starting at element `offset`: uint16 fp16 for
 * matrices (WQKV rows: q, then k, then v; WGU rows: gate, then up), float for norms and bias. */
int ds_gpu_forward_upload(ds_gpu_forward *f, int which, int layer, size_t offset, const void *host, size_t n);
/* Whether rows of `cols` elements of GGUF type `type` can stay quantised on the GPU. */
int ds_gpu_forward_qtype_ok(int type, int cols);
/* quant_weights: rows [row0, row0 + rows) of matrix `which` (WQKV, WO, WGU, WDOWN, TOK_EMBD,
 * OUTPUT; same row order as ds_gpu_forward_upload) as GGUF blocks of `type`, row i at
 * host + i * stride. Rows arrive in order (row0 = rows uploaded so far); a matrix is either
 * quantised or fp16 as a whole. */
int ds_gpu_forward_upload_q(ds_gpu_forward *f, int which, int layer, int row0, int rows, int type, const void *host,
                            size_t stride);
/* Benchmarks: every weight pseudo-random (uniform, scaled by 1/sqrt(fan in)), norms 1. */
int ds_gpu_forward_random_weights(ds_gpu_forward *f, uint64_t seed);
/* Benchmarks: slots [0, n_seq) hold n random cached tokens (K, V and labels). */
int ds_gpu_forward_fill_kv_random(ds_gpu_forward *f, int n_seq, int n, uint64_t seed);
/* Prefill T tokens into `slot` at its current position. logits (host): [T][V] if all, else [V]
 * of the last token; may be NULL. */
int ds_gpu_forward_prefill(ds_gpu_forward *f, int slot, const int32_t *tokens, int T, float *logits, int all);
/* One decode step of slots [0, B): tokens[B] (host); logits (host) [B][V] or NULL. */
int ds_gpu_forward_decode(ds_gpu_forward *f, int B, const int32_t *tokens, float *logits);
int ds_gpu_forward_pos(const ds_gpu_forward *f, int slot);
int ds_gpu_forward_set_pos(ds_gpu_forward *f, int slot, int pos);   /* truncate */
/* Seconds of the last decode step (CUDA events around the graph replay). */
double ds_gpu_forward_last_step_seconds(const ds_gpu_forward *f);
/* Switch decode between DS and dense attention (a forward created with sparse keeps its labels
 * either way, so benchmarks compare both on the same weights and cache, and a session can run
 * dense until DS pays). Each mode keeps its captured graphs, so switching costs nothing. */
int ds_gpu_forward_set_sparse(ds_gpu_forward *f, int on);

#endif
