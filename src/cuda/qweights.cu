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
// Rows of both arrays are padded to 16 bytes. Every kernel works in units of 64 elements, each
// unit in 4 runs of 16 consecutive elements with one scale (and for Q4_1 / Q4_K one offset):
// value = scale * v + offset, v the run's small integers.
//
// Decode GEMV: integer dot products. A float multiply-add per weight made the first version
// instruction-bound (Llama-2-7B Q4_K_M decoded at 0.7 TB/s, slower than its fp16 copy;
// bench/NOTES.md), so the activations are quantised to int8 in blocks of 32 (quant_row32, the
// CPU's Q8 dot types do the same) and each run of 16 is four dp4a: a Q4_K unit of 64 weights
// costs ~90 instructions instead of ~500.
#include "pdl.cuh"
#include "qweights.cuh"

#include <stdlib.h>
#include <string.h>

namespace dsgpu {
namespace {

enum { T_Q4_1 = 3, T_Q8_0 = 8, T_Q4_K = 12, T_Q6_K = 14 };

size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; }

__device__ __forceinline__ float hlo(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w & 0xffff))); }
__device__ __forceinline__ float hhi(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w >> 16))); }
__device__ __forceinline__ uint32_t byte_of(const uint4 &v, int i) {
    const uint32_t w = i < 4 ? v.x : i < 8 ? v.y : i < 12 ? v.z : v.w;
    return (w >> (8 * (i & 3))) & 0xff;
}

