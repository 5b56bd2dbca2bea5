/* quant.c — type table, scalar reference kernels and run-time SIMD dispatch.
 *
 * The `_ref` functions are written to mirror the format definitions directly (and accumulate
 * dot products in double); they are what the tests hold the SIMD kernels to. The dispatching
 * functions go through one kernel table chosen once at start-up (AVX-512 > AVX2 > scalar);
 * entries a level does not implement are inherited from the level below. */
#include "quant_impl.h"

#include <math.h>
#include <stdio.h>

/* ------------------------------------------------------------------ type table */

#define T_(id, nm, blk, by, sup, dot) [id] = { nm, blk, by, sup, dot }
static const ds_type_info g_types[DS_TYPE_COUNT] = {
    T_(0, "F32", 1, 4, 1, DS_TYPE_F32),
    T_(1, "F16", 1, 2, 1, DS_TYPE_F32),
    T_(2, "Q4_0", 32, 18, 1, DS_TYPE_Q8_0),
    T_(3, "Q4_1", 32, 20, 1, DS_TYPE_Q8_1),
    /* 4, 5: Q4_2 / Q4_3, removed from ggml before GGUF existed */
    T_(6, "Q5_0", 32, 22, 1, DS_TYPE_Q8_0),
    T_(7, "Q5_1", 32, 24, 1, DS_TYPE_Q8_1),
    T_(8, "Q8_0", 32, 34, 1, DS_TYPE_Q8_0),
    /* ggml's block_q8_1 is 36 bytes (gguf-py's size table still says 40, a stale entry);
     * Q8_1 never appears as a stored tensor type in practice. */
    T_(9, "Q8_1", 32, 36, 1, DS_TYPE_Q8_1),
    T_(10, "Q2_K", 256, 84, 0, DS_TYPE_Q8_K),
    T_(11, "Q3_K", 256, 110, 0, DS_TYPE_Q8_K),
    T_(12, "Q4_K", 256, 144, 1, DS_TYPE_Q8_K),
    T_(13, "Q5_K", 256, 176, 1, DS_TYPE_Q8_K),
    T_(14, "Q6_K", 256, 210, 1, DS_TYPE_Q8_K),
    T_(15, "Q8_K", 256, 292, 1, DS_TYPE_Q8_K),
    T_(16, "IQ2_XXS", 256, 66, 0, DS_TYPE_Q8_K),
    T_(17, "IQ2_XS", 256, 74, 0, DS_TYPE_Q8_K),
    T_(18, "IQ3_XXS", 256, 98, 0, DS_TYPE_Q8_K),
    T_(19, "IQ1_S", 256, 50, 0, DS_TYPE_Q8_K),
    T_(20, "IQ4_NL", 32, 18, 0, DS_TYPE_Q8_0),
    T_(21, "IQ3_S", 256, 110, 0, DS_TYPE_Q8_K),
    T_(22, "IQ2_S", 256, 82, 0, DS_TYPE_Q8_K),
    T_(23, "IQ4_XS", 256, 136, 0, DS_TYPE_Q8_K),
    T_(24, "I8", 1, 1, 0, DS_TYPE_F32),
    T_(25, "I16", 1, 2, 0, DS_TYPE_F32),
    T_(26, "I32", 1, 4, 0, DS_TYPE_F32),
    T_(27, "I64", 1, 8, 0, DS_TYPE_F32),
    T_(28, "F64", 1, 8, 0, DS_TYPE_F32),
    T_(29, "IQ1_M", 256, 56, 0, DS_TYPE_Q8_K),
    T_(30, "BF16", 1, 2, 1, DS_TYPE_F32),
    /* 31..33: row-interleaved Q4_0 variants written by 2024 llama-quantize; since removed
     * from ggml, but files exist. Per block the size is that of Q4_0 (36..38: IQ4_NL ditto,
     * never written to files, kept for names). */
    T_(31, "Q4_0_4_4", 32, 18, 0, DS_TYPE_Q8_0),
    T_(32, "Q4_0_4_8", 32, 18, 0, DS_TYPE_Q8_0),
    T_(33, "Q4_0_8_8", 32, 18, 0, DS_TYPE_Q8_0),
    T_(34, "TQ1_0", 256, 54, 0, DS_TYPE_Q8_K),
    T_(35, "TQ2_0", 256, 66, 0, DS_TYPE_Q8_K),
    T_(36, "IQ4_NL_4_4", 32, 18, 0, DS_TYPE_Q8_0),
    T_(37, "IQ4_NL_4_8", 32, 18, 0, DS_TYPE_Q8_0),
    T_(38, "IQ4_NL_8_8", 32, 18, 0, DS_TYPE_Q8_0),
    T_(39, "MXFP4", 32, 17, 0, DS_TYPE_Q8_0),
};
#undef T_

