/* model.h — the immutable model: config from GGUF metadata and weights bound by name.
 *
 * Weights are pointers into the mmap'd GGUF (no copies), except 1-D tensors (norms, biases),
 * which are dequantised once into owned fp32 arrays since every op reads them as floats. */
#ifndef DS_MODEL_H
#define DS_MODEL_H

#include "common.h"
#include "gguf.h"
#include "quant.h"
#include "tokenizer.h"

/* A 2-D weight matrix W[rows][cols]; row r starts at data + r * row_bytes (GGUF ne[0] = cols). */
typedef struct {
    const uint8_t *data;
    ds_type type;
    int64_t cols, rows;
    size_t row_bytes;
    const char *name;
} ds_matrix;

typedef struct {
    float *attn_norm;                 /* [n_embd] */
    ds_matrix wq, wk, wv, wo;         /* [n_head*hd][n_embd], [n_kv*hd][n_embd] x2, [n_embd][n_head*hd] */
    float *bq, *bk, *bv;              /* qwen2 only: [n_head*hd], [n_kv*hd], [n_kv*hd]; else NULL */
    float *ffn_norm;                  /* [n_embd] */
    ds_matrix w_gate, w_up, w_down;   /* [n_ff][n_embd] x2, [n_embd][n_ff] */
} ds_layer_weights;

/* A layer's seven matrices in one order (wq, wk, wv, wo, w_gate, w_up, w_down), for the code that
 * treats them alike: buffer sizes, upload decisions. */
enum { DS_LAYER_MATRICES = 7 };
static inline void ds_layer_matrices(const ds_layer_weights *L, const ds_matrix *out[DS_LAYER_MATRICES]) {
    out[0] = &L->wq; out[1] = &L->wk; out[2] = &L->wv; out[3] = &L->wo;
    out[4] = &L->w_gate; out[5] = &L->w_up; out[6] = &L->w_down;
}

struct ds_model {
    gguf_file *gguf;
    ds_model_info info;
    ds_matrix tok_embd;               /* [n_vocab][n_embd] */
    float *output_norm;               /* [n_embd] */
    ds_matrix output;                 /* [n_vocab][n_embd]; == tok_embd when tied */
    ds_layer_weights *layers;         /* [n_layer] */
    float *rope_inv_freq;             /* [head_dim/2]: theta^(-2i/d) */
    ds_tokenizer *tok;
    char *chat_template;              /* NUL-terminated copy, or NULL */
    struct ds_calibration *calib;     /* channel rankings for Double Sparsity, or NULL */
    char calib_note[512];             /* why an existing sidecar was not loaded ("" if none) */
    char path[1024];
};

#endif
