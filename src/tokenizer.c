/* tokenizer.c — GPT-2 byte-level BPE over the GGUF vocabulary (contract in tokenizer.h).
 *
 * The goal is token-for-token agreement with llama.cpp (tests/test_tokenizer.c checks goldens
 * made by llama-tokenize), so each stage reproduces llama.cpp's behaviour, quirks included:
 *
 *  1. Special tokens. Tokens of type control / user-defined / unknown are cut out of the raw
 *     text before anything else. Like llama.cpp this goes token by token, longest text first,
 *     splitting every remaining raw fragment at each occurrence (so with overlapping specials
 *     the longer one wins). Without parse_special only user-defined tokens are matched.
 *  2. Pre-tokenization of each raw fragment into words, by hand-written scanners equivalent to
 *     the regexes (and to llama.cpp's own custom scanners, whose edge cases they copy):
 *       gpt2  : 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *       smollm: first \p{N} (every number code point is its own piece), then gpt2 on the rest
 *       qwen2 : (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}
 *               | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *     Text is decoded leniently like llama.cpp (a bad byte becomes U+FFFD) and each word is
 *     re-encoded, so invalid UTF-8 tokenizes as U+FFFD would.
 *  3. BPE on each word. Every byte maps to one "byte-level" character (GPT-2's table), so the
 *     initial symbols are simply the word's bytes. Merges are applied lowest rank first (ties:
 *     leftmost), with a heap of candidate pairs. Strings are interned as integer ids (vocabulary
 *     ids, plus extra ids for merge parts/results that are not in the vocabulary), so the merge
 *     table is a hash map from (left id, right id) to (rank, merged id) and the inner loop does
 *     no string work. A final symbol that is not a vocabulary token falls back, as in llama.cpp,
 *     to the single-character tokens of its encoded bytes.
 *
 * Decoding uses per-token pieces computed once at load: normal tokens are mapped back from
 * byte-level characters to bytes, control/user-defined tokens are their literal text, byte
 * tokens ("<0x0A>") are one byte, unused tokens render as nothing. */
#include "tokenizer.h"
#include "unicode_tables.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Token attributes (llama.cpp's llama_token_attr, reduced to what we use) + our EOG bit. */
enum {
    ATTR_NORMAL = 1 << 0, ATTR_UNKNOWN = 1 << 1, ATTR_CONTROL = 1 << 2, ATTR_USER = 1 << 3,
    ATTR_UNUSED = 1 << 4, ATTR_BYTE = 1 << 5, ATTR_EOG = 1 << 6,
};

typedef enum { PRE_GPT2, PRE_SMOLLM, PRE_QWEN2 } pre_kind;

typedef struct { uint32_t off, len; } span;                      /* into the string arena */
typedef struct { uint32_t left, right; int32_t rank, result; } merge_ent;

struct ds_tokenizer {
    int n_vocab;                 /* real tokens: ids [0, n_vocab) */
    int n_str;                   /* interned strings: vocabulary + extra merge strings */
    size_t str_cap;
    char *arena; size_t arena_len, arena_cap;
    span *str;                   /* [n_str] */
    int32_t *str_hash; uint32_t str_mask;        /* open addressing, -1 = empty */
    merge_ent *merges; uint32_t merge_mask;      /* open addressing, left == UINT32_MAX empty */
    uint8_t *attr;               /* [n_vocab] */
    int32_t *special; int n_special;             /* matched in raw text, longest first */
    char *pieces; uint32_t *piece_off;           /* decoded bytes of token i: [off[i], off[i+1]) */
    int32_t byte_sym[256];       /* interned id of the byte-level character of each byte */
    int32_t single_tok[256];     /* vocabulary id of the 1-byte string, -1 if none */
    uint16_t byte_cp[256];       /* GPT-2 byte -> code point */
    int16_t cp_byte[324];        /* inverse, -1 where a code point is not a byte character */
    int32_t bos, eos;
    bool add_bos;
    pre_kind pre;
};

/* ------------------------------------------------------------------ small helpers */

/* Grow *p (elements of `elem` bytes) to hold at least `need`; false on OOM or overflow. */
static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2 / elem) return false;
        n *= 2;
    }
    void *q = realloc(*p, n * elem);
    if (!q) return false;
    *p = q; *cap = n;
    return true;
}

static uint64_t hash_bytes(const char *s, size_t n) {  /* FNV-1a, then a final mix */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= (uint8_t)s[i]; h *= 1099511628211ull; }
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint32_t a, uint32_t b) {
    uint64_t h = ((uint64_t)a << 32 | b) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 31);
}

