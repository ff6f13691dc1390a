/* tests/test_fast.c - every float32 fast-kernel build (scalar, avx2, avx512: those this CPU runs)
 * against the reference kernels, through the public API, on the shapes that break vector code:
 * N=1, C=1, 1x1 spatial, sizes off the vector width, huge C with tiny N (several channel groups),
 * few channels with many values (split into parts), channels-last narrower and wider than the
 * split threshold, constant and large-mean channels. Every op: statistics, training forward with
 * running update, apply, inference, backward reduce/apply and the one-call backward, batch and
 * fixed statistics, with and without fused ReLU. Each ISA must also give the same bits with 1 and
 * 2 threads, and wherever the channels-last tensors lie relative to a 64-byte boundary. Tolerances,
 * relative to |reference| + the tensor's largest |reference|: 1e-5, from the fast statistics' float
 * lanes (at most 64 values each: 64 * 2^-24 = 4e-6); the mean is compared relative to the channel's
 * standard deviation, its natural scale. */
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bn/fast.h"
#include "check.h"
#include "testutil.h"

typedef struct {
    float *y, *dx, *dw, *db, *yi, *ya, *dx2, *dx3, *rm, *rv;
    double *mean, *m2, *smean, *sinv, *sdy, *sdyx, *sdy2;
    int64_t nbt;
} results;

static void results_alloc(results *r, int64_t numel, int64_t C) {
    r->y = talloc(numel), r->dx = talloc(numel), r->yi = talloc(numel), r->dx2 = talloc(numel);
    r->dx3 = talloc(numel), r->ya = talloc(numel);
    r->dw = talloc(C), r->db = talloc(C), r->rm = talloc(C), r->rv = talloc(C);
    r->mean = talloc(C), r->m2 = talloc(C), r->smean = talloc(C), r->sinv = talloc(C);
    r->sdy = talloc(C), r->sdyx = talloc(C), r->sdy2 = talloc(C);
}

static void results_free(results *r) {
    free(r->y), free(r->dx), free(r->yi), free(r->dx2), free(r->dw), free(r->db), free(r->rm);
    free(r->rv), free(r->mean), free(r->m2), free(r->smean), free(r->sinv), free(r->sdy);
    free(r->sdyx), free(r->dx3), free(r->sdy2), free(r->ya);
}

/* NaN in every output, so that a kernel that skips an element cannot pass on a value an
 * earlier run left there */
static void poison(float *p, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        p[i] = NAN;
}

static void results_poison(results *r, int64_t numel) {
    poison(r->y, numel), poison(r->dx, numel), poison(r->yi, numel), poison(r->dx2, numel);
    poison(r->dx3, numel), poison(r->ya, numel);
}

/* All ops with the currently selected kernels. */
static void run_all(const bnorm_desc *d, const float *x, const float *dy, const float *w,
                    const float *b, unsigned flags, results *r) {
    const int64_t C = d->c;
    for (int64_t c = 0; c < C; c++)
        r->rm[c] = 0.5f, r->rv[c] = 2.0f;
    r->nbt = 0;
    bnorm_bn_running run = {r->rm, r->rv, &r->nbt, 0.1};
    bnorm_bn_moments m = {C, 0, r->mean, r->m2};
    CHECK_OK(bnorm_bn_stats(d, x, &m));
    CHECK_OK(bnorm_bn_forward_train(d, r->y, r->smean, r->sinv, x, w, b, &run, 1e-5, flags));
    CHECK_OK(bnorm_bn_backward(d, r->dx, r->dw, r->db, dy, x, r->smean, r->sinv, w, b,
                               BNORM_BN_STATS_BATCH, flags));
    /* dx2: backward_apply as synchronized batch norm calls it, judging from sum_dy_sq where dx
     * needs double; dx3: without it, in double everywhere */
    CHECK_OK(bnorm_bn_backward_reduce(d, r->sdy, r->sdyx, r->sdy2, dy, x, r->smean, r->sinv, w, b,
                                      flags));
    CHECK_OK(bnorm_bn_backward_apply(d, r->dx2, dy, x, r->smean, r->sinv, w, b, r->sdy, r->sdyx,
                                     r->sdy2, d->n * d->spatial, BNORM_BN_STATS_BATCH, flags));
    CHECK_OK(bnorm_bn_backward_apply(d, r->dx3, dy, x, r->smean, r->sinv, w, b, r->sdy, r->sdyx,
                                     NULL, d->n * d->spatial, BNORM_BN_STATS_BATCH, flags));
    CHECK_OK(bnorm_bn_forward_infer(d, r->yi, x, w, b, r->rm, r->rv, 1e-5, flags));
    CHECK_OK(bnorm_bn_apply(d, r->ya, x, r->smean, r->sinv, w, b, flags));
}

