/*
 * lpseud_keys: credentials, one part of the Lua binding pseud.core (see
 * lpseud_internal.h): the ZAP handler, CURVE key pairs, argon2 password
 * hashes and checks verified off the loop (passwd.c), and, for keygen and
 * passwd (lua/pseud/tools.lua), key and credential files and the no-echo
 * password prompt (keyfile.c does the work).
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <sodium.h>
#include <zmq.h>

#include "host.h"
#include "keyfile.h"
#include "lpseud_internal.h"

/* core.set_zap_handler(fn): fn(request) -> user_id | nil, reason */
static int l_set_zap_handler(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    if (host_start_zap(HOST(L), L) < 0)
        return luaL_error(L, "cannot start the ZAP handler: %s", zmq_strerror(errno));
    return 0;
}

/* core.curve_keypair() -> public, secret (Z85) */
static int l_curve_keypair(lua_State *L) {
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) < 0) return luaL_error(L, "CURVE is not available: %s", zmq_strerror(errno));
    lua_pushstring(L, pub);
    lua_pushstring(L, sec);
    sodium_memzero(sec, sizeof sec);
    return 2;
}

/* core.curve_public(secret) -> public (Z85) */
static int l_curve_public(lua_State *L) {
    size_t n;
    const char *sec = luaL_checklstring(L, 1, &n);
    char pub[41];
    if (n != 40 || zmq_curve_public(pub, sec) < 0) return luaL_argerror(L, 1, "not a Z85 CURVE secret key");
    lua_pushstring(L, pub);
    return 1;
}

/* core.pwhash(password) -> argon2 string (libsodium crypto_pwhash_str) */
static int l_pwhash(lua_State *L) {
    size_t n;
    const char *pw = luaL_checklstring(L, 1, &n);
    char out[crypto_pwhash_STRBYTES];
    if (sodium_init() < 0 ||
        crypto_pwhash_str(out, pw, n, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        return luaL_error(L, "cannot hash the password (out of memory)");
    lua_pushstring(L, out);
    return 1;
}

/* core.pwhash_verify(hash, password) -> boolean */
static int l_pwhash_verify(lua_State *L) {
    size_t n;
    const char *hash = luaL_checkstring(L, 1);
    const char *pw = luaL_checklstring(L, 2, &n);
    lua_pushboolean(L, sodium_init() >= 0 && strlen(hash) < crypto_pwhash_STRBYTES &&
                       crypto_pwhash_str_verify(hash, pw, n) == 0);
    return 1;
}

/* core.passwd_start([threads [, max_pending]]): the pool that verifies
 * password checks off the loop (once per process; makes the dummy hash) */
static int l_passwd_start(lua_State *L) {
    lua_Integer threads = luaL_optinteger(L, 1, 0), pending = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, threads >= 0 && threads <= 16, 1, "threads must be 0..16");
    luaL_argcheck(L, pending >= 0 && pending <= 100000, 2, "max_pending must be 0..100000");
    if (host_start_passwd(HOST(L), (int)threads, (size_t)pending) < 0)
        return luaL_error(L, "cannot start the password checks: %s", strerror(errno));
    return 0;
}

/* core.passwd_stats() -> {checked=, dummy=, refused_busy=, delayed=, pending=, waiting=} | nil */
static int l_passwd_stats(lua_State *L) {
    passwd_stats_t st;
    if (host_passwd_stats(HOST(L), &st) < 0) return 0;
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, (lua_Integer)st.checked); lua_setfield(L, -2, "checked");
    lua_pushinteger(L, (lua_Integer)st.dummy); lua_setfield(L, -2, "dummy");
    lua_pushinteger(L, (lua_Integer)st.refused_busy); lua_setfield(L, -2, "refused_busy");
    lua_pushinteger(L, (lua_Integer)st.delayed); lua_setfield(L, -2, "delayed");
    lua_pushinteger(L, (lua_Integer)st.pending); lua_setfield(L, -2, "pending");
    lua_pushinteger(L, (lua_Integer)st.waiting); lua_setfield(L, -2, "waiting");
    return 1;
}

