/* quant_avx512.c — AVX-512 (F/BW/VL/DQ) + VNNI kernels (selected at run time; see quant.c).
 *
 * 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): multi-row kernels only (ds_vec_dot
 * on one row keeps the AVX2 kernel; ds_vec_dot_rows is the fast path). The activation row is
 * "prepared" once per ds_vec_dot_rows call: its int8
 * values copied contiguously (a pair of blocks is one 64-byte load), its scales as floats, and
 * for Q8_0 activations the per-block bias term. Each zmm then holds two blocks of one weight
 * row; vpdpbusd does u8 x s8 -> int32 with no intermediate saturation. Per-block weight
 * scales are gathered 16 blocks at a time (one vpgatherdd), converted with vcvtph2ps and
 * multiplied by the activation scales in one go; a permute then lines them up with the two
 * blocks of each zmm.
 *
 *   Q4_0/Q4_1: the nibbles are only masked, not shifted (see wpair).
 *   Q4_0/Q5_0: sum((q-8)a) = sum(q a) - 8 sum(a): the second part is activation-only.
 *   Q8_0:      sum(w a) = sum((w^0x80) a) - 128 sum(a), w^0x80 = w+128 being unsigned.
 *   Q4_1/Q5_1: d_w d_a sum(q a) + m_w s_a.
 *
 * K formats: one super-block per iteration, vpmaddubsw (unsigned q x activation, pairs in 16 bits,
 * cannot saturate: q <= 63, |a| <= 127) then vpdpwssd against the sub-block scales, in int32 until
 * the super-block's float scale is applied.
 *
 * All kernels software-prefetch the weight stream (the hardware prefetcher alone leaves
 * streaming from DRAM at about half the bandwidth). */
#include "quant_impl.h"

#include <immintrin.h>

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) T512

#define UNROLL4 _Pragma("GCC unroll 4")

/* Bytes ahead of the current weight position to prefetch. Measured on the dev box (Xeon, 2
 * cores of a VM): 1.5 KB ahead left DRAM streaming at ~10-15 GB/s, 4-6 KB ahead gives ~18-27. */
#define PF_DIST 6144

INL float f16(uint16_t h) { return _cvtsh_ss(h); }
INL uint32_t rd32(const void *p) { uint32_t v; memcpy(&v, p, 4); return v; }
INL __m256i ld256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
INL __m128i ld128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }
INL __m512i ld512(const void *p) { return _mm512_loadu_si512(p); }
INL void pf(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }

/* ------------------------------------------------------------------ 32-element block formats */

enum { K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0 };

/* column segment of at most SEG blocks per prepared activation (bounded stack use) */
#define SEG 320

typedef struct {
    _Alignas(64) int8_t q[SEG * 32 + 64];   /* activation int8, one zero block of padding */
    _Alignas(64) float f[2 * SEG + 32];     /* Q8_1: [d, s] per block; Q8_0: d per block */
    _Alignas(64) float bias[SEG + 16];      /* Q8_0: d * c * sum(q) per block */
} act_prep;

static int blk_bytes(int kind) {
    return kind == K_Q4_0 ? 18 : kind == K_Q4_1 ? 20 : kind == K_Q5_0 ? 22 : kind == K_Q5_1 ? 24 : 34;
}

/* Prepare blocks [b0, b0+nb) of the activation for weight kind `kind`. */
INL void prep_act(int kind, const uint8_t *a, int b0, int nb, act_prep *p) {
    const int q81 = kind == K_Q4_1 || kind == K_Q5_1;
    const int asz = q81 ? 36 : 34;
    const float c = kind == K_Q4_0 ? 8.0f : kind == K_Q5_0 ? 16.0f : 128.0f;
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    for (int j = 0; j < nb; j++) {
        const uint8_t *blk = a + (size_t)(b0 + j) * asz;
        __m256i v = ld256(blk + asz - 32);
        _mm256_store_si256((__m256i *)(p->q + 32 * j), v);
        if (q81) {
            p->f[2 * j] = f16(ds_rd16(blk));
            p->f[2 * j + 1] = f16(ds_rd16(blk + 2));
        } else {
            /* sum of the int8 values: sad of (a ^ 0x80) = sum(a + 128) per 8 bytes */
            __m256i s = _mm256_sad_epu8(_mm256_xor_si256(v, flip), _mm256_setzero_si256());
            __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            int sum = (int)(_mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1)) - 32 * 128;
            float d = f16(ds_rd16(blk));
            p->f[j] = d;
            p->bias[j] = d * c * (float)sum;
        }
    }
    memset(p->q + 32 * nb, 0, 64);
    int nf = q81 ? 2 * nb : nb;
    for (int j = nf; j < nf + 32 && j < 2 * SEG + 32; j++) p->f[j] = 0;
    for (int j = nb; j < nb + 16; j++) p->bias[j] = 0;
}

