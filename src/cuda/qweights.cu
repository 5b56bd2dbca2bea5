// qweights.cu — quantised weight matrices on the GPU (declarations: qweights.cuh).
//
// Why: decode reads every weight once per step, so the bytes are the time. A Q4_K matrix is
// 0.56 bytes per weight against 2 for the fp16 copy the forward pass otherwise uploads.
//
// GPU layout. GGUF blocks are 20 (Q4_1), 34 (Q8_0) or 210 (Q6_K) bytes long, so their quants
// are not 16-byte aligned; on upload each row is split into its quant bytes and its scales:
//   Q8_0  q: the 32 int8 of each block            s: d (fp16) per block
//   Q4_1  q: the 16 nibble bytes of each block    s: d, m (fp16) per block
//   Q4_K  q: qs[128] of each super-block          s: d, dmin, then the 8 6-bit scales and the 8
//                                                    mins unpacked to bytes (20 bytes) per super-block
//   Q6_K  q: ql[128], qh[64] of each super-block  s: scales[16], d, 14 bytes pad per super-block
// Rows of both arrays are padded to 16 bytes. Every kernel works on chunks of 16 consecutive
// elements with one scale (and for Q4_1 / Q4_K / Q6_K one offset): value = scale * v + offset,
// v the chunk's small integers.
//
// Decode GEMV: integer dot products. A float multiply-add per weight made the first version
// instruction-bound (Llama-2-7B Q4_K_M decoded slower than its fp16 copy; bench/NOTES.md), so
// the activations are quantised to int8 in blocks of 32 (quant_row32, as the CPU's Q8 dot types
// do) and each chunk is four dp4a.
#include "pdl.cuh"
#include "qweights.cuh"

#include <stdlib.h>
#include <string.h>

#include <type_traits>

namespace dsgpu {
namespace {

enum { T_Q4_1 = 3, T_Q8_0 = 8, T_Q4_K = 12, T_Q6_K = 14 };

size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; }

__device__ __forceinline__ float hlo(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w & 0xffff))); }
__device__ __forceinline__ float hhi(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w >> 16))); }

