// backend.cu — CUDA side of the backend seam (src/backend.h). Device discovery for now; the
// GPU forward pass and the Double Sparsity kernels are built behind the same header.
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "backend.h"

int ds_backend_gpu_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver" error
        return 0;
    }
    return n;
}

ds_status ds_backend_gpu_describe(int i, char *buf, size_t cap) {
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, i);
    if (e != cudaSuccess) {
        if (cap) buf[0] = 0;
        return ds_error(DS_ERR_UNSUPPORTED, "GPU %d: %s", i, cudaGetErrorString(e));
    }
    snprintf(buf, cap, "%s, %.1f GiB, compute capability %d.%d, %d SMs", p.name,
             (double)p.totalGlobalMem / (1u << 30), p.major, p.minor, p.multiProcessorCount);
    return DS_OK;
}

const char *ds_backend_name(void) { return "cuda"; }
}
