/* tests/test_status.c - status names, the per-thread detail message, and the allocator hook
 * seeing every allocation and free of a layer. */
#include <string.h>

#include "check.h"
#include "testutil.h"

static int allocs, frees;

static void *count_alloc(void *ctx, size_t size) {
    (*(int *)ctx)++;
    allocs++;
    return malloc(size);
}

static void count_free(void *ctx, void *p) {
    (void)ctx;
    frees++;
    free(p);
}

int main(void) {
    const bnorm_status all[] = {BNORM_OK,
                                BNORM_ERR_NULL_POINTER,
                                BNORM_ERR_INVALID_SHAPE,
                                BNORM_ERR_SIZE_OVERFLOW,
                                BNORM_ERR_INVALID_ARGUMENT,
                                BNORM_ERR_BATCH_TOO_SMALL,
                                BNORM_ERR_MISMATCH,
                                BNORM_ERR_OUT_OF_MEMORY,
                                BNORM_WARN_NONFINITE,
                                BNORM_ERR_IO,
                                BNORM_ERR_FORMAT,
                                BNORM_ERR_PARSE};
    const size_t n = sizeof all / sizeof all[0];
    for (size_t i = 0; i < n; i++) {
        CHECK(bnorm_status_str(all[i]) != NULL && strlen(bnorm_status_str(all[i])) > 1);
        CHECK(strcmp(bnorm_status_str(all[i]), "unknown status") != 0);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(bnorm_status_str(all[i]), bnorm_status_str(all[j])) != 0);
    }
    CHECK(strcmp(bnorm_status_str((bnorm_status)1000), "unknown status") == 0);
    CHECK_INT_EQ(BNORM_OK, 0);

    /* the message is the last failure's and stays until the next failure */
    bnorm_desc d;
    int64_t shape[2] = {4, -2};
    CHECK_STATUS(bnorm_desc_init(&d, BNORM_DTYPE_F32, 0, 2, shape), BNORM_ERR_INVALID_SHAPE);
    CHECK(strstr(bnorm_last_error(), "bnorm_desc_init") != NULL);
    shape[1] = 2;
    CHECK_OK(bnorm_desc_init(&d, BNORM_DTYPE_F32, 0, 2, shape));
    CHECK(strstr(bnorm_last_error(), "C=-2") != NULL);

    /* the hook sees every allocation and its free */
    int ctx = 0;
    bnorm_set_allocator(count_alloc, count_free, &ctx);
    bnorm_bn_options opt = bnorm_bn_options_default(8);
    bnorm_bn_layer *bn;
    CHECK_OK(bnorm_bn_layer_create(&bn, &opt, NULL));
    CHECK(ctx > 0 && allocs == ctx);
    bnorm_bn_layer_free(bn);
    CHECK_INT_EQ(frees, allocs);
    bnorm_set_allocator(NULL, NULL, NULL); /* back to malloc: the hook is no longer called */

    /* kernel selection */
    CHECK_STATUS(bnorm_set_kernels(NULL), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_set_kernels("sse9"), BNORM_ERR_INVALID_ARGUMENT);
    CHECK(strstr(bnorm_last_error(), "sse9") != NULL);
    CHECK_OK(bnorm_set_kernels("reference"));
    CHECK(strcmp(bnorm_kernels(), "reference") == 0);
    CHECK_OK(bnorm_set_kernels("scalar"));
    CHECK(strcmp(bnorm_kernels(), "scalar") == 0);
    CHECK_OK(bnorm_set_kernels("auto"));
    CHECK(strcmp(bnorm_kernels(), "reference") != 0);
    CHECK_OK(bnorm_bn_layer_create(&bn, &opt, NULL));
    bnorm_bn_layer_free(bn);
    CHECK_INT_EQ(frees, allocs);
    return check_report();
}
