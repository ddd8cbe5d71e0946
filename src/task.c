/*
 * task: the scheduler (see task.h): run queues, tasks, waiting, and the
 * coroutines a task runs. What bounds a task (allocator, count hook, kills,
 * sched_pcall, error values) is in task_limits.c; task_internal.h is what
 * the two share.
 *
 * Tasks are pooled coroutines with their task_t in the thread's extra space.
 * A coroutine that returned is reused as it is; one that raised is closed
 * (lua_resetthread) and dropped. Nothing here resumes a task from anywhere
 * but sched_run (and task_spawn from the main chunk, which is at the top of
 * the loop by definition), so a resume never nests in another.
 *
 * The limits follow the running task, not the thread: s->current is the task
 * (or the synchronous hook) whose limits apply, the count hook is set on
 * every thread it runs (task_resume_nested sets it on a coroutine it
 * resumes; new coroutines inherit it from their creator), and the allocator
 * counts into s->current wherever the allocation comes from.
 */
#include "task.h"
#include "task_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>

#include <lauxlib.h>

#define POOL_MAX   256            /* idle tasks kept */

task_t *task_current(lua_State *L) {
    task_t *t = *(task_t **)lua_getextraspace(L);
    return t && t->co == L ? t : NULL;
}

int sched_stack_room(const sched_t *s) {
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    return here >= s->stack_base || s->stack_base - here < s->stack_budget;
}

