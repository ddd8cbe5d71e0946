/*
 * test_message: every body message.c packs or decodes. ERROR text is valid
 * UTF-8 with peer bytes escaped and at most MESSAGE_MAX_ECHO bytes echoed;
 * WORK, OK, ERROR and HELLO bodies are decoded into views or refused with
 * the exact message the host sends; packed bodies equal, byte for byte,
 * what Python's msgpack.packb makes of the same value.
 */
#include <stdio.h>
#include <string.h>

#include "message.h"

static int g_checks, g_failed;
#include "check.h"

/* A literal and its length, without the terminating NUL. */
#define S_BODY(s) s, sizeof s - 1

static codec_limits_t g_lim;
static msgpack_zone g_zone;
static codec_error_t g_err;
static msgpack_sbuffer g_sb;
static msgpack_packer g_pk;

static void s_reset_packer(void) {
    g_sb.size = 0;
}

/* the packed bytes equal `want` */
static int s_packed(const char *want, size_t len) {
    return g_sb.size == len && memcmp(g_sb.data, want, len) == 0;
}

static int s_is(const char *p, size_t len, const char *want) {
    return len == strlen(want) && memcmp(p, want, len) == 0;
}

/* decode_work refuses `body` with exactly `why` */
static int s_work_refused(const char *body, size_t len, const char *why) {
    message_work_t w;
    memset(&g_err, 0, sizeof g_err);
    int rc = message_decode_work(body, len, &g_lim, &g_zone, &w, &g_err);
    if (rc == 0 || strcmp(g_err.message, why) != 0) {
        printf("  got rc %d, '%s'\n", rc, g_err.message);
        return 0;
    }
    return 1;
}

static void test_echo(void) {
    char out[MESSAGE_ECHO_SIZE];
    size_t n = message_echo(out, "hello", 5);
    CHECK(n == 5 && strcmp(out, "hello") == 0, "valid text passes as it is");
    n = message_echo(out, "a\xff\xc3\xa9z", 5);
    CHECK(strcmp(out, "a\\xFF\xc3\xa9z") == 0, "invalid bytes escaped, valid UTF-8 kept: %s", out);
    n = message_echo(out, "\xed\xa0\x80", 3);
    CHECK(strcmp(out, "\\xED\\xA0\\x80") == 0, "a surrogate is not UTF-8: %s", out);
    char big[4096];
    memset(big, 'a', sizeof big);
    n = message_echo(out, big, MESSAGE_MAX_ECHO);
    CHECK(n == MESSAGE_MAX_ECHO, "at the limit: all of it (%zu)", n);
    n = message_echo(out, big, MESSAGE_MAX_ECHO + 1);
    CHECK(strstr(out, "... (1 more bytes)") && n < MESSAGE_MAX_ECHO + 32, "one past: cut, said so");
    memset(big, 0xff, sizeof big);
    n = message_echo(out, big, sizeof big);
    CHECK(n <= MESSAGE_MAX_ECHO + 32 && message_utf8_size(out, n) == n,
          "4 KiB of bad bytes: at most 1 KiB of escapes, valid (%zu)", n);
}

static void test_error(void) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    CHECK(message_pack_error(&pk, "LuaError", 8, "x\x80y", 3, "tb", 2) == 0, "packed");
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object o;
    size_t off = 0;
    CHECK(msgpack_unpack(sb.data, sb.size, &off, &zone, &o) == MSGPACK_UNPACK_SUCCESS &&
          o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size == 3, "an array of three");
    const msgpack_object *m = &o.via.array.ptr[1];
    CHECK(m->type == MSGPACK_OBJECT_STR && m->via.str.size == 6 &&
          memcmp(m->via.str.ptr, "x\\x80y", 6) == 0, "the message escaped, a str");
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&sb);
}

/* ['hello', ['Charly'], {}] by Python's msgpack.packb */
static const char s_work_hello[] = "\x93\xa5" "hello" "\x91\xa6" "Charly" "\x80";

