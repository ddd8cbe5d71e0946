/*
 * forward: what the nodes of a cluster say to each other on their Redis
 * channels (docs/cluster.md): a call forwarded to the node where its user
 * is connected, and that call's result coming back. No Lua, no Redis.
 *
 *   call    [1, server, origin, uuid, user, timeout, body]
 *   result  [2, server, sender, uuid, type, body]
 *
 * server: the name of the server the call is made through (str); origin /
 * sender: the node id that writes it (str); uuid: the origin's call (bin, 16
 * bytes); user: the user id called (bin); timeout: seconds the origin waits
 * (float); type: FRAME_OK or FRAME_ERROR; body: the WORK body, or the OK or
 * ERROR body, as it travels on the wire (bin). Bodies pass through as bytes,
 * never decoded and packed again, so a forwarded call is byte-exact.
 *
 * Every field is checked: a node's bytes are a peer's bytes. An empty
 * message is no envelope: it is a probe (cluster_calls.c) whose PUBLISH
 * counts the node's listeners, and the node drops it unread.
 */
#ifndef PSEUD_FORWARD_H
#define PSEUD_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "codec_check.h"
#include "frame.h"

#define FORWARD_CALL     1
#define FORWARD_RESULT   2
#define FORWARD_MAX_NAME 255        /* bytes of a server name or a node id */
#define FORWARD_MAX_WAIT 1e9        /* seconds: a timeout past this is refused */

typedef struct forward_msg {
    int kind;                       /* FORWARD_CALL or FORWARD_RESULT */
    const char *server;  size_t server_len;   /* views into the data */
    const char *node;    size_t node_len;     /* call: its origin; result: its sender */
    uint8_t uuid[FRAME_UUID_SIZE];
    const char *user;    size_t user_len;     /* call: 1..FRAME_MAX_ID bytes */
    double timeout;                           /* call: 0..FORWARD_MAX_WAIT */
    int type;                                 /* result: FRAME_OK or FRAME_ERROR */
    const char *body;    size_t body_len;
} forward_msg_t;

/* Pack a call or a result (the fields the kind uses) through `pk`. 0 or -1. */
int forward_pack(msgpack_packer *pk, const forward_msg_t *m);

/* Decode `data`: bodies may be as long as lim->max_body, the envelope adds
 * its fields. Returns 0 with views into `data`, or -1 with err->message.
 * `zone` is cleared and holds nothing the views need. */
int forward_decode(const char *data, size_t len, const codec_limits_t *lim,
                   msgpack_zone *zone, forward_msg_t *out, codec_error_t *err);

#endif