/* eval-mode backward with fixed statistics, into dx */
static void run_fixed(const bnorm_desc *d, const float *x, const float *dy, const float *w,
                      const float *b, unsigned flags, results *r, float *dx, float *dw) {
    double *mean = talloc(d->c), *inv = talloc(d->c);
    for (int64_t c = 0; c < d->c; c++)
        mean[c] = r->rm[c];
    CHECK_OK(bnorm_bn_invstd(d->c, BNORM_DTYPE_F32, inv, r->rv, 1e-5));
    CHECK_OK(
        bnorm_bn_backward(d, dx, dw, NULL, dy, x, mean, inv, w, b, BNORM_BN_STATS_FIXED, flags));
    free(mean), free(inv);
}

static double maxabs_f(const float *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i]));
    return m;
}

static double maxabs_d(const double *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i]));
    return m;
}

static int close_f(const char *what, const float *got, const float *ref, int64_t n, double rtol) {
    const double scale = maxabs_f(ref, n);
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - ref[i]) <= rtol * (fabs(ref[i]) + scale))) {
            fprintf(stderr, "  %s[%lld]: %.9g vs reference %.9g\n", what, (long long)i, got[i],
                    ref[i]);
            return 0;
        }
    return 1;
}

static int close_d(const char *what, const double *got, const double *ref, int64_t n, double rtol) {
    const double scale = maxabs_d(ref, n);
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - ref[i]) <= rtol * (fabs(ref[i]) + scale))) {
            fprintf(stderr, "  %s[%lld]: %.17g vs reference %.17g\n", what, (long long)i, got[i],
                    ref[i]);
            return 0;
        }
    return 1;
}

/* |mean - ref| <= 1e-5 * (|ref| + std): a mean near 0 is judged against the channel's spread */
static int mean_close(const double *got, const double *ref, const double *m2, int64_t C,
                      int64_t count) {
    for (int64_t c = 0; c < C; c++) {
        const double sd = sqrt(m2[c] / (double)count);
        if (!(fabs(got[c] - ref[c]) <= 1e-5 * (fabs(ref[c]) + sd))) {
            fprintf(stderr, "  mean[%lld]: %.17g vs reference %.17g (std %.3g)\n", (long long)c,
                    got[c], ref[c], sd);
            return 0;
        }
    }
    return 1;
}

static int same_bits(const results *a, const results *b, int64_t numel, int64_t C) {
    return memcmp(a->y, b->y, (size_t)numel * 4) == 0 &&
           memcmp(a->dx, b->dx, (size_t)numel * 4) == 0 &&
           memcmp(a->dx2, b->dx2, (size_t)numel * 4) == 0 &&
           memcmp(a->dx3, b->dx3, (size_t)numel * 4) == 0 &&
           memcmp(a->yi, b->yi, (size_t)numel * 4) == 0 &&
           memcmp(a->ya, b->ya, (size_t)numel * 4) == 0 &&
           memcmp(a->mean, b->mean, (size_t)C * 8) == 0 &&
           memcmp(a->m2, b->m2, (size_t)C * 8) == 0 &&
           memcmp(a->sdyx, b->sdyx, (size_t)C * 8) == 0 &&
           memcmp(a->sdy2, b->sdy2, (size_t)C * 8) == 0 &&
           memcmp(a->dw, b->dw, (size_t)C * 4) == 0 && memcmp(a->rv, b->rv, (size_t)C * 4) == 0;
}

/* With a fused ReLU, an output within rounding of zero is masked by one set of kernels and not by
 * another whose statistics differ from it in the last bits (they agree to ~1e-9 relative): dx
 * there, and its channel's sums, differ by the whole dy. Random data has a few such elements per
 * million, so before comparing, x is moved away from them: each value whose output, with the
 * batch statistics or with the running ones the fixed-statistics backward uses, lies within EDGE
 * of zero moves by 3*EDGE of output units away from it. By estimate that shifts the statistics
 * by ~1e-6 of an output unit, far less than EDGE. */
#define EDGE 1e-3
static double pre_activation(float x, double mean, double var, float w, float b) {
    return ((double)x - mean) / sqrt(var + 1e-5) * w + b;
}
static void clear_relu_edges(const bnorm_desc *d, float *x, const float *w, const float *b) {
    const int64_t C = d->c, count = d->n * d->spatial;
    double *mean = talloc(C), *m2 = talloc(C);
    bnorm_bn_moments m = {C, 0, mean, m2};
    CHECK(bnorm__fast_select("reference"));
    CHECK_OK(bnorm_bn_stats(d, x, &m));
    for (int64_t c = 0; c < C; c++) {
        /* batch statistics, and run_all's running ones after one update from 0.5 and 2.0 */
        const double var = m2[c] / (double)count;
        const double rm = 0.9 * 0.5 + 0.1 * mean[c];
        const double rv = 0.9 * 2.0 + 0.1 * (count > 1 ? m2[c] / (double)(count - 1) : var);
        if (m2[c] == 0.0) continue; /* a constant channel: its output is exactly the bias */
        for (int64_t n = 0; n < d->n; n++)
            for (int64_t s = 0; s < d->spatial; s++) {
                float *v = &x[offset_of(d, n, c, s)];
                for (int k = 0; k < 2; k++) {
                    const double mu = k ? rm : mean[c], vr = k ? rv : var;
                    const double z = pre_activation(*v, mu, vr, w[c], b[c]);
                    if (fabs(z) >= EDGE) continue;
                    *v += (float)((z >= 0.0 ? 3.0 : -3.0) * EDGE * sqrt(vr + 1e-5) / w[c]);
                }
            }
    }
    bnorm__fast_select("auto");
    free(mean), free(m2);
}

