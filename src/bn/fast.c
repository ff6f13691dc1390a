/* src/bn/fast.c - threads and cache blocking for the float32 fast kernels.
 *
 * Channels-first (spatial > 1): a channel is the unit of work. Forward training computes the
 * channel's statistics, finalizes them and normalizes it while its data is still in cache, so the
 * input comes from memory once; backward does the same with its two reductions and dx. Threads
 * split the channels. With fewer than PARTS_MIN_C channels of a large size, each channel is split
 * into PARTS fixed parts (by batch rows, or by spatial columns when N is small) whose moments
 * merge in a fixed order. With short rows (small planes) consecutive channels go in blocks that
 * fit in L2, walked image by image (a block's planes in one image are contiguous); on AMD, two
 * passes over whole images instead (cf_flat). An
 * elementwise pass on its own (inference) keeps nothing in cache: threads split the tensor into
 * contiguous stretches.
 * Channels-last (and any (N,C) input, whose memory is the same in both layouts): channels go in
 * groups of at most BNORM__CL_GROUP. Reductions split the rows into PARTS fixed parts, whose
 * per-channel sums merge in part order; elementwise passes split the rows. With few rows, fixed
 * units of channels go on threads instead, each through the whole operation (cl_units).
 * Every reduction order is fixed by the shape alone: the same bits for any thread count.
 * Backward's sums and dx run in float lanes; where that would leave dx too little accuracy (see
 * bwd_needs_exact), a channel's sums are redone exactly and its dx computed in double
 * (backward_apply: where the caller's sums say so, see apply_exact).
 * Outputs larger than NT_BYTES are written with streaming stores (they will not be re-read from
 * cache soon, and streaming skips the read-for-ownership of the destination). While a thread
 * normalizes channel c from L2 it prefetches channel c+1, so that channel's trip from L3/DRAM
 * overlaps the work instead of following it. */
#include <math.h>
#include <string.h>

#include "bn/bn_internal.h"
#include "bn/fast.h"

#define PARTS            8
#define PARTS_MIN_C      8         /* below this many channels, split channels into parts */
#define PARTS_MIN_VALUES (1 << 17) /* ... when a channel has at least this many values */
#define CL_SUB           256       /* channels-last reductions: channels per sweep of the rows */
/* Channels-first rows shorter than SHORT_ROW floats go in blocks of consecutive channels (at most
 * BLOCK_MAX) whose input fits in BLOCK_BYTES, walked image by image. */
#define SHORT_ROW   1024
#define BLOCK_BYTES ((int64_t)256 << 10)
#define BLOCK_MAX   64
#define PAIR_BYTES  ((int64_t)1 << 20)
#define PF_BYTES    ((int64_t)1 << 20) /* see next_fits */
/* see cf_flat */
#define FLAT_GROUP       256
#define FLAT_PARTS       16
#define FLAT_MIN_SPATIAL 64                  /* smaller planes: blocks were as fast or faster */
#define FLAT_BYTES       ((int64_t)16 << 20) /* larger tensors: blocks in backward */
_Static_assert(FLAT_GROUP >= BLOCK_MAX, "a block's arrays hold a flat group");
/* channels-first apply on its own: at most FLAT_CHUNKS contiguous stretches of >= FLAT_MIN */
#define FLAT_CHUNKS 64
#define FLAT_MIN    (1 << 14)
/* ... each prefetching, into L2, the input FLAT_PF floats ahead of where it works (the hardware
 * prefetcher stops at every 4 KiB page): on Intel, inference on (32,64,56,56) went from 1.32-1.37
 * to 1.06-1.13 ms, on (64,64,112,112) from 10.0-10.3 to 8.7-8.9. Not on AMD, whose prefetchers
 * cross pages: there the prefetches only cost, 2-6% from memory and 14-20% in cache ((32,256,14,14)
 * warm 0.106-0.113 -> 0.089-0.092 ms; docs/performance-history.md, twenty-eighth session). */
#define FLAT_PF 2048
/* Streaming stores skip the destination's read-for-ownership and leave the caches to the input,
 * but send the output to memory: right when the call's tensors would not stay in cache anyway,
 * wrong when they would (the next pass or layer then reads the output back from memory). Where
 * that line lies depends on the CPU's caches (docs/performance-history.md):
 * - Intel (Emerald Rapids: 2 MiB L2 per core, a mesh L3 no faster than memory here): outputs
 *   larger than NT_BYTES. Streaming was worth 1.5-2x on forward for 12-26 MB tensors, and 5-20%
 *   on 6.4 MB ones once short planes were streamed as one stretch (no line half streamed, half
 *   stored); training the source network ran as fast either way.
 * - AMD (Zen 5: 1 MiB L2 per core, 32 MiB L3 per 8 cores): when the tensors the call reads and
 *   writes add up to more than NT_AMD_TOTAL. 6.4 MB forward (12.8 MB in all) with ordinary stores
 *   ran 1.2-2x faster on repeated calls (the tensors in L3), up to 20% slower on single calls
 *   after a cache wash; 6.4 MB backward (19.2 MB in all) 15-20% faster on repeated calls, as fast
 *   on single ones; 12.8 MB forward (25.6 MB) 15% faster or 13% slower from run to run. */
#define NT_BYTES     ((int64_t)4 << 20)
#define NT_AMD_TOTAL ((int64_t)24 << 20)
/* see bwd_relu */
#define RELU_THRESHOLD_MIN 1024

/* Tensors of at most SERIAL_BYTES run on the calling thread: waking the other threads and the
 * barriers cost more than they save. (128,128) (64 KB) on both cores took 5.7 us forward and
 * 9.0 us backward, on one 4.7 and 7.5; (16,32,8,8) (128 KB) was a draw, larger ones gain from
 * two. */
#define SERIAL_BYTES ((int64_t)64 << 10)

static int threaded(const bnorm_desc *d) {
    return bnorm_desc_numel(d) * (int64_t)sizeof(float) > SERIAL_BYTES;
}

/* for (int64_t i = 0; i < n; i++) body, spread over the threads when `on`. Not one region with an
 * `if (on)` clause: libgomp builds a team even for a region that the clause turns off, ~0.5 us
 * each time. The channel-by-channel loops, whose per-channel part loops sit inside a threaded
 * loop over channels, paid that twice per channel: warm, (2,64,3136) forward training took 0.059
 * ms with it and 0.026 without, backward 0.072 and 0.036; serial (128,128) training 2.9 and
 * 2.2 us (docs/performance-history.md). */
#define PRAGMA_(text)          _Pragma(#text)
#define PAR_FOR(on, i, n, ...) PAR_FOR_WITH(on, schedule(static), i, n, __VA_ARGS__)
/* ... with the threaded loop's clauses given (a schedule, reductions) */
#define PAR_FOR_WITH(on, clauses, i, n, ...)                                                       \
    do {                                                                                           \
        const int64_t n_ = (n);                                                                    \
        if (on) {                                                                                  \
            PRAGMA_(omp parallel for clauses)                                                      \
            for (int64_t i = 0; i < n_; i++)                                                       \
                __VA_ARGS__                                                                        \
        } else {                                                                                   \
            for (int64_t i = 0; i < n_; i++)                                                       \
                __VA_ARGS__                                                                        \
        }                                                                                          \
    } while (0)

/* whether a call that reads and writes `tensors` tensors of d's shape streams its output */
static int want_nt(const bnorm_desc *d, int tensors) {
    const int64_t bytes = bnorm_desc_numel(d) * (int64_t)sizeof(float);
    return bnorm__cpu_is_amd() ? bytes * tensors > NT_AMD_TOTAL : bytes > NT_BYTES;
}

/* Whether the channels-last passes prefetch rows ahead (within the `avail` rows they are given;
 * 0 turns it off): where the call's tensors come from memory, by want_nt's line. In cache the
 * prefetches only cost: one thread summing 512 channels of 256 rows (4 KiB apart), warm, took 5.3
 * us with them and 4.1 without; normalizing them 15.3 and 10.3 us (docs/performance-history.md,
 * twenty-seventh session). */
static int want_pf(const bnorm_desc *d, int tensors) {
    return want_nt(d, tensors);
}

/* Float constants of one channel: mean split hi + lo, scale = invstd*weight, bias. */
typedef struct {
    double md; /* the double mean, for backward */
    float mh, ml, scale, bias;
} chan_params;

static chan_params params_of(double mean, double invstd, const float *w, const float *b,
                             int64_t c) {
    chan_params p;
    p.md = mean;
    p.mh = (float)mean;
    p.ml = (float)(mean - (double)p.mh);
    p.scale = (float)(invstd * (w ? (double)w[c] : 1.0));
    p.bias = b ? b[c] : 0.0f;
    return p;
}

/* Moments (mean, M2) of n values (inv_n = 1/n) from sums of d = x - shift; when they cancel too
 * much to trust (sum d^2 more than 8x M2), M2 is recomputed exactly by `exact` (a second pass over
 * data that is still in cache). */
static void moments_from_sums(double inv_n, float shift, double s1, double s2, double *mean,
                              double *m2, int *needs_exact) {
    *mean = (double)shift + s1 * inv_n;
    double v = s2 - s1 * s1 * inv_n;
    *m2 = v > 0.0 ? v : 0.0;
    *needs_exact = s2 > 8.0 * *m2 && s2 > 0.0;
}

/* Chan's merge of (nb, mb, m2b) into (na, ma, m2a). */
static void merge(double *na, double *ma, double *m2a, double nb, double mb, double m2b) {
    if (nb == 0.0) return;
    if (*na == 0.0) {
        *na = nb, *ma = mb, *m2a = m2b;
        return;
    }
    const double n = *na + nb, delta = mb - *ma, wb = nb / n;
    *ma += delta * wb;
    *m2a += m2b + delta * delta * *na * wb;
    *na = n;
}

/* ---- channels-first ------------------------------------------------------------------------ */

static int cf_parts(const bnorm_desc *d) {
    return d->c < PARTS_MIN_C && d->n * d->spatial >= PARTS_MIN_VALUES ? PARTS : 1;
}

/* The piece `part` of `parts` of channel c: rows [r0, r0+nr) and columns [s0, s0+ns); returns the
 * offset of its first element. */
static int64_t cf_piece(const bnorm_desc *d, int64_t c, int part, int parts, int64_t *nr,
                        int64_t *ns) {
    int64_t r0 = 0, s0 = 0;
    *nr = d->n, *ns = d->spatial;
    if (parts > 1 && d->n >= parts) {
        r0 = d->n * part / parts;
        *nr = d->n * (part + 1) / parts - r0;
    } else if (parts > 1) {
        s0 = d->spatial * part / parts;
        *ns = d->spatial * (part + 1) / parts - s0;
    }
    return (r0 * d->c + c) * d->spatial + s0;
}

