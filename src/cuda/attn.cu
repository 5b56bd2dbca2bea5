// attn.cu — GPU decode attention: dense split-KV, and Double Sparsity (label scan -> radix
// top-k -> attention over the selected rows). Declarations and layouts: src/backend.h.
//
// Bytes decide everything here (performance.md). Per (sequence, KV head) and step:
//   dense: 2 * n * d * 2 bytes of K and V;
//   DS:    n * row_bytes (+4 for lo/step below 16 bits) of labels, 2 * k * d * 2 of selected
//          rows, plus ~6 bytes per candidate (~9% of n) written once and read back.
// Pipeline of one DS call (all on the device, no host sync, graph-capturable); a score is
// (sum over the group's query heads of q[chan]) . label, as a 16-bit order-preserving key:
//   1. k_sample:  per (sequence, KV head) unit, the keys of a stratified random sample of
//                 1024 positions give a threshold safely below the k-th largest key.
//   2. k_scan:    one pass over the labels; positions whose key reaches the threshold are
//                 appended to the unit's candidate list (staged per block in shared memory).
//   3. select:    the unit's last k_scan block takes the exact top k-1 of the candidates
//                 (radix: 11 + 5 key bits; ties: lowest position first), appends the current
//                 token and resets the counters for the next call. If the sample's threshold
//                 was too high (fewer than k-1 candidates), it rescans the unit unthresholded.
//   4. k_attn:    split over the selected rows, each block a slice; a KV row is read once and
//                 used by every query head of its group (GQA shared); online softmax; the
//                 unit's last block merges the slices (log-sum-exp).
// Three launches in all ("last block" tickets replace the kernels that only waited for a
// whole unit). The dense path is step 4 over the contiguous range. An earlier version wrote
// every position's key (2 bytes) and re-read it in a separate collect kernel: bench/NOTES.md.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cub/block/block_scan.cuh>

#include "label.cuh"

extern "C" {
#include "backend.h"
}

#define HIST_BINS 2048   // top 11 bits of the 16-bit key (the sample's and the selection's histograms)
#define LOW_BITS 5       // the rest, resolved on the candidates
#define ATT_THREADS 128  // 4 warps per attention block
#define EQ_CAP 1024      // tied keys at the threshold ranked in shared memory up to this many
#define BIN_CAP 2048     // candidates in the threshold bin select_fast keeps in shared memory
// shared words the selection borrows from k_scan's staging area: select_general's histograms
// and tied positions, or select_fast's low-bit histogram, threshold-bin list and tied positions
#define SEL_SMEM_WORDS (HIST_BINS > BIN_CAP ? HIST_BINS + 32 + EQ_CAP : BIN_CAP + 32 + EQ_CAP)
// Per-unit counters in the workspace (uint32 each): candidates so far, the "last block"
// tickets of k_scan and k_attn, and the threshold key found by k_sample.
// Slot C_RESCANS counts the unit's rescans (never reset; ds_gpu_attn_rescans).
enum { C_CAND, C_T_SCAN, C_T_ATTN, C_THR, C_RESCANS, C_N = 8 };

