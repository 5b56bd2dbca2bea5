/* gen_model.c — `dsinfer gen-model`: a GGUF v3 file of random weights at real model shapes.
 *
 * Why: to measure speed at real shapes (7B, 8B, ...) on a GPU machine that has no model files,
 * and to check GPU results against the CPU on identical weights. The file is a complete model
 * for this engine (and for gguf-py and llama.cpp): the metadata model.c requires, every tensor
 * it binds, named and shaped as llama.cpp's converters write them, and a GPT-2 byte-level
 * vocabulary the tokenizer accepts. tests/reference/check_all.py runs the independent numpy
 * forward pass on generated files, which is the proof that they are valid models.
 *
 * Weights. Element i (row-major) of tensor T is a pure function of (seed, T's name, i): the i-th
 * output of a splitmix64 stream keyed by a hash of the seed and the name, turned into an
 * approximately normal value (Irwin-Hall: the sum of the four 16-bit quarters of that output,
 * standardised, so bounded at +-3.46 sd). Only integer operations and single IEEE float
 * operations are involved, so the bytes do not depend on the machine, the libm, the thread
 * count or the order in which tensors are generated. Scales (standard deviations) keep a
 * pre-norm network's activations O(1) at any width and depth:
 *   linears: attn_q/k/v, ffn_gate/up, attn_output, ffn_down    1/sqrt(fan_in) = 1/sqrt(ne[0])
 *       Each product of an RMS-normalised input then has unit variance per output, so
 *       q.k/sqrt(head_dim) has sd ~1 (attention neither uniform nor one-hot), and each layer
 *       adds O(1) to the residual stream, whose RMS grows like sqrt(layers) (~6 at 32 layers).
 *   token_embd, output                                         1/sqrt(n_embd)
 *       The normalised final state has RMS ~1, so logits have sd ~1 whether the embeddings
 *       are tied or not: finite, spread, not one-hot. Embedding rows are small (0.016 at 4096,
 *       close to trained llamas) and the first attn_norm rescales them.
 *   norm weights: attn_norm, ffn_norm, output_norm             1 + 0.1 * noise
 *   qwen2 biases: attn_q/k/v.bias                              0.1 * noise
 * Linear weights, token_embd and output are stored as --type (K formats fall back to a 32-block
 * type for rows that are not a multiple of 256, as llama.cpp does); 1-D tensors (norms, biases)
 * stay F32, as converters write them. The quantisers are simple round-to-nearest ones, written here
 * from the format definitions (the library only quantises activations); any valid encoding
 * will do, since both backends read the same bytes.
 *
 * Vocabulary: ids 0..255 are the GPT-2 byte-level characters of bytes 0..255, 256..258 the
 * control tokens <|endoftext|> (bos), <|im_start|>, <|im_end|> (eos), then normal filler tokens
 * "<tN>" (N = id) up to the vocabulary size. No merges: text tokenizes to one token per byte.
 * A ChatML template makes `chat` and `run --chat` work.
 *
 * Writing streams: the header (metadata and tensor infos; every offset is known in advance) is
 * built in memory, then each tensor is generated and encoded in chunks of rows by a few threads
 * and written, so memory stays at a few tens of MB whatever the model size (a 7B F16 file is
 * 13.5 GB). The file is written as FILE.tmp and renamed when complete, so an interrupted run
 * never leaves a plausible-looking FILE behind. */
#include "gen_model.h"
#include "common.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define ALIGN 32                       /* general.alignment (GGUF's default, written explicitly) */
#define N_SPECIAL 3
#define MIN_VOCAB (256 + N_SPECIAL)    /* byte tokens + control tokens */
#define CHUNK_BYTES ((size_t)32 << 20) /* encoded bytes per write; bounds memory */
#define MAX_THREADS 64

/* ggml type ids as stored in GGUF (tools use only the public header, so not quant.h's enum). */
enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8,
       T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_BF16 = 30 };

typedef struct {
    const char *name;    /* as --type takes it (any case) */
    uint32_t id;
    int block, bytes;    /* elements and bytes per block */
    uint32_t file_type;  /* general.file_type (llama_ftype) of a file stored in this type */
    uint32_t fallback;   /* K formats: the 32-block type for rows that are not a multiple of 256 */
    int mix;             /* 1: Q4_K_M-style mix (Q6_K for half the layers' attn_v and ffn_down, and output) */
} wtype;

/* The K fallbacks are llama.cpp's (llama-quantize stores such tensors of e.g. SmolLM2, whose
 * rows are 576 and 1536 long, this way), so K files at those shapes look like real ones. */
static const wtype k_types[] = {
    { "f32", T_F32, 1, 4, 0, 0, 0 },              { "f16", T_F16, 1, 2, 1, 0, 0 },
    { "bf16", T_BF16, 1, 2, 32, 0, 0 },           { "q8_0", T_Q8_0, 32, 34, 7, 0, 0 },
    { "q4_0", T_Q4_0, 32, 18, 2, 0, 0 },          { "q4_1", T_Q4_1, 32, 20, 3, 0, 0 },
    { "q5_0", T_Q5_0, 32, 22, 8, 0, 0 },          { "q5_1", T_Q5_1, 32, 24, 9, 0, 0 },
    { "q4_k", T_Q4_K, 256, 144, 14, T_Q5_0, 0 },  { "q5_k", T_Q5_K, 256, 176, 16, T_Q5_1, 0 },
    { "q6_k", T_Q6_K, 256, 210, 18, T_Q8_0, 0 },  { "q4_k_m", T_Q4_K, 256, 144, 15, T_Q5_0, 1 },
};
#define N_TYPES (int)(sizeof k_types / sizeof k_types[0])

static const wtype *type_by_id(uint32_t id) {
    for (int i = 0; i < N_TYPES; i++) if (k_types[i].id == id) return &k_types[i];
    return NULL;
}

/* Shapes of the real models (their HF configs); tiny is for tests. qwen2.5-1.5b is untied like
 * the project's qwen2.5-coder-1.5b GGUF, whose shape it reproduces. */
