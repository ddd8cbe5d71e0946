/*
 * test_loop: the reactor alone (timers, sockets, signals; no Lua).
 *
 * Timers: due order with equal and zero delays, cancelling before and from a
 * callback, a zero-delay timer added by a callback waits for the next round,
 * and 10,000 random timers with random cancels (before and during the run)
 * fire in non-decreasing due time. Sockets: inproc PAIRs wake the poll and
 * call their handler; removing (and closing) sockets during dispatch is safe
 * and the poll set stays paired with its handlers; an idle max_wait returns;
 * a signal taken outside a handler is made good by loop_touch; a plain fd
 * watch calls its handler when readable, never once removed; one watched
 * for writing too says which event is ready and follows interest changes.
 * Signals: a raised or timer-sent SIGTERM/SIGINT makes loop_run_once return
 * -1 until cleared. Every wait is bounded by a deadline; nothing sleeps.
 *
 * Each failed check prints one line (file:line: what was expected); the last
 * line is a summary and the exit status is non-zero when any check failed.
 */
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include <zmq.h>

static int g_checks, g_failed;

#include "check.h"

#define WAIT_LIMIT 1.0             /* seconds: bound on every wait for an event */

/* ------------------------------------------------------------- timer order */

typedef struct rec {
    double delay;
    double added;                  /* loop_now() just before loop_add_timer */
    double fired_at;
    int fired;                     /* times its callback ran */
    loop_timer_t *timer;
    struct order *order;
} rec_t;

typedef struct order {
    int seq[64];
    int n;
    rec_t *recs;
} order_t;

static void s_record(loop_t *loop, loop_timer_t *t, void *arg)
{
    (void)loop;
    rec_t *r = arg;
    CHECK(t == r->timer, "callback gets its own timer");
    r->fired++;
    r->fired_at = loop_now();
    if (r->order->n < 64) r->order->seq[r->order->n++] = (int)(r - r->order->recs);
}

static void test_due_order(void)
{
    static const double delays[] = { 0.03, 0.01, 0.0, 0.02, 0.01, 0.0, 0.03, 0.02, 0.005, 0.0 };
    enum { N = sizeof delays / sizeof *delays };
    rec_t recs[N];
    order_t order = { .n = 0, .recs = recs };
    loop_t *loop = loop_new();
    CHECK(loop != NULL, "loop_new");
    for (int i = 0; i < N; i++) {
        recs[i] = (rec_t){ .delay = delays[i], .order = &order };
        recs[i].added = loop_now();
        recs[i].timer = loop_add_timer(loop, delays[i], s_record, &recs[i]);
        CHECK(recs[i].timer != NULL, "loop_add_timer %d", i);
    }
    /* with max_wait 0 the zero-delay timers are due at once */
    int first = loop_run_once(loop, 0);
    CHECK(first >= 3, "loop_run_once(0) runs the 3 zero-delay timers, ran %d", first);
    int handled = first;
    double deadline = loop_now() + WAIT_LIMIT;
    while (order.n < N && loop_now() < deadline) handled += loop_run_once(loop, 0.1);
    CHECK(order.n == N, "all %d timers fire, %d did", N, order.n);
    CHECK(handled == N, "loop_run_once counts %d events in all, counted %d", N, handled);
    for (int i = 0; i < N; i++) {
        CHECK(recs[i].fired == 1, "timer %d fires once, fired %d", i, recs[i].fired);
        CHECK(recs[i].fired_at >= recs[i].added + recs[i].delay,
              "timer %d (%.3f s) never early: fired %.6f s after adding", i, recs[i].delay,
              recs[i].fired_at - recs[i].added);
    }
    for (int k = 1; k < order.n; k++)
        CHECK(delays[order.seq[k - 1]] <= delays[order.seq[k]],
              "fire order by due time: %.3f s fired before %.3f s (positions %d, %d)",
              delays[order.seq[k - 1]], delays[order.seq[k]], k - 1, k);
    for (int k = 0; k < 3 && k < order.n; k++)
        CHECK(delays[order.seq[k]] == 0.0, "zero-delay timers first: position %d had %.3f s",
              k, delays[order.seq[k]]);
    CHECK(loop_run_once(loop, 0) == 0, "nothing left to run");
    loop_destroy(&loop);
    CHECK(loop == NULL, "loop_destroy clears the pointer");
    loop_destroy(&loop);                                /* takes NULL */
    loop_destroy(NULL);
}

/* ------------------------------------------------------------ cancelling */

typedef struct canceller {
    loop_timer_t *victims[4];
    int nvictims;
    int fired;
} canceller_t;

static void s_cancel_others(loop_t *loop, loop_timer_t *t, void *arg)
{
    (void)t;
    canceller_t *c = arg;
    c->fired++;
    for (int i = 0; i < c->nvictims; i++) loop_cancel_timer(loop, c->victims[i]);
    c->nvictims = 0;
}

static void s_count(loop_t *loop, loop_timer_t *t, void *arg)
{
    (void)loop; (void)t;
    (*(int *)arg)++;
}

