/* test_gen_model.c — `dsinfer gen-model` (tools/gen_model.c): the weight encoders against the
 * library's decoders, generated tiny models through the GGUF reader, the loader and a session,
 * determinism, the preset shapes, and the flag errors. The numpy reference check of generated
 * models (the independent proof that they are valid) is in tests/reference/check_all.py. */
#include "test.h"
#include "dsinfer.h"
#include "gen_model.h"
#include "gguf.h"
#include "quant.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

/* Run gen-model with -q and the given flags (NULL-terminated); returns its exit status. */
static int gen(const char *first, ...) {
    char *argv[48];
    int argc = 0;
    argv[argc++] = (char *)"gen-model";
    argv[argc++] = (char *)"-q";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 47; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return ds_cmd_gen_model(argc, argv);
}

static char g_dir[64];

/* At exit, so that a test that fails half-way leaves nothing behind either. */
static void remove_dir(void) {
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        char p[400];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(g_dir);
}

/* A file name in the per-run temp directory (created on first use). */
static const char *tmp_path(const char *name) {
    static char buf[8][128];
    static int slot;
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "/tmp/dsinfer_test_gen_XXXXXX");
        if (!mkdtemp(g_dir)) { g_dir[0] = 0; return NULL; }
        atexit(remove_dir);
    }
    char *p = buf[slot++ & 7];
    snprintf(p, 128, "%s/%s", g_dir, name);
    return p;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *pa = test_read_file(a, &na), *pb = test_read_file(b, &nb);
    int same = pa && pb && na == nb && memcmp(pa, pb, na) == 0;
    free(pa);
    free(pb);
    return same;
}

/* logits of every position of tokens [n] (malloc'd, n * n_vocab), or NULL */
static float *eval_logits(const char *path, const int32_t *toks, int n, int *n_vocab) {
    ds_model *m;
    if (ds_model_load(path, &m) != DS_OK) { fprintf(stderr, "    load: %s\n", ds_last_error()); return NULL; }
    ds_session_opts so = ds_session_default_opts();
    so.n_ctx = 64;
    so.n_threads = 2;
    ds_session *s;
    float *lg = NULL;
    if (ds_session_new(m, &so, &s) == DS_OK) {
        *n_vocab = ds_model_get_info(m)->n_vocab;
        lg = malloc(sizeof(float) * (size_t)n * (size_t)*n_vocab);
        if (ds_session_eval(s, toks, n, lg) != DS_OK) {
            fprintf(stderr, "    eval: %s\n", ds_last_error());
            free(lg);
            lg = NULL;
        }
        ds_session_free(s);
    }
    ds_model_free(m);
    return lg;
}

static const int32_t TOKS[6] = { 256, 72, 105, 33, 257, 10 };  /* <|endoftext|> "Hi!" <|im_start|> "\n" */

/* ---------------------------------------------------------------- encoders */

typedef struct { uint32_t type; double bound; } enc_case;  /* max error / amax of the block */

