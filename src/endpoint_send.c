/*
 * endpoint_send: what leaves an endpoint (see endpoint_internal.h).
 *
 * Each peer in the directory has its own FIFO of messages ZeroMQ refused
 * (EAGAIN: its pipe is full), so one slow reader's backlog is never walked
 * for another peer's reply; peers with a backlog are on one list the retry
 * timer visits. WORK to a routing id not in the directory (a client's server
 * before it answers) waits on a separate, bounded queue until the routing id
 * is heard from, then joins that peer's FIFO in order.
 *
 * A peer's budget (max_peer_queue) counts the bodies of its WORK still being
 * answered, its FIFO, and what was handed to ZeroMQ for it and has not left:
 * bodies of TRACK_MIN bytes or more go out as zero-copy zmq messages whose
 * free function (run by libzmq, in its I/O thread, once the bytes are written
 * to the connection or dropped with it) subtracts them from the peer's meter.
 * Smaller bodies are copied by zmq_send and not metered: at most the send
 * high-water mark (1,000 messages) of them sit in a peer's pipe, so the
 * untracked part is bounded by about 1,000 x TRACK_MIN bytes per peer.
 */
#include "endpoint_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define TRACK_MIN  1024           /* bodies metered while in ZeroMQ, bytes */
#define RETRY_MIN  0.001          /* queue retry backoff, seconds */
#define RETRY_MAX  0.1

struct endpoint_meter {
    atomic_size_t bytes;          /* handed to ZeroMQ, not yet released */
    atomic_uint refs;             /* the peer entry, plus one per message */
};

typedef struct meter_block {      /* a metered body: the header, then the bytes */
    struct endpoint_meter *meter;
    size_t len;
    char data[];
} meter_block_t;

static void s_meter_unref(struct endpoint_meter *m) {
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) free(m);
}

/* A message of `len` bytes is handed to ZeroMQ, or has left (any thread). */
static void s_meter_charge(struct endpoint_meter *m, size_t len) {
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->bytes, len, memory_order_relaxed);
}

static void s_meter_discharge(struct endpoint_meter *m, size_t len) {
    atomic_fetch_sub_explicit(&m->bytes, len, memory_order_relaxed);
    s_meter_unref(m);
}

/* libzmq's free function for a metered copy. */
static void s_meter_release(void *data, void *hint) {
    (void)hint;
    meter_block_t *b = (meter_block_t *)((char *)data - offsetof(meter_block_t, data));
    struct endpoint_meter *m = b->meter;
    size_t len = b->len;
    free(b);
    s_meter_discharge(m, len);
}

size_t endpoint_out_used(const peer_t *p) {
    size_t zmq = p->meter ? atomic_load_explicit(&p->meter->bytes, memory_order_relaxed) : 0;
    return p->work_bytes + p->out_bytes + zmq;
}

/* `p`'s meter, made when first needed. Returns 0, or -1 (out of memory). */
static int s_meter(peer_t *p) {
    if (p->meter) return 0;
    p->meter = malloc(sizeof *p->meter);
    if (!p->meter) return -1;
    atomic_init(&p->meter->bytes, 0);
    atomic_init(&p->meter->refs, 1);
    return 0;
}

/* frame_send, metered for `p` when the body is large enough to matter. */
static int s_send_metered(endpoint_t *ep, peer_t *p, const char *peer, size_t peer_len,
                          const uint8_t *uuid, size_t uuid_len, int type, const void *body, size_t len) {
    loop_touch(ep->loop, ep->socket);
    if (!p || len < TRACK_MIN || s_meter(p) < 0)
        return frame_send(ep->socket, peer, peer_len, uuid, uuid_len, type, body, len);
    meter_block_t *b = malloc(sizeof *b + len);
    if (!b) return frame_send(ep->socket, peer, peer_len, uuid, uuid_len, type, body, len);
    b->meter = p->meter;
    b->len = len;
    memcpy(b->data, body, len);
    s_meter_charge(p->meter, len);
    zmq_msg_t msg;
    if (zmq_msg_init_data(&msg, b->data, len, s_meter_release, NULL) < 0) {
        s_meter_release(b->data, NULL);
        errno = ENOMEM;
        return -1;
    }
    if (frame_send_msg(ep->socket, peer, peer_len, uuid, uuid_len, type, &msg) < 0) {
        int e = errno;
        zmq_msg_close(&msg);                     /* not taken: released here */
        errno = e;
        return -1;
    }
    return 0;
}

/* ... counted in the stats once it left (a send refused is tried again) */
static int s_send(endpoint_t *ep, peer_t *p, const char *peer, size_t peer_len,
                  const uint8_t *uuid, size_t uuid_len, int type, const void *body, size_t len) {
    int rc = s_send_metered(ep, p, peer, peer_len, uuid, uuid_len, type, body, len);
    if (rc == 0) ep->stats.bytes_out += len + STATS_MSG_BYTES;
    return rc;
}

