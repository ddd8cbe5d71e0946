/*
 * host: endpoint events -> Lua work (see host.h).
 *
 * Every entry from the loop into Lua (a WORK, a reply, a failed call, a sleep
 * that ends) runs a C function under lua_pcall on the thread that runs the
 * loop, so an out-of-memory raise never jumps over the loop's C frames. The
 * message that caused it stays in the frame below (endpoint.c).
 *
 * Handlers run as tasks: a coroutine with a task_t in its extra space. Tasks
 * are pooled: a coroutine that returned is reused as it is, one that raised
 * is reset first (lua_resetthread), so a call costs no new thread.
 */
#include "host.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <zmq.h>

#include "message.h"

#define POOL_MAX   256            /* idle tasks kept */
#define SLICE      0.01           /* seconds a task runs before it yields to the loop */
#define HOOK_COUNT 10000          /* VM instructions between looks at the clock */
#define SBUF_KEEP  (1u << 20)     /* a pack buffer larger than this is freed after use */
#define S_LITERAL(s) s, sizeof s - 1  /* a string literal and its length */

enum task_wait { TASK_RUNNING, TASK_WAIT_FUTURE, TASK_WAIT_SLEEP, TASK_PREEMPTED };

struct task {
    lua_State *co;                /* its coroutine */
    int co_ref;                   /* pins co */
    host_t *host;
    int wait;                     /* enum task_wait: why it is parked */
    loop_timer_t *timer;          /* sleep timer while TASK_WAIT_SLEEP */
    lfuture_t *future;            /* the future it is parked on while TASK_WAIT_FUTURE */
    double slice_end;             /* monotonic: past it, the hook yields; 0: not started */
    double deadline;              /* monotonic: past it, the hook kills it; 0: none */
    double mem_cap;               /* bytes it may allocate, net; 0: unlimited */
    double mem_net;               /* bytes it allocated, net of what it freed */
    lendpoint_t *le;              /* the endpoint its WORK came from, or NULL */
    int result;                   /* ref: the future a spawn settles, or LUA_NOREF */
    uint8_t uuid[FRAME_UUID_SIZE];/* the WORK it answers */
    char *ids;                    /* who to answer: routing id, then the caller's user id */
    size_t ids_cap;               /* bytes allocated at ids, kept across reuse */
    size_t peer_len, user_len;
};

typedef struct work_job {
    lendpoint_t *le;
    const frame_message_t *m;
    int owned;                    /* a task took the call: it answers */
} work_job_t;

typedef struct reply_job {
    lendpoint_t *le;
    endpoint_call_t *call;
    int type;                     /* FRAME_OK, FRAME_ERROR, or 0 for a failure */
    const char *body;
    size_t body_len;
    const char *error_name, *message;
    int settled;
} reply_job_t;

static void s_task_resume(host_t *h, lua_State *L, task_t *t, int nargs);

void host_log(host_t *h, const char *fmt, ...) {
    if (h->quiet) return;
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "pseud-lua: %s\n", line);
}

static void s_endpoint_log(void *ctx, const char *line) {
    lendpoint_t *le = ctx;
    host_log(le->host, "%s", line);
}

int host_init(host_t *h, lua_State *L) {
    memset(h, 0, sizeof *h);
    h->L = L;
    h->global_registry = LUA_NOREF;
    h->zap_handler = LUA_NOREF;
    const char *log = getenv("PSEUD_LOG");
    h->quiet = log && strcmp(log, "quiet") == 0;
    codec_limits_init(&h->limits);
    msgpack_sbuffer_init(&h->sbuf);
    msgpack_packer_init(&h->pk, &h->sbuf, msgpack_sbuffer_write);
    if (!msgpack_zone_init(&h->zone, 4096)) return -1;
    h->pool = calloc(POOL_MAX, sizeof *h->pool);
    h->loop = loop_new();
    h->zmq = zmq_ctx_new();
    if (!h->pool || !h->loop || !h->zmq) { host_close(h); return -1; }
    return 0;
}

void host_close(host_t *h) {
    if (h->alloc) {                               /* what is freed from now on: theirs */
        lua_setallocf(h->L, h->alloc, h->alloc_ud);
        h->alloc = NULL;
    }
    passwd_destroy(&h->passwd);                   /* before zap: its answers go there */
    for (int i = 0; i < h->npool; i++) { free(h->pool[i]->ids); free(h->pool[i]); }   /* threads: the GC's */
    h->npool = 0;
    free(h->pool);
    h->pool = NULL;
    zap_destroy(&h->zap);
    loop_destroy(&h->loop);
    if (h->zmq) { zmq_ctx_term(h->zmq); h->zmq = NULL; }
    msgpack_sbuffer_destroy(&h->sbuf);
    msgpack_sbuffer_init(&h->sbuf);
    if (h->zone.chunk_list.head) { msgpack_zone_destroy(&h->zone); memset(&h->zone, 0, sizeof h->zone); }
}

static void s_sbuf_reset(host_t *h) {
    if (h->sbuf.alloc > SBUF_KEEP) {
        msgpack_sbuffer_destroy(&h->sbuf);
        msgpack_sbuffer_init(&h->sbuf);
    }
    h->sbuf.size = 0;
}

void host_push_error(lua_State *L, const char *name, const char *message, const char *traceback) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, traceback ? traceback : "");
    lua_setfield(L, -2, "traceback");
    luaL_setmetatable(L, ERROR_MT);
}

task_t *host_current_task(lua_State *L) {
    return *(task_t **)lua_getextraspace(L);
}

int host_push_caller(lua_State *L) {
    task_t *t = host_current_task(L);
    if (!t || !t->le) return 0;
    lua_pushlstring(L, t->ids + t->peer_len, t->user_len);
    lua_pushlstring(L, t->ids, t->peer_len);
    return 2;
}

/* --- tasks --- */

/* The count hook of every task: a task past its slice yields back to the
 * loop (so I/O, heartbeats and other calls go on); one past its
 * max_handler_time is stopped with TimeoutError, and the hook re-arms on
 * every instruction so a pcall in the handler cannot swallow that. It cannot
 * stop one long C call (string.rep of a huge string, a blocking read). */
