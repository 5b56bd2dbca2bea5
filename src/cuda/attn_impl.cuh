// attn_impl.cuh — what the two files of the decode attention share: attn.cu (dense split-KV,
// the cluster selection and the attention over selected rows) and attn_fused.cu (the whole DS
// call in one kernel for short caches). The workspace plan, tuning overrides, score keys, label
// loads with L2 hints, the threshold search over a histogram, the query at the label channels,
// and the per-block phase trace of benchmark builds.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cooperative_groups.h>
#include <cub/block/block_scan.cuh>

#include "label.cuh"
#include "pdl.cuh"

extern "C" {
#include "backend.h"
#include "dsinfer.h"   // DS_RECENT_DEFAULT
}

namespace cg = cooperative_groups;

#define HIST_BINS 2048   // top 11 bits of the 16-bit key
#define LOW_BITS 5       // the rest, resolved on the candidates
#define CL_MAX 8         // blocks per cluster at most (the portable size)

// Phase timestamps per block for the benchmark library built with -DDS_TRACE (make
// build-cuda/libdsattn-trace.so; bench/gpu/op_bench.py --trace): thread 0 of each block writes
// %globaltimer at numbered points, TRACE_SLOTS per block, in one region of TRACE_REGION blocks
// per kernel (0 scoring, 1 collecting, 2 attention, 3 the single-kernel selection, 4 the fused
// kernel). Compiled out otherwise.
#define TRACE_SLOTS 8
#define TRACE_REGION (1 << 16)
#ifdef DS_TRACE
static __device__ unsigned long long *g_trace;   // one per file: ds_gpu_attn_trace sets both
__device__ inline void trace_at(int kernel, int slot) {
    if (threadIdx.x || !g_trace) return;
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    const long blk = (long)blockIdx.y * gridDim.x + blockIdx.x;
    if (blk < TRACE_REGION) g_trace[((long)kernel * TRACE_REGION + blk) * TRACE_SLOTS + slot] = t;
}
#define TRACE(kernel, slot) trace_at(kernel, slot)
#else
#define TRACE(kernel, slot) ((void)0)
#endif

namespace dsattn {

using dsgpu::f2h;
using dsgpu::h2f;

struct Plan {
    int U, G, k_cap;            // units (sequence, KV head), group size, k at max_len
    int chunk, n_chunks;        // positions per scoring block, blocks per unit
    int collect_per;            // keys per thread in k_collect (256 threads a block): 8, 16 or 32
    int kstride;                // key row stride: n_max rounded up to 8 (16-byte vector loads)
    int slice_d, splits_d;      // dense: rows per attention block, blocks per unit
    int slice_s, splits_s;      // sparse: the same over the selected rows
    int splits_max;
    size_t off_keys, off_cand, off_hist, off_cnt, off_rq, off_sel, off_pacc, off_pml, total;
};

inline int sm_count() {
    static int n = 0;
    if (!n) {
        int dev = 0;
        cudaGetDevice(&dev);
        if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) n = 132;
    }
    return n;
}

__host__ __device__ inline int k_for(int n, int tokens, float frac) {
    int k = tokens > 0 ? tokens : (int)ceilf(frac * (float)n - 1e-6f);
    return k < 1 ? 1 : k;
}

// The recent window of a sparse unit (n > k): the W positions before the current token, always
// selected; the top-k covers the k - 1 - W best of [0, n - 1 - W) (>= 1 position, since n > k).
// The CPU's recent_window (src/sparse.c), the same rule.
__host__ __device__ inline int recent_for(int recent, int n, int k) {
    int w = recent < 0 ? min(DS_RECENT_DEFAULT, k / 8) : min(recent, k - 1);
    return max(0, min(w, n - 1));
}

// Whether a sequence of n visible tokens decodes sparsely (else dense over all n).
__device__ inline bool unit_sparse(const ds_gpu_attn_args &a, int n, int k) { return n > k && n >= a.min_context; }

