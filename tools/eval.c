/* eval.c — `dsinfer eval` (retrieval accuracy per method x budget) and `dsinfer fidelity`
 * (KL / top-1 agreement / perplexity of sparse vs dense logits). Contract in eval.h; the
 * protocols are in shared/design/evaluation.md.
 *
 * Why the retrieval loop looks the way it does: prefill always runs dense, so if the question
 * were part of the prefill, dense attention would already have read the needle into the last
 * position's state and every method would "pass". The question therefore goes through the decode
 * path one token at a time, in a fork of the densely prefilled material, so all methods start
 * from bit-identical caches and only differ in what their decode steps attend to. */
#include "eval.h"
#include "plot.h"
#include "version.h"   /* DS_BUILD_COMMIT, written by the Makefile */

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int fail(const char *what, ds_status st) {
    fprintf(stderr, "dsinfer: %s: %s (%s)\n", what, ds_last_error(), ds_status_name(st));
    return 1;
}

/* Next comma-separated item of *p into buf (trimmed of spaces); 0 at the end of the list. */
static int next_item(const char **p, char *buf, size_t cap) {
    while (**p == ',' || **p == ' ') (*p)++;
    if (!**p) return 0;
    size_t n = 0;
    for (; **p && **p != ','; (*p)++)
        if (**p != ' ' && n + 1 < cap) buf[n++] = **p;
    buf[n] = 0;
    return 1;
}

/* ---------------------------------------------------------------- settings */

/* "a/b" or a decimal <= 1: a fraction of the context; an integer > 1: a token count. */
static int parse_budget(const char *s, int *tokens, float *frac) {
    char *end;
    const char *slash = strchr(s, '/');
    if (slash) {
        long a = strtol(s, &end, 10);
        if (end != slash || a <= 0) return -1;
        long b = strtol(slash + 1, &end, 10);
        if (*end || b <= 0 || a > b) return -1;
        *tokens = 0; *frac = (float)a / (float)b;
        return 0;
    }
    double x = strtod(s, &end);
    if (end == s || *end || !(x > 0)) return -1;
    if (x <= 1) { *tokens = 0; *frac = (float)x; return 0; }
    if (x != floor(x) || x > (1 << 24)) return -1;
    *tokens = (int)x; *frac = 0;
    return 0;
}

static int add_setting(ds_eval_setting *out, int n, int cap, ds_attn_method mth, int gmax, int tokens, float frac,
                       const char *budget) {
    for (int i = 0; i < n; i++)   /* a repeated method/budget would only duplicate a row */
        if (out[i].method == mth && out[i].group_max == gmax && !strcmp(out[i].budget, budget)) return n;
    if (n >= cap) return -1;
    ds_eval_setting *s = &out[n];
    memset(s, 0, sizeof *s);
    s->method = mth; s->group_max = gmax; s->tokens = tokens; s->frac = frac;
    snprintf(s->budget, sizeof s->budget, "%s", budget);
    const char *sfx = gmax < 0 ? "" : gmax ? "-max" : "-sum";
    if (*budget) snprintf(s->label, sizeof s->label, "%s%s@%s", ds_attn_method_name(mth), sfx, budget);
    else snprintf(s->label, sizeof s->label, "%s", ds_attn_method_name(mth));
    return n + 1;
}

/* "ds-max" -> ds, 1; "oracle-sum" -> oracle, 0; "ds" -> ds, -1 (the user's --ds-group-score).
 * Only the methods that take a group score (ds, random, oracle, sparq) take the suffix. */
static int parse_method(const char *name, ds_attn_method *mth, int *gmax) {
    char base[64];
    size_t len = strlen(name);
    *gmax = -1;
    if (!ds_attn_method_parse(name, mth)) return 0;
    if (len < 5 || len >= sizeof base || (strcmp(name + len - 4, "-max") && strcmp(name + len - 4, "-sum"))) return -1;
    memcpy(base, name, len - 4);
    base[len - 4] = 0;
    if (ds_attn_method_parse(base, mth)) return -1;
    if (!ds_attn_method_topk(*mth)) return -1;
    *gmax = name[len - 3] == 'm';
    return 0;
}

int ds_eval_parse_settings(const char *methods, const char *budgets, ds_eval_setting *out, int cap,
                           char *err, size_t err_cap) {
    char mname[64], bname[64];
    int n = 0;
    for (const char *pm = methods; next_item(&pm, mname, sizeof mname);) {
        ds_attn_method mth;
        int gmax;
        if (parse_method(mname, &mth, &gmax)) {
            snprintf(err, err_cap, "--methods: unknown method '%s' (%s; ds, random, oracle and sparq also as "
                     "NAME-max or NAME-sum for a group score)", mname, ds_attn_method_list());
            return -1;
        }
        if (mth == DS_ATTN_DENSE) { n = add_setting(out, n, cap, mth, -1, 0, 0, ""); if (n < 0) goto full; continue; }
        int nb = 0;
        for (const char *pb = budgets; next_item(&pb, bname, sizeof bname); nb++) {
            int tokens; float frac;
            if (parse_budget(bname, &tokens, &frac)) {
                snprintf(err, err_cap, "--budgets: '%s' is not a fraction (1/16, 0.0625) or a token count (256)", bname);
                return -1;
            }
            /* the whole context is dense attention: one dense row stands for all of them */
            n = tokens == 0 && frac >= 1 ? add_setting(out, n, cap, DS_ATTN_DENSE, -1, 0, 0, "")
                                         : add_setting(out, n, cap, mth, gmax, tokens, frac, bname);
            if (n < 0) goto full;
        }
        if (!nb) { snprintf(err, err_cap, "--budgets: empty list"); return -1; }
    }
    if (!n) snprintf(err, err_cap, "--methods: empty list");
    return n ? n : -1;
full:
    snprintf(err, err_cap, "too many method x budget settings (at most %d)", cap);
    return -1;
}

