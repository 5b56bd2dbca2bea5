/* test_eval_tasks.c — retrieval task generators (tools/eval_tasks.c) and the SVG plot writer
 * (tools/plot.c). Generator tests need the SmolLM2 model (to count tokens) and skip without it;
 * the chat-split test also runs on Qwen2.5 when it is present, for the qwen2 pre-tokenizer. */
#include "test.h"
#include "eval_tasks.h"
#include "plot.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ds_model *load_smol(void) {
    const char *path = test_model_path();
    if (!path) return NULL;
    ds_model *m = NULL;
    if (ds_model_load(path, &m) != DS_OK) { fprintf(stderr, "    load: %s\n", ds_last_error()); return NULL; }
    return m;
}

static int count_sub(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub)) n++;
    return n;
}

/* The text between `after` and the next `until` in s, into buf ("" if absent). */
static void between(const char *s, const char *after, const char *until, char *buf, size_t cap) {
    buf[0] = 0;
    const char *a = strstr(s, after);
    if (!a) return;
    a += strlen(after);
    const char *e = strstr(a, until);
    if (!e || (size_t)(e - a) >= cap) return;
    memcpy(buf, a, (size_t)(e - a));
    buf[e - a] = 0;
}

/* ---------------------------------------------------------------- no model needed */

TEST(eval_task_names) {
    for (int t = 0; t < DS_TASK_COUNT; t++) {
        ds_task p;
        CHECK(ds_task_parse(ds_task_name((ds_task)t), &p) == 0 && p == (ds_task)t);
    }
    ds_task p;
    CHECK(ds_task_parse("niah_multikey", &p) == 0 && p == DS_TASK_NIAH_MULTIKEY);
    CHECK(ds_task_parse("LongChat", &p) == 0 && p == DS_TASK_LINES);
    CHECK(ds_task_parse("nope", &p) == -1);
    CHECK(ds_task_parse("a-very-long-name-that-is-not-a-task-at-all", &p) == -1);
}

TEST(eval_score_rules) {
    ds_eval_case c = {0};
    c.value = 24517;
    CHECK(ds_eval_score(DS_TASK_LINES, &c, "In line brave-owl the value is 24517.") == DS_EVAL_SCORE_MAX);
    CHECK(ds_eval_score(DS_TASK_LINES, &c, "24517? no, it is 24518") == 0);       /* last integer */
    CHECK(ds_eval_score(DS_TASK_LINES, &c, "I do not know") == 0);
    CHECK(ds_eval_score(DS_TASK_PASSKEY, &c, " 24517. Remember it. 12 is") == DS_EVAL_SCORE_MAX);
    CHECK(ds_eval_score(DS_TASK_PASSKEY, &c, "1 24517") == 0);                    /* first integer */
    CHECK(ds_eval_score(DS_TASK_PASSKEY, &c, "245170") == 0);

    char *one[1] = {"1234567"};
    c.items = one; c.n_items = 1;
    CHECK(ds_eval_score(DS_TASK_NIAH, &c, " 1234567.") == DS_EVAL_SCORE_MAX);
    CHECK(ds_eval_score(DS_TASK_NIAH, &c, "number: 12345678") == 0);
    CHECK(ds_eval_score(DS_TASK_NIAH, &c, "7654321") == 0);
    char *uu[1] = {"3f2a9c1e-8b7d-4e6f-9a0b-1c2d3e4f5a6b"};
    c.items = uu;
    CHECK(ds_eval_score(DS_TASK_NIAH_MULTIKEY, &c, "is: 3F2A9C1E-8B7D-4E6F-9A0B-1C2D3E4F5A6B") == DS_EVAL_SCORE_MAX);
    CHECK(ds_eval_score(DS_TASK_NIAH_MULTIKEY, &c, "3f2a9c1e-8b7d-4e6f-9a0b-1c2d3e4f5a6c") == 0);

    char *vars[5] = {"QWERT", "ASDFG", "ZXCVB", "POIUY", "LKJHG"};
    c.items = vars; c.n_items = 5;
    CHECK(ds_eval_score(DS_TASK_VT, &c, "QWERT, ASDFG, ZXCVB, POIUY, LKJHG") == 1000);
    CHECK(ds_eval_score(DS_TASK_VT, &c, "VAR QWERT and VAR asdfg, ZXCVBN") == 400);
    char *words[10] = {"lion", "apple", "brave", "kite", "moon", "oak", "fig", "jar", "owl", "cup"};
    c.items = words; c.n_items = 10;
    CHECK(ds_eval_score(DS_TASK_CWE, &c, "1. lion 2. apple 3. brave 4. kite 5. moon 6. oak 7. fig 8. jar 9. owl 10. cup") == 1000);
    CHECK(ds_eval_score(DS_TASK_CWE, &c, "lions, Apple, bravery, kite") == 200);
    CHECK(ds_eval_score(DS_TASK_CWE, &c, "") == 0);
}

