/* gguf.c — GGUF v2/v3 reader (contract in gguf.h).
 *
 * The file is parsed and validated once, in gguf_open / gguf_open_buffer, through a
 * bounds-checked cursor. Nothing is copied: keys, strings, array payloads and tensor data all
 * point into the caller's buffer or our mapping. Anything that could later send an accessor out
 * of bounds (a count, a length, an offset, a size) is rejected here, so accessors need no checks.
 *
 * Layout (all little-endian):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv
 *   n_kv x      { string key, u32 value_type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
 *   padding to general.alignment, then the tensor data section (offsets are relative to it).
 * A string is u64 length + bytes (no NUL). An array value is u32 elem_type, u64 count, elements. */
#include "gguf.h"
#include "quant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NAME 65535      /* keys and tensor names; real ones are well under 100 bytes */
#define GGUF_MAX_ARRAY_DEPTH 8   /* arrays of arrays may nest at most this deep (stack safety) */
/* Smallest possible encodings, used to reject counts the remaining bytes cannot hold before
 * anything is allocated: kv = key len + 1 key byte + type + 1 value byte; tensor info = name len
 * + 1 name byte + n_dims + one ne + type + offset; nested array = elem type + count. */
#define MIN_KV_BYTES     (8 + 1 + 4 + 1)
#define MIN_TENSOR_BYTES (8 + 1 + 4 + 8 + 4 + 8)
#define MIN_ARRAY_BYTES  (4 + 8)

#define TRY(x) do { ds_status s_ = (x); if (s_ != DS_OK) return s_; } while (0)

/* Sorted (name, index) pairs: duplicate detection at open, binary search afterwards. */
typedef struct { gguf_str name; size_t idx; } name_ix;

/* What gguf_open hands out is &impl->pub; the lookup tables stay private. */
typedef struct {
    gguf_file pub;
    name_ix *kv_ix, *t_ix;
} gguf_impl;

/* Bounds-checked cursor; `where` names the item being parsed, for error messages. */
typedef struct {
    const uint8_t *p;
    size_t size, pos;
    char where[160];
} cursor;

/* Byte size of each fixed-size value type; 0 for string and array (variable). */
static const uint8_t vt_size[GGUF_VT_COUNT] = {
    [GGUF_VT_UINT8] = 1, [GGUF_VT_INT8] = 1, [GGUF_VT_UINT16] = 2, [GGUF_VT_INT16] = 2,
    [GGUF_VT_UINT32] = 4, [GGUF_VT_INT32] = 4, [GGUF_VT_FLOAT32] = 4, [GGUF_VT_BOOL] = 1,
    [GGUF_VT_UINT64] = 8, [GGUF_VT_INT64] = 8, [GGUF_VT_FLOAT64] = 8,
};

const char *gguf_vtype_name(gguf_vtype t) {
    static const char *const names[GGUF_VT_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
    };
    return (unsigned)t < GGUF_VT_COUNT ? names[t] : "unknown";
}

static size_t left(const cursor *c) { return c->size - c->pos; }

static ds_status need(cursor *c, uint64_t n, const char *what) {
    if (n <= left(c)) return DS_OK;
    return ds_error(DS_ERR_FORMAT, "GGUF truncated: %s: %s needs %llu bytes at byte %zu, only %zu left",
                    c->where, what, (unsigned long long)n, c->pos, left(c));
}

/* Read an n-byte (1..8) little-endian unsigned integer. Byte-wise, so no alignment concerns. */
static ds_status rd_uint(cursor *c, int n, const char *what, uint64_t *out) {
    TRY(need(c, (uint64_t)n, what));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | c->p[c->pos + (size_t)i];
    c->pos += (size_t)n;
    *out = v;
    return DS_OK;
}

