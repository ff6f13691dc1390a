/* src/bn/fast_scalar.c - the fast kernels compiled for scalar (see fast_kernels.inc). */
#include <stdint.h>

#define BNORM_SIMD_SCALAR
#include "bn/fast.h"
#include "bn/simd.h"

#define ISA      scalar
#define ISA_NAME "scalar"
#include "bn/fast_kernels.inc"
