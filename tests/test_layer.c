/* tests/test_layer.c - the stateful layer: PyTorch's initial values and names, caller-owned
 * buffers, gradient accumulation and zero_grad, the separate mode choices (which statistics
 * normalize / whether running statistics update), reset_running_stats, and eval-mode backward
 * equal to the functional fixed-statistics backward. */
#include <string.h>

#include "check.h"
#include "testutil.h"

static void defaults(bnorm_dtype dt) {
    bnorm_bn_options opt = bnorm_bn_options_default(5);
    CHECK(opt.eps == 1e-5 && opt.momentum == 0.1 && opt.affine && opt.track_running_stats);
    CHECK(!opt.fuse_relu && opt.dtype == BNORM_DTYPE_F32);
    opt.dtype = dt;
    bnorm_bn_layer *bn;
    CHECK_OK(bnorm_bn_layer_create(&bn, &opt, NULL));
    const char *names[7] = {
        "weight",      "bias",     "running_mean", "running_var", "num_batches_tracked",
        "weight.grad", "bias.grad"};
    const double init[7] = {1, 0, 0, 1, 0, 0, 0};
    for (int i = 0; i < 7; i++) {
        bnorm_tensor_view v;
        CHECK_OK(bnorm_bn_layer_tensor(bn, names[i], &v));
        if (i == 4) {
            CHECK(v.dtype == BNORM_DTYPE_I64 && v.numel == 1 && *(int64_t *)v.data == 0);
            continue;
        }
        CHECK(v.dtype == dt && v.numel == 5);
        for (int c = 0; c < 5; c++)
            CHECK(tget(dt, v.data, c) == init[i]);
    }
    CHECK(bnorm_bn_layer_options(bn)->num_features == 5);
    bnorm_bn_layer_free(bn);
}

static void external_buffers_and_grads(void) {
    float w[4], b[4], rm[4], rv[4], gw[4], gb[4];
    int64_t nbt = 77;
    memset(gw, 0x7f, sizeof gw);
    bnorm_bn_buffers buf = {w, b, rm, rv, &nbt, gw, gb};
    bnorm_bn_options opt = bnorm_bn_options_default(4);
    bnorm_bn_layer *bn;
    CHECK_OK(bnorm_bn_layer_create(&bn, &opt, &buf));
    CHECK(w[3] == 1.0f && b[0] == 0.0f && rm[1] == 0.0f && rv[2] == 1.0f && nbt == 0 && gw[0] == 0);
    bnorm_tensor_view v;
    CHECK_OK(bnorm_bn_layer_tensor(bn, "running_var", &v));
    CHECK(v.data == rv);
    const int64_t shape[3] = {6, 4, 5};
    const bnorm_desc d = make_desc(BNORM_DTYPE_F32, BNORM_LAYOUT_CHANNELS_LAST, 3, shape);
    float x[120], y[120], dy[120], dx[120];
    rng_t r = {8};
    tfill_normal(&r, BNORM_DTYPE_F32, x, 120, 2.0, 1.0);
    tfill_normal(&r, BNORM_DTYPE_F32, dy, 120, 0.0, 1.0);
    CHECK_OK(bnorm_bn_layer_forward(bn, &d, y, x));
    CHECK(nbt == 1 && rm[0] != 0.0f);
    CHECK_OK(bnorm_bn_layer_backward(bn, &d, dx, dy, x));
    float gw1[4], gb1[4];
    memcpy(gw1, gw, sizeof gw1), memcpy(gb1, gb, sizeof gb1);
    CHECK_OK(bnorm_bn_layer_backward(bn, &d, NULL, dy, x)); /* accumulates; dx not wanted */
    for (int c = 0; c < 4; c++)
        CHECK(gw[c] == 2 * gw1[c] && gb[c] == 2 * gb1[c]);
    bnorm_bn_layer_zero_grad(bn);
    for (int c = 0; c < 4; c++)
        CHECK(gw[c] == 0.0f && gb[c] == 0.0f);
    bnorm_bn_layer_reset_running_stats(bn);
    CHECK(rm[0] == 0.0f && rv[0] == 1.0f && nbt == 0);
    bnorm_bn_layer_free(bn);
    CHECK(w[3] == 1.0f); /* caller memory survives the layer */
}

