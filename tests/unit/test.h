/*
 * test.h: the unit-test harness.  A test file defines TEST(name) functions,
 * lists them in main() with RUN(name), and ends with TEST_SUMMARY(), which
 * prints "N passed, N failed" and returns the exit code.
 *
 *     TEST(parses_prefix) { CHECK(x == 1); CHECK_STR(s, "a"); }
 *     int main(void) { RUN(parses_prefix); return TEST_SUMMARY(); }
 */
#ifndef WF_TEST_H
#define WF_TEST_H

#include <stdio.h>
#include <string.h>

static int test_passed, test_failed, test_current_failed;

#define TEST(name) static void test_##name(void)

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);       \
            test_current_failed = 1;                                                       \
        }                                                                                  \
    } while (0)

#define CHECK_STR(a, b)                                                                    \
    do {                                                                                   \
        const char *a_ = (a), *b_ = (b);                                                   \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                           \
            fprintf(stderr, "%s:%d: expected \"%s\", got \"%s\"\n", __FILE__, __LINE__,    \
                    b_ ? b_ : "(null)", a_ ? a_ : "(null)");                               \
            test_current_failed = 1;                                                       \
        }                                                                                  \
    } while (0)

#define CHECK_INT(a, b)                                                                    \
    do {                                                                                   \
        long long a_ = (long long)(a), b_ = (long long)(b);                                \
        if (a_ != b_) {                                                                    \
            fprintf(stderr, "%s:%d: %s: expected %lld, got %lld\n", __FILE__, __LINE__, #a, \
                    b_, a_);                                                               \
            test_current_failed = 1;                                                       \
        }                                                                                  \
    } while (0)

#define RUN(name)                                                                          \
    do {                                                                                   \
        test_current_failed = 0;                                                           \
        test_##name();                                                                     \
        if (test_current_failed) {                                                         \
            test_failed++;                                                                 \
            fprintf(stderr, "FAIL %s\n", #name);                                           \
        } else {                                                                           \
            test_passed++;                                                                 \
        }                                                                                  \
    } while (0)

#define TEST_SUMMARY()                                                                     \
    (printf("%d passed, %d failed\n", test_passed, test_failed), test_failed ? 1 : 0)

#endif
