/* gpu_session.h — sessions whose forward pass runs on the GPU (gpu_session.c). In a CPU-only
 * build ds_gpu_session_init reports that the build has no GPU backend. */
#ifndef DS_GPU_SESSION_H
#define DS_GPU_SESSION_H

#include "forward.h"

/* After the CPU-side session (and its sparse state, for channel sets and option checks) is
 * set up: create the GPU forward pass and upload the weights. */
ds_status ds_gpu_session_init(ds_session *s);
void ds_gpu_session_free(ds_session *s);
/* ds_session_eval's GPU path (validation already done by the caller). */
ds_status ds_gpu_session_eval(ds_session *s, const int32_t *tokens, int n, float *all_logits);

#endif
