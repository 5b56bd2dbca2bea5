// attn.cu — GPU decode attention: dense split-KV, and Double Sparsity (label scan -> radix
// top-k -> attention over the selected rows). Declarations and layouts: src/backend.h.
//
// Bytes decide everything here (performance.md). Per (sequence, KV head) and step:
//   dense: 2 * n * d * 2 bytes of K and V;
//   DS:    n * row_bytes (+4 for lo/step below 16 bits) of labels, 2 * k * d * 2 of selected
//          rows, plus 4 bytes per position for the score keys (written once as fp16, read once).
// Pipeline of one DS call (all on the device, no host sync, graph-capturable):
//   1-3. k_select: one thread-block cluster (CL <= 8 blocks) per (sequence, KV head). Each
//        block scores a 1/CL share of the labels in one pass: score = (sum over the group's
//        query heads of q[chan]) . label, stored as a 16-bit order-preserving key, counted in
//        a 2048-bin shared-memory histogram of the key's top 11 bits. The cluster sums its
//        histograms through distributed shared memory; every block finds the threshold bin,
//        re-reads its keys and emits the positions above the bin, and those inside it go to a
//        candidate list (typically 1-2% of n). The leader block finishes the selection on the candidates'
//        low 5 key bits (ties: lowest position first) and appends the current token.
//   4.   k_attn: split over the selected rows, each block a slice; a KV row is read once and
//        used by every query head of its group (GQA shared); online softmax; the unit's last
//        block merges the slices (log-sum-exp). With long caches the two kernels are linked by
//        a ready queue: each cluster's leader appends its unit when the selection is done, and
//        k_attn blocks take (unit, slice) items in that order, so attention starts unit by unit
//        instead of after the whole selection grid.
// Two launches in all. The two-kernel selection it replaced (k_score with a global histogram
// and a "last block" ticket, then k_collect) stays for comparison (DSINFER_GPU_TUNE split=1).
// The dense path is step 4 over the contiguous range. Short caches take attn_fused.cu's one kernel
// instead (run_fused). With grouped queries (G >= 2) step 4 runs on the tensor cores instead
// (k_attn_mma, attn_mma.cu: same workspace and contract).
#include "attn_impl.cuh"

#define EQ_CAP 1024      // tied keys at the threshold ranked in shared memory up to this many

namespace {

using namespace dsattn;

size_t align_up(size_t x) { return (x + 255) & ~(size_t)255; }

// Split `items` rows into slices of at least 64 rows (a multiple of 32) over `per_unit` blocks
// per unit.
void split_rows(int items, int per_unit, int *slice, int *splits) {
    const int max_splits = (items + 63) / 64;
    if (per_unit > max_splits) per_unit = max_splits;
    if (per_unit < 1) per_unit = 1;
    int s = (items + per_unit - 1) / per_unit;
    s = (s + 31) / 32 * 32;
    if (s < 32) s = 32;
    *slice = s;
    *splits = (items + s - 1) / s;
    if (*splits < 1) *splits = 1;
}

// per_sm blocks per SM over the whole grid. Dense attention uses 4 (measured best for long
// contiguous streams, where more blocks only add merge traffic).
void split_per_sm(int items, int units, int per_sm, int *slice, int *splits) {
    const int target = per_sm * sm_count();
    split_rows(items, (target + units - 1) / units, slice, splits);
}

template <int D, int G, bool PIPE = false, bool RQ = false>
__global__ void __launch_bounds__(ATT_THREADS) k_attn(ds_gpu_attn_args a, const int32_t *sel, int k_cap, int slice,
                                                      int splits, float *pacc, float *pml, uint32_t *cnt, uint32_t *rq);

// Sparse attention software-pipelined (k_attn PIPE) unless DSINFER_GPU_TUNE aplain=1. Measured
// level or 1-3% faster at every op-bench shape with half the resident blocks (114 registers);
// dense attention, already at its floor, stays as it was.
bool attn_pipe() {
    static const int on = tune("aplain", 0) > 0 ? 0 : 1;
    return on;
}

// Blocks of step 4's kernel for (d, G) resident per SM (occupancy API, cached): k_attn, or
// k_attn_mma where grouped queries take the tensor cores.
int attn_resident(int d, int G) {
    static int cache[2][9];
    const int di = d == 128 ? 0 : 1;
    if (G < 1 || G > 8) return 4;
    if (attn_mma_applies(d, G)) return attn_mma_resident(d, G);
    if (!cache[di][G]) {
        int n = 0;
        const void *fn = nullptr;
#define AF(D_, G_) if (d == D_ && G == G_) fn = attn_pipe() ? (const void *)k_attn<D_, G_, true, true> : (const void *)k_attn<D_, G_, false>;
        AF(128, 1) AF(128, 2) AF(128, 3) AF(128, 4) AF(128, 5) AF(128, 6) AF(128, 7) AF(128, 8)
        AF(64, 1) AF(64, 2) AF(64, 3) AF(64, 4) AF(64, 5) AF(64, 6) AF(64, 7) AF(64, 8)
#undef AF
        if (!fn || cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, fn, ATT_THREADS, 0) != cudaSuccess || n < 1) n = 4;
        cache[di][G] = n < ATT_MAX_RESIDENT ? n : ATT_MAX_RESIDENT;
    }
    return cache[di][G];
}

// Sparse: the selected rows of a unit are few (k), so the call is short and its cost is the
// latency chain of each block: as many blocks as fit on the GPU at once (one full wave),
// never more (a second, partial wave made the attention stage 13% slower at B=8, n=64K).
void split_sparse(int items, int units, int d, int G, int *slice, int *splits) {
    const int forced = tune("satt", 0);
    if (forced) return split_per_sm(items, units, forced, slice, splits);
    split_rows(items, attn_resident(d, G) * sm_count() / units, slice, splits);
}

Plan make_plan(const ds_gpu_attn_args *a) {
    Plan p;
    p.U = a->B * a->H_kv;
    const int Ucap = (a->ws_batch > a->B ? a->ws_batch : a->B) * a->H_kv;   // workspace layout
    p.G = a->H / a->H_kv;
    int kc = k_for(a->max_len, a->tokens, a->tokens_frac);
    p.k_cap = kc < a->max_len ? kc : a->max_len;
    // scoring: 256 threads x 8 positions, fewer when the grid would be too small
    p.chunk = tune("chunk", 8192);
    while (p.chunk > 256 && (long)p.U * ((a->max_len + p.chunk - 1) / p.chunk) < 4L * sm_count()) p.chunk /= 2;
    p.n_chunks = (a->max_len + p.chunk - 1) / p.chunk;
    // collect: few, large blocks (each one scans the 2048-bin histogram), yet enough of them
    p.collect_per = tune("per", 16);
    if (p.collect_per != 32 && p.collect_per != 16 && p.collect_per != 8) p.collect_per = 32;
    while (p.collect_per > 8 && (long)p.U * ((a->max_len + 256 * p.collect_per - 1) / (256 * p.collect_per)) < 2L * sm_count())
        p.collect_per /= 2;
    if (attn_mma_applies(a->d, p.G) && !tune("att", 0)) {
        // the tensor-core kernel (2 blocks per SM at d = 128): whole waves of it, one unless
        // DSINFER_GPU_TUNE mw=N, with slices of at least 128 rows (a partial second wave, or
        // slices so short that the merge dominates, measured up to 1.4x slower: bench/NOTES.md)
        const int per_unit = attn_mma_resident(a->d, p.G) * sm_count() * tune("mw", 1) / p.U;
        const int most = (a->max_len + 127) / 128;
        split_rows(a->max_len, per_unit < most ? per_unit : most, &p.slice_d, &p.splits_d);
    } else
        split_per_sm(a->max_len, p.U, tune("att", 4), &p.slice_d, &p.splits_d);
    split_sparse(p.k_cap, p.U, a->d, p.G, &p.slice_s, &p.splits_s);
    p.splits_max = p.splits_d > p.splits_s ? p.splits_d : p.splits_s;
    size_t o = 0;
    p.kstride = (a->n_max + 7) / 8 * 8;
    p.off_keys = o; o = align_up(o + (size_t)Ucap * p.kstride * 2);
    p.off_cand = o; o = align_up(o + (size_t)Ucap * a->n_max * 4);
    p.off_hist = o;   // the global histograms of the two-kernel selection (split=1) only
    if (tune("split", 0)) o = align_up(o + (size_t)Ucap * HIST_BINS * 4);
    p.off_cnt = o;  o = align_up(o + (size_t)Ucap * C_N * 4);
    p.off_rq = o;   o = align_up(o + (size_t)(RQ_SLOTS + Ucap) * 4);
    p.off_sel = o;  o = align_up(o + (size_t)Ucap * p.k_cap * 4);
    // slices: the splits keep U * splits <= their block target + U, so this bound holds for any
    // B up to Ucap (the layout above must not depend on B)
    int most = tune("att", 4);
    if (tune("satt", 0) > most) most = tune("satt", 0);
    if (ATT_MAX_RESIDENT * tune("mw", 1) > most) most = ATT_MAX_RESIDENT * tune("mw", 1);   // mw >= 1
    const size_t slices = (size_t)most * sm_count() + Ucap;
    p.off_pacc = o; o = align_up(o + slices * p.G * a->d * 4);
    p.off_pml = o;  o = align_up(o + slices * p.G * 2 * 4);
    p.total = o;
    return p;
}

