/* tests/test_nn_gradcheck.c - conv and linear forward against direct loops, then
 * finite-difference gradient checks of every layer kind, through
 * small models: L = sum(r * logits) with a fixed random r, so dL/dlogits = r; every parameter
 * and input element is perturbed by +-h (2e-3; 1e-3 for residual blocks) and the central
 * difference compared with
 * backward's gradient: |a - n| <= 2e-3 + 2e-2 * max(|a|, |n|) (float32 layers, loss summed in
 * double). Training mode, so bn differentiates through batch statistics; dropout replays the
 * same mask (the same rng seed each forward). An element whose forward and backward one-sided
 * slopes disagree sits on a ReLU or max-pool kink and is skipped; at most 5% may be. */
#include <string.h>

#include "check.h"
#include "nn_testutil.h"

#define N 4

typedef struct {
    bnorm_model *m;
    float *x;
    const float *r;
    int64_t classes;
    const int32_t *labels; /* when set, L is the smoothed softmax cross-entropy instead */
    double smoothing;
} ctx;

static double loss_of(ctx *c) {
    bnorm_rng rng = bnorm_rng_seed(5, 5);
    const float *z;
    if (bnorm_model_forward(c->m, c->x, N, 1, &rng, &z) != BNORM_OK) return NAN;
    double l = 0.0;
    if (c->labels)
        return bnorm_model_loss_smoothed(c->m, c->labels, N, c->smoothing, 0, &l, NULL) ? NAN : l;
    for (int64_t i = 0; i < N * c->classes; i++)
        l += (double)c->r[i] * z[i];
    return l;
}

/* central difference; *kink set when the one-sided slopes disagree */
static double numeric(ctx *c, float *p, double h, int *kink) {
    const float keep = *p;
    const double l0 = loss_of(c);
    *p = keep + (float)h;
    const double lp = loss_of(c);
    *p = keep - (float)h;
    const double lm = loss_of(c);
    *p = keep;
    const double fwd = (lp - l0) / h, bwd = (l0 - lm) / h, n = (lp - lm) / (2 * h);
    *kink = fabs(fwd - bwd) > 4e-3 + 2e-2 * fabs(n); /* float noise is ~5e-4 */
    return n;
}

/* checks n values at p against analytic gradient g; returns mismatches, counts skips */
static int check_values(ctx *c, float *p, const float *g, int64_t n, const char *what, double h,
                        int *skipped, int *checked) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int kink;
        const double a = g[i], n1 = numeric(c, p + i, h, &kink);
        (*checked)++;
        if (kink) {
            (*skipped)++;
            continue;
        }
        if (!(fabs(a - n1) <= 2e-3 + 2e-2 * fmax(fabs(a), fabs(n1)))) {
            if (bad++ < 3)
                fprintf(stderr, "  %s[%lld]: analytic %.6g, numeric %.6g\n", what, (long long)i, a,
                        n1);
        }
    }
    return bad;
}

