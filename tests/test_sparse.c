/* Sparse attention on the real SmolLM2 model: equivalences that must hold exactly, the
 * accuracy-simulation mode against real decode steps, calibration determinism, option errors. */
#include "test.h"
#include "dsinfer.h"
#include "forward.h"
#include "sparse.h"
#include "ds_kernels.h"

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
    ds_model_calibrate(m, CALIB_TEXT, strlen(CALIB_TEXT), "test", NULL, 64, 0, 2, -1, NULL, NULL, NULL);
}

/* The tests' preamble: SmolLM2 (skipped when not fetched), with a calibration for the label methods */
#define LOAD_OR_SKIP(m)                        \
    ds_model *m = load();                      \
    if (!m) SKIP("SmolLM2 not fetched")
#define LOAD_CALIBRATED_OR_SKIP(m) \
    LOAD_OR_SKIP(m);               \
    ensure_calib(m)

TEST(sparse_k_ge_n_is_bit_identical_to_dense) {
    LOAD_CALIBRATED_OR_SKIP(m);
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

/* Logits of the paper's simulation (sparse_prefill: every position of one chunk) and of real
 * decode steps with the same options: their largest difference, and the simulation's from the
 * dense logits dref. */
static ds_status sim_vs_decode(ds_model *m, ds_sparse_opts *sp, const int32_t *tk, int n, const float *dref,
                               double *worst, double *moved) {
    const size_t len = (size_t)n * ds_model_get_info(m)->n_vocab;
    ds_status st, st2;
    sp->sparse_prefill = 1;
    float *sim = run(m, sp, tk, n, 0, &st), *dec = run(m, sp, tk, n, 1, &st2);
    if (!st) st = st2;
    if (!st) {
        *worst = max_abs_diff(sim, dec, len);
        *moved = max_abs_diff(sim, dref, len);
    }
    free(sim); free(dec);
    return st;
}

TEST(sparse_simulation_equals_decode_steps) {
    LOAD_CALIBRATED_OR_SKIP(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    const ds_attn_method ms[] = {DS_ATTN_DS, DS_ATTN_ORACLE, DS_ATTN_STREAMING, DS_ATTN_SPARQ, DS_ATTN_RANDOM,
                                 DS_ATTN_QUEST, DS_ATTN_H2O};
    ds_sparse_opts dense = ds_sparse_default_opts();
    ds_status dst;
    float *dref = run(m, &dense, tk, n, 0, &dst);
    CHECK(dst == DS_OK);
    for (int i = 0; i < 7; i++) for (int ph = 0; ph < 2; ph++) {
        /* per-head: DS, and H2O whose per-head state is separate code (keeps the suite fast) */
        if (ph && ms[i] != DS_ATTN_DS && ms[i] != DS_ATTN_H2O) continue;
        ds_sparse_opts sp = ds_sparse_default_opts();
        sp.method = ms[i];
        sp.tokens = 16;
        sp.per_head = ph;
        double worst, moved;
        CHECK(sim_vs_decode(m, &sp, tk, n, dref, &worst, &moved) == DS_OK);
        /* the sparse path really ran: k = 16 of ~190 tokens must change the logits */
        CHECK_MSG(moved > 1e-2, "%s per_head=%d: identical to dense (max diff %g)", ds_attn_method_name(ms[i]), ph, moved);
        CHECK_MSG(worst <= 1e-4, "%s per_head=%d: simulation vs decode max abs diff %g",
                  ds_attn_method_name(ms[i]), ph, worst);
    }
    {   /* DS above ran with its default window (k/8 = 2); an explicit one on a method without labels */
        ds_sparse_opts sp = ds_sparse_default_opts();
        sp.method = DS_ATTN_SPARQ;
        sp.tokens = 16;
        sp.recent = 6;
        double worst, moved;
        CHECK(sim_vs_decode(m, &sp, tk, n, dref, &worst, &moved) == DS_OK);
        CHECK_MSG(moved > 1e-2 && worst <= 1e-4, "sparq recent 6: simulation vs decode %g (vs dense %g)", worst, moved);
    }
    /* k > 128: decode attends the selection in two slices on two threads (forward.c, split
     * sparse decode) and the simulation in the same two slices (ds_sparse_slice_range), so the
     * sums agree to the bit. (When the simulation attended in one piece, the ~1e-7 difference of
     * the summation order flipped near-ties of later selections: with the window in layer 27 at
     * n = 164, with the group max in layer 20 at n = 171, ~0.6-0.7 in the logits.) Both group
     * rules, with the default window and without one. */
    for (int gmax = 0; gmax < 2; gmax++)
        for (int rec = 0; rec < 2; rec++) {
            ds_sparse_opts sp = ds_sparse_default_opts();
            sp.method = DS_ATTN_DS;
            sp.tokens = n - 40;
            sp.group_max = gmax;
            if (!rec) sp.recent = 0;
            CHECK(sp.tokens > 128);
            double worst, moved;
            CHECK(sim_vs_decode(m, &sp, tk, n, dref, &worst, &moved) == DS_OK);
            CHECK_MSG(moved > 1e-3, "k = %d: identical to dense (max diff %g)", sp.tokens, moved);
            CHECK_MSG(worst <= 1e-4, "k = %d, group %s, recent %s: simulation vs split decode max abs diff %g",
                      sp.tokens, gmax ? "max" : "sum", rec ? "default" : "0", worst);
        }
    free(dref);
    ds_free_tokens(tk);
    ds_model_free(m);
}

/* With every channel as a label at fp16, DS scores are exact q.K (up to summation order), so
 * DS must behave like the oracle selector. Label normalisation ((k - mean) / std per channel,
 * scored with q * std) shifts every score by the same sum_c q_c mean_c, so it must select the
 * oracle's top-k up to rounding; and it is refused where there are no moments to normalise with. */
/* The options and logits of the reference both full-width tests compare with: the exact top-k
 * of 24 tokens at every position, after a recent window of `recent` tokens (0: none, the pure
 * top-k) and the group rule gmax (1: DS's default, the largest head; 0: the sum, the oracle's
 * default); then sp is set to DS with fp16 raw labels (the exact keys), the same window and rule,
 * for the caller to give its widths. */
static float *oracle_then_fp16_ds(ds_model *m, const int32_t *tk, int n, int recent, int gmax, ds_sparse_opts *sp,
                                  ds_status *st) {
    *sp = ds_sparse_default_opts();
    sp->group_max = gmax;
    sp->method = DS_ATTN_ORACLE;
    sp->tokens = 24;
    sp->recent = recent;
    sp->sparse_prefill = 1;
    float *b = run(m, sp, tk, n, 0, st);
    sp->method = DS_ATTN_DS;
    sp->label_bits = 16;
    sp->label_norm = 0;   /* raw labels: the exact fp16 keys */
    return b;
}

TEST(sparse_ds_full_channels_fp16_equals_oracle) {
    LOAD_CALIBRATED_OR_SKIP(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    int V = ds_model_get_info(m)->n_vocab;
    ds_sparse_opts sp;
    ds_status st;
    /* both with a recent window of 5, summed: with the group max the oracle's exact scores and
     * DS's fp16-label scores (two summation orders) put a near-tie of layer 21 at n = 83 on either
     * side (2e-7 apart), which moves the logits by ~0.8; the rule itself is checked below */
    float *b = oracle_then_fp16_ds(m, tk, n, 5, 0, &sp, &st);
    CHECK(st == DS_OK);
    sp.channels = ds_model_get_info(m)->head_dim;
    float *a = run(m, &sp, tk, n, 0, &st);
    CHECK(st == DS_OK);
    double worst = max_abs_diff(a, b, (size_t)n * V);
    free(a); free(b);
    CHECK_MSG(worst < 1e-2, "DS(r=d, fp16, recent 5) vs oracle (recent 5) max abs logit diff %g", worst);
    for (int gmax = 0; gmax < 2; gmax++) {   /* no window: DS selects the exact top-k, by either rule */
        b = oracle_then_fp16_ds(m, tk, n, 0, gmax, &sp, &st);
        CHECK(st == DS_OK);
        sp.channels = ds_model_get_info(m)->head_dim;
        a = run(m, &sp, tk, n, 0, &st);
        CHECK(st == DS_OK);
        worst = max_abs_diff(a, b, (size_t)n * V);
        free(a);
        CHECK_MSG(worst < 1e-2, "DS(r=d, fp16, group %s) vs oracle max abs logit diff %g", gmax ? "max" : "sum", worst);
        if (!gmax) free(b);
    }

    sp.label_norm = 1;
    a = run(m, &sp, tk, n, 0, &st);
    CHECK_MSG(st == DS_OK, "label_norm session: %s", ds_last_error());
    /* Not bit for bit: the normalised labels are rounded to fp16 a second time, after the
     * shift, so near-ties at the k-th place break differently from the oracle's (which scores
     * the fp16 keys themselves), and each swap moves that position's logits. What must hold is
     * the quality: the same next-token choice almost everywhere and the same perplexity. */
    int agree = 0;
    double nll_a = 0, nll_b = 0;
    for (int i = 0; i < n; i++) {
        const float *x = a + (size_t)i * V, *y = b + (size_t)i * V;
        int ax = 0, ay = 0;
        for (int j = 1; j < V; j++) { if (x[j] > x[ax]) ax = j; if (y[j] > y[ay]) ay = j; }
        agree += ax == ay;
        if (i + 1 < n) {   /* -log softmax of the next token */
            double zx = 0, zy = 0;
            for (int j = 0; j < V; j++) { zx += exp((double)x[j] - x[ax]); zy += exp((double)y[j] - y[ay]); }
            nll_a += log(zx) + x[ax] - x[tk[i + 1]];
            nll_b += log(zy) + y[ay] - y[tk[i + 1]];
        }
    }
    const double ratio = exp((nll_a - nll_b) / (n - 1));
    free(a); free(b);
    CHECK_MSG(agree >= n * 9 / 10 && fabs(ratio - 1) < 0.02, "DS(r=d, fp16, normalised) vs oracle: top-1 agrees at %d "
              "of %d positions, perplexity ratio %.4f", agree, n, ratio);
    sp.label_bits = 4;                 /* quantised normalised labels run too */
    sp.channels = 16;
    free(run(m, &sp, tk, n, 0, &st));
    CHECK(st == DS_OK);
    sp.method = DS_ATTN_RANDOM;        /* random channels have no moments to normalise with */
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = 64;
    so.sparse = sp;
    ds_session *s = NULL;
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG && strstr(ds_last_error(), "label-norm"));
    ds_free_tokens(tk);
    ds_model_free(m);
}

/* The default label_norm (-1) normalises exactly when the calibration carries key moments: equal
 * to label_norm = 1 with the shipped calibration, and to raw labels (no error) with a
 * calibration whose moments were removed (older sidecars, paper imports). */
TEST(sparse_label_norm_default_follows_calibration) {
    LOAD_OR_SKIP(m);
    char path[] = "/tmp/dsinfer_nomom_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK(ds_model_calibrate(m, CALIB_TEXT, strlen(CALIB_TEXT), "test", NULL, 64, 0, 2, -1, path, NULL, NULL) == DS_OK);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    const size_t NV = (size_t)n * ds_model_get_info(m)->n_vocab;
    ds_sparse_opts sp = ds_sparse_default_opts();
    CHECK(sp.label_norm == -1 && sp.stat == 2);
    sp.method = DS_ATTN_DS;
    sp.tokens = 24;
    sp.sparse_prefill = 1;
    ds_status st;
    float *def = run(m, &sp, tk, n, 0, &st), *on = NULL, *off = NULL;
    CHECK(st == DS_OK);
    sp.label_norm = 1;
    on = run(m, &sp, tk, n, 0, &st);
    sp.label_norm = 0;
    off = run(m, &sp, tk, n, 0, &st);
    CHECK(def && on && off);
    CHECK_MSG(max_abs_diff(def, on, NV) == 0, "default vs normalised: %g", max_abs_diff(def, on, NV));
    CHECK_MSG(max_abs_diff(on, off, NV) > 0, "normalised and raw 4-bit labels gave identical logits");
    free(def);
    /* the same calibration without its "k_moments" object */
    size_t len = 0;
    char *buf = test_read_file(path, &len);
    CHECK(buf != NULL && len > 0);
    char *km = strstr(buf, ",\n  \"k_moments\"");
    CHECK(km != NULL);
    strcpy(km, "\n}\n");
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    fputs(buf, f);
    fclose(f);
    free(buf);
    CHECK_MSG(ds_model_load_calibration(m, path) == DS_OK, "%s", ds_last_error());
    sp.label_norm = -1;
    def = run(m, &sp, tk, n, 0, &st);
    CHECK_MSG(st == DS_OK && def && max_abs_diff(def, off, NV) == 0, "default without moments must be raw labels");
    sp.label_norm = 1;   /* asked for explicitly: a clear error */
    free(run(m, &sp, tk, n, 0, &st));
    CHECK(st == DS_ERR_ARG && strstr(ds_last_error(), "key moments"));
    unlink(path);
    free(def); free(on); free(off);
    ds_free_tokens(tk);
    ds_model_free(m);
}

TEST(sparse_calibration_deterministic) {
    LOAD_OR_SKIP(m);
    char p1[] = "/tmp/dsinfer_cal1_XXXXXX", p2[] = "/tmp/dsinfer_cal2_XXXXXX";
    int f1 = mkstemp(p1), f2 = mkstemp(p2);
    CHECK(f1 >= 0 && f2 >= 0);
    close(f1); close(f2);
    CHECK(ds_model_calibrate(m, CALIB_TEXT, strlen(CALIB_TEXT), "t", "00", 64, 0, 2, -1, p1, NULL, NULL) == DS_OK);
    CHECK(ds_model_calibrate(m, CALIB_TEXT, strlen(CALIB_TEXT), "t", "00", 64, 0, 1, -1, p2, NULL, NULL) == DS_OK);
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
    LOAD_OR_SKIP(m);
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
    so.sparse.recent = -2;
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG && strstr(ds_last_error(), "--ds-recent"));
    so.sparse.tokens = 16;   /* a window that leaves no room for the top-k */
    so.sparse.recent = 16;
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG && strstr(ds_last_error(), "below k"));
    so.sparse.recent = 15;
    CHECK(ds_session_new(m, &so, &s) == DS_OK);
    ds_session_free(s);
    so.sparse.method = DS_ATTN_QUEST;   /* a method without a top-k ignores the window */
    so.sparse.recent = 16;
    CHECK(ds_session_new(m, &so, &s) == DS_OK);
    CHECK(ds_session_recent(s, 100) == 0);
    ds_session_free(s);
    ds_model_free(m);
}

