/*
 * lpseud_task: tasks seen from Lua, one part of the Lua binding pseud.core
 * (see lpseud_internal.h): core.sleep (a task parks; the main chunk runs
 * the loop), core.spawn, core.now and core.caller, core.counts (leak
 * specs), core.flush (the end of a script), core.hook_pcall (backend
 * hooks, bounded) and bounded_pcall, and the reload's part (the script
 * run, the reloader, core.reload, the global registry swap). The
 * coroutine library's resume, wrap and close, xpcall, setmetatable and
 * debug.sethook and debug.setmetatable are replaced (sealed) when the
 * module loads (pseud-lua loads it before the script), so the limits of a
 * task follow it into every coroutine it runs, a finalizer runs bounded,
 * and a script cannot lift them (task.c).
 */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "host.h"
#include "lpseud.h"
#include "lpseud_internal.h"

/* --- tasks, sleep --- */

static int s_sleep_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status; (void)ctx;
    task_check_deadline(L);                       /* woken by its deadline */
    return 0;
}

static int l_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    host_t *h = HOST(L);
    if (!(s >= 0)) s = 0;
    if (task_current(L)) return task_sleep(L, s, s_sleep_k);
    host_run(h, L, 0, loop_now() + s);
    return 0;
}

static int l_spawn(lua_State *L) {
    host_t *h = HOST(L);
    luaL_checkany(L, 1);
    int nargs = lua_gettop(L) - 1;
    lpseud_new_future(L);
    task_spawn(host_sched(h), L, nargs);
    return 1;
}

/* --- coroutines under the running task's limits --- */

/* coroutine.resume and coroutine.wrap as Lua's own (lcorolib.c), except
 * that the coroutine runs under the limits of the task that resumes it and
 * a slice that ends inside it yields the task to the loop (task.c). */

/* Check that co can be resumed and give it the `nargs` values on top of L.
 * Returns 0, or -1 with a message pushed. */
static int s_co_prepare(lua_State *L, lua_State *co, int nargs) {
    lua_Debug ar;
    int status = lua_status(co);
    if (task_current(co)) {
        lua_pushliteral(L, "cannot resume a coroutine that runs a pseud handler or task");
        return -1;
    }
    if (co == L || (status == LUA_OK && lua_getstack(co, 0, &ar))) {
        lua_pushliteral(L, "cannot resume non-suspended coroutine");
        return -1;
    }
    if ((status == LUA_OK && lua_gettop(co) == 0) || (status != LUA_OK && status != LUA_YIELD)) {
        lua_pushliteral(L, "cannot resume dead coroutine");
        return -1;
    }
    if (!lua_checkstack(co, nargs)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    lua_xmove(L, co, nargs);
    return 0;
}

/* Lua 5.4.4's lua_resetthread runs a coroutine's __close handlers with no
 * C-stack check of its own, and with the coroutine's C-call count started
 * over (5.4.6's lua_closethread inherits the caller's): a __close that
 * closes another coroutine, 20,000 deep, or 100 deep with 190 resumes
 * between each (a review), overflowed the C stack (SIGSEGV). So a close
 * needs room on the C stack (sched_stack_room). */

/* lua_resetthread(co); raises without room on the C stack (nothing run). */
static int s_reset_thread(lua_State *L, lua_State *co) {
    sched_t *s = sched_of(L);
    if (s && !sched_stack_room(s)) return luaL_error(L, "C stack overflow (coroutines closed inside __close)");
    return lua_resetthread(co);
}

static int s_co_resume_k(lua_State *L, int status, lua_KContext ctx);
static int s_co_wrapped_k(lua_State *L, int status, lua_KContext ctx);

/* Resume co (prepared) and push what coroutine.resume (wrap = 0) or a
 * wrapped function (wrap = 1) returns. */
static int s_co_continue(lua_State *L, lua_State *co, int nargs, int wrap) {
    int nres;
    int status = task_resume_nested(L, co, nargs, &nres);
    if (status == TASK_PASS_YIELD)                /* the task's slice ended: to the loop */
        return lua_yieldk(L, 0, 0, wrap ? s_co_wrapped_k : s_co_resume_k);
    if (status == LUA_OK || status == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            if (wrap) return luaL_error(L, "too many results to resume");
            lua_pushboolean(L, 0);
            lua_pushliteral(L, "too many results to resume");
            return 2;
        }
        if (!wrap) lua_pushboolean(L, 1);
        lua_xmove(co, L, nres);
        return nres + !wrap;
    }
    if (!wrap) {
        lua_pushboolean(L, 0);
        lua_xmove(co, L, 1);                      /* the error */
        return 2;
    }
    if (task_may_close(L, lua_upvalueindex(1)))
        status = s_reset_thread(L, co);           /* close its to-be-closed variables */
    lua_xmove(co, L, 1);
    if (status != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

static int s_co_resume_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status; (void)ctx;
    return s_co_continue(L, lua_tothread(L, 1), 0, 0);
}

static int l_co_resume(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    int nargs = lua_gettop(L) - 1;
    if (s_co_prepare(L, co, nargs) < 0) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    return s_co_continue(L, co, nargs, 0);
}

static int s_co_wrapped_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status; (void)ctx;
    return s_co_continue(L, lua_tothread(L, lua_upvalueindex(1)), 0, 1);
}