static const char *isas[] = {"scalar", "avx2", "avx512"};

static void compare_shape(bnorm_layout layout, int ndim, const int64_t *shape, int relu,
                          double offset, uint64_t seed) {
    const bnorm_desc d = make_desc(BNORM_DTYPE_F32, layout, ndim, shape);
    const int64_t numel = bnorm_desc_numel(&d), C = d.c;
    float *x = talloc(numel), *dy = talloc(numel), *w = talloc(C), *b = talloc(C);
    rng_t r = {seed};
    for (int64_t n = 0; n < d.n; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < d.spatial; s++)
                x[offset_of(&d, n, c, s)] =
                    (float)(offset + 0.3 * (c % 7) + (0.5 + c % 3) * rng_normal(&r));
    if (C > 2) /* a constant channel */
        for (int64_t n = 0; n < d.n; n++)
            for (int64_t s = 0; s < d.spatial; s++)
                x[offset_of(&d, n, 2, s)] = 0.7f;
    tfill_normal(&r, BNORM_DTYPE_F32, dy, numel, 0.0, 1.0);
    for (int64_t c = 0; c < C; c++)
        w[c] = (float)(0.5 + rng_uniform(&r)), b[c] = (float)rng_normal(&r);
    const unsigned flags = relu ? BNORM_BN_FUSE_RELU : 0u;
    if (relu) clear_relu_edges(&d, x, w, b);

    results ref, got;
    results_alloc(&ref, numel, C);
    results_alloc(&got, numel, C);
    float *fx_ref = talloc(numel), *fx = talloc(numel), *fw_ref = talloc(C), *fw = talloc(C);
    CHECK(bnorm__fast_select("reference"));
    run_all(&d, x, dy, w, b, flags, &ref);
    run_fixed(&d, x, dy, w, b, flags, &ref, fx_ref, fw_ref);
    for (int i = 0; i < 3; i++) {
        if (!bnorm__fast_select(isas[i])) continue;
        results_poison(&got, numel);
        poison(fx, numel);
        run_all(&d, x, dy, w, b, flags, &got);
        run_fixed(&d, x, dy, w, b, flags, &got, fx, fw);
        int ok = close_f("y", got.y, ref.y, numel, 1e-5) &&
                 close_f("yi", got.yi, ref.yi, numel, 1e-5) &&
                 close_f("ya", got.ya, ref.ya, numel, 1e-5) &&
                 close_f("dx", got.dx, ref.dx, numel, 1e-5) &&
                 close_f("dx2", got.dx2, ref.dx2, numel, 1e-5) &&
                 close_f("dx3", got.dx3, ref.dx3, numel, 1e-5) &&
                 close_f("dx fixed", fx, fx_ref, numel, 1e-5) &&
                 mean_close(got.mean, ref.mean, ref.m2, C, d.n * d.spatial) &&
                 close_d("m2", got.m2, ref.m2, C, 1e-5) &&
                 close_d("save_invstd", got.sinv, ref.sinv, C, 1e-5) &&
                 close_d("sum_dy", got.sdy, ref.sdy, C, 1e-5) &&
                 close_d("sum_dy_xhat", got.sdyx, ref.sdyx, C, 1e-5) &&
                 close_d("sum_dy_sq", got.sdy2, ref.sdy2, C, 1e-5) &&
                 close_f("dweight", got.dw, ref.dw, C, 1e-5) &&
                 close_f("dbias", got.db, ref.db, C, 1e-5) &&
                 close_f("dweight fixed", fw, fw_ref, C, 1e-5) &&
                 close_f("running_mean", got.rm, ref.rm, C, 1e-5) &&
                 close_f("running_var", got.rv, ref.rv, C, 1e-5);
        ok &= got.nbt == 1;
        if (C > 2) { /* the constant channel: exact statistics, output exactly bias */
            ok &= got.m2[2] == 0.0 && got.mean[2] == (double)0.7f;
            for (int64_t n = 0; n < d.n && !relu; n++)
                ok &= got.y[offset_of(&d, n, 2, 0)] == b[2];
        }
        if (!CHECK(ok))
            fprintf(stderr, "  isa %s, layout %d, shape (%lld,%lld,spatial %lld), relu %d\n",
                    isas[i], (int)layout, (long long)d.n, (long long)C, (long long)d.spatial, relu);
#ifdef _OPENMP
        results one;
        results_alloc(&one, numel, C);
        omp_set_num_threads(1);
        run_all(&d, x, dy, w, b, flags, &one);
        omp_set_num_threads(2);
        run_all(&d, x, dy, w, b, flags, &got);
        if (!CHECK(same_bits(&one, &got, numel, C)))
            fprintf(stderr,
                    "  isa %s, layout %d, shape (%lld,%lld,spatial %lld), relu %d: 1 and 2 "
                    "threads differ\n",
                    isas[i], (int)layout, (long long)d.n, (long long)C, (long long)d.spatial, relu);
        results_free(&one);
#endif
    }
    bnorm__fast_select("auto");
    results_free(&ref), results_free(&got);
    free(x), free(dy), free(w), free(b), free(fx_ref), free(fx), free(fw_ref), free(fw);
}

