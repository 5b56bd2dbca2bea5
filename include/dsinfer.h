/* dsinfer.h — the public API of libdsinfer.
 *
 * Two objects:
 *   ds_model    immutable after load: GGUF mapping, config, weights, tokenizer, chat template.
 *               May be shared by any number of sessions (read-only).
 *   ds_session  one mutable timeline (one sequence): KV cache, activations, logits, sampler state.
 *
 * Every function that can fail returns ds_status; DS_OK is 0. On failure ds_last_error()
 * returns a one-line message (thread-local) describing what went wrong. The library never
 * exits the process and never prints unless logging is enabled. */
#ifndef DSINFER_H
#define DSINFER_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DS_OK = 0,
    DS_ERR_IO,          /* file cannot be opened / read / mapped */
    DS_ERR_FORMAT,      /* malformed file (GGUF, calibration, ...) */
    DS_ERR_UNSUPPORTED, /* well-formed but not supported (architecture, tensor type) */
    DS_ERR_ARG,         /* invalid argument or option */
    DS_ERR_OOM,         /* allocation failed */
    DS_ERR_CONTEXT,     /* context window exhausted */
} ds_status;

const char *ds_last_error(void);
const char *ds_status_name(ds_status s);

/* SHA-256 of a buffer as 64 lowercase hex digits + NUL (identity of texts and files). */
void ds_sha256_hex(const void *data, size_t len, char out[65]);

/* Backend of this build ("cpu-only" or "cuda") and visible GPUs (0 in CPU-only builds). */
const char *ds_build_backend(void);
int ds_gpu_count(void);

/* 0 = silent, 1 = errors, 2 = info, 3 = debug. Default 1. */
void ds_set_log_level(int level);

/* ---------------------------------------------------------------- model */

typedef struct ds_model ds_model;

typedef struct {
    char arch[32];       /* "llama" or "qwen2" */
    char name[128];      /* general.name if present */
    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train;
    float rope_theta, rms_eps;
    int rope_neox;       /* 1: rotate (j, j+d/2) pairs; 0: adjacent (2j, 2j+1) pairs */
    int has_qkv_bias;
    int tied_embeddings;
    uint64_t n_params;
    uint64_t weight_bytes;   /* bytes of tensor data read per decoded token (all weights) */
} ds_model_info;

ds_status ds_model_load(const char *path, ds_model **out);
void ds_model_free(ds_model *m);
const ds_model_info *ds_model_get_info(const ds_model *m);
/* Tensor table (for `inspect`): count, and a one-line description "name type [ne0, ne1, ...] bytes"
 * of tensor i written into buf. Returns the line length, or -1 if i is out of range. */
int ds_model_n_tensors(const ds_model *m);
int ds_model_tensor_desc(const ds_model *m, int i, char *buf, int cap);

/* Double Sparsity calibration (double-sparsity.md §3). A model loads the sidecar
 * "MODEL.gguf.dscal.json" automatically when it exists and matches. */
bool ds_model_has_calibration(const ds_model *m);
ds_status ds_model_load_calibration(ds_model *m, const char *path);
/* Import the paper's JSON (HF channel layout; remapped for llama-arch GGUFs). */
ds_status ds_model_import_paper_calibration(ds_model *m, const char *path);
/* Run the model densely over `text` in blocks of `block` tokens (0 = 512), accumulate the q, k,
 * qk and qkv channel statistics over every block, and keep the rankings; then, unless
 * mass_blocks is 0 (-1 = the default, 2), run that many blocks of 2048 tokens (the model's
 * context if shorter; as many as the text holds) and search the "mass" channel sets from them
 * (double-sparsity.md §3). Save to save_path if not NULL. progress(done, total, user) is called
 * after each block and each (layer, KV head) searched, if not NULL. */
ds_status ds_model_calibrate(ds_model *m, const char *text, size_t len, const char *text_name,
                             const char *text_sha256,
                             int block, int max_tokens, int n_threads, int mass_blocks, const char *save_path,
                             void (*progress)(int done, int total, void *user), void *user);
/* The default sidecar path for a model file (malloc'd). */
char *ds_calibration_default_path(const ds_model *m);

/* ---------------------------------------------------------------- tokens */

/* Encode UTF-8 text. parse_special: recognise special-token text such as "<|im_start|>".
 * add_bos: prepend BOS if the vocabulary asks for it (tokenizer.ggml.add_bos_token).
 * On success *out is malloc'd (free with ds_free_tokens) and *n_out its length. */