static void cf_piece_moments(const bnorm__fast_ops *k, const bnorm_desc *d, const float *x,
                             int64_t c, int part, int parts, float shift, double *n, double *mean,
                             double *m2) {
    int64_t nr, ns;
    const int64_t off = cf_piece(d, c, part, parts, &nr, &ns);
    *n = (double)(nr * ns);
    *mean = *m2 = 0.0;
    if (*n == 0.0) return;
    double s1 = 0.0, s2 = 0.0;
    int exact;
    const int64_t stride = d->c * d->spatial;
    k->sums(x + off, nr, stride, ns, shift, &s1, &s2);
    moments_from_sums(1.0 / *n, shift, s1, s2, mean, m2, &exact);
    if (exact) {
        const float mh = (float)*mean, ml = (float)(*mean - (double)mh);
        double e = 0.0;
        k->sqdev(x + off, nr, stride, ns, mh, ml, &e);
        *m2 = e;
    }
}

/* Moments of channel c; the shift is the channel's first value. Parts run in parallel when the
 * caller is not already inside a parallel loop over channels (parts > 1 only then). */
static void cf_moments(const bnorm__fast_ops *k, const bnorm_desc *d, const float *x, int64_t c,
                       int parts, double *mean, double *m2) {
    const float shift = x[c * d->spatial];
    double pn[PARTS], pm[PARTS], pm2[PARTS];
    PAR_FOR(parts > 1, p, parts,
            { cf_piece_moments(k, d, x, c, (int)p, parts, shift, &pn[p], &pm[p], &pm2[p]); });
    double n = 0.0, mu = 0.0, q = 0.0;
    for (int p = 0; p < parts; p++)
        merge(&n, &mu, &q, pn[p], pm[p], pm2[p]);
    *mean = mu;
    *m2 = q;
}

static double cf_count(const bnorm_desc *d) {
    return (double)(d->n * d->spatial);
}

/* Whether the next unit of work (a channel, a block of channels) is worth prefetching into L2
 * while the second pass works on this one from there: when both units' `tensors` (x; x and dy)
 * fit in PF_BYTES. Otherwise the prefetched data evicts what the second pass was about to read:
 * 3.2 MB channels ran forward training and backward 1.1x slower with the prefetch. */
static int next_fits(double bytes, int tensors) {
    return 2.0 * tensors * bytes <= (double)PF_BYTES;
}

/* The prefetch distance for channel c's second pass: the next channel when next_fits. */
static int64_t cf_chan_prefetch(const bnorm_desc *d, int64_t c, int tensors) {
    return c + 1 < d->c && next_fits(cf_count(d) * sizeof(float), tensors) ? d->spatial : 0;
}

/* The second pass of a fused channel walks its rows last to first: the first pass left
 * the last rows in L2, and a channel larger than L2 then finds part of it there instead of
 * reading all of it from memory again. Returns the offset of the first row walked and sets the
 * stride to walk with. */
static int64_t cf_second_pass(const bnorm_desc *d, int64_t off, int64_t nr, int fused,
                              int64_t *stride) {
    *stride = d->c * d->spatial;
    if (!fused || nr < 2) return off;
    off += (nr - 1) * *stride;
    *stride = -*stride;
    return off;
}

/* fused: the second pass of a fused loop (statistics then apply, channel by channel, the thread's
 * next channel c + 1): walked backwards (cf_second_pass), with the next channel prefetched
 * (cf_chan_prefetch) */
static void cf_apply_chan(const bnorm__fast_ops *k, const bnorm_desc *d, float *y, const float *x,
                          int64_t c, int parts, chan_params p, int relu, int nt, int fused) {
    PAR_FOR(parts > 1, part, parts, {
        int64_t nr, ns, stride;
        const int64_t first = cf_piece(d, c, (int)part, parts, &nr, &ns);
        const int64_t off = cf_second_pass(d, first, nr, fused, &stride);
        k->apply(y + off, x + off, nr, stride, ns, p.mh, p.ml, p.scale, p.bias, relu, nt,
                 fused ? cf_chan_prefetch(d, c, 1) : 0);
    });
}

/* Backward's sums in float lanes are good to ~1e-7 of sum|g| and sum|g*d|. dx = w*invstd*(g -
 * mean(g) - xhat*mean(g*xhat)) then carries an error of ~1e-7 of |g|, which matters only when dx
 * is far smaller than g: when g lies almost in the span of 1 and xhat (two values per channel, a
 * constant dy, dy linear in y). sum(g^2) - S^2/n - 2*T^2/n (S = sum(g), T = sum(g*xhat)) is a
 * lower bound of sum(dx^2)/(w*invstd)^2 that detects this; below 1% of sum(g^2) (dx under a tenth
 * of g, relative error above ~1e-6) the sums are redone exactly, and dx is computed in double
 * (in float, its terms' rounding would be as large). An all-zero g sums exactly. */
static int dx_cancels(double inv_n, double sg, double t, double sgg) {
    return sgg > 0.0 && !(sgg - sg * sg * inv_n - 2.0 * t * t * inv_n >= 0.01 * sgg);
}

/* dx_cancels from a channel's fast sums, sgd = sum(g*d) */
static int bwd_needs_exact(double inv_n, double sg, double sgd, double sgg, double invstd) {
    return dx_cancels(inv_n, sg, sgd * invstd, sgg);
}

/* backward_apply's dx for channels [c0, c0+n): exact with batch statistics, unless the caller's
 * sums of g^2 (global, like its other sums) show that none of them cancels. */
static int apply_exact(int batch, const double *sum_dy, const double *sum_dy_xhat,
                       const double *sum_dy_sq, int64_t count, int64_t c0, int64_t n) {
    if (!batch) return 0;
    if (!sum_dy_sq) return 1;
    const double inv_n = 1.0 / (double)count;
    for (int64_t j = c0; j < c0 + n; j++)
        if (dx_cancels(inv_n, sum_dy[j], sum_dy_xhat[j], sum_dy_sq[j])) return 1;
    return 0;
}

/* sg/sgd (and sgg unless exact) of channel c */
static void cf_bwd_sums_chan(const bnorm__fast_ops *k, const bnorm_desc *d, const float *dy,
                             const float *x, int64_t c, int parts, chan_params p, int relu,
                             int exact, double *sg, double *sgd, double *sgg) {
    double a[PARTS], b[PARTS], e[PARTS];
    PAR_FOR(parts > 1, part, parts, {
        int64_t nr, ns;
        const int64_t off = cf_piece(d, c, (int)part, parts, &nr, &ns);
        a[part] = b[part] = e[part] = 0.0;
        k->bwd_sums(dy + off, x + off, nr, d->c * d->spatial, ns, p.md, p.mh, p.ml, p.scale, p.bias,
                    relu, exact, &a[part], &b[part], &e[part]);
    });
    *sg = *sgd = *sgg = 0.0;
    for (int part = 0; part < parts; part++)
        *sg += a[part], *sgd += b[part], *sgg += e[part];
}

/* sg/sgd of channel c: fast, redone exactly (from cache) when bwd_needs_exact; returns whether
 * they were (dx must then be exact too). *sgg_out (when not NULL): the fast sum of g^2. */
static int cf_bwd_sums_checked(const bnorm__fast_ops *k, const bnorm_desc *d, const float *dy,
                               const float *x, int64_t c, int parts, chan_params p, double invstd,
                               int relu, double *sg, double *sgd, double *sgg_out) {
    double sgg;
    cf_bwd_sums_chan(k, d, dy, x, c, parts, p, relu, 0, sg, sgd, &sgg);
    if (sgg_out) *sgg_out = sgg;
    if (!bwd_needs_exact(1.0 / cf_count(d), *sg, *sgd, sgg, invstd)) return 0;
    cf_bwd_sums_chan(k, d, dy, x, c, parts, p, relu, 1, sg, sgd, &sgg);
    return 1;
}

/* dx coefficients of channels [c0, c0+n) (arrays indexed from 0, the sums too; they are unused,
 * and may be NULL, with fixed statistics): dx = g*a + (d*b + c) (see docs/batchnorm.md), a = w*s,
 * b = -w*s*s*mean(g*xhat), c = -w*s*mean(g); fixed statistics: b = c = 0. Branch-free loops, so
 * that they vectorize: with bwd_finish, a loop per channel with its tests took 3.3 us for 1024
 * channels (perf). */
static void bwd_coefficients_of(int64_t c0, int64_t n, const double *sum_dy,
                                const double *sum_dy_xhat, const double *invstd, const float *w,
                                int64_t count, int batch, double *restrict ca, double *restrict cb,
                                double *restrict cc) {
    const double inv_n = 1.0 / (double)count;
    if (w) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            ca[j] = (double)w[c0 + j] * invstd[c0 + j];
    } else {
        memcpy(ca, invstd + c0, (size_t)n * sizeof *ca);
    }
    if (!batch) {
        memset(cb, 0, (size_t)n * sizeof *cb);
        memset(cc, 0, (size_t)n * sizeof *cc);
        return;
    }
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        cb[j] = -ca[j] * invstd[c0 + j] * sum_dy_xhat[j] * inv_n;
        cc[j] = -ca[j] * sum_dy[j] * inv_n;
    }
}

/* From the sums of channels [c0, c0+n) (arrays indexed from 0): sgd turns from sum(g*d) into
 * sum(g*xhat), dweight and dbias are written (when wanted), and the dx coefficients computed. */
static void bwd_finish(int64_t c0, int64_t n, const double *sg, double *sgd, const double *invstd,
                       const float *w, float *dw, float *db, int64_t count, int batch, double *ca,
                       double *cb, double *cc) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++)
        sgd[j] *= invstd[c0 + j];
    if (dw) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            dw[c0 + j] = (float)sgd[j];
    }
    if (db) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            db[c0 + j] = (float)sg[j];
    }
    bwd_coefficients_of(c0, n, sg, sgd, invstd, w, count, batch, ca, cb, cc);
}

static void cf_bwd_apply_chan(const bnorm__fast_ops *k, const bnorm_desc *d, float *dx,
                              const float *dy, const float *x, int64_t c, int parts, chan_params p,
                              int relu, double a, double b, double cc, int exact, int nt,
                              int fused) {
    PAR_FOR(parts > 1, part, parts, {
        int64_t nr, ns, stride;
        const int64_t first = cf_piece(d, c, (int)part, parts, &nr, &ns);
        const int64_t off = cf_second_pass(d, first, nr, fused, &stride);
        k->bwd_apply(dx + off, dy + off, x + off, nr, stride, ns, p.md, p.mh, p.ml, p.scale, p.bias,
                     relu, a, b, cc, exact, nt, fused ? cf_chan_prefetch(d, c, 2) : 0);
    });
}

/* per-channel constants as arrays (channels-last groups, channels-first blocks) */
typedef struct {
    BNORM__LINE_ALIGNED double md[BNORM__CL_GROUP];
    BNORM__LINE_ALIGNED float mh[BNORM__CL_GROUP], ml[BNORM__CL_GROUP], scale[BNORM__CL_GROUP],
        bias[BNORM__CL_GROUP];
} param_arrays;

/* params_of for channels [c0, c0+width) (mean and invstd indexed from 0), one array at a time so
 * that each loop vectorizes: a loop per channel took 3.4 us for 1024 channels. */
