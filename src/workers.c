/*
 * workers: the control <-> N worker states over inproc (see workers.h and
 * docs/workers.md). This file: the link's frames and the control's side
 * (threads, WORK out, REPLY/CALL/questions in); workers_worker.c: a
 * worker's side.
 *
 * The control never blocks on a worker: its sends are non-blocking to
 * PAIRs without a high-water mark, and it answers a worker's PEERS query
 * from its loop. A worker blocks only while it asks (peers, cluster, the
 * password pool), bounded, and
 * keeps the messages that arrive meanwhile for its loop.
 */
#define _GNU_SOURCE                    /* pthread_setname_np, pthread_tryjoin_np */
#include "workers_internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <zmq.h>

#include "host.h"
#include "host_state.h"
#include "cluster_calls.h"
#include "dispatch.h"
#include "message.h"

/* At the end, how long the workers have to end their threads (after the
 * stop's own drain, which waits for them too): past it the process exits
 * without them. */
#define WORKERS_JOIN_SECONDS 5

/* --- frames --- */

/* Send `n` frames without blocking. 0, or -1 with errno. */
int workers_sendv(void *sock, int n, const void *const *data, const size_t *len) {
    for (int i = 0; i < n; i++)
        if (frame_send_part(sock, data[i], len[i], ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0)) < 0)
            return -1;
    return 0;
}

/* Receive one whole message: the first MAX_PARTS parts are kept in
 * `parts` (*kept of them), the rest dropped; *count says how many it had.
 * 0, or -1 with errno (EAGAIN: nothing). */
int workers_recv(void *sock, zmq_msg_t *parts, int *kept, int *count, int flags) {
    int more = 1;
    *kept = *count = 0;
    while (more) {
        zmq_msg_t tmp, *m = *kept < MAX_PARTS ? &parts[*kept] : &tmp;
        zmq_msg_init(m);
        if (frame_recv_part(m, sock, *count ? 0 : flags) < 0) {
            int e = errno;
            zmq_msg_close(m);
            for (int i = 0; i < *kept; i++) zmq_msg_close(&parts[i]);
            *kept = 0;
            errno = e;
            return -1;
        }
        more = zmq_msg_more(m);
        if (m == &tmp) zmq_msg_close(m); else ++*kept;
        ++*count;
    }
    return 0;
}

void workers_close_parts(zmq_msg_t *parts, int kept) {
    for (int i = 0; i < kept; i++) zmq_msg_close(&parts[i]);
}


uint64_t workers_u64(const zmq_msg_t *m) {
    uint64_t v;
    memcpy(&v, zmq_msg_data((zmq_msg_t *)m), sizeof v);
    return v;
}

/* The open endpoint of host `h` of that kind ('s' server, 'c' client) and
 * name, or NULL. */
lendpoint_t *workers_find(host_t *h, char kind, const char *name, size_t len) {
    for (int i = 0; i < h->nendpoints; i++) {
        lendpoint_t *le = h->endpoints[i];
        if (!le->ep) continue;
        if (kind == 's' && le->name_len == len && memcmp(le->name, name, len) == 0) return le;
        if (kind == 'c' && le->name_len == 0 && le->default_peer_len == len &&
            memcmp(le->default_peer, name, len) == 0)
            return le;
    }
    return NULL;
}

char workers_kind(const lendpoint_t *le) { return le->name_len ? 's' : 'c'; }
const char *workers_name(const lendpoint_t *le, size_t *len) {
    *len = le->name_len ? le->name_len : le->default_peer_len;
    return le->name_len ? le->name : le->default_peer;
}

lendpoint_t *workers_name_taken(host_t *h, const lendpoint_t *le) {
    size_t len, other_len;
    const char *name = workers_name(le, &len);
    for (int i = 0; i < h->nendpoints; i++) {
        lendpoint_t *e = h->endpoints[i];
        if (e == le || !e->ep || workers_kind(e) != workers_kind(le)) continue;
        const char *other = workers_name(e, &other_len);
        if (other_len == len && memcmp(other, name, len) == 0) return e;
    }
    return NULL;
}

void workers_bad(host_t *h, const workers_slot_t *s, const char *what, int count) {
    HOST_LOG_LIMITED(h, LOG_WARN, "workers: malformed message dropped", LOG_INT("worker", s->id),
                     LOG_STR("what", what), LOG_INT("frames", count));
}

