/* tests/test_errors.c - every public function's error paths: the status code, a detail message
 * that names the problem, and outputs left untouched. Allocation failures are injected through
 * the allocator hook at every allocation of layer create. */
#include <string.h>

#include "check.h"
#include "testutil.h"

#define SENTINEL 12345.0

static int has(const char *needle) {
    if (strstr(bnorm_last_error(), needle)) return 1;
    fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", bnorm_last_error(), needle);
    return 0;
}

static void fill_sentinel(double *p, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        p[i] = SENTINEL;
}

static int untouched(const double *p, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (p[i] != SENTINEL) return 0;
    return 1;
}

static void desc_errors(void) {
    bnorm_desc d;
    int64_t shape[5] = {2, 3, 4, 5, 6};
    CHECK_STATUS(bnorm_desc_init(NULL, BNORM_DTYPE_F32, 0, 4, shape), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_desc_init(&d, BNORM_DTYPE_F32, 0, 4, NULL), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_desc_init(&d, BNORM_DTYPE_F32, 0, 1, shape), BNORM_ERR_INVALID_SHAPE);
    CHECK_STATUS(bnorm_desc_init(&d, BNORM_DTYPE_F32, 0, 6, shape), BNORM_ERR_INVALID_SHAPE);
    CHECK(has("rank 6"));
    CHECK_STATUS(bnorm_desc_init(&d, BNORM_DTYPE_I64, 0, 4, shape), BNORM_ERR_INVALID_SHAPE);
    CHECK_STATUS(bnorm_desc_init(&d, BNORM_DTYPE_F32, (bnorm_layout)7, 4, shape),
                 BNORM_ERR_INVALID_SHAPE);
    int64_t neg[4] = {-1, 3, 4, 4}, c0[4] = {2, 0, 4, 4}, s0[4] = {2, 3, 0, 4};
    CHECK_STATUS(bnorm_desc_init(&d, BNORM_DTYPE_F32, 0, 4, neg), BNORM_ERR_INVALID_SHAPE);
    CHECK(has("N=-1"));
    CHECK_STATUS(bnorm_desc_init(&d, BNORM_DTYPE_F32, 0, 4, c0), BNORM_ERR_INVALID_SHAPE);
    CHECK(has("C=0"));
    CHECK_STATUS(bnorm_desc_init(&d, BNORM_DTYPE_F32, 0, 4, s0), BNORM_ERR_INVALID_SHAPE);
    int64_t huge[5] = {1 << 20, 1 << 20, 1 << 20, 1 << 20, 1};
    CHECK_STATUS(bnorm_desc_init(&d, BNORM_DTYPE_F32, 0, 5, huge), BNORM_ERR_SIZE_OVERFLOW);
    int64_t big[3] = {INT64_MAX / 2, 4, 1};
    CHECK_STATUS(bnorm_desc_init(&d, BNORM_DTYPE_F32, 0, 3, big), BNORM_ERR_SIZE_OVERFLOW);
    int64_t big_bytes[2] = {(int64_t)1 << 31, (int64_t)1 << 30}; /* 2^61 elements * 8 bytes */
    CHECK_STATUS(bnorm_desc_init(&d, BNORM_DTYPE_F64, 0, 2, big_bytes), BNORM_ERR_SIZE_OVERFLOW);
    CHECK_STATUS(bnorm_desc_check(NULL), BNORM_ERR_NULL_POINTER);
    bnorm_desc bad = {2, 3, 0, BNORM_LAYOUT_CHANNELS_FIRST, BNORM_DTYPE_F32};
    CHECK_STATUS(bnorm_desc_check(&bad), BNORM_ERR_INVALID_SHAPE);
    CHECK_INT_EQ(bnorm_desc_numel(&bad), 0);
    CHECK_INT_EQ(bnorm_desc_numel(NULL), 0);
    CHECK_OK(bnorm_desc_init(&d, BNORM_DTYPE_F32, BNORM_LAYOUT_CHANNELS_LAST, 5, shape));
    CHECK_INT_EQ(d.spatial, 120);
    CHECK_INT_EQ(bnorm_desc_numel(&d), 720);
}

