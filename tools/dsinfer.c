/* dsinfer — command-line interface. Uses only the public header include/dsinfer.h.
 *
 *   dsinfer run        -m MODEL -p PROMPT [-n 256] [--temp 0.8 ...]   generate text
 *   dsinfer chat       -m MODEL [--system TEXT]                       interactive ChatML chat
 *   dsinfer perplexity -m MODEL -f TEXT [--protocol llama|paper]      perplexity
 *   dsinfer bench      -m MODEL [--depths 0,4096] [--pp 512] [--tg 128]   prefill/decode speed
 *   dsinfer inspect    -m MODEL [--tensors]                           metadata, tensors, memory
 *   dsinfer dump-logits -m MODEL (--tokens 1,2,3 | -p TEXT) -o FILE    raw fp32 logits (tests)
 *   dsinfer eval       -m MODEL --task passkey --methods dense,ds --budgets 1/16   retrieval accuracy
 *   dsinfer fidelity   -m MODEL -f TEXT --methods ds --budgets 1/16      KL / top-1 vs dense
 * Without -m the default model (SmolLM2-135M-Instruct Q4_1) is used, fetched on first use. */
#include "dsinfer.h"
#include "eval.h"
#include "gen_model.h"
#include "version.h"   /* DS_BUILD_COMMIT, written by the Makefile */

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"

/* --ds-min-context not given (the library's DS_MIN_CONTEXT_AUTO is -1) */
#define MINCTX_UNSET (-2)

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dsinfer: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void die_status(ds_status st, const char *what) {
    const char *e = ds_last_error();
    size_t n = strlen(what);
    if (strncmp(e, what, n) == 0 && e[n] == ':')   /* the library's message names it already */
        die("%s (%s)", e, ds_status_name(st));
    die("%s: %s (%s)", what, e, ds_status_name(st));
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* ---------------------------------------------------------------- options */

typedef struct {
    const char *model, *prompt, *file, *out, *tokens, *system, *depths, *protocol;
    int n_predict, n_ctx, n_threads, n_batch, window, chunks, pp, tg, reps;
    int tensors, verbose, no_display_prompt, chat_mode;
    int announce_ds;   /* -v and run/chat chose DS by default: new_session says from which context */
    ds_sampler_opts samp;
    /* sparse attention */
    ds_sparse_opts sp;
    int method_set, dense, gpu;
    const char *calib, *calib_paper, *calib_text;
    int calib_block, calib_max_tokens, calib_mass_blocks;
    /* eval / fidelity (tools/eval.c) */
    const char *tasks, *methods, *budgets, *out_dir, *name;
    int cases, first_case, depth, n_predict_given, seed_given;
} opts;

static long parse_int(const char *flag, const char *v, long lo, long hi) {
    if (!v) die("%s needs a value", flag);
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        die("%s: '%s' is not an integer in [%ld, %ld]", flag, v, lo, hi);
    return x;
}

static float parse_float(const char *flag, const char *v, double lo, double hi) {
    if (!v) die("%s needs a value", flag);
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi))
        die("%s: '%s' is not a number in [%g, %g]", flag, v, lo, hi);
    return (float)x;
}

static void usage(FILE *f) {
    fprintf(f,
        "usage: dsinfer COMMAND [options]\n"
        "commands:\n"
        "  run         generate text from a prompt\n"
        "  chat        interactive chat using the model's ChatML template\n"
        "  perplexity  perplexity of a text file\n"
        "  bench       prefill and decode speed at context depths\n"
        "  inspect     model metadata, tensors and memory plan\n"
        "  calibrate   Double Sparsity channel calibration over a text (-f TEXT [-o FILE])\n"
        "  dump-logits write raw fp32 logits for a token sequence (reference checks)\n"
        "  eval        retrieval accuracy (passkey, lines, RULER-like) per attention method x budget\n"
        "  fidelity    KL(dense||sparse), top-1 agreement and perplexity per method x budget (-f TEXT)\n"
        "  gen-model   write a GGUF of random weights at real model shapes (-o FILE; gen-model --help)\n"
        "  --version   the commit this binary was built from, and its backends\n"
        "common options:\n"
        "  -m, --model PATH      GGUF file (default: SmolLM2-135M-Instruct Q4_1, fetched on first use)\n"
        "  -t, --threads N       CPU threads (default: every CPU this process may use)\n"
        "  -c, --ctx N           context size in tokens (default: min(model, 8192))\n"
        "  -b, --batch N         prefill chunk size (default 512)\n"
        "      --gpu             run the forward pass on the GPU (builds with make CUDA=1)\n"
        "run/chat:\n"
        "  -p, --prompt TEXT     prompt (run)\n"
        "  -f, --file PATH       read the prompt (run) or text (perplexity) from a file\n"
        "  -n, --n-predict N     tokens to generate (default 256; chat: per reply)\n"
        "      --chat            run: wrap the prompt in the chat template\n"
        "      --system TEXT     system message for --chat / chat\n"
        "      --temp X          temperature (default 0.8; 0 = greedy)\n"
        "      --top-k N         (default 40; 0 = off)\n"
        "      --top-p X         (default 0.95; 1 = off)\n"
        "      --min-p X         (default 0.05; 0 = off)\n"
        "      --seed N          sampling seed (default: time)\n"
        "      --no-display-prompt  print only the generated text\n"
        "perplexity:\n"
        "      --protocol P      llama: windows of -c/--window tokens, second half scored (default)\n"
        "                        paper: windows of --window tokens, every position scored\n"
        "      --window N        window length (default 512 llama, 4096 paper)\n"
        "      --chunks N        evaluate at most N windows\n"
        "bench:\n"
        "      --depths LIST     context depths for decode, e.g. 0,4096 (default 0)\n"
        "      --pp N            prompt tokens for the prefill test (default 512)\n"
        "      --tg N            generated tokens per decode test (default 128)\n"
        "  -r, --reps N          repetitions (default 3)\n"
        "sparse attention (run/chat default to Double Sparsity when a calibration exists):\n"
        "      --dense           dense attention\n"
        "      --ds              Double Sparsity (same as --method ds)\n"
        "      --method M        dense | ds | oracle | random | streaming | sparq | quest | h2o\n"
        "      --ds-tokens K     tokens attended per step: a count (512) or a fraction (1/16, default);\n"
        "                        quest: ceil((K-1)/16) pages of 16 + the current page; h2o: a cache of\n"
        "                        K tokens, the ceil(K/5) most recent + heavy hitters by accumulated attention\n"
        "      --ds-channels R   label channels per KV head (default max(head_dim, 128) / label bits:\n"
        "                        1/16 of the key bits, 1/8 at head_dim 64)\n"
        "      --ds-label-bits B 16, 8, 4 (default) or 2\n"
        "      --ds-label-norm   labels per channel (k - mean) / std with the calibration's key moments,\n"
        "                        scored with q * std (default: on when the calibration has the moments)\n"
        "      --no-ds-label-norm  raw key values as labels (the paper's labels)\n"
        "      --ds-stat S       qk (the paper's, default), qkv (q-weighted key variance), q, k, or\n"
        "                        mass (channels chosen as sets for the attention they find: head_dim/4,\n"
        "                        then up to the default width with those fixed):\n"
        "                        the statistic ranking the label channels\n"
        "      --ds-group G      shared (one token set per KV group, default) or per-head\n"
        "      --ds-group-score S  how a shared group's query heads rank positions: max (each\n"
        "                        head's score less its own best, the largest over the heads; default\n"
        "                        for ds and random) or sum (the summed score; default for oracle and\n"
        "                        sparq); applies to ds, random, oracle, sparq\n"
        "      --ds-dense-layers L  comma-separated layers kept dense (e.g. 0,1)\n"
        "      --ds-recent N     the N tokens before the current one are always attended, out of k\n"
        "                        (ds, random, oracle, sparq; default min(16, k/8) for ds and random,\n"
        "                        0 for the others)\n"
        "      --ds-prefetch P   CPU decode: while scanning a group's labels, prefetch the rows it\n"
        "                        selected at the previous step: on, off, or auto (default: on with\n"
        "                        AMD CPUs, where it measured faster, off elsewhere); speed only\n"
        "      --ds-channel-alloc  per-layer label widths from the calibration's curves: the same\n"
        "                        total as --ds-channels in every layer, moved to the layers where it\n"
        "                        captures the most attention (widths r/2..2r; CPU only)\n"
        "      --ds-layer-channels L:R,...  label channels R for layer L (overrides; CPU only)\n"
        "      --ds-min-context N  dense while the context is shorter (other commands: 0); run/chat\n"
        "                        default: 2048 on the CPU; with --gpu from 64 MiB of K+V per layer, where\n"
        "                        DS is the faster (Llama-2-7B 4096, Llama-3-8B 16384, Qwen2.5-1.5B 65536)\n"
        "      --ds-seed N       seed of --method random\n"
        "      --ds-calib FILE   calibration sidecar (default: MODEL.gguf.dscal.json, then calib/ beside or above the binary)\n"
        "      --ds-calib-paper FILE  import the paper's JSON channel file (HF layout)\n"
        "      --ds-calib-text FILE   calibrate on FILE now if no calibration exists\n"
        "calibrate:\n"
        "      --block N         tokens per calibration block (default 512)\n"
        "      --max-tokens N    use at most N tokens of the text\n"
        "      --mass-blocks N   blocks of 2048 tokens for the mass channel sets (default 2; 0 = none)\n"
        "eval / fidelity (tables and plots in --out-dir; -c is eval's total context, default 4096):\n"
        "      --task LIST       eval: lines,passkey,niah,niah-multikey,vt,cwe (default all)\n"
        "      --methods LIST    dense,ds,oracle,random,streaming,sparq,quest,h2o (default all;\n"
        "                        fidelity: all but dense); ds, random, oracle, sparq may end in -max\n"
        "                        or -sum (ds-max: that setting with --ds-group-score max)\n"
        "      --budgets LIST    token budgets k: fractions (1/16) or counts (256) (default 1/16;\n"
        "                        fidelity 1/32,1/16,1/8); dense and a budget of 1 run once as dense\n"
        "      --cases N         eval: cases per task (default 50); --seed fixes them (default 1)\n"
        "      --first-case F    eval: start at case F of the seed (default 0), e.g. to extend a run\n"
        "      --depth P         eval: needle depth in percent (default: drawn per case)\n"
        "      -n N              eval: answer tokens (default per task); --window/--chunks: fidelity\n"
        "                        windows (default 2048 tokens, 4 windows)\n"
        "      --out-dir DIR     where results go (default eval/results); --name NAME: file name\n"
        "                        (eval default: retrieval-MODEL-CTX, plus -TASK+TASK... for a subset)\n"
        "inspect:\n"
        "      --tensors         list every tensor\n");
}

