/* test_main.c — runs every registered TEST; prints "N passed, N failed[, N skipped]". */
#include "test.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_TESTS 1024
static struct { const char *name; test_fn fn; } g_tests[MAX_TESTS];
static int g_n;
static int g_failed_now, g_skipped_now;

void test_register(const char *name, test_fn fn) {
    if (g_n < MAX_TESTS) { g_tests[g_n].name = name; g_tests[g_n].fn = fn; g_n++; }
}
void test_fail(const char *file, int line, const char *msg) {
    fprintf(stderr, "    FAIL %s:%d: %s\n", file, line, msg);
    g_failed_now = 1;
}
void test_skip(const char *why) { fprintf(stderr, "    skip: %s\n", why); g_skipped_now = 1; }

const char *test_model_path_named(const char *file_name) {
    static char buf[4][1024];
    static int slot;
    char *p = buf[slot++ & 3];
    const char *cache = getenv("DSINFER_CACHE");
    if (cache && *cache) snprintf(p, 1024, "%s/%s", cache, file_name);
    else snprintf(p, 1024, "%s/.cache/dsinfer/%s", getenv("HOME") ? getenv("HOME") : ".", file_name);
    return access(p, R_OK) == 0 ? p : NULL;
}
const char *test_model_path(void) {
    const char *env = getenv("DSINFER_MODEL");
    if (env && *env) return access(env, R_OK) == 0 ? env : NULL;
    return test_model_path_named("SmolLM2-135M-Instruct.Q4_1.gguf");
}

char *test_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = NULL;
    long len = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (len >= 0 && fseek(f, 0, SEEK_SET) == 0 && (s = malloc((size_t)len + 1)) != NULL) {
        if (fread(s, 1, (size_t)len, f) == (size_t)len) {
            s[len] = 0;
            if (n) *n = (size_t)len;
        } else {
            free(s);
            s = NULL;
        }
    }
    fclose(f);
    return s;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    /* run in name order so output is stable regardless of link order */
    const char *names[MAX_TESTS]; test_fn fns[MAX_TESTS];
    for (int i = 0; i < g_n; i++) names[i] = g_tests[i].name;
    qsort(names, (size_t)g_n, sizeof names[0], cmp_name);
    for (int i = 0; i < g_n; i++)
        for (int j = 0; j < g_n; j++) if (g_tests[j].name == names[i]) fns[i] = g_tests[j].fn;
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < g_n; i++) {
        if (filter && !strstr(names[i], filter)) continue;
        g_failed_now = g_skipped_now = 0;
        fprintf(stderr, "  %-50s ", names[i]);
        fflush(stderr);
        fprintf(stderr, "\n");
        fns[i]();
        if (g_failed_now) { failed++; fprintf(stderr, "  -> FAILED %s\n", names[i]); }
        else if (g_skipped_now) skipped++;
        else passed++;
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
