/*
 * loop: the one reactor of a host. zmq_poll over the endpoints' sockets plus
 * one-shot timers on the monotonic clock, kept in a binary heap.
 *
 * The loop owns its timers and its poll set; it does not own the sockets.
 * A signal only sets a flag (loop_signal_received, loop_take_reload); the
 * poll wakes with EINTR and the runner decides what to do. No Lua here.
 */
#ifndef PSEUD_LOOP_H
#define PSEUD_LOOP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct loop loop_t;
typedef struct loop_timer loop_timer_t;

typedef void (*loop_socket_fn)(loop_t *loop, void *socket, void *arg);
typedef void (*loop_fd_fn)(loop_t *loop, int fd, void *arg);
typedef void (*loop_timer_fn)(loop_t *loop, loop_timer_t *timer, void *arg);

/* New loop, NULL on failure. */
loop_t *loop_new(void);
/* Destroy the loop and its timers (not the sockets); takes NULL, clears *p. */
void loop_destroy(loop_t **p);

/* Call fn(loop, socket, arg) when `socket` is readable. Returns 0 or -1. */
int loop_add_socket(loop_t *loop, void *socket, loop_socket_fn fn, void *arg);
void loop_remove_socket(loop_t *loop, void *socket);
/* Say that a call on a watched socket outside its handler (a send, a bind,
 * a connect) may have taken the signal of its ZMQ_FD: its ZMQ_EVENTS is read
 * before the next poll. Every such call needs this, just before or after it
 * (nothing is dispatched in between), or a message can wait unseen until
 * the next one arrives. */
void loop_touch(loop_t *loop, void *socket);
/* Publish where the loop is, for another thread (a worker's, read by the
 * control): 0 while it waits in poll (anything sent to it is seen at
 * once), else the monotonic microseconds at which it last came back from
 * poll. A value that stays old means the thread is held in something
 * else: a blocking C call, a long finalizer. NULL: not published. */
void loop_set_beat(loop_t *loop, _Atomic uint64_t *beat);

/* 1 while the loop runs the handlers of a poll that has just returned (a
 * socket's fd woke it), 0 in the look at stale sockets before a poll. */
int loop_woken(const loop_t *loop);

/* Call fn(loop, fd, arg) when plain file descriptor `fd` is readable (or
 * in error). The loop does not own it. Returns 0 or -1. */
int loop_add_fd(loop_t *loop, int fd, loop_fd_fn fn, void *arg);
/* Stop watching `fd` (either kind of watch); safe from any handler. */
void loop_remove_fd(loop_t *loop, int fd);

/* A plain fd watched for reading, writing or both: a foreign client's socket
 * (hiredis, redis.c) wants to hear when it may write only while it has
 * something to write, and says so as it goes. */
enum { LOOP_READABLE = 1, LOOP_WRITABLE = 2 };
typedef void (*loop_io_fn)(loop_t *loop, int fd, int events, void *arg);
/* Call fn(loop, fd, ready, arg) when `fd` is ready for one of `events`
 * (LOOP_READABLE | LOOP_WRITABLE; 0: nothing until loop_set_fd_events).
 * `ready` holds only events asked for; an error or hang-up reports all of
 * them (the next read or write says what happened). Returns 0 or -1. */
int loop_add_fd_events(loop_t *loop, int fd, int events, loop_io_fn fn, void *arg);
/* What the watch on `fd` waits for from now on, also for the rest of the
 * round being dispatched. 0, or -1 when no watch has that fd. */
int loop_set_fd_events(loop_t *loop, int fd, int events);

/* A one-shot timer `delay` seconds from now; NULL when out of memory. The
 * loop frees it after its callback returns (which must not cancel it) or
 * when cancelled. */
loop_timer_t *loop_add_timer(loop_t *loop, double delay, loop_timer_fn fn, void *arg);
/* Cancel a timer that has not fired yet; takes NULL. */
void loop_cancel_timer(loop_t *loop, loop_timer_t *timer);

/* Timers armed now (tests count them). */
size_t loop_timer_count(const loop_t *loop);

/* Poll once, waiting at most `max_wait` seconds (< 0: until a socket or a
 * timer is due), then run ready socket handlers and due timers. Returns the
 * number of events handled, or -1 when interrupted by a signal. */
int loop_run_once(loop_t *loop, double max_wait);

/* Monotonic seconds. */
double loop_now(void);

/* Signals: SIGINT and SIGTERM set a flag and interrupt the poll. While
 * loop_watch_reload(1) (a server serving), SIGHUP sets another (a reload
 * is asked) and interrupts the poll too; loop_watch_reload(0) gives SIGHUP
 * back its default (it ends the process) and drops a reload not taken. */
void loop_install_signal_handlers(void);
void loop_watch_reload(int on);
/* Make `loop`'s poll wake on every signal caught from now on, whenever it
 * comes (a self-pipe; the handler writes it). 0, or -1 with errno. */
int loop_wake_on_signals(loop_t *loop);
/* A worker's loop (workers.c): the flags are the control's to act on; its
 * poll neither ends early nor skips waiting because of them. */
void loop_ignore_signals(loop_t *loop);
int loop_signal_received(void);      /* SIGINT or SIGTERM's number, or 0 */
void loop_clear_signal(void);
int loop_take_reload(void);          /* 1 once after a SIGHUP (the flag is cleared), else 0 */

#endif