const ds_type_info *ds_type_info_get(uint32_t type) {
    if (type >= DS_TYPE_COUNT || !g_types[type].name) return NULL;
    return &g_types[type];
}

const char *ds_type_name(uint32_t type) {
    static _Thread_local char buf[32];
    const ds_type_info *ti = ds_type_info_get(type);
    if (ti) return ti->name;
    snprintf(buf, sizeof buf, "unknown(%u)", (unsigned)type);
    return buf;
}

size_t ds_row_bytes(ds_type t, int64_t n) {
    const ds_type_info *ti = ds_type_info_get((uint32_t)t);
    if (!ti || n < 0 || n % ti->block) return 0;
    return (size_t)(n / ti->block) * (size_t)ti->bytes;
}

/* ------------------------------------------------------------------ scalar dequantisation */

static inline float h2f(uint16_t h) { return ds_fp16_to_fp32(h); }

static void deq_f32(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * 4); }

static void deq_f16(const void *src, float *dst, int64_t n) {
    const uint8_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = h2f(ds_rd16(s + 2 * i));
}

static void deq_bf16(const void *src, float *dst, int64_t n) {
    const uint8_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = ds_bf16_to_fp32(ds_rd16(s + 2 * i));
}

static void deq_q4_0(const void *src, float *dst, int64_t n) {
    const blk_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK32; i++, b++, dst += QK32) {
        float d = h2f(b->d);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)((b->qs[j] & 15) - 8);
            dst[j + 16] = d * (float)((b->qs[j] >> 4) - 8);
        }
    }
}

static void deq_q4_1(const void *src, float *dst, int64_t n) {
    const blk_q4_1 *b = src;
    for (int64_t i = 0; i < n / QK32; i++, b++, dst += QK32) {
        float d = h2f(b->d), m = h2f(b->m);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)(b->qs[j] & 15) + m;
            dst[j + 16] = d * (float)(b->qs[j] >> 4) + m;
        }
    }
}

