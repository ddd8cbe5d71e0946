/*  bench/workload.h — what bench_load calls and what a right answer is.

    Shared by bench_load, which sends these calls and checks the answers,
    and bench_null, which answers every call with the right answer built
    once, without reading the call. So the echo payload is the same bytes in
    both programs: a fixed pseudo-random sequence, not a fresh one per run.
*/

#ifndef BENCH_WORKLOAD_H
#define BENCH_WORKLOAD_H

#include <stddef.h>

#define WORKLOAD_HELLO_NAME "Charly"
#define WORKLOAD_HELLO_ANSWER "Hello Charly"

/* Fills bytes[0..size) with the echo payload. Its first byte is 0xff, never
   valid UTF-8, so a host that turns valid UTF-8 into str must still answer
   bin; the rest is the same pseudo-random sequence on every run. */
void workload_fill_payload(unsigned char *bytes, size_t size);

/* Packs the WORK body ["hello", ["Charly"], {}] when `payload` is NULL,
   else ["echo", [bin payload], {}]. Returns a malloc'd buffer the caller
   frees (its size in *size), or NULL when out of memory. */
unsigned char *workload_pack_call(const unsigned char *payload, size_t payload_size,
                                  size_t *size);

/* Packs the OK body of a right answer to that call: the str "Hello Charly",
   or the bin payload. Same ownership as workload_pack_call. */
unsigned char *workload_pack_answer(const unsigned char *payload, size_t payload_size,
                                    size_t *size);

#endif
