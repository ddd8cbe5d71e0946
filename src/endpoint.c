/*
 * endpoint: the pseud v1 state machine of one ROUTER socket (see endpoint.h).
 *
 * Pending calls sit in a hash on their uuid (random bytes: the first eight
 * are the hash) and in a list ordered by deadline. One loop timer, armed
 * lazily, expires the head of that list: a call that ends early leaves the
 * timer to fire once for nothing rather than re-arming per call.
 * The outbox keeps messages that the socket refused (EHOSTUNREACH: peer not
 * connected yet; EAGAIN: its queue is full) and retries them with backoff.
 */
#include "endpoint.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "message.h"
#include "peers.h"

#define RECV_BUDGET      256      /* messages per readiness, so timers still run */
#define RETRY_MIN        0.001    /* outbox backoff, seconds */
#define RETRY_MAX        0.1
#define LOG_BURST        20       /* lines about one kind of refusal per second, then a count */

typedef struct endpoint_out {
    struct endpoint_out *next;
    endpoint_call_t *call;           /* WORK waiting to be routed, or NULL */
    int dead;                        /* its call ended: drop it */
    uint8_t uuid[FRAME_UUID_SIZE];
    size_t uuid_len;
    int type;
    size_t peer_len, user_len, body_len;
    int check_user;                  /* a reply: only while peer still carries user */
    char data[];                     /* peer, user, then body */
} endpoint_out_t;

struct endpoint {
    void *socket;
    loop_t *loop;
    endpoint_events_t ev;
    endpoint_options_t opt;
    endpoint_call_t **buckets;       /* pending calls by uuid */
    size_t nbuckets, ncalls;
    endpoint_call_t *first, *last;   /* pending calls by deadline */
    loop_timer_t *expiry;            /* fires at `expiry_at`, or NULL */
    double expiry_at;
    endpoint_out_t *out_head, *out_tail;
    size_t nout, out_bytes;          /* messages and body bytes waiting */
    loop_timer_t *retry;             /* outbox retry, or NULL */
    double retry_delay;
    peers_t *peers;                  /* who it has heard from */
    double hb_interval, hb_timeout;  /* heartbeat policy; 0: off */
    loop_timer_t *hb_send, *hb_sweep;/* the two heartbeat timers, or NULL */
    int notify_seen;                 /* call on_peer_seen for every message */
    char *hello_body;                /* packed [login, password], or NULL */
    size_t hello_len;
    int hello_max_retries, hello_tries;
    int hello_pending;               /* a HELLO is out, waiting for its answer */
    uint8_t hello_uuid[FRAME_UUID_SIZE];
    size_t hb_peer_len;              /* a client's server, always sent heartbeats */
    char hb_peer[FRAME_MAX_ID];
    char *hello_peer;                /* the server our HELLO went to (routing id = user id) */
    size_t hello_peer_len;
    void *monitor;                   /* PAIR: the socket's connection events */
    uint8_t *closed_fds;             /* bit per fd: closed, not accepted again yet */
    size_t closed_fds_size;          /* bytes at closed_fds */
    int strict;                      /* identities are authenticated: check before replying */
    double log_window;               /* start of the current second of refusal lines */
    int log_lines, log_suppressed;
    int busy;                        /* inside a callback: destroy must not free yet */
    int closing;                     /* destroyed while busy: freed when it unwinds */
};

static void s_free(endpoint_t *ep);

/* Around every callback: a callback may destroy the endpoint (a handler
 * closing its own server), so the free waits until the caller unwinds.
 * s_leave() returns 1 when the endpoint is gone and the caller must stop. */
static void s_enter(endpoint_t *ep) { ep->busy++; }

static int s_leave(endpoint_t *ep) {
    if (--ep->busy > 0 || !ep->closing) return ep->closing;
    s_free(ep);
    return 1;
}

static void s_vlog(endpoint_t *ep, const char *fmt, va_list ap) {
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    ep->ev.log(ep->ev.ctx, line);
}

static void s_log(endpoint_t *ep, const char *fmt, ...) {
    if (!ep->ev.log) return;
    va_list ap;
    va_start(ap, fmt);
    s_vlog(ep, fmt, ap);
    va_end(ap);
}