static int is_opt(const char *a, const char *s1, const char *s2) {
    return strcmp(a, s1) == 0 || (s2 && strcmp(a, s2) == 0);
}

/* --ds-tokens: a count ("512") or a fraction of the context ("1/16" or "0.0625"). */
static void parse_tokens_budget(const char *v, ds_sparse_opts *sp) {
    char *end;
    const char *slash = strchr(v, '/');
    if (slash) {
        long a = strtol(v, &end, 10);
        if (end != slash) die("--ds-tokens: bad fraction '%s'", v);
        long b = strtol(slash + 1, &end, 10);
        if (*end || a <= 0 || b <= 0 || a > b) die("--ds-tokens: fraction '%s' must be in (0, 1]", v);
        sp->tokens = 0;
        sp->tokens_frac = (float)a / (float)b;
        return;
    }
    double x = strtod(v, &end);
    if (end == v || *end || !(x > 0)) die("--ds-tokens: '%s' is not a count or a fraction", v);
    if (x < 1) { sp->tokens = 0; sp->tokens_frac = (float)x; }
    else if (x == (double)(long)x && x < (1 << 24)) sp->tokens = (int)x;
    else die("--ds-tokens: '%s' is not a count or a fraction", v);
}

static void parse(int argc, char **argv, int first, opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 256;
    o->samp = ds_sampler_default_opts();
    o->samp.seed = (uint64_t)time(NULL);
    o->pp = 512; o->tg = 128; o->reps = 3;
    o->window = -1; o->chunks = -1;
    o->depth = -1;
    o->sp = ds_sparse_default_opts();
    o->sp.min_context = MINCTX_UNSET;   /* per command default below */
    o->calib_block = 512;
    o->calib_mass_blocks = -1;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define IS(s1, s2) is_opt(a, s1, s2)
#define NEEDV() do { if (!v) die("%s needs a value", a); i++; } while (0)
        if (IS("-m", "--model")) { NEEDV(); o->model = v; }
        else if (IS("-p", "--prompt")) { NEEDV(); o->prompt = v; }
        else if (IS("-f", "--file")) { NEEDV(); o->file = v; }
        else if (IS("-o", "--out")) { NEEDV(); o->out = v; }
        else if (IS("--tokens", NULL)) { NEEDV(); o->tokens = v; }
        else if (IS("--system", NULL)) { NEEDV(); o->system = v; }
        else if (IS("--depths", NULL)) { NEEDV(); o->depths = v; }
        else if (IS("--protocol", NULL)) { NEEDV(); o->protocol = v; }
        else if (IS("-n", "--n-predict")) { o->n_predict = (int)parse_int(a, v, 0, 1 << 24); o->n_predict_given = 1; i++; }
        else if (IS("-c", "--ctx")) { o->n_ctx = (int)parse_int(a, v, 1, 1 << 22); i++; }
        else if (IS("-t", "--threads")) { o->n_threads = (int)parse_int(a, v, 1, 256); i++; }
        else if (IS("-b", "--batch")) { o->n_batch = (int)parse_int(a, v, 1, 8192); i++; }
        else if (IS("--window", NULL)) { o->window = (int)parse_int(a, v, 2, 1 << 22); i++; }
        else if (IS("--chunks", NULL)) { o->chunks = (int)parse_int(a, v, 1, INT_MAX); i++; }
        else if (IS("--pp", NULL)) { o->pp = (int)parse_int(a, v, 0, 1 << 20); i++; }
        else if (IS("--tg", NULL)) { o->tg = (int)parse_int(a, v, 0, 1 << 20); i++; }
        else if (IS("-r", "--reps")) { o->reps = (int)parse_int(a, v, 1, 1000); i++; }
        else if (IS("--temp", NULL)) { o->samp.temperature = parse_float(a, v, 0, 100); i++; }
        else if (IS("--top-k", NULL)) { o->samp.top_k = (int)parse_int(a, v, 0, 1 << 24); i++; }
        else if (IS("--top-p", NULL)) { o->samp.top_p = parse_float(a, v, 1e-6, 1); i++; }
        else if (IS("--min-p", NULL)) { o->samp.min_p = parse_float(a, v, 0, 1); i++; }
        else if (IS("--seed", NULL)) { o->samp.seed = (uint64_t)parse_int(a, v, 0, LONG_MAX); o->seed_given = 1; i++; }
        else if (IS("--tensors", NULL)) o->tensors = 1;
        else if (IS("--task", NULL)) { NEEDV(); o->tasks = v; }
        else if (IS("--methods", NULL)) { NEEDV(); o->methods = v; }
        else if (IS("--budgets", NULL)) { NEEDV(); o->budgets = v; }
        else if (IS("--out-dir", NULL)) { NEEDV(); o->out_dir = v; }
        else if (IS("--name", NULL)) { NEEDV(); o->name = v; }
        else if (IS("--cases", NULL)) { o->cases = (int)parse_int(a, v, 1, 1 << 20); i++; }
        else if (IS("--first-case", NULL)) { o->first_case = (int)parse_int(a, v, 0, 1 << 20); i++; }
        else if (IS("--depth", NULL)) { o->depth = (int)parse_int(a, v, 0, 100); i++; }
        else if (IS("--dense", NULL)) { o->dense = 1; o->sp.method = DS_ATTN_DENSE; o->method_set = 1; }
        else if (IS("--gpu", NULL)) o->gpu = 1;
        else if (IS("--ds", NULL)) { o->sp.method = DS_ATTN_DS; o->method_set = 1; }
        else if (IS("--method", NULL)) {
            NEEDV();
            if (ds_attn_method_parse(v, &o->sp.method)) die("--method: unknown method '%s' (%s)", v, ds_attn_method_list());
            o->method_set = 1;
        }
        else if (IS("--ds-tokens", NULL)) { NEEDV(); parse_tokens_budget(v, &o->sp); }
        else if (IS("--ds-channels", NULL)) { o->sp.channels = (int)parse_int(a, v, 1, 512); i++; }
        else if (IS("--ds-label-bits", NULL)) {
            o->sp.label_bits = (int)parse_int(a, v, 2, 16); i++;
            if (o->sp.label_bits != 2 && o->sp.label_bits != 4 && o->sp.label_bits != 8 && o->sp.label_bits != 16)
                die("--ds-label-bits must be 16, 8, 4 or 2");
        }
        else if (IS("--ds-label-norm", NULL)) o->sp.label_norm = 1;
        else if (IS("--no-ds-label-norm", NULL)) o->sp.label_norm = 0;
        else if (IS("--ds-stat", NULL)) {
            NEEDV();
            if (ds_sparse_stat_parse(v, &o->sp.stat)) die("--ds-stat must be q, k, qk, qkv or mass (got '%s')", v);
        }
        else if (IS("--ds-group", NULL)) {
            NEEDV();
            if (!strcmp(v, "shared")) o->sp.per_head = 0; else if (!strcmp(v, "per-head")) o->sp.per_head = 1;
            else die("--ds-group must be shared or per-head");
        }
        else if (IS("--ds-group-score", NULL)) {
            NEEDV();
            if (!strcmp(v, "sum")) o->sp.group_max = 0; else if (!strcmp(v, "max")) o->sp.group_max = 1;
            else die("--ds-group-score must be sum or max (got '%s')", v);
        }
        else if (IS("--ds-dense-layers", NULL)) {
            NEEDV();
            o->sp.n_dense_layers = 0;
            for (const char *p = v; *p;) {
                char *end;
                long x = strtol(p, &end, 10);
                if (end == p || x < 0 || x > 100000 || (*end && *end != ',')) die("--ds-dense-layers: bad list '%s' (e.g. 0,1)", v);
                if (o->sp.n_dense_layers == DS_MAX_DENSE_LAYERS) die("--ds-dense-layers: at most %d layers", DS_MAX_DENSE_LAYERS);
                o->sp.dense_layers[o->sp.n_dense_layers++] = (int)x;
                p = *end ? end + 1 : end;
            }
        }
        else if (IS("--ds-layer-channels", NULL)) {
            NEEDV();
            memset(o->sp.layer_channels, 0, sizeof o->sp.layer_channels);
            for (const char *p = v; *p;) {
                char *end, *end2;
                long l = strtol(p, &end, 10), r = *end == ':' ? strtol(end + 1, &end2, 10) : -1;
                if (end == p || *end != ':' || end2 == end + 1 || l < 0 || l >= DS_MAX_LAYER_CHANNELS || r < 1 || r > 512 ||
                    (*end2 && *end2 != ','))
                    die("--ds-layer-channels: bad list '%s' (LAYER:CHANNELS pairs, e.g. 0:64,6:64)", v);
                o->sp.layer_channels[l] = (int)r;
                p = *end2 ? end2 + 1 : end2;
            }
        }
        else if (IS("--ds-channel-alloc", NULL)) o->sp.channel_alloc = 1;
        else if (IS("--ds-recent", NULL)) { o->sp.recent = (int)parse_int(a, v, 0, 1 << 22); i++; }
        else if (IS("--ds-prefetch", NULL)) {
            NEEDV();
            if (!strcmp(v, "on")) o->sp.prefetch = 1; else if (!strcmp(v, "off")) o->sp.prefetch = 0;
            else if (!strcmp(v, "auto")) o->sp.prefetch = DS_PREFETCH_AUTO;
            else die("--ds-prefetch must be on, off or auto (got '%s')", v);
        }
        else if (IS("--ds-min-context", NULL)) { o->sp.min_context = (int)parse_int(a, v, 0, 1 << 22); i++; }
        else if (IS("--ds-seed", NULL)) { o->sp.seed = (uint64_t)parse_int(a, v, 0, LONG_MAX); i++; }
        else if (IS("--ds-calib", NULL)) { NEEDV(); o->calib = v; }
        else if (IS("--ds-calib-paper", NULL)) { NEEDV(); o->calib_paper = v; }
        else if (IS("--ds-calib-text", NULL)) { NEEDV(); o->calib_text = v; }
        else if (IS("--block", NULL)) { o->calib_block = (int)parse_int(a, v, 2, 8192); i++; }
        else if (IS("--max-tokens", NULL)) { o->calib_max_tokens = (int)parse_int(a, v, 1, INT_MAX); i++; }
        else if (IS("--mass-blocks", NULL)) { o->calib_mass_blocks = (int)parse_int(a, v, 0, 64); i++; }
        else if (IS("--chat", NULL)) o->chat_mode = 1;
        else if (IS("--no-display-prompt", NULL)) o->no_display_prompt = 1;
        else if (IS("-v", "--verbose")) o->verbose = 1;
        else if (IS("-h", "--help")) { usage(stdout); exit(0); }
        else die("unknown option '%s' (see dsinfer --help)", a);
#undef IS
#undef NEEDV
    }
}

