/*
 * endpoint: one pseud v1 peer on a ZeroMQ ROUTER socket, server or client.
 *
 * It owns the socket, the table of calls it made that wait for a reply (by
 * uuid, with deadlines), the directory of peers, and per peer the messages
 * that could not leave yet and the budget of bytes held for it. It validates everything a peer sends
 * (frame.c), answers protocol errors itself, and reports the rest through
 * endpoint_events_t: WORK to run, replies to calls, calls that failed. It does
 * not run handlers or know about Lua.
 */
#ifndef PSEUD_ENDPOINT_H
#define PSEUD_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "log.h"
#include "loop.h"
#include "peers.h"

typedef struct endpoint endpoint_t;

/* A call this endpoint made, waiting for OK or ERROR. Owned by the endpoint:
 * valid from endpoint_send_work() until its on_reply/on_call_failed returns. */
typedef struct endpoint_call endpoint_call_t;
struct endpoint_call {
    uint8_t uuid[FRAME_UUID_SIZE];
    double deadline;                 /* monotonic seconds */
    int ref;                         /* the caller's handle (a Lua registry ref) */
    struct endpoint_relay *relay;    /* set by the caller of a call made for another
                                        node: it gets the answer (NULL: on_reply) */
    char *via;                       /* a tracked call: the node it went to, set by
                                        its caller (malloc'd; freed with the call) */
    /* private to endpoint.c */
    endpoint_call_t *hash_next;      /* bucket chain */
    endpoint_call_t *prev, *next;    /* deadline order */
    struct endpoint_out *queued;     /* its WORK still in the outbox, or NULL */
    int awaiting_auth;               /* answered UNAUTHORIZED: replayed after HELLO */
    int logins;                      /* HELLOs it was sent back to wait for */
    const char *body;                /* its WORK body, kept for replay, or NULL */
    size_t body_len;
    size_t peer_len;                 /* the routing id it went to, so a peer
                                        declared gone ends its calls */
    const char *user;                /* the identity its reply must come from */
    size_t user_len;
    char peer[];                     /* routing id, user id, kept body */
};

/* Where the answer to a call made on another node's behalf goes, instead
 * of on_reply / on_call_failed: exactly one of the two runs, once, and may
 * free the relay. */
typedef struct endpoint_relay endpoint_relay_t;
struct endpoint_relay {
    void (*answered)(endpoint_relay_t *r, int type, const char *body, size_t len);
    void (*failed)(endpoint_relay_t *r, const char *error_name, const char *message);
};

typedef struct endpoint_events {
    void *ctx;
    /* A well-formed WORK arrived, within its sender's budget. The receiver
     * answers it with endpoint_reply() now (returns 0) or later (returns 1:
     * it then hands m->serial and m->charged back to endpoint_release when
     * it answers). `m` is valid during the call only; m->user is the
     * sender's identity. */
    int (*on_work)(void *ctx, endpoint_t *ep, const frame_message_t *m);
    /* OK or ERROR for `call`; the endpoint frees `call` after this returns. */
    void (*on_reply)(void *ctx, endpoint_t *ep, endpoint_call_t *call,
                     int type, const char *body, size_t body_len);
    /* `call` ended without a reply: `error_name` is a pseud error class
     * (TimeoutError, UnauthorizedError, ...); freed after this returns. */
    void (*on_call_failed)(void *ctx, endpoint_t *ep, endpoint_call_t *call,
                           const char *error_name, const char *message);
    /* One line for the log (log.h; never holds a secret). */
    void (*log)(void *ctx, int level, const char *msg, const log_field_t *fields);
    /* A message came from `p` (only when endpoint_set_heartbeat asked). */
    void (*on_peer_seen)(void *ctx, endpoint_t *ep, const peer_t *p);
    /* A HELLO arrived (a server's backend judges it); NULL: answered
     * AUTHENTICATED. Answer with endpoint_reply. `m` is valid during the call. */
    void (*on_hello)(void *ctx, endpoint_t *ep, const frame_message_t *m);
    /* An identity entered the directory (present 1) or its last entry left
     * it (0): see peers_identity_fn. NULL: not told. */
    void (*on_identity)(void *ctx, endpoint_t *ep, const char *user, size_t len, int present);
    /* `p` left the directory: silent past the heartbeat timeout, or its
     * connection closed; a server's calls to it have failed with
     * PeerLostError. `p` is valid during the call. */
    void (*on_peer_gone)(void *ctx, endpoint_t *ep, const peer_t *p);
    /* The connection of the directory entry `serial` (routing id `peer`)
     * closed (or the entry goes while open: a new connection took its
     * routing id, a heartbeat backend declared it gone) while WORK it sent
     * was kept by on_work and not yet answered (m->serial), or a WORK read
     * after that close was just kept: no answer can reach it, so the
     * receiver stops those calls. Their releases still come (and find no
     * entry, or a closed one). Nothing in the endpoint may change here.
     * NULL: not told. */
    void (*on_caller_gone)(void *ctx, endpoint_t *ep, uint64_t serial, const char *peer, size_t peer_len);
} endpoint_events_t;