static int l_co_wrapped(lua_State *L) {
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int nargs = lua_gettop(L);
    if (s_co_prepare(L, co, nargs) < 0) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
        return lua_error(L);
    }
    return s_co_continue(L, co, nargs, 1);
}

/* coroutine.close: Lua's, under the running task's limits, refusing a
 * task's coroutine and one a limit stopped (see task_may_close). */
static int l_co_close(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    lua_Debug ar;
    int status = lua_status(co);
    if (task_current(co))
        return luaL_error(L, "cannot close a coroutine that runs a pseud handler or task");
    if (co == L || (status == LUA_OK && lua_getstack(co, 0, &ar)))
        return luaL_error(L, "cannot close a %s coroutine", co == L ? "running" : "normal");
    if (!task_may_close(L, 1)) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "a time limit stopped this coroutine: its __close handlers do not run");
        return 2;
    }
    task_cover(L, co);
    if (s_reset_thread(L, co) == LUA_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_xmove(co, L, 1);
    return 2;
}

static int l_co_wrap(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, l_co_wrapped, 1);
    return 1;
}

/* xpcall's message handler runs where the error was raised: after a kill
 * that is inside the count hook, where Lua calls no hook, so the script's
 * handler would run unbounded. This one passes a kill through untouched.
 * Upvalue 1: the script's handler. */
static int s_xpcall_msgh(lua_State *L) {
    if (task_killing(L)) return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int s_xpcall_k(lua_State *L, int status, lua_KContext first) {
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);                     /* the error */
        return 2;
    }
    return lua_gettop(L) - (int)first;            /* true and the results */
}

/* xpcall(f, msgh, ...) as Lua's, with msgh wrapped (s_xpcall_msgh). */
static int l_xpcall(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, s_xpcall_msgh, 1);
    lua_replace(L, 2);                            /* f, handler, args */
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);                          /* f, handler, true, f, args */
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, s_xpcall_k);
    return s_xpcall_k(L, status, 2);
}

/* debug.sethook, refused while a handler or a hook runs: the host's limits
 * are that hook. Lua's own is kept as a C pointer in the host, not as a Lua
 * value a script could reach (debug.getupvalue). */
static int l_debug_sethook(lua_State *L) {
    if (!task_may_sethook(L))
        return luaL_error(L, "debug.sethook cannot be used inside a handler or a hook "
                          "(the host's time limits use the hook)");
    lua_CFunction lua_sethook_fn = host_lua_sethook(HOST(L));
    if (!lua_sethook_fn) return 0;
    lua_pushcfunction(L, lua_sethook_fn);
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* --- finalizers under a bound --- */

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

/* Is the value at `idx` a sentinel? */
static int s_is_sentinel(lua_State *L, int idx) {
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
    if (!s || !s_is_sentinel(L, 1)) return 0;    /* after the host's close nothing bounds it: not run */
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

/* package.loadlib(path, name) as Lua's (upvalue 1), but never a function of
 * Lua's own library: luaopen_debug gave a script the unsealed sethook
 * back, and a spinning handler took its hook off (an attack round), as
 * luaopen_base and luaopen_coroutine would give back what the seal
 * replaced; a lua_ or luaL_ function is no lua_CFunction at all. Other
 * libraries' functions are the script's own native code. */
static int s_sealed_symbol(const char *name, size_t len) {
    static const char *const sealed[] = { "luaopen_base", "luaopen_coroutine", "luaopen_debug",
                                          "luaopen_package", "lua_", "luaL_" };
    for (size_t i = 0; i < sizeof sealed / sizeof sealed[0]; i++) {
        size_t n = strlen(sealed[i]);
        if (len >= n && strncmp(name, sealed[i], n) == 0 && (sealed[i][n - 1] == '_' || len == n))
            return 1;
    }
    return 0;
}

static int l_package_loadlib(lua_State *L) {
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);
    if (s_sealed_symbol(name, len)) {
        lua_pushnil(L);
        lua_pushfstring(L, "package.loadlib: '%s' is Lua's own: pseud-lua keeps its bounds on "
                        "the libraries it sealed (use require)", name);
        lua_pushliteral(L, "init");
        return 3;
    }
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 2, LUA_MULTRET);
    return lua_gettop(L);
}