TEST(gen_model_encoders_match_library_decoders) {
    /* Error bounds of round-to-nearest encodings, as a fraction of the block's largest |x|:
     * Q8_0 half a step of amax/127; Q4_0/Q5_0 one step (the value of largest magnitude takes the
     * most negative level, so the other end is clamped); Q4_1/Q5_1 half a step of the range;
     * K formats half a step plus the 6-/8-bit rounding of the sub-block scales (gen_model.c). */
    static const enc_case cases[] = {
        { DS_TYPE_F32, 0 }, { DS_TYPE_F16, 1.0 / 2048 }, { DS_TYPE_BF16, 1.0 / 256 },
        { DS_TYPE_Q8_0, 1.01 / 254 }, { DS_TYPE_Q4_0, 1.01 / 8 }, { DS_TYPE_Q5_0, 1.01 / 16 },
        { DS_TYPE_Q4_1, 1.05 / 15 }, { DS_TYPE_Q5_1, 1.05 / 31 }, { DS_TYPE_Q4_K, 0.11 },
        { DS_TYPE_Q5_K, 0.06 }, { DS_TYPE_Q6_K, 0.025 },
    };
    enum { N = 2048 };
    static float x[N], y[N];
    static uint8_t enc[N * 4];
    uint32_t rng = 12345;
    for (int i = 0; i < N; i++) {
        rng = rng * 1664525u + 1013904223u;
        float u = (float)(rng >> 8) / 16777216.0f - 0.5f;
        int blk = i / 256;  /* super-blocks of different character */
        x[i] = blk == 1 ? 3.0f + u            /* all positive */
             : blk == 2 ? -2.0f + 0.1f * u    /* all negative */
             : blk == 3 ? 0.0f                /* all zero: must decode to exact zeros */
             : blk == 4 ? (i == 1100 ? 40.0f : u)  /* one outlier */
             : blk == 5 ? 0.05f * u           /* small (still normal fp16) scales */
             : u * (1 + blk);
    }
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ds_type t = (ds_type)cases[c].type;
        memset(enc, 0xAB, sizeof enc);
        uint64_t nb = ds_gen_encode_row(t, x, enc, N);
        CHECK_MSG(nb == ds_row_bytes(t, N), "%s: encoded %llu bytes, expected %zu", ds_type_name(t),
                  (unsigned long long)nb, ds_row_bytes(t, N));
        ds_dequant_row_ref(t, enc, y, N);
        int blk = ds_type_info_get(t)->block > 1 ? ds_type_info_get(t)->block : 1;
        for (int b0 = 0; b0 < N; b0 += blk) {
            float amax = 0;
            for (int i = b0; i < b0 + blk; i++) amax = fmaxf(amax, fabsf(x[i]));
            for (int i = b0; i < b0 + blk; i++) {
                /* float types: relative, plus half an fp16 subnormal step (2^-25) */
                double lim = blk == 1 ? cases[c].bound * fabs(x[i]) + (t == DS_TYPE_F16 ? 3e-8 : 0)
                                      : cases[c].bound * amax + 1e-7;
                CHECK_MSG(fabs((double)y[i] - x[i]) <= lim, "%s: element %d: %g decodes to %g (bound %g)",
                          ds_type_name(t), i, x[i], y[i], lim);
                if (i / 256 == 3) CHECK_MSG(y[i] == 0.0f, "%s: zero block decodes to %g", ds_type_name(t), y[i]);
            }
        }
        if (t == DS_TYPE_F16)  /* bit-identical to the library's conversion */
            for (int i = 0; i < N; i++) {
                uint16_t h;
                memcpy(&h, enc + 2 * i, 2);
                CHECK_MSG(h == ds_fp32_to_fp16(x[i]), "f16 of %g: %04x vs %04x", x[i], h, ds_fp32_to_fp16(x[i]));
            }
    }
    CHECK(ds_gen_encode_row(DS_TYPE_Q4_K, x, enc, 32) == 0);   /* not a whole block */
    CHECK(ds_gen_encode_row(DS_TYPE_Q2_K, x, enc, 256) == 0);  /* not an encodable type */
}

/* ---------------------------------------------------------------- generated models */

typedef struct { const char *arch, *type; ds_type id; const char *extra[5]; } model_case;

