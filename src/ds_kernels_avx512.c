/* ds_kernels_avx512.c — AVX-512 (F/BW/DQ/VL + VNNI) label scoring and top-k passes.
 *
 * Scoring layout: one lane per token, 16 tokens per block. A row of R = 4W bytes (W dwords)
 * is loaded as it lies in the cache (16 rows = W zmm) and transposed with vpermt2d so that
 * vector w holds dword w of each of the 16 rows (W log2 W shuffles per block). Each byte of
 * that dword then carries 1 (8-bit), 2 (4-bit, split by a mask) or 4 (2-bit) codes of the same
 * token, which is exactly the shape vpdpbusd wants: u8 codes x s8 weights, 4 products summed
 * into the token's int32 lane. The float qsum is rounded once per call to 16-bit integers
 * Q_j = round(256 * qsum_j / s), s = max|qsum| / 127: |Q_j| <= 32512, an error <= max|qsum| /
 * 65024 per channel, times a code of at most 2^bits - 1, far below the labels' own rounding
 * (step/2 per channel, times |qsum_j|). Q_j is held as two int8 digits, Q_j = 256 a_j + b_j; the
 * two digit sums are exact integers and so is 256 A + B (below 2^31 for every fast-path shape,
 * row_bytes <= 64), converted once per block: 2 vpdpbusd per 4 channels per 16 tokens instead
 * of 2 float ops per channel per 16 tokens. (Three digits, at float rounding level, made the
 * scan of SmolLM2's 3 heads at 16 channels 1.25x slower: bench/NOTES.md.)
 * fp16 labels take the same transposition; vpermw splits each dword's two halves into two
 * 16-lane halves for vcvtph2ps, then FMA with the broadcast qsum channel. */
#include "ds_kernels.h"
#include "common.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#define T512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c,prfchw")))
#define INL __attribute__((always_inline)) inline
/* W, bits are constants after inlining; full unrolling keeps the v[] arrays in registers */
#define UNROLL _Pragma("GCC unroll 16")

/* Index vectors for one transposition level: rows of c dwords (c = 2, 4, 8, 16) in a pair of
 * vectors (x: lanes 0..15, y: 16..31, rows in order) -> first halves of all rows, second halves. */
typedef struct { __m512i lo[4], hi[4]; } tp_idx;

T512 static void tp_idx_init(tp_idx *t) {
    for (int l = 0; l < 4; l++) {
        int c = 2 << l, h = c / 2;
        int32_t a[16], b[16];
        for (int p = 0; p < 16; p++) {
            a[p] = (p / h) * c + p % h;
            b[p] = a[p] + h;
        }
        t->lo[l] = _mm512_loadu_si512(a);
        t->hi[l] = _mm512_loadu_si512(b);
    }
}

/* v[0..W) holds 16 consecutive rows of W dwords; afterwards v[w] = dword w of rows 0..15.
 * The list is kept ordered (dword range major, row group minor) so every pair combined at a
 * level holds the same dword range of consecutive row groups. W is a constant after inlining. */
T512 static INL void transpose16(__m512i *v, int W, const tp_idx *t) {
    UNROLL
    for (int c = W; c > 1; c /= 2) {
        int lvl = __builtin_ctz((unsigned)c) - 1;   /* index set for rows of c dwords */
        __m512i nv[16];
        int half = c / 2;
        UNROLL
        for (int i = 0; i < W / 2; i++) {
            int R = i / half, g = i % half;
            nv[R * c + g] = _mm512_permutex2var_epi32(v[2 * i], t->lo[lvl], v[2 * i + 1]);
            nv[R * c + half + g] = _mm512_permutex2var_epi32(v[2 * i], t->hi[lvl], v[2 * i + 1]);
        }
        UNROLL
        for (int i = 0; i < W; i++) v[i] = nv[i];
    }
}

/* Q . codes of 16 tokens from its two digit sums (256 A + B, exact in int32), times the scale of Q:
 * one expression for the single- and the multi-query scan, which must agree bit for bit. */
T512 static INL __m512 digit_sums_ps(__m512i a0, __m512i a1, __m512 qsc) {
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(a0, 8), a1)), qsc);
}

/* Block b's W vectors of codes: 16 rows of 4W bytes, or the first `rows` of them (the rest
 * zero) for the last, partial block; rows is a constant 16 in the main loops. */