/* ================= the control ================= */


/* A relayed call's answer goes back to the worker that made it. */
typedef struct relay {
    endpoint_relay_t base;
    workers_t *w;
    int id;                       /* the slot, 1..N */
    char kind;
    uint8_t call_id[FRAME_UUID_SIZE];
    size_t name_len;
    char name[FRAME_MAX_ID];
} relay_t;

static void s_relay_free(relay_t *r) {
    workers_t *w = r->w;
    free(r);
    if (--w->relays == 0 && w->destroyed) free(w);
}

static void *s_relay_pair(relay_t *r) {
    return r->w->destroyed ? NULL : r->w->slots[r->id - 1].control_pair;
}

static void s_relay_answered(endpoint_relay_t *base, int type, const char *body, size_t len) {
    relay_t *r = (relay_t *)base;
    void *pair = s_relay_pair(r);
    if (pair) {
        uint8_t t = (uint8_t)type;
        const void *d[] = { "S", &r->kind, r->name, r->call_id, &t, body };
        size_t l[] = { 1, 1, r->name_len, FRAME_UUID_SIZE, 1, len };
        workers_sendv(pair, 6, d, l);
        loop_touch(host_loop(r->w->h), pair);
    }
    s_relay_free(r);
}

static void s_send_failed(workers_slot_t *s, char kind, const char *name, size_t name_len,
                          const uint8_t *call_id, const char *error_name, const char *message) {
    if (!s->control_pair) return;
    const void *d[] = { "F", &kind, name, call_id, error_name, message };
    size_t l[] = { 1, 1, name_len, FRAME_UUID_SIZE, strlen(error_name), strlen(message) };
    workers_sendv(s->control_pair, 6, d, l);
    loop_touch(host_loop(s->w->h), s->control_pair);
}

static void s_relay_failed(endpoint_relay_t *base, const char *name, const char *message) {
    relay_t *r = (relay_t *)base;
    if (s_relay_pair(r))
        s_send_failed(&r->w->slots[r->id - 1], r->kind, r->name, r->name_len, r->call_id, name, message);
    s_relay_free(r);
}

/* CALL [kind, epkind, name, user, rid, body, timeout, call id]: made as
 * l_endpoint_call makes it (dispatch_send_call), answered by a relay. */
static void s_on_call(workers_slot_t *s, zmq_msg_t *parts, int count) {
    host_t *h = s->w->h;
    if (count != 8 || PL(1) != 1 || PL(2) == 0 || PL(2) > FRAME_MAX_ID || PL(3) > FRAME_MAX_ID ||
        PL(4) > FRAME_MAX_ID || PL(6) != sizeof(double) || PL(7) != FRAME_UUID_SIZE) {
        workers_bad(h, s, "CALL", count);
        return;
    }
    char kind = P(1)[0];
    const uint8_t *call_id = (const uint8_t *)P(7);
    lendpoint_t *le = workers_find(h, kind, P(2), PL(2));
    if (!le) {
        char text[320];
        snprintf(text, sizeof text, "the control has no %s '%.*s' to make this call",
                 kind == 's' ? "server" : "client", (int)(PL(2) > 64 ? 64 : PL(2)), P(2));
        s_send_failed(s, kind, P(2), PL(2), call_id, "RuntimeError", text);
        return;
    }
    double timeout;
    memcpy(&timeout, P(6), sizeof timeout);
    if (!(timeout > 0)) timeout = le->timeout;
    relay_t *r = malloc(sizeof *r);
    if (!r) {
        s_send_failed(s, kind, P(2), PL(2), call_id, "MemoryError", "not enough memory to relay the call");
        return;
    }
    r->base.answered = s_relay_answered;
    r->base.failed = s_relay_failed;
    r->w = s->w;
    r->id = s->id;
    r->kind = kind;
    memcpy(r->call_id, call_id, FRAME_UUID_SIZE);
    r->name_len = PL(2);
    memcpy(r->name, P(2), PL(2));
    int e = 0;
    const char *why = NULL;
    endpoint_call_t *c = dispatch_send_call(le, PL(3) ? P(3) : NULL, PL(3), PL(4) ? P(4) : NULL, PL(4),
                                            P(5), PL(5), timeout, -1, &e, &why);
    if (c) {
        c->relay = &r->base;
        s->w->relays++;
        return;
    }
    char text[400];
    const char *who = PL(3) ? P(3) : le->default_peer;
    int who_len = (int)(PL(3) ? PL(3) : le->default_peer_len);
    if (who_len > 64) who_len = 64;
    const char *ename = "PeerLostError";
    if (e == ENOBUFS) {
        ename = "BusyError";
        snprintf(text, sizeof text, "too much is queued for peer '%.*s' (max_peer_queue): wait for its "
                 "replies, then try again", who_len, who);
    } else if (why) {
        snprintf(text, sizeof text, "no connected peer '%.*s' here, and the cluster cannot look for "
                 "it: %s", who_len, who, why);
    } else if (e == EHOSTUNREACH) {
        snprintf(text, sizeof text, "no connected peer '%.*s'", who_len, who);
    } else {
        ename = "RuntimeError";
        snprintf(text, sizeof text, "cannot send: %s", zmq_strerror(e));
    }
    s_send_failed(s, kind, P(2), PL(2), call_id, ename, text);
    free(r);
}

