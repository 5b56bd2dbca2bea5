// attn_mma.cu — the decode attention over a slice of rows (step 4 of attn.cu, dense or over
// the selected rows) on the tensor cores, for grouped queries (G = 2..8 query heads per KV head).
//
// Why: k_attn (attn.cu) does the work on CUDA cores, one fp32 FMA per query head per channel
// and a 16-lane shuffle sum per row and head. At G = 1 that is cheap next to the row's 512
// bytes and the kernel streams at its byte floor; at G = 4 it is four times the arithmetic for
// the same bytes, and the kernel became bound by issue (the op bench at G = 4, B = 8, n = 16K:
// our dense 221 us against torch SDPA's 126; the Llama-3-8B-shape dense step at 64-74% of its
// floor). Here one warp takes 16 rows at a time and does both products as mma.m16n8k16 (fp16 in,
// fp32 accumulate), the G query heads padded to the instruction's 16 rows:
//   S (heads x 16 rows)   = Q (heads x d) . K^T (d x 16 rows)   two n-tiles of 8 rows, d/16 k-steps
//   O (heads x d)        += P (heads x 16 rows) . V (16 rows x d) d/8 n-tiles, one k-step
// Registers come straight from 16-byte global loads, with no shared-memory staging: the
// channel order inside a dot product is free, so each lane loads whole 8-channel chunks of K
// (chunks t4, t4+4, ... of row gid) and the query fragment uses the same order; the score
// fragment S is, register for register, the A fragment P needs (as in flash attention); V's
// fragment pairs two rows of one channel, made with one byte permute per pair from the lane's
// rows 2t4, 2t4+1, 2t4+8, 2t4+9 (chunks gid, gid+8). Lane = 4 * gid + t4 (the PTX fragment
// naming). The online softmax keeps fp32 state per head; P goes to fp16 for the second product
// (p in [0, 1]). The slice partials have k_attn's workspace layout; the merge is this file's own.
#include "attn_impl.cuh"

namespace dsattn {

namespace {

// C[0..1] += A . B for mma.m16n8k16 with A's rows 8..15 zero (heads >= 8 do not exist), so
// only this lane's row-gid half of A (a0: k 2t4..2t4+1, a2: k 2t4+8..2t4+9) and of C
// (c0, c1: columns 2t4, 2t4+1) are named; b0, b1 as in PTX.
__device__ __forceinline__ void mma_rows8(float &c0, float &c1, uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1) {
    [[maybe_unused]] float d2, d3;   // rows 8..15 of C: not used
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %5}, {%7, %8}, "
        "{%0, %1, %9, %9};"
        : "+f"(c0), "+f"(c1), "=f"(d2), "=f"(d3)
        : "r"(a0), "r"(0u), "r"(a2), "r"(b0), "r"(b1), "f"(0.0f));
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *(const uint32_t *)&h;
}

