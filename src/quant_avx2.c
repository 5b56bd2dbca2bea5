/* quant_avx2.c — AVX2 + FMA + F16C kernels (selected at run time; see quant.c).
 *
 * Integer dot products use vpmaddubsw (unsigned 8-bit x signed 8-bit -> pairs summed in 16
 * bits) followed by vpmaddwd against ones or the per-sub-block scales. The 16-bit pair sums
 * cannot saturate here: activations are in [-127, 127] (our quantisers guarantee it) and the
 * unsigned operand is at most 63, except for Q8_0 x Q8_0 where the sign trick feeds |w| <= 128:
 * 2 * 128 * 127 = 32512 < 32767.
 *
 * Signed weights (Q4_0, Q5_0) are used as unsigned q and corrected with a shared per-block
 * maddubs(bias, a); Q6_K's -32 offset is corrected with the Q8_K bsums.
 *
 * Dequantisers are compiled without "fma" so the compiler cannot contract d*q + m and the
 * results stay bit-identical to the scalar reference. */
#include "quant_impl.h"

#include <immintrin.h>
#include <math.h>

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
/* No fma (see above). Also used for the helpers, so they inline into both kinds of function. */
#define T_DEQ __attribute__((target("avx2,f16c")))

/* ------------------------------------------------------------------ helpers */

/* Prefetch distance (see quant_avx512.c): with short rows, the same position a whole number
 * of row groups (>= PF_DIST bytes) ahead; long rows are streams of their own, prefetched
 * PF_DIST bytes ahead. */
#define PF_DIST 6144
static inline size_t pf_dist(size_t group_bytes) {
    return group_bytes <= 8192 ? (PF_DIST + group_bytes - 1) / group_bytes * group_bytes : PF_DIST;
}

static inline T_DEQ float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline T_DEQ int hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static inline T_DEQ float hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The two halves at p (d and m / d and s of a block) as floats in lanes 0 and 1. */
static inline T_DEQ __m128 h2x2(const void *p) {
    uint32_t v; memcpy(&v, p, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)v));
}
static inline T_DEQ __m128 h1(const void *p) {
    return _mm_cvtph_ps(_mm_cvtsi32_si128(ds_rd16(p)));
}

/* F16C scalar conversion (exact, like ds_fp16_to_fp32, without its branches). */
static inline T_DEQ float f16(uint16_t h) { return _cvtsh_ss(h); }

static inline T_DEQ __m256i ld256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline T_DEQ __m128i ld128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

/* 16 bytes of packed nibbles -> 32 bytes: low nibbles then high nibbles (the layout of the
 * 32-element legacy blocks). */
static inline T_DEQ __m256i nibbles32(const uint8_t *qs) {
    const __m256i sh = _mm256_set_epi64x(4, 4, 0, 0);
    __m256i b = _mm256_broadcastsi128_si256(ld128(qs));
    return _mm256_and_si256(_mm256_srlv_epi64(b, sh), _mm256_set1_epi8(0x0f));
}

/* 32-bit qh -> bytes 0x10 where bit j is set, for j = 0..31. */
static inline T_DEQ __m256i bits_to_0x10(uint32_t qh) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                                           0x0101010101010101LL, 0x0000000000000000LL);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* sum of (u8 q) * (s8 a) over 32 bytes as 8 int32 lanes. */
static inline T_DEQ __m256i dot_us(__m256i q, __m256i a) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(q, a), _mm256_set1_epi16(1));
}

/* ------------------------------------------------------------------ dequantisation */

static T_DEQ void deq_f16(const void *src, float *dst, int64_t n) {
    const uint8_t *s = src;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(ld128(s + 2 * i)));
        _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(ld128(s + 2 * i + 16)));
    }
    for (; i < n; i++) dst[i] = ds_fp16_to_fp32(ds_rd16(s + 2 * i));
}

static T_DEQ void deq_bf16(const void *src, float *dst, int64_t n) {
    const uint8_t *s = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_slli_epi32(_mm256_cvtepu16_epi32(ld128(s + 2 * i)), 16);
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(v));
    }
    for (; i < n; i++) dst[i] = ds_bf16_to_fp32(ds_rd16(s + 2 * i));
}

