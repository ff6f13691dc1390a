/* bench/memory_floor.c - how close libbnorm's kernels come to the memory: each op against plain
 * loops that move the same bytes in the same number of passes, side by side in one run.
 *
 * Batch norm is memory-bound, so no kernel can beat a plain loop that reads and writes what it
 * must, in as many passes over memory as its layout forces:
 * - inference: one pass (read x, write y), in any layout;
 * - forward training: channels-first sums a channel and normalizes it from cache, so one pass
 *   from memory at best; channels-last needs every row summed before any row can be normalized,
 *   so x is read twice (sums, then y);
 * - backward: one pass (read x and dy, write dx) where a channel fits in cache between its two
 *   steps, two where it cannot (channels-last: x and dy for the sums, then again for dx).
 * The plain loops (the "floors") always stream their output (libbnorm streams only where its
 * output would not stay in cache) and split the elements evenly between the threads. Every
 * round runs each contender once, in a shuffled order, after a 256 MiB cache wash; the tables
 * show medians. Backward is timed here as one call on cold data, not after its forward as
 * bnorm_bench times it. A libbnorm case at 1.0 of its floor moves its bytes as fast as the plain
 * loops do; only fewer passes (a layout that lets data stay in cache) can make it faster.
 *
 * Usage: memory_floor N C SPATIAL [REPS]   e.g. memory_floor 32 64 3136 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __SSE__
#include <xmmintrin.h>
#endif

#include "bench_common.h"
#include "bnorm/bn.h"

#define BLK 16 /* floats per 64-byte line: the loops' unit, so streamed lines are whole */

/* q[0..16) = p[0..16) * a + g[0..16) (g may be NULL), streamed past the caches where the CPU
 * can (x86: SSE's movntps, which every x86-64 has) */
static inline void line_out(float *q, const float *p, const float *g, float a) {
#ifdef __SSE__
    const __m128 va = _mm_set1_ps(a);
    for (int k = 0; k < BLK; k += 4) {
        __m128 v = _mm_mul_ps(_mm_load_ps(p + k), va);
        if (g) v = _mm_add_ps(v, _mm_load_ps(g + k));
        _mm_stream_ps(q + k, v);
    }
#else
    for (int k = 0; k < BLK; k++)
        q[k] = p[k] * a + (g ? g[k] : 0.0f);
#endif
}

/* A pass that reads x (and dy when not NULL) and sums them, as a statistics pass does. */
static void floor_read(const float *x, const float *dy, int64_t n) {
    const int64_t lines = n / BLK;
    float total = 0.0f;
#pragma omp parallel reduction(+ : total)
    {
        float acc[BLK] = {0.0f}, acc2[BLK] = {0.0f};
#pragma omp for schedule(static)
        for (int64_t b = 0; b < lines; b++) {
            const float *p = x + b * BLK;
            if (dy) {
                const float *g = dy + b * BLK;
                for (int k = 0; k < BLK; k++)
                    acc[k] += g[k], acc2[k] += g[k] * p[k];
            } else {
                for (int k = 0; k < BLK; k++)
                    acc[k] += p[k];
            }
        }
        for (int k = 0; k < BLK; k++)
            total += acc[k] + acc2[k];
    }
    for (int64_t i = lines * BLK; i < n; i++)
        total += x[i] + (dy ? dy[i] : 0.0f);
    bench_sink = total;
}

/* A pass that reads x (and dy when not NULL) and streams out y. */
static void floor_write(float *y, const float *x, const float *dy, int64_t n) {
    const int64_t lines = n / BLK;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t b = 0; b < lines; b++)
            line_out(y + b * BLK, x + b * BLK, dy ? dy + b * BLK : NULL, 0.5f);
#ifdef __SSE__
        _mm_sfence(); /* the streamed lines reach memory before the call returns */
#endif
    }
    for (int64_t i = lines * BLK; i < n; i++)
        y[i] = x[i] * 0.5f + (dy ? dy[i] : 0.0f);
}

enum { F_INFER, F_TRAIN2, F_BWD1, F_BWD2, FLOORS };
static const char *floor_names[FLOORS] = {
    "1 pass: read x, write y",
    "2 passes: read x; read x, write y",
    "1 pass: read x and dy, write dx",
    "2 passes: read x and dy; read them, write dx",
};

static void run_floor(int f, float *out, const float *x, const float *dy, int64_t n) {
    if (f == F_TRAIN2) floor_read(x, NULL, n);
    if (f == F_BWD2) floor_read(x, dy, n);
    floor_write(out, x, f == F_BWD1 || f == F_BWD2 ? dy : NULL, n);
}

enum { OP_INFER, OP_TRAIN, OP_BWD, OPS };
static const char *op_names[OPS] = {"inference", "forward training", "backward"};
/* the floor of each op in each layout (0: channels-first, 1: channels-last); (N,C) input (spatial
 * 1) lies in memory as channels-last does in both */
static const int op_floor[OPS][2] = {{F_INFER, F_INFER}, {F_INFER, F_TRAIN2}, {F_BWD1, F_BWD2}};

typedef struct {
    bnorm_desc d[2];
    float *x[2], *dy[2], *out, *w, *b, *rm, *rv;
    double *mean[2], *invstd[2];
} cases;

