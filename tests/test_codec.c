/*
 * test_codec: the msgpack <-> Lua codec alone (no sockets, no binding).
 *
 * Each check prints one line when it fails; the last line is a summary and
 * the exit status is non-zero when any check failed. Covers every type both
 * ways, each limit at its value and one past it with the exact message,
 * hostile bodies, packing errors, a seeded random round trip, mutated bodies
 * that codec_check accepts must unpack, and an allocator that fails the Nth
 * allocation so every LUA_ERRMEM path of codec_push_object runs (leaks and
 * crashes show under ASan).
 *
 * The metatables the binding owns are made here the same way (empty).
 * Lua helpers: null, Map, Kwargs, Ext (the metatables), map(t), kwargs(t),
 * ext(type, data), exttype(e), extdata(e), lud() (a non-NULL light userdata),
 * nest(n, leaf).
 *
 * The random values come from a fixed seed, but Lua seeds its string hash
 * per run, so map key order in the packed bytes (and with it which bytes the
 * mutations hit) varies: a failure prints the body in hex to replay it.
 */
#include "codec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

static int g_checks, g_failed;

#include "check.h"

/* ---------------------------------------------------------------- helpers */

static char *s_hex(const char *data, size_t len)
{
    static char out[4096];
    size_t i;
    for (i = 0; i < len && i * 2 + 2 < sizeof out; i++)
        sprintf(out + i * 2, "%02x", (unsigned char)data[i]);
    out[i * 2] = '\0';
    return out;
}

/* Hex (spaces ignored) to bytes in a malloc'd buffer; caller frees. */
static char *s_unhex(const char *hex, size_t *len)
{
    char *out = malloc(strlen(hex) / 2 + 1);
    size_t n = 0;
    while (*hex) {
        unsigned v;
        if (*hex == ' ') { hex++; continue; }
        sscanf(hex, "%2x", &v);
        out[n++] = (char)v;
        hex += 2;
    }
    *len = n;
    return out;
}

static int l_ext(lua_State *L)
{
    size_t len;
    lua_Integer type = luaL_checkinteger(L, 1);
    const char *data = luaL_checklstring(L, 2, &len);
    codec_push_ext(L, (int8_t)type, data, len);
    return 1;
}

static int l_exttype(lua_State *L)
{
    codec_ext_t *e = luaL_checkudata(L, 1, CODEC_EXT_MT);
    lua_pushinteger(L, e->type);
    return 1;
}

static int l_extdata(lua_State *L)
{
    codec_ext_t *e = luaL_checkudata(L, 1, CODEC_EXT_MT);
    lua_pushlstring(L, e->data, e->size);
    return 1;
}

static int l_lud(lua_State *L)
{
    static char thing;
    lua_pushlightuserdata(L, &thing);
    return 1;
}

static void s_setup(lua_State *L)
{
    luaL_openlibs(L);
    luaL_newmetatable(L, CODEC_MAP_MT);    lua_setglobal(L, "Map");
    luaL_newmetatable(L, CODEC_KWARGS_MT); lua_setglobal(L, "Kwargs");
    luaL_newmetatable(L, CODEC_EXT_MT);    lua_setglobal(L, "Ext");
    lua_pushlightuserdata(L, NULL);        lua_setglobal(L, "null");
    lua_register(L, "ext", l_ext);
    lua_register(L, "exttype", l_exttype);
    lua_register(L, "extdata", l_extdata);
    lua_register(L, "lud", l_lud);
    if (luaL_dostring(L,
            "function map(t) return setmetatable(t or {}, Map) end "
            "function kwargs(t) return setmetatable(t or {}, Kwargs) end "
            "function nest(n, leaf) local t = leaf for i = 1, n do t = {t} end return t end"))
        printf("setup: %s\n", lua_tostring(L, -1));
}