static T_DEQ void deq_q8_0(const void *src, float *dst, int64_t n) {
    const blk_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK32; i++, b++, dst += 32) {
        __m256 d = _mm256_set1_ps(f16(b->d));
        for (int k = 0; k < 4; k++) {
            __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + 8 * k)));
            _mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
        }
    }
}

/* 32 bytes (values 0..255 as unsigned, or signed when sgn) -> 32 floats v*d + m / v*d. */
static inline T_DEQ void store32(float *dst, __m256i q, __m256 d, __m256 m, int sgn, int add) {
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    __m128i parts[4] = { lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8) };
    for (int k = 0; k < 4; k++) {
        __m256i v = sgn ? _mm256_cvtepi8_epi32(parts[k]) : _mm256_cvtepu8_epi32(parts[k]);
        __m256 f = _mm256_mul_ps(d, _mm256_cvtepi32_ps(v));
        _mm256_storeu_ps(dst + 8 * k, add ? _mm256_add_ps(f, m) : f);
    }
}

static T_DEQ void deq_q4_0(const void *src, float *dst, int64_t n) {
    const blk_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK32; i++, b++, dst += 32) {
        __m256i q = _mm256_sub_epi8(nibbles32(b->qs), _mm256_set1_epi8(8));
        store32(dst, q, _mm256_set1_ps(f16(b->d)), _mm256_setzero_ps(), 1, 0);
    }
}

static T_DEQ void deq_q4_1(const void *src, float *dst, int64_t n) {
    const blk_q4_1 *b = src;
    for (int64_t i = 0; i < n / QK32; i++, b++, dst += 32)
        store32(dst, nibbles32(b->qs), _mm256_set1_ps(f16(b->d)),
                _mm256_set1_ps(f16(b->m)), 0, 1);
}

static T_DEQ void deq_q4_K(const void *src, float *dst, int64_t n) {
    const blk_q4_K *b = src;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t i = 0; i < n / QKK; i++, b++) {
        float d = f16(b->d), dmin = f16(b->dmin);
        uint8_t sc[8], mn[8];
        ds_kq_scale_min(b->scales, sc, mn);
        for (int k = 0; k < 4; k++, dst += 64) {
            __m256i q = ld256(b->qs + 32 * k);
            __m256 dm0 = _mm256_set1_ps(-(dmin * (float)mn[2 * k]));
            __m256 dm1 = _mm256_set1_ps(-(dmin * (float)mn[2 * k + 1]));
            store32(dst, _mm256_and_si256(q, m4), _mm256_set1_ps(d * (float)sc[2 * k]), dm0, 0, 1);
            store32(dst + 32, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                    _mm256_set1_ps(d * (float)sc[2 * k + 1]), dm1, 0, 1);
        }
    }
}

static T_DEQ void deq_q6_K(const void *src, float *dst, int64_t n) {
    const blk_q6_K *b = src;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    const __m256i off = _mm256_set1_epi8(32);
    for (int64_t i = 0; i < n / QKK; i++, b++) {
        float d = f16(b->d);
        for (int h = 0; h < 2; h++, dst += 128) {
            __m256i l0 = ld256(b->ql + 64 * h), l1 = ld256(b->ql + 64 * h + 32);
            __m256i qh = ld256(b->qh + 32 * h);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(qh, m30));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
            for (int k = 0; k < 4; k++) {
                __m256i v = _mm256_sub_epi8(q[k], off);
                /* 32 elements span scale groups 8h+2k and 8h+2k+1 */
                float d0 = d * (float)b->scales[8 * h + 2 * k], d1 = d * (float)b->scales[8 * h + 2 * k + 1];
                __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
                float *o = dst + 32 * k;
                __m256 D0 = _mm256_set1_ps(d0), D1 = _mm256_set1_ps(d1);
                _mm256_storeu_ps(o, _mm256_mul_ps(D0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo))));
                _mm256_storeu_ps(o + 8, _mm256_mul_ps(D0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)))));
                _mm256_storeu_ps(o + 16, _mm256_mul_ps(D1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi))));
                _mm256_storeu_ps(o + 24, _mm256_mul_ps(D1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)))));
            }
        }
    }
}

