/*
 * fuzz_hello: message_decode_hello() over any HELLO body, and the ERROR
 * text the host writes from any peer bytes (message_echo,
 * message_pack_error).
 *
 * Invariants: an accepted HELLO is a msgpack array of two str or bin of at
 * most MESSAGE_MAX_HELLO_FIELD bytes whose views lie inside the body; a
 * refusal says why. The echo of the input is valid UTF-8 (message_utf8_size
 * of it is its own length) and at most MESSAGE_MAX_ECHO bytes plus the note
 * on the cut; an ERROR packed from the input unpacks as three str.
 */
#include "fuzz.h"
#include "message.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static msgpack_zone zone;
    static int ready;
    if (!ready) { msgpack_zone_init(&zone, 4096); ready = 1; }
    codec_limits_t lim;
    codec_limits_init(&lim);
    const char *body = (const char *)data, *why = NULL;
    message_hello_t h;
    if (message_decode_hello(body, size, &lim, &zone, &h, &why) == 0) {
        FUZZ_ASSERT(h.login_len <= MESSAGE_MAX_HELLO_FIELD && h.password_len <= MESSAGE_MAX_HELLO_FIELD);
        FUZZ_ASSERT(h.login >= body && h.login + h.login_len <= body + size);
        FUZZ_ASSERT(h.password >= body && h.password + h.password_len <= body + size);
    } else {
        FUZZ_ASSERT(why && why[0]);
    }
    char echo[MESSAGE_ECHO_SIZE];
    size_t n = message_echo(echo, body, size);
    FUZZ_ASSERT(n < MESSAGE_ECHO_SIZE && echo[n] == '\0');
    FUZZ_ASSERT(n <= MESSAGE_MAX_ECHO + 40);
    FUZZ_ASSERT(message_utf8_size(echo, n) == n);           /* nothing left to escape */

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    FUZZ_ASSERT(message_pack_error(&pk, "ServiceNotFoundError", 20, body, size, body, size) == 0);
    msgpack_object o;
    size_t off = 0;
    msgpack_zone_clear(&zone);
    FUZZ_ASSERT(msgpack_unpack(sb.data, sb.size, &off, &zone, &o) == MSGPACK_UNPACK_SUCCESS);
    FUZZ_ASSERT(o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size == 3);
    for (int i = 0; i < 3; i++) {
        const msgpack_object *s = &o.via.array.ptr[i];
        FUZZ_ASSERT(s->type == MSGPACK_OBJECT_STR);
        FUZZ_ASSERT(message_utf8_size(s->via.str.ptr, s->via.str.size) == s->via.str.size);
    }
    msgpack_sbuffer_destroy(&sb);
    return 0;
}
