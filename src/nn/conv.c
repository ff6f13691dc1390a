/* src/nn/conv.c - 2-d convolution: per image, im2col then one OpenBLAS GEMM.
 *   forward   col_i (K x P) = im2col(in_i);  out_i (oc x P) = W (oc x K) * col_i + b
 *   backward  col_i again;  dW += sum_i dout_i * col_i^T;  db += sum dout;
 *             dcol_i = W^T * dout_i;  din_i = col2im(dcol_i)
 * with K = ic*k*k, P = oh*ow. Working image by image keeps col_i (at most a few hundred KB) in
 * the core's cache between im2col and the GEMMs, and the GEMM writes the NCHW output directly.
 * Backward builds col_i again rather than keeping every image's from forward: a batch of them
 * (29 MB for the source network's second conv) would go to memory and back, which costs about
 * what the copy does, and the layer then needs only a few buffers, not a batch of them.
 * The batch is cut into chunks of images, each with its own col buffer (and in backward a dcol
 * buffer), run on the OpenMP threads with single-threaded GEMMs (OpenBLAS's OpenMP build does
 * that inside a parallel region); batches smaller than the thread count go image by image with
 * threaded GEMMs instead. Forward's chunks are as many as the layer has col buffers (the larger
 * of BNORM__CONV_GROUPS and the thread count when it was created). Backward's are
 * BNORM__CONV_GROUPS fixed groups: dW sums each group's part (in the model's shared scratch),
 * merged in group order, so its summation order does not depend on how the images are spread
 * over threads; backward keeps at most BNORM__CONV_GROUPS threads busy. */
#include <cblas.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "nn/layers.h"

int bnorm__conv_col_buffers(void) {
#ifdef _OPENMP
    const int t = omp_get_max_threads();
    return t > BNORM__CONV_GROUPS ? t : BNORM__CONV_GROUPS;
#else
    return BNORM__CONV_GROUPS;
#endif
}

static int64_t kdim(const bnorm__layer *l) {
    return l->ic * l->k * l->k;
}

static int64_t pdim(const bnorm__layer *l) {
    return l->oh * l->ow;
}

/* run the image loops on threads (each GEMM then single-threaded)? If not, the loops must not
 * sit in an `if (0)` parallel region: OpenBLAS's threads would then be a nested team, which
 * libgomp starts afresh beside the idle one (src/bn/fast.c, for_channels). */
static int per_image_threads(int64_t n) {
#ifdef _OPENMP
    return n >= omp_get_max_threads();
#else
    (void)n;
    return 0;
#endif
}

/* col[(c*k + ky)*k + kx][oy*ow + ox] = img[c][oy*s - pad + ky][ox*s - pad + kx] (0 off the
 * image), for one image */
static void im2col(const bnorm__layer *l, const float *img, float *col) {
    const int64_t P = pdim(l), K = kdim(l);
    const int64_t IH = l->ih, IW = l->iw, OH = l->oh, OW = l->ow, S = l->stride, PAD = l->pad;
    const int64_t KK = l->k;
    for (int64_t row = 0; row < K; row++) {
        const int64_t c = row / (KK * KK), ky = row / KK % KK, kx = row % KK;
        const float *plane = img + c * IH * IW;
        float *dst = col + row * P;
        /* output columns whose input column x = ox*S - PAD + kx lies inside the image */
        int64_t ox0 = 0, ox1 = OW;
        while (ox0 < OW && ox0 * S - PAD + kx < 0)
            ox0++;
        while (ox1 > ox0 && (ox1 - 1) * S - PAD + kx >= IW)
            ox1--;
        /* rows are short (ow floats): plain loops, not memcpy/memset calls */
        for (int64_t oy = 0; oy < OH; oy++) {
            const int64_t y = oy * S - PAD + ky;
            float *restrict d = dst + oy * OW;
            if (y < 0 || y >= IH) {
                for (int64_t ox = 0; ox < OW; ox++)
                    d[ox] = 0.0f;
                continue;
            }
            const float *restrict src = plane + y * IW - PAD + kx;
            for (int64_t ox = 0; ox < ox0; ox++)
                d[ox] = 0.0f;
            if (S == 1)
#pragma omp simd
                for (int64_t ox = ox0; ox < ox1; ox++)
                    d[ox] = src[ox];
            else
                for (int64_t ox = ox0; ox < ox1; ox++)
                    d[ox] = src[ox * S];
            for (int64_t ox = ox1; ox < OW; ox++)
                d[ox] = 0.0f;
        }
    }
}

/* ---- stride 1, output the input's size ("same": 2*pad = k - 1) --------------------------
 * A patch row (c, ky, kx) is then the plane shifted by dy = ky - pad rows and dx = kx - pad
 * columns: one contiguous run of the plane, except the |dx| columns at each row's edge that fall
 * off the image (and wrap to the neighbouring row in the run). So a row is a copy and a few
 * zeros, and the runs are long enough (about a whole plane) for memcpy. */

