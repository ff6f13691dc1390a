/* tests/test_fast_f64.c - the float64 kernels (src/bn/f64_kernels.c) against the reference
 * kernels (BNORM_ISA=reference, here bnorm_set_kernels), through the public API, on the shapes
 * that break vector and tiled code: N=1, C=1, 1x1 spatial, sizes off the vector width, more
 * channels than a tile (512) or a sweep, (N,C), 1d and 3d, both layouts, with and without fused
 * ReLU; channels whose first value is far from the mean (the one-pass variance must fall back to
 * the second pass) and constant channels. Every op: statistics, training forward with running
 * update, apply, inference, backward reduce / apply and the one-call backward.
 * - Elementwise passes given the same constants (apply, inference, backward_apply) and
 *   channels-last sums (backward_reduce) must give the reference's bits: same formulas, same
 *   order.
 * - The rest within 1e-12 of the reference, relative to |reference| + the largest |reference|
 *   (channels-first sums use 8 lanes instead of the reference's 4 or 1; channels-last variance
 *   takes one pass where accurate).
 * - The same bits with 1 and 2 threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "check.h"
#include "testutil.h"

typedef struct {
    double *y, *yi, *ya, *dx, *dxa, *dw, *db, *rm, *rv;
    double *mean, *m2, *smean, *sinv, *sdy, *sdyx, *sdy2;
    int64_t nbt;
} results;

static void results_alloc(results *r, int64_t numel, int64_t C) {
    double **big[] = {&r->y, &r->yi, &r->ya, &r->dx, &r->dxa};
    double **small[] = {&r->dw,    &r->db,   &r->rm,  &r->rv,   &r->mean, &r->m2,
                        &r->smean, &r->sinv, &r->sdy, &r->sdyx, &r->sdy2};
    for (size_t i = 0; i < sizeof big / sizeof *big; i++)
        *big[i] = talloc(numel);
    for (size_t i = 0; i < sizeof small / sizeof *small; i++)
        *small[i] = talloc(C);
}

static void results_free(results *r) {
    double *all[] = {r->y,  r->yi,   r->ya, r->dx,    r->dxa,  r->dw,  r->db,   r->rm,
                     r->rv, r->mean, r->m2, r->smean, r->sinv, r->sdy, r->sdyx, r->sdy2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        free(all[i]);
}

/* every op with the current kernels; apply, inference, backward_reduce and backward_apply take
 * the constants in `given` (the reference's), so that their outputs can be compared bit for bit */
static void run_all(const bnorm_desc *d, const double *x, const double *dy, const double *w,
                    const double *b, unsigned flags, const results *given, results *r) {
    const int64_t C = d->c, count = d->n * d->spatial;
    for (int64_t c = 0; c < C; c++)
        r->rm[c] = 0.5, r->rv[c] = 2.0;
    r->nbt = 0;
    bnorm_bn_running run = {r->rm, r->rv, &r->nbt, 0.1};
    bnorm_bn_moments m = {C, 0, r->mean, r->m2};
    CHECK_OK(bnorm_bn_stats(d, x, &m));
    CHECK_OK(bnorm_bn_forward_train(d, r->y, r->smean, r->sinv, x, w, b, &run, 1e-5, flags));
    CHECK_OK(bnorm_bn_backward(d, r->dx, r->dw, r->db, dy, x, r->smean, r->sinv, w, b,
                               BNORM_BN_STATS_BATCH, flags));
    const results *g = given ? given : r;
    CHECK_OK(bnorm_bn_apply(d, r->ya, x, g->smean, g->sinv, w, b, flags));
    CHECK_OK(bnorm_bn_forward_infer(d, r->yi, x, w, b, g->rm, g->rv, 1e-5, flags));
    CHECK_OK(bnorm_bn_backward_reduce(d, r->sdy, r->sdyx, r->sdy2, dy, x, g->smean, g->sinv, w, b,
                                      flags));
    CHECK_OK(bnorm_bn_backward_apply(d, r->dxa, dy, x, g->smean, g->sinv, w, b, g->sdy, g->sdyx,
                                     NULL, count, BNORM_BN_STATS_BATCH, flags));
}

