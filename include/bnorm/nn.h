/* bnorm/nn.h - the training stack: models from a text spec, softmax cross-entropy, SGD, learning
 * rate schedules, safetensors checkpoints and the training/evaluation loops. Needs OpenBLAS,
 * zlib and cJSON.
 *
 *     bnorm_model_options mo = bnorm_model_options_default();   // 1x28x28 input, batch 128
 *     bnorm_model *m;
 *     if (bnorm_model_create(&m, "conv(32,3,pad=1) bn relu maxpool(2) flatten linear(10)", &mo))
 *         fprintf(stderr, "%s\n", bnorm_last_error());       // names the layer and why
 *     bnorm_train_config tc = bnorm_train_config_default();
 *     bnorm_epoch_stats st;
 *     bnorm_train_epoch(m, &train, &tc, 0, &st, NULL, NULL);  // one epoch of SGD
 *
 * Spec: layers separated by spaces, each `name` or `name(args)`, in PyTorch's order:
 *   conv(out, k[, stride=s][, pad=p][, bias=0|1])   linear(out[, bias=0|1])
 *   bn   relu   maxpool(k[, stride=s])   avgpool(k[, stride=s])   gap (global average pool)
 *   flatten   dropout(p)
 *   res(c[, stride=s])   residual block: conv3x3-bn-relu-conv3x3-bn plus the input (through a
 *                        1x1 conv and bn when the stride or channels change), then relu; its
 *                        tensors are "<i>.conv1.weight", "<i>.bn1.running_var", "<i>.shortcut.0..."
 *                        (torchvision's BasicBlock)
 * bn is BatchNorm2d after a 4-d tensor and BatchNorm1d after a flat one; a bn followed by relu
 * runs fused. Parameter names follow nn.Sequential indices ("1.running_var" is the bn at index
 * 1), so a checkpoint's tensors are PyTorch state_dict entries. Layouts are channels-first. */
#ifndef BNORM_NN_H
#define BNORM_NN_H

#include <stdint.h>

#include "bnorm/data.h"
#include "bnorm/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The source document's network, PyTorch's Conv2d -> BatchNorm2d -> ReLU, on 28x28 images. */
#define BNORM_DEFAULT_SPEC                                                                         \
    "conv(32,3,pad=1) bn relu maxpool(2) conv(64,3,pad=1) bn relu maxpool(2) flatten "             \
    "linear(128) bn relu dropout(0.25) linear(10)"

typedef enum bnorm_init {
    BNORM_INIT_DEFAULT = 0, /* PyTorch's: kaiming_uniform(a=sqrt(5)), bias U(+-1/sqrt(fan_in)) */
    BNORM_INIT_HE = 1,      /* normal(0, sqrt(2/fan_in)), bias 0 */
    BNORM_INIT_XAVIER = 2,  /* uniform(+-sqrt(6/(fan_in+fan_out))), bias 0 */
} bnorm_init;

typedef struct bnorm_model_options {
    int64_t in_c, in_h, in_w; /* one input image */
    int64_t max_batch;        /* activations are allocated for this many images */
    bnorm_init init;
    double init_scale; /* multiplies the initial conv/linear weights (1 = as the scheme says) */
    int no_bn;         /* drop every bn and give the preceding conv/linear a bias */
    uint64_t seed;     /* initial weights */
} bnorm_model_options;

bnorm_model_options bnorm_model_options_default(void);

typedef struct bnorm_model bnorm_model;

/* Builds the model, initializes it and allocates everything training needs. Errors:
 * BNORM_ERR_PARSE (the spec, with the layer's position and text), BNORM_ERR_INVALID_SHAPE (a
 * layer does not fit its input: names the layer and both shapes), BNORM_ERR_INVALID_ARGUMENT,
 * BNORM_ERR_OUT_OF_MEMORY. */
bnorm_status bnorm_model_create(bnorm_model **out, const char *spec,
                                const bnorm_model_options *options);
