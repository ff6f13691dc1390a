/* bench/split_backward_bench.c - the two-step backward of synchronized batch norm
 * (bnorm_bn_backward_reduce, then bnorm_bn_backward_apply) against the one-call
 * bnorm_bn_backward, on one float32 tensor.
 *
 * backward_apply cannot see whether dx cancels (dy nearly constant or linear in the output)
 * unless the caller passes the sums of dy^2; without them it computes dx in double everywhere.
 * This program times apply both ways, alternated round by round after a 256 MiB cache wash,
 * and checks that the two agree.
 *
 * Usage: split_backward_bench N C SPATIAL [REPS] [nhwc]   e.g. split_backward_bench 32 64 3136 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "bnorm/bn.h"

static void die_on(bnorm_status st) {
    if (st) {
        fprintf(stderr, "split_backward_bench: %s\n", bnorm_last_error());
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s N C SPATIAL [REPS] [nhwc]\n", argv[0]);
        return 2;
    }
    const int64_t shape[3] = {atoll(argv[1]), atoll(argv[2]), atoll(argv[3])};
    const int reps = argc > 4 ? atoi(argv[4]) : 15;
    const int nhwc = argc > 5 && strcmp(argv[5], "nhwc") == 0;
    bnorm_desc d;
    if (reps < 1 || reps > MAX_REPS ||
        bnorm_desc_init(&d, BNORM_DTYPE_F32,
                        nhwc ? BNORM_LAYOUT_CHANNELS_LAST : BNORM_LAYOUT_CHANNELS_FIRST, 3,
                        shape)) {
        fprintf(stderr, "split_backward_bench: need N, C, SPATIAL >= 1 and 1 <= REPS <= %d\n",
                MAX_REPS);
        return 2;
    }
    const int64_t n = bnorm_desc_numel(&d), C = d.c, count = d.n * d.spatial;
    float *x = bench_floats(n), *dy = bench_floats(n), *y = bench_floats(n), *dx = bench_floats(n);
    float *dx_exact = bench_floats(n);
    double *mean = malloc((size_t)C * sizeof *mean), *invstd = malloc((size_t)C * sizeof *invstd);
    double *sdy = malloc((size_t)C * sizeof *sdy), *sdyx = malloc((size_t)C * sizeof *sdyx);
    double *sdy2 = malloc((size_t)C * sizeof *sdy2);
    if (!mean || !invstd || !sdy || !sdyx || !sdy2) {
        fprintf(stderr, "split_backward_bench: out of memory\n");
        return 1;
    }
    uint64_t s = 12345;
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)bench_uniform(&s), dy[i] = (float)bench_uniform(&s);
    die_on(bnorm_bn_forward_train(&d, y, mean, invstd, x, NULL, NULL, NULL, 1e-5, 0));

    enum { ONE_CALL, REDUCE, APPLY_EXACT, APPLY_SQ, KINDS };
    static const char *names[KINDS] = {"backward (one call)", "backward_reduce",
                                       "backward_apply, no sum_dy_sq", "backward_apply, sum_dy_sq"};
    double t[KINDS][MAX_REPS];
    for (int rep = 0; rep < reps; rep++) {
        double t0;
        cache_wash();
        t0 = now_ms();
        die_on(bnorm_bn_backward(&d, dx, NULL, NULL, dy, x, mean, invstd, NULL, NULL,
                                 BNORM_BN_STATS_BATCH, 0));
        t[ONE_CALL][rep] = now_ms() - t0;
        cache_wash();
        t0 = now_ms();
        die_on(bnorm_bn_backward_reduce(&d, sdy, sdyx, sdy2, dy, x, mean, invstd, NULL, NULL, 0));
        t[REDUCE][rep] = now_ms() - t0;
        cache_wash();
        t0 = now_ms();
        die_on(bnorm_bn_backward_apply(&d, dx_exact, dy, x, mean, invstd, NULL, NULL, sdy, sdyx,
                                       NULL, count, BNORM_BN_STATS_BATCH, 0));
        t[APPLY_EXACT][rep] = now_ms() - t0;
        cache_wash();
        t0 = now_ms();
        die_on(bnorm_bn_backward_apply(&d, dx, dy, x, mean, invstd, NULL, NULL, sdy, sdyx, sdy2,
                                       count, BNORM_BN_STATS_BATCH, 0));
        t[APPLY_SQ][rep] = now_ms() - t0;
    }
    double err = 0.0, scale = 0.0;
    for (int64_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)dx[i] - dx_exact[i]));
        scale = fmax(scale, fabs((double)dx_exact[i]));
    }
    printf("(%lld,%lld,%lld) %s, %s kernels, %d rounds (medians, ms)\n", (long long)d.n,
           (long long)C, (long long)d.spatial, nhwc ? "channels-last" : "channels-first",
           bnorm_kernels(), reps);
    for (int k = 0; k < KINDS; k++)
        printf("  %-30s %10.4f\n", names[k], median(t[k], reps));
    printf("  dx with and without sum_dy_sq differ by at most %.3g of max|dx|\n",
           scale > 0.0 ? err / scale : err);
    free(x), free(dy), free(y), free(dx), free(dx_exact), free(mean), free(invstd);
    free(sdy), free(sdyx), free(sdy2);
    return err <= 1e-5 * scale ? 0 : 1;
}
