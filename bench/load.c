/*  bench_load — a pseud v1 load generator for benchmarks.

    C clients, each a ROUTER socket (ZMQ_PROBE_ROUTER, ZMQ_ROUTER_MANDATORY)
    connected to ENDPOINT and addressing the server by its routing id
    SERVICE_NAME, keep W WORK calls in flight each until N calls in all have
    been answered. One thread drives every client socket. Every reply is
    checked: type OK, a uuid that matches a call in flight on that client,
    a body that decodes to "Hello Charly" (or, with --payload, the same bin
    that was sent). Anything else is an error and makes the exit status 1.

    With --wire raw the clients are not libzmq sockets but connections of
    its own speaking ZMTP 3.0 (bench/wire.h): a libzmq client costs about
    what a libzmq server does per call, so it could not drive one faster
    than that server runs. CURVE needs libzmq's clients.

    It must cost less than any server it measures (scripts/bench prints its
    ceiling: its rate against bench_null over the share of its core it used,
    which it reports as load_cpu=), so the hot path does no syscall of its
    own beyond what its transport needs:
    - message uuids have the uuid4 layout (version 4, RFC 4122 variant) and
      come from a splitmix64 generator seeded once from getrandom, not from
      libuuid (one getrandom syscall per uuid). 90 bits are random; the last
      four bytes are the index of the call's slot in its client's window, so
      a reply finds its call at once and is matched by comparing all 16
      bytes (a stale or forged uuid that names a slot does not match it);
    - replies are read with non-blocking receives, up to LOAD_BATCH per
      client in a row; the window is refilled after each batch;
    - it sleeps in poll(2) on the sockets' ZMQ_FDs only when every client
      with calls in flight has just had a receive find nothing. That is
      what makes the wait safe: a ZMQ_FD signals only an event that comes
      after the socket last processed its commands, which a send also does,
      so a socket that has sent since is read again before any sleep;
    - an answer is compared byte for byte with the packed right answer;
      only one that differs is decoded (a host may pack the same value in
      another form) and described.

    Before the clock starts, each client makes one warm-up call, resending
    it while the server is not yet handshaken (a ROUTER_MANDATORY send to an
    unknown routing id fails with EHOSTUNREACH): so the figures measure
    calls, not connection set-up. Latency is send → reply on the monotonic
    clock. The whole run, warm-up included, is bounded by --deadline.

    Output, one line on stdout (machine-readable, key=value):
      calls=N seconds=S calls_per_s=X p50_us=A p99_us=B mb_per_s=M errors=E load_cpu=C
    calls: measured calls answered; mb_per_s: echoed payload bytes per
    second in 10^6 bytes, each call counted once (0 for hello); load_cpu:
    the CPU time bench_load itself used (every thread) over the measured
    seconds, so 1.00 is one core kept busy.
*/

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <zmq.h>

#include "wire.h"
#include "workload.h"

#define LOAD_FRAMES_MAX 8            /* a v1 reply has 6; more is read and dropped */
#define LOAD_BATCH 256               /* replies read from one client before its window is refilled */
#define LOAD_WINDOW_MAX (1L << 24)   /* slot indexes travel in 4 uuid bytes; this is plenty */
#define LOAD_HANDSHAKE_MS 10000     /* --wire raw: a connection's set-up, at most */
#define LOAD_WIRE_READS 64           /* --wire raw: reads in a row before the deadline is looked at */
#define LOAD_RETRY_MS 5              /* wait between sends to a not-yet-handshaken server */
#define LOAD_POLL_MS 100             /* longest poll, so the deadline is seen */
#define LOAD_ERRORS_SHOWN 5          /* errors described on stderr; the rest only counted */
#define LOAD_UUID_SIZE 16
#define LOAD_SLOT_AT 12              /* uuid bytes 12..15: the slot index, big-endian */

enum { TYPE_OK = 0x01, TYPE_WORK = 0x03, TYPE_HEARTBEAT = 0x06, TYPE_ERROR = 0x10 };
static const unsigned char s_work_type = TYPE_WORK;   /* the WORK type frame's byte */

typedef struct {
  const char *endpoint;              /* where the server is bound */
  const char *service;               /* its routing id */
  size_t service_size;
  long calls;                        /* measured calls, all clients together */
  long window;                       /* calls in flight per client */
  long clients;                      /* client sockets */
  long payload;                      /* bytes echoed per call; 0 = hello */
  double deadline_s;                 /* the whole run, warm-up included */
  uint64_t interval_ns;              /* least time between two sends of a client; 0: none */
  const char *curve_server_key;      /* Z85: the clients speak CURVE to this server key; NULL: no */
  int wire_raw;                      /* --wire raw: bench/wire.c's connections, not libzmq's */
} options_t;

