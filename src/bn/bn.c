/* src/bn/bn.c - the functional batch-norm API: argument validation, then the kernels.
 *
 * Every public function validates everything before it writes anything, so an error leaves all
 * outputs untouched. On the reference path, channels-first work is split into blocks of
 * channels, each computed by one thread channel by channel; channels-last (and (N,C)) reductions
 * sum a fixed number of row parts on the threads and add them in order, and elementwise passes
 * split the rows. Every reduction order depends on the shape alone, so results are bit-identical
 * for any thread count. No call allocates: its scratch is on the stack, of bounded size. */
#include <math.h>
#include <stddef.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bn/bn_internal.h"
#include "bn/fast.h"
#include "bn/kernels.h"
#include "util/internal.h"

/* ------------------------------------------------------------------------------------------ */
/* Validation helpers                                                                          */
/* ------------------------------------------------------------------------------------------ */

bnorm_status bnorm__check_desc(const char *fn, const bnorm_desc *d) {
    if (d == NULL) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: tensor descriptor is NULL", fn);
    if (d->dtype != BNORM_DTYPE_F32 && d->dtype != BNORM_DTYPE_F64)
        return bnorm__fail(BNORM_ERR_INVALID_SHAPE, "%s: data type %d is not f32 or f64", fn,
                           (int)d->dtype);
    if (d->layout != BNORM_LAYOUT_CHANNELS_FIRST && d->layout != BNORM_LAYOUT_CHANNELS_LAST)
        return bnorm__fail(BNORM_ERR_INVALID_SHAPE, "%s: unknown layout %d", fn, (int)d->layout);
    if (d->n < 0)
        return bnorm__fail(BNORM_ERR_INVALID_SHAPE, "%s: batch size N=%lld is negative", fn,
                           (long long)d->n);
    if (d->c < 1)
        return bnorm__fail(BNORM_ERR_INVALID_SHAPE, "%s: channel count C=%lld must be >= 1", fn,
                           (long long)d->c);
    if (d->spatial < 1)
        return bnorm__fail(BNORM_ERR_INVALID_SHAPE, "%s: spatial size %lld must be >= 1", fn,
                           (long long)d->spatial);
    int64_t nc, numel, bytes;
    const int64_t elem = bnorm__dtype_size(d->dtype);
    if (!bnorm__mul_i64(d->n, d->c, &nc) || !bnorm__mul_i64(nc, d->spatial, &numel) ||
        !bnorm__mul_i64(numel, elem, &bytes) || (uint64_t)bytes > (uint64_t)SIZE_MAX)
        return bnorm__fail(BNORM_ERR_SIZE_OVERFLOW,
                           "%s: tensor of %lld x %lld x %lld elements overflows the address size",
                           fn, (long long)d->n, (long long)d->c, (long long)d->spatial);
    return BNORM_OK;
}

int64_t bnorm__dtype_size(bnorm_dtype dtype) {
    switch (dtype) {
    case BNORM_DTYPE_F32:
        return 4;
    case BNORM_DTYPE_F64:
        return 8;
    case BNORM_DTYPE_I64:
        return 8;
    }
    return 0;
}

bnorm_status bnorm__check_eps(const char *fn, double eps) {
    if (!(eps > 0.0) || !isfinite(eps))
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: eps=%g must be finite and > 0", fn,
                           eps);
    return BNORM_OK;
}

bnorm_status bnorm__check_momentum(const char *fn, double momentum) {
    if (momentum == BNORM_BN_MOMENTUM_CUMULATIVE) return BNORM_OK;
    if (!(momentum >= 0.0 && momentum <= 1.0))
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT,
                           "%s: momentum=%g must be in [0, 1] (or BNORM_BN_MOMENTUM_CUMULATIVE)",
                           fn, momentum);
    return BNORM_OK;
}

static bnorm_status check_flags(const char *fn, unsigned flags) {
    if (flags & ~BNORM_BN_FUSE_RELU)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: unknown flags 0x%x", fn,
                           flags & ~BNORM_BN_FUSE_RELU);
    return BNORM_OK;
}

/* Named pointer checks: each pair is (pointer, name); the list ends with a NULL name. */
static bnorm_status check_ptrs(const char *fn, const void *p0, const char *n0, const void *p1,
                               const char *n1, const void *p2, const char *n2, const void *p3,
                               const char *n3) {
    const void *p[4] = {p0, p1, p2, p3};
    const char *n[4] = {n0, n1, n2, n3};
    for (int i = 0; i < 4 && n[i]; i++)
        if (p[i] == NULL) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: %s is NULL", fn, n[i]);
    return BNORM_OK;
}

static bnorm_status check_running(const char *fn, const bnorm_bn_running *r) {
    if (r == NULL) return BNORM_OK;
    bnorm_status st =
        check_ptrs(fn, r->mean, "running->mean", r->var, "running->var", NULL, NULL, NULL, NULL);
    if (st) return st;
    if ((st = bnorm__check_momentum(fn, r->momentum))) return st;
    if (r->momentum == BNORM_BN_MOMENTUM_CUMULATIVE && r->num_batches_tracked == NULL)
        return bnorm__fail(BNORM_ERR_NULL_POINTER,
                           "%s: cumulative momentum needs running->num_batches_tracked", fn);
    if (r->num_batches_tracked && *r->num_batches_tracked < 0)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: num_batches_tracked=%lld is negative",
                           fn, (long long)*r->num_batches_tracked);
    return BNORM_OK;
}

static bnorm_status check_batch_count(const char *fn, int64_t count) {
    if (count == 1)
        return bnorm__fail(BNORM_ERR_BATCH_TOO_SMALL,
                           "%s: expected more than 1 value per channel when using batch "
                           "statistics, got 1",
                           fn);
    return BNORM_OK;
}

/* The averaging factor of this batch's running-stat update; t is num_batches_tracked after the
 * increment this batch causes. */
static double running_factor(const bnorm_bn_running *r) {
    if (r->momentum != BNORM_BN_MOMENTUM_CUMULATIVE) return r->momentum;
    return 1.0 / (double)(*r->num_batches_tracked + 1);
}

/* ------------------------------------------------------------------------------------------ */
/* Kernels by dtype                                                                            */
/* ------------------------------------------------------------------------------------------ */

#define BNORM__BLOCK 64 /* the most channels a block holds */