typedef struct {
    const char *name, *arch;
    int n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, n_ctx, tied;
    float rope_theta;
} preset;

static const preset k_presets[] = {
    { "tiny",         "llama", 2,  64,   4,  2,  128,   300,    256,   0, 10000.0f },
    { "smollm2-135m", "llama", 30, 576,  9,  3,  1536,  49152,  8192,  1, 100000.0f },
    { "llama2-7b",    "llama", 32, 4096, 32, 32, 11008, 32000,  4096,  0, 10000.0f },
    { "llama3-8b",    "llama", 32, 4096, 32, 8,  14336, 128256, 8192,  0, 500000.0f },
    { "qwen2.5-1.5b", "qwen2", 28, 1536, 12, 2,  8960,  151936, 32768, 0, 1000000.0f },
};
#define N_PRESETS (int)(sizeof k_presets / sizeof k_presets[0])

typedef struct {
    const preset *pre;
    int qwen2;
    int n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, n_ctx, tied;
    float rope_theta, rms_eps;
    const wtype *type;
    uint64_t seed;
    int n_threads, quiet, dry_run;
    const char *out;
    char changes[160];   /* what differs from the preset, for general.name */
    char name[256];      /* general.name */
} cfg;

static int fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dsinfer gen-model: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ================================================================ random values */

static inline uint64_t mix64(uint64_t z) {  /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Stream key of a tensor: the seed and the name, so every tensor differs and none depends on
 * the others (tensors and rows can be generated in any order, by any number of threads). */
static uint64_t tensor_key(uint64_t seed, const char *name) {
    uint64_t h = 1469598103934665603ull;  /* FNV-1a */
    for (const char *p = name; *p; p++) { h ^= (uint8_t)*p; h *= 1099511628211ull; }
    return mix64(h ^ mix64(seed + 0x9e3779b97f4a7c15ull));
}

/* Sum of four uniform 16-bit integers minus its mean (4 * 65535 / 2), divided by its standard
 * deviation sqrt(4 * (65536^2 - 1) / 12): mean 0, sd 1, within +-3.46. */
#define IH_INV_SD (1.0f / 37837.2269f)

static void fill(uint64_t key, uint64_t i0, int64_t n, float sd, float mean, float *out) {
    for (int64_t j = 0; j < n; j++) {
        uint64_t r = mix64(key + (i0 + (uint64_t)j + 1) * 0x9e3779b97f4a7c15ull);
        int32_t s = (int32_t)(r & 0xffff) + (int32_t)(r >> 16 & 0xffff) + (int32_t)(r >> 32 & 0xffff) +
                    (int32_t)(r >> 48) - 131070;
        /* separate statements: a compiler allowed to contract a*b+c into an FMA (clang's
         * default) would otherwise change the bytes */
        float g = (float)s * IH_INV_SD;
        float v = g * sd;
        out[j] = v + mean;
    }
}

/* ================================================================ encoders */

static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

/* IEEE half, round to nearest even (as the library's ds_fp32_to_fp16; the test checks they
 * agree bit for bit). */
static uint16_t f2h(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);          /* rounds past 65504: inf */
    if (ax < 0x38800000u) {  /* below 2^-14: a half subnormal, in units of 2^-24 */
        float a;
        memcpy(&a, &ax, 4);
        return (uint16_t)(sign | (uint32_t)nearbyintf(a * 16777216.0f));  /* exact scaling */
    }
    uint32_t h = (ax >> 13) - ((127u - 15u) << 10), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static float h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 0x3ff;
    if (e == 0) { float v = (float)m * 5.9604645e-8f; return sign ? -v : v; }  /* m * 2^-24 */
    uint32_t bits = sign | (e == 31 ? 0x7f800000u | (m << 13) : ((e + 112) << 23) | (m << 13));
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t f2bf(float f) {  /* round to nearest even; NaN stays NaN */
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* A scale rounded to fp16 as stored; quantising against the rounded value keeps the error at
 * half a step of what the decoder will actually use. Returns the decoded scale. */
static float put_scale(uint8_t *p, float d) {
    uint16_t h = f2h(d);
    wr16(p, h);
    return h2f(h);
}

static inline float inv_or0(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static inline int rnd(float x) { return (int)nearbyintf(x); }  /* nearest, ties to even */

static void amax_minmax(const float *x, int n, float *amax, float *mn, float *mx, float *signed_max) {
    float a = 0, lo = x[0], hi = x[0], sm = 0;
    for (int j = 0; j < n; j++) {
        float v = fabsf(x[j]);
        if (v > a) { a = v; sm = x[j]; }
        lo = x[j] < lo ? x[j] : lo;
        hi = x[j] > hi ? x[j] : hi;
    }
    *amax = a; *mn = lo; *mx = hi; *signed_max = sm;
}

/* Q8_0: d = amax/127, q = round(x/d). Block: d, qs[32]. */
static void enc_q8_0(const float *x, uint8_t *b) {
    float amax, mn, mx, sm;
    amax_minmax(x, 32, &amax, &mn, &mx, &sm);
    float id = inv_or0(put_scale(b, amax / 127.0f));
    for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)clampi(rnd(x[j] * id), -127, 127);
}

/* Q4_0 / Q5_0 (as ggml): the element of largest magnitude maps to the most negative level
 * (-8 / -16), x = d * (q - 8 / 16). Element j and j+16 share byte j (low / high nibble); Q5_0's
 * fifth bits are bit j of the 32-bit qh. Blocks: d, qs[16] / d, qh[4], qs[16]. */
static void enc_q4_0_q5_0(const float *x, uint8_t *b, int bits) {
    int half = 1 << (bits - 1), top = (1 << bits) - 1;
    float amax, mn, mx, sm;
    amax_minmax(x, 32, &amax, &mn, &mx, &sm);
    float id = inv_or0(put_scale(b, sm / (float)-half));
    uint8_t *qs = b + (bits == 4 ? 2 : 6);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        int lo = clampi(rnd(x[j] * id) + half, 0, top), hi = clampi(rnd(x[j + 16] * id) + half, 0, top);
        qs[j] = (uint8_t)((lo & 15) | (hi & 15) << 4);
        qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
    }
    if (bits == 5) for (int k = 0; k < 4; k++) b[2 + k] = (uint8_t)(qh >> (8 * k));
}

/* Q4_1 / Q5_1: x = d * q + m with m = min, d = (max - min) / (2^bits - 1).
 * Blocks: d, m, qs[16] / d, m, qh[4], qs[16]. */
static void enc_q4_1_q5_1(const float *x, uint8_t *b, int bits) {
    int top = (1 << bits) - 1;
    float amax, mn, mx, sm;
    amax_minmax(x, 32, &amax, &mn, &mx, &sm);
    float d = put_scale(b, (mx - mn) / (float)top), m = put_scale(b + 2, mn), id = inv_or0(d);
    uint8_t *qs = b + (bits == 4 ? 4 : 8);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        int lo = clampi(rnd((x[j] - m) * id), 0, top), hi = clampi(rnd((x[j + 16] - m) * id), 0, top);
        qs[j] = (uint8_t)((lo & 15) | (hi & 15) << 4);
        qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
    }
    if (bits == 5) for (int k = 0; k < 4; k++) b[4 + k] = (uint8_t)(qh >> (8 * k));
}

