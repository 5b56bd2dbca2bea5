/* model.c — load a GGUF, read the config, bind and check every weight.
 *
 * Supported architectures: "llama" (SmolLM2, Llama-2/3 ...) and "qwen2" (QKV bias, NEOX rope).
 * Every tensor is checked for presence, type support and exact shape; a mismatch is one clear
 * error naming the tensor, the expected and the actual shape. */
#include "model.h"
#include "calibrate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static ds_status get_arch_u32(const gguf_file *g, const char *arch, const char *suffix,
                              uint32_t *out, bool required, uint32_t dflt) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!gguf_find_kv(g, key)) {
        if (required) return ds_error(DS_ERR_FORMAT, "GGUF metadata lacks required key %s", key);
        *out = dflt;
        return DS_OK;
    }
    return gguf_get_u32(g, key, out);
}

static ds_status get_arch_f32(const gguf_file *g, const char *arch, const char *suffix,
                              float *out, float dflt) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!gguf_find_kv(g, key)) { *out = dflt; return DS_OK; }
    return gguf_get_f32(g, key, out);
}

static ds_status bind_matrix(ds_model *m, const char *name, int64_t cols, int64_t rows,
                             ds_matrix *out, bool optional) {
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (optional) { memset(out, 0, sizeof *out); return DS_OK; }
        return ds_error(DS_ERR_FORMAT, "%s: missing tensor %s", m->path, name);
    }
    if (t->n_dims != 2 || (int64_t)t->ne[0] != cols || (int64_t)t->ne[1] != rows)
        return ds_error(DS_ERR_FORMAT, "tensor %s: expected shape [%lld, %lld], file has [%llu, %llu] (%u dims)",
                        name, (long long)cols, (long long)rows, (unsigned long long)t->ne[0],
                        (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 1), t->n_dims);
    const ds_type_info *ti = ds_type_info_get(t->type);
    if (!ti || !ti->supported)
        return ds_error(DS_ERR_UNSUPPORTED, "tensor %s has type %s, which dsinfer does not support",
                        name, ds_type_name(t->type));
    out->data = t->data;
    out->type = (ds_type)t->type;
    out->cols = cols;
    out->rows = rows;
    out->row_bytes = ds_row_bytes(out->type, cols);
    out->name = name;
    m->info.weight_bytes += t->nbytes;
    m->info.n_params += (uint64_t)(cols * rows);
    return DS_OK;
}

/* 1-D tensors (norm weights, biases) become owned fp32 arrays. */
static ds_status bind_vector(ds_model *m, const char *name, int64_t n, float **out, bool optional) {
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    *out = NULL;
    if (!t) {
        if (optional) return DS_OK;
        return ds_error(DS_ERR_FORMAT, "%s: missing tensor %s", m->path, name);
    }
    if (t->n_dims != 1 || (int64_t)t->ne[0] != n)
        return ds_error(DS_ERR_FORMAT, "tensor %s: expected shape [%lld], file has [%llu] (%u dims)",
                        name, (long long)n, (unsigned long long)t->ne[0], t->n_dims);
    const ds_type_info *ti = ds_type_info_get(t->type);
    if (!ti || !ti->supported || n % ti->block)
        return ds_error(DS_ERR_UNSUPPORTED, "tensor %s has type %s, which dsinfer does not support here",
                        name, ds_type_name(t->type));
    float *v = ds_alloc((size_t)n * sizeof(float));
    if (!v) return ds_error(DS_ERR_OOM, "out of memory for %s", name);
    ds_dequant_row_ref((ds_type)t->type, t->data, v, n);
    *out = v;
    m->info.weight_bytes += t->nbytes;
    m->info.n_params += (uint64_t)n;
    return DS_OK;
}