static void die_on(bnorm_status st) {
    if (st) {
        fprintf(stderr, "memory_floor: %s\n", bnorm_last_error());
        exit(1);
    }
}

static void run_bnorm(cases *k, int op, int l) {
    const bnorm_desc *d = &k->d[l];
    if (op == OP_INFER)
        die_on(bnorm_bn_forward_infer(d, k->out, k->x[l], k->w, k->b, k->rm, k->rv, 1e-5, 0));
    else if (op == OP_TRAIN)
        die_on(bnorm_bn_forward_train(d, k->out, k->mean[l], k->invstd[l], k->x[l], k->w, k->b,
                                      NULL, 1e-5, 0));
    else
        die_on(bnorm_bn_backward(d, k->out, NULL, NULL, k->dy[l], k->x[l], k->mean[l], k->invstd[l],
                                 k->w, k->b, BNORM_BN_STATS_BATCH, 0));
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s N C SPATIAL [REPS]\n", argv[0]);
        return 2;
    }
    const int64_t shape[3] = {atoll(argv[1]), atoll(argv[2]), atoll(argv[3])};
    const int reps = argc > 4 ? atoi(argv[4]) : 15;
    cases k;
    if (reps < 1 || reps > MAX_REPS ||
        bnorm_desc_init(&k.d[0], BNORM_DTYPE_F32, BNORM_LAYOUT_CHANNELS_FIRST, 3, shape) ||
        bnorm_desc_init(&k.d[1], BNORM_DTYPE_F32, BNORM_LAYOUT_CHANNELS_LAST, 3, shape) ||
        shape[0] * shape[2] < 2) {
        fprintf(stderr,
                "memory_floor: need N, C, SPATIAL >= 1, N*SPATIAL >= 2 and 1 <= REPS <= %d\n",
                MAX_REPS);
        return 2;
    }
    const int64_t n = bnorm_desc_numel(&k.d[0]), C = shape[1];
    k.out = bench_floats(n), k.w = bench_floats(C), k.b = bench_floats(C);
    k.rm = bench_floats(C), k.rv = bench_floats(C);
    uint64_t s = 12345;
    for (int l = 0; l < 2; l++) {
        k.x[l] = bench_floats(n), k.dy[l] = bench_floats(n);
        k.mean[l] = malloc((size_t)C * sizeof(double));
        k.invstd[l] = malloc((size_t)C * sizeof(double));
        if (!k.mean[l] || !k.invstd[l]) {
            fprintf(stderr, "memory_floor: out of memory\n");
            return 1;
        }
        for (int64_t i = 0; i < n; i++)
            k.x[l][i] = (float)bench_uniform(&s), k.dy[l][i] = (float)bench_uniform(&s);
    }
    for (int64_t c = 0; c < C; c++)
        k.w[c] = 1.0f, k.b[c] = 0.0f, k.rm[c] = 0.0f, k.rv[c] = 1.0f;
    for (int l = 0; l < 2; l++) /* the batch statistics backward uses */
        run_bnorm(&k, OP_TRAIN, l);

    /* contenders: the floors, then libbnorm's op x layout */
    enum { N_CONT = FLOORS + OPS * 2 };
    double t[N_CONT][MAX_REPS];
    int order[N_CONT];
    for (int rep = -1; rep < reps; rep++) { /* round -1 warms up, untimed */
        bench_round_order(order, N_CONT, rep + 1);
        for (int i = 0; i < N_CONT; i++) {
            const int who = order[i];
            cache_wash();
            const double t0 = now_ms();
            if (who < FLOORS)
                run_floor(who, k.out, k.x[0], k.dy[0], n);
            else
                run_bnorm(&k, (who - FLOORS) / 2, (who - FLOORS) % 2);
            if (rep >= 0) t[who][rep] = now_ms() - t0;
        }
    }
    double med[N_CONT];
    for (int i = 0; i < N_CONT; i++)
        med[i] = median(t[i], reps);

    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("(%lld,%lld,%lld) float32, %.1f MB per tensor, %d threads, %d rounds (medians), each "
           "call after a 256 MiB cache wash\n\n",
           (long long)shape[0], (long long)shape[1], (long long)shape[2],
           (double)n * sizeof(float) / 1e6, threads, reps);
    printf("%-46s %9s\n", "floor (plain loops, output streamed)", "ms");
    for (int f = 0; f < FLOORS; f++)
        printf("%-46s %9.4f\n", floor_names[f], med[f]);
    printf("\n%-18s %-6s %9s %9s  %s\n", "libbnorm", "layout", "ms", "/ floor", "its floor");
    for (int op = 0; op < OPS; op++)
        for (int l = 0; l < 2; l++) {
            const int f = op_floor[op][l || shape[2] == 1];
            const double ms = med[FLOORS + op * 2 + l];
            printf("%-18s %-6s %9.4f %9.2f  %s\n", op_names[op], l ? "nhwc" : "nchw", ms,
                   ms / med[f], floor_names[f]);
        }
    for (int l = 0; l < 2; l++)
        free(k.x[l]), free(k.dy[l]), free(k.mean[l]), free(k.invstd[l]);
    free(k.out), free(k.w), free(k.b), free(k.rm), free(k.rv);
    return 0;
}
