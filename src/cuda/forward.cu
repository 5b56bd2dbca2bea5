// forward.cu — the GPU forward pass for llama/qwen2 (declarations: src/backend.h).
//
// Layout and precision: weights fp16 on the device ([out][in] row-major, as in GGUF) with fused
// QKV ([(H + 2 KVH) hd][E]) and gate/up ([2F][E]) matrices, so each layer runs four GEMMs; the
// gate and up rows interleaved in groups of 8 (gu_row(): one 16-row MMA tile holds 8 gate rows
// and their up rows, so the GEMV writes silu(gate) * up directly); the residual stream x is
// fp32 [rows][E]; GEMM inputs fp16, outputs fp32 (cuBLAS, fp32
// accumulation); K/V cache fp16 [layer][slot][KVH][n_ctx][hd] (the attention kernels' layout);
// Double Sparsity labels [layer][slot][KVH][n_ctx][row_bytes] (+ lo/step), written by the same
// kernel that applies RoPE and appends K/V.
//
// Decode of slots [0, B) is one CUDA graph per B: the step's tokens and positions are copied
// into device buffers before the replay, and every kernel reads them there, so one graph
// serves every step. Prefill runs eagerly for one slot (GEMMs with N = T rows; causal attention
// by the decode kernel with one "sequence" per query row sharing the slot's cache).
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
}
#include "label.cuh"
#include "pdl.cuh"
#include "qweights.cuh"

using dsgpu::pdl_trigger;
using dsgpu::pdl_wait;

namespace {

struct Layer {
    __half *wqkv, *wo, *wgu, *wdown;   // [(H+2KVH)hd][E], [E][H hd], [2F][E], [E][F]; null when quantised
    dsgpu::QMat qqkv, qo, qgu, qdown;  // the same kept quantised (qweights.cuh; gate/up not interleaved)
    float *attn_norm, *ffn_norm;       // [E]
    float *bqkv;                       // [(H+2KVH)hd] or null
};

}  // namespace

struct ds_gpu_forward {
    ds_gpu_forward_cfg c;
    int QKV, rows_max;
    Layer *L;                     // host array of device pointers
    __half *tok_embd, *output;    // [V][E] (output aliases tok_embd when tied); null when quantised
    dsgpu::QMat qembd, qout;      // quantised embedding / output (tied: qout unused, qembd serves)
    __half *deq;                  // [deq_elems] fp16 slab: quantised rows dequantised for prefill GEMMs
    size_t deq_elems;
    int8_t *xq;                   // [8][max(E, H hd, F)]: a decode GEMV's input as int8 blocks of 32
    float4 *xs;                   // [8][max(E, H hd, F) / 32]: their scales and half sums (quant_row32)
    float *output_norm, *inv_freq;
    __half *k_cache, *v_cache;    // [L][slots][KVH][n_ctx][hd]
    uint8_t *labels;              // [L][slots][KVH][n_ctx][rb]
    uint16_t *lab_lo, *lab_step;  // [L][slots][KVH][n_ctx]
    int16_t *chan;                // [L][KVH][r]
    float *lab_mean, *lab_scale;  // [L][KVH][r] label normalisation, or null
    uint8_t *dense_layer;         // host [L]
    size_t rb;
    float *x, *qkv, *tmp, *gu, *logits;   // [rows][E], [rows][QKV], [rows][E], [rows][2F], [rows][V]
    __half *xn, *q, *att, *act;           // [rows][E], [rows][H hd] x2, [rows][F]
    int *d_tok, *d_pos, *d_len;           // [rows]
    int *h_tok, *h_pos;                   // pinned staging for the graph's inputs
    int *pos;                             // host: tokens cached per slot
    void *ws, *ws_pre, *blas_ws;          // attention workspaces: decode (max_batch), prefill (max_prefill)
    cublasHandle_t blas;
    cudaStream_t st;
    cudaEvent_t ev0, ev1;
    cudaGraphExec_t graph[2][65];         // decode graph per mode (dense, DS) and batch size
    float last_ms;
    int use_sparse;                       // DS attention in decode (labels are kept whenever c.sparse)
    int use_cublas_gemv;                  // DSINFER_GPU_CUBLAS=1: cuBLAS for decode GEMVs too (comparison)
    int skip_attn;                        // DSINFER_GPU_SKIP_ATTN=1: no attention (timing the rest only)
    int gemv_small_rows;                  // GEMVs up to this many output rows use one row per warp (k_gemv)
    int gemv_kind;                        // DSINFER_GPU_GEMV: 0 k_gemv (CUDA cores), 2 or 4 k_gemv_mma<UN>, 5 (default) UN 4 pipelined
    int gemv_pipe;                        // DSINFER_GPU_GEMV_PIPE=0: k_gemv not software-pipelined (comparison)
    int mma_force_warps;                  // DSINFER_GPU_MMA_WARPS: fixed warps per block (default: one wave)
    int mma_occ[2][3][5];                 // [swiglu][UN 2, 4, 4 pipelined][warps index]: resident blocks per SM
    int n_sm;
    int mma_min_rows;                     // DSINFER_GPU_MMA_MIN_ROWS: k_gemv_mma from this many rows on
    int pdl;                              // programmatic dependent launch (pdl.cuh)
    size_t bytes;
};

namespace {

#define TRY(x) do { int e_ = (int)(x); if (e_) return e_; } while (0)
#define TRYB(x) do { cublasStatus_t b_ = (x); if (b_ != CUBLAS_STATUS_SUCCESS) return (int)cudaErrorUnknown; } while (0)

template <typename T>
int dalloc(ds_gpu_forward *f, T **p, size_t n) {
    size_t b = (n ? n : 1) * sizeof(T);
    f->bytes += b;
    return (int)cudaMalloc((void **)p, b);
}

// Launch on the forward stream (programmatic dependent launch unless DSINFER_GPU_PDL=0).
template <typename... KArgs, typename... Args>
int launch(ds_gpu_forward *f, void (*k)(KArgs...), dim3 grid, dim3 block, Args... args) {
    return (int)dsgpu::pdl_launch(f->pdl, f->st, k, grid, block, args...);
}

// Integer setting from the environment (comparison switches), or def when unset.
int env_int(const char *name, int def) { return getenv(name) ? atoi(getenv(name)) : def; }

unsigned grid_for(size_t n) { size_t g = (n + 255) / 256; return (unsigned)(g < 8192 ? (g ? g : 1) : 8192); }

// ---- kernels ----
// x[r] = embedding of tok[r]; len[r] = pos[r] + 1 (the attention kernels' sequence lengths).
__global__ void k_embed(const __half *tab, const int *tok, const int *pos, int E, float *x, int *len) {
    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.x;
    const __half *row = tab + (size_t)tok[r] * E;
    for (int i = threadIdx.x; i < E; i += blockDim.x) x[(size_t)r * E + i] = __half2float(row[i]);
    if (threadIdx.x == 0) len[r] = pos[r] + 1;
}

// x += add (when add), then xn = fp16(rmsnorm(x) * w), and when xq is given xn's int8 blocks
// for a quantised GEMV (E % 32 == 0). One block (256 threads) per row.
__global__ void k_add_norm(float *x, const float *add, const float *w, int E, float eps, __half *xn, int8_t *xq,
                           float4 *xs) {
    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.x;
    float *xr = x + (size_t)r * E;
    float ss = 0;
    for (int i = threadIdx.x; i < E; i += blockDim.x) {
        float v = xr[i];
        if (add) { v += add[(size_t)r * E + i]; xr[i] = v; }
        ss += v * v;
    }
    __shared__ float red[8];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
    __syncthreads();
    float tot = 0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) tot += red[i];
    const float inv = rsqrtf(tot / E + eps);
    for (int i = threadIdx.x; i < E; i += blockDim.x) xn[(size_t)r * E + i] = __float2half(xr[i] * inv * w[i]);
    if (xq) {
        __syncthreads();
        dsgpu::quant_row_block(xn + (size_t)r * E, E, xq + (size_t)r * E, xs + (size_t)r * E / 32);
    }
}