// sum of 4 products of unsigned bytes of a with signed bytes of b, plus c
__device__ __forceinline__ int dp4a_us(uint32_t a, uint32_t b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// Every kernel works on chunks of 16 consecutive elements of a row (chunk g = elements
// [16 g, 16 g + 16)), and consecutive lanes take consecutive chunks, so a warp's activation
// loads are one contiguous 512-byte read. (A first version gave each lane a unit of 64 elements:
// the lanes' 16-byte activation reads were 64 bytes apart, 16 L1 wavefronts per load, and the
// GEMV ran at ~1 TB/s.) Each type: cload() a chunk's bytes; cwords() its 16 values as 4 words of
// bytes (SIGNED or not); cscale() its scale and offset: value = sc * v + off.
template <int T> struct Q;

template <> struct Q<T_Q8_0> {
    static size_t qrow(int in) { return (size_t)in; }
    static size_t srow(int in) { return pad16((size_t)in / 32 * 2); }
    static void repack(const uint8_t *b, int nb, uint8_t *q, uint8_t *s) {   // one row of nb blocks
        for (int i = 0; i < nb; i++, b += 34) { memcpy(s + 2 * i, b, 2); memcpy(q + 32 * i, b + 2, 32); }
    }
    static constexpr bool SIGNED = true;
    struct C { uint4 w; unsigned short d; };
    __device__ static void cload(const uint8_t *q, const uint8_t *s, int g, C &c) {
        c.w = __ldcs((const uint4 *)(q + 16 * (size_t)g));
        c.d = __ldg((const unsigned short *)(s + 2 * (size_t)(g >> 1)));
    }
    __device__ static void cwords(const C &c, uint32_t o[4]) { o[0] = c.w.x; o[1] = c.w.y; o[2] = c.w.z; o[3] = c.w.w; }
    __device__ static void cscale(const C &c, float &sc, float &off) { sc = __half2float(__ushort_as_half(c.d)); off = 0; }
};

// block g / 2: its 16 bytes hold elements 0-15 (low nibbles) and 16-31 (high)
template <> struct Q<T_Q4_1> {
    static size_t qrow(int in) { return (size_t)in / 2; }
    static size_t srow(int in) { return pad16((size_t)in / 32 * 4); }
    static void repack(const uint8_t *b, int nb, uint8_t *q, uint8_t *s) {
        for (int i = 0; i < nb; i++, b += 20) { memcpy(s + 4 * i, b, 4); memcpy(q + 16 * i, b + 4, 16); }
    }
    static constexpr bool SIGNED = false;
    struct C { uint4 w; uint32_t dm; int sh; };
    __device__ static void cload(const uint8_t *q, const uint8_t *s, int g, C &c) {
        c.w = __ldcs((const uint4 *)(q + 16 * (size_t)(g >> 1)));
        c.dm = __ldg((const uint32_t *)(s + 4 * (size_t)(g >> 1)));
        c.sh = 4 * (g & 1);
    }
    __device__ static void cwords(const C &c, uint32_t o[4]) {
        o[0] = (c.w.x >> c.sh) & 0x0f0f0f0fu; o[1] = (c.w.y >> c.sh) & 0x0f0f0f0fu;
        o[2] = (c.w.z >> c.sh) & 0x0f0f0f0fu; o[3] = (c.w.w >> c.sh) & 0x0f0f0f0fu;
    }
    __device__ static void cscale(const C &c, float &sc, float &off) { sc = hlo(c.dm); off = hhi(c.dm); }
};

// super-block g / 16; sub-block j = (g % 16) / 2 of 32 sits in the low (even j) or high nibbles
// of the 32 qs bytes of pair j / 2, chunk g in their first or second 16 bytes
template <> struct Q<T_Q4_K> {
    static size_t qrow(int in) { return (size_t)in / 2; }
    static size_t srow(int in) { return pad16((size_t)in / 256 * 20); }
    // scales and mins unpacked to bytes on upload: extracting the packed 6-bit fields in the
    // inner loop cost more instructions than the dot product
    static void repack(const uint8_t *b, int nb, uint8_t *q, uint8_t *s) {
        for (int i = 0; i < nb; i++, b += 144) {
            uint8_t *rec = s + 20 * i;
            memcpy(rec, b, 4);   // d, dmin
            const uint8_t *p = b + 4;
            for (int j = 0; j < 4; j++) {
                rec[4 + j] = p[j] & 63;
                rec[12 + j] = p[j + 4] & 63;
                rec[8 + j] = (uint8_t)((p[j + 8] & 15) | ((p[j] >> 6) << 4));
                rec[16 + j] = (uint8_t)((p[j + 8] >> 4) | ((p[j + 4] >> 6) << 4));
            }
            memcpy(q + 128 * i, b + 16, 128);
        }
    }
    static constexpr bool SIGNED = false;
    struct C { uint4 w; uint32_t dm, scw, mnw; int sh, bs; };
    __device__ static void cload(const uint8_t *q, const uint8_t *s, int g, C &c) {
        const int r = g & 3, j = (g & 15) >> 1;
        c.w = __ldcs((const uint4 *)(q + 32 * (size_t)(g >> 2) + 16 * (r & 1)));
        c.sh = 4 * (r >> 1);
        const uint32_t *rec = (const uint32_t *)(s + 20 * (size_t)(g >> 4));
        c.dm = __ldg(rec);
        c.scw = __ldg(rec + 1 + (j >> 2));
        c.mnw = __ldg(rec + 3 + (j >> 2));
        c.bs = 8 * (j & 3);
    }
    __device__ static void cwords(const C &c, uint32_t o[4]) {
        o[0] = (c.w.x >> c.sh) & 0x0f0f0f0fu; o[1] = (c.w.y >> c.sh) & 0x0f0f0f0fu;
        o[2] = (c.w.z >> c.sh) & 0x0f0f0f0fu; o[3] = (c.w.w >> c.sh) & 0x0f0f0f0fu;
    }
    __device__ static void cscale(const C &c, float &sc, float &off) {
        sc = hlo(c.dm) * (float)((c.scw >> c.bs) & 63);
        off = -(hhi(c.dm) * (float)((c.mnw >> c.bs) & 63));
    }
};

// super-block g / 16, c16 = g % 16: half h = c16 / 8, quarter k = (c16 % 8) / 2, l0 = 16 (c16 % 2):
// low 4 bits from ql[64 h + 32 (k % 2) + l0 ..] >> 4 (k / 2), high 2 from qh[32 h + l0 ..] >> 2 k,
// scale scales[c16]; value = d * scale * (q - 32)
template <> struct Q<T_Q6_K> {
    static size_t qrow(int in) { return (size_t)in / 256 * 192; }
    static size_t srow(int in) { return (size_t)in / 256 * 32; }
    static void repack(const uint8_t *b, int nb, uint8_t *q, uint8_t *s) {
        for (int i = 0; i < nb; i++, b += 210) {
            memcpy(q + 192 * i, b, 192);          // ql, qh
            memcpy(s + 32 * i, b + 192, 18);      // scales, d
            memset(s + 32 * i + 18, 0, 14);
        }
    }
    static constexpr bool SIGNED = false;   // q in [0, 64), the -32 goes into the offset
    struct C { uint4 lo, hi; uint32_t scw; unsigned short d; int sl, sh, bs; };
    __device__ static void cload(const uint8_t *q, const uint8_t *s, int g, C &c) {
        const int c16 = g & 15, h = c16 >> 3, k = (c16 & 7) >> 1, l0 = 16 * (c16 & 1);
        const uint8_t *base = q + 192 * (size_t)(g >> 4);
        c.lo = __ldcs((const uint4 *)(base + 64 * h + 32 * (k & 1) + l0));
        c.hi = __ldcs((const uint4 *)(base + 128 + 32 * h + l0));
        c.sl = 4 * (k >> 1);
        c.sh = 2 * k;
        const uint8_t *rec = s + 32 * (size_t)(g >> 4);
        c.scw = __ldg((const uint32_t *)rec + (c16 >> 2));
        c.bs = 8 * (c16 & 3);
        c.d = __ldg((const unsigned short *)(rec + 16));
    }
    __device__ static void cwords(const C &c, uint32_t o[4]) {
        o[0] = ((c.lo.x >> c.sl) & 0x0f0f0f0fu) | (((c.hi.x >> c.sh) & 0x03030303u) << 4);
        o[1] = ((c.lo.y >> c.sl) & 0x0f0f0f0fu) | (((c.hi.y >> c.sh) & 0x03030303u) << 4);
        o[2] = ((c.lo.z >> c.sl) & 0x0f0f0f0fu) | (((c.hi.z >> c.sh) & 0x03030303u) << 4);
        o[3] = ((c.lo.w >> c.sl) & 0x0f0f0f0fu) | (((c.hi.w >> c.sh) & 0x03030303u) << 4);
    }
    __device__ static void cscale(const C &c, float &sc, float &off) {
        sc = __half2float(__ushort_as_half(c.d)) * (float)((int)(c.scw << (24 - c.bs)) >> 24);
        off = -32.0f * sc;
    }
};

// A chunk's 16 values as floats (dequantisation, embedding rows).
template <int T>
__device__ __forceinline__ void chunk_values(const uint8_t *q, const uint8_t *s, int g, float v[16]) {
    typename Q<T>::C c;
    Q<T>::cload(q, s, g, c);
    uint32_t w[4];
    Q<T>::cwords(c, w);
    float sc, off;
    Q<T>::cscale(c, sc, off);
#pragma unroll
    for (int i = 0; i < 16; i++) {
        const uint32_t b = (w[i >> 2] >> (8 * (i & 3))) & 0xff;
        v[i] = sc * (float)(Q<T>::SIGNED ? (int)(int8_t)b : (int)b) + off;
    }
}

// ---- decode GEMV: LPR lanes per row (8, 16 or 32, so short rows keep the lanes busy), each lane
// CPS chunks per step (lanes li, li + lpr, ... of the row's chunks), the weights decoded once for
// all nb activation rows. xq [nb][in] int8 and xs [nb][in / 32] (quant_row32's blocks) are a few
// KB, read through L1. (Measured and dropped: 2 chunks per step software-pipelined over 4 rows
// per lane group, 15% slower end to end; bench/NOTES.md.)
template <int T, int NB, int CPS>
__global__ void __launch_bounds__(256) k_qgemv(const uint8_t *__restrict__ q, const uint8_t *__restrict__ s, size_t qrow,
                                               size_t srow, int rows, int in, int lpr, const int8_t *__restrict__ xq,
                                               const float4 *__restrict__ xs, int nb, float *__restrict__ y, int ystride) {
    using C = typename Q<T>::C;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane / lpr, li = lane % lpr;
    const int row = (blockIdx.x * 8 + warp) * (32 / lpr) + sub;
    const int chunks = in / 16;
    const int steps = (chunks + CPS * lpr - 1) / (CPS * lpr);   // the same for every group
    // the weights do not depend on the previous kernel: start fetching the first ones before waiting
    if (row < rows && li < chunks)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(q + (size_t)row * qrow + (size_t)li * (qrow * 16 / in)));
    pdl_trigger();
    pdl_wait();
    // step t: chunks li + lpr (CPS t + c), c < CPS
    auto load_step = [&](int t, C (&cs)[CPS], bool (&has)[CPS]) {
        const int g0 = li + lpr * CPS * t;
#pragma unroll
        for (int c = 0; c < CPS; c++) {
            has[c] = row < rows && g0 + lpr * c < chunks;
            if (has[c]) Q<T>::cload(q + (size_t)row * qrow, s + (size_t)row * srow, g0 + lpr * c, cs[c]);
        }
    };
    float acc[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) acc[b] = 0;
    auto dot_step = [&](int t, const C (&cs)[CPS], const bool (&has)[CPS]) {
        const int g0 = li + lpr * CPS * t;
#pragma unroll
        for (int c = 0; c < CPS; c++) {
            if (!has[c]) continue;
            const int g = g0 + lpr * c;
            uint32_t wd[4];
            Q<T>::cwords(cs[c], wd);
            float sc, off;
            Q<T>::cscale(cs[c], sc, off);
#pragma unroll
            for (int b = 0; b < NB; b++) {
                if (b >= nb) break;
                const uint4 xv = __ldg((const uint4 *)(xq + (size_t)b * in) + g);
                const float4 m = __ldg(xs + (size_t)b * (in / 32) + (g >> 1));
                int d;
                if (Q<T>::SIGNED) d = __dp4a((int)wd[3], (int)xv.w, __dp4a((int)wd[2], (int)xv.z, __dp4a((int)wd[1], (int)xv.y, __dp4a((int)wd[0], (int)xv.x, 0))));
                else d = dp4a_us(wd[3], xv.w, dp4a_us(wd[2], xv.z, dp4a_us(wd[1], xv.y, dp4a_us(wd[0], xv.x, 0))));
                acc[b] = fmaf(sc * m.x, (float)d, acc[b]);
                if (!Q<T>::SIGNED) acc[b] = fmaf(off, (g & 1) ? m.z : m.y, acc[b]);
            }
        }
    };
    C cur[CPS];
    bool hc[CPS];
    for (int t = 0; t < steps; t++) {
        load_step(t, cur, hc);
        dot_step(t, cur, hc);
    }
    // reduce over the lane group (every lane of the warp gets here)
#pragma unroll
    for (int b = 0; b < NB; b++) {
        float v = acc[b];
        for (int o = lpr / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (li == 0 && b < nb && row < rows) y[(size_t)b * ystride + row] = v;
    }
}

// The one-row GEMVs' end: row r0 + r's dot is acc[r] summed over the warp's lanes; lane r writes it.
template <int R>
__device__ __forceinline__ void store_rows(const float (&acc)[R], int lane, int r0, int rows, float *__restrict__ y) {
#pragma unroll
    for (int r = 0; r < R; r++) {
        float v = acc[r];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == r && r0 + r < rows) y[r0 + r] = v;
    }
}