/* ---------------------------------------------------------------- model resolution */

static const char *cache_dir(void) {
    static char buf[1024];
    const char *c = getenv("DSINFER_CACHE");
    if (c && *c) snprintf(buf, sizeof buf, "%s", c);
    else snprintf(buf, sizeof buf, "%s/.cache/dsinfer", getenv("HOME") ? getenv("HOME") : ".");
    return buf;
}

/* The default model lives in the cache; if absent, run scripts/fetch-model found next to the
 * executable (source tree layout), else tell the user how to get it. */
static const char *resolve_model(const char *m) {
    if (m) return m;
    static char path[1200];
    snprintf(path, sizeof path, "%s/%s", cache_dir(), DEFAULT_MODEL_FILE);
    if (access(path, R_OK) == 0) return path;
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        char script[1200], cmd[1400];
        snprintf(script, sizeof script, "%s/scripts/fetch-model", exe);
        if (access(script, X_OK) == 0) {
            fprintf(stderr, "dsinfer: default model not found; fetching it with %s\n", script);
            snprintf(cmd, sizeof cmd, "'%s' smollm2 >&2", script);
            if (system(cmd) == 0 && access(path, R_OK) == 0) return path;
        }
    }
    die("no model given and the default model is not at %s; run scripts/fetch-model or pass -m MODEL.gguf", path);
    return NULL;
}

