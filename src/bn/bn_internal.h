/* src/bn/bn_internal.h - validation helpers shared by the functional API and the layer. */
#ifndef BNORM_BN_INTERNAL_H
#define BNORM_BN_INTERNAL_H

#include "bnorm/bn.h"

/* Each returns BNORM_OK or records a message naming `fn` and returns the error. */
bnorm_status bnorm__check_desc(const char *fn, const bnorm_desc *desc);
bnorm_status bnorm__check_eps(const char *fn, double eps);
bnorm_status bnorm__check_momentum(const char *fn, double momentum);

/* Bytes per element of a dtype (0 for an unknown one). */
int64_t bnorm__dtype_size(bnorm_dtype dtype);

#endif /* BNORM_BN_INTERNAL_H */