namespace {

struct Plan {
    int U, G, k_cap;            // units (sequence, KV head), group size, k at max_len
    int chunk, n_chunks;        // positions per scan block, blocks per unit
    int slice_d, splits_d;      // dense: rows per attention block, blocks per unit
    int slice_s, splits_s;      // sparse: the same over the selected rows
    int splits_max;
    size_t off_ckey, off_cpos, off_hist, off_cnt, off_sel, off_pacc, off_pml, total;
};

int sm_count() {
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

// Whether a sequence of n visible tokens decodes sparsely (else dense over all n).
__device__ inline bool unit_sparse(const ds_gpu_attn_args &a, int n, int k) { return n > k && n >= a.min_context; }

// Tuning overrides for benchmarks (unset in normal use): DSINFER_GPU_TUNE="att=8,per=32".
int tune(const char *key, int dflt) {
    const char *e = getenv("DSINFER_GPU_TUNE");
    if (!e) return dflt;
    const char *p = strstr(e, key);
    size_t kl = strlen(key);
    if (!p || p[kl] != '=') return dflt;
    int v = atoi(p + kl + 1);
    return v > 0 ? v : dflt;
}

size_t align_up(size_t x) { return (x + 255) & ~(size_t)255; }

// Split `items` rows into slices so the whole grid has a few blocks per SM.
void split(int items, int units, int *slice, int *splits) {
    int target = tune("att", 4) * sm_count();
    int per_unit = (target + units - 1) / units;
    int max_splits = (items + 63) / 64;                 // at least 64 rows a block
    if (per_unit > max_splits) per_unit = max_splits;
    if (per_unit < 1) per_unit = 1;
    int s = (items + per_unit - 1) / per_unit;
    s = (s + 31) / 32 * 32;
    if (s < 32) s = 32;
    *slice = s;
    *splits = (items + s - 1) / s;
    if (*splits < 1) *splits = 1;
}

Plan make_plan(const ds_gpu_attn_args *a) {
    Plan p;
    p.U = a->B * a->H_kv;
    const int Ucap = (a->ws_batch > a->B ? a->ws_batch : a->B) * a->H_kv;   // workspace layout
    p.G = a->H / a->H_kv;
    int kc = k_for(a->max_len, a->tokens, a->tokens_frac);
    p.k_cap = kc < a->max_len ? kc : a->max_len;
    // scan: 256 threads x 16 positions, fewer when the grid would be too small; at most 65536
    // (a staged candidate holds its position in 16 bits)
    p.chunk = tune("chunk", 4096);
    if (p.chunk > 16384) p.chunk = 16384;
    while (p.chunk > 256 && (long)p.U * ((a->max_len + p.chunk - 1) / p.chunk) < 4L * sm_count()) p.chunk /= 2;
    p.n_chunks = (a->max_len + p.chunk - 1) / p.chunk;
    split(a->max_len, p.U, &p.slice_d, &p.splits_d);
    split(p.k_cap, p.U, &p.slice_s, &p.splits_s);
    p.splits_max = p.splits_d > p.splits_s ? p.splits_d : p.splits_s;
    size_t o = 0;
    p.off_ckey = o; o = align_up(o + (size_t)Ucap * a->n_max * 2);   // candidates: [Ucap][n_max] keys
    p.off_cpos = o; o = align_up(o + (size_t)Ucap * a->n_max * 4);   // and positions
    p.off_hist = o; o = align_up(o + (size_t)Ucap * HIST_BINS * 4);  // candidates' top key bits
    p.off_cnt = o;  o = align_up(o + (size_t)Ucap * C_N * 4);
    p.off_sel = o;  o = align_up(o + (size_t)Ucap * p.k_cap * 4);
    // slices: split() keeps U * splits <= its block target + U, so this bound holds for any B
    // up to Ucap (the layout above must not depend on B)
    const size_t slices = (size_t)tune("att", 4) * sm_count() + Ucap;
    p.off_pacc = o; o = align_up(o + slices * p.G * a->d * 4);
    p.off_pml = o;  o = align_up(o + slices * p.G * 2 * 4);
    p.total = o;
    return p;
}

using dsgpu::f2h;
using dsgpu::h2f;

// Order-preserving 16-bit key of a score (fp16 rounding; -0 as +0, NaN lowest).
__device__ inline uint32_t score_key(float s) {
    uint32_t u = f2h(s);
    if ((u & 0x7fff) > 0x7c00) return 0;
    if (u == 0x8000) u = 0;
    return (u & 0x8000) ? (~u & 0xffff) : (u | 0x8000);
}

// ---- label build: one thread per (unit, position) row ----
__global__ void k_label_build(ds_gpu_attn_args a, int pos0, int pos1, int row_bytes) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    int span = pos1 - pos0;
    long U = (long)a.B * a.H_kv;
    if (i >= U * span) return;
    int u = (int)(i / span), p = pos0 + (int)(i % span);
    size_t row = (size_t)u * a.n_max + p;
    dsgpu::label_encode_row(a.k + row * a.d, a.chan + (size_t)(u % a.H_kv) * a.r, a.r, a.bits, row_bytes,
                            a.labels + row * row_bytes, a.lab_lo + row, a.lab_step + row);
}

// ---- label rows: load and score (shared by the sampler, the scan and the fallback) ----
// WORDS: 32-bit words per label row (row_bytes / 4); BITS: label bits; R = WORDS*32/BITS.
template <int BITS, int WORDS>
__device__ inline void load_row(const uint32_t *lab, const uint16_t *lo, const uint16_t *st, int p, uint32_t (&w)[WORDS],
                                float &lof, float &stf) {
    if constexpr (WORDS == 4) {
        uint4 v = __ldg((const uint4 *)(lab + (size_t)p * 4));
        w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
    } else if constexpr (WORDS == 2) {
        uint2 v = __ldg((const uint2 *)(lab + (size_t)p * 2));
        w[0] = v.x; w[1] = v.y;
    } else {
#pragma unroll
        for (int i = 0; i < WORDS; i++) w[i] = __ldg(lab + (size_t)p * WORDS + i);
    }
    if constexpr (BITS != 16) { lof = h2f(__ldg(lo + p)); stf = h2f(__ldg(st + p)); }
    else { lof = 0; stf = 0; }
}

template <int BITS, int WORDS>
__device__ inline float row_score(const uint32_t (&w)[WORDS], const float (&q)[WORDS * 32 / BITS], float qsum, float lof,
                                  float stf) {
    if constexpr (BITS == 16) {
        float s = 0;
#pragma unroll
        for (int i = 0; i < WORDS; i++) {
            float2 f = __half22float2(*(const __half2 *)&w[i]);
            s = fmaf(q[2 * i], f.x, s);
            s = fmaf(q[2 * i + 1], f.y, s);
        }
        return s;
    } else {
        // Codes to floats without I2F (a quarter-rate instruction that made the scan
        // compute-bound at 4 bits): mask the codes into bytes, drop each byte into the mantissa
        // of 2^23 with one byte permute, subtract 2^23.
        constexpr int PER = 32 / BITS, PLANES = 8 / BITS;
        constexpr uint32_t M = BITS == 8 ? 0xffffffffu : BITS == 4 ? 0x0f0f0f0fu : 0x03030303u;
        float dot = 0;
#pragma unroll
        for (int i = 0; i < WORDS; i++)
#pragma unroll
            for (int pl = 0; pl < PLANES; pl++) {
                const uint32_t bytes = (w[i] >> (pl * BITS)) & M;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const float c = __int_as_float(__byte_perm(bytes, 0x4B000000u, 0x7650u + j)) - 8388608.0f;
                    dot = fmaf(q[i * PER + j * PLANES + pl], c, dot);
                }
            }
        return stf * dot + lof * qsum;
    }
}

// The unit's q-label: sum over the group's query heads of q[chan], times the softmax scale
// (keys are fp16: keep them at logit scale). Into shared ql[R], then registers.
template <int R>
__device__ inline void load_qlabel(const ds_gpu_attn_args &a, int b, int kvh, float (&q)[R], float &qsum) {
    __shared__ float ql[R];
    const int G = a.H / a.H_kv;
    for (int j = threadIdx.x; j < R; j += blockDim.x) {
        const int c = a.chan[kvh * a.r + j];
        float s = 0;
        for (int g = 0; g < G; g++) s += h2f(a.q[((size_t)b * a.H + kvh * G + g) * a.d + c]);
        ql[j] = s * a.scale;
    }
    __syncthreads();
    qsum = 0;
#pragma unroll
    for (int j = 0; j < R; j++) { q[j] = ql[j]; qsum += q[j]; }
}

