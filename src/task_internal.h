/*
 * task_internal: what the two halves of the scheduler share, and nobody
 * else: task.c (run queues, tasks, waiting, nested coroutines) and
 * task_limits.c (the counting allocator, the count hook, kills, bounded
 * synchronous calls, error values). Include it from those two files only;
 * everyone else goes through task.h.
 */
#ifndef PSEUD_TASK_INTERNAL_H
#define PSEUD_TASK_INTERNAL_H

#include <stddef.h>

#include <lua.h>

#include "task.h"

#define TASK_SLICE      0.01      /* seconds a task runs before it yields to the loop */
#define TASK_HOOK_COUNT 10000     /* VM instructions between looks at the clock */
#define TASK_WORK_LOOK  (1u << 20) /* bytes allocated or scanned after which the hook looks at once */

/* Why a task is parked (task_t.wait). */
enum task_wait { TASK_RUNNING, TASK_WAIT_FUTURE, TASK_WAIT_SLEEP, TASK_PREEMPTED };

/* sched_init's second half: install the counting allocator on L's state,
 * put the count hook on the main thread (if it has none) and make the
 * registry's weak set of threads a limit ended. May raise (memory). */
void sched_limits_init(sched_t *s, lua_State *L);

/* The count hook of every thread the running task (or hook) runs: yields
 * past the slice, kills past the deadline. */
void sched_hook(lua_State *L, lua_Debug *ar);

/* Kill t at its next instruction (a wait it is in ends now): its deadline
 * passed. */
void task_expire(sched_t *s, task_t *t);
/* sched_stop_calls for one task (see there). */
void task_stop(sched_t *s, task_t *t);
/* The error a stopped or expired task raises: TimeoutError, or
 * PeerLostError when its caller's connection closed; pushed, or into *err. */
void task_stop_error(const sched_t *s, const task_t *t, sched_error_t *err);
void task_push_stop(lua_State *L, const sched_t *s, const task_t *t);

/* The index of tasks by the connection their WORK came on (task_calls.c):
 * task_start adds a task that answers one, task_free takes it out. */
void task_calls_add(sched_t *s, task_t *t);
void task_calls_remove(sched_t *s, task_t *t);
/* sched_close's: the table goes. */
void task_calls_close(sched_t *s);

/* Is the value at idx a pseud.Error (its metatable, compared raw)? */
int sched_is_error(lua_State *L, int idx);
/* Copy src[len] into a field of cap bytes, cut to fit, NUL-terminated. */
void sched_error_copy(char *dst, size_t cap, const char *src, size_t len);
/* Name and message into *err, traceback emptied. */
void sched_error_set(sched_error_t *err, const char *name, const char *message);
/* Field `k` of the table at idx into dst, if a string; raw, so no Lua runs. */
void sched_error_field(lua_State *L, int idx, const char *k, char *dst, size_t cap);
/* Under sched_pcall: (error value, thread) -> pseud.Error with the thread's
 * traceback. A __tostring runs here, bounded. */
int sched_describe(lua_State *L);

#endif