/* The recent window: after a decode step, the selection of every KV group of the last layer
 * (the session's q buffer holds that layer's query) holds the current token and the window
 * before it, each once, and k positions in all; by default the window is min(16, k/8). */
TEST(sparse_recent_window_is_selected) {
    LOAD_CALIBRATED_OR_SKIP(m);
    const ds_model_info *c = ds_model_get_info(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    const int recents[] = {DS_RECENT_AUTO, 9, 0}, want_w[] = {40 / 8, 9, 0};
    for (int ri = 0; ri < 3; ri++) {
        ds_session_opts so = ds_session_default_opts();
        so.n_ctx = n + 4;
        so.n_threads = 1;
        so.sparse.method = DS_ATTN_DS;
        so.sparse.tokens = 40;
        so.sparse.recent = recents[ri];
        ds_session *s = NULL;
        CHECK(ds_session_new(m, &so, &s) == DS_OK);
        CHECK(ds_session_eval(s, tk, n - 1, NULL) == DS_OK && ds_session_eval(s, tk + n - 1, 1, NULL) == DS_OK);
        CHECK_MSG(ds_session_recent(s, n) == want_w[ri], "window %d, expected %d", ds_session_recent(s, n), want_w[ri]);
        int32_t *idx = malloc(sizeof(int32_t) * (size_t)n);
        char *seen = malloc((size_t)n);
        for (int kvh = 0; kvh < c->n_head_kv; kvh++) {
            const int sel = ds_sparse_select(s, c->n_layer - 1, 0, kvh, n, 0, idx);
            int ok = sel == 40, in_window = 0;
            memset(seen, 0, (size_t)n);
            for (int i = 0; i < sel && ok; i++) {
                ok = idx[i] >= 0 && idx[i] < n && !seen[idx[i]];
                if (ok) seen[idx[i]] = 1;
            }
            for (int t = n - 1 - want_w[ri]; t < n; t++) in_window += ok && seen[t];
            CHECK_MSG(ok && in_window == want_w[ri] + 1, "recent %d, kv head %d: %d selected, %d of the window and "
                      "current token", recents[ri], kvh, sel, in_window);
        }
        free(idx); free(seen);
        ds_session_free(s);
    }
    ds_free_tokens(tk);
    ds_model_free(m);
}

/* --ds-group-score max: after a decode step, each KV group of the last layer (its queries are
 * still in s->q) selects, besides the current token, the k - 1 positions whose largest per-head
 * exact score less that head's own maximum is highest, so every query head's best position is
 * in; DS with every channel as an fp16 label selects the same set as the oracle; and the sum
 * (the default) and the max pick different sets somewhere, so the option is not a no-op. */
TEST(sparse_group_max_selects_each_heads_best) {
    LOAD_CALIBRATED_OR_SKIP(m);
    const ds_model_info *c = ds_model_get_info(m);
    const int hd = c->head_dim, G = c->n_head / c->n_head_kv, k = 40;
    CHECK(G > 1);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)n), *ref = malloc(sizeof(int32_t) * (size_t)c->n_head_kv * k);
    float *sc = malloc(sizeof(float) * (size_t)n), *one = malloc(sizeof(float) * (size_t)n);
    char *in = malloc((size_t)n);
    int differs = 0;
    for (int variant = 0; variant < 3; variant++) {   /* oracle max, DS(r=d, fp16) max, oracle sum */
        ds_session_opts so = ds_session_default_opts();
        so.n_ctx = n + 4;
        so.n_threads = 1;
        so.sparse.method = variant == 1 ? DS_ATTN_DS : DS_ATTN_ORACLE;
        so.sparse.tokens = k;
        so.sparse.recent = 0;
        so.sparse.group_max = variant < 2;
        if (variant == 1) { so.sparse.channels = hd; so.sparse.label_bits = 16; so.sparse.label_norm = 0; }
        ds_session *s = NULL;
        CHECK(ds_session_new(m, &so, &s) == DS_OK);
        CHECK(ds_session_eval(s, tk, n - 1, NULL) == DS_OK && ds_session_eval(s, tk + n - 1, 1, NULL) == DS_OK);
        const int L = c->n_layer - 1;
        for (int kvh = 0; kvh < c->n_head_kv; kvh++) {
            /* the reference: exact scores of every head of the group over [0, n-1) */
            const uint16_t *K = s->k_cache + ((size_t)L * c->n_head_kv + kvh) * s->n_ctx * hd;
            for (int t = 0; t < n - 1; t++) sc[t] = -INFINITY;
            int best[16];
            for (int g = 0; g < G; g++) {
                const float *q = s->q + ((size_t)kvh * G + g) * hd;
                float mx = -INFINITY;
                for (int t = 0; t < n - 1; t++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++) d += (double)q[i] * ds_fp16_to_fp32(K[(size_t)t * hd + i]);
                    one[t] = (float)d;
                    if (one[t] > mx) { mx = one[t]; best[g] = t; }
                }
                for (int t = 0; t < n - 1; t++) sc[t] = fmaxf(sc[t], one[t] - mx);
            }
            const int sel = ds_sparse_select(s, L, 0, kvh, n, 0, idx);
            CHECK_MSG(sel == k, "variant %d kv head %d: %d selected", variant, kvh, sel);
            memset(in, 0, (size_t)n);
            for (int i = 0; i < sel; i++) in[idx[i]] = 1;
            CHECK(in[n - 1]);
            if (variant == 2) {   /* the sum: does its set differ from the max's (kept in ref)? */
                int same = 0;
                for (int i = 0; i < k; i++) same += in[ref[(size_t)kvh * k + i]];
                differs += same < k;
                continue;
            }
            /* every selected position scores at least as high as every one left out (up to the
             * rounding between the kernels' float sums and the double reference) */
            float lo = INFINITY, hi = -INFINITY;
            for (int t = 0; t < n - 1; t++) {
                if (in[t]) lo = fminf(lo, sc[t]); else hi = fmaxf(hi, sc[t]);
            }
            CHECK_MSG(lo >= hi - 1e-3f, "variant %d kv head %d: a left-out position scores %g above the lowest "
                      "selected %g", variant, kvh, hi, lo);
            for (int g = 0; g < G; g++)
                CHECK_MSG(in[best[g]], "variant %d kv head %d: head %d's best position %d not selected", variant, kvh,
                          g, best[g]);
            if (variant == 0) memcpy(ref + (size_t)kvh * k, idx, sizeof(int32_t) * k);
        }
        ds_session_free(s);
    }
    CHECK_MSG(differs > 0, "the summed and the max group scores select the same sets in every KV group");
    free(idx); free(ref); free(sc); free(one); free(in);
    ds_free_tokens(tk);
    ds_model_free(m);
}

