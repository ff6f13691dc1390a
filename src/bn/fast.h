/* src/bn/fast.h - the float32 fast path: per-ISA kernel tables (fast_kernels.inc), run-time
 * dispatch, and the orchestration that threads and cache-blocks them (fast.c). Not installed.
 *
 * Double per-channel arrays follow kernels.h: mean/invstd/moments/sums indexed by channel. */
#ifndef BNORM_BN_FAST_H
#define BNORM_BN_FAST_H

#include <stdint.h>

#include "bnorm/bn.h"

#define BNORM__CL_GROUP 1024 /* channels-last kernels handle at most this many channels a call */
/* Per-channel arrays that the kernels read a vector at a time, on cache lines: a 64-byte load
 * that straddles two lines costs two. */
#define BNORM__LINE_ALIGNED _Alignas(64)

/* The kernels' `relu` argument. Forward: 0 or 1 (fused ReLU). Backward, how dy is masked where
 * forward's y was not > 0: not at all, by recomputing y (FORMULA), or by one comparison with a
 * threshold that `scale` then holds in place of the scale (ABOVE: x >= t, BELOW: x <= t; see
 * bnorm__relu_threshold). Backward uses scale and bias for nothing else. */
enum { BNORM__RELU_FORMULA = 1, BNORM__RELU_ABOVE = 2, BNORM__RELU_BELOW = 3 };

typedef struct bnorm__fast_ops {
    const char *name;
    void (*sums)(const float *x, int64_t rows, int64_t stride, int64_t len, float shift, double *s1,
                 double *s2);
    void (*sqdev)(const float *x, int64_t rows, int64_t stride, int64_t len, float mh, float ml,
                  double *s2);
    /* pf != 0: also prefetch, into L2, the data pf floats further on (the next channel) */
    void (*apply)(float *y, const float *x, int64_t rows, int64_t stride, int64_t len, float mh,
                  float ml, float scale, float bias, int relu, int nt, int64_t pf);
    /* backward sums sg += sum(g), sgd += sum(g*(x - mean)) and sgg += sum(g*g) in float lanes;
     * exact: sg and sgd exact to double instead (sgg untouched, may be NULL) */
    void (*bwd_sums)(const float *dy, const float *x, int64_t rows, int64_t stride, int64_t len,
                     double md, float mh, float ml, float scale, float bias, int relu, int exact,
                     double *sg, double *sgd, double *sgg);
    /* dx = a*g + (b*(x - mean) + c); exact: in double, rounded once, else in float */
    void (*bwd_apply)(float *dx, const float *dy, const float *x, int64_t rows, int64_t stride,
                      int64_t len, double md, float mh, float ml, float scale, float bias, int relu,
                      double a, double b, double c, int exact, int nt, int64_t pf);
    /* channels-first short rows: `planes` consecutive planes of len floats, plane j with the
     * per-channel values of index j. apply_planes and bwd_apply_planes do not fence their
     * streaming stores: the caller calls fence after the last of them. */
    void (*sums_planes)(const float *x, int64_t planes, int64_t len, const float *shift, double *s1,
                        double *s2);
    void (*apply_planes)(float *y, const float *x, int64_t planes, int64_t len, const float *mh,
                         const float *ml, const float *scale, const float *bias, int relu, int nt,
                         int64_t pf);
    void (*bwd_sums_planes)(const float *dy, const float *x, int64_t planes, int64_t len,
                            const double *md, const float *mh, const float *ml, const float *scale,
                            const float *bias, int relu, double *sg, double *sgd, double *sgg);
    void (*bwd_apply_planes)(float *dx, const float *dy, const float *x, int64_t planes,
                             int64_t len, const double *md, const float *mh, const float *ml,
                             const float *scale, const float *bias, int relu, const double *a,
                             const double *b, const double *c, int exact, int nt, int64_t pf);
    /* channels-last: `rows` rows of `stride` floats, channels [0, w) of each; the kernels
     * prefetch rows ahead within the first `avail` (at most the rows x and dy hold; 0: none) */
    void (*sums_cl)(const float *x, int64_t rows, int64_t avail, int64_t stride, int64_t w,
                    const float *shift, double *s1, double *s2);
    void (*sqdev_cl)(const float *x, int64_t rows, int64_t stride, int64_t w, const float *mh,
                     const float *ml, double *s2);
    void (*apply_cl)(float *y, const float *x, int64_t rows, int64_t avail, int64_t stride,
                     int64_t w, const float *mh, const float *ml, const float *scale,
                     const float *bias, int relu, int nt);
    void (*bwd_sums_cl)(const float *dy, const float *x, int64_t rows, int64_t avail,
                        int64_t stride, int64_t w, const double *md, const float *mh,
                        const float *ml, const float *scale, const float *bias, int relu, int exact,
                        double *sg, double *sgd, double *sgg);
    void (*bwd_apply_cl)(float *dx, const float *dy, const float *x, int64_t rows, int64_t stride,
                         int64_t w, const double *md, const float *mh, const float *ml,
                         const float *scale, const float *bias, int relu, const double *a,
                         const double *b, const double *c, int exact, int nt);
    void (*fence)(void); /* orders streaming stores before what follows */
} bnorm__fast_ops;