static void s_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    task_t *t = host_current_task(L);
    if (!t) return;                               /* a coroutine the handler made */
    double now = loop_now();
    if (t->slice_end == 0) t->slice_end = now + SLICE;    /* first look of this run */
    if (t->deadline > 0 && now > t->deadline) {
        lua_sethook(L, s_hook, LUA_MASKCOUNT, 1);
        host_push_error(L, "TimeoutError", "the handler ran past max_handler_time", "");
        lua_error(L);
    }
    if (now > t->slice_end && lua_isyieldable(L)) {
        t->wait = TASK_PREEMPTED;
        lua_yield(L, 0);
    }
}

void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    host_t *h = ud;
    task_t *t = h->current;
    if (t && t->mem_cap > 0) {
        double was = ptr ? (double)osize : 0;     /* osize is a type tag when ptr is NULL */
        double delta = (double)nsize - was;
        if (delta > 0 && t->mem_net + delta > t->mem_cap) return NULL;
        void *p = h->alloc(h->alloc_ud, ptr, osize, nsize);
        if (p || nsize == 0) t->mem_net += delta;
        return p;
    }
    return h->alloc(h->alloc_ud, ptr, osize, nsize);
}

static task_t *s_task_acquire(host_t *h, lua_State *L) {
    task_t *t;
    if (h->npool > 0) {
        t = h->pool[--h->npool];
    } else {
        lua_State *co = lua_newthread(L);              /* may raise: nothing held yet */
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);      /* pops the thread */
        t = malloc(sizeof *t);
        if (!t) {
            luaL_unref(L, LUA_REGISTRYINDEX, ref);
            luaL_error(L, "not enough memory");
        }
        t->co = co;
        t->co_ref = ref;
        t->host = h;
        t->ids = NULL;
        t->ids_cap = 0;
        *(task_t **)lua_getextraspace(co) = t;
        lua_sethook(co, s_hook, LUA_MASKCOUNT, HOOK_COUNT);
    }
    t->wait = TASK_RUNNING;
    t->timer = NULL;
    t->future = NULL;
    t->deadline = 0;
    t->mem_cap = 0;
    t->mem_net = 0;
    t->le = NULL;
    t->result = LUA_NOREF;
    t->peer_len = 0;
    h->ntasks++;
    return t;
}

static void s_endpoint_unhold(lua_State *L, lendpoint_t *le) {
    /* a closed endpoint stays pinned while tasks still point at it */
    if (--le->tasks == 0 && !le->ep && le->self_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, le->self_ref);
        le->self_ref = LUA_NOREF;
    }
}

static void s_task_release(host_t *h, lua_State *L, task_t *t) {
    if (t->le) { s_endpoint_unhold(L, t->le); t->le = NULL; h->nanswering--; }
    if (t->result != LUA_NOREF) { luaL_unref(L, LUA_REGISTRYINDEX, t->result); t->result = LUA_NOREF; }
    if (t->timer) { loop_cancel_timer(h->loop, t->timer); t->timer = NULL; }
    t->future = NULL;
    t->wait = TASK_RUNNING;
    int status = lua_status(t->co);
    /* A coroutine that died of an error is not reused: an error raised in a
     * hook (a kill) leaves hooks disabled on it for good (5.4.4). */
    int reusable = status == LUA_OK || status == LUA_YIELD;
    if (status != LUA_OK) lua_resetthread(t->co);
    lua_settop(t->co, 0);
    h->ntasks--;
    if (reusable && h->npool < POOL_MAX) {
        h->pool[h->npool++] = t;
    } else {
        *(task_t **)lua_getextraspace(t->co) = NULL;
        luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
        free(t->ids);
        free(t);
    }
}

/* Answer the task's WORK, if it has one and its endpoint is open: to the
 * routing id it came from, only while that carries the caller's identity. */
static void s_task_reply(task_t *t, int type, const void *body, size_t len) {
    if (t->le && t->le->ep)
        endpoint_reply(t->le->ep, t->ids, t->peer_len, t->ids + t->peer_len, t->user_len,
                       t->uuid, type, body, len);
}

static void s_task_reply_error(task_t *t, const char *name, const char *message,
                               const char *traceback) {
    if (t->le && t->le->ep)
        endpoint_reply_error(t->le->ep, t->ids, t->peer_len, t->ids + t->peer_len, t->user_len,
                             t->uuid, name, message, strlen(message), traceback);
}

/* The task returned `nres` values on its stack. */
static void s_task_done(host_t *h, lua_State *L, task_t *t, int nres) {
    lua_State *co = t->co;
    if (t->result != LUA_NOREF) {                  /* spawn: settle its future */
        luaL_checkstack(L, 4, "too many nested waits");
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->result);
        if (nres > 0) {                            /* its first value */
            lua_pushvalue(co, -nres);
            lua_xmove(co, L, 1);
        } else {
            lua_pushnil(L);
        }
        host_settle(h, L, -2, FUTURE_OK);
        lua_pop(L, 1);
    } else if (t->le) {
        codec_error_t err = { "msgpack: out of memory" };
        int rc = 0, base = lua_gettop(co) - nres;
        s_sbuf_reset(h);
        if (nres == 0) {
            rc = msgpack_pack_nil(&h->pk);
        } else if (nres == 1) {
            rc = codec_pack_value(co, base + 1, &h->pk, &h->limits, 0, &err);
        } else {                                    /* several values travel as an array */
            rc = msgpack_pack_array(&h->pk, (size_t)nres);
            for (int i = 1; i <= nres && rc == 0; i++)
                rc = codec_pack_value(co, base + i, &h->pk, &h->limits, 1, &err);
        }
        if (rc == 0) s_task_reply(t, FRAME_OK, h->sbuf.data, h->sbuf.size);
        else s_task_reply_error(t, "TypeError", err.message, "");
    }
    s_task_release(h, L, t);
}

