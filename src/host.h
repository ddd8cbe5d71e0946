/*
 * host: the Lua side of the loop. It turns endpoint events into Lua work:
 * a WORK runs its handler in a pooled coroutine (a task) and the task's end
 * becomes the reply; a reply resolves a future and wakes the tasks waiting on
 * it. It owns the host state (loop, zmq context, limits, buffers, task pool)
 * and every entry from the loop into Lua, each under lua_pcall.
 *
 * The Lua-callable functions live in lpseud.c; this file has none.
 */
#ifndef PSEUD_HOST_H
#define PSEUD_HOST_H

#include <stdint.h>

#include <lua.h>
#include <msgpack.h>

#include "codec.h"
#include "endpoint.h"
#include "loop.h"
#include "passwd.h"
#include "zap.h"

#define HOST_MT      "pseud.Host"
#define ENDPOINT_MT  "pseud.Endpoint"
#define FUTURE_MT    "pseud.Future"
#define ERROR_MT     "pseud.Error"
#define ROUTES_MT    "pseud.Routes"
#define PASSWORD_CHECK_MT "pseud.PasswordCheck"

typedef struct task task_t;

typedef struct host {
    lua_State *L;                 /* the main thread */
    void *zmq;                    /* ZeroMQ context */
    loop_t *loop;
    codec_limits_t limits;
    msgpack_sbuffer sbuf;         /* reused for every body packed */
    msgpack_packer pk;
    msgpack_zone zone;            /* reused for every body unpacked */
    int global_registry;          /* ref: the global name -> callable table */
    int running;                  /* the loop is running (no re-entry) */
    int stopping;                 /* a server's stop() or a signal asked to stop */
    int stop_signal;              /* the signal that asked, or 0 */
    task_t **pool;                /* idle tasks, coroutines ready for reuse */
    int npool;
    int ntasks;                   /* tasks alive (running or waiting) */
    int nanswering;               /* of those, handlers that owe a reply */
    lua_State *Lrun;              /* the thread running the loop, while it runs */
    int quiet;                    /* no log lines (PSEUD_LOG=quiet) */
    lua_Alloc alloc;              /* the state's own allocator, which host_alloc wraps */
    void *alloc_ud;
    task_t *current;              /* the task inside lua_resume now, or NULL */
    zap_t *zap;                   /* the ZAP handler, once authentication is used */
    int zap_handler;              /* ref: fn(request) -> user_id | nil, reason */
    passwd_t *passwd;             /* argon2 checks on worker threads, once started */
} host_t;

typedef struct lendpoint {
    endpoint_t *ep;               /* NULL once closed */
    host_t *host;
    int self_ref;                 /* pins the userdata while open */
    int registry;                 /* ref: local name -> callable table */
    int proxy_to;                 /* ref: another endpoint's userdata, or LUA_NOREF */
    int resolver;                 /* ref: picks a callable from a route list, or LUA_NOREF */
    int heartbeat_hook;           /* ref: fn(event, user_id, routing_id), or LUA_NOREF */
    int auth_gate;                /* ref: fn(user_id, routing_id) -> ok, or LUA_NOREF */
    int hello_hook;               /* ref: fn(user_id, routing_id, login, password) -> ok, text */
    int tasks;                    /* handler tasks that will answer through it */
    int in_gc;                    /* closing from __gc: run no Lua for its calls */
    double timeout;               /* seconds, for calls this endpoint makes */
    double max_handler_time;      /* seconds a handler may run; 0: unlimited */
    double max_handler_memory;    /* bytes a handler may allocate (net); 0: unlimited */
    size_t default_peer_len;      /* where calls go without send_to (a client's server) */
    char default_peer[FRAME_MAX_ID + 1];
} lendpoint_t;

enum future_state { FUTURE_PENDING, FUTURE_OK, FUTURE_FAILED };

typedef struct lfuture {
    int state;                    /* enum future_state */
    int nwaiters;                 /* tasks parked on it (their threads in uservalue 2) */
    endpoint_call_t *call;        /* while pending */
} lfuture_t;

/* lua_Alloc that counts what the running task allocates and refuses growth
 * past its endpoint's max_handler_memory (Lua then raises LUA_ERRMEM in the
 * handler); everything else goes to h->alloc unchanged. ud is the host_t. */
void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* Set up `h` (zmq context, loop, buffers); 0 or -1. */
int host_init(host_t *h, lua_State *L);
/* Start the ZAP handler (once) with the Lua function on top of L (popped).
 * Returns 0, or -1 with errno. */
int host_start_zap(host_t *h, lua_State *L);

/* Start the password-check pool (once): `threads` workers, at most
 * `max_pending` checks in flight (0: defaults). Returns 0, or -1 with errno. */
int host_start_passwd(host_t *h, int threads, size_t max_pending);

/* Close what host_init opened; safe twice. */
void host_close(host_t *h);

/* Endpoint events for lendpoint `le` (ctx = le). */
void host_endpoint_events(lendpoint_t *le, endpoint_events_t *ev);

/* Log one line to stderr unless quiet. */
void host_log(host_t *h, const char *fmt, ...);

/* Run the loop on thread L until `f` (index, or 0) is settled, `deadline`
 * (monotonic, < 0: none) passes, or a signal comes; with neither f nor a
 * deadline (serving), also until a stop is asked. Returns 0, or -1 when a
 * signal or stop ended it. Raises when the loop is already running. */
int host_run(host_t *h, lua_State *L, int f, double deadline);

/* Drain: run the loop until no task is alive or `seconds` pass. */
void host_drain(host_t *h, lua_State *L, double seconds);

/* The task whose coroutine is L, or NULL (main chunk, foreign coroutine). */
task_t *host_current_task(lua_State *L);

/* Push the user id and routing id of the WORK the current task answers;
 * returns 2, or 0 (pushing nothing) outside a handler. */
int host_push_caller(lua_State *L);

/* Park the current task until future at index `f` settles, then continue
 * with k. Returns what lua_yieldk returns. */
int host_wait_future(lua_State *L, int f, lua_KFunction k);

/* Park the current task for `seconds`. */
int host_sleep(lua_State *L, double seconds, lua_KFunction k);

/* Start the function below `nargs` arguments, below a new future on top,
 * as a task (pseud.spawn); leaves the future, which its end settles.
 * Raises on memory errors. */
void host_spawn(host_t *h, lua_State *L, int nargs);

/* Push a new error value {name=, message=, traceback=} (metatable ERROR_MT). */
void host_push_error(lua_State *L, const char *name, const char *message, const char *traceback);

/* Settle the future at index `f` with the value on top (popped). */
void host_settle(host_t *h, lua_State *L, int f, int state);

#endif