static void param_arrays_of(param_arrays *p, const double *mean, const double *invstd,
                            const float *w, const float *b, int64_t c0, int64_t width) {
    float *restrict mh = p->mh, *restrict ml = p->ml, *restrict scale = p->scale;
    memcpy(p->md, mean, (size_t)width * sizeof *mean);
#pragma omp simd
    for (int64_t i = 0; i < width; i++)
        mh[i] = (float)mean[i];
#pragma omp simd
    for (int64_t i = 0; i < width; i++)
        ml[i] = (float)(mean[i] - (double)mh[i]);
    if (w) {
#pragma omp simd
        for (int64_t i = 0; i < width; i++)
            scale[i] = (float)(invstd[i] * (double)w[c0 + i]);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < width; i++)
            scale[i] = (float)invstd[i];
    }
    if (b)
        memcpy(p->bias, b + c0, (size_t)width * sizeof *b);
    else
        memset(p->bias, 0, (size_t)width * sizeof *b);
}

/* Backward's fused-ReLU mask (relu 0 or 1) as the kernels' relu mode: one comparison of x with
 * a threshold put in scale (fast.h), which on (64,64,112,112) NCHW cut the ReLU's cost in
 * backward from 8-12% to 3-6% (docs/performance-history.md); recomputing y (FORMULA) when a
 * channel has no threshold, or too few values to repay its search (a few dozen evaluations of
 * y). */
static int bwd_relu(const bnorm_desc *d, chan_params *p, int relu) {
    float t;
    if (!relu || d->n * d->spatial < RELU_THRESHOLD_MIN) return relu;
    const int mode = bnorm__relu_threshold(p->mh, p->ml, p->scale, p->bias, &t);
    if (mode != BNORM__RELU_FORMULA) p->scale = t;
    return mode;
}

/* The same for channels [0, width) of p: a threshold only when all of them have one in the same
 * direction (one relu mode per kernel call) */
static int bwd_relu_arrays(const bnorm_desc *d, param_arrays *p, int64_t width, int relu) {
    BNORM__LINE_ALIGNED float t[BNORM__CL_GROUP];
    int mode = BNORM__RELU_FORMULA;
    if (!relu || d->n * d->spatial < RELU_THRESHOLD_MIN) return relu;
    for (int64_t i = 0; i < width; i++) {
        const int m = bnorm__relu_threshold(p->mh[i], p->ml[i], p->scale[i], p->bias[i], &t[i]);
        if (m == BNORM__RELU_FORMULA || (i > 0 && m != mode)) return relu;
        mode = m;
    }
    memcpy(p->scale, t, (size_t)width * sizeof t[0]);
    return mode;
}

/* ---- channels-first with short rows: blocks of channels, image by image ------------------ */

/* A channel with short rows is N short runs C*spatial apart: walked channel by channel, each run
 * is too short for the hardware prefetchers to get going. The runs of consecutive channels in one
 * image are contiguous, so a block of channels is walked image by image, each image's stretch
 * read in one sweep; the block fits in L2 for the second pass. Each channel still sums its runs
 * in image order, whatever the block width. */
static int cf_blocked(const bnorm_desc *d) {
    return d->spatial < SHORT_ROW && d->n > 1 && cf_parts(d) == 1;
}

/* At least two channels when two fit in PAIR_BYTES and there are enough channels to keep at
 * least 16 blocks for the threads: each image's stretch is then twice as long, which ran
 * (128,32,28,28) 10-20% faster; with 9 channels the uneven split of 5 blocks cost 20-40%
 * (docs/performance-history.md). */
static int64_t cf_block_width(const bnorm_desc *d) {
    const int64_t chan = d->n * d->spatial * (int64_t)sizeof(float);
    const int64_t w = BLOCK_BYTES / chan;
    if (w < 2 && 2 * chan <= PAIR_BYTES && d->c >= 32) return 2;
    return w < 1 ? 1 : w > BLOCK_MAX ? BLOCK_MAX : w;
}

/* the blocks of channels [c0, c1): how many, and block blk's range */
static int64_t cf_block_count(const bnorm_desc *d, int64_t c0, int64_t c1) {
    const int64_t bw = cf_block_width(d);
    return (c1 - c0 + bw - 1) / bw;
}

static void cf_block(const bnorm_desc *d, int64_t c0, int64_t c1, int64_t blk, int64_t *b0,
                     int64_t *b1) {
    const int64_t bw = cf_block_width(d);
    *b0 = c0 + blk * bw;
    *b1 = c1 - *b0 < bw ? c1 : *b0 + bw;
}

/* Asks for n floats from p to be brought into L2: the next image's stretch of a block, started
 * while this one is summed (a new stretch every few KiB is too short for the hardware prefetchers
 * to get going on their own). Forward's statistics only: 5-8% on (128,32,28,28) and
 * (128,64,14,14); backward, prefetching both dy and x, ran up to 15% slower. */
static void prefetch_stretch(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; i += 64 / (int64_t)sizeof(float))
        __builtin_prefetch(p + i, 0, 2);
}

/* moments of channels [c0, c1) from their sums (all indexed from 0), M2 recomputed exactly
 * where moments_from_sums says so */
static void cf_block_moments(const bnorm__fast_ops *k, const bnorm_desc *d, const float *x,
                             int64_t c0, int64_t c1, const float *shift, const double *s1,
                             const double *s2, double *mean, double *m2) {
    const int64_t S = d->spatial, C = d->c;
    const double inv_n = 1.0 / cf_count(d);
    for (int64_t j = 0; j < c1 - c0; j++) {
        int exact;
        moments_from_sums(inv_n, shift[j], s1[j], s2[j], &mean[j], &m2[j], &exact);
        if (exact) {
            const float mh = (float)mean[j], ml = (float)(mean[j] - (double)mh);
            double e = 0.0;
            k->sqdev(x + (c0 + j) * S, d->n, C * S, S, mh, ml, &e);
            m2[j] = e;
        }
    }
}

/* moments of channels [c0, c1), indexed from 0; shifts are each channel's first value */
static void cfb_moments(const bnorm__fast_ops *k, const bnorm_desc *d, const float *x, int64_t c0,
                        int64_t c1, double *mean, double *m2) {
    const int64_t S = d->spatial, C = d->c, w = c1 - c0;
    BNORM__LINE_ALIGNED float shift[BLOCK_MAX];
    BNORM__LINE_ALIGNED double s1[BLOCK_MAX], s2[BLOCK_MAX];
    for (int64_t j = 0; j < w; j++)
        shift[j] = x[(c0 + j) * S], s1[j] = s2[j] = 0.0;
    for (int64_t i = 0; i < d->n; i++) {
        if (i + 1 < d->n) prefetch_stretch(x + ((i + 1) * C + c0) * S, w * S);
        k->sums_planes(x + (i * C + c0) * S, w, S, shift, s1, s2);
    }
    cf_block_moments(k, d, x, c0, c1, shift, s1, s2, mean, m2);
}

/* The prefetch distance for a block's second pass: the next block (right after it in every
 * image) when next_fits; 0 (none) otherwise, or for the last block. */
static int64_t cfb_prefetch(const bnorm_desc *d, int64_t c0, int64_t c1, int tensors) {
    const double block = (double)(c1 - c0) * cf_count(d) * sizeof(float);
    return c1 < d->c && next_fits(block, tensors) ? (c1 - c0) * d->spatial : 0;
}

static void cfb_apply(const bnorm__fast_ops *k, const bnorm_desc *d, float *y, const float *x,
                      int64_t c0, int64_t c1, const param_arrays *p, int relu, int nt) {
    const int64_t S = d->spatial, C = d->c, pf = cfb_prefetch(d, c0, c1, 1);
    for (int64_t i = 0; i < d->n; i++) {
        const int64_t off = (i * C + c0) * S;
        k->apply_planes(y + off, x + off, c1 - c0, S, p->mh, p->ml, p->scale, p->bias, relu, nt,
                        pf);
    }
    if (nt) k->fence();
}

/* Channels [c0, c1) (sums indexed from 0, invstd by channel) whose fast sums fail
 * bwd_needs_exact are summed again exactly (from cache). Returns whether any was. */
static int cf_redo_exact(const bnorm__fast_ops *k, const bnorm_desc *d, const float *dy,
                         const float *x, int64_t c0, int64_t c1, const param_arrays *p,
                         const double *invstd, int relu, double *sg, double *sgd,
                         const double *sgg) {
    const int64_t S = d->spatial, C = d->c;
    const double inv_n = 1.0 / cf_count(d);
    int any = 0;
    for (int64_t j = 0; j < c1 - c0; j++)
        if (bwd_needs_exact(inv_n, sg[j], sgd[j], sgg[j], invstd[c0 + j])) {
            sg[j] = sgd[j] = 0.0;
            k->bwd_sums(dy + (c0 + j) * S, x + (c0 + j) * S, d->n, C * S, S, p->md[j], p->mh[j],
                        p->ml[j], p->scale[j], p->bias[j], relu, 1, &sg[j], &sgd[j], NULL);
            any = 1;
        }
    return any;
}

/* sg/sgd of channels [c0, c1), indexed from 0 (set, not added to), redone exactly where they
 * must be (cf_redo_exact); returns whether any was. sgg_out (when not NULL): the fast sums of
 * g^2. */
static int cfb_bwd_sums(const bnorm__fast_ops *k, const bnorm_desc *d, const float *dy,
                        const float *x, int64_t c0, int64_t c1, const param_arrays *p,
                        const double *invstd, int relu, double *sg, double *sgd, double *sgg_out) {
    const int64_t S = d->spatial, C = d->c;
    BNORM__LINE_ALIGNED double sgg[BLOCK_MAX];
    for (int64_t j = 0; j < c1 - c0; j++)
        sg[j] = sgd[j] = sgg[j] = 0.0;
    for (int64_t i = 0; i < d->n; i++) {
        const int64_t off = (i * C + c0) * S;
        k->bwd_sums_planes(dy + off, x + off, c1 - c0, S, p->md, p->mh, p->ml, p->scale, p->bias,
                           relu, sg, sgd, sgg);
    }
    if (sgg_out) memcpy(sgg_out, sgg, (size_t)(c1 - c0) * sizeof *sgg_out);
    return cf_redo_exact(k, d, dy, x, c0, c1, p, invstd, relu, sg, sgd, sgg);
}

static void cfb_bwd_apply(const bnorm__fast_ops *k, const bnorm_desc *d, float *dx, const float *dy,
                          const float *x, int64_t c0, int64_t c1, const param_arrays *p, int relu,
                          const double *a, const double *b, const double *cc, int exact, int nt) {
    const int64_t S = d->spatial, C = d->c, pf = cfb_prefetch(d, c0, c1, 2);
    for (int64_t i = 0; i < d->n; i++) {
        const int64_t off = (i * C + c0) * S;
        k->bwd_apply_planes(dx + off, dy + off, x + off, c1 - c0, S, p->md, p->mh, p->ml, p->scale,
                            p->bias, relu, a, b, cc, exact, nt, pf);
    }
    if (nt) k->fence();
}

/* ---- channels-first with short rows on AMD: whole images, two passes ------------------------ */

