/*
 * workers_worker: a worker's side of the link (see workers.h): WORK into
 * the same on_work a socket's WORK takes, a proxy's replies and calls to
 * the control, and the bounded questions a worker asks it (peers, cluster,
 * the password pool), keeping what arrives meanwhile for its loop.
 */
#include "workers_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "message.h"

/* ================= a worker ================= */

int workers_slot_id(const workers_slot_t *slot) { return slot->id; }
void *workers_slot_zmq(const workers_slot_t *slot) { return slot->w->zmq; }
const char *workers_slot_script(const workers_slot_t *slot, int *nargs, char ***args) {
    *nargs = slot->w->nargs;
    *args = slot->w->args;
    return slot->w->script;
}

void workers_slot_failed(workers_slot_t *slot, const char *text) {
    if (!slot->worker_pair) return;
    const void *d[] = { "E", text };
    size_t l[] = { 1, strlen(text) };
    workers_sendv(slot->worker_pair, 2, d, l);
}

/* A proxy's reply: REPLY to the control. */
static int s_proxy_reply(void *ctx, const char *peer, size_t peer_len, const char *user, size_t user_len,
                         const uint8_t *uuid, int type, const void *body, size_t body_len,
                         uint64_t serial, size_t charged) {
    lendpoint_t *le = ctx;
    workers_slot_t *s = le->host->slot;
    if (!s || !s->worker_pair) return -1;
    workers_hop_t hop = {
        .kind = 'R', .byte = (uint8_t)type, .serial = serial, .charged = charged, .uuid = uuid,
        .name = le->name, .name_len = le->name_len, .peer = peer, .peer_len = peer_len,
        .user = user, .user_len = user ? user_len : 0, .body = body, .body_len = body_len,
    };
    int rc = workers_hop_send(s->worker_pair, &hop);
    loop_touch(host_loop(le->host), s->worker_pair);
    return rc;
}

/* 'O' or 'Z' [kind, name]: this worker's script made or closed server `le`. */
static void s_say_server(lendpoint_t *le, const char *kind) {
    workers_slot_t *s = le->host->slot;
    if (!s || !s->worker_pair || !le->name_len) return;
    const void *d[] = { kind, le->name };
    size_t l[] = { 1, le->name_len };
    workers_sendv(s->worker_pair, 2, d, l);
    loop_touch(host_loop(le->host), s->worker_pair);
}

int workers_proxy_endpoint(lendpoint_t *le) {
    endpoint_proxy_t px = { le, s_proxy_reply };
    if (endpoint_set_proxy(le->ep, &px) < 0) return -1;
    s_say_server(le, "O");                        /* made again after a close: WORK comes back */
    return 0;
}

void workers_proxy_closed(lendpoint_t *le) { s_say_server(le, "Z"); }

int workers_answer_closed(lendpoint_t *le, const char *peer, size_t peer_len, const char *user,
                          size_t user_len, const uint8_t *uuid, uint64_t serial, size_t charged) {
    if (!le->host->slot || !le->name_len) return 0;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    static const char text[] = "the server was closed in its worker before the call ended";
    if (message_pack_error(&pk, "PeerLostError", 13, text, sizeof text - 1, "", 0) == 0)
        s_proxy_reply(le, peer, peer_len, user, user_len, uuid, FRAME_ERROR, sb.data, sb.size,
                      serial, charged);
    msgpack_sbuffer_destroy(&sb);
    return 1;
}

/* A WORK for a server this worker does not serve (its script made another
 * set, or closed it): given back, and the control sends that server's
 * WORK elsewhere, or runs it itself. */
static void s_bounce(workers_slot_t *s, const workers_hop_t *work) {
    workers_hop_t b = *work;
    b.kind = 'B';
    workers_hop_send(s->worker_pair, &b);
    if (s->host) loop_touch(host_loop(s->host), s->worker_pair);
}

/* WORK (one part, workers_hop_t): the same on_work a socket's WORK takes
 * (dispatch.c). */