/* n floats starting `off` floats past a 64-byte boundary; *raw gets the pointer to free */
static float *placed(float **raw, int64_t n, int64_t off) {
    void *p = NULL;
    CHECK(posix_memalign(&p, 64, (size_t)(n + 16) * sizeof(float)) == 0);
    *raw = p;
    return p ? (float *)p + off : NULL;
}

/* Channels-last outputs stream from the first 64-byte boundary of the rows (fast_kernels.inc,
 * FK(cl_head)), so every placement of the tensors in memory takes its own path through the
 * edges of the rows: outputs 0, 1, 4, 8, 12 and 15 floats past a boundary, inputs there too or
 * on one. The results must not change by a bit: the path at offset 0 is compared with the
 * reference by compare_shape. */
static void placement_keeps_bits(int ndim, const int64_t *shape, unsigned flags) {
    const bnorm_desc d = make_desc(BNORM_DTYPE_F32, BNORM_LAYOUT_CHANNELS_LAST, ndim, shape);
    const int64_t numel = bnorm_desc_numel(&d), C = d.c;
    float *x = talloc(numel), *dy = talloc(numel), *w = talloc(C), *b = talloc(C);
    rng_t r = {77};
    tfill_normal(&r, BNORM_DTYPE_F32, x, numel, 0.3, 1.5);
    tfill_normal(&r, BNORM_DTYPE_F32, dy, numel, 0.0, 1.0);
    for (int64_t c = 0; c < C; c++)
        w[c] = (float)(0.5 + rng_uniform(&r)), b[c] = (float)rng_normal(&r);
    static const int64_t offs[] = {0, 1, 4, 8, 12, 15};
    const int n_offs = (int)(sizeof offs / sizeof offs[0]);
    results base, got;
    results_alloc(&base, numel, C);
    results_alloc(&got, numel, C);
    float *keep[6]; /* got's own output buffers, put back before results_free */
    keep[0] = got.y, keep[1] = got.dx, keep[2] = got.dx2, keep[3] = got.dx3, keep[4] = got.yi;
    keep[5] = got.ya;
    for (int i = 0; i < 3; i++) {
        if (!bnorm__fast_select(isas[i])) continue;
        run_all(&d, x, dy, w, b, flags, &base);
        for (int o = 1; o < 2 * n_offs; o++) {
            const int64_t out_off = offs[o % n_offs], in_off = o < n_offs ? 0 : out_off;
            float *raw[8];
            float *px = placed(&raw[0], numel, in_off), *pdy = placed(&raw[1], numel, in_off);
            got.y = placed(&raw[2], numel, out_off), got.dx = placed(&raw[3], numel, out_off);
            got.dx2 = placed(&raw[4], numel, out_off), got.dx3 = placed(&raw[5], numel, out_off);
            got.yi = placed(&raw[6], numel, out_off), got.ya = placed(&raw[7], numel, out_off);
            memcpy(px, x, (size_t)numel * sizeof *x), memcpy(pdy, dy, (size_t)numel * sizeof *dy);
            results_poison(&got, numel);
            run_all(&d, px, pdy, w, b, flags, &got);
            if (!CHECK(same_bits(&base, &got, numel, C)))
                fprintf(stderr,
                        "  isa %s, shape (%lld,%lld,spatial %lld), flags %u: outputs %lld, inputs "
                        "%lld floats past 64 bytes differ from aligned\n",
                        isas[i], (long long)d.n, (long long)C, (long long)d.spatial, flags,
                        (long long)out_off, (long long)in_off);
            for (int k = 0; k < 8; k++)
                free(raw[k]);
        }
    }
    bnorm__fast_select("auto");
    got.y = keep[0], got.dx = keep[1], got.dx2 = keep[2], got.dx3 = keep[3], got.yi = keep[4];
    got.ya = keep[5];
    results_free(&base), results_free(&got);
    free(x), free(dy), free(w), free(b);
}

