/*
 * endpoint_internal: the state of one endpoint, shared by its three files
 * and no others: endpoint.c (life cycle, receiving, calls it made),
 * endpoint_send.c (what leaves: per-peer queues, budgets, retries) and
 * endpoint_peers.c (who is there: disconnects and heartbeats).
 */
#ifndef PSEUD_ENDPOINT_INTERNAL_H
#define PSEUD_ENDPOINT_INTERNAL_H

#include "endpoint.h"
#include "idset.h"

/* A message that could not leave yet. */
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

typedef struct endpoint_queue {      /* a FIFO of endpoint_out_t */
    endpoint_out_t *head, *tail;
} endpoint_queue_t;

struct endpoint {
    void *socket;
    endpoint_proxy_t proxy;          /* a worker's proxy: replies go there (reply != NULL) */
    uint64_t proxy_serial;           /* armed by endpoint_release for the next proxied reply */
    size_t proxy_charged;
    idset_t *proxy_calls;            /* a proxy's calls in progress per peer routing id */
    uint64_t callers_gone;           /* entries closed or freed while open, ever (endpoint_caller_gone) */
    loop_t *loop;
    endpoint_events_t ev;
    endpoint_options_t opt;
    endpoint_call_t **buckets;       /* pending calls by uuid */
    size_t nbuckets, ncalls;
    endpoint_call_t *first, *last;   /* pending calls by deadline */
    loop_timer_t *expiry;            /* fires at `expiry_at`, or NULL */
    double expiry_at;
    endpoint_queue_t unroutable;     /* WORK to routing ids not in the directory */
    size_t unroutable_bytes;
    size_t nout;                     /* messages waiting in every queue */
    peer_t *blocked;                 /* peers with a queue (their blocked_next...) */
    loop_timer_t *retry;             /* retries the queues, or NULL */
    double retry_delay;
    peers_t *peers;                  /* who it has heard from */
    endpoint_stats_t stats;
    double hb_interval, hb_timeout;  /* heartbeat policy; 0: off */
    loop_timer_t *hb_send, *hb_sweep;/* the two heartbeat timers, or NULL */
    int notify_seen;                 /* call on_peer_seen for every message */
    char *hello_body;                /* packed [login, password], or NULL */
    size_t hello_len;
    int hello_max_retries, hello_tries;
    int hello_pending;               /* a HELLO is out, waiting for its answer */
    uint8_t hello_uuid[FRAME_UUID_SIZE];
    size_t server_id_len;            /* a client's server, probed on each handshake */
    char server_id[FRAME_MAX_ID];
    size_t hb_peer_len;              /* a client's server, always sent heartbeats */
    char hb_peer[FRAME_MAX_ID];
    char *hello_peer;                /* the server our HELLO went to (routing id = user id) */
    size_t hello_peer_len;
    void *monitor;                   /* PAIR: the socket's connection events */
    int monitor_fd;                  /* its ZMQ_FD: readable once an event follows a drain */
    struct endpoint_connect *connects;  /* addresses it connected to, for handshake refusals */
    int nconnects, nrefused;         /* how many; how many refused, none succeeded since */
    int connects_untracked;          /* more than ENDPOINT_MAX_CONNECTS: refusals not judged */
    loop_timer_t *refuse;            /* ends calls once every handshake was refused, or NULL */
    uint8_t *closed_fds;             /* bit per fd: closed, not accepted again yet */
    size_t closed_fds_size;          /* bytes at closed_fds */
    int strict;                      /* identities are authenticated: check before replying */
    double log_window;               /* start of the current second of refusal lines */
    int log_lines, log_suppressed;
    peer_t *parked_head, *parked_tail; /* peers with calls waiting their turn, next served first */
    size_t nparked, nparked_peers;   /* those calls; those peers */
    loop_timer_t *park_timer;        /* hands them on (endpoint_park.c), or NULL */
    double park_timer_at;            /* when it fires */
    double park_recheck;             /* its delay while peers wait on their replies (backs off) */
    const char *park_refusal;        /* set by a stop: what calls that would wait get */
    const char *park_refusal_text;
    unsigned wake_batch;             /* messages read since the poll last woke for it */
    unsigned last_wake_batch;        /* the same, for the wake before (s_on_readable) */
    int busy;                        /* inside a callback: destroy must not free yet */
    int closing;                     /* destroyed while busy: freed when it unwinds */
};

/* endpoint.c */
/* A line for the host's log (log.h); refusals at most 20 a second. The
 * macros list the fields inline, ending the list themselves. */
void endpoint_log(endpoint_t *ep, int level, const char *msg, const log_field_t *fields);
void endpoint_log_refusal(endpoint_t *ep, const char *msg, const log_field_t *fields);
void endpoint_log_limited(endpoint_t *ep, int level, const char *msg, const log_field_t *fields);
#define ENDPOINT_LOG_LIMITED(ep, level, msg, ...) \
    endpoint_log_limited((ep), (level), (msg), LOG_FIELDS(__VA_ARGS__))
#define ENDPOINT_LOG(ep, level, msg, ...) \
    endpoint_log((ep), (level), (msg), LOG_FIELDS(__VA_ARGS__))