void bnorm_model_free(bnorm_model *model);

const char *bnorm_model_spec(const bnorm_model *model);    /* as given (after no_bn) */
int64_t bnorm_model_classes(const bnorm_model *model);     /* outputs of the last layer */
int64_t bnorm_model_param_count(const bnorm_model *model); /* learnable values */
const bnorm_model_options *bnorm_model_options_of(const bnorm_model *model);

/* Forward of n <= max_batch images x (n x in_c x in_h x in_w); training selects batch
 * statistics and dropout (drawing from rng). Returns the logits (n x classes), owned by the
 * model. */
bnorm_status bnorm_model_forward(bnorm_model *model, const float *x, int64_t n, int training,
                                 bnorm_rng *rng, const float **logits);

/* Mean softmax cross-entropy of the last forward's logits against labels, and the number of
 * correct argmax predictions; with want_grad it also sets dLoss/dlogits for backward. */
bnorm_status bnorm_model_loss(bnorm_model *model, const int32_t *labels, int64_t n, int want_grad,
                              double *loss, int64_t *correct);

/* The same with label smoothing as in PyTorch's CrossEntropyLoss(label_smoothing=smoothing): the
 * target puts 1 - smoothing + smoothing/K on the label and smoothing/K on each other class, so
 * the loss is (1 - smoothing) * cross-entropy + smoothing * mean over classes of -log p, and
 * dLoss/dlogits = (p - target) / n. smoothing in [0, 1]; 0 is bnorm_model_loss. */
bnorm_status bnorm_model_loss_smoothed(bnorm_model *model, const int32_t *labels, int64_t n,
                                       double smoothing, int want_grad, double *loss,
                                       int64_t *correct);

/* Backward of the last forward from dLoss/dlogits (set by bnorm_model_loss, or given by
 * dlogits when not NULL): parameter gradients accumulate (+=); dx (may be NULL) receives
 * dLoss/dx. */
bnorm_status bnorm_model_backward(bnorm_model *model, const float *dlogits, float *dx);
void bnorm_model_zero_grad(bnorm_model *model);

/* Named tensors, in state_dict order: parameters and bn buffers. */
typedef struct bnorm_named_tensor {
    const char *name; /* "0.weight", "1.running_mean", ... */
    void *data;       /* float, or int64 for num_batches_tracked */
    float *grad;      /* NULL for buffers */
    float *momentum;  /* SGD momentum buffer (NULL for buffers) */
    int64_t numel, shape[4];
    int ndim;     /* 0 for the scalar num_batches_tracked */
    int is_int64; /* num_batches_tracked */
    int no_decay; /* bias or bn parameter (weight decay may exempt it) */
} bnorm_named_tensor;
int bnorm_model_tensor_count(const bnorm_model *model);
bnorm_status bnorm_model_tensor(const bnorm_model *model, int i, bnorm_named_tensor *t);

/* ---- optimization -------------------------------------------------------------------------- */

typedef struct bnorm_sgd {
    double momentum; /* 0 = plain SGD */
    int nesterov;
    double weight_decay; /* L2, added to the gradient as in torch.optim.SGD */
    int decay_bn_bias;   /* 0: bn parameters and biases get no weight decay */
} bnorm_sgd;

/* One step of torch.optim.SGD (dampening 0) over every parameter with learning rate lr. */
bnorm_status bnorm_sgd_step(bnorm_model *model, const bnorm_sgd *sgd, double lr);

typedef enum bnorm_schedule_kind {
    BNORM_SCHEDULE_CONSTANT = 0,
    BNORM_SCHEDULE_STEP = 1,   /* x gamma every step_epochs */
    BNORM_SCHEDULE_COSINE = 2, /* cosine from lr to 0 over the run */
} bnorm_schedule_kind;

typedef struct bnorm_schedule {
    bnorm_schedule_kind kind;
    double step_epochs, gamma;
    double warmup_epochs; /* linear warm-up from lr/10 over this many epochs (0 = none) */
} bnorm_schedule;