// ---- decode GEMV for one activation row of Q4_K weights (the bulk of a Q4_K_M model at batch 1).
// k_qgemv decodes a chunk of 16 weights with its own scale loads, activation loads and the nibble
// half it needs, so each 16-byte word of quants is loaded twice (low and high nibbles) and the
// kernel is issue-bound (~70 instructions per 16 weights; ncu 69% issue active). Here a lane's
// unit is one 16-byte word of quants = 32 weights, the low nibbles 16 weights of sub-block 2p and
// the high nibbles the same 16 positions of sub-block 2p + 1 (unit g of a row: super-block g / 8,
// pair p = (g / 2) % 4, half h = g % 2); the unit's activations (two 16-byte int8 runs and their
// block scales) are loaded once and reused for R rows, and a warp's 32 lanes read 512
// consecutive bytes of each row. Steps of QSTEP units per lane keep QSTEP * R word loads in flight.
template <int R, int QSTEP>
__global__ void __launch_bounds__(256) k_q4k_gemv1(const uint8_t *__restrict__ q, const uint8_t *__restrict__ s,
                                                   size_t qrow, size_t srow, int rows, int in,
                                                   const int8_t *__restrict__ xq, const float4 *__restrict__ xs,
                                                   float *__restrict__ y) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int r0 = (blockIdx.x * 8 + warp) * R;
    const int units = in / 32;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0;
    uint4 w[QSTEP][R];
    uint32_t dm[QSTEP][R], scw[QSTEP][R], mnw[QSTEP][R];
    auto load_w = [&](int t0) {   // the weights and scales of units t0 + 32 i + lane, i < QSTEP
#pragma unroll
        for (int i = 0; i < QSTEP; i++) {
            const int g = t0 + 32 * i + lane, p = (g >> 1) & 3;
#pragma unroll
            for (int r = 0; r < R; r++) {
                const bool ok = g < units && r0 + r < rows;
                const size_t row = (size_t)(ok ? r0 + r : 0);
                const uint32_t *rec = (const uint32_t *)(s + row * srow + 20 * (size_t)(g >> 3));
                w[i][r] = ok ? __ldcs((const uint4 *)(q + row * qrow) + g) : make_uint4(0, 0, 0, 0);
                dm[i][r] = ok ? __ldg(rec) : 0u;
                scw[i][r] = ok ? __ldg(rec + 1 + (p >> 1)) : 0u;
                mnw[i][r] = ok ? __ldg(rec + 3 + (p >> 1)) : 0u;
            }
        }
    };
    load_w(0);   // weights never depend on the previous kernel: in flight before the wait
    pdl_trigger();
    pdl_wait();
    for (int t0 = 0; t0 < units; t0 += 32 * QSTEP) {
#pragma unroll
        for (int i = 0; i < QSTEP; i++) {
            const int g = t0 + 32 * i + lane;
            if (g >= units) break;
            const int sb = g >> 3, p = (g >> 1) & 3, h = g & 1, bs = 16 * (p & 1);
            // activations of sub-blocks 2p and 2p + 1, positions 16h .. 16h + 15
            const uint4 *xv = (const uint4 *)xq + 16 * (size_t)sb + 4 * p + h;
            const uint4 x0 = __ldg(xv), x1 = __ldg(xv + 2);
            const float4 m0 = __ldg(xs + 8 * (size_t)sb + 2 * p), m1 = __ldg(xs + 8 * (size_t)sb + 2 * p + 1);
            const float sx0 = h ? m0.z : m0.y, sx1 = h ? m1.z : m1.y;
#pragma unroll
            for (int r = 0; r < R; r++) {
                const uint4 v = w[i][r];
                const int d0 = dp4a_us(v.w & 0x0f0f0f0fu, x0.w, dp4a_us(v.z & 0x0f0f0f0fu, x0.z,
                               dp4a_us(v.y & 0x0f0f0f0fu, x0.y, dp4a_us(v.x & 0x0f0f0f0fu, x0.x, 0))));
                const int d1 = dp4a_us((v.w >> 4) & 0x0f0f0f0fu, x1.w, dp4a_us((v.z >> 4) & 0x0f0f0f0fu, x1.z,
                               dp4a_us((v.y >> 4) & 0x0f0f0f0fu, x1.y, dp4a_us((v.x >> 4) & 0x0f0f0f0fu, x1.x, 0))));
                const float sc0 = (float)((scw[i][r] >> bs) & 63), sc1 = (float)((scw[i][r] >> (bs + 8)) & 63);
                const float mn0 = (float)((mnw[i][r] >> bs) & 63), mn1 = (float)((mnw[i][r] >> (bs + 8)) & 63);
                const float dot = sc0 * m0.x * (float)d0 + sc1 * m1.x * (float)d1;
                acc[r] = fmaf(hlo(dm[i][r]), dot, fmaf(-hhi(dm[i][r]), mn0 * sx0 + mn1 * sx1, acc[r]));
            }
        }
        if (t0 + 32 * QSTEP < units) load_w(t0 + 32 * QSTEP);
    }
    store_rows<R>(acc, lane, r0, rows, y);
}

