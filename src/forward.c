/* forward.c — the session (one sequence's timeline) and the CPU layer loop.
 *
 * Per layer, for T tokens at positions pos..pos+T-1 (prefill chunk, or T = 1 for decode):
 *   xn = rmsnorm(x) -> q,k,v = W{q,k,v} xn (+bias) -> rope(q,k) -> append k,v to the fp16 cache
 *   -> attention -> x += Wo att -> xn = rmsnorm(x) -> x += Wdown (silu(Wgate xn) * Wup xn)
 * then logits = Wout rmsnorm(x). Matrix products quantise the activation once into the weight
 * type's dot format and run on the thread pool; each parallel region is one ds_pool_run. */
#include "forward.h"
#include "calibrate.h"
#include "gpu_session.h"
#include "sparse.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define ATTN_CHUNK 256    /* positions per split-KV work unit in decode */
#define SPLIT_MAX_KVH 64  /* KV heads a split sparse decode tracks (more: one unit per head) */
#define MM_CHUNK_ROWS 16  /* weight rows per work unit */
#define AMX_MIN_T 16      /* prefill chunks of at least this many tokens use the AMX tiles (Q4_K, Q6_K) */

ds_session_opts ds_session_default_opts(void) {
    ds_session_opts o;
    memset(&o, 0, sizeof o);
    o.sparse = ds_sparse_default_opts();
    return o;
}

/* ---------------------------------------------------------------- small ops */

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * inv * w[i];
}

/* Rotate pairs of one head in place: adjacent (2i, 2i+1) for llama-arch GGUFs, (i, i+hd/2)
 * for NEOX-style (qwen2). cs/sn: [hd/2] for this position. */
static void rope_head(float *v, int hd, int neox, const float *cs, const float *sn) {
    int half = hd / 2;
    if (neox) {
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cs[i] - b * sn[i];
            v[i + half] = a * sn[i] + b * cs[i];
        }
    } else {
        for (int i = 0; i < half; i++) {
            float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * cs[i] - b * sn[i];
            v[2 * i + 1] = a * sn[i] + b * cs[i];
        }
    }
}

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

/* ---------------------------------------------------------------- matmul region */

/* Up to three matrices sharing one input (q/k/v, or gate/up) in one parallel region: the row
 * space of all of them is cut into chunks handed out dynamically. */
typedef struct {
    int n_mats;
    const ds_matrix *W[3];
    float *out[3];          /* [T][rows] */
    const uint8_t *xq[3];   /* input quantised to each matrix's dot type: [T][xq_stride] */
    size_t xq_stride[3];
    const void *amx[3];     /* Q4_K / Q6_K matrices with T >= 16 on AMX: the packed activations, else NULL */
    float *amx_acc;         /* AMX: [n_threads][amx_acc_stride] accumulators */
    size_t amx_acc_stride;
    const float *xf;        /* fp32 input [T][cols] (precise mode) */
    float *scratch;         /* precise mode: [n_threads][cols] dequantised row */
    int T;
    int chunks[3], total;
    _Atomic int next;
} mm_task;

static void mm_worker(void *arg, int ith, int nth) {
    (void)nth;
    mm_task *t = arg;
    for (;;) {
        int c = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed);
        if (c >= t->total) break;
        int m = 0;
        while (c >= t->chunks[m]) c -= t->chunks[m++];
        const ds_matrix *W = t->W[m];
        int r0 = c * MM_CHUNK_ROWS, r1 = DS_MIN(r0 + MM_CHUNK_ROWS, (int)W->rows);
        float *out = t->out[m];
        if (t->amx[m]) {   /* the chunk's rows times all T tokens on the tiles */
            (W->type == DS_TYPE_Q4_K ? ds_amx_rows_q4_K : ds_amx_rows_q6_K)(
                W->cols, W->data + (size_t)r0 * W->row_bytes, W->row_bytes, r1 - r0, t->amx[m], t->T, out + r0,
                (size_t)W->rows, t->amx_acc + (size_t)ith * t->amx_acc_stride);
            continue;
        }
        if (t->xf) {
            float *row = t->scratch + (size_t)ith * W->cols;
            for (int r = r0; r < r1; r++) {
                ds_dequant_row(W->type, W->data + (size_t)r * W->row_bytes, row, W->cols);
                for (int tk = 0; tk < t->T; tk++) {
                    const float *x = t->xf + (size_t)tk * W->cols;
                    double s = 0;
                    for (int64_t i = 0; i < W->cols; i++) s += (double)row[i] * x[i];
                    out[(size_t)tk * W->rows + r] = (float)s;
                }
            }
            continue;
        }
        for (int tk = 0; tk < t->T; tk++) {
            const uint8_t *xq = t->xq[m] + (size_t)tk * t->xq_stride[m];
            ds_vec_dot_rows(W->type, W->cols, W->data + (size_t)r0 * W->row_bytes, W->row_bytes,
                            r1 - r0, xq, out + (size_t)tk * W->rows + r0);
        }
    }
}

