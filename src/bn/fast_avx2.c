/* src/bn/fast_avx2.c - the fast kernels compiled for avx2 (see fast_kernels.inc). */
#include <stdint.h>

#define BNORM_SIMD_AVX2
#include "bn/fast.h"
#include "bn/simd.h"

#define ISA      avx2
#define ISA_NAME "avx2"
#include "bn/fast_kernels.inc"
