/*
 * dispatch: endpoint events -> Lua (see dispatch.h).
 *
 * The message that caused an event (and the zone its decoded body lives in)
 * stays in the frames below dispatch_call; all that may raise runs above.
 * A WORK's handler does not run here: its task goes on the run queue and
 * the loop resumes it at its top (task.c).
 */
#include "dispatch.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "cluster_calls.h"
#include "host.h"
#include "host_state.h"
#include "login.h"
#include "message.h"
#include "workers.h"


int dispatch_call(host_t *h, lua_CFunction fn, void *job, sched_error_t *err) {
    lua_State *L = host_thread(h);
    if (!lua_checkstack(L, 8)) {
        snprintf(err->name, sizeof err->name, "MemoryError");
        snprintf(err->message, sizeof err->message, "stack overflow");
        err->traceback[0] = '\0';
        return -1;
    }
    lua_pushcfunction(L, sched_msgh);
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, job);
    h->sched.in_callback++;
    int status = sched_pcall(&h->sched, L, 1, 0, h->sched.max_hook_time, err);
    h->sched.in_callback--;
    return status == LUA_OK ? 0 : -1;
}

int dispatch_is_marked(lua_State *L, int idx, const char *mt) {
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
    luaL_getmetatable(L, mt);
    int yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

void dispatch_unhold(lua_State *L, lendpoint_t *le) {
    /* a closed endpoint stays pinned while tasks still point at it */
    if (--le->holds == 0 && !le->ep && le->self_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, le->self_ref);
        le->self_ref = LUA_NOREF;
    }
}

static void s_endpoint_log(void *ctx, int level, const char *msg, const log_field_t *fields) {
    lendpoint_t *le = ctx;
    host_log(le->host, level, msg, fields);
}

#define LOG_NAME_MAX 128          /* bytes of a called name in a log line */


/* Printable form of up to 48 bytes of a peer's routing id, for an error
 * message (log lines escape their own values). */
static const char *s_printable(char *out, size_t cap, const char *in, size_t len) {
    size_t n = len < cap - 1 ? len : cap - 1;
    for (size_t i = 0; i < n; i++) out[i] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
    out[n] = '\0';
    return out;
}

/* The access line of one call (debug): who called what, how it ended, and
 * for a call that ran, how long it took. */
static void s_access(host_t *h, const char *peer, size_t peer_len, const char *user, size_t user_len,
                     const char *name, size_t name_len, const char *outcome, double started) {
    HOST_LOG(h, LOG_DEBUG, "call", LOG_ID("peer", peer, peer_len),
             LOG_ID("user", user, user_len),
             LOG_CAP("name", name, name_len, LOG_NAME_MAX), LOG_STR("outcome", outcome),
             LOG_NUM("seconds", started > 0 ? loop_now() - started : 0));
}

/* --- WORK --- */

typedef struct work_job {
    lendpoint_t *le;
    const frame_message_t *m;
    message_work_t work;          /* the decoded body (views into m and the zone) */
    int kept;                     /* a task took it: it answers later */
    int gate_passed;              /* the auth gate ran already (a WORK a worker gave back) */
    int pushing_args;             /* a raise now is the body's: no Lua value (ProtocolError) */
    char user[FRAME_MAX_ID];      /* the sender's user id while no Lua string holds it
                                   * (every user id is at most 255 bytes: DESIGN.md 4.1) */
} work_job_t;

/* The route list on top becomes the callable the endpoint's resolver picks
 * for this caller (predicates, in Lua), or nil. */
static void s_route(lua_State *L, const lendpoint_t *le, const frame_message_t *m,
                    int user, int name, int args, int npos, int has_kwargs) {
    int routes = lua_gettop(L);
    if (le->resolver == LUA_NOREF) { lua_pushnil(L); lua_replace(L, routes); return; }
    luaL_checkstack(L, npos + 8, "too many arguments");
    lua_rawgeti(L, LUA_REGISTRYINDEX, le->resolver);
    lua_pushvalue(L, routes);
    lua_pushvalue(L, name);
    lua_pushvalue(L, user);
    lua_pushlstring(L, m->peer, m->peer_len);
    if (has_kwargs) lua_pushvalue(L, args + npos); else lua_pushnil(L);
    for (int i = 0; i < npos; i++) lua_pushvalue(L, args + i);
    lua_call(L, 5 + npos, 1);
    lua_replace(L, routes);
}

