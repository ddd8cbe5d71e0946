/*
 * lpseud: the Lua binding, module pseud.core. The binding is this file and
 * its parts lpseud_endpoint.c, lpseud_task.c and lpseud_keys.c (see
 * lpseud_internal.h): together the only files with functions a script can
 * call (module functions, methods, metamethods). This one holds the shared
 * helpers, pseud.Future, the values (pseud.Error, pseud.Ext, configure,
 * metrics),
 * and luaopen_pseud_core, which makes every metatable (pseud.Endpoint,
 * pseud.Future, pseud.Ext, pseud.Error, pseud.Map, pseud.Kwargs,
 * pseud.Routes, pseud.PasswordCheck, pseud.Host) and the module table from
 * the parts' luaL_Reg arrays. Every function gets the host_t as upvalue 1;
 * there is no other state.
 *
 * Misuse (bad arguments) raises; what the world does (a bind that fails)
 * returns nil, message, code; call outcomes are pseud.Error values.
 */
#include <errno.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "codec.h"
#include "host.h"
#include "lpseud.h"
#include "lpseud_internal.h"

/* --- helpers --- */

static lfuture_t *check_future(lua_State *L, int i) {
    return luaL_checkudata(L, i, FUTURE_MT);
}

double lpseud_opt_number(lua_State *L, int t, const char *k, double def) {
    double v = def;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        if (!lua_isnumber(L, -1)) luaL_error(L, "option '%s' must be a number", k);
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

lfuture_t *lpseud_new_future(lua_State *L) {
    lfuture_t *fu = lua_newuserdatauv(L, sizeof *fu, 3);   /* 1: value, 2: waiters, 3: called name */
    fu->state = FUTURE_PENDING;
    fu->nwaiters = 0;
    fu->call = NULL;
    luaL_setmetatable(L, FUTURE_MT);
    return fu;
}

int lpseud_raise_error(lua_State *L, const char *name, const char *message) {
    task_push_error(L, name, message, "");
    return lua_error(L);
}

/* --- pseud.Future --- */

static int s_future_result(lua_State *L, int f) {
    lfuture_t *fu = lua_touserdata(L, f);
    lua_getiuservalue(L, f, 1);
    if (fu->state == FUTURE_FAILED) return lua_error(L);
    return 1;
}

static int s_future_get_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status; (void)ctx;
    task_check_deadline(L);                       /* woken by its deadline */
    return s_future_result(L, 1);
}

/* f:get(): the value, or raises the error value. Yields inside a task; runs
 * the loop from the main chunk. */
static int l_future_get(lua_State *L) {
    lfuture_t *fu = check_future(L, 1);
    host_t *h = HOST(L);
    lua_settop(L, 1);
    if (fu->state == FUTURE_PENDING) {
        if (task_current(L)) return task_wait_future(L, 1, s_future_get_k);
        if (host_run(h, L, 1, -1) < 0 && fu->state == FUTURE_PENDING)
            return lpseud_raise_error(L, "Interrupted", "stopped while waiting for a reply");
    }
    return s_future_result(L, 1);
}

static int l_future_done(lua_State *L) {
    lfuture_t *fu = check_future(L, 1);
    lua_pushboolean(L, fu->state != FUTURE_PENDING);
    return 1;
}

static int l_future_tostring(lua_State *L) {
    lfuture_t *fu = check_future(L, 1);
    static const char *const states[] = { "pending", "done", "failed" };
    lua_pushfstring(L, "pseud.Future (%s)", states[fu->state]);
    return 1;
}

/* --- values --- */

static int l_error(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *message = luaL_optstring(L, 2, "");
    task_push_error(L, name, message, luaL_optstring(L, 3, ""));
    return 1;
}

