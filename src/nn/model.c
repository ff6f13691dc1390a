/* src/nn/model.c - a model from its text spec: parsing, shapes, one arena each for parameters,
 * gradients, momentum buffers, bn running statistics and activations; forward, backward and
 * softmax cross-entropy. */
#define _POSIX_C_SOURCE 200809L /* strtok_r */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/layers.h"
#include "util/internal.h"

#define MAX_LAYERS  64
#define MAX_TENSORS (MAX_LAYERS * 15)

typedef struct {
    char name[16];
    double args[4];
    int nargs;
    int stride, pad, bias; /* keyword arguments; -1 = not given */
    char text[64];         /* as written, for messages */
} token;

typedef struct {
    char name[64];
    void *data;
    float *grad, *momentum;
    int64_t numel, shape[4];
    int ndim, is_int64, no_decay;
} tensor_entry;

struct bnorm_model {
    bnorm_model_options opt;
    char *spec;
    int nlayers;
    bnorm__layer layers[MAX_LAYERS];
    bnorm__layer subs[MAX_LAYERS * 6]; /* the parts of residual blocks */
    int nsubs;
    int ntensors;
    tensor_entry tensors[MAX_TENSORS];
    int64_t nparams;
    float *params, *grads, *moms; /* arenas of nparams floats */
    float *stats;                 /* bn running statistics */
    int64_t *nbt;                 /* bn num_batches_tracked */
    float *acts;                  /* activations and their gradients */
    float *dlogits;
    int64_t last_n; /* images in the last forward, 0 before any */
    int64_t classes;
};

/* ---- parsing ------------------------------------------------------------------------------ */

static bnorm_status parse_token(const char *start, size_t len, int pos, token *t) {
    static const char fn[] = "bnorm_model_create";
    memset(t, 0, sizeof *t);
    t->stride = t->pad = t->bias = -1;
    snprintf(t->text, sizeof t->text, "%.*s", (int)(len < 60 ? len : 60), start);
    size_t i = 0;
    while (i < len && (isalnum((unsigned char)start[i]) || start[i] == '_'))
        i++;
    if (i == 0 || i >= sizeof t->name)
        return bnorm__fail(BNORM_ERR_PARSE, "%s: layer %d '%s': expected a layer name", fn, pos,
                           t->text);
    memcpy(t->name, start, i);
    if (i == len) return BNORM_OK;
    if (start[i] != '(' || start[len - 1] != ')')
        return bnorm__fail(BNORM_ERR_PARSE, "%s: layer %d '%s': expected name(arguments)", fn, pos,
                           t->text);
    char args[128];
    const size_t alen = len - i - 2;
    if (alen >= sizeof args)
        return bnorm__fail(BNORM_ERR_PARSE, "%s: layer %d '%s': arguments too long", fn, pos,
                           t->text);
    memcpy(args, start + i + 1, alen);
    args[alen] = 0;
    char *save = NULL;
    for (char *a = strtok_r(args, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*a))
            a++;
        char *eq = strchr(a, '='), *end;
        if (eq) {
            *eq = 0;
            const long v = strtol(eq + 1, &end, 10);
            int *slot = strcmp(a, "stride") == 0 ? &t->stride
                        : strcmp(a, "pad") == 0  ? &t->pad
                        : strcmp(a, "bias") == 0 ? &t->bias
                                                 : NULL;
            if (!slot || end == eq + 1 || *end || v < 0 || v > 1024)
                return bnorm__fail(BNORM_ERR_PARSE, "%s: layer %d '%s': bad argument '%s=%s'", fn,
                                   pos, t->text, a, eq + 1);
            *slot = (int)v;
            continue;
        }
        const double v = strtod(a, &end);
        if (end == a || *end || t->nargs == 4)
            return bnorm__fail(BNORM_ERR_PARSE, "%s: layer %d '%s': bad argument '%s'", fn, pos,
                               t->text, a);
        t->args[t->nargs++] = v;
    }
    return BNORM_OK;
}

