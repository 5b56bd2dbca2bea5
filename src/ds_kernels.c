/* ds_kernels.c — Double Sparsity selection step on the CPU: label encode/decode, the scalar
 * scoring reference, top-k selection, and the run-time choice of SIMD level (the SIMD kernels
 * live in ds_kernels_avx2.c / ds_kernels_avx512.c). Formats and contracts: ds_kernels.h. */
#include "ds_kernels.h"
#include "common.h"

#include <math.h>
#include <stdlib.h>

/* ================================================================ label format */

size_t ds_label_row_bytes(int r, int bits) {
    DS_ASSERT(r >= 1 && r <= DS_LABEL_MAX_R);
    DS_ASSERT(bits == 2 || bits == 4 || bits == 8 || bits == 16);
    return bits == 16 ? (size_t)r * 2 : ((size_t)r * (size_t)bits + 7) / 8;
}

#define FP16_MAX 65504.0f

/* Largest half <= v (|v| <= 65504). Round-to-nearest is at most one half-ulp off, so a single
 * step toward -inf corrects it. */
static uint16_t fp16_round_down(float v) {
    uint16_t h = ds_fp32_to_fp16(v);
    if (ds_fp16_to_fp32(h) > v) {
        if ((h & 0x7fff) == 0) h = 0x8001;            /* +-0 -> smallest negative subnormal */
        else if (h & 0x8000) h++;                     /* negative: larger magnitude */
        else h--;                                     /* positive: smaller magnitude */
    }
    return h;
}

/* Smallest half >= v, for 0 <= v <= 65504. */
static uint16_t fp16_round_up(float v) {
    uint16_t h = ds_fp32_to_fp16(v);
    if (ds_fp16_to_fp32(h) < v) h++;
    return h;
}

static inline unsigned label_code(const uint8_t *row, int j, int bits) {
    return (row[(j * bits) >> 3] >> ((j * bits) & 7)) & ((1u << bits) - 1);
}

void ds_label_encode(const float *x, int r, int bits, uint8_t *codes, uint16_t *lo, uint16_t *step) {
    size_t rb = ds_label_row_bytes(r, bits);
    if (bits == 16) {
        for (int j = 0; j < r; j++) {
            uint16_t h = ds_fp32_to_fp16(x[j]);
            memcpy(codes + 2 * j, &h, 2);
        }
        return;
    }
    float mn = INFINITY, mx = -INFINITY;
    for (int j = 0; j < r; j++) {           /* NaN fails both tests, so it is ignored */
        if (x[j] < mn) mn = x[j];
        if (x[j] > mx) mx = x[j];
    }
    if (mn > mx) mn = mx = 0.0f;            /* every channel NaN */
    mn = DS_MAX(DS_MIN(mn, FP16_MAX), -FP16_MAX);
    mx = DS_MAX(DS_MIN(mx, FP16_MAX), -FP16_MAX);
    const int L = (1 << bits) - 1;
    uint16_t lo16 = fp16_round_down(mn), st16 = 0;
    float lof = ds_fp16_to_fp32(lo16);
    if (mx > lof) {
        /* The range must be covered: take the quotient in double, never round it down on the
         * way to float, then round up to half. */
        double st = ((double)mx - (double)lof) / L;
        float stf = (float)st;
        if ((double)stf < st) stf = nextafterf(stf, INFINITY);
        st16 = fp16_round_up(DS_MIN(stf, FP16_MAX));
    }
    double stepd = ds_fp16_to_fp32(st16);
    memset(codes, 0, rb);
    for (int j = 0; j < r; j++) {
        int c = 0;
        if (stepd > 0) {
            double v = ((double)x[j] - lof) / stepd;    /* NaN: v > 0 is false -> code 0 */
            if (v > 0) c = v >= L ? L : (int)(v + 0.5);
        }
        codes[(j * bits) >> 3] |= (uint8_t)(c << ((j * bits) & 7));
    }
    *lo = lo16;
    *step = st16;
}

void ds_label_decode(const uint8_t *codes, int r, int bits, uint16_t lo, uint16_t step, float *x) {
    (void)ds_label_row_bytes(r, bits);  /* validates r and bits */
    if (bits == 16) {
        for (int j = 0; j < r; j++) {
            uint16_t h;
            memcpy(&h, codes + 2 * j, 2);
            x[j] = ds_fp16_to_fp32(h);
        }
        return;
    }
    float lof = ds_fp16_to_fp32(lo), stf = ds_fp16_to_fp32(step);
    for (int j = 0; j < r; j++) x[j] = lof + stf * (float)label_code(codes, j, bits);
}

