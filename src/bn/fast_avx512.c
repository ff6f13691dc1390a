/* src/bn/fast_avx512.c - the fast kernels compiled for avx512 (see fast_kernels.inc). */
#include <stdint.h>

#define BNORM_SIMD_AVX512
#include "bn/fast.h"
#include "bn/simd.h"

#define ISA      avx512
#define ISA_NAME "avx512"
#include "bn/fast_kernels.inc"