/* dispatch_walk_next, inlined into the lookup of every WORK */
static inline int s_walk_next(lua_State *L, host_t *h, dispatch_walk_t *w) {
    if (w->done || w->count >= DISPATCH_MAX_REGISTRIES) return LUA_NOREF;
    w->count++;
    lendpoint_t *at = w->at;
    int reg = at ? at->registry : h->global_registry;
    if (reg == LUA_NOREF || !at) {                       /* that was the global one */
        w->done = 1;
        return reg;
    }
    if (at->proxy_to == LUA_NOREF) {
        w->at = NULL;
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, at->proxy_to);
        lendpoint_t *next = luaL_testudata(L, -1, ENDPOINT_MT);
        lua_pop(L, 1);
        w->at = next && next->ep ? next : NULL;          /* closed: its registry is gone */
    }
    return reg;
}

int dispatch_walk_next(lua_State *L, host_t *h, dispatch_walk_t *w) { return s_walk_next(L, h, w); }

static inline int s_is_reserved(const char *name, size_t len) {
    size_t n = sizeof DISPATCH_RESERVED_PREFIX - 1;
    return len >= n && memcmp(name, DISPATCH_RESERVED_PREFIX, n) == 0;
}

/* Look up `name` (on top of L) in the endpoint's registry, then in those of
 * the endpoints it proxies to, then the global one; route lists ask the
 * resolver. A reserved name is looked up in the endpoint's own reserved
 * table only. Replaces the name with the callable or nil. */
static void s_lookup(lua_State *L, const work_job_t *job, int user,
                     int args, int npos, int has_kwargs, const char *name_str, size_t name_len) {
    lendpoint_t *le = job->le;
    const frame_message_t *m = job->m;
    int name = lua_gettop(L);
    if (s_is_reserved(name_str, name_len)) {
        if (le->reserved == LUA_NOREF) lua_pushnil(L);
        else {
            lua_rawgeti(L, LUA_REGISTRYINDEX, le->reserved);
            lua_pushvalue(L, name);
            lua_rawget(L, -2);
            lua_remove(L, -2);
        }
        lua_replace(L, name);
        return;
    }
    dispatch_walk_t w = { le, 0, 0 };
    int reg;
    while ((reg = s_walk_next(L, le->host, &w)) != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, reg);
        lua_pushvalue(L, name);
        lua_rawget(L, -2);
        if (dispatch_is_marked(L, -1, ROUTES_MT)) {
            if (lua_isnil(L, user)) {             /* first needed now */
                lua_pushlstring(L, job->user, m->user_len);
                lua_replace(L, user);
            }
            s_route(L, le, m, user, name, args, npos, has_kwargs);
        }
        if (!lua_isnil(L, -1)) { lua_replace(L, name); lua_pop(L, 1); return; }
        lua_pop(L, 2);
    }
    lua_pushnil(L);
    lua_replace(L, name);
}

/* One call of no registered name ended with `outcome` (counted only while
 * metrics are served). */
static void s_count_unknown(host_t *h, int outcome) {
    if (h->metrics) metrics_count(metrics_unknown(h->metrics), outcome);
    else if (h->ship_metrics) workers_ship_metric(h, NULL, 0, outcome, 0);   /* the control counts */
}

/* Answer `m` ERROR `name`: `message` at once; `called` is the name it
 * called (NULL when its body could not be read). */
static void s_work_refuse(lendpoint_t *le, const frame_message_t *m, const char *called, size_t called_len,
                          const char *name, const char *message, size_t len) {
    if (strcmp(name, "ProtocolError") == 0) {
        HOST_LOG_LIMITED(le->host, LOG_WARN, "refused WORK: answered ProtocolError",
                         LOG_ID("peer", m->peer, m->peer_len),
                         LOG_BYTES("reason", message, len));
    }
    if (HOST_LOG_ON(le->host, LOG_DEBUG))
        s_access(le->host, m->peer, m->peer_len, m->user, m->user_len, called ? called : "", called_len, name, 0);
    endpoint_reply_error(le->ep, m->peer, m->peer_len, NULL, 0, m->uuid, name, message, len, "");
}

/* Is the sender of `m` authenticated? Asks the backend
 * (is_authenticated(user_id, routing_id, logged_in)). */
static int s_gate(lua_State *L, lendpoint_t *le, const frame_message_t *m, int user) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, le->auth_gate);
    lua_pushvalue(L, user);
    lua_pushlstring(L, m->peer, m->peer_len);
    lua_pushboolean(L, m->logged_in);
    lua_call(L, 3, 1);
    int ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return ok;
}

/* Under dispatch_call: gate, arguments, lookup, then a task on the run
 * queue. Returns 0 having answered or queued; raises before either. */
