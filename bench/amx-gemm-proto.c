/* amx-gemm-proto.c — a measurement, not part of the library: how fast this CPU's AMX tiles run
 * the int8 GEMM of a prefill chunk with per-32 block scales on both sides (the Q8_0-activation x
 * 8-bit-block-weight case), against the ~60-70 GFLOPS per core of the AVX-512 VNNI path today.
 *   gcc -O2 -march=native -mamx-tile -mamx-int8 bench/amx-gemm-proto.c -o /tmp/amx-gemm -lm
 *   /tmp/amx-gemm N K      (M = 512 activation rows; prints ms, GOPS, and the error against a
 *                           scalar reference on 64 random entries)
 * Tiles: two 16 x 32 int8 A tiles, two 32 x 16 B tiles (repacked four k per n, as tdpbssd wants)
 * and four 16 x 16 int32 C tiles per k-block of 32; each block's C is stored and scaled into fp32
 * accumulators with AVX-512 (the per-32 scales forbid accumulating across blocks in int32).
 * Linux grants the tile state per process: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA). */
#include <immintrin.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <time.h>
#include <math.h>
typedef struct { uint8_t palette, start; uint8_t r0[14]; uint16_t colsb[16]; uint8_t rows[16]; } cfg_t;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char **argv) {
    int M = 512, N = argc > 1 ? atoi(argv[1]) : 1536, K = argc > 2 ? atoi(argv[2]) : 1536;
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { perror("prctl"); return 1; }
    int8_t *A = aligned_alloc(64, (size_t)M * K), *B = aligned_alloc(64, (size_t)N * K), *Bp = aligned_alloc(64, (size_t)N * K);
    float *da = malloc(sizeof(float) * M * (K / 32)), *db = malloc(sizeof(float) * N * (K / 32));
    float *C = aligned_alloc(64, sizeof(float) * M * N);
    srand(1);
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (int8_t)(rand() % 255 - 127);
    for (size_t i = 0; i < (size_t)N * K; i++) B[i] = (int8_t)(rand() % 255 - 127);
    for (int i = 0; i < M * (K / 32); i++) da[i] = 0.01f * (1 + rand() % 100);
    for (int i = 0; i < N * (K / 32); i++) db[i] = 0.01f * (1 + rand() % 100);
    // repack B: for n-tile nt (16 cols), k-block kb (32): 8 rows x 64 bytes, (k, n) at [k/4][n*4 + k%4]
    const int KB = K / 32, NT = N / 16;
    for (int nt = 0; nt < NT; nt++)
        for (int kb = 0; kb < KB; kb++) {
            int8_t *dst = Bp + ((size_t)nt * KB + kb) * 512;
            for (int k = 0; k < 32; k++)
                for (int n = 0; n < 16; n++) dst[(k / 4) * 64 + n * 4 + (k % 4)] = B[(size_t)(nt * 16 + n) * K + kb * 32 + k];
        }
    cfg_t c; memset(&c, 0, sizeof c); c.palette = 1;
    for (int t = 0; t < 4; t++) { c.rows[t] = 16; c.colsb[t] = 64; }   // C tiles 16 x 16 int32
    for (int t = 4; t < 6; t++) { c.rows[t] = 16; c.colsb[t] = 32; }   // A tiles 16 x 32 int8
    for (int t = 6; t < 8; t++) { c.rows[t] = 8; c.colsb[t] = 64; }    // B tiles 8 x 64 (32 k x 16 n)
    _tile_loadconfig(&c);
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        for (int mt = 0; mt < M; mt += 32)
            for (int nt = 0; nt < NT; nt += 2) {
                __m512 acc[2][2][16];
                for (int a = 0; a < 2; a++) for (int b = 0; b < 2; b++) for (int r = 0; r < 16; r++) acc[a][b][r] = _mm512_setzero_ps();
                int32_t tmp[4][16][16] __attribute__((aligned(64)));
                for (int kb = 0; kb < KB; kb++) {
                    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
                    _tile_loadd(4, A + (size_t)mt * K + kb * 32, K);
                    _tile_loadd(5, A + (size_t)(mt + 16) * K + kb * 32, K);
                    _tile_loadd(6, Bp + ((size_t)nt * KB + kb) * 512, 64);
                    _tile_loadd(7, Bp + ((size_t)(nt + 1) * KB + kb) * 512, 64);
                    _tile_dpbssd(0, 4, 6); _tile_dpbssd(1, 4, 7); _tile_dpbssd(2, 5, 6); _tile_dpbssd(3, 5, 7);
                    _tile_stored(0, tmp[0], 64); _tile_stored(1, tmp[1], 64); _tile_stored(2, tmp[2], 64); _tile_stored(3, tmp[3], 64);
                    for (int a = 0; a < 2; a++)
                        for (int b = 0; b < 2; b++) {
                            __m512 sb = _mm512_set_ps(0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0);
                            float tb[16];
                            for (int n = 0; n < 16; n++) tb[n] = db[(size_t)((nt + b) * 16 + n) * KB + kb];
                            sb = _mm512_loadu_ps(tb);
                            for (int r = 0; r < 16; r++) {
                                const __m512 v = _mm512_cvtepi32_ps(_mm512_load_si512(tmp[a * 2 + b][r]));
                                acc[a][b][r] = _mm512_fmadd_ps(_mm512_mul_ps(v, sb), _mm512_set1_ps(da[(size_t)(mt + a * 16 + r) * KB + kb]), acc[a][b][r]);
                            }
                        }
                }
                for (int a = 0; a < 2; a++) for (int b = 0; b < 2; b++) for (int r = 0; r < 16; r++)
                    _mm512_storeu_ps(C + (size_t)(mt + a * 16 + r) * N + (nt + b) * 16, acc[a][b][r]);
            }
        double t = now() - t0;
        if (t < best) best = t;
    }
    // check a few entries against a scalar reference
    double maxerr = 0;
    for (int s = 0; s < 64; s++) {
        int m = rand() % M, n = rand() % N;
        double ref = 0;
        for (int kb = 0; kb < KB; kb++) {
            int dot = 0;
            for (int k = 0; k < 32; k++) dot += A[(size_t)m * K + kb * 32 + k] * B[(size_t)n * K + kb * 32 + k];
            ref += (double)dot * da[(size_t)m * KB + kb] * db[(size_t)n * KB + kb];
        }
        double e = fabs(ref - C[(size_t)m * N + n]) / (fabs(ref) + 1);
        if (e > maxerr) maxerr = e;
    }
    printf("M=%d N=%d K=%d: %.2f ms, %.0f GOPS (int8 MACs x2), max rel err %.2e\n", M, N, K, best * 1e3, 2.0 * M * N * K / best / 1e9, maxerr);
    _tile_release();
    return 0;
}
