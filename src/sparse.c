/* sparse.c — selection + exact attention over the selected rows (see sparse.h).
 *
 * Shared GQA (double-sparsity.md §5): the group's score of a position is the sum over its query
 * heads of each head's score. Every selector in this file is linear in q, so that sum is one dot
 * product with qsum = sum_g q_g — the scan costs the same whatever the group size. Per-head mode
 * runs one selection per query head instead. The current token is always selected (§6).
 * Quest (not linear in q) and H2O (stateful) live in sparse_baselines.c. */
#include "sparse.h"
#include "calibrate.h"
#include "ds_kernels.h"

#include <math.h>
#include <stdlib.h>

ds_sparse_opts ds_sparse_default_opts(void) {
    ds_sparse_opts o;
    memset(&o, 0, sizeof o);
    o.method = DS_ATTN_DENSE;
    o.tokens_frac = 1.0f / 16;
    o.label_bits = 4;
    o.stat = DS_STAT_QK;   /* with normalised labels qk beat qkv on both models (README results) */
    o.label_norm = -1;     /* on when the calibration has the key moments */
    o.recent = DS_RECENT_AUTO;
    o.group_max = DS_GROUP_AUTO;
    o.prefetch = DS_PREFETCH_AUTO;
    return o;
}

int ds_sparse_auto_min_context(const ds_model_info *info, int gpu) {
    const long cpu = 2048;   /* the CPU's: DS pays from ~1K there (README), 2048 keeps short chats exact */
    if (!gpu) return (int)cpu;
    const long per_pos = (long)info->n_head_kv * info->head_dim * 2 * 2;   /* K+V bytes per position, fp16 */
    const long gpu_kv = 64L << 20;                                          /* K+V per layer where DS pays */
    const long n = per_pos > 0 ? (gpu_kv + per_pos - 1) / per_pos : cpu;
    return (int)(n > cpu ? n : cpu);
}

static const char *const g_method_names[DS_ATTN_COUNT] = {
    "dense", "ds", "oracle", "random", "streaming", "sparq", "quest", "h2o"};

const char *ds_attn_method_list(void) { return "dense,ds,oracle,random,streaming,sparq,quest,h2o"; }

const char *ds_attn_method_name(ds_attn_method m) {
    return (unsigned)m < DS_ATTN_COUNT ? g_method_names[m] : "unknown";
}

int ds_attn_method_parse(const char *name, ds_attn_method *out) {
    for (int i = 0; i < DS_ATTN_COUNT; i++)
        if (strcmp(name, g_method_names[i]) == 0) { *out = (ds_attn_method)i; return 0; }
    return -1;
}

/* The statistics' names live with the calibration (its files store them). */
const char *ds_sparse_stat_name(int stat) { return ds_calib_stat_name((ds_stat)stat); }

int ds_sparse_stat_parse(const char *name, int *out) {
    ds_stat s;
    if (ds_calib_stat_parse(name, &s) != DS_OK) return -1;
    *out = (int)s;
    return 0;
}

static bool uses_labels(ds_attn_method m) { return m == DS_ATTN_DS || m == DS_ATTN_RANDOM; }
/* the selectors that rank every position by a score and take a top-k */
bool ds_attn_method_topk(ds_attn_method m) { return uses_labels(m) || m == DS_ATTN_ORACLE || m == DS_ATTN_SPARQ; }

int ds_sparse_k(const ds_session *s, int n) {
    const ds_sparse_opts *o = &s->opts.sparse;
    int k = o->tokens > 0 ? o->tokens : (int)ceil((double)o->tokens_frac * n - 1e-9);
    return k < 1 ? 1 : k;
}

int ds_sparse_slices(const ds_session *s, int n) {
    const int k = ds_sparse_k(s, n);
    return DS_MAX(1, DS_MIN((k + DS_SPLIT_ROWS - 1) / DS_SPLIT_ROWS, DS_SPLIT_SLICES_MAX(s->n_ctx)));
}

bool ds_sparse_layer(const ds_session *s, int layer) {
    return s->sp_dense_layer && !s->sp_dense_layer[layer];
}