static int utf8_encode(uint32_t cp, char *o) {
    if (cp > 0x10FFFF) cp = 0xFFFD;  /* llama.cpp would throw here; be forgiving instead */
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

/* Decode one code point the way llama.cpp's unicode_cpt_from_utf8 does: lead byte decides the
 * length, continuation bytes must be 10xxxxxx, overlongs and surrogates are NOT rejected, and a
 * bad sequence yields U+FFFD while consuming a single byte. */
static uint32_t utf8_decode(const uint8_t *s, size_t n, size_t *i) {
    size_t p = *i;
    uint8_t b = s[p];
#define CONT(k) ((s[p + (k)] & 0xC0) == 0x80)
    if (b < 0x80) { *i = p + 1; return b; }
    if ((b & 0x40) == 0) goto bad;
    if ((b & 0x20) == 0) {
        if (p + 1 >= n || !CONT(1)) goto bad;
        *i = p + 2; return (uint32_t)(b & 0x1F) << 6 | (s[p + 1] & 0x3F);
    }
    if ((b & 0x10) == 0) {
        if (p + 2 >= n || !CONT(1) || !CONT(2)) goto bad;
        *i = p + 3; return (uint32_t)(b & 0x0F) << 12 | (uint32_t)(s[p + 1] & 0x3F) << 6 | (s[p + 2] & 0x3F);
    }
    if ((b & 0x08) == 0) {
        if (p + 3 >= n || !CONT(1) || !CONT(2) || !CONT(3)) goto bad;
        *i = p + 4;
        return (uint32_t)(b & 0x07) << 18 | (uint32_t)(s[p + 1] & 0x3F) << 12 |
               (uint32_t)(s[p + 2] & 0x3F) << 6 | (s[p + 3] & 0x3F);
    }
#undef CONT
bad:
    *i = p + 1;
    return 0xFFFD;
}

/* Character class for the pre-tokenizers. CLS_NONE stands for "past the end of the piece",
 * which llama.cpp's scanners treat as matching no class at all. */
enum { CLS_OTHER = DS_UCLS_OTHER, CLS_L = DS_UCLS_LETTER, CLS_N = DS_UCLS_NUMBER,
       CLS_S = DS_UCLS_SPACE, CLS_NONE = 4 };

static uint8_t ucls(uint32_t cp) {
    if (cp < 0x80) {  /* fast path; same answers as the table */
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CLS_L;
        if (cp >= '0' && cp <= '9') return CLS_N;
        if (cp == ' ' || (cp >= 9 && cp <= 13)) return CLS_S;
        return CLS_OTHER;
    }
    size_t lo = 0, hi = DS_UCLS_NRANGES;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < ds_ucls_ranges[mid][0]) hi = mid;
        else if (cp > ds_ucls_ranges[mid][1]) lo = mid + 1;
        else return (uint8_t)ds_ucls_ranges[mid][2];
    }
    return CLS_OTHER;
}

/* ------------------------------------------------------------------ interned strings */

static int32_t str_find(const ds_tokenizer *t, const char *s, size_t n) {
    for (uint32_t h = (uint32_t)hash_bytes(s, n) & t->str_mask;; h = (h + 1) & t->str_mask) {
        int32_t id = t->str_hash[h];
        if (id < 0) return -1;
        if (t->str[id].len == n && memcmp(t->arena + t->str[id].off, s, n) == 0) return id;
    }
}

/* Insert id under its text; an existing entry with the same text is replaced (llama.cpp's
 * token_to_id keeps the LAST duplicate). str_append keeps the table at most half full. */
static void str_index(ds_tokenizer *t, int32_t id) {
    const char *s = t->arena + t->str[id].off;
    size_t n = t->str[id].len;
    for (uint32_t h = (uint32_t)hash_bytes(s, n) & t->str_mask;; h = (h + 1) & t->str_mask) {
        int32_t o = t->str_hash[h];
        if (o < 0 || (t->str[o].len == n && memcmp(t->arena + t->str[o].off, s, n) == 0)) {
            t->str_hash[h] = id;
            return;
        }
    }
}

/* Append a string to the arena as a new id (the caller indexes it). -1 on OOM. */
static int32_t str_append(ds_tokenizer *t, const char *s, size_t n) {
    if (t->n_str >= INT32_MAX - 1) return -1;
    if ((size_t)t->n_str + 1 > (t->str_mask + 1) / 2) {  /* grow the hash; re-index in id order */
        uint32_t size = (t->str_mask + 1) * 2;
        int32_t *h = malloc((size_t)size * sizeof *h);
        if (!h || size > (1u << 30)) { free(h); return -1; }
        memset(h, 0xFF, (size_t)size * sizeof *h);
        free(t->str_hash);
        t->str_hash = h; t->str_mask = size - 1;
        for (int32_t i = 0; i < t->n_str; i++) str_index(t, i);
    }
    if (!grow((void **)&t->str, &t->str_cap, (size_t)t->n_str + 1, sizeof(span))) return -1;
    if (!grow((void **)&t->arena, &t->arena_cap, t->arena_len + n + 1, 1)) return -1;
    if (t->arena_len + n > UINT32_MAX) return -1;
    if (n) memcpy(t->arena + t->arena_len, s, n);
    t->str[t->n_str] = (span){ (uint32_t)t->arena_len, (uint32_t)n };
    t->arena_len += n;
    return t->n_str++;
}

