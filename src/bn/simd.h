/* src/bn/simd.h - the thin float32 vector layer the fast kernels are written in.
 *
 * The including file defines exactly one of BNORM_SIMD_AVX512, BNORM_SIMD_AVX2 or
 * BNORM_SIMD_SCALAR (and is compiled with the matching -m flags). Each provides:
 *   V, VL          vector type and its number of float lanes
 *   vzero, vset1, vloadu, vstoreu, vstream (aligned, non-temporal), vadd, vsub, vmul,
 *   vfmadd(a,b,c) = a*b+c (accumulations only), vrelu(v) = max(0, v) keeping NaN,
 *   vmask_pos(y, g) = y > 0 ? g : 0, vmask_ge(x, t, g) = x >= t ? g : 0 (vmask_le: <=; NaN
 *   compares false), vsum_d(v) = lane sum in double (fixed order),
 *   vloadu_n/vstoreu_n(p, n): the first n < VL lanes only (the rest load as 0; memory past
 *   them is not touched), vloadu_n_or(p, n, fill) the same with `fill` in the other lanes,
 *   vblend_n(a, b, n): lanes < n from a, the rest from b (0 <= n <= VL);
 *   vfence() after streaming stores;
 *   VD2: the VL lanes of a V as doubles (two vectors, or one double for the scalar build), with
 *   vd2_zero, vd2_set1, vd2_of (widen), vd2_load/vd2_store (VL doubles), vd2_add/sub/mul, vd2_to_v
 *   (round to float), vd2_sum (lane sum, a fixed tree): backward computes in these, because
 *   its result can be a tiny difference of large terms.
 * Elementwise outputs use only add/sub/mul, never fused multiply-add, so a vector lane and a
 * scalar computation give bit-identical values. */
#ifndef BNORM_BN_SIMD_H
#define BNORM_BN_SIMD_H

#include <stdint.h>

#if defined(BNORM_SIMD_AVX512)
#include <immintrin.h>
typedef __m512 V;
#define VL 16
static inline V vzero(void) {
    return _mm512_setzero_ps();
}
static inline V vset1(float a) {
    return _mm512_set1_ps(a);
}
static inline V vloadu(const float *p) {
    return _mm512_loadu_ps(p);
}
static inline void vstoreu(float *p, V v) {
    _mm512_storeu_ps(p, v);
}
static inline void vstream(float *p, V v) {
    _mm512_stream_ps(p, v);
}
static inline V vloadu_n(const float *p, int64_t n) {
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
}
static inline V vloadu_n_or(const float *p, int64_t n, V fill) {
    return _mm512_mask_loadu_ps(fill, (__mmask16)((1u << n) - 1u), p);
}
static inline void vstoreu_n(float *p, V v, int64_t n) {
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), v);
}
static inline V vblend_n(V a, V b, int64_t n) {
    return _mm512_mask_blend_ps((__mmask16)((1u << n) - 1u), b, a);
}
static inline V vadd(V a, V b) {
    return _mm512_add_ps(a, b);
}
static inline V vsub(V a, V b) {
    return _mm512_sub_ps(a, b);
}
static inline V vmul(V a, V b) {
    return _mm512_mul_ps(a, b);
}
static inline V vfmadd(V a, V b, V c) {
    return _mm512_fmadd_ps(a, b, c);
}
/* max_ps returns its second operand when either is NaN: NaN passes through, like torch.relu */
static inline V vrelu(V v) {
    return _mm512_max_ps(_mm512_setzero_ps(), v);
}
/* g in a register first: GCC would otherwise fold g's load into a masked load, which cannot
 * start before the compare is done, so that a fused-ReLU pass reading dy that way overlaps fewer
 * of its loads. Channels-last backward with ReLU, each call after its forward: (128,32,28,28)
 * took 0.94 ms, 0.86 with g loaded first; (32,64,56,56) 2.32 and 2.15 (docs/performance-history.md,
 * nineteenth session). */
