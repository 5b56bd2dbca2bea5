/* ds_kernels.h — CPU kernels of Double Sparsity's selection step (design/double-sparsity.md
 * §1 steps 2-3, §4): the label format, label scoring s[t] = qsum . label[t], and top-k.
 *
 * LABEL FORMAT. One row per (token, KV head) holds the r calibrated channels (r <= 128):
 *   bits 16   : r IEEE halves, 2r bytes, little-endian. lo/step are not used.
 *   bits 8/4/2: r unsigned codes packed little-endian within bytes, ceil(r*bits/8) bytes:
 *               bits 4: channel 2i in the low nibble of byte i, 2i+1 in the high nibble;
 *               bits 2: channel 4i+s in bits [2s, 2s+2) of byte i. Unused tail bits are 0.
 *               Plus per row `lo` and `step`, each an fp16 (4 bytes per row in all);
 *               decoded value x = lo + step * code.
 *   Why fp16 lo/step: they are read for every token at every step, so they are part of the
 *   scan's bytes: at r=16 @ 4 bits (head_dim 64) the row is 8 bytes, and fp32 lo/step would make
 *   it 16 instead of 12. The rounding is directed so the accuracy promise survives: lo is the
 *   largest fp16 <= min(x) and step the smallest fp16 >= (max(x) - lo) / (2^bits - 1), so
 *   [lo, lo + (2^bits-1)*step] still covers every x and |decoded - x| <= step/2 per channel.
 *   Labels are assumed to lie within the fp16 range (|x| <= 65504; the K cache is fp16 anyway);
 *   values beyond it saturate. NaN inputs are ignored for min/max and get code 0.
 *
 * CACHE LAYOUT (decided by the caller, documented here because the kernels assume it): per
 * (layer, KV head) the codes are one contiguous array [n_ctx][row_bytes], and lo [n_ctx] and
 * step [n_ctx] (uint16_t fp16) are two arrays beside it. Scoring streams all three.
 *
 * GQA "shared" mode: score is linear in the query, so the group's summed score equals one scan
 * with qsum = sum of the group's query-head labels; hence the parameter name.
 *
 * Threading: all functions are reentrant; the caller splits work (e.g. by KV head). */
#ifndef DS_KERNELS_H
#define DS_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define DS_LABEL_MAX_R 128

/* Bytes of one row's packed codes (bits 16: 2r; else ceil(r*bits/8)). lo/step not included. */
size_t ds_label_row_bytes(int r, int bits);

/* Encode one row: x[r] -> codes[row_bytes] (+ *lo, *step as fp16 bit patterns for bits < 16;
 * for bits 16 codes receives the halves and lo/step may be NULL). bits in {2, 4, 8, 16}. */
void ds_label_encode(const float *x, int r, int bits, uint8_t *codes, uint16_t *lo, uint16_t *step);

/* Decode one row back to floats (tests, debugging; the scoring path never dequantises). */
void ds_label_decode(const uint8_t *codes, int r, int bits, uint16_t lo, uint16_t step, float *x);

/* ROWS TO PREFETCH WHILE SCORING. A decode step's gather of the selected K and V rows is bound by
 * memory latency (one random 128-byte row after another), while the label scan before it is
 * arithmetic over a sequential stream that the hardware prefetcher already follows; consecutive
 * steps select mostly the same rows (~3/4 at 8K on SmolLM2). So the
 * scoring kernels can take the previous step's selection and issue, per 16-token block, L2
 * prefetches for the next rows of it (ceil(n / blocks) rows a block, every 64-byte line of
 * row_bytes in each base array), and the gather that follows finds most rows already near.
 * Hints only: scores are the same bit for bit with or without. Rows idx[i] * row_bytes past
 * the arrays' end are the caller's to avoid (a prefetch does not fault, but it is wasted). */
typedef struct {
    const void *base[2];        /* e.g. one KV head's K and V cache; base[1] may be NULL */
    const int32_t *idx;         /* [n] row numbers */
    int n, row_bytes;
} ds_row_prefetch;

/* scores[t] = qsum . label[t] for t in [0, n): codes [n][row_bytes], lo/step [n] (ignored for
 * bits 16). For bits < 16 computed as step_t * sum_j qsum_j*code_tj + lo_t * sum_j qsum_j without
 * a dequantised temporary. Dispatches to the best SIMD level; the AVX-512 level accumulates the
 * code dot products exactly in int32 (VNNI) against qsum rounded to 16-bit integers (two int8
 * digits: an error <= max|qsum| / 65024 per channel, times the code, far below the labels' own
 * rounding of step/2 per channel). Fast paths need r*bits to be a multiple of 32 and row_bytes
 * in {4, 8, 16, 32, 64} (AVX2: up to 32), which covers every "1/16 of the key bits" shape;
 * other shapes, a non-finite qsum (AVX-512) and the last n % 8 tokens on AVX2 (n % 16 of fp16
 * labels on AVX-512, whose integer paths score the last block masked) use the scalar code. Any
 * alignment of the arrays is fine. pf: rows to prefetch meanwhile (see above), or NULL; the
 * scalar code issues none. */