/* Splits the spec into tokens (spaces between layers; none inside parentheses). */
static bnorm_status tokenize(const char *spec, token *toks, int *count) {
    static const char fn[] = "bnorm_model_create";
    int n = 0;
    const char *p = spec;
    while (*p) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p) break;
        const char *s = p;
        int depth = 0;
        while (*p && (depth > 0 || !isspace((unsigned char)*p))) {
            if (*p == '(') depth++;
            if (*p == ')') depth--;
            p++;
        }
        if (depth != 0)
            return bnorm__fail(BNORM_ERR_PARSE, "%s: layer %d: unbalanced parentheses in '%.*s'",
                               fn, n, (int)(p - s), s);
        if (n == MAX_LAYERS)
            return bnorm__fail(BNORM_ERR_PARSE, "%s: more than %d layers", fn, MAX_LAYERS);
        bnorm_status st = parse_token(s, (size_t)(p - s), n, &toks[n]);
        if (st) return st;
        n++;
    }
    if (n == 0) return bnorm__fail(BNORM_ERR_PARSE, "%s: the spec has no layers", fn);
    *count = n;
    return BNORM_OK;
}

bnorm_model_options bnorm_model_options_default(void) {
    bnorm_model_options o;
    memset(&o, 0, sizeof o);
    o.in_c = 1, o.in_h = 28, o.in_w = 28;
    o.max_batch = 128;
    o.init = BNORM_INIT_DEFAULT;
    o.init_scale = 1.0;
    o.seed = 1;
    return o;
}

/* ---- building ------------------------------------------------------------------------------ */

typedef struct {
    int64_t c, h, w;
} shape3;

static int is_name(const token *t, const char *name) {
    return strcmp(t->name, name) == 0;
}

static bnorm_status need_args(const token *t, int pos, int lo, int hi) {
    if (t->nargs < lo || t->nargs > hi)
        return bnorm__fail(BNORM_ERR_PARSE,
                           "bnorm_model_create: layer %d '%s': expects %d to %d "
                           "positional arguments, got %d",
                           pos, t->text, lo, hi, t->nargs);
    return BNORM_OK;
}

static bnorm_status shape_error(int pos, const token *t, shape3 s, const char *why) {
    return bnorm__fail(BNORM_ERR_INVALID_SHAPE,
                       "bnorm_model_create: layer %d '%s': input is %lldx%lldx%lld; %s", pos,
                       t->text, (long long)s.c, (long long)s.h, (long long)s.w, why);
}

static int64_t conv_out(int64_t in, int k, int stride, int pad) {
    return in + 2 * pad < k ? 0 : (in + 2 * pad - k) / stride + 1;
}