static int s_work_protected(lua_State *L) {
    work_job_t *job = lua_touserdata(L, 1);
    lendpoint_t *le = job->le;
    host_t *h = le->host;
    const frame_message_t *m = job->m;
    const message_work_t *w = &job->work;
    /* The sender's identity, copied before anything runs: a hook (the
     * gate, a predicate, a finalizer any allocation may run) may change the
     * directory entry m->user points into. A Lua string only once a hook
     * needs it (the gate now, a predicate in s_lookup); till then nil. */
    int gated = le->auth_gate != LUA_NOREF && !job->gate_passed;
    int copied = !gated && m->user_len <= sizeof job->user;
    if (copied) {
        memcpy(job->user, m->user, m->user_len);
        lua_pushnil(L);
    } else {
        lua_pushlstring(L, m->user, m->user_len);
    }
    int user = lua_gettop(L);
    if (gated && !s_gate(L, le, m, user)) {
        static const char text[] = "Authentication Required";
        endpoint_reply(le->ep, m->peer, m->peer_len, NULL, 0, m->uuid, FRAME_UNAUTHORIZED,
                       text, sizeof text - 1);
        s_count_unknown(h, METRICS_UNAUTHORIZED);
        return 0;
    }
    /* arguments first: a name registered under domains is routed on them */
    int npos = (int)w->args->size, has_kwargs = w->kwargs != NULL;
    int nargs = npos + has_kwargs, base = lua_gettop(L);
    luaL_checkstack(L, nargs + 4, "too many arguments");
    job->pushing_args = 1;        /* a uint64 past 2^63-1, a NaN map key (codec.h) */
    for (int i = 0; i < npos; i++) codec_push_object(L, &w->args->ptr[i]);
    if (has_kwargs) codec_push_object(L, w->kwargs);
    job->pushing_args = 0;
    if (has_kwargs) codec_set_class(L, CODEC_KWARGS_MT);
    lua_pushlstring(L, w->name, w->name_len);
    s_lookup(L, job, user, base + 1, npos, has_kwargs, w->name, w->name_len);
    if (lua_isnil(L, -1)) {
        /* the name is the peer's bytes: escaped, at most 1 KiB of it (DESIGN.md 4) */
        char echo[MESSAGE_ECHO_SIZE];
        size_t n = message_echo(echo, w->name, w->name_len);
        s_work_refuse(le, m, w->name, w->name_len, "ServiceNotFoundError", echo, n);
        s_count_unknown(h, METRICS_NOT_FOUND);
        return 0;
    }
    lua_insert(L, base + 1);                      /* callable below its arguments */
    size_t user_len = m->user_len;
    const char *user_id = lua_isnil(L, user) ? job->user : lua_tolstring(L, user, &user_len);
    size_t need = m->peer_len + user_len + w->name_len;
    task_t *t = task_new(&h->sched, L);
    task_work_t *tw = &t->work;
    char *ids = tw->ids_cap < need ? realloc(tw->ids, need) : tw->ids;   /* sized, never cut */
    if (ids && ids != tw->ids) { tw->ids = ids; tw->ids_cap = need; }
    if (!ids || !lua_checkstack(t->co, nargs + 1)) {   /* xmove does not grow it */
        task_free(&h->sched, L, t);
        return luaL_error(L, "not enough memory for a task");
    }
    lua_xmove(L, t->co, nargs + 1);               /* callable and arguments */
    tw->owner = le;
    le->holds++;
    memcpy(tw->uuid, m->uuid, FRAME_UUID_SIZE);
    tw->peer_len = m->peer_len;
    tw->user_len = user_len;
    tw->name_len = w->name_len;
    memcpy(tw->ids, m->peer, m->peer_len);
    memcpy(tw->ids + m->peer_len, user_id, user_len);
    memcpy(tw->ids + m->peer_len + user_len, w->name, w->name_len);
    tw->serial = m->serial;
    tw->charged = m->charged;
    /* the registry resolved this name: it is a registered one (DESIGN.md 4:
     * a peer's other names never become a label) */
    tw->metric = h->metrics ? metrics_name(h->metrics, w->name, w->name_len) : NULL;
    tw->ship_metric = h->ship_metrics;
    tw->started = tw->metric || tw->ship_metric || HOST_LOG_ON(h, LOG_DEBUG) ? loop_now() : 0;
    task_start(&h->sched, t, nargs, &le->limits, m->idle_sender);
    job->kept = 1;                                /* the task answers, and releases the budget */
    return 0;
}

typedef struct gate_job {
    lendpoint_t *le;
    const frame_message_t *m;
    int ok;
} gate_job_t;

static int s_gate_protected(lua_State *L) {
    gate_job_t *job = lua_touserdata(L, 1);
    lua_pushlstring(L, job->m->user, job->m->user_len);
    job->ok = s_gate(L, job->le, job->m, lua_gettop(L));
    return 0;
}

