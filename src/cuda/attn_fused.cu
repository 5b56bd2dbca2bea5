// attn_fused.cu — the whole Double Sparsity decode call in one kernel, for short caches where
// the two-kernel path of attn.cu is a chain of latencies rather than bytes (the rule and its
// measurements: run_fused).
#include "attn_impl.cuh"

namespace dsattn {
namespace {

// ---- small caches: the whole call in one kernel ----
// At short spans a DS call is a chain of latencies, not bytes: at B=1, n=4K the two-kernel path
// (attn.cu) spends ~17 us selecting 256 of 4096 positions (launch, scan, cluster threshold, the key
// re-reads from L2, the leader's refinement) and ~5 us attending, for ~4 MB. Here one cluster
// of CL blocks per unit does everything in shared memory: each block scores its contiguous
// span into 16-bit keys kept in shared memory, the cluster finds the exact threshold key in two
// rounds of histograms exchanged through distributed shared memory (11 bits, then the
// threshold bin's low 5), each block attends the selected rows of its own span (no list goes
// through global memory, no second kernel), and the leader merges the CL partials
// (log-sum-exp). Ties at the threshold key are taken lowest position first, as everywhere:
// blocks hold ascending spans, so block r takes what the lower ranks left of the quota, in
// position order. The selection is also written to the workspace (ds_gpu_attn_selected).
#define FUSED_THREADS 256
#define FUSED_SPAN 4096   // positions per block at most where the rule picks k_fused (run_fused)
#define FUSED_MAX_SPAN 16384   // keys per block (16-bit, shared memory), as offsets in 16 bits
#define FUSED_SU 4             // label rows per thread in flight

// Keys of rows [p0, p1) of unit u into keys[p - p0]; counts of their top 11 bits into hist.
// prep() (every thread, once, even for an empty span) builds q and returns qsum: it runs after
// the first rows' loads are issued, so the query's two dependent round trips (channel list,
// then q) overlap the label stream's first one.
template <int BITS, int WORDS, typename Prep>
__device__ void fused_score(const ds_gpu_attn_args &a, int u, int p0, int p1, const float *q, uint16_t *keys,
                            uint32_t *hist, Prep prep) {
    const uint64_t pol = l2_evict_first();
    const uint32_t *lab = (const uint32_t *)(a.labels + (size_t)u * a.n_max * WORDS * 4);
    const uint16_t *lo = a.lab_lo + (size_t)u * a.n_max, *st = a.lab_step + (size_t)u * a.n_max;
    float qsum = 0;
    // 4-bit rows of 16 bytes (r32@4) by dp2a (CodeDot); the other code formats keep the float
    // dot: with dp2a for all of them this kernel, which serves every format, spilled
    using CD = CodeDot<BITS, WORDS>;
    constexpr bool IDOT = BITS == 4 && WORDS == 4;
    int qp[CD::NP];
    float qstep = 0;
    for (int base = p0, first = 1; first || base < p1; base += FUSED_SU * FUSED_THREADS, first = 0) {
        uint32_t w[FUSED_SU][WORDS];
        float lof[FUSED_SU], stf[FUSED_SU];
        if (base < p1) {   // (an empty span issues no loads, but still runs prep)
#pragma unroll
            for (int s = 0; s < FUSED_SU; s++) {
                const int p = base + s * FUSED_THREADS + threadIdx.x;
                const uint32_t *row = lab + (size_t)(p < p1 ? p : p0) * WORDS;   // clamped: in bounds, unused
                if constexpr (WORDS >= 4) {
                    const uint4 v = ld_stream((const uint4 *)row, pol);
                    w[s][0] = v.x; w[s][1] = v.y; w[s][2] = v.z; w[s][3] = v.w;
                    if constexpr (WORDS == 8) {
                        const uint4 v2 = ld_stream((const uint4 *)row + 1, pol);
                        w[s][4] = v2.x; w[s][5] = v2.y; w[s][6] = v2.z; w[s][7] = v2.w;
                    }
                } else {
                    const uint2 v = ld_stream((const uint2 *)row, pol);
                    w[s][0] = v.x; w[s][1] = v.y;
                }
                if constexpr (BITS != 16) {
                    const int pc = p < p1 ? p : p0;
                    lof[s] = h2f(ld_stream(lo + pc, pol));
                    stf[s] = h2f(ld_stream(st + pc, pol));
                } else { lof[s] = 0; stf[s] = 0; }
            }
        }
        if (first) {
            qsum = prep();
            if constexpr (IDOT) qstep = CD::pack([&](int j) { return q[j]; }, qp);
        }
        if (base >= p1) break;
#pragma unroll
        for (int s = 0; s < FUSED_SU; s++) {
            const int p = base + s * FUSED_THREADS + threadIdx.x;
            if (p >= p1) continue;
            float dot;
            if constexpr (IDOT) dot = CD::dot(w[s], qp, qstep);
            else dot = label_dot<BITS, WORDS>(w[s], q);
            const uint32_t key = score_key(BITS == 16 ? dot : stf[s] * dot + lof[s] * qsum);
            keys[p - p0] = (uint16_t)key;
            atomicAdd(&hist[key >> LOW_BITS], 1u);
        }
    }
}

template <int D, int G>
__global__ void __launch_bounds__(FUSED_THREADS, G > 4 ? 1 : 2) k_fused(ds_gpu_attn_args a, int32_t *sel, int k_cap, int span_max) {
    dsgpu::pdl_wait();
    dsgpu::pdl_trigger();
    TRACE(4, 0);
    constexpr int WARPS = FUSED_THREADS / 32, LPR = D / 8, RPW = 32 / LPR, UNROLL = 4;
    constexpr int ROWS_PER_ITER = WARPS * RPW * UNROLL;
    cg::cluster_group cl = cg::this_cluster();
    const int CL = (int)cl.num_blocks(), rank = (int)cl.block_rank();
    const int u = blockIdx.y, b = u / a.H_kv, kvh = u % a.H_kv;
    const int n = a.seq_len[b], k = k_for(n, a.tokens, a.tokens_frac);
    const bool sparse = unit_sparse(a, n, k);
    const int W = sparse ? recent_for(a.recent, n, k) : 0;   // the recent window
    const int nc = n - 1 - W;   // scored: [0, nc); the window and the current token, [nc, n), are always attended
    const int span = cluster_span(n, CL);
    const int p0 = min(rank * span, n), p1 = min(p0 + span, n);
    const int s1 = sparse ? max(p0, min(p1, nc)) : p1;   // scored rows [p0, s1)
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane / LPR, cc = lane % LPR;   // row within the warp step, 8-channel chunk
    // the attention's query slice, loaded now: its round trip overlaps the selection
    uint4 qraw[G];
#pragma unroll
    for (int g = 0; g < G; g++) qraw[g] = *(const uint4 *)(a.q + ((size_t)b * a.H + kvh * G + g) * D + cc * 8);

    // dynamic shared memory: keys and the selected rows' offsets (span_max each), then a region
    // used first by the histograms and then by the attention's per-warp partials
    extern __shared__ __align__(16) unsigned char smem[];
    uint16_t *keys = (uint16_t *)smem;
    uint16_t *list = keys + span_max;
    float *region = (float *)(list + span_max);   // 4 * span_max bytes above: 16-byte aligned
    uint32_t *hist = (uint32_t *)region, *tot = hist + HIST_BINS;
    __shared__ float ql[128];
    __shared__ uint32_t xh[33];                             // this block's low-bit histogram of the bin, count above it
    __shared__ uint32_t allh[CL_MAX][33];
    __shared__ int s_key, s_take, s_off;                    // threshold key; ties this block takes; its output offset
    __shared__ float fin_m[G], fin_l[G], fin_acc[G][D];     // this block's partial, read by the leader

    int cnt;   // rows this block attends
    if (sparse) {
        const int R = a.r, words = a.bits == 16 ? R / 2 : R * a.bits / 32;
        auto prep = [&]() {
            query_labels(a, u, R, ql);
            for (int i = threadIdx.x; i < HIST_BINS; i += FUSED_THREADS) hist[i] = 0;
            if (threadIdx.x < 33) xh[threadIdx.x] = 0;
            __syncthreads();
            float qs = 0;
            for (int j = 0; j < R; j++) qs += ql[j];
            return qs;
        };
#define FS(B_, W_) \
        if (a.bits == B_ && words == W_) fused_score<B_, W_>(a, u, p0, s1, ql, keys, hist, prep);
        FS(16, 2) FS(16, 4) FS(16, 8) FS(8, 2) FS(8, 4) FS(8, 8) FS(4, 2) FS(4, 4) FS(4, 8) FS(2, 2) FS(2, 4) FS(2, 8)
#undef FS
        TRACE(4, 1);
        // round 1: the cluster's histogram of the top 11 bits (each block sums a slice of bins)
        cl.sync();
        const int slice = HIST_BINS / CL;
        for (int i = threadIdx.x; i < slice; i += FUSED_THREADS) {
            const int bin = rank * slice + i;
            uint32_t v[CL_MAX];
#pragma unroll
            for (int r = 0; r < CL_MAX; r++) v[r] = r < CL ? *cl.map_shared_rank(&hist[bin], r) : 0u;
            uint32_t s = 0;
#pragma unroll
            for (int r = 0; r < CL_MAX; r++) s += v[r];
            tot[i] = s;
        }
        cl.sync();
        {
            constexpr int PER = HIST_BINS / FUSED_THREADS;
            uint32_t v[PER];
#pragma unroll
            for (int j = 0; j < PER; j++) {
                const int bin = threadIdx.x + FUSED_THREADS * j;
                v[j] = *cl.map_shared_rank(&tot[bin % slice], bin / slice);
            }
#pragma unroll
            for (int j = 0; j < PER; j++) hist[threadIdx.x + FUSED_THREADS * j] = v[j];
        }
        __syncthreads();
        int b1, above1;
        find_threshold<true>(hist, k - 1 - W, &b1, &above1);   // -1: nothing but the window and the current token
        TRACE(4, 2);
        // round 2: this block's keys in the bin by their low bits, and its count above the bin;
        // thread t holds a contiguous chunk of the span (position order, for the ties below)
        const int len = s1 - p0, per = (len + FUSED_THREADS - 1) / FUSED_THREADS;
        const int c0 = min(threadIdx.x * per, len), c1 = min(c0 + per, len);
        int gt = 0;
        if (b1 >= 0)
            for (int i = c0; i < c1; i++) {
                const int bin = keys[i] >> LOW_BITS;
                gt += bin > b1;
                if (bin == b1) atomicAdd(&xh[keys[i] & 31], 1u);
            }
        gt = __reduce_add_sync(0xffffffffu, gt);
        if ((threadIdx.x & 31) == 0 && gt) atomicAdd(&xh[32], (uint32_t)gt);
        cl.sync();
        for (int i = threadIdx.x; i < 33 * CL; i += FUSED_THREADS) allh[i / 33][i % 33] = *cl.map_shared_rank(&xh[i % 33], i / 33);
        __syncthreads();
        if (threadIdx.x < 32) {
            // warp 0: lane = low-bit bin; the threshold key, then each rank's share
            const int lane = threadIdx.x;
            const int need2 = (k - 1 - W) - above1;
            uint32_t t2 = 0;
            for (int r = 0; r < CL; r++) t2 += allh[r][lane];
            // count in bins above this lane's: suffix sum over lanes
            uint32_t incl = t2;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const uint32_t x = __shfl_down_sync(0xffffffffu, incl, o);
                if (lane + o < 32) incl += x;
            }
            const uint32_t above = incl - t2;
            const unsigned hit = __ballot_sync(0xffffffffu, b1 >= 0 && (int)above < need2 && (int)incl >= need2);
            const int b2 = hit ? 31 - __clz(hit) : -1;   // exactly one lane when need2 > 0
            const int take = b2 >= 0 ? need2 - (int)__shfl_sync(0xffffffffu, above, b2) : 0;
            // lane r < CL: rank r's rows above the threshold key, its ties, what it takes
            int mine = 0, eq = 0;
            if (lane < CL && b2 >= 0) {
                mine = (int)allh[lane][32];
                for (int bin = b2 + 1; bin < 32; bin++) mine += (int)allh[lane][bin];
                eq = (int)allh[lane][b2];
            }
            int eq_before = eq, before = 0;
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) {
                const int x = __shfl_up_sync(0xffffffffu, eq_before, o);
                if (lane >= o) eq_before += x;
            }
            eq_before -= eq;
            const int t = max(0, min(eq, take - eq_before));
            int all = mine + t;
            before = all;
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) {
                const int x = __shfl_up_sync(0xffffffffu, before, o);
                if (lane >= o) before += x;
            }
            before -= all;
            if (lane == rank) {
                s_key = b2 >= 0 ? (b1 << LOW_BITS) | b2 : 0x10000;   // above every key: none taken
                s_take = t;
                s_off = before;
            }
        }
        __syncthreads();
        // compaction in position order: rows above the key, then the first s_take ties
        const int T = s_key;
        int ngt = 0, neq = 0;
        for (int i = c0; i < c1; i++) { ngt += keys[i] > T; neq += keys[i] == T; }
        typedef cub::BlockScan<unsigned long long, FUSED_THREADS> Scan;
        __shared__ typename Scan::TempStorage tmp;
        unsigned long long off, total;
        Scan(tmp).ExclusiveSum((unsigned long long)ngt | ((unsigned long long)neq << 32), off, total);
        const int tgt = (int)(uint32_t)total, take = s_take;
        int og = (int)(uint32_t)off, oe = (int)(off >> 32);
        for (int i = c0; i < c1; i++) {
            const int key = keys[i];
            if (key > T) list[og++] = (uint16_t)i;
            else if (key == T) { if (oe < take) list[tgt + oe] = (uint16_t)i; oe++; }
        }
        cnt = tgt + take;
        __syncthreads();
        // the selection for ds_gpu_attn_selected; then this block's part of the recent window
        // and the current token, [nc, n) (always attended: entries k - 1 - W.. of the selection)
        int32_t *out = sel + (size_t)u * k_cap + s_off;
        for (int i = threadIdx.x; i < cnt; i += FUSED_THREADS) out[i] = p0 + list[i];
        const int w0 = max(p0, nc), nw = max(0, p1 - w0);
        for (int i = threadIdx.x; i < nw; i += FUSED_THREADS) {
            list[cnt + i] = (uint16_t)(w0 + i - p0);
            sel[(size_t)u * k_cap + (k - 1 - W) + (w0 + i - nc)] = w0 + i;
        }
        cnt += nw;
        __syncthreads();
        TRACE(4, 3);
    } else {
        cnt = p1 - p0;   // dense: every row of the span
    }

    // attention over this block's rows, as k_attn (a KV row read once for the group's heads)
    float q[G][8];
