/* src/bn/bn_internal.h - validation helpers shared by the functional API and the layer. */
#ifndef BNORM_BN_INTERNAL_H
#define BNORM_BN_INTERNAL_H

#include "bnorm/bn.h"

/* Per-channel loops of double arithmetic that every call runs once (square roots, divisions, the
 * running update): compiled for AVX-512 and AVX2 as well as the baseline, the CPU's version chosen
 * when the library loads (GCC's and Clang's target_clones). Only correctly rounded operations and
 * no contraction (-ffp-contract=off), so every version gives the same bits. -DBNORM_NO_CLONES
 * builds the baseline alone (for a toolchain without ifunc support). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(BNORM_NO_CLONES)
#define BNORM__CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BNORM__CLONES
#endif

/* Each returns BNORM_OK or records a message naming `fn` and returns the error. */
bnorm_status bnorm__check_desc(const char *fn, const bnorm_desc *desc);
bnorm_status bnorm__check_eps(const char *fn, double eps);
bnorm_status bnorm__check_momentum(const char *fn, double momentum);

/* Step 3a over channels [c0, c1) (bn.c): mean/m2/save_mean/save_invstd indexed c - c0, running
 * statistics (param type, may be NULL when factor < 0) by absolute channel; factor < 0 means no
 * running update. Returns how many channels had non-finite statistics and so kept their running
 * values; the first of them goes to *first_bad. */
int64_t bnorm__finalize_range(bnorm_dtype dt, const double *mean, const double *m2, int64_t count,
                              double eps, double *save_mean, double *save_invstd, void *run_mean,
                              void *run_var, double factor, int64_t c0, int64_t c1,
                              int64_t *first_bad);

/* invstd[c - c0] = 1/sqrt(var[c] + eps) in double for channels [c0, c1), var of type dt (bn.c) */
void bnorm__invstd_range(bnorm_dtype dt, const void *var, double eps, int64_t c0, int64_t c1,
                         double *invstd);

/* Whether the tensor's memory is rows of C channels: channels-last, or any (N,C) data (spatial
 * 1), whose memory is the same in both layouts. */
static inline int bnorm__channels_in_rows(const bnorm_desc *d) {
    return d->layout == BNORM_LAYOUT_CHANNELS_LAST || d->spatial == 1;
}

/* Bytes per element of a dtype (0 for an unknown one). */
int64_t bnorm__dtype_size(bnorm_dtype dtype);

#endif /* BNORM_BN_INTERNAL_H */
