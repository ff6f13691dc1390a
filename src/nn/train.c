/* src/nn/train.c - the training epoch and evaluation loops over a dataset. Epoch e draws its
 * shuffle, dropout and augmentation from streams of (seed, e), so any epoch can be replayed (a
 * resumed run equals an uninterrupted one). Batch buffers are allocated once per call. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bnorm/nn.h"
#include "nn/layers.h"
#include "util/internal.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

bnorm_train_config bnorm_train_config_default(void) {
    bnorm_train_config c;
    memset(&c, 0, sizeof c);
    c.batch = 128;
    c.lr = 0.05;
    c.sgd.momentum = 0.9;
    c.sgd.weight_decay = 5e-4;
    c.schedule.kind = BNORM_SCHEDULE_COSINE;
    c.epochs = 5;
    c.seed = 1;
    c.mean = 0.0, c.std = 1.0;
    return c;
}

typedef struct {
    float *x;
    int32_t *y;
    int64_t *perm;
} buffers;

static bnorm_status buffers_alloc(buffers *b, const bnorm_model *m, int64_t batch, int64_t n) {
    const bnorm_model_options *o = bnorm_model_options_of(m);
    b->x = bnorm__malloc((size_t)(batch * o->in_c * o->in_h * o->in_w) * sizeof(float));
    b->y = bnorm__malloc((size_t)batch * sizeof(int32_t));
    b->perm = bnorm__malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    if (!b->x || !b->y || !b->perm) {
        bnorm__free(b->x), bnorm__free(b->y), bnorm__free(b->perm);
        return bnorm__fail(BNORM_ERR_OUT_OF_MEMORY, "training: out of memory for batches");
    }
    return BNORM_OK;
}

static void buffers_free(buffers *b) {
    bnorm__free(b->x), bnorm__free(b->y), bnorm__free(b->perm);
}

static bnorm_status check_fit(const bnorm_model *m, const bnorm_dataset *ds, int64_t batch,
                              const char *fn) {
    const bnorm_model_options *o = bnorm_model_options_of(m);
    if (o->in_c != 1 || o->in_h != ds->rows || o->in_w != ds->cols)
        return bnorm__fail(BNORM_ERR_MISMATCH,
                           "%s: the model takes %lldx%lldx%lld images, the "
                           "data has 1x%lldx%lld",
                           fn, (long long)o->in_c, (long long)o->in_h, (long long)o->in_w,
                           (long long)ds->rows, (long long)ds->cols);
    if (ds->classes > bnorm_model_classes(m))
        return bnorm__fail(BNORM_ERR_MISMATCH,
                           "%s: the data has %d classes, the model outputs %lld", fn, ds->classes,
                           (long long)bnorm_model_classes(m));
    /* batch 0: evaluation, which takes any batch the model allows */
    if (batch != 0 && (batch < 2 || batch > o->max_batch))
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: batch %lld must be 2..%lld", fn,
                           (long long)batch, (long long)o->max_batch);
    return BNORM_OK;
}

bnorm_status bnorm_train_epoch(bnorm_model *m, const bnorm_dataset *train,
                               const bnorm_train_config *cfg, int epoch, bnorm_epoch_stats *out,
                               bnorm_progress_fn progress, void *ctx) {
    static const char fn[] = "bnorm_train_epoch";
    if (!m || !train || !cfg || !out)
        return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: NULL argument", fn);
    bnorm_status st = check_fit(m, train, cfg->batch, fn);
    if (st) return st;
    buffers b;
    if ((st = buffers_alloc(&b, m, cfg->batch, train->count))) return st;
    bnorm_rng shuffle = bnorm_rng_seed(cfg->seed, 2 * (uint64_t)epoch + 1);
    bnorm_rng noise = bnorm_rng_seed(cfg->seed, 2 * (uint64_t)epoch + 2);
    bnorm_permutation(b.perm, train->count, &shuffle);
    const int aug = cfg->augment.crop_pad > 0 || cfg->augment.hflip || cfg->augment.cutout > 0;
    const int64_t nbatches = (train->count + cfg->batch - 1) / cfg->batch;
    double loss_sum = 0.0, lr = cfg->lr;
    int64_t seen = 0, correct = 0;
    const double t0 = now_s();
    for (int64_t k = 0; k < nbatches && !st; k++) {
        const int64_t start = k * cfg->batch;
        const int64_t n = train->count - start < cfg->batch ? train->count - start : cfg->batch;
        if (n < 2) break; /* batch statistics need two images */
        bnorm_batch_fill(b.x, b.y, train, b.perm + start, n, cfg->mean, cfg->std,
                         aug ? &cfg->augment : NULL, &noise);
        double loss;
        int64_t right;
        lr = bnorm_schedule_lr(&cfg->schedule, cfg->lr, epoch + (double)k / nbatches, cfg->epochs);
        if ((st = bnorm_model_forward(m, b.x, n, 1, &noise, NULL)) ||
            (st = bnorm_model_loss_smoothed(m, b.y, n, cfg->label_smoothing, 1, &loss, &right)))
            break;
        bnorm_model_zero_grad(m);
        if ((st = bnorm_model_backward(m, NULL, NULL)) || (st = bnorm_sgd_step(m, &cfg->sgd, lr)))
            break;
        loss_sum += loss * n, correct += right, seen += n;
        if (progress) progress(ctx, seen, train->count, loss_sum / seen);
    }
    buffers_free(&b);
    if (st) return st;
    const double secs = now_s() - t0;
    out->loss = seen ? loss_sum / seen : 0.0;
    out->accuracy = seen ? (double)correct / seen : 0.0;
    out->lr = lr;
    out->seconds = secs;
    out->images_per_sec = secs > 0 ? seen / secs : 0.0;
    return BNORM_OK;
}