/* The reference path's elementwise passes over channels-last rows (and (N,C) data) split the
 * rows among the threads, in chunks of ROWS_CHUNK rows that every channel block walks before the
 * next chunk: threads reading their slices of the same rows were slower than one thread reading
 * them whole, and splitting an elementwise pass cannot change its bits. */
#define ROWS_CHUNK 64

/* float64 data on the vectorized kernels (f64_kernels.c), unless BNORM_ISA=reference asked for
 * the reference ones. float32 comes here only for the reference kernels. */
static int f64_fast(const bnorm_desc *d) {
    return d->dtype == BNORM_DTYPE_F64 && bnorm__fast_current() != NULL;
}

/* Channels per block on the reference path (float64, or BNORM_ISA=reference): the unit of
 * threading. Each channel is computed by one thread in a fixed order, so any split gives the same
 * bits. Channels-first, narrow enough that every thread gets two: 64-channel blocks ran C = 64
 * on one thread, and float64 (32,64,56,56) forward training took 25.7 ms, inference 9.5,
 * backward 30.0; in blocks of 16, 14.1, 6.0 and 15.0. Channels-last rows (and (N,C) data) go by
 * rows (ROWS_CHUNK, row_parts), and their blocks of 64 channels only order the work within a
 * chunk of rows: threads that each read a slice of every row ran 1.3-1.4x slower than one
 * thread reading them all (scripts/ab.sh -- --f64). */
static int64_t block_width(const bnorm_desc *d) {
    if (bnorm__channels_in_rows(d)) return f64_fast(d) ? BNORM__CL_GROUP : BNORM__BLOCK;
    int64_t threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    const int64_t w = d->c / (2 * threads);
    return w < 1 ? 1 : w > BNORM__BLOCK ? BNORM__BLOCK : w;
}

static int64_t block_count(int64_t c, int64_t width) {
    return (c + width - 1) / width;
}

/* The descriptor of `rows` consecutive rows of a channels-in-rows tensor */
static bnorm_desc rows_part(const bnorm_desc *d, int64_t rows) {
    bnorm_desc part = *d;
    part.layout = BNORM_LAYOUT_CHANNELS_LAST, part.n = 1, part.spatial = rows;
    return part;
}

static void stats_range(const bnorm_desc *d, const void *x, int64_t c0, int64_t c1, double *mean,
                        double *m2) {
    if (d->dtype == BNORM_DTYPE_F32)
        bnorm__ref_stats_f32(d, x, c0, c1, mean, m2);
    else if (f64_fast(d))
        bnorm__f64_stats(d, x, c0, c1, mean, m2);
    else
        bnorm__ref_stats_f64(d, x, c0, c1, mean, m2);
}

static void apply_range(const bnorm_desc *d, void *y, const void *x, const double *mean,
                        const double *invstd, const void *w, const void *b, int relu, int64_t c0,
                        int64_t c1) {
    if (d->dtype == BNORM_DTYPE_F32)
        bnorm__ref_apply_f32(d, y, x, mean, invstd, w, b, relu, c0, c1);
    else if (f64_fast(d))
        bnorm__f64_apply(d, y, x, mean, invstd, w, b, relu, c0, c1);
    else
        bnorm__ref_apply_f64(d, y, x, mean, invstd, w, b, relu, c0, c1);
}

static void reduce_range(const bnorm_desc *d, double *sdy, double *sdyx, double *sdy2,
                         const void *dy, const void *x, const double *mean, const double *invstd,
                         const void *w, const void *b, int relu, int64_t c0, int64_t c1) {
    if (d->dtype == BNORM_DTYPE_F32)
        bnorm__ref_backward_reduce_f32(d, sdy, sdyx, sdy2, dy, x, mean, invstd, w, b, relu, c0, c1);
    else if (f64_fast(d))
        bnorm__f64_backward_reduce(d, sdy, sdyx, sdy2, dy, x, mean, invstd, w, b, relu, c0, c1);
    else
        bnorm__ref_backward_reduce_f64(d, sdy, sdyx, sdy2, dy, x, mean, invstd, w, b, relu, c0, c1);
}

static void dx_range(const bnorm_desc *d, void *dx, const void *dy, const void *x,
                     const double *mean, const double *invstd, const void *w, const void *b,
                     const double *sdy, const double *sdyx, int64_t count, int batch, int relu,
                     int64_t c0, int64_t c1) {
    if (d->dtype == BNORM_DTYPE_F32)
        bnorm__ref_backward_apply_f32(d, dx, dy, x, mean, invstd, w, b, sdy, sdyx, count, batch,
                                      relu, c0, c1);
    else if (f64_fast(d))
        bnorm__f64_backward_apply(d, dx, dy, x, mean, invstd, w, b, sdy, sdyx, count, batch, relu,
                                  c0, c1);
    else
        bnorm__ref_backward_apply_f64(d, dx, dy, x, mean, invstd, w, b, sdy, sdyx, count, batch,
                                      relu, c0, c1);
}

/* apply_range over the rows of a channels-in-rows tensor, split among the threads in chunks of
 * ROWS_CHUNK rows: channels [g0, g1) in blocks of bw, mean and invstd indexed from g0 */
static void apply_by_rows(const bnorm_desc *d, void *y, const void *x, const double *mean,
                          const double *invstd, const void *w, const void *b, int relu, int64_t g0,
                          int64_t g1, int64_t bw) {
    const int64_t rows = d->n * d->spatial, step = d->c * bnorm__dtype_size(d->dtype);
#pragma omp parallel for schedule(static)
    for (int64_t r0 = 0; r0 < rows; r0 += ROWS_CHUNK) {
        const bnorm_desc part = rows_part(d, rows - r0 < ROWS_CHUNK ? rows - r0 : ROWS_CHUNK);
        for (int64_t c0 = g0; c0 < g1; c0 += bw) {
            const int64_t c1 = c0 + bw < g1 ? c0 + bw : g1;
            apply_range(&part, (char *)y + r0 * step, (const char *)x + r0 * step, mean + (c0 - g0),
                        invstd + (c0 - g0), w, b, relu, c0, c1);
        }
    }
}