static void s_on_work(workers_slot_t *s, zmq_msg_t *parts, int count) {
    host_t *h = s->host;
    workers_hop_t work;
    if (count != 1 || workers_hop_parse(&parts[0], 'W', &work) < 0 || work.name_len == 0 ||
        work.peer_len == 0) {
        workers_bad(h, s, "WORK", count);
        return;
    }
    lendpoint_t *le = workers_find(h, 's', work.name, work.name_len);
    if (!le) { s_bounce(s, &work); return; }
    frame_message_t m;
    workers_hop_to_work(&work, &m);
    if (work.byte & 4) h->ship_metrics = 1;       /* metrics, once served, stay on */
    endpoint_events_t ev;
    dispatch_events(le, &ev);
    endpoint_proxy_arm(le->ep, m.serial, m.charged);   /* for a refusal given now */
    endpoint_proxy_took(le->ep, m.peer, m.peer_len);   /* until its reply leaves */
    ev.on_work(ev.ctx, le->ep, &m);
    if (le->ep) endpoint_proxy_arm(le->ep, 0, 0);
}

void workers_slot_serving(workers_slot_t *s) {
    if (s->worker_pair) zmq_send(s->worker_pair, "G", 1, ZMQ_DONTWAIT);
}

void workers_slot_leave(workers_slot_t *s) {
    void *pair = s->worker_pair;
    if (zmq_send(pair, "L", 1, ZMQ_DONTWAIT) < 0) return;
    if (s->released) return;                      /* the control is joining: it sends nothing more */
    double end = loop_now() + PEERS_WAIT_MS / 1000.0;
    for (;;) {
        double left = end - loop_now();
        if (left <= 0) {
            fprintf(stderr, "pseud-lua: worker %d: the control did not answer its leave\n", s->id);
            return;
        }
        zmq_pollitem_t item = { pair, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&item, 1, (long)(left * 1000) + 1) < 0 && errno != EINTR) return;
        if (!(item.revents & ZMQ_POLLIN)) continue;
        zmq_msg_t parts[MAX_PARTS];
        int kept, count;
        if (workers_recv(pair, parts, &kept, &count, ZMQ_DONTWAIT) < 0) continue;
        workers_hop_t work;
        char kind = PL(0) >= 1 ? P(0)[0] : 0;
        int done = count == 1 && PL(0) == 1 && kind == 'l';
        if (kind == 'W' && count == 1 && workers_hop_parse(&parts[0], 'W', &work) == 0) s_bounce(s, &work);
        workers_close_parts(parts, kept);         /* the rest: answers nobody waits for any more */
        if (done) return;
    }
}

/* RESULT / FAILED [kind, epkind, name, call id, ...] of a call this worker made */
static void s_on_answer(workers_slot_t *s, zmq_msg_t *parts, int count, int failed) {
    host_t *h = s->host;
    if (count != 6 || PL(1) != 1 || PL(2) == 0 || PL(2) > FRAME_MAX_ID || PL(3) != FRAME_UUID_SIZE ||
        (!failed && PL(4) != 1) || (failed && (PL(4) == 0 || PL(4) > 64))) {
        workers_bad(h, s, failed ? "FAILED" : "RESULT", count);
        return;
    }
    lendpoint_t *le = workers_find(h, P(1)[0], P(2), PL(2));
    endpoint_call_t *c = le ? endpoint_find_call(le->ep, (const uint8_t *)P(3)) : NULL;
    if (!c) return;                               /* timed out here already */
    if (!failed) {
        int type = (uint8_t)P(4)[0];
        endpoint_settle_call(le->ep, c, type == FRAME_OK ? FRAME_OK : FRAME_ERROR, P(5), PL(5));
        return;
    }
    char name[65], message[1024];
    snprintf(name, sizeof name, "%.*s", (int)PL(4), P(4));
    snprintf(message, sizeof message, "%.*s", (int)(PL(5) > 1000 ? 1000 : PL(5)), P(5));
    endpoint_fail_call(le->ep, c, name, message);
}

/* 'V' [kind, name, serial, routing id]: the connection of that server's
 * directory entry closed; its calls running here stop. */
static void s_on_vanished(workers_slot_t *s, zmq_msg_t *parts, int count) {
    host_t *h = s->host;
    if (count != 4 || PL(1) == 0 || PL(1) > FRAME_MAX_ID || PL(2) != 8 || PL(3) > FRAME_MAX_ID) {
        workers_bad(h, s, "VANISHED", count);
        return;
    }
    lendpoint_t *le = workers_find(h, 's', P(1), PL(1));
    if (le) dispatch_stop_calls(le, workers_u64(&parts[2]), P(3), PL(3));
}

