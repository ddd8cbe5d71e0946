/*
 * lpseud_seal: the doors of Lua's standard library past the host's bounds,
 * closed, one part of the Lua binding pseud.core (see lpseud_internal.h):
 * its functions that may work long without allocating look at the clock
 * after a large piece of work;
 * package.loadlib and require's C searchers refuse Lua's own libraries
 * (their unsealed debug.sethook, setmetatable, coroutine functions);
 * debug's getregistry, the upvalues of C functions, the user values and
 * metatables of the host's values and the locals of C frames are the
 * host's own; load, loadfile and dofile load text only. Each was found
 * open by an attack round or a review (README, "Limits").
 */
#include <stdint.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "codec.h"
#include "dispatch.h"
#include "host.h"
#include "lpseud_internal.h"

/* Call Lua's own function (upvalue `up`) with the arguments on the stack,
 * its results ours: what a replacement does once it let a call through. */
static int s_call_own(lua_State *L, int up) {
    lua_pushvalue(L, lua_upvalueindex(up));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* package.loadlib(path, name) as Lua's (upvalue 1), but never a function of
 * Lua's own library: luaopen_debug gave a script the unsealed sethook
 * back, and a spinning handler took its hook off (an attack round), as
 * luaopen_base and luaopen_coroutine would give back what the seal
 * replaced; a lua_ or luaL_ function is no lua_CFunction at all. Other
 * libraries' functions are the script's own native code. */
static int s_sealed_symbol(const char *name, size_t len) {
    static const char *const sealed[] = { "luaopen_base", "luaopen_coroutine", "luaopen_debug",
                                          "luaopen_package", "luaopen_string", "luaopen_table",
                                          "luaopen_utf8", "luaopen_os", "luaopen_io", "lua_", "luaL_" };
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
    return s_call_own(L, 1);
}

int lpseud_is_host_value(lua_State *L, int idx) {
    static const char *const classes[] = { HOST_MT, ENDPOINT_MT, FUTURE_MT, CODEC_EXT_MT,
                                           PASSWORD_CHECK_MT };
    idx = lua_absindex(L, idx);
    int t = lua_type(L, idx);
    if ((t != LUA_TUSERDATA && t != LUA_TTABLE) || !lua_getmetatable(L, idx)) return 0;
    int yes = 0;
    for (size_t i = 0; i < sizeof classes / sizeof classes[0] && !yes; i++) {
        luaL_getmetatable(L, classes[i]);
        yes = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return yes || lpseud_is_sentinel(L, idx);
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
    luaL_checktype(L, 1, LUA_TFUNCTION);          /* upvalue 1: its name; 2: Lua's own */
    if (lua_iscfunction(L, 1)) return s_debug_refused(L, lua_tostring(L, lua_upvalueindex(1)));
    const char *name = lua_tostring(L, lua_upvalueindex(1));
    if (strcmp(name, "upvaluejoin") == 0 && lua_type(L, 3) == LUA_TFUNCTION && lua_iscfunction(L, 3))
        return s_debug_refused(L, name);
    return s_call_own(L, 2);
}

static int l_debug_setuservalue(lua_State *L) {
    if (lpseud_is_host_value(L, 1)) return s_debug_refused(L, "setuservalue");
    return s_call_own(L, 1);
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
    if (lpseud_is_host_value(L, 1)) lua_getfield(L, -1, "__metatable");
    return 1;
}

/* load / loadfile as Lua's (upvalue 1), text only: a binary chunk is not
 * checked by Lua's loader, and crafted bytecode corrupts memory; a handler
 * that loads what a peer sent (a calculator's load('return ' .. expr))
 * would hand that peer the process. `mode_arg`: where the mode goes (an
 * env after it stays absent when it was: Lua tells absent from nil). */
static int s_load_text(lua_State *L, int mode_arg) {
    if (lua_gettop(L) < mode_arg) lua_settop(L, mode_arg);
    lua_pushliteral(L, "t");
    lua_replace(L, mode_arg);
    return s_call_own(L, 1);
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
    return s_call_own(L, 1);
}

/* --- long work without allocating --- */

/* One call of these may sort, move or scan megabytes without allocating,
 * so neither the count hook (one instruction) nor the allocator
 * (task_limits.c) saw its time: a loop of table.sort of 200,000 items ran
 * 88 s past a 1 s max_handler_time while every caller waited (an attack
 * round). Each calls Lua's own (upvalue 1) in the same frame (none of them
 * has upvalues of its own), and counts its work as the allocator counts
 * bytes: a MiB of either has the hook look at the clock at the next
 * instruction. Bytes scanned (times a pattern's length over 4: a matcher
 * tries each element at each position), 16 per element moved (a TValue),
 * 64 per element sorted. The bound is counted before the call, what it
 * did after: one that raised (a "pattern too complex" in a pcall loop) is
 * counted at the next. A scan counts what it read up to its match, so a
 * tokenizer's short finds through a long string count little. */
#define ITEM_WORK 16
#define SORT_WORK 64

static int s_own(lua_State *L) { return lua_tocfunction(L, lua_upvalueindex(1))(L); }

static size_t s_times(size_t a, size_t b) { return b && a > SIZE_MAX / b ? SIZE_MAX : a * b; }

static size_t s_table_len(lua_State *L) { return lua_type(L, 1) == LUA_TTABLE ? lua_rawlen(L, 1) : 0; }
static size_t s_string_len(lua_State *L) { return lua_type(L, 1) == LUA_TSTRING ? lua_rawlen(L, 1) : 0; }

/* Where a scan of the string at 1 starts (its init at `arg`, as lstrlib
 * reads it), 0-based; the string's length in *len (0: not a string). */
static size_t s_scan_start(lua_State *L, int arg, size_t *len) {
    *len = s_string_len(L);
    lua_Integer init = lua_isinteger(L, arg) ? lua_tointeger(L, arg) : 1;
    if (init < 0) init = (lua_Integer)*len + init + 1 > 0 ? (lua_Integer)*len + init + 1 : 1;
    if (init == 0) init = 1;
    return (lua_Unsigned)init - 1 < *len ? (size_t)init - 1 : *len;
}

/* What a byte scanned costs with the pattern at 2: 1 for a plain search
 * (`plain`, or no special character: lstrlib's memory search). */
static size_t s_pattern_weight(lua_State *L, int plain) {
    size_t n = 0;
    const char *p = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &n) : NULL;
    if (plain || !p) return 1;
    for (size_t i = 0; i < n; i++)
        if (p[i] != '\0' && strchr("^$*+?.([%-", p[i])) return 1 + n / 4;
    return 1;
}

/* Lua's own, its work bounded by `work` before and counted so after. */
static int s_bounded(lua_State *L, size_t work) {
    task_work_begin(L, work);
    int n = s_own(L);
    task_work_end(L, work);
    return n;
}

static int l_string_find(lua_State *L) {
    size_t len, from = s_scan_start(L, 3, &len);
    size_t w = s_pattern_weight(L, lua_toboolean(L, 4));
    task_work_begin(L, s_times(len - from, w));
    int n = s_own(L);
    size_t to = len;                              /* not found: read to the end */
    if (n >= 2 && lua_isinteger(L, -n + 1)) {     /* found: start, end, captures */
        lua_Integer e = lua_tointeger(L, -n + 1);
        if (e >= 0 && (lua_Unsigned)e < len) to = (size_t)e;
    }
    task_work_end(L, s_times(to > from ? to - from : 0, w));
    return n;
}

static int l_string_match(lua_State *L) {
    size_t len, from = s_scan_start(L, 3, &len);
    size_t w = s_pattern_weight(L, 0);
    int anchored = lua_type(L, 2) == LUA_TSTRING && lua_tostring(L, 2)[0] == '^';
    task_work_begin(L, s_times(len - from, w));
    int n = s_own(L);
    size_t to = len;                              /* not found, or found anywhere: the bound */
    if (anchored && !(n == 1 && lua_isnil(L, -1))) {
        /* an anchored match read what it returns: its position captures
         * say where it got to, its strings how much it took */
        size_t took = 0;
        for (int i = -n; i < 0; i++) {
            if (lua_isinteger(L, i) && lua_tointeger(L, i) > 0 && (lua_Unsigned)lua_tointeger(L, i) - 1 <= len) {
                size_t at = (size_t)lua_tointeger(L, i) - 1;
                if (at > from && at - from > took) took = at - from;
            } else if (lua_type(L, i) == LUA_TSTRING && lua_rawlen(L, i) > took) {
                took = lua_rawlen(L, i);
            }
        }
        to = from + (took < len - from ? took : len - from);
    }
    task_work_end(L, s_times(to - from, w));
    return n;
}

/* every match replaced by nothing allocates nothing */
static int l_string_gsub(lua_State *L) { return s_bounded(L, s_times(s_string_len(L), s_pattern_weight(L, 0))); }

/* utf8.len, utf8.offset: up to the whole string */
static int l_string_len_scan(lua_State *L) { return s_bounded(L, s_string_len(L)); }

static int l_returns_many(lua_State *L) {   /* string.byte, utf8.codepoint, table.unpack */
    int n = s_own(L);                             /* they check their count before any work */
    task_work_end(L, s_times((size_t)n, ITEM_WORK));
    return n;
}

static int l_table_sort(lua_State *L) { return s_bounded(L, s_times(s_table_len(L), SORT_WORK)); }

static int l_table_insert(lua_State *L) {   /* insert(t, pos, v) shifts; insert(t, v) does not */
    return s_bounded(L, lua_gettop(L) >= 3 ? s_times(s_table_len(L), ITEM_WORK) : 0);
}

static int l_table_remove(lua_State *L) {   /* remove(t, pos) shifts; remove(t) does not */
    return s_bounded(L, lua_gettop(L) >= 2 ? s_times(s_table_len(L), ITEM_WORK) : 0);
}

static int l_table_move(lua_State *L) {
    lua_Integer f = lua_tointeger(L, 2), e = lua_tointeger(L, 3);
    size_t items = e >= f ? (size_t)((lua_Unsigned)e - (lua_Unsigned)f) + 1 : 0;
    return s_bounded(L, s_times(items, ITEM_WORK));
}

static int l_table_concat(lua_State *L) {   /* empty strings allocate nothing */
    lua_Integer i = lua_isinteger(L, 3) ? lua_tointeger(L, 3) : 1;
    lua_Integer j = lua_isinteger(L, 4) ? lua_tointeger(L, 4) : (lua_Integer)s_table_len(L);
    size_t items = j >= i ? (size_t)((lua_Unsigned)j - (lua_Unsigned)i) + 1 : 0;
    return s_bounded(L, s_times(items, ITEM_WORK));
}

/* A collection (collect, step, a change of mode: a full one) says nothing
 * of its length beforehand: the hook looks after it. */
static int l_collectgarbage(lua_State *L) {
    static const char *const quick[] = { "count", "isrunning", "stop", "restart", "setpause",
                                         "setstepmul" };
    const char *opt = lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : NULL;
    int look = 1;
    for (size_t k = 0; opt && k < sizeof quick / sizeof quick[0]; k++)
        if (strcmp(opt, quick[k]) == 0) look = 0;
    int n = s_own(L);
    if (look) task_work_end(L, SIZE_MAX);
    return n;
}

/* Put fn around name's function in the table on top: only Lua's own, a C
 * function with no upvalues (pseud.core loaded again would wrap a wrapper,
 * whose s_own then called itself). */
static void s_wrap(lua_State *L, const char *name, lua_CFunction fn) {
    if (lua_getfield(L, -1, name) == LUA_TFUNCTION && lua_iscfunction(L, -1)) {
        if (lua_getupvalue(L, -1, 1)) {
            lua_pop(L, 2);
            return;
        }
        lua_pushcclosure(L, fn, 1);
        lua_setfield(L, -2, name);
    } else {
        lua_pop(L, 1);
    }
}

static const struct heavy {
    const char *lib;                 /* its package.loaded name; NULL: a global */
    const char *name;
    lua_CFunction wrapper;
} s_heavy[] = {
    { NULL, "collectgarbage", l_collectgarbage },
    { LUA_TABLIBNAME, "sort", l_table_sort },
    { LUA_TABLIBNAME, "insert", l_table_insert },
    { LUA_TABLIBNAME, "remove", l_table_remove },
    { LUA_TABLIBNAME, "move", l_table_move },
    { LUA_TABLIBNAME, "concat", l_table_concat },
    { LUA_TABLIBNAME, "unpack", l_returns_many },
    { LUA_STRLIBNAME, "find", l_string_find },
    { LUA_STRLIBNAME, "match", l_string_match },
    { LUA_STRLIBNAME, "gsub", l_string_gsub },
    { LUA_STRLIBNAME, "byte", l_returns_many },
    { LUA_UTF8LIBNAME, "len", l_string_len_scan },
    { LUA_UTF8LIBNAME, "offset", l_string_len_scan },
    { LUA_UTF8LIBNAME, "codepoint", l_returns_many },
};

static void s_wrap_heavy(lua_State *L) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    for (size_t i = 0; i < sizeof s_heavy / sizeof s_heavy[0]; i++) {
        const struct heavy *h = &s_heavy[i];
        if (!h->lib) lua_pushglobaltable(L);
        else if (lua_getfield(L, -1, h->lib) != LUA_TTABLE) { lua_pop(L, 1); continue; }
        s_wrap(L, h->name, h->wrapper);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

void lpseud_seal_open(lua_State *L) {
    s_wrap_heavy(L);
    lua_getglobal(L, "load");
    lua_pushcclosure(L, l_load, 1);
    lua_setglobal(L, "load");
    lua_getglobal(L, "loadfile");
    lua_pushcclosure(L, l_loadfile, 1);
    lua_setglobal(L, "loadfile");
    lua_pushcfunction(L, l_dofile);
    lua_setglobal(L, "dofile");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, LUA_DBLIBNAME) == LUA_TTABLE) {
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
}
