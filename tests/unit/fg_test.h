/* SPDX-License-Identifier: Apache-2.0 */
/* A minimal unit-test harness: FG_CHECK* record failures with file and line
 * and keep going; FG_TEST_MAIN runs the listed tests and prints
 * "N passed, N failed" (checks), exiting non-zero on any failure. */
#ifndef FG_TEST_H
#define FG_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int fg_test_passed, fg_test_failed;

#define FG_CHECK(cond)                                                        \
    do {                                                                      \
        if (cond) {                                                           \
            fg_test_passed++;                                                 \
        } else {                                                              \
            fg_test_failed++;                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,  \
                    #cond);                                                   \
        }                                                                     \
    } while (0)

#define FG_CHECK_INT(a, b)                                                    \
    do {                                                                      \
        long long fg_a_ = (long long)(a), fg_b_ = (long long)(b);             \
        if (fg_a_ == fg_b_) {                                                 \
            fg_test_passed++;                                                 \
        } else {                                                              \
            fg_test_failed++;                                                 \
            fprintf(stderr, "%s:%d: %s == %s: %lld != %lld\n", __FILE__,      \
                    __LINE__, #a, #b, fg_a_, fg_b_);                          \
        }                                                                     \
    } while (0)

#define FG_CHECK_STR(a, b)                                                    \
    do {                                                                      \
        const char *fg_a_ = (a), *fg_b_ = (b);                                \
        if (fg_a_ && fg_b_ && strcmp(fg_a_, fg_b_) == 0) {                    \
            fg_test_passed++;                                                 \
        } else {                                                              \
            fg_test_failed++;                                                 \
            fprintf(stderr, "%s:%d: %s == %s: \"%s\" != \"%s\"\n", __FILE__,  \
                    __LINE__, #a, #b, fg_a_ ? fg_a_ : "(null)",               \
                    fg_b_ ? fg_b_ : "(null)");                                \
        }                                                                     \
    } while (0)

typedef void (*fg_test_fn)(void);

#define FG_TEST_MAIN(...)                                                     \
    int main(void)                                                            \
    {                                                                         \
        fg_test_fn fg_tests_[] = {__VA_ARGS__};                               \
        for (size_t i = 0; i < sizeof(fg_tests_) / sizeof(fg_tests_[0]); i++) \
            fg_tests_[i]();                                                   \
        printf("%d passed, %d failed\n", fg_test_passed, fg_test_failed);     \
        return fg_test_failed ? 1 : 0;                                        \
    }

#endif