/* ------------------------------------------------------------------ activation quantisers */

/* 32 floats -> 32 int8 (round to nearest even, clamped to [-127, 127]) after scaling by id. */
static inline T_AVX2 __m256i q8_32(const float *x, __m256 id, int8_t *out) {
    __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), id));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), id));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), id));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), id));
    /* packs interleave the 128-bit lanes; a dword permute restores element order */
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    p = _mm256_max_epi8(p, _mm256_set1_epi8(-127));
    _mm256_storeu_si256((__m256i *)out, p);
    return p;
}

static inline T_AVX2 float amax32(const float *x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x)), _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8)));
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 16)));
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 24)));
    return hmax8(m);
}

/* Scales of 8 blocks at once from their amax: d16 = fp16(amax/127), returns 1/fp32(d16) or 0 —
 * the same IEEE operations as ds_q8_scale_fp16 (F16C rounds to nearest even like
 * ds_fp32_to_fp16), so the result is bit-identical to the scalar quantiser. */
static inline T_AVX2 __m256 q8_scales8(__m256 amax, __m128i *d16) {
    __m256 d = _mm256_div_ps(amax, _mm256_set1_ps(127.0f));
    *d16 = _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 id = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_cvtph_ps(*d16));
    __m256 ok = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), id), _mm256_set1_ps(INFINITY), _CMP_LT_OQ);
    return _mm256_and_ps(id, ok);   /* 1/0 = inf and NaN -> 0 */
}

/* Q8_0 (sum == 0) or Q8_1 (sum == 1; s = d * sum(q) in fp16); blocks of bsz bytes. */
static inline __attribute__((always_inline)) T_AVX2 void quant_q8_01(const float *x, uint8_t *dst, int64_t n, int sum) {
    const int bsz = sum ? 36 : 34;
    int64_t nb = n / QK32;
    for (int64_t i0 = 0; i0 < nb; i0 += 8) {
        int cnt = nb - i0 < 8 ? (int)(nb - i0) : 8;
        float am[8] = { 0 }, idv[8];
        uint16_t dv[8];
        for (int j = 0; j < cnt; j++) am[j] = amax32(x + 32 * (i0 + j));
        __m128i d16;
        _mm256_storeu_ps(idv, q8_scales8(_mm256_loadu_ps(am), &d16));
        _mm_storeu_si128((__m128i *)dv, d16);
        int sums[8] = { 0 };
        for (int j = 0; j < cnt; j++) {
            uint8_t *b = dst + (i0 + j) * bsz;
            memcpy(b, &dv[j], 2);
            __m256i q = q8_32(x + 32 * (i0 + j), _mm256_set1_ps(idv[j]), (int8_t *)b + bsz - 32);
            if (sum) sums[j] = hsum8i(dot_us(_mm256_set1_epi8(1), q));
        }
        if (sum) {   /* s = fp16(fp32(d16) * sum), 8 blocks at once */
            __m256 sv = _mm256_mul_ps(_mm256_cvtph_ps(d16), _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)sums)));
            uint16_t s16[8];
            _mm_storeu_si128((__m128i *)s16, _mm256_cvtps_ph(sv, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            for (int j = 0; j < cnt; j++) memcpy(dst + (i0 + j) * bsz + 2, &s16[j], 2);
        }
    }
}

static T_AVX2 void quant_q8_0(const float *x, void *dst, int64_t n) { quant_q8_01(x, dst, n, 0); }
static T_AVX2 void quant_q8_1(const float *x, void *dst, int64_t n) { quant_q8_01(x, dst, n, 1); }

