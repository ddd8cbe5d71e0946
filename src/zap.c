/*
 * zap: answer ZAP requests (see zap.h). A request that is not well formed
 * (wrong version, too few parts, bad credentials shape, a text field too long
 * to keep) is refused with 400 without asking anyone. Secrets (passwords)
 * are never logged or kept past the decision.
 *
 * libzmq's ZAP client talks like a REQ socket: [delimiter, version, ...]; a
 * ROUTER handler sees [pipe id, "", version, ...] and answers the same way.
 */
#include "zap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "frame.h"

#define ZAP_ENDPOINT  "inproc://zeromq.zap.01"
#define ZAP_ENVELOPE  2          /* pipe id, empty delimiter */

struct zap_pending {
    zap_pending_t *prev, *next;
    size_t envelope_len, request_id_len;
    char data[];                 /* pipe id, then request id */
};

struct zap {
    void *socket;                /* ROUTER */
    loop_t *loop;
    zap_decide_fn decide;
    void *ctx;
    zap_pending_t *pending;      /* waiting for zap_answer */
};

/* Copy part i into a NUL-terminated field of `size` bytes; -1 when it does
 * not fit or holds a NUL (refused, never cut). */
static int s_text(const zap_part_t *p, char *out, size_t size) {
    if (p->size >= size || memchr(p->data, '\0', p->size)) return -1;
    memcpy(out, p->data, p->size);
    out[p->size] = '\0';
    return 0;
}

int zap_parse(const zap_part_t *parts, int n, zap_request_t *req, const char **why) {
    memset(req, 0, sizeof *req);
    *why = "malformed ZAP request";
    if (n < 6) { *why = "ZAP request has too few parts"; return -1; }
    if (parts[0].size != 3 || memcmp(parts[0].data, "1.0", 3) != 0) {
        *why = "ZAP version is not 1.0";
        return -1;
    }
    if (s_text(&parts[2], req->domain, sizeof req->domain) < 0 ||
        s_text(&parts[3], req->address, sizeof req->address) < 0 ||
        s_text(&parts[5], req->mechanism, sizeof req->mechanism) < 0) {
        *why = "ZAP domain, address or mechanism too long";
        return -1;
    }
    req->routing_id = parts[4].data;
    req->routing_id_len = parts[4].size;
    if (strcmp(req->mechanism, "PLAIN") == 0) {
        if (n != 8) { *why = "PLAIN request without username and password"; return -1; }
        req->username = parts[6].data;
        req->username_len = parts[6].size;
        req->password = parts[7].data;
        req->password_len = parts[7].size;
        return 0;
    }
    if (strcmp(req->mechanism, "CURVE") == 0) {
        if (n != 7 || parts[6].size != 32 ||
            zmq_z85_encode(req->client_key, (const uint8_t *)parts[6].data, 32) == NULL) {
            *why = "CURVE request without a 32-byte client key";
            return -1;
        }
        return 0;
    }
    if (strcmp(req->mechanism, "NULL") == 0 && n == 6) return 0;
    *why = "unknown ZAP mechanism";
    return -1;
}

