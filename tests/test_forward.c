/*
 * test_forward: the envelopes nodes of a cluster exchange. A call and a
 * result pack and decode back to the same fields, bodies byte for byte
 * (NUL and 0xff included); every field is refused with its own message one
 * step past its limit and accepted at it.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "forward.h"

static int g_checks, g_failed;
#include "check.h"

static codec_limits_t g_lim;
static msgpack_zone g_zone;
static msgpack_sbuffer g_sb;
static msgpack_packer g_pk;
static char g_big[600];

static const uint8_t UUID[FRAME_UUID_SIZE] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff };

static forward_msg_t s_call(void) {
    forward_msg_t m = { .kind = FORWARD_CALL, .server = "svc", .server_len = 3,
                        .node = "node-a", .node_len = 6, .user = "al\0ice", .user_len = 6,
                        .timeout = 2.5, .body = "\x93\xa1x\x90\x80\xff", .body_len = 6 };
    memcpy(m.uuid, UUID, sizeof UUID);
    return m;
}

static int s_pack(const forward_msg_t *m) {
    g_sb.size = 0;
    return forward_pack(&g_pk, m);
}

/* decode what was packed; 0 or -1, with the message in *why */
static int s_decode(forward_msg_t *out, char *why, size_t why_len) {
    codec_error_t err = { "" };
    int rc = forward_decode(g_sb.data, g_sb.size, &g_lim, &g_zone, out, &err);
    snprintf(why, why_len, "%s", rc < 0 ? err.message : "");
    return rc;
}

/* packing `m` gives a message refused with exactly `want` */
static int s_refused(const forward_msg_t *m, const char *want) {
    forward_msg_t out;
    char why[200];
    if (s_pack(m) < 0) return 0;
    int rc = s_decode(&out, why, sizeof why);
    if (rc == 0 || strcmp(why, want) != 0) {
        printf("  got rc %d, '%s'\n", rc, why);
        return 0;
    }
    return 1;
}

static int s_accepted(const forward_msg_t *m) {
    forward_msg_t out;
    char why[200];
    if (s_pack(m) < 0 || s_decode(&out, why, sizeof why) < 0) {
        printf("  refused: '%s'\n", why);
        return 0;
    }
    return 1;
}

static void test_round_trip(void) {
    forward_msg_t m = s_call(), out;
    char why[200];
    CHECK(s_pack(&m) == 0 && s_decode(&out, why, sizeof why) == 0, "a call decodes: %s", why);
    CHECK(out.kind == FORWARD_CALL && out.server_len == 3 && memcmp(out.server, "svc", 3) == 0,
          "its server");
    CHECK(out.node_len == 6 && memcmp(out.node, "node-a", 6) == 0, "its origin");
    CHECK(memcmp(out.uuid, UUID, sizeof UUID) == 0, "its uuid");
    CHECK(out.user_len == 6 && memcmp(out.user, "al\0ice", 6) == 0, "its user, NUL kept");
    CHECK(out.timeout == 2.5, "its timeout");
    CHECK(out.body_len == 6 && memcmp(out.body, "\x93\xa1x\x90\x80\xff", 6) == 0, "its body, byte for byte");

    forward_msg_t r = { .kind = FORWARD_RESULT, .server = "svc", .server_len = 3, .node = "node-b",
                        .node_len = 6, .type = FRAME_ERROR, .body = "", .body_len = 0 };
    memcpy(r.uuid, UUID, sizeof UUID);
    CHECK(s_pack(&r) == 0 && s_decode(&out, why, sizeof why) == 0, "a result decodes: %s", why);
    CHECK(out.kind == FORWARD_RESULT && out.type == FRAME_ERROR && out.body_len == 0 &&
          out.body != NULL && out.node_len == 6 && memcmp(out.node, "node-b", 6) == 0,
          "its fields; an empty body is a view, not NULL");
    r.type = FRAME_OK;
    CHECK(s_accepted(&r), "an OK result");
}

