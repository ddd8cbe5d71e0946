/*
 * redis: hiredis 0.14 on the loop (see redis.h).
 *
 * The adapter is libevent.h's shape: hiredis calls addRead/delRead/
 * addWrite/delWrite as it goes and cleanup once as it frees the context;
 * here they set what the loop's fd watch waits for. Every way a context
 * dies (refused, EOF, an error, redisAsyncFree) ends in cleanup, after
 * hiredis has called each pending callback with a NULL reply, so cleanup is
 * where the owner hears that the connection is gone.
 *
 * The reply bound: hiredis reads 16 KiB per call and keeps an incomplete
 * reply whole in its reader until its last byte is in, whatever length it
 * declared. After every read the declared length of a bulk string still
 * coming is looked at (the reader is hiredis's public struct, read.h): over
 * the bound, the connection is closed, or, for a pub/sub payload, the
 * bulk's header is rewritten in place to a nil ("$-1") and the rest of its
 * bytes are read here and thrown away, so one oversize message costs 16 KiB
 * and a count, not the subscription. This leans on hiredis 0.14's reader
 * (a bulk is parsed only once complete; the type byte consumed, pos at the
 * length): checked against its source, and by test_cluster.
 *
 * Arrays are bounded where hiredis builds them: it allocates a pointer per
 * declared element as soon as an array's header is in (2^31 - 1 of them
 * allowed), before any element comes, and a reply it has built is not in
 * its buffer for the check above. No reply the cluster asks for holds more
 * than REDIS_ARRAY_MAX elements or an array in an array (a push is three),
 * so the reader's array builder refuses any other, which closes the
 * connection, saying so (cluster_redis_spec). The builders also count the
 * command connection's replies against its commands: hiredis asserts on a
 * reply nobody asked for there, so it is refused the same way.
 */
#define _GNU_SOURCE
#include "redis.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dlfcn.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <hiredis/sds.h>

#if HIREDIS_MAJOR != 0 || HIREDIS_MINOR != 14
#error "redis.c reads hiredis 0.14's reader (Debian 12's libhiredis-dev); 1.x keeps its read stack elsewhere"
#endif

#ifndef PSEUD_HIREDIS_SONAME
#define PSEUD_HIREDIS_SONAME "libhiredis.so.0.14"      /* Debian 12's; CMake passes the built one's */
#endif

#define SKIP_CHUNK 16384
#define REDIS_ARRAY_MAX 4             /* a pmessage push: the largest array Redis sends us */
#define REDIS_ARRAY_MAX_TEXT "4"
#define MAX_HEADER 24                 /* "$" is gone; digits and CRLF of any length that fits */

struct redis_conn {
    loop_t *loop;
    const redis_lib_t *lib;
    redisAsyncContext *ac;            /* NULL once hiredis freed it */
    int fd;                           /* watched while ac is set */
    int events;                       /* LOOP_READABLE | LOOP_WRITABLE asked of the loop */
    size_t max_reply;
    int skip_payloads;
    size_t skip;                      /* bytes of an oversize payload still to throw away */
    size_t owed;                      /* replies owed: commands sent, not yet answered */
    redis_closed_fn closed;
    void *arg;
    char why[160];                    /* why we closed it, when we did */
};

/* ------------------------------------------------------------ the URL */

static int s_fail(char *err, size_t len, const char *shown, const char *why) {
    snprintf(err, len, "bad Redis URL '%s': %s", shown, why);
    return -1;
}

static int s_hex(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Copy n bytes of `s` into `out` (size `size`) decoding %XX; -1 when it
 * does not fit or an escape is bad (or a NUL: AUTH takes no C string with one). */
static int s_unescape(const char *s, size_t n, char *out, size_t size) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n) return -1;
            int hi = s_hex((unsigned char)s[i + 1]), lo = s_hex((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0 || (hi | lo) == 0) return -1;
            c = hi * 16 + lo;
            i += 2;
        }
        if (o + 1 >= size) return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

/* A decimal in [lo, hi] made of all of s[0..n); -1 when not. */
static long s_number(const char *s, size_t n, long lo, long hi) {
    if (n == 0 || n > 9) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v < lo || v > hi ? -1 : v;
}

/* `shown`: the URL with the text between "//" (or ':' of unix:) and the
 * last '@' masked, so no error or log line carries a password. */
