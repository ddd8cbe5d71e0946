/*
 * loop: a reactor over ZeroMQ sockets with a timer heap (see loop.h).
 *
 * Not zmq_poll: it polls twice per wake-up (a zero-timeout pass first) and
 * cost about three extra syscalls per call at window 1. Reading a socket's
 * ZMQ_EVENTS costs a poll(2) and a getpid(2) inside libzmq whenever its
 * mailbox is idle, so it is read only where it can say something new: for
 * a socket whose ZMQ_FD woke the poll, and before polling for a "stale"
 * one, whose signal a call on it may have taken without reading all it has
 * (its handler ran, or loop_touch: a send, bind or connect elsewhere). A
 * socket read until EAGAIN and not touched since will signal its fd again.
 * Plain fds (an HTTP server's, metrics_http.c; a Redis connection's,
 * redis.c) are watched too, for reading and, when asked, writing: their poll
 * says all, so they are never stale. A plain fd waiting for nothing sits in
 * the poll set as -1 (poll skips it), so a hang-up it is not asked about
 * cannot spin the loop.
 * Removal during dispatch only marks a slot; compaction happens between rounds. Timers are a binary min-heap of pointers; each timer
 * knows its heap index so cancelling is O(log n).
 */
#define _GNU_SOURCE                    /* pipe2 */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

struct loop_timer {
    double due;                /* monotonic seconds */
    size_t index;              /* position in the heap */
    loop_timer_fn fn;
    void *arg;
};

typedef struct loop_watch {
    void *socket;              /* NULL for a plain fd watch */
    loop_socket_fn fn;         /* a socket's handler, or NULL */
    loop_fd_fn fd_fn;          /* a plain fd's read handler (loop_add_fd), or NULL */
    loop_io_fn io_fn;          /* a plain fd's handler (loop_add_fd_events), or NULL */
    int fd;                    /* a plain fd's, also while it waits for nothing */
    int events;                /* a plain fd's LOOP_READABLE | LOOP_WRITABLE */
    void *arg;
    int stale;                 /* its ZMQ_FD may not tell: read ZMQ_EVENTS before a poll */
    int removed;               /* gone: compacted away between rounds */
} loop_watch_t;

struct loop {
    struct pollfd *fds;        /* ZMQ_FD of each watch, parallel to `watches` */
    loop_watch_t *watches;
    size_t nwatches, capwatches;
    int removed;               /* a watch was removed during dispatch */
    loop_timer_t **heap;       /* min-heap on `due` */
    size_t ntimers, captimers;
    int wakes_on_signals;      /* the self-pipe's read end is watched */
    int deaf;                  /* a worker's loop: the signal flags are the control's */
    int woken;                 /* a poll's results are being dispatched (loop_woken) */
    _Atomic uint64_t *beat;    /* loop_set_beat's, or NULL */
};

/* The C globals: the flags the signal handler sets and the runner reads.
 * Two of them, not one: a SIGHUP must not end serving, and a SIGTERM that
 * comes while a reload is asked must not be lost by clearing the reload.
 * And a self-pipe the handler writes a byte to: a signal caught between the
 * runner's look at the flags and its poll() would otherwise wait for the
 * next event (forever, on an idle server with no timer armed). */
static volatile sig_atomic_t s_signal = 0;
static volatile sig_atomic_t s_reload = 0;
static int s_wake[2] = { -1, -1 };

static void s_on_signal(int sig) {
    if (sig == SIGHUP) s_reload = 1;
    else s_signal = sig;
    if (s_wake[1] >= 0) {
        int e = errno;
        ssize_t w = write(s_wake[1], "s", 1);   /* full pipe: a wake is pending anyway */
        (void)w;
        errno = e;
    }
}

/* The self-pipe's read end is readable: empty it (the flags say why). */
static void s_drain_wake(loop_t *loop, int fd, void *arg) {
    (void)loop; (void)arg;
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {}
}

int loop_wake_on_signals(loop_t *loop) {
    if (loop->wakes_on_signals) return 0;
    if (s_wake[0] < 0 && pipe2(s_wake, O_NONBLOCK | O_CLOEXEC) < 0) return -1;
    if (loop_add_fd(loop, s_wake[0], s_drain_wake, NULL) < 0) return -1;
    loop->wakes_on_signals = 1;
    return 0;
}