// ---- decode GEMV for one activation row of Q6_K weights (attn_v, and ffn_down in half the
// layers, and the output matrix of a Q4_K_M model). k_qgemv decodes each 16-weight chunk with
// its own loads of the qh word (which holds the high bits of 4 chunks) and of the ql word (2
// chunks). Here a lane's unit is the 64 weights one 16-byte qh word covers: positions l0 .. l0 + 15
// (l0 = 0 or 16) of the four 32-weight runs k = 0..3 of one half h of a super-block. Run k's low
// nibbles are in ql word 64 h + 32 (k % 2) + l0 (low nibble for k < 2, high for k >= 2), its high
// bits in the qh word >> 2 k, its scale in byte 8 h + l0 / 16 + 2 k of the 16 (one 8-byte load):
// every quant byte is loaded once. Unit g of a row: super-block g / 4, h = (g / 2) % 2,
// l0 = 16 (g % 2); a warp's 32 lanes read 8 whole super-blocks. Activations and R / QSTEP as in
// k_q4k_gemv1.
template <int R, int QSTEP>
__global__ void __launch_bounds__(256) k_q6k_gemv1(const uint8_t *__restrict__ q, const uint8_t *__restrict__ s,
                                                   size_t qrow, size_t srow, int rows, int in,
                                                   const int8_t *__restrict__ xq, const float4 *__restrict__ xs,
                                                   float *__restrict__ y) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int r0 = (blockIdx.x * 8 + warp) * R;
    const int units = in / 64;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0;
    uint4 lo0[QSTEP][R], lo1[QSTEP][R], hi[QSTEP][R];
    uint2 scw[QSTEP][R];
    float dd[QSTEP][R];
    auto load_w = [&](int t0) {   // the quants and scales of units t0 + 32 i + lane, i < QSTEP
#pragma unroll
        for (int i = 0; i < QSTEP; i++) {
            const int g = t0 + 32 * i + lane, h = (g >> 1) & 1, l0 = 16 * (g & 1);
#pragma unroll
            for (int r = 0; r < R; r++) {
                const bool ok = g < units && r0 + r < rows;
                const size_t row = (size_t)(ok ? r0 + r : 0);
                const uint8_t *base = q + row * qrow + 192 * (size_t)(g >> 2);
                const uint8_t *rec = s + row * srow + 32 * (size_t)(g >> 2);
                const uint4 z = make_uint4(0, 0, 0, 0);
                lo0[i][r] = ok ? __ldcs((const uint4 *)(base + 64 * h + l0)) : z;
                lo1[i][r] = ok ? __ldcs((const uint4 *)(base + 64 * h + 32 + l0)) : z;
                hi[i][r] = ok ? __ldcs((const uint4 *)(base + 128 + 32 * h + l0)) : z;
                scw[i][r] = ok ? __ldg((const uint2 *)(rec + 8 * h)) : make_uint2(0, 0);
                dd[i][r] = ok ? __half2float(__ushort_as_half(__ldg((const unsigned short *)(rec + 16)))) : 0.0f;
            }
        }
    };
    load_w(0);   // weights never depend on the previous kernel: in flight before the wait
    pdl_trigger();
    pdl_wait();
    for (int t0 = 0; t0 < units; t0 += 32 * QSTEP) {
#pragma unroll
        for (int i = 0; i < QSTEP; i++) {
            const int g = t0 + 32 * i + lane;
            if (g >= units) break;
            const int sb = g >> 2, h = (g >> 1) & 1, hf = g & 1;
            // run k: positions 256 sb + 128 h + 32 k + 16 hf .. + 15, i.e. int8 vector 16 sb + 8 h + 2 k + hf
            // and block of 32 number 8 sb + 4 h + k
            uint4 x[4];
            float4 m[4];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                x[k] = __ldg((const uint4 *)xq + 16 * (size_t)sb + 8 * h + 2 * k + hf);
                m[k] = __ldg(xs + 8 * (size_t)sb + 4 * h + k);
            }
#pragma unroll
            for (int r = 0; r < R; r++) {
                float part = 0;
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const uint4 L = (k & 1) ? lo1[i][r] : lo0[i][r], Hb = hi[i][r];
                    const int sl = 4 * (k >> 1), sh = 2 * k;
                    const uint32_t w0 = ((L.x >> sl) & 0x0f0f0f0fu) | (((Hb.x >> sh) & 0x03030303u) << 4);
                    const uint32_t w1 = ((L.y >> sl) & 0x0f0f0f0fu) | (((Hb.y >> sh) & 0x03030303u) << 4);
                    const uint32_t w2 = ((L.z >> sl) & 0x0f0f0f0fu) | (((Hb.z >> sh) & 0x03030303u) << 4);
                    const uint32_t w3 = ((L.w >> sl) & 0x0f0f0f0fu) | (((Hb.w >> sh) & 0x03030303u) << 4);
                    const int dt = dp4a_us(w3, x[k].w, dp4a_us(w2, x[k].z, dp4a_us(w1, x[k].y, dp4a_us(w0, x[k].x, 0))));
                    // scale byte hf + 2 k of the half's 8: word k / 2, byte hf + 2 (k % 2)
                    const uint32_t sw = (k >> 1) ? scw[i][r].y : scw[i][r].x;
                    const int bs = 8 * (hf + 2 * (k & 1));
                    const float sc = (float)((int)(sw << (24 - bs)) >> 24);
                    // q in [0, 64): value = d sc (q - 32), the -32 through the run's activation sum
                    part = fmaf(sc, fmaf(m[k].x, (float)dt, -32.0f * (hf ? m[k].z : m[k].y)), part);
                }
                acc[r] = fmaf(dd[i][r], part, acc[r]);
            }
        }
        if (t0 + 32 * QSTEP < units) load_w(t0 + 32 * QSTEP);
    }
    store_rows<R>(acc, lane, r0, rows, y);
}