static void test_cancel(void)
{
    loop_t *loop = loop_new();
    int a = 0, b = 0, c = 0, d = 0, e = 0, marker = 0;

    /* cancelled before the loop runs: a due one and a later one */
    loop_timer_t *ta = loop_add_timer(loop, 0.0, s_count, &a);
    loop_timer_t *tb = loop_add_timer(loop, 0.01, s_count, &b);
    loop_add_timer(loop, 0.0, s_count, &c);
    loop_cancel_timer(loop, ta);
    loop_cancel_timer(loop, tb);
    loop_cancel_timer(loop, NULL);                      /* takes NULL */

    /* cancelled from another timer's callback: one due in the same round, one later */
    canceller_t k = { .nvictims = 2 };
    loop_add_timer(loop, 0.0, s_cancel_others, &k);
    k.victims[0] = loop_add_timer(loop, 0.0, s_count, &d);
    k.victims[1] = loop_add_timer(loop, 0.02, s_count, &e);
    loop_add_timer(loop, 0.04, s_count, &marker);

    double deadline = loop_now() + WAIT_LIMIT;
    while (!marker && loop_now() < deadline) loop_run_once(loop, 0.1);
    CHECK(marker == 1, "the marker timer fires");
    CHECK(a == 0 && b == 0, "timers cancelled before running never fire (%d, %d)", a, b);
    CHECK(c == 1, "the timer not cancelled fires once, fired %d", c);
    CHECK(k.fired == 1, "the cancelling timer fires once, fired %d", k.fired);
    CHECK(d == 0, "a due timer cancelled by an earlier callback in its round never fires (%d)", d);
    CHECK(e == 0, "a later timer cancelled from a callback never fires (%d)", e);
    CHECK(loop_run_once(loop, 0) == 0, "nothing left to run");
    loop_destroy(&loop);
}

/* --------------------------------------------- zero delay from a callback */

typedef struct rearm {
    int fired;
    int limit;
} rearm_t;

static void s_rearm(loop_t *loop, loop_timer_t *t, void *arg)
{
    (void)t;
    rearm_t *r = arg;
    if (++r->fired < r->limit) loop_add_timer(loop, 0.0, s_rearm, r);
}

static void test_zero_delay_from_callback(void)
{
    loop_t *loop = loop_new();
    rearm_t r = { 0, 5 };
    loop_add_timer(loop, 0.0, s_rearm, &r);
    for (int round = 1; round <= 5; round++) {
        int n = loop_run_once(loop, 0);
        CHECK(n == 1 && r.fired == round,
              "round %d: a timer re-added at 0 s by its callback waits for the next round "
              "(ran %d, fired %d)", round, n, r.fired);
    }
    CHECK(loop_run_once(loop, 0) == 0 && r.fired == 5, "no more after the last re-arm");

    /* among timers not yet due: a round still ends (at most the timers it began with) */
    rearm_t s = { 0, 1000 };
    int never = 0;
    loop_timer_t *far1 = loop_add_timer(loop, 60.0, s_count, &never);
    loop_timer_t *far2 = loop_add_timer(loop, 60.0, s_count, &never);
    loop_add_timer(loop, 0.0, s_rearm, &s);
    for (int round = 1; round <= 3; round++) {
        int before = s.fired;
        int n = loop_run_once(loop, 0);
        CHECK(n >= 1 && n <= 3 && s.fired - before == n,
              "round %d: bounded by the 3 timers it began with, ran %d", round, n);
    }
    CHECK(never == 0, "far timers not run");
    loop_cancel_timer(loop, far1);
    loop_cancel_timer(loop, far2);
    loop_destroy(&loop);                                /* frees the pending re-arm */
}

/* ------------------------------------------------------- 10,000 timers */

enum { MANY = 10000, MANY_CAP = 12000 };

typedef enum { T_PENDING, T_FIRED, T_CANCELLED } tstate_t;

typedef struct many_rec {
    double lo, hi;                 /* bounds on its due time */
    double fired_at;
    int fired;
    tstate_t state;
    loop_timer_t *timer;
} many_rec_t;

typedef struct many {
    many_rec_t recs[MANY_CAP];
    int n;                         /* records in use */
    int *fire_seq;                 /* record indexes in fire order */
    int nfired;
    int pending;                   /* records still T_PENDING */
    int early, cancelled_fired, unknown;
    uint64_t rng;
    loop_t *loop;
} many_t;

static uint64_t s_rand(uint64_t *state)           /* xorshift64* */
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ULL;
}

static double s_uniform(uint64_t *state) { return (double)(s_rand(state) >> 11) * 0x1p-53; }

static void s_many_fire(loop_t *loop, loop_timer_t *t, void *arg);

static void s_many_add(many_t *m, double delay)
{
    many_rec_t *r = &m->recs[m->n];
    r->lo = loop_now() + delay;
    r->timer = loop_add_timer(m->loop, delay, s_many_fire, (void *)(intptr_t)m->n);
    r->hi = loop_now() + delay;
    r->state = T_PENDING;
    r->fired = 0;
    if (!r->timer) { CHECK(0, "loop_add_timer %d: out of memory", m->n); return; }
    m->n++;
    m->pending++;
}

static many_t *g_many;             /* the callbacks' arg is the record index */

