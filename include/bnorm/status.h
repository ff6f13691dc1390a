/* bnorm/status.h - status codes, the thread-local detail message, and the allocator hook.
 *
 * Every fallible bnorm function returns a bnorm_status. BNORM_OK is 0; every other value says what
 * went wrong, and bnorm_last_error() returns a sentence that says exactly where ("bn: input has 3
 * channels, layer expects 16"). The message is per thread and stays until the next failing call on
 * that thread. The library never prints, exits or aborts on anything a caller or a file can cause.
 *
 * New codes are only ever appended, so numeric values are stable across versions.
 */
#ifndef BNORM_STATUS_H
#define BNORM_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bnorm_status {
    BNORM_OK = 0,
    BNORM_ERR_NULL_POINTER,     /* a required pointer argument was NULL */
    BNORM_ERR_INVALID_SHAPE,    /* zero/negative sizes, wrong rank, unknown layout or dtype */
    BNORM_ERR_SIZE_OVERFLOW,    /* a product of dimensions does not fit in int64/size_t */
    BNORM_ERR_INVALID_ARGUMENT, /* eps <= 0, momentum outside [0,1], unknown flag, ... */
    BNORM_ERR_BATCH_TOO_SMALL,  /* batch statistics asked from one value per channel */
    BNORM_ERR_MISMATCH,         /* tensor does not match the layer (channels, dtype) */
    BNORM_ERR_OUT_OF_MEMORY,    /* the allocator returned NULL */
    BNORM_WARN_NONFINITE,       /* outputs were written, but some channel's batch statistics were
                                   not finite: that channel's running statistics were left as
                                   they were (see bnorm_last_error for the first such channel) */
    BNORM_ERR_IO,               /* a file cannot be opened, read or written */
    BNORM_ERR_FORMAT,           /* a file's contents are malformed, truncated or do not match */
    BNORM_ERR_PARSE,            /* a model spec or option does not parse */
} bnorm_status;

/* A fixed English name for a status code; never NULL, also for values not in the enum. */
const char *bnorm_status_str(bnorm_status status);

/* The detail message of the last failure on the calling thread ("" when there was none). */
const char *bnorm_last_error(void);

/* Allocator hook. All memory bnorm allocates goes through these functions. Passing NULL for
 * either function restores malloc/free. Set it before creating objects and do not change it while
 * objects created with the previous allocator are alive. `ctx` is passed through unchanged. */
typedef void *(*bnorm_alloc_fn)(void *ctx, size_t size);
typedef void (*bnorm_free_fn)(void *ctx, void *ptr);
void bnorm_set_allocator(bnorm_alloc_fn alloc_fn, bnorm_free_fn free_fn, void *ctx);

#ifdef __cplusplus
}
#endif

#endif /* BNORM_STATUS_H */