/* Two consecutive blocks of one weight row at `blk` (or one: `two` == 0, then the upper half is
 * garbage that meets a zero activation) as 64 unsigned bytes in element order.
 *
 * Q4_0/Q4_1 skip the shift that would separate the nibbles: the bytes are only masked, so the
 * second 16 elements of each block come out as 16*q (<= 240, still a u8); their int32 lanes
 * (4..7 of each block) are scaled by s/16 instead of s (split16 below). */
INL __m512i wpair(int kind, const uint8_t *blk, int two) {
    const int bs = blk_bytes(kind);
    if (kind == K_Q8_0) {
        __m512i v = _mm512_castsi256_si512(ld256(blk + 2));
        if (two) v = _mm512_inserti64x4(v, ld256(blk + bs + 2), 1);
        else v = _mm512_inserti64x4(v, _mm256_setzero_si256(), 1);
        return _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
    }
    const int qo = kind == K_Q4_0 ? 2 : kind == K_Q4_1 ? 4 : kind == K_Q5_0 ? 6 : 8;
    __m512i v = _mm512_broadcast_i32x4(ld128(blk + qo));
    if (two) v = _mm512_mask_broadcast_i32x4(v, 0xff00, ld128(blk + bs + qo));
    if (kind == K_Q4_0 || kind == K_Q4_1)
        return _mm512_and_si512(v, _mm512_setr_epi64(0x0f0f0f0f0f0f0f0fLL, 0x0f0f0f0f0f0f0f0fLL, (long long)0xf0f0f0f0f0f0f0f0ULL,
                                                     (long long)0xf0f0f0f0f0f0f0f0ULL, 0x0f0f0f0f0f0f0f0fLL, 0x0f0f0f0f0f0f0f0fLL,
                                                     (long long)0xf0f0f0f0f0f0f0f0ULL, (long long)0xf0f0f0f0f0f0f0f0ULL));
    v = _mm512_srlv_epi64(v, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
    v = _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
    const int ho = kind == K_Q5_0 ? 2 : 4;
    uint64_t m = rd32(blk + ho);
    if (two) m |= (uint64_t)rd32(blk + bs + ho) << 32;
    return _mm512_mask_add_epi8(v, (__mmask64)m, v, _mm512_set1_epi8(0x10));
}

/* R rows starting at w (stride bytes apart), blocks [0, nb) of this segment; adds to out[]. */
INL void rows32(int kind, int R, int nb, const uint8_t *w, size_t stride, const act_prep *p,
                float *out, size_t pfd) {
    const int bs = blk_bytes(kind);
    const int q81 = kind == K_Q4_1 || kind == K_Q5_1;
    const int split16 = kind == K_Q4_0 || kind == K_Q4_1;
    const __m512i gidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(bs));
    /* for pair k: lanes 0-7 block 2k, lanes 8-15 block 2k+1; with split16 lanes 4-7 / 12-15
     * index the s/16 table (indices 16..31 of the two-table permute) */
    const __m512i idx0 = split16 ? _mm512_setr_epi32(0, 0, 0, 0, 16, 16, 16, 16, 1, 1, 1, 1, 17, 17, 17, 17)
                                 : _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    __m512 acc[4], sc[4], sc16[4];
    UNROLL4 for (int r = 0; r < R; r++) { acc[r] = _mm512_setzero_ps(); sc16[r] = sc[r] = acc[r]; }
    for (int j0 = 0; j0 < nb; j0 += 16) {
        int cnt = nb - j0 < 16 ? nb - j0 : 16;
        __mmask16 gm = (__mmask16)((1u << cnt) - 1);
        UNROLL4 for (int r = 0; r < R; r++) {
            const uint8_t *base = w + r * stride + (size_t)j0 * bs;
            __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), gm, gidx, base, 1);
            if (q81) {   /* [d0 m0 d1 m1 ...] x [da0 sa0 ...]: even lanes scales, odd lanes m*s */
                __m512 lo = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(g)), _mm512_load_ps(p->f + 2 * j0));
                __m512 hi = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(g, 1)), _mm512_load_ps(p->f + 2 * j0 + 16));
                acc[r] = _mm512_mask_add_ps(acc[r], 0xaaaa, acc[r], lo);
                acc[r] = _mm512_mask_add_ps(acc[r], 0xaaaa, acc[r], hi);
                sc[r] = _mm512_permutex2var_ps(lo, even, hi);
            } else {
                __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
                sc[r] = _mm512_mul_ps(dw, _mm512_load_ps(p->f + j0));
                acc[r] = _mm512_fnmadd_ps(dw, _mm512_load_ps(p->bias + j0), acc[r]);
            }
            if (split16) sc16[r] = _mm512_mul_ps(sc[r], _mm512_set1_ps(1.0f / 16.0f));
        }
        __m512i idx = idx0;
        const __m512i step = _mm512_set1_epi32(2);
        int k = 0;
        for (; 2 * k + 1 < cnt; k++) {
            __m512i a = _mm512_load_si512(p->q + 32 * (j0 + 2 * k));
            UNROLL4 for (int r = 0; r < R; r++) {
                const uint8_t *blk = w + r * stride + (size_t)(j0 + 2 * k) * bs;
                /* short rows: sweep the group of R rows pfd groups ahead linearly, R*2*bs bytes
                 * per pair step; long rows (pfd == 0): each row's own stream, PF_DIST ahead */
                const uint8_t *pp = pfd ? w + pfd * R * stride + (size_t)(j0 + 2 * k) * R * bs + (size_t)r * 2 * bs
                                        : blk + PF_DIST;
                pf(pp);
                if (kind == K_Q8_0) pf(pp + 64);
                __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wpair(kind, blk, 1), a);
                __m512 s = split16 ? _mm512_permutex2var_ps(sc[r], idx, sc16[r]) : _mm512_permutexvar_ps(idx, sc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), s, acc[r]);
            }
            idx = _mm512_add_epi32(idx, step);
        }
        if (2 * k < cnt) {   /* odd block count: the last block alone (zero upper activation) */
            __m512i a = _mm512_load_si512(p->q + 32 * (j0 + 2 * k));
            UNROLL4 for (int r = 0; r < R; r++) {
                const uint8_t *blk = w + r * stride + (size_t)(j0 + 2 * k) * bs;
                __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wpair(kind, blk, 0), a);
                __m512 s = split16 ? _mm512_permutex2var_ps(sc[r], idx, sc16[r]) : _mm512_permutexvar_ps(idx, sc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), s, acc[r]);
            }
        }
    }
    UNROLL4 for (int r = 0; r < R; r++) out[r] += _mm512_reduce_add_ps(acc[r]);
}