/* The widest activation row quantize_for writes for model m: each matrix's input quantised to
 * its type's dot type (8-bit blocks for the quantised types, 1.06-1.25 bytes per element; f32
 * for f32/f16/bf16 weights, 4 bytes per element). */
static size_t xq_row_bytes(const ds_model *m) {
    size_t best = 0;
    for (int l = 0; l < m->info.n_layer; l++) {
        const ds_matrix *w[DS_LAYER_MATRICES];
        ds_layer_matrices(&m->layers[l], w);
        for (int i = 0; i < DS_LAYER_MATRICES; i++)
            best = DS_MAX(best, ds_row_bytes(ds_type_info_get(w[i]->type)->dot_type, w[i]->cols));
    }
    best = DS_MAX(best, ds_row_bytes(ds_type_info_get(m->output.type)->dot_type, m->output.cols));
    return best + 64;
}

/* Quantise x [T][cols] into the dot type of W (cached per type within one call). */
static const uint8_t *quantize_for(ds_session *s, const ds_matrix *W, const float *x, int T,
                                   size_t *stride) {
    ds_type dt = ds_type_info_get(W->type)->dot_type;
    for (int i = 0; i < s->n_xq_used; i++)
        if (s->xq_type[i] == dt && s->xq_cols[i] == W->cols && s->xq_src[i] == x) {
            *stride = s->xq_stride[i];
            return s->xq[i];
        }
    int slot = s->n_xq_used < 2 ? s->n_xq_used++ : 1;
    size_t rb = ds_row_bytes(dt, W->cols);
    for (int tk = 0; tk < T; tk++)
        ds_quantize_row(dt, x + (size_t)tk * W->cols, s->xq[slot] + (size_t)tk * rb, W->cols);
    s->xq_type[slot] = dt; s->xq_cols[slot] = W->cols; s->xq_src[slot] = x; s->xq_stride[slot] = rb;
    *stride = rb;
    return s->xq[slot];
}

static void matmul(ds_session *s, int n, const ds_matrix **W, float **out, const float *x, int T) {
    mm_task t;
    memset(&t, 0, sizeof t);
    t.n_mats = n;
    t.T = T;
    s->n_xq_used = 0;
    for (int i = 0; i < n; i++) {
        t.W[i] = W[i];
        t.out[i] = out[i];
        if (!s->precise) t.xq[i] = quantize_for(s, W[i], x, T, &t.xq_stride[i]);
        if (!s->precise && s->amx_x && T >= AMX_MIN_T && (W[i]->type == DS_TYPE_Q4_K || W[i]->type == DS_TYPE_Q6_K)) {
            /* the inputs of one call share x: pack its Q8_K rows once */
            for (int j = 0; j < i && !t.amx[i]; j++) if (t.amx[j] && t.xq[j] == t.xq[i]) t.amx[i] = t.amx[j];
            if (!t.amx[i]) {
                ds_amx_pack_q8K(t.xq[i], t.xq_stride[i], T, W[i]->cols, s->amx_x);
                t.amx[i] = s->amx_x;
            }
        }
        t.chunks[i] = (int)((W[i]->rows + MM_CHUNK_ROWS - 1) / MM_CHUNK_ROWS);
        t.total += t.chunks[i];
    }
    if (s->precise) { t.xf = x; t.scratch = s->precise_row; }
    t.amx_acc = s->amx_acc;
    t.amx_acc_stride = s->amx_acc_stride;
    atomic_init(&t.next, 0);
    ds_pool_run(s->pool, mm_worker, &t);
}

/* ---------------------------------------------------------------- attention region */

