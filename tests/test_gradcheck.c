/* tests/test_gradcheck.c - finite-difference gradient checks of batch-norm backward, float64.
 *
 * Loss L = sum(r * y) with a fixed random r, so dL/dy = r. Every element of x, weight and bias is
 * perturbed by +-h and the central difference compared with the analytic gradient:
 * |a - n| <= 1e-4 + 1e-2 * max(|a|, |n|). Covered: batch statistics (training) and fixed running
 * statistics (eval / frozen BN), affine on and off, fused ReLU (inputs kept away from the kink),
 * both layouts, (N,C), 1d, 2d and 3d shapes, and the stateful layer with running statistics
 * restored between the repeated forwards. */
#include <string.h>

#include "check.h"
#include "testutil.h"

#define EPS 1e-5
#define H   1e-6

typedef struct {
    bnorm_desc d;
    double *x, *w, *b, *rm, *rv, *r, *y;
    int affine, relu, fixed; /* fixed: normalize with running stats */
} setup;

static unsigned flags_of(const setup *s) {
    return s->relu ? BNORM_BN_FUSE_RELU : 0u;
}

static double loss(const setup *s) {
    const double *w = s->affine ? s->w : NULL, *b = s->affine ? s->b : NULL;
    bnorm_status st =
        s->fixed
            ? bnorm_bn_forward_infer(&s->d, s->y, s->x, w, b, s->rm, s->rv, EPS, flags_of(s))
            : bnorm_bn_forward_train(&s->d, s->y, NULL, NULL, s->x, w, b, NULL, EPS, flags_of(s));
    if (st != BNORM_OK) return NAN;
    double l = 0.0;
    for (int64_t i = 0; i < bnorm_desc_numel(&s->d); i++)
        l += s->r[i] * s->y[i];
    return l;
}

/* smallest |pre-ReLU output| over the tensor: how far the inputs are from the kink */
static double kink_margin(setup *s) {
    const int relu = s->relu;
    s->relu = 0;
    loss(s);
    s->relu = relu;
    double m = INFINITY;
    for (int64_t i = 0; i < bnorm_desc_numel(&s->d); i++)
        if (fabs(s->y[i]) < m) m = fabs(s->y[i]);
    return m;
}

static int close_enough(double a, double n) {
    return fabs(a - n) <= 1e-4 + 1e-2 * fmax(fabs(a), fabs(n));
}

/* central differences of every element of p[0..n) against analytic gradient g */
static int check_param(setup *s, double *p, int64_t n, const double *g, const char *what) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const double keep = p[i];
        p[i] = keep + H;
        const double lp = loss(s);
        p[i] = keep - H;
        const double lm = loss(s);
        p[i] = keep;
        const double num = (lp - lm) / (2 * H);
        if (!close_enough(g[i], num)) {
            if (bad++ < 3)
                fprintf(stderr, "  %s[%lld]: analytic %.10g, numeric %.10g\n", what, (long long)i,
                        g[i], num);
        }
    }
    return bad == 0;
}

static void run(const char *name, bnorm_layout layout, int ndim, const int64_t *shape, int affine,
                int relu, int fixed, uint64_t seed) {
    setup s = {0};
    s.d = make_desc(BNORM_DTYPE_F64, layout, ndim, shape);
    s.affine = affine;
    s.relu = relu;
    s.fixed = fixed;
    const int64_t numel = bnorm_desc_numel(&s.d), C = s.d.c;
    s.x = talloc(numel), s.r = talloc(numel), s.y = talloc(numel);
    s.w = talloc(C), s.b = talloc(C), s.rm = talloc(C), s.rv = talloc(C);
    rng_t rng = {seed};
    for (int attempt = 0; attempt < 100; attempt++) {
        tfill_normal(&rng, BNORM_DTYPE_F64, s.x, numel, 0.5, 1.5);
        tfill_normal(&rng, BNORM_DTYPE_F64, s.r, numel, 0.0, 1.0);
        for (int64_t c = 0; c < C; c++) {
            s.w[c] = 0.5 + rng_uniform(&rng);
            s.b[c] = rng_normal(&rng) * 0.5;
            s.rm[c] = rng_normal(&rng);
            s.rv[c] = 0.5 + rng_uniform(&rng);
        }
        if (!relu || kink_margin(&s) > 1e-3) break;
    }
    if (relu) CHECK(kink_margin(&s) > 1e-3);

    double *mean = talloc(C), *invstd = talloc(C), *dx = talloc(numel);
    double *dw = talloc(C), *db = talloc(C);
    const double *w = affine ? s.w : NULL, *b = affine ? s.b : NULL;
    if (fixed) {
        memcpy(mean, s.rm, (size_t)C * sizeof *mean);
        CHECK_OK(bnorm_bn_invstd(C, BNORM_DTYPE_F64, invstd, s.rv, EPS));
    } else {
        CHECK_OK(
            bnorm_bn_forward_train(&s.d, s.y, mean, invstd, s.x, w, b, NULL, EPS, flags_of(&s)));
    }
    CHECK_OK(bnorm_bn_backward(&s.d, dx, dw, db, s.r, s.x, mean, invstd, w, b,
                               fixed ? BNORM_BN_STATS_FIXED : BNORM_BN_STATS_BATCH, flags_of(&s)));
    int ok = check_param(&s, s.x, numel, dx, "dx");
    if (affine) {
        ok &= check_param(&s, s.w, C, dw, "dweight");
        ok &= check_param(&s, s.b, C, db, "dbias");
    }
    if (!CHECK(ok)) fprintf(stderr, "  gradcheck %s failed\n", name);
    free(s.x), free(s.r), free(s.y), free(s.w), free(s.b), free(s.rm), free(s.rv);
    free(mean), free(invstd), free(dx), free(dw), free(db);
}