/* step: 2e-3, or 1e-3 for deep stacks of relus where more inputs sit near a kink */
static void gradcheck_h(const char *spec, int64_t c, int64_t h, int64_t w, double step) {
    bnorm_model_options mo = bnorm_model_options_default();
    mo.in_c = c, mo.in_h = h, mo.in_w = w, mo.max_batch = N, mo.seed = 3;
    bnorm_model *m = NULL;
    CHECK_OK(bnorm_model_create(&m, spec, &mo));
    if (!m) return;
    const int64_t in = c * h * w, K = bnorm_model_classes(m);
    float *x = malloc(sizeof(float) * (size_t)(N * in)),
          *dx = malloc(sizeof(float) * (size_t)(N * in));
    float *r = malloc(sizeof(float) * (size_t)(N * K));
    bnorm_rng rng = bnorm_rng_seed(11, 1);
    for (int64_t i = 0; i < N * in; i++)
        x[i] = (float)bnorm_rng_normal(&rng);
    for (int64_t i = 0; i < N * K; i++)
        r[i] = (float)bnorm_rng_normal(&rng);
    ctx cx = {m, x, r, K, NULL, 0.0};
    loss_of(&cx);
    bnorm_model_zero_grad(m);
    CHECK_OK(bnorm_model_backward(m, r, dx));
    int bad = 0, skipped = 0, checked = 0;
    bad += check_values(&cx, x, dx, N * in, "dx", step, &skipped, &checked);
    for (int t = 0; t < bnorm_model_tensor_count(m); t++) {
        bnorm_named_tensor nt;
        CHECK_OK(bnorm_model_tensor(m, t, &nt));
        if (!nt.grad) continue;
        /* the analytic gradient must be read before perturbing forwards run again */
        float *g = malloc(sizeof(float) * (size_t)nt.numel);
        memcpy(g, nt.grad, sizeof(float) * (size_t)nt.numel);
        bad += check_values(&cx, nt.data, g, nt.numel, nt.name, step, &skipped, &checked);
        free(g);
    }
    if (!CHECK(bad == 0 && skipped * 20 <= checked))
        fprintf(stderr, "  gradcheck '%s': %d bad, %d of %d skipped\n", spec, bad, skipped,
                checked);
    free(x), free(dx), free(r);
    bnorm_model_free(m);
}

/* A lone conv (k x k, stride s, padding pad, with a bias) against plain direct loops in double:
 * forward y, and backward dx, dW, db for a fixed output gradient g. Run for a full batch and for
 * one image, each twice with different inputs: a "same" conv's patch matrices keep zeros from one
 * call to the next. The model is created on `create_threads` threads (which sets its number of
 * col buffers) and run on `run_threads`: with 2, the batch's images go on threads and the one
 * image on OpenBLAS's threads. */
static void conv_reference(int64_t H, int64_t W, int64_t K, int64_t S, int64_t P,
                           int create_threads, int run_threads) {
    enum { C = 2, OC = 3, MAXE = N * C * 7 * 7 };
    const int64_t OH = (H + 2 * P - K) / S + 1, OW = (W + 2 * P - K) / S + 1;
    bnorm_model_options mo = bnorm_model_options_default();
    mo.in_c = C, mo.in_h = H, mo.in_w = W, mo.max_batch = N;
    bnorm_model *m;
    char spec[64];
    snprintf(spec, sizeof spec, "conv(3,%lld,stride=%lld,pad=%lld,bias=1)", (long long)K,
             (long long)S, (long long)P);
    bnorm_set_threads(create_threads);
    CHECK_OK(bnorm_model_create(&m, spec, &mo));
    bnorm_set_threads(run_threads);
    bnorm_named_tensor wt, bt;
    CHECK_OK(bnorm_model_tensor(m, 0, &wt));
    CHECK_OK(bnorm_model_tensor(m, 1, &bt));
    const float *w = wt.data, *b = bt.data, *y;
    float x[MAXE], dx[MAXE], g[N * OC * 7 * 7];
    double want_dx[MAXE], want_dw[OC * C * 5 * 5], want_db[OC];
    bnorm_rng rng = bnorm_rng_seed(2, 2);
    double err = 0.0;
    for (int run = 0; run < 4; run++) {
        const int64_t n = run < 2 ? N : 1;
        for (int64_t i = 0; i < n * C * H * W; i++)
            x[i] = (float)bnorm_rng_normal(&rng);
        for (int64_t i = 0; i < n * OC * OH * OW; i++)
            g[i] = (float)bnorm_rng_normal(&rng);
        CHECK_OK(bnorm_model_forward(m, x, n, 1, NULL, &y));
        bnorm_model_zero_grad(m);
        CHECK_OK(bnorm_model_backward(m, g, dx));
        memset(want_dx, 0, sizeof want_dx), memset(want_dw, 0, sizeof want_dw);
        memset(want_db, 0, sizeof want_db);
        for (int64_t i = 0; i < n; i++)
            for (int64_t o = 0; o < OC; o++)
                for (int64_t oy = 0; oy < OH; oy++)
                    for (int64_t ox = 0; ox < OW; ox++) {
                        const int64_t at = ((i * OC + o) * OH + oy) * OW + ox;
                        double acc = b[o];
                        want_db[o] += g[at];
                        for (int64_t c = 0; c < C; c++)
                            for (int64_t ky = 0; ky < K; ky++)
                                for (int64_t kx = 0; kx < K; kx++) {
                                    const int64_t iy = oy * S - P + ky, ix = ox * S - P + kx;
                                    if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                    const int64_t wi = ((o * C + c) * K + ky) * K + kx;
                                    const int64_t xi = ((i * C + c) * H + iy) * W + ix;
                                    acc += (double)w[wi] * x[xi];
                                    want_dw[wi] += (double)g[at] * x[xi];
                                    want_dx[xi] += (double)g[at] * w[wi];
                                }
                        err = fmax(err, fabs(acc - y[at]));
                    }
        for (int64_t i = 0; i < n * C * H * W; i++)
            err = fmax(err, fabs(want_dx[i] - dx[i]));
        for (int64_t i = 0; i < OC * C * K * K; i++)
            err = fmax(err, fabs(want_dw[i] - wt.grad[i]));
        for (int64_t o = 0; o < OC; o++)
            err = fmax(err, fabs(want_db[o] - bt.grad[o]));
    }
    if (!CHECK(err <= 1e-4))
        fprintf(stderr, "  conv_reference %s on %lldx%lld, threads %d/%d: max error %g\n", spec,
                (long long)H, (long long)W, create_threads, run_threads, err);
    bnorm_model_free(m);
}

