/*
 * cluster: this host's place in a cluster of hosts that share one Redis
 * (docs/cluster.md has the keys, the scripts and every failure case).
 *
 * Redis holds soft state only: which node incarnation has which user id
 * (the directory), each incarnation's liveness key (refreshed, with a TTL),
 * each incarnation's set of users (so a dead one's entries can be
 * collected), and a pub/sub channel per incarnation that carries bytes
 * between nodes. Nothing else, and never a message at rest. Redis is
 * written on user add and remove and on the liveness refresh, never per
 * message. Everything runs on the host loop (hiredis async, redis.c): no
 * threads, no blocking call after cluster_new.
 *
 * What it owns: two Redis connections (commands; the subscription), the
 * set of users it registered, its pending lookups and publishes. What it
 * does not do: say what travels on a channel (the bytes are the caller's),
 * time a forwarded call out, or cache lookups.
 *
 * The contract callers build "every call ends exactly once" on: each
 * lookup or publish that returns 0 gets its callback exactly once, with
 * Redis's answer, or with CLUSTER_DOWN / -1 when the link is down, drops
 * before the answer, or the cluster is destroyed. A refused call (-1) gets
 * none. Callbacks run from the loop, never from inside the call that asked
 * (while the link is down they come from a zero-delay timer).
 *
 * Departures from the API first sketched for it, and why: cluster_destroy
 * (not _free), as every x_destroy(x_t **) of the core; a log hook in the
 * events, as endpoint_events_t has; cluster_error for the sentence behind
 * a refusal (the caller puts it in an ERROR); cluster_stats for metrics;
 * the node id changes on every re-link, not only per start (a new
 * incarnation each time Redis is reached again, so nothing written by an
 * earlier link can come back to life; docs/cluster.md, "Incarnations").
 */
#ifndef PSEUD_CLUSTER_H
#define PSEUD_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "loop.h"

#define CLUSTER_MAX_USER 255          /* user ids: 1..255 bytes, any byte */
#define CLUSTER_NODE_ID_LEN 36        /* a uuid4, text */

typedef struct cluster cluster_t;

/* A lookup's answer. */
enum { CLUSTER_REFUSED = -2, CLUSTER_DOWN = -1, CLUSTER_ABSENT = 0, CLUSTER_FOUND = 1 };

/* FOUND: `node` (node_len bytes, valid during the call) is the live
 * incarnation holding the user; it may be this one. ABSENT: no live node
 * has it. DOWN: no answer (link down, lost, or the cluster destroyed).
 * REFUSED: Redis answered with an error (a key of the wrong type, an ACL):
 * `node` is that error's text, cut to 100 bytes. */
typedef void (*cluster_lookup_fn)(void *arg, int status, const char *node, size_t node_len);
/* How many nodes took the bytes: 1 normally, 0 when nobody listens on that
 * channel (the node is dead or re-linked under a new id: fail fast), -1
 * when it is not known (link down or lost, or destroyed). Taken is not
 * handled: pub/sub is at most once. */
typedef void (*cluster_publish_fn)(void *arg, long long receivers);

typedef struct cluster_events {
    void *ctx;
    /* Bytes another node published to this one (data valid during the call). */
    void (*on_message)(void *ctx, const char *data, size_t len);
    /* 1: registered under a (new) node id with every user, lookups and
     * publishes go to Redis; 0: the link is lost, they fail fast. Called on
     * changes only, 0 only after a 1. */
    void (*on_link)(void *ctx, int up);
    /* One line for the log (log.h; never holds a password). NULL: none. */
    void (*log)(void *ctx, int level, const char *msg, const log_field_t *fields);
} cluster_events_t;