ds_status ds_tokenize(const ds_model *m, const char *text, size_t len, bool add_bos,
                      bool parse_special, int32_t **out, int *n_out);
void ds_free_tokens(int32_t *tokens);
/* Bytes of one token's text (may be a partial UTF-8 sequence). Returns the number of bytes
 * written (<= cap) or -1 for an invalid token id. Special tokens render as their text only if
 * render_special. */
int ds_token_to_piece(const ds_model *m, int32_t tok, bool render_special, char *buf, int cap);
int32_t ds_token_bos(const ds_model *m);       /* -1 if none */
int32_t ds_token_eos(const ds_model *m);       /* -1 if none */
bool ds_token_is_eog(const ds_model *m, int32_t tok); /* end of generation (eos, eot, <|im_end|>...) */

/* Render a chat (roles "system", "user", "assistant") with the model's template (ChatML),
 * ending with the assistant prefix if add_assistant. Returns a malloc'd string or NULL on error. */
typedef struct { const char *role; const char *content; } ds_chat_msg;
char *ds_chat_render(const ds_model *m, const ds_chat_msg *msgs, int n, bool add_assistant);

/* ---------------------------------------------------------------- session */

typedef struct ds_session ds_session;

/* Attention method for decode steps (double-sparsity.md §2, §8). Prefill is dense unless
 * ds_sparse_opts.sparse_prefill is set. */
typedef enum {
    DS_ATTN_DENSE = 0,   /* every cached token */
    DS_ATTN_DS,          /* Double Sparsity: calibrated label channels -> top-k -> exact attention */
    DS_ATTN_ORACLE,      /* exact q.K scores over all channels -> top-k (upper bound of any selector) */
    DS_ATTN_RANDOM,      /* DS with r random channels (what calibration buys) */
    DS_ATTN_STREAMING,   /* 4 sink tokens + the most recent k-4 */
    DS_ATTN_SPARQ,       /* per step the r channels of largest |q|, scores from those K columns */
    DS_ATTN_QUEST,       /* pages of 16 tokens scored by per-channel key min/max bounds, top pages */
    DS_ATTN_H2O,         /* Heavy-Hitter Oracle: evict to k = ~20% recent + ~80% by accumulated attention */
    DS_ATTN_COUNT
} ds_attn_method;

#define DS_MAX_DENSE_LAYERS 64
#define DS_MAX_LAYER_CHANNELS 256

