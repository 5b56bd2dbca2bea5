/* test_tokenizer.c — BPE tokenizer against llama.cpp goldens, round trips, bulk text.
 *
 * Goldens: tests/data/tokens_<model>.tsv, made by tests/reference/make_token_goldens.sh with
 * llama-tokenize (parse_special on, BOS as the vocabulary asks). Each test skips when its model
 * file has not been fetched. */
#include "test.h"
#include "gguf.h"
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#define SMOLLM2_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"
#define QWEN2_FILE "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"

typedef struct { gguf_file *g; ds_tokenizer *t; } tok_model;

static bool load(const char *path, tok_model *m) {
    m->g = NULL; m->t = NULL;
    if (gguf_open(path, &m->g) != DS_OK) { fprintf(stderr, "    gguf_open: %s\n", ds_last_error()); return false; }
    if (ds_tokenizer_new(m->g, &m->t) != DS_OK) {
        fprintf(stderr, "    ds_tokenizer_new: %s\n", ds_last_error());
        gguf_close(m->g);
        return false;
    }
    return true;
}

static void unload(tok_model *m) { ds_tokenizer_free(m->t); gguf_close(m->g); }

/* Read a data file from tests/data, whether run from the repo root or elsewhere. */
static char *read_data(const char *name, size_t *len) {
    char path[1024];
    const char *dirs[3] = { getenv("DSINFER_TEST_DATA"), "tests/data", NULL };
    char here[512];
    snprintf(here, sizeof here, "%s", __FILE__);
    char *slash = strrchr(here, '/');
    if (slash) { strcpy(slash, "/data"); dirs[2] = here; }
    for (int i = 0; i < 3; i++) {
        if (!dirs[i]) continue;
        snprintf(path, sizeof path, "%s/%s", dirs[i], name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *buf = malloc((size_t)n + 1);
        if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
            buf[n] = 0; *len = (size_t)n; fclose(f); return buf;
        }
        free(buf); fclose(f);
    }
    return NULL;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Undo the goldens' escaping (\\ \t \n \r \xNN) in place; returns the length, -1 if malformed. */
static long unescape(char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') { s[o++] = s[i]; continue; }
        if (++i >= n) return -1;
        switch (s[i]) {
        case '\\': s[o++] = '\\'; break;
        case 't': s[o++] = '\t'; break;
        case 'n': s[o++] = '\n'; break;
        case 'r': s[o++] = '\r'; break;
        case 'x': {
            int hi = i + 1 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) return -1;
            s[o++] = (char)(hi * 16 + lo);
            i += 2;
            break;
        }
        default: return -1;
        }
    }
    return (long)o;
}

/* Concatenated pieces of toks (specials rendered); malloc'd, length in *len. */
static char *detokenize(const ds_tokenizer *t, const int32_t *toks, int n, size_t *len) {
    size_t cap = 64, o = 0;
    char *buf = malloc(cap);
    for (int i = 0; buf && i < n; i++) {
        char piece[256];
        int k = ds_tokenizer_piece(t, toks[i], true, piece, (int)sizeof piece);
        if (k < 0) { free(buf); return NULL; }
        if (o + (size_t)k + 1 > cap) {
            while (o + (size_t)k + 1 > cap) cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); return NULL; }
            buf = nb;
        }
        memcpy(buf + o, piece, (size_t)k);
        o += (size_t)k;
    }
    *len = o;
    return buf;
}