#pragma unroll
    for (int g = 0; g < G; g++) query_log2(qraw[g], a.scale, q[g]);
    float m[G], l[G], acc[G][8];
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = -INFINITY; l[g] = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[g][i] = 0;
    }
    const uint16_t *K = a.k + (size_t)u * a.n_max * D, *V = a.v + (size_t)u * a.n_max * D;
    for (int base = 0; base < cnt; base += ROWS_PER_ITER) {
        uint4 kv[UNROLL], vv[UNROLL];
        bool ok[UNROLL];
#pragma unroll
        for (int j = 0; j < UNROLL; j++) {
            const int it = base + (j * WARPS + warp) * RPW + sub;
            ok[j] = it < cnt;
            if (ok[j]) {
                const int pos = p0 + (sparse ? (int)list[it] : it);
                kv[j] = __ldg((const uint4 *)(K + (size_t)pos * D + cc * 8));
                vv[j] = __ldg((const uint4 *)(V + (size_t)pos * D + cc * 8));
            } else {
                kv[j] = make_uint4(0, 0, 0, 0);
                vv[j] = kv[j];
            }
        }
        attn_rows<D, G, UNROLL>(q, kv, vv, ok, m, l, acc);
    }
    TRACE(4, 4);
    // the RPW row streams of a warp by shuffles, then the warps through shared memory (the
    // histogram region is free again), then the CL blocks through the leader
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int o = LPR; o < 32; o <<= 1) {
            const float mo = __shfl_xor_sync(0xffffffffu, m[g], o), lo_ = __shfl_xor_sync(0xffffffffu, l[g], o);
            const float M = fmaxf(m[g], mo);
            const float w0 = M == -INFINITY ? 0.f : exp2f(m[g] - M), w1 = M == -INFINITY ? 0.f : exp2f(mo - M);
            l[g] = l[g] * w0 + lo_ * w1;
#pragma unroll
            for (int i = 0; i < 8; i++) acc[g][i] = acc[g][i] * w0 + __shfl_xor_sync(0xffffffffu, acc[g][i], o) * w1;
            m[g] = M;
        }
    float *wm = region, *wl = wm + WARPS * G, *wacc = wl + WARPS * G;   // [WARPS][G], [WARPS][G], [WARPS][G][D]
    if (sub == 0) {
#pragma unroll
        for (int g = 0; g < G; g++) {
            if (cc == 0) { wm[warp * G + g] = m[g]; wl[warp * G + g] = l[g]; }
#pragma unroll
            for (int i = 0; i < 8; i++) wacc[(warp * G + g) * D + cc * 8 + i] = acc[g][i];
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < G * D; e += FUSED_THREADS) {
        const int g = e / D, c = e % D;
        float M = -INFINITY;
        for (int w = 0; w < WARPS; w++) M = fmaxf(M, wm[w * G + g]);
        float L = 0, A = 0;
        if (M != -INFINITY)
            for (int w = 0; w < WARPS; w++) {
                const float x = exp2f(wm[w * G + g] - M);
                L += wl[w * G + g] * x;
                A += wacc[(w * G + g) * D + c] * x;
            }
        fin_acc[g][c] = A;
        if (c == 0) { fin_m[g] = M; fin_l[g] = L; }
    }
    TRACE(4, 5);
    cl.sync();
    if (rank == 0)
        for (int e = threadIdx.x; e < G * D; e += FUSED_THREADS) {
            const int g = e / D, c = e % D;
            float mr[CL_MAX];
            float M = -INFINITY;
#pragma unroll
            for (int r = 0; r < CL_MAX; r++) {
                mr[r] = r < CL ? *cl.map_shared_rank(&fin_m[g], r) : -INFINITY;
                M = fmaxf(M, mr[r]);
            }
            float L = 0, A = 0;
#pragma unroll
            for (int r = 0; r < CL_MAX; r++)
                if (r < CL && mr[r] != -INFINITY) {
                    const float x = exp2f(mr[r] - M);
                    L += *cl.map_shared_rank(&fin_l[g], r) * x;
                    A += *cl.map_shared_rank(&fin_acc[g][c], r) * x;
                }
            a.out[((size_t)b * a.H + kvh * G + g) * D + c] = f2h(L > 0 ? A / L : 0.0f);
        }
    TRACE(4, 6);
    cl.sync();   // the leader has read every block's partial
}

