/*
 * cluster_calls: a clustered server's send_to across nodes (docs/cluster.md).
 *
 * A server with the `cluster` option tells Redis (cluster.c) which user ids
 * it has, as its directory gains and loses them (the peers' identity
 * listener): on connect, login and disconnect, never per message. A send_to
 * whose user no local peer carries becomes a call the endpoint tracks (so it
 * ends exactly once: by the result the other node publishes, a failure, or
 * its own timeout); Redis says which node has the user, and the call goes
 * there as a forwarded envelope (forward.c) on that node's channel. The node
 * that gets it makes the call to its local peer with a relay, which
 * publishes the answer back, byte for byte. No Lua here.
 *
 * Callbacks from cluster.c come later from the loop, never from inside the
 * call that started them, and each exactly once; they find the endpoint's
 * call again by its uuid, since a timeout may have ended it meanwhile.
 */
#include "cluster_calls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "host_state.h"
#include "message.h"

/* While calls are in flight to other nodes, each of those nodes is asked
 * every PROBE_INTERVAL whether it still listens: an empty PUBLISH on its
 * channel that reaches nobody means it is gone (killed, or re-linked under
 * a new id), and so is the way back of its calls. */
#define PROBE_INTERVAL 0.5        /* seconds */
#define PROBE_NODES 32            /* nodes asked per round, at most, taking turns */
#define PROBE_SEEN 256            /* nodes told apart per round, at most */

struct cluster_link {
    cluster_t *cluster;
    lendpoint_t *le;              /* the server it belongs to */
    int closing;                  /* being freed: callbacks only let go */
    loop_timer_t *probe_timer;    /* armed while calls are in flight elsewhere */
    size_t probe_turn;            /* where the next round's PROBE_NODES start */
    msgpack_sbuffer sb, body;     /* an envelope; an ERROR body inside one */
    msgpack_packer pk, body_pk;
    msgpack_zone zone;            /* decoding envelopes */
    size_t relays, max_relays;    /* calls taken from other nodes, not answered yet; the most */
};

/* A send_to waiting for Redis to say where its user is, then for the
 * PUBLISH to be taken. */
typedef struct lookup_op {
    cluster_link_t *link;
    uint8_t uuid[FRAME_UUID_SIZE];
    size_t body_len;
    char body[];                  /* the WORK body, until it is published */
} lookup_op_t;

/* A call made here for another node: its answer goes back there. */
typedef struct relay {
    endpoint_relay_t base;
    cluster_link_t *link;
    uint8_t uuid[FRAME_UUID_SIZE];/* the origin's call */
    char self[CLUSTER_NODE_ID_LEN + 1];   /* the node id the call came to: the
                                             answer names it, even after a re-link */
    size_t origin_len;
    char origin[];
} relay_t;

/* A buffer that held one large envelope lets its memory go (the next one
 * is small, most likely): a link does not keep 16 MiB for good. */
static void s_trim(msgpack_sbuffer *sb) {
    if (sb->alloc > (1u << 20)) {
        msgpack_sbuffer_destroy(sb);
        msgpack_sbuffer_init(sb);
    }
}

static const char *s_node(const cluster_link_t *l, size_t *len) {
    const char *id = cluster_node_id(l->cluster);
    *len = strlen(id);
    return id;
}

static void s_name(const cluster_link_t *l, const char **name, size_t *len) {
    *name = l->le->name;
    *len = l->le->name_len;
}

/* --- the origin: a send_to to a user on another node --- */

static void s_fail(cluster_link_t *l, endpoint_call_t *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_fail(cluster_link_t *l, endpoint_call_t *c, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    endpoint_fail_call(l->le->ep, c, "PeerLostError", msg);
}

/* The call `op` stands for, still pending, or NULL. */
static endpoint_call_t *s_pending(lookup_op_t *op) {
    cluster_link_t *l = op->link;
    if (l->closing || !l->le->ep) return NULL;
    return endpoint_find_call(l->le->ep, op->uuid);
}

/* A printable user id for messages: cut, control bytes as '?' */
static void s_printable(char *out, size_t size, const char *s, size_t n) {
    size_t i = 0;
    for (; i < n && i + 1 < size; i++) out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[i] = '\0';
}

/* --- the origin: is the node a call went to still there? --- */

typedef struct probe {
    cluster_link_t *link;
    char node[FORWARD_MAX_NAME + 1];
} probe_t;

typedef struct probe_round {
    size_t n;
    char nodes[PROBE_SEEN][FORWARD_MAX_NAME + 1];
} probe_round_t;

static void s_arm_probe(cluster_link_t *l);

static void s_on_probed(void *arg, long long receivers) {
    probe_t *p = arg;
    cluster_link_t *l = p->link;
    if (receivers == 0 && !l->closing && l->le->ep) {
        char msg[400];
        snprintf(msg, sizeof msg, "the peer was on node %s of the cluster, which left it with the call "
                 "in flight (stopped, or cut off from Redis)", p->node);
        endpoint_fail_forwarded(l->le->ep, p->node, "PeerLostError", msg);
    }
    free(p);
}

static void s_note_node(void *arg, const char *via) {
    probe_round_t *r = arg;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->nodes[i], via) == 0) return;
    if (r->n < PROBE_SEEN) snprintf(r->nodes[r->n++], sizeof r->nodes[0], "%s", via);
}

