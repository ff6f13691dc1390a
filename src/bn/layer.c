/* src/bn/layer.c - the stateful batch-norm layer (nn.BatchNorm1d/2d/3d) on top of the functional
 * kernels. Everything it needs is allocated in create, so forward and backward never allocate.
 *
 * Mode is two independent choices (which statistics normalize, whether running statistics are
 * updated); set_training(1/0) sets PyTorch's train/eval combination of them. */
#include <string.h>

#include "bn/bn_internal.h"
#include "util/internal.h"

struct bnorm_bn_layer {
    bnorm_bn_options opt;
    int training;
    bnorm_bn_stats_source normalize_with;
    int update_running;

    /* tensors under their PyTorch names; param type [C] unless noted */
    void *weight, *bias, *running_mean, *running_var;
    int64_t *num_batches_tracked; /* [1] */
    void *weight_grad, *bias_grad;

    /* scratch and what forward leaves for backward */
    double *moments_mean, *moments_m2; /* [C] */
    double *dw_batch, *db_batch;      /* [C], room for this batch's dweight/dbias in either dtype */
    double *save_mean, *save_invstd;  /* [C], the constants that normalized the last forward */
    int have_forward;                 /* a forward ran since create */
    bnorm_desc fwd_desc;              /* its input */
    bnorm_bn_stats_source fwd_source; /* and which statistics it used */

    void *own; /* the one allocation holding everything not borrowed */
};

bnorm_bn_options bnorm_bn_options_default(int64_t num_features) {
    bnorm_bn_options o;
    o.num_features = num_features;
    o.eps = BNORM_BN_DEFAULT_EPS;
    o.momentum = BNORM_BN_DEFAULT_MOMENTUM;
    o.affine = 1;
    o.track_running_stats = 1;
    o.fuse_relu = 0;
    o.dtype = BNORM_DTYPE_F32;
    return o;
}

static void fill(bnorm_dtype dt, void *arr, int64_t n, double v) {
    for (int64_t i = 0; i < n; i++) {
        if (dt == BNORM_DTYPE_F32)
            ((float *)arr)[i] = (float)v;
        else
            ((double *)arr)[i] = v;
    }
}

/* Carves an aligned piece of `bytes` out of the arena at *cursor (or counts it when base is
 * NULL). */
static void *carve(char *base, size_t *cursor, size_t bytes) {
    const size_t at = (*cursor + 63) & ~(size_t)63;
    *cursor = at + bytes;
    return base ? base + at : NULL;
}

/* Lays out (or, with base NULL, sizes) the arena; returns its size. */
static size_t layout_arena(bnorm_bn_layer *l, char *base, const bnorm_bn_buffers *ext) {
    const size_t C = (size_t)l->opt.num_features;
    const size_t es = (size_t)bnorm__dtype_size(l->opt.dtype);
    size_t cur = 0;
#define OWN_OR(field, ptr, bytes)                                                                  \
    do {                                                                                           \
        void *p_ = carve(base, &cur, (bytes));                                                     \
        if (base) l->field = (ptr) ? (void *)(ptr) : p_;                                           \
    } while (0)
    if (l->opt.affine) {
        OWN_OR(weight, ext ? ext->weight : NULL, C * es);
        OWN_OR(bias, ext ? ext->bias : NULL, C * es);
        OWN_OR(weight_grad, ext ? ext->weight_grad : NULL, C * es);
        OWN_OR(bias_grad, ext ? ext->bias_grad : NULL, C * es);
    }
    if (l->opt.track_running_stats) {
        OWN_OR(running_mean, ext ? ext->running_mean : NULL, C * es);
        OWN_OR(running_var, ext ? ext->running_var : NULL, C * es);
        OWN_OR(num_batches_tracked, ext ? ext->num_batches_tracked : NULL, sizeof(int64_t));
    }
#undef OWN_OR
    void *p;
    if ((p = carve(base, &cur, C * sizeof(double))) != NULL) l->moments_mean = p;
    if ((p = carve(base, &cur, C * sizeof(double))) != NULL) l->moments_m2 = p;
    if ((p = carve(base, &cur, C * sizeof(double))) != NULL) l->dw_batch = p;
    if ((p = carve(base, &cur, C * sizeof(double))) != NULL) l->db_batch = p;
    if ((p = carve(base, &cur, C * sizeof(double))) != NULL) l->save_mean = p;
    if ((p = carve(base, &cur, C * sizeof(double))) != NULL) l->save_invstd = p;
    return cur + 64; /* slack to align the base itself */
}

