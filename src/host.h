/*
 * host: one per Lua state. It owns the ZeroMQ context, the loop, the
 * scheduler (task.c, task_limits.c), the codec limits and buffers, ZAP and
 * the password pool, and runs the loop: init, run, drain, stop, flush,
 * close, reload.
 *
 * The binding (lpseud*.c) sees host_t through these functions only; the
 * state itself is in host_state.h for host.c, dispatch.c and login.c.
 */
#ifndef PSEUD_HOST_H
#define PSEUD_HOST_H

#include <stddef.h>

#include <lua.h>
#include <msgpack.h>

#include "codec.h"
#include "dispatch.h"
#include "log.h"
#include "loop.h"
#include "passwd.h"
#include "task.h"

#define HOST_MT "pseud.Host"

typedef struct host host_t;
struct workers_slot;

/* Bytes of a host_t (the binding makes it a userdata). */
size_t host_size(void);

/* Set up `h` for main thread L (zmq context, loop, scheduler, buffers);
 * installs the counting allocator. 0, or -1 with errno. */
int host_init(host_t *h, lua_State *L);
/* host_init for a worker's state: ZeroMQ context `zmq` is its control's
 * (inproc needs one context), not owned. */
int host_init_shared(host_t *h, lua_State *L, void *zmq);
/* Close what host_init opened; safe twice. */
void host_close(host_t *h);

void *host_zmq(host_t *h);
loop_t *host_loop(host_t *h);
sched_t *host_sched(host_t *h);
const codec_limits_t *host_limits(host_t *h);
void host_set_limits(host_t *h, const codec_limits_t *lim);
/* The global name -> callable table, a registry ref; returns the ref it
 * replaces (LUA_NOREF: none), for the caller to unref. */
int host_set_global_registry(host_t *h, int ref);
int host_global_registry(const host_t *h);
void host_set_max_hook_time(host_t *h, double seconds);
/* pseud.spawn tasks alive at once past which spawn raises; 0: no bound. */
void host_set_max_tasks(host_t *h, int n);
/* Lua's own debug.sethook, kept for the replacement (lpseud_task.c). */
void host_set_lua_sethook(host_t *h, lua_CFunction fn);
lua_CFunction host_lua_sethook(host_t *h);

/* A packer into the host's buffer, reset, for one body of at most `max`
 * bytes (0: unlimited). host_packed gives the bytes; *over is 1 when the
 * pack stopped at max. */
msgpack_packer *host_packer(host_t *h, size_t max);
const char *host_packed(host_t *h, size_t *len, int *over);
/* The packed bytes themselves, malloc'd, for the caller to free (the
 * buffer starts anew): a large reply leaves without a copy. */
char *host_packed_take(host_t *h, size_t *len);

/* The cluster: the server that joined it (one a process), or NULL; the
 * URL pseud-lua --cluster gave servers without a `cluster` option, or NULL. */
lendpoint_t *host_clustered(const host_t *h);
void host_set_clustered(host_t *h, lendpoint_t *le);
const char *host_cluster_default(const host_t *h);
int host_set_cluster_default(host_t *h, const char *url);   /* 0, or -1: out of memory */

/* Keep `le` in the list of open endpoints (flushed at exit); or drop it. */
int host_add_endpoint(host_t *h, lendpoint_t *le);
void host_remove_endpoint(host_t *h, lendpoint_t *le);
/* Close `le` now, or once the endpoint callback running Lua returns (a hook
 * that closes its own endpoint). The binding's close function does the rest
 * through `finish`. */
void host_close_endpoint(host_t *h, lua_State *L, lendpoint_t *le,
                         void (*finish)(lua_State *L, lendpoint_t *le));

/* Run the loop on thread L until `f` (index, or 0) is settled, `deadline`
 * (monotonic, < 0: none) passes, or a signal comes; with neither f nor a
 * deadline (serving), also until a stop is asked. Returns 0, or -1 when a
 * signal or stop ended it. Raises when the loop is already running. */
int host_run(host_t *h, lua_State *L, int f, double deadline);

/* A server's start(): serve until stop() or a signal, let calls in flight
 * finish for up to `stop_timeout` seconds, then answer those still running
 * ERROR PeerLostError "server stopping" (logged). */
void host_serve(host_t *h, lua_State *L, double stop_timeout);

/* Ask the loop to stop serving (stop()). */
void host_stop(host_t *h);

