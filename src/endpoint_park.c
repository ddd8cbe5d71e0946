/*
 * endpoint_park: calls of one peer waiting their turn (see endpoint_internal.h).
 *
 * A budget counts what is held for a peer, but a call's reply does not
 * exist until its handler returns: a peer that sends many small calls for
 * large replies, and never reads, would have them all admitted and answered
 * (2,000 replies of 1 MB made a 2-worker host hold 2 GB). So a peer's
 * admitted calls start only while it has fewer than max_peer_calls running
 * and, while some of its replies still wait to leave, only if those plus
 * one reply of the largest size it has been sent for each call running and
 * the one starting fit its budget (a call always starts when none runs and
 * its replies fit). The rest wait here, in arrival order, their bodies counted against
 * the budget as before.
 *
 * They are handed on from a loop timer, never from inside the release that
 * opened the way (a handler's answer): on_work runs predicates, which must
 * not run inside another call's end. Peers with waiting calls sit on a list
 * the timer visits in turn, each for at most HAND_ON_BATCH calls (calls
 * answered at once free their slot at once), then the next peer: a peer
 * that pipelines deeply gets its running calls refilled once per turn of
 * the loop, after every other peer's messages were read. Replies leave in
 * libzmq's thread, which tells no one: while a peer waits on its replies,
 * the timer looks again, backing off from 1 ms to 50 ms.
 */
#include "endpoint_internal.h"

#include <stdlib.h>
#include <string.h>

#define RECHECK_MIN   0.001        /* a peer waiting on its replies: look again after, seconds */
#define RECHECK_MAX   0.05
#define HAND_ON_BATCH 256          /* calls one peer gets handed on per turn, at most */
/* Bodies kept in their ZeroMQ part rather than copied, bytes. libzmq
 * receives smaller messages into one shared 8 KiB batch buffer: keeping
 * such a part would pin the whole buffer. */
#define MOVE_MIN      16384

typedef struct endpoint_parked {
    struct endpoint_parked *next;
    uint8_t uuid[FRAME_UUID_SIZE];
    size_t peer_len, user_len, body_len;
    size_t charged;                /* what it holds of its peer's budget */
    int logged_in;                 /* the sender had passed a HELLO when it came */
    int moved;                     /* a large body: its ZeroMQ part, taken over (no copy) */
    zmq_msg_t part;
    char data[];                   /* routing id, identity, then a small body */
} endpoint_parked_t;

/* Bytes waiting to leave towards `p`: its FIFO and what ZeroMQ holds. */
static size_t s_replies_held(const peer_t *p) { return endpoint_out_used(p) - p->work_bytes; }

/* Is `p` held back by its calls running (not by its replies)? */
static int s_at_limit(const endpoint_t *ep, const peer_t *p) {
    return ep->opt.max_peer_calls && p->inflight >= ep->opt.max_peer_calls;
}

int endpoint_park_may_start(const endpoint_t *ep, const peer_t *p) {
    if (s_at_limit(ep, p)) return 0;
    size_t held = s_replies_held(p), budget = ep->opt.max_peer_queue;
    if (held >= budget) return 0;
    /* A peer keeping up with its replies runs up to its limit (one large
     * reply long ago must not throttle it for good: a call back nested in
     * a call would wait on itself). One that is not gets room for one
     * reply of the largest size so far, for each call running and the
     * one starting (divided: no overflow). */
    return held == 0 || p->inflight == 0 ||
           p->reply_max <= (budget - held) / ((size_t)p->inflight + 1);
}

static void s_link(endpoint_t *ep, peer_t *p) {
    ep->nparked_peers++;
    p->parked_prev = ep->parked_tail;
    p->parked_next = NULL;
    if (ep->parked_tail) ep->parked_tail->parked_next = p;
    else ep->parked_head = p;
    ep->parked_tail = p;
}

static void s_unlink(endpoint_t *ep, peer_t *p) {
    ep->nparked_peers--;
    if (p->parked_prev) p->parked_prev->parked_next = p->parked_next;
    else ep->parked_head = p->parked_next;
    if (p->parked_next) p->parked_next->parked_prev = p->parked_prev;
    else ep->parked_tail = p->parked_prev;
    p->parked_prev = p->parked_next = NULL;
}

/* The part of `m` that holds its body, for a body worth not copying. */
static zmq_msg_t *s_body_part(frame_message_t *m) {
    if (m->body_len < MOVE_MIN) return NULL;
    for (int i = 0; i < m->kept; i++)
        if (zmq_msg_data(&m->parts[i]) == m->body && zmq_msg_size(&m->parts[i]) == m->body_len)
            return &m->parts[i];
    return NULL;
}