bool ds_eval_methods_need_calibration(const char *methods) {
    char name[64];
    for (const char *p = methods; next_item(&p, name, sizeof name);)
        if (!strcmp(name, "ds") || !strncmp(name, "ds-", 3)) return true;
    return false;
}

/* Sparse options of one setting on top of the user's --ds-* options. Dense keeps a valid
 * fraction so option validation passes; it never selects. */
static ds_sparse_opts setting_opts(const ds_sparse_opts *base, const ds_eval_setting *s, int sparse_prefill) {
    ds_sparse_opts o = *base;
    o.method = s->method;
    if (s->group_max >= 0) o.group_max = s->group_max;
    o.tokens = s->tokens;
    o.tokens_frac = s->tokens ? base->tokens_frac : s->frac > 0 ? s->frac : 1.0f;
    o.sparse_prefill = sparse_prefill && s->method != DS_ATTN_DENSE;
    if (o.min_context < 0) o.min_context = 0;
    return o;
}

/* ---------------------------------------------------------------- retrieval core */

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

/* Greedy continuation from s's current logits: up to n tokens, stopping at end of generation.
 * Returns the text (malloc'd) or NULL with *st set. */
static char *generate_greedy(const ds_model *m, ds_session *s, int n, ds_status *st) {
    int V = ds_model_get_info(m)->n_vocab;
    size_t cap = 256, len = 0;
    char *text = malloc(cap), piece[256];
    *st = text ? DS_OK : DS_ERR_OOM;
    if (!text) return NULL;
    text[0] = 0;
    for (int gen = 0; gen < n; gen++) {
        int32_t tok = argmax(ds_session_logits(s), V);
        if (ds_token_is_eog(m, tok)) break;
        int k = ds_token_to_piece(m, tok, false, piece, sizeof piece);
        if (k > 0) {
            if (len + (size_t)k + 1 > cap) {
                while (len + (size_t)k + 1 > cap) cap *= 2;
                char *t = realloc(text, cap);
                if (!t) { free(text); *st = DS_ERR_OOM; return NULL; }
                text = t;
            }
            memcpy(text + len, piece, (size_t)k);
            text[len += (size_t)k] = 0;
        }
        if (gen + 1 == n) break;   /* the last token's successor is never needed */
        if ((*st = ds_session_eval(s, &tok, 1, NULL)) != DS_OK) { free(text); return NULL; }
    }
    return text;
}

/* Where the question's answer prefix starts ("The pass key is", "Answer: the variables ... are:"):
 * from "Answer:", else the text after the last "? " unless it is a finished sentence (lines'
 * "I need the number."); strlen(q) when there is none. */
static size_t answer_prefix_at(const char *q) {
    const char *a = strstr(q, "Answer:"), *qm = strrchr(q, '?');
    size_t n = strlen(q);
    if (a) return (size_t)(a - q);
    if (qm && qm[1] == ' ' && qm[2] && n && !strchr(".?!", q[n - 1])) return (size_t)(qm + 2 - q);
    return n;
}

/* ds_eval_render_chat's split, with the answer prefix moved from the end of the user turn to the
 * start of the assistant turn, as RULER does for chat models. Left in the user turn, SmolLM2-135M
 * echoes it instead of answering: dense passkey at 1K tokens answered "The pass key is the pass
 * key is ..." in 2 of 2 cases, and the key itself in 2 of 2 once the prefix opened its reply. The
 * moved text stays in the decoded part, so the prefill still sees no question token. */
static char *render_case(const ds_model *m, const ds_eval_case *c, char **qpart) {
    char *tail = NULL, *prefix = ds_eval_render_chat(m, c, &tail);
    *qpart = tail;
    if (!prefix) return NULL;
    const char *q = c->question;
    size_t lq = strlen(q), at = answer_prefix_at(q), ask = at;
    if (at == lq || strncmp(tail, q, lq)) return prefix;   /* nothing to move / unexpected layout */
    while (ask && q[ask - 1] == ' ') ask--;
    size_t lt = strlen(tail + lq);
    char *nq = malloc(ask + lt + (lq - at) + 1);
    if (!nq) { free(prefix); free(tail); *qpart = NULL; return NULL; }
    memcpy(nq, q, ask);
    memcpy(nq + ask, tail + lq, lt);
    memcpy(nq + ask + lt, q + at, lq - at + 1);
    free(tail);
    *qpart = nq;
    return prefix;
}