int sched_init(sched_t *s, lua_State *L, loop_t *loop, const sched_ops_t *ops) {
    memset(s, 0, sizeof *s);
    /* half the thread's stack below here: the rlimit's size (what glibc
     * gives a thread too), at most 8 MiB; without one, glibc's 2 MiB */
    struct rlimit rl;
    size_t stack = 8u << 20;
    if (getrlimit(RLIMIT_STACK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) stack = 2u << 20;
    else if (rl.rlim_cur < stack) stack = (size_t)rl.rlim_cur;
    s->stack_base = (uintptr_t)__builtin_frame_address(0);
    s->stack_budget = stack / 2;
    s->L = L;
    s->loop = loop;
    s->ops = *ops;
    s->max_hook_time = 1;
    s->max_spawned = TASK_SPAWNED_MAX;
    s->pass_end = -1;                             /* not in sched_run */
    s->hook.result = LUA_NOREF;
    s->pool = calloc(POOL_MAX, sizeof *s->pool);
    if (!s->pool) return -1;
    sched_limits_init(s, L);                      /* allocator, hook, killed set */
    return 0;
}

void sched_close(sched_t *s) {
    if (s->alloc) {                               /* what is freed from now on: theirs */
        lua_setallocf(s->L, s->alloc, s->alloc_ud);
        s->alloc = NULL;
    }
    for (int i = 0; i < s->npool; i++) {          /* threads: the GC's */
        free(s->pool[i]->work.ids);
        free(s->pool[i]);
    }
    s->npool = 0;
    free(s->pool);
    s->pool = NULL;
    /* tasks still running when the state closes (a spawned task that spins
     * past the end, its limit not yet reached): their threads are the GC's,
     * their records ours */
    for (task_t *t = s->live, *next; t; t = next) {
        next = t->live_next;
        free(t->work.ids);
        free(t);
    }
    s->live = NULL;
    s->ntasks = 0;
    task_calls_close(s);
}

/* --- the run queue --- */

/* Two queues: woken tasks and new WORK (q = 0) run before preempted and
 * spawned ones (q = 1), so a caller waits behind a crowd of spinning tasks
 * for about one slice, not one slice each (sched_run). */
static void s_enqueue_on(sched_t *s, task_t *t, int q) {
    if (t->queued) return;
    t->queued = 1 + q;
    t->run_next = NULL;
    if (s->tail[q]) s->tail[q]->run_next = t; else s->head[q] = t;
    s->tail[q] = t;
}

static void s_enqueue(sched_t *s, task_t *t) { s_enqueue_on(s, t, 0); }

/* Ahead of the rest of q0, behind the tasks queued so before it: WORK from
 * a peer with no other call in progress, so a probe's call does not wait
 * behind the calls one flooding peer has queued (s->front: the last of them
 * still queued). */
static void s_enqueue_front(sched_t *s, task_t *t) {
    if (t->queued) return;
    t->queued = 1;
    task_t *after = s->front;
    if (after) {
        t->run_next = after->run_next;
        after->run_next = t;
    } else {
        t->run_next = s->head[0];
        s->head[0] = t;
    }
    if (s->tail[0] == after) s->tail[0] = t;
    s->front = t;
}

/* At the very head of q0 (part of the front segment): an expired task,
 * which dies at its first instruction. */
static void s_enqueue_head(sched_t *s, task_t *t) {
    if (t->queued) return;
    t->queued = 1;
    t->run_next = s->head[0];
    s->head[0] = t;
    if (!s->tail[0]) s->tail[0] = t;
    if (!s->front) s->front = t;
}

/* A task woken from a wait: ahead of the queue when its call is its peer's
 * only one in progress, as that peer's new call would be; else at its back
 * (a peer with many calls waits its turn behind the others). */
static void s_enqueue_woken(sched_t *s, task_t *t) {
    if (t->work.owner && s->ops.alone && s->ops.alone(s->ops.ctx, t)) s_enqueue_front(s, t);
    else s_enqueue(s, t);
}

static task_t *s_dequeue(sched_t *s, int q) {
    task_t *t = s->head[q];
    s->head[q] = t->run_next;
    if (!s->head[q]) s->tail[q] = NULL;
    if (s->front == t) s->front = NULL;       /* the front ones are all taken */
    t->queued = 0;
    return t;
}

/* The first task behind the front ones (s->front is set and has one). */
static task_t *s_dequeue_after_front(sched_t *s) {
    task_t *f = s->front, *t = f->run_next;
    f->run_next = t->run_next;
    if (s->tail[0] == t) s->tail[0] = f;
    t->queued = 0;
    return t;
}

static void s_unqueue(sched_t *s, task_t *t) {
    if (!t->queued) return;
    int q = t->queued - 1;
    task_t **at = &s->head[q], *prev = NULL;
    while (*at != t) { prev = *at; at = &(*at)->run_next; }
    *at = t->run_next;
    if (s->tail[q] == t) s->tail[q] = prev;
    if (s->front == t) s->front = prev;       /* front tasks lead q0: prev is one, or NULL */
    t->queued = 0;
}

int sched_ready(const sched_t *s) {
    return s->head[0] || s->head[1];
}

/* --- tasks --- */

task_t *task_new(sched_t *s, lua_State *L) {
    task_t *t;
    if (s->npool > 0) {
        t = s->pool[--s->npool];
    } else {
        lua_State *co = lua_newthread(L);              /* may raise: nothing held yet */
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);      /* pops the thread */
        t = calloc(1, sizeof *t);
        if (!t) {
            luaL_unref(L, LUA_REGISTRYINDEX, ref);
            luaL_error(L, "not enough memory");
        }
        t->co = co;
        t->co_ref = ref;
        t->sched = s;
        *(task_t **)lua_getextraspace(co) = t;
    }
    void *ids = t->work.ids;
    size_t cap = t->work.ids_cap;
    memset(&t->work, 0, sizeof t->work);
    t->work.ids = ids;
    t->work.ids_cap = cap;
    t->wait = TASK_RUNNING;
    t->nargs = 0;
    t->queued = 0;
    t->expired = t->stopped = t->stop_deadline = 0;
    t->describing = 0;
    t->timer = t->deadline_timer = NULL;
    t->future = NULL;
    t->deadline = 0;
    t->mem_net = 0;
    t->limits.time = t->limits.memory = 0;
    t->result = LUA_NOREF;
    t->spawned = t->deferred = 0;
    t->live_prev = NULL;
    t->live_next = s->live;
    if (s->live) s->live->live_prev = t;
    s->live = t;
    s->ntasks++;
    return t;
}