/* A refusal line, at most LOG_BURST a second: a flood of bad messages must
 * not become a flood of log lines. */
static void s_log_refusal(endpoint_t *ep, const char *fmt, ...) {
    if (!ep->ev.log) return;
    double now = loop_now();
    if (now - ep->log_window >= 1.0) {
        if (ep->log_suppressed > 0) s_log(ep, "(%d more refusals not logged)", ep->log_suppressed);
        ep->log_window = now;
        ep->log_lines = ep->log_suppressed = 0;
    }
    if (ep->log_lines >= LOG_BURST) { ep->log_suppressed++; return; }
    ep->log_lines++;
    va_list ap;
    va_start(ap, fmt);
    s_vlog(ep, fmt, ap);
    va_end(ap);
}

/* Printable peer id for logs: routing ids are bytes. */
static const char *s_peer_text(const char *peer, size_t len, char *buf, size_t size) {
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
    o->max_message_size = 32 << 20;
    o->linger_ms = 1000;
    o->max_outbox = 100000;
    o->max_outbox_bytes = 256u << 20;
    o->queue_unroutable = 1;
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
    if (c->queued) { c->queued->dead = 1; c->queued->call = NULL; c->queued = NULL; }
    ep->ncalls--;
}

/* Ends `c` with on_call_failed. Returns 1 when that destroyed the endpoint. */
static int s_fail_call(endpoint_t *ep, endpoint_call_t *c, const char *name, const char *msg) {
    s_unlink(ep, c);
    s_enter(ep);
    if (ep->ev.on_call_failed) ep->ev.on_call_failed(ep->ev.ctx, ep, c, name, msg);
    free(c);
    return s_leave(ep);
}

static void s_expire(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    endpoint_t *ep = arg;
    ep->expiry = NULL;
    double now = loop_now();
    while (ep->first && ep->first->deadline <= now)
        if (s_fail_call(ep, ep->first, "TimeoutError", "no reply before the call's timeout"))
            return;
    if (!ep->closing) s_arm_expiry(ep);
}

size_t endpoint_pending_calls(const endpoint_t *ep) { return ep->ncalls; }
size_t endpoint_outbox_size(const endpoint_t *ep) { return ep->nout; }
void *endpoint_socket(endpoint_t *ep) { return ep->socket; }

/* ZeroMQ says the peer has no connection: it leaves the directory. */
static void s_forget_peer(endpoint_t *ep, const char *peer, size_t peer_len) {
    peer_t *p = peers_find(ep->peers, peer, peer_len);
    if (p) peers_remove(ep->peers, p);
}

/* --- outbox --- */

static void s_retry(loop_t *loop, loop_timer_t *t, void *arg);

static void s_arm_retry(endpoint_t *ep) {
    if (ep->retry || !ep->out_head) return;
    ep->retry = loop_add_timer(ep->loop, ep->retry_delay, s_retry, ep);
}

static int s_queue(endpoint_t *ep, endpoint_call_t *call, const char *peer, size_t peer_len,
                   const char *user, size_t user_len,
                   const uint8_t *uuid, size_t uuid_len, int type,
                   const void *body, size_t body_len) {
    /* bounded in count and bytes: a peer that never reads cannot make the
     * host hold every reply it asked for */
    if (ep->nout >= ep->opt.max_outbox || body_len > ep->opt.max_outbox_bytes - ep->out_bytes) {
        errno = ENOBUFS;
        return -1;
    }
    endpoint_out_t *o = malloc(sizeof *o + peer_len + user_len + body_len);
    if (!o) return -1;
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
    if (ep->out_tail) ep->out_tail->next = o; else ep->out_head = o;
    ep->out_tail = o;
    ep->nout++;
    ep->out_bytes += body_len;
    if (call) call->queued = o;
    if (!ep->retry) ep->retry_delay = RETRY_MIN;
    s_arm_retry(ep);
    return 0;
}

/* Is something for `peer` already waiting? Then a new message queues behind
 * it, so one peer's messages keep their order. */
static int s_peer_waiting(const endpoint_t *ep, const char *peer, size_t peer_len) {
    for (const endpoint_out_t *o = ep->out_head; o; o = o->next)
        if (!o->dead && o->peer_len == peer_len && memcmp(o->data, peer, peer_len) == 0)
            return 1;
    return 0;
}