INL void rows32_all(int kind, int64_t n, const void *w, size_t stride, int nrows, const void *a, float *out) {
    const int bs = blk_bytes(kind);
    int nb_all = (int)(n / 32);
    act_prep p;
    for (int r = 0; r < nrows; r++) out[r] = 0;
    /* prefetch for rows32: short rows sweep the row group pfd groups (>= PF_DIST bytes) ahead;
     * pfd = 0: long rows, each prefetched PF_DIST ahead within itself */
    size_t pfd = 4 * stride <= 8192 ? (PF_DIST + 4 * stride - 1) / (4 * stride) : 0;
    for (int b0 = 0; b0 < nb_all; b0 += SEG) {
        int nb = nb_all - b0 < SEG ? nb_all - b0 : SEG;
        prep_act(kind, a, b0, nb, &p);
        const uint8_t *wp = (const uint8_t *)w + (size_t)b0 * bs;
        int r = 0;
        for (; r + 4 <= nrows; r += 4) rows32(kind, 4, nb, wp + r * stride, stride, &p, out + r, pfd);
        size_t pfd1 = pfd ? (PF_DIST + stride - 1) / stride : 0;
        for (; r < nrows; r++) rows32(kind, 1, nb, wp + r * stride, stride, &p, out + r, pfd1);
    }
}

