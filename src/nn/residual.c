/* src/nn/residual.c - the residual block res(c[, stride=s]) (torchvision's BasicBlock):
 *   out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
 * with shortcut = x, or bn(conv1x1(x)) when the stride or channel count changes. Its parts are
 * ordinary layers wired by the model builder (sub[0..3] main branch, sub[4..5] shortcut);
 * bn2's and the shortcut bn's dY are one buffer. */
#include "nn/layers.h"

static bnorm_status res_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    l->sub[0].in = l->in; /* the block's input is only known now for a model's first layer */
    if (l->nsub == 6) l->sub[4].in = l->in;
    for (int i = 0; i < l->nsub; i++) {
        bnorm_status st = l->sub[i].ops->forward(&l->sub[i], n, training, rng);
        if (st) return st;
    }
    const float *main_out = l->sub[3].out, *short_out = l->nsub == 6 ? l->sub[5].out : l->in;
    const int64_t total = n * bnorm__out_size(l);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < total; i++) {
        const float v = main_out[i] + short_out[i];
        l->out[i] = v < 0.0f ? 0.0f : v;
    }
    return BNORM_OK;
}

static bnorm_status res_backward(bnorm__layer *l, int64_t n) {
    const int64_t total = n * bnorm__out_size(l), in_total = n * bnorm__in_size(l);
    float *g = l->sub[3].dout; /* dY of both branches: dout through the final relu */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < total; i++)
        g[i] = l->out[i] > 0.0f ? l->dout[i] : 0.0f;
    l->sub[0].din = l->din; /* main branch writes dX, the shortcut adds to it */
    for (int i = 3; i >= 0; i--) {
        bnorm_status st = l->sub[i].ops->backward(&l->sub[i], n);
        if (st) return st;
    }
    if (l->nsub == 6) {
        for (int i = 5; i >= 4; i--) {
            bnorm_status st = l->sub[i].ops->backward(&l->sub[i], n);
            if (st) return st;
        }
        if (!l->din) return BNORM_OK;
        const float *ds = l->sub[4].din;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < in_total; i++)
            l->din[i] += ds[i];
    } else if (l->din) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < in_total; i++)
            l->din[i] += g[i];
    }
    return BNORM_OK;
}

const bnorm__layer_ops bnorm__res_ops = {"res", res_forward, res_backward};