static void test_work_decode(void) {
    message_work_t w;
    int rc = message_decode_work(S_BODY(s_work_hello), &g_lim, &g_zone, &w, &g_err);
    CHECK(rc == 0 && s_is(w.name, w.name_len, "hello") && w.args->size == 1 &&
          w.args->ptr[0].type == MSGPACK_OBJECT_STR &&
          s_is(w.args->ptr[0].via.str.ptr, w.args->ptr[0].via.str.size, "Charly") &&
          w.kwargs == NULL, "[name, [arg], {}]: an empty kwargs map is no kwargs");
    CHECK(rc == 0 && w.name == s_work_hello + 2, "the name is a view into the body");

    /* ['a.b', [1, None, True], {'k': 2}] by Python */
    rc = message_decode_work(S_BODY("\x93\xa3" "a.b" "\x93\x01\xc0\xc3\x81\xa1k\x02"), &g_lim,
                             &g_zone, &w, &g_err);
    CHECK(rc == 0 && s_is(w.name, w.name_len, "a.b") && w.args->size == 3 &&
          w.args->ptr[1].type == MSGPACK_OBJECT_NIL && w.kwargs &&
          w.kwargs->type == MSGPACK_OBJECT_MAP && w.kwargs->via.map.size == 1 &&
          w.kwargs->via.map.ptr[0].val.via.u64 == 2, "kwargs: the map");
    CHECK(message_decode_work(S_BODY("\x92\xa1x\x90"), &g_lim, &g_zone, &w, &g_err) == 0 &&
          w.args->size == 0 && w.kwargs == NULL, "[name, []]: kwargs absent");
    CHECK(message_decode_work(S_BODY("\x93\xa1x\x90\xc0"), &g_lim, &g_zone, &w, &g_err) == 0 &&
          w.kwargs == NULL, "[name, [], nil]: kwargs nil");
    CHECK(message_decode_work(S_BODY("\x92\xa0\x90"), &g_lim, &g_zone, &w, &g_err) == 0 &&
          w.name != NULL && w.name_len == 0, "an empty name is \"\", not NULL");
    CHECK(message_decode_work(S_BODY("\x93\xc4\x02\xff\xfe\x90\x80"), &g_lim, &g_zone, &w,
                              &g_err) == 0 && w.name_len == 2 &&
          memcmp(w.name, "\xff\xfe", 2) == 0, "a bin name is a name");
}

static void test_work_refused(void) {
    const char *shape = "WORK body is not [name, args, kwargs]";
    CHECK(s_work_refused(S_BODY("\x2a"), shape), "not an array");
    CHECK(s_work_refused(S_BODY("\x80"), shape), "a map");
    CHECK(s_work_refused(S_BODY("\x91\xa1x"), shape), "an array of 1");
    CHECK(s_work_refused(S_BODY("\x94\xa1x\x90\x80\xc0"), shape), "an array of 4");
    CHECK(s_work_refused(S_BODY("\x93\x01\x90\x80"), shape), "name an integer");
    CHECK(s_work_refused(S_BODY("\x93\xc0\x90\x80"), shape), "name nil");
    CHECK(s_work_refused(S_BODY("\x93\x90\x90\x80"), shape), "name an array");
    CHECK(s_work_refused(S_BODY("\x93\xa1x\x80\x80"), shape), "args a map");
    CHECK(s_work_refused(S_BODY("\x93\xa1x\xa1y\x80"), shape), "args a str");
    CHECK(s_work_refused(S_BODY("\x92\xa1x\xc0"), shape), "args nil");
    CHECK(s_work_refused(S_BODY("\x93\xa1x\x90\x90"), shape), "kwargs an array");
    CHECK(s_work_refused(S_BODY("\x93\xa1x\x90\x01"), shape), "kwargs an integer");
    CHECK(s_work_refused(S_BODY("\x93\xa1x\x90\xa0"), shape), "kwargs a str");

    /* what codec_check refuses, with its message */
    CHECK(s_work_refused("", 0, "msgpack: empty body"), "empty");
    CHECK(s_work_refused(S_BODY("\x93\xa5" "hel"),
                         "msgpack: string of 5 bytes at offset 1 passes the end of the body"),
          "truncated inside the name");
    CHECK(s_work_refused(S_BODY("\x93\xa1x\x90"), "msgpack: truncated at offset 4"),
          "truncated: kwargs missing from an array of 3");
    CHECK(s_work_refused(S_BODY("\x93\xa1x\x91"),
                         "msgpack: array of 1 elements at offset 3 passes the end of the body"),
          "truncated: an argument missing");
    CHECK(s_work_refused(S_BODY("\x93\xa5" "hello" "\x91\xa6" "Charly" "\x80\xc0"),
                         "msgpack: 1 trailing bytes after the value at offset 16"),
          "trailing bytes");
    CHECK(s_work_refused(S_BODY("\x93\xa1x\xc1\x80"), "msgpack: reserved byte 0xc1 at offset 3"),
          "reserved byte");
    CHECK(s_work_refused(S_BODY("\x93\xa1x\xdd\xff\xff\xff\xff\x80"),
                         "msgpack: array of 4294967295 elements at offset 3 passes the end of the body"),
          "a lying count");
}

