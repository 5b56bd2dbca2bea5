/* test_calibrate.c — channel statistics and rankings on synthetic data with known outliers,
 * the sidecar (round trip, determinism, every kind of malformed file, identity checks) and the
 * paper's JSON (HF -> GGUF remap, GQA merge, export/import round trip). */
#include "test.h"
#include "calibrate.h"
#include "common.h"
#include "threads.h"

#include <stdlib.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

static const char *tmp_path(const char *tag) {
    static char buf[4][256];
    static int slot;
    char *p = buf[slot++ & 3];
    const char *dir = getenv("TMPDIR");
    snprintf(p, 256, "%s/dsinfer_cal_%d_%s.json", dir && *dir ? dir : "/tmp", (int)getpid(), tag);
    return p;
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t n = strlen(text), w = fwrite(text, 1, n, f);
    return fclose(f) == 0 && w == n;
}

static char *read_text(const char *path) {   /* malloc'd, NUL-terminated; NULL if unreadable */
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    if (b) b[n] = 0;
    fclose(f);
    return b;
}

/* text with the first occurrence of `from` replaced by `to` (malloc'd; NULL if absent). */
static char *replace1(const char *text, const char *from, const char *to) {
    const char *at = strstr(text, from);
    if (!at) return NULL;
    size_t a = (size_t)(at - text), nf = strlen(from), nt = strlen(to), n = strlen(text);
    char *r = malloc(n - nf + nt + 1);
    memcpy(r, text, a);
    memcpy(r + a, to, nt);
    memcpy(r + a + nt, at + nf, n - a - nf + 1);
    return r;
}

/* One malformed variant of a valid file: `from` replaced by `to`, and part of the error message. */
typedef struct { const char *from, *to, *msg; } file_edit;

/* Each edit of `base`, written to path, fails to load with DS_ERR_FORMAT and a message holding
 * its msg; on the first that does not, reports it (a test failure) and returns 0. */
static int edits_rejected(const char *path, const char *base, const file_edit *edits, size_t n) {
    char m[512];
    for (size_t i = 0; i < n; i++) {
        char *t = replace1(base, edits[i].from, edits[i].to);
        if (!t) { snprintf(m, sizeof m, "edit %zu does not apply", i); test_fail(__FILE__, __LINE__, m); return 0; }
        int ok = write_text(path, t);
        free(t);
        ds_calibration *c = NULL;
        ds_status st = ok ? ds_calib_load(path, NULL, &c) : DS_ERR_IO;
        if (st != DS_ERR_FORMAT || c != NULL || !strstr(ds_last_error(), edits[i].msg)) {
            snprintf(m, sizeof m, "edit %zu: status %d, '%s' (expected '%s')", i, st, ds_last_error(), edits[i].msg);
            test_fail(__FILE__, __LINE__, m);
            ds_calibration_free(c);
            return 0;
        }
    }
    return 1;
}

static uint32_t g_rng = 12345;
static float noise(void) {  /* deterministic, in [-0.05, 0.05) */
    g_rng = g_rng * 1664525u + 1013904223u;
    return ((float)(g_rng >> 8) / 16777216.0f - 0.5f) * 0.1f;
}

/* Synthetic model: 2 layers, 4 query heads, 2 KV heads (GQA group of 2), head_dim 16. */
enum { L = 2, H = 4, G = 2, D = 16, T = 5 };

/* The outlier channel of statistic s for (layer, kv head): different for every statistic, so a
 * statistic computed from the wrong quantity ranks the wrong channel first. */
static int outlier(int s, int l, int g) { return (1 + 5 * s + l + 7 * g) % D; }

/* One block: pre-RoPE q, k with the q / k outliers; "post-RoPE" q, k whose same-token product is
 * large only on the qk outlier (q alone is large on another channel, and k on a third). The qk
 * outlier's key is constant (2), so qkv ignores it; the qkv outlier has a modest query (1) and a
 * key that flips sign every token, the largest q-weighted key variance. */
static void make_block(float *q0, float *k0, float *q1, float *k1, int l) {
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < H; h++)
            for (int c = 0; c < D; c++) {
                float *a = q0 + ((size_t)t * H + h) * D + c, *b = q1 + ((size_t)t * H + h) * D + c;
                int g = h / (H / G);
                *a = c == outlier(DS_STAT_Q, l, g) ? 3.0f : noise();
                *b = c == outlier(DS_STAT_QK, l, g) ? -2.0f : c == outlier(DS_STAT_K, l, g) ? 9.0f
                   : c == outlier(DS_STAT_QKV, l, g) ? 1.0f : noise() * 0.1f;
            }
        for (int g = 0; g < G; g++)
            for (int c = 0; c < D; c++) {
                float *a = k0 + ((size_t)t * G + g) * D + c, *b = k1 + ((size_t)t * G + g) * D + c;
                *a = c == outlier(DS_STAT_K, l, g) ? -4.0f : noise();
                *b = c == outlier(DS_STAT_QK, l, g) ? 2.0f : c == outlier(DS_STAT_Q, l, g) ? 9.0f
                   : c == outlier(DS_STAT_QKV, l, g) ? (t & 1 ? -1.0f : 1.0f) : noise() * 0.1f;
            }
    }
}

/* Two blocks for every layer, fed to a fresh accumulator; returns the finished calibration. */
static ds_calibration *calibrate_synthetic(uint32_t seed, ds_calib_acc **keep) {
    g_rng = seed;
    ds_calib_acc *a = ds_calib_acc_new(L, H, G, D);
    float q0[T * H * D], k0[T * G * D], q1[T * H * D], k1[T * G * D];
    for (int block = 0; block < 2; block++) {
        for (int l = 0; l < L; l++) {
            make_block(q0, k0, q1, k1, l);
            ds_calib_acc_add_pre_rope(a, l, q0, k0, T);
            ds_calib_acc_add_post_rope(a, l, q1, k1, T);
        }
        ds_calib_acc_tokens(a, T);
    }
    ds_calibration *c = NULL;
    if (ds_calib_finish(a, &c) != DS_OK) c = NULL;
    if (keep) *keep = a; else ds_calib_acc_free(a);
    return c;
}

/* the statistics ds_calib_acc feeds (mass is searched afterwards, calib_mass.c) */
#define N_FED DS_STAT_MASS

/* Every statistic equal (present in both, or absent in both); with paper_b, b came through the
 * paper's format, which has no qkv: that one must be absent from b instead. */
static int same_rankings_ex(const ds_calibration *a, const ds_calibration *b, int l_n, int g_n, int d, int paper_b) {
    for (int s = 0; s < DS_STAT_COUNT; s++) {
        if (paper_b && s == DS_STAT_QKV) {
            if (ds_calib_ranking(b, (ds_stat)s, 0, 0)) return 0;
            continue;
        }
        for (int l = 0; l < l_n; l++)
            for (int g = 0; g < g_n; g++) {
                const int16_t *x = ds_calib_ranking(a, (ds_stat)s, l, g), *y = ds_calib_ranking(b, (ds_stat)s, l, g);
                if (!x != !y || (x && memcmp(x, y, (size_t)d * sizeof *x) != 0)) return 0;
            }
    }
    return 1;
}

static int same_rankings(const ds_calibration *a, const ds_calibration *b, int l_n, int g_n, int d) {
    return same_rankings_ex(a, b, l_n, g_n, d, 0);
}

static const ds_calib_meta META = {"llama", L, H, G, D, "/models/m.gguf", 9007199254740991ull,
                                   "austen", "ab12", 2 * T};

