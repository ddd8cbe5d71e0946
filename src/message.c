/*
 * message: WORK, OK, ERROR and HELLO bodies (see message.h). No Lua runs
 * here and nothing is allocated but the caller's zone.
 *
 * UTF-8 validity follows RFC 3629: no overlong forms, no surrogates, nothing
 * past U+10FFFF. A strict decoder on the other side (Python's msgpack with
 * raw=False) raises on anything else, so anything else is escaped.
 */
#include "message.h"

#include <stdio.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t s_utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;          /* range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if (c == 0xED) { len = 3; hi = 0x9F; }          /* no surrogates */
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c == 0xF4) { len = 4; hi = 0x8F; }          /* up to U+10FFFF */
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else return 0;
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

/* Walk `in`: valid runs and escapes go to `emit` (NULL: just count). */
typedef int (*s_emit_fn)(void *arg, const char *p, size_t n);

static size_t s_walk(const char *in, size_t len, s_emit_fn emit, void *arg, int *rc) {
    const unsigned char *s = (const unsigned char *)in;
    size_t out = 0, run = 0, i = 0;
    while (i < len) {
        size_t k = s_utf8_seq(s + i, len - i);
        if (k) { i += k; continue; }
        if (i > run) {
            if (emit && *rc == 0) *rc = emit(arg, in + run, i - run);
            out += i - run;
        }
        char esc[5];
        snprintf(esc, sizeof esc, "\\x%02X", s[i]);
        if (emit && *rc == 0) *rc = emit(arg, esc, 4);
        out += 4;
        run = ++i;
    }
    if (len > run) {
        if (emit && *rc == 0) *rc = emit(arg, in + run, len - run);
        out += len - run;
    }
    return out;
}

size_t message_utf8_size(const char *in, size_t len) {
    int rc = 0;
    return s_walk(in, len, NULL, NULL, &rc);
}

size_t message_echo(char *out, const char *in, size_t len) {
    /* whole characters and escapes while they fit in MESSAGE_MAX_ECHO bytes */
    const unsigned char *u = (const unsigned char *)in;
    size_t i = 0, n = 0;
    while (i < len) {
        size_t k = s_utf8_seq(u + i, len - i);
        size_t w = k ? k : 4;
        if (n + w > MESSAGE_MAX_ECHO) break;
        if (k) memcpy(out + n, in + i, k);
        else snprintf(out + n, 5, "\\x%02X", u[i]);
        n += w;
        i += k ? k : 1;
    }
    if (i < len)
        n += (size_t)snprintf(out + n, MESSAGE_ECHO_SIZE - n, "... (%zu more bytes)", len - i);
    out[n] = '\0';
    return n;
}

static int s_to_packer(void *arg, const char *p, size_t n) {
    return msgpack_pack_str_body(arg, p, n);
}

static int s_pack_utf8(msgpack_packer *pk, const char *s, size_t n) {
    int rc = msgpack_pack_str(pk, message_utf8_size(s, n));
    if (rc == 0) s_walk(s, n, s_to_packer, pk, &rc);
    return rc;
}

int message_pack_error(msgpack_packer *pk, const char *name, size_t name_len,
                       const char *message, size_t message_len,
                       const char *traceback, size_t traceback_len) {
    int rc = msgpack_pack_array(pk, 3);
    if (rc == 0) rc = s_pack_utf8(pk, name, name_len);
    if (rc == 0) rc = s_pack_utf8(pk, message, message_len);
    if (rc == 0) rc = s_pack_utf8(pk, traceback ? traceback : "", traceback ? traceback_len : 0);
    return rc;
}

/* codec_check, then msgpack_unpack of the checked body into `zone` (cleared
 * first). 0, or -1 with err->message. */
static int s_unpack(const char *body, size_t len, const codec_limits_t *lim,
                    msgpack_zone *zone, msgpack_object *obj, codec_error_t *err,
                    const char *what) {
    size_t off = 0;
    if (codec_check(body, len, lim, err) < 0) return -1;
    msgpack_zone_clear(zone);
    if (msgpack_unpack(body, len, &off, zone, obj) != MSGPACK_UNPACK_SUCCESS) {
        snprintf(err->message, sizeof err->message, "%s body could not be unpacked", what);
        return -1;
    }
    return 0;
}

static int s_is_text(const msgpack_object *o) {
    return o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN;
}

/* The view of a str or bin (they share the layout of via.str). msgpack-c
 * gives an empty one a NULL pointer: it becomes "", so that no view is NULL. */
