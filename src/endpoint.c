/*
 * endpoint: the pseud v1 state machine of one ROUTER socket (see endpoint.h).
 *
 * Pending calls sit in a hash on their uuid (random bytes: the first eight
 * are the hash) and in a list ordered by deadline. One loop timer, armed
 * lazily, expires the head of that list: a call that ends early leaves the
 * timer to fire once for nothing rather than re-arming per call.
 * What leaves is endpoint_send.c's (per-peer queues and budgets); who is
 * there, endpoint_peers.c's (disconnects, heartbeats).
 */
#include "endpoint_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "message.h"

#define RECV_BUDGET      256      /* messages per readiness, so timers still run */
/* Bytes per readiness (routing ids and bodies): libzmq copies a message's
 * routing id on every receive, and a peer may announce one of megabytes
 * (refused, but only once read): ~20 ms a message at 8 MiB, so 256 of them
 * held every task for 5 s. A batch ends once this much was read; the tasks
 * it admitted run before the next. */
#define RECV_BYTES_BUDGET (4u << 20)
#define LOG_BURST        20       /* lines about one kind of refusal per second, then a count */
#define BUSY_SLACK       (1u << 20)  /* BusyErrors queued past a budget before they go unsent */
#define WORK_COST        1024     /* what an admitted call holds beside its body (task, coroutine), bytes */

static void s_free(endpoint_t *ep);

/* Around every callback: a callback may destroy the endpoint (a handler
 * closing its own server), so the free waits until the caller unwinds.
 * endpoint_leave() returns 1 when the endpoint is gone and the caller must stop. */
void endpoint_enter(endpoint_t *ep) { ep->busy++; }

int endpoint_leave(endpoint_t *ep) {
    if (--ep->busy > 0 || !ep->closing) return ep->closing;
    s_free(ep);
    return 1;
}

void endpoint_log(endpoint_t *ep, int level, const char *msg, const log_field_t *fields) {
    if (ep->ev.log) ep->ev.log(ep->ev.ctx, level, msg, fields);
}

/* A line a peer can cause, at most LOG_BURST a second with the others: a
 * flood of bad messages, or of connections that come and go, must not
 * become a flood of log lines. */
void endpoint_log_limited(endpoint_t *ep, int level, const char *msg, const log_field_t *fields) {
    if (!ep->ev.log) return;
    double now = loop_now();
    if (now - ep->log_window >= 1.0) {
        if (ep->log_suppressed > 0)
            ENDPOINT_LOG(ep, LOG_WARN, "similar lines left out", LOG_INT("count", ep->log_suppressed));
        ep->log_window = now;
        ep->log_lines = ep->log_suppressed = 0;
    }
    if (ep->log_lines >= LOG_BURST) { ep->log_suppressed++; return; }
    ep->log_lines++;
    ep->ev.log(ep->ev.ctx, level, msg, fields);
}

void endpoint_log_refusal(endpoint_t *ep, const char *msg, const log_field_t *fields) {
    endpoint_log_limited(ep, LOG_WARN, msg, fields);
}

