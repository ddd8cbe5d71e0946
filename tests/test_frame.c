/*
 * test_frame: pseud v1 framing over real ZeroMQ sockets (no loop, no Lua).
 *
 * A ROUTER with routing id "service" is bound on inproc://; a ROUTER client
 * ("client", ZMQ_PROBE_ROUTER) and a REQ client connect to it. The client
 * sends raw multipart messages so that every reason frame_decode() gives is
 * seen with its exact text, and with the uuid view set whenever a 16-byte
 * uuid stands at frame 3 (so an endpoint can answer). frame_send() is checked
 * both ways, towards a REQ peer, a FRAME_MAX_ID-byte routing id and an
 * unknown peer; a second context on tcp:// with a ZAP handler shows the
 * User-Id view (those checks fail on a KNOWN BUG in frame.c, marked where
 * they stand). Every wait is a bounded zmq_poll: nothing sleeps to synchronise.
 *
 * Each failed check prints one line (file:line: what was expected); the last
 * line is a summary and the exit status is non-zero when any check failed.
 */
#include "frame.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sys/time.h>

static int g_checks, g_failed;

#include "check.h"

#define WAIT_LIMIT  1.0               /* seconds: bound on every wait */
#define ADDRESS     "inproc://test-frame"

/* One part of a raw multipart message. */
typedef struct part { const void *data; size_t len; } part_t;
#define S(text)  { text, sizeof text - 1 }            /* a literal, no NUL */

static const uint8_t UUID[17] = {                     /* 16 bytes, one spare */
    0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x41, 0xd1,
    0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8, 0x99 };
#define U16  { UUID, 16 }
#define WORK S("\x03")

/* ---------------------------------------------------------------- helpers */

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *s_str(const char *s) { return s ? s : "(null)"; }

/* Is the view (data, len) exactly the C string `text`? */
static int s_is(const void *data, size_t len, const char *text)
{
    return data && len == strlen(text) && memcmp(data, text, len) == 0;
}

static void *s_socket(void *ctx, int type, const char *routing_id, int probe)
{
    void *s = zmq_socket(ctx, type);
    int zero = 0, one = 1;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (type == ZMQ_ROUTER)
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    if (routing_id)
        zmq_setsockopt(s, ZMQ_ROUTING_ID, routing_id, strlen(routing_id));
    if (probe)
        zmq_setsockopt(s, ZMQ_PROBE_ROUTER, &one, sizeof one);
    return s;
}

/* Send a raw multipart message. The first part may meet EHOSTUNREACH (a
 * ROUTER before the handshake) or EAGAIN: retry, polling in between, until
 * WAIT_LIMIT. Returns 0 or -1 with errno. */
static int s_send_parts(void *socket, const part_t *parts, int n)
{
    double deadline = s_now() + WAIT_LIMIT;
    for (;;) {
        int flags = ZMQ_DONTWAIT | (n > 1 ? ZMQ_SNDMORE : 0);
        if (zmq_send(socket, parts[0].data, parts[0].len, flags) >= 0) break;
        if ((errno != EHOSTUNREACH && errno != EAGAIN) || s_now() > deadline) return -1;
        zmq_pollitem_t item = { socket, 0, ZMQ_POLLIN | ZMQ_POLLOUT, 0 };
        zmq_poll(&item, 1, 10);
    }
    for (int i = 1; i < n; i++)
        if (zmq_send(socket, parts[i].data, parts[i].len, i + 1 < n ? ZMQ_SNDMORE : 0) < 0)
            return -1;
    return 0;
}

/* Wait (bounded) for a message and take it with frame_recv. 0 or -1. */
static int s_recv(void *socket, frame_message_t *m)
{
    memset(m, 0, sizeof *m);                    /* views NULL when nothing came */
    double deadline = s_now() + WAIT_LIMIT;
    for (;;) {
        if (frame_recv(socket, m) == 0) return 0;
        if (errno != EAGAIN || s_now() > deadline) return -1;
        zmq_pollitem_t item = { socket, 0, ZMQ_POLLIN, 0 };
        zmq_poll(&item, 1, 10);
    }
}

/* Nothing is waiting on `socket` (checked without blocking). */
static int s_quiet(void *socket)
{
    zmq_pollitem_t item = { socket, 0, ZMQ_POLLIN, 0 };
    return zmq_poll(&item, 1, 0) == 0;
}

/* Client sends ["service", parts...]; the service takes it and decodes it.
 * Returns the kind, or -1 (after a failed check) when nothing came. */