typedef struct {
  unsigned char *body;               /* the packed WORK body, the same for every call */
  size_t body_size;
  unsigned char *payload;            /* the bin echo sends, or NULL for hello */
  size_t payload_size;
  unsigned char *answer;             /* the packed OK body of a right answer */
  size_t answer_size;
} workload_t;

typedef struct {
  unsigned char uuid[LOAD_UUID_SIZE]; /* the message uuid the reply must carry */
  uint64_t sent_ns;                  /* monotonic send time */
  int busy;                          /* a call is in flight in this slot */
} call_t;

typedef struct {
  void *socket;                      /* ROUTER connected to the server (--wire zmq) */
  wire_t *wire;                      /* or the raw connection (--wire raw) */
  int fd;                            /* its ZMQ_FD, or the raw connection's socket */
  int armed;                         /* the last operation on the socket was a receive
                                        that found nothing: its ZMQ_FD will signal */
  call_t *slots;                     /* `window` slots */
  uint32_t *free_slots;              /* stack of the free slots' indexes */
  long free_count;
  long in_flight_count;              /* window - free_count */
  long unsent;                       /* calls of the current phase not sent yet */
  uint64_t next_send_ns;             /* with --interval: not before this */
} client_t;

typedef struct {
  uint64_t *latencies_ns;            /* one per measured reply */
  long replies;                      /* replies matched to a call this phase */
  long errors;                       /* bad replies, failed sends, calls lost at the deadline */
  int measuring;                     /* record latencies (0 during warm-up) */
} tally_t;

typedef struct {
  options_t options;
  workload_t workload;
  tally_t tally;
  client_t *clients;                 /* options.clients of them */
  struct pollfd *pollfds;            /* one per client, fd -1 while it is not armed */
  uint64_t id_state;                 /* splitmix64 state of the uuid generator */
} load_t;

static uint64_t s_now_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static void s_report_error(tally_t *tally, const char *what, const char *detail) {
  if (tally->errors++ < LOAD_ERRORS_SHOWN)
    fprintf(stderr, "bench_load: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  else if (tally->errors == LOAD_ERRORS_SHOWN + 1)
    fprintf(stderr, "bench_load: more errors, only counted from here on\n");
}

/* ---- options ---------------------------------------------------------- */

static int s_parse_long(const char *text, long min, long max, long *value) {
  char *end;
  errno = 0;
  long parsed = strtol(text, &end, 10);
  if (errno || end == text || *end || parsed < min || parsed > max)
    return -1;
  *value = parsed;
  return 0;
}

static int s_parse_options(int argc, char **argv, options_t *options) {
  *options = (options_t){ .calls = 10000, .window = 1, .clients = 1, .payload = 0,
                          .deadline_s = 120 };
  int positional = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (arg[0] != '-' || arg[1] != '-') {
      if (positional == 0) options->endpoint = arg;
      else if (positional == 1) options->service = arg;
      else return -1;
      positional++;
      continue;
    }
    if (!value) return -1;
    i++;
    long n;
    if (!strcmp(arg, "--calls") && !s_parse_long(value, 1, LONG_MAX, &n)) options->calls = n;
    else if (!strcmp(arg, "--window") && !s_parse_long(value, 1, LOAD_WINDOW_MAX, &n))
      options->window = n;
    else if (!strcmp(arg, "--clients") && !s_parse_long(value, 1, LONG_MAX, &n))
      options->clients = n;
    else if (!strcmp(arg, "--payload") && !s_parse_long(value, 0, LONG_MAX, &n))
      options->payload = n;
    else if (!strcmp(arg, "--deadline") && !s_parse_long(value, 1, LONG_MAX, &n))
      options->deadline_s = (double)n;
    else if (!strcmp(arg, "--interval") && !s_parse_long(value, 0, LONG_MAX / 1000000, &n))
      options->interval_ns = (uint64_t)n * 1000000u;
    else if (!strcmp(arg, "--curve-server-key") && strlen(value) == 40)
      options->curve_server_key = value;
    else if (!strcmp(arg, "--wire") && (!strcmp(value, "zmq") || !strcmp(value, "raw")))
      options->wire_raw = !strcmp(value, "raw");
    else return -1;
  }
  if (options->wire_raw && options->curve_server_key) {
    fputs("bench_load: --wire raw speaks no CURVE (use --wire zmq)\n", stderr);
    return -1;
  }
  if (positional != 2)
    return -1;
  options->service_size = strlen(options->service);
  return 0;
}

