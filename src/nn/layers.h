/* src/nn/layers.h - the layer objects a model is made of. Not installed.
 *
 * Every layer maps a batch of n images of shape (ic, ih, iw) to (oc, oh, ow), channels-first.
 * Forward reads `in` (the previous layer's `out`, or the model input) and writes `out`;
 * backward reads `dout`, writes `din` (skipped when NULL: the first layer) and accumulates (+=)
 * its parameter gradients. "Alias" layers (flatten, a relu fused into the bn before it) share
 * their input's buffers and do nothing. Buffers are allocated for max_batch images at model
 * creation; nothing allocates in a training step. */
#ifndef BNORM_NN_LAYERS_H
#define BNORM_NN_LAYERS_H

#include <stdint.h>

#include "bnorm/bn.h"
#include "bnorm/nn.h"

typedef struct bnorm__layer bnorm__layer;

typedef struct bnorm__layer_ops {
    const char *kind;
    bnorm_status (*forward)(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng);
    bnorm_status (*backward)(bnorm__layer *l, int64_t n);
} bnorm__layer_ops;

struct bnorm__layer {
    const bnorm__layer_ops *ops;
    int index;                      /* position in nn.Sequential */
    int64_t ic, ih, iw, oc, oh, ow; /* one image in and out */
    const float *in;
    float *out;
    float *din; /* NULL: no input gradient wanted */
    float *dout;
    int alias; /* out == in and dout == din: nothing to compute */
    /* parameters: views into the model's arenas (NULL when absent) */
    float *w, *b, *gw, *gb;
    int64_t nw, nb;
    /* kind-specific */
    int k, stride, pad, has_bias;
    double p; /* dropout probability */

    float *mask;        /* dropout: 0 or 1/(1-p) */
    float *col, *tmp;   /* conv: its own im2col matrices (ncol of them, then BNORM__CONV_GROUPS
                       dcol ones), and the model's shared scratch for BNORM__CONV_GROUPS partial
                       weight gradients */
    int ncol;           /* conv: forward's chunks of images, each with its own col */
    bnorm_bn_layer *bn; /* bn: the core layer over arena buffers */
    int fuse_relu;
    bnorm__layer *sub; /* res: conv1 bn1 conv2 bn2 [shortcut conv, bn] */
    int nsub;
};

/* conv backward cuts a batch into this many fixed groups of images, each with its own im2col
 * buffers and its own part of the weight gradient */
#define BNORM__CONV_GROUPS 8

/* how many col buffers a conv created now gets: BNORM__CONV_GROUPS, or one per thread when there
 * are more threads (forward's images need no fixed grouping) */
int bnorm__conv_col_buffers(void);

static inline int64_t bnorm__in_size(const bnorm__layer *l) {
    return l->ic * l->ih * l->iw;
}
static inline int64_t bnorm__out_size(const bnorm__layer *l) {
    return l->oc * l->oh * l->ow;
}

extern const bnorm__layer_ops bnorm__conv_ops, bnorm__linear_ops, bnorm__relu_ops,
    bnorm__maxpool_ops, bnorm__avgpool_ops, bnorm__dropout_ops, bnorm__bn_ops, bnorm__alias_ops,
    bnorm__copy_ops, bnorm__res_ops;

/* Softmax of K logits z, shifted by the largest for range: its index goes to *arg, and the
 * return value is sum_k exp(z_k - z_arg) (in double), the denominator of every probability. */
double bnorm__softmax_denominator(const float *z, int64_t K, int64_t *arg);

#endif /* BNORM_NN_LAYERS_H */