static void test_work_limits(void) {
    message_work_t w;
    codec_limits_t saved = g_lim;
    /* values: the body 1, its items 3, the one argument 1 */
    g_lim.max_elements = 5;
    CHECK(message_decode_work(S_BODY(s_work_hello), &g_lim, &g_zone, &w, &g_err) == 0,
          "5 values, max_elements 5: at the limit");
    g_lim.max_elements = 4;
    CHECK(s_work_refused(S_BODY(s_work_hello), "msgpack: more than 4 values in the body at offset 7"),
          "max_elements 4: one past");
    g_lim = saved;
    g_lim.max_string = 6;
    CHECK(message_decode_work(S_BODY(s_work_hello), &g_lim, &g_zone, &w, &g_err) == 0,
          "a 6-byte argument, max_string 6: at the limit");
    g_lim.max_string = 5;
    CHECK(s_work_refused(S_BODY(s_work_hello),
                         "msgpack: string of 6 bytes at offset 8 passes the limit of 5 bytes"),
          "max_string 5: one past");
    g_lim = saved;
    g_lim.max_depth = 2;
    CHECK(message_decode_work(S_BODY(s_work_hello), &g_lim, &g_zone, &w, &g_err) == 0,
          "2 levels, max_depth 2: at the limit");
    g_lim.max_depth = 1;
    CHECK(s_work_refused(S_BODY(s_work_hello), "msgpack: nesting deeper than 1 levels at offset 7"),
          "max_depth 1: one past");
    g_lim = saved;
    g_lim.max_body = 16;
    CHECK(message_decode_work(S_BODY(s_work_hello), &g_lim, &g_zone, &w, &g_err) == 0,
          "16 bytes, max_body 16: at the limit");
    g_lim.max_body = 15;
    CHECK(s_work_refused(S_BODY(s_work_hello), "msgpack: body of 16 bytes passes the limit of 15 bytes"),
          "max_body 15: one past");
    g_lim = saved;
}

static void test_work_pack(void) {
    message_work_t w;
    s_reset_packer();
    CHECK(message_pack_work_head(&g_pk, "hello", 5, 1) == 0 &&
          msgpack_pack_str_with_body(&g_pk, "Charly", 6) == 0 && msgpack_pack_map(&g_pk, 0) == 0,
          "packed");
    CHECK(s_packed(S_BODY(s_work_hello)), "WORK hello('Charly') as Python packs it");
    CHECK(message_decode_work(g_sb.data, g_sb.size, &g_lim, &g_zone, &w, &g_err) == 0 &&
          s_is(w.name, w.name_len, "hello") && w.args->size == 1 && w.kwargs == NULL,
          "and decodes back");
    s_reset_packer();
    CHECK(message_pack_work_head(&g_pk, "a.b", 3, 0) == 0 && msgpack_pack_map(&g_pk, 1) == 0 &&
          msgpack_pack_str_with_body(&g_pk, "k", 1) == 0 && msgpack_pack_int(&g_pk, 2) == 0,
          "packed, kwargs");
    CHECK(s_packed(S_BODY("\x93\xa3" "a.b" "\x90\x81\xa1k\x02")), "WORK a.b(k=2) as Python packs it");
    CHECK(message_decode_work(g_sb.data, g_sb.size, &g_lim, &g_zone, &w, &g_err) == 0 &&
          w.args->size == 0 && w.kwargs && w.kwargs->via.map.size == 1, "and decodes back");
}

/* decode_reply accepts an ERROR and reads these parts */
static int s_error_parts(const char *body, size_t len, const char *name, const char *message,
                         const char *traceback) {
    message_reply_t r;
    int rc = message_decode_reply(FRAME_ERROR, body, len, &g_lim, &g_zone, &r, &g_err);
    return rc == 0 && s_is(r.name, r.name_len, name) && s_is(r.message, r.message_len, message) &&
           s_is(r.traceback, r.traceback_len, traceback);
}