/* Q4_K / Q5_K: 256 elements in 8 sub-blocks of 32, x = d*sc[j] * q - dmin*mn[j] with 6-bit sc, mn.
 * Per sub-block: mn = -min(0, min x), step = (max x + mn) / (2^bits - 1); the super-block scales
 * d, dmin map the largest step / mn to 63. Packing is the inverse of ds_kq_scale_min: scales
 * 0..3 and mins 0..3 in the low 6 bits of bytes 0..3 / 4..7, the high 2 bits of 4..7 in their
 * top bits, the low 4 bits of 4..7 in bytes 8..11. Sub-block j's 4-bit values are nibble j&1 of
 * qs[32*(j/2) + l]; Q5_K's fifth bit of element l of sub-block j is bit j of qh[l].
 * Blocks: d, dmin, scales[12], qs[128] / d, dmin, scales[12], qh[32], qs[128]. */
static void enc_qk_45(const float *x, uint8_t *b, int bits) {
    int top = (1 << bits) - 1;
    float step[8], mnv[8], max_step = 0, max_mn = 0;
    for (int j = 0; j < 8; j++) {
        float amax, mn, mx, sm;
        amax_minmax(x + 32 * j, 32, &amax, &mn, &mx, &sm);
        mnv[j] = mn < 0 ? -mn : 0.0f;
        step[j] = ((mx > 0 ? mx : 0.0f) + mnv[j]) / (float)top;
        max_step = step[j] > max_step ? step[j] : max_step;
        max_mn = mnv[j] > max_mn ? mnv[j] : max_mn;
    }
    float d = put_scale(b, max_step / 63.0f), dmin = put_scale(b + 2, max_mn / 63.0f);
    uint8_t sc[8], mq[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)clampi(rnd(step[j] * inv_or0(d)), 0, 63);
        mq[j] = (uint8_t)clampi(rnd(mnv[j] * inv_or0(dmin)), 0, 63);
    }
    uint8_t *s = b + 4;
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)((sc[j] & 63) | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)((mq[j] & 63) | (mq[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | (mq[j + 4] & 15) << 4);
    }
    uint8_t *qh = b + 16, *qs = b + (bits == 4 ? 16 : 48);
    memset(qs, 0, 128);
    if (bits == 5) memset(qh, 0, 32);
    for (int j = 0; j < 8; j++) {
        float ds = d * (float)sc[j], dm = dmin * (float)mq[j], ids = inv_or0(ds);
        for (int l = 0; l < 32; l++) {
            int q = clampi(rnd((x[32 * j + l] + dm) * ids), 0, top);
            qs[32 * (j / 2) + l] |= (uint8_t)((q & 15) << (4 * (j & 1)));
            if (bits == 5) qh[l] |= (uint8_t)((q >> 4) << j);
        }
    }
}

/* Q6_K: 16 sub-blocks of 16, x = d * sc[g] * (q - 32) with signed 8-bit sc and 6-bit q.
 * Per sub-block step = amax / 31 (q - 32 in [-31, 31]), d maps the largest step to 127.
 * Element e = 128h + 32k + l (h half, k quarter, l 0..31): low 4 bits in nibble k/2 of
 * ql[64h + 32(k&1) + l], high 2 bits at bit 2k of qh[32h + l] (inverse of quant.c's q6_value).
 * Block: ql[128], qh[64], scales[16], d. */
static void enc_q6_k(const float *x, uint8_t *b) {
    float step[16], max_step = 0;
    for (int g = 0; g < 16; g++) {
        float amax, mn, mx, sm;
        amax_minmax(x + 16 * g, 16, &amax, &mn, &mx, &sm);
        step[g] = amax / 31.0f;
        max_step = step[g] > max_step ? step[g] : max_step;
    }
    uint8_t *ql = b, *qh = b + 128;
    int8_t *scales = (int8_t *)(b + 192);
    float d = put_scale(b + 208, max_step / 127.0f);
    memset(b, 0, 192);
    for (int g = 0; g < 16; g++) {
        int sc = clampi(rnd(step[g] * inv_or0(d)), 0, 127);
        scales[g] = (int8_t)sc;
        float ids = inv_or0(d * (float)sc);
        for (int i = 0; i < 16; i++) {
            int e = 16 * g + i, h = e >> 7, k = (e & 127) >> 5, l = e & 31;
            int q = clampi(rnd(x[e] * ids), -32, 31) + 32;
            ql[64 * h + 32 * (k & 1) + l] |= (uint8_t)((q & 15) << (4 * (k >> 1)));
            qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
        }
    }
}

