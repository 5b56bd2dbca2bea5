/* backend_cpu.c — the GPU seam in a CPU-only build: no devices. */
#include "backend.h"

#include <stdio.h>

#ifndef DS_CUDA
int ds_backend_gpu_count(void) { return 0; }
ds_status ds_backend_gpu_describe(int i, char *buf, size_t cap) {
    if (cap) buf[0] = 0;
    return ds_error(DS_ERR_UNSUPPORTED, "GPU %d: this build has no GPU backend (rebuild with make CUDA=1)", i);
}
const char *ds_backend_name(void) { return "cpu-only"; }
#endif

/* public wrappers (both builds) */
const char *ds_build_backend(void) { return ds_backend_name(); }
int ds_gpu_count(void) { return ds_backend_gpu_count(); }
