/*  bench_load — a pseud v1 load generator for benchmarks.

    C clients, each a ROUTER socket (ZMQ_PROBE_ROUTER, ZMQ_ROUTER_MANDATORY)
    connected to ENDPOINT and addressing the server by its routing id
    SERVICE_NAME, keep W WORK calls in flight each until N calls in all have
    been answered. One thread polls every client socket. Every reply is
    checked: type OK, a uuid that matches a call in flight on that client,
    a body that decodes to "Hello Charly" (or, with --payload, the same bin
    that was sent). Anything else is an error and makes the exit status 1.

    Before the clock starts, each client makes one warm-up call, resending
    it while the server is not yet handshaken (a ROUTER_MANDATORY send to an
    unknown routing id fails with EHOSTUNREACH): so the figures measure
    calls, not connection set-up. Latency is send → reply on the monotonic
    clock. The whole run, warm-up included, is bounded by --deadline.

    Output, one line on stdout (machine-readable, key=value):
      calls=N seconds=S calls_per_s=X p50_us=A p99_us=B mb_per_s=M errors=E
    calls: measured calls answered; mb_per_s: echoed payload bytes per
    second in 10^6 bytes, each call counted once (0 for hello).
*/

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>
#include <uuid/uuid.h>
#include <zmq.h>

#define LOAD_FRAMES_MAX 8            /* a v1 reply has 6; more is read and dropped */
#define LOAD_RETRY_MS 5              /* wait between sends to a not-yet-handshaken server */
#define LOAD_POLL_MS 100             /* longest poll, so the deadline is seen */
#define LOAD_ERRORS_SHOWN 5          /* errors described on stderr; the rest only counted */
#define LOAD_HELLO_NAME "Charly"
#define LOAD_HELLO_ANSWER "Hello Charly"

enum { TYPE_OK = 0x01, TYPE_WORK = 0x03, TYPE_ERROR = 0x10 };

typedef struct {
  const char *endpoint;              /* where the server is bound */
  const char *service;               /* its routing id */
  long calls;                        /* measured calls, all clients together */
  long window;                       /* calls in flight per client */
  long clients;                      /* client sockets */
  long payload;                      /* bytes echoed per call; 0 = hello */
  double deadline_s;                 /* the whole run, warm-up included */
  uint64_t interval_ns;              /* least time between two sends of a client; 0: none */
} options_t;

typedef struct {
  unsigned char *body;               /* the packed WORK body, the same for every call */
  size_t body_size;
  unsigned char *payload;            /* the bin echo sends, or NULL for hello */
  size_t payload_size;
} workload_t;

typedef struct {
  uuid_t uuid;                       /* the message uuid the reply must carry */
  uint64_t sent_ns;                  /* monotonic send time */
} call_t;

typedef struct {
  void *socket;                      /* ROUTER connected to the server */
  call_t *in_flight;                 /* `window` slots, the first in_flight_count used */
  long in_flight_count;
  long unsent;                       /* calls of the current phase not sent yet */
  uint64_t next_send_ns;             /* with --interval: not before this */
} client_t;

typedef struct {
  uint64_t *latencies_ns;            /* one per measured reply */
  long replies;                      /* replies matched to a call this phase */
  long errors;                       /* bad replies, failed sends, calls lost at the deadline */
  int measuring;                     /* record latencies (0 during warm-up) */
} tally_t;

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

static int s_parse_long(const char *text, long min, long *value) {
  char *end;
  errno = 0;
  long parsed = strtol(text, &end, 10);
  if (errno || end == text || *end || parsed < min)
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
    long number;
    if (!strcmp(arg, "--calls") && !s_parse_long(value, 1, &number)) options->calls = number;
    else if (!strcmp(arg, "--window") && !s_parse_long(value, 1, &number)) options->window = number;
    else if (!strcmp(arg, "--clients") && !s_parse_long(value, 1, &number)) options->clients = number;
    else if (!strcmp(arg, "--payload") && !s_parse_long(value, 0, &number)) options->payload = number;
    else if (!strcmp(arg, "--deadline") && !s_parse_long(value, 1, &number)) options->deadline_s = (double)number;
    else if (!strcmp(arg, "--interval") && !s_parse_long(value, 0, &number))
      options->interval_ns = (uint64_t)number * 1000000u;
    else return -1;
  }
  return positional == 2 ? 0 : -1;
}