typedef struct cluster_options {
    double refresh_interval;          /* seconds between liveness refreshes (1) */
    double ttl;                       /* seconds a liveness key outlives its refresh (3) */
    double timeout;                   /* seconds Redis may take to answer before the link
                                         counts as lost (2; at most ttl) */
    double backoff_min, backoff_max;  /* reconnect delays, doubling from min to max (0.1, 5) */
    size_t max_pending;               /* lookups + publishes awaiting a callback (10,000) */
    size_t max_message;               /* largest message published or taken (16 MiB + 64 KiB) */
    size_t max_forwarded;             /* calls taken from other nodes and not answered yet
                                         (10,000): read by cluster_calls.c, not here */
    const char *service;              /* whose users these are (a server's name, 1..255 bytes):
                                         their keys are apart from other services' on the
                                         same Redis (NULL: none; copied) */
} cluster_options_t;

/* The defaults above. */
void cluster_options_default(cluster_options_t *opt);

/* Join the cluster whose Redis is at `url` (redis.h: redis:// or unix:).
 * NULL with a sentence in err (never the password) when the URL or an
 * option is bad or hiredis is missing; Redis itself being unreachable is
 * not an error: the link comes up when it can (on_link(1)). `opt` NULL:
 * defaults. `ev` is copied. The loop must outlive it. */
cluster_t *cluster_new(loop_t *loop, const char *url, const cluster_options_t *opt,
                       const cluster_events_t *ev, char *err, size_t err_len);
/* Leave: every pending callback is called (DOWN / -1) before it returns;
 * calls made from them are refused. A registered node writes one last
 * script, without waiting for its answer: its liveness key goes and a
 * batch of its entries with it (docs/cluster.md, the leave script); if that does
 * not reach Redis, its entries lapse with the key (ttl). Not from inside
 * one of its own callbacks. Takes NULL, clears *p. */
void cluster_destroy(cluster_t **p);

/* This incarnation's id (CLUSTER_NODE_ID_LEN chars, NUL-terminated): fresh
 * per start and per re-link. Valid until the next on_link. */
const char *cluster_node_id(const cluster_t *c);
int cluster_is_up(const cluster_t *c);

/* A user id (1..255 bytes) is now connected here / has left. Kept in the
 * cluster's own set and written to Redis when the link is up (else when it
 * comes up). Per user id, not per connection: remove when its last
 * connection goes. 0, or -1 (bad length, out of memory, destroyed). */
int cluster_user_add(cluster_t *c, const char *uid, size_t len);
int cluster_user_remove(cluster_t *c, const char *uid, size_t len);

/* Which live node has `uid`; cb as above. A user whose node's liveness key
 * lapsed is ABSENT, and that node's entries are collected on the way.
 * 0: cb will be called once. -1: refused, cb never called; errno EINVAL
 * (length), EBUSY (max_pending reached), ENOMEM, ESHUTDOWN (destroying);
 * cluster_error says it in a sentence. */
int cluster_lookup(cluster_t *c, const char *uid, size_t len, cluster_lookup_fn cb, void *arg);
/* Publish `data` to node `node`'s channel; cb(arg, receivers) as above.
 * Refusals as cluster_lookup, plus EMSGSIZE (over max_message). */
int cluster_publish(cluster_t *c, const char *node, size_t node_len, const char *data, size_t len,
                    cluster_publish_fn cb, void *arg);

/* The sentence behind the last refusal (-1), or "". */
const char *cluster_error(const cluster_t *c);

typedef struct cluster_stats {
    uint64_t links_up, links_lost;    /* on_link(1)s, on_link(0)s */
    uint64_t lookups, publishes;      /* accepted */
    uint64_t messages;                /* delivered to on_message */
    uint64_t oversize;                /* messages over max_message, dropped */
    uint64_t errors;                  /* Redis error replies (each logged) */
    size_t pending;                   /* lookups + publishes awaiting their callback */
    size_t users;                     /* user ids registered here */
} cluster_stats_t;

void cluster_stats(const cluster_t *c, cluster_stats_t *out);

/* Seconds since this node's link came back up after a loss, while other
 * nodes may still be registering their users again (Redis restarted
 * empty, or they reconnect on their own backoff: backoff_max plus a TTL);
 * -1 outside that window. A lookup that finds nobody says so. */
double cluster_rebuilding(const cluster_t *c);

#endif