T512 static INL void load_codes(const uint8_t *codes, int b, int W, int rows, __m512i *v) {
    const uint8_t *p = codes + (size_t)b * 64 * W;
    UNROLL
    for (int i = 0; i < W; i++) {
        if (rows == 16) {
            v[i] = _mm512_loadu_si512(p + 64 * i);
        } else {
            const int nb = rows * 4 * W - 64 * i;   /* bytes of this vector that hold rows */
            const __mmask64 m = nb >= 64 ? ~(__mmask64)0 : nb <= 0 ? 0 : (((__mmask64)1 << nb) - 1);
            v[i] = _mm512_maskz_loadu_epi8(m, p + 64 * i);
        }
    }
}

/* 16 fp16 values from x + 16 b (the first `rows` of them, the rest 0) as floats. */
T512 static INL __m512 load_h16(const uint16_t *x, int b, int rows) {
    if (rows == 16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + 16 * b)));
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((__mmask16)((1u << rows) - 1), x + 16 * b));
}

T512 static INL void store_ps(float *x, int b, int rows, __m512 v) {
    if (rows == 16) _mm512_storeu_ps(x + 16 * b, v);
    else _mm512_mask_storeu_ps(x + 16 * b, (__mmask16)((1u << rows) - 1), v);
}

/* Part e of a transposed block in the digit table's order (dword e / P, shift (e % P) * bits,
 * P = 8 / bits): one code per byte, the 4 channels of digit entry e, as vpdpbusd takes them. */
T512 static INL __m512i part_of(const __m512i *v, int e, int bits) {
    const int P = 8 / bits, sh = (e % P) * bits;
    const __m512i d = v[e / P];
    if (bits == 8) return d;
    const __m512i m = _mm512_set1_epi32(bits == 4 ? 0x0f0f0f0f : 0x03030303);
    return _mm512_and_si512(sh ? _mm512_srli_epi32(d, sh) : d, m);
}

/* Integer path, bits 8/4/2, one block of `rows` tokens (16, or fewer for the last). qd: digits
 * [2][r/4] as packed int8x4 (entry e covers the 4 channels that land in the 4 bytes of part e, see
 * digit_table); qsc: the scale of Q. */
T512 static INL void score_int_block(const uint8_t *codes, const uint16_t *lo, const uint16_t *step, int b,
                                     int rows, float *out, const uint32_t *qd, int nq, __m512 vqsc, __m512 vqs,
                                     int W, int bits, const tp_idx *t) {
    __m512i v[16];
    load_codes(codes, b, W, rows, v);
    transpose16(v, W, t);
    __m512i a0 = _mm512_setzero_si512(), a1 = a0;
    const int P = 8 / bits;   /* parts per dword; two loops of <= 16 so both unroll fully */
    UNROLL
    for (int w = 0; w < W; w++) {
        UNROLL
        for (int h = 0; h < P; h++) {
            const int e = P * w + h;
            const __m512i x = part_of(v, e, bits);
            a0 = _mm512_dpbusd_epi32(a0, x, _mm512_set1_epi32((int)qd[e]));
            a1 = _mm512_dpbusd_epi32(a1, x, _mm512_set1_epi32((int)qd[nq + e]));
        }
    }
    const __m512 S = digit_sums_ps(a0, a1, vqsc);
    store_ps(out, b, rows, _mm512_fmadd_ps(load_h16(step, b, rows), S, _mm512_mul_ps(load_h16(lo, b, rows), vqs)));
}

/* All n tokens: the whole blocks, then the last `n % 16` as a masked block, each lane computed
 * exactly as in a whole block. */
T512 static INL void score_int(const uint8_t *codes, const uint16_t *lo, const uint16_t *step,
                               int n, float *out, const uint32_t *qd, int nq,
                               float qsc, float qs, int W, int bits, const tp_idx *t,
                               const ds_row_prefetch *pf) {
    const int nblk = n / 16, rem = n % 16;
    ds_pf_cursor pc;
    ds_pf_start(&pc, pf, nblk + (rem > 0));
    const __m512 vqsc = _mm512_set1_ps(qsc), vqs = _mm512_set1_ps(qs);
    for (int b = 0; b < nblk; b++) {
        ds_pf_step(&pc);
        score_int_block(codes, lo, step, b, 16, out, qd, nq, vqsc, vqs, W, bits, t);
    }
    if (rem) {
        ds_pf_step(&pc);
        score_int_block(codes, lo, step, nblk, rem, out, qd, nq, vqsc, vqs, W, bits, t);
    }
}

