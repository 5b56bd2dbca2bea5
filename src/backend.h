/* backend.h — the only seam between the C library and GPU code (plain C functions).
 *
 * A CPU-only build (the default) compiles backend_cpu.c, whose functions report that no GPU
 * backend exists; `make CUDA=1` compiles the .cu files in src/cuda/ instead (extern "C", same
 * declarations). The CUDA forward pass and Double Sparsity kernels land behind this header. */
#ifndef DS_BACKEND_H
#define DS_BACKEND_H

#include "common.h"

/* Number of usable CUDA devices; 0 in CPU-only builds or when no driver/device is present. */
int ds_backend_gpu_count(void);
/* One line describing device `i` (name, memory, compute capability) into buf. */
ds_status ds_backend_gpu_describe(int i, char *buf, size_t cap);
/* "cuda" or "cpu-only": what this binary was built with. */
const char *ds_backend_name(void);

#endif