static int s_exchange(void *client, void *service, const part_t *parts, int n,
                      frame_message_t *m, int line)
{
    part_t all[40];
    memset(m, 0, sizeof *m);
    all[0] = (part_t)S("service");
    memcpy(all + 1, parts, (size_t)n * sizeof *parts);
    if (s_send_parts(client, all, n + 1) < 0) {
        CHECK(0, "(from line %d) client could not send: %s", line, zmq_strerror(errno));
        return -1;
    }
    if (s_recv(service, m) < 0) {
        CHECK(0, "(from line %d) service received nothing: %s", line, zmq_strerror(errno));
        return -1;
    }
    return (int)frame_decode(m);
}

/* ------------------------------------------------------------------ tests */

static void test_uuid_and_types(void)
{
    enum { N = 64 };
    uint8_t u[N][FRAME_UUID_SIZE];
    for (int i = 0; i < N; i++) {
        frame_new_uuid(u[i]);
        CHECK((u[i][6] >> 4) == 4, "uuid %d: version nibble 4 expected, got %d", i, u[i][6] >> 4);
        CHECK((u[i][8] & 0xc0) == 0x80, "uuid %d: variant bits 10 expected, got byte 0x%02x",
              i, u[i][8]);
    }
    int same = 0;
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            same += memcmp(u[i], u[j], FRAME_UUID_SIZE) == 0;
    CHECK(same == 0, "%d uuids all different expected, %d pairs equal", N, same);

    static const int known[] = { FRAME_OK, FRAME_HELLO, FRAME_WORK, FRAME_AUTHENTICATED,
                                 FRAME_HEARTBEAT, FRAME_ERROR, FRAME_UNAUTHORIZED };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        CHECK(frame_type_known(known[i]) == 1, "type 0x%02x known expected", known[i]);
    static const int unknown[] = { -1, 0x00, 0x05, 0x07, 0x0f, 0x12, 0xff, 0x103 };
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++)
        CHECK(frame_type_known(unknown[i]) == 0, "type 0x%02x unknown expected", unknown[i]);

    frame_message_t m;
    m.kept = 0;
    m.count = 0;
    CHECK(frame_decode(&m) == FRAME_KIND_INVALID && m.reason && strcmp(m.reason, "empty message") == 0,
          "no parts: INVALID 'empty message' expected, got '%s'", s_str(m.reason));
    frame_close(&m);
}

/* The probe the client sent on connect: [client, ""]. */
static void test_probe(void *service)
{
    frame_message_t m;
    CHECK(s_recv(service, &m) == 0, "the client's probe expected on the service");
    if (m.kept == 0) return;
    CHECK(m.count == 2 && m.kept == 2, "probe: 2 parts expected, got %d (%d kept)", m.count, m.kept);
    CHECK(frame_decode(&m) == FRAME_KIND_PROBE, "probe: FRAME_KIND_PROBE expected (reason '%s')",
          s_str(m.reason));
    CHECK(s_is(m.peer, m.peer_len, "client"), "probe: peer 'client' expected");
    CHECK(m.uuid == NULL && m.type == -1 && m.reason == NULL, "probe: no uuid, type or reason expected");
    frame_close(&m);
    frame_close(&m);                                    /* twice is safe */
    CHECK(m.kept == 0, "frame_close leaves kept 0, got %d", m.kept);
    CHECK(frame_recv(service, &m) == -1 && errno == EAGAIN,
          "frame_recv with nothing waiting: -1/EAGAIN expected");
    CHECK(m.kept == 0, "failed frame_recv keeps nothing, kept %d", m.kept);
}