static const char *s_body(endpoint_parked_t *w) {
    return w->moved ? zmq_msg_data(&w->part) : w->data + w->peer_len + w->user_len;
}

static void s_free_parked(endpoint_parked_t *w) {
    if (w->moved) zmq_msg_close(&w->part);
    free(w);
}

int endpoint_park(endpoint_t *ep, peer_t *p, frame_message_t *m) {
    zmq_msg_t *part = s_body_part(m);
    endpoint_parked_t *w = malloc(sizeof *w + m->peer_len + m->user_len + (part ? 0 : m->body_len));
    if (!w) return -1;
    w->moved = 0;
    if (part) {                    /* frame_close then closes an empty part */
        zmq_msg_init(&w->part);
        w->moved = zmq_msg_move(&w->part, part) == 0;
        if (!w->moved) {
            zmq_msg_close(&w->part);
            free(w);
            return -1;
        }
    }
    w->next = NULL;
    memcpy(w->uuid, m->uuid, FRAME_UUID_SIZE);
    w->peer_len = m->peer_len;
    w->user_len = m->user_len;
    w->body_len = m->body_len;
    w->charged = m->charged;
    w->logged_in = m->logged_in;
    memcpy(w->data, m->peer, m->peer_len);
    if (m->user_len) memcpy(w->data + m->peer_len, m->user, m->user_len);
    if (!w->moved && m->body_len) memcpy(w->data + m->peer_len + m->user_len, m->body, m->body_len);
    if (p->park_tail) {
        p->park_tail->next = w;
    } else {
        p->park_head = w;
        s_link(ep, p);
    }
    p->park_tail = w;
    ep->nparked++;
    /* held back by its replies (the timer looks again), or by FIFO order
     * behind calls that may start now; at its limit, a release wakes it */
    if (!s_at_limit(ep, p)) endpoint_park_wake(ep, 0);
    return 0;
}

static endpoint_parked_t *s_pop(endpoint_t *ep, peer_t *p) {
    endpoint_parked_t *w = p->park_head;
    p->park_head = w->next;
    if (!p->park_head) {
        p->park_tail = NULL;
        s_unlink(ep, p);
    }
    ep->nparked--;
    return w;
}

/* `w` will not run: its charge leaves `p`'s budget. */
static void s_discharge(peer_t *p, const endpoint_parked_t *w) {
    p->work_bytes -= w->charged < p->work_bytes ? w->charged : p->work_bytes;
}

/* Does `w` still come from the identity `p` carries? (a HELLO in between
 * makes its sender someone else: its answer would be dropped) */
static int s_same_sender(const peer_t *p, const endpoint_parked_t *w) {
    return p->user_id_len == w->user_len &&
           memcmp(p->user_id, w->data + w->peer_len, w->user_len) == 0;
}

static void s_log_unstarted(endpoint_t *ep, const peer_t *p, size_t calls, const char *why) {
    ep->stats.calls_unstarted += calls;
    if (!ep->closing)
        ENDPOINT_LOG_LIMITED(ep, LOG_INFO, "calls dropped before they started",
                             LOG_ID("peer", p->routing_id, p->routing_id_len), LOG_INT("calls", calls),
                             LOG_STR("reason", why));
}

/* Drop every waiting call of `p`, unrun (its charges leave its budget). */
static void s_drop_all(endpoint_t *ep, peer_t *p, const char *why) {
    size_t dropped = 0;
    for (; p->park_head; dropped++) {
        endpoint_parked_t *w = s_pop(ep, p);
        s_discharge(p, w);
        s_free_parked(w);
    }
    if (dropped) s_log_unstarted(ep, p, dropped, why);
}

/* Hand `p`'s waiting calls on while it may start them, at most
 * HAND_ON_BATCH. Returns how many went, or -1 when the endpoint was
 * closed under it. */
