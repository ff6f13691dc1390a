/* bnorm/bn.h - batch normalization: the core of libbnorm. Needs nothing but libc and libm.
 *
 * Semantics are PyTorch's nn.BatchNorm1d/2d/3d and F.batch_norm: per channel, statistics over the
 * batch and all spatial positions; biased variance to normalize, unbiased variance in the running
 * estimate; running = (1 - momentum) * running + momentum * batch; momentum "None" is a cumulative
 * average driven by num_batches_tracked. docs/batchnorm.md derives every formula used here.
 *
 * Worked example: train-mode forward and backward of a (N,C,H,W) float32 tensor with the layer.
 *
 *     int64_t shape[4] = {32, 16, 28, 28};
 *     bnorm_desc xd;
 *     bnorm_bn_layer *bn;
 *     bnorm_bn_options opt = bnorm_bn_options_default(16); // eps 1e-5, momentum 0.1, affine
 *     if (bnorm_desc_init(&xd, BNORM_DTYPE_F32, BNORM_LAYOUT_CHANNELS_FIRST, 4, shape) ||
 *         bnorm_bn_layer_create(&bn, &opt, NULL))
 *         fprintf(stderr, "%s\n", bnorm_last_error());
 *     bnorm_bn_layer_forward(bn, &xd, y, x);       // batch statistics; running ones updated
 *     bnorm_bn_layer_backward(bn, &xd, dx, dy, x); // dx written; weight/bias gradients +=
 *     bnorm_bn_layer_set_training(bn, 0);          // eval: normalize with running statistics
 *     bnorm_bn_layer_free(bn);
 *
 * The functional API below is the same computation in three separable steps, so that statistics
 * can be merged across threads, chunks or processes (synchronized batch norm) between them:
 *   1. bnorm_bn_stats            per-channel (count, mean, M2) of a batch
 *   2. bnorm_bn_moments_merge    combine moments of other chunks/ranks (optional)
 *   3. bnorm_bn_moments_finalize mean and 1/sqrt(var+eps) to normalize with; running-stat update
 *      bnorm_bn_apply            y = (x - mean) * invstd * weight + bias  [then max(0, .)]
 * Backward mirrors it: bnorm_bn_backward_reduce -> (sum across ranks) -> bnorm_bn_backward_apply.
 *
 * Conventions
 * - Tensors are raw pointers described by a bnorm_desc. Inputs are never modified.
 * - "param type" means float for BNORM_DTYPE_F32 data and double for BNORM_DTYPE_F64 data: weight,
 *   bias, running_mean, running_var and dweight/dbias have that type (PyTorch's buffers).
 * - Batch statistics and everything exchanged between the steps (moments, the mean and invstd
 *   that normalize, backward sums) are double [C] for every data type: they are tiny, and keeping
 *   them exact makes backward accurate even where it cancels (e.g. two values per channel).
 * - weight == NULL means gamma = 1 and bias == NULL means beta = 0 (affine=False).
 * - dX is +dLoss/dX. Functional backward calls overwrite their outputs; the layer accumulates its
 *   parameter gradients (+=) until bnorm_bn_layer_zero_grad.
 * - On any error status nothing was written. BNORM_WARN_NONFINITE means the call completed, but
 *   some channel had non-finite batch statistics and its running statistics were not updated.
 * - Results do not depend on the number of threads: every reduction runs in a fixed order.
 * - Tensors need no alignment beyond their element type's, and results do not depend on it:
 *   float32 outputs larger than 4 MiB are written with streaming stores from the first 64-byte
 *   boundary on, so that tensors from malloc run within about 10% of aligned ones.
 */
#ifndef BNORM_BN_H
#define BNORM_BN_H

#include <stdint.h>

#include "bnorm/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Tensor descriptor
 * ------------------------------------------------------------------------------------------- */

