/* lpseud: the Lua module pseud.core (see lpseud.c). */
#ifndef PSEUD_LPSEUD_H
#define PSEUD_LPSEUD_H

#include <lua.h>

int luaopen_pseud_core(lua_State *L);

#endif