static ds_model *load_model(const opts *o) {
    const char *path = resolve_model(o->model);
    ds_model *m;
    double t0 = now_s();
    ds_status st = ds_model_load(path, &m);
    if (st) die("%s (%s)", ds_last_error(), ds_status_name(st));   /* the message names the file */
    if (o->verbose) fprintf(stderr, "loaded %s in %.2f s\n", path, now_s() - t0);
    return m;
}

static char *read_file(const char *path, size_t *len);

static void calib_progress(int done, int total, void *user) {
    (void)user;
    if (!isatty(2) && done != total && done % 32) return;   /* logs: a line every 32 blocks */
    int w = 40, f = total ? done * w / total : w;
    fprintf(stderr, "\rcalibrating [%.*s%*s] %d/%d steps", f, "########################################", w - f, "", done, total);
    if (done == total) fprintf(stderr, "\n");
}

/* A calibration is written when it is done (minutes to tens of minutes): find out first whether
 * the folder of its path takes a file, so a bad -o or a read-only model folder fails at once. */
static void check_output_dir(const char *path, const char *hint) {
    char dir[1024];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    const int e = ds_dir_writable(dir);
    if (e) die("cannot write %s: folder %s: %s%s", path, dir, strerror(e), hint);
}

/* Calibration for sparse methods that need one: explicit file, paper JSON, the sidecar next to
 * the model (loaded by ds_model_load), the file shipped in calib/ beside the executable, or a
 * calibration run now on --ds-calib-text. */
static void ensure_calibration(ds_model *m, const opts *o, bool required) {
    ds_status st;
    if (o->calib && (st = ds_model_load_calibration(m, o->calib))) die_status(st, o->calib);
    if (o->calib_paper && (st = ds_model_import_paper_calibration(m, o->calib_paper))) die_status(st, o->calib_paper);
    if (ds_model_has_calibration(m)) return;
    const char *mp = o->model ? o->model : "";
    const char *base = strrchr(mp, '/') ? strrchr(mp, '/') + 1 : mp;
    if (!*base) base = DEFAULT_MODEL_FILE;
    /* calib/ beside the executable (./dsinfer in the repository) or one folder up (the CUDA
     * build's build-cuda/dsinfer) */
    char exe[1024], shipped[1400];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        for (int up = 0; up < 2; up++) {
            snprintf(shipped, sizeof shipped, "%s%s/calib/%s.dscal.json", exe, up ? "/.." : "", base);
            if (access(shipped, R_OK) != 0) continue;
            if ((st = ds_model_load_calibration(m, shipped)) == DS_OK) return;
            fprintf(stderr, "dsinfer: warning: %s: %s\n", shipped, ds_last_error());
        }
    }
    if (o->calib_text) {
        size_t len;
        char *text = read_file(o->calib_text, &len);
        char sha[65], *out = ds_calibration_default_path(m);
        check_output_dir(out, " (calibrate with `dsinfer calibrate -o FILE` and pass --ds-calib FILE)");
        ds_sha256_hex(text, len, sha);
        fprintf(stderr, "dsinfer: no calibration for this model; calibrating on %s -> %s\n", o->calib_text, out);
        const char *name = strrchr(o->calib_text, '/') ? strrchr(o->calib_text, '/') + 1 : o->calib_text;
        st = ds_model_calibrate(m, text, len, name, sha, o->calib_block, o->calib_max_tokens,
                                o->n_threads, o->calib_mass_blocks, out, calib_progress, NULL);
        free(text);
        free(out);
        if (st) die_status(st, "calibration");
        return;
    }
    if (required)
        die("Double Sparsity needs a channel calibration for this model and none was found: run\n"
            "  dsinfer calibrate -m MODEL -f TEXT     (any prose other than your evaluation text)\n"
            "or pass --ds-calib FILE, --ds-calib-paper FILE, or --ds-calib-text TEXT to calibrate now");
}

/* Resolve the attention method of a command: explicit flags win; `run`/`chat` use Double
 * Sparsity by default when a calibration is available (dense below 2048 tokens of context). */
static void setup_sparse(ds_model *m, opts *o, bool ds_by_default) {
    if (o->sp.min_context == MINCTX_UNSET) o->sp.min_context = o->method_set ? 0 : DS_MIN_CONTEXT_AUTO;
    if (!o->method_set && ds_by_default) {
        ensure_calibration(m, o, false);
        o->sp.method = ds_model_has_calibration(m) ? DS_ATTN_DS : DS_ATTN_DENSE;
        if (o->verbose && !ds_model_has_calibration(m)) fprintf(stderr, "attention: dense (no calibration found)\n");
        o->announce_ds = o->verbose && ds_model_has_calibration(m);   /* by new_session, which knows the context */
    } else if (o->sp.method == DS_ATTN_DS) {
        ensure_calibration(m, o, true);
    }
}

static ds_session *new_session(const ds_model *m, const opts *o, int n_ctx) {
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = n_ctx ? n_ctx : o->n_ctx;
    so.n_threads = o->n_threads;
    so.n_batch = o->n_batch;
    so.sparse = o->sp;
    if (so.sparse.min_context == MINCTX_UNSET) so.sparse.min_context = 0;
    so.gpu = o->gpu;
    ds_session *s;
    ds_status st = ds_session_new(m, &so, &s);
    if (st) die_status(st, "creating the session");
    if (o->announce_ds) {   /* run/chat chose DS: say from where */
        const int ctx = ds_session_ctx(s), from = so.sparse.min_context == DS_MIN_CONTEXT_AUTO
                                                      ? ds_sparse_auto_min_context(ds_model_get_info(m), o->gpu)
                                                      : so.sparse.min_context;
        if (from > ctx)
            fprintf(stderr, "attention: dense throughout: Double Sparsity would start at %d tokens of context%s, "
                    "beyond this session's %d (--ds-min-context to move)\n", from,
                    o->gpu ? " (where it becomes the faster on the GPU)" : "", ctx);
        else {
            char when[64] = "throughout";
            if (from > 1) snprintf(when, sizeof when, "from %d tokens of context", from);
            fprintf(stderr, "attention: Double Sparsity %s (group score: %s; shipped/sidecar calibration; --dense to "
                    "compare, --ds-min-context to move)\n", when, ds_session_group_max(s) ? "largest head" : "sum");
        }
    }
    return s;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) die("out of memory");
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) die("out of memory reading %s", path);
            buf = nb;
        }
    }
    if (ferror(f)) die("error reading %s", path);
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

