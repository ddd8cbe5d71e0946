/*
 * dispatch: endpoint events into Lua. A WORK is checked, decoded, looked up
 * (registries, predicates) and becomes a task on the run queue; a reply
 * settles a future; heartbeat events reach the backend's hook; a task's end
 * becomes its reply. ZAP and HELLO decisions are in login.c.
 *
 * Every entry into Lua from here goes through dispatch_call: one lua_pcall
 * (sched_pcall: message handler, bounded by max_hook_time) on the thread
 * that runs the loop, which never raises. While it runs, the endpoint cannot
 * close under it (a close asked from a hook waits for the callback to end,
 * host_close_endpoint), so nothing here re-checks.
 */
#ifndef PSEUD_DISPATCH_H
#define PSEUD_DISPATCH_H

#include <stdint.h>

#include <lua.h>

#include "endpoint.h"
#include "task.h"

#define ENDPOINT_MT       "pseud.Endpoint"
#define ROUTES_MT         "pseud.Routes"
#define PASSWORD_CHECK_MT "pseud.PasswordCheck"

typedef struct host host_t;

/* The binding's endpoint userdata (lpseud_endpoint.c makes it; dispatch reads it). */
typedef struct lendpoint {
    endpoint_t *ep;               /* NULL once closed */
    host_t *host;
    int self_ref;                 /* pins the userdata while open or held */
    int registry;                 /* ref: local name -> callable table */
    int proxy_to;                 /* ref: another endpoint's userdata, or LUA_NOREF */
    int resolver;                 /* ref: picks a callable from a route list, or LUA_NOREF */
    int reserved;                 /* ref: its own '_pseud.*' names -> callable, or LUA_NOREF */
    int heartbeat_hook;           /* ref: fn(event, user_id, routing_id), or LUA_NOREF */
    int auth_gate;                /* ref: fn(user_id, routing_id, logged_in) -> ok, or LUA_NOREF */
    int hello_hook;               /* ref: fn(user_id, routing_id, login, password) -> ok, text */
    int holds;                    /* tasks and password checks that will answer through it */
    int in_gc;                    /* closing from __gc: run no Lua for its calls */
    int close_asked;              /* a hook asked to close it: done after the callback */
    struct lendpoint *close_next; /* host's list of those */
    double timeout;               /* seconds, for calls this endpoint makes */
    task_limits_t limits;         /* of its handlers (max_handler_time, max_handler_memory) */
    size_t max_message_size;      /* bytes a reply it packs may take; 0: unlimited */
    char address[256];            /* the last address bound or connected, for messages */
    size_t default_peer_len;      /* where calls go without send_to (a client's server) */
    char default_peer[FRAME_MAX_ID + 1];
    size_t name_len;              /* a server's name (its routing id), or 0 */
    char name[FRAME_MAX_ID + 1];
    struct cluster_link *cluster; /* its cluster (cluster_calls.c), or NULL */
    int worker_by_user;           /* workers: a user's calls go to one worker (worker_by = 'user') */
} lendpoint_t;

/* Fill `ev` with dispatch's handlers for `le`. */
void dispatch_events(lendpoint_t *le, endpoint_events_t *ev);

/* The task-end callbacks (answers) for the scheduler of `h`. */
void dispatch_task_ops(host_t *h, sched_ops_t *ops);

/* Call fn(job) through the one protected path; 0, or -1 with *err filled
 * (logged by the caller as it sees fit). Never raises. */
int dispatch_call(host_t *h, lua_CFunction fn, void *job, sched_error_t *err);
/* A server's WORK run in this state (decoded, looked up, a task), past the
 * workers; the auth gate runs unless `gate_passed`: 1 kept (its task
 * answers and releases), 0 answered now (the caller releases its budget).
 * The control runs a WORK a worker gave back with it (workers.c). */
int dispatch_work_here(lendpoint_t *le, const frame_message_t *m, int gate_passed);

/* Stop the calls running in this state for server `le`'s directory entry
 * `serial` (their caller's connection, routing id `peer`, closed), logged. */
void dispatch_stop_calls(lendpoint_t *le, uint64_t serial, const char *peer, size_t peer_len);

/* Is the value at idx a table with metatable `mt`? */
int dispatch_is_marked(lua_State *L, int idx, const char *mt);

/* Let go of a hold on `le` (a task or a password check is done with it). */
void dispatch_unhold(lua_State *L, lendpoint_t *le);

/* The registries a lookup from an endpoint visits, in order: its own, those
 * of the endpoints it proxies to (a closed one ends the chain), the global
 * one; at most DISPATCH_MAX_REGISTRIES (a proxy cycle ends there). Start
 * with { le, 0, 0 }; each dispatch_walk_next gives a registry ref (a table of
 * name -> callable or route list), LUA_NOREF at the end. Used by the lookup
 * of every WORK and by introspection (ep:registries()), so both see the
 * same chain. */
#define DISPATCH_MAX_REGISTRIES 9
typedef struct dispatch_walk {
    lendpoint_t *at;              /* next endpoint, or NULL: the global registry is next */
    int count;                    /* registries given so far */
    int done;
} dispatch_walk_t;
int dispatch_walk_next(lua_State *L, host_t *h, dispatch_walk_t *w);

/* Names reserved for the host ('_pseud.' and more): looked up only among
 * the endpoint's own (`reserved`), never in a registry. */
#define DISPATCH_RESERVED_PREFIX "_pseud."

/* Send WORK `body` from `le` to user id `user` (NULL: its default peer),
 * resolved by identity (DESIGN.md 4.1) with routing id hint `rid` (may be
 * NULL), through the cluster when the user is not here and `le` joined
 * one, through the control when `le` is a worker's proxy. The call, or
 * NULL with *e: EHOSTUNREACH (no such peer here; *why says why the cluster
 * could not look, or NULL), ENOBUFS (the peer is over its budget), another
 * errno. l_endpoint_call and the control's answer to a worker's CALL. */
endpoint_call_t *dispatch_send_call(lendpoint_t *le, const char *user, size_t user_len,
                                    const char *rid, size_t rid_len, const char *body, size_t body_len,
                                    double timeout, int ref, int *e, const char **why);

/* pseud.caller(): push the user id and routing id of the WORK the running
 * task answers; 2, or 0 outside a handler. */
int dispatch_push_caller(lua_State *L);

#endif