/* core.password_check(hash|nil, password) -> check: what a zap or
 * handle_hello hook returns to have `password` verified against `hash`
 * (nil: no such login) on the pool, off the loop. */
static int l_password_check(lua_State *L) {
    if (!lua_isnil(L, 1)) luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, 1); lua_setfield(L, -2, "hash");
    lua_pushvalue(L, 2); lua_setfield(L, -2, "password");
    codec_set_class(L, PASSWORD_CHECK_MT);
    return 1;
}

/* --- key and credential files, password prompts (keyfile.c does the work) --- */

/* core.write_private(path, text [, mode]) -> true | nil, message: replace
 * path atomically (keyfile_replace); mode defaults to 0600, owner only. */
static int l_write_private(lua_State *L) {
    size_t plen, n;
    const char *path = luaL_checklstring(L, 1, &plen);
    const char *text = luaL_checklstring(L, 2, &n);
    lua_Integer mode = luaL_optinteger(L, 3, 0600);
    luaL_argcheck(L, plen > 0 && strlen(path) == plen && path[plen - 1] != '/', 1,
                  "not a file path");
    luaL_argcheck(L, mode >= 0 && mode <= 0777, 3, "mode must be permission bits (0 to 0777)");
    if (keyfile_replace(path, text, n, (mode_t)mode) < 0) {
        int e = errno;
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(e));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.lexists(path) -> boolean | nil, message: is anything at path? lstat,
 * so a dangling symlink counts: writing there would follow it. */
static int l_lexists(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    int found = lstat(path, &st) == 0;
    if (found || errno == ENOENT) {
        lua_pushboolean(L, found);
        return 1;
    }
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(e));
    return 2;
}

/* core.read_password(prompt) -> string | nil, message: one line of stdin
 * (fd 0 itself, not io.read's buffer), without its newline, at most
 * KEYFILE_PASSWORD_MAX bytes (a longer one is refused). On a terminal: the
 * prompt on stderr, echo off while reading, the terminal restored on every
 * path. Piped: read silently. */
/* Push buf[len] (under lua_pcall: the caller wipes buf on every path). */
static int s_push_secret(lua_State *L) {
    lua_pushlstring(L, lua_touserdata(L, 1), (size_t)lua_tointeger(L, 2));
    return 1;
}

static int l_read_password(lua_State *L) {
    const char *prompt = luaL_checkstring(L, 1);
    char buf[KEYFILE_PASSWORD_MAX];
    size_t len = 0;
    int rc = keyfile_read_password(isatty(STDIN_FILENO) ? prompt : NULL, buf, sizeof buf, &len);
    int e = errno;
    if (rc == KEYFILE_READ_OK) {
        lua_pushcfunction(L, s_push_secret);      /* pushing may raise: not over buf */
        lua_pushlightuserdata(L, buf);
        lua_pushinteger(L, (lua_Integer)len);
        int status = lua_pcall(L, 2, 1, 0);
        sodium_memzero(buf, sizeof buf);
        if (status != LUA_OK) return lua_error(L);
        return 1;
    }
    sodium_memzero(buf, sizeof buf);
    lua_pushnil(L);
    if (rc == KEYFILE_READ_EOF) lua_pushliteral(L, "no password on standard input");
    else if (rc == KEYFILE_READ_LONG)
        lua_pushfstring(L, "password longer than %d bytes: refused", KEYFILE_PASSWORD_MAX);
    else if (rc == KEYFILE_READ_SIGNAL) lua_pushliteral(L, "interrupted");
    else lua_pushfstring(L, "standard input: %s", strerror(e));
    return 2;
}

const luaL_Reg lpseud_keys_functions[] = {
    { "set_zap_handler", l_set_zap_handler },
    { "curve_keypair", l_curve_keypair },
    { "curve_public", l_curve_public },
    { "pwhash", l_pwhash },
    { "pwhash_verify", l_pwhash_verify },
    { "passwd_start", l_passwd_start },
    { "passwd_stats", l_passwd_stats },
    { "password_check", l_password_check },
    { "write_private", l_write_private },
    { "lexists", l_lexists },
    { "read_password", l_read_password },
    { NULL, NULL }
};
