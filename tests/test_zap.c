/*
 * test_zap: the ZAP handler alone (RFC 27; no Lua).
 *
 * zap_parse: well-formed NULL, PLAIN and CURVE requests, text fields at their
 * limit, and the refusals with their exact reason: wrong version, too few
 * parts, credentials missing for the mechanism, a field one byte too long or
 * holding a NUL, an unknown mechanism.
 * The handler over inproc, with a DEALER speaking as libzmq's ZAP client: the
 * request id comes back with 200 (and the user id), 300, 400 and 500 as
 * `decide` says; a malformed request gets 400 without asking `decide`; one
 * with no envelope gets no answer; a deferred request does not hold up the
 * next one and is answered by zap_answer; zap_destroy answers what is still
 * pending with 500. A second handler in one context is refused (EADDRINUSE).
 * Real handshakes: PLAIN clients over loopback TCP against a PLAIN server in
 * the same context; its monitor reports success or the refusal's status
 * (400, 300, 500), a deferred one succeeds once answered, and the accepted
 * peer's messages carry the user id that `decide` gave.
 * Every wait is bounded by a deadline; nothing sleeps.
 *
 * Each failed check prints one line (file:line: what was expected); the last
 * line is a summary and the exit status is non-zero when any check failed.
 */
#include "zap.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <zmq.h>

#include "loop.h"

static int g_checks, g_failed;

#include "check.h"

#define WAIT_LIMIT 2.0             /* seconds: bound on every wait for an event */
#define MAX_FRAMES 32

/* ------------------------------------------------------------------ parse */

typedef struct req_parts {
    zap_part_t p[MAX_FRAMES];
    int n;
} req_parts_t;

static void s_add(req_parts_t *r, const void *data, size_t size)
{
    r->p[r->n++] = (zap_part_t){ data, size };
}

static void s_adds(req_parts_t *r, const char *text)
{
    s_add(r, text, strlen(text));
}

/* version, request id, domain, address, identity, mechanism */
static void s_head(req_parts_t *r, const char *mechanism)
{
    r->n = 0;
    s_adds(r, "1.0");
    s_adds(r, "req-1");
    s_adds(r, "global");
    s_adds(r, "127.0.0.1");
    s_adds(r, "peer-id");
    s_adds(r, mechanism);
}

static int s_parse(const req_parts_t *r, zap_request_t *req, const char **why)
{
    *why = NULL;
    return zap_parse(r->p, r->n, req, why);
}

static void s_refused(const req_parts_t *r, const char *expected, const char *what)
{
    zap_request_t req;
    const char *why;
    int rc = s_parse(r, &req, &why);
    CHECK(rc == -1, "%s: refused", what);
    CHECK(why && strcmp(why, expected) == 0, "%s: reason \"%s\", got \"%s\"", what, expected,
          why ? why : "(null)");
}