static void s_mask(const char *url, char *shown, size_t size) {
    const char *at = strrchr(url, '@');
    const char *start = strstr(url, "://");
    if (!at || !start || at < start) { snprintf(shown, size, "%.*s%s", 200, url, strlen(url) > 200 ? "..." : ""); return; }
    start += 3;
    const char *colon = memchr(start, ':', (size_t)(at - start));
    size_t user = colon ? (size_t)(colon - start) : (size_t)(at - start);
    size_t rest = strlen(at);
    snprintf(shown, size, "%.*s%.*s%s%.*s%s", (int)(start - url), url, user > 100 ? 100 : (int)user, start,
             colon ? ":***" : "", rest > 200 ? 200 : (int)rest, at, rest > 200 || user > 100 ? "..." : "");
}

/* USER:PASSWORD (or :PASSWORD) between `s` and `at` into `a`. */
static int s_userinfo(const char *s, const char *at, redis_address_t *a, char *err, size_t len) {
    const char *colon = memchr(s, ':', (size_t)(at - s));
    if (!colon) return s_fail(err, len, a->shown, "a user needs a password (USER:PASSWORD@)");
    if (s_unescape(s, (size_t)(colon - s), a->user, sizeof a->user) < 0)
        return s_fail(err, len, a->shown, "its user is longer than 128 bytes or has a bad %XX escape");
    if (s_unescape(colon + 1, (size_t)(at - colon - 1), a->password, sizeof a->password) < 0)
        return s_fail(err, len, a->shown, "its password is longer than 512 bytes or has a bad %XX escape");
    if (!a->password[0]) return s_fail(err, len, a->shown, "its password is empty");
    return 0;
}

/* HOST into a->host as a numeric address (getaddrinfo: names resolve once). */
static int s_resolve(const char *host, size_t n, redis_address_t *a, char *err, size_t len) {
    char name[REDIS_MAX_HOST + 1];
    if (n == 0) return s_fail(err, len, a->shown, "its host is empty");
    if (n > REDIS_MAX_HOST) return s_fail(err, len, a->shown, "its host is longer than 255 bytes");
    memcpy(name, host, n);
    name[n] = '\0';
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, len, "bad Redis URL '%s': cannot resolve host '%s' (%s)", a->shown, name, gai_strerror(rc));
        return -1;
    }
    const void *addr = res->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                                                   : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    inet_ntop(res->ai_family, addr, a->host, sizeof a->host);
    freeaddrinfo(res);
    return 0;
}