/* ---------------------------------------------------------------- statistics */

TEST(calib_outliers_rank_first_per_stat) {
    ds_calibration *c = calibrate_synthetic(7, NULL);
    CHECK(c != NULL);
    for (int s = 0; s < N_FED; s++)
        for (int l = 0; l < L; l++)
            for (int g = 0; g < G; g++) {
                const int16_t *r = ds_calib_ranking(c, (ds_stat)s, l, g);
                CHECK(r != NULL);
                CHECK_MSG(r[0] == outlier(s, l, g), "stat %s layer %d kv %d: first %d, want %d",
                          ds_calib_stat_name((ds_stat)s), l, g, r[0], outlier(s, l, g));
            }
    CHECK(ds_calib_get_info(c)->text_tokens == 2 * T);
    CHECK(ds_calib_ranking(c, DS_STAT_QK, L, 0) == NULL && ds_calib_ranking(c, DS_STAT_QK, 0, G) == NULL);
    ds_calibration_free(c);
}

/* The whole ranking, and the values it ranks by, against statistics computed here independently
 * (the group sum for q and qk; for qkv by brute force from all the tokens kept, with the
 * two-pass variance mean((k - mean k)^2), not the accumulator's one-pass sums). */
TEST(calib_full_ranking_matches_reference) {
    ds_calib_acc *a = NULL;
    ds_calibration *c = calibrate_synthetic(99, &a);
    CHECK(c != NULL);
    static double ref[N_FED][L][G][D];
    static double qs_all[L][G][D][2 * T], k_all[L][G][D][2 * T];   /* post-RoPE group query sum, key */
    memset(ref, 0, sizeof ref);
    g_rng = 99;
    float q0[T * H * D], k0[T * G * D], q1[T * H * D], k1[T * G * D];
    for (int block = 0; block < 2; block++)
        for (int l = 0; l < L; l++) {
            make_block(q0, k0, q1, k1, l);
            for (int t = 0; t < T; t++)
                for (int h = 0; h < H; h++)
                    for (int x = 0; x < D; x++) {
                        int g = h / (H / G);
                        ref[DS_STAT_Q][l][g][x] += fabs(q0[(t * H + h) * D + x]);
                        ref[DS_STAT_QK][l][g][x] += fabs((double)q1[(t * H + h) * D + x] * k1[(t * G + g) * D + x]);
                        if (h % (H / G) == 0) ref[DS_STAT_K][l][g][x] += fabs(k0[(t * G + g) * D + x]);
                        if (h % (H / G) == 0) {
                            qs_all[l][g][x][block * T + t] = 0;
                            k_all[l][g][x][block * T + t] = k1[(t * G + g) * D + x];
                        }
                        qs_all[l][g][x][block * T + t] += q1[(t * H + h) * D + x];
                    }
        }
    for (int l = 0; l < L; l++)
        for (int g = 0; g < G; g++)
            for (int x = 0; x < D; x++) {
                const int n = 2 * T;
                double q2 = 0, mean = 0, var = 0;
                for (int i = 0; i < n; i++) { q2 += qs_all[l][g][x][i] * qs_all[l][g][x][i]; mean += k_all[l][g][x][i]; }
                mean /= n;
                for (int i = 0; i < n; i++) var += (k_all[l][g][x][i] - mean) * (k_all[l][g][x][i] - mean);
                ref[DS_STAT_QKV][l][g][x] = q2 / n * (var / n);
            }
    for (int s = 0; s < N_FED; s++)   /* the values: equal up to summation rounding */
        for (int l = 0; l < L; l++)
            for (int g = 0; g < G; g++) {
                double top = 0;
                for (int x = 0; x < D; x++) top = fmax(top, ref[s][l][g][x]);
                for (int x = 0; x < D; x++)
                    CHECK_MSG(fabs(ds_calib_acc_value(a, (ds_stat)s, l, g, x) - ref[s][l][g][x]) <= 1e-12 * top,
                              "stat %s layer %d kv %d channel %d: %.17g vs reference %.17g", ds_calib_stat_name((ds_stat)s),
                              l, g, x, ds_calib_acc_value(a, (ds_stat)s, l, g, x), ref[s][l][g][x]);
            }
    CHECK(isnan(ds_calib_acc_value(a, DS_STAT_QKV, L, 0, 0)) && isnan(ds_calib_acc_value(a, DS_STAT_QKV, 0, 0, D)));
    ds_calib_acc_free(a);
    for (int s = 0; s < N_FED; s++)
        for (int l = 0; l < L; l++)
            for (int g = 0; g < G; g++) {
                const int16_t *r = ds_calib_ranking(c, (ds_stat)s, l, g);
                for (int i = 0; i + 1 < D; i++) {   /* non-increasing; equal values by id */
                    double u = ref[s][l][g][r[i]], v = ref[s][l][g][r[i + 1]];
                    CHECK_MSG(u > v * (1 + 1e-12) || (fabs(u - v) <= 1e-12 * u && r[i] < r[i + 1]),
                              "stat %d layer %d kv %d position %d", s, l, g, i);
                }
            }
    ds_calibration_free(c);
}

/* Why qkv exists: a channel whose key is large but (nearly) constant across tokens adds the same
 * amount to every key's approximate score, so it cannot change which keys are in the top k. The
 * paper's qk (mean |q k|) ranks it first; qkv ranks it below every channel whose key varies. */
TEST(calib_qkv_ranks_constant_keys_low) {
    enum { TT = 64, DD = 4 };
    ds_calib_acc *a = ds_calib_acc_new(1, 2, 1, DD);
    CHECK(a != NULL);
    float q[TT * 2 * DD], k[TT * DD];
    g_rng = 4242;
    for (int t = 0; t < TT; t++) {
        for (int h = 0; h < 2; h++) {
            float *qt = q + ((size_t)t * 2 + h) * DD;
            qt[0] = 1.0f;                    /* channel 0: query 1, key 10 (+-0.005): large, ~constant */
            qt[1] = 1.0f;                    /* channel 1: query 1, key +-1 (varies) */
            qt[2] = 0.1f;                    /* channels 2, 3: small query, key varies by +-0.5 */
            qt[3] = -0.1f;
        }
        float *kt = k + (size_t)t * DD;
        kt[0] = 10.0f + noise() * 0.1f;
        kt[1] = t & 1 ? -1.0f : 1.0f;
        kt[2] = (t % 3 - 1) * 0.5f;
        kt[3] = noise() * 10.0f;
    }
    ds_calib_acc_add_post_rope(a, 0, q, k, TT);
    ds_calibration *c = NULL;
    CHECK(ds_calib_finish(a, &c) == DS_OK);
    const int16_t *qk = ds_calib_ranking(c, DS_STAT_QK, 0, 0), *qkv = ds_calib_ranking(c, DS_STAT_QKV, 0, 0);
    CHECK(qk && qkv);
    CHECK_MSG(qk[0] == 0, "qk ranks channel %d first, expected the constant-key channel 0", qk[0]);
    CHECK_MSG(qkv[0] == 1 && qkv[DD - 1] == 0, "qkv ranking %d %d %d %d: expected 1 first and 0 last",
              qkv[0], qkv[1], qkv[2], qkv[3]);
    /* the value itself: E[qsum^2] = 4, Var(k) = 1 exactly for the +-1 channel */
    CHECK_NEAR(ds_calib_acc_value(a, DS_STAT_QKV, 0, 0, 1), 4.0, 1e-12);
    ds_calibration_free(c);
    ds_calib_acc_free(a);
}