/* Gradients whose dx is (nearly) all cancellation: dy constant per channel, dy = y (linear in
 * xhat), and any dy with two values per channel. dx is then a tiny difference of large terms,
 * and the fast sums in float lanes would leave it off by ~1e-7 of |w*invstd*dy|; the check that
 * redoes them exactly must catch all three cases, keeping dx within 1e-9 of that scale of the
 * double reference (given the same mean and invstd). */
static void degenerate_gradients(bnorm_layout layout, int ndim, const int64_t *shape) {
    const bnorm_desc d = make_desc(BNORM_DTYPE_F32, layout, ndim, shape);
    const int64_t numel = bnorm_desc_numel(&d), C = d.c, count = d.n * d.spatial;
    float *x = talloc(numel), *y = talloc(numel), *dy = talloc(numel), *dx = talloc(numel);
    float *ref = talloc(numel), *w = talloc(C), *b = talloc(C);
    double *mean = talloc(C), *inv = talloc(C), *sdy = talloc(C), *sdyx = talloc(C);
    double *sdy2 = talloc(C);
    rng_t r = {7};
    tfill_normal(&r, BNORM_DTYPE_F32, x, numel, 0.5, 2.0);
    for (int64_t c = 0; c < C; c++)
        w[c] = (float)(0.5 + rng_uniform(&r)), b[c] = (float)rng_normal(&r);
    CHECK(bnorm__fast_select("reference"));
    CHECK_OK(bnorm_bn_forward_train(&d, y, mean, inv, x, w, b, NULL, 1e-5, 0));
    for (int kind = 0; kind < 3; kind++) {
        if ((kind == 2) != (count == 2)) continue;
        if (kind == 0)
            for (int64_t e = 0; e < numel; e++)
                dy[e] = 0.1f;
        else if (kind == 1)
            memcpy(dy, y, (size_t)numel * sizeof *dy);
        else
            tfill_normal(&r, BNORM_DTYPE_F32, dy, numel, 0.0, 1.0);
        double scale = 0.0;
        for (int64_t c = 0; c < C; c++)
            scale = fmax(scale, fabs(w[c] * inv[c]));
        scale *= maxabs_f(dy, numel);
        CHECK(bnorm__fast_select("reference"));
        CHECK_OK(bnorm_bn_backward(&d, ref, NULL, NULL, dy, x, mean, inv, w, b,
                                   BNORM_BN_STATS_BATCH, 0));
        for (int i = 0; i < 3; i++) {
            if (!bnorm__fast_select(isas[i])) continue;
            double err = 0.0;
            poison(dx, numel);
            CHECK_OK(bnorm_bn_backward(&d, dx, NULL, NULL, dy, x, mean, inv, w, b,
                                       BNORM_BN_STATS_BATCH, 0));
            for (int64_t e = 0; e < numel; e++)
                err = fmax(err, fabs((double)dx[e] - ref[e]));
            /* the two-step backward, with sum_dy_sq to judge from, then without */
            for (int with_sq = 1; with_sq >= 0; with_sq--) {
                poison(dx, numel);
                CHECK_OK(bnorm_bn_backward_reduce(&d, sdy, sdyx, with_sq ? sdy2 : NULL, dy, x, mean,
                                                  inv, w, b, 0));
                CHECK_OK(bnorm_bn_backward_apply(&d, dx, dy, x, mean, inv, w, b, sdy, sdyx,
                                                 with_sq ? sdy2 : NULL, count, BNORM_BN_STATS_BATCH,
                                                 0));
                for (int64_t e = 0; e < numel; e++)
                    err = fmax(err, fabs((double)dx[e] - ref[e]));
            }
            if (!CHECK(err <= 1e-9 * scale))
                fprintf(stderr,
                        "  degenerate dy %d, isa %s, layout %d, shape (%lld,%lld,%lld): dx off "
                        "by %.3g of its scale\n",
                        kind, isas[i], (int)layout, (long long)d.n, (long long)C,
                        (long long)d.spatial, err / scale);
        }
    }
    bnorm__fast_select("auto");
    free(x), free(y), free(dy), free(dx), free(ref), free(w), free(b);
    free(mean), free(inv), free(sdy), free(sdyx), free(sdy2);
}

/* ---- backward's fused-ReLU mask as a threshold on x (bnorm__relu_threshold) ---------------- */

/* forward's float formula for y > 0, in the kernels' order of operations */
static int relu_passes(float x, float mh, float ml, float scale, float bias) {
    const float d = (x - mh) - ml;
    return d * scale + bias > 0.0f;
}

/* x stepped k floats up (k < 0: down) */
static float step_float(float x, int k) {
    for (; k > 0; k--)
        x = nextafterf(x, INFINITY);
    for (; k < 0; k++)
        x = nextafterf(x, -INFINITY);
    return x;
}

static float random_float(rng_t *r, double lo_exp, double hi_exp) {
    const double m = pow(10.0, lo_exp + (hi_exp - lo_exp) * rng_uniform(r));
    return (float)(rng_uniform(r) < 0.5 ? -m : m);
}

