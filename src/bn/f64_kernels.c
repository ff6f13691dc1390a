/* src/bn/f64_kernels.c - the float64 kernels: the reference kernels' arithmetic, in loops that
 * vectorize. Same signatures and conventions as the reference kernels (kernels.h), which stay
 * the oracle; bn.c calls these for float64 data unless BNORM_ISA=reference.
 *
 * The reference kernels are scalar: channels-last, their running sums live behind a double
 * pointer that may alias the double input, so every add is a store and a reload; channels-first,
 * four running sums. Here channels-last sums walk each row whole (vectors across the channels,
 * the per-channel constants in local arrays, a TILE at a time) in the reference's row order, so
 * each channel's sums are the reference's bits. Channels-first sums use LANES lanes (element s
 * of a run in lane s % LANES), the same on every ISA, so they differ from the reference (4
 * lanes, or one running sum in backward) by rounding only. Elementwise outputs use the
 * reference's formulas operation for operation: the same bits. Compiled for AVX-512, AVX2 and
 * the baseline (BNORM__CLONES). float64 (32,256,14,14), after a cache wash, against the
 * reference kernels (docs/performance-history.md, twenty-ninth session): channels-last backward
 * 4.75-5.54 -> 1.62-1.81 ms, forward training 3.60-3.71 -> 0.95-0.97.
 *
 * Element (n, c, s) lives at ((n*C + c)*S + s) channels-first and ((n*S + s)*C + c)
 * channels-last. */
#include <string.h>

#include "bn/bn_internal.h"
#include "bn/kernels.h"

#define LANES 8   /* channels-first sums: one AVX-512 vector, two AVX2 ones */
#define TILE  512 /* channels-last: channels whose constants sit in local arrays */