ds_status ds_sparse_init(ds_session *s) {
    const ds_model_info *c = &s->m->info;
    ds_sparse_opts *o = &s->opts.sparse;
    const int hd = c->head_dim, L = c->n_layer, KVH = c->n_head_kv;
    if ((unsigned)o->method >= DS_ATTN_COUNT) return ds_error(DS_ERR_ARG, "unknown attention method %d", o->method);
    /* a dense session only keeps H2O's sums when asked (ds_session_fork into h2o needs them) */
    if (o->method == DS_ATTN_DENSE) return o->track_h2o ? ds_h2o_init(s) : DS_OK;
    if (o->label_bits != 16 && o->label_bits != 8 && o->label_bits != 4 && o->label_bits != 2)
        return ds_error(DS_ERR_ARG, "--ds-label-bits must be 16, 8, 4 or 2 (got %d)", o->label_bits);
    /* default: 1/16 of the key bits, but at least 128 bits per label row (so 1/8 at head_dim 64).
     * At head_dim 64 the paper's 1/16 leaves SmolLM2 16 channels at 4 bits, too few: niah at 8K
     * 0.39 against dense 0.89, at 1/8 0.86; perplexity +6.9% against +2.8% (README). Head_dim 128
     * keeps 1/16 (32 channels at 4 bits, the paper's setting). */
    if (o->channels == 0) o->channels = ds_sparse_default_channels(hd, o->label_bits);
    if (o->channels < 1 || o->channels > hd || o->channels > DS_LABEL_MAX_R)
        return ds_error(DS_ERR_ARG, "--ds-channels must be in [1, %d] for head_dim %d (got %d)",
                        DS_MIN(hd, DS_LABEL_MAX_R), hd, o->channels);
    if (o->tokens < 0 || (o->tokens == 0 && !(o->tokens_frac > 0 && o->tokens_frac <= 1)))
        return ds_error(DS_ERR_ARG, "--ds-tokens must be a positive count or a fraction in (0, 1]");
    if (o->stat < -1 || o->stat >= DS_STAT_COUNT) return ds_error(DS_ERR_ARG, "--ds-stat must be q, k, qk, qkv or mass");
    if (o->stat < 0) o->stat = DS_STAT_QK;
    if (o->min_context < 0) return ds_error(DS_ERR_ARG, "--ds-min-context must be >= 0");   /* AUTO: resolved by ds_session_new */
    if (o->label_norm > 0 && o->method != DS_ATTN_DS)
        return ds_error(DS_ERR_ARG, "--ds-label-norm applies to --method ds only (it needs the calibration's key moments)");
    if (o->label_norm < 0)   /* default: normalise when the calibration carries the key moments */
        o->label_norm = o->method == DS_ATTN_DS && s->m->calib && ds_calib_kmean(s->m->calib, 0, 0) ? 1 : 0;
    if (o->recent < DS_RECENT_AUTO) return ds_error(DS_ERR_ARG, "--ds-recent must be >= 0 (got %d)", o->recent);
    if (o->recent > 0 && o->tokens > 0 && o->recent >= o->tokens && ds_attn_method_topk(o->method))
        return ds_error(DS_ERR_ARG, "--ds-recent %d leaves no room for the top-k in k = %d (it must be below k)",
                        o->recent, o->tokens);
    /* auto stays DS_RECENT_AUTO for ds and random (resolved per k by recent_window, and by the
     * GPU's recent_for) */
    if (!ds_attn_method_topk(o->method) || (o->recent == DS_RECENT_AUTO && !uses_labels(o->method)))
        o->recent = 0;
    if (o->prefetch < DS_PREFETCH_AUTO || o->prefetch > 1)
        return ds_error(DS_ERR_ARG, "prefetch must be 0, 1 or DS_PREFETCH_AUTO (got %d)", o->prefetch);
    if (o->group_max < DS_GROUP_AUTO || o->group_max > 1)
        return ds_error(DS_ERR_ARG, "group_max must be 0, 1 or DS_GROUP_AUTO (got %d)", o->group_max);
    if (o->group_max == DS_GROUP_AUTO)   /* max where scores come from labels; the exact scores keep the sum */
        o->group_max = uses_labels(o->method) && c->n_head / KVH <= 64 ? 1 : 0;
    /* top-k scorers over a shared group of several heads only (one head: the same order, and the
     * GPU's summed path is the faster) */
    if (!ds_attn_method_topk(o->method) || o->per_head || c->n_head == KVH) o->group_max = 0;
    if (o->group_max && c->n_head / KVH > 64)
        return ds_error(DS_ERR_UNSUPPORTED, "--ds-group-score max takes groups of at most 64 query heads (this model: %d)",
                        c->n_head / KVH);
    if (o->method == DS_ATTN_STREAMING && o->tokens > 0 && o->tokens < 5)
        return ds_error(DS_ERR_ARG, "streaming needs k >= 5 (4 sink tokens + the current one)");
    ds_status st = ds_sparse_diag_open(s);
    if (st != DS_OK) return st;

    s->sp_dense_layer = calloc((size_t)L, 1);
    if (!s->sp_dense_layer) return ds_error(DS_ERR_OOM, "out of memory");
    if (o->n_dense_layers < 0 || o->n_dense_layers > DS_MAX_DENSE_LAYERS)
        return ds_error(DS_ERR_ARG, "too many dense layers");
    for (int i = 0; i < o->n_dense_layers; i++) {
        if (o->dense_layers[i] < 0 || o->dense_layers[i] >= L)
            return ds_error(DS_ERR_ARG, "--ds-dense-layers: layer %d does not exist (model has %d)", o->dense_layers[i], L);
        s->sp_dense_layer[o->dense_layers[i]] = 1;
    }

    if (o->method == DS_ATTN_DS && !s->m->calib)
        return ds_error(DS_ERR_ARG, "Double Sparsity needs a calibration for %s: run "
                        "`dsinfer calibrate -m MODEL -f TEXT` (or pass --ds-calib-text FILE)", s->m->path);
    if (o->channel_alloc && o->method != DS_ATTN_DS)
        return ds_error(DS_ERR_ARG, "--ds-channel-alloc applies to --method ds only");
    for (int l = 0; l < DS_MAX_LAYER_CHANNELS; l++)
        if (o->layer_channels[l] && !uses_labels(o->method))
            return ds_error(DS_ERR_ARG, "--ds-layer-channels applies to the methods with labels (ds, random)");
        else if (o->layer_channels[l] && l >= L)
            return ds_error(DS_ERR_ARG, "--ds-layer-channels: layer %d does not exist (model has %d)", l, L);

    if (uses_labels(o->method)) {
        /* per-layer widths: `channels`, overridden per layer by layer_channels or by the
         * calibration's allocation (channel_alloc) */
        s->sp_r = malloc(sizeof(int) * (size_t)L);
        s->sp_row_bytes = malloc(sizeof(size_t) * (size_t)L);
        s->sp_code_off = malloc(sizeof(size_t) * (size_t)L);
        if (!s->sp_r || !s->sp_row_bytes || !s->sp_code_off) return ds_error(DS_ERR_OOM, "out of memory");
        for (int l = 0; l < L; l++) s->sp_r[l] = o->channels;
        if (o->channel_alloc) {
            ds_status as = ds_calib_alloc(s->m->calib, (ds_stat)o->stat, o->channels, DS_MIN(hd, DS_LABEL_MAX_R),
                                          s->sp_dense_layer, s->sp_r);
            if (as) return as;
        }
        for (int l = 0; l < L; l++) {
            if (o->layer_channels[l] > 0) s->sp_r[l] = o->layer_channels[l];
            if (o->layer_channels[l] < 0 || s->sp_r[l] > hd || s->sp_r[l] > DS_LABEL_MAX_R)
                return ds_error(DS_ERR_ARG, "--ds-layer-channels: layer %d: channels must be in [1, %d] for head_dim %d "
                                "(got %d)", l, DS_MIN(hd, DS_LABEL_MAX_R), hd, o->layer_channels[l]);
        }
        int rmax = 1;
        for (int l = 0; l < L; l++) rmax = DS_MAX(rmax, s->sp_r[l]);
        s->sp_rmax = rmax;
        /* channel sets: calibrated ranking (DS) or a seeded random choice */
        s->sp_chan = calloc((size_t)L * KVH * rmax, sizeof(int16_t));
        if (!s->sp_chan) return ds_error(DS_ERR_OOM, "out of memory");
        if (o->method == DS_ATTN_DS) {
            for (int l = 0; l < L; l++)
                for (int h = 0; h < KVH; h++) {
                    const int16_t *rank = ds_calib_ranking(s->m->calib, (ds_stat)o->stat, l, h);
                    if (!rank) return ds_calib_require(s->m->calib, (ds_stat)o->stat);   /* says which it has, how to get it */
                    memcpy(s->sp_chan + ((size_t)l * KVH + h) * rmax, rank, sizeof(int16_t) * (size_t)s->sp_r[l]);
                }
            if (o->label_norm) {
                /* per label channel: subtract the calibrated mean, divide by the std, and score
                 * with q * std (calibrate.h) */
                s->sp_lmean = calloc((size_t)L * KVH * rmax, sizeof(float));
                s->sp_lscale = calloc((size_t)L * KVH * rmax, sizeof(float));
                if (!s->sp_lmean || !s->sp_lscale) return ds_error(DS_ERR_OOM, "out of memory");
                for (int l = 0; l < L; l++)
                    for (int h = 0; h < KVH; h++) {
                        const float *mu = ds_calib_kmean(s->m->calib, l, h), *sd = ds_calib_kstd(s->m->calib, l, h);
                        if (!mu || !sd)
                            return ds_error(DS_ERR_ARG, "--ds-label-norm needs the key moments in the calibration, and "
                                            "this one has none (written before dsinfer stored them, or a paper import): "
                                            "recalibrate with `dsinfer calibrate -m MODEL -f TEXT -o FILE`");
                        /* a channel nearly constant in calibration would get a huge scale-up
                         * (and overflow fp16 labels on a token where it does move): scales are
                         * floored at 1/64 of the head's largest selected std */
                        const size_t at = ((size_t)l * KVH + h) * rmax;
                        float top = 0;
                        for (int j = 0; j < s->sp_r[l]; j++) top = fmaxf(top, sd[s->sp_chan[at + j]]);
                        const float floor_sd = fmaxf(top / 64, 1e-6f);
                        for (int j = 0; j < s->sp_r[l]; j++) {
                            const int ch = s->sp_chan[at + j];
                            s->sp_lmean[at + j] = mu[ch];
                            s->sp_lscale[at + j] = fmaxf(sd[ch], floor_sd);
                        }
                    }
            }
        } else {
            uint64_t x = o->seed * 0x9E3779B97F4A7C15ull + 1;
            int16_t perm[512];
            for (int l = 0; l < L; l++)
                for (int h = 0; h < KVH; h++) {
                    for (int i = 0; i < hd; i++) perm[i] = (int16_t)i;
                    for (int i = hd - 1; i > 0; i--) {  /* Fisher-Yates with splitmix64 */
                        uint64_t z = (x += 0x9E3779B97F4A7C15ull);
                        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
                        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
                        z ^= z >> 31;
                        int j = (int)(z % (uint64_t)(i + 1));
                        int16_t tmp = perm[i]; perm[i] = perm[j]; perm[j] = tmp;
                    }
                    memcpy(s->sp_chan + ((size_t)l * KVH + h) * rmax, perm, sizeof(int16_t) * (size_t)s->sp_r[l]);
                }
        }
        size_t code_bytes = 0;
        for (int l = 0; l < L; l++) {
            s->sp_row_bytes[l] = ds_label_row_bytes(s->sp_r[l], o->label_bits);
            s->sp_code_off[l] = code_bytes;
            code_bytes += (size_t)KVH * s->n_ctx * s->sp_row_bytes[l];
        }
        size_t rows = (size_t)L * KVH * s->n_ctx;
        s->sp_codes = ds_alloc(code_bytes);               /* per layer [KVH][n_ctx][row_bytes[l]] */
        s->sp_lo = ds_alloc(rows * 2);                    /* [L][KVH][n_ctx] fp16 */
        s->sp_step = ds_alloc(rows * 2);                  /* [L][KVH][n_ctx] fp16 */
        if (!s->sp_codes || !s->sp_lo || !s->sp_step) return ds_error(DS_ERR_OOM, "out of memory for the label cache");
        s->bytes += code_bytes + (o->label_bits < 16 ? rows * 4 : 0);
    }
    /* per-thread scratch: scores [n_ctx], selected indices [n_ctx] (two lists), top-k scratch,
     * attention accumulator */
    int nt = ds_pool_size(s->pool);
    s->sp_scores_stride = (size_t)s->n_ctx * (o->group_max ? (size_t)(c->n_head / KVH) : 1);   /* group_max: a row per head */
    s->sp_scores = ds_alloc(sizeof(float) * (size_t)nt * s->sp_scores_stride);
    /* (sp_idx has a row per thread or, in split decode, per KV head: whichever is more) */
    const int idx_rows = DS_MAX(nt, KVH);
    s->sp_idx = ds_alloc(sizeof(int32_t) * (size_t)idx_rows * s->n_ctx);
    s->sp_idx2 = ds_alloc(sizeof(int32_t) * (size_t)nt * s->n_ctx);
    s->sp_topk_bytes = (ds_topk_scratch_bytes(s->n_ctx) + 63) & ~(size_t)63;
    s->sp_topk = ds_alloc(s->sp_topk_bytes * (size_t)nt);
    /* attention partials, one per slice of a selection (ds_sparse_slices) */
    s->sp_acc_stride = (size_t)DS_SPLIT_SLICES_MAX(s->n_ctx) * 16 * hd;
    s->sp_acc = ds_alloc(sizeof(float) * (size_t)nt * s->sp_acc_stride);
    s->sp_st = ds_alloc(sizeof(ds_attn_stats) * (size_t)nt * DS_SPLIT_SLICES_MAX(s->n_ctx));
    if (!s->sp_scores || !s->sp_idx || !s->sp_idx2 || !s->sp_topk || !s->sp_acc || !s->sp_st)
        return ds_error(DS_ERR_OOM, "out of memory");
    if (o->prefetch == DS_PREFETCH_AUTO) o->prefetch = ds_cpu_is_amd();
    if (uses_labels(o->method) && !o->per_head && o->prefetch) {   /* ds_sparse_select's prefetch list */
        s->sp_prev_cap = DS_MIN(ds_sparse_k(s, s->n_ctx), s->n_ctx);
        s->sp_prev = ds_alloc(sizeof(int32_t) * (size_t)L * KVH * s->sp_prev_cap);
        s->sp_prev_n = ds_alloc(sizeof(int) * (size_t)L * KVH);   /* zeroed: nothing selected yet */
        if (!s->sp_prev || !s->sp_prev_n) return ds_error(DS_ERR_OOM, "out of memory");
        s->bytes += sizeof(int32_t) * (size_t)L * KVH * s->sp_prev_cap + sizeof(int) * (size_t)L * KVH;
    }
    s->bytes += (size_t)nt * (s->sp_scores_stride + s->n_ctx) * 4 + (size_t)idx_rows * s->n_ctx * 4 + s->sp_topk_bytes * (size_t)nt +
                (size_t)nt * (s->sp_acc_stride * 4 + sizeof(ds_attn_stats) * DS_SPLIT_SLICES_MAX(s->n_ctx));
    if (o->method == DS_ATTN_QUEST) return ds_quest_init(s);
    if (o->method == DS_ATTN_H2O) return ds_h2o_init(s);
    return DS_OK;
}

