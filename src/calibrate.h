/* calibrate.h — offline channel calibration for Double Sparsity (double-sparsity.md §3).
 *
 * Three parts:
 *   1. ds_calib_acc: running sums of the channel statistics while the model runs (dense) over
 *      calibration text, block after block. Every block counts (the sums never restart).
 *   2. ds_calibration: per statistic, per layer, per KV head, the full permutation of the
 *      head_dim channel ids sorted by importance (most important first), so one calibration
 *      serves every r: the label channels for r are the first r entries.
 *   3. the JSON sidecar (ours, GGUF layout) and the import/export of the paper's JSON (HF layout).
 *
 * Channel ids are always in our (GGUF) layout unless a function says otherwise. */
#ifndef DS_CALIBRATE_H
#define DS_CALIBRATE_H

#include <stdint.h>

#include "dsinfer.h"

/* The channel statistics (double-sparsity.md §3), per (layer, KV head, channel c):
 *   q    sum over the group's query heads of mean |q_h,c|, before RoPE
 *   k    mean |k_c|, before RoPE
 *   qk   sum over the group's query heads of mean |q_h,c * k_c|, after RoPE, same token (the paper's)
 *   qkv  "q-weighted key variance", after RoPE: E[qsum_c^2] * Var(k_c), where qsum_c is the sum
 *        over the group's query heads of q_h,c (the query that shared-group DS scores with) and
 *        both moments run over all calibration tokens. A channel whose key is large but nearly
 *        constant across tokens (typical of low-frequency RoPE pairs) adds the same amount to
 *        every key's approximate score, so it cannot change the top-k; qk ranks such channels
 *        high, qkv ranks them by how much they move the scores from token to token.
 *   mass not a per-channel statistic: the qk ranking's first head_dim / 4 channels improved as a
 *        set by a local search that maximises the attention mass the set's approximate top-k
 *        finds on sampled long blocks of the calibration text (calib_mass.c), then, where the
 *        default label width is wider (head_dim 64), extended to that width the same way with
 *        the first set fixed; the rest in qk order. Computed after the others
 *        (ds_calib_mass_*), never fed through ds_calib_acc.
 * The values are fixed (files and ds_sparse_opts.stat store them); new statistics go at the end. */
typedef enum { DS_STAT_Q = 0, DS_STAT_K = 1, DS_STAT_QK = 2, DS_STAT_QKV = 3, DS_STAT_MASS = 4, DS_STAT_COUNT } ds_stat;

const char *ds_calib_stat_name(ds_stat s);                 /* "q", "k", "qk", "qkv", "mass" */
ds_status ds_calib_stat_parse(const char *name, ds_stat *out);  /* DS_ERR_ARG if unknown */

/* ---------------------------------------------------------------- accumulation */

typedef struct ds_calib_acc ds_calib_acc;

/* NULL on bad dimensions (n_head not a multiple of n_head_kv, ...) or out of memory. */
ds_calib_acc *ds_calib_acc_new(int n_layer, int n_head, int n_head_kv, int head_dim);
void ds_calib_acc_free(ds_calib_acc *a);

/* One layer's q and k for the T tokens of one block, row-major:
 *   q: [T][n_head][head_dim]    k: [T][n_head_kv][head_dim]
 * pre_rope feeds the "q" (|q|) and "k" (|k|) statistics; post_rope feeds "qk":
 * |q[t][h][c] * k[t][h / (n_head/n_head_kv)][c]| (same token t), and "qkv": the sums of
 * (sum over the group of q[t][h][c])^2, k[t][g][c] and k[t][g][c]^2, and the token count. Calls
 * for different layers touch disjoint memory, so they may run concurrently; calls for one layer
 * must not. */
void ds_calib_acc_add_pre_rope(ds_calib_acc *a, int layer, const float *q, const float *k, int T);
void ds_calib_acc_add_post_rope(ds_calib_acc *a, int layer, const float *q, const float *k, int T);
/* While a mass sampler is set (not NULL), the two calls above feed it instead of the statistics:
 * post_rope's q and k go to ds_calib_mass_add, pre_rope's are ignored. */
struct ds_calib_mass;
void ds_calib_acc_set_mass(ds_calib_acc *a, struct ds_calib_mass *m);
/* Count of calibration tokens seen (once per block, not per layer). */
void ds_calib_acc_tokens(ds_calib_acc *a, long n);
long ds_calib_acc_get_tokens(const ds_calib_acc *a);
/* The value that ds_calib_finish ranks channel `channel` of (layer, kv_head) by: the group sum
 * for q and qk (plain sums: a common 1/N does not change the order), E[qsum^2] * Var(k) for qkv
 * (Var clamped at 0 against rounding). NAN if that statistic was not fed for the layer or an
 * index is out of range. */