static inline __attribute__((always_inline)) V vin_register(V g) {
    __asm__("" : "+v"(g));
    return g;
}
static inline V vmask_pos(V y, V g) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ),
                               vin_register(g));
}
static inline V vmask_ge(V x, V t, V g) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, t, _CMP_GE_OQ), vin_register(g));
}
static inline V vmask_le(V x, V t, V g) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, t, _CMP_LE_OQ), vin_register(g));
}
static inline void vfence(void) {
    _mm_sfence();
}
typedef struct {
    __m512d lo, hi;
} VD2;
static inline VD2 vd2_zero(void) {
    return (VD2){_mm512_setzero_pd(), _mm512_setzero_pd()};
}
static inline VD2 vd2_set1(double a) {
    return (VD2){_mm512_set1_pd(a), _mm512_set1_pd(a)};
}
static inline VD2 vd2_of(V v) {
    return (VD2){_mm512_cvtps_pd(_mm512_castps512_ps256(v)),
                 _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1))};
}
static inline VD2 vd2_load(const double *p) {
    return (VD2){_mm512_loadu_pd(p), _mm512_loadu_pd(p + 8)};
}
static inline VD2 vd2_add(VD2 a, VD2 b) {
    return (VD2){_mm512_add_pd(a.lo, b.lo), _mm512_add_pd(a.hi, b.hi)};
}
static inline VD2 vd2_sub(VD2 a, VD2 b) {
    return (VD2){_mm512_sub_pd(a.lo, b.lo), _mm512_sub_pd(a.hi, b.hi)};
}
static inline VD2 vd2_mul(VD2 a, VD2 b) {
    return (VD2){_mm512_mul_pd(a.lo, b.lo), _mm512_mul_pd(a.hi, b.hi)};
}
static inline void vd2_store(double *p, VD2 v) {
    _mm512_storeu_pd(p, v.lo);
    _mm512_storeu_pd(p + 8, v.hi);
}
static inline V vd2_to_v(VD2 v) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(v.lo)), _mm512_cvtpd_ps(v.hi),
                              1);
}
/* lanes i and i+8 first, then halves of what is left: a fixed tree */
static inline double vd2_sum(VD2 v) {
    const __m512d a = _mm512_add_pd(v.lo, v.hi);
    const __m256d b = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
    const __m128d c = _mm_add_pd(_mm256_castpd256_pd128(b), _mm256_extractf128_pd(b, 1));
    return _mm_cvtsd_f64(_mm_add_sd(c, _mm_unpackhi_pd(c, c)));
}

#elif defined(BNORM_SIMD_AVX2)
#include <immintrin.h>
typedef __m256 V;
#define VL 8
static inline V vzero(void) {
    return _mm256_setzero_ps();
}
static inline V vset1(float a) {
    return _mm256_set1_ps(a);
}
static inline V vloadu(const float *p) {
    return _mm256_loadu_ps(p);
}
static inline void vstoreu(float *p, V v) {
    _mm256_storeu_ps(p, v);
}
static inline void vstream(float *p, V v) {
    _mm256_stream_ps(p, v);
}
static inline __m256i vmask_n(int64_t n) { /* lanes < n all ones */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline V vloadu_n(const float *p, int64_t n) {
    return _mm256_maskload_ps(p, vmask_n(n));
}
static inline V vloadu_n_or(const float *p, int64_t n, V fill) {
    const __m256i m = vmask_n(n);
    return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
static inline void vstoreu_n(float *p, V v, int64_t n) {
    _mm256_maskstore_ps(p, vmask_n(n), v);
}
static inline V vblend_n(V a, V b, int64_t n) {
    return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(vmask_n(n)));
}
static inline V vadd(V a, V b) {
    return _mm256_add_ps(a, b);
}
static inline V vsub(V a, V b) {
    return _mm256_sub_ps(a, b);
}
static inline V vmul(V a, V b) {
    return _mm256_mul_ps(a, b);
}
static inline V vfmadd(V a, V b, V c) {
    return _mm256_fmadd_ps(a, b, c);
}
static inline V vrelu(V v) {
    return _mm256_max_ps(_mm256_setzero_ps(), v);
}
static inline V vmask_pos(V y, V g) {
    return _mm256_and_ps(_mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ), g);
}
static inline V vmask_ge(V x, V t, V g) {
    return _mm256_and_ps(_mm256_cmp_ps(x, t, _CMP_GE_OQ), g);
}
static inline V vmask_le(V x, V t, V g) {
    return _mm256_and_ps(_mm256_cmp_ps(x, t, _CMP_LE_OQ), g);
}
static inline void vfence(void) {
    _mm_sfence();
}
typedef struct {
    __m256d lo, hi;
} VD2;
static inline VD2 vd2_zero(void) {
    return (VD2){_mm256_setzero_pd(), _mm256_setzero_pd()};
}
static inline VD2 vd2_set1(double a) {
    return (VD2){_mm256_set1_pd(a), _mm256_set1_pd(a)};
}
static inline VD2 vd2_of(V v) {
    return (VD2){_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                 _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))};
}
static inline VD2 vd2_load(const double *p) {
    return (VD2){_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4)};
}
static inline VD2 vd2_add(VD2 a, VD2 b) {
    return (VD2){_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)};
}
static inline VD2 vd2_sub(VD2 a, VD2 b) {
    return (VD2){_mm256_sub_pd(a.lo, b.lo), _mm256_sub_pd(a.hi, b.hi)};
}
static inline VD2 vd2_mul(VD2 a, VD2 b) {
    return (VD2){_mm256_mul_pd(a.lo, b.lo), _mm256_mul_pd(a.hi, b.hi)};
}
static inline void vd2_store(double *p, VD2 v) {
    _mm256_storeu_pd(p, v.lo);
    _mm256_storeu_pd(p + 4, v.hi);
}
static inline V vd2_to_v(VD2 v) {
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(v.lo)),
                                _mm256_cvtpd_ps(v.hi), 1);
}
/* lanes i and i+4 first, then halves of what is left: a fixed tree */
static inline double vd2_sum(VD2 v) {
    const __m256d a = _mm256_add_pd(v.lo, v.hi);
    const __m128d c = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(c, _mm_unpackhi_pd(c, c)));
}

