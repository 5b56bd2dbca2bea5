// pdl.cuh — programmatic dependent launch (sm_90): a kernel launched with the
// ProgrammaticStreamSerialization attribute may start while its predecessor in the stream is
// still running. Such a kernel must call pdl_wait() before it reads anything the predecessor
// wrote (or writes anything the predecessor reads); it may read constant data (weights) first,
// which is the point: decode kernels are short, and without this every kernel boundary costs a
// drain, a launch and a ramp-up of the weight stream.
// pdl_trigger() lets the successor be scheduled now instead of when this grid exits; it does not
// make this kernel's writes visible (the successor's pdl_wait() waits for this grid to finish).
// Both are no-ops when the kernel was launched without the attribute.
#pragma once

namespace dsgpu {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

}  // namespace dsgpu

#ifndef __CUDACC_RTC__
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

namespace dsgpu {

// DSINFER_GPU_PDL=0 turns programmatic dependent launch off (for comparison).
inline bool pdl_enabled() {
    static const int on = !getenv("DSINFER_GPU_PDL") || atoi(getenv("DSINFER_GPU_PDL")) > 0;
    return on;
}

// Launch `k` on `st`, as a programmatic dependent launch when `pdl` is set. Every kernel launched
// this way must call pdl_wait() before touching its predecessor's data.
template <typename... KArgs, typename... Args>
cudaError_t pdl_launch(bool pdl, cudaStream_t st, void (*k)(KArgs...), dim3 grid, dim3 block, Args... args) {
    cudaLaunchConfig_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, k, static_cast<KArgs>(args)...);
}

}  // namespace dsgpu
#endif