/* ---- the WORK body ---------------------------------------------------- */

/* Packs ["hello", ["Charly"], {}] or ["echo", [bin], {}] once. The payload's
   first byte is 0xff, never valid UTF-8, so a host that turns valid UTF-8
   into str must still answer bin. Returns -1 when out of memory. */
static int s_workload_init(workload_t *workload, long payload_size) {
  msgpack_sbuffer buffer;
  msgpack_packer packer;
  msgpack_sbuffer_init(&buffer);
  msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
  *workload = (workload_t){ 0 };
  msgpack_pack_array(&packer, 3);
  if (payload_size == 0) {
    msgpack_pack_str_with_body(&packer, "hello", 5);
    msgpack_pack_array(&packer, 1);
    msgpack_pack_str_with_body(&packer, LOAD_HELLO_NAME, strlen(LOAD_HELLO_NAME));
  } else {
    workload->payload_size = (size_t)payload_size;
    workload->payload = malloc(workload->payload_size);
    if (!workload->payload) {
      msgpack_sbuffer_destroy(&buffer);
      return -1;
    }
    srand((unsigned)s_now_ns());
    for (size_t i = 0; i < workload->payload_size; i++)
      workload->payload[i] = (unsigned char)(rand() >> 7);
    workload->payload[0] = 0xff;
    msgpack_pack_str_with_body(&packer, "echo", 4);
    msgpack_pack_array(&packer, 1);
    msgpack_pack_bin_with_body(&packer, workload->payload, workload->payload_size);
  }
  msgpack_pack_map(&packer, 0);
  workload->body_size = buffer.size;
  workload->body = (unsigned char *)msgpack_sbuffer_release(&buffer);
  return workload->body ? 0 : -1;
}

static void s_workload_destroy(workload_t *workload) {
  free(workload->body);
  free(workload->payload);
  *workload = (workload_t){ 0 };
}

/* ---- sending ---------------------------------------------------------- */

/* Sends one WORK call on `client`. Returns 0 when sent, 1 when the server
   is not handshaken yet (nothing was sent), -1 on any other failure. */
static int s_send_call(client_t *client, const options_t *options,
                       const workload_t *workload) {
  call_t *call = &client->in_flight[client->in_flight_count];
  static const unsigned char work_type = TYPE_WORK;
  uuid_generate_random(call->uuid);
  call->sent_ns = s_now_ns();
  if (zmq_send(client->socket, options->service, strlen(options->service),
               ZMQ_SNDMORE) < 0)
    return errno == EHOSTUNREACH ? 1 : -1;

  /* The body is sent zero-copy: it lives until after zmq_ctx_term. */
  zmq_msg_t body;
  zmq_msg_init_data(&body, workload->body, workload->body_size, NULL, NULL);
  if (zmq_send(client->socket, "", 0, ZMQ_SNDMORE) < 0
      || zmq_send(client->socket, "v1", 2, ZMQ_SNDMORE) < 0
      || zmq_send(client->socket, call->uuid, sizeof call->uuid, ZMQ_SNDMORE) < 0
      || zmq_send(client->socket, &work_type, 1, ZMQ_SNDMORE) < 0
      || zmq_msg_send(&body, client->socket, 0) < 0) {
    zmq_msg_close(&body);
    return -1;
  }
  client->in_flight_count++;
  client->unsent--;
  client->next_send_ns = call->sent_ns + options->interval_ns;
  return 0;
}

/* Sends while the client's window has room. Returns what s_send_call did
   last (0 when nothing was left to send). */
