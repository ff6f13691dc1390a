/* src/data/dataset.c - IDX loading through zlib (gzip or plain), splits, the random generator,
 * and normalized, optionally augmented batches. */
#include <math.h>
#include <string.h>
#include <zlib.h>

#include "bnorm/data.h"
#include "util/internal.h"

/* ---- random generator ------------------------------------------------------------------ */

uint64_t bnorm_rng_next(bnorm_rng *rng) { /* splitmix64 */
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

bnorm_rng bnorm_rng_seed(uint64_t seed, uint64_t stream) {
    bnorm_rng r = {seed ^ (stream * 0xD1B54A32D192ED03ull)};
    bnorm_rng_next(&r); /* decorrelate nearby seeds */
    return r;
}

double bnorm_rng_uniform(bnorm_rng *rng) {
    return (double)(bnorm_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

double bnorm_rng_normal(bnorm_rng *rng) {
    const double u = bnorm_rng_uniform(rng) + 1e-300, v = bnorm_rng_uniform(rng);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

void bnorm_permutation(int64_t *perm, int64_t n, bnorm_rng *rng) {
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)(bnorm_rng_next(rng) % (uint64_t)(i + 1));
        const int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* ---- IDX --------------------------------------------------------------------------------- */

/* Reads exactly n bytes; 0 on a short read (truncated file) or error. */
static int read_exact(gzFile f, void *buf, size_t n) {
    unsigned char *p = buf;
    while (n > 0) {
        const unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        const int got = gzread(f, p, chunk);
        if (got <= 0) return 0;
        p += got;
        n -= (size_t)got;
    }
    return 1;
}

static uint32_t be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Reads the header of an IDX file with `ndims` dimensions into dims; returns the open file. */
static bnorm_status idx_open(const char *path, int ndims, uint32_t *dims, gzFile *out) {
    static const char fn[] = "bnorm_idx_load";
    gzFile f = gzopen(path, "rb");
    if (!f) return bnorm__fail(BNORM_ERR_IO, "%s: cannot open '%s'", fn, path);
    unsigned char head[16];
    const size_t need = 4 + 4 * (size_t)ndims;
    if (!read_exact(f, head, need)) {
        gzclose(f);
        return bnorm__fail(BNORM_ERR_FORMAT, "%s: '%s' is too short for an IDX header", fn, path);
    }
    const uint32_t magic = be32(head), want = 0x800u + (uint32_t)ndims;
    if (magic != want) {
        gzclose(f);
        return bnorm__fail(BNORM_ERR_FORMAT,
                           "%s: '%s' has magic 0x%08x, expected 0x%08x (unsigned bytes, %d dims)",
                           fn, path, magic, want, ndims);
    }
    for (int i = 0; i < ndims; i++)
        dims[i] = be32(head + 4 + 4 * i);
    *out = f;
    return BNORM_OK;
}

bnorm_status bnorm_idx_load(bnorm_dataset *out, const char *images_path, const char *labels_path) {
    static const char fn[] = "bnorm_idx_load";
    if (!out || !images_path || !labels_path)
        return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: %s is NULL", fn,
                           !out           ? "out"
                           : !images_path ? "images_path"
                                          : "labels_path");
    memset(out, 0, sizeof *out);
    uint32_t idims[3], ldims[1];
    gzFile fi = NULL, fl = NULL;
    bnorm_status st = idx_open(images_path, 3, idims, &fi);
    if (st) return st;
    if ((st = idx_open(labels_path, 1, ldims, &fl))) {
        gzclose(fi);
        return st;
    }
    const uint32_t count = idims[0], rows = idims[1], cols = idims[2];
    if (count == 0 || rows == 0 || cols == 0 || rows > 4096 || cols > 4096 || count > (1u << 28)) {
        st = bnorm__fail(BNORM_ERR_FORMAT, "%s: '%s' declares %u images of %ux%u", fn, images_path,
                         count, rows, cols);
    } else if (ldims[0] != count) {
        st = bnorm__fail(BNORM_ERR_FORMAT, "%s: '%s' has %u labels for %u images in '%s'", fn,
                         labels_path, ldims[0], count, images_path);
    }
    uint8_t *mem = NULL;
    const size_t nimg = (size_t)count * rows * cols;
    if (!st && !(mem = bnorm__malloc(nimg + count)))
        st = bnorm__fail(BNORM_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    if (!st && !read_exact(fi, mem, nimg))
        st = bnorm__fail(BNORM_ERR_FORMAT, "%s: '%s' is truncated (expected %zu bytes of pixels)",
                         fn, images_path, nimg);
    if (!st && !read_exact(fl, mem + nimg, count))
        st = bnorm__fail(BNORM_ERR_FORMAT, "%s: '%s' is truncated (expected %u labels)", fn,
                         labels_path, count);
    gzclose(fi);
    gzclose(fl);
    if (st) {
        bnorm__free(mem);
        return st;
    }
    int classes = 0;
    for (uint32_t i = 0; i < count; i++)
        if (mem[nimg + i] + 1 > classes) classes = mem[nimg + i] + 1;
    out->count = count, out->rows = rows, out->cols = cols;
    out->images = mem, out->labels = mem + nimg, out->classes = classes, out->owner_ = mem;
    return BNORM_OK;
}

void bnorm_dataset_free(bnorm_dataset *ds) {
    if (!ds) return;
    bnorm__free(ds->owner_);
    memset(ds, 0, sizeof *ds);
}

bnorm_status bnorm_dataset_split(const bnorm_dataset *all, int64_t holdout, bnorm_dataset *train,
                                 bnorm_dataset *val) {
    static const char fn[] = "bnorm_dataset_split";
    if (!all || !train || !val) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: NULL argument", fn);
    if (holdout < 0 || holdout >= all->count)
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT,
                           "%s: holding out %lld of %lld items leaves none to train on", fn,
                           (long long)holdout, (long long)all->count);
    const int64_t n = all->count - holdout, px = all->rows * all->cols;
    *train = *all;
    train->count = n;
    train->owner_ = NULL;
    *val = *all;
    val->count = holdout;
    val->images = all->images + n * px;
    val->labels = all->labels + n;
    val->owner_ = NULL;
    return BNORM_OK;
}

void bnorm_dataset_pixel_stats(const bnorm_dataset *ds, double *mean, double *std) {
    const int64_t n = ds->count * ds->rows * ds->cols;
    double s = 0.0, ss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double v = ds->images[i] / 255.0;
        s += v;
        ss += v * v;
    }
    *mean = n ? s / n : 0.0;
    const double var = n ? ss / n - *mean * *mean : 0.0;
    *std = var > 0 ? sqrt(var) : 1.0;
}

void bnorm_batch_fill(float *x, int32_t *y, const bnorm_dataset *ds, const int64_t *idx, int64_t n,
                      double mean, double std, const bnorm_augment *aug, bnorm_rng *rng) {
    const int64_t R = ds->rows, C = ds->cols;
    const float scale = (float)(1.0 / (255.0 * std)), shift = (float)(-mean / std);
    const float zero = shift; /* a padded pixel is a black pixel, normalized */
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *img = ds->images + idx[i] * R * C;
        float *dst = x + i * R * C;
        y[i] = ds->labels[idx[i]];
        int dy = 0, dx = 0, flip = 0;
        if (aug && aug->crop_pad > 0) {
            dy = (int)(bnorm_rng_next(rng) % (uint64_t)(2 * aug->crop_pad + 1)) - aug->crop_pad;
            dx = (int)(bnorm_rng_next(rng) % (uint64_t)(2 * aug->crop_pad + 1)) - aug->crop_pad;
        }
        if (aug && aug->hflip) flip = (int)(bnorm_rng_next(rng) & 1);
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < C; c++) {
                const int64_t sr = r + dy, sc0 = c + dx, sc = flip ? C - 1 - sc0 : sc0;
                dst[r * C + c] = (sr < 0 || sr >= R || sc0 < 0 || sc0 >= C)
                                     ? zero
                                     : (float)img[sr * C + sc] * scale + shift;
            }
        if (aug && aug->cutout > 0) {
            const int64_t cy = (int64_t)(bnorm_rng_next(rng) % (uint64_t)R);
            const int64_t cx = (int64_t)(bnorm_rng_next(rng) % (uint64_t)C);
            const int64_t r0 = cy - aug->cutout / 2, c0 = cx - aug->cutout / 2;
            for (int64_t r = r0 < 0 ? 0 : r0; r < r0 + aug->cutout && r < R; r++)
                for (int64_t c = c0 < 0 ? 0 : c0; c < c0 + aug->cutout && c < C; c++)
                    dst[r * C + c] = 0.0f;
        }
    }
}
