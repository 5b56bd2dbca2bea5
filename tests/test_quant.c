/* test_quant.c — tensor formats: type table, dequantisation and dot products at every SIMD
 * level against the scalar references, activation quantisers, and an independent check of the
 * block layouts against gguf-py (tests/data/quant_fixtures.dat, made by
 * tests/reference/make_quant_fixtures.py). */
#include "test.h"
#include "quant.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */

static uint64_t g_rng = 0x9e3779b97f4a7c15ULL;
static void rng_seed(uint64_t s) { g_rng = s * 0x9e3779b97f4a7c15ULL + 1; }
static uint64_t rng_u64(void) { /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static float rng_unif(void) { return (float)(rng_u64() >> 40) * (1.0f / 16777216.0f); } /* [0,1) */
static float rng_sym(void) { return 2.0f * rng_unif() - 1.0f; }                          /* [-1,1) */
/* roughly normal, with a spread of magnitudes across blocks */
static float rng_act(void) {
    float g = rng_sym() + rng_sym() + rng_sym();
    return g * (rng_unif() < 0.02f ? 8.0f : 1.0f);
}
/* finite fp16 scale with magnitude in [lo, hi) (log-uniform), random sign if sgn */
static uint16_t rng_scale16(float lo, float hi, int sgn) {
    float m = lo * powf(hi / lo, rng_unif());
    if (sgn && (rng_u64() & 1)) m = -m;
    return ds_fp32_to_fp16(m);
}
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

static const ds_type k_types[] = {
    DS_TYPE_F32, DS_TYPE_F16, DS_TYPE_BF16, DS_TYPE_Q4_0, DS_TYPE_Q4_1, DS_TYPE_Q5_0,
    DS_TYPE_Q5_1, DS_TYPE_Q8_0, DS_TYPE_Q8_1, DS_TYPE_Q4_K, DS_TYPE_Q5_K, DS_TYPE_Q6_K,
    DS_TYPE_Q8_K,
};
#define N_TYPES ((int)(sizeof k_types / sizeof k_types[0]))
static const char *const k_levels[] = { "scalar", "avx2", "avx512" };

/* Row lengths with odd block counts (tails of 2-/4-block loops) and float tails. */
static int64_t test_n(ds_type t) {
    int blk = ds_type_info_get(t)->block;
    return blk == 1 ? 1037 : blk == 32 ? 32 * 37 : 256 * 5;
}

/* Random but valid weight blocks: random payload bytes, finite random scales. `extreme` sets
 * every payload byte to its largest magnitude instead (saturation checks). */
static void fill_weights(ds_type t, uint8_t *buf, int64_t n, int extreme) {
    const ds_type_info *ti = ds_type_info_get(t);
    size_t bytes = ds_row_bytes(t, n);
    for (size_t i = 0; i < bytes; i++) buf[i] = extreme ? 0xff : (uint8_t)rng_u64();
    int64_t nb = n / ti->block;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *p = buf + b * ti->bytes;
        switch (t) {
        case DS_TYPE_F32: { float v = extreme ? -3.0f : rng_act(); memcpy(p, &v, 4); break; }
        case DS_TYPE_F16: put16(p, ds_fp32_to_fp16(extreme ? 7.0f : rng_act())); break;
        case DS_TYPE_BF16: { float v = extreme ? -5.0f : rng_act(); uint32_t u; memcpy(&u, &v, 4);
                             put16(p, (uint16_t)(u >> 16)); break; }
        case DS_TYPE_Q4_0: case DS_TYPE_Q5_0: put16(p, rng_scale16(1e-3f, 0.1f, 1)); break;
        case DS_TYPE_Q8_0:
            put16(p, rng_scale16(1e-3f, 0.1f, 1));
            if (extreme) memset(p + 2, 0x80, 32);   /* -128: the sign-trick corner */
            break;
        case DS_TYPE_Q8_1:
            put16(p, rng_scale16(1e-3f, 0.1f, 1)); put16(p + 2, rng_scale16(1e-3f, 1.0f, 1));
            for (int j = 0; j < 32; j++) if (p[4 + j] == 0x80) p[4 + j] = 0x81;
            break;
        case DS_TYPE_Q4_1: case DS_TYPE_Q5_1:
            put16(p, rng_scale16(1e-3f, 0.1f, 1)); put16(p + 2, rng_scale16(1e-2f, 1.0f, 1)); break;
        case DS_TYPE_Q4_K: case DS_TYPE_Q5_K:
            put16(p, rng_scale16(1e-4f, 1e-2f, 0)); put16(p + 2, rng_scale16(1e-4f, 1e-2f, 0)); break;
        case DS_TYPE_Q6_K:
            put16(p + 208, rng_scale16(1e-4f, 1e-2f, 1));
            if (extreme) for (int g = 0; g < 16; g++) p[192 + g] = (g & 1) ? 0x80 : 0x7f;
            break;
        case DS_TYPE_Q8_K: {
            float d = 1e-3f + rng_unif() * 1e-2f; memcpy(p, &d, 4);
            for (int j = 0; j < 256; j++) if (p[4 + j] == 0x80) p[4 + j] = 0x81;
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int l = 0; l < 16; l++) s += (int8_t)p[4 + 16 * g + l];
                int16_t s16 = (int16_t)s; memcpy(p + 260 + 2 * g, &s16, 2);
            }
            break;
        }
        default: break;
        }
    }
}