static void test_well_formed(void *client, void *service)
{
    frame_message_t m;
    part_t msg[] = { S(""), S("v1"), U16, WORK, S("some body") };
    int kind = s_exchange(client, service, msg, 5, &m, __LINE__);
    CHECK(kind == FRAME_KIND_MESSAGE, "WORK: FRAME_KIND_MESSAGE expected, got %d ('%s')",
          kind, kind >= 0 ? s_str(m.reason) : "");
    if (kind < 0) return;
    CHECK(m.count == 6 && m.kept == 6, "WORK: 6 parts expected, got %d (%d kept)", m.count, m.kept);
    CHECK(s_is(m.peer, m.peer_len, "client"), "WORK: peer 'client' expected");
    CHECK(m.uuid && m.uuid_len == FRAME_UUID_SIZE && memcmp(m.uuid, UUID, 16) == 0,
          "WORK: the uuid sent expected (len %zu)", m.uuid_len);
    CHECK(m.type == FRAME_WORK, "WORK: type 3 expected, got %d", m.type);
    CHECK(s_is(m.body, m.body_len, "some body"), "WORK: body 'some body' expected (len %zu)",
          m.body_len);
    CHECK(m.reason == NULL, "WORK: no reason expected, got '%s'", s_str(m.reason));
    CHECK(m.user_id == NULL, "WORK over inproc (no ZAP): user_id NULL expected, got '%s'",
          s_str(m.user_id));
    CHECK(m.fd == -1, "WORK over inproc: no fd (-1) expected, got %d", m.fd);
    frame_close(&m);

    /* an empty body, each known type; frame_send from the client this time */
    static const int types[] = { FRAME_OK, FRAME_HELLO, FRAME_WORK, FRAME_AUTHENTICATED,
                                 FRAME_ERROR, FRAME_UNAUTHORIZED };
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        CHECK(frame_send(client, "service", 7, UUID, 16, types[i], NULL, 0) == 0,
              "frame_send type 0x%02x: 0 expected (%s)", types[i], zmq_strerror(errno));
        CHECK(s_recv(service, &m) == 0, "type 0x%02x: a message expected", types[i]);
        if (m.kept == 0) continue;
        CHECK(frame_decode(&m) == FRAME_KIND_MESSAGE, "type 0x%02x: MESSAGE expected ('%s')",
              types[i], s_str(m.reason));
        CHECK(m.type == types[i], "type 0x%02x expected, got %d", types[i], m.type);
        CHECK(m.body != NULL && m.body_len == 0, "type 0x%02x: empty body expected, %zu bytes",
              types[i], m.body_len);
        frame_close(&m);
    }

    /* HEARTBEAT: the uuid frame may be empty or 16 bytes */
    CHECK(frame_send(client, "service", 7, NULL, 0, FRAME_HEARTBEAT, NULL, 0) == 0,
          "frame_send HEARTBEAT without uuid: 0 expected");
    CHECK(s_recv(service, &m) == 0 && frame_decode(&m) == FRAME_KIND_MESSAGE,
          "HEARTBEAT with empty uuid: MESSAGE expected ('%s')", s_str(m.reason));
    CHECK(m.type == FRAME_HEARTBEAT && m.uuid == NULL && m.uuid_len == 0,
          "HEARTBEAT with empty uuid: type 6, uuid NULL, uuid_len 0 expected (%d, %p, %zu)",
          m.type, (const void *)m.uuid, m.uuid_len);
    frame_close(&m);
    part_t hb[] = { S(""), S("v1"), U16, S("\x06"), S("") };
    kind = s_exchange(client, service, hb, 5, &m, __LINE__);
    CHECK(kind == FRAME_KIND_MESSAGE && m.type == FRAME_HEARTBEAT && m.uuid &&
          m.uuid_len == 16 && memcmp(m.uuid, UUID, 16) == 0,
          "HEARTBEAT with 16-byte uuid: MESSAGE with that uuid expected (kind %d)", kind);
    frame_close(&m);
}

typedef struct bad_case {
    int line;
    part_t parts[8];           /* after the routing id */
    int n;
    const char *reason;
    int uuid_set;              /* the uuid view points at UUID */
    int type;                  /* expected type view */
} bad_case_t;