/* ---------------------------------------------------------------- generators */

TEST(eval_case_deterministic) {
    ds_model *m = load_smol();
    if (!m) SKIP("SmolLM2 model not fetched");
    for (int t = 0; t < DS_TASK_COUNT; t++) {
        ds_eval_case a, b, d;
        CHECK(ds_eval_make_case(m, (ds_task)t, 42, 1024, -1, &a) == DS_OK);
        CHECK(ds_eval_make_case(m, (ds_task)t, 42, 1024, -1, &b) == DS_OK);
        CHECK(ds_eval_make_case(m, (ds_task)t, 43, 1024, -1, &d) == DS_OK);
        int same = !strcmp(a.material, b.material) && !strcmp(a.question, b.question) &&
                   !strcmp(a.answer, b.answer) && a.n_tokens == b.n_tokens && a.value == b.value;
        int differs = strcmp(a.material, d.material) != 0;
        ds_eval_case_free(&a); ds_eval_case_free(&b); ds_eval_case_free(&d);
        CHECK_MSG(same, "%s: same seed gave different cases", ds_task_name((ds_task)t));
        CHECK_MSG(differs, "%s: seeds 42 and 43 gave the same material", ds_task_name((ds_task)t));
    }
    ds_eval_case z;
    CHECK(ds_eval_make_case(m, DS_TASK_PASSKEY, 1, 100, -1, &z) == DS_ERR_ARG);   /* too small */
    CHECK(ds_eval_make_case(m, DS_TASK_PASSKEY, 1, 1024, 101, &z) == DS_ERR_ARG); /* bad depth */
    CHECK(ds_eval_make_case(m, DS_TASK_COUNT, 1, 1024, -1, &z) == DS_ERR_ARG);
    ds_model_free(m);
}

TEST(eval_case_sizes) {
    ds_model *m = load_smol();
    if (!m) SKIP("SmolLM2 model not fetched");
    const int targets[2] = {1024, 4096};
    for (int t = 0; t < DS_TASK_COUNT; t++)
        for (int k = 0; k < 2; k++) {
            ds_eval_case c;
            ds_status st = ds_eval_make_case(m, (ds_task)t, 7 + k, targets[k], -1, &c);
            CHECK_MSG(st == DS_OK, "%s @%d: %s", ds_task_name((ds_task)t), targets[k], ds_status_name(st));
            /* recount independently of the generator */
            size_t lm = strlen(c.material), lq = strlen(c.question);
            char *p = malloc(lm + lq + 2);
            memcpy(p, c.material, lm); p[lm] = '\n'; memcpy(p + lm + 1, c.question, lq + 1);
            int32_t *tok; int n;
            CHECK(ds_tokenize(m, p, strlen(p), false, false, &tok, &n) == DS_OK);
            ds_free_tokens(tok);
            free(p);
            fprintf(stderr, "    %-14s target %5d: %5d tokens (%d units)\n", ds_task_name((ds_task)t),
                    targets[k], n, c.n_units);
            int ok = n == c.n_tokens && abs(n - targets[k]) * 20 <= targets[k];
            ds_eval_case_free(&c);
            CHECK_MSG(ok, "%s: %d tokens for target %d", ds_task_name((ds_task)t), n, targets[k]);
        }
    ds_model_free(m);
}

