/* tests/nn_testutil.h - synthetic image datasets for the training-stack tests: `classes` classes
 * of size x size images, each class a bright square at its own place plus noise. */
#ifndef BNORM_TESTS_NN_TESTUTIL_H
#define BNORM_TESTS_NN_TESTUTIL_H

#include <stdlib.h>

#include "bnorm/nn.h"

typedef struct {
    bnorm_dataset ds;
    uint8_t *pixels, *labels;
} synth_data;

static inline void synth_make(synth_data *s, int64_t count, int64_t size, int classes,
                              uint64_t seed) {
    bnorm_rng r = bnorm_rng_seed(seed, 7);
    s->pixels = malloc((size_t)(count * size * size));
    s->labels = malloc((size_t)count);
    for (int64_t i = 0; i < count; i++) {
        const int cl = (int)(i % classes);
        s->labels[i] = (uint8_t)cl;
        const int64_t cy = (cl * 3) % (size - 2), cx = (cl * 5 + 1) % (size - 2);
        for (int64_t y = 0; y < size; y++)
            for (int64_t x = 0; x < size; x++) {
                double v = 40.0 * bnorm_rng_uniform(&r);
                if (y >= cy && y < cy + 3 && x >= cx && x < cx + 3) v += 180.0;
                s->pixels[(i * size + y) * size + x] = (uint8_t)v;
            }
    }
    bnorm_dataset d = {count, size, size, s->pixels, s->labels, classes, NULL};
    s->ds = d;
}

static inline void synth_free(synth_data *s) {
    free(s->pixels);
    free(s->labels);
}

#endif /* BNORM_TESTS_NN_TESTUTIL_H */
