/*
 * fuzz_codec: a peer's msgpack body through the whole codec and back.
 *
 * The input is one body, as a WORK, OK, ERROR or HELLO frame carries it.
 * The path is the host's (codec.h, "Unpacking, step by step"):
 *   codec_check with the default codec_limits_t; when it accepts:
 *   msgpack_unpack into a zone this file owns, codec_push_object under
 *   lua_pcall (it raises on memory, a uint64 past LUA_MAXINTEGER and a NaN
 *   map key), codec_pack_value with the same limits -> packing #2;
 *   then #2 again: check, unpack, push, pack -> packing #3.
 *
 * Invariants (abort when broken):
 * - a body codec_check accepts is one msgpack-c unpacks whole (the gate's
 *   promise: msgpack-c must never see what it would choke on);
 * - pushing it fails only for the two reasons codec.h names;
 * - a value the codec built packs, leaves the Lua stack as it found it, and
 *   its packing passes codec_check (a host must accept its own replies);
 * - #2 is the input as codec.h maps it (s_expect, a model written apart
 *   from codec.c): bin that is UTF-8 becomes str, float32 float64, integers
 *   take their smallest width, an integral float key becomes an integer,
 *   of repeated keys the last stays; nothing else changes (DESIGN.md: never
 *   change data silently: 1.0 stays a float, ext kept, ...);
 * - #2 and #3 are the same: what the codec reshapes, it reshapes once.
 *   Both comparisons are up to the order of map entries, which is Lua's
 *   table order: it depends on the table's size and insertion order, and
 *   no one promises it (a strict byte comparison of #2 and #3 fails within
 *   seconds of fuzzing on a 5-entry map), so every map's entries are
 *   sorted by their packed bytes before comparing;
 * - codec_is_utf8 agrees with a plain code-point decoder (RFC 3629) on the
 *   input bytes: it decides str against bin.
 *
 * One Lua state for the whole run (luaL_newstate once, with the three
 * metatables the binding would make), its stack back to 0 after each input
 * and a full collection every S_GC_EVERY inputs so that memory stays flat.
 * Not after every input: libFuzzer runs a leak check (a scan of the whole
 * heap) after each input that freed less than it allocated, and stops only
 * after 1000 of them; collecting every time keeps most inputs balanced, so
 * the rare unbalanced ones keep the checks coming and halve the exec/s.
 */
#include "fuzz.h"
#include "codec.h"

#include <string.h>

#include <lauxlib.h>

#define S_GC_EVERY 1000

static lua_State *g_L;
static msgpack_zone g_zone;          /* one zone, cleared after every body */
static codec_limits_t g_lim;
static unsigned long g_runs;

static void s_init(void)
{
    g_L = luaL_newstate();
    if (g_L == NULL)
        abort();
    /* the codec only compares these by identity: empty ones do */
    luaL_newmetatable(g_L, CODEC_MAP_MT);
    luaL_newmetatable(g_L, CODEC_KWARGS_MT);
    luaL_newmetatable(g_L, CODEC_EXT_MT);
    lua_settop(g_L, 0);
    msgpack_zone_init(&g_zone, MSGPACK_ZONE_CHUNK_SIZE);
    codec_limits_init(&g_lim);
}

/* ------------------------------------------------------------ UTF-8 */

/* UTF-8 by the book: decode each sequence, refuse overlongs, surrogates
 * and code points past U+10FFFF. Slow and plain, the other side of a
 * differential check against codec_is_utf8's fast path. */
