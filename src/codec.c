/*
 * codec.c: msgpack <-> Lua values under the limits of codec_limits_t.
 *
 * Owns no memory. Packing walks a Lua value with the raw API (no metamethod
 * runs, so no Lua code and no error can interrupt it) and writes through the
 * caller's msgpack_packer; every failure comes back as -1 and a message.
 * codec_push_object() builds Lua values from what msgpack_unpack() made of a
 * body codec_check() passed (codec_check.c, without Lua); it may raise, so
 * it runs inside a lua_pcall while the zone and the body stay owned by a
 * frame below.
 *
 * Not here: zones, buffers, frames and metatable creation (lpseud.c).
 */
#include "codec.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>


/* ---------------------------------------------------------------- packing */

/* A packer write fails only when its buffer cannot grow. */
#define S_PUT(call) \
    do { if ((call) != 0) return codec_fail(err, "msgpack: out of memory"); } while (0)

static int s_pack(lua_State *L, int idx, msgpack_packer *pk,
                  const codec_limits_t *lim, int depth, codec_error_t *err);

static int s_pack_string(lua_State *L, int idx, msgpack_packer *pk,
                         codec_error_t *err)
{
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);   /* a string: no conversion */

    /* msgpack lengths are 32 bits; msgpack-c would truncate silently */
    if (len > UINT32_MAX)
        return codec_fail(err, "msgpack: string of %zu bytes is longer than msgpack allows", len);
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
        return codec_fail(err, "msgpack: nesting deeper than %d levels", lim->max_depth);
    /* This level holds a key and a value; a child's metatable test (table
     * mark or pseud.Ext) briefly needs 2 more. */
    if (!lua_checkstack(L, 4))
        return codec_fail(err, "msgpack: out of Lua stack space");

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
        return codec_fail(err, "msgpack: table of %zu entries is larger than msgpack allows", count);

    /* The second pass re-checks what the first saw: only an emergency GC
     * clearing a weak table could change it, and a short or holed body must
     * never go out. */
    if (!is_map) {
        S_PUT(msgpack_pack_array(pk, count));
        for (size_t i = 1; i <= count; i++) {
            if (lua_rawgeti(L, idx, (lua_Integer)i) == LUA_TNIL)   /* value */
                return codec_fail(err, "msgpack: table changed while packing");
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
            return codec_fail(err, "msgpack: table changed while packing");
        if (s_pack(L, top - 1, pk, lim, depth + 1, err)
            || s_pack(L, top, pk, lim, depth + 1, err))
            return -1;
        lua_pop(L, 1);                             /* key */
    }
    if (seen != count)
        return codec_fail(err, "msgpack: table changed while packing");
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
        return codec_fail(err, "msgpack: cannot pack a light userdata other than pseud.null");
    case LUA_TUSERDATA: {
        const codec_ext_t *ext = luaL_testudata(L, idx, CODEC_EXT_MT);
        if (ext == NULL)
            return codec_fail(err, "msgpack: cannot pack a userdata that is not pseud.Ext");
        if (ext->size > UINT32_MAX)
            return codec_fail(err, "msgpack: ext of %zu bytes is longer than msgpack allows", ext->size);
        S_PUT(msgpack_pack_ext(pk, ext->size, ext->type));
        S_PUT(msgpack_pack_ext_body(pk, ext->data, ext->size));
        return 0;
    }
    default:                                       /* function, thread */
        return codec_fail(err, "msgpack: cannot pack a %s", lua_typename(L, type));
    }
}

int codec_pack_value(lua_State *L, int idx, msgpack_packer *pk,
                     const codec_limits_t *lim, int depth, codec_error_t *err)
{
    int top = lua_gettop(L);
    idx = lua_absindex(L, idx);
    /* a top-level pseud.Ext test needs 2 slots */
    if (!lua_checkstack(L, 2))
        return codec_fail(err, "msgpack: out of Lua stack space");
    if (s_pack(L, idx, pk, lim, depth, err) == 0)
        return 0;
    lua_settop(L, top);                            /* an error leaves levels pushed */
    return -1;
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
        codec_set_class(L, CODEC_MAP_MT);          /* packs back as a map */
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

void codec_set_class(lua_State *L, const char *tname) {
    luaL_getmetatable(L, tname);
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, -2) != LUA_TNIL) {
        lua_pushliteral(L, "__gc");
        lua_pushnil(L);
        lua_rawset(L, -4);
    }
    lua_pop(L, 1);
    lua_setmetatable(L, -2);
}

void codec_push_object(lua_State *L, const msgpack_object *obj)
{
    luaL_checkstack(L, 1, "msgpack value");
    s_push(L, obj, 0);
}