static double maxabs(const double *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i]));
    return m;
}

static int close_to(const char *what, const double *got, const double *ref, int64_t n,
                    double rtol) {
    const double scale = maxabs(ref, n);
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - ref[i]) <= rtol * (fabs(ref[i]) + scale))) {
            fprintf(stderr, "  %s[%lld]: %.17g vs reference %.17g\n", what, (long long)i, got[i],
                    ref[i]);
            return 0;
        }
    return 1;
}

static int same_bits(const char *what, const double *a, const double *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof *a) != 0) {
            fprintf(stderr, "  %s[%lld]: %.17g vs %.17g\n", what, (long long)i, a[i], b[i]);
            return 0;
        }
    return 1;
}

static int all_same_bits(const results *a, const results *b, int64_t numel, int64_t C) {
    return same_bits("y", a->y, b->y, numel) && same_bits("yi", a->yi, b->yi, numel) &&
           same_bits("ya", a->ya, b->ya, numel) && same_bits("dx", a->dx, b->dx, numel) &&
           same_bits("dxa", a->dxa, b->dxa, numel) && same_bits("dw", a->dw, b->dw, C) &&
           same_bits("db", a->db, b->db, C) && same_bits("rm", a->rm, b->rm, C) &&
           same_bits("rv", a->rv, b->rv, C) && same_bits("mean", a->mean, b->mean, C) &&
           same_bits("m2", a->m2, b->m2, C) && same_bits("sdy", a->sdy, b->sdy, C) &&
           same_bits("sdyx", a->sdyx, b->sdyx, C) && same_bits("sdy2", a->sdy2, b->sdy2, C);
}

static void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}

/* data: channel c around mean 3c - 20 (large_mean: 1e6 + c), spread 1 + c % 3; far_first puts
 * each channel's first value 1e6 spreads from its mean; constant channel 1 where C > 2 */
static void compare_shape(bnorm_layout layout, int ndim, const int64_t *shape, unsigned flags,
                          int large_mean, int far_first) {
    const bnorm_desc d = make_desc(BNORM_DTYPE_F64, layout, ndim, shape);
    const int64_t numel = bnorm_desc_numel(&d), C = d.c;
    double *x = talloc(numel), *dy = talloc(numel), *w = talloc(C), *b = talloc(C);
    rng_t rng = {(uint64_t)(numel * 31 + C + flags + 7 * large_mean + 13 * far_first)};
    for (int64_t n = 0; n < d.n; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < d.spatial; s++) {
                const double mu = large_mean ? 1e6 + (double)c : 3.0 * (double)c - 20.0;
                const double sd = 1.0 + (double)(c % 3);
                double v = mu + sd * rng_normal(&rng);
                if (C > 2 && c == 1) v = 4.25;
                if (far_first && n == 0 && s == 0 && c != 1) v = mu + 1e6 * sd;
                x[offset_of(&d, n, c, s)] = v;
                dy[offset_of(&d, n, c, s)] = rng_normal(&rng);
            }
    for (int64_t c = 0; c < C; c++)
        w[c] = 0.5 + 0.01 * (double)c, b[c] = 0.1 * (double)(c % 5) - 0.2;

    results ref, fast, fast1;
    results_alloc(&ref, numel, C), results_alloc(&fast, numel, C), results_alloc(&fast1, numel, C);
    CHECK_OK(bnorm_set_kernels("reference"));
    run_all(&d, x, dy, w, b, flags, NULL, &ref);
    CHECK_OK(bnorm_set_kernels("auto"));
    set_threads(2);
    run_all(&d, x, dy, w, b, flags, &ref, &fast);
    set_threads(1);
    run_all(&d, x, dy, w, b, flags, &ref, &fast1);
    set_threads(2);

    const double tol = 1e-12;
    const int ok =
        close_to("mean", fast.mean, ref.mean, C, tol) && close_to("m2", fast.m2, ref.m2, C, tol) &&
        close_to("y", fast.y, ref.y, numel, tol) &&
        close_to("save_mean", fast.smean, ref.smean, C, tol) &&
        close_to("save_invstd", fast.sinv, ref.sinv, C, tol) &&
        close_to("running_mean", fast.rm, ref.rm, C, tol) &&
        close_to("running_var", fast.rv, ref.rv, C, tol) &&
        close_to("dx", fast.dx, ref.dx, numel, tol) && close_to("dw", fast.dw, ref.dw, C, tol) &&
        close_to("db", fast.db, ref.db, C, tol) && close_to("sum_dy", fast.sdy, ref.sdy, C, tol) &&
        close_to("sum_dy_xhat", fast.sdyx, ref.sdyx, C, tol) &&
        close_to("sum_dy_sq", fast.sdy2, ref.sdy2, C, tol) &&
        same_bits("apply", fast.ya, ref.ya, numel) && same_bits("infer", fast.yi, ref.yi, numel) &&
        same_bits("backward_apply", fast.dxa, ref.dxa, numel);
    const int rows = layout == BNORM_LAYOUT_CHANNELS_LAST || d.spatial == 1;
    const int rows_ok = !rows || (same_bits("sum_dy (rows)", fast.sdy, ref.sdy, C) &&
                                  same_bits("sum_dy_xhat (rows)", fast.sdyx, ref.sdyx, C) &&
                                  same_bits("sum_dy_sq (rows)", fast.sdy2, ref.sdy2, C));
    if (C > 2) CHECK(fast.m2[1] == 0.0 && fast.mean[1] == 4.25); /* constant channel exact */
    CHECK(ok);
    CHECK(rows_ok);
    CHECK(all_same_bits(&fast, &fast1, numel, C));
    if (!ok || !rows_ok)
        fprintf(stderr, "  shape (%s, %d-d, C=%lld, N=%lld, S=%lld, flags %u, large %d, far %d)\n",
                layout == BNORM_LAYOUT_CHANNELS_FIRST ? "first" : "last", ndim, (long long)C,
                (long long)d.n, (long long)d.spatial, flags, large_mean, far_first);
    results_free(&ref), results_free(&fast), results_free(&fast1);
    free(x), free(dy), free(w), free(b);
}