void ds_label_score(const float *qsum, int r, int bits, const uint8_t *codes, const uint16_t *lo,
                    const uint16_t *step, int n, float *scores, const ds_row_prefetch *pf);
/* ds_label_score for G queries over the same label rows: scores + g * sstride receives query g's
 * (q + g * qstride) scores, equal bit for bit to ds_label_score with that query. The AVX-512 level
 * loads and unpacks each block of codes once for all G (bits 8/4/2); elsewhere it loops. kmax
 * (G entries, or NULL): the largest ds_score_key of each query's n scores, taken as they are
 * written (what ds_group_max would find by reading the rows again). pf as ds_label_score's. */
void ds_label_score_multi(const float *q, size_t qstride, int G, int r, int bits, const uint8_t *codes,
                          const uint16_t *lo, const uint16_t *step, int n, float *scores, size_t sstride,
                          uint32_t *kmax, const ds_row_prefetch *pf);
/* Scalar reference (plain float loops, channel order). */
void ds_label_score_ref(const float *qsum, int r, int bits, const uint8_t *codes,
                        const uint16_t *lo, const uint16_t *step, int n, float *scores);

/* GROUP SCORE BY THE LARGEST HEAD. s: [G][stride] scores of one KV group's G query heads over
 * positions [0, n) (NaN-free; n >= 1). Writes scores[t] = max over g of (s[g][t] - max_t' s[g][t']):
 * each head's scores less its own best, so every head's best position scores 0. scores may be
 * s itself (row 0). SIMD per level like the rest. */
void ds_group_max(const float *s, int G, size_t stride, int n, float *scores);
/* ds_group_max with each head's largest score key already known (kmax[g], as
 * ds_label_score_multi gives it): only the combining pass. */
void ds_group_max_keys(const float *s, int G, size_t stride, int n, const uint32_t *kmax, float *scores);

/* TOP-K. ds_topk writes the indices of the k largest scores to idx_out (which must hold
 * min(k, n) entries) and returns how many it wrote: 0 if k <= 0 or n <= 0, n (all of 0..n-1)
 * if k >= n, else k. Order within idx_out is unspecified (the set is what counts).
 * Ordering: by value, -0 == +0, NaN below -inf; among equal scores the lowest indices win, so
 * the set is deterministic and equals ds_topk_ref's.
 * Cost O(n): for n >= 1024 a strided sample (<= 1024 scores) brackets the k-th largest, one
 * SIMD streaming pass sends scores above the bracket to idx_out and those inside it (a few %
 * of n) to a candidate list, and a radix select (<= 2048 bins over order-preserving uint32
 * keys) finishes the candidates; if the bracket missed (the pass counts tell), or n < 1024, a
 * radix select over the whole array runs instead, so the result is always exact.
 * scratch: caller-provided, at least ds_topk_scratch_bytes(n) = 4 * (3072 + 2 * (n + 16))
 * bytes, 4-byte aligned (64 is better); nothing is allocated inside. One per concurrent call. */
size_t ds_topk_scratch_bytes(int n);
int ds_topk(const float *scores, int n, int k, int32_t *idx_out, void *scratch);
/* Sort-based reference with the same ordering and tie rule (allocates; for tests). */
int ds_topk_ref(const float *scores, int n, int k, int32_t *idx_out);

/* SIMD level in use ("scalar", "avx2", "avx512"), and a hook for tests/benchmarks to force one
 * (a level the CPU lacks falls back to the next lower one; NULL restores automatic choice). */
const char *ds_kernels_level(void);
void ds_kernels_force_level(const char *level);

