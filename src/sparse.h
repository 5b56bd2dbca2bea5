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

/* k for a context of n tokens. */
int ds_sparse_k(const ds_session *s, int n);

#endif
