/*
 * host_state: what the host holds, shared by host.c, dispatch.c and
 * login.c. The binding (lpseud*.c) sees host_t only as an opaque handle
 * through host.h.
 */
#ifndef PSEUD_HOST_STATE_H
#define PSEUD_HOST_STATE_H

#include <lua.h>
#include <msgpack.h>

#include "codec.h"
#include "dispatch.h"
#include "host.h"
#include "loop.h"
#include "metrics.h"
#include "metrics_http.h"
#include "passwd.h"
#include "task.h"
#include "workers.h"
#include "zap.h"

struct host {
    lua_State *L;                 /* the main thread */
    void *zmq;                    /* ZeroMQ context */
    loop_t *loop;
    sched_t sched;                /* tasks, limits, the run queue */
    codec_limits_t limits;
    msgpack_sbuffer sbuf;         /* reused for every body packed */
    msgpack_packer pk;            /* writes to sbuf, at most pack_max bytes */
    size_t pack_max;              /* 0: unlimited */
    int pack_over;                /* the last pack stopped at pack_max or max_elements */
    size_t pack_writes;           /* writes the pack running may still make */
    msgpack_zone zone;            /* reused for every body unpacked */
    int global_registry;          /* ref: the global name -> callable table */
    int running;                  /* the loop is running (no re-entry) */
    int ran;                      /* the loop has run (start, :get(), sleep): for the exit warning */
    int stopping;                 /* a server's stop() or a signal asked to stop */
    int draining;                 /* host_serve's stop: waiting for the calls in flight */
    int hurry;                    /* a worker's: the control cut its stop short ('H') */
    int serving;                  /* host_serve runs the loop: reloads run between its turns */
    int reloading;                /* the reloader re-runs the script now */
    int reload_asked;             /* pseud.reload() asked for one */
    int reloader;                 /* ref: () -> ok, text that re-runs the script, or LUA_NOREF */
    int reload_waiters;           /* ref: sequence of futures pseud.reload() waits on, or LUA_NOREF */
    lua_State *Lrun;              /* the thread running the loop, while it runs */
    int log_level;                /* lines above it are not written (PSEUD_LOG) */
    double log_window;            /* rate limit of per-call log lines: window start */
    int log_count;                /* lines in that window */
    lendpoint_t *close_asked;     /* endpoints to close once the callback ends */
    void (*finish_close)(lua_State *L, lendpoint_t *le);   /* the binding's close */
    lendpoint_t **endpoints;      /* open endpoints (flush at exit) */
    int nendpoints, endpoints_cap;
    zap_t *zap;                   /* the ZAP handler, once authentication is used */
    int zap_handler;              /* ref: fn(request) -> user_id | nil, reason */
    passwd_t *passwd;             /* argon2 checks on worker threads, once started */
    lua_CFunction lua_sethook;    /* Lua's own debug.sethook (lpseud_task.c replaces it) */
    metrics_t *metrics;           /* counters, once metrics are served; NULL: nothing counted */
    metrics_http_t *metrics_http; /* GET /metrics, or NULL */
    uint64_t busy_closed;         /* BusyError refusals of endpoints closed since */
    uint64_t unstarted_closed;    /* and their calls that never started */
    lendpoint_t *clustered;       /* the server in a cluster, or NULL */
    char *cluster_default;        /* pseud-lua --cluster URL (malloc'd), or NULL */
    int zmq_owned;                /* zmq is this host's (a worker's is its control's) */
    int workers_asked;            /* worker threads start() starts (--workers, option workers); <= 1: none */
    workers_main_fn worker_main;  /* main.c's body of a worker thread, or NULL */
    const char *script;           /* the script file pseud-lua runs (main's argv), or NULL */
    int script_nargs;
    char **script_args;
    workers_t *workers;           /* the control's workers, while they run */
    workers_slot_t *slot;         /* a worker's host: its link, or NULL */
    int worker_id;                /* 0: the control (or no workers); 1..N: a worker */
    int ship_metrics;             /* a worker whose control counts metrics: outcomes go there */
    char worker_failure[512];     /* the control: why a worker's script failed, or "" */
    loop_timer_t *trim_timer;     /* the control, serving: gives idle heap back (host.c) */
    uint64_t trim_moved;          /* bytes the endpoints read and sent, at its last tick */
    uint64_t moved_closed;        /* ... and those of endpoints closed since */
    int trim_quiet;               /* its quiet ticks in a row; -1: looked, none since */
    size_t trim_resident;         /* RSS after the last trim (or at the start), bytes */
};

/* The thread Lua runs on from a callback: the loop's, or the main one. */
lua_State *host_thread(host_t *h);

/* host_log_on, inline for the per-call paths */
#define HOST_LOG_ON(h, level) ((level) <= (h)->log_level)

/* Reset the pack buffer for one body of at most `max` bytes (0: unlimited). */
void host_pack_reset(host_t *h, size_t max);

#endif