/* On AMD (Zen 5) the blocks above ran 10-45% slower than passes over whole images: one that sums
 * each image's planes, then one that writes the output, reading the input again from L3 (or
 * memory). The short stretches of a block come in too slowly there; whole images are one long
 * stream each. Threads split the images into flat_parts fixed parts, whose sums are added up in
 * part order (ordered; parts dealt one at a time, so no thread waits long for its turn), so the
 * bits do not depend on the thread count; the output pass deals the parts the same way, so that
 * each thread re-reads the images it summed (from its own L2 where they fit: (4,256,14,14)
 * warm, in two runs, forward training 0.0201-0.0206 -> 0.0187-0.0197 ms, backward
 * 0.0283-0.0285 -> 0.0264-0.0278). Channels go FLAT_GROUP at a time (the width of the
 * constant arrays). Measured against blocks, whole images were as fast or slower only for planes
 * under FLAT_MIN_SPATIAL and, in backward, tensors over FLAT_BYTES (docs/performance-history.md):
 * forward re-reads x, backward dy and x. */
static int cf_flat(const bnorm_desc *d, int backward) {
    return cf_blocked(d) && d->spatial >= FLAT_MIN_SPATIAL &&
           (!backward || bnorm_desc_numel(d) * (int64_t)sizeof(float) <= FLAT_BYTES) &&
           bnorm__cpu_is_amd();
}

static int64_t flat_parts(const bnorm_desc *d) {
    return d->n < FLAT_PARTS ? d->n : FLAT_PARTS;
}

/* the images [i0, i1) of part p */
static void flat_part(const bnorm_desc *d, int64_t p, int64_t *i0, int64_t *i1) {
    const int64_t parts = flat_parts(d);
    *i0 = d->n * p / parts;
    *i1 = d->n * (p + 1) / parts;
}

/* the end of the group of channels that starts at g0 */
static int64_t flat_group_end(const bnorm_desc *d, int64_t g0) {
    return d->c - g0 < FLAT_GROUP ? d->c : g0 + FLAT_GROUP;
}

/* moments of channels [g0, g1), indexed from 0; shifts are each channel's first value */
static void cff_moments(const bnorm__fast_ops *k, const bnorm_desc *d, const float *x, int64_t g0,
                        int64_t g1, double *mean, double *m2) {
    const int64_t S = d->spatial, C = d->c, w = g1 - g0, parts = flat_parts(d);
    BNORM__LINE_ALIGNED float shift[FLAT_GROUP];
    BNORM__LINE_ALIGNED double t1[FLAT_GROUP], t2[FLAT_GROUP];
    for (int64_t j = 0; j < w; j++)
        shift[j] = x[(g0 + j) * S], t1[j] = t2[j] = 0.0;
#pragma omp parallel for schedule(static, 1) ordered if (threaded(d))
    for (int64_t p = 0; p < parts; p++) {
        BNORM__LINE_ALIGNED double s1[FLAT_GROUP], s2[FLAT_GROUP];
        int64_t i0, i1;
        flat_part(d, p, &i0, &i1);
        for (int64_t j = 0; j < w; j++)
            s1[j] = s2[j] = 0.0;
        for (int64_t i = i0; i < i1; i++)
            k->sums_planes(x + (i * C + g0) * S, w, S, shift, s1, s2);
#pragma omp ordered
        for (int64_t j = 0; j < w; j++)
            t1[j] += s1[j], t2[j] += s2[j];
    }
    cf_block_moments(k, d, x, g0, g1, shift, t1, t2, mean, m2);
}

/* As cfb_bwd_sums, for channels [g0, g1) */
static int cff_bwd_sums(const bnorm__fast_ops *k, const bnorm_desc *d, const float *dy,
                        const float *x, int64_t g0, int64_t g1, const param_arrays *pa,
                        const double *invstd, int relu, double *sg, double *sgd, double *sgg_out) {
    const int64_t S = d->spatial, C = d->c, w = g1 - g0, parts = flat_parts(d);
    BNORM__LINE_ALIGNED double sgg[FLAT_GROUP];
    for (int64_t j = 0; j < w; j++)
        sg[j] = sgd[j] = sgg[j] = 0.0;
#pragma omp parallel for schedule(static, 1) ordered if (threaded(d))
    for (int64_t p = 0; p < parts; p++) {
        BNORM__LINE_ALIGNED double a[FLAT_GROUP], b[FLAT_GROUP], e[FLAT_GROUP];
        int64_t i0, i1;
        flat_part(d, p, &i0, &i1);
        for (int64_t j = 0; j < w; j++)
            a[j] = b[j] = e[j] = 0.0;
        for (int64_t i = i0; i < i1; i++) {
            const int64_t off = (i * C + g0) * S;
            k->bwd_sums_planes(dy + off, x + off, w, S, pa->md, pa->mh, pa->ml, pa->scale, pa->bias,
                               relu, a, b, e);
        }
#pragma omp ordered
        for (int64_t j = 0; j < w; j++)
            sg[j] += a[j], sgd[j] += b[j], sgg[j] += e[j];
    }
    if (sgg_out) memcpy(sgg_out, sgg, (size_t)w * sizeof *sgg_out);
    return cf_redo_exact(k, d, dy, x, g0, g1, pa, invstd, relu, sg, sgd, sgg);
}

/* As cfb_apply, for channels [g0, g1), the parts dealt as cff_moments deals them */
static void cff_apply(const bnorm__fast_ops *k, const bnorm_desc *d, float *y, const float *x,
                      int64_t g0, int64_t g1, const param_arrays *pa, int relu, int nt) {
    const int64_t S = d->spatial, C = d->c, parts = flat_parts(d);
    PAR_FOR_WITH(threaded(d), schedule(static, 1), p, parts, {
        int64_t i0, i1;
        flat_part(d, p, &i0, &i1);
        for (int64_t i = i0; i < i1; i++) {
            const int64_t off = (i * C + g0) * S;
            k->apply_planes(y + off, x + off, g1 - g0, S, pa->mh, pa->ml, pa->scale, pa->bias, relu,
                            nt, 0);
        }
        if (nt) k->fence();
    });
}

/* As cfb_bwd_apply, for channels [g0, g1), the parts dealt as cff_bwd_sums deals them */
static void cff_bwd_apply(const bnorm__fast_ops *k, const bnorm_desc *d, float *dx, const float *dy,
                          const float *x, int64_t g0, int64_t g1, const param_arrays *pa, int relu,
                          const double *a, const double *b, const double *cc, int exact, int nt) {
    const int64_t S = d->spatial, C = d->c, parts = flat_parts(d);
    PAR_FOR_WITH(threaded(d), schedule(static, 1), p, parts, {
        int64_t i0, i1;
        flat_part(d, p, &i0, &i1);
        for (int64_t i = i0; i < i1; i++) {
            const int64_t off = (i * C + g0) * S;
            k->bwd_apply_planes(dx + off, dy + off, x + off, g1 - g0, S, pa->md, pa->mh, pa->ml,
                                pa->scale, pa->bias, relu, a, b, cc, exact, nt, 0);
        }
        if (nt) k->fence();
    });
}

/* ---- channels-last: one group of w <= BNORM__CL_GROUP channels starting at c0 -------------- */

/* Per-channel sums over all rows: s1/s2 (statistics: shift set) or sg/sgd (backward: dy set) of
 * channels [c0, c0+w). */
typedef struct {
    const bnorm__fast_ops *k;
    const bnorm_desc *d;
    const float *x, *dy;
    int64_t c0, w;
    const float *shift; /* statistics */
    const double *md;   /* backward */
    const float *mh, *ml, *scale, *bias;
    int relu;
    int exact;  /* backward: exact sums (s3 untouched) */
    int serial; /* all on the calling thread (a unit, see cl_units: fewer than PARTS*64 rows) */
    int pf;     /* prefetch rows ahead (want_pf) */
} cl_sum_job;

/* s3: backward's sum(g*g) (NULL for statistics) */
static void cl_sum_slice(const cl_sum_job *j, int64_t r0, int64_t nr, int64_t j0, int64_t jw,
                         double *s1, double *s2, double *s3) {
    const int64_t C = j->d->c, avail = j->pf ? j->d->n * j->d->spatial - r0 : 0;
    const float *xs = j->x + r0 * C + j->c0 + j0;
    if (j->dy)
        j->k->bwd_sums_cl(j->dy + r0 * C + j->c0 + j0, xs, nr, avail, C, jw, j->md + j0, j->mh + j0,
                          j->ml + j0, j->scale + j0, j->bias + j0, j->relu, j->exact, s1, s2, s3);
    else
        j->k->sums_cl(xs, nr, avail, C, jw, j->shift + j0, s1, s2);
}

static void cl_sums(const cl_sum_job *j, double *s1, double *s2, double *s3) {
    const int64_t rows = j->d->n * j->d->spatial, w = j->w;
    memset(s1, 0, (size_t)w * sizeof *s1);
    memset(s2, 0, (size_t)w * sizeof *s2);
    if (s3) memset(s3, 0, (size_t)w * sizeof *s3);
    if (rows == 0) return;
    if (j->serial) { /* what the few-rows split below computes for each channel */
        cl_sum_slice(j, 0, rows, 0, w, s1, s2, s3);
        return;
    }
    /* Few rows: PARTS fixed chunks of channels, each summed over all rows by one thread straight
     * into its slice of s1/s2. 16-aligned, or 64-aligned from 128 channels, so that a chunk runs
     * the kernels' four-vector chains rather than one-vector ones, whose adds wait on each
     * other. */
    if (rows < PARTS * 64 && w >= 32) {
        const int64_t u = w >= 128 ? 64 : 16;
        const int64_t units = (w + u - 1) / u, chunks = units < PARTS ? units : PARTS;
        PAR_FOR(threaded(j->d), k, chunks, {
            const int64_t a = units * k / chunks * u, e = units * (k + 1) / chunks * u;
            const int64_t b = e < w ? e : w;
            cl_sum_slice(j, 0, rows, a, b - a, s1 + a, s2 + a, s3 ? s3 + a : NULL);
        });
        return;
    }
    /* Otherwise PARTS fixed row parts (whole rows: each thread streams its own stretch of
     * memory), summed per channel and merged in part order. */
    const int parts = rows >= PARTS * 64 ? PARTS : 1;
    BNORM__LINE_ALIGNED double p1[PARTS][CL_SUB], p2[PARTS][CL_SUB], p3[PARTS][CL_SUB];
    for (int64_t j0 = 0; j0 < w; j0 += CL_SUB) {
        const int64_t jw = w - j0 < CL_SUB ? w - j0 : CL_SUB;
        PAR_FOR(parts > 1 && threaded(j->d), p, parts, {
            const int64_t r0 = rows * p / parts, r1 = rows * (p + 1) / parts;
            memset(p1[p], 0, (size_t)jw * sizeof p1[p][0]);
            memset(p2[p], 0, (size_t)jw * sizeof p2[p][0]);
            if (s3) memset(p3[p], 0, (size_t)jw * sizeof p3[p][0]);
            cl_sum_slice(j, r0, r1 - r0, j0, jw, p1[p], p2[p], s3 ? p3[p] : NULL);
        });
        for (int p = 0; p < parts; p++)
            for (int64_t i = 0; i < jw; i++) {
                s1[j0 + i] += p1[p][i], s2[j0 + i] += p2[p][i];
                if (s3) s3[j0 + i] += p3[p][i];
            }
    }
}