/* dx_range in the same way; sdy and sdyx (read with batch statistics only) indexed from g0 too */
static void dx_by_rows(const bnorm_desc *d, void *dx, const void *dy, const void *x,
                       const double *mean, const double *invstd, const void *w, const void *b,
                       const double *sdy, const double *sdyx, int64_t count, int batch, int relu,
                       int64_t g0, int64_t g1, int64_t bw) {
    const int64_t rows = d->n * d->spatial, step = d->c * bnorm__dtype_size(d->dtype);
#pragma omp parallel for schedule(static)
    for (int64_t r0 = 0; r0 < rows; r0 += ROWS_CHUNK) {
        const bnorm_desc part = rows_part(d, rows - r0 < ROWS_CHUNK ? rows - r0 : ROWS_CHUNK);
        for (int64_t c0 = g0; c0 < g1; c0 += bw) {
            const int64_t c1 = c0 + bw < g1 ? c0 + bw : g1, o = c0 - g0;
            dx_range(&part, (char *)dx + r0 * step, (const char *)dy + r0 * step,
                     (const char *)x + r0 * step, mean + o, invstd + o, w, b,
                     batch ? sdy + o : NULL, batch ? sdyx + o : NULL, count, batch, relu, c0, c1);
        }
    }
}

/* The float32 fast kernels to use, or NULL for the reference kernels (float64 data, or
 * BNORM_ISA=reference). */
static const bnorm__fast_ops *fast_for(const bnorm_desc *d) {
    return d->dtype == BNORM_DTYPE_F32 ? bnorm__fast_current() : NULL;
}

static void store(bnorm_dtype dt, void *arr, int64_t i, double v) {
    if (dt == BNORM_DTYPE_F32)
        ((float *)arr)[i] = (float)v;
    else
        ((double *)arr)[i] = v;
}

static double load(bnorm_dtype dt, const void *arr, int64_t i) {
    return dt == BNORM_DTYPE_F32 ? (double)((const float *)arr)[i] : ((const double *)arr)[i];
}

/* The reference path's reductions over channels-in-rows tensors split the rows into row_parts fixed
 * parts (a number that depends on the shape alone, so the bits do not depend on the thread count),
 * each summed by one thread over whole rows, RED_SUB channels a sweep, and the parts' sums
 * (on each thread's stack) added in part order as they finish. Blocks of 64 channels as the unit,
 * as channels-first, ran C <= 64 on one thread: float64 (32,64,56,56) channels-last forward
 * training took 18.2 ms, backward 21.2; by row parts 12.0 and 15.5 (scripts/ab.sh -- --f64
 * --nhwc). A sweep reads every row's RED_SUB channels whole: sweeps of 128 channels read
 * (32,256,14,14)'s rows in halves, and the memory charged each half as a whole row. */
#define ROW_PARTS 8
#define RED_SUB   512

static int64_t row_parts(const bnorm_desc *d) {
    const int64_t p = d->n * d->spatial / ROWS_CHUNK;
    return p < 1 ? 1 : p > ROW_PARTS ? ROW_PARTS : p;
}

static void sum_devs(const bnorm_desc *d, const void *x, int64_t c0, int64_t c1,
                     const double *shift, int squared, double *out) {
    if (d->dtype == BNORM_DTYPE_F32)
        bnorm__ref_sum_devs_f32(d, x, c0, c1, shift, squared, out);
    else if (f64_fast(d))
        bnorm__f64_sum_devs(d, x, c0, c1, shift, squared, out);
    else
        bnorm__ref_sum_devs_f64(d, x, c0, c1, shift, squared, out);
}

/* out[c - s0] = the sum over all rows of x - shift[c - s0] (squared: of its square) for the at
 * most RED_SUB channels [s0, s1) of a channels-in-rows tensor, by row parts. With out2 (float64
 * kernels only): out the deviations and out2 their squares, in one pass. */
static void sum_devs_by_rows(const bnorm_desc *d, const void *x, int64_t s0, int64_t s1,
                             const double *shift, int squared, double *out, double *out2) {
    const int64_t rows = d->n * d->spatial, parts = row_parts(d),
                  step = d->c * bnorm__dtype_size(d->dtype);
    for (int64_t c = s0; c < s1; c++) {
        out[c - s0] = 0.0;
        if (out2) out2[c - s0] = 0.0;
    }
#pragma omp parallel for schedule(static, 1) ordered
    for (int64_t p = 0; p < parts; p++) {
        const int64_t r0 = rows * p / parts, r1 = rows * (p + 1) / parts;
        const bnorm_desc rd = rows_part(d, r1 - r0);
        const void *xp = (const char *)x + r0 * step;
        double q[RED_SUB], q2[RED_SUB];
        if (out2)
            bnorm__f64_sum_devs2(&rd, xp, s0, s1, shift, q, q2);
        else
            sum_devs(&rd, xp, s0, s1, shift, squared, q);
#pragma omp ordered
        for (int64_t c = s0; c < s1; c++) {
            out[c - s0] += q[c - s0];
            if (out2) out2[c - s0] += q2[c - s0];
        }
    }
}

/* The float64 kernels' one pass for M2 (sum of squared deviations from the shift, less the
 * squared sum over the count) is kept where that subtraction loses at most ~2^-42 relative: the
 * shift, each channel's first value, lies within 32 standard deviations of the mean. */
#define ONE_PASS_MAX_RATIO 1024.0

/* Moments of channels [g0, g1) of a channels-in-rows tensor into mean and m2 (indexed from g0),
 * as the reference kernel: shift by the first row, then M2 about the mean in a second pass. The
 * float64 kernels take M2 from the first pass where it is accurate (ONE_PASS_MAX_RATIO). */
