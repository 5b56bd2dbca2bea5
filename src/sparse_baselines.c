/* sparse_baselines.c — two baselines of double-sparsity.md §8 as real decode paths behind the
 * sparse interface (sparse.h): Quest and H2O. Both attend exactly (ds_attn_partial over an index
 * list) to the rows they choose, as every other method does, so they differ only in the choice.
 *
 * QUEST (Tang et al. 2024). The cache is cut into pages of 16 positions. Per (layer, KV head,
 * page) we keep the per-channel min and max of the page's post-RoPE keys as the cache holds them
 * (fp16-rounded), stored as fp16: extrema of fp16 values are fp16 values, so this is exact and
 * half the bytes of f32 — and these bytes are what Quest scans every step (§9). Layout
 * head-major [layer][kv_head][page][2][head_dim] (min row, then max row) so one group's scan
 * streams one array. A page's bound is recomputed from its cached rows whenever a row is
 * appended (at most 16 rows): a session truncated into the middle of a page (perplexity windows,
 * bench repetitions) then never keeps extrema of rows that are gone.
 * Budget mapping: a budget of k tokens buys ceil((k-1)/16) complete pages chosen by score, plus
 * the current page (1..16 rows, the current token included), i.e. 16*ceil((k-1)/16) + 1..16 rows:
 * k = 128 reads 8 pages + the current page (129..144 rows). Rounding up keeps a small k from
 * collapsing to the current page alone; ds_sparse_step_bytes counts the exact rows.
 * GQA shared: the group's page score is the sum over its query heads of each head's upper bound
 * sum_c max(q_c*min_c, q_c*max_c). The bound is not linear in q (max of two products), so unlike
 * the label scores it cannot be computed once from the summed query: heads are bounded one by one.
 *
 * H2O (Zhang et al. 2023, "Heavy-Hitter Oracle"). Per (layer, KV head) — per query head in
 * per-head mode — a cache of at most k positions: the ceil(k/5) most recent, plus heavy hitters
 * chosen by the attention probability they have accumulated over every step so far. Evicted
 * positions never return (their rows stay in our fp16 cache, for other methods and forks, but
 * H2O never reads them again). Per step: (1) if more than k positions are kept, evict the
 * non-recent ones with the lowest accumulator until k remain (ties: the older position stays,
 * ds_topk's rule); (2) exact attention over the kept set; (3) add each kept position's
 * probability from this step to its accumulator (shared mode: summed over the group's query
 * heads). The authors' code attends over its k-entry cache plus the new token and evicts
 * afterwards (k+1 rows per step); evicting first keeps every method here at k rows per step.
 * State: accumulators f32 and a kept flag per (layer, unit, position), [layer][unit][n_ctx].
 * Prefill is dense: its attention probabilities are added column by column (ds_h2o_track), so
 * after a prefill of P tokens acc[t] = sum over rows i >= t of p_i(t), the dense column sums the
 * authors' code starts from; eviction starts at the first sparse step.
 * FORK: the eval harness prefills one dense session and forks it per method. The sums cannot be
 * recomputed from the cache (they need every layer's queries of every prompt row), so a dense
 * session keeps them when asked (ds_sparse_opts.track_h2o; eval sets it when h2o is among the
 * methods) and ds_h2o_fork copies them; an h2o parent's state is copied likewise. */
#include "sparse.h"
#include "ds_kernels.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- Quest */

static uint16_t *quest_meta(const ds_session *s, int layer, int kvh) {
    const ds_model_info *c = &s->m->info;
    return s->sp_quest + ((size_t)layer * c->n_head_kv + kvh) * (size_t)s->sp_quest_pages * 2 * c->head_dim;
}

ds_status ds_quest_init(ds_session *s) {
    const ds_model_info *c = &s->m->info;
    s->sp_quest_pages = (s->n_ctx + DS_QUEST_PAGE - 1) / DS_QUEST_PAGE;
    size_t n = (size_t)c->n_layer * c->n_head_kv * s->sp_quest_pages * 2 * c->head_dim;
    s->sp_quest = ds_alloc(n * sizeof(uint16_t));
    if (!s->sp_quest) return ds_error(DS_ERR_OOM, "out of memory for Quest's page bounds");
    s->bytes += n * sizeof(uint16_t);
    return DS_OK;
}

/* Bounds of the page holding `pos` over its rows [page start, pos], from the K cache (which
 * forward_chunk has already written for pos). */