static int s_fill_window(client_t *client, const options_t *options,
                         const workload_t *workload) {
  while (client->unsent > 0 && client->in_flight_count < options->window) {
    if (options->interval_ns && s_now_ns() < client->next_send_ns)
      return 0;                      /* a paced probe: later */
    int sent = s_send_call(client, options, workload);
    if (sent != 0)
      return sent;
  }
  return 0;
}

/* ---- receiving and checking ------------------------------------------- */

/* Checks a reply body: OK carrying the expected value. On failure writes
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
    size_t expected = strlen(LOAD_HELLO_ANSWER);
    right = value->type == MSGPACK_OBJECT_STR && value->via.str.size == expected
         && memcmp(value->via.str.ptr, LOAD_HELLO_ANSWER, expected) == 0;
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
static uint64_t s_take_call(client_t *client, const unsigned char *uuid) {
  for (long i = 0; i < client->in_flight_count; i++) {
    call_t *call = &client->in_flight[i];
    if (memcmp(call->uuid, uuid, sizeof call->uuid) == 0) {
      uint64_t sent_ns = call->sent_ns;
      *call = client->in_flight[--client->in_flight_count];
      return sent_ns;
    }
  }
  return 0;
}

/* Handles one received message (frames[0..count)). */
static void s_handle_reply(client_t *client, zmq_msg_t *frames, int count,
                           const options_t *options, const workload_t *workload,
                           tally_t *tally) {
  /* a server's HEARTBEAT ([service, "", "v1", "", 0x06, ...]) is not a reply */
  if (count == 6 && zmq_msg_size(&frames[3]) == 0 && zmq_msg_size(&frames[4]) == 1
      && *(unsigned char *)zmq_msg_data(&frames[4]) == 0x06)
    return;
  if (count != 6 || zmq_msg_size(&frames[0]) != strlen(options->service)
      || memcmp(zmq_msg_data(&frames[0]), options->service, strlen(options->service))
      || zmq_msg_size(&frames[1]) != 0 || zmq_msg_size(&frames[2]) != 2
      || memcmp(zmq_msg_data(&frames[2]), "v1", 2) || zmq_msg_size(&frames[3]) != 16
      || zmq_msg_size(&frames[4]) != 1) {
    char detail[64];
    snprintf(detail, sizeof detail, "%d frames", count);
    s_report_error(tally, "a message that is not a v1 reply from the service", detail);
    return;
  }
  uint64_t sent_ns = s_take_call(client, zmq_msg_data(&frames[3]));
  if (!sent_ns) {
    s_report_error(tally, "a reply whose uuid matches no call in flight", NULL);
    return;
  }
  uint64_t latency_ns = s_now_ns() - sent_ns;
  char why[256];
  if (!s_reply_is_right(*(unsigned char *)zmq_msg_data(&frames[4]),
                        zmq_msg_data(&frames[5]), zmq_msg_size(&frames[5]),
                        workload, why, sizeof why))
    s_report_error(tally, "a wrong reply", why);
  if (tally->measuring)
    tally->latencies_ns[tally->replies] = latency_ns;
  tally->replies++;
}

/* Receives one whole message; returns its frame count, 0 when none is
   waiting, -1 on failure. */