static void s_many_fire(loop_t *loop, loop_timer_t *t, void *arg)
{
    many_t *m = g_many;
    int i = (int)(intptr_t)arg;
    double now = loop_now();
    many_rec_t *r = &m->recs[i];
    if (r->timer != t) m->unknown++;
    if (r->state == T_CANCELLED) m->cancelled_fired++;
    else if (r->state == T_PENDING) m->pending--;
    if (now < r->lo) m->early++;
    r->state = T_FIRED;
    r->fired++;
    r->fired_at = now;
    r->timer = NULL;
    m->fire_seq[m->nfired++] = i;
    /* now and then cancel another pending timer, or add one */
    uint64_t x = s_rand(&m->rng);
    if ((x & 7) == 0) {
        int j = (int)((x >> 8) % (uint64_t)m->n);
        if (m->recs[j].state == T_PENDING) {
            loop_cancel_timer(loop, m->recs[j].timer);
            m->recs[j].state = T_CANCELLED;
            m->recs[j].timer = NULL;
            m->pending--;
        }
    } else if ((x & 15) == 1 && m->n < MANY_CAP) {
        s_many_add(m, s_uniform(&m->rng) * 0.05);
    }
}

static void test_many_timers(void)
{
    many_t *m = calloc(1, sizeof *m);
    m->fire_seq = calloc(MANY_CAP, sizeof *m->fire_seq);
    m->rng = 0x9e3779b97f4a7c15ULL;                     /* fixed seed: reproducible */
    m->loop = loop_new();
    g_many = m;
    for (int i = 0; i < MANY; i++) {
        /* a few exact ties and zeros among the random delays */
        double delay = i % 100 == 0 ? 0.0 : i % 100 == 1 ? 0.1 : s_uniform(&m->rng) * 0.25;
        s_many_add(m, delay);
    }
    int cancelled = 0;
    for (int i = 0; i < MANY; i++) {
        if (s_rand(&m->rng) % 4 != 0) continue;
        loop_cancel_timer(m->loop, m->recs[i].timer);
        m->recs[i].state = T_CANCELLED;
        m->recs[i].timer = NULL;
        m->pending--;
        cancelled++;
    }
    CHECK(cancelled > MANY / 5 && cancelled < MANY / 3, "about a quarter cancelled: %d", cancelled);

    double deadline = loop_now() + 2 * WAIT_LIMIT;
    while (m->pending > 0 && loop_now() < deadline) loop_run_once(m->loop, 0.05);
    int pending = 0;
    for (int i = 0; i < m->n; i++) pending += m->recs[i].state == T_PENDING;
    CHECK(pending == 0 && m->pending == 0, "every timer not cancelled fires within %.1f s", 2 * WAIT_LIMIT);
    CHECK(m->cancelled_fired == 0, "cancelled timers never fire: %d did", m->cancelled_fired);
    CHECK(m->early == 0, "no timer fires before its due time: %d did", m->early);
    CHECK(m->unknown == 0, "each callback gets its own timer: %d did not", m->unknown);
    int twice = 0, fired = 0;
    for (int i = 0; i < m->n; i++) {
        twice += m->recs[i].fired > 1;
        fired += m->recs[i].fired;
    }
    CHECK(twice == 0 && fired == m->nfired, "each timer fires at most once");
    /* heap order: everything fired earlier was due no later than what fires now;
     * with [lo, hi] bounds on each due time, lo of any earlier one <= hi of this */
    double max_lo = -1;
    int disorder = 0, first_bad = -1;
    for (int k = 0; k < m->nfired; k++) {
        const many_rec_t *r = &m->recs[m->fire_seq[k]];
        if (max_lo > r->hi) { disorder++; if (first_bad < 0) first_bad = k; }
        if (r->lo > max_lo) max_lo = r->lo;
    }
    CHECK(disorder == 0, "fire order non-decreasing in due time: %d out of order (first at %d "
          "of %d)", disorder, first_bad, m->nfired);
    CHECK(m->nfired > MANY / 2, "most timers fired: %d (of %d, %d added by callbacks)",
          m->nfired, m->n, m->n - MANY);
    loop_destroy(&m->loop);
    free(m->fire_seq);
    free(m);
    g_many = NULL;
}

/* --------------------------------------------------------------- sockets */

typedef struct watch {
    void *socket;                  /* the socket this handler was added for */
    void *seen;                    /* the socket it was called with */
    int calls, received, wrong;
    void *remove;                  /* a socket to remove (and close) when called */
    int close_it;
} watch_t;

static void s_on_readable(loop_t *loop, void *socket, void *arg)
{
    watch_t *w = arg;
    w->calls++;
    w->seen = socket;
    if (socket != w->socket) w->wrong++;
    char buf[16];
    while (zmq_recv(socket, buf, sizeof buf, ZMQ_DONTWAIT) >= 0) w->received++;
    if (w->remove) {
        loop_remove_socket(loop, w->remove);
        if (w->close_it) zmq_close(w->remove);
        w->remove = NULL;
    }
}