/* A random activation row already quantised to `dt`; `extreme`: every element +-A. */
static void make_act(ds_type dt, int64_t n, void *dst, float *src, int extreme) {
    for (int64_t i = 0; i < n; i++)
        src[i] = extreme ? ((rng_u64() & 1) ? 3.0f : -3.0f) : rng_act();
    ds_quantize_row_ref(dt, src, dst, n);
}

/* sum |w_i * a_i| over the dequantised rows: the natural scale for dot tolerances. */
static double abs_dot(const float *w, const float *a, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += fabs((double)w[i] * a[i]);
    return s;
}

static int set_level(const char *lvl) {
    ds_quant_force_level(lvl);
    return strcmp(ds_quant_level(), lvl) == 0;
}

/* ------------------------------------------------------------------ type table */

TEST(quant_type_table) {
    static const struct { uint32_t id; const char *name; int blk, bytes, sup; } k[] = {
        {0, "F32", 1, 4, 1}, {1, "F16", 1, 2, 1}, {2, "Q4_0", 32, 18, 1}, {3, "Q4_1", 32, 20, 1},
        {6, "Q5_0", 32, 22, 1}, {7, "Q5_1", 32, 24, 1}, {8, "Q8_0", 32, 34, 1},
        {10, "Q2_K", 256, 84, 0}, {11, "Q3_K", 256, 110, 0}, {12, "Q4_K", 256, 144, 1},
        {13, "Q5_K", 256, 176, 1}, {14, "Q6_K", 256, 210, 1}, {15, "Q8_K", 256, 292, 1},
        {16, "IQ2_XXS", 256, 66, 0}, {17, "IQ2_XS", 256, 74, 0}, {18, "IQ3_XXS", 256, 98, 0},
        {19, "IQ1_S", 256, 50, 0}, {20, "IQ4_NL", 32, 18, 0}, {21, "IQ3_S", 256, 110, 0},
        {22, "IQ2_S", 256, 82, 0}, {23, "IQ4_XS", 256, 136, 0}, {24, "I8", 1, 1, 0},
        {25, "I16", 1, 2, 0}, {26, "I32", 1, 4, 0}, {27, "I64", 1, 8, 0}, {28, "F64", 1, 8, 0},
        {29, "IQ1_M", 256, 56, 0}, {30, "BF16", 1, 2, 1}, {34, "TQ1_0", 256, 54, 0},
        {35, "TQ2_0", 256, 66, 0}, {39, "MXFP4", 32, 17, 0},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        const ds_type_info *ti = ds_type_info_get(k[i].id);
        CHECK_MSG(ti != NULL, "type %u missing", k[i].id);
        CHECK_MSG(!strcmp(ti->name, k[i].name) && ti->block == k[i].blk && ti->bytes == k[i].bytes &&
                  ti->supported == k[i].sup, "type %u: %s %d %d %d", k[i].id, ti->name, ti->block,
                  ti->bytes, ti->supported);
        CHECK(!strcmp(ds_type_name(k[i].id), k[i].name));
    }
    static const uint32_t unknown[] = { 4, 5, 40, 41, 1000, 0xffffffffu };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        CHECK_MSG(ds_type_info_get(unknown[i]) == NULL, "id %u should be unknown", unknown[i]);
        CHECK(strstr(ds_type_name(unknown[i]), "unknown") != NULL);
    }
    CHECK(ds_row_bytes(DS_TYPE_Q4_1, 576) == 18 * 20);
    CHECK(ds_row_bytes(DS_TYPE_Q6_K, 1536) == 6 * 210);
    CHECK(ds_row_bytes(DS_TYPE_F16, 3) == 6);
    CHECK(ds_row_bytes(DS_TYPE_Q4_K, 100) == 0);
    CHECK(ds_row_bytes((ds_type)4, 32) == 0);
    /* dot types */
    CHECK(ds_type_info_get(DS_TYPE_Q4_1)->dot_type == DS_TYPE_Q8_1);
    CHECK(ds_type_info_get(DS_TYPE_Q5_0)->dot_type == DS_TYPE_Q8_0);
    CHECK(ds_type_info_get(DS_TYPE_Q6_K)->dot_type == DS_TYPE_Q8_K);
    CHECK(ds_type_info_get(DS_TYPE_BF16)->dot_type == DS_TYPE_F32);
    CHECK(ds_quant_level() != NULL);
    char lv[64] = "";
    for (int l = 0; l < 3; l++)
        if (set_level(k_levels[l])) { strcat(lv, " "); strcat(lv, k_levels[l]); }
    ds_quant_force_level(NULL);
    fprintf(stderr, "    SIMD levels tested here:%s (default %s)\n", lv, ds_quant_level());
}