static void test_invalid(void *client, void *service)
{
    static const uint8_t U17[17] = { 0 };
    const bad_case_t cases[] = {
        { __LINE__, { S("x") }, 1, "too few frames", 0, -1 },
        { __LINE__, { S(""), S("v1") }, 2, "too few frames", 0, -1 },
        { __LINE__, { S(""), S("v1"), U16 }, 3, "too few frames", 1, -1 },
        { __LINE__, { S(""), S("v1"), U16, WORK }, 4, "too few frames", 1, FRAME_WORK },
        { __LINE__, { S(""), S("v1"), S("short"), WORK }, 4, "too few frames", 0, FRAME_WORK },
        { __LINE__, { S(""), S("v1"), U16, WORK, S("b"), S("extra") }, 6,
          "too many frames", 1, FRAME_WORK },
        { __LINE__, { S("x"), S("v1"), U16, WORK, S("b") }, 5,
          "no empty delimiter frame", 1, FRAME_WORK },
        { __LINE__, { S(""), S("v2"), U16, WORK, S("b") }, 5,
          "unsupported protocol version", 1, FRAME_WORK },
        { __LINE__, { S(""), S("V1"), U16, WORK, S("b") }, 5,
          "unsupported protocol version", 1, FRAME_WORK },
        { __LINE__, { S(""), S("v1x"), U16, WORK, S("b") }, 5,
          "unsupported protocol version", 1, FRAME_WORK },
        { __LINE__, { S(""), S("v"), U16, WORK, S("b") }, 5,
          "unsupported protocol version", 1, FRAME_WORK },
        { __LINE__, { S(""), S(""), U16, WORK, S("b") }, 5,
          "unsupported protocol version", 1, FRAME_WORK },
        { __LINE__, { S(""), S("v1"), U16, S(""), S("b") }, 5,
          "type frame is not one byte", 1, -1 },
        { __LINE__, { S(""), S("v1"), U16, S("\x03\x03"), S("b") }, 5,
          "type frame is not one byte", 1, -1 },
        { __LINE__, { S(""), S("v1"), U16, S("\x00"), S("b") }, 5,
          "unknown message type", 1, 0x00 },
        { __LINE__, { S(""), S("v1"), U16, S("\x05"), S("b") }, 5,
          "unknown message type", 1, 0x05 },
        { __LINE__, { S(""), S("v1"), U16, S("\x12"), S("b") }, 5,
          "unknown message type", 1, 0x12 },
        { __LINE__, { S(""), S("v1"), U16, S("\xff"), S("b") }, 5,
          "unknown message type", 1, 0xff },
        { __LINE__, { S(""), S("v1"), { UUID, 15 }, WORK, S("b") }, 5,
          "uuid frame is not 16 bytes", 0, FRAME_WORK },
        { __LINE__, { S(""), S("v1"), { U17, 17 }, WORK, S("b") }, 5,
          "uuid frame is not 16 bytes", 0, FRAME_WORK },
        { __LINE__, { S(""), S("v1"), S(""), WORK, S("b") }, 5,
          "uuid frame is not 16 bytes", 0, FRAME_WORK },
        { __LINE__, { S(""), S("v1"), S(""), S("\x01"), S("b") }, 5,
          "uuid frame is not 16 bytes", 0, FRAME_OK },
        { __LINE__, { S(""), S("v1"), S(""), S("\x10"), S("b") }, 5,
          "uuid frame is not 16 bytes", 0, FRAME_ERROR },
        { __LINE__, { S(""), S("v1"), { UUID, 1 }, S("\x06"), S("") }, 5,
          "uuid frame is neither empty nor 16 bytes", 0, FRAME_HEARTBEAT },
        { __LINE__, { S(""), S("v1"), { UUID, 15 }, S("\x06"), S("") }, 5,
          "uuid frame is neither empty nor 16 bytes", 0, FRAME_HEARTBEAT },
        { __LINE__, { S(""), S("v1"), { U17, 17 }, S("\x06"), S("") }, 5,
          "uuid frame is neither empty nor 16 bytes", 0, FRAME_HEARTBEAT },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const bad_case_t *c = &cases[i];
        frame_message_t m;
        int kind = s_exchange(client, service, c->parts, c->n, &m, c->line);
        if (kind < 0) continue;
        CHECK(kind == FRAME_KIND_INVALID, "case at line %d: INVALID expected, got %d",
              c->line, kind);
        CHECK(m.reason && strcmp(m.reason, c->reason) == 0,
              "case at line %d: reason '%s' expected, got '%s'", c->line, c->reason,
              s_str(m.reason));
        CHECK(m.count == c->n + 1, "case at line %d: count %d expected, got %d",
              c->line, c->n + 1, m.count);
        CHECK(s_is(m.peer, m.peer_len, "client"), "case at line %d: peer 'client' expected",
              c->line);
        if (c->uuid_set)
            CHECK(m.uuid && m.uuid_len == 16 && memcmp(m.uuid, UUID, 16) == 0,
                  "case at line %d: uuid view set (to answer) expected", c->line);
        else
            CHECK(m.uuid == NULL && m.uuid_len == 0,
                  "case at line %d: no uuid view expected", c->line);
        CHECK(m.type == c->type, "case at line %d: type view %d expected, got %d",
              c->line, c->type, m.type);
        CHECK(m.body == NULL, "case at line %d: no body view expected", c->line);
        frame_close(&m);
    }
}

/* More parts than FRAME_MAX_PARTS are drained and counted; the next message
 * starts clean. */
static void test_many_parts(void *client, void *service)
{
    static const int totals[] = { FRAME_MAX_PARTS - 1, FRAME_MAX_PARTS, FRAME_MAX_PARTS + 1, 33 };
    for (size_t t = 0; t < sizeof totals / sizeof *totals; t++) {
        int total = totals[t];                       /* parts received, routing id included */
        part_t parts[40] = { S(""), S("v1"), U16, WORK, S("b") };
        for (int i = 5; i < total - 1; i++) parts[i] = (part_t)S("extra");
        frame_message_t m;
        int kind = s_exchange(client, service, parts, total - 1, &m, __LINE__);
        if (kind < 0) continue;
        int kept = total < FRAME_MAX_PARTS ? total : FRAME_MAX_PARTS;
        CHECK(m.count == total, "%d parts: count %d expected, got %d", total, total, m.count);
        CHECK(m.kept == kept, "%d parts: kept %d expected, got %d", total, kept, m.kept);
        CHECK(kind == FRAME_KIND_INVALID && m.reason && strcmp(m.reason, "too many frames") == 0,
              "%d parts: INVALID 'too many frames' expected, got %d '%s'", total, kind,
              s_str(m.reason));
        CHECK(m.uuid && memcmp(m.uuid, UUID, 16) == 0 && m.type == FRAME_WORK,
              "%d parts: uuid and type views set expected", total);
        if (m.kept == FRAME_MAX_PARTS)
            CHECK(s_is(zmq_msg_data(&m.parts[FRAME_MAX_PARTS - 1]),
                       zmq_msg_size(&m.parts[FRAME_MAX_PARTS - 1]), "extra"),
                  "%d parts: the last kept part is the 8th sent", total);
        frame_close(&m);

        part_t good[] = { S(""), S("v1"), U16, S("\x01"), S("after") };
        kind = s_exchange(client, service, good, 5, &m, __LINE__);
        CHECK(kind == FRAME_KIND_MESSAGE && m.count == 6 && s_is(m.body, m.body_len, "after"),
              "after %d parts: the next message whole expected (kind %d, count %d, '%s')",
              total, kind, m.count, s_str(m.reason));
        if (kind >= 0) frame_close(&m);
    }
}