static ds_status rd_str(cursor *c, const char *what, gguf_str *out) {
    size_t at = c->pos;
    uint64_t len;
    TRY(rd_uint(c, 8, what, &len));
    if (len > left(c))
        return ds_error(DS_ERR_FORMAT, "GGUF %s: %s length %llu at byte %zu exceeds the %zu bytes left",
                        c->where, what, (unsigned long long)len, at, left(c));
    out->ptr = (const char *)c->p + c->pos;
    out->len = len;
    c->pos += (size_t)len;
    return DS_OK;
}

static ds_status rd_vtype(cursor *c, const char *what, gguf_vtype *out) {
    size_t at = c->pos;
    uint64_t t;
    TRY(rd_uint(c, 4, what, &t));
    if (t >= GGUF_VT_COUNT)
        return ds_error(DS_ERR_FORMAT, "GGUF %s: unknown %s %llu at byte %zu (valid: 0..%d)",
                        c->where, what, (unsigned long long)t, at, GGUF_VT_COUNT - 1);
    *out = (gguf_vtype)t;
    return DS_OK;
}

/* Reject `n` items of at least `min_bytes` each that cannot fit in what is left. This runs
 * before any allocation or loop sized by n, so a hostile count fails at once. */
static ds_status count_fits(cursor *c, uint64_t n, size_t min_bytes, const char *what) {
    if (n <= left(c) / min_bytes) return DS_OK;
    return ds_error(DS_ERR_FORMAT, "GGUF %s: %s = %llu cannot fit in the %zu bytes left at byte %zu",
                    c->where, what, (unsigned long long)n, left(c), c->pos);
}

static size_t elem_min_bytes(gguf_vtype t) {
    return t == GGUF_VT_STRING ? 8 : t == GGUF_VT_ARRAY ? MIN_ARRAY_BYTES : vt_size[t];
}

/* Walk an array body (element type and count already read, count already checked by
 * count_fits) and leave the cursor after it. Fixed-size elements are checked in bulk; strings
 * and nested arrays one at a time, each consuming at least one byte, so the work is bounded by
 * the file size. Strings are recorded in `strs` when it is non-NULL. */
static ds_status rd_array_body(cursor *c, gguf_vtype et, uint64_t n, int depth, gguf_str *strs) {
    if (vt_size[et]) {
        size_t bytes = (size_t)n * vt_size[et];  /* no overflow: n * size <= left(c) */
        if (et == GGUF_VT_BOOL)
            for (size_t i = 0; i < bytes; i++)
                if (c->p[c->pos + i] > 1)
                    return ds_error(DS_ERR_FORMAT, "GGUF %s: bool array element %zu at byte %zu is %u (must be 0 or 1)",
                                    c->where, i, c->pos + i, c->p[c->pos + i]);
        c->pos += bytes;
        return DS_OK;
    }
    if (et == GGUF_VT_STRING) {
        for (uint64_t i = 0; i < n; i++) {
            gguf_str s;
            TRY(rd_str(c, "array string", &s));
            if (strs) strs[i] = s;
        }
        return DS_OK;
    }
    if (depth >= GGUF_MAX_ARRAY_DEPTH)
        return ds_error(DS_ERR_FORMAT, "GGUF %s: arrays nested deeper than %d at byte %zu",
                        c->where, GGUF_MAX_ARRAY_DEPTH, c->pos);
    for (uint64_t i = 0; i < n; i++) {
        gguf_vtype sub;
        uint64_t m;
        TRY(rd_vtype(c, "nested array element type", &sub));
        TRY(rd_uint(c, 8, "nested array count", &m));
        TRY(count_fits(c, m, elem_min_bytes(sub), "nested array count"));
        TRY(rd_array_body(c, sub, m, depth + 1, NULL));
    }
    return DS_OK;
}

/* Sign-extend the low `bits` bits of v. */
static int64_t sext(uint64_t v, int bits) {
    if (bits < 64 && (v >> (bits - 1) & 1)) v |= ~(uint64_t)0 << bits;
    int64_t r;
    memcpy(&r, &v, sizeof r);
    return r;
}