/* ================================================================ scoring */

void ds_label_score_ref(const float *qsum, int r, int bits, const uint8_t *codes,
                        const uint16_t *lo, const uint16_t *step, int n, float *scores) {
    size_t rb = ds_label_row_bytes(r, bits);
    if (bits == 16) {
        for (int t = 0; t < n; t++) {
            const uint8_t *row = codes + (size_t)t * rb;
            float s = 0.0f;
            for (int j = 0; j < r; j++) {
                uint16_t h;
                memcpy(&h, row + 2 * j, 2);
                s += qsum[j] * ds_fp16_to_fp32(h);
            }
            scores[t] = s;
        }
        return;
    }
    float qs = 0.0f;
    for (int j = 0; j < r; j++) qs += qsum[j];
    for (int t = 0; t < n; t++) {
        const uint8_t *row = codes + (size_t)t * rb;
        float acc = 0.0f;
        for (int j = 0; j < r; j++) acc += qsum[j] * (float)label_code(row, j, bits);
        scores[t] = ds_fp16_to_fp32(step[t]) * acc + ds_fp16_to_fp32(lo[t]) * qs;
    }
}

/* ================================================================ dispatch */

static int score_none(const float *q, int r, int bits, const uint8_t *c, const uint16_t *lo,
                      const uint16_t *st, int n, float *s, const ds_row_prefetch *pf) {
    (void)q; (void)r; (void)bits; (void)c; (void)lo; (void)st; (void)n; (void)s; (void)pf;
    return 0;
}

static int score_multi_none(const float *q, size_t qs, int G, int r, int bits, const uint8_t *c, const uint16_t *lo,
                            const uint16_t *st, int n, float *s, size_t ss, uint32_t *kmax, const ds_row_prefetch *pf) {
    (void)q; (void)qs; (void)G; (void)r; (void)bits; (void)c; (void)lo; (void)st; (void)n; (void)s; (void)ss; (void)kmax;
    (void)pf;
    return 0;
}

static void key_range_scalar(const float *s, int n, uint32_t *kmin, uint32_t *kmax) {
    uint32_t mn = UINT32_MAX, mx = 0;
    for (int i = 0; i < n; i++) {
        uint32_t key = ds_score_key(s[i]);
        mn = key < mn ? key : mn;
        mx = key > mx ? key : mx;
    }
    *kmin = mn;
    *kmax = mx;
}

static void shifted_max_scalar(const float *s, int G, size_t stride, int n, const float *m, float *out) {
    for (int t = 0; t < n; t++) {
        float v = s[t] - m[0];
        for (int g = 1; g < G; g++) {
            float x = s[(size_t)g * stride + t] - m[g];
            v = x > v ? x : v;
        }
        out[t] = v;
    }
}

static void list_keys_scalar(const float *s, const int32_t *list, int m, uint32_t *keys) {
    for (int i = 0; i < m; i++) keys[i] = ds_score_key(s[list[i]]);
}

static int split_list_scalar(int32_t *list, uint32_t *keys, int m, uint32_t t_hi, uint32_t t_lo, int32_t *out,
                             int out_cap, int *n_keep, uint32_t *kmin, uint32_t *kmax) {
    /* landing inside the range is rare and predictable, so it branches; above or below is not */
    uint32_t mn = UINT32_MAX, mx = 0;
    int no = 0, c = 0;
    for (int i = 0; i < m; i++) {
        const uint32_t key = keys[i];
        const int32_t id = list[i];
        const int hi = key > t_hi;
        if (__builtin_expect(no == out_cap, 0)) {
            if (hi) return -1;
        } else {
            out[no] = id;
            no += hi;
        }
        if (!hi && key >= t_lo) {   /* c <= i: compacting in place is safe */
            list[c] = id;
            keys[c++] = key;
            mn = key < mn ? key : mn;
            mx = key > mx ? key : mx;
        }
    }
    *n_keep = c;
    *kmin = mn;
    *kmax = mx;
    return no;
}

