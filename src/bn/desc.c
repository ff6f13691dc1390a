/* src/bn/desc.c - tensor descriptors from PyTorch-style shapes. */
#include "bn/bn_internal.h"
#include "util/internal.h"

bnorm_status bnorm_desc_init(bnorm_desc *desc, bnorm_dtype dtype, bnorm_layout layout, int ndim,
                             const int64_t *shape) {
    static const char fn[] = "bnorm_desc_init";
    if (desc == NULL) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: desc is NULL", fn);
    if (shape == NULL) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: shape is NULL", fn);
    if (ndim < 2 || ndim > 5)
        return bnorm__fail(BNORM_ERR_INVALID_SHAPE,
                           "%s: rank %d is not 2..5 ((N,C), (N,C,L), (N,C,H,W), (N,C,D,H,W))", fn,
                           ndim);
    int64_t spatial = 1;
    for (int i = 2; i < ndim; i++) {
        if (shape[i] < 1)
            return bnorm__fail(BNORM_ERR_INVALID_SHAPE, "%s: dim %d is %lld, must be >= 1", fn, i,
                               (long long)shape[i]);
        if (!bnorm__mul_i64(spatial, shape[i], &spatial))
            return bnorm__fail(BNORM_ERR_SIZE_OVERFLOW, "%s: spatial size overflows int64", fn);
    }
    bnorm_desc d = {shape[0], shape[1], spatial, layout, dtype};
    bnorm_status st = bnorm__check_desc(fn, &d);
    if (st) return st;
    *desc = d;
    return BNORM_OK;
}

bnorm_status bnorm_desc_check(const bnorm_desc *desc) {
    return bnorm__check_desc("bnorm_desc_check", desc);
}

int64_t bnorm_desc_numel(const bnorm_desc *desc) {
    if (desc == NULL || desc->n < 0 || desc->c < 1 || desc->spatial < 1) return 0;
    int64_t nc, numel;
    if (!bnorm__mul_i64(desc->n, desc->c, &nc) || !bnorm__mul_i64(nc, desc->spatial, &numel))
        return 0;
    return numel;
}
