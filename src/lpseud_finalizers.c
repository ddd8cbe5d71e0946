/*
 * lpseud_finalizers: __gc under a bound, one part of the Lua binding
 * pseud.core (see lpseud_internal.h). pseud's setmetatable and
 * debug.setmetatable hide a __gc from the collector and tie a sentinel to
 * the object; the sentinel's C __gc queues the object's, which runs later
 * as a task from the loop (below), or at the end of the script.
 */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "host.h"
#include "lpseud.h"
#include "lpseud_internal.h"

/* Lua runs a __gc with debug hooks off and the collector stopped, on the
 * thread that collects (lgc.c, GCTM): no limit could stop a finalizer that
 * never returns (one hung the host for good: an attack round), and what it
 * allocates stays until it returns. So setmetatable hides a __gc from the
 * collector and ties a sentinel to the object instead: a userdata with a
 * C __gc, kept in an ephemeron table under the object, its uservalue the
 * object. When the object dies the sentinel is finalized in the same
 * collection, the object resurrected with it, and queues a task that calls
 * the object's __gc later, from the loop, under max_hook_time, the
 * collector running: its time is no handler's (a review found finalizers
 * charged to the handler whose allocation ran the collection). It waits
 * in a queue for the top of the loop's next pass (the top level's until
 * the loop runs, those past max_tasks until tasks end); only when the
 * state closes does it run at once, bounded on a thread of its own (hooks
 * on). */
static const char s_sentinels_key = 0;   /* registry: object -> sentinel (weak keys) */
static const char s_sentinel_mt_key = 0; /* registry: the sentinels' metatable */
static const char s_finalizer_key = 0;   /* registry: the thread finalizers run on at once */
static const char s_host_key = 0;        /* registry: the host, for what runs without it */
static const char s_waiting_key = 0;     /* registry: finalizers waiting for the loop,
                                            gc, object, gc, object... from s->fin_head + 1 */
/* Seconds all finalizers still waiting at the close may take together;
 * the rest are skipped (logged): each one's max_hook_time alone made
 * 1,000 spinning ones a 1,000 s exit. */
#define FINALIZERS_AT_CLOSE 5.0
/* What a finalizer may allocate, net: run at once the collector is stopped,
 * and a loop that allocates had 2.9 GB before the clock was read (a review) */
#define FINALIZER_MEMORY (64.0 * 1024 * 1024)

/* The host, from the registry: finalizers also run where no closure of
 * the binding's carries it (lpseud_closing). */
static host_t *s_host(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &s_host_key);
    host_t *h = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return h;
}

/* Log a finalizer's error (at `idx`): a pseud.Error's name and message, a
 * string, or the value's type. */
static void s_finalizer_failed(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    const char *name = "LuaError", *message = NULL;
    if (lua_type(L, idx) == LUA_TTABLE) {
        lua_pushliteral(L, "name");
        if (lua_rawget(L, idx) == LUA_TSTRING) name = lua_tostring(L, -1);
        lua_pushliteral(L, "message");
        if (lua_rawget(L, idx) == LUA_TSTRING) message = lua_tostring(L, -1);
    } else if (lua_type(L, idx) == LUA_TSTRING) {
        message = lua_tostring(L, idx);
    }
    HOST_LOG_LIMITED(HOST(L), LOG_WARN, "a finalizer (__gc) failed", LOG_STR("error", name),
                     LOG_STR("message", message ? message : luaL_typename(L, idx)));
}

static int s_finalizer_k(lua_State *L, int status, lua_KContext ctx) {
    (void)ctx;
    if (status != LUA_OK && status != LUA_YIELD) s_finalizer_failed(L, -1);
    return 0;
}

/* A finalizer's task: __gc(object). Upvalue 1: the host. */
static int s_run_finalizer(lua_State *L) {
    return s_finalizer_k(L, lua_pcallk(L, 1, 0, 0, 0, s_finalizer_k), 0);
}

