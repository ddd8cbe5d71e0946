/*
 * test_cluster: the cluster transport against a real redis-server (no Lua).
 *
 * The test starts its own redis-server on a free loopback port (--save ''
 * --appendonly no) and stops it by its PID at the end, on a crash too (and
 * the server dies with the test: PR_SET_PDEATHSIG). Several cluster_t
 * "nodes" share one loop. The whole suite runs twice: against an open
 * Redis, and as an ACL user limited to ~pseud:* &pseud:* and the commands
 * docs/cluster.md lists, in db 1 (on a Redis with requirepass for everyone
 * else), which proves that list complete. What it shows:
 *
 *  - URLs: bad ones refused with the reason and never the password; good
 *    ones parsed (user, password with %XX, IPv6, db, unix:); bad options.
 *  - add / lookup / remove, binary user ids (NUL, 0xff, 255 bytes), 0 and
 *    256 bytes refused; a user moving between nodes, both orders (a remove
 *    after the other node's add leaves the new entry).
 *  - publish reaches the other node byte-exact (NUL, 0xff, 1 MiB); to a
 *    channel nobody listens on: receivers 0; over max_message: refused at
 *    the sender, dropped and counted at the receiver (small and large, the
 *    subscription survives); max_pending refuses with its number.
 *  - a dead node (destroyed without removing its users): once its liveness
 *    key lapses a lookup says ABSENT and collects its keys; another's are
 *    collected by the sweep alone; a node taken for dead while alive (its
 *    key deleted, as a SIGSTOP past the TTL does) re-links under a new id
 *    with its users, and the old id's entries go.
 *  - redis-server SIGSTOPped (hung, or cut off): the link is lost after
 *    `timeout`, pending lookups answered DOWN once; SIGCONT: up again.
 *  - redis-server SIGKILLed with lookups and publishes in flight: on_link(0),
 *    each callback once with DOWN / -1, new ones fail fast from the loop,
 *    never inside the call; restarted empty on the same port: on_link(1)
 *    and every user registered again.
 *  - 1,000 users added and removed: DBSIZE back to its baseline; Redis
 *    memory per user (10,000 users); lookup and publish round trips.
 *
 * Every wait is bounded by a deadline and driven by loop_run_once; nothing
 * sleeps to synchronise. Exit 77 (skipped) when redis-server is missing.
 */
#define _GNU_SOURCE
#include "cluster.h"
#include "redis.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <hiredis/hiredis.h>

static int g_checks, g_failed;

#include "check.h"

#define WAIT 5.0                       /* seconds: the bound on every wait for an event */
#define ACL_COMMANDS "-@all", "+evalsha", "+script|load", "+publish", "+subscribe", "+select", \
    "+set", "+del", "+exists", "+sadd", "+srem", "+spop", "+scard", "+srandmember", "+zadd", \
    "+zrem", "+zrevrange", "+time"

/* ------------------------------------------------------------ redis-server */

typedef struct server {
    int port;
    pid_t pid;
    int acl;                           /* requirepass + the pseud ACL user */
    char sock[64];                     /* its unix socket */
} server_t;

static pid_t g_server_pid = -1;        /* for the crash handler */

static void s_kill_server(void) {
    if (g_server_pid > 0) { kill(g_server_pid, SIGKILL); waitpid(g_server_pid, NULL, 0); }
    g_server_pid = -1;
}