// activation rows x [rows][in] (fp16) -> int8 blocks of 32, one thread per block (quant_row32)
__global__ void k_quant_x(const __half *__restrict__ x, int rows, int in, int8_t *__restrict__ xq, float4 *__restrict__ xs) {
    pdl_trigger();
    pdl_wait();
    const int nblk = in / 32;
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * nblk) return;
    quant_row32(x + i * 32, xq + i * 32, xs + i);
}

// ---- dequantisation, one thread per chunk (consecutive threads write consecutive 32 bytes)
template <int T>
__global__ void k_qdequant(const uint8_t *__restrict__ q, const uint8_t *__restrict__ s, size_t qrow, size_t srow,
                           int r0, int nr, int in, __half *__restrict__ out) {
    pdl_trigger();
    pdl_wait();   // out may still be read by the previous GEMM
    const int chunks = in / 16;
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)nr * chunks) return;
    const int rr = (int)(i / chunks), g = (int)(i % chunks);
    float v[16];
    chunk_values<T>(q + (size_t)(r0 + rr) * qrow, s + (size_t)(r0 + rr) * srow, g, v);
    uint4 o[2];
    __half2 *h = (__half2 *)o;
#pragma unroll
    for (int j = 0; j < 8; j++) h[j] = __floats2half2_rn(v[2 * j], v[2 * j + 1]);
    uint4 *dst = (uint4 *)(out + (size_t)rr * in + 16 * (size_t)g);
    dst[0] = o[0];
    dst[1] = o[1];
}

