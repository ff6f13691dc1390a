/* bench/bnorm_bench.c - libbnorm's batch-norm kernels against the machine's copy bandwidth and
 * oneDNN, side by side in one run.
 *
 * For each shape and op, every contender runs once per round, in turn, for --reps rounds (after
 * two warm-up rounds), so drift in the machine's bandwidth hits all of them alike; the table shows
 * medians. Contenders: a copy loop of the tensor's size (normal stores, OpenMP), libbnorm in
 * channels-first (NCHW) and channels-last (NHWC), and, when built with oneDNN, its batch
 * normalization primitive in nchw, nhwc and blocked nChw16c layouts ((N,C) as (N,C,1,1));
 * --block 8 makes the blocked layout nChw8c, oneDNN's own for AVX2 (run with
 * ONEDNN_MAX_CPU_ISA=AVX2 and BNORM_ISA=avx2 to compare the AVX2 kernels).
 * Before timing, libbnorm's output is checked against its reference kernels and oneDNN's against
 * libbnorm's.
 *
 * Compulsory traffic: forward reads x and writes y (2 tensor passes), backward reads x and dy and
 * writes dx (3 passes); GB/s = passes * bytes / time, and copy_fraction compares it with the copy
 * loop's GB/s (2 passes) measured in the same rounds.
 *
 * The floors (bench/floors.h) run in the rounds too: plain loops that move the op's bytes in as
 * many passes over memory as each layout forces (one, or two for channels-last training and
 * backward), each with stored and with streamed output. "floor ms" is the faster of the two for
 * the row's layout, "floor" floor ms / ms: 1.00 moves the bytes as fast as the plain loops. On a
 * call from memory (one call per measurement) a oneDNN time below the floor is one that no
 * kernel making this layout's passes can match; repeated calls find their data in cache, where
 * the floors bound nothing.
 *
 * Usage: bnorm_bench [--reps R] [--shapes all|source|N,C[,H,W];...] [--ops LIST] [--json FILE]
 *                    [--no-onednn] [--block 16|8] */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <cjson/cJSON.h>

#include "bench_common.h"
#include "bnorm.h"
#include "floors.h"

#ifdef BNORM_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

/* ---- shapes, ops, layouts ------------------------------------------------------------------ */

typedef struct {
    int ndim;
    int64_t dims[4]; /* N, C[, H, W] */
} shape_t;

static int64_t numel_of(const shape_t *s) {
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= s->dims[i];
    return n;
}

static int64_t spatial_of(const shape_t *s) {
    return s->ndim == 4 ? s->dims[2] * s->dims[3] : 1;
}

static void shape_str(const shape_t *s, char *buf, size_t n) {
    if (s->ndim == 2)
        snprintf(buf, n, "(%lld,%lld)", (long long)s->dims[0], (long long)s->dims[1]);
    else
        snprintf(buf, n, "(%lld,%lld,%lld,%lld)", (long long)s->dims[0], (long long)s->dims[1],
                 (long long)s->dims[2], (long long)s->dims[3]);
}

enum { OP_FWD_TRAIN, OP_FWD_TRAIN_RELU, OP_FWD_INFER, OP_BWD, OP_BWD_RELU, OP_COUNT };
static const char *op_names[OP_COUNT] = {"fwd_train", "fwd_train_relu", "fwd_infer", "bwd",
                                         "bwd_relu"};
static int op_relu(int op) {
    return op == OP_FWD_TRAIN_RELU || op == OP_BWD_RELU;
}
static int op_bwd(int op) {
    return op == OP_BWD || op == OP_BWD_RELU;
}

enum { L_NCHW, L_NHWC, L_BLOCKED, L_COUNT };
static const char *layout_names[L_COUNT] = {"nchw", "nhwc", "blocked"};

/* channels innermost in the blocked layout: 16 (nChw16c) or 8 (nChw8c) */
static int64_t block = 16;

/* logical (n, c, s) -> memory offset in each layout */
static int64_t offset(int layout, const shape_t *sh, int64_t n, int64_t c, int64_t s) {
    const int64_t C = sh->dims[1], S = spatial_of(sh);
    switch (layout) {
    case L_NCHW:
        return (n * C + c) * S + s;
    case L_NHWC:
        return (n * S + s) * C + c;
    default:
        return ((n * (C / block) + c / block) * S + s) * block + c % block;
    }
}

/* ---- the data of one shape ---------------------------------------------------------------- */

