/* src/nn/norm.c - batch norm in a model: the core's stateful layer over the model's arenas,
 * BatchNorm2d on (n, c, h, w) and BatchNorm1d on (n, features), fused with a following relu. */
#include "nn/layers.h"

static bnorm_desc desc_of(const bnorm__layer *l, int64_t n) {
    bnorm_desc d = {n, l->oc, l->oh * l->ow, BNORM_LAYOUT_CHANNELS_FIRST, BNORM_DTYPE_F32};
    return d;
}

static bnorm_status bn_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    (void)rng;
    const bnorm_desc d = desc_of(l, n);
    bnorm_bn_layer_set_training(l->bn, training);
    const bnorm_status st = bnorm_bn_layer_forward(l->bn, &d, l->out, l->in);
    return st == BNORM_WARN_NONFINITE ? BNORM_OK : st; /* the loss shows it; keep training data */
}

static bnorm_status bn_backward(bnorm__layer *l, int64_t n) {
    const bnorm_desc d = desc_of(l, n);
    return bnorm_bn_layer_backward(l->bn, &d, l->din, l->dout, l->in);
}

const bnorm__layer_ops bnorm__bn_ops = {"bn", bn_forward, bn_backward};