bnorm_status bnorm_bn_layer_create(bnorm_bn_layer **out, const bnorm_bn_options *options,
                                   const bnorm_bn_buffers *buffers) {
    static const char fn[] = "bnorm_bn_layer_create";
    if (out == NULL) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: out is NULL", fn);
    *out = NULL;
    if (options == NULL) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: options is NULL", fn);
    const bnorm_bn_options *o = options;
    bnorm_status st;
    if (o->num_features < 1)
        return bnorm__fail(BNORM_ERR_INVALID_SHAPE, "%s: num_features=%lld must be >= 1", fn,
                           (long long)o->num_features);
    if ((uint64_t)o->num_features > (uint64_t)(SIZE_MAX / 64))
        return bnorm__fail(BNORM_ERR_SIZE_OVERFLOW, "%s: num_features=%lld is too large", fn,
                           (long long)o->num_features);
    if ((st = bnorm__check_eps(fn, o->eps)) || (st = bnorm__check_momentum(fn, o->momentum)))
        return st;
    if (o->dtype != BNORM_DTYPE_F32 && o->dtype != BNORM_DTYPE_F64)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: dtype %d is not f32 or f64", fn,
                           (int)o->dtype);

    bnorm_bn_layer *l = bnorm__calloc(1, sizeof *l);
    if (l == NULL) return bnorm__fail(BNORM_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    l->opt = *o;
    l->opt.affine = o->affine != 0;
    l->opt.track_running_stats = o->track_running_stats != 0;
    l->opt.fuse_relu = o->fuse_relu != 0;
    const size_t bytes = layout_arena(l, NULL, buffers);
    l->own = bnorm__calloc(1, bytes);
    if (l->own == NULL) {
        bnorm__free(l);
        return bnorm__fail(BNORM_ERR_OUT_OF_MEMORY, "%s: out of memory (%zu bytes)", fn, bytes);
    }
    char *base = (char *)(((uintptr_t)l->own + 63) & ~(uintptr_t)63);
    layout_arena(l, base, buffers);

    const int64_t C = o->num_features;
    if (l->opt.affine) {
        fill(o->dtype, l->weight, C, 1.0);
        fill(o->dtype, l->bias, C, 0.0);
    }
    bnorm_bn_layer_zero_grad(l);
    bnorm_bn_layer_reset_running_stats(l);
    bnorm_bn_layer_set_training(l, 1);
    *out = l;
    return BNORM_OK;
}

void bnorm_bn_layer_free(bnorm_bn_layer *layer) {
    if (layer == NULL) return;
    bnorm__free(layer->own);
    bnorm__free(layer);
}

void bnorm_bn_layer_set_training(bnorm_bn_layer *layer, int training) {
    if (layer == NULL) return;
    layer->training = training != 0;
    const int tracking = layer->opt.track_running_stats;
    layer->normalize_with =
        (layer->training || !tracking) ? BNORM_BN_STATS_BATCH : BNORM_BN_STATS_FIXED;
    layer->update_running = layer->training && tracking;
}

bnorm_status bnorm_bn_layer_set_mode(bnorm_bn_layer *layer, bnorm_bn_stats_source normalize_with,
                                     int update_running) {
    static const char fn[] = "bnorm_bn_layer_set_mode";
    if (layer == NULL) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: layer is NULL", fn);
    if (normalize_with != BNORM_BN_STATS_BATCH && normalize_with != BNORM_BN_STATS_FIXED)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: unknown statistics source %d", fn,
                           (int)normalize_with);
    if (!layer->opt.track_running_stats &&
        (normalize_with == BNORM_BN_STATS_FIXED || update_running))
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT,
                           "%s: layer was created with track_running_stats=0: it has no running "
                           "statistics to normalize with or update",
                           fn);
    layer->normalize_with = normalize_with;
    layer->update_running = update_running != 0;
    layer->training = normalize_with == BNORM_BN_STATS_BATCH && layer->update_running;
    return BNORM_OK;
}