int redis_address_parse(const char *url, redis_address_t *a, char *err, size_t len) {
    memset(a, 0, sizeof *a);
    if (!url) return s_fail(err, len, "(none)", "no URL");
    s_mask(url, a->shown, sizeof a->shown);
    size_t n = strlen(url);
    if (n > REDIS_MAX_URL) return s_fail(err, len, a->shown, "it is longer than 1024 bytes");
    const char *end = url + n;
    if (strncmp(url, "unix:", 5) == 0) {
        a->is_unix = 1;
        const char *p = url + 5;
        if (strncmp(p, "//", 2) == 0) {
            p += 2;
            const char *slash = strchr(p, '/');
            const char *at = slash ? memrchr(p, '@', (size_t)(slash - p)) : NULL;
            if (!slash) return s_fail(err, len, a->shown, "its socket path must be absolute (unix:///path)");
            if (at && s_userinfo(p, at, a, err, len) < 0) return -1;
            p = slash;
        }
        const char *query = strchr(p, '?');
        size_t plen = query ? (size_t)(query - p) : (size_t)(end - p);
        if (plen == 0 || p[0] != '/') return s_fail(err, len, a->shown, "its socket path must be absolute (unix:/path)");
        if (plen > REDIS_MAX_PATH - 1) return s_fail(err, len, a->shown, "its socket path is longer than 106 bytes");
        memcpy(a->path, p, plen);
        a->path[plen] = '\0';
        if (query) {
            if (strncmp(query, "?db=", 4) != 0) return s_fail(err, len, a->shown, "the only query it takes is ?db=N");
            long db = s_number(query + 4, (size_t)(end - query - 4), 0, 1000000);
            if (db < 0) return s_fail(err, len, a->shown, "its db must be a number from 0");
            a->db = (int)db;
        }
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return s_fail(err, len, a->shown, "it must start redis:// or unix:");
    const char *p = url + 8;
    const char *slash = strchr(p, '/');
    const char *hostend = slash ? slash : end;
    const char *at = memrchr(p, '@', (size_t)(hostend - p));
    if (at) {
        if (s_userinfo(p, at, a, err, len) < 0) return -1;
        p = at + 1;
    }
    const char *colon, *hstart = p, *hend;
    if (*p == '[') {                                     /* [IPv6]:PORT */
        const char *close = memchr(p, ']', (size_t)(hostend - p));
        if (!close) return s_fail(err, len, a->shown, "an IPv6 host is written [ADDRESS]");
        hstart = p + 1;
        hend = close;
        colon = close + 1 < hostend && close[1] == ':' ? close + 1 : NULL;
        if (!colon && close + 1 != hostend) return s_fail(err, len, a->shown, "junk after its IPv6 host");
    } else {
        colon = memchr(p, ':', (size_t)(hostend - p));
        hend = colon ? colon : hostend;
    }
    a->port = 6379;
    if (colon) {
        long port = s_number(colon + 1, (size_t)(hostend - colon - 1), 1, 65535);
        if (port < 0) return s_fail(err, len, a->shown, "its port must be a number from 1 to 65535");
        a->port = (int)port;
    }
    if (slash && slash + 1 < end) {
        long db = s_number(slash + 1, (size_t)(end - slash - 1), 0, 1000000);
        if (db < 0) return s_fail(err, len, a->shown, "its db (after the /) must be a number from 0");
        a->db = (int)db;
    }
    return s_resolve(hstart, (size_t)(hend - hstart), a, err, len);
}

/* ------------------------------------------------------------ the library */

/* The reader's reply builders (task->privdata is the connection, set on
 * its reader): within the bounds, hiredis's own; past them, NULL, which
 * hiredis takes for out of memory and closes the connection on, saying
 * why (c->why). */
static int s_refuse(redis_conn_t *c, const char *why, int elements) {
    if (!c->why[0]) snprintf(c->why, sizeof c->why, why, elements);
    return 0;
}

/* A reply at the top answers a command: on the command connection, one
 * nobody asked for would trip an assert in hiredis (it expects a
 * subscription then), so it is refused. Pushes come on the other. */
static int s_owed(const redisReadTask *task) {
    redis_conn_t *c = task->privdata;
    if (!c) return 0;
    if (task->parent || c->skip_payloads) return 1;
    if (c->owed == 0) return s_refuse(c, "Redis sent a reply nobody asked for", 0);
    c->owed--;
    return 1;
}

static void *s_create_array(const redisReadTask *task, int elements) {
    redis_conn_t *c = task->privdata;
    if (!c) return NULL;
    if (task->parent)
        return s_refuse(c, "Redis sent an array inside an array (of %d): no reply of ours has one", elements), NULL;
    if (elements > REDIS_ARRAY_MAX)
        return s_refuse(c, "Redis sent an array of %d elements where the bound is " REDIS_ARRAY_MAX_TEXT,
                        elements), NULL;
    /* a push of fewer than 3 would trip an assert in hiredis's subscription
     * code (a message, a confirmation: 3; a pmessage: 4) */
    if (c->skip_payloads && elements < 3)
        return s_refuse(c, "Redis sent an array of %d elements where a push has 3 or 4", elements), NULL;
    return s_owed(task) ? c->lib->own.createArray(task, elements) : NULL;
}

static void *s_create_string(const redisReadTask *task, char *str, size_t len) {
    redis_conn_t *c = task->privdata;
    return s_owed(task) ? c->lib->own.createString(task, str, len) : NULL;
}

static void *s_create_integer(const redisReadTask *task, long long value) {
    redis_conn_t *c = task->privdata;
    return s_owed(task) ? c->lib->own.createInteger(task, value) : NULL;
}

static void *s_create_nil(const redisReadTask *task) {
    redis_conn_t *c = task->privdata;
    return s_owed(task) ? c->lib->own.createNil(task) : NULL;
}

int redis_lib_load(redis_lib_t *lib, char *err, size_t err_len) {
    memset(lib, 0, sizeof *lib);
    lib->handle = dlopen(PSEUD_HIREDIS_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!lib->handle) {
        snprintf(err, err_len, "cannot join a cluster: hiredis is missing (%s; Debian: apt install libhiredis0.14)", dlerror());
        return -1;
    }
#define LOAD(field, name)                                                            \
    if (!(*(void **)&lib->field = dlsym(lib->handle, name))) {                       \
        snprintf(err, err_len, "cannot join a cluster: %s has no %s", PSEUD_HIREDIS_SONAME, name); \
        redis_lib_unload(lib);                                                       \
        return -1;                                                                   \
    }
    LOAD(connect_tcp, "redisAsyncConnect")
    LOAD(connect_unix, "redisAsyncConnectUnix")
    LOAD(free_context, "redisAsyncFree")
    LOAD(handle_read, "redisAsyncHandleRead")
    LOAD(handle_write, "redisAsyncHandleWrite")
    LOAD(command_argv, "redisAsyncCommandArgv")
    LOAD(process_callbacks, "redisProcessCallbacks")
    redisReader *(*reader_create)(void);
    void (*reader_free)(redisReader *);
    if (!(*(void **)&reader_create = dlsym(lib->handle, "redisReaderCreate")) ||
        !(*(void **)&reader_free = dlsym(lib->handle, "redisReaderFree"))) {
        snprintf(err, err_len, "cannot join a cluster: %s has no redisReaderCreate or redisReaderFree",
                 PSEUD_HIREDIS_SONAME);
        redis_lib_unload(lib);
        return -1;
    }
#undef LOAD
    redisReader *r = reader_create();            /* to learn hiredis's own reply builders */
    if (!r) {
        snprintf(err, err_len, "cannot join a cluster: out of memory");
        redis_lib_unload(lib);
        return -1;
    }
    lib->own = lib->replies = *r->fn;
    reader_free(r);
    lib->replies.createArray = s_create_array;
    lib->replies.createString = s_create_string;
    lib->replies.createInteger = s_create_integer;
    lib->replies.createNil = s_create_nil;
    return 0;
}

void redis_lib_unload(redis_lib_t *lib) {
    if (lib->handle) dlclose(lib->handle);
    memset(lib, 0, sizeof *lib);
}

/* ------------------------------------------------------------ the adapter */

static void s_want(redis_conn_t *c, int events) {
    if (events == c->events || !c->ac) return;
    c->events = events;
    loop_set_fd_events(c->loop, c->fd, events);
}

static void s_add_read(void *p)  { redis_conn_t *c = p; s_want(c, c->events | LOOP_READABLE); }
static void s_del_read(void *p)  { redis_conn_t *c = p; s_want(c, c->events & ~LOOP_READABLE); }
static void s_add_write(void *p) { redis_conn_t *c = p; s_want(c, c->events | LOOP_WRITABLE); }
static void s_del_write(void *p) { redis_conn_t *c = p; s_want(c, c->events & ~LOOP_WRITABLE); }

/* hiredis is freeing the context: every callback has run. */
static void s_cleanup(void *p) {
    redis_conn_t *c = p;
    char copy[sizeof c->why];
    snprintf(copy, sizeof copy, "%s", redis_conn_why(c->ac));
    loop_remove_fd(c->loop, c->fd);
    c->ac = NULL;
    c->events = 0;
    c->skip = 0;
    if (c->closed) c->closed(c->arg, c, copy);
}

/* Throw away up to `skip` bytes of an oversize payload. */
static void s_skip(redis_conn_t *c) {
    char buf[SKIP_CHUNK];
    size_t want = c->skip < sizeof buf ? c->skip : sizeof buf;
    ssize_t n = read(c->fd, buf, want);
    if (n > 0) { c->skip -= (size_t)n; return; }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    redis_conn_close(c, n == 0 ? "Redis closed the connection" : strerror(errno));
}

/* After a read: an incomplete reply declaring more than max_reply bytes
 * closes the connection, or is skipped when it is a push's payload. */
static void s_bound(redis_conn_t *c) {
    redisReader *r = c->ac->c.reader;
    if (!r || r->ridx < 0) return;
    size_t held = r->len - r->pos;
    const redisReadTask *t = &r->rstack[r->ridx];
    if (t->type == REDIS_REPLY_STRING) {                 /* '$' read, its length next */
        const char *p = r->buf + r->pos;
        size_t avail = held < MAX_HEADER ? held : MAX_HEADER;
        const char *cr = memchr(p, '\r', avail);
        if (!cr || (size_t)(cr - p) + 1 >= held || cr[1] != '\n') {
            if (!cr && held >= MAX_HEADER) redis_conn_close(c, "Redis sent a bulk length of more than 22 digits");
            return;
        }
        unsigned long long declared = 0;
        for (const char *d = p; d < cr; d++) {
            if (*d < '0' || *d > '9') return;            /* -1 or junk: hiredis judges it */
            declared = declared * 10 + (unsigned long long)(*d - '0');
            if (declared > (1ULL << 50)) break;
        }
        if (declared <= c->max_reply) return;
        size_t header = (size_t)(cr - p) + 2;
        int payload = c->skip_payloads && r->ridx == 1 && t->idx == 2 &&
                      r->rstack[0].type == REDIS_REPLY_ARRAY && r->rstack[0].elements == 3;
        if (!payload || header < 4) {
            char why[96];
            snprintf(why, sizeof why, "a reply of %llu bytes, over the bound of %zu", declared, c->max_reply);
            redis_conn_close(c, why);
            return;
        }
        /* "-1\r\n" where the length was: hiredis completes the push with a nil */
        size_t body = held - header;                     /* payload bytes already in */
        memcpy(r->buf + r->pos, "-1\r\n", 4);
        sdssetlen(r->buf, r->pos + 4);
        r->buf[r->pos + 4] = '\0';
        r->len = r->pos + 4;
        c->skip = (size_t)declared + 2 - body;           /* its CRLF too; body < declared + 2 */
        c->lib->process_callbacks(c->ac);
        return;
    }
    if (held > c->max_reply + 65536) {                   /* many small parts: a bound all the same */
        char why[96];
        snprintf(why, sizeof why, "a reply of more than %zu bytes", c->max_reply + 65536);
        redis_conn_close(c, why);
    }
}

/* hiredis 0.14 writes with write(2): to a socket whose peer has gone that
 * raises SIGPIPE, whose default ends the process (a Redis restarted, a
 * unix socket closed, the goodbye a stopping node writes). The host does
 * not ignore SIGPIPE for the whole process (children it starts would
 * inherit that), so the signal is blocked around the write and, if it
 * came, taken: the write fails with EPIPE and hiredis closes the link. */
static void s_handle_write(redis_conn_t *c) {
    sigset_t pipe, old, pending;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    int was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, &old);
    c->lib->handle_write(c->ac);
    if (!was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
        struct timespec now = { 0, 0 };
        while (sigtimedwait(&pipe, NULL, &now) < 0 && errno == EINTR) {}
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void s_on_io(loop_t *loop, int fd, int ready, void *arg) {
    (void)loop; (void)fd;
    redis_conn_t *c = arg;
    if ((ready & LOOP_READABLE) && c->ac) {
        if (c->skip) {
            s_skip(c);
        } else {
            c->lib->handle_read(c->ac);
            if (c->ac) s_bound(c);
        }
    }
    if ((ready & LOOP_WRITABLE) && c->ac) s_handle_write(c);
}

/* AUTH's or SELECT's answer: an error closes the connection, saying it. */
static void s_on_setup(redisAsyncContext *ac, void *reply, void *privdata) {
    redis_conn_t *c = privdata;
    const redisReply *r = reply;
    (void)ac;
    if (r && r->type == REDIS_REPLY_ERROR) {
        char why[sizeof c->why];
        snprintf(why, sizeof why, "Redis refused the login or the db: %.120s", r->str);
        redis_conn_close(c, why);
    }
}

redis_conn_t *redis_conn_new(loop_t *loop, const redis_lib_t *lib, const redis_address_t *a,
                             int select_db, size_t max_reply, int skip_payloads,
                             redis_closed_fn closed, void *arg, char *err, size_t err_len) {
    redis_conn_t *c = calloc(1, sizeof *c);
    if (!c) { snprintf(err, err_len, "Redis at %s: out of memory", a->shown); return NULL; }
    c->loop = loop;
    c->lib = lib;
    c->max_reply = max_reply;
    c->skip_payloads = skip_payloads;
    redisAsyncContext *ac = a->is_unix ? lib->connect_unix(a->path) : lib->connect_tcp(a->host, a->port);
    if (!ac || ac->err) {
        snprintf(err, err_len, "Redis at %s: %s", a->shown, ac ? ac->errstr : "out of memory");
        if (ac) lib->free_context(ac);
        free(c);
        return NULL;
    }
    /* replies bounded (s_create_array, s_owed); hiredis only reads the table */
    ac->c.reader->fn = (redisReplyObjectFunctions *)&lib->replies;
    ac->c.reader->privdata = c;
    c->fd = ac->c.fd;
    if (loop_add_fd_events(loop, c->fd, LOOP_READABLE | LOOP_WRITABLE, s_on_io, c) < 0) {
        snprintf(err, err_len, "Redis at %s: out of memory", a->shown);
        lib->free_context(ac);
        free(c);
        return NULL;
    }
    c->events = LOOP_READABLE | LOOP_WRITABLE;          /* connect(2) completes as writable */
    c->ac = ac;
    ac->ev.data = c;
    ac->ev.addRead = s_add_read;
    ac->ev.delRead = s_del_read;
    ac->ev.addWrite = s_add_write;
    ac->ev.delWrite = s_del_write;
    ac->ev.cleanup = s_cleanup;
    c->closed = closed;
    c->arg = arg;
    if (a->password[0]) {
        const char *argv[3] = { "AUTH", a->user, a->password };
        size_t lens[3] = { 4, strlen(a->user), strlen(a->password) };
        if (a->user[0]) redis_conn_command(c, s_on_setup, c, 3, argv, lens);
        else { argv[1] = a->password; lens[1] = lens[2]; redis_conn_command(c, s_on_setup, c, 2, argv, lens); }
    }
    if (select_db && a->db > 0) {
        char db[16];
        int n = snprintf(db, sizeof db, "%d", a->db);
        const char *argv[2] = { "SELECT", db };
        size_t lens[2] = { 6, (size_t)n };
        redis_conn_command(c, s_on_setup, c, 2, argv, lens);
    }
    return c;
}

int redis_conn_command(redis_conn_t *c, redisCallbackFn *fn, void *privdata,
                       int argc, const char **argv, const size_t *argv_len) {
    if (!c->ac || (c->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING))) return -1;
    if (c->lib->command_argv(c->ac, fn, privdata, argc, argv, argv_len) != REDIS_OK) return -1;
    c->owed++;
    return 0;
}

const char *redis_conn_why(const redisAsyncContext *ac) {
    const redis_conn_t *c = ac ? ac->ev.data : NULL;
    if (c && c->why[0]) return c->why;
    if (ac && ac->err && ac->errstr && ac->errstr[0]) return ac->errstr;
    return "the connection closed";
}

int redis_conn_is_open(const redis_conn_t *c) {
    return c && c->ac && !(c->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING));
}