/* 5th bit of element j (0..31) of a Q5_0/Q5_1 block is bit j of the little-endian qh word. */
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static void deq_q5_0(const void *src, float *dst, int64_t n) {
    const blk_q5_0 *b = src;
    for (int64_t i = 0; i < n / QK32; i++, b++, dst += QK32) {
        float d = h2f(b->d);
        uint32_t qh = rd32(b->qh);
        for (int j = 0; j < 16; j++) {
            int lo = (b->qs[j] & 15) | (int)(((qh >> j) & 1) << 4);
            int hi = (b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            dst[j] = d * (float)(lo - 16);
            dst[j + 16] = d * (float)(hi - 16);
        }
    }
}

static void deq_q5_1(const void *src, float *dst, int64_t n) {
    const blk_q5_1 *b = src;
    for (int64_t i = 0; i < n / QK32; i++, b++, dst += QK32) {
        float d = h2f(b->d), m = h2f(b->m);
        uint32_t qh = rd32(b->qh);
        for (int j = 0; j < 16; j++) {
            int lo = (b->qs[j] & 15) | (int)(((qh >> j) & 1) << 4);
            int hi = (b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            dst[j] = d * (float)lo + m;
            dst[j + 16] = d * (float)hi + m;
        }
    }
}

static void deq_q8_0(const void *src, float *dst, int64_t n) {
    const blk_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK32; i++, b++, dst += QK32) {
        float d = h2f(b->d);
        for (int j = 0; j < 32; j++) dst[j] = (float)b->qs[j] * d;
    }
}

static void deq_q8_1(const void *src, float *dst, int64_t n) {
    const blk_q8_1 *b = src;
    for (int64_t i = 0; i < n / QK32; i++, b++, dst += QK32) {
        float d = h2f(b->d);
        for (int j = 0; j < 32; j++) dst[j] = (float)b->qs[j] * d;
    }
}

/* Q4_K: sub-block j (32 elements) uses low nibbles of qs[32*(j/2) ..] for even j, high for odd. */
static void deq_q4_K(const void *src, float *dst, int64_t n) {
    const blk_q4_K *b = src;
    for (int64_t i = 0; i < n / QKK; i++, b++) {
        float d = h2f(b->d), dmin = h2f(b->dmin);
        uint8_t sc[8], mn[8];
        ds_kq_scale_min(b->scales, sc, mn);
        for (int j = 0; j < 8; j++, dst += 32) {
            float ds = d * (float)sc[j], dm = dmin * (float)mn[j];
            const uint8_t *q = b->qs + 32 * (j / 2);
            int sh = (j & 1) * 4;
            for (int l = 0; l < 32; l++) dst[l] = ds * (float)((q[l] >> sh) & 15) - dm;
        }
    }
}

/* Q5_K: as Q4_K plus bit j of qh[l] as the 5th bit of element l of sub-block j. */
static void deq_q5_K(const void *src, float *dst, int64_t n) {
    const blk_q5_K *b = src;
    for (int64_t i = 0; i < n / QKK; i++, b++) {
        float d = h2f(b->d), dmin = h2f(b->dmin);
        uint8_t sc[8], mn[8];
        ds_kq_scale_min(b->scales, sc, mn);
        for (int j = 0; j < 8; j++, dst += 32) {
            float ds = d * (float)sc[j], dm = dmin * (float)mn[j];
            const uint8_t *q = b->qs + 32 * (j / 2);
            int sh = (j & 1) * 4;
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> sh) & 15) | (((b->qh[l] >> j) & 1) << 4);
                dst[l] = ds * (float)v - dm;
            }
        }
    }
}

/* Q6_K value of element e (0..255): half h = e/128, r = e%128, quarter k = r/32, l = r%32:
 * low 4 bits from ql[64h + l + 32*(k&1)] (nibble k/2), high 2 bits from qh[32h + l] (bits 2k). */
static inline int q6_value(const blk_q6_K *b, int e) {
    int h = e >> 7, r = e & 127, k = r >> 5, l = r & 31;
    int lo = (b->ql[64 * h + l + 32 * (k & 1)] >> (4 * (k >> 1))) & 15;
    int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
    return (lo | (hi << 4)) - 32;
}

static void deq_q6_K(const void *src, float *dst, int64_t n) {
    const blk_q6_K *b = src;
    for (int64_t i = 0; i < n / QKK; i++, b++, dst += QKK) {
        float d = h2f(b->d);
        for (int g = 0; g < 16; g++) {
            float ds = d * (float)b->scales[g];
            for (int l = 0; l < 16; l++) dst[16 * g + l] = ds * (float)q6_value(b, 16 * g + l);
        }
    }
}

static void deq_q8_K(const void *src, float *dst, int64_t n) {
    const blk_q8_K *b = src;
    for (int64_t i = 0; i < n / QKK; i++, b++, dst += QKK)
        for (int j = 0; j < QKK; j++) dst[j] = b->d * (float)b->qs[j];
}

/* ------------------------------------------------------------------ scalar activation quantisers */

/* Round to nearest, ties to even, for |x| < 2^22 — the same as cvtps2dq in the default MXCSR
 * mode, which is what keeps the SIMD quantisers bit-identical to these. */
static inline int round_even(float x) {
    float t = (x + 12582912.0f) - 12582912.0f;
    return (int)t;
}