TEST(gen_model_tiny_loads_and_runs) {
    static const model_case cases[] = {
        { "llama", "f32", DS_TYPE_F32, { NULL } },
        { "llama", "q8_0", DS_TYPE_Q8_0, { NULL } },
        { "qwen2", "q4_1", DS_TYPE_Q4_1, { "--tied", NULL } },
        { "qwen2", "q4_k", DS_TYPE_Q4_K, { "--embd", "256", "--ffn", "256", NULL } },
        { "llama", "q6_k", DS_TYPE_Q8_0, { NULL } },  /* rows of 64 and 128: llama.cpp's fallback */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const model_case *mc = &cases[c];
        char name[64];
        snprintf(name, sizeof name, "tiny-%s-%s.gguf", mc->arch, mc->type);
        const char *path = tmp_path(name);
        CHECK(path);
        const char *e[5];
        for (int i = 0; i < 5; i++) e[i] = mc->extra[i];
        int rc = gen("-o", path, "--arch", mc->arch, "--type", mc->type, e[0], e[1], e[2], e[3], e[4], NULL);
        CHECK_MSG(rc == 0, "gen-model %s %s failed", mc->arch, mc->type);
        ds_gen_plan plan;
        char *pargv[] = { (char *)"gen-model", (char *)"--arch", (char *)mc->arch, (char *)"--type",
                          (char *)mc->type, (char *)e[0], (char *)e[1], (char *)e[2], (char *)e[3], NULL };
        int pargc = 5;
        while (pargv[pargc]) pargc++;
        CHECK(ds_gen_model_plan(pargc, pargv, &plan) == 0);

        /* the reader's checks, and the layout a GGUF v3 writer must produce */
        gguf_file *g;
        ds_status st = gguf_open(path, &g);
        CHECK_MSG(st == DS_OK, "%s", ds_last_error());
        struct stat sb;
        CHECK(stat(path, &sb) == 0 && (uint64_t)sb.st_size == plan.file_bytes);
        CHECK(g->version == 3 && g->alignment == 32 && g->data_offset % 32 == 0);
        CHECK((int)g->n_tensors == plan.n_tensors);
        uint64_t end = 0, params = 0;
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const gguf_tensor *t = &g->tensors[i];
            CHECK(t->offset % 32 == 0 && t->offset >= end);  /* in file order, aligned, no overlap */
            end = t->offset + t->nbytes;
            params += t->ne[0] * t->ne[1];
            CHECK(t->type == (uint32_t)(t->n_dims == 1 ? DS_TYPE_F32 : mc->id));  /* norms, biases F32 */
        }
        CHECK(params == plan.n_params);
        gguf_str s;
        CHECK(gguf_get_str(g, "general.name", &s) == DS_OK);
        char gname[128], expect[128];
        snprintf(expect, sizeof expect, "random tiny %s seed 1", mc->type);
        gguf_str_copy(s, gname, sizeof gname);
        CHECK_MSG(strncmp(gname, expect, strlen(expect)) == 0, "general.name '%s'", gname);
        CHECK((gguf_find_tensor(g, "output.weight") == NULL) == (e[0] && !strcmp(e[0], "--tied")));
        gguf_close(g);

        /* the loader, the tokenizer and a session */
        ds_model *m;
        st = ds_model_load(path, &m);
        CHECK_MSG(st == DS_OK, "%s", ds_last_error());
        const ds_model_info *info = ds_model_get_info(m);
        int qwen = !strcmp(mc->arch, "qwen2");
        CHECK(!strcmp(info->arch, mc->arch) && info->n_layer == 2 && info->n_head == 4 && info->n_head_kv == 2);
        CHECK(info->n_vocab == 300 && info->has_qkv_bias == qwen && info->rope_neox == qwen);
        CHECK(info->n_embd == (c == 3 ? 256 : 64) && info->n_ff == (c == 3 ? 256 : 128));
        int32_t *tk;
        int nt;
        CHECK(ds_tokenize(m, "Hi!<|im_start|>\n", 16, true, true, &tk, &nt) == DS_OK);
        int off = qwen ? 1 : 0;  /* llama adds BOS (add_bos_token), qwen2 does not */
        CHECK_MSG(nt == 6 - off && memcmp(tk, TOKS + off, sizeof(int32_t) * (size_t)nt) == 0, "%d tokens", nt);
        ds_free_tokens(tk);
        char piece[16];
        CHECK(ds_token_to_piece(m, 299, false, piece, sizeof piece) == 6 && !memcmp(piece, "<t299>", 6));
        CHECK(ds_token_is_eog(m, ds_token_eos(m)) && ds_token_bos(m) == 256);
        ds_model_free(m);

        int V;
        float *lg = eval_logits(path, TOKS, 6, &V);
        CHECK(lg);
        for (int p = 0; p < 6; p++) {
            const float *l = lg + (size_t)p * V;
            double sum = 0, sq = 0;
            for (int i = 0; i < V; i++) {
                CHECK_MSG(isfinite(l[i]), "position %d logit %d = %g", p, i, l[i]);
                sum += l[i];
                sq += (double)l[i] * l[i];
            }
            double sd = sqrt(sq / V - (sum / V) * (sum / V));
            /* the scales promise logits of sd ~1: neither flat nor exploding */
            CHECK_MSG(sd > 0.4 && sd < 2.5, "%s %s position %d: logit sd %g", mc->arch, mc->type, p, sd);
            if (p) CHECK(memcmp(l, l - V, sizeof(float) * (size_t)V) != 0);
        }
        free(lg);
    }
}

/* A full prefill chunk of n_batch tokens must give the logits of the same tokens fed one at a
 * time. f32/f16: their activation rows are 4 bytes per element, not the ~1.1 of the 8-bit blocks
 * (the session once sized those buffers for the latter, and a 256-token chunk of an f16 model
 * overran them). q4_k / q6_k: chunks of >= 16 tokens run on the AMX tiles where the CPU has them,
 * single tokens on the AVX-512 path. */