/* ds_score_key on 16 lanes: +0 folds -0, the sign decides between ~u and u | 2^31, NaN -> 0. */
T512 static INL __m512i keys16(__m512 x) {
    x = _mm512_add_ps(x, _mm512_setzero_ps());
    __m512i u = _mm512_castps_si512(x);
    __m512i flip = _mm512_or_si512(_mm512_srai_epi32(u, 31), _mm512_set1_epi32((int)0x80000000u));
    __mmask16 ok = _mm512_cmp_ps_mask(x, x, _CMP_ORD_Q);
    return _mm512_maskz_xor_epi32(ok, u, flip);
}

/* The multi-query scan's score rows are claimed for writing this many blocks ahead (PREFETCHW).
 * In decode they are written once a layer, after the layer's weights have streamed through the
 * caches, so each line's store would otherwise wait on a read-for-ownership from far away. */
#define PFW_BLOCKS 16

/* One block of score_int_multi: loaded, transposed and unpacked once, then scored per query. */
T512 static INL void score_multi_block(const uint8_t *codes, const uint16_t *lo, const uint16_t *step, int b,
                                       int rows, int nblk, float *out, size_t ostride, const uint32_t *qd, int nq,
                                       const float *qsc, const float *qs, int G, int W, int bits,
                                       const tp_idx *t, __m512 *km) {
    const int P = 8 / bits;   /* parts per dword */
    __m512i v[16], u[32];
    load_codes(codes, b, W, rows, v);
    transpose16(v, W, t);
    UNROLL
    for (int w = 0; w < W; w++) {
        UNROLL
        for (int h = 0; h < P; h++) u[P * w + h] = part_of(v, P * w + h, bits);
    }
    const __m512 l = load_h16(lo, b, rows), st = load_h16(step, b, rows);
    const __mmask16 valid = (__mmask16)((1u << rows) - 1);
    for (int g = 0; g < G; g++) {
        const uint32_t *q = qd + (size_t)g * 2 * nq;
        __m512i a0 = _mm512_setzero_si512(), a1 = a0;
        UNROLL
        for (int e = 0; e < W * P; e++) {
            a0 = _mm512_dpbusd_epi32(a0, u[e], _mm512_set1_epi32((int)q[e]));
            a1 = _mm512_dpbusd_epi32(a1, u[e], _mm512_set1_epi32((int)q[nq + e]));
        }
        const __m512 S = digit_sums_ps(a0, a1, _mm512_set1_ps(qsc[g]));
        const __m512 sc = _mm512_fmadd_ps(st, S, _mm512_mul_ps(l, _mm512_set1_ps(qs[g])));
        if (b + PFW_BLOCKS < nblk) __builtin_prefetch(out + (size_t)g * ostride + 16 * (b + PFW_BLOCKS), 1, 3);
        store_ps(out + (size_t)g * ostride, b, rows, sc);
        if (km) km[g] = rows == 16 ? _mm512_max_ps(sc, km[g]) : _mm512_mask_max_ps(km[g], valid, sc, km[g]);
    }
}

/* score_int for G queries over the same rows: each block is loaded, transposed and unpacked once,
 * then scored with each query's digits exactly as score_int does (so each row of out equals a
 * single-query call bit for bit). qd: [G][2 * nq], qsc: [G], qs: [G]; out row g at g * ostride.
 * kmax (or NULL): each row's largest score key: a float maximum per lane as the rows are written
 * (max_ps keeps the running value where a score is NaN, as the keys rank NaN lowest; -0 and +0
 * share a key), turned into its key once at the end. */
T512 static INL void score_int_multi(const uint8_t *codes, const uint16_t *lo, const uint16_t *step,
                                     int n, float *out, size_t ostride, const uint32_t *qd, int nq,
                                     const float *qsc, const float *qs, int G, int W, int bits,
                                     const tp_idx *t, uint32_t *kmax, const ds_row_prefetch *pf) {
    const int nblk = n / 16, rem = n % 16;
    ds_pf_cursor pc;
    ds_pf_start(&pc, pf, nblk + (rem > 0));
    __m512 km[16];
    for (int g = 0; g < G; g++) km[g] = _mm512_set1_ps(-INFINITY);
    for (int b = 0; b < nblk; b++) {
        ds_pf_step(&pc);
        score_multi_block(codes, lo, step, b, 16, nblk, out, ostride, qd, nq, qsc, qs, G, W, bits, t, kmax ? km : NULL);
    }
    if (rem) {
        ds_pf_step(&pc);
        score_multi_block(codes, lo, step, nblk, rem, nblk, out, ostride, qd, nq, qsc, qs, G, W, bits, t,
                          kmax ? km : NULL);
    }
    if (kmax)
        for (int g = 0; g < G; g++) kmax[g] = ds_score_key(_mm512_reduce_max_ps(km[g]));
}