int main(void) {
    static const int64_t s2a[] = {9, 17}, s2b[] = {37, 600}, s3a[] = {2, 3, 5}, s3b[] = {1, 5, 33};
    static const int64_t s4a[] = {1, 7, 9, 11}, s4b[] = {4, 1, 1, 1}, s4c[] = {3, 130, 2, 3};
    static const int64_t s4d[] = {5, 64, 7, 7}, s4e[] = {2, 1100, 3, 1}, s4f[] = {6, 8, 16, 17};
    static const int64_t s5a[] = {2, 3, 4, 5, 6}, s2c[] = {262144, 2};
    static const struct {
        int ndim;
        const int64_t *shape;
    } shapes[] = {{2, s2a}, {2, s2b}, {3, s3a}, {3, s3b}, {4, s4a}, {4, s4b},
                  {4, s4c}, {4, s4d}, {4, s4e}, {4, s4f}, {5, s5a}};
    const bnorm_layout layouts[] = {BNORM_LAYOUT_CHANNELS_FIRST, BNORM_LAYOUT_CHANNELS_LAST};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int l = 0; l < 2; l++)
            for (unsigned flags = 0; flags <= BNORM_BN_FUSE_RELU; flags += BNORM_BN_FUSE_RELU)
                compare_shape(layouts[l], shapes[i].ndim, shapes[i].shape, flags, 0, 0);
    /* far from the shift: large means, and first values far out (the one-pass variance's
     * fallback); channels-last and (N,C), where the one pass runs, and channels-first */
    for (int l = 0; l < 2; l++) {
        compare_shape(layouts[l], 4, s4f, 0, 1, 0);
        compare_shape(layouts[l], 4, s4f, 0, 0, 1);
        compare_shape(layouts[l], 2, s2b, BNORM_BN_FUSE_RELU, 1, 1);
    }
    /* one value far out among many: M2 about that shift would lose ~count * 2^-52 */
    compare_shape(BNORM_LAYOUT_CHANNELS_LAST, 2, s2c, 0, 0, 1);
    return check_report();
}