static void s_on_probe_timer(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    cluster_link_t *l = arg;
    l->probe_timer = NULL;
    if (l->closing || !l->le->ep) return;
    probe_round_t *r = malloc(sizeof *r);
    if (!r) { s_arm_probe(l); return; }
    r->n = 0;
    endpoint_each_forwarded(l->le->ep, s_note_node, r);
    size_t first = r->n > PROBE_NODES ? l->probe_turn % r->n : 0;
    l->probe_turn += PROBE_NODES;
    for (size_t k = 0; k < r->n && k < PROBE_NODES; k++) {
        probe_t *p = malloc(sizeof *p);
        if (!p) break;
        p->link = l;
        memcpy(p->node, r->nodes[(first + k) % r->n], sizeof p->node);
        if (cluster_publish(l->cluster, p->node, strlen(p->node), "", 0, s_on_probed, p) < 0) free(p);
    }
    if (r->n > 0) s_arm_probe(l);                 /* none left in flight: the next publish arms it */
    free(r);
}

static void s_arm_probe(cluster_link_t *l) {
    if (!l->probe_timer && !l->closing)
        l->probe_timer = loop_add_timer(host_loop(l->le->host), PROBE_INTERVAL, s_on_probe_timer, l);
}

static void s_on_published(void *arg, long long receivers) {
    lookup_op_t *op = arg;
    if (receivers > 0 && !op->link->closing) s_arm_probe(op->link);   /* on its way: watch its node */
    endpoint_call_t *c = receivers > 0 ? NULL : s_pending(op);
    if (c) {
        char user[80], node[80];
        s_printable(user, sizeof user, c->user, c->user_len);
        s_printable(node, sizeof node, c->via ? c->via : "?", c->via ? strlen(c->via) : 1);
        if (receivers == 0)
            s_fail(op->link, c, "peer '%s' is on node %s of the cluster, which is gone", user, node);
        else
            s_fail(op->link, c, "peer '%s' is on node %s, and the cluster is unreachable "
                   "(Redis link down)", user, node);
    }
    free(op);
}

static void s_on_lookup(void *arg, int status, const char *node, size_t node_len) {
    lookup_op_t *op = arg;
    cluster_link_t *l = op->link;
    endpoint_call_t *c = s_pending(op);
    if (!c) { free(op); return; }                 /* timed out meanwhile, or closing */
    char user[80];
    s_printable(user, sizeof user, c->user, c->user_len);
    size_t self_len;
    const char *self = s_node(l, &self_len);
    if (status == CLUSTER_FOUND && node_len > 0 && node_len <= FORWARD_MAX_NAME &&
        !(node_len == self_len && memcmp(node, self, self_len) == 0)) {
        c->via = malloc(node_len + 1);
        if (c->via) { memcpy(c->via, node, node_len); c->via[node_len] = '\0'; }
        double left = c->deadline - loop_now();
        forward_msg_t m = { .kind = FORWARD_CALL, .node = self, .node_len = self_len,
                            .user = c->user, .user_len = c->user_len,
                            .timeout = left > 0 ? left : 0, .body = op->body, .body_len = op->body_len };
        s_name(l, &m.server, &m.server_len);
        memcpy(m.uuid, op->uuid, FRAME_UUID_SIZE);
        msgpack_sbuffer_clear(&l->sb);
        if (!c->via || forward_pack(&l->pk, &m) < 0) {
            s_fail(l, c, "peer '%s': not enough memory to forward the call", user);
        } else if (cluster_publish(l->cluster, node, node_len, l->sb.data, l->sb.size,
                                   s_on_published, op) == 0) {
            s_trim(&l->sb);
            return;                               /* s_on_published frees op */
        } else {
            s_fail(l, c, "peer '%s': the cluster would not take the call: %s", user,
                   cluster_error(l->cluster));
        }
    } else if (status == CLUSTER_REFUSED) {
        char why[104];
        s_printable(why, sizeof why, node, node_len);
        s_fail(l, c, "no connected peer '%s' here, and the cluster's Redis refused to say where it is: %s",
               user, why);
    } else if (status == CLUSTER_DOWN) {
        s_fail(l, c, "no connected peer '%s' here, and the cluster is unreachable "
               "(Redis link down)", user);
    } else if (cluster_rebuilding(l->cluster) >= 0) {
        char since[32];
        snprintf(since, sizeof since, "%.1f", cluster_rebuilding(l->cluster));
        s_fail(l, c, "no connected peer '%s' on any node of the cluster yet: this node's Redis "
               "link came back %s s ago, and other nodes may still be registering their users", user, since);
    } else {
        s_fail(l, c, "no connected peer '%s' on any node of the cluster", user);
    }
    free(op);
}