static ds_status rd_scalar(cursor *c, gguf_kv *kv) {
    size_t at = c->pos;
    int n = vt_size[kv->type];
    uint64_t raw;
    TRY(rd_uint(c, n, "value", &raw));
    switch (kv->type) {
    case GGUF_VT_INT8: case GGUF_VT_INT16: case GGUF_VT_INT32: case GGUF_VT_INT64:
        kv->v.i = sext(raw, 8 * n);
        break;
    case GGUF_VT_FLOAT32: {
        uint32_t b = (uint32_t)raw; float f;
        memcpy(&f, &b, sizeof f);
        kv->v.f = f;
        break;
    }
    case GGUF_VT_FLOAT64:
        memcpy(&kv->v.f, &raw, sizeof raw);
        break;
    case GGUF_VT_BOOL:
        if (raw > 1)
            return ds_error(DS_ERR_FORMAT, "GGUF %s: bool value at byte %zu is %llu (must be 0 or 1)",
                            c->where, at, (unsigned long long)raw);
        kv->v.b = raw != 0;
        break;
    default:  /* unsigned integers */
        kv->v.u = raw;
    }
    return DS_OK;
}

static ds_status rd_kv(cursor *c, gguf_kv *kv) {
    size_t at = c->pos;
    TRY(rd_str(c, "key", &kv->key));
    if (kv->key.len == 0 || kv->key.len > GGUF_MAX_NAME)
        return ds_error(DS_ERR_FORMAT, "GGUF %s: key at byte %zu has length %llu (must be 1..%d)",
                        c->where, at, (unsigned long long)kv->key.len, GGUF_MAX_NAME);
    snprintf(c->where, sizeof c->where, "key '%.*s'", (int)DS_MIN(kv->key.len, 100), kv->key.ptr);
    TRY(rd_vtype(c, "value type", &kv->type));
    if (kv->type == GGUF_VT_STRING) return rd_str(c, "string value", &kv->v.s);
    if (kv->type != GGUF_VT_ARRAY) return rd_scalar(c, kv);

    TRY(rd_vtype(c, "array element type", &kv->arr_type));
    TRY(rd_uint(c, 8, "array count", &kv->arr_n));
    TRY(count_fits(c, kv->arr_n, elem_min_bytes(kv->arr_type), "array count"));
    kv->arr_data = c->p + c->pos;
    if (kv->arr_type == GGUF_VT_STRING) {
        kv->arr_strs = calloc(kv->arr_n ? (size_t)kv->arr_n : 1, sizeof *kv->arr_strs);
        if (!kv->arr_strs) return ds_error(DS_ERR_OOM, "GGUF %s: out of memory indexing %llu strings",
                                           c->where, (unsigned long long)kv->arr_n);
    }
    return rd_array_body(c, kv->arr_type, kv->arr_n, 1, kv->arr_strs);
}

