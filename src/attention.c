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

/* Prefetch one fp16 row of hd values (64-byte lines). */
static inline void prefetch_row(const uint16_t *row, int hd) {
    for (int o = 0; o < hd * 2; o += 64) __builtin_prefetch((const char *)row + o, 0, 3);
}

/* The tiled kernel body, instantiated per SIMD level. Per position the fp16 K and V rows are
 * converted once (not once per query head of the group), and the exponentials of a whole tile
 * are computed with a vector exp. Gathered rows (idx) are scattered over the cache, so neither
 * the hardware prefetcher nor the out-of-order window keeps enough of them in flight: while
 * the K rows of a tile are scored its V rows are prefetched, and while its V rows are summed
 * the next tile's K rows are. */
/* Shared by every kernel body: empty stats and accumulators, the first tile's K rows
 * prefetched when gathered. */
#define ATTN_PARTIAL_START()                                                                 \
    for (int g = 0; g < G; g++) { st->m[g] = -INFINITY; st->l[g] = 0; }                      \
    memset(acc, 0, sizeof(float) * (size_t)G * hd);                                          \
    if (idx)                                                                                 \
        for (int j = begin; j < end && j < begin + TILE; j++)                                \
            prefetch_row(K + (size_t)idx[j] * hd, hd);

/* The online softmax over one tile for head g: scores sv[0..nt) become probabilities, and the
 * head's running max, sum and accumulator are rescaled to the new max. */
#define TILE_SOFTMAX(g, sv, nt, SCALE, EXPTILE)                                              \
    do {                                                                                     \
        float mx = st->m[g];                                                                 \
        for (int j = 0; j < (nt); j++) mx = (sv)[j] > mx ? (sv)[j] : mx;                     \
        float corr = expf(st->m[g] - mx);                                                    \
        float sum = EXPTILE((sv), (nt), mx);                                                 \
        st->l[g] = st->l[g] * corr + sum;                                                    \
        st->m[g] = mx;                                                                       \
        if (corr != 1.0f) SCALE(acc + (size_t)(g) * hd, corr, hd);                           \
    } while (0)

#define ATTN_PARTIAL_BODY(CVT, DOTF, AXPYF, SCALE, EXPTILE)                                  \
    float s[16][TILE];                                                                       \
    float row[512];                                                                          \
    ATTN_PARTIAL_START()                                                                     \
    for (int i0 = begin; i0 < end; i0 += TILE) {                                             \
        int nt = end - i0 < TILE ? end - i0 : TILE;                                          \
        int nn = end - i0 - TILE < TILE ? end - i0 - TILE : TILE; /* next tile's rows */    \
        for (int j = 0; j < nt; j++) {                                                       \
            int t = idx ? idx[i0 + j] : i0 + j;                                              \
            if (idx) prefetch_row(V + (size_t)t * hd, hd);                                   \
            CVT(row, K + (size_t)t * hd, hd);                                                \
            for (int g = 0; g < G; g++) s[g][j] = DOTF(q + (size_t)g * hd, row, hd);         \
        }                                                                                    \
        for (int g = 0; g < G; g++) TILE_SOFTMAX(g, s[g], nt, SCALE, EXPTILE);               \
        for (int j = 0; j < nt; j++) {                                                       \
            int t = idx ? idx[i0 + j] : i0 + j;                                              \
            if (idx && j < nn) prefetch_row(K + (size_t)idx[i0 + TILE + j] * hd, hd);        \
            CVT(row, V + (size_t)t * hd, hd);                                                \
            for (int g = 0; g < G; g++) AXPYF(acc + (size_t)g * hd, s[g][j], row, hd);       \
        }                                                                                    \
    }

static inline void cvt_scalar(float *dst, const uint16_t *src, int hd) {
    for (int c = 0; c < hd; c++) dst[c] = ds_fp16_to_fp32(src[c]);
}
static inline float dotf_scalar(const float *a, const float *b, int hd) {
    float s = 0;
    for (int c = 0; c < hd; c++) s += a[c] * b[c];
    return s;
}
static inline void axpyf_scalar(float *acc, float p, const float *v, int hd) {
    for (int c = 0; c < hd; c++) acc[c] += p * v[c];
}
/* s[j] = exp(s[j] - mx) for j < n; returns the sum. */
static inline float exptile_scalar(float *sv, int n, float mx) {
    float sum = 0;
    for (int j = 0; j < n; j++) { sv[j] = expf(sv[j] - mx); sum += sv[j]; }
    return sum;
}