double ds_calib_acc_value(const ds_calib_acc *a, ds_stat s, int layer, int kv_head, int channel);

/* ---------------------------------------------------------------- rankings */

typedef struct ds_calibration ds_calibration;

typedef struct {
    char arch[32];
    int n_layer, n_head, n_head_kv, head_dim;
    long text_tokens;          /* calibration tokens (0 for a paper import) */
    char text_name[256];       /* "" if unknown; "paper:FILE" for a paper import */
    char text_sha256[72];      /* "" if unknown */
} ds_calib_info;

/* Ranks the statistics that were fed for every layer; a statistic fed for only some layers is
 * a caller bug (DS_ERR_ARG), as is one fed for none. Ranking: descending ds_calib_acc_value,
 * ties to the lower channel id. */
ds_status ds_calib_finish(const ds_calib_acc *a, ds_calibration **out);

const ds_calib_info *ds_calib_get_info(const ds_calibration *c);
/* [head_dim] channel ids, most important first; NULL if that statistic is absent or the
 * layer / kv_head is out of range. */
const int16_t *ds_calib_ranking(const ds_calibration *c, ds_stat stat, int layer, int kv_head);
/* Per-channel moments of the post-RoPE keys over the calibration tokens, [head_dim] for
 * (layer, kv_head): mean and standard deviation (0 for a constant channel). Computed with the
 * qkv statistic (same sums); NULL if c has none (older files, paper imports) or an index is out
 * of range. Label normalisation (ds_sparse_opts.label_norm) encodes (k_c - mean_c) / std_c, so
 * one per-token min/max range fits channels of very different spread, and scores with
 * q_c * std_c: the scores move by sum_c q_c mean_c, the same for every token, so the ranking
 * is that of the raw labels up to rounding. */
const float *ds_calib_kmean(const ds_calibration *c, int layer, int kv_head);
const float *ds_calib_kstd(const ds_calibration *c, int layer, int kv_head);

/* Sets statistic `stat`'s rankings from rank [n_layer][n_head_kv][head_dim] (each row must be
 * a permutation of 0..head_dim-1: DS_ERR_ARG otherwise). */
ds_status ds_calib_set_ranking(ds_calibration *c, ds_stat stat, const int16_t *rank);

/* ---------------------------------------------------------------- the mass ranking */

/* Samples of post-RoPE q and k from n_blocks dense blocks of `window` tokens each (window >= 64:
 * queries are sampled in the last quarter of a block). NULL on bad dimensions or out of memory
 * (about n_layer * n_blocks * window * n_head_kv * head_dim * 4 bytes). */
typedef struct ds_calib_mass ds_calib_mass;
ds_calib_mass *ds_calib_mass_new(int n_layer, int n_head, int n_head_kv, int head_dim, int window, int n_blocks);
void ds_calib_mass_free(ds_calib_mass *m);
/* The block the next ds_calib_mass_add calls belong to, 0..n_blocks-1. */
void ds_calib_mass_block(ds_calib_mass *m, int blk);
/* One layer's q [T][n_head][head_dim] and k [T][n_head_kv][head_dim] of the current block's
 * next T tokens (a block may come in chunks; at most window tokens in all). */
void ds_calib_mass_add(ds_calib_mass *m, int layer, const float *q, const float *k, int T);
/* The search (calib_mass.c) for every (layer, KV head), on pool's threads if not NULL, from c's
 * qk ranking (required); sets c's mass ranking. qk_obj / mass_obj (if not NULL): the objective
 * (mean captured attention mass) of qk's first head_dim / 4 channels and of the first stage's
 * set of as many. */
struct ds_pool;
ds_status ds_calib_mass_rank(const ds_calib_mass *m, ds_calibration *c, struct ds_pool *pool,
                             void (*progress)(int done, int total, void *user), void *user, double *qk_obj,
                             double *mass_obj);

/* ---------------------------------------------------------------- per-layer label widths */

/* The mass search also records, per statistic and (layer, KV head), a curve: the objective it
 * maximises (the attention mass the top n/16 approximate scores capture on the calibration
 * samples) for the ranking's first w channels, at the DS_CALIB_CURVE_N widths
 * ds_calib_curve_width gives (head_dim/16, 2 head_dim/16, ..., head_dim; the last uses every
 * channel, the exact scores). */
#define DS_CALIB_CURVE_N 16
int ds_calib_curve_width(int head_dim, int p);   /* max(1, (p + 1) * head_dim / 16) */
/* [DS_CALIB_CURVE_N] for (stat, layer, kv_head); NULL if c has no curve for stat (made before
 * curves existed, or without mass blocks) or an index is out of range. */