__device__ __forceinline__ uint32_t word(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// The unit's output from its ns slice partials (log-sum-exp), by the unit's last block. Grouped
// queries make the partials G times larger than k_attn's at G = 1, and few units (B = 1) make
// ns large (up to ~130 slices at 4 KV heads), so unlike k_attn's merge (a serial loop per
// output element over every slice's max) the per-head max and sum are block reductions and
// the slices' weights go through shared memory in batches of ATT_THREADS, leaving each thread
// G * D / ATT_THREADS independent sums over the partials.
template <int D, int G>
__device__ void merge_unit(const ds_gpu_attn_args &a, int u, int ns, int splits, const float *pacc, const float *pml) {
    constexpr int WARPS = ATT_THREADS / 32, PER = (G * D + ATT_THREADS - 1) / ATT_THREADS;
    __shared__ float s_max[G], s_sum[G], s_w[G][ATT_THREADS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t pbase = ((size_t)u * G) * splits;
    for (int g = warp; g < G; g += WARPS) {
        const float *ml = pml + 2 * (pbase + (size_t)g * splits);
        float M = -INFINITY;
        for (int i = lane; i < ns; i += 32) M = fmaxf(M, __ldcg(ml + 2 * i));
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
        float L = 0;
        if (M != -INFINITY)
            for (int i = lane; i < ns; i += 32) L += __ldcg(ml + 2 * i + 1) * exp2f(__ldcg(ml + 2 * i) - M);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
        if (lane == 0) { s_max[g] = M; s_sum[g] = L; }
    }
    float A[PER];
#pragma unroll
    for (int j = 0; j < PER; j++) A[j] = 0;
    for (int i0 = 0; i0 < ns; i0 += ATT_THREADS) {
        __syncthreads();   // s_max / s_sum written; the previous batch's weights used
        const int i = i0 + threadIdx.x;
#pragma unroll
        for (int g = 0; g < G; g++) {
            const float m = i < ns ? __ldcg(pml + 2 * (pbase + (size_t)g * splits + i)) : -INFINITY;
            s_w[g][threadIdx.x] = m == -INFINITY ? 0.0f : exp2f(m - s_max[g]);
        }
        __syncthreads();
        const int nb = min(ATT_THREADS, ns - i0);
        for (int t = 0; t < nb; t++)
#pragma unroll
            for (int j = 0; j < PER; j++) {
                const int e = j * ATT_THREADS + threadIdx.x, g = e / D, c = e % D;
                if (G * D % ATT_THREADS == 0 || e < G * D)
                    A[j] += __ldcg(pacc + (pbase + (size_t)g * splits + i0 + t) * D + c) * s_w[g][t];
            }
    }
    const int b = u / a.H_kv, kvh = u % a.H_kv;
#pragma unroll
    for (int j = 0; j < PER; j++) {
        const int e = j * ATT_THREADS + threadIdx.x, g = e / D, c = e % D;
        if (G * D % ATT_THREADS == 0 || e < G * D)
            a.out[((size_t)b * a.H + kvh * G + g) * D + c] = f2h(s_sum[g] > 0 ? A[j] / s_sum[g] : 0.0f);
    }
}

// The end of a block: a ticket per unit, and the unit's last block merges. With the ready queue
// (RQ) every block of the unit takes a ticket, those without rows too, so the last one knows
// all have read the unit's slot before clearing it, and the block that finishes the last unit
// resets the queue for the next call (k_attn's protocol, attn.cu).
template <int D, int G, bool RQ>
__device__ void unit_done(const ds_gpu_attn_args &a, int u, int ns, int splits, const float *pacc, const float *pml,
                          uint32_t *cnt, uint32_t *rq, int slot) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&cnt[C_N * u + C_T_ATTN], 1u) == (RQ ? gridDim.x : (uint32_t)ns) - 1;
    __syncthreads();
    TRACE(2, 3);
    if (!last) return;
    __threadfence();
    merge_unit<D, G>(a, u, ns, splits, pacc, pml);
    if (threadIdx.x == 0) {
        cnt[C_N * u + C_T_ATTN] = 0;
        if constexpr (RQ) {
            rq[RQ_SLOTS + slot] = 0;
            if (atomicAdd(&rq[RQ_DONE], 1u) == gridDim.y - 1) {
                rq[RQ_HEAD] = 0;
                rq[RQ_GRAB] = 0;
                rq[RQ_DONE] = 0;
                dsgpu::pdl_wait();   // this grid's completion then implies k_select's
            }
        }
    }
    TRACE(2, 4);
}