// k_add_norm with the row in registers: one block of up to 1024 threads per row, each thread
// holding up to 4 float4 of it, so every load of a thread is in flight at once (the 256-thread
// loop above ran 16 dependent rounds per pass at E = 4096, and read the row twice). E % 4 == 0,
// E <= 16 * blockDim.x.
__global__ void __launch_bounds__(1024) k_add_norm_v(float *x, const float *add, const float *w, int E, float eps,
                                                     __half *xn, int8_t *xq, float4 *xs) {
    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.x, n4 = E >> 2;
    float4 *xr = (float4 *)(x + (size_t)r * E);
    const float4 *ar = add ? (const float4 *)(add + (size_t)r * E) : nullptr;
    float4 v[4];
    float ss = 0;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int i = threadIdx.x + j * blockDim.x;
        if (i < n4) {
            float4 a = xr[i];
            if (ar) {
                const float4 b = ar[i];
                a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w;
                xr[i] = a;
            }
            v[j] = a;
            ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
        }
    }
    __shared__ float red[32];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
    __syncthreads();
    float tot = 0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) tot += red[i];
    const float inv = rsqrtf(tot / E + eps);
    const float4 *w4 = (const float4 *)w;
    uint2 *out = (uint2 *)(xn + (size_t)r * E);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int i = threadIdx.x + j * blockDim.x;
        if (i < n4) {
            const float4 g = w4[i];
            const __half2 lo = __floats2half2_rn(v[j].x * inv * g.x, v[j].y * inv * g.y);
            const __half2 hi = __floats2half2_rn(v[j].z * inv * g.z, v[j].w * inv * g.w);
            out[i] = make_uint2(*(const uint32_t *)&lo, *(const uint32_t *)&hi);
        }
    }
    if (xq) {
        __syncthreads();
        dsgpu::quant_row_block(xn + (size_t)r * E, E, xq + (size_t)r * E, xs + (size_t)r * E / 32);
    }
}

// RoPE + bias + K/V append (+ labels). Row r writes slot (per_row_slot ? r : 0) of the caches
// passed in, at position pos[r]; q goes to q_out [rows][H][hd]. One block per (row, head) of
// hd / 2 threads, one rotation pair each (a decode step runs B * (H + KVH) blocks; one block per
// row, the earlier kernel, ran dependent rounds over all heads). A K head's block also appends
// its V row and, when labels are kept, its label row (one warp, label_encode_row_warp), computed
// from the fp16 K row just written, i.e. exactly the cached row (as on the CPU).
__global__ void __launch_bounds__(64) k_rope_append_h(const float *qkv, const float *bias, int H, int KVH, int hd,
                                                      int neox, const float *inv_freq, const int *pos, int per_row_slot,
                                                      int n_ctx, __half *q_out, __half *kc, __half *vc, int r_lab,
                                                      int bits, int rb, const int16_t *chan, const float *lab_mean,
                                                      const float *lab_scale, uint8_t *labels, uint16_t *lo,
                                                      uint16_t *step) {
    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.x, h = blockIdx.y, i = threadIdx.x, p = pos[r], b = per_row_slot ? r : 0;
    const int QKV = (H + 2 * KVH) * hd, half = hd / 2, base = h * hd;   // q heads, then k heads
    const float *row = qkv + (size_t)r * QKV;
    const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
    float a0 = row[base + i0], a1 = row[base + i1];
    if (bias) { a0 += bias[base + i0]; a1 += bias[base + i1]; }
    float sn, cs;
    sincosf((float)p * inv_freq[i], &sn, &cs);
    const float o0 = a0 * cs - a1 * sn, o1 = a0 * sn + a1 * cs;
    if (h < H) {
        __half *dst = q_out + ((size_t)r * H + h) * hd;
        dst[i0] = __float2half(o0);
        dst[i1] = __float2half(o1);
        return;   // uniform per block
    }
    const int kh = h - H;
    const size_t rowi = ((size_t)b * KVH + kh) * n_ctx + p;
    __half *kd = kc + rowi * hd;
    kd[i0] = __float2half(o0);
    kd[i1] = __float2half(o1);
    const int vb = (H + KVH) * hd + kh * hd;
    for (int e = i; e < hd; e += half) vc[rowi * hd + e] = __float2half(row[vb + e] + (bias ? bias[vb + e] : 0.0f));
    if (!labels) return;
    __syncthreads();   // the block's K writes are visible to the block after the barrier
    if (i < 32) {
        const size_t at = (size_t)kh * r_lab;
        dsgpu::label_encode_row_warp((const uint16_t *)kd, chan + at, lab_mean ? lab_mean + at : nullptr,
                                     lab_scale ? lab_scale + at : nullptr, r_lab, bits, rb, labels + rowi * rb,
                                     lo + rowi, step + rowi);
    }
}

__device__ __forceinline__ float swiglu(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// act[r][i] = silu(gate_i) * up_i from gu[r][2F]: in the interleaved layout (gu_row()) of the
// fp16 matrix, or gate then up (inter = 0: a quantised matrix keeps the GGUF row order); when
// xq is given also act's int8 blocks for a quantised down projection (F % 32 == 0).
__global__ void k_swiglu(const float *gu, int F, int inter, __half *act, int8_t *xq, float4 *xs) {
    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.y;
    const float *row = gu + (size_t)r * 2 * F;
    for (int c = blockIdx.x * blockDim.x; c < F; c += gridDim.x * blockDim.x) {   // uniform per block
        const int i = c + threadIdx.x;
        if (i < F) {
            const float g = inter ? row[(size_t)(i >> 3) * 16 + (i & 7)] : row[i];
            const float u = inter ? row[(size_t)(i >> 3) * 16 + 8 + (i & 7)] : row[F + i];
            act[(size_t)r * F + i] = __float2half(swiglu(g, u));
        }
        if (xq) {   // this chunk's blocks of 32, one thread each
            __syncthreads();
            const int b0 = c + 32 * threadIdx.x;
            if (threadIdx.x < blockDim.x / 32 && b0 < F)
                dsgpu::quant_row32(act + (size_t)r * F + b0, xq + (size_t)r * F + b0, xs + ((size_t)r * F + b0) / 32);
        }
    }
}

// Deterministic pseudo-random fill: uniform in [-a, a] from a hash of (index, seed).
__global__ void k_fill_half(__half *p, size_t n, float a, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        float u = (float)(z >> 40) * (1.0f / 16777216.0f);
        p[i] = __float2half((2 * u - 1) * a);
    }
}
__global__ void k_fill_float(float *p, size_t n, float v) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) p[i] = v;
}

// PIPE GEMVs load their first iteration's weights into registers before the PDL wait (1), or
// after it (0; k_gemv_mma then prefetches them into L2 before the wait). Weights never depend on
// the previous kernel, so a block that is resident early has its first loads back by the time x
// is ready. Measured on the H200 (bench/NOTES.md, 2026-12-04), Llama-2-7B shape at 16K, 0 -> 1:
// DS step B=1 4.80 -> 4.60 ms, B=4 5.40 -> 5.28, B=8 6.31 -> 6.16; dense B=4 11.89 -> 11.75.
#ifndef GEMV_EARLY
#define GEMV_EARLY 1
#endif

// Decode GEMV for up to 8 rows: the weights are read once, 16 bytes per lane per load, each
// warp owning RPW output rows with UN loads in flight per row; x (a few KB) is read through L1.
// cuBLAS reached 67-84% of the weight bytes' floor for these shapes (bench/NOTES.md).
template <int NB, int RPW, int UN, bool PIPE = false>
__global__ void __launch_bounds__(256) k_gemv(const __half *__restrict__ W, int out, int in, const __half *__restrict__ x,
                                              float *__restrict__ y) {
    const int row0 = (blockIdx.x * 8 + (threadIdx.x >> 5)) * RPW, lane = threadIdx.x & 31;   // warp-uniform
    const int n8 = in / 8;   // 16-byte chunks per row (in % 8 == 0 checked by the caller)
    // PIPE: the next iteration's weights are loaded before this one's are used (as k_gemv_mma);
    // the first iteration's before the PDL wait (weights do not depend on the predecessor)
    uint4 wn[RPW][UN];
    auto first = [&]() {
#pragma unroll
        for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int u = 0; u < UN; u++) {
                const int c = lane + u * 32;
                wn[r][u] = (row0 + r < out && c < n8) ? __ldcs((const uint4 *)(W + (size_t)(row0 + r) * in) + c) : make_uint4(0, 0, 0, 0);
            }
    };
    if (PIPE && GEMV_EARLY) first();
    pdl_trigger();
    pdl_wait();
    if (row0 >= out) return;
    float acc[RPW][NB];