static inline float safe_inv(float d) {
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    return isfinite(id) ? id : 0.0f;
}

float ds_q8_scale_fp16(float amax, uint16_t *d16) {
    *d16 = ds_fp32_to_fp16(amax / 127.0f);
    return safe_inv(ds_fp16_to_fp32(*d16));
}

float ds_q8k_scale(float amax, float *d) {
    *d = amax / 127.0f;
    return safe_inv(*d);
}

/* Quantised values are clamped to [-127, 127]: x*id can exceed 127 only when d is a rounded-down
 * fp16 subnormal, and -128 must never appear (the SIMD dot kernels rely on it). */
static inline int8_t clamp127(int v) { return (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v); }

/* Q8_0 / Q8_1: d = amax/127 rounded to fp16; q = round(x / d) using the rounded d, so the
 * round-trip error is at most d/2 per element (up to float rounding). */
static void quant_q8_0(const float *x, void *dst, int64_t n) {
    blk_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK32; i++, b++, x += QK32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float id = ds_q8_scale_fp16(amax, &b->d);
        for (int j = 0; j < 32; j++) b->qs[j] = clamp127(round_even(x[j] * id));
    }
}

static void quant_q8_1(const float *x, void *dst, int64_t n) {
    blk_q8_1 *b = dst;
    for (int64_t i = 0; i < n / QK32; i++, b++, x += QK32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float id = ds_q8_scale_fp16(amax, &b->d);
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            b->qs[j] = clamp127(round_even(x[j] * id));
            sum += b->qs[j];
        }
        b->s = ds_fp32_to_fp16(ds_fp16_to_fp32(b->d) * (float)sum);
    }
}

/* Q8_K: float d = amax/127, q = round(x * (1/d)) in [-127, 127]. */
static void quant_q8_K(const float *x, void *dst, int64_t n) {
    blk_q8_K *b = dst;
    for (int64_t i = 0; i < n / QKK; i++, b++, x += QKK) {
        float amax = 0;
        for (int j = 0; j < QKK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float id = ds_q8k_scale(amax, &b->d);
        for (int j = 0; j < QKK; j++) b->qs[j] = clamp127(round_even(x[j] * id));
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += b->qs[16 * g + l];
            b->bsums[g] = (int16_t)s;
        }
    }
}

static void quant_f32(const float *x, void *dst, int64_t n) { memcpy(dst, x, (size_t)n * 4); }

/* ------------------------------------------------------------------ scalar dot products */

static float dot_f32(int64_t n, const void *w, const void *a) {
    const float *x = w, *y = a;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * y[i];
    return (float)s;
}

static float dot_f16(int64_t n, const void *w, const void *a) {
    const uint8_t *x = w; const float *y = a;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)h2f(ds_rd16(x + 2 * i)) * y[i];
    return (float)s;
}

static float dot_bf16(int64_t n, const void *w, const void *a) {
    const uint8_t *x = w; const float *y = a;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)ds_bf16_to_fp32(ds_rd16(x + 2 * i)) * y[i];
    return (float)s;
}

static float dot_q4_0(int64_t n, const void *w, const void *a) {
    const blk_q4_0 *x = w; const blk_q8_0 *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK32; i++) {
        int si = 0;
        for (int j = 0; j < 16; j++)
            si += ((x[i].qs[j] & 15) - 8) * y[i].qs[j] + ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
        s += (double)h2f(x[i].d) * h2f(y[i].d) * si;
    }
    return (float)s;
}

static float dot_q4_1(int64_t n, const void *w, const void *a) {
    const blk_q4_1 *x = w; const blk_q8_1 *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK32; i++) {
        int si = 0;
        for (int j = 0; j < 16; j++)
            si += (x[i].qs[j] & 15) * y[i].qs[j] + (x[i].qs[j] >> 4) * y[i].qs[j + 16];
        s += (double)h2f(x[i].d) * h2f(y[i].d) * si + (double)h2f(x[i].m) * h2f(y[i].s);
    }
    return (float)s;
}