T512 static INL void score_f16(const uint8_t *codes, int nblk, float *out, const float *q, int W,
                               const tp_idx *t, const ds_row_prefetch *pf) {
    ds_pf_cursor pc;
    ds_pf_start(&pc, pf, nblk);
    uint16_t sepw[32];                              /* even words (low halves), then odd */
    for (int i = 0; i < 16; i++) { sepw[i] = (uint16_t)(2 * i); sepw[16 + i] = (uint16_t)(2 * i + 1); }
    const __m512i sep = _mm512_loadu_si512(sepw);
    for (int b = 0; b < nblk; b++) {
        const uint8_t *p = codes + (size_t)b * 64 * W;
        ds_pf_step(&pc);
        __m512i v[16];
        UNROLL
        for (int i = 0; i < W; i++) v[i] = _mm512_loadu_si512(p + 64 * i);
        transpose16(v, W, t);
        __m512 f0 = _mm512_setzero_ps(), f1 = f0;
        UNROLL
        for (int w = 0; w < W; w++) {
            __m512i P = _mm512_permutexvar_epi16(sep, v[w]);
            __m512 x0 = _mm512_cvtph_ps(_mm512_castsi512_si256(P));
            __m512 x1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(P, 1));
            f0 = _mm512_fmadd_ps(x0, _mm512_set1_ps(q[2 * w]), f0);
            f1 = _mm512_fmadd_ps(x1, _mm512_set1_ps(q[2 * w + 1]), f1);
        }
        _mm512_storeu_ps(out + 16 * b, _mm512_add_ps(f0, f1));
    }
}

/* Digit table: part e of the row (one dword w, one shift) carries 4 channels, one per byte k:
 *   bits 8: e = w,          channel 4w + k
 *   bits 4: e = 2w + h,     channel 8w + 2k + h         (h: low/high nibble)
 *   bits 2: e = 4w + s,     channel 16w + 4k + s        (s: 2-bit field within the byte)
 * i.e. in general channel = (e / P) * 4P + k * P + e % P with P = 8 / bits parts per dword. */
static int digit_table(const float *q, int r, int bits, uint32_t *qd, float *qsc) {
    double mx = 0;
    for (int j = 0; j < r; j++) {
        if (!isfinite(q[j])) return 0;              /* (fmax would skip a NaN) */
        mx = fmax(mx, fabs((double)q[j]));
    }
    const double s = mx > 0 ? mx / 127.0 : 1.0;
    const int P = 8 / bits, nq = r / 4;
    for (int e = 0; e < nq; e++) {
        uint32_t d0 = 0, d1 = 0;
        for (int k = 0; k < 4; k++) {
            const int ch = (e / P) * 4 * P + k * P + e % P;
            const int Q = (int)nearbyint(256.0 * q[ch] / s);   /* |Q| <= 32512 */
            const int a = (Q + 128) >> 8, b = Q - 256 * a;     /* a in [-127, 127], b in [-128, 127] */
            d0 |= (uint32_t)(uint8_t)(int8_t)a << (8 * k);
            d1 |= (uint32_t)(uint8_t)(int8_t)b << (8 * k);
        }
        qd[e] = d0; qd[nq + e] = d1;
    }
    *qsc = (float)(s / 256.0);
    return 1;
}

/* The lo term's weight, sum_j q_j, in one order for the single- and multi-query scans. */
static float q_total(const float *q, int r) {
    float a = 0.0f;
    for (int j = 0; j < r; j++) a += q[j];
    return a;
}