// ---- embedding rows: one block per token
template <int T>
__global__ void k_qembed(const uint8_t *__restrict__ q, const uint8_t *__restrict__ s, size_t qrow, size_t srow,
                         int in, const int *tok, const int *pos, float *x, int *len) {
    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.x, t = tok[r];
    for (int g = threadIdx.x; g < in / 16; g += blockDim.x) {
        float v[16];
        chunk_values<T>(q + (size_t)t * qrow, s + (size_t)t * srow, g, v);
        float4 *o = (float4 *)(x + (size_t)r * in + 16 * (size_t)g);
#pragma unroll
        for (int j = 0; j < 4; j++) o[j] = make_float4(v[4 * j], v[4 * j + 1], v[4 * j + 2], v[4 * j + 3]);
    }
    if (threadIdx.x == 0) len[r] = pos[r] + 1;
}

// DSINFER_GPU_QGEMV (comparisons): 0 = Q4_K and Q6_K rows at batch 1 through k_qgemv, as before
// k_q4k_gemv1; 1 = k_q4k_gemv1 for Q4_K only; 2 (default), 3, 4 = also k_q6k_gemv1 for Q6_K with
// (R, QSTEP) = (2, 2), (1, 4), (2, 4). Measured on the H200 (bench/NOTES.md, 2026-12-04, session
// 19): Llama-2-7B Q4_K_M 430-433 tok/s at 1, 484-495 at 2, 465 at 3, 460 at 4.
int qgemv_mode() {
    static int v = -1;
    if (v < 0) v = getenv("DSINFER_GPU_QGEMV") ? atoi(getenv("DSINFER_GPU_QGEMV")) : 2;
    return v;
}