static void print_ids(const char *label, const int32_t *ids, int n) {
    fprintf(stderr, "      %s:", label);
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Encode every golden string; ids must match llama.cpp and decode must give the text back. */
static void run_goldens(const char *model_file, const char *tsv) {
    const char *path = test_model_path_named(model_file);
    if (!path) SKIP("model not fetched");
    size_t len;
    char *data = read_data(tsv, &len);
    CHECK_MSG(data != NULL, "cannot read tests/data/%s", tsv);
    tok_model m;
    if (!load(path, &m)) { free(data); CHECK(!"tokenizer load failed"); }

    int n_cases = 0, n_bad_ids = 0, n_bad_trip = 0, n_bad_line = 0;
    char *line = data;
    while (line < data + len) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        char *end = nl ? nl : data + len;
        char *next = nl ? nl + 1 : data + len;
        if (end == line || line[0] == '#') { line = next; continue; }
        char *tab = memchr(line, '\t', (size_t)(end - line));
        if (!tab) { n_bad_line++; line = next; continue; }
        *tab = 0; *end = 0;
        long tl = unescape(line, (size_t)(tab - line));
        if (tl < 0) { n_bad_line++; line = next; continue; }
        int32_t want[512]; int n_want = 0;
        for (char *p = tab + 1; *p && n_want < 512;) {
            char *q;
            long v = strtol(p, &q, 10);
            if (q == p) break;
            want[n_want++] = (int32_t)v;
            p = q;
        }
        n_cases++;

        int32_t *got = NULL; int n_got = 0;
        ds_status st = ds_tokenizer_encode(m.t, line, (size_t)tl, true, true, &got, &n_got);
        if (st != DS_OK) { fprintf(stderr, "    encode failed: %s\n", ds_last_error()); n_bad_ids++; line = next; continue; }
        if (n_got != n_want || memcmp(got, want, (size_t)n_got * sizeof *got) != 0) {
            if (n_bad_ids++ < 5) {
                fprintf(stderr, "    MISMATCH on case %d \"%.*s\"\n", n_cases, (int)tl, line);
                print_ids("want", want, n_want);
                print_ids("got ", got, n_got);
            }
        }
        size_t dl = 0;
        char *dec = detokenize(m.t, got, n_got, &dl);
        if (!dec || dl != (size_t)tl || memcmp(dec, line, dl) != 0) {
            if (n_bad_trip++ < 5) fprintf(stderr, "    round trip differs for case %d\n", n_cases);
        }
        free(dec);
        free(got);
        line = next;
    }
    fprintf(stderr, "    %s: %d strings, %d id mismatches, %d round-trip failures\n",
            tsv, n_cases, n_bad_ids, n_bad_trip);
    unload(&m);
    free(data);
    CHECK(n_bad_line == 0);
    CHECK(n_cases >= 35);
    CHECK(n_bad_ids == 0);
    CHECK(n_bad_trip == 0);
}

TEST(tokenizer_goldens_smollm2) { run_goldens(SMOLLM2_FILE, "tokens_smollm2.tsv"); }
TEST(tokenizer_goldens_qwen2) { run_goldens(QWEN2_FILE, "tokens_qwen2.tsv"); }

static int encode_n(const ds_tokenizer *t, const char *s, bool special, int32_t *first) {
    int32_t *ids = NULL; int n = 0;
    if (ds_tokenizer_encode(t, s, strlen(s), false, special, &ids, &n) != DS_OK) return -1;
    *first = n > 0 ? ids[0] : -1;
    free(ids);
    return n;
}

/* Special-token handling, EOG and decode details that the goldens do not cover. */
TEST(tokenizer_specials_and_eog) {
    const char *path = test_model_path_named(SMOLLM2_FILE);
    if (!path) SKIP("model not fetched");
    tok_model m;
    CHECK(load(path, &m));
    const ds_tokenizer *t = m.t;
    int32_t im_end = ds_tokenizer_find(t, "<|im_end|>"), first = -1;
    CHECK(im_end >= 0);
    CHECK(encode_n(t, "<|im_end|>", true, &first) == 1 && first == im_end);
    CHECK(encode_n(t, "<|im_end|>", false, &first) > 1);   /* plain text without parse_special */
    CHECK(ds_tokenizer_is_eog(t, im_end));
    CHECK(ds_tokenizer_is_eog(t, ds_tokenizer_eos(t)));
    CHECK(ds_tokenizer_is_eog(t, ds_tokenizer_find(t, "<|endoftext|>")));
    CHECK(!ds_tokenizer_is_eog(t, ds_tokenizer_find(t, "<|im_start|>")));
    CHECK(!ds_tokenizer_is_eog(t, ds_tokenizer_find(t, "Hello")));
    CHECK(!ds_tokenizer_is_eog(t, -1) && !ds_tokenizer_is_eog(t, ds_tokenizer_n_vocab(t)));
    char buf[64];
    CHECK(ds_tokenizer_piece(t, im_end, false, buf, sizeof buf) == 0);  /* control: hidden */
    CHECK(ds_tokenizer_piece(t, im_end, true, buf, sizeof buf) == 10 && memcmp(buf, "<|im_end|>", 10) == 0);
    CHECK(ds_tokenizer_piece(t, -1, true, buf, sizeof buf) == -1);
    CHECK(ds_tokenizer_piece(t, ds_tokenizer_n_vocab(t), true, buf, sizeof buf) == -1);
    int32_t sp_hello = ds_tokenizer_find(t, "\xc4\xa0Hello");  /* byte-level " Hello" */
    CHECK(sp_hello >= 0);
    CHECK(ds_tokenizer_piece(t, sp_hello, false, buf, sizeof buf) == 6 && memcmp(buf, " Hello", 6) == 0);
    CHECK(ds_tokenizer_piece(t, sp_hello, false, buf, 3) == 3);        /* truncated to cap */
    CHECK(!ds_tokenizer_add_bos(t));
    /* invalid UTF-8 is tokenized as U+FFFD, like llama.cpp; nothing crashes */
    int32_t *ids = NULL; int n = 0;
    CHECK(ds_tokenizer_encode(t, "a\xff\xc3(\xe2\x82", 6, true, true, &ids, &n) == DS_OK && n > 0);
    free(ids);
    CHECK(ds_tokenizer_encode(t, NULL, 0, true, true, &ids, &n) == DS_OK && n == 0);
    free(ids);
    unload(&m);
}