typedef struct {
    shape_t sh;
    int64_t numel, C;
    float *x[L_COUNT], *dy[L_COUNT]; /* the same logical tensors in each layout */
    float *y, *dx, *scratch;         /* outputs, shared by the contenders */
    float *w, *b, *rm, *rv, *dw, *db;
    double *mean, *invstd;
    float *dnnl_mean, *dnnl_var, *dnnl_dw, *dnnl_db;
    int64_t nbt;
} data_t;

/* Floats past a 64-byte boundary at which the tensors (x, dy, y, dx, the copy loop's) start:
 * --offset 16 places them as glibc's malloc does, 16-byte aligned. */
static int64_t tensor_offset;

static float *tensor_alloc(int64_t n) {
    return bench_floats(n + tensor_offset) + tensor_offset;
}

static void tensor_free(float *p) {
    if (p) free(p - tensor_offset);
}

static void data_init(data_t *d, const shape_t *sh) {
    memset(d, 0, sizeof *d);
    d->sh = *sh;
    d->numel = numel_of(sh);
    d->C = sh->dims[1];
    const int64_t N = sh->dims[0], C = d->C, S = spatial_of(sh);
    const int blocked = C % block == 0;
    for (int l = 0; l < L_COUNT; l++) {
        if (l == L_BLOCKED && !blocked) continue;
        d->x[l] = tensor_alloc(d->numel);
        d->dy[l] = tensor_alloc(d->numel);
    }
    d->y = tensor_alloc(d->numel), d->dx = tensor_alloc(d->numel),
    d->scratch = tensor_alloc(d->numel);
    d->w = bench_floats(C), d->b = bench_floats(C), d->rm = bench_floats(C),
    d->rv = bench_floats(C);
    d->dw = bench_floats(C), d->db = bench_floats(C);
    d->dnnl_mean = bench_floats(C), d->dnnl_var = bench_floats(C), d->dnnl_dw = bench_floats(C),
    d->dnnl_db = bench_floats(C);
    d->mean = malloc((size_t)C * sizeof(double));
    d->invstd = malloc((size_t)C * sizeof(double));
    uint64_t st = 12345;
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) {
                /* cheap hash noise: per-channel offset and scale, different dy */
                uint64_t h = (uint64_t)((n * C + c) * S + s) * 0x9E3779B97F4A7C15ull + st;
                h ^= h >> 29, h *= 0xBF58476D1CE4E5B9ull, h ^= h >> 32;
                const float u = (float)((h & 0xFFFFFF) / 16777216.0) - 0.5f;
                const float v = (float)(((h >> 24) & 0xFFFFFF) / 16777216.0) - 0.5f;
                const float xv = 0.1f * (float)(c % 13) + (1.0f + 0.1f * (float)(c % 5)) * 3.4f * u;
                for (int l = 0; l < L_COUNT; l++) {
                    if (!d->x[l]) continue;
                    d->x[l][offset(l, sh, n, c, s)] = xv;
                    d->dy[l][offset(l, sh, n, c, s)] = v;
                }
            }
    for (int64_t c = 0; c < C; c++) {
        d->w[c] = 1.0f + 0.01f * (float)(c % 7);
        d->b[c] = 0.05f * (float)(c % 3) - 0.05f;
        d->rm[c] = 0.0f, d->rv[c] = 1.0f;
    }
}

static void data_free(data_t *d) {
    for (int l = 0; l < L_COUNT; l++)
        tensor_free(d->x[l]), tensor_free(d->dy[l]);
    tensor_free(d->y), tensor_free(d->dx), tensor_free(d->scratch), free(d->w), free(d->b),
        free(d->rm), free(d->rv);
    free(d->dw), free(d->db), free(d->mean), free(d->invstd);
    free(d->dnnl_mean), free(d->dnnl_var), free(d->dnnl_dw), free(d->dnnl_db);
}

/* ---- contenders ---------------------------------------------------------------------------- */

static void copy_loop(float *dst, const float *src, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        dst[i] = src[i];
}

static bnorm_desc desc_of(const data_t *d, int layout) {
    bnorm_desc xd;
    if (bnorm_desc_init(&xd, BNORM_DTYPE_F32,
                        layout == L_NHWC ? BNORM_LAYOUT_CHANNELS_LAST : BNORM_LAYOUT_CHANNELS_FIRST,
                        d->sh.ndim, d->sh.dims) != BNORM_OK) {
        fprintf(stderr, "bnorm_bench: %s\n", bnorm_last_error());
        exit(1);
    }
    return xd;
}