static double lanes_total(const double lane[LANES]) {
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

static double weight_of(const double *w, int64_t c) {
    return w ? w[c] : 1.0;
}

static double bias_of(const double *b, int64_t c) {
    return b ? b[c] : 0.0;
}

/* lane[s % LANES] += v[s] - shift (sq: its square) over a run of len values */
BNORM__CLONES static void add_devs(double *restrict lane, const double *restrict v, int64_t len,
                                   double shift, int sq) {
    double a[LANES];
    memcpy(a, lane, sizeof a);
    int64_t s = 0;
    if (sq) {
        for (; s + LANES <= len; s += LANES)
#pragma omp simd
            for (int j = 0; j < LANES; j++) {
                const double dev = v[s + j] - shift;
                a[j] += dev * dev;
            }
    } else {
        for (; s + LANES <= len; s += LANES)
#pragma omp simd
            for (int j = 0; j < LANES; j++)
                a[j] += v[s + j] - shift;
    }
    for (int j = 0; s < len; s++, j++) {
        const double dev = v[s] - shift;
        a[j] += sq ? dev * dev : dev;
    }
    memcpy(lane, a, sizeof a);
}

/* out[j] += row[j] - shift[j] (squared: its square) for channels [0, w) of each row, in row
 * order; with out2, both at once: out the deviations, out2 their squares */
BNORM__CLONES static void rows_add_devs(const double *x, int64_t rows, int64_t C, int64_t w,
                                        const double *restrict shift, int squared,
                                        double *restrict out, double *restrict out2) {
    for (int64_t r = 0; r < rows; r++) {
        const double *restrict row = x + r * C;
        if (out2) {
#pragma omp simd
            for (int64_t j = 0; j < w; j++) {
                const double dev = row[j] - shift[j];
                out[j] += dev;
                out2[j] += dev * dev;
            }
        } else if (squared) {
#pragma omp simd
            for (int64_t j = 0; j < w; j++) {
                const double dev = row[j] - shift[j];
                out[j] += dev * dev;
            }
        } else {
#pragma omp simd
            for (int64_t j = 0; j < w; j++)
                out[j] += row[j] - shift[j];
        }
    }
}

void bnorm__f64_sum_devs(const bnorm_desc *d, const double *x, int64_t c0, int64_t c1,
                         const double *shift, int squared, double *out) {
    memset(out, 0, (size_t)(c1 - c0) * sizeof *out);
    rows_add_devs(x + c0, d->n * d->spatial, d->c, c1 - c0, shift, squared, out, NULL);
}

void bnorm__f64_sum_devs2(const bnorm_desc *d, const double *x, int64_t c0, int64_t c1,
                          const double *shift, double *s1, double *s2) {
    memset(s1, 0, (size_t)(c1 - c0) * sizeof *s1);
    memset(s2, 0, (size_t)(c1 - c0) * sizeof *s2);
    rows_add_devs(x + c0, d->n * d->spatial, d->c, c1 - c0, shift, 0, s1, s2);
}

/* As the reference: shift by the channel's first value for the mean, then M2 about the mean. */
void bnorm__f64_stats(const bnorm_desc *d, const double *x, int64_t c0, int64_t c1, double *mean,
                      double *m2) {
    const int64_t C = d->c, S = d->spatial, N = d->n, count = N * S;
    for (int64_t c = c0; c < c1; c++)
        mean[c - c0] = m2[c - c0] = 0.0;
    if (count == 0) return;
    if (d->layout == BNORM_LAYOUT_CHANNELS_FIRST) {
        for (int64_t c = c0; c < c1; c++) {
            const double shift = x[c * S];
            double lane[LANES] = {0};
            for (int64_t n = 0; n < N; n++)
                add_devs(lane, x + (n * C + c) * S, S, shift, 0);
            const double mu = shift + lanes_total(lane) / (double)count;
            memset(lane, 0, sizeof lane);
            for (int64_t n = 0; n < N; n++)
                add_devs(lane, x + (n * C + c) * S, S, mu, 1);
            mean[c - c0] = mu;
            m2[c - c0] = lanes_total(lane);
        }
    } else {
        for (int64_t c = c0; c < c1; c++)
            mean[c - c0] = x[c];
        bnorm__f64_sum_devs(d, x, c0, c1, mean, 0, m2);
        for (int64_t c = c0; c < c1; c++)
            mean[c - c0] += m2[c - c0] / (double)count;
        bnorm__f64_sum_devs(d, x, c0, c1, mean, 1, m2);
    }
}

/* The reference's output formula, (x - mean) * scale + b, and its ReLU: v unless v <= 0 (NaN
 * stays NaN, -0 becomes +0, as !(v > 0) ? (v != v ? v : 0) does). */
#define F64_OUT(xv, mu, scale, b) (((xv) - (mu)) * (scale) + (b))
#define F64_RELU(v)               ((v) <= 0.0 ? 0.0 : (v))

/* y[s] = out(x[s]) over a run; y may be x */
BNORM__CLONES static void apply_run(double *y, const double *x, int64_t len, double mu,
                                    double scale, double b, int relu) {
    if (relu) {
#pragma omp simd
        for (int64_t s = 0; s < len; s++) {
            const double v = F64_OUT(x[s], mu, scale, b);
            y[s] = F64_RELU(v);
        }
    } else {
#pragma omp simd
        for (int64_t s = 0; s < len; s++)
            y[s] = F64_OUT(x[s], mu, scale, b);
    }
}

/* the same over channels-last rows, channels [0, w) of each with their constants; y may be x */
BNORM__CLONES static void apply_rows(double *y, const double *x, int64_t rows, int64_t C, int64_t w,
                                     const double *restrict mu, const double *restrict scale,
                                     const double *restrict b, int relu) {
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * C;
        double *yr = y + r * C;
        if (relu) {
#pragma omp simd
            for (int64_t j = 0; j < w; j++) {
                const double v = F64_OUT(xr[j], mu[j], scale[j], b[j]);
                yr[j] = F64_RELU(v);
            }
        } else {
#pragma omp simd
            for (int64_t j = 0; j < w; j++)
                yr[j] = F64_OUT(xr[j], mu[j], scale[j], b[j]);
        }
    }
}

void bnorm__f64_apply(const bnorm_desc *d, double *y, const double *x, const double *mean,
                      const double *invstd, const double *weight, const double *bias, int relu,
                      int64_t c0, int64_t c1) {
    const int64_t C = d->c, S = d->spatial, N = d->n;
    if (d->layout == BNORM_LAYOUT_CHANNELS_FIRST) {
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = c0; c < c1; c++)
                apply_run(y + (n * C + c) * S, x + (n * C + c) * S, S, mean[c - c0],
                          invstd[c - c0] * weight_of(weight, c), bias_of(bias, c), relu);
        return;
    }
    for (int64_t t0 = c0; t0 < c1; t0 += TILE) {
        const int64_t w = c1 - t0 < TILE ? c1 - t0 : TILE;
        double scale[TILE], b[TILE];
        for (int64_t j = 0; j < w; j++) {
            scale[j] = invstd[t0 - c0 + j] * weight_of(weight, t0 + j);
            b[j] = bias_of(bias, t0 + j);
        }
        apply_rows(y + t0, x + t0, N * S, C, w, mean + (t0 - c0), scale, b, relu);
    }
}

/* dy as the batch norm sees it: 0 where the fused ReLU cut the output. Callers load dy into a
 * variable first: loaded inside the condition, the vectorizer makes it a masked load, which
 * stalled the backward passes (float64 (32,256,14,14) channels-last backward 3.2 -> 1.9 ms
 * without ReLU, where the mask is gone). */
#define F64_DY(g, xv, mu, scale, b, relu) ((relu) && !(F64_OUT(xv, mu, scale, b) > 0.0) ? 0.0 : (g))

