/* ds_kernels_avx2.c — AVX2 (+FMA, F16C) label scoring and top-k passes, for CPUs without
 * AVX-512 VNNI.
 *
 * Scoring layout: one lane per token, 8 tokens per block; rows of W = 1, 2, 4 or 8 dwords are
 * loaded as they lie and transposed (vpermd within each vector to put every row's first half
 * in the low 128 bits, then vperm2i128 across the pair) so that vector w holds dword w of the
 * 8 rows. AVX2 has no VNNI, and vpmaddubsw saturates at 8 bits, so the codes are converted to
 * float: a code field at bit offset o is masked in place, converted exactly (it has at most 8
 * significant bits) and multiplied by qsum_j * 2^-o, which gives the same product as
 * qsum_j * code (scaling by a power of two commutes with rounding). The topmost field of a
 * dword is shifted down instead, because vcvtdq2ps is signed. fp16 rows: the two halves of
 * each dword are separated with vpackusdw and converted with vcvtph2ps. */
#include "ds_kernels.h"
#include "common.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#define T2 __attribute__((target("avx2,fma,f16c")))
#define INL __attribute__((always_inline)) inline
/* W, bits are constants after inlining; full unrolling keeps the v[] arrays in registers */
#define UNROLL _Pragma("GCC unroll 16")

/* v[0..W) holds 8 consecutive rows of W dwords; afterwards v[w] = dword w of rows 0..7. Same
 * list discipline as the AVX-512 version (dword range major, row group minor). */
T2 static INL void transpose8(__m256i *v, int W) {
    const __m256i p2 = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m256i p4 = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    UNROLL
    for (int c = W; c > 1; c /= 2) {
        __m256i nv[8];
        int half = c / 2;
        UNROLL
        for (int i = 0; i < W / 2; i++) {
            __m256i x = v[2 * i], y = v[2 * i + 1];
            if (c == 2) { x = _mm256_permutevar8x32_epi32(x, p2); y = _mm256_permutevar8x32_epi32(y, p2); }
            if (c == 4) { x = _mm256_permutevar8x32_epi32(x, p4); y = _mm256_permutevar8x32_epi32(y, p4); }
            int R = i / half, g = i % half;
            nv[R * c + g] = _mm256_permute2x128_si256(x, y, 0x20);
            nv[R * c + half + g] = _mm256_permute2x128_si256(x, y, 0x31);
        }
        UNROLL
        for (int i = 0; i < W; i++) v[i] = nv[i];
    }
}

/* qsc[j]: qsum_j pre-scaled by 2^-offset of its field (1 for the topmost field). */
T2 static INL void score_flt(const uint8_t *codes, const uint16_t *lo, const uint16_t *step, int nblk,
                             float *out, const float *qsc, float qs, int W, int bits,
                             const ds_row_prefetch *pf) {
    ds_pf_cursor pc;
    ds_pf_start(&pc, pf, nblk);
    const int F = 32 / bits;                        /* fields per dword */
    const __m256 vqs = _mm256_set1_ps(qs);
    for (int b = 0; b < nblk; b++) {
        const uint8_t *p = codes + (size_t)b * 32 * W;
        ds_pf_step(&pc);
        __m256i v[8];
        UNROLL
        for (int i = 0; i < W; i++) v[i] = _mm256_loadu_si256((const __m256i *)(p + 32 * i));
        transpose8(v, W);
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
        UNROLL
        for (int w = 0; w < W; w++) {
            __m256i d = v[w];
            UNROLL
            for (int f = 0; f < F; f++) {
                __m256i x = f == F - 1 ? _mm256_srli_epi32(d, 32 - bits)
                                       : _mm256_and_si256(d, _mm256_set1_epi32((int)(((1u << bits) - 1) << (f * bits))));
                __m256 xf = _mm256_cvtepi32_ps(x), qv = _mm256_set1_ps(qsc[w * F + f]);
                if (f & 1) acc1 = _mm256_fmadd_ps(xf, qv, acc1);
                else acc0 = _mm256_fmadd_ps(xf, qv, acc0);
            }
        }
        __m256 S = _mm256_add_ps(acc0, acc1);
        __m256 l = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(lo + 8 * b)));
        __m256 st = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(step + 8 * b)));
        _mm256_storeu_ps(out + 8 * b, _mm256_fmadd_ps(st, S, _mm256_mul_ps(l, vqs)));
    }
}

