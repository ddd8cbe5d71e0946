/*  bench_server: what the two benchmark servers (bench_echo_c, bench_null)
    share: the stop flag their signal handler sets, their socket, receiving
    one whole multipart message and the serve loop around their answers. Not the pseud core: the ceiling owes nothing to the
    code it measures. */
#ifndef PSEUD_BENCH_SERVER_H
#define PSEUD_BENCH_SERVER_H

#include <zmq.h>

#define BENCH_FRAMES_MAX 8     /* a v1 message has 6; more is drained and ignored */
#define BENCH_SERVICE_NAME "bench"
#define BENCH_POLL_MS 250      /* how often a blocked receive looks at the stop flag */

/* A new context whose threads run as pseud-lua's do (src/io_threads.c):
   SCHED_BATCH when PSEUD_IO_BATCH is 1, or when it is not 0 or 1 and the
   process may run on one CPU only. So the ceiling and the C echo get what
   the server they are set beside gets. NULL when out of memory. */
void *bench_context_new(void);

/* SIGTERM and SIGINT set the stop flag (no SA_RESTART: a blocked receive
   returns EINTR). Returns 0 or -1. */
int bench_install_signal_handlers(void);
int bench_stop_requested(void);

/* The ROUTER both servers serve on: routing id "bench", a receive timeout
   so the stop flag is seen, a CURVE server when BENCH_CURVE_SECRET (Z85)
   is set; bound to `address`, the resolved endpoint written to `endpoint`.
   NULL with errno (the socket closed). */
void *bench_server_socket(void *context, const char *address, char *endpoint, size_t size);

/* Receives one whole multipart message into frames[] (BENCH_FRAMES_MAX);
   returns the frame count (frames beyond the array are read and dropped,
   the count says how many there were), or -1 on EAGAIN/EINTR/error. */
int bench_receive_message(void *socket, zmq_msg_t *frames);
void bench_close_frames(zmq_msg_t *frames, int count);

/* One received message: 1 answered (a WORK), 0 not a WORK, -1 the socket
   failed (errno). The frames are closed by the caller afterwards. */
typedef int (*bench_answer_fn)(void *socket, zmq_msg_t *frames, int count, void *ctx);

/* Receive and answer until the stop flag is set; a message that is not a
   WORK (other than a probe) is reported on stderr under `name`. Returns the
   exit status: 0, or 1 when receiving or sending failed. */
int bench_serve(void *socket, const char *name, bench_answer_fn answer, void *ctx);

/* bench_serve as a host must serve that waits on more than one socket with
   libzmq's public API: poll(2) on the ROUTER's ZMQ_FD and on the ZMQ_FD of a
   monitor of it (a host learns disconnects there), ZMQ_EVENTS read after a
   wake and after each message, the monitor drained when its fd wakes. Its
   system calls beyond bench_serve's are the least such a host makes per
   call (docs/bench.md). Returns the exit status. */
int bench_serve_polled(void *context, void *socket, const char *name, bench_answer_fn answer,
                       void *ctx);

#endif