static cl_sum_job cl_bwd_job(const bnorm__fast_ops *k, const bnorm_desc *d, const float *dy,
                             const float *x, int64_t c0, int64_t w, const param_arrays *p, int relu,
                             int unit) {
    /* In groups, backward's sums prefetch into L1 at any size: with want_pf's rule,
     * (32,256,14,14) after its forward took 0.389-0.398 ms instead of 0.369-0.371 (wide rows
     * walked whole or in register chunks). A unit's sums (few rows, cl_units) follow want_pf,
     * and without prefetch go in register chunks (FK(bwd_sums_cl)): (256,1024) warm 0.036 ->
     * 0.032-0.033 ms, after its forward 0.092-0.093 -> 0.084-0.086, cold 0.116-0.117 ->
     * 0.107-0.108. The rule alone, wide rows still walked whole, was slower (cold 0.107 -> 0.127
     * in the twenty-seventh session, after the forward 0.089-0.095 -> 0.113-0.115 in the
     * twenty-eighth). */
    const cl_sum_job j = {k,     d,     x,        dy,      c0,   w, NULL, p->md,
                          p->mh, p->ml, p->scale, p->bias, relu, 0, unit, unit ? want_pf(d, 3) : 1};
    return j;
}

/* Backward's sg/sgd of the job's channels (invstd indexed from the job's c0): fast, then the
 * channels from the first to the last that fail bwd_needs_exact are summed again exactly (one
 * more read of their stretch of the rows; a channel's sums do not depend on its neighbours).
 * Returns whether any channel was. sgg_out (when not NULL): the fast sums of g^2. */
static int cl_bwd_sums(const cl_sum_job *j, const double *invstd, double *sg, double *sgd,
                       double *sgg_out) {
    BNORM__LINE_ALIGNED double sgg[BNORM__CL_GROUP];
    const double inv_n = 1.0 / (double)(j->d->n * j->d->spatial);
    int64_t lo = j->w, hi = -1;
    cl_sums(j, sg, sgd, sgg);
    if (sgg_out) memcpy(sgg_out, sgg, (size_t)j->w * sizeof *sgg_out);
    for (int64_t i = 0; i < j->w; i++)
        if (bwd_needs_exact(inv_n, sg[i], sgd[i], sgg[i], invstd[i])) {
            if (lo > i) lo = i;
            hi = i;
        }
    if (hi < lo) return 0;
    cl_sum_job e = *j;
    e.exact = 1, e.c0 += lo, e.w = hi + 1 - lo;
    e.md += lo, e.mh += lo, e.ml += lo, e.scale += lo, e.bias += lo;
    cl_sums(&e, sg + lo, sgd + lo, sgg + lo);
    return 1;
}

/* Moments of channels [c0, c0+w) into mean/m2 (indexed from 0). Narrow groups sum per part, so
 * their moments come from shifted sums over all rows like wide ones. serial: a unit's, on the
 * calling thread. */
static void cl_moments(const bnorm__fast_ops *k, const bnorm_desc *d, const float *x, int64_t c0,
                       int64_t w, double *mean, double *m2, int serial) {
    const int64_t rows = d->n * d->spatial;
    if (rows == 0) {
        memset(mean, 0, (size_t)w * sizeof *mean);
        memset(m2, 0, (size_t)w * sizeof *m2);
        return;
    }
    BNORM__LINE_ALIGNED float shift[BNORM__CL_GROUP];
    memcpy(shift, x + c0, (size_t)w * sizeof *shift);
    cl_sum_job j = {k,    d,    x,    NULL, c0, w, shift,  NULL,
                    NULL, NULL, NULL, NULL, 0,  0, serial, want_pf(d, 2)};
    BNORM__LINE_ALIGNED double s1[BNORM__CL_GROUP], s2[BNORM__CL_GROUP];
    cl_sums(&j, s1, s2, NULL);
    const double inv_n = 1.0 / (double)rows;
    int any_exact = 0;
    for (int64_t i = 0; i < w; i++) {
        int exact;
        moments_from_sums(inv_n, shift[i], s1[i], s2[i], &mean[i], &m2[i], &exact);
        any_exact |= exact;
    }
    if (any_exact) { /* rare: recompute M2 of the whole group exactly (one more read) */
        BNORM__LINE_ALIGNED float mh[BNORM__CL_GROUP], ml[BNORM__CL_GROUP];
        for (int64_t i = 0; i < w; i++) {
            mh[i] = (float)mean[i];
            ml[i] = (float)(mean[i] - (double)mh[i]);
            m2[i] = 0.0;
        }
        k->sqdev_cl(x + c0, rows, d->c, w, mh, ml, m2);
    }
}

/* The channels-last elementwise passes hand the threads blocks of rows: at least CL_ROW_BLOCK,
 * and at least CL_BLOCK_FLOATS values (64 KiB) a block, so that narrow rows do not pay a call's
 * set-up every few KiB. 64 rows of 32 channels were 8 KiB blocks: (128,32,28,28) inference took
 * 0.69-0.74 ms, 0.84-0.95 with tensors 16 bytes past a 64-byte boundary (whose call also rotates
 * the constants, see FK(cl_head) in fast_kernels.inc); blocks of 512 rows 0.71-0.72 and
 * 0.74-0.76, backward 2.44-2.52 / 2.58-2.70 -> 2.15-2.33 / 2.20-2.42 (two runs of the program
 * that became bench/ab_bench.c, alternating the two builds). */
#define CL_ROW_BLOCK    64
#define CL_BLOCK_FLOATS 16384
static int64_t cl_block_rows(int64_t C) {
    const int64_t r = CL_BLOCK_FLOATS / C;
    return r > CL_ROW_BLOCK ? r : CL_ROW_BLOCK;
}

static void cl_apply_group(const bnorm__fast_ops *k, const bnorm_desc *d, float *y, const float *x,
                           int64_t c0, int64_t w, const param_arrays *p, int relu, int nt) {
    const int64_t rows = d->n * d->spatial, C = d->c;
    const int pf = want_pf(d, 2);
    const int64_t rb = cl_block_rows(C), blocks = (rows + rb - 1) / rb;
    if (!threaded(d)) { /* no region (see PAR_FOR): the rows in one piece */
        k->apply_cl(y + c0, x + c0, rows, pf ? rows : 0, C, w, p->mh, p->ml, p->scale, p->bias,
                    relu, nt);
        if (nt) k->fence();
        return;
    }
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (int64_t blk = 0; blk < blocks; blk++) {
            const int64_t r0 = blk * rb;
            const int64_t nr = rows - r0 < rb ? rows - r0 : rb;
            k->apply_cl(y + r0 * C + c0, x + r0 * C + c0, nr, pf ? rows - r0 : 0, C, w, p->mh,
                        p->ml, p->scale, p->bias, relu, nt);
        }
        if (nt) k->fence();
    }
}

static void cl_bwd_apply_group(const bnorm__fast_ops *k, const bnorm_desc *d, float *dx,
                               const float *dy, const float *x, int64_t c0, int64_t w,
                               const param_arrays *p, int relu, const double *a, const double *b,
                               const double *c, int exact, int nt) {
    const int64_t rows = d->n * d->spatial, C = d->c;
    const int64_t rb = cl_block_rows(C), blocks = (rows + rb - 1) / rb;
    if (!threaded(d)) { /* as cl_apply_group */
        k->bwd_apply_cl(dx + c0, dy + c0, x + c0, rows, C, w, p->md, p->mh, p->ml, p->scale,
                        p->bias, relu, a, b, c, exact, nt);
        if (nt) k->fence();
        return;
    }
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (int64_t blk = 0; blk < blocks; blk++) {
            const int64_t r0 = blk * rb;
            const int64_t nr = rows - r0 < rb ? rows - r0 : rb;
            const int64_t off = r0 * C + c0;
            k->bwd_apply_cl(dx + off, dy + off, x + off, nr, C, w, p->md, p->mh, p->ml, p->scale,
                            p->bias, relu, a, b, c, exact, nt);
        }
        if (nt) k->fence();
    }
}

/* ---- channels-last with few rows: units of channels on threads ------------------------------ */

/* With at most CL_ROW_BLOCK rows the elementwise passes are one block, which one thread runs,
 * and all the per-channel work (moments, a square root and divisions, the constants) ran on the
 * calling thread too: wide, short tensors ran slower on two threads than on one, (2,100000)
 * forward training 1.04 ms against 0.76, most of it per channel. Such tensors go instead in units
 * of about CL_UNIT channels, each taken through the whole operation (its sums, its constants, its
 * stretch of every row) by one thread, and the threads split the units. (With 128 rows, whose
 * passes two threads already split by rows, units gained on aligned rows and lost on rows 16
 * bytes past a 64-byte boundary: (128,1024) inference 0.022 -> 0.028 ms.) The units depend on the
 * shape alone, so the bits do not depend on the thread count. Their number is even, so that two
 * threads get as much each, and they start on multiples of 16 channels (a cache line of
 * float32), so that with aligned rows no line of the output is written by two threads.
 * An op that sums (training, backward, statistics) takes units up to PARTS*64 rows, where its sums
 * split the channels among the threads anyway (cl_sums): each thread then normalizes the channels
 * it summed, from its own cache, in one parallel region instead of two with the channels' work
 * between them on one thread. Warm (scripts/ab.sh --warm 5, aligned / 16 bytes past a line),
 * (256,1024) training 0.0257 -> 0.0232 / 0.0264 -> 0.0244 ms, backward 0.0529 -> 0.0467 /
 * 0.0577 -> 0.0516. Elementwise passes on their own (inference) stay in blocks of rows: in
 * units, (256,1024) took 0.0212 ms instead of 0.0201. Returns the number of units, 0 when the
 * tensor goes in groups as usual. */
#define CL_UNIT 256
static int64_t cl_units(const bnorm_desc *d, int elementwise) {
    const int64_t rows = d->n * d->spatial;
    if (!bnorm__channels_in_rows(d) || d->c <= CL_UNIT || !threaded(d)) return 0;
    if (rows >= PARTS * 64 || (rows > CL_ROW_BLOCK && elementwise)) return 0;
    const int64_t u = (d->c + CL_UNIT - 1) / CL_UNIT;
    return u + (u & 1);
}

