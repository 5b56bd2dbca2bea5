// gather_bw.cu — the read ceiling of Double Sparsity's attention stage: how fast can one kernel
// read k scattered K and V rows (256 bytes each at head_dim 128, fp16) out of an n-row cache per
// (sequence, head), against reading every row (what dense attention reads)? No arithmetic
// besides an XOR that keeps the loads: the result is a ceiling for k_attn, not a model of it.
//   gather  the rows of k = n/16 positions per unit, one drawn at random from each run of 16
//           (sorted, ~4 KB apart: the spread of a real selection), their index read from global
//           memory first, as k_attn does; four position sets rotate so that L2 holds little of
//           the next pass
//   stream  every row of every unit (positions 0..n-1): the dense read
// Both: a half-warp reads one row (16 lanes x 16 bytes), U = 4 or 8 rows in flight per
// half-warp, 8 blocks of 256 threads per SM, evict-first loads. Times: events around P back-to-back launches, best
// of 3, divided by P (so a launch's ramp and tail count, as they do for a real call).
//   build-cuda/gather_bw [UNITS:N ...]     (default: 256:65536 32:65536, B=8 and B=1 x 32 heads)
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_) { fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } } while (0)

template <int U>
__global__ void __launch_bounds__(256) k_gather(const uint4 *__restrict__ K, const uint4 *__restrict__ V,
                                                const int32_t *__restrict__ pos, int n, int k, long rows, uint32_t *out) {
    const int lane = threadIdx.x & 15;
    const long g = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 4, ng = ((long)gridDim.x * blockDim.x) >> 4;
    uint32_t acc = 0;
    for (long r0 = g; r0 < rows; r0 += ng * U) {
        uint4 a[U], b[U];
#pragma unroll
        for (int j = 0; j < U; j++) {
            const long r = r0 + (long)j * ng;
            a[j] = b[j] = make_uint4(0, 0, 0, 0);
            if (r < rows) {
                const long row = (r / k) * n + (pos ? __ldg(pos + r) : (int)(r % k));   // [unit][n] rows
                a[j] = __ldcs(K + row * 16 + lane);
                b[j] = __ldcs(V + row * 16 + lane);
            }
        }
#pragma unroll
        for (int j = 0; j < U; j++) acc ^= a[j].x ^ a[j].w ^ b[j].y ^ b[j].z;
    }
    if (acc == 0x9E3779B9u) out[0] = acc;   // keeps the loads; practically never taken
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next32(void) {   // xorshift64*
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return (uint32_t)((rng * 2685821657736338717ull) >> 32);
}

int main(int argc, char **argv) {
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    int units[8] = {256, 32}, ns[8] = {65536, 65536}, nc = 2;
    if (argc > 1) {
        nc = 0;
        for (int i = 1; i < argc && nc < 8; i++)
            if (sscanf(argv[i], "%d:%d", &units[nc], &ns[nc]) == 2 && units[nc] > 0 && ns[nc] >= 16) nc++;
            else { fprintf(stderr, "gather_bw: expected UNITS:N, got '%s'\n", argv[i]); return 2; }
    }
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    uint32_t *out;
    CK(cudaMalloc(&out, 4));
    printf("| units | n | read | MB per launch | us per launch | GB/s |\n|---|---|---|---|---|---|\n");
    for (int c = 0; c < nc; c++) {
        const int U = units[c], n = ns[c], k = n / 16;
        const size_t rows_all = (size_t)U * n, bytes = rows_all * 256;   // per K (and per V)
        uint4 *K, *V;
        int32_t *pos;
        CK(cudaMalloc(&K, bytes));
        CK(cudaMalloc(&V, bytes));
        CK(cudaMemset(K, 1, bytes));
        CK(cudaMemset(V, 2, bytes));
        const int SETS = 4;
        CK(cudaMalloc(&pos, sizeof(int32_t) * (size_t)U * k * SETS));
        int32_t *h = (int32_t *)malloc(sizeof(int32_t) * (size_t)U * k * SETS);
        for (size_t i = 0; i < (size_t)U * k * SETS; i++) h[i] = (int32_t)((i % k) * 16 + next32() % 16);
        CK(cudaMemcpy(pos, h, sizeof(int32_t) * (size_t)U * k * SETS, cudaMemcpyHostToDevice));
        free(h);
        for (int mode = 0; mode < 3; mode++) {   // 0 gather U=4, 1 gather U=8, 2 stream
            const bool gather = mode < 2;
            const long rows = gather ? (long)U * k : (long)rows_all;
            const int P = gather ? 16 : 2;
            float best = 1e30f;
            for (int rep = 0; rep < 3; rep++) {
                CK(cudaEventRecord(e0));
                for (int i = 0; i < P; i++) {
                    const int32_t *ps = gather ? pos + (size_t)(i % SETS) * U * k : NULL;
                    if (mode == 1) k_gather<8><<<sms * 8, 256>>>(K, V, ps, n, k, rows, out);
                    else k_gather<4><<<sms * 8, 256>>>(K, V, ps, n, gather ? k : n, rows, out);
                }
                CK(cudaEventRecord(e1));
                CK(cudaEventSynchronize(e1));
                CK(cudaGetLastError());
                float ms;
                CK(cudaEventElapsedTime(&ms, e0, e1));
                if (ms < best) best = ms;
            }
            const double us = best * 1e3 / P, mb = (double)rows * 512 / 1e6;
            printf("| %d | %d | %s | %.1f | %.1f | %.0f |\n", U, n, mode == 0 ? "gather k = n/16, 4 rows in flight" : mode == 1 ? "gather k = n/16, 8 rows in flight" : "stream all n", mb, us,
                   mb / us * 1e3);
        }
        CK(cudaFree(K)); CK(cudaFree(V)); CK(cudaFree(pos));
    }
    return 0;
}