static T_AVX2 void quant_q8_K(const float *x, void *dst, int64_t n) {
    blk_q8_K *b = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QKK; i++, b++, x += QKK) {
        __m256 m0 = _mm256_setzero_ps(), m1 = m0;
        for (int k = 0; k < QKK; k += 16) {
            m0 = _mm256_max_ps(m0, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)));
            m1 = _mm256_max_ps(m1, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k + 8)));
        }
        float id = ds_q8k_scale(hmax8(_mm256_max_ps(m0, m1)), &b->d);
        __m256 vid = _mm256_set1_ps(id);
        /* |x*id| <= 127 up to rounding (clamped anyway); bsums from the bytes: per 32-byte chunk
         * 8 int32 lanes (4 per group of 16), reduced with two rounds of hadd per 4 chunks */
        __m256i gs[2];
        for (int h = 0; h < 2; h++) {
            __m256i s4[4];
            for (int k = 0; k < 4; k++) {
                __m256i q = q8_32(x + 128 * h + 32 * k, vid, b->qs + 128 * h + 32 * k);
                s4[k] = dot_us(_mm256_set1_epi8(1), q);
            }
            __m256i g = _mm256_hadd_epi32(_mm256_hadd_epi32(s4[0], s4[1]), _mm256_hadd_epi32(s4[2], s4[3]));
            gs[h] = _mm256_permutevar8x32_epi32(g, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        }
        __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(gs[0], gs[1]), 0xd8);
        _mm256_storeu_si256((__m256i *)b->bsums, p);
    }
}

/* ------------------------------------------------------------------ float dots */

static T_AVX2 float dot_f32(int64_t n, const void *w, const void *a) {
    const float *x = w, *y = a;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm_prefetch((const char *)(x + i) + PF_DIST, _MM_HINT_T0);
        _mm_prefetch((const char *)(x + i) + PF_DIST + 64, _MM_HINT_T0);
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

static T_AVX2 float dot_f16(int64_t n, const void *w, const void *a) {
    const uint8_t *x = w; const float *y = a;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm_prefetch((const char *)(x + 2 * i) + PF_DIST, _MM_HINT_T0);
        s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(ld128(x + 2 * i)), _mm256_loadu_ps(y + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(ld128(x + 2 * i + 16)), _mm256_loadu_ps(y + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_cvtph_ps(ld128(x + 2 * i + 32)), _mm256_loadu_ps(y + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_cvtph_ps(ld128(x + 2 * i + 48)), _mm256_loadu_ps(y + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(ld128(x + 2 * i)), _mm256_loadu_ps(y + i), s0);
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += ds_fp16_to_fp32(ds_rd16(x + 2 * i)) * y[i];
    return s;
}

static inline T_AVX2 __m256 bf16x8(const uint8_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(ld128(p)), 16));
}

static T_AVX2 float dot_bf16(int64_t n, const void *w, const void *a) {
    const uint8_t *x = w; const float *y = a;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        if (!(i & 31)) _mm_prefetch((const char *)(x + 2 * i) + PF_DIST, _MM_HINT_T0);
        s0 = _mm256_fmadd_ps(bf16x8(x + 2 * i), _mm256_loadu_ps(y + i), s0);
        s1 = _mm256_fmadd_ps(bf16x8(x + 2 * i + 16), _mm256_loadu_ps(y + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(bf16x8(x + 2 * i), _mm256_loadu_ps(y + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += ds_bf16_to_fp32(ds_rd16(x + 2 * i)) * y[i];
    return s;
}

/* ------------------------------------------------------------------ 32-element block dots
 *
 * Each is written once as a multi-row kernel (R rows share the activation loads and its
 * scale), instantiated for R = 4 and R = 1; dot() is the R = 1 case. */

#define ROWS_BODY_BEGIN(R)                                                           \
    __m256 acc[R]; __m128 accm[R];                                                   \
    _Pragma("GCC unroll 4") for (int r = 0; r < (R); r++) {                          \
        acc[r] = _mm256_setzero_ps(); accm[r] = _mm_setzero_ps(); }

#define ROWS_BODY_END(R)                                                             \
    _Pragma("GCC unroll 4") for (int r = 0; r < (R); r++)                            \
        out[r] = hsum8(acc[r]) + _mm_cvtss_f32(_mm_movehdup_ps(accm[r]));

/* Q4_1 x Q8_1: d_w*d_a*sum(q*a) + m_w*s_a. */
static inline __attribute__((always_inline)) T_AVX2 void
q4_1_rows(int R, int nb, const uint8_t *w, size_t stride, const blk_q8_1 *y, float *out, size_t pfd) {
    ROWS_BODY_BEGIN(4)
    for (int i = 0; i < nb; i++) {
        __m128 ya = h2x2(&y[i].d);           /* [d_a, s_a] */
        __m256i av = ld256(y[i].qs);
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const blk_q4_1 *x = (const blk_q4_1 *)(w + r * stride) + i;
            _mm_prefetch((const char *)x + pfd, _MM_HINT_T0);
            __m128 s = _mm_mul_ps(h2x2(&x->d), ya);   /* [d_w*d_a, m_w*s_a] */
            __m256i p = dot_us(nibbles32(x->qs), av);
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), _mm256_cvtepi32_ps(p), acc[r]);
            accm[r] = _mm_add_ps(accm[r], s);
        }
    }
    ROWS_BODY_END(R)
}

/* Q4_0 x Q8_0: sum((q-8)*a) = maddubs(q, a) - maddubs(8, a), the latter shared by the rows. */
static inline __attribute__((always_inline)) T_AVX2 void
q4_0_rows(int R, int nb, const uint8_t *w, size_t stride, const blk_q8_0 *y, float *out, size_t pfd) {
    ROWS_BODY_BEGIN(4)
    const __m256i ones = _mm256_set1_epi16(1);
    for (int i = 0; i < nb; i++) {
        __m128 da = h1(&y[i].d);
        __m256i av = ld256(y[i].qs);
        __m256i bias = _mm256_maddubs_epi16(_mm256_set1_epi8(8), av);
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const blk_q4_0 *x = (const blk_q4_0 *)(w + r * stride) + i;
            _mm_prefetch((const char *)x + pfd, _MM_HINT_T0);
            __m128 s = _mm_mul_ss(h1(&x->d), da);
            __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(nibbles32(x->qs), av), bias);
            __m256i p = _mm256_madd_epi16(p16, ones);
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), _mm256_cvtepi32_ps(p), acc[r]);
        }
    }
    ROWS_BODY_END(R)
}

