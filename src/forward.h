/* forward.h — the session object (internal view). */
#ifndef DS_FORWARD_H
#define DS_FORWARD_H

#include "attention.h"
#include <stdio.h>
#include "model.h"
#include "threads.h"

struct ds_session {
    const ds_model *m;
    ds_session_opts opts;
    ds_pool *pool;
    int n_ctx, n_batch, pos;
    int precise;                 /* DSINFER_PRECISE=1: fp32 activations in matmuls (reference checks) */
    size_t bytes;                /* the memory plan's total */
    size_t gpu_wbytes;           /* --gpu: weight bytes a decode step reads, as uploaded (quantised or fp16) */
    void *amx_x;                 /* AMX prefill: one chunk's Q8_K activations in tile layout, or NULL */
    float *amx_acc;              /* AMX prefill: [n_threads][amx_acc_stride] fp32 accumulators */
    size_t amx_acc_stride;
    double t_attn;               /* seconds in attention(), cumulative */
    uint16_t *k_cache, *v_cache; /* [n_layer][n_head_kv][n_ctx][head_dim] fp16 */
    float *x, *xn, *tmp;         /* [n_batch][n_embd] */
    float *q, *att;              /* [n_batch][n_head][head_dim] (q pre-scaled by 1/sqrt(hd)) */
    float *k, *v;                /* [n_batch][n_head_kv][head_dim] */
    float *gate, *up;            /* [n_batch][n_ff] */
    uint8_t *xq[2];              /* activation quantised for a dot type: [n_batch][row bytes] */
    ds_type xq_type[2];
    int64_t xq_cols[2];
    const float *xq_src[2];
    size_t xq_stride[2];
    int n_xq_used;
    float *logits;               /* [n_vocab] */
    float *rope_cos, *rope_sin;  /* [n_batch][head_dim/2] */
    float *part_acc;             /* split-KV partials: [n_head_kv][chunks][group][head_dim] */
    ds_attn_stats *part_st;      /* [n_head_kv][chunks] */
    float *precise_row;          /* [n_threads][max cols] */

    /* sparse attention (sparse.c); all NULL for dense sessions */
    uint8_t *sp_dense_layer;     /* [n_layer] 1 = this layer stays dense */
    int *sp_r;                   /* [n_layer] label channels of each layer (DS / random) */
    int sp_rmax;                 /* the largest: the stride of sp_chan, sp_lmean, sp_lscale */
    int16_t *sp_chan;            /* [n_layer][n_head_kv][sp_rmax] label channels, the first sp_r[l] used */
    float *sp_lmean, *sp_lscale; /* [n_layer][n_head_kv][sp_rmax] label normalisation (label_norm), else NULL */
    size_t *sp_row_bytes;        /* [n_layer] packed label codes per (token, KV head) */
    size_t *sp_code_off;         /* [n_layer] where the layer's codes start in sp_codes */
    uint8_t *sp_codes;           /* per layer l at sp_code_off[l]: [n_head_kv][n_ctx][sp_row_bytes[l]] */
    uint16_t *sp_lo, *sp_step;   /* [n_layer][n_head_kv][n_ctx] fp16 (labels below 16 bits) */
    float *sp_scores;            /* [n_threads][sp_scores_stride] approximate scores (group_max: an [n_ctx] row per query head of a group) */
    size_t sp_scores_stride;
    int32_t *sp_idx;             /* [max(n_threads, KVH)][n_ctx] selected positions (per thread; per KV head in split decode) */
    uint8_t *sp_topk;            /* [n_threads][sp_topk_bytes] top-k scratch */
    size_t sp_topk_bytes;
    float *sp_acc;               /* [n_threads][sp_acc_stride]: attention partials, [DS_SPLIT_SLICES_MAX][16][head_dim] */
    size_t sp_acc_stride;
    ds_attn_stats *sp_st;        /* [n_threads][DS_SPLIT_SLICES_MAX] their softmax stats */
    int32_t *sp_idx2;            /* [n_threads][n_ctx] second index list (Quest pages, H2O top-k) */
    int32_t *sp_prev;            /* [n_layer][n_head_kv][sp_prev_cap] each group's last decode selection, whose
                                  * K/V rows the next step's label scan prefetches (ds/random; else NULL) */
    int *sp_prev_n;              /* [n_layer][n_head_kv] its length (0: none yet) */
    int sp_prev_cap;
    FILE *sp_diag;               /* DSINFER_SEL_DIAG: one line per selection (sparse_diag.c), else NULL */
    uint64_t sp_shuffle;         /* DSINFER_SEL_SHUFFLE: seed permuting each selection's order (sparse_diag.c), 0 off */

    /* Quest (sparse_baselines.c): per (layer, KV head, page of 16 tokens) the per-channel min and
     * max of the cached (fp16) post-RoPE keys, stored fp16 (exact: extrema of fp16 values) */
    uint16_t *sp_quest;          /* [n_layer][n_head_kv][sp_quest_pages][2][head_dim] (min, then max) */
    int sp_quest_pages;          /* ceil(n_ctx / 16) */

    /* H2O (sparse_baselines.c), also kept by dense sessions with opts.sparse.track_h2o */
    int sp_h2o_units;            /* state units per layer: n_head_kv (shared) or n_head (per-head) */
    float *sp_h2o_acc;           /* [n_layer][units][n_ctx] accumulated attention probability */
    uint8_t *sp_h2o_kept;        /* [n_layer][units][n_ctx] 1 kept, 0 evicted (for positions < pos) */
    float *sp_h2o_ml;            /* [n_batch][n_head][2] row max and sum of exp of dense attention */

    /* GPU forward pass (gpu_session.c): non-NULL when the session was created with opts.gpu */
    struct ds_gpu_forward *gpu;

    /* calibration hook: non-NULL while ds_model_calibrate runs this session */
    struct ds_calib_acc *calib;
};

#endif