/* REPLY (one part, workers_hop_t): release the budget, answer the peer */
static void s_on_reply(workers_slot_t *s, zmq_msg_t *parts, int count) {
    host_t *h = s->w->h;
    workers_hop_t r;
    if (count != 1 || workers_hop_parse(&parts[0], 'R', &r) < 0 || r.name_len == 0 || r.peer_len == 0) {
        workers_bad(h, s, "REPLY", count);
        return;
    }
    if (s->inflight) s->inflight--;
    lendpoint_t *le = workers_find(h, 's', r.name, r.name_len);
    if (!le) return;                              /* closed: nobody to answer */
    int type = r.byte;
    if (type != FRAME_OK && type != FRAME_ERROR && type != FRAME_UNAUTHORIZED && type != ENDPOINT_NO_ANSWER) {
        workers_bad(h, s, "REPLY type", count);
        return;
    }
    endpoint_release(le->ep, r.peer, r.peer_len, r.serial, (size_t)r.charged);
    if (type == ENDPOINT_NO_ANSWER) return;       /* a call stopped: its caller's connection closed */
    endpoint_answer(le->ep, r.peer, r.peer_len, r.serial, r.user_len ? r.user : NULL, r.user_len, r.uuid, type,
                    r.body, r.body_len);
}

/* Slot `s` takes no more WORK of server `name`: 0, or -1 out of memory. */
static int s_mark_closed(workers_slot_t *s, const char *name, size_t len) {
    if (!s->closed && !(s->closed = idset_new())) return -1;
    return idset_add(s->closed, name, len) < 0 ? -1 : 0;
}

/* A WORK the worker gave back: 'B' (it does not serve that server, or it
 * is leaving): that server's WORK goes elsewhere from now on, and this call
 * to another worker, or runs here; 'b' (no room to keep it while it
 * waited for an answer): runs here. The auth gate passed already. */
static void s_on_bounce(workers_slot_t *s, zmq_msg_t *parts, int count) {
    host_t *h = s->w->h;
    workers_hop_t b;
    char kind = PL(0) ? P(0)[0] : 0;              /* 'b': it had no room to keep it (runs here) */
    if (count != 1 || workers_hop_parse(&parts[0], kind, &b) < 0 || b.name_len == 0 || b.peer_len == 0) {
        workers_bad(h, s, "BOUNCE", count);
        return;
    }
    if (s->inflight) s->inflight--;
    /* marked, or (out of memory) run here: never back to the same worker */
    int marked = kind == 'B' && s_mark_closed(s, b.name, b.name_len) == 0;
    lendpoint_t *le = workers_find(h, 's', b.name, b.name_len);
    if (!le || !le->ep) return;                   /* closed: nobody to answer */
    frame_message_t m;
    workers_hop_to_work(&b, &m);
    if (!(marked && workers_send_work(s->w, le, &m) == 0) && !dispatch_work_here(le, &m, 1)) {
        endpoint_release(le->ep, m.peer, m.peer_len, m.serial, m.charged);
        return;
    }
    /* its caller's close may have come while it went back and forth: the
     * stop sent then did not find it */
    if (le->ep) endpoint_recheck_caller(le->ep, m.serial, m.peer, m.peer_len);
}

