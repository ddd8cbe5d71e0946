/*
 * workers: the I/O thread (the control) <-> N worker states over inproc
 * (docs/workers.md).
 *
 * The control keeps every ROUTER socket, the auth conversation, heartbeats,
 * the peer directory and the calls it makes; each worker is a thread with
 * its own Lua state and host that runs the same script, where servers and
 * clients are proxies: WORK comes to them from the control and their
 * answers go back to it. One inproc PAIR per worker (the control binds, the
 * worker connects); multipart frames, the first a one-byte kind:
 *
 *   control -> worker  'W' WORK    [kind, name, peer, user, uuid, body, serial, charged, flags]
 *                      'S' RESULT  [kind, epkind, name, call id, type, body]
 *                      'F' FAILED  [kind, epkind, name, call id, error name, message]
 *                      'p' PEERS answer [kind, (user, routing id, last_seen)*]
 *                      'k' CLUSTER answer [kind, node, up] or [kind]: no cluster
 *                      'X' STOP    [kind]
 *   worker -> control  'R' REPLY   [kind, name, peer, user, uuid, type, body, serial, charged]
 *                      'C' CALL    [kind, epkind, name, user, routing-id hint, body, timeout, call id]
 *                      'P' PEERS   [kind, epkind, name] (the worker waits for the answer)
 *                      'K' CLUSTER [kind, epkind, name] (waits for 'k' [kind, node, up] or ['k'])
 *                      'E' FAILED SCRIPT [kind, text]
 *                      'Y' PASSWORD POOL [kind] (waits for 'y' [kind, passwd_stats_t] or ['y'])
 *                      'M' METRIC  [kind, name or empty, outcome, seconds, 4 sched counters]
 *                      'A' ABANDONED [kind, calls] (answered PeerLostError at its stop)
 *                      'D' DONE    [kind] (its thread ends)
 *
 * epkind is 's' (a server, named by its name) or 'c' (a client, named by
 * its server's name). Numbers travel as 8 raw bytes in host order (one
 * process). Every frame count and size is checked on both sides: a bad
 * message is logged and dropped, never trusted.
 */
#ifndef PSEUD_WORKERS_H
#define PSEUD_WORKERS_H

#include <stddef.h>
#include <stdint.h>

#include "dispatch.h"
#include "endpoint.h"
#include "frame.h"
#include "passwd.h"

typedef struct host host_t;
typedef struct workers workers_t;
typedef struct workers_slot workers_slot_t;

#define WORKERS_MAX 64

/* The body of a worker thread (main.c): a Lua state marked as worker
 * `slot` (lpseud_mark_worker) that runs the script. */
typedef void (*workers_main_fn)(workers_slot_t *slot);

/* --- the control --- */

/* Start `n` workers (2..WORKERS_MAX) for host `h`: bind their PAIRs, start
 * their threads (with SIGINT, SIGTERM and SIGHUP blocked: signals are the
 * control's) running `main` on `script` and its `nargs` `args` (kept, not
 * copied: main's argv). NULL with a reason in `err`. */
workers_t *workers_start(host_t *h, int n, workers_main_fn main, const char *script,
                         int nargs, char **args, char *err, size_t err_size);
/* Send STOP to every worker still running. */
void workers_stop(workers_t *w);
/* Are calls still with the workers, or workers not done? */
int workers_busy(const workers_t *w);
/* A stop cut short: every worker answers what it still runs now ('H'). */
void workers_hurry(workers_t *w);
/* Calls handed to workers and not answered yet (0 for NULL). */
size_t workers_inflight(const workers_t *w);
/* Calls the workers said they answered PeerLostError at their stop. */
size_t workers_abandoned(const workers_t *w);
/* The workers' preemptions, time, memory and hook-time limit hits and
 * calls stopped (their caller's connection closed), as they last said,
 * added to `totals` (for a scrape). */
#define WORKERS_SCHED_COUNTS 5
void workers_sched_totals(const workers_t *w, uint64_t totals[WORKERS_SCHED_COUNTS]);
/* How many workers run (not done). */
int workers_alive(const workers_t *w);
/* Join every thread, close the PAIRs; free once no relayed call points at
 * it any more. Takes NULL, clears *p. */
void workers_destroy(workers_t **p);
/* Hand WORK `m` that arrived at server `le` to a worker (fewest calls in
 * flight, or the hash of its user id with worker_by = 'user'). 0: sent (the
 * worker answers, the REPLY releases it); -1: no worker took it. */