/* Runs body(ctx, c0, w, unit) over channels [c0, c1): on units split among the threads (unit =
 * 1: body runs everything on its thread), or on groups of at most BNORM__CL_GROUP one after
 * another (unit = 0: body's passes thread themselves).
 * An elementwise pass on its own (inference, apply) passes its output as `lines`: its units may
 * start wherever suits, since no reduction depends on them, and start on y's own cache lines,
 * which are the same channels in every row when C is a multiple of 16. Otherwise two threads
 * would write a line at each end of their units in every row: with rows 16 bytes past a 64-byte
 * boundary, as glibc's malloc places them, (64,1024) inference took 18 us on two threads against
 * 14 on one (14 as well with the units on y's lines), and (128,300) 11 against 7 with aligned
 * ones (rows of 1200 bytes). So with C not a multiple of 16 an elementwise pass takes units only
 * for tiny row counts, where the channels' own work outweighs a few shared lines. An op that
 * sums passes no `lines`: its units start on multiples of 16 channels wherever the rows lie, since
 * a unit's statistics are not quite independent of its neighbours' (a unit that needs exact sums
 * redoes a range of its channels, cl_moments and cl_bwd_sums), and must not depend on where the
 * caller's output happens to lie. */
static void cl_for_groups(const bnorm_desc *d, int64_t c0, int64_t c1, const float *lines,
                          void (*body)(void *ctx, int64_t c0, int64_t w, int unit), void *ctx) {
    int64_t units = cl_units(d, lines != NULL), h = 0;
    const int64_t n = c1 - c0, line = 64 / (int64_t)sizeof(float);
    if (units && lines) {
        if (d->c % line == 0)
            h = (int64_t)((64 - (uintptr_t)(lines + c0) % 64) % 64 / sizeof(float));
        else if (d->n * d->spatial > 8)
            units = 0;
    }
    if (units == 0) {
        for (int64_t g = c0; g < c1; g += BNORM__CL_GROUP)
            body(ctx, g, c1 - g < BNORM__CL_GROUP ? c1 - g : BNORM__CL_GROUP, 0);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t u = 0; u < units; u++) { /* units start at h + a multiple of 16 */
        const int64_t a0 = n * u / units, e0 = n * (u + 1) / units;
        const int64_t a = u == 0 ? 0 : a0 < h ? h : h + (a0 - h) / line * line;
        const int64_t e = u + 1 == units ? n : e0 < h ? h : h + (e0 - h) / line * line;
        body(ctx, c0 + a, e - a, 1);
    }
}

/* The elementwise passes over channels [c0, c0+w) of every row: a unit's on this thread */
static void cl_apply_span(const bnorm__fast_ops *k, const bnorm_desc *d, float *y, const float *x,
                          int64_t c0, int64_t w, const param_arrays *p, int relu, int nt,
                          int unit) {
    if (!unit) {
        cl_apply_group(k, d, y, x, c0, w, p, relu, nt);
        return;
    }
    const int64_t rows = d->n * d->spatial;
    k->apply_cl(y + c0, x + c0, rows, want_pf(d, 2) ? rows : 0, d->c, w, p->mh, p->ml, p->scale,
                p->bias, relu, nt);
    if (nt) k->fence();
}

static void cl_bwd_apply_span(const bnorm__fast_ops *k, const bnorm_desc *d, float *dx,
                              const float *dy, const float *x, int64_t c0, int64_t w,
                              const param_arrays *p, int relu, const double *a, const double *b,
                              const double *c, int exact, int nt, int unit) {
    if (!unit) {
        cl_bwd_apply_group(k, d, dx, dy, x, c0, w, p, relu, a, b, c, exact, nt);
        return;
    }
    const int64_t rows = d->n * d->spatial, off = c0;
    k->bwd_apply_cl(dx + off, dy + off, x + off, rows, d->c, w, p->md, p->mh, p->ml, p->scale,
                    p->bias, relu, a, b, c, exact, nt);
    if (nt) k->fence();
}

/* ---- whole-tensor operations ------------------------------------------------------------- */

typedef struct {
    const bnorm__fast_ops *k;
    const bnorm_desc *d;
    const float *x;
    double *mean, *m2;
} stats_job;

static void cl_stats_body(void *ctx, int64_t c0, int64_t w, int unit) {
    const stats_job *j = ctx;
    cl_moments(j->k, j->d, j->x, c0, w, j->mean + c0, j->m2 + c0, unit);
}

void bnorm__fast_stats(const bnorm__fast_ops *k, const bnorm_desc *d, const float *x, double *mean,
                       double *m2) {
    if (d->n == 0) {
        memset(mean, 0, (size_t)d->c * sizeof *mean);
        memset(m2, 0, (size_t)d->c * sizeof *m2);
        return;
    }
    if (bnorm__channels_in_rows(d)) {
        stats_job j = {k, d, x, mean, m2};
        cl_for_groups(d, 0, d->c, NULL, cl_stats_body, &j);
        return;
    }
    if (cf_flat(d, 0)) {
        for (int64_t g0 = 0, g1; g0 < d->c; g0 = g1) {
            g1 = flat_group_end(d, g0);
            cff_moments(k, d, x, g0, g1, mean + g0, m2 + g0);
        }
        return;
    }
    if (cf_blocked(d)) {
        const int64_t nblk = cf_block_count(d, 0, d->c);
        PAR_FOR(threaded(d), blk, nblk, {
            int64_t c0, c1;
            cf_block(d, 0, d->c, blk, &c0, &c1);
            cfb_moments(k, d, x, c0, c1, mean + c0, m2 + c0);
        });
        return;
    }
    const int parts = cf_parts(d);
    if (parts > 1) {
        for (int64_t c = 0; c < d->c; c++)
            cf_moments(k, d, x, c, parts, &mean[c], &m2[c]);
        return;
    }
    PAR_FOR(threaded(d), c, d->c, { cf_moments(k, d, x, c, 1, &mean[c], &m2[c]); });
}

/* Channels-first elementwise pass over channels [c0, c1) on its own (no statistics to keep in
 * cache): the group's values in memory order, (image, channel, position), cut into at most
 * FLAT_CHUNKS contiguous stretches (whole cache lines, at least FLAT_MIN floats) that the static
 * schedule hands each thread in one run, so that every thread reads and writes one long sequential
 * stretch, whatever the shape (one huge channel too). Channels go in groups of BNORM__CL_GROUP,
 * the width of the constant arrays. */
static void cf_apply_flat(const bnorm__fast_ops *k, const bnorm_desc *d, float *y, const float *x,
                          int64_t c0, int64_t c1, const double *mean, const double *invstd,
                          const float *w, const float *b, int relu, int nt) {
    const int64_t S = d->spatial, C = d->c, line = 64 / (int64_t)sizeof(float);
    const int flat_pf = !bnorm__cpu_is_amd();
    param_arrays p;
    for (int64_t g0 = c0; g0 < c1; g0 += BNORM__CL_GROUP) {
        const int64_t gw = c1 - g0 < BNORM__CL_GROUP ? c1 - g0 : BNORM__CL_GROUP;
        const int64_t total = d->n * gw * S, want = total / FLAT_MIN;
        const int64_t chunks = want < 1 ? 1 : want > FLAT_CHUNKS ? FLAT_CHUNKS : want;
        param_arrays_of(&p, mean + (g0 - c0), invstd + (g0 - c0), w, b, g0, gw);
        PAR_FOR(threaded(d), ch, chunks, {
            const int64_t e1 = ch + 1 == chunks ? total : total / line * (ch + 1) / chunks * line;
            for (int64_t e = total / line * ch / chunks * line; e < e1;) {
                const int64_t r = e / S, s = e % S, i = r / gw, j = r % gw;
                const int64_t off = (i * C + g0 + j) * S + s;
                if (s == 0 && e1 - e >= S) { /* whole planes of one image */
                    const int64_t fit = (e1 - e) / S, planes = gw - j < fit ? gw - j : fit;
                    /* the prefetches stay inside x */
                    const int64_t pf =
                        flat_pf && off + planes * S + FLAT_PF <= d->n * C * S ? FLAT_PF : 0;
                    k->apply_planes(y + off, x + off, planes, S, p.mh + j, p.ml + j, p.scale + j,
                                    p.bias + j, relu, nt, pf);
                    e += planes * S;
                } else { /* a chunk's ragged start or end within a plane */
                    const int64_t len = S - s < e1 - e ? S - s : e1 - e;
                    k->apply(y + off, x + off, 1, 0, len, p.mh[j], p.ml[j], p.scale[j], p.bias[j],
                             relu, nt, 0);
                    e += len;
                }
            }
            if (nt) k->fence();
        });
    }
}

/* The elementwise pass with given statistics (mean/invstd indexed from channel c_base), or,
 * when run_var is set, inference's from the running ones */
typedef struct {
    const bnorm__fast_ops *k;
    const bnorm_desc *d;
    float *y;
    const float *x, *w, *b;
    const double *mean, *invstd;
    int64_t c_base;
    const float *run_mean, *run_var;
    double eps;
    int relu, nt;
} apply_job;

/* Inference's statistics of channels [c0, c1) from the running ones, indexed c - c0 */
static void running_stats(const float *run_mean, const float *run_var, double eps, int64_t c0,
                          int64_t c1, double *mean, double *invstd) {
    for (int64_t c = c0; c < c1; c++)
        mean[c - c0] = (double)run_mean[c];
    bnorm__invstd_range(BNORM_DTYPE_F32, run_var, eps, c0, c1, invstd);
}

static void cl_apply_body(void *ctx, int64_t c0, int64_t w, int unit) {
    const apply_job *j = ctx;
    param_arrays p;
    if (j->run_var) {
        BNORM__LINE_ALIGNED double mean[BNORM__CL_GROUP], invstd[BNORM__CL_GROUP];
        running_stats(j->run_mean, j->run_var, j->eps, c0, c0 + w, mean, invstd);
        param_arrays_of(&p, mean, invstd, j->w, j->b, c0, w);
    } else {
        param_arrays_of(&p, j->mean + (c0 - j->c_base), j->invstd + (c0 - j->c_base), j->w, j->b,
                        c0, w);
    }
    cl_apply_span(j->k, j->d, j->y, j->x, c0, w, &p, j->relu, j->nt, unit);
}

void bnorm__fast_apply(const bnorm__fast_ops *k, const bnorm_desc *d, float *y, const float *x,
                       int64_t c0, int64_t c1, const double *mean, const double *invstd,
                       const float *w, const float *b, int relu) {
    const int nt = want_nt(d, 2) && y != x;
    if (bnorm__channels_in_rows(d)) {
        apply_job j = {k, d, y, x, w, b, mean, invstd, c0, NULL, NULL, 0.0, relu, nt};
        cl_for_groups(d, c0, c1, y, cl_apply_body, &j);
        return;
    }
    cf_apply_flat(k, d, y, x, c0, c1, mean, invstd, w, b, relu, nt);
}

void bnorm__fast_infer(const bnorm__fast_ops *k, const bnorm_desc *d, float *y, const float *x,
                       const float *w, const float *b, const float *run_mean, const float *run_var,
                       double eps, int relu) {
    if (bnorm__channels_in_rows(d)) {
        apply_job j = {k,    d, y,        x,       w,   b,    NULL,
                       NULL, 0, run_mean, run_var, eps, relu, want_nt(d, 2) && y != x};
        cl_for_groups(d, 0, d->c, y, cl_apply_body, &j);
        return;
    }
    BNORM__LINE_ALIGNED double mean[BNORM__CL_GROUP], invstd[BNORM__CL_GROUP];
    for (int64_t g0 = 0; g0 < d->c; g0 += BNORM__CL_GROUP) {
        const int64_t g1 = d->c - g0 < BNORM__CL_GROUP ? d->c : g0 + BNORM__CL_GROUP;
        running_stats(run_mean, run_var, eps, g0, g1, mean, invstd);
        bnorm__fast_apply(k, d, y, x, g0, g1, mean, invstd, w, b, relu);
    }
}

