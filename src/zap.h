/*
 * zap: the host's ZAP handler (ZeroMQ RFC 27). A REP socket on
 * inproc://zeromq.zap.01 in the host's context; libzmq asks it about every
 * PLAIN or CURVE handshake (and NULL ones on sockets with a ZAP domain).
 * zap.c parses and checks a request, asks `decide` synchronously, and sends
 * the reply; the user id it returns is what the peer's messages then carry
 * (zmq_msg_gets "User-Id"). No Lua here.
 */
#ifndef PSEUD_ZAP_H
#define PSEUD_ZAP_H

#include <stddef.h>

#include "loop.h"

typedef struct zap zap_t;

typedef struct zap_request {
    const char *domain;          /* NUL-terminated copies, valid during decide */
    const char *address;
    const char *mechanism;       /* "NULL", "PLAIN" or "CURVE" */
    const char *routing_id;  size_t routing_id_len;
    const char *username;    size_t username_len;   /* PLAIN */
    const char *password;    size_t password_len;   /* PLAIN */
    char client_key[41];         /* CURVE: the client's public key, Z85; else "" */
} zap_request_t;

/* Returns 1 to accept with `user_id` (NUL-terminated, copied), 0 to refuse
 * with `reason`. Must not block. */
typedef int (*zap_decide_fn)(void *ctx, const zap_request_t *req,
                             char *user_id, size_t user_id_size,
                             char *reason, size_t reason_size);

/* Bind the handler in `zmq_context` and watch it in `loop`; NULL with errno
 * (EADDRINUSE: another handler is bound in that context). */
zap_t *zap_new(void *zmq_context, loop_t *loop, zap_decide_fn decide, void *ctx);
void zap_destroy(zap_t **p);

#endif
