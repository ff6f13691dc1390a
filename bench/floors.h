/* bench/floors.h - the memory floors: plain loops that move the bytes a batch-norm op must move,
 * in as many passes over memory as its layout forces, so that a kernel can be judged by how close
 * it comes to them (bnorm_bench's "floor" column, memory_floor's tables).
 *
 * - inference: one pass (read x, write y), in any layout;
 * - forward training: channels-first sums a channel and normalizes it from cache, so one pass from
 *   memory at best; channels-last needs every row summed before any row can be normalized, so x
 *   is read twice (the sums, then y);
 * - backward: one pass (read x and dy, write dx) where a channel fits in cache between its two
 *   steps, two where it cannot (channels-last: x and dy for the sums, then again for dx).
 * (N,C) input lies in memory as channels-last does, so it takes channels-last's floors.
 *
 * The loops split the elements evenly between the OpenMP threads, run AVX-512 where the CPU has it
 * (as libbnorm's kernels do; SSE otherwise), and store their output either streamed past the
 * caches or with ordinary stores: which is faster depends on whether the output stays in cache.
 * They are a floor only where the data comes from memory: in cache, arithmetic and the calls'
 * fixed costs decide, and a kernel may beat them. Include once per program, after
 * bench_common.h. */
#ifndef BNORM_BENCH_FLOORS_H
#define BNORM_BENCH_FLOORS_H

#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FLOOR_X86 1
#endif

#define FLOOR_BLK 16 /* floats per 64-byte line: the loops' unit, so streamed lines are whole */

enum { F_INFER, F_TRAIN2, F_BWD1, F_BWD2, FLOORS };

static inline const char *floor_name(int f) {
    static const char *names[FLOORS] = {
        "1 pass: read x, write y",
        "2 passes: read x; read x, write y",
        "1 pass: read x and dy, write dx",
        "2 passes: read x and dy; read them, write dx",
    };
    return names[f];
}

/* the floor of an op (backward or forward, training or inference) in a layout that keeps a
 * channel's values apart (channels_last: channels-last, or any (N,C) input) */
static inline int floor_of(int bwd, int training, int channels_last) {
    if (bwd) return channels_last ? F_BWD2 : F_BWD1;
    return training && channels_last ? F_TRAIN2 : F_INFER;
}

/* Lines [b0, b1): sum of x (dy NULL) or of dy and dy*x, as a statistics pass reads them */
static float floor_sum_lines(const float *x, const float *dy, int64_t b0, int64_t b1) {
    float acc[FLOOR_BLK] = {0.0f}, acc2[FLOOR_BLK] = {0.0f}, total = 0.0f;
    for (int64_t b = b0; b < b1; b++) {
        const float *p = x + b * FLOOR_BLK, *g = dy ? dy + b * FLOOR_BLK : NULL;
        for (int k = 0; k < FLOOR_BLK; k++) {
            if (g)
                acc[k] += g[k], acc2[k] += g[k] * p[k];
            else
                acc[k] += p[k];
        }
    }
    for (int k = 0; k < FLOOR_BLK; k++)
        total += acc[k] + acc2[k];
    return total;
}

/* Lines [b0, b1) of y = x * 0.5 + dy (dy may be NULL); y's lines are 64-byte aligned */
static void floor_write_lines(float *y, const float *x, const float *dy, int64_t b0, int64_t b1,
                              int nt) {
    for (int64_t b = b0; b < b1; b++) {
        const int64_t o = b * FLOOR_BLK;
#ifdef FLOOR_X86
        for (int k = 0; k < FLOOR_BLK; k += 4) {
            __m128 v = _mm_mul_ps(_mm_loadu_ps(x + o + k), _mm_set1_ps(0.5f));
            if (dy) v = _mm_add_ps(v, _mm_loadu_ps(dy + o + k));
            if (nt)
                _mm_stream_ps(y + o + k, v);
            else
                _mm_store_ps(y + o + k, v);
        }
#else
        (void)nt;
        for (int k = 0; k < FLOOR_BLK; k++)
            y[o + k] = x[o + k] * 0.5f + (dy ? dy[o + k] : 0.0f);
#endif
    }
}