static T512 void rows_q4_0(int64_t n, const void *w, size_t s, int nr, const void *a, float *o) { rows32_all(K_Q4_0, n, w, s, nr, a, o); }
static T512 void rows_q4_1(int64_t n, const void *w, size_t s, int nr, const void *a, float *o) { rows32_all(K_Q4_1, n, w, s, nr, a, o); }
static T512 void rows_q5_0(int64_t n, const void *w, size_t s, int nr, const void *a, float *o) { rows32_all(K_Q5_0, n, w, s, nr, a, o); }
static T512 void rows_q5_1(int64_t n, const void *w, size_t s, int nr, const void *a, float *o) { rows32_all(K_Q5_1, n, w, s, nr, a, o); }
static T512 void rows_q8_0(int64_t n, const void *w, size_t s, int nr, const void *a, float *o) { rows32_all(K_Q8_0, n, w, s, nr, a, o); }

/* ------------------------------------------------------------------ K formats */

/* 8 scales and 8 mins of a Q4_K/Q5_K block as bytes in two 64-bit words. */
INL void kq_unpack(const uint8_t *s12, uint64_t *sc, uint64_t *mn) {
    uint32_t u0 = rd32(s12), u1 = rd32(s12 + 4), u2 = rd32(s12 + 8);
    uint32_t s_lo = u0 & 0x3f3f3f3fu, m_lo = u1 & 0x3f3f3f3fu;
    uint32_t s_hi = (u2 & 0x0f0f0f0fu) | ((u0 >> 2) & 0x30303030u);
    uint32_t m_hi = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 2) & 0x30303030u);
    *sc = (uint64_t)s_hi << 32 | s_lo;
    *mn = (uint64_t)m_hi << 32 | m_lo;
}

/* word-permute indices: words 0-15 <- word lo, words 16-31 <- word hi */
INL __m512i widx2(int lo, int hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)lo)), _mm256_set1_epi16((short)hi), 1);
}

/* sum_j mn[j] * (bsums[2j] + bsums[2j+1]) as 4 int32 lanes */
INL __m128i kq_mins4(uint64_t mn, const int16_t *bsums) {
    __m128i pair = _mm_hadd_epi16(ld128(bsums), ld128(bsums + 8));
    return _mm_madd_epi16(pair, _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn)));
}

INL float q4_K_row(int64_t n, const blk_q4_K *x, const blk_q8_K *y) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i sh = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
    __m512 acc = _mm512_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QKK; i++) {
        const uint8_t *xb = (const uint8_t *)(x + i);
        pf(xb + PF_DIST); pf(xb + PF_DIST + 64); pf(xb + PF_DIST + 128);
        uint64_t sc, mn;
        kq_unpack(x[i].scales, &sc, &mn);
        __m512i vsc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
        __m512i sumi = _mm512_setzero_si512(), sumi2 = sumi;
        UNROLL4 for (int k = 0; k < 4; k += 2) {
            __m512i q = _mm512_broadcast_i64x4(ld256(x[i].qs + 32 * k));
            q = _mm512_and_si512(_mm512_srlv_epi64(q, sh), m4);   /* [sub-block 2k | 2k+1] */
            __m512i p = _mm512_maddubs_epi16(q, ld512(y[i].qs + 64 * k));
            sumi = _mm512_dpwssd_epi32(sumi, p, _mm512_permutexvar_epi16(widx2(2 * k, 2 * k + 1), vsc));
            q = _mm512_broadcast_i64x4(ld256(x[i].qs + 32 * k + 32));
            q = _mm512_and_si512(_mm512_srlv_epi64(q, sh), m4);
            p = _mm512_maddubs_epi16(q, ld512(y[i].qs + 64 * k + 64));
            sumi2 = _mm512_dpwssd_epi32(sumi2, p, _mm512_permutexvar_epi16(widx2(2 * k + 2, 2 * k + 3), vsc));
        }
        sumi = _mm512_add_epi32(sumi, sumi2);
        float da = y[i].d;
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_set1_ps(f16(x[i].d) * da), acc);
        accm = _mm_fmadd_ps(_mm_cvtepi32_ps(kq_mins4(mn, y[i].bsums)), _mm_set1_ps(f16(x[i].dmin) * da), accm);
    }
    __m128 t = _mm_add_ps(accm, _mm_movehl_ps(accm, accm));
    t = _mm_add_ss(t, _mm_movehdup_ps(t));
    return _mm512_reduce_add_ps(acc) - _mm_cvtss_f32(t);
}