static ds_status read_config(ds_model *m) {
    gguf_file *g = m->gguf;
    ds_model_info *c = &m->info;
    gguf_str arch;
    ds_status st = gguf_get_str(g, "general.architecture", &arch);
    if (st) return st;
    gguf_str_copy(arch, c->arch, sizeof c->arch);
    bool is_llama = strcmp(c->arch, "llama") == 0, is_qwen2 = strcmp(c->arch, "qwen2") == 0;
    if (!is_llama && !is_qwen2)
        return ds_error(DS_ERR_UNSUPPORTED, "architecture '%s' is not supported (dsinfer runs llama and qwen2)", c->arch);
    gguf_str name;
    if (gguf_find_kv(g, "general.name") && gguf_get_str(g, "general.name", &name) == DS_OK)
        gguf_str_copy(name, c->name, sizeof c->name);

    uint32_t n_layer, n_embd, n_head, n_head_kv, n_ff, n_ctx, rope_dim, key_len;
    if ((st = get_arch_u32(g, c->arch, "block_count", &n_layer, true, 0)) ||
        (st = get_arch_u32(g, c->arch, "embedding_length", &n_embd, true, 0)) ||
        (st = get_arch_u32(g, c->arch, "attention.head_count", &n_head, true, 0)) ||
        (st = get_arch_u32(g, c->arch, "attention.head_count_kv", &n_head_kv, false, n_head)) ||
        (st = get_arch_u32(g, c->arch, "feed_forward_length", &n_ff, true, 0)) ||
        (st = get_arch_u32(g, c->arch, "context_length", &n_ctx, false, 2048)))
        return st;
    if (n_layer == 0 || n_layer > 1024 || n_embd == 0 || n_embd > 65536 || n_head == 0 ||
        n_head > 1024 || n_head_kv == 0 || n_head % n_head_kv || n_embd % n_head ||
        n_ff == 0 || n_ff > 1 << 20)
        return ds_error(DS_ERR_FORMAT, "implausible model config: layers %u, embd %u, heads %u/%u, ffn %u",
                        n_layer, n_embd, n_head, n_head_kv, n_ff);
    uint32_t hd = n_embd / n_head;
    if ((st = get_arch_u32(g, c->arch, "attention.key_length", &key_len, false, hd)) ||
        (st = get_arch_u32(g, c->arch, "rope.dimension_count", &rope_dim, false, hd)))
        return st;
    if (key_len != hd || rope_dim != hd || hd % 2 || hd > 512)
        return ds_error(DS_ERR_UNSUPPORTED, "head_dim %u with key_length %u and rope dims %u is not supported "
                        "(need key_length == rope dims == n_embd/n_head, even, <= 512)", hd, key_len, rope_dim);
    c->n_layer = (int)n_layer; c->n_embd = (int)n_embd; c->n_head = (int)n_head;
    c->n_head_kv = (int)n_head_kv; c->head_dim = (int)hd; c->n_ff = (int)n_ff;
    c->n_ctx_train = (int)n_ctx;
    if ((st = get_arch_f32(g, c->arch, "rope.freq_base", &c->rope_theta, 10000.0f)) ||
        (st = get_arch_f32(g, c->arch, "attention.layer_norm_rms_epsilon", &c->rms_eps, 1e-5f)))
        return st;
    if (!(c->rope_theta > 0) || !(c->rms_eps > 0))
        return ds_error(DS_ERR_FORMAT, "implausible rope theta %g or rms eps %g", c->rope_theta, c->rms_eps);
    /* llama-arch GGUFs store Q/K rows permuted so RoPE rotates adjacent pairs; qwen2 keeps HF's
     * (i, i + d/2) "NEOX" pairing. */
    c->rope_neox = is_qwen2;
    c->has_qkv_bias = is_qwen2;
    return DS_OK;
}