// Tuning overrides for benchmarks (unset in normal use), e.g. DSINFER_GPU_TUNE="att=8,per=32":
// att / satt = dense / sparse attention blocks per SM (satt unset: one full wave), cl = blocks
// per cluster of k_select (1, 2, 4 or 8), split=1 = the two-kernel selection, and for that one
// chunk = positions per scoring block, per = keys per thread in k_collect; aplain=1 = sparse
// attention without software pipelining; norq=1 = k_attn waits for the whole k_select grid
// instead of taking units from the ready queue as their selections finish; su=4|8 = label rows
// per thread in flight in k_select's scan (launch_select); nofused=1, fcl=N, fspan=N = the
// one-kernel path for short caches off, its cluster size forced, its span limit, fcap=0 its
// cluster size by blocks per SM alone (run_fused);
// nomma=1 = grouped queries on k_attn's CUDA cores instead of k_attn_mma's tensor cores, mw=N =
// waves of k_attn_mma in the dense split (att=N sets the dense split per SM for both kernels).
inline int tune(const char *key, int dflt) {
    const char *e = getenv("DSINFER_GPU_TUNE");
    if (!e) return dflt;
    const size_t kl = strlen(key);
    for (const char *p = e; (p = strstr(p, key)) != nullptr; p += kl) {
        if ((p == e || p[-1] == ',') && p[kl] == '=') {   // a whole key: "att" is not "satt"
            const int v = atoi(p + kl + 1);
            return v > 0 ? v : dflt;
        }
    }
    return dflt;
}

// Order-preserving 16-bit key of a score (fp16 rounding; -0 as +0, NaN lowest).
__device__ inline uint32_t score_key(float s) {
    uint32_t u = f2h(s);
    if ((u & 0x7fff) > 0x7c00) return 0;
    if (u == 0x8000) u = 0;
    return (u & 0x8000) ? (~u & 0xffff) : (u | 0x8000);
}

// ---- float dot product of a label row (k_fused's scan, k_select's group-max scan) ----
// One label row of WORDS 32-bit words (2, 4 or 8) against q (shared memory, at the label
// channels): BITS 16 = fp16 labels, else sum q c over the codes c (the row's score is then
// lo * qsum + step * dot).
// Up to 32 channels the compiler keeps q in registers across rows; wider label rows (up to 128
// channels) read it from shared memory each time (volatile: hoisted, it spilled).
__device__ __forceinline__ float lds_f32(const float *p) {
    float v;
    asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"((uint32_t)__cvta_generic_to_shared(p)));
    return v;
}
__device__ __forceinline__ int4 lds_v4(const int *p) {   // 16-byte aligned
    int4 v;
    asm volatile("ld.shared.v4.s32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"((uint32_t)__cvta_generic_to_shared(p)));
    return v;
}
// LDS forces the shared-memory loads at any width (a caller that loops over several queries).
template <int BITS, int WORDS, bool LDS = (WORDS * 32 / BITS > 32)>
__device__ __forceinline__ float label_dot(const uint32_t (&w)[WORDS], const float *q_) {
    auto q = [&](int j) { return LDS ? lds_f32(q_ + j) : q_[j]; };
    float dot = 0;
    if constexpr (BITS == 16) {
#pragma unroll
        for (int i = 0; i < WORDS; i++) {
            const float2 f = __half22float2(*(const __half2 *)&w[i]);
            dot = fmaf(q(2 * i), f.x, dot);
            dot = fmaf(q(2 * i + 1), f.y, dot);
        }
    } else {
        constexpr int PER = 32 / BITS, PLANES = 8 / BITS;
        constexpr uint32_t M = BITS == 8 ? 0xffffffffu : BITS == 4 ? 0x0f0f0f0fu : 0x03030303u;
#pragma unroll
        for (int i = 0; i < WORDS; i++)
#pragma unroll
            for (int pl = 0; pl < PLANES; pl++) {
                const uint32_t bytes = (w[i] >> (pl * BITS)) & M;
#pragma unroll
                for (int j = 0; j < 4; j++)   // the code as a float, exactly: into 2^23's mantissa
                    dot = fmaf(q(i * PER + j * PLANES + pl),
                               __int_as_float(__byte_perm(bytes, 0x4B000000u, 0x7650u + j)) - 8388608.0f, dot);
            }
    }
    return dot;
}