static int32_t str_intern(ds_tokenizer *t, const char *s, size_t n) {
    int32_t id = str_find(t, s, n);
    if (id >= 0) return id;
    id = str_append(t, s, n);
    if (id >= 0) str_index(t, id);
    return id;
}

static const merge_ent *merge_find(const ds_tokenizer *t, uint32_t a, uint32_t b) {
    for (uint32_t h = (uint32_t)hash_pair(a, b) & t->merge_mask;; h = (h + 1) & t->merge_mask) {
        const merge_ent *e = &t->merges[h];
        if (e->left == UINT32_MAX) return NULL;
        if (e->left == a && e->right == b) return e;
    }
}

/* ------------------------------------------------------------------ loading */

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t p = 16;
    while (p < n && p < (1u << 31)) p <<= 1;
    return p;
}

/* Token texts llama.cpp recognises by name: end-of-generation tokens (also the FIM pad/repo/
 * file-separator tokens, which it treats as EOG) and other control-looking tokens. Any of them
 * that the vocabulary does not already mark as control is upgraded to control, as llama.cpp
 * does, which also makes it matchable as a special token. */
static const char *const k_eog_names[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",                         /* FIM pad */
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",    /* FIM repo */
    "<|file_sep|>",                                                           /* FIM sep */
};
static const char *const k_control_names[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>",
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>",
};

/* Longest text first; equal lengths by id (llama.cpp leaves their order unspecified). */
static int cmp_special(int32_t x, int32_t y, const ds_tokenizer *t) {
    if (t->str[x].len != t->str[y].len) return t->str[x].len > t->str[y].len ? -1 : 1;
    return x < y ? -1 : x > y;
}

static void sort_specials(ds_tokenizer *t) {  /* insertion sort: a few dozen entries */
    for (int i = 1; i < t->n_special; i++) {
        int32_t v = t->special[i];
        int j = i;
        while (j > 0 && cmp_special(t->special[j - 1], v, t) > 0) { t->special[j] = t->special[j - 1]; j--; }
        t->special[j] = v;
    }
}

static uint32_t gguf_u32_or(const gguf_file *g, const char *key, uint32_t def) {
    const gguf_kv *kv = gguf_find_kv(g, key);
    uint32_t v;
    return kv && gguf_get_u32(g, key, &v) == DS_OK ? v : def;
}

/* Decoded bytes of token `id`, appended to *buf (grown as needed). */
static bool build_piece(const ds_tokenizer *t, int32_t id, char **buf, size_t *len, size_t *cap) {
    const char *s = t->arena + t->str[id].off;
    size_t n = t->str[id].len;
    uint8_t a = t->attr[id];
    /* enough for every case except [UNK_BYTE...] expansions, which grow again */
    if (!grow((void **)buf, cap, *len + n + 1, 1)) return false;
    char *o = *buf + *len;
    if (a & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER)) {  /* literal text */
        memcpy(o, s, n); *len += n;
    } else if (a & ATTR_NORMAL) {                         /* byte-level characters -> bytes */
        size_t i = 0, k = 0;
        while (i < n) {
            uint32_t cp = utf8_decode((const uint8_t *)s, n, &i);
            if (cp < 324 && t->cp_byte[cp] >= 0) { o[k++] = (char)t->cp_byte[cp]; continue; }
            /* not a byte character: llama.cpp emits "[UNK_BYTE_0x<hex><token text>]" */
            char u[4];
            int m = utf8_encode(cp, u);
            size_t need = *len + k + 12 + 2 * (size_t)m + 1 + n + 1 + (n - i);
            if (!grow((void **)buf, cap, need, 1)) return false;
            o = *buf + *len;
            memcpy(o + k, "[UNK_BYTE_0x", 12); k += 12;
            for (int j = 0; j < m; j++) k += (size_t)snprintf(o + k, 3, "%02x", (uint8_t)u[j]);
            memcpy(o + k, s, n); k += n;
            o[k++] = ']';
        }
        *len += k;
    } else if (a & ATTR_BYTE) {                           /* "<0xNN>" -> one byte */
        if (n >= 5) {
            char hex[3] = { s[3], s[4], 0 };
            o[0] = (char)strtol(hex, NULL, 16);
            *len += 1;
        }
    }                                                     /* unused/undefined: nothing */
    return true;
}

