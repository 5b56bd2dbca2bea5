/* util.c — error messages, invariants, aligned allocation, timing, logging. */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Thread_local char g_err[1024];
static int g_log_level = DS_LOG_ERROR;

ds_status ds_error(ds_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return code;
}

const char *ds_last_error(void) { return g_err[0] ? g_err : "no error"; }

const char *ds_status_name(ds_status s) {
    switch (s) {
    case DS_OK: return "ok";
    case DS_ERR_IO: return "I/O error";
    case DS_ERR_FORMAT: return "malformed input";
    case DS_ERR_UNSUPPORTED: return "unsupported";
    case DS_ERR_ARG: return "invalid argument";
    case DS_ERR_OOM: return "out of memory";
    case DS_ERR_CONTEXT: return "context full";
    }
    return "unknown status";
}

void ds_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "dsinfer: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
    abort();
}

void *ds_alloc(size_t size) {
    if (size == 0) size = 64;
    size_t rounded = (size + 63) & ~(size_t)63;
    if (rounded < size) return NULL;
    void *p = aligned_alloc(64, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

void ds_free(void *p) { free(p); }

double ds_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void ds_set_log_level(int level) { g_log_level = level; }

void ds_log(int level, const char *fmt, ...) {
    if (level > g_log_level) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}