#pragma unroll
    for (int r = 0; r < RPW; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) acc[r][b] = 0;
    if (PIPE && !GEMV_EARLY) first();
    for (int c0 = lane; c0 < n8; c0 += 32 * UN) {
        uint4 w[RPW][UN];
#pragma unroll
        for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int u = 0; u < UN; u++) {
                if (PIPE) {
                    w[r][u] = wn[r][u];
                    const int c = c0 + 32 * UN + u * 32;
                    wn[r][u] = (row0 + r < out && c < n8) ? __ldcs((const uint4 *)(W + (size_t)(row0 + r) * in) + c) : make_uint4(0, 0, 0, 0);
                } else {
                    const int c = c0 + u * 32;
                    w[r][u] = (row0 + r < out && c < n8) ? __ldcs((const uint4 *)(W + (size_t)(row0 + r) * in) + c) : make_uint4(0, 0, 0, 0);
                }
            }
#pragma unroll
        for (int u = 0; u < UN; u++) {
            const int c = c0 + u * 32;
            if (c >= n8) break;
#pragma unroll
            for (int b = 0; b < NB; b++) {
                const uint4 xv = __ldg((const uint4 *)(x + (size_t)b * in) + c);
                const __half2 *xh = (const __half2 *)&xv;
#pragma unroll
                for (int r = 0; r < RPW; r++) {
                    const __half2 *wh = (const __half2 *)&w[r][u];
                    float s = 0;
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        float2 a = __half22float2(wh[i]), bb = __half22float2(xh[i]);
                        s = fmaf(a.x, bb.x, s);
                        s = fmaf(a.y, bb.y, s);
                    }
                    acc[r][b] += s;
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) {
            float v = acc[r][b];
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0 && row0 + r < out) y[(size_t)b * out + row0 + r] = v;
        }
}

__device__ __forceinline__ void prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// D (16x8, fp32) += A (16x16, fp16, row-major) . B (16x8, fp16, column-major): one tensor-core MMA.
__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Decode GEMV for up to 8 rows on the tensor cores. A block owns 16 output rows (one MMA tile)
// and its WARPS warps split the reduction dimension; partial tiles are summed in shared memory
// in a fixed order (deterministic). Why MMA: with CUDA-core FMAs every 16-byte weight chunk
// costs ~8 conversions + 8 FMAs per batch row, which made k_gemv instruction-bound from B = 4
// on; an MMA consumes 512 bytes of weights for all 8 batch rows in one instruction.
// Layout trick: a dot product may sum its terms in any order, so the MMA's k index need not be
// the memory index. Lane (g = lane/4, t = lane%4) loads 16 contiguous bytes (8 halves) of weight
// rows g and g+8 and of x row g at chunk c; the first MMA takes halves 0-3 of each as its k
// pairs {2t, 2t+1} and {2t+8, 2t+9}, the second halves 4-7. A and B agree on the mapping, so
// every load is a plain 16-byte load and nothing is shuffled. Needs in % 32 == 0.
// WARPS is chosen per matrix so the grid runs in one wave (mma_warps()): with a fixed 8 warps
// the 4096-row projections left most warp slots empty and the wide ones ran ~2 waves with a
// half-empty tail.
// With PDL the block loads its first weight chunks before waiting for x (GEMV_EARLY).
// SWIGLU: W is the interleaved gate/up matrix (out = 2F); the block writes act[nb][F] (fp16)
// = silu(gate) * up for its 8 features instead of y.
template <int UN, int WARPS, bool SWIGLU, bool PIPE = false>
__global__ void __launch_bounds__(32 * WARPS) k_gemv_mma(const __half *__restrict__ W, int out, int in,
                                                         const __half *__restrict__ x, int nb, float *__restrict__ y,
                                                         __half *__restrict__ act) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int row0 = blockIdx.x * 16, n8 = in >> 3;   // 16-byte chunks per row (n8 % 4 == 0)
    const bool va = row0 + g < out, vb = row0 + g + 8 < out, vx = g < nb;
    const uint4 *wa = (const uint4 *)(W + (size_t)(va ? row0 + g : 0) * in);
    const uint4 *wb = (const uint4 *)(W + (size_t)(vb ? row0 + g + 8 : 0) * in);
    const uint4 *xg = (const uint4 *)(x + (size_t)(vx ? g : 0) * in);
    constexpr int STEP = WARPS * 4 * UN;   // chunks a block covers per iteration
    const uint4 z = make_uint4(0, 0, 0, 0);
    const int c00 = warp * 4 * UN;
    uint4 A[UN], Bw[UN];   // PIPE: the first iteration's weights
    auto first_weights = [&]() {
#pragma unroll
        for (int u = 0; u < UN; u++) {
            const int c = c00 + 4 * u + t;
            const bool ok = c00 + 4 * u < n8;
            A[u] = ok && va ? __ldcs(wa + c) : z;
            Bw[u] = ok && vb ? __ldcs(wb + c) : z;
        }
    };
    if (PIPE && GEMV_EARLY)
        first_weights();   // into registers while the predecessor finishes
    else
#pragma unroll
        for (int u = 0; u < UN; u++) {
            const int c = c00 + 4 * u + t;
            if (c < n8) {
                if (va) prefetch_l2(wa + c);
                if (vb) prefetch_l2(wb + c);
            }
        }
    pdl_trigger();
    pdl_wait();
    float acc[4] = {0, 0, 0, 0};
    if constexpr (PIPE) {
        // software-pipelined: the next iteration's loads are issued before this one's MMAs, so
        // a warp always has loads in flight
        uint4 X[UN];
        if (!GEMV_EARLY) first_weights();
#pragma unroll
        for (int u = 0; u < UN; u++) {
            const int c = c00 + 4 * u + t;
            const bool ok = c00 + 4 * u < n8;
            X[u] = ok && vx ? __ldg(xg + c) : z;
        }
        for (int c0 = c00; c0 < n8; c0 += STEP) {
            uint4 A2[UN], B2[UN], X2[UN];
#pragma unroll
            for (int u = 0; u < UN; u++) {
                const int c = c0 + STEP + 4 * u + t;
                const bool ok = c0 + STEP + 4 * u < n8;
                A2[u] = ok && va ? __ldcs(wa + c) : z;
                B2[u] = ok && vb ? __ldcs(wb + c) : z;
                X2[u] = ok && vx ? __ldg(xg + c) : z;
            }
#pragma unroll
            for (int u = 0; u < UN; u++) {
                if (c0 + 4 * u >= n8) break;
                mma16816(acc, A[u].x, Bw[u].x, A[u].y, Bw[u].y, X[u].x, X[u].y);
                mma16816(acc, A[u].z, Bw[u].z, A[u].w, Bw[u].w, X[u].z, X[u].w);
            }
#pragma unroll
            for (int u = 0; u < UN; u++) { A[u] = A2[u]; Bw[u] = B2[u]; X[u] = X2[u]; }
        }
    } else
    for (int c0 = warp * 4 * UN; c0 < n8; c0 += STEP) {
        uint4 A[UN], Bw[UN], X[UN];
#pragma unroll
        for (int u = 0; u < UN; u++) {
            const int c = c0 + 4 * u + t;
            const bool ok = c0 + 4 * u < n8;   // warp-uniform (n8 % 4 == 0)
            A[u] = ok && va ? __ldcs(wa + c) : z;
            Bw[u] = ok && vb ? __ldcs(wb + c) : z;
            X[u] = ok && vx ? __ldg(xg + c) : z;
        }
#pragma unroll
        for (int u = 0; u < UN; u++) {
            if (c0 + 4 * u >= n8) break;
            mma16816(acc, A[u].x, Bw[u].x, A[u].y, Bw[u].y, X[u].x, X[u].y);
            mma16816(acc, A[u].z, Bw[u].z, A[u].w, Bw[u].w, X[u].z, X[u].w);
        }
    }
    // acc: (row g, cols 2t, 2t+1), (row g+8, cols 2t, 2t+1); sum the warps' tiles
    __shared__ float red[WARPS][32][4];
#pragma unroll
    for (int j = 0; j < 4; j++) red[warp][lane][j] = acc[j];
    __syncthreads();
    if (SWIGLU) {   // (row g, col) holds gate feature blockIdx.x * 8 + g, (row g + 8, col) its up
        for (int i = threadIdx.x; i < 64; i += 32 * WARPS) {
            const int ln = i >> 1, j = i & 1;
            float gate = 0, up = 0;
#pragma unroll
            for (int w = 0; w < WARPS; w++) { gate += red[w][ln][j]; up += red[w][ln][j + 2]; }
            const int col = 2 * (ln & 3) + j, F = out >> 1;
            if (col < nb) act[(size_t)col * F + blockIdx.x * 8 + (ln >> 2)] = __float2half(swiglu(gate, up));
        }
    } else {
        for (int i = threadIdx.x; i < 128; i += 32 * WARPS) {
            const int ln = i >> 2, j = i & 3;
            float v = 0;
#pragma unroll
            for (int w = 0; w < WARPS; w++) v += red[w][ln][j];
            const int col = 2 * (ln & 3) + (j & 1), row = row0 + (ln >> 2) + 8 * (j >> 1);
            if (col < nb && row < out) y[(size_t)col * out + row] = v;
        }
    }
}

