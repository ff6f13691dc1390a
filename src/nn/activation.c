/* src/nn/activation.c - relu, inverted dropout, and the alias layer (flatten; a relu fused into
 * the bn before it), which shares its input's buffers and computes nothing. */
#include <string.h>

#include "nn/layers.h"

static bnorm_status relu_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    (void)training, (void)rng;
    const int64_t total = n * bnorm__out_size(l);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < total; i++)
        l->out[i] = l->in[i] < 0.0f ? 0.0f : l->in[i];
    return BNORM_OK;
}

static bnorm_status relu_backward(bnorm__layer *l, int64_t n) {
    if (!l->din) return BNORM_OK;
    const int64_t total = n * bnorm__out_size(l);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < total; i++)
        l->din[i] = l->out[i] > 0.0f ? l->dout[i] : 0.0f;
    return BNORM_OK;
}

/* training: keep each value with probability 1-p, scaled by 1/(1-p); eval: identity */
static bnorm_status dropout_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    const int64_t total = n * bnorm__out_size(l);
    if (!training || l->p == 0.0) {
        for (int64_t i = 0; i < total; i++)
            l->mask[i] = 1.0f;
    } else {
        const float keep = (float)(1.0 / (1.0 - l->p));
        for (int64_t i = 0; i < total; i++)
            l->mask[i] = bnorm_rng_uniform(rng) >= l->p ? keep : 0.0f;
    }
    for (int64_t i = 0; i < total; i++)
        l->out[i] = l->in[i] * l->mask[i];
    return BNORM_OK;
}

static bnorm_status dropout_backward(bnorm__layer *l, int64_t n) {
    if (!l->din) return BNORM_OK;
    const int64_t total = n * bnorm__out_size(l);
    for (int64_t i = 0; i < total; i++)
        l->din[i] = l->dout[i] * l->mask[i];
    return BNORM_OK;
}

static bnorm_status alias_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    (void)l, (void)n, (void)training, (void)rng;
    return BNORM_OK;
}

static bnorm_status alias_backward(bnorm__layer *l, int64_t n) {
    (void)l, (void)n;
    return BNORM_OK;
}

const bnorm__layer_ops bnorm__relu_ops = {"relu", relu_forward, relu_backward};
const bnorm__layer_ops bnorm__dropout_ops = {"dropout", dropout_forward, dropout_backward};
const bnorm__layer_ops bnorm__alias_ops = {"alias", alias_forward, alias_backward};

/* a flatten that is the model's first layer owns its buffers: it copies */
static bnorm_status copy_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    (void)training, (void)rng;
    memcpy(l->out, l->in, (size_t)(n * bnorm__out_size(l)) * sizeof(float));
    return BNORM_OK;
}

static bnorm_status copy_backward(bnorm__layer *l, int64_t n) {
    if (l->din) memcpy(l->din, l->dout, (size_t)(n * bnorm__out_size(l)) * sizeof(float));
    return BNORM_OK;
}

const bnorm__layer_ops bnorm__copy_ops = {"copy", copy_forward, copy_backward};