/* A connected inproc PAIR: `*in` is watched, `*out` sends to it. */
static void s_pair(void *ctx, int k, void **in, void **out)
{
    char address[64];
    int zero = 0;
    snprintf(address, sizeof address, "inproc://test-loop-%d", k);
    *in = zmq_socket(ctx, ZMQ_PAIR);
    *out = zmq_socket(ctx, ZMQ_PAIR);
    zmq_setsockopt(*in, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(*out, ZMQ_LINGER, &zero, sizeof zero);
    CHECK(zmq_bind(*in, address) == 0, "bind %s: %s", address, zmq_strerror(errno));
    CHECK(zmq_connect(*out, address) == 0, "connect %s: %s", address, zmq_strerror(errno));
}

static void *s_send_soon(void *socket)
{
    zmq_send(socket, "wake", 4, 0);
    return NULL;
}

static void test_idle_wait(void *ctx)
{
    loop_t *loop = loop_new();
    /* no sockets, no timers */
    double t0 = loop_now();
    int n = loop_run_once(loop, 0.05);
    double took = loop_now() - t0;
    CHECK(n == 0, "idle loop_run_once: 0 events expected, got %d", n);
    CHECK(took >= 0.04 && took < 0.05 + WAIT_LIMIT,
          "idle loop_run_once(0.05) with nothing: about 0.05 s expected, took %.3f s", took);
    t0 = loop_now();
    CHECK(loop_run_once(loop, 0) == 0 && loop_now() - t0 < WAIT_LIMIT,
          "loop_run_once(0) returns at once");

    /* a quiet socket */
    void *in, *out;
    s_pair(ctx, 100, &in, &out);
    watch_t w = { .socket = in };
    CHECK(loop_add_socket(loop, in, s_on_readable, &w) == 0, "loop_add_socket");
    t0 = loop_now();
    n = loop_run_once(loop, 0.05);
    took = loop_now() - t0;
    CHECK(n == 0 && w.calls == 0, "quiet socket: 0 events and no call expected (%d, %d)",
          n, w.calls);
    CHECK(took >= 0.04 && took < 0.05 + WAIT_LIMIT,
          "loop_run_once(0.05) with a quiet socket: about 0.05 s expected, took %.3f s", took);

    /* max_wait < 0 waits for the next timer */
    int fired = 0;
    loop_add_timer(loop, 0.02, s_count, &fired);
    t0 = loop_now();
    n = loop_run_once(loop, -1);
    took = loop_now() - t0;
    CHECK(n == 1 && fired == 1 && took >= 0.015,
          "loop_run_once(-1) waits for the timer: 1 event after ~0.02 s (%d, %.3f s)", n, took);
    loop_remove_socket(loop, in);
    zmq_close(in);
    zmq_close(out);
    loop_destroy(&loop);
}

static void test_socket_wakes(void *ctx)
{
    loop_t *loop = loop_new();
    void *in, *out;
    s_pair(ctx, 0, &in, &out);
    watch_t w = { .socket = in };
    CHECK(loop_add_socket(loop, in, s_on_readable, &w) == 0, "loop_add_socket");

    /* readable before the poll */
    zmq_send(out, "x", 1, ZMQ_DONTWAIT);
    double t0 = loop_now();
    int n = 0;
    while (w.calls == 0 && loop_now() - t0 < WAIT_LIMIT) n += loop_run_once(loop, 5.0);
    CHECK(w.calls == 1 && w.received == 1 && n == 1,
          "a readable socket: handler called once with the message (calls %d, received %d, "
          "events %d)", w.calls, w.received, n);
    CHECK(w.seen == in && w.wrong == 0, "handler called with its socket and arg");
    CHECK(loop_now() - t0 < WAIT_LIMIT, "returned without waiting out max_wait (%.3f s)",
          loop_now() - t0);

    /* becoming readable while the loop polls: another thread sends */
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, s_send_soon, out) == 0, "pthread_create");
    t0 = loop_now();
    while (w.calls < 2 && loop_now() - t0 < WAIT_LIMIT) loop_run_once(loop, 5.0);
    pthread_join(thread, NULL);
    CHECK(w.calls == 2 && w.received == 2,
          "a socket made readable during the poll wakes it (calls %d, received %d)",
          w.calls, w.received);
    CHECK(loop_now() - t0 < WAIT_LIMIT, "woke without waiting out max_wait (%.3f s)",
          loop_now() - t0);

    loop_remove_socket(loop, in);
    zmq_send(out, "y", 1, ZMQ_DONTWAIT);
    CHECK(loop_run_once(loop, 0.01) == 0 && w.calls == 2, "a removed socket is not dispatched");
    zmq_close(in);
    zmq_close(out);
    loop_destroy(&loop);
}

/* A call on a watched socket outside its handler can take the signal its
 * ZMQ_FD would give (ZMQ_EVENTS here; a send, bind or connect may too): the
 * message that came then waits unseen until loop_touch names the socket. */
