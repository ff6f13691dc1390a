/* tests/test_properties.c - properties batch norm must have, independent of PyTorch:
 * - output per channel has mean 0 and (biased) variance 1 with weight 1, bias 0;
 * - per channel sum(dx) = 0 and sum(dx * xhat) = 0 with batch statistics;
 * - statistics stay accurate where E[x^2]-E[x]^2 fails (float32, mean 1e4, std 0.1);
 * - a constant channel: variance exactly 0, output exactly bias, finite gradients;
 * - moments merge exactly: chunks merged (any split) equal the whole batch, and a two-"rank"
 *   synchronized forward/backward equals the single-process one;
 * - the three steps compose to forward_train bit for bit, and in-place (y == x) works;
 * - non-finite values stay in their channel and never reach the running statistics;
 * - an empty batch changes nothing;
 * - step 3a is its formulas to the bit;
 * - the same bits with 1 and 2 threads. */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "check.h"
#include "testutil.h"

static void normalized_output(bnorm_dtype dt, bnorm_layout layout, int ndim, const int64_t *shape) {
    const bnorm_desc d = make_desc(dt, layout, ndim, shape);
    const int64_t numel = bnorm_desc_numel(&d), C = d.c, count = d.n * d.spatial;
    void *x = talloc(numel), *y = talloc(numel), *dy = talloc(numel), *dx = talloc(numel);
    double *mean = talloc(C), *invstd = talloc(C);
    rng_t r = {7};
    for (int64_t n = 0; n < d.n; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < d.spatial; s++)
                tset(dt, x, offset_of(&d, n, c, s), 3.0 * c - 2.0 + (1.0 + c) * rng_normal(&r));
    tfill_normal(&r, dt, dy, numel, 0.3, 1.0);
    CHECK_OK(bnorm_bn_forward_train(&d, y, mean, invstd, x, NULL, NULL, NULL, 1e-5, 0));
    CHECK_OK(bnorm_bn_backward(&d, dx, NULL, NULL, dy, x, mean, invstd, NULL, NULL,
                               BNORM_BN_STATS_BATCH, 0));
    const double tol = dt == BNORM_DTYPE_F32 ? 2e-5 : 1e-10;
    for (int64_t c = 0; c < C; c++) {
        double s1 = 0, s2 = 0, sdx = 0, sdxx = 0, sabs = 0, sdyy = 0;
        for (int64_t n = 0; n < d.n; n++)
            for (int64_t s = 0; s < d.spatial; s++) {
                const int64_t o = offset_of(&d, n, c, s);
                const double v = tget(dt, y, o), g = tget(dt, dx, o);
                s1 += v;
                s2 += v * v;
                sdx += g;
                sdxx += g * v;
                sabs += fabs(g);
                sdyy += tget(dt, dy, o) * v;
            }
        /* eps makes both identities slightly inexact, by exactly eps/(var+eps) = eps*invstd^2:
         * var(y) = 1 - eps*invstd^2 and sum(dx*xhat) = invstd*sum(dy*xhat)*eps*invstd^2 */
        const double shrink = 1e-5 * invstd[c] * invstd[c];
        CHECK_NEAR(s1 / count, 0.0, tol);
        CHECK_NEAR(s2 / count, 1.0 - shrink, tol);
        CHECK_NEAR(sdx, 0.0, tol * sabs);
        CHECK_NEAR(sdxx, invstd[c] * sdyy * shrink, tol * sabs);
    }
    free(x), free(y), free(dy), free(dx), free(mean), free(invstd);
}

/* float32 mean 1e4, std 0.1: the variance must be within 1e-3 relative of the float64 truth of
 * the same float values. */