static int l_error_tostring(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "name");
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "traceback");
    const char *tb = lua_tostring(L, 4);
    if (tb && tb[0]) lua_pushfstring(L, "%s: %s\n%s", lua_tostring(L, 2), lua_tostring(L, 3), tb);
    else lua_pushfstring(L, "%s: %s", lua_tostring(L, 2), lua_tostring(L, 3));
    return 1;
}

static int l_ext(lua_State *L) {
    lua_Integer type = luaL_checkinteger(L, 1);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    luaL_argcheck(L, type >= -128 && type <= 127, 1, "ext type must be -128..127");
    codec_push_ext(L, (int8_t)type, data, n);
    return 1;
}

static int l_ext_index(lua_State *L) {
    codec_ext_t *e = luaL_checkudata(L, 1, CODEC_EXT_MT);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "type") == 0) lua_pushinteger(L, e->type);
    else if (strcmp(k, "data") == 0) lua_pushlstring(L, e->data, e->size);
    else lua_pushnil(L);
    return 1;
}

static int l_ext_eq(lua_State *L) {
    codec_ext_t *a = luaL_checkudata(L, 1, CODEC_EXT_MT);
    codec_ext_t *b = luaL_checkudata(L, 2, CODEC_EXT_MT);
    lua_pushboolean(L, a->type == b->type && a->size == b->size &&
                       memcmp(a->data, b->data, a->size) == 0);
    return 1;
}

static int l_ext_tostring(lua_State *L) {
    codec_ext_t *e = luaL_checkudata(L, 1, CODEC_EXT_MT);
    lua_pushfstring(L, "pseud.ext(%d, %I bytes)", (int)e->type, (lua_Integer)e->size);
    return 1;
}

