/* tests/test_golden.c - libbnorm against PyTorch 1.13: every case of tests/golden/bn_golden.txt
 * (written by gen_golden.py) is replayed through the stateful layer: training steps (y, dx,
 * dweight, dbias, running stats, num_batches_tracked) and one eval-mode forward/backward.
 * Tolerance: |got - ref| <= rtol * (|ref| + max|ref over the tensor|), rtol 1e-4 for float32 and
 * 1e-5 for float64.
 * Usage: test_golden FILE */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bnorm.h"
#include "check.h"

#define MAX_TENSORS 64

typedef struct {
    char name[64];
    int64_t count;
    double *v;
} tensor;

typedef struct {
    char name[128];
    int dim, steps, affine, track, relu, ndim;
    int64_t shape[5];
    bnorm_dtype dtype;
    bnorm_layout layout;
    double momentum, eps;
    int ntensors;
    tensor t[MAX_TENSORS];
} golden_case;

static const tensor *find(const golden_case *gc, const char *name) {
    for (int i = 0; i < gc->ntensors; i++)
        if (strcmp(gc->t[i].name, name) == 0) return &gc->t[i];
    fprintf(stderr, "case %s: tensor %s missing from the golden file\n", gc->name, name);
    return NULL;
}

static int parse_option(golden_case *gc, const char *kv) {
    const char *eq = strchr(kv, '=');
    if (!eq) return 0;
    const char *v = eq + 1;
    size_t klen = (size_t)(eq - kv);
#define KEY(k) (klen == strlen(k) && strncmp(kv, k, klen) == 0)
    if (KEY("dim"))
        gc->dim = atoi(v);
    else if (KEY("dtype"))
        gc->dtype = strcmp(v, "f32") == 0 ? BNORM_DTYPE_F32 : BNORM_DTYPE_F64;
    else if (KEY("layout"))
        gc->layout =
            strcmp(v, "last") == 0 ? BNORM_LAYOUT_CHANNELS_LAST : BNORM_LAYOUT_CHANNELS_FIRST;
    else if (KEY("shape")) {
        gc->ndim = 0;
        for (const char *p = v; *p && gc->ndim < 5;) {
            gc->shape[gc->ndim++] = strtoll(p, (char **)&p, 10);
            if (*p == ',')
                p++;
            else
                break;
        }
    } else if (KEY("affine"))
        gc->affine = atoi(v);
    else if (KEY("track"))
        gc->track = atoi(v);
    else if (KEY("momentum"))
        gc->momentum = strcmp(v, "none") == 0 ? BNORM_BN_MOMENTUM_CUMULATIVE : strtod(v, NULL);
    else if (KEY("eps"))
        gc->eps = strtod(v, NULL);
    else if (KEY("relu"))
        gc->relu = atoi(v);
    else if (KEY("steps"))
        gc->steps = atoi(v);
    else
        return 0;
#undef KEY
    return 1;
}

/* Reads the next case; returns 0 at end of file, -1 on a malformed file. */
static int read_case(FILE *f, golden_case *gc) {
    char line[512];
    memset(gc, 0, sizeof *gc);
    for (;;) {
        if (!fgets(line, sizeof line, f)) return 0;
        if (strncmp(line, "case ", 5) == 0) break;
    }
    char *save = NULL, *tok = strtok_r(line + 5, " \n", &save);
    if (!tok) return -1;
    snprintf(gc->name, sizeof gc->name, "%s", tok);
    while ((tok = strtok_r(NULL, " \n", &save)) != NULL)
        if (!parse_option(gc, tok)) return -1;
    for (;;) {
        char head[256];
        if (!fgets(head, sizeof head, f)) return -1;
        if (head[0] == '\n') continue; /* the end of a value line */
        if (strncmp(head, "end", 3) == 0) return 1;
        if (gc->ntensors == MAX_TENSORS) return -1;
        tensor *t = &gc->t[gc->ntensors++];
        long long count;
        if (sscanf(head, "tensor %63s %lld", t->name, &count) != 2 || count < 0) return -1;
        t->count = count;
        t->v = malloc(sizeof(double) * (size_t)(count ? count : 1));
        for (int64_t i = 0; i < count; i++)
            if (fscanf(f, "%lf", &t->v[i]) != 1) return -1;
    }
}