typedef struct {
    ds_attn_method method;
    int tokens;            /* k, tokens attended per step; 0: use tokens_frac */
    float tokens_frac;     /* k = ceil(tokens_frac * context) when tokens == 0 (default 1/16) */
    int channels;          /* r, label channels per KV head; 0: max(head_dim, 128) / label_bits, at most head_dim
                              (1/16 of the key bits, but >= 128 bits per label row: 1/8 at head_dim 64) */
    int layer_channels[DS_MAX_LAYER_CHANNELS];  /* r of layer l where > 0 (else `channels`): per-layer
                            * label widths (CPU only) */
    int channel_alloc;     /* 1: per-layer widths from the calibration's curves for `stat`, with the total
                            * of `channels` in every layer moved to where it captures the most attention
                            * on the calibration text (calibrate.h, ds_calib_alloc); 0 (default): none */
    int label_bits;        /* 16, 8, 4 or 2 (default 4) */
    int stat;              /* calibration statistic ranking the channels: 0 q, 1 k, 2 qk (default), 3 qkv,
                            * 4 mass; -1: the default */
    int per_head;          /* 0: one token set per KV group (shared, default); 1: one per query head */
    int group_max;         /* shared selection, how the group's query heads combine their scores: 0 the sum
                            * (q summed over the heads); 1 the largest over the heads of each head's own
                            * score less its own maximum; DS_GROUP_AUTO (default): 1 for ds and random, 0 for
                            * oracle and sparq (README: at k = 1/16 max keeps more of dense's perplexity and
                            * retrieval with labels, the exact scores do better summed). Methods ds, random,
                            * oracle, sparq (ignored by the others and by per-head); CPU and GPU */
    int recent;            /* the `recent` tokens just before the current one are always selected, out of k,
                            * and the top-k fills the rest (methods ds, random, oracle, sparq; ignored by the
                            * others; at most k - 1). DS_RECENT_AUTO (default): min(DS_RECENT_DEFAULT, k/8)
                            * for ds and random (CPU and GPU), else 0. Label scores miss the local attention
                            * that RoPE's fast-turning channels carry (README: SmolLM2 at 16 channels
                            * +7.5% -> +2.5% perplexity at k = 1/16 with 16 recent tokens) */
    int label_norm;        /* labels of (k - mean) / std per channel with the calibration's key moments
                            * (method ds): 1 on (an error when the calibration has none), 0 off (raw
                            * labels), -1 (default) on when the calibration has them; resolved to 0/1
                            * by ds_session_new */
    int n_dense_layers;    /* layers kept dense */
    int dense_layers[DS_MAX_DENSE_LAYERS];
    int min_context;       /* dense decode while the context is shorter than this; DS_MIN_CONTEXT_AUTO:
                            * 2048 on the CPU; on the GPU the context from which the sparse step is
                            * faster than the dense one (ds_sparse_auto_min_context) */
    int sparse_prefill;    /* apply the method at every prefill position too (the paper's accuracy simulation) */
    int prefetch;          /* CPU decode, ds and random: 1 while scanning the labels, prefetch the K/V rows the
                            * group selected at the previous step (most are selected again, and the gather
                            * that follows is bound by memory latency); 0 off; DS_PREFETCH_AUTO (default):
                            * on with AMD CPUs, off elsewhere (README: SmolLM2 at 8K, DS attention 1.12-1.18x
                            * faster with it on an AMD EPYC, 0.82-0.86x on an Intel Xeon). Speed only: the
                            * results are the same */
    uint64_t seed;         /* random channels */
    int track_h2o;         /* dense sessions: also accumulate H2O's per-token attention sums (column sums
                            * of the attention probabilities, grouped like per_head) in every step, so
                            * that ds_session_fork can start an h2o session from this one. Costs one
                            * more q.K pass per attention. Ignored by sparse methods. */
} ds_sparse_opts;

#define DS_MIN_CONTEXT_AUTO (-1)
#define DS_RECENT_AUTO (-1)
#define DS_RECENT_DEFAULT 16
#define DS_GROUP_AUTO (-1)
#define DS_PREFETCH_AUTO (-1)
ds_sparse_opts ds_sparse_default_opts(void);
/* What DS_MIN_CONTEXT_AUTO resolves to for a model (its KV heads and head_dim) and backend. On
 * the GPU a DS call has a fixed cost of ~10 us per layer (selection and attention kernels, each a
 * chain of dependent round trips) that it saves on the dense kernel only once a step reads enough
 * K+V per layer. Measured at batch 1 on the H200 (bench/results/gpu-cli-crossover-h200.md), DS
 * and dense are level at 12-64 MiB of K+V per layer and step depending on the shape (SmolLM2 12,
 * Qwen2.5-1.5B ~30, Llama-2-7B 32, Llama-3-8B 64), so the GPU's DS starts at 64 MiB, where it was
 * never the slower, and never below 2048 (the CPU's value). */
int ds_sparse_auto_min_context(const ds_model_info *info, int gpu);
/* The label channels used when ds_sparse_opts.channels is 0 (see there). */
int ds_sparse_default_channels(int head_dim, int label_bits);
const char *ds_attn_method_name(ds_attn_method m);
/* The method names, comma-separated ("dense,ds,...,h2o"): for help texts and error messages. */
const char *ds_attn_method_list(void);
int ds_attn_method_parse(const char *name, ds_attn_method *out);   /* 0 ok, -1 unknown */
/* Whether the method selects by a top-k of per-position scores (ds, random, oracle, sparq): the
 * methods that take ds_sparse_opts.recent and group_max. */
bool ds_attn_method_topk(ds_attn_method m);
/* Names of ds_sparse_opts.stat values ("q", "k", "qk", "qkv", "mass"; "?" out of range). */
const char *ds_sparse_stat_name(int stat);
int ds_sparse_stat_parse(const char *name, int *out);   /* 0 ok, -1 unknown */

typedef struct {
    int n_ctx;        /* KV capacity in tokens; 0 = min(model train ctx, 8192) */
    int n_threads;    /* 0 = number of online CPUs */
    int n_batch;      /* max tokens per prefill chunk; 0 = 512 */
    ds_sparse_opts sparse;
    int gpu;          /* 1: run the forward pass on the GPU (builds with make CUDA=1; methods dense,
                       * ds and random, shared GQA); the CPU side keeps tokenising and sampling */
} ds_session_opts;