/* core.configure{max_depth=, max_string=, max_elements=, max_body=} */
static int l_configure(lua_State *L) {
    host_t *h = HOST(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    codec_limits_t lim = *host_limits(h);
    double d = lpseud_opt_number(L, 1, "max_depth", lim.max_depth);
    luaL_argcheck(L, d >= 1 && d <= CODEC_DEFAULT_MAX_DEPTH, 1, "max_depth must be 1..32");
    lim.max_depth = (int)d;
    const char *sizes[] = { "max_string", "max_elements", "max_body" };
    size_t *fields[] = { &lim.max_string, &lim.max_elements, &lim.max_body };
    for (int i = 0; i < 3; i++) {
        double v = lpseud_opt_number(L, 1, sizes[i], (double)*fields[i]);
        luaL_argcheck(L, v >= 1 && v <= 1e12, 1, "sizes must be 1..1e12");
        *fields[i] = (size_t)v;
    }
    host_set_limits(h, &lim);
    return 0;
}

/* core.metrics(address) -> true | nil, message: serve GET /metrics there
 * (host_serve_metrics; the `metrics` option and --metrics). */
static int l_metrics(lua_State *L) {
    const char *address = luaL_checkstring(L, 1);
    char err[512];
    if (host_serve_metrics(HOST(L), address, err, sizeof err) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_password_check_tostring(lua_State *L) {
    lua_pushliteral(L, "pseud.PasswordCheck");
    return 1;
}

static int l_host_gc(lua_State *L) {
    host_close(lua_touserdata(L, 1));
    return 0;
}

/* --- module --- */

static const luaL_Reg future_methods[] = {
    { "get", l_future_get },
    { "done", l_future_done },
    { NULL, NULL }
};

static const luaL_Reg future_meta[] = {
    { "__tostring", l_future_tostring },
    { "__index", NULL },
    { NULL, NULL }
};

static const luaL_Reg core_functions[] = {         /* this file's; the parts have theirs */
    { "error", l_error },
    { "ext", l_ext },
    { "configure", l_configure },
    { "metrics", l_metrics },
    { NULL, NULL }
};

/* The functions of pseud.core, part by part. */
static const luaL_Reg *const module_parts[] = {
    lpseud_endpoint_functions, lpseud_task_functions, lpseud_keys_functions, core_functions
};

/* Create metatable `name` with metamethods `meta` and methods as __index. */
static void s_new_class(lua_State *L, int host, const char *name, const luaL_Reg *meta,
                        const luaL_Reg *methods) {
    luaL_newmetatable(L, name);                   /* mt */
    lua_pushvalue(L, host);
    luaL_setfuncs(L, meta, 1);
    if (methods) {
        lua_newtable(L);                          /* mt, methods */
        lua_pushvalue(L, host);
        luaL_setfuncs(L, methods, 1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

int luaopen_pseud_core(lua_State *L) {
    /* Tasks are found through the extra space of their thread, which new
     * threads copy from the main thread; Lua leaves the main one unset. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    *(task_t **)lua_getextraspace(lua_tothread(L, -1)) = NULL;
    lua_pop(L, 1);
    host_t *h = lua_newuserdatauv(L, host_size(), 0);        /* host */
    int host = lua_gettop(L);
    if (host_init(h, L) < 0) return luaL_error(L, "pseud: cannot start the host: %s", strerror(errno));
    luaL_newmetatable(L, HOST_MT);
    lua_pushcfunction(L, l_host_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushboolean(L, 0);                        /* getmetatable(host) gives nothing to call */
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, host);
    lua_pushvalue(L, host);
    lua_rawsetp(L, LUA_REGISTRYINDEX, (void *)&luaopen_pseud_core);   /* lives as long as L */
    lpseud_task_seal(L, host);                    /* coroutine, xpcall, debug.sethook */

    s_new_class(L, host, ENDPOINT_MT, lpseud_endpoint_meta, lpseud_endpoint_methods);
    s_new_class(L, host, FUTURE_MT, future_meta, future_methods);
    luaL_newmetatable(L, ERROR_MT);
    lua_pushcfunction(L, l_error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, CODEC_EXT_MT);
    lua_pushcfunction(L, l_ext_index); lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_ext_eq); lua_setfield(L, -2, "__eq");
    lua_pushcfunction(L, l_ext_tostring); lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, CODEC_MAP_MT);
    lua_pop(L, 1);
    luaL_newmetatable(L, CODEC_KWARGS_MT);
    lua_pop(L, 1);
    luaL_newmetatable(L, ROUTES_MT);
    lua_pop(L, 1);
    luaL_newmetatable(L, PASSWORD_CHECK_MT);
    lua_pushliteral(L, "pseud.PasswordCheck");   /* tostring never shows the password */
    lua_setfield(L, -2, "__name");
    lua_pushcfunction(L, l_password_check_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    int nfuncs = 0;                               /* as luaL_newlib sizes it */
    for (size_t i = 0; i < sizeof module_parts / sizeof module_parts[0]; i++)
        for (const luaL_Reg *r = module_parts[i]; r->name; r++) nfuncs++;
    lua_createtable(L, 0, nfuncs);                            /* host, core */
    for (size_t i = 0; i < sizeof module_parts / sizeof module_parts[0]; i++) {
        lua_pushvalue(L, host);
        luaL_setfuncs(L, module_parts[i], 1);
    }
    lua_newtable(L);                                          /* global callables */
    lua_pushvalue(L, -1);
    host_set_global_registry(h, luaL_ref(L, LUA_REGISTRYINDEX));
    lua_setfield(L, -2, "global_callables");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    luaL_getmetatable(L, CODEC_MAP_MT);
    lua_setfield(L, -2, "map_mt");
    luaL_getmetatable(L, CODEC_KWARGS_MT);
    lua_setfield(L, -2, "kwargs_mt");
    luaL_getmetatable(L, ERROR_MT);
    lua_setfield(L, -2, "error_mt");
    luaL_getmetatable(L, ROUTES_MT);
    lua_setfield(L, -2, "routes_mt");
    luaL_getmetatable(L, PASSWORD_CHECK_MT);
    lua_setfield(L, -2, "password_check_mt");
    return 1;
}