static void free_case(golden_case *gc) {
    for (int i = 0; i < gc->ntensors; i++)
        free(gc->t[i].v);
}

/* memory offset of logical element (n, c, s) */
static int64_t offset(const bnorm_desc *d, int64_t n, int64_t c, int64_t s) {
    return d->layout == BNORM_LAYOUT_CHANNELS_FIRST ? (n * d->c + c) * d->spatial + s
                                                    : (n * d->spatial + s) * d->c + c;
}

/* logical doubles -> typed buffer in the descriptor's layout (caller frees) */
static void *to_tensor(const bnorm_desc *d, const double *logical) {
    const int64_t numel = bnorm_desc_numel(d);
    void *buf = malloc((size_t)(numel ? numel : 1) * 8);
    for (int64_t n = 0, i = 0; n < d->n; n++)
        for (int64_t c = 0; c < d->c; c++)
            for (int64_t s = 0; s < d->spatial; s++, i++) {
                const int64_t o = offset(d, n, c, s);
                if (d->dtype == BNORM_DTYPE_F32)
                    ((float *)buf)[o] = (float)logical[i];
                else
                    ((double *)buf)[o] = logical[i];
            }
    return buf;
}

static double get(bnorm_dtype dt, const void *buf, int64_t i) {
    return dt == BNORM_DTYPE_F32 ? ((const float *)buf)[i] : ((const double *)buf)[i];
}

/* Compares `got` (typed; in layout when d is given, else a flat [n] array) with logical refs.
 * Where `truth` is given (float64 PyTorch on the same inputs) an element also passes when it is
 * within the tolerance of the truth: then bnorm is more accurate than PyTorch's float32. */
static void compare(const golden_case *gc, const bnorm_desc *d, bnorm_dtype dt, const void *got,
                    const tensor *ref, const tensor *truth) {
    if (!CHECK(ref != NULL)) return;
    const double rtol = dt == BNORM_DTYPE_F32 ? 1e-4 : 1e-5;
    double maxabs = 0.0;
    for (int64_t i = 0; i < ref->count; i++)
        if (fabs(ref->v[i]) > maxabs) maxabs = fabs(ref->v[i]);
    int64_t bad = -1;
    double g_bad = 0.0;
    for (int64_t i = 0; i < ref->count && bad < 0; i++) {
        int64_t o = i;
        if (d) {
            const int64_t s = i % d->spatial, c = (i / d->spatial) % d->c,
                          n = i / (d->spatial * d->c);
            o = offset(d, n, c, s);
        }
        const double g = get(dt, got, o);
        const int near_truth =
            truth && fabs(g - truth->v[i]) <= rtol * (fabs(truth->v[i]) + maxabs);
        if (!(fabs(g - ref->v[i]) <= rtol * (fabs(ref->v[i]) + maxabs)) && !near_truth) {
            bad = i;
            g_bad = g;
        }
    }
    if (!CHECK(bad < 0))
        fprintf(stderr, "  case %s, %s: element %lld is %.9g, PyTorch says %.9g\n", gc->name,
                ref->name, (long long)bad, g_bad, ref->v[bad]);
}