// keys: written and read back by other threads of the same call (volatile: kept in order
// around the barriers between)
__device__ __forceinline__ void st_key(uint16_t *ptr, uint16_t v, uint64_t pol) {
    if constexpr (!SEL_HINT) { *ptr = v; return; }
    asm volatile("st.global.L2::cache_hint.b16 [%0], %1, %2;" ::"l"(ptr), "h"(v), "l"(pol) : "memory");
}
__device__ __forceinline__ uint4 ld_keys(const uint16_t *ptr, uint64_t pol) {
    if constexpr (!SEL_HINT) return __ldcg((const uint4 *)ptr);
    uint4 v;
    asm volatile("ld.global.cg.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(ptr), "l"(pol) : "memory");
    return v;
}

// ---- label build: one thread per (unit, position) row ----
// One warp per label row (label_encode_row_warp, the encoder the decode step uses), so the
// bit-for-bit check against ds_label_encode covers that encoder.
__global__ void k_label_build(ds_gpu_attn_args a, int pos0, int pos1, int row_bytes) {
    dsgpu::pdl_trigger();
    dsgpu::pdl_wait();
    long i = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;   // warp-uniform
    int span = pos1 - pos0;
    long U = (long)a.B * a.H_kv;
    if (i >= U * span) return;
    int u = (int)(i / span), p = pos0 + (int)(i % span);
    size_t row = (size_t)u * a.n_max + p;
    const size_t at = (size_t)(u % a.H_kv) * a.r;
    dsgpu::label_encode_row_warp(a.k + row * a.d, a.chan + at, a.lab_mean ? a.lab_mean + at : nullptr,
                                 a.lab_scale ? a.lab_scale + at : nullptr, a.r, a.bits, row_bytes,
                                 a.labels + row * row_bytes, a.lab_lo + row, a.lab_step + row);
}


// ---- 1. scores -> keys + histogram ----
// Variants for benchmark builds: SCORE_SU rows per thread in flight; SCORE_HIST 0 = one shared
// atomic per key, 1 = one per distinct bin of a warp, 2 = no histogram (timing only: selects
// nothing but the current token).
#ifndef SCORE_SU
#define SCORE_SU 4
#endif
#ifndef SCORE_HIST
#define SCORE_HIST 0
#endif
#ifndef SCORE_DOT
// 4- and 2-bit codes in score_rows: 2 = integer dot products (dp2a) with q quantised to int16;
// 1 = as floats 0.5 + c/256 (one byte permute each); 0 = via 2^23, as 8 bits
#define SCORE_DOT 2
#endif

// Scores of unit u's label rows [p0, p1) (256 threads): keys to kk, counts to the shared
// histogram sh. WORDS: 32-bit words per label row (row_bytes / 4); BITS: label bits.
template <int BITS, int WORDS, int SU = SCORE_SU>
__device__ __forceinline__ void score_rows(const ds_gpu_attn_args &a, int u, int p0, int p1, const float *q, float qsum,
                                           uint16_t *kk, uint32_t *sh) {
    const uint64_t pol_first = l2_evict_first(), pol_last = l2_evict_last();
    const uint32_t *lab = (const uint32_t *)(a.labels + (size_t)u * a.n_max * WORDS * 4);
    const uint16_t *lo = a.lab_lo + (size_t)u * a.n_max, *st = a.lab_step + (size_t)u * a.n_max;
    // SCORE_DOT 2: 4- and 2-bit codes by dp2a against q in int16 pairs (CodeDot, attn_impl.cuh)
    using CD = CodeDot<BITS, WORDS>;
    constexpr bool IDOT = SCORE_DOT == 2 && CD::ON;
    int qp[CD::NP];
    float qstep = 0;
    if constexpr (IDOT) qstep = CD::pack([&](int j) { return q[j]; }, qp);
    // SU rows per thread in flight: their loads are all issued before the first is used
    for (int base = p0; base < p1; base += SU * 256) {
        uint32_t w[SU][WORDS];
        float lof[SU], stf[SU];
#pragma unroll
        for (int u4 = 0; u4 < SU; u4++) {
            const int p = base + u4 * 256 + threadIdx.x;
            const int pc = p < p1 ? p : p0;   // clamp: loads stay in bounds, results unused
            if constexpr (WORDS % 4 == 0) {
#pragma unroll
                for (int i = 0; i < WORDS; i += 4) {
                    const uint4 v = ld_stream((const uint4 *)(lab + (size_t)pc * WORDS + i), pol_first);
                    w[u4][i] = v.x; w[u4][i + 1] = v.y; w[u4][i + 2] = v.z; w[u4][i + 3] = v.w;
                }
            } else {
                static_assert(WORDS == 2, "label rows of 8, 16 or 32 bytes (score_dispatch)");
                const uint2 v = ld_stream((const uint2 *)(lab + (size_t)pc * 2), pol_first);
                w[u4][0] = v.x; w[u4][1] = v.y;
            }
            if constexpr (BITS != 16) {
                lof[u4] = h2f(ld_stream(lo + pc, pol_first));
                stf[u4] = h2f(ld_stream(st + pc, pol_first));
            }
            else { lof[u4] = 0; stf[u4] = 0; }
        }
#pragma unroll
        for (int u4 = 0; u4 < SU; u4++) {
            const int p = base + u4 * 256 + threadIdx.x;
            float s = 0;
            if constexpr (BITS == 16) {
#pragma unroll
                for (int i = 0; i < WORDS; i++) {
                    float2 f = __half22float2(*(const __half2 *)&w[u4][i]);
                    s = fmaf(q[2 * i], f.x, s);
                    s = fmaf(q[2 * i + 1], f.y, s);
                }
            } else {
                // Codes to floats without I2F (a quarter-rate instruction that made this kernel
                // compute-bound at 4 bits): mask the codes into bytes and drop each byte into a
                // float's mantissa with one byte permute. 8 bits: into 2^23 (then subtract it).
                // 4 and 2 bits (SCORE_DOT 1): into bit 16 up of 0.5, i.e. f = 0.5 + c/256, summed
                // as they are, so dot = sum q f = qsum/2 + (sum q c)/256 costs a permute and an
                // FMA per code; the half-offset is removed once per row (fp32 keeps ~20 of its
                // 24 bits through that subtraction; the keys hold 11).
                constexpr int PER = 32 / BITS, PLANES = 8 / BITS;
                constexpr uint32_t M = BITS == 8 ? 0xffffffffu : BITS == 4 ? 0x0f0f0f0fu : 0x03030303u;
                constexpr bool HALF = SCORE_DOT >= 1 && BITS <= 4 && !IDOT;
                float dot = 0;
                if constexpr (IDOT) {
                    dot = CD::dot(w[u4], qp, qstep);
                } else
#pragma unroll
                for (int i = 0; i < WORDS; i++)
#pragma unroll
                    for (int pl = 0; pl < PLANES; pl++) {
                        const uint32_t bytes = (w[u4][i] >> (pl * BITS)) & M;
#pragma unroll
                        for (int j = 0; j < 4; j++) {
                            const float c = HALF ? __int_as_float(__byte_perm(bytes, 0x3F000000u, 0x7054u + (j << 8)))
                                                 : __int_as_float(__byte_perm(bytes, 0x4B000000u, 0x7650u + j)) - 8388608.0f;
                            dot = fmaf(q[i * PER + j * PLANES + pl], c, dot);
                        }
                    }
                if (HALF) dot = 256.0f * (dot - 0.5f * qsum);
                s = stf[u4] * dot + lof[u4] * qsum;
            }
#if SCORE_HIST == 1
            // warp-aggregated: one shared atomic per distinct bin of the warp
            const uint32_t key = p < p1 ? score_key(s) : 0xffffffffu;
            if (p < p1) st_key(kk + p, (uint16_t)key, pol_last);
            const uint32_t same = __match_any_sync(0xffffffffu, key >> LOW_BITS);
            if (p < p1 && (threadIdx.x & 31) == __ffs(same) - 1) atomicAdd(&sh[key >> LOW_BITS], (uint32_t)__popc(same));
#else
            if (p < p1) {
                uint32_t key = score_key(s);
                st_key(kk + p, (uint16_t)key, pol_last);
                if (SCORE_HIST == 0) atomicAdd(&sh[key >> LOW_BITS], 1u);
            }
#endif
        }
    }
}

// ---- 1'. the group score by the largest head (ds_gpu_attn_args.group_max) ----
// The CPU's ds_group_max: each query head h of the group scores a position with its own labels
// (s_h), and the position's score is max over h of (s_h - max over the scored positions of
// s_h), so every head's best position scores 0 whatever the scale of its logits. In k_select
// that is two passes over the block's label rows: the heads' maxima (reduced over the cluster
// through distributed shared memory), then the shifted scores as keys. Each pass keeps SU rows
// per thread in flight and takes the heads one at a time over them, so a head's query (int16
// pairs for dp2a at 4 and 2 bits, as score_rows; floats in shared memory otherwise) is read
// once per SU rows. The first pass keeps the rows in L2 for the second.

// Each head's query for the scan (group_max_scan): packed pairs, rounding step and label sum.
template <int BITS, int WORDS>
struct GroupQueries {
    static constexpr int GM = 8;   // heads per group at most (ds_gpu_attn_args checks)
    int qp[GM][CodeDot<BITS, WORDS>::NP];   // first: 16-byte aligned with the struct
    float step[GM], qsum[GM];
};

// One pass over unit u's label rows [p0, p1), SU per thread at a time: head(j, g, s) with the
// score s of the j-th row for head g < G, then row(j, p) once per row (rows past p1 are row p0
// again, so a running maximum needs no test). The queries are read from shared memory by
// volatile loads at each use: left to the compiler, it hoisted all G heads' out of the loop
// and spilled. ql: [G][R] the heads' query labels (shared).
template <int BITS, int WORDS, int SU, typename H, typename F>
__device__ __forceinline__ void group_max_scan(const ds_gpu_attn_args &a, int u, int p0, int p1, int G, const float *ql,
                                               const GroupQueries<BITS, WORDS> &gq, uint64_t pol, H head, F row) {
    using CD = CodeDot<BITS, WORDS>;
    constexpr bool IDOT = SCORE_DOT == 2 && CD::ON;
    constexpr int R = WORDS * 32 / BITS, GM = GroupQueries<BITS, WORDS>::GM;
    const uint32_t *lab = (const uint32_t *)(a.labels + (size_t)u * a.n_max * WORDS * 4);
    const uint16_t *lo = a.lab_lo + (size_t)u * a.n_max, *st = a.lab_step + (size_t)u * a.n_max;
    for (int base = p0; base < p1; base += SU * 256) {
        uint32_t w[SU][WORDS];
        float lof[SU], stf[SU];
#pragma unroll
        for (int j = 0; j < SU; j++) {
            const int p = base + j * 256 + threadIdx.x, pc = p < p1 ? p : p0;
            if constexpr (WORDS % 4 == 0) {
#pragma unroll
                for (int i = 0; i < WORDS; i += 4) {
                    const uint4 v = ld_stream((const uint4 *)(lab + (size_t)pc * WORDS + i), pol);
                    w[j][i] = v.x; w[j][i + 1] = v.y; w[j][i + 2] = v.z; w[j][i + 3] = v.w;
                }
            } else {
                const uint2 v = ld_stream((const uint2 *)(lab + (size_t)pc * 2), pol);
                w[j][0] = v.x; w[j][1] = v.y;
            }
            lof[j] = BITS == 16 ? 0.0f : h2f(ld_stream(lo + pc, pol));
            stf[j] = BITS == 16 ? 0.0f : h2f(ld_stream(st + pc, pol));
        }
#pragma unroll
        for (int g = 0; g < GM; g++) {
            if (g >= G) break;
            if constexpr (IDOT) {
                int qp[CD::NP];
#pragma unroll
                for (int i = 0; i < CD::NP; i += 4) {
                    const int4 v = lds_v4(&gq.qp[g][i]);
                    qp[i] = v.x; qp[i + 1] = v.y; qp[i + 2] = v.z; qp[i + 3] = v.w;
                }
                const float step = lds_f32(&gq.step[g]), qs = lds_f32(&gq.qsum[g]);
#pragma unroll
                for (int j = 0; j < SU; j++) head(j, g, stf[j] * CD::dot(w[j], qp, step) + lof[j] * qs);
            } else {
                const float qs = BITS == 16 ? 0.0f : lds_f32(&gq.qsum[g]);
#pragma unroll
                for (int j = 0; j < SU; j++) {
                    const float dot = label_dot<BITS, WORDS, true>(w[j], ql + g * R);
                    head(j, g, BITS == 16 ? dot : stf[j] * dot + lof[j] * qs);
                }
            }
        }
#pragma unroll
        for (int j = 0; j < SU; j++) row(j, base + j * 256 + threadIdx.x);
    }
}

// The group-max keys of rows [p0, p1) of unit u into kk and the histogram sh, by one block of
// a cluster whose blocks split [0, nc) between them (all of them call this). ql: [G][R] the
// heads' query labels (shared); hm: 2 * 8 floats of shared scratch.
template <int BITS, int WORDS, int SU>
__device__ void score_rows_group_max(const ds_gpu_attn_args &a, int u, int p0, int p1, const float *ql, float *hm,
                                     uint16_t *kk, uint32_t *sh, cg::cluster_group &cl) {
    using CD = CodeDot<BITS, WORDS>;
    using GQ = GroupQueries<BITS, WORDS>;
    constexpr int R = WORDS * 32 / BITS, GM = GQ::GM;
    const int G = a.H / a.H_kv, CL = (int)cl.num_blocks();
    __shared__ __align__(16) GQ gq;
    if (threadIdx.x < G) {   // a thread per head packs its query
        const int g = threadIdx.x;
        float qs = 0;
        for (int j = 0; j < R; j++) qs += ql[g * R + j];
        gq.qsum[g] = qs;
        if constexpr (SCORE_DOT == 2 && CD::ON) {
            int qp[CD::NP];
            gq.step[g] = CD::pack([&](int j) { return ql[g * R + j]; }, qp);
#pragma unroll
            for (int i = 0; i < CD::NP; i++) gq.qp[g][i] = qp[i];
        }
    }
    __syncthreads();
    // pass 1: each head's largest score over this block's rows
    float mx[GM];
#pragma unroll
    for (int g = 0; g < GM; g++) mx[g] = -INFINITY;
    group_max_scan<BITS, WORDS, SU>(
        a, u, p0, p1, G, ql, gq, l2_evict_last(), [&](int, int g, float s) { mx[g] = fmaxf(mx[g], s); }, [](int, int) {});
    __shared__ float part[8][GM];   // [warp][head]
#pragma unroll
    for (int g = 0; g < GM; g++) {
        float v = mx[g];
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5][g] = v;
    }
    __syncthreads();
    if (threadIdx.x < GM) {
        float v = -INFINITY;
        for (int i = 0; i < 8; i++) v = fmaxf(v, part[i][threadIdx.x]);
        hm[threadIdx.x] = v;   // this block's maxima
    }
    cl.sync();   // every block's maxima are written
    if (threadIdx.x < GM) {
        float v = -INFINITY;
        for (int r = 0; r < CL; r++) v = fmaxf(v, *cl.map_shared_rank(&hm[threadIdx.x], r));
        hm[GM + threadIdx.x] = v;   // the unit's (other blocks read only hm[0..GM), and only before their next cl.sync)
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < GM; g++) mx[g] = hm[GM + g];
    // pass 2: the shifted maximum, as a key
    const uint64_t pol_last = l2_evict_last();
    float best[SU];
#pragma unroll
    for (int j = 0; j < SU; j++) best[j] = -INFINITY;
    group_max_scan<BITS, WORDS, SU>(
        a, u, p0, p1, G, ql, gq, l2_evict_first(), [&](int j, int g, float s) { best[j] = fmaxf(best[j], s - mx[g]); },
        [&](int j, int p) {
            const float v = best[j];
            best[j] = -INFINITY;
            if (p >= p1) return;
            const uint32_t key = score_key(v);
            st_key(kk + p, (uint16_t)key, pol_last);
            atomicAdd(&sh[key >> LOW_BITS], 1u);
        });
}