static bnorm_status check_input(const char *fn, const bnorm_bn_layer *l, const bnorm_desc *xd) {
    if (l == NULL) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: layer is NULL", fn);
    bnorm_status st = bnorm__check_desc(fn, xd);
    if (st) return st;
    if (xd->c != l->opt.num_features)
        return bnorm__fail(BNORM_ERR_MISMATCH, "%s: input has %lld channels, layer expects %lld",
                           fn, (long long)xd->c, (long long)l->opt.num_features);
    if (xd->dtype != l->opt.dtype)
        return bnorm__fail(BNORM_ERR_MISMATCH, "%s: input is %s, layer is %s", fn,
                           xd->dtype == BNORM_DTYPE_F32 ? "f32" : "f64",
                           l->opt.dtype == BNORM_DTYPE_F32 ? "f32" : "f64");
    return BNORM_OK;
}

static bnorm_status forward_nonempty(bnorm_bn_layer *l, const bnorm_desc *x_desc, void *y,
                                     const void *x);

bnorm_status bnorm_bn_layer_forward(bnorm_bn_layer *layer, const bnorm_desc *x_desc, void *y,
                                    const void *x) {
    static const char fn[] = "bnorm_bn_layer_forward";
    bnorm_bn_layer *l = layer;
    /* Any failed forward, even a rejected one, leaves nothing for backward to use by mistake. */
    if (l) l->have_forward = 0;
    bnorm_status st = check_input(fn, l, x_desc);
    if (st) return st;
    const int64_t count = x_desc->n * x_desc->spatial;
    if (count > 0 && (x == NULL || y == NULL))
        return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: %s is NULL", fn, x ? "y" : "x");
    if (count == 1 && (l->normalize_with == BNORM_BN_STATS_BATCH || l->update_running))
        return bnorm__fail(BNORM_ERR_BATCH_TOO_SMALL,
                           "%s: expected more than 1 value per channel when training, got input "
                           "of N=%lld with spatial size %lld",
                           fn, (long long)x_desc->n, (long long)x_desc->spatial);

    st = count == 0 ? BNORM_OK : forward_nonempty(l, x_desc, y, x); /* empty: nothing changes */
    if (st != BNORM_OK && st != BNORM_WARN_NONFINITE) return st;
    l->fwd_desc = *x_desc;
    l->fwd_source = l->normalize_with;
    l->have_forward = 1;
    return st;
}

static bnorm_status forward_nonempty(bnorm_bn_layer *l, const bnorm_desc *x_desc, void *y,
                                     const void *x) {
    const unsigned flags = l->opt.fuse_relu ? BNORM_BN_FUSE_RELU : 0u;
    const bnorm_dtype dt = l->opt.dtype;
    const int64_t C = l->opt.num_features;
    bnorm_status st;

    bnorm_bn_running run = {l->running_mean, l->running_var, l->num_batches_tracked,
                            l->opt.momentum};
    bnorm_bn_running *runp = l->update_running ? &run : NULL;
    if (l->normalize_with == BNORM_BN_STATS_BATCH)
        return bnorm_bn_forward_train(x_desc, y, l->save_mean, l->save_invstd, x, l->weight,
                                      l->bias, runp, l->opt.eps, flags);

    /* Fixed statistics: the running values as they were before this batch normalize it. */
    for (int64_t c = 0; c < C; c++)
        l->save_mean[c] = dt == BNORM_DTYPE_F32 ? (double)((const float *)l->running_mean)[c]
                                                : ((const double *)l->running_mean)[c];
    if ((st = bnorm_bn_invstd(C, dt, l->save_invstd, l->running_var, l->opt.eps))) return st;
    bnorm_status update = BNORM_OK;
    if (runp) {
        bnorm_bn_moments m = {C, 0, l->moments_mean, l->moments_m2};
        if ((st = bnorm_bn_stats(x_desc, x, &m))) return st;
        update = bnorm_bn_moments_finalize(&m, dt, l->opt.eps, NULL, NULL, runp);
        if (update != BNORM_OK && update != BNORM_WARN_NONFINITE) return update;
    }
    st = bnorm_bn_apply(x_desc, y, x, l->save_mean, l->save_invstd, l->weight, l->bias, flags);
    return st ? st : update;
}