/* Q5_0 x Q8_0: as Q4_0 with the 5th bit and bias 16. */
static inline __attribute__((always_inline)) T_AVX2 void
q5_0_rows(int R, int nb, const uint8_t *w, size_t stride, const blk_q8_0 *y, float *out, size_t pfd) {
    ROWS_BODY_BEGIN(4)
    const __m256i ones = _mm256_set1_epi16(1);
    for (int i = 0; i < nb; i++) {
        __m128 da = h1(&y[i].d);
        __m256i av = ld256(y[i].qs);
        __m256i bias = _mm256_maddubs_epi16(_mm256_set1_epi8(16), av);
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const blk_q5_0 *x = (const blk_q5_0 *)(w + r * stride) + i;
            _mm_prefetch((const char *)x + pfd, _MM_HINT_T0);
            uint32_t qh; memcpy(&qh, x->qh, 4);
            __m128 s = _mm_mul_ss(h1(&x->d), da);
            __m256i q = _mm256_or_si256(nibbles32(x->qs), bits_to_0x10(qh));
            __m256i p = _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(q, av), bias), ones);
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), _mm256_cvtepi32_ps(p), acc[r]);
        }
    }
    ROWS_BODY_END(R)
}

/* Q5_1 x Q8_1. */
static inline __attribute__((always_inline)) T_AVX2 void
q5_1_rows(int R, int nb, const uint8_t *w, size_t stride, const blk_q8_1 *y, float *out, size_t pfd) {
    ROWS_BODY_BEGIN(4)
    for (int i = 0; i < nb; i++) {
        __m128 ya = h2x2(&y[i].d);
        __m256i av = ld256(y[i].qs);
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const blk_q5_1 *x = (const blk_q5_1 *)(w + r * stride) + i;
            _mm_prefetch((const char *)x + pfd, _MM_HINT_T0);
            uint32_t qh; memcpy(&qh, x->qh, 4);
            __m128 s = _mm_mul_ps(h2x2(&x->d), ya);
            __m256i q = _mm256_or_si256(nibbles32(x->qs), bits_to_0x10(qh));
            __m256i p = dot_us(q, av);
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), _mm256_cvtepi32_ps(p), acc[r]);
            accm[r] = _mm_add_ps(accm[r], s);
        }
    }
    ROWS_BODY_END(R)
}

