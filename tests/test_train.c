/* tests/test_train.c - SGD and schedules against hand-computed values, and end-to-end training
 * on synthetic data: the loss must fall and accuracy must beat chance by far, with and without
 * batch norm; evaluation runs in eval mode, and with flip test-time augmentation averages each
 * image's probabilities with its mirror image's. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "nn_testutil.h"

static void sgd_by_hand(void) {
    bnorm_model_options mo = bnorm_model_options_default();
    mo.in_h = mo.in_w = 1, mo.max_batch = 2;
    bnorm_model *m;
    CHECK_OK(bnorm_model_create(&m, "flatten linear(2) bn linear(2)", &mo));
    bnorm_named_tensor w, bw; /* 0.weight (decays), 1.weight (bn: exempt) */
    bnorm_model_tensor(m, 0, &w);
    bnorm_model_tensor(m, 1, &bw);
    float *p = w.data, *bp = bw.data;
    p[0] = 1.0f, w.grad[0] = 0.5f, bp[0] = 2.0f, bw.grad[0] = 0.25f;
    bnorm_sgd s = {0.9, 0, 0.1, 0};
    CHECK_OK(bnorm_sgd_step(m, &s, 0.1));
    /* g = 0.5 + 0.1*1 = 0.6; buf = 0.6; p = 1 - 0.06 */
    CHECK_NEAR(p[0], 0.94, 1e-6);
    CHECK_NEAR(w.momentum[0], 0.6, 1e-6);
    CHECK_NEAR(bp[0], 2.0 - 0.025, 1e-6); /* no decay on bn parameters */
    CHECK_OK(bnorm_sgd_step(m, &s, 0.1));
    /* g = 0.5 + 0.094 = 0.594; buf = 0.54 + 0.594 = 1.134; p = 0.94 - 0.1134 */
    CHECK_NEAR(p[0], 0.94 - 0.1134, 1e-6);
    s.nesterov = 1, s.decay_bn_bias = 1;
    const float before = bp[0], buf = bw.momentum[0];
    CHECK_OK(bnorm_sgd_step(m, &s, 0.1));
    const double g = 0.25 + 0.1 * before, nb = 0.9 * buf + g;
    CHECK_NEAR(bp[0], before - 0.1 * (g + 0.9 * nb), 1e-6);
    s.momentum = 1.5;
    CHECK_STATUS(bnorm_sgd_step(m, &s, 0.1), BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_sgd_step(NULL, &s, 0.1), BNORM_ERR_NULL_POINTER);
    bnorm_model_free(m);

    bnorm_schedule sc = {BNORM_SCHEDULE_STEP, 2, 0.1, 0};
    CHECK_NEAR(bnorm_schedule_lr(&sc, 1.0, 1.9, 10), 1.0, 1e-12);
    CHECK_NEAR(bnorm_schedule_lr(&sc, 1.0, 4.0, 10), 0.01, 1e-12);
    sc.kind = BNORM_SCHEDULE_COSINE;
    CHECK_NEAR(bnorm_schedule_lr(&sc, 1.0, 5.0, 10), 0.5, 1e-12);
    CHECK_NEAR(bnorm_schedule_lr(&sc, 1.0, 10.0, 10), 0.0, 1e-12);
    sc.kind = BNORM_SCHEDULE_CONSTANT, sc.warmup_epochs = 2;
    CHECK_NEAR(bnorm_schedule_lr(&sc, 1.0, 0.0, 10), 0.1, 1e-12);
    CHECK_NEAR(bnorm_schedule_lr(&sc, 1.0, 1.0, 10), 0.55, 1e-12);
    CHECK_NEAR(bnorm_schedule_lr(&sc, 1.0, 3.0, 10), 1.0, 1e-12);
}