// sum of 4 products of unsigned bytes of a with signed bytes of b, plus c
__device__ __forceinline__ int dp4a_us(uint32_t a, uint32_t b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// Each type: load() a unit's bytes; run() its values as floats (dequantisation); words() run r's
// 16 values as 4 words of bytes (SIGNED or not) and rscale() the run's scale and offset, so that
// run r . x = sc * (v . x) + off * (sum of x): xblk()/xhalf() name the activation block of 32
// and which half of it run r meets.
template <int T> struct Q;

template <> struct Q<T_Q8_0> {
    static size_t qrow(int in) { return (size_t)in; }
    static size_t srow(int in) { return pad16((size_t)in / 32 * 2); }
    static void repack(const uint8_t *b, int nb, uint8_t *q, uint8_t *s) {   // one row of nb blocks
        for (int i = 0; i < nb; i++, b += 34) { memcpy(s + 2 * i, b, 2); memcpy(q + 32 * i, b + 2, 32); }
    }
    struct U { uint4 w[4]; uint32_t d; };
    __device__ static void load(const uint8_t *q, const uint8_t *s, int u, U &x) {
        const uint4 *p = (const uint4 *)(q + 64 * (size_t)u);
#pragma unroll
        for (int i = 0; i < 4; i++) x.w[i] = __ldcs(p + i);
        x.d = __ldg((const uint32_t *)(s + 4 * (size_t)u));
    }
    __device__ static int elem(int u, int r) { return 64 * u + 16 * r; }
    __device__ static void run(const U &x, int r, float v[16], float &sc, float &off) {
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = (float)(int8_t)byte_of(x.w[r], i);
        sc = r < 2 ? hlo(x.d) : hhi(x.d);
        off = 0;
    }
    static constexpr bool SIGNED = true;
    __device__ static void words(const U &x, int r, uint32_t o[4]) { o[0] = x.w[r].x; o[1] = x.w[r].y; o[2] = x.w[r].z; o[3] = x.w[r].w; }
    __device__ static void rscale(const U &x, int r, float &sc, float &off) { sc = r < 2 ? hlo(x.d) : hhi(x.d); off = 0; }
    __device__ static int xblk(int u, int r) { return 2 * u + (r >> 1); }
    __device__ static int xhalf(int u, int r) { return r & 1; }
};

template <> struct Q<T_Q4_1> {
    static size_t qrow(int in) { return (size_t)in / 2; }
    static size_t srow(int in) { return pad16((size_t)in / 32 * 4); }
    static void repack(const uint8_t *b, int nb, uint8_t *q, uint8_t *s) {
        for (int i = 0; i < nb; i++, b += 20) { memcpy(s + 4 * i, b, 4); memcpy(q + 16 * i, b + 4, 16); }
    }
    struct U { uint4 w[2]; uint2 dm; };
    __device__ static void load(const uint8_t *q, const uint8_t *s, int u, U &x) {
        const uint4 *p = (const uint4 *)(q + 32 * (size_t)u);
        x.w[0] = __ldcs(p);
        x.w[1] = __ldcs(p + 1);
        x.dm = __ldg((const uint2 *)(s + 8 * (size_t)u));
    }
    // runs: block 2u elements 0-15 (low nibbles), 16-31 (high), then block 2u + 1 likewise
    __device__ static int elem(int u, int r) { return 64 * u + 16 * r; }
    __device__ static void run(const U &x, int r, float v[16], float &sc, float &off) {
        const int sh = 4 * (r & 1);
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = (float)((byte_of(x.w[r >> 1], i) >> sh) & 15);
        const uint32_t w = r < 2 ? x.dm.x : x.dm.y;
        sc = hlo(w);
        off = hhi(w);
    }
    static constexpr bool SIGNED = false;
    __device__ static void words(const U &x, int r, uint32_t o[4]) {
        const uint4 &b = x.w[r >> 1];
        const int sh = 4 * (r & 1);
        o[0] = (b.x >> sh) & 0x0f0f0f0fu; o[1] = (b.y >> sh) & 0x0f0f0f0fu;
        o[2] = (b.z >> sh) & 0x0f0f0f0fu; o[3] = (b.w >> sh) & 0x0f0f0f0fu;
    }
    __device__ static void rscale(const U &x, int r, float &sc, float &off) {
        const uint32_t w = r < 2 ? x.dm.x : x.dm.y;
        sc = hlo(w);
        off = hhi(w);
    }
    __device__ static int xblk(int u, int r) { return 2 * u + (r >> 1); }
    __device__ static int xhalf(int u, int r) { return r & 1; }
};

template <> struct Q<T_Q4_K> {
    static size_t qrow(int in) { return (size_t)in / 2; }
    static size_t srow(int in) { return pad16((size_t)in / 256 * 20); }
    // scales and mins unpacked on upload: extracting the packed 6-bit fields per run cost more
    // instructions than the rest of the dot product
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
    // pair p = u % 4 of super-block u / 4: sub-blocks 2p (low nibbles) and 2p + 1 (high); the
    // words holding their scales and mins, and the bit offset of sub-block 2p in them
    struct U { uint4 w[2]; uint32_t dm, scw, mnw; int sh; };
    __device__ static void load(const uint8_t *q, const uint8_t *s, int u, U &x) {
        const uint4 *p = (const uint4 *)(q + 32 * (size_t)u);
        x.w[0] = __ldcs(p);
        x.w[1] = __ldcs(p + 1);
        const uint32_t *rec = (const uint32_t *)(s + 20 * (size_t)(u >> 2));
        const int pr = u & 3;
        x.dm = __ldg(rec);
        x.scw = __ldg(rec + 1 + (pr >> 1));
        x.mnw = __ldg(rec + 3 + (pr >> 1));
        x.sh = 16 * (pr & 1);
    }
    __device__ static int elem(int u, int r) { return 64 * u + 16 * r; }
    __device__ static void run(const U &x, int r, float v[16], float &sc, float &off) {
        const int sh = 4 * (r >> 1);
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = (float)((byte_of(x.w[r & 1], i) >> sh) & 15);
        rscale(x, r, sc, off);
    }
    __device__ static void rscale(const U &x, int r, float &sc, float &off) {
        const int sh = x.sh + 8 * (r >> 1);
        sc = hlo(x.dm) * (float)((x.scw >> sh) & 63);
        off = -(hhi(x.dm) * (float)((x.mnw >> sh) & 63));
    }
    static constexpr bool SIGNED = false;
    __device__ static void words(const U &x, int r, uint32_t o[4]) {
        const uint4 &b = x.w[r & 1];
        const int sh = 4 * (r >> 1);
        o[0] = (b.x >> sh) & 0x0f0f0f0fu; o[1] = (b.y >> sh) & 0x0f0f0f0fu;
        o[2] = (b.z >> sh) & 0x0f0f0f0fu; o[3] = (b.w >> sh) & 0x0f0f0f0fu;
    }
    __device__ static int xblk(int u, int r) { return 2 * u + (r >> 1); }
    __device__ static int xhalf(int u, int r) { return r & 1; }
};

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
    struct U { uint4 a, b, h; uint4 sc; float d; int v; };
    // unit u: super-block u / 4, half (u % 4) / 2, l0 = 16 * (u % 2); its runs k = 0..3 are the
    // elements 128 half + 32 k + l0 + [0, 16)
    __device__ static void load(const uint8_t *q, const uint8_t *s, int u, U &x) {
        const int v = u & 3, hf = v >> 1, l0 = 16 * (v & 1);
        const uint8_t *base = q + 192 * (size_t)(u >> 2);
        x.a = __ldcs((const uint4 *)(base + 64 * hf + l0));
        x.b = __ldcs((const uint4 *)(base + 64 * hf + 32 + l0));
        x.h = __ldcs((const uint4 *)(base + 128 + 32 * hf + l0));
        const uint8_t *rec = s + 32 * (size_t)(u >> 2);
        x.sc = __ldg((const uint4 *)rec);
        x.d = __half2float(__ushort_as_half(__ldg((const unsigned short *)(rec + 16))));
        x.v = v;
    }
    __device__ static int elem(int u, int r) {
        const int v = u & 3;
        return 256 * (u >> 2) + 128 * (v >> 1) + 32 * r + 16 * (v & 1);
    }
    __device__ static void run(const U &x, int r, float v[16], float &sc, float &off) {
        const uint4 &lo = (r & 1) ? x.b : x.a;
        const int sh = 4 * (r >> 1);
#pragma unroll
        for (int i = 0; i < 16; i++) {
            const int q6 = (int)(((byte_of(lo, i) >> sh) & 15) | (((byte_of(x.h, i) >> (2 * r)) & 3) << 4));
            v[i] = (float)(q6 - 32);
        }
        sc = x.d * (float)scale8(x, r);
        off = 0;
    }
    // scales[8 half + (v & 1) + 2 r] (signed): word 2 half + r / 2, byte (v & 1) + 2 (r & 1)
    __device__ static int scale8(const U &x, int r) {
        const uint32_t w = (x.v >> 1) ? ((r >> 1) ? x.sc.w : x.sc.z) : ((r >> 1) ? x.sc.y : x.sc.x);
        return (int)(w << (24 - 8 * ((x.v & 1) + 2 * (r & 1)))) >> 24;
    }
    // as unsigned q in [0, 64): value = sc * (q - 32), so the offset is -32 sc
    static constexpr bool SIGNED = false;
    __device__ static void words(const U &x, int r, uint32_t o[4]) {
        const uint4 &lo = (r & 1) ? x.b : x.a;
        const int sh = 4 * (r >> 1), hs = 2 * r;
        o[0] = ((lo.x >> sh) & 0x0f0f0f0fu) | (((x.h.x >> hs) & 0x03030303u) << 4);
        o[1] = ((lo.y >> sh) & 0x0f0f0f0fu) | (((x.h.y >> hs) & 0x03030303u) << 4);
        o[2] = ((lo.z >> sh) & 0x0f0f0f0fu) | (((x.h.z >> hs) & 0x03030303u) << 4);
        o[3] = ((lo.w >> sh) & 0x0f0f0f0fu) | (((x.h.w >> hs) & 0x03030303u) << 4);
    }
    __device__ static void rscale(const U &x, int r, float &sc, float &off) {
        sc = x.d * (float)scale8(x, r);
        off = -32.0f * sc;
    }
    __device__ static int xblk(int u, int r) { return 8 * (u >> 2) + 4 * ((u & 3) >> 1) + r; }
    __device__ static int xhalf(int u, int r) { return u & 1; }
};