/* Sets the layer's kind, output shape and parameter sizes from its token. */
static bnorm_status plan_layer(bnorm__layer *l, const token *t, const token *next, int pos,
                               shape3 in, int no_bias_default, shape3 *out) {
    bnorm_status st;
    l->ic = in.c, l->ih = in.h, l->iw = in.w;
    *out = in;
    if (is_name(t, "conv")) {
        if ((st = need_args(t, pos, 2, 2))) return st;
        const int64_t oc = (int64_t)t->args[0];
        l->k = (int)t->args[1];
        l->stride = t->stride > 0 ? t->stride : 1;
        l->pad = t->pad >= 0 ? t->pad : 0;
        if (oc < 1 || t->args[0] != (double)oc || l->k < 1 || t->args[1] != l->k || oc > 65536)
            return bnorm__fail(BNORM_ERR_PARSE,
                               "bnorm_model_create: layer %d '%s': needs conv(out_channels >= 1, "
                               "kernel >= 1)",
                               pos, t->text);
        out->c = oc;
        out->h = conv_out(in.h, l->k, l->stride, l->pad);
        out->w = conv_out(in.w, l->k, l->stride, l->pad);
        if (out->h < 1 || out->w < 1)
            return shape_error(pos, t, in, "the kernel does not fit (add padding)");
        l->has_bias = t->bias >= 0 ? t->bias : !no_bias_default;
        l->nw = oc * in.c * l->k * l->k;
        l->nb = l->has_bias ? oc : 0;
        l->ops = &bnorm__conv_ops;
    } else if (is_name(t, "linear")) {
        if ((st = need_args(t, pos, 1, 1))) return st;
        const int64_t of = (int64_t)t->args[0];
        if (of < 1 || t->args[0] != (double)of || of > (1 << 24))
            return bnorm__fail(BNORM_ERR_PARSE,
                               "bnorm_model_create: layer %d '%s': needs linear(out_features >= 1)",
                               pos, t->text);
        if (in.h != 1 || in.w != 1)
            return shape_error(pos, t, in, "linear needs a flat input: add flatten before it");
        *out = (shape3){of, 1, 1};
        l->has_bias = t->bias >= 0 ? t->bias : !no_bias_default;
        l->nw = of * in.c;
        l->nb = l->has_bias ? of : 0;
        l->ops = &bnorm__linear_ops;
    } else if (is_name(t, "bn")) {
        if ((st = need_args(t, pos, 0, 0))) return st;
        l->fuse_relu = next && is_name(next, "relu");
        l->nw = l->nb = in.c;
        l->ops = &bnorm__bn_ops;
    } else if (is_name(t, "relu")) {
        if ((st = need_args(t, pos, 0, 0))) return st;
        l->ops = &bnorm__relu_ops;
    } else if (is_name(t, "maxpool") || is_name(t, "avgpool")) {
        if ((st = need_args(t, pos, 1, 1))) return st;
        l->k = (int)t->args[0];
        l->stride = t->stride > 0 ? t->stride : l->k;
        if (l->k < 1 || t->args[0] != l->k)
            return bnorm__fail(BNORM_ERR_PARSE,
                               "bnorm_model_create: layer %d '%s': needs a "
                               "kernel size >= 1",
                               pos, t->text);
        out->h = conv_out(in.h, l->k, l->stride, 0);
        out->w = conv_out(in.w, l->k, l->stride, 0);
        if (out->h < 1 || out->w < 1)
            return shape_error(pos, t, in, "the pooling window is larger than the input");
        l->ops = is_name(t, "maxpool") ? &bnorm__maxpool_ops : &bnorm__avgpool_ops;
    } else if (is_name(t, "gap")) {
        if ((st = need_args(t, pos, 0, 0))) return st;
        if (in.h != in.w)
            return shape_error(pos, t, in, "global average pooling needs a square input");
        l->k = (int)in.h;
        l->stride = 1;
        out->h = out->w = 1;
        l->ops = &bnorm__avgpool_ops;
    } else if (is_name(t, "flatten")) {
        if ((st = need_args(t, pos, 0, 0))) return st;
        *out = (shape3){in.c * in.h * in.w, 1, 1};
        l->ops = &bnorm__alias_ops;
    } else if (is_name(t, "dropout")) {
        if ((st = need_args(t, pos, 1, 1))) return st;
        l->p = t->args[0];
        if (!(l->p >= 0.0 && l->p < 1.0))
            return bnorm__fail(BNORM_ERR_PARSE,
                               "bnorm_model_create: layer %d '%s': needs 0 <= p < 1", pos, t->text);
        l->ops = &bnorm__dropout_ops;
    } else {
        return bnorm__fail(BNORM_ERR_PARSE,
                           "bnorm_model_create: layer %d '%s': unknown layer (conv, linear, bn, "
                           "relu, maxpool, avgpool, gap, flatten, dropout)",
                           pos, t->text);
    }
    l->oc = out->c, l->oh = out->h, l->ow = out->w;
    return BNORM_OK;
}

/* PyTorch's initialization of a conv/linear with fan_in, or the chosen alternative */
static void init_weights(bnorm__layer *l, const bnorm_model_options *o, bnorm_rng *rng) {
    const int64_t kk = l->ops == &bnorm__conv_ops ? (int64_t)l->k * l->k : 1;
    const double fan_in = (double)(l->ic * kk * (l->ops == &bnorm__linear_ops ? l->ih * l->iw : 1));
    const double fan_out = (double)(l->oc * kk);
    for (int64_t i = 0; i < l->nw; i++) {
        double v;
        switch (o->init) {
        case BNORM_INIT_HE:
            v = bnorm_rng_normal(rng) * sqrt(2.0 / fan_in);
            break;
        case BNORM_INIT_XAVIER:
            v = (2.0 * bnorm_rng_uniform(rng) - 1.0) * sqrt(6.0 / (fan_in + fan_out));
            break;
        default:
            v = (2.0 * bnorm_rng_uniform(rng) - 1.0) / sqrt(fan_in);
            break;
        }
        l->w[i] = (float)(v * o->init_scale);
    }
    for (int64_t i = 0; i < l->nb; i++)
        l->b[i] = o->init == BNORM_INIT_DEFAULT
                      ? (float)((2.0 * bnorm_rng_uniform(rng) - 1.0) / sqrt(fan_in))
                      : 0.0f;
}

