/*
 * test_workers_hop: WORK and REPLY on the workers' link, one part each
 * (no Lua, no host): over an inproc PAIR, every field comes back as sent,
 * ids of 255 bytes go and 256 are refused (EINVAL), empty user ids and
 * bodies and a 1 MiB body travel; a part shorter than its header, of
 * another kind, or whose ids' lengths pass its end is refused, at each
 * length from 0 to one past the header and at the exact end.
 */
#include "workers_hop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

static int g_checks, g_failed;

#include "check.h"

static void *g_ctx, *g_a, *g_b;

/* Send `hop` on a, receive it on b and parse it as `kind` into *out (its
 * views live in *part, which the caller closes). 0, or -1. */
static int s_roundtrip(const workers_hop_t *hop, char kind, zmq_msg_t *part, workers_hop_t *out) {
    zmq_msg_init(part);
    if (workers_hop_send(g_a, hop) < 0) return -1;
    if (zmq_msg_recv(part, g_b, 0) < 0) return -1;
    return workers_hop_parse(part, kind, out);
}

static void test_fields(void) {
    static const uint8_t uuid[FRAME_UUID_SIZE] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0xff };
    workers_hop_t hop = {
        .kind = 'W', .byte = 7, .serial = 0x0102030405060708ULL, .charged = 123456789,
        .uuid = uuid, .name = "service", .name_len = 7, .peer = "p\0q", .peer_len = 3,
        .user = "alice", .user_len = 5, .body = "\x93\xa5hello\x90\x80", .body_len = 9,
    }, got;
    zmq_msg_t part;
    CHECK(s_roundtrip(&hop, 'W', &part, &got) == 0, "a WORK goes and parses");
    CHECK(zmq_msg_size(&part) == WORKERS_HOP_HEADER + 7 + 3 + 5 + 9 && !zmq_msg_more(&part),
          "one part of header plus ids plus body (%zu)", zmq_msg_size(&part));
    CHECK(got.kind == 'W' && got.byte == 7 && got.serial == hop.serial && got.charged == hop.charged,
          "kind, byte, serial, charged");
    CHECK(memcmp(got.uuid, uuid, FRAME_UUID_SIZE) == 0, "uuid");
    CHECK(got.name_len == 7 && memcmp(got.name, "service", 7) == 0, "name");
    CHECK(got.peer_len == 3 && memcmp(got.peer, "p\0q", 3) == 0, "a binary routing id");
    CHECK(got.user_len == 5 && memcmp(got.user, "alice", 5) == 0, "user");
    CHECK(got.body_len == 9 && memcmp(got.body, hop.body, 9) == 0, "body");
    CHECK(workers_hop_parse(&part, 'R', &got) < 0, "a WORK is not a REPLY");
    zmq_msg_close(&part);

    workers_hop_t empty = { .kind = 'R', .byte = 1, .uuid = uuid, .name = "s", .name_len = 1,
                            .peer = "p", .peer_len = 1 };
    CHECK(s_roundtrip(&empty, 'R', &part, &got) == 0 && got.user_len == 0 && got.body_len == 0 &&
          zmq_msg_size(&part) == WORKERS_HOP_HEADER + 2, "no user id, no body");
    zmq_msg_close(&part);

    size_t big = 1u << 20;
    char *body = malloc(big);
    for (size_t i = 0; i < big; i++) body[i] = (char)(i * 31);
    workers_hop_t large = empty;
    large.body = body;
    large.body_len = big;
    CHECK(s_roundtrip(&large, 'R', &part, &got) == 0 && got.body_len == big &&
          memcmp(got.body, body, big) == 0, "a 1 MiB body");
    zmq_msg_close(&part);
    free(body);
}

static void test_limits(void) {
    static const uint8_t uuid[FRAME_UUID_SIZE];
    char id[FRAME_MAX_ID + 1];
    memset(id, 'i', sizeof id);
    workers_hop_t hop = { .kind = 'R', .uuid = uuid, .name = id, .name_len = FRAME_MAX_ID,
                          .peer = id, .peer_len = FRAME_MAX_ID, .user = id, .user_len = FRAME_MAX_ID,
                          .body = "b", .body_len = 1 }, got;
    zmq_msg_t part;
    CHECK(s_roundtrip(&hop, 'R', &part, &got) == 0 && got.name_len == FRAME_MAX_ID &&
          got.peer_len == FRAME_MAX_ID && got.user_len == FRAME_MAX_ID && got.body_len == 1 &&
          got.body[0] == 'b', "ids of %d bytes each", FRAME_MAX_ID);
    zmq_msg_close(&part);
    for (int which = 0; which < 3; which++) {
        workers_hop_t over = hop;
        if (which == 0) over.name_len++;
        if (which == 1) over.peer_len++;
        if (which == 2) over.user_len++;
        errno = 0;
        CHECK(workers_hop_send(g_a, &over) < 0 && errno == EINVAL, "id %d of %d bytes: EINVAL",
              which, FRAME_MAX_ID + 1);
    }
    zmq_msg_init(&part);
    CHECK(zmq_msg_recv(&part, g_b, ZMQ_DONTWAIT) < 0 && errno == EAGAIN, "nothing was sent for them");
    zmq_msg_close(&part);
}

/* A part of `len` bytes: kind 'W', ids' lengths as given, the rest zeros. */
static int s_parse_raw(size_t len, uint8_t n1, uint8_t n2, uint8_t n3, char kind) {
    zmq_msg_t part;
    zmq_msg_init_size(&part, len);
    char *p = zmq_msg_data(&part);
    memset(p, 0, len);
    if (len > 0) p[0] = 'W';
    if (len > 20) { p[18] = (char)n1; p[19] = (char)n2; p[20] = (char)n3; }
    workers_hop_t got;
    int rc = workers_hop_parse(&part, kind, &got);
    zmq_msg_close(&part);
    return rc;
}

static void test_malformed(void) {
    int short_ok = 0;
    for (size_t len = 0; len < WORKERS_HOP_HEADER; len++) short_ok += s_parse_raw(len, 0, 0, 0, 'W') == 0;
    CHECK(short_ok == 0, "every part shorter than the header is refused (%d taken)", short_ok);
    CHECK(s_parse_raw(WORKERS_HOP_HEADER, 0, 0, 0, 'W') == 0, "the header alone parses");
    CHECK(s_parse_raw(WORKERS_HOP_HEADER, 0, 0, 0, 'R') < 0, "another kind is refused");
    CHECK(s_parse_raw(WORKERS_HOP_HEADER + 6, 1, 2, 3, 'W') == 0, "ids ending at the part's end");
    CHECK(s_parse_raw(WORKERS_HOP_HEADER + 5, 1, 2, 3, 'W') < 0, "ids one byte past it: refused");
    CHECK(s_parse_raw(WORKERS_HOP_HEADER, 255, 255, 255, 'W') < 0, "ids of 765 bytes in none: refused");
}

int main(void) {
    g_ctx = zmq_ctx_new();
    g_a = zmq_socket(g_ctx, ZMQ_PAIR);
    g_b = zmq_socket(g_ctx, ZMQ_PAIR);
    if (zmq_bind(g_a, "inproc://hop") < 0 || zmq_connect(g_b, "inproc://hop") < 0) {
        fprintf(stderr, "test_workers_hop: cannot make the pair: %s\n", zmq_strerror(errno));
        return 1;
    }
    test_fields();
    test_limits();
    test_malformed();
    zmq_close(g_a);
    zmq_close(g_b);
    zmq_ctx_term(g_ctx);
    printf("test_workers_hop: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