constexpr int MMA_WARPS[5] = {1, 2, 4, 8, 16};

template <int UN, bool SW, bool PIPE = false>
int launch_mma(ds_gpu_forward *f, int wi, const __half *W, int out, int in, const __half *x, int nb, float *y,
               __half *act) {
    const dim3 grid((out + 15) / 16), block(32 * MMA_WARPS[wi]);
    switch (wi) {
    case 0: return launch(f, k_gemv_mma<UN, 1, SW, PIPE>, grid, block, W, out, in, x, nb, y, act);
    case 1: return launch(f, k_gemv_mma<UN, 2, SW, PIPE>, grid, block, W, out, in, x, nb, y, act);
    case 2: return launch(f, k_gemv_mma<UN, 4, SW, PIPE>, grid, block, W, out, in, x, nb, y, act);
    case 3: return launch(f, k_gemv_mma<UN, 8, SW, PIPE>, grid, block, W, out, in, x, nb, y, act);
    default: return launch(f, k_gemv_mma<UN, 16, SW, PIPE>, grid, block, W, out, in, x, nb, y, act);
    }
}

// Blocks of k_gemv_mma<UN, MMA_WARPS[wi], SW, PIPE> resident per SM (for one-wave sizing).
template <int UN, bool SW, bool PIPE = false>
void mma_occupancy(int *occ) {
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ[0], k_gemv_mma<UN, 1, SW, PIPE>, 32, 0);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ[1], k_gemv_mma<UN, 2, SW, PIPE>, 64, 0);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ[2], k_gemv_mma<UN, 4, SW, PIPE>, 128, 0);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ[3], k_gemv_mma<UN, 8, SW, PIPE>, 256, 0);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ[4], k_gemv_mma<UN, 16, SW, PIPE>, 512, 0);
}

// Warps per block (index into MMA_WARPS) for a matrix of `out` rows and `in` columns: the most
// warps such that all 16-row tiles are resident at once, and every warp has a full iteration.
int mma_warps(const ds_gpu_forward *f, int out, int in, bool swiglu) {
    if (f->mma_force_warps) {
        for (int wi = 0; wi < 5; wi++) if (MMA_WARPS[wi] == f->mma_force_warps) return wi;
    }
    const int k = f->gemv_kind, tiles = (out + 15) / 16, n8 = in / 8, un = k == 2 ? 2 : 4;
    const int *occ = f->mma_occ[swiglu][k == 2 ? 0 : k == 5 ? 2 : 1];
    int cap = 0;
    while (cap < 4 && MMA_WARPS[cap + 1] * 4 * un <= n8) cap++;
    for (int wi = cap; wi >= 0; wi--)
        if (tiles <= occ[wi] * f->n_sm) return wi;
    return cap < 2 ? cap : 2;   // more tiles than fit: several waves of 4-warp blocks
}

// Few output rows (the E-row projections): one row a warp and more loads in flight, so every
// SM has enough warps; many rows: two rows a warp.
template <int NB>
int launch_gemv(ds_gpu_forward *f, const __half *W, int out, int in, const __half *x, float *y) {
    if (f->gemv_pipe) {
        if (out <= f->gemv_small_rows) return launch(f, k_gemv<NB, 1, 4, true>, dim3((out + 7) / 8), dim3(256), W, out, in, x, y);
        return launch(f, k_gemv<NB, 2, 2, true>, dim3(((out + 1) / 2 + 7) / 8), dim3(256), W, out, in, x, y);
    }
    if (out <= f->gemv_small_rows) return launch(f, k_gemv<NB, 1, 4>, dim3((out + 7) / 8), dim3(256), W, out, in, x, y);
    const int warps = (out + 1) / 2;
    return launch(f, k_gemv<NB, 2, 2>, dim3((warps + 7) / 8), dim3(256), W, out, in, x, y);
}

// k_gemv_mma with the loads in flight of DSINFER_GPU_GEMV (2, else 4) and one-wave warps.
template <bool SW>
int run_mma(ds_gpu_forward *f, const __half *W, int out, int in, const __half *x, int nb, float *y, __half *act) {
    const int wi = mma_warps(f, out, in, SW);
    if (f->gemv_kind == 2) return launch_mma<2, SW>(f, wi, W, out, in, x, nb, y, act);
    if (f->gemv_kind == 5) return launch_mma<4, SW, true>(f, wi, W, out, in, x, nb, y, act);
    return launch_mma<4, SW>(f, wi, W, out, in, x, nb, y, act);
}

bool use_mma(const ds_gpu_forward *f, int rows, int in) {
    return rows >= f->mma_min_rows && rows <= 8 && in % 32 == 0 && f->gemv_kind && !f->use_cublas_gemv;
}