uint64_t ds_gen_encode_row(uint32_t type, const float *x, void *dst, int64_t n) {
    const wtype *t = type_by_id(type);
    if (!t || n <= 0 || n % t->block) return 0;
    uint8_t *b = dst;
    int64_t nb = n / t->block;
    for (int64_t i = 0; i < nb; i++, x += t->block, b += t->bytes) {
        switch (type) {
        case T_F32: memcpy(b, x, 4); break;
        case T_F16: wr16(b, f2h(x[0])); break;
        case T_BF16: wr16(b, f2bf(x[0])); break;
        case T_Q8_0: enc_q8_0(x, b); break;
        case T_Q4_0: enc_q4_0_q5_0(x, b, 4); break;
        case T_Q5_0: enc_q4_0_q5_0(x, b, 5); break;
        case T_Q4_1: enc_q4_1_q5_1(x, b, 4); break;
        case T_Q5_1: enc_q4_1_q5_1(x, b, 5); break;
        case T_Q4_K: enc_qk_45(x, b, 4); break;
        case T_Q5_K: enc_qk_45(x, b, 5); break;
        case T_Q6_K: enc_q6_k(x, b); break;
        default: return 0;
        }
    }
    return (uint64_t)nb * (uint64_t)t->bytes;
}

/* ================================================================ tensors */

typedef struct {
    char name[48];
    int n_dims;
    uint64_t ne[2];      /* ne[0] = row length (contiguous); ne[1] = 1 for vectors */
    const wtype *type;
    float sd, mean;
    uint64_t offset, nbytes;  /* offset relative to the data section */
} tdesc;

static uint64_t align_up(uint64_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

static uint64_t row_bytes(const tdesc *t) {
    return t->ne[0] / (uint64_t)t->type->block * (uint64_t)t->type->bytes;
}

static void add_tensor(tdesc *ts, int *n, uint64_t *off, const char *name, uint64_t ne0, uint64_t ne1,
                       const wtype *type, float sd, float mean) {
    tdesc *t = &ts[(*n)++];
    if (ne0 % (uint64_t)type->block) type = type_by_id(type->fallback);  /* validated: exists, divides */
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = ne1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 ? ne1 : 1;
    t->type = type;
    t->sd = sd;
    t->mean = mean;
    t->offset = align_up(*off);
    t->nbytes = row_bytes(t) * t->ne[1];
    *off = t->offset + t->nbytes;
}

/* Every tensor model.c binds, in llama.cpp's converter order: token_embd, the blocks,
 * output_norm, output (absent when tied). */
static tdesc *build_tensors(const cfg *c, int *n_out, uint64_t *data_bytes) {
    const uint64_t E = (uint64_t)c->n_embd, hd = E / (uint64_t)c->n_head, Q = hd * (uint64_t)c->n_head,
                   KV = hd * (uint64_t)c->n_head_kv, F = (uint64_t)c->n_ff, V = (uint64_t)c->n_vocab;
    int max = 3 + c->n_layer * 12, n = 0;
    tdesc *ts = calloc((size_t)max, sizeof *ts);
    if (!ts) return NULL;
    const wtype *f32 = type_by_id(T_F32), *w = c->type;
    /* q4_k_m: as the real Q4_K_M files mix types (the project's Qwen2.5 file has Q6_K attn_v and
     * ffn_down in 14 of its 28 layers and a Q6_K output), so fused GPU matrices meet two types */
    const wtype *w6 = c->type->mix ? type_by_id(T_Q6_K) : w;
    const float s_e = 1.0f / sqrtf((float)E), s_q = 1.0f / sqrtf((float)Q), s_f = 1.0f / sqrtf((float)F);
    uint64_t off = 0;
    add_tensor(ts, &n, &off, "token_embd.weight", E, V, w, s_e, 0);
    for (int l = 0; l < c->n_layer; l++) {
        char nm[48];
#define T(suffix, ne0, ne1, type, sd, mean) \
        (snprintf(nm, sizeof nm, "blk.%d.%s", l, suffix), add_tensor(ts, &n, &off, nm, ne0, ne1, type, sd, mean))
        T("attn_norm.weight", E, 0, f32, 0.1f, 1.0f);
        T("attn_q.weight", E, Q, w, s_e, 0);
        if (c->qwen2) T("attn_q.bias", Q, 0, f32, 0.1f, 0);
        T("attn_k.weight", E, KV, w, s_e, 0);
        if (c->qwen2) T("attn_k.bias", KV, 0, f32, 0.1f, 0);
        T("attn_v.weight", E, KV, l % 2 ? w : w6, s_e, 0);
        if (c->qwen2) T("attn_v.bias", KV, 0, f32, 0.1f, 0);
        T("attn_output.weight", Q, E, w, s_q, 0);
        T("ffn_norm.weight", E, 0, f32, 0.1f, 1.0f);
        T("ffn_gate.weight", E, F, w, s_e, 0);
        T("ffn_up.weight", E, F, w, s_e, 0);
        T("ffn_down.weight", F, E, l % 2 ? w : w6, s_f, 0);
#undef T
    }
    add_tensor(ts, &n, &off, "output_norm.weight", E, 0, f32, 0.1f, 1.0f);
    if (!c->tied) add_tensor(ts, &n, &off, "output.weight", E, V, w6, s_e, 0);
    *n_out = n;
    *data_bytes = align_up(off);  /* the last tensor is padded too, as ggml's writer does */
    return ts;
}

/* ================================================================ header */

/* the header as it is built (bytes in s), and how many metadata entries it holds */
typedef struct { ds_sbuf s; uint64_t count; } buf;

static void b_raw(buf *b, const void *src, size_t n) { ds_sb_addn(&b->s, (const char *)src, n); }
static void b_le(buf *b, uint64_t v, int n) {
    uint8_t x[8];
    for (int i = 0; i < n; i++) x[i] = (uint8_t)(v >> (8 * i));
    b_raw(b, x, (size_t)n);
}
static void b_str(buf *b, const char *s) { b_le(b, strlen(s), 8); b_raw(b, s, strlen(s)); }

enum { VT_U32 = 4, VT_I32 = 5, VT_F32 = 6, VT_BOOL = 7, VT_STRING = 8, VT_ARRAY = 9 };

static void kv_key(buf *b, const char *key, uint32_t vt) { b_str(b, key); b_le(b, vt, 4); b->count++; }
static void kv_str(buf *b, const char *key, const char *v) { kv_key(b, key, VT_STRING); b_str(b, v); }
static void kv_u32(buf *b, const char *key, uint32_t v) { kv_key(b, key, VT_U32); b_le(b, v, 4); }
static void kv_bool(buf *b, const char *key, int v) { kv_key(b, key, VT_BOOL); b_le(b, v ? 1 : 0, 1); }
static void kv_f32(buf *b, const char *key, float v) {
    uint32_t x;
    memcpy(&x, &v, 4);
    kv_key(b, key, VT_F32);
    b_le(b, x, 4);
}
static void kv_arch_u32(buf *b, const cfg *c, const char *suffix, uint32_t v) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s", c->qwen2 ? "qwen2" : "llama", suffix);
    kv_u32(b, key, v);
}
static void kv_arch_f32(buf *b, const cfg *c, const char *suffix, float v) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s", c->qwen2 ? "qwen2" : "llama", suffix);
    kv_f32(b, key, v);
}

