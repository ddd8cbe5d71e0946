/*
 * task: the scheduler. Every piece of script code the host runs goes
 * through here, under limits:
 *   - tasks: handlers and pseud.spawn functions, each a pooled coroutine
 *     resumed with lua_resume from the top of the loop (sched_run), never
 *     from inside an endpoint callback. Woken tasks (a future settled, a
 *     sleep ended, a slice used up) go on a run queue.
 *   - synchronous calls (predicates, auth and heartbeat hooks, describing an
 *     error value): sched_pcall, one lua_pcall with a message handler,
 *     bounded by max_hook_time.
 * One count hook and one counting allocator enforce the limits for every
 * thread the running task (or hook) runs: coroutines it creates, resumes or
 * wraps included. Past its slice a task yields to the loop; past its time it
 * is killed with TimeoutError (the hook re-arms on every instruction so a
 * pcall cannot swallow it); past its memory Lua raises LUA_ERRMEM.
 *
 * It does not know endpoints: a task that answers a WORK carries what
 * dispatch.c put in `work`, and its end calls back into dispatch (sched_ops_t).
 *
 * Two files implement it: task.c (run queues, tasks, waiting, nested
 * coroutines) and task_limits.c (allocator, hook, kills, sched_pcall, error
 * values); task_internal.h is what they share.
 */
#ifndef PSEUD_TASK_H
#define PSEUD_TASK_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "endpoint.h"
#include "loop.h"

#define FUTURE_MT "pseud.Future"
#define ERROR_MT  "pseud.Error"

enum future_state { FUTURE_PENDING, FUTURE_OK, FUTURE_FAILED };

typedef struct lfuture {          /* userdata; uservalue 1: value, 2: waiting threads */
    int state;                    /* enum future_state */
    int nwaiters;                 /* entries in uservalue 2 */
    endpoint_call_t *call;        /* while pending on a call this host made */
} lfuture_t;

typedef struct task task_t;
typedef struct sched sched_t;


#define TASK_SPAWNED_MAX 100000   /* max_tasks by default: pseud.spawn tasks alive at once */
#define TASK_DEFERRED_MAX 64      /* task_defer's tasks (finalizers) alive at once */

typedef struct task_limits {
    double time;                  /* wall-clock seconds from its start; 0: unlimited */
    double memory;                /* bytes it may allocate, net; 0: unlimited */
} task_limits_t;

/* What a task that answers a WORK keeps (filled by dispatch.c). */
typedef struct task_work {
    void *owner;                  /* the endpoint its WORK came from; NULL: none */
    uint8_t uuid[FRAME_UUID_SIZE];
    char *ids;                    /* routing id, caller's user id, called name */
    size_t ids_cap;               /* bytes allocated at ids, kept across reuse */
    size_t peer_len, user_len, name_len;
    uint64_t serial;              /* its sender's directory entry, for the budget */
    size_t charged;               /* the bytes its WORK holds against that budget */
    void *metric;                 /* its name's metrics series (metrics_name_t), or NULL */
    int ship_metric;              /* a worker's: its outcome goes to the control's metrics */
    double started;               /* monotonic, when its WORK was taken (metrics, debug access line); 0: not kept */
} task_work_t;