/* Runs one op of libbnorm in `layout` (nchw or nhwc); output to d->y or d->dx. */
static void run_bnorm(data_t *d, int op, int layout) {
    const bnorm_desc xd = desc_of(d, layout);
    const unsigned flags = op_relu(op) ? BNORM_BN_FUSE_RELU : 0u;
    bnorm_status st;
    if (op == OP_FWD_INFER) {
        st = bnorm_bn_forward_infer(&xd, d->y, d->x[layout], d->w, d->b, d->rm, d->rv, 1e-5, flags);
    } else if (!op_bwd(op)) {
        bnorm_bn_running run = {d->rm, d->rv, &d->nbt, 0.1};
        st = bnorm_bn_forward_train(&xd, d->y, d->mean, d->invstd, d->x[layout], d->w, d->b, &run,
                                    1e-5, flags);
    } else {
        st = bnorm_bn_backward(&xd, d->dx, d->dw, d->db, d->dy[layout], d->x[layout], d->mean,
                               d->invstd, d->w, d->b, BNORM_BN_STATS_BATCH, flags);
    }
    if (st != BNORM_OK) {
        fprintf(stderr, "bnorm_bench: %s: %s\n", op_names[op], bnorm_last_error());
        exit(1);
    }
}

/* backward needs the saved statistics of a training forward in the same layout (its output goes
 * to y, which backward does not use) */
static void prepare_bwd(data_t *d, int layout, int relu) {
    const bnorm_desc xd = desc_of(d, layout);
    if (bnorm_bn_forward_train(&xd, d->y, d->mean, d->invstd, d->x[layout], d->w, d->b, NULL, 1e-5,
                               relu ? BNORM_BN_FUSE_RELU : 0u) != BNORM_OK) {
        fprintf(stderr, "bnorm_bench: %s\n", bnorm_last_error());
        exit(1);
    }
}

/* max |a - b| / max |b| over the logical tensor, a in layout la, b in lb */
static double rel_err(const data_t *d, const float *a, int la, const float *b, int lb) {
    const int64_t N = d->sh.dims[0], C = d->C, S = spatial_of(&d->sh);
    double num = 0.0, den = 0.0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) {
                const double va = a[offset(la, &d->sh, n, c, s)],
                             vb = b[offset(lb, &d->sh, n, c, s)];
                num = fmax(num, fabs(va - vb));
                den = fmax(den, fabs(vb));
            }
    return den > 0 ? num / den : num;
}

#ifdef BNORM_HAVE_DNNL
typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
} dnnl_ctx;