static void large_mean_small_std(bnorm_layout layout) {
    const int64_t shape[4] = {16, 2, 16, 16};
    const bnorm_desc d = make_desc(BNORM_DTYPE_F32, layout, 4, shape);
    const int64_t numel = bnorm_desc_numel(&d);
    float *x = talloc(numel), *y = talloc(numel);
    rng_t r = {11};
    for (int64_t i = 0; i < numel; i++)
        x[i] = (float)(1e4 + 0.1 * rng_normal(&r));
    double mean[2], m2[2], invstd[2];
    bnorm_bn_moments m = {2, 0, mean, m2};
    CHECK_OK(bnorm_bn_stats(&d, x, &m));
    CHECK_OK(bnorm_bn_forward_train(&d, y, NULL, invstd, x, NULL, NULL, NULL, 1e-5, 0));
    for (int c = 0; c < 2; c++) {
        long double s = 0, ss = 0;
        const int64_t count = d.n * d.spatial;
        for (int64_t n = 0; n < d.n; n++)
            for (int64_t sp = 0; sp < d.spatial; sp++)
                s += x[offset_of(&d, n, c, sp)];
        const long double mu = s / count;
        for (int64_t n = 0; n < d.n; n++)
            for (int64_t sp = 0; sp < d.spatial; sp++) {
                const long double dv = x[offset_of(&d, n, c, sp)] - mu;
                ss += dv * dv;
            }
        const double truth = (double)(ss / count);
        CHECK(fabs(m2[c] / count - truth) <= 1e-3 * truth);
        CHECK(fabs(1.0 / (invstd[c] * invstd[c]) - 1e-5 - truth) <= 1e-3 * truth);
        CHECK(fabs(mean[c] - (double)mu) <= 1e-6 * 1e4);
    }
    free(x), free(y);
}

static void constant_channel(bnorm_dtype dt, bnorm_layout layout) {
    const int64_t shape[3] = {4, 3, 5};
    const bnorm_desc d = make_desc(dt, layout, 3, shape);
    const int64_t numel = bnorm_desc_numel(&d);
    void *x = talloc(numel), *y = talloc(numel), *dy = talloc(numel), *dx = talloc(numel);
    void *w = talloc(3), *b = talloc(3), *dw = talloc(3), *db = talloc(3);
    rng_t r = {5};
    tfill_normal(&r, dt, x, numel, 0.0, 1.0);
    tfill_normal(&r, dt, dy, numel, 0.0, 1.0);
    for (int64_t n = 0; n < 4; n++)
        for (int64_t s = 0; s < 5; s++)
            tset(dt, x, offset_of(&d, n, 1, s), 0.1); /* inexact */
    for (int c = 0; c < 3; c++)
        tset(dt, w, c, 1.5), tset(dt, b, c, 0.3 + c);
    double mean[3], m2[3], invstd[3];
    bnorm_bn_moments m = {3, 0, mean, m2};
    CHECK_OK(bnorm_bn_stats(&d, x, &m));
    CHECK(m2[1] == 0.0);
    CHECK(mean[1] == tget(dt, x, offset_of(&d, 0, 1, 0)));
    CHECK_OK(bnorm_bn_forward_train(&d, y, mean, invstd, x, w, b, NULL, 1e-5, 0));
    CHECK_OK(bnorm_bn_backward(&d, dx, dw, db, dy, x, mean, invstd, w, b, BNORM_BN_STATS_BATCH, 0));
    int exact = 1, finite = 1;
    for (int64_t n = 0; n < 4; n++)
        for (int64_t s = 0; s < 5; s++) {
            exact &= tget(dt, y, offset_of(&d, n, 1, s)) == tget(dt, b, 1);
            finite &= isfinite(tget(dt, dx, offset_of(&d, n, 1, s)));
        }
    CHECK(exact);
    CHECK(finite);
    CHECK(tget(dt, dw, 1) == 0.0);
    CHECK(isfinite(tget(dt, db, 1)));
    free(x), free(y), free(dy), free(dx), free(w), free(b), free(dw), free(db);
}

/* Chunks of the batch (along N) merged in a scrambled order equal the whole batch; a two-rank
 * synchronized forward and backward equals the one-process result. */