/* Under lua_pcall: (error value, thread) -> name, message, traceback.
 * A __tostring may raise, and so may memory: the caller falls back. */
static int s_describe_error(lua_State *L) {
    lua_State *co = lua_tothread(L, 2);
    const char *name = "LuaError", *message;
    int is_error = 0;
    if (lua_istable(L, 1) && lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, ERROR_MT);
        is_error = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    if (is_error) {
        lua_getfield(L, 1, "name");
        lua_getfield(L, 1, "message");
        if (lua_isstring(L, -2)) name = lua_tostring(L, -2);
        message = lua_isstring(L, -1) ? lua_tostring(L, -1) : "";
    } else {
        message = luaL_tolstring(L, 1, NULL);
    }
    lua_pushstring(L, name);
    lua_pushstring(L, message);
    luaL_traceback(L, co, message, 0);
    return 3;
}

/* The task raised: error value on top of its stack, `status` from lua_resume.
 * It is answered (or its future settled) and released on every path. */
static void s_task_failed(host_t *h, lua_State *L, task_t *t, int status) {
    lua_State *co = t->co;
    int top = lua_gettop(L);
    const char *name = "MemoryError", *message = "not enough memory", *traceback = "";
    if (status != LUA_ERRMEM && lua_checkstack(L, 8)) {
        lua_pushcfunction(L, s_describe_error);
        lua_xmove(co, L, 1);                       /* error value -> L */
        lua_pushthread(co);
        lua_xmove(co, L, 1);
        if (lua_pcall(L, 2, 3, 0) == LUA_OK) {
            name = lua_tostring(L, -3);
            message = lua_tostring(L, -2);
            traceback = lua_tostring(L, -1);
        } else {
            name = "LuaError";
            message = "(the error value could not be turned into a message)";
        }
    }
    if (t->result != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->result);
        host_push_error(L, name, message, traceback);
        host_settle(h, L, -2, FUTURE_FAILED);
        lua_pop(L, 1);
    } else if (t->le) {
        s_task_reply_error(t, name, message, traceback);
    } else {
        host_log(h, "background task failed: %s: %s", name, message);
    }
    lua_settop(L, top);
    s_task_release(h, L, t);
}

static void s_on_sleep_done(loop_t *loop, loop_timer_t *timer, void *arg);

static void s_task_resume(host_t *h, lua_State *L, task_t *t, int nargs) {
    int nres = 0;
    t->wait = TASK_RUNNING;
    t->slice_end = 0;              /* the hook starts the slice: no clock read per call */
    task_t *outer = h->current;                   /* resumes nest: spawn, settle */
    h->current = t;
    int status = lua_resume(t->co, L, nargs, &nres);
    h->current = outer;
    if (status == LUA_YIELD && t->wait == TASK_PREEMPTED) {
        /* back of the line: resumed from a timer, after the loop's I/O */
        lua_pop(t->co, nres);
        t->timer = loop_add_timer(h->loop, 0, s_on_sleep_done, t);
        if (t->timer) { t->wait = TASK_WAIT_SLEEP; return; }
        lua_pushliteral(t->co, "not enough memory to reschedule the handler");
        s_task_failed(h, L, t, LUA_ERRRUN);
        return;
    }
    if (status == LUA_OK) {
        s_task_done(h, L, t, nres);
    } else if (status == LUA_YIELD) {
        lua_pop(t->co, nres);
        if (t->wait == TASK_RUNNING) {             /* coroutine.yield in a handler */
            lua_pushliteral(t->co, "a handler yielded outside pseud "
                            "(use pseud.sleep or a future's :get(), not coroutine.yield)");
            s_task_failed(h, L, t, LUA_ERRRUN);
        }
    } else {
        s_task_failed(h, L, t, status);
    }
}

/* --- WORK --- */

/* Is the value at `idx` a table with metatable `mt` (a route list,
 * ROUTES_MT; a deferred password check, PASSWORD_CHECK_MT)? */
