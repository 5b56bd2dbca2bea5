/* test.h — a minimal self-registering test framework.
 *
 *   TEST(gguf_rejects_truncated) { ... CHECK(x == 1); CHECK_NEAR(a, b, 1e-6); ... }
 *
 * Every TEST in any linked tests/test_*.c registers itself (constructor attribute); the runner
 * (tests/test_main.c) runs them all, or those whose name contains argv[1], and ends with
 * "N passed, N failed". A test fails if any CHECK fails; it is skipped (not passed) if it calls
 * SKIP("reason") — e.g. when the model file has not been fetched. */
#ifndef DS_TEST_H
#define DS_TEST_H

#include <stdio.h>
#include <math.h>

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn);
void test_fail(const char *file, int line, const char *msg);
void test_skip(const char *why);
/* Path of the default model (env DSINFER_MODEL, else the fetch cache); NULL if absent. */
const char *test_model_path(void);
const char *test_model_path_named(const char *file_name);
/* A whole file, NUL-terminated (malloc'd; *n = its size when n is not NULL); NULL if it cannot
 * be read. */
char *test_read_file(const char *path, size_t *n);

#define TEST(name)                                                        \
    static void test_##name(void);                                        \
    __attribute__((constructor)) static void test_reg_##name(void) {      \
        test_register(#name, test_##name);                                \
    }                                                                     \
    static void test_##name(void)

#define CHECK(cond) do { if (!(cond)) { test_fail(__FILE__, __LINE__, #cond); return; } } while (0)
#define CHECK_MSG(cond, ...) do { if (!(cond)) { char m_[512]; snprintf(m_, sizeof m_, __VA_ARGS__); \
    test_fail(__FILE__, __LINE__, m_); return; } } while (0)
#define CHECK_NEAR(a, b, tol) do { double a_ = (a), b_ = (b); if (!(fabs(a_ - b_) <= (tol))) { \
    char m_[256]; snprintf(m_, sizeof m_, "%s = %g vs %s = %g (tol %g)", #a, a_, #b, b_, (double)(tol)); \
    test_fail(__FILE__, __LINE__, m_); return; } } while (0)
#define SKIP(why) do { test_skip(why); return; } while (0)

#endif