static void s_on_crash(int sig) {
    if (g_server_pid > 0) kill(g_server_pid, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int s_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* Start it and wait (bounded) for "Ready to accept connections" on its stdout. */
static int s_server_start(server_t *s) {
    int out[2];
    if (pipe2(out, O_CLOEXEC) < 0) return -1;
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(s->sock, sizeof s->sock, "/tmp/pseud-test-cluster-%d.sock", s->port);
    const char *argv[64] = { "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--unixsocket", s->sock, "--unixsocketperm", "700",
                             "--loglevel", "notice", "--logfile", "" };
    int n = 17;
    if (s->acl) {
        const char *acl[] = { "--requirepass", "adminpw", "--user", "pseud", "on", ">secret",
                              "~pseud:*", "&pseud:*", ACL_COMMANDS };
        for (size_t i = 0; i < sizeof acl / sizeof *acl; i++) argv[n++] = acl[i];
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);                /* never outlive the test */
        dup2(out[1], 1);
        execvp("redis-server", (char **)argv);
        _exit(127);
    }
    close(out[1]);
    s->pid = g_server_pid = pid;
    char buf[8192];
    size_t have = 0;
    double deadline = loop_now() + WAIT;
    int ready = 0;
    while (!ready && loop_now() < deadline) {
        struct pollfd p = { .fd = out[0], .events = POLLIN };
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t r = read(out[0], buf + have, sizeof buf - 1 - have);
        if (r <= 0) break;
        have += (size_t)r;
        buf[have] = '\0';
        ready = strstr(buf, "Ready to accept connections") != NULL;
        if (have > sizeof buf / 2) {                   /* keep the tail */
            memmove(buf, buf + have - 64, 64);
            have = 64;
        }
    }
    close(out[0]);                                       /* it writes to a closed pipe from now: loglevel... */
    if (!ready) { s_kill_server(); return -1; }
    return 0;
}

static void s_server_kill(server_t *s) {
    s_kill_server();
    s->pid = -1;
    unlink(s->sock);                                     /* SIGKILL leaves it behind */
}

/* A blocking admin connection (the test's own, not under test). */
static redisContext *s_admin(const server_t *s) {
    struct timeval tv = { 2, 0 };
    redisContext *r = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    if (!r || r->err) return NULL;
    redisSetTimeout(r, tv);
    if (s->acl) {                                        /* and the db the ACL run's URL selects */
        redisReply *a = redisCommand(r, "AUTH adminpw");
        if (a) freeReplyObject(a);
        a = redisCommand(r, "SELECT 1");
        if (a) freeReplyObject(a);
    }
    return r;
}

static long long s_int(redisContext *r, const char *cmd) {
    redisReply *x = redisCommand(r, cmd);
    long long v = x && x->type == REDIS_REPLY_INTEGER ? x->integer : -1;
    if (x) freeReplyObject(x);
    return v;
}

static long long s_exists(redisContext *r, const char *key) {
    redisReply *x = redisCommand(r, "EXISTS %s", key);
    long long v = x && x->type == REDIS_REPLY_INTEGER ? x->integer : -1;
    if (x) freeReplyObject(x);
    return v;
}

static long long s_used_memory(redisContext *r) {
    redisReply *x = redisCommand(r, "INFO memory");
    long long v = -1;
    const char *p = x && x->type == REDIS_REPLY_STRING ? strstr(x->str, "used_memory:") : NULL;
    if (p) v = atoll(p + 12);
    if (x) freeReplyObject(x);
    return v;
}

/* The highest client id Redis has given (ids only grow): the connections
 * a node opens after this are its own. */
static long long s_top_client(redisContext *r) {
    redisReply *x = redisCommand(r, "CLIENT LIST");
    long long top = -1;
    for (const char *p = x && x->type == REDIS_REPLY_STRING ? x->str : ""; (p = strstr(p, "id=")); p += 3) {
        long long id = atoll(p + 3);
        if (id > top) top = id;
    }
    if (x) freeReplyObject(x);
    return top;
}

/* Close, from Redis's side, the connections with ids in (after, upto]. */
static void s_kill_clients(redisContext *r, long long after, long long upto) {
    for (long long id = after + 1; id <= upto; id++) {
        redisReply *x = redisCommand(r, "CLIENT KILL ID %lld", id);
        if (x) freeReplyObject(x);
    }
}

/* ------------------------------------------------------------ nodes */

static int g_in_call;                  /* inside a cluster_* call: callbacks must not run */
static int g_reentrant;                /* callbacks that did */

typedef struct node {
    cluster_t *c;
    int ups, downs, up;
    int nmsg;
    char *msg;                         /* the last message */
    size_t msg_len;
    char reason[256];                  /* the last log line's reason */
    char id[CLUSTER_NODE_ID_LEN + 1];
} node_t;

static void on_message(void *ctx, const char *data, size_t len) {
    node_t *n = ctx;
    if (g_in_call) g_reentrant++;
    free(n->msg);
    n->msg = malloc(len ? len : 1);
    memcpy(n->msg, data, len);
    n->msg_len = len;
    n->nmsg++;
}

static void on_link(void *ctx, int up) {
    node_t *n = ctx;
    if (g_in_call) g_reentrant++;
    n->up = up;
    if (up) { n->ups++; snprintf(n->id, sizeof n->id, "%s", cluster_node_id(n->c)); }
    else n->downs++;
}

static void on_log(void *ctx, int level, const char *msg, const log_field_t *fields) {
    node_t *n = ctx;
    for (const log_field_t *f = fields; f->key; f++)
        if (strcmp(f->key, "reason") == 0 || strcmp(f->key, "error") == 0)
            snprintf(n->reason, sizeof n->reason, "%.*s", (int)(f->type == LOG_T_BYTES ? f->len : strlen(f->s)), f->s);
    if (getenv("TEST_CLUSTER_VERBOSE")) {                /* every line, as the host would log it */
        char line[512];
        log_format(line, sizeof line, level, msg, fields);
        printf("  [%p] %s\n", ctx, line);
    }
}

static cluster_options_t s_fast(void) {
    cluster_options_t o;
    cluster_options_default(&o);
    o.refresh_interval = 0.05;
    o.ttl = 0.3;
    o.timeout = 0.25;
    o.backoff_min = 0.02;
    o.backoff_max = 0.2;
    return o;
}

/* Nodes A and B of a suite live through all of it, bursts of 10,000 users
 * and a loaded machine included: a liveness TTL long enough that a slow
 * moment never has them taken for dead (s_fast is for the nodes whose lapse
 * is the point). */
#define STEADY_TIMEOUT 0.5
static cluster_options_t s_steady(void) {
    cluster_options_t o = s_fast();
    o.refresh_interval = 0.2;
    o.ttl = 2;
    o.timeout = STEADY_TIMEOUT;
    return o;
}

static int s_node_new(node_t *n, loop_t *loop, const char *url, const cluster_options_t *o) {
    memset(n, 0, sizeof *n);
    cluster_events_t ev = { .ctx = n, .on_message = on_message, .on_link = on_link, .log = on_log };
    char err[256];
    n->c = cluster_new(loop, url, o, &ev, err, sizeof err);
    if (!n->c) printf("cluster_new %s: %s\n", url, err);
    return n->c ? 0 : -1;
}

static void s_node_free(node_t *n) {
    cluster_destroy(&n->c);
    free(n->msg);
    n->msg = NULL;
}

#define WAIT_FOR(loop, cond, seconds)                                             \
    do {                                                                          \
        double until_ = loop_now() + (seconds);                                   \
        while (!(cond) && loop_now() < until_) loop_run_once((loop), 0.01);       \
    } while (0)

/* ------------------------------------------------------------ answers */

typedef struct answer {
    int calls, status;
    char node[80];
    long long receivers;
} answer_t;

static void on_lookup(void *arg, int status, const char *node, size_t len) {
    answer_t *a = arg;
    if (g_in_call) g_reentrant++;
    a->calls++;
    a->status = status;
    snprintf(a->node, sizeof a->node, "%.*s", (int)len, node ? node : "");
}

static void on_publish(void *arg, long long receivers) {
    answer_t *a = arg;
    if (g_in_call) g_reentrant++;
    a->calls++;
    a->receivers = receivers;
}

static int s_lookup(node_t *n, const char *uid, size_t len, answer_t *a) {
    memset(a, 0, sizeof *a);
    g_in_call = 1;
    int rc = cluster_lookup(n->c, uid, len, on_lookup, a);
    g_in_call = 0;
    return rc;
}

/* Look up and wait for the answer: its status, the node in `node`. */
static int s_lookup_wait(loop_t *loop, node_t *n, const char *uid, size_t len, char *node) {
    answer_t a;
    if (s_lookup(n, uid, len, &a) < 0) return -2;
    WAIT_FOR(loop, a.calls, WAIT);
    if (node) snprintf(node, CLUSTER_NODE_ID_LEN + 1, "%.36s", a.node);
    return a.calls == 1 ? a.status : -3;
}

static int s_publish(node_t *n, const char *node, const char *data, size_t len, answer_t *a) {
    memset(a, 0, sizeof *a);
    g_in_call = 1;
    int rc = cluster_publish(n->c, node, strlen(node), data, len, on_publish, a);
    g_in_call = 0;
    return rc;
}

/* Redis answers each connection in order, not two connections: a node's
 * writes are surely in once a lookup it sent after them is answered. */
static void s_barrier(loop_t *loop, node_t *n) {
    CHECK(s_lookup_wait(loop, n, "barrier", 7, NULL) == CLUSTER_ABSENT, "barrier lookup answered");
}

static void s_add(loop_t *loop, node_t *n, const char *uid, size_t len) {
    CHECK(cluster_user_add(n->c, uid, len) == 0, "add %.*s", (int)len, uid);
    s_barrier(loop, n);
}

static void s_remove(loop_t *loop, node_t *n, const char *uid, size_t len) {
    CHECK(cluster_user_remove(n->c, uid, len) == 0, "remove %.*s", (int)len, uid);
    s_barrier(loop, n);
}

/* ------------------------------------------------------------ URLs, options */

static void test_urls(void) {
    static const struct { const char *url, *why; } bad[] = {
        { "http://127.0.0.1", "must start redis:// or unix:" },
        { "redis://", "host is empty" },
        { "redis://127.0.0.1:0", "port must be a number from 1 to 65535" },
        { "redis://127.0.0.1:65536", "port must be a number from 1 to 65535" },
        { "redis://127.0.0.1:63x9", "port must be" },
        { "redis://127.0.0.1/x", "db (after the /) must be a number" },
        { "redis://alice@127.0.0.1", "a user needs a password" },
        { "redis://:s%zzcret@127.0.0.1", "bad %XX escape" },
        { "redis://:@127.0.0.1", "password is empty" },
        { "redis://[::1", "IPv6 host is written" },
        { "redis://no-such-host.invalid", "cannot resolve host" },
        { "unix:relative/path", "must be absolute" },
        { "unix:/tmp/x.sock?db=x", "db must be a number" },
        { "unix:/tmp/x.sock?password=y", "only query it takes is ?db=N" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        redis_address_t a;
        char err[512] = "";
        int rc = redis_address_parse(bad[i].url, &a, err, sizeof err);
        CHECK(rc == -1 && strstr(err, bad[i].why), "'%s': refused with '%s' (got '%s')", bad[i].url, bad[i].why, err);
    }
    char err[512];
    redis_address_t a;
    CHECK(redis_address_parse("redis://:hunter2@no-such-host.invalid", &a, err, sizeof err) < 0 &&
          !strstr(err, "hunter2") && strstr(err, ":***@"), "the password never shows: %s", err);
    char big[2000];
    memset(big, 'a', sizeof big);
    memcpy(big, "redis://", 8);
    big[sizeof big - 1] = '\0';
    CHECK(redis_address_parse(big, &a, err, sizeof err) < 0 && strstr(err, "longer than 1024"), "1999 bytes: %s", err);
    char pw[600] = "redis://:";
    memset(pw + 9, 'p', 513);
    strcpy(pw + 9 + 513, "@127.0.0.1");
    CHECK(redis_address_parse(pw, &a, err, sizeof err) < 0 && strstr(err, "longer than 512"), "513-byte password: %s", err);
    pw[9 + 512] = '@';                                       /* 512: taken */
    strcpy(pw + 9 + 512, "@127.0.0.1");
    CHECK(redis_address_parse(pw, &a, err, sizeof err) == 0 && strlen(a.password) == 512, "512-byte password: %s", err);

    CHECK(redis_address_parse("redis://bob:p%40ss:w@127.0.0.1:7000/3", &a, err, sizeof err) == 0 &&
          !strcmp(a.user, "bob") && !strcmp(a.password, "p@ss:w") && !strcmp(a.host, "127.0.0.1") &&
          a.port == 7000 && a.db == 3 && !a.is_unix, "user, %%40 password, port, db: %s", err);
    CHECK(redis_address_parse("redis://:secret@[::1]:6380", &a, err, sizeof err) == 0 &&
          !a.user[0] && !strcmp(a.password, "secret") && !strcmp(a.host, "::1") && a.port == 6380 && a.db == 0,
          "IPv6, requirepass form: %s", err);
    CHECK(redis_address_parse("redis://127.0.0.1", &a, err, sizeof err) == 0 && a.port == 6379 && !a.password[0],
          "default port, no AUTH");
    CHECK(redis_address_parse("unix:/run/redis.sock", &a, err, sizeof err) == 0 && a.is_unix &&
          !strcmp(a.path, "/run/redis.sock"), "unix:PATH");
    CHECK(redis_address_parse("unix://u:pw@/run/redis.sock?db=2", &a, err, sizeof err) == 0 && a.is_unix &&
          !strcmp(a.path, "/run/redis.sock") && !strcmp(a.user, "u") && !strcmp(a.password, "pw") && a.db == 2,
          "unix://USER:PASSWORD@PATH?db=N: %s", err);

    loop_t *loop = loop_new();
    cluster_options_t o = s_fast();
    o.ttl = 0.08;                                            /* under twice refresh_interval */
    CHECK(!cluster_new(loop, "redis://127.0.0.1:1", &o, NULL, err, sizeof err) && strstr(err, "ttl must be"),
          "bad option: %s", err);
    o = s_fast();
    o.timeout = 1;
    CHECK(!cluster_new(loop, "redis://127.0.0.1:1", &o, NULL, err, sizeof err) && strstr(err, "timeout must"),
          "timeout over ttl: %s", err);
    o = s_fast();
    o.max_message = 100;
    CHECK(!cluster_new(loop, "redis://127.0.0.1:1", &o, NULL, err, sizeof err) && strstr(err, "max_message"),
          "max_message under 1 KiB: %s", err);
    CHECK(!cluster_new(loop, "redis:/x", NULL, NULL, err, sizeof err) && strstr(err, "bad Redis URL"), "bad URL: %s", err);
    loop_destroy(&loop);
}

/* ------------------------------------------------------------ the suite */

typedef struct suite {
    loop_t *loop;
    server_t *server;
    redisContext *admin;
    const char *url;
    const char *label;
} suite_t;

static long long s_dbsize(suite_t *s) { return s_int(s->admin, "DBSIZE"); }

/* Nodes of earlier tests lapse and are swept: wait for A's and B's keys alone. */
static long long s_settle(suite_t *s) {
    WAIT_FOR(s->loop, s_dbsize(s) == 3, 3 * WAIT);
    CHECK(s_dbsize(s) == 3, "[%s] settled: A's and B's liveness keys and pseud:nodes alone (%lld)", s->label,
          s_dbsize(s));
    return s_dbsize(s);
}

static void s_readmin(suite_t *s) {
    if (s->admin) redisFree(s->admin);
    s->admin = s_admin(s->server);
}

static void test_directory(suite_t *s, node_t *a, node_t *b) {
    char node[CLUSTER_NODE_ID_LEN + 1];
    CHECK(s_lookup_wait(s->loop, b, "alice", 5, node) == CLUSTER_ABSENT, "[%s] nobody has alice yet", s->label);
    s_add(s->loop, a, "alice", 5);
    CHECK(s_lookup_wait(s->loop, b, "alice", 5, node) == CLUSTER_FOUND && !strcmp(node, a->id),
          "[%s] B finds alice on A (%s, A is %s)", s->label, node, a->id);
    CHECK(s_lookup_wait(s->loop, a, "alice", 5, node) == CLUSTER_FOUND && !strcmp(node, a->id), "A finds itself");
    s_remove(s->loop, a, "alice", 5);
    CHECK(s_lookup_wait(s->loop, a, "alice", 5, NULL) == CLUSTER_ABSENT, "[%s] gone after remove", s->label);

    /* binary ids: NUL and 0xff, and the length limits */
    static const char bin[] = "u\0\xff\xfe\0z";
    char max[CLUSTER_MAX_USER + 1];
    memset(max, '\xff', sizeof max);
    max[7] = '\0';
    s_add(s->loop, b, bin, sizeof bin - 1);
    s_add(s->loop, b, max, CLUSTER_MAX_USER);
    CHECK(s_lookup_wait(s->loop, a, bin, sizeof bin - 1, node) == CLUSTER_FOUND && !strcmp(node, b->id), "binary id found");
    CHECK(s_lookup_wait(s->loop, a, bin, 2, NULL) == CLUSTER_ABSENT, "its prefix is another id");
    CHECK(s_lookup_wait(s->loop, a, max, CLUSTER_MAX_USER, node) == CLUSTER_FOUND, "255 bytes found");
    answer_t ans;
    errno = 0;
    CHECK(s_lookup(a, max, CLUSTER_MAX_USER + 1, &ans) == -1 && errno == EINVAL &&
          strstr(cluster_error(a->c), "256 bytes (1 to 255)"), "256 bytes refused: %s", cluster_error(a->c));
    CHECK(cluster_user_add(a->c, max, 0) == -1 && errno == EINVAL, "0 bytes refused");
    CHECK(cluster_user_add(a->c, max, CLUSTER_MAX_USER + 1) == -1, "add of 256 bytes refused");
    loop_run_once(s->loop, 0.02);
    CHECK(ans.calls == 0, "a refused lookup never calls back");
    s_remove(s->loop, b, bin, sizeof bin - 1);
    s_remove(s->loop, b, max, CLUSTER_MAX_USER);

    /* moving, late disconnect: A had carol, B adds her, then A's remove comes */
    s_add(s->loop, a, "carol", 5);
    CHECK(s_lookup_wait(s->loop, a, "carol", 5, node) == CLUSTER_FOUND && !strcmp(node, a->id), "carol on A");
    s_add(s->loop, b, "carol", 5);
    CHECK(s_lookup_wait(s->loop, b, "carol", 5, node) == CLUSTER_FOUND && !strcmp(node, b->id), "carol moved to B");
    s_remove(s->loop, a, "carol", 5);                   /* after B's add: must not erase it */
    CHECK(s_lookup_wait(s->loop, a, "carol", 5, node) == CLUSTER_FOUND && !strcmp(node, b->id),
          "[%s] A's late remove left B's entry (found on %s)", s->label, node);
    /* and the other order: B's remove first, then A's add */
    s_remove(s->loop, b, "carol", 5);
    CHECK(s_lookup_wait(s->loop, b, "carol", 5, NULL) == CLUSTER_ABSENT, "carol left B");
    s_add(s->loop, a, "carol", 5);
    CHECK(s_lookup_wait(s->loop, b, "carol", 5, node) == CLUSTER_FOUND && !strcmp(node, a->id), "carol back on A");
    s_remove(s->loop, a, "carol", 5);
    CHECK(s_lookup_wait(s->loop, b, "carol", 5, NULL) == CLUSTER_ABSENT, "carol gone");

    /* on two nodes at once (two connections of one user): found while either
     * holds her, the latest first, whichever leaves first */
    s_add(s->loop, a, "twice", 5);
    s_add(s->loop, b, "twice", 5);
    CHECK(s_lookup_wait(s->loop, a, "twice", 5, node) == CLUSTER_FOUND && !strcmp(node, b->id), "the latest: B");
    s_remove(s->loop, b, "twice", 5);
    CHECK(s_lookup_wait(s->loop, b, "twice", 5, node) == CLUSTER_FOUND && !strcmp(node, a->id),
          "[%s] left B, still on A: found there (%s)", s->label, node);
    s_add(s->loop, b, "twice", 5);
    s_remove(s->loop, a, "twice", 5);
    CHECK(s_lookup_wait(s->loop, a, "twice", 5, node) == CLUSTER_FOUND && !strcmp(node, b->id),
          "[%s] left A, still on B", s->label);
    s_remove(s->loop, b, "twice", 5);
    CHECK(s_lookup_wait(s->loop, a, "twice", 5, NULL) == CLUSTER_ABSENT, "twice gone from both");
}

/* Two services on one Redis: each sees its own users only. */
static void test_services(suite_t *s) {
    node_t x, y;
    cluster_options_t o = s_steady();
    o.service = "svc:x";
    CHECK(s_node_new(&x, s->loop, s->url, &o) == 0, "a node of service svc:x");
    o.service = "svc";                                  /* a prefix of the other's name */
    CHECK(s_node_new(&y, s->loop, s->url, &o) == 0, "a node of service svc");
    if (!x.c || !y.c) return;
    WAIT_FOR(s->loop, x.up && y.up, WAIT);
    char node[CLUSTER_NODE_ID_LEN + 1];
    s_add(s->loop, &x, "x:dana", 6);
    s_add(s->loop, &y, "dana", 4);
    CHECK(s_lookup_wait(s->loop, &y, "x:dana", 6, NULL) == CLUSTER_ABSENT,
          "[%s] svc does not see svc:x's user, whatever the bytes", s->label);
    CHECK(s_lookup_wait(s->loop, &x, "dana", 4, NULL) == CLUSTER_ABSENT, "nor svc:x svc's");
    CHECK(s_lookup_wait(s->loop, &x, "x:dana", 6, node) == CLUSTER_FOUND && !strcmp(node, x.id), "each its own");
    s_remove(s->loop, &x, "x:dana", 6);
    s_remove(s->loop, &y, "dana", 4);
    o.service = "";
    char err[160] = "";
    CHECK(cluster_new(s->loop, s->url, &o, NULL, err, sizeof err) == NULL && strstr(err, "service"),
          "an empty service name is refused: %s", err);
    s_node_free(&x);
    s_node_free(&y);
}

static void test_publish(suite_t *s, node_t *a, node_t *b) {
    static const char bytes[] = "\0head\xff\x00\xfe tail\0";
    answer_t ans;
    int before = b->nmsg;
    CHECK(s_publish(a, b->id, bytes, sizeof bytes - 1, &ans) == 0, "publish to B");
    WAIT_FOR(s->loop, ans.calls && b->nmsg > before, WAIT);
    CHECK(ans.calls == 1 && ans.receivers == 1, "[%s] one receiver (%lld)", s->label, ans.receivers);
    CHECK(b->nmsg == before + 1 && b->msg_len == sizeof bytes - 1 && !memcmp(b->msg, bytes, sizeof bytes - 1),
          "[%s] B got the bytes exactly (%zu of %zu)", s->label, b->msg_len, sizeof bytes - 1);
    size_t mib = 1 << 20;
    char *big = malloc(mib);
    for (size_t i = 0; i < mib; i++) big[i] = (char)(i * 131 + (i >> 11));
    before = b->nmsg;
    CHECK(s_publish(a, b->id, big, mib, &ans) == 0, "publish 1 MiB");
    WAIT_FOR(s->loop, ans.calls && b->nmsg > before, WAIT);
    CHECK(b->nmsg == before + 1 && b->msg_len == mib && !memcmp(b->msg, big, mib), "1 MiB exactly");
    before = b->nmsg;
    CHECK(s_publish(a, b->id, "", 0, &ans) == 0, "an empty message");
    WAIT_FOR(s->loop, ans.calls && b->nmsg > before, WAIT);
    CHECK(b->nmsg == before + 1 && b->msg_len == 0, "an empty message arrives empty");

    CHECK(s_publish(a, "00000000-0000-4000-8000-000000000000", "x", 1, &ans) == 0, "publish to nobody");
    WAIT_FOR(s->loop, ans.calls, WAIT);
    CHECK(ans.calls == 1 && ans.receivers == 0, "[%s] nobody listens: receivers 0 (%lld)", s->label, ans.receivers);

    /* over max_message: refused at the sender; at a receiver with a smaller
     * bound, dropped and counted (one that fits in a read, one that does not),
     * the subscription lives on */
    cluster_options_t o = s_fast();
    o.max_message = 2048;
    node_t small;
    CHECK(s_node_new(&small, s->loop, s->url, &o) == 0, "a node with max_message 2048");
    WAIT_FOR(s->loop, small.up, WAIT);
    CHECK(s_publish(&small, b->id, big, 2049, &ans) == -1 && errno == EMSGSIZE &&
          strstr(cluster_error(small.c), "2049 bytes, over max_message (2048)"), "sender refuses: %s",
          cluster_error(small.c));
    CHECK(s_publish(a, small.id, big, 4000, &ans) == 0 && s_publish(a, small.id, big, 300000, &ans) == 0 &&
          s_publish(a, small.id, big, 2048, &ans) == 0, "publish 4000, 300,000, 2048 bytes to it");
    WAIT_FOR(s->loop, small.nmsg == 1 && ans.calls, WAIT);
    cluster_stats_t st;
    cluster_stats(small.c, &st);
    CHECK(st.oversize == 2 && small.nmsg == 1 && small.msg_len == 2048 && !memcmp(small.msg, big, 2048),
          "[%s] two dropped and counted (%llu), the 2048-byte one delivered (%d, %zu bytes)", s->label,
          (unsigned long long)st.oversize, small.nmsg, small.msg_len);
    CHECK(small.downs == 0 && cluster_is_up(small.c), "its link stayed up");

    /* max_pending: the third of three refused, naming the bound */
    cluster_options_t p = s_fast();
    p.max_pending = 2;
    node_t few;
    CHECK(s_node_new(&few, s->loop, s->url, &p) == 0, "a node with max_pending 2");
    WAIT_FOR(s->loop, few.up, WAIT);
    answer_t q[3];
    CHECK(s_lookup(&few, "x", 1, &q[0]) == 0 && s_lookup(&few, "y", 1, &q[1]) == 0, "two lookups taken");
    errno = 0;
    CHECK(s_lookup(&few, "z", 1, &q[2]) == -1 && errno == EBUSY &&
          strstr(cluster_error(few.c), "2 lookups and publishes are pending, the most max_pending (2) allows"),
          "the third refused: %s", cluster_error(few.c));
    WAIT_FOR(s->loop, q[0].calls && q[1].calls, WAIT);
    CHECK(q[0].calls == 1 && q[1].calls == 1 && q[2].calls == 0, "the two answered once, the refused never");
    CHECK(s_lookup(&few, "z", 1, &q[2]) == 0, "taken again once they are answered");
    WAIT_FOR(s->loop, q[2].calls, WAIT);
    s_node_free(&few);
    s_node_free(&small);
    free(big);
}

/* 1,000 users added and removed leave nothing; 10,000 give memory per user. */
static void test_churn(suite_t *s, node_t *a, node_t *b) {
    long long base = s_settle(s);
    char uid[32];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(uid, sizeof uid, "churn-%d", i);
        cluster_user_add(i % 2 ? a->c : b->c, uid, (size_t)n);
    }
    CHECK(s_lookup_wait(s->loop, a, "churn-999", 9, NULL) == CLUSTER_FOUND &&
          s_lookup_wait(s->loop, b, "churn-998", 9, NULL) == CLUSTER_FOUND, "the last ones are in");
    long long full = s_dbsize(s);
    CHECK(full == base + 1000 + 2, "[%s] 1,000 user keys + 2 user sets (%lld -> %lld)", s->label, base, full);
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(uid, sizeof uid, "churn-%d", i);
        cluster_user_remove(i % 2 ? a->c : b->c, uid, (size_t)n);
    }
    CHECK(s_lookup_wait(s->loop, a, "churn-999", 9, NULL) == CLUSTER_ABSENT &&
          s_lookup_wait(s->loop, b, "churn-998", 9, NULL) == CLUSTER_ABSENT, "and out");
    CHECK(s_dbsize(s) == base, "[%s] key count back to its baseline (%lld, was %lld)", s->label, s_dbsize(s), base);

    enum { MANY = 10000 };
    long long mem0 = s_used_memory(s->admin);
    for (int i = 0; i < MANY; i++) {
        int n = snprintf(uid, sizeof uid, "user-%08d", i);
        cluster_user_add(a->c, uid, (size_t)n);
    }
    CHECK(s_lookup_wait(s->loop, a, "user-00009999", 13, NULL) == CLUSTER_FOUND, "10,000 in");
    long long mem1 = s_used_memory(s->admin);
    printf("[%s] Redis memory per registered user: %.0f bytes (10,000 users of 13 bytes, used_memory %lld -> %lld)\n",
           s->label, (double)(mem1 - mem0) / MANY, mem0, mem1);
    for (int i = 0; i < MANY; i++) {
        int n = snprintf(uid, sizeof uid, "user-%08d", i);
        cluster_user_remove(a->c, uid, (size_t)n);
    }
    CHECK(s_lookup_wait(s->loop, a, "user-00009999", 13, NULL) == CLUSTER_ABSENT, "10,000 out");
    CHECK(s_dbsize(s) == base, "[%s] baseline again after 10,000 (%lld)", s->label, s_dbsize(s));
}

