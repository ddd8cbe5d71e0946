/*
 * task_limits: what bounds a task (see task.h), kept apart from the
 * scheduling itself (task.c) so each file stays one idea of readable size:
 *   - the counting allocator (memory per task, refused past its cap),
 *   - the count hook (slice and deadline), kills and the set of threads a
 *     kill ended, which Lua must never run again,
 *   - sched_pcall, the bounded synchronous call, and its message handler:
 *     any error becomes a pseud.Error described in C.
 * Both files share task_internal.h and nothing else.
 */
#include "codec.h"
#include "task.h"
#include "task_internal.h"

#include <string.h>

#include <lauxlib.h>

static const char s_killed_key = 0;   /* registry: weak set of threads a limit ended */

/* --- memory --- */

/* The first look at the clock in a run of `t`: its slice ends a slice from
 * now, and a hook's deadline starts (no clock read per synchronous call).
 * Whichever looks first, the hook or a refused allocation: a refusal that
 * set only the slice left a hook's deadline unset for good (a finalizer
 * that allocated in a loop ran on past its bound: a review). */
static void s_first_look(sched_t *s, task_t *t, double now) {
    t->slice_end = now + TASK_SLICE;
    if (t == &s->hook && t->deadline == 0 && t->limits.time > 0) {
        t->deadline = now + t->limits.time;
        if (t->deadline_cap > 0 && t->deadline_cap < t->deadline) t->deadline = t->deadline_cap;
    }
}

/* The hook, at the next instruction of the threads the running task runs:
 * to kill or yield it, or just to look at the clock. */
static void s_arm_hook(sched_t *s, task_t *t) {
    if (t->co) lua_sethook(t->co, sched_hook, LUA_MASKCOUNT, 1);
    if (s->nested) lua_sethook(s->nested, sched_hook, LUA_MASKCOUNT, 1);
}

/* Count `bytes` of the running task's work since the hook last looked:
 * 1 when that reached TASK_WORK_LOOK (the count starts over). */
static int s_look_due(sched_t *s, size_t bytes) {
    if (bytes < TASK_WORK_LOOK - s->work_since_look) {
        s->work_since_look += bytes;
        return 0;
    }
    s->work_since_look = 0;
    return 1;
}

/* The state's allocator: counts what the running task allocates, net, and
 * refuses growth past its cap (Lua then raises LUA_ERRMEM in it). A MiB
 * allocated since the hook last looked has it look at once: an instruction
 * may copy megabytes (`s .. x`, `string.rep`), and 10,000 of them between
 * two looks held the loop for seconds past the slice and the deadline (an
 * attack round: 30 s of `string.rep` of 4 MiB under a 1 s bound). */
static void *s_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    sched_t *s = ud;
    task_t *t = s->current;
    if (!t) return s->alloc(s->alloc_ud, ptr, osize, nsize);
    size_t was = ptr ? osize : 0;                 /* osize is a type tag when ptr is NULL */
    if (nsize > was) {
        size_t grow = nsize - was;
        if (t->limits.memory > 0 && t->mem_net + (double)grow > t->limits.memory) {
            s->memory_hits++;
            /* each refusal costs Lua an emergency collection: a handler that
             * catches MemoryError in a loop could run far past its time
             * between two looks of the hook, so look now */
            double now = loop_now();
            if (t->slice_end == 0)                /* the hook may not have looked yet */
                s_first_look(s, t, now);
            if ((t->deadline > 0 && now > t->deadline) || now > t->slice_end)
                s_arm_hook(s, t);                 /* kill or yield */
            return NULL;
        }
        if (s_look_due(s, grow)) s_arm_hook(s, t);
    }
    void *p = s->alloc(s->alloc_ud, ptr, osize, nsize);
    if (t->limits.memory > 0 && (p || nsize == 0)) t->mem_net += (double)nsize - (double)was;
    return p;
}

sched_t *sched_of(lua_State *L) {
    void *ud;
    return lua_getallocf(L, &ud) == s_alloc ? ud : NULL;
}