void loop_install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void loop_watch_reload(int on) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on ? s_on_signal : SIG_DFL;
    /* A reload waits for the loop: a handler's read() or waitpid() goes on
     * instead of failing with EINTR. poll() is never restarted, and the
     * self-pipe wakes the loop anyway. SIGINT and SIGTERM stay without it,
     * so a handler blocked in a system call lets a stop through. */
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    if (!on) s_reload = 0;                        /* nothing to reload any more */
}

void loop_ignore_signals(loop_t *loop) { loop->deaf = 1; }

int loop_signal_received(void) { return (int)s_signal; }
void loop_clear_signal(void) { s_signal = 0; }

int loop_take_reload(void) {
    if (!s_reload) return 0;
    s_reload = 0;
    return 1;
}

double loop_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

loop_t *loop_new(void) {
    return calloc(1, sizeof(loop_t));
}

void loop_destroy(loop_t **p) {
    if (!p || !*p) return;
    loop_t *loop = *p;
    for (size_t i = 0; i < loop->ntimers; i++) free(loop->heap[i]);
    free(loop->heap);
    free(loop->fds);
    free(loop->watches);
    free(loop);
    *p = NULL;
}

/* Room for one more watch: 0, or -1 when out of memory. */
static int s_reserve(loop_t *loop) {
    if (loop->nwatches == loop->capwatches) {
        size_t cap = loop->capwatches ? loop->capwatches * 2 : 8;
        struct pollfd *fds = realloc(loop->fds, cap * sizeof *fds);
        if (!fds) return -1;
        loop->fds = fds;
        loop_watch_t *watches = realloc(loop->watches, cap * sizeof *watches);
        if (!watches) return -1;
        loop->watches = watches;
        loop->capwatches = cap;
    }
    return 0;
}

int loop_add_socket(loop_t *loop, void *socket, loop_socket_fn fn, void *arg) {
    if (s_reserve(loop) < 0) return -1;
    int fd;
    size_t fdlen = sizeof fd;
    if (zmq_getsockopt(socket, ZMQ_FD, &fd, &fdlen) < 0) return -1;
    size_t i = loop->nwatches++;
    loop->watches[i] = (loop_watch_t){ .socket = socket, .fn = fn, .arg = arg, .stale = 1 };
    loop->fds[i] = (struct pollfd){ .fd = fd, .events = POLLIN, .revents = 0 };
    return 0;
}

void loop_remove_socket(loop_t *loop, void *socket) {
    for (size_t i = 0; i < loop->nwatches; i++)
        if (loop->watches[i].socket == socket && !loop->watches[i].removed) {
            loop->watches[i].removed = 1;
            loop->removed = 1;
        }
}

/* The poll entry of a plain fd waiting for `events`. */
static struct pollfd s_pollfd(int fd, int events) {
    short ev = (short)(((events & LOOP_READABLE) ? POLLIN : 0) | ((events & LOOP_WRITABLE) ? POLLOUT : 0));
    return (struct pollfd){ .fd = ev ? fd : -1, .events = ev, .revents = 0 };
}

static int s_add_plain(loop_t *loop, int fd, int events, loop_fd_fn fd_fn, loop_io_fn io_fn, void *arg) {
    if (s_reserve(loop) < 0) return -1;
    size_t i = loop->nwatches++;
    loop->watches[i] = (loop_watch_t){ .fd_fn = fd_fn, .io_fn = io_fn, .fd = fd, .events = events, .arg = arg };
    loop->fds[i] = s_pollfd(fd, events);
    return 0;
}

int loop_add_fd(loop_t *loop, int fd, loop_fd_fn fn, void *arg) {
    return s_add_plain(loop, fd, LOOP_READABLE, fn, NULL, arg);
}

int loop_add_fd_events(loop_t *loop, int fd, int events, loop_io_fn fn, void *arg) {
    return s_add_plain(loop, fd, events & (LOOP_READABLE | LOOP_WRITABLE), NULL, fn, arg);
}