/* DSINFER_SEL_SHUFFLE: the same selection in another order (so only the attention's summation
 * order changes), and a bad seed is refused with a clear error. */
TEST(sparse_selection_shuffle_keeps_the_set) {
    LOAD_CALIBRATED_OR_SKIP(m);
    const ds_model_info *c = ds_model_get_info(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    int32_t *a = malloc(sizeof(int32_t) * (size_t)n * c->n_head_kv), *b = malloc(sizeof(int32_t) * (size_t)n);
    int moved = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass) setenv("DSINFER_SEL_SHUFFLE", "7", 1);
        ds_session_opts so = ds_session_default_opts();
        so.n_ctx = n + 4;
        so.n_threads = 1;
        so.sparse.method = DS_ATTN_DS;
        so.sparse.tokens = 40;
        ds_session *s = NULL;
        CHECK(ds_session_new(m, &so, &s) == DS_OK);
        CHECK(ds_session_eval(s, tk, n - 1, NULL) == DS_OK && ds_session_eval(s, tk + n - 1, 1, NULL) == DS_OK);
        for (int kvh = 0; kvh < c->n_head_kv; kvh++) {
            int32_t *out = pass ? b : a + (size_t)kvh * n;
            const int sel = ds_sparse_select(s, c->n_layer - 1, 0, kvh, n, 0, out);
            CHECK(sel == 40);
            if (!pass) continue;
            int same_set = 1, same_order = 1;
            for (int i = 0; i < sel; i++) {
                int found = 0;
                for (int j = 0; j < sel; j++) found |= b[i] == a[(size_t)kvh * n + j];
                same_set &= found;
                same_order &= b[i] == a[(size_t)kvh * n + i];
            }
            CHECK_MSG(same_set, "kv head %d: the shuffled selection is another set", kvh);
            moved += !same_order;
        }
        ds_session_free(s);
    }
    CHECK_MSG(moved > 0, "DSINFER_SEL_SHUFFLE left every selection in its order");
    setenv("DSINFER_SEL_SHUFFLE", "x", 1);
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = n + 4;
    so.sparse.method = DS_ATTN_DS;
    ds_session *s = NULL;
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG && strstr(ds_last_error(), "DSINFER_SEL_SHUFFLE"));
    unsetenv("DSINFER_SEL_SHUFFLE");
    free(a); free(b);
    ds_free_tokens(tk);
    ds_model_free(m);
}