/* Q8_0 x Q8_0 (also Q8_1 x Q8_1, same layout apart from the 2-byte s): sign trick,
 * maddubs(|w|, sign(a, w)). */
static inline __attribute__((always_inline)) T_AVX2 void
q8_rows(int R, int nb, int wsz, int asz, const uint8_t *w, size_t stride, const uint8_t *y, float *out, size_t pfd) {
    ROWS_BODY_BEGIN(4)
    for (int i = 0; i < nb; i++) {
        const uint8_t *yb = y + (size_t)i * asz;
        __m128 da = h1(yb);
        __m256i av = ld256(yb + asz - 32);
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const uint8_t *xb = w + r * stride + (size_t)i * wsz;
            _mm_prefetch((const char *)xb + pfd, _MM_HINT_T0);
            __m128 s = _mm_mul_ss(h1(xb), da);
            __m256i wv = ld256(xb + wsz - 32);
            __m256i p = dot_us(_mm256_abs_epi8(wv), _mm256_sign_epi8(av, wv));
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), _mm256_cvtepi32_ps(p), acc[r]);
        }
    }
    ROWS_BODY_END(R)
}


#define DEF_ROWS32(name, bs, call1, call4)                                                     \
    static T_AVX2 float dot_##name(int64_t n, const void *w, const void *a) {                  \
        float o; int nb = (int)(n / QK32); const uint8_t *wp = w; size_t stride = 0;           \
        size_t pfd = pf_dist((size_t)nb * (bs)); /* callers loop over consecutive rows */     \
        float *out = &o; (void)stride; call1; return o;                                        \
    }                                                                                          \
    static T_AVX2 void rows_##name(int64_t n, const void *w, size_t stride, int nrows,         \
                                   const void *a, float *out) {                                \
        int nb = (int)(n / QK32); const uint8_t *wp = w; int r = 0;                            \
        size_t pfd = pf_dist(4 * stride);                                                      \
        for (; r + 4 <= nrows; r += 4, wp += 4 * stride, out += 4) { call4; }                  \
        pfd = pf_dist(stride);                                                                 \
        for (; r < nrows; r++, wp += stride, out++) { call1; }                                 \
    }

DEF_ROWS32(q4_1, 20, q4_1_rows(1, nb, wp, stride, a, out, pfd), q4_1_rows(4, nb, wp, stride, a, out, pfd))
DEF_ROWS32(q4_0, 18, q4_0_rows(1, nb, wp, stride, a, out, pfd), q4_0_rows(4, nb, wp, stride, a, out, pfd))
DEF_ROWS32(q5_0, 22, q5_0_rows(1, nb, wp, stride, a, out, pfd), q5_0_rows(4, nb, wp, stride, a, out, pfd))
DEF_ROWS32(q5_1, 24, q5_1_rows(1, nb, wp, stride, a, out, pfd), q5_1_rows(4, nb, wp, stride, a, out, pfd))
DEF_ROWS32(q8_0, 34, q8_rows(1, nb, 34, 34, wp, stride, a, out, pfd), q8_rows(4, nb, 34, 34, wp, stride, a, out, pfd))
DEF_ROWS32(q8_1, 36, q8_rows(1, nb, 36, 36, wp, stride, a, out, pfd), q8_rows(4, nb, 36, 36, wp, stride, a, out, pfd))

/* ------------------------------------------------------------------ K-quant dots */

/* Broadcast 16-bit word j of the 128-bit lane to all 16 words (control for vpshufb). */
static inline T_AVX2 __m256i word_ctrl(int lo_word, int hi_word) {
    __m128i l = _mm_set1_epi16((short)(0x0100 * (2 * lo_word + 1) + 2 * lo_word));
    __m128i h = _mm_set1_epi16((short)(0x0100 * (2 * hi_word + 1) + 2 * hi_word));
    return _mm256_set_m128i(h, l);
}

