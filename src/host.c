/*
 * host: init, run, drain, flush, close, reload (see host.h).
 *
 * The loop turns: run the tasks woken so far (sched_run), then poll once
 * (without waiting while tasks are ready), which runs the endpoints'
 * callbacks (dispatch.c) and the timers; then close what a hook asked to
 * close. Nothing else resumes a task, so Lua never runs nested in Lua.
 * While serving, a reload asked (SIGHUP, pseud.reload()) runs at the top of
 * a turn, between two: no handler runs while the script re-runs, so the
 * swap of registries it ends with is seen by every lookup at once.
 */
#include "host_state.h"
#include "host.h"
#include "io_threads.h"

#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>


#include <lauxlib.h>
#include <zmq.h>

#define SBUF_KEEP     (1u << 20)  /* a pack buffer larger than this is freed after use */
#define TRIM_EVERY    1.0         /* seconds between two looks at the heap's free bytes */
#define TRIM_HELD     (16u << 20) /* free heap and RSS growth past this go back to the kernel */
#define TRIM_QUIET    (1u << 20)  /* ... once the endpoints move less than this a second */
#define TRIM_QUIET_TICKS 10       /* ... for this many seconds in a row */
#define WORKER_LOG_FIELDS 32      /* fields of a worker's line kept */
#define LOG_PER_SEC   20          /* per-call lines (host_log_limited) a second */

size_t host_size(void) { return sizeof(host_t); }
void *host_zmq(host_t *h) { return h->zmq; }
loop_t *host_loop(host_t *h) { return h->loop; }
sched_t *host_sched(host_t *h) { return &h->sched; }
const codec_limits_t *host_limits(host_t *h) { return &h->limits; }
void host_set_limits(host_t *h, const codec_limits_t *lim) { h->limits = *lim; }
int host_global_registry(const host_t *h) { return h->global_registry; }
int host_set_global_registry(host_t *h, int ref) {
    int old = h->global_registry;
    h->global_registry = ref;
    return old;
}
void host_set_max_hook_time(host_t *h, double seconds) { h->sched.max_hook_time = seconds; }
void host_set_max_tasks(host_t *h, int n) { h->sched.max_spawned = n; }
int host_running(host_t *h) { return h->running; }
void host_set_lua_sethook(host_t *h, lua_CFunction fn) { h->lua_sethook = fn; }
lua_CFunction host_lua_sethook(host_t *h) { return h->lua_sethook; }
void host_stop(host_t *h) { h->stopping = 1; }
void host_hurry(host_t *h) { h->stopping = 1; h->hurry = 1; }
lua_State *host_thread(host_t *h) { return h->Lrun ? h->Lrun : h->L; }

/* --- log --- */

/* PSEUD_LOG (set by --log-level too): error, warn, info (the default), debug
 * or quiet. Another value is named in a warning and info is kept. */
static int s_log_level(host_t *h) {
    const char *v = getenv("PSEUD_LOG");
    if (!v || !*v) return LOG_INFO;
    int level = log_level_parse(v);
    if (level >= 0) return level;
    h->log_level = LOG_WARN;
    HOST_LOG(h, LOG_WARN, "PSEUD_LOG ignored: not one of error, warn, info, debug, quiet",
             LOG_STR("value", v));
    return LOG_INFO;
}

int host_log_on(const host_t *h, int level) { return level <= h->log_level; }
int host_log_level(const host_t *h) { return h->log_level; }

/* A worker's lines carry worker=N (first, so a cut line keeps it). */
static void s_write_line(host_t *h, int level, const char *msg, const log_field_t *fields) {
    if (!h->worker_id) { log_write(stderr, level, msg, fields); return; }
    log_field_t f[WORKER_LOG_FIELDS + 2];
    int n = 0;
    f[n++] = (log_field_t)LOG_INT("worker", h->worker_id);
    for (int i = 0; fields && fields[i].key && i < WORKER_LOG_FIELDS; i++) f[n++] = fields[i];
    f[n] = (log_field_t)LOG_END;
    log_write(stderr, level, msg, f);
}

