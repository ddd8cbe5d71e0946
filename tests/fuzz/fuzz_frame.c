/*
 * fuzz_frame: frame_decode() over any multipart message a peer could send.
 *
 * Input encoding (make_corpus.py writes the same): a sequence of parts, each
 * a length then that many bytes. The length is one byte N below 0xfe; 0xfe
 * then two bytes, big-endian (a 255-byte routing id, a longer body); 0xff
 * means "the rest of the input is this part". A part cut short by the end
 * of the input is what is left; an empty input is a message of no parts.
 * At most S_MAX_PARTS parts are read; bytes after them are ignored.
 *
 *   03 'a' 'b' 'c'  00  02 'v' '1'  10 <16 bytes>  01 03  ff <body...>
 *   = [routing_id "abc", "", "v1", uuid, WORK, body]
 *
 * The parts become zmq_msg_t values (zmq_msg_init_size + memcpy) in a
 * frame_message_t set up as frame_recv() leaves it: the first
 * FRAME_MAX_PARTS kept, the rest made, counted and closed (count may pass
 * FRAME_MAX_PARTS). The view fields start as garbage, as frame_recv leaves
 * them, so a path of frame_decode that forgets one is caught.
 *
 * Invariants checked (abort when broken): every view lies inside a kept
 * part; uuid_len is 0 (uuid NULL) or 16; the uuid and type views are set
 * whenever a 16-byte part 3 / a 1-byte part 4 is there (an endpoint answers
 * a malformed message by them), except for a probe and a routing id that is
 * empty or over 255 bytes (refused unanswered, DESIGN.md 4); user_id is NULL (these
 * parts carry no metadata); reason is set exactly for FRAME_KIND_INVALID;
 * the kind equals an independent reading of DESIGN.md section 1 (MESSAGE
 * only for 6 parts, empty delimiter, "v1", a known one-byte type, a 16-byte
 * uuid or an empty one for HEARTBEAT; PROBE only for [id, ""]); decoding
 * twice gives the same answer; frame_close leaves nothing kept and may run
 * twice.
 */
#include "fuzz.h"
#include "frame.h"

#include <string.h>

#define S_MAX_PARTS (FRAME_MAX_PARTS + 4)   /* enough to pass FRAME_MAX_PARTS */

/* Is [p, p + len) inside the data of one kept part? */
static int s_inside(frame_message_t *m, const void *p, size_t len)
{
    const char *c = p;
    for (int i = 0; i < m->kept; i++) {
        const char *d = zmq_msg_data(&m->parts[i]);
        size_t n = zmq_msg_size(&m->parts[i]);
        if (c >= d && c <= d + n && len <= (size_t)(d + n - c))
            return 1;
    }
    return 0;
}

static size_t s_size(frame_message_t *m, int i)
{
    return zmq_msg_size(&m->parts[i]);
}

/* The kind DESIGN.md section 1 gives this message, read without frame.c. */
static enum frame_kind s_expected_kind(frame_message_t *m)
{
    const unsigned char *t;
    if (m->kept == 0)
        return FRAME_KIND_INVALID;
    if (s_size(m, 0) == 0 || s_size(m, 0) > FRAME_MAX_ID)   /* DESIGN.md 4: refused, unanswered */
        return FRAME_KIND_BAD_ID;
    if (m->count == 2 && s_size(m, 1) == 0)
        return FRAME_KIND_PROBE;
    if (m->count != 6 || s_size(m, 1) != 0 || s_size(m, 2) != 2
        || memcmp(zmq_msg_data(&m->parts[2]), "v1", 2) != 0 || s_size(m, 4) != 1)
        return FRAME_KIND_INVALID;
    t = zmq_msg_data(&m->parts[4]);
    switch (t[0]) {
    case 0x01: case 0x02: case 0x03: case 0x04: case 0x10: case 0x11:
        return s_size(m, 3) == 16 ? FRAME_KIND_MESSAGE : FRAME_KIND_INVALID;
    case 0x06:                                     /* HEARTBEAT: uuid may be empty */
        return s_size(m, 3) == 16 || s_size(m, 3) == 0 ? FRAME_KIND_MESSAGE
                                                        : FRAME_KIND_INVALID;
    default:
        return FRAME_KIND_INVALID;
    }
}