/* ------------------------------------------------------------------ dequantisation */

TEST(quant_dequant_levels_match_ref) {
    rng_seed(1);
    for (int ti = 0; ti < N_TYPES; ti++) {
        ds_type t = k_types[ti];
        int64_t n = test_n(t);
        uint8_t *w = malloc(ds_row_bytes(t, n));
        float *ref = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
        fill_weights(t, w, n, 0);
        ds_dequant_row_ref(t, w, ref, n);
        int bad = -1;
        const char *bad_lvl = "";
        for (int l = 0; l < 3 && bad < 0; l++) {
            if (!set_level(k_levels[l])) continue;
            memset(got, 0xcc, (size_t)n * 4);
            ds_dequant_row(t, w, got, n);
            for (int64_t i = 0; i < n && bad < 0; i++)
                if (memcmp(&got[i], &ref[i], 4)) { bad = (int)i; bad_lvl = k_levels[l]; }
        }
        ds_quant_force_level(NULL);
        float r = bad >= 0 ? ref[bad] : 0, g = bad >= 0 ? got[bad] : 0;
        free(w); free(ref); free(got);
        CHECK_MSG(bad < 0, "%s dequant at %s differs at %d: %.9g vs ref %.9g",
                  ds_type_name(t), bad_lvl, bad, g, r);
    }
}

/* ------------------------------------------------------------------ dot products */

/* ds_vec_dot and ds_vec_dot_rows at every level against ds_vec_dot_ref:
 * |fast - ref| <= 1e-5 * sum|w*a| (float accumulation vs the reference's double). */