// ---- decode GEMV: LPR lanes per row (8, 16 or 32, so short rows keep the lanes busy), each
// lane two units of 64 weights per step, decoded once for all nb activation rows. xq [nb][in]
// int8 and xs [nb][in / 32] (quant_row32's blocks) are a few KB, read through L1.
// Each lane group runs RW rows as one software pipeline: the next step's weights (of this row or
// the next) are loaded while the current step is computed. With one row per group and no
// pipeline, a row of 4096 was a single round trip per warp followed by its compute and a block
// launch: 1.0-1.6 TB/s (ncu), below the fp16 GEMV per weight although it ran fewer instructions.
template <int T, int NB>
__global__ void __launch_bounds__(256) k_qgemv(const uint8_t *__restrict__ q, const uint8_t *__restrict__ s, size_t qrow,
                                               size_t srow, int rows, int in, int lpr, int rw, const int8_t *__restrict__ xq,
                                               const float4 *__restrict__ xs, int nb, float *__restrict__ y, int ystride) {
    using U = typename Q<T>::U;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane / lpr, li = lane % lpr;
    const int row0 = ((blockIdx.x * 8 + warp) * (32 / lpr) + sub) * rw;
    const int units = in / 64;
    const int S = (units + 2 * lpr - 1) / (2 * lpr);   // steps per row (the same for every group)
    const int steps = rw * S;
    // the weights do not depend on the previous kernel: start fetching the first ones before waiting
    if (row0 < rows && li < units) {
        const int ub = (int)(qrow * 64 / in);
        asm volatile("prefetch.global.L2 [%0];" ::"l"(q + (size_t)row0 * qrow + (size_t)li * ub));
    }
    pdl_trigger();
    pdl_wait();
    // step t: row row0 + t / S, units u0 = li + 2 lpr (t % S) and u0 + lpr
    auto load_step = [&](int t, U &a, U &b, bool &ha, bool &hb) {
        const int row = row0 + t / S, u0 = li + 2 * lpr * (t % S);
        ha = row < rows && u0 < units;
        hb = row < rows && u0 + lpr < units;
        if (ha) Q<T>::load(q + (size_t)row * qrow, s + (size_t)row * srow, u0, a);
        if (hb) Q<T>::load(q + (size_t)row * qrow, s + (size_t)row * srow, u0 + lpr, b);
    };
    float acc[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) acc[b] = 0;
    auto dot_unit = [&](const U &w, int u) {
#pragma unroll
        for (int r = 0; r < 4; r++) {
            uint32_t wd[4];
            Q<T>::words(w, r, wd);
            float sc, off;
            Q<T>::rscale(w, r, sc, off);
            const int e = Q<T>::elem(u, r), xb = Q<T>::xblk(u, r), xh = Q<T>::xhalf(u, r);
#pragma unroll
            for (int b = 0; b < NB; b++) {
                if (b >= nb) break;
                const uint4 xv = __ldg((const uint4 *)(xq + (size_t)b * in + e));
                const float4 m = __ldg(xs + (size_t)b * (in / 32) + xb);
                int d;
                if (Q<T>::SIGNED) d = __dp4a((int)wd[3], (int)xv.w, __dp4a((int)wd[2], (int)xv.z, __dp4a((int)wd[1], (int)xv.y, __dp4a((int)wd[0], (int)xv.x, 0))));
                else d = dp4a_us(wd[3], xv.w, dp4a_us(wd[2], xv.z, dp4a_us(wd[1], xv.y, dp4a_us(wd[0], xv.x, 0))));
                acc[b] = fmaf(sc * m.x, (float)d, acc[b]);
                if (!Q<T>::SIGNED) acc[b] = fmaf(off, xh ? m.z : m.y, acc[b]);
            }
        }
    };
    U a0, b0, a1, b1;
    bool ha0, hb0, ha1 = false, hb1 = false;
    load_step(0, a0, b0, ha0, hb0);
    for (int t = 0; t < steps; t++) {
        if (t + 1 < steps) load_step(t + 1, a1, b1, ha1, hb1);
        const int u0 = li + 2 * lpr * (t % S);
        if (ha0) dot_unit(a0, u0);
        if (hb0) dot_unit(b0, u0 + lpr);
        if (t % S == S - 1) {   // the row is complete: reduce over its lane group (uniform in the warp)
            const int row = row0 + t / S;
#pragma unroll
            for (int b = 0; b < NB; b++) {
                float v = acc[b];
                for (int o = lpr / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                if (li == 0 && b < nb && row < rows) y[(size_t)b * ystride + row] = v;
                acc[b] = 0;
            }
        }
        a0 = a1; b0 = b1; ha0 = ha1; hb0 = hb1;
    }
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

// ---- dequantisation, one thread per unit of 64 elements
template <int T>
__global__ void k_qdequant(const uint8_t *__restrict__ q, const uint8_t *__restrict__ s, size_t qrow, size_t srow,
                           int r0, int nr, int in, __half *__restrict__ out) {
    pdl_trigger();
    pdl_wait();   // out may still be read by the previous GEMM
    const int units = in / 64;
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)nr * units) return;
    const int rr = (int)(i / units), u = (int)(i % units);
    typename Q<T>::U w;
    Q<T>::load(q + (size_t)(r0 + rr) * qrow, s + (size_t)(r0 + rr) * srow, u, w);
#pragma unroll
    for (int r = 0; r < 4; r++) {
        float v[16], sc, off;
        Q<T>::run(w, r, v, sc, off);
        // two 16-byte stores per run (2-byte stores made the pass store-bound)
        uint4 o[2];
        __half2 *h = (__half2 *)o;
#pragma unroll
        for (int j = 0; j < 8; j++) h[j] = __floats2half2_rn(sc * v[2 * j] + off, sc * v[2 * j + 1] + off);
        uint4 *dst = (uint4 *)(out + (size_t)rr * in + Q<T>::elem(u, r));
        dst[0] = o[0];
        dst[1] = o[1];
    }
}