static int32_t *tokenize_or_die(const ds_model *m, const char *text, size_t len, bool bos, bool special, int *n) {
    int32_t *t;
    ds_status st = ds_tokenize(m, text, len, bos, special, &t, n);
    if (st) die_status(st, "tokenizing");
    return t;
}

static void print_piece(const ds_model *m, int32_t tok) {
    char buf[512];
    int n = ds_token_to_piece(m, tok, false, buf, sizeof buf);
    if (n > 0) fwrite(buf, 1, (size_t)n, stdout);
    fflush(stdout);
}

/* ---------------------------------------------------------------- run */

/* Evaluate `prompt`, then sample up to n tokens, streaming them; stops at end-of-generation.
 * Returns the number of tokens generated; *eog tells whether it ended on an EOG token. */
static int generate(ds_model *m, ds_session *s, ds_sampler *sp, const int32_t *prompt, int np,
                    int n, int *eog, double *t_prefill, double *t_decode) {
    double t0 = now_s();
    ds_status st = ds_session_eval(s, prompt, np, NULL);
    if (st) die_status(st, "evaluating the prompt");
    *t_prefill = now_s() - t0;
    t0 = now_s();
    int gen = 0;
    *eog = 0;
    while (gen < n) {
        int32_t tok = ds_sampler_sample(sp, ds_session_logits(s));
        if (ds_token_is_eog(m, tok)) { *eog = 1; break; }
        print_piece(m, tok);
        gen++;
        if (gen == n) break;
        if (ds_session_pos(s) >= ds_session_ctx(s)) {
            fprintf(stderr, "\n[context full at %d tokens]\n", ds_session_pos(s));
            break;
        }
        st = ds_session_eval(s, &tok, 1, NULL);
        if (st) die_status(st, "decoding");
    }
    *t_decode = now_s() - t0;
    return gen;
}

static int cmd_run(opts *o) {
    if (!o->prompt && !o->file) die("run needs a prompt: -p TEXT or -f FILE");
    ds_model *m = load_model(o);
    setup_sparse(m, o, true);
    size_t len;
    char *text = o->file ? read_file(o->file, &len) : strdup(o->prompt);
    if (!o->file) len = strlen(text);
    if (o->chat_mode) {
        ds_chat_msg msgs[2];
        int nm = 0;
        if (o->system) msgs[nm++] = (ds_chat_msg){"system", o->system};
        msgs[nm++] = (ds_chat_msg){"user", text};
        char *r = ds_chat_render(m, msgs, nm, true);
        if (!r) die("%s", ds_last_error());
        free(text);
        text = r;
        len = strlen(text);
        if (o->verbose) fprintf(stderr, "[chat prompt]\n%s[end of chat prompt]\n", text);
    }
    int np;
    int32_t *toks = tokenize_or_die(m, text, len, true, o->chat_mode, &np);
    if (np == 0) die("the prompt is empty after tokenization");
    int n_ctx = o->n_ctx;
    if (!n_ctx) {
        n_ctx = ds_model_get_info(m)->n_ctx_train < 8192 ? ds_model_get_info(m)->n_ctx_train : 8192;
        if (np + o->n_predict > n_ctx) n_ctx = np + o->n_predict;
    }
    if (np >= n_ctx) die("the prompt has %d tokens, which does not fit the context of %d (use --ctx)", np, n_ctx);
    ds_session *s = new_session(m, o, n_ctx);
    ds_sampler *sp;
    ds_status st = ds_sampler_new(&o->samp, ds_model_get_info(m)->n_vocab, &sp);
    if (st) die_status(st, "sampler");
    if (!o->no_display_prompt && !o->chat_mode) { fwrite(text, 1, len, stdout); fflush(stdout); }
    int eog;
    double tp, td;
    int gen = generate(m, s, sp, toks, np, o->n_predict, &eog, &tp, &td);
    printf("\n");
    fprintf(stderr, "[prompt %d tokens: %.1f tok/s | generated %d tokens: %.1f tok/s%s]\n", np,
            np / (tp > 0 ? tp : 1e-9), gen, gen > 1 ? (gen - 1) / (td > 0 ? td : 1e-9) : 0.0,
            eog ? " | stopped at end of turn" : "");
    ds_sampler_free(sp);
    ds_session_free(s);
    ds_free_tokens(toks);
    free(text);
    ds_model_free(m);
    return 0;
}

/* ---------------------------------------------------------------- chat */