static void check_dots(int extreme) {
    rng_seed(extreme ? 3 : 2);
    enum { NR = 9 };
    for (int ti = 0; ti < N_TYPES; ti++) {
        ds_type t = k_types[ti];
        ds_type dt = ds_type_info_get(t)->dot_type;
        int64_t n = test_n(t);
        size_t rb = ds_row_bytes(t, n), stride = rb + 4;   /* padded stride: rows only 4-byte aligned */
        /* exact sizes, so the sanitizer build catches any read past the last row / block */
        uint8_t *w = calloc(1, (NR - 1) * stride + rb);
        void *a = calloc(1, ds_row_bytes(dt, n));
        float *af = malloc((size_t)n * 4), *wf = malloc((size_t)n * 4), *ad = malloc((size_t)n * 4);
        for (int r = 0; r < NR; r++) fill_weights(t, w + r * stride, n, extreme);
        make_act(dt, n, a, af, extreme);
        ds_dequant_row_ref(dt, a, ad, n);
        double ref[NR], tol[NR];
        for (int r = 0; r < NR; r++) {
            ref[r] = ds_vec_dot_ref(t, n, w + r * stride, a);
            ds_dequant_row_ref(t, w + r * stride, wf, n);
            tol[r] = 1e-5 * abs_dot(wf, ad, n) + 1e-30;
        }
        for (int l = 0; l < 3; l++) {
            if (!set_level(k_levels[l])) continue;
            float rows[NR + 1];
            for (int r = 0; r < NR; r++) {
                double got = ds_vec_dot(t, n, w + r * stride, a);
                if (!(fabs(got - ref[r]) <= tol[r])) {
                    ds_quant_force_level(NULL);
                    CHECK_MSG(0, "%s%s dot at %s row %d: %.9g vs ref %.9g (tol %.3g)", ds_type_name(t),
                              extreme ? " (extreme)" : "", k_levels[l], r, got, ref[r], tol[r]);
                }
            }
            for (int nr = 1; nr <= NR; nr++) {   /* every remainder of the multi-row kernels */
                rows[nr] = 12345.0f;
                ds_vec_dot_rows(t, n, w, stride, nr, a, rows);
                CHECK_MSG(rows[nr] == 12345.0f, "%s rows wrote past nrows", ds_type_name(t));
                for (int r = 0; r < nr; r++)
                    if (!(fabs(rows[r] - ref[r]) <= tol[r])) {
                        ds_quant_force_level(NULL);
                        CHECK_MSG(0, "%s rows(%d) at %s row %d: %.9g vs ref %.9g", ds_type_name(t), nr,
                                  k_levels[l], r, rows[r], ref[r]);
                    }
            }
        }
        ds_quant_force_level(NULL);
        free(w); free(a); free(af); free(wf); free(ad);
    }
}

TEST(quant_dot_levels_match_ref) { check_dots(0); }
TEST(quant_dot_levels_extreme_values) { check_dots(1); }

/* The reference dot against a plain float dot of the dequantised rows. The only
 * non-reassociation difference is Q8_1's s = d*sum(q) being stored as fp16 (used, as in ggml,
 * for the m*s term of Q4_1/Q5_1): that rounding is added to the tolerance exactly. */
TEST(quant_dot_ref_matches_dequantised_float_dot) {
    rng_seed(4);
    for (int ti = 0; ti < N_TYPES; ti++) {
        ds_type t = k_types[ti];
        ds_type dt = ds_type_info_get(t)->dot_type;
        int64_t n = test_n(t);
        uint8_t *w = malloc(ds_row_bytes(t, n));
        uint8_t *a = malloc(ds_row_bytes(dt, n));
        float *af = malloc((size_t)n * 4), *wf = malloc((size_t)n * 4), *ad = malloc((size_t)n * 4);
        for (int rep = 0; rep < 3; rep++) {
            fill_weights(t, w, n, 0);
            make_act(dt, n, a, af, 0);
            ds_dequant_row_ref(t, w, wf, n);
            ds_dequant_row_ref(dt, a, ad, n);
            double fd = 0;
            for (int64_t i = 0; i < n; i++) fd += (double)wf[i] * ad[i];
            double tol = 1e-5 * abs_dot(wf, ad, n) + 1e-30;
            if (t == DS_TYPE_Q4_1 || t == DS_TYPE_Q5_1) {
                int wsz = ds_type_info_get(t)->bytes;
                for (int64_t b = 0; b < n / 32; b++) {
                    uint16_t m16, d16, s16;
                    memcpy(&m16, w + b * wsz + 2, 2);
                    memcpy(&d16, a + b * 36, 2); memcpy(&s16, a + b * 36 + 2, 2);
                    int sq = 0;
                    for (int j = 0; j < 32; j++) sq += (int8_t)a[b * 36 + 4 + j];
                    double exact_s = (double)ds_fp16_to_fp32(d16) * sq;
                    tol += fabs(ds_fp16_to_fp32(m16)) * fabs(ds_fp16_to_fp32(s16) - exact_s) * 1.0001;
                }
            }
            double ref = ds_vec_dot_ref(t, n, w, a);
            CHECK_MSG(fabs(ref - fd) <= tol, "%s: ref %.9g vs float dot %.9g (tol %.3g)",
                      ds_type_name(t), ref, fd, tol);
        }
        free(w); free(a); free(af); free(wf); free(ad);
    }
}