static void s_on_peers(workers_slot_t *s, zmq_msg_t *parts, int count) {
    host_t *h = s->w->h;
    if (count != 3 || PL(1) != 1 || PL(2) == 0 || PL(2) > FRAME_MAX_ID) {
        workers_bad(h, s, "PEERS", count);
        const void *d[] = { "p" };              /* an empty answer: the worker must not wait */
        size_t l[] = { 1 };
        workers_sendv(s->control_pair, 1, d, l);
        return;
    }
    lendpoint_t *le = workers_find(h, P(1)[0], P(2), PL(2));
    peers_t *dir = le ? endpoint_peers(le->ep) : NULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double wall = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9, mono = loop_now();
    int rc = frame_send_part(s->control_pair, "p", 1, ZMQ_DONTWAIT | (dir && peers_oldest(dir) ? ZMQ_SNDMORE : 0));
    for (peer_t *p = dir ? peers_oldest(dir) : NULL; p && rc >= 0; p = p->newer) {
        double seen = wall - (mono - p->last_seen);
        frame_send_part(s->control_pair, p->user_id, p->user_id_len, ZMQ_DONTWAIT | ZMQ_SNDMORE);
        frame_send_part(s->control_pair, p->routing_id, p->routing_id_len, ZMQ_DONTWAIT | ZMQ_SNDMORE);
        rc = frame_send_part(s->control_pair, &seen, sizeof seen, ZMQ_DONTWAIT | (p->newer ? ZMQ_SNDMORE : 0));
    }
    loop_touch(host_loop(h), s->control_pair);
}

/* METRIC [kind, name or empty (unknown), outcome, seconds, sched counters]:
 * a call a worker ended, counted here (the control serves /metrics). */
static void s_on_metric(workers_slot_t *s, zmq_msg_t *parts, int count) {
    host_t *h = s->w->h;
    if (count != 5 || PL(1) > 65536 || PL(2) != 1 || PL(3) != sizeof(double) ||
        PL(4) != sizeof s->sched || (uint8_t)P(2)[0] >= METRICS_OUTCOMES) {
        workers_bad(h, s, "METRIC", count);
        return;
    }
    memcpy(s->sched, P(4), sizeof s->sched);
    if (!h->metrics) return;
    metrics_name_t *n = PL(1) ? metrics_name(h->metrics, P(1), PL(1)) : metrics_unknown(h->metrics);
    metrics_count(n, (uint8_t)P(2)[0]);
    if (PL(1)) {
        double seconds;
        memcpy(&seconds, P(3), sizeof seconds);
        metrics_observe(n, seconds);
    }
}

void workers_sched_totals(const workers_t *w, uint64_t totals[WORKERS_SCHED_COUNTS]) {
    for (int i = 0; w && i < w->n; i++)
        for (int j = 0; j < WORKERS_SCHED_COUNTS; j++) totals[j] += w->slots[i].sched[j];
}


/* CLUSTER [kind, epkind, name] -> 'k' [kind, node, up] or ['k'] (none) */
static void s_on_cluster(workers_slot_t *s, zmq_msg_t *parts, int count) {
    host_t *h = s->w->h;
    lendpoint_t *le = count == 3 && PL(1) == 1 && PL(2) > 0 && PL(2) <= FRAME_MAX_ID
                    ? workers_find(h, P(1)[0], P(2), PL(2)) : NULL;
    if (count != 3) workers_bad(h, s, "CLUSTER", count);
    if (le && le->cluster) {
        int up;
        const char *node = cluster_calls_node(le->cluster, &up);
        uint8_t u = (uint8_t)(up != 0);
        const void *d[] = { "k", node, &u };
        size_t l[] = { 1, strlen(node), 1 };
        workers_sendv(s->control_pair, 3, d, l);
    } else {
        frame_send_part(s->control_pair, "k", 1, ZMQ_DONTWAIT);
    }
    loop_touch(host_loop(h), s->control_pair);
}

