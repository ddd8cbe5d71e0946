/*
 * codec.c: msgpack <-> Lua values under the limits of codec_limits_t.
 *
 * Owns no memory. Packing walks a Lua value with the raw API (no metamethod
 * runs, so no Lua code and no error can interrupt it) and writes through the
 * caller's msgpack_packer; every failure comes back as -1 and a message.
 * codec_check() is the gate in front of msgpack-c: an allocation-free walk
 * over the bytes, with an explicit stack instead of recursion, that bounds
 * every declared length and count by the bytes really left, and depth by
 * msgpack-c's own 32-level stack. It reads each header through one table
 * indexed by the type byte (s_bytes: kind, width of the length field, count
 * in the low bits, fixed payload), as msgpack-c's unpack template does. codec_push_object() builds Lua values from
 * what msgpack_unpack() made of a checked body; it may raise, so it runs
 * inside a lua_pcall while the zone and the body stay owned by a frame below.
 *
 * Not here: zones, buffers, frames and metatable creation (lpseud.c).
 */
#include "codec.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

/* Error messages name the limit or the type; snprintf, never lua_pushfstring,
 * so that filling one cannot raise. */
static int s_fail(codec_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int s_fail(codec_error_t *err, const char *fmt, ...)
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
            /* ASCII run: most names and text are ASCII, so test 8 bytes at a
             * time (memcpy keeps the load legal at any alignment). */
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

/* ---------------------------------------------------------------- packing */

/* A packer write fails only when its buffer cannot grow. */
#define S_PUT(call) \
    do { if ((call) != 0) return s_fail(err, "msgpack: out of memory"); } while (0)

static int s_pack(lua_State *L, int idx, msgpack_packer *pk,
                  const codec_limits_t *lim, int depth, codec_error_t *err);

static int s_pack_string(lua_State *L, int idx, msgpack_packer *pk,
                         codec_error_t *err)
{
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);   /* a string: no conversion */

    /* msgpack lengths are 32 bits; msgpack-c would truncate silently */
    if (len > UINT32_MAX)
        return s_fail(err, "msgpack: string of %zu bytes is longer than msgpack allows", len);
    if (codec_is_utf8(s, len)) {
        S_PUT(msgpack_pack_str(pk, len));
        S_PUT(msgpack_pack_str_body(pk, s, len));
    } else {
        S_PUT(msgpack_pack_bin(pk, len));
        S_PUT(msgpack_pack_bin_body(pk, s, len));
    }
    return 0;
}

/* 1 when the table at `idx` carries the pseud.Map or pseud.Kwargs metatable.
 * Pushes at most 2 slots, briefly. The registry lookups cannot raise: the
 * names are live registry keys, so Lua finds them already interned. */
static int s_is_marked_map(lua_State *L, int idx)
{
    int marked;
    if (!lua_getmetatable(L, idx))                 /* mt */
        return 0;
    luaL_getmetatable(L, CODEC_MAP_MT);            /* mt, Map */
    marked = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);                                 /* mt */
    if (!marked) {
        luaL_getmetatable(L, CODEC_KWARGS_MT);     /* mt, Kwargs */
        marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);                             /* mt */
    }
    lua_pop(L, 1);
    return marked;
}