static void sample_scalar(const float *s, int S, int stride, int nb, uint32_t *bin, float *mn, float *mx, int *n_top) {
    float lo = INFINITY, hi = -INFINITY;
    int top = 0;
    for (int j = 0; j < S; j++) {
        const float v = s[(size_t)j * stride];
        if (v - v == 0.0f) {                      /* finite */
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        } else if (v == INFINITY) {
            top++;
        }
    }
    const float inv = ds_sample_inv_width(lo, hi, nb);
    for (int j = 0; j < S; j++) {
        const float v = s[(size_t)j * stride], d = (v - lo) * inv;   /* >= 0; +inf if v - lo overflows */
        bin[j] = v - v != 0.0f ? (uint32_t)nb : d >= (float)(nb - 1) ? (uint32_t)(nb - 1) : (uint32_t)d;
    }
    *mn = lo;
    *mx = hi;
    *n_top = top;
}

static int classify_scalar(const float *s, int n, uint32_t t_hi, uint32_t t_lo, int32_t *out,
                           int out_cap, int32_t *cand, int *n_cand) {
    /* branch-free but for the rare full-output case; cand has room for n + 16 */
    int no = 0, nc = 0;
    for (int i = 0; i < n; i++) {
        uint32_t key = ds_score_key(s[i]);
        int hi = key > t_hi;
        if (__builtin_expect(no == out_cap, 0)) {
            if (hi) return -1;
        } else {
            out[no] = i;
            no += hi;
        }
        cand[nc] = i;
        nc += !hi & (key >= t_lo);
    }
    *n_cand = nc;
    return no;
}

enum { LVL_SCALAR, LVL_AVX2, LVL_AVX512, LVL_N };
static const char *const g_level_names[LVL_N] = { "scalar", "avx2", "avx512" };
static ds_dsk_kernels g_levels[LVL_N];
static int g_level_ok[LVL_N];
static int g_best, g_active_level;
static const ds_dsk_kernels *g_active;

static void dsk_init(void) {
    ds_dsk_kernels *k = &g_levels[LVL_SCALAR];
    k->score = score_none;
    k->key_range = key_range_scalar;
    k->classify = classify_scalar;
    k->shifted_max = shifted_max_scalar;
    k->score_multi = score_multi_none;
    k->list_keys = list_keys_scalar;
    k->split_list = split_list_scalar;
    k->sample = sample_scalar;
    g_level_ok[LVL_SCALAR] = 1;
    g_best = LVL_SCALAR;
    int avx2, avx512;
    ds_cpu_simd_levels(&avx2, &avx512);
    g_levels[LVL_AVX2] = g_levels[LVL_SCALAR];
    if (avx2) {
        ds_dsk_fill_avx2(&g_levels[LVL_AVX2]);
        g_level_ok[LVL_AVX2] = 1;
        g_best = LVL_AVX2;
    }
    g_levels[LVL_AVX512] = g_levels[LVL_AVX2];
    if (avx2 && avx512) {
        ds_dsk_fill_avx512(&g_levels[LVL_AVX512]);
        g_level_ok[LVL_AVX512] = 1;
        g_best = LVL_AVX512;
    }
    g_active_level = g_best;
    g_active = &g_levels[g_best];
}

__attribute__((constructor)) static void dsk_ctor(void) { if (!g_active) dsk_init(); }

static inline const ds_dsk_kernels *K(void) {
    if (__builtin_expect(g_active == NULL, 0)) dsk_init();   /* a constructor ran before ours */
    return g_active;
}

const char *ds_kernels_level(void) { K(); return g_level_names[g_active_level]; }

void ds_kernels_force_level(const char *level) {
    K();
    int want = g_best;
    if (level) {
        for (int l = 0; l < LVL_N; l++)
            if (!strcmp(level, g_level_names[l])) want = l;
        while (want > 0 && !g_level_ok[want]) want--;
    }
    g_active_level = want;
    g_active = &g_levels[want];
}

void ds_label_score(const float *qsum, int r, int bits, const uint8_t *codes, const uint16_t *lo,
                    const uint16_t *step, int n, float *scores, const ds_row_prefetch *pf) {
    if (n <= 0) return;
    size_t rb = ds_label_row_bytes(r, bits);
    int done = K()->score(qsum, r, bits, codes, lo, step, n, scores, pf);
    if (done < n)
        ds_label_score_ref(qsum, r, bits, codes + (size_t)done * rb, bits == 16 ? lo : lo + done,
                           bits == 16 ? step : step + done, n - done, scores + done);
}