template <int BITS, int WORDS>
__global__ void __launch_bounds__(256) k_score(ds_gpu_attn_args a, int chunk, uint16_t *keys, int kstride, uint32_t *hist,
                                                 uint32_t *cnt) {
    TRACE(0, 0);
    dsgpu::pdl_trigger();
    dsgpu::pdl_wait();
    constexpr int R = WORDS * 32 / BITS;
    const int u = blockIdx.y, b = u / a.H_kv;
    const int n = a.seq_len[b], k = k_for(n, a.tokens, a.tokens_frac);
    if (!unit_sparse(a, n, k)) return;
    const int W = recent_for(a.recent, n, k);
    const int nc = n - 1 - W, p0 = blockIdx.x * chunk;   // scored: [0, nc)
    if (p0 >= nc) return;
    const int p1 = min(p0 + chunk, nc);
    __shared__ float ql[R];
    __shared__ uint32_t sh[HIST_BINS];
    query_labels(a, u, R, ql);
    for (int i = threadIdx.x; i < HIST_BINS; i += blockDim.x) sh[i] = 0;
    __syncthreads();
    TRACE(0, 1);
    float q[R], qsum = 0;
#pragma unroll
    for (int j = 0; j < R; j++) { q[j] = ql[j]; qsum += q[j]; }
    score_rows<BITS, WORDS>(a, u, p0, p1, q, qsum, keys + (size_t)u * kstride, sh);
    __syncthreads();
    TRACE(0, 2);
    uint32_t *gh = hist + (size_t)u * HIST_BINS;
    for (int i = threadIdx.x; i < HIST_BINS; i += blockDim.x)
        if (sh[i]) atomicAdd(&gh[i], sh[i]);
    // The unit's last block to finish turns its histogram into the threshold bin.
    __threadfence();
    __shared__ bool last;
    if (threadIdx.x == 0) last = atomicAdd(&cnt[C_N * u + C_T_SCORE], 1u) == (uint32_t)((nc + chunk - 1) / chunk - 1);
    __syncthreads();
    TRACE(0, 3);
    if (!last) return;
    __threadfence();
    int b1, above;
    find_threshold<false>(gh, k - 1 - W, &b1, &above);
    if (threadIdx.x == 0) {
        cnt[C_N * u + C_B1] = (uint32_t)b1;
        cnt[C_N * u + C_T_SCORE] = 0;
    }
    TRACE(0, 4);
}