T2 static INL void score_f16(const uint8_t *codes, int nblk, float *out, const float *q, int W,
                            const ds_row_prefetch *pf) {
    ds_pf_cursor pc;
    ds_pf_start(&pc, pf, nblk);
    const __m256i low16 = _mm256_set1_epi32(0xffff);
    for (int b = 0; b < nblk; b++) {
        const uint8_t *p = codes + (size_t)b * 32 * W;
        ds_pf_step(&pc);
        __m256i v[8];
        UNROLL
        for (int i = 0; i < W; i++) v[i] = _mm256_loadu_si256((const __m256i *)(p + 32 * i));
        transpose8(v, W);
        __m256 f0 = _mm256_setzero_ps(), f1 = f0;
        UNROLL
        for (int w = 0; w < W; w++) {
            /* lanes: [even halves 0-3, odd 0-3 | even 4-7, odd 4-7] -> [even 0-7 | odd 0-7] */
            __m256i pk = _mm256_packus_epi32(_mm256_and_si256(v[w], low16), _mm256_srli_epi32(v[w], 16));
            pk = _mm256_permute4x64_epi64(pk, 0xd8);
            __m256 x0 = _mm256_cvtph_ps(_mm256_castsi256_si128(pk));
            __m256 x1 = _mm256_cvtph_ps(_mm256_extracti128_si256(pk, 1));
            f0 = _mm256_fmadd_ps(x0, _mm256_set1_ps(q[2 * w]), f0);
            f1 = _mm256_fmadd_ps(x1, _mm256_set1_ps(q[2 * w + 1]), f1);
        }
        _mm256_storeu_ps(out + 8 * b, _mm256_add_ps(f0, f1));
    }
}

T2 static int score_avx2(const float *qsum, int r, int bits, const uint8_t *codes,
                         const uint16_t *lo, const uint16_t *step, int n, float *scores,
                         const ds_row_prefetch *pf) {
    int R = (int)ds_label_row_bytes(r, bits), W = R / 4;
    if (R % 4 || (W & (W - 1)) || W > 8 || (r * bits) % 32) return 0;
    int nblk = n / 8;
    if (nblk == 0) return 0;
    if (bits == 16) {
        switch (W) {
        case 1: score_f16(codes, nblk, scores, qsum, 1, pf); break;
        case 2: score_f16(codes, nblk, scores, qsum, 2, pf); break;
        case 4: score_f16(codes, nblk, scores, qsum, 4, pf); break;
        default: score_f16(codes, nblk, scores, qsum, 8, pf); break;
        }
        return nblk * 8;
    }
    float qsc[DS_LABEL_MAX_R], qs = 0.0f;
    const int F = 32 / bits;
    for (int j = 0; j < r; j++) {
        int f = j % F;
        qsc[j] = f == F - 1 ? qsum[j] : ldexpf(qsum[j], -f * bits);
        qs += qsum[j];
    }
#define CASE_W(Wc) case Wc: \
        if (bits == 8) score_flt(codes, lo, step, nblk, scores, qsc, qs, Wc, 8, pf); \
        else if (bits == 4) score_flt(codes, lo, step, nblk, scores, qsc, qs, Wc, 4, pf); \
        else score_flt(codes, lo, step, nblk, scores, qsc, qs, Wc, 2, pf); \
        break;
    switch (W) {
    CASE_W(1) CASE_W(2) CASE_W(4) CASE_W(8)
    }
#undef CASE_W
    return nblk * 8;
}

/* ---------------------------------------------------------------- top-k passes */

/* Signed form of ds_score_key (key ^ 2^31) so AVX2's signed compares order it: negative
 * floats flip their 31 low bits, NaN -> INT32_MIN. */
T2 static INL __m256i skeys8(__m256 x) {
    x = _mm256_add_ps(x, _mm256_setzero_ps());
    __m256i u = _mm256_castps_si256(x);
    __m256i sk = _mm256_xor_si256(u, _mm256_srli_epi32(_mm256_srai_epi32(u, 31), 1));
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(sk),
                                                _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN)), nan));
}