#define ENDPOINT_REFUSAL(ep, msg, ...) \
    endpoint_log_refusal((ep), (msg), LOG_FIELDS(__VA_ARGS__))
/* Hand an admitted WORK to on_work; released at once unless kept. */
void endpoint_deliver_work(endpoint_t *ep, const frame_message_t *m);
const char *endpoint_peer_text(const char *peer, size_t len, char *buf, size_t size);
void endpoint_enter(endpoint_t *ep);
int endpoint_leave(endpoint_t *ep);            /* 1: the endpoint is gone, stop */

/* endpoint_send.c */
/* Send now, or queue behind what already waits for that peer. `p` is its
 * directory entry or NULL; `call` a WORK's call, or NULL for a reply; `user`
 * binds a reply or a waiting WORK to an identity (checked when it leaves
 * later). Returns 0, or -1 with errno (EHOSTUNREACH: not routable and not
 * queued; ENOBUFS: the unroutable queue is full). */
int endpoint_out_send(endpoint_t *ep, peer_t *p, endpoint_call_t *call,
                      const char *peer, size_t peer_len, const char *user, size_t user_len,
                      const uint8_t *uuid, size_t uuid_len, int type,
                      const void *body, size_t body_len);
/* A reply whose body (malloc'd) is handed over: sent without a copy when
 * it is large and `p`'s pipe takes it, else as endpoint_out_send; the
 * body is freed (or libzmq frees it) on every path. */
int endpoint_out_send_owned(endpoint_t *ep, peer_t *p, const char *peer, size_t peer_len,
                            const char *user, size_t user_len, const uint8_t *uuid, int type,
                            char *body, size_t body_len);
/* Bytes held for or towards `p` (its budget's measure). */
size_t endpoint_out_used(const peer_t *p);
/* Try every queue now (after traffic: peers are often routable again). */
void endpoint_out_flush(endpoint_t *ep);
/* A directory entry is freed: its replies are dropped, its WORK waits
 * as unroutable. */
void endpoint_out_forget(endpoint_t *ep, peer_t *p);
/* A call ends: its WORK, if still queued, is dropped when reached. */
void endpoint_out_cancel(endpoint_call_t *c);
/* `p` is new in the directory: WORK that waited for its routing id joins
 * its queue, in order. */
void endpoint_out_adopt(endpoint_t *ep, peer_t *p);
/* Drop every queue (destroy). */
void endpoint_out_clear(endpoint_t *ep);

/* endpoint_park.c: admitted calls of a peer that wait until it may start
 * them (max_peer_calls, and room in its budget for their replies). */
/* May a call of `p` start now? */
int endpoint_park_may_start(const endpoint_t *ep, const peer_t *p);
/* Keep WORK `m` (admitted and charged) behind `p`'s others: a copy, or a
 * large body's part taken from `m`. 0, or -1 when out of memory. */
int endpoint_park(endpoint_t *ep, peer_t *p, frame_message_t *m);
/* Look at the waiting calls after `delay` seconds (0: next turn). */
void endpoint_park_wake(endpoint_t *ep, double delay);
/* `p` leaves the directory: its waiting calls are dropped. */
void endpoint_park_forget(endpoint_t *ep, peer_t *p);

/* endpoint_peers.c */
#define ENDPOINT_MAX_CONNECTS 64
typedef struct endpoint_connect {
    char *address;                   /* as given to zmq_connect: libzmq's events name it so */
    unsigned refused;                /* ZAP status of its last refused handshake; 0: none */
    int handshaken;                  /* a handshake there succeeded before: the next is a
                                        connection made again, which libzmq does not probe */
} endpoint_connect_t;
/* Remember an address connected to; 0, or -1 (ENOMEM). */
int endpoint_note_connect(endpoint_t *ep, const char *address);
/* Every address connected to refused our handshake (and none succeeded
 * since): a call to a peer with no connection cannot be answered. */
int endpoint_all_refused(const endpoint_t *ep);
/* End such calls soon (from the loop, not inside the caller). */
void endpoint_arm_refusal(endpoint_t *ep);
void endpoint_connects_free(endpoint_t *ep);
int endpoint_monitor_start(endpoint_t *ep, void *zmq_context);
void endpoint_monitor_stop(endpoint_t *ep);
void endpoint_drain_monitor(endpoint_t *ep);
/* The same, unless the monitor's fd says it holds no event (one poll(2),
 * not libzmq's getpid and poll). */
void endpoint_catch_up_monitor(endpoint_t *ep);
int endpoint_fd_closed(const endpoint_t *ep, int fd);
/* Forget `p` now if nothing keeps it: its connection closed and no
 * heartbeat sweep will report it. Returns 1 when it was removed. */
int endpoint_forget_closed(endpoint_t *ep, peer_t *p);
/* `p`'s connection closed or its entry goes: its calls running are
 * stopped (on_caller_gone), if it has any; counted in ep->callers_gone. */
void endpoint_caller_gone(endpoint_t *ep, const peer_t *p);
void endpoint_heartbeat_stop(endpoint_t *ep);

#endif