ds_status ds_tokenizer_new(const gguf_file *g, ds_tokenizer **out) {
    *out = NULL;
    gguf_str model;
    if (gguf_get_str(g, "tokenizer.ggml.model", &model) != DS_OK)
        return ds_error(DS_ERR_FORMAT, "tokenizer: missing tokenizer.ggml.model");
    if (!gguf_str_eq(model, "gpt2")) {
        char m[64];
        return ds_error(DS_ERR_UNSUPPORTED, "tokenizer: model '%s' is not supported (only gpt2 BPE)",
                        gguf_str_copy(model, m, sizeof m));
    }
    const gguf_kv *tok_kv, *merge_kv, *type_kv = NULL;
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_VT_STRING, &tok_kv) != DS_OK)
        return ds_error(DS_ERR_FORMAT, "tokenizer: tokenizer.ggml.tokens missing or not a string array");
    if (gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_VT_STRING, &merge_kv) != DS_OK)
        return ds_error(DS_ERR_FORMAT, "tokenizer: tokenizer.ggml.merges missing or not a string array");
    if (gguf_find_kv(g, "tokenizer.ggml.token_type") &&
        gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_VT_INT32, &type_kv) != DS_OK)
        return ds_error(DS_ERR_FORMAT, "tokenizer: tokenizer.ggml.token_type is not an int32 array");
    uint64_t n = tok_kv->arr_n, n_merges = merge_kv->arr_n;
    if (n == 0 || n > (1u << 24) || n_merges > (1u << 24))
        return ds_error(DS_ERR_FORMAT, "tokenizer: implausible vocabulary (%llu tokens, %llu merges)",
                        (unsigned long long)n, (unsigned long long)n_merges);
    if (type_kv && type_kv->arr_n < n)
        return ds_error(DS_ERR_FORMAT, "tokenizer: token_type has %llu entries for %llu tokens",
                        (unsigned long long)type_kv->arr_n, (unsigned long long)n);

    ds_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ds_error(DS_ERR_OOM, "tokenizer: out of memory");
    t->n_vocab = (int)n;
    t->str_mask = pow2_at_least(2 * (n + 512)) - 1;             /* grows on demand */
    t->merge_mask = pow2_at_least(n_merges + n_merges / 2 + 2) - 1;  /* fixed, <= 2/3 full */
    t->str_hash = malloc(((size_t)t->str_mask + 1) * sizeof *t->str_hash);
    t->merges = malloc(((size_t)t->merge_mask + 1) * sizeof *t->merges);
    t->attr = calloc((size_t)n, 1);
    if (!t->str_hash || !t->merges || !t->attr) goto oom;
    memset(t->str_hash, 0xFF, ((size_t)t->str_mask + 1) * sizeof *t->str_hash);
    memset(t->merges, 0xFF, ((size_t)t->merge_mask + 1) * sizeof *t->merges);

    /* Vocabulary. Empty texts get a placeholder name, as in llama.cpp (an empty special token
     * would otherwise match everywhere). */
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s = tok_kv->arr_strs[i];
        char tmp[32];
        if (s.len == 0) { snprintf(tmp, sizeof tmp, "[EMPTY_%llu]", (unsigned long long)i); s.ptr = tmp; s.len = strlen(tmp); }
        if (s.len > UINT32_MAX || str_append(t, s.ptr, (size_t)s.len) < 0) goto oom;
        str_index(t, (int32_t)i);
        int32_t ty = 1;
        if (type_kv) memcpy(&ty, type_kv->arr_data + 4 * i, 4);
        static const uint8_t type_attr[7] = { 0, ATTR_NORMAL, ATTR_UNKNOWN, ATTR_CONTROL,
                                              ATTR_USER, ATTR_UNUSED, ATTR_BYTE };
        t->attr[i] = ty >= 0 && ty < 7 ? type_attr[ty] : 0;
    }

    /* Merges: "left right", split at the first space after the first byte (a merge part may
     * itself be a space character in other encodings). Rank = index; the first of duplicate
     * pairs wins. Parts and results missing from the vocabulary get extra interned ids. */
    {
        char *cat = NULL; size_t cat_cap = 0;
        for (uint64_t i = 0; i < n_merges; i++) {
            gguf_str m = merge_kv->arr_strs[i];
            const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', (size_t)m.len - 1) : NULL;
            if (!sp) continue;
            size_t la = (size_t)(sp - m.ptr), lb = (size_t)m.len - la - 1;
            if (!grow((void **)&cat, &cat_cap, la + lb + 1, 1)) { free(cat); goto oom; }
            memcpy(cat, m.ptr, la); memcpy(cat + la, sp + 1, lb);
            int32_t a = str_intern(t, m.ptr, la), b = str_intern(t, sp + 1, lb);
            int32_t r = str_intern(t, cat, la + lb);
            if (a < 0 || b < 0 || r < 0) { free(cat); goto oom; }
            for (uint32_t h = (uint32_t)hash_pair((uint32_t)a, (uint32_t)b) & t->merge_mask;;
                 h = (h + 1) & t->merge_mask) {
                merge_ent *e = &t->merges[h];
                if (e->left == (uint32_t)a && e->right == (uint32_t)b) break;  /* duplicate */
                if (e->left == UINT32_MAX) { *e = (merge_ent){ (uint32_t)a, (uint32_t)b, (int32_t)i, r }; break; }
            }
        }
        free(cat);
    }

    /* GPT-2 byte <-> character table: printable Latin-1 bytes stand for themselves, the other
     * 68 bytes are shifted to U+0100.. in byte order. */
    {
        int k = 0;
        for (int i = 0; i < 324; i++) t->cp_byte[i] = -1;
        for (int b = 0; b < 256; b++) {
            bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            t->byte_cp[b] = (uint16_t)(keep ? b : 256 + k++);
            t->cp_byte[t->byte_cp[b]] = (int16_t)b;
        }
        for (int b = 0; b < 256; b++) {
            char u[4];
            int m = utf8_encode(t->byte_cp[b], u);
            t->byte_sym[b] = str_find(t, u, (size_t)m);
            char c = (char)b;
            int32_t id = str_find(t, &c, 1);
            t->single_tok[b] = id < t->n_vocab ? id : -1;
        }
    }

    /* Pre-tokenizer, by tokenizer.ggml.pre (names as llama.cpp maps them). */
    {
        gguf_str pre = { "", 0 };
        if (gguf_find_kv(g, "tokenizer.ggml.pre")) gguf_get_str(g, "tokenizer.ggml.pre", &pre);
        if (gguf_str_eq(pre, "smollm")) t->pre = PRE_SMOLLM;
        else if (gguf_str_eq(pre, "qwen2") || gguf_str_eq(pre, "deepseek-r1-qwen") ||
                 gguf_str_eq(pre, "megrez") || gguf_str_eq(pre, "stablelm2")) t->pre = PRE_QWEN2;
        else {
            char p[64];
            t->pre = PRE_GPT2;
            if (!gguf_str_eq(pre, "gpt-2"))
                ds_log(DS_LOG_INFO, "tokenizer: pre-tokenizer '%s' not known, using the GPT-2 pattern\n",
                       gguf_str_copy(pre, p, sizeof p));
        }
    }

    /* Special ids: llama.cpp's gpt2 defaults are bos = eos = 11, overridden by the keys. */
    {
        uint32_t nv = (uint32_t)n;
        uint32_t bos = gguf_u32_or(g, "tokenizer.ggml.bos_token_id", 11);
        uint32_t eos = gguf_u32_or(g, "tokenizer.ggml.eos_token_id", 11);
        uint32_t eot = gguf_u32_or(g, "tokenizer.ggml.eot_token_id", UINT32_MAX);
        uint32_t eom = gguf_u32_or(g, "tokenizer.ggml.eom_token_id", UINT32_MAX);
        t->bos = bos < nv ? (int32_t)bos : -1;
        t->eos = eos < nv ? (int32_t)eos : -1;
        if (t->eos >= 0) t->attr[t->eos] |= ATTR_EOG;
        if (eot < nv) t->attr[eot] |= ATTR_EOG;
        if (eom < nv) t->attr[eom] |= ATTR_EOG;
        for (size_t i = 0; i < sizeof k_eog_names / sizeof *k_eog_names; i++) {
            int32_t id = ds_tokenizer_find(t, k_eog_names[i]);
            if (id >= 0) t->attr[id] |= ATTR_EOG | ATTR_CONTROL;
        }
        for (size_t i = 0; i < sizeof k_control_names / sizeof *k_control_names; i++) {
            int32_t id = ds_tokenizer_find(t, k_control_names[i]);
            if (id >= 0) t->attr[id] |= ATTR_CONTROL;
        }
        bool ab = false;
        if (gguf_find_kv(g, "tokenizer.ggml.add_bos_token") &&
            gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &ab) == DS_OK) t->add_bos = ab;
        if (t->add_bos && t->bos < 0)
            ds_log(DS_LOG_ERROR, "tokenizer: add_bos_token set but no valid bos id; not adding BOS\n");
    }

    /* Special tokens for stage 1, longest text first. */
    for (int i = 0; i < t->n_vocab; i++)
        if (t->attr[i] & (ATTR_CONTROL | ATTR_USER | ATTR_UNKNOWN)) t->n_special++;
    t->special = malloc((size_t)DS_MAX(t->n_special, 1) * sizeof *t->special);
    if (!t->special) goto oom;
    for (int i = 0, k = 0; i < t->n_vocab; i++)
        if (t->attr[i] & (ATTR_CONTROL | ATTR_USER | ATTR_UNKNOWN)) t->special[k++] = i;
    sort_specials(t);

    /* Decoded pieces. */
    {
        size_t len = 0, cap = 0;
        t->piece_off = malloc(((size_t)n + 1) * sizeof *t->piece_off);
        if (!t->piece_off) goto oom;
        for (int i = 0; i < t->n_vocab; i++) {
            t->piece_off[i] = (uint32_t)len;
            if (!build_piece(t, i, &t->pieces, &len, &cap) || len > UINT32_MAX) goto oom;
        }
        t->piece_off[n] = (uint32_t)len;
    }
    *out = t;
    return DS_OK;