static int same_stride1(const bnorm__layer *l) {
    return l->stride == 1 && l->oh == l->ih && l->ow == l->iw;
}

/* patch row (ky, kx) of a "same" conv: source p + shift for the positions p in [p0, p1) (rows
 * with oy + dy inside the image, less the wrapped element at each end of the run) */
typedef struct {
    int64_t shift, p0, p1, dx;
} same_run;

static same_run same_run_of(const bnorm__layer *l, int64_t ky, int64_t kx) {
    const int64_t H = l->ih, W = l->iw, dy = ky - l->pad, dx = kx - l->pad;
    same_run r = {dy * W + dx, (dy < 0 ? -dy : 0) * W + (dx < 0 ? -dx : 0),
                  (dy > 0 ? H - dy : H) * W - (dx > 0 ? dx : 0), dx};
    if (r.p1 < r.p0) r.p1 = r.p0;
    return r;
}

/* zero, inside the run, the columns whose source wrapped around a row: ox < -dx or ox >= W - dx
 * (one column at a time: a strided store each row) */
static void same_zero_edges(int64_t W, same_run r, float *row) {
    const int64_t first = r.dx < 0 ? 0 : W - r.dx, count = r.dx < 0 ? -r.dx : r.dx;
    for (int64_t ox = first; ox < first + count; ox++) {
        int64_t q = r.p0 / W * W + ox;
        if (q < r.p0) q += W;
        for (; q < r.p1; q += W)
            row[q] = 0.0f;
    }
}

/* one image's patch matrix. Only the runs are written: what lies outside them is always 0, so
 * the buffer must hold zeros there from the start (the model's arena is zeroed at creation, and
 * col buffers hold nothing else) */
static void im2col_same(const bnorm__layer *l, const float *img, float *col) {
    const int64_t P = pdim(l), KK = l->k;
    for (int64_t ky = 0; ky < KK; ky++)
        for (int64_t kx = 0; kx < KK; kx++) {
            const same_run r = same_run_of(l, ky, kx);
            if (r.p1 == r.p0) continue; /* a tap that never lands inside a small image */
            for (int64_t c = 0; c < l->ic; c++) {
                float *dst = col + ((c * KK + ky) * KK + kx) * P;
                memcpy(dst + r.p0, img + c * P + r.p0 + r.shift,
                       (size_t)(r.p1 - r.p0) * sizeof *dst);
                same_zero_edges(l->iw, r, dst);
            }
        }
}

/* col2im for "same" convs. Each channel starts as a copy of its centre tap (dy = dx = 0: the run
 * is the whole plane), then adds the other taps in order. Zeroes dcol's wrapped columns first
 * (dcol is scratch by then). */
static void col2im_same(const bnorm__layer *l, float *dcol, float *img) {
    const int64_t P = pdim(l), KK = l->k, centre = l->pad * KK + l->pad;
    for (int64_t c = 0; c < l->ic; c++) {
        float *restrict plane = img + c * P;
        const float *taps = dcol + c * KK * KK * P;
        memcpy(plane, taps + centre * P, (size_t)P * sizeof *plane);
        for (int64_t t = 0; t < KK * KK; t++) {
            if (t == centre) continue;
            const same_run r = same_run_of(l, t / KK, t % KK);
            float *restrict src = dcol + (c * KK * KK + t) * P;
            same_zero_edges(l->iw, r, src);
#pragma omp simd
            for (int64_t p = r.p0; p < r.p1; p++)
                plane[p + r.shift] += src[p];
        }
    }
}

/* img = col2im(dcol): one image's patches summed back, channel by channel in a fixed order */
static void col2im(const bnorm__layer *l, const float *dcol, float *img) {
    const int64_t P = pdim(l), S = l->stride, PAD = l->pad, IW = l->iw, OW = l->ow;
    memset(img, 0, (size_t)(l->ic * l->ih * IW) * sizeof *img);
    for (int64_t c = 0; c < l->ic; c++) {
        float *plane = img + c * l->ih * IW;
        for (int64_t ky = 0; ky < l->k; ky++)
            for (int64_t kx = 0; kx < l->k; kx++) {
                const float *src = dcol + ((c * l->k + ky) * l->k + kx) * P;
                int64_t ox0 = 0, ox1 = OW; /* outputs whose input column is inside */
                while (ox0 < OW && ox0 * S - PAD + kx < 0)
                    ox0++;
                while (ox1 > ox0 && (ox1 - 1) * S - PAD + kx >= IW)
                    ox1--;
                for (int64_t oy = 0; oy < l->oh; oy++) {
                    const int64_t y = oy * S - PAD + ky;
                    if (y < 0 || y >= l->ih) continue;
                    float *restrict row = plane + y * IW - PAD + kx;
                    const float *restrict s = src + oy * OW;
                    if (S == 1)
#pragma omp simd
                        for (int64_t ox = ox0; ox < ox1; ox++)
                            row[ox] += s[ox];
                    else
                        for (int64_t ox = ox0; ox < ox1; ox++)
                            row[ox * S] += s[ox];
                }
            }
    }
}

