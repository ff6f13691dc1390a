/* bnorm/data.h - datasets for the training stack: IDX files (gzip or plain, e.g. Fashion-MNIST from
 * Debian's dataset-fashion-mnist), held-out splits, shuffling from an explicit seed, normalized
 * and optionally augmented float batches. Needs zlib.
 *
 *     bnorm_dataset all, train, val;
 *     if (bnorm_idx_load(&all, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"))
 *         fprintf(stderr, "%s\n", bnorm_last_error());   // names the file and what is wrong
 *     bnorm_dataset_split(&all, 5000, &train, &val);       // the last 5000 images validate
 */
#ifndef BNORM_DATA_H
#define BNORM_DATA_H

#include <stdint.h>

#include "bnorm/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The explicit random generator (splitmix64): a value, so a seed reproduces a run. */
typedef struct bnorm_rng {
    uint64_t state;
} bnorm_rng;

bnorm_rng bnorm_rng_seed(uint64_t seed, uint64_t stream); /* independent streams of one seed */
uint64_t bnorm_rng_next(bnorm_rng *rng);
double bnorm_rng_uniform(bnorm_rng *rng); /* [0, 1) */
double bnorm_rng_normal(bnorm_rng *rng);

/* Images (count x rows x cols, uint8, row-major) with their labels. `owner` marks the dataset
 * that owns the memory; splits are views into it. */
typedef struct bnorm_dataset {
    int64_t count, rows, cols;
    const uint8_t *images;
    const uint8_t *labels;
    int classes;  /* 1 + the largest label */
    void *owner_; /* the allocation (NULL for views) */
} bnorm_dataset;

/* Loads an IDX image file (magic 0x00000803) and label file (0x00000801), gzip or plain.
 * Errors: BNORM_ERR_NULL_POINTER, BNORM_ERR_IO (file missing or unreadable), BNORM_ERR_FORMAT
 * (wrong magic, impossible sizes, counts that differ, truncated data), BNORM_ERR_OUT_OF_MEMORY. */
bnorm_status bnorm_idx_load(bnorm_dataset *out, const char *images_path, const char *labels_path);

/* Frees what bnorm_idx_load allocated; views and zeroed datasets are a no-op. */
void bnorm_dataset_free(bnorm_dataset *ds);

/* Views: the first count-holdout items train, the last holdout validate. Errors:
 * BNORM_ERR_INVALID_ARGUMENT when holdout < 0 or leaves no training item. */
bnorm_status bnorm_dataset_split(const bnorm_dataset *all, int64_t holdout, bnorm_dataset *train,
                                 bnorm_dataset *val);

/* Mean and standard deviation of all pixels scaled to [0, 1]. */
void bnorm_dataset_pixel_stats(const bnorm_dataset *ds, double *mean, double *std);

/* Fisher-Yates shuffle of 0..n-1 into perm. */
void bnorm_permutation(int64_t *perm, int64_t n, bnorm_rng *rng);

/* Augmentation applied per image when a batch is filled. */
typedef struct bnorm_augment {
    int crop_pad; /* random crop of the original size from the image padded by this many zeros */
    int hflip;    /* flip left-right with probability 1/2 */
    int cutout;   /* side of a square set to 0 (the normalized mean) at a random centre, clipped at
                     the borders (Cutout, DeVries & Taylor 2017); 0: none */
} bnorm_augment;

/* x[i] (1 x rows x cols, float) = (pixel/255 - mean)/std of item idx[i], augmented when aug is
 * not NULL (drawing from rng); y[i] = its label. */
void bnorm_batch_fill(float *x, int32_t *y, const bnorm_dataset *ds, const int64_t *idx, int64_t n,
                      double mean, double std, const bnorm_augment *aug, bnorm_rng *rng);

#ifdef __cplusplus
}
#endif

#endif /* BNORM_DATA_H */
