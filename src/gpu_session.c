/* gpu_session.c — a session whose forward pass runs on the GPU (opts.gpu): the model's weights
 * are dequantised to fp16 and uploaded once per session, and ds_session_eval goes through the
 * backend seam (backend.h) instead of the CPU layer loop. Sampling, tokenisation and the
 * session API stay on the CPU side, so run/chat/bench/perplexity work unchanged.
 *
 * Quantised matrices can stay quantised on the GPU when it has a kernel for their type (Q8_0,
 * Q4_1, Q4_K, Q6_K): decode reads 0.56-1.06 bytes per weight instead of 2. A fused matrix (QKV,
 * gate/up) is quantised only if all its parts are; everything else is dequantised to fp16.
 * By default a model's matrices stay quantised when their fp16 copy would take >= 1 GiB: below
 * that, decode is bound by kernel launches rather than by the weight stream, and the fp16 kernels
 * measured faster (SmolLM2-135M 1447 vs 1132 tok/s; Llama-2-7B Q4_K_M 207 vs 275 the other way;
 * bench/results/gpu-quant-weights-h200.md). DSINFER_GPU_QUANT=1 / 0 forces either way. */
#include "forward.h"
#include "gpu_session.h"
#include "sparse.h"

#include <stdlib.h>
#include <string.h>

#ifndef DS_CUDA

ds_status ds_gpu_session_init(ds_session *s) {
    (void)s;
    return ds_error(DS_ERR_UNSUPPORTED, "--gpu: this build has no GPU backend (rebuild with make CUDA=1)");
}
void ds_gpu_session_free(ds_session *s) { (void)s; }
ds_status ds_gpu_session_eval(ds_session *s, const int32_t *tokens, int n, float *all_logits) {
    (void)s; (void)tokens; (void)n; (void)all_logits;
    return ds_error(DS_ERR_UNSUPPORTED, "no GPU backend");
}

#else

#include "backend.h"

static ds_status gpu_err(int e, const char *what) {
    return ds_error(DS_ERR_UNSUPPORTED, "GPU %s failed: %s", what, ds_gpu_error_string(e));
}

/* Dequantise rows [0, m->rows) of a matrix to fp16 and upload them at element offset `at`
 * of weight `which`, in slabs of a few MB. */
static ds_status upload_matrix(ds_gpu_forward *f, int which, int layer, size_t at, const ds_matrix *m) {
    const int64_t cols = m->cols;
    int64_t slab = DS_MAX(1, (int64_t)(4u << 20) / cols);
    float *row = malloc(sizeof(float) * (size_t)cols);
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(slab * cols));
    ds_status st = DS_OK;
    if (!row || !h) { st = ds_error(DS_ERR_OOM, "out of memory"); goto done; }
    for (int64_t r0 = 0; r0 < m->rows; r0 += slab) {
        int64_t nr = DS_MIN(slab, m->rows - r0);
        for (int64_t r = 0; r < nr; r++) {
            ds_dequant_row(m->type, m->data + (size_t)(r0 + r) * m->row_bytes, row, cols);
            ds_fp32_to_fp16_row(row, h + (size_t)r * cols, (int)cols);
        }
        int e = ds_gpu_forward_upload(f, which, layer, at + (size_t)r0 * cols, h, (size_t)(nr * cols));
        if (e) { st = gpu_err(e, "weight upload"); goto done; }
    }
done:
    free(row);
    free(h);
    return st;
}

/* Whether matrices stay quantised where the GPU can: DSINFER_GPU_QUANT, else by fp16 size. */
static bool want_quant(const ds_model *m) {
    const char *env = getenv("DSINFER_GPU_QUANT");
    if (env && *env) return atoi(env) > 0;
    const ds_model_info *c = &m->info;
    double elems = (double)m->tok_embd.rows * (double)m->tok_embd.cols;
    if (!c->tied_embeddings) elems += (double)m->output.rows * (double)m->output.cols;
    for (int l = 0; l < c->n_layer; l++) {
        const ds_matrix *ms[DS_LAYER_MATRICES];
        ds_layer_matrices(&m->layers[l], ms);
        for (int i = 0; i < DS_LAYER_MATRICES; i++) elems += (double)ms[i]->rows * (double)ms[i]->cols;
    }
    return 2.0 * elems >= 1073741824.0;
}

/* Whether every matrix of the list can stay quantised on the GPU. */
static bool all_quant(const ds_matrix *const *ms, int n, bool enabled) {
    if (!enabled) return false;
    for (int i = 0; i < n; i++)
        if (!ds_gpu_forward_qtype_ok((int)ms[i]->type, (int)ms[i]->cols)) return false;
    return true;
}

/* Matrices ms[0..n) as consecutive row ranges of weight `which` (ms[i] starts after the rows of
 * ms[0..i)): quantised when all of them can be, else fp16. */