/* (__gc, object): queued for the loop. May raise (memory). */
static int s_wait_finalizer(lua_State *L) {
    sched_t *s = sched_of(L);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &s_waiting_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &s_waiting_key);
    }
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, s->fin_tail + 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, s->fin_tail + 2);
    s->fin_tail += 2;
    return 0;
}

/* Under lua_pcall from s_start_waiting: the waiting finalizers become
 * tasks while max_tasks allows; the rest wait for a later pass. */
static int s_start_waiting_protected(lua_State *L) {
    sched_t *s = sched_of(L);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &s_waiting_key) != LUA_TTABLE) return 0;
    int q = lua_gettop(L);
    while (s->fin_tail > s->fin_head) {
        lua_Integer at = s->fin_head;
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushcclosure(L, s_run_finalizer, 1);
        lua_rawgeti(L, q, at + 1);
        lua_rawgeti(L, q, at + 2);
        if (task_defer(s, L, 2, s->max_hook_time, FINALIZER_MEMORY) < 0) break;   /* max_tasks */
        lua_pushnil(L); lua_rawseti(L, q, at + 1);
        lua_pushnil(L); lua_rawseti(L, q, at + 2);
        s->fin_head = at + 2;
    }
    if (s->fin_head == s->fin_tail) s->fin_head = s->fin_tail = 0;   /* the table starts over */
    return 0;
}

static void s_start_waiting(sched_t *s, lua_State *L) {
    if (s->ending || !lua_checkstack(L, 8)) return;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &s_host_key);
    lua_pushcclosure(L, s_start_waiting_protected, 1);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {        /* memory: they wait for the next pass */
        lua_pop(L, 1);
    }
}

/* The object's __gc at once, bounded, on the finalizer thread. */
static void s_finalize_now(lua_State *L, sched_t *s, int gc, int obj) {
    lua_State *ft = NULL;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &s_finalizer_key) == LUA_TTHREAD) ft = lua_tothread(L, -1);
    if (!ft || lua_status(ft) != LUA_OK || lua_gettop(ft) != 0) {
        ft = lua_newthread(L);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &s_finalizer_key);
    }
    lua_pushcfunction(ft, sched_msgh);
    lua_pushvalue(L, gc);
    lua_pushvalue(L, obj);
    lua_xmove(L, ft, 2);
    sched_error_t err;
    double cap = s->hook.limits.memory, net = s->hook.mem_net;
    s->hook.limits.memory = FINALIZER_MEMORY;
    s->hook.mem_net = 0;
    int status = sched_pcall(s, ft, 1, 0, s->max_hook_time, &err);
    s->hook.limits.memory = cap;
    s->hook.mem_net = net;
    if (status != LUA_OK) {
        /* a thread an error from the hook ended runs no Lua again (task.c) */
        lua_pushnil(L);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &s_finalizer_key);
        HOST_LOG_LIMITED(s_host(L), LOG_WARN, "a finalizer (__gc) failed", LOG_STR("error", err.name),
                         LOG_STR("message", err.message));
    }
    lua_settop(ft, 0);
}

/* A finalizer at the end, at once, bounded by what is left of
 * FINALIZERS_AT_CLOSE; 0: none was left, it did not run. */
static int s_finalize_at_end(lua_State *L, sched_t *s, int gc, int obj) {
    double left = s->closing_end - loop_now();
    if (left <= 0) return 0;
    double bound = s->max_hook_time;
    if (bound <= 0 || bound > left) s->max_hook_time = left;
    s_finalize_now(L, s, gc, obj);
    s->max_hook_time = bound;
    return 1;
}

int lpseud_is_sentinel(lua_State *L, int idx) {
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &s_sentinel_mt_key);
    int yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

/* A sentinel's __gc: the object's __gc (read now, raw, as Lua reads it),
 * queued, or run at once. Upvalue 1: the host. */
