/*
 * codec_check: the limits every msgpack body is held to, and the check that
 * holds it there before msgpack-c sees it (see codec.h for the whole
 * unpacking sequence). No Lua, no msgpack-c: message.c, frame-level tests
 * and fuzz harnesses use it alone.
 */
#ifndef PSEUD_CODEC_CHECK_H
#define PSEUD_CODEC_CHECK_H

#include <stddef.h>

#define CODEC_DEFAULT_MAX_DEPTH    32          /* msgpack-c's own stack stops at 32 */
#define CODEC_DEFAULT_MAX_STRING   (16u << 20) /* bytes in one str, bin or ext */
#define CODEC_DEFAULT_MAX_ELEMENTS (1u << 20)  /* values in one body, all levels */
#define CODEC_DEFAULT_MAX_BODY     (16u << 20) /* bytes in one body */

typedef struct codec_limits {
    int max_depth;        /* nesting of arrays and maps, empty ones too; a top-level
                             array is level 1; 1..CODEC_DEFAULT_MAX_DEPTH, else
                             codec_check refuses every body */
    size_t max_string;    /* longest str/bin/ext payload (ext: without its type
                             byte); codec_check caps it at 2^32-2 */
    size_t max_elements;  /* total values in one body, counted over all levels:
                             the top value, each array element, each map key and
                             each map value count one */
    size_t max_body;      /* longest body in bytes */
} codec_limits_t;

typedef struct codec_error {
    char message[160];    /* names the limit or the type, and the byte offset */
} codec_error_t;

/* Fill err->message (snprintf: filling one never raises, never allocates);
 * returns -1. */
int codec_fail(codec_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Fill `lim` with the defaults above. */
void codec_limits_init(codec_limits_t *lim);

/* Walk `data[0..len)` as exactly one msgpack value and check it against `lim`
 * without allocating. Returns 0, or -1 with `err` filled (limit and offset).
 * A body that passes is one msgpack_unpack() parses whole (no trailing bytes,
 * no reserved 0xc1, depth within msgpack-c's 32-level stack). */
int codec_check(const char *data, size_t len, const codec_limits_t *lim,
                codec_error_t *err);

/* 1 when s[0..len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int codec_is_utf8(const char *s, size_t len);

#endif