/* A body handed over by the caller (malloc'd) and sent without a copy:
 * libzmq frees it, and the meter forgets it, once it left. */
typedef struct owned_hint {
    struct endpoint_meter *meter;
    size_t len;
} owned_hint_t;

static void s_owned_release(void *data, void *hint) {
    owned_hint_t *o = hint;
    struct endpoint_meter *m = o->meter;
    size_t len = o->len;
    free(data);
    free(o);
    s_meter_discharge(m, len);
}

/* --- queues --- */

static void s_retry(loop_t *loop, loop_timer_t *t, void *arg);

static void s_arm_retry(endpoint_t *ep) {
    if (ep->retry || (!ep->blocked && !ep->unroutable.head)) return;
    ep->retry = loop_add_timer(ep->loop, ep->retry_delay, s_retry, ep);
}

static endpoint_out_t *s_out_new(endpoint_call_t *call, const char *peer, size_t peer_len,
                                 const char *user, size_t user_len, const uint8_t *uuid,
                                 size_t uuid_len, int type, const void *body, size_t body_len) {
    endpoint_out_t *o = malloc(sizeof *o + peer_len + user_len + body_len);
    if (!o) return NULL;
    o->next = NULL;
    o->call = call;
    o->dead = 0;
    memcpy(o->uuid, uuid, uuid_len);
    o->uuid_len = uuid_len;
    o->type = type;
    o->peer_len = peer_len;
    o->user_len = user_len;
    o->check_user = user != NULL;
    o->body_len = body_len;
    memcpy(o->data, peer, peer_len);
    if (user_len) memcpy(o->data + peer_len, user, user_len);
    if (body_len) memcpy(o->data + peer_len + user_len, body, body_len);
    if (call) call->queued = o;
    return o;
}

static void s_push(endpoint_queue_t *q, endpoint_out_t *o) {
    o->next = NULL;
    if (q->tail) q->tail->next = o; else q->head = o;
    q->tail = o;
}

static endpoint_out_t *s_pop(endpoint_queue_t *q) {
    endpoint_out_t *o = q->head;
    if (o && !(q->head = o->next)) q->tail = NULL;
    return o;
}

static void s_out_free(endpoint_t *ep, endpoint_out_t *o) {
    if (o->call) o->call->queued = NULL;
    ep->nout--;
    free(o);
}

static void s_block(endpoint_t *ep, peer_t *p) {
    if (p->blocked_prev || ep->blocked == p) return;
    p->blocked_prev = NULL;
    p->blocked_next = ep->blocked;
    if (ep->blocked) ep->blocked->blocked_prev = p;
    ep->blocked = p;
    if (!ep->retry) ep->retry_delay = RETRY_MIN;
    s_arm_retry(ep);
}

static void s_unblock(endpoint_t *ep, peer_t *p) {
    if (!p->blocked_prev && ep->blocked != p) return;
    if (p->blocked_prev) p->blocked_prev->blocked_next = p->blocked_next;
    else ep->blocked = p->blocked_next;
    if (p->blocked_next) p->blocked_next->blocked_prev = p->blocked_prev;
    p->blocked_prev = p->blocked_next = NULL;
}

/* What a queued message holds, as its peer's budget counts it: the whole
 * entry, not only its body (a 7-byte answer costs some 100 bytes here). */
static size_t s_cost(const endpoint_out_t *o) {
    return sizeof *o + o->peer_len + o->user_len + o->body_len;
}

static void s_peer_push(endpoint_t *ep, peer_t *p, endpoint_out_t *o) {
    endpoint_queue_t q = { p->out_head, p->out_tail };
    s_push(&q, o);
    p->out_head = q.head;
    p->out_tail = q.tail;
    p->out_bytes += s_cost(o);
    ep->nout++;
    s_block(ep, p);
}

static int s_unroutable_push(endpoint_t *ep, endpoint_out_t *o, int bounded) {
    /* bounded in count and bytes: only this host's own calls wait here */
    /* (entries moved here unbounded may have passed the byte bound: no wrap) */
    if (bounded && (ep->nout >= ep->opt.max_outbox ||
                    ep->unroutable_bytes >= ep->opt.max_outbox_bytes ||
                    o->body_len > ep->opt.max_outbox_bytes - ep->unroutable_bytes)) {
        if (o->call) o->call->queued = NULL;
        free(o);
        errno = ENOBUFS;
        return -1;
    }
    s_push(&ep->unroutable, o);
    ep->unroutable_bytes += o->body_len;
    ep->nout++;
    if (!ep->retry) ep->retry_delay = RETRY_MIN;
    s_arm_retry(ep);
    return 0;
}