static const char *const k_specials[N_SPECIAL] = { "<|endoftext|>", "<|im_start|>", "<|im_end|>" };
#define BOS_ID 256
#define EOS_ID 258

static const char *k_chatml =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* Text of token id: GPT-2's byte-level character for ids < 256 (printable Latin-1 bytes stand
 * for themselves, the 68 others for U+0100.. in byte order), control tokens, then "<tN>". */
static void token_text(int id, char *out, size_t cap) {
    if (id >= 256 + N_SPECIAL) { snprintf(out, cap, "<t%d>", id); return; }
    if (id >= 256) { snprintf(out, cap, "%s", k_specials[id - 256]); return; }
    int k = 0, cp = 0;
    for (int b = 0; b <= id; b++) {
        int keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        cp = keep ? b : 256 + k++;
    }
    if (cp < 0x80) { out[0] = (char)cp; out[1] = 0; }
    else { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3F)); out[2] = 0; }
}

/* The whole header: magic, counts, metadata, tensor infos, padding to the data section. */
static int build_header(const cfg *c, const tdesc *ts, int nt, buf *out) {
    buf kv = { 0 };
    kv_str(&kv, "general.architecture", c->qwen2 ? "qwen2" : "llama");
    kv_str(&kv, "general.name", c->name);
    char desc[160];
    snprintf(desc, sizeof desc, "random weights from dsinfer gen-model (seed %llu); not a trained model",
             (unsigned long long)c->seed);
    kv_str(&kv, "general.description", desc);
    kv_u32(&kv, "general.alignment", ALIGN);
    kv_u32(&kv, "general.file_type", c->type->file_type);
    if (c->type->block > 1) kv_u32(&kv, "general.quantization_version", 2);
    kv_arch_u32(&kv, c, "context_length", (uint32_t)c->n_ctx);
    kv_arch_u32(&kv, c, "embedding_length", (uint32_t)c->n_embd);
    kv_arch_u32(&kv, c, "block_count", (uint32_t)c->n_layer);
    kv_arch_u32(&kv, c, "feed_forward_length", (uint32_t)c->n_ff);
    kv_arch_u32(&kv, c, "attention.head_count", (uint32_t)c->n_head);
    kv_arch_u32(&kv, c, "attention.head_count_kv", (uint32_t)c->n_head_kv);
    kv_arch_u32(&kv, c, "rope.dimension_count", (uint32_t)(c->n_embd / c->n_head));
    kv_arch_u32(&kv, c, "vocab_size", (uint32_t)c->n_vocab);
    kv_arch_f32(&kv, c, "rope.freq_base", c->rope_theta);
    kv_arch_f32(&kv, c, "attention.layer_norm_rms_epsilon", c->rms_eps);

    kv_str(&kv, "tokenizer.ggml.model", "gpt2");
    kv_str(&kv, "tokenizer.ggml.pre", c->qwen2 ? "qwen2" : "gpt-2");
    kv_key(&kv, "tokenizer.ggml.tokens", VT_ARRAY);
    b_le(&kv, VT_STRING, 4);
    b_le(&kv, (uint64_t)c->n_vocab, 8);
    for (int i = 0; i < c->n_vocab; i++) {
        char t[32];
        token_text(i, t, sizeof t);
        b_str(&kv, t);
    }
    kv_key(&kv, "tokenizer.ggml.token_type", VT_ARRAY);  /* 1 normal, 3 control */
    b_le(&kv, VT_I32, 4);
    b_le(&kv, (uint64_t)c->n_vocab, 8);
    for (int i = 0; i < c->n_vocab; i++) b_le(&kv, i >= 256 && i < 256 + N_SPECIAL ? 3 : 1, 4);
    kv_key(&kv, "tokenizer.ggml.merges", VT_ARRAY);
    b_le(&kv, VT_STRING, 4);
    b_le(&kv, 0, 8);
    kv_u32(&kv, "tokenizer.ggml.bos_token_id", BOS_ID);
    kv_u32(&kv, "tokenizer.ggml.eos_token_id", EOS_ID);
    kv_bool(&kv, "tokenizer.ggml.add_bos_token", !c->qwen2);  /* as llama / qwen2 GGUFs do */
    kv_str(&kv, "tokenizer.chat_template", k_chatml);

    buf *h = out;
    memset(h, 0, sizeof *h);
    b_raw(h, "GGUF", 4);
    b_le(h, 3, 4);
    b_le(h, (uint64_t)nt, 8);
    b_le(h, kv.count, 8);
    if (!kv.s.oom) b_raw(h, kv.s.p, kv.s.n);
    for (int i = 0; i < nt; i++) {
        b_str(h, ts[i].name);
        b_le(h, (uint64_t)ts[i].n_dims, 4);
        for (int d = 0; d < ts[i].n_dims; d++) b_le(h, ts[i].ne[d], 8);
        b_le(h, ts[i].type->id, 4);
        b_le(h, ts[i].offset, 8);
    }
    while (h->s.n % ALIGN) b_le(h, 0, 1);
    int oom = kv.s.oom || h->s.oom;
    free(kv.s.p);
    if (oom) { free(h->s.p); h->s.p = NULL; return fail("out of memory building the header"); }
    return 0;
}

