/* test_eval_cli.c — the cores of `dsinfer eval` and `dsinfer fidelity` (tools/eval.c), end to end
 * on the SmolLM2 model (skipped without it), plus the method x budget list parser. */
#include "test.h"
#include "eval.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static ds_model *load_smol_calibrated(void) {
    const char *path = test_model_path();
    if (!path) return NULL;
    ds_model *m = NULL;
    if (ds_model_load(path, &m) != DS_OK) { fprintf(stderr, "    load: %s\n", ds_last_error()); return NULL; }
    /* the shipped calibration (tests run from the repository root) */
    if (!ds_model_has_calibration(m))
        ds_model_load_calibration(m, "calib/SmolLM2-135M-Instruct.Q4_1.gguf.dscal.json");
    return m;
}

TEST(eval_settings_parse) {
    ds_eval_setting s[16];
    char err[256];
    int n = ds_eval_parse_settings("dense,ds,streaming", "1/16,256,1", s, 16, err, sizeof err);
    CHECK_MSG(n == 5, "n = %d (%s)", n, err);   /* dense once (budget 1 is dense too), 2 x 2 sparse */
    CHECK(s[0].method == DS_ATTN_DENSE && !strcmp(s[0].label, "dense"));
    CHECK(s[1].method == DS_ATTN_DS && s[1].tokens == 0 && fabs(s[1].frac - 1.0 / 16) < 1e-7);
    CHECK(!strcmp(s[1].label, "ds@1/16"));
    CHECK(s[2].method == DS_ATTN_DS && s[2].tokens == 256 && !strcmp(s[2].label, "ds@256"));
    CHECK(s[4].method == DS_ATTN_STREAMING && s[4].tokens == 256);
    CHECK(ds_eval_parse_settings("dense,bogus", "1/16", s, 16, err, sizeof err) == -1 && strstr(err, "bogus"));
    CHECK(ds_eval_parse_settings("quest,h2o", "1/16", s, 16, err, sizeof err) == 2);
    CHECK(s[0].method == DS_ATTN_QUEST && s[1].method == DS_ATTN_H2O && !strcmp(s[1].label, "h2o@1/16"));
    CHECK(ds_eval_parse_settings("ds", "1/0", s, 16, err, sizeof err) == -1);
    CHECK(ds_eval_parse_settings("ds", "2.5", s, 16, err, sizeof err) == -1);
    CHECK(ds_eval_parse_settings("ds,oracle", "1/16,1/8", s, 3, err, sizeof err) == -1);   /* cap */
    CHECK(ds_eval_methods_need_calibration("dense, ds") && !ds_eval_methods_need_calibration("dense,sparq"));
    /* a group-score suffix makes its own setting beside the plain one */
    n = ds_eval_parse_settings("ds,ds-max,oracle-sum", "1/16", s, 16, err, sizeof err);
    CHECK_MSG(n == 3, "n = %d (%s)", n, err);
    CHECK(s[0].method == DS_ATTN_DS && s[0].group_max == -1 && !strcmp(s[0].label, "ds@1/16"));
    CHECK(s[1].method == DS_ATTN_DS && s[1].group_max == 1 && !strcmp(s[1].label, "ds-max@1/16"));
    CHECK(s[2].method == DS_ATTN_ORACLE && s[2].group_max == 0 && !strcmp(s[2].label, "oracle-sum@1/16"));
    CHECK(ds_eval_parse_settings("quest-max", "1/16", s, 16, err, sizeof err) == -1 && strstr(err, "quest-max"));
    CHECK(ds_eval_parse_settings("ds-min", "1/16", s, 16, err, sizeof err) == -1);
    CHECK(ds_eval_methods_need_calibration("dense,ds-max"));
}

/* One passkey case of ~600 tokens: dense must get it right (the 135M model does at this length)
 * and DS at k = n/4 must come back with a valid score. */
TEST(eval_cli_passkey_case) {
    ds_model *m = load_smol_calibrated();
    if (!m) SKIP("model not fetched (scripts/fetch-model)");
    if (!ds_model_has_calibration(m)) { ds_model_free(m); SKIP("no calibration (calib/ not found)"); }
    ds_eval_case c;
    CHECK(ds_eval_make_case(m, DS_TASK_PASSKEY, 7, 600, 50, &c) == DS_OK);
    ds_eval_setting set[2];
    char err[256];
    CHECK(ds_eval_parse_settings("dense,ds", "1/4", set, 2, err, sizeof err) == 2);
    ds_sparse_opts base = ds_sparse_default_opts();
    int scores[2] = {-1, -1}, np = 0;
    char *answers[2];
    ds_status st = ds_eval_run_case(m, &c, &base, set, 2, 16, 2, scores, answers, &np);
    CHECK_MSG(st == DS_OK, "run_case: %s", ds_last_error());
    fprintf(stderr, "    key %ld, %d prompt tokens; dense: \"%s\" (%d); ds@1/4: \"%s\" (%d)\n", c.value, np,
            answers[0], scores[0], answers[1], scores[1]);
    CHECK(np > 570 && np < 700);
    CHECK_MSG(scores[0] == DS_EVAL_SCORE_MAX, "dense answered \"%s\", key %ld", answers[0], c.value);
    CHECK(scores[1] == 0 || scores[1] == DS_EVAL_SCORE_MAX);
    free(answers[0]);
    free(answers[1]);
    ds_eval_case_free(&c);
    ds_model_free(m);
}