static void s_control_on_message(loop_t *loop, void *socket, void *arg) {
    workers_slot_t *s = arg;
    host_t *h = s->w->h;
    zmq_msg_t parts[MAX_PARTS];
    int kept, count;
    (void)loop;
    while (s->control_pair && workers_recv(socket, parts, &kept, &count, ZMQ_DONTWAIT) == 0) {
        char kind = PL(0) >= 1 ? P(0)[0] : 0;       /* REPLY, given back: one part; the others' kind alone */
        if (kind != 'R' && kind != 'B' && kind != 'b' && PL(0) != 1) kind = 0;
        if (kind == 'R') s_on_reply(s, parts, count);
        else if (kind == 'C') s_on_call(s, parts, count);
        else if (kind == 'P') s_on_peers(s, parts, count);
        else if (kind == 'K') s_on_cluster(s, parts, count);
        else if (kind == 'Y') {                   /* the password pool's counters */
            passwd_stats_t st;
            if (count == 1 && host_passwd_stats(h, &st) == 0) {
                const void *d[] = { "y", &st };
                size_t l[] = { 1, sizeof st };
                workers_sendv(s->control_pair, 2, d, l);
            } else frame_send_part(s->control_pair, "y", 1, ZMQ_DONTWAIT);
            loop_touch(host_loop(h), s->control_pair);
        }
        else if (kind == 'E' && count == 2) {
            HOST_LOG(h, LOG_ERROR, "worker's script failed: stopping", LOG_INT("worker", s->id),
                     LOG_BYTES("error", P(1), PL(1) > 2000 ? 2000 : PL(1)));
            host_worker_failed(h, s->id, P(1), PL(1));
        } else if (kind == 'M') {
            s_on_metric(s, parts, count);
        } else if (kind == 'A' && count == 2 && PL(1) == 8) {
            s->w->abandoned += (size_t)workers_u64(&parts[1]);
        } else if (kind == 'B' || kind == 'b') {
            s_on_bounce(s, parts, count);
        } else if (kind == 'L' && count == 1) {     /* leaving: nothing more goes there */
            s->leaving = 1;
            frame_send_part(s->control_pair, "l", 1, ZMQ_DONTWAIT);
            loop_touch(host_loop(h), s->control_pair);
        } else if ((kind == 'Z' || kind == 'O') && count == 2 && PL(1) > 0 && PL(1) <= FRAME_MAX_ID) {
            /* a server the worker's script closed, or made (again) */
            if (kind == 'O') { if (s->closed) idset_remove(s->closed, P(1), PL(1)); }
            else s_mark_closed(s, P(1), PL(1));
        } else if (kind == 'G' && count == 1) {   /* its script serves: WORK may go there */
            s->serving = 1;
        } else if (kind == 'D') {
            s->done = 1;
            HOST_LOG(h, LOG_DEBUG, "worker done", LOG_INT("worker", s->id));
        } else workers_bad(h, s, "unknown kind", count);
        workers_close_parts(parts, kept);
    }
}

/* The body of a worker thread. */
static void *s_thread(void *arg) {
    workers_slot_t *s = arg;
    char name[16];                                /* top -H, perf and /proc name it */
    snprintf(name, sizeof name, "pseud-worker-%d", s->id);
    pthread_setname_np(pthread_self(), name);
    void *pair = zmq_socket(s->w->zmq, ZMQ_PAIR);
    int zero = 0, linger = 1000;
    if (pair) {
        zmq_setsockopt(pair, ZMQ_SNDHWM, &zero, sizeof zero);
        zmq_setsockopt(pair, ZMQ_RCVHWM, &zero, sizeof zero);
        zmq_setsockopt(pair, ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_connect(pair, s->address) < 0) { zmq_close(pair); pair = NULL; }
    }
    s->worker_pair = pair;
    if (pair) s->w->main(s);
    else fprintf(stderr, "pseud-lua: worker %d: cannot connect to the control\n", s->id);
    if (pair) {
        workers_slot_leave(s);
        zmq_send(pair, "D", 1, 0);
        zmq_close(pair);
    }
    s->worker_pair = NULL;
    return NULL;
}

