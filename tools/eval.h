/* eval.h — the `eval` and `fidelity` commands (evaluation.md, "Retrieval" and "Fidelity").
 *
 *   eval      retrieval accuracy of each attention method x token budget over the synthetic tasks
 *             of eval_tasks.h: the material is prefilled densely once per case, every setting
 *             forks that session, reads the question through decode steps and answers greedily.
 *   fidelity  per position of long-text windows, KL(dense || sparse) of the next-token
 *             distribution, top-1 agreement and the perplexity of both.
 * Both write a markdown table to stdout and <out-dir>/<name>.{md,csv,svg}.
 *
 * The cores (ds_eval_run_case, ds_fidelity_window) take a loaded model and plain options so that
 * tests can call them directly; only the public API (dsinfer.h) is used. */
#ifndef DS_EVAL_H
#define DS_EVAL_H

#include "dsinfer.h"
#include "eval_tasks.h"

/* One attention setting under test: a method and its token budget k (a count, or a fraction of
 * the context at each step when tokens == 0). Dense carries no budget. */
typedef struct {
    ds_attn_method method;
    int tokens;          /* k as a count; 0: use frac */
    float frac;          /* k = ceil(frac * context) */
    char budget[24];     /* the budget as written ("1/16", "256"); "" for dense */
    char label[48];      /* "dense", "ds@1/16", ... */
    int group_max;       /* -1: the user's --ds-group-score; 0 sum, 1 max (method names ending -sum, -max) */
} ds_eval_setting;

#define DS_EVAL_MAX_SETTINGS 64

/* Expand "dense,ds,streaming" x "1/16,1/8" into settings: dense (and any budget equal to the
 * whole context, which is dense too) appears once. A method name may end in -max or -sum (ds-max,
 * oracle-sum: the methods that take --ds-group-score) to fix its group score for that setting, so
 * one run compares both. Budgets: "a/b", a decimal fraction <= 1, or
 * a token count > 1. Returns the count, or -1 with a message in err. */
int ds_eval_parse_settings(const char *methods, const char *budgets, ds_eval_setting *out, int cap,
                           char *err, size_t err_cap);
/* Whether the list names a method that needs a channel calibration (ds). */
bool ds_eval_methods_need_calibration(const char *methods);

/* The per-case core of `eval`: prefill c's material (chat-rendered) densely in one session of
 * exactly the needed size, then for each setting fork it, feed the question (its answer prefix,
 * e.g. "The pass key is", moved to the start of the assistant turn) one token per decode
 * step, generate up to n_predict tokens greedily (stopping at end of generation), and score.
 * base supplies r, b, stat, group, dense layers, min_context and seed; method and budget come
 * from each setting. scores[i] receives 0..DS_EVAL_SCORE_MAX; if answers is not NULL, answers[i]
 * receives the generated text (malloc'd). *n_prompt (optional) receives the prompt's tokens. */
ds_status ds_eval_run_case(const ds_model *m, const ds_eval_case *c, const ds_sparse_opts *base,
                           const ds_eval_setting *set, int n_set, int n_predict, int n_threads,
                           int *scores, char **answers, int *n_prompt);

/* Sums of the fidelity statistics of one setting. */
typedef struct {
    double kl;           /* sum over positions of KL(dense || sparse), nats */
    double nll_dense, nll_sparse;
    long agree;          /* positions whose argmax matches */
    long count;          /* positions scored */
} ds_fidelity_acc;

/* The per-window core of `fidelity`: dense logits for every position of toks[0..W), then each
 * setting's logits with the method applied at every position (sparse_prefill, the paper's
 * simulation of decode steps); positions 0..W-2 are scored against toks[j+1]. acc[i] (one per
 * setting) is added to, not reset. */
ds_status ds_fidelity_window(const ds_model *m, const int32_t *toks, int W, const ds_sparse_opts *base,
                             const ds_eval_setting *set, int n_set, int n_threads, int n_batch,
                             ds_fidelity_acc *acc);

/* What the CLI passes on (tools/dsinfer.c parses the flags). */
typedef struct {
    const char *model_path;   /* for the report */
    const char *tasks, *methods, *budgets;
    const char *out_dir, *name;
    const char *text_path;    /* fidelity: the text */
    int n_ctx;                /* eval: total context per case (prompt + answer) */
    int cases, depth;         /* depth -1: drawn per case from the seed */
    int first_case;           /* eval: cases first_case .. first_case + cases - 1 of the seed (extends
                               * an earlier run of the same seed without repeating its cases) */
    int n_predict;            /* 0: a per-task default */
    int window, chunks;       /* fidelity */
    int n_threads, n_batch, verbose;
    uint64_t seed;
    ds_sparse_opts sp;        /* base options (--ds-*) */
} ds_eval_config;

int cmd_eval(const ds_model *m, const ds_eval_config *cfg);
int cmd_fidelity(const ds_model *m, const ds_eval_config *cfg);

/* Whether dir is a folder this process can write into, checked before long work that ends by
 * writing there: 0, or an errno value (ENOTDIR where it exists but is not a folder). */
int ds_dir_writable(const char *dir);

#endif
