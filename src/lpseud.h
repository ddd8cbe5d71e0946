/* lpseud: the Lua module pseud.core (see lpseud.c). */
#ifndef PSEUD_LPSEUD_H
#define PSEUD_LPSEUD_H

#include <lua.h>

int luaopen_pseud_core(lua_State *L);

/* Remember the script pseud-lua runs (`path`) and its `nargs` arguments,
 * for a reload to run it again (core.script). May raise (memory). */
void lpseud_set_script(lua_State *L, const char *path, int nargs, char **args);

/* Push the text of the error value at `idx` and return it: a string as it
 * is, another value by its __tostring, which runs bounded by
 * max_hook_time (1 s if unlimited) once pseud.core has loaded. */
const char *lpseud_error_text(lua_State *L, int idx);

/* The state is about to close (lua_close): finalizers run at once from
 * now on, bounded, not queued for a loop that will not run again. */
void lpseud_closing(lua_State *L);

/* Workers (docs/workers.md). pseud-lua's body of a worker thread, for
 * start() to run N of them; and, in that thread, before pseud.core loads:
 * this state is worker `slot`'s. */
struct workers_slot;
void lpseud_set_worker_main(lua_State *L, void (*fn)(struct workers_slot *slot));
void lpseud_mark_worker(lua_State *L, struct workers_slot *slot);

#endif