void host_log(host_t *h, int level, const char *msg, const log_field_t *fields) {
    if (level > h->log_level) return;
    s_write_line(h, level, msg, fields);
}

void host_log_limited(host_t *h, int level, const char *msg, const log_field_t *fields) {
    if (level > h->log_level) return;
    double now = loop_now();
    if (now - h->log_window >= 1) {
        if (h->log_count > LOG_PER_SEC)
            HOST_LOG(h, LOG_WARN, "similar lines left out", LOG_INT("count", h->log_count - LOG_PER_SEC));
        h->log_window = now;
        h->log_count = 0;
    }
    if (++h->log_count > LOG_PER_SEC) return;
    s_write_line(h, level, msg, fields);
}

/* --- packing, bounded --- */

/* The packer's writer. Every value packs in one or two writes, so a body
 * of at most max_elements values never takes more than twice that: a shared
 * subtable packed over and over (t = {t, t}) stops there, in milliseconds,
 * as a body over max_message_size stops at its size. */
static int s_write(void *data, const char *buf, size_t len) {
    host_t *h = data;
    if ((h->pack_max && len > h->pack_max - h->sbuf.size) ||   /* size <= max always */
        h->pack_writes-- == 0) {
        h->pack_over = 1;
        return -1;
    }
    return msgpack_sbuffer_write(&h->sbuf, buf, len);
}

void host_pack_reset(host_t *h, size_t max) {
    if (h->sbuf.alloc > SBUF_KEEP) {
        msgpack_sbuffer_destroy(&h->sbuf);
        msgpack_sbuffer_init(&h->sbuf);
    }
    h->sbuf.size = 0;
    h->pack_max = max;
    h->pack_over = 0;
    h->pack_writes = 2 * h->limits.max_elements;
}

msgpack_packer *host_packer(host_t *h, size_t max) {
    host_pack_reset(h, max);
    return &h->pk;
}

const char *host_packed(host_t *h, size_t *len, int *over) {
    *len = h->sbuf.size;
    if (over) *over = h->pack_over;
    return h->sbuf.data;
}

char *host_packed_take(host_t *h, size_t *len) {
    *len = h->sbuf.size;
    return msgpack_sbuffer_release(&h->sbuf);   /* leaves it empty, unallocated */
}

/* --- life --- */

int host_init(host_t *h, lua_State *L) { return host_init_shared(h, L, NULL); }

/* libzmq 4.3 numbers a ROUTER's anonymous peers 00 + a counter started from
 * rand(), which it never seeds, and does not check a peer's own routing id
 * against the numbers it gives: a peer holding the next one makes the next
 * anonymous connection abort the process (router.cpp, add_out_pipe). The
 * first number unseeded is always 00 6b 8b 45 67; seeded from the kernel, a
 * peer must learn the counter before it can take the next one (README,
 * Hostile input). Done before the host makes any socket; rand() is libzmq's
 * alone here (the host's randomness is libsodium's, Lua's its own). */
static void s_seed_libzmq_counter(host_t *h) {
    unsigned seed;
    ssize_t got;
    while ((got = getrandom(&seed, sizeof seed, 0)) < 0 && errno == EINTR) {}
    if (got != (ssize_t)sizeof seed) {
        seed = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16) ^ (unsigned)clock();
        HOST_LOG(h, LOG_WARN, "no kernel randomness: libzmq's automatic routing ids are guessable",
                 LOG_STR("reason", strerror(errno)));
    }
    srand(seed);
}

int host_init_shared(host_t *h, lua_State *L, void *zmq) {
    memset(h, 0, sizeof *h);
    h->L = L;
    h->global_registry = LUA_NOREF;
    h->zap_handler = LUA_NOREF;
    h->reloader = h->reload_waiters = LUA_NOREF;
    h->log_level = s_log_level(h);
    s_seed_libzmq_counter(h);                     /* before any socket */
    codec_limits_init(&h->limits);
    msgpack_sbuffer_init(&h->sbuf);
    msgpack_packer_init(&h->pk, h, s_write);
    if (!msgpack_zone_init(&h->zone, 4096)) return -1;
    h->loop = loop_new();
    h->zmq = zmq ? zmq : zmq_ctx_new();
    h->zmq_owned = zmq == NULL;
    sched_ops_t ops;
    dispatch_task_ops(h, &ops);
    if (!h->loop || !h->zmq || sched_init(&h->sched, L, h->loop, &ops) < 0) {
        host_close(h);
        errno = ENOMEM;
        return -1;
    }
    if (h->zmq_owned) io_threads_tune(h);
    return 0;
}