/* Channels-first backward sums of one channel's run into lanes: sg += g, sgx += g * xhat,
 * sgg += g * g */
BNORM__CLONES static void bwd_sums_run(double *restrict sg, double *restrict sgx,
                                       double *restrict sgg, const double *restrict dy,
                                       const double *restrict x, int64_t len, double mu, double is,
                                       double scale, double b, int relu) {
    double a1[LANES], a2[LANES], a3[LANES];
    memcpy(a1, sg, sizeof a1), memcpy(a2, sgx, sizeof a2), memcpy(a3, sgg, sizeof a3);
    int64_t s = 0;
    for (; s + LANES <= len; s += LANES)
#pragma omp simd
        for (int j = 0; j < LANES; j++) {
            const double dv = dy[s + j];
            const double g = F64_DY(dv, x[s + j], mu, scale, b, relu);
            a1[j] += g;
            a2[j] += g * ((x[s + j] - mu) * is);
            a3[j] += g * g;
        }
    for (int j = 0; s < len; s++, j++) {
        const double dv = dy[s];
        const double g = F64_DY(dv, x[s], mu, scale, b, relu);
        a1[j] += g;
        a2[j] += g * ((x[s] - mu) * is);
        a3[j] += g * g;
    }
    memcpy(sg, a1, sizeof a1), memcpy(sgx, a2, sizeof a2), memcpy(sgg, a3, sizeof a3);
}

/* One channels-last row's backward sums, with the fused ReLU's mask (relu) and the sum of squares
 * (sq) fixed where it is inlined, so that each case is a loop of its own */
static inline __attribute__((always_inline)) void
bwd_sums_row(double *restrict sg, double *restrict sgx, double *restrict sgg,
             const double *restrict dyr, const double *restrict xr, const double *restrict mu,
             const double *restrict is, const double *restrict scale, const double *restrict b,
             int64_t w, const int relu, const int sq) {
#pragma omp simd
    for (int64_t j = 0; j < w; j++) {
        const double dv = dyr[j];
        const double g = F64_DY(dv, xr[j], mu[j], scale[j], b[j], relu);
        sg[j] += g;
        sgx[j] += g * ((xr[j] - mu[j]) * is[j]);
        if (sq) sgg[j] += g * g;
    }
}

/* Channels-last backward sums of channels [0, w), added to over the rows in row order; sgg may
 * be NULL */
BNORM__CLONES static void bwd_sums_rows(double *restrict sg, double *restrict sgx,
                                        double *restrict sgg, const double *dy, const double *x,
                                        int64_t rows, int64_t C, const double *restrict mu,
                                        const double *restrict is, const double *restrict scale,
                                        const double *restrict b, int relu, int64_t w) {
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * C, *dyr = dy + r * C;
        if (relu && sgg)
            bwd_sums_row(sg, sgx, sgg, dyr, xr, mu, is, scale, b, w, 1, 1);
        else if (relu)
            bwd_sums_row(sg, sgx, sgg, dyr, xr, mu, is, scale, b, w, 1, 0);
        else if (sgg)
            bwd_sums_row(sg, sgx, sgg, dyr, xr, mu, is, scale, b, w, 0, 1);
        else
            bwd_sums_row(sg, sgx, sgg, dyr, xr, mu, is, scale, b, w, 0, 0);
    }
}

void bnorm__f64_backward_reduce(const bnorm_desc *d, double *sum_dy, double *sum_dy_xhat,
                                double *sum_dy_sq, const double *dy, const double *x,
                                const double *mean, const double *invstd, const double *weight,
                                const double *bias, int relu, int64_t c0, int64_t c1) {
    const int64_t C = d->c, S = d->spatial, N = d->n;
    if (d->layout == BNORM_LAYOUT_CHANNELS_FIRST) {
        for (int64_t c = c0; c < c1; c++) {
            const double mu = mean[c - c0], is = invstd[c - c0];
            const double scale = is * weight_of(weight, c), b = bias_of(bias, c);
            double l1[LANES] = {0}, l2[LANES] = {0}, l3[LANES] = {0};
            for (int64_t n = 0; n < N; n++)
                bwd_sums_run(l1, l2, l3, dy + (n * C + c) * S, x + (n * C + c) * S, S, mu, is,
                             scale, b, relu);
            sum_dy[c - c0] = lanes_total(l1);
            sum_dy_xhat[c - c0] = lanes_total(l2);
            if (sum_dy_sq) sum_dy_sq[c - c0] = lanes_total(l3);
        }
        return;
    }
    const size_t bytes = (size_t)(c1 - c0) * sizeof(double);
    memset(sum_dy, 0, bytes), memset(sum_dy_xhat, 0, bytes);
    if (sum_dy_sq) memset(sum_dy_sq, 0, bytes);
    /* bn.c sums at most a TILE of channels a call (RED_SUB), so each row is walked once */
    for (int64_t t0 = c0; t0 < c1; t0 += TILE) {
        const int64_t w = c1 - t0 < TILE ? c1 - t0 : TILE, o = t0 - c0;
        double scale[TILE], b[TILE];
        for (int64_t k = 0; k < w; k++) {
            scale[k] = invstd[o + k] * weight_of(weight, t0 + k);
            b[k] = bias_of(bias, t0 + k);
        }
        bwd_sums_rows(sum_dy + o, sum_dy_xhat + o, sum_dy_sq ? sum_dy_sq + o : NULL, dy + t0,
                      x + t0, N * S, C, mean + o, invstd + o, scale, b, relu, w);
    }
}