static void train(int no_bn) {
    synth_data sd, st;
    synth_make(&sd, 600, 10, 6, 1);
    synth_make(&st, 120, 10, 6, 2);
    bnorm_model_options mo = bnorm_model_options_default();
    mo.in_h = mo.in_w = 10, mo.max_batch = 32, mo.no_bn = no_bn;
    bnorm_model *m;
    CHECK_OK(bnorm_model_create(&m, "conv(8,3,pad=1) bn relu maxpool(2) flatten linear(6)", &mo));
    bnorm_train_config tc = bnorm_train_config_default();
    tc.batch = 32, tc.epochs = 4, tc.lr = 0.05;
    bnorm_dataset_pixel_stats(&sd.ds, &tc.mean, &tc.std);
    double first = 0, last = 0, acc = 0, loss = 0;
    for (int e = 0; e < tc.epochs; e++) {
        bnorm_epoch_stats es;
        CHECK_OK(bnorm_train_epoch(m, &sd.ds, &tc, e, &es, NULL, NULL));
        if (e == 0) first = es.loss;
        last = es.loss;
        CHECK(es.images_per_sec > 0 && es.lr >= 0);
    }
    CHECK_OK(bnorm_evaluate(m, &st.ds, tc.mean, tc.std, &loss, &acc));
    if (!CHECK(last < 0.5 * first && acc > 0.9))
        fprintf(stderr, "  no_bn=%d: loss %.4f -> %.4f, test accuracy %.3f\n", no_bn, first, last,
                acc);
    /* the data must fit the model */
    synth_data wrong;
    synth_make(&wrong, 10, 8, 6, 3);
    bnorm_epoch_stats es;
    CHECK_STATUS(bnorm_train_epoch(m, &wrong.ds, &tc, 0, &es, NULL, NULL), BNORM_ERR_MISMATCH);
    CHECK_STATUS(bnorm_evaluate(m, &wrong.ds, 0.0, 1.0, NULL, NULL), BNORM_ERR_MISMATCH);
    CHECK_STATUS(bnorm_train_epoch(NULL, &sd.ds, &tc, 0, &es, NULL, NULL), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_train_epoch(m, &sd.ds, &tc, 0, NULL, NULL, NULL), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_evaluate(m, NULL, 0.0, 1.0, NULL, NULL), BNORM_ERR_NULL_POINTER);
    tc.batch = 1;
    CHECK_STATUS(bnorm_train_epoch(m, &sd.ds, &tc, 0, &es, NULL, NULL), BNORM_ERR_INVALID_ARGUMENT);
    synth_free(&wrong);
    bnorm_model_free(m);
    synth_free(&sd), synth_free(&st);
}

/* bnorm_evaluate_flip against the probabilities of each image and its mirror image computed here
 * from bnorm_model_forward; and it must differ from the plain evaluation */
static void evaluate_flip_by_hand(void) {
    synth_data sd;
    synth_make(&sd, 40, 10, 6, 5);
    bnorm_model_options mo = bnorm_model_options_default();
    mo.in_h = mo.in_w = 10, mo.max_batch = 16;
    bnorm_model *m;
    CHECK_OK(bnorm_model_create(&m, "conv(4,3,pad=1) bn relu flatten linear(6)", &mo));
    const double mean = 0.4, std = 0.3;
    double loss = 0.0, want_loss = 0.0, acc, plain_loss, plain_acc;
    int64_t right = 0;
    float x[10 * 10], xm[10 * 10];
    for (int64_t i = 0; i < sd.ds.count; i++) {
        int32_t y;
        const float *z;
        double p[6] = {0};
        bnorm_batch_fill(x, &y, &sd.ds, &i, 1, mean, std, NULL, NULL);
        for (int r = 0; r < 10; r++)
            for (int c = 0; c < 10; c++)
                xm[r * 10 + c] = x[r * 10 + 9 - c];
        for (int pass = 0; pass < 2; pass++) {
            CHECK_OK(bnorm_model_forward(m, pass ? xm : x, 1, 0, NULL, &z));
            double mx = z[0], se = 0.0;
            for (int k = 1; k < 6; k++)
                mx = z[k] > mx ? z[k] : mx;
            for (int k = 0; k < 6; k++)
                se += exp(z[k] - mx);
            for (int k = 0; k < 6; k++)
                p[k] += exp(z[k] - mx) / se / 2.0;
        }
        int arg = 0;
        for (int k = 1; k < 6; k++)
            if (p[k] > p[arg]) arg = k;
        right += arg == y;
        want_loss -= log(p[y]) / (double)sd.ds.count;
    }
    CHECK_OK(bnorm_evaluate_flip(m, &sd.ds, mean, std, &loss, &acc));
    /* one image at a time here, 16 in the library: OpenBLAS may sum the logits in another order */
    CHECK_NEAR(loss, want_loss, 1e-6 * want_loss);
    CHECK_NEAR(acc, (double)right / (double)sd.ds.count, 1e-12);
    CHECK_OK(bnorm_evaluate(m, &sd.ds, mean, std, &plain_loss, &plain_acc));
    if (!CHECK(fabs(plain_loss - loss) > 1e-3 * loss)) /* the mirror images were used */
        fprintf(stderr, "  plain loss %.9f, with flips %.9f\n", plain_loss, loss);
    CHECK_STATUS(bnorm_evaluate_flip(NULL, &sd.ds, mean, std, NULL, NULL), BNORM_ERR_NULL_POINTER);
    bnorm_model_free(m);
    synth_free(&sd);
}

int main(void) {
    sgd_by_hand();
    evaluate_flip_by_hand();
    train(0);
    train(1);
    return check_report();
}