__device__ inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
    return x;
}

// A slot in a shared list for every lane of the warp whose `want` is set, with one atomic per
// warp; returns want. All 32 lanes must call it.
__device__ inline bool warp_slot(bool want, uint32_t *counter, uint32_t *slot) {
    const uint32_t mask = __ballot_sync(0xffffffffu, want);
    if (!mask) return false;
    const int lane = threadIdx.x & 31, leader = __ffs(mask) - 1;
    uint32_t base = 0;
    if (lane == leader) base = atomicAdd(counter, (uint32_t)__popc(mask));
    *slot = __shfl_sync(0xffffffffu, base, leader) + __popc(mask & ((1u << lane) - 1));
    return want;
}

// Bin b of a 256-thread block's shared histogram (bins-many, scanned from the top) where
// (count above b) < need <= (count above b) + h[b]; -1 when need <= 0 or the counts fall short.
template <int BINS>
__device__ void find_bin(const uint32_t *h, int need, int *b_out, int *above_out) {
    constexpr int PER = BINS >= 256 ? BINS / 256 : 1;
    typedef cub::BlockScan<int, 256> Scan;
    __shared__ typename Scan::TempStorage tmp;
    __shared__ int sb, sa;
    const int t = threadIdx.x;
    int v[PER], local = 0;
#pragma unroll
    for (int i = 0; i < PER; i++) { v[i] = PER * t + i < BINS ? (int)h[BINS - 1 - (PER * t + i)] : 0; local += v[i]; }
    int above;
    Scan(tmp).ExclusiveSum(local, above);
    if (t == 0) { sb = -1; sa = 0; }
    __syncthreads();
    if (need > 0) {
#pragma unroll
        for (int i = 0; i < PER; i++) {
            if (above < need && above + v[i] >= need) { sb = BINS - 1 - (PER * t + i); sa = above; }
            above += v[i];
        }
    }
    __syncthreads();
    *b_out = sb;
    *above_out = sa;
}

// ---- 1. the threshold from a sample ----
// One block per unit scores a stratified random sample of m positions (one per stratum of
// nc/m) and takes as threshold T the lowest key of the bin that holds the sample's R-th
// largest key, R = e + 5 sqrt(e) + 8 where e = m (k-1)/nc is the expected count of sampled
// positions inside the true top k-1. So T lies below the true k-th key unless the sample has
// 5 standard deviations too many high scores; the scan then emits ~R/m of all positions as
// candidates (~11% at k = n/16 and m = 1024), and if ever fewer than k-1 pass, the selection rescans the
// unit with no threshold (step 2), so the result is exact either way.
#define SAMPLE_MAX 1024
template <int BITS, int WORDS>
__global__ void __launch_bounds__(256) k_sample(ds_gpu_attn_args a, uint32_t *cnt) {
    constexpr int R = WORDS * 32 / BITS;
    const int u = blockIdx.x, b = u / a.H_kv, kvh = u % a.H_kv;
    const int n = a.seq_len[b], k = k_for(n, a.tokens, a.tokens_frac);
    if (!unit_sparse(a, n, k)) return;
    const int nc = n - 1, need = k - 1;
    const int m = min(SAMPLE_MAX, nc / 4);
    const float e = (float)m * need / nc;
    const int rank = (int)ceilf(e + 5.0f * sqrtf(e) + 8.0f);
    if (need <= 0 || m < 256 || rank >= m) {   // nothing to select, or too few positions to sample
        if (threadIdx.x == 0) cnt[C_N * u + C_THR] = need <= 0 ? 0x10000u : 0u;
        return;
    }
    __shared__ uint32_t sh[HIST_BINS];
    for (int i = threadIdx.x; i < HIST_BINS; i += blockDim.x) sh[i] = 0;
    float q[R], qsum;
    load_qlabel<R>(a, b, kvh, q, qsum);   // (its barrier also orders the zeroing above)
    const uint32_t *lab = (const uint32_t *)(a.labels + (size_t)u * a.n_max * WORDS * 4);
    const uint16_t *lo = a.lab_lo + (size_t)u * a.n_max, *st = a.lab_step + (size_t)u * a.n_max;
    constexpr int PT = SAMPLE_MAX / 256;
    uint32_t w[PT][WORDS];
    float lof[PT], stf[PT];
#pragma unroll
    for (int j = 0; j < PT; j++) {
        const int i = j * 256 + threadIdx.x;
        int p = 0;
        if (i < m) {
            const int s0 = (int)((long)i * nc / m), s1 = (int)((long)(i + 1) * nc / m);
            p = s0 + (int)(mix32((uint32_t)i * 0x9e3779b9u ^ (uint32_t)nc) % (uint32_t)(s1 - s0));
        }
        load_row<BITS, WORDS>(lab, lo, st, p, w[j], lof[j], stf[j]);
    }
#pragma unroll
    for (int j = 0; j < PT; j++)
        if (j * 256 + (int)threadIdx.x < m) atomicAdd(&sh[score_key(row_score<BITS, WORDS>(w[j], q, qsum, lof[j], stf[j])) >> LOW_BITS], 1u);
    __syncthreads();
    int bin, above;
    find_bin<HIST_BINS>(sh, rank, &bin, &above);
    if (threadIdx.x == 0) cnt[C_N * u + C_THR] = bin < 0 ? 0u : (uint32_t)bin << LOW_BITS;
}

