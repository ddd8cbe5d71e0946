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
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "codec.h"
#include "host.h"
#include "lpseud.h"
#include "lpseud_internal.h"
#include "workers.h"

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

/* Is `src` (a chunk's source) one of pseud's own modules (.../pseud/NAME.lua)? */
static const char s_library_key = 'l';         /* registry: "@DIR/" of pseud's Lua modules */

/* Is `src` (a chunk's source) one of pseud's own modules? Those are the
 * files in the folder init.lua told (core.set_library); before it has,
 * any ".../pseud/NAME.lua". */
static int s_is_pseud_source(lua_State *L, const char *src) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &s_library_key);
    size_t n;
    const char *dir = lua_tolstring(L, -1, &n);
    int yes;
    if (dir) {
        yes = strncmp(src, dir, n) == 0 && !strchr(src + n, '/');
    } else {
        const char *slash = strrchr(src, '/');
        size_t m = slash ? strlen(slash + 1) : 0;
        yes = slash && slash - src >= 6 && strncmp(slash - 6, "/pseud", 6) == 0 &&
              m > 4 && strcmp(slash + 1 + m - 4, ".lua") == 0;
    }
    lua_pop(L, 1);
    return yes;
}

/* core.set_library(source): pseud's modules are the files beside `source`
 * (init.lua's own chunk source, "@DIR/init.lua"), for error values' where */
static int l_set_library(lua_State *L) {
    const char *src = luaL_checkstring(L, 1);
    const char *slash = strrchr(src, '/');
    if (!slash) return 0;
    lua_pushlstring(L, src, (size_t)(slash - src) + 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &s_library_key);
    return 0;
}

/* Give the error value at `idx` a `where` field, "file:line" of the first
 * Lua function on the stack outside pseud's modules: the user's line that
 * called into the library. Kept when it has one already. */
static void s_set_where(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    if (!dispatch_is_marked(L, idx, ERROR_MT)) return;      /* pseud's error values only */
    lua_pushliteral(L, "where");
    int has = lua_rawget(L, idx) != LUA_TNIL;
    lua_pop(L, 1);
    if (has) return;
    lua_Debug ar;
    for (int level = 1; level < 64 && lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0 || s_is_pseud_source(L, ar.source)) continue;
        lua_pushfstring(L, "%s:%d", ar.short_src, ar.currentline);
        lua_setfield(L, idx, "where");
        return;
    }
}

int lpseud_raise_error(lua_State *L, const char *name, const char *message) {
    task_push_error(L, name, message, "");
    s_set_where(L, -1);
    return lua_error(L);
}

/* --- pseud.Future --- */

static int s_future_result(lua_State *L, int f) {
    lfuture_t *fu = lua_touserdata(L, f);
    lua_getiuservalue(L, f, 1);
    if (fu->state == FUTURE_FAILED) {
        s_set_where(L, -1);                       /* the line that waited for it */
        return lua_error(L);
    }
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
    s_set_where(L, -1);
    return 1;
}