static void s_worker_message(workers_slot_t *s, zmq_msg_t *parts, int count) {
    char kind = PL(0) >= 1 ? P(0)[0] : 0;           /* a WORK is one part, the others' kind alone */
    if (kind != 'W' && PL(0) != 1) kind = 0;
    if (kind == 'W') s_on_work(s, parts, count);
    else if (kind == 'S') s_on_answer(s, parts, count, 0);
    else if (kind == 'F') s_on_answer(s, parts, count, 1);
    else if (kind == 'V') s_on_vanished(s, parts, count);
    else if (kind == 'X') host_stop(s->host);
    else if (kind == 'H') host_hurry(s->host);
    else if (kind == 'l') s->released = 1;        /* the control's destroy: its leave need not wait */
    else if (kind == 'p' || kind == 'k' || kind == 'y') {}   /* nobody waits for these now */
    else workers_bad(s->host, s, "unknown kind", count);
}

/* Run what was kept while waiting, then what the socket has. */
static void s_worker_drain(workers_slot_t *s) {
    while (s->stash && s->host) {
        stashed_t *m = s->stash;
        s->stash = m->next;
        if (!s->stash) s->stash_tail = NULL;
        s->nstash--;
        int kept = m->count < MAX_PARTS ? m->count : MAX_PARTS;
        s_worker_message(s, m->parts, m->count);
        workers_close_parts(m->parts, kept);
        free(m);
    }
    zmq_msg_t parts[MAX_PARTS];
    int kept, count;
    while (s->host && s->worker_pair && !s->stash &&
           workers_recv(s->worker_pair, parts, &kept, &count, ZMQ_DONTWAIT) == 0) {
        s_worker_message(s, parts, count);
        workers_close_parts(parts, kept);
    }
}

static void s_worker_on_message(loop_t *loop, void *socket, void *arg) {
    (void)loop; (void)socket;
    s_worker_drain(arg);
}

static void s_drain_timer(loop_t *loop, loop_timer_t *t, void *arg) {
    workers_slot_t *s = arg;
    (void)loop; (void)t;
    s->drain = NULL;
    s_worker_drain(s);
}

int workers_attach(host_t *h, workers_slot_t *slot) {
    slot->host = h;
    h->slot = slot;
    h->worker_id = slot->id;
    loop_ignore_signals(host_loop(h));
    loop_set_beat(host_loop(h), &slot->beat);
    return loop_add_socket(host_loop(h), slot->worker_pair, s_worker_on_message, slot);
}

void workers_detach(workers_slot_t *slot) {
    if (!slot->host) return;
    if (slot->drain) loop_cancel_timer(host_loop(slot->host), slot->drain);
    slot->drain = NULL;
    loop_set_beat(host_loop(slot->host), NULL);
    atomic_store_explicit(&slot->beat, 0, memory_order_relaxed);
    loop_remove_socket(host_loop(slot->host), slot->worker_pair);
    while (slot->stash) {                        /* kept while it asked, never run: WORK goes back */
        stashed_t *m = slot->stash;
        slot->stash = m->next;
        workers_hop_t work;
        if (m->count == 1 && workers_hop_parse(&m->parts[0], 'W', &work) == 0) s_bounce(slot, &work);
        else if (m->count == 1 && zmq_msg_size(&m->parts[0]) == 1 &&
                 *(const char *)zmq_msg_data(&m->parts[0]) == 'l') slot->released = 1;
        workers_close_parts(m->parts, m->count < MAX_PARTS ? m->count : MAX_PARTS);
        free(m);
    }
    slot->stash_tail = NULL;
    slot->nstash = 0;
    slot->host = NULL;
}

endpoint_call_t *workers_send_call(lendpoint_t *le, const char *user, size_t user_len,
                                   const char *rid, size_t rid_len, const char *body, size_t body_len,
                                   double timeout, int ref, int *e) {
    workers_slot_t *s = le->host->slot;
    if (!s || !s->worker_pair) { *e = EHOSTUNREACH; return NULL; }
    size_t name_len;
    const char *name = workers_name(le, &name_len);
    const char *who = user ? user : name;
    size_t who_len = user ? user_len : name_len;
    uint8_t call_id[FRAME_UUID_SIZE];
    frame_new_uuid(call_id);
    char kind = workers_kind(le);
    const void *d[] = { "C", &kind, name, user ? user : "", rid ? rid : "", body, &timeout, call_id };
    size_t l[] = { 1, 1, name_len, user ? user_len : 0, rid ? rid_len : 0, body_len, sizeof timeout,
                   FRAME_UUID_SIZE };
    if (workers_sendv(s->worker_pair, 8, d, l) < 0) { *e = errno; return NULL; }
    /* its answer comes from the loop, after this returns */
    endpoint_call_t *c = endpoint_track_call(le->ep, call_id, who, who_len, timeout, ref);
    if (!c) *e = ENOMEM;
    loop_touch(host_loop(le->host), s->worker_pair);
    return c;
}