/* The 8 scales and mins of a Q4_K/Q5_K block as 8 x int16 each (xmm). */
static inline T_AVX2 void kq_scales16(const uint8_t *s12, __m128i *sc, __m128i *mn) {
    uint32_t u[3]; memcpy(u, s12, 12);
    uint32_t s0 = u[0] & 0x3f3f3f3fu, m0 = u[1] & 0x3f3f3f3fu;
    uint32_t s1 = (u[2] & 0x0f0f0f0fu) | ((u[0] >> 2) & 0x30303030u);
    uint32_t m1 = ((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 2) & 0x30303030u);
    *sc = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)s1, (int)s0));
    *mn = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)m1, (int)m0));
}

/* sum_j mn[j] * (bsums[2j] + bsums[2j+1]) */
static inline T_AVX2 int kq_mins(__m128i mn, const int16_t *bsums) {
    __m128i b0 = ld128(bsums), b1 = ld128(bsums + 8);
    __m128i pair = _mm_hadd_epi16(b0, b1);
    __m128i p = _mm_madd_epi16(pair, mn);
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0x4e));
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0xb1));
    return _mm_cvtsi128_si32(p);
}

static T_AVX2 float dot_q4_K(int64_t n, const void *w, const void *a) {
    const blk_q4_K *x = w; const blk_q8_K *y = a;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    float accm = 0;
    for (int64_t i = 0; i < n / QKK; i++) {
        for (int l = 0; l < (int)sizeof x[i]; l += 64) _mm_prefetch((const char *)(x + i) + PF_DIST + l, _MM_HINT_T0);
        __m128i sc, mn;
        kq_scales16(x[i].scales, &sc, &mn);
        float dw = f16(x[i].d) * y[i].d;
        accm += f16(x[i].dmin) * y[i].d * (float)kq_mins(mn, y[i].bsums);
        __m256i sc2 = _mm256_broadcastsi128_si256(sc);
        __m256i sumi = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            __m256i q = ld256(x[i].qs + 32 * k);
            __m256i p0 = _mm256_maddubs_epi16(_mm256_and_si256(q, m4), ld256(y[i].qs + 64 * k));
            __m256i p1 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                                              ld256(y[i].qs + 64 * k + 32));
            p0 = _mm256_madd_epi16(p0, _mm256_shuffle_epi8(sc2, word_ctrl(2 * k, 2 * k)));
            p1 = _mm256_madd_epi16(p1, _mm256_shuffle_epi8(sc2, word_ctrl(2 * k + 1, 2 * k + 1)));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dw), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc) - accm;
}

static T_AVX2 float dot_q5_K(int64_t n, const void *w, const void *a) {
    const blk_q5_K *x = w; const blk_q8_K *y = a;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m10 = _mm256_set1_epi8(0x10);
    __m256 acc = _mm256_setzero_ps();
    float accm = 0;
    for (int64_t i = 0; i < n / QKK; i++) {
        for (int l = 0; l < (int)sizeof x[i]; l += 64) _mm_prefetch((const char *)(x + i) + PF_DIST + l, _MM_HINT_T0);
        __m128i sc, mn;
        kq_scales16(x[i].scales, &sc, &mn);
        float dw = f16(x[i].d) * y[i].d;
        accm += f16(x[i].dmin) * y[i].d * (float)kq_mins(mn, y[i].bsums);
        __m256i sc2 = _mm256_broadcastsi128_si256(sc);
        __m256i qh = ld256(x[i].qh);
        __m256i sumi = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            __m256i q = ld256(x[i].qs + 32 * k);
            /* bit 2k of qh -> 0x10 for the low nibbles, bit 2k+1 for the high nibbles */
            __m256i h0, h1v;
            if (k < 2) {
                h0 = _mm256_and_si256(_mm256_slli_epi16(qh, 4 - 2 * k), m10);
                h1v = _mm256_and_si256(_mm256_slli_epi16(qh, 3 - 2 * k), m10);
            } else {
                h0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k - 4), m10);
                h1v = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k - 3), m10);
            }
            __m256i q0 = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
            __m256i q1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1v);
            __m256i p0 = _mm256_maddubs_epi16(q0, ld256(y[i].qs + 64 * k));
            __m256i p1 = _mm256_maddubs_epi16(q1, ld256(y[i].qs + 64 * k + 32));
            p0 = _mm256_madd_epi16(p0, _mm256_shuffle_epi8(sc2, word_ctrl(2 * k, 2 * k)));
            p1 = _mm256_madd_epi16(p1, _mm256_shuffle_epi8(sc2, word_ctrl(2 * k + 1, 2 * k + 1)));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dw), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc) - accm;
}