// The fused kernel's shared memory: keys and row offsets (2 bytes each per span position), then
// the histograms (2 x 2048 bins), later the per-warp attention partials.
size_t fused_smem(int span_max, int d, int G) {
    const size_t part = (size_t)(FUSED_THREADS / 32) * G * (d + 2) * 4, hist = 2 * HIST_BINS * 4;
    return (size_t)4 * span_max + (part > hist ? part : hist);
}

template <int D, int G>
int launch_fused(const ds_gpu_attn_args *a, const Plan &p, char *ws, int CL, int span_max, cudaStream_t st) {
    const size_t smem = fused_smem(span_max, D, G);
    static size_t allowed = 0;
    if (smem > allowed) {
        cudaError_t e = cudaFuncSetAttribute(k_fused<D, G>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return (int)e;
        allowed = smem;
    }
    cudaLaunchConfig_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cudaLaunchAttribute at[2];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = CL;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = dim3(CL, p.U);
    cfg.blockDim = dim3(FUSED_THREADS);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = at;
    cfg.numAttrs = dsgpu::pdl_enabled() ? 2 : 1;
    return (int)cudaLaunchKernelEx(&cfg, k_fused<D, G>, *a, (int32_t *)(ws + p.off_sel), p.k_cap, span_max);
}

// Blocks of k_fused<D, G> resident per SM (registers decide: 2 up to G = 4, 1 above), cached.
template <int D, int G>
int fused_resident() {
    static int n = 0;
    if (!n && (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k_fused<D, G>, FUSED_THREADS, fused_smem(2048, D, G)) !=
                   cudaSuccess || n < 1))
        n = 1;
    return n;
}

