/* test_gguf.c — the GGUF reader against small files built in memory, corrupted copies of them,
 * and (when fetched) the real SmolLM2 model. */
#include "test.h"
#include "gguf.h"
#include "quant.h"

#include <stdlib.h>
#include <unistd.h>

/* ---------------------------------------------------------------- a tiny GGUF writer */

typedef struct { uint8_t *p; size_t n, cap; } wbuf;

static void w_raw(wbuf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void w_le(wbuf *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) { uint8_t x = (uint8_t)(v >> (8 * i)); w_raw(b, &x, 1); }
}
static void w_u32(wbuf *b, uint64_t v) { w_le(b, v, 4); }
static void w_u64(wbuf *b, uint64_t v) { w_le(b, v, 8); }
static void w_str(wbuf *b, const char *s) { w_u64(b, strlen(s)); w_raw(b, s, strlen(s)); }
static void w_header(wbuf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    w_raw(b, "GGUF", 4); w_u32(b, version); w_u64(b, n_tensors); w_u64(b, n_kv);
}
static void w_key(wbuf *b, const char *key, gguf_vtype t) { w_str(b, key); w_u32(b, t); }
static void w_kv_str(wbuf *b, const char *key, const char *v) { w_key(b, key, GGUF_VT_STRING); w_str(b, v); }
static void w_kv_int(wbuf *b, const char *key, gguf_vtype t, uint64_t v, int width) {
    w_key(b, key, t); w_le(b, v, width);
}
static void w_kv_f32(wbuf *b, const char *key, float f) {
    uint32_t x; memcpy(&x, &f, 4); w_kv_int(b, key, GGUF_VT_FLOAT32, x, 4);
}
static void w_kv_f64(wbuf *b, const char *key, double f) {
    uint64_t x; memcpy(&x, &f, 8); w_kv_int(b, key, GGUF_VT_FLOAT64, x, 8);
}
static void w_arr_head(wbuf *b, const char *key, gguf_vtype elem, uint64_t n) {
    w_key(b, key, GGUF_VT_ARRAY); w_u32(b, elem); w_u64(b, n);
}
static void w_tensor_info(wbuf *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                          uint32_t type, uint64_t offset) {
    w_str(b, name); w_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) w_u64(b, ne[d]);
    w_u32(b, type); w_u64(b, offset);
}
static void w_align(wbuf *b, size_t a) { while (b->n % a) w_le(b, 0, 1); }
static void patch(uint8_t *p, size_t pos, uint64_t v, int width) {
    for (int i = 0; i < width; i++) p[pos + (size_t)i] = (uint8_t)(v >> (8 * i));
}

/* The reference file: kvs of every value type and three tensors, recording where the fields
 * that the corruption tests overwrite are. It ends exactly at the end of the last tensor. */
typedef struct {
    size_t n_tensors, n_kv, name_len, type_u32b, key_u32b, bool_val, bools_data;
    size_t strs_count, u8s_count, align_val;
    size_t t_name[3], t_ndims[3], t_ne[3], t_type[3], t_off[3];
    uint64_t off[3];
    size_t data_offset;
} marks;

#define N_T 3
static const char *const T_NAME[N_T] = { "tok_a", "tok_b", "tok_c" };
static const uint32_t T_TYPE[N_T] = { DS_TYPE_F32, DS_TYPE_Q8_0, DS_TYPE_F16 };
static const uint32_t T_NDIMS[N_T] = { 2, 2, 1 };
static const uint64_t T_NE[N_T][2] = { { 4, 2 }, { 64, 2 }, { 8, 1 } };
static const uint64_t T_BYTES[N_T] = { 4 * 2 * 4, 2 * 2 * 34, 8 * 2 };
static const char *const STRS[3] = { "<|endoftext|>", "", "h\xc3\xa9llo" };

