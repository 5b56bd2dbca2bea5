/* sparse.h — sparse decode attention: Double Sparsity and the baselines behind one interface.
 *
 * Per (layer, KV group) step: select positions (label scores + top-k, exact scores, a fixed
 * window, ...) and run exact attention over the selected rows only (double-sparsity.md §1, §5,
 * §6, §8). The label cache is written for every token in prefill and decode. */
#ifndef DS_SPARSE_H
#define DS_SPARSE_H

#include "forward.h"

/* Allocate the per-session sparse state (label cache, channel sets, per-thread scratch).
 * Called from ds_session_new when opts.sparse.method != DS_ATTN_DENSE. */
ds_status ds_sparse_init(ds_session *s);
void ds_sparse_free(ds_session *s);

/* Write the label row of token `pos` for every KV head of `layer`; k: [n_head_kv][head_dim]
 * post-RoPE keys. No-op when the method keeps no labels. */
void ds_sparse_append(ds_session *s, int layer, int pos, const float *k);

/* Whether `layer` goes through ds_sparse_group (methods other than dense, layer not kept dense). */
bool ds_sparse_layer(const ds_session *s, int layer);

/* Attention for the query heads of KV group `kvh` of batch row `t` (query position n-1, so n
 * positions are visible), with the session's method; writes s->att for those heads. ith: the
 * calling thread (its scratch). Dense over all n when n <= k or n < min_context. */
void ds_sparse_group(ds_session *s, int layer, int t, int kvh, int n, int ith);

/* Decode split in two (forward.c): the selection of KV group kvh of batch row t, then its
 * attention over slices of the selected rows on other threads. ds_sparse_select writes the
 * selected positions to idx (room for n) and returns how many, or -1 when it attended the group
 * densely itself (n <= k or n < min_context; s->att written), as ds_sparse_group would.
 * Only where ds_sparse_split_ok: not H2O (stateful), not per-head selection. One call per group
 * and step: it prefetches the rows of the group's previous selection and keeps this one's. */
bool ds_sparse_split_ok(const ds_session *s);
int ds_sparse_select(ds_session *s, int layer, int t, int kvh, int n, int ith, int32_t *idx);

/* k for a context of n tokens. */
int ds_sparse_k(const ds_session *s, int n);

/* How the attention over a selection of m rows is cut and summed, wherever it runs: split decode
 * (forward.c, a slice per work unit) and ds_sparse_group (the accuracy simulation, and decode
 * where it does not split) attend the same slices in the same order and merge them with
 * ds_attn_merge, so the two give the same bits. slices: ds_sparse_slices at the step's context
 * n (k / DS_SPLIT_ROWS rounded up, within the room of the split-KV partials); slice j is rows
 * [b, e): DS_SPLIT_ROWS each, the last one taking the rest; an empty slice is skipped and
 * ds_sparse_slices_used says how many hold rows. */
#define DS_SPLIT_ROWS 128
#define DS_SPLIT_SLICES_MAX(n_ctx) ((n_ctx) / 256 + 2)
int ds_sparse_slices(const ds_session *s, int n);
static inline void ds_sparse_slice_range(int j, int slices, int m, int *b, int *e) {
    *b = j * DS_SPLIT_ROWS;
    *e = j == slices - 1 ? m : (*b + DS_SPLIT_ROWS < m ? *b + DS_SPLIT_ROWS : m);
}
static inline int ds_sparse_slices_used(int slices, int m) {
    const int u = (m + DS_SPLIT_ROWS - 1) / DS_SPLIT_ROWS;
    return u < slices ? u : slices;
}

/* After ds_session_fork copied src's KV cache into d: rebuild d's labels and Quest page bounds
 * from the copied keys, and copy H2O state (which keys cannot give back) from src. */
ds_status ds_sparse_fork(ds_session *d, const ds_session *src);

/* Whether the method's state is sequential per (layer, KV head), so the rows of a sparse-prefill
 * chunk must run in order for each group (H2O: eviction and accumulators depend on every earlier
 * step), instead of as independent (row, group) work units. */
bool ds_sparse_sequential(const ds_session *s);

/* The bytes one decode step reads per layer running the method: ds_sparse_step_bytes, declared
 * with the public API (dsinfer.h) because the CLI prints it. */

/* ---- baselines (sparse_baselines.c): Quest and H2O, double-sparsity.md §8 ---- */

#define DS_QUEST_PAGE 16

/* Quest pages chosen for one query: pages [0, cp) with cp = (n-1)/16 are complete and scored,
 * score(page) = sum over the G query heads of sum_c max(q_c*min_c, q_c*max_c) (each head's upper
 * bound on q.k over the page; the bound is not linear in q, so heads are scored separately and
 * then summed). The ceil((k-1)/16) best pages (ds_topk: ties to the lower page) plus the current,
 * possibly partial page cp are selected; if that is every page, all of [0, n).
 * q: [G][hd] (any scale); meta: [pages][2][hd] fp16 min then max; scores: room for cp floats;
 * pages: room for cp ints; topk_scratch: ds_topk_scratch_bytes(cp). Writes the positions of the
 * selected pages in increasing order to idx (room for n) and returns their count. */
int ds_quest_select(const float *q, int G, int hd, const uint16_t *meta, int n, int k, float *scores,
                    int32_t *pages, int32_t *idx, void *topk_scratch);
ds_status ds_quest_init(ds_session *s);
void ds_quest_append(ds_session *s, int layer, int pos);
int ds_quest_select_unit(ds_session *s, int layer, int kvh, const float *q, int G, int n, int k, int ith,
                         int32_t *idx);

/* H2O's recent window for a budget k: ceil(k/5) >= 1 most recent positions (the current token
 * among them) are always kept; the other k - ceil(k/5) (~80%) are heavy hitters. */
int ds_h2o_recent(int k);
ds_status ds_h2o_init(ds_session *s);
void ds_h2o_append(ds_session *s, int layer, int pos);
/* One decode step of H2O for KV group kvh (ds_sparse_group's contract; q [G][hd], K/V the group's
 * cache, out [G][hd], set up by ds_sparse_group). */
void ds_h2o_group(ds_session *s, int layer, int kvh, const float *q, const uint16_t *K, const uint16_t *V,
                  float *out, int n, int ith);
/* Whether this layer's attention over a chunk of T tokens is dense while the session keeps H2O
 * state (dense prefill of an h2o session; every step of a dense session with track_h2o): then
 * ds_h2o_track must add the chunk's attention probabilities, after the attention region filled
 * s->sp_h2o_ml with each row's softmax max and sum. */
bool ds_h2o_tracks(const ds_session *s, int layer, int T);
void ds_h2o_track(ds_session *s, int layer, int T);
ds_status ds_h2o_fork(ds_session *d, const ds_session *src);

/* Selection diagnostics (sparse_diag.c): open DSINFER_SEL_DIAG's file if the variable is set;
 * append one line about the selection idx[0, m) of unit (layer, kvh) for queries q [G][hd]. */
ds_status ds_sparse_diag_open(ds_session *s);
void ds_sparse_diag(ds_session *s, int layer, int kvh, const float *q, int G, int n, const int32_t *idx, int m);
/* DSINFER_SEL_SHUFFLE=SEED: permute idx[0, m) (the same set in another order) by a generator seeded
 * with SEED, layer, kvh and n, so the attention sums the rows in another order. */
void ds_sparse_shuffle(const ds_session *s, int layer, int kvh, int n, int32_t *idx, int m);

#endif