static void test_reply(void) {
    message_reply_t r;
    CHECK(message_decode_reply(FRAME_OK, S_BODY("\x2a"), &g_lim, &g_zone, &r, &g_err) == 0 &&
          r.value.type == MSGPACK_OBJECT_POSITIVE_INTEGER && r.value.via.u64 == 42, "OK 42");
    CHECK(message_decode_reply(FRAME_OK, S_BODY("\xc0"), &g_lim, &g_zone, &r, &g_err) == 0 &&
          r.value.type == MSGPACK_OBJECT_NIL, "OK nil");
    CHECK(message_decode_reply(FRAME_OK, S_BODY("\x92\xa2hi\x81\x01\x02"), &g_lim, &g_zone, &r,
                               &g_err) == 0 && r.value.type == MSGPACK_OBJECT_ARRAY &&
          r.value.via.array.size == 2 && r.value.via.array.ptr[1].type == MSGPACK_OBJECT_MAP,
          "OK ['hi', {1: 2}]");
    CHECK(message_decode_reply(FRAME_OK, S_BODY("\x92\xa2h"), &g_lim, &g_zone, &r, &g_err) < 0 &&
          strcmp(g_err.message, "msgpack: string of 2 bytes at offset 1 passes the end of the body") == 0,
          "OK truncated: %s", g_err.message);
    CHECK(message_decode_reply(FRAME_OK, S_BODY("\x2a\x2a"), &g_lim, &g_zone, &r, &g_err) < 0 &&
          strcmp(g_err.message, "msgpack: 1 trailing bytes after the value at offset 1") == 0,
          "OK trailing bytes: %s", g_err.message);
    codec_limits_t saved = g_lim;
    g_lim.max_depth = 1;
    CHECK(message_decode_reply(FRAME_OK, S_BODY("\x91\x90"), &g_lim, &g_zone, &r, &g_err) < 0 &&
          strcmp(g_err.message, "msgpack: nesting deeper than 1 levels at offset 1") == 0,
          "OK over max_depth: %s", g_err.message);
    g_lim = saved;
    CHECK(message_decode_reply(FRAME_WORK, S_BODY("\x2a"), &g_lim, &g_zone, &r, &g_err) < 0 &&
          strcmp(g_err.message, "reply type 0x03 is not OK or ERROR") == 0, "WORK is not a reply");

    /* ['ValueError', 'bad input', 'tb'] by Python */
    static const char python[] = "\x93\xaa" "ValueError" "\xa9" "bad input" "\xa2" "tb";
    CHECK(s_error_parts(S_BODY(python), "ValueError", "bad input", "tb"), "ERROR, all three");
    CHECK(s_error_parts(S_BODY("\x93\xc4\x01N\xc4\x01m\xc4\x01t"), "N", "m", "t"), "bin parts");
    /* lenient: what is missing or not text keeps its default */
    CHECK(s_error_parts(S_BODY("\x2a"), "RemoteError", "", ""), "not an array: all defaults");
    CHECK(s_error_parts(S_BODY("\xa4oops"), "RemoteError", "", ""), "a str: all defaults");
    CHECK(s_error_parts(S_BODY("\x90"), "RemoteError", "", ""), "[]: all defaults");
    CHECK(s_error_parts(S_BODY("\x91\xa1N"), "N", "", ""), "[name]");
    CHECK(s_error_parts(S_BODY("\x93\xa0\xa0\xa0"), "", "", "") &&
          message_decode_reply(FRAME_ERROR, S_BODY("\x93\xa0\xa0\xa0"), &g_lim, &g_zone, &r,
                               &g_err) == 0 && r.name && r.message && r.traceback,
          "empty parts: empty, not NULL");
    CHECK(s_error_parts(S_BODY("\x92\x01\xa1m"), "RemoteError", "m", ""), "[1, message]");
    CHECK(s_error_parts(S_BODY("\x93\xc0\x90\xa1t"), "RemoteError", "", "t"), "[nil, [], tb]");
    CHECK(s_error_parts(S_BODY("\x94\xa1N\xa1m\xa1t\xa1x"), "N", "m", "t"), "a fourth part ignored");
    CHECK(message_decode_reply(FRAME_ERROR, S_BODY("\x93\xa1N\xa1"), &g_lim, &g_zone, &r, &g_err) < 0 &&
          strcmp(g_err.message, "msgpack: string of 1 bytes at offset 3 passes the end of the body") == 0,
          "ERROR truncated: refused all the same (%s)", g_err.message);

    /* what the host packs, it reads back; Python's bytes exactly */
    s_reset_packer();
    CHECK(message_pack_error(&g_pk, "ValueError", 10, "bad input", 9, "tb", 2) == 0 &&
          s_packed(S_BODY(python)), "ERROR packed as Python packs it");
    CHECK(s_error_parts(g_sb.data, g_sb.size, "ValueError", "bad input", "tb"), "and decoded back");
    s_reset_packer();
    CHECK(message_pack_error(&g_pk, "E", 1, "\xff", 1, NULL, 0) == 0 &&
          s_error_parts(g_sb.data, g_sb.size, "E", "\\xFF", ""), "escaped, no traceback: round trip");
}