static int s_utf8_reference(const uint8_t *s, size_t len)
{
    static const uint32_t least[] = {0, 0x80, 0x800, 0x10000};
    size_t i = 0;
    while (i < len) {
        uint32_t c = s[i], cp;
        size_t n;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            n = 1; cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2; cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3; cp = c & 0x07;
        } else {
            return 0;
        }
        if (len - i - 1 < n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < least[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* ------------------------------------------------- canonical order */

/* A map entry (key and value bytes) inside a packed body. */
typedef struct s_entry {
    const unsigned char *data;
    size_t len;
} s_entry_t;

/* Entries by their bytes, shorter first on a common prefix. Two distinct
 * Lua keys may pack alike (two empty tables): ordering by the whole entry
 * still puts equal entries side by side, so the order is total. */
static int s_entry_order(const void *a, const void *b)
{
    const s_entry_t *x = a, *y = b;
    int c = memcmp(x->data, y->data, x->len < y->len ? x->len : y->len);
    if (c != 0)
        return c;
    return (x->len > y->len) - (x->len < y->len);
}

static size_t s_be(const unsigned char *p, int n)
{
    size_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Header bytes and entry count of the value at `p` when it is an array or
 * a map (*is_map set), 0 when it is a scalar. */
static size_t s_container(const unsigned char *p, size_t *count, int *is_map)
{
    unsigned c = p[0];
    *is_map = (c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf;
    if (c >= 0x80 && c <= 0x9f) {
        *count = c & 0x0f;
        return 1;
    }
    if (c == 0xdc || c == 0xde) {
        *count = s_be(p + 1, 2);
        return 3;
    }
    if (c == 0xdd || c == 0xdf) {
        *count = s_be(p + 1, 4);
        return 5;
    }
    return 0;
}

/* Bytes of the scalar at `p`. */
static size_t s_scalar_len(const unsigned char *p)
{
    unsigned c = p[0];
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return 1;
    if (c >= 0xa0 && c <= 0xbf)
        return 1 + (c & 0x1f);
    switch (c) {
    case 0xcc: case 0xd0: return 2;
    case 0xcd: case 0xd1: return 3;
    case 0xca: case 0xce: case 0xd2: return 5;
    case 0xcb: case 0xcf: case 0xd3: return 9;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:     /* fixext */
        return 2 + ((size_t)1 << (c - 0xd4));
    case 0xc4: case 0xd9: return 2 + s_be(p + 1, 1);
    case 0xc5: case 0xda: return 3 + s_be(p + 1, 2);
    case 0xc6: case 0xdb: return 5 + s_be(p + 1, 4);
    case 0xc7: return 3 + s_be(p + 1, 1);                      /* ext: + type byte */
    case 0xc8: return 4 + s_be(p + 1, 2);
    case 0xc9: return 6 + s_be(p + 1, 4);
    default: abort();                                          /* 0xc1: refused by codec_check */
    }
}

/* Write to `out` the value at `in` with the entries of every map sorted
 * (s_entry_order), inner maps first; returns its length, the same as the
 * value's at `in`. `in` is well formed (see s_same_canonical), so every
 * length is in bounds and the recursion is at most max_depth deep. */
static size_t s_canonical(const unsigned char *in, unsigned char *out)
{
    size_t count, at;
    int is_map;
    size_t head = s_container(in, &count, &is_map);
    s_entry_t *entries;
    unsigned char *sorted;

    if (head == 0) {
        at = s_scalar_len(in);
        memcpy(out, in, at);
        return at;
    }
    memcpy(out, in, head);
    at = head;
    if (!is_map || count < 2) {
        for (size_t i = 0; i < (is_map ? 2 * count : count); i++)
            at += s_canonical(in + at, out + at);
        return at;
    }
    entries = malloc(count * sizeof *entries);
    FUZZ_ASSERT(entries != NULL);
    for (size_t i = 0; i < count; i++) {
        size_t start = at;
        at += s_canonical(in + at, out + at);              /* key */
        at += s_canonical(in + at, out + at);              /* value */
        entries[i].data = out + start;
        entries[i].len = at - start;
    }
    qsort(entries, count, sizeof *entries, s_entry_order);
    sorted = malloc(at - head);
    FUZZ_ASSERT(sorted != NULL);
    for (size_t i = 0, w = 0; i < count; w += entries[i].len, i++)
        memcpy(sorted + w, entries[i].data, entries[i].len);
    memcpy(out + head, sorted, at - head);
    free(sorted);
    free(entries);
    return at;
}

/* 1 when two bodies are the same value up to map entry order. Both come
 * from a msgpack-c packer (ours or s_expect's): well formed, at most
 * max_depth deep. */
static int s_same_canonical(const msgpack_sbuffer *a, const msgpack_sbuffer *b)
{
    unsigned char *ca, *cb;
    int same;
    if (a->size != b->size)
        return 0;
    ca = malloc(a->size);
    cb = malloc(b->size);
    FUZZ_ASSERT(ca != NULL && cb != NULL);
    FUZZ_ASSERT(s_canonical((const unsigned char *)a->data, ca) == a->size);
    FUZZ_ASSERT(s_canonical((const unsigned char *)b->data, cb) == b->size);
    same = memcmp(ca, cb, a->size) == 0;
    free(ca);
    free(cb);
    return same;
}

/* ---------------------------------------------------- the expectation */

/* What a map key becomes in Lua, for telling when two keys of one map are
 * the same Lua key: str and bin are both strings; a float with an integer
 * value (2.0, -0.0) is that integer; every nil is pseud.null; an array, a
 * map or an ext is a new table or userdata, equal to no other key. */
enum { S_KEY_NIL, S_KEY_BOOL, S_KEY_INT, S_KEY_FLOAT, S_KEY_STRING, S_KEY_UNIQUE };

static int s_key_kind(const msgpack_object *k, int64_t *i)
{
    switch (k->type) {
    case MSGPACK_OBJECT_NIL:
        return S_KEY_NIL;
    case MSGPACK_OBJECT_BOOLEAN:
        return S_KEY_BOOL;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *i = k->via.i64;                           /* pushed: fits int64 */
        return S_KEY_INT;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        /* Lua's rule (luaV_flttointns): in [-2^63, 2^63) and integral;
         * NaN fails both comparisons (and is refused as a key anyway) */
        if (k->via.f64 >= -0x1p63 && k->via.f64 < 0x1p63
            && (double)(int64_t)k->via.f64 == k->via.f64) {
            *i = (int64_t)k->via.f64;
            return S_KEY_INT;
        }
        return S_KEY_FLOAT;
    case MSGPACK_OBJECT_STR:
    case MSGPACK_OBJECT_BIN:
        return S_KEY_STRING;
    default:
        return S_KEY_UNIQUE;
    }
}

static int s_same_key(const msgpack_object *a, const msgpack_object *b)
{
    int64_t ia = 0, ib = 0;
    int ka = s_key_kind(a, &ia), kb = s_key_kind(b, &ib);
    if (ka != kb)
        return 0;
    switch (ka) {
    case S_KEY_NIL:    return 1;
    case S_KEY_BOOL:   return a->via.boolean == b->via.boolean;
    case S_KEY_INT:    return ia == ib;
    case S_KEY_FLOAT:  return a->via.f64 == b->via.f64;
    case S_KEY_STRING: return a->via.str.size == b->via.str.size   /* str and bin alike; */
                           && (a->via.str.size == 0                 /* "" may be NULL */
                               || memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size) == 0);
    default:           return 0;
    }
}

/* Pack, as codec.h says the codec will, the value msgpack-c read from the
 * input: integers in their smallest encoding, every float as float64, a
 * float key with an integer value as that integer, str or bin by UTF-8
 * validity alone, ext as it came, and of repeated map keys only the last.
 * A plain model of the mapping, written apart from codec.c, so that a
 * change of data the codec does not document shows as a difference. */
static void s_expect(const msgpack_object *o, msgpack_packer *pk, int is_key)
{
    int64_t i;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        msgpack_pack_nil(pk);
        return;
    case MSGPACK_OBJECT_BOOLEAN:
        if (o->via.boolean)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        return;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        msgpack_pack_int64(pk, o->via.i64);
        return;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (is_key && s_key_kind(o, &i) == S_KEY_INT)
            msgpack_pack_int64(pk, i);
        else
            msgpack_pack_double(pk, o->via.f64);
        return;
    case MSGPACK_OBJECT_STR:
    case MSGPACK_OBJECT_BIN:
        /* msgpack-c leaves ptr NULL for an empty one: no body to copy */
        if (s_utf8_reference((const uint8_t *)o->via.str.ptr, o->via.str.size)) {
            msgpack_pack_str(pk, o->via.str.size);
            if (o->via.str.size)
                msgpack_pack_str_body(pk, o->via.str.ptr, o->via.str.size);
        } else {
            msgpack_pack_bin(pk, o->via.str.size);
            if (o->via.str.size)
                msgpack_pack_bin_body(pk, o->via.str.ptr, o->via.str.size);
        }
        return;
    case MSGPACK_OBJECT_EXT:
        msgpack_pack_ext(pk, o->via.ext.size, o->via.ext.type);
        if (o->via.ext.size)
            msgpack_pack_ext_body(pk, o->via.ext.ptr, o->via.ext.size);
        return;
    case MSGPACK_OBJECT_ARRAY:
        msgpack_pack_array(pk, o->via.array.size);
        for (uint32_t k = 0; k < o->via.array.size; k++)
            s_expect(&o->via.array.ptr[k], pk, 0);
        return;
    case MSGPACK_OBJECT_MAP: {
        const msgpack_object_kv *kv = o->via.map.ptr;
        uint32_t n = o->via.map.size, kept = 0;
        /* an entry survives unless a later one has the same Lua key */
        for (uint32_t a = 0; a < n; a++) {
            uint32_t b = a + 1;
            while (b < n && !s_same_key(&kv[a].key, &kv[b].key))
                b++;
            kept += b == n;
        }
        msgpack_pack_map(pk, kept);
        for (uint32_t a = 0; a < n; a++) {
            uint32_t b = a + 1;
            while (b < n && !s_same_key(&kv[a].key, &kv[b].key))
                b++;
            if (b == n) {
                s_expect(&kv[a].key, pk, 1);
                s_expect(&kv[a].val, pk, 0);
            }
        }
        return;
    }
    default:
        abort();
    }
}

/* ------------------------------------------------------- the path */

/* pcall body: the object and the zone it lives in stay in the C frame
 * below, so an error raised here leaks nothing. */
static int s_push_protected(lua_State *L)
{
    const msgpack_object *obj = lua_touserdata(L, 1);
    lua_pop(L, 1);
    codec_push_object(L, obj);                     /* v */
    return 1;
}

/* Unpack a checked body and push its value: LUA_OK with the value on top,
 * or the pcall's status with the error on top. Unless NULL, `expect`
 * (initialised here, destroyed by the caller) gets s_expect's packing. */
static int s_unpack_push(lua_State *L, const char *data, size_t len, msgpack_sbuffer *expect)
{
    msgpack_object obj;
    msgpack_packer pk;
    size_t off = 0;
    int status;
    /* the gate's promise: what codec_check passed, msgpack-c parses whole */
    FUZZ_ASSERT(msgpack_unpack(data, len, &off, &g_zone, &obj) == MSGPACK_UNPACK_SUCCESS);
    FUZZ_ASSERT(off == len);
    if (expect) {
        msgpack_sbuffer_init(expect);
        msgpack_packer_init(&pk, expect, msgpack_sbuffer_write);
        s_expect(&obj, &pk, 0);
    }
    lua_pushcfunction(L, s_push_protected);        /* f */
    lua_pushlightuserdata(L, &obj);                /* f, obj */
    status = lua_pcall(L, 1, 1, 0);                /* v | err */
    msgpack_zone_clear(&g_zone);                   /* on every path */
    return status;
}

/* Pack the value on top of the stack into `sb` (initialised here; the
 * caller destroys it). A value the codec built always packs. */
static void s_pack_top(lua_State *L, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    codec_error_t err = {""};
    int top = lua_gettop(L);
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (codec_pack_value(L, -1, &pk, &g_lim, 0, &err) != 0) {
        fprintf(stderr, "fuzz_codec: %s\n", err.message);
        FUZZ_ASSERT(!"a value the codec built packs");
    }
    FUZZ_ASSERT(lua_gettop(L) == top);
}

/* Abort, showing both, unless `a` and `b` are the same up to map order. */
static void s_assert_same(const msgpack_sbuffer *a, const msgpack_sbuffer *b, const char *what)
{
    if (s_same_canonical(a, b))
        return;
    fprintf(stderr, "fuzz_codec: %s differ:\n  ", what);
    for (size_t i = 0; i < a->size && i < 200; i++)
        fprintf(stderr, "%02x", (unsigned char)a->data[i]);
    fprintf(stderr, "\n  ");
    for (size_t i = 0; i < b->size && i < 200; i++)
        fprintf(stderr, "%02x", (unsigned char)b->data[i]);
    fprintf(stderr, "\n");
    FUZZ_ASSERT(!"the same value up to map order");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    codec_error_t err = {""};
    msgpack_sbuffer expect, second, third;
    lua_State *L;
    int status;

    if (g_L == NULL)
        s_init();
    L = g_L;
    FUZZ_ASSERT(codec_is_utf8(body, size) == s_utf8_reference(data, size));
    if (size > 0)
        FUZZ_ASSERT(codec_is_utf8(body + 1, size - 1) == s_utf8_reference(data + 1, size - 1));

    if (codec_check(body, size, &g_lim, &err) != 0) {
        FUZZ_ASSERT(err.message[0] != '\0');       /* a refusal says why */
        return 0;
    }
    status = s_unpack_push(L, body, size, &expect);        /* v | err */
    if (status != LUA_OK) {
        const char *why = lua_tostring(L, -1);
        FUZZ_ASSERT(status == LUA_ERRRUN && why != NULL);
        FUZZ_ASSERT(strstr(why, "does not fit a Lua integer") || strstr(why, "map key is NaN"));
        msgpack_sbuffer_destroy(&expect);
        lua_settop(L, 0);
        return 0;
    }
    FUZZ_ASSERT(lua_gettop(L) == 1);
    s_pack_top(L, &second);
    lua_settop(L, 0);
    s_assert_same(&expect, &second, "the input as codec.h maps it and packing #2");

    /* #2, our own packing, goes the same way and must not change again */
    FUZZ_ASSERT(codec_check(second.data, second.size, &g_lim, &err) == 0);
    FUZZ_ASSERT(s_unpack_push(L, second.data, second.size, NULL) == LUA_OK);
    s_pack_top(L, &third);
    lua_settop(L, 0);
    FUZZ_ASSERT(codec_check(third.data, third.size, &g_lim, &err) == 0);
    s_assert_same(&second, &third, "packings #2 and #3");
    msgpack_sbuffer_destroy(&expect);
    msgpack_sbuffer_destroy(&second);
    msgpack_sbuffer_destroy(&third);

    if (++g_runs % S_GC_EVERY == 0)
        lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