void task_free(sched_t *s, lua_State *L, task_t *t) {
    if (t->expired && !t->stop_deadline) s->time_hits++;   /* its time limit killed it */
    s_unqueue(s, t);
    task_calls_remove(s, t);
    if (t->live_prev) t->live_prev->live_next = t->live_next; else s->live = t->live_next;
    if (t->live_next) t->live_next->live_prev = t->live_prev;
    if (t->work.owner) {
        s->ops.release(s->ops.ctx, L, t);
        t->work.owner = NULL;
        s->nanswering--;
    }
    if (t->result != LUA_NOREF) { luaL_unref(L, LUA_REGISTRYINDEX, t->result); t->result = LUA_NOREF; }
    if (t->spawned) { t->spawned = 0; s->nspawned--; }
    if (t->deferred) { t->deferred = 0; s->ndeferred--; }
    if (t->timer) { loop_cancel_timer(s->loop, t->timer); t->timer = NULL; }
    if (t->deadline_timer) { loop_cancel_timer(s->loop, t->deadline_timer); t->deadline_timer = NULL; }
    t->future = NULL;
    t->wait = TASK_RUNNING;
    int status = lua_status(t->co);
    /* Only a coroutine that returned is reused. One a limit stopped keeps
     * hooks off for good (5.4.4): it is dropped, its __close handlers never
     * run. One that raised runs them under max_hook_time; one still
     * suspended (the stop) under a deadline already past: their Lua is
     * stopped at once. */
    int reusable = status == LUA_OK && !t->expired;   /* s_resume: a kill it caught in tail position */
    if (status != LUA_OK && !t->expired) {
        task_t *outer = s->current;
        if (status == LUA_YIELD) {
            t->expired = 1;
        } else {
            t->deadline = loop_now() + (s->max_hook_time > 0 ? s->max_hook_time : 1);
        }
        s->current = t;
        lua_sethook(t->co, sched_hook, LUA_MASKCOUNT, t->expired ? 1 : TASK_HOOK_COUNT);
        lua_resetthread(t->co);
        s->current = outer;
    }
    lua_settop(t->co, 0);
    s->ntasks--;
    if (reusable && s->npool < POOL_MAX) {
        s->pool[s->npool++] = t;
    } else {
        *(task_t **)lua_getextraspace(t->co) = NULL;
        luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
        free(t->work.ids);
        free(t);
    }
}

static void s_on_deadline(loop_t *loop, loop_timer_t *timer, void *arg) {
    (void)loop; (void)timer;
    task_t *t = arg;
    t->deadline_timer = NULL;
    task_expire(t->sched, t);
}

void task_expire(sched_t *s, task_t *t) {
    t->expired = 1;
    int waits = t->wait == TASK_WAIT_SLEEP || t->wait == TASK_WAIT_FUTURE;
    if (waits) {
        /* it waits: wake it so its wait raises its error */
        if (t->timer) { loop_cancel_timer(s->loop, t->timer); t->timer = NULL; }
        t->future = NULL;
        t->wait = TASK_RUNNING;
    }
    if (t->queued) s_unqueue(s, t);          /* woken or preempted: behind others' work */
    else if (!waits) return;                 /* running: the hook sees `expired` */
    /* ahead of the rest: it dies at its first instruction, so its error
     * leaves now, not when a long queue would reach it */
    s_enqueue_head(s, t);
}

void task_stop(sched_t *s, task_t *t) {
    t->stopped = 1;
    double now = loop_now(), grace = s->max_hook_time > 0 ? s->max_hook_time : 1;
    /* seconds left of its time limit (from now if it has not run yet:
     * s_resume arms that only for a task without a deadline), or -1 */
    double left = t->deadline > 0 ? t->deadline - now : t->limits.time > 0 ? t->limits.time : -1;
    if (t->deadline > 0 && left <= grace) {
        /* its own deadline comes first */
    } else {
        int by_limit = left >= 0 && left <= grace;
        double in = by_limit ? left : grace;
        t->stop_deadline = !by_limit;
        t->deadline = now + in;
        if (t->deadline_timer) loop_cancel_timer(s->loop, t->deadline_timer);
        /* NULL (no memory): the hook still stops it while it runs */
        t->deadline_timer = loop_add_timer(s->loop, in, s_on_deadline, t);
    }
    if (t->wait == TASK_WAIT_SLEEP || t->wait == TASK_WAIT_FUTURE) {
        /* it waits: woken, its wait raises PeerLostError; in its turn, not
         * ahead of other peers' work */
        if (t->timer) { loop_cancel_timer(s->loop, t->timer); t->timer = NULL; }
        t->future = NULL;
        t->wait = TASK_RUNNING;
        s_enqueue(s, t);
    }
}