void ds_sparse_free(ds_session *s) {
    free(s->sp_dense_layer);
    if (s->sp_diag) fclose(s->sp_diag);
    free(s->sp_chan);
    free(s->sp_r); free(s->sp_row_bytes); free(s->sp_code_off);
    free(s->sp_lmean);
    free(s->sp_lscale);
    ds_free(s->sp_codes); ds_free(s->sp_lo); ds_free(s->sp_step);
    ds_free(s->sp_scores); ds_free(s->sp_idx); ds_free(s->sp_topk); ds_free(s->sp_acc); ds_free(s->sp_st);
    ds_free(s->sp_idx2); ds_free(s->sp_quest);
    ds_free(s->sp_prev); ds_free(s->sp_prev_n);
    ds_free(s->sp_h2o_acc); ds_free(s->sp_h2o_kept); ds_free(s->sp_h2o_ml);
}

static void labels_append(ds_session *s, int layer, int pos, const float *k) {
    const ds_model_info *c = &s->m->info;
    const int hd = c->head_dim, KVH = c->n_head_kv, r = s->sp_r[layer], rs = s->sp_rmax;
    const size_t rb = s->sp_row_bytes[layer];
    uint8_t *codes = s->sp_codes + s->sp_code_off[layer];
    float x[DS_LABEL_MAX_R];
    for (int h = 0; h < KVH; h++) {
        const int16_t *ch = s->sp_chan + ((size_t)layer * KVH + h) * rs;
        /* from the fp16-rounded key, i.e. exactly the row the cache holds, so labels rebuilt
         * from the cache (ds_session_fork) equal those written here */
        for (int j = 0; j < r; j++) x[j] = ds_fp16_to_fp32(ds_fp32_to_fp16(k[h * hd + ch[j]]));
        if (s->sp_lmean) {
            const float *mu = s->sp_lmean + ((size_t)layer * KVH + h) * rs, *sc = s->sp_lscale + ((size_t)layer * KVH + h) * rs;
            for (int j = 0; j < r; j++) x[j] = (x[j] - mu[j]) / sc[j];
        }
        size_t row = ((size_t)layer * KVH + h) * s->n_ctx + pos;
        ds_label_encode(x, r, s->opts.sparse.label_bits, codes + ((size_t)h * s->n_ctx + pos) * rb, s->sp_lo + row,
                        s->sp_step + row);
    }
}