int loop_set_fd_events(loop_t *loop, int fd, int events) {
    events &= LOOP_READABLE | LOOP_WRITABLE;
    for (size_t i = 0; i < loop->nwatches; i++) {
        loop_watch_t *w = &loop->watches[i];
        if (w->socket || w->removed || w->fd != fd) continue;
        w->events = events;
        short revents = loop->fds[i].revents;      /* a round being dispatched keeps what it saw */
        loop->fds[i] = s_pollfd(fd, events);
        loop->fds[i].revents = revents;
        return 0;
    }
    return -1;
}

void loop_remove_fd(loop_t *loop, int fd) {
    for (size_t i = 0; i < loop->nwatches; i++)
        if (!loop->watches[i].socket && loop->watches[i].fd == fd && !loop->watches[i].removed) {
            loop->watches[i].removed = 1;
            loop->removed = 1;
        }
}

static void s_compact(loop_t *loop) {
    size_t j = 0;
    for (size_t i = 0; i < loop->nwatches; i++) {
        if (loop->watches[i].removed) continue;
        loop->watches[j] = loop->watches[i];
        loop->fds[j] = loop->fds[i];
        j++;
    }
    loop->nwatches = j;
    loop->removed = 0;
}

/* --- timer heap --- */

static void s_heap_set(loop_t *loop, size_t i, loop_timer_t *t) {
    loop->heap[i] = t;
    t->index = i;
}

static void s_heap_up(loop_t *loop, size_t i) {
    loop_timer_t *t = loop->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (loop->heap[parent]->due <= t->due) break;
        s_heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    s_heap_set(loop, i, t);
}

static void s_heap_down(loop_t *loop, size_t i) {
    loop_timer_t *t = loop->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= loop->ntimers) break;
        if (child + 1 < loop->ntimers && loop->heap[child + 1]->due < loop->heap[child]->due)
            child++;
        if (t->due <= loop->heap[child]->due) break;
        s_heap_set(loop, i, loop->heap[child]);
        i = child;
    }
    s_heap_set(loop, i, t);
}

static void s_heap_remove(loop_t *loop, loop_timer_t *t) {
    size_t i = t->index;
    loop_timer_t *last = loop->heap[--loop->ntimers];
    if (last != t) {
        s_heap_set(loop, i, last);
        s_heap_up(loop, i);
        s_heap_down(loop, last->index);
    }
}

loop_timer_t *loop_add_timer(loop_t *loop, double delay, loop_timer_fn fn, void *arg) {
    if (loop->ntimers == loop->captimers) {
        size_t cap = loop->captimers ? loop->captimers * 2 : 16;
        loop_timer_t **heap = realloc(loop->heap, cap * sizeof *heap);
        if (!heap) return NULL;
        loop->heap = heap;
        loop->captimers = cap;
    }
    loop_timer_t *t = malloc(sizeof *t);
    if (!t) return NULL;
    if (!(delay > 0)) delay = 0;               /* NaN and negatives: now */
    t->due = loop_now() + delay;
    t->fn = fn;
    t->arg = arg;
    loop->heap[loop->ntimers] = t;
    t->index = loop->ntimers++;
    s_heap_up(loop, t->index);
    return t;
}

void loop_cancel_timer(loop_t *loop, loop_timer_t *t) {
    if (!t) return;
    s_heap_remove(loop, t);
    free(t);
}

static int s_run_timers(loop_t *loop) {
    int n = 0;
    double now = loop_now();
    /* Bounded: timers added by callbacks wait for the next round, so a timer
     * that re-arms itself at 0 s cannot hold the loop. */
    size_t budget = loop->ntimers;
    while (budget-- > 0 && loop->ntimers > 0 && loop->heap[0]->due <= now) {
        loop_timer_t *t = loop->heap[0];
        s_heap_remove(loop, t);
        t->fn(loop, t, t->arg);    /* out of the heap: cancelling it now is an error */
        free(t);
        n++;
    }
    return n;
}

/* ZMQ_EVENTS of `socket`: 1 readable, 0 not, -1 not known (EINTR). */
static int s_readable(void *socket) {
    int events = 0;
    size_t len = sizeof events;
    if (zmq_getsockopt(socket, ZMQ_EVENTS, &events, &len) < 0) return -1;
    return (events & ZMQ_POLLIN) != 0;
}

