/*
 * lpseud_internal: what the parts of the one Lua binding, module
 * pseud.core, share. Include it from lpseud*.c only.
 *
 * The binding is one module made by one luaopen_pseud_core (lpseud.c), in
 * parts of readable size:
 *   lpseud.c           helpers, pseud.Future, values (error, ext,
 *                      configure), the log (log, log_level), metrics, the
 *                      module table, luaopen_pseud_core
 *   lpseud_endpoint.c  pseud.Endpoint
 *   lpseud_task.c      tasks seen from Lua (sleep, spawn, counts, flush,
 *                      hook_pcall, bounded_pcall), the reload's functions
 *                      (script, set_reloader, reload, set_global_callables)
 *                      and the sealed coroutine.resume/wrap/
 *                      close, xpcall and debug.sethook
 *   lpseud_finalizers.c  __gc under a bound: setmetatable, debug.setmetatable
 *   lpseud_seal.c      the rest of Lua's library a script could lift its
 *                      bounds with: package.loadlib, C searchers, load,
 *                      debug's ways into the host's state
 *   lpseud_keys.c      ZAP handler, CURVE keys, password hashes and checks,
 *                      key and credential files, the password prompt
 * A part exports luaL_Reg arrays, not functions: its lua_CFunctions stay
 * static, and luaopen_pseud_core registers every array with the host as
 * upvalue 1 and makes every metatable.
 */
#ifndef PSEUD_LPSEUD_INTERNAL_H
#define PSEUD_LPSEUD_INTERNAL_H

#include <lauxlib.h>
#include <lua.h>

#include "host.h"
#include "task.h"

/* The host_t, upvalue 1 of every function of the module. */
#define HOST(L) ((host_t *)lua_touserdata(L, lua_upvalueindex(1)))

/* The host of state L (pseud.core loaded), or NULL. */
host_t *lpseud_host(lua_State *L);
/* Number field `k` of the table at t, or def; raises if not a number. */
double lpseud_opt_number(lua_State *L, int t, const char *k, double def);
/* Push a new pending pseud.Future. May raise (memory). */
lfuture_t *lpseud_new_future(lua_State *L);
/* Raise a pseud.Error {name, message}. */
int lpseud_raise_error(lua_State *L, const char *name, const char *message);

/* lpseud_endpoint.c: pseud.Endpoint's methods and metamethods (with an
 * "__index" slot for the methods), and core.endpoint. */
extern const luaL_Reg lpseud_endpoint_methods[];
extern const luaL_Reg lpseud_endpoint_meta[];
extern const luaL_Reg lpseud_endpoint_functions[];

/* lpseud_task.c: core.sleep, spawn, now, caller, counts, flush, hook_pcall,
 * bounded_pcall, script, set_reloader, reload, set_global_callables, log. */
extern const luaL_Reg lpseud_task_functions[];
/* Put pseud's coroutine.resume, wrap and close, xpcall and debug.sethook in
 * the loaded libraries; `host` is the stack index of the host userdata. */
void lpseud_task_seal(lua_State *L, int host);

/* lpseud_finalizers.c: pseud's setmetatable and debug.setmetatable (a
 * __gc bounded, run later from the loop), in the loaded libraries. */
void lpseud_finalizers_open(lua_State *L, int host);
/* Is the value at `idx` a finalizer's sentinel? */
int lpseud_is_sentinel(lua_State *L, int idx);

/* lpseud_seal.c: package.loadlib, require's C searchers, load, loadfile,
 * dofile and debug's ways into the host's state, replaced. */
void lpseud_seal_open(lua_State *L);
/* Is the value at `idx` one of the host's own (a host, endpoint, future,
 * ext value or password check, or a sentinel)? Its C side trusts their
 * metatables and user values. */
int lpseud_is_host_value(lua_State *L, int idx);

/* lpseud_keys.c: core.set_zap_handler, curve_keypair, curve_public,
 * pwhash, pwhash_verify, passwd_start, passwd_stats, password_check,
 * write_private, lexists, read_password. */
extern const luaL_Reg lpseud_keys_functions[];

#endif