/* A signal in the middle of a message (SIGHUP for a reload, SIGTERM) must
 * not cut it: zmq_msg_recv or zmq_send of a later part can fail with EINTR,
 * and a message short of a part is a lost call or a lost reply (the rest
 * was even read as a message of its own). SIGALRM without SA_RESTART every
 * 20 us while 20,000 six-part messages cross each way: frame_recv under
 * the signals with the sender shielded, then frame_send under them with
 * the receiver shielded. Each must come whole, in order. Receiving fails
 * without the retry in every run (within 400 messages); sending less often
 * (libzmq looks at its mailbox on a send about once a millisecond, the
 * only place EINTR comes from there), 1 run in 3 here. */
static volatile sig_atomic_t g_alarms;
static void s_on_alarm(int sig) { (void)sig; g_alarms++; }

static void s_shield(int on, sigset_t *was)
{
    sigset_t alarm;
    sigemptyset(&alarm);
    sigaddset(&alarm, SIGALRM);
    if (on) pthread_sigmask(SIG_BLOCK, &alarm, was);
    else pthread_sigmask(SIG_SETMASK, was, NULL);
}

/* 20,000 messages from `from` to `to`, the side not under test shielded.
 * Returns how many came whole and in order; *first_bad the first that did not. */
static int s_cross_under_signals(void *from, void *to, int test_send, int *first_bad)
{
    enum { TOTAL = 20000, BATCH = 200 };
    int whole = 0;
    sigset_t was;
    *first_bad = -1;
    for (int sent = 0; sent < TOTAL && *first_bad < 0; sent += BATCH) {
        if (!test_send) s_shield(1, &was);
        for (int i = sent; i < sent + BATCH; i++) {
            char body[16];
            int n = snprintf(body, sizeof body, "%d", i), rc;
            if (test_send) {
                double deadline = s_now() + WAIT_LIMIT;
                while ((rc = frame_send(from, "client", 6, UUID, 16, FRAME_OK, body, (size_t)n)) < 0 &&
                       (errno == EAGAIN || errno == EINTR) && s_now() < deadline) {}
            } else {
                part_t msg[] = { S("service"), S(""), S("v1"), U16, WORK, { body, (size_t)n } };
                rc = s_send_parts(from, msg, 6);
            }
            if (rc < 0) { *first_bad = i; break; }
        }
        if (!test_send) s_shield(0, &was);
        if (test_send) s_shield(1, &was);
        for (int i = sent; i < sent + BATCH && *first_bad < 0; i++) {
            frame_message_t m;
            int rc;
            double deadline = s_now() + WAIT_LIMIT;
            memset(&m, 0, sizeof m);
            while ((rc = frame_recv(to, &m)) < 0 && (errno == EAGAIN || errno == EINTR) &&
                   s_now() < deadline) {
                zmq_pollitem_t item = { to, 0, ZMQ_POLLIN, 0 };
                zmq_poll(&item, 1, 10);
            }
            char want[16];
            snprintf(want, sizeof want, "%d", i);
            if (rc == 0 && frame_decode(&m) == FRAME_KIND_MESSAGE && m.count == 6 &&
                s_is(m.body, m.body_len, want))
                whole++;
            else
                *first_bad = i;
            if (rc == 0) frame_close(&m);
        }
        if (test_send) s_shield(0, &was);
    }
    while (!s_quiet(to)) {                       /* what a cut left, so the next test starts clean */
        frame_message_t m;
        if (frame_recv(to, &m) == 0) frame_close(&m);
    }
    return whole;
}