/* Q6_K: sum_g sc_g * sum(q*a) over the unsigned 6-bit q, minus 32 * sum_g sc_g * bsum_g. */
static T_AVX2 float dot_q6_K(int64_t n, const void *w, const void *a) {
    const blk_q6_K *x = w; const blk_q8_K *y = a;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QKK; i++) {
        for (int l = 0; l < (int)sizeof x[i]; l += 64) _mm_prefetch((const char *)(x + i) + PF_DIST + l, _MM_HINT_T0);
        __m256i sc16 = _mm256_cvtepi8_epi16(ld128(x[i].scales));   /* [s0..s7 | s8..s15] */
        /* offset term: 32 * sum_g sc_g * bsum_g */
        __m256i off = _mm256_madd_epi16(sc16, ld256(y[i].bsums));
        __m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
        for (int h = 0; h < 2; h++) {
            __m256i sch = h ? _mm256_permute4x64_epi64(sc16, 0xee) : _mm256_permute4x64_epi64(sc16, 0x44);   /* lane h in both */
            __m256i l0 = ld256(x[i].ql + 64 * h), l1 = ld256(x[i].ql + 64 * h + 32);
            __m256i qh = ld256(x[i].qh + 32 * h);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(qh, m30));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
            const int8_t *ya = y[i].qs + 128 * h;
            for (int k = 0; k < 4; k++) {
                __m256i p = _mm256_maddubs_epi16(q[k], ld256(ya + 32 * k));
                p = _mm256_madd_epi16(p, _mm256_shuffle_epi8(sch, word_ctrl(2 * k, 2 * k + 1)));
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        float d = f16(x[i].d) * y[i].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc);
}

/* ------------------------------------------------------------------ table */

void ds_quant_fill_avx2(ds_quant_kernels *k) {
    k->dequant[DS_TYPE_F16] = deq_f16;
    k->dequant[DS_TYPE_BF16] = deq_bf16;
    k->dequant[DS_TYPE_Q8_0] = deq_q8_0;
    k->dequant[DS_TYPE_Q4_0] = deq_q4_0;
    k->dequant[DS_TYPE_Q4_1] = deq_q4_1;
    k->dequant[DS_TYPE_Q4_K] = deq_q4_K;
    k->dequant[DS_TYPE_Q6_K] = deq_q6_K;

    k->quant[DS_TYPE_Q8_0] = quant_q8_0;
    k->quant[DS_TYPE_Q8_1] = quant_q8_1;
    k->quant[DS_TYPE_Q8_K] = quant_q8_K;

    k->dot[DS_TYPE_F32] = dot_f32;
    k->dot[DS_TYPE_F16] = dot_f16;
    k->dot[DS_TYPE_BF16] = dot_bf16;
    k->dot[DS_TYPE_Q4_0] = dot_q4_0; k->rows[DS_TYPE_Q4_0] = rows_q4_0;
    k->dot[DS_TYPE_Q4_1] = dot_q4_1; k->rows[DS_TYPE_Q4_1] = rows_q4_1;
    k->dot[DS_TYPE_Q5_0] = dot_q5_0; k->rows[DS_TYPE_Q5_0] = rows_q5_0;
    k->dot[DS_TYPE_Q5_1] = dot_q5_1; k->rows[DS_TYPE_Q5_1] = rows_q5_1;
    k->dot[DS_TYPE_Q8_0] = dot_q8_0; k->rows[DS_TYPE_Q8_0] = rows_q8_0;
    k->dot[DS_TYPE_Q8_1] = dot_q8_1; k->rows[DS_TYPE_Q8_1] = rows_q8_1;
    k->dot[DS_TYPE_Q4_K] = dot_q4_K;
    k->dot[DS_TYPE_Q5_K] = dot_q5_K;
    k->dot[DS_TYPE_Q6_K] = dot_q6_K;
}