endpoint_call_t *cluster_calls_send(cluster_link_t *l, const char *user, size_t user_len,
                                    const char *body, size_t body_len, double timeout, int ref,
                                    const char **why) {
    *why = "not enough memory";
    lookup_op_t *op = malloc(sizeof *op + body_len);
    if (!op) return NULL;
    op->link = l;
    op->body_len = body_len;
    if (body_len) memcpy(op->body, body, body_len);
    frame_new_uuid(op->uuid);
    if (cluster_lookup(l->cluster, user, user_len, s_on_lookup, op) < 0) {
        free(op);
        *why = cluster_error(l->cluster);
        return NULL;
    }
    /* the lookup answers from the loop, later: the call is in the table by then */
    endpoint_call_t *c = endpoint_track_call(l->le->ep, op->uuid, user, user_len, timeout, ref);
    return c;                                     /* NULL: s_on_lookup finds no call, frees op */
}

/* --- the node with the user: a call forwarded here --- */

static void s_ignore_published(void *arg, long long receivers) { (void)arg; (void)receivers; }

static void s_publish_result(cluster_link_t *l, const char *self, const char *origin, size_t origin_len,
                             const uint8_t *uuid, int type, const char *body, size_t len) {
    forward_msg_t m = { .kind = FORWARD_RESULT, .type = type, .body = body, .body_len = len,
                        .node = self, .node_len = strlen(self) };
    s_name(l, &m.server, &m.server_len);
    memcpy(m.uuid, uuid, FRAME_UUID_SIZE);
    msgpack_sbuffer_clear(&l->sb);
    int rc = forward_pack(&l->pk, &m) == 0 ? cluster_publish(l->cluster, origin, origin_len, l->sb.data,
                                                             l->sb.size, s_ignore_published, NULL) : -1;
    s_trim(&l->sb);
    if (rc < 0 && type == FRAME_OK) {
        /* too big for the cluster (max_message), or too many in flight:
         * the origin gets a short ERROR rather than its whole timeout */
        char msg[300];
        snprintf(msg, sizeof msg, "the answer could not be sent back through the cluster: %s",
                 cluster_error(l->cluster));
        msgpack_sbuffer_clear(&l->body);
        if (message_pack_error(&l->body_pk, "MemoryError", 11, msg, strlen(msg), "", 0) == 0)
            s_publish_result(l, self, origin, origin_len, uuid, FRAME_ERROR, l->body.data, l->body.size);
        return;
    }
    /* not taken after all (the origin is gone, the link is down): the
     * origin's own timeout ends its call; say so here */
    if (rc < 0)
        HOST_LOG_LIMITED(l->le->host, LOG_WARN, "cluster: a forwarded call's answer was not sent back",
                         LOG_STR("error", cluster_error(l->cluster)));
}

static void s_publish_error(cluster_link_t *l, const char *self, const char *origin, size_t origin_len,
                            const uint8_t *uuid, const char *name, const char *message) {
    msgpack_sbuffer_clear(&l->body);
    if (message_pack_error(&l->body_pk, name, strlen(name), message, strlen(message), "", 0) == 0)
        s_publish_result(l, self, origin, origin_len, uuid, FRAME_ERROR, l->body.data, l->body.size);
}