typedef enum bnorm_dtype {
    BNORM_DTYPE_F32 = 0,
    BNORM_DTYPE_F64 = 1,
    BNORM_DTYPE_I64 = 2, /* only for tensor views (num_batches_tracked), never as data */
} bnorm_dtype;

typedef enum bnorm_layout {
    BNORM_LAYOUT_CHANNELS_FIRST = 0, /* N, C, spatial...   (PyTorch contiguous)    */
    BNORM_LAYOUT_CHANNELS_LAST = 1,  /* N, spatial..., C   (PyTorch channels_last) */
} bnorm_layout;

typedef struct bnorm_desc {
    int64_t n;       /* batch size, >= 0 */
    int64_t c;       /* channels, >= 1 */
    int64_t spatial; /* product of the trailing dims (1 for (N,C) input), >= 1 */
    bnorm_layout layout;
    bnorm_dtype dtype; /* BNORM_DTYPE_F32 or BNORM_DTYPE_F64 */
} bnorm_desc;

/* Fills *desc from a PyTorch-style logical shape (N, C, *spatial) with 2 <= ndim <= 5, whatever
 * the memory layout. N may be 0 (an empty batch); C and spatial dims must be >= 1; the total byte
 * size must fit in size_t. Returns BNORM_ERR_NULL_POINTER, BNORM_ERR_INVALID_SHAPE or
 * BNORM_ERR_SIZE_OVERFLOW. */
bnorm_status bnorm_desc_init(bnorm_desc *desc, bnorm_dtype dtype, bnorm_layout layout, int ndim,
                             const int64_t *shape);

/* Checks a descriptor that was filled by hand; same errors as bnorm_desc_init. */
bnorm_status bnorm_desc_check(const bnorm_desc *desc);

/* Number of elements N*C*spatial (0 for an invalid descriptor). */
int64_t bnorm_desc_numel(const bnorm_desc *desc);

/* ---------------------------------------------------------------------------------------------
 * Functional API
 * ------------------------------------------------------------------------------------------- */

#define BNORM_BN_FUSE_RELU 1u /* flag: y = max(0, bn(x)); backward masks dy where y <= 0 */

/* momentum value that means PyTorch's momentum=None: running = running + (batch - running)/t, with
 * t = num_batches_tracked after its increment. */
#define BNORM_BN_MOMENTUM_CUMULATIVE (-1.0)

#define BNORM_BN_DEFAULT_EPS      1e-5
#define BNORM_BN_DEFAULT_MOMENTUM 0.1

/* Which statistics normalize the input (and are differentiated through in backward). */
typedef enum bnorm_bn_stats_source {
    BNORM_BN_STATS_BATCH = 0, /* this batch's mean and biased variance (PyTorch training) */
    BNORM_BN_STATS_FIXED = 1, /* given constants, e.g. running stats (eval, frozen BN)     */
} bnorm_bn_stats_source;

/* Step 1 output: per-channel moments in the exactly mergeable (count, mean, M2) form.
 * The caller owns mean and m2 (`channels` doubles each). */
typedef struct bnorm_bn_moments {
    int64_t channels;
    int64_t count; /* values per channel that went in: N * spatial */
    double *mean;  /* [channels] */
    double *m2;    /* [channels] sum of squared deviations from mean */
} bnorm_bn_moments;

/* Running statistics to update. mean and var are param type [C]; var is the unbiased estimate.
 * num_batches_tracked may be NULL unless momentum is BNORM_BN_MOMENTUM_CUMULATIVE; when given it
 * is incremented once per non-empty batch. */
typedef struct bnorm_bn_running {
    void *mean;
    void *var;
    int64_t *num_batches_tracked;
    double momentum; /* in [0, 1], or BNORM_BN_MOMENTUM_CUMULATIVE */
} bnorm_bn_running;

/* Step 1: moments of x, shape x_desc. Sets moments->count = N*spatial and fills mean/m2;
 * moments->channels must equal x_desc->c. Works for N = 0 (count 0, mean 0, m2 0). */
