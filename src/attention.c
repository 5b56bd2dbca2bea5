/* attention.c — dense CPU attention kernels over the fp16 cache (see attention.h).
 *
 * Per position t: s_g = q_g . K[t] for the G query heads, online softmax, acc_g += p_g * V[t].
 * Bytes per position and KV head: 2*hd*2 (K and V rows); flops: 4*G*hd. Decode is bound by the
 * K/V bytes, so the K row is loaded once and used for all G heads of the group. */
#include "attention.h"

#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define TILE 32  /* positions scored before the softmax update: amortises the rescale */

void ds_attn_partial_ref(const float *q, int G, int hd, const uint16_t *K, const uint16_t *V,
                         const int32_t *idx, int begin, int end, float *acc, ds_attn_stats *st) {
    for (int g = 0; g < G; g++) { st->m[g] = -INFINITY; st->l[g] = 0; }
    memset(acc, 0, sizeof(float) * (size_t)G * hd);
    for (int i = begin; i < end; i++) {
        int t = idx ? idx[i] : i;
        const uint16_t *k = K + (size_t)t * hd, *v = V + (size_t)t * hd;
        for (int g = 0; g < G; g++) {
            float s = 0;
            for (int c = 0; c < hd; c++) s += q[g * hd + c] * ds_fp16_to_fp32(k[c]);
            float m_new = s > st->m[g] ? s : st->m[g];
            float corr = expf(st->m[g] - m_new), p = expf(s - m_new);
            st->l[g] = st->l[g] * corr + p;
            for (int c = 0; c < hd; c++)
                acc[g * hd + c] = acc[g * hd + c] * corr + p * ds_fp16_to_fp32(v[c]);
            st->m[g] = m_new;
        }
    }
}

/* The tiled kernel body, instantiated per SIMD level with its dot/axpy primitives. */
#define ATTN_PARTIAL_BODY(DOT, AXPY, SCALE)                                                  \
    float s[16][TILE];                                                                       \
    for (int g = 0; g < G; g++) { st->m[g] = -INFINITY; st->l[g] = 0; }                      \
    memset(acc, 0, sizeof(float) * (size_t)G * hd);                                          \
    for (int i0 = begin; i0 < end; i0 += TILE) {                                             \
        int nt = end - i0 < TILE ? end - i0 : TILE;                                          \
        for (int j = 0; j < nt; j++) {                                                       \
            int t = idx ? idx[i0 + j] : i0 + j;                                              \
            const uint16_t *k = K + (size_t)t * hd;                                          \
            for (int g = 0; g < G; g++) s[g][j] = DOT(q + (size_t)g * hd, k, hd);            \
        }                                                                                    \
        for (int g = 0; g < G; g++) {                                                        \
            float mx = st->m[g];                                                             \
            for (int j = 0; j < nt; j++) mx = s[g][j] > mx ? s[g][j] : mx;                   \
            float corr = expf(st->m[g] - mx), sum = 0;                                       \
            for (int j = 0; j < nt; j++) { s[g][j] = expf(s[g][j] - mx); sum += s[g][j]; }   \
            st->l[g] = st->l[g] * corr + sum;                                                \
            st->m[g] = mx;                                                                   \
            if (corr != 1.0f) SCALE(acc + (size_t)g * hd, corr, hd);                         \
        }                                                                                    \
        for (int j = 0; j < nt; j++) {                                                       \
            int t = idx ? idx[i0 + j] : i0 + j;                                              \
            const uint16_t *v = V + (size_t)t * hd;                                          \
            for (int g = 0; g < G; g++) AXPY(acc + (size_t)g * hd, s[g][j], v, hd);          \
        }                                                                                    \
    }

static inline float dot_scalar(const float *q, const uint16_t *k, int hd) {
    float s = 0;
    for (int c = 0; c < hd; c++) s += q[c] * ds_fp16_to_fp32(k[c]);
    return s;
}
static inline void axpy_scalar(float *acc, float p, const uint16_t *v, int hd) {
    for (int c = 0; c < hd; c++) acc[c] += p * ds_fp16_to_fp32(v[c]);
}
static inline void scale_scalar(float *acc, float a, int hd) {
    for (int c = 0; c < hd; c++) acc[c] *= a;
}
static void attn_partial_scalar(const float *q, int G, int hd, const uint16_t *K, const uint16_t *V,
                                const int32_t *idx, int begin, int end, float *acc, ds_attn_stats *st) {
    ATTN_PARTIAL_BODY(dot_scalar, axpy_scalar, scale_scalar)
}

#if defined(__x86_64__)
#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma,f16c")))

