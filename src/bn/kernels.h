/* src/bn/kernels.h - internal batch-norm kernels. Not installed.
 *
 * Every kernel works on the channel range [c0, c1) of a tensor described by a validated
 * bnorm_desc, so callers can split channels across threads or into stack-sized blocks.
 * Conventions: T-typed per-channel arrays (weight, bias) are indexed by the absolute channel c;
 * double per-channel arrays (mean, invstd, moments, backward sums) by c - c0. weight/bias may be
 * NULL (1 and 0). Each reduction runs in one fixed order, so results do not depend on threads.
 *
 * The reference kernels accumulate and compute in double: they are the oracle the optimized
 * kernels are tested against, and the implementation where no optimized kernel exists. */
#ifndef BNORM_BN_KERNELS_H
#define BNORM_BN_KERNELS_H

#include <stdint.h>

#include "bnorm/bn.h"

#define BNORM__DECLARE_REF_KERNELS(T, SFX)                                                         \
    void bnorm__ref_stats_##SFX(const bnorm_desc *d, const T *x, int64_t c0, int64_t c1,           \
                                double *mean, double *m2);                                         \
    void bnorm__ref_sum_devs_##SFX(const bnorm_desc *d, const T *x, int64_t c0, int64_t c1,        \
                                   const double *shift, int squared, double *out);                 \
    void bnorm__ref_apply_##SFX(const bnorm_desc *d, T *y, const T *x, const double *mean,         \
                                const double *invstd, const T *weight, const T *bias, int relu,    \
                                int64_t c0, int64_t c1);                                           \
    void bnorm__ref_backward_reduce_##SFX(                                                         \
        const bnorm_desc *d, double *sum_dy, double *sum_dy_xhat, double *sum_dy_sq, const T *dy,  \
        const T *x, const double *mean, const double *invstd, const T *weight, const T *bias,      \
        int relu, int64_t c0, int64_t c1);                                                         \
    void bnorm__ref_backward_apply_##SFX(const bnorm_desc *d, T *dx, const T *dy, const T *x,      \
                                         const double *mean, const double *invstd,                 \
                                         const T *weight, const T *bias, const double *sum_dy,     \
                                         const double *sum_dy_xhat, int64_t count,                 \
                                         int batch_stats, int relu, int64_t c0, int64_t c1);

BNORM__DECLARE_REF_KERNELS(float, f32)
BNORM__DECLARE_REF_KERNELS(double, f64)

/* The float64 kernels that run (f64_kernels.c): the reference's arithmetic in loops that
 * vectorize, the same signatures and conventions. */
void bnorm__f64_stats(const bnorm_desc *d, const double *x, int64_t c0, int64_t c1, double *mean,
                      double *m2);
void bnorm__f64_sum_devs(const bnorm_desc *d, const double *x, int64_t c0, int64_t c1,
                         const double *shift, int squared, double *out);
/* s1[c - c0] = sum of x - shift and s2[c - c0] = sum of its squares over all rows (channels
 * in rows only): sum_devs' two sums in one pass */
void bnorm__f64_sum_devs2(const bnorm_desc *d, const double *x, int64_t c0, int64_t c1,
                          const double *shift, double *s1, double *s2);
void bnorm__f64_apply(const bnorm_desc *d, double *y, const double *x, const double *mean,
                      const double *invstd, const double *weight, const double *bias, int relu,
                      int64_t c0, int64_t c1);
void bnorm__f64_backward_reduce(const bnorm_desc *d, double *sum_dy, double *sum_dy_xhat,
                                double *sum_dy_sq, const double *dy, const double *x,
                                const double *mean, const double *invstd, const double *weight,
                                const double *bias, int relu, int64_t c0, int64_t c1);
void bnorm__f64_backward_apply(const bnorm_desc *d, double *dx, const double *dy, const double *x,
                               const double *mean, const double *invstd, const double *weight,
                               const double *bias, const double *sum_dy, const double *sum_dy_xhat,
                               int64_t count, int batch_stats, int relu, int64_t c0, int64_t c1);

#endif /* BNORM_BN_KERNELS_H */
