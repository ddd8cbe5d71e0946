/*  bench/workload.c — the calls of bench_load and their right answers
    (see workload.h). Packed with msgpack-c, as the smallest encoding of
    each value: what bench_echo_c and pseud-lua send back.
*/

#include "workload.h"

#include <stdint.h>
#include <string.h>

#include <msgpack.h>

#define WORKLOAD_PAYLOAD_SEED 0x70736575646c7561u   /* any constant: "pseudlua" */

/* splitmix64 (Steele, Lea, Flood 2014): one 64-bit step. */
static uint64_t s_next(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

void workload_fill_payload(unsigned char *bytes, size_t size) {
  uint64_t state = WORKLOAD_PAYLOAD_SEED;
  for (size_t i = 0; i < size; i += 8) {
    uint64_t word = s_next(&state);
    size_t left = size - i < 8 ? size - i : 8;
    memcpy(bytes + i, &word, left);
  }
  if (size > 0)
    bytes[0] = 0xff;
}

/* Hands the packed bytes over to the caller. */
static unsigned char *s_release(msgpack_sbuffer *buffer, size_t *size) {
  *size = buffer->size;
  return (unsigned char *)msgpack_sbuffer_release(buffer);
}

unsigned char *workload_pack_call(const unsigned char *payload, size_t payload_size,
                                  size_t *size) {
  msgpack_sbuffer buffer;
  msgpack_packer packer;
  msgpack_sbuffer_init(&buffer);
  msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
  msgpack_pack_array(&packer, 3);
  if (!payload) {
    msgpack_pack_str_with_body(&packer, "hello", 5);
    msgpack_pack_array(&packer, 1);
    msgpack_pack_str_with_body(&packer, WORKLOAD_HELLO_NAME, strlen(WORKLOAD_HELLO_NAME));
  } else {
    msgpack_pack_str_with_body(&packer, "echo", 4);
    msgpack_pack_array(&packer, 1);
    msgpack_pack_bin_with_body(&packer, payload, payload_size);
  }
  msgpack_pack_map(&packer, 0);
  return s_release(&buffer, size);
}

unsigned char *workload_pack_answer(const unsigned char *payload, size_t payload_size,
                                    size_t *size) {
  msgpack_sbuffer buffer;
  msgpack_packer packer;
  msgpack_sbuffer_init(&buffer);
  msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
  if (!payload)
    msgpack_pack_str_with_body(&packer, WORKLOAD_HELLO_ANSWER, strlen(WORKLOAD_HELLO_ANSWER));
  else
    msgpack_pack_bin_with_body(&packer, payload, payload_size);
  return s_release(&buffer, size);
}
