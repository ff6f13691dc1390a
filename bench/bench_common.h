/* bench/bench_common.h - what the benchmark programs share: a monotonic clock, medians, test
 * data, the order of contenders in a round, and the cache wash that gives every measurement the
 * same starting state. Each program is one file that includes this once (the functions are static).
 * Needs _POSIX_C_SOURCE >= 200112L (clock_gettime, posix_memalign), defined before the first
 * include. */
#ifndef BNORM_BENCH_COMMON_H
#define BNORM_BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MAX_REPS 101 /* rounds a measurement may take (the programs' arrays of times) */

/* Stores of results nobody reads, so that the compiler keeps the reads behind them */
volatile float bench_sink;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* the median of v[0..n), n >= 1 (sorts v) */
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* n floats (at least one), 64-byte aligned as PyTorch's tensors are (bnorm_bench --offset
 * measures other placements). Exits on out of memory. */
static inline float *bench_floats(int64_t n) { /* inline: cl_group_probe does not use it */
    void *p = NULL;
    if (posix_memalign(&p, 64, (size_t)(n > 0 ? n : 1) * sizeof(float)) != 0) {
        fprintf(stderr, "out of memory (%lld floats)\n", (long long)n);
        exit(1);
    }
    return p;
}

/* uniform in [-1, 1) from a 64-bit LCG: the programs' test data */
static inline double bench_uniform(uint64_t *s) {
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return (double)(*s >> 11) / 4503599627370496.0 - 1.0;
}

/* order[0..n) = a permutation of 0..n-1 that differs from round to round (Fisher-Yates on a
 * fixed-seed generator), so no contender always follows the same one */
static inline void bench_round_order(int *order, int n, int round) {
    uint64_t h = 0x9E3779B97F4A7C15ull * (uint64_t)(round + 1);
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        h ^= h >> 31, h *= 0xBF58476D1CE4E5B9ull, h ^= h >> 29;
        const int j = (int)(h % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j], order[j] = t;
    }
}

/* Reads 256 MiB of unrelated data, so that every measurement starts from the same cache state:
 * nothing of any contender's tensors cached, and no contender paying for the write-back of the
 * previous one's dirty output. (64 MiB was not enough here: reads of 128 MiB still partly hit
 * this VM's share of L3, and (32,64,56,56) NHWC backward measured 2.4 ms without oneDNN's
 * contenders in the rounds and 3.0 with them; after 256 MiB it is 3.1 either way.) Exits on
 * out of memory. */
#define WASH_FLOATS ((int64_t)64 << 20)
static void cache_wash(void) {
    static float *buf;
    if (!buf) {
        buf = malloc((size_t)WASH_FLOATS * sizeof(float));
        if (!buf) {
            fprintf(stderr, "cache_wash: out of memory\n");
            exit(1);
        }
        for (int64_t i = 0; i < WASH_FLOATS; i++)
            buf[i] = (float)(i & 7);
    }
    float s = 0.0f;
#pragma omp parallel for schedule(static) reduction(+ : s)
    for (int64_t i = 0; i < WASH_FLOATS; i += 16)
        s += buf[i];
    bench_sink = s;
}

#endif