static int l_error_tostring(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "name");
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "traceback");
    lua_getfield(L, 1, "where");
    lua_getfield(L, 1, "call");
    const char *tb = lua_tostring(L, 4), *where = lua_tostring(L, 5), *call = lua_tostring(L, 6);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (where) { luaL_addstring(&b, where); luaL_addstring(&b, ": "); }
    luaL_addstring(&b, lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
    luaL_addstring(&b, ": ");
    luaL_addstring(&b, lua_tostring(L, 3) ? lua_tostring(L, 3) : "");
    if (call) { luaL_addstring(&b, " ("); luaL_addstring(&b, call); luaL_addstring(&b, ")"); }
    if (tb && tb[0]) { luaL_addchar(&b, '\n'); luaL_addstring(&b, tb); }
    luaL_pushresult(&b);
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

#define LOG_MAX_FIELDS 16

static int s_cmp_field(const void *a, const void *b) {
    return strcmp(((const log_field_t *)a)->key, ((const log_field_t *)b)->key);
}

/* Field `field` (a string) of the error value on top, into `x`; the
 * string lives in that table, which lives in the fields table. */
static void s_error_field(lua_State *L, log_field_t *x, const char *field) {
    x->type = LOG_T_BYTES;
    lua_pushstring(L, field);
    if (lua_rawget(L, -2) == LUA_TSTRING) x->s = lua_tolstring(L, -1, &x->len);   /* raw: no metamethod */
    else { x->s = "?"; x->len = 1; }
    lua_pop(L, 1);
}

/* core.log(level, msg [, fields [, limited]]): one line of the host's log
 * (log.h), if its level is shown; `limited`: a line a peer can cause per
 * message, under the host's rate limit (20 a second). Fields: string keys, sorted; strings, numbers and
 * booleans as they are; an error value (pseud.Error) as its class, plus a
 * `message` field; other values by type name (no __tostring runs). */
static int l_log(lua_State *L) {
    static const char *const levels[] = { "error", "warn", "info", "debug", NULL };
    host_t *h = HOST(L);
    int level = luaL_checkoption(L, 1, NULL, levels) + 1;
    const char *msg = luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    int limited = lua_toboolean(L, 4);
    if (!host_log_on(h, level)) return 0;
    log_field_t f[LOG_MAX_FIELDS + 1];
    int n = 0;
    lua_settop(L, 3);
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (n < LOG_MAX_FIELDS && lua_next(L, 3)) {
            if (lua_type(L, -2) != LUA_TSTRING) { lua_pop(L, 1); continue; }
            log_field_t *x = &f[n++];
            memset(x, 0, sizeof *x);
            /* keys and values stay in the table (argument 3, untouched) for
             * the whole call: their strings stay alive */
            x->key = lua_tostring(L, -2);
            switch (lua_type(L, -1)) {
            case LUA_TSTRING:
                x->type = LOG_T_BYTES;
                x->s = lua_tolstring(L, -1, &x->len);
                break;
            case LUA_TNUMBER:
                if (lua_isinteger(L, -1)) { x->type = LOG_T_INT; x->i = lua_tointeger(L, -1); }
                else { x->type = LOG_T_NUM; x->d = lua_tonumber(L, -1); }
                break;
            case LUA_TBOOLEAN:
                x->type = LOG_T_STR;
                x->s = lua_toboolean(L, -1) ? "true" : "false";
                break;
            case LUA_TTABLE:
                if (dispatch_is_marked(L, -1, ERROR_MT) && n < LOG_MAX_FIELDS) {
                    /* an error value: key=its class, message=its message (no traceback) */
                    s_error_field(L, x, "name");
                    x = &f[n++];
                    memset(x, 0, sizeof *x);
                    x->key = "message";
                    s_error_field(L, x, "message");
                    break;
                }
                /* fall through */
            default:
                x->type = LOG_T_STR;
                x->s = luaL_typename(L, -1);
                break;
            }
            lua_pop(L, 1);
        }
        qsort(f, (size_t)n, sizeof f[0], s_cmp_field);
    }
    memset(&f[n], 0, sizeof f[n]);
    if (limited) host_log_limited(h, level, msg, f);
    else host_log(h, level, msg, f);
    return 0;
}

/* core.log_level() -> 'quiet' | 'error' | 'warn' | 'info' | 'debug' */
static int l_log_level(lua_State *L) {
    lua_pushstring(L, log_level_name(host_log_level(HOST(L))));
    return 1;
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

/* core.cluster(url) -> true: servers made from now on without a `cluster`
 * option join the cluster at url (pseud-lua --cluster). */
static int l_cluster(lua_State *L) {
    const char *url = luaL_checkstring(L, 1);
    if (host_set_cluster_default(HOST(L), url) < 0) return luaL_error(L, "not enough memory");
    lua_pushboolean(L, 1);
    return 1;
}

/* core.workers(n) -> true: start() starts n worker threads (pseud-lua
 * --workers; 1: none). */
static int l_workers(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= WORKERS_MAX, 1, "workers must be 1 to 64");
    host_set_workers(HOST(L), (int)n);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.role() -> 'control' | 'worker'; core.worker_id() -> 0 | 1..N */
static int l_role(lua_State *L) {
    if (host_worker_id(HOST(L))) lua_pushliteral(L, "worker");
    else lua_pushliteral(L, "control");
    return 1;
}

static int l_worker_id(lua_State *L) {
    lua_pushinteger(L, host_worker_id(HOST(L)));
    return 1;
}

static const char s_worker_key = 0;   /* registry: the workers_slot_t of a worker's state */

void lpseud_mark_worker(lua_State *L, struct workers_slot *slot) {
    lua_pushlightuserdata(L, slot);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &s_worker_key);
}