void ds_sparse_append(ds_session *s, int layer, int pos, const float *k) {
    if (s->sp_codes) labels_append(s, layer, pos, k);
    if (s->sp_quest) ds_quest_append(s, layer, pos);
    if (s->sp_h2o_acc) ds_h2o_append(s, layer, pos);
}

ds_status ds_sparse_fork(ds_session *d, const ds_session *src) {
    const ds_model_info *c = &d->m->info;
    const int hd = c->head_dim, KVH = c->n_head_kv;
    if (d->sp_codes || d->sp_quest) {
        float *k = malloc(sizeof(float) * (size_t)KVH * hd);
        if (!k) return ds_error(DS_ERR_OOM, "out of memory");
        for (int l = 0; l < c->n_layer; l++)
            for (int t = 0; t < src->pos; t++) {
                if (d->sp_codes) {
                    for (int h = 0; h < KVH; h++) {
                        const uint16_t *kr = d->k_cache + (((size_t)l * KVH + h) * d->n_ctx + t) * hd;
                        for (int i = 0; i < hd; i++) k[h * hd + i] = ds_fp16_to_fp32(kr[i]);
                    }
                    labels_append(d, l, t, k);
                }
                /* a page's bounds are recomputed from its cached rows: once, at its last row */
                if (d->sp_quest && (t % DS_QUEST_PAGE == DS_QUEST_PAGE - 1 || t == src->pos - 1))
                    ds_quest_append(d, l, t);
            }
        free(k);
    }
    return ds_h2o_fork(d, src);
}