static int s_is_marked(lua_State *L, int idx, const char *mt) {
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
    luaL_getmetatable(L, mt);
    int yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

/* The route list on top becomes the callable the endpoint's resolver picks
 * for this caller (predicates, in Lua), or nil. */
static void s_route(lua_State *L, const lendpoint_t *le, const frame_message_t *m,
                    const char *user, size_t user_len, int name, int args, int npos,
                    int has_kwargs) {
    int routes = lua_gettop(L);
    if (le->resolver == LUA_NOREF) { lua_pushnil(L); lua_replace(L, routes); return; }
    luaL_checkstack(L, npos + 8, "too many arguments");
    lua_rawgeti(L, LUA_REGISTRYINDEX, le->resolver);
    lua_pushvalue(L, routes);
    lua_pushvalue(L, name);
    lua_pushlstring(L, user, user_len);
    lua_pushlstring(L, m->peer, m->peer_len);
    if (has_kwargs) lua_pushvalue(L, args + npos); else lua_pushnil(L);
    for (int i = 0; i < npos; i++) lua_pushvalue(L, args + i);
    lua_call(L, 5 + npos, 1);
    lua_replace(L, routes);
}

/* Look up `name` (on top of L) in the endpoint's registry, then in those of
 * the endpoints it proxies to, then the global one; route lists ask the
 * resolver. Replaces the name with the callable or nil. */
static void s_lookup(lua_State *L, lendpoint_t *le, const frame_message_t *m,
                     const char *user, size_t user_len, int args, int npos, int has_kwargs) {
    int name = lua_gettop(L);
    host_t *h = le->host;
    lendpoint_t *at = le;
    for (int hops = 0; hops < 9 && le->ep; hops++) {   /* a resolver may close it */
        int reg = at ? at->registry : h->global_registry;
        if (reg == LUA_NOREF) break;
        lua_rawgeti(L, LUA_REGISTRYINDEX, reg);
        lua_pushvalue(L, name);
        lua_rawget(L, -2);
        if (s_is_marked(L, -1, ROUTES_MT)) s_route(L, le, m, user, user_len, name, args, npos, has_kwargs);
        if (!lua_isnil(L, -1)) { lua_replace(L, name); lua_pop(L, 1); return; }
        lua_pop(L, 2);
        if (!at) break;                                  /* that was the global one */
        if (at->proxy_to == LUA_NOREF) { at = NULL; continue; }
        lua_rawgeti(L, LUA_REGISTRYINDEX, at->proxy_to);
        at = luaL_testudata(L, -1, ENDPOINT_MT);
        lua_pop(L, 1);
        if (at && !at->ep) at = NULL;                    /* closed: its registry is gone */
    }
    lua_pushnil(L);
    lua_replace(L, name);
}

static int s_work_refuse(work_job_t *job, const char *name, const char *message, size_t len) {
    const frame_message_t *m = job->m;
    job->owned = 1;
    if (!job->le->ep) return 0;                   /* closed meanwhile (by a resolver) */
    if (strcmp(name, "ProtocolError") == 0) {
        char who[64];
        size_t n = m->peer_len < sizeof who - 1 ? m->peer_len : sizeof who - 1;
        for (size_t i = 0; i < n; i++)
            who[i] = (m->peer[i] >= 0x20 && m->peer[i] < 0x7f) ? m->peer[i] : '?';
        who[n] = '\0';
        host_log(job->le->host, "refused WORK from peer '%s': %s, answered ProtocolError",
                 who, message);
    }
    endpoint_reply_error(job->le->ep, m->peer, m->peer_len, NULL, 0, m->uuid, name, message,
                         len, "");
    return 0;
}

/* The sender's identity (DESIGN.md 4.1): ZAP User-Id, the login of a HELLO
 * it passed, or its routing id. */
static void s_push_user(lua_State *L, const frame_message_t *m) {
    lua_pushlstring(L, m->user, m->user_len);
}

/* Is the sender of `m` authenticated? Asks the backend
 * (is_authenticated(user_id, routing_id, logged_in)). */
static int s_gate(lua_State *L, lendpoint_t *le, const frame_message_t *m) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, le->auth_gate);
    s_push_user(L, m);
    lua_pushlstring(L, m->peer, m->peer_len);
    lua_pushboolean(L, m->logged_in);
    lua_call(L, 3, 1);
    int ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return ok;
}

static int s_work_protected(lua_State *L) {
    work_job_t *job = lua_touserdata(L, 1);
    lendpoint_t *le = job->le;
    host_t *h = le->host;
    const frame_message_t *m = job->m;
    codec_error_t err = { "msgpack: out of memory" };
    /* the sender's identity, kept on the stack: hooks run below may change
     * the directory entry m->user points into */
    size_t user_len;
    lua_pushlstring(L, m->user, m->user_len);
    const char *user = lua_tolstring(L, -1, &user_len);
    if (le->auth_gate != LUA_NOREF && !s_gate(L, le, m)) {
        static const char text[] = "Authentication Required";
        job->owned = 1;
        if (le->ep)                               /* the hook may have closed it */
            endpoint_reply(le->ep, m->peer, m->peer_len, NULL, 0, m->uuid, FRAME_UNAUTHORIZED,
                           text, sizeof text - 1);
        return 0;
    }
    message_work_t work;
    if (message_decode_work(m->body, m->body_len, &h->limits, &h->zone, &work, &err) < 0)
        return s_work_refuse(job, "ProtocolError", err.message, strlen(err.message));
    const msgpack_object_array *args = work.args;
    int has_kwargs = work.kwargs != NULL;
    /* arguments first: a name registered under domains is routed on them */
    int npos = (int)args->size, nargs = npos + has_kwargs, base = lua_gettop(L);
    luaL_checkstack(L, nargs + 4, "too many arguments");
    for (int i = 0; i < npos; i++) codec_push_object(L, &args->ptr[i]);
    if (has_kwargs) {
        codec_push_object(L, work.kwargs);
        luaL_setmetatable(L, CODEC_KWARGS_MT);
    }
    lua_pushlstring(L, work.name, work.name_len);
    s_lookup(L, le, m, user, user_len, base + 1, npos, has_kwargs);
    if (lua_isnil(L, -1)) {
        /* the name is the peer's bytes: escaped, at most 1 KiB of it (DESIGN.md 4) */
        char echo[MESSAGE_ECHO_SIZE];
        size_t n = message_echo(echo, work.name, work.name_len);
        return s_work_refuse(job, "ServiceNotFoundError", echo, n);
    }
    lua_insert(L, base + 1);                      /* callable below its arguments */
    task_t *t = s_task_acquire(h, L);
    if (!lua_checkstack(t->co, nargs + 1)) {      /* xmove does not grow it */
        s_task_release(h, L, t);
        return luaL_error(L, "too many arguments (%d)", nargs);
    }
    lua_xmove(L, t->co, nargs + 1);               /* callable and arguments */
    if (t->ids_cap < m->peer_len + user_len) {    /* sized to the peer's ids, never cut */
        char *ids = realloc(t->ids, m->peer_len + user_len);
        if (!ids) {
            s_task_release(h, L, t);
            return luaL_error(L, "not enough memory");
        }
        t->ids = ids;
        t->ids_cap = m->peer_len + user_len;
    }
    t->le = le;
    le->tasks++;
    h->nanswering++;
    memcpy(t->uuid, m->uuid, FRAME_UUID_SIZE);
    t->peer_len = m->peer_len;
    memcpy(t->ids, m->peer, m->peer_len);
    t->user_len = user_len;
    memcpy(t->ids + m->peer_len, user, user_len);
    if (le->max_handler_time > 0) t->deadline = loop_now() + le->max_handler_time;
    t->mem_cap = le->max_handler_memory;
    job->owned = 1;
    s_task_resume(h, L, t, nargs);
    return 0;
}

