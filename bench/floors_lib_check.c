/* bench/floors_lib_check.c - checks libbnorm_floors.so (bench/floors_lib.c), which
 * pytorch_compare.py calls through ctypes: which floor each op takes, its errors for bad
 * arguments, and that every floor writes out = x/2 (+ dy) for every value, on one thread and on
 * all, stored and streamed, with the output starting off a 64-byte boundary (the loops' head and
 * tail). Exits 1 on a failure.
 *
 * Usage: floors_lib_check LIBBNORM_FLOORS.so */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*floor_fn)(int, float *, const float *, const float *, int64_t, int, int);
typedef int (*floor_of_fn)(int, int, int);

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s LIBBNORM_FLOORS.so\n", argv[0]);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW);
    void *sym = lib ? dlsym(lib, "bnorm_bench_floor") : NULL;
    if (!sym) {
        fprintf(stderr, "floors_lib_check: %s\n", dlerror());
        return 1;
    }
    floor_fn run;
    memcpy(&run, &sym, sizeof run);
    void *sym_of = dlsym(lib, "bnorm_bench_floor_of");
    if (!sym_of) {
        fprintf(stderr, "floors_lib_check: %s\n", dlerror());
        return 1;
    }
    floor_of_fn floor_of;
    memcpy(&floor_of, &sym_of, sizeof floor_of);
    enum { N = 1000, OFF = 3 }; /* OFF floats past the buffers' start: a head and a tail */
    static float x[N + OFF], dy[N + OFF], out[N + OFF + 16];
    for (int i = 0; i < N + OFF; i++)
        x[i] = (float)(i % 17) - 8.0f, dy[i] = (float)(i % 5) * 0.25f;
    int failures = 0;
    const struct {
        int f;
        float *out;
        const float *x, *dy;
        int64_t n;
    } bad[] = {{-1, out, x, dy, N},     {4, out, x, dy, N},    {0, out, x, NULL, -1},
               {0, out, NULL, NULL, N}, {0, NULL, x, NULL, N}, {2, out, x, NULL, N},
               {3, out, x, NULL, N}};
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++)
        if (run(bad[b].f, bad[b].out, bad[b].x, bad[b].dy, bad[b].n, 0, 0) != -1) {
            fprintf(stderr, "bad call %zu: not refused\n", b);
            failures++;
        }
    /* the floor of each op: (backward, training, channels-last) -> floor */
    const int of[][4] = {{0, 0, 0, 0}, {0, 0, 1, 0}, {0, 1, 0, 0}, {0, 1, 1, 1},
                         {1, 1, 0, 2}, {1, 1, 1, 3}, {1, 0, 0, 2}, {1, 0, 1, 3}};
    for (size_t i = 0; i < sizeof of / sizeof of[0]; i++)
        if (floor_of(of[i][0], of[i][1], of[i][2]) != of[i][3]) {
            fprintf(stderr, "floor_of(%d, %d, %d) != %d\n", of[i][0], of[i][1], of[i][2], of[i][3]);
            failures++;
        }
    for (int f = 0; f < 4; f++)
        for (int threads = 0; threads <= 1; threads++)
            for (int nt = 0; nt <= 1; nt++) {
                float *o = out + OFF;
                const float *g = f >= 2 ? dy + OFF : NULL;
                memset(out, 0, sizeof out);
                if (run(f, o, x + OFF, g, N, nt, threads) != 0) {
                    fprintf(stderr, "floor %d: failed\n", f);
                    failures++;
                    continue;
                }
                for (int i = 0; i < N; i++)
                    if (o[i] != x[OFF + i] * 0.5f + (g ? g[i] : 0.0f)) {
                        fprintf(stderr, "floor %d threads %d nt %d: out[%d] = %g\n", f, threads, nt,
                                i, (double)o[i]);
                        failures++;
                        break;
                    }
                if (out[0] != 0.0f || o[N] != 0.0f) {
                    fprintf(stderr, "floor %d: wrote outside out[0, n)\n", f);
                    failures++;
                }
            }
    /* no dlclose: it would unload the OpenMP runtime under its idle worker threads */
    if (failures) return 1;
    printf("floors_lib_check: ok\n");
    return 0;
}