static float dot_q5_0(int64_t n, const void *w, const void *a) {
    const blk_q5_0 *x = w; const blk_q8_0 *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK32; i++) {
        uint32_t qh = rd32(x[i].qh);
        int si = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (x[i].qs[j] & 15) | (int)(((qh >> j) & 1) << 4);
            int hi = (x[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            si += (lo - 16) * y[i].qs[j] + (hi - 16) * y[i].qs[j + 16];
        }
        s += (double)h2f(x[i].d) * h2f(y[i].d) * si;
    }
    return (float)s;
}

static float dot_q5_1(int64_t n, const void *w, const void *a) {
    const blk_q5_1 *x = w; const blk_q8_1 *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK32; i++) {
        uint32_t qh = rd32(x[i].qh);
        int si = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (x[i].qs[j] & 15) | (int)(((qh >> j) & 1) << 4);
            int hi = (x[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            si += lo * y[i].qs[j] + hi * y[i].qs[j + 16];
        }
        s += (double)h2f(x[i].d) * h2f(y[i].d) * si + (double)h2f(x[i].m) * h2f(y[i].s);
    }
    return (float)s;
}

static float dot_q8_0(int64_t n, const void *w, const void *a) {
    const blk_q8_0 *x = w; const blk_q8_0 *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK32; i++) {
        int si = 0;
        for (int j = 0; j < 32; j++) si += x[i].qs[j] * y[i].qs[j];
        s += (double)h2f(x[i].d) * h2f(y[i].d) * si;
    }
    return (float)s;
}

static float dot_q8_1(int64_t n, const void *w, const void *a) {
    const blk_q8_1 *x = w; const blk_q8_1 *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK32; i++) {
        int si = 0;
        for (int j = 0; j < 32; j++) si += x[i].qs[j] * y[i].qs[j];
        s += (double)h2f(x[i].d) * h2f(y[i].d) * si;
    }
    return (float)s;
}

static float dot_q4_K(int64_t n, const void *w, const void *a) {
    const blk_q4_K *x = w; const blk_q8_K *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QKK; i++) {
        uint8_t sc[8], mn[8];
        ds_kq_scale_min(x[i].scales, sc, mn);
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            int sh = (j & 1) * 4, dj = 0, aj = 0;
            for (int l = 0; l < 32; l++) {
                dj += ((q[l] >> sh) & 15) * y[i].qs[32 * j + l];
                aj += y[i].qs[32 * j + l];
            }
            sumi += sc[j] * dj;
            summ += mn[j] * aj;
        }
        s += (double)y[i].d * ((double)h2f(x[i].d) * sumi - (double)h2f(x[i].dmin) * summ);
    }
    return (float)s;
}

static float dot_q5_K(int64_t n, const void *w, const void *a) {
    const blk_q5_K *x = w; const blk_q8_K *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QKK; i++) {
        uint8_t sc[8], mn[8];
        ds_kq_scale_min(x[i].scales, sc, mn);
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            int sh = (j & 1) * 4, dj = 0, aj = 0;
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> sh) & 15) | (((x[i].qh[l] >> j) & 1) << 4);
                dj += v * y[i].qs[32 * j + l];
                aj += y[i].qs[32 * j + l];
            }
            sumi += sc[j] * dj;
            summ += mn[j] * aj;
        }
        s += (double)y[i].d * ((double)h2f(x[i].d) * sumi - (double)h2f(x[i].dmin) * summ);
    }
    return (float)s;
}

static float dot_q6_K(int64_t n, const void *w, const void *a) {
    const blk_q6_K *x = w; const blk_q8_K *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QKK; i++) {
        int sumi = 0;
        for (int g = 0; g < 16; g++) {
            int dg = 0;
            for (int l = 0; l < 16; l++) dg += q6_value(&x[i], 16 * g + l) * y[i].qs[16 * g + l];
            sumi += x[i].scales[g] * dg;
        }
        s += (double)y[i].d * h2f(x[i].d) * sumi;
    }
    return (float)s;
}