const float *ds_calib_curve(const ds_calibration *c, ds_stat stat, int layer, int kv_head);
/* Sets stat's curves from curve [n_layer][n_head_kv][DS_CALIB_CURVE_N] (finite, in [0, 1.001]:
 * DS_ERR_ARG otherwise). */
ds_status ds_calib_set_curve(ds_calibration *c, ds_stat stat, const float *curve);

/* Per-layer label widths for the ranking of `stat`, with the total of r channels in every sparse
 * layer (dense_layer[l] != 0: kept dense, left at r and out of the exchange; dense_layer may be
 * NULL), moved between layers by stat's curves: starting from r everywhere, a move takes s steps
 * of head_dim/16 channels from one layer to another, choosing s and the two layers for the
 * largest gain in captured mass (summed over each layer's KV heads) net of the loss, while that
 * is positive. Several steps at once, because a curve need not be concave: the mass set is
 * searched for one width, and the channels after it add little until several do. Widths stay on
 * the curve's grid, within [r/2, min(2r, cap)]. r must be a multiple of head_dim/16 (DS_ERR_ARG
 * otherwise, and when c has no curves for stat: the message says to recalibrate). widths:
 * [n_layer] out. */
ds_status ds_calib_alloc(const ds_calibration *c, ds_stat stat, int r, int cap, const uint8_t *dense_layer,
                         int *widths);

/* DS_OK if c has statistic `stat`; else DS_ERR_ARG with a message for the user that says which
 * statistics c has and how to get the missing one (files written before qkv existed, and paper
 * imports, have no qkv: recalibrate). */
ds_status ds_calib_require(const ds_calibration *c, ds_stat stat);
void ds_calibration_free(ds_calibration *c);

/* ---------------------------------------------------------------- files */

/* Identity written into / checked against the sidecar. On save every field is written (NULL
 * strings as JSON null; model_file as its basename). On load a field is checked only where the
 * expectation gives it: strings non-NULL, counts > 0, model_size != 0; text_tokens is never
 * checked. text_sha256 is checked (so a caller can tell a calibration from other text). */
typedef struct {
    const char *arch;
    int n_layer, n_head, n_head_kv, head_dim;
    const char *model_file;
    uint64_t model_size;
    const char *text_name;
    const char *text_sha256;
    long text_tokens;
} ds_calib_meta;

/* Writes PATH.tmp and renames it over PATH. Byte-for-byte deterministic for equal input. The
 * statistics present are written in the order qk, k, q, qkv (qkv last: adding it left the text
 * of the older statistics unchanged, so a regenerated file diffs as a pure addition), then the
 * key moments, if any, as "k_moments": {"mean": [...], "std": [...]}, [layer][kv head][channel],
 * each float with 9 significant digits (exact round trip). The
 * dimensions written are c's (meta's, where > 0, must agree: DS_ERR_ARG). meta may be NULL:
 * then c's own info (arch, text) is written, so load -> save keeps a file's identity. */
ds_status ds_calib_save(const ds_calibration *c, const ds_calib_meta *meta, const char *path);

/* A file may hold any non-empty subset of the statistics (files from before qkv lack it; see
 * ds_calib_require) and optionally the key moments (finite; std >= 0). Validates everything:
 * JSON syntax, format/version/layout, types, ranges, every ranking a permutation of
 * 0..head_dim-1. Errors: DS_ERR_IO (cannot read), DS_ERR_FORMAT (malformed),
 * DS_ERR_UNSUPPORTED (well-formed, but for another model / text than expect). expect may be
 * NULL (no identity check). */
ds_status ds_calib_load(const char *path, const ds_calib_meta *expect, ds_calibration **out);

/* The paper's JSON has no qkv: import leaves it absent and export skips it.
 * The paper's JSON: one object, keys "model.layers.{i}.self_attn.{q_proj|k_proj|qk_proj}",
 * each a list of per-head lists of all head_dim channel ids by importance, HF layout. expect
 * must give n_layer, n_head, n_head_kv and head_dim. A key's list count must be n_head (one
 * per query head: the group's lists are merged, see calibrate.c) or n_head_kv. remap_llama:
 * map HF channel ids to GGUF llama layout (ds_calib_hf_to_gguf); off for qwen2 (NEOX rope). */
ds_status ds_calib_import_paper(const char *path, const ds_calib_meta *expect, int remap_llama,
                                ds_calibration **out);
/* The inverse, for comparison with the authors' tools: one list per query head (each query
 * head gets its KV head's ranking), HF layout if remap_llama. */
ds_status ds_calib_export_paper(const ds_calibration *c, const char *path, int remap_llama);

/* HF -> GGUF llama-arch channel: c -> 2*(c mod d/2) + (c >= d/2). -1 if c is out of range or
 * head_dim is not a positive even number. */
int ds_calib_hf_to_gguf(int c, int head_dim);

#endif
