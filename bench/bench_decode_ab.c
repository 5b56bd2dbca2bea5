/* bench_decode_ab.c — CPU decode at one depth or several, attention settings interleaved step by
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
 *   /tmp/bench_decode_ab MODEL CALIB.json [depths 8192] [rounds 9] [tg 16] [threads 2] [channels 16]
 * depths: one depth, or a comma-separated increasing list: the dense context is prefilled up to
 * each depth in turn (one prefill in all), forked and measured there, and a summary table of the
 * attention speedups over depth follows the per-depth tables.
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

/* The rounds at one depth: a table per setting, and each setting's median attention ms/token and
 * attention speedup over dense into ms[] and sp[]. */
static void run_depth(ds_session *parent, const int32_t *toks, int depth, int rounds, int tg, int channels,
                      double *ms, double *sp) {
    static const char *const names[NSET] = { "dense", "ds max, prefetch", "ds max, no prefetch", "ds sum, prefetch",
                                               "ds sum, no prefetch" };
    ds_session *s[NSET];
    for (int i = 0; i < NSET; i++) {
        ds_sparse_opts sp_o = ds_sparse_default_opts();
        if (i > 0) {
            sp_o.method = DS_ATTN_DS;
            sp_o.tokens_frac = 1.0f / 16;
            sp_o.channels = channels;
            sp_o.group_max = i <= 2;
            sp_o.prefetch = !(i == 2 || i == 4);
        }
        check(ds_session_fork(parent, &sp_o, &s[i]), "fork");
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
        fprintf(stderr, "depth %d: round %d of %d\n", depth, r + 1, rounds);
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
        ms[i] = 1e3 * median(attn[i], rounds);
        sp[i] = median(ra, rounds);
        printf("| %s | %.3f | %.1f | %.2fx | %.2fx | %s |\n", names[i], ms[i], median(w, rounds), sp[i],
               median(rd, rounds), pf);
    }
    fflush(stdout);
    for (int i = 0; i < NSET; i++) ds_session_free(s[i]);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL CALIB.json [depths] [rounds] [tg] [threads] [channels]\n", argv[0]);
        return 2;
    }
    enum { MAX_DEPTHS = 32 };
    int depths[MAX_DEPTHS], nd = 0;
    for (const char *p = argc > 3 ? argv[3] : "8192"; *p && nd < MAX_DEPTHS;) {
        char *end;
        const long d = strtol(p, &end, 10);
        if (end == p || d < 1 || d > (1 << 24) || (nd > 0 && d <= depths[nd - 1]) || (*end && *end != ',')) {
            fprintf(stderr, "bench_decode_ab: depths must be increasing positive integers separated by commas (got '%s')\n",
                    argv[3]);
            return 2;
        }
        depths[nd++] = (int)d;
        p = *end ? end + 1 : end;
    }
    const int rounds = argc > 4 ? atoi(argv[4]) : 9;
    const int tg = argc > 5 ? atoi(argv[5]) : 16, threads = argc > 6 ? atoi(argv[6]) : 2;
    const int channels = argc > 7 ? atoi(argv[7]) : 16;
    if (nd == 0 || rounds < 1 || rounds > MAX_ROUNDS || tg < 1 || threads < 1 || channels < 1) {
        fprintf(stderr, "bench_decode_ab: depths, tg, threads, channels >= 1 and rounds 1..%d\n", MAX_ROUNDS);
        return 2;
    }
    const int maxd = depths[nd - 1];
    ds_model *m;
    check(ds_model_load(argv[1], &m), "loading the model");
    check(ds_model_load_calibration(m, argv[2]), "loading the calibration");
    const ds_model_info *info = ds_model_get_info(m);

    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = maxd + tg + 8;
    so.n_threads = threads;
    ds_session *parent;
    check(ds_session_new(m, &so, &parent), "dense session");
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)(maxd + tg));
    uint32_t rng = 12345;
    for (int i = 0; i < maxd + tg; i++) { rng = rng * 1664525u + 1013904223u; toks[i] = (int32_t)(rng % (uint32_t)info->n_vocab); }
    double ms[MAX_DEPTHS][NSET], sp[MAX_DEPTHS][NSET];
    for (int di = 0; di < nd; di++) {
        const int from = di ? depths[di - 1] : 0;
        fprintf(stderr, "prefilling to %d tokens...\n", depths[di]);
        check(ds_session_eval(parent, toks + from, depths[di] - from, NULL), "prefill");
        if (nd > 1) printf("%sdepth %d:\n\n", di ? "\n" : "", depths[di]);
        run_depth(parent, toks, depths[di], rounds, tg, channels, ms[di], sp[di]);
    }
    printf("\n(medians over %d rounds of %d decode steps per setting at depth%s ", rounds, tg, nd > 1 ? "s" : "");
    for (int di = 0; di < nd; di++) printf("%s%d", di ? ", " : "", depths[di]);
    printf(", %d threads, %d label channels; speedups are medians of the per-round ratios)\n", threads, channels);
    if (nd > 1) {
        printf("\nattention over depth (ms/token; speedup over dense):\n\n");
        printf("| depth | dense | ds max, prefetch | ds max, no prefetch | ds sum, prefetch | ds sum, no prefetch |\n");
        printf("|---|---|---|---|---|---|\n");
        for (int di = 0; di < nd; di++) {
            printf("| %d | %.3f", depths[di], ms[di][0]);
            for (int i = 1; i < NSET; i++) printf(" | %.3f (%.2fx)", ms[di][i], sp[di][i]);
            printf(" |\n");
        }
    }
    ds_session_free(parent);
    free(toks);
    ds_model_free(m);
    return 0;
}