static ds_status rd_tensor_info(cursor *c, gguf_tensor *t, uint64_t alignment) {
    size_t at = c->pos;
    TRY(rd_str(c, "tensor name", &t->name));
    if (t->name.len == 0 || t->name.len > GGUF_MAX_NAME)
        return ds_error(DS_ERR_FORMAT, "GGUF %s: tensor name at byte %zu has length %llu (must be 1..%d)",
                        c->where, at, (unsigned long long)t->name.len, GGUF_MAX_NAME);
    snprintf(c->where, sizeof c->where, "tensor '%.*s' (info at byte %zu)",
             (int)DS_MIN(t->name.len, 100), t->name.ptr, at);

    uint64_t v;
    TRY(rd_uint(c, 4, "n_dims", &v));
    if (v < 1 || v > GGUF_MAX_DIMS)
        return ds_error(DS_ERR_FORMAT, "GGUF %s: n_dims = %llu (must be 1..%d)",
                        c->where, (unsigned long long)v, GGUF_MAX_DIMS);
    t->n_dims = (uint32_t)v;
    /* Element counts are int64 everywhere downstream, so the product must fit in int64. */
    uint64_t nel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        TRY(rd_uint(c, 8, "dimension", &t->ne[d]));
        if (t->ne[d] == 0)
            return ds_error(DS_ERR_FORMAT, "GGUF %s: ne[%u] is 0", c->where, d);
        if (t->ne[d] > (uint64_t)INT64_MAX / nel)
            return ds_error(DS_ERR_FORMAT, "GGUF %s: element count overflows (ne[%u] = %llu)",
                            c->where, d, (unsigned long long)t->ne[d]);
        nel *= t->ne[d];
    }

    TRY(rd_uint(c, 4, "type", &v));
    t->type = (uint32_t)v;
    const ds_type_info *ti = ds_type_info_get(t->type);
    if (!ti || ti->block <= 0 || ti->bytes <= 0)
        return ds_error(DS_ERR_UNSUPPORTED, "tensor %.*s has unknown type id %u",
                        (int)DS_MIN(t->name.len, 100), t->name.ptr, t->type);
    if (t->ne[0] % (uint64_t)ti->block)
        return ds_error(DS_ERR_FORMAT, "GGUF %s: ne[0] = %llu is not a multiple of the %s block size %d",
                        c->where, (unsigned long long)t->ne[0], ti->name, ti->block);
    uint64_t blocks = nel / (uint64_t)ti->block;  /* exact: ne[0] is a multiple of the block */
    if (blocks > UINT64_MAX / (uint64_t)ti->bytes)
        return ds_error(DS_ERR_FORMAT, "GGUF %s: byte size overflows", c->where);
    t->nbytes = blocks * (uint64_t)ti->bytes;

    TRY(rd_uint(c, 8, "offset", &t->offset));
    if (t->offset % alignment)
        return ds_error(DS_ERR_FORMAT, "GGUF %s: offset %llu is not a multiple of the alignment %llu",
                        c->where, (unsigned long long)t->offset, (unsigned long long)alignment);
    return DS_OK;
}

static int name_cmp(gguf_str a, gguf_str b) {
    int r = memcmp(a.ptr, b.ptr, (size_t)DS_MIN(a.len, b.len));
    return r ? r : (a.len > b.len) - (a.len < b.len);
}

static int ix_cmp(const void *a, const void *b) {
    return name_cmp(((const name_ix *)a)->name, ((const name_ix *)b)->name);
}

/* Build the sorted name index of n items and reject duplicates (adjacent after sorting). */
static ds_status build_index(name_ix **out, size_t n, const void *items, size_t stride,
                             size_t name_off, const char *what) {
    name_ix *ix = calloc(n ? n : 1, sizeof *ix);
    if (!ix) return ds_error(DS_ERR_OOM, "GGUF: out of memory indexing %zu %ss", n, what);
    *out = ix;
    for (size_t i = 0; i < n; i++) {
        memcpy(&ix[i].name, (const uint8_t *)items + i * stride + name_off, sizeof(gguf_str));
        ix[i].idx = i;
    }
    qsort(ix, n, sizeof *ix, ix_cmp);
    for (size_t i = 1; i < n; i++)
        if (name_cmp(ix[i - 1].name, ix[i].name) == 0)
            return ds_error(DS_ERR_FORMAT, "GGUF: duplicate %s '%.*s'", what,
                            (int)DS_MIN(ix[i].name.len, 100), ix[i].name.ptr);
    return DS_OK;
}