/* ---- internal: the per-level kernel table shared with ds_kernels_avx2.c / _avx512.c ---- */
typedef struct {
    /* Score from the start of the arrays; returns how many tokens it scored: all n (AVX-512
     * integer paths: a masked last block), else whole 16-token blocks (AVX2: 8); 0 if it does
     * not handle this (r, bits). */
    int (*score)(const float *qsum, int r, int bits, const uint8_t *codes, const uint16_t *lo,
                 const uint16_t *step, int n, float *scores, const ds_row_prefetch *pf);
    /* min and max of the order-preserving keys of s[0..n) (n >= 1) */
    void (*key_range)(const float *s, int n, uint32_t *kmin, uint32_t *kmax);
    /* In index order: key > t_hi -> out (returns -1 as soon as more than out_cap would be
     * written), else key >= t_lo -> cand (room for n + 16). Returns the count written to out. */
    int (*classify)(const float *s, int n, uint32_t t_hi, uint32_t t_lo, int32_t *out,
                    int out_cap, int32_t *cand, int *n_cand);
    /* score for G queries (q rows at qstride) into rows of scores at sstride, from the start (as
     * score); returns the tokens scored per query, 0 if it does not handle this shape; kmax
     * (or NULL): each row's largest score key over the tokens it scored */
    int (*score_multi)(const float *q, size_t qstride, int G, int r, int bits, const uint8_t *codes,
                       const uint16_t *lo, const uint16_t *step, int n, float *scores, size_t sstride,
                       uint32_t *kmax, const ds_row_prefetch *pf);
    /* out[t] = max over g of (s[g * stride + t] - m[g]), t in [0, n); out may be s */
    void (*shifted_max)(const float *s, int G, size_t stride, int n, const float *m, float *out);
    /* keys[i] = ds_score_key(s[list[i]]), i in [0, m) (keys has room for m + 16) */
    void (*list_keys)(const float *s, const int32_t *list, int m, uint32_t *keys);
    /* classify's split over a list with its keys, in list order: key > t_hi -> out (returns -1
     * as soon as more than out_cap would be written), t_lo <= key <= t_hi kept, compacted in
     * place at the front of list and keys (room for m + 16 each), their count in *n_keep and
     * their keys' range in [*kmin, *kmax] (UINT32_MAX, 0 if none). Returns the count sent to out. */
    int (*split_list)(int32_t *list, uint32_t *keys, int m, uint32_t t_hi, uint32_t t_lo, int32_t *out,
                      int out_cap, int *n_keep, uint32_t *kmin, uint32_t *kmax);
    /* The samples v_j = s[j * stride], j in [0, S): the finite ones' min and max (+inf, -inf if
     * none), the count of +inf, and bin[j] = min(nb - 1, floor((v_j - mn) * nb / (mx - mn)))
     * (float arithmetic; 0 if mx == mn) for finite v_j, nb for the others */
    void (*sample)(const float *s, int S, int stride, int nb, uint32_t *bin, float *mn, float *mx, int *n_top);
} ds_dsk_kernels;

/* Order-preserving key of a score: a > b as floats <=> key(a) > key(b) as unsigned, with -0
 * mapped like +0 (adding +0.0f turns -0 into +0 and leaves everything else alone) and NaN to 0,
 * below -inf (whose key is 0x007fffff). */
static inline uint32_t ds_score_key(float x) {
    x += 0.0f;
    if (x != x) return 0;
    uint32_t u;
    memcpy(&u, &x, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* The SIMD levels' prefetch cursor over a ds_row_prefetch: ds_pf_start once per call (nblk
 * blocks to come), ds_pf_step once per block. */
typedef struct {
    const char *b0, *b1;
    const int32_t *idx;
    int i, n, per, rb;
} ds_pf_cursor;

static inline void ds_pf_start(ds_pf_cursor *c, const ds_row_prefetch *pf, int nblk) {
    const int on = pf && pf->idx && pf->base[0] && pf->n > 0 && pf->row_bytes > 0 && nblk > 0;
    c->n = on ? pf->n : 0;
    c->i = 0;
    c->b0 = on ? (const char *)pf->base[0] : NULL;
    c->b1 = on ? (const char *)pf->base[1] : NULL;
    c->idx = on ? pf->idx : NULL;
    c->rb = on ? pf->row_bytes : 0;
    c->per = on ? (c->n + nblk - 1) / nblk : 0;
}

static inline void ds_pf_step(ds_pf_cursor *c) {
    for (int j = 0; j < c->per && c->i < c->n; j++, c->i++) {
        const size_t o = (size_t)c->idx[c->i] * (size_t)c->rb;
        for (int l = 0; l < c->rb; l += 64) {
            __builtin_prefetch(c->b0 + o + l, 0, 2);   /* to L2: the rows are read after the scan */
            if (c->b1) __builtin_prefetch(c->b1 + o + l, 0, 2);
        }
    }
}

/* The sample kernels' bin scale: nb / (mx - mn) in double (the difference may overflow a float),
 * 0 when all samples are equal. */
static inline float ds_sample_inv_width(float mn, float mx, int nb) {
    return mx > mn ? (float)(nb / ((double)mx - (double)mn)) : 0.0f;
}

void ds_dsk_fill_avx2(ds_dsk_kernels *k);
void ds_dsk_fill_avx512(ds_dsk_kernels *k);

#endif