void task_start(sched_t *s, task_t *t, int nargs, const task_limits_t *limits, int first) {
    t->nargs = nargs;
    t->limits = *limits;
    if (t->work.owner) {
        s->nanswering++;
        task_calls_add(s, t);
    }
    if (first) s_enqueue_front(s, t); else s_enqueue(s, t);
}

/* The task ended with an error: settle its future or answer its WORK. */
static void s_task_error(sched_t *s, lua_State *L, task_t *t, const sched_error_t *err) {
    if (t->result != LUA_NOREF) {
        if (lua_checkstack(L, 4)) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, t->result);
            task_push_error(L, err->name, err->message, err->traceback);
            future_settle(s, L, -2, FUTURE_FAILED);
            lua_pop(L, 1);
        }
    } else if (t->work.owner) {
        s->ops.answer_error(s->ops.ctx, t, err->name, err->message, err->traceback);
    }
}

/* A describing task returned the message of the error it describes: the
 * traceback of the failed task waits at index 1 of its stack. */
static void s_described(sched_t *s, lua_State *L, task_t *t, int nres) {
    sched_error_t err;
    size_t n = 0;
    /* lua_resume's nres of a finished coroutine counts its whole stack,
     * the traceback at index 1 included: the first result is at index 2 */
    const char *message = nres > 1 && lua_type(t->co, 2) == LUA_TSTRING
                        ? lua_tolstring(t->co, 2, &n) : NULL;
    sched_error_set(&err, "LuaError", "(the error value's __tostring did not return a string)");
    if (message) sched_error_copy(err.message, sizeof err.message, message, n);
    const char *tb = lua_tostring(t->co, 1);
    snprintf(err.traceback, sizeof err.traceback, "%s\n%s", err.message, tb ? tb : "");
    s_task_error(s, L, t, &err);
}

/* The task returned `nres` values on its stack. */
static void s_task_done(sched_t *s, lua_State *L, task_t *t, int nres) {
    lua_State *co = t->co;
    if (t->describing) {
        s_described(s, L, t, nres);
    } else if (t->result != LUA_NOREF) {           /* spawn: settle its future */
        if (lua_checkstack(L, 4)) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, t->result);
            if (nres > 0) {                        /* its first value */
                lua_pushvalue(co, -nres);
                lua_xmove(co, L, 1);
            } else {
                lua_pushnil(L);
            }
            future_settle(s, L, -2, FUTURE_OK);
            lua_pop(L, 1);
        }
    } else if (t->work.owner) {
        s->ops.answer_ok(s->ops.ctx, t, co, lua_gettop(co) - nres + 1, nres);
    }
    task_free(s, L, t);
}

/* Under lua_pcall: (task t, error value) -> a new task that runs the value's
 * __tostring as its body, preemptible like any task, bounded by
 * max_hook_time; it takes over what t owes. The traceback is taken now. */
static int s_describe_later(lua_State *L) {
    task_t *t = lua_touserdata(L, 1);
    sched_t *s = t->sched;
    luaL_traceback(L, t->co, NULL, 0);
    luaL_getmetafield(L, 2, "__tostring");
    lua_pushvalue(L, 2);
    task_t *d = task_new(s, L);                   /* the last that may raise */
    if (!lua_checkstack(d->co, 4)) {
        task_free(s, L, d);
        return luaL_error(L, "not enough memory");
    }
    lua_xmove(L, d->co, 3);                       /* traceback, __tostring, value */
    task_calls_remove(s, t);                      /* keyed by the work it hands over */
    task_work_t w = d->work;                      /* swap: d answers, t keeps a buffer */
    d->work = t->work;
    t->work = w;
    d->result = t->result;
    t->result = LUA_NOREF;
    d->describing = 1;
    d->stopped = t->stopped;                      /* a stopped call's end is not answered */
    if (d->work.owner) s->nanswering--;           /* counted again by task_start */
    task_limits_t limits = { s->max_hook_time, t->limits.memory };
    task_start(s, d, 1, &limits, 0);
    s_unqueue(s, d);
    s_enqueue_on(s, d, 1);                        /* a __tostring may spin: behind callers */
    return 0;
}

