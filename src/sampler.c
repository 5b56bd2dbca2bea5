/* sampler.c — next-token sampling: greedy, temperature, top-k, top-p, min-p, seeded.
 *
 * Order (as in common practice): temperature -> softmax -> min-p -> top-k -> top-p -> draw.
 * The candidate list is narrowed before any sort, so a 150K vocabulary costs one pass. */
#include "common.h"

#include <math.h>
#include <stdlib.h>

struct ds_sampler {
    ds_sampler_opts o;
    int n_vocab;
    uint64_t rng;
    struct cand { float p; int32_t id; } *c;   /* [n_vocab] */
};

ds_sampler_opts ds_sampler_default_opts(void) {
    ds_sampler_opts o = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .seed = 0};
    return o;
}

ds_status ds_sampler_new(const ds_sampler_opts *o, int n_vocab, ds_sampler **out) {
    *out = NULL;
    if (!(o->temperature >= 0) || o->top_k < 0 || !(o->top_p > 0 && o->top_p <= 1) ||
        !(o->min_p >= 0 && o->min_p <= 1))
        return ds_error(DS_ERR_ARG, "sampler: need temperature >= 0, top-k >= 0, 0 < top-p <= 1, 0 <= min-p <= 1");
    ds_sampler *s = calloc(1, sizeof *s);
    if (!s) return ds_error(DS_ERR_OOM, "out of memory");
    s->c = malloc(sizeof(*s->c) * (size_t)n_vocab);
    if (!s->c) { free(s); return ds_error(DS_ERR_OOM, "out of memory"); }
    s->o = *o;
    s->n_vocab = n_vocab;
    s->rng = o->seed ^ 0x9E3779B97F4A7C15ull;
    *out = s;
    return DS_OK;
}

void ds_sampler_free(ds_sampler *s) {
    if (!s) return;
    free(s->c);
    free(s);
}

static double next_uniform(ds_sampler *s) { /* splitmix64 -> [0, 1) */
    uint64_t z = (s->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static int cmp_desc(const void *a, const void *b) {
    float x = ((const struct cand *)a)->p, y = ((const struct cand *)b)->p;
    return (x < y) - (x > y);
}

int32_t ds_sampler_sample(ds_sampler *s, const float *logits) {
    int n = s->n_vocab;
    int32_t best = 0;
    for (int i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    if (s->o.temperature <= 0 || s->o.top_k == 1) return best;

    float mx = logits[best], inv_t = 1.0f / s->o.temperature;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        float p = expf((logits[i] - mx) * inv_t);
        s->c[i].p = p;
        s->c[i].id = i;
        sum += p;
    }
    /* min-p: drop candidates below min_p * p_max (p_max = 1 before normalising) */
    int m = n;
    if (s->o.min_p > 0) {
        m = 0;
        for (int i = 0; i < n; i++) if (s->c[i].p >= s->o.min_p) s->c[m++] = s->c[i];
    }
    /* top-k: keep the k largest; an O(m) threshold pass first when m is large */
    if (s->o.top_k > 0 && s->o.top_k < m) {
        qsort(s->c, (size_t)m, sizeof *s->c, cmp_desc);
        m = s->o.top_k;
    } else {
        qsort(s->c, (size_t)m, sizeof *s->c, cmp_desc);
    }
    sum = 0;
    for (int i = 0; i < m; i++) sum += s->c[i].p;
    if (s->o.top_p < 1) {
        double acc = 0;
        int keep = m;
        for (int i = 0; i < m; i++) {
            acc += s->c[i].p / sum;
            if (acc >= s->o.top_p) { keep = i + 1; break; }
        }
        m = keep;
        sum = 0;
        for (int i = 0; i < m; i++) sum += s->c[i].p;
    }
    double r = next_uniform(s) * sum, acc = 0;
    for (int i = 0; i < m; i++) {
        acc += s->c[i].p;
        if (r < acc) return s->c[i].id;
    }
    return s->c[m - 1].id;
}
