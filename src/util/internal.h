/* src/util/internal.h - helpers shared by the library's source files; not installed.
 * Internal non-static names carry the bnorm__ prefix. */
#ifndef BNORM_UTIL_INTERNAL_H
#define BNORM_UTIL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "bnorm/status.h"

#if defined(__GNUC__)
#define BNORM__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define BNORM__PRINTF(a, b)
#endif

/* Records the thread's detail message and returns `status`, so a check reads
 * `return bnorm__fail(BNORM_ERR_..., "bn: ...", ...);` */
bnorm_status bnorm__fail(bnorm_status status, const char *fmt, ...) BNORM__PRINTF(2, 3);

/* Allocation through the user's hook. bnorm__calloc checks count*size for overflow. */
void *bnorm__malloc(size_t size);
void *bnorm__calloc(size_t count, size_t size);
void bnorm__free(void *ptr);

/* a*b into *out, returning 0 on int64 overflow (both operands >= 0). */
static inline int bnorm__mul_i64(int64_t a, int64_t b, int64_t *out) {
    if (a != 0 && b > INT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

#endif /* BNORM_UTIL_INTERNAL_H */