static void stats_by_rows(const bnorm_desc *d, const void *x, int64_t g0, int64_t g1, double *mean,
                          double *m2) {
    const double rows = (double)(d->n * d->spatial);
    const int one_pass = f64_fast(d);
    for (int64_t s0 = g0; s0 < g1; s0 += RED_SUB) {
        const int64_t s1 = g1 - s0 < RED_SUB ? g1 : s0 + RED_SUB;
        double shift[RED_SUB], *mu = mean + (s0 - g0), *m = m2 + (s0 - g0);
        for (int64_t c = s0; c < s1; c++)
            shift[c - s0] = load(d->dtype, x, c);
        sum_devs_by_rows(d, x, s0, s1, shift, 0, mu, one_pass ? m : NULL);
        /* keep[c]: the one pass's M2 stands; decided channel by channel, so that a channel's
         * bits never depend on another's values (a NaN in one channel, say) */
        unsigned char keep[RED_SUB];
        int all_kept = one_pass;
        for (int64_t c = 0; c < s1 - s0; c++) {
            const double t = mu[c];
            mu[c] = shift[c] + t / rows;
            keep[c] = 0;
            if (one_pass) {
                const double sq = t * (t / rows);
                m[c] -= sq;
                keep[c] = sq <= ONE_PASS_MAX_RATIO * m[c];
                all_kept &= keep[c];
            }
        }
        if (all_kept) continue;
        double exact[RED_SUB];
        sum_devs_by_rows(d, x, s0, s1, mu, 1, exact, NULL);
        for (int64_t c = 0; c < s1 - s0; c++)
            if (!keep[c]) m[c] = exact[c];
    }
}

/* Backward's sums of channels [g0, g1) of a channels-in-rows tensor (mean, invstd and the sums
 * indexed from g0; sdy2 may be NULL), by row parts as sum_devs_by_rows. */
static void sums_by_rows(const bnorm_desc *d, double *sdy, double *sdyx, double *sdy2,
                         const void *dy, const void *x, const double *mean, const double *invstd,
                         const void *w, const void *b, int relu, int64_t g0, int64_t g1) {
    const int64_t rows = d->n * d->spatial, parts = row_parts(d),
                  step = d->c * bnorm__dtype_size(d->dtype);
    for (int64_t c = g0; c < g1; c++) {
        sdy[c - g0] = sdyx[c - g0] = 0.0;
        if (sdy2) sdy2[c - g0] = 0.0;
    }
    for (int64_t s0 = g0; s0 < g1; s0 += RED_SUB) {
        const int64_t s1 = g1 - s0 < RED_SUB ? g1 : s0 + RED_SUB, o = s0 - g0;
#pragma omp parallel for schedule(static, 1) ordered
        for (int64_t p = 0; p < parts; p++) {
            const int64_t r0 = rows * p / parts, r1 = rows * (p + 1) / parts;
            const bnorm_desc rd = rows_part(d, r1 - r0);
            double q1[RED_SUB], q2[RED_SUB], q3[RED_SUB];
            reduce_range(&rd, q1, q2, sdy2 ? q3 : NULL, (const char *)dy + r0 * step,
                         (const char *)x + r0 * step, mean + o, invstd + o, w, b, relu, s0, s1);
#pragma omp ordered
            for (int64_t c = s0; c < s1; c++) {
                sdy[c - g0] += q1[c - s0], sdyx[c - g0] += q2[c - s0];
                if (sdy2) sdy2[c - g0] += q3[c - s0];
            }
        }
    }
}

/* out[c - c0] = arr[c] as double, and invstd[c - c0] = 1/sqrt(var[c] + eps), for c in [c0, c1):
 * a loop per dtype, so that it vectorizes (with -fno-math-errno, sqrt is one instruction) */
static void load_range(bnorm_dtype dt, const void *arr, int64_t c0, int64_t c1, double *out) {
    if (dt == BNORM_DTYPE_F32) {
        const float *a = arr;
#pragma omp simd
        for (int64_t c = c0; c < c1; c++)
            out[c - c0] = (double)a[c];
    } else {
        memcpy(out, (const double *)arr + c0, (size_t)(c1 - c0) * sizeof *out);
    }
}

/* out[i] = 1/sqrt(v[i] * scale + eps); out may be v */
BNORM__CLONES static void invstd_of(const double *v, double *out, double scale, double eps,
                                    int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        out[i] = 1.0 / sqrt(v[i] * scale + eps);
}

void bnorm__invstd_range(bnorm_dtype dt, const void *var, double eps, int64_t c0, int64_t c1,
                         double *invstd) {
    load_range(dt, var, c0, c1, invstd);
    invstd_of(invstd, invstd, 1.0, eps, c1 - c0);
}

/* Finite in the type it will be stored in. */
static int finite_as(bnorm_dtype dt, double v) {
    return dt == BNORM_DTYPE_F32 ? isfinite((float)v) : isfinite(v);
}

/* The float32 running update of n channels when the statistics of all of them are finite (the
 * usual case): loops without tests, which vectorize; the general loop of bnorm__finalize_range
 * took 2.7 us for 1024 channels. The same operations as that loop, so the same bits. Returns 0,
 * having written nothing, when some channel's are not finite. */
BNORM__CLONES static int running_update_f32(const double *mean, const double *m2, double inv_n1,
                                            double factor, float *run_mean, float *run_var,
                                            int64_t n) {
    int finite = 1;
#pragma omp simd reduction(& : finite)
    for (int64_t i = 0; i < n; i++)
        finite &= isfinite((float)mean[i]) & isfinite((float)(m2[i] * inv_n1));
    if (!finite) return 0;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        run_mean[i] = (float)((1.0 - factor) * (double)run_mean[i] + factor * mean[i]);
        run_var[i] = (float)((1.0 - factor) * (double)run_var[i] + factor * (m2[i] * inv_n1));
    }
    return 1;
}

/* save_mean = mean and save_invstd = 1/sqrt(m2 * inv_n + eps) where wanted (NULL: not); each may
 * be mean or m2 itself */
BNORM__CLONES static void save_constants(const double *mean, const double *m2, double inv_n,
                                         double eps, double *save_mean, double *save_invstd,
                                         int64_t n) {
    if (save_mean && save_invstd) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            const double mu = mean[i], v = m2[i] * inv_n;
            save_mean[i] = mu;
            save_invstd[i] = 1.0 / sqrt(v + eps);
        }
    } else if (save_invstd) {
        invstd_of(m2, save_invstd, inv_n, eps, n);
    } else if (save_mean) {
        memmove(save_mean, mean, (size_t)n * sizeof *mean);
    }
}

/* Step 3a for channels [c0, c1): moments and save_* indexed c - c0, running stats by absolute c.
 * factor < 0 means no running update. Returns the number of channels whose running update was
 * skipped, and the first such channel in *first_bad. */