/* With workers running, a server's WORK passes the auth gate here and runs
 * in a worker (docs/workers.md). 1: kept (a worker answers), 0: answered
 * here, -1: no worker took it (it runs here). */
static int s_to_worker(lendpoint_t *le, const frame_message_t *m) {
    host_t *h = le->host;
    if (le->auth_gate != LUA_NOREF) {
        gate_job_t g = { le, m, 0 };
        sched_error_t err;
        if (dispatch_call(h, s_gate_protected, &g, &err) < 0) {
            HOST_LOG_LIMITED(h, LOG_WARN, "WORK refused before its handler ran",
                             LOG_ID("peer", m->peer, m->peer_len),
                             LOG_STR("error", err.name), LOG_STR("message", err.message));
            endpoint_reply_error(le->ep, m->peer, m->peer_len, NULL, 0, m->uuid, "LuaError",
                                 err.message, strlen(err.message), "");
            return 0;
        }
        if (!g.ok) {
            static const char text[] = "Authentication Required";
            endpoint_reply(le->ep, m->peer, m->peer_len, NULL, 0, m->uuid, FRAME_UNAUTHORIZED,
                           text, sizeof text - 1);
            s_count_unknown(h, METRICS_UNAUTHORIZED);
            return 0;
        }
    }
    return workers_send_work(h->workers, le, m) == 0 ? 1 : -1;
}

static int s_on_work(void *ctx, endpoint_t *ep, const frame_message_t *m) {
    lendpoint_t *le = ctx;
    (void)ep;
    int gate_passed = 0;
    if (le->host->workers && le->name_len) {      /* docs/workers.md */
        int kept = s_to_worker(le, m);
        if (kept >= 0) return kept;
        gate_passed = 1;                          /* s_to_worker ran it: a stateful gate sees a call once */
    }
    return dispatch_work_here(le, m, gate_passed);
}

int dispatch_work_here(lendpoint_t *le, const frame_message_t *m, int gate_passed) {
    host_t *h = le->host;
    work_job_t job;                               /* not zeroed: job.user is 256 bytes */
    job.le = le;
    job.m = m;
    job.kept = 0;
    job.gate_passed = gate_passed;
    job.pushing_args = 0;
    codec_error_t why = { "msgpack: out of memory" };
    if (message_decode_work(m->body, m->body_len, &h->limits, &h->zone, &job.work, &why) < 0) {
        s_work_refuse(le, m, NULL, 0, "ProtocolError", why.message, strlen(why.message));
        s_count_unknown(h, METRICS_REFUSED);
        return 0;
    }
    sched_error_t err;
    if (dispatch_call(h, s_work_protected, &job, &err) < 0) {
        /* the codec's own refusals only (codec.h): a stack that could not
         * grow while pushing is memory, not the body */
        if (job.pushing_args && strncmp(err.message, "msgpack: ", 9) == 0) {
            s_work_refuse(le, m, NULL, 0, "ProtocolError", err.message, strlen(err.message));
            s_count_unknown(h, METRICS_REFUSED);
            return 0;
        }
        HOST_LOG_LIMITED(h, LOG_WARN, "WORK refused before its handler ran",
                         LOG_ID("peer", m->peer, m->peer_len),
                         LOG_STR("error", err.name), LOG_STR("message", err.message));
        endpoint_reply_error(le->ep, m->peer, m->peer_len, NULL, 0, m->uuid,
                             strcmp(err.name, "MemoryError") == 0 ? "MemoryError" : "LuaError",
                             err.message, strlen(err.message), "");
        s_count_unknown(h, METRICS_REFUSED);
    }
    return job.kept;
}

/* --- a task's end: its reply --- */

/* Replies of at least this many bytes hand the packer's buffer to ZeroMQ
 * instead of copying it (the next reply starts a new buffer: a malloc, far
 * cheaper than copying this much). */
#define ZERO_COPY_MIN (16u << 10)

/* A handler's call ended with `outcome`: its name's counter and latency. */
static void s_count_end(const task_t *t, int outcome) {
    metrics_name_t *n = t->work.metric;
    if (!n && t->work.ship_metric) {              /* a worker's: the control counts it */
        const task_work_t *w = &t->work;
        workers_ship_metric(((lendpoint_t *)w->owner)->host, w->ids + w->peer_len + w->user_len, w->name_len, outcome,
                            loop_now() - w->started);
        return;
    }
    if (!n) return;
    metrics_count(n, outcome);
    metrics_observe(n, loop_now() - t->work.started);
}

/* A stopped call ends (its caller's connection closed): counted, its
 * budget released, not answered: an answer goes only to the connection
 * its WORK came on, and that one is closed. */
