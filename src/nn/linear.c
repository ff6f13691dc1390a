/* src/nn/linear.c - fully connected: y (n x out) = x (n x in) * W^T + b, OpenBLAS GEMMs.
 * backward: dW += dy^T x, db += sum over the batch of dy, dx = dy W. */
#include <cblas.h>

#include "nn/layers.h"

static bnorm_status linear_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    (void)training, (void)rng;
    const int64_t in = bnorm__in_size(l), out = l->oc;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)out, (int)in, 1.0f, l->in,
                (int)in, l->w, (int)in, 0.0f, l->out, (int)out);
    if (l->b)
        for (int64_t i = 0; i < n; i++)
            for (int64_t o = 0; o < out; o++)
                l->out[i * out + o] += l->b[o];
    return BNORM_OK;
}

static bnorm_status linear_backward(bnorm__layer *l, int64_t n) {
    const int64_t in = bnorm__in_size(l), out = l->oc;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)n, 1.0f, l->dout,
                (int)out, l->in, (int)in, 1.0f, l->gw, (int)in);
    if (l->gb)
        for (int64_t o = 0; o < out; o++) {
            double s = 0.0;
            for (int64_t i = 0; i < n; i++)
                s += l->dout[i * out + o];
            l->gb[o] += (float)s;
        }
    if (l->din)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)in, (int)out, 1.0f,
                    l->dout, (int)out, l->w, (int)in, 0.0f, l->din, (int)in);
    return BNORM_OK;
}

const bnorm__layer_ops bnorm__linear_ops = {"linear", linear_forward, linear_backward};