// ---- 4- and 2-bit label codes by integer dot products (k_select's scan, k_fused's) ----
// q is rounded to int16 in pairs, and dp2a multiplies a pair by two code bytes of a masked
// plane word (.lo: bytes 0-1, .hi: bytes 2-3) into an int32: 2 instructions per 4 codes where
// the float path needs 4 byte permutes and 4 FMAs (the 4-bit scan was bound by issue, not
// bytes). Byte j of plane pl of word i is channel i * PER + j * PLANES + pl. The rounding step
// is max|q| / 32767, so a score moves by at most r * L * step * max|q| / 65534 (L = 15 at 4
// bits), in practice by far less than the fp16 rounding of the 16-bit keys (gpu_check holds
// the selection to that rounding). Not for 2-bit rows of 32 bytes: 64 pairs spill.
template <int BITS, int WORDS>
struct CodeDot {
    static constexpr int PER = 32 / BITS, PLANES = BITS <= 8 ? 8 / BITS : 1;
    static constexpr bool ON = BITS <= 4 && WORDS * PLANES <= 16;
    static constexpr int NP = ON ? WORDS * PLANES * 2 : 1;   // int16 pairs
    static constexpr uint32_t M = BITS == 4 ? 0x0f0f0f0fu : 0x03030303u;

    // q(j), j < WORDS * PER: the float query at label channel j; returns the rounding step
    template <typename Q>
    __device__ __forceinline__ static float pack(Q q, int (&qp)[NP]) {
        float mx = 0;
#pragma unroll
        for (int j = 0; j < WORDS * PER; j++) mx = fmaxf(mx, fabsf(q(j)));
        const float inv = mx > 0 ? 32767.0f / mx : 0.0f;
#pragma unroll
        for (int i = 0; i < WORDS; i++)
#pragma unroll
            for (int pl = 0; pl < PLANES; pl++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int c0 = i * PER + 2 * h * PLANES + pl, c1 = c0 + PLANES;   // bytes 2h, 2h+1
                    const int v0 = (int)rintf(fminf(fmaxf(q(c0) * inv, -32767.0f), 32767.0f));
                    const int v1 = (int)rintf(fminf(fmaxf(q(c1) * inv, -32767.0f), 32767.0f));
                    qp[(i * PLANES + pl) * 2 + h] = (int)(((uint32_t)v0 & 0xffffu) | ((uint32_t)v1 << 16));
                }
        return mx > 0 ? mx / 32767.0f : 0.0f;
    }
    // sum over the row's channels of q * code, from the packed pairs and their step
    __device__ __forceinline__ static float dot(const uint32_t (&w)[WORDS], const int (&qp)[NP], float step) {
        int d0 = 0, d1 = 0;   // two chains: dp2a's latency, not its rate, would bind one
#pragma unroll
        for (int i = 0; i < WORDS; i++)
#pragma unroll
            for (int pl = 0; pl < PLANES; pl++) {
                const int bytes = (int)((w[i] >> (pl * BITS)) & M);
                d0 = __dp2a_lo(qp[(i * PLANES + pl) * 2], bytes, d0);
                d1 = __dp2a_hi(qp[(i * PLANES + pl) * 2 + 1], bytes, d1);
            }
        return (float)(d0 + d1) * step;
    }
};

// A cluster's CL blocks split n positions into spans of this many (a multiple of 8: the score
// keys are read as 16-byte vectors). The kernels and the host code that sizes them must agree.
__host__ __device__ inline int cluster_span(int n, int CL) { return ((n + CL - 1) / CL + 7) & ~7; }

// One query head's 8 channels (16 bytes of fp16) as the attention uses them: q * scale * log2(e),
// so the softmax runs on exp2. k_fused uses it; k_attn and k_select keep their own copies of
// this and of cluster_span's expression, because routing them through these helpers changed
// their SASS (same registers, up to ~4000 of their instructions rescheduled; the build is
// deterministic) and k_attn's speed has moved with such changes before (bench/NOTES.md).
__device__ __forceinline__ void query_log2(uint4 raw, float scale, float (&q)[8]) {
    const float LOG2E = 1.4426950408889634f;
    const __half2 *h = (const __half2 *)&raw;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 f = __half22float2(h[i]);
        q[2 * i] = f.x * scale * LOG2E;
        q[2 * i + 1] = f.y * scale * LOG2E;
    }
}

