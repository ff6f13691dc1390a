/* bench/ab_bench.c - A/B timing of libbnorm builds: loads two or more builds of libbnorm.so and
 * times one op on one tensor with each, alternating the builds round by round after a cache
 * wash, so that the machine's drift (bandwidth here moves by up to 2x between runs) falls on all
 * of them alike. Each build runs on two placements of the tensors: on a 64-byte boundary, and
 * --offset bytes past one (16: as glibc's malloc places large blocks). float32 data, or float64
 * with --f64. Exits 1 if a build's output differs from the first build's by more than 1e-5 of
 * its largest value. bwd_apply is synchronized batch norm's second step, given the sums (of dy,
 * dy*xhat and dy^2) that the first library's backward_reduce returned. --warm K times K calls
 * in a row after an untimed one, without the wash (the tensor in cache, when it fits), and
 * reports the time of one. --relu fuses ReLU into the op (BNORM_BN_FUSE_RELU). --after-fwd runs
 * each build's own forward training on x (untimed, into a scratch tensor) between the wash and a
 * backward call, as bench/bnorm_bench.c does: what that forward leaves in the caches is what a
 * backward right after its forward starts from.
 *
 * Usage: ab_bench [--op infer|train|bwd|bwd_apply] [--relu] [--nhwc] [--f64] [--offset BYTES]
 *                 [--reps R] [--warm K] [--after-fwd] N C SPATIAL LIB.so LIB.so...
 * e.g. scripts/ab.sh builds two revisions and runs this on them. */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "bnorm/bn.h"

#define MAX_LIBS 8

typedef bnorm_status (*infer_fn)(const bnorm_desc *, void *, const void *, const void *,
                                 const void *, const void *, const void *, double, unsigned);
typedef bnorm_status (*train_fn)(const bnorm_desc *, void *, double *, double *, const void *,
                                 const void *, const void *, bnorm_bn_running *, double, unsigned);
typedef bnorm_status (*bwd_fn)(const bnorm_desc *, void *, void *, void *, const void *,
                               const void *, const double *, const double *, const void *,
                               const void *, bnorm_bn_stats_source, unsigned);

typedef bnorm_status (*reduce_fn)(const bnorm_desc *, double *, double *, double *, const void *,
                                  const void *, const double *, const double *, const void *,
                                  const void *, unsigned);
typedef bnorm_status (*apply_fn)(const bnorm_desc *, void *, const void *, const void *,
                                 const double *, const double *, const void *, const void *,
                                 const double *, const double *, const double *, int64_t,
                                 bnorm_bn_stats_source, unsigned);

typedef bnorm_status (*desc_init_fn)(bnorm_desc *, bnorm_dtype, bnorm_layout, int, const int64_t *);

enum { OP_INFER, OP_TRAIN, OP_BWD, OP_BWD_APPLY };

typedef void (*any_fn)(void);

/* dlsym's object pointer as a function pointer (POSIX makes them the same size; ISO C has no
 * cast between them), NULL if the library lacks the name */
static any_fn lookup(void *lib, const char *name) {
    void *p = lib ? dlsym(lib, name) : NULL;
    any_fn f = NULL;
    if (p) memcpy(&f, &p, sizeof f);
    return f;
}

/* Element i of a float32 (f64 == 0) or float64 array */
static int f64;
static double get(const void *p, int64_t i) {
    return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}
static void set(void *p, int64_t i, double v) {
    if (f64)
        ((double *)p)[i] = v;
    else
        ((float *)p)[i] = (float)v;
}

/* n elements, `offset` bytes past a 64-byte boundary */
static void *elements(int64_t n, int offset) {
    return (char *)bench_floats((n + 16) * (f64 ? 2 : 1)) + offset;
}