void ds_label_score_multi(const float *q, size_t qstride, int G, int r, int bits, const uint8_t *codes,
                          const uint16_t *lo, const uint16_t *step, int n, float *scores, size_t sstride,
                          uint32_t *kmax, const ds_row_prefetch *pf) {
    if (n <= 0) return;
    const ds_dsk_kernels *kt = K();
    const size_t rb = ds_label_row_bytes(r, bits);
    const int done = kt->score_multi(q, qstride, G, r, bits, codes, lo, step, n, scores, sstride, kmax, pf);
    for (int g = 0; g < G; g++) {   /* the tail (or everything) one query at a time; rows prefetched once */
        float *row = scores + (size_t)g * sstride;
        ds_label_score(q + (size_t)g * qstride, r, bits, codes + (size_t)done * rb, bits == 16 ? lo : lo + done,
                       bits == 16 ? step : step + done, n - done, row + done, done == 0 && g == 0 ? pf : NULL);
        if (kmax && done < n) {   /* the rows' keys past what the kernel scored */
            uint32_t kmin, kx;
            kt->key_range(row + done, n - done, &kmin, &kx);
            kmax[g] = done > 0 && kmax[g] > kx ? kmax[g] : kx;
        }
    }
}

void ds_group_max_keys(const float *s, int G, size_t stride, int n, const uint32_t *kmax, float *scores) {
    if (n <= 0 || G <= 0) return;
    float m[64];
    DS_ASSERT(G <= 64);
    for (int g = 0; g < G; g++) {
        uint32_t u = (kmax[g] & 0x80000000u) ? (kmax[g] & 0x7fffffffu) : ~kmax[g];   /* ds_score_key inverted */
        memcpy(&m[g], &u, 4);
    }
    K()->shifted_max(s, G, stride, n, m, scores);
}

void ds_group_max(const float *s, int G, size_t stride, int n, float *scores) {
    if (n <= 0 || G <= 0) return;
    const ds_dsk_kernels *kt = K();
    uint32_t kmax[64];
    DS_ASSERT(G <= 64);
    for (int g = 0; g < G; g++) {   /* each head's best, from its keys' range (the SIMD pass) */
        uint32_t kmin;
        kt->key_range(s + (size_t)g * stride, n, &kmin, &kmax[g]);
    }
    ds_group_max_keys(s, G, stride, n, kmax, scores);
}

/* ================================================================ top-k
 *
 * Everything works on the keys of ds_score_key: unsigned integers in score order, so ties,
 * +-0, infinities and NaN need no special cases. Two building blocks:
 *  - radix select: the keys' [min, max] range is cut into <= 2048 equal bins (a power-of-two
 *    width, so bin = (key - min) >> shift); one histogram finds the bin T holding the k-th
 *    largest; everything above T is selected, bin T's members become the next, narrower round.
 *    Each round divides the key range by 2^8..2^11, so a few rounds at most, usually 1-2.
 *  - the bracket: a strided sample of the scores gives two keys t_lo <= t_hi between which the
 *    k-th largest lies with high probability (3.5 sigma of the sample quantile on each side).
 *    One streaming pass (SIMD, branch-free) then puts key > t_hi straight into the output and
 *    t_lo..t_hi into a short candidate list, finished by radix select. If the counts show the
 *    bracket missed, the full radix select runs instead: the result never depends on luck,
 *    and the thresholds need not be exact order statistics of the sample.
 * Candidate lists are kept in index order, so "lowest index wins" among equal keys is simply
 * "take the first ones". The histogram pass is the slow part (~1 ns/element: consecutive
 * increments of one bin wait on each other), which is why the full array gets it only as a
 * fallback. */

#define HB_MAX 11                     /* histogram of up to 2048 bins */
#define SAMPLE_MAX 1024
#define SAMPLE_MIN_N 1024             /* below this the plain radix select is as fast */

size_t ds_topk_scratch_bytes(int n) {
    size_t m = (size_t)(n > 0 ? n : 0) + 16;
    return ((size_t)(1u << HB_MAX) + SAMPLE_MAX + 2 * m) * 4;
}