// Clusters of CL (2 or 4) blocks of k_fused<D, G> resident at once, at the shared memory of the
// longest span the rule allows (cudaOccupancyMaxActiveClusters; 0 = unknown), cached. Blocks per
// SM times SMs overstates it: a cluster's blocks share a GPC (the same bound as k_select's,
// attn.cu). The first call may come during a graph capture: the capture mode is relaxed around it.
template <int D, int G>
int fused_clusters(int CL) {
    static int n[3] = {-1, -1, -1};
    const int i = CL == 2 ? 1 : CL == 4 ? 2 : 0;
    if (!i) return 0;
    if (n[i] < 0) {
        const size_t smem = fused_smem(FUSED_SPAN, D, G);
        cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
        cudaThreadExchangeStreamCaptureMode(&mode);
        int c = 0;
        // the opt-in at the largest span any launch may use, so that launch_fused, which raises
        // it as it needs, never finds it lowered behind its back
        if (cudaFuncSetAttribute(k_fused<D, G>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)fused_smem(FUSED_MAX_SPAN, D, G)) == cudaSuccess) {
            cudaLaunchConfig_t cfg;
            memset(&cfg, 0, sizeof cfg);
            cudaLaunchAttribute at;
            at.id = cudaLaunchAttributeClusterDimension;
            at.val.clusterDim.x = CL;
            at.val.clusterDim.y = 1;
            at.val.clusterDim.z = 1;
            cfg.gridDim = dim3(CL);
            cfg.blockDim = dim3(FUSED_THREADS);
            cfg.dynamicSmemBytes = smem;
            cfg.attrs = &at;
            cfg.numAttrs = 1;
            if (cudaOccupancyMaxActiveClusters(&c, k_fused<D, G>, &cfg) != cudaSuccess) c = 0;
        }
        cudaGetLastError();   // a failed query leaves the per-SM bound in force, not an error
        cudaThreadExchangeStreamCaptureMode(&mode);
        n[i] = c;
    }
    return n[i];
}

