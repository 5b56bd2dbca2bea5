/* fuzz_gguf.c — libFuzzer target for the GGUF reader (`make fuzz`).
 *
 * Any input must either be rejected cleanly or, once accepted, be safe to walk completely:
 * every key/value through every getter, every byte of every indexed string, the first and last
 * byte of every array payload and tensor data range. Sanitizers flag any out-of-bounds read;
 * the explicit checks below trap if an accepted file breaks a promise made in gguf.h. */
#include "gguf.h"

#include <stdlib.h>

static volatile uint8_t sink;

static void touch(const void *p, uint64_t n) {
    if (n == 0) return;
    sink ^= ((const uint8_t *)p)[0];
    sink ^= ((const uint8_t *)p)[n - 1];
}

static void touch_all(gguf_str s) {
    for (uint64_t i = 0; i < s.len; i++) sink ^= (uint8_t)s.ptr[i];
}

/* Byte size of fixed-size array elements (0 for string/array). */
static uint64_t elem_size(gguf_vtype t) {
    switch (t) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_UINT16: case GGUF_VT_INT16: return 2;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_FLOAT32: return 4;
    case GGUF_VT_UINT64: case GGUF_VT_INT64: case GGUF_VT_FLOAT64: return 8;
    default: return 0;
    }
}

static int inside(const gguf_file *g, const void *p, uint64_t n) {
    const uint8_t *b = p;
    return b >= g->base && b <= g->base + g->size && n <= (uint64_t)(g->base + g->size - b);
}

static void walk_kv(const gguf_file *g, const gguf_kv *kv) {
    touch_all(kv->key);
    if (!inside(g, kv->key.ptr, kv->key.len)) __builtin_trap();
    /* keys are unique, so looking one up by name must give back this very entry */
    char *key = malloc(kv->key.len + 1);
    if (!key) return;
    gguf_str_copy(kv->key, key, kv->key.len + 1);
    if (!memchr(kv->key.ptr, 0, kv->key.len) && gguf_find_kv(g, key) != kv) __builtin_trap();

    uint32_t u; float f; bool b; gguf_str s; const gguf_kv *arr;
    (void)gguf_get_u32(g, key, &u);
    (void)gguf_get_f32(g, key, &f);
    (void)gguf_get_bool(g, key, &b);
    if (gguf_get_str(g, key, &s) == DS_OK) touch_all(s);
    (void)gguf_get_arr(g, key, kv->type == GGUF_VT_ARRAY ? kv->arr_type : GGUF_VT_UINT8, &arr);
    (void)gguf_vtype_name(kv->type);
    free(key);

    if (kv->type != GGUF_VT_ARRAY) return;
    if (kv->arr_type == GGUF_VT_STRING) {
        for (uint64_t i = 0; i < kv->arr_n; i++) {
            if (!inside(g, kv->arr_strs[i].ptr, kv->arr_strs[i].len)) __builtin_trap();
            touch_all(kv->arr_strs[i]);
        }
    } else if (elem_size(kv->arr_type)) {
        uint64_t n = kv->arr_n * elem_size(kv->arr_type);
        if (!inside(g, kv->arr_data, n)) __builtin_trap();
        touch(kv->arr_data, n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *g = NULL;
    if (gguf_open_buffer(data, size, &g) != DS_OK) return 0;
    for (uint64_t i = 0; i < g->n_kv; i++) walk_kv(g, &g->kv[i]);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS || t->nbytes == 0) __builtin_trap();
        if (t->offset % g->alignment || !inside(g, t->data, t->nbytes)) __builtin_trap();
        if ((const uint8_t *)t->data < g->base + g->data_offset) __builtin_trap();
        touch(t->data, t->nbytes);
        touch_all(t->name);
        char name[256];
        if (t->name.len < sizeof name && !memchr(t->name.ptr, 0, t->name.len) &&
            gguf_find_tensor(g, gguf_str_copy(t->name, name, sizeof name)) != t)
            __builtin_trap();
    }
    gguf_close(g);
    return 0;
}