static void s_check(frame_message_t *m, enum frame_kind kind, int count, int kept)
{
    FUZZ_ASSERT(m->count == count && m->kept == kept);   /* decode keeps the parts */
    FUZZ_ASSERT(kind == s_expected_kind(m));
    FUZZ_ASSERT(m->user_id == NULL);
    FUZZ_ASSERT((m->reason != NULL) == (kind == FRAME_KIND_INVALID || kind == FRAME_KIND_BAD_ID));
    FUZZ_ASSERT(m->reason == NULL || m->reason[0] != '\0');

    /* views: NULL with length 0, or inside a kept part */
    if (kept == 0)
        FUZZ_ASSERT(m->peer == NULL && m->peer_len == 0);
    else
        FUZZ_ASSERT(m->peer == zmq_msg_data(&m->parts[0]) && m->peer_len == s_size(m, 0));
    FUZZ_ASSERT(m->peer == NULL || s_inside(m, m->peer, m->peer_len));
    FUZZ_ASSERT((m->uuid == NULL && m->uuid_len == 0)
                || (m->uuid_len == FRAME_UUID_SIZE && s_inside(m, m->uuid, m->uuid_len)));
    FUZZ_ASSERT(m->body != NULL || m->body_len == 0);
    FUZZ_ASSERT(m->body == NULL || s_inside(m, m->body, m->body_len));
    FUZZ_ASSERT(m->type >= -1 && m->type <= 0xff);

    if (kind == FRAME_KIND_PROBE || kind == FRAME_KIND_BAD_ID) {
        FUZZ_ASSERT(m->uuid == NULL && m->type == -1 && m->body == NULL);
        return;
    }
    /* an invalid message is answered by the uuid and type it plainly has */
    if (kept >= 4 && s_size(m, 3) == FRAME_UUID_SIZE)
        FUZZ_ASSERT(m->uuid == zmq_msg_data(&m->parts[3]));
    else
        FUZZ_ASSERT(m->uuid == NULL);
    if (kept >= 5 && s_size(m, 4) == 1)
        FUZZ_ASSERT(m->type == *(const unsigned char *)zmq_msg_data(&m->parts[4]));
    else
        FUZZ_ASSERT(m->type == -1);

    if (kind == FRAME_KIND_MESSAGE) {
        FUZZ_ASSERT(count == 6 && kept == 6 && frame_type_known(m->type));
        FUZZ_ASSERT(m->uuid != NULL || m->type == FRAME_HEARTBEAT);
        FUZZ_ASSERT(m->body == zmq_msg_data(&m->parts[5]) && m->body_len == s_size(m, 5));
    } else {
        FUZZ_ASSERT(m->body == NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    frame_message_t m;
    enum frame_kind kind;
    size_t at = 0;
    int count = 0;

    memset(&m, 0xa5, sizeof m);                    /* garbage views, as frame_recv */
    m.kept = 0;
    m.count = 0;
    while (at < size && count < S_MAX_PARTS) {
        size_t len = data[at++];
        zmq_msg_t scratch, *part = count < FRAME_MAX_PARTS ? &m.parts[count] : &scratch;
        if (len == 0xff) {                         /* the rest of the input */
            len = size - at;
        } else if (len == 0xfe) {                  /* a 16-bit length follows */
            len = at < size ? (size_t)data[at++] << 8 : 0;
            len |= at < size ? data[at++] : 0;
        }
        if (len > size - at)                       /* cut short by the end */
            len = size - at;
        if (zmq_msg_init_size(part, len) != 0) {   /* out of memory: not a finding */
            frame_close(&m);
            return 0;
        }
        if (len)
            memcpy(zmq_msg_data(part), data + at, len);
        at += len;
        count++;
        if (part == &scratch)                      /* drained, as frame_recv does */
            zmq_msg_close(&scratch);
        else
            m.kept++;
    }
    m.count = count;

    kind = frame_decode(&m);
    FUZZ_ASSERT(kind == FRAME_KIND_MESSAGE || kind == FRAME_KIND_PROBE
                || kind == FRAME_KIND_INVALID || kind == FRAME_KIND_BAD_ID);
    s_check(&m, kind, count, m.kept);
    {
        /* a second decode sees the same message the same way */
        frame_message_t first = m;
        FUZZ_ASSERT(frame_decode(&m) == kind);
        FUZZ_ASSERT(m.peer == first.peer && m.peer_len == first.peer_len
                    && m.uuid == first.uuid && m.uuid_len == first.uuid_len
                    && m.type == first.type && m.body == first.body
                    && m.body_len == first.body_len && m.reason == first.reason);
    }

    frame_close(&m);
    FUZZ_ASSERT(m.kept == 0);
    frame_close(&m);                               /* twice is safe */
    return 0;
}