/* Is the value at `idx` one of the host's own userdata, or a password
 * check (its C side trusts their metatables and user values)? */
static int s_host_userdata(lua_State *L, int idx) {
    static const char *const classes[] = { HOST_MT, ENDPOINT_MT, FUTURE_MT, CODEC_EXT_MT,
                                           PASSWORD_CHECK_MT };
    int t = lua_type(L, idx);
    if ((t != LUA_TUSERDATA && t != LUA_TTABLE) || !lua_getmetatable(L, idx)) return 0;
    int yes = 0;
    for (size_t i = 0; i < sizeof classes / sizeof classes[0] && !yes; i++) {
        luaL_getmetatable(L, classes[i]);
        yes = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
    }
    if (!yes) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &s_sentinel_mt_key);
        yes = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return yes;
}

/* The debug library's ways into the host's own state, refused: a C
 * function's upvalue is the host (debug.setupvalue of one made the C side
 * read a string as the host: a heap overflow; the host reached through
 * debug.getupvalue was closed by its own __gc while it ran), the registry
 * holds every reference the C side follows, and a future's user value is
 * its result (debug.setuservalue of one: SIGSEGV). An attack round. */
static int s_debug_refused(lua_State *L, const char *what) {
    return luaL_error(L, "debug.%s: pseud-lua keeps this to itself (the host's own state)", what);
}