static void s_on_work(void *ctx, endpoint_t *ep, const frame_message_t *m) {
    lendpoint_t *le = ctx;
    if (!le->ep) return;                          /* closed by a hook of this very message */
    lua_State *L = le->host->Lrun;
    work_job_t job = { le, m, 0 };
    (void)ep;
    lua_pushcfunction(L, s_work_protected);
    lua_pushlightuserdata(L, &job);
    int status = lua_pcall(L, 1, 0, 0);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        host_log(le->host, "WORK failed before its handler ran: %s", msg ? msg : "(error)");
        if (!job.owned && le->ep)
            endpoint_reply_error(le->ep, m->peer, m->peer_len, NULL, 0, m->uuid,
                                 status == LUA_ERRMEM ? "MemoryError" : "LuaError",
                                 msg ? msg : "error", msg ? strlen(msg) : sizeof "error" - 1, "");
        lua_pop(L, 1);
    }
}

/* --- replies to our calls --- */

void host_settle(host_t *h, lua_State *L, int f, int state) {
    luaL_checkstack(L, 4, "too many nested waits");
    f = lua_absindex(L, f);
    lfuture_t *fu = lua_touserdata(L, f);
    lua_setiuservalue(L, f, 1);                   /* pops the value */
    fu->state = state;
    fu->call = NULL;
    int n = fu->nwaiters;
    if (n == 0) return;
    fu->nwaiters = 0;
    lua_getiuservalue(L, f, 2);                   /* the waiting threads */
    lua_pushnil(L);
    lua_setiuservalue(L, f, 2);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_State *co = lua_tothread(L, -1);
        lua_pop(L, 1);
        task_t *t = co ? host_current_task(co) : NULL;
        /* only a task still parked on this very future: a stale entry (its
         * task moved on, or was reused from the pool) wakes nothing */
        if (t && t->wait == TASK_WAIT_FUTURE && t->future == fu) {
            t->future = NULL;
            s_task_resume(h, L, t, 0);
        }
    }
    lua_pop(L, 1);
}

static int s_reply_protected(lua_State *L) {
    reply_job_t *job = lua_touserdata(L, 1);
    host_t *h = job->le->host;
    lua_rawgeti(L, LUA_REGISTRYINDEX, job->call->ref);      /* the future: 2 */
    int state = FUTURE_FAILED;
    codec_error_t err = { "msgpack: out of memory" };
    message_reply_t r;
    if (job->type == 0) {
        host_push_error(L, job->error_name, job->message, "");
    } else if (message_decode_reply(job->type, job->body, job->body_len, &h->limits, &h->zone,
                                    &r, &err) < 0) {
        host_push_error(L, "ProtocolError", err.message, "");
    } else if (job->type == FRAME_OK) {
        codec_push_object(L, &r.value);
        state = FUTURE_OK;
    } else {
        /* ERROR [class, message, traceback]; anything else is still an error */
        lua_createtable(L, 0, 3);
        lua_pushlstring(L, r.name, r.name_len); lua_setfield(L, -2, "name");
        lua_pushlstring(L, r.message, r.message_len); lua_setfield(L, -2, "message");
        lua_pushlstring(L, r.traceback, r.traceback_len); lua_setfield(L, -2, "traceback");
        luaL_setmetatable(L, ERROR_MT);
    }
    job->settled = 1;
    luaL_unref(L, LUA_REGISTRYINDEX, job->call->ref);
    host_settle(h, L, 2, state);
    return 0;
}

static void s_settle_call(lendpoint_t *le, reply_job_t *job) {
    lua_State *L = le->host->Lrun;
    lua_pushcfunction(L, s_reply_protected);
    lua_pushlightuserdata(L, job);
    int status = lua_pcall(L, 1, 0, 0);
    if (status != LUA_OK) {
        host_log(le->host, "reply could not be delivered: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        if (!job->settled) {                      /* settle it all the same */
            job->type = 0;
            job->error_name = "MemoryError";
            job->message = "not enough memory for the reply";
            lua_pushcfunction(L, s_reply_protected);
            lua_pushlightuserdata(L, job);
            if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
        }
    }
}

static void s_on_reply(void *ctx, endpoint_t *ep, endpoint_call_t *call, int type,
                       const char *body, size_t body_len) {
    (void)ep;
    reply_job_t job = { ctx, call, type, body, body_len, NULL, NULL, 0 };
    s_settle_call(ctx, &job);
}

static void s_on_call_failed(void *ctx, endpoint_t *ep, endpoint_call_t *call,
                             const char *error_name, const char *message) {
    (void)ep;
    if (((lendpoint_t *)ctx)->in_gc) return;
    reply_job_t job = { ctx, call, 0, NULL, 0, error_name, message, 0 };
    s_settle_call(ctx, &job);
}

/* --- ZAP and HELLO: identities, and password checks off the loop --- */

/* Why a user id a hook returned is refused (DESIGN.md 4.1), or NULL. */
static const char *s_bad_user_id(const char *s, size_t n) {
    if (n == 0) return "it is empty";
    if (n > FRAME_MAX_ID) return "it is over 255 bytes";
    if (memchr(s, '\0', n)) return "it holds a NUL byte";
    return NULL;
}

/* The hash (NULL: no such login) and password of the check at idx. */
static int s_password_fields(lua_State *L, int idx, const char **hash, const char **pw, size_t *pw_len) {
    lua_getfield(L, idx, "hash");
    lua_getfield(L, idx, "password");
    *hash = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    *pw = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, pw_len) : NULL;
    return *pw ? 0 : -1;                          /* both stay on the stack */
}

typedef struct zap_job {
    host_t *h;
    const zap_request_t *req;
    zap_pending_t *pending;
    char *user_id, *reason;       /* ZAP_MAX_TEXT + 1 bytes each */
    int status;
} zap_job_t;

typedef struct zap_check {        /* a ZAP request waiting for its password check */
    host_t *h;
    zap_pending_t *pending;
    char mechanism[8];
    char address[ZAP_MAX_TEXT + 1];
    char user_id[];
} zap_check_t;