oom:
    ds_tokenizer_free(t);
    return ds_error(DS_ERR_OOM, "tokenizer: out of memory");
}

void ds_tokenizer_free(ds_tokenizer *t) {
    if (!t) return;
    free(t->arena); free(t->str); free(t->str_hash); free(t->merges); free(t->attr);
    free(t->special); free(t->pieces); free(t->piece_off);
    free(t);
}

/* ------------------------------------------------------------------ encoding */

typedef struct { int32_t id; uint32_t len; int32_t prev, next; } bpe_sym;
typedef struct { int32_t rank, left, right, rid; } bpe_pair;

typedef struct {
    const ds_tokenizer *t;
    int32_t *out; size_t n_out, out_cap;
    uint32_t *cp; uint8_t *cls; size_t cp_cap, cls_cap;  /* current raw fragment */
    char *word; size_t word_cap;                          /* current word, re-encoded */
    bpe_sym *sym; size_t sym_cap;
    bpe_pair *heap; size_t n_heap, heap_cap;
    bool oom;
} enc;

static void emit(enc *e, int32_t id) {
    if (e->oom) return;
    if (!grow((void **)&e->out, &e->out_cap, e->n_out + 1, sizeof *e->out)) { e->oom = true; return; }
    e->out[e->n_out++] = id;
}

