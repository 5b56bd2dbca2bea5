/* Sparse attention on the real SmolLM2 model: equivalences that must hold exactly, the
 * accuracy-simulation mode against real decode steps, calibration determinism, option errors. */
#include "test.h"
#include "dsinfer.h"
#include "forward.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *TEXT =
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be on "
    "his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding "
    "families, that he is considered the rightful property of some one or other of their daughters. "
    "My dear Mr. Bennet, said his lady to him one day, have you heard that Netherfield Park is let "
    "at last? Mr. Bennet replied that he had not. But it is, returned she; for Mrs. Long has just "
    "been here, and she told me all about it. Mr. Bennet made no answer. Do you not want to know who "
    "has taken it? cried his wife impatiently. You want to tell me, and I have no objection to "
    "hearing it. This was invitation enough.";

static const char *CALIB_TEXT =
    "The Python tutorial introduces the basic concepts and features of the language and system. "
    "It helps to have a Python interpreter handy for hands-on experience, but all examples are "
    "self-contained, so the tutorial can be read off-line as well. For a description of standard "
    "objects and modules, see the library reference. The reference manual gives a more formal "
    "definition of the language. To write extensions in C or C++, read the extending and embedding "
    "guide. There are also several books covering Python in depth. This tutorial does not attempt "
    "to be comprehensive and cover every single feature, or even every commonly used feature. "
    "Instead, it introduces many of the most noteworthy features and will give you a good idea of "
    "the flavour and style of the language. After reading it, you will be able to read and write "
    "Python modules and programs, and you will be ready to learn more about the various modules.";

static ds_model *load(void) {
    const char *path = test_model_path_named("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!path) return NULL;
    ds_model *m;
    if (ds_model_load(path, &m) != DS_OK) return NULL;
    return m;
}

static int32_t *toks_of(ds_model *m, const char *t, int *n) {
    int32_t *out;
    if (ds_tokenize(m, t, strlen(t), true, false, &out, n) != DS_OK) return NULL;
    return out;
}

/* logits [n][V] of feeding the tokens either all at once or one decode step at a time */
static float *run(ds_model *m, const ds_sparse_opts *sp, const int32_t *tk, int n, int stepwise, ds_status *st) {
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = n + 4;
    so.n_threads = 2;
    so.sparse = *sp;
    ds_session *s;
    *st = ds_session_new(m, &so, &s);
    if (*st) return NULL;
    int V = ds_model_get_info(m)->n_vocab;
    float *lg = malloc(sizeof(float) * (size_t)n * V);
    if (stepwise) {
        for (int i = 0; i < n && !*st; i++) {
            *st = ds_session_eval(s, tk + i, 1, NULL);
            memcpy(lg + (size_t)i * V, ds_session_logits(s), sizeof(float) * V);
        }
    } else {
        *st = ds_session_eval(s, tk, n, lg);
    }
    ds_session_free(s);
    return lg;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t j = 0; j < n; j++) {
        double d = fabs((double)a[j] - b[j]);
        worst = d > worst ? d : worst;
    }
    return worst;
}

static void ensure_calib(ds_model *m) {
    if (ds_model_has_calibration(m)) return;
    ds_model_calibrate(m, CALIB_TEXT, strlen(CALIB_TEXT), "test", NULL, 64, 0, 2, NULL, NULL, NULL);
}

TEST(sparse_k_ge_n_is_bit_identical_to_dense) {
    ds_model *m = load();
    if (!m) SKIP("SmolLM2 not fetched");
    ensure_calib(m);
    CHECK(ds_model_has_calibration(m));
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    int V = ds_model_get_info(m)->n_vocab;
    ds_sparse_opts dense = ds_sparse_default_opts();
    ds_status st;
    float *ref = run(m, &dense, tk, n, 1, &st);
    CHECK(st == DS_OK);
    for (int meth = DS_ATTN_DS; meth < DS_ATTN_COUNT; meth++) {
        ds_sparse_opts sp = ds_sparse_default_opts();
        sp.method = (ds_attn_method)meth;
        sp.tokens = n + 10;
        sp.sparse_prefill = 1;
        float *a = run(m, &sp, tk, n, 1, &st);
        CHECK_MSG(st == DS_OK, "%s: %s", ds_attn_method_name(sp.method), ds_last_error());
        CHECK_MSG(memcmp(a, ref, sizeof(float) * (size_t)n * V) == 0, "%s with k >= n differs from dense",
                  ds_attn_method_name(sp.method));
        free(a);
    }
    free(ref);
    ds_free_tokens(tk);
    ds_model_free(m);
}