/* The learning rate at (fractional) epoch t of total epochs. */
double bnorm_schedule_lr(const bnorm_schedule *s, double base_lr, double t, double total);

/* ---- training loops ---------------------------------------------------------------------- */

typedef struct bnorm_train_config {
    int64_t batch;
    double lr;
    bnorm_sgd sgd;
    bnorm_schedule schedule;
    int epochs;    /* the run's length, for the schedule */
    uint64_t seed; /* shuffling, dropout and augmentation; epoch e uses streams of (seed, e) */
    bnorm_augment augment;
    double mean, std;       /* input normalization */
    double label_smoothing; /* of the training loss (evaluation reports plain cross-entropy) */
} bnorm_train_config;

bnorm_train_config bnorm_train_config_default(void);

typedef struct bnorm_epoch_stats {
    double loss, accuracy, lr, seconds, images_per_sec;
} bnorm_epoch_stats;

/* Called after every batch: images done, images total, running loss. */
typedef void (*bnorm_progress_fn)(void *ctx, int64_t done, int64_t total, double loss);

/* One epoch (number `epoch`, from 0) of shuffled mini-batches. The same seed and epoch give the
 * same batches, dropout and augmentation, so a resumed run repeats an uninterrupted one. A last
 * batch of one image is dropped (batch statistics need two). */
bnorm_status bnorm_train_epoch(bnorm_model *model, const bnorm_dataset *train,
                               const bnorm_train_config *cfg, int epoch, bnorm_epoch_stats *out,
                               bnorm_progress_fn progress, void *ctx);

/* Loss and accuracy in eval mode (running statistics, no dropout). */
bnorm_status bnorm_evaluate(bnorm_model *model, const bnorm_dataset *ds, double mean, double std,
                            double *loss, double *accuracy);

/* The same with flip test-time augmentation: each image's prediction is the mean of the softmax
 * probabilities of the image and of its left-right mirror image (two forwards per batch); the
 * loss is the cross-entropy of that mean. For models trained with --augment's flips. */
bnorm_status bnorm_evaluate_flip(bnorm_model *model, const bnorm_dataset *ds, double mean,
                                 double std, double *loss, double *accuracy);

/* ---- checkpoints: safetensors --------------------------------------------------------------- */

/* Writes every named tensor under its state_dict name, the SGD momentum buffers as
 * "optimizer.<name>.momentum_buffer", and metadata (string key/value pairs, plus "spec" and
 * "format") into a safetensors file, atomically (temp file, fsync, rename). */
bnorm_status bnorm_checkpoint_save(const bnorm_model *model, const char *path,
                                   const char *const *meta_keys, const char *const *meta_values,
                                   int meta_count);

/* Reads a checkpoint into the model. Its spec must be the model's and every tensor must be there
 * with the right dtype and shape. meta_json (may be NULL) receives the metadata as a JSON object
 * string (free with bnorm_free_string). Errors: BNORM_ERR_IO, BNORM_ERR_FORMAT (malformed file,
 * another model: names the tensor or the spec). Nothing is changed on error. */
bnorm_status bnorm_checkpoint_load(bnorm_model *model, const char *path, char **meta_json);

/* Reads only the metadata ("spec", ...) of a checkpoint, to build the model it fits. */
bnorm_status bnorm_checkpoint_metadata(const char *path, char **meta_json);

void bnorm_free_string(char *s);

/* Threads for everything: OpenMP kernels and OpenBLAS GEMMs (n >= 1). */
void bnorm_set_threads(int n);

/* The GEMM kernels OpenBLAS chose for this CPU ("Haswell", "SkylakeX", ...). OpenBLAS falls back
 * to generic "Prescott" kernels on CPUs it does not recognise; its OPENBLAS_CORETYPE environment
 * variable, read when the library loads, overrides the choice. */
const char *bnorm_blas_corename(void);

#ifdef __cplusplus
}
#endif

#endif /* BNORM_NN_H */
