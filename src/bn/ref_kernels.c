/* src/bn/ref_kernels.c - the plain, double-accumulating reference kernels for float and double
 * data; the body is ref_kernels.inc, instantiated once per element type. */
#include <string.h>

#include "bn/kernels.h"

#define T   float
#define SFX f32
#include "bn/ref_kernels.inc"
#undef T
#undef SFX

#define T   double
#define SFX f64
#include "bn/ref_kernels.inc"
#undef T
#undef SFX