// launch (CL > 0), report the blocks resident per SM (CL == 0), or the clusters of -CL blocks
// resident at once (CL < 0)
template <int D>
int fused_by_group(const ds_gpu_attn_args *a, const Plan &p, char *ws, int CL, int span_max, cudaStream_t st) {
#define FG(G_)                                                                                              \
    case G_:                                                                                                \
        return CL > 0 ? launch_fused<D, G_>(a, p, ws, CL, span_max, st)                                     \
                      : CL == 0 ? fused_resident<D, G_>() : fused_clusters<D, G_>(-CL);
    switch (p.G) {
        FG(1) FG(2) FG(3) FG(4) FG(5) FG(6) FG(7) FG(8)
    default: return CL > 0 ? (int)cudaErrorInvalidValue : CL == 0 ? 1 : 0;
    }
#undef FG
}

// The whole DS call in one kernel (k_fused) where it is a chain of latencies: clusters of CL
// blocks, CL the largest of 4, 2, 1 that keeps the grid within one wave, and used only where
// that leaves each block at most fused_span(G) positions and the grid fits in one wave at all.
// Measured on the H200 (bench/NOTES.md, 2026-12-03, r8@16, us, two-kernel path -> fused):
// B=1 4K 21.9 -> 15.7, 8K 24.2 -> 18.5, 16K 26.2 -> 24.8 (CL 4; CL 8 was slower than the
// two-kernel path: 23.7, 26.9, 32.3); B=8 4K 29.8 -> 25.5 (CL 1), but 8K 47.1 -> 50.0 and 16K
// 72.2 -> 111 (a block per unit scanning 8K-16K rows), and B=32 (grids of several waves) slower.
// "Fits in one wave" counts blocks per SM and, for clusters of 2 and 4, the clusters that can be
// resident at once (fused_clusters). Label rows of 8, 16 or 32 bytes. DSINFER_GPU_TUNE:
// nofused=1 off, fcl=N forces CL (up to 8), fspan=N the span limit, fcap=0 the blocks-per-SM
// bound alone. Returns -1 where the fused kernel does not apply.