/* A lone linear (GEMM) against plain direct loops in double. */
static void linear_reference(void) {
    const int64_t C = 2, H = 5, W = 6;
    bnorm_model_options mo = bnorm_model_options_default();
    mo.in_c = C, mo.in_h = H, mo.in_w = W, mo.max_batch = N;
    bnorm_model *m;
    bnorm_named_tensor wt, bt;
    const float *y;
    float x[N * 2 * 5 * 6];
    bnorm_rng rng = bnorm_rng_seed(2, 2);
    for (int i = 0; i < N * C * H * W; i++)
        x[i] = (float)bnorm_rng_normal(&rng);
    CHECK_OK(bnorm_model_create(&m, "flatten linear(4)", &mo));
    CHECK_OK(bnorm_model_tensor(m, 0, &wt));
    CHECK_OK(bnorm_model_tensor(m, 1, &bt));
    const float *w = wt.data, *b = bt.data;
    CHECK_OK(bnorm_model_forward(m, x, N, 1, NULL, &y));
    double err = 0.0;
    const int64_t F = C * H * W;
    for (int64_t i = 0; i < N; i++)
        for (int64_t o = 0; o < 4; o++) {
            double acc = b[o];
            for (int64_t f = 0; f < F; f++)
                acc += (double)w[o * F + f] * x[i * F + f];
            err = fmax(err, fabs(acc - y[i * 4 + o]));
        }
    CHECK_NEAR(err, 0.0, 1e-5);
    bnorm_model_free(m);
}

/* Max pooling (the 2x2/stride-2 loops and the general one, odd sizes) against a plain scan: the
 * first maximum of each window gets the gradient; ties, -0 vs +0 and NaN included. */
