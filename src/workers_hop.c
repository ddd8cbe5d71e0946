/*
 * workers_hop: WORK and REPLY on the workers' link as one part (see
 * workers_hop.h).
 */
#include "workers_hop.h"

#include <errno.h>
#include <string.h>

int workers_hop_send(void *sock, const workers_hop_t *hop) {
    if (hop->name_len > FRAME_MAX_ID || hop->peer_len > FRAME_MAX_ID || hop->user_len > FRAME_MAX_ID) {
        errno = EINVAL;
        return -1;
    }
    zmq_msg_t msg;
    if (zmq_msg_init_size(&msg, WORKERS_HOP_HEADER + hop->name_len + hop->peer_len + hop->user_len +
                                hop->body_len) < 0)
        return -1;
    char *p = zmq_msg_data(&msg);
    *p++ = hop->kind;
    *p++ = (char)hop->byte;
    memcpy(p, &hop->serial, 8);
    memcpy(p + 8, &hop->charged, 8);
    p += 16;
    *p++ = (char)(uint8_t)hop->name_len;
    *p++ = (char)(uint8_t)hop->peer_len;
    *p++ = (char)(uint8_t)hop->user_len;
    memcpy(p, hop->uuid, FRAME_UUID_SIZE);
    p += FRAME_UUID_SIZE;
    /* memcpy of 0 bytes from NULL is still undefined: skip empty parts */
    if (hop->name_len) { memcpy(p, hop->name, hop->name_len); p += hop->name_len; }
    if (hop->peer_len) { memcpy(p, hop->peer, hop->peer_len); p += hop->peer_len; }
    if (hop->user_len) { memcpy(p, hop->user, hop->user_len); p += hop->user_len; }
    if (hop->body_len) memcpy(p, hop->body, hop->body_len);
    int rc;
    while ((rc = zmq_msg_send(&msg, sock, ZMQ_DONTWAIT)) < 0 && errno == EINTR) {}
    if (rc < 0) {
        int e = errno;
        zmq_msg_close(&msg);
        errno = e;
        return -1;
    }
    return 0;
}

int workers_hop_parse(const zmq_msg_t *part, char kind, workers_hop_t *hop) {
    size_t n = zmq_msg_size((zmq_msg_t *)part);
    const char *p = zmq_msg_data((zmq_msg_t *)part);
    if (n < WORKERS_HOP_HEADER || p[0] != kind) return -1;
    hop->kind = kind;
    hop->byte = (uint8_t)p[1];
    memcpy(&hop->serial, p + 2, 8);
    memcpy(&hop->charged, p + 10, 8);
    hop->name_len = (uint8_t)p[18];
    hop->peer_len = (uint8_t)p[19];
    hop->user_len = (uint8_t)p[20];
    hop->uuid = (const uint8_t *)p + 21;
    size_t ids = hop->name_len + hop->peer_len + hop->user_len;
    if (n - WORKERS_HOP_HEADER < ids) return -1;
    hop->name = p + WORKERS_HOP_HEADER;
    hop->peer = hop->name + hop->name_len;
    hop->user = hop->peer + hop->peer_len;
    hop->body = hop->user + hop->user_len;
    hop->body_len = n - WORKERS_HOP_HEADER - ids;
    return 0;
}

void workers_hop_to_work(const workers_hop_t *hop, frame_message_t *m) {
    memset(m, 0, sizeof *m);
    m->type = FRAME_WORK;
    m->fd = -1;
    m->peer = hop->peer; m->peer_len = hop->peer_len;
    m->user = hop->user; m->user_len = hop->user_len;
    m->uuid = hop->uuid; m->uuid_len = FRAME_UUID_SIZE;
    m->body = hop->body; m->body_len = hop->body_len;
    m->serial = hop->serial;
    m->charged = (size_t)hop->charged;
    m->logged_in = (hop->byte & 1) != 0;
    m->idle_sender = (hop->byte & 2) != 0;
}