static void test_touch(void *ctx)
{
    loop_t *loop = loop_new();
    void *in, *out;
    s_pair(ctx, 30, &in, &out);
    watch_t w = { .socket = in };
    CHECK(loop_add_socket(loop, in, s_on_readable, &w) == 0, "loop_add_socket");
    CHECK(loop_run_once(loop, 0) == 0, "a quiet socket: nothing to run");

    zmq_send(out, "a", 1, 0);
    int events = 0;
    size_t len = sizeof events;
    double t0 = loop_now();
    do {                               /* takes the signal: libzmq reads the socket's mailbox */
        zmq_getsockopt(in, ZMQ_EVENTS, &events, &len);
    } while (!(events & ZMQ_POLLIN) && loop_now() - t0 < WAIT_LIMIT);
    CHECK(events & ZMQ_POLLIN, "the message is there");
    /* the premise: its fd no longer wakes the poll */
    int n = loop_run_once(loop, 0.05);
    CHECK(n == 0 && w.calls == 0, "a taken signal: the poll does not see the message "
          "(events %d, calls %d)", n, w.calls);

    loop_touch(loop, in);
    t0 = loop_now();
    n = loop_run_once(loop, 5.0);
    CHECK(n == 1 && w.calls == 1 && w.received == 1,
          "after loop_touch the message is read (events %d, calls %d, received %d)",
          n, w.calls, w.received);
    CHECK(loop_now() - t0 < WAIT_LIMIT, "at once, not after max_wait (%.3f s)", loop_now() - t0);

    /* its handler ran: looked at again before the next poll, then quiet */
    CHECK(loop_run_once(loop, 0) == 0, "nothing more");
    zmq_send(out, "b", 1, 0);
    t0 = loop_now();
    while (w.calls < 2 && loop_now() - t0 < WAIT_LIMIT) loop_run_once(loop, 5.0);
    CHECK(w.calls == 2 && w.received == 2 && loop_now() - t0 < WAIT_LIMIT,
          "the fd wakes the poll again once the socket was read to EAGAIN (calls %d)", w.calls);

    loop_remove_socket(loop, in);
    zmq_close(in);
    zmq_close(out);
    loop_destroy(&loop);
}

/* loop_woken() in a handler: 1 when a poll's fd woke it, 0 when the look
 * at stale sockets before a poll found it readable, 0 outside handlers. */
typedef struct woken_watch {
    watch_t w;
    int woken;                     /* loop_woken() in the last call */
} woken_watch_t;

static void s_on_readable_woken(loop_t *loop, void *socket, void *arg)
{
    woken_watch_t *q = arg;
    q->woken = loop_woken(loop);
    s_on_readable(loop, socket, &q->w);
}

static void test_woken(void *ctx)
{
    loop_t *loop = loop_new();
    void *in, *out;
    s_pair(ctx, 40, &in, &out);
    woken_watch_t q = { .w = { .socket = in }, .woken = -1 };
    CHECK(loop_add_socket(loop, in, s_on_readable_woken, &q) == 0, "loop_add_socket");
    CHECK(loop_run_once(loop, 0) == 0, "looked at once (it starts stale), then idle");
    CHECK(loop_woken(loop) == 0, "outside a handler: not woken");

    zmq_send(out, "a", 1, 0);
    double t0 = loop_now();
    while (q.w.calls < 1 && loop_now() - t0 < WAIT_LIMIT) loop_run_once(loop, 5.0);
    CHECK(q.w.calls == 1 && q.woken == 1, "its fd woke the poll: woken (calls %d, woken %d)",
          q.w.calls, q.woken);
    /* its handler ran, so it is stale: a message now is seen before the poll */
    zmq_send(out, "b", 1, 0);
    CHECK(loop_run_once(loop, 0) >= 1 && q.w.calls == 2 && q.woken == 0,
          "from the look at stale sockets: not woken (calls %d, woken %d)", q.w.calls, q.woken);
    CHECK(loop_woken(loop) == 0, "after the dispatch: not woken");

    loop_remove_socket(loop, in);
    zmq_close(in);
    zmq_close(out);
    loop_destroy(&loop);
}

/* Ten watched sockets (the poll set grows past 8); handlers remove and close
 * others, and themselves, while the loop dispatches. */
static void test_remove_during_dispatch(void *ctx)
{
    enum { N = 10 };
    loop_t *loop = loop_new();
    void *in[N], *out[N];
    watch_t w[N];
    int open[N];
    memset(w, 0, sizeof w);
    for (int i = 0; i < N; i++) {
        s_pair(ctx, 10 + i, &in[i], &out[i]);
        w[i].socket = in[i];
        open[i] = 1;
        CHECK(loop_add_socket(loop, in[i], s_on_readable, &w[i]) == 0, "loop_add_socket %d", i);
    }
    /* round 1: 0 removes 1 (later in the same round), 5 removes and closes 3 (earlier,
     * already dispatched), 7 removes itself, 8 removes and closes 9 (later) */
    w[0].remove = in[1];
    w[5].remove = in[3]; w[5].close_it = 1;
    w[7].remove = in[7];
    w[8].remove = in[9]; w[8].close_it = 1;
    for (int i = 0; i < N; i++) zmq_send(out[i], "1", 1, ZMQ_DONTWAIT);
    int n = loop_run_once(loop, WAIT_LIMIT);
    static const int round1[N] = { 1, 0, 1, 1, 1, 1, 1, 1, 1, 0 };
    int events = 0;
    for (int i = 0; i < N; i++) {
        events += round1[i];
        CHECK(w[i].calls == round1[i], "round 1: socket %d called %d time(s) expected, %d",
              i, round1[i], w[i].calls);
    }
    CHECK(n == events, "round 1: %d events expected, got %d", events, n);
    open[3] = open[9] = 0;

    /* round 2: the poll set has been compacted; each handler still gets its socket */
    for (int i = 0; i < N; i++) zmq_send(out[i], "2", 1, ZMQ_DONTWAIT);
    n = 0;
    double deadline = loop_now() + WAIT_LIMIT;
    while (n < 6 && loop_now() < deadline) n += loop_run_once(loop, 0.1);
    static const int round2[N] = { 2, 0, 2, 1, 2, 2, 2, 1, 2, 0 };
    for (int i = 0; i < N; i++)
        CHECK(w[i].calls == round2[i], "round 2: socket %d called %d time(s) in all expected, %d",
              i, round2[i], w[i].calls);
    CHECK(n == 6, "round 2: 6 events expected, got %d", n);
    int wrong = 0;
    for (int i = 0; i < N; i++) wrong += w[i].wrong;
    CHECK(wrong == 0, "every handler called with its own socket (%d were not)", wrong);

    /* re-adding a removed socket: its queued messages are dispatched */
    CHECK(loop_add_socket(loop, in[1], s_on_readable, &w[1]) == 0, "re-add socket 1");
    n = loop_run_once(loop, WAIT_LIMIT);
    CHECK(n == 1 && w[1].calls == 1 && w[1].received == 2,
          "re-added socket 1: one call taking its 2 messages (events %d, calls %d, got %d)",
          n, w[1].calls, w[1].received);

    for (int i = 0; i < N; i++) {
        if (open[i]) { loop_remove_socket(loop, in[i]); zmq_close(in[i]); }
        zmq_close(out[i]);
    }
    CHECK(loop_run_once(loop, 0) == 0, "all removed: nothing to do");
    loop_destroy(&loop);
}