static void s_relay_answered(endpoint_relay_t *base, int type, const char *body, size_t len) {
    relay_t *r = (relay_t *)base;
    r->link->relays--;
    if (!r->link->closing) s_publish_result(r->link, r->self, r->origin, r->origin_len, r->uuid, type, body, len);
    free(r);
}

static void s_relay_failed(endpoint_relay_t *base, const char *name, const char *message) {
    relay_t *r = (relay_t *)base;
    r->link->relays--;
    if (!r->link->closing) s_publish_error(r->link, r->self, r->origin, r->origin_len, r->uuid, name, message);
    free(r);
}

static void s_on_call(cluster_link_t *l, const forward_msg_t *m) {
    endpoint_t *ep = l->le->ep;
    size_t self_len;
    const char *self = s_node(l, &self_len);
    char user[80], msg[300];
    s_printable(user, sizeof user, m->user, m->user_len);
    /* a WORK body is checked as one from a peer would be before a peer of
     * ours gets it: whoever can publish is not trusted with our peers */
    message_work_t w;
    codec_error_t err = { "msgpack: out of memory" };
    if (message_decode_work(m->body, m->body_len, host_limits(l->le->host), &l->zone, &w, &err) < 0) {
        s_publish_error(l, self, m->node, m->node_len, m->uuid, "ProtocolError", err.message);
        return;
    }
    peer_t *p = peers_find_user(endpoint_peers(ep), m->user, m->user_len);
    if (!p || p->closed) {                        /* it left since Redis said so */
        snprintf(msg, sizeof msg, "no connected peer '%s' on node %s", user, self);
        s_publish_error(l, self, m->node, m->node_len, m->uuid, "PeerLostError", msg);
        return;
    }
    /* Whoever can publish here is not trusted with this node's memory or
     * time either: it may ask for calls that the peer never answers, as
     * many as it likes, each to wait up to FORWARD_MAX_WAIT. So at most
     * max_forwarded are held at once, and none longer than this server's
     * own `timeout` for the calls it makes. */
    if (l->relays >= l->max_relays) {
        snprintf(msg, sizeof msg, "node %s holds %zu calls from other nodes, the most its "
                 "cluster.max_forwarded allows: try again", self, l->relays);
        s_publish_error(l, self, m->node, m->node_len, m->uuid, "BusyError", msg);
        return;
    }
    double wait = m->timeout < l->le->timeout ? m->timeout : l->le->timeout;
    relay_t *r = malloc(sizeof *r + m->node_len);
    if (!r) {
        s_publish_error(l, self, m->node, m->node_len, m->uuid, "MemoryError", "not enough memory to relay the call");
        return;
    }
    r->base.answered = s_relay_answered;
    r->base.failed = s_relay_failed;
    r->link = l;
    memcpy(r->uuid, m->uuid, FRAME_UUID_SIZE);
    memcpy(r->self, self, self_len + 1);
    r->origin_len = m->node_len;
    memcpy(r->origin, m->node, m->node_len);
    endpoint_call_t *c = endpoint_send_work(ep, p->routing_id, p->routing_id_len, p->user_id,
                                            p->user_id_len, m->body, m->body_len, wait, -1);   /* no future: the relay */
    if (c) { c->relay = &r->base; l->relays++; return; }
    int busy = errno == ENOBUFS;
    snprintf(msg, sizeof msg, busy ? "too much is queued for peer '%s' (max_peer_queue): wait for "
             "its replies, then try again" : "no connected peer '%s'", user);
    s_publish_error(l, self, m->node, m->node_len, m->uuid, busy ? "BusyError" : "PeerLostError", msg);
    free(r);
}

/* --- what the channel brings --- */

static void s_on_result(cluster_link_t *l, const forward_msg_t *m) {
    endpoint_call_t *c = endpoint_find_call(l->le->ep, m->uuid);
    /* only the node the call went to settles it */
    if (!c || c->peer_len != 0 || !c->via || strlen(c->via) != m->node_len ||
        memcmp(c->via, m->node, m->node_len) != 0) {
        HOST_LOG_LIMITED(l->le->host, LOG_INFO, "cluster: dropped a result for no call forwarded "
                         "there (late, or forged)", LOG_ID("node", m->node, m->node_len));
        return;
    }
    endpoint_settle_call(l->le->ep, c, m->type, m->body, m->body_len);
}