static void merge_and_sync(bnorm_layout layout) {
    const int64_t shape[4] = {7, 5, 3, 2};
    const bnorm_desc d = make_desc(BNORM_DTYPE_F64, layout, 4, shape);
    const int64_t C = 5, numel = bnorm_desc_numel(&d), per_n = C * d.spatial;
    double *x = talloc(numel), *dy = talloc(numel);
    rng_t r = {3};
    tfill_normal(&r, BNORM_DTYPE_F64, x, numel, 2.0, 3.0);
    tfill_normal(&r, BNORM_DTYPE_F64, dy, numel, 0.0, 1.0);
    double wm[5], wm2[5];
    bnorm_bn_moments whole = {C, 0, wm, wm2};
    CHECK_OK(bnorm_bn_stats(&d, x, &whole));

    /* chunks of N = 3, 1, 3 merged as (c2 + c0) + c1, and an empty chunk */
    const int64_t starts[3] = {0, 3, 4}, sizes[3] = {3, 1, 3};
    double cm[3][5], cm2[3][5];
    bnorm_bn_moments chunk[3];
    for (int k = 0; k < 3; k++) {
        bnorm_desc dk = d;
        dk.n = sizes[k];
        chunk[k] = (bnorm_bn_moments){C, 0, cm[k], cm2[k]};
        CHECK_OK(bnorm_bn_stats(&dk, x + starts[k] * per_n, &chunk[k]));
    }
    double em[5], em2[5];
    bnorm_bn_moments empty = {C, 0, em, em2};
    bnorm_desc d0 = d;
    d0.n = 0;
    CHECK_OK(bnorm_bn_stats(&d0, NULL, &empty));
    CHECK_OK(bnorm_bn_moments_merge(&chunk[2], &empty));
    CHECK_OK(bnorm_bn_moments_merge(&chunk[2], &chunk[0]));
    CHECK_OK(bnorm_bn_moments_merge(&chunk[2], &chunk[1]));
    CHECK_OK(bnorm_bn_moments_merge(&empty, &chunk[2])); /* into an empty accumulator */
    CHECK_INT_EQ(empty.count, whole.count);
    for (int c = 0; c < C; c++) {
        CHECK_NEAR(empty.mean[c], wm[c], 1e-12 * (1 + fabs(wm[c])));
        CHECK_NEAR(empty.m2[c], wm2[c], 1e-12 * wm2[c]);
    }

    /* synchronized batch norm over two ranks: N = 4 and N = 3 */
    double mean[5], invstd[5], y_ref_mean[5], y_ref_invstd[5];
    double *y_ref = talloc(numel), *dx_ref = talloc(numel), *y = talloc(numel), *dx = talloc(numel);
    CHECK_OK(
        bnorm_bn_forward_train(&d, y_ref, y_ref_mean, y_ref_invstd, x, NULL, NULL, NULL, 1e-5, 0));
    CHECK_OK(bnorm_bn_backward(&d, dx_ref, NULL, NULL, dy, x, y_ref_mean, y_ref_invstd, NULL, NULL,
                               BNORM_BN_STATS_BATCH, 0));
    bnorm_desc rank[2] = {d, d};
    rank[0].n = 4, rank[1].n = 3;
    const int64_t off[2] = {0, 4 * per_n};
    double rm[2][5], rm2[2][5];
    bnorm_bn_moments rmom[2];
    for (int k = 0; k < 2; k++) {
        rmom[k] = (bnorm_bn_moments){C, 0, rm[k], rm2[k]};
        CHECK_OK(bnorm_bn_stats(&rank[k], x + off[k], &rmom[k]));
    }
    CHECK_OK(bnorm_bn_moments_merge(&rmom[0], &rmom[1])); /* the all-reduce */
    CHECK_OK(bnorm_bn_moments_finalize(&rmom[0], BNORM_DTYPE_F64, 1e-5, mean, invstd, NULL));
    double sdy[2][5], sdyx[2][5], sdy2[2][5];
    for (int k = 0; k < 2; k++) {
        CHECK_OK(bnorm_bn_apply(&rank[k], y + off[k], x + off[k], mean, invstd, NULL, NULL, 0));
        CHECK_OK(bnorm_bn_backward_reduce(&rank[k], sdy[k], sdyx[k], sdy2[k], dy + off[k],
                                          x + off[k], mean, invstd, NULL, NULL, 0));
    }
    for (int c = 0; c < C; c++)
        sdy[0][c] += sdy[1][c], sdyx[0][c] += sdyx[1][c], sdy2[0][c] += sdy2[1][c];
    for (int k = 0; k < 2; k++)
        CHECK_OK(bnorm_bn_backward_apply(&rank[k], dx + off[k], dy + off[k], x + off[k], mean,
                                         invstd, NULL, NULL, sdy[0], sdyx[0], sdy2[0],
                                         7 * d.spatial, BNORM_BN_STATS_BATCH, 0));
    double ey = 0, edx = 0;
    for (int64_t i = 0; i < numel; i++) {
        ey = fmax(ey, fabs(y[i] - y_ref[i]));
        edx = fmax(edx, fabs(dx[i] - dx_ref[i]));
    }
    CHECK_NEAR(ey, 0.0, 1e-12);
    CHECK_NEAR(edx, 0.0, 1e-12);
    free(x), free(dy), free(y_ref), free(dx_ref), free(y), free(dx);
}