TEST(gen_model_full_prefill_chunk_equals_steps) {
    static const char *types[] = { "f16", "f32", "q4_k", "q6_k" };
    enum { N = 96 };
    int32_t toks[N];
    for (int i = 0; i < N; i++) toks[i] = (int32_t)((i * 37 + 11) % 256);
    for (size_t c = 0; c < sizeof types / sizeof types[0]; c++) {
        char name[64];
        snprintf(name, sizeof name, "chunk-%s.gguf", types[c]);
        const char *path = tmp_path(name);
        CHECK(path);
        CHECK(gen("-o", path, "--type", types[c], "--embd", "256", "--ffn", "512", NULL) == 0);
        ds_model *m;
        CHECK_MSG(ds_model_load(path, &m) == DS_OK, "%s", ds_last_error());
        const int V = ds_model_get_info(m)->n_vocab;
        float *lg[3];   /* one chunk, single steps, one chunk in precise mode (fp32 activations) */
        for (int pass = 0; pass < 3; pass++) {
            ds_session_opts so = ds_session_default_opts();
            so.n_ctx = 128;
            so.n_batch = N;
            so.n_threads = 2;
            if (pass == 2) setenv("DSINFER_PRECISE", "1", 1);
            ds_session *s;
            CHECK_MSG(ds_session_new(m, &so, &s) == DS_OK, "%s", ds_last_error());
            unsetenv("DSINFER_PRECISE");
            if (pass == 1)
                for (int i = 0; i < N; i++) CHECK(ds_session_eval(s, toks + i, 1, NULL) == DS_OK);
            else
                CHECK(ds_session_eval(s, toks, N, NULL) == DS_OK);
            lg[pass] = malloc(sizeof(float) * (size_t)V);
            CHECK(lg[pass]);
            memcpy(lg[pass], ds_session_logits(s), sizeof(float) * (size_t)V);
            for (int i = 0; i < V; i++) CHECK(isfinite(lg[pass][i]));
            ds_session_free(s);
        }
        double e[3] = {0, 0, 0}, den = 0;   /* chunk-steps, steps-precise, chunk-precise */
        for (int i = 0; i < V; i++) {
            e[0] += (double)(lg[0][i] - lg[1][i]) * (lg[0][i] - lg[1][i]);
            e[1] += (double)(lg[1][i] - lg[2][i]) * (lg[1][i] - lg[2][i]);
            e[2] += (double)(lg[0][i] - lg[2][i]) * (lg[0][i] - lg[2][i]);
            den += (double)lg[2][i] * lg[2][i];
        }
        CHECK(den > 0);
        for (int k = 0; k < 3; k++) e[k] = sqrt(e[k] / den);
        /* f32/f16 weights: the same kernels either way. q4_k: 8-bit activations, whose rounding a
         * tiny change upstream can flip (AMX and AVX-512 sum in different orders): held to twice
         * the distance of the single-step path from precise mode */
        const double tol = types[c][0] == 'q' ? 2 * e[1] + 1e-3 : 1e-3;
        printf("    %s: chunk vs steps %.2e (tolerance %.2e); steps vs precise %.2e, chunk vs precise %.2e\n",
               types[c], e[0], tol, e[1], e[2]);
        CHECK_MSG(e[0] < tol, "%s: chunk vs steps rel err %g", types[c], e[0]);
        for (int k = 0; k < 3; k++) free(lg[k]);
        ds_model_free(m);
    }
}

/* q4_k_m mixes types like the real Q4_K_M files: Q6_K attn_v / ffn_down in even layers, Q6_K
 * output, Q4_K elsewhere (so fused GPU matrices meet two types); the model loads and runs. */
TEST(gen_model_q4_k_m_mix) {
    const char *path = tmp_path("tiny-qwen2-q4_k_m.gguf");
    CHECK(path);
    CHECK(gen("-o", path, "--arch", "qwen2", "--type", "q4_k_m", "--layers", "3", "--embd", "256", "--ffn", "256",
              "--untied", NULL) == 0);
    gguf_file *g;
    ds_status st = gguf_open(path, &g);
    CHECK_MSG(st == DS_OK, "%s", ds_last_error());
    static const struct { const char *name; ds_type t; } want[] = {
        { "token_embd.weight", DS_TYPE_Q4_K },     { "output.weight", DS_TYPE_Q6_K },
        { "blk.0.attn_q.weight", DS_TYPE_Q4_K },   { "blk.0.attn_v.weight", DS_TYPE_Q6_K },
        { "blk.1.attn_v.weight", DS_TYPE_Q4_K },   { "blk.2.attn_v.weight", DS_TYPE_Q6_K },
        { "blk.0.ffn_down.weight", DS_TYPE_Q6_K }, { "blk.1.ffn_down.weight", DS_TYPE_Q4_K },
        { "blk.1.ffn_up.weight", DS_TYPE_Q4_K },   { "blk.0.attn_q.bias", DS_TYPE_F32 },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const gguf_tensor *t = gguf_find_tensor(g, want[i].name);
        CHECK_MSG(t && t->type == (uint32_t)want[i].t, "%s: type %u", want[i].name, t ? t->type : 0u);
    }
    uint32_t ft = 0;
    CHECK(gguf_get_u32(g, "general.file_type", &ft) == DS_OK && ft == 15);   /* LLAMA_FTYPE_MOSTLY_Q4_K_M */
    gguf_close(g);
    int V;
    const int32_t toks[4] = { 5, 17, 256, 42 };
    float *lg = eval_logits(path, toks, 4, &V);
    CHECK(lg);
    for (int i = 0; i < 4 * V; i++) CHECK_MSG(isfinite(lg[i]), "logit %d = %g", i, lg[i]);
    free(lg);
}