static void add_tensor(bnorm_model *m, const char *prefix, const char *suffix, void *data,
                       float *grad, float *mom, int ndim, const int64_t *shape, int is_int64,
                       int no_decay) {
    tensor_entry *t = &m->tensors[m->ntensors++];
    snprintf(t->name, sizeof t->name, "%s.%s", prefix, suffix);
    t->data = data, t->grad = grad, t->momentum = mom;
    t->ndim = ndim, t->is_int64 = is_int64, t->no_decay = no_decay;
    t->numel = 1;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i], t->numel *= shape[i];
}

void bnorm_model_free(bnorm_model *m) {
    if (!m) return;
    for (int i = 0; i < m->nlayers; i++)
        bnorm_bn_layer_free(m->layers[i].bn);
    for (int i = 0; i < m->nsubs; i++)
        bnorm_bn_layer_free(m->subs[i].bn);
    bnorm__free(m->params), bnorm__free(m->grads), bnorm__free(m->moms);
    bnorm__free(m->stats), bnorm__free(m->nbt), bnorm__free(m->acts);
    bnorm__free(m->dlogits), bnorm__free(m->spec);
    bnorm__free(m);
}

/* the spec without its bn layers, for no_bn */
static char *spec_without_bn(const token *toks, int n) {
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += strlen(toks[i].text) + 1;
    char *s = bnorm__malloc(len), *p = s;
    if (!s) return NULL;
    *p = 0;
    for (int i = 0; i < n; i++) {
        if (is_name(&toks[i], "bn")) continue;
        p += sprintf(p, "%s%s", p == s ? "" : " ", toks[i].text);
    }
    return s;
}

/* ---- the two passes over layers: sizes, then views, names and initial values ------------- */

typedef struct {
    bnorm_model *m;
    int64_t nparams, nstats, nacts, nbn, tmp_max; /* pass 1 totals */
    int64_t po, so, ao;                           /* pass 2 cursors */
    int bi;
    float *tmp;
    bnorm_rng rng;
} builder;

/* pass 1: what layer l needs from the arenas */
static void count_layer(builder *b, const bnorm__layer *l) {
    const int64_t mb = b->m->opt.max_batch, osz = mb * bnorm__out_size(l);
    if (l->ops == &bnorm__bn_ops) b->nstats += 2 * l->oc, b->nbn++;
    b->nparams += l->nw + l->nb;
    if (!l->alias) b->nacts += 2 * osz;
    if (l->ops == &bnorm__dropout_ops) b->nacts += osz; /* its mask */
    if (l->ops == &bnorm__conv_ops) {
        /* its own col buffers (one per forward chunk of images) and dcol buffers (one per
         * backward group), a shared scratch for dW parts */
        const int64_t K = l->ic * l->k * l->k;
        b->nacts += K * (bnorm__conv_col_buffers() + BNORM__CONV_GROUPS) * l->oh * l->ow;
        if (BNORM__CONV_GROUPS * l->oc * K > b->tmp_max)
            b->tmp_max = BNORM__CONV_GROUPS * l->oc * K;
    }
    if (l->ops == &bnorm__res_ops) {
        for (int i = 0; i < l->nsub; i++)
            count_layer(b, &l->sub[i]);
        if (l->nsub == 6) b->nacts += mb * bnorm__in_size(l); /* the shortcut's dX */
    }
}

