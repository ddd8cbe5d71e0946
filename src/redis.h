/*
 * redis: hiredis's async client on the host loop, and the Redis URL.
 *
 * What it owns: a connection's redisAsyncContext (hiredis 0.14, Debian 12's
 * libhiredis0.14), driven by loop fd watches through the ac->ev hooks as
 * hiredis's adapters/libevent.h does for libevent; the AUTH and SELECT a URL
 * asks for, sent first; a bound on the bytes one reply may hold in the
 * reader. What it does not do: know what the commands mean (cluster.c),
 * retry, or time out (the caller's watchdog closes a silent connection).
 *
 * hiredis is loaded with dlopen (redis_lib_load), never linked: mapping it
 * costs every process about 28 KiB of RSS whether it joins a cluster or not.
 * Its types come from its headers, so callers use redisReply as usual.
 */
#ifndef PSEUD_REDIS_H
#define PSEUD_REDIS_H

#include <stddef.h>

#include <hiredis/async.h>

#include "loop.h"

#define REDIS_MAX_URL 1024
#define REDIS_MAX_HOST 255
#define REDIS_MAX_PATH 107            /* sun_path, with its NUL */
#define REDIS_MAX_USER 128
#define REDIS_MAX_PASSWORD 512

/* Where Redis is and how to log in: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
 * or unix:PATH, unix://[[USER]:PASSWORD@]PATH[?db=DB] (PATH absolute).
 * USER and PASSWORD may hold %XX escapes; HOST may be [IPv6]. */
typedef struct redis_address {
    int is_unix;                             /* 1: `path` is a socket file */
    char host[REDIS_MAX_HOST + 1];           /* numeric, resolved once when parsed */
    int port;
    char path[REDIS_MAX_PATH + 1];
    char user[REDIS_MAX_USER + 1];           /* "": AUTH PASSWORD alone (requirepass) */
    char password[REDIS_MAX_PASSWORD + 1];   /* "": no AUTH */
    int db;                                  /* 0: no SELECT */
    char shown[360];                         /* the URL, password masked, long parts cut: for logs */
} redis_address_t;

/* Parse `url` into `a` and resolve its host name (a blocking getaddrinfo:
 * once, at start; reconnects use the address found). 0, or -1 with a
 * sentence in err that never holds the password. */
int redis_address_parse(const char *url, redis_address_t *a, char *err, size_t err_len);

/* The hiredis functions used, found with dlsym; typed from its headers. */
typedef struct redis_lib {
    void *handle;
    __typeof__(&redisAsyncConnect) connect_tcp;
    __typeof__(&redisAsyncConnectUnix) connect_unix;
    __typeof__(&redisAsyncFree) free_context;
    __typeof__(&redisAsyncHandleRead) handle_read;
    __typeof__(&redisAsyncHandleWrite) handle_write;
    __typeof__(&redisAsyncCommandArgv) command_argv;
    void (*process_callbacks)(redisAsyncContext *ac);   /* exported, not in async.h */
    /* hiredis's own reply builders, and ours, which every connection's
     * reader uses: within the bounds (an array of at most REDIS_ARRAY_MAX,
     * none nested; no reply nobody asked for) they call hiredis's */
    redisReplyObjectFunctions own, replies;
} redis_lib_t;

/* Load hiredis into `lib`: 0, or -1 with the reason in err. */
int redis_lib_load(redis_lib_t *lib, char *err, size_t err_len);
/* dlclose it; takes a lib never loaded. */
void redis_lib_unload(redis_lib_t *lib);

typedef struct redis_conn redis_conn_t;

/* The connection is gone (refused, lost, an error, a reply over the bound,
 * or redis_conn_close): every command's callback has been called by now,
 * with a NULL reply where none came. `why` is one sentence. Called once; the
 * owner must not destroy the connection from inside it. */
typedef void (*redis_closed_fn)(void *arg, redis_conn_t *conn, const char *why);

/* Start connecting to `a` (non-blocking) and queue AUTH (when it has a
 * password) and, with `select_db`, SELECT. A reply holding more than
 * `max_reply` bytes closes the connection, except where `skip_payloads`:
 * then the third element of a three-element push (a pub/sub message's
 * payload) over the bound is read past without being kept, and its
 * callback sees that element as a nil. NULL with err when hiredis cannot
 * even start (out of memory, no socket). */
redis_conn_t *redis_conn_new(loop_t *loop, const redis_lib_t *lib, const redis_address_t *a,
                             int select_db, size_t max_reply, int skip_payloads,
                             redis_closed_fn closed, void *arg, char *err, size_t err_len);
/* Queue a command; fn(ac, reply, privdata) is called exactly once (reply
 * NULL when the connection went first). 0, or -1 when it is closed or
 * closing: then fn is never called. */
int redis_conn_command(redis_conn_t *c, redisCallbackFn *fn, void *privdata,
                       int argc, const char **argv, const size_t *argv_len);
/* Why the connection of `ac` is going, for a callback handed a NULL reply
 * (hiredis calls those before the closed callback). */
const char *redis_conn_why(const redisAsyncContext *ac);
/* 1 while hiredis still holds the connection. */
int redis_conn_is_open(const redis_conn_t *c);
/* One non-blocking write of what is queued (before a close that should
 * still say something; what does not fit in the socket is lost). */
void redis_conn_flush(redis_conn_t *c);
/* Close it now, `why` for the closed callback: pending callbacks get NULL
 * replies (after the hiredis callback running now returns, when called
 * from one). A no-op when already closed. */
void redis_conn_close(redis_conn_t *c, const char *why);
/* Close and free; takes NULL, clears *p. */
void redis_conn_destroy(redis_conn_t **p);

#endif