// ---- 3. finish on the candidates; append the recent window and the current token ----
// Run by one block of unit u (256 threads) once above1 positions above the threshold bin are in
// sel and the bin's nc candidates (position << LOW_BITS | low key bits) in cand.
__device__ void refine_unit(const ds_gpu_attn_args &a, int u, int n, int k, int above1, int nc, int32_t *sel, int k_cap,
                            const uint32_t *cand) {
    __shared__ uint32_t h2[1 << LOW_BITS];
    __shared__ int s_b2, s_above2;
    __shared__ uint32_t s_hi, s_eq;
    __shared__ int s_cnt;
    __shared__ int s_pos[EQ_CAP];
    const int W = recent_for(a.recent, n, k);
    const int need = k - 1 - W;   // the top-k's share; then the window and the current token
    const int need2 = need - above1;
    const uint32_t *cd = cand + (size_t)u * a.n_max;
    int32_t *out = sel + (size_t)u * k_cap;
    if (threadIdx.x < (1 << LOW_BITS)) h2[threadIdx.x] = 0;
    if (threadIdx.x == 0) { s_hi = 0; s_eq = 0; s_b2 = -1; s_above2 = 0; }
    __syncthreads();
    if (need2 > 0) {
        for (int i = threadIdx.x; i < nc; i += blockDim.x) atomicAdd(&h2[__ldcg(cd + i) & ((1u << LOW_BITS) - 1)], 1u);
        __syncthreads();
        if (threadIdx.x == 0) {
            int cum = 0;
            for (int bin = (1 << LOW_BITS) - 1; bin >= 0; bin--) {
                if (cum + (int)h2[bin] >= need2) { s_b2 = bin; s_above2 = cum; break; }
                cum += (int)h2[bin];
            }
        }
        __syncthreads();
        // Keys equal to the threshold key (fp16 rounding makes such ties common) are taken
        // lowest position first, as on the CPU, so the selection is deterministic.
        const int b2 = s_b2, take_eq = need2 - s_above2, n_eq = (int)h2[b2 < 0 ? 0 : b2];
        const bool all_eq = take_eq >= n_eq, ranked = !all_eq && n_eq <= EQ_CAP;
        int32_t *dst = out + above1 + s_above2;
        for (int i = threadIdx.x; i < nc; i += blockDim.x) {
            uint32_t c = __ldcg(cd + i);
            int low = (int)(c & ((1u << LOW_BITS) - 1));
            int p = (int)(c >> LOW_BITS);
            if (low > b2) out[above1 + atomicAdd(&s_hi, 1u)] = p;
            else if (low == b2) {
                if (all_eq) dst[atomicAdd(&s_eq, 1u)] = p;
                else if (ranked) s_pos[atomicAdd(&s_eq, 1u)] = p;
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
            // many ties: binary search for the position T with exactly take_eq tied positions below it
            int lo = 0, hi = n;   // count(< lo) < take_eq <= count(< hi)
            while (hi - lo > 1) {
                const int mid = lo + (hi - lo) / 2;
                if (threadIdx.x == 0) s_cnt = 0;
                __syncthreads();
                int local = 0;
                for (int i = threadIdx.x; i < nc; i += blockDim.x) {
                    uint32_t c = __ldcg(cd + i);
                    local += (int)(c & ((1u << LOW_BITS) - 1)) == b2 && (int)(c >> LOW_BITS) < mid;
                }
                if (local) atomicAdd(&s_cnt, local);
                __syncthreads();
                if (s_cnt < take_eq) lo = mid; else hi = mid;
                __syncthreads();
            }
            for (int i = threadIdx.x; i < nc; i += blockDim.x) {
                uint32_t c = __ldcg(cd + i);
                if ((int)(c & ((1u << LOW_BITS) - 1)) == b2 && (int)(c >> LOW_BITS) < hi) dst[atomicAdd(&s_eq, 1u)] = (int)(c >> LOW_BITS);
            }
        }
    }
    // the recent window [n - 1 - W, n - 1) and the current token n - 1 are always attended
    for (int i = threadIdx.x; i <= W; i += blockDim.x) out[need + i] = n - 1 - W + i;
}

// The 8 keys of a 16-byte vector starting at position ps, against the threshold bin b1 (keys at
// or past p1 are masked out): count those above the bin and those in it ...
__device__ __forceinline__ void count_keys(const uint4 &kv, int ps, int p1, int b1, int &nh, int &ne) {
    const uint32_t *w = (const uint32_t *)&kv;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        const int bin = ps + e < p1 ? (int)(((w[e >> 1] >> (16 * (e & 1))) & 0xffff) >> LOW_BITS) : -2;
        nh += bin > b1;
        ne += bin == b1;
    }
}

// ... and write them: positions above the bin to out, the bin's as candidates
// (position << LOW_BITS | low key bits) to cd.
__device__ __forceinline__ void emit_keys(const uint4 &kv, int ps, int p1, int b1, int32_t *&out, uint32_t *&cd) {
    const uint32_t *w = (const uint32_t *)&kv;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        const uint32_t key = (w[e >> 1] >> (16 * (e & 1))) & 0xffff;
        const int bin = ps + e < p1 ? (int)(key >> LOW_BITS) : -2;
        if (bin > b1) *out++ = ps + e;
        else if (bin == b1) *cd++ = ((uint32_t)(ps + e) << LOW_BITS) | (key & ((1u << LOW_BITS) - 1));
    }
}

// Thread i's 16-byte key vectors of [p0, p1) (keys p0 + 2048 v + 8 i, +8; rows padded to 8),
// KB loaded before any is used so that their L2 round trips overlap; lanes past p1 read zeros
// (f masks them by position): f(vector, position of its first key).
template <int KB, typename F>
__device__ __forceinline__ void for_key_vectors(const uint16_t *kk, int p0, int p1, uint64_t pol, F f) {
    for (int ps0 = p0 + 8 * threadIdx.x; ps0 < p1; ps0 += KB * 2048) {
        uint4 kv[KB];
#pragma unroll
        for (int j = 0; j < KB; j++) kv[j] = ps0 + j * 2048 < p1 ? ld_keys(kk + ps0 + j * 2048, pol) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int j = 0; j < KB; j++) f(kv[j], ps0 + j * 2048);
    }
}