typedef struct {
    ds_session *s;
    int layer, T, pos0;
    int n_chunks;          /* decode: split-KV chunks per KV head */
    _Atomic int next;
    /* Sparse decode split in two: KV head h's selection (taken in order from `next`), then
     * its slices j of rows (ds_sparse_slice_range: the slices ds_sparse_group sums too), each
     * claimed once from next_slice[h] after ready[h] says head h is selected (rows + 2; 1:
     * attended densely).
     * A KV head's gathers are latency-bound, so one unit per head left threads idle (3 heads
     * on 2 threads: 2 rounds) and the slices balance them. Once the selections are taken, a
     * thread attends the slices of the heads it selected first (with --ds-prefetch its label
     * scans brought those rows into this core's cache, ds_row_prefetch), then helps with the
     * other heads' slices left, in head order. The thread that finishes a head's last slice
     * merges the head's partials (slices_done), so the merges run in parallel, on a core that
     * holds some of them, instead of one after another after the pool run. */
    int split, slices;
    _Atomic int ready[SPLIT_MAX_KVH];
    _Atomic int next_slice[SPLIT_MAX_KVH];
    _Atomic int slices_done[SPLIT_MAX_KVH];
} attn_task;

/* Split decode: attend the unclaimed slices of KV head h's selection (m rows; m <= 0: none). */
static void attend_slices(attn_task *a, int h, int m) {
    ds_session *s = a->s;
    const ds_model_info *c = &s->m->info;
    const int hd = c->head_dim, KVH = c->n_head_kv, G = c->n_head / KVH;
    const size_t head_stride = (size_t)s->n_ctx * hd, kv = ((size_t)a->layer * KVH + h) * head_stride;
    for (;;) {
        const int j = atomic_fetch_add_explicit(&a->next_slice[h], 1, memory_order_relaxed);
        if (j >= a->slices) return;
        int b, e;
        ds_sparse_slice_range(j, a->slices, m, &b, &e);
        if (b < e) {   /* else attended densely, or fewer rows than slices */
            const size_t pi = (size_t)h * a->slices + j;
            ds_attn_partial(s->q + (size_t)h * G * hd, G, hd, s->k_cache + kv, s->v_cache + kv,
                            s->sp_idx + (size_t)h * s->n_ctx, b, e, s->part_acc + pi * G * hd, &s->part_st[pi]);
        }
        /* the last slice done (acq_rel: every other slice's partials are visible) merges them */
        if (atomic_fetch_add_explicit(&a->slices_done[h], 1, memory_order_acq_rel) + 1 == a->slices && m > 0)
            ds_attn_merge(ds_sparse_slices_used(a->slices, m), G, hd, s->part_acc + (size_t)h * a->slices * G * hd,
                          s->part_st + (size_t)h * a->slices, s->att + (size_t)h * G * hd);
    }
}