ds_status ds_eval_run_case(const ds_model *m, const ds_eval_case *c, const ds_sparse_opts *base,
                           const ds_eval_setting *set, int n_set, int n_predict, int n_threads,
                           int *scores, char **answers, int *n_prompt) {
    char *qpart = NULL, *prefix = render_case(m, c, &qpart);
    if (!prefix) return DS_ERR_UNSUPPORTED;
    int32_t *tp = NULL, *tq = NULL;
    int np = 0, nq = 0;
    ds_session *dense = NULL;
    ds_status st = ds_tokenize(m, prefix, strlen(prefix), true, true, &tp, &np);
    if (!st) st = ds_tokenize(m, qpart, strlen(qpart), false, true, &tq, &nq);
    free(prefix);
    free(qpart);
    if (n_prompt) *n_prompt = np + nq;
    if (answers) for (int i = 0; i < n_set; i++) answers[i] = NULL;
    if (!st) {
        ds_session_opts so = ds_session_default_opts();
        so.n_ctx = np + nq + (n_predict > 0 ? n_predict : 1);   /* exactly what the case can use */
        so.n_threads = n_threads;
        ds_eval_setting dset = { .method = DS_ATTN_DENSE };
        so.sparse = setting_opts(base, &dset, 0);
        /* H2O's state is the attention every prompt row paid to each token, which the forks
         * cannot rebuild from the cache: the dense parent keeps those sums only when an h2o
         * setting will need them (an extra q.K pass over the prefill) */
        for (int i = 0; i < n_set; i++) so.sparse.track_h2o |= set[i].method == DS_ATTN_H2O;
        st = ds_session_new(m, &so, &dense);
    }
    if (!st) st = ds_session_eval(dense, tp, np, NULL);
    for (int i = 0; !st && i < n_set; i++) {
        ds_sparse_opts o = setting_opts(base, &set[i], 0);
        ds_session *s;
        if ((st = ds_session_fork(dense, &o, &s)) != DS_OK) break;
        /* the question, one decode step per token: the method under test must find the answer */
        for (int j = 0; !st && j < nq; j++) st = ds_session_eval(s, &tq[j], 1, NULL);
        char *text = st ? NULL : generate_greedy(m, s, n_predict, &st);
        ds_session_free(s);
        if (st) break;
        scores[i] = ds_eval_score(c->task, c, text);
        if (answers) answers[i] = text; else free(text);
    }
    if (st && answers)
        for (int i = 0; i < n_set; i++) { free(answers[i]); answers[i] = NULL; }
    ds_session_free(dense);
    ds_free_tokens(tp);
    ds_free_tokens(tq);
    return st;
}

/* ---------------------------------------------------------------- fidelity core */

/* log-sum-exp of a logit row (double accumulation) and its argmax. */
static double row_lse(const float *l, int V, int32_t *amax) {
    int32_t a = argmax(l, V);
    float mx = l[a];
    double sum = 0;
    for (int i = 0; i < V; i++) sum += expf(l[i] - mx);
    *amax = a;
    return mx + log(sum);
}

/* sum_i p_i * l_i. The dense reference term and every sparse cross term are computed by this
 * same loop over the same stored p, so identical logits give a KL of exactly 0. */
static double dot_pl(const float *p, const float *l, int V) {
    double s = 0;
    for (int i = 0; i < V; i++) s += (double)p[i] * (double)l[i];
    return s;
}

ds_status ds_fidelity_window(const ds_model *m, const int32_t *toks, int W, const ds_sparse_opts *base,
                             const ds_eval_setting *set, int n_set, int n_threads, int n_batch,
                             ds_fidelity_acc *acc) {
    const int V = ds_model_get_info(m)->n_vocab;
    const int chunk = n_batch > 0 ? n_batch : 512;
    if (W < 2) return DS_ERR_ARG;
    /* Dense rows are kept for the whole window (as probabilities); each setting then streams its
     * logits chunk by chunk, so memory is W x V floats once, not per setting. */
    float *pd = malloc(sizeof(float) * (size_t)W * V), *buf = malloc(sizeof(float) * (size_t)chunk * V);
    double *lse_d = malloc(sizeof(double) * (size_t)W), *pl_d = malloc(sizeof(double) * (size_t)W);
    double *nll_d = malloc(sizeof(double) * (size_t)W);
    int32_t *am_d = malloc(sizeof(int32_t) * (size_t)W);
    ds_session *s = NULL;
    ds_status st = pd && buf && lse_d && pl_d && nll_d && am_d ? DS_OK : DS_ERR_OOM;
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = W;
    so.n_threads = n_threads;
    so.n_batch = n_batch;
    ds_eval_setting dset = { .method = DS_ATTN_DENSE };
    so.sparse = setting_opts(base, &dset, 1);
    if (!st) st = ds_session_new(m, &so, &s);
    for (int p = 0; !st && p < W; p += chunk)
        st = ds_session_eval(s, toks + p, W - p < chunk ? W - p : chunk, pd + (size_t)p * V);
    ds_session_free(s);
    s = NULL;
    for (int j = 0; !st && j < W - 1; j++) {
        float *row = pd + (size_t)j * V;
        lse_d[j] = row_lse(row, V, &am_d[j]);
        nll_d[j] = lse_d[j] - row[toks[j + 1]];
        /* turn the row into probabilities in place; pl_d uses the stored floats (see dot_pl) */
        float *tmp = buf;
        for (int i = 0; i < V; i++) { tmp[i] = row[i]; row[i] = expf((float)(tmp[i] - lse_d[j])); }
        pl_d[j] = dot_pl(row, tmp, V);
    }
    for (int k = 0; !st && k < n_set; k++) {
        so.sparse = setting_opts(base, &set[k], 1);
        if ((st = ds_session_new(m, &so, &s)) != DS_OK) break;
        for (int p = 0; !st && p < W; p += chunk) {
            int n = W - p < chunk ? W - p : chunk;
            if ((st = ds_session_eval(s, toks + p, n, buf)) != DS_OK) break;
            for (int r = 0; r < n && p + r < W - 1; r++) {
                const int j = p + r;
                const float *ls = buf + (size_t)r * V;
                int32_t am;
                double lse = row_lse(ls, V, &am);
                /* KL(d||s) = sum p_d (log p_d - log p_s) = (pl_d - lse_d) - (sum p_d l_s - lse_s) */
                acc[k].kl += (pl_d[j] - lse_d[j]) - (dot_pl(pd + (size_t)j * V, ls, V) - lse);
                acc[k].agree += am == am_d[j];
                acc[k].nll_dense += nll_d[j];
                acc[k].nll_sparse += lse - ls[toks[j + 1]];
                acc[k].count++;
            }
        }
        ds_session_free(s);
        s = NULL;
    }
    free(pd); free(buf); free(lse_d); free(pl_d); free(nll_d); free(am_d);
    return st;
}