/* Block 1 makes channel 5 the strongest, block 2 channel 9 (weaker in sum). Summing both blocks
 * ranks 5 then 9; keeping only the last block would put 9 first, only the first block would put
 * 9 last (it is 0 there, below the noise). */
TEST(calib_every_block_counts) {
    ds_calib_acc *a = ds_calib_acc_new(1, 2, 1, 8);
    CHECK(a != NULL);
    float q[4 * 2 * 8], k[4 * 8];
    for (int block = 0; block < 2; block++) {
        for (int i = 0; i < 4 * 2 * 8; i++) q[i] = (i % 8 == 5) ? (block ? 0 : 5) : (i % 8 == 1) ? 0 : 0.01f;
        for (int i = 0; i < 4 * 8; i++) k[i] = (i % 8 == 5) ? (block ? 0 : 5) : (i % 8 == 1) ? 0 : 0.01f;
        for (int i = 0; i < 4 * 2 * 8; i++) if (i % 8 == 1) q[i] = block ? 3 : 0;
        for (int i = 0; i < 4 * 8; i++) if (i % 8 == 1) k[i] = block ? 3 : 0;
        ds_calib_acc_add_pre_rope(a, 0, q, k, 4);
        ds_calib_acc_add_post_rope(a, 0, q, k, 4);
        ds_calib_acc_tokens(a, 4);
    }
    ds_calibration *c;
    CHECK(ds_calib_finish(a, &c) == DS_OK);
    for (int s = 0; s < N_FED; s++) {
        const int16_t *r = ds_calib_ranking(c, (ds_stat)s, 0, 0);
        CHECK_MSG(r[0] == 5 && r[1] == 1, "stat %s: %d %d", ds_calib_stat_name((ds_stat)s), r[0], r[1]);
    }
    CHECK(ds_calib_acc_get_tokens(a) == 8);
    ds_calibration_free(c);
    ds_calib_acc_free(a);
}

TEST(calib_ties_and_missing_stats) {
    ds_calib_acc *a = ds_calib_acc_new(2, 2, 2, 8);
    float z[3 * 2 * 8] = {0};
    ds_calibration *c = NULL;
    CHECK(ds_calib_finish(a, &c) == DS_ERR_ARG && c == NULL);          /* nothing fed */
    ds_calib_acc_add_pre_rope(a, 0, z, z, 3);
    CHECK(ds_calib_finish(a, &c) == DS_ERR_ARG);                       /* layer 1 missing */
    CHECK(strstr(ds_last_error(), "1 of 2 layers") != NULL);
    ds_calib_acc_add_pre_rope(a, 1, z, z, 3);
    CHECK(ds_calib_finish(a, &c) == DS_OK);                            /* q and k only */
    CHECK(ds_calib_ranking(c, DS_STAT_QK, 0, 0) == NULL);
    const int16_t *r = ds_calib_ranking(c, DS_STAT_K, 1, 1);
    for (int i = 0; i < 8; i++) CHECK(r[i] == i);                      /* all tied: by id */
    ds_calibration_free(c);
    ds_calib_acc_free(a);
    CHECK(ds_calib_acc_new(2, 3, 2, 8) == NULL);                       /* 3 heads, 2 KV heads */
    ds_stat s;
    CHECK(ds_calib_stat_parse("qk", &s) == DS_OK && s == DS_STAT_QK);
    CHECK(ds_calib_stat_parse("qkv", &s) == DS_OK && s == DS_STAT_QKV);
    CHECK(strcmp(ds_calib_stat_name(DS_STAT_QKV), "qkv") == 0);
    CHECK(ds_calib_stat_parse("v", &s) == DS_ERR_ARG && strstr(ds_last_error(), "q, k, qk, qkv or mass"));
}

/* ---------------------------------------------------------------- the sidecar */

TEST(calib_save_deterministic_and_round_trip) {
    ds_calibration *c1 = calibrate_synthetic(3, NULL), *c2 = calibrate_synthetic(3, NULL), *c3 = NULL;
    CHECK(c1 && c2);
    const char *p1 = tmp_path("det1"), *p2 = tmp_path("det2"), *p3 = tmp_path("det3");
    CHECK(ds_calib_save(c1, &META, p1) == DS_OK);
    CHECK(ds_calib_save(c2, &META, p2) == DS_OK);
    char *t1 = read_text(p1), *t2 = read_text(p2);
    CHECK(t1 && t2 && strcmp(t1, t2) == 0);
    CHECK(strstr(t1, "\"file\":\"m.gguf\"") && strstr(t1, "\"size\":9007199254740991}"));
    /* all four statistics, qk first and qkv last (after the older three) */
    const char *at_qk = strstr(t1, "\"qk\": ["), *at_k = strstr(t1, "\"k\": ["), *at_q = strstr(t1, "\"q\": ["),
               *at_qkv = strstr(t1, "\"qkv\": [");
    CHECK(at_qk && at_k && at_q && at_qkv && at_qk < at_k && at_k < at_q && at_q < at_qkv);
    CHECK(ds_calib_load(p1, &META, &c3) == DS_OK);
    CHECK(same_rankings(c1, c3, L, G, D) && ds_calib_ranking(c3, DS_STAT_QKV, L - 1, G - 1) != NULL);
    CHECK(ds_calib_require(c3, DS_STAT_QKV) == DS_OK);
    const ds_calib_info *in = ds_calib_get_info(c3);
    CHECK(strcmp(in->arch, "llama") == 0 && strcmp(in->text_name, "austen") == 0);
    CHECK(strcmp(in->text_sha256, "ab12") == 0 && in->text_tokens == 2 * T);
    CHECK(in->n_layer == L && in->n_head == H && in->n_head_kv == G && in->head_dim == D);
    CHECK(ds_calib_save(c3, &META, p3) == DS_OK);                     /* save(load(x)) == x */
    char *t3 = read_text(p3);
    CHECK(t3 && strcmp(t1, t3) == 0);
    ds_calibration *c4 = NULL;                                        /* no meta: the text identity stays */
    CHECK(ds_calib_save(c3, NULL, p3) == DS_OK && ds_calib_load(p3, NULL, &c4) == DS_OK);
    CHECK(strcmp(ds_calib_get_info(c4)->text_sha256, "ab12") == 0 && same_rankings(c1, c4, L, G, D));
    ds_calibration_free(c4);
    ds_calib_meta wrong = META;
    wrong.n_layer = L + 1;
    CHECK(ds_calib_save(c1, &wrong, p3) == DS_ERR_ARG);
    free(t1); free(t2); free(t3);
    remove(p1); remove(p2); remove(p3);
    ds_calibration_free(c1); ds_calibration_free(c2); ds_calibration_free(c3);
}