// ---- embedding rows: one block per token
template <int T>
__global__ void k_qembed(const uint8_t *__restrict__ q, const uint8_t *__restrict__ s, size_t qrow, size_t srow,
                         int in, const int *tok, const int *pos, float *x, int *len) {
    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.x, t = tok[r];
    for (int u = threadIdx.x; u < in / 64; u += blockDim.x) {
        typename Q<T>::U w;
        Q<T>::load(q + (size_t)t * qrow, s + (size_t)t * srow, u, w);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float v[16], sc, off;
            Q<T>::run(w, k, v, sc, off);
            float *o = x + (size_t)r * in + Q<T>::elem(u, k);
#pragma unroll
            for (int j = 0; j < 16; j++) o[j] = sc * v[j] + off;
        }
    }
    if (threadIdx.x == 0) len[r] = pos[r] + 1;
}

// Rows per lane group: up to 4, as long as the grid keeps >= 2 blocks per SM.
int gemv_rw(int rows, int rows_per_block) {
    static int sms = 0;
    if (!sms) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
            sms = 132;
    }
    int rw = 4;
    while (rw > 1 && (rows + rows_per_block * rw - 1) / (rows_per_block * rw) < 2 * sms) rw /= 2;
    return rw;
}

template <int T>
int gemv_t(const QPart &p, const int8_t *xq, const float4 *xs, int nb, float *y, int ystride, bool pdl, cudaStream_t st) {
    const int units = p.in / 64;
    const int lpr = units >= 24 ? 32 : units >= 12 ? 16 : 8;
    const int groups = 8 * (32 / lpr), rw = gemv_rw(p.rows, groups);
    const dim3 grid((p.rows + groups * rw - 1) / (groups * rw)), block(256);
    float *yo = y + p.row0;
#define QG(NB_) return (int)pdl_launch(pdl, st, k_qgemv<T, NB_>, grid, block, p.q, p.s, p.qrow, p.srow, p.rows, p.in, lpr, rw, xq, xs, nb, yo, ystride)
    if (nb <= 1) QG(1);
    if (nb <= 2) QG(2);
    if (nb <= 4) QG(4);
    QG(8);
#undef QG
}