static int s_receive_message(void *socket, zmq_msg_t *frames) {
  int count = 0;
  int more = 1;
  while (more) {
    zmq_msg_t scratch;
    zmq_msg_t *frame = count < LOAD_FRAMES_MAX ? &frames[count] : &scratch;
    zmq_msg_init(frame);
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

/* ---- one phase: every client sends its `unsent` calls ----------------- */

/* Runs until every client has had all its calls answered. Returns 0, or -1
   when the deadline passed or a socket failed (the calls left unanswered
   are counted as errors). `handshaking`: EHOSTUNREACH means "not yet"
   (warm-up); otherwise it means the server is gone. */
static int s_run_phase(client_t *clients, zmq_pollitem_t *items, const options_t *options,
                       const workload_t *workload, tally_t *tally, uint64_t deadline_ns,
                       int handshaking) {
  for (;;) {
    int waiting_for_handshake = 0;
    int finished = 1;
    for (long c = 0; c < options->clients; c++) {
      client_t *client = &clients[c];
      int sent = s_fill_window(client, options, workload);
      if (sent == 1 && handshaking) {
        waiting_for_handshake = 1;
      } else if (sent != 0) {
        s_report_error(tally, "send failed", zmq_strerror(errno));
        goto abandon;
      }
      if (client->unsent > 0 || client->in_flight_count > 0)
        finished = 0;
    }
    if (finished)
      return 0;

    uint64_t now_ns = s_now_ns();
    if (now_ns >= deadline_ns) {
      s_report_error(tally, "deadline reached before every call was answered", NULL);
      goto abandon;
    }
    long poll_ms = waiting_for_handshake ? LOAD_RETRY_MS : LOAD_POLL_MS;
    if ((deadline_ns - now_ns) / 1000000 < (uint64_t)poll_ms)
      poll_ms = (long)((deadline_ns - now_ns) / 1000000) + 1;
    for (long c = 0; options->interval_ns && c < options->clients; c++) {
      const client_t *client = &clients[c];
      if (client->unsent > 0 && client->in_flight_count < options->window) {
        long due_ms = client->next_send_ns > now_ns
                    ? (long)((client->next_send_ns - now_ns + 999999) / 1000000) : 0;
        if (due_ms < poll_ms) poll_ms = due_ms;
      }
    }
    if (zmq_poll(items, (int)options->clients, poll_ms) < 0) {
      s_report_error(tally, "poll failed", zmq_strerror(errno));
      goto abandon;
    }
    for (long c = 0; c < options->clients; c++) {
      if (!(items[c].revents & ZMQ_POLLIN))
        continue;
      for (;;) {
        zmq_msg_t frames[LOAD_FRAMES_MAX];
        int count = s_receive_message(clients[c].socket, frames);
        if (count == 0)
          break;
        if (count < 0) {
          s_report_error(tally, "receive failed", zmq_strerror(errno));
          goto abandon;
        }
        s_handle_reply(&clients[c], frames, count, options, workload, tally);
        for (int i = 0; i < count && i < LOAD_FRAMES_MAX; i++)
          zmq_msg_close(&frames[i]);
        /* Refill at once: with window 1 the next call must not wait for the others. */
        if (s_fill_window(&clients[c], options, workload) < 0) {
          s_report_error(tally, "send failed", zmq_strerror(errno));
          goto abandon;
        }
      }
    }
  }

abandon:
  for (long c = 0; c < options->clients; c++) {
    tally->errors += clients[c].unsent + clients[c].in_flight_count;
    clients[c].unsent = clients[c].in_flight_count = 0;
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

static void s_print_results(const tally_t *tally, const workload_t *workload,
                            double seconds) {
  qsort(tally->latencies_ns, (size_t)tally->replies, sizeof *tally->latencies_ns,
        s_compare_u64);
  double rate = seconds > 0 ? (double)tally->replies / seconds : 0;
  printf("calls=%ld seconds=%.3f calls_per_s=%.0f p50_us=%.1f p99_us=%.1f "
         "mb_per_s=%.2f errors=%ld\n",
         tally->replies, seconds, rate,
         s_percentile_us(tally->latencies_ns, tally->replies, 0.50),
         s_percentile_us(tally->latencies_ns, tally->replies, 0.99),
         rate * (double)workload->payload_size / 1e6, tally->errors);
  fflush(stdout);
}

/* ---- main ------------------------------------------------------------- */

static int s_open_clients(void *context, client_t *clients, zmq_pollitem_t *items,
                          const options_t *options) {
  int on = 1, linger_ms = 0, unlimited = 0;
  for (long c = 0; c < options->clients; c++) {
    client_t *client = &clients[c];
    client->in_flight = calloc((size_t)options->window, sizeof *client->in_flight);
    client->socket = zmq_socket(context, ZMQ_ROUTER);
    /* No high-water mark: the window already bounds what is queued. */
    if (!client->in_flight || !client->socket
        || zmq_setsockopt(client->socket, ZMQ_PROBE_ROUTER, &on, sizeof on) < 0
        || zmq_setsockopt(client->socket, ZMQ_ROUTER_MANDATORY, &on, sizeof on) < 0
        || zmq_setsockopt(client->socket, ZMQ_LINGER, &linger_ms, sizeof linger_ms) < 0
        || zmq_setsockopt(client->socket, ZMQ_SNDHWM, &unlimited, sizeof unlimited) < 0
        || zmq_setsockopt(client->socket, ZMQ_RCVHWM, &unlimited, sizeof unlimited) < 0
        || zmq_connect(client->socket, options->endpoint) < 0) {
      fprintf(stderr, "bench_load: client %ld: %s: %s\n", c, options->endpoint,
              zmq_strerror(errno));
      return -1;
    }
    items[c] = (zmq_pollitem_t){ .socket = client->socket, .events = ZMQ_POLLIN };
  }
  return 0;
}

static void s_close_clients(client_t *clients, long count) {
  for (long c = 0; c < count; c++) {
    if (clients[c].socket)
      zmq_close(clients[c].socket);
    free(clients[c].in_flight);
  }
}

static const char s_usage[] =
  "usage: bench_load ENDPOINT SERVICE_NAME [--calls N] [--window W] [--clients C]\n"
  "                  [--payload BYTES] [--deadline SECONDS] [--interval MS]\n"
  "  --calls     measured calls, all clients together (default 10000)\n"
  "  --window    calls in flight per client (default 1)\n"
  "  --clients   client sockets, polled by one thread (default 1)\n"
  "  --payload   call echo(bin of BYTES) instead of hello('Charly') (default 0)\n"
  "  --deadline  bound on the whole run, warm-up included (default 120)\n"
  "  --interval  least milliseconds between two sends of a client (a paced\n"
  "              probe; default 0: as fast as replies come)\n";

int main(int argc, char **argv) {
  options_t options;
  if (s_parse_options(argc, argv, &options) < 0) {
    fputs(s_usage, stderr);
    return 2;
  }
  uint64_t deadline_ns = s_now_ns() + (uint64_t)(options.deadline_s * 1e9);
  workload_t workload;
  tally_t tally = { 0 };
  void *context = zmq_ctx_new();
  client_t *clients = calloc((size_t)options.clients, sizeof *clients);
  zmq_pollitem_t *items = calloc((size_t)options.clients, sizeof *items);
  tally.latencies_ns = malloc((size_t)options.calls * sizeof *tally.latencies_ns);
  if (s_workload_init(&workload, options.payload) < 0 || !clients || !items
      || !tally.latencies_ns) {
    fprintf(stderr, "bench_load: out of memory\n");
    return 1;
  }
  int status = 1;
  if (s_open_clients(context, clients, items, &options) < 0)
    goto done;

  /* Warm-up: one unmeasured call per client, resent until the handshake is done. */
  for (long c = 0; c < options.clients; c++)
    clients[c].unsent = 1;
  if (s_run_phase(clients, items, &options, &workload, &tally, deadline_ns, 1) < 0) {
    fprintf(stderr, "bench_load: warm-up did not complete (is the server at %s, "
                    "routing id '%s'?)\n", options.endpoint, options.service);
    tally.replies = 0;
    s_print_results(&tally, &workload, 0);
    goto done;
  }

  for (long c = 0; c < options.clients; c++)
    clients[c].unsent = options.calls / options.clients + (c < options.calls % options.clients);
  tally.replies = 0;
  tally.measuring = 1;
  uint64_t start_ns = s_now_ns();
  int phase = s_run_phase(clients, items, &options, &workload, &tally, deadline_ns, 0);
  double seconds = (double)(s_now_ns() - start_ns) / 1e9;
  s_print_results(&tally, &workload, seconds);
  status = phase == 0 && tally.errors == 0 ? 0 : 1;

done:
  s_close_clients(clients, options.clients);
  zmq_ctx_term(context);
  s_workload_destroy(&workload);
  free(tally.latencies_ns);
  free(items);
  free(clients);
  return status;
}
