// read_bw.cu — how fast can one kernel read device memory, by load method? The decode GEMVs
// stream weights once per step; this separates "the access method's ceiling" from "the GEMV's
// own losses". Each case reads the same bytes (rotated through a region larger than L2) and
// prints GB/s:
//   plain-v4      every thread: grid-stride 16-byte loads, 4 in flight (ld.global.cs)
//   plain-v4/occ  the same at a quarter of the threads per SM
//   bulk          one thread per block issues cp.async.bulk copies (TMA engine) into a ring of
//                 shared-memory stages tracked by mbarriers; nothing else touches the data
//   build-cuda/read_bw [MB per pass ...]     (default: 34 101 180 1024)
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_) { fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } } while (0)

__global__ void rd_plain(const uint4 *__restrict__ p, size_t n, uint32_t *out) {
    uint32_t acc = 0;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride), d = __ldcs(p + i + 3 * stride);
        acc ^= a.x ^ b.y ^ c.z ^ d.w;
    }
    for (; i < n; i += stride) acc ^= __ldcs(p + i).x;
    if (acc == 0x9E3779B9u) out[0] = acc;   // keeps the loads; practically never taken
}

template <int STAGES>
__global__ void rd_bulk(const char *__restrict__ p, size_t bytes, int chunk, uint32_t *out) {
    extern __shared__ __align__(128) char stage[];
    __shared__ __align__(8) uint64_t bar[STAGES];
    if (threadIdx.x != 0) return;
    const size_t nchunks = bytes / chunk;
    for (int s = 0; s < STAGES; s++) {
        uint32_t b = (uint32_t)__cvta_generic_to_shared(&bar[s]);
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(b));
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    auto issue = [&](int s, size_t c) {
        uint32_t b = (uint32_t)__cvta_generic_to_shared(&bar[s]);
        uint32_t d = (uint32_t)__cvta_generic_to_shared(stage + (size_t)s * chunk);
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b), "r"(chunk) : "memory");
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                     ::"r"(d), "l"(p + c * chunk), "r"(chunk), "r"(b) : "memory");
    };
    size_t c = blockIdx.x;
    int issued = 0;
    for (int s = 0; s < STAGES && c + (size_t)s * gridDim.x < nchunks; s++, issued++) issue(s, c + (size_t)s * gridDim.x);
    uint32_t phase[STAGES] = {0};
    uint32_t acc = 0;
    for (int k = 0; c < nchunks; c += gridDim.x, k++) {
        const int s = k % STAGES;
        uint32_t b = (uint32_t)__cvta_generic_to_shared(&bar[s]);
        uint32_t done = 0;
        while (!done)
            asm volatile("{ .reg .pred q; mbarrier.try_wait.parity.shared::cta.b64 q, [%1], %2; selp.u32 %0, 1, 0, q; }"
                         : "=r"(done) : "r"(b), "r"(phase[s]) : "memory");
        phase[s] ^= 1;
        acc ^= *(const uint32_t *)(stage + (size_t)s * chunk);
        const size_t nxt = c + (size_t)STAGES * gridDim.x;
        if (nxt < nchunks) issue(s, nxt);
    }
    if (acc == 0x9E3779B9u) out[0] = acc;
}

int main(int argc, char **argv) {
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const size_t region = (size_t)4 << 30;   // passes rotate through 4 GB: never L2-resident
    char *buf;
    uint32_t *out;
    CK(cudaMalloc(&buf, region));
    CK(cudaMalloc(&out, 4));
    CK(cudaMemset(buf, 1, region));
    int sizes[8] = {34, 101, 180, 1024}, ns = 4;
    if (argc > 1) { ns = 0; for (int i = 1; i < argc && ns < 8; i++) sizes[ns++] = atoi(argv[i]); }
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    const int STG = 4, CHUNK = 16384;
    CK(cudaFuncSetAttribute(rd_bulk<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, STG * CHUNK));
    printf("| MB per pass | plain-v4 GB/s | plain-v4/occ GB/s | bulk GB/s |\n|---|---|---|---|\n");
    for (int si = 0; si < ns; si++) {
        const size_t bytes = ((size_t)sizes[si] << 20) / CHUNK * CHUNK;
        const int passes = (int)(region / bytes) < 24 ? (int)(region / bytes) : 24;
        double gbs[3];
        for (int m = 0; m < 3; m++) {
            float best = 1e30f;
            for (int rep = 0; rep < 3; rep++) {
                CK(cudaEventRecord(e0));
                for (int i = 0; i < passes; i++) {
                    const char *src = buf + (size_t)i * bytes;
                    if (m == 0) rd_plain<<<sms * 8, 256>>>((const uint4 *)src, bytes / 16, out);
                    else if (m == 1) rd_plain<<<sms * 2, 256>>>((const uint4 *)src, bytes / 16, out);
                    else rd_bulk<4><<<sms * 3, 32, STG * CHUNK>>>(src, bytes, CHUNK, out);
                }
                CK(cudaEventRecord(e1));
                CK(cudaEventSynchronize(e1));
                CK(cudaGetLastError());
                float ms;
                CK(cudaEventElapsedTime(&ms, e0, e1));
                if (ms < best) best = ms;
            }
            gbs[m] = (double)bytes * passes / (best / 1e3) / 1e9;
        }
        printf("| %d | %.0f | %.0f | %.0f |\n", sizes[si], gbs[0], gbs[1], gbs[2]);
    }
    return 0;
}