static void maxpool_reference(const char *spec, int64_t k, int64_t s) {
    const int64_t C = 2, H = 5, W = 7, OH = (H - k) / s + 1, OW = (W - k) / s + 1;
    bnorm_model_options mo = bnorm_model_options_default();
    mo.in_c = C, mo.in_h = H, mo.in_w = W, mo.max_batch = N;
    bnorm_model *m;
    CHECK_OK(bnorm_model_create(&m, spec, &mo));
    float x[N * 2 * 5 * 7], dx[N * 2 * 5 * 7], g[N * 2 * 4 * 6];
    bnorm_rng rng = bnorm_rng_seed(3, 3);
    for (int i = 0; i < N * C * H * W; i++) /* few distinct values: many ties */
        x[i] = (float)(int)(4.0 * bnorm_rng_uniform(&rng)) - 3.0f;
    x[0] = -0.0f, x[1] = 0.0f, x[W] = 0.0f, x[W + 1] = -0.0f; /* a window of zeros */
    x[2 * H * W + 3] = NAN, x[3 * H * W + W + 4] = NAN;
    for (int i = 0; i < N * C * OH * OW; i++)
        g[i] = (float)(i + 1);
    const float *y;
    CHECK_OK(bnorm_model_forward(m, x, N, 1, NULL, &y));
    CHECK_OK(bnorm_model_backward(m, g, dx));
    int bad = 0;
    float want_dx[N * 2 * 5 * 7] = {0};
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t oy = 0; oy < OH; oy++)
            for (int64_t ox = 0; ox < OW; ox++) {
                int64_t at = -1;
                for (int64_t ky = 0; ky < k && at < 0; ky++) /* NaN first, else the max */
                    for (int64_t kx = 0; kx < k && at < 0; kx++) {
                        const int64_t q = p * H * W + (oy * s + ky) * W + ox * s + kx;
                        if (x[q] != x[q]) at = q;
                    }
                for (int64_t ky = 0; ky < k; ky++)
                    for (int64_t kx = 0; kx < k; kx++) {
                        const int64_t q = p * H * W + (oy * s + ky) * W + ox * s + kx;
                        if (at < 0 || (x[at] == x[at] && x[q] > x[at])) at = q;
                    }
                const int64_t o = (p * OH + oy) * OW + ox;
                const float got = y[o];
                /* same value, same sign of zero, NaN for NaN */
                if (!(memcmp(&got, &x[at], sizeof got) == 0 || (got != got && x[at] != x[at])))
                    bad++;
                want_dx[at] += g[o];
            }
    CHECK(bad == 0);
    CHECK(memcmp(dx, want_dx, sizeof(float) * (size_t)(N * C * H * W)) == 0);
    bnorm_model_free(m);
}

static void gradcheck(const char *spec, int64_t c, int64_t h, int64_t w) {
    gradcheck_h(spec, c, h, w, 2e-3);
}

/* Softmax cross-entropy with label smoothing s: its value against the definition written out
 * (target q = (1-s) one-hot + s/K, loss = mean over images of -sum_k q_k log softmax_k), and
 * its gradient (bnorm_model_backward from the loss's dLoss/dlogits) against finite differences
 * of the loss through a linear layer. */
static void cross_entropy_check(double s) {
    enum { C = 5, K = 4 };
    bnorm_model_options mo = bnorm_model_options_default();
    mo.in_c = C, mo.in_h = 1, mo.in_w = 1, mo.max_batch = N, mo.seed = 9;
    bnorm_model *m;
    CHECK_OK(bnorm_model_create(&m, "flatten linear(4)", &mo));
    float x[N * C], dx[N * C];
    const int32_t labels[N] = {2, 0, 3, 2};
    bnorm_rng rng = bnorm_rng_seed(17, 2);
    for (int i = 0; i < N * C; i++)
        x[i] = (float)(3.0 * bnorm_rng_normal(&rng)); /* confident and wrong predictions too */
    const float *z;
    CHECK_OK(bnorm_model_forward(m, x, N, 1, NULL, &z));
    double want = 0.0;
    int64_t want_right = 0;
    for (int i = 0; i < N; i++) {
        double se = 0.0;
        int best = 0;
        for (int k = 0; k < K; k++) {
            se += exp((double)z[i * K + k]);
            if (z[i * K + k] > z[i * K + best]) best = k;
        }
        for (int k = 0; k < K; k++) {
            const double q = (k == labels[i] ? 1.0 - s : 0.0) + s / K;
            want -= q * log(exp((double)z[i * K + k]) / se) / N;
        }
        want_right += best == labels[i];
    }
    double got;
    int64_t right;
    CHECK_OK(bnorm_model_loss_smoothed(m, labels, N, s, 1, &got, &right));
    if (!CHECK(fabs(got - want) <= 1e-12 * fabs(want) + 1e-12 && right == want_right))
        fprintf(stderr, "  smoothing %g: loss %.17g, by the definition %.17g; %lld right of %lld\n",
                s, got, want, (long long)right, (long long)want_right);
    bnorm_model_zero_grad(m);
    CHECK_OK(bnorm_model_backward(m, NULL, dx));
    ctx cx = {m, x, NULL, K, labels, s};
    int skipped = 0, checked = 0;
    CHECK(check_values(&cx, x, dx, N * C, "dx", 2e-3, &skipped, &checked) == 0 && skipped == 0);
    CHECK_STATUS(bnorm_model_loss_smoothed(m, labels, N, 1.5, 1, &got, NULL),
                 BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_model_loss_smoothed(m, labels, N, NAN, 1, &got, NULL),
                 BNORM_ERR_INVALID_ARGUMENT);
    bnorm_model_free(m);
}