#ifdef FLOOR_X86
__attribute__((target("avx512f"))) static float
floor_sum_lines_avx512(const float *x, const float *dy, int64_t b0, int64_t b1) {
    __m512 a = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
    for (int64_t b = b0; b < b1; b++) {
        const __m512 p = _mm512_loadu_ps(x + b * FLOOR_BLK);
        if (dy) {
            const __m512 g = _mm512_loadu_ps(dy + b * FLOOR_BLK);
            a = _mm512_add_ps(a, g), a2 = _mm512_fmadd_ps(g, p, a2);
        } else {
            a = _mm512_add_ps(a, p);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a, a2));
}

__attribute__((target("avx512f"))) static void floor_write_lines_avx512(float *y, const float *x,
                                                                        const float *dy, int64_t b0,
                                                                        int64_t b1, int nt) {
    const __m512 half = _mm512_set1_ps(0.5f);
    for (int64_t b = b0; b < b1; b++) {
        const int64_t o = b * FLOOR_BLK;
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + o), half);
        if (dy) v = _mm512_add_ps(v, _mm512_loadu_ps(dy + o));
        if (nt)
            _mm512_stream_ps(y + o, v);
        else
            _mm512_store_ps(y + o, v);
    }
}

static int floor_avx512(void) {
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return have;
}
#endif

/* this thread's share [*b0, *b1) of `lines` (in an OpenMP parallel region, or all of them) */
static void floor_share(int64_t lines, int64_t *b0, int64_t *b1) {
    int t = 0, nt = 1;
#ifdef _OPENMP
    t = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
    *b0 = lines * t / nt, *b1 = lines * (t + 1) / nt;
}

/* A pass that reads x (and dy when not NULL) and sums them, as a statistics pass does. */
static void floor_read(const float *x, const float *dy, int64_t n) {
    const int64_t lines = n / FLOOR_BLK;
    float total = 0.0f;
#pragma omp parallel reduction(+ : total)
    {
        int64_t b0, b1;
        floor_share(lines, &b0, &b1);
#ifdef FLOOR_X86
        if (floor_avx512())
            total += floor_sum_lines_avx512(x, dy, b0, b1);
        else
#endif
            total += floor_sum_lines(x, dy, b0, b1);
    }
    for (int64_t i = lines * FLOOR_BLK; i < n; i++)
        total += x[i] + (dy ? dy[i] : 0.0f);
    bench_sink = total;
}

/* A pass that reads x (and dy when not NULL) and writes y, streamed when nt. The values before
 * y's first 64-byte boundary and after its last go one at a time. */
static void floor_write(float *y, const float *x, const float *dy, int64_t n, int nt) {
    int64_t head = (int64_t)((64 - (uintptr_t)y % 64) % 64 / sizeof(float));
    if (head > n) head = n;
    const int64_t lines = (n - head) / FLOOR_BLK, tail = head + lines * FLOOR_BLK;
    for (int64_t i = 0; i < head; i++)
        y[i] = x[i] * 0.5f + (dy ? dy[i] : 0.0f);
    float *yl = y + head;
    const float *xl = x + head, *gl = dy ? dy + head : NULL;
#pragma omp parallel
    {
        int64_t b0, b1;
        floor_share(lines, &b0, &b1);
#ifdef FLOOR_X86
        if (floor_avx512())
            floor_write_lines_avx512(yl, xl, gl, b0, b1, nt);
        else
#endif
            floor_write_lines(yl, xl, gl, b0, b1, nt);
#ifdef FLOOR_X86
        if (nt) _mm_sfence(); /* the streamed lines reach memory before the call returns */
#endif
    }
    for (int64_t i = tail; i < n; i++)
        y[i] = x[i] * 0.5f + (dy ? dy[i] : 0.0f);
}

/* floor f over n values: x (and dy for backward's) in, out written (streamed when nt) */
static void floor_run(int f, float *out, const float *x, const float *dy, int64_t n, int nt) {
    if (f == F_TRAIN2) floor_read(x, NULL, n);
    if (f == F_BWD2) floor_read(x, dy, n);
    floor_write(out, x, f == F_BWD1 || f == F_BWD2 ? dy : NULL, n, nt);
}

#endif