static void test_parse_valid(void)
{
    req_parts_t r;
    zap_request_t req;
    const char *why;

    s_head(&r, "NULL");
    CHECK(s_parse(&r, &req, &why) == 0, "NULL request parses: %s", why ? why : "");
    CHECK(strcmp(req.domain, "global") == 0, "domain copied");
    CHECK(strcmp(req.address, "127.0.0.1") == 0, "address copied");
    CHECK(strcmp(req.mechanism, "NULL") == 0, "mechanism copied");
    CHECK(req.routing_id_len == 7 && memcmp(req.routing_id, "peer-id", 7) == 0, "routing id viewed");
    CHECK(req.username == NULL && req.password == NULL && req.client_key[0] == '\0',
          "NULL: no credentials");

    s_head(&r, "PLAIN");
    s_adds(&r, "alice");
    s_add(&r, "s\0cret", 6);                  /* a password is bytes: a NUL is fine */
    CHECK(s_parse(&r, &req, &why) == 0, "PLAIN request parses: %s", why ? why : "");
    CHECK(req.username_len == 5 && memcmp(req.username, "alice", 5) == 0, "username viewed");
    CHECK(req.password_len == 6 && memcmp(req.password, "s\0cret", 6) == 0, "password viewed, NUL kept");
    CHECK(req.password == r.p[7].data, "password is a view into the request, not a copy");

    uint8_t key[32];
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)(i * 7 + 1);
    char z85[41];
    zmq_z85_encode(z85, key, 32);
    s_head(&r, "CURVE");
    s_add(&r, key, 32);
    CHECK(s_parse(&r, &req, &why) == 0, "CURVE request parses: %s", why ? why : "");
    CHECK(strlen(req.client_key) == 40 && strcmp(req.client_key, z85) == 0,
          "client key in Z85: \"%s\", got \"%s\"", z85, req.client_key);
    CHECK(req.username == NULL, "CURVE: no username");

    /* text fields at their limit (ZAP_MAX_TEXT bytes) are kept whole */
    char longest[ZAP_MAX_TEXT];
    memset(longest, 'd', sizeof longest);
    s_head(&r, "NULL");
    r.p[2] = (zap_part_t){ longest, ZAP_MAX_TEXT };
    r.p[3] = (zap_part_t){ longest, ZAP_MAX_TEXT };
    CHECK(s_parse(&r, &req, &why) == 0, "domain and address of %d bytes parse", ZAP_MAX_TEXT);
    CHECK(strlen(req.domain) == ZAP_MAX_TEXT && strlen(req.address) == ZAP_MAX_TEXT,
          "domain and address kept whole");

    s_head(&r, "NULL");
    r.p[1] = (zap_part_t){ "", 0 };           /* empty request id, identity and domain */
    r.p[2] = (zap_part_t){ "", 0 };
    r.p[4] = (zap_part_t){ "", 0 };
    CHECK(s_parse(&r, &req, &why) == 0, "empty request id, domain and identity parse");
    CHECK(req.domain[0] == '\0' && req.routing_id_len == 0, "empty fields stay empty");
}

static void test_parse_refused(void)
{
    req_parts_t r;
    char too_long[ZAP_MAX_TEXT + 1];
    memset(too_long, 'x', sizeof too_long);

    s_head(&r, "NULL");
    r.p[0] = (zap_part_t){ "1.1", 3 };
    s_refused(&r, "ZAP version is not 1.0", "version 1.1");
    r.p[0] = (zap_part_t){ "1.0\0", 4 };
    s_refused(&r, "ZAP version is not 1.0", "version with a trailing NUL");
    r.p[0] = (zap_part_t){ "", 0 };
    s_refused(&r, "ZAP version is not 1.0", "empty version");

    for (int n = 0; n < 6; n++) {
        s_head(&r, "NULL");
        r.n = n;
        char what[32];
        snprintf(what, sizeof what, "%d parts", n);
        s_refused(&r, "ZAP request has too few parts", what);
    }

    s_head(&r, "PLAIN");
    s_refused(&r, "PLAIN request without username and password", "PLAIN, no credentials");
    s_adds(&r, "alice");
    s_refused(&r, "PLAIN request without username and password", "PLAIN, no password");
    s_adds(&r, "pw");
    s_adds(&r, "extra");
    s_refused(&r, "PLAIN request without username and password", "PLAIN, one part too many");

    uint8_t key[33] = { 0 };
    s_head(&r, "CURVE");
    s_refused(&r, "CURVE request without a 32-byte client key", "CURVE, no key");
    s_add(&r, key, 31);
    s_refused(&r, "CURVE request without a 32-byte client key", "CURVE, 31-byte key");
    r.p[6] = (zap_part_t){ key, 33 };
    s_refused(&r, "CURVE request without a 32-byte client key", "CURVE, 33-byte key");
    r.p[6] = (zap_part_t){ key, 32 };
    s_add(&r, "extra", 5);
    s_refused(&r, "CURVE request without a 32-byte client key", "CURVE, one part too many");

    s_head(&r, "NULL");
    s_adds(&r, "extra");
    s_refused(&r, "unknown ZAP mechanism", "NULL with credentials");
    s_head(&r, "GSSAPI");
    s_refused(&r, "unknown ZAP mechanism", "GSSAPI");
    s_head(&r, "plain");
    s_adds(&r, "alice");
    s_adds(&r, "pw");
    s_refused(&r, "unknown ZAP mechanism", "lower-case plain");
    s_head(&r, "");
    s_refused(&r, "unknown ZAP mechanism", "empty mechanism");

    const char *too_long_why = "ZAP domain, address or mechanism too long";
    s_head(&r, "NULL");
    r.p[2] = (zap_part_t){ too_long, ZAP_MAX_TEXT + 1 };
    s_refused(&r, too_long_why, "domain one byte too long");
    s_head(&r, "NULL");
    r.p[3] = (zap_part_t){ too_long, ZAP_MAX_TEXT + 1 };
    s_refused(&r, too_long_why, "address one byte too long");
    s_head(&r, "NULL");
    r.p[5] = (zap_part_t){ "ABCDEFGH", 8 };   /* the field holds 7 and a NUL */
    s_refused(&r, too_long_why, "mechanism of 8 bytes");
    s_head(&r, "NULL");
    r.p[2] = (zap_part_t){ "glo\0bal", 7 };
    s_refused(&r, too_long_why, "NUL in domain");
    s_head(&r, "NULL");
    r.p[3] = (zap_part_t){ "127.0.0.1\0evil", 14 };
    s_refused(&r, too_long_why, "NUL in address");
    s_head(&r, "NULL");
    r.p[5] = (zap_part_t){ "NULL\0", 5 };
    s_refused(&r, too_long_why, "NUL in mechanism");
    s_head(&r, "PLAIN");
    r.p[5] = (zap_part_t){ "PLAIN\0", 6 };
    s_adds(&r, "alice");
    s_adds(&r, "pw");
    s_refused(&r, too_long_why, "NUL after PLAIN");
}