#define DNNL_CHECK(call)                                                                           \
    do {                                                                                           \
        dnnl_status_t s_ = (call);                                                                 \
        if (s_ != dnnl_success) {                                                                  \
            fprintf(stderr, "bnorm_bench: oneDNN %s failed (%d)\n", #call, (int)s_);               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    dnnl_primitive_t fwd, bwd;
    dnnl_primitive_desc_t fwd_pd, bwd_pd;
    dnnl_memory_t src, dst, mean, var, scale, shift, ws, diff_dst, diff_src, diff_scale, diff_shift;
    int have_ws;
} dnnl_case;

/* (N,C) input goes to oneDNN as (N,C,1,1): the same memory, and 2.6 blocks only 4-d tensors */
static dnnl_format_tag_t dnnl_tag(int layout) {
    if (layout == L_NCHW) return dnnl_nchw;
    if (layout == L_NHWC) return dnnl_nhwc;
    return block == 8 ? dnnl_nChw8c : dnnl_nChw16c;
}

static dnnl_memory_t mem(dnnl_ctx *ctx, const dnnl_memory_desc_t *md, void *ptr) {
    dnnl_memory_t m;
    DNNL_CHECK(dnnl_memory_create(&m, md, ctx->engine, ptr ? ptr : DNNL_MEMORY_ALLOCATE));
    return m;
}

/* Builds oneDNN's forward (training or inference) and, for training ops, backward primitives for
 * one op and layout over the bench's buffers. */
static void dnnl_build(dnnl_ctx *ctx, data_t *d, int op, int layout, dnnl_case *k) {
    memset(k, 0, sizeof *k);
    dnnl_dims_t dims = {d->sh.dims[0], d->sh.dims[1], 1, 1};
    if (d->sh.ndim == 4) dims[2] = d->sh.dims[2], dims[3] = d->sh.dims[3];
    dnnl_memory_desc_t data_md, c_md;
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&data_md, 4, dims, dnnl_f32, dnnl_tag(layout)));
    dnnl_dims_t cd = {d->C};
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&c_md, 1, cd, dnnl_f32, dnnl_a));
    const int relu = op_relu(op);
    unsigned flags = dnnl_use_scale | dnnl_use_shift | (relu ? dnnl_fuse_norm_relu : 0u);
    if (op == OP_FWD_INFER) flags |= dnnl_use_global_stats;
    dnnl_batch_normalization_desc_t fd;
    DNNL_CHECK(dnnl_batch_normalization_forward_desc_init(
        &fd, op == OP_FWD_INFER ? dnnl_forward_inference : dnnl_forward_training, &data_md, 1e-5f,
        flags));
    DNNL_CHECK(dnnl_primitive_desc_create(&k->fwd_pd, &fd, NULL, ctx->engine, NULL));
    DNNL_CHECK(dnnl_primitive_create(&k->fwd, k->fwd_pd));
    k->src = mem(ctx, &data_md, d->x[layout]);
    k->dst = mem(ctx, &data_md, d->y);
    k->mean = mem(ctx, &c_md, d->dnnl_mean);
    k->var = mem(ctx, &c_md, d->dnnl_var);
    k->scale = mem(ctx, &c_md, d->w);
    k->shift = mem(ctx, &c_md, d->b);
    const dnnl_memory_desc_t *ws_md =
        dnnl_primitive_desc_query_md(k->fwd_pd, dnnl_query_workspace_md, 0);
    k->have_ws = relu && op != OP_FWD_INFER && ws_md && dnnl_memory_desc_get_size(ws_md) > 0;
    if (k->have_ws) k->ws = mem(ctx, ws_md, NULL);
    if (op_bwd(op)) {
        dnnl_batch_normalization_desc_t bd;
        DNNL_CHECK(dnnl_batch_normalization_backward_desc_init(
            &bd, dnnl_backward, &data_md, &data_md, 1e-5f, flags & ~dnnl_use_global_stats));
        DNNL_CHECK(dnnl_primitive_desc_create(&k->bwd_pd, &bd, NULL, ctx->engine, k->fwd_pd));
        DNNL_CHECK(dnnl_primitive_create(&k->bwd, k->bwd_pd));
        k->diff_dst = mem(ctx, &data_md, d->dy[layout]);
        k->diff_src = mem(ctx, &data_md, d->dx);
        k->diff_scale = mem(ctx, &c_md, d->dnnl_dw);
        k->diff_shift = mem(ctx, &c_md, d->dnnl_db);
    }
}

static void dnnl_run_fwd(dnnl_ctx *ctx, dnnl_case *k, int op) {
    dnnl_exec_arg_t args[8];
    int n = 0;
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, k->src};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DST, k->dst};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_MEAN, k->mean};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_VARIANCE, k->var};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCALE, k->scale};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SHIFT, k->shift};
    if (k->have_ws) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE, k->ws};
    (void)op;
    DNNL_CHECK(dnnl_primitive_execute(k->fwd, ctx->stream, n, args));
    DNNL_CHECK(dnnl_stream_wait(ctx->stream));
}

static void dnnl_run_bwd(dnnl_ctx *ctx, dnnl_case *k) {
    dnnl_exec_arg_t args[11];
    int n = 0;
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, k->src};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_MEAN, k->mean};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_VARIANCE, k->var};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, k->diff_dst};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCALE, k->scale};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SHIFT, k->shift};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SRC, k->diff_src};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SCALE, k->diff_scale};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SHIFT, k->diff_shift};
    if (k->have_ws) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE, k->ws};
    DNNL_CHECK(dnnl_primitive_execute(k->bwd, ctx->stream, n, args));
    DNNL_CHECK(dnnl_stream_wait(ctx->stream));
}

static void dnnl_case_free(dnnl_case *k) {
    dnnl_memory_t *ms[] = {&k->src,      &k->dst,        &k->mean,      &k->var,
                           &k->scale,    &k->shift,      &k->ws,        &k->diff_dst,
                           &k->diff_src, &k->diff_scale, &k->diff_shift};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        if (*ms[i]) dnnl_memory_destroy(*ms[i]);
    if (k->fwd) dnnl_primitive_destroy(k->fwd);
    if (k->bwd) dnnl_primitive_destroy(k->bwd);
    if (k->fwd_pd) dnnl_primitive_desc_destroy(k->fwd_pd);
    if (k->bwd_pd) dnnl_primitive_desc_destroy(k->bwd_pd);
}
#endif