/* Qwen2.5: user-defined tokens (<tool_call>) match even without parse_special. */
TEST(tokenizer_qwen2_user_defined) {
    const char *path = test_model_path_named(QWEN2_FILE);
    if (!path) SKIP("model not fetched");
    tok_model m;
    CHECK(load(path, &m));
    int32_t tc = ds_tokenizer_find(m.t, "<tool_call>"), first = -1;
    CHECK(tc >= 0);
    CHECK(encode_n(m.t, "<tool_call>", false, &first) == 1 && first == tc);
    CHECK(encode_n(m.t, "<|im_start|>", false, &first) > 1);
    CHECK(ds_tokenizer_is_eog(m.t, ds_tokenizer_find(m.t, "<|im_end|>")));
    CHECK(ds_tokenizer_is_eog(m.t, ds_tokenizer_find(m.t, "<|endoftext|>")));
    unload(&m);
}

/* A few hundred KB of mixed text: must tokenize (reasonably fast) and round-trip exactly. */
static void run_bulk(const char *model_file) {
    const char *path = test_model_path_named(model_file);
    if (!path) SKIP("model not fetched");
    size_t glen;
    char *golden = read_data("tokens_qwen2.tsv", &glen);  /* reuse the strings as material */
    static const char *const extra[] = {
        "The quick brown fox jumps over the lazy dog. ",
        "static int add(int a, int b) {\n    return a + b;\n}\n\n",
        "Numbers: 0 12 345 6789 3.14159 1e10; ",
        "Ünïcödé, 中文, 日本語, 한국어, Русский, emoji 😀👍🏽🎉 ",
        "\t\t  mixed   whitespace \r\n\n",
        "I'm sure they've said we'll see what's done. ",
    };
    size_t cap = 400000, n = 0;
    char *text = malloc(cap);
    CHECK(text != NULL);
    unsigned rng = 12345;
    while (n + 512 < cap) {
        rng = rng * 1103515245u + 12345u;
        const char *s;
        size_t sl;
        if (golden && (rng >> 16) % 3 == 0) {  /* a random slice of the golden file */
            size_t at = (rng >> 8) % glen, e = at + 1 + (rng >> 4) % 200;
            if (e > glen) e = glen;
            /* cut at character boundaries: invalid UTF-8 would not round-trip (-> U+FFFD) */
            while (at < e && (golden[at] & 0xC0) == 0x80) at++;
            while (e < glen && (golden[e] & 0xC0) == 0x80) e++;
            s = golden + at; sl = e - at;
        } else {
            s = extra[(rng >> 16) % (sizeof extra / sizeof *extra)]; sl = strlen(s);
        }
        memcpy(text + n, s, sl);
        n += sl;
    }
    free(golden);
    tok_model m;
    if (!load(path, &m)) { free(text); CHECK(!"tokenizer load failed"); }
    int32_t *ids = NULL; int n_ids = 0;
    double t0 = ds_time_s();
    ds_status st = ds_tokenizer_encode(m.t, text, n, false, false, &ids, &n_ids);
    double dt = ds_time_s() - t0;
    fprintf(stderr, "    %s: %zu bytes -> %d tokens in %.3f s (%.1f MB/s)\n", model_file, n, n_ids, dt,
            (double)n / 1e6 / (dt > 0 ? dt : 1e-9));
    size_t dl = 0;
    char *dec = st == DS_OK ? detokenize(m.t, ids, n_ids, &dl) : NULL;
    bool same = dec && dl == n && memcmp(dec, text, n) == 0;
    free(dec); free(ids); free(text);
    unload(&m);
    CHECK(st == DS_OK);
    CHECK(n_ids > 0);
    CHECK(same);
}

TEST(tokenizer_bulk_smollm2) { run_bulk(SMOLLM2_FILE); }
TEST(tokenizer_bulk_qwen2) { run_bulk(QWEN2_FILE); }