/* softmax of K logits into p (adding when add), in double */
static void softmax_into(const float *z, int64_t K, double *p, int add) {
    int64_t arg;
    const double se = bnorm__softmax_denominator(z, K, &arg);
    for (int64_t k = 0; k < K; k++) {
        const double v = exp((double)z[k] - z[arg]) / se;
        p[k] = add ? p[k] + v : v;
    }
}

/* mirrors each row of the n images (1 x rows x cols) in place */
static void flip_images(float *x, int64_t n, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < n * rows; r++) {
        float *row = x + r * cols;
        for (int64_t a = 0, b = cols - 1; a < b; a++, b--) {
            const float t = row[a];
            row[a] = row[b], row[b] = t;
        }
    }
}

/* flip: average the probabilities over each image and its mirror image (prob: max_batch x
 * classes scratch) */
static bnorm_status evaluate(bnorm_model *m, const bnorm_dataset *ds, double mean, double std,
                             int flip, double *loss, double *accuracy, const char *fn) {
    if (!m || !ds) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: NULL argument", fn);
    const int64_t batch = bnorm_model_options_of(m)->max_batch, K = bnorm_model_classes(m);
    bnorm_status st = check_fit(m, ds, 0, fn);
    if (st) return st;
    buffers b;
    if ((st = buffers_alloc(&b, m, batch, ds->count))) return st;
    double *prob = flip ? bnorm__malloc((size_t)(batch * K) * sizeof *prob) : NULL;
    if (flip && !prob) {
        buffers_free(&b);
        return bnorm__fail(BNORM_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    for (int64_t i = 0; i < ds->count; i++)
        b.perm[i] = i;
    double loss_sum = 0.0;
    int64_t correct = 0;
    for (int64_t start = 0; start < ds->count && !st; start += batch) {
        const int64_t n = ds->count - start < batch ? ds->count - start : batch;
        double l;
        int64_t right;
        bnorm_batch_fill(b.x, b.y, ds, b.perm + start, n, mean, std, NULL, NULL);
        if (!flip) {
            if ((st = bnorm_model_forward(m, b.x, n, 0, NULL, NULL)) ||
                (st = bnorm_model_loss(m, b.y, n, 0, &l, &right)))
                break;
            loss_sum += l * n, correct += right;
            continue;
        }
        for (int pass = 0; pass < 2 && !st; pass++) {
            const float *z;
            if (pass) flip_images(b.x, n, ds->rows, ds->cols);
            if ((st = bnorm_model_forward(m, b.x, n, 0, NULL, &z))) break;
            for (int64_t i = 0; i < n; i++)
                softmax_into(z + i * K, K, prob + i * K, pass);
        }
        for (int64_t i = 0; i < n && !st; i++) {
            const double *p = prob + i * K;
            int64_t arg = 0;
            for (int64_t k = 1; k < K; k++)
                if (p[k] > p[arg]) arg = k;
            correct += arg == b.y[i];
            loss_sum -= log(fmax(p[b.y[i]] / 2.0, 1e-300)); /* finite if exp underflowed */
        }
    }
    bnorm__free(prob);
    buffers_free(&b);
    if (st) return st;
    if (loss) *loss = ds->count ? loss_sum / ds->count : 0.0;
    if (accuracy) *accuracy = ds->count ? (double)correct / ds->count : 0.0;
    return BNORM_OK;
}

bnorm_status bnorm_evaluate(bnorm_model *m, const bnorm_dataset *ds, double mean, double std,
                            double *loss, double *accuracy) {
    return evaluate(m, ds, mean, std, 0, loss, accuracy, "bnorm_evaluate");
}

bnorm_status bnorm_evaluate_flip(bnorm_model *m, const bnorm_dataset *ds, double mean, double std,
                                 double *loss, double *accuracy) {
    return evaluate(m, ds, mean, std, 1, loss, accuracy, "bnorm_evaluate_flip");
}

void bnorm_set_threads(int n) {
    if (n < 1) n = 1;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n);
}

const char *bnorm_blas_corename(void) {
    return openblas_get_corename();
}