static inline void scale_scalar(float *acc, float a, int hd) {
    for (int c = 0; c < hd; c++) acc[c] *= a;
}
static void attn_partial_scalar(const float *q, int G, int hd, const uint16_t *K, const uint16_t *V,
                                const int32_t *idx, int begin, int end, float *acc, ds_attn_stats *st) {
    ATTN_PARTIAL_BODY(cvt_scalar, dotf_scalar, axpyf_scalar, scale_scalar, exptile_scalar)
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
T_AVX2 static inline void cvt_avx2(float *dst, const uint16_t *src, int hd) {
    for (int c = 0; c < hd; c += 8)
        _mm256_storeu_ps(dst + c, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + c))));
}
T_AVX2 static inline float dotf_avx2(const float *a, const float *b, int hd) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int c = 0; c < hd; c += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c + 8), _mm256_loadu_ps(b + c + 8), a1);
    }
    return hsum256(_mm256_add_ps(a0, a1));
}
T_AVX2 static inline void axpyf_avx2(float *acc, float p, const float *v, int hd) {
    __m256 pp = _mm256_set1_ps(p);
    for (int c = 0; c < hd; c += 8)
        _mm256_storeu_ps(acc + c, _mm256_fmadd_ps(pp, _mm256_loadu_ps(v + c), _mm256_loadu_ps(acc + c)));
}
/* exp(x) for x <= 0 (scores minus their max): 2^n * p(r), r in [-ln2/2, ln2/2], degree-6
 * polynomial; relative error ~2e-7. Inputs below -87 flush to 0. */
T_AVX2 static inline __m256 exp_avx2(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}
T_AVX2 static inline float exptile_avx2(float *sv, int n, float mx) {
    __m256 m = _mm256_set1_ps(mx), sum = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(sv + j), m));
        _mm256_storeu_ps(sv + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    float tot = hsum256(sum);
    for (; j < n; j++) { sv[j] = expf(sv[j] - mx); tot += sv[j]; }
    return tot;
}
T_AVX2 static inline void scale_avx2(float *acc, float a, int hd) {
    __m256 aa = _mm256_set1_ps(a);
    for (int c = 0; c < hd; c += 8) _mm256_storeu_ps(acc + c, _mm256_mul_ps(aa, _mm256_loadu_ps(acc + c)));
}
T_AVX2 static void attn_partial_avx2(const float *q, int G, int hd, const uint16_t *K, const uint16_t *V,
                                     const int32_t *idx, int begin, int end, float *acc, ds_attn_stats *st) {
    ATTN_PARTIAL_BODY(cvt_avx2, dotf_avx2, axpyf_avx2, scale_avx2, exptile_avx2)
}

T_AVX512 static inline void cvt_avx512(float *dst, const uint16_t *src, int hd) {
    for (int c = 0; c < hd; c += 16)
        _mm512_storeu_ps(dst + c, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + c))));
}
T_AVX512 static inline float dotf_avx512(const float *a, const float *b, int hd) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int c = 0;
    for (; c + 32 <= hd; c += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + c), _mm512_loadu_ps(b + c), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + c + 16), _mm512_loadu_ps(b + c + 16), a1);
    }
    for (; c < hd; c += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + c), _mm512_loadu_ps(b + c), a0);
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}
T_AVX512 static inline void axpyf_avx512(float *acc, float p, const float *v, int hd) {
    __m512 pp = _mm512_set1_ps(p);
    for (int c = 0; c < hd; c += 16)
        _mm512_storeu_ps(acc + c, _mm512_fmadd_ps(pp, _mm512_loadu_ps(v + c), _mm512_loadu_ps(acc + c)));
}
T_AVX512 static inline __m512 exp_avx512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.0f);
    __mmask16 ok = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
    x = _mm512_max_ps(x, lo);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps(ok, _mm512_scalef_ps(p, n));
}
T_AVX512 static inline float exptile_avx512(float *sv, int n, float mx) {
    __m512 m = _mm512_set1_ps(mx), sum = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(sv + j), m));
        _mm512_storeu_ps(sv + j, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (j < n) {
        __mmask16 k = (__mmask16)((1u << (n - j)) - 1);
        __m512 e = _mm512_maskz_mov_ps(k, exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, sv + j), m)));
        _mm512_mask_storeu_ps(sv + j, k, e);
        sum = _mm512_add_ps(sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}
T_AVX512 static inline void scale_avx512(float *acc, float a, int hd) {
    __m512 aa = _mm512_set1_ps(a);
    for (int c = 0; c < hd; c += 16) _mm512_storeu_ps(acc + c, _mm512_mul_ps(aa, _mm512_loadu_ps(acc + c)));
}
T_AVX512 static void attn_partial_avx512_rows(const float *q, int G, int hd, const uint16_t *K, const uint16_t *V,
                                              const int32_t *idx, int begin, int end, float *acc, ds_attn_stats *st) {
    ATTN_PARTIAL_BODY(cvt_avx512, dotf_avx512, axpyf_avx512, scale_avx512, exptile_avx512)
}

