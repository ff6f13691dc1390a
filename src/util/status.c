/* src/util/status.c - status names, the per-thread detail message, and the allocator hook. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/internal.h"

/* Per-thread so concurrent callers never see each other's messages. */
static _Thread_local char last_error[512];

/* The allocator hook is the library's one process-wide setting (like libuv's
 * uv_replace_allocator); it is documented as set-before-use. */
static bnorm_alloc_fn hook_alloc;
static bnorm_free_fn hook_free;
static void *hook_ctx;

const char *bnorm_status_str(bnorm_status status) {
    switch (status) {
    case BNORM_OK:
        return "ok";
    case BNORM_ERR_NULL_POINTER:
        return "null pointer";
    case BNORM_ERR_INVALID_SHAPE:
        return "invalid shape";
    case BNORM_ERR_SIZE_OVERFLOW:
        return "size overflow";
    case BNORM_ERR_INVALID_ARGUMENT:
        return "invalid argument";
    case BNORM_ERR_BATCH_TOO_SMALL:
        return "batch too small for batch statistics";
    case BNORM_ERR_MISMATCH:
        return "tensor does not match";
    case BNORM_ERR_OUT_OF_MEMORY:
        return "out of memory";
    case BNORM_WARN_NONFINITE:
        return "non-finite batch statistics";
    case BNORM_ERR_IO:
        return "file input/output error";
    case BNORM_ERR_FORMAT:
        return "malformed file";
    case BNORM_ERR_PARSE:
        return "parse error";
    }
    return "unknown status";
}

const char *bnorm_last_error(void) {
    return last_error;
}

bnorm_status bnorm__fail(bnorm_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

void bnorm_set_allocator(bnorm_alloc_fn alloc_fn, bnorm_free_fn free_fn, void *ctx) {
    if (alloc_fn == NULL || free_fn == NULL) {
        hook_alloc = NULL;
        hook_free = NULL;
        hook_ctx = NULL;
        return;
    }
    hook_alloc = alloc_fn;
    hook_free = free_fn;
    hook_ctx = ctx;
}

void *bnorm__malloc(size_t size) {
    if (size == 0) size = 1; /* a zero-size request still gets a unique, freeable pointer */
    return hook_alloc ? hook_alloc(hook_ctx, size) : malloc(size);
}

void *bnorm__calloc(size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) return NULL;
    const size_t bytes = count * size;
    void *p = bnorm__malloc(bytes);
    if (p && bytes) memset(p, 0, bytes);
    return p;
}

void bnorm__free(void *ptr) {
    if (ptr == NULL) return;
    if (hook_free)
        hook_free(hook_ctx, ptr);
    else
        free(ptr);
}