static int s_pack_table(lua_State *L, int idx, msgpack_packer *pk,
                        const codec_limits_t *lim, int depth, codec_error_t *err)
{
    size_t count = 0, seen = 0;
    lua_Integer max = 0;
    int is_map;

    /* A cyclic table ends here too: it never stops nesting. */
    if (depth >= lim->max_depth)
        return s_fail(err, "msgpack: nesting deeper than %d levels", lim->max_depth);
    /* This level holds a key and a value; a child's metatable test (table
     * mark or pseud.Ext) briefly needs 2 more. */
    if (!lua_checkstack(L, 4))
        return s_fail(err, "msgpack: out of Lua stack space");

    /* Array iff the keys are exactly the integers 1..n: distinct integer
     * keys >= 1 whose largest equals their count. Raw traversal only. */
    is_map = s_is_marked_map(L, idx);
    lua_pushnil(L);                                /* nil */
    while (lua_next(L, idx)) {                     /* key, value */
        lua_pop(L, 1);                             /* key */
        count++;
        if (!is_map) {
            if (lua_isinteger(L, -1)) {
                lua_Integer k = lua_tointeger(L, -1);
                if (k < 1)
                    is_map = 1;
                else if (k > max)
                    max = k;
            } else {
                is_map = 1;
            }
        }
    }
    if (!is_map && (lua_Unsigned)max != count)
        is_map = 1;
    if (count > UINT32_MAX)
        return s_fail(err, "msgpack: table of %zu entries is larger than msgpack allows", count);

    /* The second pass re-checks what the first saw: only an emergency GC
     * clearing a weak table could change it, and a short or holed body must
     * never go out. */
    if (!is_map) {
        S_PUT(msgpack_pack_array(pk, count));
        for (size_t i = 1; i <= count; i++) {
            if (lua_rawgeti(L, idx, (lua_Integer)i) == LUA_TNIL)   /* value */
                return s_fail(err, "msgpack: table changed while packing");
            if (s_pack(L, lua_gettop(L), pk, lim, depth + 1, err))
                return -1;
            lua_pop(L, 1);
        }
        return 0;
    }
    S_PUT(msgpack_pack_map(pk, count));
    lua_pushnil(L);                                /* nil */
    while (lua_next(L, idx)) {                     /* key, value */
        int top = lua_gettop(L);
        if (++seen > count)
            return s_fail(err, "msgpack: table changed while packing");
        if (s_pack(L, top - 1, pk, lim, depth + 1, err)
            || s_pack(L, top, pk, lim, depth + 1, err))
            return -1;
        lua_pop(L, 1);                             /* key */
    }
    if (seen != count)
        return s_fail(err, "msgpack: table changed while packing");
    return 0;
}