/* alignment 0: omit general.alignment (the reader must default to 32). */
static wbuf build_good(uint32_t version, uint32_t alignment, marks *m) {
    wbuf b = { 0 };
    size_t align = alignment ? alignment : 32;
    m->n_tensors = 8; m->n_kv = 16;
    w_header(&b, version, N_T, alignment ? 17 : 16);
    w_kv_str(&b, "general.architecture", "llama");
    w_key(&b, "general.name", GGUF_VT_STRING); m->name_len = b.n; w_str(&b, "tiny test");
    m->align_val = 0;
    if (alignment) { w_key(&b, "general.alignment", GGUF_VT_UINT32); m->align_val = b.n; w_u32(&b, alignment); }
    w_kv_int(&b, "test.u32a", GGUF_VT_UINT32, 7, 4);
    m->key_u32b = b.n + 8; w_str(&b, "test.u32b"); m->type_u32b = b.n; w_u32(&b, GGUF_VT_UINT32); w_u32(&b, 8);
    w_kv_int(&b, "test.i8", GGUF_VT_INT8, (uint64_t)-5, 1);
    w_kv_int(&b, "test.i64", GGUF_VT_INT64, (uint64_t)-(INT64_C(1) << 40), 8);
    w_kv_int(&b, "test.u64", GGUF_VT_UINT64, UINT64_C(1) << 40, 8);
    w_kv_int(&b, "test.u16", GGUF_VT_UINT16, 65535, 2);
    w_kv_f32(&b, "test.f32", 1.5f);
    w_kv_f64(&b, "test.f64", 0.25);
    w_key(&b, "test.bool", GGUF_VT_BOOL); m->bool_val = b.n; w_le(&b, 1, 1);
    w_key(&b, "test.strs", GGUF_VT_ARRAY); w_u32(&b, GGUF_VT_STRING); m->strs_count = b.n; w_u64(&b, 3);
    for (int i = 0; i < 3; i++) w_str(&b, STRS[i]);
    w_arr_head(&b, "test.i32s", GGUF_VT_INT32, 3);
    w_u32(&b, 1); w_u32(&b, (uint32_t)-2); w_u32(&b, 3);
    w_key(&b, "test.u8s", GGUF_VT_ARRAY); w_u32(&b, GGUF_VT_UINT8); m->u8s_count = b.n; w_u64(&b, 0);
    /* [[1, 2] of u8, ["x"] of string, [[] of i32] of array] */
    w_arr_head(&b, "test.nested", GGUF_VT_ARRAY, 3);
    w_u32(&b, GGUF_VT_UINT8); w_u64(&b, 2); w_le(&b, 1, 1); w_le(&b, 2, 1);
    w_u32(&b, GGUF_VT_STRING); w_u64(&b, 1); w_str(&b, "x");
    w_u32(&b, GGUF_VT_ARRAY); w_u64(&b, 1); w_u32(&b, GGUF_VT_INT32); w_u64(&b, 0);
    w_arr_head(&b, "test.bools", GGUF_VT_BOOL, 3);
    m->bools_data = b.n; w_le(&b, 1, 1); w_le(&b, 0, 1); w_le(&b, 1, 1);

    uint64_t off = 0;
    for (int i = 0; i < N_T; i++) {
        m->off[i] = off;
        m->t_name[i] = b.n;
        m->t_ndims[i] = b.n + 8 + strlen(T_NAME[i]);
        m->t_ne[i] = m->t_ndims[i] + 4;
        m->t_type[i] = m->t_ne[i] + 8 * T_NDIMS[i];
        m->t_off[i] = m->t_type[i] + 4;
        w_tensor_info(&b, T_NAME[i], T_NDIMS[i], T_NE[i], T_TYPE[i], off);
        off = (off + T_BYTES[i] + align - 1) / align * align;
    }
    w_align(&b, align);
    m->data_offset = b.n;
    for (int i = 0; i < N_T; i++) {
        while (b.n < m->data_offset + m->off[i]) w_le(&b, 0, 1);
        for (uint64_t j = 0; j < T_BYTES[i]; j++) w_le(&b, (uint64_t)(0x10 * (i + 1) + j), 1);
    }
    return b;
}

/* Parse an exact-size heap copy, so AddressSanitizer catches any read past the end. */
static ds_status parse_copy(const uint8_t *p, size_t n) {
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, p, n);
    gguf_file *g = NULL;
    ds_status st = gguf_open_buffer(copy, n, &g);
    if (st == DS_OK) gguf_close(g);
    free(copy);
    return st;
}