/* The threshold must give the formula's mask on every float: checked on the 601 floats around
 * it, on the special values and on random bit patterns, for constants of every size and sign,
 * and for those that have no threshold (scale 0, a constant not finite). */
static void relu_threshold_exact(void) {
    const float specials[] = {-INFINITY,     -FLT_MAX, -1e30f,  -1.0f,        -FLT_MIN,
                              -FLT_TRUE_MIN, -0.0f,    0.0f,    FLT_TRUE_MIN, FLT_MIN,
                              1.0f,          1e30f,    FLT_MAX, INFINITY,     NAN};
    const size_t n_special = sizeof specials / sizeof specials[0];
    rng_t r = {41};
    int64_t wrong = 0, crossings = 0;
    for (int i = 0; i < 2000; i++) {
        float mh = random_float(&r, -3.0, 6.0);
        float ml = mh * (float)((rng_uniform(&r) - 0.5) * 0x1p-24);
        float scale = random_float(&r, -6.0, 6.0), bias = random_float(&r, -6.0, 6.0);
        switch (i % 10) { /* edge cases among the random ones */
        case 1:
            bias = 0.0f;
            break;
        case 2:
            mh = ml = 0.0f;
            break;
        case 3:
            scale = (i & 16) ? FLT_TRUE_MIN : -FLT_MAX;
            break;
        case 4:
            bias = (i & 16) ? FLT_MAX : -FLT_TRUE_MIN;
            break;
        case 5:
            mh = (i & 16) ? -FLT_MAX : FLT_MAX, ml = 0.0f;
            break;
        case 6:
            scale = (i & 16) ? 0.0f : -0.0f;
            break;
        case 7: {
            const float v = (i & 64) ? NAN : -INFINITY;
            if (i & 16)
                mh = v;
            else if (i & 32)
                scale = v;
            else
                bias = v;
            break;
        }
        default:
            break;
        }
        float t = 12345.0f;
        const int mode = bnorm__relu_threshold(mh, ml, scale, bias, &t);
        if (!isfinite(mh) || !isfinite(ml) || !isfinite(scale) || !isfinite(bias) ||
            scale == 0.0f) {
            wrong += mode != BNORM__RELU_FORMULA;
            continue;
        }
        if (mode != (scale > 0.0f ? BNORM__RELU_ABOVE : BNORM__RELU_BELOW)) {
            wrong++;
            continue;
        }
        float xs[601 + 15 + 200];
        int nx = 0;
        const float at = isnan(t) ? (float)((double)mh + ml - (double)bias / scale) : t;
        for (float x = step_float(at, -300); nx < 601; x = nextafterf(x, INFINITY))
            xs[nx++] = x;
        for (size_t k = 0; k < n_special; k++)
            xs[nx++] = specials[k];
        while (nx < (int)(sizeof xs / sizeof xs[0])) {
            const uint32_t u = (uint32_t)rng_next(&r);
            float x;
            memcpy(&x, &u, sizeof x);
            if (!isnan(x)) xs[nx++] = x;
        }
        int seen[2] = {0, 0};
        for (int k = 0; k < nx; k++) {
            const int want = relu_passes(xs[k], mh, ml, scale, bias);
            const int got = mode == BNORM__RELU_ABOVE ? xs[k] >= t : xs[k] <= t;
            wrong += want != got;
            if (k < 601) seen[want] = 1;
        }
        crossings += seen[0] && seen[1];
    }
    /* most random constants put the mask's edge among the 601 floats walked */
    if (!CHECK(wrong == 0 && crossings > 1000))
        fprintf(stderr, "  relu threshold: %lld wrong masks, %lld edges walked\n", (long long)wrong,
                (long long)crossings);
}

/* Through the public API, every ISA: x walks the floats across each channel's mask edge, and
 * backward (fixed statistics, dy = 1) must pass dy exactly where inference's fused-ReLU output
 * is > 0; backward_reduce's sum of g must count those elements. signs: weights all positive (the
 * threshold x >= t), all negative (x <= t), mixed with a zero (no threshold for that channel),
 * or mixed (no common direction: channels-last groups and short-row blocks use the formula). */