int64_t bnorm__finalize_range(bnorm_dtype dt, const double *mean, const double *m2, int64_t count,
                              double eps, double *save_mean, double *save_invstd, void *run_mean,
                              void *run_var, double factor, int64_t c0, int64_t c1,
                              int64_t *first_bad) {
    /* Reciprocals of the counts once: divsd's throughput made the divisions per channel cost
     * more than the rest of this loop, which showed on wide, short tensors like (128,128). */
    const double inv_n = 1.0 / (double)count, inv_n1 = 1.0 / (double)(count - 1);
    int64_t bad = 0;
    /* The running update first and the saved statistics after, each channel's read before its
     * write: the caller may save into mean or m2 themselves. Loops without tests vectorize. */
    const int updated = factor >= 0.0 && dt == BNORM_DTYPE_F32 &&
                        running_update_f32(mean, m2, inv_n1, factor, (float *)run_mean + c0,
                                           (float *)run_var + c0, c1 - c0);
    for (int64_t c = c0; factor >= 0.0 && !updated && c < c1; c++) {
        const double mu = mean[c - c0];
        const double unbiased = m2[c - c0] * inv_n1;
        if (!finite_as(dt, mu) || !finite_as(dt, unbiased)) {
            if (bad++ == 0) *first_bad = c;
            continue;
        }
        store(dt, run_mean, c, (1.0 - factor) * load(dt, run_mean, c) + factor * mu);
        store(dt, run_var, c, (1.0 - factor) * load(dt, run_var, c) + factor * unbiased);
    }
    save_constants(mean, m2, inv_n, eps, save_mean, save_invstd, c1 - c0);
    return bad;
}

static bnorm_status nonfinite_status(const char *fn, int64_t bad, int64_t first) {
    if (bad == 0) return BNORM_OK;
    return bnorm__fail(BNORM_WARN_NONFINITE,
                       "%s: %lld channel(s) had non-finite batch statistics (first: channel %lld);"
                       " their running statistics were not updated",
                       fn, (long long)bad, (long long)first);
}

/* ------------------------------------------------------------------------------------------ */
/* Public API                                                                                  */
/* ------------------------------------------------------------------------------------------ */

bnorm_status bnorm_bn_stats(const bnorm_desc *x_desc, const void *x, bnorm_bn_moments *moments) {
    static const char fn[] = "bnorm_bn_stats";
    bnorm_status st = bnorm__check_desc(fn, x_desc);
    if (st) return st;
    if ((st = check_ptrs(fn, moments, "moments", NULL, NULL, NULL, NULL, NULL, NULL))) return st;
    if ((st = check_ptrs(fn, moments->mean, "moments->mean", moments->m2, "moments->m2", NULL, NULL,
                         NULL, NULL)))
        return st;
    if (bnorm_desc_numel(x_desc) > 0 &&
        (st = check_ptrs(fn, x, "x", NULL, NULL, NULL, NULL, NULL, NULL)))
        return st;
    if (moments->channels != x_desc->c)
        return bnorm__fail(BNORM_ERR_MISMATCH, "%s: input has %lld channels, moments hold %lld", fn,
                           (long long)x_desc->c, (long long)moments->channels);
    moments->count = x_desc->n * x_desc->spatial;
    const bnorm__fast_ops *k = fast_for(x_desc);
    if (k) {
        bnorm__fast_stats(k, x_desc, x, moments->mean, moments->m2);
        return BNORM_OK;
    }
    if (bnorm__channels_in_rows(x_desc)) {
        if (moments->count > 0)
            stats_by_rows(x_desc, x, 0, x_desc->c, moments->mean, moments->m2);
        else
            stats_range(x_desc, x, 0, x_desc->c, moments->mean, moments->m2);
        return BNORM_OK;
    }
    const int64_t bw = block_width(x_desc), nblocks = block_count(x_desc->c, bw);
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t c0 = blk * bw, c1 = c0 + bw < x_desc->c ? c0 + bw : x_desc->c;
        stats_range(x_desc, x, c0, c1, moments->mean + c0, moments->m2 + c0);
    }
    return BNORM_OK;
}

bnorm_status bnorm_bn_moments_merge(bnorm_bn_moments *acc, const bnorm_bn_moments *other) {
    static const char fn[] = "bnorm_bn_moments_merge";
    bnorm_status st = check_ptrs(fn, acc, "acc", other, "other", NULL, NULL, NULL, NULL);
    if (st) return st;
    if ((st = check_ptrs(fn, acc->mean, "acc->mean", acc->m2, "acc->m2", other->mean, "other->mean",
                         other->m2, "other->m2")))
        return st;
    if (acc->channels != other->channels)
        return bnorm__fail(BNORM_ERR_MISMATCH, "%s: moments of %lld and %lld channels", fn,
                           (long long)acc->channels, (long long)other->channels);
    if (acc->count < 0 || other->count < 0 || acc->count > INT64_MAX - other->count)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: counts %lld and %lld are invalid", fn,
                           (long long)acc->count, (long long)other->count);
    const int64_t na = acc->count, nb = other->count, n = na + nb;
    if (nb == 0) return BNORM_OK;
    for (int64_t c = 0; c < acc->channels; c++) {
        if (na == 0) {
            acc->mean[c] = other->mean[c];
            acc->m2[c] = other->m2[c];
            continue;
        }
        /* Chan et al.: delta = mb - ma; mean = ma + delta*nb/n; M2 = M2a + M2b + delta^2*na*nb/n.
         * Equal means give delta == 0 exactly, so constant data stays exact. */
        const double delta = other->mean[c] - acc->mean[c];
        const double wb = (double)nb / (double)n;
        acc->mean[c] += delta * wb;
        acc->m2[c] += other->m2[c] + delta * delta * (double)na * wb;
    }
    acc->count = n;
    return BNORM_OK;
}