/* Keep a message that came while waiting for PEERS' answer. */
static int s_stash(workers_slot_t *s, zmq_msg_t *parts, int kept, int count) {
    stashed_t *m = s->nstash < STASH_MAX ? malloc(sizeof *m) : NULL;
    workers_hop_t work;
    if (!m && count == 1 && workers_hop_parse(&parts[0], 'W', &work) == 0) {
        work.kind = 'b';                          /* no room: the control runs it */
        int rc = workers_hop_send(s->worker_pair, &work);
        workers_close_parts(parts, kept);
        return rc;
    }
    if (!m) { workers_close_parts(parts, kept); return -1; }
    m->next = NULL;
    m->count = count;
    for (int i = 0; i < kept; i++) { zmq_msg_init(&m->parts[i]); zmq_msg_move(&m->parts[i], &parts[i]); }
    workers_close_parts(parts, kept);
    if (s->stash_tail) s->stash_tail->next = m; else s->stash = m;
    s->stash_tail = m;
    s->nstash++;
    return 0;
}

/* Ask the control (`kind` [kind, epkind, name] for `le`) and wait, bounded,
 * for the answer whose first frame is `answer`: 0 with that frame in
 * *first (its other frames still to read), or -1 with a reason in `err`.
 * Other messages that come meanwhile are kept for the loop. */
static int s_ask_frames(host_t *h, int n, const void *const *d, const size_t *l, char answer,
                        zmq_msg_t *first, char *err, size_t err_size);

static int s_ask(lendpoint_t *le, char kind, char answer, zmq_msg_t *first, char *err, size_t err_size) {
    size_t name_len;
    const char *name = workers_name(le, &name_len);
    char epkind = workers_kind(le);
    const void *d[] = { &kind, &epkind, name };
    size_t l[] = { 1, 1, name_len };
    return s_ask_frames(le->host, 3, d, l, answer, first, err, err_size);
}

/* s_ask with the request's frames given. */
static int s_ask_frames(host_t *h, int n, const void *const *d, const size_t *l, char answer,
                        zmq_msg_t *first, char *err, size_t err_size) {
    workers_slot_t *s = h->slot;
    if (!s || !s->worker_pair) { snprintf(err, err_size, "no link to the control"); return -1; }
    if (workers_sendv(s->worker_pair, n, d, l) < 0) {
        snprintf(err, err_size, "cannot ask the control: %s", zmq_strerror(errno));
        return -1;
    }
    double end = loop_now() + PEERS_WAIT_MS / 1000.0;
    int rc = -1;
    snprintf(err, err_size, "the control did not answer within %d ms", PEERS_WAIT_MS);
    for (;;) {
        double left = end - loop_now();
        if (left <= 0) break;
        zmq_pollitem_t item = { s->worker_pair, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&item, 1, (long)(left * 1000) + 1) < 0 && errno != EINTR) break;
        if (!(item.revents & ZMQ_POLLIN)) continue;
        zmq_msg_init(first);
        if (zmq_msg_recv(first, s->worker_pair, ZMQ_DONTWAIT) < 0) { zmq_msg_close(first); continue; }
        if (zmq_msg_size(first) == 1 && *(char *)zmq_msg_data(first) == answer) { rc = 0; break; }
        /* another message: kept for the loop */
        zmq_msg_t parts[MAX_PARTS];
        int kept = 1, count = 1, more = zmq_msg_more(first);
        zmq_msg_init(&parts[0]);
        zmq_msg_move(&parts[0], first);
        zmq_msg_close(first);
        while (more) {
            zmq_msg_t tmp, *m = kept < MAX_PARTS ? &parts[kept] : &tmp;
            zmq_msg_init(m);
            zmq_msg_recv(m, s->worker_pair, 0);
            more = zmq_msg_more(m);
            if (m == &tmp) zmq_msg_close(m); else kept++;
            count++;
        }
        if (s_stash(s, parts, kept, count) < 0)
            HOST_LOG(h, LOG_ERROR, "workers: a message was lost while waiting for the control");
    }
    loop_touch(host_loop(h), s->worker_pair);
    if (s->stash && !s->drain) s->drain = loop_add_timer(host_loop(h), 0, s_drain_timer, s);
    return rc;
}

/* The rest of a message whose first frame was read: up to `max` frames in
 * `parts` (*got of them), the others dropped; 0, or -1 when it had more. */