static void functional_errors(void) {
    const int64_t shape[3] = {2, 3, 4};
    const bnorm_desc d = make_desc(BNORM_DTYPE_F64, BNORM_LAYOUT_CHANNELS_FIRST, 3, shape);
    double x[24], y[24], dy[24], w[3] = {1, 1, 1}, b[3] = {0, 0, 0};
    double mean[3], m2[3], save_m[3], save_i[3], rm[3], rv[3], sdy[3], sdyx[3], sdy2[3];
    rng_t r = {1};
    tfill_normal(&r, BNORM_DTYPE_F64, x, 24, 0, 1);
    tfill_normal(&r, BNORM_DTYPE_F64, dy, 24, 0, 1);
    int64_t nbt = 0;

    /* stats */
    bnorm_bn_moments m = {3, 0, mean, m2};
    CHECK_STATUS(bnorm_bn_stats(NULL, x, &m), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_stats(&d, NULL, &m), BNORM_ERR_NULL_POINTER);
    CHECK(has("x is NULL"));
    CHECK_STATUS(bnorm_bn_stats(&d, x, NULL), BNORM_ERR_NULL_POINTER);
    bnorm_bn_moments m_null = {3, 0, NULL, m2};
    CHECK_STATUS(bnorm_bn_stats(&d, x, &m_null), BNORM_ERR_NULL_POINTER);
    bnorm_bn_moments m_wrong = {4, 0, mean, m2};
    fill_sentinel(mean, 3);
    CHECK_STATUS(bnorm_bn_stats(&d, x, &m_wrong), BNORM_ERR_MISMATCH);
    CHECK(has("3 channels") && untouched(mean, 3));
    bnorm_desc bad = d;
    bad.c = 0;
    CHECK_STATUS(bnorm_bn_stats(&bad, x, &m), BNORM_ERR_INVALID_SHAPE);

    /* merge */
    CHECK_OK(bnorm_bn_stats(&d, x, &m));
    double om[4], om2[4];
    bnorm_bn_moments other = {4, 5, om, om2};
    CHECK_STATUS(bnorm_bn_moments_merge(NULL, &m), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_moments_merge(&m, NULL), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_moments_merge(&m, &other), BNORM_ERR_MISMATCH);
    other.channels = 3;
    other.count = -1;
    CHECK_STATUS(bnorm_bn_moments_merge(&m, &other), BNORM_ERR_INVALID_ARGUMENT);
    other.count = INT64_MAX;
    CHECK_STATUS(bnorm_bn_moments_merge(&m, &other), BNORM_ERR_INVALID_ARGUMENT);
    other.mean = NULL;
    CHECK_STATUS(bnorm_bn_moments_merge(&m, &other), BNORM_ERR_NULL_POINTER);

    /* finalize: nothing written on error */
    bnorm_bn_running run = {rm, rv, &nbt, 0.1};
    fill_sentinel(save_m, 3), fill_sentinel(save_i, 3), fill_sentinel(rm, 3), fill_sentinel(rv, 3);
    CHECK_STATUS(bnorm_bn_moments_finalize(NULL, BNORM_DTYPE_F64, 1e-5, save_m, save_i, &run),
                 BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_moments_finalize(&m, BNORM_DTYPE_F64, 0.0, save_m, save_i, &run),
                 BNORM_ERR_INVALID_ARGUMENT);
    CHECK(has("eps=0"));
    CHECK_STATUS(bnorm_bn_moments_finalize(&m, BNORM_DTYPE_F64, -1e-5, save_m, save_i, &run),
                 BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_bn_moments_finalize(&m, BNORM_DTYPE_F64, NAN, save_m, save_i, &run),
                 BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_bn_moments_finalize(&m, BNORM_DTYPE_I64, 1e-5, save_m, save_i, &run),
                 BNORM_ERR_INVALID_ARGUMENT);
    const double bad_momenta[4] = {-0.5, 1.5, NAN, INFINITY};
    for (int i = 0; i < 4; i++) {
        run.momentum = bad_momenta[i];
        CHECK_STATUS(bnorm_bn_moments_finalize(&m, BNORM_DTYPE_F64, 1e-5, save_m, save_i, &run),
                     BNORM_ERR_INVALID_ARGUMENT);
    }
    CHECK(has("momentum"));
    run.momentum = BNORM_BN_MOMENTUM_CUMULATIVE;
    run.num_batches_tracked = NULL;
    CHECK_STATUS(bnorm_bn_moments_finalize(&m, BNORM_DTYPE_F64, 1e-5, save_m, save_i, &run),
                 BNORM_ERR_NULL_POINTER);
    run.num_batches_tracked = &nbt;
    nbt = -3;
    CHECK_STATUS(bnorm_bn_moments_finalize(&m, BNORM_DTYPE_F64, 1e-5, save_m, save_i, &run),
                 BNORM_ERR_INVALID_ARGUMENT);
    nbt = 0;
    run.var = NULL;
    CHECK_STATUS(bnorm_bn_moments_finalize(&m, BNORM_DTYPE_F64, 1e-5, save_m, save_i, &run),
                 BNORM_ERR_NULL_POINTER);
    run.var = rv;
    bnorm_bn_moments one = m;
    one.count = 1;
    CHECK_STATUS(bnorm_bn_moments_finalize(&one, BNORM_DTYPE_F64, 1e-5, save_m, save_i, &run),
                 BNORM_ERR_BATCH_TOO_SMALL);
    CHECK(has("more than 1 value per channel"));
    bnorm_bn_moments negc = m;
    negc.count = -2;
    CHECK_STATUS(bnorm_bn_moments_finalize(&negc, BNORM_DTYPE_F64, 1e-5, save_m, save_i, &run),
                 BNORM_ERR_INVALID_SHAPE);
    CHECK(untouched(save_m, 3) && untouched(save_i, 3) && untouched(rm, 3) && untouched(rv, 3));
    CHECK_INT_EQ(nbt, 0);

    /* apply */
    CHECK_STATUS(bnorm_bn_apply(NULL, y, x, mean, save_i, w, b, 0), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_apply(&d, NULL, x, mean, save_i, w, b, 0), BNORM_ERR_NULL_POINTER);
    CHECK(has("y is NULL"));
    CHECK_STATUS(bnorm_bn_apply(&d, y, NULL, mean, save_i, w, b, 0), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_apply(&d, y, x, NULL, save_i, w, b, 0), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_apply(&d, y, x, mean, NULL, w, b, 0), BNORM_ERR_NULL_POINTER);
    fill_sentinel(y, 24);
    CHECK_STATUS(bnorm_bn_apply(&d, y, x, mean, save_i, w, b, 0x10), BNORM_ERR_INVALID_ARGUMENT);
    CHECK(has("flags") && untouched(y, 24));

    /* forward_train: one value per channel, bad eps/momentum, nulls; nothing written */
    const int64_t one_shape[4] = {1, 3, 1, 1};
    const bnorm_desc d1 = make_desc(BNORM_DTYPE_F64, BNORM_LAYOUT_CHANNELS_FIRST, 4, one_shape);
    run.momentum = 0.1;
    CHECK_STATUS(bnorm_bn_forward_train(&d1, y, save_m, save_i, x, w, b, &run, 1e-5, 0),
                 BNORM_ERR_BATCH_TOO_SMALL);
    CHECK(has("expected more than 1 value per channel"));
    CHECK_STATUS(bnorm_bn_forward_train(&d, y, save_m, save_i, x, w, b, &run, -1.0, 0),
                 BNORM_ERR_INVALID_ARGUMENT);
    run.momentum = 2.0;
    CHECK_STATUS(bnorm_bn_forward_train(&d, y, save_m, save_i, x, w, b, &run, 1e-5, 0),
                 BNORM_ERR_INVALID_ARGUMENT);
    run.momentum = 0.1;
    CHECK_STATUS(bnorm_bn_forward_train(&d, NULL, save_m, save_i, x, w, b, &run, 1e-5, 0),
                 BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_forward_train(&d, y, save_m, save_i, NULL, w, b, &run, 1e-5, 0),
                 BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_forward_train(&d, y, save_m, save_i, x, w, b, &run, 1e-5, 2u),
                 BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_bn_forward_train(NULL, y, save_m, save_i, x, w, b, &run, 1e-5, 0),
                 BNORM_ERR_NULL_POINTER);
    CHECK(untouched(y, 24) && untouched(save_m, 3) && untouched(save_i, 3));
    CHECK(untouched(rm, 3) && untouched(rv, 3) && nbt == 0);

    /* forward_infer and invstd */
    for (int c = 0; c < 3; c++)
        rm[c] = 0.0, rv[c] = 1.0;
    CHECK_STATUS(bnorm_bn_forward_infer(&d, y, x, w, b, NULL, rv, 1e-5, 0), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_forward_infer(&d, y, x, w, b, rm, NULL, 1e-5, 0), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_forward_infer(&d, NULL, x, w, b, rm, rv, 1e-5, 0),
                 BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_forward_infer(&d, y, x, w, b, rm, rv, 0.0, 0),
                 BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_bn_forward_infer(&d, y, x, w, b, rm, rv, 1e-5, 9u),
                 BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_bn_forward_infer(&bad, y, x, w, b, rm, rv, 1e-5, 0),
                 BNORM_ERR_INVALID_SHAPE);
    CHECK(untouched(y, 24));
    CHECK_STATUS(bnorm_bn_invstd(3, BNORM_DTYPE_F64, NULL, rv, 1e-5), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_invstd(3, BNORM_DTYPE_F64, save_i, NULL, 1e-5), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_invstd(0, BNORM_DTYPE_F64, save_i, rv, 1e-5), BNORM_ERR_INVALID_SHAPE);
    CHECK_STATUS(bnorm_bn_invstd(3, BNORM_DTYPE_F64, save_i, rv, 0.0), BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_bn_invstd(3, (bnorm_dtype)9, save_i, rv, 1e-5), BNORM_ERR_INVALID_ARGUMENT);
    CHECK(untouched(save_i, 3));

    /* backward */
    CHECK_OK(bnorm_bn_forward_train(&d, y, save_m, save_i, x, w, b, NULL, 1e-5, 0));
    double dx[24], dw[3], db[3];
    fill_sentinel(dx, 24), fill_sentinel(dw, 3), fill_sentinel(db, 3);
    fill_sentinel(sdy, 3), fill_sentinel(sdyx, 3), fill_sentinel(sdy2, 3);
    CHECK_STATUS(bnorm_bn_backward_reduce(NULL, sdy, sdyx, NULL, dy, x, save_m, save_i, w, b, 0),
                 BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_backward_reduce(&d, NULL, sdyx, NULL, dy, x, save_m, save_i, w, b, 0),
                 BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_backward_reduce(&d, sdy, sdyx, NULL, NULL, x, save_m, save_i, w, b, 0),
                 BNORM_ERR_NULL_POINTER);
    CHECK(has("dy is NULL"));
    CHECK_STATUS(bnorm_bn_backward_reduce(&d, sdy, sdyx, NULL, dy, x, NULL, save_i, w, b, 0),
                 BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_backward_reduce(&d, sdy, sdyx, sdy2, dy, x, save_m, save_i, w, b, 4u),
                 BNORM_ERR_INVALID_ARGUMENT);
    CHECK(untouched(sdy, 3) && untouched(sdyx, 3) && untouched(sdy2, 3));
    CHECK_OK(bnorm_bn_backward_reduce(&d, sdy, sdyx, NULL, dy, x, save_m, save_i, w, b, 0));
    CHECK_STATUS(bnorm_bn_backward_apply(&d, NULL, dy, x, save_m, save_i, w, b, sdy, sdyx, NULL, 8,
                                         BNORM_BN_STATS_BATCH, 0),
                 BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_backward_apply(&d, dx, dy, x, save_m, save_i, w, b, NULL, sdyx, NULL, 8,
                                         BNORM_BN_STATS_BATCH, 0),
                 BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_backward_apply(&d, dx, dy, x, save_m, save_i, w, b, sdy, sdyx, NULL, 7,
                                         BNORM_BN_STATS_BATCH, 0),
                 BNORM_ERR_INVALID_ARGUMENT);
    CHECK(has("count=7"));
    CHECK_STATUS(bnorm_bn_backward_apply(&d, dx, dy, x, save_m, save_i, w, b, sdy, sdyx, NULL, 8,
                                         (bnorm_bn_stats_source)5, 0),
                 BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_bn_backward_apply(&d, dx, NULL, x, save_m, save_i, w, b, sdy, sdyx, NULL, 8,
                                         BNORM_BN_STATS_BATCH, 0),
                 BNORM_ERR_NULL_POINTER);
    CHECK(untouched(dx, 24));
    /* fixed statistics need no sums */
    CHECK_OK(bnorm_bn_backward_apply(&d, dx, dy, x, save_m, save_i, w, b, NULL, NULL, NULL, 0,
                                     BNORM_BN_STATS_FIXED, 0));
    fill_sentinel(dx, 24);
    CHECK_STATUS(
        bnorm_bn_backward(NULL, dx, dw, db, dy, x, save_m, save_i, w, b, BNORM_BN_STATS_BATCH, 0),
        BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(
        bnorm_bn_backward(&d, dx, dw, db, dy, NULL, save_m, save_i, w, b, BNORM_BN_STATS_BATCH, 0),
        BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(
        bnorm_bn_backward(&d, dx, dw, db, dy, x, save_m, NULL, w, b, BNORM_BN_STATS_BATCH, 0),
        BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_backward(&d, dx, dw, db, dy, x, save_m, save_i, w, b,
                                   (bnorm_bn_stats_source)-1, 0),
                 BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(
        bnorm_bn_backward(&d, dx, dw, db, dy, x, save_m, save_i, w, b, BNORM_BN_STATS_BATCH, 3u),
        BNORM_ERR_INVALID_ARGUMENT);
    CHECK(untouched(dx, 24) && untouched(dw, 3) && untouched(db, 3));
}

/* ---- the layer ---------------------------------------------------------------------------- */

static int alloc_calls, alloc_fail_at, live_allocs;

static void *failing_alloc(void *ctx, size_t size) {
    (void)ctx;
    if (++alloc_calls == alloc_fail_at) return NULL;
    live_allocs++;
    return malloc(size);
}

static void counting_free(void *ctx, void *p) {
    (void)ctx;
    live_allocs--;
    free(p);
}

static void layer_errors(void) {
    bnorm_bn_layer *bn = (bnorm_bn_layer *)&bn; /* create must reset it to NULL on failure */
    bnorm_bn_options opt = bnorm_bn_options_default(16);
    CHECK_STATUS(bnorm_bn_layer_create(NULL, &opt, NULL), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_layer_create(&bn, NULL, NULL), BNORM_ERR_NULL_POINTER);
    CHECK(bn == NULL);
    opt.num_features = 0;
    CHECK_STATUS(bnorm_bn_layer_create(&bn, &opt, NULL), BNORM_ERR_INVALID_SHAPE);
    opt.num_features = INT64_MAX;
    CHECK_STATUS(bnorm_bn_layer_create(&bn, &opt, NULL), BNORM_ERR_SIZE_OVERFLOW);
    opt = bnorm_bn_options_default(16);
    opt.eps = 0;
    CHECK_STATUS(bnorm_bn_layer_create(&bn, &opt, NULL), BNORM_ERR_INVALID_ARGUMENT);
    opt = bnorm_bn_options_default(16);
    opt.momentum = 1.01;
    CHECK_STATUS(bnorm_bn_layer_create(&bn, &opt, NULL), BNORM_ERR_INVALID_ARGUMENT);
    opt = bnorm_bn_options_default(16);
    opt.dtype = BNORM_DTYPE_I64;
    CHECK_STATUS(bnorm_bn_layer_create(&bn, &opt, NULL), BNORM_ERR_INVALID_ARGUMENT);
    CHECK(bn == NULL);

    /* allocation failure at each allocation create makes: clean error, nothing leaked */
    opt = bnorm_bn_options_default(16);
    bnorm_set_allocator(failing_alloc, counting_free, NULL);
    alloc_fail_at = 0, alloc_calls = 0;
    CHECK_OK(bnorm_bn_layer_create(&bn, &opt, NULL));
    const int needed = alloc_calls;
    bnorm_bn_layer_free(bn);
    CHECK(needed >= 1);
    CHECK_INT_EQ(live_allocs, 0);
    for (int k = 1; k <= needed; k++) {
        alloc_calls = 0, alloc_fail_at = k;
        bn = (bnorm_bn_layer *)&bn;
        CHECK_STATUS(bnorm_bn_layer_create(&bn, &opt, NULL), BNORM_ERR_OUT_OF_MEMORY);
        CHECK(bn == NULL);
        CHECK_INT_EQ(live_allocs, 0);
    }
    bnorm_set_allocator(NULL, NULL, NULL);

    CHECK_OK(bnorm_bn_layer_create(&bn, &opt, NULL));
    const int64_t s3[4] = {2, 3, 4, 4}, s16[4] = {2, 16, 4, 4}, s1[4] = {1, 16, 1, 1};
    const bnorm_desc d3 = make_desc(BNORM_DTYPE_F32, 0, 4, s3);
    const bnorm_desc d16 = make_desc(BNORM_DTYPE_F32, 0, 4, s16);
    const bnorm_desc d1 = make_desc(BNORM_DTYPE_F32, 0, 4, s1);
    const bnorm_desc d64 = make_desc(BNORM_DTYPE_F64, 0, 4, s16);
    float x[512], y[512], dx[512];
    rng_t r = {2};
    tfill_normal(&r, BNORM_DTYPE_F32, x, 512, 0, 1);
    CHECK_STATUS(bnorm_bn_layer_forward(NULL, &d16, y, x), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_layer_forward(bn, NULL, y, x), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_layer_forward(bn, &d16, NULL, x), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_layer_forward(bn, &d16, y, NULL), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_layer_forward(bn, &d3, y, x), BNORM_ERR_MISMATCH);
    CHECK(has("input has 3 channels, layer expects 16"));
    CHECK_STATUS(bnorm_bn_layer_forward(bn, &d64, y, x), BNORM_ERR_MISMATCH);
    CHECK(has("f64"));
    CHECK_STATUS(bnorm_bn_layer_forward(bn, &d1, y, x), BNORM_ERR_BATCH_TOO_SMALL);
    CHECK(has("more than 1 value per channel"));
    bnorm_tensor_view nbt;
    CHECK_OK(bnorm_bn_layer_tensor(bn, "num_batches_tracked", &nbt));
    CHECK_INT_EQ(*(int64_t *)nbt.data, 0);
    CHECK_STATUS(bnorm_bn_layer_backward(bn, &d16, dx, y, x), BNORM_ERR_INVALID_ARGUMENT);
    CHECK(has("before any forward"));
    /* eval mode accepts one value per channel (running statistics normalize) */
    bnorm_bn_layer_set_training(bn, 0);
    CHECK_OK(bnorm_bn_layer_forward(bn, &d1, y, x));
    bnorm_bn_layer_set_training(bn, 1);
    CHECK_OK(bnorm_bn_layer_forward(bn, &d16, y, x));
    CHECK_STATUS(bnorm_bn_layer_backward(NULL, &d16, dx, y, x), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_layer_backward(bn, &d16, dx, NULL, x), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_layer_backward(bn, &d16, dx, y, NULL), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_layer_backward(bn, &d3, dx, y, x), BNORM_ERR_MISMATCH);
    bnorm_desc other = d16;
    other.n = 1;
    CHECK_STATUS(bnorm_bn_layer_backward(bn, &other, dx, y, x), BNORM_ERR_INVALID_ARGUMENT);
    CHECK(has("differs from the last forward"));
    /* a failed forward leaves no stale state for backward */
    CHECK_STATUS(bnorm_bn_layer_forward(bn, &d1, y, x), BNORM_ERR_BATCH_TOO_SMALL);
    CHECK_STATUS(bnorm_bn_layer_backward(bn, &d16, dx, y, x), BNORM_ERR_INVALID_ARGUMENT);
    /* mode and tensor access */
    CHECK_STATUS(bnorm_bn_layer_set_mode(NULL, BNORM_BN_STATS_BATCH, 1), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_layer_set_mode(bn, (bnorm_bn_stats_source)3, 1),
                 BNORM_ERR_INVALID_ARGUMENT);
    bnorm_tensor_view v;
    CHECK_STATUS(bnorm_bn_layer_tensor(NULL, "weight", &v), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_layer_tensor(bn, NULL, &v), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_layer_tensor(bn, "weight", NULL), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_bn_layer_tensor(bn, "gamma", &v), BNORM_ERR_INVALID_ARGUMENT);
    CHECK(has("unknown tensor name 'gamma'"));
    CHECK(bnorm_bn_layer_options(NULL) == NULL);
    bnorm_bn_layer_free(bn);

    /* a layer without running statistics or affine parameters */
    opt.track_running_stats = 0;
    opt.affine = 0;
    CHECK_OK(bnorm_bn_layer_create(&bn, &opt, NULL));
    CHECK_STATUS(bnorm_bn_layer_set_mode(bn, BNORM_BN_STATS_FIXED, 0), BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_bn_layer_set_mode(bn, BNORM_BN_STATS_BATCH, 1), BNORM_ERR_INVALID_ARGUMENT);
    CHECK(has("track_running_stats=0"));
    CHECK_STATUS(bnorm_bn_layer_tensor(bn, "running_var", &v), BNORM_ERR_INVALID_ARGUMENT);
    CHECK(has("track_running_stats"));
    CHECK_STATUS(bnorm_bn_layer_tensor(bn, "weight", &v), BNORM_ERR_INVALID_ARGUMENT);
    CHECK(has("affine"));
    bnorm_bn_layer_set_training(bn, 0); /* eval without running stats: batch statistics */
    CHECK_STATUS(bnorm_bn_layer_forward(bn, &d1, y, x), BNORM_ERR_BATCH_TOO_SMALL);
    bnorm_bn_layer_free(bn);

    /* no-ops on NULL */
    bnorm_bn_layer_free(NULL);
    bnorm_bn_layer_set_training(NULL, 1);
    bnorm_bn_layer_zero_grad(NULL);
    bnorm_bn_layer_reset_running_stats(NULL);
}

int main(void) {
    desc_errors();
    functional_errors();
    layer_errors();
    return check_report();
}