/* ------------------------------------------------------------------ activation quantisers */

TEST(quant_activation_roundtrip) {
    static const ds_type dts[] = { DS_TYPE_Q8_0, DS_TYPE_Q8_1, DS_TYPE_Q8_K, DS_TYPE_F32 };
    rng_seed(5);
    const int64_t n = 256 * 6;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    uint8_t *q_ref = malloc(ds_row_bytes(DS_TYPE_Q8_K, n) + ds_row_bytes(DS_TYPE_F32, n));
    uint8_t *q_got = malloc(ds_row_bytes(DS_TYPE_Q8_K, n) + ds_row_bytes(DS_TYPE_F32, n));
    for (int rep = 0; rep < 5; rep++) {
        /* rep 4: tiny values, so Q8_0/Q8_1 scales are fp16 subnormals */
        for (int64_t i = 0; i < n; i++)
            x[i] = rng_act() * (rep == 1 ? 1e-2f : rep == 2 ? 50.0f : rep == 4 ? 1e-3f : 1.0f);
        if (rep == 3) {   /* special blocks: all zero, one spike, ties at .5, all equal */
            for (int i = 0; i < 32; i++) x[i] = 0.0f;
            for (int i = 32; i < 64; i++) x[i] = i == 40 ? 7.0f : 0.0f;
            for (int i = 64; i < 96; i++) x[i] = (float)(i - 80) * (1.0f / 2.0f);
            for (int i = 96; i < 128; i++) x[i] = -1.5f;
            for (int i = 256; i < 512; i++) x[i] = 0.0f;   /* a whole zero Q8_K block */
        }
        for (size_t di = 0; di < sizeof dts / sizeof dts[0]; di++) {
            ds_type dt = dts[di];
            size_t bytes = ds_row_bytes(dt, n);
            ds_quantize_row_ref(dt, x, q_ref, n);
            ds_dequant_row_ref(dt, q_ref, y, n);
            int blk = dt == DS_TYPE_Q8_K ? 256 : dt == DS_TYPE_F32 ? 1 : 32;
            for (int64_t b = 0; b < n / blk; b++) {
                float d, amax = 0;
                for (int j = 0; j < blk; j++) amax = fmaxf(amax, fabsf(x[b * blk + j]));
                if (dt == DS_TYPE_Q8_K) memcpy(&d, q_ref + b * 292, 4);
                else if (dt == DS_TYPE_F32) d = 0;
                else { uint16_t d16; memcpy(&d16, q_ref + b * (dt == DS_TYPE_Q8_0 ? 34 : 36), 2);
                       d = ds_fp16_to_fp32(d16); }
                /* d is the stored scale (fp16-rounded for Q8_0/1) and q = round(x/d): the error is
                 * d/2 plus float rounding of x*(1/d) and of d*q */
                for (int j = 0; j < blk; j++) {
                    double err = fabs((double)x[b * blk + j] - y[b * blk + j]);
                    CHECK_MSG(err <= d * 0.5 * (1 + 1e-5) + amax * 1e-6,
                              "%s block %lld elem %d: x=%g deq=%g d=%g", ds_type_name(dt),
                              (long long)b, j, x[b * blk + j], y[b * blk + j], d);
                }
                if (dt == DS_TYPE_Q8_K) {
                    const int8_t *qs = (const int8_t *)(q_ref + b * 292 + 4);
                    for (int g = 0; g < 16; g++) {
                        int s = 0; int16_t bs;
                        for (int l = 0; l < 16; l++) { s += qs[16 * g + l]; CHECK(qs[16 * g + l] != -128); }
                        memcpy(&bs, q_ref + b * 292 + 260 + 2 * g, 2);
                        CHECK_MSG(bs == s, "Q8_K bsums[%d] = %d, want %d", g, bs, s);
                    }
                }
                if (dt == DS_TYPE_Q8_1) {   /* s = d * sum(q), rounded to fp16 */
                    const uint8_t *p = q_ref + b * 36;
                    uint16_t s16; memcpy(&s16, p + 2, 2);
                    int s = 0;
                    for (int l = 0; l < 32; l++) s += (int8_t)p[4 + l];
                    CHECK(s16 == ds_fp32_to_fp16(d * (float)s));
                }
            }
            for (int l = 0; l < 3; l++) {
                if (!set_level(k_levels[l])) continue;
                memset(q_got, 0x5a, bytes);
                ds_quantize_row(dt, x, q_got, n);
                int same = memcmp(q_got, q_ref, bytes) == 0;
                ds_quant_force_level(NULL);
                CHECK_MSG(same, "%s quantize at %s differs from ref (rep %d)", ds_type_name(dt), k_levels[l], rep);
            }
        }
    }
    free(x); free(y); free(q_ref); free(q_got);
}