template <int T>
int dequant_t(const QPart &p, int r0, int nr, __half *out, bool pdl, cudaStream_t st) {
    const long n = (long)nr * (p.in / 64);
    return (int)pdl_launch(pdl, st, k_qdequant<T>, dim3((unsigned)((n + 255) / 256)), dim3(256), p.q, p.s, p.qrow,
                           p.srow, r0, nr, p.in, out);
}

template <int T>
int embed_t(const QPart &p, const int *tok, const int *pos, int rows, float *x, int *len, bool pdl, cudaStream_t st) {
    return (int)pdl_launch(pdl, st, k_qembed<T>, dim3(rows), dim3(128), p.q, p.s, p.qrow, p.srow, p.in, tok, pos, x, len);
}

size_t qrow_of(int type, int in) {
    switch (type) {
    case T_Q8_0: return Q<T_Q8_0>::qrow(in);
    case T_Q4_1: return Q<T_Q4_1>::qrow(in);
    case T_Q4_K: return Q<T_Q4_K>::qrow(in);
    default: return Q<T_Q6_K>::qrow(in);
    }
}
size_t srow_of(int type, int in) {
    switch (type) {
    case T_Q8_0: return Q<T_Q8_0>::srow(in);
    case T_Q4_1: return Q<T_Q4_1>::srow(in);
    case T_Q4_K: return Q<T_Q4_K>::srow(in);
    default: return Q<T_Q6_K>::srow(in);
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
    const size_t qrow = qrow_of(type, in), srow = srow_of(type, in);
    // host repack
    uint8_t *hq = (uint8_t *)malloc(qrow * rows), *hs = (uint8_t *)calloc(srow, rows);
    if (!hq || !hs) { free(hq); free(hs); return (int)cudaErrorMemoryAllocation; }
    const int nb = in / (type == T_Q4_K || type == T_Q6_K ? 256 : 32);
    for (int r = 0; r < rows; r++) {
        const uint8_t *b = (const uint8_t *)src + (size_t)r * src_stride;
        uint8_t *qo = hq + (size_t)r * qrow, *so = hs + (size_t)r * srow;
        switch (type) {
        case T_Q8_0: Q<T_Q8_0>::repack(b, nb, qo, so); break;
        case T_Q4_1: Q<T_Q4_1>::repack(b, nb, qo, so); break;
        case T_Q4_K: Q<T_Q4_K>::repack(b, nb, qo, so); break;
        default: Q<T_Q6_K>::repack(b, nb, qo, so); break;
        }
    }
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
        int e;
        switch (p.type) {
        case T_Q8_0: e = gemv_t<T_Q8_0>(p, xq, xs, nb, y, ystride, pdl, st); break;
        case T_Q4_1: e = gemv_t<T_Q4_1>(p, xq, xs, nb, y, ystride, pdl, st); break;
        case T_Q4_K: e = gemv_t<T_Q4_K>(p, xq, xs, nb, y, ystride, pdl, st); break;
        default: e = gemv_t<T_Q6_K>(p, xq, xs, nb, y, ystride, pdl, st); break;
        }
        if (e) return e;
    }
    return 0;
}