struct task {
    lua_State *co;                /* its coroutine */
    int co_ref;                   /* pins co */
    sched_t *sched;
    int wait;                     /* why it is parked (enum task_wait, task_internal.h) */
    int nargs;                    /* values its next resume passes */
    int queued;                   /* on a run queue: 0 no, 1 woken or new, 2 preempted */
    int expired;                  /* past its deadline: killed at its next instruction */
    int stopped;                  /* its caller's connection closed: its waits raise PeerLostError */
    int stop_deadline;            /* its deadline is the stop's grace, not its time limit */
    task_t *call_next, *call_prev;/* its bucket in sched.calls, while indexed */
    int indexed;                  /* in sched.calls */
    int describing;               /* runs the __tostring of another task's error */
    loop_timer_t *timer;          /* its sleep */
    loop_timer_t *deadline_timer; /* wakes it at its deadline while it waits */
    lfuture_t *future;            /* what it waits for */
    double slice_end;             /* monotonic: past it, the hook yields; 0: not started */
    double deadline;              /* monotonic: past it, the hook kills it; 0: none */
    double mem_net;               /* bytes it allocated, net of what it freed */
    double deadline_cap;          /* the hook: the deadline of the task it serves, or 0 */
    task_limits_t limits;         /* its own; tasks it spawns get them too */
    int result;                   /* ref: the future a spawn settles, or LUA_NOREF */
    int spawned;                  /* pseud.spawn made it (counted in sched.nspawned) */
    int deferred;                 /* task_defer made it (counted in sched.ndeferred) */
    task_t *run_next;             /* run queue */
    task_t *live_prev, *live_next;/* every task alive */
    task_work_t work;
};

/* How tasks that answer a WORK end (dispatch.c). */
typedef struct sched_ops {
    void *ctx;
    /* the handler returned values first..first+nres-1 on co's stack */
    void (*answer_ok)(void *ctx, task_t *t, lua_State *co, int first, int nres);
    void (*answer_error)(void *ctx, task_t *t, const char *name, const char *message,
                         const char *traceback);
    /* the task lets go of work.owner */
    void (*release)(void *ctx, lua_State *L, task_t *t);
    /* woken from a wait: is its call its peer's only one in progress? (then
     * it goes ahead of the queue, as that peer's new call would); may be NULL */
    int (*alone)(void *ctx, const task_t *t);
} sched_ops_t;

/* An error from sched_pcall or a task, described (cut to fit). */
typedef struct sched_error {
    char name[64];
    char message[512];
    char traceback[1024];
} sched_error_t;

struct sched {
    lua_State *L;                 /* the main thread */
    loop_t *loop;
    lua_Alloc alloc;              /* the state's own allocator, which sched_alloc wraps */
    void *alloc_ud;
    task_t *current;              /* the task (or hook) whose limits apply now, or NULL */
    lua_State *nested;            /* the coroutine task_resume_nested resumed last */
    lua_State *preempting;        /* a coroutine the hook yielded for its task's sake */
    task_t hook;                  /* the limits of the synchronous call running now */
    int hook_depth;               /* sched_pcall nesting */
    size_t work_since_look;       /* bytes the running task allocated (or scanned: task_work_end)
                                     since the hook last looked */
    size_t work_pending;          /* task_work_begin's bound, until its task_work_end */
    lua_State *hooked;            /* a thread known to carry the hook, as sched_pcall wants it */
    task_t **pool;                /* idle tasks */
    int npool;
    task_t *head[2], *tail[2];    /* run queues: woken and new tasks, then preempted ones */
    task_t *front;                /* the last task queued ahead in q0 (a call from, or a woken
                                     handler of, a peer with no other call; an expired task), or NULL */
    task_t *live;                 /* every task alive */
    int ntasks;                   /* tasks alive */
    int nanswering;               /* of those, tasks that owe a WORK an answer */
    int in_callback;              /* an endpoint callback is running Lua (sched_pcall) */
    uintptr_t stack_base;         /* the C stack where sched_init ran (sched_stack_room) */
    size_t stack_budget;          /* how far below it the script's nesting may reach */
    double pass_end;              /* monotonic: sched_run's pass ends after the task past it
                                     (set by the hook's first look in the pass); 0: not yet,
                                     -1: not in sched_run */
    int pass_over;                /* the hook saw pass_end go by */
    int q1_skipped;               /* the last pass left the preempted queue waiting */
    double max_hook_time;         /* seconds a synchronous call may run; 0: unlimited */
    int max_spawned;              /* pseud.spawn tasks alive at once; 0: no bound */
    int ending;                   /* the script is over: the finalizers left run at once, and
                                     nothing waits in the loop any more (lpseud_task.c) */
    int closing;                  /* lua_close runs: finalizers run at once (lpseud_task.c) */
    double closing_end;           /* monotonic: past it, finalizers at the end are skipped */
    lua_Integer fin_head, fin_tail;   /* finalizers waiting for the loop (lpseud_task.c) */
    /* Starts waiting finalizers as tasks, at the top of sched_run: the
     * one place no binding code is halfway through its work. NULL: none. */
    void (*start_finalizers)(struct sched *s, lua_State *L);
    task_t **calls;               /* tasks answering a WORK, by (owner, serial) (task_calls.c) */
    size_t calls_mask;            /* buckets - 1; 0 with no table */
    size_t ncalls;                /* tasks in it */
    uint64_t calls_stopped;       /* tasks stopped by sched_stop_calls, ever */
    int nspawned;                 /* of the tasks alive, those pseud.spawn made */
    int ndeferred;                /* of the tasks alive, those task_defer made */
    int main_chunk;               /* the synchronous call is the script's top level (a reload):
                                     what it spawns gets no limits, as in the first run */
    sched_ops_t ops;
    /* counts for metrics, ever */
    uint64_t preemptions;         /* tasks that used up their slice and yielded */
    uint64_t time_hits;           /* tasks stopped past their time limit */
    uint64_t memory_hits;         /* allocations refused past a task's memory limit */
    uint64_t hook_time_hits;      /* synchronous calls stopped past max_hook_time */
};

