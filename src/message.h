/*
 * message: bodies the host writes and reads itself, without Lua.
 *
 * ERROR bodies are [class, message, traceback], three msgpack str that are
 * always valid UTF-8 (DESIGN.md section 4): bytes that are not (a peer's
 * name, say) are escaped as \xNN, and text echoed from a peer is cut at
 * MESSAGE_MAX_ECHO bytes of input. HELLO bodies are [login, password].
 */
#ifndef PSEUD_MESSAGE_H
#define PSEUD_MESSAGE_H

#include <stddef.h>

#include <msgpack.h>

#include "codec.h"

#define MESSAGE_MAX_ECHO        1024   /* bytes an ERROR quotes of peer input, escaped */
#define MESSAGE_MAX_HELLO_FIELD 1024   /* bytes of a login or a password */
/* room for an echo and the note on the cut */
#define MESSAGE_ECHO_SIZE       (MESSAGE_MAX_ECHO + 64)

/* Write `len` bytes of peer input to `out` (MESSAGE_ECHO_SIZE bytes) as
 * valid UTF-8 (other bytes as \xNN), at most MESSAGE_MAX_ECHO bytes of
 * text, then "... (N more bytes)" when cut; NUL-terminated. Returns its
 * length. */
size_t message_echo(char *out, const char *in, size_t len);

/* Bytes `in` takes once made valid UTF-8 (invalid bytes become \xNN). */
size_t message_utf8_size(const char *in, size_t len);

/* Pack ERROR [name, message, traceback], each made valid UTF-8. 0 or -1. */
int message_pack_error(msgpack_packer *pk, const char *name, size_t name_len,
                       const char *message, size_t message_len,
                       const char *traceback, size_t traceback_len);

typedef struct message_hello {
    const char *login;     size_t login_len;      /* views into the body */
    const char *password;  size_t password_len;
} message_hello_t;

/* Decode a HELLO body: a msgpack array of two str or bin, each at most
 * MESSAGE_MAX_HELLO_FIELD bytes. Returns 0, or -1 with *why. `zone` is
 * cleared and holds nothing the views need. */
int message_decode_hello(const char *body, size_t len, const codec_limits_t *lim,
                         msgpack_zone *zone, message_hello_t *out, const char **why);

#endif