static bool pair_less(const bpe_pair *a, const bpe_pair *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

/* Queue the pair (l, r) if the vocabulary has a merge for it. */
static void try_pair(enc *e, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    int32_t a = e->sym[l].id, b = e->sym[r].id;
    if (a < 0 || b < 0) return;
    const merge_ent *m = merge_find(e->t, (uint32_t)a, (uint32_t)b);
    if (!m) return;
    bpe_pair p = { m->rank, l, r, b };
    size_t i = e->n_heap++;  /* capacity reserved by bpe_word */
    while (i > 0 && pair_less(&p, &e->heap[(i - 1) / 2])) { e->heap[i] = e->heap[(i - 1) / 2]; i = (i - 1) / 2; }
    e->heap[i] = p;
}

static bpe_pair pop_pair(enc *e) {
    bpe_pair top = e->heap[0], last = e->heap[--e->n_heap];
    size_t i = 0, n = e->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_less(&e->heap[c + 1], &e->heap[c])) c++;
        if (!pair_less(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c]; i = c;
    }
    if (n) e->heap[i] = last;
    return top;
}

/* BPE over one word's bytes; appends the resulting token ids. Symbol i always starts at byte
 * i (a merge folds the right symbol into the left one), so no text is copied around. */
static void bpe_word(enc *e, const uint8_t *w, size_t n) {
    const ds_tokenizer *t = e->t;
    if (n == 0 || e->oom) return;
    if (n > INT32_MAX / 4) { e->oom = true; return; }
    /* each merge queues at most two new pairs: n - 1 initial + 2 (n - 1) later */
    if (!grow((void **)&e->sym, &e->sym_cap, n, sizeof *e->sym) ||
        !grow((void **)&e->heap, &e->heap_cap, 3 * n, sizeof *e->heap)) { e->oom = true; return; }
    bpe_sym *s = e->sym;
    for (size_t i = 0; i < n; i++)
        s[i] = (bpe_sym){ t->byte_sym[w[i]], 1, (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1 };
    e->n_heap = 0;
    for (size_t i = 1; i < n; i++) try_pair(e, (int32_t)i - 1, (int32_t)i);
    while (e->n_heap) {
        bpe_pair p = pop_pair(e);
        /* stale: either side was merged away, or the right side grew (its id changed). While
         * both are alive they are still neighbours, and the left id can only change by
         * absorbing the right one. */
        if (s[p.left].len == 0 || s[p.right].len == 0 || s[p.right].id != p.rid) continue;
        const merge_ent *m = merge_find(t, (uint32_t)s[p.left].id, (uint32_t)p.rid);
        s[p.left].id = m->result;
        s[p.left].len += s[p.right].len;
        s[p.right].len = 0;
        s[p.left].next = s[p.right].next;
        if (s[p.left].next >= 0) s[s[p.left].next].prev = p.left;
        try_pair(e, s[p.left].prev, p.left);
        try_pair(e, p.left, s[p.left].next);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next) {
        if (s[i].id >= 0 && s[i].id < t->n_vocab) { emit(e, s[i].id); continue; }
        /* Not a token: llama.cpp looks up each byte of the byte-level text on its own. */
        for (uint32_t k = 0; k < s[i].len; k++) {
            char u[4];
            int m = utf8_encode(t->byte_cp[w[(uint32_t)i + k]], u);
            for (int j = 0; j < m; j++)
                if (t->single_tok[(uint8_t)u[j]] >= 0) emit(e, t->single_tok[(uint8_t)u[j]]);
        }
    }
}

/* Word = code points [a, b) of the current fragment: re-encode to UTF-8, then BPE. */
static void word(enc *e, size_t a, size_t b) {
    if (e->oom) return;
    if (!grow((void **)&e->word, &e->word_cap, 4 * (b - a) + 1, 1)) { e->oom = true; return; }
    size_t n = 0;
    for (size_t i = a; i < b; i++) n += (size_t)utf8_encode(e->cp[i], e->word + n);
    bpe_word(e, (const uint8_t *)e->word, n);
}

/* Class at i within a piece ending at `end`; past the end is CLS_NONE. */
#define CLS(i) ((i) < end ? cls[i] : CLS_NONE)

/* 's 't 're 've 'm 'll 'd at pos (ASCII-case-insensitive if fold): its length, else 0. */
static size_t contraction(const uint32_t *cp, size_t pos, size_t end, bool fold) {
    if (cp[pos] != '\'' || pos + 1 >= end) return 0;
    uint32_t a = cp[pos + 1];
    if (fold && a >= 'A' && a <= 'Z') a += 32;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= end) return 0;
    uint32_t b = cp[pos + 2];
    if (fold && b >= 'A' && b <= 'Z') b += 32;
    return ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) ? 3 : 0;
}