/* The reference's dx: scale * (g - mdy - xhat * mdyx), xhat = (x - mean) * invstd */
#define F64_DX(g, xv, mu, is, scale, mdy, mdyx)                                                    \
    ((scale) * ((g) - (mdy) - ((xv) - (mu)) * (is) * (mdyx)))

/* dx over a channels-first run; dx may be dy or x */
BNORM__CLONES static void dx_run(double *dx, const double *dy, const double *x, int64_t len,
                                 double mu, double is, double scale, double b, double mdy,
                                 double mdyx, int relu) {
#pragma omp simd
    for (int64_t s = 0; s < len; s++) {
        const double dv = dy[s];
        const double g = F64_DY(dv, x[s], mu, scale, b, relu);
        dx[s] = F64_DX(g, x[s], mu, is, scale, mdy, mdyx);
    }
}

/* dx over one channels-last row, the fused ReLU's mask fixed where it is inlined; dx may be dy
 * or x */
static inline __attribute__((always_inline)) void
dx_row(double *dxr, const double *dyr, const double *xr, const double *restrict mu,
       const double *restrict is, const double *restrict scale, const double *restrict b,
       const double *restrict mdy, const double *restrict mdyx, int64_t w, const int relu) {
#pragma omp simd
    for (int64_t j = 0; j < w; j++) {
        const double dv = dyr[j];
        const double g = F64_DY(dv, xr[j], mu[j], scale[j], b[j], relu);
        dxr[j] = F64_DX(g, xr[j], mu[j], is[j], scale[j], mdy[j], mdyx[j]);
    }
}

/* dx over channels-last rows, channels [0, w) of each; dx may be dy or x */
BNORM__CLONES static void dx_rows(double *dx, const double *dy, const double *x, int64_t rows,
                                  int64_t C, const double *restrict mu, const double *restrict is,
                                  const double *restrict scale, const double *restrict b,
                                  const double *restrict mdy, const double *restrict mdyx, int relu,
                                  int64_t w) {
    for (int64_t r = 0; r < rows; r++) {
        if (relu)
            dx_row(dx + r * C, dy + r * C, x + r * C, mu, is, scale, b, mdy, mdyx, w, 1);
        else
            dx_row(dx + r * C, dy + r * C, x + r * C, mu, is, scale, b, mdy, mdyx, w, 0);
    }
}

void bnorm__f64_backward_apply(const bnorm_desc *d, double *dx, const double *dy, const double *x,
                               const double *mean, const double *invstd, const double *weight,
                               const double *bias, const double *sum_dy, const double *sum_dy_xhat,
                               int64_t count, int batch_stats, int relu, int64_t c0, int64_t c1) {
    const int64_t C = d->c, S = d->spatial, N = d->n;
    for (int64_t t0 = c0; t0 < c1; t0 += TILE) {
        const int64_t w = c1 - t0 < TILE ? c1 - t0 : TILE, o = t0 - c0;
        double scale[TILE], b[TILE], mdy[TILE], mdyx[TILE];
        for (int64_t j = 0; j < w; j++) {
            scale[j] = invstd[o + j] * weight_of(weight, t0 + j);
            b[j] = bias_of(bias, t0 + j);
            mdy[j] = batch_stats ? sum_dy[o + j] / (double)count : 0.0;
            mdyx[j] = batch_stats ? sum_dy_xhat[o + j] / (double)count : 0.0;
        }
        if (d->layout != BNORM_LAYOUT_CHANNELS_FIRST) {
            dx_rows(dx + t0, dy + t0, x + t0, N * S, C, mean + o, invstd + o, scale, b, mdy, mdyx,
                    relu, w);
            continue;
        }
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < w; j++) {
                const int64_t at = (n * C + t0 + j) * S;
                dx_run(dx + at, dy + at, x + at, S, mean[o + j], invstd[o + j], scale[j], b[j],
                       mdy[j], mdyx[j], relu);
            }
    }
}
