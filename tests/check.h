/*
 * check: the one assertion of the C unit tests. A failed check prints its
 * place and message and the test goes on; main() reports the totals. Each
 * test program defines `static int g_checks, g_failed;` before including it.
 */
#ifndef PSEUD_TEST_CHECK_H
#define PSEUD_TEST_CHECK_H

#include <stdio.h>

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        g_checks++;                                                          \
        if (!(cond)) {                                                       \
            g_failed++;                                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                      \
            printf(__VA_ARGS__);                                             \
            printf("\n");                                                    \
        }                                                                    \
    } while (0)

#endif