template <int T>
int gemv_t(const QPart &p, const int8_t *xq, const float4 *xs, int nb, float *y, int ystride, bool pdl, cudaStream_t st) {
    if (T == T_Q6_K && nb == 1 && qgemv_mode() >= 2 && p.in % 256 == 0) {
        const int v = qgemv_mode();
        const dim3 block(256);
        if (v == 3) return (int)pdl_launch(pdl, st, k_q6k_gemv1<1, 4>, dim3((p.rows + 7) / 8), block, p.q, p.s,
                                           p.qrow, p.srow, p.rows, p.in, xq, xs, y + p.row0);
        if (v == 4) return (int)pdl_launch(pdl, st, k_q6k_gemv1<2, 4>, dim3((p.rows + 15) / 16), block, p.q, p.s,
                                           p.qrow, p.srow, p.rows, p.in, xq, xs, y + p.row0);
        return (int)pdl_launch(pdl, st, k_q6k_gemv1<2, 2>, dim3((p.rows + 15) / 16), block, p.q, p.s, p.qrow, p.srow,
                               p.rows, p.in, xq, xs, y + p.row0);
    }
    if (T == T_Q4_K && nb == 1 && qgemv_mode()) {
        // 2 rows per warp, 4 units per lane and step: of (R, QSTEP) = (1, 2), (2, 2), (1, 4), (4, 2),
        // (2, 4) the fastest on the H200 (bench/NOTES.md, 2026-12-04): Llama-2-7B Q4_K_M 430-432 tok/s
        constexpr int R = 2, QSTEP = 4;
        return (int)pdl_launch(pdl, st, k_q4k_gemv1<R, QSTEP>, dim3((p.rows + 8 * R - 1) / (8 * R)), dim3(256), p.q, p.s,
                               p.qrow, p.srow, p.rows, p.in, xq, xs, y + p.row0);
    }
    constexpr int CPS = 4;
    const int chunks = p.in / 16;
    const int lpr = chunks >= 24 * CPS ? 32 : chunks >= 12 * CPS ? 16 : 8;
    const int groups = 8 * (32 / lpr);
    const dim3 grid((p.rows + groups - 1) / groups), block(256);
    float *yo = y + p.row0;
#define QG(NB_) return (int)pdl_launch(pdl, st, k_qgemv<T, NB_, CPS>, grid, block, p.q, p.s, p.qrow, p.srow, p.rows, p.in, lpr, xq, xs, nb, yo, ystride)
    if (nb <= 1) QG(1);
    if (nb <= 2) QG(2);
    if (nb <= 4) QG(4);
    QG(8);
#undef QG
}

template <int T>
int dequant_t(const QPart &p, int r0, int nr, __half *out, bool pdl, cudaStream_t st) {
    const long n = (long)nr * (p.in / 16);
    return (int)pdl_launch(pdl, st, k_qdequant<T>, dim3((unsigned)((n + 255) / 256)), dim3(256), p.q, p.s, p.qrow,
                           p.srow, r0, nr, p.in, out);
}

template <int T>
int embed_t(const QPart &p, const int *tok, const int *pos, int rows, float *x, int *len, bool pdl, cudaStream_t st) {
    return (int)pdl_launch(pdl, st, k_qembed<T>, dim3(rows), dim3(128), p.q, p.s, p.qrow, p.srow, p.in, tok, pos, x, len);
}

// f(std::integral_constant<int, T>{}) for the GPU type T of `type` (one of q_type_ok's types):
// the one place that turns a runtime type into a template argument.
template <typename Fn>
auto by_type(int type, Fn &&f) {
    switch (type) {
    case T_Q8_0: return f(std::integral_constant<int, T_Q8_0>{});
    case T_Q4_1: return f(std::integral_constant<int, T_Q4_1>{});
    case T_Q4_K: return f(std::integral_constant<int, T_Q4_K>{});
    default: return f(std::integral_constant<int, T_Q6_K>{});
    }
}

}  // namespace