T512 static int score_avx512(const float *qsum, int r, int bits, const uint8_t *codes,
                             const uint16_t *lo, const uint16_t *step, int n, float *scores,
                             const ds_row_prefetch *pf) {
    int R = (int)ds_label_row_bytes(r, bits), W = R / 4;
    if (R % 4 || (W & (W - 1)) || W > 16 || (r * bits) % 32) return 0;
    int nblk = n / 16;
    tp_idx t;
    tp_idx_init(&t);
    if (bits == 16) {
        if (nblk == 0) return 0;
        switch (W) {
        case 1: score_f16(codes, nblk, scores, qsum, 1, &t, pf); break;
        case 2: score_f16(codes, nblk, scores, qsum, 2, &t, pf); break;
        case 4: score_f16(codes, nblk, scores, qsum, 4, &t, pf); break;
        case 8: score_f16(codes, nblk, scores, qsum, 8, &t, pf); break;
        default: score_f16(codes, nblk, scores, qsum, 16, &t, pf); break;
        }
        return nblk * 16;
    }
    uint32_t qd[2 * DS_LABEL_MAX_R / 4];
    float qsc;
    if (!digit_table(qsum, r, bits, qd, &qsc)) return 0;    /* non-finite qsum: scalar path */
    const float qs = q_total(qsum, r);
    int nq = r / 4;
#define CASE_W(Wc) case Wc: \
        if (bits == 8) score_int(codes, lo, step, n, scores, qd, nq, qsc, qs, Wc, 8, &t, pf); \
        else if (bits == 4) score_int(codes, lo, step, n, scores, qd, nq, qsc, qs, Wc, 4, &t, pf); \
        else score_int(codes, lo, step, n, scores, qd, nq, qsc, qs, Wc, 2, &t, pf); \
        break;
    switch (W) {
    CASE_W(1) CASE_W(2) CASE_W(4) CASE_W(8) CASE_W(16)
    }
#undef CASE_W
    return n;
}

/* G queries (rows of q at qstride) over the same label rows: the integer paths (bits 8/4/2) share
 * each block's load and unpacking; fp16 labels and non-finite queries return 0 (the caller loops
 * over single-query calls). Returns the tokens scored per query (all n). */
T512 static int score_multi_avx512(const float *q, size_t qstride, int G, int r, int bits, const uint8_t *codes,
                                   const uint16_t *lo, const uint16_t *step, int n, float *scores, size_t sstride,
                                   uint32_t *kmax, const ds_row_prefetch *pf) {
    int R = (int)ds_label_row_bytes(r, bits), W = R / 4;
    if (bits == 16 || G < 1 || G > 16 || R % 4 || (W & (W - 1)) || W > 16 || (r * bits) % 32) return 0;
    if (n <= 0) return 0;
    const int nq = r / 4;
    uint32_t qd[16 * 2 * DS_LABEL_MAX_R / 4];
    float qsc[16], qs[16];
    for (int g = 0; g < G; g++) {
        const float *qg = q + (size_t)g * qstride;
        if (!digit_table(qg, r, bits, qd + (size_t)g * 2 * nq, &qsc[g])) return 0;
        qs[g] = q_total(qg, r);
    }
    tp_idx t;
    tp_idx_init(&t);
#define CASE_W(Wc) case Wc: \
        if (bits == 8) score_int_multi(codes, lo, step, n, scores, sstride, qd, nq, qsc, qs, G, Wc, 8, &t, kmax, pf); \
        else if (bits == 4) score_int_multi(codes, lo, step, n, scores, sstride, qd, nq, qsc, qs, G, Wc, 4, &t, kmax, pf); \
        else score_int_multi(codes, lo, step, n, scores, sstride, qd, nq, qsc, qs, G, Wc, 2, &t, kmax, pf); \
        break;
    switch (W) {
    CASE_W(1) CASE_W(2) CASE_W(4) CASE_W(8)
    default: return 0;   /* 16 dwords x 4 parts of 2-bit codes would not fit the registers */
    }
#undef CASE_W
    return n;
}

/* ---------------------------------------------------------------- top-k passes */


T512 static void key_range_avx512(const float *s, int n, uint32_t *kmin, uint32_t *kmax) {
    __m512i mn = _mm512_set1_epi32(-1), mx = _mm512_setzero_si512();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i k = keys16(_mm512_loadu_ps(s + i));
        mn = _mm512_min_epu32(mn, k);
        mx = _mm512_max_epu32(mx, k);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512i k = keys16(_mm512_maskz_loadu_ps(m, s + i));
        mn = _mm512_mask_min_epu32(mn, m, mn, k);
        mx = _mm512_mask_max_epu32(mx, m, mx, k);
    }
    *kmin = (uint32_t)_mm512_reduce_min_epu32(mn);
    *kmax = (uint32_t)_mm512_reduce_max_epu32(mx);
}

