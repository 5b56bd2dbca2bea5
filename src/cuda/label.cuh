// label.cuh — fp16 helpers and the Double Sparsity label encoder on the GPU, bit for bit the
// CPU's ds_label_encode (ds_kernels.h has the format). Shared by attn.cu and forward.cu.
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>

namespace dsgpu {

__device__ inline float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ inline uint16_t f2h(float f) { return __half_as_ushort(__float2half_rn(f)); }
// Largest half <= v and smallest half >= v, as fp16_round_down/up in ds_kernels.c.
__device__ inline uint16_t fp16_down(float v) {
    uint16_t h = f2h(v);
    if (h2f(h) > v) {
        if ((h & 0x7fff) == 0) h = 0x8001;
        else if (h & 0x8000) h++;
        else h--;
    }
    return h;
}
__device__ inline uint16_t fp16_up(float v) {
    uint16_t h = f2h(v);
    if (h2f(h) < v) h++;
    return h;
}

// Label value j of a key row: the channel's fp16 key, normalised as (k - mean) / scale when
// mu / sc are given (the CPU's labels_append: the same float operations).
__device__ inline float label_value(const uint16_t *krow, const int16_t *ch, const float *mu, const float *sc, int j) {
    const float x = h2f(krow[ch[j]]);
    return mu ? (x - mu[j]) / sc[j] : x;
}

// A row's quantisation grid from its label range [mn, mx] (mn > mx: an empty row): lo rounded
// down and step rounded up to fp16, so every value maps into [0, L] (ds_label_encode's rule).
__device__ inline void label_range(float mn, float mx, int L, uint16_t *lo16, uint16_t *st16) {
    const float FMAX = 65504.0f;
    if (mn > mx) mn = mx = 0.0f;
    mn = fmaxf(fminf(mn, FMAX), -FMAX);
    mx = fmaxf(fminf(mx, FMAX), -FMAX);
    *lo16 = fp16_down(mn);
    *st16 = 0;
    const float lof = h2f(*lo16);
    if (mx > lof) {
        double st = ((double)mx - (double)lof) / L;
        float stf = (float)st;
        if ((double)stf < st) stf = nextafterf(stf, INFINITY);
        *st16 = fp16_up(fminf(stf, FMAX));
    }
}

// The code of label value x on the grid (lof, stepd), in [0, L].
__device__ inline int label_code(float x, float lof, double stepd, int L) {
    if (!(stepd > 0)) return 0;
    const double v = ((double)x - lof) / stepd;
    return v > 0 ? (v >= L ? L : (int)(v + 0.5)) : 0;
}

// One label row from an fp16 key row, by one warp (all 32 lanes call it): codes[row_bytes] (+
// lo/step for bits < 16); mu, sc: [r] label normalisation or NULL. Lane j handles channels j,
// j + 32, ...; min/max are exact in any order, and the per-channel arithmetic is
// ds_label_encode's, so the row is bit for bit the CPU's (gpu_check). A warp, not a thread: one
// thread per row ran r dependent double divisions in the decode step's critical path.
__device__ inline void label_encode_row_warp(const uint16_t *krow, const int16_t *ch, const float *mu, const float *sc,
                                             int r, int bits, int row_bytes, uint8_t *codes, uint16_t *lo_out,
                                             uint16_t *step_out) {
    const int lane = threadIdx.x & 31;
    if (bits == 16) {
        for (int j = lane; j < r; j += 32) {
            uint16_t h = mu ? f2h(label_value(krow, ch, mu, sc, j)) : krow[ch[j]];
            codes[2 * j] = (uint8_t)h;
            codes[2 * j + 1] = (uint8_t)(h >> 8);
        }
        return;
    }
    float mn = INFINITY, mx = -INFINITY;
    for (int j = lane; j < r; j += 32) {
        float x = label_value(krow, ch, mu, sc, j);
        if (x < mn) mn = x;
        if (x > mx) mx = x;
    }
    for (int o = 16; o > 0; o >>= 1) {
        mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    }
    const int L = (1 << bits) - 1;
    uint16_t lo16, st16;
    label_range(mn, mx, L, &lo16, &st16);
    const float lof = h2f(lo16);
    const double stepd = h2f(st16);
    // bits is 2, 4 or 8: a code never straddles a 32-bit word; 32 lanes cover 32 codes per pass
    for (int j0 = 0; j0 < r; j0 += 32) {
        const int j = j0 + lane;
        const uint32_t c = j < r ? (uint32_t)label_code(label_value(krow, ch, mu, sc, j), lof, stepd, L) : 0u;
        const int bit = j * bits;   // position in the row
        const int w0 = (j0 * bits) >> 5, nw = (32 * bits) >> 5;   // words this pass covers
        for (int w = 0; w < nw; w++) {
            const uint32_t word = __reduce_or_sync(0xffffffffu, (j < r && (bit >> 5) == w0 + w) ? c << (bit & 31) : 0u);
            if (lane == 0)
                for (int by = 0; by < 4; by++) {
                    const int at = 4 * (w0 + w) + by;
                    if (at < row_bytes) codes[at] = (uint8_t)(word >> (8 * by));
                }
        }
    }
    if (lane == 0) {
        *lo_out = lo16;
        *step_out = st16;
    }
}

}  // namespace dsgpu