void host_set_workers(host_t *h, int n) { h->workers_asked = n; }
int host_workers_running(const host_t *h) { return h->workers != NULL; }
int host_workers_asked(const host_t *h) { return h->workers_asked; }
void host_set_worker_main(host_t *h, void (*fn)(struct workers_slot *slot)) { h->worker_main = fn; }
void host_set_script(host_t *h, const char *path, int nargs, char **args) {
    h->script = path;
    h->script_nargs = nargs;
    h->script_args = args;
}
int host_worker_id(const host_t *h) { return h->worker_id; }
const char *host_worker_failure(const host_t *h) { return h->worker_failure[0] ? h->worker_failure : NULL; }
void host_worker_failed(host_t *h, int id, const char *text, size_t len) {
    if (!h->worker_failure[0])
        snprintf(h->worker_failure, sizeof h->worker_failure, "worker %d's script failed: %.*s", id,
                 (int)(len > 400 ? 400 : len), text);
    h->stopping = 1;
}
int host_attach_worker(host_t *h, struct workers_slot *slot) { return workers_attach(h, slot); }

void host_close(host_t *h) {
    workers_destroy(&h->workers);                 /* joined before the context ends */
    if (h->slot) workers_detach(h->slot);
    sched_close(&h->sched);
    passwd_destroy(&h->passwd);                   /* before zap: its answers go there */
    zap_destroy(&h->zap);
    metrics_http_destroy(&h->metrics_http);      /* before the loop: it holds a timer there */
    metrics_destroy(&h->metrics);
    loop_destroy(&h->loop);
    if (h->zmq && h->zmq_owned) zmq_ctx_term(h->zmq);
    h->zmq = NULL;
    msgpack_sbuffer_destroy(&h->sbuf);
    msgpack_sbuffer_init(&h->sbuf);
    if (h->zone.chunk_list.head) { msgpack_zone_destroy(&h->zone); memset(&h->zone, 0, sizeof h->zone); }
    free(h->endpoints);
    h->endpoints = NULL;
    h->nendpoints = h->endpoints_cap = 0;
    free(h->cluster_default);
    h->cluster_default = NULL;
}

int host_start_passwd(host_t *h, int threads, size_t max_pending) {
    if (h->passwd) {                              /* one pool per process */
        if (threads > 0 || max_pending > 0)
            HOST_LOG(h, LOG_WARN, "password checks already started: password_threads and "
                     "max_password_checks of this server are not used");
        return 0;
    }
    passwd_options_t o;
    passwd_options_init(&o);
    if (threads > 0) o.threads = threads;
    if (max_pending > 0) o.max_pending = max_pending;
    h->passwd = passwd_new(h->zmq, h->loop, &o);
    return h->passwd ? 0 : -1;
}

int host_passwd_stats(host_t *h, passwd_stats_t *st) {
    if (!h->passwd && h->slot) return workers_query_passwd(h, st);   /* the pool is the control's */
    if (!h->passwd) return -1;
    passwd_get_stats(h->passwd, st);
    return 0;
}

void host_get_counts(host_t *h, host_counts_t *c) {
    c->tasks = h->sched.ntasks;
    c->answering = h->sched.nanswering;
    c->pooled = h->sched.npool;
    c->pending_calls = 0;
    for (int i = 0; i < h->nendpoints; i++)
        if (h->endpoints[i]->ep) c->pending_calls += endpoint_pending_calls(h->endpoints[i]->ep);
    c->timers = loop_timer_count(h->loop);
}

/* --- endpoints --- */

