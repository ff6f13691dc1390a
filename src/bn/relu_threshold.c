/* src/bn/relu_threshold.c - backward's fused-ReLU mask as one comparison of x.
 *
 * Forward with fused ReLU keeps y = ((x - mh) - ml)*scale + bias (float operations, in this
 * order) where y > 0, and backward must pass dy exactly there. Recomputing y costs backward four
 * vector operations per element in each of its two passes, and (64,64,112,112) NCHW backward
 * with ReLU ran 10% slower than without. With finite constants and scale != 0 every step is
 * monotone in x (rounding is monotone, and no step turns a non-NaN x into NaN), so the x that
 * pass form a ray, x >= t for scale > 0 and x <= t for scale < 0, and NaN never passes either
 * way. t is found by evaluating that very formula: a search over the floats in their numeric
 * order, started at the real-number threshold, so the mask is the same bit for bit. */
#include <math.h>
#include <string.h>

#include "bn/fast.h"

static float y_of(float x, float mh, float ml, float scale, float bias) {
    const float d = (x - mh) - ml;
    return d * scale + bias;
}

/* Every non-NaN float as a key in numeric order (-0 just below +0) and back */
static uint32_t key_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u >> 31 ? ~u : u | 0x80000000u;
}

static float float_of(uint32_t k) {
    const uint32_t u = k >> 31 ? k & 0x7fffffffu : ~k;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

typedef struct {
    float mh, ml, scale, bias;
    int want; /* the key passes when (y > 0) == want: false below the answer, true from it on */
} search;

static int holds(const search *s, uint64_t k) {
    return (y_of(float_of((uint32_t)k), s->mh, s->ml, s->scale, s->bias) > 0.0f) == s->want;
}

/* The smallest key in [key(-inf), key(+inf)] where holds() is true (it is monotone), or
 * key(+inf) + 1 if none: steps of doubling length from `guess`, then bisection. */
static uint64_t first_true(const search *s, uint64_t guess) {
    const uint64_t kmin = key_of(-INFINITY), kmax = key_of(INFINITY);
    uint64_t lo, hi, step = 1;
    if (holds(s, guess)) { /* the answer is at or below guess */
        hi = guess;
        for (;;) {
            lo = hi - kmin > step ? hi - step : kmin;
            if (!holds(s, lo)) break;
            if (lo == kmin) return kmin;
            hi = lo, step *= 2;
        }
    } else {
        lo = guess;
        for (;;) {
            hi = kmax - lo > step ? lo + step : kmax;
            if (holds(s, hi)) break;
            if (hi == kmax) return kmax + 1;
            lo = hi, step *= 2;
        }
    }
    while (hi - lo > 1) { /* holds(lo) is false, holds(hi) true */
        const uint64_t mid = lo + (hi - lo) / 2;
        if (holds(s, mid))
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

int bnorm__relu_threshold(float mh, float ml, float scale, float bias, float *t) {
    if (!isfinite(mh) || !isfinite(ml) || !isfinite(scale) || !isfinite(bias) || scale == 0.0f)
        return BNORM__RELU_FORMULA;
    const search s = {mh, ml, scale, bias, scale > 0.0f};
    /* where d*scale + bias = 0 in real numbers: the float answer is within a few steps */
    const double real = (double)mh + (double)ml - (double)bias / (double)scale;
    const uint64_t k = first_true(&s, key_of((float)real));
    const uint64_t kmin = key_of(-INFINITY), kmax = key_of(INFINITY);
    if (scale > 0.0f) { /* x passes from key k on */
        *t = k > kmax ? NAN : float_of((uint32_t)k);
        return BNORM__RELU_ABOVE;
    }
    *t = k == kmin ? NAN : float_of((uint32_t)(k - 1)); /* x passes up to the key before k */
    return BNORM__RELU_BELOW;
}