TEST(sparse_simulation_equals_decode_steps) {
    ds_model *m = load();
    if (!m) SKIP("SmolLM2 not fetched");
    ensure_calib(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    int V = ds_model_get_info(m)->n_vocab;
    const ds_attn_method ms[] = {DS_ATTN_DS, DS_ATTN_ORACLE, DS_ATTN_STREAMING, DS_ATTN_SPARQ, DS_ATTN_RANDOM};
    ds_sparse_opts dense = ds_sparse_default_opts();
    ds_status dst;
    float *dref = run(m, &dense, tk, n, 0, &dst);
    CHECK(dst == DS_OK);
    for (int i = 0; i < 5; i++) for (int ph = 0; ph < 2; ph++) {
        if (ph && ms[i] != DS_ATTN_DS) continue;   /* per-head: DS only (keeps the suite fast) */
        ds_sparse_opts sp = ds_sparse_default_opts();
        sp.method = ms[i];
        sp.tokens = 16;
        sp.per_head = ph;
        sp.sparse_prefill = 1;
        ds_status st;
        float *sim = run(m, &sp, tk, n, 0, &st);
        CHECK(st == DS_OK);
        float *dec = run(m, &sp, tk, n, 1, &st);
        CHECK(st == DS_OK);
        double worst = max_abs_diff(sim, dec, (size_t)n * V), moved = max_abs_diff(sim, dref, (size_t)n * V);
        free(sim); free(dec);
        /* the sparse path really ran: k = 16 of ~190 tokens must change the logits */
        CHECK_MSG(moved > 1e-2, "%s per_head=%d: identical to dense (max diff %g)", ds_attn_method_name(ms[i]), ph, moved);
        CHECK_MSG(worst <= 1e-4, "%s per_head=%d: simulation vs decode max abs diff %g",
                  ds_attn_method_name(ms[i]), ph, worst);
    }
    free(dref);
    ds_free_tokens(tk);
    ds_model_free(m);
}

/* With every channel as a label at fp16, DS scores are exact q.K (up to summation order), so
 * DS must behave like the oracle selector. */
TEST(sparse_ds_full_channels_fp16_equals_oracle) {
    ds_model *m = load();
    if (!m) SKIP("SmolLM2 not fetched");
    ensure_calib(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    int V = ds_model_get_info(m)->n_vocab;
    ds_sparse_opts sp = ds_sparse_default_opts();
    sp.method = DS_ATTN_DS;
    sp.tokens = 24;
    sp.channels = ds_model_get_info(m)->head_dim;
    sp.label_bits = 16;
    sp.sparse_prefill = 1;
    ds_status st;
    float *a = run(m, &sp, tk, n, 0, &st);
    CHECK(st == DS_OK);
    sp.method = DS_ATTN_ORACLE;
    float *b = run(m, &sp, tk, n, 0, &st);
    CHECK(st == DS_OK);
    double worst = max_abs_diff(a, b, (size_t)n * V);
    free(a); free(b);
    ds_free_tokens(tk);
    ds_model_free(m);
    CHECK_MSG(worst < 1e-2, "DS(r=d, fp16) vs oracle max abs logit diff %g", worst);
}

TEST(sparse_calibration_deterministic) {
    ds_model *m = load();
    if (!m) SKIP("SmolLM2 not fetched");
    char p1[] = "/tmp/dsinfer_cal1_XXXXXX", p2[] = "/tmp/dsinfer_cal2_XXXXXX";
    int f1 = mkstemp(p1), f2 = mkstemp(p2);
    CHECK(f1 >= 0 && f2 >= 0);
    close(f1); close(f2);
    CHECK(ds_model_calibrate(m, CALIB_TEXT, strlen(CALIB_TEXT), "t", "00", 64, 0, 2, p1, NULL, NULL) == DS_OK);
    CHECK(ds_model_calibrate(m, CALIB_TEXT, strlen(CALIB_TEXT), "t", "00", 64, 0, 1, p2, NULL, NULL) == DS_OK);
    FILE *a = fopen(p1, "rb"), *b = fopen(p2, "rb");
    CHECK(a && b);
    int same = 1, ca, cb;
    do { ca = fgetc(a); cb = fgetc(b); if (ca != cb) same = 0; } while (ca != EOF && cb != EOF && same);
    fclose(a); fclose(b);
    CHECK_MSG(same, "two calibrations of the same text (1 vs 2 threads) differ");
    CHECK(ds_model_load_calibration(m, p1) == DS_OK);
    unlink(p1); unlink(p2);
    ds_model_free(m);
}

TEST(sparse_bad_options_are_clear_errors) {
    ds_model *m = load();
    if (!m) SKIP("SmolLM2 not fetched");
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = 64;
    ds_session *s = NULL;
    so.sparse.method = DS_ATTN_DS;   /* no calibration loaded */
    if (!ds_model_has_calibration(m)) {
        CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG);
        CHECK(strstr(ds_last_error(), "calibrat") != NULL);
    }
    so.sparse.method = DS_ATTN_RANDOM;
    so.sparse.label_bits = 3;
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG);
    CHECK(strstr(ds_last_error(), "label-bits") != NULL);
    so.sparse.label_bits = 4;
    so.sparse.channels = 65;
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG);
    CHECK(strstr(ds_last_error(), "channels") != NULL);
    so.sparse.channels = 0;
    so.sparse.n_dense_layers = 1;
    so.sparse.dense_layers[0] = 30;
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG);
    CHECK(strstr(ds_last_error(), "dense-layers") != NULL);
    so.sparse.n_dense_layers = 0;
    so.sparse.tokens_frac = 0;
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG);
    so.sparse.tokens_frac = 1.0f / 16;
    CHECK(ds_session_new(m, &so, &s) == DS_OK);
    ds_session_free(s);
    ds_model_free(m);
}