/* r[j] = the sum of the 16 lanes of p[j], for j < 16: a transpose-and-add tree, ~3
 * instructions per row where a reduction per row takes ~8. */
T_AVX512 static inline __m512 hsum16_avx512(const __m512 *p) {
    __m512 t[8], u[4];
    _Pragma("GCC unroll 8")
    for (int i = 0; i < 8; i++)   /* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
        t[i] = _mm512_add_ps(_mm512_unpacklo_ps(p[2 * i], p[2 * i + 1]), _mm512_unpackhi_ps(p[2 * i], p[2 * i + 1]));
    _Pragma("GCC unroll 4")
    for (int i = 0; i < 4; i++)   /* per lane: the lane's sums of rows 4i .. 4i+3 */
        u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 w0 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512 w1 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(w0, w1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(w0, w1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* acc[g][c0 .. c0+16) += sum over the tile's rows j of p[g][j] * V[row j][c0 ..], for G query
 * heads: the G accumulators stay in registers over the tile (G a constant after inlining). With
 * few heads each accumulator's FMAs form one long dependency chain (4 cycles each), so rows
 * j and j + 1 go to two sets of accumulators, summed at the end of the tile. */
#define PV_TILE(GG)                                                                              \
    do {                                                                                         \
        __m512 a[(GG)], b[(GG)];                                                                 \
        _Pragma("GCC unroll 16")                                                                \
        for (int g = 0; g < (GG); g++) {                                                         \
            a[g] = _mm512_loadu_ps(acc + (size_t)g * hd + c0);                                   \
            b[g] = _mm512_setzero_ps();                                                          \
        }                                                                                        \
        int j = 0;                                                                               \
        for (; j + 2 <= nt; j += 2) {                                                            \
            const __m512 v0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vrow[j] + c0)));     \
            const __m512 v1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vrow[j + 1] + c0))); \
            _Pragma("GCC unroll 16")                                                            \
            for (int g = 0; g < (GG); g++) {                                                     \
                a[g] = _mm512_fmadd_ps(_mm512_set1_ps(s[g][j]), v0, a[g]);                       \
                b[g] = _mm512_fmadd_ps(_mm512_set1_ps(s[g][j + 1]), v1, b[g]);                   \
            }                                                                                    \
        }                                                                                        \
        if (j < nt) {                                                                            \
            const __m512 v0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vrow[j] + c0)));     \
            _Pragma("GCC unroll 16")                                                            \
            for (int g = 0; g < (GG); g++) a[g] = _mm512_fmadd_ps(_mm512_set1_ps(s[g][j]), v0, a[g]); \
        }                                                                                        \
        _Pragma("GCC unroll 16")                                                                \
        for (int g = 0; g < (GG); g++) _mm512_storeu_ps(acc + (size_t)g * hd + c0, _mm512_add_ps(a[g], b[g])); \
    } while (0)

/* The AVX-512 kernel for head_dim <= 128, compute-lean: per tile of 32 rows the K rows are
 * converted to fp32 once, scores of 16 rows come out of one transpose-and-add tree per head
 * (no reduction per row), and the V pass keeps the G accumulators in registers instead of
 * loading and storing them for every row and head. Prefetching of gathered rows as in the
 * generic body. */