// Partials of one (unit, slice): k_attn's contract (attn.cu), with RQ the ready queue.
template <int D, int G, bool RQ>
__global__ void __launch_bounds__(ATT_THREADS) k_attn_mma(ds_gpu_attn_args a, const int32_t *sel, int k_cap, int slice,
                                                          int splits, float *pacc, float *pml, uint32_t *cnt, uint32_t *rq) {
    constexpr int WARPS = ATT_THREADS / 32;
    constexpr int KC = D / 32;   // 8-channel chunks of a K row per lane (chunks t4 + 4j)
    constexpr int VC = D / 64;   // of a V row per lane (chunks gid + 8j)
    constexpr int NT = D / 8;    // n-tiles of O
    static_assert(G >= 1 && G <= 8, "heads per group");
    TRACE(2, 0);
    if (sel) dsgpu::pdl_trigger();
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
    const int ns = (items + slice - 1) / slice;
    const int s0 = split_i * slice;
    if (s0 >= items) {
        if constexpr (RQ) unit_done<D, G, true>(a, u, ns, splits, pacc, pml, cnt, rq, slot);
        return;
    }
    const int s1 = min(s0 + slice, items);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gid = lane >> 2, t4 = lane & 3;
    // the query fragment: head gid's chunks t4 + 4j (zero rows for gid >= G)
    uint4 qa[KC];
#pragma unroll
    for (int j = 0; j < KC; j++)
        qa[j] = gid < G ? *(const uint4 *)(a.q + ((size_t)b * a.H + kvh * G + gid) * D + (t4 + 4 * j) * 8)
                        : make_uint4(0, 0, 0, 0);
    const float qscale = a.scale * 1.4426950408889634f;   // scores to log2 units: softmax on exp2
    float m = -INFINITY, l = 0;   // head gid's running max (same in the quad) and this lane's sum
    float acc[NT][2];             // O[gid][channel of (n-tile, 2t4 + i)]
#pragma unroll
    for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = 0;
    const size_t kvu = a.kv_batch_shared ? (size_t)kvh : (size_t)u;
    const uint16_t *K = a.k + kvu * a.n_max * D, *V = a.v + kvu * a.n_max * D;
    const int32_t *idx = sparse ? sel + (size_t)u * k_cap : nullptr;
    // One tile of 16 rows from its fragments: kr[h][j] = chunk t4 + 4j of row 8h + gid; vr[i][j] =
    // chunk gid + 8j of row 2t4 + (i & 1) + 8 (i >> 1); rows from `base` on, valid below s1.
    auto tile = [&](int base, const uint4 (&kr)[2][KC], const uint4 (&vr)[4][VC]) {
        // S: s[h][i] = score of head gid against tile row 8h + 2t4 + i
        float s[2][2] = {{0, 0}, {0, 0}};
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int st = 0; st < D / 16; st++) {
                const int j = st >> 1, w = (st & 1) * 2;
                mma_rows8(s[h][0], s[h][1], word(qa[j], w), word(qa[j], w + 1), word(kr[h][j], w), word(kr[h][j], w + 1));
            }
        float mx = m;
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const bool ok = base + 8 * h + 2 * t4 + i < s1;
                s[h][i] = ok ? s[h][i] * qscale : -INFINITY;
                mx = fmaxf(mx, s[h][i]);
            }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));   // the tile's first row is valid: finite
        const float corr = exp2f(m - mx);
        m = mx;
        float p[2][2];
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int i = 0; i < 2; i++) p[h][i] = exp2f(s[h][i] - mx);
        l = l * corr + (p[0][0] + p[0][1]) + (p[1][0] + p[1][1]);
        const uint32_t pa0 = pack_half2(p[0][0], p[0][1]), pa2 = pack_half2(p[1][0], p[1][1]);
        // O += P V, n-tile j: channel 8 * (gid + 8 * (j / 8)) + j % 8 of rows 2t4, 2t4+1 (b0) and
        // 2t4+8, 2t4+9 (b1), paired by byte permutes
#pragma unroll
        for (int j = 0; j < NT; j++) {
            const int c = j >> 3, e = j & 7;
            const uint32_t sel2 = (e & 1) ? 0x7632u : 0x5410u;
            const uint32_t b0 = __byte_perm(word(vr[0][c], e >> 1), word(vr[1][c], e >> 1), sel2);
            const uint32_t b1 = __byte_perm(word(vr[2][c], e >> 1), word(vr[3][c], e >> 1), sel2);
            acc[j][0] *= corr;
            acc[j][1] *= corr;
            mma_rows8(acc[j][0], acc[j][1], pa0, pa2, b0, b1);
        }
    };
    // lane r < 16 holds the position of a tile's row r
    auto position = [&](int base) {
        const int it = min(base + (lane & 15), s1 - 1);   // rows past the slice repeat its last
        return idx ? ld_index<RQ>(idx + it) : it;
    };
    TRACE(2, 1);
    // fragments straight from global memory into registers; the next tile's positions are
    // loaded while this tile's rows are in flight
    int pos = position(s0 + warp * 16);
    for (int base = s0 + warp * 16; base < s1; base += WARPS * 16) {
        const int pk0 = __shfl_sync(0xffffffffu, pos, gid), pk1 = __shfl_sync(0xffffffffu, pos, gid + 8);
        int pv[4];
#pragma unroll
        for (int i = 0; i < 4; i++) pv[i] = __shfl_sync(0xffffffffu, pos, 2 * t4 + (i & 1) + (i >> 1) * 8);
        uint4 kr[2][KC], vr[4][VC];
#pragma unroll
        for (int j = 0; j < KC; j++) {
            kr[0][j] = __ldg((const uint4 *)(K + (size_t)pk0 * D + (t4 + 4 * j) * 8));
            kr[1][j] = __ldg((const uint4 *)(K + (size_t)pk1 * D + (t4 + 4 * j) * 8));
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < VC; j++) vr[i][j] = __ldg((const uint4 *)(V + (size_t)pv[i] * D + (gid + 8 * j) * 8));
        if (base + WARPS * 16 < s1) pos = position(base + WARPS * 16);
        tile(base, kr, vr);
    }
    TRACE(2, 2);
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    // combine the block's warps, then the slice's partials as k_attn writes them
    __shared__ float sm_m[WARPS][G], sm_l[WARPS][G];
    __shared__ float sm_acc[WARPS][G][D];
    if (gid < G) {
        if (t4 == 0) { sm_m[warp][gid] = m; sm_l[warp][gid] = l; }
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int i = 0; i < 2; i++) sm_acc[warp][gid][8 * (2 * t4 + i + 8 * (j >> 3)) + (j & 7)] = acc[j][i];
    }
    __syncthreads();
    const size_t pbase = ((size_t)u * G) * splits;
    for (int e = threadIdx.x; e < G * D; e += ATT_THREADS) {
        const int g = e / D, c = e % D;
        float M = -INFINITY;
        for (int w = 0; w < WARPS; w++) M = fmaxf(M, sm_m[w][g]);
        float L = 0, A = 0;
        if (M != -INFINITY)
            for (int w = 0; w < WARPS; w++) {
                const float f = exp2f(sm_m[w][g] - M);
                L += sm_l[w][g] * f;
                A += sm_acc[w][g][c] * f;
            }
        const size_t pi = pbase + (size_t)g * splits + split_i;
        pacc[pi * D + c] = A;
        if (c == 0) { pml[2 * pi] = M; pml[2 * pi + 1] = L; }
    }
    unit_done<D, G, RQ>(a, u, ns, splits, pacc, pml, cnt, rq, slot);
}