/* image i's patch matrix into col, and back: dcol summed into image i's din */
static void patches_of(const bnorm__layer *l, int64_t i, float *col) {
    if (same_stride1(l))
        im2col_same(l, l->in + i * bnorm__in_size(l), col);
    else
        im2col(l, l->in + i * bnorm__in_size(l), col);
}

static void patches_back(const bnorm__layer *l, int64_t i, float *dcol) {
    if (same_stride1(l))
        col2im_same(l, dcol, l->din + i * bnorm__in_size(l));
    else
        col2im(l, dcol, l->din + i * bnorm__in_size(l));
}

static void forward_image(const bnorm__layer *l, int64_t i, float *col) {
    const int64_t P = pdim(l), K = kdim(l);
    float *out = l->out + i * l->oc * P;
    patches_of(l, i, col);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)l->oc, (int)P, (int)K, 1.0f, l->w,
                (int)K, col, (int)P, 0.0f, out, (int)P);
    if (l->b)
        for (int64_t o = 0; o < l->oc; o++) {
            const float bo = l->b[o];
            float *restrict row = out + o * P;
#pragma omp simd
            for (int64_t p = 0; p < P; p++)
                row[p] += bo;
        }
}

static bnorm_status conv_forward(bnorm__layer *l, int64_t n, int training, bnorm_rng *rng) {
    (void)training, (void)rng;
    const int64_t KP = kdim(l) * pdim(l);
    if (!per_image_threads(n)) { /* OpenBLAS threads each GEMM */
        for (int64_t i = 0; i < n; i++)
            forward_image(l, i, l->col);
        return BNORM_OK;
    }
    const int chunks = l->ncol;
#pragma omp parallel for schedule(static)
    for (int g = 0; g < chunks; g++)
        for (int64_t i = n * g / chunks; i < n * (g + 1) / chunks; i++)
            forward_image(l, i, l->col + g * KP);
    return BNORM_OK;
}

/* group g of the batch: its dW part (transposed; beta 0 on its first image), and each image's din
 * through dcol (beside col: im2col_same needs col's zeros kept) */
static void backward_group(const bnorm__layer *l, int64_t n, int g, float *gw_part, float *col,
                           float *dcol) {
    const int64_t P = pdim(l), K = kdim(l), OC = l->oc;
    const int64_t i0 = n * g / BNORM__CONV_GROUPS, i1 = n * (g + 1) / BNORM__CONV_GROUPS;
    if (i0 == i1) memset(gw_part, 0, (size_t)(OC * K) * sizeof *gw_part);
    for (int64_t i = i0; i < i1; i++) {
        const float *dout = l->dout + i * OC * P;
        patches_of(l, i, col);
        /* the part transposed, dW^T += col_i * dout_i^T: OpenBLAS runs that shape about 15%
         * faster than dout_i * col_i^T (the SkylakeX kernels, (64 x 288) from 196) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)K, (int)OC, (int)P, 1.0f, col,
                    (int)P, dout, (int)P, i == i0 ? 0.0f : 1.0f, gw_part, (int)OC);
        if (l->din) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)P, (int)OC, 1.0f,
                        l->w, (int)K, dout, (int)P, 0.0f, dcol, (int)P);
            patches_back(l, i, dcol);
        }
    }
}

static bnorm_status conv_backward(bnorm__layer *l, int64_t n) {
    const int64_t K = kdim(l), OC = l->oc, P = pdim(l);
    if (l->gb) {
#pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < OC; o++) {
            double s = 0.0;
            for (int64_t i = 0; i < n; i++)
                for (int64_t p = 0; p < P; p++)
                    s += l->dout[(i * OC + o) * P + p];
            l->gb[o] += (float)s;
        }
    }
    if (per_image_threads(n)) {
#pragma omp parallel for schedule(static)
        for (int g = 0; g < BNORM__CONV_GROUPS; g++)
            backward_group(l, n, g, l->tmp + g * OC * K, l->col + g * K * P,
                           l->col + (l->ncol + g) * K * P);
    } else {
        for (int g = 0; g < BNORM__CONV_GROUPS; g++)
            backward_group(l, n, g, l->tmp + g * OC * K, l->col, l->col + l->ncol * K * P);
    }
    for (int g = 0; g < BNORM__CONV_GROUPS; g++) {
        const float *part = l->tmp + g * OC * K; /* K x OC */
        for (int64_t o = 0; o < OC; o++)
            for (int64_t j = 0; j < K; j++)
                l->gw[o * K + j] += part[j * OC + o];
    }
    return BNORM_OK;
}

const bnorm__layer_ops bnorm__conv_ops = {"conv", conv_forward, conv_backward};