/* --------------------------------------------------------------- signals */

static int s_signal_after(double seconds, int sig, timer_t *timer)
{
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = sig;
    if (timer_create(CLOCK_MONOTONIC, &sev, timer) < 0) return -1;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)seconds;
    its.it_value.tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9);
    return timer_settime(*timer, 0, &its, NULL);
}

static void test_signals(void *ctx)
{
    loop_t *loop = loop_new();
    void *in, *out;
    s_pair(ctx, 200, &in, &out);
    watch_t w = { .socket = in };
    loop_add_socket(loop, in, s_on_readable, &w);
    int fired = 0;

    loop_install_signal_handlers();
    loop_clear_signal();
    CHECK(loop_signal_received() == 0, "no signal yet");

    static const int sigs[] = { SIGTERM, SIGINT };
    for (int k = 0; k < 2; k++) {
        int sig = sigs[k];
        raise(sig);
        CHECK(loop_signal_received() == sig, "after raise(%d): loop_signal_received %d expected, "
              "got %d", sig, sig, loop_signal_received());
        zmq_send(out, "s", 1, ZMQ_DONTWAIT);
        loop_add_timer(loop, 0.0, s_count, &fired);
        int calls = w.calls, before = fired;
        CHECK(loop_run_once(loop, 0) == -1, "signal %d pending: loop_run_once -1 expected", sig);
        CHECK(loop_run_once(loop, WAIT_LIMIT) == -1, "still -1 until cleared");
        CHECK(w.calls == calls && fired == before, "nothing dispatched while the signal is pending");
        CHECK(loop_signal_received() == sig, "the flag stays until cleared");
        loop_clear_signal();
        CHECK(loop_signal_received() == 0, "loop_clear_signal resets it");
        int n = loop_run_once(loop, WAIT_LIMIT);
        CHECK(n == 2 && w.calls == calls + 1 && fired == before + 1,
              "after clearing: the socket and the timer are dispatched (%d events)", n);
    }

    /* a signal arriving while the loop waits ends the wait (with and without sockets) */
    for (int with_socket = 1; with_socket >= 0; with_socket--) {
        if (!with_socket) loop_remove_socket(loop, in);
        timer_t timer;
        CHECK(s_signal_after(0.03, SIGTERM, &timer) == 0, "timer_create: %s", strerror(errno));
        double t0 = loop_now();
        int n = loop_run_once(loop, 1.5);
        double took = loop_now() - t0;
        CHECK(n == -1, "SIGTERM during the poll (%s sockets): -1 expected, got %d",
              with_socket ? "with" : "without", n);
        CHECK(took < 1.0, "SIGTERM during the poll ends it early (%.3f s)", took);
        double deadline = loop_now() + WAIT_LIMIT;
        while (loop_signal_received() == 0 && loop_now() < deadline) loop_run_once(loop, 0.01);
        CHECK(loop_signal_received() == SIGTERM, "SIGTERM recorded");
        timer_delete(timer);
        loop_clear_signal();
    }
    zmq_close(in);
    zmq_close(out);
    loop_destroy(&loop);
}

/* SIGHUP asks for a reload: its own flag, taken once; it wakes the poll
 * but does not end serving (loop_run_once goes on), and it never touches
 * the SIGINT/SIGTERM flag. */