static int s_sentinel_gc(lua_State *L) {
    sched_t *s = sched_of(L);
    if (!s || !lpseud_is_sentinel(L, 1)) return 0;    /* after the host's close nothing bounds it: not run */
    if (lua_getiuservalue(L, 1, 1) == LUA_TNIL || !lua_getmetatable(L, -1)) return 0;
    int obj = lua_gettop(L) - 1;
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, -2) == LUA_TNIL) return 0;
    int gc = lua_gettop(L);
    /* once: a __gc that keeps its object and sets a metatable again gets
     * a new sentinel, as Lua marks such an object again */
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &s_sentinels_key) == LUA_TTABLE) {
        lua_pushvalue(L, obj);
        lua_pushnil(L);
        lua_rawset(L, -3);
    }
    lua_pop(L, 1);
    if (s->closing) {                             /* from lua_close: nothing is halfway */
        s_finalize_at_end(L, s, gc, obj);
        return 0;
    }
    /* Never at once here: this runs inside whatever allocation ran the
     * collector, which may be halfway through a binding function (one ran
     * in l_endpoint_call between packing a body into the host's buffer
     * and sending it, and replaced or freed the body; another closed the
     * server under l_endpoint_peers' walk: an attack round). It waits for
     * the top of the loop's next pass (s_start_waiting). */
    lua_pushcfunction(L, s_wait_finalizer);
    lua_pushvalue(L, gc);
    lua_pushvalue(L, obj);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
        HOST_LOG_LIMITED(HOST(L), LOG_WARN, "a finalizer (__gc) was dropped: not enough memory to queue it");
    return 0;
}

/* Run the finalizers still waiting, at once, bounded, together at most
 * FINALIZERS_AT_CLOSE. Garbage they make queues behind them, as in the
 * loop (s->closing is not set yet): nothing runs inside an allocation. */
static void s_run_waiting_now(lua_State *L, sched_t *s) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &s_waiting_key) != LUA_TTABLE) { lua_pop(L, 1); return; }
    int q = lua_gettop(L);
    lua_Integer skipped = 0;
    while (s->fin_tail > s->fin_head && lua_checkstack(L, 8)) {
        lua_Integer at = s->fin_head;
        lua_rawgeti(L, q, at + 1);
        lua_rawgeti(L, q, at + 2);
        lua_pushnil(L); lua_rawseti(L, q, at + 1);
        lua_pushnil(L); lua_rawseti(L, q, at + 2);
        s->fin_head = at + 2;
        if (!s_finalize_at_end(L, s, q + 1, q + 2)) skipped++;
        lua_settop(L, q);                         /* what s_finalize_now left too */
    }
    s->fin_head = s->fin_tail = 0;
    lua_pop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &s_host_key);
    host_t *h = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (skipped && h)
        HOST_LOG(h, LOG_WARN, "finalizers (__gc) not run at the close: out of time",
                 LOG_INT("skipped", skipped), LOG_NUM("seconds", FINALIZERS_AT_CLOSE));
}

void lpseud_closing(lua_State *L) {
    sched_t *s = sched_of(L);
    if (!s || s->ending) return;
    s->ending = 1;                                /* host_run refuses: no loop for them */
    s->closing_end = loop_now() + FINALIZERS_AT_CLOSE;
    s_run_waiting_now(L, s);
    s->closing = 1;                               /* lua_close's own run at once */
}

/* Set metatable `mt` (nil or a table) on the value at `obj`; a table's or
 * userdata's __gc goes to a sentinel (above). May raise (memory). */