void ds_quest_append(ds_session *s, int layer, int pos) {
    const ds_model_info *c = &s->m->info;
    const int hd = c->head_dim, page = pos / DS_QUEST_PAGE, t0 = page * DS_QUEST_PAGE;
    float mn[512], mx[512], x[512];
    for (int h = 0; h < c->n_head_kv; h++) {
        const uint16_t *K = s->k_cache + ((size_t)layer * c->n_head_kv + h) * s->n_ctx * hd;
        ds_fp16_to_fp32_row(K + (size_t)t0 * hd, mn, hd);
        memcpy(mx, mn, sizeof(float) * (size_t)hd);
        for (int t = t0 + 1; t <= pos; t++) {
            ds_fp16_to_fp32_row(K + (size_t)t * hd, x, hd);
            for (int i = 0; i < hd; i++) {
                mn[i] = x[i] < mn[i] ? x[i] : mn[i];
                mx[i] = x[i] > mx[i] ? x[i] : mx[i];
            }
        }
        uint16_t *meta = quest_meta(s, layer, h) + (size_t)page * 2 * hd;
        ds_fp32_to_fp16_row(mn, meta, hd);   /* exact: fp16 values */
        ds_fp32_to_fp16_row(mx, meta + hd, hd);
    }
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int ds_quest_select(const float *q, int G, int hd, const uint16_t *meta, int n, int k, float *scores,
                    int32_t *pages, int32_t *idx, void *topk_scratch) {
    const int cp = (n - 1) / DS_QUEST_PAGE, want = (k - 1 + DS_QUEST_PAGE - 1) / DS_QUEST_PAGE;
    int m = 0;
    if (want >= cp) {   /* the budget covers every complete page: all of [0, n) */
        for (int t = 0; t < n; t++) idx[m++] = t;
        return m;
    }
    if (want > 0) {
        float b[1024];   /* min [hd], max [hd] */
        for (int p = 0; p < cp; p++) {
            ds_fp16_to_fp32_row(meta + (size_t)p * 2 * hd, b, 2 * hd);
            float sc = 0;
            for (int g = 0; g < G; g++) {
                const float *qg = q + (size_t)g * hd;
                float sg = 0;
                for (int i = 0; i < hd; i++) {
                    float lo = qg[i] * b[i], hi = qg[i] * b[hd + i];
                    sg += lo > hi ? lo : hi;
                }
                sc += sg;
            }
            scores[p] = sc;
        }
        int np = ds_topk(scores, cp, want, pages, topk_scratch);
        qsort(pages, (size_t)np, sizeof(int32_t), cmp_i32);   /* rows in cache order */
        for (int j = 0; j < np; j++)
            for (int t = pages[j] * DS_QUEST_PAGE; t < (pages[j] + 1) * DS_QUEST_PAGE; t++) idx[m++] = t;
    }
    for (int t = cp * DS_QUEST_PAGE; t < n; t++) idx[m++] = t;   /* the current page, current token included */
    return m;
}

int ds_quest_select_unit(ds_session *s, int layer, int kvh, const float *q, int G, int n, int k, int ith,
                         int32_t *idx) {
    return ds_quest_select(q, G, s->m->info.head_dim, quest_meta(s, layer, kvh), n, k,
                           s->sp_scores + (size_t)ith * s->sp_scores_stride, s->sp_idx2 + (size_t)ith * s->n_ctx, idx,
                           s->sp_topk + (size_t)ith * s->sp_topk_bytes);
}

/* ---------------------------------------------------------------- H2O */

int ds_h2o_recent(int k) { return k < 1 ? 1 : (k + 4) / 5; }

ds_status ds_h2o_init(ds_session *s) {
    const ds_model_info *c = &s->m->info;
    s->sp_h2o_units = s->opts.sparse.per_head ? c->n_head : c->n_head_kv;
    size_t n = (size_t)c->n_layer * s->sp_h2o_units * s->n_ctx, ml = (size_t)s->n_batch * c->n_head * 2;
    s->sp_h2o_acc = ds_alloc(n * sizeof(float));
    s->sp_h2o_kept = ds_alloc(n);
    s->sp_h2o_ml = ds_alloc(ml * sizeof(float));
    if (!s->sp_h2o_acc || !s->sp_h2o_kept || !s->sp_h2o_ml) return ds_error(DS_ERR_OOM, "out of memory for H2O's state");
    s->bytes += n * (sizeof(float) + 1) + ml * sizeof(float);
    return DS_OK;
}

/* A position (re)written into the cache starts kept with nothing accumulated: this also resets
 * the state of positions reused after ds_session_truncate. (Sums that dropped rows added to the
 * positions before the truncation point stay: a running sum cannot be rolled back. Truncating to
 * 0, as perplexity windows do, resets everything.) */
void ds_h2o_append(ds_session *s, int layer, int pos) {
    for (int u = 0; u < s->sp_h2o_units; u++) {
        size_t off = ((size_t)layer * s->sp_h2o_units + u) * s->n_ctx + pos;
        s->sp_h2o_acc[off] = 0;
        s->sp_h2o_kept[off] = 1;
    }
}

/* acc[t] += sum over the G heads of exp(q_g . K[t] - mx_g) * inv_l_g for the positions idx[i]
 * (or i when idx is NULL), i in [begin, end): the probabilities one query row gave them. The one
 * formula for decode steps and the dense tracking pass, so that both build the same sums. */
static void add_probs(const float *q, int G, int hd, const uint16_t *K, const int32_t *idx, int begin, int end,
                      const float *mx, const float *inv_l, float *acc) {
    for (int i = begin; i < end; i++) {
        int t = idx ? idx[i] : i;
        const uint16_t *kr = K + (size_t)t * hd;
        float p = 0;
        for (int g = 0; g < G; g++) p += expf(ds_dot_f16_f32(kr, q + (size_t)g * hd, hd) - mx[g]) * inv_l[g];
        acc[t] += p;
    }
}

/* Evict down to k kept positions among [0, n): the non-recent kept ones with the largest sums
 * stay. Candidates' sums go to the thread's score buffer, their positions to sp_idx. */
static void evict(ds_session *s, float *acc, uint8_t *kept, int n, int k, int ith) {
    int cnt = 0;
    for (int t = 0; t < n; t++) cnt += kept[t];
    if (cnt <= k) return;
    const int lim = n - ds_h2o_recent(k);
    float *val = s->sp_scores + (size_t)ith * s->sp_scores_stride;
    int32_t *pos = s->sp_idx + (size_t)ith * s->n_ctx, *win = s->sp_idx2 + (size_t)ith * s->n_ctx;
    int nc = 0;
    for (int t = 0; t < lim; t++)
        if (kept[t]) { val[nc] = acc[t]; pos[nc++] = t; }
    /* cnt <= nc + recent, recent <= ceil(k/5) <= k, so keep >= 0 */
    int keep = nc - (cnt - k);
    DS_ASSERT(keep >= 0);
    for (int i = 0; i < nc; i++) kept[pos[i]] = 0;
    int w = ds_topk(val, nc, keep, win, s->sp_topk + (size_t)ith * s->sp_topk_bytes);
    for (int j = 0; j < w; j++) kept[pos[win[j]]] = 1;
}

/* One step of one state unit: the G query heads q [G][hd] share the unit's kept set. */
static void h2o_unit(ds_session *s, int layer, int u, const float *q, int G, const uint16_t *K, const uint16_t *V,
                     int n, int k, bool sparse_step, int ith, float *out) {
    const int hd = s->m->info.head_dim;
    const size_t off = ((size_t)layer * s->sp_h2o_units + u) * s->n_ctx;
    float *acc = s->sp_h2o_acc + off;
    uint8_t *kept = s->sp_h2o_kept + off;
    if (sparse_step) evict(s, acc, kept, n, k, ith);
    int32_t *idx = s->sp_idx + (size_t)ith * s->n_ctx;
    int m = 0;
    for (int t = 0; t < n; t++)
        if (kept[t]) idx[m++] = t;
    float *a = s->sp_acc + (size_t)ith * s->sp_acc_stride, inv_l[16];
    ds_attn_stats st;
    /* nothing evicted (n <= k, or before --ds-min-context): exactly the dense fallback's call */
    if (m == n) ds_attn_partial(q, G, hd, K, V, NULL, 0, n, a, &st);
    else ds_attn_partial(q, G, hd, K, V, idx, 0, m, a, &st);
    ds_attn_merge(1, G, hd, a, &st, out);
    for (int g = 0; g < G; g++) inv_l[g] = 1.0f / st.l[g];
    add_probs(q, G, hd, K, idx, 0, m, st.m, inv_l, acc);
}

void ds_h2o_group(ds_session *s, int layer, int kvh, const float *q, const uint16_t *K, const uint16_t *V,
                  float *out, int n, int ith) {
    const ds_model_info *c = &s->m->info;
    const ds_sparse_opts *o = &s->opts.sparse;
    const int hd = c->head_dim, G = c->n_head / c->n_head_kv;
    const int k = ds_sparse_k(s, n);
    const bool sparse_step = !(n <= k || n < o->min_context);
    if (!o->per_head) h2o_unit(s, layer, kvh, q, G, K, V, n, k, sparse_step, ith, out);
    else
        for (int g = 0; g < G; g++)
            h2o_unit(s, layer, kvh * G + g, q + (size_t)g * hd, 1, K, V, n, k, sparse_step, ith, out + (size_t)g * hd);
}

bool ds_h2o_tracks(const ds_session *s, int layer, int T) {
    if (!s->sp_h2o_acc) return false;
    if (s->opts.sparse.method == DS_ATTN_DENSE) return true;   /* track_h2o: every layer, every step */
    return ds_sparse_layer(s, layer) && T > 1 && !s->opts.sparse.sparse_prefill;
}

/* The tracking pass runs after the dense attention of T rows (positions pos0..pos0+T-1). Work
 * unit = (state unit, block of TRACK_COLS columns): each column's sum is owned by one thread and
 * receives the rows in increasing order, so the sums do not depend on the thread count or on how
 * the prefill was cut into chunks. It recomputes q.K (one more pass of the attention's scores),
 * normalised with the row's max and sum that the attention kernel returned (s->sp_h2o_ml). */
#define TRACK_COLS 256

typedef struct {
    ds_session *s;
    int layer, T, pos0, n_blocks;
    _Atomic int next;
} track_task;

static void track_worker(void *arg, int ith, int nth) {
    (void)ith; (void)nth;
    track_task *a = arg;
    ds_session *s = a->s;
    const ds_model_info *c = &s->m->info;
    const int hd = c->head_dim, H = c->n_head, KVH = c->n_head_kv, G = H / KVH, U = s->sp_h2o_units;
    const bool per_head = U != KVH;
    const int end_all = a->pos0 + a->T;
    for (;;) {
        int w = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed);
        if (w >= U * a->n_blocks) break;
        int u = w / a->n_blocks, b = w % a->n_blocks;
        int kvh = per_head ? u / G : u, h0 = per_head ? u : kvh * G, ng = per_head ? 1 : G;
        int c0 = b * TRACK_COLS, c1 = DS_MIN(c0 + TRACK_COLS, end_all);
        float *acc = s->sp_h2o_acc + ((size_t)a->layer * U + u) * s->n_ctx;
        const uint16_t *K = s->k_cache + ((size_t)a->layer * KVH + kvh) * s->n_ctx * hd;
        for (int tk = 0; tk < a->T; tk++) {
            int i = a->pos0 + tk;
            if (i < c0) continue;
            float mx[16], inv_l[16];
            for (int g = 0; g < ng; g++) {
                const float *ml = s->sp_h2o_ml + ((size_t)tk * H + h0 + g) * 2;
                mx[g] = ml[0];
                inv_l[g] = 1.0f / ml[1];
            }
            add_probs(s->q + ((size_t)tk * H + h0) * hd, ng, hd, K, NULL, c0, DS_MIN(c1, i + 1), mx, inv_l, acc);
        }
    }
}