static void attn_worker(void *arg, int ith, int nth) {
    (void)nth;
    attn_task *a = arg;
    ds_session *s = a->s;
    const ds_model_info *c = &s->m->info;
    const int hd = c->head_dim, KVH = c->n_head_kv, G = c->n_head / KVH;
    const size_t head_stride = (size_t)s->n_ctx * hd;
    const uint16_t *Kl = s->k_cache + (size_t)a->layer * KVH * head_stride;
    const uint16_t *Vl = s->v_cache + (size_t)a->layer * KVH * head_stride;
    const bool sparse = ds_sparse_layer(s, a->layer);
    /* a stateful method (H2O) simulated over a chunk: one unit per KV group, its rows in order */
    const bool seq = sparse && a->T > 1 && s->opts.sparse.sparse_prefill && ds_sparse_sequential(s);
    if (a->split) {
        int mine[SPLIT_MAX_KVH], m_of[SPLIT_MAX_KVH], n_mine = 0;
        for (;;) {   /* the selections first: a thread free early attends while others still select */
            const int u = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed);
            if (u >= KVH) break;
            const int m = ds_sparse_select(s, a->layer, 0, u, a->pos0 + 1, ith, s->sp_idx + (size_t)u * s->n_ctx);
            atomic_store_explicit(&a->ready[u], m + 2, memory_order_release);
            mine[n_mine] = u;
            m_of[n_mine++] = m;
        }
        for (int i = n_mine - 1; i >= 0; i--) attend_slices(a, mine[i], m_of[i]);   /* own, latest first */
        for (int h = 0; h < KVH; h++) {   /* then the slices left, waiting for selections still running */
            if (atomic_load_explicit(&a->next_slice[h], memory_order_relaxed) >= a->slices) continue;
            int v, spins = 0;
            const int oversub = ds_pool_oversubscribed(s->pool);
            while ((v = atomic_load_explicit(&a->ready[h], memory_order_acquire)) == 0) ds_spin_step(&spins, oversub);
            attend_slices(a, h, v - 2);
        }
        return;
    }
    int total = seq ? KVH : a->T == 1 && !sparse ? KVH * a->n_chunks : KVH * a->T;
    float qbuf[16 * 512];
    for (;;) {
        int u = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed);
        if (u >= total) break;
        if (seq) {
            for (int tk = 0; tk < a->T; tk++) ds_sparse_group(s, a->layer, tk, u, a->pos0 + tk + 1, ith);
        } else if (sparse && (a->T == 1 || s->opts.sparse.sparse_prefill)) {
            /* unit = (token, kv group): selection + exact attention over the selected rows */
            int tk = u / KVH, h = u % KVH;
            ds_sparse_group(s, a->layer, tk, h, a->pos0 + tk + 1, ith);
        } else if (a->T == 1) {            /* decode: unit = (kv head, chunk of positions) */
            int h = u / a->n_chunks, ch = u % a->n_chunks, n = a->pos0 + 1;
            int b = ch * ATTN_CHUNK, e = DS_MIN(b + ATTN_CHUNK, n);
            const float *q = s->q + (size_t)h * G * hd;     /* heads h*G .. h*G+G-1 */
            ds_attn_partial(q, G, hd, Kl + h * head_stride, Vl + h * head_stride, NULL, b, e,
                            s->part_acc + (size_t)u * G * hd, &s->part_st[u]);
        } else {                     /* prefill: unit = (token, kv head), whole causal prefix */
            int tk = u / KVH, h = u % KVH, n = a->pos0 + tk + 1;
            const float *q = s->q + (size_t)tk * c->n_head * hd + (size_t)h * G * hd;
            float *acc = qbuf;  /* reuse as accumulator; output normalised into att */
            ds_attn_stats st;
            ds_attn_partial(q, G, hd, Kl + h * head_stride, Vl + h * head_stride, NULL, 0, n, acc, &st);
            ds_attn_merge(1, G, hd, acc, &st, s->att + (size_t)tk * c->n_head * hd + (size_t)h * G * hd);
            if (s->sp_h2o_ml)   /* the row's softmax max and sum, for H2O's column sums */
                for (int g = 0; g < G; g++) {
                    float *ml = s->sp_h2o_ml + ((size_t)tk * c->n_head + (size_t)h * G + g) * 2;
                    ml[0] = st.m[g];
                    ml[1] = st.l[g];
                }
        }
    }
}

static void attention(ds_session *s, int layer, int T) {
    const ds_model_info *c = &s->m->info;
    double t0 = ds_time_s();
    attn_task a;
    memset(&a, 0, sizeof a);
    a.s = s; a.layer = layer; a.T = T; a.pos0 = s->pos;
    a.n_chunks = (s->pos + 1 + ATTN_CHUNK - 1) / ATTN_CHUNK;
    atomic_init(&a.next, 0);
    if (T == 1 && ds_sparse_layer(s, layer) && ds_sparse_split_ok(s) && c->n_head_kv <= SPLIT_MAX_KVH) {
        /* slices of the k selected rows, within the split-KV partials' room (forward_alloc) */
        a.split = 1;
        a.slices = ds_sparse_slices(s, s->pos + 1);
        for (int h = 0; h < c->n_head_kv; h++) {
            atomic_init(&a.ready[h], 0);
            atomic_init(&a.next_slice[h], 0);
            atomic_init(&a.slices_done[h], 0);
        }
    }
    ds_pool_run(s->pool, attn_worker, &a);
    if (T == 1 && !ds_sparse_layer(s, layer)) {
        const int hd = c->head_dim, KVH = c->n_head_kv, G = c->n_head / KVH;
        for (int h = 0; h < KVH; h++)
            ds_attn_merge(a.n_chunks, G, hd, s->part_acc + (size_t)h * a.n_chunks * G * hd,
                          s->part_st + (size_t)h * a.n_chunks, s->att + (size_t)h * G * hd);
    }
    if (ds_h2o_tracks(s, layer, T)) {
        if (T == 1 && !ds_sparse_layer(s, layer)) {
            /* split-KV decode: the row's max and sum from its chunks' (as ds_attn_merge does) */
            const int KVH = c->n_head_kv, G = c->n_head / KVH;
            for (int h = 0; h < KVH; h++)
                for (int g = 0; g < G; g++) {
                    const ds_attn_stats *st = s->part_st + (size_t)h * a.n_chunks;
                    float mx = -INFINITY, l = 0;
                    for (int i = 0; i < a.n_chunks; i++) mx = st[i].m[g] > mx ? st[i].m[g] : mx;
                    for (int i = 0; i < a.n_chunks; i++)
                        if (st[i].l[g] != 0) l += st[i].l[g] * expf(st[i].m[g] - mx);
                    s->sp_h2o_ml[((size_t)h * G + g) * 2] = mx;
                    s->sp_h2o_ml[((size_t)h * G + g) * 2 + 1] = l;
                }
        }
        ds_h2o_track(s, layer, T);
    }
    s->t_attn += ds_time_s() - t0;
}

