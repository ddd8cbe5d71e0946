/*
 * zap: the host's ZAP handler (ZeroMQ RFC 27). A ROUTER socket on
 * inproc://zeromq.zap.01 in the host's context; libzmq asks it about every
 * PLAIN or CURVE handshake (and NULL ones on sockets with a ZAP domain).
 * zap.c parses and checks a request and asks `decide`, which answers at once
 * or later (a password check runs on another thread): a ROUTER, unlike REP,
 * lets other requests be read while one waits. The user id of a 200 answer
 * is what the peer's messages then carry (zmq_msg_gets "User-Id").
 * Status codes as RFC 27: 200 accepted, 300 temporary failure, 400 refused,
 * 500 internal error. No Lua here.
 */
#ifndef PSEUD_ZAP_H
#define PSEUD_ZAP_H

#include <stddef.h>

#include "loop.h"

#define ZAP_MAX_TEXT     255     /* bytes of a domain, address, user id or status text */
#define ZAP_MAX_PARTS    8

enum zap_status {
    ZAP_PENDING   = 0,           /* decide kept the request: zap_answer later */
    ZAP_OK        = 200,
    ZAP_TEMPORARY = 300,
    ZAP_REFUSED   = 400,
    ZAP_INTERNAL  = 500
};

typedef struct zap zap_t;
typedef struct zap_pending zap_pending_t;   /* a request waiting for its answer */

typedef struct zap_request {
    char domain[ZAP_MAX_TEXT + 1];     /* NUL-terminated; longer ones are refused, never cut */
    char address[ZAP_MAX_TEXT + 1];
    char mechanism[8];                 /* "NULL", "PLAIN" or "CURVE" */
    const char *routing_id;  size_t routing_id_len;   /* views into the request */
    const char *username;    size_t username_len;     /* PLAIN */
    const char *password;    size_t password_len;     /* PLAIN */
    char client_key[41];               /* CURVE: the client's public key, Z85; else "" */
} zap_request_t;

/* One part of a request, as received. */
typedef struct zap_part {
    const void *data;
    size_t size;
} zap_part_t;

/* Parse the parts of a request after its envelope: version "1.0", request
 * id, domain, address, identity, mechanism, credentials. Returns 0, or -1
 * with *why saying what is wrong. Views point into `parts`. */
int zap_parse(const zap_part_t *parts, int n, zap_request_t *req, const char **why);

/* Decide on `req`: return ZAP_OK with `user_id` (NUL-terminated, at most
 * ZAP_MAX_TEXT bytes), another status with `reason`, or ZAP_PENDING after
 * keeping `pending` for zap_answer. Must not block. */
typedef int (*zap_decide_fn)(void *ctx, const zap_request_t *req, zap_pending_t *pending,
                             char *user_id, char *reason);

/* Bind the handler in `zmq_context` and watch it in `loop`; NULL with errno
 * (EADDRINUSE: another handler is bound in that context). */
zap_t *zap_new(void *zmq_context, loop_t *loop, zap_decide_fn decide, void *ctx);
/* Refuses (500) every request still pending, then frees; takes NULL, clears *p. */
void zap_destroy(zap_t **p);

/* Answer a pending request (and free it): `user_id` for ZAP_OK, `text` the
 * status text. */
void zap_answer(zap_t *z, zap_pending_t *pending, int status, const char *user_id, const char *text);

#endif
