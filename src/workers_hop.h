/*
 * workers_hop: the messages that carry a call on the workers' link, WORK
 * (control -> worker), REPLY (worker -> control) and a WORK given back
 * (worker -> control), one ZeroMQ part each: a fixed header, then the
 * server name, the peer's routing id, the user id and the body. A part
 * costs each side about 400 instructions, and WORK and REPLY were nine
 * parts (docs/workers.md, "The link"). No Lua, no host.
 */
#ifndef PSEUD_WORKERS_HOP_H
#define PSEUD_WORKERS_HOP_H

#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "frame.h"

typedef struct workers_hop {
    char kind;                    /* 'W' WORK, 'R' REPLY, 'B'/'b' a WORK given back */
    uint8_t byte;                 /* WORK: flags; REPLY: the frame type */
    uint64_t serial;
    uint64_t charged;
    const uint8_t *uuid;          /* FRAME_UUID_SIZE bytes */
    const char *name, *peer, *user, *body;
    size_t name_len, peer_len, user_len, body_len;   /* ids: at most FRAME_MAX_ID */
} workers_hop_t;

/* kind, byte, serial, charged, the three ids' lengths (a byte each), uuid */
#define WORKERS_HOP_HEADER (1 + 1 + 8 + 8 + 3 + FRAME_UUID_SIZE)

/* Send `hop` as one part without blocking. 0, or -1 with errno (EINVAL:
 * an id over FRAME_MAX_ID bytes). */
int workers_hop_send(void *sock, const workers_hop_t *hop);
/* Read a hop of that kind out of one part: 0, or -1 when it is shorter
 * than its header, of another kind, or its ids' lengths pass its end.
 * Views into `part`, valid while it is. */
int workers_hop_parse(const zmq_msg_t *part, char kind, workers_hop_t *hop);

/* The frame message a WORK hop stands for (views into the hop): what a
 * socket's WORK would give on_work, with its budget's serial and charge
 * and the flags the control saw (logged in 1, idle sender 2). */
void workers_hop_to_work(const workers_hop_t *hop, frame_message_t *m);

#endif
