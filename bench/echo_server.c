/*  bench_echo_c — the ceiling that pseud-lua is measured against.

    The least a pseud v1 server can do: one ROUTER socket, one thread, no
    Lua, no registry, no auth, no timers. It answers WORK `hello(name)` with
    the str "Hello <name>" and `echo(x)` with x packed back as it came, and
    anything else it cannot serve with an ERROR `ServiceNotFoundError`, so a
    mistaken benchmark fails loudly instead of hanging. Whatever pseud-lua
    costs beyond this program is the price of the host.

    What it does not do: validate hostile input beyond what it needs to
    answer (it is a loopback benchmark peer, not a server to expose),
    heartbeats, HELLO/AUTHENTICATED, server-initiated calls.

    Usage: bench_echo_c ENDPOINT   (e.g. tcp://127.0.0.1:*)
    Prints "ready <actual endpoint>" on stdout once bound; runs until
    SIGTERM or SIGINT, then exits 0. With BENCH_CURVE_SECRET set (a Z85
    secret key, 40 characters) it is a CURVE server with that key (no ZAP:
    any client key is let in), to measure encryption beside pseud-lua's
    trusted_curve. With BENCH_POLL_MONITOR=1 it waits as a host watching
    two sockets must (poll(2) on ZMQ_FDs, ZMQ_EVENTS; bench_serve_polled)
    instead of in a blocking receive: the floor of such a host's system
    calls per call.
*/

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <zmq.h>

#include "bench_server.h"


enum { FRAME_PEER, FRAME_DELIMITER, FRAME_VERSION, FRAME_UUID, FRAME_TYPE, FRAME_BODY,
       FRAME_COUNT };
enum { TYPE_OK = 0x01, TYPE_WORK = 0x03, TYPE_ERROR = 0x10 };

static int s_frame_equals(zmq_msg_t *frame, const char *bytes, size_t size) {
  return zmq_msg_size(frame) == size && memcmp(zmq_msg_data(frame), bytes, size) == 0;
}

static int s_object_is_str(const msgpack_object *object, const char *text) {
  size_t size = strlen(text);
  return object->type == MSGPACK_OBJECT_STR && object->via.str.size == size
      && memcmp(object->via.str.ptr, text, size) == 0;
}

/* Packs the answer to one WORK body into `packer`; returns the reply type. */
static int s_pack_answer(msgpack_packer *packer, const char *body, size_t size,
                         msgpack_unpacked *work) {
  if (msgpack_unpack_next(work, body, size, NULL) != MSGPACK_UNPACK_SUCCESS
      || work->data.type != MSGPACK_OBJECT_ARRAY || work->data.via.array.size != 3
      || work->data.via.array.ptr[1].type != MSGPACK_OBJECT_ARRAY) {
    msgpack_pack_array(packer, 3);
    msgpack_pack_str_with_body(packer, "ProtocolError", 13);
    msgpack_pack_str_with_body(packer, "WORK body is not [name, args, kwargs]", 37);
    msgpack_pack_str_with_body(packer, "", 0);
    return TYPE_ERROR;
  }
  const msgpack_object *name = &work->data.via.array.ptr[0];
  const msgpack_object_array *args = &work->data.via.array.ptr[1].via.array;

  if (s_object_is_str(name, "hello") && args->size == 1
      && args->ptr[0].type == MSGPACK_OBJECT_STR) {
    const msgpack_object_str *who = &args->ptr[0].via.str;
    msgpack_pack_str(packer, 6 + who->size);
    msgpack_pack_str_body(packer, "Hello ", 6);
    msgpack_pack_str_body(packer, who->ptr, who->size);
    return TYPE_OK;
  }
  if (s_object_is_str(name, "echo") && args->size == 1) {
    msgpack_pack_object(packer, args->ptr[0]);
    return TYPE_OK;
  }
  msgpack_pack_array(packer, 3);
  msgpack_pack_str_with_body(packer, "ServiceNotFoundError", 20);
  msgpack_pack_str_with_body(packer, "bench_echo_c serves hello(name) and echo(x)", 43);
  msgpack_pack_str_with_body(packer, "", 0);
  return TYPE_ERROR;
}

