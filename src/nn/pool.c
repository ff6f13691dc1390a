/* src/nn/pool.c - max and average pooling (k x k windows, stride s, no padding; k = the whole
 * plane is global average pooling). Max pooling's backward sends each output's gradient to the
 * first window element equal to it (dX overwritten). 2x2 windows with stride 2 have their own
 * vectorized loops with the same results. */
#include <math.h>
#include <string.h>

#include "nn/layers.h"

/* ---- 2x2 windows, stride 2 (the common case): every input element belongs to at most one window,
 * so a row of outputs is two input rows, and the loops vectorize ---------------------------- */

/* the maximum of one window a b / c d, the earliest of equal maxima (as the general scan keeps),
 * NaN when any is NaN */
static inline float max4(float a, float b, float c, float d) {
    const float m1 = b > a ? b : a, m2 = d > c ? d : c, m = m2 > m1 ? m2 : m1;
    const int nan = (a != a) | (b != b) | (c != c) | (d != d);
    return nan ? NAN : m;
}

static void max2x2_row(const float *restrict r0, const float *restrict r1, float *restrict o,
                       int64_t ow) {
#pragma omp simd
    for (int64_t x = 0; x < ow; x++)
        o[x] = max4(r0[2 * x], r0[2 * x + 1], r1[2 * x], r1[2 * x + 1]);
}

/* the gradient g of one window goes to its first element equal to the maximum m (or to the first
 * NaN); the other three get 0 */
static void max2x2_grad_row(const float *restrict r0, const float *restrict r1,
                            const float *restrict m, const float *restrict g, float *restrict d0,
                            float *restrict d1, int64_t ow) {
#pragma omp simd
    for (int64_t x = 0; x < ow; x++) {
        const float a = r0[2 * x], b = r0[2 * x + 1], c = r1[2 * x]; /* else the last one */
        const float mx = m[x], gx = g[x];
        /* selects on comparisons, values first, stores after: GCC then vectorizes the loop */
        const _Bool nan = mx != mx;
        const _Bool ea = (a == mx) | (nan & (a != a)), eb = (b == mx) | (nan & (b != b));
        const _Bool ec = (c == mx) | (nan & (c != c));
        const float ga = ea ? gx : 0.0f, gb = !ea & eb ? gx : 0.0f;
        const float gc = !(ea | eb) & ec ? gx : 0.0f, ge = !(ea | eb | ec) ? gx : 0.0f;
        d0[2 * x] = ga;
        d0[2 * x + 1] = gb;
        d1[2 * x] = gc;
        d1[2 * x + 1] = ge;
    }
}

/* ---- one plane at a time: any window and stride, or the 2x2 loops; the layer's two passes -- */

/* one plane's maximum pooling, any window and stride */
static void max_plane(const bnorm__layer *l, const float *plane, float *o) {
    const int64_t IW = l->iw, OH = l->oh, OW = l->ow, S = l->stride;
    const int K = l->k;
    for (int64_t oy = 0; oy < OH; oy++)
        for (int64_t ox = 0; ox < OW; ox++) {
            const float *win = plane + oy * S * IW + ox * S;
            float m = win[0];
            int nan = 0;
            for (int ky = 0; ky < K; ky++)
                for (int kx = 0; kx < K; kx++) {
                    const float v = win[ky * IW + kx];
                    /* `v > m ? v : m` is exactly maxss: no branch on a coin flip */
                    m = v > m ? v : m;
                    nan |= v != v;
                }
            o[oy * OW + ox] = nan ? NAN : m; /* NaN propagates, like torch */
        }
}

/* one plane's dX (overwritten): each output's gradient goes to the first window element equal to
 * it (the one forward's scan kept: the first maximum), or to the first NaN */
static void max_grad_plane(const bnorm__layer *l, const float *plane, const float *o,
                           const float *g, float *d) {
    const int64_t IW = l->iw, OH = l->oh, OW = l->ow, S = l->stride;
    const int K = l->k;
    memset(d, 0, (size_t)(l->ih * IW) * sizeof *d);
    for (int64_t oy = 0; oy < OH; oy++)
        for (int64_t ox = 0; ox < OW; ox++) {
            const float m = o[oy * OW + ox];
            const int64_t base = oy * S * IW + ox * S;
            int64_t at = base;
            for (int q = K * K - 1; q >= 0; q--) { /* last match scanned = first */
                const int64_t p = base + (q / K) * IW + q % K;
                const float v = plane[p];
                at = (v == m || (m != m && v != v)) ? p : at;
            }
            d[at] += g[oy * OW + ox];
        }
}

static int is_2x2(const bnorm__layer *l) {
    return l->k == 2 && l->stride == 2;
}

static void max_plane_2x2(const bnorm__layer *l, const float *plane, float *o) {
    for (int64_t oy = 0; oy < l->oh; oy++)
        max2x2_row(plane + 2 * oy * l->iw, plane + (2 * oy + 1) * l->iw, o + oy * l->ow, l->ow);
}

static void max_grad_plane_2x2(const bnorm__layer *l, const float *plane, const float *o,
                               const float *g, float *d) {
    const int64_t IW = l->iw, OW = l->ow;
    if (l->ih != 2 * l->oh || IW != 2 * OW) /* an odd last row or column gets 0 */
        memset(d, 0, (size_t)(l->ih * IW) * sizeof *d);
    for (int64_t oy = 0; oy < l->oh; oy++) {
        const int64_t r = 2 * oy * IW;
        max2x2_grad_row(plane + r, plane + r + IW, o + oy * OW, g + oy * OW, d + r, d + r + IW, OW);
    }
}

static bnorm_status maxpool_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    (void)training, (void)rng;
    const int64_t C = l->oc, in_plane = l->ih * l->iw, out_plane = l->oh * l->ow;
    const int fast = is_2x2(l);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < C; c++) {
            const float *plane = l->in + (i * C + c) * in_plane;
            float *o = l->out + (i * C + c) * out_plane;
            if (fast)
                max_plane_2x2(l, plane, o);
            else
                max_plane(l, plane, o);
        }
    return BNORM_OK;
}

static bnorm_status maxpool_backward(bnorm__layer *l, int64_t n) {
    if (!l->din) return BNORM_OK;
    const int64_t C = l->oc, in_plane = l->ih * l->iw, out_plane = l->oh * l->ow;
    const int fast = is_2x2(l);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < C; c++) {
            const int64_t pi = (i * C + c) * in_plane, po = (i * C + c) * out_plane;
            if (fast)
                max_grad_plane_2x2(l, l->in + pi, l->out + po, l->dout + po, l->din + pi);
            else
                max_grad_plane(l, l->in + pi, l->out + po, l->dout + po, l->din + pi);
        }
    return BNORM_OK;
}

static bnorm_status avgpool_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    (void)training, (void)rng;
    const float inv = 1.0f / (float)(l->k * l->k); /* gap is avgpool with k = the plane's size */
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < l->oc; c++) {
            const float *plane = l->in + (i * l->ic + c) * l->ih * l->iw;
            for (int64_t oy = 0; oy < l->oh; oy++)
                for (int64_t ox = 0; ox < l->ow; ox++) {
                    double s = 0.0;
                    for (int ky = 0; ky < l->k; ky++)
                        for (int kx = 0; kx < l->k; kx++)
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