/* pass 2: buffers, parameter views, names under `prefix`, initial values */
static bnorm_status wire_layer(builder *b, bnorm__layer *l, const char *prefix, const float *in,
                               float *din) {
    bnorm_model *m = b->m;
    const int64_t osz = m->opt.max_batch * bnorm__out_size(l), C = l->oc;
    l->in = in;
    l->din = din;
    if (l->alias) {
        l->out = (float *)in;
        l->dout = din;
    } else {
        l->out = m->acts + b->ao, b->ao += osz;
        l->dout = m->acts + b->ao, b->ao += osz;
    }

    if (l->ops == &bnorm__dropout_ops) l->mask = m->acts + b->ao, b->ao += osz;
    if (l->ops == &bnorm__conv_ops) {
        l->col = m->acts + b->ao, l->tmp = b->tmp, l->ncol = bnorm__conv_col_buffers();
        b->ao += l->ic * l->k * l->k * (l->ncol + BNORM__CONV_GROUPS) * l->oh * l->ow;
    }
    if (l->nw) l->w = m->params + b->po, l->gw = m->grads + b->po, b->po += l->nw;
    if (l->nb) l->b = m->params + b->po, l->gb = m->grads + b->po, b->po += l->nb;
    if (l->ops == &bnorm__conv_ops || l->ops == &bnorm__linear_ops) {
        init_weights(l, &m->opt, &b->rng);
        const int64_t wshape[4] = {C, l->ops == &bnorm__conv_ops ? l->ic : bnorm__in_size(l), l->k,
                                   l->k};
        add_tensor(m, prefix, "weight", l->w, l->gw, m->moms + (l->w - m->params),
                   l->ops == &bnorm__conv_ops ? 4 : 2, wshape, 0, 0);
        if (l->nb)
            add_tensor(m, prefix, "bias", l->b, l->gb, m->moms + (l->b - m->params), 1, &C, 0, 1);
    } else if (l->ops == &bnorm__bn_ops) {
        bnorm_bn_options bo = bnorm_bn_options_default(C);
        bo.fuse_relu = l->fuse_relu;
        bnorm_bn_buffers buf = {l->w,  l->b, m->stats + b->so, m->stats + b->so + C, m->nbt + b->bi,
                                l->gw, l->gb};
        b->so += 2 * C;
        bnorm_status st = bnorm_bn_layer_create(&l->bn, &bo, &buf);
        if (st) return st;
        add_tensor(m, prefix, "weight", l->w, l->gw, m->moms + (l->w - m->params), 1, &C, 0, 1);
        add_tensor(m, prefix, "bias", l->b, l->gb, m->moms + (l->b - m->params), 1, &C, 0, 1);
        add_tensor(m, prefix, "running_mean", buf.running_mean, NULL, NULL, 1, &C, 0, 0);
        add_tensor(m, prefix, "running_var", buf.running_var, NULL, NULL, 1, &C, 0, 0);
        add_tensor(m, prefix, "num_batches_tracked", m->nbt + b->bi, NULL, NULL, 0, NULL, 1, 0);
        b->bi++;
    } else if (l->ops == &bnorm__res_ops) {
        /* main branch conv1 -> bn1(+relu) -> conv2 -> bn2 chained from the block's input;
         * the projection shortcut (conv 1x1 -> bn) from the same input into its own dX */
        static const char *names[6] = {"conv1", "bn1", "conv2", "bn2", "shortcut.0", "shortcut.1"};
        const float *sin = in;
        float *sdin = din;
        char sub_prefix[64];
        for (int i = 0; i < l->nsub; i++) {
            if (i == 4) {
                sin = in;
                sdin = m->acts + b->ao;
                b->ao += m->opt.max_batch * bnorm__in_size(l);
            }
            snprintf(sub_prefix, sizeof sub_prefix, "%s.%s", prefix, names[i]);
            bnorm_status st = wire_layer(b, &l->sub[i], sub_prefix, sin, sdin);
            if (st) return st;
            sin = l->sub[i].out;
            sdin = l->sub[i].dout;
        }
        if (l->nsub == 6) l->sub[5].dout = l->sub[3].dout; /* both branches get the same dY */
    }
    return BNORM_OK;
}

/* Plans res(c[, stride=s]) as its parts: conv3x3(c, stride s, pad 1) bn relu conv3x3(c, pad 1)
 * bn, plus conv1x1(c, stride s) bn on the shortcut when the shape changes; out = relu(sum). */