// ---- 2. emit positions above the threshold bin, collect the bin's candidates ----
// Each thread holds PER keys in registers; one block-wide scan gives every thread its output
// offsets, so a block makes two global atomics in all (per-warp atomics on one counter per
// unit serialised at L2 and cost more than the whole label scan).
template <int PER>
__global__ void __launch_bounds__(256, 4) k_collect(ds_gpu_attn_args a, const uint16_t *keys, int kstride, uint32_t *hist,
                                                 uint32_t *cnt, int32_t *sel, int k_cap, uint32_t *cand) {
    TRACE(1, 0);
    dsgpu::pdl_trigger();
    dsgpu::pdl_wait();
    constexpr int CHUNK = 256 * PER;
    const int u = blockIdx.y, b = u / a.H_kv;
    const int n = a.seq_len[b], k = k_for(n, a.tokens, a.tokens_frac);
    if (!unit_sparse(a, n, k)) return;
    const int nc = n - 1 - recent_for(a.recent, n, k), p0 = blockIdx.x * CHUNK;   // scored: [0, nc)
    if (p0 >= nc) return;
    const int p1 = min(p0 + CHUNK, nc);
    const int b1 = (int)cnt[C_N * u + C_B1];   // -1: nothing but the window and the current token
    // Thread t holds keys [p0 + v*2048 + 8t, +8) for v < PER/8: 16-byte loads, coalesced.
    // Rows of the key array are padded to a multiple of 8 (Plan::kstride), so a vector that
    // starts before p1 stays inside its row; lanes past p1 are masked out below.
    constexpr int NV = PER / 8;
    const uint16_t *kk = keys + (size_t)u * kstride;
    uint4 kv[NV];
    int nh = 0, ne = 0;
#pragma unroll
    for (int v = 0; v < NV; v++) {
        const int ps = p0 + v * 2048 + threadIdx.x * 8;
        kv[v] = ps < p1 ? __ldcg((const uint4 *)(kk + ps)) : make_uint4(0, 0, 0, 0);
        count_keys(kv[v], ps, p1, b1, nh, ne);
    }
    if (b1 < 0) nh = ne = 0;
    TRACE(1, 1);
    // pack both counts in one scan: a block has at most CHUNK <= 65535 of each
    typedef cub::BlockScan<int, 256> Scan;
    __shared__ typename Scan::TempStorage tmp;
    __shared__ uint32_t base_h, base_e;
    __shared__ bool last;
    int off, total;
    Scan(tmp).ExclusiveSum(nh | (ne << 16), off, total);
    if (threadIdx.x == 0) {
        base_h = (total & 0xffff) ? atomicAdd(&cnt[C_N * u + C_SEL], (uint32_t)(total & 0xffff)) : 0;
        base_e = (total >> 16) ? atomicAdd(&cnt[C_N * u + C_CAND], (uint32_t)(total >> 16)) : 0;
    }
    __syncthreads();
    int32_t *out = sel + (size_t)u * k_cap + base_h + (off & 0xffff);
    uint32_t *cd = cand + (size_t)u * a.n_max + base_e + (off >> 16);
    if (nh | ne) {
#pragma unroll
        for (int v = 0; v < NV; v++) {
            emit_keys(kv[v], p0 + v * 2048 + threadIdx.x * 8, p1, b1, out, cd);
        }
    }
    TRACE(1, 2);
    // the unit's last block finishes the selection on the candidates
    __threadfence();
    if (threadIdx.x == 0) last = atomicAdd(&cnt[C_N * u + C_T_COLLECT], 1u) == (uint32_t)((nc + CHUNK - 1) / CHUNK - 1);
    __syncthreads();
    TRACE(1, 3);
    if (!last) return;
    __threadfence();
    refine_unit(a, u, n, k, (int)__ldcg(cnt + C_N * u + C_SEL), (int)__ldcg(cnt + C_N * u + C_CAND), sel, k_cap, cand);
    // reset for the next call
    if (threadIdx.x == 0) {
        cnt[C_N * u + C_SEL] = 0;
        cnt[C_N * u + C_CAND] = 0;
        cnt[C_N * u + C_T_COLLECT] = 0;
    }
    uint32_t *gh = hist + (size_t)u * HIST_BINS;
    for (int i = threadIdx.x; i < HIST_BINS; i += blockDim.x) gh[i] = 0;
    TRACE(1, 4);
}

// ---- the ready queue (k_select -> k_attn) ----
// Unit u's selection is complete (its cluster has finished with the workspace): append it to
// the queue. One thread, after its block has synchronised; the release store orders every
// write the cluster made before it (the other blocks fenced before the cluster barrier).
__device__ inline void publish_unit(uint32_t *rq, int u) {
    __threadfence();
    const uint32_t slot = atomicAdd(&rq[RQ_HEAD], 1u);
    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(rq + RQ_SLOTS + slot), "r"((uint32_t)u + 1) : "memory");
}
// ---- 1-3 in one kernel: a thread-block cluster per unit ----
// The CL blocks of a cluster (CL <= 8, one unit) each score a contiguous 1/CL of the unit's
// positions into a shared-memory histogram; the cluster then sums its histograms through
// distributed shared memory, each block one 1/CL slice of the bins over all CL blocks (measured
// as fast as adding every block's bins into the leader's, and 10-20% faster at B=1), and every
// block reads all slices and finds the threshold bin itself. So no global histogram, no L2
// atomics, no fence, no ticket and no second kernel: the two-kernel path spent ~30% of its
// scoring time in the histogram's global flush and fence (bench/NOTES.md). Each block then
// emits its positions above the bin (offsets from counters in the leader block's shared memory)
// and the bin's candidates; the leader finishes the selection.

// Blocks per SM the register allocation must allow, fp16 labels / quantised labels (benchmark
// builds can override them).
#ifndef SEL_MIN16
#define SEL_MIN16 5
#endif
#ifndef SEL_MINQ
#define SEL_MINQ 3
#endif

// SU: label rows per thread in flight in the scan; SEL_SU_DEEP for long spans (launch_select).
#define SEL_SU_DEEP 8
// GM: the group score by the largest head (ds_gpu_attn_args.group_max; score_rows_group_max).
template <int BITS, int WORDS, int SU = SCORE_SU, bool GM = false>
__global__ void __launch_bounds__(256, SU > SCORE_SU || GM ? 2 : BITS == 16 ? SEL_MIN16 : SEL_MINQ)
    k_select(ds_gpu_attn_args a, uint16_t *keys, int kstride, int32_t *sel, int k_cap, uint32_t *cand, uint32_t *rq) {
    TRACE(3, 0);
    // Trigger only after the wait: k_attn takes work from the ready queue as soon as it starts,
    // and the queue is shared by every call on this workspace. Once this grid is past its wait,
    // the previous call is complete (each kernel between waited for its predecessor), so no
    // k_attn of this call can take an item while the previous one still drains the queue. (A
    // trigger at the top let the launches run ahead through a whole layer of small kernels.)
    dsgpu::pdl_wait();
    dsgpu::pdl_trigger();
    cg::cluster_group cl = cg::this_cluster();
    const int CL = (int)cl.num_blocks(), rank = (int)cl.block_rank();
    constexpr int R = WORDS * 32 / BITS;
    const int u = blockIdx.y, b = u / a.H_kv;
    const int n = a.seq_len[b], k = k_for(n, a.tokens, a.tokens_frac);
    if (!unit_sparse(a, n, k)) {   // the whole cluster: one unit, attended densely
        if (rq && rank == 0 && threadIdx.x == 0) publish_unit(rq, u);
        return;
    }
    const int W = recent_for(a.recent, n, k);
    const int nc = n - 1 - W;   // scored: [0, nc); then the recent window and the current token
    const int span = ((nc + CL - 1) / CL + 7) & ~7;   // a multiple of 8: 16-byte key vectors (cluster_span)
    const int p0 = min(rank * span, nc), p1 = min(p0 + span, nc);
    __shared__ float ql[GM ? 8 * R : R];  // the summed query's labels, or each head's ([G][R])
    __shared__ uint32_t sh[HIST_BINS];    // this block's histogram, then the cluster's
    __shared__ uint32_t tot[HIST_BINS];   // the cluster's sum of this block's slice of bins
    __shared__ uint32_t c_sel, c_cand;    // the leader's: positions emitted, candidates
    __shared__ uint32_t base_h, base_e;
    if constexpr (GM) query_labels_heads(a, u, R, ql);
    else query_labels(a, u, R, ql);
    for (int i = threadIdx.x; i < HIST_BINS; i += blockDim.x) sh[i] = 0;
    if (threadIdx.x == 0) { c_sel = 0; c_cand = 0; }
    __syncthreads();
    uint16_t *kk = keys + (size_t)u * kstride;
    if constexpr (GM) {
        __shared__ float hm[16];
        score_rows_group_max<BITS, WORDS, SU>(a, u, p0, p1, ql, hm, kk, sh, cl);
    } else {
        float q[R], qsum = 0;
#pragma unroll
        for (int j = 0; j < R; j++) { q[j] = ql[j]; qsum += q[j]; }
        score_rows<BITS, WORDS, SU>(a, u, p0, p1, q, qsum, kk, sh);
    }
    TRACE(3, 1);
    // each block sums one 1/CL slice of the bins over all blocks, then reads all slices
    cl.sync();   // every block's histogram is complete
    // (remote loads are issued in batches: a distributed-shared-memory read is a round trip,
    // and a loop that waited for each one spent ~2 us here)
    const int slice = HIST_BINS / CL;
    for (int i = threadIdx.x; i < slice; i += blockDim.x) {
        const int bin = rank * slice + i;
        uint32_t v[CL_MAX];
#pragma unroll
        for (int r = 0; r < CL_MAX; r++) v[r] = r < CL ? *cl.map_shared_rank(&sh[bin], r) : 0u;
        uint32_t s = 0;
#pragma unroll
        for (int r = 0; r < CL_MAX; r++) s += v[r];
        tot[i] = s;
    }
    cl.sync();   // every slice is summed (and no block reads sh any more)
    {
        constexpr int PER = HIST_BINS / 256;   // bins per thread (blockDim.x == 256)
        uint32_t v[PER];
#pragma unroll
        for (int j = 0; j < PER; j++) {
            const int bin = threadIdx.x + 256 * j;
            v[j] = *cl.map_shared_rank(&tot[bin % slice], bin / slice);
        }
#pragma unroll
        for (int j = 0; j < PER; j++) sh[threadIdx.x + 256 * j] = v[j];
    }
    __syncthreads();
    int b1, above;
    find_threshold<true>(sh, k - 1 - W, &b1, &above);   // -1: nothing but the window and the current token
    TRACE(3, 2);
    // emit positions above the bin, collect the bin's candidates: thread i reads keys
    // [p0 + 2048 v + 8 i, +8) (rows padded to 8), lanes past p1 masked out; two passes (count,
    // then write at offsets from one block scan)
    // (keys read KB vectors at a time, so the L2 round trips overlap: one vector per round
    // trip cost 23 us of the emit at B=8, n=64K, where a block re-reads 32K keys twice)
    constexpr int KB = 4;
    const uint64_t pol_keep = l2_evict_last(), pol = l2_evict_first();   // counting, then the last use
    int nh = 0, ne = 0;
    if (b1 >= 0)
        for_key_vectors<KB>(kk, p0, p1, pol_keep, [&](const uint4 &kv, int ps) { count_keys(kv, ps, p1, b1, nh, ne); });
    typedef cub::BlockScan<unsigned long long, 256> Scan;
    __shared__ typename Scan::TempStorage tmp;
    unsigned long long off, total;
    Scan(tmp).ExclusiveSum((unsigned long long)nh | ((unsigned long long)ne << 32), off, total);
    if (threadIdx.x == 0) {
        const uint32_t th = (uint32_t)total, te = (uint32_t)(total >> 32);
        base_h = th ? atomicAdd(cl.map_shared_rank(&c_sel, 0), th) : 0;
        base_e = te ? atomicAdd(cl.map_shared_rank(&c_cand, 0), te) : 0;
    }
    __syncthreads();
    if (nh | ne) {
        int32_t *out = sel + (size_t)u * k_cap + base_h + (uint32_t)off;
        uint32_t *cd = cand + (size_t)u * a.n_max + base_e + (uint32_t)(off >> 32);
        for_key_vectors<KB>(kk, p0, p1, pol, [&](const uint4 &kv, int ps) { emit_keys(kv, ps, p1, b1, out, cd); });
    }
    TRACE(3, 3);
    __threadfence();   // the candidates, for the leader
    cl.sync();         // all emitted; the leader's counters are final (no remote access after this)
    if (rank != 0) return;
    refine_unit(a, u, n, k, (int)c_sel, (int)c_cand, sel, k_cap, cand);
    if (rq) {
        __syncthreads();   // the whole selection is written
        if (threadIdx.x == 0) publish_unit(rq, u);
    }
    TRACE(3, 4);
}


