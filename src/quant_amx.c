/* quant_amx.c — prefill GEMMs of Q4_K and Q6_K matrices on AMX int8 tiles (x86 CPUs with
 * AMX-INT8, Linux >= 5.16; selected at run time, DSINFER_AMX=0 turns it off).
 *
 * Why: a prefill chunk multiplies T activation rows by every weight row; the AVX-512 VNNI path
 * (quant_avx512.c) does it one token at a time at ~70 GFLOPS per core, where one tdpbusd does
 * 16 x 16 x 32 multiply-adds (bench/amx-gemm-proto.c: ~380 GOPS per core with per-32 scales).
 *
 * Layout. The weights are the tiles' A operand, so a row needs no transposition: for one
 * super-block the quants of 16 rows are unpacked to bytes, one sub-block (Q4_K: 32 values, Q6_K:
 * 16) of the 16 rows as one tile. The activations (Q8_K rows, quantised once per matmul call) are
 * the B operand, which tdpbusd wants as rows of 16 tokens x 4 consecutive k: ds_amx_pack_q8K
 * builds that once per call for every 16 tokens and super-block, with each token's scale d and
 * its per-16 sums beside it. Per sub-block the int32 tile C[row][token] is stored and combined
 * with the sub-block scales in int32 (Q4_K: sum_j sc_j C_j and sum_j mn_j sum_j(x); Q6_K:
 * sum_g sc_g (C_g - 32 sum_g(x))) until the super-block's float scales, as the AVX-512 dots do. */
#include "quant.h"
#include "quant_impl.h"

#include <immintrin.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define HAVE_AMX_BUILD 1
#else
#define HAVE_AMX_BUILD 0
#endif

/* One packed unit: 16 tokens x one super-block (256 columns). */
typedef struct {
    int8_t b[8][512];   /* sub-block j: [k / 4][token * 4 + k % 4], k < 32 */
    float dx[16];       /* the token's Q8_K scale */
    int32_t bs[16][16]; /* sum of the token's 16 values of group g (the Q8_K bsums) */
} amx_unit;

size_t ds_amx_acc_floats(int T) { return 256 * (size_t)((T + 15) / 16); }

size_t ds_amx_pack_bytes(int T, int64_t cols) {
    return (size_t)((T + 15) / 16) * (size_t)(cols / 256) * sizeof(amx_unit);
}

void ds_amx_pack_q8K(const void *xq, size_t xs, int T, int64_t cols, void *dst) {
    const int nsb = (int)(cols / 256), mts = (T + 15) / 16;
    amx_unit *u = dst;
    for (int mt = 0; mt < mts; mt++)
        for (int sb = 0; sb < nsb; sb++, u++) {
            memset(u, 0, sizeof *u);
            for (int m = 0; m < 16 && 16 * mt + m < T; m++) {
                const blk_q8_K *x = (const blk_q8_K *)((const uint8_t *)xq + (size_t)(16 * mt + m) * xs) + sb;
                u->dx[m] = x->d;
                for (int j = 0; j < 8; j++) {
                    for (int i = 0; i < 8; i++) memcpy(&u->b[j][i * 64 + m * 4], x->qs + 32 * j + 4 * i, 4);
                    u->bs[2 * j][m] = x->bsums[2 * j];
                    u->bs[2 * j + 1][m] = x->bsums[2 * j + 1];
                }
            }
        }
}

#if HAVE_AMX_BUILD
#define TAMX __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx2,f16c")))

int ds_amx_available(void) {
    static _Atomic int ok = -1;
    int v = atomic_load_explicit(&ok, memory_order_relaxed);
    if (v >= 0) return v;
    v = 0;
    const char *e = getenv("DSINFER_AMX");
    unsigned a, b, c, d;
    if (!(e && atoi(e) == 0) && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 24)) && (d & (1u << 25)) &&
        __builtin_cpu_supports("avx512bw"))
        v = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
    atomic_store_explicit(&ok, v, memory_order_relaxed);
    return v;
}

typedef struct { uint8_t palette, start; uint8_t rsv[14]; uint16_t colsb[16]; uint8_t rows[16]; } tile_cfg;
static __thread int t_configured;

TAMX static void configure(void) {
    tile_cfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    c.rows[0] = 16; c.colsb[0] = 64;   /* C: 16 weight rows x 16 tokens, int32 */
    c.rows[1] = 16; c.colsb[1] = 32;   /* A: 16 weight rows x 32 k, u8 */
    c.rows[2] = 8;  c.colsb[2] = 64;   /* B: 8 x (16 tokens x 4 k), s8 */
    c.rows[3] = 16; c.colsb[3] = 16;   /* Q6_K's A: 16 weight rows x 16 k (groups of 16), u8 */
    c.rows[4] = 4;  c.colsb[4] = 64;   /* Q6_K's B: 4 x (16 tokens x 4 k) */
    /* an asm with c as its memory operand: GCC 12 does not see _tile_loadconfig read c and
     * dropped the stores of rows and colsb (ldtilecfg then faulted on an all-zero layout) */
    __asm__ volatile("ldtilecfg %0" ::"m"(c));
    t_configured = 1;
}

