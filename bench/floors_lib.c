/* bench/floors_lib.c - the memory floors (bench/floors.h) as a shared library, for
 * pytorch_compare.py: there the floor of each case is called through ctypes after the same cache
 * wash as PyTorch and libbnorm, so that it pays the same fixed costs of a call (Python, the cold
 * code, the threads' wake-up) and bounds what any kernel called that way can do. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

volatile float bench_sink; /* floors.h's sink, which bench_common.h defines for the programs */
#include "floors.h"

/* Floor f (0: 1 pass x -> y; 1: 2 passes, x then x -> y; 2: 1 pass x, dy -> dx; 3: 2 passes,
 * x and dy then x, dy -> dx) over n values, output streamed when nt, on `threads` threads (0:
 * OpenMP's default). Returns 0, or -1 for an unknown floor, a negative n or a missing tensor. */
__attribute__((visibility("default"))) int bnorm_bench_floor(int f, float *out, const float *x,
                                                             const float *dy, int64_t n, int nt,
                                                             int threads) {
    if (f < 0 || f >= FLOORS || n < 0 || !out || !x || ((f == F_BWD1 || f == F_BWD2) && !dy))
        return -1;
#ifdef _OPENMP
    const int saved = omp_get_max_threads();
    if (threads > 0) omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    floor_run(f, out, x, dy, n, nt);
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(saved);
#endif
    return 0;
}

/* bench/floors.h's floor_of: the floor (as bnorm_bench_floor numbers them) of an op in a layout
 * that keeps a channel's values apart (channels_last: channels-last, or any (N,C) input) */
__attribute__((visibility("default"))) int bnorm_bench_floor_of(int bwd, int training,
                                                                int channels_last) {
    return floor_of(bwd, training, channels_last);
}