/* ================================================================ flags */

static void usage(FILE *f) {
    fprintf(f,
        "usage: dsinfer gen-model -o FILE [--preset P] [--arch A] [--type T] [--seed N] [overrides]\n"
        "Writes a GGUF with deterministic random weights at a real model's shapes (speed tests,\n"
        "GPU-vs-CPU checks on identical weights).\n"
        "  -o, --out FILE     output file (required unless --dry-run)\n"
        "  --preset P         tiny (default), smollm2-135m, llama2-7b, llama3-8b, qwen2.5-1.5b\n"
        "  --arch A           llama | qwen2 (qwen2: QKV biases, NEOX rope); default: the preset's\n"
        "  --type T           linear weights, token_embd and output: f32, f16 (default), bf16, q8_0,\n"
        "                     q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q4_k_m (q4_k with Q6_K attn_v and\n"
        "                     ffn_down in every other layer and Q6_K output); norms and biases stay f32\n"
        "  --seed N           weight seed (default 1); the same flags and seed give the same bytes\n"
        "  --layers N --embd N --heads N --kv-heads N --ffn N --vocab N --ctx N --rope-theta X\n"
        "                     override the preset's shape; --tied / --untied: share output with token_embd\n"
        "  -t, --threads N    generator threads (default: online CPUs; the bytes do not depend on it)\n"
        "  -q, --quiet        no progress or summary\n"
        "  --dry-run          print the plan (tensors, parameters, file size) and write nothing\n");
}

static int parse_long(const char *flag, const char *v, long lo, long hi, long *out) {
    if (!v) return fail("%s needs a value", flag);
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return fail("%s: '%s' is not an integer in [%ld, %ld]", flag, v, lo, hi);
    *out = x;
    return 0;
}

static void note_change(cfg *c, const char *what, const char *v) {
    size_t n = strlen(c->changes);
    snprintf(c->changes + n, sizeof c->changes - n, "%s%s%s%s", n ? ", " : "", what, v ? " " : "", v ? v : "");
}

/* 0: config ready in *c; 1: error printed; 2: help printed (exit 0). */
static int parse_args(int argc, char **argv, cfg *c, int need_out) {
    memset(c, 0, sizeof *c);
    const char *preset_name = "tiny", *arch = NULL, *type = "f16";
    long ov[7] = { -1, -1, -1, -1, -1, -1, -1 };  /* layers embd heads kv-heads ffn vocab ctx */
    static const char *const ov_flags[7] = { "--layers", "--embd", "--heads", "--kv-heads", "--ffn", "--vocab", "--ctx" };
    static const long ov_max[7] = { 1024, 65536, 1024, 1024, 1 << 20, 1 << 24, 1 << 24 };
    const char *ov_text[7] = { 0 }, *theta_text = NULL;
    double theta = -1;
    int tied = -1;
    long threads = 0, seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int k;
        for (k = 0; k < 7; k++) if (!strcmp(a, ov_flags[k])) break;
        if (k < 7) {
            if (parse_long(a, v, 1, ov_max[k], &ov[k])) return 1;
            ov_text[k] = v;
            i++;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            if (!v) return fail("%s needs a value", a);
            c->out = v; i++;
        } else if (!strcmp(a, "--preset")) {
            if (!v) return fail("--preset needs a value");
            preset_name = v; i++;
        } else if (!strcmp(a, "--arch")) {
            if (!v) return fail("--arch needs a value");
            arch = v; i++;
        } else if (!strcmp(a, "--type")) {
            if (!v) return fail("--type needs a value");
            type = v; i++;
        } else if (!strcmp(a, "--seed")) {
            if (parse_long(a, v, 0, 0x7fffffffffffffffL, &seed)) return 1;
            i++;
        } else if (!strcmp(a, "--rope-theta")) {
            if (!v) return fail("--rope-theta needs a value");
            char *end;
            errno = 0;
            theta = strtod(v, &end);
            if (errno || end == v || *end || !(theta > 0 && theta < 1e12))
                return fail("--rope-theta: '%s' is not a number in (0, 1e12)", v);
            theta_text = v;
            i++;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (parse_long(a, v, 1, MAX_THREADS, &threads)) return 1;
            i++;
        } else if (!strcmp(a, "--tied")) tied = 1;
        else if (!strcmp(a, "--untied")) tied = 0;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) c->quiet = 1;
        else if (!strcmp(a, "--dry-run")) c->dry_run = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 2; }
        else return fail("unknown option '%s' (see dsinfer gen-model --help)", a);
    }

    for (int i = 0; i < N_PRESETS; i++) if (!strcmp(preset_name, k_presets[i].name)) c->pre = &k_presets[i];
    if (!c->pre) return fail("unknown preset '%s' (tiny, smollm2-135m, llama2-7b, llama3-8b, qwen2.5-1.5b)", preset_name);
    for (int i = 0; i < N_TYPES; i++) if (!strcasecmp(type, k_types[i].name)) c->type = &k_types[i];
    if (!c->type) return fail("unknown type '%s' (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q4_k_m)", type);
    if (!arch) arch = c->pre->arch;
    if (strcmp(arch, "llama") && strcmp(arch, "qwen2")) return fail("unknown architecture '%s' (llama or qwen2)", arch);
    if (need_out && !c->out && !c->dry_run) return fail("missing -o FILE (the GGUF to write)");

    const preset *p = c->pre;
    c->qwen2 = !strcmp(arch, "qwen2");
    if (strcmp(arch, p->arch)) note_change(c, "arch", arch);
    c->n_layer = p->n_layer; c->n_embd = p->n_embd; c->n_head = p->n_head; c->n_head_kv = p->n_head_kv;
    c->n_ff = p->n_ff; c->n_vocab = p->n_vocab; c->n_ctx = p->n_ctx; c->tied = p->tied;
    c->rope_theta = p->rope_theta;
    int *dst[7] = { &c->n_layer, &c->n_embd, &c->n_head, &c->n_head_kv, &c->n_ff, &c->n_vocab, &c->n_ctx };
    for (int k = 0; k < 7; k++)
        if (ov[k] >= 0 && ov[k] != *dst[k]) { *dst[k] = (int)ov[k]; note_change(c, ov_flags[k] + 2, ov_text[k]); }
    if (theta > 0 && (float)theta != c->rope_theta) { c->rope_theta = (float)theta; note_change(c, "rope-theta", theta_text); }
    if (tied >= 0 && tied != c->tied) { c->tied = tied; note_change(c, tied ? "tied" : "untied", NULL); }
    c->rms_eps = c->qwen2 ? 1e-6f : 1e-5f;  /* as Qwen2.5 / Llama configs */
    c->seed = (uint64_t)seed;
    c->n_threads = threads ? (int)threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (c->n_threads < 1) c->n_threads = 1;
    if (c->n_threads > MAX_THREADS) c->n_threads = MAX_THREADS;

    /* Shapes the loader (model.c) would reject, or a block format cannot store. */
    if (c->n_embd % c->n_head)
        return fail("--heads %d does not divide the embedding size %d (head_dim = embd / heads)", c->n_head, c->n_embd);
    if (c->n_head_kv > c->n_head || c->n_head % c->n_head_kv)
        return fail("--kv-heads %d does not divide the %d query heads", c->n_head_kv, c->n_head);
    int hd = c->n_embd / c->n_head;
    if (hd % 2 || hd > 512)
        return fail("head_dim %d (embd %d / heads %d) must be even and at most 512 (RoPE rotates pairs)",
                    hd, c->n_embd, c->n_head);
    if (c->n_vocab < MIN_VOCAB)
        return fail("--vocab %d is too small: the vocabulary needs 256 byte tokens + %d control tokens (>= %d)",
                    c->n_vocab, N_SPECIAL, MIN_VOCAB);
    const wtype *small = c->type->fallback ? type_by_id(c->type->fallback) : c->type;
    int blk = small->block;
    if (c->n_embd % blk || c->n_ff % blk)
        return fail("--type %s stores rows in blocks of %d: embd (%d) and ffn (%d) must be multiples of %d",
                    c->type->name, blk, c->n_embd, c->n_ff, blk);

    snprintf(c->name, sizeof c->name, "random %s %s seed %llu%s%s%s", p->name, c->type->name,
             (unsigned long long)c->seed, c->changes[0] ? " (" : "", c->changes, c->changes[0] ? ")" : "");
    return 0;
}

