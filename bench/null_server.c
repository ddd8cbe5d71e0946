/*  bench_null — the server that costs nothing: bench_load's own ceiling.

    One ROUTER socket, one thread. It answers every WORK with one OK built
    once at start: the right answer to bench_load's call (workload.h), the
    str "Hello Charly", or with --payload BYTES the bin bench_load echoes.
    It never decodes a body: a message is WORK when it has the six v1
    frames and type 0x03. The routing id and uuid frames go back as they
    came (zmq_msg_send takes the received frames), the constant frames are
    copied in, and the OK body is sent zero-copy from the one prebuilt
    buffer. What bench_load reaches against it is what bench_load can
    measure: a server running near that rate is measuring the generator.

    What it does not do: anything but WORK (a probe's [peer, ""] is read
    and ignored, any other message is ignored with a line on stderr), tell
    one call from another, or check anything a peer sends.

    Usage: bench_null ENDPOINT [--payload BYTES]   (e.g. tcp://127.0.0.1:*)
    Prints "ready <actual endpoint>" on stdout once bound; runs until
    SIGTERM or SIGINT, then exits 0.
*/

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "bench_server.h"
#include "workload.h"


enum { FRAME_PEER, FRAME_DELIMITER, FRAME_VERSION, FRAME_UUID, FRAME_TYPE, FRAME_BODY,
       FRAME_COUNT };
enum { TYPE_OK = 0x01, TYPE_WORK = 0x03 };

static int s_is_work(zmq_msg_t *frames, int count) {
  return count == FRAME_COUNT
      && zmq_msg_size(&frames[FRAME_TYPE]) == 1
      && *(unsigned char *)zmq_msg_data(&frames[FRAME_TYPE]) == TYPE_WORK;
}

/* Sends the prebuilt OK for one WORK. The peer and uuid frames are sent as
   received (zmq_msg_send takes them). Returns -1 only when the socket
   itself fails. */
static int s_answer(void *socket, zmq_msg_t *frames, unsigned char *answer,
                    size_t answer_size) {
  static const unsigned char ok_type = TYPE_OK;
  if (zmq_msg_send(&frames[FRAME_PEER], socket, ZMQ_SNDMORE) < 0) {
    /* EHOSTUNREACH: the peer left before its answer; nothing was sent. */
    return errno == EHOSTUNREACH ? 0 : -1;
  }
  /* zero-copy: the answer lives until after zmq_ctx_term */
  zmq_msg_t body;
  zmq_msg_init_data(&body, answer, answer_size, NULL, NULL);
  if (zmq_send(socket, "", 0, ZMQ_SNDMORE) < 0
      || zmq_send(socket, "v1", 2, ZMQ_SNDMORE) < 0
      || zmq_msg_send(&frames[FRAME_UUID], socket, ZMQ_SNDMORE) < 0
      || zmq_send(socket, &ok_type, 1, ZMQ_SNDMORE) < 0
      || zmq_msg_send(&body, socket, 0) < 0) {
    zmq_msg_close(&body);
    return -1;
  }
  return 0;
}

typedef struct null_answer {
  unsigned char *data;
  size_t size;
} null_answer_t;

static int s_on_message(void *socket, zmq_msg_t *frames, int count, void *ctx) {
  null_answer_t *answer = ctx;
  if (!s_is_work(frames, count))
    return 0;
  return s_answer(socket, frames, answer->data, answer->size) < 0 ? -1 : 1;
}

/* Builds the one answer: bench_load's right answer for this payload size. */
static unsigned char *s_answer_new(long payload_size, size_t *answer_size) {
  unsigned char *payload = NULL;
  if (payload_size > 0) {
    payload = malloc((size_t)payload_size);
    if (!payload)
      return NULL;
    workload_fill_payload(payload, (size_t)payload_size);
  }
  unsigned char *answer = workload_pack_answer(payload, (size_t)payload_size, answer_size);
  free(payload);
  return answer;
}

static int s_parse_args(int argc, char **argv, const char **endpoint, long *payload_size) {
  *payload_size = 0;
  if (argc == 2) {
    *endpoint = argv[1];
    return 0;
  }
  if (argc != 4 || strcmp(argv[2], "--payload") != 0)
    return -1;
  char *end;
  errno = 0;
  *payload_size = strtol(argv[3], &end, 10);
  *endpoint = argv[1];
  return errno || end == argv[3] || *end || *payload_size < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
  const char *bind_to;
  long payload_size;
  if (s_parse_args(argc, argv, &bind_to, &payload_size) < 0) {
    fprintf(stderr, "usage: bench_null ENDPOINT [--payload BYTES]   (e.g. tcp://127.0.0.1:*)\n");
    return 2;
  }
  if (bench_install_signal_handlers() < 0) {
    perror("bench_null: sigaction");
    return 1;
  }
  size_t answer_size;
  unsigned char *answer = s_answer_new(payload_size, &answer_size);
  if (!answer) {
    fprintf(stderr, "bench_null: out of memory\n");
    return 1;
  }
  void *context = bench_context_new();         /* pseud-lua's thread scheduling */
  char endpoint[256];
  void *socket = bench_server_socket(context, bind_to, endpoint, sizeof endpoint);
  if (!socket) {
    fprintf(stderr, "bench_null: %s: %s\n", bind_to, zmq_strerror(errno));
    zmq_ctx_term(context);
    free(answer);
    return 1;
  }
  printf("ready %s\n", endpoint);
  fflush(stdout);

  null_answer_t prebuilt = { answer, answer_size };
  int status = bench_serve(socket, "bench_null", s_on_message, &prebuilt);
  zmq_close(socket);
  zmq_ctx_term(context);
  free(answer);
  return status;
}