static void s_log_dropped(endpoint_t *ep, const char *peer, size_t len, const char *why) {
    ep->stats.replies_dropped++;
    ENDPOINT_REFUSAL(ep, "reply dropped", LOG_ID("peer", peer, len), LOG_STR("reason", why));
}

/* May what is queued for user `user` still go to `p`? Only while it carries
 * that identity on the connection the directory knows (DESIGN.md 4.1). */
static int s_carries(const endpoint_t *ep, const peer_t *p, const endpoint_out_t *o) {
    if (!o->check_user || !ep->strict) return 1;
    return p && !p->closed && p->user_id_len == o->user_len &&
           memcmp(p->user_id, o->data + o->peer_len, o->user_len) == 0;
}

int endpoint_out_send(endpoint_t *ep, peer_t *p, endpoint_call_t *call,
                      const char *peer, size_t peer_len, const char *user, size_t user_len,
                      const uint8_t *uuid, size_t uuid_len, int type,
                      const void *body, size_t body_len) {
    int waits = p ? p->out_head != NULL : call && ep->unroutable.head != NULL;
    if (!waits) {
        if (s_send(ep, p, peer, peer_len, uuid, uuid_len, type, body, body_len) == 0) return 0;
        if (errno != EAGAIN && errno != EHOSTUNREACH) return -1;
        /* gone: a reply has nobody to go to; WORK may wait for the routing id */
        if (errno == EHOSTUNREACH && !(call && ep->opt.queue_unroutable)) return -1;
        if (errno == EHOSTUNREACH) p = NULL;
    }
    endpoint_out_t *o = s_out_new(call, peer, peer_len, user, user_len, uuid, uuid_len, type,
                                  body, body_len);
    if (!o) { errno = ENOMEM; return -1; }
    if (p) { s_peer_push(ep, p, o); return 0; }
    return s_unroutable_push(ep, o, 1);
}

int endpoint_out_send_owned(endpoint_t *ep, peer_t *p, const char *peer, size_t peer_len,
                            const char *user, size_t user_len, const uint8_t *uuid, int type,
                            char *body, size_t body_len) {
    owned_hint_t *hint = NULL;
    if (p && !p->out_head && body_len >= TRACK_MIN && s_meter(p) == 0)
        hint = malloc(sizeof *hint);
    if (!hint) {                                 /* the copying path, then the body goes */
        int rc = endpoint_out_send(ep, p, NULL, peer, peer_len, user, user_len, uuid,
                                   FRAME_UUID_SIZE, type, body, body_len);
        int e = errno;
        free(body);
        errno = e;
        return rc;
    }
    loop_touch(ep->loop, ep->socket);
    hint->meter = p->meter;
    hint->len = body_len;
    s_meter_charge(p->meter, body_len);
    zmq_msg_t msg;
    if (zmq_msg_init_data(&msg, body, body_len, s_owned_release, hint) < 0) {
        s_owned_release(body, hint);
        errno = ENOMEM;
        return -1;
    }
    if (frame_send_msg(ep->socket, peer, peer_len, uuid, FRAME_UUID_SIZE, type, &msg) == 0) {
        ep->stats.bytes_out += body_len + STATS_MSG_BYTES;
        return 0;
    }
    int rc = -1, e = errno;
    if (e == EAGAIN) {                           /* its pipe is full: a copy waits in its FIFO */
        endpoint_out_t *o = s_out_new(NULL, peer, peer_len, user, user_len, uuid, FRAME_UUID_SIZE,
                                      type, body, body_len);
        if (o) { s_peer_push(ep, p, o); rc = 0; } else e = ENOMEM;
    }
    zmq_msg_close(&msg);                         /* not taken: released here */
    errno = e;
    return rc;
}

/* Send what waits for `p`, in order, until ZeroMQ says its pipe is full. */
static void s_flush_peer(endpoint_t *ep, peer_t *p) {
    endpoint_queue_t q = { p->out_head, p->out_tail };
    endpoint_out_t *o;
    while ((o = q.head)) {
        if (o->dead) {
            /* its call ended: nothing to send */
        } else if (!s_carries(ep, p, o)) {
            if (!o->call) s_log_dropped(ep, o->data, o->peer_len, "its routing id is closed or carries another user");
        } else if (s_send(ep, p, o->data, o->peer_len, o->uuid, o->uuid_len, o->type,
                          o->data + o->peer_len + o->user_len, o->body_len) < 0) {
            if (errno == EAGAIN) break;
            if (errno == EHOSTUNREACH && o->call && ep->opt.queue_unroutable) {
                s_pop(&q);                       /* the connection is gone: WORK waits */
                p->out_bytes -= s_cost(o);
                ep->nout--;
                s_unroutable_push(ep, o, 0);
                continue;
            }
            if (!o->call) s_log_dropped(ep, o->data, o->peer_len, "peer is gone");
        }
        s_pop(&q);
        p->out_bytes -= s_cost(o);
        s_out_free(ep, o);
    }
    p->out_head = q.head;
    p->out_tail = q.tail;
    if (!q.head) s_unblock(ep, p);
}