T_AVX2 static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}
T_AVX2 static inline float dot_avx2(const float *q, const uint16_t *k, int hd) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int c = 0; c < hd; c += 16) {
        __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + c)));
        __m256 k1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + c + 8)));
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), k0, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + c + 8), k1, a1);
    }
    return hsum256(_mm256_add_ps(a0, a1));
}
T_AVX2 static inline void axpy_avx2(float *acc, float p, const uint16_t *v, int hd) {
    __m256 pp = _mm256_set1_ps(p);
    for (int c = 0; c < hd; c += 8) {
        __m256 vv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + c)));
        _mm256_storeu_ps(acc + c, _mm256_fmadd_ps(pp, vv, _mm256_loadu_ps(acc + c)));
    }
}
T_AVX2 static inline void scale_avx2(float *acc, float a, int hd) {
    __m256 aa = _mm256_set1_ps(a);
    for (int c = 0; c < hd; c += 8) _mm256_storeu_ps(acc + c, _mm256_mul_ps(aa, _mm256_loadu_ps(acc + c)));
}
T_AVX2 static void attn_partial_avx2(const float *q, int G, int hd, const uint16_t *K, const uint16_t *V,
                                     const int32_t *idx, int begin, int end, float *acc, ds_attn_stats *st) {
    ATTN_PARTIAL_BODY(dot_avx2, axpy_avx2, scale_avx2)
}

T_AVX512 static inline float dot_avx512(const float *q, const uint16_t *k, int hd) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int c = 0;
    for (; c + 32 <= hd; c += 32) {
        __m512 k0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(k + c)));
        __m512 k1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(k + c + 16)));
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + c), k0, a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + c + 16), k1, a1);
    }
    for (; c < hd; c += 16)
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + c), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(k + c))), a0);
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}
T_AVX512 static inline void axpy_avx512(float *acc, float p, const uint16_t *v, int hd) {
    __m512 pp = _mm512_set1_ps(p);
    for (int c = 0; c < hd; c += 16) {
        __m512 vv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v + c)));
        _mm512_storeu_ps(acc + c, _mm512_fmadd_ps(pp, vv, _mm512_loadu_ps(acc + c)));
    }
}
T_AVX512 static inline void scale_avx512(float *acc, float a, int hd) {
    __m512 aa = _mm512_set1_ps(a);
    for (int c = 0; c < hd; c += 16) _mm512_storeu_ps(acc + c, _mm512_mul_ps(aa, _mm512_loadu_ps(acc + c)));
}
T_AVX512 static void attn_partial_avx512(const float *q, int G, int hd, const uint16_t *K, const uint16_t *V,
                                         const int32_t *idx, int begin, int end, float *acc, ds_attn_stats *st) {
    ATTN_PARTIAL_BODY(dot_avx512, axpy_avx512, scale_avx512)
}
#endif

typedef void (*attn_fn)(const float *, int, int, const uint16_t *, const uint16_t *,
                        const int32_t *, int, int, float *, ds_attn_stats *);

static attn_fn pick_attn(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return attn_partial_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return attn_partial_avx2;
#endif
    return attn_partial_scalar;
}

void ds_attn_partial(const float *q, int G, int hd, const uint16_t *K, const uint16_t *V,
                     const int32_t *idx, int begin, int end, float *acc, ds_attn_stats *st) {
    static attn_fn fn;
    if (!fn) fn = pick_attn();
    DS_ASSERT(G >= 1 && G <= 16 && hd % 16 == 0);
    fn(q, G, hd, K, V, idx, begin, end, acc, st);
}

void ds_attn_merge(int n, int G, int hd, const float *accs, const ds_attn_stats *sts, float *out) {
    for (int g = 0; g < G; g++) {
        float m = -INFINITY;
        for (int i = 0; i < n; i++) m = sts[i].m[g] > m ? sts[i].m[g] : m;
        float *o = out + (size_t)g * hd, l = 0;
        memset(o, 0, sizeof(float) * (size_t)hd);
        for (int i = 0; i < n; i++) {
            if (sts[i].l[g] == 0) continue;
            float w = expf(sts[i].m[g] - m);
            l += sts[i].l[g] * w;
            const float *a = accs + ((size_t)i * G + g) * hd;
            for (int c = 0; c < hd; c++) o[c] += w * a[c];
        }
        float inv = l > 0 ? 1.0f / l : 0;
        for (int c = 0; c < hd; c++) o[c] *= inv;
    }
}

#if defined(__x86_64__)
T_AVX2 static void f32_to_f16_avx2(const float *x, uint16_t *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = ds_fp32_to_fp16(x[i]);
}
#endif

void ds_fp32_to_fp16_row(const float *x, uint16_t *y, int n) {
#if defined(__x86_64__)
    static int lvl = -1;
    if (lvl < 0) { __builtin_cpu_init(); lvl = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"); }
    if (lvl) { f32_to_f16_avx2(x, y, n); return; }
#endif
    for (int i = 0; i < n; i++) y[i] = ds_fp32_to_fp16(x[i]);
}