/* The decode prefetch (ds_sparse_opts.prefetch) is a hint only: token by
 * token, with either group score, the logits equal those with it off bit for bit; and it ran:
 * every sparse group has a previous selection on record, which an "off" session does not keep. */
TEST(sparse_decode_prefetch_changes_nothing) {
    LOAD_CALIBRATED_OR_SKIP(m);
    const ds_model_info *c = ds_model_get_info(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    const int V = c->n_vocab;
    for (int gmax = 0; gmax < 2; gmax++) {
        float *lg[2] = { NULL, NULL };
        for (int off = 0; off < 2; off++) {
            ds_session_opts so = ds_session_default_opts();
            so.n_ctx = n + 4;
            so.n_threads = 2;
            so.sparse.method = DS_ATTN_DS;
            so.sparse.tokens = 24;
            so.sparse.group_max = gmax;
            so.sparse.prefetch = !off;
            ds_session *s = NULL;
            CHECK(ds_session_new(m, &so, &s) == DS_OK);
            if (!s) continue;
            lg[off] = malloc(sizeof(float) * (size_t)n * V);
            for (int i = 0; i < n; i++) {
                CHECK(ds_session_eval(s, tk + i, 1, NULL) == DS_OK);
                memcpy(lg[off] + (size_t)i * V, ds_session_logits(s), sizeof(float) * V);
            }
            if (off) {
                CHECK(s->sp_prev == NULL);
            } else {
                int kept = 1;
                for (int h = 0; h < c->n_layer * c->n_head_kv; h++) kept &= s->sp_prev_n[h] == 24;
                CHECK_MSG(s->sp_prev && kept, "group score %d: not every group kept its last selection", gmax);
            }
            ds_session_free(s);
        }
        CHECK_MSG(lg[0] && lg[1] && !memcmp(lg[0], lg[1], sizeof(float) * (size_t)n * V),
                  "group score %d: decode logits differ with the prefetch on and off", gmax);
        free(lg[0]); free(lg[1]);
    }
    ds_free_tokens(tk);
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
    LOAD_CALIBRATED_OR_SKIP(m);
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

/* ---------------------------------------------------------------- Quest and H2O */

static float rnd_unit(uint64_t *x) {   /* uniform in [-1, 1) */
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*x >> 40) / (double)(1ull << 23)) - 1.0f;
}

/* ds_quest_select against a brute-force reference: bounds from the rows, per-head upper bounds
 * in double summed over the group, a full sort (ties to the lower page), the best ceil((k-1)/16)
 * pages and the current page. */