static int s_hand_on_peer(endpoint_t *ep, peer_t *p) {
    int went = 0;
    size_t stale = 0;              /* dropped: their sender is someone else now */
    if (p->closed) {               /* kept for its heartbeat sweep: nothing more runs for it */
        s_drop_all(ep, p, "the connection closed");
        return 0;
    }
    while (p && !p->closed && p->park_head && went < HAND_ON_BATCH && endpoint_park_may_start(ep, p)) {
        endpoint_parked_t *w = s_pop(ep, p);
        if (!s_same_sender(p, w)) {
            s_discharge(p, w);
            s_free_parked(w);
            stale++;
            went++;
            continue;
        }
        frame_message_t m;
        memset(&m, 0, sizeof m);
        m.peer = w->data;
        m.peer_len = w->peer_len;
        m.user = w->data + w->peer_len;
        m.user_len = w->user_len;
        m.uuid = w->uuid;
        m.uuid_len = FRAME_UUID_SIZE;
        m.type = FRAME_WORK;
        m.body = s_body(w);
        m.body_len = w->body_len;
        m.fd = p->fd;
        m.logged_in = w->logged_in;
        m.serial = p->serial;
        m.charged = w->charged;
        m.idle_sender = 0;         /* it has waited behind its own calls */
        p->inflight++;
        uint64_t serial = p->serial;
        endpoint_deliver_work(ep, &m);
        went++;
        if (ep->closing) { s_free_parked(w); return -1; }
        /* on_work may have answered, and an answer that found the peer
         * gone freed its entry (m's views are into w) */
        p = peers_find(ep->peers, m.peer, m.peer_len);
        if (p && p->serial != serial) p = NULL;
        if (!p || p->closed) endpoint_recheck_caller(ep, serial, m.peer, m.peer_len);   /* closed meanwhile */
        s_free_parked(w);
    }
    if (stale) {
        ep->stats.calls_unstarted += stale;
        ENDPOINT_LOG_LIMITED(ep, LOG_INFO, "calls dropped before they started", LOG_INT("calls", stale),
                             LOG_STR("reason", "their sender logged in as another user"));
    }
    return went;
}

static void s_on_timer(loop_t *loop, loop_timer_t *timer, void *arg) {
    (void)loop;
    (void)timer;
    endpoint_t *ep = arg;
    ep->park_timer = NULL;
    endpoint_enter(ep);
    int unblocked = 0;             /* a peer that waited on its replies started one */
    /* each peer once, in turn: the one served goes to the back */
    for (size_t n = ep->nparked_peers; n > 0 && ep->parked_head && !ep->closing; n--) {
        peer_t *p = ep->parked_head;
        s_unlink(ep, p);
        s_link(ep, p);
        int on_replies = !s_at_limit(ep, p);
        int rc = s_hand_on_peer(ep, p);
        if (rc < 0) break;
        unblocked |= on_replies && rc > 0;
    }
    int again = 0, on_replies = 0;
    if (!ep->closing)
        for (peer_t *p = ep->parked_head; p; p = p->parked_next) {
            if (endpoint_park_may_start(ep, p)) again = 1;   /* a batch was not enough */
            else if (!s_at_limit(ep, p)) on_replies = 1;
        }
    if (endpoint_leave(ep)) return;
    if (again) {
        endpoint_park_wake(ep, 0);
    } else if (on_replies) {
        ep->park_recheck = unblocked || ep->park_recheck <= 0 ? RECHECK_MIN : 2 * ep->park_recheck;
        if (ep->park_recheck > RECHECK_MAX) ep->park_recheck = RECHECK_MAX;
        endpoint_park_wake(ep, ep->park_recheck);
    } else {
        ep->park_recheck = 0;
    }
}

void endpoint_park_wake(endpoint_t *ep, double delay) {
    if (ep->closing || !ep->parked_head) return;
    double at = loop_now() + delay;
    if (ep->park_timer) {
        if (ep->park_timer_at <= at) return;
        loop_cancel_timer(ep->loop, ep->park_timer);
    }
    ep->park_timer = loop_add_timer(ep->loop, delay, s_on_timer, ep);
    ep->park_timer_at = at;
}

void endpoint_park_forget(endpoint_t *ep, peer_t *p) { s_drop_all(ep, p, "the peer is gone"); }

size_t endpoint_refuse_parked(endpoint_t *ep, const char *name, const char *message) {
    size_t refused = 0;
    ep->park_refusal = name;
    ep->park_refusal_text = message;
    endpoint_enter(ep);
    while (ep->parked_head && !ep->closing) {
        peer_t *p = ep->parked_head;
        endpoint_parked_t *w = s_pop(ep, p);
        s_discharge(p, w);
        endpoint_reply_error(ep, w->data, w->peer_len, w->data + w->peer_len, w->user_len, w->uuid,
                             name, message, strlen(message), "");
        s_free_parked(w);
        refused++;
    }
    ep->stats.calls_unstarted += refused;
    endpoint_leave(ep);
    return refused;
}

void endpoint_park_reopen(endpoint_t *ep) {
    ep->park_refusal = NULL;
    ep->park_refusal_text = NULL;
}

size_t endpoint_parked_calls(const endpoint_t *ep) { return ep->nparked; }