/* ------------------------------------------------------------------ gguf-py fixtures */

TEST(quant_matches_gguf_py_fixtures) {
    const char *path = "tests/data/quant_fixtures.dat";
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s (run tests from the repo root; regenerate with "
              "tests/reference/make_quant_fixtures.py)", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)size);
    size_t got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    CHECK(got == (size_t)size && size >= 12 && !memcmp(buf, "DSQF", 4));
    uint32_t hdr[2];
    memcpy(hdr, buf + 4, 8);
    CHECK(hdr[0] == 1);
    size_t off = 12;
    int types_seen = 0;
    for (uint32_t e = 0; e < hdr[1]; e++) {
        uint32_t h[3];
        CHECK(off + 12 <= (size_t)size);
        memcpy(h, buf + off, 12);
        off += 12;
        uint32_t type = h[0], n = h[1], nbytes = h[2];
        CHECK(off + nbytes + 4ull * n <= (size_t)size);
        CHECK_MSG(ds_row_bytes((ds_type)type, n) == nbytes, "%s: %u elements in %u bytes",
                  ds_type_name(type), n, nbytes);
        const ds_type_info *ti = ds_type_info_get(type);
        CHECK(ti && ti->supported);
        /* copy to aligned buffers (the raw data sits at arbitrary offsets in the file) */
        uint8_t *raw = malloc(nbytes + 1);
        float *want = malloc(4ull * n), *out = malloc(4ull * n);
        memcpy(raw, buf + off, nbytes);
        memcpy(want, buf + off + nbytes, 4ull * n);
        off += nbytes + 4ull * n;
        for (int l = -1; l < 3; l++) {   /* -1: the reference */
            if (l >= 0 && !set_level(k_levels[l])) continue;
            memset(out, 0xcc, 4ull * n);
            if (l < 0) ds_dequant_row_ref((ds_type)type, raw, out, n);
            else ds_dequant_row((ds_type)type, raw, out, n);
            ds_quant_force_level(NULL);
            /* bit-exact: same float operations in the same order as gguf-py's numpy code */
            for (uint32_t i = 0; i < n; i++)
                if (memcmp(&out[i], &want[i], 4)) {
                    float o = out[i], w = want[i];
                    free(raw); free(want); free(out); free(buf);
                    CHECK_MSG(0, "%s entry %u elem %u (%s): %.9g, gguf-py %.9g", ds_type_name(type), e, i,
                              l < 0 ? "ref" : k_levels[l], o, w);
                }
        }
        free(raw); free(want); free(out);
        types_seen |= 1 << (type & 31);
    }
    CHECK(off == (size_t)size);
    free(buf);
    /* every weight format we support is covered */
    static const ds_type need[] = { DS_TYPE_F16, DS_TYPE_BF16, DS_TYPE_Q4_0, DS_TYPE_Q4_1, DS_TYPE_Q5_0,
                                    DS_TYPE_Q5_1, DS_TYPE_Q8_0, DS_TYPE_Q4_K, DS_TYPE_Q5_K, DS_TYPE_Q6_K };
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        CHECK_MSG(types_seen & (1 << need[i]), "fixtures lack %s", ds_type_name(need[i]));
}

/* The library build (static archive) must dispatch to the SIMD kernels the CPU supports: a
 * broken link (e.g. weak references not pulling the SIMD objects) silently falls to scalar. */