/* ---- one (shape, op): validate, then time every contender in rounds -------------------------- */

/* floor_ms[l][nt]: the floor of layout l's passes (bench/floors.h; l 0: channels-first, 1:
 * channels-last or (N,C)), output stored (nt 0) or streamed (nt 1); floor_passes[l]: how many
 * (inference takes one in both) */
typedef struct {
    double copy_ms, ms[2], dnnl_ms[L_COUNT], floor_ms[2][2];
    double ref_err[2], dnnl_err[L_COUNT];
    int have_dnnl[L_COUNT], floor_passes[2];
    int calls; /* per measurement (more than one for short calls) */
} result_t;

static void bench_op(data_t *d, int op, int reps, int use_dnnl, result_t *r) {
    memset(r, 0, sizeof *r);
    const int relu = op_relu(op), bwd = op_bwd(op);
    float *out = bwd ? d->dx : d->y;

    /* libbnorm against its reference kernels, in both layouts */
    for (int l = 0; l < 2; l++) {
        if (bwd) prepare_bwd(d, l, relu);
        bnorm_set_kernels("reference");
        run_bnorm(d, op, l);
        memcpy(d->scratch, out, (size_t)d->numel * sizeof(float));
        bnorm_set_kernels("auto");
        if (bwd) prepare_bwd(d, l, relu);
        run_bnorm(d, op, l);
        r->ref_err[l] = rel_err(d, out, l, d->scratch, l);
    }
    (void)use_dnnl;
#ifdef BNORM_HAVE_DNNL
    dnnl_ctx ctx;
    dnnl_case kc[L_COUNT];
    if (use_dnnl) {
        DNNL_CHECK(dnnl_engine_create(&ctx.engine, dnnl_cpu, 0));
        DNNL_CHECK(dnnl_stream_create(&ctx.stream, ctx.engine, dnnl_stream_default_flags));
        /* libbnorm's NCHW result is the yardstick for oneDNN's */
        if (bwd) prepare_bwd(d, L_NCHW, relu);
        run_bnorm(d, op, L_NCHW);
        memcpy(d->scratch, out, (size_t)d->numel * sizeof(float));
        for (int l = 0; l < L_COUNT; l++) {
            if (!d->x[l]) continue;
            r->have_dnnl[l] = 1;
            dnnl_build(&ctx, d, op, l, &kc[l]);
            if (op == OP_FWD_INFER) { /* the same running statistics as libbnorm */
                memcpy(d->dnnl_mean, d->rm, (size_t)d->C * sizeof(float));
                memcpy(d->dnnl_var, d->rv, (size_t)d->C * sizeof(float));
            }
            dnnl_run_fwd(&ctx, &kc[l], op);
            if (bwd) dnnl_run_bwd(&ctx, &kc[l]);
            r->dnnl_err[l] = rel_err(d, out, l, d->scratch, L_NCHW);
        }
    }
#endif

    /* Timing rounds: every contender once per round, in an order shuffled from round to round,
     * each measurement after a cache wash (the same starting state for all). Each measurement
     * repeats its call `iters` times (the same for all contenders) so that it lasts about a
     * millisecond even for tiny tensors; times are per call. */
    double t_copy[MAX_REPS], t[2][MAX_REPS], td[L_COUNT][MAX_REPS], tf[4][MAX_REPS];
    double t0 = now_ms();
    copy_loop(d->scratch, d->x[L_NCHW], d->numel);
    const double est = now_ms() - t0;
    const int iters = est >= 1.0 ? 1 : est * 1000.0 < 1.0 ? 1000 : (int)(1.0 / est) + 1;
    r->calls = iters;
    enum { C_COPY = 0, C_BNORM = 1, C_FLOOR = 3, C_DNNL = 7, C_COUNT = 7 + L_COUNT };
    const int floors[2] = {floor_of(bwd, 1, 0), floor_of(bwd, op != OP_FWD_INFER, 1)};
    r->floor_passes[0] = 1, r->floor_passes[1] = floors[1] == floors[0] ? 1 : 2;
    int order[C_COUNT];
    for (int rep = -2; rep < reps; rep++) {
        bench_round_order(order, C_COUNT, rep + 2);
        for (int slot = 0; slot < C_COUNT; slot++) {
            const int who = order[slot];
            double ms = 0.0;
            cache_wash();
            if (who == C_COPY) {
                t0 = now_ms();
                for (int it = 0; it < iters; it++)
                    copy_loop(d->scratch, d->x[L_NCHW], d->numel);
                ms = (now_ms() - t0) / iters;
                if (rep >= 0) t_copy[rep] = ms;
            } else if (who < C_FLOOR) {
                const int l = who - C_BNORM;
                for (int it = 0; it < iters; it++) {
                    if (bwd) prepare_bwd(d, l, relu); /* untimed */
                    t0 = now_ms();
                    run_bnorm(d, op, l);
                    ms += now_ms() - t0;
                }
                if (rep >= 0) t[l][rep] = ms / iters;
            } else if (who < C_DNNL) { /* the floors: 1 pass, then 2; stored, then streamed */
                const int f = (who - C_FLOOR) / 2, nt = (who - C_FLOOR) % 2;
                if (f == 1 && floors[1] == floors[0]) continue;
                t0 = now_ms();
                for (int it = 0; it < iters; it++)
                    floor_run(floors[f], d->scratch, d->x[L_NCHW], d->dy[L_NCHW], d->numel, nt);
                if (rep >= 0) tf[who - C_FLOOR][rep] = (now_ms() - t0) / iters;
            } else {
#ifdef BNORM_HAVE_DNNL
                const int l = who - C_DNNL;
                if (!use_dnnl || !r->have_dnnl[l]) continue;
                for (int it = 0; it < iters; it++) {
                    if (bwd) dnnl_run_fwd(&ctx, &kc[l], op); /* untimed */
                    if (op == OP_FWD_INFER) {
                        memcpy(d->dnnl_mean, d->rm, (size_t)d->C * sizeof(float));
                        memcpy(d->dnnl_var, d->rv, (size_t)d->C * sizeof(float));
                    }
                    t0 = now_ms();
                    if (bwd)
                        dnnl_run_bwd(&ctx, &kc[l]);
                    else
                        dnnl_run_fwd(&ctx, &kc[l], op);
                    ms += now_ms() - t0;
                }
                if (rep >= 0) td[l][rep] = ms / iters;
#endif
            }
        }
    }
    r->copy_ms = median(t_copy, reps);
    for (int l = 0; l < 2; l++)
        r->ms[l] = median(t[l], reps);
    for (int f = 0; f < 2; f++)
        for (int nt = 0; nt < 2; nt++)
            r->floor_ms[f][nt] = f == 1 && floors[1] == floors[0] ? r->floor_ms[0][nt]
                                                                  : median(tf[f * 2 + nt], reps);
    for (int l = 0; l < L_COUNT; l++)
        if (r->have_dnnl[l]) r->dnnl_ms[l] = median(td[l], reps);
#ifdef BNORM_HAVE_DNNL
    if (use_dnnl) {
        for (int l = 0; l < L_COUNT; l++)
            if (r->have_dnnl[l]) dnnl_case_free(&kc[l]);
        dnnl_stream_destroy(ctx.stream);
        dnnl_engine_destroy(ctx.engine);
    }
#endif
}