bool q_type_ok(int type, int in) {
    switch (type) {
    case T_Q8_0: case T_Q4_1: return in > 0 && in % 64 == 0;
    case T_Q4_K: case T_Q6_K: return in > 0 && in % 256 == 0;
    default: return false;
    }
}

int q_append(QMat &m, int type, int row0, int rows, int in, const void *src, size_t src_stride, size_t *bytes) {
    if (!q_type_ok(type, in) || rows < 1) return (int)cudaErrorInvalidValue;
    const int have = m.n ? m.p[m.n - 1].row0 + m.p[m.n - 1].rows : 0;
    if (row0 != have) return (int)cudaErrorInvalidValue;
    const size_t qrow = by_type(type, [&](auto t) { return Q<t.value>::qrow(in); });
    const size_t srow = by_type(type, [&](auto t) { return Q<t.value>::srow(in); });
    // host repack
    uint8_t *hq = (uint8_t *)malloc(qrow * rows), *hs = (uint8_t *)calloc(srow, rows);
    if (!hq || !hs) { free(hq); free(hs); return (int)cudaErrorMemoryAllocation; }
    const int nb = in / (type == T_Q4_K || type == T_Q6_K ? 256 : 32);
    by_type(type, [&](auto t) {
        for (int r = 0; r < rows; r++)
            Q<t.value>::repack((const uint8_t *)src + (size_t)r * src_stride, nb, hq + (size_t)r * qrow,
                               hs + (size_t)r * srow);
    });
    QPart *last = m.n ? &m.p[m.n - 1] : nullptr;
    const bool merge = last && last->type == type && last->in == in;
    if (!merge && m.n == 4) { free(hq); free(hs); return (int)cudaErrorInvalidValue; }
    const int old = merge ? last->rows : 0;
    uint8_t *dq = nullptr, *ds = nullptr;
    cudaError_t e = cudaMalloc((void **)&dq, qrow * (old + rows));
    if (e == cudaSuccess) e = cudaMalloc((void **)&ds, srow * (old + rows));
    if (e == cudaSuccess && merge) e = cudaMemcpy(dq, last->q, qrow * old, cudaMemcpyDeviceToDevice);
    if (e == cudaSuccess && merge) e = cudaMemcpy(ds, last->s, srow * old, cudaMemcpyDeviceToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(dq + qrow * old, hq, qrow * rows, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(ds + srow * old, hs, srow * rows, cudaMemcpyHostToDevice);
    free(hq);
    free(hs);
    if (e != cudaSuccess) { cudaFree(dq); cudaFree(ds); return (int)e; }
    if (merge) {
        cudaFree(last->q);
        cudaFree(last->s);
    } else {
        last = &m.p[m.n++];
        last->type = type; last->row0 = row0; last->in = in; last->qrow = qrow; last->srow = srow;
    }
    last->rows = old + rows;
    last->q = dq;
    last->s = ds;
    *bytes += (qrow + srow) * rows;
    return 0;
}

void q_free(QMat &m) {
    for (int i = 0; i < m.n; i++) { cudaFree(m.p[i].q); cudaFree(m.p[i].s); }
    m.n = 0;
}

int q_quant_x(const __half *x, int rows, int in, int8_t *xq, float4 *xs, bool pdl, cudaStream_t st) {
    if (rows < 1 || in % 32) return (int)cudaErrorInvalidValue;
    const long n = (long)rows * (in / 32);
    return (int)pdl_launch(pdl, st, k_quant_x, dim3((unsigned)((n + 127) / 128)), dim3(128), x, rows, in, xq, xs);
}

int q_gemv(const QMat &m, const int8_t *xq, const float4 *xs, int nb, float *y, int ystride, bool pdl, cudaStream_t st) {
    if (nb < 1 || nb > 8) return (int)cudaErrorInvalidValue;
    for (int i = 0; i < m.n; i++) {
        const QPart &p = m.p[i];
        const int e = by_type(p.type, [&](auto t) { return gemv_t<t.value>(p, xq, xs, nb, y, ystride, pdl, st); });
        if (e) return e;
    }
    return 0;
}

int q_dequant(const QPart &p, int r0, int nr, __half *out, bool pdl, cudaStream_t st) {
    if (r0 < 0 || nr < 1 || r0 + nr > p.rows) return (int)cudaErrorInvalidValue;
    return by_type(p.type, [&](auto t) { return dequant_t<t.value>(p, r0, nr, out, pdl, st); });
}

int q_embed(const QMat &m, const int *tok, const int *pos, int rows, float *x, int *len, bool pdl, cudaStream_t st) {
    if (m.n != 1) return (int)cudaErrorInvalidValue;
    const QPart &p = m.p[0];
    return by_type(p.type, [&](auto t) { return embed_t<t.value>(p, tok, pos, rows, x, len, pdl, st); });
}

}  // namespace dsgpu