bool ds_sparse_sequential(const ds_session *s) { return s->opts.sparse.method == DS_ATTN_H2O; }

/* The query's label vector: its label channels of this layer and KV head, times each channel's
 * std when the labels are normalised ((k - mean) / std, so q * std scores them). Returns r. */
static int query_labels(const ds_session *s, int layer, int kvh, const float *q, float *ql) {
    const size_t head = (size_t)layer * s->m->info.n_head_kv + kvh;
    const int rl = s->sp_r[layer], rs = s->sp_rmax;
    const int16_t *ch = s->sp_chan + head * rs;
    for (int j = 0; j < rl; j++) ql[j] = q[ch[j]];
    if (s->sp_lscale)
        for (int j = 0; j < rl; j++) ql[j] *= s->sp_lscale[head * rs + j];
    return rl;
}

/* Where the label cache of (layer, kvh) lies: codes [n_ctx][row_bytes], lo and step [n_ctx]. */
static const uint8_t *label_rows(const ds_session *s, int layer, int kvh, const uint16_t **lo, const uint16_t **step) {
    const size_t row = ((size_t)layer * s->m->info.n_head_kv + kvh) * s->n_ctx;
    *lo = s->sp_lo + row;
    *step = s->sp_step + row;
    return s->sp_codes + s->sp_code_off[layer] + (size_t)kvh * s->n_ctx * s->sp_row_bytes[layer];
}

/* Scores of positions [0, n) for one selection unit (qsum over its query heads). */
static void score_positions(ds_session *s, int layer, int kvh, const float *qsum, int n, float *scores,
                            const ds_row_prefetch *pf) {
    const ds_model_info *c = &s->m->info;
    const ds_sparse_opts *o = &s->opts.sparse;
    const int hd = c->head_dim, KVH = c->n_head_kv, r = o->channels;
    const size_t head = (size_t)layer * KVH + kvh;
    const uint16_t *K = s->k_cache + head * s->n_ctx * hd;
    switch (o->method) {
    case DS_ATTN_DS:
    case DS_ATTN_RANDOM: {
        float ql[DS_LABEL_MAX_R];
        const int rl = query_labels(s, layer, kvh, qsum, ql);
        const uint16_t *lo, *step;
        const uint8_t *codes = label_rows(s, layer, kvh, &lo, &step);
        ds_label_score(ql, rl, o->label_bits, codes, lo, step, n, scores, pf);
        break;
    }
    case DS_ATTN_ORACLE:
        for (int t = 0; t < n; t++) scores[t] = ds_dot_f16_f32(K + (size_t)t * hd, qsum, hd);
        break;
    case DS_ATTN_SPARQ: {
        /* the r channels of largest |q| this step, read as K columns (no label cache) */
        int16_t ch[512];
        float mag[512];
        for (int i = 0; i < hd; i++) { ch[i] = (int16_t)i; mag[i] = fabsf(qsum[i]); }
        for (int j = 0; j < r; j++) {            /* partial selection sort: r is small */
            int best = j;
            for (int i = j + 1; i < hd; i++) if (mag[ch[i]] > mag[ch[best]]) best = i;
            int16_t tmp = ch[j]; ch[j] = ch[best]; ch[best] = tmp;
        }
        for (int t = 0; t < n; t++) {
            const uint16_t *kr = K + (size_t)t * hd;
            float sc = 0;
            for (int j = 0; j < r; j++) sc += qsum[ch[j]] * ds_fp16_to_fp32(kr[ch[j]]);
            scores[t] = sc;
        }
        break;
    }
    default:
        DS_ASSERT(0);
    }
}

