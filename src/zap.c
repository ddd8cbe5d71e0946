/*
 * zap: answer ZAP requests (see zap.h). A request that is not well formed
 * (wrong version, too few parts, bad credentials shape) is refused with 400
 * without asking anyone. Secrets (passwords) are never logged or kept.
 */
#include "zap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#define ZAP_ENDPOINT  "inproc://zeromq.zap.01"
#define ZAP_MAX_PARTS 8

struct zap {
    void *socket;                /* REP */
    loop_t *loop;
    zap_decide_fn decide;
    void *ctx;
};

static void s_send_reply(void *socket, const zmq_msg_t *request_id, const char *code,
                         const char *text, const char *user_id) {
    zmq_send(socket, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(socket, zmq_msg_data((zmq_msg_t *)request_id), zmq_msg_size((zmq_msg_t *)request_id),
             ZMQ_SNDMORE);
    zmq_send(socket, code, strlen(code), ZMQ_SNDMORE);
    zmq_send(socket, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(socket, user_id, strlen(user_id), ZMQ_SNDMORE);
    zmq_send(socket, "", 0, 0);
}

/* Copy part i as a C string into buf (truncated). */
static const char *s_text(zmq_msg_t *parts, int i, char *buf, size_t size) {
    size_t n = zmq_msg_size(&parts[i]);
    if (n >= size) n = size - 1;
    memcpy(buf, zmq_msg_data(&parts[i]), n);
    buf[n] = '\0';
    return buf;
}

static void s_handle(zap_t *z) {
    zmq_msg_t parts[ZAP_MAX_PARTS];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t scratch, *part = n < ZAP_MAX_PARTS ? &parts[n] : &scratch;
        zmq_msg_init(part);
        if (zmq_msg_recv(part, z->socket, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(part);
            if (n == 0) return;
            break;
        }
        more = zmq_msg_more(part);
        if (part == &scratch) zmq_msg_close(part); else n++;
    }
    char version[8], domain[256], address[256], mechanism[16];
    zap_request_t req;
    memset(&req, 0, sizeof req);
    int ok = n >= 6 && strcmp(s_text(parts, 0, version, sizeof version), "1.0") == 0;
    if (ok) {
        req.domain = s_text(parts, 2, domain, sizeof domain);
        req.address = s_text(parts, 3, address, sizeof address);
        req.routing_id = zmq_msg_data(&parts[4]);
        req.routing_id_len = zmq_msg_size(&parts[4]);
        req.mechanism = s_text(parts, 5, mechanism, sizeof mechanism);
        if (strcmp(req.mechanism, "PLAIN") == 0) {
            ok = n == 8;
            if (ok) {
                req.username = zmq_msg_data(&parts[6]);
                req.username_len = zmq_msg_size(&parts[6]);
                req.password = zmq_msg_data(&parts[7]);
                req.password_len = zmq_msg_size(&parts[7]);
            }
        } else if (strcmp(req.mechanism, "CURVE") == 0) {
            ok = n == 7 && zmq_msg_size(&parts[6]) == 32 &&
                 zmq_z85_encode(req.client_key, zmq_msg_data(&parts[6]), 32) != NULL;
        } else {
            ok = strcmp(req.mechanism, "NULL") == 0 && n == 6;
        }
    }
    char user_id[256] = "", reason[256] = "malformed ZAP request";
    int accepted = ok && z->decide(z->ctx, &req, user_id, sizeof user_id, reason, sizeof reason);
    /* REP must answer every request, even one too short to have an id */
    zmq_msg_t no_id;
    zmq_msg_init(&no_id);
    const zmq_msg_t *id = n >= 2 ? &parts[1] : &no_id;
    if (accepted) s_send_reply(z->socket, id, "200", "OK", user_id);
    else s_send_reply(z->socket, id, "400", reason, "");
    zmq_msg_close(&no_id);
    for (int i = 0; i < n; i++) zmq_msg_close(&parts[i]);
}

static void s_on_readable(loop_t *loop, void *socket, void *arg) {
    (void)loop; (void)socket;
    zap_t *z = arg;
    for (int i = 0; i < 64; i++) {
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(z->socket, ZMQ_EVENTS, &events, &len) < 0 || !(events & ZMQ_POLLIN)) break;
        s_handle(z);
    }
}

zap_t *zap_new(void *zmq_context, loop_t *loop, zap_decide_fn decide, void *ctx) {
    zap_t *z = calloc(1, sizeof *z);
    if (!z) return NULL;
    z->loop = loop;
    z->decide = decide;
    z->ctx = ctx;
    z->socket = zmq_socket(zmq_context, ZMQ_REP);
    int linger = 0;
    if (!z->socket || zmq_setsockopt(z->socket, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_bind(z->socket, ZAP_ENDPOINT) < 0 ||
        loop_add_socket(loop, z->socket, s_on_readable, z) < 0) {
        int e = errno;
        if (z->socket) zmq_close(z->socket);
        free(z);
        errno = e;
        return NULL;
    }
    return z;
}

void zap_destroy(zap_t **p) {
    if (!p || !*p) return;
    zap_t *z = *p;
    loop_remove_socket(z->loop, z->socket);
    zmq_close(z->socket);
    free(z);
    *p = NULL;
}