bnorm_status bnorm_bn_stats(const bnorm_desc *x_desc, const void *x, bnorm_bn_moments *moments);

/* Step 2: acc <- acc (+) other, Chan's parallel update; exact for any split of the data.
 * BNORM_ERR_MISMATCH when channel counts differ. */
bnorm_status bnorm_bn_moments_merge(bnorm_bn_moments *acc, const bnorm_bn_moments *other);

/* Step 3a: from moments to the constants that normalize: save_mean = mean and
 * save_invstd = 1/sqrt(M2/count + eps), each double [channels] (either may be NULL; they may be
 * moments->mean and moments->m2 themselves).
 * If running is not NULL its statistics are updated PyTorch's way. count == 1 is
 * BNORM_ERR_BATCH_TOO_SMALL; count == 0 (empty batch) writes nothing and returns BNORM_OK.
 * Channels whose batch statistics are not finite keep their running statistics and the call
 * returns BNORM_WARN_NONFINITE. eps must be > 0. */
bnorm_status bnorm_bn_moments_finalize(const bnorm_bn_moments *moments, bnorm_dtype dtype,
                                       double eps, double *save_mean, double *save_invstd,
                                       bnorm_bn_running *running);

/* Step 3b: y = (x - mean) * invstd * weight + bias, [then max(0, .) with BNORM_BN_FUSE_RELU].
 * mean and invstd are double [C] (batch constants from step 3a, or fixed ones). y may alias x
 * (in-place). */
bnorm_status bnorm_bn_apply(const bnorm_desc *x_desc, void *y, const void *x, const double *mean,
                            const double *invstd, const void *weight, const void *bias,
                            unsigned flags);

/* Training forward: steps 1, 3a and 3b. save_mean/save_invstd (double [C], may be NULL) keep
 * what backward needs. running may be NULL (track_running_stats=False, or a deliberate no-update
 * pass). Errors: see the steps; N*spatial == 1 is BNORM_ERR_BATCH_TOO_SMALL, N == 0 writes
 * nothing. */
bnorm_status bnorm_bn_forward_train(const bnorm_desc *x_desc, void *y, double *save_mean,
                                    double *save_invstd, const void *x, const void *weight,
                                    const void *bias, bnorm_bn_running *running, double eps,
                                    unsigned flags);

/* Inference forward with fixed statistics: y = (x - mean) / sqrt(var + eps) * weight + bias, with
 * mean and var param type [C] (running_mean and running_var). */
bnorm_status bnorm_bn_forward_infer(const bnorm_desc *x_desc, void *y, const void *x,
                                    const void *weight, const void *bias, const void *mean,
                                    const void *var, double eps, unsigned flags);

/* invstd[c] = 1/sqrt(var[c] + eps) into double [channels], from var of param type `dtype`: the
 * fixed-statistics constants for bnorm_bn_apply and backward from running variances. */
bnorm_status bnorm_bn_invstd(int64_t channels, bnorm_dtype dtype, double *invstd, const void *var,
                             double eps);

/* Backward step 1: per-channel sum_dy = sum(dy') and sum_dy_xhat = sum(dy' * xhat) (doubles [C]),
 * where xhat = (x - mean) * invstd and dy' is dy masked by the fused ReLU (needs weight/bias to
 * recompute the mask exactly as forward did). These are dbias and dweight. sum_dy_sq, when not
 * NULL, receives sum(dy'^2): passed on to step 2, it lets dx be computed faster (see there). */
bnorm_status bnorm_bn_backward_reduce(const bnorm_desc *x_desc, double *sum_dy, double *sum_dy_xhat,
                                      double *sum_dy_sq, const void *dy, const void *x,
                                      const double *mean, const double *invstd, const void *weight,
                                      const void *bias, unsigned flags);