workers_t *workers_start(host_t *h, int n, workers_main_fn main, const char *script,
                         int nargs, char **args, char *err, size_t err_size) {
    workers_t *w = calloc(1, sizeof *w + (size_t)n * sizeof(workers_slot_t));
    if (!w) { snprintf(err, err_size, "not enough memory"); return NULL; }
    w->h = h;
    w->zmq = host_zmq(h);
    w->n = n;
    w->main = main;
    w->script = script;
    w->nargs = nargs;
    w->args = args;
    sigset_t block, old;                          /* workers take no signal: the control's */
    sigfillset(&block);
    for (int i = 0; i < n; i++) {
        workers_slot_t *s = &w->slots[i];
        s->w = w;
        s->id = i + 1;
        snprintf(s->address, sizeof s->address, "inproc://pseud-worker-%p-%d", (void *)w, s->id);
        void *pair = zmq_socket(w->zmq, ZMQ_PAIR);
        int zero = 0;
        if (pair) {
            zmq_setsockopt(pair, ZMQ_SNDHWM, &zero, sizeof zero);
            zmq_setsockopt(pair, ZMQ_RCVHWM, &zero, sizeof zero);
            zmq_setsockopt(pair, ZMQ_LINGER, &zero, sizeof zero);
        }
        if (!pair || zmq_bind(pair, s->address) < 0 ||
            loop_add_socket(host_loop(h), pair, s_control_on_message, s) < 0) {
            snprintf(err, err_size, "worker %d: cannot make its link: %s", s->id, zmq_strerror(errno));
            if (pair) zmq_close(pair);
            workers_destroy(&w);
            return NULL;
        }
        s->control_pair = pair;
    }
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (int i = 0; i < n; i++) {
        workers_slot_t *s = &w->slots[i];
        int e = pthread_create(&s->thread, NULL, s_thread, s);
        if (e) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            snprintf(err, err_size, "worker %d: cannot start its thread: %s", s->id, strerror(e));
            workers_stop(w);
            workers_destroy(&w);
            return NULL;
        }
        s->started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return w;
}

/* Message `kind` alone to every worker still there. */
static void s_tell_all(workers_t *w, const char *kind) {
    for (int i = 0; w && i < w->n; i++) {
        workers_slot_t *s = &w->slots[i];
        if (!s->control_pair || s->done) continue;
        frame_send_part(s->control_pair, kind, 1, ZMQ_DONTWAIT);
        loop_touch(host_loop(w->h), s->control_pair);
    }
}

void workers_stop(workers_t *w) {
    if (w) w->stopping = 1;                       /* new WORK runs here: a stopping worker may not read it */
    s_tell_all(w, "X");
}

void workers_hurry(workers_t *w) { s_tell_all(w, "H"); }

int workers_alive(const workers_t *w) {
    int n = 0;
    for (int i = 0; w && i < w->n; i++) n += w->slots[i].started && !w->slots[i].done;
    return n;
}

size_t workers_abandoned(const workers_t *w) { return w ? w->abandoned : 0; }

void workers_slot_abandoned(workers_slot_t *slot, size_t calls) {
    if (!slot->worker_pair) return;
    uint64_t n = calls;
    const void *d[] = { "A", &n };
    size_t l[] = { 1, 8 };
    workers_sendv(slot->worker_pair, 2, d, l);
}

size_t workers_inflight(const workers_t *w) {
    size_t n = 0;
    for (int i = 0; w && i < w->n; i++) n += w->slots[i].inflight;
    return n;
}

int workers_busy(const workers_t *w) {
    for (int i = 0; w && i < w->n; i++) {
        const workers_slot_t *s = &w->slots[i];
        if (s->started && (!s->done || s->inflight)) return 1;
    }
    return 0;
}

/* Join `thread` by monotonic time `until`: 0, or -1 (still running). Not
 * pthread_timedjoin_np: its bound is the wall clock, which a clock step moves. */
static int s_join_by(pthread_t thread, double until) {
    for (;;) {
        if (pthread_tryjoin_np(thread, NULL) == 0) return 0;
        double left = until - loop_now();
        if (left <= 0) return -1;
        struct timespec nap = { 0, 10 * 1000 * 1000 };   /* a thread's end has no fd to poll */
        nanosleep(&nap, NULL);
    }
}

void workers_destroy(workers_t **p) {
    workers_t *w = *p;
    if (!w) return;
    *p = NULL;
    double until = loop_now() + WORKERS_JOIN_SECONDS;   /* one bound for all of them */
    for (int i = 0; i < w->n; i++) {
        workers_slot_t *s = &w->slots[i];
        if (s->started) {
            if (!s->done && s->control_pair) {
                frame_send_part(s->control_pair, "X", 1, ZMQ_DONTWAIT);
                frame_send_part(s->control_pair, "l", 1, ZMQ_DONTWAIT);   /* its leave need not wait */
            }
            if (s_join_by(s->thread, until) != 0) {
                /* its script never came back to its loop (a top level that
                 * never ends, a blocking C call): nothing can end that thread,
                 * and the ZeroMQ context cannot end while its socket is open */
                HOST_LOG(w->h, LOG_ERROR, "a worker does not end: exiting without it",
                         LOG_INT("worker", s->id), LOG_INT("seconds", WORKERS_JOIN_SECONDS));
                fflush(stdout);
                fflush(stderr);
                _exit(1);
            }
            s->started = 0;
        }
    }
    for (int i = 0; i < w->n; i++) {
        workers_slot_t *s = &w->slots[i];
        if (s->control_pair) {
            loop_remove_socket(host_loop(w->h), s->control_pair);
            zmq_close(s->control_pair);
            s->control_pair = NULL;
        }
        idset_destroy(&s->closed);
    }
    w->destroyed = 1;
    if (w->relays == 0) free(w);
}