lendpoint_t *host_clustered(const host_t *h) { return h->clustered; }
void host_set_clustered(host_t *h, lendpoint_t *le) { h->clustered = le; }
const char *host_cluster_default(const host_t *h) { return h->cluster_default; }

int host_set_cluster_default(host_t *h, const char *url) {
    char *copy = url ? strdup(url) : NULL;
    if (url && !copy) return -1;
    free(h->cluster_default);
    h->cluster_default = copy;
    return 0;
}

int host_add_endpoint(host_t *h, lendpoint_t *le) {
    if (h->nendpoints == h->endpoints_cap) {
        int cap = h->endpoints_cap ? h->endpoints_cap * 2 : 8;
        lendpoint_t **p = realloc(h->endpoints, (size_t)cap * sizeof *p);
        if (!p) return -1;
        h->endpoints = p;
        h->endpoints_cap = cap;
    }
    h->endpoints[h->nendpoints++] = le;
    return 0;
}

/* Bytes an endpoint has read and sent, what the heap trim calls traffic. */
static uint64_t s_moved(const endpoint_t *ep) {
    const endpoint_stats_t *st = endpoint_stats(ep);
    return st->bytes_in + st->bytes_out;
}

void host_remove_endpoint(host_t *h, lendpoint_t *le) {
    if (le->ep) {                                 /* counters never go down */
        h->busy_closed += endpoint_stats(le->ep)->busy_refused;
        h->unstarted_closed += endpoint_stats(le->ep)->calls_unstarted;
        h->moved_closed += s_moved(le->ep);
    }
    for (int i = 0; i < h->nendpoints; i++)
        if (h->endpoints[i] == le) { h->endpoints[i] = h->endpoints[--h->nendpoints]; return; }
}

void host_close_endpoint(host_t *h, lua_State *L, lendpoint_t *le,
                         void (*finish)(lua_State *L, lendpoint_t *le)) {
    h->finish_close = finish;
    if (h->sched.in_callback && !le->in_gc) {     /* a hook closes the endpoint it serves */
        if (!le->close_asked) {
            le->close_asked = 1;
            le->close_next = h->close_asked;
            h->close_asked = le;
        }
        return;
    }
    lua_State *saved = h->Lrun;
    if (!h->running) h->Lrun = L;                 /* calls it fails settle on this thread */
    finish(L, le);
    h->Lrun = saved;
}

static void s_close_asked(host_t *h, lua_State *L) {
    while (h->close_asked) {
        lendpoint_t *le = h->close_asked;
        h->close_asked = le->close_next;
        le->close_asked = 0;
        h->finish_close(L, le);
    }
}

/* --- reload --- */

void host_set_reloader(host_t *h, lua_State *L) {
    luaL_unref(L, LUA_REGISTRYINDEX, h->reloader);
    h->reloader = luaL_ref(L, LUA_REGISTRYINDEX);
}

const char *host_ask_reload(host_t *h, lua_State *L) {
    if (h->reloading) return "a reload is running (pseud.reload() from the script's top level)";
    if (!h->serving) return "not serving: a reload runs once start() serves";
    if (h->reload_waiters == LUA_NOREF) {
        lua_newtable(L);
        h->reload_waiters = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->reload_waiters);     /* future, waiters */
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
    h->reload_asked = 1;
    return NULL;
}

/* Settle every future pseud.reload() waits on: true, or the failure's text. */
typedef struct reload_answer {
    host_t *h;
    int ok;
    const char *text;
} reload_answer_t;

static int s_reload_answer_protected(lua_State *L) {
    reload_answer_t *a = lua_touserdata(L, 1);
    host_t *h = a->h;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->reload_waiters);
    luaL_unref(L, LUA_REGISTRYINDEX, h->reload_waiters);
    h->reload_waiters = LUA_NOREF;
    int t = lua_gettop(L);
    for (lua_Integer i = 1; lua_rawgeti(L, t, i) != LUA_TNIL; i++) {
        if (a->ok) lua_pushboolean(L, 1); else lua_pushstring(L, a->text);
        future_settle(&h->sched, L, -2, FUTURE_OK);
        lua_pop(L, 1);
    }
    return 0;
}