static ds_status bind_weights(ds_model *m) {
    ds_model_info *c = &m->info;
    const int64_t E = c->n_embd, Q = (int64_t)c->n_head * c->head_dim,
                  KV = (int64_t)c->n_head_kv * c->head_dim, F = c->n_ff;
    ds_status st;
    const gguf_tensor *te = gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!te || te->n_dims != 2) return ds_error(DS_ERR_FORMAT, "missing or malformed tensor token_embd.weight");
    if (te->ne[1] == 0 || te->ne[1] > (1u << 24))
        return ds_error(DS_ERR_FORMAT, "implausible vocabulary size %llu", (unsigned long long)te->ne[1]);
    c->n_vocab = (int)te->ne[1];
    if ((st = bind_matrix(m, "token_embd.weight", E, c->n_vocab, &m->tok_embd, false))) return st;
    if ((st = bind_vector(m, "output_norm.weight", E, &m->output_norm, false))) return st;
    if ((st = bind_matrix(m, "output.weight", E, c->n_vocab, &m->output, true))) return st;
    c->tied_embeddings = m->output.data == NULL;
    if (c->tied_embeddings) m->output = m->tok_embd;

    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) return ds_error(DS_ERR_OOM, "out of memory");
    /* tensor names must outlive this function: bind_matrix keeps the pointer */
    for (int l = 0; l < c->n_layer; l++) {
        ds_layer_weights *L = &m->layers[l];
        char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d." s, l), n)
        if ((st = bind_vector(m, NAME("attn_norm.weight"), E, &L->attn_norm, false)) ||
            (st = bind_matrix(m, NAME("attn_q.weight"), E, Q, &L->wq, false)) ||
            (st = bind_matrix(m, NAME("attn_k.weight"), E, KV, &L->wk, false)) ||
            (st = bind_matrix(m, NAME("attn_v.weight"), E, KV, &L->wv, false)) ||
            (st = bind_matrix(m, NAME("attn_output.weight"), Q, E, &L->wo, false)) ||
            (st = bind_vector(m, NAME("ffn_norm.weight"), E, &L->ffn_norm, false)) ||
            (st = bind_matrix(m, NAME("ffn_gate.weight"), E, F, &L->w_gate, false)) ||
            (st = bind_matrix(m, NAME("ffn_up.weight"), E, F, &L->w_up, false)) ||
            (st = bind_matrix(m, NAME("ffn_down.weight"), F, E, &L->w_down, false)))
            return st;
        bool need_bias = c->has_qkv_bias;
        if ((st = bind_vector(m, NAME("attn_q.bias"), Q, &L->bq, !need_bias)) ||
            (st = bind_vector(m, NAME("attn_k.bias"), KV, &L->bk, !need_bias)) ||
            (st = bind_vector(m, NAME("attn_v.bias"), KV, &L->bv, !need_bias)))
            return st;
#undef NAME
        L->wq.name = L->wk.name = L->wv.name = L->wo.name = NULL; /* stack buffer: not kept */
        L->w_gate.name = L->w_up.name = L->w_down.name = NULL;
    }
    return DS_OK;
}