/* Does the error value on top of co need Lua (a __tostring) to be told? */
static int s_needs_tostring(lua_State *co) {
    if (lua_type(co, -1) == LUA_TSTRING || sched_is_error(co, -1)) return 0;
    if (luaL_getmetafield(co, -1, "__tostring") == LUA_TNIL) return 0;
    lua_pop(co, 1);
    return 1;
}

/* The task raised: error value on top of its stack, `status` from lua_resume.
 * It is answered (or its future settled, or a describing task takes that
 * over) and freed on every path. No Lua runs here: a __tostring runs in a
 * task of its own, so a slow one is preempted like a handler. */
static void s_task_failed(sched_t *s, lua_State *L, task_t *t, int status) {
    sched_error_t err;
    sched_error_set(&err, "MemoryError", "not enough memory");
    if (t->describing) {
        sched_error_set(&err, "LuaError", "(the error value could not be turned into a message)");
    } else if (status != LUA_ERRMEM && lua_checkstack(L, 8) && lua_checkstack(t->co, 2)) {
        if (s_needs_tostring(t->co)) {
            lua_pushcfunction(L, s_describe_later);
            lua_pushlightuserdata(L, t);
            lua_xmove(t->co, L, 1);
            if (lua_pcall(L, 2, 0, 0) == LUA_OK) {
                task_free(s, L, t);
                return;
            }
            lua_pop(L, 1);                        /* memory: answered MemoryError */
        } else {
            lua_pushcfunction(L, sched_msgh);
            lua_pushcfunction(L, sched_describe); /* runs no Lua for these values */
            lua_xmove(t->co, L, 1);
            lua_pushthread(t->co);
            lua_xmove(t->co, L, 1);
            /* bounded all the same: what it runs is the script's to change */
            if (sched_pcall(s, L, 2, 1, s->max_hook_time, &err) == LUA_OK) {
                int e = lua_gettop(L);
                sched_error_field(L, e, "name", err.name, sizeof err.name);
                sched_error_field(L, e, "message", err.message, sizeof err.message);
                sched_error_field(L, e, "traceback", err.traceback, sizeof err.traceback);
                lua_pop(L, 1);
            }
        }
    }
    s_task_error(s, L, t, &err);
    task_free(s, L, t);
}

/* Resume t; 1 when it used up its slice (preempted, queued again). */
static int s_resume(sched_t *s, lua_State *L, task_t *t) {
    int nargs = t->nargs, nres = 0;
    t->nargs = 0;
    t->wait = TASK_RUNNING;
    t->slice_end = 0;              /* the hook starts the slice: no clock read per call */
    if (t->limits.time > 0) {      /* its time runs from its first resume, not its queueing */
        double now = loop_now();
        if (t->deadline == 0) {
            t->deadline = now + t->limits.time;
            /* NULL (no memory): the hook still stops it while it runs */
            t->deadline_timer = loop_add_timer(s->loop, t->limits.time, s_on_deadline, t);
        } else if (!t->expired && now > t->deadline) {
            t->expired = 1;
        }
    }
    /* checked on every resume: nothing the script did to the hook survives */
    int count = t->expired ? 1 : TASK_HOOK_COUNT;
    if (lua_gethook(t->co) != sched_hook || lua_gethookcount(t->co) != count)
        lua_sethook(t->co, sched_hook, LUA_MASKCOUNT, count);
    s->current = t;
    s->nested = NULL;
    int status = lua_resume(t->co, L, nargs, &nres);
    s->current = NULL;
    s->preempting = NULL;
    if (status == LUA_YIELD) {
        lua_pop(t->co, nres);
        if (t->wait == TASK_PREEMPTED) {          /* back of the line */
            s->preemptions++;
            s_enqueue_on(s, t, 1);
            return 1;
        }
        if (t->wait != TASK_RUNNING) return 0;     /* parked on a future or a sleep */
        lua_pushliteral(t->co, "a handler yielded outside pseud "
                        "(use pseud.sleep or a future's :get(), not coroutine.yield)");
        status = LUA_ERRRUN;
    }
    if (status == LUA_OK && t->expired) {
        /* killed, and the kill caught where no instruction came after to
         * raise it again: `return coroutine.close(co)` whose __close spun,
         * `return load(reader)` (an attack round: answered OK at the limit) */
        sched_error_t err;
        if (t->describing) sched_error_set(&err, "LuaError", "(the error value could not be turned into a message)");
        else task_stop_error(s, t, &err);
        s_task_error(s, L, t, &err);
        task_free(s, L, t);
        return 0;
    }
    if (status == LUA_OK) s_task_done(s, L, t, nres);
    else s_task_failed(s, L, t, status);
    return 0;
}