/* Settle the futures of pseud.reload() callers: true, or the text. Under
 * the protected path: out of memory here is logged, never raised into the
 * loop. */
static void s_reload_answer(host_t *h, int ok, const char *text) {
    if (h->reload_waiters == LUA_NOREF) return;
    reload_answer_t a = { h, ok, text };
    sched_error_t err;
    if (dispatch_call(h, s_reload_answer_protected, &a, &err) < 0)
        HOST_LOG(h, LOG_ERROR, "pseud.reload() callers could not be answered", LOG_STR("error", err.name),
                 LOG_STR("message", err.message));
}

/* Re-run the script (the reloader) on the loop's thread L, between turns:
 * bounded by its own limit inside (pseud.reload), not by max_hook_time
 * here; answer pseud.reload(). The reloader logs its outcome; this logs
 * only what kept it from running. */
static void s_reload(host_t *h, lua_State *L) {
    char text[1200];             /* pseud.reload()'s answer: the reloader's line, or why none ran */
    int ok = 0;
    h->reload_asked = 0;
    if (h->workers || h->slot) {                  /* docs/workers.md: not yet; in a worker too
                                                   * (pseud.reload() from a handler reloaded that
                                                   * worker alone: an attack round) */
        snprintf(text, sizeof text, "reload asked: not supported with --workers yet (the handlers "
                 "run in the workers, which would keep the old script); restart instead");
        HOST_LOG(h, LOG_WARN, text);
    } else if (h->reloader == LUA_NOREF || !lua_checkstack(L, 4)) {
        snprintf(text, sizeof text, "reload asked: %s", h->reloader == LUA_NOREF
                 ? "nothing to reload (no script was run by pseud-lua)" : "not enough stack");
        HOST_LOG(h, LOG_WARN, text);
    } else {
        sched_error_t err;
        int top = lua_gettop(L);
        lua_pushcfunction(L, sched_msgh);
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->reloader);
        h->reloading = 1;
        h->sched.main_chunk = 1;
        int st = sched_pcall(&h->sched, L, 0, 2, 0, &err);
        h->sched.main_chunk = 0;
        h->reloading = 0;
        if (st == LUA_OK) {                       /* the reloader logged its outcome */
            ok = lua_toboolean(L, -2);
            const char *t = lua_tostring(L, -1);
            snprintf(text, sizeof text, "%s", t ? t : "reload: (no text)");
        } else {
            snprintf(text, sizeof text, "reload failed, kept the old registries: %s: %s", err.name, err.message);
            HOST_LOG(h, LOG_WARN, "reload failed, kept the old registries", LOG_STR("error", err.name),
                     LOG_STR("message", err.message));
        }
        lua_settop(L, top);
    }
    s_reload_answer(h, ok, text);
}

/* --- running --- */

/* A stop cut short (a second signal, or stop_timeout over) with calls
 * still running in workers: they answer theirs now (PeerLostError, 'H')
 * and leave, and the control relays those answers for up to a second, as
 * it answers its own: the link is not read once it joins the threads. */
static void s_hurry_workers(host_t *h) {
    workers_hurry(h->workers);
    loop_clear_signal();                          /* the one that cut it short; a third ends this */
    double end = loop_now() + 1;
    while (workers_busy(h->workers) && !loop_signal_received()) {
        double wait = end - loop_now();
        if (wait <= 0) break;
        loop_run_once(h->loop, wait);
    }
}

/* A stop's drain goes on: calls still owe an answer, here or in workers. */
static int s_draining(host_t *h) {
    return h->sched.nanswering > 0 || workers_busy(h->workers);
}

/* One turn: woken tasks, then I/O and timers (waiting at most `wait`). */
static void s_turn(host_t *h, lua_State *L, double wait) {
    if (h->sched.pass_over) h->sched.pass_over = 0;  /* the last pass ended on its time: I/O first */
    else sched_run(&h->sched, L);
    s_close_asked(h, L);
    if (sched_ready(&h->sched)) wait = 0;         /* preempted tasks wait for I/O only */
    /* a stop whose last call just ended does not sleep out its stop_timeout */
    if (h->draining && !s_draining(h)) wait = 0;
    loop_run_once(h->loop, wait);
    s_close_asked(h, L);
}