/* The fp32 accumulators of one call, [mt][row][token] for every 16 tokens (the caller's scratch
 * of ds_amx_acc_floats(T) floats, 64-byte aligned), zeroed; and their rows [0, nr) of tokens
 * [0, T) written to out[t * os + r]. Shared by both types. */
static float *acc_zero(float *acc, int mts) {
    memset(acc, 0, sizeof(float) * 256 * (size_t)mts);
    return acc;
}

static void acc_store(const float *acc, int nr, int T, float *out, size_t os) {
    for (int mt = 0; mt < (T + 15) / 16; mt++)
        for (int n = 0; n < nr; n++)
            for (int m = 0; m < 16 && 16 * mt + m < T; m++) out[(size_t)(16 * mt + m) * os + n] = acc[(size_t)mt * 256 + 16 * n + m];
}

TAMX void ds_amx_rows_q4_K(int64_t cols, const void *w, size_t ws, int nr, const void *packed, int T, float *out,
                           size_t os, float *scratch) {
    if (!t_configured) configure();
    const int nsb = (int)(cols / 256), mts = (T + 15) / 16;
    const amx_unit *pk = packed;
    float *acc = acc_zero(scratch, mts);   /* [mt][row][token] */
    uint8_t a[8][16][32] __attribute__((aligned(64)));   /* sub-block j of 16 rows, one byte per value */
    int32_t cb[8][16][16] __attribute__((aligned(64)));  /* sub-block j: [row][token] */
    int32_t sc[16][8], mn[16][8];
    float dw[16], dmw[16];
    const __m256i lo4 = _mm256_set1_epi8(0x0f);
    for (int sb = 0; sb < nsb; sb++) {
        for (int n = 0; n < 16; n++) {
            if (n >= nr) {
                for (int j = 0; j < 8; j++) { memset(a[j][n], 0, 32); sc[n][j] = 0; mn[n][j] = 0; }
                dw[n] = dmw[n] = 0;
                continue;
            }
            const blk_q4_K *x = (const blk_q4_K *)((const uint8_t *)w + (size_t)n * ws) + sb;
            uint8_t s8[8], m8[8];
            ds_kq_scale_min(x->scales, s8, m8);
            for (int j = 0; j < 8; j++) { sc[n][j] = s8[j]; mn[n][j] = m8[j]; }
            dw[n] = _cvtsh_ss(x->d);
            dmw[n] = _cvtsh_ss(x->dmin);
            for (int p = 0; p < 4; p++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * p));
                _mm256_store_si256((__m256i *)a[2 * p][n], _mm256_and_si256(v, lo4));
                _mm256_store_si256((__m256i *)a[2 * p + 1][n], _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4));
            }
        }
        for (int mt = 0; mt < mts; mt++) {
            const amx_unit *u = pk + (size_t)mt * nsb + sb;
            for (int j = 0; j < 8; j++) {
                _tile_zero(0);
                _tile_loadd(1, a[j], 32);
                _tile_loadd(2, u->b[j], 64);
                _tile_dpbusd(0, 1, 2);
                _tile_stored(0, cb[j], 64);
            }
            /* in int32 until the super-block's float scales, as the AVX-512 dot does: sumi =
             * sum_j sc_j * dot_j, summ = sum_j mn_j * sum_j(x); then d_x * (d * sumi - dmin * summ) */
            __m512i aj[8];
            for (int j = 0; j < 8; j++)
                aj[j] = _mm512_add_epi32(_mm512_loadu_si512(u->bs[2 * j]), _mm512_loadu_si512(u->bs[2 * j + 1]));
            const __m512 dx = _mm512_loadu_ps(u->dx);
            float *ac = acc + (size_t)mt * 256;
            for (int n = 0; n < 16; n++) {
                __m512i si = _mm512_setzero_si512(), sm = _mm512_setzero_si512();
                for (int j = 0; j < 8; j++) {
                    si = _mm512_add_epi32(si, _mm512_mullo_epi32(_mm512_load_si512(cb[j][n]), _mm512_set1_epi32(sc[n][j])));
                    sm = _mm512_add_epi32(sm, _mm512_mullo_epi32(aj[j], _mm512_set1_epi32(mn[n][j])));
                }
                const __m512 v = _mm512_fmsub_ps(_mm512_set1_ps(dw[n]), _mm512_cvtepi32_ps(si),
                                                 _mm512_mul_ps(_mm512_set1_ps(dmw[n]), _mm512_cvtepi32_ps(sm)));
                _mm512_store_ps(ac + 16 * n, _mm512_fmadd_ps(dx, v, _mm512_load_ps(ac + 16 * n)));
            }
        }
    }
    acc_store(acc, nr, T, out, os);
}