INL float q5_K_row(int64_t n, const blk_q5_K *x, const blk_q8_K *y) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), b16 = _mm512_set1_epi8(0x10);
    const __m512i sh = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
    __m512 acc = _mm512_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QKK; i++) {
        const uint8_t *xb = (const uint8_t *)(x + i);
        pf(xb + PF_DIST); pf(xb + PF_DIST + 64); pf(xb + PF_DIST + 128);
        uint64_t sc, mn;
        kq_unpack(x[i].scales, &sc, &mn);
        __m512i vsc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
        __m512i qh = _mm512_broadcast_i64x4(ld256(x[i].qh));
        __m512i sumi = _mm512_setzero_si512();
        UNROLL4 for (int k = 0; k < 4; k++) {
            __m512i q = _mm512_broadcast_i64x4(ld256(x[i].qs + 32 * k));
            q = _mm512_and_si512(_mm512_srlv_epi64(q, sh), m4);
            /* 5th bit: bit 2k of qh[l] for the low half, bit 2k+1 for the high half */
            __m512i sel = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * k))),
                                             _mm256_set1_epi8((char)(1 << (2 * k + 1))), 1);
            q = _mm512_mask_add_epi8(q, _mm512_test_epi8_mask(qh, sel), q, b16);
            __m512i p = _mm512_maddubs_epi16(q, ld512(y[i].qs + 64 * k));
            sumi = _mm512_dpwssd_epi32(sumi, p, _mm512_permutexvar_epi16(widx2(2 * k, 2 * k + 1), vsc));
        }
        float da = y[i].d;
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_set1_ps(f16(x[i].d) * da), acc);
        accm = _mm_fmadd_ps(_mm_cvtepi32_ps(kq_mins4(mn, y[i].bsums)), _mm_set1_ps(f16(x[i].dmin) * da), accm);
    }
    __m128 t = _mm_add_ps(accm, _mm_movehl_ps(accm, accm));
    t = _mm_add_ss(t, _mm_movehdup_ps(t));
    return _mm512_reduce_add_ps(acc) - _mm_cvtss_f32(t);
}

/* word index vector: word w -> scale group base + w/8 (4 groups of 16 elements per zmm) */
INL __m512i q6_idx(int base) {
    return _mm512_setr_epi32(
        base | base << 16, base | base << 16, base | base << 16, base | base << 16,
        (base + 1) | (base + 1) << 16, (base + 1) | (base + 1) << 16, (base + 1) | (base + 1) << 16, (base + 1) | (base + 1) << 16,
        (base + 2) | (base + 2) << 16, (base + 2) | (base + 2) << 16, (base + 2) | (base + 2) << 16, (base + 2) | (base + 2) << 16,
        (base + 3) | (base + 3) << 16, (base + 3) | (base + 3) << 16, (base + 3) | (base + 3) << 16, (base + 3) | (base + 3) << 16);
}

INL float q6_K_row(int64_t n, const blk_q6_K *x, const blk_q8_K *y) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), m3f = _mm512_set1_epi8(0x3f);
    /* q0|q1: qh bits 0-1 and 2-3 to bits 4-5; q2|q3: bits 4-5 and 6-7 */
    const __m512i sh01 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QKK; i++) {
        const uint8_t *xb = (const uint8_t *)(x + i);
        pf(xb + PF_DIST); pf(xb + PF_DIST + 64); pf(xb + PF_DIST + 128); pf(xb + PF_DIST + 192);
        __m256i sc16 = _mm256_cvtepi8_epi16(ld128(x[i].scales));
        __m512i vsc = _mm512_castsi256_si512(sc16);
        /* the -32 offset: 32 * sum_g sc_g * bsums_g */
        __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(sc16, ld256(y[i].bsums)), 5);
        __m512i sumi = _mm512_castsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), off));
        sumi = _mm512_inserti64x4(sumi, _mm256_setzero_si256(), 1);
        UNROLL4 for (int h = 0; h < 2; h++) {
            __m512i L = ld512(x[i].ql + 64 * h);
            __m512i H = _mm512_broadcast_i64x4(ld256(x[i].qh + 32 * h));
            /* select (m4 ? low bits : high bits) then keep 6 bits */
            __m512i q01 = _mm512_and_si512(_mm512_ternarylogic_epi32(L, _mm512_sllv_epi16(H, sh01), m4, 0xe4), m3f);
            __m512i q23 = _mm512_and_si512(_mm512_ternarylogic_epi32(_mm512_srli_epi16(L, 4), _mm512_srlv_epi16(H, sh23), m4, 0xe4), m3f);
            __m512i p01 = _mm512_maddubs_epi16(q01, ld512(y[i].qs + 128 * h));
            __m512i p23 = _mm512_maddubs_epi16(q23, ld512(y[i].qs + 128 * h + 64));
            sumi = _mm512_dpwssd_epi32(sumi, p01, _mm512_permutexvar_epi16(q6_idx(8 * h), vsc));
            sumi = _mm512_dpwssd_epi32(sumi, p23, _mm512_permutexvar_epi16(q6_idx(8 * h + 4), vsc));
        }
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_set1_ps(f16(x[i].d) * y[i].d), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