/* ---------------------------------------------------------------- report helpers */

/* mkdir -p */
static int make_dirs(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) && errno != EEXIST) return -1;
            if (!(*p = c)) break;
        }
    }
    return 0;
}

int ds_dir_writable(const char *dir) {
    struct stat sb;
    if (stat(dir, &sb) != 0) return errno;
    if (!S_ISDIR(sb.st_mode)) return ENOTDIR;
    return access(dir, W_OK) != 0 ? errno : 0;
}

/* The results folder, made if missing and checked writable before any work, so that a run of
 * minutes to hours cannot end in "cannot write". Returns 0, or 1 after a message. */
static int out_dir_ready(const char *dir) {
    if (make_dirs(dir)) { fprintf(stderr, "dsinfer: cannot create %s: %s\n", dir, strerror(errno)); return 1; }
    const int e = ds_dir_writable(dir);
    if (e == ENOTDIR) { fprintf(stderr, "dsinfer: %s is not a folder\n", dir); return 1; }
    if (e) { fprintf(stderr, "dsinfer: cannot write into %s: %s\n", dir, strerror(e)); return 1; }
    return 0;
}

static void model_base(const char *path, char *out, size_t cap) {
    const char *b = path && strrchr(path, '/') ? strrchr(path, '/') + 1 : path ? path : "model";
    snprintf(out, cap, "%s", b);
    size_t n = strlen(out);
    if (n > 5 && !strcmp(out + n - 5, ".gguf")) out[n - 5] = 0;
}

/* This process's command line, to record how a result file was made. */
static void command_line(char *out, size_t cap) {
    out[0] = 0;
    FILE *f = fopen("/proc/self/cmdline", "rb");
    if (!f) return;
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++) if (!out[i]) out[i] = ' ';
    while (n && out[n - 1] == ' ') n--;
    out[n] = 0;
}

/* The metadata line shared by both reports: everything needed to reproduce the numbers. */
/* With per-layer label widths: the list DS's sessions use ("L0,L1,..."), for the report. */
static char g_widths[1024];

static void label_widths(const ds_model *m, const ds_eval_config *cfg) {
    g_widths[0] = 0;
    int any = cfg->sp.channel_alloc;
    for (int l = 0; l < DS_MAX_LAYER_CHANNELS; l++) any |= cfg->sp.layer_channels[l] > 0;
    if (!any) return;
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = 64;
    so.n_threads = 1;
    so.sparse = cfg->sp;
    so.sparse.method = DS_ATTN_DS;
    ds_session *s = NULL;
    if (ds_session_new(m, &so, &s) != DS_OK) return;   /* the run itself reports the error */
    for (int l = 0, n = 0; l < ds_model_get_info(m)->n_layer && n >= 0 && n < (int)sizeof g_widths - 8; l++)
        n += snprintf(g_widths + n, sizeof g_widths - (size_t)n, "%s%d", l ? "," : "", ds_session_label_channels(s, l));
    ds_session_free(s);
}

static void describe(const ds_model *m, const ds_eval_config *cfg, const char *what, char *out, size_t cap) {
    const ds_model_info *info = ds_model_get_info(m);
    const ds_sparse_opts *o = &cfg->sp;
    int r = o->channels ? o->channels : ds_sparse_default_channels(info->head_dim, o->label_bits ? o->label_bits : 4);
    char dl[256] = "none", date[64], mb[256], rs[1200];
    if (g_widths[0])
        snprintf(rs, sizeof rs, "%d, per layer %s%s", r, g_widths,
                 o->channel_alloc ? " (--ds-channel-alloc: by the calibration's curves)" : "");
    else
        snprintf(rs, sizeof rs, "%d", r);
    for (int i = 0, n = 0; i < o->n_dense_layers; i++)
        n += snprintf(dl + n, sizeof dl - (size_t)n, "%s%d", i ? "," : "", o->dense_layers[i]);
    time_t t = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&t));
    model_base(cfg->model_path, mb, sizeof mb);
    char rec[96];
    if (o->recent == DS_RECENT_AUTO) snprintf(rec, sizeof rec, "min(%d, k/8) (ds, random; the default)", DS_RECENT_DEFAULT);
    else snprintf(rec, sizeof rec, "%d (ds, random, oracle, sparq)", o->recent);
    snprintf(out, cap, "model %s (%s), %s, seed %llu, k %s, recent %s, r %s, b %d, stat %s, labels %s, group %s, dense layers %s, "
             "min context %d, threads %d, date %s, binary built at commit %s", mb, info->name[0] ? info->name : info->arch, what,
             (unsigned long long)cfg->seed, cfg->budgets, rec, rs, o->label_bits,
             o->stat >= 0 ? ds_sparse_stat_name(o->stat) : "qk",
             o->label_norm > 0 ? "normalised" : o->label_norm == 0 ? "raw" : "normalised if the calibration has moments",
             o->per_head ? "per-head"
             : o->group_max == DS_GROUP_AUTO ? "shared, scored by the largest head for ds and random, summed for oracle and sparq (the default)"
             : o->group_max ? "shared, scored by the largest head (--ds-group-score max)"
                            : "shared, summed (--ds-group-score sum)", dl, o->min_context > 0 ? o->min_context : 0,
             cfg->n_threads > 0 ? cfg->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN),
             date, DS_BUILD_COMMIT);
}

static FILE *open_out(const ds_eval_config *cfg, const char *name, const char *ext, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s.%s", cfg->out_dir, name, ext);
    FILE *f = fopen(path, "w");
    if (!f) fprintf(stderr, "dsinfer: cannot write %s: %s\n", path, strerror(errno));
    return f;
}