/* ---- output ---------------------------------------------------------------------------------- */

static int write_file_atomic(const char *path, const char *text) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return 0;
    const int ok = fputs(text, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
        remove(tmp);
        return 0;
    }
    return 1;
}

static int parse_shapes(const char *spec, shape_t *out, int max) {
    static const shape_t all[] = {
        {4, {32, 64, 56, 56}},
        {4, {32, 256, 14, 14}},
        {4, {128, 32, 28, 28}},
        {2, {256, 1024}},
        {4, {64, 64, 112, 112}},
        /* the source network on Fashion-MNIST at batch 128: its three batch norms */
        {4, {128, 64, 14, 14}},
        {2, {128, 128}}};
    int n = 0;
    if (strcmp(spec, "all") == 0 || strcmp(spec, "source") == 0) {
        const int first = strcmp(spec, "source") == 0 ? 2 : 0;
        for (int i = 0; i < (int)(sizeof all / sizeof all[0]); i++) {
            if (first && i != 2 && i < 5) continue;
            out[n++] = all[i];
        }
        return n;
    }
    char *copy = strdup(spec), *save = NULL;
    for (char *tok = strtok_r(copy, ";", &save); tok && n < max; tok = strtok_r(NULL, ";", &save)) {
        shape_t s = {0, {0}};
        for (char *p = tok; *p && s.ndim < 4;) {
            s.dims[s.ndim++] = strtoll(p, &p, 10);
            if (*p == ',')
                p++;
            else
                break;
        }
        if (s.ndim != 2 && s.ndim != 4) {
            free(copy);
            return -1;
        }
        out[n++] = s;
    }
    free(copy);
    return n;
}