extern const bnorm__fast_ops bnorm__fast_ops_avx512;
extern const bnorm__fast_ops bnorm__fast_ops_avx2;
extern const bnorm__fast_ops bnorm__fast_ops_scalar;

/* The kernels float32 calls use: the best the CPU supports, unless BNORM_ISA (environment:
 * reference, scalar, avx2, avx512) or bnorm__fast_select asked for another. NULL means the
 * reference kernels. */
const bnorm__fast_ops *bnorm__fast_current(void);

/* Selects by name ("reference", "scalar", "avx2", "avx512", or "auto"); returns 0 when the name
 * is unknown or the CPU lacks the ISA. For tests and benchmarks; not thread-safe. */
int bnorm__fast_select(const char *name);

/* whether the CPU is AMD's, whose caches want other streaming choices than Intel's (fast.c) */
int bnorm__cpu_is_amd(void);
/* tests: take the CPU for AMD's (1) or not (0) from now on, whatever it is */
void bnorm__cpu_assume_amd(int amd);

/* ---- orchestration (fast.c): whole-tensor operations on float32 data, arguments validated ---- */

void bnorm__fast_stats(const bnorm__fast_ops *k, const bnorm_desc *d, const float *x, double *mean,
                       double *m2);
/* Channels [c0, c1); mean and invstd indexed c - c0. */
void bnorm__fast_apply(const bnorm__fast_ops *k, const bnorm_desc *d, float *y, const float *x,
                       int64_t c0, int64_t c1, const double *mean, const double *invstd,
                       const float *w, const float *b, int relu);
/* Inference: apply with the statistics of the running ones, mean and var [C] (float32). */
void bnorm__fast_infer(const bnorm__fast_ops *k, const bnorm_desc *d, float *y, const float *x,
                       const float *w, const float *b, const float *run_mean, const float *run_var,
                       double eps, int relu);
/* Statistics, finalize (save_mean/save_invstd and running update with factor >= 0) and apply,
 * channel by channel while the channel is in cache. Returns the number of channels whose running
 * update was skipped for non-finite statistics (first one in *first_bad). */
int64_t bnorm__fast_forward_train(const bnorm__fast_ops *k, const bnorm_desc *d, float *y,
                                  const float *x, const float *w, const float *b, int relu,
                                  double eps, double *save_mean, double *save_invstd,
                                  float *run_mean, float *run_var, double factor,
                                  int64_t *first_bad);
/* sum_dy_sq may be NULL (not wanted); it is the fast sums' (float lanes), good for
 * backward_apply's test, not for more. */
void bnorm__fast_backward_reduce(const bnorm__fast_ops *k, const bnorm_desc *d, double *sum_dy,
                                 double *sum_dy_xhat, double *sum_dy_sq, const float *dy,
                                 const float *x, const double *mean, const double *invstd,
                                 const float *w, const float *b, int relu);
/* sum_dy_sq NULL: dx exact (double) everywhere with batch statistics */
void bnorm__fast_backward_apply(const bnorm__fast_ops *k, const bnorm_desc *d, float *dx,
                                const float *dy, const float *x, const double *mean,
                                const double *invstd, const float *w, const float *b,
                                const double *sum_dy, const double *sum_dy_xhat,
                                const double *sum_dy_sq, int64_t count, int batch, int relu);
/* Reduce and dx fused per channel; dw/db (may be NULL) receive the sums. */
void bnorm__fast_backward(const bnorm__fast_ops *k, const bnorm_desc *d, float *dx, float *dw,
                          float *db, const float *dy, const float *x, const double *mean,
                          const double *invstd, const float *w, const float *b, int batch,
                          int relu);

/* The threshold on x that gives forward's fused-ReLU mask y = ((x - mh) - ml)*scale + bias > 0
 * (float operations) exactly: returns BNORM__RELU_ABOVE or _BELOW with *t set (NaN when no x
 * passes), or BNORM__RELU_FORMULA when there is no such threshold (scale 0, or a constant not
 * finite; *t untouched). relu_threshold.c */
int bnorm__relu_threshold(float mh, float ml, float scale, float bias, float *t);

#endif /* BNORM_BN_FAST_H */