void redis_conn_flush(redis_conn_t *c) {
    if (redis_conn_is_open(c) && (c->ac->c.flags & REDIS_CONNECTED)) s_handle_write(c);
}

void redis_conn_close(redis_conn_t *c, const char *why) {
    /* DISCONNECTING without FREEING: hiredis is freeing it after an error */
    if (!c || !c->ac || (c->ac->c.flags & (REDIS_FREEING | REDIS_DISCONNECTING))) return;
    if (!c->why[0]) snprintf(c->why, sizeof c->why, "%s", why);
    c->lib->free_context(c->ac);          /* deferred by hiredis inside its own callback */
}

void redis_conn_destroy(redis_conn_t **p) {
    if (!p || !*p) return;
    redis_conn_t *c = *p;
    c->closed = NULL;                     /* the owner is going: tell nobody */
    redis_conn_close(c, "closed");
    if (c->ac) {                          /* hiredis is in a callback of it: must not happen */
        c->ac->ev.data = NULL;
        c->ac->ev.cleanup = NULL;
        c->ac->ev.addRead = c->ac->ev.delRead = c->ac->ev.addWrite = c->ac->ev.delWrite = NULL;
        c->ac->c.reader->privdata = NULL;             /* the reply builders: no connection */
        loop_remove_fd(c->loop, c->fd);
    }
    free(c);
    *p = NULL;
}
