/* gguf.h — read-only GGUF (v2, v3) reader over an mmap'd file or a caller-owned buffer.
 *
 * Everything returned points into the mapping (no copies); strings are NOT NUL-terminated.
 * gguf_open validates the whole header up front: every count, length, offset and size is
 * checked against the file, tensor data ranges must lie inside the data section, be aligned,
 * and not overlap. After a successful open, accessors cannot read out of bounds. */
#ifndef DS_GGUF_H
#define DS_GGUF_H

#include "common.h"

typedef enum {
    GGUF_VT_UINT8 = 0, GGUF_VT_INT8 = 1, GGUF_VT_UINT16 = 2, GGUF_VT_INT16 = 3,
    GGUF_VT_UINT32 = 4, GGUF_VT_INT32 = 5, GGUF_VT_FLOAT32 = 6, GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8, GGUF_VT_ARRAY = 9, GGUF_VT_UINT64 = 10, GGUF_VT_INT64 = 11,
    GGUF_VT_FLOAT64 = 12, GGUF_VT_COUNT
} gguf_vtype;

typedef struct { const char *ptr; uint64_t len; } gguf_str;

typedef struct {
    gguf_str key;
    gguf_vtype type;
    union { uint64_t u; int64_t i; double f; bool b; gguf_str s; } v; /* scalars and strings */
    /* arrays (type == GGUF_VT_ARRAY) */
    gguf_vtype arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data;   /* raw little-endian elements (non-string arrays) */
    gguf_str *arr_strs;        /* [arr_n], indexed at open (string arrays only) */
} gguf_kv;

#define GGUF_MAX_DIMS 4

typedef struct {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];  /* ne[0] = row length (contiguous), unused dims = 1 */
    uint32_t type;               /* ggml type id (see quant.h ds_type) */
    uint64_t offset;             /* relative to the data section */
    uint64_t nbytes;
    const void *data;            /* into the mapping */
} gguf_tensor;

typedef struct gguf_file {
    const uint8_t *base; size_t size;  /* the whole file */
    int mapped;                        /* 1: base is our mmap (unmapped on close) */
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;                       /* [n_kv] */
    gguf_tensor *tensors;              /* [n_tensors] */
    uint64_t alignment;
    uint64_t data_offset;              /* start of the tensor data section in the file */
} gguf_file;

ds_status gguf_open(const char *path, gguf_file **out);
/* Parse a buffer the caller keeps alive for the file's lifetime (tests, fuzzing). */
ds_status gguf_open_buffer(const void *buf, size_t size, gguf_file **out);
void gguf_close(gguf_file *g);

const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name);
bool gguf_str_eq(gguf_str s, const char *c);
/* Copy into a NUL-terminated buffer (truncating); returns buf. */
char *gguf_str_copy(gguf_str s, char *buf, size_t cap);

/* Typed getters: DS_OK, or an error (missing key / wrong type) with a message naming the key.
 * Integer getters accept any integer type whose value fits. */
ds_status gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out);
ds_status gguf_get_f32(const gguf_file *g, const char *key, float *out);
ds_status gguf_get_bool(const gguf_file *g, const char *key, bool *out);
ds_status gguf_get_str(const gguf_file *g, const char *key, gguf_str *out);
/* Array of the given element type; *kv = the entry (count in (*kv)->arr_n). */
ds_status gguf_get_arr(const gguf_file *g, const char *key, gguf_vtype elem, const gguf_kv **kv);

const char *gguf_vtype_name(gguf_vtype t);

#endif
