/* tests/check.h - a tiny check library: each failed check prints the expression, the values and
 * file:line, and marks the test failed; check_report() prints "N passed, N failed" and returns the
 * exit status. Header-only: each test executable includes it once. */
#ifndef BNORM_TESTS_CHECK_H
#define BNORM_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_passed_, check_failed_;

static inline int check_record_(int ok) {
    if (ok)
        check_passed_++;
    else
        check_failed_++;
    return ok;
}

#define CHECK(cond)                                                                                \
    (check_record_(!!(cond)) ||                                                                    \
     (fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond), 0))

#define CHECK_INT_EQ(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (!check_record_(a_ == b_))                                                              \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld vs %lld\n", __FILE__, __LINE__, #a, #b,  \
                    a_, b_);                                                                       \
    } while (0)

/* |a - b| <= tol, NaN never passes */
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);                             \
        if (!check_record_(fabs(a_ - b_) <= t_))                                                   \
            fprintf(stderr, "%s:%d: |%s - %s| <= %s failed: %.17g vs %.17g (diff %.3g)\n",         \
                    __FILE__, __LINE__, #a, #b, #tol, a_, b_, fabs(a_ - b_));                      \
    } while (0)

/* a status call must return `expected`; prints the library's detail message when it does not */
#define CHECK_STATUS(call, expected)                                                               \
    do {                                                                                           \
        bnorm_status s_ = (call);                                                                  \
        if (!check_record_(s_ == (expected)))                                                      \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (%s)\n", __FILE__, __LINE__,       \
                    #call, bnorm_status_str(s_), bnorm_status_str(expected), bnorm_last_error());  \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, BNORM_OK)

static inline int check_report(void) {
    printf("%d passed, %d failed\n", check_passed_, check_failed_);
    return check_failed_ != 0 || check_passed_ == 0;
}

#endif /* BNORM_TESTS_CHECK_H */