typedef struct endpoint_options {
    const char *routing_id;          /* fixed routing id (a server's name), or NULL */
    int probe_router;                /* set ZMQ_PROBE_ROUTER (clients) */
    const char *server_id;           /* a client's server: probed again on every handshake
                                        (libzmq probes a socket's first connection only) */
    size_t server_id_len;
    int64_t max_message_size;        /* ZMQ_MAXMSGSIZE, bytes; <= 0: unlimited */
    int linger_ms;                   /* ZMQ_LINGER on close */
    size_t max_outbox;               /* messages waiting to leave, at most */
    size_t max_outbox_bytes;         /* and their body bytes, at most */
    int queue_unroutable;            /* WORK to a peer not connected (yet) waits for
                                        it (a client's server), or fails at once */
    size_t max_peer_queue;           /* a peer's budget, bytes (DESIGN.md 4.2) */
    unsigned max_peer_calls;         /* a peer's calls running at once (0: no bound);
                                        more wait, admitted, in arrival order */
    size_t max_peers;                /* directory entries, at most (0: no bound) */
} endpoint_options_t;

/* What a message counts for in bytes_in / bytes_out beside its body, so
 * that a flood of small or malformed messages counts as traffic too. */
#define STATS_MSG_BYTES 64

typedef struct endpoint_stats {
    uint64_t busy_refused;           /* WORK answered BusyError: its peer was over budget */
    uint64_t busy_unanswered;        /* ... and not even that could be queued */
    uint64_t replies_dropped;        /* replies to peers that were gone */
    uint64_t calls_unstarted;        /* admitted calls that never started: dropped
                                        while waiting their turn (peer gone, or another
                                        user now), refused at a stop or for want of memory */
    uint64_t peers_evicted;          /* entries dropped past max_peers */
    uint64_t bytes_in;               /* messages read: their bodies, plus STATS_MSG_BYTES each */
    uint64_t bytes_out;              /* calls and replies sent: the same */
} endpoint_stats_t;

void endpoint_options_init(endpoint_options_t *o);

/* New endpoint with its ROUTER socket registered in `loop`; NULL with errno. */
endpoint_t *endpoint_new(void *zmq_context, loop_t *loop, const endpoint_options_t *o,
                         const endpoint_events_t *ev);
/* Fail pending calls (on_call_failed), close the socket (after linger) and
 * free; takes NULL, clears *p. */
void endpoint_destroy(endpoint_t **p);

/* Bind/connect; bind writes the resolved address (ZMQ_LAST_ENDPOINT) to
 * `actual`. Return 0 or -1 with errno. */
int endpoint_bind(endpoint_t *ep, const char *address, char *actual, size_t actual_size);
int endpoint_connect(endpoint_t *ep, const char *address);

/* Send WORK `body` to `peer` and track it for `timeout` seconds; only an
 * OK or ERROR from that routing id carrying identity `user` (NULL: the
 * routing id itself, as a client's server) settles it. A peer not connected
 * is retried until then with queue_unroutable, else it is an error
 * (EHOSTUNREACH). NULL with errno on failure. */
endpoint_call_t *endpoint_send_work(endpoint_t *ep, const char *peer, size_t peer_len,
                                    const char *user, size_t user_len,
                                    const void *body, size_t body_len,
                                    double timeout, int ref);

/* A call whose WORK does not leave through this endpoint's socket (the
 * cluster forwards it to the node where user `user` is connected): it joins
 * the table of calls with its deadline, so it ends exactly once like any
 * other, by endpoint_settle_call, endpoint_fail_call or its timeout. It has
 * no routing id, so no peer's departure ends it. `uuid`: its id, made by
 * the caller (who must keep ids unique), or NULL for a new one. NULL when
 * out of memory. */
endpoint_call_t *endpoint_track_call(endpoint_t *ep, const uint8_t *uuid,
                                     const char *user, size_t user_len, double timeout, int ref);