/* The two choices behind train/eval, one at a time. */
static void modes(void) {
    const int64_t shape[4] = {4, 3, 2, 2};
    const bnorm_desc d = make_desc(BNORM_DTYPE_F64, BNORM_LAYOUT_CHANNELS_FIRST, 4, shape);
    double x[48], y[48], yref[48], dy[48], dx[48], dxref[48];
    rng_t r = {13};
    tfill_normal(&r, BNORM_DTYPE_F64, x, 48, -1.0, 2.0);
    tfill_normal(&r, BNORM_DTYPE_F64, dy, 48, 0.0, 1.0);
    bnorm_bn_options opt = bnorm_bn_options_default(3);
    opt.dtype = BNORM_DTYPE_F64;
    opt.momentum = 0.5;
    bnorm_bn_layer *bn;
    CHECK_OK(bnorm_bn_layer_create(&bn, &opt, NULL));
    bnorm_tensor_view rm, rv, nbt, w;
    CHECK_OK(bnorm_bn_layer_tensor(bn, "running_mean", &rm));
    CHECK_OK(bnorm_bn_layer_tensor(bn, "running_var", &rv));
    CHECK_OK(bnorm_bn_layer_tensor(bn, "num_batches_tracked", &nbt));
    CHECK_OK(bnorm_bn_layer_tensor(bn, "weight", &w));
    double *m = rm.data, *v = rv.data;
    for (int c = 0; c < 3; c++)
        m[c] = 0.5 * c, v[c] = 1.0 + c, ((double *)w.data)[c] = 1.0 + c;

    /* batch statistics without touching the running ones */
    CHECK_OK(bnorm_bn_layer_set_mode(bn, BNORM_BN_STATS_BATCH, 0));
    CHECK_OK(bnorm_bn_layer_forward(bn, &d, y, x));
    CHECK_OK(bnorm_bn_forward_train(&d, yref, NULL, NULL, x, w.data, NULL, NULL, 1e-5, 0));
    CHECK(memcmp(y, yref, sizeof y) == 0);
    CHECK(m[1] == 0.5 && v[2] == 3.0 && *(int64_t *)nbt.data == 0);

    /* normalize with the running statistics as they were, and update them from this batch */
    CHECK_OK(bnorm_bn_layer_set_mode(bn, BNORM_BN_STATS_FIXED, 1));
    CHECK_OK(bnorm_bn_forward_infer(&d, yref, x, w.data, NULL, m, v, 1e-5, 0));
    CHECK_OK(bnorm_bn_layer_forward(bn, &d, y, x));
    CHECK(memcmp(y, yref, sizeof y) == 0);
    CHECK(m[1] != 0.5 && *(int64_t *)nbt.data == 1);
    /* its backward treats the statistics as constants */
    double mean[3], invstd[3];
    for (int c = 0; c < 3; c++)
        mean[c] = 0.5 * c; /* the values that normalized */
    const double var0[3] = {1.0, 2.0, 3.0};
    CHECK_OK(bnorm_bn_invstd(3, BNORM_DTYPE_F64, invstd, var0, 1e-5));
    CHECK_OK(bnorm_bn_backward(&d, dxref, NULL, NULL, dy, x, mean, invstd, w.data, NULL,
                               BNORM_BN_STATS_FIXED, 0));
    CHECK_OK(bnorm_bn_layer_backward(bn, &d, dx, dy, x));
    CHECK(memcmp(dx, dxref, sizeof dx) == 0);

    /* eval: fixed statistics, no update; train: batch statistics and update */
    bnorm_bn_layer_set_training(bn, 0);
    const double m_before = m[2];
    CHECK_OK(bnorm_bn_layer_forward(bn, &d, y, x));
    CHECK(m[2] == m_before && *(int64_t *)nbt.data == 1);
    bnorm_bn_layer_set_training(bn, 1);
    CHECK_OK(bnorm_bn_layer_forward(bn, &d, y, x));
    CHECK(m[2] != m_before && *(int64_t *)nbt.data == 2);
    bnorm_bn_layer_free(bn);
}

int main(void) {
    defaults(BNORM_DTYPE_F32);
    defaults(BNORM_DTYPE_F64);
    external_buffers_and_grads();
    modes();
    return check_report();
}
