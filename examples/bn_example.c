/* examples/bn_example.c - batch norm in a training loop, end to end, on synthetic data.
 *
 * A (N, C, H, W) float32 activation whose channels have very different scales goes through a
 * BatchNorm2d layer with fused ReLU for a number of training steps (forward, backward, SGD on
 * weight and bias towards a target output), then the layer is switched to eval mode. It prints
 * what batch norm promises: per-channel outputs normalized in training, running statistics that
 * converge to the data's true mean and variance, and eval outputs that match training ones.
 *
 * Usage: bn_example [steps] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "bnorm.h"

#define N 32
#define C 4
#define H 8
#define W 8

static double normal(unsigned long long *s) { /* Box-Muller over a 64-bit LCG */
    double u[2];
    for (int i = 0; i < 2; i++) {
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        u[i] = ((*s >> 11) + 0.5) / 9007199254740992.0;
    }
    return sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

static int fail(const char *what) {
    fprintf(stderr, "bn_example: %s: %s\n", what, bnorm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const int steps = argc > 1 ? atoi(argv[1]) : 200;
    const double true_mean[C] = {-3.0, 0.0, 10.0, 250.0}, true_std[C] = {0.1, 1.0, 4.0, 50.0};
    static float x[N * C * H * W], y[N * C * H * W], dy[N * C * H * W], dx[N * C * H * W];
    const int64_t shape[4] = {N, C, H, W};
    bnorm_desc xd;
    bnorm_bn_layer *bn;
    bnorm_bn_options opt = bnorm_bn_options_default(C);
    opt.fuse_relu = 1; /* Conv2d -> BatchNorm2d -> ReLU, the last two in one pass */
    if (bnorm_desc_init(&xd, BNORM_DTYPE_F32, BNORM_LAYOUT_CHANNELS_FIRST, 4, shape))
        return fail("descriptor");
    if (bnorm_bn_layer_create(&bn, &opt, NULL)) return fail("create");
    bnorm_tensor_view w, b, gw, gb, rm, rv, nbt;
    bnorm_bn_layer_tensor(bn, "weight", &w);
    bnorm_bn_layer_tensor(bn, "bias", &b);
    bnorm_bn_layer_tensor(bn, "weight.grad", &gw);
    bnorm_bn_layer_tensor(bn, "bias.grad", &gb);
    bnorm_bn_layer_tensor(bn, "running_mean", &rm);
    bnorm_bn_layer_tensor(bn, "running_var", &rv);
    bnorm_bn_layer_tensor(bn, "num_batches_tracked", &nbt);

    unsigned long long seed = 42;
    const double target = 0.5, lr = 5.0; /* loss = mean((y - target)^2) */
    double loss = 0.0;
    printf("training BatchNorm2d(%d) + ReLU on (%d,%d,%d,%d) inputs for %d steps\n", C, N, C, H, W,
           steps);
    for (int step = 1; step <= steps; step++) {
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++)
                for (int s = 0; s < H * W; s++)
                    x[(n * C + c) * H * W + s] =
                        (float)(true_mean[c] + true_std[c] * normal(&seed));
        if (bnorm_bn_layer_forward(bn, &xd, y, x)) return fail("forward");
        loss = 0.0;
        for (int i = 0; i < N * C * H * W; i++) {
            loss += (y[i] - target) * (y[i] - target) / (N * C * H * W);
            dy[i] = (float)(2.0 * (y[i] - target) / (N * C * H * W));
        }
        bnorm_bn_layer_zero_grad(bn);
        if (bnorm_bn_layer_backward(bn, &xd, dx, dy, x)) return fail("backward");
        for (int c = 0; c < C; c++) { /* plain SGD on gamma and beta */
            ((float *)w.data)[c] -= (float)(lr * ((float *)gw.data)[c]);
            ((float *)b.data)[c] -= (float)(lr * ((float *)gb.data)[c]);
        }
        if (step == 1 || step % (steps / 4 > 0 ? steps / 4 : 1) == 0)
            printf("  step %4d  loss %.5f\n", step, loss);
    }
    printf("after %lld batches (momentum %.1f):\n", (long long)*(int64_t *)nbt.data, opt.momentum);
    printf("  channel   true mean  running_mean    true var  running_var   gamma    beta\n");
    for (int c = 0; c < C; c++)
        printf("  %7d %11.3f %13.3f %11.3f %12.3f %7.3f %7.3f\n", c, true_mean[c],
               ((float *)rm.data)[c], true_std[c] * true_std[c], ((float *)rv.data)[c],
               ((float *)w.data)[c], ((float *)b.data)[c]);

    bnorm_bn_layer_set_training(bn, 0); /* inference: the running statistics normalize */
    if (bnorm_bn_layer_forward(bn, &xd, y, x)) return fail("eval forward");
    double eval_loss = 0.0;
    for (int i = 0; i < N * C * H * W; i++)
        eval_loss += (y[i] - target) * (y[i] - target) / (N * C * H * W);
    printf("last training-batch loss %.5f, same batch in eval mode %.5f\n", loss, eval_loss);
    bnorm_bn_layer_free(bn);
    return 0;
}