void workers_stop_calls(workers_t *w, lendpoint_t *le, uint64_t serial, const char *peer, size_t peer_len) {
    const void *d[] = { "V", le->name, &serial, peer };
    size_t l[] = { 1, le->name_len, sizeof serial, peer_len };
    for (int i = 0; i < w->n; i++) {
        workers_slot_t *s = &w->slots[i];
        if (!s->started || !s->control_pair || !s->inflight) continue;
        workers_sendv(s->control_pair, 4, d, l);
        loop_touch(host_loop(w->h), s->control_pair);
    }
}

/* An FNV-1a hash of the user id: a user's calls go to one worker. */
static uint32_t s_hash(const char *p, size_t n) {
    uint32_t x = 2166136261u;
    for (size_t i = 0; i < n; i++) x = (x ^ (uint8_t)p[i]) * 16777619u;
    return x;
}

/* A worker whose loop has not come back to poll for this long, with calls
 * in flight, is held in something the loop cannot cut (a blocking C call,
 * a long finalizer): it gets new WORK only when every worker is. A pass of
 * its tasks ends after a slice (10 ms), so a live worker comes back well
 * within it. */
#define STUCK_US 100000

static int s_stuck(workers_slot_t *s, uint64_t *now_us) {
    uint64_t beat = atomic_load_explicit(&s->beat, memory_order_relaxed);
    if (!s->inflight || !beat) return 0;
    if (!*now_us) *now_us = (uint64_t)(loop_now() * 1e6);
    return *now_us > beat && *now_us - beat > STUCK_US;
}

/* Slot `s` takes WORK of server `le`: running, its script serving (a
 * worker whose top level never ends, or not yet, would keep the calls
 * sent to it: the control runs them meanwhile), not leaving, no stop under
 * way, and its script has not closed (nor bounced) that server. */
static int s_serves(const workers_slot_t *s, const lendpoint_t *le) {
    return s->started && s->serving && !s->done && !s->leaving && !s->w->stopping && s->control_pair &&
           !(s->closed && idset_has(s->closed, le->name, le->name_len));
}

int workers_send_work(workers_t *w, lendpoint_t *le, const frame_message_t *m) {
    workers_slot_t *best = NULL;
    if (le->worker_by_user) {
        workers_slot_t *s = &w->slots[s_hash(m->user, m->user_len) % (uint32_t)w->n];
        if (s_serves(s, le)) best = s;
    }
    /* the fewest in flight, among those not stuck if any is not */
    uint64_t now_us = 0;
    int best_stuck = 0;
    for (int i = 0; !best || (!le->worker_by_user && i < w->n); i++) {
        if (i >= w->n) break;
        workers_slot_t *s = &w->slots[i];
        if (!s_serves(s, le)) continue;
        int stuck = s_stuck(s, &now_us);
        if (!best || stuck < best_stuck || (stuck == best_stuck && s->inflight < best->inflight)) {
            best = s;
            best_stuck = stuck;
        }
    }
    if (!best) return -1;
    workers_hop_t hop = {
        .kind = 'W', .serial = m->serial, .charged = m->charged, .uuid = m->uuid,
        .byte = (uint8_t)((m->logged_in ? 1 : 0) | (m->idle_sender ? 2 : 0) |
                          (w->h->metrics ? 4 : 0)),   /* 4: ship outcomes ('M') */
        .name = le->name, .name_len = le->name_len, .peer = m->peer, .peer_len = m->peer_len,
        .user = m->user, .user_len = m->user_len, .body = m->body, .body_len = m->body_len,
    };
    int rc = workers_hop_send(best->control_pair, &hop);
    loop_touch(host_loop(w->h), best->control_pair);
    if (rc < 0) return -1;
    best->inflight++;
    return 0;
}
