/*  bench/wire.h — bench_load's own ZMTP 3.0 client connection (--wire raw).

    A load generator built on libzmq pays libzmq's cost per frame, in its
    main thread and its I/O thread, about as much as the C echo server
    does: it cannot drive a libzmq server faster than that server runs, so
    every scenario was load-bound. This connection speaks the wire itself
    over a plain TCP socket (ZMTP 3.0, NULL mechanism, as a ROUTER whose
    routing id the server makes up), so a whole window of calls goes out in
    one writev and its replies come back in one read, parsed in place.

    It is a benchmark tool's transport, not a ZeroMQ implementation: one
    peer, TCP only, no security, no reconnection; a server's PING is
    answered, any other command or a malformed frame ends the run.
*/

#ifndef BENCH_WIRE_H
#define BENCH_WIRE_H

#include <stddef.h>
#include <sys/uio.h>

#define WIRE_FRAMES_MAX 8            /* frames kept per message; more are skipped */

typedef struct {
  const unsigned char *data;
  size_t size;
} wire_frame_t;

typedef struct wire wire_t;

/* Connects to ENDPOINT ("tcp://HOST:PORT", HOST a name, an IPv4 address or
   [IPv6]) and handshakes within `timeout_ms`, checking that the server is a
   ROUTER whose routing id is `service`. NULL on failure, with the reason in
   `why`. */
wire_t *wire_connect(const char *endpoint, const char *service, int timeout_ms,
                     char *why, size_t why_size);
void wire_close(wire_t *w);
int wire_fd(const wire_t *w);

/* Queues one message of `count` frames. Frames of up to 256 bytes are
   copied; longer ones are sent from where they are, so they must stay
   unchanged until wire_flush has sent them. -1 when out of memory. */
int wire_queue(wire_t *w, const struct iovec *frames, int count);

/* Writes what is queued. 0: all of it went out; 1: the socket is full
   (wait for POLLOUT, then flush again); -1: the connection failed. */
int wire_flush(wire_t *w);
int wire_pending(const wire_t *w);

/* Reads once what the socket holds. 1: bytes came and the read filled
   what it was given (there may be more); 0: bytes came, or none was
   waiting (EAGAIN): the socket is drained; -1: closed or failed (errno). */
int wire_read(wire_t *w);

/* The next whole message read: 1 with its frames in frames[0..*count)
   (views into the read buffer, valid until the next wire_read); 0 when no
   whole message is buffered; -1 on a malformed frame or a command other
   than PING (the reason in `why`). */
int wire_next(wire_t *w, wire_frame_t *frames, int *count, char *why, size_t why_size);

#endif