/* Check that the case really contains its answer, per task. Returns NULL or a reason. */
static const char *verify_case(const ds_eval_case *c) {
    static char why[256];
    char key[128], buf[256];
    const char *mat = c->material;
    if (ds_eval_score(c->task, c, c->answer) != DS_EVAL_SCORE_MAX) return "own answer not accepted";
    if (ds_eval_score(c->task, c, "I am not sure.") != 0) return "a non-answer scored";
    switch (c->task) {
    case DS_TASK_LINES:
        between(c->question, "in line ", "?", key, sizeof key);
        snprintf(buf, sizeof buf, "line %s: REGISTER_CONTENT is <%ld>", key, c->value);
        if (!key[0] || count_sub(mat, buf) != 1) return "asked line missing";
        snprintf(buf, sizeof buf, "line %s:", key);
        if (count_sub(mat, buf) != 1) return "asked key not unique";
        if (count_sub(mat, "\nline ") != c->n_units) return "line count";  /* the first follows "\n\n" */
        break;
    case DS_TASK_PASSKEY:
        snprintf(buf, sizeof buf, "The pass key is %ld. Remember it. %ld is the pass key.", c->value, c->value);
        if (count_sub(mat, buf) != 1 || c->value < 1 || c->value > 50000) return "pass key missing";
        break;
    case DS_TASK_NIAH:
        between(c->question, "number for ", " mentioned", key, sizeof key);
        snprintf(buf, sizeof buf, "One of the special magic numbers for %s is: %s.", key, c->items[0]);
        if (!key[0] || count_sub(mat, buf) != 1 || strlen(c->items[0]) != 7) return "needle missing";
        for (const char *p = mat; *p; p++) {  /* the needle's number is the only digit run */
            if (*p < '0' || *p > '9') continue;
            size_t n = strspn(p, "0123456789");
            if (n != 7 || strncmp(p, c->items[0], 7)) return "stray digits";
            p += n - 1;
        }
        break;
    case DS_TASK_NIAH_MULTIKEY:
        between(c->question, "uuid for ", " mentioned", key, sizeof key);
        snprintf(buf, sizeof buf, "One of the special magic uuids for %s is: %s.", key, c->items[0]);
        if (strlen(key) != 36 || count_sub(mat, buf) != 1) return "needle missing";
        if (count_sub(mat, "One of the special magic uuids for ") != 4) return "needle count";
        if (count_sub(mat, key) != 1) return "asked key repeated";
        break;
    case DS_TASK_VT: {
        const char *prev = mat;
        for (int j = 0; j < c->n_items; j++) {
            if (j == 0) snprintf(buf, sizeof buf, "VAR %s = %ld.", c->items[0], c->value);
            else snprintf(buf, sizeof buf, "VAR %s = VAR %s.", c->items[j], c->items[j - 1]);
            const char *at = strstr(mat, buf);
            if (!at || count_sub(mat, buf) != 1) return "chain link missing";
            if (at < prev) return "chain out of order";
            prev = at;
            snprintf(buf, sizeof buf, "VAR %s ", c->items[j]);
            if (count_sub(mat, buf) != 1) return "variable assigned twice";
        }
        if (count_sub(mat, "VAR ") != 2 * c->n_items - 1) return "extra assignments";
        break;
    }
    case DS_TASK_CWE: {
        /* Parse "1. w 2. w ..." and count every word. */
        const char *p = strchr(mat, '\n');
        if (!p) return "no list";
        p++;
        int n_words = 0, cap = 4096;
        char (*w)[16] = malloc(sizeof *w * (size_t)cap);
        int *cnt = calloc((size_t)cap, sizeof *cnt);
        long expect = 1;
        const char *err = NULL;
        while (*p && !err) {
            char word[16];
            long num;
            int used;
            if (sscanf(p, "%ld. %15[a-z]%n", &num, word, &used) != 2) { err = "bad entry"; break; }
            if (num != expect++) { err = "numbering"; break; }
            p += used;
            if (*p == ' ') p++;
            int i = 0;
            while (i < n_words && strcmp(w[i], word)) i++;
            if (i == n_words) { if (n_words == cap) { err = "too many words"; break; } strcpy(w[n_words++], word); }
            cnt[i]++;
        }
        int top = 0, rare = -1;
        for (int i = 0; i < n_words && !err; i++) {
            int is_top = 0;
            for (int j = 0; j < c->n_items; j++) is_top |= !strcmp(w[i], c->items[j]);
            top += is_top;
            if (is_top && cnt[i] != c->value) err = "common word count";
            if (!is_top && rare < 0) rare = cnt[i];
            if (!is_top && cnt[i] != rare) err = "rare words differ in count";
            if (!is_top && cnt[i] * 5 > c->value) err = "rare word too frequent";
        }
        if (!err && top != 10) err = "common words absent";
        snprintf(why, sizeof why, "%s", err ? err : "");
        free(w); free(cnt);
        if (err) return why;
        break;
    }
    default: return "unknown task";
    }
    return NULL;
}