TEST(quant_dispatch_uses_best_level) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    __builtin_cpu_init();
    ds_quant_force_level(NULL);
    const char *lvl = ds_quant_level();
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        CHECK_MSG(strcmp(lvl, "avx512") == 0, "level %s, expected avx512", lvl);
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        CHECK_MSG(strcmp(lvl, "avx2") == 0, "level %s, expected avx2", lvl);
    else
        SKIP("no AVX2 on this CPU");
#else
    SKIP("x86-64 gcc only");
#endif
}

/* AMX tiles (where the CPU and kernel allow them): a Q4_K or Q6_K chunk of nr <= 16 rows times T
 * activation rows equals ds_vec_dot_rows per token, up to float summation order; tails of both
 * (13 rows, 37 tokens) are padded inside. */
static void check_amx(ds_type ty) {
    rng_seed(77);
    const int64_t n = 256 * 6;
    const int T = 37;
    const int nrs[] = { 16, 13, 1 };
    const size_t wb = ds_row_bytes(ty, n), xb = ds_row_bytes(DS_TYPE_Q8_K, n);
    uint8_t *w = malloc(wb * 16), *xq = malloc(xb * T);
    float *src = malloc(sizeof(float) * n), *ref = malloc(sizeof(float) * 16 * T), *got = malloc(sizeof(float) * 16 * T);
    void *pk = malloc(ds_amx_pack_bytes(T, n));
    float *acc = aligned_alloc(64, sizeof(float) * ds_amx_acc_floats(T));
    CHECK(w && xq && src && ref && got && pk && acc);
    for (int r = 0; r < 16; r++) fill_weights(ty, w + r * wb, n, 0);
    for (int t = 0; t < T; t++) make_act(DS_TYPE_Q8_K, n, xq + t * xb, src, 0);
    ds_amx_pack_q8K(xq, xb, T, n, pk);
    for (size_t c = 0; c < sizeof nrs / sizeof nrs[0]; c++) {
        const int nr = nrs[c];
        for (int t = 0; t < T; t++) ds_vec_dot_rows(ty, n, w, wb, nr, xq + t * xb, ref + t * nr);
        for (int i = 0; i < 16 * T; i++) got[i] = NAN;
        for (size_t i = 0; i < ds_amx_acc_floats(T); i++) acc[i] = NAN;   /* the kernels must zero it */
        (ty == DS_TYPE_Q4_K ? ds_amx_rows_q4_K : ds_amx_rows_q6_K)(n, w, wb, nr, pk, T, got, (size_t)nr, acc);
        double worst = 0;
        for (int i = 0; i < nr * T; i++) {
            CHECK_MSG(isfinite(got[i]), "nr %d: element %d not written", nr, i);
            const double e = fabs((double)got[i] - ref[i]) / (fabs(ref[i]) + 1e-3);
            if (e > worst) worst = e;
        }
        CHECK_MSG(worst < 1e-4, "nr %d: worst relative difference %g", nr, worst);
        /* both against the double-precision reference dot */
        double we_amx = 0, we_vnni = 0;
        for (int t = 0; t < T; t++)
            for (int r = 0; r < nr; r++) {
                const double e = ds_vec_dot_ref(ty, n, w + r * wb, xq + t * xb);
                const double s = fabs(e) + 1e-3;
                if (fabs(got[t * nr + r] - e) / s > we_amx) we_amx = fabs(got[t * nr + r] - e) / s;
                if (fabs(ref[t * nr + r] - e) / s > we_vnni) we_vnni = fabs(ref[t * nr + r] - e) / s;
            }
        if (nr == 16) printf("    %s vs the reference dot: AMX %.2e, ds_vec_dot_rows %.2e\n", ds_type_info_get(ty)->name, we_amx, we_vnni);
        CHECK_MSG(we_amx < 1e-4, "nr %d: AMX vs the reference dot %g", nr, we_amx);
    }
    free(w); free(xq); free(src); free(ref); free(got); free(pk); free(acc);
}

TEST(quant_amx_q4_K_matches_vec_dot_rows) {
    if (!ds_amx_available()) SKIP("no AMX-INT8 (or DSINFER_AMX=0)");
    check_amx(DS_TYPE_Q4_K);
}

TEST(quant_amx_q6_K_matches_vec_dot_rows) {
    if (!ds_amx_available()) SKIP("no AMX-INT8 (or DSINFER_AMX=0)");
    check_amx(DS_TYPE_Q6_K);
}