static ds_status upload_rows(ds_gpu_forward *f, int which, int layer, const ds_matrix *const *ms, int n, bool enabled,
                             size_t *held) {
    const bool q = all_quant(ms, n, enabled);
    size_t row = 0;
    for (int i = 0; i < n; i++) {
        const ds_matrix *m = ms[i];
        ds_status st = DS_OK;
        *held += q ? m->row_bytes * (size_t)m->rows : (size_t)2 * m->cols * (size_t)m->rows;
        if (q) {
            int e = ds_gpu_forward_upload_q(f, which, layer, (int)row, (int)m->rows, (int)m->type, m->data, m->row_bytes);
            if (e) st = gpu_err(e, "quantised weight upload");
        } else {
            st = upload_matrix(f, which, layer, row * (size_t)m->cols, m);
        }
        if (st) return st;
        row += (size_t)m->rows;
    }
    return DS_OK;
}

static ds_status upload_vec(ds_gpu_forward *f, int which, int layer, size_t at, const float *v, size_t n) {
    int e = ds_gpu_forward_upload(f, which, layer, at, v, n);
    return e ? gpu_err(e, "weight upload") : DS_OK;
}

/* Whether decode may run DS in this session: the method is ds or random and the context can reach
 * --ds-min-context. When it cannot (e.g. the GPU's automatic value beyond the model's context),
 * the forward is built dense: no label cache to write (~7% of a SmolLM2 step) for nothing. */
static bool gpu_ds_possible(const ds_session *s) {
    const ds_sparse_opts *o = &s->opts.sparse;
    return (o->method == DS_ATTN_DS || o->method == DS_ATTN_RANDOM) && o->min_context <= s->n_ctx;
}

