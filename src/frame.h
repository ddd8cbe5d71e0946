/*
 * frame: pseud protocol v1 messages on a ZeroMQ ROUTER socket.
 *
 * A message is [routing_id, "", "v1", uuid, type, body] (DESIGN.md section 1).
 * frame_recv() takes every part of one message (keeping the first few, counting
 * the rest); frame_decode() says what it is without trusting any of it.
 * frame_send() writes one message without blocking. No Lua here.
 */
#ifndef PSEUD_FRAME_H
#define PSEUD_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#define FRAME_VERSION     "v1"
#define FRAME_UUID_SIZE   16
#define FRAME_MAX_PARTS   8        /* parts kept; more are drained and counted */
#define FRAME_MAX_ID      255      /* longest routing id served (DESIGN.md section 4):
                                      a peer may announce any length, longer is refused */

enum frame_type {
    FRAME_OK            = 0x01,
    FRAME_HELLO         = 0x02,
    FRAME_WORK          = 0x03,
    FRAME_AUTHENTICATED = 0x04,
    FRAME_HEARTBEAT     = 0x06,
    FRAME_ERROR         = 0x10,
    FRAME_UNAUTHORIZED  = 0x11
};

/* What frame_decode() found. */
enum frame_kind {
    FRAME_KIND_MESSAGE,    /* a well-formed pseud v1 message */
    FRAME_KIND_PROBE,      /* [routing_id, ""]: a peer's ZMQ_PROBE_ROUTER hello */
    FRAME_KIND_INVALID,    /* malformed; `reason` says why, `uuid` set when usable */
    FRAME_KIND_BAD_ID      /* a routing id over FRAME_MAX_ID bytes: dropped unanswered */
};

typedef struct frame_message {
    zmq_msg_t parts[FRAME_MAX_PARTS];  /* received parts, `kept` of them open */
    int kept;                          /* parts initialised in `parts` */
    int count;                         /* parts the message had in all */
    /* views into `parts`, valid until frame_close() (set by frame_decode) */
    const char *peer;  size_t peer_len;       /* routing id */
    const uint8_t *uuid;                      /* FRAME_UUID_SIZE bytes, or NULL */
    size_t uuid_len;                          /* 16, or 0 for HEARTBEAT */
    int type;                                 /* type byte, -1 when absent */
    const char *body;  size_t body_len;
    const char *user_id;                      /* ZMQ "User-Id" property, or NULL */
    int fd;                                   /* the connection it came on (ZMQ_SRCFD), or -1 */
    const char *reason;                       /* why FRAME_KIND_INVALID */
    /* set by the endpoint from its directory, valid during its callback:
     * the sender's identity (DESIGN.md section 4.1) */
    const char *user;  size_t user_len;
    int logged_in;                            /* the sender passed a HELLO */
    uint64_t serial;                          /* its directory entry's serial, or 0 */
    size_t charged;                           /* WORK: bytes held against its budget */
    int idle_sender;                          /* WORK: its sender had no other call in progress */
} frame_message_t;

/* Receive one whole message without blocking. Returns 0, or -1 with errno
 * (EAGAIN when nothing is there). On 0 call frame_close() when done. */
int frame_recv(void *socket, frame_message_t *m);

/* Classify and validate a received message; fills the views. */
enum frame_kind frame_decode(frame_message_t *m);
/* The same; `with_user_id` 0 skips reading the "User-Id" property (NULL),
 * for a socket with no security mechanism and no ZAP domain. */
enum frame_kind frame_decode_from(frame_message_t *m, int with_user_id);

/* Close every part; safe to call twice. */
void frame_close(frame_message_t *m);

/* Send [peer, "", "v1", uuid, type, body] without blocking. `uuid` may be NULL
 * with uuid_len 0 (HEARTBEAT). Returns 0, or -1 with errno: EHOSTUNREACH (no
 * such peer: ROUTER_MANDATORY), EAGAIN (its queue is full); nothing was sent. */
int frame_send(void *socket, const char *peer, size_t peer_len,
               const uint8_t *uuid, size_t uuid_len, int type,
               const void *body, size_t body_len);

/* frame_send with a body the caller built (zero-copy, zmq_msg_init_data):
 * taken on success (0); on -1 (errno as frame_send) it is still the
 * caller's to close. */
int frame_send_msg(void *socket, const char *peer, size_t peer_len,
                   const uint8_t *uuid, size_t uuid_len, int type, zmq_msg_t *body);

/* One part of any multipart message (ZAP, the monitor, the worker link
 * too), retried while a signal interrupts it (EINTR): a part given up
 * halfway through a message cuts it, and the rest reads as a message of
 * its own. zmq_send / zmq_msg_recv otherwise; for a first part with
 * ZMQ_DONTWAIT they fail as those do (EAGAIN, EHOSTUNREACH). */
int frame_send_part(void *socket, const void *data, size_t len, int flags);
int frame_recv_part(zmq_msg_t *part, void *socket, int flags);

/* Write a fresh random uuid4 (libuuid) to out. */
void frame_new_uuid(uint8_t out[FRAME_UUID_SIZE]);

/* 1 for the type bytes of DESIGN.md section 1. */
int frame_type_known(int type);

#endif