static int s_pack(lua_State *L, int idx, msgpack_packer *pk,
                  const codec_limits_t *lim, int depth, codec_error_t *err)
{
    int type = lua_type(L, idx);
    switch (type) {
    case LUA_TNIL:
        S_PUT(msgpack_pack_nil(pk));
        return 0;
    case LUA_TBOOLEAN:
        S_PUT(lua_toboolean(L, idx) ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
        return 0;
    case LUA_TNUMBER:
        /* 1.0 stays a float: the subtype decides, never the value */
        if (lua_isinteger(L, idx))
            S_PUT(msgpack_pack_int64(pk, (int64_t)lua_tointeger(L, idx)));
        else
            S_PUT(msgpack_pack_double(pk, (double)lua_tonumber(L, idx)));
        return 0;
    case LUA_TSTRING:
        return s_pack_string(L, idx, pk, err);
    case LUA_TTABLE:
        return s_pack_table(L, idx, pk, lim, depth, err);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {      /* pseud.null */
            S_PUT(msgpack_pack_nil(pk));
            return 0;
        }
        return s_fail(err, "msgpack: cannot pack a light userdata other than pseud.null");
    case LUA_TUSERDATA: {
        const codec_ext_t *ext = luaL_testudata(L, idx, CODEC_EXT_MT);
        if (ext == NULL)
            return s_fail(err, "msgpack: cannot pack a userdata that is not pseud.Ext");
        if (ext->size > UINT32_MAX)
            return s_fail(err, "msgpack: ext of %zu bytes is longer than msgpack allows", ext->size);
        S_PUT(msgpack_pack_ext(pk, ext->size, ext->type));
        S_PUT(msgpack_pack_ext_body(pk, ext->data, ext->size));
        return 0;
    }
    default:                                       /* function, thread */
        return s_fail(err, "msgpack: cannot pack a %s", lua_typename(L, type));
    }
}

int codec_pack_value(lua_State *L, int idx, msgpack_packer *pk,
                     const codec_limits_t *lim, int depth, codec_error_t *err)
{
    int top = lua_gettop(L);
    idx = lua_absindex(L, idx);
    /* a top-level pseud.Ext test needs 2 slots */
    if (!lua_checkstack(L, 2))
        return s_fail(err, "msgpack: out of Lua stack space");
    if (s_pack(L, idx, pk, lim, depth, err) == 0)
        return 0;
    lua_settop(L, top);                            /* an error leaves levels pushed */
    return -1;
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
        return s_fail(err, "msgpack: max_depth %d outside 1..%d",
                      lim->max_depth, CODEC_DEFAULT_MAX_DEPTH);
    if (len > lim->max_body)
        return s_fail(err, "msgpack: body of %zu bytes passes the limit of %zu bytes",
                      len, lim->max_body);
    if (len == 0)
        return s_fail(err, "msgpack: empty body");
    if (lim->max_elements < 1)                     /* the top value counts */
        return s_fail(err, "msgpack: more than %zu values in the body at offset 0",
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
            return s_fail(err, "msgpack: truncated at offset %zu", at);
        unsigned c = b[at];
        const s_byte_t *t = &s_bytes[c];
        int kind = t->kind, hdr = t->width;
        size_t left = len - at - 1;                /* bytes after the type byte */
        size_t n = (c & t->low) + (size_t)t->size; /* length, count or payload */

        if (kind == S_RESERVED)
            return s_fail(err, "msgpack: reserved byte 0x%02x at offset %zu", c, at);
        if (hdr) {                                 /* explicit length or count */
            if (left < (size_t)hdr)
                return s_fail(err, "msgpack: truncated at offset %zu", at);
            n = s_be(b + at + 1, hdr);
            left -= (size_t)hdr;
        }

        switch (kind) {
        case S_FIXED:
            if (left < n)
                return s_fail(err, "msgpack: truncated at offset %zu", at);
            p = at + 1 + n;
            continue;
        case S_FIXEXT:                             /* type byte + n */
            if (left < n + 1)
                return s_fail(err, "msgpack: truncated at offset %zu", at);
            if (n > max_string)
                return s_fail(err, "msgpack: ext of %zu bytes at offset %zu passes the limit of %zu bytes",
                              n, at, max_string);
            p = at + 2 + n;
            continue;
        case S_EXT:
            if (left < 1)                          /* the type byte */
                return s_fail(err, "msgpack: truncated at offset %zu", at);
            left--;
            hdr++;
            /* fall through */
        case S_STR:
        case S_BIN:
            if (n > left)
                return s_fail(err, "msgpack: %s of %zu bytes at offset %zu passes the end of the body",
                              s_kind_name[kind], n, at);
            if (n > max_string)
                return s_fail(err, "msgpack: %s of %zu bytes at offset %zu passes the limit of %zu bytes",
                              s_kind_name[kind], n, at, max_string);
            p = at + 1 + (size_t)hdr + n;
            continue;
        default:                                   /* S_ARRAY, S_MAP */
            /* a value takes at least 1 byte, a map entry 2: a count beyond
             * that is a lie, refused before msgpack-c reserves for it */
            if (kind == S_ARRAY && n > left)
                return s_fail(err, "msgpack: array of %zu elements at offset %zu passes the end of the body",
                              n, at);
            if (kind == S_MAP && n > left / 2)
                return s_fail(err, "msgpack: map of %zu entries at offset %zu passes the end of the body",
                              n, at);
            /* an empty container is a level too: msgpack-c refuses it at 33 */
            if (d + 1 > lim->max_depth)
                return s_fail(err, "msgpack: nesting deeper than %d levels at offset %zu",
                              lim->max_depth, at);
            if (kind == S_MAP)
                n *= 2;
            if (n > lim->max_elements - total)
                return s_fail(err, "msgpack: more than %zu values in the body at offset %zu",
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
        return s_fail(err, "msgpack: %zu trailing bytes after the value at offset %zu",
                      len - p, p);
    return 0;
}

/* -------------------------------------------------------------- unpacking */

codec_ext_t *codec_push_ext(lua_State *L, int8_t type, const char *data, size_t size)
{
    codec_ext_t *ext;
    luaL_checkstack(L, 2, "msgpack ext");         /* the userdata, its metatable */
    ext = lua_newuserdatauv(L, sizeof(codec_ext_t) + size, 0);
    ext->type = type;
    ext->size = size;
    if (size > 0)
        memcpy(ext->data, data, size);
    luaL_setmetatable(L, CODEC_EXT_MT);
    return ext;
}

/* `nested`: inside an array or map a nil is pseud.null, so that positions
 * and keys survive; at top level it is plain nil. */
static void s_push(lua_State *L, const msgpack_object *o, int nested)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        if (nested)
            lua_pushlightuserdata(L, NULL);
        else
            lua_pushnil(L);
        return;
    case MSGPACK_OBJECT_BOOLEAN:
        lua_pushboolean(L, o->via.boolean);
        return;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)LUA_MAXINTEGER) {
            /* never a float: that would change the value silently;
             * lua_pushfstring has no unsigned 64-bit format */
            char digits[24];
            snprintf(digits, sizeof digits, "%llu", (unsigned long long)o->via.u64);
            luaL_error(L, "msgpack: integer %s does not fit a Lua integer", digits);
        }
        lua_pushinteger(L, (lua_Integer)o->via.u64);
        return;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        lua_pushinteger(L, (lua_Integer)o->via.i64);
        return;
    case MSGPACK_OBJECT_FLOAT32:                   /* widened to double by msgpack-c */
    case MSGPACK_OBJECT_FLOAT64:
        lua_pushnumber(L, (lua_Number)o->via.f64);
        return;
    case MSGPACK_OBJECT_STR:
        lua_pushlstring(L, o->via.str.ptr, o->via.str.size);
        return;
    case MSGPACK_OBJECT_BIN:
        lua_pushlstring(L, o->via.bin.ptr, o->via.bin.size);
        return;
    case MSGPACK_OBJECT_EXT:
        codec_push_ext(L, o->via.ext.type, o->via.ext.ptr, o->via.ext.size);
        return;
    case MSGPACK_OBJECT_ARRAY: {
        const msgpack_object_array *a = &o->via.array;
        /* the table and one element (a map: table, key, value); a child
         * container or ext reserves its own slots */
        luaL_checkstack(L, 3, "msgpack nesting");
        lua_createtable(L, a->size < INT32_MAX ? (int)a->size : INT32_MAX, 0);
        for (uint32_t i = 0; i < a->size; i++) {
            s_push(L, &a->ptr[i], 1);              /* t, v */
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return;
    }
    case MSGPACK_OBJECT_MAP: {
        const msgpack_object_map *m = &o->via.map;
        luaL_checkstack(L, 3, "msgpack nesting");
        lua_createtable(L, 0, m->size < INT32_MAX ? (int)m->size : INT32_MAX);
        luaL_setmetatable(L, CODEC_MAP_MT);        /* packs back as a map */
        for (uint32_t i = 0; i < m->size; i++) {
            const msgpack_object *k = &m->ptr[i].key;
            if ((k->type == MSGPACK_OBJECT_FLOAT64 || k->type == MSGPACK_OBJECT_FLOAT32)
                && isnan(k->via.f64))
                luaL_error(L, "msgpack: map key is NaN");
            s_push(L, k, 1);                       /* t, k */
            s_push(L, &m->ptr[i].val, 1);          /* t, k, v */
            lua_rawset(L, -3);                     /* t */
        }
        return;
    }
    default:
        luaL_error(L, "msgpack: unknown object type %d", (int)o->type);
    }
}

void codec_push_object(lua_State *L, const msgpack_object *obj)
{
    luaL_checkstack(L, 1, "msgpack value");
    s_push(L, obj, 0);
}
