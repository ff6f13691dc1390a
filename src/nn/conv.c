/* src/nn/conv.c - 2-d convolution: im2col over the whole batch, then one OpenBLAS GEMM.
 *   forward   tmp (oc x n*P) = W (oc x K) * col (K x n*P),  out[i][o][p] = tmp[o][i*P+p] + b[o]
 *   backward  dtmp = dout permuted;  dW += dtmp * col^T;  db += sum dtmp;
 *             dcol = W^T * dtmp;  din = col2im(dcol)
 * with K = ic*k*k, P = oh*ow, column i*P + p of col holding image i's patch at output p. */
#include <cblas.h>
#include <string.h>

#include "nn/layers.h"

/* col[(c*k + ky)*k + kx][i*P + oy*ow + ox] = in[i][c][oy*s - pad + ky][ox*s - pad + kx] (0 off
 * the image) */
static void im2col(const bnorm__layer *l, int64_t n, const float *in, float *col) {
    const int64_t P = l->oh * l->ow, NP = n * P, K = l->ic * l->k * l->k;
    const int64_t IH = l->ih, IW = l->iw, OH = l->oh, OW = l->ow, S = l->stride, PAD = l->pad;
    const int64_t KK = l->k, IC = l->ic;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t row = 0; row < K; row++)
        for (int64_t i = 0; i < n; i++) {
            const int64_t c = row / (KK * KK), ky = row / KK % KK, kx = row % KK;
            const float *img = in + (i * IC + c) * IH * IW;
            float *dst = col + row * NP + i * P;
            /* output columns whose input column x = ox*S - PAD + kx lies inside the image */
            int64_t ox0 = 0, ox1 = OW;
            while (ox0 < OW && ox0 * S - PAD + kx < 0)
                ox0++;
            while (ox1 > ox0 && (ox1 - 1) * S - PAD + kx >= IW)
                ox1--;
            for (int64_t oy = 0; oy < OH; oy++) {
                const int64_t y = oy * S - PAD + ky;
                float *d = dst + oy * OW;
                if (y < 0 || y >= IH) {
                    memset(d, 0, (size_t)OW * sizeof *d);
                    continue;
                }
                const float *src = img + y * IW - PAD + kx;
                for (int64_t ox = 0; ox < ox0; ox++)
                    d[ox] = 0.0f;
                if (S == 1)
                    memcpy(d + ox0, src + ox0, (size_t)(ox1 - ox0) * sizeof *d);
                else
                    for (int64_t ox = ox0; ox < ox1; ox++)
                        d[ox] = src[ox * S];
                for (int64_t ox = ox1; ox < OW; ox++)
                    d[ox] = 0.0f;
            }
        }
}

/* din = col2im(dcol): each image's patches summed back; parallel over images and channels, each
 * writing only its own plane, in a fixed order */
static void col2im(const bnorm__layer *l, int64_t n, const float *dcol, float *din) {
    const int64_t P = l->oh * l->ow, NP = n * P;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < l->ic; c++) {
            float *img = din + (i * l->ic + c) * l->ih * l->iw;
            memset(img, 0, (size_t)(l->ih * l->iw) * sizeof *img);
            for (int64_t ky = 0; ky < l->k; ky++)
                for (int64_t kx = 0; kx < l->k; kx++) {
                    const float *src = dcol + ((c * l->k + ky) * l->k + kx) * NP + i * P;
                    for (int64_t oy = 0; oy < l->oh; oy++) {
                        const int64_t y = oy * l->stride - l->pad + ky;
                        if (y < 0 || y >= l->ih) continue;
                        for (int64_t ox = 0; ox < l->ow; ox++) {
                            const int64_t x = ox * l->stride - l->pad + kx;
                            if (x >= 0 && x < l->iw) img[y * l->iw + x] += src[oy * l->ow + ox];
                        }
                    }
                }
        }
}

static bnorm_status conv_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    (void)training, (void)rng;
    const int64_t P = l->oh * l->ow, NP = n * P, K = l->ic * l->k * l->k;
    im2col(l, n, l->in, l->col);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)l->oc, (int)NP, (int)K, 1.0f, l->w,
                (int)K, l->col, (int)NP, 0.0f, l->tmp, (int)NP);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < l->oc; o++) {
            const float *src = l->tmp + o * NP + i * P;
            float *dst = l->out + (i * l->oc + o) * P;
            const float bias = l->b ? l->b[o] : 0.0f;
            for (int64_t p = 0; p < P; p++)
                dst[p] = src[p] + bias;
        }
    return BNORM_OK;
}

static bnorm_status conv_backward(bnorm__layer *l, int64_t n) {
    const int64_t P = l->oh * l->ow, NP = n * P, K = l->ic * l->k * l->k;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < l->oc; o++)
            memcpy(l->tmp + o * NP + i * P, l->dout + (i * l->oc + o) * P,
                   (size_t)P * sizeof(float));
    if (l->gb)
        for (int64_t o = 0; o < l->oc; o++) {
            double s = 0.0;
            for (int64_t j = 0; j < NP; j++)
                s += l->tmp[o * NP + j];
            l->gb[o] += (float)s;
        }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)l->oc, (int)K, (int)NP, 1.0f, l->tmp,
                (int)NP, l->col, (int)NP, 1.0f, l->gw, (int)K);
    if (l->din) {
        /* dcol reuses col: the forward's patches are no longer needed */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)NP, (int)l->oc, 1.0f,
                    l->w, (int)K, l->tmp, (int)NP, 0.0f, l->col, (int)NP);
        col2im(l, n, l->col, l->din);
    }
    return BNORM_OK;
}

const bnorm__layer_ops bnorm__conv_ops = {"conv", conv_forward, conv_backward};