/* ---- the workload ----------------------------------------------------- */

/* Packs the call and its right answer once. Returns -1 when out of memory. */
static int s_workload_init(workload_t *workload, long payload_size) {
  *workload = (workload_t){ 0 };
  if (payload_size > 0) {
    workload->payload_size = (size_t)payload_size;
    workload->payload = malloc(workload->payload_size);
    if (!workload->payload)
      return -1;
    workload_fill_payload(workload->payload, workload->payload_size);
  }
  workload->body = workload_pack_call(workload->payload, workload->payload_size,
                                      &workload->body_size);
  workload->answer = workload_pack_answer(workload->payload, workload->payload_size,
                                          &workload->answer_size);
  return workload->body && workload->answer ? 0 : -1;
}

static void s_workload_destroy(workload_t *workload) {
  free(workload->body);
  free(workload->answer);
  free(workload->payload);
  *workload = (workload_t){ 0 };
}

/* ---- message uuids ---------------------------------------------------- */

/* Seeds the generator: from getrandom once, or from the clock and the pid
   if that fails (the uuids need to be unlikely to repeat, not secret). */
static uint64_t s_id_seed(void) {
  uint64_t seed;
  if (getrandom(&seed, sizeof seed, 0) == (ssize_t)sizeof seed)
    return seed;
  return s_now_ns() ^ ((uint64_t)getpid() << 32);
}