static void relu_mask_matches_forward(bnorm_layout layout, int ndim, const int64_t *shape,
                                      int signs) {
    const bnorm_desc d = make_desc(BNORM_DTYPE_F32, layout, ndim, shape);
    const int64_t numel = bnorm_desc_numel(&d), C = d.c, count = d.n * d.spatial;
    float *x = talloc(numel), *y = talloc(numel), *dy = talloc(numel), *dx = talloc(numel);
    float *w = talloc(C), *b = talloc(C);
    double *mean = talloc(C), *inv = talloc(C), *sdy = talloc(C), *sdyx = talloc(C);
    rng_t r = {(uint64_t)(100 + signs)};
    for (int64_t c = 0; c < C; c++) {
        mean[c] = 0.1 + 3.0 * rng_normal(&r); /* not a float: its low part ml is not 0 */
        inv[c] = 0.5 + rng_uniform(&r);
        w[c] = (float)(0.5 + rng_uniform(&r)) * (signs == 1 || (signs >= 2 && c % 2) ? -1 : 1);
        b[c] = c == 0 ? 0.0f : (float)rng_normal(&r);
        if (signs == 2 && c == 1) w[c] = 0.0f;
        const double edge = w[c] != 0.0f ? mean[c] - b[c] / (inv[c] * w[c]) : mean[c];
        float v = step_float((float)edge, -(int)(count / 2));
        for (int64_t n = 0; n < d.n; n++)
            for (int64_t s = 0; s < d.spatial; s++, v = nextafterf(v, INFINITY))
                x[offset_of(&d, n, c, s)] = v;
        if (d.spatial >= 4) {
            x[offset_of(&d, 0, c, 0)] = -0.0f, x[offset_of(&d, 0, c, 1)] = 0.0f;
            x[offset_of(&d, 0, c, 2)] = 1e30f, x[offset_of(&d, 0, c, 3)] = -1e30f;
        }
    }
    for (int64_t e = 0; e < numel; e++)
        dy[e] = 1.0f;
    for (int i = 0; i < 3; i++) {
        if (!bnorm__fast_select(isas[i])) continue;
        poison(y, numel), poison(dx, numel);
        CHECK_OK(bnorm_bn_apply(&d, y, x, mean, inv, w, b, BNORM_BN_FUSE_RELU));
        CHECK_OK(bnorm_bn_backward(&d, dx, NULL, NULL, dy, x, mean, inv, w, b, BNORM_BN_STATS_FIXED,
                                   BNORM_BN_FUSE_RELU));
        CHECK_OK(bnorm_bn_backward_reduce(&d, sdy, sdyx, NULL, dy, x, mean, inv, w, b,
                                          BNORM_BN_FUSE_RELU));
        int64_t wrong = 0, edges = 0;
        for (int64_t c = 0; c < C; c++) {
            int64_t passed = 0;
            for (int64_t n = 0; n < d.n; n++)
                for (int64_t s = 0; s < d.spatial; s++) {
                    const int64_t e = offset_of(&d, n, c, s);
                    passed += y[e] > 0.0f;
                    if (w[c] != 0.0f) wrong += (dx[e] != 0.0f) != (y[e] > 0.0f);
                }
            wrong += sdy[c] != (double)passed;
            edges += passed > 0 && passed < count;
        }
        if (!CHECK(wrong == 0 && edges >= C - 1))
            fprintf(stderr,
                    "  relu mask, isa %s, layout %d, shape (%lld,%lld,spatial %lld), signs %d: "
                    "%lld wrong, %lld of %lld channels with an edge\n",
                    isas[i], (int)layout, (long long)d.n, (long long)C, (long long)d.spatial, signs,
                    (long long)wrong, (long long)edges, (long long)C);
    }
    bnorm__fast_select("auto");
    free(x), free(y), free(dy), free(dx), free(w), free(b);
    free(mean), free(inv), free(sdy), free(sdyx);
}

