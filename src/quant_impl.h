/* quant_impl.h — private to quant.c / quant_avx2.c / quant_avx512.c.
 *
 * Block layouts of the GGUF tensor formats (as defined by ggml; all little-endian, scales are
 * IEEE half unless noted), and the per-SIMD-level kernel table.
 *
 * Every field is at an even offset and every block size is even, so 2-byte alignment of a row
 * is enough for the scalar code (GGUF aligns tensor data to 32 bytes). SIMD code uses
 * unaligned loads throughout. */
#ifndef DS_QUANT_IMPL_H
#define DS_QUANT_IMPL_H

#include "quant.h"

#define QK32 32   /* elements per block of the "legacy" formats */
#define QKK 256   /* elements per super-block of the K formats */

typedef struct { uint16_t d; uint8_t qs[16]; } blk_q4_0;                      /* x = d*(q-8)  */
typedef struct { uint16_t d, m; uint8_t qs[16]; } blk_q4_1;                   /* x = d*q + m  */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } blk_q5_0;       /* x = d*(q-16) */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } blk_q5_1;    /* x = d*q + m  */
typedef struct { uint16_t d; int8_t qs[32]; } blk_q8_0;                       /* x = d*q      */
typedef struct { uint16_t d, s; int8_t qs[32]; } blk_q8_1;                    /* s = d*sum(q) */
/* K formats: 8 sub-blocks of 32 with 6-bit scale and min packed in 12 bytes. */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } blk_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } blk_q5_K;
/* Q6_K: 16 sub-blocks of 16 with signed 8-bit scales; x = d*sc*(q-32). */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } blk_q6_K;
/* Q8_K (activations only): float scale, bsums[i] = sum of qs[16i .. 16i+15]. */
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } blk_q8_K;

_Static_assert(sizeof(blk_q4_0) == 18, "q4_0");
_Static_assert(sizeof(blk_q4_1) == 20, "q4_1");
_Static_assert(sizeof(blk_q5_0) == 22, "q5_0");
_Static_assert(sizeof(blk_q5_1) == 24, "q5_1");
_Static_assert(sizeof(blk_q8_0) == 34, "q8_0");
_Static_assert(sizeof(blk_q8_1) == 36, "q8_1");
_Static_assert(sizeof(blk_q4_K) == 144, "q4_K");
_Static_assert(sizeof(blk_q5_K) == 176, "q5_K");
_Static_assert(sizeof(blk_q6_K) == 210, "q6_K");
_Static_assert(sizeof(blk_q8_K) == 292, "q8_K");

/* Unpack the eight 6-bit scales and mins of a Q4_K/Q5_K block. */
static inline void ds_kq_scale_min(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (uint8_t)((s[j + 8] & 0x0f) | ((s[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}

static inline uint16_t ds_rd16(const void *p) { uint16_t v; memcpy(&v, p, 2); return v; }

typedef void (*ds_dequant_fn)(const void *src, float *dst, int64_t n);
typedef float (*ds_dot_fn)(int64_t n, const void *w, const void *a);
typedef void (*ds_dot_rows_fn)(int64_t n, const void *w, size_t w_stride, int nrows,
                               const void *a, float *out);
typedef void (*ds_quant_fn)(const float *src, void *dst, int64_t n);

/* One SIMD level. NULL entries fall back to the level below (merged in quant.c). A NULL rows
 * entry means "loop over dot". */
typedef struct {
    ds_dequant_fn dequant[DS_TYPE_COUNT];
    ds_dot_fn dot[DS_TYPE_COUNT];
    ds_dot_rows_fn rows[DS_TYPE_COUNT];
    ds_quant_fn quant[DS_TYPE_COUNT];
} ds_quant_kernels;

/* Provided by quant_avx2.c / quant_avx512.c; each fills only what it implements. quant.c
 * references them weakly, so quant.c alone still links (scalar only). */
void ds_quant_fill_avx2(ds_quant_kernels *k);
void ds_quant_fill_avx512(ds_quant_kernels *k);

/* Shared scalar helpers for the activation quantisers (defined in quant.c) so every level
 * derives the scale the same way and fast == ref bit for bit. */
float ds_q8_scale_fp16(float amax, uint16_t *d16);   /* Q8_0/Q8_1: returns 1/d or 0 */
float ds_q8k_scale(float amax, float *d);            /* Q8_K: returns 1/d or 0 */

#endif
