/*
 * fuzz_hello: message.c's decoders over any body (HELLO, WORK, OK, ERROR),
 * and the ERROR text the host writes from any peer bytes (message_echo,
 * message_pack_error).
 *
 * Invariants: an accepted HELLO is a msgpack array of two str or bin of at
 * most MESSAGE_MAX_HELLO_FIELD bytes whose views lie inside the body (an
 * empty view is "", never NULL); a
 * refusal says why. An accepted WORK has its name inside the body, an args
 * array and kwargs NULL or a non-empty map, and packs back (through
 * message_pack_work_head) to a WORK that decodes the same. OK and ERROR
 * accept exactly what codec_check accepts (ERROR is lenient on shape); an
 * ERROR part is a view inside the body or its default. The echo of the
 * input is valid UTF-8 (message_utf8_size of it is its own length) and at
 * most MESSAGE_MAX_ECHO bytes plus the note on the cut; an ERROR packed
 * from the input unpacks as three str.
 */
#include "fuzz.h"
#include "message.h"

#include <string.h>

/* a view of the body; an empty one may be any non-NULL pointer ("") */
static int s_inside(const char *p, size_t n, const char *body, size_t size) {
    return p != NULL && (n == 0 || (p >= body && p + n <= body + size));
}

static void s_work(const char *body, size_t size, const codec_limits_t *lim, msgpack_zone *zone) {
    codec_error_t err = { "" };
    message_work_t w;
    if (message_decode_work(body, size, lim, zone, &w, &err) < 0) {
        FUZZ_ASSERT(err.message[0]);
        return;
    }
    FUZZ_ASSERT(s_inside(w.name, w.name_len, body, size) && w.args);
    FUZZ_ASSERT(!w.kwargs || (w.kwargs->type == MSGPACK_OBJECT_MAP && w.kwargs->via.map.size > 0));
    /* pack it back as a caller would; it decodes to the same call */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = message_pack_work_head(&pk, w.name, w.name_len, w.args->size);
    for (uint32_t i = 0; i < w.args->size && rc == 0; i++)
        rc = msgpack_pack_object(&pk, w.args->ptr[i]);
    if (rc == 0) rc = w.kwargs ? msgpack_pack_object(&pk, *w.kwargs) : msgpack_pack_map(&pk, 0);
    FUZZ_ASSERT(rc == 0);
    const char *name = w.name;
    size_t name_len = w.name_len;
    uint32_t nargs = w.args->size;
    int kwargs = w.kwargs != NULL;
    /* a fresh zone: `w` still points into the other one */
    msgpack_zone z2;
    msgpack_zone_init(&z2, 4096);
    FUZZ_ASSERT(message_decode_work(sb.data, sb.size, lim, &z2, &w, &err) == 0);
    FUZZ_ASSERT(w.name_len == name_len && memcmp(w.name, name, name_len) == 0);
    FUZZ_ASSERT(w.args->size == nargs && (w.kwargs != NULL) == kwargs);
    msgpack_zone_destroy(&z2);
    msgpack_sbuffer_destroy(&sb);
}

static void s_reply(const char *body, size_t size, const codec_limits_t *lim, msgpack_zone *zone) {
    codec_error_t err = { "" }, check;
    message_reply_t r;
    int checked = codec_check(body, size, lim, &check) == 0;
    int ok = message_decode_reply(FRAME_OK, body, size, lim, zone, &r, &err) == 0;
    FUZZ_ASSERT(ok == checked);
    FUZZ_ASSERT(ok || strcmp(err.message, check.message) == 0);
    ok = message_decode_reply(FRAME_ERROR, body, size, lim, zone, &r, &err) == 0;
    FUZZ_ASSERT(ok == checked);
    if (!ok) return;
    FUZZ_ASSERT(s_inside(r.name, r.name_len, body, size) ||
                (r.name_len == 11 && memcmp(r.name, "RemoteError", 11) == 0));
    FUZZ_ASSERT(s_inside(r.message, r.message_len, body, size));
    FUZZ_ASSERT(s_inside(r.traceback, r.traceback_len, body, size));
}

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
        FUZZ_ASSERT(s_inside(h.login, h.login_len, body, size));
        FUZZ_ASSERT(s_inside(h.password, h.password_len, body, size));
    } else {
        FUZZ_ASSERT(why && why[0]);
    }
    s_work(body, size, &lim, &zone);
    s_reply(body, size, &lim, &zone);

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