/* Runs body(ctx, c) for channels [0, C): threads split the channels; or one channel after
 * another on this thread, with parts > 1 (body's own loops over the channel's parts then run in
 * parallel) or for a tensor that is not `threaded`. */
static void for_channels(const bnorm_desc *d, int parts, void (*body)(void *ctx, int64_t c),
                         void *ctx) {
    const int64_t C = d->c;
    PAR_FOR(parts == 1 && threaded(d), c, C, { body(ctx, c); });
}

typedef struct {
    const bnorm__fast_ops *k;
    const bnorm_desc *d;
    float *y;
    const float *x, *w, *b;
    int relu;
    double eps;
    double *save_mean, *save_invstd;
    float *run_mean, *run_var;
    double factor;
    int nt, parts;
    int64_t bad, first_bad; /* skipped running updates: how many, the first channel */
} train_job;

static void train_chan(void *ctx, int64_t c) {
    train_job *j = ctx;
    const int64_t C = j->d->c;
    double mean, m2, invstd;
    int64_t f = C;
    cf_moments(j->k, j->d, j->x, c, j->parts, &mean, &m2);
    const int64_t bad =
        bnorm__finalize_range(BNORM_DTYPE_F32, &mean, &m2, j->d->n * j->d->spatial, j->eps, &mean,
                              &invstd, j->run_mean, j->run_var, j->factor, c, c + 1, &f);
    if (bad) {
#pragma omp critical(bnorm_train_bad)
        {
            j->bad += bad;
            if (f < j->first_bad) j->first_bad = f;
        }
    }
    if (j->save_mean) j->save_mean[c] = mean;
    if (j->save_invstd) j->save_invstd[c] = invstd;
    cf_apply_chan(j->k, j->d, j->y, j->x, c, j->parts, params_of(mean, invstd, j->w, j->b, c),
                  j->relu, j->nt, j->parts == 1);
}

/* A channels-last group's or unit's statistics, finalize and output */
static void cl_train_body(void *ctx, int64_t c0, int64_t gw, int unit) {
    train_job *j = ctx;
    param_arrays p;
    BNORM__LINE_ALIGNED double mean[BNORM__CL_GROUP], m2[BNORM__CL_GROUP], invstd[BNORM__CL_GROUP];
    int64_t f = j->d->c;
    cl_moments(j->k, j->d, j->x, c0, gw, mean, m2, unit);
    const int64_t bad =
        bnorm__finalize_range(BNORM_DTYPE_F32, mean, m2, j->d->n * j->d->spatial, j->eps, mean,
                              invstd, j->run_mean, j->run_var, j->factor, c0, c0 + gw, &f);
    if (bad) {
#pragma omp critical(bnorm_train_bad)
        {
            j->bad += bad;
            if (f < j->first_bad) j->first_bad = f;
        }
    }
    if (j->save_mean) memcpy(j->save_mean + c0, mean, (size_t)gw * sizeof *mean);
    if (j->save_invstd) memcpy(j->save_invstd + c0, invstd, (size_t)gw * sizeof *invstd);
    param_arrays_of(&p, mean, invstd, j->w, j->b, c0, gw);
    cl_apply_span(j->k, j->d, j->y, j->x, c0, gw, &p, j->relu, j->nt, unit);
}

/* Forward training of channels [c0, c1): a block on this thread, or with flat a group whose
 * passes spread over the threads. Returns the running updates skipped, *first_bad the first
 * channel of them. */
static int64_t cf_train_block(const train_job *j, int64_t c0, int64_t c1, int flat,
                              int64_t *first_bad) {
    const bnorm_desc *d = j->d;
    BNORM__LINE_ALIGNED double mean[FLAT_GROUP], m2[FLAT_GROUP], invstd[FLAT_GROUP];
    if (flat)
        cff_moments(j->k, d, j->x, c0, c1, mean, m2);
    else
        cfb_moments(j->k, d, j->x, c0, c1, mean, m2);
    const int64_t bad =
        bnorm__finalize_range(BNORM_DTYPE_F32, mean, m2, d->n * d->spatial, j->eps, mean, invstd,
                              j->run_mean, j->run_var, j->factor, c0, c1, first_bad);
    for (int64_t c = c0; c < c1; c++) {
        if (j->save_mean) j->save_mean[c] = mean[c - c0];
        if (j->save_invstd) j->save_invstd[c] = invstd[c - c0];
    }
    param_arrays p;
    param_arrays_of(&p, mean, invstd, j->w, j->b, c0, c1 - c0);
    if (flat)
        cff_apply(j->k, d, j->y, j->x, c0, c1, &p, j->relu, j->nt);
    else
        cfb_apply(j->k, d, j->y, j->x, c0, c1, &p, j->relu, j->nt);
    return bad;
}

int64_t bnorm__fast_forward_train(const bnorm__fast_ops *k, const bnorm_desc *d, float *y,
                                  const float *x, const float *w, const float *b, int relu,
                                  double eps, double *save_mean, double *save_invstd,
                                  float *run_mean, float *run_var, double factor,
                                  int64_t *first_bad) {
    const int64_t C = d->c;
    const int nt = want_nt(d, 2) && y != x;
    int64_t bad = 0, first = C;
    train_job j;
    memset(&j, 0, sizeof j);
    j.k = k, j.d = d, j.y = y, j.x = x, j.w = w, j.b = b, j.relu = relu, j.eps = eps;
    j.save_mean = save_mean, j.save_invstd = save_invstd, j.run_mean = run_mean;
    j.run_var = run_var, j.factor = factor, j.nt = nt, j.parts = cf_parts(d), j.first_bad = C;
    if (bnorm__channels_in_rows(d)) {
        cl_for_groups(d, 0, C, NULL, cl_train_body, &j);
        *first_bad = j.first_bad;
        return j.bad;
    }
    if (cf_flat(d, 0)) {
        for (int64_t g0 = 0, g1; g0 < C; g0 = g1) {
            int64_t f = C;
            g1 = flat_group_end(d, g0);
            bad += cf_train_block(&j, g0, g1, 1, &f);
            if (f < first) first = f;
        }
        *first_bad = first;
        return bad;
    }
    if (cf_blocked(d)) {
        PAR_FOR_WITH(threaded(d), schedule(static) reduction(+ : bad) reduction(min : first), blk,
                     cf_block_count(d, 0, C), {
                         int64_t c0, c1, f = C;
                         cf_block(d, 0, C, blk, &c0, &c1);
                         bad += cf_train_block(&j, c0, c1, 0, &f);
                         if (f < first) first = f;
                     });
        *first_bad = first;
        return bad;
    }
    /* one channel at a time per thread: statistics, finalize, normalize from cache */
    for_channels(d, j.parts, train_chan, &j);
    *first_bad = j.first_bad;
    return j.bad;
}

/* Channels-first backward, channel by channel (for_channels): the arguments of the three entry
 * points below */
typedef struct {
    const bnorm__fast_ops *k;
    const bnorm_desc *d;
    float *dx, *dw, *db;
    const float *dy, *x;
    const double *mean, *invstd;
    const float *w, *b;
    double *sum_out, *sum_xhat_out, *sum_sq_out;    /* backward_reduce's sums */
    const double *sum_dy, *sum_dy_xhat, *sum_dy_sq; /* backward_apply's */
    int64_t count;
    int batch, relu, nt, parts;
} bwd_job;

/* the fields all three share; the rest zero */
static bwd_job bwd_job_of(const bnorm__fast_ops *k, const bnorm_desc *d, const float *dy,
                          const float *x, const double *mean, const double *invstd, const float *w,
                          const float *b, int relu) {
    bwd_job j;
    memset(&j, 0, sizeof j);
    j.k = k, j.d = d, j.dy = dy, j.x = x, j.mean = mean, j.invstd = invstd, j.w = w, j.b = b;
    j.relu = relu, j.parts = cf_parts(d);
    return j;
}

static void bwd_reduce_chan(void *ctx, int64_t c) {
    const bwd_job *j = ctx;
    chan_params p = params_of(j->mean[c], j->invstd[c], j->w, j->b, c);
    const int relu = bwd_relu(j->d, &p, j->relu);
    cf_bwd_sums_checked(j->k, j->d, j->dy, j->x, c, j->parts, p, j->invstd[c], relu, &j->sum_out[c],
                        &j->sum_xhat_out[c], j->sum_sq_out ? &j->sum_sq_out[c] : NULL);
    j->sum_xhat_out[c] *= j->invstd[c];
}

static void bwd_apply_chan(void *ctx, int64_t c) {
    const bwd_job *j = ctx;
    double a, bb, cc;
    chan_params p = params_of(j->mean[c], j->invstd[c], j->w, j->b, c);
    const int relu = bwd_relu(j->d, &p, j->relu);
    bwd_coefficients_of(c, 1, j->batch ? j->sum_dy + c : NULL, j->batch ? j->sum_dy_xhat + c : NULL,
                        j->invstd, j->w, j->count, j->batch, &a, &bb, &cc);
    const int exact =
        apply_exact(j->batch, j->sum_dy, j->sum_dy_xhat, j->sum_dy_sq, j->count, c, 1);
    cf_bwd_apply_chan(j->k, j->d, j->dx, j->dy, j->x, c, j->parts, p, relu, a, bb, cc, exact, j->nt,
                      0);
}

/* dx is exact where the sums had to be (with batch statistics; with fixed ones dx = a*g cancels
 * nothing); backward_apply judges from the caller's sums (apply_exact). */
static void bwd_chan(void *ctx, int64_t c) {
    const bwd_job *j = ctx;
    chan_params p = params_of(j->mean[c], j->invstd[c], j->w, j->b, c);
    const int relu = bwd_relu(j->d, &p, j->relu);
    double sg = 0.0, sgd = 0.0, a, bb, cc;
    int exact = 0;
    if (j->batch || j->dw || j->db)
        exact = cf_bwd_sums_checked(j->k, j->d, j->dy, j->x, c, j->parts, p, j->invstd[c], relu,
                                    &sg, &sgd, NULL);
    bwd_finish(c, 1, &sg, &sgd, j->invstd, j->w, j->dw, j->db, j->count, j->batch, &a, &bb, &cc);
    if (j->dx)
        cf_bwd_apply_chan(j->k, j->d, j->dx, j->dy, j->x, c, j->parts, p, relu, a, bb, cc,
                          exact && j->batch, j->nt, j->parts == 1);
}

/* Channels-first backward of channels [c0, c1) with short rows: a block on this thread (flat 0),
 * or a group whose passes spread over the threads (flat 1, see cf_flat). The block's constants,
 * with the fused ReLU's mask as the kernels take it: */