/* Good file with one field overwritten must fail with `want` and a message containing `needle`. */
static int rejects(const wbuf *good, size_t pos, uint64_t v, int width, ds_status want, const char *needle) {
    uint8_t *p = malloc(good->n);
    memcpy(p, good->p, good->n);
    patch(p, pos, v, width);
    ds_status st = parse_copy(p, good->n);
    free(p);
    if (st != want || !strstr(ds_last_error(), needle)) {
        fprintf(stderr, "    got status %d (want %d), message \"%s\" (want \"%s\")\n",
                (int)st, (int)want, ds_last_error(), needle);
        return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- good files */

TEST(gguf_parses_minimal_file) {
    marks m;
    wbuf b = build_good(3, 64, &m);
    gguf_file *g = NULL;
    ds_status st = gguf_open_buffer(b.p, b.n, &g);
    CHECK_MSG(st == DS_OK, "open: %s", ds_last_error());
    CHECK(g->version == 3 && g->n_kv == 17 && g->n_tensors == N_T && !g->mapped);
    CHECK(g->alignment == 64);
    CHECK(g->data_offset == m.data_offset && g->data_offset % 64 == 0);

    CHECK(gguf_str_eq(g->kv[0].key, "general.architecture") && gguf_str_eq(g->kv[0].v.s, "llama"));
    const gguf_kv *kv = gguf_find_kv(g, "test.i64");
    CHECK(kv && kv->type == GGUF_VT_INT64 && kv->v.i == -(INT64_C(1) << 40));
    kv = gguf_find_kv(g, "test.i8");
    CHECK(kv && kv->v.i == -5);
    kv = gguf_find_kv(g, "test.f64");
    CHECK(kv && kv->v.f == 0.25);
    CHECK(gguf_find_kv(g, "test.nope") == NULL && gguf_find_kv(g, "test") == NULL);

    kv = gguf_find_kv(g, "test.strs");
    CHECK(kv && kv->type == GGUF_VT_ARRAY && kv->arr_type == GGUF_VT_STRING && kv->arr_n == 3);
    for (int i = 0; i < 3; i++) CHECK(gguf_str_eq(kv->arr_strs[i], STRS[i]));
    kv = gguf_find_kv(g, "test.i32s");
    CHECK(kv && kv->arr_type == GGUF_VT_INT32 && kv->arr_n == 3 && kv->arr_strs == NULL);
    int32_t x; memcpy(&x, kv->arr_data + 4, 4);
    CHECK(x == -2);
    kv = gguf_find_kv(g, "test.u8s");
    CHECK(kv && kv->arr_n == 0);
    kv = gguf_find_kv(g, "test.nested");
    CHECK(kv && kv->arr_type == GGUF_VT_ARRAY && kv->arr_n == 3);

    for (int i = 0; i < N_T; i++) {
        const gguf_tensor *t = gguf_find_tensor(g, T_NAME[i]);
        CHECK(t == &g->tensors[i]);
        CHECK(t->type == T_TYPE[i] && t->n_dims == T_NDIMS[i]);
        CHECK(t->ne[0] == T_NE[i][0] && t->ne[1] == T_NE[i][1] && t->ne[2] == 1 && t->ne[3] == 1);
        CHECK(t->nbytes == T_BYTES[i] && t->offset == m.off[i] && t->offset % 64 == 0);
        CHECK(t->data == b.p + m.data_offset + m.off[i]);
        const uint8_t *d = t->data;
        CHECK(d[0] == 0x10 * (i + 1) && d[t->nbytes - 1] == (uint8_t)(0x10 * (i + 1) + t->nbytes - 1));
    }
    CHECK(gguf_find_tensor(g, "tok") == NULL && gguf_find_tensor(g, "tok_d") == NULL);
    gguf_close(g);
    free(b.p);
}

TEST(gguf_default_alignment_and_v2) {
    marks m;
    wbuf b = build_good(2, 0, &m);
    gguf_file *g = NULL;
    CHECK_MSG(gguf_open_buffer(b.p, b.n, &g) == DS_OK, "open: %s", ds_last_error());
    CHECK(g->version == 2 && g->n_kv == 16 && g->alignment == 32 && g->data_offset % 32 == 0);
    CHECK(g->tensors[1].offset == 32 && g->tensors[2].offset == 192);
    gguf_close(g);
    free(b.p);

    /* a file with neither keys nor tensors is valid */
    wbuf e = { 0 };
    w_header(&e, 3, 0, 0);
    CHECK(gguf_open_buffer(e.p, e.n, &g) == DS_OK && g->n_kv == 0 && g->n_tensors == 0);
    CHECK(gguf_find_kv(g, "x") == NULL && gguf_find_tensor(g, "x") == NULL);
    gguf_close(g);
    free(e.p);
}

TEST(gguf_getters) {
    marks m;
    wbuf b = build_good(3, 64, &m);
    gguf_file *g = NULL;
    CHECK(gguf_open_buffer(b.p, b.n, &g) == DS_OK);
    uint32_t u; float f; bool bo; gguf_str s; const gguf_kv *kv;
    CHECK(gguf_get_u32(g, "test.u32b", &u) == DS_OK && u == 8);
    CHECK(gguf_get_u32(g, "test.u16", &u) == DS_OK && u == 65535);
    CHECK(gguf_get_u32(g, "test.i8", &u) == DS_ERR_FORMAT && strstr(ds_last_error(), "test.i8"));
    CHECK(gguf_get_u32(g, "test.u64", &u) == DS_ERR_FORMAT && strstr(ds_last_error(), "does not fit"));
    CHECK(gguf_get_u32(g, "general.name", &u) == DS_ERR_FORMAT);
    CHECK(strstr(ds_last_error(), "general.name") && strstr(ds_last_error(), "string") &&
          strstr(ds_last_error(), "u32"));
    CHECK(gguf_get_u32(g, "no.such", &u) == DS_ERR_FORMAT && strstr(ds_last_error(), "missing key no.such"));
    CHECK(gguf_get_f32(g, "test.f32", &f) == DS_OK && f == 1.5f);
    CHECK(gguf_get_f32(g, "test.f64", &f) == DS_OK && f == 0.25f);
    CHECK(gguf_get_f32(g, "test.u32a", &f) == DS_ERR_FORMAT);
    CHECK(gguf_get_bool(g, "test.bool", &bo) == DS_OK && bo);
    CHECK(gguf_get_bool(g, "test.u32a", &bo) == DS_ERR_FORMAT && strstr(ds_last_error(), "bool"));
    CHECK(gguf_get_str(g, "general.name", &s) == DS_OK && gguf_str_eq(s, "tiny test"));
    CHECK(gguf_get_str(g, "test.strs", &s) == DS_ERR_FORMAT && strstr(ds_last_error(), "array of string"));
    CHECK(gguf_get_arr(g, "test.strs", GGUF_VT_STRING, &kv) == DS_OK && kv->arr_n == 3);
    CHECK(gguf_get_arr(g, "test.strs", GGUF_VT_INT32, &kv) == DS_ERR_FORMAT && kv == NULL);
    CHECK(strstr(ds_last_error(), "array of i32"));
    CHECK(gguf_get_arr(g, "test.u32a", GGUF_VT_UINT32, &kv) == DS_ERR_FORMAT);

    char buf[8];
    CHECK(strcmp(gguf_str_copy(s, buf, sizeof buf), "tiny te") == 0);
    CHECK(strcmp(gguf_str_copy(s, buf, 1), "") == 0);
    CHECK(!gguf_str_eq(s, "tiny") && !gguf_str_eq(s, "tiny test!"));
    CHECK(strcmp(gguf_vtype_name(GGUF_VT_FLOAT64), "f64") == 0);
    CHECK(strcmp(gguf_vtype_name((gguf_vtype)99), "unknown") == 0);
    gguf_close(g);
    free(b.p);
}

/* ---------------------------------------------------------------- bad files */

TEST(gguf_rejects_bad_magic_and_version) {
    marks m;
    wbuf b = build_good(3, 64, &m);
    CHECK(rejects(&b, 0, 'G' | 'G' << 8 | 'M' << 16 | 'L' << 24, 4, DS_ERR_FORMAT, "magic"));
    CHECK(rejects(&b, 4, 1, 4, DS_ERR_UNSUPPORTED, "version 1"));
    CHECK(rejects(&b, 4, 4, 4, DS_ERR_UNSUPPORTED, "version 4"));
    CHECK(rejects(&b, 4, 0, 4, DS_ERR_UNSUPPORTED, "version 0"));
    CHECK(rejects(&b, 4, 0x03000000u, 4, DS_ERR_UNSUPPORTED, "big-endian"));
    CHECK(parse_copy(b.p, 0) == DS_ERR_FORMAT);
    free(b.p);
}

TEST(gguf_rejects_every_truncation) {
    marks m;
    wbuf b = build_good(3, 64, &m);
    for (size_t n = 0; n < b.n; n++) {
        ds_status st = parse_copy(b.p, n);
        CHECK_MSG(st == DS_ERR_FORMAT, "prefix of %zu/%zu bytes: status %d (%s)", n, b.n, (int)st, ds_last_error());
        if (n >= m.data_offset) /* cut inside the data section: the tensor range check fires */
            CHECK_MSG(strstr(ds_last_error(), "outside the data section"), "%zu: %s", n, ds_last_error());
        else if (n > 8)
            CHECK_MSG(strstr(ds_last_error(), "byte"), "%zu: %s", n, ds_last_error());
    }
    CHECK(parse_copy(b.p, b.n) == DS_OK);
    free(b.p);
}

TEST(gguf_rejects_corrupt_header_and_kvs) {
    marks m;
    wbuf b = build_good(3, 64, &m);
    CHECK(rejects(&b, m.n_kv, UINT64_C(1) << 63, 8, DS_ERR_FORMAT, "n_kv = 9223372036854775808"));
    CHECK(rejects(&b, m.n_kv, UINT64_MAX, 8, DS_ERR_FORMAT, "n_kv"));
    CHECK(rejects(&b, m.n_tensors, UINT64_C(1) << 63, 8, DS_ERR_FORMAT, "n_tensors"));
    CHECK(rejects(&b, m.n_tensors, 4, 8, DS_ERR_FORMAT, "tensor"));  /* one more than present */
    CHECK(rejects(&b, m.name_len, UINT64_C(1) << 62, 8, DS_ERR_FORMAT, "string value length"));
    CHECK(rejects(&b, m.name_len, UINT64_MAX, 8, DS_ERR_FORMAT, "general.name"));
    CHECK(rejects(&b, m.strs_count, UINT64_C(1) << 61, 8, DS_ERR_FORMAT, "array count"));
    CHECK(rejects(&b, m.strs_count, UINT64_MAX, 8, DS_ERR_FORMAT, "test.strs"));
    CHECK(rejects(&b, m.u8s_count, UINT64_C(1) << 40, 8, DS_ERR_FORMAT, "array count"));
    CHECK(rejects(&b, m.type_u32b, 13, 4, DS_ERR_FORMAT, "unknown value type 13"));
    CHECK(rejects(&b, m.type_u32b, 0xffffffffu, 4, DS_ERR_FORMAT, "test.u32b"));
    CHECK(rejects(&b, m.bool_val, 2, 1, DS_ERR_FORMAT, "bool"));
    CHECK(rejects(&b, m.bools_data + 1, 0xff, 1, DS_ERR_FORMAT, "bool array"));
    CHECK(rejects(&b, m.key_u32b + 8, 'a', 1, DS_ERR_FORMAT, "duplicate key 'test.u32a'"));
    CHECK(rejects(&b, m.align_val, 0, 4, DS_ERR_FORMAT, "general.alignment = 0"));
    CHECK(rejects(&b, m.align_val, 3, 4, DS_ERR_FORMAT, "general.alignment = 3"));
    CHECK(rejects(&b, m.align_val - 4, GGUF_VT_FLOAT32, 4, DS_ERR_FORMAT, "general.alignment has type f32"));
    free(b.p);
}

TEST(gguf_rejects_corrupt_tensor_infos) {
    marks m;
    wbuf b = build_good(3, 64, &m);
    CHECK(rejects(&b, m.t_ndims[0], 0, 4, DS_ERR_FORMAT, "n_dims = 0"));
    CHECK(rejects(&b, m.t_ndims[0], 5, 4, DS_ERR_FORMAT, "n_dims = 5"));
    CHECK(rejects(&b, m.t_ne[0], 0, 8, DS_ERR_FORMAT, "ne[0] is 0"));
    CHECK(rejects(&b, m.t_ne[0] + 8, UINT64_C(1) << 62, 8, DS_ERR_FORMAT, "overflow"));
    CHECK(rejects(&b, m.t_ne[0], UINT64_MAX, 8, DS_ERR_FORMAT, "overflow"));
    CHECK(rejects(&b, m.t_ne[1], 48, 8, DS_ERR_FORMAT, "not a multiple of the Q8_0 block size 32"));
    CHECK(rejects(&b, m.t_type[1], 200, 4, DS_ERR_UNSUPPORTED, "tensor tok_b has unknown type id 200"));
    CHECK(rejects(&b, m.t_type[1], 4, 4, DS_ERR_UNSUPPORTED, "unknown type id 4"));  /* retired Q4_2 */
    CHECK(rejects(&b, m.t_off[1], m.off[1] + 16, 8, DS_ERR_FORMAT, "not a multiple of the alignment 64"));
    CHECK(rejects(&b, m.t_off[2], UINT64_C(1) << 20, 8, DS_ERR_FORMAT, "outside the data section"));
    CHECK(rejects(&b, m.t_off[2], UINT64_MAX - 63, 8, DS_ERR_FORMAT, "outside the data section"));
    CHECK(rejects(&b, m.t_off[1], m.off[0], 8, DS_ERR_FORMAT, "overlap"));
    CHECK(rejects(&b, m.t_off[0], m.off[1], 8, DS_ERR_FORMAT, "overlap"));
    CHECK(rejects(&b, m.t_name[1] + 8 + 4, 'a', 1, DS_ERR_FORMAT, "duplicate tensor name 'tok_a'"));
    CHECK(rejects(&b, m.t_name[1], 0, 8, DS_ERR_FORMAT, "length 0"));
    free(b.p);
}

TEST(gguf_nested_arrays_depth_limit) {
    /* arrays nested 7 deep parse; 9 deep are rejected (recursion stays bounded) */
    for (int depth = 7; depth <= 9; depth += 2) {
        wbuf b = { 0 };
        w_header(&b, 3, 0, 1);
        w_arr_head(&b, "deep", GGUF_VT_ARRAY, 1);
        for (int d = 1; d < depth - 1; d++) { w_u32(&b, GGUF_VT_ARRAY); w_u64(&b, 1); }
        w_u32(&b, GGUF_VT_UINT8); w_u64(&b, 1); w_le(&b, 42, 1);
        ds_status st = parse_copy(b.p, b.n);
        if (depth == 7) CHECK_MSG(st == DS_OK, "%s", ds_last_error());
        else CHECK(st == DS_ERR_FORMAT && strstr(ds_last_error(), "nested deeper"));
        free(b.p);
    }
}

/* ---------------------------------------------------------------- files on disk */

TEST(gguf_open_file) {
    gguf_file *g = NULL;
    CHECK(gguf_open("/nonexistent/dir/model.gguf", &g) == DS_ERR_IO && g == NULL);
    CHECK(strstr(ds_last_error(), "No such file") && strstr(ds_last_error(), "/nonexistent/dir/model.gguf"));

    marks m;
    wbuf b = build_good(3, 64, &m);
    char path[] = "/tmp/dsinfer_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, b.p, b.n) == (ssize_t)b.n);
    close(fd);
    ds_status st = gguf_open(path, &g);
    CHECK_MSG(st == DS_OK, "%s", ds_last_error());
    CHECK(g->mapped == 1 && g->size == b.n && g->n_tensors == N_T);
    const gguf_tensor *t = gguf_find_tensor(g, "tok_c");
    CHECK(t && memcmp(t->data, b.p + m.data_offset + m.off[2], t->nbytes) == 0);
    gguf_close(g);

    CHECK(truncate(path, (off_t)(b.n - 1)) == 0);  /* now the last tensor is cut short */
    CHECK(gguf_open(path, &g) == DS_ERR_FORMAT && g == NULL);
    CHECK(strstr(ds_last_error(), path) && strstr(ds_last_error(), "tok_c"));
    CHECK(truncate(path, 0) == 0);
    CHECK(gguf_open(path, &g) == DS_ERR_FORMAT && strstr(ds_last_error(), "not a GGUF file"));
    unlink(path);
    free(b.p);
}

TEST(gguf_real_model) {
    const char *path = test_model_path();
    if (!path) SKIP("model not fetched (scripts/fetch)");
    gguf_file *g = NULL;
    ds_status st = gguf_open(path, &g);
    CHECK_MSG(st == DS_OK, "%s", ds_last_error());
    CHECK(g->n_tensors == 272);
    CHECK_MSG(g->n_kv == 33, "n_kv = %llu", (unsigned long long)g->n_kv);
    const gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
    CHECK(t && t->type == DS_TYPE_Q8_0 && t->n_dims == 2 && t->ne[0] == 576 && t->ne[1] == 49152);
    CHECK(t->nbytes == (uint64_t)576 / 32 * 34 * 49152);
    uint32_t n_layer;
    CHECK(gguf_get_u32(g, "llama.block_count", &n_layer) == DS_OK && n_layer == 30);
    const gguf_kv *kv;
    CHECK(gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_VT_STRING, &kv) == DS_OK);
    CHECK(kv->arr_n == 49152 && gguf_str_eq(kv->arr_strs[0], "<|endoftext|>"));
    gguf_str arch;
    CHECK(gguf_get_str(g, "general.architecture", &arch) == DS_OK && gguf_str_eq(arch, "llama"));
    /* every tensor lies inside the file and is found by name */
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *ti = &g->tensors[i];
        char name[128];
        CHECK(gguf_find_tensor(g, gguf_str_copy(ti->name, name, sizeof name)) == ti);
        CHECK((const uint8_t *)ti->data + ti->nbytes <= g->base + g->size);
    }
    gguf_close(g);
}