/* ---------------------------------------------------------------- eval command */

/* Tokens each task's answer needs, with slack for a short preamble ("The pass key is ..."); a
 * too-short budget would cut numbers and uuids and score a right answer as wrong. */
static const int k_default_gen[DS_TASK_COUNT] = {
    [DS_TASK_LINES] = 32, [DS_TASK_PASSKEY] = 24, [DS_TASK_NIAH] = 32,
    [DS_TASK_NIAH_MULTIKEY] = 64, [DS_TASK_VT] = 48, [DS_TASK_CWE] = 96,
};

/* Prompt tokens of the chat-rendered case, the same count the run will see. */
static ds_status prompt_tokens(const ds_model *m, const ds_eval_case *c, int *n) {
    char *q = NULL, *p = render_case(m, c, &q);
    if (!p) return DS_ERR_UNSUPPORTED;
    int32_t *t;
    int a = 0, b = 0;
    ds_status st = ds_tokenize(m, p, strlen(p), true, true, &t, &a);
    if (!st) { ds_free_tokens(t); st = ds_tokenize(m, q, strlen(q), false, true, &t, &b); }
    if (!st) ds_free_tokens(t);
    free(p); free(q);
    *n = a + b;
    return st;
}

static void csv_text(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"') fputc('"', f);          /* CSV doubles quotes inside a quoted field */
        fputc(*s == '\n' || *s == '\r' ? ' ' : *s, f);
    }
    fputc('"', f);
}

static void eval_table(FILE *f, const ds_eval_setting *set, int n_set, const ds_task *tasks, int n_task,
                       const double *sum, const int *cnt) {
    fprintf(f, "| method@budget |");
    for (int t = 0; t < n_task; t++) fprintf(f, " %s |", ds_task_name(tasks[t]));
    fprintf(f, "\n|---|");
    for (int t = 0; t < n_task; t++) fprintf(f, "---|");
    fprintf(f, "\n");
    for (int i = 0; i < n_set; i++) {
        fprintf(f, "| %s |", set[i].label);
        for (int t = 0; t < n_task; t++) {
            int n = cnt[i * n_task + t];
            if (n) fprintf(f, " %.2f (%d) |", sum[i * n_task + t] / n / DS_EVAL_SCORE_MAX, n);
            else fprintf(f, " - |");
        }
        fprintf(f, "\n");
    }
}

/* The run's .md, .csv and .svg from the sums so far: written after every case, so a run that is
 * stopped (or cut by a time limit) keeps tables of the cases it finished; `done` of `total`
 * (task, case) pairs are in them, and the last write (done == total) also prints the table. */
static void eval_write_tables(const ds_model *m, const ds_eval_config *cfg, const char *name, const char *mb,
                              const ds_eval_setting *set, int n_set, const ds_task *tasks, int n_task,
                              const double *sum, const int *cnt, int done, int total, double t_start) {
    const int final = done == total;
    char depth[32], what[256], header[4096], cmdline[2048], path[1200];
    if (cfg->depth >= 0) snprintf(depth, sizeof depth, "%d%%", cfg->depth); else snprintf(depth, sizeof depth, "random");
    char range[48] = "";
    if (cfg->first_case > 0) snprintf(range, sizeof range, " (%d..%d)", cfg->first_case, cfg->first_case + cfg->cases - 1);
    snprintf(what, sizeof what, "ctx %d, cases %d%s, depth %s, answer tokens %s", cfg->n_ctx, cfg->cases, range, depth,
             cfg->n_predict > 0 ? "fixed" : "per task");
    describe(m, cfg, what, header, sizeof header);
    command_line(cmdline, sizeof cmdline);
    if (final) {
        printf("%s\n\n", header);
        eval_table(stdout, set, n_set, tasks, n_task, sum, cnt);
    }
    FILE *f = open_out(cfg, name, "md", path, sizeof path);
    if (f) {
        fprintf(f, "# Retrieval accuracy: %s\n\n- %s\n- command: `%s`\n- cells: mean score (0..1), (cases); "
                "per-case answers in %s.cases.csv; ", name, header, cmdline, name);
        if (done < total) fprintf(f, "partial: %d of %d task cases done after %.0f s\n\n", done, total, now_s() - t_start);
        else fprintf(f, "took %.0f s\n\n", now_s() - t_start);
        eval_table(f, set, n_set, tasks, n_task, sum, cnt);
        fclose(f);
    }
    if ((f = open_out(cfg, name, "csv", path, sizeof path))) {
        fprintf(f, "# %s\nsetting,method,budget,task,cases,accuracy\n", header);
        for (int i = 0; i < n_set; i++)
            for (int t = 0; t < n_task; t++) {
                int n = cnt[i * n_task + t];
                fprintf(f, "%s,%s,%s,%s,%d,%.4f\n", set[i].label, ds_attn_method_name(set[i].method), set[i].budget,
                        ds_task_name(tasks[t]), n, n ? sum[i * n_task + t] / n / DS_EVAL_SCORE_MAX : NAN);
            }
        fclose(f);
    }
    /* bars: categories = tasks, series = settings */
    double *y = malloc(sizeof(double) * (size_t)n_set * n_task);
    const char *tn[DS_TASK_COUNT], *sn[DS_EVAL_MAX_SETTINGS];
    for (int t = 0; t < n_task; t++) tn[t] = ds_task_name(tasks[t]);
    for (int i = 0; i < n_set; i++) sn[i] = set[i].label;
    if (y) {
        for (int i = 0; i < n_set * n_task; i++) y[i] = cnt[i] ? sum[i] / cnt[i] / DS_EVAL_SCORE_MAX : NAN;
        char title[512];
        if (done < total) snprintf(title, sizeof title, "Retrieval accuracy, %s, ctx %d, %d of %d cases (partial)", mb,
                                   cfg->n_ctx, done, total);
        else snprintf(title, sizeof title, "Retrieval accuracy, %s, ctx %d, %d cases", mb, cfg->n_ctx, cfg->cases);
        snprintf(path, sizeof path, "%s/%s.svg", cfg->out_dir, name);
        ds_status st = ds_plot_bars(path, title, "task", "accuracy", n_task, tn, n_set, sn, y);
        if (st) fprintf(stderr, "dsinfer: plot %s: %s\n", path, ds_status_name(st));
        free(y);
    }
    if (final) fprintf(stderr, "wrote %s/%s.{md,csv,svg,cases.csv}\n", cfg->out_dir, name);
}