void sched_limits_init(sched_t *s, lua_State *L) {
    s->alloc = lua_getallocf(L, &s->alloc_ud);
    lua_setallocf(L, s_alloc, s);
    /* every thread made from now on inherits the hook (it does nothing while
     * no task runs), so a coroutine the main chunk made is bounded too when
     * a handler runs it */
    if (!lua_gethook(L)) {
        lua_sethook(L, sched_hook, LUA_MASKCOUNT, TASK_HOOK_COUNT);
        s->hooked = L;
    }
    lua_newtable(L);                              /* weak set of killed threads */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &s_killed_key);
}

/* --- errors --- */

void task_push_error(lua_State *L, const char *name, const char *message, const char *traceback) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, traceback ? traceback : "");
    lua_setfield(L, -2, "traceback");
    codec_set_class(L, ERROR_MT);
}

int sched_is_error(lua_State *L, int idx) {
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
    luaL_getmetatable(L, ERROR_MT);
    int yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

void sched_error_copy(char *dst, size_t cap, const char *src, size_t len) {
    if (len >= cap) len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

void sched_error_set(sched_error_t *err, const char *name, const char *message) {
    sched_error_copy(err->name, sizeof err->name, name, strlen(name));
    sched_error_copy(err->message, sizeof err->message, message, strlen(message));
    err->traceback[0] = '\0';
}

/* Field `k` of the table at idx, if a string; raw, so no Lua runs. */
void sched_error_field(lua_State *L, int idx, const char *k, char *dst, size_t cap) {
    lua_pushstring(L, k);
    if (lua_rawget(L, idx) == LUA_TSTRING) {
        size_t n;
        const char *v = lua_tolstring(L, -1, &n);
        sched_error_copy(dst, cap, v, n);
    }
    lua_pop(L, 1);
}

/* Under the bound of sched_pcall: (error value, thread) -> pseud.Error with
 * the thread's traceback. A __tostring runs here, bounded. */
int sched_describe(lua_State *L) {
    lua_State *co = lua_tothread(L, 2);
    const char *name = "LuaError", *message;
    if (sched_is_error(L, 1)) {                   /* raw: an __index the script put in
                                                   * pseud.RemoteError spun here, unbounded */
        lua_pushliteral(L, "name");
        lua_rawget(L, 1);
        lua_pushliteral(L, "message");
        lua_rawget(L, 1);
        if (lua_type(L, -2) == LUA_TSTRING) name = lua_tostring(L, -2);
        message = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    } else {
        message = luaL_tolstring(L, 1, NULL);
    }
    luaL_traceback(L, co ? co : L, message, co ? 0 : 1);
    task_push_error(L, name, message, lua_tostring(L, -1));
    return 1;
}

/* Message handler of sched_pcall. */
int sched_msgh(lua_State *L) {
    lua_settop(L, 1);
    lua_pushcfunction(L, sched_describe);
    lua_insert(L, 1);
    lua_pushthread(L);
    lua_call(L, 2, 1);                            /* an error here: LUA_ERRERR */
    return 1;
}

/* --- the hook --- */

void task_stop_error(const sched_t *s, const task_t *t, sched_error_t *err) {
    if (t->expired && t->stop_deadline)
        sched_error_set(err, "PeerLostError", "its caller's connection closed, and it ran on past "
                        "max_hook_time after");
    else if (!t->expired && t->stopped)
        sched_error_set(err, "PeerLostError", "its caller's connection closed: no answer can reach it");
    else if (t == &s->hook)
        sched_error_set(err, "TimeoutError", "the hook ran past max_hook_time");
    else if (t->deferred)
        sched_error_set(err, "TimeoutError", "the finalizer ran past max_hook_time");
    else if (t->spawned)
        sched_error_set(err, "TimeoutError", "the task ran past the time limit of the handler that "
                        "spawned it");
    else
        sched_error_set(err, "TimeoutError", "the handler ran past max_handler_time");
}

void task_push_stop(lua_State *L, const sched_t *s, const task_t *t) {
    sched_error_t err;
    task_stop_error(s, t, &err);
    task_push_error(L, err.name, err.message, "");
}

/* The count hook of every thread the running task (or hook) runs. It reads
 * the clock every TASK_HOOK_COUNT instructions: past the deadline it kills
 * (and re-arms on every instruction, on the task's own thread too, so
 * neither a pcall nor a coroutine boundary keeps the task alive); past the
 * slice a task yields to the loop: its own thread directly, a coroutine it
 * resumed through task_resume_nested by passing the yield up. */
void sched_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    sched_t *s = sched_of(L);
    task_t *t = s ? s->current : NULL;
    if (!t) {                                     /* armed, then run outside any task */
        if (s && lua_gethookcount(L) != TASK_HOOK_COUNT) lua_sethook(L, sched_hook, LUA_MASKCOUNT, TASK_HOOK_COUNT);
        return;
    }
    double now = loop_now();
    if (t->slice_end == 0) s_first_look(s, t, now);
    if (t->expired || (t->deadline > 0 && now > t->deadline)) {
        t->expired = 1;
        lua_sethook(L, sched_hook, LUA_MASKCOUNT, 1);
        if (t->co && t->co != L) lua_sethook(t->co, sched_hook, LUA_MASKCOUNT, 1);
        double cap = t->limits.memory;            /* a task at its memory cap still gets its error */
        t->limits.memory = 0;
        /* Lua leaves hooks off for good on a thread an error from its hook
         * ends (5.4.4): it must never run Lua again (task_may_close) */
        if (lua_rawgetp(L, LUA_REGISTRYINDEX, &s_killed_key) == LUA_TTABLE) {
            lua_pushthread(L);
            lua_pushboolean(L, 1);
            lua_rawset(L, -3);
        }
        lua_pop(L, 1);
        task_push_stop(L, s, t);
        t->limits.memory = cap;
        lua_error(L);
    }
    if (t != &s->hook && s->pass_end >= 0) {     /* in sched_run: the pass's time */
        if (s->pass_end == 0) s->pass_end = now + TASK_SLICE;
        else if (now > s->pass_end) s->pass_over = 1;
    }
    s->work_since_look = s->work_pending = 0;     /* the clock covers what they did */
    /* armed early (an allocation, a kill elsewhere): back to the count */
    if (lua_gethookcount(L) != TASK_HOOK_COUNT) lua_sethook(L, sched_hook, LUA_MASKCOUNT, TASK_HOOK_COUNT);
    if (now > t->slice_end && t != &s->hook && lua_isyieldable(L)) {
        if (L == t->co) {
            t->wait = TASK_PREEMPTED;
            lua_yield(L, 0);
        } else if (L == s->nested) {
            s->preempting = L;
            lua_yield(L, 0);
        }
    }
}

static void s_count_work(sched_t *s, lua_State *L, size_t bytes) {
    if (s_look_due(s, bytes)) lua_sethook(L, sched_hook, LUA_MASKCOUNT, 1);
}

void task_work_begin(lua_State *L, size_t bytes) {
    sched_t *s = sched_of(L);
    if (!s || !s->current) return;
    if (s->work_pending) s_count_work(s, L, s->work_pending);   /* the last one raised */
    s->work_pending = bytes;
}

void task_work_end(lua_State *L, size_t bytes) {
    sched_t *s = sched_of(L);
    if (!s || !s->current) return;
    s->work_pending = 0;
    s_count_work(s, L, bytes);
}

int task_killing(lua_State *L) {
    sched_t *s = sched_of(L);
    return s && s->current && s->current->expired;
}

int task_may_close(lua_State *L, int idx) {
    if (task_killing(L)) return 0;
    idx = lua_absindex(L, idx);
    int killed = 0;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &s_killed_key) == LUA_TTABLE) {
        lua_pushvalue(L, idx);
        killed = lua_rawget(L, -2) != LUA_TNIL;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return !killed;
}

