/* src/nn/pool.c - max and average pooling (k x k windows, stride s, no padding; k = the whole
 * plane is global average pooling). Max pooling remembers the winning input of each output;
 * backward routes the gradient there (dX overwritten). */
#include <string.h>

#include "nn/layers.h"

static bnorm_status maxpool_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    (void)training, (void)rng;
    /* locals: the int32 argmax stores could otherwise alias the layer's integer fields */
    const float *in = l->in;
    float *out = l->out;
    int32_t *argmax = l->argmax;
    const int64_t C = l->oc, IH = l->ih, IW = l->iw, OH = l->oh, OW = l->ow, S = l->stride;
    const int K = l->k;
    const int64_t insz = l->ic * IH * IW;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < C; c++) {
            const int64_t plane = (i * C + c) * IH * IW;
            for (int64_t oy = 0; oy < OH; oy++)
                for (int64_t ox = 0; ox < OW; ox++) {
                    int64_t best = plane + oy * S * IW + ox * S;
                    float bv = in[best];
                    for (int ky = 0; ky < K; ky++)
                        for (int kx = 0; kx < K; kx++) {
                            const int64_t at = plane + (oy * S + ky) * IW + ox * S + kx;
                            const float v = in[at];
                            /* first maximum wins, NaN propagates like torch */
                            if (v > bv || v != v) best = at, bv = v;
                        }
                    const int64_t o = ((i * C + c) * OH + oy) * OW + ox;
                    out[o] = bv;
                    argmax[o] = (int32_t)(best - i * insz);
                }
        }
    return BNORM_OK;
}

static bnorm_status maxpool_backward(bnorm__layer *l, int64_t n) {
    if (!l->din) return BNORM_OK;
    const int64_t in = bnorm__in_size(l), out = bnorm__out_size(l);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float *d = l->din + i * in;
        memset(d, 0, (size_t)in * sizeof *d);
        for (int64_t o = 0; o < out; o++)
            d[l->argmax[i * out + o]] += l->dout[i * out + o];
    }
    return BNORM_OK;
}

static bnorm_status avgpool_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    (void)training, (void)rng;
    const float inv = 1.0f / (float)(l->k * l->k);
    const int kh = l->ih == l->k && l->oh == 1 ? (int)l->ih : l->k; /* gap: whole plane */
    const int kw = l->iw == l->k && l->ow == 1 ? (int)l->iw : l->k;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < l->oc; c++) {
            const float *plane = l->in + (i * l->ic + c) * l->ih * l->iw;
            for (int64_t oy = 0; oy < l->oh; oy++)
                for (int64_t ox = 0; ox < l->ow; ox++) {
                    double s = 0.0;
                    for (int ky = 0; ky < kh; ky++)
                        for (int kx = 0; kx < kw; kx++)
                            s += plane[(oy * l->stride + ky) * l->iw + ox * l->stride + kx];
                    l->out[((i * l->oc + c) * l->oh + oy) * l->ow + ox] = (float)s * inv;
                }
        }
    return BNORM_OK;
}

static bnorm_status avgpool_backward(bnorm__layer *l, int64_t n) {
    if (!l->din) return BNORM_OK;
    const float inv = 1.0f / (float)(l->k * l->k);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < l->oc; c++) {
            float *plane = l->din + (i * l->ic + c) * l->ih * l->iw;
            memset(plane, 0, (size_t)(l->ih * l->iw) * sizeof *plane);
            for (int64_t oy = 0; oy < l->oh; oy++)
                for (int64_t ox = 0; ox < l->ow; ox++) {
                    const float g = l->dout[((i * l->oc + c) * l->oh + oy) * l->ow + ox] * inv;
                    for (int ky = 0; ky < l->k; ky++)
                        for (int kx = 0; kx < l->k; kx++)
                            plane[(oy * l->stride + ky) * l->iw + ox * l->stride + kx] += g;
                }
        }
    return BNORM_OK;
}

const bnorm__layer_ops bnorm__maxpool_ops = {"maxpool", maxpool_forward, maxpool_backward};
const bnorm__layer_ops bnorm__avgpool_ops = {"avgpool", avgpool_forward, avgpool_backward};
