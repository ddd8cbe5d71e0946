/* lpseud: the Lua module pseud.core (see lpseud.c). */
#ifndef PSEUD_LPSEUD_H
#define PSEUD_LPSEUD_H

#include <lua.h>

int luaopen_pseud_core(lua_State *L);

/* Remember the script pseud-lua runs (`path`) and its `nargs` arguments,
 * for a reload to run it again (core.script). May raise (memory). */
void lpseud_set_script(lua_State *L, const char *path, int nargs, char **args);

#endif