static void s_end_stopped(host_t *h, task_t *t, int outcome, const char *name) {
    const task_work_t *w = &t->work;
    lendpoint_t *le = w->owner;
    const char *peer = w->ids, *user = peer + w->peer_len;
    s_count_end(t, outcome);
    if (HOST_LOG_ON(h, LOG_DEBUG))
        s_access(h, peer, w->peer_len, user, w->user_len, user + w->user_len, w->name_len, name, w->started);
    endpoint_release(le->ep, peer, w->peer_len, w->serial, w->charged);
    endpoint_unanswered(le->ep, peer, w->peer_len, user, w->user_len, w->uuid);
}

static void s_answer_ok(void *ctx, task_t *t, lua_State *co, int first, int nres) {
    host_t *h = ctx;
    lendpoint_t *le = t->work.owner;
    if (!le->ep) {                                 /* closed: nobody to answer, but a worker's control */
        const task_work_t *w = &t->work;
        int answered = workers_answer_closed(le, w->ids, w->peer_len, w->ids + w->peer_len, w->user_len,
                                             w->uuid, w->serial, w->charged);
        s_count_end(t, answered ? METRICS_ERROR : METRICS_OK);   /* its caller got PeerLostError */
        return;
    }
    if (t->stopped) {                             /* it caught PeerLostError and returned */
        s_end_stopped(h, t, METRICS_OK, "OK");
        return;
    }
    codec_error_t err = { "msgpack: out of memory" };
    msgpack_packer *pk = host_packer(h, le->max_message_size);
    int rc = 0;
    if (nres == 0) {
        rc = msgpack_pack_nil(pk);
    } else if (nres == 1) {
        rc = codec_pack_value(co, first, pk, &h->limits, 0, &err);
    } else {                                       /* several values travel as an array */
        rc = msgpack_pack_array(pk, (size_t)nres);
        for (int i = 0; i < nres && rc == 0; i++)
            rc = codec_pack_value(co, first + i, pk, &h->limits, 1, &err);
    }
    size_t len;
    int over;
    const char *body = host_packed(h, &len, &over);
    const task_work_t *w = &t->work;
    const char *peer = w->ids, *user = w->ids + w->peer_len;
    if (rc == 0) {
        if (HOST_LOG_ON(h, LOG_DEBUG))
            s_access(h, peer, w->peer_len, user, w->user_len, user + w->user_len, w->name_len, "OK",
                     w->started);
        s_count_end(t, METRICS_OK);
        endpoint_release(le->ep, peer, w->peer_len, w->serial, w->charged);
        if (len >= ZERO_COPY_MIN) {               /* the packed bytes themselves leave */
            char *owned = host_packed_take(h, &len);
            if (owned) {
                endpoint_answer_owned(le->ep, peer, w->peer_len, w->serial, user, w->user_len, w->uuid,
                                      FRAME_OK, owned, len);
                return;
            }
        }
        endpoint_answer(le->ep, peer, w->peer_len, w->serial, user, w->user_len, w->uuid, FRAME_OK, body, len);
        return;
    }
    char text[200];
    const char *name = "TypeError", *message = err.message;
    if (over) {
        name = "MemoryError";
        snprintf(text, sizeof text, "the reply would pack to more than max_message_size "
                 "(%zu bytes) or max_elements (%zu values)", le->max_message_size, h->limits.max_elements);
        message = text;
    }
    host_pack_reset(h, 0);                        /* frees what the refused pack grew */
    h->sched.ops.answer_error(ctx, t, name, message, "");
}

static void s_answer_error(void *ctx, task_t *t, const char *name, const char *message,
                           const char *traceback) {
    host_t *h = ctx;
    lendpoint_t *le = t->work.owner;
    const task_work_t *w = &t->work;
    const char *peer = w->ids, *user = peer + w->peer_len, *called = user + w->user_len;
    /* the operator sees handler failures (PSEUD_LOG=error hides them): name,
     * class, message, where it was raised; not a stopped call's PeerLostError
     * (its caller left), only its kill past the grace */
    if (!t->stopped || t->expired) {
        const char *line = strstr(traceback, "\n\t");
        size_t where = 0;
        while (line && strncmp(line + 2, "[C]:", 4) == 0) line = strstr(line + 2, "\n\t");
        if (line) { line += 2; where = strcspn(line, "\n"); }
        HOST_LOG_LIMITED(h, LOG_WARN, "handler failed", LOG_CAP("name", called, w->name_len, LOG_NAME_MAX),
                         LOG_STR("error", name), LOG_STR("message", message),
                         LOG_CAP("at", line ? line : "", where, 200),
                         LOG_ID("peer", peer, w->peer_len));
    }
    if (t->stopped && le->ep) {
        s_end_stopped(h, t, METRICS_ERROR, name);
        return;
    }
    s_count_end(t, METRICS_ERROR);
    if (HOST_LOG_ON(h, LOG_DEBUG))
        s_access(h, peer, w->peer_len, user, w->user_len, called, w->name_len, name, w->started);
    if (le->ep) {
        endpoint_release(le->ep, peer, w->peer_len, w->serial, w->charged);
        endpoint_answer_error(le->ep, peer, w->peer_len, w->serial, user, w->user_len, w->uuid, name, message,
                              strlen(message), traceback);
    } else {
        workers_answer_closed(le, peer, w->peer_len, user, w->user_len, w->uuid, w->serial, w->charged);
    }
}