static void test_signals(void *client, void *service)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_alarm;                  /* no SA_RESTART: calls see EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, &old);
    struct itimerval every = { { 0, 20 }, { 0, 20 } }, off = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &every, NULL);
    int bad_in, bad_out;
    int in = s_cross_under_signals(client, service, 0, &bad_in);
    int received_alarms = (int)g_alarms;
    int out = s_cross_under_signals(service, client, 1, &bad_out);
    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &old, NULL);
    CHECK(in == 20000, "frame_recv under %d signals: %d of 20000 messages whole, the first cut at #%d",
          received_alarms, in, bad_in);
    CHECK(out == 20000, "frame_send under %d signals: %d of 20000 messages whole, the first cut at #%d",
          (int)g_alarms - received_alarms, out, bad_out);
}

/* frame_send from the service: to an unknown peer nothing leaves, then a
 * message to the client arrives whole. */
static void test_send(void *client, void *service)
{
    errno = 0;
    CHECK(frame_send(service, "nobody", 6, UUID, 16, FRAME_OK, "x", 1) == -1 &&
          errno == EHOSTUNREACH, "frame_send to an unknown peer: -1/EHOSTUNREACH expected, "
          "got errno %d (%s)", errno, zmq_strerror(errno));
    CHECK(frame_send(service, "", 0, UUID, 16, FRAME_OK, "x", 1) == -1,
          "frame_send to an empty peer id: -1 expected");
    CHECK(frame_send(service, "client", 6, UUID, 16, FRAME_OK, "reply", 5) == 0,
          "frame_send to the client: 0 expected (%s)", zmq_strerror(errno));
    frame_message_t m;
    CHECK(s_recv(client, &m) == 0, "the client should receive the service's reply");
    if (m.kept == 0) return;
    CHECK(m.count == 6, "reply: 6 parts expected (nothing left of the failed sends), got %d",
          m.count);
    CHECK(frame_decode(&m) == FRAME_KIND_MESSAGE, "reply: MESSAGE expected ('%s')",
          s_str(m.reason));
    CHECK(s_is(m.peer, m.peer_len, "service"), "reply: peer 'service' expected");
    CHECK(m.type == FRAME_OK && m.uuid && memcmp(m.uuid, UUID, 16) == 0,
          "reply: OK with the uuid expected");
    CHECK(s_is(m.body, m.body_len, "reply"), "reply: body 'reply' expected");
    frame_close(&m);
    CHECK(s_quiet(client), "nothing more for the client expected");
}

/* A REQ peer: its envelope is [id, ""], so a pseud message from it decodes,
 * and the reply reaches it as [v1, uuid, type, body]. */
static void test_req_peer(void *ctx, void *service)
{
    void *req = s_socket(ctx, ZMQ_REQ, NULL, 0);
    CHECK(zmq_connect(req, ADDRESS) == 0, "REQ connect: %s", zmq_strerror(errno));
    part_t msg[] = { S("v1"), U16, WORK, S("from req") };
    CHECK(s_send_parts(req, msg, 4) == 0, "REQ send: %s", zmq_strerror(errno));
    frame_message_t m;
    CHECK(s_recv(service, &m) == 0, "the REQ's message expected on the service");
    if (m.kept == 0) { zmq_close(req); return; }
    CHECK(frame_decode(&m) == FRAME_KIND_MESSAGE, "REQ message: MESSAGE expected ('%s')",
          s_str(m.reason));
    CHECK(m.type == FRAME_WORK && m.uuid && memcmp(m.uuid, UUID, 16) == 0 &&
          s_is(m.body, m.body_len, "from req"), "REQ message: WORK, uuid and body expected");
    CHECK(m.peer_len > 0 && m.peer_len <= FRAME_MAX_ID, "REQ message: a routing id expected");
    char peer[FRAME_MAX_ID];
    size_t peer_len = m.peer_len;
    memcpy(peer, m.peer, peer_len);
    frame_close(&m);

    CHECK(frame_send(service, peer, peer_len, UUID, 16, FRAME_OK, "to req", 6) == 0,
          "reply to the REQ: 0 expected (%s)", zmq_strerror(errno));
    static const part_t want[] = { S("v1"), U16, S("\x01"), S("to req") };
    int i = 0, more = 1;
    double deadline = s_now() + WAIT_LIMIT;
    while (more && i < 8) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, req, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            if (errno != EAGAIN || s_now() > deadline) break;
            zmq_pollitem_t item = { req, 0, ZMQ_POLLIN, 0 };
            zmq_poll(&item, 1, 10);
            continue;
        }
        if (i < 4)
            CHECK(zmq_msg_size(&part) == want[i].len &&
                  memcmp(zmq_msg_data(&part), want[i].data, want[i].len) == 0,
                  "REQ reply part %d: expected content differs (%zu bytes)", i,
                  zmq_msg_size(&part));
        more = zmq_msg_more(&part);
        zmq_msg_close(&part);
        i++;
    }
    CHECK(i == 4 && !more, "REQ reply: exactly 4 parts [v1, uuid, type, body] expected, got %d", i);
    zmq_close(req);
}