// ---- 3. exact top-(k-1) of the candidates; append the current token; reset for the next call ----
// Run by the last scan block of unit u (256 threads) over cand_pos/cand_key[0, C). The
// threshold key comes from a histogram of the keys' top 11 bits, then 32 bins of the rest;
// keys equal to it are taken lowest position first, as on the CPU, so the selection is
// deterministic whatever order the candidates arrived in.
//
// General form: three passes over the candidates in global memory (the histogram built here).
// Used after a rescan, or when the threshold bin holds more candidates than fit in shared memory.
__device__ void select_general(int need, int C, int n, const int32_t *cpos, const uint16_t *ckey, int32_t *out, uint32_t *smem) {
    uint32_t *h1 = smem, *h2 = smem + HIST_BINS;   // [HIST_BINS], [32]
    int *s_pos = (int *)(smem + HIST_BINS + (1 << LOW_BITS));   // [EQ_CAP]
    __shared__ uint32_t s_hi, s_eq;
    __shared__ int s_cnt;
    for (int i = threadIdx.x; i < HIST_BINS; i += blockDim.x) h1[i] = 0;
    if (threadIdx.x < (1 << LOW_BITS)) h2[threadIdx.x] = 0;
    if (threadIdx.x == 0) { s_hi = 0; s_eq = 0; }
    __syncthreads();
    for (int i = threadIdx.x; i < C; i += blockDim.x) atomicAdd(&h1[__ldcg(ckey + i) >> LOW_BITS], 1u);
    __syncthreads();
    int b1, above1;
    find_bin<HIST_BINS>(h1, need, &b1, &above1);
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        const uint32_t key = __ldcg(ckey + i);
        if ((int)(key >> LOW_BITS) == b1) atomicAdd(&h2[key & ((1u << LOW_BITS) - 1)], 1u);
    }
    __syncthreads();
    int b2, above2;
    find_bin<1 << LOW_BITS>(h2, need - above1, &b2, &above2);   // 32 bins: one per thread of the first warp
    const int T = (b1 << LOW_BITS) | b2;
    const int take_eq = need - above1 - above2, n_eq = (int)h2[b2];
    const bool all_eq = take_eq >= n_eq, ranked = !all_eq && n_eq <= EQ_CAP;
    int32_t *dst = out + above1 + above2;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        const int key = (int)__ldcg(ckey + i);
        if (key > T) out[atomicAdd(&s_hi, 1u)] = __ldcg(cpos + i);
        else if (key == T) {
            if (all_eq) dst[atomicAdd(&s_eq, 1u)] = __ldcg(cpos + i);
            else if (ranked) s_pos[atomicAdd(&s_eq, 1u)] = __ldcg(cpos + i);
        }
    }
    __syncthreads();
    if (ranked) {
        // rank = how many tied positions are smaller; positions are distinct
        for (int i = threadIdx.x; i < n_eq; i += blockDim.x) {
            const int p = s_pos[i];
            int rank = 0;
            for (int j = 0; j < n_eq; j++) rank += s_pos[j] < p;
            if (rank < take_eq) dst[rank] = p;
        }
    } else if (!all_eq) {
        // many ties: binary search for the position P with exactly take_eq tied positions below it
        int lo = 0, hi = n;   // count(< lo) < take_eq <= count(< hi)
        while (hi - lo > 1) {
            const int mid = lo + (hi - lo) / 2;
            if (threadIdx.x == 0) s_cnt = 0;
            __syncthreads();
            int local = 0;
            for (int i = threadIdx.x; i < C; i += blockDim.x) local += (int)__ldcg(ckey + i) == T && __ldcg(cpos + i) < mid;
            if (local) atomicAdd(&s_cnt, local);
            __syncthreads();
            if (s_cnt < take_eq) lo = mid; else hi = mid;
            __syncthreads();
        }
        for (int i = threadIdx.x; i < C; i += blockDim.x)
            if ((int)__ldcg(ckey + i) == T && __ldcg(cpos + i) < hi) dst[atomicAdd(&s_eq, 1u)] = __ldcg(cpos + i);
    }
}