int host_run(host_t *h, lua_State *L, int f, double deadline) {
    if (h->sched.ending)                          /* a finalizer at the end: its time is bounded */
        return luaL_error(L, "pseud: cannot wait here: the script is over (a finalizer runs at "
                          "the end of the process)");
    if (h->reloading)
        return luaL_error(L, "pseud: cannot wait during a reload: the script's top level re-runs "
                          "while the loop stands still (guard it with pseud.reloading())");
    if (h->running)
        return luaL_error(L, "pseud: cannot wait here: the loop is already running "
                          "(wait from the main chunk or inside a handler or pseud.spawn)");
    f = f ? lua_absindex(L, f) : 0;
    h->running = 1;
    h->ran = 1;
    h->Lrun = L;
    int rc = 0;
    for (;;) {
        sched_run(&h->sched, L);
        if (h->serving && (loop_take_reload() | h->reload_asked)) {   /* both: a SIGHUP is taken */
            s_reload(h, L);
            continue;                             /* what it woke runs before the poll */
        }
        if (f && ((lfuture_t *)lua_touserdata(L, f))->state != FUTURE_PENDING) break;
        if (!f && deadline < 0 && h->stopping) { rc = -1; break; }   /* serving: stop() */
        if (!h->slot && loop_signal_received()) { rc = -1; break; }   /* a worker waits for STOP */
        double wait = -1;
        if (deadline >= 0) {
            wait = deadline - loop_now();
            if (wait <= 0) break;
        }
        s_turn(h, L, wait);
    }
    h->running = 0;
    h->Lrun = NULL;
    return rc;
}

/* Start the workers asked for, once, before serving (docs/workers.md). */
static void s_start_workers(host_t *h) {
    if (h->slot || h->workers || h->workers_asked <= 1) return;
    int servers = 0;                              /* only a server's WORK goes to workers */
    for (int i = 0; i < h->nendpoints; i++) servers += h->endpoints[i]->ep && h->endpoints[i]->name_len;
    if (!servers) {
        HOST_LOG(h, LOG_DEBUG, "workers asked, but no server serves here: none started",
                 LOG_INT("workers", h->workers_asked));
        return;
    }
    if (!h->script || !h->worker_main) {
        HOST_LOG(h, LOG_WARN, "workers asked, but the script was not run from a file by pseud-lua: "
                 "serving without workers", LOG_INT("workers", h->workers_asked));
        return;
    }
    for (int i = 0; i < h->nendpoints; i++) {
        lendpoint_t *le = h->endpoints[i];
        if (le->ep && workers_name_taken(h, le)) {
            size_t len;
            const char *name = workers_name(le, &len);
            HOST_LOG(h, LOG_ERROR, le->name_len
                     ? "workers asked, but two servers share a name: serving without workers"
                     : "workers asked, but two clients call servers of one name: serving without workers",
                     LOG_ID("name", name, len), LOG_INT("workers", h->workers_asked));
            return;
        }
    }
    char err[200];
    int n = h->workers_asked > WORKERS_MAX ? WORKERS_MAX : h->workers_asked;
    h->workers = workers_start(h, n, h->worker_main, h->script, h->script_nargs, h->script_args,
                               err, sizeof err);
    if (!h->workers)
        HOST_LOG(h, LOG_ERROR, "workers could not start: serving without them", LOG_STR("reason", err));
    else
        HOST_LOG(h, LOG_INFO, "workers started", LOG_INT("workers", n));
}

/* Resident bytes of the process, or 0 when /proc cannot say. */
static size_t s_resident(void) {
    double bytes = metrics_resident_bytes();
    return bytes > 0 ? (size_t)bytes : 0;
}