static int s_rest(void *sock, zmq_msg_t *first, zmq_msg_t *parts, int max, int *got) {
    int more = zmq_msg_more(first), extra = 0;
    zmq_msg_close(first);
    *got = 0;
    while (more) {
        zmq_msg_t tmp, *m = *got < max ? &parts[*got] : &tmp;
        zmq_msg_init(m);
        zmq_msg_recv(m, sock, 0);
        more = zmq_msg_more(m);
        if (m == &tmp) { zmq_msg_close(m); extra = 1; } else ++*got;
    }
    return extra ? -1 : 0;
}

int workers_query_cluster(lendpoint_t *le, char *node, size_t node_size, int *up, char *err, size_t err_size) {
    zmq_msg_t first, parts[2];
    if (s_ask(le, 'K', 'k', &first, err, err_size) < 0) return -1;
    int got, rc = s_rest(le->host->slot->worker_pair, &first, parts, 2, &got);
    if (rc == 0 && got == 0) rc = 0, node[0] = '\0';          /* no cluster */
    else if (rc == 0 && got == 2 && zmq_msg_size(&parts[0]) < node_size && zmq_msg_size(&parts[1]) == 1) {
        memcpy(node, zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]));
        node[zmq_msg_size(&parts[0])] = '\0';
        *up = *(uint8_t *)zmq_msg_data(&parts[1]) != 0;
    } else {
        rc = -1;
        snprintf(err, err_size, "the control's answer was malformed");
    }
    workers_close_parts(parts, got);
    return rc;
}

int workers_query_peers(lendpoint_t *le, workers_peer_fn each, void *ctx, char *err, size_t err_size) {
    zmq_msg_t first;
    if (s_ask(le, 'P', 'p', &first, err, err_size) < 0) return -1;
    void *sock = le->host->slot->worker_pair;
    int more = zmq_msg_more(&first), ok = 1;
    zmq_msg_close(&first);
    while (more) {                                /* (user, routing id, last_seen) triples */
        zmq_msg_t t[3];
        int got = 0;
        for (; got < 3 && more; got++) {
            zmq_msg_init(&t[got]);
            zmq_msg_recv(&t[got], sock, 0);
            more = zmq_msg_more(&t[got]);
        }
        if (got == 3 && ok && zmq_msg_size(&t[2]) == sizeof(double) &&
            zmq_msg_size(&t[0]) <= FRAME_MAX_ID && zmq_msg_size(&t[1]) <= FRAME_MAX_ID) {
            double seen;
            memcpy(&seen, zmq_msg_data(&t[2]), sizeof seen);
            each(ctx, zmq_msg_data(&t[0]), zmq_msg_size(&t[0]), zmq_msg_data(&t[1]),
                 zmq_msg_size(&t[1]), seen);
        } else ok = 0;
        for (int i = 0; i < got; i++) zmq_msg_close(&t[i]);
    }
    if (!ok) snprintf(err, err_size, "the control's answer was malformed");
    return ok ? 0 : -1;
}

int workers_query_passwd(host_t *h, passwd_stats_t *st) {
    zmq_msg_t first, parts[1];
    char err[120];
    const void *d[] = { "Y" };
    size_t l[] = { 1 };
    if (s_ask_frames(h, 1, d, l, 'y', &first, err, sizeof err) < 0) return -1;
    int got, rc = s_rest(h->slot->worker_pair, &first, parts, 1, &got);
    if (rc == 0 && got == 1 && zmq_msg_size(&parts[0]) == sizeof *st)
        memcpy(st, zmq_msg_data(&parts[0]), sizeof *st);
    else rc = -1;                                 /* no pool in the control, or malformed */
    workers_close_parts(parts, got);
    return rc;
}

void workers_ship_metric(host_t *h, const char *name, size_t len, int outcome, double seconds) {
    workers_slot_t *s = h->slot;
    if (!s || !s->worker_pair) return;
    uint8_t o = (uint8_t)outcome;
    uint64_t sched[WORKERS_SCHED_COUNTS] = { h->sched.preemptions, h->sched.time_hits, h->sched.memory_hits,
                                             h->sched.hook_time_hits, h->sched.calls_stopped };
    const void *d[] = { "M", name ? name : "", &o, &seconds, sched };
    size_t l[] = { 1, name ? len : 0, 1, sizeof seconds, sizeof sched };
    workers_sendv(s->worker_pair, 5, d, l);
    loop_touch(host_loop(h), s->worker_pair);
}