ds_status ds_gpu_session_init(ds_session *s) {
    const ds_model *m = s->m;
    const ds_model_info *c = &m->info;
    const ds_sparse_opts *o = &s->opts.sparse;
    if (ds_backend_gpu_count() < 1) return ds_error(DS_ERR_UNSUPPORTED, "--gpu: no CUDA device is visible");
    /* random channels is DS with another channel set (s->sp_chan holds whichever applies) */
    const bool ds = o->method == DS_ATTN_DS || o->method == DS_ATTN_RANDOM;
    if (o->method != DS_ATTN_DENSE && !ds)
        return ds_error(DS_ERR_UNSUPPORTED, "--gpu runs the dense, ds and random methods only (got %s)", ds_attn_method_name(o->method));
    if (o->sparse_prefill)
        return ds_error(DS_ERR_UNSUPPORTED, "--gpu: the sparse-prefill simulation (perplexity --protocol paper with a "
                        "sparse method) runs on the CPU only");
    if (ds && o->per_head)
        return ds_error(DS_ERR_UNSUPPORTED, "--gpu runs Double Sparsity with --ds-group shared only");
    for (int l = 0; ds && s->sp_r && l < c->n_layer; l++)
        if (s->sp_r[l] != o->channels)
            return ds_error(DS_ERR_UNSUPPORTED, "--gpu: per-layer label widths (--ds-layer-channels, --ds-channel-alloc) "
                            "run on the CPU only");
    if (c->n_head / c->n_head_kv > 8 || (c->head_dim != 64 && c->head_dim != 128))
        return ds_error(DS_ERR_UNSUPPORTED, "--gpu: attention shape (group %d, head_dim %d) not supported (group <= 8, "
                        "head_dim 64 or 128)", c->n_head / c->n_head_kv, c->head_dim);
    if (c->n_ff % 8)
        return ds_error(DS_ERR_UNSUPPORTED, "--gpu: feed-forward size %d is not a multiple of 8", c->n_ff);
    ds_gpu_forward_cfg g;
    memset(&g, 0, sizeof g);
    g.n_layer = c->n_layer; g.n_embd = c->n_embd; g.n_head = c->n_head; g.n_head_kv = c->n_head_kv;
    g.head_dim = c->head_dim; g.n_ff = c->n_ff; g.n_vocab = c->n_vocab; g.rms_eps = c->rms_eps;
    g.rope_neox = c->rope_neox; g.has_bias = c->has_qkv_bias; g.tied = c->tied_embeddings;
    g.inv_freq = m->rope_inv_freq;
    g.max_batch = 1; g.n_ctx = s->n_ctx; g.max_prefill = s->n_batch;
    g.quant_weights = 1;
    if (ds && gpu_ds_possible(s)) {
        g.sparse = 1; g.r = o->channels; g.bits = o->label_bits; g.tokens = o->tokens; g.tokens_frac = o->tokens_frac;
        g.recent = o->recent; g.group_max = o->group_max;
        g.min_context = o->min_context; g.chan = s->sp_chan; g.dense_layers = s->sp_dense_layer;
        g.lab_mean = s->sp_lmean; g.lab_scale = s->sp_lscale;
    }
    int e = ds_gpu_forward_new(&g, &s->gpu);
    if (e) { ds_gpu_forward_free(s->gpu); s->gpu = NULL; return gpu_err(e, "setup (out of GPU memory?)"); }
    ds_status st = DS_OK;
    const size_t E = c->n_embd, hd = c->head_dim, H = c->n_head, KVH = c->n_head_kv;
    const bool quant = want_quant(m);
    for (int l = 0; l < c->n_layer && !st; l++) {
        const ds_layer_weights *L = &m->layers[l];
        const ds_matrix *qkv[3] = {&L->wq, &L->wk, &L->wv}, *gu[2] = {&L->w_gate, &L->w_up};
        const ds_matrix *wo[1] = {&L->wo}, *down[1] = {&L->w_down};
        if (!st) st = upload_rows(s->gpu, DS_GW_WQKV, l, qkv, 3, quant, &s->gpu_wbytes);
        if (!st) st = upload_rows(s->gpu, DS_GW_WO, l, wo, 1, quant, &s->gpu_wbytes);
        if (!st) st = upload_rows(s->gpu, DS_GW_WGU, l, gu, 2, quant, &s->gpu_wbytes);
        if (!st) st = upload_rows(s->gpu, DS_GW_WDOWN, l, down, 1, quant, &s->gpu_wbytes);
        if (!st) st = upload_vec(s->gpu, DS_GW_ATTN_NORM, l, 0, L->attn_norm, E);
        if (!st) st = upload_vec(s->gpu, DS_GW_FFN_NORM, l, 0, L->ffn_norm, E);
        if (!st && L->bq) {
            st = upload_vec(s->gpu, DS_GW_BQKV, l, 0, L->bq, H * hd);
            if (!st) st = upload_vec(s->gpu, DS_GW_BQKV, l, H * hd, L->bk, KVH * hd);
            if (!st) st = upload_vec(s->gpu, DS_GW_BQKV, l, (H + KVH) * hd, L->bv, KVH * hd);
        }
    }
    const ds_matrix *embd[1] = {&m->tok_embd}, *out[1] = {&m->output};
    size_t embd_bytes = 0;   /* a step reads one row of it, unless the output projection is the same matrix */
    if (!st) st = upload_rows(s->gpu, DS_GW_TOK_EMBD, 0, embd, 1, quant, &embd_bytes);
    if (!st && !c->tied_embeddings) st = upload_rows(s->gpu, DS_GW_OUTPUT, 0, out, 1, quant, &s->gpu_wbytes);
    if (c->tied_embeddings) s->gpu_wbytes += embd_bytes;
    if (!st) st = upload_vec(s->gpu, DS_GW_OUTPUT_NORM, 0, 0, m->output_norm, E);
    if (st) { ds_gpu_forward_free(s->gpu); s->gpu = NULL; return st; }
    s->bytes += ds_gpu_forward_bytes(s->gpu);
    return DS_OK;
}

void ds_gpu_session_free(ds_session *s) {
    ds_gpu_forward_free(s->gpu);
    s->gpu = NULL;
}

ds_status ds_gpu_session_eval(ds_session *s, const int32_t *tokens, int n, float *all_logits) {
    const int V = s->m->info.n_vocab;
    int e = ds_gpu_forward_set_pos(s->gpu, 0, s->pos);   /* follows ds_session_truncate */
    if (e) return gpu_err(e, "truncate");
    if (n == 1 && !all_logits && s->pos > 0) {
        /* dense steps below --ds-min-context run the dense graph (the DS graph would fall back per
         * unit, but still launch the selection); the labels are written either way */
        if (gpu_ds_possible(s)) {
            e = ds_gpu_forward_set_sparse(s->gpu, s->pos + 1 >= s->opts.sparse.min_context);
            if (e) return gpu_err(e, "decode mode");
        }
        e = ds_gpu_forward_decode(s->gpu, 1, tokens, s->logits);
        if (e) return gpu_err(e, "decode");
        s->pos++;
        return DS_OK;
    }
    for (int i = 0; i < n; i += s->n_batch) {
        int T = DS_MIN(s->n_batch, n - i);
        float *dst = all_logits ? all_logits + (size_t)i * V : s->logits;
        e = ds_gpu_forward_prefill(s->gpu, 0, tokens + i, T, dst, all_logits != NULL);
        if (e) return gpu_err(e, "prefill");
        s->pos += T;
    }
    if (all_logits) memcpy(s->logits, all_logits + (size_t)(n - 1) * V, sizeof(float) * V);
    return DS_OK;
}

#endif
