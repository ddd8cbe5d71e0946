/*  bench_lua_floor — the least any host pays to run a hello in Lua 5.4.

    Per call it does only what every host whose handlers are Lua functions
    must: push the handler (a registry reference) and its argument (the
    name's bytes, as off the wire: Lua interns them), run it in a coroutine
    (a handler that may wait must be resumable), and read the string it
    returns. No sockets, no msgpack, no checks, no scheduler: what is left
    is liblua's own work and its allocations. scripts/bench counts its
    instructions at two lengths under callgrind; the difference over the
    calls, added to the C echo's instructions per hello, is the floor of
    any such host's figure, whatever its C does (docs/bench.md).

    The handler and the names are those of bench/echo_server.lua and
    bench_load: hello(name) -> 'Hello ' .. name, names of 10 bytes.

    Usage: bench_lua_floor CALLS   (prints the total length of the results)
*/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int main(int argc, char **argv) {
    long calls = argc == 2 ? strtol(argv[1], NULL, 10) : -1;
    if (calls < 0) {
        fprintf(stderr, "usage: bench_lua_floor CALLS\n");
        return 2;
    }
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "bench_lua_floor: out of memory\n");
        return 1;
    }
    luaL_openlibs(L);
    if (luaL_dostring(L, "return function(name) return 'Hello ' .. name end") != LUA_OK) {
        fprintf(stderr, "bench_lua_floor: %s\n", lua_tostring(L, -1));
        return 1;
    }
    int handler = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_State *co = lua_newthread(L);            /* one coroutine, reused: a pooled task */
    luaL_ref(L, LUA_REGISTRYINDEX);
    size_t total = 0;
    char name[10];
    memcpy(name, "Charly", 6);
    for (long i = 0; i < calls; i++) {
        long k = i % 10000;                      /* names vary, as a peer's would */
        for (int d = 9; d >= 6; d--, k /= 10) name[d] = (char)('0' + k % 10);
        int results = 0;
        lua_rawgeti(co, LUA_REGISTRYINDEX, handler);
        lua_pushlstring(co, name, sizeof name);
        if (lua_resume(co, L, 1, &results) != LUA_OK || results != 1 || !lua_isstring(co, -1)) {
            fprintf(stderr, "bench_lua_floor: the handler did not return a string\n");
            return 1;
        }
        size_t len = 0;
        lua_tolstring(co, -1, &len);
        total += len;
        lua_pop(co, results);
    }
    printf("%zu\n", total);
    lua_close(L);
    return 0;
}