// ---- 4. attention partials over a slice of rows (selected list or contiguous) ----
// D/8 lanes hold one row (16 bytes each); a warp covers RPW = 256/D rows per step and UNROLL
// steps are loaded before use, so each lane has 2*UNROLL 16-byte loads in flight; with PIPE the
// next iteration's rows are loaded before this one's are used (twice as many in flight).
// The unit's output from its ns slice partials (log-sum-exp), a (head, channel) per thread and
// step. A macro, so that both k_attn variants compile it in place (see k_attn's end).
#define MERGE_SLICES()                                                                             \
    for (int e = threadIdx.x; e < G * D; e += ATT_THREADS) {                                       \
        const int g = e / D, c = e % D;                                                            \
        const size_t pb = pbase + (size_t)g * splits;                                              \
        float M = -INFINITY;                                                                       \
        for (int i = 0; i < ns; i++) M = fmaxf(M, __ldcg(pml + 2 * (pb + i)));                     \
        float L = 0, A = 0;                                                                        \
        _Pragma("unroll 4") for (int i = 0; i < ns; i++) {                                         \
            const float w = exp2f(__ldcg(pml + 2 * (pb + i)) - M);                                 \
            L += __ldcg(pml + 2 * (pb + i) + 1) * w;                                               \
            A += __ldcg(pacc + (pb + i) * D + c) * w;                                              \
        }                                                                                          \
        a.out[((size_t)b * a.H + kvh * G + g) * D + c] = f2h(L > 0 ? A / L : 0.0f);                \
    }

// The end of a k_attn block that took its item from the ready queue: the unit's last block
// merges the ns slices (log-sum-exp) and writes the output. Every block of the unit takes a
// ticket, those without rows too, so the last one knows all have read the unit's slot before
// clearing it; the block that finishes the last unit resets the queue for the next call.
template <int D, int G>
__device__ void attn_unit_done_rq(const ds_gpu_attn_args &a, int u, int ns, int splits, const float *pacc,
                                  const float *pml, uint32_t *cnt, uint32_t *rq, int slot) {
    const int b = u / a.H_kv, kvh = u % a.H_kv;
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&cnt[C_N * u + C_T_ATTN], 1u) == gridDim.x - 1;
    __syncthreads();
    TRACE(2, 3);
    if (!last) return;
    __threadfence();
    const size_t pbase = ((size_t)u * G) * splits;
    MERGE_SLICES();
    if (threadIdx.x == 0) {
        cnt[C_N * u + C_T_ATTN] = 0;
        rq[RQ_SLOTS + slot] = 0;
        if (atomicAdd(&rq[RQ_DONE], 1u) == gridDim.y - 1) {
            rq[RQ_HEAD] = 0;
            rq[RQ_GRAB] = 0;
            rq[RQ_DONE] = 0;
            // this grid's completion then implies k_select's (no block waited for it), so
            // whatever waits for this grid also waits for that one
            dsgpu::pdl_wait();
        }
    }
    TRACE(2, 4);
}

template <int D, int G, bool PIPE, bool RQ>
__global__ void __launch_bounds__(ATT_THREADS) k_attn(ds_gpu_attn_args a, const int32_t *sel, int k_cap, int slice,
                                                      int splits, float *pacc, float *pml, uint32_t *cnt, uint32_t *rq) {
    constexpr int LPR = D / 8, RPW = 32 / LPR, UNROLL = 4, WARPS = ATT_THREADS / 32;
    constexpr int ROWS_PER_ITER = WARPS * RPW * UNROLL;
    // sparse: the next projection may start loading its weights (pdl.cuh); dense: measured
    // slower with early launches around it (bench/NOTES.md), so it runs plainly
    TRACE(2, 0);
    if (sel) dsgpu::pdl_trigger();
    // Which (unit, slice) this block works on. With the ready queue (RQ and rq: a sparse call
    // right after k_select) blocks take items in launch order, and item i is slice
    // i % gridDim.x of the (i / gridDim.x)-th unit whose selection finished: each unit's
    // attention starts when its own selection is done, while other clusters still scan,
    // instead of after the whole k_select grid (whose tail leaves DRAM idle). Without it,
    // blockIdx names the item and the block waits for the predecessor grid. RQ is a template
    // flag: as a runtime branch it cost the dense kernel 8 registers and 10-27% in one call.
    int u, split_i, slot = 0;
    if constexpr (RQ) {
        __shared__ int s_item, s_unit;
        if (threadIdx.x == 0) {
            const int item = (int)atomicAdd(&rq[RQ_GRAB], 1u);
            const uint32_t *w = rq + RQ_SLOTS + item / gridDim.x;
            uint32_t v;
            while ((v = ld_acquire(w)) == 0) __nanosleep(64);
            s_item = item;
            s_unit = (int)v - 1;
        }
        __syncthreads();
        u = s_unit;
        split_i = s_item % gridDim.x;
        slot = s_item / gridDim.x;
    } else {
        dsgpu::pdl_wait();
        u = blockIdx.y;
        split_i = blockIdx.x;
    }
    const int b = u / a.H_kv, kvh = u % a.H_kv;
    const int n = a.seq_len[b];
    const int k = sel ? k_for(n, a.tokens, a.tokens_frac) : n;
    const bool sparse = sel && unit_sparse(a, n, k);
    const int items = sparse ? k : n;
    // slices with rows (computed here for the queue's path and at the end without it: where it
    // is computed changes either kernel's SASS, and each is kept as measured)
    const int ns_rq = RQ ? (items + slice - 1) / slice : 0;
    const int s0 = split_i * slice;
    if (s0 >= items) {
        if constexpr (RQ) attn_unit_done_rq<D, G>(a, u, ns_rq, splits, pacc, pml, cnt, rq, slot);
        return;
    }
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
    // The next iteration's row positions are loaded while this one's rows are in flight:
    // otherwise every iteration waits for two dependent round trips (index, then row).
    int nxt[UNROLL];
#pragma unroll
    for (int j = 0; j < UNROLL; j++) {
        const int it = s0 + (j * WARPS + warp) * RPW + sub;
        nxt[j] = it < s1 ? (idx ? ld_index<RQ>(idx + it) : it) : 0;
    }
    TRACE(2, 1);
    // rows of iteration `base` into kv / vv (positions from nxt), then nxt for the iteration after
    auto load_rows = [&](int base, uint4 (&kv)[UNROLL], uint4 (&vv)[UNROLL], bool (&ok)[UNROLL]) {
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
            nxt[j] = it < s1 ? (idx ? ld_index<RQ>(idx + it) : it) : 0;
        }
    };
    // scores and the online softmax over one iteration's rows
    auto consume = [&](const uint4 (&kv)[UNROLL], const uint4 (&vv)[UNROLL], const bool (&ok)[UNROLL]) {
        attn_rows<D, G, UNROLL>(q, kv, vv, ok, m, l, acc);
    };
    if (PIPE) {
        // software-pipelined: the next iteration's rows are in flight while this one's are used
        uint4 kv[UNROLL], vv[UNROLL];
        bool ok[UNROLL];
        load_rows(s0, kv, vv, ok);
        for (int base = s0; base < s1; base += ROWS_PER_ITER) {
            uint4 kv2[UNROLL], vv2[UNROLL];
            bool ok2[UNROLL];
            if (base + ROWS_PER_ITER < s1) load_rows(base + ROWS_PER_ITER, kv2, vv2, ok2);
            else
#pragma unroll
                for (int j = 0; j < UNROLL; j++) { ok2[j] = false; kv2[j] = vv2[j] = make_uint4(0, 0, 0, 0); }
            consume(kv, vv, ok);
#pragma unroll
            for (int j = 0; j < UNROLL; j++) { kv[j] = kv2[j]; vv[j] = vv2[j]; ok[j] = ok2[j]; }
        }
    } else
        for (int base = s0; base < s1; base += ROWS_PER_ITER) {
            uint4 kv[UNROLL], vv[UNROLL];
            bool ok[UNROLL];
            load_rows(base, kv, vv, ok);
            consume(kv, vv, ok);
        }
    TRACE(2, 2);
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
    if constexpr (RQ) {
        attn_unit_done_rq<D, G>(a, u, ns_rq, splits, pacc, pml, cnt, rq, slot);
        return;
    }
    // Without the queue the merge is written out here as it was before the queue existed: the
    // dense kernel compiled from the shared helper measured 3-7% slower (its SASS differed).
    const int ns = (items + slice - 1) / slice;
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&cnt[C_N * u + C_T_ATTN], 1u) == (uint32_t)(ns - 1);
    __syncthreads();
    TRACE(2, 3);
    if (!last) return;
    __threadfence();
    MERGE_SLICES();
    if (threadIdx.x == 0) cnt[C_N * u + C_T_ATTN] = 0;
    TRACE(2, 4);
}