static void run_case(const golden_case *gc) {
    bnorm_desc d;
    CHECK_OK(bnorm_desc_init(&d, gc->dtype, gc->layout, gc->ndim, gc->shape));
    bnorm_bn_options opt = bnorm_bn_options_default(d.c);
    opt.eps = gc->eps;
    opt.momentum = gc->momentum;
    opt.affine = gc->affine;
    opt.track_running_stats = gc->track;
    opt.fuse_relu = gc->relu;
    opt.dtype = gc->dtype;
    bnorm_bn_layer *bn = NULL;
    CHECK_OK(bnorm_bn_layer_create(&bn, &opt, NULL));
    if (!bn) return;
    bnorm_tensor_view w, b, rm, rv, nbt, gw, gb;
    if (gc->affine) {
        CHECK_OK(bnorm_bn_layer_tensor(bn, "weight", &w));
        CHECK_OK(bnorm_bn_layer_tensor(bn, "bias", &b));
        CHECK_OK(bnorm_bn_layer_tensor(bn, "weight.grad", &gw));
        CHECK_OK(bnorm_bn_layer_tensor(bn, "bias.grad", &gb));
        const tensor *tw = find(gc, "weight"), *tb = find(gc, "bias");
        if (!CHECK(tw && tb)) return;
        for (int64_t c = 0; c < d.c; c++) {
            if (gc->dtype == BNORM_DTYPE_F32) {
                ((float *)w.data)[c] = (float)tw->v[c];
                ((float *)b.data)[c] = (float)tb->v[c];
            } else {
                ((double *)w.data)[c] = tw->v[c];
                ((double *)b.data)[c] = tb->v[c];
            }
        }
    }
    if (gc->track) {
        CHECK_OK(bnorm_bn_layer_tensor(bn, "running_mean", &rm));
        CHECK_OK(bnorm_bn_layer_tensor(bn, "running_var", &rv));
        CHECK_OK(bnorm_bn_layer_tensor(bn, "num_batches_tracked", &nbt));
    }
    const int64_t numel = bnorm_desc_numel(&d);
    void *y = malloc((size_t)numel * 8), *dx = malloc((size_t)numel * 8);
    for (int step = 0; step <= gc->steps; step++) {
        char tag[16], name[64];
        if (step < gc->steps) {
            snprintf(tag, sizeof tag, "%d", step);
        } else {
            snprintf(tag, sizeof tag, "eval");
            bnorm_bn_layer_set_training(bn, 0);
        }
#define T(prefix) (snprintf(name, sizeof name, "%s.%s", prefix, tag), find(gc, name))
        const tensor *tx = T("x"), *tdy = T("dy");
        if (!CHECK(tx && tdy)) break;
        void *x = to_tensor(&d, tx->v), *dy = to_tensor(&d, tdy->v);
        bnorm_bn_layer_zero_grad(bn);
        CHECK_OK(bnorm_bn_layer_forward(bn, &d, y, x));
        CHECK_OK(bnorm_bn_layer_backward(bn, &d, dx, dy, x));
        compare(gc, &d, d.dtype, y, T("y"), NULL);
        compare(gc, &d, d.dtype, dx, T("dx"), d.dtype == BNORM_DTYPE_F32 ? T("dx64") : NULL);
        if (gc->affine) {
            compare(gc, NULL, d.dtype, gw.data, T("dweight"), NULL);
            compare(gc, NULL, d.dtype, gb.data, T("dbias"), NULL);
        }
        if (gc->track) {
            compare(gc, NULL, d.dtype, rm.data, T("running_mean"), NULL);
            compare(gc, NULL, d.dtype, rv.data, T("running_var"), NULL);
            const tensor *tn = T("num_batches_tracked");
            if (CHECK(tn != NULL)) CHECK_INT_EQ(*(int64_t *)nbt.data, (int64_t)tn->v[0]);
        }
#undef T
        free(x);
        free(dy);
    }
    free(y);
    free(dx);
    bnorm_bn_layer_free(bn);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s GOLDEN_FILE\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!CHECK(f != NULL)) return check_report();
    golden_case *gc = malloc(sizeof *gc);
    int cases = 0, r;
    while ((r = read_case(f, gc)) == 1) {
        run_case(gc);
        free_case(gc);
        cases++;
    }
    CHECK(r == 0); /* the file parsed to its end */
    CHECK(cases >= 60);
    fclose(f);
    free(gc);
    printf("%d golden cases\n", cases);
    return check_report();
}