/* -------------------------------------------------------------- the handler */

typedef struct decider {
    int calls;                     /* times decide ran */
    char last_user[64];            /* username of the last PLAIN request */
    char last_password[64];
    zap_pending_t *kept[4];        /* deferred requests, in order */
    int nkept;
} decider_t;

/* PLAIN username says what to answer: alice 200, busy 300, refuse 400,
 * broken 500, later* deferred; NULL and CURVE requests are accepted. */
static int s_decide(void *ctx, const zap_request_t *req, zap_pending_t *pending,
                    char *user_id, char *reason)
{
    decider_t *d = ctx;
    d->calls++;
    if (!req->username) {
        snprintf(user_id, ZAP_MAX_TEXT + 1, "%s-peer", req->mechanism);
        return ZAP_OK;
    }
    snprintf(d->last_user, sizeof d->last_user, "%.*s", (int)req->username_len, req->username);
    snprintf(d->last_password, sizeof d->last_password, "%.*s", (int)req->password_len, req->password);
    if (strcmp(d->last_user, "alice") == 0) {
        snprintf(user_id, ZAP_MAX_TEXT + 1, "user:alice");
        return ZAP_OK;
    }
    if (strcmp(d->last_user, "busy") == 0) { snprintf(reason, ZAP_MAX_TEXT + 1, "try later"); return ZAP_TEMPORARY; }
    if (strcmp(d->last_user, "refuse") == 0) { snprintf(reason, ZAP_MAX_TEXT + 1, "no such login"); return ZAP_REFUSED; }
    if (strncmp(d->last_user, "later", 5) == 0 && d->nkept < 4) {
        d->kept[d->nkept++] = pending;
        return ZAP_PENDING;
    }
    snprintf(reason, ZAP_MAX_TEXT + 1, "broken");
    return ZAP_INTERNAL;
}

typedef struct reply {
    char frame[MAX_FRAMES][300];
    size_t size[MAX_FRAMES];
    int n;
} reply_t;

/* Run the loop until `sock` has a message; 1 when it has, 0 at the deadline. */
static int s_pump_until_readable(loop_t *loop, void *sock)
{
    double deadline = loop_now() + WAIT_LIMIT;
    while (loop_now() < deadline) {
        zmq_pollitem_t item = { sock, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&item, 1, 0) > 0) return 1;
        loop_run_once(loop, 0.005);
    }
    return 0;
}

/* One reply to the fake ZAP client (frames truncated to 299 bytes). */
static int s_recv(loop_t *loop, void *sock, reply_t *r)
{
    memset(r, 0, sizeof *r);
    if (!s_pump_until_readable(loop, sock)) return 0;
    int more = 1;
    while (more && r->n < MAX_FRAMES) {
        int size = zmq_recv(sock, r->frame[r->n], sizeof r->frame[0] - 1, 0);
        if (size < 0) return 0;
        r->size[r->n] = (size_t)size < sizeof r->frame[0] - 1 ? (size_t)size : sizeof r->frame[0] - 1;
        r->n++;
        size_t len = sizeof more;
        zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len);
    }
    return 1;
}

/* Send a request as libzmq's ZAP client does: an empty delimiter, then the
 * parts; `n` parts of `parts` (NULL-terminated strings). */
