/*
 * fuzz_zap: zap_parse() over any ZAP request libzmq (or anything on the
 * inproc ZAP endpoint) could send.
 *
 * Input encoding, as fuzz_frame.c: parts, each a length byte N (< 0xfe),
 * or 0xfe and two bytes big-endian, or 0xff for "the rest"; at most
 * ZAP_MAX_PARTS + 2 parts (the parser must refuse more than it takes).
 *
 * Invariants: an accepted request has a mechanism of NULL, PLAIN or CURVE
 * with the part count RFC 27 gives it; domain, address and mechanism are
 * NUL-terminated copies of their whole parts (never cut: a part that does
 * not fit, or holds a NUL, is refused); PLAIN username and password are
 * views of parts 6 and 7; a CURVE client key is 40 Z85 characters; a refusal
 * always says why.
 */
#include "fuzz.h"
#include "zap.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zap_part_t parts[ZAP_MAX_PARTS + 2] = { { NULL, 0 } };
    int n = 0;
    size_t at = 0;
    while (at < size && n < ZAP_MAX_PARTS + 2) {
        size_t len = data[at++];
        if (len == 0xff) len = size - at;
        else if (len == 0xfe) {
            len = at + 2 <= size ? ((size_t)data[at] << 8) | data[at + 1] : 0;
            at += at + 2 <= size ? 2 : size - at;
        }
        if (len > size - at) len = size - at;
        parts[n].data = data + at;
        parts[n].size = len;
        n++;
        at += len;
    }
    zap_request_t req;
    const char *why = NULL;
    int rc = zap_parse(parts, n, &req, &why);
    if (rc < 0) {
        FUZZ_ASSERT(why && why[0]);
        return 0;
    }
    FUZZ_ASSERT(n >= 6 && parts[0].size == 3 && memcmp(parts[0].data, "1.0", 3) == 0);
    FUZZ_ASSERT(strlen(req.domain) == parts[2].size && memcmp(req.domain, parts[2].data, parts[2].size) == 0);
    FUZZ_ASSERT(strlen(req.address) == parts[3].size);
    FUZZ_ASSERT(req.routing_id == parts[4].data && req.routing_id_len == parts[4].size);
    if (strcmp(req.mechanism, "PLAIN") == 0) {
        FUZZ_ASSERT(n == 8 && req.username == parts[6].data && req.password_len == parts[7].size);
    } else if (strcmp(req.mechanism, "CURVE") == 0) {
        FUZZ_ASSERT(n == 7 && strlen(req.client_key) == 40);
    } else {
        FUZZ_ASSERT(strcmp(req.mechanism, "NULL") == 0 && n == 6 && req.username == NULL);
    }
    return 0;
}