int cmd_eval(const ds_model *m, const ds_eval_config *cfg0) {
    ds_eval_config cfg = *cfg0;
    if (!cfg.tasks) cfg.tasks = "lines,passkey,niah,niah-multikey,vt,cwe";
    if (!cfg.methods) cfg.methods = ds_attn_method_list();
    if (!cfg.budgets) cfg.budgets = "1/16";
    if (!cfg.out_dir) cfg.out_dir = "eval/results";
    if (cfg.cases <= 0) cfg.cases = 50;
    if (cfg.first_case < 0) cfg.first_case = 0;
    if (cfg.n_ctx <= 0) cfg.n_ctx = 4096;
    ds_eval_setting set[DS_EVAL_MAX_SETTINGS];
    char err[256];
    int n_set = ds_eval_parse_settings(cfg.methods, cfg.budgets, set, DS_EVAL_MAX_SETTINGS, err, sizeof err);
    label_widths(m, &cfg);
    if (n_set < 0) { fprintf(stderr, "dsinfer: %s\n", err); return 1; }
    ds_task tasks[DS_TASK_COUNT];
    int n_task = 0;
    char tname[64];
    for (const char *p = cfg.tasks; next_item(&p, tname, sizeof tname);) {
        ds_task t;
        if (ds_task_parse(tname, &t)) {
            fprintf(stderr, "dsinfer: --task: unknown task '%s' (lines, passkey, niah, niah-multikey, vt, cwe)\n", tname);
            return 1;
        }
        int dup = 0;
        for (int i = 0; i < n_task; i++) dup |= tasks[i] == t;
        if (!dup) tasks[n_task++] = t;
    }
    if (!n_task) { fprintf(stderr, "dsinfer: --task: empty list\n"); return 1; }
    char mb[256], name[512], path[1200];
    model_base(cfg.model_path, mb, sizeof mb);
    if (cfg.name) snprintf(name, sizeof name, "%s", cfg.name);
    else {   /* a subset of the tasks is named in the file, so runs of other tasks do not overwrite it */
        int len = snprintf(name, sizeof name, "retrieval-%s-%d", mb, cfg.n_ctx);
        for (int t = 0; t < n_task && n_task < DS_TASK_COUNT && len > 0 && len < (int)sizeof name; t++)
            len += snprintf(name + len, sizeof name - (size_t)len, "%s%s", t ? "+" : "-", ds_task_name(tasks[t]));
    }
    if (out_dir_ready(cfg.out_dir)) return 1;
    /* NAME.cases.csv is opened (and an earlier run's file of that name replaced) only when the
     * first case is done: a run that fails before then leaves the folder as it was */
    FILE *fc = NULL;

    double *sum = calloc((size_t)n_set * n_task, sizeof *sum);
    int *cnt = calloc((size_t)n_set * n_task, sizeof *cnt), *scores = malloc(sizeof(int) * (size_t)n_set);
    char **answers = calloc((size_t)n_set, sizeof *answers);
    if (!sum || !cnt || !scores || !answers) { fprintf(stderr, "dsinfer: out of memory\n"); return 1; }
    double t_start = now_s();
    int rc = 0, done = 0;
    for (int ti = 0; ti < n_task && !rc; ti++) {
        const ds_task task = tasks[ti];
        const int n_gen = cfg.n_predict > 0 ? cfg.n_predict : k_default_gen[task];
        for (int ci = cfg.first_case; ci < cfg.first_case + cfg.cases && !rc; ci++) {
            double t0 = now_s();
            /* one seed per (run seed, case): the same case for every method and every run */
            uint64_t cseed = cfg.seed * 0x9E3779B97F4A7C15ull + (uint64_t)ci + 1;
            /* size the material so that prompt + answer fit --ctx; the chat template's tokens
             * and the sizer's tolerance are measured, then corrected in (rarely) a second pass */
            ds_eval_case c;
            int target = cfg.n_ctx - n_gen - 40, np = 0;
            ds_status st;
            for (int tries = 0;; tries++) {
                if ((st = ds_eval_make_case(m, task, cseed, target, cfg.depth, &c)) != DS_OK) {
                    fprintf(stderr, "dsinfer: cannot make a %s case of %d tokens (%s): is --ctx %d too small?\n",
                            ds_task_name(task), target, ds_status_name(st), cfg.n_ctx);
                    break;
                }
                if ((st = prompt_tokens(m, &c, &np)) != DS_OK || np + n_gen <= cfg.n_ctx || tries == 3) break;
                target -= np + n_gen - cfg.n_ctx + 4;
                ds_eval_case_free(&c);
            }
            if (st && !c.material) { rc = 1; break; }
            if (!st) st = ds_eval_run_case(m, &c, &cfg.sp, set, n_set, n_gen, cfg.n_threads, scores, answers, &np);
            if (st) { rc = fail(ds_task_name(task), st); ds_eval_case_free(&c); break; }
            if (!fc) {
                if (!(fc = open_out(&cfg, name, "cases.csv", path, sizeof path))) {
                    for (int i = 0; i < n_set; i++) { free(answers[i]); answers[i] = NULL; }
                    rc = 1;
                    ds_eval_case_free(&c);
                    break;
                }
                fprintf(fc, "task,case,seed,depth,prompt_tokens,setting,score,expected,answer\n");
            }
            for (int i = 0; i < n_set; i++) {
                sum[i * n_task + ti] += scores[i];
                cnt[i * n_task + ti]++;
                fprintf(fc, "%s,%d,%llu,%d,%d,%s,%d,", ds_task_name(task), ci, (unsigned long long)cseed,
                        c.depth_percent, np, set[i].label, scores[i]);
                csv_text(fc, c.answer);
                fputc(',', fc);
                csv_text(fc, answers[i]);
                fputc('\n', fc);
                if (cfg.verbose) fprintf(stderr, "    %-16s %4d  expected %s | %s\n", set[i].label, scores[i], c.answer, answers[i]);
                free(answers[i]);
                answers[i] = NULL;
            }
            fflush(fc);
            fprintf(stderr, "[%s %d/%d, %d tokens, depth %d, %.1f s]", ds_task_name(task), ci - cfg.first_case + 1, cfg.cases, np,
                    c.depth_percent, now_s() - t0);
            for (int i = 0; i < n_set; i++)
                fprintf(stderr, " %s %.2f", set[i].label, sum[i * n_task + ti] / cnt[i * n_task + ti] / DS_EVAL_SCORE_MAX);
            fprintf(stderr, "\n");
            ds_eval_case_free(&c);
            eval_write_tables(m, &cfg, name, mb, set, n_set, tasks, n_task, sum, cnt, ++done, n_task * cfg.cases,
                              t_start);
        }
    }
    if (fc) fclose(fc);
    free(sum); free(cnt); free(scores); free(answers);
    return rc;
}