/* WORK waiting for a routing id, sent in order once it is routable. The
 * first that cannot leave ends the pass: this queue holds a client's calls
 * to a server not connected yet, almost always one routing id. */
static void s_flush_unroutable(endpoint_t *ep) {
    endpoint_out_t *o;
    while ((o = ep->unroutable.head)) {
        peer_t *p = o->dead ? NULL : peers_find(ep->peers, o->data, o->peer_len);
        s_pop(&ep->unroutable);
        ep->unroutable_bytes -= o->body_len;
        if (p && !p->closed) {                   /* heard from: its own FIFO keeps the order */
            ep->nout--;
            s_peer_push(ep, p, o);
            continue;
        }
        if (!o->dead && s_carries(ep, p, o) &&
            frame_send(ep->socket, o->data, o->peer_len, o->uuid, o->uuid_len, o->type,
                       o->data + o->peer_len + o->user_len, o->body_len) < 0) {
            o->next = ep->unroutable.head;       /* back at the head */
            ep->unroutable.head = o;
            if (!ep->unroutable.tail) ep->unroutable.tail = o;
            ep->unroutable_bytes += o->body_len;
            break;
        }
        s_out_free(ep, o);                       /* sent, or its call ended, or not theirs */
    }
}

void endpoint_out_flush(endpoint_t *ep) {
    loop_touch(ep->loop, ep->socket);
    if (ep->strict && (ep->blocked || ep->unroutable.head)) endpoint_drain_monitor(ep);
    for (peer_t *p = ep->blocked, *next; p; p = next) {
        next = p->blocked_next;
        s_flush_peer(ep, p);
    }
    if (ep->unroutable.head) s_flush_unroutable(ep);
}

static void s_retry(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    endpoint_t *ep = arg;
    ep->retry = NULL;
    endpoint_out_flush(ep);
    ep->retry_delay = ep->retry_delay * 2 > RETRY_MAX ? RETRY_MAX : ep->retry_delay * 2;
    s_arm_retry(ep);
}

void endpoint_out_adopt(endpoint_t *ep, peer_t *p) {
    if (!ep->unroutable.head) return;
    endpoint_queue_t keep = { NULL, NULL };
    endpoint_out_t *o;
    while ((o = s_pop(&ep->unroutable))) {
        if (o->peer_len == p->routing_id_len && memcmp(o->data, p->routing_id, o->peer_len) == 0) {
            ep->unroutable_bytes -= o->body_len;
            ep->nout--;
            s_peer_push(ep, p, o);
        } else {
            s_push(&keep, o);
        }
    }
    ep->unroutable = keep;
}

void endpoint_out_forget(endpoint_t *ep, peer_t *p) {
    endpoint_queue_t q = { p->out_head, p->out_tail };
    endpoint_out_t *o;
    while ((o = s_pop(&q))) {
        p->out_bytes -= s_cost(o);
        if (o->call && !o->dead && ep->opt.queue_unroutable && !ep->closing) {
            ep->nout--;
            s_unroutable_push(ep, o, 0);
            continue;
        }
        if (!o->call && !o->dead && !ep->closing)
            s_log_dropped(ep, o->data, o->peer_len, "peer is gone");
        s_out_free(ep, o);
    }
    p->out_head = p->out_tail = NULL;
    s_unblock(ep, p);
    s_meter_unref(p->meter);
    p->meter = NULL;
}

void endpoint_out_cancel(endpoint_call_t *c) {
    if (!c->queued) return;
    c->queued->dead = 1;
    c->queued->call = NULL;
    c->queued = NULL;
}

void endpoint_out_clear(endpoint_t *ep) {
    loop_cancel_timer(ep->loop, ep->retry);
    ep->retry = NULL;
    endpoint_out_t *o;
    while ((o = s_pop(&ep->unroutable))) s_out_free(ep, o);
    ep->unroutable_bytes = 0;
    for (peer_t *p; (p = ep->blocked); ) {
        for (endpoint_out_t *next; (o = p->out_head); p->out_head = next) {
            next = o->next;
            s_out_free(ep, o);
        }
        p->out_tail = NULL;
        p->out_bytes = 0;
        s_unblock(ep, p);
    }
}