TEST(calib_load_rejects_other_model) {
    ds_calibration *c = calibrate_synthetic(5, NULL), *o = NULL;
    const char *p = tmp_path("ident");
    CHECK(c && ds_calib_save(c, &META, p) == DS_OK);
    struct { ds_calib_meta m; const char *msg; } cases[] = {
        {{"llama", 3, H, G, D, NULL, 0, NULL, NULL, 0}, "calibration is for 2 layers, model has 3"},
        {{"llama", L, H, 1, D, NULL, 0, NULL, NULL, 0}, "for 2 KV heads, model has 1"},
        {{"llama", L, H, G, 64, NULL, 0, NULL, NULL, 0}, "head_dim"},
        {{"qwen2", L, H, G, D, NULL, 0, NULL, NULL, 0}, "arch \"llama\", model is \"qwen2\""},
        {{NULL, 0, 0, 0, 0, "x/other.gguf", 0, NULL, NULL, 0}, "model file \"m.gguf\", model is \"other.gguf\""},
        {{NULL, 0, 0, 0, 0, NULL, 99, NULL, NULL, 0}, "bytes"},
        {{NULL, 0, 0, 0, 0, NULL, 0, NULL, "ffff", 0}, "sha256"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ds_status st = ds_calib_load(p, &cases[i].m, &o);
        CHECK_MSG(st == DS_ERR_UNSUPPORTED && o == NULL, "case %zu: status %d", i, st);
        CHECK_MSG(strstr(ds_last_error(), cases[i].msg), "case %zu: '%s'", i, ds_last_error());
    }
    CHECK(ds_calib_load(p, NULL, &o) == DS_OK);                       /* no expectation */
    ds_calibration_free(o);
    ds_calib_meta same = {"llama", L, H, G, D, "elsewhere/m.gguf", 9007199254740991ull, NULL, "ab12", 0};
    CHECK(ds_calib_load(p, &same, &o) == DS_OK);
    ds_calibration_free(o);
    remove(p);
    ds_calibration_free(c);
}

/* A valid minimal file and, for each malformation, the edit and a phrase of the message. */
static const char VALID[] =
    "{\"format\":\"dsinfer-calibration\",\"version\":1,\"model\":{\"arch\":\"llama\",\"n_layer\":1,"
    "\"n_head\":2,\"n_head_kv\":1,\"head_dim\":4,\"file\":\"m.gguf\",\"size\":123},"
    "\"text\":{\"name\":\"t\",\"sha256\":null,\"tokens\":10},\"layout\":\"gguf\","
    "\"stats\":{\"qk\":[[[3,1,0,2]]],\"k\":[[[0,1,2,3]]]}}";

TEST(calib_load_rejects_malformed) {
    const char *p = tmp_path("bad");
    ds_calibration *c = NULL;
    CHECK(write_text(p, VALID) && ds_calib_load(p, NULL, &c) == DS_OK);
    CHECK(ds_calib_ranking(c, DS_STAT_QK, 0, 0)[0] == 3 && ds_calib_ranking(c, DS_STAT_Q, 0, 0) == NULL);
    ds_calibration_free(c);
    static const file_edit edits[] = {
        {"[[[3,1,0,2]]]", "[[[3,1,0,2]]],\"qkv\":[[[0,1,2]]]", "qkv layer 0 kv head 0: 3 channel ids"},
        {"[[[3,1,0,2]]]", "[[[3,1,0,0]]]", "channel 0 appears twice"},
        {"\"layout\":\"gguf\",", "\"layout\":\"gguf\",\"curves\":{\"widths\":[1],\"qk\":[]},", "curves.widths"},
        {"\"layout\":\"gguf\",", "\"layout\":\"gguf\",\"curves\":[],", "\"curves\": expected an object"},
        {"\"layout\":\"gguf\",", "\"layout\":\"gguf\",\"curves\":{\"widths\":[1,1,1,1,1,1,1,2,2,2,2,3,3,3,3,4],"
         "\"qq\":[]},", "unknown statistic \"qq\""},
        {"\"layout\":\"gguf\",", "\"layout\":\"gguf\",\"curves\":{\"widths\":[1,1,1,1,1,1,1,2,2,2,2,3,3,3,3,4],"
         "\"qk\":[[[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,2]]]},", "qk layer 0 kv head 0 value 15"},
        {"[[[3,1,0,2]]]", "[[[3,1,0,4]]]", "qk layer 0 kv head 0 entry 3"},
        {"[[[3,1,0,2]]]", "[[[3,1,0,-1]]]", "expected an integer in [0, 3]"},
        {"[[[3,1,0,2]]]", "[[[3,1,0,1e999]]]", "got inf"},
        {"[[[3,1,0,2]]]", "[[[3,1,0,2.5]]]", "got 2.5"},
        {"[[[3,1,0,2]]]", "[[[3,1,0]]]", "3 channel ids, expected head_dim = 4"},
        {"[[[3,1,0,2]]]", "[[[3,1,0,2,1]]]", "more than head_dim"},
        {"[[[3,1,0,2]]]", "[[[3,1,\"0\",2]]]", "expected an integer, got a string"},
        {"[[[3,1,0,2]]]", "[[3,1,0,2]]", "expected a list of 1 KV heads, got a list (4 entries)"},
        {"[[[3,1,0,2]]]", "[[7]]", "expected a list of 4 channel ids, got a number"},
        {"[[[3,1,0,2]]]", "[[[3,1,0,2]],[[3,1,0,2]]]", "expected a list of 1 layers"},
        {"[[[3,1,0,2]]]", "{}", "expected a list of 1 layers, got an object"},
        {"\"qk\":", "\"qv\":", "unknown statistic \"qv\""},
        {"\"stats\":{\"qk\":[[[3,1,0,2]]],\"k\":[[[0,1,2,3]]]}", "\"stats\":{}", "holds no statistic"},
        {"\"n_layer\":1", "\"n_layer\":\"1\"", "model.n_layer: expected an integer, got a string"},
        {"\"n_layer\":1", "\"n_layer\":1e300", "model.n_layer: expected an integer in"},
        {"\"n_layer\":1,", "", "model.n_layer: expected an integer, got nothing (missing)"},
        {"\"n_head_kv\":1", "\"n_head_kv\":3", "not a multiple"},
        {"\"head_dim\":4", "\"head_dim\":99999999999999999999", "model.head_dim"},
        {"\"size\":123", "\"size\":-5", "model.size"},
        {"\"arch\":\"llama\"", "\"arch\":7", "model.arch: expected a string"},
        {"\"tokens\":10", "\"tokens\":[]", "text.tokens"},
        {"\"format\":\"dsinfer-calibration\"", "\"format\":\"other\"", "not a dsinfer calibration file"},
        {"\"version\":1", "\"version\":2", "version 2"},
        {"\"layout\":\"gguf\"", "\"layout\":\"hf\"", "layout"},
        {"\"layout\":\"gguf\",", "\"layout\":\"gguf\",\"layout\":\"gguf\",", "\"layout\" appears twice"},
        {"\"text\":{\"name\":\"t\",\"sha256\":null,\"tokens\":10},", "", "\"text\": expected an object, got nothing"},
        {"\"model\":{", "\"model\":[{", "not valid JSON"},
    };
    CHECK(edits_rejected(p, VALID, edits, sizeof edits / sizeof edits[0]));
    /* Every truncation of a valid file is rejected cleanly. */
    char buf[sizeof VALID];
    for (size_t n = 0; n + 1 < sizeof VALID; n++) {
        memcpy(buf, VALID, n);
        buf[n] = 0;
        CHECK(write_text(p, buf));
        ds_status st = ds_calib_load(p, NULL, &c);
        CHECK_MSG(st == DS_ERR_FORMAT, "truncated at %zu: status %d", n, st);
    }
    CHECK(strstr(ds_last_error(), "not valid JSON"));
    static const struct { const char *text, *msg; } whole[] = {
        {"", "empty file"},
        {"[1,2]", "expected a JSON object at the top, got a list"},
        {"{} trailing", "not valid JSON"},
        {"\x01\x02\xff\xfe binary", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++) {
        CHECK(write_text(p, whole[i].text));
        CHECK_MSG(ds_calib_load(p, NULL, &c) == DS_ERR_FORMAT && strstr(ds_last_error(), whole[i].msg),
                  "whole %zu: '%s'", i, ds_last_error());
    }
    /* Very deep nesting: cJSON's nesting limit turns it into a syntax error, not a stack overflow. */
    size_t deep = 100000;
    char *nest = malloc(2 * deep + 1);
    memset(nest, '[', deep);
    memset(nest + deep, ']', deep);
    nest[2 * deep] = 0;
    CHECK(write_text(p, nest));
    free(nest);
    CHECK(ds_calib_load(p, NULL, &c) == DS_ERR_FORMAT);
    remove(p);
    CHECK(ds_calib_load(p, NULL, &c) == DS_ERR_IO);
    CHECK(ds_calib_load("/", NULL, &c) == DS_ERR_IO && strstr(ds_last_error(), "not a regular file"));
}

/* A file from before qkv existed (VALID has qk and k only) still loads and serves qk and k; only
 * asking for qkv fails, with a message that says why and what to do. */
TEST(calib_old_file_without_qkv) {
    const char *p = tmp_path("old");
    ds_calibration *c = NULL;
    CHECK(write_text(p, VALID) && ds_calib_load(p, NULL, &c) == DS_OK);
    CHECK(ds_calib_ranking(c, DS_STAT_QKV, 0, 0) == NULL);
    CHECK(ds_calib_require(c, DS_STAT_QK) == DS_OK && ds_calib_require(c, DS_STAT_K) == DS_OK);
    CHECK(ds_calib_require(c, DS_STAT_QKV) == DS_ERR_ARG);
    const char *e = ds_last_error();
    CHECK_MSG(strstr(e, "no 'qkv' statistic") && strstr(e, "written before") && strstr(e, "only qk, k") &&
              strstr(e, "recalibrate") && strstr(e, "dsinfer calibrate"), "message: '%s'", e);
    CHECK(ds_calib_require(c, DS_STAT_Q) == DS_ERR_ARG && strstr(ds_last_error(), "no 'q' statistic") &&
          !strstr(ds_last_error(), "written before"));
    /* save(load(old)) stays an old file: nothing is invented */
    const char *p2 = tmp_path("old2");
    ds_calibration *c2 = NULL;
    CHECK(ds_calib_save(c, NULL, p2) == DS_OK && ds_calib_load(p2, NULL, &c2) == DS_OK);
    CHECK(ds_calib_ranking(c2, DS_STAT_QKV, 0, 0) == NULL && same_rankings(c, c2, 1, 1, 4));
    char *t = read_text(p2);
    CHECK(t && !strstr(t, "qkv"));
    free(t);
    ds_calibration_free(c2); ds_calibration_free(c);
    /* a file with qkv alone is fine to load, but the paper's format cannot hold it */
    char *only = replace1(VALID, "\"qk\":[[[3,1,0,2]]],\"k\":", "\"qkv\":");
    CHECK(only && write_text(p, only));
    free(only);
    CHECK(ds_calib_load(p, NULL, &c) == DS_OK && ds_calib_ranking(c, DS_STAT_QKV, 0, 0)[0] == 0);
    CHECK(ds_calib_export_paper(c, p2, 0) == DS_ERR_ARG && strstr(ds_last_error(), "cannot hold qkv"));
    ds_calibration_free(c);
    remove(p); remove(p2);
}

/* ---------------------------------------------------------------- the paper's JSON */

TEST(calib_hf_to_gguf_map) {
    static const int want[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    for (int c = 0; c < 8; c++) CHECK(ds_calib_hf_to_gguf(c, 8) == want[c]);
    for (int d = 2; d <= 256; d += 2) {   /* a bijection; (j, j+d/2) lands on (2j, 2j+1) */
        char seen[256] = {0};
        for (int c = 0; c < d; c++) {
            int g = ds_calib_hf_to_gguf(c, d);
            CHECK(g >= 0 && g < d && !seen[g]);
            seen[g] = 1;
            if (c < d / 2) CHECK(ds_calib_hf_to_gguf(c + d / 2, d) == g + 1 && g % 2 == 0);
        }
    }
    CHECK(ds_calib_hf_to_gguf(8, 8) == -1 && ds_calib_hf_to_gguf(-1, 8) == -1 && ds_calib_hf_to_gguf(0, 7) == -1);
}

/* 2 layers, 2 heads (MHA), head_dim 8, all three projections, HF layout. */
static const char PAPER[] =
    "{\"model.layers.0.self_attn.q_proj\": [[7,6,5,4,3,2,1,0],[0,1,2,3,4,5,6,7]],\n"
    " \"model.layers.0.self_attn.k_proj\": [[4,0,5,1,6,2,7,3],[1,2,3,4,5,6,7,0]],\n"
    " \"model.layers.0.self_attn.qk_proj\": [[3,7,2,6,1,5,0,4],[2,3,0,1,6,7,4,5]],\n"
    " \"model.layers.1.self_attn.q_proj\": [[0,2,4,6,1,3,5,7],[7,5,3,1,6,4,2,0]],\n"
    " \"model.layers.1.self_attn.k_proj\": [[5,4,7,6,1,0,3,2],[6,7,0,1,2,3,4,5]],\n"
    " \"model.layers.1.self_attn.qk_proj\": [[1,0,3,2,5,4,7,6],[4,5,6,7,0,1,2,3]],\n"
    " \"model.norm.something\": 0}\n";

TEST(calib_paper_import_remap) {
    const char *p = tmp_path("paper");
    CHECK(write_text(p, PAPER));
    ds_calib_meta m = {"llama", 2, 2, 2, 8, NULL, 0, NULL, NULL, 0};
    ds_calibration *hf = NULL, *gg = NULL;
    CHECK(ds_calib_import_paper(p, &m, 0, &hf) == DS_OK);
    CHECK(ds_calib_import_paper(p, &m, 1, &gg) == DS_OK);
    const int16_t *r = ds_calib_ranking(hf, DS_STAT_QK, 0, 0);
    static const int16_t qk00[8] = {3, 7, 2, 6, 1, 5, 0, 4};
    CHECK(memcmp(r, qk00, sizeof qk00) == 0);                          /* no remap: as written */
    CHECK(ds_calib_ranking(hf, DS_STAT_QKV, 0, 0) == NULL);            /* the paper has no qkv */
    CHECK(ds_calib_require(hf, DS_STAT_QKV) == DS_ERR_ARG && strstr(ds_last_error(), "paper's format has no qkv"));
    for (int s = 0; s < N_FED; s++)
        for (int l = 0; l < 2 && s != DS_STAT_QKV; l++)
            for (int g = 0; g < 2; g++) {
                const int16_t *a = ds_calib_ranking(hf, (ds_stat)s, l, g), *b = ds_calib_ranking(gg, (ds_stat)s, l, g);
                CHECK(a && b);
                for (int i = 0; i < 8; i++) CHECK(b[i] == ds_calib_hf_to_gguf(a[i], 8));
            }
    /* qk layer 0 head 0 in GGUF layout: HF 3 -> 6, 7 -> 7, 2 -> 4, 6 -> 5, ... (RoPE pairs adjacent) */
    static const int16_t qk00_gguf[8] = {6, 7, 4, 5, 2, 3, 0, 1};
    CHECK(memcmp(ds_calib_ranking(gg, DS_STAT_QK, 0, 0), qk00_gguf, sizeof qk00_gguf) == 0);
    CHECK(strncmp(ds_calib_get_info(gg)->text_name, "paper:", 6) == 0);
    ds_calibration_free(hf); ds_calibration_free(gg);
    remove(p);
}

/* GQA: one list per query head, merged per group by reciprocal rank; per-KV-head lists as is. */
TEST(calib_paper_import_gqa_merge) {
    const char *p = tmp_path("gqa");
    CHECK(write_text(p,
        "{\"model.layers.0.self_attn.qk_proj\": [[5,0,1,2,3,4,6,7],[0,1,2,3,4,6,7,5],"
        "[7,6,5,4,3,2,1,0],[0,1,2,3,4,5,6,7]],\n"
        " \"model.layers.0.self_attn.k_proj\": [[1,0,2,3,4,5,6,7],[7,0,1,2,3,4,5,6]]}"));
    ds_calib_meta m = {NULL, 1, 4, 2, 8, NULL, 0, NULL, NULL, 0};
    ds_calibration *c = NULL;
    CHECK(ds_calib_import_paper(p, &m, 0, &c) == DS_OK);
    /* group 0: 0 (positions 1,0) beats 5 (positions 0,7): 1.5 > 1.125 > channel 1's 0.83 */
    const int16_t *r = ds_calib_ranking(c, DS_STAT_QK, 0, 0);
    CHECK(r[0] == 0 && r[1] == 5 && r[2] == 1);
    /* group 1: mirrored lists tie channel pairs exactly (c and 7-c); ties go to the lower id */
    static const int16_t want1[8] = {0, 7, 1, 6, 2, 5, 3, 4};
    CHECK(memcmp(ds_calib_ranking(c, DS_STAT_QK, 0, 1), want1, sizeof want1) == 0);
    CHECK(ds_calib_ranking(c, DS_STAT_K, 0, 1)[0] == 7 && ds_calib_ranking(c, DS_STAT_Q, 0, 0) == NULL);
    ds_calibration_free(c);
    remove(p);
}

TEST(calib_paper_export_import_round_trip) {
    ds_calibration *c = calibrate_synthetic(11, NULL), *back = NULL, *raw = NULL;
    CHECK(c != NULL);
    const char *p = tmp_path("export");
    for (int remap = 0; remap <= 1; remap++) {
        CHECK(ds_calib_export_paper(c, p, remap) == DS_OK);
        CHECK(ds_calib_import_paper(p, &META, remap, &back) == DS_OK);
        CHECK_MSG(same_rankings_ex(c, back, L, G, D, 1), "remap %d", remap);   /* all but qkv */
        ds_calibration_free(back);
    }
    /* The exported file is in HF layout: importing it without the remap gives the inverse map. */
    CHECK(ds_calib_import_paper(p, &META, 0, &raw) == DS_OK);
    const int16_t *a = ds_calib_ranking(c, DS_STAT_QK, 1, 1), *b = ds_calib_ranking(raw, DS_STAT_QK, 1, 1);
    for (int i = 0; i < D; i++) CHECK(ds_calib_hf_to_gguf(b[i], D) == a[i]);
    char *t = read_text(p);
    CHECK(t && strstr(t, "\"model.layers.1.self_attn.qk_proj\"") && !strstr(t, "qkv"));
    free(t);
    ds_calibration_free(raw); ds_calibration_free(c);
    remove(p);
}

TEST(calib_paper_rejects_malformed) {
    const char *p = tmp_path("paperbad");
    ds_calib_meta m = {"llama", 2, 2, 2, 8, NULL, 0, NULL, NULL, 0};
    static const struct { const char *from, *to, *msg; ds_status st; } edits[] = {
#define QK1 "\"model.layers.1.self_attn.qk_proj\""
        {QK1, "\"model.layers.7.self_attn.qk_proj\"", "has layer 7, model has 2 layers", DS_ERR_UNSUPPORTED},
        {QK1, "\"model.layers.0.self_attn.qk_proj\"", "appears twice", DS_ERR_FORMAT},
        {QK1, "\"model.layers.1.self_attn.zz_proj\"", "qk_proj has no entry for layer 1", DS_ERR_FORMAT},
        {"[[1,0,3,2,5,4,7,6],[4,5,6,7,0,1,2,3]]", "[[1,0,3,2,5,4,7,6]]", "expected a list of 2 (query heads)",
         DS_ERR_FORMAT},
        {"[[1,0,3,2,5,4,7,6],", "[[1,0,3,2,5,4,7,7],", "channel 7 appears twice", DS_ERR_FORMAT},
        {"[[1,0,3,2,5,4,7,6],", "[[1,0,3,2,5,4,7,8],", "head 0 entry 7", DS_ERR_FORMAT},
        {"[[1,0,3,2,5,4,7,6],", "[[1,0,3,2,5,4,7],", "7 channel ids", DS_ERR_FORMAT},
        {"[[1,0,3,2,5,4,7,6],", "[{},", "got an object", DS_ERR_FORMAT},
        {"\"model.norm.something\": 0}", "", "not valid JSON", DS_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char *t = replace1(PAPER, edits[i].from, edits[i].to);
        CHECK_MSG(t != NULL, "edit %zu does not apply", i);
        CHECK(write_text(p, t));
        free(t);
        ds_calibration *c = NULL;
        ds_status st = ds_calib_import_paper(p, &m, 1, &c);
        CHECK_MSG(st == edits[i].st && c == NULL, "edit %zu: status %d", i, st);
        CHECK_MSG(strstr(ds_last_error(), edits[i].msg), "edit %zu: '%s' lacks '%s'", i, ds_last_error(), edits[i].msg);
    }
    ds_calibration *c = NULL;
    CHECK(write_text(p, "{\"other\": 1}"));
    CHECK(ds_calib_import_paper(p, &m, 1, &c) == DS_ERR_FORMAT && strstr(ds_last_error(), "no \"model.layers"));
    CHECK(write_text(p, "[]"));
    CHECK(ds_calib_import_paper(p, &m, 1, &c) == DS_ERR_FORMAT && strstr(ds_last_error(), "JSON object"));
    ds_calib_meta bad = {NULL, 2, 3, 2, 8, NULL, 0, NULL, NULL, 0};
    CHECK(ds_calib_import_paper(p, &bad, 1, &c) == DS_ERR_ARG);
    remove(p);
}

/* The key moments (mean, std of each post-RoPE key channel) come with qkv, survive a save/load
 * round trip bit for bit, and a malformed "k_moments" block is rejected. */
TEST(calib_key_moments) {
    ds_calibration *c = calibrate_synthetic(11, NULL), *c2 = NULL;
    CHECK(c != NULL);
    for (int l = 0; l < L; l++)
        for (int g = 0; g < G; g++) {
            const float *mu = ds_calib_kmean(c, l, g), *sd = ds_calib_kstd(c, l, g);
            CHECK(mu && sd);
            /* the qk outlier's key is constantly 2; the qkv outlier's is +1, -1, +1, -1, +1 in
             * each of the 2 blocks: mean 0.2, variance 1 - 0.04 */
            const int cq = outlier(DS_STAT_QK, l, g), cv = outlier(DS_STAT_QKV, l, g);
            CHECK_NEAR(mu[cq], 2.0, 1e-6);
            CHECK_NEAR(sd[cq], 0.0, 1e-3);
            CHECK_NEAR(mu[cv], 0.2, 1e-6);
            CHECK_NEAR(sd[cv], sqrt(0.96), 1e-6);
        }
    CHECK(ds_calib_kmean(c, L, 0) == NULL && ds_calib_kstd(c, 0, G) == NULL);
    const char *p = tmp_path("mom");
    CHECK(ds_calib_save(c, &META, p) == DS_OK && ds_calib_load(p, &META, &c2) == DS_OK);
    for (int l = 0; l < L; l++)
        for (int g = 0; g < G; g++) {
            CHECK(memcmp(ds_calib_kmean(c, l, g), ds_calib_kmean(c2, l, g), D * sizeof(float)) == 0);
            CHECK(memcmp(ds_calib_kstd(c, l, g), ds_calib_kstd(c2, l, g), D * sizeof(float)) == 0);
        }
    ds_calibration_free(c);
    ds_calibration_free(c2);
    /* a file without the block has no moments; a well-formed block loads; malformed ones fail */
    c = NULL;
    CHECK(write_text(p, VALID) && ds_calib_load(p, NULL, &c) == DS_OK && ds_calib_kmean(c, 0, 0) == NULL);
    ds_calibration_free(c);
    static const char good[] = ",\"k_moments\":{\"mean\":[[[0.5,-1,2,0]]],\"std\":[[[1,0,2.5,3]]]}}";
    char *t = replace1(VALID, "]]]}}", "]]]}" ), *u = NULL;
    CHECK(t != NULL);
    size_t n = strlen(t);
    u = malloc(n + sizeof good);
    memcpy(u, t, n);
    memcpy(u + n, good, sizeof good);
    free(t);
    c = NULL;
    CHECK(write_text(p, u) && ds_calib_load(p, NULL, &c) == DS_OK);
    CHECK(ds_calib_kmean(c, 0, 0)[1] == -1.0f && ds_calib_kstd(c, 0, 0)[2] == 2.5f);
    ds_calibration_free(c);
    static const file_edit edits[] = {
        {"[[[1,0,2.5,3]]]", "[[[1,0,2.5,-3]]]", "k_moments.std layer 0 kv head 0 channel 3: expected a finite number >= 0"},
        {"[[[0.5,-1,2,0]]]", "[[[0.5,-1,2]]]", "k_moments.mean layer 0 kv head 0: expected 4 numbers"},
        {"[[[0.5,-1,2,0]]]", "[[[0.5,-1,\"2\",0]]]", "channel 2: expected a finite number"},
        {"[[[0.5,-1,2,0]]]", "[[[0.5,-1,1e999,0]]]", "channel 2: expected a finite number"},
        {",\"std\":[[[1,0,2.5,3]]]", "", "k_moments.std: expected a list of 1 layers"},
        {"[[[1,0,2.5,3]]]", "[[1,0,2.5,3]]", "k_moments.std layer 0: expected a list of 1 KV heads"},
        {"{\"mean\"", "[{\"mean\"", "not valid JSON"},
    };
    CHECK(edits_rejected(p, u, edits, sizeof edits / sizeof edits[0]));
    free(u);
    remove(p);
}

/* ---------------------------------------------------------------- the mass ranking */

/* One layer, 2 query heads on 1 KV head, head_dim 8, one block of W tokens. Channels 0-3 have
 * large, nearly constant keys (10 +- 0.01) under queries of 1: each |q k| is ~20 over the group,
 * so qk ranks them first, yet they shift every token's score alike. Channels 6 and 7 carry +-1
 * keys under queries of 2, channels 4 and 5 +-1 keys under queries of 0.5: they decide the
 * attention, 6 and 7 the most. The first stage's set (head_dim / 4 = 2) holds two constant
 * channels under qk and finds nothing; the search must end on {6, 7}. The second stage (4
 * channels: the default width, capped at head_dim / 2) keeps {6, 7} and must add {4, 5}, which
 * break the ties that {6, 7}'s three score levels leave. */
#define MW 256
static ds_calibration *mass_fixture(ds_calib_mass **out_m) {
    enum { H2 = 2, D8 = 8 };
    static float q[MW * H2 * D8], k[MW * D8];
    g_rng = 7;
    for (int t = 0; t < MW; t++) {
        for (int h = 0; h < H2; h++)
            for (int c = 0; c < D8; c++) q[((size_t)t * H2 + h) * D8 + c] = c < 4 ? 1.0f : c < 6 ? 0.5f : 2.0f;
        for (int c = 0; c < D8; c++)
            k[(size_t)t * D8 + c] = c < 4 ? 10.0f + noise() * 0.01f : (noise() > 0 ? 1.0f : -1.0f);
    }
    ds_calib_acc *a = ds_calib_acc_new(1, H2, 1, D8);
    ds_calib_acc_add_pre_rope(a, 0, q, k, MW);
    ds_calib_acc_add_post_rope(a, 0, q, k, MW);
    ds_calib_acc_tokens(a, MW);
    ds_calibration *c = NULL;
    if (ds_calib_finish(a, &c) != DS_OK) c = NULL;
    ds_calib_mass *m = ds_calib_mass_new(1, H2, 1, D8, MW, 1);
    if (m) {
        ds_calib_acc_set_mass(a, m);   /* the forward pass's hooks now feed the sampler */
        ds_calib_mass_block(m, 0);
        ds_calib_acc_add_pre_rope(a, 0, q, k, MW);
        ds_calib_acc_add_post_rope(a, 0, q, k, MW / 2);   /* in two chunks, as prefill batches do */
        ds_calib_acc_add_post_rope(a, 0, q + (size_t)(MW / 2) * H2 * D8, k + (size_t)(MW / 2) * D8, MW - MW / 2);
    }
    ds_calib_acc_free(a);
    *out_m = m;
    return c;
}

TEST(calib_mass_finds_the_channels_that_carry_attention) {
    ds_calib_mass *m = NULL;
    ds_calibration *c = mass_fixture(&m);
    CHECK(c && m);
    const int16_t *qk = ds_calib_ranking(c, DS_STAT_QK, 0, 0);
    CHECK_MSG(qk[0] < 4 && qk[1] < 4, "qk should rank the constant channels first: %d %d", qk[0], qk[1]);
    CHECK(ds_calib_require(c, DS_STAT_MASS) == DS_ERR_ARG && strstr(ds_last_error(), "no 'mass' statistic") &&
          strstr(ds_last_error(), "--mass-blocks 0"));
    double before = 0, after = 0;
    CHECK(ds_calib_mass_rank(m, c, NULL, NULL, NULL, &before, &after) == DS_OK);
    const int16_t *ms = ds_calib_ranking(c, DS_STAT_MASS, 0, 0);
    CHECK(ms != NULL);
    CHECK_MSG((ms[0] == 6 && ms[1] == 7) || (ms[0] == 7 && ms[1] == 6), "mass set %d %d, expected {6, 7}", ms[0], ms[1]);
    CHECK_MSG((ms[2] == 4 && ms[3] == 5) || (ms[2] == 5 && ms[3] == 4), "second stage %d %d, expected {4, 5}", ms[2],
              ms[3]);
    /* the rest keeps qk's order */
    for (int i = 4, j = 0; i < 8; i++, j++) {
        while (qk[j] >= 4) j++;
        CHECK_MSG(ms[i] == qk[j], "position %d: %d, qk order gives %d", i, ms[i], qk[j]);
    }
    CHECK_MSG(after > before + 0.1 && after <= 1.0 + 1e-6, "objective %.4f -> %.4f", before, after);
    /* the curve: at width 2 (index 3 at head_dim 8) the first stage's set, so its objective, up to
     * ties: the +-1 keys give many equal scores, and the curve's scores (summed afresh) and the
     * search's (updated swap by swap) differ in the last bit, which reorders those ties */
    const float *cv = ds_calib_curve(c, DS_STAT_MASS, 0, 0);
    CHECK(cv != NULL && ds_calib_curve_width(8, 3) == 2);
    CHECK_MSG(cv && fabs(cv[3] - after) < 0.01 && cv[7] >= cv[3], "curve %.4f %.4f, search %.4f", cv ? cv[3] : -1,
              cv ? cv[7] : -1, after);
    ds_calib_mass_free(m);
    ds_calibration_free(c);
}

/* The search's result depends on nothing but its inputs: threads change who computes which
 * (layer, KV head), never the answer; and the file keeps mass after qkv and reloads it. */
TEST(calib_mass_deterministic_and_saved) {
    ds_calib_mass *m1 = NULL, *m2 = NULL;
    ds_calibration *c1 = mass_fixture(&m1), *c2 = mass_fixture(&m2), *c3 = NULL;
    CHECK(c1 && c2 && m1 && m2);
    ds_pool *pool = ds_pool_new(2);
    CHECK(pool != NULL);
    CHECK(ds_calib_mass_rank(m1, c1, NULL, NULL, NULL, NULL, NULL) == DS_OK);
    CHECK(ds_calib_mass_rank(m2, c2, pool, NULL, NULL, NULL, NULL) == DS_OK);
    CHECK(memcmp(ds_calib_ranking(c1, DS_STAT_MASS, 0, 0), ds_calib_ranking(c2, DS_STAT_MASS, 0, 0), 8 * sizeof(int16_t)) == 0);
    const char *p = tmp_path("mass");
    CHECK(ds_calib_save(c1, NULL, p) == DS_OK && ds_calib_load(p, NULL, &c3) == DS_OK);
    CHECK(same_rankings(c1, c3, 1, 1, 8) && ds_calib_require(c3, DS_STAT_MASS) == DS_OK);
    char *t = read_text(p);
    CHECK(t && strstr(t, "\"qkv\": [") && strstr(t, "\"mass\": [") && strstr(t, "\"qkv\": [") < strstr(t, "\"mass\": ["));
    free(t);
    /* a ranking that is not a permutation is refused */
    int16_t bad[8] = {0, 1, 2, 3, 4, 5, 6, 6};
    CHECK(ds_calib_set_ranking(c3, DS_STAT_MASS, bad) == DS_ERR_ARG && strstr(ds_last_error(), "not a permutation"));
    remove(p);
    ds_pool_free(pool);
    ds_calib_mass_free(m1); ds_calib_mass_free(m2);
    ds_calibration_free(c1); ds_calibration_free(c2); ds_calibration_free(c3);
}

/* The public names of ds_sparse_opts.stat are the calibration's own (one table). */
/* Per-layer widths from the curves (ds_calib_alloc): layer 0's qk curve climbs 0.1 per channel
 * and head, layer 1's is flat, so channels move from 1 to 0 until layer 1 is at r/2; the total
 * stays; a layer kept dense takes no part; the cap holds. A curve flat for a step and then
 * steep (a mass set searched for one width) still draws channels: moves may take several steps.
 * The curves survive save and load. */
TEST(calib_alloc_follows_the_curves) {
    ds_calibration *c = calibrate_synthetic(11, NULL);
    CHECK(c != NULL);
    int w[L];
    CHECK(ds_calib_alloc(c, DS_STAT_QK, 4, 64, NULL, w) == DS_ERR_ARG && strstr(ds_last_error(), "recalibrate"));
    float cv[L * G * DS_CALIB_CURVE_N], cm[L * G * DS_CALIB_CURVE_N];
    for (int l = 0; l < L; l++)
        for (int g = 0; g < G; g++)
            for (int p = 0; p < DS_CALIB_CURVE_N; p++) {
                const int i = (l * G + g) * DS_CALIB_CURVE_N + p;
                cv[i] = l == 0 ? fminf(1.0f, 0.1f * (p + 1)) : 0.9f + 0.001f * p;
                cm[i] = l == 0 ? (p <= 4 ? 0.5f : 0.9f) : 0.2f + 0.05f * p;
            }
    CHECK(ds_calib_curve_width(D, 0) == 1 && ds_calib_curve_width(D, DS_CALIB_CURVE_N - 1) == D);
    CHECK(ds_calib_set_curve(c, DS_STAT_QK, cv) == DS_OK && ds_calib_set_curve(c, DS_STAT_MASS, cm) == DS_OK);
    CHECK(ds_calib_alloc(c, DS_STAT_QK, 4, 64, NULL, w) == DS_OK);
    CHECK_MSG(w[0] == 6 && w[1] == 2, "widths %d %d, expected 6 2", w[0], w[1]);
    uint8_t dense[L] = {0, 1};
    CHECK(ds_calib_alloc(c, DS_STAT_QK, 4, 64, dense, w) == DS_OK && w[0] == 4 && w[1] == 4);
    CHECK(ds_calib_alloc(c, DS_STAT_QK, 4, 5, NULL, w) == DS_OK && w[0] == 5 && w[1] == 3);   /* capped at 5 */
    /* mass: index 3 -> 4 gains nothing, 3 -> 5 gains 0.4 per head against a loss of 0.1 */
    CHECK(ds_calib_alloc(c, DS_STAT_MASS, 4, 64, NULL, w) == DS_OK);
    CHECK_MSG(w[0] == 6 && w[1] == 2, "mass widths %d %d, expected 6 2", w[0], w[1]);
    CHECK(ds_calib_alloc(c, DS_STAT_QKV, 4, 64, NULL, w) == DS_ERR_ARG && strstr(ds_last_error(), "'qkv' curves"));
    const char *p = tmp_path("curve");
    ds_calibration *c2 = NULL;
    CHECK(ds_calib_save(c, NULL, p) == DS_OK && ds_calib_load(p, NULL, &c2) == DS_OK);
    CHECK(c2 && ds_calib_curve(c2, DS_STAT_QK, 1, 1) && !memcmp(ds_calib_curve(c2, DS_STAT_QK, 0, 0), cv, sizeof cv));
    CHECK(c2 && !memcmp(ds_calib_curve(c2, DS_STAT_MASS, 0, 0), cm, sizeof cm) && !ds_calib_curve(c2, DS_STAT_Q, 0, 0));
    char *t = read_text(p);
    CHECK(t && strstr(t, "\"curves\": {\n    \"widths\": [1, 2, 3,"));
    free(t);
    remove(p);
    cv[5] = NAN;
    CHECK(ds_calib_set_curve(c, DS_STAT_QK, cv) == DS_ERR_ARG && strstr(ds_last_error(), "not in [0, 1]"));
    ds_calibration_free(c);
    ds_calibration_free(c2);
}

TEST(sparse_stat_names_round_trip) {
    for (int s = 0; s < DS_STAT_COUNT; s++) {
        int back = -1;
        CHECK(strcmp(ds_sparse_stat_name(s), ds_calib_stat_name((ds_stat)s)) == 0);
        CHECK(ds_sparse_stat_parse(ds_sparse_stat_name(s), &back) == 0 && back == s);
    }
    int x = 7;
    CHECK(ds_sparse_stat_parse("qkvv", &x) == -1 && x == 7);
    CHECK(strcmp(ds_sparse_stat_name(DS_STAT_MASS), "mass") == 0 && strcmp(ds_sparse_stat_name(DS_STAT_COUNT), "?") == 0);
}