/* ================================================================ generation */

typedef struct {
    const tdesc *t;
    uint64_t key, r0, r1;   /* rows [r0, r1) of the tensor */
    uint8_t *dst;           /* encoded row r0 */
    float *scratch;         /* [ne0] */
} job;

static void *run_job(void *arg) {
    const job *j = arg;
    const tdesc *t = j->t;
    uint64_t rb = row_bytes(t);
    for (uint64_t r = j->r0; r < j->r1; r++) {
        fill(j->key, r * t->ne[0], (int64_t)t->ne[0], t->sd, t->mean, j->scratch);
        ds_gen_encode_row(t->type->id, j->scratch, j->dst + (r - j->r0) * rb, (int64_t)t->ne[0]);
    }
    return NULL;
}

static int write_zeros(FILE *f, uint64_t n) {
    static const uint8_t z[ALIGN];
    while (n) {
        size_t k = n < ALIGN ? (size_t)n : ALIGN;
        if (fwrite(z, 1, k, f) != k) return -1;
        n -= k;
    }
    return 0;
}

static int generate(const cfg *c, const tdesc *ts, int nt, const buf *hdr, uint64_t file_bytes) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", c->out) >= (int)sizeof tmp) return fail("output path too long");
    FILE *f = fopen(tmp, "wb");
    if (!f) return fail("cannot create %s: %s", tmp, strerror(errno));

    uint64_t max_ne0 = 1, max_rb = 1;
    for (int i = 0; i < nt; i++) {
        max_ne0 = ts[i].ne[0] > max_ne0 ? ts[i].ne[0] : max_ne0;
        max_rb = row_bytes(&ts[i]) > max_rb ? row_bytes(&ts[i]) : max_rb;
    }
    size_t cap = CHUNK_BYTES > max_rb ? CHUNK_BYTES : (size_t)max_rb;
    int nth = c->n_threads;
    uint8_t *chunk = malloc(cap);
    float *scratch = malloc((size_t)nth * (size_t)max_ne0 * sizeof(float));
    int rc = 0;
    const char *what = "";
    if (!chunk || !scratch) { rc = fail("out of memory"); goto done; }
    if (fwrite(hdr->s.p, 1, hdr->s.n, f) != hdr->s.n) { what = "header"; goto io_err; }

    double t0 = now_s(), last = t0;
    int progress = !c->quiet && file_bytes >= ((uint64_t)64 << 20), shown = 0;
    uint64_t pos = 0;  /* bytes of the data section written */
    for (int i = 0; i < nt; i++) {
        const tdesc *t = &ts[i];
        if (write_zeros(f, t->offset - pos)) { what = t->name; goto io_err; }
        pos = t->offset;
        uint64_t key = tensor_key(c->seed, t->name), rb = row_bytes(t), rows_per = cap / rb;
        for (uint64_t r0 = 0; r0 < t->ne[1]; r0 += rows_per) {
            uint64_t r1 = r0 + rows_per < t->ne[1] ? r0 + rows_per : t->ne[1], n = r1 - r0;
            /* small chunks are not worth a thread */
            int use = (int)(n * rb < ((uint64_t)1 << 20) ? 1 : (n < (uint64_t)nth ? n : (uint64_t)nth));
            job jobs[MAX_THREADS];
            pthread_t th[MAX_THREADS];
            int started = 0;
            for (int k = 0; k < use; k++) {
                uint64_t a = r0 + n * (uint64_t)k / (uint64_t)use, b = r0 + n * (uint64_t)(k + 1) / (uint64_t)use;
                jobs[k] = (job){ t, key, a, b, chunk + (a - r0) * rb, scratch + (size_t)k * max_ne0 };
            }
            for (int k = 1; k < use; k++) {
                if (pthread_create(&th[k], NULL, run_job, &jobs[k]) != 0) break;
                started = k;
            }
            run_job(&jobs[0]);
            for (int k = started + 1; k < use; k++) run_job(&jobs[k]);  /* those that could not start */
            for (int k = 1; k <= started; k++) pthread_join(th[k], NULL);
            if (fwrite(chunk, 1, (size_t)(n * rb), f) != (size_t)(n * rb)) { what = t->name; goto io_err; }
            pos += n * rb;
            double now = now_s();
            if (progress && now - last >= 1.0) {
                double done = (double)(hdr->s.n + pos), el = now - t0;
                fprintf(stderr, "\rgen-model: %.2f / %.2f GB (%.0f%%), %.0f s, ETA %.0f s   ", done / 1e9,
                        (double)file_bytes / 1e9, 100.0 * done / (double)file_bytes, el,
                        el / done * ((double)file_bytes - done));
                last = now;
                shown = 1;
            }
        }
    }
    if (write_zeros(f, file_bytes - hdr->s.n - pos)) { what = "padding"; goto io_err; }
    if (fflush(f) != 0) { what = "data"; goto io_err; }
    if (fclose(f) != 0) { f = NULL; what = "data"; goto io_err; }
    f = NULL;
    if (rename(tmp, c->out) != 0) { rc = fail("cannot rename %s to %s: %s", tmp, c->out, strerror(errno)); unlink(tmp); goto done; }
    if (shown) fprintf(stderr, "\n");
    if (!c->quiet)
        fprintf(stderr, "gen-model: wrote %s (%.1f MB) in %.1f s\n", c->out, (double)file_bytes / 1e6, now_s() - t0);
    goto done;