/* Printable peer id for logs: routing ids are bytes. */
const char *endpoint_peer_text(const char *peer, size_t len, char *buf, size_t size) {
    size_t j = 0;
    for (size_t i = 0; i < len && j + 5 < size; i++) {
        unsigned char c = (unsigned char)peer[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') buf[j++] = (char)c;
        else j += (size_t)snprintf(buf + j, size - j, "\\x%02x", c);
    }
    buf[j] = '\0';
    return buf;
}

void endpoint_options_init(endpoint_options_t *o) {
    o->routing_id = NULL;
    o->probe_router = 0;
    o->server_id = NULL;
    o->server_id_len = 0;
    o->max_message_size = 32 << 20;
    o->linger_ms = 1000;
    o->max_outbox = 100000;
    o->max_outbox_bytes = 256u << 20;
    o->queue_unroutable = 1;
    o->max_peer_queue = 16u << 20;
    o->max_peer_calls = 100;
    o->max_peers = 100000;
}

/* --- pending calls --- */

static size_t s_bucket(const endpoint_t *ep, const uint8_t *uuid) {
    uint64_t h;
    memcpy(&h, uuid, sizeof h);
    return (size_t)(h & (ep->nbuckets - 1));
}

static int s_grow(endpoint_t *ep) {
    size_t n = ep->nbuckets ? ep->nbuckets * 2 : 64;
    endpoint_call_t **b = calloc(n, sizeof *b);
    if (!b) return -1;
    endpoint_call_t **old = ep->buckets;
    size_t oldn = ep->nbuckets;
    ep->buckets = b;
    ep->nbuckets = n;
    for (size_t i = 0; i < oldn; i++)
        for (endpoint_call_t *c = old[i], *next; c; c = next) {
            next = c->hash_next;
            size_t k = s_bucket(ep, c->uuid);
            c->hash_next = b[k];
            b[k] = c;
        }
    free(old);
    return 0;
}

static endpoint_call_t *s_find(endpoint_t *ep, const uint8_t *uuid) {
    if (!ep->nbuckets) return NULL;
    for (endpoint_call_t *c = ep->buckets[s_bucket(ep, uuid)]; c; c = c->hash_next)
        if (memcmp(c->uuid, uuid, FRAME_UUID_SIZE) == 0) return c;
    return NULL;
}

static void s_expire(loop_t *loop, loop_timer_t *t, void *arg);
static void s_arm_expiry(endpoint_t *ep);

/* Enter `c` in the hash and, by deadline, in the list of pending calls. */
static void s_insert(endpoint_t *ep, endpoint_call_t *c) {
    size_t k = s_bucket(ep, c->uuid);
    c->hash_next = ep->buckets[k];
    ep->buckets[k] = c;
    /* deadline order: walk back from the tail, usually zero steps */
    endpoint_call_t *after = ep->last;
    while (after && after->deadline > c->deadline) after = after->prev;
    c->prev = after;
    c->next = after ? after->next : ep->first;
    if (c->next) c->next->prev = c; else ep->last = c;
    if (after) after->next = c; else ep->first = c;
    ep->ncalls++;
    s_arm_expiry(ep);
}

static void s_arm_expiry(endpoint_t *ep) {
    if (!ep->first) return;
    if (ep->expiry && ep->expiry_at <= ep->first->deadline) return;
    loop_cancel_timer(ep->loop, ep->expiry);
    ep->expiry_at = ep->first->deadline;
    ep->expiry = loop_add_timer(ep->loop, ep->expiry_at - loop_now(), s_expire, ep);
}

/* Unlink `c` from hash and deadline list; the caller frees it. */
static void s_unlink(endpoint_t *ep, endpoint_call_t *c) {
    endpoint_call_t **pp = &ep->buckets[s_bucket(ep, c->uuid)];
    while (*pp != c) pp = &(*pp)->hash_next;
    *pp = c->hash_next;
    if (c->prev) c->prev->next = c->next; else ep->first = c->next;
    if (c->next) c->next->prev = c->prev; else ep->last = c->prev;
    endpoint_out_cancel(c);
    ep->ncalls--;
}

static void s_free_call(endpoint_call_t *c) {
    free(c->via);
    free(c);
}

/* `c` got its OK or ERROR: to its relay, or on_reply. */
static void s_answered(endpoint_t *ep, endpoint_call_t *c, int type, const char *body, size_t len) {
    if (c->relay) c->relay->answered(c->relay, type, body, len);
    else if (ep->ev.on_reply) ep->ev.on_reply(ep->ev.ctx, ep, c, type, body, len);
}

/* Ends `c` with on_call_failed. Returns 1 when that destroyed the endpoint. */
int endpoint_fail_call(endpoint_t *ep, endpoint_call_t *c, const char *name, const char *msg) {
    s_unlink(ep, c);
    endpoint_enter(ep);
    if (c->relay) c->relay->failed(c->relay, name, msg);
    else if (ep->ev.on_call_failed) ep->ev.on_call_failed(ep->ev.ctx, ep, c, name, msg);
    s_free_call(c);
    return endpoint_leave(ep);
}

static void s_expire(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    endpoint_t *ep = arg;
    ep->expiry = NULL;
    double now = loop_now();
    while (ep->first && ep->first->deadline <= now)
        if (endpoint_fail_call(ep, ep->first, "TimeoutError", "no reply before the call's timeout"))
            return;
    if (!ep->closing) s_arm_expiry(ep);
}

size_t endpoint_pending_calls(const endpoint_t *ep) { return ep->ncalls; }
size_t endpoint_outbox_size(const endpoint_t *ep) { return ep->nout; }
void *endpoint_socket(endpoint_t *ep) { return ep->socket; }
peers_t *endpoint_peers(endpoint_t *ep) { return ep->peers; }
const endpoint_stats_t *endpoint_stats(const endpoint_t *ep) { return &ep->stats; }
void endpoint_set_strict(endpoint_t *ep, int strict) { ep->strict = strict; }
int endpoint_strict(const endpoint_t *ep) { return ep->strict; }

size_t endpoint_peer_used(endpoint_t *ep, const char *peer, size_t peer_len) {
    peer_t *p = peers_find(ep->peers, peer, peer_len);
    return p ? endpoint_out_used(p) : 0;
}

size_t endpoint_held_bytes(endpoint_t *ep) {
    size_t sum = ep->unroutable_bytes;
    for (const peer_t *p = peers_oldest(ep->peers); p; p = p->newer) sum += endpoint_out_used(p);
    return sum;
}

/* ZeroMQ says the peer has no connection: it leaves the directory. */
static void s_forget_peer(endpoint_t *ep, const char *peer, size_t peer_len) {
    peer_t *p = peers_find(ep->peers, peer, peer_len);
    if (p) peers_remove(ep->peers, p);
}

/* --- sending --- */

endpoint_call_t *endpoint_send_work(endpoint_t *ep, const char *peer, size_t peer_len,
                                    const char *user, size_t user_len,
                                    const void *body, size_t body_len,
                                    double timeout, int ref) {
    peer_t *p = peers_find(ep->peers, peer, peer_len);
    if (p) {                                     /* this host's calls count against its budget too */
        size_t used = endpoint_out_used(p);
        if (used > 0 && used + body_len > ep->opt.max_peer_queue) { errno = ENOBUFS; return NULL; }
    }
    if (ep->ncalls + 1 > ep->nbuckets && s_grow(ep) < 0) return NULL;
    if (!user) { user = peer; user_len = peer_len; }
    size_t keep = ep->hello_body ? body_len : 0;  /* for a replay after HELLO */
    endpoint_call_t *c = calloc(1, sizeof *c + peer_len + user_len + keep);
    if (!c) return NULL;
    c->peer_len = peer_len;
    memcpy(c->peer, peer, peer_len);
    c->user = c->peer + peer_len;
    c->user_len = user_len;
    memcpy(c->peer + peer_len, user, user_len);
    if (ep->hello_body) {
        if (keep) memcpy(c->peer + peer_len + user_len, body, keep);
        c->body = c->peer + peer_len + user_len;
        c->body_len = keep;
    }
    frame_new_uuid(c->uuid);
    c->ref = ref;
    c->deadline = loop_now() + timeout;
    if (ep->nrefused && endpoint_all_refused(ep) && (!p || p->closed))
        endpoint_arm_refusal(ep);                /* it cannot be answered: say so, soon */
    if (endpoint_out_send(ep, p, c, peer, peer_len, c->user, c->user_len, c->uuid, FRAME_UUID_SIZE,
                          FRAME_WORK, body, body_len) < 0) {
        int e = errno;
        free(c);
        if (e == EHOSTUNREACH) s_forget_peer(ep, peer, peer_len);
        errno = e;
        return NULL;
    }
    s_insert(ep, c);
    return c;
}

endpoint_call_t *endpoint_track_call(endpoint_t *ep, const uint8_t *uuid,
                                     const char *user, size_t user_len, double timeout, int ref) {
    if (ep->ncalls + 1 > ep->nbuckets && s_grow(ep) < 0) return NULL;
    endpoint_call_t *c = calloc(1, sizeof *c + user_len);
    if (!c) return NULL;
    c->user = c->peer;                           /* no routing id: peer_len 0 */
    c->user_len = user_len;
    memcpy(c->peer, user, user_len);
    if (uuid) memcpy(c->uuid, uuid, FRAME_UUID_SIZE);
    else frame_new_uuid(c->uuid);
    c->ref = ref;
    c->deadline = loop_now() + timeout;
    s_insert(ep, c);
    return c;
}

/* A tracked call on its way to `via` (NULL: to any node). */
static int s_forwarded(const endpoint_call_t *c, const char *via) {
    return c->peer_len == 0 && c->via && (!via || strcmp(c->via, via) == 0);
}

int endpoint_fail_forwarded(endpoint_t *ep, const char *via, const char *name, const char *msg) {
    /* by uuid, from a list made first: ending one runs its caller's code,
     * which may end or make others */
    size_t n = 0, k = 0;
    for (endpoint_call_t *c = ep->first; c; c = c->next) n += s_forwarded(c, via);
    if (n == 0) return 0;
    uint8_t (*ids)[FRAME_UUID_SIZE] = malloc(n * FRAME_UUID_SIZE);
    if (!ids) return 0;                          /* they end by their timeout */
    for (endpoint_call_t *c = ep->first; c && k < n; c = c->next)
        if (s_forwarded(c, via)) memcpy(ids[k++], c->uuid, FRAME_UUID_SIZE);
    int gone = 0;
    for (size_t i = 0; i < k && !gone; i++) {
        endpoint_call_t *c = s_find(ep, ids[i]);
        if (c && s_forwarded(c, via)) gone = endpoint_fail_call(ep, c, name, msg);
    }
    free(ids);
    return gone;
}

void endpoint_each_forwarded(endpoint_t *ep, void (*fn)(void *arg, const char *via), void *arg) {
    for (endpoint_call_t *c = ep->first; c; c = c->next)
        if (s_forwarded(c, NULL)) fn(arg, c->via);
}

endpoint_call_t *endpoint_find_call(endpoint_t *ep, const uint8_t *uuid) {
    return s_find(ep, uuid);
}

int endpoint_settle_call(endpoint_t *ep, endpoint_call_t *c, int type, const char *body, size_t len) {
    s_unlink(ep, c);
    endpoint_enter(ep);
    s_answered(ep, c, type, body, len);
    s_free_call(c);
    return endpoint_leave(ep);
}

/* May a reply bound to `user` go to `p` (the entry of routing id `peer`)?
 * Only while it carries that identity (DESIGN.md 4.1); without
 * authentication the routing id is the identity. */
static int s_still_carries(endpoint_t *ep, const peer_t *p, const char *peer, size_t peer_len,
                           const char *user, size_t user_len) {
    if (p && !p->closed && p->user_id_len == user_len && memcmp(p->user_id, user, user_len) == 0)
        return 1;
    ep->stats.replies_dropped++;
    ENDPOINT_REFUSAL(ep, "reply dropped", LOG_ID("user", user, user_len), LOG_ID("peer", peer, peer_len),
                     LOG_STR("reason", !p || p->closed ? "the routing id is gone (its connection closed)"
                                                       : "the routing id now carries another user"));
    return 0;
}

/* A reply ZeroMQ would not take (errno): counted and logged, out of the
 * way of the path every reply takes. */
__attribute__((cold, noinline))
static void s_reply_failed(endpoint_t *ep, peer_t *p, const char *peer, size_t peer_len) {
    ep->stats.replies_dropped++;
    if (errno == EHOSTUNREACH) {
        ENDPOINT_REFUSAL(ep, "reply dropped", LOG_ID("peer", peer, peer_len),
                         LOG_STR("reason", "peer is gone"));
        if (p) peers_remove(ep->peers, p);
    } else {
        ENDPOINT_REFUSAL(ep, "reply failed", LOG_ID("peer", peer, peer_len),
                         LOG_STR("reason", zmq_strerror(errno)));
    }
}

/* A proxy's reply: to the control, with the release armed for it. */
static int s_proxy_reply(endpoint_t *ep, const char *peer, size_t peer_len, const char *user,
                         size_t user_len, const uint8_t *uuid, int type, const void *body,
                         size_t body_len, int owned) {
    int rc = ep->proxy.reply(ep->proxy.ctx, peer, peer_len, user, user_len, uuid, type, body,
                             body_len, ep->proxy_serial, ep->proxy_charged);
    idset_decr(ep->proxy_calls, peer, peer_len);
    ep->proxy_serial = 0;
    ep->proxy_charged = 0;
    if (owned) free((void *)body);
    return rc;
}

int endpoint_set_proxy(endpoint_t *ep, const endpoint_proxy_t *px) {
    if (!ep->proxy_calls && !(ep->proxy_calls = idset_new())) return -1;
    ep->proxy = *px;
    return 0;
}

void endpoint_proxy_took(endpoint_t *ep, const char *peer, size_t peer_len) {
    if (ep->proxy_calls) idset_incr(ep->proxy_calls, peer, peer_len);   /* no memory: as alone */
}

int endpoint_is_proxy(const endpoint_t *ep) { return ep->proxy.reply != NULL; }
void endpoint_proxy_arm(endpoint_t *ep, uint64_t serial, size_t charged) {
    ep->proxy_serial = serial;
    ep->proxy_charged = charged;
}

/* Unauthenticated, a routing id is the user id, so s_still_carries cannot
 * tell a new connection that took it from the caller's: the connection
 * can. A kept WORK's answer goes only to the entry of the connection it
 * came on (its serial); under noop_auth_backend an entry goes when its
 * connection closes, so a taker that has not spoken yet finds none. */
static int s_same_connection(endpoint_t *ep, const peer_t *p, const char *peer, size_t peer_len,
                             uint64_t serial) {
    if (p && !p->closed && p->serial == serial) return 1;
    ep->stats.replies_dropped++;
    ENDPOINT_REFUSAL(ep, "reply dropped", LOG_ID("peer", peer, peer_len),
                     LOG_STR("reason", !p || p->closed ? "the routing id is gone (its connection closed, "
                                                         "or a heartbeat backend declared it gone)"
                                                       : "the routing id's entry is a new one (another "
                                                         "connection, or a heartbeat backend declared "
                                                         "the old one gone)"));
    return 0;
}

/* endpoint_reply and endpoint_answer(_owned): `owned` bodies are freed on
 * every path. */
static int s_reply(endpoint_t *ep, const char *peer, size_t peer_len, uint64_t serial, const char *user,
                   size_t user_len, const uint8_t *uuid, int type, const void *body,
                   size_t body_len, int owned) {
    if (ep->proxy.reply)
        return s_proxy_reply(ep, peer, peer_len, user, user_len, uuid, type, body, body_len, owned);
    int check = user && ep->strict;
    if (check) endpoint_drain_monitor(ep);      /* a disconnect read late must not pass */
    peer_t *p = peers_find(ep->peers, peer, peer_len);
    if (check ? !s_still_carries(ep, p, peer, peer_len, user, user_len)
              : serial && !s_same_connection(ep, p, peer, peer_len, serial)) {
        if (owned) free((void *)body);
        return -1;
    }
    if (p && body_len > p->reply_max) p->reply_max = body_len;   /* endpoint_park_may_start */
    if ((owned ? endpoint_out_send_owned(ep, p, peer, peer_len, user, user_len, uuid, type,
                                         (char *)body, body_len)
               : endpoint_out_send(ep, p, NULL, peer, peer_len, user, user_len, uuid,
                                   FRAME_UUID_SIZE, type, body, body_len)) == 0)
        return 0;
    s_reply_failed(ep, p, peer, peer_len);
    return -1;
}

int endpoint_reply(endpoint_t *ep, const char *peer, size_t peer_len,
                   const char *user, size_t user_len,
                   const uint8_t *uuid, int type, const void *body, size_t body_len) {
    return s_reply(ep, peer, peer_len, 0, user, user_len, uuid, type, body, body_len, 0);
}

int endpoint_answer(endpoint_t *ep, const char *peer, size_t peer_len, uint64_t serial,
                    const char *user, size_t user_len,
                    const uint8_t *uuid, int type, const void *body, size_t body_len) {
    return s_reply(ep, peer, peer_len, serial, user, user_len, uuid, type, body, body_len, 0);
}

void endpoint_unanswered(endpoint_t *ep, const char *peer, size_t peer_len,
                         const char *user, size_t user_len, const uint8_t *uuid) {
    if (ep->proxy.reply)
        s_proxy_reply(ep, peer, peer_len, user, user_len, uuid, ENDPOINT_NO_ANSWER, NULL, 0, 0);
}

int endpoint_answer_owned(endpoint_t *ep, const char *peer, size_t peer_len, uint64_t serial,
                          const char *user, size_t user_len,
                          const uint8_t *uuid, int type, char *body, size_t body_len) {
    return s_reply(ep, peer, peer_len, serial, user, user_len, uuid, type, body, body_len, 1);
}

void endpoint_release(endpoint_t *ep, const char *peer, size_t peer_len,
                      uint64_t serial, size_t charged) {
    if (ep->proxy.reply) { endpoint_proxy_arm(ep, serial, charged); return; }
    if (!serial) return;
    peer_t *p = peers_find(ep->peers, peer, peer_len);
    if (!p || p->serial != serial) return;       /* another connection now: its own account */
    p->work_bytes -= charged < p->work_bytes ? charged : p->work_bytes;
    if (p->inflight) p->inflight--;
    if (p->park_head) endpoint_park_wake(ep, 0);
}

int endpoint_peer_alone(endpoint_t *ep, const char *peer, size_t peer_len, uint64_t serial) {
    /* a worker's: its own calls of that peer (the control's waiting ones
     * and the other workers' are not seen here) */
    if (ep->proxy.reply) return idset_get(ep->proxy_calls, peer, peer_len) <= 1;
    if (!serial) return 0;
    peer_t *p = peers_find(ep->peers, peer, peer_len);
    return p && p->serial == serial && p->inflight <= 1 && !p->park_head;
}

int endpoint_reply_error(endpoint_t *ep, const char *peer, size_t peer_len,
                         const char *user, size_t user_len,
                         const uint8_t *uuid, const char *name, const char *message,
                         size_t message_len, const char *traceback) {
    return endpoint_answer_error(ep, peer, peer_len, 0, user, user_len, uuid, name, message,
                                 message_len, traceback);
}

int endpoint_answer_error(endpoint_t *ep, const char *peer, size_t peer_len, uint64_t serial,
                          const char *user, size_t user_len,
                          const uint8_t *uuid, const char *name, const char *message,
                          size_t message_len, const char *traceback) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (!traceback) traceback = "";
    int rc = message_pack_error(&pk, name, strlen(name), message, message_len,
                                traceback, strlen(traceback));
    if (rc == 0) rc = s_reply(ep, peer, peer_len, serial, user, user_len, uuid, FRAME_ERROR,
                              sb.data, sb.size, 0);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* --- receiving --- */

static void s_on_invalid(endpoint_t *ep, const frame_message_t *m) {
    /* Never answer what could itself be a reply or a heartbeat: an ERROR to
     * an ERROR could ping-pong between two hosts. */
    int answerable = m->uuid && m->type != FRAME_OK && m->type != FRAME_ERROR &&
                     m->type != FRAME_HEARTBEAT;
    ENDPOINT_REFUSAL(ep, answerable ? "refused a message: answered ProtocolError" : "refused a message",
                     LOG_ID("peer", m->peer ? m->peer : "", m->peer_len), LOG_STR("reason", m->reason),
                     LOG_INT("frames", m->count));
    if (answerable)
        endpoint_reply_error(ep, m->peer, m->peer_len, NULL, 0, m->uuid, "ProtocolError",
                             m->reason, strlen(m->reason), "");
}

/* A peer past its budget and BUSY_SLACK more, with replies waiting to
 * leave: what it sends (a refused WORK, a HELLO, a malformed frame with a
 * uuid) goes unanswered, or answering a peer that never reads would grow
 * the host without bound. Returns 1 when it is not answered. */
static int s_unanswered(endpoint_t *ep, const frame_message_t *m, const peer_t *p) {
    size_t used = p && p->out_head ? endpoint_out_used(p) : 0;
    if (used <= ep->opt.max_peer_queue + BUSY_SLACK) return 0;
    ep->stats.busy_unanswered++;
    ENDPOINT_REFUSAL(ep, "message left unanswered: its peer is over its budget and not reading",
                     LOG_ID("peer", m->peer, m->peer_len), LOG_INT("held_bytes", used));
    return 1;
}

/* WORK from `p` past its budget: BusyError, at once, not run. A peer that
 * keeps sending while it reads nothing gets no answer past BUSY_SLACK more
 * bytes queued: its calls end by their own timeout. */
static void s_refuse_busy(endpoint_t *ep, const frame_message_t *m, peer_t *p, size_t used) {
    char text[160];
    ep->stats.busy_refused++;
    if (s_unanswered(ep, m, p)) return;
    ENDPOINT_REFUSAL(ep, "WORK refused: answered BusyError", LOG_ID("peer", m->peer, m->peer_len),
                     LOG_INT("held_bytes", used), LOG_INT("max_peer_queue", ep->opt.max_peer_queue));
    int n = snprintf(text, sizeof text, "too much is queued for this peer (max_peer_queue %zu bytes): "
                     "read your replies, then try again", ep->opt.max_peer_queue);
    endpoint_reply_error(ep, m->peer, m->peer_len, NULL, 0, m->uuid, "BusyError", text, (size_t)n, "");
}

/* A WORK that would wait its turn but cannot: a stop began, or no memory. */
__attribute__((cold, noinline))
static void s_refuse_unparked(endpoint_t *ep, const frame_message_t *m) {
    const char *name = ep->park_refusal ? ep->park_refusal : "MemoryError";
    const char *text = ep->park_refusal ? ep->park_refusal_text
                                        : "out of memory: no room to keep this call until its turn";
    ep->stats.calls_unstarted++;
    endpoint_reply_error(ep, m->peer, m->peer_len, NULL, 0, m->uuid, name, text, strlen(text), "");
}

void endpoint_deliver_work(endpoint_t *ep, const frame_message_t *m) {
    if (!ep->ev.on_work || !ep->ev.on_work(ep->ev.ctx, ep, m))
        endpoint_release(ep, m->peer, m->peer_len, m->serial, m->charged);
}

/* WORK: admitted within its sender's budget (one message always fits a
 * peer that holds nothing), then handed on, or kept until its sender may
 * start another call (endpoint_park.c). It is charged its body plus
 * WORK_COST: a call's task and coroutine outweigh a tiny body many times. */
static void s_on_work(endpoint_t *ep, frame_message_t *m, peer_t *p) {
    m->serial = 0;
    m->charged = 0;
    m->idle_sender = p && p->inflight == 0 && !p->park_head;
    if (p) {
        size_t used = endpoint_out_used(p), cost = m->body_len + WORK_COST;
        if (used > 0 && used + cost > ep->opt.max_peer_queue) {
            s_refuse_busy(ep, m, p, used);
            return;
        }
        p->work_bytes += cost;
        m->serial = p->serial;
        m->charged = cost;
        if (__builtin_expect(p->park_head || !endpoint_park_may_start(ep, p), 0)) {
            if (!ep->park_refusal && endpoint_park(ep, p, m) == 0) return;
            p->work_bytes -= cost;
            s_refuse_unparked(ep, m);
            return;
        }
        p->inflight++;
    }
    /* Read after its connection closed (it was on its way), or that close
     * heard while on_work ran Lua: it runs (a caller may send and leave
     * without waiting) but stopped from its start, as the calls of that
     * connection were at its close. */
    int closed = p && p->closed;
    uint64_t serial = m->serial, gone = ep->callers_gone;
    endpoint_deliver_work(ep, m);
    if (__builtin_expect(closed || ep->callers_gone != gone, 0))
        endpoint_recheck_caller(ep, serial, m->peer, m->peer_len);
}

/* Does `m` come from routing id `peer` carrying identity `user`? */
static int s_from(const frame_message_t *m, const char *peer, size_t peer_len,
                  const char *user, size_t user_len) {
    return m->peer_len == peer_len && memcmp(m->peer, peer, peer_len) == 0 &&
           m->user_len == user_len && memcmp(m->user, user, user_len) == 0;
}
/* HELLO goes to the server the call went to, never to whoever answered. */
static void s_send_hello(endpoint_t *ep, const char *peer, size_t peer_len) {
    char *copy = malloc(peer_len);
    if (!copy) return;                           /* calls end by their timeout */
    memcpy(copy, peer, peer_len);
    free(ep->hello_peer);
    ep->hello_peer = copy;
    ep->hello_peer_len = peer_len;
    frame_new_uuid(ep->hello_uuid);
    ep->hello_pending = 1;
    ep->hello_tries++;
    loop_touch(ep->loop, ep->socket);
    if (frame_send(ep->socket, copy, peer_len, ep->hello_uuid, FRAME_UUID_SIZE, FRAME_HELLO,
                   ep->hello_body, ep->hello_len) < 0)
        ep->hello_pending = 0;                   /* calls end by their timeout */
}

/* AUTHENTICATED or UNAUTHORIZED for our HELLO. Returns 1 when handled. */
static int s_on_hello_answer(endpoint_t *ep, const frame_message_t *m) {
    if (!ep->hello_pending || memcmp(m->uuid, ep->hello_uuid, FRAME_UUID_SIZE) != 0) return 0;
    if (!s_from(m, ep->hello_peer, ep->hello_peer_len, ep->hello_peer, ep->hello_peer_len)) {
        ENDPOINT_REFUSAL(ep, "dropped an answer to our HELLO: our HELLO went to another peer",
                         LOG_ID("peer", m->peer, m->peer_len));
        return 1;
    }
    ep->hello_pending = 0;
    if (m->type == FRAME_AUTHENTICATED) {
        ep->hello_tries = 0;
        for (endpoint_call_t *c = ep->first; c; c = c->next) {
            if (!c->awaiting_auth) continue;
            c->awaiting_auth = 0;
            if (!c->queued)                      /* else it leaves from its queue */
                endpoint_out_send(ep, peers_find(ep->peers, c->peer, c->peer_len), c, c->peer,
                                  c->peer_len, c->user, c->user_len, c->uuid, FRAME_UUID_SIZE,
                                  FRAME_WORK, c->body, c->body_len);
        }
    } else if (ep->hello_tries < ep->hello_max_retries) {
        s_send_hello(ep, ep->hello_peer, ep->hello_peer_len);
    } else {
        ENDPOINT_LOG(ep, LOG_WARN, "the peer refused our login: giving up", LOG_ID("peer", m->peer, m->peer_len),
                     LOG_INT("tries", ep->hello_tries));
        ep->hello_tries = 0;
        /* one at a time, from the head each time: callbacks may end calls */
        endpoint_enter(ep);
        int again = 1;
        while (again && !ep->closing) {
            again = 0;
            for (endpoint_call_t *c = ep->first; c; c = c->next)
                if (c->awaiting_auth) {
                    endpoint_fail_call(ep, c, "UnauthorizedError", "the peer refused our login");
                    again = 1;
                    break;
                }
        }
        endpoint_leave(ep);
    }
    return 1;
}

static void s_on_reply(endpoint_t *ep, const frame_message_t *m) {
    if (m->type == FRAME_UNAUTHORIZED && s_on_hello_answer(ep, m)) return;
    endpoint_call_t *c = s_find(ep, m->uuid);
    const char *what = m->type == FRAME_OK ? "OK" : m->type == FRAME_ERROR ? "ERROR" : "UNAUTHORIZED";
    if (!c) {
        ENDPOINT_REFUSAL(ep, "dropped a reply for no pending call (late or forged)",
                         LOG_STR("type", what), LOG_ID("peer", m->peer, m->peer_len));
        return;
    }
    /* only the peer the WORK went to settles it: a third peer that learnt
     * the uuid gets nowhere, and the call still waits for its answer */
    if (!s_from(m, c->peer, c->peer_len, c->user, c->user_len)) {
        ENDPOINT_REFUSAL(ep, "dropped a reply: that call went to another peer",
                         LOG_STR("type", what), LOG_ID("peer", m->peer, m->peer_len));
        return;
    }
    /* log in, then replay it; a peer that takes every login and refuses
     * the call each time would keep both going until the call's timeout
     * (an attack round: thousands of HELLOs a second): max_retries logins */
    if (m->type == FRAME_UNAUTHORIZED && ep->hello_body && c->body && c->logins < ep->hello_max_retries) {
        c->logins++;
        c->awaiting_auth = 1;
        if (!ep->hello_pending) s_send_hello(ep, c->peer, c->peer_len);
        return;
    }
    s_unlink(ep, c);
    endpoint_enter(ep);
    if (m->type == FRAME_UNAUTHORIZED) {
        const char *why = c->logins ? "the peer refused the call again after our login"
                        : m->body_len ? "peer requires authentication" : "unauthorized";
        if (c->relay) c->relay->failed(c->relay, "UnauthorizedError", why);
        else if (ep->ev.on_call_failed) ep->ev.on_call_failed(ep->ev.ctx, ep, c, "UnauthorizedError", why);
    } else {
        s_answered(ep, c, m->type, m->body, m->body_len);
    }
    s_free_call(c);
    endpoint_leave(ep);
}

/* The sender's identity, from the directory entry of its routing id (valid
 * until the directory next changes), or what its message carries. */
static void s_identify(frame_message_t *m, const peer_t *p) {
    if (p) {
        m->user = p->user_id;
        m->user_len = p->user_id_len;
        m->logged_in = p->logged_in;
    } else {                                     /* out of memory, or forgotten by a hook */
        int carried = m->user_id && m->user_id[0];
        m->user = carried ? m->user_id : m->peer;
        m->user_len = carried ? strlen(m->user_id) : m->peer_len;
        m->logged_in = 0;
    }
}

/* Can messages carry a ZAP User-Id? Only under a security mechanism or a
 * ZAP domain (asked once per batch of messages, not per message): libzmq
 * 4.3 asks ZAP nothing for NULL without a domain, whatever hooks the
 * endpoint has, so a strict endpoint without either skips the lookup. */
static int s_secured(endpoint_t *ep) {
    int mechanism = ZMQ_NULL;
    size_t n = sizeof mechanism;
    char domain[2] = "";
    size_t dn = sizeof domain;
    if (zmq_getsockopt(ep->socket, ZMQ_MECHANISM, &mechanism, &n) < 0) return 1;
    if (mechanism != ZMQ_NULL) return 1;
    return zmq_getsockopt(ep->socket, ZMQ_ZAP_DOMAIN, domain, &dn) < 0 || domain[0] != '\0';
}

static void s_on_readable(loop_t *loop, void *socket, void *arg) {
    (void)loop;
    endpoint_t *ep = arg;
    frame_message_t m;
    int got = 0, is_new;
    double now = loop_now();
    endpoint_enter(ep);
    /* disconnects first: a routing id freed by one is not its old owner's
     * (the drain only when the monitor's fd says there is an event) */
    endpoint_catch_up_monitor(ep);
    int with_user_id = s_secured(ep);
    /* Sparse traffic (each of the last two wakes brought one message):
     * read one and stop. The loop looks at this socket again before it
     * sleeps (a handler leaves it stale), after the tasks ran and sent,
     * and that look replaces the EAGAIN a full read ends on: two system
     * calls a call fewer at window 1. Otherwise reads go on to EAGAIN. */
    int budget = RECV_BUDGET;
    if (loop_woken(ep->loop)) {
        if (ep->last_wake_batch == 1 && ep->wake_batch == 1) budget = 1;
        ep->last_wake_batch = ep->wake_batch;
        ep->wake_batch = 0;
    }
    size_t batch_bytes = 0;
    for (; budget > 0 && !ep->closing && batch_bytes < RECV_BYTES_BUDGET; budget--) {
        if (frame_recv(socket, &m) < 0) break;
        got = 1;
        ep->wake_batch++;
        enum frame_kind kind = frame_decode_from(&m, with_user_id);
        batch_bytes += m.peer_len + m.body_len;
        ep->stats.bytes_in += m.body_len + STATS_MSG_BYTES;
        if (kind == FRAME_KIND_BAD_ID) {
            ENDPOINT_REFUSAL(ep, "refused a message: its routing id is too long: dropped",
                             LOG_INT("id_bytes", m.peer_len), LOG_INT("max", FRAME_MAX_ID),
                             LOG_BYTES("starts", m.peer, m.peer_len < 16 ? m.peer_len : 16));
            frame_close(&m);
            continue;
        }
        /* every message from a peer says it is there */
        peer_t *p = peers_seen(ep->peers, m.peer, m.peer_len, m.user_id,
                               m.user_id ? strlen(m.user_id) : 0, m.fd, endpoint_fd_closed(ep, m.fd),
                               now, &is_new);
        if (p && is_new) endpoint_out_adopt(ep, p);
        if (p && ep->notify_seen && ep->ev.on_peer_seen) {
            ep->ev.on_peer_seen(ep->ev.ctx, ep, p);
            if (ep->closing) { frame_close(&m); break; }   /* the hook closed it */
            p = peers_find(ep->peers, m.peer, m.peer_len); /* it may have changed the directory */
        }
        s_identify(&m, p);
        switch (kind) {
        case FRAME_KIND_PROBE:
        case FRAME_KIND_BAD_ID:          /* handled above */
            break;
        case FRAME_KIND_INVALID:
            if (!s_unanswered(ep, &m, p)) s_on_invalid(ep, &m);
            break;
        case FRAME_KIND_MESSAGE:
            switch (m.type) {
            case FRAME_WORK:
                s_on_work(ep, &m, p);
                break;
            case FRAME_OK: case FRAME_ERROR: case FRAME_UNAUTHORIZED:
                s_on_reply(ep, &m);
                break;
            case FRAME_HELLO:
                if (s_unanswered(ep, &m, p)) {
                    /* not reading: no answer */
                } else if (ep->ev.on_hello) {
                    ep->ev.on_hello(ep->ev.ctx, ep, &m);
                } else {                 /* no authentication configured: welcome */
                    static const char text[] = "Welcome";
                    endpoint_reply(ep, m.peer, m.peer_len, NULL, 0, m.uuid, FRAME_AUTHENTICATED,
                                   text, sizeof text - 1);
                }
                break;
            case FRAME_AUTHENTICATED:
                s_on_hello_answer(ep, &m);
                break;
            default:                   /* HEARTBEAT: seen, no answer */
                break;
            }
            break;
        }
        /* heard on a connection already closed (in flight at the disconnect) */
        if (!ep->closing && (p = peers_find(ep->peers, m.peer, m.peer_len)) && p->closed)
            endpoint_forget_closed(ep, p);
        frame_close(&m);
    }
    if (endpoint_leave(ep)) return;
    /* Traffic from a peer often means it is routable now. */
    if (got && ep->nout) endpoint_out_flush(ep);
}

/* --- life cycle --- */

static void s_on_peer_free(void *ctx, peer_t *p) {
    if (!p->closed) endpoint_caller_gone(ctx, p);   /* a closed one's were stopped at its close */
    endpoint_park_forget(ctx, p);
    endpoint_out_forget(ctx, p);
}

static void s_on_identity(void *ctx, const char *user, size_t len, int present) {
    endpoint_t *ep = ctx;
    ep->ev.on_identity(ep->ev.ctx, ep, user, len, present);
}

/* An entry LRU eviction must pass over: something is held for it. */
static int s_peer_busy(const peer_t *p) {
    return p->inflight || p->park_head || p->out_head || endpoint_out_used(p);
}

endpoint_t *endpoint_new(void *zmq_context, loop_t *loop, const endpoint_options_t *o,
                         const endpoint_events_t *ev) {
    endpoint_t *ep = calloc(1, sizeof *ep);
    if (!ep) return NULL;
    ep->loop = loop;
    ep->ev = *ev;
    ep->opt = *o;
    ep->opt.routing_id = NULL;                  /* not kept: the caller owns it */
    ep->opt.server_id = NULL;                   /* copied */
    if (o->server_id && o->server_id_len <= FRAME_MAX_ID) {
        memcpy(ep->server_id, o->server_id, o->server_id_len);
        ep->server_id_len = o->server_id_len;
    }
    ep->peers = peers_new(s_on_peer_free, ep);
    if (ep->peers) peers_set_max(ep->peers, o->max_peers, s_peer_busy);
    if (ep->peers && ev->on_identity) peers_set_identity_listener(ep->peers, s_on_identity);
    ep->socket = ep->peers ? zmq_socket(zmq_context, ZMQ_ROUTER) : NULL;
    if (!ep->socket) { peers_destroy(&ep->peers); free(ep); return NULL; }
    int one = 1, linger = o->linger_ms;
    int64_t maxmsg = o->max_message_size > 0 ? o->max_message_size : -1;
    if (zmq_setsockopt(ep->socket, ZMQ_ROUTER_MANDATORY, &one, sizeof one) < 0 ||
        zmq_setsockopt(ep->socket, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_setsockopt(ep->socket, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0 ||
        (o->routing_id && zmq_setsockopt(ep->socket, ZMQ_ROUTING_ID, o->routing_id,
                                         strlen(o->routing_id)) < 0) ||
        (o->probe_router && zmq_setsockopt(ep->socket, ZMQ_PROBE_ROUTER, &one, sizeof one) < 0) ||
        endpoint_monitor_start(ep, zmq_context) < 0 ||
        loop_add_socket(loop, ep->socket, s_on_readable, ep) < 0) {
        int e = errno;
        if (ep->monitor) loop_remove_socket(loop, ep->monitor);
        endpoint_monitor_stop(ep);
        zmq_close(ep->socket);
        peers_destroy(&ep->peers);
        free(ep);
        errno = e;
        return NULL;
    }
    return ep;
}

int endpoint_set_login(endpoint_t *ep, const char *login, size_t login_len,
                       const char *password, size_t password_len, int max_retries) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (message_pack_hello(&pk, login, login_len, password, password_len)) {
        msgpack_sbuffer_destroy(&sb);
        return -1;
    }
    free(ep->hello_body);
    ep->hello_len = sb.size;                    /* release() resets it */
    ep->hello_body = msgpack_sbuffer_release(&sb);
    ep->hello_max_retries = max_retries > 0 ? max_retries : 1;
    return 0;
}

static void s_free(endpoint_t *ep) {
    endpoint_connects_free(ep);
    free(ep->hello_body);
    free(ep->hello_peer);
    free(ep->closed_fds);
    endpoint_out_clear(ep);
    peers_destroy(&ep->peers);                  /* before the socket: meters outlive it */
    idset_destroy(&ep->proxy_calls);
    endpoint_monitor_stop(ep);
    zmq_close(ep->socket);
    free(ep->buckets);
    free(ep);
}

void endpoint_destroy(endpoint_t **p) {
    if (!p || !*p) return;
    endpoint_t *ep = *p;
    *p = NULL;
    if (ep->closing) return;
    endpoint_refuse_parked(ep, "PeerLostError", "the endpoint was closed before the call ran");
    endpoint_out_flush(ep);                     /* last chance for queued replies */
    ep->closing = 1;
    loop_cancel_timer(ep->loop, ep->park_timer);
    ep->park_timer = NULL;
    loop_cancel_timer(ep->loop, ep->expiry);
    ep->expiry = NULL;
    loop_cancel_timer(ep->loop, ep->refuse);
    ep->refuse = NULL;
    endpoint_heartbeat_stop(ep);
    loop_remove_socket(ep->loop, ep->socket);
    if (ep->monitor) loop_remove_socket(ep->loop, ep->monitor);
    endpoint_enter(ep);
    while (ep->first) endpoint_fail_call(ep, ep->first, "PeerLostError", "the endpoint was closed");
    endpoint_out_clear(ep);
    endpoint_leave(ep);                         /* frees now, or when the caller unwinds */
}

int endpoint_bind(endpoint_t *ep, const char *address, char *actual, size_t actual_size) {
    loop_touch(ep->loop, ep->socket);            /* binding reads the socket's commands */
    if (zmq_bind(ep->socket, address) < 0) return -1;
    if (actual && actual_size) {
        size_t n = actual_size;
        if (zmq_getsockopt(ep->socket, ZMQ_LAST_ENDPOINT, actual, &n) < 0) actual[0] = '\0';
    }
    return 0;
}

int endpoint_connect(endpoint_t *ep, const char *address) {
    loop_touch(ep->loop, ep->socket);            /* connecting reads the socket's commands */
    if (zmq_connect(ep->socket, address) < 0) return -1;
    /* connected either way: without room to note it, refusals go unjudged */
    if (endpoint_note_connect(ep, address) < 0) ep->connects_untracked = 1;
    return 0;
}