TEST(eval_case_answer_present) {
    ds_model *m = load_smol();
    if (!m) SKIP("SmolLM2 model not fetched");
    for (int t = 0; t < DS_TASK_COUNT; t++)
        for (int seed = 1; seed <= 3; seed++) {
            ds_eval_case c;
            int target = seed == 3 ? 4096 : 1024;
            CHECK(ds_eval_make_case(m, (ds_task)t, (uint64_t)seed, target, -1, &c) == DS_OK);
            const char *why = verify_case(&c);
            CHECK_MSG(!why, "%s seed %d: %s", ds_task_name((ds_task)t), seed, why);
            CHECK(c.material[strlen(c.material) - 1] != ' ' && c.material[strlen(c.material) - 1] != '\n');
            ds_eval_case_free(&c);
        }
    /* depth 0 puts the needle right after the task line; 100 at the very end. */
    ds_eval_case c;
    CHECK(ds_eval_make_case(m, DS_TASK_PASSKEY, 5, 1024, 0, &c) == DS_OK);
    CHECK(strstr(c.material, ".\nThe pass key is ") != NULL && c.depth_percent == 0);
    ds_eval_case_free(&c);
    CHECK(ds_eval_make_case(m, DS_TASK_NIAH, 5, 1024, 100, &c) == DS_OK);
    const char *last = strrchr(c.material, 'O');
    CHECK(last && !strncmp(last, "One of the special magic numbers", 32));
    ds_eval_case_free(&c);
    CHECK(ds_eval_make_case(m, DS_TASK_LINES, 5, 1024, 0, &c) == DS_OK);
    char key[128], first[160];
    between(c.question, "in line ", "?", key, sizeof key);
    between(c.material, "\n\nline ", ":", first, sizeof first);
    CHECK(key[0] && !strcmp(key, first));
    ds_eval_case_free(&c);
    ds_model_free(m);
}

/* prefix + question part == the rendered chat, and tokenizing the parts separately gives the
 * same tokens as tokenizing the whole (so prefill + decode sees exactly the full prompt). */
static void check_split(ds_model *m, const char *label) {
    for (int t = 0; t < DS_TASK_COUNT; t++) {
        ds_eval_case c;
        CHECK(ds_eval_make_case(m, (ds_task)t, 11, 1024, -1, &c) == DS_OK);
        char *q = NULL, *pre = ds_eval_render_chat(m, &c, &q);
        CHECK_MSG(pre && q, "%s: render failed: %s", label, ds_last_error());
        size_t lm = strlen(c.material), lq = strlen(c.question);
        char *content = malloc(lm + lq + 2);
        memcpy(content, c.material, lm); content[lm] = '\n'; memcpy(content + lm + 1, c.question, lq + 1);
        ds_chat_msg msg = {"user", content};
        char *full = ds_chat_render(m, &msg, 1, true);
        size_t lp = strlen(pre);
        int concat = full && strlen(full) == lp + strlen(q) && !strncmp(full, pre, lp) && !strcmp(full + lp, q);
        int q_starts = !strncmp(q, c.question, lq);
        int32_t *ta, *tb, *tf;
        int na, nb, nf;
        CHECK(ds_tokenize(m, pre, lp, true, true, &ta, &na) == DS_OK);
        CHECK(ds_tokenize(m, q, strlen(q), false, true, &tb, &nb) == DS_OK);
        CHECK(ds_tokenize(m, full, strlen(full), true, true, &tf, &nf) == DS_OK);
        int same = na + nb == nf && !memcmp(ta, tf, sizeof *ta * (size_t)na) &&
                   !memcmp(tb, tf + na, sizeof *tb * (size_t)nb);
        ds_free_tokens(ta); ds_free_tokens(tb); ds_free_tokens(tf);
        free(full); free(content); free(pre); free(q);
        ds_eval_case_free(&c);
        CHECK_MSG(concat && q_starts, "%s %s: split does not concatenate", label, ds_task_name((ds_task)t));
        CHECK_MSG(same, "%s %s: split changes tokenization", label, ds_task_name((ds_task)t));
    }
    fprintf(stderr, "    %s: all %d tasks split cleanly\n", label, (int)DS_TASK_COUNT);
}

TEST(eval_chat_split) {
    ds_model *m = load_smol();
    if (!m) SKIP("SmolLM2 model not fetched");
    check_split(m, "smollm2");
    ds_model_free(m);
    const char *qp = test_model_path_named("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf");
    if (!qp) return;
    if (ds_model_load(qp, &m) != DS_OK) return;
    check_split(m, "qwen2");
    ds_model_free(m);
}

/* ---------------------------------------------------------------- plot */

