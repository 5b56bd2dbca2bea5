// qweights.cuh — GGUF-quantised weight matrices kept quantised on the GPU (Q8_0, Q4_1, Q4_K,
// Q6_K: the types of the models dsinfer ships for): decode GEMV straight from the blocks,
// dequantisation to fp16 slabs for prefill GEMMs, embedding rows. Used by forward.cu only.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

namespace dsgpu {

// Rows [row0, row0 + rows) of a matrix in one type, in the GPU layout (qweights.cu): per row
// `qrow` bytes of quants at q and `srow` bytes of scales at s, both 16-byte aligned.
struct QPart {
    int type, row0, rows, in;
    size_t qrow, srow;
    uint8_t *q, *s;   // [rows][qrow], [rows][srow]
};
// A matrix as runs of rows of one type (a fused QKV may hold Q4_K q/k rows and Q6_K v rows).
struct QMat {
    int n;
    QPart p[4];
};

// Whether rows of `in` elements of GGUF type `type` have a GPU kernel.
bool q_type_ok(int type, int in);
// Append `rows` rows (GGUF blocks, row i at src + i * src_stride) at logical row row0, which
// must be the number of rows the matrix has so far; rows of the same type merge into one part.
// *bytes grows by the device memory added. Returns a cudaError_t.
int q_append(QMat &m, int type, int row0, int rows, int in, const void *src, size_t src_stride, size_t *bytes);
void q_free(QMat &m);
// One block of 32 activations (fp16, 16-byte aligned) as int8, by one thread: q gets the 32
// values round(x / d), d = max |x| / 127, and meta the scale d, d * (sum of the first 16 values),
// d * (sum of the last 16) (the offsets of Q4_1 / Q4_K / Q6_K runs need them). One thread per
// block and no shuffles: a warp-wide version serialised 16 reductions per warp in the norm
// kernel's single block and cost ~14 us per call (ncu).
__device__ __forceinline__ void quant_row32(const __half *x, int8_t *q, float4 *meta) {
    uint4 raw[4];
#pragma unroll
    for (int i = 0; i < 4; i++) raw[i] = ((const uint4 *)x)[i];
    const __half2 *h = (const __half2 *)raw;
    float v[32], a = 0;
#pragma unroll
    for (int i = 0; i < 16; i++) {
        const float2 f = __half22float2(h[i]);
        v[2 * i] = f.x;
        v[2 * i + 1] = f.y;
        a = fmaxf(a, fmaxf(fabsf(f.x), fabsf(f.y)));
    }
    const float d = a / 127.0f, id = a > 0 ? 127.0f / a : 0.0f;
    uint32_t w[8];
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        uint32_t word = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const int qi = __float2int_rn(v[4 * i + k] * id);
            word |= (uint32_t)(qi & 0xff) << (8 * k);
            if (i < 4) s0 += qi; else s1 += qi;
        }
        w[i] = word;
    }
    ((uint4 *)q)[0] = make_uint4(w[0], w[1], w[2], w[3]);
    ((uint4 *)q)[1] = make_uint4(w[4], w[5], w[6], w[7]);
    *meta = make_float4(d, d * (float)s0, d * (float)s1, 0.0f);
}

// The n elements (n % 32 == 0) of a row at x (fp16) quantised by all threads of a block, a block
// of 32 per thread; call after a barrier that makes the block's writes of x visible.
__device__ __forceinline__ void quant_row_block(const __half *x, int n, int8_t *q, float4 *meta) {
    for (int b = threadIdx.x; b < n / 32; b += blockDim.x) quant_row32(x + 32 * b, q + 32 * b, meta + b);
}

// xq [rows][in], xs [rows][in / 32] = quant_row32 blocks of x [rows][in] (fp16), in % 32 == 0.
int q_quant_x(const __half *x, int rows, int in, int8_t *xq, float4 *xs, bool pdl, cudaStream_t st);
// y[b][row] (row stride ystride) = W[row] . x[b] for b < nb <= 8, x given as quant_row32 blocks.
int q_gemv(const QMat &m, const int8_t *xq, const float4 *xs, int nb, float *y, int ystride, bool pdl, cudaStream_t st);
// out[nr][in] (fp16) = rows [r0, r0 + nr) of part p, as the CPU dequantises them.
int q_dequant(const QPart &p, int r0, int nr, __half *out, bool pdl, cudaStream_t st);
// x[r][in] (fp32) = row tok[r] of a one-part matrix (the embedding); len[r] = pos[r] + 1.
int q_embed(const QMat &m, const int *tok, const int *pos, int rows, float *x, int *len, bool pdl, cudaStream_t st);

}  // namespace dsgpu