static float dot_q8_K(int64_t n, const void *w, const void *a) {
    const blk_q8_K *x = w; const blk_q8_K *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QKK; i++) {
        int si = 0;
        for (int j = 0; j < QKK; j++) si += x[i].qs[j] * y[i].qs[j];
        s += (double)x[i].d * y[i].d * si;
    }
    return (float)s;
}

/* ------------------------------------------------------------------ dispatch */

static void fill_scalar(ds_quant_kernels *k) {
    memset(k, 0, sizeof *k);
#define S_(T, f) k->dequant[DS_TYPE_##T] = deq_##f; k->dot[DS_TYPE_##T] = dot_##f
    S_(F32, f32); S_(F16, f16); S_(BF16, bf16);
    S_(Q4_0, q4_0); S_(Q4_1, q4_1); S_(Q5_0, q5_0); S_(Q5_1, q5_1);
    S_(Q8_0, q8_0); S_(Q8_1, q8_1);
    S_(Q4_K, q4_K); S_(Q5_K, q5_K); S_(Q6_K, q6_K); S_(Q8_K, q8_K);
#undef S_
    k->quant[DS_TYPE_F32] = quant_f32;
    k->quant[DS_TYPE_Q8_0] = quant_q8_0;
    k->quant[DS_TYPE_Q8_1] = quant_q8_1;
    k->quant[DS_TYPE_Q8_K] = quant_q8_K;
}

/* Overlay the non-NULL entries of `top` onto `k`. A level that brings a dot kernel but no rows
 * kernel drops the lower level's rows kernel (ds_vec_dot_rows then loops over the new dot); a
 * level may also bring a rows kernel alone (the AVX-512 32-element formats do). */
static void overlay(ds_quant_kernels *k, const ds_quant_kernels *top) {
    for (int t = 0; t < DS_TYPE_COUNT; t++) {
        if (top->dequant[t]) k->dequant[t] = top->dequant[t];
        if (top->quant[t]) k->quant[t] = top->quant[t];
        if (top->dot[t]) { k->dot[t] = top->dot[t]; k->rows[t] = top->rows[t]; }
        else if (top->rows[t]) k->rows[t] = top->rows[t];
    }
}

/* Strong references: with weak ones the linker would not pull the SIMD objects out of
 * libdsinfer.a and every build would silently run the scalar kernels. */
extern void ds_quant_fill_avx2(ds_quant_kernels *k);
extern void ds_quant_fill_avx512(ds_quant_kernels *k);


enum { LVL_SCALAR, LVL_AVX2, LVL_AVX512, LVL_N };
static const char *const g_level_names[LVL_N] = { "scalar", "avx2", "avx512" };
static ds_quant_kernels g_levels[LVL_N];
static int g_level_ok[LVL_N];
static int g_best;
static const ds_quant_kernels *g_active;
static int g_active_level;

static void quant_init(void) {
    fill_scalar(&g_levels[LVL_SCALAR]);
    g_level_ok[LVL_SCALAR] = 1;
    g_best = LVL_SCALAR;
    int avx2 = 0, avx512 = 0;
    ds_cpu_simd_levels(&avx2, &avx512);
    g_levels[LVL_AVX2] = g_levels[LVL_SCALAR];
    if (avx2) {
        ds_quant_kernels top;
        memset(&top, 0, sizeof top);
        ds_quant_fill_avx2(&top);
        overlay(&g_levels[LVL_AVX2], &top);
        g_level_ok[LVL_AVX2] = 1;
        g_best = LVL_AVX2;
    }
    g_levels[LVL_AVX512] = g_levels[LVL_AVX2];
    if (avx512 && g_level_ok[LVL_AVX2]) {
        ds_quant_kernels top;
        memset(&top, 0, sizeof top);
        ds_quant_fill_avx512(&top);
        overlay(&g_levels[LVL_AVX512], &top);
        g_level_ok[LVL_AVX512] = 1;
        g_best = LVL_AVX512;
    }
    g_active_level = g_best;
    g_active = &g_levels[g_best];
}

__attribute__((constructor)) static void quant_ctor(void) { if (!g_active) quant_init(); }