static const name_ix *ix_find(const name_ix *ix, size_t n, const char *name) {
    if (!ix || !name) return NULL;
    gguf_str key = { name, strlen(name) };
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = name_cmp(ix[mid].name, key);
        if (r == 0) return &ix[mid];
        if (r < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}

typedef struct { uint64_t off, end; size_t idx; } span;

static int span_cmp(const void *a, const void *b) {
    uint64_t x = ((const span *)a)->off, y = ((const span *)b)->off;
    return (x > y) - (x < y);
}

/* Place every tensor inside the data section and make sure no two share bytes. */
static ds_status check_data(gguf_file *g) {
    uint64_t data_size = g->size > g->data_offset ? g->size - g->data_offset : 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return ds_error(DS_ERR_FORMAT,
                            "GGUF tensor '%.*s': data [%llu, +%llu) lies outside the data section "
                            "(%llu bytes at file byte %llu; file truncated?)",
                            (int)DS_MIN(t->name.len, 100), t->name.ptr, (unsigned long long)t->offset,
                            (unsigned long long)t->nbytes, (unsigned long long)data_size,
                            (unsigned long long)g->data_offset);
        t->data = g->base + g->data_offset + t->offset;
    }
    if (g->n_tensors < 2) return DS_OK;
    span *sp = calloc((size_t)g->n_tensors, sizeof *sp);
    if (!sp) return ds_error(DS_ERR_OOM, "GGUF: out of memory checking tensor overlap");
    for (size_t i = 0; i < g->n_tensors; i++)
        sp[i] = (span){ g->tensors[i].offset, g->tensors[i].offset + g->tensors[i].nbytes, i };
    qsort(sp, (size_t)g->n_tensors, sizeof *sp, span_cmp);
    ds_status st = DS_OK;
    for (size_t i = 1; i < g->n_tensors && st == DS_OK; i++)
        if (sp[i].off < sp[i - 1].end) {
            const gguf_tensor *a = &g->tensors[sp[i - 1].idx], *b = &g->tensors[sp[i].idx];
            st = ds_error(DS_ERR_FORMAT, "GGUF tensors '%.*s' and '%.*s' overlap (offsets %llu and %llu)",
                          (int)DS_MIN(a->name.len, 100), a->name.ptr, (int)DS_MIN(b->name.len, 100),
                          b->name.ptr, (unsigned long long)a->offset, (unsigned long long)b->offset);
        }
    free(sp);
    return st;
}

static ds_status parse(gguf_impl *im) {
    gguf_file *g = &im->pub;
    cursor c = { .p = g->base, .size = g->size, .pos = 0 };
    snprintf(c.where, sizeof c.where, "header");

    if (g->size < 4)
        return ds_error(DS_ERR_FORMAT, "not a GGUF file: only %zu bytes", g->size);
    if (memcmp(g->base, "GGUF", 4) != 0)
        return ds_error(DS_ERR_FORMAT, "not a GGUF file: bad magic %02x %02x %02x %02x (expected \"GGUF\")",
                        g->base[0], g->base[1], g->base[2], g->base[3]);
    c.pos = 4;
    uint64_t v;
    TRY(rd_uint(&c, 4, "version", &v));
    if (v != 2 && v != 3) {
        if (v == 1)
            return ds_error(DS_ERR_UNSUPPORTED, "GGUF version 1 is not supported (only v2 and v3); re-convert the model");
        if (v == 0x02000000u || v == 0x03000000u)
            return ds_error(DS_ERR_UNSUPPORTED, "big-endian GGUF files are not supported");
        return ds_error(DS_ERR_UNSUPPORTED, "GGUF version %llu is not supported (only v2 and v3)",
                        (unsigned long long)v);
    }
    g->version = (uint32_t)v;

    uint64_t n_tensors, n_kv;
    TRY(rd_uint(&c, 8, "n_tensors", &n_tensors));
    TRY(rd_uint(&c, 8, "n_kv", &n_kv));
    TRY(count_fits(&c, n_kv, MIN_KV_BYTES, "n_kv"));
    TRY(count_fits(&c, n_tensors, MIN_TENSOR_BYTES, "n_tensors"));

    /* Key/values. n_kv is set only once the array exists, so gguf_close sees a consistent state. */
    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    if (!g->kv) return ds_error(DS_ERR_OOM, "GGUF: out of memory for %llu key/values", (unsigned long long)n_kv);
    g->n_kv = n_kv;
    for (uint64_t i = 0; i < n_kv; i++) {
        snprintf(c.where, sizeof c.where, "key/value #%llu", (unsigned long long)i);
        TRY(rd_kv(&c, &g->kv[i]));
    }
    TRY(build_index(&im->kv_ix, (size_t)n_kv, g->kv, sizeof *g->kv, offsetof(gguf_kv, key), "key"));

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (gguf_find_kv(g, "general.alignment")) {
        uint32_t a;
        TRY(gguf_get_u32(g, "general.alignment", &a));
        if (a == 0 || (a & (a - 1)) != 0)
            return ds_error(DS_ERR_FORMAT, "GGUF: general.alignment = %u is not a nonzero power of two", a);
        g->alignment = a;
    }

    /* Tensor infos. */
    g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    if (!g->tensors)
        return ds_error(DS_ERR_OOM, "GGUF: out of memory for %llu tensors", (unsigned long long)n_tensors);
    g->n_tensors = n_tensors;
    for (uint64_t i = 0; i < n_tensors; i++) {
        snprintf(c.where, sizeof c.where, "tensor info #%llu", (unsigned long long)i);
        TRY(rd_tensor_info(&c, &g->tensors[i], g->alignment));
    }
    TRY(build_index(&im->t_ix, (size_t)n_tensors, g->tensors, sizeof *g->tensors,
                    offsetof(gguf_tensor, name), "tensor name"));

    /* The data section starts at the next alignment boundary; c.pos <= size, so no overflow. */
    g->data_offset = ((uint64_t)c.pos + g->alignment - 1) & ~(g->alignment - 1);
    return check_data(g);
}