template <int D, int G>
int launch_attn(const ds_gpu_attn_args *a, const Plan &p, char *ws, bool sparse, uint32_t *rq, cudaStream_t st) {
    const int slice = sparse ? p.slice_s : p.slice_d, splits = sparse ? p.splits_s : p.splits_d;
    float *pacc = (float *)(ws + p.off_pacc), *pml = (float *)(ws + p.off_pml);
    const int32_t *sel = sparse ? (const int32_t *)(ws + p.off_sel) : nullptr;
    return (int)dsgpu::pdl_launch(sparse && dsgpu::pdl_enabled(), st,
                                  !sparse || !attn_pipe() ? k_attn<D, G, false>
                                  : rq                    ? k_attn<D, G, true, true>
                                                          : k_attn<D, G, true>,
                                  dim3(splits, p.U),
                                  dim3(ATT_THREADS), *a, sel, p.k_cap, slice, p.splits_max, pacc, pml,
                                  (uint32_t *)(ws + p.off_cnt), rq);
}

template <int D>
int attn_by_group(const ds_gpu_attn_args *a, const Plan &p, char *ws, bool sparse, uint32_t *rq, cudaStream_t st) {
    switch (p.G) {
    case 1: return launch_attn<D, 1>(a, p, ws, sparse, rq, st);
    case 2: return launch_attn<D, 2>(a, p, ws, sparse, rq, st);
    case 3: return launch_attn<D, 3>(a, p, ws, sparse, rq, st);
    case 4: return launch_attn<D, 4>(a, p, ws, sparse, rq, st);
    case 5: return launch_attn<D, 5>(a, p, ws, sparse, rq, st);
    case 6: return launch_attn<D, 6>(a, p, ws, sparse, rq, st);
    case 7: return launch_attn<D, 7>(a, p, ws, sparse, rq, st);
    case 8: return launch_attn<D, 8>(a, p, ws, sparse, rq, st);
    default: return (int)cudaErrorInvalidValue;
    }
}

// rq: the ready queue, when k_select was launched just before with the same one (sparse only)
int run_attn(const ds_gpu_attn_args *a, const Plan &p, char *ws, bool sparse, uint32_t *rq, cudaStream_t st) {
    const int e = run_attn_mma(a, p, ws, sparse, rq, st);   // grouped queries: tensor cores
    if (e >= 0) return e;
    if (a->d == 128) return attn_by_group<128>(a, p, ws, sparse, rq, st);
    if (a->d == 64) return attn_by_group<64>(a, p, ws, sparse, rq, st);
    return (int)cudaErrorInvalidValue;
}

bool args_ok(const ds_gpu_attn_args *a) {
    return a && a->B > 0 && a->H_kv > 0 && a->H % a->H_kv == 0 && a->H / a->H_kv <= 8 &&
           (a->d == 64 || a->d == 128) && a->max_len > 0 && a->max_len <= a->n_max &&
           a->n_max < (1 << (32 - LOW_BITS));
}

template <int BITS, int WORDS>
int launch_score(const ds_gpu_attn_args *a, const Plan &p, char *ws, cudaStream_t st) {
    return (int)dsgpu::pdl_launch(dsgpu::pdl_enabled(), st, k_score<BITS, WORDS>, dim3(p.n_chunks, p.U), dim3(256), *a,
                                  p.chunk, (uint16_t *)(ws + p.off_keys), p.kstride, (uint32_t *)(ws + p.off_hist),
                                  (uint32_t *)(ws + p.off_cnt));
}

// The single-kernel selection: a cluster of CL blocks per unit, CL the largest power of two
// <= 8 that keeps the grid within one wave (a second wave of clusters measured slower than
// fewer, longer blocks: B=4, n=16K 34.3 us at CL=8 vs 24.5 at CL=4) and leaves each block at
// least 2048 positions. DSINFER_GPU_TUNE cl=N overrides. (Clusters of 16, a non-portable
// size, were tried for few units, B=1 at 64K leaving 2 blocks per SM at CL=8, and measured
// 1.7-2 us slower there: bench/NOTES.md, 2026-12-03.)
// clusters[i]: how many clusters of 2^i blocks (i = 1..3) can be resident at once
// (cudaOccupancyMaxActiveClusters; 0 = unknown, then blocks per SM times SMs is the bound).
int select_cluster(int max_len, int units, int resident, const int *clusters) {
    auto fits = [&](int c) {   // c = 2, 4 or 8
        const int n = clusters[__builtin_ctz(c)];
        return n > 0 ? units <= n : (long)units * c <= (long)resident * sm_count();
    };
    int c = CL_MAX;
    while (c > 1 && (!fits(c) || (long)c * 2048 > max_len)) c /= 2;
    const int t = tune("cl", c);
    return t == 1 || t == 2 || t == 4 || t == 8 ? t : c;
}

// Resident clusters of 2, 4 and 8 blocks of 256 threads for kernel kern (clusters[1..3]). Blocks per SM times
// SMs overstates it: a cluster's blocks must share a GPC, and with 4-bit labels (64 registers,
// 4 blocks per SM) 128 clusters of 4 did not all start at once at B=4/16K (bench/NOTES.md,
// 2026-12-04).
// The first call usually comes while a decode step is being captured into a graph; in the
// global capture mode calls that are not capture-safe fail, so the thread's mode is relaxed
// around the query (a failed query would leave the per-SM bound in force for the whole run).
template <typename Kern>
void cluster_capacity(Kern kern, int *clusters) {
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);
    for (int i = 1; i < 4; i++) {
        cudaLaunchConfig_t cfg;
        memset(&cfg, 0, sizeof cfg);
        cudaLaunchAttribute at;
        at.id = cudaLaunchAttributeClusterDimension;
        at.val.clusterDim.x = 1u << i;
        at.val.clusterDim.y = 1;
        at.val.clusterDim.z = 1;
        cfg.gridDim = dim3(1u << i);
        cfg.blockDim = dim3(256);
        cfg.attrs = &at;
        cfg.numAttrs = 1;
        int n = 0;
        if (cudaOccupancyMaxActiveClusters(&n, kern, &cfg) != cudaSuccess) {
            cudaGetLastError();   // not an error of the call: fall back to the per-SM bound
            n = 0;
        }
        clusters[i] = n;
    }
    cudaThreadExchangeStreamCaptureMode(&mode);   // back to the caller's mode
}