// ---- L2 eviction hints (sm_80+) ----
// The selection streams the label cache once, and the score keys it writes are read back by
// the same call's emit pass. The label stream is loaded "evict first" and not allocated in L1,
// the keys are stored "evict last" and read back "evict first" on their last use. Measured
// on the H200 against a SEL_HINT=0 build in one call (bench/NOTES.md, 2026-12-03): 2-12%
// faster in 9 of 12 op-bench cells, level at B=8/64K, 1-2 us slower at B=1 with 4K-16K.
#ifndef SEL_HINT
#define SEL_HINT 1
#endif
__device__ __forceinline__ uint64_t l2_evict_first() {
    uint64_t p;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    return p;
}
__device__ __forceinline__ uint64_t l2_evict_last() {
    uint64_t p;
    asm("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(p));
    return p;
}
template <typename T>
__device__ __forceinline__ T ld_stream(const T *ptr, uint64_t pol) {
    if constexpr (!SEL_HINT) return __ldg(ptr);
    T v;
    if constexpr (sizeof(T) == 16) {
        uint4 &w = reinterpret_cast<uint4 &>(v);
        asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
            : "=r"(w.x), "=r"(w.y), "=r"(w.z), "=r"(w.w) : "l"(ptr), "l"(pol));
    } else if constexpr (sizeof(T) == 8) {
        uint2 &w = reinterpret_cast<uint2 &>(v);
        asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v2.u32 {%0, %1}, [%2], %3;" : "=r"(w.x), "=r"(w.y) : "l"(ptr), "l"(pol));
    } else {
        static_assert(sizeof(T) == 2, "label loads are 2, 8 or 16 bytes");
        uint16_t &w = reinterpret_cast<uint16_t &>(v);
        asm("ld.global.nc.L1::no_allocate.L2::cache_hint.u16 %0, [%1], %2;" : "=h"(w) : "l"(ptr), "l"(pol));
    }
    return v;
}

// Threshold bin of a histogram: the bin b where (count above b) < need <= (count above b) +
// hist[b]. 256 threads, 8 bins each, scanning from the top. A global histogram (just written
// through L2 atomics by other blocks) is read with __ldcg; a shared one plainly.
template <bool SHARED>
__device__ void find_threshold(const uint32_t *gh, int need, int *b_out, int *above_out) {
    typedef cub::BlockScan<int, 256> Scan;
    __shared__ typename Scan::TempStorage tmp;
    __shared__ int sb, sa;
    const int t = threadIdx.x;
    int h[8], local = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        h[i] = (int)(SHARED ? gh[HIST_BINS - 1 - (8 * t + i)] : __ldcg(gh + HIST_BINS - 1 - (8 * t + i)));
        local += h[i];
    }
    int above;
    Scan(tmp).ExclusiveSum(local, above);
    if (t == 0) { sb = -1; sa = 0; }
    __syncthreads();
    if (need > 0) {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            if (above < need && above + h[i] >= need) { sb = HIST_BINS - 1 - (8 * t + i); sa = above; }
            above += h[i];
        }
    }
    __syncthreads();
    *b_out = sb;         // -1 when need <= 0: nothing is selected
    *above_out = sa;
}

// The group's summed query at the unit's label channels, at logit scale: keys are fp16, and
// normalised labels are scored with q * scale. R floats to ql (shared); the caller syncs.
__device__ inline void query_labels(const ds_gpu_attn_args &a, int u, int R, float *ql) {
    const int b = u / a.H_kv, kvh = u % a.H_kv, G = a.H / a.H_kv;
    for (int j = threadIdx.x; j < R; j += blockDim.x) {
        const int c = a.chan[kvh * a.r + j];
        float s = 0;
        for (int g = 0; g < G; g++) s += h2f(a.q[((size_t)b * a.H + kvh * G + g) * a.d + c]);
        ql[j] = s * a.scale * (a.lab_scale ? a.lab_scale[kvh * a.r + j] : 1.0f);
    }
}

// Each query head's labels on its own (ds_gpu_attn_args.group_max): ql[g * R + j] for the G
// heads of the group, at logit scale as above; the caller syncs.
__device__ inline void query_labels_heads(const ds_gpu_attn_args &a, int u, int R, float *ql) {
    const int b = u / a.H_kv, kvh = u % a.H_kv, G = a.H / a.H_kv;
    for (int i = threadIdx.x; i < G * R; i += blockDim.x) {
        const int g = i / R, j = i % R, c = a.chan[kvh * a.r + j];
        ql[i] = h2f(a.q[((size_t)b * a.H + kvh * G + g) * a.d + c]) * a.scale *
                (a.lab_scale ? a.lab_scale[kvh * a.r + j] : 1.0f);
    }
}