ds_status ds_model_load(const char *path, ds_model **out) {
    *out = NULL;
    if (!path || !*path) return ds_error(DS_ERR_ARG, "no model path given");
    ds_model *m = calloc(1, sizeof *m);
    if (!m) return ds_error(DS_ERR_OOM, "out of memory");
    snprintf(m->path, sizeof m->path, "%s", path);
    ds_status st = gguf_open(path, &m->gguf);
    if (!st) st = read_config(m);
    if (!st) st = bind_weights(m);
    if (!st) st = ds_tokenizer_new(m->gguf, &m->tok);
    if (!st && ds_tokenizer_n_vocab(m->tok) > m->info.n_vocab)
        st = ds_error(DS_ERR_FORMAT, "vocabulary has %d tokens but token_embd has %d rows",
                      ds_tokenizer_n_vocab(m->tok), m->info.n_vocab);
    if (!st) {
        int half = m->info.head_dim / 2;
        m->rope_inv_freq = ds_alloc((size_t)half * sizeof(float));
        if (!m->rope_inv_freq) st = ds_error(DS_ERR_OOM, "out of memory");
        else for (int i = 0; i < half; i++)
            m->rope_inv_freq[i] = (float)pow((double)m->info.rope_theta, -2.0 * i / m->info.head_dim);
    }
    if (!st && gguf_find_kv(m->gguf, "tokenizer.chat_template")) {
        gguf_str t;
        if (gguf_get_str(m->gguf, "tokenizer.chat_template", &t) == DS_OK && t.len < (1u << 20)) {
            m->chat_template = malloc(t.len + 1);
            if (m->chat_template) gguf_str_copy(t, m->chat_template, t.len + 1);
        }
    }
    if (st) {
        ds_model_free(m);
        return st;
    }
    /* the calibration sidecar next to the model, when there is one; a bad one is not fatal
     * here (dense use needs none) but its error is kept for whoever asks for sparse attention */
    char *cal = ds_calibration_default_path(m);
    if (cal && access(cal, F_OK) == 0 && ds_model_load_calibration(m, cal) != DS_OK)
        snprintf(m->calib_note, sizeof m->calib_note, "%s", ds_last_error());
    free(cal);
    *out = m;
    return DS_OK;
}

void ds_model_free(ds_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->info.n_layer; l++) {
            ds_layer_weights *L = &m->layers[l];
            ds_free(L->attn_norm); ds_free(L->ffn_norm);
            ds_free(L->bq); ds_free(L->bk); ds_free(L->bv);
        }
        free(m->layers);
    }
    ds_free(m->output_norm);
    ds_free(m->rope_inv_freq);
    ds_tokenizer_free(m->tok);
    free(m->chat_template);
    ds_calibration_free(m->calib);
    gguf_close(m->gguf);
    free(m);
}

const ds_model_info *ds_model_get_info(const ds_model *m) { return &m->info; }

/* ---- tokens: thin wrappers so the CLI needs only the public header ---- */

ds_status ds_tokenize(const ds_model *m, const char *text, size_t len, bool add_bos,
                      bool parse_special, int32_t **out, int *n_out) {
    return ds_tokenizer_encode(m->tok, text, len, add_bos && ds_tokenizer_add_bos(m->tok),
                               parse_special, out, n_out);
}
void ds_free_tokens(int32_t *tokens) { free(tokens); }
int ds_token_to_piece(const ds_model *m, int32_t tok, bool render_special, char *buf, int cap) {
    return ds_tokenizer_piece(m->tok, tok, render_special, buf, cap);
}
int32_t ds_token_bos(const ds_model *m) { return ds_tokenizer_bos(m->tok); }
int32_t ds_token_eos(const ds_model *m) { return ds_tokenizer_eos(m->tok); }
bool ds_token_is_eog(const ds_model *m, int32_t tok) { return ds_tokenizer_is_eog(m->tok, tok); }

int ds_model_n_tensors(const ds_model *m) { return (int)m->gguf->n_tensors; }

int ds_model_tensor_desc(const ds_model *m, int i, char *buf, int cap) {
    if (i < 0 || (uint64_t)i >= m->gguf->n_tensors || cap <= 0) return -1;
    const gguf_tensor *t = &m->gguf->tensors[i];
    char name[256], dims[128];
    gguf_str_copy(t->name, name, sizeof name);
    int n = snprintf(dims, sizeof dims, "[");
    for (uint32_t d = 0; d < t->n_dims && n < (int)sizeof dims; d++)
        n += snprintf(dims + n, sizeof dims - (size_t)n, "%s%llu", d ? ", " : "", (unsigned long long)t->ne[d]);
    if (n < (int)sizeof dims) snprintf(dims + n, sizeof dims - (size_t)n, "]");
    return snprintf(buf, (size_t)cap, "%-36s %-6s %-18s %12llu", name, ds_type_name(t->type), dims,
                    (unsigned long long)t->nbytes);
}