static void s_send_request(void *sock, const char *const *parts, int n, int delimiter)
{
    if (delimiter) zmq_send(sock, "", 0, ZMQ_SNDMORE);
    for (int i = 0; i < n; i++)
        zmq_send(sock, parts[i], strlen(parts[i]), i + 1 < n ? ZMQ_SNDMORE : 0);
}

static void s_plain(void *sock, const char *rid, const char *user, const char *password)
{
    const char *parts[] = { "1.0", rid, "global", "127.0.0.1", "", "PLAIN", user, password };
    s_send_request(sock, parts, 8, 1);
}

/* The reply is [ "", "1.0", rid, code, text, user id, metadata ]. */
static void s_expect(loop_t *loop, void *sock, const char *rid, const char *code, const char *text,
                     const char *user_id, const char *what)
{
    reply_t r;
    if (!s_recv(loop, sock, &r)) { CHECK(0, "%s: no reply within %.0f s", what, WAIT_LIMIT); return; }
    CHECK(r.n == 7, "%s: 7 frames, got %d", what, r.n);
    if (r.n != 7) return;
    CHECK(r.size[0] == 0, "%s: empty delimiter", what);
    CHECK(strcmp(r.frame[1], "1.0") == 0, "%s: version 1.0", what);
    CHECK(strcmp(r.frame[2], rid) == 0, "%s: request id \"%s\", got \"%s\"", what, rid, r.frame[2]);
    CHECK(strcmp(r.frame[3], code) == 0, "%s: status %s, got %s", what, code, r.frame[3]);
    CHECK(strcmp(r.frame[4], text) == 0, "%s: text \"%s\", got \"%s\"", what, text, r.frame[4]);
    CHECK(strcmp(r.frame[5], user_id) == 0, "%s: user id \"%s\", got \"%s\"", what, user_id, r.frame[5]);
    CHECK(r.size[6] == 0, "%s: no metadata", what);
}