void gguf_close(gguf_file *g) {
    if (!g) return;
    gguf_impl *im = (gguf_impl *)g;  /* pub is the first member */
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) free(g->kv[i].arr_strs);
    free(g->kv);
    free(g->tensors);
    free(im->kv_ix);
    free(im->t_ix);
    if (g->mapped && g->base) munmap((void *)g->base, g->size);
    free(im);
}

ds_status gguf_open_buffer(const void *buf, size_t size, gguf_file **out) {
    *out = NULL;
    if (!buf && size) return ds_error(DS_ERR_ARG, "gguf_open_buffer: NULL buffer of %zu bytes", size);
    gguf_impl *im = calloc(1, sizeof *im);
    if (!im) return ds_error(DS_ERR_OOM, "GGUF: out of memory");
    im->pub.base = buf ? buf : (const void *)"";
    im->pub.size = size;
    ds_status st = parse(im);
    if (st != DS_OK) { gguf_close(&im->pub); return st; }
    *out = &im->pub;
    return DS_OK;
}

ds_status gguf_open(const char *path, gguf_file **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ds_error(DS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return ds_error(DS_ERR_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) { close(fd); return ds_error(DS_ERR_IO, "%s is not a regular file", path); }
    if ((uint64_t)sb.st_size > SIZE_MAX) { close(fd); return ds_error(DS_ERR_IO, "%s is too large to map", path); }
    size_t size = (size_t)sb.st_size;
    if (size < 4) { close(fd); return ds_error(DS_ERR_FORMAT, "%s: not a GGUF file: only %zu bytes", path, size); }

    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);  /* the mapping keeps the file alive */
    if (map == MAP_FAILED) return ds_error(DS_ERR_IO, "cannot mmap %s: %s", path, strerror(e));

    gguf_impl *im = calloc(1, sizeof *im);
    if (!im) { munmap(map, size); return ds_error(DS_ERR_OOM, "GGUF: out of memory"); }
    im->pub.base = map;
    im->pub.size = size;
    im->pub.mapped = 1;
    ds_status st = parse(im);
    if (st != DS_OK) {
        char msg[1024];  /* prefix the path so the user knows which file is bad */
        snprintf(msg, sizeof msg, "%s", ds_last_error());
        gguf_close(&im->pub);
        return ds_error(st, "%s: %s", path, msg);
    }
    *out = &im->pub;
    return DS_OK;
}

/* ---------------------------------------------------------------- lookups and getters */