static void s_zap_checked(void *ctx, int verified) {
    zap_check_t *c = ctx;
    host_t *h = c->h;
    if (verified == 1) {
        zap_answer(h->zap, c->pending, ZAP_OK, c->user_id, "OK");
    } else if (verified == 0) {
        host_log(h, "%s handshake refused (address %s): wrong login or password", c->mechanism, c->address);
        zap_answer(h->zap, c->pending, ZAP_REFUSED, NULL, "wrong login or password");
    } else {
        zap_answer(h->zap, c->pending, ZAP_INTERNAL, NULL, "shutting down");
    }
    free(c);
}

static int s_zap_protected(lua_State *L) {
    zap_job_t *job = lua_touserdata(L, 1);
    const zap_request_t *r = job->req;
    host_t *h = job->h;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->zap_handler);
    lua_createtable(L, 0, 7);
    lua_pushstring(L, r->mechanism); lua_setfield(L, -2, "mechanism");
    lua_pushstring(L, r->address); lua_setfield(L, -2, "address");
    lua_pushstring(L, r->domain); lua_setfield(L, -2, "domain");
    lua_pushlstring(L, r->routing_id, r->routing_id_len); lua_setfield(L, -2, "routing_id");
    if (r->username) {
        lua_pushlstring(L, r->username, r->username_len); lua_setfield(L, -2, "username");
        lua_pushlstring(L, r->password, r->password_len); lua_setfield(L, -2, "password");
    }
    if (r->client_key[0]) { lua_pushstring(L, r->client_key); lua_setfield(L, -2, "client_key"); }
    lua_call(L, 1, 2);
    int first = lua_gettop(L) - 1;
    int deferred = s_is_marked(L, first, PASSWORD_CHECK_MT);
    int user = deferred ? first + 1 : first;      /* (check, user_id) or (user_id | nil, reason) */
    size_t ulen = 0;
    const char *u = lua_type(L, user) == LUA_TSTRING ? lua_tolstring(L, user, &ulen) : NULL;
    job->status = ZAP_REFUSED;
    if (!u && !deferred) {
        const char *why = lua_type(L, first + 1) == LUA_TSTRING ? lua_tostring(L, first + 1) : "refused";
        snprintf(job->reason, ZAP_MAX_TEXT + 1, "%s", why);
        return 0;
    }
    const char *bad = u ? s_bad_user_id(u, ulen) : "there is none";
    if (bad) {
        host_log(h, "%s handshake refused: the backend's user id is refused: %s", r->mechanism, bad);
        snprintf(job->reason, ZAP_MAX_TEXT + 1, "user id refused");
        return 0;
    }
    if (!deferred) {
        job->status = ZAP_OK;
        memcpy(job->user_id, u, ulen);
        job->user_id[ulen] = '\0';
        return 0;
    }
    const char *hash, *pw;
    size_t pw_len = 0;
    if (s_password_fields(L, first, &hash, &pw, &pw_len) < 0 || !h->passwd)
        return luaL_error(L, "a password check without a password, or before core.passwd_start");
    zap_check_t *c = malloc(sizeof *c + ulen + 1);    /* nothing below raises */
    if (!c) return luaL_error(L, "not enough memory");
    c->h = h;
    c->pending = job->pending;
    snprintf(c->mechanism, sizeof c->mechanism, "%s", r->mechanism);
    snprintf(c->address, sizeof c->address, "%s", r->address);
    memcpy(c->user_id, u, ulen);
    c->user_id[ulen] = '\0';
    if (passwd_check(h->passwd, r->address, hash, pw, pw_len, s_zap_checked, c) < 0) {
        int busy = errno == EAGAIN;
        free(c);
        job->status = busy ? ZAP_TEMPORARY : ZAP_INTERNAL;
        snprintf(job->reason, ZAP_MAX_TEXT + 1, "%s",
                 busy ? "too many logins in progress: try again later" : "internal error");
        host_log(h, "%s handshake from %s: %s", r->mechanism, r->address, job->reason);
        return 0;
    }
    job->status = ZAP_PENDING;
    return 0;
}

/* A ZAP request: the Lua handler decides now, or defers to a password
 * check; a handler that raises is an internal error (500). */
static int s_zap_decide(void *ctx, const zap_request_t *req, zap_pending_t *pending,
                        char *user_id, char *reason) {
    host_t *h = ctx;
    lua_State *L = h->Lrun ? h->Lrun : h->L;
    zap_job_t job = { h, req, pending, user_id, reason, ZAP_REFUSED };
    lua_pushcfunction(L, s_zap_protected);
    lua_pushlightuserdata(L, &job);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        host_log(h, "ZAP handler failed (refused, 500): %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        snprintf(reason, ZAP_MAX_TEXT + 1, "internal error");
        return ZAP_INTERNAL;
    }
    if (job.status == ZAP_REFUSED)
        host_log(h, "%s handshake refused (domain %s, address %s): %s", req->mechanism,
                 req->domain, req->address, reason);
    return job.status;
}

int host_start_zap(host_t *h, lua_State *L) {
    luaL_unref(L, LUA_REGISTRYINDEX, h->zap_handler);
    h->zap_handler = luaL_ref(L, LUA_REGISTRYINDEX);
    if (h->zap) return 0;
    h->zap = zap_new(h->zmq, h->loop, s_zap_decide, h);
    return h->zap ? 0 : -1;
}