/* Backward step 2 (after summing step 1 across ranks): dx, overwritten. With
 * BNORM_BN_STATS_BATCH dx = w*invstd*(dy' - sum_dy/count - xhat*sum_dy_xhat/count), where count
 * is the total number of values per channel behind the sums (N*spatial on one rank); with
 * BNORM_BN_STATS_FIXED dx = w*invstd*dy' and the sums and count are ignored (may be NULL/0).
 * sum_dy_sq (may be NULL) is step 1's, summed across ranks like the others. Without it, float32
 * dx is computed in double everywhere, in case it is a tiny difference of its terms (a dy nearly
 * constant or linear in the output); with it, only in the channels where it is, as the one-call
 * bnorm_bn_backward does, and large tensors take 9-31% less time (docs/performance-history.md). */
bnorm_status bnorm_bn_backward_apply(const bnorm_desc *x_desc, void *dx, const void *dy,
                                     const void *x, const double *mean, const double *invstd,
                                     const void *weight, const void *bias, const double *sum_dy,
                                     const double *sum_dy_xhat, const double *sum_dy_sq,
                                     int64_t count, bnorm_bn_stats_source source, unsigned flags);

/* Backward in one call. dx, dweight, dbias are overwritten and each may be NULL (not wanted).
 * mean/invstd are what normalized the forward (save_mean/save_invstd, or running mean and
 * bnorm_bn_invstd of the running variance); source says whether they depended on x. */
bnorm_status bnorm_bn_backward(const bnorm_desc *x_desc, void *dx, void *dweight, void *dbias,
                               const void *dy, const void *x, const double *mean,
                               const double *invstd, const void *weight, const void *bias,
                               bnorm_bn_stats_source source, unsigned flags);

/* ---------------------------------------------------------------------------------------------
 * Kernel selection
 * ------------------------------------------------------------------------------------------- */

/* float32 data runs on SIMD kernels chosen at run time ("avx512", "avx2" or "scalar": the best
 * this CPU has), float64 data on vectorized double kernels; under "reference" both run on the
 * plain double-precision reference kernels that the others are tested against. The BNORM_ISA
 * environment variable sets the choice at first use; bnorm_set_kernels changes it ("auto" = the
 * best). Returns BNORM_ERR_INVALID_ARGUMENT for an unknown name or an ISA this CPU lacks. A
 * process-wide setting: change it only while no bnorm call runs. */
bnorm_status bnorm_set_kernels(const char *name);

/* The name of the kernels float32 calls use now. */
const char *bnorm_kernels(void);

/* ---------------------------------------------------------------------------------------------
 * Stateful layer: nn.BatchNorm1d/2d/3d with PyTorch's buffers and names
 * ------------------------------------------------------------------------------------------- */

typedef struct bnorm_bn_options {
    int64_t num_features;    /* C */
    double eps;              /* > 0, default 1e-5 */
    double momentum;         /* [0,1] or BNORM_BN_MOMENTUM_CUMULATIVE, default 0.1 */
    int affine;              /* learnable weight and bias, default 1 */
    int track_running_stats; /* keep running_mean/var/num_batches_tracked, default 1 */
    int fuse_relu;           /* y = max(0, bn(x)), default 0 */
    bnorm_dtype dtype;       /* data, parameter and statistics type, default BNORM_DTYPE_F32 */
} bnorm_bn_options;

/* PyTorch's defaults for num_features channels. */
bnorm_bn_options bnorm_bn_options_default(int64_t num_features);

/* Optional caller-owned storage for the layer's tensors (e.g. views into a model's parameter and
 * gradient arenas). Each non-NULL pointer is used instead of an allocation of the layer's own; it
 * must hold num_features elements of the param type (num_batches_tracked: one int64) and outlive
 * the layer. The layer initializes them like PyTorch on create. */
typedef struct bnorm_bn_buffers {
    void *weight, *bias, *running_mean, *running_var;
    int64_t *num_batches_tracked;
    void *weight_grad, *bias_grad;
} bnorm_bn_buffers;