static void s_on_message(void *ctx, const char *data, size_t len) {
    cluster_link_t *l = ctx;
    if (l->closing || !l->le->ep) return;
    if (len == 0) return;                         /* a probe: another node asking if we listen */
    forward_msg_t m;
    codec_error_t err = { "msgpack: out of memory" };
    const char *name;
    size_t name_len;
    s_name(l, &name, &name_len);
    if (forward_decode(data, len, host_limits(l->le->host), &l->zone, &m, &err) < 0) {
        HOST_LOG_LIMITED(l->le->host, LOG_WARN, "cluster: refused a message on this node's channel",
                         LOG_STR("error", err.message));
        return;
    }
    if (m.server_len != name_len || memcmp(m.server, name, name_len) != 0) {
        HOST_LOG_LIMITED(l->le->host, LOG_WARN, "cluster: refused a message for another server",
                         LOG_ID("server", m.server, m.server_len));
        if (m.kind == FORWARD_CALL) {             /* its origin learns now, not at its timeout */
            size_t self_len;
            const char *self = s_node(l, &self_len);
            s_publish_error(l, self, m.node, m.node_len, m.uuid, "PeerLostError",
                            "that node serves another server");
        }
        return;
    }
    if (m.kind == FORWARD_CALL) s_on_call(l, &m);
    else s_on_result(l, &m);
}

static void s_on_link(void *ctx, int up) {
    cluster_link_t *l = ctx;
    if (l->closing || up || !l->le->ep) return;
    /* results come back on this node's channel, and the next link has
     * another: calls already forwarded cannot be answered any more */
    endpoint_fail_forwarded(l->le->ep, NULL, "PeerLostError", "the cluster link was lost before "
                            "the answer came (Redis unreachable)");
}

/* --- the link --- */

/* Limited as a peer's lines are: what Redis refuses can be a member's
 * doing (a user key made a string answers every lookup WRONGTYPE). */
static void s_log(void *ctx, int level, const char *msg, const log_field_t *fields) {
    cluster_link_t *l = ctx;
    host_log_limited(l->le->host, level, msg, fields);
}

cluster_link_t *cluster_calls_join(lendpoint_t *le, const char *url, const cluster_options_t *opt,
                                   char *err, size_t err_len) {
    cluster_link_t *l = calloc(1, sizeof *l);
    if (!l) { snprintf(err, err_len, "not enough memory"); return NULL; }
    l->le = le;
    msgpack_sbuffer_init(&l->sb);
    msgpack_sbuffer_init(&l->body);
    msgpack_packer_init(&l->pk, &l->sb, msgpack_sbuffer_write);
    msgpack_packer_init(&l->body_pk, &l->body, msgpack_sbuffer_write);
    msgpack_zone_init(&l->zone, 1024);
    cluster_events_t ev = { .ctx = l, .on_message = s_on_message, .on_link = s_on_link, .log = s_log };
    cluster_options_t o;
    if (opt) o = *opt; else cluster_options_default(&o);
    l->max_relays = o.max_forwarded;
    if (memchr(le->name, '\0', le->name_len)) {
        snprintf(err, err_len, "a server whose name holds a NUL byte cannot join a cluster");
        cluster_calls_leave(&l);
        return NULL;
    }
    o.service = le->name;                         /* its users' keys are its own */
    l->cluster = cluster_new(host_loop(le->host), url, &o, &ev, err, err_len);
    if (!l->cluster) { cluster_calls_leave(&l); return NULL; }
    return l;
}

const char *cluster_calls_node(const cluster_link_t *l, int *up) {
    *up = cluster_is_up(l->cluster);
    return cluster_node_id(l->cluster);
}

void cluster_calls_identity(cluster_link_t *l, const char *user, size_t len, int present) {
    if (l->closing) return;
    if (present) cluster_user_add(l->cluster, user, len);
    else cluster_user_remove(l->cluster, user, len);
}

void cluster_calls_leave(cluster_link_t **p) {
    if (!p || !*p) return;
    cluster_link_t *l = *p;
    *p = NULL;
    l->closing = 1;                               /* callbacks from here on only free */
    if (l->probe_timer) loop_cancel_timer(host_loop(l->le->host), l->probe_timer);
    l->probe_timer = NULL;
    cluster_destroy(&l->cluster);
    msgpack_sbuffer_destroy(&l->sb);
    msgpack_sbuffer_destroy(&l->body);
    msgpack_zone_destroy(&l->zone);
    free(l);
}