// Fast form: the scan blocks already built the histogram of the candidates' top bits (h1, in
// shared memory here); one pass over the candidates, 8 loads in flight per thread, emits those
// above the threshold bin and keeps the bin's own in shared memory (pos, low bits) for the
// rest. Returns false, having written nothing, if the bin holds more than BIN_CAP of them.
__device__ bool select_fast(int need, int C, int n, const int32_t *cpos, const uint16_t *ckey, int32_t *out,
                            const uint32_t *h1, uint32_t *smem) {
    uint32_t *h2 = smem;                    // [32]
    uint32_t *lst = smem + 32;              // [BIN_CAP] position << LOW_BITS | low bits
    int *s_pos = (int *)(lst + BIN_CAP);    // [EQ_CAP]
    __shared__ uint32_t s_hi, s_eq, s_nb;
    int b1, above1;
    find_bin<HIST_BINS>(h1, need, &b1, &above1);
    if (b1 < 0 || (int)h1[b1] > BIN_CAP) return false;
    if (threadIdx.x < 32) h2[threadIdx.x] = 0;
    if (threadIdx.x == 0) { s_hi = 0; s_eq = 0; s_nb = 0; }
    __syncthreads();
    constexpr int UN = 8;
    for (int i0 = 0; i0 < C; i0 += UN * 256) {
        uint32_t key[UN];
        int pos[UN];
#pragma unroll
        for (int j = 0; j < UN; j++) {
            const int i = i0 + j * 256 + threadIdx.x;
            key[j] = i < C ? __ldcg(ckey + i) : 0u;
            pos[j] = i < C ? __ldcg(cpos + i) : 0;
        }
#pragma unroll
        for (int j = 0; j < UN; j++) {
            const bool ok = i0 + j * 256 + (int)threadIdx.x < C;
            const int bin = ok ? (int)(key[j] >> LOW_BITS) : -1;
            // slots by warp: one shared atomic per warp and class (same-address atomics from
            // every lane serialise; they made this loop the slowest part of the selection)
            uint32_t at;
            if (warp_slot(bin > b1, &s_hi, &at)) out[at] = pos[j];
            if (warp_slot(bin == b1, &s_nb, &at)) {
                const uint32_t low = key[j] & ((1u << LOW_BITS) - 1);
                lst[at] = ((uint32_t)pos[j] << LOW_BITS) | low;
                atomicAdd(&h2[low], 1u);
            }
        }
    }
    __syncthreads();
    int b2, above2;
    find_bin<1 << LOW_BITS>(h2, need - above1, &b2, &above2);
    const int nb = (int)s_nb, take_eq = need - above1 - above2, n_eq = (int)h2[b2];
    const bool all_eq = take_eq >= n_eq;
    int32_t *dst = out + above1 + above2;
    __shared__ uint32_t s_hi2;
    if (threadIdx.x == 0) s_hi2 = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < nb; i += blockDim.x) {
        const uint32_t e = lst[i];
        const int low = (int)(e & ((1u << LOW_BITS) - 1)), p = (int)(e >> LOW_BITS);
        if (low > b2) out[above1 + atomicAdd(&s_hi2, 1u)] = p;
        else if (low == b2) {
            if (all_eq) dst[atomicAdd(&s_eq, 1u)] = p;
            else if (n_eq <= EQ_CAP) s_pos[atomicAdd(&s_eq, 1u)] = p;
        }
    }
    __syncthreads();
    if (!all_eq) {
        if (n_eq <= EQ_CAP) {
            for (int i = threadIdx.x; i < n_eq; i += blockDim.x) {   // rank among the tied positions
                const int p = s_pos[i];
                int rank = 0;
                for (int j = 0; j < n_eq; j++) rank += s_pos[j] < p;
                if (rank < take_eq) dst[rank] = p;
            }
        } else {
            // more ties than EQ_CAP (<= BIN_CAP): rank each against the list directly
            for (int i = threadIdx.x; i < nb; i += blockDim.x) {
                const uint32_t e = lst[i];
                if ((int)(e & ((1u << LOW_BITS) - 1)) != b2) continue;
                const int p = (int)(e >> LOW_BITS);
                int rank = 0;
                for (int j = 0; j < nb; j++) {
                    const uint32_t f = lst[j];
                    rank += (int)(f & ((1u << LOW_BITS) - 1)) == b2 && (int)(f >> LOW_BITS) < p;
                }
                if (rank < take_eq) dst[rank] = p;
            }
        }
    }
    (void)n;
    return true;
}

// ---- 2. scan: scores of every position; keys at or above the threshold become candidates ----
// Each block stages its candidates in shared memory (local position << 16 | key; a chunk is
// at most 65536 positions), appends them to the unit's list with one global atomic and adds
// their histogram (top 11 key bits) to the unit's, so the list costs ~6 bytes per candidate
// instead of a key per position. The unit's last block to finish (a ticket) selects from the
// list (select_fast, else select_general) and zeroes the histogram for the next call.
template <int BITS, int WORDS>
__global__ void __launch_bounds__(256) k_scan(ds_gpu_attn_args a, int chunk, uint32_t *cnt, uint32_t *hist, int32_t *cand_pos,
                                              uint16_t *cand_key, int32_t *sel, int k_cap, int force_rescan) {
    constexpr int R = WORDS * 32 / BITS;
    extern __shared__ uint32_t stage[];   // [max(chunk, SEL_SMEM_WORDS)]
    __shared__ uint32_t sh[HIST_BINS];
    __shared__ uint32_t s_wn[8], s_base;
    __shared__ bool last;
    const int u = blockIdx.y, b = u / a.H_kv, kvh = u % a.H_kv;
    const int n = a.seq_len[b], k = k_for(n, a.tokens, a.tokens_frac);
    if (!unit_sparse(a, n, k)) return;
    const int nc = n - 1, p0 = blockIdx.x * chunk;
    if (p0 >= nc) return;
    const int p1 = min(p0 + chunk, nc);
    const uint32_t thr = cnt[C_N * u + C_THR];
    for (int i = threadIdx.x; i < HIST_BINS; i += blockDim.x) sh[i] = 0;
    float q[R], qsum;
    load_qlabel<R>(a, b, kvh, q, qsum);   // (its barrier also orders the zeroing above)
    const uint32_t *lab = (const uint32_t *)(a.labels + (size_t)u * a.n_max * WORDS * 4);
    const uint16_t *lo = a.lab_lo + (size_t)u * a.n_max, *st = a.lab_step + (size_t)u * a.n_max;
    // Warp w scores positions base + j*256 + 32w + lane, so it sees chunk/8 positions in all
    // and appends its candidates to its own segment of the staging area with a count kept in
    // a register: no atomics, nothing a warp waits for between rows. SU rows per thread are
    // loaded at once, and the next SU rows are loaded before these are scored.
    constexpr int SU = 4;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, seg = chunk / 8;
    uint32_t *mine = stage + warp * seg, wn = 0;
    uint32_t w[SU][WORDS];
    float lof[SU], stf[SU];
#pragma unroll
    for (int j = 0; j < SU; j++) {
        const int p = p0 + j * 256 + threadIdx.x;
        load_row<BITS, WORDS>(lab, lo, st, p < p1 ? p : p0, w[j], lof[j], stf[j]);   // clamped: in bounds
    }
    for (int base = p0; base < p1; base += SU * 256) {
        uint32_t key[SU];
#pragma unroll
        for (int j = 0; j < SU; j++) key[j] = score_key(row_score<BITS, WORDS>(w[j], q, qsum, lof[j], stf[j]));
        if (base + SU * 256 < p1) {
#pragma unroll
            for (int j = 0; j < SU; j++) {
                const int p = base + SU * 256 + j * 256 + threadIdx.x;
                load_row<BITS, WORDS>(lab, lo, st, p < p1 ? p : p0, w[j], lof[j], stf[j]);
            }
        }
#pragma unroll
        for (int j = 0; j < SU; j++) {
            const int p = base + j * 256 + threadIdx.x;
            const bool pass = p < p1 && key[j] >= thr;
            const uint32_t mask = __ballot_sync(0xffffffffu, pass);
            if (pass) {
                mine[wn + __popc(mask & ((1u << lane) - 1))] = ((uint32_t)(p - p0) << 16) | key[j];
                atomicAdd(&sh[key[j] >> LOW_BITS], 1u);   // no return value: nothing waits
            }
            wn += __popc(mask);
        }
    }
    if (lane == 0) s_wn[warp] = wn;
    __syncthreads();
    uint32_t m = 0, before = 0;   // candidates of the block, of the warps before this one
#pragma unroll
    for (int i = 0; i < 8; i++) { before += i < warp ? s_wn[i] : 0; m += s_wn[i]; }
    if (threadIdx.x == 0) s_base = m ? atomicAdd(&cnt[C_N * u + C_CAND], m) : 0;
    uint32_t *gh = hist + (size_t)u * HIST_BINS;
    for (int i = threadIdx.x; i < HIST_BINS; i += blockDim.x)
        if (sh[i]) atomicAdd(&gh[i], sh[i]);
    __syncthreads();
    int32_t *cp = cand_pos + (size_t)u * a.n_max + s_base + before;
    uint16_t *ck = cand_key + (size_t)u * a.n_max + s_base + before;
    for (uint32_t i = lane; i < wn; i += 32) {   // each warp copies its own segment
        const uint32_t e = mine[i];
        cp[i] = p0 + (int)(e >> 16);
        ck[i] = (uint16_t)(e & 0xffff);
    }
    // the unit's last block selects from the candidates
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&cnt[C_N * u + C_T_SCAN], 1u) == (uint32_t)((nc + chunk - 1) / chunk - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    const int need = k - 1;
    int C = (int)__ldcg(cnt + C_N * u + C_CAND);
    cp = cand_pos + (size_t)u * a.n_max;
    ck = cand_key + (size_t)u * a.n_max;
    // the unit's histogram into shared memory, zeroed for the next call
    for (int i = threadIdx.x; i < HIST_BINS; i += blockDim.x) { sh[i] = __ldcg(gh + i); gh[i] = 0; }
    __syncthreads();
    int32_t *out = sel + (size_t)u * k_cap;
    const bool rescan = C < need || force_rescan;
    if (rescan) {
        // The sampled threshold was above the true k-th key (rare by construction; forced in
        // gpu_check): every position becomes a candidate, scored again here.
        for (int p = threadIdx.x; p < nc; p += blockDim.x) {
            uint32_t w[WORDS];
            float lof, stf;
            load_row<BITS, WORDS>(lab, lo, st, p, w, lof, stf);
            cp[p] = p;
            ck[p] = (uint16_t)score_key(row_score<BITS, WORDS>(w, q, qsum, lof, stf));
        }
        C = nc;
        if (threadIdx.x == 0) cnt[C_N * u + C_RESCANS]++;
        __syncthreads();
    }
    if (need > 0 && (rescan || !select_fast(need, C, n, cp, ck, out, sh, stage))) select_general(need, C, n, cp, ck, out, stage);
    if (threadIdx.x == 0) {
        out[need] = n - 1;           // the current token is always attended
        cnt[C_N * u + C_CAND] = 0;
        cnt[C_N * u + C_T_SCAN] = 0;
    }
}