/* May a reply bound to `user` go to routing id `peer`? Only while the
 * directory says that routing id carries that identity (DESIGN.md 4.1);
 * without authentication the routing id is the identity. */
static int s_still_carries(endpoint_t *ep, const char *peer, size_t peer_len,
                           const char *user, size_t user_len, const char *what) {
    if (!ep->strict) return 1;
    peer_t *p = peers_find(ep->peers, peer, peer_len);
    if (p && !p->closed && p->user_id_len == user_len && memcmp(p->user_id, user, user_len) == 0)
        return 1;
    char who[64], whom[64];
    s_log_refusal(ep, "%s for user '%s' dropped: routing id '%s' %s", what,
                  s_peer_text(user, user_len, whom, sizeof whom),
                  s_peer_text(peer, peer_len, who, sizeof who),
                  !p || p->closed ? "is gone (its connection closed)" : "now carries another user");
    return 0;
}

static void s_drain_monitor(endpoint_t *ep);

static void s_flush(endpoint_t *ep) {
    endpoint_out_t **pp = &ep->out_head, *prev = NULL;
    if (ep->strict) s_drain_monitor(ep);
    while (*pp) {
        endpoint_out_t *o = *pp;
        int drop = o->dead;
        /* a reply, or WORK that waited (its peer was busy): still theirs?
         * A dropped WORK's call ends by its timeout. */
        if (!drop && o->check_user &&
            !s_still_carries(ep, o->data, o->peer_len, o->data + o->peer_len, o->user_len,
                             o->call ? "WORK" : "reply"))
            drop = 1;
        if (!drop) {
            if (frame_send(ep->socket, o->data, o->peer_len, o->uuid, o->uuid_len, o->type,
                           o->data + o->peer_len + o->user_len, o->body_len) == 0) {
                drop = 1;
            } else if (errno == EHOSTUNREACH && !o->call) {
                char who[64];
                s_log(ep, "reply to peer '%s' dropped: peer is gone",
                      s_peer_text(o->data, o->peer_len, who, sizeof who));
                drop = 1;
            }
        }
        if (drop) {
            if (o->call) o->call->queued = NULL;
            *pp = o->next;
            if (ep->out_tail == o) ep->out_tail = prev;
            ep->nout--;
            ep->out_bytes -= o->body_len;
            free(o);
        } else {
            prev = o;
            pp = &o->next;
        }
    }
}

static void s_retry(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    endpoint_t *ep = arg;
    ep->retry = NULL;
    s_flush(ep);
    ep->retry_delay = ep->retry_delay * 2 > RETRY_MAX ? RETRY_MAX : ep->retry_delay * 2;
    s_arm_retry(ep);
}

/* --- sending --- */

endpoint_call_t *endpoint_send_work(endpoint_t *ep, const char *peer, size_t peer_len,
                                    const char *user, size_t user_len,
                                    const void *body, size_t body_len,
                                    double timeout, int ref) {
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
    int queued = 0;
    if (ep->out_head && s_peer_waiting(ep, peer, peer_len)) {
        queued = 1;
    } else if (frame_send(ep->socket, peer, peer_len, c->uuid, FRAME_UUID_SIZE, FRAME_WORK,
                          body, body_len) < 0) {
        if ((errno != EHOSTUNREACH && errno != EAGAIN) ||
            (errno == EHOSTUNREACH && !ep->opt.queue_unroutable)) {
            int e = errno;
            free(c);
            if (e == EHOSTUNREACH) s_forget_peer(ep, peer, peer_len);
            errno = e;
            return NULL;
        }
        queued = 1;
    }
    if (queued && s_queue(ep, c, peer, peer_len, c->user, c->user_len, c->uuid, FRAME_UUID_SIZE, FRAME_WORK,
                          body, body_len) < 0) {
        free(c);
        return NULL;
    }
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
    return c;
}