// Span limit by group size. k_fused attends on CUDA cores, G FMAs per channel and row, where the
// two-kernel path's k_attn_mma uses the tensor cores for G >= 2 (attn_mma.cu); measured on the
// H200 (bench/NOTES.md, 2026-12-04, op bench r8@16): at G = 4 spans of 4096 lost (B=4, 16K:
// 33.1 us fused, 29.2 two kernels) and spans of 2048 won or tied; at G = 8 (one block per SM,
// as for G >= 5) the fused kernel was never faster (B=1, 16K: 36.1 against 23.9 us).
int fused_span(int G) { return G <= 2 ? FUSED_SPAN : G <= 4 ? FUSED_SPAN / 2 : 0; }
}  // namespace

int run_fused(const ds_gpu_attn_args *a, const Plan &p, char *ws, cudaStream_t st) {
    const int bytes = a->bits == 16 ? 2 * a->r : (a->r * a->bits + 7) / 8;
    if (tune("nofused", 0) || a->group_max || (bytes != 8 && bytes != 16 && bytes != 32) || (a->r * a->bits) % 32 || a->r > 128)
        return -1;
    if (a->d != 64 && a->d != 128) return (int)cudaErrorInvalidValue;
    const long wave = (long)sm_count() *
                      (a->d == 128 ? fused_by_group<128>(a, p, ws, 0, 0, st) : fused_by_group<64>(a, p, ws, 0, 0, st));
    // the largest cluster whose grid fits at once: by blocks per SM, and by resident clusters
    auto fits = [&](int c) {
        if ((long)p.U * c > wave) return false;
        if (c == 1 || tune("fcap", 1) == 0) return true;
        const int n = a->d == 128 ? fused_by_group<128>(a, p, ws, -c, 0, st) : fused_by_group<64>(a, p, ws, -c, 0, st);
        return n <= 0 || p.U <= n;
    };
    int c = 4;
    while (c > 1 && !fits(c)) c /= 2;
    const int t = tune("fcl", 0);
    const int CL = t == 1 || t == 2 || t == 4 || t == 8 ? t : c;
    const int span_max = cluster_span(a->max_len, CL);   // k_fused's span at the longest sequence
    if (!t && ((long)p.U * CL > wave || span_max > tune("fspan", fused_span(p.G)))) return -1;
    if (span_max > FUSED_MAX_SPAN) return -1;
    return a->d == 128 ? fused_by_group<128>(a, p, ws, CL, span_max, st) : fused_by_group<64>(a, p, ws, CL, span_max, st);
}

#ifdef DS_TRACE
int fused_trace(unsigned long long *buf) { return (int)cudaMemcpyToSymbol(g_trace, &buf, sizeof buf); }
#endif

}  // namespace dsattn