int main(void) {
    const struct {
        int ndim;
        int64_t shape[5];
    } shapes[] = {
        {4, {1, 5, 7, 9}},      /* N = 1, spatial off the vector width */
        {4, {3, 1, 5, 5}},      /* C = 1 */
        {4, {6, 19, 1, 1}},     /* 1x1 spatial: the (N,C) memory */
        {2, {37, 45}},          /* (N,C), C off the width */
        {3, {2, 3000, 3}},      /* huge C, tiny N: several channel-last groups */
        {4, {2, 2, 300, 301}},  /* few channels, many values: split into parts */
        {4, {1, 3, 700, 200}},  /* N = 1 with parts split along spatial */
        {4, {4, 20, 9, 11}},    /* channels-last narrower than the split threshold */
        {4, {3, 67, 6, 5}},     /* wider */
        {5, {2, 5, 3, 4, 7}},   /* 3d */
        {4, {40, 4, 32, 32}},   /* channels-last narrow, many rows: row parts */
        {4, {80, 9, 31, 31}},   /* short rows, one channel per block */
        {4, {40, 32, 31, 31}},  /* short rows, two channels per block (the minimum) */
        {4, {128, 300, 7, 9}},  /* short rows, many blocks, output over 4 MiB: planes streamed */
        {4, {1100, 120, 3, 3}}, /* ... planes shorter than a vector: several in one */
        {4, {300, 64, 8, 9}},   /* streamed, channels-last in chunks of whole vectors */
        {4, {40, 320, 9, 10}},  /* ... and rows too long for chunks */
        {4, {30, 200, 5, 7}},   /* 200 channels: chunks on Intel, row by row on AMD (below) */
        /* outputs over 4 MiB: streaming stores (rows not 64-byte multiples) and prefetching */
        {4, {6, 40, 99, 101}},
        {4, {2, 3, 512, 701}},
        /* long planes four images at a time in the second passes, streamed (every plane as far
         * from a vector boundary), one image left over */
        {4, {61, 16, 33, 33}},
        /* channels-last with few rows: units of channels on threads (C a multiple of 16 or not) */
        {2, {40, 1040}},
        {4, {2, 1040, 3, 3}},
        /* ... and up to PARTS*64 rows where the op sums (training, backward, statistics; not
         * inference), C a multiple of 16 or not */
        {2, {200, 1040}},
        {4, {3, 300, 6, 7}},
    };
    /* the shapes above that say "streamed" stream on Intel's rule (outputs over 4 MiB); AMD's
     * streams only above 24 MiB in all (fast.c, want_nt): Intel's everywhere, so that every
     * machine tests the same paths */
    bnorm__cpu_assume_amd(0);
    uint64_t seed = 1;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int64_t numel = 1;
        for (int k = 0; k < shapes[i].ndim; k++)
            numel *= shapes[i].shape[k];
        for (int layout = 0; layout < 2; layout++)
            for (int relu = 0; relu < 2; relu++) {
                /* the large shapes (slow under the sanitizers): relu in one layout only */
                if (numel > 2000000 && relu != (layout == 0)) continue;
                compare_shape((bnorm_layout)layout, shapes[i].ndim, shapes[i].shape, relu,
                              i == 3 ? 1e4 : 0.0, seed++);
            }
    }
    /* large mean, small spread: the mean split in hi + lo must keep x - mean accurate */
    const int64_t big[4] = {8, 3, 16, 16};
    compare_shape(BNORM_LAYOUT_CHANNELS_FIRST, 4, big, 0, 3e4, 99);
    compare_shape(BNORM_LAYOUT_CHANNELS_LAST, 4, big, 1, -3e4, 100);
    /* every backward path: channel by channel, short-row blocks, parts, channels-last, N=2 */
    const int64_t degenerate[][4] = {
        {4, 3, 40, 40}, {8, 5, 7, 9}, {2, 2, 256, 256}, {2, 37, 1, 1}, {1, 3, 2, 1}};
    for (size_t i = 0; i < sizeof degenerate / sizeof degenerate[0]; i++)
        for (int layout = 0; layout < 2; layout++)
            degenerate_gradients((bnorm_layout)layout, 4, degenerate[i]);
    /* outputs over 4 MiB (streamed): rows of 32, 48 and 64 channels in chunks, 320 row by row;
     * then few rows in units of channels, which inference starts on the output's cache lines */
    const int64_t placements[][4] = {{560, 32, 8, 9},  {400, 48, 8, 8}, {300, 64, 8, 9},
                                     {40, 320, 9, 10}, {2, 1040, 3, 3}, {1, 3000, 2, 3},
                                     {2, 1040, 10, 10}};
    for (size_t i = 0; i < sizeof placements / sizeof placements[0]; i++)
        placement_keeps_bits(4, placements[i], i % 2 ? BNORM_BN_FUSE_RELU : 0u);
    /* AMD's channels-first short rows, whole images in two passes (fast.c, cf_flat): N over and
     * under the parts, several groups of channels, dx streamed (AMD's rule), exact sums */
    bnorm__cpu_assume_amd(1);
    const int64_t flat[][4] = {{80, 9, 31, 31},
                               {20, 260, 8, 8},
                               {6, 300, 9, 8},
                               {128, 48, 18, 19},
                               {160, 64, 18, 19}}; /* the last: forward streamed */
    for (size_t i = 0; i < sizeof flat / sizeof flat[0]; i++)
        for (int relu = i >= 3; relu < 2; relu++) /* the large ones (sanitizers): relu only */
            compare_shape(BNORM_LAYOUT_CHANNELS_FIRST, 4, flat[i], relu, 0.0, seed++);
    degenerate_gradients(BNORM_LAYOUT_CHANNELS_FIRST, 4, (const int64_t[]){17, 5, 8, 8});
    /* AMD's channels-last rows of 129 to 256 channels, row by row (FK(cl_chunked)) */
    for (int relu = 0; relu < 2; relu++)
        compare_shape(BNORM_LAYOUT_CHANNELS_LAST, 4, (const int64_t[]){30, 200, 5, 7}, relu, 0.0,
                      seed++);
    bnorm__cpu_assume_amd(0);
    relu_threshold_exact();
    /* channel by channel, short-row blocks, channels-last groups, (N,C); the last with too few
     * values per channel for a threshold */
    const struct {
        int ndim;
        int64_t shape[4];
    } masks[] = {{4, {2, 3, 32, 40}}, {4, {2, 6, 30, 20}}, {2, {1100, 20}}, {4, {2, 6, 10, 10}}};
    for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++)
        for (int layout = 0; layout < 2; layout++)
            for (int signs = 0; signs < 4; signs++)
                relu_mask_matches_forward((bnorm_layout)layout, masks[i].ndim, masks[i].shape,
                                          signs);
    return check_report();
}