/* Fail every tracked call already sent on its way (`via` set), or only
 * those sent to node `via` (NULL: all): the way back is lost. 1 when that
 * destroyed the endpoint. */
int endpoint_fail_forwarded(endpoint_t *ep, const char *via, const char *name, const char *msg);
/* fn(arg, node) for each tracked call sent on its way, with the node it
 * went to (once per call, not per node). fn must not end or make calls. */
void endpoint_each_forwarded(endpoint_t *ep, void (*fn)(void *arg, const char *via), void *arg);
/* The pending call of `uuid`, or NULL (settled, timed out, never made). */
endpoint_call_t *endpoint_find_call(endpoint_t *ep, const uint8_t *uuid);
/* End `c` with the OK or ERROR body its answer brought (on_reply), or as
 * failed (on_call_failed). Each returns 1 when that destroyed the endpoint. */
int endpoint_settle_call(endpoint_t *ep, endpoint_call_t *c, int type, const char *body, size_t len);
int endpoint_fail_call(endpoint_t *ep, endpoint_call_t *c, const char *name, const char *msg);

/* Send a reply (OK, ERROR, UNAUTHORIZED, AUTHENTICATED) to `peer`. With
 * `user` (an answer given later, after a handler ran), it goes only while
 * that routing id still carries that identity on the connection the
 * directory knows; otherwise it is logged and dropped (DESIGN.md 4.1).
 * A full queue keeps it in the outbox; a peer that is gone is logged.
 * Returns 0/-1. */
int endpoint_reply(endpoint_t *ep, const char *peer, size_t peer_len,
                   const char *user, size_t user_len,
                   const uint8_t *uuid, int type, const void *body, size_t body_len);

/* The answer to a WORK kept by on_work (after endpoint_release), as
 * endpoint_reply; on an endpoint whose identities are not authenticated
 * (the routing id is the user id, so that check cannot tell a new
 * connection on it from the caller's), only while the directory's entry
 * for `peer` is still the one `serial` names: the connection the WORK
 * came on (DESIGN.md 4.1). serial 0: no such check (a worker's proxy). */
int endpoint_answer(endpoint_t *ep, const char *peer, size_t peer_len, uint64_t serial,
                    const char *user, size_t user_len,
                    const uint8_t *uuid, int type, const void *body, size_t body_len);
/* A WORK with `serial` (m->serial) was just handed on: if the connection
 * it came on has closed meanwhile (or was closed already: it was read
 * after the close, or the disconnect was heard while on_work ran Lua),
 * its call is stopped now (on_caller_gone), as the calls running at that
 * close were. workers.c calls it for a WORK a worker gave back. */
void endpoint_recheck_caller(endpoint_t *ep, uint64_t serial, const char *peer, size_t peer_len);

/* A WORK kept by on_work that gets no answer (after endpoint_release):
 * its caller's connection closed and its call was stopped (on_caller_gone).
 * Nothing leaves but, from a worker's proxy, a reply of type
 * ENDPOINT_NO_ANSWER that lets the control release the call. */
#define ENDPOINT_NO_ANSWER 0
void endpoint_unanswered(endpoint_t *ep, const char *peer, size_t peer_len,
                         const char *user, size_t user_len, const uint8_t *uuid);
/* endpoint_answer with a body the caller malloc'd and hands over: a large
 * one leaves without a copy (libzmq frees it once written); it is freed on
 * every path. */
int endpoint_answer_owned(endpoint_t *ep, const char *peer, size_t peer_len, uint64_t serial,
                          const char *user, size_t user_len,
                          const uint8_t *uuid, int type, char *body, size_t body_len);

/* The answer to a WORK kept by on_work is leaving: its bytes no longer
 * count against the budget of the entry with that serial (if it still is
 * the one for `peer`). Call once per kept WORK, before endpoint_reply. */
void endpoint_release(endpoint_t *ep, const char *peer, size_t peer_len,
                      uint64_t serial, size_t charged);
/* Is this the only call in progress of the peer `serial` names? (a call
 * it admitted and has not yet released; 0 when unknown, as in a worker) */
int endpoint_peer_alone(endpoint_t *ep, const char *peer, size_t peer_len, uint64_t serial);

/* Admitted calls that wait their turn (max_peer_calls, or their peer's
 * replies not leaving): how many; answer each with ERROR [name, message]
 * (a stop), returning how many were; from then on a call that would wait
 * is answered so at once. `name` and `message` must outlive the endpoint. */