/* ---------------------------------------------------------------- fidelity command */

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    long n = f && !fseek(f, 0, SEEK_END) ? ftell(f) : -1;
    char *buf = n >= 0 && !fseek(f, 0, SEEK_SET) ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (f) fclose(f);
    if (buf) { buf[n] = 0; *len = (size_t)n; }
    return buf;
}

static double budget_x(const ds_eval_setting *s, int W) { return s->tokens ? (double)s->tokens / W : s->frac; }

static void fid_table(FILE *f, const ds_eval_setting *set, int n_set, const ds_fidelity_acc *acc) {
    fprintf(f, "| method@budget | mean KL(dense‖sparse) (nats) | top-1 agreement | ppl dense | ppl sparse | positions |\n");
    fprintf(f, "|---|---|---|---|---|---|\n");
    for (int i = 0; i < n_set; i++) {
        double n = acc[i].count ? (double)acc[i].count : NAN;
        fprintf(f, "| %s | %.5f | %.4f | %.4f | %.4f | %ld |\n", set[i].label, acc[i].kl / n, acc[i].agree / n,
                exp(acc[i].nll_dense / n), exp(acc[i].nll_sparse / n), acc[i].count);
    }
}

int cmd_fidelity(const ds_model *m, const ds_eval_config *cfg0) {
    ds_eval_config cfg = *cfg0;
    if (!cfg.text_path) { fprintf(stderr, "dsinfer: fidelity needs a text: -f FILE\n"); return 1; }
    if (!cfg.methods) cfg.methods = "ds,oracle,random,streaming,sparq,quest,h2o";
    if (!cfg.budgets) cfg.budgets = "1/32,1/16,1/8";
    if (!cfg.out_dir) cfg.out_dir = "eval/results";
    const int W = cfg.window > 0 ? cfg.window : 2048;
    int n_win = cfg.chunks > 0 ? cfg.chunks : 4;
    ds_eval_setting set[DS_EVAL_MAX_SETTINGS];
    char err[256];
    int n_set = ds_eval_parse_settings(cfg.methods, cfg.budgets, set, DS_EVAL_MAX_SETTINGS, err, sizeof err);
    label_widths(m, &cfg);
    if (n_set < 0) { fprintf(stderr, "dsinfer: %s\n", err); return 1; }
    if (out_dir_ready(cfg.out_dir)) return 1;
    size_t len;
    char *text = slurp(cfg.text_path, &len);
    if (!text) { fprintf(stderr, "dsinfer: cannot read %s: %s\n", cfg.text_path, strerror(errno)); return 1; }
    char sha[65];
    ds_sha256_hex(text, len, sha);
    /* tokenize only what the windows need (~4 bytes per token in prose; 10 is generous), then
     * everything if that was not enough */
    size_t want = (size_t)n_win * W * 10 + 4096, use = want < len ? want : len;
    int32_t *toks = NULL;
    int n = 0;
    ds_status st = ds_tokenize(m, text, use, true, false, &toks, &n);
    if (!st && n < n_win * W && use < len) {
        ds_free_tokens(toks);
        st = ds_tokenize(m, text, len, true, false, &toks, &n);
    }
    free(text);
    if (st) return fail("tokenizing", st);
    if (n / W < n_win) n_win = n / W;
    if (n_win < 1) { fprintf(stderr, "dsinfer: the text has %d tokens, fewer than one window of %d\n", n, W); ds_free_tokens(toks); return 1; }
    /* as `perplexity`: each window starts with BOS when the vocabulary adds one */
    int32_t bos = -1, *tb = NULL;
    int nb = 0;
    if (ds_tokenize(m, "", 0, true, false, &tb, &nb) == DS_OK && nb > 0) bos = tb[0];
    ds_free_tokens(tb);
    ds_fidelity_acc acc[DS_EVAL_MAX_SETTINGS];
    memset(acc, 0, sizeof acc);
    double t_start = now_s();
    for (int w = 0; w < n_win; w++) {
        int32_t *win = toks + (size_t)w * W, saved = win[0];
        if (bos >= 0) win[0] = bos;
        double t0 = now_s();
        st = ds_fidelity_window(m, win, W, &cfg.sp, set, n_set, cfg.n_threads, cfg.n_batch, acc);
        win[0] = saved;
        if (st) { ds_free_tokens(toks); return fail("fidelity", st); }
        fprintf(stderr, "[window %d/%d, %.1f s] mean KL:", w + 1, n_win, now_s() - t0);
        for (int i = 0; i < n_set; i++) fprintf(stderr, " %s %.4f", set[i].label, acc[i].kl / acc[i].count);
        fprintf(stderr, "\n");
    }
    ds_free_tokens(toks);

    char mb[256], name[512], path[1200], what[512], header[4096], cmdline[2048];
    model_base(cfg.model_path, mb, sizeof mb);
    if (cfg.name) snprintf(name, sizeof name, "%s", cfg.name);
    else snprintf(name, sizeof name, "fidelity-%s-%d", mb, W);
    const char *tbase = strrchr(cfg.text_path, '/') ? strrchr(cfg.text_path, '/') + 1 : cfg.text_path;
    snprintf(what, sizeof what, "text %s (sha256 %.16s), window %d, windows %d, every position scored, sparse "
             "methods at every position (simulation)", tbase, sha, W, n_win);
    describe(m, &cfg, what, header, sizeof header);
    command_line(cmdline, sizeof cmdline);
    printf("%s\n\n", header);
    fid_table(stdout, set, n_set, acc);
    int werr = 0;   /* a table or plot that could not be written: reported, and the exit status says so */
    FILE *f = open_out(&cfg, name, "md", path, sizeof path);
    werr |= !f;
    if (f) {
        fprintf(f, "# Fidelity: %s\n\n- %s\n- command: `%s`\n- took %.0f s\n\n", name, header, cmdline, now_s() - t_start);
        fid_table(f, set, n_set, acc);
        fclose(f);
    }
    werr |= !(f = open_out(&cfg, name, "csv", path, sizeof path));
    if (f) {
        fprintf(f, "# %s\nsetting,method,budget,budget_fraction,positions,mean_kl,top1_agreement,ppl_dense,ppl_sparse\n", header);
        for (int i = 0; i < n_set; i++) {
            double c = acc[i].count ? (double)acc[i].count : NAN;
            fprintf(f, "%s,%s,%s,%.6g,%ld,%.6f,%.6f,%.6f,%.6f\n", set[i].label, ds_attn_method_name(set[i].method),
                    set[i].budget, set[i].method == DS_ATTN_DENSE ? 1.0 : budget_x(&set[i], W), acc[i].count,
                    acc[i].kl / c, acc[i].agree / c, exp(acc[i].nll_dense / c), exp(acc[i].nll_sparse / c));
        }
        fclose(f);
    }
    /* lines: x = budget as a fraction of the window (sorted, shared), one series per sparse method
     * and budget kind: a fixed k is a larger fraction early in the window than k/W, so "ds@32"
     * and "ds@1/4" at W = 128 are different curves even though both sit at x = 0.25 */
    double xs[DS_EVAL_MAX_SETTINGS], y[DS_EVAL_MAX_SETTINGS * DS_EVAL_MAX_SETTINGS];
    char snames[2 * DS_ATTN_COUNT][48];
    const char *series[2 * DS_ATTN_COUNT];
    int nx = 0, ns = 0, sm[2 * DS_ATTN_COUNT];
    for (int i = 0; i < n_set; i++) {
        if (set[i].method == DS_ATTN_DENSE) continue;
        double x = budget_x(&set[i], W);
        int j = 0, key = 2 * (int)set[i].method + (set[i].tokens > 0);
        while (j < nx && xs[j] != x) j++;
        if (j == nx) xs[nx++] = x;
        for (j = 0; j < ns && sm[j] != key; j++) {}
        if (j < ns) continue;
        snprintf(snames[ns], sizeof snames[ns], "%s%s", ds_attn_method_name(set[i].method), set[i].tokens ? " (fixed k)" : "");
        series[ns] = snames[ns];
        sm[ns++] = key;
    }
    for (int i = 1; i < nx; i++)
        for (int j = i; j > 0 && xs[j - 1] > xs[j]; j--) { double t = xs[j]; xs[j] = xs[j - 1]; xs[j - 1] = t; }
    for (int i = 0; i < ns * nx; i++) y[i] = NAN;
    for (int i = 0; i < n_set; i++) {
        if (set[i].method == DS_ATTN_DENSE || !acc[i].count) continue;
        int si = 0, xi = 0;
        while (sm[si] != 2 * (int)set[i].method + (set[i].tokens > 0)) si++;
        while (xs[xi] != budget_x(&set[i], W)) xi++;
        y[si * nx + xi] = acc[i].kl / acc[i].count;
    }
    if (ns && nx) {
        char title[512];
        snprintf(title, sizeof title, "KL(dense || sparse), %s, %s, window %d", mb, tbase, W);
        snprintf(path, sizeof path, "%s/%s.svg", cfg.out_dir, name);
        st = ds_plot_lines(path, title, "token budget k / context (fixed k: k / window)", "mean KL (nats)", 1, ns, series, nx, xs, y);
        if (st) fprintf(stderr, "dsinfer: plot %s: %s\n", path, ds_status_name(st));
        werr |= st != DS_OK;
    }
    if (werr) return 1;
    fprintf(stderr, "wrote %s/%s.{md,csv,svg}\n", cfg.out_dir, name);
    return 0;
}