/* stats + finalize + apply equal forward_train exactly, running update included; y == x works */
static void three_steps_and_in_place(bnorm_dtype dt, bnorm_layout layout) {
    const int64_t shape[3] = {3, 70, 5}; /* more than one 64-channel block */
    const bnorm_desc d = make_desc(dt, layout, 3, shape);
    const int64_t numel = bnorm_desc_numel(&d), C = 70;
    void *x = talloc(numel), *y1 = talloc(numel), *y2 = talloc(numel), *w = talloc(C),
         *b = talloc(C);
    void *rm1 = talloc(C), *rv1 = talloc(C), *rm2 = talloc(C), *rv2 = talloc(C);
    double *mean1 = talloc(C), *inv1 = talloc(C), *mean2 = talloc(C), *inv2 = talloc(C);
    double *mm = talloc(C), *mm2 = talloc(C);
    rng_t r = {17};
    tfill_normal(&r, dt, x, numel, 1.0, 2.0);
    tfill_normal(&r, dt, w, C, 1.0, 0.2);
    tfill_normal(&r, dt, b, C, 0.0, 0.5);
    for (int64_t c = 0; c < C; c++)
        tset(dt, rv1, c, 1.0), tset(dt, rv2, c, 1.0);
    int64_t nbt1 = 3, nbt2 = 3;
    bnorm_bn_running run1 = {rm1, rv1, &nbt1, BNORM_BN_MOMENTUM_CUMULATIVE};
    bnorm_bn_running run2 = {rm2, rv2, &nbt2, BNORM_BN_MOMENTUM_CUMULATIVE};
    CHECK_OK(bnorm_bn_forward_train(&d, y1, mean1, inv1, x, w, b, &run1, 1e-5, BNORM_BN_FUSE_RELU));
    bnorm_bn_moments m = {C, 0, mm, mm2};
    CHECK_OK(bnorm_bn_stats(&d, x, &m));
    CHECK_OK(bnorm_bn_moments_finalize(&m, dt, 1e-5, mean2, inv2, &run2));
    CHECK_OK(bnorm_bn_apply(&d, y2, x, mean2, inv2, w, b, BNORM_BN_FUSE_RELU));
    const size_t es = dt == BNORM_DTYPE_F32 ? 4 : 8;
    CHECK(memcmp(y1, y2, (size_t)numel * es) == 0);
    CHECK(memcmp(mean1, mean2, (size_t)C * 8) == 0 && memcmp(inv1, inv2, (size_t)C * 8) == 0);
    CHECK(memcmp(rm1, rm2, (size_t)C * es) == 0 && memcmp(rv1, rv2, (size_t)C * es) == 0);
    CHECK_INT_EQ(nbt1, 4);
    CHECK_INT_EQ(nbt2, 4);
    /* finalize in place: the moments' own arrays receive save_mean and save_invstd */
    void *rm3 = talloc(C), *rv3 = talloc(C);
    for (int64_t c = 0; c < C; c++)
        tset(dt, rm3, c, 0.0), tset(dt, rv3, c, 1.0);
    int64_t nbt3 = 3;
    bnorm_bn_running run3 = {rm3, rv3, &nbt3, BNORM_BN_MOMENTUM_CUMULATIVE};
    CHECK_OK(bnorm_bn_moments_finalize(&m, dt, 1e-5, mm, mm2, &run3));
    CHECK(memcmp(mm, mean2, (size_t)C * 8) == 0 && memcmp(mm2, inv2, (size_t)C * 8) == 0);
    CHECK(memcmp(rm3, rm2, (size_t)C * es) == 0 && memcmp(rv3, rv2, (size_t)C * es) == 0);
    free(rm3), free(rv3);
    /* in place: x overwritten by y */
    memcpy(y2, x, (size_t)numel * es);
    CHECK_OK(bnorm_bn_forward_train(&d, y2, NULL, NULL, y2, w, b, NULL, 1e-5, BNORM_BN_FUSE_RELU));
    CHECK(memcmp(y1, y2, (size_t)numel * es) == 0);
    /* inference equals apply with bnorm_bn_invstd of the running variance */
    CHECK_OK(bnorm_bn_forward_infer(&d, y1, x, w, b, rm1, rv1, 1e-5, 0));
    for (int64_t c = 0; c < C; c++)
        mean2[c] = tget(dt, rm1, c);
    CHECK_OK(bnorm_bn_invstd(C, dt, inv2, rv1, 1e-5));
    CHECK_OK(bnorm_bn_apply(&d, y2, x, mean2, inv2, w, b, 0));
    CHECK(memcmp(y1, y2, (size_t)numel * es) == 0);
    free(x), free(y1), free(y2), free(w), free(b), free(rm1), free(rv1), free(rm2), free(rv2);
    free(mean1), free(inv1), free(mean2), free(inv2), free(mm), free(mm2);
}

