/*
 * workers_internal: what workers.c (the control's side and the link's
 * frames) and workers_worker.c (a worker's side) share. Include it from
 * those two only.
 */
#ifndef PSEUD_WORKERS_INTERNAL_H
#define PSEUD_WORKERS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <zmq.h>

#include "host.h"
#include "host_state.h"
#include "idset.h"
#include "workers.h"
#include "workers_hop.h"

#define MAX_PARTS      8          /* the longest message of the link (CALL) */
#define PEERS_WAIT_MS  5000       /* a worker waits this long for the control's peers */
#define STASH_MAX      100000     /* messages a worker keeps while it waits */

typedef struct stashed {
    struct stashed *next;
    int count;
    zmq_msg_t parts[MAX_PARTS];
} stashed_t;

struct workers_slot {
    workers_t *w;
    int id;                       /* 1..N */
    char address[64];             /* inproc://... */
    void *control_pair;           /* the control's end (bound), NULL once closed */
    void *worker_pair;            /* the worker's end: its thread makes and closes it */
    pthread_t thread;
    int started;                  /* the thread runs (join it) */
    size_t inflight;              /* WORK sent, not answered yet */
    _Atomic uint64_t beat;        /* its loop's (loop_set_beat): 0 waiting, else since when it works */
    uint64_t sched[WORKERS_SCHED_COUNTS]; /* its workers_sched_totals counters, as it last said */
    int done;                     /* DONE came: its thread is ending */
    idset_t *closed;              /* servers its script closed ('Z'): no WORK of theirs goes there */
    int leaving;                  /* it said it leaves ('L'): no WORK goes there */
    int serving;                  /* it said its script serves ('G'): WORK may go there */
    int released;                 /* worker side: the control's 'l' came (its destroy sends one) */
    /* worker side */
    host_t *host;                 /* the worker's host, while its state is open */
    stashed_t *stash, *stash_tail;/* kept while waiting for PEERS */
    size_t nstash;
    loop_timer_t *drain;          /* runs the stash from the loop */
};

struct workers {
    host_t *h;                    /* the control's host */
    void *zmq;
    int n;
    workers_main_fn main;
    const char *script;
    int nargs;
    char **args;
    int relays;                   /* calls relayed for a worker, not yet answered */
    size_t abandoned;             /* calls the workers answered PeerLostError at their stop */
    int destroyed;                /* freed when relays reach 0 */
    int stopping;                 /* STOP sent: new WORK runs in the control */
    workers_slot_t slots[];
};

/* A part of the message `parts` (a zmq_msg_t array in scope): its bytes, its size. */
#define P(i)  ((const char *)zmq_msg_data(&parts[i]))
#define PL(i) zmq_msg_size(&parts[i])

/* Send `n` frames without blocking. 0, or -1 with errno. */
int workers_sendv(void *sock, int n, const void *const *data, const size_t *len);
/* Receive one whole message: the first MAX_PARTS parts kept in `parts`
 * (*kept of them), the rest dropped; *count: how many it had. 0, or -1
 * with errno (EAGAIN: nothing). */
int workers_recv(void *sock, zmq_msg_t *parts, int *kept, int *count, int flags);
void workers_close_parts(zmq_msg_t *parts, int kept);
/* A part of exactly 8 bytes as a number. */
uint64_t workers_u64(const zmq_msg_t *m);
/* The open endpoint of host `h` of that kind ('s' server, 'c' client) and name, or NULL. */
lendpoint_t *workers_find(host_t *h, char kind, const char *name, size_t len);
/* A worker thread whose state has closed: says it leaves ('L') and gives
 * back ('B') every WORK that reaches it until the control's 'l' says no
 * more will come, so none is lost (docs/workers.md, "Stop, signals,
 * failures"). */
void workers_slot_leave(workers_slot_t *s);
/* A malformed message dropped: one line (rate-limited) naming the worker. */
void workers_bad(host_t *h, const workers_slot_t *s, const char *what, int count);

#endif