static bnorm_status plan_res(bnorm_model *m, bnorm__layer *l, const token *t, int pos, shape3 in,
                             shape3 *out) {
    bnorm_status st;
    if ((st = need_args(t, pos, 1, 1))) return st;
    const int64_t c = (int64_t)t->args[0];
    const int s = t->stride > 0 ? t->stride : 1;
    if (c < 1 || t->args[0] != (double)c || c > 65536)
        return bnorm__fail(BNORM_ERR_PARSE,
                           "bnorm_model_create: layer %d '%s': needs "
                           "res(channels >= 1[, stride=s])",
                           pos, t->text);
    const int proj = s != 1 || c != in.c;
    if (m->nsubs + 6 > MAX_LAYERS * 6)
        return bnorm__fail(BNORM_ERR_PARSE, "bnorm_model_create: too many residual blocks");
    char text[6][64];
    snprintf(text[0], 64, "conv(%lld,3,stride=%d,pad=1,bias=0)", (long long)c, s);
    snprintf(text[1], 64, "bn");
    snprintf(text[2], 64, "conv(%lld,3,pad=1,bias=0)", (long long)c);
    snprintf(text[3], 64, "bn");
    snprintf(text[4], 64, "conv(%lld,1,stride=%d,bias=0)", (long long)c, s);
    snprintf(text[5], 64, "bn");
    l->sub = &m->subs[m->nsubs];
    l->nsub = proj ? 6 : 4;
    m->nsubs += l->nsub;
    shape3 cur = in;
    for (int i = 0; i < l->nsub; i++) {
        token st_tok;
        if (i == 4) cur = in;
        if ((st = parse_token(text[i], strlen(text[i]), pos, &st_tok)) ||
            (st = plan_layer(&l->sub[i], &st_tok, NULL, pos, cur, 1, &cur)))
            return st;
        l->sub[i].index = l->index;
    }
    l->sub[1].fuse_relu = 1;
    l->ic = in.c, l->ih = in.h, l->iw = in.w;
    l->oc = l->sub[3].oc, l->oh = l->sub[3].oh, l->ow = l->sub[3].ow;
    if (proj && (l->sub[5].oh != l->oh || l->sub[5].ow != l->ow))
        return shape_error(pos, t, in, "the shortcut does not match the block's output");
    l->ops = &bnorm__res_ops;
    *out = (shape3){l->oc, l->oh, l->ow};
    return BNORM_OK;
}