/* main.c keeps 8 MiB of free heap at the top and serves blocks up to 4 MiB
 * from the heap, so large bodies do not re-fault their pages on every call.
 * After a burst (a flood of 64 KiB calls) the heap can then hold tens of
 * MiB free below its top, which trimming the top never returns. Once the
 * endpoints have moved less than TRIM_QUIET a second for TRIM_QUIET_TICKS
 * seconds, with more than TRIM_HELD of heap free and RSS more than
 * TRIM_HELD above where the last trim (or the start) left it, malloc_trim
 * hands those pages back (every arena's: the I/O thread's too); free chunks
 * stay free chunks once their pages are gone, so the free count alone
 * would trim again after every burst. Never while traffic flows: the trim
 * and the re-faults after it cost a busy loop milliseconds (docs/bench-history.md:
 * a trim every second took a probe's p99 beside a flood to 11-21 ms, the
 * bare echo's 4-6), and a burst that comes back within 10 s finds its
 * pages (a trimmed heap faults them in again: 10 ms of a probe's p99 on
 * this VM). */
static void s_trim_heap(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)t;
    host_t *h = arg;
    uint64_t moved = h->moved_closed;
    for (int i = 0; i < h->nendpoints; i++)
        if (h->endpoints[i]->ep) moved += s_moved(h->endpoints[i]->ep);
    int quiet = moved >= h->trim_moved && moved - h->trim_moved < TRIM_QUIET;
    h->trim_moved = moved;
    if (!quiet)
        h->trim_quiet = 0;
    else if (h->trim_quiet >= 0 && ++h->trim_quiet >= TRIM_QUIET_TICKS) {
        h->trim_quiet = -1;                       /* looked: again after some traffic */
        size_t before = s_resident();
        if (before > h->trim_resident + TRIM_HELD && mallinfo2().fordblks > TRIM_HELD) {
            malloc_trim(0);
            h->trim_resident = s_resident();
            HOST_LOG(h, LOG_DEBUG, "free heap given back", LOG_INT("rss_before", before),
                     LOG_INT("rss_after", h->trim_resident));
        }
    }
    h->trim_timer = loop_add_timer(loop, TRIM_EVERY, s_trim_heap, h);
}

void host_serve(host_t *h, lua_State *L, double stop_timeout) {
    h->serving = 1;
    if (!h->slot) {                               /* signals are the control's */
        h->trim_resident = s_resident();
        h->trim_timer = loop_add_timer(h->loop, TRIM_EVERY, s_trim_heap, h);
        if (loop_wake_on_signals(h->loop) < 0)    /* then a signal may wait for the next event */
            HOST_LOG(h, LOG_WARN, "no self-pipe for signals", LOG_STR("reason", strerror(errno)));
        loop_watch_reload(1);
        s_start_workers(h);
    } else {
        workers_slot_serving(h->slot);            /* the control may send WORK now */
    }
    host_run(h, L, 0, -1);
    h->serving = 0;
    size_t unstarted = 0;                         /* calls waiting their turn: not started, not run now */
    for (int i = 0; i < h->nendpoints; i++)
        if (h->endpoints[i]->ep)
            unstarted += endpoint_refuse_parked(h->endpoints[i]->ep, "PeerLostError",
                                                "server stopping before the call started");
    if (unstarted)
        HOST_LOG(h, LOG_INFO, "stopping: calls that had not started answered PeerLostError",
                 LOG_INT("calls", unstarted));
    if (h->trim_timer) loop_cancel_timer(h->loop, h->trim_timer);
    h->trim_timer = NULL;
    h->reload_asked = 0;
    s_reload_answer(h, 0, "the server is stopping");
    int sig = h->slot ? 0 : loop_signal_received();
    if (!h->slot) loop_clear_signal();
    if (sig)
        HOST_LOG(h, LOG_INFO, "signal: finishing the calls in flight", LOG_INT("signal", sig),
                 LOG_INT("calls", (size_t)h->sched.nanswering + workers_inflight(h->workers)));
    workers_stop(h->workers);                     /* they finish theirs too */
    double end = loop_now() + stop_timeout;
    h->running = 1;
    h->Lrun = L;
    h->draining = 1;
    while (s_draining(h) && !h->hurry && (h->slot || !loop_signal_received())) {
        /* workers get a second more than their own stop_timeout to say they are done */
        double wait = end + (h->sched.nanswering > 0 ? 0 : 1) - loop_now();
        if (wait <= 0) break;
        s_turn(h, L, wait);
    }
    h->draining = 0;
    h->hurry = 0;
    int left = sched_abandon(&h->sched, L, "PeerLostError", "server stopping");
    if (h->workers && workers_busy(h->workers)) s_hurry_workers(h);
    if (h->slot) {                                /* the control logs the process's sum */
        if (left) workers_slot_abandoned(h->slot, (size_t)left);
    } else if (left || workers_abandoned(h->workers)) {
        HOST_LOG(h, LOG_WARN, "stopped with calls still running: answered PeerLostError",
                 LOG_INT("calls", (size_t)left + workers_abandoned(h->workers)));
    }
    if (h->workers) {
        if (workers_busy(h->workers))
            HOST_LOG(h, LOG_WARN, "workers still busy at the stop: waiting for their threads to end",
                     LOG_INT("workers", workers_alive(h->workers)));
        workers_destroy(&h->workers);
    }
    h->running = 0;
    h->Lrun = NULL;
    h->stopping = 0;
    if (!h->slot) loop_clear_signal();
    /* a SIGHUP has nothing to reload now: its default again. Not before the
     * drain: a reload racing a stop ended the process and every call still
     * finishing (an attack round) */
    if (!h->slot) loop_watch_reload(0);
    for (int i = 0; i < h->nendpoints; i++)       /* those still open serve as before */
        if (h->endpoints[i]->ep) endpoint_park_reopen(h->endpoints[i]->ep);
}

