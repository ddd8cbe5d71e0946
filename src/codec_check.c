/*
 * codec_check.c: the gate in front of msgpack-c, without Lua.
 *
 * codec_check() is an allocation-free walk over the bytes, with an explicit
 * stack instead of recursion, that bounds every declared length and count
 * by the bytes really left, and depth by msgpack-c's own 32-level stack. It
 * reads each header through one table indexed by the type byte (s_bytes:
 * kind, width of the length field, count in the low bits, fixed payload),
 * as msgpack-c's unpack template does. Also here: the limits' defaults and
 * the UTF-8 test the packer and message.c use.
 */
#include "codec_check.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int codec_fail(codec_error_t *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void codec_limits_init(codec_limits_t *lim)
{
    lim->max_depth = CODEC_DEFAULT_MAX_DEPTH;
    lim->max_string = CODEC_DEFAULT_MAX_STRING;
    lim->max_elements = CODEC_DEFAULT_MAX_ELEMENTS;
    lim->max_body = CODEC_DEFAULT_MAX_BODY;
}

/* ------------------------------------------------------------------ UTF-8 */

int codec_is_utf8(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    const unsigned char *end = s + len;

    while (s < end) {
        unsigned c = *s;
        if (c < 0x80) {
            /* ASCII run: most names and text are ASCII, so test 32 bytes at
             * a time, then 8 (memcpy keeps each load legal at any alignment;
             * a 64 KiB text took 2.3 us instead of 4.0 on the bench VM). */
            while (end - s >= 32) {
                uint64_t w[4];
                memcpy(w, s, 32);
                if ((w[0] | w[1] | w[2] | w[3]) & UINT64_C(0x8080808080808080))
                    break;
                s += 32;
            }
            while (end - s >= 8) {
                uint64_t w;
                memcpy(&w, s, 8);
                if (w & UINT64_C(0x8080808080808080))
                    break;
                s += 8;
            }
            while (s < end && *s < 0x80)
                s++;
            continue;
        }
        if (c < 0xc2)                       /* stray continuation, or C0/C1 overlong */
            return 0;
        if (c < 0xe0) {
            if (end - s < 2 || (s[1] & 0xc0) != 0x80)
                return 0;
            s += 2;
        } else if (c < 0xf0) {
            if (end - s < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
                return 0;
            if (c == 0xe0 && s[1] < 0xa0)   /* overlong: below U+0800 */
                return 0;
            if (c == 0xed && s[1] >= 0xa0)  /* surrogates U+D800..U+DFFF */
                return 0;
            s += 3;
        } else if (c < 0xf5) {
            if (end - s < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80
                || (s[3] & 0xc0) != 0x80)
                return 0;
            if (c == 0xf0 && s[1] < 0x90)   /* overlong: below U+10000 */
                return 0;
            if (c == 0xf4 && s[1] >= 0x90)  /* above U+10FFFF */
                return 0;
            s += 4;
        } else {
            return 0;                       /* F5..FF never appear in UTF-8 */
        }
    }
    return 1;
}

/* --------------------------------------------------------------- checking */

/* Big-endian unsigned of 1, 2 or 4 bytes. */
static size_t s_be(const unsigned char *p, int n)
{
    switch (n) {
    case 1:  return p[0];
    case 2:  return (size_t)p[0] << 8 | p[1];
    default: return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    }
}

/* What a type byte announces. S_RESERVED is 0, so a byte the table left out
 * would be refused, never walked. */
enum { S_RESERVED, S_FIXED, S_STR, S_BIN, S_EXT, S_FIXEXT, S_ARRAY, S_MAP };

typedef struct s_byte {
    uint8_t kind;   /* S_* */
    uint8_t width;  /* bytes of the big-endian length or count after the type byte */
    uint8_t low;    /* mask of the type byte's bits that hold the length or count */
    uint8_t size;   /* fixed payload (S_FIXED, S_FIXEXT without the ext type byte) */
} s_byte_t;

/* Every type byte, as msgpack-c's unpack template reads its header (a state
 * per byte, the count or width in the low bits): the length or count of a
 * value is (byte & low) + size, or the `width` bytes that follow. */
static const s_byte_t s_bytes[256] = {
    [0x00 ... 0x7f] = { S_FIXED, 0, 0, 0 },       /* positive fixint */
    [0x80 ... 0x8f] = { S_MAP, 0, 0x0f, 0 },      /* fixmap */
    [0x90 ... 0x9f] = { S_ARRAY, 0, 0x0f, 0 },    /* fixarray */
    [0xa0 ... 0xbf] = { S_STR, 0, 0x1f, 0 },      /* fixstr */
    [0xc0]          = { S_FIXED, 0, 0, 0 },       /* nil */
    [0xc1]          = { S_RESERVED, 0, 0, 0 },    /* never used */
    [0xc2 ... 0xc3] = { S_FIXED, 0, 0, 0 },       /* false, true */
    [0xc4]          = { S_BIN, 1, 0, 0 },         /* bin 8, 16, 32 */
    [0xc5]          = { S_BIN, 2, 0, 0 },
    [0xc6]          = { S_BIN, 4, 0, 0 },
    [0xc7]          = { S_EXT, 1, 0, 0 },         /* ext 8, 16, 32 */
    [0xc8]          = { S_EXT, 2, 0, 0 },
    [0xc9]          = { S_EXT, 4, 0, 0 },
    [0xca]          = { S_FIXED, 0, 0, 4 },       /* float 32, 64 */
    [0xcb]          = { S_FIXED, 0, 0, 8 },
    [0xcc]          = { S_FIXED, 0, 0, 1 },       /* uint 8, 16, 32, 64 */
    [0xcd]          = { S_FIXED, 0, 0, 2 },
    [0xce]          = { S_FIXED, 0, 0, 4 },
    [0xcf]          = { S_FIXED, 0, 0, 8 },
    [0xd0]          = { S_FIXED, 0, 0, 1 },       /* int 8, 16, 32, 64 */
    [0xd1]          = { S_FIXED, 0, 0, 2 },
    [0xd2]          = { S_FIXED, 0, 0, 4 },
    [0xd3]          = { S_FIXED, 0, 0, 8 },
    [0xd4]          = { S_FIXEXT, 0, 0, 1 },      /* fixext 1, 2, 4, 8, 16 */
    [0xd5]          = { S_FIXEXT, 0, 0, 2 },
    [0xd6]          = { S_FIXEXT, 0, 0, 4 },
    [0xd7]          = { S_FIXEXT, 0, 0, 8 },
    [0xd8]          = { S_FIXEXT, 0, 0, 16 },
    [0xd9]          = { S_STR, 1, 0, 0 },         /* str 8, 16, 32 */
    [0xda]          = { S_STR, 2, 0, 0 },
    [0xdb]          = { S_STR, 4, 0, 0 },
    [0xdc]          = { S_ARRAY, 2, 0, 0 },       /* array 16, 32 */
    [0xdd]          = { S_ARRAY, 4, 0, 0 },
    [0xde]          = { S_MAP, 2, 0, 0 },         /* map 16, 32 */
    [0xdf]          = { S_MAP, 4, 0, 0 },
    [0xe0 ... 0xff] = { S_FIXED, 0, 0, 0 },       /* negative fixint */
};

static const char *const s_kind_name[] = {
    [S_STR] = "string", [S_BIN] = "binary", [S_EXT] = "ext", [S_FIXEXT] = "ext",
};

/* The checks every body gets before its first byte is read. */
static int s_check_body(size_t len, const codec_limits_t *lim, codec_error_t *err)
{
    if (lim->max_depth < 1 || lim->max_depth > CODEC_DEFAULT_MAX_DEPTH)
        return codec_fail(err, "msgpack: max_depth %d outside 1..%d",
                      lim->max_depth, CODEC_DEFAULT_MAX_DEPTH);
    if (len > lim->max_body)
        return codec_fail(err, "msgpack: body of %zu bytes passes the limit of %zu bytes",
                      len, lim->max_body);
    if (len == 0)
        return codec_fail(err, "msgpack: empty body");
    if (lim->max_elements < 1)                     /* the top value counts */
        return codec_fail(err, "msgpack: more than %zu values in the body at offset 0",
                      lim->max_elements);
    return 0;
}

int codec_check(const char *data, size_t len, const codec_limits_t *lim,
                codec_error_t *err)
{
    const unsigned char *b = (const unsigned char *)data;
    /* rem[d]: values still expected at open level d; rem[0] is the body's
     * single top value, rem[1..] the open arrays and maps (a map entry is 2).
     * max_depth <= CODEC_DEFAULT_MAX_DEPTH bounds d. */
    size_t rem[CODEC_DEFAULT_MAX_DEPTH + 1];
    int d = 0;
    size_t p = 0, total = 1;                       /* the top value counts */
    /* msgpack-c adds 1 to an ext32 length: 2^32-1 would wrap to 0 there */
    size_t max_string = lim->max_string < UINT32_MAX ? lim->max_string : UINT32_MAX - 1;

    if (s_check_body(len, lim, err) < 0)
        return -1;
    rem[0] = 1;
    for (;;) {
        while (rem[d] == 0) {
            if (d == 0)
                goto done;
            d--;
        }
        rem[d]--;

        size_t at = p;
        if (at >= len)
            return codec_fail(err, "msgpack: truncated at offset %zu", at);
        unsigned c = b[at];
        const s_byte_t *t = &s_bytes[c];
        int kind = t->kind, hdr = t->width;
        size_t left = len - at - 1;                /* bytes after the type byte */
        size_t n = (c & t->low) + (size_t)t->size; /* length, count or payload */

        if (kind == S_RESERVED)
            return codec_fail(err, "msgpack: reserved byte 0x%02x at offset %zu", c, at);
        if (hdr) {                                 /* explicit length or count */
            if (left < (size_t)hdr)
                return codec_fail(err, "msgpack: truncated at offset %zu", at);
            n = s_be(b + at + 1, hdr);
            left -= (size_t)hdr;
        }

        switch (kind) {
        case S_FIXED:
            if (left < n)
                return codec_fail(err, "msgpack: truncated at offset %zu", at);
            p = at + 1 + n;
            continue;
        case S_FIXEXT:                             /* type byte + n */
            if (left < n + 1)
                return codec_fail(err, "msgpack: truncated at offset %zu", at);
            if (n > max_string)
                return codec_fail(err, "msgpack: ext of %zu bytes at offset %zu passes the limit of %zu bytes",
                              n, at, max_string);
            p = at + 2 + n;
            continue;
        case S_EXT:
            if (left < 1)                          /* the type byte */
                return codec_fail(err, "msgpack: truncated at offset %zu", at);
            left--;
            hdr++;
            /* fall through */
        case S_STR:
        case S_BIN:
            if (n > left)
                return codec_fail(err, "msgpack: %s of %zu bytes at offset %zu passes the end of the body",
                              s_kind_name[kind], n, at);
            if (n > max_string)
                return codec_fail(err, "msgpack: %s of %zu bytes at offset %zu passes the limit of %zu bytes",
                              s_kind_name[kind], n, at, max_string);
            p = at + 1 + (size_t)hdr + n;
            continue;
        default:                                   /* S_ARRAY, S_MAP */
            /* a value takes at least 1 byte, a map entry 2: a count beyond
             * that is a lie, refused before msgpack-c reserves for it */
            if (kind == S_ARRAY && n > left)
                return codec_fail(err, "msgpack: array of %zu elements at offset %zu passes the end of the body",
                              n, at);
            if (kind == S_MAP && n > left / 2)
                return codec_fail(err, "msgpack: map of %zu entries at offset %zu passes the end of the body",
                              n, at);
            /* an empty container is a level too: msgpack-c refuses it at 33 */
            if (d + 1 > lim->max_depth)
                return codec_fail(err, "msgpack: nesting deeper than %d levels at offset %zu",
                              lim->max_depth, at);
            if (kind == S_MAP)
                n *= 2;
            if (n > lim->max_elements - total)
                return codec_fail(err, "msgpack: more than %zu values in the body at offset %zu",
                              lim->max_elements, at);
            total += n;
            p = at + 1 + (size_t)hdr;
            if (n > 0)
                rem[++d] = n;
            continue;
        }
    }
done:
    if (p < len)
        return codec_fail(err, "msgpack: %zu trailing bytes after the value at offset %zu",
                      len - p, p);
    return 0;
}