/* Group scores by the largest per-head score (ds_sparse_opts.group_max): each query head of the
 * group scores the positions with its own q, less its own maximum (so every head's best position
 * scores 0, whatever the scale of its logits), and a position keeps the largest over the heads.
 * The summed score lets the heads with the largest logits outvote a head whose attention is
 * sharp on a few positions; here a position one head wants counts fully. scores: [G][n_ctx]. */
static void score_group_max(ds_session *s, int layer, int kvh, const float *q, int G, int n, float *scores,
                            const ds_row_prefetch *pf) {
    const int hd = s->m->info.head_dim;
    if (uses_labels(s->opts.sparse.method) && G <= 16) {   /* one pass over the labels for all G heads */
        float ql[16][DS_LABEL_MAX_R];
        int rl = 0;
        for (int g = 0; g < G; g++) rl = query_labels(s, layer, kvh, q + (size_t)g * hd, ql[g]);
        const uint16_t *lo, *step;
        const uint8_t *codes = label_rows(s, layer, kvh, &lo, &step);
        uint32_t kmax[16];   /* each head's best score key, found while scoring */
        ds_label_score_multi(&ql[0][0], DS_LABEL_MAX_R, G, rl, s->opts.sparse.label_bits, codes, lo, step, n,
                             scores, (size_t)s->n_ctx, kmax, pf);
        ds_group_max_keys(scores, G, (size_t)s->n_ctx, n, kmax, scores);
        return;
    }
    for (int g = 0; g < G; g++)   /* rows [G][n_ctx] of this thread's scratch */
        score_positions(s, layer, kvh, q + (size_t)g * hd, n, scores + (size_t)g * s->n_ctx, g == 0 ? pf : NULL);
    ds_group_max(scores, G, (size_t)s->n_ctx, n, scores);
}

/* The recent window of a selection of k at context n: the option, at most k - 1 and n - 1; by
 * default k/8 up to DS_RECENT_DEFAULT, so that small budgets stay mostly the top-k's. */
static int recent_window(const ds_sparse_opts *o, int k, int n) {
    const int w = o->recent == DS_RECENT_AUTO ? DS_MIN(DS_RECENT_DEFAULT, k / 8) : DS_MIN(o->recent, k - 1);
    return DS_MIN(w, n - 1);
}

/* Select for one unit: the current token n-1, the recent window before it, and the best of the
 * rest to fill k (top-k methods; fewer where n is small). */
static int select_positions(ds_session *s, int layer, int kvh, const float *q, int G, int n, int k, int ith,
                            int32_t *idx, const ds_row_prefetch *pf) {
    const int hd = s->m->info.head_dim;
    const ds_sparse_opts *o = &s->opts.sparse;
    int m = 0;
    if (o->method == DS_ATTN_QUEST) return ds_quest_select_unit(s, layer, kvh, q, G, n, k, ith, idx);
    if (o->method == DS_ATTN_STREAMING) {
        int sinks = DS_MIN(4, k - 1), recent = k - 1 - sinks;
        for (int t = 0; t < sinks; t++) idx[m++] = t;
        for (int t = DS_MAX(sinks, n - 1 - recent); t < n - 1; t++) idx[m++] = t;
    } else {
        float *scores = s->sp_scores + (size_t)ith * s->sp_scores_stride;
        const int w = recent_window(o, k, n), rest = n - 1 - w;   /* scored: positions [0, rest) */
        if (o->group_max && G > 1) {
            score_group_max(s, layer, kvh, q, G, rest, scores, pf);
        } else {
            float qsum[512];
            for (int i = 0; i < hd; i++) qsum[i] = q[i];
            for (int g = 1; g < G; g++)
                for (int i = 0; i < hd; i++) qsum[i] += q[(size_t)g * hd + i];
            score_positions(s, layer, kvh, qsum, rest, scores, pf);
        }
        m = ds_topk(scores, rest, k - 1 - w, idx, s->sp_topk + (size_t)ith * s->sp_topk_bytes);
        for (int t = rest; t < n - 1; t++) idx[m++] = t;
    }
    idx[m++] = n - 1;
    return m;
}

/* select_positions, and with DSINFER_SEL_DIAG set a line about what the selection keeps. */
static int select_unit(ds_session *s, int layer, int kvh, const float *q, int G, int n, int k, int ith,
                       int32_t *idx, const ds_row_prefetch *pf) {
    const int m = select_positions(s, layer, kvh, q, G, n, k, ith, idx, pf);
    if (s->sp_shuffle) ds_sparse_shuffle(s, layer, kvh, n, idx, m);
    if (s->sp_diag) ds_sparse_diag(s, layer, kvh, q, G, n, idx, m);
    return m;
}

