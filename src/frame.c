/*
 * frame: receive, validate and send pseud v1 messages (see frame.h).
 *
 * Nothing a peer sends is trusted: part counts, sizes and the type byte are
 * all checked here, so the endpoint above sees either a well-formed message,
 * a probe, or an invalid one with a reason (and the uuid when one can be
 * answered).
 */
#include "frame.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include <uuid/uuid.h>

/* A signal (SIGHUP, SIGTERM) can fail any zmq_msg_recv or zmq_send with
 * EINTR, the later parts of a message too: giving up there cut the message
 * (a lost call or reply, and the rest read as a message of its own). Later
 * parts are there already (a message arrives whole) and queue at once
 * (the first part decided), so they are retried; so is a first part, which
 * is all or nothing. */
int frame_send_part(void *socket, const void *data, size_t len, int flags) {
    int rc;
    while ((rc = zmq_send(socket, data, len, flags)) < 0 && errno == EINTR) {}
    return rc;
}

int frame_recv_part(zmq_msg_t *part, void *socket, int flags) {
    int rc;
    while ((rc = zmq_msg_recv(part, socket, flags)) < 0 && errno == EINTR) {}
    return rc;
}

int frame_recv(void *socket, frame_message_t *m) {
    int more = 1;
    m->kept = 0;
    m->count = 0;
    while (more) {
        zmq_msg_t scratch, *part = m->kept < FRAME_MAX_PARTS ? &m->parts[m->kept] : &scratch;
        zmq_msg_init(part);
        /* later parts of a message arrive at once: only the first may be EAGAIN */
        if (frame_recv_part(part, socket, m->count == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            int e = errno;
            zmq_msg_close(part);
            if (m->count == 0) { errno = e; return -1; }
            break;                     /* the socket failed mid-message (ETERM): keep what came */
        }
        more = zmq_msg_more(part);
        m->count++;
        if (part == &scratch) zmq_msg_close(&scratch);
        else m->kept++;
    }
    return 0;
}

void frame_close(frame_message_t *m) {
    for (int i = 0; i < m->kept; i++) zmq_msg_close(&m->parts[i]);
    m->kept = 0;
}

/* The fd a message came on. libzmq's zmq_msg_get(ZMQ_SRCFD) is an atoi of
 * its "__fd" property; reading the property and its digits here saves
 * libc's strtol, about 200 instructions a message. Anything but plain
 * digits (another libzmq) falls back to the public call. */
static int s_source_fd(zmq_msg_t *meta) {
    const char *s = zmq_msg_gets(meta, "__fd");
    if (!s) return -1;                            /* no fd (inproc), as libzmq says */
    if (*s == '\0') return zmq_msg_get(meta, ZMQ_SRCFD);
    int fd = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (fd > (INT_MAX - 9) / 10) return zmq_msg_get(meta, ZMQ_SRCFD);
        fd = fd * 10 + (*s - '0');
    }
    return *s == '\0' ? fd : zmq_msg_get(meta, ZMQ_SRCFD);
}

static const char *s_data(frame_message_t *m, int i, size_t *len) {
    *len = zmq_msg_size(&m->parts[i]);
    return (const char *)zmq_msg_data(&m->parts[i]);
}

int frame_type_known(int type) {
    switch (type) {
    case FRAME_OK: case FRAME_HELLO: case FRAME_WORK: case FRAME_AUTHENTICATED:
    case FRAME_HEARTBEAT: case FRAME_ERROR: case FRAME_UNAUTHORIZED:
        return 1;
    default:
        return 0;
    }
}