/* Watch i, if its socket is readable: its handler, and it stays stale (the
 * handler may have left messages); else it is not stale any more (unless
 * that could not be told: it is looked at again). */
static int s_check(loop_t *loop, size_t i) {
    loop_watch_t w = loop->watches[i];
    if (w.removed) return 0;
    if (!w.socket) {                   /* a plain fd: its poll said it all */
        short rev = loop->fds[i].revents;
        int ready = ((rev & POLLIN) ? LOOP_READABLE : 0) | ((rev & POLLOUT) ? LOOP_WRITABLE : 0);
        if (rev & (POLLERR | POLLHUP)) ready = LOOP_READABLE | LOOP_WRITABLE;
        ready &= w.events;             /* as asked now: an earlier handler may have changed it */
        if (!ready) return 0;
        if (w.io_fn) w.io_fn(loop, w.fd, ready, w.arg);
        else w.fd_fn(loop, w.fd, w.arg);
        return 1;
    }
    int readable = s_readable(w.socket);
    if (readable <= 0) {
        if (readable == 0) loop->watches[i].stale = 0;
        return 0;
    }
    w.fn(loop, w.socket, w.arg);
    if (!loop->watches[i].removed) loop->watches[i].stale = 1;
    return 1;
}

/* The watches that may be readable: the stale ones before a poll, those
 * whose fd woke it after. Returns how many handlers ran. */
static int s_dispatch(loop_t *loop, int polled) {
    int n = 0;
    size_t count = loop->nwatches;     /* watches added now wait a round */
    for (size_t i = 0; i < count; i++)
        if (polled ? (loop->fds[i].revents & (POLLIN | POLLOUT | POLLERR | POLLHUP)) != 0
                   : loop->watches[i].stale)
            n += s_check(loop, i);
    return n;
}

void loop_touch(loop_t *loop, void *socket) {
    for (size_t i = 0; i < loop->nwatches; i++)
        if (loop->watches[i].socket == socket && !loop->watches[i].removed) loop->watches[i].stale = 1;
}

int loop_woken(const loop_t *loop) { return loop->woken; }

void loop_set_beat(loop_t *loop, _Atomic uint64_t *beat) { loop->beat = beat; }

int loop_run_once(loop_t *loop, double max_wait) {
    loop->woken = 0;                   /* even if a handler left by a longjmp */
    if (loop->removed) s_compact(loop);
    int signalled = s_signal && !loop->deaf;
    if (signalled) return -1;
    int n = s_dispatch(loop, 0);
    long timeout_ms = -1;
    if (n > 0) {
        timeout_ms = 0;                /* only a look at the others' fds */
    } else {
        double wait = max_wait;
        if (loop->ntimers > 0) {
            double until = loop->heap[0]->due - loop_now();
            if (until < 0) until = 0;
            if (wait < 0 || until < wait) wait = until;
        }
        if (wait >= 0) {
            double ms = ceil(wait * 1000.0);
            timeout_ms = ms > 3600000.0 ? 3600000L : (long)ms;
        }
    }
    if (loop->removed) s_compact(loop);
    /* a signal taken while handlers ran above: do not sleep on it */
    if (!loop->deaf && (s_signal || s_reload)) timeout_ms = 0;
    /* always, even at 0 s: a socket that is not stale is seen only here */
    if (loop->beat) atomic_store_explicit(loop->beat, 0, memory_order_relaxed);
    int rc = poll(loop->fds, (nfds_t)loop->nwatches, (int)timeout_ms);
    if (loop->beat)
        atomic_store_explicit(loop->beat, (uint64_t)(loop_now() * 1e6) | 1, memory_order_relaxed);
    if (rc < 0 && errno == EINTR && s_signal && !loop->deaf) return -1;
    if (rc > 0) {
        loop->woken = 1;
        n += s_dispatch(loop, 1);
        loop->woken = 0;
    }
    n += s_run_timers(loop);
    return n;
}

size_t loop_timer_count(const loop_t *loop) {
    return loop->ntimers;
}