TEST(gen_model_deterministic) {
    /* vocab 5000 in f32 makes token_embd a 1.3 MB tensor, which the generator splits over
     * threads: the bytes must not depend on the thread count. */
    const char *a = tmp_path("det-a.gguf"), *b = tmp_path("det-b.gguf"), *c = tmp_path("det-c.gguf");
    CHECK(gen("-o", a, "--type", "f32", "--vocab", "5000", "--seed", "5", "-t", "1", NULL) == 0);
    CHECK(gen("-o", b, "--type", "f32", "--vocab", "5000", "--seed", "5", "-t", "3", NULL) == 0);
    CHECK(gen("-o", c, "--type", "f32", "--vocab", "5000", "--seed", "6", "-t", "2", NULL) == 0);
    CHECK(same_file(a, b));
    CHECK(!same_file(a, c));
    int V;
    float *la = eval_logits(a, TOKS, 6, &V), *lb = eval_logits(b, TOKS, 6, &V), *lc = eval_logits(c, TOKS, 6, &V);
    CHECK(la && lb && lc);
    CHECK(memcmp(la, lb, sizeof(float) * 6 * (size_t)V) == 0);
    CHECK(memcmp(la, lc, sizeof(float) * 6 * (size_t)V) != 0);
    free(la); free(lb); free(lc);
    /* quantised files too, and the seed reaches the name */
    const char *d = tmp_path("det-d.gguf"), *e = tmp_path("det-e.gguf");
    CHECK(gen("-o", d, "--type", "q4_0", "--seed", "9", NULL) == 0);
    CHECK(gen("-o", e, "--type", "q4_0", "--seed", "9", NULL) == 0);
    CHECK(same_file(d, e));
    ds_model *m;
    CHECK(ds_model_load(d, &m) == DS_OK);
    CHECK_MSG(!strcmp(ds_model_get_info(m)->name, "random tiny q4_0 seed 9"), "%s", ds_model_get_info(m)->name);
    ds_model_free(m);
}

/* The bytes are part of the contract: a file generated on the GPU machine and one generated
 * here must hold the same weights, so any change to the generator's output must be deliberate
 * (update these, and say so: files made by older builds then differ). Checked identical under
 * gcc and clang -O2/-O3 -march=native. */
TEST(gen_model_golden_bytes) {
    static const struct { const char *name, *a[10], *sha; } golden[] = {
        { "gold-f16.gguf", { NULL }, "91e3fb6bf0ac1113956153fe35b210afa11dcbedb061b815e1eac99ad711a63f" },
        { "gold-q4k.gguf", { "--arch", "qwen2", "--type", "q4_k", "--embd", "256", "--ffn", "256", NULL },
          "6bd56ed274b6dc27f0c25d732af35dd73b47db9eb85d066138a0815ac98b42b7" },
    };
    for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++) {
        const char *path = tmp_path(golden[i].name), *const *a = golden[i].a;
        CHECK(gen("-o", path, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], NULL) == 0);
        size_t n;
        uint8_t *bytes = (uint8_t *)test_read_file(path, &n);
        CHECK(bytes);
        char hex[65];
        ds_sha256_hex(bytes, n, hex);
        free(bytes);
        CHECK_MSG(!strcmp(hex, golden[i].sha), "%s: sha256 %s", golden[i].name, hex);
    }
}

/* ---------------------------------------------------------------- presets and flags */

static int plan_of(ds_gen_plan *p, const char *preset, const char *type) {
    char *argv[] = { (char *)"gen-model", (char *)"--preset", (char *)preset, (char *)"--type", (char *)type, NULL };
    return ds_gen_model_plan(5, argv, p);
}