// ---- 4. attention partials over a slice of rows (selected list or contiguous) ----
// D/8 lanes hold one row (16 bytes each); a warp covers RPW = 256/D rows per step and UNROLL
// steps are loaded before use, so each lane has 2*UNROLL 16-byte loads in flight.
template <int D, int G>
__global__ void __launch_bounds__(ATT_THREADS) k_attn(ds_gpu_attn_args a, const int32_t *sel, int k_cap, int slice,
                                                      int splits, float *pacc, float *pml, uint32_t *cnt) {
    constexpr int LPR = D / 8, RPW = 32 / LPR, UNROLL = 4, WARPS = ATT_THREADS / 32;
    constexpr int ROWS_PER_ITER = WARPS * RPW * UNROLL;
    const int u = blockIdx.y, b = u / a.H_kv, kvh = u % a.H_kv, split_i = blockIdx.x;
    const int n = a.seq_len[b];
    const int k = sel ? k_for(n, a.tokens, a.tokens_frac) : n;
    const bool sparse = sel && unit_sparse(a, n, k);
    const int items = sparse ? k : n;
    const int s0 = split_i * slice;
    if (s0 >= items) return;
    const int s1 = min(s0 + slice, items);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane / LPR, cl = lane % LPR;   // row within the warp step, 8-channel chunk
    const float LOG2E = 1.4426950408889634f;
    float q[G][8];
#pragma unroll
    for (int g = 0; g < G; g++) {
        uint4 v = *(const uint4 *)(a.q + ((size_t)b * a.H + kvh * G + g) * D + cl * 8);
        const __half2 *h = (const __half2 *)&v;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = __half22float2(h[i]);
            q[g][2 * i] = f.x * a.scale * LOG2E;
            q[g][2 * i + 1] = f.y * a.scale * LOG2E;
        }
    }
    float m[G], l[G], acc[G][8];
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = -INFINITY; l[g] = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[g][i] = 0;
    }
    const size_t kvu = a.kv_batch_shared ? (size_t)kvh : (size_t)u;   // prefill rows share one cache
    const uint16_t *K = a.k + kvu * a.n_max * D, *V = a.v + kvu * a.n_max * D;
    const int32_t *idx = sparse ? sel + (size_t)u * k_cap : nullptr;
    // the selected positions of the next iteration are loaded while this one's rows are in
    // flight: otherwise every iteration waits for two dependent round trips (index, then row)
    int nxt[UNROLL];