int endpoint_reply(endpoint_t *ep, const char *peer, size_t peer_len,
                   const char *user, size_t user_len,
                   const uint8_t *uuid, int type, const void *body, size_t body_len) {
    char who[64];
    if (user && ep->strict) {
        s_drain_monitor(ep);                     /* a disconnect read late must not pass */
        if (!s_still_carries(ep, peer, peer_len, user, user_len, "reply")) return -1;
    }
    if (!(ep->out_head && s_peer_waiting(ep, peer, peer_len))) {
        if (frame_send(ep->socket, peer, peer_len, uuid, FRAME_UUID_SIZE, type,
                       body, body_len) == 0)
            return 0;
        if (errno == EHOSTUNREACH) {
            s_log(ep, "reply to peer '%s' dropped: peer is gone",
                  s_peer_text(peer, peer_len, who, sizeof who));
            s_forget_peer(ep, peer, peer_len);
            return -1;
        }
        if (errno != EAGAIN) {
            s_log(ep, "reply to peer '%s' failed: %s",
                  s_peer_text(peer, peer_len, who, sizeof who), zmq_strerror(errno));
            return -1;
        }
    }
    if (s_queue(ep, NULL, peer, peer_len, user, user_len, uuid, FRAME_UUID_SIZE, type,
                body, body_len) < 0) {
        s_log(ep, "reply to peer '%s' dropped: outbox full",
              s_peer_text(peer, peer_len, who, sizeof who));
        return -1;
    }
    return 0;
}