static void test_handler(void *ctx)
{
    loop_t *loop = loop_new();
    decider_t d = { 0 };
    zap_t *zap = zap_new(ctx, loop, s_decide, &d);
    CHECK(zap != NULL, "zap_new: %s", zmq_strerror(errno));
    if (!zap) { loop_destroy(&loop); return; }
    errno = 0;
    zap_t *second = zap_new(ctx, loop, s_decide, &d);
    CHECK(second == NULL && errno == EADDRINUSE, "a second handler in one context: EADDRINUSE, got %s",
          zmq_strerror(errno));
    zap_destroy(&second);

    void *client = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(client, ZMQ_LINGER, &linger, sizeof linger);
    CHECK(zmq_connect(client, "inproc://zeromq.zap.01") == 0, "connect to the handler");

    s_plain(client, "r1", "alice", "wonderland");
    s_expect(loop, client, "r1", "200", "OK", "user:alice", "accepted");
    CHECK(strcmp(d.last_user, "alice") == 0 && strcmp(d.last_password, "wonderland") == 0,
          "decide sees username and password");
    s_plain(client, "r2", "busy", "x");
    s_expect(loop, client, "r2", "300", "try later", "", "temporary failure");
    s_plain(client, "r3", "refuse", "x");
    s_expect(loop, client, "r3", "400", "no such login", "", "refused");
    s_plain(client, "r4", "broken", "x");
    s_expect(loop, client, "r4", "500", "broken", "", "internal error");
    const char *null_req[] = { "1.0", "r5", "global", "127.0.0.1", "", "NULL" };
    s_send_request(client, null_req, 6, 1);
    s_expect(loop, client, "r5", "200", "OK", "NULL-peer", "NULL accepted");

    /* malformed: 400 with the parser's reason, decide not asked */
    int calls = d.calls;
    const char *v2[] = { "2.0", "m1", "global", "127.0.0.1", "", "NULL" };
    s_send_request(client, v2, 6, 1);
    s_expect(loop, client, "m1", "400", "ZAP version is not 1.0", "", "version 2.0");
    const char *few[] = { "1.0", "m2", "global", "127.0.0.1", "" };
    s_send_request(client, few, 5, 1);
    s_expect(loop, client, "m2", "400", "ZAP request has too few parts", "", "5 parts");
    const char *one_credential[] = { "1.0", "m3", "global", "127.0.0.1", "", "PLAIN", "alice" };
    s_send_request(client, one_credential, 7, 1);
    s_expect(loop, client, "m3", "400", "PLAIN request without username and password", "", "PLAIN, 1 credential");
    const char *many[] = { "1.0", "m4", "global", "127.0.0.1", "", "PLAIN", "alice", "pw", "x" };
    s_send_request(client, many, 9, 1);
    s_expect(loop, client, "m4", "400", "ZAP request has too many parts", "", "9 parts");
    const char *lots[20];
    for (int i = 0; i < 20; i++) lots[i] = i < 9 ? many[i] : "x";
    lots[1] = "m5";
    s_send_request(client, lots, 20, 1);
    s_expect(loop, client, "m5", "400", "ZAP request has too many parts", "", "20 parts");
    char long_domain[ZAP_MAX_TEXT + 2];
    memset(long_domain, 'd', ZAP_MAX_TEXT + 1);
    long_domain[ZAP_MAX_TEXT + 1] = '\0';
    const char *longd[] = { "1.0", "m6", long_domain, "127.0.0.1", "", "NULL" };
    s_send_request(client, longd, 6, 1);
    s_expect(loop, client, "m6", "400", "ZAP domain, address or mechanism too long", "", "long domain");
    CHECK(d.calls == calls, "decide not asked about malformed requests (%d calls)", d.calls - calls);

    /* no empty delimiter: not from a ZAP client, nothing to answer. The
     * handler reads one pipe in order, so the next reply is for what follows. */
    const char *no_env[] = { "1.0", "n1", "global", "127.0.0.1", "", "NULL" };
    s_send_request(client, no_env, 6, 0);
    s_plain(client, "r6", "alice", "wonderland");
    s_expect(loop, client, "r6", "200", "OK", "user:alice", "the request after one with no delimiter");

    /* deferred: the next request is answered while it waits */
    s_plain(client, "d1", "later1", "x");
    s_plain(client, "d2", "later2", "x");
    s_plain(client, "r7", "alice", "wonderland");
    s_expect(loop, client, "r7", "200", "OK", "user:alice", "answered while two wait");
    CHECK(d.nkept == 2, "two requests deferred, got %d", d.nkept);
    if (d.nkept == 2) {
        zap_answer(zap, d.kept[1], ZAP_REFUSED, NULL, "wrong login or password");
        s_expect(loop, client, "d2", "400", "wrong login or password", "", "deferred, refused");
        zap_answer(zap, d.kept[0], ZAP_OK, "user:later", "OK");
        s_expect(loop, client, "d1", "200", "OK", "user:later", "deferred, accepted");
    }

    /* destroy answers what still waits with 500 */
    s_plain(client, "d3", "later3", "x");
    s_plain(client, "r8", "alice", "wonderland");
    s_expect(loop, client, "r8", "200", "OK", "user:alice", "before destroy");
    CHECK(d.nkept == 3, "third request deferred");
    zap_destroy(&zap);
    CHECK(zap == NULL, "zap_destroy clears the pointer");
    zap_destroy(&zap);                         /* takes NULL */
    s_expect(loop, client, "d3", "500", "shutting down", "", "pending at destroy");

    zmq_close(client);
    loop_destroy(&loop);
}

/* ------------------------------------------------------ real PLAIN handshakes */

/* Wait for the monitor to report the handshake's end: the event, and its
 * value (the ZAP status for HANDSHAKE_FAILED_AUTH). 0 at the deadline. */
static int s_handshake_event(loop_t *loop, void *monitor, uint32_t *value)
{
    double deadline = loop_now() + WAIT_LIMIT;
    while (loop_now() < deadline) {
        if (!s_pump_until_readable(loop, monitor)) return 0;
        uint8_t head[6];
        char address[256];
        int size = zmq_recv(monitor, head, sizeof head, 0);
        zmq_recv(monitor, address, sizeof address, 0);
        if (size != 6) continue;
        uint16_t event;
        memcpy(&event, head, 2);
        memcpy(value, head + 2, 4);
        if (event & (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL))
            return event;
    }
    return 0;
}

static void *s_plain_client(void *ctx, const char *endpoint, const char *user, const char *password)
{
    void *c = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(c, ZMQ_LINGER, &linger, sizeof linger);
    int never = -1;                /* a refused client must not retry into the next case's events */
    zmq_setsockopt(c, ZMQ_RECONNECT_IVL, &never, sizeof never);
    zmq_setsockopt(c, ZMQ_PLAIN_USERNAME, user, strlen(user));
    zmq_setsockopt(c, ZMQ_PLAIN_PASSWORD, password, strlen(password));
    zmq_connect(c, endpoint);
    return c;
}