bnorm_status bnorm_bn_moments_finalize(const bnorm_bn_moments *moments, bnorm_dtype dtype,
                                       double eps, double *save_mean, double *save_invstd,
                                       bnorm_bn_running *running) {
    static const char fn[] = "bnorm_bn_moments_finalize";
    bnorm_status st = check_ptrs(fn, moments, "moments", NULL, NULL, NULL, NULL, NULL, NULL);
    if (st) return st;
    if ((st = check_ptrs(fn, moments->mean, "moments->mean", moments->m2, "moments->m2", NULL, NULL,
                         NULL, NULL)))
        return st;
    if (dtype != BNORM_DTYPE_F32 && dtype != BNORM_DTYPE_F64)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: dtype %d is not f32 or f64", fn,
                           (int)dtype);
    if (moments->channels < 1 || moments->count < 0)
        return bnorm__fail(BNORM_ERR_INVALID_SHAPE, "%s: moments of %lld channels, count %lld", fn,
                           (long long)moments->channels, (long long)moments->count);
    if ((st = bnorm__check_eps(fn, eps)) || (st = check_running(fn, running)) ||
        (st = check_batch_count(fn, moments->count)))
        return st;
    if (moments->count == 0) return BNORM_OK; /* an empty batch changes nothing */
    const double factor = running ? running_factor(running) : -1.0;
    int64_t first = 0;
    const int64_t bad =
        bnorm__finalize_range(dtype, moments->mean, moments->m2, moments->count, eps, save_mean,
                              save_invstd, running ? running->mean : NULL,
                              running ? running->var : NULL, factor, 0, moments->channels, &first);
    if (running && running->num_batches_tracked) *running->num_batches_tracked += 1;
    return nonfinite_status(fn, bad, first);
}

bnorm_status bnorm_bn_apply(const bnorm_desc *x_desc, void *y, const void *x, const double *mean,
                            const double *invstd, const void *weight, const void *bias,
                            unsigned flags) {
    static const char fn[] = "bnorm_bn_apply";
    bnorm_status st = bnorm__check_desc(fn, x_desc);
    if (st || (st = check_flags(fn, flags))) return st;
    if (bnorm_desc_numel(x_desc) == 0) return BNORM_OK;
    if ((st = check_ptrs(fn, y, "y", x, "x", mean, "mean", invstd, "invstd"))) return st;
    const int64_t bw = block_width(x_desc), nblocks = block_count(x_desc->c, bw);
    const int relu = (flags & BNORM_BN_FUSE_RELU) != 0;
    const bnorm__fast_ops *k = fast_for(x_desc);
    if (k) {
        bnorm__fast_apply(k, x_desc, y, x, 0, x_desc->c, mean, invstd, weight, bias, relu);
        return BNORM_OK;
    }
    if (bnorm__channels_in_rows(x_desc)) {
        apply_by_rows(x_desc, y, x, mean, invstd, weight, bias, relu, 0, x_desc->c, bw);
        return BNORM_OK;
    }
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t c0 = blk * bw, c1 = c0 + bw < x_desc->c ? c0 + bw : x_desc->c;
        apply_range(x_desc, y, x, mean + c0, invstd + c0, weight, bias, relu, c0, c1);
    }
    return BNORM_OK;
}

bnorm_status bnorm_bn_forward_train(const bnorm_desc *x_desc, void *y, double *save_mean,
                                    double *save_invstd, const void *x, const void *weight,
                                    const void *bias, bnorm_bn_running *running, double eps,
                                    unsigned flags) {
    static const char fn[] = "bnorm_bn_forward_train";
    bnorm_status st = bnorm__check_desc(fn, x_desc);
    if (st || (st = check_flags(fn, flags)) || (st = bnorm__check_eps(fn, eps)) ||
        (st = check_running(fn, running)))
        return st;
    const int64_t count = x_desc->n * x_desc->spatial;
    if ((st = check_batch_count(fn, count))) return st;
    if (count == 0) return BNORM_OK;
    if ((st = check_ptrs(fn, y, "y", x, "x", NULL, NULL, NULL, NULL))) return st;

    const bnorm_dtype dt = x_desc->dtype;
    const int relu = (flags & BNORM_BN_FUSE_RELU) != 0;
    const double factor = running ? running_factor(running) : -1.0;
    const int64_t C = x_desc->c, bw = block_width(x_desc), nblocks = block_count(C, bw);
    int64_t bad = 0, first = C;
    const bnorm__fast_ops *k = fast_for(x_desc);
    if (k) {
        bad = bnorm__fast_forward_train(k, x_desc, y, x, weight, bias, relu, eps, save_mean,
                                        save_invstd, running ? running->mean : NULL,
                                        running ? running->var : NULL, factor, &first);
        if (running && running->num_batches_tracked) *running->num_batches_tracked += 1;
        return nonfinite_status(fn, bad, first);
    }
    /* channels in rows: a group's statistics by channel block, then its output by rows */
    if (bnorm__channels_in_rows(x_desc)) {
        double gmean[BNORM__CL_GROUP], ginv[BNORM__CL_GROUP];
        for (int64_t g0 = 0; g0 < C; g0 += BNORM__CL_GROUP) {
            const int64_t g1 = C - g0 < BNORM__CL_GROUP ? C : g0 + BNORM__CL_GROUP;
            int64_t g_first = C;
            /* ginv holds M2 until finalize replaces it, channel by channel */
            stats_by_rows(x_desc, x, g0, g1, gmean, ginv);
            bad += bnorm__finalize_range(dt, gmean, ginv, count, eps, gmean, ginv,
                                         running ? running->mean : NULL,
                                         running ? running->var : NULL, factor, g0, g1, &g_first);
            if (g_first < first) first = g_first;
            if (save_mean) memcpy(save_mean + g0, gmean, (size_t)(g1 - g0) * sizeof(double));
            if (save_invstd) memcpy(save_invstd + g0, ginv, (size_t)(g1 - g0) * sizeof(double));
            /* y may alias x: the group's statistics are complete, other groups' channels are
             * not written */
            apply_by_rows(x_desc, y, x, gmean, ginv, weight, bias, relu, g0, g1, bw);
        }
        if (running && running->num_batches_tracked) *running->num_batches_tracked += 1;
        return nonfinite_status(fn, bad, first);
    }
    /* y may alias x, so every block finishes its statistics before it writes; blocks touch
     * disjoint channels. */
#pragma omp parallel for schedule(static) reduction(+ : bad) reduction(min : first)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t c0 = blk * bw, c1 = c0 + bw < C ? c0 + bw : C;
        for (int64_t c = c0; c < c1; c++) { /* a channel's output while its x is in cache */
            double mean, m2, invstd;
            int64_t blk_first = C;
            stats_range(x_desc, x, c, c + 1, &mean, &m2);
            bad += bnorm__finalize_range(
                dt, &mean, &m2, count, eps, &mean, &invstd, running ? running->mean : NULL,
                running ? running->var : NULL, factor, c, c + 1, &blk_first);
            if (blk_first < first) first = blk_first;
            if (save_mean) save_mean[c] = mean;
            if (save_invstd) save_invstd[c] = invstd;
            apply_range(x_desc, y, x, &mean, &invstd, weight, bias, relu, c, c + 1);
        }
    }
    if (running && running->num_batches_tracked) *running->num_batches_tracked += 1;
    return nonfinite_status(fn, bad, first);
}