int task_may_sethook(lua_State *L) {
    sched_t *s = sched_of(L);
    if (s && !s->current) s->hooked = NULL;       /* the script may replace it: look again */
    return !s || !s->current;
}

int sched_pcall(sched_t *s, lua_State *L, int nargs, int nres, double seconds,
                sched_error_t *err) {
    int fn = lua_gettop(L) - nargs;               /* sched_msgh is at fn - 1 */
    task_t *outer = s->current, *h = &s->hook;
    /* a hook may run inside a hook: keep the outer one's bound */
    double saved_deadline = h->deadline, saved_slice = h->slice_end, saved_time = h->limits.time;
    double saved_cap = h->deadline_cap;
    int saved_expired = h->expired;
    double start = outer == h ? loop_now() : 0;
    /* the deadline starts at the hook's first look (no clock read per
     * call); it never passes the deadline of the task it serves */
    h->deadline = 0;
    h->limits.time = seconds;
    h->deadline_cap = outer && outer != h ? outer->deadline : 0;
    h->expired = 0;
    h->slice_end = 0;
    /* the hook stays on a thread that had none (it does nothing while no
     * task or hook runs; s->hooked remembers it): no lua_sethook per call */
    lua_Hook oh = sched_hook;
    int omask = LUA_MASKCOUNT, ocount = TASK_HOOK_COUNT;
    if (L != s->hooked) {
        oh = lua_gethook(L);
        omask = lua_gethookmask(L);
        ocount = lua_gethookcount(L);
        if (!oh || oh == sched_hook) {
            oh = sched_hook; omask = LUA_MASKCOUNT; ocount = TASK_HOOK_COUNT;
            if (L == s->L) s->hooked = L;         /* the main thread never goes away */
        }
        lua_sethook(L, sched_hook, LUA_MASKCOUNT, TASK_HOOK_COUNT);
    }
    /* the thread it runs on: a refused allocation arms the hook there (a
     * finalizer's loop that allocates read the clock only every
     * TASK_HOOK_COUNT instructions: seconds past its bound, a review) */
    lua_State *saved_co = h->co;
    h->co = L;
    s->current = h;
    s->hook_depth++;
    int status = lua_pcall(L, nargs, nres, fn - 1);
    s->hook_depth--;
    s->current = outer;
    h->co = saved_co;
    h->deadline = saved_deadline;
    h->slice_end = saved_slice;
    h->limits.time = saved_time;
    h->deadline_cap = saved_cap;
    int killed = h->expired;
    h->expired = saved_expired;
    if (killed) s->hook_time_hits++;
    /* a hook inside a hook (a predicate the resolver calls) has its own
     * bound: the time it took is not the outer one's */
    if (outer == h && h->deadline > 0) h->deadline += loop_now() - start;
    if (oh != sched_hook || killed) lua_sethook(L, oh, omask, ocount);   /* theirs, or re-armed by a kill */
    /* a hook the task's own deadline stopped (deadline_cap): the task is
     * past it too, and ends now, not with what it did after (an attack
     * round: a describe answered OK with the names before the deadline) */
    if (killed && outer && outer != h && outer->deadline > 0 && loop_now() > outer->deadline) {
        outer->expired = 1;
        if (outer->co) lua_sethook(outer->co, sched_hook, LUA_MASKCOUNT, 1);
    }
    if (status == LUA_OK && killed) {
        /* the kill caught in tail position (see s_resume): it stands */
        lua_settop(L, fn - 2);
        sched_error_set(err, "TimeoutError", "the hook ran past max_hook_time");
        return LUA_ERRRUN;
    }
    if (status == LUA_OK) {
        lua_remove(L, fn - 1);                    /* the message handler */
        return LUA_OK;
    }
    if (status == LUA_ERRMEM) {
        sched_error_set(err, "MemoryError", "not enough memory");
    } else if (status == LUA_ERRERR || !lua_istable(L, -1)) {
        sched_error_set(err, "LuaError", "(the error value could not be described)");
    } else {
        sched_error_set(err, "LuaError", "");
        sched_error_field(L, lua_gettop(L), "name", err->name, sizeof err->name);
        sched_error_field(L, lua_gettop(L), "message", err->message, sizeof err->message);
        sched_error_field(L, lua_gettop(L), "traceback", err->traceback, sizeof err->traceback);
    }
    lua_settop(L, fn - 2);
    return status;
}