/* Evaluate a Lua expression and leave its value on the stack; 0 on error. */
static int s_eval(lua_State *L, const char *expr)
{
    char code[1024];
    snprintf(code, sizeof code, "return %s", expr);
    if (luaL_loadstring(L, code) || lua_pcall(L, 0, 1, 0)) {
        printf("eval error in <%s>: %s\n", expr, lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

typedef struct s_pack_call {
    const codec_limits_t *lim;
    msgpack_sbuffer *sb;
    codec_error_t *err;
    int rc, top_before, top_after;
} s_pack_call_t;

/* Packs argument 1 from inside a C function, as the binding will: a fresh
 * frame has exactly LUA_MINSTACK slots, so a missing lua_checkstack shows
 * (under a Lua built with LUA_USE_APICHECK). */
static int s_pack_in_frame(lua_State *L)
{
    s_pack_call_t *c = lua_touserdata(L, 2);
    msgpack_packer pk;
    lua_settop(L, 1);
    msgpack_packer_init(&pk, c->sb, msgpack_sbuffer_write);
    c->top_before = lua_gettop(L);
    c->rc = codec_pack_value(L, 1, &pk, c->lim, 0, c->err);
    c->top_after = lua_gettop(L);
    return 0;
}

/* Pack the value on top of the stack (popped). Returns 0 and the bytes in
 * `sb`, or -1 and the message in `err`. */
static int s_pack_top(lua_State *L, const codec_limits_t *lim, msgpack_sbuffer *sb,
                      codec_error_t *err)
{
    s_pack_call_t c = {lim, sb, err, -1, 0, 0};
    msgpack_sbuffer_init(sb);
    lua_pushcfunction(L, s_pack_in_frame);         /* v, f */
    lua_insert(L, -2);                             /* f, v */
    lua_pushlightuserdata(L, &c);                  /* f, v, c */
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        CHECK(0, "codec_pack_value raised: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    CHECK(c.top_after == c.top_before, "pack left the stack at %d, not %d", c.top_after, c.top_before);
    return c.rc;
}

#define PACK(expr, hex) s_check_pack(L, __LINE__, expr, NULL, hex, NULL)
#define PACK_LIM(expr, lim, hex) s_check_pack(L, __LINE__, expr, lim, hex, NULL)
#define PACK_ERR(expr, lim, msg) s_check_pack(L, __LINE__, expr, lim, NULL, msg)

static void s_check_pack(lua_State *L, int line, const char *expr, const codec_limits_t *lim,
                         const char *hex, const char *msg)
{
    codec_limits_t def;
    msgpack_sbuffer sb;
    codec_error_t err = {""};
    int rc;
    if (lim == NULL) {
        codec_limits_init(&def);
        lim = &def;
    }
    if (!s_eval(L, expr)) {
        CHECK(0, "line %d: cannot evaluate %s", line, expr);
        return;
    }
    rc = s_pack_top(L, lim, &sb, &err);
    if (hex) {
        CHECK(rc == 0, "line %d: pack %s failed: %s", line, expr, err.message);
        if (rc == 0)
            CHECK(strcmp(s_hex(sb.data, sb.size), hex) == 0,
                  "line %d: pack %s = %s, want %s", line, expr, s_hex(sb.data, sb.size), hex);
    } else {
        CHECK(rc == -1, "line %d: pack %s succeeded, want error", line, expr);
        CHECK(rc == 0 || strcmp(err.message, msg) == 0,
              "line %d: pack %s: \"%s\", want \"%s\"", line, expr, err.message, msg);
    }
    msgpack_sbuffer_destroy(&sb);
}

/* One zone for every body, cleared after each: the pattern codec.h gives. */
static msgpack_zone g_zone;

/* pcall body: the zone and object stay in the C frame of s_unpack. */
static int s_push_protected(lua_State *L)
{
    const msgpack_object *obj = lua_touserdata(L, 1);
    lua_pop(L, 1);
    codec_push_object(L, obj);
    return 1;
}

/* Check, unpack and push a body: LUA_OK with the value on top, or an error
 * status with the message on top (codec_check failures: LUA_ERRRUN). */
static int s_unpack(lua_State *L, const char *data, size_t len, const codec_limits_t *lim)
{
    codec_limits_t def;
    codec_error_t err;
    msgpack_object obj;
    size_t off = 0;
    int status;
    if (lim == NULL) {
        codec_limits_init(&def);
        lim = &def;
    }
    if (codec_check(data, len, lim, &err)) {
        lua_pushstring(L, err.message);
        return LUA_ERRRUN;
    }
    if (msgpack_unpack(data, len, &off, &g_zone, &obj) != MSGPACK_UNPACK_SUCCESS || off != len) {
        msgpack_zone_clear(&g_zone);
        lua_pushstring(L, "msgpack-c refused a checked body");
        return LUA_ERRERR;
    }
    lua_pushcfunction(L, s_push_protected);
    lua_pushlightuserdata(L, &obj);
    status = lua_pcall(L, 1, 1, 0);
    msgpack_zone_clear(&g_zone);                   /* on every path */
    return status;
}

/* Unpack `hex` and evaluate the Lua predicate `pred` on it (as v). */
#define UNPACK(hex, pred) s_check_unpack(L, __LINE__, hex, pred, NULL, NULL)
#define UNPACK_ERR(hex, lim, msg) s_check_unpack(L, __LINE__, hex, NULL, lim, msg)

static void s_check_unpack(lua_State *L, int line, const char *hex, const char *pred,
                           const codec_limits_t *lim, const char *msg)
{
    size_t len;
    char *data = s_unhex(hex, &len);
    int status = s_unpack(L, data, len, lim);
    free(data);
    if (msg) {
        CHECK(status != LUA_OK, "line %d: unpack %s succeeded, want error", line, hex);
        if (status != LUA_OK)
            CHECK(strcmp(lua_tostring(L, -1), msg) == 0,
                  "line %d: unpack %s: \"%s\", want \"%s\"", line, hex, lua_tostring(L, -1), msg);
        lua_pop(L, 1);
        return;
    }
    CHECK(status == LUA_OK, "line %d: unpack %s failed: %s", line, hex,
          status == LUA_OK ? "" : lua_tostring(L, -1));
    if (status != LUA_OK) {
        lua_pop(L, 1);
        return;
    }
    {
        char code[1024];
        snprintf(code, sizeof code, "return function(v) return %s end", pred);
        if (luaL_dostring(L, code)) {
            CHECK(0, "line %d: bad predicate %s: %s", line, pred, lua_tostring(L, -1));
            lua_pop(L, 2);
            return;
        }
        lua_insert(L, -2);                         /* pred, v */
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            CHECK(0, "line %d: predicate %s raised %s", line, pred, lua_tostring(L, -1));
        } else {
            CHECK(lua_toboolean(L, -1), "line %d: unpack %s: not %s", line, hex, pred);
        }
        lua_pop(L, 1);
    }
}

/* codec_check alone: msg NULL means the body must pass. */
#define CHECK_BODY(data, len, lim, msg) s_check_body(__LINE__, data, len, lim, msg)

static void s_check_body(int line, const char *data, size_t len, const codec_limits_t *lim,
                         const char *msg)
{
    codec_limits_t def;
    codec_error_t err = {""};
    int rc;
    if (lim == NULL) {
        codec_limits_init(&def);
        lim = &def;
    }
    rc = codec_check(data, len, lim, &err);
    if (msg == NULL) {
        CHECK(rc == 0, "line %d: check refused: %s", line, err.message);
    } else {
        CHECK(rc == -1, "line %d: check passed, want \"%s\"", line, msg);
        CHECK(rc == 0 || strcmp(err.message, msg) == 0,
              "line %d: check: \"%s\", want \"%s\"", line, err.message, msg);
    }
}

static void s_check_hex(int line, const char *hex, const codec_limits_t *lim, const char *msg)
{
    size_t len;
    char *data = s_unhex(hex, &len);
    s_check_body(line, data, len, lim, msg);
    free(data);
}
#define CHECK_HEX(hex, lim, msg) s_check_hex(__LINE__, hex, lim, msg)

/* Type-exact deep equality: integer vs float, float bits, metatables. */
static int s_deep_equal(lua_State *L, int a, int b)
{
    int t = lua_type(L, a);
    /* k, va, vb per level, or two metatables: the helpers obey the same
     * stack rule as the codec (an overflow here corrupts liblua silently) */
    luaL_checkstack(L, 3, "deep_equal");
    a = lua_absindex(L, a);
    b = lua_absindex(L, b);
    if (t != lua_type(L, b))
        return 0;
    switch (t) {
    case LUA_TNIL:
        return 1;
    case LUA_TBOOLEAN:
        return lua_toboolean(L, a) == lua_toboolean(L, b);
    case LUA_TNUMBER:
        if (lua_isinteger(L, a) != lua_isinteger(L, b))
            return 0;
        if (lua_isinteger(L, a))
            return lua_tointeger(L, a) == lua_tointeger(L, b);
        {
            lua_Number x = lua_tonumber(L, a), y = lua_tonumber(L, b);
            return memcmp(&x, &y, sizeof x) == 0;
        }
    case LUA_TSTRING:
    case LUA_TLIGHTUSERDATA:
        return lua_rawequal(L, a, b);
    case LUA_TUSERDATA: {
        codec_ext_t *x = luaL_testudata(L, a, CODEC_EXT_MT);
        codec_ext_t *y = luaL_testudata(L, b, CODEC_EXT_MT);
        return x && y && x->type == y->type && x->size == y->size
            && memcmp(x->data, y->data, x->size) == 0;
    }
    case LUA_TTABLE: {
        size_t na = 0, nb = 0;
        int ok = 1, ma = lua_getmetatable(L, a), mb = lua_getmetatable(L, b);
        if (ma != mb || (ma && !lua_rawequal(L, -1, -2)))
            ok = 0;
        lua_pop(L, ma + mb);
        lua_pushnil(L);
        while (ok && lua_next(L, a)) {             /* k, va */
            na++;
            lua_pushvalue(L, -2);                  /* k, va, k */
            lua_rawget(L, b);                      /* k, va, vb */
            ok = s_deep_equal(L, -2, -1);
            lua_pop(L, 2);                         /* k */
        }
        if (!ok) {
            lua_pop(L, 1);
            return 0;
        }
        lua_pushnil(L);
        while (lua_next(L, b)) {
            nb++;
            lua_pop(L, 1);
        }
        return na == nb;
    }
    default:
        return 0;
    }
}

/* ------------------------------------------------------------ type tests */

static void test_pack_types(lua_State *L)
{
    PACK("nil", "c0");
    PACK("null", "c0");
    PACK("true", "c3");
    PACK("false", "c2");
    PACK("0", "00");
    PACK("127", "7f");
    PACK("128", "cc80");
    PACK("-1", "ff");
    PACK("-32", "e0");
    PACK("-33", "d0df");
    PACK("256", "cd0100");
    PACK("65536", "ce00010000");
    PACK("-40000", "d2ffff63c0");
    PACK("1 << 32", "cf0000000100000000");
    PACK("math.maxinteger", "cf7fffffffffffffff");
    PACK("math.mininteger", "d38000000000000000");
    PACK("1.0", "cb3ff0000000000000");
    PACK("-0.0", "cb8000000000000000");
    PACK("0.5", "cb3fe0000000000000");
    PACK("1/0", "cb7ff0000000000000");
    PACK("-1/0", "cbfff0000000000000");
    PACK("string.unpack('<d', string.pack('<I8', 0x7ff8000000000001))", "cb7ff8000000000001");
    PACK("2^53", "cb4340000000000000");
    PACK("''", "a0");
    PACK("'abc'", "a3616263");
    PACK("'\\xc3\\xa9'", "a2c3a9");                       /* é */
    PACK("'\\xf0\\x9f\\x98\\x80'", "a4f09f9880");         /* U+1F600 */
    PACK("'\\xef\\xbf\\xbf'", "a3efbfbf");                /* U+FFFF */
    PACK("'\\xf4\\x8f\\xbf\\xbf'", "a4f48fbfbf");         /* U+10FFFF */
    PACK("'\\xff'", "c401ff");
    PACK("'\\xc0\\x80'", "c402c080");                     /* overlong NUL */
    PACK("'\\xe0\\x9f\\xbf'", "c403e09fbf");              /* overlong 3-byte */
    PACK("'\\xf0\\x8f\\xbf\\xbf'", "c404f08fbfbf");       /* overlong 4-byte */
    PACK("'\\xed\\xa0\\x80'", "c403eda080");              /* surrogate */
    PACK("'\\xf4\\x90\\x80\\x80'", "c404f4908080");       /* above U+10FFFF */
    PACK("'abc\\xc3'", "c404616263c3");                   /* cut sequence */
    PACK("'\\0'", "a100");
    PACK("('a'):rep(31)", "bf61616161616161616161616161616161616161616161616161616161616161");
    PACK("'\\x80'", "c40180");
    PACK("('a'):rep(32)", "d920" "6161616161616161616161616161616161616161616161616161616161616161");
    PACK("{}", "90");
    PACK("map()", "80");
    PACK("kwargs()", "80");
    PACK("{1, 2, 3}", "93010203");
    PACK("{1, null, 3}", "9301c003");
    PACK("{null}", "91c0");
    PACK("map{1, 2}", "8201010202");
    PACK("{a = 1}", "81a16101");
    PACK("kwargs{a = 1}", "81a16101");
    PACK("{[2] = 'x'}", "8102a178");
    PACK("{[0] = 1}", "810001");
    PACK("{[-1] = 1}", "81ff01");
    PACK("{[true] = 1}", "81c301");
    PACK("{[1.5] = 2}", "81cb3ff800000000000002");
    PACK("{[{}] = 1}", "819001");
    PACK("{[null] = null}", "81c0c0");
    PACK("{{1}, {a = {}}}", "92910181a16190");
    PACK("setmetatable({1}, {__index = function() return 1 end})", "9101");
    PACK("setmetatable({}, {__pairs = function() error('no') end, __len = function() return 3 end})", "90");
    PACK("ext(1, 'ab')", "d5016162");
    PACK("ext(5, 'x')", "d40578");
    PACK("ext(-1, '')", "c700ff");
    PACK("ext(-128, ('z'):rep(16))", "d8807a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a");
    PACK("ext(127, 'abc')", "c7037f616263");
    /* a pickled datetime the way Python pseud 1.0 sends one: opaque bytes */
    PACK("ext(123, '\\x80\\x04\\x95\\x2b')", "d67b8004952b");
    PACK("{ext(124, '')}", "91c7007c");
}

/* Pack the value of `expr` and return the bytes (malloc'd) or NULL. */
static char *s_pack_expr(lua_State *L, const char *expr, size_t *len)
{
    codec_limits_t lim;
    msgpack_sbuffer sb;
    codec_error_t err;
    codec_limits_init(&lim);
    if (!s_eval(L, expr))
        return NULL;
    if (s_pack_top(L, &lim, &sb, &err)) {
        msgpack_sbuffer_destroy(&sb);
        return NULL;
    }
    *len = sb.size;
    return msgpack_sbuffer_release(&sb);
}

static void test_pack_long_headers(lua_State *L)
{
    static const struct { const char *expr; const char *head; size_t total; } rows[] = {
        {"('a'):rep(255)", "d9ff", 2 + 255},
        {"('a'):rep(256)", "da0100", 3 + 256},
        {"('a'):rep(65536)", "db00010000", 5 + 65536},
        {"('\\xff'):rep(256)", "c50100", 3 + 256},
        {"('\\xff'):rep(65536)", "c600010000", 5 + 65536},
        {"ext(7, ('e'):rep(300))", "c8012c07", 4 + 300},
        {"ext(7, ('e'):rep(70000))", "c90001117007", 6 + 70000},
        {"(function() local t = {} for i = 1, 16 do t[i] = i end return t end)()", "dc0010", 3 + 16},
        {"(function() local t = {} for i = 1, 70000 do t[i] = 0 end return t end)()", "dd00011170", 5 + 70000},
        {"(function() local t = map() for i = 1, 16 do t[i] = 0 end return t end)()", "de0010", 3 + 32},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        size_t len = 0, hl = strlen(rows[i].head) / 2;
        char *b = s_pack_expr(L, rows[i].expr, &len);
        CHECK(b != NULL, "pack %s failed", rows[i].expr);
        if (!b)
            continue;
        CHECK(len == rows[i].total, "pack %s: %zu bytes, want %zu", rows[i].expr, len, rows[i].total);
        CHECK(strcmp(s_hex(b, hl), rows[i].head) == 0, "pack %s: head %s, want %s",
              rows[i].expr, s_hex(b, hl), rows[i].head);
        free(b);
    }
}

static void test_pack_errors(lua_State *L)
{
    codec_limits_t lim;
    char want[80];
    codec_limits_init(&lim);
    lim.max_depth = 3;

    PACK_ERR("print", NULL, "msgpack: cannot pack a function");
    PACK_ERR("{1, print}", NULL, "msgpack: cannot pack a function");
    PACK_ERR("{[print] = 1}", NULL, "msgpack: cannot pack a function");
    PACK_ERR("map{x = {y = print}}", NULL, "msgpack: cannot pack a function");
    PACK_ERR("coroutine.create(print)", NULL, "msgpack: cannot pack a thread");
    PACK_ERR("io.stdout", NULL, "msgpack: cannot pack a userdata that is not pseud.Ext");
    PACK_ERR("{a = {b = io.stdout}}", NULL, "msgpack: cannot pack a userdata that is not pseud.Ext");
    PACK_ERR("lud()", NULL, "msgpack: cannot pack a light userdata other than pseud.null");
    /* cycles end at the depth limit */
    PACK_ERR("(function() local t = {} t[1] = t return t end)()", NULL,
             "msgpack: nesting deeper than 32 levels");
    PACK_ERR("(function() local t = map() t.x = t return t end)()", NULL,
             "msgpack: nesting deeper than 32 levels");
    PACK_ERR("(function() local t = {} t[t] = 1 return t end)()", NULL,
             "msgpack: nesting deeper than 32 levels");
    /* depth rows: the limit passes, one past it fails (empty tables count) */
    PACK_LIM("nest(3, 1)", &lim, "91919101");
    PACK_LIM("nest(2, {})", &lim, "919190");
    PACK_ERR("nest(4, 1)", &lim, "msgpack: nesting deeper than 3 levels");
    PACK_ERR("nest(3, {})", &lim, "msgpack: nesting deeper than 3 levels");
    PACK_ERR("nest(2, map{a = map()})", &lim, "msgpack: nesting deeper than 3 levels");
    PACK_ERR("nest(33, 1)", NULL, "msgpack: nesting deeper than 32 levels");
    {
        char hex[80];
        memset(hex, '9', 64);
        for (int i = 1; i < 64; i += 2)
            hex[i] = '1';
        strcpy(hex + 64, "01");
        PACK("nest(32, 1)", hex);
    }
    /* deep nesting with pseud.Ext leaves: the leaf's metatable test needs
     * stack slots above each level's key and value */
    {
        char hex[400] = "", tail[400] = "";
        for (int i = 0; i < 31; i++)
            strcat(hex, "81a178");
        strcat(hex, "d40161");
        PACK("(function() local t = ext(1, 'a') for i = 1, 31 do t = map{x = t} end return t end)()", hex);
        for (int i = 0; i < 31; i++)
            strcat(tail, "81");
        strcat(tail, "d4016101");
        for (int i = 0; i < 30; i++)
            strcat(tail, "01");
        /* {[{[ext] = 1}] = 1}: ext as the innermost key */
        PACK("(function() local t = map{[ext(1, 'a')] = 1} for i = 1, 30 do t = map{[t] = 1} end return t end)()",
             tail);
        PACK("nest(31, ext(1, 'a'))", "91919191919191919191919191919191919191919191919191919191919191d40161");
    }
    /* NaN and infinities are ordinary msgpack floats */
    {
        size_t len;
        char *b = s_pack_expr(L, "{0/0, 1/0, -1/0}", &len);
        CHECK(b && len == 28 && (unsigned char)b[1] == 0xcb, "pack NaN/inf failed");
        free(b);
    }
    /* `depth` is what the caller already used */
    {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        codec_error_t err;
        codec_limits_t def;
        codec_limits_init(&def);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        s_eval(L, "{1}");
        CHECK(codec_pack_value(L, -1, &pk, &def, 31, &err) == 0, "{1} at depth 31 refused");
        lua_pop(L, 1);
        s_eval(L, "{{1}}");
        CHECK(codec_pack_value(L, -1, &pk, &def, 31, &err) == -1, "{{1}} at depth 31 packed");
        snprintf(want, sizeof want, "msgpack: nesting deeper than %d levels", 32);
        CHECK(strcmp(err.message, want) == 0, "depth param: %s", err.message);
        lua_pop(L, 1);
        msgpack_sbuffer_destroy(&sb);
    }
}

/* A packer whose buffer refuses to grow past `budget` bytes. */
typedef struct s_capped {
    size_t budget;
    msgpack_sbuffer sb;
} s_capped_t;

static int s_capped_write(void *data, const char *buf, size_t len)
{
    s_capped_t *c = data;
    if (len > c->budget)
        return -1;
    c->budget -= len;
    return msgpack_sbuffer_write(&c->sb, buf, len);
}

static void test_pack_out_of_memory(lua_State *L)
{
    const char *expr = "{1, 'two', {3.5, map{x = ext(1, 'abcd'), [true] = null}}, ('\\xff'):rep(40)}";
    codec_limits_t lim;
    size_t full = 0;
    char *want = s_pack_expr(L, expr, &full);
    codec_limits_init(&lim);
    CHECK(want != NULL, "cannot pack %s", expr);
    s_eval(L, expr);
    for (size_t budget = 0; budget <= full; budget++) {
        s_capped_t c = {budget, {0, NULL, 0}};
        msgpack_packer pk;
        codec_error_t err = {""};
        int top = lua_gettop(L), rc;
        msgpack_sbuffer_init(&c.sb);
        msgpack_packer_init(&pk, &c, s_capped_write);
        rc = codec_pack_value(L, -1, &pk, &lim, 0, &err);
        CHECK(lua_gettop(L) == top, "budget %zu: stack %d, want %d", budget, lua_gettop(L), top);
        if (budget < full) {
            CHECK(rc == -1 && strcmp(err.message, "msgpack: out of memory") == 0,
                  "budget %zu: rc %d \"%s\"", budget, rc, err.message);
        } else {
            CHECK(rc == 0 && c.sb.size == full && memcmp(c.sb.data, want, full) == 0,
                  "full budget: rc %d \"%s\"", rc, err.message);
        }
        msgpack_sbuffer_destroy(&c.sb);
    }
    lua_pop(L, 1);
    free(want);
}

static void test_unpack_types(lua_State *L)
{
    UNPACK("c0", "v == nil");
    UNPACK("91c0", "#v == 1 and v[1] == null and getmetatable(v) == nil");
    UNPACK("93c001c0", "v[1] == null and v[2] == 1 and v[3] == null");
    UNPACK("81c0c0", "v[null] == null and getmetatable(v) == Map");
    UNPACK("81a161c0", "v.a == null");
    UNPACK("c3", "v == true");
    UNPACK("c2", "v == false");
    UNPACK("00", "math.type(v) == 'integer' and v == 0");
    UNPACK("7f", "v == 127");
    UNPACK("e0", "v == -32");
    UNPACK("cc80", "v == 128");
    UNPACK("cd0100", "v == 256");
    UNPACK("ce00010000", "v == 65536");
    UNPACK("cf0000000100000000", "v == 1 << 32");
    UNPACK("d0df", "v == -33");
    UNPACK("d1ff00", "v == -256");
    UNPACK("d2ffff63c0", "v == -40000");
    UNPACK("d3ffffffffffffffff", "v == -1 and math.type(v) == 'integer'");
    UNPACK("cf7fffffffffffffff", "v == math.maxinteger and math.type(v) == 'integer'");
    UNPACK("d38000000000000000", "v == math.mininteger");
    UNPACK_ERR("cf8000000000000000", NULL,
               "msgpack: integer 9223372036854775808 does not fit a Lua integer");
    UNPACK_ERR("cfffffffffffffffff", NULL,
               "msgpack: integer 18446744073709551615 does not fit a Lua integer");
    UNPACK_ERR("92 01 81 a161 cfffffffffffffffff", NULL,
               "msgpack: integer 18446744073709551615 does not fit a Lua integer");
    UNPACK("cb3ff0000000000000", "math.type(v) == 'float' and v == 1");
    UNPACK("cb8000000000000000", "math.type(v) == 'float' and 1/v == -1/0");
    UNPACK("cb7ff8000000000001", "string.pack('<d', v) == string.pack('<I8', 0x7ff8000000000001)");
    UNPACK("cb7ff0000000000000", "v == 1/0");
    UNPACK("ca3fc00000", "math.type(v) == 'float' and v == 1.5");
    UNPACK("ca3f800000", "math.type(v) == 'float' and v == 1");
    UNPACK("ca3dcccccd", "v == string.unpack('<f', string.pack('<f', 0.1)) and v ~= 0.1");
    UNPACK("caff800000", "v == -1/0");
    UNPACK("ca7fc00000", "v ~= v");
    UNPACK("a0", "v == ''");
    UNPACK("a3616263", "v == 'abc'");
    UNPACK("a2c3a9", "v == '\\xc3\\xa9'");
    UNPACK("d90161", "v == 'a'");
    UNPACK("da000161", "v == 'a'");
    UNPACK("db0000000161", "v == 'a'");
    UNPACK("a2ffff", "v == '\\xff\\xff'");            /* a str that is not UTF-8 still arrives */
    UNPACK("c400", "v == ''");
    UNPACK("c403000102", "v == '\\0\\1\\2'");
    UNPACK("c50001ff", "v == '\\xff'");
    UNPACK("c600000001ff", "v == '\\xff'");
    UNPACK("90", "type(v) == 'table' and next(v) == nil and getmetatable(v) == nil");
    UNPACK("dc0000", "next(v) == nil and getmetatable(v) == nil");
    UNPACK("80", "type(v) == 'table' and next(v) == nil and getmetatable(v) == Map");
    UNPACK("de0000", "next(v) == nil and getmetatable(v) == Map");
    UNPACK("93010203", "#v == 3 and v[1] == 1 and v[3] == 3");
    UNPACK("84 01a161 c3a162 cb3ff8000000000000a163 a16401",
           "v[1] == 'a' and v[true] == 'b' and v[1.5] == 'c' and v.d == 1 and getmetatable(v) == Map");
    UNPACK("81 d0ff 01", "v[-1] == 1");
    /* Lua turns an integral float key into an integer key (documented) */
    UNPACK("81 cb4000000000000000 01", "v[2] == 1 and math.type(next(v)) == 'integer'");
    UNPACK_ERR("81 cb7ff8000000000000 01", NULL, "msgpack: map key is NaN");
    UNPACK_ERR("81 ca7fc00000 01", NULL, "msgpack: map key is NaN");
    UNPACK("81 01 cb7ff8000000000000", "v[1] ~= v[1]");  /* NaN as a value is fine */
    UNPACK("92 910181a16190",
           "v[1][1] == 1 and getmetatable(v[2]) == Map and getmetatable(v[2].a) == nil and #v[2].a == 0");
    UNPACK("81 9101 02", "type(next(v)) == 'table' and select(2, next(v)) == 2");
    UNPACK("d5016162", "getmetatable(v) == Ext and exttype(v) == 1 and extdata(v) == 'ab'");
    UNPACK("d4ff00", "exttype(v) == -1 and extdata(v) == '\\0'");
    UNPACK("c700ff", "exttype(v) == -1 and extdata(v) == ''");
    UNPACK("c70080", "exttype(v) == -128 and extdata(v) == ''");
    UNPACK("c80003057a7a7a", "exttype(v) == 5 and extdata(v) == 'zzz'");
    UNPACK("c900000003057a7a7a", "exttype(v) == 5 and extdata(v) == 'zzz'");
    UNPACK("d8 80 000102030405060708090a0b0c0d0e0f",
           "exttype(v) == -128 and #extdata(v) == 16 and extdata(v):byte(16) == 15");
    UNPACK("92 d40101 c70002", "exttype(v[1]) == 1 and exttype(v[2]) == 2");
    /* 32 levels ending in an ext, as value, key and element: each level's
     * stack slots are reserved (a fresh pcall frame has only 20) */
    {
        char hex[400] = "";
        for (int i = 0; i < 32; i++)
            strcat(hex, "81a178");
        strcat(hex, "d40161");
        UNPACK(hex, "(function() local t = v for i = 1, 32 do t = t.x end return exttype(t) == 1 end)()");
        hex[0] = '\0';
        for (int i = 0; i < 32; i++)
            strcat(hex, "81a178");
        strcat(hex, "01");                             /* a scalar leaf: t, k, v */
        UNPACK(hex, "(function() local t = v for i = 1, 32 do t = t.x end return t == 1 end)()");
        hex[0] = '\0';
        for (int i = 0; i < 32; i++)
            strcat(hex, "81");
        strcat(hex, "d40161");
        for (int i = 0; i < 32; i++)
            strcat(hex, "c0");
        UNPACK(hex, "(function() local t = v for i = 1, 32 do assert(t[next(t)] == null) t = next(t) end "
                    "return exttype(t) == 1 end)()");
        hex[0] = '\0';
        for (int i = 0; i < 32; i++)
            strcat(hex, "91");
        strcat(hex, "d40161");
        UNPACK(hex, "(function() local t = v for i = 1, 32 do t = t[1] end return exttype(t) == 1 end)()");
    }
}

/* Bodies that come back byte for byte after unpack and pack. */
static void test_byte_round_trip(lua_State *L)
{
    static const char *const bodies[] = {
        "c0", "c3", "c2", "00", "7f", "ff", "e0", "cc80", "d0df", "cd0100",
        "cf7fffffffffffffff", "d38000000000000000", "cb3ff0000000000000",
        "cb8000000000000000", "cb7ff8000000000001", "a0", "a3616263",
        "c401ff", "c403ff0001", "90", "80", "9301c003", "91c0", "81c0c0",
        "81a16101", "81c301", "81cb3ff800000000000002", "92910181a16190",
        "d5016162", "d40578", "c700ff", "c70080", "d8807a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a",
        /* Python pseud 1.0 datetimes: ext 123..126 around a pickle payload */
        "c7127b80049510000000000000008c086461746574",
        "c7127c80049510000000000000008c086461746574",
        "c7127d80049510000000000000008c086461746574",
        "c7127e80049510000000000000008c086461746574",
        "d87b80049528000000000000000000000000",
        "d67e80049528",
        "93 c70e7b8004952a000000000000008c0864 c7007c d57d8004",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        size_t len;
        char *data = s_unhex(bodies[i], &len);
        char *want = strdup(s_hex(data, len));
        if (s_unpack(L, data, len, NULL) != LUA_OK) {
            CHECK(0, "unpack %s: %s", want, lua_tostring(L, -1));
            lua_pop(L, 1);
        } else {
            codec_limits_t lim;
            msgpack_sbuffer sb;
            codec_error_t err;
            codec_limits_init(&lim);
            CHECK(s_pack_top(L, &lim, &sb, &err) == 0, "repack %s: %s", want, err.message);
            CHECK(strcmp(s_hex(sb.data, sb.size), want) == 0, "round trip %s gave %s", want,
                  s_hex(sb.data, sb.size));
            msgpack_sbuffer_destroy(&sb);
        }
        free(want);
        free(data);
    }
}

/* ------------------------------------------------------- hostile bodies */

static void test_check_hostile(lua_State *L)
{
    codec_limits_t lim;
    char *buf;
    size_t n = 10000;

    CHECK_HEX("", NULL, "msgpack: empty body");
    CHECK_BODY("", 0, NULL, "msgpack: empty body");
    /* truncated */
    CHECK_HEX("cd01", NULL, "msgpack: truncated at offset 0");
    CHECK_HEX("cb3ff0", NULL, "msgpack: truncated at offset 0");
    CHECK_HEX("92 01 cd", NULL, "msgpack: truncated at offset 2");
    CHECK_HEX("92 01 cd00", NULL, "msgpack: truncated at offset 2");
    CHECK_HEX("db", NULL, "msgpack: truncated at offset 0");
    CHECK_HEX("db 0000", NULL, "msgpack: truncated at offset 0");
    CHECK_HEX("dc 00", NULL, "msgpack: truncated at offset 0");
    CHECK_HEX("c7 05", NULL, "msgpack: truncated at offset 0");
    CHECK_HEX("c9 00000000", NULL, "msgpack: truncated at offset 0");
    CHECK_HEX("d4 01", NULL, "msgpack: truncated at offset 0");
    CHECK_HEX("d8 01 0000", NULL, "msgpack: truncated at offset 0");
    CHECK_HEX("92 01", NULL, "msgpack: array of 2 elements at offset 0 passes the end of the body");
    CHECK_HEX("81 01", NULL, "msgpack: map of 1 entries at offset 0 passes the end of the body");
    CHECK_HEX("82 01 01 02", NULL, "msgpack: map of 2 entries at offset 0 passes the end of the body");
    CHECK_HEX("a5 616263", NULL, "msgpack: string of 5 bytes at offset 0 passes the end of the body");
    CHECK_HEX("c7 05 01", NULL, "msgpack: ext of 5 bytes at offset 0 passes the end of the body");
    CHECK_HEX("92 01 92 01", NULL, "msgpack: array of 2 elements at offset 2 passes the end of the body");
    /* declared sizes of 2^31 and 2^32-1 with a few bytes behind them */
    CHECK_HEX("db ffffffff 61", NULL,
              "msgpack: string of 4294967295 bytes at offset 0 passes the end of the body");
    CHECK_HEX("91 db ffffffff", NULL,
              "msgpack: string of 4294967295 bytes at offset 1 passes the end of the body");
    CHECK_HEX("db 80000000 6161", NULL,
              "msgpack: string of 2147483648 bytes at offset 0 passes the end of the body");
    CHECK_HEX("c6 ffffffff 00", NULL,
              "msgpack: binary of 4294967295 bytes at offset 0 passes the end of the body");
    CHECK_HEX("c9 ffffffff 01 00", NULL,
              "msgpack: ext of 4294967295 bytes at offset 0 passes the end of the body");
    CHECK_HEX("dd ffffffff 00", NULL,
              "msgpack: array of 4294967295 elements at offset 0 passes the end of the body");
    CHECK_HEX("dd 80000000 000000", NULL,
              "msgpack: array of 2147483648 elements at offset 0 passes the end of the body");
    CHECK_HEX("df ffffffff 0000", NULL,
              "msgpack: map of 4294967295 entries at offset 0 passes the end of the body");
    CHECK_HEX("92 00 df 80000000 0000", NULL,
              "msgpack: map of 2147483648 entries at offset 2 passes the end of the body");
    /* trailing bytes and the reserved byte */
    CHECK_HEX("01 02 03 04", NULL, "msgpack: 3 trailing bytes after the value at offset 1");
    CHECK_HEX("93 010203 c0c0c0", NULL, "msgpack: 3 trailing bytes after the value at offset 4");
    CHECK_HEX("92 91 01 a3616263 000000", NULL, "msgpack: 3 trailing bytes after the value at offset 7");
    CHECK_HEX("c1", NULL, "msgpack: reserved byte 0xc1 at offset 0");
    CHECK_HEX("92 01 c1", NULL, "msgpack: reserved byte 0xc1 at offset 2");
    CHECK_HEX("81 c1 01", NULL, "msgpack: reserved byte 0xc1 at offset 1");

    /* nesting 10,000 deep: arrays, maps, and empty ones at the bottom */
    buf = malloc(2 * n + 1);
    memset(buf, 0x91, n);
    buf[n] = 0x01;
    CHECK_BODY(buf, n + 1, NULL, "msgpack: nesting deeper than 32 levels at offset 32");
    /* 81 01 81 01 ... 01: {1: {1: ... 1}}, each map the previous one's value */
    for (size_t i = 0; i < n; i++) {
        buf[2 * i] = (char)0x81;
        buf[2 * i + 1] = 0x01;
    }
    buf[2 * n] = 0x01;
    CHECK_BODY(buf, 2 * n + 1, NULL, "msgpack: nesting deeper than 32 levels at offset 64");

    /* depth rows: 32 levels pass (and msgpack-c takes them), 33 fail */
    memset(buf, 0x91, 32);
    buf[32] = 0x01;
    CHECK_BODY(buf, 33, NULL, NULL);
    CHECK(s_unpack(L, buf, 33, NULL) == LUA_OK, "32 levels do not unpack: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    buf[32] = (char)0x90;                          /* an empty array at level 33 */
    CHECK_BODY(buf, 33, NULL, "msgpack: nesting deeper than 32 levels at offset 32");
    buf[31] = (char)0x90;                          /* level 32 empty: fine */
    CHECK_BODY(buf, 32, NULL, NULL);
    CHECK(s_unpack(L, buf, 32, NULL) == LUA_OK, "32 levels (empty) do not unpack");
    lua_pop(L, 1);
    memset(buf, 0x91, 33);
    buf[33] = 0x01;
    CHECK_BODY(buf, 34, NULL, "msgpack: nesting deeper than 32 levels at offset 32");
    free(buf);

    codec_limits_init(&lim);
    lim.max_depth = 4;
    CHECK_HEX("91919191 01", &lim, NULL);
    CHECK_HEX("919191 90", &lim, NULL);
    CHECK_HEX("9191919191 01", &lim, "msgpack: nesting deeper than 4 levels at offset 4");
    CHECK_HEX("91919191 80", &lim, "msgpack: nesting deeper than 4 levels at offset 4");
    lim.max_depth = 33;
    CHECK_HEX("01", &lim, "msgpack: max_depth 33 outside 1..32");
    lim.max_depth = 0;
    CHECK_HEX("01", &lim, "msgpack: max_depth 0 outside 1..32");

    /* string rows: at the limit, one past it */
    codec_limits_init(&lim);
    lim.max_string = 10;
    CHECK_HEX("aa 61616161616161616161", &lim, NULL);
    CHECK_HEX("ab 6161616161616161616161", &lim,
              "msgpack: string of 11 bytes at offset 0 passes the limit of 10 bytes");
    CHECK_HEX("c40a 61616161616161616161", &lim, NULL);
    CHECK_HEX("91 c40b 6161616161616161616161", &lim,
              "msgpack: binary of 11 bytes at offset 1 passes the limit of 10 bytes");
    CHECK_HEX("c70a01 61616161616161616161", &lim, NULL);
    CHECK_HEX("c70b01 6161616161616161616161", &lim,
              "msgpack: ext of 11 bytes at offset 0 passes the limit of 10 bytes");
    CHECK_HEX("d701 6161616161616161", &lim, NULL);
    CHECK_HEX("d801 61616161616161616161616161616161", &lim,
              "msgpack: ext of 16 bytes at offset 0 passes the limit of 10 bytes");

    /* element rows: the top value, elements, keys and values all count */
    codec_limits_init(&lim);
    lim.max_elements = 4;
    CHECK_HEX("93 010203", &lim, NULL);
    CHECK_HEX("94 01020304", &lim, "msgpack: more than 4 values in the body at offset 0");
    CHECK_HEX("81 0101", &lim, NULL);
    CHECK_HEX("82 01010202", &lim, "msgpack: more than 4 values in the body at offset 0");
    CHECK_HEX("92 9101 9101", &lim, "msgpack: more than 4 values in the body at offset 3");
    lim.max_elements = 5;
    CHECK_HEX("92 9101 9101", &lim, NULL);
    lim.max_elements = 0;
    CHECK_HEX("01", &lim, "msgpack: more than 0 values in the body at offset 0");
    {   /* the default: 2^20 values, so an array of 2^20 - 1 elements */
        size_t count = CODEC_DEFAULT_MAX_ELEMENTS;
        char *big = calloc(count + 5, 1);
        big[0] = (char)0xdd;
        big[1] = (char)(((count - 1) >> 24) & 0xff);
        big[2] = (char)(((count - 1) >> 16) & 0xff);
        big[3] = (char)(((count - 1) >> 8) & 0xff);
        big[4] = (char)((count - 1) & 0xff);
        CHECK_BODY(big, count + 4, NULL, NULL);
        big[1] = (char)((count >> 24) & 0xff);
        big[2] = (char)((count >> 16) & 0xff);
        big[3] = (char)((count >> 8) & 0xff);
        big[4] = (char)(count & 0xff);
        CHECK_BODY(big, count + 5, NULL, "msgpack: more than 1048576 values in the body at offset 0");
        free(big);
    }

    /* body rows */
    codec_limits_init(&lim);
    lim.max_body = 4;
    CHECK_HEX("93 010203", &lim, NULL);
    CHECK_HEX("94 01020304", &lim, "msgpack: body of 5 bytes passes the limit of 4 bytes");

    /* the defaults */
    codec_limits_init(&lim);
    CHECK(lim.max_depth == 32 && lim.max_string == 16u << 20 && lim.max_elements == 1u << 20
          && lim.max_body == 16u << 20, "codec_limits_init: wrong defaults");
}

/* ------------------------------------------------- random round trip */

static uint64_t g_rng = UINT64_C(0x9e3779b97f4a7c15);   /* fixed seed */

static uint64_t s_rand(void)                             /* xorshift64* */
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * UINT64_C(0x2545f4914f6cdd1d);
}

static size_t s_below(size_t n)
{
    return (size_t)(s_rand() % n);
}

static size_t s_utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12); out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18); out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static void s_gen_string(lua_State *L)
{
    char buf[80];
    size_t len = 0, want = s_below(40);
    int mode = (int)s_below(3);
    while (len < want) {
        if (mode == 0) {
            buf[len++] = (char)('a' + s_below(26));
        } else if (mode == 1) {
            buf[len++] = (char)s_below(256);
        } else {
            static const uint32_t lo[] = {0x20, 0x80, 0x800, 0xe000, 0x10000};
            static const uint32_t hi[] = {0x7f, 0x7ff, 0xd7ff, 0xffff, 0x10ffff};
            size_t r = s_below(5);
            len += s_utf8_encode(lo[r] + (uint32_t)s_below(hi[r] - lo[r] + 1), buf + len);
        }
    }
    lua_pushlstring(L, buf, len);
}

static void s_gen_integer(lua_State *L)
{
    switch (s_below(4)) {
    case 0: lua_pushinteger(L, (lua_Integer)s_below(256) - 128); break;
    case 1: lua_pushinteger(L, s_below(2) ? LUA_MAXINTEGER : LUA_MININTEGER); break;
    default: {                                           /* one call per statement: */
        lua_Integer v = (lua_Integer)s_rand();           /* the seed must replay */
        lua_pushinteger(L, v >> s_below(64));            /* the same everywhere */
        break;
    }
    }
}

static void s_gen_float(lua_State *L, int key)
{
    double d;
    switch (s_below(4)) {
    case 0: d = (double)s_below(1000); break;            /* 3.0 must stay a float */
    case 1: {
        static const double special[] = {0.5, -0.0, 1e300, -2.5e-308, HUGE_VAL, -HUGE_VAL};
        d = special[s_below(6)];
        break;
    }
    default: {
        uint64_t bits = s_rand();
        memcpy(&d, &bits, sizeof d);                     /* NaN payloads too */
    }
    }
    if (key && isnan(d))                                 /* not a table key */
        d = 0.25 + (double)s_below(100);                 /* (2.0 becomes 2: fine) */
    lua_pushnumber(L, d);
}

static void s_gen_value(lua_State *L, int depth, int top)
{
    size_t kinds = depth < 5 ? 10 : 7;
    size_t kind = s_below(kinds);
    if (top && kind == 0)
        kind = 7;                                        /* nil at top is plain nil */
    luaL_checkstack(L, 3, "gen_value");                 /* table, key, value */
    switch (kind) {
    case 0: lua_pushlightuserdata(L, NULL); break;
    case 1: lua_pushboolean(L, (int)s_below(2)); break;
    case 2: s_gen_integer(L); break;
    case 3: s_gen_float(L, 0); break;
    case 4: s_gen_string(L); break;
    case 5: {
        char data[20];
        size_t n = s_below(sizeof data);
        for (size_t i = 0; i < n; i++)
            data[i] = (char)s_below(256);
        codec_push_ext(L, (int8_t)(s_below(256) - 128), data, n);
        break;
    }
    case 6: s_gen_integer(L); break;
    case 7: case 8: {
        size_t n = s_below(7);
        lua_createtable(L, (int)n, 0);
        for (size_t i = 1; i <= n; i++) {
            s_gen_value(L, depth + 1, 0);
            lua_rawseti(L, -2, (lua_Integer)i);
        }
        break;
    }
    default: {
        size_t n = s_below(7);
        lua_createtable(L, 0, (int)n);
        luaL_setmetatable(L, CODEC_MAP_MT);
        for (size_t i = 0; i < n; i++) {
            switch (s_below(4)) {
            case 0: s_gen_integer(L); break;
            case 1: s_gen_float(L, 1); break;
            case 2: s_gen_string(L); break;
            default: lua_pushboolean(L, (int)s_below(2)); break;
            }
            s_gen_value(L, depth + 1, 0);
            lua_rawset(L, -3);
        }
        break;
    }
    }
}

/* Flip, truncate or splice bytes of a valid body. A body codec_check
 * accepts must be one msgpack-c unpacks whole; pushing it may only fail
 * for the integer and NaN-key reasons. */
static void s_mutate_and_try(lua_State *L, const char *body, size_t len, int *accepted)
{
    char *m = malloc(len + 8);
    size_t mlen = len;
    memcpy(m, body, len);
    switch (s_below(4)) {
    case 0:
        for (size_t k = 1 + s_below(3); k > 0 && mlen; k--) {
            size_t at = s_below(mlen);
            m[at] = (char)s_rand();
        }
        break;
    case 1:
        mlen = s_below(len + 1);
        break;
    case 2:
        for (size_t k = 1 + s_below(8); k > 0; k--)
            m[mlen++] = (char)s_rand();
        break;
    default:
        if (mlen) {                                    /* length-bearing types */
            size_t at = s_below(mlen);
            m[at] = (char)(0xc4 + s_below(28));
        }
        break;
    }
    {
        codec_limits_t lim;
        codec_error_t err;
        codec_limits_init(&lim);
        if (codec_check(m, mlen, &lim, &err) == 0) {
            int status = s_unpack(L, m, mlen, &lim);
            (*accepted)++;
            CHECK(status == LUA_OK
                  || (status == LUA_ERRRUN
                      && (strstr(lua_tostring(L, -1), "does not fit a Lua integer")
                          || strstr(lua_tostring(L, -1), "map key is NaN"))),
                  "mutated body %s: status %d %s", s_hex(m, mlen), status, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    free(m);
}

static void test_random_round_trip(lua_State *L)
{
    int rounds = 3000, accepted = 0, mismatches = 0;
    codec_limits_t lim;
    codec_limits_init(&lim);
    for (int r = 0; r < rounds; r++) {
        msgpack_sbuffer sb;
        codec_error_t err = {""};
        int top = lua_gettop(L);
        s_gen_value(L, 0, 1);                          /* v */
        lua_pushvalue(L, -1);                          /* v, v */
        if (s_pack_top(L, &lim, &sb, &err)) {          /* v */
            CHECK(0, "round %d: pack failed: %s", r, err.message);
            msgpack_sbuffer_destroy(&sb);
            lua_settop(L, top);
            continue;
        }
        CHECK(codec_check(sb.data, sb.size, &lim, &err) == 0, "round %d: check refused our own "
              "body %s: %s", r, s_hex(sb.data, sb.size), err.message);
        if (s_unpack(L, sb.data, sb.size, &lim) != LUA_OK) {   /* v, w */
            CHECK(0, "round %d: unpack failed: %s", r, lua_tostring(L, -1));
        } else if (!s_deep_equal(L, -2, -1)) {
            mismatches++;
            CHECK(0, "round %d: round trip differs for %s", r, s_hex(sb.data, sb.size));
        }
        for (int k = 0; k < 3; k++)
            s_mutate_and_try(L, sb.data, sb.size, &accepted);
        msgpack_sbuffer_destroy(&sb);
        lua_settop(L, top);
    }
    CHECK(mismatches == 0, "%d of %d random values changed in a round trip", mismatches, rounds);
    CHECK(accepted > 100, "only %d mutated bodies passed codec_check", accepted);
}

/* --------------------------------------------- failing allocations */

/* Fails every growing allocation from the `fail_at`-th one after arming, so
 * that Lua's emergency-GC retry fails too and the error really surfaces. */
typedef struct s_failer {
    int armed;
    long count, fail_at;
    int fired;
} s_failer_t;

static void *s_failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    s_failer_t *f = ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (ptr == NULL)
        osize = 0;                                 /* osize is a type tag then */
    if (f->armed && nsize > osize && ++f->count >= f->fail_at) {
        f->fired = 1;
        return NULL;
    }
    return realloc(ptr, nsize);
}

typedef struct s_pack_job {
    int entered, returned, rc;
    char message[160];
} s_pack_job_t;

/* Runs codec_pack_value in a pcall: it must return, never raise. */
static int s_pack_protected(lua_State *L)
{
    s_pack_job_t *job = lua_touserdata(L, 2);
    codec_limits_t lim;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    codec_error_t err = {""};
    codec_limits_init(&lim);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    job->entered = 1;
    /* the sbuffer is a live C resource: a raise here would leak it */
    job->rc = codec_pack_value(L, 1, &pk, &lim, 0, &err);
    job->returned = 1;
    snprintf(job->message, sizeof job->message, "%s", err.message);
    msgpack_sbuffer_destroy(&sb);
    return 0;
}

static void test_failing_allocations(void)
{
    s_failer_t f = {0, 0, 0, 0};
    lua_State *L = lua_newstate(s_failing_alloc, &f);
    const char *expr = "{1, 'two', {3.5, map{x = ext(1, 'abcd'), [true] = null, y = ('s'):rep(100)}},"
                       " ('\\xff'):rep(40), map{[1.5] = {null, {{{}}}}, k = map{a = 1}},"
                       " nest(28, 'deep')}";
    size_t len = 0;
    char *body;
    msgpack_zone zone;
    msgpack_object obj;
    size_t off = 0;
    int base, runs = 0, done = 0, pack_runs = 0, pack_errors = 0;

    s_setup(L);
    body = s_pack_expr(L, expr, &len);
    CHECK(body != NULL, "cannot pack %s", expr);
    if (!body) {
        lua_close(L);
        return;
    }
    s_eval(L, expr);                                   /* original */
    base = lua_gettop(L);
    msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE);
    CHECK(msgpack_unpack(body, len, &off, &zone, &obj) == MSGPACK_UNPACK_SUCCESS, "unpack");

    for (long n = 1; n < 100000 && !done; n++) {
        int status;
        f.count = 0; f.fail_at = n; f.fired = 0; f.armed = 1;
        lua_pushcfunction(L, s_push_protected);
        lua_pushlightuserdata(L, &obj);
        status = lua_pcall(L, 1, 1, 0);
        f.armed = 0;
        runs++;
        if (!f.fired) {
            CHECK(status == LUA_OK, "no failure, yet status %d", status);
            CHECK(status != LUA_OK || s_deep_equal(L, base, -1), "value differs after failures");
            done = 1;
        } else {
            CHECK(status == LUA_ERRMEM
                  || (status == LUA_ERRRUN && strstr(lua_tostring(L, -1), "stack overflow")),
                  "allocation %ld failed: status %d %s", n, status,
                  status == LUA_OK ? "" : lua_tostring(L, -1));
        }
        lua_settop(L, base);
        lua_gc(L, LUA_GCCOLLECT);
    }
    CHECK(done, "codec_push_object never succeeded");
    msgpack_zone_destroy(&zone);

    /* packing allocates in Lua only to grow the stack: it must return.
     * A fresh thread starts with a small stack, and 30 nested maps need
     * 2 slots each, so it has to grow. */
    s_eval(L, "(function() local t = 1 for i = 1, 30 do t = map{x = t} end return t end)()");
    for (long n = 1; n < 1000; n++) {
        s_pack_job_t job = {0, 0, 0, ""};
        lua_State *T = lua_newthread(L);               /* original, T */
        int status;
        lua_pushcfunction(T, s_pack_protected);
        lua_pushvalue(L, base + 1);
        lua_xmove(L, T, 1);
        lua_pushlightuserdata(T, &job);
        f.count = 0; f.fail_at = n; f.fired = 0; f.armed = 1;
        status = lua_pcall(T, 2, 0, 0);
        f.armed = 0;
        pack_runs++;
        CHECK(!job.entered || job.returned, "pack raised at allocation %ld (status %d)", n, status);
        if (job.returned && job.rc)
            pack_errors++;
        CHECK(!job.returned || job.rc == 0 || strcmp(job.message, "msgpack: out of Lua stack space") == 0,
              "pack at allocation %ld: %s", n, job.message);
        lua_settop(L, base + 1);
        lua_gc(L, LUA_GCCOLLECT);
        if (!f.fired && job.returned && job.rc == 0)
            break;
    }
    printf("failing allocations: %d unpack runs, %d pack runs (%d refused)\n",
           runs, pack_runs, pack_errors);
    free(body);
    lua_close(L);
}

/* ------------------------------------------------------------- UTF-8 */

static void test_utf8(void)
{
    static const struct { const char *s; size_t len; int ok; } rows[] = {
        {"", 0, 1}, {"plain ascii text, long enough for words", 39, 1},
        {"0123456\xc3\xa9", 9, 1}, {"01234567\xc3\xa9", 10, 1},
        {"\x7f", 1, 1}, {"\xc2\x80", 2, 1}, {"\xdf\xbf", 2, 1},
        {"\xe0\xa0\x80", 3, 1}, {"\xed\x9f\xbf", 3, 1}, {"\xee\x80\x80", 3, 1},
        {"\xf0\x90\x80\x80", 4, 1}, {"\xf4\x8f\xbf\xbf", 4, 1},
        {"\x80", 1, 0}, {"\xbf", 1, 0}, {"\xc0\xaf", 2, 0}, {"\xc1\xbf", 2, 0},
        {"\xc2", 1, 0}, {"\xc2\x41", 2, 0}, {"\xe0\x80\xaf", 3, 0}, {"\xe0\x9f\xbf", 3, 0},
        {"\xed\xa0\x80", 3, 0}, {"\xed\xbf\xbf", 3, 0}, {"\xe1\x80", 2, 0},
        {"\xf0\x80\x80\xaf", 4, 0}, {"\xf0\x8f\xbf\xbf", 4, 0}, {"\xf4\x90\x80\x80", 4, 0},
        {"\xf5\x80\x80\x80", 4, 0}, {"\xff", 1, 0}, {"\xfe", 1, 0},
        {"abcdefgh\xf0\x9f\x98", 11, 0}, {"abcdefghijklmnop\x80", 17, 0},
        {"a\0b", 3, 1},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        CHECK(codec_is_utf8(rows[i].s, rows[i].len) == rows[i].ok, "utf8 row %zu (%s): want %d",
              i, s_hex(rows[i].s, rows[i].len), rows[i].ok);
    /* every code point encodes to valid UTF-8, surrogates excepted */
    {
        int bad = 0;
        for (uint32_t cp = 0; cp <= 0x10ffff; cp += (cp < 0x20000 ? 1 : 97)) {
            char b[4];
            size_t n = s_utf8_encode(cp, b);
            int want = !(cp >= 0xd800 && cp <= 0xdfff);
            if (codec_is_utf8(b, n) != want)
                bad++;
        }
        CHECK(bad == 0, "%d code points misjudged", bad);
    }
    /* long ASCII runs (read 32 bytes, then 8, at a time) with one other
     * byte at every position around those strides: a valid 2-byte
     * sequence, a stray continuation byte, a sequence cut by the end */
    {
        char b[160];
        int bad = 0;
        for (size_t at = 0; at + 2 <= sizeof b; at++) {
            memset(b, 'a', sizeof b);
            b[at] = (char)0xc3; b[at + 1] = (char)0xa9;              /* é */
            bad += codec_is_utf8(b, sizeof b) != 1;
            b[at] = (char)0x80; b[at + 1] = 'a';                     /* stray continuation */
            bad += codec_is_utf8(b, sizeof b) != 0;
            memset(b, 'a', sizeof b);
            b[at + 1] = (char)0xc3;                                  /* cut: the last byte of the string */
            bad += codec_is_utf8(b, at + 2) != 0;
        }
        CHECK(bad == 0, "%d long ASCII strings misjudged", bad);
    }
}

int main(void)
{
    lua_State *L = luaL_newstate();
    msgpack_zone_init(&g_zone, MSGPACK_ZONE_CHUNK_SIZE);
    s_setup(L);
    test_utf8();
    test_pack_types(L);
    test_pack_long_headers(L);
    test_pack_errors(L);
    test_pack_out_of_memory(L);
    test_unpack_types(L);
    test_byte_round_trip(L);
    test_check_hostile(L);
    test_random_round_trip(L);
    CHECK(lua_gettop(L) == 0, "stack not balanced: %d", lua_gettop(L));
    lua_close(L);
    msgpack_zone_destroy(&g_zone);
    test_failing_allocations();
    printf("test_codec: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