/* Answers one WORK message. The peer, uuid frames are sent back as received
   (zmq_msg_send takes them); the body is copied out of `reply`. Returns -1
   only when the socket itself fails. */
static int s_answer_work(void *socket, zmq_msg_t *frames, msgpack_sbuffer *reply,
                         msgpack_unpacked *work) {
  msgpack_packer packer;
  msgpack_sbuffer_clear(reply);
  msgpack_packer_init(&packer, reply, msgpack_sbuffer_write);
  unsigned char type = (unsigned char)s_pack_answer(
      &packer, zmq_msg_data(&frames[FRAME_BODY]), zmq_msg_size(&frames[FRAME_BODY]), work);

  if (zmq_msg_send(&frames[FRAME_PEER], socket, ZMQ_SNDMORE) < 0) {
    /* EHOSTUNREACH: the peer left before its answer; nothing was sent. */
    return errno == EHOSTUNREACH ? 0 : -1;
  }
  if (zmq_send(socket, "", 0, ZMQ_SNDMORE) < 0
      || zmq_send(socket, "v1", 2, ZMQ_SNDMORE) < 0
      || zmq_msg_send(&frames[FRAME_UUID], socket, ZMQ_SNDMORE) < 0
      || zmq_send(socket, &type, 1, ZMQ_SNDMORE) < 0
      || zmq_send(socket, reply->data, reply->size, 0) < 0)
    return -1;
  return 0;
}

static int s_is_work(zmq_msg_t *frames, int count) {
  return count == FRAME_COUNT
      && zmq_msg_size(&frames[FRAME_DELIMITER]) == 0
      && s_frame_equals(&frames[FRAME_VERSION], "v1", 2)
      && zmq_msg_size(&frames[FRAME_UUID]) == 16
      && zmq_msg_size(&frames[FRAME_TYPE]) == 1
      && *(unsigned char *)zmq_msg_data(&frames[FRAME_TYPE]) == TYPE_WORK;
}

typedef struct echo_buffers {
  msgpack_sbuffer reply;
  msgpack_unpacked work;
} echo_buffers_t;

static int s_on_message(void *socket, zmq_msg_t *frames, int count, void *ctx) {
  echo_buffers_t *b = ctx;
  if (!s_is_work(frames, count))
    return 0;
  return s_answer_work(socket, frames, &b->reply, &b->work) < 0 ? -1 : 1;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: bench_echo_c ENDPOINT   (e.g. tcp://127.0.0.1:*)\n");
    return 2;
  }
  /* The allocator settings of pseud-lua (src/main.c): keep 8 MiB of free
   * heap rather than trimming and re-faulting it on every large message, so
   * the 64 KiB echo compares like with like. */
  mallopt(M_TRIM_THRESHOLD, 8 << 20);
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  if (bench_install_signal_handlers() < 0) {
    perror("bench_echo_c: sigaction");
    return 1;
  }
  void *context = bench_context_new();         /* and pseud-lua's thread scheduling */
  char endpoint[256];
  void *socket = bench_server_socket(context, argv[1], endpoint, sizeof endpoint);
  if (!socket) {
    fprintf(stderr, "bench_echo_c: %s: %s\n", argv[1], zmq_strerror(errno));
    zmq_ctx_term(context);
    return 1;
  }
  printf("ready %s\n", endpoint);
  fflush(stdout);

  echo_buffers_t buffers;
  msgpack_sbuffer_init(&buffers.reply);
  msgpack_unpacked_init(&buffers.work);
  const char *polled = getenv("BENCH_POLL_MONITOR");
  int status = polled && strcmp(polled, "1") == 0
                   ? bench_serve_polled(context, socket, "bench_echo_c", s_on_message, &buffers)
                   : bench_serve(socket, "bench_echo_c", s_on_message, &buffers);
  msgpack_unpacked_destroy(&buffers.work);
  msgpack_sbuffer_destroy(&buffers.reply);
  zmq_close(socket);
  zmq_ctx_term(context);
  return status;
}