bnorm_status bnorm_model_create(bnorm_model **out, const char *spec,
                                const bnorm_model_options *options) {
    static const char fn[] = "bnorm_model_create";
    if (!out || !spec || !options)
        return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: %s is NULL", fn,
                           !out    ? "out"
                           : !spec ? "spec"
                                   : "options");
    *out = NULL;
    const bnorm_model_options *o = options;
    if (o->in_c < 1 || o->in_h < 1 || o->in_w < 1 || o->max_batch < 1 ||
        o->in_c * o->in_h * o->in_w > (1 << 26) || o->max_batch > (1 << 20))
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT,
                           "%s: input %lldx%lldx%lld, max batch %lld is out of range", fn,
                           (long long)o->in_c, (long long)o->in_h, (long long)o->in_w,
                           (long long)o->max_batch);
    if (!(o->init_scale > 0.0) || (int)o->init < 0 || (int)o->init > 2)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: bad init scheme or scale", fn);
    token toks[MAX_LAYERS];
    int ntok = 0;
    bnorm_status st = tokenize(spec, toks, &ntok);
    if (st) return st;
    if (o->no_bn) { /* drop the bn layers; indices shift as in a Sequential built without them */
        int k = 0;
        for (int i = 0; i < ntok; i++)
            if (!is_name(&toks[i], "bn")) toks[k++] = toks[i];
        ntok = k;
    }
    bnorm_model *m = bnorm__calloc(1, sizeof *m);
    if (!m) return bnorm__fail(BNORM_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    m->opt = *o;
    m->spec = o->no_bn ? spec_without_bn(toks, ntok) : bnorm__malloc(strlen(spec) + 1);
    if (!m->spec) {
        bnorm_model_free(m);
        return bnorm__fail(BNORM_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    if (!o->no_bn) strcpy(m->spec, spec);

    /* pass 1: shapes and sizes */
    shape3 s = {o->in_c, o->in_h, o->in_w};
    builder b;
    memset(&b, 0, sizeof b);
    b.m = m;
    for (int i = 0; i < ntok; i++) {
        bnorm__layer *l = &m->layers[i];
        l->index = i;
        const int followed_by_bn = i + 1 < ntok && is_name(&toks[i + 1], "bn");
        shape3 next;
        st = is_name(&toks[i], "res") ? plan_res(m, l, &toks[i], i, s, &next)
                                      : plan_layer(l, &toks[i], i + 1 < ntok ? &toks[i + 1] : NULL,
                                                   i, s, followed_by_bn, &next);
        if (st) {
            bnorm_model_free(m);
            return st;
        }
        /* a relu after a fused bn, and flatten, share their input's buffers (never layer 0) */
        l->alias = i > 0 && (l->ops == &bnorm__alias_ops ||
                             (l->ops == &bnorm__relu_ops && m->layers[i - 1].fuse_relu));
        if (l->alias)
            l->ops = &bnorm__alias_ops;
        else if (l->ops == &bnorm__alias_ops)
            l->ops = &bnorm__copy_ops; /* a leading flatten */
        count_layer(&b, l);
        s = next;
    }
    m->nlayers = ntok;
    m->classes = s.c * s.h * s.w;
    m->nparams = b.nparams;
    const int64_t nparams = b.nparams, nstats = b.nstats, nbn = b.nbn;
    const int64_t nacts = b.nacts + b.tmp_max;
    if (nacts > ((int64_t)1 << 32)) {
        bnorm_model_free(m);
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT,
                           "%s: activations for batch %lld need %lld floats: lower the batch", fn,
                           (long long)o->max_batch, (long long)nacts);
    }
    m->params = bnorm__calloc((size_t)(nparams ? nparams : 1), sizeof(float));
    m->grads = bnorm__calloc((size_t)(nparams ? nparams : 1), sizeof(float));
    m->moms = bnorm__calloc((size_t)(nparams ? nparams : 1), sizeof(float));
    m->stats = bnorm__calloc((size_t)(nstats ? nstats : 1), sizeof(float));
    m->nbt = bnorm__calloc((size_t)(nbn ? nbn : 1), sizeof(int64_t));
    m->acts = bnorm__calloc((size_t)nacts, sizeof(float));
    m->dlogits = bnorm__calloc((size_t)(o->max_batch * m->classes), sizeof(float));
    if (!m->params || !m->grads || !m->moms || !m->stats || !m->nbt || !m->acts || !m->dlogits) {
        bnorm_model_free(m);
        return bnorm__fail(BNORM_ERR_OUT_OF_MEMORY, "%s: out of memory (%lld activation floats)",
                           fn, (long long)nacts);
    }

    /* pass 2: views into the arenas, names, initial values */
    b.rng = bnorm_rng_seed(o->seed, 0x494e4954 /* "INIT" */);
    b.tmp = m->acts + nacts - b.tmp_max;
    const float *prev_out = NULL;
    float *prev_dout = NULL;
    for (int i = 0; i < ntok; i++) {
        bnorm__layer *l = &m->layers[i];
        char prefix[16];
        snprintf(prefix, sizeof prefix, "%d", i);
        if ((st = wire_layer(&b, l, prefix, prev_out, prev_dout))) {
            bnorm_model_free(m);
            return st;
        }
        prev_out = l->out;
        prev_dout = l->dout;
    }
    *out = m;
    return BNORM_OK;
}

/* ---- running ------------------------------------------------------------------------------- */

const char *bnorm_model_spec(const bnorm_model *m) {
    return m ? m->spec : NULL;
}
int64_t bnorm_model_classes(const bnorm_model *m) {
    return m ? m->classes : 0;
}
int64_t bnorm_model_param_count(const bnorm_model *m) {
    return m ? m->nparams : 0;
}
const bnorm_model_options *bnorm_model_options_of(const bnorm_model *m) {
    return m ? &m->opt : NULL;
}

bnorm_status bnorm_model_forward(bnorm_model *m, const float *x, int64_t n, int training,
                                 bnorm_rng *rng, const float **logits) {
    static const char fn[] = "bnorm_model_forward";
    if (!m || !x)
        return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: %s is NULL", fn, !m ? "model" : "x");
    if (n < 1 || n > m->opt.max_batch)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: batch of %lld, model allows 1..%lld",
                           fn, (long long)n, (long long)m->opt.max_batch);
    bnorm_rng local = bnorm_rng_seed(0, 0);
    m->last_n = 0;
    m->layers[0].in = x;
    for (int i = 0; i < m->nlayers; i++) {
        bnorm__layer *l = &m->layers[i];
        bnorm_status st = l->ops->forward(l, n, training, rng ? rng : &local);
        if (st) return st;
    }
    m->last_n = n;
    if (logits) *logits = m->layers[m->nlayers - 1].out;
    return BNORM_OK;
}

double bnorm__softmax_denominator(const float *z, int64_t K, int64_t *arg) {
    int64_t a = 0;
    for (int64_t k = 1; k < K; k++)
        if (z[k] > z[a]) a = k;
    double se = 0.0;
    for (int64_t k = 0; k < K; k++)
        se += exp((double)z[k] - z[a]);
    *arg = a;
    return se;
}

