/* bench/memory_floor.c - how close libbnorm's kernels come to the memory: each op against plain
 * loops that move the same bytes in the same number of passes, side by side in one run.
 *
 * Batch norm is memory-bound, so no kernel can beat a plain loop that reads and writes what it
 * must, in as many passes over memory as its layout forces (the "floors", bench/floors.h). Here
 * the floors always stream their output (libbnorm streams only where its output would not stay
 * in cache; bnorm_bench times both kinds of store and keeps the faster). Every
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

#include "bench_common.h"
#include "bnorm/bn.h"
#include "floors.h"

enum { OP_INFER, OP_TRAIN, OP_BWD, OPS };
static const char *op_names[OPS] = {"inference", "forward training", "backward"};

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
                floor_run(who, k.out, k.x[0], k.dy[0], n, 1);
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
        printf("%-46s %9.4f\n", floor_name(f), med[f]);
    printf("\n%-18s %-6s %9s %9s  %s\n", "libbnorm", "layout", "ms", "/ floor", "its floor");
    for (int op = 0; op < OPS; op++)
        for (int l = 0; l < 2; l++) {
            const int f = floor_of(op == OP_BWD, op == OP_TRAIN, l || shape[2] == 1);
            const double ms = med[FLOORS + op * 2 + l];
            printf("%-18s %-6s %9.4f %9.2f  %s\n", op_names[op], l ? "nhwc" : "nchw", ms,
                   ms / med[f], floor_name(f));
        }
    for (int l = 0; l < 2; l++)
        free(k.x[l]), free(k.dy[l]), free(k.mean[l]), free(k.invstd[l]);
    free(k.out), free(k.w), free(k.b), free(k.rm), free(k.rv);
    return 0;
}