// y[rows][out] (fp32) = x[rows][in] (fp16) . W[out][in]^T
int gemm(ds_gpu_forward *f, const __half *W, int out, int in, const __half *x, int rows, float *y) {
    if (use_mma(f, rows, in)) {
        return run_mma<false>(f, W, out, in, x, rows, y, nullptr);
    }
    if (rows <= 8 && in % 8 == 0 && !f->use_cublas_gemv) {
        switch (rows) {
        case 1: return launch_gemv<1>(f, W, out, in, x, y);
        case 2: return launch_gemv<2>(f, W, out, in, x, y);
        case 3: return launch_gemv<3>(f, W, out, in, x, y);
        case 4: return launch_gemv<4>(f, W, out, in, x, y);
        case 5: return launch_gemv<5>(f, W, out, in, x, y);
        case 6: return launch_gemv<6>(f, W, out, in, x, y);
        case 7: return launch_gemv<7>(f, W, out, in, x, y);
        default: return launch_gemv<8>(f, W, out, in, x, y);
        }
    }
    const float one = 1.0f, zero = 0.0f;
    TRYB(cublasGemmEx(f->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &one, W, CUDA_R_16F, in, x, CUDA_R_16F, in,
                      &zero, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
}

// Slab of quantised rows dequantised for one prefill GEMM: at most this many fp16 elements.
constexpr size_t DEQ_MAX = 16u << 20;

// y[rows][out] = x . W^T for a matrix kept quantised: decode (rows <= 8) runs the GEMV on the
// blocks; prefill dequantises slabs of rows to fp16 and multiplies them with cuBLAS (the extra
// pass leaves prefill at 0.6-0.9x of the fp16 path: bench/results/gpu-quant-weights-h200.md).
// xq_ready: f->xq already holds x's int8 blocks (written by the kernel that produced x).
int qgemm(ds_gpu_forward *f, const dsgpu::QMat &m, int out, int in, const __half *x, int rows, float *y, bool xq_ready) {
    if (rows <= 8) {
        if (!xq_ready) TRY(dsgpu::q_quant_x(x, rows, in, f->xq, f->xs, f->pdl, f->st));
        return dsgpu::q_gemv(m, f->xq, f->xs, rows, y, out, f->pdl, f->st);
    }
    const float one = 1.0f, zero = 0.0f;
    for (int i = 0; i < m.n; i++) {
        const dsgpu::QPart &p = m.p[i];
        const int slab = (int)(f->deq_elems / (size_t)in < (size_t)p.rows ? f->deq_elems / (size_t)in : (size_t)p.rows);
        if (slab < 1) return (int)cudaErrorInvalidValue;
        for (int r0 = 0; r0 < p.rows; r0 += slab) {
            const int nr = slab < p.rows - r0 ? slab : p.rows - r0;
            TRY(dsgpu::q_dequant(p, r0, nr, f->deq, false, f->st));
            TRYB(cublasGemmEx(f->blas, CUBLAS_OP_T, CUBLAS_OP_N, nr, rows, in, &one, f->deq, CUDA_R_16F, in, x, CUDA_R_16F,
                              in, &zero, y + p.row0 + r0, CUDA_R_32F, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
    }
    return 0;
}

// A weight matrix either way: fp16 W, or the quantised q when it has rows.
int matmul(ds_gpu_forward *f, const __half *W, const dsgpu::QMat &q, int out, int in, const __half *x, int rows,
           float *y, bool xq_ready = false) {
    return q.n ? qgemm(f, q, out, in, x, rows, y, xq_ready) : gemm(f, W, out, in, x, rows, y);
}

// Where a producer kernel should also write its output's int8 blocks: when the consumer is a
// quantised matrix run as a decode GEMV.
int8_t *xq_for(ds_gpu_forward *f, const dsgpu::QMat &consumer, int rows) { return consumer.n && rows <= 8 ? f->xq : nullptr; }

// act[rows][F] = silu(gate) * up of x . Wgu^T: fused into the MMA GEMV's epilogue in decode.
// *act_q: whether act's int8 blocks were written too (for a quantised down projection).
int gate_up(ds_gpu_forward *f, const Layer &W, const __half *x, int rows, bool *act_q) {
    const int F = f->c.n_ff, E = f->c.n_embd;
    *act_q = false;
    if (!W.qgu.n && use_mma(f, rows, E)) {
        return run_mma<true>(f, W.wgu, 2 * F, E, x, rows, nullptr, f->act);
    }
    TRY(matmul(f, W.wgu, W.qgu, 2 * F, E, x, rows, f->gu, W.qgu.n && rows <= 8));
    int8_t *xq = xq_for(f, W.qdown, rows);
    *act_q = xq != nullptr;
    return launch(f, k_swiglu, dim3((F + 255) / 256 < 64 ? (F + 255) / 256 : 64, rows), dim3(256), (const float *)f->gu,
                  F, W.qgu.n ? 0 : 1, f->act, xq, f->xs);
}

// The output projection's quantised form (the embedding's when tied).
const dsgpu::QMat &head_q(const ds_gpu_forward *f) { return f->c.tied ? f->qembd : f->qout; }

// Attention arguments for layer l: `rows` query rows; decode: row b = slot b; prefill: every
// row reads slot `slot`'s cache (kv_batch_shared) with its own causal length.
ds_gpu_attn_args attn_args(ds_gpu_forward *f, int l, int rows, bool prefill, int slot) {
    const ds_gpu_forward_cfg &c = f->c;
    ds_gpu_attn_args a;
    memset(&a, 0, sizeof a);
    const size_t per_slot = (size_t)c.n_head_kv * c.n_ctx, layer_rows = (size_t)c.max_batch * per_slot;
    const size_t base = (size_t)l * layer_rows + (prefill ? (size_t)slot * per_slot : 0);
    a.B = rows; a.H = c.n_head; a.H_kv = c.n_head_kv; a.d = c.head_dim; a.n_max = c.n_ctx; a.max_len = c.n_ctx;
    a.seq_len = f->d_len; a.q = (const uint16_t *)f->q; a.out = (uint16_t *)f->att;
    a.k = (const uint16_t *)(f->k_cache + base * c.head_dim);
    a.v = (const uint16_t *)(f->v_cache + base * c.head_dim);
    a.kv_batch_shared = prefill;
    a.ws_batch = prefill ? c.max_prefill : c.max_batch;   // one workspace layout whatever `rows` is
    a.scale = 1.0f / sqrtf((float)c.head_dim);
    if (c.sparse) {
        a.r = c.r; a.bits = c.bits; a.chan = f->chan + (size_t)l * c.n_head_kv * c.r;
        if (f->lab_mean) {
            a.lab_mean = f->lab_mean + (size_t)l * c.n_head_kv * c.r;
            a.lab_scale = f->lab_scale + (size_t)l * c.n_head_kv * c.r;
        }
        a.labels = f->labels + base * f->rb;
        a.lab_lo = f->lab_lo + base;
        a.lab_step = f->lab_step + base;
        a.tokens = c.tokens; a.tokens_frac = c.tokens_frac; a.min_context = c.min_context; a.recent = c.recent;
        a.group_max = c.group_max;
    }
    return a;
}

// x += add (when add); xn = rmsnorm(x) * w (+ its int8 blocks when xq), one block per row.
int add_norm(ds_gpu_forward *f, int rows, const float *add, const float *w, int8_t *xq) {
    const int E = f->c.n_embd;
    if (E % 4 == 0 && E <= 16 * 1024) {
        const int th = (E / 4 + 31) / 32 * 32;   // one float4 per thread up to E = 4096, then <= 4
        return launch(f, k_add_norm_v, dim3(rows), dim3(th < 1024 ? th : 1024), f->x, add, w, E, f->c.rms_eps, f->xn,
                      xq, f->xs);
    }
    return launch(f, k_add_norm, dim3(rows), dim3(256), f->x, add, w, E, f->c.rms_eps, f->xn, xq, f->xs);
}

// Embedding -> layers -> final norm for `rows` rows whose tokens and positions are in d_tok /
// d_pos; decode: row r is slot r; prefill: all rows are slot `slot`. Leaves xn = final norm.
int run_layers(ds_gpu_forward *f, int rows, bool prefill, int slot) {
    const ds_gpu_forward_cfg &c = f->c;
    const int E = c.n_embd, H = c.n_head, KVH = c.n_head_kv, hd = c.head_dim, F = c.n_ff;
    cudaStream_t st = f->st;
    // the first kernel follows host copies: a plain launch
    if (f->qembd.n) TRY(dsgpu::q_embed(f->qembd, f->d_tok, f->d_pos, rows, f->x, f->d_len, false, st));
    else k_embed<<<rows, 256, 0, st>>>(f->tok_embd, f->d_tok, f->d_pos, E, f->x, f->d_len);
    const float *no_add = nullptr;
    for (int l = 0; l < c.n_layer; l++) {
        const Layer &W = f->L[l];
        TRY(add_norm(f, rows, l ? (const float *)f->tmp : no_add, W.attn_norm, xq_for(f, W.qqkv, rows)));
        TRY(matmul(f, W.wqkv, W.qqkv, f->QKV, E, f->xn, rows, f->qkv, true));
        ds_gpu_attn_args a = attn_args(f, l, rows, prefill, slot);
        TRY(launch(f, k_rope_append_h, dim3(rows, H + KVH), dim3(hd / 2), (const float *)f->qkv,
                   (const float *)W.bqkv, H, KVH, hd, c.rope_neox, (const float *)f->inv_freq, (const int *)f->d_pos,
                   (int)!prefill, c.n_ctx, f->q, (__half *)a.k, (__half *)a.v, c.r, c.bits, (int)f->rb, a.chan,
                   a.lab_mean, a.lab_scale, c.sparse ? a.labels : nullptr, a.lab_lo, a.lab_step));
        const bool sparse = c.sparse && f->use_sparse && !prefill && !f->dense_layer[l];
        void *ws = prefill ? f->ws_pre : f->ws;
        if (!f->skip_attn) TRY(sparse ? ds_gpu_attn_ds(&a, ws, st) : ds_gpu_attn_dense(&a, ws, st));
        TRY(matmul(f, W.wo, W.qo, E, H * hd, f->att, rows, f->tmp));
        TRY(add_norm(f, rows, f->tmp, W.ffn_norm, xq_for(f, W.qgu, rows)));
        bool act_q;
        TRY(gate_up(f, W, f->xn, rows, &act_q));
        TRY(matmul(f, W.wdown, W.qdown, E, F, f->act, rows, f->tmp, act_q));
    }
    // decode: the output projection follows on these rows (prefill picks its rows afterwards)
    TRY(add_norm(f, rows, f->tmp, f->output_norm, prefill ? nullptr : xq_for(f, head_q(f), rows)));
    return (int)cudaGetLastError();
}

bool cfg_ok(const ds_gpu_forward_cfg *c) {
    return c && c->n_layer > 0 && c->n_embd > 0 && c->n_head > 0 && c->n_head_kv > 0 && c->n_head % c->n_head_kv == 0 &&
           c->n_head / c->n_head_kv <= 8 && (c->head_dim == 64 || c->head_dim == 128) && c->n_ff > 0 &&
           c->n_ff % 8 == 0 && c->n_vocab > 0 && c->max_batch >= 1 && c->max_batch <= 64 && c->n_ctx > 0 &&
           c->max_prefill >= 1 && c->inv_freq &&
           (!c->sparse || (c->chan && c->r >= 1 && c->r <= c->head_dim &&
                           (c->bits == 16 || c->bits == 8 || c->bits == 4 || c->bits == 2)));
}

// Gate/up rows on the device: groups of 8 gate rows, each followed by the 8 matching up rows.
size_t gu_row(size_t i, size_t F) { return i < F ? (i >> 3) * 16 + (i & 7) : ((i - F) >> 3) * 16 + 8 + ((i - F) & 7); }

// Upload logical rows [offset / E, (offset + n) / E) of the [gate; up] matrix (whole rows only).
int upload_gate_up(__half *dst, size_t F, size_t E, size_t offset, const __half *host, size_t n) {
    if (offset % E || n % E) return (int)cudaErrorInvalidValue;
    const size_t r0 = offset / E, r1 = r0 + n / E, bytes = E * sizeof(__half);
    for (size_t i = r0; i < r1;) {
        const size_t end = i < F ? (r1 < F ? r1 : F) : r1;   // a run never crosses from gate to up
        const size_t j = i < F ? i : i - F;
        const __half *src = host + (i - r0) * E;
        if ((j & 7) == 0 && end - i >= 8) {   // whole groups: one strided copy
            const size_t groups = (end - i) / 8;
            TRY(cudaMemcpy2D(dst + gu_row(i, F) * E, 16 * bytes, src, 8 * bytes, 8 * bytes, groups, cudaMemcpyHostToDevice));
            i += groups * 8;
        } else {
            size_t run = 8 - (j & 7);
            if (run > end - i) run = end - i;
            TRY(cudaMemcpy(dst + gu_row(i, F) * E, src, run * bytes, cudaMemcpyHostToDevice));
            i += run;
        }
    }
    return 0;
}

}  // namespace

extern "C" {

int ds_gpu_forward_new(const ds_gpu_forward_cfg *cfg, ds_gpu_forward **out) {
    *out = nullptr;
    if (!cfg_ok(cfg)) return (int)cudaErrorInvalidValue;
    ds_gpu_forward *f = (ds_gpu_forward *)calloc(1, sizeof *f);
    if (!f) return (int)cudaErrorMemoryAllocation;
    *out = f;   // freed by the caller with ds_gpu_forward_free on any error below
    f->c = *cfg;
    f->use_sparse = cfg->sparse;
    f->use_cublas_gemv = env_int("DSINFER_GPU_CUBLAS", 0) > 0;
    f->skip_attn = env_int("DSINFER_GPU_SKIP_ATTN", 0) > 0;
    f->gemv_small_rows = env_int("DSINFER_GPU_GEMV_SMALL", 8192);
    f->gemv_kind = env_int("DSINFER_GPU_GEMV", 5);
    f->gemv_pipe = env_int("DSINFER_GPU_GEMV_PIPE", 1) > 0;
    f->mma_force_warps = env_int("DSINFER_GPU_MMA_WARPS", 0);
    {
        int dev = 0;
        TRY(cudaGetDevice(&dev));
        TRY(cudaDeviceGetAttribute(&f->n_sm, cudaDevAttrMultiProcessorCount, dev));
        mma_occupancy<2, false>(f->mma_occ[0][0]);
        mma_occupancy<4, false>(f->mma_occ[0][1]);
        mma_occupancy<2, true>(f->mma_occ[1][0]);
        mma_occupancy<4, true>(f->mma_occ[1][1]);
        mma_occupancy<4, false, true>(f->mma_occ[0][2]);
        mma_occupancy<4, true, true>(f->mma_occ[1][2]);
        TRY(cudaGetLastError());
    }
    f->pdl = dsgpu::pdl_enabled();
    // one row: k_gemv streams the weights faster (no MMA padding, 8 blocks per SM; bench/NOTES.md)
    f->mma_min_rows = env_int("DSINFER_GPU_MMA_MIN_ROWS", 2);
    const ds_gpu_forward_cfg &c = f->c;
    const size_t E = c.n_embd, H = c.n_head, KVH = c.n_head_kv, hd = c.head_dim, F = c.n_ff, V = c.n_vocab, Lc = c.n_layer;
    f->QKV = (int)((H + 2 * KVH) * hd);
    f->rows_max = c.max_batch > c.max_prefill ? c.max_batch : c.max_prefill;
    const size_t R = f->rows_max;
    f->c.chan = nullptr; f->c.dense_layers = nullptr; f->c.inv_freq = nullptr;
    f->c.lab_mean = nullptr; f->c.lab_scale = nullptr;
    f->dense_layer = (uint8_t *)calloc(Lc, 1);
    f->pos = (int *)calloc(c.max_batch, sizeof(int));
    f->L = (Layer *)calloc(Lc, sizeof(Layer));
    if (!f->dense_layer || !f->pos || !f->L) return (int)cudaErrorMemoryAllocation;
    if (cfg->dense_layers) memcpy(f->dense_layer, cfg->dense_layers, Lc);
    TRY(cudaStreamCreateWithFlags(&f->st, cudaStreamNonBlocking));
    TRY(cudaEventCreate(&f->ev0));
    TRY(cudaEventCreate(&f->ev1));
    TRYB(cublasCreate(&f->blas));
    TRYB(cublasSetStream(f->blas, f->st));
    // a fixed cuBLAS workspace, so graph capture never allocates
    const size_t blas_ws = 32u << 20;
    TRY(dalloc(f, (uint8_t **)&f->blas_ws, blas_ws));
    TRYB(cublasSetWorkspace(f->blas, f->blas_ws, blas_ws));
    // with quant_weights the fp16 matrices are allocated by their first fp16 upload, if any
    for (size_t l = 0; l < Lc; l++) {
        Layer &W = f->L[l];
        if (!c.quant_weights) {
            TRY(dalloc(f, &W.wqkv, (size_t)f->QKV * E));
            TRY(dalloc(f, &W.wo, E * H * hd));
            TRY(dalloc(f, &W.wgu, 2 * F * E));
            TRY(dalloc(f, &W.wdown, E * F));
        }
        TRY(dalloc(f, &W.attn_norm, E));
        TRY(dalloc(f, &W.ffn_norm, E));
        if (c.has_bias) TRY(dalloc(f, &W.bqkv, (size_t)f->QKV));
    }
    if (!c.quant_weights) {
        TRY(dalloc(f, &f->tok_embd, V * E));
        if (c.tied) f->output = f->tok_embd;
        else TRY(dalloc(f, &f->output, V * E));
    }
    TRY(dalloc(f, &f->output_norm, E));
    TRY(dalloc(f, &f->inv_freq, hd / 2));
    TRY(cudaMemcpy(f->inv_freq, cfg->inv_freq, sizeof(float) * hd / 2, cudaMemcpyHostToDevice));
    const size_t cache = Lc * c.max_batch * KVH * (size_t)c.n_ctx;
    TRY(dalloc(f, &f->k_cache, cache * hd));
    TRY(dalloc(f, &f->v_cache, cache * hd));
    if (c.sparse) {
        f->rb = c.bits == 16 ? 2 * (size_t)c.r : ((size_t)c.r * c.bits + 7) / 8;
        TRY(dalloc(f, &f->labels, cache * f->rb));
        TRY(dalloc(f, &f->lab_lo, cache));
        TRY(dalloc(f, &f->lab_step, cache));
        TRY(dalloc(f, &f->chan, Lc * KVH * c.r));
        TRY(cudaMemcpy(f->chan, cfg->chan, sizeof(int16_t) * Lc * KVH * c.r, cudaMemcpyHostToDevice));
        if (cfg->lab_mean && cfg->lab_scale) {
            const size_t nl = Lc * KVH * c.r;
            TRY(dalloc(f, &f->lab_mean, nl));
            TRY(dalloc(f, &f->lab_scale, nl));
            TRY(cudaMemcpy(f->lab_mean, cfg->lab_mean, sizeof(float) * nl, cudaMemcpyHostToDevice));
            TRY(cudaMemcpy(f->lab_scale, cfg->lab_scale, sizeof(float) * nl, cudaMemcpyHostToDevice));
        }
    }
    TRY(dalloc(f, &f->x, R * E));
    TRY(dalloc(f, &f->qkv, R * f->QKV));
    TRY(dalloc(f, &f->tmp, R * E));
    TRY(dalloc(f, &f->gu, R * 2 * F));
    TRY(dalloc(f, &f->logits, R * V));
    TRY(dalloc(f, &f->xn, R * E));
    TRY(dalloc(f, &f->q, R * H * hd));
    TRY(dalloc(f, &f->att, R * H * hd));
    TRY(dalloc(f, &f->act, R * F));
    if (c.quant_weights) {   // decode GEMV inputs as int8 blocks (quantised matrices run up to 8 rows)
        size_t wmax = E > H * hd ? E : H * hd;
        if (F > wmax) wmax = F;
        TRY(dalloc(f, &f->xq, 8 * wmax));
        TRY(dalloc(f, &f->xs, 8 * wmax / 32 + 1));
    }
    TRY(dalloc(f, &f->d_tok, R));
    TRY(dalloc(f, &f->d_pos, R));
    TRY(dalloc(f, &f->d_len, R));
    TRY(cudaMallocHost((void **)&f->h_tok, sizeof(int) * R));
    TRY(cudaMallocHost((void **)&f->h_pos, sizeof(int) * R));
    // one attention workspace for the largest call: decode of max_batch slots, or prefill rows
    ds_gpu_attn_args a = attn_args(f, 0, c.max_batch, false, 0);
    size_t w1 = ds_gpu_attn_workspace_bytes(&a);
    a = attn_args(f, 0, c.max_prefill, true, 0);
    size_t w2 = ds_gpu_attn_workspace_bytes(&a);
    if (!w1 || !w2) return (int)cudaErrorInvalidValue;
    TRY(dalloc(f, (uint8_t **)&f->ws, w1));
    TRY(dalloc(f, (uint8_t **)&f->ws_pre, w2));
    TRY(cudaMemset(f->ws, 0, w1));
    TRY(cudaMemset(f->ws_pre, 0, w2));
    // norms default to 1, biases to 0, caches to 0 (so unwritten rows are never NaN)
    for (size_t l = 0; l < Lc; l++) {
        k_fill_float<<<grid_for(E), 256, 0, f->st>>>(f->L[l].attn_norm, E, 1.0f);
        k_fill_float<<<grid_for(E), 256, 0, f->st>>>(f->L[l].ffn_norm, E, 1.0f);
        if (f->L[l].bqkv) k_fill_float<<<grid_for(f->QKV), 256, 0, f->st>>>(f->L[l].bqkv, f->QKV, 0.0f);
    }
    k_fill_float<<<grid_for(E), 256, 0, f->st>>>(f->output_norm, E, 1.0f);
    TRY(cudaMemsetAsync(f->k_cache, 0, cache * hd * 2, f->st));
    TRY(cudaMemsetAsync(f->v_cache, 0, cache * hd * 2, f->st));
    return (int)cudaStreamSynchronize(f->st);
}

void ds_gpu_forward_free(ds_gpu_forward *f) {
    if (!f) return;
    if (f->st) cudaStreamSynchronize(f->st);
    for (int m = 0; m < 2; m++)
        for (int b = 0; b <= 64; b++) if (f->graph[m][b]) cudaGraphExecDestroy(f->graph[m][b]);
    if (f->L) {
        for (int l = 0; l < f->c.n_layer; l++) {
            Layer &W = f->L[l];
            cudaFree(W.wqkv); cudaFree(W.wo); cudaFree(W.wgu); cudaFree(W.wdown);
            cudaFree(W.attn_norm); cudaFree(W.ffn_norm); cudaFree(W.bqkv);
            dsgpu::q_free(W.qqkv); dsgpu::q_free(W.qo); dsgpu::q_free(W.qgu); dsgpu::q_free(W.qdown);
        }
        free(f->L);
    }
    if (f->output != f->tok_embd) cudaFree(f->output);
    cudaFree(f->tok_embd); cudaFree(f->output_norm); cudaFree(f->inv_freq);
    dsgpu::q_free(f->qembd); dsgpu::q_free(f->qout); cudaFree(f->deq); cudaFree(f->xq); cudaFree(f->xs);
    cudaFree(f->k_cache); cudaFree(f->v_cache); cudaFree(f->labels); cudaFree(f->lab_lo); cudaFree(f->lab_step);
    cudaFree(f->chan); cudaFree(f->lab_mean); cudaFree(f->lab_scale);
    cudaFree(f->x); cudaFree(f->qkv); cudaFree(f->tmp); cudaFree(f->gu); cudaFree(f->logits);
    cudaFree(f->xn); cudaFree(f->q); cudaFree(f->att); cudaFree(f->act);
    cudaFree(f->d_tok); cudaFree(f->d_pos); cudaFree(f->d_len);
    cudaFreeHost(f->h_tok); cudaFreeHost(f->h_pos);
    cudaFree(f->ws); cudaFree(f->ws_pre); cudaFree(f->blas_ws);
    if (f->blas) cublasDestroy(f->blas);
    if (f->ev0) cudaEventDestroy(f->ev0);
    if (f->ev1) cudaEventDestroy(f->ev1);
    if (f->st) cudaStreamDestroy(f->st);
    free(f->dense_layer);
    free(f->pos);
    free(f);
}

size_t ds_gpu_forward_bytes(const ds_gpu_forward *f) { return f->bytes; }

}  // extern "C"

namespace {

// A weight matrix in both forms: its fp16 slot, its quantised form, its rows and row length.
struct MatRef {
    __half **w16;
    dsgpu::QMat *q;
    size_t rows, in;
};

// The matrix `which` names (W: its layer, or null for the model-wide ones); false for vectors.
bool mat_ref(ds_gpu_forward *f, int which, Layer *W, MatRef *r) {
    const ds_gpu_forward_cfg &c = f->c;
    const size_t E = c.n_embd, V = c.n_vocab, F = c.n_ff, Hd = (size_t)c.n_head * c.head_dim;
    switch (which) {
    case DS_GW_TOK_EMBD: *r = {&f->tok_embd, &f->qembd, V, E}; return true;
    case DS_GW_OUTPUT: *r = {&f->output, &f->qout, V, E}; return true;
    case DS_GW_WQKV: *r = {&W->wqkv, &W->qqkv, (size_t)f->QKV, E}; return true;
    case DS_GW_WO: *r = {&W->wo, &W->qo, E, Hd}; return true;
    case DS_GW_WGU: *r = {&W->wgu, &W->qgu, 2 * F, E}; return true;
    case DS_GW_WDOWN: *r = {&W->wdown, &W->qdown, E, F}; return true;
    default: return false;
    }
}

}  // namespace

extern "C" {

int ds_gpu_forward_upload(ds_gpu_forward *f, int which, int layer, size_t offset, const void *host, size_t n) {
    const ds_gpu_forward_cfg &c = f->c;
    const size_t E = c.n_embd, F = c.n_ff;
    if (which >= DS_GW_ATTN_NORM && (layer < 0 || layer >= c.n_layer)) return (int)cudaErrorInvalidValue;
    Layer *W = which >= DS_GW_ATTN_NORM ? &f->L[layer] : nullptr;
    MatRef m;
    if (mat_ref(f, which, W, &m)) {   // a matrix: fp16 elements
        const size_t cap = m.rows * m.in;
        if (!*m.w16) {   // quant_weights: this matrix is fp16 after all (a type without a GPU kernel)
            if (m.q->n || (which == DS_GW_OUTPUT && c.tied)) return (int)cudaErrorInvalidValue;
            TRY(dalloc(f, m.w16, cap));
            if (which == DS_GW_TOK_EMBD && c.tied) f->output = f->tok_embd;
        }
        if (offset + n > cap) return (int)cudaErrorInvalidValue;
        if (which == DS_GW_WGU) return upload_gate_up(*m.w16, F, E, offset, (const __half *)host, n);
        return (int)cudaMemcpy(*m.w16 + offset, host, n * sizeof(__half), cudaMemcpyHostToDevice);
    }
    float *dst = nullptr;   // a vector: floats
    size_t cap = 0;
    switch (which) {
    case DS_GW_OUTPUT_NORM: dst = f->output_norm; cap = E; break;
    case DS_GW_ATTN_NORM: dst = W->attn_norm; cap = E; break;
    case DS_GW_FFN_NORM: dst = W->ffn_norm; cap = E; break;
    case DS_GW_BQKV: dst = W->bqkv; cap = f->QKV; break;
    default: return (int)cudaErrorInvalidValue;
    }
    if (!dst || offset + n > cap) return (int)cudaErrorInvalidValue;
    return (int)cudaMemcpy(dst + offset, host, n * sizeof(float), cudaMemcpyHostToDevice);
}

int ds_gpu_forward_upload_q(ds_gpu_forward *f, int which, int layer, int row0, int rows, int type, const void *host,
                            size_t stride) {
    const ds_gpu_forward_cfg &c = f->c;
    if (!c.quant_weights || (which >= DS_GW_ATTN_NORM && (layer < 0 || layer >= c.n_layer))) return (int)cudaErrorInvalidValue;
    MatRef m;
    if (!mat_ref(f, which, which >= DS_GW_ATTN_NORM ? &f->L[layer] : nullptr, &m) || (which == DS_GW_OUTPUT && c.tied))
        return (int)cudaErrorInvalidValue;
    const size_t in = m.in;
    if (*m.w16 || row0 < 0 || rows < 1 || (size_t)row0 + rows > m.rows || !host) return (int)cudaErrorInvalidValue;
    TRY(dsgpu::q_append(*m.q, type, row0, rows, (int)in, host, stride, &f->bytes));
    // the prefill slab: one part's rows, up to DEQ_MAX elements
    size_t need = (size_t)m.q->p[m.q->n - 1].rows * in;
    if (need > DEQ_MAX) need = DEQ_MAX > in ? DEQ_MAX / in * in : in;
    if (need > f->deq_elems) {
        if (f->deq) { cudaFree(f->deq); f->bytes -= f->deq_elems * sizeof(__half); f->deq = nullptr; }
        TRY(dalloc(f, &f->deq, need));
        f->deq_elems = need;
    }
    return 0;
}

int ds_gpu_forward_qtype_ok(int type, int cols) { return dsgpu::q_type_ok(type, cols); }

int ds_gpu_forward_random_weights(ds_gpu_forward *f, uint64_t seed) {
    const ds_gpu_forward_cfg &c = f->c;
    if (c.quant_weights) return (int)cudaErrorInvalidValue;
    const size_t E = c.n_embd, H = c.n_head, hd = c.head_dim, F = c.n_ff, V = c.n_vocab;
    // uniform [-a, a] has std a/sqrt(3): a = sqrt(3/fan_in) keeps activations near unit scale
    auto fill = [&](__half *p, size_t n, size_t fan_in, uint64_t s) {
        k_fill_half<<<grid_for(n), 256, 0, f->st>>>(p, n, sqrtf(3.0f / (float)fan_in), seed * 1000003ull + s);
    };
    for (int l = 0; l < c.n_layer; l++) {
        const uint64_t s = (uint64_t)l * 16;
        fill(f->L[l].wqkv, (size_t)f->QKV * E, E, s + 1);
        fill(f->L[l].wo, E * H * hd, H * hd, s + 2);
        fill(f->L[l].wgu, 2 * F * E, E, s + 3);
        fill(f->L[l].wdown, E * F, F, s + 4);
    }
    k_fill_half<<<grid_for(V * E), 256, 0, f->st>>>(f->tok_embd, V * E, 1.0f, seed * 1000003ull + 7);
    if (f->output != f->tok_embd) fill(f->output, V * E, E, 8);
    TRY(cudaGetLastError());
    return (int)cudaStreamSynchronize(f->st);
}

int ds_gpu_forward_fill_kv_random(ds_gpu_forward *f, int n_seq, int n, uint64_t seed) {
    const ds_gpu_forward_cfg &c = f->c;
    if (n_seq < 1 || n_seq > c.max_batch || n < 1 || n > c.n_ctx) return (int)cudaErrorInvalidValue;
    const size_t per_slot = (size_t)c.n_head_kv * c.n_ctx * c.head_dim;
    for (int l = 0; l < c.n_layer; l++)
        for (int b = 0; b < n_seq; b++)
            for (int h = 0; h < c.n_head_kv; h++) {
                const size_t off = ((size_t)l * c.max_batch + b) * per_slot + (size_t)h * c.n_ctx * c.head_dim;
                const size_t cnt = (size_t)n * c.head_dim;
                k_fill_half<<<grid_for(cnt), 256, 0, f->st>>>(f->k_cache + off, cnt, 1.7f, seed ^ (off * 2 + 1));
                k_fill_half<<<grid_for(cnt), 256, 0, f->st>>>(f->v_cache + off, cnt, 1.7f, seed ^ (off * 2 + 2));
            }
    if (c.sparse)
        for (int l = 0; l < c.n_layer; l++) {
            ds_gpu_attn_args a = attn_args(f, l, c.max_batch, false, 0);
            a.B = n_seq;
            a.max_len = n;
            TRY(ds_gpu_label_build(&a, 0, n, f->st));
        }
    for (int b = 0; b < n_seq; b++) f->pos[b] = n;
    TRY(cudaGetLastError());
    return (int)cudaStreamSynchronize(f->st);
}

int ds_gpu_forward_prefill(ds_gpu_forward *f, int slot, const int32_t *tokens, int T, float *logits, int all) {
    const ds_gpu_forward_cfg &c = f->c;
    if (slot < 0 || slot >= c.max_batch || T < 1 || T > c.max_prefill || f->pos[slot] + T > c.n_ctx)
        return (int)cudaErrorInvalidValue;
    for (int t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= c.n_vocab) return (int)cudaErrorInvalidValue;
        f->h_tok[t] = tokens[t];
        f->h_pos[t] = f->pos[slot] + t;
    }
    TRY(cudaMemcpyAsync(f->d_tok, f->h_tok, sizeof(int) * T, cudaMemcpyHostToDevice, f->st));
    TRY(cudaMemcpyAsync(f->d_pos, f->h_pos, sizeof(int) * T, cudaMemcpyHostToDevice, f->st));
    TRY(run_layers(f, T, true, slot));
    const int rows = all ? T : 1;
    const __half *xn = all ? f->xn : f->xn + (size_t)(T - 1) * c.n_embd;
    TRY(matmul(f, f->output, head_q(f), c.n_vocab, c.n_embd, xn, rows, f->logits));
    if (logits)
        TRY(cudaMemcpyAsync(logits, f->logits, sizeof(float) * rows * c.n_vocab, cudaMemcpyDeviceToHost, f->st));
    TRY(cudaStreamSynchronize(f->st));
    f->pos[slot] += T;
    return 0;
}

int ds_gpu_forward_decode(ds_gpu_forward *f, int B, const int32_t *tokens, float *logits) {
    const ds_gpu_forward_cfg &c = f->c;
    if (B < 1 || B > c.max_batch) return (int)cudaErrorInvalidValue;
    for (int b = 0; b < B; b++) {
        if (tokens[b] < 0 || tokens[b] >= c.n_vocab || f->pos[b] >= c.n_ctx) return (int)cudaErrorInvalidValue;
        f->h_tok[b] = tokens[b];
        f->h_pos[b] = f->pos[b];
    }
    cudaGraphExec_t &ge = f->graph[f->use_sparse][B];
    if (!ge) {
        cudaGraph_t g;
        TRY(cudaStreamBeginCapture(f->st, cudaStreamCaptureModeThreadLocal));
        int e = run_layers(f, B, false, 0);
        if (!e) e = matmul(f, f->output, head_q(f), c.n_vocab, c.n_embd, f->xn, B, f->logits, true);
        cudaError_t ec = cudaStreamEndCapture(f->st, &g);
        if (e) return e;
        TRY(ec);
        TRY(cudaGraphInstantiate(&ge, g, 0));
        cudaGraphDestroy(g);
    }
    TRY(cudaMemcpyAsync(f->d_tok, f->h_tok, sizeof(int) * B, cudaMemcpyHostToDevice, f->st));
    TRY(cudaMemcpyAsync(f->d_pos, f->h_pos, sizeof(int) * B, cudaMemcpyHostToDevice, f->st));
    TRY(cudaEventRecord(f->ev0, f->st));
    TRY(cudaGraphLaunch(ge, f->st));
    TRY(cudaEventRecord(f->ev1, f->st));
    if (logits) TRY(cudaMemcpyAsync(logits, f->logits, sizeof(float) * B * c.n_vocab, cudaMemcpyDeviceToHost, f->st));
    TRY(cudaStreamSynchronize(f->st));
    cudaEventElapsedTime(&f->last_ms, f->ev0, f->ev1);
    for (int b = 0; b < B; b++) f->pos[b]++;
    return 0;
}

int ds_gpu_forward_pos(const ds_gpu_forward *f, int slot) {
    return slot >= 0 && slot < f->c.max_batch ? f->pos[slot] : -1;
}

int ds_gpu_forward_set_pos(ds_gpu_forward *f, int slot, int pos) {
    if (slot < 0 || slot >= f->c.max_batch || pos < 0 || pos > f->pos[slot]) return (int)cudaErrorInvalidValue;
    f->pos[slot] = pos;
    return 0;
}

double ds_gpu_forward_last_step_seconds(const ds_gpu_forward *f) { return f->last_ms / 1e3; }

int ds_gpu_forward_set_sparse(ds_gpu_forward *f, int on) {
    if (on && !f->c.sparse) return (int)cudaErrorInvalidValue;
    f->use_sparse = !!on;   // each mode keeps its own graphs: switching back and forth is free
    return 0;
}

}  // extern "C"
