/* src/bn/dispatch.c - run-time choice of the float32 kernels: the best ISA the CPU has, or the
 * one the BNORM_ISA environment variable names (reference, scalar, avx2, avx512), read once. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bn/fast.h"
#include "util/internal.h"

/* Chosen on first use (threads racing there store the same value), or by bnorm__fast_select in
 * tests and benchmarks. */
static _Atomic(const bnorm__fast_ops *) current;
static atomic_int chosen;

static int cpu_has(const char *isa) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (strcmp(isa, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    if (strcmp(isa, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return strcmp(isa, "scalar") == 0 || strcmp(isa, "reference") == 0;
}

/* 0: not asked yet, 1: no, 2: yes; racing threads store the same */
static atomic_int amd_known;

void bnorm__cpu_assume_amd(int amd) {
    amd_known = amd ? 2 : 1;
}

int bnorm__cpu_is_amd(void) {
#if defined(__x86_64__) || defined(__i386__)
    if (!amd_known) {
        __builtin_cpu_init();
        amd_known = __builtin_cpu_is("amd") ? 2 : 1;
    }
#endif
    return amd_known == 2;
}

static const bnorm__fast_ops *by_name(const char *name) {
    if (strcmp(name, "avx512") == 0) return &bnorm__fast_ops_avx512;
    if (strcmp(name, "avx2") == 0) return &bnorm__fast_ops_avx2;
    if (strcmp(name, "scalar") == 0) return &bnorm__fast_ops_scalar;
    return NULL; /* reference */
}

int bnorm__fast_select(const char *name) {
    if (strcmp(name, "auto") == 0) {
        current = cpu_has("avx512") ? &bnorm__fast_ops_avx512
                  : cpu_has("avx2") ? &bnorm__fast_ops_avx2
                                    : &bnorm__fast_ops_scalar;
        chosen = 1;
        return 1;
    }
    if (strcmp(name, "reference") != 0 && !by_name(name)) return 0;
    if (!cpu_has(name)) return 0;
    current = by_name(name);
    chosen = 1;
    return 1;
}

const bnorm__fast_ops *bnorm__fast_current(void) {
    if (!chosen) {
        const char *env = getenv("BNORM_ISA");
        if (!env || !bnorm__fast_select(env)) bnorm__fast_select("auto");
    }
    return current;
}

bnorm_status bnorm_set_kernels(const char *name) {
    if (name == NULL) return bnorm__fail(BNORM_ERR_NULL_POINTER, "bnorm_set_kernels: name is NULL");
    if (!bnorm__fast_select(name))
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT,
                           "bnorm_set_kernels: '%s' is not auto, reference, scalar, avx2 or "
                           "avx512, or this CPU cannot run it",
                           name);
    return BNORM_OK;
}

const char *bnorm_kernels(void) {
    const bnorm__fast_ops *k = bnorm__fast_current();
    return k ? k->name : "reference";
}