static int l_debug_upvalue(lua_State *L) {
    int f = lua_upvalueindex(2);                  /* Lua's own; upvalue 1: its name */
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (lua_iscfunction(L, 1)) return s_debug_refused(L, lua_tostring(L, lua_upvalueindex(1)));
    const char *name = lua_tostring(L, lua_upvalueindex(1));
    if (strcmp(name, "upvaluejoin") == 0 && lua_type(L, 3) == LUA_TFUNCTION && lua_iscfunction(L, 3))
        return s_debug_refused(L, name);
    lua_pushvalue(L, f);
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static int l_debug_setuservalue(lua_State *L) {
    if (s_host_userdata(L, 1)) return s_debug_refused(L, "setuservalue");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static int l_debug_getregistry(lua_State *L) { return s_debug_refused(L, "getregistry"); }

/* debug.getlocal / debug.setlocal as Lua's (ldblib.c), but never in a C
 * function's frame: its "(C temporary)" slots are what the C side works
 * on (a handler that reached the main thread, as predicates run on it,
 * replaced the future l_future_get waited for: SIGSEGV in host_run; a
 * review). Written out, not wrapped: a wrapper would be a level itself. */
static lua_State *s_debug_thread(lua_State *L, int *arg) {
    if (lua_isthread(L, 1)) { *arg = 1; return lua_tothread(L, 1); }
    *arg = 0;
    return L;
}

static void s_debug_frame(lua_State *L, lua_State *L1, int level, lua_Debug *ar, int arg, const char *what) {
    if (!lua_getstack(L1, level, ar)) luaL_argerror(L, arg, "level out of range");
    if (!lua_getinfo(L1, "S", ar) || ar->what[0] == 'C') s_debug_refused(L, what);
    if (L != L1 && !lua_checkstack(L1, 1)) luaL_error(L, "stack overflow");
}

static int l_debug_getlocal(lua_State *L) {
    int arg;
    lua_State *L1 = s_debug_thread(L, &arg);
    int nvar = (int)luaL_checkinteger(L, arg + 2);
    if (lua_isfunction(L, arg + 1)) {             /* a function: its parameters' names */
        lua_pushvalue(L, arg + 1);
        lua_pushstring(L, lua_getlocal(L, NULL, nvar));
        return 1;
    }
    lua_Debug ar;
    s_debug_frame(L, L1, (int)luaL_checkinteger(L, arg + 1), &ar, arg + 1, "getlocal");
    const char *name = lua_getlocal(L1, &ar, nvar);
    if (!name) { luaL_pushfail(L); return 1; }
    lua_xmove(L1, L, 1);
    lua_pushstring(L, name);
    lua_rotate(L, -2, 1);
    return 2;
}

static int l_debug_setlocal(lua_State *L) {
    int arg;
    lua_State *L1 = s_debug_thread(L, &arg);
    int level = (int)luaL_checkinteger(L, arg + 1), nvar = (int)luaL_checkinteger(L, arg + 2);
    luaL_checkany(L, arg + 3);
    lua_settop(L, arg + 3);
    lua_Debug ar;
    s_debug_frame(L, L1, level, &ar, arg + 1, "setlocal");
    lua_xmove(L, L1, 1);
    const char *name = lua_setlocal(L1, &ar, nvar);
    if (!name) lua_pop(L1, 1);
    lua_pushstring(L, name);
    return 1;
}

/* debug.getmetatable: the host's userdata give the token getmetatable does */
static int l_debug_getmetatable(lua_State *L) {
    luaL_checkany(L, 1);
    if (!lua_getmetatable(L, 1)) { lua_pushnil(L); return 1; }
    if (s_host_userdata(L, 1)) lua_getfield(L, -1, "__metatable");
    return 1;
}

/* load / loadfile as Lua's (upvalue 1), text only: a binary chunk is not
 * checked by Lua's loader, and crafted bytecode corrupts memory; a handler
 * that loads what a peer sent (a calculator's load('return ' .. expr))
 * would hand that peer the process. `mode_arg`: where the mode goes (an
 * env after it stays absent when it was: Lua tells absent from nil). */
static int s_load_text(lua_State *L, int mode_arg) {
    int n = lua_gettop(L);
    if (n < mode_arg) { lua_settop(L, mode_arg); n = mode_arg; }
    lua_pushliteral(L, "t");
    lua_replace(L, mode_arg);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

static int l_load(lua_State *L) { return s_load_text(L, 3); }
static int l_loadfile(lua_State *L) { return s_load_text(L, 2); }

static int l_dofile(lua_State *L) {
    const char *fname = luaL_optstring(L, 1, NULL);
    lua_settop(L, 1);
    if (luaL_loadfilex(L, fname, "t") != LUA_OK) return lua_error(L);
    lua_call(L, 0, LUA_MULTRET);
    return lua_gettop(L) - 1;
}

/* Is `sym` (the name before a hyphen, after it, or whole: loadlib.c's
 * loadfunc tries each) one of the sealed luaopen_ names? */
static int s_sealed_module(lua_State *L, const char *modname) {
    const char *dots = luaL_gsub(L, modname, ".", "_");
    const char *mark = strchr(dots, '-');
    const char *parts[3] = { dots, mark ? mark + 1 : NULL, NULL };
    size_t lens[3] = { mark ? (size_t)(mark - dots) : strlen(dots), mark ? strlen(mark + 1) : 0, 0 };
    int sealed = 0;
    for (int i = 0; i < 2 && parts[i] && !sealed; i++) {
        lua_pushfstring(L, "luaopen_%s", lua_pushlstring(L, parts[i], lens[i]));
        size_t n;
        const char *sym = lua_tolstring(L, -1, &n);
        sealed = s_sealed_symbol(sym, n);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    return sealed;
}

/* package.searchers' C searchers (upvalue 1: Lua's), refusing a module
 * whose luaopen_ function is one of Lua's own sealed libraries: require
 * 'debug-raw' with package.cpath at liblua opened luaopen_debug, the
 * unsealed sethook, past package.loadlib's check (a review). */
static int l_c_searcher(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    if (s_sealed_module(L, name)) {
        lua_pushfstring(L, "no C module '%s': its luaopen_ function would be Lua's own, which "
                        "pseud-lua keeps sealed", name);
        return 1;
    }
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* debug.setmetatable(value, mt) as Lua's (ldblib.c), with a __gc bounded;
 * a userdata Lua finalizes already keeps that: Lua would call the new __gc
 * itself, unbounded (a review: a file given a spinning __gc). */
static int l_debug_setmetatable(lua_State *L) {
    int t = lua_type(L, 2);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    lua_settop(L, 2);
    if (s_host_userdata(L, 1)) return s_debug_refused(L, "setmetatable");
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

/* os.exit in a worker: exit() there ended the whole process at once, with
 * the status the script gave (0 too) and no line in the log (an attack
 * round). It raises instead: at the script's top level that is the
 * worker's script failing (logged; the server stops, exit 1). */
static int l_worker_exit(lua_State *L) {
    return luaL_error(L, "os.exit in worker %d: a worker cannot end the process "
                      "(the server stops when its script fails)", host_worker_id(HOST(L)));
}

/* Put the functions above in the base, coroutine, debug and (in a worker)
 * os libraries (but the base one, if loaded). */
void lpseud_task_seal(lua_State *L, int host) {
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
    if (lua_getfield(L, -1, LUA_COLIBNAME) == LUA_TTABLE) {
        lua_pushcfunction(L, l_co_resume);
        lua_setfield(L, -2, "resume");
        lua_pushcfunction(L, l_co_wrap);
        lua_setfield(L, -2, "wrap");
        lua_pushcfunction(L, l_co_close);
        lua_setfield(L, -2, "close");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_xpcall);
    lua_setglobal(L, "xpcall");
    lua_getglobal(L, "load");
    lua_pushcclosure(L, l_load, 1);
    lua_setglobal(L, "load");
    lua_getglobal(L, "loadfile");
    lua_pushcclosure(L, l_loadfile, 1);
    lua_setglobal(L, "loadfile");
    lua_pushcfunction(L, l_dofile);
    lua_setglobal(L, "dofile");
    if (lua_getfield(L, -1, LUA_DBLIBNAME) == LUA_TTABLE) {
        if (lua_getfield(L, -1, "sethook") == LUA_TFUNCTION && lua_tocfunction(L, -1)) {
            host_set_lua_sethook(lua_touserdata(L, host), lua_tocfunction(L, -1));
            lua_pop(L, 1);
            lua_pushvalue(L, host);
            lua_pushcclosure(L, l_debug_sethook, 1);
            lua_setfield(L, -2, "sethook");
        } else {
            lua_pop(L, 1);
        }
        lua_pushcfunction(L, l_debug_setmetatable);
        lua_setfield(L, -2, "setmetatable");
        lua_pushcfunction(L, l_debug_getmetatable);
        lua_setfield(L, -2, "getmetatable");
        lua_pushcfunction(L, l_debug_getregistry);
        lua_setfield(L, -2, "getregistry");
        lua_pushcfunction(L, l_debug_getlocal);
        lua_setfield(L, -2, "getlocal");
        lua_pushcfunction(L, l_debug_setlocal);
        lua_setfield(L, -2, "setlocal");
        if (lua_getfield(L, -1, "setuservalue") == LUA_TFUNCTION) {
            lua_pushcclosure(L, l_debug_setuservalue, 1);
            lua_setfield(L, -2, "setuservalue");
        } else {
            lua_pop(L, 1);
        }
        static const char *const upvalue_fns[] = { "getupvalue", "setupvalue", "upvalueid", "upvaluejoin" };
        for (size_t i = 0; i < sizeof upvalue_fns / sizeof upvalue_fns[0]; i++) {
            lua_pushstring(L, upvalue_fns[i]);
            if (lua_getfield(L, -2, upvalue_fns[i]) == LUA_TFUNCTION) {
                lua_pushcclosure(L, l_debug_upvalue, 2);
                lua_setfield(L, -2, upvalue_fns[i]);
            } else {
                lua_pop(L, 2);
            }
        }
    }
    lua_pop(L, 1);
    if (lua_getfield(L, -1, LUA_LOADLIBNAME) == LUA_TTABLE) {
        if (lua_getfield(L, -1, "loadlib") == LUA_TFUNCTION) {
            lua_pushcclosure(L, l_package_loadlib, 1);
            lua_setfield(L, -2, "loadlib");
        } else {
            lua_pop(L, 1);
        }
        if (lua_getfield(L, -1, "searchers") == LUA_TTABLE) {   /* the C and the all-in-one */
            for (int i = 3; i <= 4; i++) {
                if (lua_rawgeti(L, -1, i) == LUA_TFUNCTION && lua_iscfunction(L, -1)) {
                    lua_pushcclosure(L, l_c_searcher, 1);
                    lua_rawseti(L, -2, i);
                } else {
                    lua_pop(L, 1);
                }
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (host_worker_id(lua_touserdata(L, host)) != 0) {
        if (lua_getfield(L, -1, LUA_OSLIBNAME) == LUA_TTABLE) {
            lua_pushvalue(L, host);
            lua_pushcclosure(L, l_worker_exit, 1);
            lua_setfield(L, -2, "exit");
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* core.counts() -> {tasks=, answering=, pooled=, pending_calls=, timers=,
 * registry=}: what is alive, for leak specs (registry: references held, not
 * counting the idle coroutines of the task pool) */
static int l_counts(lua_State *L) {
    host_counts_t c;
    host_get_counts(HOST(L), &c);
    lua_Integer refs = 0;                         /* live refs: a freed one holds a number */
    lua_pushnil(L);
    while (lua_next(L, LUA_REGISTRYINDEX)) {
        if (lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) != LUA_TNUMBER) refs++;
        lua_pop(L, 1);
    }
    refs -= c.pooled;                             /* each idle coroutine holds one */
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, c.tasks); lua_setfield(L, -2, "tasks");
    lua_pushinteger(L, c.answering); lua_setfield(L, -2, "answering");
    lua_pushinteger(L, c.pooled); lua_setfield(L, -2, "pooled");
    lua_pushinteger(L, (lua_Integer)c.pending_calls); lua_setfield(L, -2, "pending_calls");
    lua_pushinteger(L, (lua_Integer)c.timers); lua_setfield(L, -2, "timers");
    lua_pushinteger(L, refs); lua_setfield(L, -2, "registry");
    return 1;
}

/* Call fn (at index 1) with the arguments above it, bounded by `seconds`:
 * true, results... | false, pseud.Error. */
static int s_bounded_pcall(lua_State *L, double seconds) {
    luaL_checkany(L, 1);
    luaL_checkstack(L, 8, "too many arguments");
    sched_t *s = host_sched(HOST(L));
    sched_error_t err;
    lua_pushcfunction(L, sched_msgh);
    lua_insert(L, 1);
    if (sched_pcall(s, L, lua_gettop(L) - 2, LUA_MULTRET, seconds, &err) == LUA_OK) {
        lua_pushboolean(L, 1);
        lua_insert(L, 1);
        return lua_gettop(L);
    }
    lua_pushboolean(L, 0);
    task_push_error(L, err.name, err.message, err.traceback);
    return 2;
}

/* __tostring of the value at 1 (under sched_pcall) */
static int s_tostring_meta(lua_State *L) {
    if (!luaL_callmeta(L, 1, "__tostring") || lua_type(L, -1) != LUA_TSTRING) lua_pushnil(L);
    return 1;
}

const char *lpseud_error_text(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER) {
        lua_pushvalue(L, idx);
        return lua_tostring(L, -1);
    }
    if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
        lua_pop(L, 1);
        sched_t *s = sched_of(L);
        if (!s) {                                 /* before pseud.core: as Lua's lua.c */
            if (luaL_callmeta(L, idx, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return lua_tostring(L, -1);
        } else {
            sched_error_t err;
            lua_pushcfunction(L, sched_msgh);
            lua_pushcfunction(L, s_tostring_meta);
            lua_pushvalue(L, idx);
            if (sched_pcall(s, L, 1, 1, s->max_hook_time > 0 ? s->max_hook_time : 1, &err) == LUA_OK) {
                if (lua_type(L, -1) == LUA_TSTRING) return lua_tostring(L, -1);
                lua_pop(L, 1);
            } else {
                return lua_pushfstring(L, "(error object is a %s value; its __tostring failed: %s: %s)",
                                       luaL_typename(L, idx), err.name, err.message);
            }
        }
    }
    return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
}

/* core.hook_pcall(fn, ...) -> true, results... | false, pseud.Error: fn
 * bounded by max_hook_time (predicates, backend hooks called from Lua) */
static int l_hook_pcall(lua_State *L) {
    return s_bounded_pcall(L, host_sched(HOST(L))->max_hook_time);
}

/* core.bounded_pcall(seconds, fn, ...): as hook_pcall, bounded by
 * `seconds` (> 0) instead: the script's top level during a reload */
static int l_bounded_pcall(lua_State *L) {
    double seconds = luaL_checknumber(L, 1);
    luaL_argcheck(L, seconds > 0, 1, "a bound in seconds, > 0");
    lua_remove(L, 1);
    return s_bounded_pcall(L, seconds);
}

/* --- reload (host.c runs it; lua/pseud/reload.lua is the reloader) --- */

static const char s_script_key = 0;   /* registry: {path=, n=, args...} of the script run */

void lpseud_set_script(lua_State *L, const char *path, int nargs, char **args) {
    host_t *h = lpseud_host(L);
    if (h) host_set_script(h, path, nargs, args);   /* for workers: main's argv lives on */
    lua_createtable(L, nargs, 2);
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
    lua_pushinteger(L, nargs);
    lua_setfield(L, -2, "n");
    for (int i = 0; i < nargs; i++) {
        lua_pushstring(L, args[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &s_script_key);
}

/* core.script() -> {path=, n=, args...} (a copy) | nil: the script file
 * pseud-lua runs and its arguments (none for -e code or stdin) */
static int l_script(lua_State *L) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &s_script_key) != LUA_TTABLE) return 0;
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, -3)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    return 1;
}

/* core.set_reloader(fn): () -> ok, text, which the loop runs between turns
 * after a SIGHUP or core.reload() */
static int l_set_reloader(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    host_set_reloader(HOST(L), L);
    return 0;
}

/* core.reload() -> future (settles with true or the failure's text) |
 * nil, reason */
static int l_reload(lua_State *L) {
    lpseud_new_future(L);
    const char *why = host_ask_reload(HOST(L), L);
    if (!why) return 1;
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
}

/* core.set_global_callables(t): pseud.register_rpc's names, as the host
 * looks them up, are t's from now on (the end of a reload). The table
 * takes the old one's registry slot: a slot that exists is set without
 * allocating, so the swap of a reload cannot fail halfway. */
static int l_set_global_callables(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    int ref = host_global_registry(HOST(L));
    if (ref != LUA_NOREF) lua_rawseti(L, LUA_REGISTRYINDEX, ref);
    else host_set_global_registry(HOST(L), luaL_ref(L, LUA_REGISTRYINDEX));
    return 0;
}

/* core.flush([seconds=1 [, quiet]]): let messages waiting for their peer
 * leave (the end of a script); unless quiet, warn when the script set up
 * handlers or made calls and never ran the loop */
static int l_flush(lua_State *L) {
    double s = luaL_optnumber(L, 1, 1);
    if (!task_current(L)) host_flush(HOST(L), L, s, !lua_toboolean(L, 2));
    return 0;
}

/* core.caller() -> user_id, routing_id of the call this handler answers */
static int l_caller(lua_State *L) {
    return dispatch_push_caller(L);
}

/* core.now(): monotonic seconds, the loop's clock */
static int l_now(lua_State *L) {
    lua_pushnumber(L, loop_now());
    return 1;
}

/* core.hook_time(): max_hook_time, seconds (0: unlimited) */
static int l_hook_time(lua_State *L) {
    lua_pushnumber(L, host_sched(HOST(L))->max_hook_time);
    return 1;
}

const luaL_Reg lpseud_task_functions[] = {
    { "sleep", l_sleep },
    { "hook_time", l_hook_time },
    { "spawn", l_spawn },
    { "now", l_now },
    { "caller", l_caller },
    { "counts", l_counts },
    { "flush", l_flush },
    { "hook_pcall", l_hook_pcall },
    { "bounded_pcall", l_bounded_pcall },
    { "script", l_script },
    { "set_reloader", l_set_reloader },
    { "reload", l_reload },
    { "set_global_callables", l_set_global_callables },
    { NULL, NULL }
};