void ds_h2o_track(ds_session *s, int layer, int T) {
    track_task a;
    memset(&a, 0, sizeof a);
    a.s = s; a.layer = layer; a.T = T; a.pos0 = s->pos;
    a.n_blocks = (s->pos + T + TRACK_COLS - 1) / TRACK_COLS;
    atomic_init(&a.next, 0);
    ds_pool_run(s->pool, track_worker, &a);
}

ds_status ds_h2o_fork(ds_session *d, const ds_session *src) {
    if (!d->sp_h2o_acc || src->pos == 0) return DS_OK;
    if (!src->sp_h2o_acc)
        return ds_error(DS_ERR_ARG, "ds_session_fork: h2o continues from accumulated attention that this session "
                        "did not keep: create the parent with sparse.track_h2o = 1 (or as an h2o session)");
    if (src->sp_h2o_units != d->sp_h2o_units)
        return ds_error(DS_ERR_ARG, "ds_session_fork: the parent kept H2O sums %s, the fork needs them %s",
                        src->opts.sparse.per_head ? "per query head" : "per KV group",
                        d->opts.sparse.per_head ? "per query head" : "per KV group");
    const int L = d->m->info.n_layer, U = d->sp_h2o_units;
    for (int l = 0; l < L; l++) {
        /* an h2o parent keeps no sums in its dense layers */
        if (src->opts.sparse.method == DS_ATTN_H2O && ds_sparse_layer(d, l) && !ds_sparse_layer(src, l))
            return ds_error(DS_ERR_ARG, "ds_session_fork: layer %d is dense in the h2o parent, so it has no H2O sums", l);
        for (int u = 0; u < U; u++) {
            size_t so = ((size_t)l * U + u) * src->n_ctx, dof = ((size_t)l * U + u) * d->n_ctx;
            memcpy(d->sp_h2o_acc + dof, src->sp_h2o_acc + so, sizeof(float) * (size_t)src->pos);
            memcpy(d->sp_h2o_kept + dof, src->sp_h2o_kept + so, (size_t)src->pos);
        }
    }
    return DS_OK;
}