static void s_set_metatable(lua_State *L, int obj, int mt) {
    int kind = lua_type(L, obj);
    if (lua_isnil(L, mt) || (kind != LUA_TTABLE && kind != LUA_TUSERDATA)) {
        lua_pushvalue(L, mt);
        lua_setmetatable(L, obj);
        return;
    }
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, mt) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushvalue(L, mt);
        lua_setmetatable(L, obj);
        return;
    }
    /* hidden while the metatable is set: the collector marks an object
     * for finalization only then. Setting the field back reuses its slot. */
    lua_pushliteral(L, "__gc");
    lua_pushnil(L);
    lua_rawset(L, mt);
    lua_pushvalue(L, mt);
    lua_setmetatable(L, obj);
    lua_pushliteral(L, "__gc");
    lua_insert(L, -2);
    lua_rawset(L, mt);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &s_sentinels_key);
    lua_pushvalue(L, obj);
    if (lua_rawget(L, -2) == LUA_TNIL) {          /* one sentinel an object */
        lua_pop(L, 1);
        lua_pushvalue(L, obj);
        lua_newuserdatauv(L, 0, 1);
        lua_pushvalue(L, obj);
        lua_setiuservalue(L, -2, 1);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &s_sentinel_mt_key);
        lua_setmetatable(L, -2);
        lua_rawset(L, -3);
    } else {
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* setmetatable(t, mt) as Lua's (lbaselib.c), with a __gc bounded. */
static int l_setmetatable(lua_State *L) {
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    lua_settop(L, 2);
    s_set_metatable(L, 1, 2);
    lua_settop(L, 1);
    return 1;
}

/* Has the value at `idx` a metatable with a __gc and no sentinel (so Lua
 * itself finalizes it: a userdata made by C, such as a file)? */
static int s_natively_finalized(lua_State *L, int idx) {
    if (!lua_getmetatable(L, idx)) return 0;
    lua_pushliteral(L, "__gc");
    int native = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    if (!native) return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &s_sentinels_key);
    lua_pushvalue(L, idx);
    native = lua_rawget(L, -2) == LUA_TNIL;
    lua_pop(L, 2);
    return native;
}

/* debug.setmetatable(value, mt) as Lua's (ldblib.c), with a __gc bounded;
 * a userdata Lua finalizes already keeps that: Lua would call the new __gc
 * itself, unbounded (a review: a file given a spinning __gc). */
static int l_debug_setmetatable(lua_State *L) {
    int t = lua_type(L, 2);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    lua_settop(L, 2);
    if (lpseud_is_host_value(L, 1)) return luaL_error(L, "debug.setmetatable: pseud-lua keeps this to itself (the host's own state)");
    if (t == LUA_TTABLE && lua_type(L, 1) == LUA_TUSERDATA && s_natively_finalized(L, 1)) {
        lua_pushliteral(L, "__gc");
        int gc = lua_rawget(L, 2) != LUA_TNIL;
        lua_pop(L, 1);
        if (gc) return luaL_error(L, "debug.setmetatable: Lua finalizes this userdata already "
                                  "(its metatable has __gc): another __gc could not be bounded");
    }
    s_set_metatable(L, 1, 2);
    lua_settop(L, 1);
    return 1;
}

void lpseud_finalizers_open(lua_State *L, int host) {
    host = lua_absindex(L, host);
    lua_newtable(L);                              /* the sentinels, under their objects */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &s_sentinels_key);
    lua_createtable(L, 0, 2);                     /* the sentinels' metatable, by key, not by name */
    lua_pushvalue(L, host);
    lua_pushcclosure(L, s_sentinel_gc, 1);
    lua_setfield(L, -2, "__gc");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &s_sentinel_mt_key);
    lua_pushvalue(L, host);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &s_host_key);
    host_sched(lua_touserdata(L, host))->start_finalizers = s_start_waiting;
    lua_pushcfunction(L, l_setmetatable);
    lua_setglobal(L, "setmetatable");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, LUA_DBLIBNAME) == LUA_TTABLE) {
        lua_pushcfunction(L, l_debug_setmetatable);
        lua_setfield(L, -2, "setmetatable");
    }
    lua_pop(L, 2);
}
