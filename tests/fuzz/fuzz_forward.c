/*
 * fuzz_forward: forward.c's decoder over any bytes a node's channel could
 * carry.
 *
 * Invariants: an accepted message is a call or a result whose server and
 * node are 1..FORWARD_MAX_NAME bytes, a call's user 1..FRAME_MAX_ID bytes
 * and its timeout within 0..FORWARD_MAX_WAIT, a result's type OK or ERROR;
 * every view lies inside the input (an empty body is "", never NULL); it
 * packs back (forward_pack) to a message that decodes to the same fields.
 * A refusal says why.
 */
#include "forward.h"
#include "fuzz.h"

#include <string.h>

static int s_inside(const char *p, size_t n, const char *data, size_t size) {
    return p != NULL && (n == 0 || (p >= data && p + n <= data + size));
}

static int s_same(const char *a, size_t an, const char *b, size_t bn) {
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static msgpack_zone zone, z2;
    static int ready;
    if (!ready) { msgpack_zone_init(&zone, 4096); msgpack_zone_init(&z2, 4096); ready = 1; }
    codec_limits_t lim;
    codec_limits_init(&lim);
    const char *in = (const char *)data;
    forward_msg_t m, back;
    codec_error_t err = { "" };
    if (forward_decode(in, size, &lim, &zone, &m, &err) < 0) {
        FUZZ_ASSERT(err.message[0]);
        return 0;
    }
    FUZZ_ASSERT(m.kind == FORWARD_CALL || m.kind == FORWARD_RESULT);
    FUZZ_ASSERT(m.server_len >= 1 && m.server_len <= FORWARD_MAX_NAME && s_inside(m.server, m.server_len, in, size));
    FUZZ_ASSERT(m.node_len >= 1 && m.node_len <= FORWARD_MAX_NAME && s_inside(m.node, m.node_len, in, size));
    FUZZ_ASSERT(s_inside(m.body, m.body_len, in, size));
    if (m.kind == FORWARD_CALL) {
        FUZZ_ASSERT(m.user_len >= 1 && m.user_len <= FRAME_MAX_ID && s_inside(m.user, m.user_len, in, size));
        FUZZ_ASSERT(m.timeout >= 0 && m.timeout <= FORWARD_MAX_WAIT);
    } else {
        FUZZ_ASSERT(m.type == FRAME_OK || m.type == FRAME_ERROR);
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    FUZZ_ASSERT(forward_pack(&pk, &m) == 0);
    FUZZ_ASSERT(forward_decode(sb.data, sb.size, &lim, &z2, &back, &err) == 0);
    FUZZ_ASSERT(back.kind == m.kind && back.type == m.type && back.timeout == m.timeout);
    FUZZ_ASSERT(memcmp(back.uuid, m.uuid, FRAME_UUID_SIZE) == 0);
    FUZZ_ASSERT(s_same(back.server, back.server_len, m.server, m.server_len));
    FUZZ_ASSERT(s_same(back.node, back.node_len, m.node, m.node_len));
    FUZZ_ASSERT(s_same(back.user, back.user_len, m.user, m.user_len));
    FUZZ_ASSERT(s_same(back.body, back.body_len, m.body, m.body_len));
    msgpack_sbuffer_destroy(&sb);
    return 0;
}