/* splitmix64 (Steele, Lea, Flood 2014): one 64-bit step. */
static uint64_t s_id_next(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* A uuid4 layout whose last four bytes are `slot`. */
static void s_id_make(uint64_t *state, uint32_t slot, unsigned char *uuid) {
  uint64_t high = s_id_next(state), low = s_id_next(state);
  memcpy(uuid, &high, 8);
  memcpy(uuid + 8, &low, 4);
  uuid[6] = (unsigned char)((uuid[6] & 0x0f) | 0x40);   /* version 4 */
  uuid[8] = (unsigned char)((uuid[8] & 0x3f) | 0x80);   /* variant 10 (RFC 4122) */
  uuid[LOAD_SLOT_AT] = (unsigned char)(slot >> 24);
  uuid[LOAD_SLOT_AT + 1] = (unsigned char)(slot >> 16);
  uuid[LOAD_SLOT_AT + 2] = (unsigned char)(slot >> 8);
  uuid[LOAD_SLOT_AT + 3] = (unsigned char)slot;
}

static uint32_t s_id_slot(const unsigned char *uuid) {
  return (uint32_t)uuid[LOAD_SLOT_AT] << 24 | (uint32_t)uuid[LOAD_SLOT_AT + 1] << 16
       | (uint32_t)uuid[LOAD_SLOT_AT + 2] << 8 | (uint32_t)uuid[LOAD_SLOT_AT + 3];
}

/* ---- sending ---------------------------------------------------------- */

/* One WORK through libzmq: 0 sent, 1 the server is not handshaken yet, -1
   failed. */
static int s_send_zmq(void *socket, const options_t *options, const unsigned char *uuid,
                      const workload_t *workload) {
  if (zmq_send(socket, options->service, options->service_size, ZMQ_SNDMORE) < 0)
    return errno == EHOSTUNREACH ? 1 : -1;

  /* The body is sent zero-copy: it lives until after zmq_ctx_term. */
  zmq_msg_t body;
  zmq_msg_init_data(&body, workload->body, workload->body_size, NULL, NULL);
  if (zmq_send(socket, "", 0, ZMQ_SNDMORE) < 0
      || zmq_send(socket, "v1", 2, ZMQ_SNDMORE) < 0
      || zmq_send(socket, uuid, LOAD_UUID_SIZE, ZMQ_SNDMORE) < 0
      || zmq_send(socket, &s_work_type, 1, ZMQ_SNDMORE) < 0
      || zmq_msg_send(&body, socket, 0) < 0) {
    zmq_msg_close(&body);
    return -1;
  }
  return 0;
}

/* Sends one WORK call on `client` from a free slot (a raw connection only
   queues it: s_run_phase flushes the window). Returns 0 when sent, 1 when
   the server is not handshaken yet (nothing was sent), -1 on any other
   failure. */
static int s_send_call(load_t *load, client_t *client) {
  const options_t *options = &load->options;
  uint32_t slot = client->free_slots[client->free_count - 1];
  call_t *call = &client->slots[slot];
  s_id_make(&load->id_state, slot, call->uuid);
  call->sent_ns = s_now_ns();
  if (client->wire) {
    const struct iovec frames[] = {
      { "", 0 }, { "v1", 2 }, { call->uuid, LOAD_UUID_SIZE }, { (void *)&s_work_type, 1 },
      { load->workload.body, load->workload.body_size },
    };
    if (wire_queue(client->wire, frames, 5) < 0)
      return -1;
  } else {
    client->armed = 0;               /* a send processes the socket's commands */
    int sent = s_send_zmq(client->socket, options, call->uuid, &load->workload);
    if (sent != 0)
      return sent;
  }
  call->busy = 1;
  client->free_count--;
  client->in_flight_count++;
  client->unsent--;
  client->next_send_ns = call->sent_ns + options->interval_ns;
  return 0;
}

/* Sends while the client's window has room. Returns what s_send_call did
   last (0 when nothing was left to send). */
static int s_fill_window(load_t *load, client_t *client) {
  while (client->unsent > 0 && client->free_count > 0) {
    if (load->options.interval_ns && s_now_ns() < client->next_send_ns)
      return 0;                      /* a paced probe: later */
    int sent = s_send_call(load, client);
    if (sent != 0)
      return sent;
  }
  return 0;
}

/* ---- receiving and checking ------------------------------------------- */

/* Checks a reply that is not byte for byte the packed right answer: an OK
   may still carry the expected value packed another way. On failure writes
   what was wrong into `why`. */
static int s_reply_is_right(unsigned char type, const char *body, size_t size,
                            const workload_t *workload, char *why, size_t why_size) {
  msgpack_unpacked reply;
  msgpack_unpacked_init(&reply);
  int right = 0;
  if (msgpack_unpack_next(&reply, body, size, NULL) != MSGPACK_UNPACK_SUCCESS) {
    snprintf(why, why_size, "type 0x%02x, body is not msgpack", type);
  } else if (type != TYPE_OK) {
    int shown = snprintf(why, why_size, "type 0x%02x, body ", type);
    msgpack_object_print_buffer(why + shown, why_size - (size_t)shown, reply.data);
  } else if (workload->payload) {
    const msgpack_object *value = &reply.data;
    right = value->type == MSGPACK_OBJECT_BIN
         && value->via.bin.size == workload->payload_size
         && memcmp(value->via.bin.ptr, workload->payload, workload->payload_size) == 0;
    if (!right) {
      int shown = snprintf(why, why_size, "echo did not return the bin it was sent: ");
      msgpack_object_print_buffer(why + shown, why_size - (size_t)shown, reply.data);
    }
  } else {
    const msgpack_object *value = &reply.data;
    size_t expected = strlen(WORKLOAD_HELLO_ANSWER);
    right = value->type == MSGPACK_OBJECT_STR && value->via.str.size == expected
         && memcmp(value->via.str.ptr, WORKLOAD_HELLO_ANSWER, expected) == 0;
    if (!right) {
      int shown = snprintf(why, why_size, "hello returned ");
      msgpack_object_print_buffer(why + shown, why_size - (size_t)shown, reply.data);
    }
  }
  msgpack_unpacked_destroy(&reply);
  return right;
}

/* Takes the call with this uuid out of the window; returns its send time,
   or 0 when no call in flight has it. */
static uint64_t s_take_call(client_t *client, long window, const unsigned char *uuid) {
  uint32_t slot = s_id_slot(uuid);
  if (slot >= (uint64_t)window)
    return 0;
  call_t *call = &client->slots[slot];
  if (!call->busy || memcmp(call->uuid, uuid, LOAD_UUID_SIZE) != 0)
    return 0;
  call->busy = 0;
  client->free_slots[client->free_count++] = slot;
  client->in_flight_count--;
  return call->sent_ns;
}

/* Handles one received message: its frames after the routing id a libzmq
   ROUTER puts first ("", "v1", uuid, type, body), as views; `count` may be
   more than WIRE_FRAMES_MAX (only that many are kept). */
static void s_handle_reply(load_t *load, client_t *client, const wire_frame_t *frames, int count) {
  const options_t *options = &load->options;
  const workload_t *workload = &load->workload;
  tally_t *tally = &load->tally;
  /* a server's HEARTBEAT ("", "v1", "", 0x06, ...) is not a reply */
  if (count == 5 && frames[2].size == 0 && frames[3].size == 1 && frames[3].data[0] == TYPE_HEARTBEAT)
    return;
  if (count != 5 || frames[0].size != 0 || frames[1].size != 2 || memcmp(frames[1].data, "v1", 2)
      || frames[2].size != LOAD_UUID_SIZE || frames[3].size != 1) {
    char detail[64];
    snprintf(detail, sizeof detail, "%d frames after the routing id", count);
    s_report_error(tally, "a message that is not a v1 reply", detail);
    return;
  }
  uint64_t sent_ns = s_take_call(client, options->window, frames[2].data);
  if (!sent_ns) {
    s_report_error(tally, "a reply whose uuid matches no call in flight", NULL);
    return;
  }
  uint64_t latency_ns = s_now_ns() - sent_ns;
  unsigned char type = frames[3].data[0];
  const char *body = (const char *)frames[4].data;
  size_t size = frames[4].size;
  char why[256];
  if (!(type == TYPE_OK && size == workload->answer_size
        && memcmp(body, workload->answer, size) == 0)
      && !s_reply_is_right(type, body, size, workload, why, sizeof why))
    s_report_error(tally, "a wrong reply", why);
  if (tally->measuring)
    tally->latencies_ns[tally->replies] = latency_ns;
  tally->replies++;
}

/* A message a libzmq client received: the routing id must be the
   service's; the rest is checked as a reply. */
static void s_handle_zmq_reply(load_t *load, client_t *client, zmq_msg_t *frames, int count) {
  const options_t *options = &load->options;
  if (zmq_msg_size(&frames[0]) != options->service_size
      || memcmp(zmq_msg_data(&frames[0]), options->service, options->service_size)) {
    s_report_error(&load->tally, "a message from another routing id than the service's", NULL);
    return;
  }
  wire_frame_t views[LOAD_FRAMES_MAX];
  for (int i = 1; i < count && i < LOAD_FRAMES_MAX; i++)
    views[i - 1] = (wire_frame_t){ zmq_msg_data(&frames[i]), zmq_msg_size(&frames[i]) };
  s_handle_reply(load, client, views, count - 1);
}

/* Receives one whole message without waiting for it; returns its frame
   count, 0 when none is waiting, -1 on failure. */
static int s_receive_message(void *socket, zmq_msg_t *frames) {
  int count = 0;
  int more = 1;
  while (more) {
    zmq_msg_t scratch;
    zmq_msg_t *frame = count < LOAD_FRAMES_MAX ? &frames[count] : &scratch;
    zmq_msg_init(frame);
    /* the parts of a message arrive together: only the first may be missing */
    if (zmq_msg_recv(frame, socket, count == 0 ? ZMQ_DONTWAIT : 0) < 0) {
      int error = errno;
      zmq_msg_close(frame);
      for (int i = 0; i < count && i < LOAD_FRAMES_MAX; i++)
        zmq_msg_close(&frames[i]);
      errno = error;
      return count == 0 && error == EAGAIN ? 0 : -1;
    }
    more = zmq_msg_more(frame);
    if (frame == &scratch)
      zmq_msg_close(&scratch);
    count++;
  }
  return count;
}

/* A raw connection's replies: what is buffered, then reads until one
   leaves the socket drained, at least one each time (poll says the socket
   is readable: unread bytes, a PING, a HEARTBEAT or the end would make it
   say so again at once) and at most LOAD_WIRE_READS, so the deadline is
   looked at. The client is then armed: a plain socket's poll is level-
   triggered, so it says at once when bytes are waiting, and the next
   call's reply is waited for in poll rather than by a read that finds
   nothing. -1 when the connection failed, or (errno EPROTO, already
   reported) the server broke the protocol. */
static int s_drain_wire(load_t *load, client_t *client) {
  int drained = 0;
  for (int reads = 0;; reads++) {
    wire_frame_t frames[WIRE_FRAMES_MAX];
    int count, got;
    char why[128];
    while ((got = wire_next(client->wire, frames, &count, why, sizeof why)) == 1)
      s_handle_reply(load, client, frames, count);
    if (got < 0) {
      s_report_error(&load->tally, "the server broke ZMTP", why);
      errno = EPROTO;
      return -1;
    }
    if (drained || (reads > 0 && client->in_flight_count == 0)) {
      client->armed = 1;
      return 0;
    }
    if (reads == LOAD_WIRE_READS)
      return 0;                      /* not armed: read again after the deadline's look */
    int more = wire_read(client->wire);
    if (more < 0)
      return -1;
    drained = !more;
  }
}

/* Reads what has arrived for `client`: up to LOAD_BATCH messages, until a
   receive finds nothing (the socket is then armed) or no call is left in
   flight (with window 1 the next call then goes out at once, without a
   receive that would find nothing first). Returns -1 when the socket
   failed, else 0. */
static int s_drain(load_t *load, client_t *client) {
  if (client->wire)
    return s_drain_wire(load, client);
  for (int got = 0; got < LOAD_BATCH && client->in_flight_count > 0; got++) {
    zmq_msg_t frames[LOAD_FRAMES_MAX];
    int count = s_receive_message(client->socket, frames);
    if (count == 0) {
      client->armed = 1;
      return 0;
    }
    if (count < 0)
      return -1;
    client->armed = 0;
    s_handle_zmq_reply(load, client, frames, count);
    for (int i = 0; i < count && i < LOAD_FRAMES_MAX; i++)
      zmq_msg_close(&frames[i]);
  }
  return 0;
}

/* ---- one phase: every client sends its `unsent` calls ----------------- */

/* How long to sleep, at most: until the deadline, a handshake retry, or the
   next paced send of a client with room in its window. */
static int s_wait_ms(const load_t *load, uint64_t now_ns, uint64_t deadline_ns,
                     int waiting_for_handshake) {
  uint64_t wait_ns = (uint64_t)(waiting_for_handshake ? LOAD_RETRY_MS : LOAD_POLL_MS) * 1000000u;
  if (deadline_ns - now_ns < wait_ns)
    wait_ns = deadline_ns - now_ns;
  for (long c = 0; load->options.interval_ns && c < load->options.clients; c++) {
    const client_t *client = &load->clients[c];
    if (client->unsent > 0 && client->free_count > 0) {
      uint64_t due_ns = client->next_send_ns > now_ns ? client->next_send_ns - now_ns : 0;
      if (due_ns < wait_ns) wait_ns = due_ns;
    }
  }
  return (int)((wait_ns + 999999) / 1000000);
}

/* Runs until every client has had all its calls answered. Returns 0, or -1
   when the deadline passed or a socket failed (the calls left unanswered
   are counted as errors). `handshaking`: EHOSTUNREACH means "not yet"
   (warm-up); otherwise it means the server is gone. */
static int s_run_phase(load_t *load, uint64_t deadline_ns, int handshaking) {
  const options_t *options = &load->options;
  tally_t *tally = &load->tally;
  for (;;) {
    int waiting_for_handshake = 0;
    int finished = 1;
    int must_read = 0;               /* a client with calls in flight is not armed */
    for (long c = 0; c < options->clients; c++) {
      client_t *client = &load->clients[c];
      /* An armed socket whose ZMQ_FD has not signalled has nothing new. */
      if (!client->armed && s_drain(load, client) < 0) {
        if (errno != EPROTO)           /* a broken protocol is reported where it was found */
          s_report_error(tally, "receive failed", zmq_strerror(errno));
        goto abandon;
      }
      int sent = s_fill_window(load, client);
      if (sent == 1 && handshaking) {
        waiting_for_handshake = 1;
      } else if (sent != 0) {
        s_report_error(tally, "send failed", zmq_strerror(errno));
        goto abandon;
      }
      int out_blocked = 0;           /* a raw connection's socket is full */
      if (client->wire && wire_pending(client->wire)) {
        out_blocked = wire_flush(client->wire);
        if (out_blocked < 0) {
          s_report_error(tally, "send failed", strerror(errno));
          goto abandon;
        }
      }
      if (client->unsent > 0 || client->in_flight_count > 0)
        finished = 0;
      if (client->in_flight_count > 0 && !client->armed)
        must_read = 1;
      load->pollfds[c].fd = client->armed || out_blocked ? client->fd : -1;
      load->pollfds[c].events = (short)(POLLIN | (out_blocked ? POLLOUT : 0));
    }
    if (finished)
      return 0;

    uint64_t now_ns = s_now_ns();
    if (now_ns >= deadline_ns) {
      s_report_error(tally, "deadline reached before every call was answered", NULL);
      goto abandon;
    }
    if (must_read)
      continue;
    int wait_ms = s_wait_ms(load, now_ns, deadline_ns, waiting_for_handshake);
    int ready = poll(load->pollfds, (nfds_t)options->clients, wait_ms);
    if (ready < 0 && errno != EINTR) {
      s_report_error(tally, "poll failed", strerror(errno));
      goto abandon;
    }
    for (long c = 0; ready > 0 && c < options->clients; c++) {
      if (load->pollfds[c].fd >= 0 && load->pollfds[c].revents) {
        load->clients[c].armed = 0;  /* something happened: read it */
        ready--;
      }
    }
  }

abandon:
  for (long c = 0; c < options->clients; c++) {
    client_t *client = &load->clients[c];
    tally->errors += client->unsent + client->in_flight_count;
    client->unsent = client->in_flight_count = 0;
  }
  return -1;
}

/* ---- results ---------------------------------------------------------- */

static int s_compare_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted latencies, in microseconds. */
static double s_percentile_us(const uint64_t *sorted, long count, double fraction) {
  if (count == 0)
    return 0;
  long rank = (long)(fraction * (double)count + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > count) rank = count;
  return (double)sorted[rank - 1] / 1000.0;
}

/* CPU time of the whole process (every thread) so far, in seconds. */
static double s_cpu_s(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
       + (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

static void s_print_results(const tally_t *tally, const workload_t *workload,
                            double seconds, double cpu_s) {
  qsort(tally->latencies_ns, (size_t)tally->replies, sizeof *tally->latencies_ns,
        s_compare_u64);
  double rate = seconds > 0 ? (double)tally->replies / seconds : 0;
  printf("calls=%ld seconds=%.3f calls_per_s=%.0f p50_us=%.1f p99_us=%.1f "
         "mb_per_s=%.2f errors=%ld load_cpu=%.3f\n",
         tally->replies, seconds, rate,
         s_percentile_us(tally->latencies_ns, tally->replies, 0.50),
         s_percentile_us(tally->latencies_ns, tally->replies, 0.99),
         rate * (double)workload->payload_size / 1e6, tally->errors,
         seconds > 0 ? cpu_s / seconds : 0);
  fflush(stdout);
}

/* ---- main ------------------------------------------------------------- */

static int s_open_client(void *context, client_t *client, const options_t *options,
                         int timeout_ms) {
  int on = 1, linger_ms = 0, unlimited = 0;
  size_t fd_size = sizeof client->fd;
  client->slots = calloc((size_t)options->window, sizeof *client->slots);
  client->free_slots = malloc((size_t)options->window * sizeof *client->free_slots);
  if (!client->slots || !client->free_slots) {
    errno = ENOMEM;
    return -1;
  }
  for (long i = 0; i < options->window; i++)      /* slot 0 on top */
    client->free_slots[i] = (uint32_t)(options->window - 1 - i);
  client->free_count = options->window;
  if (options->wire_raw) {
    char why[256];
    client->wire = wire_connect(options->endpoint, options->service, timeout_ms,
                                why, sizeof why);
    if (!client->wire) {
      fprintf(stderr, "bench_load: %s\n", why);
      errno = 0;                     /* said: s_open_clients adds nothing */
      return -1;
    }
    client->fd = wire_fd(client->wire);
    return 0;
  }
  client->socket = zmq_socket(context, ZMQ_ROUTER);
  /* No high-water mark: the window already bounds what is queued. */
  if (!client->socket
      || zmq_setsockopt(client->socket, ZMQ_PROBE_ROUTER, &on, sizeof on) < 0
      || zmq_setsockopt(client->socket, ZMQ_ROUTER_MANDATORY, &on, sizeof on) < 0
      || zmq_setsockopt(client->socket, ZMQ_LINGER, &linger_ms, sizeof linger_ms) < 0
      || zmq_setsockopt(client->socket, ZMQ_SNDHWM, &unlimited, sizeof unlimited) < 0
      || zmq_setsockopt(client->socket, ZMQ_RCVHWM, &unlimited, sizeof unlimited) < 0
      || zmq_getsockopt(client->socket, ZMQ_FD, &client->fd, &fd_size) < 0)
    return -1;
  if (options->curve_server_key) {   /* a key pair of its own per client */
    char public_key[41], secret_key[41];
    if (zmq_curve_keypair(public_key, secret_key) < 0
        || zmq_setsockopt(client->socket, ZMQ_CURVE_SERVERKEY, options->curve_server_key, 40) < 0
        || zmq_setsockopt(client->socket, ZMQ_CURVE_PUBLICKEY, public_key, 40) < 0
        || zmq_setsockopt(client->socket, ZMQ_CURVE_SECRETKEY, secret_key, 40) < 0)
      return -1;
  }
  return zmq_connect(client->socket, options->endpoint);
}

static int s_open_clients(void *context, load_t *load, uint64_t deadline_ns) {
  for (long c = 0; c < load->options.clients; c++) {
    uint64_t now_ns = s_now_ns(), left_ms = now_ns < deadline_ns ? (deadline_ns - now_ns) / 1000000 : 0;
    int timeout_ms = left_ms < LOAD_HANDSHAKE_MS ? (int)left_ms : LOAD_HANDSHAKE_MS;
    if (s_open_client(context, &load->clients[c], &load->options, timeout_ms) < 0) {
      if (errno)
        fprintf(stderr, "bench_load: client %ld: %s: %s\n", c, load->options.endpoint,
                zmq_strerror(errno));
      return -1;
    }
    load->pollfds[c] = (struct pollfd){ .fd = -1, .events = POLLIN };
  }
  return 0;
}

static void s_close_clients(client_t *clients, long count) {
  for (long c = 0; c < count; c++) {
    if (clients[c].socket)
      zmq_close(clients[c].socket);
    wire_close(clients[c].wire);
    free(clients[c].slots);
    free(clients[c].free_slots);
  }
}

static const char s_usage[] =
  "usage: bench_load ENDPOINT SERVICE_NAME [--calls N] [--window W] [--clients C]\n"
  "                  [--payload BYTES] [--deadline SECONDS] [--interval MS]\n"
  "                  [--curve-server-key Z85 | --wire zmq|raw]\n"
  "  --calls     measured calls, all clients together (default 10000)\n"
  "  --window    calls in flight per client (default 1, at most 16777216)\n"
  "  --clients   client sockets, driven by one thread (default 1)\n"
  "  --payload   call echo(bin of BYTES) instead of hello('Charly') (default 0)\n"
  "  --deadline  bound on the whole run, warm-up included (default 120)\n"
  "  --interval  least milliseconds between two sends of a client (a paced\n"
  "              probe; default 0: as fast as replies come)\n"
  "  --curve-server-key  speak CURVE to a server with this public key (each\n"
  "              client makes its own key pair)\n"
  "  --wire      zmq (default): libzmq ROUTER clients; raw: connections of its\n"
  "              own speaking ZMTP 3.0 over TCP (NULL mechanism only), a\n"
  "              fraction of libzmq's cost per call (bench/wire.h)\n";

int main(int argc, char **argv) {
  load_t load = { 0 };
  if (s_parse_options(argc, argv, &load.options) < 0) {
    fputs(s_usage, stderr);
    return 2;
  }
  const options_t *options = &load.options;
  uint64_t deadline_ns = s_now_ns() + (uint64_t)(options->deadline_s * 1e9);
  load.id_state = s_id_seed();
  signal(SIGPIPE, SIG_IGN);          /* a raw connection's server gone: EPIPE, not death */
  void *context = zmq_ctx_new();
  load.clients = calloc((size_t)options->clients, sizeof *load.clients);
  load.pollfds = calloc((size_t)options->clients, sizeof *load.pollfds);
  load.tally.latencies_ns = malloc((size_t)options->calls * sizeof *load.tally.latencies_ns);
  if (s_workload_init(&load.workload, options->payload) < 0 || !load.clients
      || !load.pollfds || !load.tally.latencies_ns) {
    fprintf(stderr, "bench_load: out of memory\n");
    return 1;
  }
  int status = 1;
  if (s_open_clients(context, &load, deadline_ns) < 0)
    goto done;

  /* Warm-up: one unmeasured call per client, resent until the handshake is done. */
  for (long c = 0; c < options->clients; c++)
    load.clients[c].unsent = 1;
  if (s_run_phase(&load, deadline_ns, 1) < 0) {
    fprintf(stderr, "bench_load: warm-up did not complete (is the server at %s, "
                    "routing id '%s'?)\n", options->endpoint, options->service);
    load.tally.replies = 0;
    s_print_results(&load.tally, &load.workload, 0, 0);
    goto done;
  }

  for (long c = 0; c < options->clients; c++)
    load.clients[c].unsent = options->calls / options->clients
                           + (c < options->calls % options->clients);
  load.tally.replies = 0;
  load.tally.measuring = 1;
  uint64_t start_ns = s_now_ns();
  double start_cpu_s = s_cpu_s();
  int phase = s_run_phase(&load, deadline_ns, 0);
  double seconds = (double)(s_now_ns() - start_ns) / 1e9;
  s_print_results(&load.tally, &load.workload, seconds, s_cpu_s() - start_cpu_s);
  status = phase == 0 && load.tally.errors == 0 ? 0 : 1;

done:
  s_close_clients(load.clients, options->clients);
  zmq_ctx_term(context);
  s_workload_destroy(&load.workload);
  free(load.tally.latencies_ns);
  free(load.pollfds);
  free(load.clients);
  return status;
}