int host_start_passwd(host_t *h, int threads, size_t max_pending) {
    if (h->passwd) {                              /* one pool per process */
        if (threads > 0 || max_pending > 0)
            host_log(h, "password checks already started: password_threads and "
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

/* --- HELLO (server side) --- */

typedef struct hello_job {
    lendpoint_t *le;
    const frame_message_t *m;
} hello_job_t;

typedef struct hello_check {      /* a HELLO waiting for its password check */
    lendpoint_t *le;              /* held (le->tasks) until the answer */
    uint8_t uuid[FRAME_UUID_SIZE];
    int fd;                       /* the connection the HELLO came on */
    size_t peer_len, user_len, login_len, text_len;
    char data[];                  /* routing id, identity then, login, welcome text */
} hello_check_t;

static void s_hello_answer(lendpoint_t *le, const frame_message_t *m, int type, const char *text) {
    if (le->ep) endpoint_reply(le->ep, m->peer, m->peer_len, NULL, 0, m->uuid, type, text, strlen(text));
}

static void s_hello_checked(void *ctx, int verified) {
    hello_check_t *c = ctx;
    lendpoint_t *le = c->le;
    host_t *h = le->host;
    const char *peer = c->data, *user = peer + c->peer_len, *login = user + c->user_len;
    const char *text = login + c->login_len;
    if (verified >= 0 && le->ep) {
        endpoint_sync_peers(le->ep);              /* a disconnect read late must not pass */
        peers_t *d = endpoint_peers(le->ep);
        peer_t *p = peers_find(d, peer, c->peer_len);
        int same = p && !p->closed && p->fd == c->fd && p->user_id_len == c->user_len &&
                   memcmp(p->user_id, user, c->user_len) == 0;
        if (!same) {
            host_log(h, "answer to a HELLO dropped: that peer's connection is gone");
        } else if (verified && peers_log_in(d, p, login, c->login_len) == 0) {
            endpoint_reply(le->ep, peer, c->peer_len, NULL, 0, c->uuid, FRAME_AUTHENTICATED,
                           text, c->text_len);
        } else {
            static const char no[] = "Invalid credentials";
            endpoint_reply(le->ep, peer, c->peer_len, NULL, 0, c->uuid, FRAME_UNAUTHORIZED,
                           no, sizeof no - 1);
        }
    }
    if (verified >= 0) s_endpoint_unhold(h->Lrun ? h->Lrun : h->L, le);
    free(c);
}

static int s_hello_protected(lua_State *L) {
    hello_job_t *job = lua_touserdata(L, 1);
    lendpoint_t *le = job->le;
    host_t *h = le->host;
    const frame_message_t *m = job->m;
    message_hello_t hello;
    const char *why;
    if (message_decode_hello(m->body, m->body_len, &h->limits, &h->zone, &hello, &why) < 0) {
        host_log(h, "refused a HELLO: %s", why);
        s_hello_answer(le, m, FRAME_UNAUTHORIZED, "Malformed HELLO");
        return 0;
    }
    lua_pushlstring(L, m->peer, m->peer_len);     /* 2: kept, the entry may change */
    lua_pushlstring(L, m->user, m->user_len);     /* 3 */
    lua_rawgeti(L, LUA_REGISTRYINDEX, le->hello_hook);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 2);
    lua_pushlstring(L, hello.login, hello.login_len);
    lua_pushlstring(L, hello.password, hello.password_len);
    lua_call(L, 4, 3);                            /* 4: ok | check, 5: text, 6: user id */
    int deferred = s_is_marked(L, 4, PASSWORD_CHECK_MT);
    if (!deferred && !lua_toboolean(L, 4)) {
        s_hello_answer(le, m, FRAME_UNAUTHORIZED,
                       lua_type(L, 5) == LUA_TSTRING ? lua_tostring(L, 5) : "Invalid credentials");
        return 0;
    }
    size_t text_len, login_len;
    const char *text = lua_type(L, 5) == LUA_TSTRING ? lua_tolstring(L, 5, &text_len) : NULL;
    if (!text) { text = "Welcome"; text_len = 7; }
    if (lua_type(L, 6) != LUA_TSTRING) lua_copy(L, 3, 6);   /* no new identity: keep it */
    const char *login = lua_tolstring(L, 6, &login_len);
    const char *bad = s_bad_user_id(login, login_len);
    if (bad) {
        host_log(h, "refused a HELLO: the backend's user id is refused: %s", bad);
        s_hello_answer(le, m, FRAME_UNAUTHORIZED, "Invalid credentials");
        return 0;
    }
    if (!deferred) {
        peers_t *d = le->ep ? endpoint_peers(le->ep) : NULL;
        peer_t *p = d ? peers_find(d, m->peer, m->peer_len) : NULL;
        if (!p) return 0;                         /* closed or forgotten by the hook: nobody to answer */
        if (peers_log_in(d, p, login, login_len) < 0) return luaL_error(L, "not enough memory");
        endpoint_reply(le->ep, m->peer, m->peer_len, NULL, 0, m->uuid, FRAME_AUTHENTICATED,
                       text, text_len);
        return 0;
    }
    const char *hash, *pw;
    size_t pw_len = 0;
    if (s_password_fields(L, 4, &hash, &pw, &pw_len) < 0 || !h->passwd)
        return luaL_error(L, "a password check without a password, or before core.passwd_start");
    size_t peer_len, user_len;
    const char *peer = lua_tolstring(L, 2, &peer_len), *user = lua_tolstring(L, 3, &user_len);
    hello_check_t *c = malloc(sizeof *c + peer_len + user_len + login_len + text_len);
    if (!c) return luaL_error(L, "not enough memory");   /* nothing below raises */
    c->le = le;
    memcpy(c->uuid, m->uuid, FRAME_UUID_SIZE);
    c->fd = m->fd;
    c->peer_len = peer_len; c->user_len = user_len; c->login_len = login_len; c->text_len = text_len;
    char *at = c->data;
    memcpy(at, peer, peer_len); at += peer_len;
    memcpy(at, user, user_len); at += user_len;
    memcpy(at, login, login_len); at += login_len;
    memcpy(at, text, text_len);
    const char *address = m->kept > 1 ? zmq_msg_gets((zmq_msg_t *)&m->parts[1], "Peer-Address") : NULL;
    if (passwd_check(h->passwd, address, hash, pw, pw_len, s_hello_checked, c) < 0) {
        int busy = errno == EAGAIN;
        free(c);
        host_log(h, "refused a HELLO from %s: %s", address ? address : "?",
                 busy ? "too many logins in progress" : "internal error");
        s_hello_answer(le, m, FRAME_UNAUTHORIZED,
                       busy ? "Too many logins in progress: try again later" : "Authentication Required");
        return 0;
    }
    le->tasks++;                                  /* the answer needs it */
    return 0;
}

static void s_on_hello(void *ctx, endpoint_t *ep, const frame_message_t *m) {
    lendpoint_t *le = ctx;
    if (le->hello_hook == LUA_NOREF || !le->ep) {
        static const char text[] = "Welcome";
        endpoint_reply(ep, m->peer, m->peer_len, NULL, 0, m->uuid, FRAME_AUTHENTICATED,
                       text, sizeof text - 1);
        return;
    }
    lua_State *L = le->host->Lrun ? le->host->Lrun : le->host->L;
    hello_job_t job = { le, m };
    lua_pushcfunction(L, s_hello_protected);
    lua_pushlightuserdata(L, &job);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        host_log(le->host, "HELLO refused: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        s_hello_answer(le, m, FRAME_UNAUTHORIZED, "Authentication Required");
    }
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
    lua_State *L = le->host->Lrun ? le->host->Lrun : le->host->L;
    peer_job_t job = { le, event, p };
    lua_pushcfunction(L, s_peer_protected);
    lua_pushlightuserdata(L, &job);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        host_log(le->host, "heartbeat hook %s failed: %s", event, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

static void s_on_peer_seen(void *ctx, endpoint_t *ep, const peer_t *p) {
    (void)ep;
    s_peer_event(ctx, "heartbeat", p);
}

static void s_on_peer_gone(void *ctx, endpoint_t *ep, const peer_t *p) {
    (void)ep;
    s_peer_event(ctx, "timeout", p);
}

void host_endpoint_events(lendpoint_t *le, endpoint_events_t *ev) {
    ev->on_hello = s_on_hello;
    ev->on_peer_seen = s_on_peer_seen;
    ev->on_peer_gone = s_on_peer_gone;
    ev->ctx = le;
    ev->on_work = s_on_work;
    ev->on_reply = s_on_reply;
    ev->on_call_failed = s_on_call_failed;
    ev->log = s_endpoint_log;
}

/* --- waiting --- */

int host_wait_future(lua_State *L, int f, lua_KFunction k) {
    task_t *t = host_current_task(L);
    lfuture_t *fu = lua_touserdata(L, f);
    if (!lua_isyieldable(L))
        return luaL_error(L, "cannot wait here: inside a C call that cannot yield "
                          "(a metamethod, string.gsub or table.sort callback, ...)");
    if (lua_getiuservalue(L, f, 2) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, f, 2);
    }
    lua_pushthread(L);
    lua_rawseti(L, -2, ++fu->nwaiters);
    lua_pop(L, 1);
    t->wait = TASK_WAIT_FUTURE;
    t->future = fu;
    return lua_yieldk(L, 0, 0, k);
}

static int s_wake_protected(lua_State *L) {
    task_t *t = lua_touserdata(L, 1);
    s_task_resume(t->host, L, t, 0);
    return 0;
}

static void s_on_sleep_done(loop_t *loop, loop_timer_t *timer, void *arg) {
    (void)loop; (void)timer;
    task_t *t = arg;
    lua_State *L = t->host->Lrun;
    t->timer = NULL;
    if (t->wait != TASK_WAIT_SLEEP) return;
    lua_pushcfunction(L, s_wake_protected);
    lua_pushlightuserdata(L, t);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        host_log(t->host, "resuming a task failed: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

int host_sleep(lua_State *L, double seconds, lua_KFunction k) {
    task_t *t = host_current_task(L);
    if (!lua_isyieldable(L))
        return luaL_error(L, "cannot sleep here: inside a C call that cannot yield");
    t->timer = loop_add_timer(t->host->loop, seconds, s_on_sleep_done, t);
    if (!t->timer) return luaL_error(L, "not enough memory");
    t->wait = TASK_WAIT_SLEEP;
    return lua_yieldk(L, 0, 0, k);
}

void host_spawn(host_t *h, lua_State *L, int nargs) {
    /* stack: fn, args..., future (on top). It starts now and runs until it
     * first waits; the loop resumes it from then on. */
    lua_pushvalue(L, -1);
    int result = luaL_ref(L, LUA_REGISTRYINDEX);  /* the future, pinned until settled */
    lua_insert(L, -(nargs + 2));                  /* future below fn: returned */
    task_t *t = s_task_acquire(h, L);
    t->result = result;
    if (!lua_checkstack(t->co, nargs + 1)) {
        s_task_release(h, L, t);                  /* unrefs the future */
        luaL_error(L, "too many arguments (%d)", nargs);
    }
    lua_xmove(L, t->co, nargs + 1);
    s_task_resume(h, L, t, nargs);
}

/* --- running the loop --- */

int host_run(host_t *h, lua_State *L, int f, double deadline) {
    if (h->running)
        return luaL_error(L, "pseud: cannot wait here: the loop is already running "
                          "(wait from the main chunk or inside a handler or pseud.spawn)");
    f = f ? lua_absindex(L, f) : 0;
    lua_State *saved = h->Lrun;
    h->running = 1;
    h->Lrun = L;
    int rc = 0;
    for (;;) {
        if (f && ((lfuture_t *)lua_touserdata(L, f))->state != FUTURE_PENDING) break;
        if (!f && deadline < 0 && h->stopping) { rc = -1; break; }   /* serving: stop() */
        if (loop_signal_received()) { rc = -1; break; }
        double wait = -1;
        if (deadline >= 0) {
            wait = deadline - loop_now();
            if (wait <= 0) break;
        }
        loop_run_once(h->loop, wait);
    }
    h->running = 0;
    h->Lrun = saved;
    return rc;
}

void host_drain(host_t *h, lua_State *L, double seconds) {
    double end = loop_now() + seconds;
    lua_State *saved = h->Lrun;
    h->running = 1;
    h->Lrun = L;
    while (h->nanswering > 0 && !loop_signal_received()) {
        double wait = end - loop_now();
        if (wait <= 0) break;
        loop_run_once(h->loop, wait);
    }
    h->running = 0;
    h->Lrun = saved;
}