#pragma unroll
    for (int j = 0; j < UNROLL; j++) {
        const int it = s0 + (j * WARPS + warp) * RPW + sub;
        nxt[j] = it < s1 ? (idx ? __ldcg(idx + it) : it) : 0;
    }
    for (int base = s0; base < s1; base += ROWS_PER_ITER) {
        uint4 kv[UNROLL], vv[UNROLL];
        bool ok[UNROLL];
#pragma unroll
        for (int j = 0; j < UNROLL; j++) {
            int it = base + (j * WARPS + warp) * RPW + sub;
            ok[j] = it < s1;
            int pos = nxt[j];
            if (ok[j]) {
                kv[j] = __ldg((const uint4 *)(K + (size_t)pos * D + cl * 8));
                vv[j] = __ldg((const uint4 *)(V + (size_t)pos * D + cl * 8));
            } else {
                kv[j] = make_uint4(0, 0, 0, 0);
                vv[j] = kv[j];
            }
        }
#pragma unroll
        for (int j = 0; j < UNROLL; j++) {
            const int it = base + ROWS_PER_ITER + (j * WARPS + warp) * RPW + sub;
            nxt[j] = it < s1 ? (idx ? __ldcg(idx + it) : it) : 0;
        }
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
    // combine the WARPS*RPW row streams of this block
    constexpr int STREAMS = WARPS * RPW;
    __shared__ float sm_m[STREAMS][G], sm_l[STREAMS][G];
    __shared__ float sm_acc[STREAMS][G][D];
    const int stream = warp * RPW + sub;
#pragma unroll
    for (int g = 0; g < G; g++) {
        if (cl == 0) { sm_m[stream][g] = m[g]; sm_l[stream][g] = l[g]; }
#pragma unroll
        for (int i = 0; i < 8; i++) sm_acc[stream][g][cl * 8 + i] = acc[g][i];
    }
    __syncthreads();
    const size_t pbase = ((size_t)u * G) * splits;
    for (int e = threadIdx.x; e < G * D; e += ATT_THREADS) {
        const int g = e / D, c = e % D;
        float M = -INFINITY;
        for (int st = 0; st < STREAMS; st++) M = fmaxf(M, sm_m[st][g]);
        float L = 0, A = 0;
        if (M != -INFINITY)
            for (int st = 0; st < STREAMS; st++) {
                float w = exp2f(sm_m[st][g] - M);
                L += sm_l[st][g] * w;
                A += sm_acc[st][g][c] * w;
            }
        const size_t pi = pbase + (size_t)g * splits + split_i;
        pacc[pi * D + c] = A;
        if (c == 0) { pml[2 * pi] = M; pml[2 * pi + 1] = L; }
    }
    // The unit's last block merges all slices (log-sum-exp) and writes the output.
    const int ns = (items + slice - 1) / slice;
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&cnt[C_N * u + C_T_ATTN], 1u) == (uint32_t)(ns - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int e = threadIdx.x; e < G * D; e += ATT_THREADS) {
        const int g = e / D, c = e % D;
        const size_t pb = pbase + (size_t)g * splits;
        float M = -INFINITY;
        for (int i = 0; i < ns; i++) M = fmaxf(M, __ldcg(pml + 2 * (pb + i)));
        float L = 0, A = 0;
#pragma unroll 4
        for (int i = 0; i < ns; i++) {
            const float w = exp2f(__ldcg(pml + 2 * (pb + i)) - M);
            L += __ldcg(pml + 2 * (pb + i) + 1) * w;
            A += __ldcg(pacc + (pb + i) * D + c) * w;
        }
        a.out[((size_t)b * a.H + kvh * G + g) * D + c] = f2h(L > 0 ? A / L : 0.0f);
    }
    if (threadIdx.x == 0) cnt[C_N * u + C_T_ATTN] = 0;
}

template <int D, int G>
int launch_attn(const ds_gpu_attn_args *a, const Plan &p, char *ws, bool sparse, cudaStream_t st) {
    const int slice = sparse ? p.slice_s : p.slice_d, splits = sparse ? p.splits_s : p.splits_d;
    float *pacc = (float *)(ws + p.off_pacc), *pml = (float *)(ws + p.off_pml);
    const int32_t *sel = sparse ? (const int32_t *)(ws + p.off_sel) : nullptr;
    k_attn<D, G><<<dim3(splits, p.U), ATT_THREADS, 0, st>>>(*a, sel, p.k_cap, slice, p.splits_max, pacc, pml,
                                                            (uint32_t *)(ws + p.off_cnt));
    return (int)cudaGetLastError();
}

template <int D>
int attn_by_group(const ds_gpu_attn_args *a, const Plan &p, char *ws, bool sparse, cudaStream_t st) {
    switch (p.G) {
    case 1: return launch_attn<D, 1>(a, p, ws, sparse, st);
    case 2: return launch_attn<D, 2>(a, p, ws, sparse, st);
    case 3: return launch_attn<D, 3>(a, p, ws, sparse, st);
    case 4: return launch_attn<D, 4>(a, p, ws, sparse, st);
    case 5: return launch_attn<D, 5>(a, p, ws, sparse, st);
    case 6: return launch_attn<D, 6>(a, p, ws, sparse, st);
    case 7: return launch_attn<D, 7>(a, p, ws, sparse, st);
    case 8: return launch_attn<D, 8>(a, p, ws, sparse, st);
    default: return (int)cudaErrorInvalidValue;
    }
}

int run_attn(const ds_gpu_attn_args *a, const Plan &p, char *ws, bool sparse, cudaStream_t st) {
    if (a->d == 128) return attn_by_group<128>(a, p, ws, sparse, st);
    if (a->d == 64) return attn_by_group<64>(a, p, ws, sparse, st);
    return (int)cudaErrorInvalidValue;
}

bool args_ok(const ds_gpu_attn_args *a) {
    return a && a->B > 0 && a->H_kv > 0 && a->H % a->H_kv == 0 && a->H / a->H_kv <= 8 &&
           (a->d == 64 || a->d == 128) && a->max_len > 0 && a->max_len <= a->n_max &&
           a->n_max < (1 << (32 - LOW_BITS));
}

