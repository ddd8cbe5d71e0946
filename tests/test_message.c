/*
 * test_message: ERROR text is valid UTF-8 with peer bytes escaped and at
 * most MESSAGE_MAX_ECHO bytes echoed; HELLO bodies are decoded or refused.
 */
#include <stdio.h>
#include <string.h>

#include "message.h"

static int g_checks, g_failed;
#include "check.h"

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

static void test_hello(void) {
    codec_limits_t lim;
    codec_limits_init(&lim);
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
    msgpack_zone_destroy(&zone);
}

int main(void) {
    test_echo();
    test_error();
    test_hello();
    printf("test_message: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
