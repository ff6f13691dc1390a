/* bench/cl_group_probe.c - can a group of channels of a channels-last tensor be read twice, the
 * second time from L2?
 *
 * Channels-last backward reads x and dy twice: once for the per-channel sums, once for dx. If
 * the channels were split into groups, each group's values over all rows read twice in a row,
 * the second read could come from each core's own L2, as it does in a blocked layout. This
 * program measures exactly that access, without any batch-norm arithmetic: two (rows, C) float
 * tensors, rows split between the threads as libbnorm splits them, every group of g channels read
 * (one load per 64-byte line) over the thread's rows, then read again, after a 256 MiB wash.
 * It prints the first read, the second read and both, summed over the groups, in ms (medians),
 * for the whole row (g = C) and for groups of 64, 32 and 16 channels.
 *
 * Usage: cl_group_probe ROWS C [REPS]   e.g. cl_group_probe 6272 256 (the rows and channels of
 * (32,256,14,14)); try C = 272 beside 256 to see what a power-of-two row stride costs. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench_common.h"

#define LINE_FLOATS 16 /* floats per 64-byte cache line */

/* One load per line of columns [j0, j0+g) of rows [r0, r1) of a and b; four rows at a time into
 * four sums, so that the adds' latency does not bound an L2-resident read */
static float read_group(const float *a, const float *b, int64_t r0, int64_t r1, int64_t C,
                        int64_t j0, int64_t g) {
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4)
        for (int64_t j = j0; j < j0 + g; j += LINE_FLOATS) {
            const int64_t o = r * C + j;
            s0 += a[o] + b[o];
            s1 += a[o + C] + b[o + C];
            s2 += a[o + 2 * C] + b[o + 2 * C];
            s3 += a[o + 3 * C] + b[o + 3 * C];
        }
    for (; r < r1; r++)
        for (int64_t j = j0; j < j0 + g; j += LINE_FLOATS)
            s0 += a[r * C + j] + b[r * C + j];
    return (s0 + s1) + (s2 + s3);
}

/* first/second: the two reads of every group, summed over the groups (ms) */
static void probe(const float *a, const float *b, int64_t rows, int64_t C, int64_t g, double *first,
                  double *second) {
    double t_first = 0.0, t_second = 0.0;
    for (int64_t j0 = 0; j0 < C; j0 += g) {
        const int64_t w = C - j0 < g ? C - j0 : g;
        double t0 = now_ms(), t1 = 0.0;
        float s = 0.0f;
#pragma omp parallel reduction(+ : s)
        {
            int t = 0, nt = 1;
#ifdef _OPENMP
            t = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
            const int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
            s += read_group(a, b, r0, r1, C, j0, w);
#pragma omp barrier
#pragma omp single
            t1 = now_ms(); /* the implicit barrier after single: both reads start together */
            s += read_group(a, b, r0, r1, C, j0, w);
        }
        bench_sink = s;
        t_first += t1 - t0;
        t_second += now_ms() - t1;
    }
    *first = t_first, *second = t_second;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ROWS C [REPS]\n", argv[0]);
        return 2;
    }
    const int64_t rows = atoll(argv[1]), C = atoll(argv[2]);
    const int reps = argc > 3 ? atoi(argv[3]) : 15;
    if (rows < 1 || C < LINE_FLOATS || C % LINE_FLOATS || reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "cl_group_probe: need ROWS >= 1, C a multiple of %d, 1 <= REPS <= %d\n",
                LINE_FLOATS, MAX_REPS);
        return 2;
    }
    float *a = malloc((size_t)(rows * C) * sizeof(float));
    float *b = malloc((size_t)(rows * C) * sizeof(float));
    if (!a || !b) {
        fprintf(stderr, "cl_group_probe: out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < rows * C; i++)
        a[i] = 1.0f, b[i] = 2.0f;
    printf("rows %lld, C %lld (row stride %lld bytes), x and dy %.1f MB each, %d reps (medians)\n",
           (long long)rows, (long long)C, (long long)(C * 4), (double)(rows * C) * 4e-6, reps);
    printf("%9s %12s %12s %10s\n", "group", "first ms", "second ms", "both ms");
    const int64_t groups[] = {C, 64, 32, 16};
    for (size_t k = 0; k < sizeof groups / sizeof groups[0]; k++) {
        if (k > 0 && groups[k] >= C) continue;
        double f[MAX_REPS], s[MAX_REPS], both[MAX_REPS];
        for (int rep = 0; rep < reps; rep++) {
            cache_wash();
            probe(a, b, rows, C, groups[k], &f[rep], &s[rep]);
            both[rep] = f[rep] + s[rep];
        }
        printf("%9lld %12.3f %12.3f %10.3f\n", (long long)groups[k], median(f, reps),
               median(s, reps), median(both, reps));
    }
    free(a), free(b);
    return 0;
}