TEST(util_sha256_vectors) {
    char out[65];
    ds_sha256_hex("abc", 3, out);
    CHECK(strcmp(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    ds_sha256_hex("", 0, out);
    CHECK(strcmp(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    char buf[1000];
    memset(buf, 'a', sizeof buf);
    ds_sha256_hex(buf, 56, out);   /* padding spills into a second block */
    CHECK(strcmp(out, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a") == 0);
    ds_sha256_hex(buf, 1000, out);
    CHECK(strcmp(out, "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3") == 0);
}

/* Forking a dense session into a sparse method and decoding equals running the sparse method
 * from the start with a dense prefill (labels rebuilt from the cache equal those written). */
TEST(sparse_fork_equals_fresh_session) {
    ds_model *m = load();
    if (!m) SKIP("SmolLM2 not fetched");
    ensure_calib(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    int V = ds_model_get_info(m)->n_vocab, np = n - 20;
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = n + 4;
    so.n_threads = 2;
    ds_session *dense, *fork, *fresh;
    CHECK(ds_session_new(m, &so, &dense) == DS_OK);
    CHECK(ds_session_eval(dense, tk, np, NULL) == DS_OK);
    ds_sparse_opts sp = ds_sparse_default_opts();
    sp.method = DS_ATTN_DS;
    sp.tokens = 16;
    CHECK(ds_session_fork(dense, &sp, &fork) == DS_OK);
    so.sparse = sp;
    CHECK(ds_session_new(m, &so, &fresh) == DS_OK);
    CHECK(ds_session_eval(fresh, tk, np, NULL) == DS_OK);   /* dense prefill (sparse_prefill off) */
    for (int i = np; i < n; i++) {
        CHECK(ds_session_eval(fork, tk + i, 1, NULL) == DS_OK);
        CHECK(ds_session_eval(fresh, tk + i, 1, NULL) == DS_OK);
        CHECK_MSG(memcmp(ds_session_logits(fork), ds_session_logits(fresh), sizeof(float) * V) == 0,
                  "fork and fresh session differ at position %d", i);
    }
    ds_session_free(dense); ds_session_free(fork); ds_session_free(fresh);
    ds_free_tokens(tk);
    ds_model_free(m);
}
