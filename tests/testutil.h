/* tests/testutil.h - helpers shared by the tests: a seeded random generator, typed tensor
 * buffers, and the memory offset of a logical (n, c, s) element in either layout. */
#ifndef BNORM_TESTS_TESTUTIL_H
#define BNORM_TESTS_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "bnorm.h"

typedef struct {
    uint64_t s;
} rng_t;

static inline uint64_t rng_next(rng_t *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline double rng_uniform(rng_t *r) { /* [0, 1) */
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static inline double rng_normal(rng_t *r) {
    const double u = rng_uniform(r) + 1e-300, v = rng_uniform(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static inline int64_t offset_of(const bnorm_desc *d, int64_t n, int64_t c, int64_t s) {
    return d->layout == BNORM_LAYOUT_CHANNELS_FIRST ? (n * d->c + c) * d->spatial + s
                                                    : (n * d->spatial + s) * d->c + c;
}

/* element i of a typed buffer, as double, and back */
static inline double tget(bnorm_dtype dt, const void *p, int64_t i) {
    return dt == BNORM_DTYPE_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

static inline void tset(bnorm_dtype dt, void *p, int64_t i, double v) {
    if (dt == BNORM_DTYPE_F32)
        ((float *)p)[i] = (float)v;
    else
        ((double *)p)[i] = v;
}

/* n elements of dtype, zeroed (8 bytes each covers both types) */
static inline void *talloc(int64_t n) {
    return calloc((size_t)(n > 0 ? n : 1), 8);
}

/* fills n elements with normal(mean, std) values */
static inline void tfill_normal(rng_t *r, bnorm_dtype dt, void *p, int64_t n, double mean,
                                double std) {
    for (int64_t i = 0; i < n; i++)
        tset(dt, p, i, mean + std * rng_normal(r));
}

static inline bnorm_desc make_desc(bnorm_dtype dt, bnorm_layout layout, int ndim,
                                   const int64_t *shape) {
    bnorm_desc d;
    if (bnorm_desc_init(&d, dt, layout, ndim, shape) != BNORM_OK) abort(); /* test bug */
    return d;
}

#endif /* BNORM_TESTS_TESTUTIL_H */