bool ds_sparse_split_ok(const ds_session *s) {
    return s->opts.sparse.method != DS_ATTN_H2O && !s->opts.sparse.per_head;
}

/* Too short a context for the method (n <= k or n < min_context): attend group kvh of row t
 * densely over all n positions and return true; else false. */
static bool attend_dense_if_short(ds_session *s, int layer, int t, int kvh, int n, int ith) {
    if (n > ds_sparse_k(s, n) && n >= s->opts.sparse.min_context) return false;
    const ds_model_info *c = &s->m->info;
    const int hd = c->head_dim, H = c->n_head, KVH = c->n_head_kv, G = H / KVH;
    const size_t head = (size_t)layer * KVH + kvh, off = (size_t)t * H * hd + (size_t)kvh * G * hd;
    float *acc = s->sp_acc + (size_t)ith * s->sp_acc_stride;
    ds_attn_stats st;
    ds_attn_partial(s->q + off, G, hd, s->k_cache + head * s->n_ctx * hd, s->v_cache + head * s->n_ctx * hd, NULL, 0,
                    n, acc, &st);
    ds_attn_merge(1, G, hd, acc, &st, s->att + off);
    return true;
}

/* ds_sparse_select; `decode`: the step's only selection of this group (split decode), which
 * may use and replace the group's prefetch list (prefill's tokens run concurrently). */
static int select_group(ds_session *s, int layer, int t, int kvh, int n, int ith, int32_t *idx, bool decode) {
    const ds_model_info *c = &s->m->info;
    const int hd = c->head_dim, H = c->n_head, KVH = c->n_head_kv, G = H / KVH;
    DS_ASSERT(ds_sparse_split_ok(s));
    if (attend_dense_if_short(s, layer, t, kvh, n, ith)) return -1;
    const float *q = s->q + (size_t)t * H * hd + (size_t)kvh * G * hd;   /* [G][hd] */
    if (!s->sp_prev || !decode) return select_unit(s, layer, kvh, q, G, n, ds_sparse_k(s, n), ith, idx, NULL);
    /* decode (one selection per group and step): the scan prefetches the rows this group selected
     * last step, most of which it selects again (ds_row_prefetch), and keeps this step's for the next */
    const size_t head = (size_t)layer * c->n_head_kv + kvh;
    int32_t *prev = s->sp_prev + head * s->sp_prev_cap;
    const ds_row_prefetch pf = { { s->k_cache + head * s->n_ctx * hd, s->v_cache + head * s->n_ctx * hd }, prev,
                                 s->sp_prev_n[head], hd * 2 };
    const int m = select_unit(s, layer, kvh, q, G, n, ds_sparse_k(s, n), ith, idx, &pf);
    s->sp_prev_n[head] = DS_MIN(m, s->sp_prev_cap);
    memcpy(prev, idx, sizeof(int32_t) * (size_t)s->sp_prev_n[head]);
    return m;
}

int ds_sparse_select(ds_session *s, int layer, int t, int kvh, int n, int ith, int32_t *idx) {
    return select_group(s, layer, t, kvh, n, ith, idx, true);
}

void ds_sparse_group(ds_session *s, int layer, int t, int kvh, int n, int ith) {
    const ds_model_info *c = &s->m->info;
    const ds_sparse_opts *o = &s->opts.sparse;
    const int hd = c->head_dim, H = c->n_head, KVH = c->n_head_kv, G = H / KVH;
    const size_t head = (size_t)layer * KVH + kvh;
    const uint16_t *K = s->k_cache + head * s->n_ctx * hd, *V = s->v_cache + head * s->n_ctx * hd;
    const float *q = s->q + (size_t)t * H * hd + (size_t)kvh * G * hd;   /* [G][hd] */
    float *out = s->att + (size_t)t * H * hd + (size_t)kvh * G * hd;
    float *acc = s->sp_acc + (size_t)ith * s->sp_acc_stride;
    ds_attn_stats st;
    if (o->method == DS_ATTN_H2O) { ds_h2o_group(s, layer, kvh, q, K, V, out, n, ith); return; }   /* stateful */
    int32_t *idx = s->sp_idx + (size_t)ith * s->n_ctx;
    if (!o->per_head) {
        int m = select_group(s, layer, t, kvh, n, ith, idx, false);
        if (m < 0) return;   /* attended densely */
        /* in the slices split decode attends (ds_sparse_slice_range): the same sums */
        const int slices = ds_sparse_slices(s, n), used = ds_sparse_slices_used(slices, m);
        ds_attn_stats *sts = s->sp_st + (size_t)ith * DS_SPLIT_SLICES_MAX(s->n_ctx);
        for (int j = 0; j < used; j++) {
            int b, e;
            ds_sparse_slice_range(j, slices, m, &b, &e);
            ds_attn_partial(q, G, hd, K, V, idx, b, e, acc + (size_t)j * G * hd, &sts[j]);
        }
        ds_attn_merge(used, G, hd, acc, sts, out);
        return;
    }
    if (attend_dense_if_short(s, layer, t, kvh, n, ith)) return;
    const int k = ds_sparse_k(s, n);
    for (int g = 0; g < G; g++) {   /* per-head: a selection for each query head */
        int m = select_unit(s, layer, kvh, q + (size_t)g * hd, 1, n, k, ith, idx, NULL);
        ds_attn_partial(q + (size_t)g * hd, 1, hd, K, V, idx, 0, m, acc, &st);
        ds_attn_merge(1, 1, hd, acc, &st, out + (size_t)g * hd);
    }
}

