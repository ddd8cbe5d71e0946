/*  bench_server: see bench_server.h. */

#define _GNU_SOURCE                    /* sched_getaffinity, CPU_COUNT */
#include "bench_server.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>

/* The one global: set by the signal handler, read by the loop. */
static volatile sig_atomic_t s_stop_requested = 0;

static void s_on_signal(int signo) {
  (void)signo;
  s_stop_requested = 1;
}

void *bench_context_new(void) {
  void *context = zmq_ctx_new();
  const char *env = getenv("PSEUD_IO_BATCH");
  cpu_set_t cpus;
  int batch = env && (strcmp(env, "0") == 0 || strcmp(env, "1") == 0)
                  ? env[0] == '1'
                  : sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) == 1;
  /* libzmq's own option (it aborts if the kernel refuses: fine for a
     benchmark; the host sets the policy itself and logs a refusal) */
  if (context && batch) zmq_ctx_set(context, ZMQ_THREAD_SCHED_POLICY, SCHED_BATCH);
  return context;
}

int bench_install_signal_handlers(void) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = s_on_signal;
  sigemptyset(&action.sa_mask);        /* no SA_RESTART: a blocked receive returns EINTR */
  return sigaction(SIGTERM, &action, NULL) || sigaction(SIGINT, &action, NULL) ? -1 : 0;
}

void bench_close_frames(zmq_msg_t *frames, int count) {
  for (int i = 0; i < count && i < BENCH_FRAMES_MAX; i++)
    zmq_msg_close(&frames[i]);
}

int bench_receive_message(void *socket, zmq_msg_t *frames) {
  int count = 0;
  int more = 1;
  while (more) {
    zmq_msg_t scratch;
    zmq_msg_t *frame = count < BENCH_FRAMES_MAX ? &frames[count] : &scratch;
    zmq_msg_init(frame);
    if (zmq_msg_recv(frame, socket, 0) < 0) {
      int error = errno;
      zmq_msg_close(frame);
      if (count > 0 && (error == EINTR || error == EAGAIN))
        continue;                       /* the rest of a message is already here: go on */
      bench_close_frames(frames, count);
      errno = error;
      return -1;
    }
    more = zmq_msg_more(frame);
    if (frame == &scratch)
      zmq_msg_close(&scratch);
    count++;
  }
  return count;
}

int bench_stop_requested(void) { return s_stop_requested; }

void *bench_server_socket(void *context, const char *address, char *endpoint, size_t size) {
  const char *curve_secret = getenv("BENCH_CURVE_SECRET");
  if (curve_secret && !*curve_secret) curve_secret = NULL;
  void *socket = zmq_socket(context, ZMQ_ROUTER);
  int on = 1, linger_ms = 0, poll_ms = BENCH_POLL_MS;
  if (!socket
      || zmq_setsockopt(socket, ZMQ_ROUTING_ID, BENCH_SERVICE_NAME, strlen(BENCH_SERVICE_NAME)) < 0
      || zmq_setsockopt(socket, ZMQ_ROUTER_MANDATORY, &on, sizeof on) < 0
      || zmq_setsockopt(socket, ZMQ_LINGER, &linger_ms, sizeof linger_ms) < 0
      || zmq_setsockopt(socket, ZMQ_RCVTIMEO, &poll_ms, sizeof poll_ms) < 0
      || (curve_secret && (zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &on, sizeof on) < 0
                           || zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, curve_secret,
                                             strlen(curve_secret)) < 0))
      || zmq_bind(socket, address) < 0
      || zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, endpoint, &size) < 0) {
    int error = errno;
    if (socket) zmq_close(socket);
    errno = error;
    return NULL;
  }
  return socket;
}

/* One received message answered and its frames closed; -1 when the socket
   failed (reported under `name`). */
static int s_handle(void *socket, const char *name, bench_answer_fn answer, void *ctx,
                    zmq_msg_t *frames, int count) {
  int answered = answer(socket, frames, count, ctx);
  if (answered < 0)
    fprintf(stderr, "%s: send: %s\n", name, zmq_strerror(errno));
  else if (answered == 0 && count != 2)   /* [peer, ""] is a probe: expected, silent */
    fprintf(stderr, "%s: ignored a %d-frame message that is not WORK\n", name, count);
  bench_close_frames(frames, count);
  return answered < 0 ? -1 : 0;
}

int bench_serve(void *socket, const char *name, bench_answer_fn answer, void *ctx) {
  while (!bench_stop_requested()) {
    zmq_msg_t frames[BENCH_FRAMES_MAX];
    int count = bench_receive_message(socket, frames);
    if (count < 0) {
      if (errno == EAGAIN || errno == EINTR)
        continue;                       /* timeout or signal: look at the flag */
      fprintf(stderr, "%s: receive: %s\n", name, zmq_strerror(errno));
      return 1;
    }
    if (s_handle(socket, name, answer, ctx, frames, count) < 0)
      return 1;
  }
  return 0;
}

/* ZMQ_EVENTS says a whole message waits (0 also when it cannot tell). */
static int s_readable(void *socket) {
  int events = 0;
  size_t len = sizeof events;
  return zmq_getsockopt(socket, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN);
}

int bench_serve_polled(void *context, void *socket, const char *name, bench_answer_fn answer,
                       void *ctx) {
  void *monitor = NULL;
  int fd_socket = -1, fd_monitor = -1;
  size_t len = sizeof fd_socket;
  if (zmq_socket_monitor(socket, "inproc://bench-monitor", ZMQ_EVENT_ALL) < 0
      || !(monitor = zmq_socket(context, ZMQ_PAIR))
      || zmq_connect(monitor, "inproc://bench-monitor") < 0
      || zmq_getsockopt(socket, ZMQ_FD, &fd_socket, &len) < 0
      || zmq_getsockopt(monitor, ZMQ_FD, &fd_monitor, &len) < 0) {
    fprintf(stderr, "%s: monitor: %s\n", name, zmq_strerror(errno));
    zmq_socket_monitor(socket, NULL, 0);
    if (monitor) zmq_close(monitor);
    return 1;
  }
  struct pollfd fds[2] = { { fd_socket, POLLIN, 0 }, { fd_monitor, POLLIN, POLLIN } };
  int status = 0;
  while (status == 0 && !bench_stop_requested()) {
    /* The ROUTER's fd can stay quiet with messages waiting once a receive
       or a send has run (zmq_getsockopt(3), ZMQ_FD): so ZMQ_EVENTS after
       every message, and the last look, which finds none, is the one
       before sleeping. */
    while (status == 0 && s_readable(socket)) {
      zmq_msg_t frames[BENCH_FRAMES_MAX];
      int count = bench_receive_message(socket, frames);
      if (count >= 0) {
        status = s_handle(socket, name, answer, ctx, frames, count) < 0;
      } else if (errno != EAGAIN && errno != EINTR) {
        fprintf(stderr, "%s: receive: %s\n", name, zmq_strerror(errno));
        status = 1;
      } else {
        break;                          /* a signal: look at the flag */
      }
    }
    /* Nothing else touches the monitor: its fd tells. */
    if (fds[1].revents)
      while (s_readable(monitor)) {
        zmq_msg_t frames[BENCH_FRAMES_MAX];
        int count = bench_receive_message(monitor, frames);
        if (count >= 0) bench_close_frames(frames, count);
      }
    if (status == 0 && poll(fds, 2, BENCH_POLL_MS) < 0 && errno != EINTR) {
      perror("poll");
      status = 1;
    }
  }
  zmq_socket_monitor(socket, NULL, 0);
  zmq_close(monitor);
  return status;
}