int main(int argc, char **argv) {
    int reps = 11, use_dnnl = 1, ops_on[OP_COUNT] = {1, 1, 1, 1, 1};
    const char *shapes_spec = "all", *json_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--shapes") == 0 && i + 1 < argc)
            shapes_spec = argv[++i];
        else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
            json_path = argv[++i];
        else if (strcmp(argv[i], "--offset") == 0 && i + 1 < argc) {
            const int bytes = atoi(argv[++i]);
            if (bytes < 0 || bytes >= 64 || bytes % 4) {
                fprintf(stderr, "bnorm_bench: --offset must be 0, 4, ..., 60 bytes\n");
                return 2;
            }
            tensor_offset = bytes / 4;
        } else if (strcmp(argv[i], "--no-onednn") == 0)
            use_dnnl = 0;
        else if (strcmp(argv[i], "--block") == 0 && i + 1 < argc &&
                 (strcmp(argv[i + 1], "16") == 0 || strcmp(argv[i + 1], "8") == 0))
            block = atoi(argv[++i]);
        else if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc) {
            const char *list = argv[++i];
            for (int o = 0; o < OP_COUNT; o++) {
                const char *p = strstr(list, op_names[o]);
                const size_t len = strlen(op_names[o]);
                /* a whole entry of the comma list, not a prefix of a longer name */
                ops_on[o] = p && (p == list || p[-1] == ',') && (p[len] == 0 || p[len] == ',');
            }
        } else {
            fprintf(stderr,
                    "usage: %s [--reps R] [--shapes all|source|N,C[,H,W];...] "
                    "[--ops fwd_train,fwd_train_relu,fwd_infer,bwd,bwd_relu] [--json FILE] "
                    "[--no-onednn] [--block 16|8] [--offset BYTES]\n",
                    argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "bnorm_bench: --reps must be 1..%d\n", MAX_REPS);
        return 2;
    }
#ifndef BNORM_HAVE_DNNL
    use_dnnl = 0;
