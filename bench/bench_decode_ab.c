/* bench_decode_ab.c — CPU decode at one depth, several attention settings interleaved step by
 * step on the same prefilled context, so that a noisy machine's drift hits every setting alike.
 *
 * Why: whole `dsinfer bench` runs of one setting after another (bench/ds-cpu-rounds.sh) take a
 * minute each for the 8K prefill, and this project's machines drift by 30% and more between
 * minutes; differences of 10% need settings measured seconds apart. Here one dense session is
 * prefilled once and forked per setting (ds_session_fork); each round runs TG decode steps of
 * every setting in turn (the order rotating by round) from the same depth, and the table gives
 * per setting the median attention ms/token and tok/s over the rounds, and the median of the
 * per-round ratios against dense and, for a setting with the label-scan prefetch, against the
 * same setting without it. Tokens are random ids, as `dsinfer bench` uses.
 *
 * Build and run from the repo root (after `make`):
 *   cc -std=c11 -O2 -Iinclude bench/bench_decode_ab.c build/libdsinfer.a -lcjson -lm -pthread \
 *      -o /tmp/bench_decode_ab
 *   /tmp/bench_decode_ab MODEL CALIB.json [depth 8192] [rounds 9] [tg 16] [threads 2] [channels 16]
 * Settings: dense; ds at k = 1/16 with `channels` label channels, the group's largest head (the
 * default) and the summed score, each with the label-scan prefetch on and off (--ds-prefetch). */
#define _POSIX_C_SOURCE 200809L   /* clock_gettime */
#include "dsinfer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { NSET = 5, MAX_ROUNDS = 99 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double t[MAX_ROUNDS];
    memcpy(t, v, sizeof(double) * (size_t)n);
    qsort(t, (size_t)n, sizeof(double), cmp_d);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static void check(ds_status st, const char *what) {
    if (st != DS_OK) {
        fprintf(stderr, "bench_decode_ab: %s: %s\n", what, ds_last_error());
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL CALIB.json [depth] [rounds] [tg] [threads] [channels]\n", argv[0]);
        return 2;
    }
    const int depth = argc > 3 ? atoi(argv[3]) : 8192, rounds = argc > 4 ? atoi(argv[4]) : 9;
    const int tg = argc > 5 ? atoi(argv[5]) : 16, threads = argc > 6 ? atoi(argv[6]) : 2;
    const int channels = argc > 7 ? atoi(argv[7]) : 16;
    if (depth < 1 || rounds < 1 || rounds > MAX_ROUNDS || tg < 1 || threads < 1 || channels < 1) {
        fprintf(stderr, "bench_decode_ab: depth, tg, threads, channels >= 1 and rounds 1..%d\n", MAX_ROUNDS);
        return 2;
    }
    ds_model *m;
    check(ds_model_load(argv[1], &m), "loading the model");
    check(ds_model_load_calibration(m, argv[2]), "loading the calibration");
    const ds_model_info *info = ds_model_get_info(m);

    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = depth + tg + 8;
    so.n_threads = threads;
    ds_session *parent;
    check(ds_session_new(m, &so, &parent), "dense session");
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)(depth + tg));
    uint32_t rng = 12345;
    for (int i = 0; i < depth + tg; i++) { rng = rng * 1664525u + 1013904223u; toks[i] = (int32_t)(rng % (uint32_t)info->n_vocab); }
    fprintf(stderr, "prefilling %d tokens...\n", depth);
    check(ds_session_eval(parent, toks, depth, NULL), "prefill");

    static const char *const names[NSET] = { "dense", "ds max, prefetch", "ds max, no prefetch", "ds sum, prefetch",
                                               "ds sum, no prefetch" };
    ds_session *s[NSET];
    for (int i = 0; i < NSET; i++) {
        ds_sparse_opts sp = ds_sparse_default_opts();
        if (i > 0) {
            sp.method = DS_ATTN_DS;
            sp.tokens_frac = 1.0f / 16;
            sp.channels = channels;
            sp.group_max = i <= 2;
            sp.prefetch = !(i == 2 || i == 4);
        }
        check(ds_session_fork(parent, &sp, &s[i]), "fork");
    }
    double attn[NSET][MAX_ROUNDS], wall[NSET][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        for (int o = 0; o < NSET; o++) {
            const int i = (o + r) % NSET;   /* rotate who goes first */
            check(ds_session_truncate(s[i], depth), "truncate");
            double t0 = now_s(), a0 = ds_session_attn_seconds(s[i]);
            for (int j = 0; j < tg; j++) check(ds_session_eval(s[i], &toks[depth + j], 1, NULL), "decode");
            wall[i][r] = (now_s() - t0) / tg;
            attn[i][r] = (ds_session_attn_seconds(s[i]) - a0) / tg;
        }
        fprintf(stderr, "round %d of %d\n", r + 1, rounds);
    }
    printf("| setting | attention ms/token | tok/s | attention speedup over dense | decode speedup | prefetch speedup (attention) |\n");
    printf("|---|---|---|---|---|---|\n");
    for (int i = 0; i < NSET; i++) {
        double ra[MAX_ROUNDS], rd[MAX_ROUNDS], rp[MAX_ROUNDS];
        for (int r = 0; r < rounds; r++) {
            ra[r] = attn[0][r] / attn[i][r];
            rd[r] = wall[0][r] / wall[i][r];
            rp[r] = (i == 1 || i == 3) ? attn[i + 1][r] / attn[i][r] : 0;
        }
        double w[MAX_ROUNDS];
        for (int r = 0; r < rounds; r++) w[r] = 1.0 / wall[i][r];
        char pf[32] = "-";
        if (i == 1 || i == 3) snprintf(pf, sizeof pf, "%.2fx", median(rp, rounds));
        printf("| %s | %.3f | %.1f | %.2fx | %.2fx | %s |\n", names[i], 1e3 * median(attn[i], rounds), median(w, rounds),
               median(ra, rounds), median(rd, rounds), pf);
    }
    printf("\n(medians over %d rounds of %d decode steps per setting at depth %d, %d threads, %d label channels; "
           "speedups are medians of the per-round ratios)\n", rounds, tg, depth, threads, channels);
    for (int i = 0; i < NSET; i++) ds_session_free(s[i]);
    ds_session_free(parent);
    free(toks);
    ds_model_free(m);
    return 0;
}
