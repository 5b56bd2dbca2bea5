/* quant.h — GGUF tensor formats: dequantisation and dot products.
 *
 * Weight rows are stored in their GGUF block format. For matrix-vector work the activation is
 * first quantised once into the weight type's "dot type" (as llama.cpp does), so the inner loop
 * is integer multiply-adds:
 *     Q4_0, Q5_0, Q8_0  -> Q8_0        Q4_1, Q5_1 -> Q8_1
 *     Q4_K, Q5_K, Q6_K  -> Q8_K        F16, BF16, F32 -> F32 (activation stays float)
 * Each operation has a scalar reference (`_ref`) and a dispatching fast version that picks
 * AVX-512 / AVX2 / scalar at run time; tests check the fast ones against the references. */
#ifndef DS_QUANT_H
#define DS_QUANT_H

#include "common.h"

typedef enum {  /* values are the ggml type ids used in GGUF files */
    DS_TYPE_F32 = 0, DS_TYPE_F16 = 1, DS_TYPE_Q4_0 = 2, DS_TYPE_Q4_1 = 3,
    DS_TYPE_Q5_0 = 6, DS_TYPE_Q5_1 = 7, DS_TYPE_Q8_0 = 8, DS_TYPE_Q8_1 = 9,
    DS_TYPE_Q2_K = 10, DS_TYPE_Q3_K = 11, DS_TYPE_Q4_K = 12, DS_TYPE_Q5_K = 13,
    DS_TYPE_Q6_K = 14, DS_TYPE_Q8_K = 15, DS_TYPE_BF16 = 30, DS_TYPE_COUNT = 40
} ds_type;

typedef struct {
    const char *name;     /* "Q4_1" */
    int block;            /* elements per block */
    int bytes;            /* bytes per block */
    int supported;        /* 1 if dequant + dot are implemented */
    ds_type dot_type;     /* format the activation is quantised to for ds_vec_dot */
} ds_type_info;

/* NULL for ids that are not known at all. */
const ds_type_info *ds_type_info_get(uint32_t type);
const char *ds_type_name(uint32_t type);   /* "unknown(N)" style for unknown ids (static buf) */
/* Bytes of a row of n elements; 0 if n is not a multiple of the block size. */
size_t ds_row_bytes(ds_type t, int64_t n);

/* Dequantise n elements (n multiple of block) of type t at src into dst. */
void ds_dequant_row(ds_type t, const void *src, float *dst, int64_t n);
void ds_dequant_row_ref(ds_type t, const void *src, float *dst, int64_t n);

/* Quantise n floats (multiple of the block) into a dot type (Q8_0, Q8_1, Q8_K, or F32 = copy). */
void ds_quantize_row(ds_type dot_type, const float *src, void *dst, int64_t n);
void ds_quantize_row_ref(ds_type dot_type, const float *src, void *dst, int64_t n);

/* sum_i w[i] * a[i] over n elements: w a row of type t, a a row already in
 * ds_type_info_get(t)->dot_type. */
float ds_vec_dot(ds_type t, int64_t n, const void *w, const void *a);
float ds_vec_dot_ref(ds_type t, int64_t n, const void *w, const void *a);

/* Which SIMD level the dispatch uses: "avx512", "avx2" or "scalar". Forcing a level (for
 * tests/benchmarks) with ds_quant_force_level("scalar") etc; NULL restores auto. */
const char *ds_quant_level(void);
void ds_quant_force_level(const char *level);

/* Matrix-vector helper: out[r] = ds_vec_dot(t, n, w + r*w_stride, a) for r in [0, nrows).
 * Rows are consecutive (w_stride bytes apart, normally ds_row_bytes(t, n)); `a` is one row in
 * the dot type, shared by all rows. The SIMD kernels work on several rows at a time (shared
 * activation loads and scales), so prefer one call per block of rows over per-row
 * ds_vec_dot. Results are the same as ds_vec_dot up to float summation order. */
void ds_vec_dot_rows(ds_type t, int64_t n, const void *w, size_t w_stride, int nrows,
                     const void *a, float *out);

/* AMX int8 tiles for prefill chunks of Q4_K matrices (quant_amx.c). ds_amx_available: whether
 * this CPU and kernel let the process use them (DSINFER_AMX=0: never). ds_amx_pack_q8K: T
 * activation rows in Q8_K (row stride xs bytes, cols a multiple of 256) into the tiles' layout,
 * ds_amx_pack_bytes(T, cols) bytes at dst, once per matmul call. ds_amx_rows_q4_K: rows [0, nr),
 * nr <= 16, of a Q4_K matrix (row stride ws) times the packed rows: out[t * os + r], the same as
 * ds_vec_dot_rows per token up to float summation order; scratch: the calling thread's
 * accumulators, ds_amx_acc_floats(T) floats (in the session's memory plan: no allocation in a
 * worker). */
int ds_amx_available(void);
size_t ds_amx_pack_bytes(int T, int64_t cols);
void ds_amx_pack_q8K(const void *xq, size_t xs, int T, int64_t cols, void *dst);
void ds_amx_rows_q4_K(int64_t cols, const void *w, size_t ws, int nr, const void *packed, int T, float *out,
                      size_t os, float *scratch);
void ds_amx_rows_q6_K(int64_t cols, const void *w, size_t ws, int nr, const void *packed, int T, float *out,
                      size_t os, float *scratch);   /* the same for Q6_K rows */
size_t ds_amx_acc_floats(int T);   /* the scratch both need: 64-byte aligned floats, one thread's */

#endif