/* Only reached if a kernel is needed before the constructor ran (another constructor). */
__attribute__((noinline, cold)) static const ds_quant_kernels *quant_init_slow(void) {
    quant_init();
    return g_active;
}

static inline const ds_quant_kernels *K(void) {
    const ds_quant_kernels *k = g_active;
    return __builtin_expect(k != NULL, 1) ? k : quant_init_slow();
}

const char *ds_quant_level(void) { K(); return g_level_names[g_active_level]; }

void ds_quant_force_level(const char *level) {
    K();
    int want = g_best;
    if (level) {
        for (int l = 0; l < LVL_N; l++)
            if (!strcmp(level, g_level_names[l])) want = l;
        while (want > 0 && !g_level_ok[want]) want--;   /* not available here: next lower */
    }
    g_active_level = want;
    g_active = &g_levels[want];
}

static const ds_quant_kernels *g_ref_tab(void) { K(); return &g_levels[LVL_SCALAR]; }

#define CHECK_TYPE(t, arr) DS_ASSERT((unsigned)(t) < DS_TYPE_COUNT && (arr)[t] != NULL)

void ds_dequant_row(ds_type t, const void *src, float *dst, int64_t n) {
    const ds_quant_kernels *k = K();
    CHECK_TYPE(t, k->dequant);
    k->dequant[t](src, dst, n);
}

void ds_dequant_row_ref(ds_type t, const void *src, float *dst, int64_t n) {
    const ds_quant_kernels *k = g_ref_tab();
    CHECK_TYPE(t, k->dequant);
    k->dequant[t](src, dst, n);
}

void ds_quantize_row(ds_type dot_type, const float *src, void *dst, int64_t n) {
    const ds_quant_kernels *k = K();
    CHECK_TYPE(dot_type, k->quant);
    k->quant[dot_type](src, dst, n);
}

void ds_quantize_row_ref(ds_type dot_type, const float *src, void *dst, int64_t n) {
    const ds_quant_kernels *k = g_ref_tab();
    CHECK_TYPE(dot_type, k->quant);
    k->quant[dot_type](src, dst, n);
}

/* The two hot entry points keep their fast path free of calls (a plain tail call through the
 * table); initialisation and the type check's failure go through a cold function. */
__attribute__((noinline, cold)) static ds_dot_fn dot_slow(ds_type t) {
    const ds_quant_kernels *k = K();
    CHECK_TYPE(t, k->dot);
    return k->dot[t];
}

float ds_vec_dot(ds_type t, int64_t n, const void *w, const void *a) {
    const ds_quant_kernels *k = g_active;
    ds_dot_fn f;
    if (__builtin_expect(k != NULL && (unsigned)t < DS_TYPE_COUNT, 1) && (f = k->dot[t]) != NULL)
        return f(n, w, a);
    return dot_slow(t)(n, w, a);
}

float ds_vec_dot_ref(ds_type t, int64_t n, const void *w, const void *a) {
    const ds_quant_kernels *k = g_ref_tab();
    CHECK_TYPE(t, k->dot);
    return k->dot[t](n, w, a);
}

__attribute__((noinline)) static void rows_loop(ds_dot_fn f, int64_t n, const uint8_t *p, size_t w_stride,
                                                int nrows, const void *a, float *out) {
    for (int r = 0; r < nrows; r++, p += w_stride) out[r] = f(n, p, a);
}

void ds_vec_dot_rows(ds_type t, int64_t n, const void *w, size_t w_stride, int nrows,
                     const void *a, float *out) {
    const ds_quant_kernels *k = g_active;
    ds_dot_rows_fn fr;
    if (__builtin_expect(k != NULL && (unsigned)t < DS_TYPE_COUNT, 1) && (fr = k->rows[t]) != NULL) {
        fr(n, w, w_stride, nrows, a, out);
        return;
    }
    k = K();
    if (k->rows[t]) { k->rows[t](n, w, w_stride, nrows, a, out); return; }
    rows_loop(dot_slow(t), n, w, w_stride, nrows, a, out);
}
