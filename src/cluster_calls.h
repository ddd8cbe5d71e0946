/*
 * cluster_calls: a clustered server's send_to across nodes (see
 * cluster_calls.c and docs/cluster.md). One link per server with the
 * `cluster` option; the binding joins and leaves, dispatch passes on the
 * directory's identities, l_endpoint_call sends what no local peer takes.
 */
#ifndef PSEUD_CLUSTER_CALLS_H
#define PSEUD_CLUSTER_CALLS_H

#include <stddef.h>

#include "cluster.h"
#include "dispatch.h"
#include "endpoint.h"

typedef struct cluster_link cluster_link_t;

/* Join the cluster at `url` for server `le` (`opt` NULL: defaults); NULL
 * with a sentence in err (a bad URL or option; never a password). The link
 * is made from the loop: until it is up, cross-node calls fail fast. */
cluster_link_t *cluster_calls_join(lendpoint_t *le, const char *url, const cluster_options_t *opt,
                                   char *err, size_t err_len);
/* Leave: this node's entries are dropped, lookups and publishes in flight
 * end (their calls fail: the endpoint is closing). Takes NULL, clears *p. */
void cluster_calls_leave(cluster_link_t **p);

/* This node's id now (it changes when the link to Redis is made again) and
 * whether the link is up. */
const char *cluster_calls_node(const cluster_link_t *l, int *up);

/* User id `user` entered (1) or left (0) the server's directory. */
void cluster_calls_identity(cluster_link_t *l, const char *user, size_t len, int present);

/* send_to `user`, whom no local peer carries: a call tracked by the server's
 * endpoint and forwarded to the node that has the user. NULL with *why. */
endpoint_call_t *cluster_calls_send(cluster_link_t *l, const char *user, size_t user_len,
                                    const char *body, size_t body_len, double timeout, int ref,
                                    const char **why);

#endif