TEST(sparse_quest_selection_matches_brute_force) {
    const int hd = 64;
    const int cases[][3] = {{100, 40, 3}, {100, 40, 1}, {257, 64, 3}, {33, 17, 2}, {200, 2, 3}, {48, 40, 1},
                            {300, 100, 4}, {17, 5, 3}, {160, 33, 3}};
    uint64_t x = 42;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int n = cases[ci][0], k = cases[ci][1], G = cases[ci][2];
        const int npg = (n + 15) / 16, cp = (n - 1) / 16, want = (k - 1 + 15) / 16;
        uint16_t *K = malloc(sizeof(uint16_t) * (size_t)n * hd), *meta = malloc(sizeof(uint16_t) * (size_t)npg * 2 * hd);
        float *q = malloc(sizeof(float) * (size_t)G * hd), *scores = malloc(sizeof(float) * (size_t)(cp + 1));
        int32_t *pages = malloc(sizeof(int32_t) * (size_t)(cp + 1)), *idx = malloc(sizeof(int32_t) * (size_t)n);
        int32_t *ref = malloc(sizeof(int32_t) * (size_t)n), *order = malloc(sizeof(int32_t) * (size_t)(cp + 1));
        double *ps = malloc(sizeof(double) * (size_t)(cp + 1));
        void *scratch = malloc(ds_topk_scratch_bytes(cp + 1));
        for (int i = 0; i < n * hd; i++) K[i] = ds_fp32_to_fp16(rnd_unit(&x) * (1 + (i % hd) % 7));
        for (int i = 0; i < G * hd; i++) q[i] = rnd_unit(&x);
        for (int p = 0; p < npg; p++)
            for (int c = 0; c < hd; c++) {
                float mn = INFINITY, mx = -INFINITY;
                for (int t = p * 16; t < n && t < (p + 1) * 16; t++) {
                    float v = ds_fp16_to_fp32(K[(size_t)t * hd + c]);
                    mn = v < mn ? v : mn; mx = v > mx ? v : mx;
                }
                meta[((size_t)p * 2) * hd + c] = ds_fp32_to_fp16(mn);
                meta[((size_t)p * 2 + 1) * hd + c] = ds_fp32_to_fp16(mx);
            }
        int m = ds_quest_select(q, G, hd, meta, n, k, scores, pages, idx, scratch);
        int nr = 0;
        if (want >= cp) {
            for (int t = 0; t < n; t++) ref[nr++] = t;
        } else {
            for (int p = 0; p < cp; p++) {
                double sc = 0;
                for (int g = 0; g < G; g++)
                    for (int c = 0; c < hd; c++) {
                        double qc = q[g * hd + c], lo = qc * ds_fp16_to_fp32(meta[((size_t)p * 2) * hd + c]),
                               hi = qc * ds_fp16_to_fp32(meta[((size_t)p * 2 + 1) * hd + c]);
                        sc += lo > hi ? lo : hi;
                    }
                ps[p] = sc;
                order[p] = p;
            }
            for (int i = 1; i < cp; i++)   /* by score descending, then page ascending */
                for (int j = i; j > 0 && (ps[order[j]] > ps[order[j - 1]] ||
                                          (ps[order[j]] == ps[order[j - 1]] && order[j] < order[j - 1])); j--) {
                    int32_t t = order[j]; order[j] = order[j - 1]; order[j - 1] = t;
                }
            for (int i = 1; i < want; i++)   /* the chosen pages in page order */
                for (int j = i; j > 0 && order[j] < order[j - 1]; j--) { int32_t t = order[j]; order[j] = order[j - 1]; order[j - 1] = t; }
            for (int i = 0; i < want; i++)
                for (int t = order[i] * 16; t < order[i] * 16 + 16; t++) ref[nr++] = t;
            for (int t = cp * 16; t < n; t++) ref[nr++] = t;
        }
        int same = m == nr && memcmp(idx, ref, sizeof(int32_t) * (size_t)nr) == 0;
        free(K); free(meta); free(q); free(scores); free(pages); free(idx); free(ref); free(order); free(ps); free(scratch);
        CHECK_MSG(same, "n=%d k=%d G=%d: %d selected vs %d in the reference (or a different set)", n, k, G, m, nr);
    }
}

/* The session's page bounds equal the min/max of the cached keys, also after a truncation into
 * the middle of a page and a fork. */