/* shape (N, 3, H, W): short rows take the fast path's channel blocks, long rows (H*W >= 1024)
 * its channel-by-channel loop */
static void nonfinite_stays_in_channel(bnorm_dtype dt, bnorm_layout layout, double bad_value,
                                       const int64_t shape[4]) {
    const bnorm_desc d = make_desc(dt, layout, 4, shape);
    const int64_t N = shape[0], S = shape[2] * shape[3];
    const int64_t numel = bnorm_desc_numel(&d);
    void *x = talloc(numel), *xc = talloc(numel), *y = talloc(numel), *yc = talloc(numel);
    void *rm = talloc(3), *rv = talloc(3), *rmc = talloc(3), *rvc = talloc(3);
    rng_t r = {23};
    tfill_normal(&r, dt, x, numel, 0.5, 1.0);
    memcpy(xc, x, (size_t)numel * 8);
    tset(dt, x, offset_of(&d, 1, 1, 2), bad_value);
    for (int c = 0; c < 3; c++) {
        tset(dt, rm, c, 0.25), tset(dt, rv, c, 2.0), tset(dt, rmc, c, 0.25), tset(dt, rvc, c, 2.0);
    }
    int64_t nbt = 0, nbtc = 0;
    bnorm_bn_running run = {rm, rv, &nbt, 0.1}, runc = {rmc, rvc, &nbtc, 0.1};
    CHECK_STATUS(bnorm_bn_forward_train(&d, y, NULL, NULL, x, NULL, NULL, &run, 1e-5, 0),
                 BNORM_WARN_NONFINITE);
    CHECK(strstr(bnorm_last_error(), "channel 1") != NULL);
    CHECK_OK(bnorm_bn_forward_train(&d, yc, NULL, NULL, xc, NULL, NULL, &runc, 1e-5, 0));
    int same = 1, nan_in_1 = 1;
    for (int64_t n = 0; n < N; n++)
        for (int64_t s = 0; s < S; s++) {
            same &= tget(dt, y, offset_of(&d, n, 0, s)) == tget(dt, yc, offset_of(&d, n, 0, s));
            same &= tget(dt, y, offset_of(&d, n, 2, s)) == tget(dt, yc, offset_of(&d, n, 2, s));
            nan_in_1 &= !isfinite(tget(dt, y, offset_of(&d, n, 1, s)));
        }
    CHECK(same);
    CHECK(nan_in_1);
    CHECK(tget(dt, rm, 1) == 0.25 && tget(dt, rv, 1) == 2.0); /* not poisoned */
    CHECK(tget(dt, rm, 0) == tget(dt, rmc, 0) && tget(dt, rv, 2) == tget(dt, rvc, 2));
    CHECK(tget(dt, rm, 0) != 0.25); /* the healthy channels were updated */
    CHECK_INT_EQ(nbt, 1);
    /* the layer reports it the same way */
    bnorm_bn_options opt = bnorm_bn_options_default(3);
    opt.dtype = dt;
    bnorm_bn_layer *bn;
    CHECK_OK(bnorm_bn_layer_create(&bn, &opt, NULL));
    CHECK_STATUS(bnorm_bn_layer_forward(bn, &d, y, x), BNORM_WARN_NONFINITE);
    bnorm_tensor_view v;
    CHECK_OK(bnorm_bn_layer_tensor(bn, "running_var", &v));
    CHECK(tget(dt, v.data, 1) == 1.0);
    bnorm_bn_layer_free(bn);
    free(x), free(xc), free(y), free(yc), free(rm), free(rv), free(rmc), free(rvc);
}