int sched_run(sched_t *s, lua_State *L) {
    if (s->fin_tail > s->fin_head && s->start_finalizers) s->start_finalizers(s, L);
    int n = 0, sliced = 0;
    task_t *last = s->tail[0];     /* tasks queued while these run wait for the next pass */
    /* A pass ends after one slice of all its tasks' time, as after one
     * task's: calls of 9 ms each are never preempted, and 256 of them held
     * the loop 2.3 s before it read the next caller. The clock is read by
     * the hook (every TASK_HOOK_COUNT instructions), not per task. Before it
     * ends, the first task behind the front segment gets its turn: each
     * turn's calls from idle peers go ahead of the rest again, and a pass
     * that stopped among those would leave busy peers' calls (and woken
     * handlers of busy peers) behind them for good. */
    s->pass_end = 0;
    s->pass_over = 0;
    int ran_rest = 0;
    while (s->head[0]) {
        task_t *t;
        int in_front;
        /* time is up (one task's slice, or all of theirs): the rest (behind
         * the front) still gets one task each pass; an expired task at the
         * head costs one instruction and goes first regardless */
        if ((sliced || s->pass_over) && !s->head[0]->expired) {
            if (ran_rest || (s->front && !s->front->run_next)) break;
            in_front = 0;
            t = s->front ? s_dequeue_after_front(s) : s_dequeue(s, 0);
        } else {
            in_front = s->front != NULL;       /* front tasks lead q0 */
            t = s_dequeue(s, 0);
        }
        int was_last = t == last;
        sliced |= s_resume(s, L, t);  /* it ran a whole slice: the rest after I/O */
        n++;
        if (!in_front) ran_rest = 1;
        if (was_last) break;
    }
    s->pass_end = -1;              /* outside a pass: the hook leaves it alone */
    if (sliced) s->pass_over = 1;  /* one pass on its time, then I/O (host.c) */
    /* then one slice of a preempted or spawned task, then I/O; after a pass
     * that sliced, every other time: delayed, never starved */
    if (s->head[1] && (!sliced || s->q1_skipped)) {
        s->q1_skipped = 0;
        s_resume(s, L, s_dequeue(s, 1));
        n++;
    } else if (s->head[1]) {
        s->q1_skipped = 1;
    }
    return n;
}

int sched_abandon(sched_t *s, lua_State *L, const char *name, const char *message) {
    int n = 0;
    task_t *t = s->live, *next;
    for (; t; t = next) {
        next = t->live_next;
        if (!t->work.owner) continue;
        s->ops.answer_error(s->ops.ctx, t, name, message, "");
        task_free(s, L, t);
        n++;
        next = s->live;            /* freeing may close other tasks' coroutines: start over */
    }
    return n;
}