static int cmd_chat(opts *o) {
    ds_model *m = load_model(o);
    setup_sparse(m, o, true);
    ds_session *s = new_session(m, o, 0);
    ds_sampler *sp;
    ds_status st = ds_sampler_new(&o->samp, ds_model_get_info(m)->n_vocab, &sp);
    if (st) die_status(st, "sampler");
    int interactive = isatty(0);
    if (interactive) fprintf(stderr, "chat with %s — /reset starts over, /quit or Ctrl-D ends\n",
                             ds_model_get_info(m)->name[0] ? ds_model_get_info(m)->name : "the model");
    char line[16384];
    for (;;) {
        if (interactive) { fprintf(stderr, "\n> "); fflush(stderr); }
        if (!fgets(line, sizeof line, stdin)) break;
        size_t L = strlen(line);
        while (L && (line[L - 1] == '\n' || line[L - 1] == '\r')) line[--L] = 0;
        if (L == 0) continue;
        if (strcmp(line, "/quit") == 0) break;
        if (strcmp(line, "/reset") == 0) { ds_session_truncate(s, 0); fprintf(stderr, "[conversation reset]\n"); continue; }
        char *text;
        if (ds_session_pos(s) == 0) {
            ds_chat_msg msgs[2];
            int nm = 0;
            if (o->system) msgs[nm++] = (ds_chat_msg){"system", o->system};
            msgs[nm++] = (ds_chat_msg){"user", line};
            text = ds_chat_render(m, msgs, nm, true);
            if (!text) die("%s", ds_last_error());
        } else {
            size_t cap = L + 64;
            text = malloc(cap);
            if (!text) die("out of memory");
            snprintf(text, cap, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", line);
        }
        int np;
        int32_t *toks = tokenize_or_die(m, text, strlen(text), ds_session_pos(s) == 0, true, &np);
        free(text);
        if (ds_session_pos(s) + np + 8 >= ds_session_ctx(s)) {
            fprintf(stderr, "[context full: starting a new conversation]\n");
            ds_free_tokens(toks);
            ds_session_truncate(s, 0);
            continue;
        }
        int room = ds_session_ctx(s) - ds_session_pos(s) - np - 4;
        int eog;
        double tp, td;
        if (!interactive) printf("assistant: ");
        generate(m, s, sp, toks, np, o->n_predict < room ? o->n_predict : room, &eog, &tp, &td);
        printf("\n");
        fflush(stdout);
        ds_free_tokens(toks);
        /* close the assistant turn in the cache so the next turn sees a well-formed history */
        int nc;
        int32_t *close = tokenize_or_die(m, "<|im_end|>\n", 11, false, true, &nc);
        if (ds_session_pos(s) + nc < ds_session_ctx(s)) {
            st = ds_session_eval(s, close, nc, NULL);
            if (st) die_status(st, "chat");
        }
        ds_free_tokens(close);
    }
    ds_sampler_free(sp);
    ds_session_free(s);
    ds_model_free(m);
    return 0;
}

/* ---------------------------------------------------------------- perplexity */

static int cmd_perplexity(opts *o) {
    if (!o->file) die("perplexity needs a text file: -f FILE");
    bool paper = false;
    if (o->protocol) {
        if (strcmp(o->protocol, "paper") == 0) paper = true;
        else if (strcmp(o->protocol, "llama") != 0) die("--protocol must be llama or paper");
    }
    int W = o->window > 0 ? o->window : o->n_ctx > 0 ? o->n_ctx : (paper ? 4096 : 512);
    ds_model *m = load_model(o);
    setup_sparse(m, o, false);
    /* a sparse method is scored by applying it at every position of the window (the paper's
     * accuracy simulation; tests check it equals real decode steps) */
    o->sp.sparse_prefill = o->sp.method != DS_ATTN_DENSE;
    const ds_model_info *info = ds_model_get_info(m);
    size_t len;
    char *text = read_file(o->file, &len);
    int n;
    double t0 = now_s();
    int32_t *toks = tokenize_or_die(m, text, len, true, false, &n);
    fprintf(stderr, "tokenized %zu bytes into %d tokens in %.2f s\n", len, n, now_s() - t0);
    int n_win = n / W;
    if (o->chunks > 0 && o->chunks < n_win) n_win = o->chunks;
    if (n_win < 1) die("the text has %d tokens, fewer than one window of %d", n, W);
    ds_session *s = new_session(m, o, W);
    int V = info->n_vocab;
    float *logits = malloc((size_t)W * V * sizeof(float));
    if (!logits) die("out of memory for %d x %d logits", W, V);
    /* the llama.cpp protocol puts BOS at the start of each window when the vocab adds one */
    int32_t bos = -1, *tb = NULL;
    int nb = 0;
    if (ds_tokenize(m, "", 0, true, false, &tb, &nb) == DS_OK && nb > 0) bos = tb[0];
    ds_free_tokens(tb);
    int first = paper ? 0 : W / 2;
    double nll = 0;
    long count = 0;
    t0 = now_s();
    for (int w = 0; w < n_win; w++) {
        int32_t *win = toks + (size_t)w * W;
        int32_t saved = win[0];
        if (bos >= 0) win[0] = bos;
        ds_session_truncate(s, 0);
        ds_status st = ds_session_eval(s, win, W, logits);
        win[0] = saved;
        if (st) die_status(st, "perplexity");
        for (int j = first; j < W - 1; j++) {
            const float *lg = logits + (size_t)j * V;
            float mx = lg[0];
            for (int i = 1; i < V; i++) mx = lg[i] > mx ? lg[i] : mx;
            double se = 0;
            for (int i = 0; i < V; i++) se += exp((double)lg[i] - mx);
            nll += log(se) + mx - lg[toks[(size_t)w * W + j + 1]];
            count++;
        }
        double el = now_s() - t0;
        fprintf(stderr, "\r[%d/%d] ppl %.4f  (%.0f tok/s, ETA %.0f s)   ", w + 1, n_win, exp(nll / count),
                (w + 1) * (double)W / el, el / (w + 1) * (n_win - w - 1));
    }
    fprintf(stderr, "\n");
    char method[160];
    if (o->sp.method == DS_ATTN_DENSE) snprintf(method, sizeof method, "dense");
    else if (o->sp.tokens > 0) snprintf(method, sizeof method, "%s k=%d", ds_attn_method_name(o->sp.method), o->sp.tokens);
    else snprintf(method, sizeof method, "%s k=%.4g of context", ds_attn_method_name(o->sp.method), o->sp.tokens_frac);
    if (ds_session_recent(s, W) > 0)   /* the recent window at the window's full context */
        snprintf(method + strlen(method), sizeof method - strlen(method), " recent %d", ds_session_recent(s, W));
    if (ds_session_group_max(s))
        snprintf(method + strlen(method), sizeof method - strlen(method), " group-max");
    /* the byte budget behind the number: what one decode step at the window's full context reads
     * per layer running the method (double-sparsity.md §9), against dense */
    size_t sb = ds_sparse_step_bytes(s, W), db = (size_t)2 * W * info->n_head_kv * info->head_dim * 2;
    printf("perplexity %.4f over %ld scored tokens (%d windows of %d, protocol %s, method %s, file %s; "
           "attention bytes per layer per decode step at n=%d: %zu, dense %zu, %.1fx fewer)\n",
           exp(nll / count), count, n_win, W, paper ? "paper: every position" : "llama: second half", method, o->file,
           W, sb, db, (double)db / (double)(sb ? sb : 1));
    free(logits);
    ds_session_free(s);
    ds_free_tokens(toks);
    free(text);
    ds_model_free(m);
    return 0;
}

/* ---------------------------------------------------------------- bench */

#include <pthread.h>
typedef struct { const uint64_t *p; size_t n; uint64_t sum; } bw_arg;
static void *bw_read(void *a) {
    bw_arg *b = a;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= b->n; i += 4) { s0 += b->p[i]; s1 += b->p[i + 1]; s2 += b->p[i + 2]; s3 += b->p[i + 3]; }
    b->sum = s0 + s1 + s2 + s3;
    return NULL;
}
/* Read bandwidth of nt threads streaming a 512 MiB buffer (best of 5): decode's ceiling. */
static double measure_read_bw(int nt) {
    size_t bytes = (size_t)512 << 20, n = bytes / 8;
    uint64_t *buf = malloc(bytes);
    if (!buf) return 0;
    for (size_t i = 0; i < n; i++) buf[i] = i;
    double best = 0;
    for (int r = 0; r < 5; r++) {
        pthread_t th[256];
        bw_arg args[256];
        double t0 = now_s();
        for (int i = 0; i < nt; i++) {
            args[i] = (bw_arg){buf + n / nt * i, n / nt, 0};
            pthread_create(&th[i], NULL, bw_read, &args[i]);
        }
        for (int i = 0; i < nt; i++) pthread_join(th[i], NULL);
        double gbs = bytes / (now_s() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    return best;
}

static int cmp_d(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

/* Bytes attention reads per decoded token at context n, all layers (double-sparsity.md §9):
 * layers kept dense read every K and V row; the others what ds_sparse_step_bytes says for the
 * method (labels or other selector metadata plus the selected rows; formulas in src/sparse.c). */
static double attn_bytes(const ds_session *s, const ds_model_info *c, const ds_sparse_opts *sp, double n) {
    int ni = (int)lround(n);
    double dense = 2.0 * ni * c->n_head_kv * c->head_dim * 2;
    if (sp->method == DS_ATTN_DENSE) return dense * c->n_layer;
    int nd = sp->n_dense_layers;
    return nd * dense + (double)(c->n_layer - nd) * (double)ds_sparse_step_bytes(s, ni);
}

static int cmd_bench(opts *o) {
    /* run's -p/-n would otherwise be taken and ignored, and a bench of the defaults would look like the one asked for */
    if (o->prompt || o->n_predict_given)
        die("bench takes --pp N (prompt tokens of the prefill test) and --tg N (tokens of the decode test), not -p/-n");
    ds_model *m = load_model(o);
    setup_sparse(m, o, false);
    const ds_model_info *info = ds_model_get_info(m);
    int depths[64], nd = 0;
    const char *d = o->depths ? o->depths : "0";
    while (*d && nd < 64) {
        char *end;
        long x = strtol(d, &end, 10);
        if (end == d || x < 0) die("--depths: bad list '%s'", o->depths);
        depths[nd++] = (int)x;
        d = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') die("--depths: bad list '%s'", o->depths);
    }
    int maxd = 0;
    for (int i = 0; i < nd; i++) maxd = depths[i] > maxd ? depths[i] : maxd;
    int n_ctx = maxd + (o->tg > o->pp ? o->tg : o->pp) + 1;
    ds_session *s = new_session(m, o, n_ctx);
    int nt = o->n_threads ? o->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    double bw = measure_read_bw(nt);
    printf("model: %s (%s), %.1f MB weights, %d threads, measured read bandwidth %.1f GB/s\n",
           info->name, info->arch, info->weight_bytes / 1e6, nt, bw);
    char method[160];
    snprintf(method, sizeof method, "dense");
    if (o->sp.method != DS_ATTN_DENSE) {
        const ds_attn_method me = o->sp.method;
        const int bits = o->sp.label_bits, r = o->sp.channels ? o->sp.channels : ds_sparse_default_channels(info->head_dim, bits);
        if (o->sp.tokens > 0) snprintf(method, sizeof method, "%s k=%d", ds_attn_method_name(me), o->sp.tokens);
        else snprintf(method, sizeof method, "%s k=%.4g*n", ds_attn_method_name(me), o->sp.tokens_frac);
        size_t l = strlen(method);   /* channels where a method reads them, label bits where it keeps labels */
        if (me == DS_ATTN_DS || me == DS_ATTN_RANDOM || me == DS_ATTN_SPARQ)
            snprintf(method + l, sizeof method - l, me == DS_ATTN_SPARQ ? " r=%d" : " r=%d b=%d", r, bits);
        l = strlen(method);   /* what the speed depends on besides k, r, b */
        if (ds_attn_method_topk(me))
            snprintf(method + l, sizeof method - l, " group-score %s", ds_session_group_max(s) ? "max" : "sum");
        l = strlen(method);
        if (!o->gpu) snprintf(method + l, sizeof method - l, " prefetch %s", ds_session_prefetch(s) ? "on" : "off");
    }
    printf("attention: %s\n", method);
    printf("| test | depth | tok/s (median of %d) | bytes/token (MB) | GB/s | %% of measured bw | attention ms/token |\n", o->reps);
    printf("|---|---|---|---|---|---|---|\n");
    uint32_t rng = 12345;
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)(n_ctx + 1));
    for (int i = 0; i <= n_ctx; i++) { rng = rng * 1664525u + 1013904223u; toks[i] = (int32_t)(rng % (uint32_t)info->n_vocab); }
    double times[1000];
    /* prefill of pp tokens on top of each depth (as llama-bench -d does) */
    for (int di = 0; di < nd && o->pp > 0; di++) {
        int depth = depths[di];
        for (int r = 0; r < o->reps; r++) {
            ds_session_truncate(s, 0);
            if (depth > 0) {
                ds_status st = ds_session_eval(s, toks, depth, NULL);
                if (st) die_status(st, "bench");
            }
            double t0 = now_s();
            ds_status st = ds_session_eval(s, toks + depth, o->pp, NULL);
            if (st) die_status(st, "bench");
            times[r] = now_s() - t0;
        }
        qsort(times, (size_t)o->reps, sizeof(double), cmp_d);
        printf("| pp%d | %d | %.1f | - | - | - | - |\n", o->pp, depth, o->pp / times[o->reps / 2]);
        fflush(stdout);
    }
    for (int di = 0; di < nd && o->tg > 0; di++) {
        int depth = depths[di];
        ds_session_truncate(s, 0);
        if (depth > 0) {
            ds_status st = ds_session_eval(s, toks, depth, NULL);
            if (st) die_status(st, "bench");
        }
        double attn[1000];
        for (int r = 0; r < o->reps; r++) {
            ds_session_truncate(s, depth);
            double t0 = now_s(), a0 = ds_session_attn_seconds(s);
            for (int i = 0; i < o->tg; i++) {
                ds_status st = ds_session_eval(s, &toks[depth + i], 1, NULL);
                if (st) die_status(st, "bench");
            }
            times[r] = now_s() - t0;
            attn[r] = (ds_session_attn_seconds(s) - a0) / o->tg;
        }
        qsort(times, (size_t)o->reps, sizeof(double), cmp_d);
        qsort(attn, (size_t)o->reps, sizeof(double), cmp_d);
        double tps = o->tg / times[o->reps / 2];
        /* bytes per decoded token: every weight once + what attention reads at the average depth */
        /* (the GPU's weights as it holds them: quantised blocks or fp16) */
        double bpt = (double)ds_session_step_weight_bytes(s) + attn_bytes(s, info, &o->sp, depth + o->tg / 2.0);
        if (o->gpu)   /* the bandwidth measured here is the CPU's; the GPU keeps no attention timer */
            printf("| tg%d | %d | %.1f | %.1f | %.2f | - | - |\n", o->tg, depth, tps, bpt / 1e6, bpt * tps / 1e9);
        else
            printf("| tg%d | %d | %.1f | %.1f | %.2f | %.0f%% | %.3f |\n", o->tg, depth, tps, bpt / 1e6,
                   bpt * tps / 1e9, 100.0 * bpt * tps / 1e9 / bw, 1e3 * attn[o->reps / 2]);
        fflush(stdout);
    }
    free(toks);
    ds_session_free(s);
    ds_model_free(m);
    return 0;
}

/* ---------------------------------------------------------------- calibrate */

static int cmd_calibrate(opts *o) {
    if (!o->file) die("calibrate needs a text: -f FILE (prose other than the text you will evaluate on)");
    ds_model *m = load_model(o);
    size_t len;
    char *text = read_file(o->file, &len);
    char sha[65];
    ds_sha256_hex(text, len, sha);
    char *out = o->out ? strdup(o->out) : ds_calibration_default_path(m);
    check_output_dir(out, o->out ? "" : " (name another path with -o FILE)");
    double t0 = now_s();
    const char *name = strrchr(o->file, '/') ? strrchr(o->file, '/') + 1 : o->file;
    ds_status st = ds_model_calibrate(m, text, len, name, sha, o->calib_block, o->calib_max_tokens,
                                      o->n_threads, o->calib_mass_blocks, out, calib_progress, NULL);
    if (st) die_status(st, "calibration");
    printf("wrote %s (text %s, sha256 %.16s..., blocks of %d tokens, %.1f s)\n", out, o->file, sha,
           o->calib_block, now_s() - t0);
    free(out);
    free(text);
    ds_model_free(m);
    return 0;
}

/* ---------------------------------------------------------------- inspect / dump-logits */

static int cmd_inspect(opts *o) {
    ds_model *m = load_model(o);
    const ds_model_info *c = ds_model_get_info(m);
    printf("build        %s backend, %d GPU(s) visible\n", ds_build_backend(), ds_gpu_count());
    printf("model        %s\n", c->name);
    printf("architecture %s\n", c->arch);
    printf("layers %d, embd %d, heads %d (kv %d), head_dim %d, ffn %d, vocab %d, train ctx %d\n",
           c->n_layer, c->n_embd, c->n_head, c->n_head_kv, c->head_dim, c->n_ff, c->n_vocab, c->n_ctx_train);
    printf("rope theta %g (%s pairs), rms eps %g, qkv bias %s, tied embeddings %s\n", c->rope_theta,
           c->rope_neox ? "neox (i, i+d/2)" : "adjacent (2i, 2i+1)", c->rms_eps, c->has_qkv_bias ? "yes" : "no",
           c->tied_embeddings ? "yes" : "no");
    printf("parameters %.1f M, weight bytes %.1f MB (read once per decoded token)\n", c->n_params / 1e6, c->weight_bytes / 1e6);
    int n_ctx = o->n_ctx ? o->n_ctx : (c->n_ctx_train < 8192 ? c->n_ctx_train : 8192);
    double kv = (double)n_ctx * c->n_layer * c->n_head_kv * c->head_dim * 2 * 2;
    printf("memory plan at ctx %d: KV cache %.1f MB (fp16)", n_ctx, kv / 1e6);
    opts o2 = *o;
    o2.n_ctx = n_ctx;
    if (o2.sp.method != DS_ATTN_DENSE) setup_sparse(m, &o2, false);
    fflush(stdout);   /* a session error (stderr) comes after what is printed so far */
    ds_session *s = new_session(m, &o2, n_ctx);
    printf(", session total %.1f MB\n", ds_session_bytes(s) / 1e6);
    if (ds_session_label_channels(s, 0)) {   /* a method with labels: each layer's width */
        printf("label channels per layer:");
        for (int l = 0; l < c->n_layer; l++) printf("%s%d", l ? "," : " ", ds_session_label_channels(s, l));
        printf("\n");
    }
    ds_session_free(s);
    if (o->tensors) {
        char line[512];
        printf("%-36s %-6s %-18s %12s\n", "tensor", "type", "shape", "bytes");
        for (int i = 0; i < ds_model_n_tensors(m); i++)
            if (ds_model_tensor_desc(m, i, line, sizeof line) > 0) printf("%s\n", line);
    }
    ds_model_free(m);
    return 0;
}

static int cmd_dump_logits(opts *o) {
    if (!o->out) die("dump-logits needs -o FILE");
    ds_model *m = load_model(o);
    setup_sparse(m, o, false);
    o->sp.sparse_prefill = o->sp.method != DS_ATTN_DENSE;
    int n = 0;
    int32_t *toks;
    if (o->tokens) {
        toks = malloc(sizeof(int32_t) * (strlen(o->tokens) / 2 + 2));
        const char *p = o->tokens;
        while (*p) {
            char *end;
            long x = strtol(p, &end, 10);
            if (end == p) die("--tokens: bad list");
            toks[n++] = (int32_t)x;
            p = *end == ',' ? end + 1 : end;
            if (*end && *end != ',') die("--tokens: bad list");
        }
    } else if (o->prompt) {
        toks = tokenize_or_die(m, o->prompt, strlen(o->prompt), true, true, &n);
    } else die("dump-logits needs --tokens LIST or -p TEXT");
    if (n == 0) die("no tokens");
    ds_session *s = new_session(m, o, n + 1);
    int V = ds_model_get_info(m)->n_vocab;
    float *lg = malloc((size_t)n * V * sizeof(float));
    if (!lg) die("out of memory");
    ds_status st = ds_session_eval(s, toks, n, lg);
    if (st) die_status(st, "dump-logits");
    FILE *f = fopen(o->out, "wb");
    if (!f || fwrite(lg, sizeof(float), (size_t)n * V, f) != (size_t)n * V || fclose(f))
        die("cannot write %s", o->out);
    for (int i = 0; i < n; i++) printf("%s%d", i ? "," : "", toks[i]);
    printf("\n");
    free(lg);
    free(toks);   /* malloc'd here or by ds_tokenize: ds_free_tokens is free() */
    ds_session_free(s);
    ds_model_free(m);
    return 0;
}

/* ---------------------------------------------------------------- eval / fidelity */

/* The commands live in tools/eval.c; here only the model, the calibration and the flags. */
static int cmd_eval_common(opts *o, bool fidelity) {
    ds_model *m = load_model(o);
    if (!o->methods || ds_eval_methods_need_calibration(o->methods)) ensure_calibration(m, o, true);
    ds_eval_config c = {0};
    c.model_path = resolve_model(o->model);
    c.tasks = o->tasks; c.methods = o->methods; c.budgets = o->budgets;
    c.out_dir = o->out_dir; c.name = o->name; c.text_path = o->file;
    c.n_ctx = o->n_ctx; c.cases = o->cases; c.first_case = o->first_case; c.depth = o->depth;
    c.n_predict = o->n_predict_given ? o->n_predict : 0;
    c.window = o->window; c.chunks = o->chunks;
    c.n_threads = o->n_threads; c.n_batch = o->n_batch; c.verbose = o->verbose;
    c.seed = o->seed_given ? o->samp.seed : 1;   /* reproducible cases unless asked otherwise */
    c.sp = o->sp;
    if (c.sp.min_context < 0) c.sp.min_context = 0;
    int rc = fidelity ? cmd_fidelity(m, &c) : cmd_eval(m, &c);
    ds_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 1; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) { usage(stdout); return 0; }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
#ifdef DS_CUDA
        printf("dsinfer %s (CPU and CUDA backends)\n", DS_BUILD_COMMIT);
#else
        printf("dsinfer %s (CPU backend)\n", DS_BUILD_COMMIT);
#endif
        return 0;
    }
    if (!strcmp(cmd, "gen-model")) return ds_cmd_gen_model(argc - 1, argv + 1);  /* own flags: before parse() */
    opts o;
    parse(argc, argv, 2, &o);
    ds_set_log_level(o.verbose ? 2 : 1);
    if (!strcmp(cmd, "run")) return cmd_run(&o);
    if (!strcmp(cmd, "chat")) return cmd_chat(&o);
    if (!strcmp(cmd, "perplexity")) return cmd_perplexity(&o);
    if (!strcmp(cmd, "bench")) return cmd_bench(&o);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(&o);
    if (!strcmp(cmd, "calibrate")) return cmd_calibrate(&o);
    if (!strcmp(cmd, "dump-logits")) return cmd_dump_logits(&o);
    if (!strcmp(cmd, "eval")) return cmd_eval_common(&o, false);
    if (!strcmp(cmd, "fidelity")) return cmd_eval_common(&o, true);
    die("unknown command '%s' (see dsinfer --help)", cmd);
    return 1;
}