static int cf_block_params(const bwd_job *j, param_arrays *p, int64_t c0, int64_t c1) {
    param_arrays_of(p, j->mean + c0, j->invstd + c0, j->w, j->b, c0, c1 - c0);
    return bwd_relu_arrays(j->d, p, c1 - c0, j->relu);
}

/* sg/sgd of channels [c0, c1) (indexed from 0); sgg_out as cfb_bwd_sums */
static int cf_block_sums(const bwd_job *j, const param_arrays *p, int mode, int64_t c0, int64_t c1,
                         int flat, double *sg, double *sgd, double *sgg_out) {
    if (flat)
        return cff_bwd_sums(j->k, j->d, j->dy, j->x, c0, c1, p, j->invstd, mode, sg, sgd, sgg_out);
    return cfb_bwd_sums(j->k, j->d, j->dy, j->x, c0, c1, p, j->invstd, mode, sg, sgd, sgg_out);
}

static void cf_block_dx(const bwd_job *j, const param_arrays *p, int mode, int64_t c0, int64_t c1,
                        int flat, const double *ca, const double *cb, const double *cc, int exact) {
    if (flat)
        cff_bwd_apply(j->k, j->d, j->dx, j->dy, j->x, c0, c1, p, mode, ca, cb, cc, exact, j->nt);
    else
        cfb_bwd_apply(j->k, j->d, j->dx, j->dy, j->x, c0, c1, p, mode, ca, cb, cc, exact, j->nt);
}

static void cf_bwd_reduce_block(const bwd_job *j, int64_t c0, int64_t c1, int flat) {
    param_arrays p;
    const int mode = cf_block_params(j, &p, c0, c1);
    cf_block_sums(j, &p, mode, c0, c1, flat, j->sum_out + c0, j->sum_xhat_out + c0,
                  j->sum_sq_out ? j->sum_sq_out + c0 : NULL);
    for (int64_t c = c0; c < c1; c++)
        j->sum_xhat_out[c] *= j->invstd[c];
}

static void cf_bwd_apply_block(const bwd_job *j, int64_t c0, int64_t c1, int flat) {
    param_arrays p;
    BNORM__LINE_ALIGNED double ca[FLAT_GROUP], cb[FLAT_GROUP], cc[FLAT_GROUP];
    const int mode = cf_block_params(j, &p, c0, c1);
    bwd_coefficients_of(c0, c1 - c0, j->batch ? j->sum_dy + c0 : NULL,
                        j->batch ? j->sum_dy_xhat + c0 : NULL, j->invstd, j->w, j->count, j->batch,
                        ca, cb, cc);
    const int exact =
        apply_exact(j->batch, j->sum_dy, j->sum_dy_xhat, j->sum_dy_sq, j->count, c0, c1 - c0);
    cf_block_dx(j, &p, mode, c0, c1, flat, ca, cb, cc, exact);
}

static void cf_bwd_block(const bwd_job *j, int64_t c0, int64_t c1, int flat) {
    param_arrays p;
    BNORM__LINE_ALIGNED double sg[FLAT_GROUP], sgd[FLAT_GROUP], ca[FLAT_GROUP], cb[FLAT_GROUP],
        cc[FLAT_GROUP];
    const int mode = cf_block_params(j, &p, c0, c1);
    int exact = 0;
    for (int64_t i = 0; i < c1 - c0; i++)
        sg[i] = sgd[i] = 0.0;
    if (j->batch || j->dw || j->db) exact = cf_block_sums(j, &p, mode, c0, c1, flat, sg, sgd, NULL);
    bwd_finish(c0, c1 - c0, sg, sgd, j->invstd, j->w, j->dw, j->db, j->count, j->batch, ca, cb, cc);
    if (j->dx) cf_block_dx(j, &p, mode, c0, c1, flat, ca, cb, cc, exact && j->batch);
}

/* Runs body over all channels with short rows: in flat groups one after another, each spread over
 * the threads (cf_flat), or in blocks that the threads split. */
static void cf_bwd_blocks(const bwd_job *j,
                          void (*body)(const bwd_job *j, int64_t c0, int64_t c1, int flat)) {
    const bnorm_desc *d = j->d;
    if (cf_flat(d, 1)) {
        for (int64_t g0 = 0, g1; g0 < d->c; g0 = g1) {
            g1 = flat_group_end(d, g0);
            body(j, g0, g1, 1);
        }
        return;
    }
    PAR_FOR(threaded(d), blk, cf_block_count(d, 0, d->c), {
        int64_t c0, c1;
        cf_block(d, 0, d->c, blk, &c0, &c1);
        body(j, c0, c1, 0);
    });
}

/* Channels-last backward, a group or a unit at a time (cl_for_groups). Their constants, with
 * the fused ReLU's mask as the kernels take it: */
static int cl_bwd_params(const bwd_job *j, param_arrays *p, int64_t c0, int64_t gw) {
    param_arrays_of(p, j->mean + c0, j->invstd + c0, j->w, j->b, c0, gw);
    return bwd_relu_arrays(j->d, p, gw, j->relu);
}

static void cl_bwd_reduce_body(void *ctx, int64_t c0, int64_t gw, int unit) {
    const bwd_job *j = ctx;
    param_arrays p;
    const int mode = cl_bwd_params(j, &p, c0, gw);
    const cl_sum_job s = cl_bwd_job(j->k, j->d, j->dy, j->x, c0, gw, &p, mode, unit);
    cl_bwd_sums(&s, j->invstd + c0, j->sum_out + c0, j->sum_xhat_out + c0,
                j->sum_sq_out ? j->sum_sq_out + c0 : NULL);
    for (int64_t i = c0; i < c0 + gw; i++)
        j->sum_xhat_out[i] *= j->invstd[i];
}

static void cl_bwd_apply_body(void *ctx, int64_t c0, int64_t gw, int unit) {
    const bwd_job *j = ctx;
    param_arrays p;
    BNORM__LINE_ALIGNED double ca[BNORM__CL_GROUP], cb[BNORM__CL_GROUP], cc[BNORM__CL_GROUP];
    const int mode = cl_bwd_params(j, &p, c0, gw);
    bwd_coefficients_of(c0, gw, j->batch ? j->sum_dy + c0 : NULL,
                        j->batch ? j->sum_dy_xhat + c0 : NULL, j->invstd, j->w, j->count, j->batch,
                        ca, cb, cc);
    const int exact =
        apply_exact(j->batch, j->sum_dy, j->sum_dy_xhat, j->sum_dy_sq, j->count, c0, gw);
    cl_bwd_apply_span(j->k, j->d, j->dx, j->dy, j->x, c0, gw, &p, mode, ca, cb, cc, exact, j->nt,
                      unit);
}

static void cl_bwd_body(void *ctx, int64_t c0, int64_t gw, int unit) {
    const bwd_job *j = ctx;
    param_arrays p;
    BNORM__LINE_ALIGNED double sg[BNORM__CL_GROUP], sgd[BNORM__CL_GROUP];
    BNORM__LINE_ALIGNED double ca[BNORM__CL_GROUP], cb[BNORM__CL_GROUP], cc[BNORM__CL_GROUP];
    const int mode = cl_bwd_params(j, &p, c0, gw);
    int exact = 0;
    if (j->batch || j->dw || j->db) {
        const cl_sum_job s = cl_bwd_job(j->k, j->d, j->dy, j->x, c0, gw, &p, mode, unit);
        exact = cl_bwd_sums(&s, j->invstd + c0, sg, sgd, NULL) && j->batch;
    } else {
        memset(sg, 0, (size_t)gw * sizeof *sg), memset(sgd, 0, (size_t)gw * sizeof *sgd);
    }
    bwd_finish(c0, gw, sg, sgd, j->invstd, j->w, j->dw, j->db, j->count, j->batch, ca, cb, cc);
    if (j->dx)
        cl_bwd_apply_span(j->k, j->d, j->dx, j->dy, j->x, c0, gw, &p, mode, ca, cb, cc, exact,
                          j->nt, unit);
}

void bnorm__fast_backward_reduce(const bnorm__fast_ops *k, const bnorm_desc *d, double *sum_dy,
                                 double *sum_dy_xhat, double *sum_dy_sq, const float *dy,
                                 const float *x, const double *mean, const double *invstd,
                                 const float *w, const float *b, int relu) {
    bwd_job j = bwd_job_of(k, d, dy, x, mean, invstd, w, b, relu);
    j.sum_out = sum_dy, j.sum_xhat_out = sum_dy_xhat, j.sum_sq_out = sum_dy_sq;
    if (bnorm__channels_in_rows(d)) {
        cl_for_groups(d, 0, d->c, NULL, cl_bwd_reduce_body, &j);
        return;
    }
    if (cf_blocked(d)) {
        cf_bwd_blocks(&j, cf_bwd_reduce_block);
        return;
    }
    for_channels(d, j.parts, bwd_reduce_chan, &j);
}

void bnorm__fast_backward_apply(const bnorm__fast_ops *k, const bnorm_desc *d, float *dx,
                                const float *dy, const float *x, const double *mean,
                                const double *invstd, const float *w, const float *b,
                                const double *sum_dy, const double *sum_dy_xhat,
                                const double *sum_dy_sq, int64_t count, int batch, int relu) {
    const int nt = want_nt(d, 3) && dx != x && dx != dy;
    bwd_job j = bwd_job_of(k, d, dy, x, mean, invstd, w, b, relu);
    j.dx = dx, j.sum_dy = sum_dy, j.sum_dy_xhat = sum_dy_xhat, j.sum_dy_sq = sum_dy_sq;
    j.count = count, j.batch = batch, j.nt = nt;
    if (bnorm__channels_in_rows(d)) {
        cl_for_groups(d, 0, d->c, NULL, cl_bwd_apply_body, &j);
        return;
    }
    if (cf_blocked(d)) {
        cf_bwd_blocks(&j, cf_bwd_apply_block);
        return;
    }
    for_channels(d, j.parts, bwd_apply_chan, &j);
}

void bnorm__fast_backward(const bnorm__fast_ops *k, const bnorm_desc *d, float *dx, float *dw,
                          float *db, const float *dy, const float *x, const double *mean,
                          const double *invstd, const float *w, const float *b, int batch,
                          int relu) {
    const int64_t count = d->n * d->spatial;
    const int nt = want_nt(d, 3) && dx != x && dx != dy;
    bwd_job j = bwd_job_of(k, d, dy, x, mean, invstd, w, b, relu);
    j.dx = dx, j.dw = dw, j.db = db, j.count = count, j.batch = batch, j.nt = nt;
    if (bnorm__channels_in_rows(d)) {
        cl_for_groups(d, 0, d->c, NULL, cl_bwd_body, &j);
        return;
    }
    if (cf_blocked(d)) {
        cf_bwd_blocks(&j, cf_bwd_block);
        return;
    }
    /* one channel at a time per thread: both sums, then dx while dy and x are in cache */
    for_channels(d, j.parts, bwd_chan, &j);
}