const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key) {
    const gguf_impl *im = (const gguf_impl *)g;
    const name_ix *e = g ? ix_find(im->kv_ix, (size_t)g->n_kv, key) : NULL;
    return e ? &g->kv[e->idx] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    const gguf_impl *im = (const gguf_impl *)g;
    const name_ix *e = g ? ix_find(im->t_ix, (size_t)g->n_tensors, name) : NULL;
    return e ? &g->tensors[e->idx] : NULL;
}

bool gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

char *gguf_str_copy(gguf_str s, char *buf, size_t cap) {
    if (cap == 0) return buf;
    size_t n = (size_t)DS_MIN(s.len, (uint64_t)(cap - 1));
    if (n) memcpy(buf, s.ptr, n);
    buf[n] = '\0';
    return buf;
}

static ds_status find_or_err(const gguf_file *g, const char *key, const gguf_kv **kv) {
    *kv = gguf_find_kv(g, key);
    return *kv ? DS_OK : ds_error(DS_ERR_FORMAT, "missing key %s", key);
}

static ds_status wrong_type(const char *key, const gguf_kv *kv, const char *want) {
    if (kv->type == GGUF_VT_ARRAY)
        return ds_error(DS_ERR_FORMAT, "key %s has type array of %s, expected %s",
                        key, gguf_vtype_name(kv->arr_type), want);
    return ds_error(DS_ERR_FORMAT, "key %s has type %s, expected %s", key, gguf_vtype_name(kv->type), want);
}

ds_status gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out) {
    const gguf_kv *kv;
    TRY(find_or_err(g, key, &kv));
    switch (kv->type) {
    case GGUF_VT_UINT8: case GGUF_VT_UINT16: case GGUF_VT_UINT32: case GGUF_VT_UINT64:
        if (kv->v.u > UINT32_MAX)
            return ds_error(DS_ERR_FORMAT, "key %s = %llu does not fit in u32", key, (unsigned long long)kv->v.u);
        *out = (uint32_t)kv->v.u;
        return DS_OK;
    case GGUF_VT_INT8: case GGUF_VT_INT16: case GGUF_VT_INT32: case GGUF_VT_INT64:
        if (kv->v.i < 0 || kv->v.i > (int64_t)UINT32_MAX)
            return ds_error(DS_ERR_FORMAT, "key %s = %lld does not fit in u32", key, (long long)kv->v.i);
        *out = (uint32_t)kv->v.i;
        return DS_OK;
    default:
        return wrong_type(key, kv, "u32");
    }
}

ds_status gguf_get_f32(const gguf_file *g, const char *key, float *out) {
    const gguf_kv *kv;
    TRY(find_or_err(g, key, &kv));
    if (kv->type != GGUF_VT_FLOAT32 && kv->type != GGUF_VT_FLOAT64) return wrong_type(key, kv, "f32");
    *out = (float)kv->v.f;
    return DS_OK;
}

ds_status gguf_get_bool(const gguf_file *g, const char *key, bool *out) {
    const gguf_kv *kv;
    TRY(find_or_err(g, key, &kv));
    if (kv->type != GGUF_VT_BOOL) return wrong_type(key, kv, "bool");
    *out = kv->v.b;
    return DS_OK;
}

ds_status gguf_get_str(const gguf_file *g, const char *key, gguf_str *out) {
    const gguf_kv *kv;
    TRY(find_or_err(g, key, &kv));
    if (kv->type != GGUF_VT_STRING) return wrong_type(key, kv, "string");
    *out = kv->v.s;
    return DS_OK;
}

ds_status gguf_get_arr(const gguf_file *g, const char *key, gguf_vtype elem, const gguf_kv **kv) {
    const gguf_kv *e;
    *kv = NULL;
    TRY(find_or_err(g, key, &e));
    if (e->type != GGUF_VT_ARRAY || e->arr_type != elem) {
        char want[32];
        snprintf(want, sizeof want, "array of %s", gguf_vtype_name(elem));
        return wrong_type(key, e, want);
    }
    *kv = e;
    return DS_OK;
}