/* Minimal well-formedness for what the writer emits: tags nest and close, no stray '<' or '&'. */
static int svg_well_formed(const char *s) {
    char stack[64][16];
    int depth = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '&') {
            if (strncmp(p, "&amp;", 5) && strncmp(p, "&lt;", 4) && strncmp(p, "&gt;", 4) && strncmp(p, "&quot;", 6)) return 0;
            continue;
        }
        if (*p != '<') continue;
        const char *e = strchr(p, '>');
        if (!e || memchr(p + 1, '<', (size_t)(e - p - 1))) return 0;
        int closing = p[1] == '/', self = e[-1] == '/';
        const char *nm = p + 1 + closing;
        size_t n = strcspn(nm, " />");
        if (n == 0 || n >= 16) return 0;
        if (closing) {
            if (depth == 0 || strncmp(stack[depth - 1], nm, n) || stack[depth - 1][n]) return 0;
            depth--;
        } else if (!self) {
            if (depth == 64) return 0;
            memcpy(stack[depth], nm, n);
            stack[depth++][n] = 0;
        }
        p = e;
    }
    return depth == 0;
}

static int svg_ok(const char *path, const char *must_contain) {
    char *s = test_read_file(path, NULL);
    if (!s) return 0;
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ')) s[--n] = 0;
    int ok = !strncmp(s, "<svg", 4) && n >= 6 && !strcmp(s + n - 6, "</svg>") && svg_well_formed(s) &&
             (!must_contain || strstr(s, must_contain));
    free(s);
    return ok;
}

TEST(plot_svg_lines_and_bars) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/ds_test_plot_%d.svg", (int)getpid());
    const double x[5] = {1024, 2048, 4096, 8192, 16384};
    const double y[3 * 5] = {0.9, 0.85, NAN, 0.7, 0.6,
                             1.0, 1.0, 0.95, 0.9, 0.88,
                             NAN, NAN, NAN, NAN, NAN};
    const char *names[3] = {"dense", "ds k=1/16 <r=8>", "empty & missing"};
    CHECK(ds_plot_lines(path, "passkey accuracy", "context (tokens)", "accuracy", 1, 3, names, 5, x, y) == DS_OK);
    CHECK(svg_ok(path, "dense"));
    CHECK(svg_ok(path, "ds k=1/16 &lt;r=8&gt;"));
    CHECK(svg_ok(path, "empty &amp; missing"));
    CHECK(svg_ok(path, ">4K<"));
    CHECK(ds_plot_lines(path, "linear", NULL, NULL, 0, 3, names, 5, x, y) == DS_OK);
    CHECK(svg_ok(path, "linear"));
    /* degenerate inputs: nothing to draw, a single point, no series names */
    CHECK(ds_plot_lines(path, "empty", "x", "y", 1, 1, names + 2, 5, x, y + 10) == DS_OK);
    CHECK(svg_ok(path, "no data"));
    CHECK(ds_plot_lines(path, NULL, NULL, NULL, 0, 0, NULL, 0, NULL, NULL) == DS_OK);
    CHECK(svg_ok(path, NULL));
    CHECK(ds_plot_lines(path, "one", NULL, NULL, 1, 1, NULL, 1, x, y) == DS_OK);
    CHECK(svg_ok(path, "series 1"));
    CHECK(ds_plot_lines(path, "bad", NULL, NULL, 0, 1, NULL, 5, NULL, y) == DS_ERR_ARG);
    CHECK(ds_plot_lines("/nonexistent-dir/x.svg", "t", NULL, NULL, 0, 1, NULL, 5, x, y) == DS_ERR_IO);

    const char *cats[4] = {"lines", "passkey", "niah", "niah-multikey"};
    const double yb[2 * 4] = {0.9, 1.0, NAN, 0.5,
                              -0.2, 0.8, 0.7, 0.0};
    CHECK(ds_plot_bars(path, "accuracy by task", "task", "accuracy", 4, cats, 2, names, yb) == DS_OK);
    CHECK(svg_ok(path, "niah-multikey"));
    CHECK(svg_ok(path, "ds k=1/16 &lt;r=8&gt;"));
    CHECK(ds_plot_bars(path, "none", NULL, NULL, 0, NULL, 0, NULL, NULL) == DS_OK);
    CHECK(svg_ok(path, "no data"));
    CHECK(ds_plot_bars(path, "nan", NULL, NULL, 1, NULL, 1, NULL, y + 10) == DS_OK);
    CHECK(svg_ok(path, "no data"));
    unlink(path);
}