/* gpt2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static void split_gpt2(enc *e, size_t begin, size_t end) {
    const uint32_t *cp = e->cp;
    const uint8_t *cls = e->cls;
    size_t pos = begin;
    while (pos < end) {
        size_t start = pos, k;
        uint32_t c = cp[pos];
        if ((k = contraction(cp, pos, end, false))) { pos += k; goto out; }
        /* " ?X+" for X = letters, numbers, or "other" (not space/letter/number) */
        uint8_t f = c == ' ' ? CLS(pos + 1) : cls[pos];
        if (f == CLS_L || f == CLS_N || f == CLS_OTHER) {
            pos += c == ' ';
            while (CLS(pos) == f) pos++;
            goto out;
        }
        /* whitespace run: all of it if it reaches the end, else all but the last one
         * (\s+(?!\S) leaves that one to prefix the next word) */
        k = 0;
        while (CLS(pos + k) == CLS_S) k++;
        if (k > 1 && pos + k < end) pos += k - 1;
        else pos += k ? k : 1;
    out:
        word(e, start, pos);
    }
}

/* qwen2: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*
 *        |\s*[\r\n]+|\s+(?!\S)|\s+ */
static void split_qwen2(enc *e, size_t begin, size_t end) {
    const uint32_t *cp = e->cp;
    const uint8_t *cls = e->cls;
    size_t pos = begin;
    while (pos < end) {
        size_t start = pos, k;
        uint32_t c = cp[pos];
        uint8_t f = cls[pos];
        if ((k = contraction(cp, pos, end, true))) { pos += k; goto out; }
        /* [^\r\n\p{L}\p{N}]?\p{L}+ : one optional non-letter lead (space, punctuation...) */
        if (c != '\r' && c != '\n' && f != CLS_N && (f == CLS_L || CLS(pos + 1) == CLS_L)) {
            pos++;
            while (CLS(pos) == CLS_L) pos++;
            goto out;
        }
        if (f == CLS_N) { pos++; goto out; }  /* \p{N}: digits one at a time */
        /* " ?[^\s\p{L}\p{N}]+[\r\n]*" (a lone trailing space also lands here, harmlessly) */
        uint8_t f2 = c == ' ' ? CLS(pos + 1) : f;
        if (f2 == CLS_OTHER || f2 == CLS_NONE) {
            pos += c == ' ';
            while (CLS(pos) == CLS_OTHER) pos++;
            while (pos < end && (cp[pos] == '\r' || cp[pos] == '\n')) pos++;
            goto out;
        }
        /* \s*[\r\n]+ : whitespace up to and including the last \r or \n of the run */
        size_t last_nl = 0;
        k = 0;
        while (CLS(pos + k) == CLS_S) {
            if (cp[pos + k] == '\r' || cp[pos + k] == '\n') last_nl = pos + k + 1;
            k++;
        }
        if (last_nl) pos = last_nl;
        else if (k > 1 && pos + k < end) pos += k - 1;  /* \s+(?!\S) */
        else pos += k ? k : 1;                          /* \s+ */
    out:
        word(e, start, pos);
    }
}

/* smollm: "\p{N}" splits first (each number code point alone), then gpt2 on what is between. */
static void split_smollm(enc *e, size_t begin, size_t end) {
    size_t i = begin;
    while (i < end) {
        if (e->cls[i] == CLS_N) { word(e, i, i + 1); i++; continue; }
        size_t j = i;
        while (j < end && e->cls[j] != CLS_N) j++;
        split_gpt2(e, i, j);
        i = j;
    }
}
#undef CLS

static void encode_raw(enc *e, const uint8_t *s, size_t n) {
    if (n == 0 || e->oom) return;
    if (!grow((void **)&e->cp, &e->cp_cap, n, sizeof *e->cp) ||
        !grow((void **)&e->cls, &e->cls_cap, n, 1)) { e->oom = true; return; }
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        uint32_t c = utf8_decode(s, n, &i);
        e->cp[m] = c;
        e->cls[m++] = ucls(c);
    }
    switch (e->t->pre) {
    case PRE_SMOLLM: split_smollm(e, 0, m); break;
    case PRE_QWEN2: split_qwen2(e, 0, m); break;
    default: split_gpt2(e, 0, m); break;
    }
}

typedef struct { size_t off, len; int32_t tok; } frag;  /* tok < 0: raw text */