T2 static void key_range_avx2(const float *s, int n, uint32_t *kmin, uint32_t *kmax) {
    __m256i mn = _mm256_set1_epi32(INT32_MAX), mx = _mm256_set1_epi32(INT32_MIN);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i k = skeys8(_mm256_loadu_ps(s + i));
        mn = _mm256_min_epi32(mn, k);
        mx = _mm256_max_epi32(mx, k);
    }
    int32_t a[8], b[8];
    _mm256_storeu_si256((__m256i *)a, mn);
    _mm256_storeu_si256((__m256i *)b, mx);
    uint32_t lo = UINT32_MAX, hi = 0;
    for (int j = 0; j < 8; j++) {
        uint32_t x = (uint32_t)a[j] ^ 0x80000000u, y = (uint32_t)b[j] ^ 0x80000000u;
        lo = x < lo ? x : lo;
        hi = y > hi ? y : hi;
    }
    for (; i < n; i++) {
        uint32_t k = ds_score_key(s[i]);
        lo = k < lo ? k : lo;
        hi = k > hi ? k : hi;
    }
    *kmin = lo;
    *kmax = hi;
}

/* AVX2 has no compress instruction: a 256-entry table gives, for each 8-bit lane mask, the
 * indices of its set lanes packed to the front (4 bits each); vpermd applies it and a full
 * 8-lane store writes the result, of which the first popcount(mask) entries count. Branch-free
 * (whether a lane qualifies is unpredictable). cand has 16 entries of slack for
 * the full stores; out holds exactly out_cap, so within 8 of its end it is written lane by lane. */
static uint32_t g_compress_lut[256];

T2 static INL __m256i compress_perm(unsigned mask) {
    const __m256i sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)g_compress_lut[mask]), sh),
                            _mm256_set1_epi32(7));
}

T2 static int classify_avx2(const float *s, int n, uint32_t t_hi, uint32_t t_lo, int32_t *out,
                            int out_cap, int32_t *cand, int *n_cand) {
    const __m256i vhi = _mm256_set1_epi32((int)(t_hi ^ 0x80000000u));
    const __m256i vlo = _mm256_set1_epi32((int)(t_lo ^ 0x80000000u));
    const __m256i eight = _mm256_set1_epi32(8);
    __m256i ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int no = 0, nc = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i k = skeys8(_mm256_loadu_ps(s + i));
        unsigned mh = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(k, vhi)));
        unsigned ml = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(vlo, k)));
        unsigned mc = ~(mh | ml) & 0xffu;           /* not above t_hi and not below t_lo */
        if (__builtin_expect(no + 8 <= out_cap, 1)) {
            _mm256_storeu_si256((__m256i *)(out + no), _mm256_permutevar8x32_epi32(ids, compress_perm(mh)));
            no += __builtin_popcount(mh);
        } else {
            if (no + __builtin_popcount(mh) > out_cap) return -1;
            for (; mh; mh &= mh - 1) out[no++] = i + __builtin_ctz(mh);
        }
        _mm256_storeu_si256((__m256i *)(cand + nc), _mm256_permutevar8x32_epi32(ids, compress_perm(mc)));
        nc += __builtin_popcount(mc);
        ids = _mm256_add_epi32(ids, eight);
    }
    for (; i < n; i++) {
        uint32_t key = ds_score_key(s[i]);
        if (key > t_hi) {
            if (no == out_cap) return -1;
            out[no++] = i;
        } else if (key >= t_lo) {
            cand[nc++] = i;
        }
    }
    *n_cand = nc;
    return no;
}

T2 static void shifted_max_avx2(const float *s, int G, size_t stride, int n, const float *m, float *out) {
    int t = 0;
    for (; t + 8 <= n; t += 8) {
        __m256 v = _mm256_sub_ps(_mm256_loadu_ps(s + t), _mm256_set1_ps(m[0]));
        for (int g = 1; g < G; g++)
            v = _mm256_max_ps(_mm256_sub_ps(_mm256_loadu_ps(s + (size_t)g * stride + t), _mm256_set1_ps(m[g])), v);
        _mm256_storeu_ps(out + t, v);
    }
    for (; t < n; t++) {   /* as the scalar level */
        float v = s[t] - m[0];
        for (int g = 1; g < G; g++) {
            float x = s[(size_t)g * stride + t] - m[g];
            v = x > v ? x : v;
        }
        out[t] = v;
    }
}

void ds_dsk_fill_avx2(ds_dsk_kernels *k) {
    for (unsigned m = 0; m < 256; m++) {      /* written once, at start-up, by ds_kernels.c */
        uint32_t v = 0;
        int c = 0;
        for (int j = 0; j < 8; j++)
            if ((m >> j) & 1) v |= (uint32_t)j << (4 * c++);
        g_compress_lut[m] = v;
    }
    k->score = score_avx2;
    k->shifted_max = shifted_max_avx2;
    k->key_range = key_range_avx2;
    k->classify = classify_avx2;
}

#else
void ds_dsk_fill_avx2(ds_dsk_kernels *k) { (void)k; }
#endif