#endif
    shape_t shapes[16];
    const int nshapes = parse_shapes(shapes_spec, shapes, 16);
    if (nshapes <= 0) {
        fprintf(stderr, "bnorm_bench: bad --shapes '%s'\n", shapes_spec);
        return 2;
    }
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("bnorm %d.%d.%d, kernels %s, %d threads, %d rounds (medians), oneDNN %s "
           "(blocked = nChw%dc), tensors %d bytes past 64-byte alignment\n",
           BNORM_VERSION_MAJOR, BNORM_VERSION_MINOR, BNORM_VERSION_PATCH, bnorm_kernels(), threads,
           reps, use_dnnl ? "on" : "off", (int)block, (int)(tensor_offset * 4));
    printf("%-19s %-15s %-5s %8s %7s %6s %9s %6s %9s %13s %7s %7s %8s %8s\n", "shape", "op", "ours",
           "ms", "GB/s", "copy", "floor ms", "floor", "dnnl ms", "dnnl best", "x same", "x best",
           "ref err", "dnnl err");
    cJSON *records = cJSON_CreateArray();
    double log_speedup = 0.0;
    int n_speedup = 0, bad = 0;
    for (int si = 0; si < nshapes; si++) {
        data_t d;
        data_init(&d, &shapes[si]);
        char sname[64];
        shape_str(&shapes[si], sname, sizeof sname);
        const double bytes = (double)d.numel * sizeof(float);
        for (int op = 0; op < OP_COUNT; op++) {
            if (!ops_on[op]) continue;
            result_t r;
            bench_op(&d, op, reps, use_dnnl, &r);
            const double passes = op_bwd(op) ? 3.0 : 2.0;
            const double copy_gbps = 2.0 * bytes / (r.copy_ms * 1e6);
            int best_l = -1;
            for (int l = 0; l < L_COUNT; l++)
                if (r.have_dnnl[l] && (best_l < 0 || r.dnnl_ms[l] < r.dnnl_ms[best_l])) best_l = l;
            for (int l = 0; l < 2; l++) {
                const double gbps = passes * bytes / (r.ms[l] * 1e6);
                /* the floor of the passes this layout forces, with the faster kind of store */
                const int fp = l == 1 || spatial_of(&shapes[si]) == 1;
                const int fnt = r.floor_ms[fp][1] < r.floor_ms[fp][0];
                const double floor_ms = r.floor_ms[fp][fnt];
                const int same = r.have_dnnl[l];
                char best_s[32] = "-";
                if (best_l >= 0)
                    snprintf(best_s, sizeof best_s, "%.4f %s", r.dnnl_ms[best_l],
                             layout_names[best_l]);
                printf(
                    "%-19s %-15s %-5s %8.4f %7.1f %6.2f %9.4f %6.2f %9.4f %13s %7.2f %7.2f %8.1e "
                    "%8.1e\n",
                    sname, op_names[op], l == 0 ? "nchw" : "nhwc", r.ms[l], gbps, gbps / copy_gbps,
                    floor_ms, floor_ms / r.ms[l], same ? r.dnnl_ms[l] : NAN, best_s,
                    same ? r.dnnl_ms[l] / r.ms[l] : NAN,
                    best_l >= 0 ? r.dnnl_ms[best_l] / r.ms[l] : NAN, r.ref_err[l],
                    same ? r.dnnl_err[l] : NAN);
                if (r.ref_err[l] > 1e-4) bad = 1;
                if (best_l >= 0) {
                    log_speedup += log(r.dnnl_ms[best_l] / r.ms[l]);
                    n_speedup++;
                }
                cJSON *rec = cJSON_CreateObject();
                cJSON_AddStringToObject(rec, "op", op_names[op]);
                cJSON *sh = cJSON_AddArrayToObject(rec, "shape");
                for (int k = 0; k < shapes[si].ndim; k++)
                    cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)shapes[si].dims[k]));
                cJSON_AddStringToObject(rec, "layout", l == 0 ? "nchw" : "nhwc");
                cJSON_AddNumberToObject(rec, "ms", r.ms[l]);
                cJSON_AddNumberToObject(rec, "gbps", gbps);
                cJSON_AddNumberToObject(rec, "copy_fraction", gbps / copy_gbps);
                cJSON_AddNumberToObject(rec, "copy_gbps", copy_gbps);
                cJSON_AddNumberToObject(rec, "reference_error", r.ref_err[l]);
                cJSON_AddNumberToObject(rec, "floor_ms", floor_ms);
                cJSON_AddNumberToObject(rec, "floor_passes", r.floor_passes[fp]);
                cJSON_AddBoolToObject(rec, "floor_streamed", fnt);
                cJSON_AddNumberToObject(rec, "calls", r.calls); /* > 1: later calls find cache */
                if (same) {
                    cJSON_AddNumberToObject(rec, "onednn_ms", r.dnnl_ms[l]);
                    cJSON_AddNumberToObject(rec, "onednn_error", r.dnnl_err[l]);
                } else {
                    cJSON_AddNullToObject(rec, "onednn_ms");
                }
                if (best_l >= 0) {
                    cJSON_AddNumberToObject(rec, "onednn_best_ms", r.dnnl_ms[best_l]);
                    cJSON_AddStringToObject(rec, "onednn_best_layout", layout_names[best_l]);
                    cJSON_AddNumberToObject(rec, "onednn_block", (double)block); /* nChw<b>c */
                } else {
                    cJSON_AddNullToObject(rec, "onednn_best_ms");
                }
                cJSON_AddItemToArray(records, rec);
            }
            fflush(stdout);
        }
        data_free(&d);
    }
    if (n_speedup)
        printf("geometric-mean speed-up over oneDNN's best layout: %.2fx (%d cases)\n",
               exp(log_speedup / n_speedup), n_speedup);
    if (json_path) {
        char *text = cJSON_Print(records);
        if (!text || !write_file_atomic(json_path, text)) {
            fprintf(stderr, "bnorm_bench: cannot write %s\n", json_path);
            bad = 1;
        }
        free(text);
    }
    cJSON_Delete(records);
    if (bad) fprintf(stderr, "bnorm_bench: libbnorm disagreed with its reference kernels\n");
    return bad;
}