host_t *lpseud_host(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, (void *)&luaopen_pseud_core);
    host_t *h = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return h;
}

void lpseud_set_worker_main(lua_State *L, void (*fn)(struct workers_slot *slot)) {
    host_t *h = lpseud_host(L);
    if (h) host_set_worker_main(h, fn);
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
    { "log", l_log },
    { "log_level", l_log_level },
    { "set_library", l_set_library },
    { "metrics", l_metrics },
    { "cluster", l_cluster },
    { "workers", l_workers },
    { "role", l_role },
    { "worker_id", l_worker_id },
    { NULL, NULL }
};

/* The functions of pseud.core, part by part. */
static const luaL_Reg *const module_parts[] = {
    lpseud_endpoint_functions, lpseud_task_functions, lpseud_keys_functions, core_functions
};

/* getmetatable() of the host's userdata gives a token, not the metatable:
 * a __gc a script put there Lua would run itself, hooks off, unbounded,
 * in place of the class's own (an attack round, on the table classes;
 * codec_set_class guards those). The C side reads the real one. */
static void s_hide_metatable(lua_State *L) {
    lua_newtable(L);
    lua_setfield(L, -2, "__metatable");
}

/* Create metatable `name` with metamethods `meta` and methods as __index. */
static void s_new_class(lua_State *L, int host, const char *name, const luaL_Reg *meta,
                        const luaL_Reg *methods) {
    luaL_newmetatable(L, name);                   /* mt */
    s_hide_metatable(L);
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
    lua_rawgetp(L, LUA_REGISTRYINDEX, &s_worker_key);
    struct workers_slot *slot = lua_touserdata(L, -1);       /* a worker's state: its link */
    lua_pop(L, 1);
    host_t *h = lua_newuserdatauv(L, host_size(), 0);        /* host */
    int host = lua_gettop(L);
    if (host_init_shared(h, L, slot ? workers_slot_zmq(slot) : NULL) < 0)
        return luaL_error(L, "pseud: cannot start the host: %s", strerror(errno));
    luaL_newmetatable(L, HOST_MT);
    lua_pushcfunction(L, l_host_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushboolean(L, 0);                        /* getmetatable(host) gives nothing to call */
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, host);
    lua_pushvalue(L, host);
    lua_rawsetp(L, LUA_REGISTRYINDEX, (void *)&luaopen_pseud_core);   /* lives as long as L */
    if (slot && host_attach_worker(h, slot) < 0)
        return luaL_error(L, "pseud: worker %d cannot watch its link", workers_slot_id(slot));
    lpseud_task_seal(L, host);                    /* coroutine, xpcall, debug.sethook */

    s_new_class(L, host, ENDPOINT_MT, lpseud_endpoint_meta, lpseud_endpoint_methods);
    s_new_class(L, host, FUTURE_MT, future_meta, future_methods);
    luaL_newmetatable(L, ERROR_MT);
    lua_pushcfunction(L, l_error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, CODEC_EXT_MT);
    s_hide_metatable(L);
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
    s_hide_metatable(L);
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
    lua_pushliteral(L, DISPATCH_RESERVED_PREFIX);  /* registry.lua refuses to register these */
    lua_setfield(L, -2, "reserved_prefix");
    luaL_getmetatable(L, CODEC_MAP_MT);
    lua_setfield(L, -2, "map_mt");
    luaL_getmetatable(L, CODEC_KWARGS_MT);
    lua_setfield(L, -2, "kwargs_mt");
    luaL_getmetatable(L, ERROR_MT);
    lua_setfield(L, -2, "error_mt");
    luaL_getmetatable(L, ROUTES_MT);
    lua_setfield(L, -2, "routes_mt");
    luaL_getmetatable(L, PASSWORD_CHECK_MT);      /* what getmetatable() gives for one */
    lua_getfield(L, -1, "__metatable");
    lua_setfield(L, -3, "password_check_mt");
    lua_pop(L, 1);
    return 1;
}
