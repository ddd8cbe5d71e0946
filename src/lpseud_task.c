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

/* lua_resetthread(co); raises without room on the C stack (nothing run).
 * The __close handlers run on co: it is the nested thread meanwhile, so an
 * allocating one has the hook look there (an attack round: one repeating
 * string.rep of 4 MiB ran 52 s past a 1 s max_handler_time). It cannot
 * yield there: no preemption path opens. */
static int s_reset_thread(lua_State *L, lua_State *co) {
    sched_t *s = sched_of(L);
    if (!s) return lua_resetthread(co);
    if (!sched_stack_room(s)) return luaL_error(L, "C stack overflow (coroutines closed inside __close)");
    lua_State *outer = s->nested;
    s->nested = co;
    int status = lua_resetthread(co);
    s->nested = outer;
    return status;
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
    lpseud_finalizers_open(L, host);
    lpseud_seal_open(L);
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