int endpoint_reply_error(endpoint_t *ep, const char *peer, size_t peer_len,
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
    if (rc == 0) rc = endpoint_reply(ep, peer, peer_len, user, user_len, uuid, FRAME_ERROR,
                                     sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* --- receiving --- */

static void s_on_invalid(endpoint_t *ep, const frame_message_t *m) {
    char who[64];
    s_peer_text(m->peer ? m->peer : "", m->peer_len, who, sizeof who);
    /* Never answer what could itself be a reply or a heartbeat: an ERROR to
     * an ERROR could ping-pong between two hosts. */
    int answerable = m->uuid && m->type != FRAME_OK && m->type != FRAME_ERROR &&
                     m->type != FRAME_HEARTBEAT;
    s_log_refusal(ep, "refused message from peer '%s': %s (%d frames)%s", who, m->reason,
                  m->count, answerable ? ", answered ProtocolError" : "");
    if (answerable)
        endpoint_reply_error(ep, m->peer, m->peer_len, NULL, 0, m->uuid, "ProtocolError",
                             m->reason, strlen(m->reason), "");
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
    if (frame_send(ep->socket, copy, peer_len, ep->hello_uuid, FRAME_UUID_SIZE, FRAME_HELLO,
                   ep->hello_body, ep->hello_len) < 0)
        ep->hello_pending = 0;                   /* calls end by their timeout */
}

/* AUTHENTICATED or UNAUTHORIZED for our HELLO. Returns 1 when handled. */
static int s_on_hello_answer(endpoint_t *ep, const frame_message_t *m) {
    if (!ep->hello_pending || memcmp(m->uuid, ep->hello_uuid, FRAME_UUID_SIZE) != 0) return 0;
    if (!s_from(m, ep->hello_peer, ep->hello_peer_len, ep->hello_peer, ep->hello_peer_len)) {
        char who[64];
        s_log_refusal(ep, "dropped an answer to our HELLO from peer '%s': it went elsewhere",
                      s_peer_text(m->peer, m->peer_len, who, sizeof who));
        return 1;
    }
    ep->hello_pending = 0;
    if (m->type == FRAME_AUTHENTICATED) {
        ep->hello_tries = 0;
        for (endpoint_call_t *c = ep->first; c; c = c->next) {
            if (!c->awaiting_auth) continue;
            c->awaiting_auth = 0;
            if (frame_send(ep->socket, c->peer, c->peer_len, c->uuid, FRAME_UUID_SIZE,
                           FRAME_WORK, c->body, c->body_len) < 0 && !c->queued)
                s_queue(ep, c, c->peer, c->peer_len, c->user, c->user_len, c->uuid, FRAME_UUID_SIZE, FRAME_WORK,
                        c->body, c->body_len);
        }
    } else if (ep->hello_tries < ep->hello_max_retries) {
        s_send_hello(ep, ep->hello_peer, ep->hello_peer_len);
    } else {
        char who[64];
        s_log(ep, "peer '%s' refused our login %d time(s): giving up",
              s_peer_text(m->peer, m->peer_len, who, sizeof who), ep->hello_tries);
        ep->hello_tries = 0;
        /* one at a time, from the head each time: callbacks may end calls */
        s_enter(ep);
        int again = 1;
        while (again && !ep->closing) {
            again = 0;
            for (endpoint_call_t *c = ep->first; c; c = c->next)
                if (c->awaiting_auth) {
                    s_fail_call(ep, c, "UnauthorizedError", "the peer refused our login");
                    again = 1;
                    break;
                }
        }
        s_leave(ep);
    }
    return 1;
}

static void s_on_reply(endpoint_t *ep, const frame_message_t *m) {
    if (m->type == FRAME_UNAUTHORIZED && s_on_hello_answer(ep, m)) return;
    endpoint_call_t *c = s_find(ep, m->uuid);
    const char *what = m->type == FRAME_OK ? "OK" : m->type == FRAME_ERROR ? "ERROR" : "UNAUTHORIZED";
    char who[64];
    if (!c) {
        s_log_refusal(ep, "dropped %s from peer '%s' for no pending call (late or forged)",
                      what, s_peer_text(m->peer, m->peer_len, who, sizeof who));
        return;
    }
    /* only the peer the WORK went to settles it: a third peer that learnt
     * the uuid gets nowhere, and the call still waits for its answer */
    if (!s_from(m, c->peer, c->peer_len, c->user, c->user_len)) {
        s_log_refusal(ep, "dropped %s from peer '%s': that call went to another peer",
                      what, s_peer_text(m->peer, m->peer_len, who, sizeof who));
        return;
    }
    if (m->type == FRAME_UNAUTHORIZED && ep->hello_body && c->body) {
        /* log in, then replay it */
        c->awaiting_auth = 1;
        if (!ep->hello_pending) s_send_hello(ep, c->peer, c->peer_len);
        return;
    }
    s_unlink(ep, c);
    s_enter(ep);
    if (m->type == FRAME_UNAUTHORIZED) {
        if (ep->ev.on_call_failed)
            ep->ev.on_call_failed(ep->ev.ctx, ep, c, "UnauthorizedError",
                                  m->body_len ? "peer requires authentication" : "unauthorized");
    } else if (ep->ev.on_reply) {
        ep->ev.on_reply(ep->ev.ctx, ep, c, m->type, m->body, m->body_len);
    }
    free(c);
    s_leave(ep);
}

static int s_fd_closed(const endpoint_t *ep, int fd) {
    return fd >= 0 && (size_t)fd / 8 < ep->closed_fds_size &&
           (ep->closed_fds[fd / 8] >> (fd % 8)) & 1;
}

static void s_mark_fd(endpoint_t *ep, int fd, int closed) {
    if (fd < 0 || fd > (1 << 24)) return;
    size_t byte = (size_t)fd / 8;
    if (byte >= ep->closed_fds_size) {
        if (!closed) return;
        size_t n = byte + 64;
        uint8_t *b = realloc(ep->closed_fds, n);
        if (!b) return;                          /* then only the user check guards it */
        memset(b + ep->closed_fds_size, 0, n - ep->closed_fds_size);
        ep->closed_fds = b;
        ep->closed_fds_size = n;
    }
    if (closed) ep->closed_fds[byte] |= (uint8_t)(1u << (fd % 8));
    else ep->closed_fds[byte] &= (uint8_t)~(1u << (fd % 8));
}

/* Read the monitor's events. A connection that closed (DISCONNECTED, with
 * its fd) marks the entries heard on it closed: nothing bound to them goes
 * to their routing id again, so whoever takes it over later gets nothing
 * meant for them (DESIGN.md 4.1). Messages still in flight from it may be
 * read after the event: they keep the entry closed until a connection is
 * accepted on that fd again (ACCEPTED, CONNECTED). Messages carry their fd
 * (ZMQ_SRCFD); Debian 12's libzmq has no ZMQ_ROUTER_NOTIFY. */
static void s_drain_monitor(endpoint_t *ep) {
    if (!ep->monitor) return;
    for (;;) {                                   /* to the end: a stale entry must not pass */
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, ep->monitor, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&ev); break; }
        uint16_t event = 0;
        uint32_t value = 0;
        if (zmq_msg_size(&ev) >= 6) {
            memcpy(&event, zmq_msg_data(&ev), 2);
            memcpy(&value, (char *)zmq_msg_data(&ev) + 2, 4);
        }
        int more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        while (more) {                           /* the endpoint address: not needed */
            zmq_msg_init(&addr);
            if (zmq_msg_recv(&addr, ep->monitor, 0) < 0) { zmq_msg_close(&addr); break; }
            more = zmq_msg_more(&addr);
            zmq_msg_close(&addr);
        }
        if (event == ZMQ_EVENT_DISCONNECTED) {
            s_mark_fd(ep, (int)value, 1);
            peers_close_fd(ep->peers, (int)value);
        } else if (event == ZMQ_EVENT_ACCEPTED || event == ZMQ_EVENT_CONNECTED) {
            s_mark_fd(ep, (int)value, 0);
        }
    }
}