TEST(sparse_quest_bounds_follow_the_cache) {
    LOAD_OR_SKIP(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = 128;
    so.n_threads = 2;
    so.sparse.method = DS_ATTN_QUEST;
    so.sparse.tokens = 16;
    ds_session *s, *f;
    CHECK(ds_session_new(m, &so, &s) == DS_OK);
    CHECK(ds_session_eval(s, tk, 70, NULL) == DS_OK);
    for (int i = 70; i < 80; i++) CHECK(ds_session_eval(s, tk + i, 1, NULL) == DS_OK);
    CHECK(ds_session_truncate(s, 37) == DS_OK);
    CHECK(ds_session_eval(s, tk + 100, 5, NULL) == DS_OK);    /* other tokens into page 2 */
    CHECK(ds_session_eval(s, tk + 105, 1, NULL) == DS_OK);
    CHECK(ds_session_fork(s, &so.sparse, &f) == DS_OK);
    const ds_model_info *c = ds_model_get_info(m);
    const int hd = c->head_dim, KVH = c->n_head_kv, pos = ds_session_pos(s);
    CHECK(pos == 43);
    for (int which = 0; which < 2; which++) {
        ds_session *x = which ? f : s;
        for (int l = 0; l < c->n_layer; l++)
            for (int h = 0; h < KVH; h++)
                for (int p = 0; p * 16 < pos; p++)
                    for (int ch = 0; ch < hd; ch++) {
                        float mn = INFINITY, mx = -INFINITY;
                        for (int t = p * 16; t < pos && t < p * 16 + 16; t++) {
                            float v = ds_fp16_to_fp32(x->k_cache[(((size_t)l * KVH + h) * x->n_ctx + t) * hd + ch]);
                            mn = v < mn ? v : mn; mx = v > mx ? v : mx;
                        }
                        const uint16_t *meta = x->sp_quest + ((((size_t)l * KVH + h) * x->sp_quest_pages + p) * 2) * hd;
                        CHECK_MSG(ds_fp16_to_fp32(meta[ch]) == mn && ds_fp16_to_fp32(meta[hd + ch]) == mx,
                                  "%s: layer %d head %d page %d channel %d: bounds [%g, %g], rows [%g, %g]",
                                  which ? "fork" : "session", l, h, p, ch, ds_fp16_to_fp32(meta[ch]),
                                  ds_fp16_to_fp32(meta[hd + ch]), mn, mx);
                    }
    }
    ds_session_free(s); ds_session_free(f);
    ds_free_tokens(tk);
    ds_model_free(m);
}

/* Step by step: at most k kept, exactly k once the context exceeds k, the ceil(k/5) most recent
 * always kept, and an evicted position never kept again. */
TEST(sparse_h2o_invariants) {
    LOAD_OR_SKIP(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    const ds_model_info *c = ds_model_get_info(m);
    const int k = 16, R = ds_h2o_recent(k);
    CHECK(R == 4);
    for (int ph = 0; ph < 2; ph++) {
        ds_session_opts so = ds_session_default_opts();
        so.n_ctx = n + 4;
        so.n_threads = 2;
        so.sparse.method = DS_ATTN_H2O;
        so.sparse.tokens = k;
        so.sparse.per_head = ph;
        ds_session *s;
        CHECK(ds_session_new(m, &so, &s) == DS_OK);
        const int U = s->sp_h2o_units, steps = ph ? 60 : n;   /* per-head: a shorter run */
        CHECK(U == (ph ? c->n_head : c->n_head_kv));
        uint8_t *gone = calloc((size_t)c->n_layer * U * s->n_ctx, 1);
        for (int i = 0; i < steps; i++) {
            CHECK(ds_session_eval(s, tk + i, 1, NULL) == DS_OK);
            const int pos = i + 1;
            for (int l = 0; l < c->n_layer; l++)
                for (int u = 0; u < U; u++) {
                    size_t off = ((size_t)l * U + u) * s->n_ctx;
                    const uint8_t *kept = s->sp_h2o_kept + off;
                    int cnt = 0;
                    for (int t = 0; t < pos; t++) {
                        cnt += kept[t];
                        CHECK_MSG(!(gone[off + t] && kept[t]), "per_head=%d step %d layer %d unit %d: position %d came back",
                                  ph, pos, l, u, t);
                        if (!kept[t]) gone[off + t] = 1;
                    }
                    CHECK_MSG(cnt == (pos < k ? pos : k), "per_head=%d step %d layer %d unit %d: %d kept", ph, pos, l, u, cnt);
                    for (int t = pos - R < 0 ? 0 : pos - R; t < pos; t++)
                        CHECK_MSG(kept[t], "per_head=%d step %d layer %d unit %d: recent position %d evicted", ph, pos, l, u, t);
                }
        }
        free(gone);
        ds_session_free(s);
    }
    ds_free_tokens(tk);
    ds_model_free(m);
}

/* After a dense prefill H2O's sums are the column sums of the dense causal attention
 * probabilities (per KV head: over its query heads; per-head: per head). Checked on the last
 * layer, whose queries are still in s->q, against a double-precision softmax; and a dense
 * session with track_h2o builds bit-identical sums in every layer (what forks start from). */
TEST(sparse_h2o_prefill_sums_are_dense_column_sums) {
    LOAD_OR_SKIP(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    const ds_model_info *c = ds_model_get_info(m);
    const int hd = c->head_dim, H = c->n_head, KVH = c->n_head_kv, G = H / KVH, L = c->n_layer;
    for (int ph = 0; ph < 2; ph++) {
        ds_session_opts so = ds_session_default_opts();
        so.n_ctx = n + 4;
        so.n_threads = 2;
        so.sparse.method = DS_ATTN_H2O;
        so.sparse.tokens = 16;
        so.sparse.per_head = ph;
        ds_session *s, *d;
        CHECK(ds_session_new(m, &so, &s) == DS_OK);
        CHECK(ds_session_eval(s, tk, n, NULL) == DS_OK);   /* one chunk: s->q holds every row */
        so.sparse.method = DS_ATTN_DENSE;
        so.sparse.track_h2o = 1;
        CHECK(ds_session_new(m, &so, &d) == DS_OK);
        CHECK(ds_session_eval(d, tk, n, NULL) == DS_OK);
        const int U = s->sp_h2o_units;
        CHECK(d->sp_h2o_units == U);
        for (size_t r = 0; r < (size_t)L * U; r++)
            CHECK_MSG(memcmp(s->sp_h2o_acc + r * s->n_ctx, d->sp_h2o_acc + r * d->n_ctx, sizeof(float) * (size_t)n) == 0,
                      "per_head=%d: h2o prefill and dense track_h2o sums differ (layer %zu)", ph, r / (size_t)U);
        double *ref = calloc((size_t)U * n, sizeof(double)), *sc = malloc(sizeof(double) * (size_t)n);
        const int l = L - 1;
        for (int i = 0; i < n; i++)
            for (int h = 0; h < H; h++) {
                const float *q = s->q + ((size_t)i * H + h) * hd;
                const uint16_t *K = s->k_cache + ((size_t)l * KVH + h / G) * s->n_ctx * hd;
                double mx = -INFINITY, sum = 0;
                for (int t = 0; t <= i; t++) {
                    double v = 0;
                    for (int ch = 0; ch < hd; ch++) v += (double)q[ch] * ds_fp16_to_fp32(K[(size_t)t * hd + ch]);
                    sc[t] = v;
                    mx = v > mx ? v : mx;
                }
                for (int t = 0; t <= i; t++) sum += exp(sc[t] - mx);
                int u = ph ? h : h / G;
                for (int t = 0; t <= i; t++) ref[(size_t)u * n + t] += exp(sc[t] - mx) / sum;
            }
        double worst = 0;
        for (int u = 0; u < U; u++)
            for (int t = 0; t < n; t++) {
                double a = s->sp_h2o_acc[((size_t)l * U + u) * s->n_ctx + t], b = ref[(size_t)u * n + t];
                double rel = fabs(a - b) / fabs(b);
                worst = rel > worst ? rel : worst;
            }
        free(ref); free(sc);
        ds_session_free(s); ds_session_free(d);
        fprintf(stderr, "    per_head=%d: H2O sums vs double-precision column sums, worst relative error %.2g\n", ph, worst);
        CHECK_MSG(worst <= 1e-4, "per_head=%d: H2O sums vs dense column sums, worst relative error %g", ph, worst);
    }
    ds_free_tokens(tk);
    ds_model_free(m);
}

/* Forks into Quest and H2O decode exactly like a fresh session of that method with a dense
 * prefill: Quest rebuilds its bounds from the keys, H2O copies the sums of a track_h2o parent.
 * A fork of an h2o session mid-decode continues exactly like the session itself; a parent that
 * kept no sums is refused. */
TEST(sparse_fork_quest_h2o_equals_fresh_session) {
    LOAD_OR_SKIP(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    const int V = ds_model_get_info(m)->n_vocab, np = n - 20;
    const struct { ds_attn_method meth; int per_head; } cfg[] = {{DS_ATTN_QUEST, 0}, {DS_ATTN_H2O, 0}, {DS_ATTN_H2O, 1}};
    for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
        ds_session_opts so = ds_session_default_opts();
        so.n_ctx = n + 4;
        so.n_threads = 2;
        so.sparse.per_head = cfg[ci].per_head;
        ds_session *dense, *plain, *fork, *fresh, *fork2 = NULL;
        CHECK(ds_session_new(m, &so, &plain) == DS_OK);   /* no H2O sums */
        so.sparse.track_h2o = cfg[ci].meth == DS_ATTN_H2O;
        CHECK(ds_session_new(m, &so, &dense) == DS_OK);
        CHECK(ds_session_eval(dense, tk, np, NULL) == DS_OK);
        CHECK(ds_session_eval(plain, tk, np, NULL) == DS_OK);
        ds_sparse_opts sp = ds_sparse_default_opts();
        sp.method = cfg[ci].meth;
        sp.tokens = 16;
        sp.per_head = cfg[ci].per_head;
        if (sp.method == DS_ATTN_H2O) {
            ds_session *bad = NULL;
            CHECK(ds_session_fork(plain, &sp, &bad) == DS_ERR_ARG && !bad);
            CHECK(strstr(ds_last_error(), "track_h2o") != NULL);
            ds_sparse_opts other = sp;
            other.per_head = !sp.per_head;
            CHECK(ds_session_fork(dense, &other, &bad) == DS_ERR_ARG && !bad);
        }
        ds_session_free(plain);
        CHECK(ds_session_fork(dense, &sp, &fork) == DS_OK);
        so.sparse = sp;
        CHECK(ds_session_new(m, &so, &fresh) == DS_OK);
        CHECK(ds_session_eval(fresh, tk, np, NULL) == DS_OK);   /* dense prefill (sparse_prefill off) */
        for (int i = np; i < n; i++) {
            if (i == np + 8) CHECK(ds_session_fork(fresh, &sp, &fork2) == DS_OK);
            CHECK(ds_session_eval(fork, tk + i, 1, NULL) == DS_OK);
            CHECK(ds_session_eval(fresh, tk + i, 1, NULL) == DS_OK);
            CHECK_MSG(memcmp(ds_session_logits(fork), ds_session_logits(fresh), sizeof(float) * V) == 0,
                      "%s per_head=%d: fork and fresh session differ at position %d", ds_attn_method_name(sp.method),
                      sp.per_head, i);
            if (fork2) {
                CHECK(ds_session_eval(fork2, tk + i, 1, NULL) == DS_OK);
                CHECK_MSG(memcmp(ds_session_logits(fork2), ds_session_logits(fresh), sizeof(float) * V) == 0,
                          "%s per_head=%d: fork of the sparse session differs at position %d",
                          ds_attn_method_name(sp.method), sp.per_head, i);
            }
        }
        ds_session_free(dense); ds_session_free(fork); ds_session_free(fresh); ds_session_free(fork2);
    }
    ds_free_tokens(tk);
    ds_model_free(m);
}

/* DSINFER_SEL_DIAG (sparse_diag.c): one line per selection of a decode step. For the oracle the
 * line compares the selection with itself (recall 1, equal masses); for StreamingLLM the masses
 * are shares of a softmax (in [0, 1]) and the oracle's is at least as large on average. */
TEST(sparse_selection_diagnostics) {
    LOAD_OR_SKIP(m);
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    const ds_model_info *info = ds_model_get_info(m);
    char path[64];
    snprintf(path, sizeof path, "/tmp/dsinfer-seldiag-%d.txt", (int)getpid());
    const ds_attn_method methods[2] = {DS_ATTN_ORACLE, DS_ATTN_STREAMING};
    for (int mi = 0; mi < 2; mi++) {
        unlink(path);
        setenv("DSINFER_SEL_DIAG", path, 1);
        ds_sparse_opts sp = ds_sparse_default_opts();
        sp.method = methods[mi];
        sp.tokens = 24;
        ds_session_opts so = ds_session_default_opts();
        so.n_ctx = n + 4;
        so.n_threads = 2;
        so.sparse = sp;
        ds_session *s;
        CHECK(ds_session_new(m, &so, &s) == DS_OK);
        unsetenv("DSINFER_SEL_DIAG");
        const int np = n - 8;
        CHECK(ds_session_eval(s, tk, np, NULL) == DS_OK);   /* dense prefill: no selections */
        for (int i = np; i < n; i++) CHECK(ds_session_eval(s, tk + i, 1, NULL) == DS_OK);
        ds_session_free(s);   /* closes the file */
        FILE *f = fopen(path, "r");
        CHECK(f != NULL);
        if (!f) break;
        char name[16];
        int layer, kvh, nn, mm, top1, G, lines = 0, bad = 0;
        float ms, msmin, mo, momin, rec;
        double sum_ms = 0, sum_mo = 0;
        while (fscanf(f, "%15s %d %d %d %d %f %f %f %f %f %d %d", name, &layer, &kvh, &nn, &mm, &ms, &msmin, &mo,
                      &momin, &rec, &top1, &G) == 12) {
            lines++;
            bad += strcmp(name, ds_attn_method_name(methods[mi])) != 0 || mm != 24 || nn <= np || nn > n ||
                   G != info->n_head / info->n_head_kv || top1 < 0 || top1 > G;
            bad += !(ms >= 0 && ms <= 1.0001f && msmin <= ms + 1e-4f && mo >= 0 && mo <= 1.0001f && momin <= mo + 1e-4f);
            if (mi == 0) bad += rec != 1.0f || ms != mo || msmin != momin;
            sum_ms += ms; sum_mo += mo;
        }
        fclose(f);
        unlink(path);
        CHECK_MSG(lines == (n - np) * info->n_layer * info->n_head_kv, "%s: %d lines, expected %d",
                  ds_attn_method_name(methods[mi]), lines, (n - np) * info->n_layer * info->n_head_kv);
        CHECK_MSG(bad == 0, "%s: %d inconsistent diagnostic fields", ds_attn_method_name(methods[mi]), bad);
        if (mi == 1) CHECK_MSG(sum_mo >= sum_ms, "oracle mass %.3f below streaming's %.3f", sum_mo, sum_ms);
    }
    ds_free_tokens(tk);
    ds_model_free(m);
}

/* Default label channels: 1/16 of the key bits, at least 128 bits per label row, at most head_dim. */
TEST(sparse_default_channels) {
    CHECK(ds_sparse_default_channels(128, 4) == 32);   /* the paper's 1/16 */
    CHECK(ds_sparse_default_channels(128, 16) == 8);
    CHECK(ds_sparse_default_channels(256, 4) == 64);
    CHECK(ds_sparse_default_channels(64, 4) == 32);    /* 1/8 at head_dim 64 */
    CHECK(ds_sparse_default_channels(64, 16) == 8);
    CHECK(ds_sparse_default_channels(64, 2) == 64);
    CHECK(ds_sparse_default_channels(32, 2) == 32);    /* capped at head_dim */
    CHECK(ds_sparse_default_channels(0, 4) == 1);
}

/* --ds-min-context's automatic value: 2048 on the CPU; on the GPU the context where a step's K+V
 * per layer reaches 64 MiB (the measured crossover), never below 2048; ds_session_new resolves it. */
TEST(sparse_auto_min_context) {
    ds_model_info info;
    memset(&info, 0, sizeof info);
    info.n_head_kv = 2; info.head_dim = 128;                 /* Qwen2.5-1.5B */
    CHECK(ds_sparse_auto_min_context(&info, 0) == 2048);
    CHECK(ds_sparse_auto_min_context(&info, 1) == 65536);
    info.n_head_kv = 8;                                      /* Llama-3-8B */
    CHECK(ds_sparse_auto_min_context(&info, 1) == 16384);
    info.n_head_kv = 32;                                     /* Llama-2-7B: 16 KB per position */
    CHECK(ds_sparse_auto_min_context(&info, 1) == 4096);
    info.n_head_kv = 64;                                     /* 32 KB per position: the floor */
    CHECK(ds_sparse_auto_min_context(&info, 1) == 2048);
    info.n_head_kv = 3; info.head_dim = 64;                  /* SmolLM2-135M: 768 B per position */
    CHECK(ds_sparse_auto_min_context(&info, 1) == 87382);
    LOAD_OR_SKIP(m);
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = 256;
    so.n_threads = 1;
    so.sparse.method = DS_ATTN_RANDOM;
    so.sparse.min_context = DS_MIN_CONTEXT_AUTO;
    ds_session *s;
    CHECK_MSG(ds_session_new(m, &so, &s) == DS_OK, "%s", ds_last_error());
    CHECK(s->opts.sparse.min_context == 2048);
    ds_session_free(s);
    so.sparse.min_context = -5;                              /* anything else below 0: a clear error */
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG && strstr(ds_last_error(), "--ds-min-context"));
    ds_model_free(m);
}

/* Bytes per decode step and layer (double-sparsity.md §9) on a few hand-computed cases. */
TEST(sparse_step_bytes_formulas) {
    LOAD_CALIBRATED_OR_SKIP(m);
    const ds_model_info *c = ds_model_get_info(m);
    const size_t hd = (size_t)c->head_dim, KVH = (size_t)c->n_head_kv, row = 2 * hd, G = (size_t)(c->n_head / c->n_head_kv);
    const int n = 1000;
    const size_t dense = 2 * (size_t)n * row * KVH;
    const size_t r_def = (hd > 128 ? hd : 128) / 4 < hd ? (hd > 128 ? hd : 128) / 4 : hd;   /* the default channels at 4 bits */
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = 1024;
    so.n_threads = 1;
    /* the top-k methods score the n - 1 - W rows before the recent window (DS's default W at k = 64
     * is 64/8 = 8; the oracle and SparQ default to none) */
    const size_t lab = r_def / 2 + 4;   /* r_def 4-bit codes + fp16 lo/step */
    struct { ds_attn_method meth; int per_head, k, recent; size_t want; } cs[] = {
        {DS_ATTN_DENSE, 0, 0, DS_RECENT_AUTO, dense},
        {DS_ATTN_DS, 0, 64, DS_RECENT_AUTO, KVH * ((n - 9) * lab + 2 * 64 * row)},
        {DS_ATTN_DS, 0, 64, 0, KVH * ((n - 1) * lab + 2 * 64 * row)},
        {DS_ATTN_DS, 1, 64, 20, KVH * ((n - 21) * lab + G * 2 * 64 * row)},
        {DS_ATTN_ORACLE, 0, 64, DS_RECENT_AUTO, KVH * ((n - 1) * row + 64 * row)},
        {DS_ATTN_SPARQ, 0, 64, 5, KVH * ((n - 6) * r_def * 2 + 2 * 64 * row)},
        {DS_ATTN_STREAMING, 1, 64, DS_RECENT_AUTO, KVH * G * 2 * 64 * row},
        /* 62 complete pages before the current one (positions 992..999), 4 chosen */
        {DS_ATTN_QUEST, 0, 64, DS_RECENT_AUTO, KVH * (62 * 2 * hd * 2 + 2 * row * (4 * 16 + 8))},
        {DS_ATTN_QUEST, 0, 1000, DS_RECENT_AUTO, dense},                              /* k >= n: dense */
        {DS_ATTN_H2O, 0, 64, DS_RECENT_AUTO, KVH * (2 * 64 * row + 64 * 8)},
        {DS_ATTN_H2O, 1, 64, DS_RECENT_AUTO, KVH * G * (2 * 64 * row + 64 * 8)},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        so.sparse = ds_sparse_default_opts();
        so.sparse.method = cs[i].meth;
        so.sparse.per_head = cs[i].per_head;
        if (cs[i].k) so.sparse.tokens = cs[i].k;
        so.sparse.recent = cs[i].recent;
        ds_session *s;
        CHECK(ds_session_new(m, &so, &s) == DS_OK);
        size_t got = ds_sparse_step_bytes(s, n);
        ds_session_free(s);
        CHECK_MSG(got == cs[i].want, "%s per_head=%d k=%d recent=%d: %zu bytes, expected %zu",
                  ds_attn_method_name(cs[i].meth), cs[i].per_head, cs[i].k, cs[i].recent, got, cs[i].want);
    }
    ds_model_free(m);
}

/* Per-layer label widths: each layer's label cache holds exactly what a session with that width
 * everywhere writes for the layer (codes, lo, step: bit for bit), the per-layer widths override
 * --ds-channels all the way to the scores (every layer at head_dim with fp16 raw labels is the
 * exact top-k again, with channels left at 16), and the step bytes are the layers' mean. */
TEST(sparse_layer_channels) {
    LOAD_CALIBRATED_OR_SKIP(m);
    const ds_model_info *c = ds_model_get_info(m);
    const int L = c->n_layer, KVH = c->n_head_kv, hd = c->head_dim;
    int n;
    int32_t *tk = toks_of(m, TEXT, &n);
    static const int widths[3] = {8, 16, 24};
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = n + 4;
    so.n_threads = 2;
    so.sparse.method = DS_ATTN_DS;
    so.sparse.channels = 16;
    ds_session *mix = NULL, *uni[3] = {NULL, NULL, NULL};
    for (int l = 0; l < L; l++) so.sparse.layer_channels[l] = widths[l % 3];
    CHECK(ds_session_new(m, &so, &mix) == DS_OK && ds_session_eval(mix, tk, n, NULL) == DS_OK);
    memset(so.sparse.layer_channels, 0, sizeof so.sparse.layer_channels);
    for (int w = 0; w < 3; w++) {
        so.sparse.channels = widths[w];
        CHECK(ds_session_new(m, &so, &uni[w]) == DS_OK && ds_session_eval(uni[w], tk, n, NULL) == DS_OK);
    }
    int same = 1;
    size_t rb_sum = 0;
    for (int l = 0; l < L && same; l++) {
        const ds_session *u = uni[l % 3];
        const size_t rb = mix->sp_row_bytes[l], rows = (size_t)KVH * mix->n_ctx;
        rb_sum += rb + 4;
        same &= mix->sp_r[l] == widths[l % 3] && rb == u->sp_row_bytes[l] && u->sp_code_off[l] == (size_t)l * rows * rb;
        same &= !memcmp(mix->sp_codes + mix->sp_code_off[l], u->sp_codes + u->sp_code_off[l], rows * rb);
        same &= !memcmp(mix->sp_lo + (size_t)l * rows, u->sp_lo + (size_t)l * rows, rows * 2);
        same &= !memcmp(mix->sp_step + (size_t)l * rows, u->sp_step + (size_t)l * rows, rows * 2);
        CHECK_MSG(same, "layer %d (width %d): labels differ from the uniform session's", l, widths[l % 3]);
    }
    const int k = ds_sparse_k(mix, 1000);
    const size_t scored = (size_t)(1000 - 1 - ds_session_recent(mix, 1000));
    const size_t want_b = (size_t)KVH * (scored * rb_sum / L + 2 * (size_t)k * 2 * hd), got_b = ds_sparse_step_bytes(mix, 1000);
    CHECK_MSG(got_b == want_b, "step bytes %zu, expected %zu", got_b, want_b);
    /* a decode step through the mixed cache (scores from each layer's own rows) */
    CHECK(ds_session_eval(mix, tk, 1, NULL) == DS_OK);
    for (int w = 0; w < 3; w++) ds_session_free(uni[w]);
    ds_session_free(mix);

    ds_sparse_opts sp;
    ds_status st;
    float *b = oracle_then_fp16_ds(m, tk, n, 0, 1, &sp, &st);
    CHECK(st == DS_OK);
    sp.channels = 16;
    for (int l = 0; l < L; l++) sp.layer_channels[l] = hd;
    float *a = run(m, &sp, tk, n, 0, &st);
    CHECK(st == DS_OK);
    const double worst = a && b ? max_abs_diff(a, b, (size_t)n * c->n_vocab) : 1e9;
    CHECK_MSG(worst < 1e-2, "DS(every layer r=d, fp16) vs oracle max abs logit diff %g", worst);
    free(a); free(b);

    /* errors: a layer that does not exist, a width over head_dim, a method without labels */
    so.sparse = ds_sparse_default_opts();
    so.sparse.method = DS_ATTN_DS;
    ds_session *s = NULL;
    so.sparse.layer_channels[L] = 16;
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG && strstr(ds_last_error(), "does not exist"));
    so.sparse.layer_channels[L] = 0;
    so.sparse.layer_channels[1] = hd + 1;
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG && strstr(ds_last_error(), "layer 1"));
    so.sparse.method = DS_ATTN_SPARQ;
    so.sparse.layer_channels[1] = 16;
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG && strstr(ds_last_error(), "methods with labels"));
    so.sparse.layer_channels[1] = 0;
    so.sparse.channel_alloc = 1;
    CHECK(ds_session_new(m, &so, &s) == DS_ERR_ARG && strstr(ds_last_error(), "--method ds only"));
    ds_free_tokens(tk);
    ds_model_free(m);
}