static void test_hello(void) {
    codec_limits_t lim = g_lim;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    message_hello_t h;
    const char *why;
    const char ok[] = "\x92\xa5" "alice" "\xc4\x03" "pwd";     /* [str, bin] */
    CHECK(message_decode_hello(ok, sizeof ok - 1, &lim, &zone, &h, &why) == 0 &&
          h.login_len == 5 && memcmp(h.login, "alice", 5) == 0 && h.password_len == 3,
          "[login, password]");
    CHECK(message_decode_hello("\x2a", 1, &lim, &zone, &h, &why) < 0, "not an array: refused");
    CHECK(message_decode_hello("\x93\xa1" "a\xa1" "b\xa1" "c", 7, &lim, &zone, &h, &why) < 0,
          "three items: refused");
    static char body[2100];
    size_t n = 0;
    body[n++] = (char)0x92; body[n++] = (char)0xda; body[n++] = 0x04; body[n++] = 0x00;   /* str16 1024 */
    memset(body + n, 'a', 1024); n += 1024;
    body[n++] = (char)0xa0;
    CHECK(message_decode_hello(body, n, &lim, &zone, &h, &why) == 0, "a 1024-byte login: at the limit");
    body[3] = 0x01;                                                 /* 1025 */
    memmove(body + 4 + 1025, body + 4 + 1024, 1);
    body[4 + 1024] = 'a';
    CHECK(message_decode_hello(body, n + 1, &lim, &zone, &h, &why) < 0 && strstr(why, "1024"),
          "a 1025-byte login: refused");
    CHECK(message_decode_hello(S_BODY("\x92\xa1" "a\xa1"), &lim, &zone, &h, &why) < 0 &&
          strcmp(why, "HELLO is not [login, password]") == 0, "truncated: refused");
    CHECK(message_decode_hello(S_BODY("\x92\xa1" "a\xa1" "b\xc0"), &lim, &zone, &h, &why) < 0,
          "trailing bytes: refused");
    CHECK(message_decode_hello(S_BODY("\x92\xa1" "a\x01"), &lim, &zone, &h, &why) < 0,
          "a password that is not text: refused");

    /* ['alice', 'secret'] by Python */
    s_reset_packer();
    CHECK(message_pack_hello(&g_pk, "alice", 5, "secret", 6) == 0 &&
          s_packed(S_BODY("\x92\xa5" "alice" "\xa6" "secret")), "HELLO packed as Python packs it");
    CHECK(message_decode_hello(g_sb.data, g_sb.size, &lim, &zone, &h, &why) == 0 &&
          s_is(h.login, h.login_len, "alice") && s_is(h.password, h.password_len, "secret"),
          "and decoded back");
    msgpack_zone_destroy(&zone);
}

int main(void) {
    codec_limits_init(&g_lim);
    msgpack_zone_init(&g_zone, 1024);
    msgpack_sbuffer_init(&g_sb);
    msgpack_packer_init(&g_pk, &g_sb, msgpack_sbuffer_write);
    test_echo();
    test_error();
    test_work_decode();
    test_work_refused();
    test_work_limits();
    test_work_pack();
    test_reply();
    test_hello();
    msgpack_sbuffer_destroy(&g_sb);
    msgpack_zone_destroy(&g_zone);
    printf("test_message: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