/* The harness prefills one dense session and forks it per method: H2O needs the parent to keep
 * its attention sums (the harness asks for them), Quest rebuilds its page bounds. Both must run,
 * generate and score, at a fraction and at a fixed budget. */
TEST(eval_cli_quest_h2o_case) {
    ds_model *m = load_smol_calibrated();
    if (!m) SKIP("model not fetched (scripts/fetch-model)");
    ds_eval_case c;
    CHECK(ds_eval_make_case(m, DS_TASK_PASSKEY, 7, 600, 50, &c) == DS_OK);
    ds_eval_setting set[4];
    char err[256];
    CHECK(ds_eval_parse_settings("h2o,quest", "1/4,64", set, 4, err, sizeof err) == 4);
    ds_sparse_opts base = ds_sparse_default_opts();
    int scores[4] = {-1, -1, -1, -1}, np = 0;
    char *answers[4];
    ds_status st = ds_eval_run_case(m, &c, &base, set, 4, 12, 2, scores, answers, &np);
    CHECK_MSG(st == DS_OK, "run_case: %s", ds_last_error());
    for (int i = 0; i < 4; i++) {
        fprintf(stderr, "    key %ld; %s: \"%s\" (%d)\n", c.value, set[i].label, answers[i], scores[i]);
        CHECK(scores[i] == 0 || scores[i] == DS_EVAL_SCORE_MAX);
        CHECK(answers[i] && answers[i][0]);
        free(answers[i]);
    }
    ds_eval_case_free(&c);
    ds_model_free(m);
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = calloc(1, 1 << 16);
    if (b) fread(b, 1, (1 << 16) - 1, f);
    fclose(f);
    return b;
}

/* A dense eval run of one ~320-token case per task, writing NAME.{md,csv,svg,cases.csv} into a
 * fresh directory under $TMPDIR (dir); out_path gives those files' paths, remove_outputs deletes
 * them and the directory. */
static ds_eval_config small_eval(char *dir, size_t cap, const char *name, const char *tasks) {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, cap, "%s/dsinfer_ev_%s_%d", tmp && *tmp ? tmp : "/tmp", name, (int)getpid());
    ds_eval_config cfg = {0};
    cfg.model_path = test_model_path();
    cfg.tasks = tasks;
    cfg.methods = "dense";
    cfg.out_dir = dir;
    cfg.name = name;
    cfg.n_ctx = 320;
    cfg.cases = 1;
    cfg.depth = 50;
    cfg.n_threads = 2;
    cfg.seed = 1;
    cfg.sp = ds_sparse_default_opts();
    return cfg;
}
static const char *out_path(char *buf, size_t cap, const ds_eval_config *cfg, const char *ext) {
    snprintf(buf, cap, "%s/%s.%s", cfg->out_dir, cfg->name, ext);
    return buf;
}
static void remove_outputs(const ds_eval_config *cfg) {
    static const char *ext[] = {"md", "csv", "svg", "cases.csv"};
    char path[320];
    for (int i = 0; i < 4; i++) remove(out_path(path, sizeof path, cfg, ext[i]));
    remove(cfg->out_dir);
}

/* The eval command writes its tables after every case: here the first task (passkey) fits the
 * context and the second (cwe) cannot, so the run fails after one case and must leave a table
 * of that case marked partial, next to its row in .cases.csv. */
TEST(eval_cli_tables_after_each_case) {
    ds_model *m = load_smol_calibrated();
    if (!m) SKIP("model not fetched (scripts/fetch-model)");
    char dir[256], path[320];
    ds_eval_config cfg = small_eval(dir, sizeof dir, "t", "passkey,cwe");
    CHECK(cmd_eval(m, &cfg) != 0);   /* cwe cannot make a case of ~180 tokens */
    char *a = read_all(out_path(path, sizeof path, &cfg, "md")), *b = read_all(out_path(path, sizeof path, &cfg, "csv")),
         *c = read_all(out_path(path, sizeof path, &cfg, "cases.csv"));
    CHECK_MSG(a && strstr(a, "partial: 1 of 2 task cases") && strstr(a, "| dense |"), "md: %s", a ? a : "(none)");
    CHECK_MSG(b && strstr(b, "dense,dense,,passkey,1,") && strstr(b, "dense,dense,,cwe,0,"), "csv: %s", b ? b : "(none)");
    CHECK_MSG(c && strstr(c, "passkey,0,") && !strstr(c, "cwe,"), "cases: %s", c ? c : "(none)");
    free(a); free(b); free(c);
    remove_outputs(&cfg);
    ds_model_free(m);
}