/* The layer in training mode, with running-stat updates on: each repeated forward must see the
 * same state, so running stats and num_batches_tracked are restored after every forward. */
static double layer_loss(bnorm_bn_layer *bn, const bnorm_desc *d, double *y, const double *x,
                         const double *r, bnorm_tensor_view *rm, bnorm_tensor_view *rv,
                         bnorm_tensor_view *nbt) {
    const int64_t C = d->c;
    double saved_m[8], saved_v[8];
    const int64_t saved_n = *(int64_t *)nbt->data;
    memcpy(saved_m, rm->data, (size_t)C * sizeof(double));
    memcpy(saved_v, rv->data, (size_t)C * sizeof(double));
    if (bnorm_bn_layer_forward(bn, d, y, x) != BNORM_OK) return NAN;
    memcpy(rm->data, saved_m, (size_t)C * sizeof(double));
    memcpy(rv->data, saved_v, (size_t)C * sizeof(double));
    *(int64_t *)nbt->data = saved_n;
    double l = 0.0;
    for (int64_t i = 0; i < bnorm_desc_numel(d); i++)
        l += r[i] * y[i];
    return l;
}

static void run_layer(int training) {
    const int64_t shape[4] = {2, 3, 2, 3};
    const bnorm_desc d = make_desc(BNORM_DTYPE_F64, BNORM_LAYOUT_CHANNELS_LAST, 4, shape);
    bnorm_bn_options opt = bnorm_bn_options_default(3);
    opt.dtype = BNORM_DTYPE_F64;
    opt.fuse_relu = 0;
    bnorm_bn_layer *bn;
    CHECK_OK(bnorm_bn_layer_create(&bn, &opt, NULL));
    bnorm_tensor_view w, rm, rv, nbt, gw;
    CHECK_OK(bnorm_bn_layer_tensor(bn, "weight", &w));
    CHECK_OK(bnorm_bn_layer_tensor(bn, "weight.grad", &gw));
    CHECK_OK(bnorm_bn_layer_tensor(bn, "running_mean", &rm));
    CHECK_OK(bnorm_bn_layer_tensor(bn, "running_var", &rv));
    CHECK_OK(bnorm_bn_layer_tensor(bn, "num_batches_tracked", &nbt));
    rng_t rng = {99 + (uint64_t)training};
    const int64_t numel = bnorm_desc_numel(&d);
    double *x = talloc(numel), *r = talloc(numel), *y = talloc(numel), *dx = talloc(numel);
    tfill_normal(&rng, BNORM_DTYPE_F64, x, numel, 1.0, 2.0);
    tfill_normal(&rng, BNORM_DTYPE_F64, r, numel, 0.0, 1.0);
    for (int c = 0; c < 3; c++) {
        ((double *)w.data)[c] = 0.5 + rng_uniform(&rng);
        ((double *)rm.data)[c] = rng_normal(&rng);
        ((double *)rv.data)[c] = 0.5 + rng_uniform(&rng);
    }
    bnorm_bn_layer_set_training(bn, training);
    layer_loss(bn, &d, y, x, r, &rm, &rv, &nbt);
    CHECK_OK(bnorm_bn_layer_backward(bn, &d, dx, r, x));
    int bad = 0;
    for (int64_t i = 0; i < numel; i++) {
        const double keep = x[i];
        x[i] = keep + H;
        const double lp = layer_loss(bn, &d, y, x, r, &rm, &rv, &nbt);
        x[i] = keep - H;
        const double lm = layer_loss(bn, &d, y, x, r, &rm, &rv, &nbt);
        x[i] = keep;
        bad += !close_enough(dx[i], (lp - lm) / (2 * H));
    }
    for (int c = 0; c < 3; c++) {
        double *wc = &((double *)w.data)[c];
        const double keep = *wc;
        *wc = keep + H;
        const double lp = layer_loss(bn, &d, y, x, r, &rm, &rv, &nbt);
        *wc = keep - H;
        const double lm = layer_loss(bn, &d, y, x, r, &rm, &rv, &nbt);
        *wc = keep;
        bad += !close_enough(((double *)gw.data)[c], (lp - lm) / (2 * H));
    }
    if (!CHECK(bad == 0))
        fprintf(stderr, "  layer gradcheck (training=%d): %d bad\n", training, bad);
    free(x), free(r), free(y), free(dx);
    bnorm_bn_layer_free(bn);
}

int main(void) {
    const int64_t nc[2] = {5, 3}, s1d[3] = {3, 2, 4}, s2d[4] = {2, 3, 2, 3},
                  s3d[5] = {2, 2, 2, 1, 3};
    struct {
        int ndim;
        const int64_t *shape;
    } shapes[] = {{2, nc}, {3, s1d}, {4, s2d}, {5, s3d}};
    uint64_t seed = 1;
    for (int si = 0; si < 4; si++)
        for (int layout = 0; layout < 2; layout++)
            for (int fixed = 0; fixed < 2; fixed++)
                for (int affine = 0; affine < 2; affine++)
                    for (int relu = 0; relu < 2; relu++) {
                        char name[96];
                        snprintf(name, sizeof name, "ndim=%d layout=%d fixed=%d affine=%d relu=%d",
                                 shapes[si].ndim, layout, fixed, affine, relu);
                        run(name, (bnorm_layout)layout, shapes[si].ndim, shapes[si].shape, affine,
                            relu, fixed, seed++);
                    }
    run_layer(1);
    run_layer(0);
    return check_report();
}
