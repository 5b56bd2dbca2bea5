/* common.h — status codes, error messages, invariants, fp16/bf16 conversion, timing.
 *
 * Convention: library functions return ds_status (DS_OK == 0) and, on failure, leave a
 * human-readable message retrievable with ds_last_error() (thread-local). Only the CLI exits.
 * DS_ASSERT is for programmer errors (broken invariants), never for bad input. */
#ifndef DS_COMMON_H
#define DS_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>

#include "dsinfer.h"

/* Set the thread-local error message and return `code`, so call sites read
 *     if (bad) return ds_error(DS_ERR_FORMAT, "tensor %s: offset out of range", name); */
ds_status ds_error(ds_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

void ds_assert_fail(const char *expr, const char *file, int line);
#define DS_ASSERT(x) do { if (!(x)) ds_assert_fail(#x, __FILE__, __LINE__); } while (0)

#define DS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DS_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Allocation helpers: 64-byte aligned (AVX-512 loads), zeroed. */
void *ds_alloc(size_t size);
void ds_free(void *p);

/* IEEE half <-> float, scalar (portable). SIMD paths use F16C where present. */
static inline float ds_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) bits = sign;
        else { /* subnormal: normalise */
            int e = -1;
            do { e++; mant <<= 1; } while (!(mant & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    float f; memcpy(&f, &bits, 4); return f;
}

static inline uint16_t ds_fp32_to_fp16(float f) { /* round to nearest even */
    uint32_t x; memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow -> inf */
    if (ax < 0x38800000u) { /* subnormal or zero in half */
        if (ax < 0x33000000u) return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t hm = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (hm & 1))) hm++;
        return (uint16_t)(sign | hm);
    }
    uint32_t h = ((ax >> 13) - ((127 - 15) << 10));
    uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static inline float ds_bf16_to_fp32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16; float f; memcpy(&f, &bits, 4); return f;
}

/* A growing buffer of n bytes at p, kept NUL-terminated so that text in it is a string (also
 * used for binary data); on a failed allocation oom is set and later appends are dropped, so a
 * caller checks once at the end. Free p when done. */
typedef struct { char *p; size_t n, cap; int oom; } ds_sbuf;
void ds_sb_addn(ds_sbuf *b, const char *s, size_t n);
void ds_sb_add(ds_sbuf *b, const char *s);

/* Which SIMD levels this CPU and OS support (see util.c for the exact feature sets). */
void ds_cpu_simd_levels(int *avx2, int *avx512);
/* Whether the CPU's vendor string is AMD's ("AuthenticAMD"). */
int ds_cpu_is_amd(void);

/* Monotonic wall-clock seconds. */
double ds_time_s(void);

/* Logging to stderr; silenced by ds_set_log_level(0). */
void ds_log(int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
#define DS_LOG_ERROR 1
#define DS_LOG_INFO 2
#define DS_LOG_DEBUG 3

#endif