/* Is there room on the C stack for more nesting that Lua does not count?
 * (Lua 5.4.4's lua_resetthread restarts its C-call count: a __close that
 * closes another coroutine, each level with its own resumes, overflowed
 * the stack.) Compares this frame's address with where sched_init ran, in
 * the thread that runs the state. */
int sched_stack_room(const sched_t *s);

/* Set up `s` for main thread L; installs the counting allocator. 0 or -1. */
int sched_init(sched_t *s, lua_State *L, loop_t *loop, const sched_ops_t *ops);
/* Free the pool and give L its own allocator back; safe twice. */
void sched_close(sched_t *s);

/* The scheduler of L's state, or NULL before sched_init. */
sched_t *sched_of(lua_State *L);
/* The task whose coroutine is L, or NULL (main chunk, a coroutine of its own). */
task_t *task_current(lua_State *L);

/* A task ready to start, its coroutine empty: push the function and its
 * `nargs` arguments onto t->co, then task_start. May raise (memory). */
task_t *task_new(sched_t *s, lua_State *L);
/* Queue `t` to run its function with `nargs` arguments under `limits`;
 * `first`: ahead of the new tasks queued so far (WORK from a peer with no
 * other call in progress), else behind them. */
void task_start(sched_t *s, task_t *t, int nargs, const task_limits_t *limits, int first);
/* A task for the function and `nargs` arguments on top of L (moved to it),
 * queued behind callers as a spawned task, never run here (a finalizer,
 * lpseud_task.c), under limits of `seconds` and `memory` bytes (0: none).
 * At most TASK_DEFERRED_MAX are alive at once, apart from max_tasks (a
 * burst of finalizers took pseud.spawn's room: a review). 0, or -1 (at
 * that bound; the values stay on L). May raise (memory). */
int task_defer(sched_t *s, lua_State *L, int nargs, double seconds, double memory);
/* Answer every task that owes `owner` (task_work_t.owner) an answer with
 * error `name`: `message` now, and let it run on, owing nothing (its
 * endpoint closes). Returns how many. */
int sched_detach_owned(sched_t *s, lua_State *L, const void *owner, const char *name, const char *message);
/* Stop every task answering a WORK that came from `owner`'s directory
 * entry `serial` (task_work_t): its caller's connection closed, so no
 * answer can reach it. A wait it is in, and any it starts later, raises
 * PeerLostError (an ordinary error: pcall and __close see it); one still
 * running past a grace of max_hook_time (1 s when unlimited) is killed as
 * its time limit would kill it. Tasks it spawned go on. Safe from inside
 * an endpoint callback: no Lua runs here. Returns how many. */