/* Bin layout for keys in [kmin, kmax] (kmin < kmax) with at most 2^hb bins. */
static int bin_shift(uint32_t span, int hb) {
    int bits = 32 - __builtin_clz(span);
    return bits > hb ? bits - hb : 0;
}

/* About a quarter as many bins as elements (256..2048): clearing and scanning the bins is
 * part of the cost, and a second round over a bin of a few elements is cheap. */
static int hist_bits(int m) {
    int hb = 8;
    while (hb < HB_MAX && (4 << hb) < m) hb++;
    return hb;
}

/* Append to out the `need` largest (ties: earliest in the list) of the m indices in list
 * (increasing index order); list is clobbered, keys[] (room for m + 16) is scratch. [mn, mx] must
 * contain the keys of all listed scores (a loose range only costs resolution). Returns the
 * count appended. Each round: a histogram of the keys (scalar: it is a chain of increments),
 * then the split of the list around bin T by the SIMD kernel. */
static int select_list(const ds_dsk_kernels *kt, const float *s, int32_t *list, uint32_t *keys, int m, int need,
                       uint32_t mn, uint32_t mx, int32_t *out, uint32_t *hist) {
    int no = 0;
    if (need > 0 && need < m) kt->list_keys(s, list, m, keys);
    while (need > 0) {
        if (need >= m) {
            memcpy(out + no, list, (size_t)m * 4);
            return no + m;
        }
        if (mn == mx) {                          /* all tied: the first `need` in index order */
            memcpy(out + no, list, (size_t)need * 4);
            return no + need;
        }
        int sh = bin_shift(mx - mn, hist_bits(m)), nb = (int)((mx - mn) >> sh) + 1;
        memset(hist, 0, (size_t)nb * 4);
        for (int i = 0; i < m; i++) hist[(keys[i] - mn) >> sh]++;
        int T = nb - 1, above = 0;
        while (above + (int)hist[T] < need) above += (int)hist[T--];
        /* bin T is the key range [t_lo, t_hi]: above it straight out (fewer than need fit), in it
         * the next round's list */
        const uint32_t t_lo = mn + ((uint32_t)T << sh);
        const uint64_t hi = (uint64_t)t_lo + ((uint64_t)1 << sh) - 1;
        const uint32_t t_hi = hi > mx ? mx : (uint32_t)hi;
        int c;
        const int got = kt->split_list(list, keys, m, t_hi, t_lo, out + no, need, &c, &mn, &mx);
        DS_ASSERT(got == above && c == (int)hist[T]);
        no += above;
        need -= above;
        m = c;
    }
    return no;
}

/* Exact radix select over the whole array: SIMD range pass, scalar histogram, SIMD classify
 * pass (bin > T and bin == T are key ranges, so the bracket classifier does it). */
static int select_full(const ds_dsk_kernels *kt, const float *s, int n, int k, int32_t *out,
                       int32_t *cand, uint32_t *ckeys, uint32_t *hist) {
    uint32_t mn, mx;
    kt->key_range(s, n, &mn, &mx);
    if (mn == mx) {
        for (int i = 0; i < k; i++) out[i] = i;
        return k;
    }
    int sh = bin_shift(mx - mn, hist_bits(n)), nb = (int)((mx - mn) >> sh) + 1;
    memset(hist, 0, (size_t)nb * 4);
    for (int i = 0; i < n; i++) hist[(ds_score_key(s[i]) - mn) >> sh]++;
    int T = nb - 1, above = 0;
    while (above + (int)hist[T] < k) above += (int)hist[T--];
    uint32_t t_lo = mn + ((uint32_t)T << sh);
    uint64_t hi = (uint64_t)t_lo + ((uint64_t)1 << sh) - 1;     /* last key of bin T */
    uint32_t t_hi = hi > UINT32_MAX ? UINT32_MAX : (uint32_t)hi;
    int nc = 0;
    int no = kt->classify(s, n, t_hi, t_lo, out, k, cand, &nc);
    DS_ASSERT(no == above);
    return no + select_list(kt, s, cand, ckeys, nc, k - no, t_lo, t_hi, out + no, hist);
}

/* Thresholds from a strided sample of S scores: one histogram over the sample's finite value
 * range, linear in value (so a narrow score distribution still spreads over many bins); +inf
 * and NaN/-inf are counted apart, above and below all bins. Returns 0 if useless. */