/* Q6_K: groups of 16 values with signed 8-bit scales, value = d * sc_g * (q - 32), q in [0, 64).
 * q goes on the tiles unsigned and the 32 comes off with the group's activation sum: per group
 * C_g - 32 * bsum_g, then sum_g sc_g * (...) in int32 and d_x * d * sumi, as the scalar dot. The
 * K = 16 tiles are rows 4 (g % 2) .. +3 of the packed 32-blocks' B tiles. */
TAMX void ds_amx_rows_q6_K(int64_t cols, const void *w, size_t ws, int nr, const void *packed, int T, float *out,
                           size_t os, float *scratch) {
    if (!t_configured) configure();
    const int nsb = (int)(cols / 256), mts = (T + 15) / 16;
    const amx_unit *pk = packed;
    float *acc = acc_zero(scratch, mts);   /* [mt][row][token] */
    uint8_t a[16][16][16] __attribute__((aligned(64)));  /* group g of 16 rows: q in [0, 64) */
    int32_t cb[16][16][16] __attribute__((aligned(64))); /* group g: [row][token] */
    int32_t sc[16][16];
    float dw[16];
    const __m256i lo4 = _mm256_set1_epi8(0x0f), hi2 = _mm256_set1_epi8(0x30);
    for (int sb = 0; sb < nsb; sb++) {
        for (int n = 0; n < 16; n++) {
            if (n >= nr) {
                for (int g = 0; g < 16; g++) { memset(a[g][n], 0, 16); sc[n][g] = 0; }
                dw[n] = 0;
                continue;
            }
            const blk_q6_K *x = (const blk_q6_K *)((const uint8_t *)w + (size_t)n * ws) + sb;
            for (int g = 0; g < 16; g++) sc[n][g] = x->scales[g];
            dw[n] = _cvtsh_ss(x->d);
            for (int h = 0; h < 2; h++) {
                const __m256i qh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
                for (int k = 0; k < 4; k++) {   /* values 128 h + 32 k + l, l < 32: groups 8 h + 2 k, + 1 */
                    const __m256i ql = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32 * (k & 1)));
                    const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(ql, 4 * (k >> 1)), lo4);
                    const __m256i hi = _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(qh, 2 * k), 4), hi2);
                    const __m256i q = _mm256_or_si256(lo, hi);
                    _mm_store_si128((__m128i *)a[8 * h + 2 * k][n], _mm256_castsi256_si128(q));
                    _mm_store_si128((__m128i *)a[8 * h + 2 * k + 1][n], _mm256_extracti128_si256(q, 1));
                }
            }
        }
        for (int mt = 0; mt < mts; mt++) {
            const amx_unit *u = pk + (size_t)mt * nsb + sb;
            for (int g = 0; g < 16; g++) {
                _tile_zero(0);
                _tile_loadd(3, a[g], 16);
                _tile_loadd(4, u->b[g >> 1] + 256 * (g & 1), 64);
                _tile_dpbusd(0, 3, 4);
                _tile_stored(0, cb[g], 64);
            }
            const __m512 dx = _mm512_loadu_ps(u->dx);
            float *ac = acc + (size_t)mt * 256;
            for (int n = 0; n < 16; n++) {
                __m512i si = _mm512_setzero_si512();
                for (int g = 0; g < 16; g++) {
                    const __m512i dg = _mm512_sub_epi32(_mm512_load_si512(cb[g][n]),
                                                        _mm512_slli_epi32(_mm512_loadu_si512(u->bs[g]), 5));
                    si = _mm512_add_epi32(si, _mm512_mullo_epi32(dg, _mm512_set1_epi32(sc[n][g])));
                }
                const __m512 v = _mm512_mul_ps(_mm512_set1_ps(dw[n]), _mm512_cvtepi32_ps(si));
                _mm512_store_ps(ac + 16 * n, _mm512_fmadd_ps(dx, v, _mm512_load_ps(ac + 16 * n)));
            }
        }
    }
    acc_store(acc, nr, T, out, os);
}
#else
int ds_amx_available(void) { return 0; }
void ds_amx_rows_q4_K(int64_t cols, const void *w, size_t ws, int nr, const void *packed, int T, float *out,
                      size_t os, float *scratch) {
    (void)cols; (void)w; (void)ws; (void)nr; (void)packed; (void)T; (void)out; (void)os; (void)scratch;
    abort();   /* callers check ds_amx_available() */
}
void ds_amx_rows_q6_K(int64_t cols, const void *w, size_t ws, int nr, const void *packed, int T, float *out,
                      size_t os, float *scratch) {
    ds_amx_rows_q4_K(cols, w, ws, nr, packed, T, out, os, scratch);
}
#endif