int main(void) {
    /* threads at creation / when run: one; two; more col buffers than backward's groups */
    static const int threads[3][2] = {{1, 1}, {2, 2}, {12, 2}};
    for (int t = 0; t < 3; t++) {
        const int ct = threads[t][0], rt = threads[t][1];
        conv_reference(5, 6, 3, 2, 1, ct, rt); /* general im2col */
        conv_reference(5, 6, 3, 1, 0, ct, rt);
        conv_reference(5, 6, 3, 1, 1, ct, rt); /* "same" convs: shifted copies */
        conv_reference(5, 6, 5, 1, 2, ct, rt);
        conv_reference(7, 7, 1, 1, 0, ct, rt);
        conv_reference(3, 1, 3, 1, 1, ct, rt); /* every column an edge */
        conv_reference(1, 4, 3, 1, 1, ct, rt);
        conv_reference(1, 2, 5, 1, 2, ct, rt); /* taps that never land inside */
    }
    bnorm_set_threads(2);
    linear_reference();
    maxpool_reference("maxpool(2)", 2, 2);
    maxpool_reference("maxpool(3,stride=2)", 3, 2);
    maxpool_reference("maxpool(2,stride=1)", 2, 1);
    cross_entropy_check(0.0);
    cross_entropy_check(0.1);
    cross_entropy_check(1.0);
    gradcheck("conv(3,3,pad=1) flatten linear(4)", 2, 5, 5);
    gradcheck("conv(3,3,stride=2,pad=1,bias=1) relu flatten linear(3)", 1, 6, 6);
    gradcheck("conv(2,3) bn relu maxpool(2) flatten linear(3)", 1, 6, 6);
    gradcheck("conv(2,3) bn maxpool(2) flatten linear(3)", 2, 6, 6);
    gradcheck("avgpool(2) flatten linear(3)", 2, 4, 4);
    gradcheck("conv(2,1) gap flatten linear(3)", 1, 3, 3);
    gradcheck("flatten linear(6) bn relu dropout(0.3) linear(3)", 1, 3, 4);
    gradcheck("flatten linear(5) relu linear(3)", 2, 2, 2);
    gradcheck("maxpool(2,stride=1) flatten linear(2)", 1, 3, 3);
    gradcheck("maxpool(2) flatten linear(2)", 2, 5, 5); /* odd size: last row/column unused */
    /* two convs: each backward needs its own forward's im2col */
    gradcheck("conv(2,3,pad=1) bn relu conv(3,3) flatten linear(3)", 1, 5, 5);
    /* residual blocks: identity shortcut, projection shortcut, and a block as the first layer */
    gradcheck_h("conv(2,3,pad=1) res(2) gap flatten linear(3)", 1, 4, 4, 1e-3);
    gradcheck_h("conv(2,3,pad=1) res(3,stride=2) flatten linear(3)", 1, 4, 4, 1e-3);
    gradcheck_h("res(2) flatten linear(3)", 1, 4, 4, 1e-3);
    return check_report();
}