template <int BITS, int WORDS>
int launch_select(const ds_gpu_attn_args *a, const Plan &p, char *ws, int parts, cudaStream_t st) {
    uint32_t *cnt = (uint32_t *)(ws + p.off_cnt);
    if (parts & 1) k_sample<BITS, WORDS><<<p.U, 256, 0, st>>>(*a, cnt);
    if (parts & 2) {
        const size_t smem = (size_t)(p.chunk > SEL_SMEM_WORDS ? p.chunk : SEL_SMEM_WORDS) * 4;
        k_scan<BITS, WORDS><<<dim3(p.n_chunks, p.U), 256, smem, st>>>(*a, p.chunk, cnt, (uint32_t *)(ws + p.off_hist),
                                                                       (int32_t *)(ws + p.off_cpos),
                                                                       (uint16_t *)(ws + p.off_ckey), (int32_t *)(ws + p.off_sel),
                                                                       p.k_cap, tune("rescan", 0) == 1);
    }
    return (int)cudaGetLastError();
}

// Label shapes with a fast path: rows of 8, 16 or 32 bytes (every "1/16 of the key bits"
// setting at head_dim 64 and 128, and 1/8 at 64).
int select_dispatch(const ds_gpu_attn_args *a, const Plan &p, char *ws, int parts, cudaStream_t st) {
    const int bytes = a->bits == 16 ? 2 * a->r : (a->r * a->bits + 7) / 8;
    const int words = bytes / 4;
    if (bytes % 4 || (a->r * a->bits) % 32) return (int)cudaErrorInvalidValue;
#define SC(B_, W_) if (a->bits == B_ && words == W_) return launch_select<B_, W_>(a, p, ws, parts, st);
    SC(16, 2) SC(16, 4) SC(16, 8) SC(8, 2) SC(8, 4) SC(8, 8) SC(4, 2) SC(4, 4) SC(4, 8) SC(2, 2) SC(2, 4) SC(2, 8)
#undef SC
    return (int)cudaErrorInvalidValue;
}

}  // namespace

extern "C" {

size_t ds_gpu_attn_workspace_bytes(const ds_gpu_attn_args *a) {
    if (!args_ok(a)) return 0;
    return make_plan(a).total;
}

int ds_gpu_attn_workspace_init(void *ws, const ds_gpu_attn_args *a, void *stream) {
    if (!args_ok(a)) return (int)cudaErrorInvalidValue;
    Plan p = make_plan(a);
    return (int)cudaMemsetAsync(ws, 0, p.total, (cudaStream_t)stream);
}

int ds_gpu_attn_dense(const ds_gpu_attn_args *a, void *ws, void *stream) {
    if (!args_ok(a)) return (int)cudaErrorInvalidValue;
    Plan p = make_plan(a);
    return run_attn(a, p, (char *)ws, false, (cudaStream_t)stream);
}

// parts: 1 = sample, 2 = scan + selection, 4 = attention. Anything but 7 is for timing the
// stages (bench/gpu/op_bench.py) and may leave the workspace inconsistent: re-initialise it
// afterwards.
int ds_gpu_attn_ds_parts(const ds_gpu_attn_args *a, void *ws_, void *stream, int parts) {
    if (!args_ok(a) || a->r < 1 || a->r > a->d) return (int)cudaErrorInvalidValue;
    Plan p = make_plan(a);
    char *ws = (char *)ws_;
    cudaStream_t st = (cudaStream_t)stream;
    int e = 0;
    if ((parts & 3) && (e = select_dispatch(a, p, ws, parts, st))) return e;
    return (parts & 4) ? run_attn(a, p, ws, true, st) : 0;
}

int ds_gpu_attn_ds(const ds_gpu_attn_args *a, void *ws, void *stream) {
    return ds_gpu_attn_ds_parts(a, ws, stream, 7);
}

int ds_gpu_label_build(const ds_gpu_attn_args *a, int pos0, int pos1, void *stream) {
    if (!args_ok(a) || pos0 < 0 || pos1 > a->n_max || pos0 >= pos1) return (int)cudaErrorInvalidValue;
    const int rb = a->bits == 16 ? 2 * a->r : (a->r * a->bits + 7) / 8;
    long rows = (long)a->B * a->H_kv * (pos1 - pos0);
    k_label_build<<<(unsigned)((rows + 255) / 256), 256, 0, (cudaStream_t)stream>>>(*a, pos0, pos1, rb);
    return (int)cudaGetLastError();
}

const int32_t *ds_gpu_attn_selected(const void *ws, const ds_gpu_attn_args *a, int *k_cap) {
    if (!args_ok(a)) return nullptr;
    Plan p = make_plan(a);
    if (k_cap) *k_cap = p.k_cap;
    return (const int32_t *)((const char *)ws + p.off_sel);
}

long ds_gpu_attn_rescans(const void *ws, const ds_gpu_attn_args *a) {
    if (!args_ok(a)) return -1;
    Plan p = make_plan(a);
    const int Ucap = (a->ws_batch > a->B ? a->ws_batch : a->B) * a->H_kv;
    uint32_t *h = (uint32_t *)malloc((size_t)Ucap * C_N * 4);
    if (!h) return -1;
    long total = -1;
    if (cudaMemcpy(h, (const char *)ws + p.off_cnt, (size_t)Ucap * C_N * 4, cudaMemcpyDeviceToHost) == cudaSuccess) {
        total = 0;
        for (int u = 0; u < Ucap; u++) total += h[(size_t)u * C_N + C_RESCANS];
    }
    free(h);
    return total;
}

const char *ds_gpu_error_string(int err) { return cudaGetErrorString((cudaError_t)err); }

}  // extern "C"