static T512 float dot_q4_K(int64_t n, const void *w, const void *a) { return q4_K_row(n, w, a); }
static T512 float dot_q5_K(int64_t n, const void *w, const void *a) { return q5_K_row(n, w, a); }
static T512 float dot_q6_K(int64_t n, const void *w, const void *a) { return q6_K_row(n, w, a); }

static T512 void rows_q4_K(int64_t n, const void *w, size_t s, int nr, const void *a, float *o) {
    for (int r = 0; r < nr; r++) o[r] = q4_K_row(n, (const blk_q4_K *)((const uint8_t *)w + r * s), a);
}
static T512 void rows_q5_K(int64_t n, const void *w, size_t s, int nr, const void *a, float *o) {
    for (int r = 0; r < nr; r++) o[r] = q5_K_row(n, (const blk_q5_K *)((const uint8_t *)w + r * s), a);
}
static T512 void rows_q6_K(int64_t n, const void *w, size_t s, int nr, const void *a, float *o) {
    for (int r = 0; r < nr; r++) o[r] = q6_K_row(n, (const blk_q6_K *)((const uint8_t *)w + r * s), a);
}

/* ------------------------------------------------------------------ float dots */

static T512 float dot_f32(int64_t n, const void *w, const void *a) {
    const float *x = w, *y = a;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        pf(x + i + PF_DIST / 4);
        pf(x + i + PF_DIST / 4 + 16);
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16), s1);
    }
    if (i < n) {   /* masked tail */
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i), s0);
        i += 16;
        if (i < n) {
            m = (__mmask16)((1u << (n - i)) - 1);
            s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i), s1);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static T512 float dot_f16(int64_t n, const void *w, const void *a) {
    const uint16_t *x = w; const float *y = a;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        pf(x + i + PF_DIST / 2);
        s0 = _mm512_fmadd_ps(_mm512_cvtph_ps(ld256(x + i)), _mm512_loadu_ps(y + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_cvtph_ps(ld256(x + i + 16)), _mm512_loadu_ps(y + i + 16), s1);
    }
    for (; i < n; i += 16) {   /* masked tail */
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
        __m512 wv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i));
        s0 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, y + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* ------------------------------------------------------------------ table */

void ds_quant_fill_avx512(ds_quant_kernels *k) {
    k->rows[DS_TYPE_Q4_0] = rows_q4_0;
    k->rows[DS_TYPE_Q4_1] = rows_q4_1;
    k->rows[DS_TYPE_Q5_0] = rows_q5_0;
    k->rows[DS_TYPE_Q5_1] = rows_q5_1;
    k->rows[DS_TYPE_Q8_0] = rows_q8_0;
    k->dot[DS_TYPE_Q4_K] = dot_q4_K; k->rows[DS_TYPE_Q4_K] = rows_q4_K;
    k->dot[DS_TYPE_Q5_K] = dot_q5_K; k->rows[DS_TYPE_Q5_K] = rows_q5_K;
    k->dot[DS_TYPE_Q6_K] = dot_q6_K; k->rows[DS_TYPE_Q6_K] = rows_q6_K;
    k->dot[DS_TYPE_F32] = dot_f32;
    k->dot[DS_TYPE_F16] = dot_f16;
}
