/* attention.h — CPU attention over the fp16 KV cache.
 *
 * Cache layout (per layer): K[kv_head][n_ctx][head_dim], V likewise, fp16, head-major so one
 * head's keys stream contiguously (the layout Double Sparsity's label cache also uses).
 *
 * The kernel is a "partial" attention over a contiguous range of positions for the G query
 * heads that share one KV head (GQA): it returns the running max m, the sum of exponentials l
 * and the unnormalised accumulator acc, so ranges can be processed by different threads and
 * merged (split-KV / flash-decoding). Rows are given as an index list so the same kernel serves
 * dense attention (idx = NULL: positions [0, n)) and sparse attention over selected tokens. */
#ifndef DS_ATTENTION_H
#define DS_ATTENTION_H

#include "common.h"

typedef struct {
    float m[16];        /* running max per query head of the group (G <= 16) */
    float l[16];        /* sum of exp(s - m) */
} ds_attn_stats;

/* q: [G][hd] fp32 (already scaled by 1/sqrt(hd)); K, V: [n_ctx][hd] fp16 of one KV head.
 * Processes positions idx[i] (or begin..end-1 when idx == NULL, with i in [begin, end)).
 * acc: [G][hd] unnormalised output; st receives m and l. G <= 16, hd <= 512 and a multiple of 16. */
void ds_attn_partial(const float *q, int G, int hd, const uint16_t *K, const uint16_t *V,
                     const int32_t *idx, int begin, int end, float *acc, ds_attn_stats *st);
void ds_attn_partial_ref(const float *q, int G, int hd, const uint16_t *K, const uint16_t *V,
                         const int32_t *idx, int begin, int end, float *acc, ds_attn_stats *st);

/* Merge `n` partials (acc_i [G][hd], st_i) into out [G][hd] normalised. */
void ds_attn_merge(int n, int G, int hd, const float *accs, const ds_attn_stats *sts, float *out);

/* q . k for one fp16 key row (oracle scores). */
float ds_dot_f16_f32(const uint16_t *k, const float *q, int hd);

/* fp32 -> fp16 and fp16 -> fp32 row conversion (SIMD where available; both exact for values
 * that are representable, the first rounds to nearest even). */
void ds_fp32_to_fp16_row(const float *x, uint16_t *y, int n);
void ds_fp16_to_fp32_row(const uint16_t *x, float *y, int n);

#endif