static void s_release(void *ctx, lua_State *L, task_t *t) {
    (void)ctx;
    dispatch_unhold(L, t->work.owner);
}

static int s_alone(void *ctx, const task_t *t) {
    (void)ctx;
    const lendpoint_t *le = t->work.owner;
    return le->ep && endpoint_peer_alone(le->ep, t->work.ids, t->work.peer_len, t->work.serial);
}

void dispatch_task_ops(host_t *h, sched_ops_t *ops) {
    ops->ctx = h;
    ops->answer_ok = s_answer_ok;
    ops->answer_error = s_answer_error;
    ops->release = s_release;
    ops->alone = s_alone;
}

int dispatch_push_caller(lua_State *L) {
    task_t *t = task_current(L);
    if (!t) {                                     /* a coroutine the handler runs */
        sched_t *s = sched_of(L);
        t = s && s->current != &s->hook ? s->current : NULL;
    }
    if (!t || !t->work.owner) return 0;
    lua_pushlstring(L, t->work.ids + t->work.peer_len, t->work.user_len);
    lua_pushlstring(L, t->work.ids, t->work.peer_len);
    return 2;
}

/* --- replies to our calls --- */

typedef struct reply_job {
    lendpoint_t *le;
    endpoint_call_t *call;
    int type;                     /* FRAME_OK or FRAME_ERROR */
    message_reply_t reply;        /* decoded, or a failure (error_name, message) */
    const char *error_name, *message;
    int pushing;                  /* a raise now is the reply's body: no Lua value (ProtocolError) */
} reply_job_t;

/* Push "call 'NAME' to 'PEER' at ADDRESS": which call of future 2 ended. */
static const char *s_push_call_context(lua_State *L, const reply_job_t *job) {
    char who[64];
    lua_getiuservalue(L, 2, 3);
    const char *name = lua_tostring(L, -1);
    const endpoint_call_t *c = job->call;
    const char *text;
    char via[64];
    if (c->peer_len == 0 && job->le->ep && endpoint_is_proxy(job->le->ep))   /* a worker's, made by the control */
        text = lua_pushfstring(L, "call '%s' to '%s'", name ? name : "?",
            s_printable(who, sizeof who, c->user, c->user_len));
    else if (c->peer_len == 0)                    /* forwarded through the cluster */
        text = lua_pushfstring(L, "call '%s' to '%s' %s%s", name ? name : "?",
            s_printable(who, sizeof who, c->user, c->user_len),
            c->via ? "on node " : "in the cluster",
            c->via ? s_printable(via, sizeof via, c->via, strlen(c->via)) : "");
    else
        text = lua_pushfstring(L, "call '%s' to '%s'%s%s", name ? name : "?",
            s_printable(who, sizeof who, c->peer, c->peer_len),
            job->le->address[0] ? " at " : "", job->le->address);
    lua_remove(L, -2);
    return text;
}

static int s_reply_protected(lua_State *L) {
    reply_job_t *job = lua_touserdata(L, 1);
    sched_t *s = sched_of(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, job->call->ref);      /* the future: 2 */
    const message_reply_t *r = &job->reply;
    if (job->error_name) {                        /* ended here: say which call, to whom, where */
        const char *what = job->message;
        if (strcmp(job->error_name, "TimeoutError") == 0)
            what = lua_pushfstring(L, "no reply within %f s", job->le->timeout);
        const char *context = s_push_call_context(L, job);
        task_push_error(L, job->error_name, lua_pushfstring(L, "%s (%s)", what, context), "");
    } else if (job->type == FRAME_OK) {
        job->pushing = 1;         /* a uint64 past 2^63-1, a NaN map key (codec.h) */
        codec_push_object(L, &r->value);
        job->pushing = 0;
    } else {                                      /* the peer's ERROR, as it sent it, and which call */
        s_push_call_context(L, job);
        lua_createtable(L, 0, 4);
        lua_pushlstring(L, r->name, r->name_len); lua_setfield(L, -2, "name");
        lua_pushlstring(L, r->message, r->message_len); lua_setfield(L, -2, "message");
        lua_pushlstring(L, r->traceback, r->traceback_len); lua_setfield(L, -2, "traceback");
        lua_rotate(L, -2, 1);
        lua_setfield(L, -2, "call");
        codec_set_class(L, ERROR_MT);
    }
    future_settle(s, L, 2, job->error_name || job->type != FRAME_OK ? FUTURE_FAILED : FUTURE_OK);
    /* only now: a raise above leaves the future to s_settle's fallback,
     * which must still find it (else the call would never end) */
    luaL_unref(L, LUA_REGISTRYINDEX, job->call->ref);
    job->call->ref = LUA_NOREF;
    return 0;
}