int workers_send_work(workers_t *w, lendpoint_t *le, const frame_message_t *m);
/* The connection (routing id `peer`) of server `le`'s directory entry
 * `serial` closed: every
 * worker with calls in flight stops those it runs for that entry
 * (sched_stop_calls). Best effort: a full link leaves them to end alone. */
void workers_stop_calls(workers_t *w, lendpoint_t *le, uint64_t serial, const char *peer, size_t peer_len);

/* --- a worker --- */

int workers_slot_id(const workers_slot_t *slot);
void *workers_slot_zmq(const workers_slot_t *slot);
/* The script and its arguments. */
const char *workers_slot_script(const workers_slot_t *slot, int *nargs, char ***args);
/* The worker's script raised (at top level): the control logs `text` and stops. */
void workers_slot_failed(workers_slot_t *slot, const char *text);
/* In a worker whose control counts metrics: one call ended with `outcome`
 * (metrics.h) after `seconds`; `name` a registered name, or NULL (unknown).
 * Sent as 'M' with the worker's scheduler counters. */
void workers_ship_metric(host_t *h, const char *name, size_t len, int outcome, double seconds);
/* The worker's script serves now (its start()): WORK may come. */
void workers_slot_serving(workers_slot_t *slot);
/* The worker's stop answered `calls` PeerLostError (the control logs the sum). */
void workers_slot_abandoned(workers_slot_t *slot, size_t calls);
/* The worker's host `h` (pseud.core loaded in the slot's state): watch its
 * PAIR in h's loop. 0, or -1. */
int workers_attach(host_t *h, workers_slot_t *slot);
/* The worker's host closes. */
void workers_detach(workers_slot_t *slot);
/* 's' or 'c', and the name the link gives `le` (a server's, a client's server's). */
char workers_kind(const lendpoint_t *le);
const char *workers_name(const lendpoint_t *le, size_t *len);
/* Another open endpoint of `h` that the link would take for `le`: the
 * link names a server by its name and a client by its server's, so two
 * of them in one process would get each other's calls and replies. The
 * other, or NULL. */
lendpoint_t *workers_name_taken(host_t *h, const lendpoint_t *le);
/* Make `le` (in a worker) a proxy: its replies go to the control. 0, or
 * -1 out of memory. */
int workers_proxy_endpoint(lendpoint_t *le);
/* This worker's script closed server `le`: the control sends it no more
 * of that server's WORK (with no worker left for it, the control runs it). */
void workers_proxy_closed(lendpoint_t *le);
/* A call of server `le`, whose proxy this worker's script closed while
 * the call ran: the control's socket is still open, so it is answered
 * PeerLostError through the link, and the control releases its budget.
 * 1 answered, 0 not a worker's. */
int workers_answer_closed(lendpoint_t *le, const char *peer, size_t peer_len, const char *user,
                           size_t user_len, const uint8_t *uuid, uint64_t serial, size_t charged);
/* A call from proxy `le`, made by the control's endpoint of the same kind
 * and name: tracked here with `ref` (its future), sent as CALL. NULL with
 * *e (errno) when it could not be. */
endpoint_call_t *workers_send_call(lendpoint_t *le, const char *user, size_t user_len,
                                   const char *rid, size_t rid_len, const char *body, size_t body_len,
                                   double timeout, int ref, int *e);
/* peers() of proxy `le`: ask the control and wait (bounded) for its
 * answer; `each` runs once per peer, in the control's order. 0, or -1 with
 * a reason in `err` (the control did not answer). */
typedef void (*workers_peer_fn)(void *ctx, const char *user, size_t user_len,
                                const char *rid, size_t rid_len, double last_seen);
int workers_query_peers(lendpoint_t *le, workers_peer_fn each, void *ctx, char *err, size_t err_size);

/* cluster() of proxy `le`: the control's server of that name in its
 * cluster. 0 with `node` ("" when it has none) and *up, or -1 with `err`. */
int workers_query_cluster(lendpoint_t *le, char *node, size_t node_size, int *up, char *err, size_t err_size);

/* The control's password-pool counters (a worker has no pool). 0, or -1
 * (none started, or no answer). */
int workers_query_passwd(host_t *h, passwd_stats_t *st);

#endif