bnorm_status bnorm_bn_layer_backward(bnorm_bn_layer *layer, const bnorm_desc *x_desc, void *dx,
                                     const void *dy, const void *x) {
    static const char fn[] = "bnorm_bn_layer_backward";
    bnorm_bn_layer *l = layer;
    bnorm_status st = check_input(fn, l, x_desc);
    if (st) return st;
    if (!l->have_forward)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: backward called before any forward",
                           fn);
    const bnorm_desc *f = &l->fwd_desc;
    if (f->n != x_desc->n || f->spatial != x_desc->spatial || f->layout != x_desc->layout)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT,
                           "%s: input (N=%lld, spatial=%lld, layout %d) differs from the last "
                           "forward's (N=%lld, spatial=%lld, layout %d)",
                           fn, (long long)x_desc->n, (long long)x_desc->spatial,
                           (int)x_desc->layout, (long long)f->n, (long long)f->spatial,
                           (int)f->layout);
    const int64_t count = x_desc->n * x_desc->spatial, C = l->opt.num_features;
    if (count == 0) return BNORM_OK;
    if (dy == NULL || x == NULL)
        return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: %s is NULL", fn, dy ? "x" : "dy");
    const unsigned flags = l->opt.fuse_relu ? BNORM_BN_FUSE_RELU : 0u;
    /* one fused call (each channel's sums and dx while it is in cache); this batch's parameter
     * gradients are then added to the accumulated ones */
    const int affine = l->opt.affine;
    if ((dx || affine) &&
        (st = bnorm_bn_backward(x_desc, dx, affine ? l->dw_batch : NULL,
                                affine ? l->db_batch : NULL, dy, x, l->save_mean, l->save_invstd,
                                l->weight, l->bias, l->fwd_source, flags)))
        return st;
    if (affine) {
        for (int64_t c = 0; c < C; c++) {
            if (l->opt.dtype == BNORM_DTYPE_F32) {
                ((float *)l->weight_grad)[c] += ((const float *)(void *)l->dw_batch)[c];
                ((float *)l->bias_grad)[c] += ((const float *)(void *)l->db_batch)[c];
            } else {
                ((double *)l->weight_grad)[c] += l->dw_batch[c];
                ((double *)l->bias_grad)[c] += l->db_batch[c];
            }
        }
    }
    return BNORM_OK;
}

void bnorm_bn_layer_zero_grad(bnorm_bn_layer *layer) {
    if (layer == NULL || !layer->opt.affine) return;
    fill(layer->opt.dtype, layer->weight_grad, layer->opt.num_features, 0.0);
    fill(layer->opt.dtype, layer->bias_grad, layer->opt.num_features, 0.0);
}

void bnorm_bn_layer_reset_running_stats(bnorm_bn_layer *layer) {
    if (layer == NULL || !layer->opt.track_running_stats) return;
    fill(layer->opt.dtype, layer->running_mean, layer->opt.num_features, 0.0);
    fill(layer->opt.dtype, layer->running_var, layer->opt.num_features, 1.0);
    *layer->num_batches_tracked = 0;
}

bnorm_status bnorm_bn_layer_tensor(const bnorm_bn_layer *layer, const char *name,
                                   bnorm_tensor_view *view) {
    static const char fn[] = "bnorm_bn_layer_tensor";
    if (layer == NULL || name == NULL || view == NULL)
        return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: %s is NULL", fn,
                           layer == NULL  ? "layer"
                           : name == NULL ? "name"
                                          : "view");
    const bnorm_bn_layer *l = layer;
    const struct {
        const char *name;
        void *data;
        int present;
    } table[] = {
        {"weight", l->weight, l->opt.affine},
        {"bias", l->bias, l->opt.affine},
        {"running_mean", l->running_mean, l->opt.track_running_stats},
        {"running_var", l->running_var, l->opt.track_running_stats},
        {"num_batches_tracked", l->num_batches_tracked, l->opt.track_running_stats},
        {"weight.grad", l->weight_grad, l->opt.affine},
        {"bias.grad", l->bias_grad, l->opt.affine},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(name, table[i].name) != 0) continue;
        if (!table[i].present)
            return bnorm__fail(
                BNORM_ERR_INVALID_ARGUMENT, "%s: layer has no '%s' (%s is off)", fn, name,
                strstr(name, "running") || strstr(name, "batches") ? "track_running_stats"
                                                                   : "affine");
        const int is_count = strcmp(name, "num_batches_tracked") == 0;
        view->data = table[i].data;
        view->dtype = is_count ? BNORM_DTYPE_I64 : l->opt.dtype;
        view->numel = is_count ? 1 : l->opt.num_features;
        return BNORM_OK;
    }
    return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: unknown tensor name '%s'", fn, name);
}

const bnorm_bn_options *bnorm_bn_layer_options(const bnorm_bn_layer *layer) {
    return layer ? &layer->opt : NULL;
}