/* A future no value could be given: settled failed with what there is room for. */
static int s_settle_bare(lua_State *L) {
    reply_job_t *job = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, job->call->ref);
    luaL_unref(L, LUA_REGISTRYINDEX, job->call->ref);
    job->call->ref = LUA_NOREF;
    lua_pushstring(L, job->message);
    future_settle(sched_of(L), L, 2, FUTURE_FAILED);
    return 0;
}

static void s_settle(lendpoint_t *le, reply_job_t *job) {
    host_t *h = le->host;
    sched_error_t err;
    if (dispatch_call(h, s_reply_protected, job, &err) == 0) return;
    if (job->pushing && strncmp(err.message, "msgpack: ", 9) == 0) {
        /* the codec's own refusal: the reply is well-formed msgpack with no
         * Lua value, a ProtocolError as a WORK's would be (DESIGN.md 4) */
        HOST_LOG_LIMITED(h, LOG_WARN, "a reply has no Lua value: its call ends with ProtocolError",
                         LOG_STR("message", err.message));
        char why[sizeof err.message];
        memcpy(why, err.message, sizeof why);
        job->pushing = 0;
        job->error_name = "ProtocolError";
        job->message = why;
        if (dispatch_call(h, s_reply_protected, job, &err) == 0) return;
    }
    HOST_LOG(h, LOG_WARN, "a reply could not be delivered", LOG_STR("error", err.name),
             LOG_STR("message", err.message));
    if (job->call->ref == LUA_NOREF) return;      /* it was settled after all */
    job->message = "MemoryError: not enough memory for the reply";
    if (dispatch_call(h, s_settle_bare, job, &err) < 0)
        HOST_LOG(h, LOG_ERROR, "a call's future could not be settled", LOG_STR("message", err.message));
}

static void s_on_reply(void *ctx, endpoint_t *ep, endpoint_call_t *call, int type,
                       const char *body, size_t body_len) {
    lendpoint_t *le = ctx;
    host_t *h = le->host;
    reply_job_t job = { .le = le, .call = call, .type = type };
    codec_error_t why = { "msgpack: out of memory" };
    (void)ep;
    if (message_decode_reply(type, body, body_len, &h->limits, &h->zone, &job.reply, &why) < 0) {
        job.error_name = "ProtocolError";
        job.message = why.message;
    }
    s_settle(le, &job);
}

static void s_on_call_failed(void *ctx, endpoint_t *ep, endpoint_call_t *call,
                             const char *error_name, const char *message) {
    lendpoint_t *le = ctx;
    (void)ep;
    if (le->in_gc) return;                        /* lua_close: no Lua runs for it */
    reply_job_t job = { .le = le, .call = call, .error_name = error_name, .message = message };
    s_settle(le, &job);
}

/* Where a call to user id `user` (NULL: the default peer) goes: its
 * routing id and the identity its reply must carry. Directory pointers:
 * valid until the directory changes, so call it right before sending. */
static int s_resolve(lendpoint_t *le, const char *user, size_t user_len,
                     const char *rid, size_t rid_len,
                     const char **peer, size_t *peer_len, const char **who, size_t *who_len) {
    *peer = le->default_peer; *peer_len = le->default_peer_len;
    *who = NULL; *who_len = 0;
    if (!user) return 1;
    /* A server's peers come to it, so one it has not heard from (or has
     * declared gone) is lost; a client's user ids are its servers. */
    peers_t *d = endpoint_peers(le->ep);
    endpoint_sync_peers(le->ep);
    int strict = endpoint_strict(le->ep);
    peer_t *p = peers_find_user(d, user, user_len);
    *who = user; *who_len = user_len;
    peer_t *q = rid ? peers_find(d, rid, rid_len) : NULL;   /* get_routing_id's hint */
    /* with authentication only a routing id carrying that very user id will
     * do; without it the routing id is the identity */
    if (q && (!strict || (q->user_id_len == user_len && memcmp(q->user_id, user, user_len) == 0))) {
        p = q;
        *who = q->user_id; *who_len = q->user_id_len;
    }
    if (p && p->closed && strict) p = NULL;        /* its connection is gone */
    if (p) { *peer = p->routing_id; *peer_len = p->routing_id_len; return 1; }
    *peer = user; *peer_len = user_len;
    if (le->default_peer_len == 0) return 0;       /* unknown */
    *who = NULL; *who_len = 0;                     /* a client naming its server */
    return 1;
}