enum frame_kind frame_decode_from(frame_message_t *m, int with_user_id) {
    size_t len;
    m->peer = NULL; m->peer_len = 0;
    m->uuid = NULL; m->uuid_len = 0;
    m->type = -1;
    m->body = NULL; m->body_len = 0;
    m->user_id = NULL;
    m->fd = -1;
    m->reason = NULL;
    m->user = NULL; m->user_len = 0;
    m->logged_in = 0;
    if (m->kept == 0) { m->reason = "empty message"; return FRAME_KIND_INVALID; }
    m->peer = s_data(m, 0, &m->peer_len);
    if (m->peer_len == 0 || m->peer_len > FRAME_MAX_ID) {
        m->reason = "routing id is empty or over 255 bytes";
        return FRAME_KIND_BAD_ID;
    }
    /* the routing id part is made by the ROUTER and carries no metadata */
    zmq_msg_t *meta = &m->parts[m->kept > 1 ? 1 : 0];
    /* each metadata read is a map lookup in libzmq (~600 instructions):
     * User-Id only exists where a security mechanism or ZAP is on */
    if (with_user_id) m->user_id = zmq_msg_gets(meta, "User-Id");
    m->fd = s_source_fd(meta);
    if (m->count == 2 && zmq_msg_size(&m->parts[1]) == 0)
        return FRAME_KIND_PROBE;
    /* Pick out uuid and type where they would be, so even a malformed message
     * can be answered by uuid when it plainly asked for something. */
    if (m->kept >= 4) {
        const char *u = s_data(m, 3, &len);
        if (len == FRAME_UUID_SIZE) { m->uuid = (const uint8_t *)u; m->uuid_len = len; }
    }
    if (m->kept >= 5) {
        const char *t = s_data(m, 4, &len);
        if (len == 1) m->type = (unsigned char)t[0];
    }
    if (m->count != 6) {
        m->reason = m->count < 6 ? "too few frames" : "too many frames";
        return FRAME_KIND_INVALID;
    }
    if (zmq_msg_size(&m->parts[1]) != 0) {
        m->reason = "no empty delimiter frame";
        return FRAME_KIND_INVALID;
    }
    const char *v = s_data(m, 2, &len);
    if (len != 2 || memcmp(v, FRAME_VERSION, 2) != 0) {
        m->reason = "unsupported protocol version";
        return FRAME_KIND_INVALID;
    }
    if (m->type < 0) {
        m->reason = "type frame is not one byte";
        return FRAME_KIND_INVALID;
    }
    if (!frame_type_known(m->type)) {
        m->reason = "unknown message type";
        return FRAME_KIND_INVALID;
    }
    size_t ulen = zmq_msg_size(&m->parts[3]);
    if (m->type == FRAME_HEARTBEAT) {
        if (ulen != 0 && ulen != FRAME_UUID_SIZE) {
            m->reason = "uuid frame is neither empty nor 16 bytes";
            return FRAME_KIND_INVALID;
        }
    } else if (ulen != FRAME_UUID_SIZE) {
        m->reason = "uuid frame is not 16 bytes";
        return FRAME_KIND_INVALID;
    }
    m->body = s_data(m, 5, &m->body_len);
    return FRAME_KIND_MESSAGE;
}

enum frame_kind frame_decode(frame_message_t *m) { return frame_decode_from(m, 1); }

/* Every part but the body. With ROUTER_MANDATORY an unroutable peer or a
 * full queue fails on the first part, before anything is queued, so the
 * message is all or nothing. */
static int s_send_head(void *socket, const char *peer, size_t peer_len,
                       const uint8_t *uuid, size_t uuid_len, int type) {
    unsigned char t = (unsigned char)type;
    if (frame_send_part(socket, peer, peer_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -1;
    frame_send_part(socket, "", 0, ZMQ_SNDMORE);
    frame_send_part(socket, FRAME_VERSION, 2, ZMQ_SNDMORE);
    frame_send_part(socket, uuid_len ? (const void *)uuid : "", uuid_len, ZMQ_SNDMORE);
    frame_send_part(socket, &t, 1, ZMQ_SNDMORE);
    return 0;
}

int frame_send(void *socket, const char *peer, size_t peer_len,
               const uint8_t *uuid, size_t uuid_len, int type,
               const void *body, size_t body_len) {
    if (s_send_head(socket, peer, peer_len, uuid, uuid_len, type) < 0) return -1;
    frame_send_part(socket, body_len ? body : "", body_len, 0);
    return 0;
}

int frame_send_msg(void *socket, const char *peer, size_t peer_len,
                   const uint8_t *uuid, size_t uuid_len, int type, zmq_msg_t *body) {
    if (s_send_head(socket, peer, peer_len, uuid, uuid_len, type) < 0) return -1;
    int rc;
    while ((rc = zmq_msg_send(body, socket, 0)) < 0 && errno == EINTR) {}
    if (rc < 0) zmq_msg_close(body);
    return 0;
}

void frame_new_uuid(uint8_t out[FRAME_UUID_SIZE]) {
    uuid_generate_random(out);
}