size_t endpoint_parked_calls(const endpoint_t *ep);
size_t endpoint_refuse_parked(endpoint_t *ep, const char *name, const char *message);
/* Calls may wait their turn again (the stop that refused them is over). */
void endpoint_park_reopen(endpoint_t *ep);

/* Send ERROR [name, message, traceback] (msgpack, each valid UTF-8) to
 * `peer`, bound to `user` as endpoint_reply. */
int endpoint_reply_error(endpoint_t *ep, const char *peer, size_t peer_len,
                         const char *user, size_t user_len,
                         const uint8_t *uuid, const char *name, const char *message,
                         size_t message_len, const char *traceback);
/* endpoint_reply_error for a kept WORK, checked as endpoint_answer. */
int endpoint_answer_error(endpoint_t *ep, const char *peer, size_t peer_len, uint64_t serial,
                          const char *user, size_t user_len,
                          const uint8_t *uuid, const char *name, const char *message,
                          size_t message_len, const char *traceback);

/* Identities are authenticated (a ZAP domain or HELLO hooks): every
 * reply bound to a user is checked against the directory after reading
 * the socket's disconnect events. */
void endpoint_set_strict(endpoint_t *ep, int strict);
int endpoint_strict(const endpoint_t *ep);

/* Read the socket's disconnect events now, so the directory forgets peers
 * whose connection is gone. */
void endpoint_sync_peers(endpoint_t *ep);

/* Pending calls and messages waiting to leave, for tests and stop. */
size_t endpoint_pending_calls(const endpoint_t *ep);
size_t endpoint_outbox_size(const endpoint_t *ep);
/* Bytes held against `peer`'s budget (0 when unknown), and the counters. */
size_t endpoint_peer_used(endpoint_t *ep, const char *peer, size_t peer_len);
const endpoint_stats_t *endpoint_stats(const endpoint_t *ep);
/* Bytes held against every peer's budget plus WORK waiting for a peer
 * to appear: O(peers), for a metrics scrape. */
size_t endpoint_held_bytes(endpoint_t *ep);

/* Heartbeats: send HEARTBEAT every `interval` seconds (0: never) to every
 * peer in the directory, and to `default_peer` (a client's server) if given;
 * a peer silent for `timeout` seconds (0: never) leaves the directory, its
 * pending calls fail with PeerLostError and on_peer_gone runs. With
 * `notify_seen`, on_peer_seen runs for every message. Returns 0 or -1. */
int endpoint_set_heartbeat(endpoint_t *ep, double interval, double timeout,
                           const char *default_peer, size_t default_peer_len, int notify_seen);

/* The HELLO handshake, client side: with a login set, a call answered
 * UNAUTHORIZED waits while HELLO [login, password] is sent; AUTHENTICATED
 * replays every waiting call's WORK, UNAUTHORIZED retries the HELLO up to
 * `max_retries` times and then fails the waiting calls with
 * UnauthorizedError. Bodies of WORK are kept for that from now on.
 * The password is kept only inside the packed HELLO. Returns 0 or -1. */
int endpoint_set_login(endpoint_t *ep, const char *login, size_t login_len,
                       const char *password, size_t password_len, int max_retries);

/* The directory of peers heard from (every message counts). */
peers_t *endpoint_peers(endpoint_t *ep);

/* A worker's proxy endpoint (workers.c): its replies and the releases
 * before them leave through `reply` instead of its socket, which is never
 * bound. endpoint_release arms the (serial, charged) the next reply
 * carries back to the control; endpoint_proxy_arm sets them for the
 * replies given while one WORK is being taken (refusals). */
typedef struct endpoint_proxy {
    void *ctx;
    int (*reply)(void *ctx, const char *peer, size_t peer_len, const char *user, size_t user_len,
                 const uint8_t *uuid, int type, const void *body, size_t body_len,
                 uint64_t serial, size_t charged);
} endpoint_proxy_t;
/* 0, or -1 out of memory (the proxy's count of calls per peer). */
int endpoint_set_proxy(endpoint_t *ep, const endpoint_proxy_t *px);
int endpoint_is_proxy(const endpoint_t *ep);
/* A WORK a proxy takes: counted for its peer until its reply leaves, so a
 * handler woken in a worker knows whether its call is the peer's only one
 * there (the scheduler's `alone`). */
void endpoint_proxy_took(endpoint_t *ep, const char *peer, size_t peer_len);
void endpoint_proxy_arm(endpoint_t *ep, uint64_t serial, size_t charged);

/* The raw socket, for options the binding sets (auth, later issues). */
void *endpoint_socket(endpoint_t *ep);

#endif