static void s_on_monitor(loop_t *loop, void *socket, void *arg) {
    (void)loop; (void)socket;
    endpoint_t *ep = arg;
    if (!ep->closing) s_drain_monitor(ep);
}

void endpoint_sync_peers(endpoint_t *ep) { s_drain_monitor(ep); }
void endpoint_set_strict(endpoint_t *ep, int strict) { ep->strict = strict; }
int endpoint_strict(const endpoint_t *ep) { return ep->strict; }

/* The sender's identity, from the directory entry of its routing id (valid
 * until the directory next changes), or what its message carries. */
static void s_identify(endpoint_t *ep, frame_message_t *m) {
    peer_t *p = peers_find(ep->peers, m->peer, m->peer_len);
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

static void s_on_readable(loop_t *loop, void *socket, void *arg) {
    (void)loop;
    endpoint_t *ep = arg;
    frame_message_t m;
    int got = 0, is_new;
    double now = loop_now();
    s_enter(ep);
    /* disconnects first: a routing id freed by one is not its old owner's */
    s_drain_monitor(ep);
    for (int budget = RECV_BUDGET; budget > 0 && !ep->closing; budget--) {
        if (frame_recv(socket, &m) < 0) break;
        got = 1;
        enum frame_kind kind = frame_decode(&m);
        if (kind == FRAME_KIND_BAD_ID) {
            char who[64];
            s_log_refusal(ep, "refused message from a peer with a %zu-byte routing id "
                          "(over %d; starts '%s'): dropped", m.peer_len, FRAME_MAX_ID,
                          s_peer_text(m.peer, m.peer_len < 16 ? m.peer_len : 16, who, sizeof who));
            frame_close(&m);
            continue;
        }
        /* every message from a peer says it is there */
        peer_t *p = peers_seen(ep->peers, m.peer, m.peer_len, m.user_id,
                               m.user_id ? strlen(m.user_id) : 0, m.fd, s_fd_closed(ep, m.fd),
                               now, &is_new);
        if (p && ep->notify_seen && ep->ev.on_peer_seen)
            ep->ev.on_peer_seen(ep->ev.ctx, ep, p);
        if (ep->closing) { frame_close(&m); break; }   /* the hook closed it */
        s_identify(ep, &m);              /* after the hook: it may have changed the directory */
        switch (kind) {
        case FRAME_KIND_PROBE:
        case FRAME_KIND_BAD_ID:          /* handled above */
            break;
        case FRAME_KIND_INVALID:
            s_on_invalid(ep, &m);
            break;
        case FRAME_KIND_MESSAGE:
            switch (m.type) {
            case FRAME_WORK:
                if (ep->ev.on_work) ep->ev.on_work(ep->ev.ctx, ep, &m);
                break;
            case FRAME_OK: case FRAME_ERROR: case FRAME_UNAUTHORIZED:
                s_on_reply(ep, &m);
                break;
            case FRAME_HELLO:
                if (ep->ev.on_hello) {
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
        frame_close(&m);
    }
    if (s_leave(ep)) return;
    /* Traffic from a peer often means it is routable now. */
    if (got && ep->out_head) s_flush(ep);
}

/* --- life cycle --- */

/* Watch the socket's disconnects: libzmq names the fd, and messages carry
 * their fd (ZMQ_SRCFD), which ties a disconnect to the routing ids heard on
 * it (Debian 12's libzmq has no ZMQ_ROUTER_NOTIFY). */
static int s_monitor_start(endpoint_t *ep, void *zmq_context) {
    /* a fresh name each time: a closed socket's inproc name is released
     * later, by libzmq's reaper, so an address could still be taken */
    char address[64] = "inproc://pseud-monitor-";
    uint8_t id[FRAME_UUID_SIZE];
    frame_new_uuid(id);
    for (int i = 0; i < FRAME_UUID_SIZE; i++)
        snprintf(address + 23 + 2 * i, 3, "%02x", id[i]);
    if (zmq_socket_monitor(ep->socket, address, ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_ACCEPTED |
                           ZMQ_EVENT_CONNECTED) < 0)
        return -1;
    ep->monitor = zmq_socket(zmq_context, ZMQ_PAIR);
    int zero = 0;
    if (!ep->monitor || zmq_setsockopt(ep->monitor, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_connect(ep->monitor, address) < 0 ||
        loop_add_socket(ep->loop, ep->monitor, s_on_monitor, ep) < 0) {
        if (ep->monitor) zmq_close(ep->monitor);
        ep->monitor = NULL;
        return -1;
    }
    return 0;
}

endpoint_t *endpoint_new(void *zmq_context, loop_t *loop, const endpoint_options_t *o,
                         const endpoint_events_t *ev) {
    endpoint_t *ep = calloc(1, sizeof *ep);
    if (!ep) return NULL;
    ep->loop = loop;
    ep->ev = *ev;
    ep->opt = *o;
    ep->opt.routing_id = NULL;                  /* not kept: the caller owns it */
    ep->retry_delay = RETRY_MIN;
    ep->peers = peers_new();
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
        s_monitor_start(ep, zmq_context) < 0 ||
        loop_add_socket(loop, ep->socket, s_on_readable, ep) < 0) {
        int e = errno;
        if (ep->monitor) { loop_remove_socket(loop, ep->monitor); zmq_close(ep->monitor); }
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
    free(ep->hello_body);
    free(ep->hello_peer);
    free(ep->closed_fds);
    if (ep->monitor) {
        zmq_socket_monitor(ep->socket, NULL, 0);
        zmq_close(ep->monitor);
    }
    zmq_close(ep->socket);
    peers_destroy(&ep->peers);
    free(ep->buckets);
    free(ep);
}

peers_t *endpoint_peers(endpoint_t *ep) { return ep->peers; }

/* --- heartbeats --- */

static void s_heartbeat_to(endpoint_t *ep, const char *peer, size_t len) {
    /* best effort: a peer that cannot take it now will be heard from, or not */
    frame_send(ep->socket, peer, len, NULL, 0, FRAME_HEARTBEAT, NULL, 0);
}

static void s_hb_send(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    endpoint_t *ep = arg;
    ep->hb_send = NULL;
    int sent_default = 0;
    for (peer_t *p = peers_oldest(ep->peers); p; p = p->newer) {
        s_heartbeat_to(ep, p->routing_id, p->routing_id_len);
        if (p->routing_id_len == ep->hb_peer_len &&
            memcmp(p->routing_id, ep->hb_peer, ep->hb_peer_len) == 0)
            sent_default = 1;
    }
    if (ep->hb_peer_len && !sent_default) s_heartbeat_to(ep, ep->hb_peer, ep->hb_peer_len);
    ep->hb_send = loop_add_timer(ep->loop, ep->hb_interval, s_hb_send, ep);
}

/* End every pending call to `peer` with PeerLostError. Returns 1 when that
 * destroyed the endpoint. */
static int s_fail_calls_to(endpoint_t *ep, const char *peer, size_t len, const char *why) {
    endpoint_call_t *c = ep->first;
    size_t budget = ep->ncalls;                  /* calls made by the callbacks wait */
    while (c && budget > 0) {
        endpoint_call_t *next = c->next;
        if (c->peer_len == len && memcmp(c->peer, peer, len) == 0) {
            char who[64], msg[160];
            snprintf(msg, sizeof msg, "peer '%s' was declared gone (%s)",
                     s_peer_text(peer, len, who, sizeof who), why);
            budget--;
            if (s_fail_call(ep, c, "PeerLostError", msg)) return 1;
            next = ep->first;                    /* callbacks may have ended others: restart */
        }
        c = next;
    }
    return 0;
}

static void s_hb_sweep(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    endpoint_t *ep = arg;
    ep->hb_sweep = NULL;
    double now = loop_now();
    s_enter(ep);
    peer_t *p;
    while (!ep->closing && (p = peers_oldest(ep->peers)) && now - p->last_seen > ep->hb_timeout) {
        char who[64];
        s_log(ep, "peer '%s' silent for %.2f s: gone",
              s_peer_text(p->user_id, p->user_id_len, who, sizeof who), now - p->last_seen);
        /* out of the directory first: callbacks see it gone */
        peers_detach(ep->peers, p);
        if (s_fail_calls_to(ep, p->routing_id, p->routing_id_len, "heartbeat timeout")) {
            peers_free(p);
            break;
        }
        if (ep->ev.on_peer_gone) ep->ev.on_peer_gone(ep->ev.ctx, ep, p);
        peers_free(p);
    }
    if (s_leave(ep)) return;
    /* a callback may have set a new policy (and armed its own sweep) */
    if (ep->hb_sweep || ep->hb_timeout <= 0) return;
    double next = ep->hb_timeout / 4;
    if ((p = peers_oldest(ep->peers))) {
        double due = p->last_seen + ep->hb_timeout - now;
        if (due < next) next = due;
    }
    if (next < 0.005) next = 0.005;
    ep->hb_sweep = loop_add_timer(ep->loop, next, s_hb_sweep, ep);
}

int endpoint_set_heartbeat(endpoint_t *ep, double interval, double timeout,
                           const char *default_peer, size_t default_peer_len, int notify_seen) {
    loop_cancel_timer(ep->loop, ep->hb_send);
    loop_cancel_timer(ep->loop, ep->hb_sweep);
    ep->hb_send = ep->hb_sweep = NULL;
    ep->hb_interval = interval > 0 ? interval : 0;
    ep->hb_timeout = timeout > 0 ? timeout : 0;
    ep->notify_seen = notify_seen;
    ep->hb_peer_len = default_peer && default_peer_len <= FRAME_MAX_ID ? default_peer_len : 0;
    if (ep->hb_peer_len) memcpy(ep->hb_peer, default_peer, ep->hb_peer_len);
    if (ep->hb_interval > 0 &&
        !(ep->hb_send = loop_add_timer(ep->loop, ep->hb_interval, s_hb_send, ep)))
        return -1;
    if (ep->hb_timeout > 0 &&
        !(ep->hb_sweep = loop_add_timer(ep->loop, ep->hb_timeout / 4, s_hb_sweep, ep)))
        return -1;
    return 0;
}

void endpoint_destroy(endpoint_t **p) {
    if (!p || !*p) return;
    endpoint_t *ep = *p;
    *p = NULL;
    if (ep->closing) return;
    ep->closing = 1;
    s_flush(ep);                                /* last chance for queued replies */
    loop_cancel_timer(ep->loop, ep->expiry);
    loop_cancel_timer(ep->loop, ep->retry);
    loop_cancel_timer(ep->loop, ep->hb_send);
    loop_cancel_timer(ep->loop, ep->hb_sweep);
    ep->expiry = ep->retry = ep->hb_send = ep->hb_sweep = NULL;
    loop_remove_socket(ep->loop, ep->socket);
    if (ep->monitor) loop_remove_socket(ep->loop, ep->monitor);
    s_enter(ep);
    while (ep->first) s_fail_call(ep, ep->first, "PeerLostError", "the endpoint was closed");
    for (endpoint_out_t *o = ep->out_head, *next; o; o = next) { next = o->next; free(o); }
    ep->out_head = ep->out_tail = NULL;
    s_leave(ep);                                /* frees now, or when the caller unwinds */
}

int endpoint_bind(endpoint_t *ep, const char *address, char *actual, size_t actual_size) {
    if (zmq_bind(ep->socket, address) < 0) return -1;
    if (actual && actual_size) {
        size_t n = actual_size;
        if (zmq_getsockopt(ep->socket, ZMQ_LAST_ENDPOINT, actual, &n) < 0) actual[0] = '\0';
    }
    return 0;
}

int endpoint_connect(endpoint_t *ep, const char *address) {
    return zmq_connect(ep->socket, address);
}
