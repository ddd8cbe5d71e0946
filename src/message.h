/*
 * message: every msgpack body of the protocol, packed and decoded without
 * Lua: WORK [name, args, kwargs], OK (any value), ERROR [class, message,
 * traceback], HELLO [login, password] (DESIGN.md section 1).
 *
 * Decoders run codec_check (so msgpack-c only sees checked bytes), then
 * msgpack_unpack into the caller's zone, then check the shape, and return
 * views: str/bin views point into the body (an empty one is "", never
 * NULL), msgpack_object views into the zone. Both must outlive the views;
 * each decoder clears the zone first.
 * Packers write through the caller's packer and return 0 or -1 (the
 * packer's buffer could not grow); the values that travel as Lua values
 * (WORK arguments, an OK value) are the codec's job.
 *
 * ERROR bodies the host writes are three msgpack str that are always valid
 * UTF-8 (DESIGN.md section 4): bytes that are not (a peer's name, say) are
 * escaped as \xNN, and text echoed from a peer is cut at MESSAGE_MAX_ECHO
 * bytes of input.
 */
#ifndef PSEUD_MESSAGE_H
#define PSEUD_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "codec_check.h"
#include "frame.h"

#define MESSAGE_MAX_ECHO        1024   /* bytes an ERROR quotes of peer input, escaped */
#define MESSAGE_MAX_HELLO_FIELD 1024   /* bytes of a login or a password */
/* room for an echo and the note on the cut */
#define MESSAGE_ECHO_SIZE       (MESSAGE_MAX_ECHO + 64)

/* --- ERROR text the host writes --- */

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

/* --- WORK [name, args, kwargs] --- */

typedef struct message_work {
    const char *name;                   /* str or bin, a view into the body */
    size_t name_len;
    const msgpack_object_array *args;   /* positional arguments, in the zone */
    const msgpack_object *kwargs;       /* a non-empty map in the zone, or NULL
                                           (absent, nil or empty) */
} message_work_t;

/* Pack the head of a WORK body: [name (str), args array header of `nargs`];
 * the caller then packs `nargs` values and the kwargs map (an empty map
 * when there are none). 0 or -1. */
int message_pack_work_head(msgpack_packer *pk, const char *name, size_t name_len,
                           uint32_t nargs);

/* Decode a WORK body: an array of 2 or 3, name str or bin, args an array,
 * kwargs a map or nil or absent. Returns 0, or -1 with err->message: the
 * codec_check refusal (limit and offset), "WORK body could not be unpacked"
 * or "WORK body is not [name, args, kwargs]". */
int message_decode_work(const char *body, size_t len, const codec_limits_t *lim,
                        msgpack_zone *zone, message_work_t *out, codec_error_t *err);

/* --- OK (any value) and ERROR [class, message, traceback] --- */

typedef struct message_reply {
    msgpack_object value;               /* OK: the returned value (its parts in the zone) */
    const char *name;                   /* ERROR: views into the body, or static */
    size_t name_len;                    /*   defaults: "RemoteError", "", "" */
    const char *message;
    size_t message_len;
    const char *traceback;
    size_t traceback_len;
} message_reply_t;

/* Decode the body of a reply of `type` FRAME_OK or FRAME_ERROR. An ERROR is
 * read leniently, since it settles a call either way: a part that is not a
 * str or bin (or is missing) keeps its default, and a body that is not an
 * array at all is an ERROR of defaults. Returns 0, or -1 with err->message:
 * the codec_check refusal, "reply body could not be unpacked", or
 * "reply type 0xNN is not OK or ERROR". */
int message_decode_reply(int type, const char *body, size_t len, const codec_limits_t *lim,
                         msgpack_zone *zone, message_reply_t *out, codec_error_t *err);

/* --- HELLO [login, password] --- */

/* Pack HELLO [login, password], both as str. 0 or -1. */
int message_pack_hello(msgpack_packer *pk, const char *login, size_t login_len,
                       const char *password, size_t password_len);

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