bnorm_status bnorm_model_loss(bnorm_model *m, const int32_t *labels, int64_t n, int want_grad,
                              double *loss, int64_t *correct) {
    return bnorm_model_loss_smoothed(m, labels, n, 0.0, want_grad, loss, correct);
}

bnorm_status bnorm_model_loss_smoothed(bnorm_model *m, const int32_t *labels, int64_t n,
                                       double smoothing, int want_grad, double *loss,
                                       int64_t *correct) {
    static const char fn[] = "bnorm_model_loss";
    if (!m || !labels) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: NULL argument", fn);
    if (!(smoothing >= 0.0 && smoothing <= 1.0))
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: label smoothing %g is not in [0, 1]",
                           fn, smoothing);
    if (n != m->last_n || n == 0)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: %lld labels for a forward of %lld", fn,
                           (long long)n, (long long)m->last_n);
    const int64_t K = m->classes;
    const float *z = m->layers[m->nlayers - 1].out;
    const double off = smoothing / (double)K; /* target of every class but the label's extra */
    double total = 0.0;
    int64_t right = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= K)
            return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT,
                               "%s: label %d of image %lld is not in "
                               "0..%lld",
                               fn, labels[i], (long long)i, (long long)K - 1);
        const float *zi = z + i * K;
        int64_t arg;
        const double se = bnorm__softmax_denominator(zi, K, &arg);
        const double lse = log(se); /* -log p_k = lse - (z_k - z_arg) */
        total += (1.0 - smoothing) * (lse - ((double)zi[labels[i]] - zi[arg]));
        if (smoothing > 0.0) {
            double mean_z = 0.0;
            for (int64_t k = 0; k < K; k++)
                mean_z += (double)zi[k] - zi[arg];
            total += smoothing * (lse - mean_z / (double)K);
        }
        right += arg == labels[i];
        if (want_grad)
            for (int64_t k = 0; k < K; k++) {
                const double target = (k == labels[i]) * (1.0 - smoothing) + off;
                m->dlogits[i * K + k] =
                    (float)((exp((double)zi[k] - zi[arg]) / se - target) / (double)n);
            }
    }
    if (loss) *loss = total / (double)n;
    if (correct) *correct = right;
    return BNORM_OK;
}

bnorm_status bnorm_model_backward(bnorm_model *m, const float *dlogits, float *dx) {
    static const char fn[] = "bnorm_model_backward";
    if (!m) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: model is NULL", fn);
    if (m->last_n == 0)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "%s: no forward to differentiate", fn);
    const int64_t n = m->last_n;
    bnorm__layer *last = &m->layers[m->nlayers - 1];
    memcpy(last->dout, dlogits ? dlogits : m->dlogits, (size_t)(n * m->classes) * sizeof(float));
    m->layers[0].din = dx;
    bnorm_status st = BNORM_OK;
    for (int i = m->nlayers - 1; i >= 0 && !st; i--)
        st = m->layers[i].ops->backward(&m->layers[i], n);
    m->layers[0].din = NULL;
    return st;
}

void bnorm_model_zero_grad(bnorm_model *m) {
    if (m && m->nparams) memset(m->grads, 0, (size_t)m->nparams * sizeof(float));
}

int bnorm_model_tensor_count(const bnorm_model *m) {
    return m ? m->ntensors : 0;
}

bnorm_status bnorm_model_tensor(const bnorm_model *m, int i, bnorm_named_tensor *t) {
    if (!m || !t) return bnorm__fail(BNORM_ERR_NULL_POINTER, "bnorm_model_tensor: NULL argument");
    if (i < 0 || i >= m->ntensors)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT, "bnorm_model_tensor: index %d of %d", i,
                           m->ntensors);
    const tensor_entry *e = &m->tensors[i];
    t->name = e->name, t->data = e->data, t->grad = e->grad, t->momentum = e->momentum;
    t->numel = e->numel, t->ndim = e->ndim, t->is_int64 = e->is_int64, t->no_decay = e->no_decay;
    for (int k = 0; k < 4; k++)
        t->shape[k] = k < e->ndim ? e->shape[k] : 0;
    return BNORM_OK;
}