/* A routing id at FRAME_MAX_ID bytes (ZeroMQ's limit) comes through whole. */
static void test_long_routing_id(void *ctx, void *service)
{
    char id[FRAME_MAX_ID + 2];
    memset(id, 'i', sizeof id);
    id[FRAME_MAX_ID + 1] = '\0';
    void *over = zmq_socket(ctx, ZMQ_ROUTER);
    CHECK(zmq_setsockopt(over, ZMQ_ROUTING_ID, id, FRAME_MAX_ID + 1) == -1 && errno == EINVAL,
          "a routing id of FRAME_MAX_ID + 1 bytes is refused by ZeroMQ");
    zmq_close(over);
    id[FRAME_MAX_ID] = '\0';
    void *client = s_socket(ctx, ZMQ_ROUTER, id, 0);
    CHECK(zmq_connect(client, ADDRESS) == 0, "long id connect: %s", zmq_strerror(errno));
    frame_message_t m;
    part_t msg[] = { S(""), S("v1"), U16, WORK, S("long") };
    int kind = s_exchange(client, service, msg, 5, &m, __LINE__);
    CHECK(kind == FRAME_KIND_MESSAGE && m.peer_len == FRAME_MAX_ID && s_is(m.peer, m.peer_len, id),
          "a %d-byte routing id: MESSAGE with that peer expected (kind %d, %zu bytes)",
          FRAME_MAX_ID, kind, m.peer_len);
    if (kind >= 0) frame_close(&m);
    CHECK(frame_send(service, id, FRAME_MAX_ID, UUID, 16, FRAME_OK, "", 0) == 0,
          "frame_send to a %d-byte peer", FRAME_MAX_ID);
    CHECK(s_recv(client, &m) == 0 && frame_decode(&m) == FRAME_KIND_MESSAGE && m.type == FRAME_OK,
          "the %d-byte peer gets its OK", FRAME_MAX_ID);
    frame_close(&m);
    zmq_close(client);
}

/* ------------------------------------------------------- User-Id over ZAP */

/* Answer one ZAP request, if one is waiting, with User-Id `user`. 1 if so. */
static int s_zap_answer(void *zap, const char *user)
{
    zmq_msg_t request_id;
    zmq_msg_init(&request_id);
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, zap, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&part);
            break;
        }
        more = zmq_msg_more(&part);
        if (n == 1) zmq_msg_copy(&request_id, &part);
        zmq_msg_close(&part);
        n++;
    }
    if (n > 0) {      /* [version, request_id, "200", "OK", user_id, metadata] */
        zmq_send(zap, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(zap, zmq_msg_data(&request_id), zmq_msg_size(&request_id), ZMQ_SNDMORE);
        zmq_send(zap, "200", 3, ZMQ_SNDMORE);
        zmq_send(zap, "OK", 2, ZMQ_SNDMORE);
        zmq_send(zap, user, strlen(user), ZMQ_SNDMORE);
        zmq_send(zap, "", 0, 0);
    }
    zmq_msg_close(&request_id);
    return n > 0;
}

/* KNOWN BUG in frame.c:68: frame_decode reads "User-Id" from parts[0], the
 * routing id, but libzmq's ROUTER makes that part itself without metadata
 * (4.3.4 router.cpp); the parts the peer sent carry it. Says so when true. */
static const char *s_user_id_note(frame_message_t *m)
{
    static char note[200];
    const char *first = zmq_msg_gets(&m->parts[0], "User-Id");
    const char *second = m->kept > 1 ? zmq_msg_gets(&m->parts[1], "User-Id") : NULL;
    if (first || !second) return "";
    snprintf(note, sizeof note, " [KNOWN BUG frame.c:68: User-Id is read from the routing-id "
             "part, which has no metadata; parts[1] has User-Id '%s']", second);
    return note;
}

/* Connect a client `id`, answer its ZAP request with `user`, take its probe
 * on the server; a WORK from it then carries the same User-Id. */