static const char *find_bytes(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn == 0 || nn > hn) return NULL;
    const char *end = h + hn - nn + 1;
    for (const char *p = h; p < end; p++) {
        p = memchr(p, nd[0], (size_t)(end - p));
        if (!p) return NULL;
        if (memcmp(p, nd, nn) == 0) return p;
    }
    return NULL;
}

ds_status ds_tokenizer_encode(const ds_tokenizer *t, const char *text, size_t len, bool add_bos,
                              bool parse_special, int32_t **out, int *n_out) {
    *out = NULL; *n_out = 0;
    if (!text && len) return ds_error(DS_ERR_ARG, "tokenizer: NULL text");
    if (len > (size_t)INT32_MAX) return ds_error(DS_ERR_ARG, "tokenizer: text too long");
    enc e = { .t = t };
    frag *fr = malloc(sizeof *fr), *nf = NULL;
    size_t n_fr = 1, fr_cap = 1, nf_cap = 0;
    if (!fr) return ds_error(DS_ERR_OOM, "tokenizer: out of memory");
    fr[0] = (frag){ 0, len, -1 };

    /* Stage 1: cut special tokens out of the raw fragments, one token at a time. */
    for (int si = 0; si < t->n_special && !e.oom; si++) {
        int32_t id = t->special[si];
        if (!parse_special && (t->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN))) continue;
        const char *st = t->arena + t->str[id].off;
        size_t sl = t->str[id].len;
        size_t n_nf = 0;
        for (size_t i = 0; i < n_fr; i++) {
            frag f = fr[i];
            const char *hit;
            while (f.tok < 0 && (hit = find_bytes(text + f.off, f.len, st, sl)) != NULL) {
                size_t at = (size_t)(hit - text);
                if (!grow((void **)&nf, &nf_cap, n_nf + 2, sizeof *nf)) { e.oom = true; break; }
                if (at > f.off) nf[n_nf++] = (frag){ f.off, at - f.off, -1 };
                nf[n_nf++] = (frag){ at, sl, id };
                f.len -= at + sl - f.off;
                f.off = at + sl;
            }
            if (e.oom) break;
            if (f.tok >= 0 || f.len > 0) {
                if (!grow((void **)&nf, &nf_cap, n_nf + 1, sizeof *nf)) { e.oom = true; break; }
                nf[n_nf++] = f;
            }
        }
        frag *tmp = fr; fr = nf; nf = tmp;
        size_t tc = fr_cap; fr_cap = nf_cap; nf_cap = tc;
        n_fr = n_nf;
    }

    /* Stage 2+3: pre-tokenize and BPE the raw fragments. */
    if (add_bos && t->add_bos && t->bos >= 0) emit(&e, t->bos);
    for (size_t i = 0; i < n_fr && !e.oom; i++) {
        if (fr[i].tok >= 0) emit(&e, fr[i].tok);
        else encode_raw(&e, (const uint8_t *)text + fr[i].off, fr[i].len);
    }
    free(fr); free(nf);
    free(e.cp); free(e.cls); free(e.word); free(e.sym); free(e.heap);
    if (e.oom || e.n_out > (size_t)INT32_MAX) {
        free(e.out);
        return ds_error(DS_ERR_OOM, "tokenizer: out of memory");
    }
    if (!e.out) e.out = malloc(sizeof *e.out);  /* non-NULL even when empty */
    if (!e.out) return ds_error(DS_ERR_OOM, "tokenizer: out of memory");
    *out = e.out;
    *n_out = (int)e.n_out;
    return DS_OK;
}

/* ------------------------------------------------------------------ queries */

int ds_tokenizer_n_vocab(const ds_tokenizer *t) { return t->n_vocab; }
int32_t ds_tokenizer_bos(const ds_tokenizer *t) { return t->bos; }
int32_t ds_tokenizer_eos(const ds_tokenizer *t) { return t->eos; }
bool ds_tokenizer_add_bos(const ds_tokenizer *t) { return t->add_bos; }

bool ds_tokenizer_is_eog(const ds_tokenizer *t, int32_t tok) {
    return tok >= 0 && tok < t->n_vocab && (t->attr[tok] & ATTR_EOG);
}

int32_t ds_tokenizer_find(const ds_tokenizer *t, const char *text) {
    int32_t id = str_find(t, text, strlen(text));
    return id < t->n_vocab ? id : -1;
}

/* Copies at most cap bytes (a piece longer than cap is truncated) and returns the count. */
int ds_tokenizer_piece(const ds_tokenizer *t, int32_t tok, bool render_special, char *buf, int cap) {
    if (tok < 0 || tok >= t->n_vocab) return -1;
    if (!render_special && (t->attr[tok] & (ATTR_CONTROL | ATTR_UNKNOWN))) return 0;
    size_t n = t->piece_off[tok + 1] - t->piece_off[tok];
    if (cap < 0) cap = 0;
    if (n > (size_t)cap) n = (size_t)cap;
    if (n) memcpy(buf, t->pieces + t->piece_off[tok], n);
    return (int)n;
}