// One step of the decode attention over UNROLL rows: this lane holds 8 channels of each row's K
// and V (kv, vv; D/8 lanes a row), the rows' scores against the group's G queries (q, at log2
// scale) are summed over those lanes, and the online softmax state (running max m, sum l,
// accumulators acc of this lane's channels) takes them in. Rows with ok false are skipped.
// Shared by k_attn (attn.cu) and k_fused (attn_fused.cu).
template <int D, int G, int UNROLL>
__device__ __forceinline__ void attn_rows(const float (&q)[G][8], const uint4 (&kv)[UNROLL], const uint4 (&vv)[UNROLL],
                                          const bool (&ok)[UNROLL], float (&m)[G], float (&l)[G], float (&acc)[G][8]) {
    constexpr int LPR = D / 8;
    float s[UNROLL][G];
#pragma unroll
    for (int j = 0; j < UNROLL; j++) {
        float kf[8];
        const __half2 *h = (const __half2 *)&kv[j];
#pragma unroll
        for (int i = 0; i < 4; i++) { float2 f = __half22float2(h[i]); kf[2 * i] = f.x; kf[2 * i + 1] = f.y; }
#pragma unroll
        for (int g = 0; g < G; g++) {
            float d = 0;
#pragma unroll
            for (int i = 0; i < 8; i++) d = fmaf(q[g][i], kf[i], d);
#pragma unroll
            for (int o = LPR / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
            s[j][g] = ok[j] ? d : -INFINITY;
        }
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
        float mx = m[g];
#pragma unroll
        for (int j = 0; j < UNROLL; j++) mx = fmaxf(mx, s[j][g]);
        if (mx == -INFINITY) continue;
        float corr = exp2f(m[g] - mx);
        l[g] *= corr;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[g][i] *= corr;
#pragma unroll
        for (int j = 0; j < UNROLL; j++) {
            float p = exp2f(s[j][g] - mx);
            l[g] += p;
            const __half2 *h = (const __half2 *)&vv[j];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 f = __half22float2(h[i]);
                acc[g][2 * i] = fmaf(p, f.x, acc[g][2 * i]);
                acc[g][2 * i + 1] = fmaf(p, f.y, acc[g][2 * i + 1]);
            }
        }
        m[g] = mx;
    }
}

// ---- what k_attn (attn.cu) and k_attn_mma (attn_mma.cu) share ----
#define ATT_THREADS 128  // 4 warps per attention block
#define ATT_MAX_RESIDENT 16   // k_attn blocks per SM at most (2048 threads / ATT_THREADS)
// Per-unit counters in the workspace (uint32 each): selected so far, candidates so far, the
// "last block" tickets of the three kernels, and the threshold bin found by k_score.
enum { C_SEL, C_CAND, C_T_SCORE, C_T_COLLECT, C_T_ATTN, C_B1, C_N = 8 };
// The ready queue between k_select and k_attn (workspace, uint32): counters, then one slot per
// unit in the order the units' selections finish (unit + 1; 0 = not yet).
enum { RQ_HEAD, RQ_GRAB, RQ_DONE, RQ_SLOTS = 4 };

// A selected position: from L2 when k_select may have written it while this grid ran (RQ),
// else through the read-only path.
template <bool RQ>
__device__ __forceinline__ int ld_index(const int32_t *p) { return RQ ? __ldcg(p) : __ldg(p); }
__device__ inline uint32_t ld_acquire(const uint32_t *p) {
    uint32_t v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// The whole DS call in one kernel where it pays (attn_fused.cu): -1 where it does not apply,
// else the launch's status.
int run_fused(const ds_gpu_attn_args *a, const Plan &p, char *ws, cudaStream_t st);
// Step 4 on the tensor cores for grouped queries (attn_mma.cu): whether it takes (d, G) (not
// with DSINFER_GPU_TUNE nomma=1), its blocks resident per SM, and its launch (-1: not taken).
bool attn_mma_applies(int d, int G);
int attn_mma_resident(int d, int G);
int run_attn_mma(const ds_gpu_attn_args *a, const Plan &p, char *ws, bool sparse, uint32_t *rq, cudaStream_t st);
#ifdef DS_TRACE
int fused_trace(unsigned long long *buf);   // where k_fused writes its phase timestamps
#endif

}  // namespace dsattn