/* A run that fails before its first case is done (cwe cannot make a case this short) writes
 * nothing: an earlier run's NAME.cases.csv stays as it was, and no tables appear. */
TEST(eval_cli_failure_before_first_case) {
    ds_model *m = load_smol_calibrated();
    if (!m) SKIP("model not fetched (scripts/fetch-model)");
    char dir[256], path[320];
    ds_eval_config cfg = small_eval(dir, sizeof dir, "e", "cwe");
    CHECK(mkdir(dir, 0755) == 0);
    FILE *f = fopen(out_path(path, sizeof path, &cfg, "cases.csv"), "w");
    CHECK(f != NULL);
    if (f) { fputs("an earlier run\n", f); fclose(f); }
    CHECK(cmd_eval(m, &cfg) != 0);
    char *c = read_all(out_path(path, sizeof path, &cfg, "cases.csv"));
    CHECK_MSG(c && !strcmp(c, "an earlier run\n"), "cases: %s", c ? c : "(none)");
    CHECK(access(out_path(path, sizeof path, &cfg, "md"), F_OK) != 0);
    free(c);
    remove_outputs(&cfg);
    ds_model_free(m);
}

/* --first-case F runs case F of the seed and on: the case's seed (and so its material and answer)
 * is the one a run from case 0 gives it, and the tables say which cases ran. */
TEST(eval_cli_first_case) {
    ds_model *m = load_smol_calibrated();
    if (!m) SKIP("model not fetched (scripts/fetch-model)");
    char dir[256], path[320];
    ds_eval_config cfg = small_eval(dir, sizeof dir, "f", "passkey");
    cfg.first_case = 2;
    cfg.seed = 5;
    CHECK(cmd_eval(m, &cfg) == 0);
    char want[96];
    snprintf(want, sizeof want, "passkey,2,%llu,", (unsigned long long)(5 * 0x9E3779B97F4A7C15ull + 3));
    char *c = read_all(out_path(path, sizeof path, &cfg, "cases.csv")), *a = read_all(out_path(path, sizeof path, &cfg, "md"));
    CHECK_MSG(c && strstr(c, want) && !strstr(c, "passkey,0,") && !strstr(c, "passkey,1,"), "cases: %s", c ? c : "(none)");
    CHECK_MSG(a && strstr(a, "cases 1 (2..2)"), "md: %s", a ? a : "(none)");
    free(a); free(c);
    remove_outputs(&cfg);
    ds_model_free(m);
}

/* Dense against itself is exactly KL 0 and full agreement; a sparse method is scored at every
 * position and differs somewhere (KL > 0), with both perplexities finite. */
TEST(eval_cli_fidelity_core) {
    ds_model *m = load_smol_calibrated();
    if (!m) SKIP("model not fetched (scripts/fetch-model)");
    const char *text = "The library was quiet in the late afternoon. Rows of old books leaned against each "
                       "other on the shelves, and the smell of paper filled the air. A girl sat by the window, "
                       "turning pages slowly, while outside the rain tapped against the glass and the street "
                       "lamps came on one by one. She read about distant islands and the sailors who found them.";
    int32_t *toks;
    int n;
    CHECK(ds_tokenize(m, text, strlen(text), true, false, &toks, &n) == DS_OK);
    CHECK(n >= 64);
    ds_eval_setting set[2];
    char err[256];
    CHECK(ds_eval_parse_settings("dense,streaming", "1/4", set, 2, err, sizeof err) == 2);
    ds_sparse_opts base = ds_sparse_default_opts();
    ds_fidelity_acc acc[2];
    memset(acc, 0, sizeof acc);
    /* a batch of 24 makes the window span several chunks, as long windows do */
    ds_status st = ds_fidelity_window(m, toks, 64, &base, set, 2, 2, 24, acc);
    CHECK_MSG(st == DS_OK, "fidelity: %s", ds_last_error());
    CHECK(acc[0].count == 63 && acc[1].count == 63);
    CHECK(acc[0].kl == 0.0);
    CHECK(acc[0].agree == acc[0].count);
    CHECK(acc[0].nll_sparse == acc[0].nll_dense);
    CHECK_MSG(acc[1].kl > 0, "streaming KL %g", acc[1].kl);
    CHECK(isfinite(acc[1].nll_sparse) && acc[1].nll_dense == acc[0].nll_dense);
    fprintf(stderr, "    streaming@1/4 over 63 positions: mean KL %.4f, top-1 %.3f, ppl %.2f vs dense %.2f\n",
            acc[1].kl / 63, acc[1].agree / 63.0, exp(acc[1].nll_sparse / 63), exp(acc[1].nll_dense / 63));
    ds_free_tokens(toks);
    ds_model_free(m);
}