int main(int argc, char **argv) {
    int op = OP_INFER, nhwc = 0, reps = 11, offset = 16, warm = 0, after_fwd = 0, a = 1;
    unsigned flags = 0;
    for (; a < argc && argv[a][0] == '-'; a++) {
        if (strcmp(argv[a], "--nhwc") == 0)
            nhwc = 1;
        else if (strcmp(argv[a], "--f64") == 0)
            f64 = 1;
        else if (strcmp(argv[a], "--op") == 0 && a + 1 < argc) {
            const char *o = argv[++a];
            op = strcmp(o, "train") == 0       ? OP_TRAIN
                 : strcmp(o, "bwd") == 0       ? OP_BWD
                 : strcmp(o, "bwd_apply") == 0 ? OP_BWD_APPLY
                                               : OP_INFER;
            if (op == OP_INFER && strcmp(o, "infer") != 0) a = argc; /* unknown op: usage */
        } else if (strcmp(argv[a], "--offset") == 0 && a + 1 < argc)
            offset = atoi(argv[++a]);
        else if (strcmp(argv[a], "--reps") == 0 && a + 1 < argc)
            reps = atoi(argv[++a]);
        else if (strcmp(argv[a], "--warm") == 0 && a + 1 < argc)
            warm = atoi(argv[++a]);
        else if (strcmp(argv[a], "--after-fwd") == 0)
            after_fwd = 1;
        else if (strcmp(argv[a], "--relu") == 0)
            flags = BNORM_BN_FUSE_RELU;
        else
            a = argc;
    }
    const int nlibs = argc - a - 3;
    if (a >= argc || nlibs < 1 || nlibs > MAX_LIBS || reps < 1 || reps > MAX_REPS || offset < 0 ||
        offset >= 64 || offset % (f64 ? 8 : 4) || warm < 0 ||
        (after_fwd && (warm || (op != OP_BWD && op != OP_BWD_APPLY)))) {
        fprintf(stderr,
                "usage: %s [--op infer|train|bwd|bwd_apply] [--relu] [--nhwc] [--f64] "
                "[--offset BYTES (16; 0..60, a multiple of the element size)] [--reps R (11)] "
                "[--warm K (0: one call after a cache wash)] [--after-fwd (bwd ops, no --warm)] "
                "N C SPATIAL LIB.so... (1 to %d libraries)\n",
                argv[0], MAX_LIBS);
        return 2;
    }
    /* everything from the libraries: none is linked in */
    any_fn fn[MAX_LIBS], fwd[MAX_LIBS], desc_init = NULL, reduce = NULL;
    const char *sym = op == OP_INFER   ? "bnorm_bn_forward_infer"
                      : op == OP_TRAIN ? "bnorm_bn_forward_train"
                      : op == OP_BWD   ? "bnorm_bn_backward"
                                       : "bnorm_bn_backward_apply";
    for (int l = 0; l < nlibs; l++) {
        void *h = dlopen(argv[a + 3 + l], RTLD_NOW | RTLD_LOCAL);
        fn[l] = lookup(h, sym);
        fwd[l] = lookup(h, "bnorm_bn_forward_train");
        if (l == 0)
            desc_init = lookup(h, "bnorm_desc_init"),
            reduce = lookup(h, "bnorm_bn_backward_reduce");
        if (!fn[l] || !fwd[l] || !desc_init || !reduce) {
            const char *why = dlerror();
            fprintf(stderr, "ab_bench: %s: %s\n", argv[a + 3 + l], why ? why : "no bnorm API");
            return 1;
        }
    }
    const int64_t shape[3] = {atoll(argv[a]), atoll(argv[a + 1]), atoll(argv[a + 2])};
    bnorm_desc d;
    if (((desc_init_fn)desc_init)(&d, f64 ? BNORM_DTYPE_F64 : BNORM_DTYPE_F32,
                                  nhwc ? BNORM_LAYOUT_CHANNELS_LAST : BNORM_LAYOUT_CHANNELS_FIRST,
                                  3, shape)) {
        fprintf(stderr, "ab_bench: need N, C, SPATIAL >= 1\n");
        return 2;
    }

    /* the same values at both placements; outputs per build, to compare */
    const int64_t n = shape[0] * shape[1] * shape[2], C = d.c;
    const int shift[2] = {0, offset};
    void *x[2], *dy[2], *out[MAX_LIBS][2], *yf = after_fwd ? elements(n, offset) : NULL;
    uint64_t s = 12345;
    for (int p = 0; p < 2; p++) {
        x[p] = elements(n, shift[p]), dy[p] = elements(n, shift[p]);
        for (int l = 0; l < nlibs; l++)
            out[l][p] = elements(n, shift[p]);
    }
    for (int64_t i = 0; i < n; i++) {
        const double xv = bench_uniform(&s), g = bench_uniform(&s);
        set(x[0], i, xv), set(x[1], i, xv), set(dy[0], i, g), set(dy[1], i, g);
    }
    void *w = elements(C, 0), *b = elements(C, 0), *rm = elements(C, 0), *rv = elements(C, 0);
    void *dw = elements(C, 0), *db = elements(C, 0);
    double *mean = malloc((size_t)C * sizeof *mean), *invstd = malloc((size_t)C * sizeof *invstd);
    double *fmean = malloc((size_t)C * sizeof *fmean),
           *finvstd = malloc((size_t)C * sizeof *finvstd);
    if (!mean || !invstd || !fmean || !finvstd) {
        fprintf(stderr, "ab_bench: out of memory\n");
        return 1;
    }
    for (int64_t c = 0; c < C; c++) { /* x is uniform in [-1, 1): mean 0, variance 1/3 */
        set(w, c, 1.0 + 0.01 * (double)(c % 7)), set(b, c, 0.1), set(rm, c, 0.0);
        set(rv, c, 1.0 / 3.0), mean[c] = 0.0, invstd[c] = sqrt(3.0);
    }
    /* bwd_apply: the sums of dy, dy*xhat and dy^2 from the first library, untimed */
    double *sdy = malloc((size_t)C * sizeof *sdy), *sdyx = malloc((size_t)C * sizeof *sdyx);
    double *sdy2 = malloc((size_t)C * sizeof *sdy2);
    if (!sdy || !sdyx || !sdy2 ||
        (op == OP_BWD_APPLY &&
         ((reduce_fn)reduce)(&d, sdy, sdyx, sdy2, dy[0], x[0], mean, invstd, w, b, flags))) {
        fprintf(stderr, "ab_bench: out of memory, or backward_reduce failed\n");
        return 1;
    }

    static double t[MAX_LIBS][2][MAX_REPS];
    for (int r = -1; r < reps; r++) /* round -1 warms up */
        for (int l = 0; l < nlibs; l++)
            for (int p = 0; p < 2; p++) {
                if (!warm) cache_wash();
                if (after_fwd &&
                    ((train_fn)fwd[l])(&d, yf, fmean, finvstd, x[p], w, b, NULL, 1e-5, flags)) {
                    fprintf(stderr, "ab_bench: %s: forward failed\n", argv[a + 3 + l]);
                    return 1;
                }
                double t0 = now_ms();
                for (int k = 0; k <= warm; k++) { /* warm: call 0 untimed, then warm timed */
                    if (k == 1) t0 = now_ms();
                    bnorm_status st;
                    if (op == OP_INFER)
                        st = ((infer_fn)fn[l])(&d, out[l][p], x[p], w, b, rm, rv, 1e-5, flags);
                    else if (op == OP_TRAIN)
                        st = ((train_fn)fn[l])(&d, out[l][p], mean, invstd, x[p], w, b, NULL, 1e-5,
                                               flags);
                    else if (op == OP_BWD)
                        st = ((bwd_fn)fn[l])(&d, out[l][p], dw, db, dy[p], x[p], mean, invstd, w, b,
                                             BNORM_BN_STATS_BATCH, flags);
                    else
                        st = ((apply_fn)fn[l])(&d, out[l][p], dy[p], x[p], mean, invstd, w, b, sdy,
                                               sdyx, sdy2, n / C, BNORM_BN_STATS_BATCH, flags);
                    if (st) {
                        fprintf(stderr, "ab_bench: %s returned %d\n", argv[a + 3 + l], (int)st);
                        return 1;
                    }
                }
                if (r >= 0) t[l][p][r] = (now_ms() - t0) / (warm ? warm : 1);
            }

    int bad = 0;
    double big = 0.0;
    for (int64_t i = 0; i < n; i++)
        big = fmax(big, fabs(get(out[0][0], i)));
    printf("%s%s %s %s (%lld,%lld,%lld), %d rounds, medians in ms", sym,
           flags ? " (fused ReLU)" : "", f64 ? "f64" : "f32", nhwc ? "nhwc" : "nchw",
           (long long)shape[0], (long long)shape[1], (long long)shape[2], reps);
    if (warm) printf(" per call, %d calls in a row (warm)", warm);
    if (after_fwd) printf(", each after its build's forward training");
    printf("\n");
    printf("%-40s %10s %10s %10s\n", "build", "aligned", "+offset", "max diff");
    for (int l = 0; l < nlibs; l++) {
        double diff = 0.0;
        for (int p = 0; p < 2; p++)
            for (int64_t i = 0; i < n; i++)
                diff = fmax(diff, fabs(get(out[l][p], i) - get(out[0][0], i)));
        bad |= !(diff <= 1e-5 * big);
        printf("%-40s %10.4f %10.4f %10.2g\n", argv[a + 3 + l], median(t[l][0], reps),
               median(t[l][1], reps), diff / big);
    }
    if (bad) fprintf(stderr, "ab_bench: the builds' outputs differ\n");
    return bad;
}