io_err:
    rc = fail("writing %s (%s): %s", tmp, what, strerror(errno));
    if (f) fclose(f);
    f = NULL;
    unlink(tmp);
done:
    if (f) fclose(f);
    free(chunk);
    free(scratch);
    return rc;
}

/* Parse, validate and lay out the file: shared by the command and the plan. */
static int prepare(int argc, char **argv, int need_out, cfg *c, tdesc **ts, int *nt, buf *hdr,
                   uint64_t *file_bytes, uint64_t *n_params) {
    int rc = parse_args(argc, argv, c, need_out);
    if (rc) return rc;
    uint64_t data_bytes;
    *ts = build_tensors(c, nt, &data_bytes);
    if (!*ts) return fail("out of memory");
    if (build_header(c, *ts, *nt, hdr)) { free(*ts); *ts = NULL; return 1; }
    *file_bytes = hdr->s.n + data_bytes;
    *n_params = 0;
    for (int i = 0; i < *nt; i++) *n_params += (*ts)[i].ne[0] * (*ts)[i].ne[1];
    return 0;
}

static void print_plan(const cfg *c, int nt, uint64_t n_params, uint64_t file_bytes) {
    fprintf(stderr, "gen-model: \"%s\": %s, %d layers, embd %d, heads %d/%d (head_dim %d), ffn %d, vocab %d, "
            "ctx %d, rope theta %g, %s embeddings; %d tensors, %.4g M parameters, %.1f MB%s%s\n",
            c->name, c->qwen2 ? "qwen2" : "llama", c->n_layer, c->n_embd, c->n_head, c->n_head_kv,
            c->n_embd / c->n_head, c->n_ff, c->n_vocab, c->n_ctx, c->rope_theta, c->tied ? "tied" : "untied",
            nt, (double)n_params / 1e6, (double)file_bytes / 1e6, c->out ? " -> " : "", c->out ? c->out : "");
}

int ds_gen_model_plan(int argc, char **argv, ds_gen_plan *out) {
    cfg c;
    tdesc *ts;
    int nt;
    buf hdr;
    uint64_t file_bytes, n_params;
    int rc = prepare(argc, argv, 0, &c, &ts, &nt, &hdr, &file_bytes, &n_params);
    if (rc) return rc == 2 ? 0 : rc;
    out->n_tensors = nt;
    out->n_params = n_params;
    out->file_bytes = file_bytes;
    free(ts);
    free(hdr.s.p);
    return 0;
}

int ds_cmd_gen_model(int argc, char **argv) {
    cfg c;
    tdesc *ts;
    int nt;
    buf hdr;
    uint64_t file_bytes, n_params;
    int rc = prepare(argc, argv, 1, &c, &ts, &nt, &hdr, &file_bytes, &n_params);
    if (rc == 1 && argc <= 1) usage(stderr);
    if (rc) return rc == 2 ? 0 : 1;
    if (!c.quiet || c.dry_run) {
        print_plan(&c, nt, n_params, file_bytes);
        int n_fb = 0;
        for (int i = 0; i < nt; i++) n_fb += ts[i].n_dims == 2 && ts[i].type != c.type;
        if (n_fb)
            fprintf(stderr, "gen-model: %d of the matrices have rows that are not a multiple of 256: stored as %s "
                    "(as llama.cpp does)\n", n_fb, type_by_id(c.type->fallback)->name);
    }
    if (!c.dry_run) rc = generate(&c, ts, nt, &hdr, file_bytes);
    free(ts);
    free(hdr.s.p);
    return rc;
}
