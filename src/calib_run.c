/* calib_run.c — running a model over calibration text, and attaching calibrations to it.
 *
 * The statistics are accumulated by hooks in the layer loop (forward.c: before and after RoPE)
 * while a dense session prefills the text block by block; each block starts from an empty
 * cache, as the paper's calibration does (512-token blocks). */
#include "calibrate.h"
#include "forward.h"

#include <stdio.h>
#include <stdlib.h>

static void model_meta(const ds_model *m, ds_calib_meta *meta) {
    memset(meta, 0, sizeof *meta);
    meta->arch = m->info.arch;
    meta->n_layer = m->info.n_layer;
    meta->n_head = m->info.n_head;
    meta->n_head_kv = m->info.n_head_kv;
    meta->head_dim = m->info.head_dim;
    const char *slash = strrchr(m->path, '/');
    meta->model_file = slash ? slash + 1 : m->path;
    meta->model_size = m->gguf->size;
}

bool ds_model_has_calibration(const ds_model *m) { return m->calib != NULL; }

char *ds_calibration_default_path(const ds_model *m) {
    size_t n = strlen(m->path) + 16;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s.dscal.json", m->path);
    return p;
}

static void attach(ds_model *m, ds_calibration *c) {
    ds_calibration_free(m->calib);
    m->calib = c;
    m->calib_note[0] = 0;
}

ds_status ds_model_load_calibration(ds_model *m, const char *path) {
    ds_calib_meta expect;
    model_meta(m, &expect);
    expect.model_file = NULL;   /* a renamed copy of the same file is fine: size + shape identify it */
    ds_calibration *c;
    ds_status st = ds_calib_load(path, &expect, &c);
    if (st) return st;
    attach(m, c);
    return DS_OK;
}

ds_status ds_model_import_paper_calibration(ds_model *m, const char *path) {
    ds_calib_meta expect;
    model_meta(m, &expect);
    expect.model_file = NULL;
    expect.model_size = 0;
    ds_calibration *c;
    /* llama-arch GGUF Q/K rows are permuted relative to HF's layout; qwen2 is not */
    ds_status st = ds_calib_import_paper(path, &expect, !m->info.rope_neox, &c);
    if (st) return st;
    attach(m, c);
    return DS_OK;
}

/* The mass ranking's samples: blocks of MASS_WINDOW tokens (or the model's context, if shorter)
 * from the start of the calibration tokens, each evaluated from an empty cache. */
#define MASS_WINDOW 2048
#define MASS_BLOCKS_DEFAULT 2

typedef struct {
    void (*progress)(int done, int total, void *user);
    void *user;
    int base, total;
} mass_progress;

static void mass_search_progress(int done, int total, void *user) {
    (void)total;
    mass_progress *p = user;
    if (p->progress) p->progress(p->base + done, p->total, p->user);
}

/* Runs the model over n_mass blocks of `window` tokens and sets cal's mass ranking. */
static ds_status calibrate_mass(ds_model *m, ds_calib_acc *acc, const int32_t *toks, int window, int n_mass,
                                int n_threads, ds_calibration *cal, mass_progress *mp) {
    const ds_model_info *c = &m->info;
    ds_calib_mass *ms = ds_calib_mass_new(c->n_layer, c->n_head, c->n_head_kv, c->head_dim, window, n_mass);
    if (!ms) return ds_error(DS_ERR_OOM, "calibration: out of memory for the mass samples");
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = window;
    so.n_threads = n_threads;
    so.n_batch = window;   /* each block in one prefill call (the sampler would also take it in chunks) */
    ds_session *s;
    ds_status st = ds_session_new(m, &so, &s);
    if (st) { ds_calib_mass_free(ms); return st; }
    s->calib = acc;
    ds_calib_acc_set_mass(acc, ms);
    for (int b = 0; b < n_mass && !st; b++) {
        ds_session_truncate(s, 0);
        ds_calib_mass_block(ms, b);
        st = ds_session_eval(s, toks + (size_t)b * window, window, NULL);
        if (mp->progress) mp->progress(++mp->base, mp->total, mp->user);
    }
    ds_calib_acc_set_mass(acc, NULL);
    s->calib = NULL;
    if (!st) st = ds_calib_mass_rank(ms, cal, s->pool, mass_search_progress, mp, NULL, NULL);
    ds_session_free(s);
    ds_calib_mass_free(ms);
    return st;
}

ds_status ds_model_calibrate(ds_model *m, const char *text, size_t len, const char *text_name,
                             const char *text_sha256, int block, int max_tokens, int n_threads, int mass_blocks,
                             const char *save_path, void (*progress)(int done, int total, void *user), void *user) {
    if (block <= 0) block = 512;
    if (block < 2 || block > 8192) return ds_error(DS_ERR_ARG, "calibration block must be in [2, 8192] tokens");
    if (mass_blocks < 0) mass_blocks = MASS_BLOCKS_DEFAULT;
    int32_t *toks;
    int n;
    ds_status st = ds_tokenize(m, text, len, true, false, &toks, &n);
    if (st) return st;
    if (max_tokens > 0 && n > max_tokens) n = max_tokens;
    int n_blocks = n / block;
    if (n_blocks < 1) {
        ds_free_tokens(toks);
        return ds_error(DS_ERR_ARG, "calibration text has %d tokens, fewer than one block of %d", n, block);
    }
    /* mass blocks: as many as asked for that the tokens hold (none if not one) */
    const int window = m->info.n_ctx_train > 0 ? DS_MIN(MASS_WINDOW, m->info.n_ctx_train) : MASS_WINDOW;
    int n_mass = window >= 64 ? DS_MIN(mass_blocks, n / window) : 0;
    /* progress: the statistics' blocks, the mass blocks, then one step per (layer, KV head) searched */
    mass_progress mp = {progress, user, 0, n_blocks + (n_mass ? n_mass + m->info.n_layer * m->info.n_head_kv : 0)};
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = block;
    so.n_threads = n_threads;
    ds_session *s;
    if ((st = ds_session_new(m, &so, &s))) { ds_free_tokens(toks); return st; }
    const ds_model_info *c = &m->info;
    s->calib = ds_calib_acc_new(c->n_layer, c->n_head, c->n_head_kv, c->head_dim);
    if (!s->calib) { ds_session_free(s); ds_free_tokens(toks); return ds_error(DS_ERR_OOM, "out of memory"); }
    for (int b = 0; b < n_blocks && !st; b++) {
        ds_session_truncate(s, 0);
        st = ds_session_eval(s, toks + (size_t)b * block, block, NULL);
        ds_calib_acc_tokens(s->calib, block);
        if (progress) progress(b + 1, mp.total, user);
    }
    ds_calibration *cal = NULL;
    if (!st) st = ds_calib_finish(s->calib, &cal);
    ds_calib_acc *acc = s->calib;
    s->calib = NULL;
    ds_session_free(s);
    mp.base = n_blocks;
    if (!st && n_mass) st = calibrate_mass(m, acc, toks, window, n_mass, n_threads, cal, &mp);
    ds_calib_acc_free(acc);
    ds_free_tokens(toks);
    if (st) { ds_calibration_free(cal); return st; }
    if (save_path) {
        ds_calib_meta meta;
        model_meta(m, &meta);
        meta.text_name = text_name;
        meta.text_tokens = (long)n_blocks * block;
        meta.text_sha256 = text_sha256;
        st = ds_calib_save(cal, &meta, save_path);
        if (st) { ds_calibration_free(cal); return st; }
    }
    attach(m, cal);
    return DS_OK;
}