static void empty_batch_changes_nothing(void) {
    const int64_t shape[4] = {0, 4, 3, 3};
    const bnorm_desc d = make_desc(BNORM_DTYPE_F32, BNORM_LAYOUT_CHANNELS_FIRST, 4, shape);
    float rm[4] = {1, 2, 3, 4}, rv[4] = {5, 6, 7, 8};
    double mean[4] = {9, 9, 9, 9};
    int64_t nbt = 5;
    bnorm_bn_running run = {rm, rv, &nbt, BNORM_BN_MOMENTUM_CUMULATIVE};
    CHECK_OK(bnorm_bn_forward_train(&d, NULL, mean, NULL, NULL, NULL, NULL, &run, 1e-5, 0));
    CHECK(rm[2] == 3 && rv[3] == 8 && nbt == 5 && mean[0] == 9);
    bnorm_bn_options opt = bnorm_bn_options_default(4);
    bnorm_bn_layer *bn;
    CHECK_OK(bnorm_bn_layer_create(&bn, &opt, NULL));
    CHECK_OK(bnorm_bn_layer_forward(bn, &d, NULL, NULL));
    CHECK_OK(bnorm_bn_layer_backward(bn, &d, NULL, NULL, NULL));
    bnorm_tensor_view v;
    CHECK_OK(bnorm_bn_layer_tensor(bn, "num_batches_tracked", &v));
    CHECK_INT_EQ(*(int64_t *)v.data, 0);
    bnorm_bn_layer_free(bn);
}

/* Step 3a is the formulas of bn.h to the bit, in whichever version (AVX-512, AVX2, baseline) the
 * CPU runs (bn_internal.h, BNORM__CLONES): save_invstd = 1/sqrt(m2/count + eps) with 1/count
 * taken once, the running statistics (1 - momentum) * old + momentum * new, the variance
 * unbiased, rounded to float at the end; also with save_invstd in m2's own array. */
static void finalize_is_the_formulas(void) {
    enum { C = 1003 };
    const int64_t count = 37;
    double *mean = talloc(C), *m2 = talloc(C), *sm = talloc(C), *si = talloc(C), *m2b = talloc(C);
    float *rm = talloc(C), *rv = talloc(C), *rm0 = talloc(C), *rv0 = talloc(C);
    rng_t r = {41};
    for (int c = 0; c < C; c++) {
        mean[c] = 10.0 * rng_normal(&r), m2[c] = (double)count * (0.01 + rng_uniform(&r));
        rm[c] = rm0[c] = (float)rng_normal(&r), rv[c] = rv0[c] = (float)(1.0 + rng_uniform(&r));
    }
    memcpy(m2b, m2, C * sizeof *m2);
    bnorm_bn_moments m = {C, count, mean, m2};
    bnorm_bn_running run = {rm, rv, NULL, 0.1};
    CHECK_OK(bnorm_bn_moments_finalize(&m, BNORM_DTYPE_F32, 1e-5, sm, si, &run));
    const double inv_n = 1.0 / (double)count, inv_n1 = 1.0 / (double)(count - 1);
    int same = 1;
    for (int c = 0; c < C; c++) {
        same &= sm[c] == mean[c] && si[c] == 1.0 / sqrt(m2[c] * inv_n + 1e-5);
        same &= rm[c] == (float)((1.0 - 0.1) * (double)rm0[c] + 0.1 * mean[c]);
        same &= rv[c] == (float)((1.0 - 0.1) * (double)rv0[c] + 0.1 * (m2[c] * inv_n1));
    }
    CHECK(same);
    bnorm_bn_moments in_place = {C, count, mean, m2b};
    CHECK_OK(bnorm_bn_moments_finalize(&in_place, BNORM_DTYPE_F32, 1e-5, NULL, m2b, NULL));
    CHECK(memcmp(m2b, si, C * sizeof *si) == 0);
    free(mean), free(m2), free(sm), free(si), free(m2b), free(rm), free(rv), free(rm0), free(rv0);
}

/* The same bits with 1 and 2 threads, for every op, on a shape with several channel blocks (which
 * the reference path, float64's, sizes by the thread count). */