endpoint_call_t *dispatch_send_call(lendpoint_t *le, const char *user, size_t user_len,
                                    const char *rid, size_t rid_len, const char *body, size_t body_len,
                                    double timeout, int ref, int *e, const char **why) {
    const char *peer, *who;
    size_t peer_len, who_len;
    *why = NULL;
    if (endpoint_is_proxy(le->ep))                /* a worker's: the control makes it */
        return workers_send_call(le, user, user_len, rid, rid_len, body, body_len, timeout, ref, e);
    int unknown = !s_resolve(le, user, user_len, rid, rid_len, &peer, &peer_len, &who, &who_len);
    endpoint_call_t *c;
    if (unknown && le->cluster)                   /* on another node, maybe */
        c = cluster_calls_send(le->cluster, user, user_len, body, body_len, timeout, ref, why);
    else
        c = unknown ? NULL : endpoint_send_work(le->ep, peer, peer_len, who, who_len,
                                                body, body_len, timeout, ref);
    if (!c) *e = *why || unknown ? EHOSTUNREACH : errno;
    return c;
}

/* --- heartbeat hooks --- */

typedef struct peer_job {
    lendpoint_t *le;
    const char *event;
    const peer_t *peer;
} peer_job_t;

static int s_peer_protected(lua_State *L) {
    peer_job_t *job = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, job->le->heartbeat_hook);
    lua_pushstring(L, job->event);
    lua_pushlstring(L, job->peer->user_id, job->peer->user_id_len);
    lua_pushlstring(L, job->peer->routing_id, job->peer->routing_id_len);
    lua_call(L, 3, 0);
    return 0;
}

/* The backend's hook runs synchronously; an error is logged, never more. */
static void s_peer_event(lendpoint_t *le, const char *event, const peer_t *p) {
    if (le->heartbeat_hook == LUA_NOREF || le->in_gc) return;
    peer_job_t job = { le, event, p };
    sched_error_t err;
    if (dispatch_call(le->host, s_peer_protected, &job, &err) < 0)
        HOST_LOG_LIMITED(le->host, LOG_WARN, "heartbeat hook failed", LOG_STR("hook", event),
                         LOG_STR("error", err.name), LOG_STR("message", err.message));
}

static void s_on_peer_seen(void *ctx, endpoint_t *ep, const peer_t *p) {
    (void)ep;
    s_peer_event(ctx, "heartbeat", p);
}

static void s_on_peer_gone(void *ctx, endpoint_t *ep, const peer_t *p) {
    (void)ep;
    s_peer_event(ctx, "timeout", p);
}

void dispatch_stop_calls(lendpoint_t *le, uint64_t serial, const char *peer, size_t peer_len) {
    int n = sched_stop_calls(&le->host->sched, le, serial);
    if (n > 0)
        HOST_LOG_LIMITED(le->host, LOG_INFO, "calls stopped: their caller's connection closed",
                         LOG_ID("peer", peer, peer_len), LOG_INT("calls", (size_t)n));
}

/* No answer can reach the calls of a closed connection: they stop, here
 * and in the workers (README, Backpressure). */
static void s_on_caller_gone(void *ctx, endpoint_t *ep, uint64_t serial, const char *peer, size_t peer_len) {
    lendpoint_t *le = ctx;
    (void)ep;
    dispatch_stop_calls(le, serial, peer, peer_len);
    if (le->host->workers && le->name_len) workers_stop_calls(le->host->workers, le, serial, peer, peer_len);
}

/* The directory gained or lost an identity: its cluster publishes it. */
static void s_on_identity(void *ctx, endpoint_t *ep, const char *user, size_t len, int present) {
    lendpoint_t *le = ctx;
    (void)ep;
    if (le->cluster) cluster_calls_identity(le->cluster, user, len, present);
}

void dispatch_events(lendpoint_t *le, endpoint_events_t *ev) {
    ev->ctx = le;
    ev->on_work = s_on_work;
    ev->on_reply = s_on_reply;
    ev->on_call_failed = s_on_call_failed;
    ev->on_hello = login_on_hello;
    ev->on_peer_seen = s_on_peer_seen;
    ev->on_peer_gone = s_on_peer_gone;
    ev->on_identity = s_on_identity;
    ev->on_caller_gone = s_on_caller_gone;
    ev->log = s_endpoint_log;
}