static void s_send(zap_t *z, const void *envelope, size_t envelope_len,
                   const void *request_id, size_t request_id_len,
                   int status, const char *text, const char *user_id) {
    char code[4] = "500";
    if (status == ZAP_OK) memcpy(code, "200", 3);
    else if (status == ZAP_TEMPORARY) memcpy(code, "300", 3);
    else if (status == ZAP_REFUSED) memcpy(code, "400", 3);
    void *socket = z->socket;
    loop_touch(z->loop, socket);                 /* it may be answered outside its handler */
    size_t tl = strnlen(text, ZAP_MAX_TEXT), ul = status == ZAP_OK ? strnlen(user_id, ZAP_MAX_TEXT) : 0;
    /* a pipe that is gone takes nothing: ROUTER drops it */
    frame_send_part(socket, envelope, envelope_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    frame_send_part(socket, "", 0, ZMQ_SNDMORE);
    frame_send_part(socket, "1.0", 3, ZMQ_SNDMORE);
    frame_send_part(socket, request_id, request_id_len, ZMQ_SNDMORE);
    frame_send_part(socket, code, 3, ZMQ_SNDMORE);
    frame_send_part(socket, text, tl, ZMQ_SNDMORE);
    frame_send_part(socket, user_id, ul, ZMQ_SNDMORE);
    frame_send_part(socket, "", 0, 0);                  /* metadata: none */
}

static void s_handle(zap_t *z) {
    zmq_msg_t parts[ZAP_ENVELOPE + ZAP_MAX_PARTS];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t scratch, *part = n < ZAP_ENVELOPE + ZAP_MAX_PARTS ? &parts[n] : &scratch;
        zmq_msg_init(part);
        if (frame_recv_part(part, z->socket, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(part);
            if (n == 0) return;
            break;
        }
        more = zmq_msg_more(part);
        if (part == &scratch) { zmq_msg_close(part); n = ZAP_ENVELOPE + ZAP_MAX_PARTS + 1; }
        else n++;
    }
    int kept = n < ZAP_ENVELOPE + ZAP_MAX_PARTS ? n : ZAP_ENVELOPE + ZAP_MAX_PARTS;
    zap_part_t body[ZAP_MAX_PARTS];
    int nbody = 0;
    for (int i = ZAP_ENVELOPE; i < kept; i++)
        body[nbody++] = (zap_part_t){ zmq_msg_data(&parts[i]), zmq_msg_size(&parts[i]) };
    if (n > ZAP_ENVELOPE + ZAP_MAX_PARTS) nbody = ZAP_MAX_PARTS + 1;   /* too many: refused */
    if (kept >= 2 && zmq_msg_size(&parts[1]) == 0) {
        zap_request_t req;
        const char *why;
        char user_id[ZAP_MAX_TEXT + 1] = "", reason[ZAP_MAX_TEXT + 1] = "";
        int status = ZAP_REFUSED;
        const void *rid = nbody >= 2 ? body[1].data : "";
        size_t rid_len = nbody >= 2 ? body[1].size : 0;
        zap_pending_t *pending = malloc(sizeof *pending + zmq_msg_size(&parts[0]) + rid_len);
        if (!pending) {
            status = ZAP_INTERNAL;
            memcpy(reason, "out of memory", 14);
        } else if (nbody > ZAP_MAX_PARTS || zap_parse(body, nbody, &req, &why) < 0) {
            snprintf(reason, sizeof reason, "%s", nbody > ZAP_MAX_PARTS ? "ZAP request has too many parts" : why);
        } else {
            pending->envelope_len = zmq_msg_size(&parts[0]);
            pending->request_id_len = rid_len;
            memcpy(pending->data, zmq_msg_data(&parts[0]), pending->envelope_len);
            memcpy(pending->data + pending->envelope_len, rid, rid_len);
            status = z->decide(z->ctx, &req, pending, user_id, reason);
        }
        if (status == ZAP_PENDING) {
            pending->prev = NULL;
            pending->next = z->pending;
            if (z->pending) z->pending->prev = pending;
            z->pending = pending;
        } else {
            free(pending);
            s_send(z, zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), rid, rid_len,
                   status, status == ZAP_OK ? "OK" : reason, user_id);
        }
    }
    /* else: not a request from libzmq's ZAP client, no envelope to answer */
    for (int i = 0; i < kept; i++) zmq_msg_close(&parts[i]);
}

void zap_answer(zap_t *z, zap_pending_t *p, int status, const char *user_id, const char *text) {
    if (p->prev) p->prev->next = p->next; else z->pending = p->next;
    if (p->next) p->next->prev = p->prev;
    s_send(z, p->data, p->envelope_len, p->data + p->envelope_len, p->request_id_len,
           status, text, user_id ? user_id : "");
    free(p);
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
    z->socket = zmq_socket(zmq_context, ZMQ_ROUTER);
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

void zap_destroy(zap_t **pp) {
    if (!pp || !*pp) return;
    zap_t *z = *pp;
    *pp = NULL;
    while (z->pending) zap_answer(z, z->pending, ZAP_INTERNAL, NULL, "shutting down");
    loop_remove_socket(z->loop, z->socket);
    zmq_close(z->socket);
    free(z);
}