ds_session_opts ds_session_default_opts(void);
ds_status ds_session_new(const ds_model *m, const ds_session_opts *opts, ds_session **out);
void ds_session_free(ds_session *s);

/* Append tokens to the timeline. Prefill runs in chunks of n_batch; the logits of the last
 * token are available afterwards from ds_session_logits. If all_logits is non-NULL it receives
 * n * n_vocab floats (logits of every position, row-major) — used by perplexity. */
ds_status ds_session_eval(ds_session *s, const int32_t *tokens, int n, float *all_logits);
const float *ds_session_logits(const ds_session *s);   /* [n_vocab] of the last evaluated token */
int ds_session_pos(const ds_session *s);                /* tokens in the KV cache */
int ds_session_ctx(const ds_session *s);
/* A new session holding a copy of src's timeline (KV cache, position, last logits) that decodes
 * with another attention method: the material is prefilled once and every method continues
 * from it. Labels and Quest page bounds the new method needs are rebuilt from the copied keys.
 * H2O's state (accumulated attention, evictions) cannot be rebuilt from keys, so an h2o fork
 * copies it: src must be an h2o session or a dense one created with sparse.track_h2o, with the
 * same per_head grouping (DS_ERR_ARG otherwise, unless src is empty). */
ds_status ds_session_fork(const ds_session *src, const ds_sparse_opts *sparse, ds_session **out);
/* Drop everything after position pos (pos <= current). H2O's running sums are not rolled back
 * (positions before pos keep what the dropped rows added, and their evictions); positions
 * written again start afresh, so truncating to 0 resets H2O completely. */
ds_status ds_session_truncate(ds_session *s, int pos);
/* Wall seconds spent in attention (selection included) since the session was created, summed
 * over layers: lets `bench` report the attention part of a decode step on its own. */
double ds_session_attn_seconds(const ds_session *s);
/* Bytes of the session's memory plan, for `inspect`. */
size_t ds_session_bytes(const ds_session *s);
/* Weight bytes one decode step reads: the GGUF's on the CPU; with --gpu what the GPU holds (the
 * quantised blocks where it keeps them, else fp16), the token embedding only when the output
 * projection shares it. */
size_t ds_session_step_weight_bytes(const ds_session *s);
/* Bytes one decode step at context n (n visible positions, the current token included) reads in
 * one layer that runs the session's method (double-sparsity.md §9): K/V rows (fp16) plus what
 * the selector scans (labels, K columns, Quest page bounds, H2O accumulators). Layers kept dense
 * (--ds-dense-layers) and dense fallbacks read the dense amount, 2 * n * n_head_kv * head_dim * 2.
 * The per-thread index lists are not counted (they stay in cache). Formulas in sparse.c. */
size_t ds_sparse_step_bytes(const ds_session *s, int n);
/* The label channels layer `layer` of the session keeps (per-layer widths differ only with
 * layer_channels or channel_alloc); 0 if the method keeps no labels or layer is out of range. */
int ds_session_label_channels(const ds_session *s, int layer);
/* The recent window the session's selection keeps at context n (ds_sparse_opts.recent, resolved;
 * 0 where none). */
int ds_session_recent(const ds_session *s, int n);
/* Whether the session's selection ranks a group by its largest head (ds_sparse_opts.group_max,
 * resolved: 0 for methods and groupings that do not take it). */
int ds_session_group_max(const ds_session *s);
/* Whether the CPU decode prefetches each group's previous selection during its label scan
 * (ds_sparse_opts.prefetch, resolved: 0 for methods and groupings that do not take it). */
int ds_session_prefetch(const ds_session *s);

/* ---------------------------------------------------------------- sampling */

typedef struct {
    float temperature;   /* 0 = greedy */
    int top_k;           /* 0 = off */
    float top_p;         /* 1 = off */
    float min_p;         /* 0 = off */
    uint64_t seed;
} ds_sampler_opts;

typedef struct ds_sampler ds_sampler;
ds_sampler_opts ds_sampler_default_opts(void);
ds_status ds_sampler_new(const ds_sampler_opts *o, int n_vocab, ds_sampler **out);
void ds_sampler_free(ds_sampler *s);
int32_t ds_sampler_sample(ds_sampler *s, const float *logits);

#ifdef __cplusplus
}
#endif
#endif