/* ---------------------------------------------------------------- the layer loop */

static void forward_chunk(ds_session *s, const int32_t *tokens, int T, float *logits_out, bool all) {
    const ds_model *m = s->m;
    const ds_model_info *c = &m->info;
    const int E = c->n_embd, hd = c->head_dim, H = c->n_head, KVH = c->n_head_kv, F = c->n_ff;
    const int half = hd / 2;

    for (int t = 0; t < T; t++)
        ds_dequant_row(m->tok_embd.type, m->tok_embd.data + (size_t)tokens[t] * m->tok_embd.row_bytes,
                       s->x + (size_t)t * E, E);
    for (int t = 0; t < T; t++) {
        float p = (float)(s->pos + t);
        for (int i = 0; i < half; i++) {
            float ang = p * m->rope_inv_freq[i];
            s->rope_cos[t * half + i] = cosf(ang);
            s->rope_sin[t * half + i] = sinf(ang);
        }
    }

    for (int l = 0; l < c->n_layer; l++) {
        const ds_layer_weights *L = &m->layers[l];
        for (int t = 0; t < T; t++)
            rmsnorm(s->xn + (size_t)t * E, s->x + (size_t)t * E, L->attn_norm, E, c->rms_eps);
        const ds_matrix *qkv[3] = {&L->wq, &L->wk, &L->wv};
        float *qkv_out[3] = {s->q, s->k, s->v};
        matmul(s, 3, qkv, qkv_out, s->xn, T);

        const size_t head_stride = (size_t)s->n_ctx * hd;
        uint16_t *Kl = s->k_cache + (size_t)l * KVH * head_stride;
        uint16_t *Vl = s->v_cache + (size_t)l * KVH * head_stride;
        const float scale = 1.0f / sqrtf((float)hd);
        if (L->bq)
            for (int t = 0; t < T; t++) {
                float *q = s->q + (size_t)t * H * hd, *k = s->k + (size_t)t * KVH * hd,
                      *v = s->v + (size_t)t * KVH * hd;
                for (int i = 0; i < H * hd; i++) q[i] += L->bq[i];
                for (int i = 0; i < KVH * hd; i++) { k[i] += L->bk[i]; v[i] += L->bv[i]; }
            }
        if (s->calib) ds_calib_acc_add_pre_rope(s->calib, l, s->q, s->k, T);
        for (int t = 0; t < T; t++) {
            float *q = s->q + (size_t)t * H * hd, *k = s->k + (size_t)t * KVH * hd;
            const float *cs = s->rope_cos + (size_t)t * half, *sn = s->rope_sin + (size_t)t * half;
            for (int h = 0; h < H; h++) rope_head(q + h * hd, hd, c->rope_neox, cs, sn);
            for (int h = 0; h < KVH; h++) rope_head(k + h * hd, hd, c->rope_neox, cs, sn);
        }
        if (s->calib) ds_calib_acc_add_post_rope(s->calib, l, s->q, s->k, T);
        for (int t = 0; t < T; t++) {
            float *q = s->q + (size_t)t * H * hd, *k = s->k + (size_t)t * KVH * hd,
                  *v = s->v + (size_t)t * KVH * hd;
            for (int i = 0; i < H * hd; i++) q[i] *= scale;
            for (int h = 0; h < KVH; h++) {
                size_t off = h * head_stride + (size_t)(s->pos + t) * hd;
                ds_fp32_to_fp16_row(k + h * hd, Kl + off, hd);
                ds_fp32_to_fp16_row(v + h * hd, Vl + off, hd);
            }
            ds_sparse_append(s, l, s->pos + t, k);
        }
        attention(s, l, T);

        const ds_matrix *wo[1] = {&L->wo};
        float *o_out[1] = {s->tmp};
        matmul(s, 1, wo, o_out, s->att, T);
        for (size_t i = 0; i < (size_t)T * E; i++) s->x[i] += s->tmp[i];

        for (int t = 0; t < T; t++)
            rmsnorm(s->xn + (size_t)t * E, s->x + (size_t)t * E, L->ffn_norm, E, c->rms_eps);
        const ds_matrix *gu[2] = {&L->w_gate, &L->w_up};
        float *gu_out[2] = {s->gate, s->up};
        matmul(s, 2, gu, gu_out, s->xn, T);
        for (size_t i = 0; i < (size_t)T * F; i++) s->gate[i] = silu(s->gate[i]) * s->up[i];
        const ds_matrix *wd[1] = {&L->w_down};
        float *d_out[1] = {s->tmp};
        matmul(s, 1, wd, d_out, s->gate, T);
        for (size_t i = 0; i < (size_t)T * E; i++) s->x[i] += s->tmp[i];
    }

    /* logits: every row when asked (perplexity), else only the last token's */
    int t0 = all ? 0 : T - 1;
    for (int t = t0; t < T; t++)
        rmsnorm(s->xn + (size_t)(t - t0) * E, s->x + (size_t)t * E, m->output_norm, E, c->rms_eps);
    const ds_matrix *wout[1] = {&m->output};
    float *lo[1] = {logits_out};
    matmul(s, 1, wout, lo, s->xn, T - t0);
    s->pos += T;
}