int q_dequant(const QPart &p, int r0, int nr, __half *out, bool pdl, cudaStream_t st) {
    if (r0 < 0 || nr < 1 || r0 + nr > p.rows) return (int)cudaErrorInvalidValue;
    switch (p.type) {
    case T_Q8_0: return dequant_t<T_Q8_0>(p, r0, nr, out, pdl, st);
    case T_Q4_1: return dequant_t<T_Q4_1>(p, r0, nr, out, pdl, st);
    case T_Q4_K: return dequant_t<T_Q4_K>(p, r0, nr, out, pdl, st);
    default: return dequant_t<T_Q6_K>(p, r0, nr, out, pdl, st);
    }
}

int q_embed(const QMat &m, const int *tok, const int *pos, int rows, float *x, int *len, bool pdl, cudaStream_t st) {
    if (m.n != 1) return (int)cudaErrorInvalidValue;
    const QPart &p = m.p[0];
    switch (p.type) {
    case T_Q8_0: return embed_t<T_Q8_0>(p, tok, pos, rows, x, len, pdl, st);
    case T_Q4_1: return embed_t<T_Q4_1>(p, tok, pos, rows, x, len, pdl, st);
    case T_Q4_K: return embed_t<T_Q4_K>(p, tok, pos, rows, x, len, pdl, st);
    default: return embed_t<T_Q6_K>(p, tok, pos, rows, x, len, pdl, st);
    }
}

}  // namespace dsgpu
