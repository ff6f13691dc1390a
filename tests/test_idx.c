/* tests/test_idx.c - the IDX reader on files this test writes: gzip and plain, truncated, wrong
 * magic, counts that differ, missing; splits, pixel statistics, batches and augmentation. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "nn_testutil.h"

static char dir[256];

static void put32(unsigned char *b, uint32_t v) {
    b[0] = (unsigned char)(v >> 24), b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8), b[3] = (unsigned char)v;
}

/* writes an IDX file: magic, dims, then `payload` bytes (gzip when gz) */
static const char *write_idx(const char *name, uint32_t magic, const uint32_t *dims, int nd,
                             const unsigned char *payload, size_t len, int gz) {
    static char path[8][512];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    unsigned char head[16];
    put32(head, magic);
    for (int i = 0; i < nd; i++)
        put32(head + 4 + 4 * i, dims[i]);
    if (gz) {
        gzFile f = gzopen(p, "wb");
        gzwrite(f, head, (unsigned)(4 + 4 * nd));
        if (len) gzwrite(f, payload, (unsigned)len);
        gzclose(f);
    } else {
        FILE *f = fopen(p, "wb");
        fwrite(head, 1, (size_t)(4 + 4 * nd), f);
        fwrite(payload, 1, len, f);
        fclose(f);
    }
    return p;
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/bnorm_test_idx_%ld", (long)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    if (system(cmd) != 0) return 1;
    unsigned char pix[3 * 4 * 5], lab[3] = {2, 0, 7};
    for (int i = 0; i < 60; i++)
        pix[i] = (unsigned char)(i * 4);
    const uint32_t idims[3] = {3, 4, 5}, ldims[1] = {3}, ldims2[1] = {2};
    const char *img = write_idx("img.gz", 0x803, idims, 3, pix, 60, 1);
    const char *lbl = write_idx("lbl.gz", 0x801, ldims, 1, lab, 3, 1);
    bnorm_dataset ds;
    CHECK_OK(bnorm_idx_load(&ds, img, lbl));
    CHECK(ds.count == 3 && ds.rows == 4 && ds.cols == 5 && ds.classes == 8);
    CHECK(ds.images[59] == 236 && ds.labels[2] == 7);
    /* plain files read the same */
    bnorm_dataset plain;
    CHECK_OK(bnorm_idx_load(&plain, write_idx("img.raw", 0x803, idims, 3, pix, 60, 0),
                            write_idx("lbl.raw", 0x801, ldims, 1, lab, 3, 0)));
    CHECK(plain.count == 3 && memcmp(plain.images, ds.images, 60) == 0);
    bnorm_dataset_free(&plain);

    /* failures name the file */
    bnorm_dataset bad;
    CHECK_STATUS(bnorm_idx_load(&bad, "/nonexistent/x.gz", lbl), BNORM_ERR_IO);
    CHECK(strstr(bnorm_last_error(), "/nonexistent/x.gz") != NULL);
    CHECK_STATUS(bnorm_idx_load(&bad, write_idx("trunc.gz", 0x803, idims, 3, pix, 50, 1), lbl),
                 BNORM_ERR_FORMAT);
    CHECK(strstr(bnorm_last_error(), "truncated") != NULL);
    CHECK_STATUS(bnorm_idx_load(&bad, write_idx("magic.gz", 0x802, idims, 3, pix, 60, 1), lbl),
                 BNORM_ERR_FORMAT);
    CHECK(strstr(bnorm_last_error(), "magic") != NULL);
    CHECK_STATUS(bnorm_idx_load(&bad, img, write_idx("lbl2.gz", 0x801, ldims2, 1, lab, 2, 1)),
                 BNORM_ERR_FORMAT);
    CHECK(strstr(bnorm_last_error(), "2 labels for 3 images") != NULL);
    const uint32_t zero[3] = {0, 4, 5};
    CHECK_STATUS(bnorm_idx_load(&bad, write_idx("zero.gz", 0x803, zero, 3, pix, 0, 1), lbl),
                 BNORM_ERR_FORMAT);
    CHECK_STATUS(bnorm_idx_load(&bad, write_idx("short.gz", 0x803, idims, 1, pix, 0, 1), lbl),
                 BNORM_ERR_FORMAT);
    CHECK_STATUS(bnorm_idx_load(NULL, img, lbl), BNORM_ERR_NULL_POINTER);

    /* split, statistics, batches */
    bnorm_dataset tr, va;
    CHECK_OK(bnorm_dataset_split(&ds, 1, &tr, &va));
    CHECK(tr.count == 2 && va.count == 1 && va.labels[0] == 7 && va.images[0] == pix[40]);
    CHECK_STATUS(bnorm_dataset_split(&ds, 3, &tr, &va), BNORM_ERR_INVALID_ARGUMENT);
    double mean, std;
    bnorm_dataset_pixel_stats(&ds, &mean, &std);
    CHECK_NEAR(mean, 118.0 / 255.0, 1e-12);
    float x[3 * 20];
    int32_t y[3];
    const int64_t idx[3] = {2, 0, 1};
    bnorm_batch_fill(x, y, &ds, idx, 3, 0.5, 0.25, NULL, NULL);
    CHECK(y[0] == 7 && y[1] == 2);
    CHECK_NEAR(x[0], (pix[40] / 255.0 - 0.5) / 0.25, 1e-6);
    /* augmentation: flips and shifts, reproducible from the seed, pads with black */
    bnorm_augment aug = {1, 1, 0};
    float a1[3 * 20], a2[3 * 20];
    bnorm_rng r1 = bnorm_rng_seed(9, 1), r2 = bnorm_rng_seed(9, 1);
    bnorm_batch_fill(a1, y, &ds, idx, 3, 0.0, 1.0, &aug, &r1);
    bnorm_batch_fill(a2, y, &ds, idx, 3, 0.0, 1.0, &aug, &r2);
    CHECK(memcmp(a1, a2, sizeof a1) == 0);
    int changed = 0;
    bnorm_batch_fill(x, y, &ds, idx, 3, 0.0, 1.0, NULL, NULL);
    for (int i = 0; i < 60; i++)
        changed += a1[i] != x[i];
    CHECK(changed > 0);
    /* cutout: a square of at most 2x2 pixels (fewer at a border, at least one) set to exactly 0,
     * every other pixel as without augmentation */
    bnorm_augment cut = {0, 0, 2};
    bnorm_rng r3 = bnorm_rng_seed(5, 1);
    float ref[3 * 20];
    bnorm_batch_fill(ref, y, &ds, idx, 3, 0.5, 0.25, NULL, NULL);
    bnorm_batch_fill(a1, y, &ds, idx, 3, 0.5, 0.25, &cut, &r3);
    for (int i = 0; i < 3; i++) {
        int erased = 0, other = 0;
        for (int p = 0; p < 20; p++) {
            erased += a1[i * 20 + p] == 0.0f;
            other += a1[i * 20 + p] != 0.0f && a1[i * 20 + p] != ref[i * 20 + p];
        }
        CHECK(erased >= 1 && erased <= 4 && other == 0);
    }
    int64_t perm[50], seen[50] = {0};
    bnorm_rng pr = bnorm_rng_seed(1, 2);
    bnorm_permutation(perm, 50, &pr);
    int ok = 1;
    for (int i = 0; i < 50; i++)
        ok &= perm[i] >= 0 && perm[i] < 50 && !seen[perm[i]]++;
    CHECK(ok);
    bnorm_dataset_free(&ds);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
    return check_report();
}