int ds_session_label_channels(const ds_session *s, int layer) {
    return s && s->sp_r && layer >= 0 && layer < s->m->info.n_layer ? s->sp_r[layer] : 0;
}

int ds_session_prefetch(const ds_session *s) {
    return s && s->sp_prev != NULL;
}

int ds_session_group_max(const ds_session *s) {
    return s && s->opts.sparse.method != DS_ATTN_DENSE ? s->opts.sparse.group_max : 0;
}

int ds_session_recent(const ds_session *s, int n) {
    if (!s || s->opts.sparse.method == DS_ATTN_DENSE || n < 1) return 0;
    return recent_window(&s->opts.sparse, ds_sparse_k(s, n), n);
}

int ds_sparse_default_channels(int head_dim, int label_bits) {
    if (head_dim < 1 || label_bits < 1) return 1;
    return DS_MIN(head_dim, DS_MAX(1, DS_MAX(head_dim, 128) / label_bits));
}

/* Bytes of one decode step in one layer running the method, per sequence (double-sparsity.md §9).
 * row = one fp16 K or V row of a KV head (2*head_dim bytes); "units" = selections per KV group
 * (1 shared, G per-head), each of which gathers its own K and V rows. Per KV head:
 *   dense / fallback   2*n rows (all K and V)
 *   ds, random         label scan s*(code bytes + 4 for fp16 lo/step below 16 bits) + units*2k rows
 *                      (with per-layer label widths, the code bytes are the mean over the layers)
 *   oracle             s K rows (exact scores, once for the group) + units*k V rows
 *   streaming          units*2k rows
 *   sparq              units*s*r*2 (r K columns per selection) + units*2k rows
 *   quest              cp complete pages' bounds, cp*2*hd*2 (fp16 min+max, read once for the group)
 *                      + units * 2 rows * (16*min(ceil((k-1)/16), cp) + tokens of the current page)
 *   h2o                units * (2*kept rows + kept*8 bytes of fp32 accumulators read and written),
 *                      kept = min(n, k): the evicted rows are never read again
 * where s = n - 1 - W is the rows ds, random, oracle and sparq score: the current token and the
 * recent window of W rows are selected without a score (their K and V rows are among the k).
 * Index lists and the per-step top-k scratch are not counted. */
size_t ds_sparse_step_bytes(const ds_session *s, int n) {
    const ds_model_info *c = &s->m->info;
    const ds_sparse_opts *o = &s->opts.sparse;
    const size_t hd = (size_t)c->head_dim, row = hd * 2, KVH = (size_t)c->n_head_kv;
    const size_t units = o->per_head ? (size_t)(c->n_head / c->n_head_kv) : 1;
    if (n < 0) n = 0;
    const size_t N = (size_t)n, dense = 2 * N * row * KVH;
    if (o->method == DS_ATTN_DENSE || n == 0) return dense;
    const int k = ds_sparse_k(s, n);
    const bool fallback = n <= k || n < o->min_context;
    const size_t K = (size_t)k, S = fallback ? N : (size_t)(n - 1 - recent_window(o, k, n));   /* rows scored */
    size_t scan = 0, rows = 0;
    switch (o->method) {
    case DS_ATTN_H2O: {
        size_t kept = fallback ? N : K;
        return KVH * units * (2 * kept * row + kept * 8);
    }
    case DS_ATTN_DS:
    case DS_ATTN_RANDOM:
        if (fallback) return dense;
        if (s->sp_row_bytes) {   /* per-layer widths: the mean over the layers */
            size_t sum = 0;
            for (int l = 0; l < c->n_layer; l++) sum += s->sp_row_bytes[l] + (o->label_bits < 16 ? 4 : 0);
            scan = S * sum / (size_t)c->n_layer;
        } else
            scan = S * (ds_label_row_bytes(o->channels, o->label_bits) + (o->label_bits < 16 ? 4 : 0));
        rows = units * 2 * K * row;
        break;
    case DS_ATTN_ORACLE:
        if (fallback) return dense;
        scan = S * row;
        rows = units * K * row;
        break;
    case DS_ATTN_STREAMING:
        if (fallback) return dense;
        rows = units * 2 * K * row;
        break;
    case DS_ATTN_SPARQ:
        if (fallback) return dense;
        scan = units * S * (size_t)o->channels * 2;
        rows = units * 2 * K * row;
        break;
    case DS_ATTN_QUEST: {
        if (fallback) return dense;
        size_t cp = (N - 1) / DS_QUEST_PAGE, want = (K - 1 + DS_QUEST_PAGE - 1) / DS_QUEST_PAGE;
        if (want >= cp) return dense;   /* every page selected: no scoring, all rows */
        scan = cp * 2 * hd * 2;
        rows = units * 2 * row * (want * DS_QUEST_PAGE + (N - cp * DS_QUEST_PAGE));
        break;
    }
    default:
        DS_ASSERT(0);
    }
    return KVH * (scan + rows);
}