ds_status ds_session_eval(ds_session *s, const int32_t *tokens, int n, float *all_logits) {
    const ds_model_info *c = &s->m->info;
    if (n <= 0) return ds_error(DS_ERR_ARG, "ds_session_eval: no tokens");
    if (s->pos + n > s->n_ctx)
        return ds_error(DS_ERR_CONTEXT, "context full: %d tokens in the cache + %d new exceed the context of %d "
                        "(raise --ctx, up to the model's %d)", s->pos, n, s->n_ctx, c->n_ctx_train);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->n_vocab)
            return ds_error(DS_ERR_ARG, "token id %d at index %d is outside the vocabulary [0, %d)",
                            tokens[i], i, c->n_vocab);
    if (s->gpu) return ds_gpu_session_eval(s, tokens, n, all_logits);
    for (int i = 0; i < n; i += s->n_batch) {
        int T = DS_MIN(s->n_batch, n - i);
        if (all_logits) forward_chunk(s, tokens + i, T, all_logits + (size_t)i * c->n_vocab, true);
        else forward_chunk(s, tokens + i, T, s->logits, false);
    }
    if (all_logits) memcpy(s->logits, all_logits + (size_t)(n - 1) * c->n_vocab, sizeof(float) * c->n_vocab);
    return DS_OK;
}

/* ---------------------------------------------------------------- session lifetime */