#elif defined(BNORM_SIMD_SCALAR)
typedef float V;
#define VL 1
static inline V vzero(void) {
    return 0.0f;
}
static inline V vset1(float a) {
    return a;
}
static inline V vloadu(const float *p) {
    return *p;
}
static inline void vstoreu(float *p, V v) {
    *p = v;
}
static inline void vstream(float *p, V v) {
    *p = v;
}
static inline V vloadu_n(const float *p, int64_t n) { /* n < VL = 1: nothing */
    (void)p, (void)n;
    return 0.0f;
}
static inline V vloadu_n_or(const float *p, int64_t n, V fill) {
    (void)p, (void)n;
    return fill;
}
static inline void vstoreu_n(float *p, V v, int64_t n) {
    (void)p, (void)v, (void)n;
}
static inline V vblend_n(V a, V b, int64_t n) {
    return n > 0 ? a : b;
}
static inline V vadd(V a, V b) {
    return a + b;
}
static inline V vsub(V a, V b) {
    return a - b;
}
static inline V vmul(V a, V b) {
    return a * b;
}
static inline V vfmadd(V a, V b, V c) {
    return a * b + c;
}
static inline V vrelu(V v) {
    return v < 0.0f ? 0.0f : v;
} /* as max(0, v): -0 and NaN pass */
static inline V vmask_pos(V y, V g) {
    return y > 0.0f ? g : 0.0f;
}
static inline V vmask_ge(V x, V t, V g) {
    return x >= t ? g : 0.0f;
}
static inline V vmask_le(V x, V t, V g) {
    return x <= t ? g : 0.0f;
}
static inline void vfence(void) {}
typedef double VD2;
static inline VD2 vd2_zero(void) {
    return 0.0;
}
static inline VD2 vd2_set1(double a) {
    return a;
}
static inline VD2 vd2_of(V v) {
    return (double)v;
}
static inline VD2 vd2_load(const double *p) {
    return *p;
}
static inline VD2 vd2_add(VD2 a, VD2 b) {
    return a + b;
}
static inline VD2 vd2_sub(VD2 a, VD2 b) {
    return a - b;
}
static inline VD2 vd2_mul(VD2 a, VD2 b) {
    return a * b;
}
static inline void vd2_store(double *p, VD2 v) {
    *p = v;
}
static inline V vd2_to_v(VD2 v) {
    return (float)v;
}
static inline double vd2_sum(VD2 v) {
    return v;
}

#else
#error "define BNORM_SIMD_AVX512, BNORM_SIMD_AVX2 or BNORM_SIMD_SCALAR before including simd.h"
#endif

/* Brings the line holding p towards L2 (the next channel's data, while this one is worked on);
 * vprefetch_l1 into L1 as well. Always inlined, as every helper that only prefetches must be:
 * GCC takes such a function for one without effects and drops the calls it has not inlined by
 * then (the channels-last dx passes had lost all their prefetches that way). */
#if defined(BNORM_SIMD_SCALAR)
static inline void vprefetch_l2(const float *p) {
    (void)p;
}
static inline void vprefetch_l1(const float *p) {
    (void)p;
}
#else
static inline __attribute__((always_inline)) void vprefetch_l2(const float *p) {
    _mm_prefetch((const char *)p, _MM_HINT_T1);
}
static inline __attribute__((always_inline)) void vprefetch_l1(const float *p) {
    _mm_prefetch((const char *)p, _MM_HINT_T0);
}
#endif

/* Lane sum in double, in vd2_sum's fixed order: the same result whatever the thread count.
 * (A loop over the lanes in order was a chain of 16 dependent adds after a store: 30-50% of the
 * time of the short-plane sums, which take one per plane per image.) */
static inline double vsum_d(V v) {
    return vd2_sum(vd2_of(v));
}

/* The scalar counterparts used for tails, matching the vector formulas bit for bit: sfmadd is a
 * single-rounding fma where the vector one is, so a channel's sums do not depend on whether it
 * sat in a vector lane or in the tail. */
#if defined(BNORM_SIMD_SCALAR)
static inline float sfmadd(float a, float b, float c) {
    return a * b + c;
}
#else
static inline float sfmadd(float a, float b, float c) {
    return __builtin_fmaf(a, b, c);
}
#endif
static inline float srelu(float v) {
    return v < 0.0f ? 0.0f : v;
}
static inline float smask_pos(float y, float g) {
    return y > 0.0f ? g : 0.0f;
}

#endif /* BNORM_BN_SIMD_H */