/* Branch-free: whether a vector has members is data-dependent and unpredictable, so every
 * vector compresses (register vpcompressd; the memory form is slow on several cores) and
 * stores all 16 lanes, of which the first popcount count. cand has 16 entries of slack; out
 * holds exactly out_cap, so its last 16 entries are written with masked stores. */
T512 static INL __mmask16 classify16(__m512i k, __mmask16 valid, __m512i idx, __m512i vhi, __m512i vlo,
                                     int32_t *out, int *no, int out_cap, int32_t *cand, int *nc) {
    __mmask16 mh = _mm512_mask_cmpgt_epu32_mask(valid, k, vhi);
    __mmask16 mc = _mm512_mask_cmpge_epu32_mask((__mmask16)(valid & ~mh), k, vlo);
    if (__builtin_expect(*no + 16 <= out_cap, 1))
        _mm512_storeu_si512(out + *no, _mm512_maskz_compress_epi32(mh, idx));
    else
        _mm512_mask_storeu_epi32(out + *no, (__mmask16)((1u << (out_cap - *no)) - 1),
                                 _mm512_maskz_compress_epi32(mh, idx));
    _mm512_storeu_si512(cand + *nc, _mm512_maskz_compress_epi32(mc, idx));
    *no += __builtin_popcount(mh);
    *nc += __builtin_popcount(mc);
    return mc;
}

T512 static int classify_avx512(const float *s, int n, uint32_t t_hi, uint32_t t_lo, int32_t *out,
                                int out_cap, int32_t *cand, int *n_cand) {
    const __m512i vhi = _mm512_set1_epi32((int)t_hi), vlo = _mm512_set1_epi32((int)t_lo);
    const __m512i sixteen = _mm512_set1_epi32(16);
    __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int no = 0, nc = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        classify16(keys16(_mm512_loadu_ps(s + i)), 0xffff, idx, vhi, vlo, out, &no, out_cap, cand, &nc);
        if (__builtin_expect(no > out_cap, 0)) return -1;
        idx = _mm512_add_epi32(idx, sixteen);
    }
    if (i < n) {
        __mmask16 valid = (__mmask16)((1u << (n - i)) - 1);
        classify16(keys16(_mm512_maskz_loadu_ps(valid, s + i)), valid, idx, vhi, vlo, out, &no,
                   out_cap, cand, &nc);
        if (no > out_cap) return -1;
    }
    *n_cand = nc;
    return no;
}

T512 static void shifted_max_avx512(const float *s, int G, size_t stride, int n, const float *m, float *out) {
    int t = 0;
    for (; t + 16 <= n; t += 16) {
        __m512 v = _mm512_sub_ps(_mm512_loadu_ps(s + t), _mm512_set1_ps(m[0]));
        for (int g = 1; g < G; g++)
            v = _mm512_max_ps(_mm512_sub_ps(_mm512_loadu_ps(s + (size_t)g * stride + t), _mm512_set1_ps(m[g])), v);
        _mm512_storeu_ps(out + t, v);
    }
    if (t < n) {
        __mmask16 k = (__mmask16)((1u << (n - t)) - 1);
        __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + t), _mm512_set1_ps(m[0]));
        for (int g = 1; g < G; g++)
            v = _mm512_max_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + (size_t)g * stride + t),
                                            _mm512_set1_ps(m[g])), v);
        _mm512_mask_storeu_ps(out + t, k, v);
    }
}

T512 static void list_keys_avx512(const float *s, const int32_t *list, int m, uint32_t *keys) {
    int i = 0;
    for (; i + 16 <= m; i += 16)
        _mm512_storeu_si512(keys + i, keys16(_mm512_i32gather_ps(_mm512_loadu_si512(list + i), s, 4)));
    if (i < m) {
        const __mmask16 v = (__mmask16)((1u << (m - i)) - 1);
        const __m512i id = _mm512_maskz_loadu_epi32(v, list + i);
        _mm512_mask_storeu_epi32(keys + i, v, keys16(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), v, id, s, 4)));
    }
}

/* classify16 over (list, keys) vectors; the kept part is compressed back into list and keys at
 * c <= i, over lanes already loaded (full 16-lane stores: both have 16 entries of slack). */