template <int BITS, int WORDS, bool GM>
int launch_select(const ds_gpu_attn_args *a, const Plan &p, char *ws, uint32_t *rq, cudaStream_t st) {
    static int occ = 0;
    auto kern = k_select<BITS, WORDS, SCORE_SU, GM>;
    if (!occ && (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, 256, 0) != cudaSuccess || occ < 1))
        occ = 1;
    cudaLaunchConfig_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cudaLaunchAttribute at[2];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    cfg.blockDim = dim3(256);
    cfg.attrs = at;
    cfg.numAttrs = 1;
    static int clusters[4] = {0}, queried = 0;
    if (!queried) { cluster_capacity(kern, clusters); queried = 1; }
    const int CL = select_cluster(a->max_len, p.U, occ, clusters);
    // Twice the label rows in flight per thread where each block scans >= 32K positions and the
    // grid still fits in one wave with the deeper kernel's registers (label rows of up to 16
    // bytes; DSINFER_GPU_TUNE su=4|8 forces). Measured on the H200 (bench/NOTES.md, 2026-12-03):
    // B=8/64K 238 -> 235 us with fp16 labels, 294 -> 282 us with 4-bit ones; slower with spans
    // of 8K (B=8/16K 73.6 -> 74.8 us; 4-bit B=1/64K 55.6 -> 63.3 us). With 4- and 2-bit labels
    // (dp2a scoring) also from spans of 8K in clusters of at most 2: end to end, Llama-2-7B
    // shape, the 4-bit step at B=4/16K 5.64 -> 5.37 ms and B=4/32K 6.65 -> 6.36 (op bench level
    // and 82.5 -> 79.7 us); clusters of 8 (B=1) and two waves (B=8/16K) measured slower
    // (bench/NOTES.md, 2026-12-04).
    if constexpr (WORDS <= 4 && !GM) {
        static int occ8 = 0;
        if (!occ8 && (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ8, k_select<BITS, WORDS, SEL_SU_DEEP>, 256, 0) != cudaSuccess || occ8 < 1))
            occ8 = 1;
        const int span = cluster_span(a->max_len - 1, CL);   // k_select's, at the longest sequence
        const bool wave = (long)p.U * CL <= (long)occ8 * sm_count();
        const bool deep = wave && (span >= 32768 || (BITS <= 4 && CL <= 2 && span >= 8192));
        if (tune("su", deep ? SEL_SU_DEEP : SCORE_SU) == SEL_SU_DEEP) kern = k_select<BITS, WORDS, SEL_SU_DEEP>;
    }
    cfg.gridDim = dim3(CL, p.U);
    cfg.stream = st;
    at[0].val.clusterDim.x = CL;
    at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.numAttrs = dsgpu::pdl_enabled() ? 2 : 1;
    return (int)cudaLaunchKernelEx(&cfg, kern, *a, (uint16_t *)(ws + p.off_keys), p.kstride,
                                   (int32_t *)(ws + p.off_sel), p.k_cap, (uint32_t *)(ws + p.off_cand), rq);
}


// Label shapes with a fast path: rows of 8, 16 or 32 bytes (every "1/16 of the key bits"
// setting at head_dim 64 and 128, and 1/8 at 64).
int score_dispatch(const ds_gpu_attn_args *a, const Plan &p, char *ws, cudaStream_t st, int fused, uint32_t *rq) {
    const int bytes = a->bits == 16 ? 2 * a->r : (a->r * a->bits + 7) / 8;
    const int words = bytes / 4;
    if (bytes % 4 || (a->r * a->bits) % 32) return (int)cudaErrorInvalidValue;
#define SC(B_, W_)                                                                                            \
    if (a->bits == B_ && words == W_)                                                                         \
        return !fused              ? launch_score<B_, W_>(a, p, ws, st)                 \
               : a->group_max ? launch_select<B_, W_, true>(a, p, ws, rq, st)             \
                              : launch_select<B_, W_, false>(a, p, ws, rq, st);
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
    return run_attn(a, p, (char *)ws, false, nullptr, (cudaStream_t)stream);
}

// parts: 1 = scoring, 2 = selection, 4 = attention. Anything but 7 is for timing the stages
// (bench/gpu/op_bench.py) and leaves the workspace inconsistent: re-initialise it afterwards.
// The selection is one kernel (k_select) unless DSINFER_GPU_TUNE split=1 asks for the
// two-kernel pipeline (k_score, k_collect) it replaced (kept for comparison); there parts 1
// and 2 can be timed apart.
int ds_gpu_attn_ds_parts(const ds_gpu_attn_args *a, void *ws_, void *stream, int parts) {
    if (!args_ok(a) || a->r < 1 || a->r > a->d) return (int)cudaErrorInvalidValue;
    Plan p = make_plan(a);
    char *ws = (char *)ws_;
    cudaStream_t st = (cudaStream_t)stream;
    int e = 0;
    if (!tune("split", 0) || a->group_max) {   // scoring and selection are one kernel: parts 1 and 2 go together
        // the ready queue links the two kernels of one call, so only when both run (a queue
        // nobody fills would hang k_attn; one nobody drains would overflow) and k_attn has the
        // queue compiled in (the pipelined kernel); DSINFER_GPU_TUNE norq=1 turns it off. Only
        // for long caches: measured 1-4% faster at 64K (B=1 and 8), level or up to 2 us slower
        // at 4K-16K, where the queue's atomics and polling cost more than the overlap returns
        // (bench/NOTES.md, 2026-12-03; rq=1 forces it at any length: level at B=4/16K, 2026-12-04)
        // (not with group_max: its kernel's occupancy was not measured against the queue's waiters)
        uint32_t *rq = (parts & 3) && (parts & 4) && attn_pipe() && (a->max_len >= 32768 || tune("rq", 0)) &&
                               !tune("norq", 0) && !a->group_max
                           ? (uint32_t *)(ws + p.off_rq)
                           : nullptr;
        if (parts == 7 && (e = run_fused(a, p, ws, st)) >= 0) return e;   // short caches: one kernel
        if ((parts & 3) && (e = score_dispatch(a, p, ws, st, 1, rq))) return e;
        return (parts & 4) ? run_attn(a, p, ws, true, rq, st) : (int)cudaGetLastError();
    }
    if ((parts & 1) && (e = score_dispatch(a, p, ws, st, 0, nullptr))) return e;
    if (!(parts & 2)) return (parts & 4) ? run_attn(a, p, ws, true, nullptr, st) : (int)cudaGetLastError();
    uint32_t *hist = (uint32_t *)(ws + p.off_hist), *cnt = (uint32_t *)(ws + p.off_cnt);
    int32_t *sel = (int32_t *)(ws + p.off_sel);
    uint32_t *cand = (uint32_t *)(ws + p.off_cand);
    const uint16_t *keys = (const uint16_t *)(ws + p.off_keys);
    const int per = p.collect_per;
    const dim3 cg((a->max_len + 256 * per - 1) / (256 * per), p.U);
    auto kc = per == 32 ? k_collect<32> : per == 16 ? k_collect<16> : k_collect<8>;
    if ((e = (int)dsgpu::pdl_launch(dsgpu::pdl_enabled(), st, kc, cg, dim3(256), *a, keys, p.kstride, hist, cnt, sel,
                                    p.k_cap, cand)))
        return e;
    return (parts & 4) ? run_attn(a, p, ws, true, nullptr, st) : 0;
}

int ds_gpu_attn_ds(const ds_gpu_attn_args *a, void *ws, void *stream) {
    return ds_gpu_attn_ds_parts(a, ws, stream, 7);
}

int ds_gpu_label_build(const ds_gpu_attn_args *a, int pos0, int pos1, void *stream) {
    if (!args_ok(a) || pos0 < 0 || pos1 > a->n_max || pos0 >= pos1) return (int)cudaErrorInvalidValue;
    const int rb = a->bits == 16 ? 2 * a->r : (a->r * a->bits + 7) / 8;
    long rows = (long)a->B * a->H_kv * (pos1 - pos0);
    return (int)dsgpu::pdl_launch(dsgpu::pdl_enabled(), (cudaStream_t)stream, k_label_build,
                                  dim3((unsigned)((rows + 7) / 8)), dim3(256), *a, pos0, pos1, rb);
}

const int32_t *ds_gpu_attn_selected(const void *ws, const ds_gpu_attn_args *a, int *k_cap) {
    if (!args_ok(a)) return nullptr;
    Plan p = make_plan(a);
    if (k_cap) *k_cap = p.k_cap;
    return (const int32_t *)((const char *)ws + p.off_sel);
}

const char *ds_gpu_error_string(int err) { return cudaGetErrorString((cudaError_t)err); }

#ifdef DS_TRACE
// Benchmark builds only: where the kernels write their phase timestamps (null: nowhere);
// buf holds 5 * TRACE_REGION * TRACE_SLOTS uint64.
int ds_gpu_attn_trace(void *buf) {
    unsigned long long *p = (unsigned long long *)buf;
    const int e = (int)cudaMemcpyToSymbol(g_trace, &p, sizeof p);
    return e ? e : dsattn::fused_trace(p);
}
#endif

}  // extern "C"