int sched_stop_calls(sched_t *s, const void *owner, uint64_t serial);
/* Give back a task that never started, or end one that waits (the stop):
 * answered first by the caller if it owes an answer. */
void task_free(sched_t *s, lua_State *L, task_t *t);

/* Resume the tasks queued now, from the top of the loop on thread L, until
 * they took a slice between them (then the first task behind the front, if
 * none of those ran yet, and any expired ones at the head), then one slice of
 * a preempted or spawned task (after a pass that sliced, every other time).
 * Returns how many ran; s->pass_over says the pass ended on its time, with
 * tasks left for after I/O. */
int sched_run(sched_t *s, lua_State *L);
/* Is a task waiting on the run queue? */
int sched_ready(const sched_t *s);

/* Call the function below `nargs` arguments on top of L, with sched_msgh
 * pushed below the function, under lua_pcall, bounded by `seconds` (0:
 * unlimited) of wall-clock time. LUA_OK leaves `nres` results (the handler
 * is removed); an error leaves nothing and describes itself in *err
 * (LUA_ERRMEM as MemoryError). Never raises; the caller has made room for
 * the call (lua_checkstack). */
int sched_pcall(sched_t *s, lua_State *L, int nargs, int nres, double seconds,
                sched_error_t *err);
/* The message handler sched_pcall expects: any error -> pseud.Error with a
 * traceback (a __tostring runs here, bounded). */
int sched_msgh(lua_State *L);

/* End every task that still owes an answer: answered ERROR name/message,
 * logged, its coroutine closed. Returns how many. */
int sched_abandon(sched_t *s, lua_State *L, const char *name, const char *message);

/* In a task: park until the future at `f` settles, then continue with k. */
int task_wait_future(lua_State *L, int f, lua_KFunction k);
/* In a task: park for `seconds`, then continue with k. */
int task_sleep(lua_State *L, double seconds, lua_KFunction k);
/* In a continuation: raise TimeoutError when the task's time is up. */
void task_check_deadline(lua_State *L);
/* pseud.spawn: stack fn, args..., future (on top) -> future. The task gets
 * the limits of the task that spawns it (none from the main chunk). From the
 * main chunk it runs at once until it first waits; else it is queued. */
void task_spawn(sched_t *s, lua_State *L, int nargs);

/* Settle the future at index `f` with the value on top (popped); the tasks
 * waiting on it are queued. */
void future_settle(sched_t *s, lua_State *L, int f, int state);

/* Push a new pseud.Error {name=, message=, traceback=}. May raise (memory). */
void task_push_error(lua_State *L, const char *name, const char *message, const char *traceback);

/* coroutine.resume as the host sees it: resumes co from L under the running
 * task's limits. Returns the lua_resume status, or TASK_PASS_YIELD when the
 * running task's slice ended inside co: the caller must yield L (with a
 * continuation that resumes co again). */
#define TASK_PASS_YIELD (-1)
/* Put the running task's limits on co before script code runs in it
 * (coroutine.close runs its __close handlers). */
void task_cover(lua_State *L, lua_State *co);
int task_resume_nested(lua_State *L, lua_State *co, int nargs, int *nres);

/* A C function is about to do at most `bytes` of work without allocating
 * (a scan, a sort), then did `bytes`: counted with what the running task
 * allocates, a MiB of both has its hook look at the clock at L's next
 * instruction. Work begun and never ended (the function raised) is
 * counted at the next begin. */
void task_work_begin(lua_State *L, size_t bytes);
void task_work_end(lua_State *L, size_t bytes);

/* 0 while a task or a synchronous hook runs: the host's hook must stay. */
int task_may_sethook(lua_State *L);

/* 1 while the running task (or hook) is being stopped by its time limit:
 * no script code may run for it (a message handler, a __close). */
int task_killing(lua_State *L);

/* May the coroutine at idx run its __close handlers (coroutine.close, the
 * error path of coroutine.wrap)? Not while the running task is being
 * stopped, nor for a thread a limit ended: Lua leaves its hooks off. */
int task_may_close(lua_State *L, int idx);

#endif