T512 static int split_list_avx512(int32_t *list, uint32_t *keys, int m, uint32_t t_hi, uint32_t t_lo, int32_t *out,
                                  int out_cap, int *n_keep, uint32_t *kmin, uint32_t *kmax) {
    const __m512i vhi = _mm512_set1_epi32((int)t_hi), vlo = _mm512_set1_epi32((int)t_lo);
    __m512i mn = _mm512_set1_epi32(-1), mx = _mm512_setzero_si512();
    int no = 0, c = 0;
    for (int i = 0; i < m; i += 16) {
        const __mmask16 valid = m - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (m - i)) - 1);
        const __m512i k = _mm512_maskz_loadu_epi32(valid, keys + i), id = _mm512_maskz_loadu_epi32(valid, list + i);
        const int c0 = c;
        const __mmask16 mc = classify16(k, valid, id, vhi, vlo, out, &no, out_cap, list, &c);
        if (__builtin_expect(no > out_cap, 0)) return -1;
        _mm512_storeu_si512(keys + c0, _mm512_maskz_compress_epi32(mc, k));
        mn = _mm512_mask_min_epu32(mn, mc, mn, k);
        mx = _mm512_mask_max_epu32(mx, mc, mx, k);
    }
    *n_keep = c;
    *kmin = (uint32_t)_mm512_reduce_min_epu32(mn);
    *kmax = (uint32_t)_mm512_reduce_max_epu32(mx);
    return no;
}

/* The samples are parked in bin[] as floats by the first pass (gather, range, +inf count) and
 * turned into bins in place by the second. */
T512 static void sample_avx512(const float *s, int S, int stride, int nb, uint32_t *bin, float *mn, float *mx,
                               int *n_top) {
    const __m512i step = _mm512_set1_epi32(16 * stride), inf = _mm512_castps_si512(_mm512_set1_ps(INFINITY));
    __m512i id = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                    _mm512_set1_epi32(stride));
    __m512 lo = _mm512_set1_ps(INFINITY), hi = _mm512_set1_ps(-INFINITY);
    int top = 0;
    for (int j = 0; j < S; j += 16) {
        const __mmask16 valid = S - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (S - j)) - 1);
        const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, id, s, 4);
        _mm512_mask_storeu_ps(bin + j, valid, v);
        const __mmask16 fin = _mm512_mask_cmp_ps_mask(valid, _mm512_sub_ps(v, v), _mm512_setzero_ps(), _CMP_EQ_OQ);
        lo = _mm512_mask_min_ps(lo, fin, lo, v);
        hi = _mm512_mask_max_ps(hi, fin, hi, v);
        top += __builtin_popcount(_mm512_mask_cmpeq_epi32_mask(valid, _mm512_castps_si512(v), inf));
        id = _mm512_add_epi32(id, step);
    }
    const float fmn = _mm512_reduce_min_ps(lo), fmx = _mm512_reduce_max_ps(hi);
    const __m512 vlo = _mm512_set1_ps(fmn), vinv = _mm512_set1_ps(ds_sample_inv_width(fmn, fmx, nb));
    const __m512i top_bin = _mm512_set1_epi32(nb - 1), none = _mm512_set1_epi32(nb);
    for (int j = 0; j < S; j += 16) {
        const __mmask16 valid = S - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (S - j)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(valid, bin + j);
        const __mmask16 fin = _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), _mm512_setzero_ps(), _CMP_EQ_OQ);
        /* d >= 0; +inf (v - mn overflowed) converts to 0x80000000, which the unsigned min clamps */
        const __m512i b = _mm512_min_epu32(_mm512_cvttps_epi32(_mm512_mul_ps(_mm512_sub_ps(v, vlo), vinv)), top_bin);
        _mm512_mask_storeu_epi32(bin + j, valid, _mm512_mask_mov_epi32(none, fin, b));
    }
    *mn = fmn;
    *mx = fmx;
    *n_top = top;
}

void ds_dsk_fill_avx512(ds_dsk_kernels *k) {
    k->list_keys = list_keys_avx512;
    k->split_list = split_list_avx512;
    k->sample = sample_avx512;
    k->shifted_max = shifted_max_avx512;
    k->score_multi = score_multi_avx512;
    k->score = score_avx512;
    k->key_range = key_range_avx512;
    k->classify = classify_avx512;
}

#else
void ds_dsk_fill_avx512(ds_dsk_kernels *k) { (void)k; }
#endif