T_AVX512 static void attn_partial_avx512(const float *q, int G, int hd, const uint16_t *K, const uint16_t *V,
                                         const int32_t *idx, int begin, int end, float *acc, ds_attn_stats *st) {
    if (hd > 128) { attn_partial_avx512_rows(q, G, hd, K, V, idx, begin, end, acc, st); return; }
    _Alignas(64) float kf[TILE][128];   /* the tile's K rows as fp32 */
    _Alignas(64) float s[16][TILE];     /* scores, then probabilities */
    const uint16_t *vrow[TILE];
    ATTN_PARTIAL_START()
    for (int i0 = begin; i0 < end; i0 += TILE) {
        const int nt = end - i0 < TILE ? end - i0 : TILE;
        const int nn = end - i0 - TILE < TILE ? end - i0 - TILE : TILE;   /* next tile's rows */
        const int n16 = (nt + 15) & ~15;
        for (int j = 0; j < nt; j++) {
            const size_t t = idx ? (size_t)idx[i0 + j] : (size_t)(i0 + j);
            vrow[j] = V + t * hd;
            if (idx) prefetch_row(vrow[j], hd);
            const uint16_t *kr = K + t * hd;
            for (int c = 0; c < hd; c += 16)
                _mm512_store_ps(&kf[j][c], _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kr + c))));
        }
        for (int j = nt; j < n16; j++)
            for (int c = 0; c < hd; c += 16) _mm512_store_ps(&kf[j][c], _mm512_setzero_ps());
        for (int g = 0; g < G; g++) {
            const float *qg = q + (size_t)g * hd;
            for (int j0 = 0; j0 < n16; j0 += 16) {
                __m512 p[16];
                _Pragma("GCC unroll 16")
                for (int jj = 0; jj < 16; jj++) p[jj] = _mm512_setzero_ps();
                for (int c = 0; c < hd; c += 16) {
                    const __m512 qv = _mm512_loadu_ps(qg + c);
                    _Pragma("GCC unroll 16")
                    for (int jj = 0; jj < 16; jj++) p[jj] = _mm512_fmadd_ps(qv, _mm512_load_ps(&kf[j0 + jj][c]), p[jj]);
                }
                _mm512_store_ps(&s[g][j0], hsum16_avx512(p));
            }
            TILE_SOFTMAX(g, s[g], nt, scale_avx512, exptile_avx512);
        }
        if (idx)
            for (int j = 0; j < nn; j++) prefetch_row(K + (size_t)idx[i0 + TILE + j] * hd, hd);
        for (int c0 = 0; c0 < hd; c0 += 16) {
            switch (G) {
            case 1: PV_TILE(1); break;
            case 2: PV_TILE(2); break;
            case 3: PV_TILE(3); break;
            case 4: PV_TILE(4); break;
            case 5: PV_TILE(5); break;
            case 6: PV_TILE(6); break;
            case 7: PV_TILE(7); break;
            case 8: PV_TILE(8); break;
            default: PV_TILE(G); break;   /* 9..16: a runtime bound, accumulators on the stack */
            }
        }
    }
}
#undef PV_TILE
#endif

typedef void (*attn_fn)(const float *, int, int, const uint16_t *, const uint16_t *,
                        const int32_t *, int, int, float *, ds_attn_stats *);

static attn_fn pick_attn(void) {
#if defined(__x86_64__)
    int avx2, avx512;
    ds_cpu_simd_levels(&avx2, &avx512);
    if (avx512) return attn_partial_avx512;
    if (avx2) return attn_partial_avx2;
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

typedef float (*dot16_fn)(const uint16_t *, const float *, int);
static float dot16_scalar(const uint16_t *k, const float *q, int hd) {
    float s = 0;
    for (int c = 0; c < hd; c++) s += q[c] * ds_fp16_to_fp32(k[c]);
    return s;
}
#if defined(__x86_64__)
T_AVX2 static float dot16_avx2(const uint16_t *k, const float *q, int hd) {
    float row[512];
    cvt_avx2(row, k, hd);
    return dotf_avx2(q, row, hd);
}
T_AVX512 static float dot16_avx512(const uint16_t *k, const float *q, int hd) {
    float row[512];
    cvt_avx512(row, k, hd);
    return dotf_avx512(q, row, hd);
}
#endif

float ds_dot_f16_f32(const uint16_t *k, const float *q, int hd) {
    static dot16_fn fn;
    if (!fn) {
        fn = dot16_scalar;
#if defined(__x86_64__)
        attn_fn a = pick_attn();
        if (a == attn_partial_avx512) fn = dot16_avx512;
        else if (a == attn_partial_avx2) fn = dot16_avx2;
#endif
    }
    return fn(k, q, hd);
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

#if defined(__x86_64__)
T_AVX2 static void f16_to_f32_avx2(const uint16_t *x, float *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < n; i++) y[i] = ds_fp16_to_fp32(x[i]);
}
#endif

void ds_fp16_to_fp32_row(const uint16_t *x, float *y, int n) {
#if defined(__x86_64__)
    static int lvl = -1;
    if (lvl < 0) { int avx512; ds_cpu_simd_levels(&lvl, &avx512); }
    if (lvl) { f16_to_f32_avx2(x, y, n); return; }
#endif
    for (int i = 0; i < n; i++) y[i] = ds_fp16_to_fp32(x[i]);
}

void ds_fp32_to_fp16_row(const float *x, uint16_t *y, int n) {
#if defined(__x86_64__)
    static int lvl = -1;
    if (lvl < 0) { int avx512; ds_cpu_simd_levels(&lvl, &avx512); }
    if (lvl) { f32_to_f16_avx2(x, y, n); return; }
#endif
    for (int i = 0; i < n; i++) y[i] = ds_fp32_to_fp16(x[i]);
}
