/*
 * forward: the envelopes of forwarded calls and their results (see
 * forward.h). Decoding runs codec_check first, as every body does, so
 * msgpack-c only sees checked bytes.
 */
#include "forward.h"

#include <math.h>
#include <string.h>

/* room for the envelope's own fields around a body of max_body bytes */
#define ENVELOPE_ROOM 1024

static int s_pack_bytes(msgpack_packer *pk, const char *p, size_t n, int as_str) {
    if (as_str) return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, p, n);
    return msgpack_pack_bin(pk, n) || msgpack_pack_bin_body(pk, p, n);
}

int forward_pack(msgpack_packer *pk, const forward_msg_t *m) {
    int call = m->kind == FORWARD_CALL;
    if (msgpack_pack_array(pk, call ? 7 : 6) || msgpack_pack_int(pk, m->kind) ||
        s_pack_bytes(pk, m->server, m->server_len, 1) ||
        s_pack_bytes(pk, m->node, m->node_len, 1) ||
        s_pack_bytes(pk, (const char *)m->uuid, FRAME_UUID_SIZE, 0))
        return -1;
    if (call) {
        if (s_pack_bytes(pk, m->user, m->user_len, 0) || msgpack_pack_double(pk, m->timeout))
            return -1;
    } else if (msgpack_pack_int(pk, m->type)) {
        return -1;
    }
    return s_pack_bytes(pk, m->body, m->body_len, 0) ? -1 : 0;
}

/* A str or bin of min..max bytes: its view. */
static int s_bytes(const msgpack_object *o, size_t min, size_t max, const char **p, size_t *n) {
    if (o->type != MSGPACK_OBJECT_STR && o->type != MSGPACK_OBJECT_BIN) return 0;
    if (o->via.str.size < min || o->via.str.size > max) return 0;
    *n = o->via.str.size;
    *p = *n ? o->via.str.ptr : "";
    return 1;
}

static int s_int(const msgpack_object *o, int64_t *v) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
        *v = (int64_t)o->via.u64;
        return 1;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) { *v = o->via.i64; return 1; }
    return 0;
}

int forward_decode(const char *data, size_t len, const codec_limits_t *lim,
                   msgpack_zone *zone, forward_msg_t *out, codec_error_t *err) {
    codec_limits_t env = *lim;
    env.max_body = lim->max_body + ENVELOPE_ROOM;
    if (env.max_string < lim->max_body) env.max_string = lim->max_body;
    if (env.max_depth > 2) env.max_depth = 2;    /* an array of scalars */
    env.max_elements = 8;
    memset(out, 0, sizeof *out);
    if (codec_check(data, len, &env, err) < 0) return -1;
    msgpack_zone_clear(zone);
    msgpack_object obj;
    size_t off = 0;
    if (msgpack_unpack(data, len, &off, zone, &obj) != MSGPACK_UNPACK_SUCCESS)
        return codec_fail(err, "forwarded message could not be unpacked");
    int64_t kind = 0, type = 0;
    if (obj.type != MSGPACK_OBJECT_ARRAY || obj.via.array.size < 6 ||
        !s_int(&obj.via.array.ptr[0], &kind) || (kind != FORWARD_CALL && kind != FORWARD_RESULT) ||
        obj.via.array.size != (kind == FORWARD_CALL ? 7u : 6u))
        return codec_fail(err, "forwarded message is not a call [1, ...7] or a result [2, ...6]");
    const msgpack_object *f = obj.via.array.ptr;
    const char *uuid;
    size_t uuid_len;
    out->kind = (int)kind;
    if (!s_bytes(&f[1], 1, FORWARD_MAX_NAME, &out->server, &out->server_len))
        return codec_fail(err, "forwarded message: the server name is not 1 to %d bytes", FORWARD_MAX_NAME);
    if (!s_bytes(&f[2], 1, FORWARD_MAX_NAME, &out->node, &out->node_len))
        return codec_fail(err, "forwarded message: the node id is not 1 to %d bytes", FORWARD_MAX_NAME);
    if (!s_bytes(&f[3], FRAME_UUID_SIZE, FRAME_UUID_SIZE, &uuid, &uuid_len))
        return codec_fail(err, "forwarded message: the call id is not %d bytes", FRAME_UUID_SIZE);
    memcpy(out->uuid, uuid, FRAME_UUID_SIZE);
    const msgpack_object *body = &f[kind == FORWARD_CALL ? 6 : 5];
    if (!s_bytes(body, 0, lim->max_body, &out->body, &out->body_len))
        return codec_fail(err, "forwarded message: the body is not bytes of at most %zu", lim->max_body);
    if (kind == FORWARD_CALL) {
        if (!s_bytes(&f[4], 1, FRAME_MAX_ID, &out->user, &out->user_len))
            return codec_fail(err, "forwarded call: the user id is not 1 to %d bytes", FRAME_MAX_ID);
        double t;
        int64_t ti;
        if (f[5].type == MSGPACK_OBJECT_FLOAT64 || f[5].type == MSGPACK_OBJECT_FLOAT32) t = f[5].via.f64;
        else if (s_int(&f[5], &ti)) t = (double)ti;
        else t = -1;
        if (!(t >= 0 && t <= FORWARD_MAX_WAIT))          /* NaN fails too */
            return codec_fail(err, "forwarded call: the timeout is not 0 to %g seconds", FORWARD_MAX_WAIT);
        out->timeout = t;
    } else {
        if (!s_int(&f[4], &type) || (type != FRAME_OK && type != FRAME_ERROR))
            return codec_fail(err, "forwarded result: the type is not OK (1) or ERROR (16)");
        out->type = (int)type;
    }
    return 0;
}