static void test_handshakes(void *ctx)
{
    loop_t *loop = loop_new();
    decider_t d = { 0 };
    zap_t *zap = zap_new(ctx, loop, s_decide, &d);
    CHECK(zap != NULL, "zap_new: %s", zmq_strerror(errno));
    if (!zap) { loop_destroy(&loop); return; }

    void *server = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1, linger = 0;
    zmq_setsockopt(server, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(server, ZMQ_PLAIN_SERVER, &one, sizeof one);
    zmq_setsockopt(server, ZMQ_ZAP_DOMAIN, "test", 4);
    CHECK(zmq_bind(server, "tcp://127.0.0.1:*") == 0, "bind the PLAIN server");
    char endpoint[256];
    size_t len = sizeof endpoint;
    zmq_getsockopt(server, ZMQ_LAST_ENDPOINT, endpoint, &len);
    zmq_socket_monitor(server, "inproc://test-zap-monitor",
                       ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                       ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL);
    void *monitor = zmq_socket(ctx, ZMQ_PAIR);
    zmq_setsockopt(monitor, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(monitor, "inproc://test-zap-monitor");

    static const struct { const char *user; uint32_t status; } refusals[] = {
        { "refuse", 400 }, { "busy", 300 }, { "broken", 500 },
    };
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        void *c = s_plain_client(ctx, endpoint, refusals[i].user, "x");
        uint32_t value = 0;
        int event = s_handshake_event(loop, monitor, &value);
        CHECK(event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH && value == refusals[i].status,
              "%s: handshake fails with %u, got event 0x%x value %u", refusals[i].user,
              refusals[i].status, event, value);
        zmq_close(c);
    }

    /* accepted at once, then deferred and accepted: messages carry the user id */
    const char *users[] = { "alice", "later" };
    for (int i = 0; i < 2; i++) {
        void *c = s_plain_client(ctx, endpoint, users[i], "pw");
        zmq_send(c, "hi", 2, 0);
        if (i == 1) {
            double deadline = loop_now() + WAIT_LIMIT;
            while (d.nkept == 0 && loop_now() < deadline) loop_run_once(loop, 0.005);
            CHECK(d.nkept == 1, "the deferred login reached decide");
            if (d.nkept == 1) zap_answer(zap, d.kept[0], ZAP_OK, "user:later", "OK");
        }
        uint32_t value = 0;
        int event = s_handshake_event(loop, monitor, &value);
        CHECK(event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED, "%s: handshake succeeds, got event 0x%x value %u",
              users[i], event, value);
        if (!s_pump_until_readable(loop, server)) {
            CHECK(0, "%s: no message within %.0f s", users[i], WAIT_LIMIT);
        } else {
            zmq_msg_t id, body;
            zmq_msg_init(&id);
            zmq_msg_init(&body);
            zmq_msg_recv(&id, server, 0);
            zmq_msg_recv(&body, server, 0);
            const char *user_id = zmq_msg_gets(&body, "User-Id");
            const char *expected = i == 0 ? "user:alice" : "user:later";
            CHECK(user_id && strcmp(user_id, expected) == 0, "%s: User-Id \"%s\", got \"%s\"", users[i],
                  expected, user_id ? user_id : "(none)");
            CHECK(zmq_msg_size(&body) == 2 && memcmp(zmq_msg_data(&body), "hi", 2) == 0, "%s: body", users[i]);
            zmq_msg_close(&id);
            zmq_msg_close(&body);
        }
        zmq_close(c);
    }

    zmq_socket_monitor(server, NULL, 0);
    zmq_close(monitor);
    zmq_close(server);
    zap_destroy(&zap);
    loop_destroy(&loop);
}

int main(void)
{
    test_parse_valid();
    test_parse_refused();

    /* a context each: the handler's inproc endpoint is free again only once
     * the closed socket is reaped */
    void *ctx = zmq_ctx_new();
    test_handler(ctx);
    zmq_ctx_term(ctx);
    ctx = zmq_ctx_new();
    test_handshakes(ctx);
    zmq_ctx_term(ctx);

    printf("test_zap: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