static void test_reload_signal(void *ctx)
{
    loop_t *loop = loop_new();
    void *in, *out;
    s_pair(ctx, 201, &in, &out);
    watch_t w = { .socket = in };
    loop_add_socket(loop, in, s_on_readable, &w);
    loop_install_signal_handlers();
    loop_watch_reload(1);
    loop_clear_signal();
    while (loop_take_reload()) {}
    CHECK(loop_take_reload() == 0, "no SIGHUP yet");

    raise(SIGHUP);
    CHECK(loop_signal_received() == 0, "SIGHUP is not a stop");
    zmq_send(out, "h", 1, ZMQ_DONTWAIT);
    int calls = w.calls;
    double deadline = loop_now() + WAIT_LIMIT;
    int n = 0;
    while (w.calls == calls && loop_now() < deadline) n = loop_run_once(loop, 0.01);
    CHECK(n >= 0 && w.calls == calls + 1, "a SIGHUP pending: the socket is still served (%d)", n);
    CHECK(loop_take_reload() == 1, "SIGHUP seen once");
    CHECK(loop_take_reload() == 0, "and then cleared");

    /* during the poll: the wait ends early, loop_run_once does not say -1 */
    timer_t timer;
    CHECK(s_signal_after(0.03, SIGHUP, &timer) == 0, "timer_create: %s", strerror(errno));
    double t0 = loop_now();
    n = loop_run_once(loop, 1.5);
    double took = loop_now() - t0;
    CHECK(n >= 0, "SIGHUP during the poll: not -1 (got %d)", n);
    CHECK(took < 1.0, "SIGHUP during the poll ends it early (%.3f s)", took);
    CHECK(loop_take_reload() == 1, "SIGHUP during the poll recorded");
    CHECK(loop_signal_received() == 0, "no stop recorded");
    timer_delete(timer);

    /* a SIGTERM and a SIGHUP together: each keeps its own flag */
    raise(SIGHUP);
    raise(SIGTERM);
    CHECK(loop_run_once(loop, 0) == -1, "the SIGTERM stops");
    CHECK(loop_take_reload() == 1 && loop_signal_received() == SIGTERM, "both recorded");
    loop_clear_signal();

    /* the self-pipe: a signal whose flag was already looked at (here: taken)
     * before the poll still wakes it, at once, not at the next event */
    CHECK(loop_wake_on_signals(loop) == 0 && loop_wake_on_signals(loop) == 0, "self-pipe watched, once");
    raise(SIGHUP);
    CHECK(loop_take_reload() == 1, "the flag, taken before the poll");
    t0 = loop_now();
    n = loop_run_once(loop, 3.0);
    took = loop_now() - t0;
    CHECK(n >= 1 && took < 1.0, "the pipe woke the poll (%d watches ran, %.3f s)", n, took);
    t0 = loop_now();
    n = loop_run_once(loop, 0.05);
    CHECK(n == 0 && loop_now() - t0 >= 0.04, "drained: the next poll waits again (%d)", n);

    /* not serving: SIGHUP is back to its default, and a reload asked and
     * not taken is dropped (the poll waits again) */
    raise(SIGHUP);
    loop_watch_reload(0);
    CHECK(loop_take_reload() == 0, "dropped when the watch ends");
    struct sigaction now;
    sigaction(SIGHUP, NULL, &now);
    CHECK(now.sa_handler == SIG_DFL, "SIGHUP has its default action again");
    zmq_close(in);
    zmq_close(out);
    loop_destroy(&loop);
}

/* Plain fds (metrics_http.c's epoll fd): a readable pipe calls its
 * handler, beside a socket; once removed, never again. */
static int g_fd_calls;

static void on_fd(loop_t *loop, int fd, void *arg) {
    (void)loop; (void)arg;
    char c;
    if (read(fd, &c, 1) == 1) g_fd_calls++;
}

static void test_fd_watch(void *ctx)
{
    loop_t *loop = loop_new();
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    void *a = zmq_socket(ctx, ZMQ_PAIR);
    zmq_bind(a, "inproc://fdwatch");
    CHECK(loop_add_socket(loop, a, NULL, NULL) == 0, "a socket beside it");
    CHECK(loop_add_fd(loop, p[0], on_fd, NULL) == 0, "watch the read end");
    CHECK(loop_run_once(loop, 0) == 0 && g_fd_calls == 0, "nothing to read: no call");
    CHECK(write(p[1], "x", 1) == 1, "write");
    CHECK(loop_run_once(loop, 1) == 1 && g_fd_calls == 1, "readable: one call (%d)", g_fd_calls);
    loop_remove_fd(loop, p[0]);
    CHECK(write(p[1], "y", 1) == 1, "write again");
    CHECK(loop_run_once(loop, 0) == 0 && g_fd_calls == 1, "removed: no call");
    loop_remove_socket(loop, a);
    zmq_close(a);
    close(p[0]);
    close(p[1]);
    loop_destroy(&loop);
}

/* Plain fds watched for writing too (redis.c's hiredis connections): a
 * socketpair end is writable at once, readable only once the other end
 * writes; interest changes take effect at once, also from a handler in the
 * same round; 0 watches nothing (not even a hang-up); a hang-up reports
 * every event asked for; a full send buffer is not writable until drained. */
typedef struct io_rec {
    int calls, last, fd;
    int other_fd;                  /* a watch this handler turns off, or -1 */
} io_rec_t;

static void on_io(loop_t *loop, int fd, int ready, void *arg) {
    io_rec_t *r = arg;
    r->calls++;
    r->last = ready;
    r->fd = fd;
    if (r->other_fd >= 0) loop_set_fd_events(loop, r->other_fd, 0);
}