static int sample_bracket(const ds_dsk_kernels *kt, const float *s, int n, int k, uint32_t *hist, uint32_t *bin,
                          uint32_t *t_hi, uint32_t *t_lo) {
    int S = n >= 16 * SAMPLE_MAX ? SAMPLE_MAX : n / 16, stride = n / S;
    double p = (double)k / n, e = p * S, margin = 3.5 * sqrt(S * p * (1.0 - p)) + 2.0;
    int r_hi = (int)floor(e - margin), r_lo = (int)ceil(e + margin);
    if (r_lo >= S) return 0;                       /* bracket would hold nearly everything */
    const int nb = S / 2;                          /* ~0.5 sample per bin on average */
    float mn, mx;
    int n_top;
    kt->sample(s, S, stride, nb, bin, &mn, &mx, &n_top);
    memset(hist, 0, (size_t)(nb + 1) * 4);        /* bin nb: the non-finite samples, ignored */
    for (int j = 0; j < S; j++) hist[bin[j]]++;
    const double lo = mn, width = mx > mn ? ((double)mx - mn) / nb : 1.0;
    /* walk down from the top; the rank of r falls in bin B (or above all / below all) */
    int above = n_top, B = nb - 1;
    *t_hi = UINT32_MAX;                            /* rank r_hi < 0 or among +inf: no direct output */
    if (r_hi >= n_top) {
        while (B >= 0 && above + (int)hist[B] <= r_hi) above += (int)hist[B--];
        if (B < 0) return 0;
        uint32_t key = ds_score_key((float)(lo + (B + 1) * width));   /* values of bins > B */
        *t_hi = key > 0 ? key - 1 : 0;
    }
    if (r_lo < n_top) {
        *t_lo = ds_score_key(INFINITY);
    } else {                                       /* continue the walk down from r_hi's bin */
        if (B < 0 || r_hi < n_top) { B = nb - 1; above = n_top; }
        while (B >= 0 && above + (int)hist[B] <= r_lo) above += (int)hist[B--];
        if (B < 0) return 0;                       /* the rank is among NaN/-inf */
        *t_lo = ds_score_key((float)(lo + B * width));
    }
    return *t_lo > 0;
}

int ds_topk(const float *scores, int n, int k, int32_t *idx_out, void *scratch) {
    if (n <= 0 || k <= 0) return 0;
    if (k >= n) {
        for (int i = 0; i < n; i++) idx_out[i] = i;
        return n;
    }
    uint32_t *hist = (uint32_t *)scratch, *smp = hist + (1u << HB_MAX);
    int32_t *cand = (int32_t *)(smp + SAMPLE_MAX);
    uint32_t *ckeys = (uint32_t *)cand + n + 16;
    const ds_dsk_kernels *kt = K();
    uint32_t t_hi, t_lo;
    if (n >= SAMPLE_MIN_N && sample_bracket(kt, scores, n, k, hist, smp, &t_hi, &t_lo)) {
        int nc = 0;
        int no = kt->classify(scores, n, t_hi, t_lo, idx_out, k, cand, &nc);
        if (no >= 0 && no + nc >= k)               /* else the k-th largest is outside */
            return no + select_list(kt, scores, cand, ckeys, nc, k - no, t_lo, t_hi, idx_out + no, hist);
    }
    return select_full(kt, scores, n, k, idx_out, cand, ckeys, hist);
}

typedef struct { uint32_t key; int32_t idx; } key_idx;

static int cmp_key_idx(const void *a, const void *b) {
    const key_idx *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;     /* larger key first */
    return x->idx < y->idx ? -1 : (x->idx > y->idx);           /* then lower index */
}

int ds_topk_ref(const float *scores, int n, int k, int32_t *idx_out) {
    if (n <= 0 || k <= 0) return 0;
    if (k > n) k = n;
    key_idx *a = malloc((size_t)n * sizeof *a);
    DS_ASSERT(a != NULL);
    for (int i = 0; i < n; i++) { a[i].key = ds_score_key(scores[i]); a[i].idx = i; }
    qsort(a, (size_t)n, sizeof *a, cmp_key_idx);
    for (int i = 0; i < k; i++) idx_out[i] = a[i].idx;
    free(a);
    return k;
}