static void thread_count_independence(bnorm_dtype dt, bnorm_layout layout) {
#ifdef _OPENMP
    const int64_t shape[4] = {4, 150, 5, 7};
    const bnorm_desc d = make_desc(dt, layout, 4, shape);
    const int64_t numel = bnorm_desc_numel(&d), C = 150;
    const size_t es = dt == BNORM_DTYPE_F64 ? 8 : 4;
    void *x = talloc(numel), *dy = talloc(numel);
    rng_t r = {31};
    tfill_normal(&r, dt, x, numel, 1.0, 3.0);
    tfill_normal(&r, dt, dy, numel, 0.0, 1.0);
    void *y[2], *dx[2], *dw[2], *db[2];
    double *mean[2], *inv[2];
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        y[t] = talloc(numel), dx[t] = talloc(numel), dw[t] = talloc(C), db[t] = talloc(C);
        mean[t] = talloc(C), inv[t] = talloc(C);
        CHECK_OK(bnorm_bn_forward_train(&d, y[t], mean[t], inv[t], x, NULL, NULL, NULL, 1e-5,
                                        BNORM_BN_FUSE_RELU));
        CHECK_OK(bnorm_bn_backward(&d, dx[t], dw[t], db[t], dy, x, mean[t], inv[t], NULL, NULL,
                                   BNORM_BN_STATS_BATCH, BNORM_BN_FUSE_RELU));
    }
    CHECK(memcmp(y[0], y[1], (size_t)numel * es) == 0);
    CHECK(memcmp(dx[0], dx[1], (size_t)numel * es) == 0);
    CHECK(memcmp(dw[0], dw[1], (size_t)C * es) == 0 && memcmp(db[0], db[1], (size_t)C * es) == 0);
    CHECK(memcmp(mean[0], mean[1], (size_t)C * 8) == 0 &&
          memcmp(inv[0], inv[1], (size_t)C * 8) == 0);
    for (int t = 0; t < 2; t++)
        free(y[t]), free(dx[t]), free(dw[t]), free(db[t]), free(mean[t]), free(inv[t]);
    free(x), free(dy);
#else
    (void)dt, (void)layout;
    printf("built without OpenMP: thread-count check is trivially true\n");
#endif
}

int main(void) {
    /* long: 288 rows, which the reference path's channels-last reductions sum in 4 row parts */
    const int64_t nc[2] = {40, 3}, s1d[3] = {5, 4, 17}, s2d[4] = {3, 5, 7, 3},
                  s3d[5] = {2, 3, 4, 3, 5}, long2d[4] = {2, 3, 16, 9};
    for (int dt = 0; dt < 2; dt++)
        for (int lay = 0; lay < 2; lay++) {
            normalized_output((bnorm_dtype)dt, (bnorm_layout)lay, 2, nc);
            normalized_output((bnorm_dtype)dt, (bnorm_layout)lay, 3, s1d);
            normalized_output((bnorm_dtype)dt, (bnorm_layout)lay, 4, s2d);
            normalized_output((bnorm_dtype)dt, (bnorm_layout)lay, 5, s3d);
            normalized_output((bnorm_dtype)dt, (bnorm_layout)lay, 4, long2d);
            constant_channel((bnorm_dtype)dt, (bnorm_layout)lay);
            three_steps_and_in_place((bnorm_dtype)dt, (bnorm_layout)lay);
            for (int sh = 0; sh < 2; sh++) {
                static const int64_t shapes[2][4] = {{3, 3, 2, 2}, {2, 3, 32, 33}};
                nonfinite_stays_in_channel((bnorm_dtype)dt, (bnorm_layout)lay, NAN, shapes[sh]);
                nonfinite_stays_in_channel((bnorm_dtype)dt, (bnorm_layout)lay, INFINITY,
                                           shapes[sh]);
            }
        }
    for (int lay = 0; lay < 2; lay++) {
        large_mean_small_std((bnorm_layout)lay);
        merge_and_sync((bnorm_layout)lay);
        thread_count_independence(BNORM_DTYPE_F32, (bnorm_layout)lay);
        thread_count_independence(BNORM_DTYPE_F64, (bnorm_layout)lay);
    }
    empty_batch_changes_nothing();
    finalize_is_the_formulas();
    return check_report();
}