int sched_detach_owned(sched_t *s, lua_State *L, const void *owner, const char *name, const char *message) {
    int n = 0;
    for (task_t *t = s->live; t; t = t->live_next) {
        if (t->work.owner != owner) continue;
        s->ops.answer_error(s->ops.ctx, t, name, message, "");
        s->ops.release(s->ops.ctx, L, t);
        task_calls_remove(s, t);                  /* keyed by its owner */
        t->work.owner = NULL;
        s->nanswering--;
        n++;
    }
    return n;
}

/* --- waiting --- */

/* Only the running task parks: a task's coroutine resumed from elsewhere
 * (Lua's own coroutine.resume, kept by a stock-lua script) must not. */
static void s_check_parkable(lua_State *L, task_t *t) {
    if (t != t->sched->current || t->timer || t->wait != TASK_RUNNING)
        luaL_error(L, "cannot wait here: this handler's coroutine was resumed outside pseud");
}

int task_wait_future(lua_State *L, int f, lua_KFunction k) {
    task_t *t = task_current(L);
    lfuture_t *fu = lua_touserdata(L, f);
    s_check_parkable(L, t);
    task_check_deadline(L);                       /* stopped: no wait, its caller is gone */
    if (!lua_isyieldable(L))
        return luaL_error(L, "cannot wait here: inside a C call that cannot yield "
                          "(a metamethod, string.gsub or table.sort callback, ...)");
    if (lua_getiuservalue(L, f, 2) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, f, 2);
    }
    lua_pushthread(L);
    lua_rawseti(L, -2, ++fu->nwaiters);
    lua_pop(L, 1);
    t->wait = TASK_WAIT_FUTURE;
    t->future = fu;
    return lua_yieldk(L, 0, 0, k);
}

static void s_on_sleep_done(loop_t *loop, loop_timer_t *timer, void *arg) {
    (void)loop; (void)timer;
    task_t *t = arg;
    t->timer = NULL;
    if (t->wait == TASK_WAIT_SLEEP) s_enqueue_woken(t->sched, t);
}

int task_sleep(lua_State *L, double seconds, lua_KFunction k) {
    task_t *t = task_current(L);
    s_check_parkable(L, t);
    task_check_deadline(L);                       /* stopped: no wait, its caller is gone */
    if (!lua_isyieldable(L))
        return luaL_error(L, "cannot sleep here: inside a C call that cannot yield");
    t->timer = loop_add_timer(t->sched->loop, seconds, s_on_sleep_done, t);
    if (!t->timer) return luaL_error(L, "not enough memory");
    t->wait = TASK_WAIT_SLEEP;
    return lua_yieldk(L, 0, 0, k);
}

void task_check_deadline(lua_State *L) {
    task_t *t = task_current(L);
    if (t && (t->expired || t->stopped)) {
        task_push_stop(L, t->sched, t);
        lua_error(L);
    }
}

/* A task given the function and `nargs` arguments on top of L, its future
 * `result` (or LUA_NOREF); NULL when its stack cannot take them (the task
 * and `result` let go). The caller counts it (spawned or deferred). */
static task_t *s_new_loaded(sched_t *s, lua_State *L, int nargs, int result) {
    task_t *t = task_new(s, L);
    t->result = result;
    if (!lua_checkstack(t->co, nargs + 1)) {
        task_free(s, L, t);                       /* unrefs the future */
        return NULL;
    }
    lua_xmove(L, t->co, nargs + 1);
    return t;
}

static int s_at_max_spawned(const sched_t *s) {
    return s->max_spawned > 0 && s->nspawned >= s->max_spawned;
}

int task_defer(sched_t *s, lua_State *L, int nargs, double seconds, double memory) {
    if (s->ndeferred >= TASK_DEFERRED_MAX) return -1;
    task_t *t = s_new_loaded(s, L, nargs, LUA_NOREF);
    if (!t) return -1;
    t->deferred = 1;                              /* not pseud.spawn's: max_tasks is its */
    s->ndeferred++;
    task_limits_t limits = { seconds, memory };
    task_start(s, t, nargs, &limits, 0);
    s_unqueue(s, t);
    s_enqueue_on(s, t, 1);                        /* behind callers, as spawned tasks */
    return 0;
}

