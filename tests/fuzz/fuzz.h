/*
 * fuzz: what every harness in tests/fuzz/ shares.
 *
 * A harness is one file, fuzz_<name>.c, defining LLVMFuzzerTestOneInput and
 * nothing else that other files call. Built with -DPSEUD_FUZZ=ON (clang)
 * libFuzzer supplies main() and explores; built normally, replay_main.c
 * supplies a main() that runs the harness over its seed corpus, so the same
 * checks run under ctest on every build (STYLE.md section 10).
 *
 * A broken invariant is a crash on purpose: FUZZ_ASSERT prints what broke
 * and aborts, so libFuzzer saves the input and ctest fails the replay.
 */
#ifndef PSEUD_FUZZ_H
#define PSEUD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The one entry point: libFuzzer or replay_main.c calls it once per input.
 * `data` is exactly `size` bytes (no terminator); returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond)                                                    \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: invariant broken: %s\n",                 \
                    __FILE__, __LINE__, #cond);                              \
            abort();                                                         \
        }                                                                    \
    } while (0)

#endif