static void test_limits(void) {
    forward_msg_t m = s_call();
    memset(g_big, 'n', sizeof g_big);

    m.server = g_big; m.server_len = FORWARD_MAX_NAME;
    CHECK(s_accepted(&m), "a server name of 255 bytes");
    m.server_len = FORWARD_MAX_NAME + 1;
    CHECK(s_refused(&m, "forwarded message: the server name is not 1 to 255 bytes"), "256 bytes");
    m.server_len = 0;
    CHECK(s_refused(&m, "forwarded message: the server name is not 1 to 255 bytes"), "empty");

    m = s_call();
    m.node = g_big; m.node_len = FORWARD_MAX_NAME;
    CHECK(s_accepted(&m), "a node id of 255 bytes");
    m.node_len = FORWARD_MAX_NAME + 1;
    CHECK(s_refused(&m, "forwarded message: the node id is not 1 to 255 bytes"), "256 bytes");

    m = s_call();
    m.user = g_big; m.user_len = FRAME_MAX_ID;
    CHECK(s_accepted(&m), "a user id of 255 bytes");
    m.user_len = FRAME_MAX_ID + 1;
    CHECK(s_refused(&m, "forwarded call: the user id is not 1 to 255 bytes"), "256 bytes");
    m.user_len = 0;
    CHECK(s_refused(&m, "forwarded call: the user id is not 1 to 255 bytes"), "empty");

    m = s_call();
    m.timeout = FORWARD_MAX_WAIT;
    CHECK(s_accepted(&m), "a timeout at the bound");
    m.timeout = 0;
    CHECK(s_accepted(&m), "a timeout of 0");
    const char *t_why = "forwarded call: the timeout is not 0 to 1e+09 seconds";
    m.timeout = FORWARD_MAX_WAIT * 1.0000001;
    CHECK(s_refused(&m, t_why), "past the bound");
    m.timeout = -0.001;
    CHECK(s_refused(&m, t_why), "negative");
    m.timeout = NAN;
    CHECK(s_refused(&m, t_why), "NaN");

    g_lim.max_body = 64;
    m = s_call();
    m.body = g_big; m.body_len = 64;
    CHECK(s_accepted(&m), "a body of max_body bytes");
    m.body_len = 65;
    CHECK(s_refused(&m, "forwarded message: the body is not bytes of at most 64"), "one byte more");
    codec_limits_init(&g_lim);
}

/* hand-made messages no packer of ours writes */
/* a literal and its length, without the terminating NUL */
#define B(s) s, sizeof s - 1

static void test_shapes(void) {
    static const struct { const char *bytes; size_t len; const char *why; } rows[] = {
        { B("\x90"), "forwarded message is not a call [1, ...7] or a result [2, ...6]" },
        { B("\x96\x03\xa1s\xa1n\xc4\x10" "0123456789abcdef\x01\xc4\x00"),
          "forwarded message is not a call [1, ...7] or a result [2, ...6]" },
        /* a result of 7 fields, a call of 6 */
        { B("\x97\x02\xa1s\xa1n\xc4\x10" "0123456789abcdef\x01\xc4\x00\xc0"),
          "forwarded message is not a call [1, ...7] or a result [2, ...6]" },
        { B("\x96\x01\xa1s\xa1n\xc4\x10" "0123456789abcdef\xa1u\xc4\x00"),
          "forwarded message is not a call [1, ...7] or a result [2, ...6]" },
        /* uuid of 15 bytes */
        { B("\x96\x02\xa1s\xa1n\xc4\x0f" "0123456789abcde\x01\xc4\x00"),
          "forwarded message: the call id is not 16 bytes" },
        /* type 3 */
        { B("\x96\x02\xa1s\xa1n\xc4\x10" "0123456789abcdef\x03\xc4\x00"),
          "forwarded result: the type is not OK (1) or ERROR (16)" },
        /* a body that is an array */
        { B("\x96\x02\xa1s\xa1n\xc4\x10" "0123456789abcdef\x01\x90"),
          "forwarded message: the body is not bytes of at most 16777216" },
        /* a timeout that is text */
        { B("\x97\x01\xa1s\xa1n\xc4\x10" "0123456789abcdef\xa1u\xa1t\xc4\x00"),
          "forwarded call: the timeout is not 0 to 1e+09 seconds" },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        forward_msg_t out;
        codec_error_t err = { "" };
        int rc = forward_decode(rows[i].bytes, rows[i].len, &g_lim, &g_zone, &out, &err);
        CHECK(rc < 0 && strcmp(err.message, rows[i].why) == 0, "row %zu: got %d '%s'", i, rc, err.message);
    }
    /* an integer timeout is a timeout; trailing bytes are not a message */
    static const char whole[] = "\x97\x01\xa1s\xa1n\xc4\x10" "0123456789abcdef\xa1u\x05\xc4\x00";
    forward_msg_t out;
    codec_error_t err = { "" };
    CHECK(forward_decode(whole, sizeof whole - 1, &g_lim, &g_zone, &out, &err) == 0 && out.timeout == 5,
          "an integer timeout: %s", err.message);
    CHECK(forward_decode(whole, sizeof whole, &g_lim, &g_zone, &out, &err) < 0, "a trailing byte");
}

int main(void) {
    codec_limits_init(&g_lim);
    msgpack_zone_init(&g_zone, 1024);
    msgpack_sbuffer_init(&g_sb);
    msgpack_packer_init(&g_pk, &g_sb, msgpack_sbuffer_write);
    test_round_trip();
    test_limits();
    test_shapes();
    msgpack_sbuffer_destroy(&g_sb);
    msgpack_zone_destroy(&g_zone);
    printf("test_forward: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