bnorm_status bnorm_bn_invstd(int64_t channels, bnorm_dtype dtype, double *invstd, const void *var,
                             double eps) {
    static const char fn[] = "bnorm_bn_invstd";
    bnorm_status st = check_ptrs(fn, invstd, "invstd", var, "var", NULL, NULL, NULL, NULL);
    if (st || (st = bnorm__check_eps(fn, eps))) return st;
    if (channels < 1)
        return bnorm__fail(BNORM_ERR_INVALID_SHAPE, "%s: channels=%lld must be >= 1", fn,
                           (long long)channels);
    if (dtype != BNORM_DTYPE_F32 && dtype != BNORM_DTYPE_F64)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: dtype %d is not f32 or f64", fn,
                           (int)dtype);
    bnorm__invstd_range(dtype, var, eps, 0, channels, invstd);
    return BNORM_OK;
}

bnorm_status bnorm_bn_forward_infer(const bnorm_desc *x_desc, void *y, const void *x,
                                    const void *weight, const void *bias, const void *mean,
                                    const void *var, double eps, unsigned flags) {
    static const char fn[] = "bnorm_bn_forward_infer";
    bnorm_status st = bnorm__check_desc(fn, x_desc);
    if (st || (st = check_flags(fn, flags)) || (st = bnorm__check_eps(fn, eps))) return st;
    if ((st = check_ptrs(fn, mean, "mean", var, "var", NULL, NULL, NULL, NULL))) return st;
    if (bnorm_desc_numel(x_desc) == 0) return BNORM_OK;
    if ((st = check_ptrs(fn, y, "y", x, "x", NULL, NULL, NULL, NULL))) return st;
    const bnorm_dtype dt = x_desc->dtype;
    const int64_t C = x_desc->c, bw = block_width(x_desc), nblocks = block_count(C, bw);
    const int relu = (flags & BNORM_BN_FUSE_RELU) != 0;
    const bnorm__fast_ops *k = fast_for(x_desc);
    if (k) {
        bnorm__fast_infer(k, x_desc, y, x, weight, bias, mean, var, eps, relu);
        return BNORM_OK;
    }
    /* channels in rows: the running statistics to double a group at a time, then the reference
     * apply split by rows */
    if (bnorm__channels_in_rows(x_desc)) {
        double mean_d[BNORM__CL_GROUP], invstd[BNORM__CL_GROUP];
        for (int64_t g0 = 0; g0 < C; g0 += BNORM__CL_GROUP) {
            const int64_t g1 = C - g0 < BNORM__CL_GROUP ? C : g0 + BNORM__CL_GROUP;
            load_range(dt, mean, g0, g1, mean_d);
            bnorm__invstd_range(dt, var, eps, g0, g1, invstd);
            apply_by_rows(x_desc, y, x, mean_d, invstd, weight, bias, relu, g0, g1, bw);
        }
        return BNORM_OK;
    }
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t c0 = blk * bw, c1 = c0 + bw < C ? c0 + bw : C;
        double mean_d[BNORM__BLOCK], invstd[BNORM__BLOCK];
        load_range(dt, mean, c0, c1, mean_d);
        bnorm__invstd_range(dt, var, eps, c0, c1, invstd);
        apply_range(x_desc, y, x, mean_d, invstd, weight, bias, relu, c0, c1);
    }
    return BNORM_OK;
}

static bnorm_status check_backward_common(const char *fn, const bnorm_desc *x_desc, const void *dy,
                                          const void *x, const double *mean, const double *invstd,
                                          unsigned flags) {
    bnorm_status st = bnorm__check_desc(fn, x_desc);
    if (st || (st = check_flags(fn, flags))) return st;
    if (bnorm_desc_numel(x_desc) == 0) return BNORM_OK;
    return check_ptrs(fn, dy, "dy", x, "x", mean, "mean", invstd, "invstd");
}

static bnorm_status check_source(const char *fn, bnorm_bn_stats_source source) {
    if (source != BNORM_BN_STATS_BATCH && source != BNORM_BN_STATS_FIXED)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: unknown statistics source %d", fn,
                           (int)source);
    return BNORM_OK;
}

bnorm_status bnorm_bn_backward_reduce(const bnorm_desc *x_desc, double *sum_dy, double *sum_dy_xhat,
                                      double *sum_dy_sq, const void *dy, const void *x,
                                      const double *mean, const double *invstd, const void *weight,
                                      const void *bias, unsigned flags) {
    static const char fn[] = "bnorm_bn_backward_reduce";
    bnorm_status st = check_backward_common(fn, x_desc, dy, x, mean, invstd, flags);
    if (st ||
        (st = check_ptrs(fn, sum_dy, "sum_dy", sum_dy_xhat, "sum_dy_xhat", NULL, NULL, NULL, NULL)))
        return st;
    const int64_t C = x_desc->c, bw = block_width(x_desc), nblocks = block_count(C, bw);
    const int relu = (flags & BNORM_BN_FUSE_RELU) != 0;
    if (bnorm_desc_numel(x_desc) == 0) {
        memset(sum_dy, 0, (size_t)C * sizeof *sum_dy);
        memset(sum_dy_xhat, 0, (size_t)C * sizeof *sum_dy_xhat);
        if (sum_dy_sq) memset(sum_dy_sq, 0, (size_t)C * sizeof *sum_dy_sq);
        return BNORM_OK;
    }
    const bnorm__fast_ops *k = fast_for(x_desc);
    if (k) {
        bnorm__fast_backward_reduce(k, x_desc, sum_dy, sum_dy_xhat, sum_dy_sq, dy, x, mean, invstd,
                                    weight, bias, relu);
        return BNORM_OK;
    }
    if (bnorm__channels_in_rows(x_desc)) {
        sums_by_rows(x_desc, sum_dy, sum_dy_xhat, sum_dy_sq, dy, x, mean, invstd, weight, bias,
                     relu, 0, C);
        return BNORM_OK;
    }
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t c0 = blk * bw, c1 = c0 + bw < C ? c0 + bw : C;
        reduce_range(x_desc, sum_dy + c0, sum_dy_xhat + c0, sum_dy_sq ? sum_dy_sq + c0 : NULL, dy,
                     x, mean + c0, invstd + c0, weight, bias, relu, c0, c1);
    }
    return BNORM_OK;
}