typedef struct bnorm_bn_layer bnorm_bn_layer;

/* Creates a layer in training mode: weight 1, bias 0, running_mean 0, running_var 1,
 * num_batches_tracked 0, gradients 0. buffers may be NULL. Errors: BNORM_ERR_NULL_POINTER,
 * BNORM_ERR_INVALID_SHAPE (num_features < 1), BNORM_ERR_INVALID_ARGUMENT (eps, momentum, dtype),
 * BNORM_ERR_OUT_OF_MEMORY; *out is set to NULL on failure. */
bnorm_status bnorm_bn_layer_create(bnorm_bn_layer **out, const bnorm_bn_options *options,
                                   const bnorm_bn_buffers *buffers);

/* Frees the layer and what it allocated (never caller buffers). NULL is a no-op. */
void bnorm_bn_layer_free(bnorm_bn_layer *layer);

/* PyTorch's module.train(training): training normalizes with batch statistics and updates the
 * running ones; eval normalizes with the running statistics (batch statistics, no update, when
 * track_running_stats is 0). */
void bnorm_bn_layer_set_training(bnorm_bn_layer *layer, int training);

/* The two choices behind train/eval, made separately: which statistics normalize, and whether a
 * batch updates the running statistics (update with FIXED normalization is allowed: the batch
 * statistics are still computed for the update). Errors: BNORM_ERR_INVALID_ARGUMENT for FIXED or
 * update without running statistics, or an unknown source. */
bnorm_status bnorm_bn_layer_set_mode(bnorm_bn_layer *layer, bnorm_bn_stats_source normalize_with,
                                     int update_running);

/* Forward: y (shape x_desc) from x. Remembers the normalizing constants and x_desc for backward.
 * Errors: BNORM_ERR_NULL_POINTER, BNORM_ERR_MISMATCH (channels or dtype differ from the layer),
 * descriptor errors, BNORM_ERR_BATCH_TOO_SMALL; BNORM_WARN_NONFINITE as in the functional API. */
bnorm_status bnorm_bn_layer_forward(bnorm_bn_layer *layer, const bnorm_desc *x_desc, void *y,
                                    const void *x);

/* Backward of the last forward (same x_desc and x): dx overwritten (may be NULL), weight_grad and
 * bias_grad accumulated (+=) when affine. Errors: BNORM_ERR_INVALID_ARGUMENT when there was no
 * forward or x_desc differs from it, BNORM_ERR_NULL_POINTER. Never allocates. */
bnorm_status bnorm_bn_layer_backward(bnorm_bn_layer *layer, const bnorm_desc *x_desc, void *dx,
                                     const void *dy, const void *x);

/* Sets weight_grad and bias_grad to zero. */
void bnorm_bn_layer_zero_grad(bnorm_bn_layer *layer);

/* PyTorch's reset_running_stats(): running_mean 0, running_var 1, num_batches_tracked 0. */
void bnorm_bn_layer_reset_running_stats(bnorm_bn_layer *layer);

/* A view of one of the layer's tensors by its PyTorch state_dict name: "weight", "bias",
 * "running_mean", "running_var", "num_batches_tracked", or the gradients "weight.grad",
 * "bias.grad". Data may be read and written. BNORM_ERR_INVALID_ARGUMENT for an unknown name or
 * one the layer does not have (affine or track_running_stats off). */
typedef struct bnorm_tensor_view {
    void *data;
    bnorm_dtype dtype;
    int64_t numel;
} bnorm_tensor_view;
bnorm_status bnorm_bn_layer_tensor(const bnorm_bn_layer *layer, const char *name,
                                   bnorm_tensor_view *view);

/* The options the layer was created with (NULL layer: NULL). */
const bnorm_bn_options *bnorm_bn_layer_options(const bnorm_bn_layer *layer);

#ifdef __cplusplus
}
#endif

#endif /* BNORM_BN_H */