template <int D, int G>
int launch(const ds_gpu_attn_args *a, const Plan &p, char *ws, bool sparse, uint32_t *rq, cudaStream_t st) {
    const int slice = sparse ? p.slice_s : p.slice_d, splits = sparse ? p.splits_s : p.splits_d;
    float *pacc = (float *)(ws + p.off_pacc), *pml = (float *)(ws + p.off_pml);
    const int32_t *sel = sparse ? (const int32_t *)(ws + p.off_sel) : nullptr;
    return (int)dsgpu::pdl_launch(sparse && dsgpu::pdl_enabled(), st,
                                  sparse && rq ? k_attn_mma<D, G, true> : k_attn_mma<D, G, false>, dim3(splits, p.U),
                                  dim3(ATT_THREADS), *a, sel, p.k_cap, slice, p.splits_max, pacc, pml,
                                  (uint32_t *)(ws + p.off_cnt), rq);
}

template <int D>
int launch_by_group(const ds_gpu_attn_args *a, const Plan &p, char *ws, bool sparse, uint32_t *rq, cudaStream_t st) {
    switch (p.G) {
    case 2: return launch<D, 2>(a, p, ws, sparse, rq, st);
    case 3: return launch<D, 3>(a, p, ws, sparse, rq, st);
    case 4: return launch<D, 4>(a, p, ws, sparse, rq, st);
    case 5: return launch<D, 5>(a, p, ws, sparse, rq, st);
    case 6: return launch<D, 6>(a, p, ws, sparse, rq, st);
    case 7: return launch<D, 7>(a, p, ws, sparse, rq, st);
    case 8: return launch<D, 8>(a, p, ws, sparse, rq, st);
    default: return (int)cudaErrorInvalidValue;
    }
}

// the queued kernel of (d, G), for the occupancy query
const void *mma_kernel(int d, int G) {
#define MK(G_) case G_: return d == 128 ? (const void *)k_attn_mma<128, G_, true> : (const void *)k_attn_mma<64, G_, true>;
    switch (G) { MK(2) MK(3) MK(4) MK(5) MK(6) MK(7) MK(8) default: return nullptr; }
#undef MK
}

}  // namespace

bool attn_mma_applies(int d, int G) {
    static const int off = tune("nomma", 0);
    return !off && G >= 2 && G <= 8 && (d == 64 || d == 128);
}

int attn_mma_resident(int d, int G) {
    static int cache[2][9];
    const int di = d == 128 ? 0 : 1;
    if (!attn_mma_applies(d, G)) return 0;
    if (!cache[di][G]) {
        int n = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, mma_kernel(d, G), ATT_THREADS, 0) != cudaSuccess || n < 1)
            n = 2;
        cache[di][G] = n < ATT_MAX_RESIDENT ? n : ATT_MAX_RESIDENT;
    }
    return cache[di][G];
}

int run_attn_mma(const ds_gpu_attn_args *a, const Plan &p, char *ws, bool sparse, uint32_t *rq, cudaStream_t st) {
    if (!attn_mma_applies(a->d, p.G)) return -1;
    return a->d == 128 ? launch_by_group<128>(a, p, ws, sparse, rq, st) : launch_by_group<64>(a, p, ws, sparse, rq, st);
}

}  // namespace dsattn