TEST(gen_model_preset_shapes) {
    /* Parameter counts of the real models (HF); tensor counts of their GGUFs. */
    static const struct { const char *preset; uint64_t params; int tensors; } want[] = {
        { "llama2-7b", 6738415616ull, 291 },
        { "llama3-8b", 8030261248ull, 291 },
        { "smollm2-135m", 134515008ull, 272 },            /* tied */
        { "qwen2.5-1.5b", 1543714304ull + 151936ull * 1536, 339 },  /* + the untied output */
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ds_gen_plan p;
        CHECK(plan_of(&p, want[i].preset, "f16") == 0);
        CHECK_MSG(p.n_params == want[i].params && p.n_tensors == want[i].tensors, "%s: %llu params, %d tensors",
                  want[i].preset, (unsigned long long)p.n_params, p.n_tensors);
        /* F16 data (norms and biases F32) + a header of a few MB at most */
        CHECK(p.file_bytes > 2 * p.n_params && p.file_bytes < 2 * p.n_params + (8u << 20));
    }
    ds_gen_plan p;
    CHECK(plan_of(&p, "llama2-7b", "q4_k") == 0);
    CHECK(p.file_bytes > p.n_params / 256 * 144 && p.file_bytes < p.n_params / 256 * 144 + (8u << 20));
}

/* Run gen-model with stderr captured; returns its status, the message in msg. */
static int gen_err(char *msg, size_t cap, const char *first, ...) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"gen-model";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 31; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    const char *log = tmp_path("stderr.txt");
    fflush(stderr);
    int saved = dup(2), fd = open(log, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    dup2(fd, 2);
    close(fd);
    int rc = ds_cmd_gen_model(argc, argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    size_t n;
    char *t = test_read_file(log, &n);
    snprintf(msg, cap, "%.*s", t ? (int)n : 0, t ? t : "");
    free(t);
    unlink(log);
    return rc;
}

TEST(gen_model_rejects_bad_flags) {
    const char *out = tmp_path("never.gguf");
    char msg[1024];
    static const struct { const char *a[10]; const char *says; } bad[] = {
        { { "--preset", "tiny", NULL }, "missing -o" },
        { { "-o", NULL }, "-o needs a value" },
        { { "--preset", "llama9", "-o", "X", NULL }, "unknown preset 'llama9'" },
        { { "--type", "q3_k", "-o", "X", NULL }, "unknown type 'q3_k'" },
        { { "--arch", "gpt2", "-o", "X", NULL }, "unknown architecture 'gpt2'" },
        { { "--heads", "5", "-o", "X", NULL }, "--heads 5 does not divide the embedding size 64" },
        { { "--kv-heads", "3", "-o", "X", NULL }, "--kv-heads 3 does not divide the 4 query heads" },
        { { "--heads", "2", "--kv-heads", "4", "-o", "X", NULL }, "--kv-heads 4 does not divide" },
        { { "--embd", "36", "-o", "X", NULL }, "head_dim 9 (embd 36 / heads 4) must be even" },
        { { "--type", "q4_k", "--embd", "48", "--heads", "4", "-o", "X", NULL }, "must be multiples of 32" },
        { { "--type", "q8_0", "--ffn", "100", "-o", "X", NULL }, "must be multiples of 32" },
        { { "--vocab", "100", "-o", "X", NULL }, "--vocab 100 is too small" },
        { { "--layers", "0", "-o", "X", NULL }, "--layers: '0' is not an integer in [1, 1024]" },
        { { "--embd", "12x", "-o", "X", NULL }, "--embd: '12x' is not an integer" },
        { { "--rope-theta", "-1", "-o", "X", NULL }, "--rope-theta: '-1' is not a number" },
        { { "--frobnicate", "-o", "X", NULL }, "unknown option '--frobnicate'" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *a[10];
        for (int k = 0; k < 10; k++) a[k] = bad[i].a[k] && !strcmp(bad[i].a[k], "X") ? out : bad[i].a[k];
        int rc = gen_err(msg, sizeof msg, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], NULL);
        const char *says = bad[i].says;
        CHECK_MSG(rc != 0, "case %zu accepted", i);
        CHECK_MSG(strstr(msg, says), "case %zu: message '%.300s' lacks '%s'", i, msg, says);
        CHECK_MSG(access(out, F_OK) != 0, "case %zu wrote a file", i);
    }
}