bnorm_status bnorm_bn_backward_apply(const bnorm_desc *x_desc, void *dx, const void *dy,
                                     const void *x, const double *mean, const double *invstd,
                                     const void *weight, const void *bias, const double *sum_dy,
                                     const double *sum_dy_xhat, const double *sum_dy_sq,
                                     int64_t count, bnorm_bn_stats_source source, unsigned flags) {
    static const char fn[] = "bnorm_bn_backward_apply";
    bnorm_status st = check_backward_common(fn, x_desc, dy, x, mean, invstd, flags);
    if (st || (st = check_source(fn, source))) return st;
    if (bnorm_desc_numel(x_desc) == 0) return BNORM_OK;
    if ((st = check_ptrs(fn, dx, "dx", NULL, NULL, NULL, NULL, NULL, NULL))) return st;
    const int batch = source == BNORM_BN_STATS_BATCH;
    if (batch) {
        if ((st = check_ptrs(fn, sum_dy, "sum_dy", sum_dy_xhat, "sum_dy_xhat", NULL, NULL, NULL,
                             NULL)))
            return st;
        if (count < x_desc->n * x_desc->spatial)
            return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT,
                               "%s: count=%lld is less than this tensor's %lld values per channel",
                               fn, (long long)count, (long long)(x_desc->n * x_desc->spatial));
    }
    const int64_t C = x_desc->c, bw = block_width(x_desc), nblocks = block_count(C, bw);
    const int relu = (flags & BNORM_BN_FUSE_RELU) != 0;
    const bnorm__fast_ops *k = fast_for(x_desc);
    if (k) {
        bnorm__fast_backward_apply(k, x_desc, dx, dy, x, mean, invstd, weight, bias, sum_dy,
                                   sum_dy_xhat, sum_dy_sq, count, batch, relu);
        return BNORM_OK;
    }
    if (bnorm__channels_in_rows(x_desc)) {
        dx_by_rows(x_desc, dx, dy, x, mean, invstd, weight, bias, sum_dy, sum_dy_xhat, count, batch,
                   relu, 0, C, bw);
        return BNORM_OK;
    }
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t c0 = blk * bw, c1 = c0 + bw < C ? c0 + bw : C;
        dx_range(x_desc, dx, dy, x, mean + c0, invstd + c0, weight, bias,
                 batch ? sum_dy + c0 : NULL, batch ? sum_dy_xhat + c0 : NULL, count, batch, relu,
                 c0, c1);
    }
    return BNORM_OK;
}

bnorm_status bnorm_bn_backward(const bnorm_desc *x_desc, void *dx, void *dweight, void *dbias,
                               const void *dy, const void *x, const double *mean,
                               const double *invstd, const void *weight, const void *bias,
                               bnorm_bn_stats_source source, unsigned flags) {
    static const char fn[] = "bnorm_bn_backward";
    bnorm_status st = check_backward_common(fn, x_desc, dy, x, mean, invstd, flags);
    if (st || (st = check_source(fn, source))) return st;
    const bnorm_dtype dt = x_desc->dtype;
    const int64_t C = x_desc->c, bw = block_width(x_desc), nblocks = block_count(C, bw),
                  count = x_desc->n * x_desc->spatial;
    const int relu = (flags & BNORM_BN_FUSE_RELU) != 0, batch = source == BNORM_BN_STATS_BATCH;
    if (count == 0) { /* no values: zero parameter gradients, no dx to write */
        for (int64_t c = 0; c < C; c++) {
            if (dweight) store(dt, dweight, c, 0.0);
            if (dbias) store(dt, dbias, c, 0.0);
        }
        return BNORM_OK;
    }
    const bnorm__fast_ops *k = fast_for(x_desc);
    if (k) {
        bnorm__fast_backward(k, x_desc, dx, dweight, dbias, dy, x, mean, invstd, weight, bias,
                             batch, relu);
        return BNORM_OK;
    }
    /* channels in rows: a group's sums by channel block, then its dx by rows */
    if (bnorm__channels_in_rows(x_desc)) {
        double sdy[BNORM__CL_GROUP], sdyx[BNORM__CL_GROUP];
        for (int64_t g0 = 0; g0 < C; g0 += BNORM__CL_GROUP) {
            const int64_t g1 = C - g0 < BNORM__CL_GROUP ? C : g0 + BNORM__CL_GROUP;
            if (dweight || dbias || batch)
                sums_by_rows(x_desc, sdy, sdyx, NULL, dy, x, mean + g0, invstd + g0, weight, bias,
                             relu, g0, g1);
            for (int64_t c = g0; c < g1; c++) {
                if (dweight) store(dt, dweight, c, sdyx[c - g0]);
                if (dbias) store(dt, dbias, c, sdy[c - g0]);
            }
            if (dx)
                dx_by_rows(x_desc, dx, dy, x, mean + g0, invstd + g0, weight, bias, sdy, sdyx,
                           count, batch, relu, g0, g1, bw);
        }
        return BNORM_OK;
    }
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t c0 = blk * bw, c1 = c0 + bw < C ? c0 + bw : C;
        for (int64_t c = c0; c < c1; c++) { /* a channel's dx while its dy and x are in cache */
            double sdy = 0.0, sdyx = 0.0;
            /* the sums are needed for dweight/dbias, and for dx only with batch statistics */
            if (dweight || dbias || batch)
                reduce_range(x_desc, &sdy, &sdyx, NULL, dy, x, mean + c, invstd + c, weight, bias,
                             relu, c, c + 1);
            if (dweight) store(dt, dweight, c, sdyx);
            if (dbias) store(dt, dbias, c, sdy);
            if (dx)
                dx_range(x_desc, dx, dy, x, mean + c, invstd + c, weight, bias, &sdy, &sdyx, count,
                         batch, relu, c, c + 1);
        }
    }
    return BNORM_OK;
}