static void test_fd_events(void)
{
    loop_t *loop = loop_new();
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0, "socketpair");
    io_rec_t r = { .other_fd = -1 };
    CHECK(loop_add_fd_events(loop, sv[0], LOOP_WRITABLE, on_io, &r) == 0, "watch for writing");
    CHECK(loop_run_once(loop, 1) == 1 && r.calls == 1 && r.last == LOOP_WRITABLE && r.fd == sv[0],
          "writable at once: one call saying WRITABLE (%d calls, ready %d)", r.calls, r.last);
    CHECK(loop_set_fd_events(loop, sv[0], LOOP_READABLE) == 0, "now reading only");
    CHECK(loop_run_once(loop, 0.02) == 0 && r.calls == 1, "nothing to read: no call (%d)", r.calls);
    CHECK(write(sv[1], "x", 1) == 1, "the other end writes");
    CHECK(loop_run_once(loop, 1) == 1 && r.calls == 2 && r.last == LOOP_READABLE,
          "readable: one call saying READABLE only (ready %d)", r.last);
    CHECK(loop_set_fd_events(loop, sv[0], LOOP_READABLE | LOOP_WRITABLE) == 0, "both");
    CHECK(loop_run_once(loop, 1) == 1 && r.last == (LOOP_READABLE | LOOP_WRITABLE),
          "both ready: one call saying both (ready %d)", r.last);
    CHECK(loop_set_fd_events(loop, sv[0], 0) == 0, "nothing");
    CHECK(loop_run_once(loop, 0.02) == 0 && r.calls == 3, "waits for nothing: no call (%d)", r.calls);
    CHECK(loop_set_fd_events(loop, 12345, LOOP_READABLE) == -1, "no watch on that fd: -1");
    char c;
    CHECK(read(sv[0], &c, 1) == 1, "drained");

    /* a full send buffer: not writable until the other end reads */
    char block[4096];
    memset(block, 'b', sizeof block);
    size_t sent = 0;
    while (write(sv[0], block, sizeof block) > 0) sent += sizeof block;
    CHECK(errno == EAGAIN && sent > 0, "send buffer filled (%zu bytes)", sent);
    CHECK(loop_set_fd_events(loop, sv[0], LOOP_WRITABLE) == 0, "writing");
    CHECK(loop_run_once(loop, 0.02) == 0 && r.calls == 3, "full: not writable (%d)", r.calls);
    size_t got = 0;
    ssize_t n;
    while ((n = read(sv[1], block, sizeof block)) > 0) got += (size_t)n;
    CHECK(got == sent, "the other end read it all (%zu of %zu)", got, sent);
    double t0 = loop_now();
    while (r.calls == 3 && loop_now() - t0 < WAIT_LIMIT) loop_run_once(loop, 0.1);
    CHECK(r.calls == 4 && r.last == LOOP_WRITABLE, "drained: writable again (%d calls)", r.calls);

    /* a handler turning another watch off: it is not called in that round */
    int p[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p) == 0, "second socketpair");
    io_rec_t first = { .other_fd = p[0] }, second = { .other_fd = -1 };
    loop_remove_fd(loop, sv[0]);
    CHECK(loop_add_fd_events(loop, sv[0], LOOP_WRITABLE, on_io, &first) == 0, "re-added");
    CHECK(loop_add_fd_events(loop, p[0], LOOP_WRITABLE, on_io, &second) == 0, "another");
    CHECK(loop_run_once(loop, 1) == 1 && first.calls == 1 && second.calls == 0,
          "both were writable; the first turned the second off: only one call (%d, %d)",
          first.calls, second.calls);
    CHECK(loop_run_once(loop, 0) == 1 && second.calls == 0, "and it stays off");
    first.other_fd = -1;
    loop_set_fd_events(loop, sv[0], 0);

    /* the old API beside it: a read watch; a hang-up reports what was asked */
    int fd_calls_before = g_fd_calls;
    CHECK(loop_add_fd(loop, sv[1], on_fd, NULL) == 0, "a plain read watch");
    CHECK(loop_set_fd_events(loop, p[0], LOOP_READABLE) == 0, "the other reads");
    close(p[1]);
    CHECK(loop_run_once(loop, 1) == 1 && second.calls == 1 && (second.last & LOOP_READABLE),
          "hang-up: a call saying READABLE (ready %d)", second.last);
    CHECK(g_fd_calls == fd_calls_before, "the read watch with nothing to read: no call");
    loop_remove_fd(loop, p[0]);
    loop_remove_fd(loop, sv[0]);
    loop_remove_fd(loop, sv[1]);
    CHECK(loop_run_once(loop, 0) == 0, "all removed");
    close(p[0]);
    close(sv[0]);
    close(sv[1]);
    loop_destroy(&loop);
}

int main(void)
{
    test_due_order();
    test_cancel();
    test_zero_delay_from_callback();
    test_many_timers();

    void *ctx = zmq_ctx_new();
    test_idle_wait(ctx);
    test_socket_wakes(ctx);
    test_touch(ctx);
    test_woken(ctx);
    test_remove_during_dispatch(ctx);
    test_signals(ctx);
    test_reload_signal(ctx);
    test_fd_watch(ctx);
    test_fd_events();
    zmq_ctx_term(ctx);

    printf("test_loop: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