static void s_view(const msgpack_object *o, const char **ptr, size_t *len) {
    *len = o->via.str.size;
    *ptr = *len ? o->via.str.ptr : "";
}

int message_pack_work_head(msgpack_packer *pk, const char *name, size_t name_len,
                           uint32_t nargs) {
    int rc = msgpack_pack_array(pk, 3);
    if (rc == 0) rc = msgpack_pack_str_with_body(pk, name, name_len);
    if (rc == 0) rc = msgpack_pack_array(pk, nargs);
    return rc;
}

int message_decode_work(const char *body, size_t len, const codec_limits_t *lim,
                        msgpack_zone *zone, message_work_t *out, codec_error_t *err) {
    msgpack_object obj;
    memset(out, 0, sizeof *out);
    if (s_unpack(body, len, lim, zone, &obj, err, "WORK") < 0) return -1;
    const msgpack_object *it = obj.via.array.ptr;
    if (obj.type != MSGPACK_OBJECT_ARRAY || obj.via.array.size < 2 || obj.via.array.size > 3 ||
        !s_is_text(&it[0]) || it[1].type != MSGPACK_OBJECT_ARRAY ||
        (obj.via.array.size == 3 && it[2].type != MSGPACK_OBJECT_MAP &&
         it[2].type != MSGPACK_OBJECT_NIL)) {
        snprintf(err->message, sizeof err->message, "WORK body is not [name, args, kwargs]");
        return -1;
    }
    s_view(&it[0], &out->name, &out->name_len);
    out->args = &it[1].via.array;
    if (obj.via.array.size == 3 && it[2].type == MSGPACK_OBJECT_MAP && it[2].via.map.size > 0)
        out->kwargs = &it[2];
    return 0;
}

int message_decode_reply(int type, const char *body, size_t len, const codec_limits_t *lim,
                         msgpack_zone *zone, message_reply_t *out, codec_error_t *err) {
    static const char remote[] = "RemoteError";
    memset(out, 0, sizeof *out);
    out->name = remote;
    out->name_len = sizeof remote - 1;
    out->message = out->traceback = "";
    if (type != FRAME_OK && type != FRAME_ERROR) {
        snprintf(err->message, sizeof err->message, "reply type 0x%02x is not OK or ERROR",
                 (unsigned)type & 0xff);
        return -1;
    }
    if (s_unpack(body, len, lim, zone, &out->value, err, "reply") < 0) return -1;
    if (type == FRAME_OK || out->value.type != MSGPACK_OBJECT_ARRAY) return 0;
    /* ERROR: each part that is text replaces its default */
    const char **parts[3] = { &out->name, &out->message, &out->traceback };
    size_t *lens[3] = { &out->name_len, &out->message_len, &out->traceback_len };
    const msgpack_object_array *a = &out->value.via.array;
    for (uint32_t i = 0; i < a->size && i < 3; i++)
        if (s_is_text(&a->ptr[i])) s_view(&a->ptr[i], parts[i], lens[i]);
    return 0;
}

int message_pack_hello(msgpack_packer *pk, const char *login, size_t login_len,
                       const char *password, size_t password_len) {
    int rc = msgpack_pack_array(pk, 2);
    if (rc == 0) rc = msgpack_pack_str_with_body(pk, login, login_len);
    if (rc == 0) rc = msgpack_pack_str_with_body(pk, password, password_len);
    return rc;
}

int message_decode_hello(const char *body, size_t len, const codec_limits_t *lim,
                         msgpack_zone *zone, message_hello_t *out, const char **why) {
    codec_error_t err;
    msgpack_object obj;
    memset(out, 0, sizeof *out);
    *why = "HELLO is not [login, password]";
    if (s_unpack(body, len, lim, zone, &obj, &err, "HELLO") < 0 ||
        obj.type != MSGPACK_OBJECT_ARRAY || obj.via.array.size != 2)
        return -1;
    const msgpack_object *f = obj.via.array.ptr;
    for (int i = 0; i < 2; i++) {
        if (!s_is_text(&f[i])) return -1;
        if (f[i].via.str.size > MESSAGE_MAX_HELLO_FIELD) {
            *why = "HELLO login or password over 1024 bytes";
            return -1;
        }
    }
    s_view(&f[0], &out->login, &out->login_len);
    s_view(&f[1], &out->password, &out->password_len);
    return 0;
}