/* Is the table at registry ref `ref` non-empty? */
static int s_ref_nonempty(lua_State *L, int ref) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    int yes = 0;
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_pushnil(L);
        if (lua_next(L, -2)) { yes = 1; lua_pop(L, 2); }
    }
    lua_pop(L, 1);
    return yes;
}

/* The end of a script that set up handlers or made calls and never ran
 * the loop: nothing was served or answered, which is seldom what was meant. */
static void s_warn_never_ran(host_t *h, lua_State *L) {
    int handlers = 0;
    size_t calls = 0;
    for (int i = 0; i < h->nendpoints; i++) {
        lendpoint_t *le = h->endpoints[i];
        if (!le->ep) continue;
        calls += endpoint_pending_calls(le->ep);
        handlers = handlers || s_ref_nonempty(L, le->registry);
    }
    /* pseud.register_rpc's global names */
    handlers = handlers || (h->nendpoints > 0 && s_ref_nonempty(L, h->global_registry));
    if (handlers || calls)
        HOST_LOG(h, LOG_WARN, "the script ended without running the loop "
                 "(call server:start(), or wait for a reply with :get())",
                 LOG_STR("handlers", handlers ? "never served a call" : "none"),
                 LOG_INT("unread_replies", calls));
}

void host_flush(host_t *h, lua_State *L, double seconds, int warn) {
    if (h->running) return;
    if (warn && !h->ran) s_warn_never_ran(h, L);
    double end = loop_now() + seconds;
    h->running = 1;
    h->Lrun = L;
    for (;;) {
        size_t waiting = 0;
        for (int i = 0; i < h->nendpoints; i++)
            if (h->endpoints[i]->ep) waiting += endpoint_outbox_size(h->endpoints[i]->ep);
        double wait = end - loop_now();
        if ((waiting == 0 && !sched_ready(&h->sched)) || wait <= 0 || loop_signal_received()) break;
        s_turn(h, L, wait < 0.01 ? wait : 0.01);
    }
    if (h->slot) {
        /* a worker's script ran the loop without serving (a sleep or a
         * :get() before a role guard) and took WORK meanwhile: the control's
         * socket is still open, so those calls are answered, not dropped
         * with the state */
        int left = sched_abandon(&h->sched, L, "PeerLostError", "the worker's script ended before the call did");
        if (left) workers_slot_abandoned(h->slot, (size_t)left);
    }
    h->running = 0;
    h->Lrun = NULL;
}