static int s_cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Round trips on loopback: a lookup (EVALSHA) answered; a publish from A
 * reaching B's on_message, B publishing back, A's on_message (a forwarded
 * call's two hops). */
static void test_timing(suite_t *s, node_t *a, node_t *b) {
    enum { N = 2000 };
    static double t[N];
    s_add(s->loop, b, "timed", 5);
    CHECK(s_lookup_wait(s->loop, a, "timed", 5, NULL) == CLUSTER_FOUND, "timed user in");
    int ok = 0;
    for (int i = 0; i < N; i++) {
        double t0 = loop_now();
        ok += s_lookup_wait(s->loop, a, "timed", 5, NULL) == CLUSTER_FOUND;
        t[i] = (loop_now() - t0) * 1e6;
    }
    qsort(t, N, sizeof *t, s_cmp_double);
    CHECK(ok == N, "every timed lookup found it (%d)", ok);
    printf("[%s] lookup round trip: p50 %.1f us, p99 %.1f us (%d lookups, one at a time)\n", s->label,
           t[N / 2], t[N * 99 / 100], N);
    ok = 0;
    for (int i = 0; i < N; i++) {
        answer_t x, y;
        int na = a->nmsg, nb = b->nmsg;
        double t0 = loop_now();
        s_publish(a, b->id, "ping", 4, &x);
        WAIT_FOR(s->loop, b->nmsg > nb, WAIT);
        s_publish(b, a->id, "pong", 4, &y);
        WAIT_FOR(s->loop, a->nmsg > na, WAIT);
        t[i] = (loop_now() - t0) * 1e6;
        WAIT_FOR(s->loop, x.calls && y.calls, WAIT);
        ok += a->nmsg == na + 1 && x.receivers == 1 && y.receivers == 1;
    }
    qsort(t, N, sizeof *t, s_cmp_double);
    CHECK(ok == N, "every ping answered (%d)", ok);
    printf("[%s] publish round trip (A -> B -> A): p50 %.1f us, p99 %.1f us (%d)\n", s->label,
           t[N / 2], t[N * 99 / 100], N);
    s_remove(s->loop, b, "timed", 5);
}

/* Dead nodes: gone without a word (their connections cut from Redis's
 * side first, so the goodbye cluster_destroy writes reaches nobody, as
 * after a SIGKILL), their users never removed. */
static void test_dead_node(suite_t *s, node_t *a) {
    long long base = s_settle(s);
    cluster_options_t o = s_fast();
    node_t d, e;
    long long before_d = s_top_client(s->admin);
    CHECK(s_node_new(&d, s->loop, s->url, &o) == 0, "node D");
    WAIT_FOR(s->loop, d.up, WAIT);
    long long before_e = s_top_client(s->admin);
    CHECK(s_node_new(&e, s->loop, s->url, &o) == 0, "node E");
    WAIT_FOR(s->loop, e.up, WAIT);
    long long after_e = s_top_client(s->admin);
    char dkey[80], ekey[80];
    snprintf(dkey, sizeof dkey, "pseud:node:%s", d.id);
    snprintf(ekey, sizeof ekey, "pseud:node:%s", e.id);
    cluster_user_add(d.c, "d1", 2);
    cluster_user_add(d.c, "d2", 2);
    s_add(s->loop, &d, "d3", 2);
    s_add(s->loop, &e, "e1", 2);
    char node[CLUSTER_NODE_ID_LEN + 1];
    CHECK(s_lookup_wait(s->loop, &d, "d3", 2, node) == CLUSTER_FOUND && !strcmp(node, d.id) &&
          s_lookup_wait(s->loop, &e, "e1", 2, NULL) == CLUSTER_FOUND, "their users are in");
    CHECK(s_dbsize(s) == base + 2 + 2 + 4, "[%s] 2 liveness keys, 2 sets, 4 users (%lld over %lld)", s->label,
          s_dbsize(s), base);
    s_kill_clients(s->admin, before_d, before_e);
    s_node_free(&d);                       /* as a SIGKILL: nothing removed */
    answer_t ans;
    CHECK(s_lookup(a, "d1", 2, &ans) == 0, "lookup while D's key lives");
    WAIT_FOR(s->loop, ans.calls, WAIT);
    CHECK(ans.status == CLUSTER_FOUND, "[%s] D still counts as alive until its TTL lapses", s->label);
    CHECK(s_publish(a, node, "x", 1, &ans) == 0, "publish to dead D");
    WAIT_FOR(s->loop, ans.calls, WAIT);
    CHECK(ans.receivers == 0, "[%s] ... which reaches nobody: fail fast (%lld)", s->label, ans.receivers);
    WAIT_FOR(s->loop, s_exists(s->admin, dkey) == 0, WAIT);
    CHECK(s_exists(s->admin, dkey) == 0, "D's liveness key lapsed");
    CHECK(s_lookup_wait(s->loop, a, "d1", 2, NULL) == CLUSTER_ABSENT, "[%s] then a lookup says ABSENT", s->label);
    WAIT_FOR(s->loop, s_dbsize(s) == base + 3, WAIT);       /* E's three keys left */
    CHECK(s_dbsize(s) == base + 3, "[%s] and D's keys are collected (%lld over %lld; E keeps 3)", s->label,
          s_dbsize(s), base);
    CHECK(s_lookup_wait(s->loop, a, "d2", 2, NULL) == CLUSTER_ABSENT, "d2 too");

    /* E: nobody looks its user up; the sweeps collect it */
    s_kill_clients(s->admin, before_e, after_e);
    s_node_free(&e);
    WAIT_FOR(s->loop, s_dbsize(s) == base, WAIT);
    CHECK(s_dbsize(s) == base, "[%s] the sweep collects E's keys unasked (%lld, baseline %lld)", s->label,
          s_dbsize(s), base);

    /* taken for dead while alive (a SIGSTOP past its TTL): its key deleted */
    node_t f;
    CHECK(s_node_new(&f, s->loop, s->url, &o) == 0, "node F");
    WAIT_FOR(s->loop, f.up, WAIT);
    cluster_user_add(f.c, "f1", 2);
    s_add(s->loop, &f, "f2", 2);
    CHECK(s_lookup_wait(s->loop, a, "f2", 2, NULL) == CLUSTER_FOUND, "F's users in");
    cluster_user_remove(f.c, "f2", 2);                       /* leaves while "stopped": */
    char old[CLUSTER_NODE_ID_LEN + 1], fkey[80];
    snprintf(old, sizeof old, "%s", f.id);
    snprintf(fkey, sizeof fkey, "pseud:node:%s", old);
    redisReply *r = redisCommand(s->admin, "DEL %s", fkey);
    if (r) freeReplyObject(r);
    /* (the remove above may reach Redis first; either way f2 must end ABSENT) */
    WAIT_FOR(s->loop, f.ups == 2, WAIT);
    CHECK(f.downs == 1 && f.ups == 2 && strcmp(f.id, old) != 0, "[%s] F re-linked under a new id (%d down, %d up)",
          s->label, f.downs, f.ups);
    CHECK(s_lookup_wait(s->loop, a, "f1", 2, node) == CLUSTER_FOUND && !strcmp(node, f.id),
          "[%s] f1 registered again under the new id", s->label);
    CHECK(s_lookup_wait(s->loop, a, "f2", 2, NULL) == CLUSTER_ABSENT, "f2, gone meanwhile, stays gone");
    s_node_free(&f);
    WAIT_FOR(s->loop, s_dbsize(s) == base, 3 * WAIT);
    CHECK(s_dbsize(s) == base, "[%s] baseline once F is gone too (%lld)", s->label, s_dbsize(s));
}

/* A node destroyed cleanly says goodbye: its liveness key and entries go
 * at once, not after its TTL (a minute here, far past every wait). */
static void test_leave(suite_t *s, node_t *a) {
    long long base = s_settle(s);
    cluster_options_t o = s_fast();
    o.ttl = 60;
    node_t g;
    CHECK(s_node_new(&g, s->loop, s->url, &o) == 0, "node G");
    WAIT_FOR(s->loop, g.up, WAIT);
    s_add(s->loop, &g, "g1", 2);
    s_add(s->loop, &g, "g2", 2);
    CHECK(s_lookup_wait(s->loop, a, "g1", 2, NULL) == CLUSTER_FOUND, "G's users in");
    CHECK(s_dbsize(s) == base + 4, "[%s] G: a liveness key, a set, 2 users (%lld over %lld)", s->label,
          s_dbsize(s), base);
    s_node_free(&g);
    WAIT_FOR(s->loop, s_dbsize(s) == base, WAIT);
    CHECK(s_dbsize(s) == base, "[%s] a node destroyed cleanly takes its keys with it (%lld, baseline %lld)",
          s->label, s_dbsize(s), base);
    CHECK(s_lookup_wait(s->loop, a, "g2", 2, NULL) == CLUSTER_ABSENT, "[%s] its users are ABSENT at once",
          s->label);
}

/* redis-server SIGKILLed with calls in flight, then restarted empty. */
static void test_redis_lost(suite_t *s, node_t *a, node_t *b) {
    enum { N = 50 };
    answer_t look[N], pub[N];
    s_add(s->loop, a, "alice", 5);
    s_add(s->loop, b, "bob", 3);
    CHECK(s_lookup_wait(s->loop, a, "bob", 3, NULL) == CLUSTER_FOUND, "bob in");
    for (int i = 0; i < N; i++) {
        CHECK(s_lookup(a, "bob", 3, &look[i]) == 0, "lookup %d taken", i);
        CHECK(s_publish(a, b->id, "x", 1, &pub[i]) == 0, "publish %d taken", i);
    }
    s_server_kill(s->server);
    WAIT_FOR(s->loop, !a->up && !b->up, WAIT);
    CHECK(a->downs == 2 && b->downs >= 1, "[%s] on_link(0) on both (%d, %d)", s->label, a->downs, b->downs);
    loop_run_once(s->loop, 0.05);
    int once = 0, down = 0;
    for (int i = 0; i < N; i++) {
        once += look[i].calls == 1 && pub[i].calls == 1;
        down += (look[i].status == CLUSTER_DOWN || look[i].status == CLUSTER_FOUND) &&
                (pub[i].receivers == -1 || pub[i].receivers == 1);
    }
    CHECK(once == N && down == N, "[%s] every pending call answered once, DOWN / -1 unless Redis answered first "
          "(%d once, %d right)", s->label, once, down);
    cluster_stats_t st;
    cluster_stats(a->c, &st);
    CHECK(st.pending == 0, "nothing pending (%zu)", st.pending);

    /* while down: fail fast, from the loop */
    answer_t ans, pans;
    double t0 = loop_now();
    CHECK(s_lookup(a, "bob", 3, &ans) == 0 && s_publish(a, b->id, "x", 1, &pans) == 0, "taken while down");
    CHECK(ans.calls == 0 && pans.calls == 0, "not answered inside the call");
    WAIT_FOR(s->loop, ans.calls && pans.calls, WAIT);
    CHECK(ans.calls == 1 && ans.status == CLUSTER_DOWN && pans.calls == 1 && pans.receivers == -1 &&
          loop_now() - t0 < 0.1, "[%s] DOWN / -1 at once (%.1f ms)", s->label, (loop_now() - t0) * 1e3);
    cluster_user_add(a->c, "amy", 3);                        /* kept for the resync */
    cluster_user_remove(a->c, "alice", 5);

    /* restarted empty on the same port */
    CHECK(s_server_start(s->server) == 0, "redis-server restarted");
    s_readmin(s);
    WAIT_FOR(s->loop, a->up && b->up, WAIT);
    CHECK(a->ups == 3 && b->ups >= 2, "[%s] on_link(1) again on both (%d, %d)", s->label, a->ups, b->ups);
    char node[CLUSTER_NODE_ID_LEN + 1];
    CHECK(s_lookup_wait(s->loop, a, "bob", 3, node) == CLUSTER_FOUND && !strcmp(node, b->id),
          "[%s] bob registered again, under B's new id", s->label);
    CHECK(s_lookup_wait(s->loop, b, "amy", 3, node) == CLUSTER_FOUND && !strcmp(node, a->id),
          "amy, added while down, registered");
    CHECK(s_lookup_wait(s->loop, b, "alice", 5, NULL) == CLUSTER_ABSENT, "alice, removed while down, not");
    cluster_user_remove(a->c, "amy", 3);
    cluster_user_remove(b->c, "bob", 3);
}

/* redis-server stopped (SIGSTOP: a hung Redis, or a partition): nothing
 * answers, the watchdog loses the link after `timeout`, each pending call
 * is answered once; resumed (SIGCONT): the link comes back. */
static void test_redis_stalled(suite_t *s, node_t *a, node_t *b) {
    enum { N = 20 };
    answer_t look[N];
    int downs = a->downs, ups = a->ups;
    kill(s->server->pid, SIGSTOP);
    double t0 = loop_now();
    for (int i = 0; i < N; i++) CHECK(s_lookup(a, "bob", 3, &look[i]) == 0, "lookup %d taken", i);
    WAIT_FOR(s->loop, !a->up, WAIT);
    double took = loop_now() - t0;
    CHECK(!a->up && a->downs == downs + 1 && took >= STEADY_TIMEOUT * 0.8 && took < STEADY_TIMEOUT + 1.0,
          "[%s] Redis silent: link lost after about timeout (%g s): %.3f s", s->label, STEADY_TIMEOUT, took);
    int once = 0;
    for (int i = 0; i < N; i++) once += look[i].calls == 1 && look[i].status == CLUSTER_DOWN;
    CHECK(once == N, "[%s] each pending lookup answered once, DOWN (%d of %d)", s->label, once, N);
    CHECK(strstr(a->reason, "answered nothing for"), "the log says why: %s", a->reason);
    kill(s->server->pid, SIGCONT);
    WAIT_FOR(s->loop, a->up && b->up, WAIT);
    CHECK(a->up && a->ups == ups + 1 && b->up, "[%s] resumed: up again", s->label);
}

static void test_reentrancy_and_destroy(suite_t *s, node_t *a) {
    /* callbacks pending when a node is destroyed: each once, DOWN */
    node_t g;
    cluster_options_t o = s_fast();
    CHECK(s_node_new(&g, s->loop, s->url, &o) == 0, "node G");
    WAIT_FOR(s->loop, g.up, WAIT);
    answer_t x, y;
    CHECK(s_lookup(&g, "nobody", 6, &x) == 0 && s_publish(&g, a->id, "x", 1, &y) == 0, "two pending");
    s_node_free(&g);
    CHECK(x.calls == 1 && x.status == CLUSTER_DOWN && y.calls == 1 && y.receivers == -1,
          "destroy answers them, DOWN / -1 (%d, %d)", x.calls, y.calls);
}

static void run_suite(suite_t *s) {
    node_t a, b;
    cluster_options_t o = s_steady();
    CHECK(s_node_new(&a, s->loop, s->url, &o) == 0 && s_node_new(&b, s->loop, s->url, &o) == 0, "[%s] nodes A, B", s->label);
    if (!a.c || !b.c) return;
    WAIT_FOR(s->loop, a.up && b.up, WAIT);
    CHECK(a.up && b.up && a.ups == 1 && b.ups == 1, "[%s] both links up (%s / %s)", s->label, a.reason, b.reason);
    CHECK(strlen(a.id) == CLUSTER_NODE_ID_LEN && strcmp(a.id, b.id) != 0, "two incarnations");
    CHECK(s_dbsize(s) == 3, "[%s] baseline: 2 liveness keys and pseud:nodes (%lld)", s->label, s_dbsize(s));
    test_directory(s, &a, &b);
    test_services(s);
    test_publish(s, &a, &b);
    test_churn(s, &a, &b);
    test_timing(s, &a, &b);
    test_dead_node(s, &a);
    test_leave(s, &a);
    test_reentrancy_and_destroy(s, &a);
    test_redis_stalled(s, &a, &b);
    test_redis_lost(s, &a, &b);
    cluster_stats_t st;
    cluster_stats(a.c, &st);
    CHECK(st.errors == 0, "[%s] no Redis error replies on A (%llu; last: %s)", s->label,
          (unsigned long long)st.errors, a.reason);
    s_node_free(&a);
    s_node_free(&b);
    CHECK(g_reentrant == 0, "[%s] no callback ran inside a cluster_* call (%d did)", s->label, g_reentrant);
}

/* requirepass alone (AUTH PASSWORD), a wrong password, a unix socket. */
static void test_logins(loop_t *loop, server_t *srv) {
    char url[128];
    cluster_options_t o = s_fast();
    node_t n;
    snprintf(url, sizeof url, "redis://:adminpw@127.0.0.1:%d/2", srv->port);
    CHECK(s_node_new(&n, loop, url, &o) == 0, "requirepass URL");
    WAIT_FOR(loop, n.up, WAIT);
    CHECK(n.up, "up with AUTH PASSWORD and SELECT 2 (%s)", n.reason);
    CHECK(s_lookup_wait(loop, &n, "x", 1, NULL) == CLUSTER_ABSENT, "and serving");
    s_node_free(&n);
    snprintf(url, sizeof url, "redis://pseud:wrong@127.0.0.1:%d", srv->port);
    CHECK(s_node_new(&n, loop, url, &o) == 0, "a wrong password is no error at cluster_new");
    WAIT_FOR(loop, strstr(n.reason, "WRONGPASS"), WAIT);
    CHECK(!n.up && strstr(n.reason, "WRONGPASS") && !strstr(n.reason, "wrong"),
          "never up; the log says why: %s", n.reason);
    answer_t ans;
    CHECK(s_lookup(&n, "x", 1, &ans) == 0, "lookup while never up");
    WAIT_FOR(loop, ans.calls, WAIT);
    CHECK(ans.calls == 1 && ans.status == CLUSTER_DOWN, "DOWN");
    s_node_free(&n);
    snprintf(url, sizeof url, "unix://pseud:secret@%s", srv->sock);
    CHECK(s_node_new(&n, loop, url, &o) == 0, "unix socket URL");
    WAIT_FOR(loop, n.up, WAIT);
    CHECK(n.up && s_lookup_wait(loop, &n, "x", 1, NULL) == CLUSTER_ABSENT, "up and serving over %s (%s)", srv->sock, n.reason);
    s_node_free(&n);
}

static void s_ignore_reply(redisAsyncContext *ac, void *reply, void *arg) { (void)ac; (void)reply; (void)arg; }
static void s_ignore_closed(void *arg, redis_conn_t *c, const char *why) { (void)arg; (void)c; (void)why; }

/* A write to a Redis that has gone ends no process: SIGPIPE at its default
 * (the host does not ignore it), on a unix socket whose peer closed before
 * the write (a write there fails at once, EPIPE). In a child, so that the
 * signal, if it came, would end only the child. */
static void test_write_to_gone_redis(void) {
    char dir[] = "/tmp/pseud-test-cluster-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "a folder for the socket");
    char path[96], url[128];
    snprintf(path, sizeof path, "%s/redis.sock", dir);
    snprintf(url, sizeof url, "unix://%s", path);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4) < 0) _exit(3);
        redis_lib_t lib;
        redis_address_t a;
        char err[256];
        if (redis_lib_load(&lib, err, sizeof err) < 0 || redis_address_parse(url, &a, err, sizeof err) < 0) _exit(4);
        loop_t *loop = loop_new();
        redis_conn_t *c = redis_conn_new(loop, &lib, &a, 0, 1 << 20, 0, s_ignore_closed, NULL, err, sizeof err);
        int afd = c ? accept(lfd, NULL, NULL) : -1;
        if (afd < 0) _exit(5);
        for (int i = 0; i < 3; i++) loop_run_once(loop, 0.01);   /* connected */
        close(afd);                                      /* Redis goes, unseen yet */
        const char *argv[1] = { "PING" };
        size_t lens[1] = { 4 };
        if (redis_conn_command(c, s_ignore_reply, NULL, 1, argv, lens) < 0) _exit(6);
        redis_conn_flush(c);                             /* as a stopping node's goodbye */
        for (int i = 0; i < 3; i++) loop_run_once(loop, 0.01);
        redis_conn_destroy(&c);
        loop_destroy(&loop);
        redis_lib_unload(&lib);
        _exit(0);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid, "the child ran");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a write to a Redis that has gone ends no process (exit %d, signal %d)",
          WIFEXITED(status) ? WEXITSTATUS(status) : -1, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_write_to_gone_redis();                          /* before SIGPIPE is ignored below */
    signal(SIGPIPE, SIG_IGN);
    test_urls();
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        printf("test_cluster: redis-server not found (scripts/setup installs it): skipped\n");
        return 77;
    }
    signal(SIGSEGV, s_on_crash);
    signal(SIGABRT, s_on_crash);
    signal(SIGINT, s_on_crash);
    signal(SIGTERM, s_on_crash);
    loop_t *loop = loop_new();
    for (int acl = 0; acl <= 1; acl++) {
        server_t srv = { .port = s_free_port(), .acl = acl };
        if (srv.port < 0 || s_server_start(&srv) < 0) {
            CHECK(0, "redis-server did not start on port %d", srv.port);
            break;
        }
        char url[128];
        if (acl) snprintf(url, sizeof url, "redis://pseud:secret@127.0.0.1:%d/1", srv.port);
        else snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
        suite_t s = { .loop = loop, .server = &srv, .url = url, .label = acl ? "acl" : "open" };
        s_readmin(&s);
        CHECK(s.admin != NULL, "admin connection");
        if (s.admin) run_suite(&s);
        if (acl) test_logins(loop, &srv);
        if (s.admin) redisFree(s.admin);
        s_server_kill(&srv);
    }
    CHECK(loop_timer_count(loop) == 0, "no timer left on the loop (%zu)", loop_timer_count(loop));
    loop_destroy(&loop);
    printf("test_cluster: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