ds_status ds_session_new(const ds_model *m, const ds_session_opts *opts, ds_session **out) {
    *out = NULL;
    const ds_model_info *c = &m->info;
    ds_session_opts o = opts ? *opts : ds_session_default_opts();
    if (o.n_ctx < 0 || o.n_threads < 0 || o.n_batch < 0)
        return ds_error(DS_ERR_ARG, "negative context, thread or batch size");
    if (o.n_ctx == 0) o.n_ctx = DS_MIN(c->n_ctx_train, 8192);
    if (o.n_ctx > c->n_ctx_train)
        ds_log(DS_LOG_INFO, "note: context %d exceeds the model's training context %d\n", o.n_ctx, c->n_ctx_train);
    if (o.n_ctx > (1 << 22)) return ds_error(DS_ERR_ARG, "context %d is too large", o.n_ctx);
    if (o.n_threads == 0) o.n_threads = ds_cpu_count();
    if (o.n_threads > 256) return ds_error(DS_ERR_ARG, "too many threads: %d", o.n_threads);
    if (o.n_batch == 0) o.n_batch = 512;
    if (o.n_batch > 8192) return ds_error(DS_ERR_ARG, "batch %d too large (max 8192)", o.n_batch);
    if (c->n_head / c->n_head_kv > 16 || c->head_dim > 512 || c->head_dim % 16)
        return ds_error(DS_ERR_UNSUPPORTED, "attention shape (group %d, head_dim %d) not supported",
                        c->n_head / c->n_head_kv, c->head_dim);

    ds_session *s = calloc(1, sizeof *s);
    if (!s) return ds_error(DS_ERR_OOM, "out of memory");
    s->m = m;
    if (o.sparse.min_context == DS_MIN_CONTEXT_AUTO)
        o.sparse.min_context = ds_sparse_auto_min_context(c, o.gpu);
    s->opts = o;
    s->n_ctx = o.n_ctx;
    s->n_batch = o.n_batch;
    s->precise = getenv("DSINFER_PRECISE") && atoi(getenv("DSINFER_PRECISE")) > 0;

    const size_t B = (size_t)o.n_batch, E = c->n_embd, hd = c->head_dim, H = c->n_head,
                 KVH = c->n_head_kv, F = c->n_ff, V = c->n_vocab, L = c->n_layer;
    const size_t kv_elems = L * KVH * (size_t)s->n_ctx * hd;
    size_t maxcols = DS_MAX(DS_MAX(E, F), H * hd);
    /* the memory plan: one allocation per buffer, sized once, nothing in the decode loop */
    struct { void **p; size_t bytes; } plan[] = {
        {(void **)&s->k_cache, kv_elems * 2},          /* [L][KVH][n_ctx][hd] fp16 */
        {(void **)&s->v_cache, kv_elems * 2},          /* [L][KVH][n_ctx][hd] fp16 */
        {(void **)&s->x, B * E * 4},                   /* [B][E] residual stream */
        {(void **)&s->xn, B * E * 4},                  /* [B][E] normed */
        {(void **)&s->tmp, B * E * 4},                 /* [B][E] projection output */
        {(void **)&s->q, B * H * hd * 4},              /* [B][H][hd] */
        {(void **)&s->k, B * KVH * hd * 4},            /* [B][KVH][hd] */
        {(void **)&s->v, B * KVH * hd * 4},            /* [B][KVH][hd] */
        {(void **)&s->att, B * H * hd * 4},            /* [B][H][hd] attention output */
        {(void **)&s->gate, B * F * 4},                /* [B][F] */
        {(void **)&s->up, B * F * 4},                  /* [B][F] */
        {(void **)&s->xq[0], B * xq_row_bytes(m)},    /* [B] activation rows in the weights' dot types */
        {(void **)&s->xq[1], B * xq_row_bytes(m)},
        {(void **)&s->logits, V * 4},                  /* [V] last token */
        {(void **)&s->rope_cos, B * hd / 2 * 4},       /* [B][hd/2] */
        {(void **)&s->rope_sin, B * hd / 2 * 4},
        /* split-KV partials: dense decode's chunks of ATTN_CHUNK (= 256) positions, or the
         * slices of a sparse selection (ds_sparse_slices); at most DS_SPLIT_SLICES_MAX either way */
        {(void **)&s->part_acc, KVH * (size_t)DS_SPLIT_SLICES_MAX(s->n_ctx) * H / KVH * hd * 4},
        {(void **)&s->part_st, KVH * (size_t)DS_SPLIT_SLICES_MAX(s->n_ctx) * sizeof(ds_attn_stats)},
        {(void **)&s->precise_row, (size_t)o.n_threads * maxcols * 4},
    };
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
        *plan[i].p = ds_alloc(plan[i].bytes);
        s->bytes += plan[i].bytes;
        if (!*plan[i].p) {
            ds_session_free(s);
            return ds_error(DS_ERR_OOM, "out of memory: session needs %.1f MiB (context %d)",
                            (double)s->bytes / (1 << 20), o.n_ctx);
        }
    }
    /* AMX prefill (quant_amx.c): one chunk's activations in the tiles' layout, sized for the
     * widest Q4_K / Q6_K input (CPU sessions: a GPU session's forward pass runs on the GPU) */
    int64_t amx_cols = 0;
    if (!s->precise && !o.gpu && ds_amx_available())
        for (int l = 0; l < c->n_layer; l++) {
            const ds_matrix *w[DS_LAYER_MATRICES];
            ds_layer_matrices(&m->layers[l], w);
            for (int i = 0; i < DS_LAYER_MATRICES; i++)
                if (w[i]->type == DS_TYPE_Q4_K || w[i]->type == DS_TYPE_Q6_K) amx_cols = DS_MAX(amx_cols, w[i]->cols);
        }
    if (amx_cols) {
        const size_t ab = ds_amx_pack_bytes((int)B, amx_cols);
        s->amx_acc_stride = ds_amx_acc_floats((int)B);   /* a multiple of 256 floats: 64-byte aligned */
        const size_t accb = (size_t)o.n_threads * s->amx_acc_stride * sizeof(float);
        s->amx_x = ds_alloc(ab);
        s->amx_acc = ds_alloc(accb);
        s->bytes += ab + accb;
        if (!s->amx_x || !s->amx_acc) {
            ds_session_free(s);
            return ds_error(DS_ERR_OOM, "out of memory: session needs %.1f MiB (context %d)",
                            (double)s->bytes / (1 << 20), o.n_ctx);
        }
    }
    s->pool = ds_pool_new(o.n_threads);
    if (!s->pool) { ds_session_free(s); return ds_error(DS_ERR_OOM, "cannot start threads"); }
    if (o.sparse.method != DS_ATTN_DENSE || o.sparse.track_h2o) {
        ds_status st = ds_sparse_init(s);
        if (st) { ds_session_free(s); return st; }
    }
    if (o.gpu) {
        ds_status st = ds_gpu_session_init(s);
        if (st) { ds_session_free(s); return st; }
    }
    *out = s;
    return DS_OK;
}