static void s_zap_client(void *ctx, void *zap, void *server, const char *endpoint,
                         const char *id, const char *user)
{
    void *client = s_socket(ctx, ZMQ_ROUTER, id, 1);
    CHECK(zmq_connect(client, endpoint) == 0, "%s: tcp connect: %s", id, zmq_strerror(errno));
    int answered = 0, probed = 0;
    double deadline = s_now() + WAIT_LIMIT;
    while (!probed && s_now() < deadline) {
        zmq_pollitem_t items[] = { { zap, 0, ZMQ_POLLIN, 0 }, { server, 0, ZMQ_POLLIN, 0 } };
        zmq_poll(items, 2, 10);
        answered += s_zap_answer(zap, user);
        frame_message_t m;
        if (frame_recv(server, &m) == 0) {
            probed = frame_decode(&m) == FRAME_KIND_PROBE && s_is(m.peer, m.peer_len, id);
            CHECK(probed, "%s: its probe expected first on the server", id);
            /* BUG frame.c:68 (see s_user_id_note): fails on libzmq 4.3.4 */
            CHECK(m.user_id && strcmp(m.user_id, user) == 0,
                  "%s: probe user_id '%s' expected, got '%s'%s", id, user, s_str(m.user_id),
                  s_user_id_note(&m));
            frame_close(&m);
            break;
        }
    }
    CHECK(answered == 1, "%s: one ZAP request expected, %d answered", id, answered);
    CHECK(probed, "%s: probe expected on the server", id);
    CHECK(frame_send(server, id, strlen(id), NULL, 0, FRAME_HEARTBEAT, NULL, 0) == 0,
          "%s: the server can route to it", id);
    part_t msg[] = { S("service"), S(""), S("v1"), U16, WORK, S("w") };
    CHECK(s_send_parts(client, msg, 6) == 0, "%s: WORK send: %s", id, zmq_strerror(errno));
    frame_message_t m;
    CHECK(s_recv(server, &m) == 0, "%s: WORK expected on the server", id);
    if (m.kept) {
        CHECK(frame_decode(&m) == FRAME_KIND_MESSAGE && m.type == FRAME_WORK,
              "%s: WORK decodes expected ('%s')", id, s_str(m.reason));
        /* frame.c reads the "__fd" property itself: the same fd as libzmq's ZMQ_SRCFD */
        int fd = zmq_msg_get(&m.parts[1], ZMQ_SRCFD);
        CHECK(fd >= 0 && m.fd == fd, "%s: WORK over tcp: fd %d (ZMQ_SRCFD) expected, got %d", id, fd, m.fd);
        /* BUG frame.c:68 (see s_user_id_note): both fail on libzmq 4.3.4 */
        if (*user)
            CHECK(m.user_id && strcmp(m.user_id, user) == 0,
                  "%s: WORK user_id '%s' expected, got '%s'%s", id, user, s_str(m.user_id),
                  s_user_id_note(&m));
        else
            CHECK(m.user_id && m.user_id[0] == '\0',
                  "%s: ZAP gave an empty User-Id: user_id \"\" (not NULL) expected, got '%s'%s",
                  id, s_str(m.user_id), s_user_id_note(&m));
        frame_close(&m);
    }
    zmq_close(client);
}

static void test_user_id(void)
{
    void *ctx = zmq_ctx_new();
    void *zap = s_socket(ctx, ZMQ_REP, NULL, 0);
    CHECK(zmq_bind(zap, "inproc://zeromq.zap.01") == 0, "ZAP bind: %s", zmq_strerror(errno));
    void *server = s_socket(ctx, ZMQ_ROUTER, "service", 0);
    zmq_setsockopt(server, ZMQ_ZAP_DOMAIN, "test", 4);
    char endpoint[256] = "";
    size_t size = sizeof endpoint;
    if (zmq_bind(server, "tcp://127.0.0.1:*") == 0 &&
        zmq_getsockopt(server, ZMQ_LAST_ENDPOINT, endpoint, &size) == 0) {
        s_zap_client(ctx, zap, server, endpoint, "alice-client", "alice");
        s_zap_client(ctx, zap, server, endpoint, "anon-client", "");
    } else {
        CHECK(0, "tcp bind on 127.0.0.1: %s", zmq_strerror(errno));
    }
    zmq_close(server);
    zmq_close(zap);
    zmq_ctx_term(ctx);
}

int main(void)
{
    void *ctx = zmq_ctx_new();
    void *service = s_socket(ctx, ZMQ_ROUTER, "service", 0);
    CHECK(zmq_bind(service, ADDRESS) == 0, "bind %s: %s", ADDRESS, zmq_strerror(errno));
    void *client = s_socket(ctx, ZMQ_ROUTER, "client", 1);
    CHECK(zmq_connect(client, ADDRESS) == 0, "connect %s: %s", ADDRESS, zmq_strerror(errno));

    test_uuid_and_types();
    test_probe(service);
    test_well_formed(client, service);
    test_invalid(client, service);
    test_many_parts(client, service);
    test_signals(client, service);
    test_send(client, service);
    test_req_peer(ctx, service);
    test_long_routing_id(ctx, service);
    CHECK(s_quiet(service), "nothing left on the service expected");

    zmq_close(client);
    zmq_close(service);
    zmq_ctx_term(ctx);
    test_user_id();

    printf("test_frame: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