void task_spawn(sched_t *s, lua_State *L, int nargs) {
    /* stack: fn, args..., future (on top) */
    /* a handler that spawns two that each spawn two... (an attack round:
     * 132,000 tasks and 263 MB in 3 s, on to the end of memory) */
    if (s_at_max_spawned(s))
        luaL_error(L, "pseud.spawn: %d tasks spawned and still alive (max_tasks): no more", s->nspawned);
    lua_pushvalue(L, -1);
    int result = luaL_ref(L, LUA_REGISTRYINDEX);  /* the future, pinned until settled */
    lua_insert(L, -(nargs + 2));                  /* future below fn: returned */
    task_t *t = s_new_loaded(s, L, nargs, result);
    if (!t) luaL_error(L, "too many arguments (%d)", nargs);
    t->spawned = 1;                               /* counted against max_tasks */
    s->nspawned++;
    task_limits_t none = { 0, 0 }, hook = { s->max_hook_time, 0 };
    task_t *parent = s->current;
    if (parent == &s->hook && s->main_chunk) parent = NULL;   /* a reload: the top level */
    task_start(s, t, nargs, parent == &s->hook ? &hook : parent ? &parent->limits : &none, 0);
    s_unqueue(s, t);
    if (!parent && s->hook_depth == 0)             /* (an endpoint callback runs in a hook) */
        s_resume(s, L, t);                        /* the main chunk: run it now */
    else
        s_enqueue_on(s, t, 1);                    /* behind callers, as preempted tasks */
}

void future_settle(sched_t *s, lua_State *L, int f, int state) {
    luaL_checkstack(L, 4, "too many nested waits");
    f = lua_absindex(L, f);
    lfuture_t *fu = lua_touserdata(L, f);
    lua_setiuservalue(L, f, 1);                   /* pops the value */
    fu->state = state;
    fu->call = NULL;
    int n = fu->nwaiters;
    if (n == 0) return;
    fu->nwaiters = 0;
    lua_getiuservalue(L, f, 2);                   /* the waiting threads */
    lua_pushnil(L);
    lua_setiuservalue(L, f, 2);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_State *co = lua_tothread(L, -1);
        lua_pop(L, 1);
        task_t *t = co ? task_current(co) : NULL;
        /* only a task still parked on this very future: a stale entry (its
         * task moved on, or was reused from the pool) wakes nothing */
        if (t && t->wait == TASK_WAIT_FUTURE && t->future == fu) {
            t->future = NULL;
            s_enqueue_woken(s, t);
        }
    }
    lua_pop(L, 1);
}

/* --- coroutines a task runs --- */

void task_cover(lua_State *L, lua_State *co) {
    sched_t *s = sched_of(L);
    task_t *t = s ? s->current : NULL;
    if (t) lua_sethook(co, sched_hook, LUA_MASKCOUNT, t->expired ? 1 : TASK_HOOK_COUNT);
}

int task_resume_nested(lua_State *L, lua_State *co, int nargs, int *nres) {
    sched_t *s = sched_of(L);
    task_t *t = s ? s->current : NULL;
    if (!t) return lua_resume(co, L, nargs, nres);
    for (;;) {
        /* a coroutine made anywhere runs under the running task's limits */
        lua_sethook(co, sched_hook, LUA_MASKCOUNT, t->expired ? 1 : TASK_HOOK_COUNT);
        lua_State *outer = s->nested;
        s->nested = co;
        int status = lua_resume(co, L, nargs, nres);
        s->nested = outer;
        if (status != LUA_YIELD || s->preempting != co) return status;
        /* the task's slice ended inside co: pass the yield up to the loop
         * when every level can; else go on (the deadline still holds) */
        s->preempting = NULL;
        lua_pop(co, *nres);
        *nres = 0;
        nargs = 0;
        if (t != &s->hook && lua_isyieldable(L)) {
            if (L == t->co) { t->wait = TASK_PREEMPTED; return TASK_PASS_YIELD; }
            if (L == outer) { s->preempting = L; return TASK_PASS_YIELD; }
        }
    }
}