void ds_session_free(ds_session *s) {
    if (!s) return;
    if (s->pool) ds_pool_free(s->pool);
    ds_sparse_free(s);
    ds_gpu_session_free(s);
    void *bufs[] = {s->k_cache, s->v_cache, s->x, s->xn, s->tmp, s->q, s->k, s->v, s->att, s->gate,
                    s->up, s->xq[0], s->xq[1], s->logits, s->rope_cos, s->rope_sin, s->part_acc,
                    s->part_st, s->precise_row, s->amx_x, s->amx_acc};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ds_free(bufs[i]);
    free(s);
}

const float *ds_session_logits(const ds_session *s) { return s->logits; }
int ds_session_pos(const ds_session *s) { return s->pos; }
int ds_session_ctx(const ds_session *s) { return s->n_ctx; }
size_t ds_session_bytes(const ds_session *s) { return s->bytes; }
size_t ds_session_step_weight_bytes(const ds_session *s) { return s->opts.gpu ? s->gpu_wbytes : s->m->info.weight_bytes; }
double ds_session_attn_seconds(const ds_session *s) { return s->t_attn; }

ds_status ds_session_truncate(ds_session *s, int pos) {
    if (pos < 0 || pos > s->pos) return ds_error(DS_ERR_ARG, "cannot truncate to %d (session holds %d tokens)", pos, s->pos);
    s->pos = pos;
    return DS_OK;
}

ds_status ds_session_fork(const ds_session *src, const ds_sparse_opts *sparse, ds_session **out) {
    *out = NULL;
    ds_session_opts o = src->opts;
    if (sparse) o.sparse = *sparse;
    if (o.gpu) return ds_error(DS_ERR_UNSUPPORTED, "forking a GPU session is not supported yet");
    ds_session *d;
    ds_status st = ds_session_new(src->m, &o, &d);
    if (st) return st;
    const ds_model_info *c = &src->m->info;
    const int hd = c->head_dim, KVH = c->n_head_kv;
    const size_t rows = (size_t)src->pos * hd;
    for (int l = 0; l < c->n_layer; l++)
        for (int h = 0; h < KVH; h++) {
            size_t head = ((size_t)l * KVH + h) * (size_t)src->n_ctx * hd;
            size_t dhead = ((size_t)l * KVH + h) * (size_t)d->n_ctx * hd;
            memcpy(d->k_cache + dhead, src->k_cache + head, rows * 2);
            memcpy(d->v_cache + dhead, src->v_cache + head, rows * 2);
        }
    /* labels and Quest bounds from the copied keys; H2O state copied from src */
    if ((st = ds_sparse_fork(d, src)) != DS_OK) { ds_session_free(d); return st; }
    d->pos = src->pos;
    memcpy(d->logits, src->logits, sizeof(float) * (size_t)c->n_vocab);
    *out = d;
    return DS_OK;
}
