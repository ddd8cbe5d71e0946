/*
 * codec: msgpack <-> Lua values, with limits that turn hostile input into an
 * error instead of a crash or a giant allocation.
 *
 * Packing writes through msgpack-c's packer and never raises: it returns -1
 * with a message in `err` (unsupported type, too deep, cycle, out of memory).
 *
 * Unpacking is two steps. codec_check() walks the bytes without allocating and
 * refuses a body whose declared counts or lengths exceed what is left, whose
 * nesting passes the depth limit, or that breaks a size limit: msgpack-c 4.0
 * reserves n * sizeof(msgpack_object) from a declared count before reading,
 * and stops at 32 levels, so it must only ever see checked input. Then the
 * caller runs msgpack_unpack() into a zone it owns and codec_push_object()
 * turns the result into Lua values. codec_push_object() may raise (memory):
 * call it inside a lua_pcall, with the zone owned by a frame below.
 *
 * Unpacking, step by step (the zone and the body bytes live in the frame
 * below the pcall; msgpack-c's str/bin/ext objects point INTO the body, so
 * the body must outlive codec_push_object):
 *   codec_check(data, len, &lim, &err)            refuse with err.message
 *   msgpack_unpack(data, len, &off, &zone, &obj)  expect MSGPACK_UNPACK_SUCCESS
 *   lua_pcall of a C function calling codec_push_object(L, &obj)
 *   msgpack_zone_clear(&zone)                     on every path, then reuse
 * A checked body costs the zone 24 bytes per value (x86-64), up to twice
 * that with msgpack-c's chunk rounding: max_elements bounds it (under 50 MiB
 * at the defaults). msgpack_zone_clear keeps the first chunk and frees the
 * rest, so one zone (msgpack_zone_init once) can serve every body.
 *
 * Mapping (DESIGN.md section 1):
 *   nil <-> nil; pseud.null (light userdata NULL) packs as nil and stands for
 *   nil inside arrays and maps; booleans; integers stay integers, floats stay
 *   floats (float32 arrives as a Lua float); valid UTF-8 strings pack as str,
 *   others as bin; str and bin both arrive as Lua strings; a table is an array
 *   when its keys are exactly 1..n (n >= 0, so {} is an empty array) unless its
 *   metatable is the "pseud.Map" or "pseud.Kwargs" one, which pack as maps;
 *   decoded maps get the "pseud.Map" metatable so they pack back as maps;
 *   ext values are "pseud.Ext" userdata (codec_ext_t) and pack back unchanged.
 *   A uint64 above LUA_MAXINTEGER is an error, never silently a float.
 *   Nil inside an array or map (key or value) arrives as pseud.null; a nil
 *   body arrives as nil. Packing refuses functions, threads, userdata other
 *   than pseud.Ext, light userdata other than pseud.null, and tables nested
 *   past max_depth (so cycles); NaN and infinities pack as floats.
 *   What Lua itself reshapes (not the codec): an integral float map key
 *   (2.0) becomes an integer key, a repeated map key keeps its last value,
 *   a NaN map key is refused, and map entries pack in Lua's table order,
 *   not the order they came in; that order hangs on the table's size and
 *   insertion order, so a second round trip may reorder them again
 *   (compare packed maps as sets). A bin whose bytes are valid UTF-8 packs
 *   back as str, float32 packs back as float64, and integers pack back in
 *   their smallest encoding.
 */
#ifndef PSEUD_CODEC_H
#define PSEUD_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>
#include <msgpack.h>

#include "codec_check.h"

/* Registry names of the metatables the binding creates and the codec reads. */
#define CODEC_MAP_MT    "pseud.Map"
#define CODEC_KWARGS_MT "pseud.Kwargs"
#define CODEC_EXT_MT    "pseud.Ext"

/* An ext value: the payload follows the header in the same userdata block. */
typedef struct codec_ext {
    int8_t type;          /* msgpack ext type, -128..127 */
    size_t size;          /* payload bytes */
    char data[];          /* payload */
} codec_ext_t;

/* Pack the Lua value at `idx` (absolute or relative) with `pk`. `depth` is the
 * nesting already used by the caller (0 at top level). Never raises and runs
 * no Lua code (raw access only; __index, __pairs, __len are ignored); uses
 * only lim->max_depth. Leaves the Lua stack as it found it. Returns 0, or -1
 * with `err` filled; on -1 the packer holds a partial value: discard it. */
int codec_pack_value(lua_State *L, int idx, msgpack_packer *pk,
                     const codec_limits_t *lim, int depth, codec_error_t *err);

/* Push the Lua value of `obj` (from a checked body). May raise: memory,
 * an integer above LUA_MAXINTEGER, a NaN map key; call it inside lua_pcall.
 * Checks the Lua stack for the slots each level needs. Recursive: depth is
 * bounded only by codec_check, so never hand it an unchecked body. */
void codec_push_object(lua_State *L, const msgpack_object *obj);
/* luaL_setmetatable for the host's table classes (maps, kwargs, errors):
 * scripts reach those metatables (pseud.RemoteError, getmetatable), and a
 * __gc put in one Lua would run itself, hooks off, unbounded, for every
 * value the host makes (an attack round): it is taken out first. */
void codec_set_class(lua_State *L, const char *tname);

/* Push a new pseud.Ext userdata holding a copy of `data` (metatable from the
 * registry's CODEC_EXT_MT). May raise (memory). */
codec_ext_t *codec_push_ext(lua_State *L, int8_t type, const char *data, size_t size);

#endif