/* Hot reload. The Lua function on top of L (popped) re-runs the script
 * into fresh registries and swaps them in: () -> ok, text (the line to
 * log). While serving, the loop calls it between turns (never inside a
 * handler) after a SIGHUP or host_ask_reload, logs the text (info, or a
 * warning when it failed) and settles the futures of host_ask_reload. */
void host_set_reloader(host_t *h, lua_State *L);
/* pseud.reload(): ask for a reload between turns; the future on top of L
 * (left there) settles with true, or with the failure's text. NULL; or the
 * reason it cannot be asked now (not serving, a reload is running), with
 * nothing kept. May raise (memory). */
const char *host_ask_reload(host_t *h, lua_State *L);

/* Let what scripts sent leave: run the loop until no endpoint holds a
 * message waiting for its peer, or `seconds` pass. With `warn`, first log
 * a warning if the loop never ran while handlers were registered or calls
 * were made (the end of a script that forgot start()). */
void host_flush(host_t *h, lua_State *L, double seconds, int warn);

/* Is the loop running (a handler or the main chunk waiting)? */
int host_running(host_t *h);

/* Start the ZAP handler (once) with the Lua function on top of L (popped).
 * Returns 0, or -1 with errno. */
int host_start_zap(host_t *h, lua_State *L);
/* Start the password-check pool (once): `threads` workers, at most
 * `max_pending` checks in flight (0: defaults). Returns 0, or -1 with errno. */
int host_start_passwd(host_t *h, int threads, size_t max_pending);
/* Stats of the password pool; 0, or -1 when it has not started. */
int host_passwd_stats(host_t *h, passwd_stats_t *st);

/* Serve GET /metrics at `address` (metrics_http.h) from now on, and start
 * counting. Once per host: the same address again is a no-op, another one
 * an error. 0, or -1 with a message naming the address in `err`. */
int host_serve_metrics(host_t *h, const char *address, char *err, size_t err_size);

/* Workers (docs/workers.md): how many start() starts (<= 1: none), the
 * body of their threads and the script they run (main's argv, kept). */
void host_set_workers(host_t *h, int n);
int host_workers_asked(const host_t *h);
/* A worker's: the control cut the stop short; its drain ends now, and
 * what it still runs is answered PeerLostError. */
void host_hurry(host_t *h);
/* Workers run now (the control, while it serves with them). */
int host_workers_running(const host_t *h);
void host_set_worker_main(host_t *h, void (*fn)(struct workers_slot *slot));
void host_set_script(host_t *h, const char *path, int nargs, char **args);
/* The control: why a worker's script failed (it stopped serving then), or
 * NULL; host_worker_failed records it. */
const char *host_worker_failure(const host_t *h);
void host_worker_failed(host_t *h, int id, const char *text, size_t len);
/* 0 in the control (or without workers), 1..N in worker N. */
int host_worker_id(const host_t *h);
/* Mark `h` as worker `slot`'s host (workers_attach). 0, or -1. */
int host_attach_worker(host_t *h, struct workers_slot *slot);

/* Counts for tests: tasks alive, tasks owing an answer, idle tasks pooled,
 * calls pending on all endpoints, timers armed. */
typedef struct host_counts {
    int tasks, answering, pooled;
    size_t pending_calls, timers;
} host_counts_t;
void host_get_counts(host_t *h, host_counts_t *c);

/* Log one logfmt line (log.h): `msg`, then `fields` up to LOG_END, unless
 * the level (PSEUD_LOG, --log-level) leaves it out. HOST_LOG lists the
 * fields inline: HOST_LOG(h, LOG_WARN, "refused", LOG_STR("reason", why)). */
void host_log(host_t *h, int level, const char *msg, const log_field_t *fields);
#define HOST_LOG(h, level, msg, ...) \
    host_log((h), (level), (msg), LOG_FIELDS(__VA_ARGS__))
/* Like host_log, for lines a peer can cause per message: at most 20 a
 * second, then one line saying how many were left out. */
void host_log_limited(host_t *h, int level, const char *msg, const log_field_t *fields);
#define HOST_LOG_LIMITED(h, level, msg, ...) \
    host_log_limited((h), (level), (msg), LOG_FIELDS(__VA_ARGS__))
/* Would a line of `level` be written? (Skip building a costly one.) */
int host_log_on(const host_t *h, int level);
/* The level lines are shown up to (LOG_QUIET .. LOG_DEBUG). */
int host_log_level(const host_t *h);

#endif
