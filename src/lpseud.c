/*
 * lpseud: the Lua binding, module pseud.core. The only file with
 * lua_CFunctions and metatables (pseud.Endpoint, pseud.Future, pseud.Ext,
 * pseud.Error, pseud.Map, pseud.Kwargs, pseud.Host). Every function gets the
 * host_t as upvalue 1; there is no other state.
 *
 * Misuse (bad arguments) raises; what the world does (a bind that fails)
 * returns nil, message, code; call outcomes are pseud.Error values.
 *
 * keygen and passwd reach keyfile.c (atomic file replacement, the no-echo
 * prompt) through core.write_private, core.lexists and core.read_password.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <sodium.h>
#include <zmq.h>

#include "codec.h"
#include "host.h"
#include "keyfile.h"
#include "lpseud.h"
#include "message.h"

#define HOST(L) ((host_t *)lua_touserdata(L, lua_upvalueindex(1)))

/* --- helpers --- */

static lendpoint_t *check_endpoint(lua_State *L, int i) {
    lendpoint_t *le = luaL_checkudata(L, i, ENDPOINT_MT);
    if (!le->ep) luaL_argerror(L, i, "endpoint is closed");
    return le;
}

static lfuture_t *check_future(lua_State *L, int i) {
    return luaL_checkudata(L, i, FUTURE_MT);
}

static int s_fail(lua_State *L, const char *what) {   /* nil, message, code */
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, zmq_strerror(e));
    lua_pushinteger(L, e);
    return 3;
}

static double s_opt_number(lua_State *L, int t, const char *k, double def) {
    double v = def;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        if (!lua_isnumber(L, -1)) luaL_error(L, "option '%s' must be a number", k);
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static lfuture_t *s_new_future(lua_State *L) {
    lfuture_t *fu = lua_newuserdatauv(L, sizeof *fu, 2);   /* 1: value, 2: waiters */
    fu->state = FUTURE_PENDING;
    fu->nwaiters = 0;
    fu->call = NULL;
    luaL_setmetatable(L, FUTURE_MT);
    return fu;
}

static int s_raise_error(lua_State *L, const char *name, const char *message) {
    task_push_error(L, name, message, "");
    return lua_error(L);
}

/* --- pseud.Endpoint --- */

/* core.endpoint(kind, name, options, callables [, resolver]) -> endpoint | nil, message, code
 * resolver(routes, name, user_id, routing_id, kwargs, args...) -> callable|nil
 * picks among the callables of a name registered under domains. */
static int l_endpoint_new(lua_State *L) {
    static const char *const kinds[] = { "server", "client", NULL };
    host_t *h = HOST(L);
    int client = luaL_checkoption(L, 1, NULL, kinds);
    size_t name_len;
    const char *name = luaL_checklstring(L, 2, &name_len);
    luaL_argcheck(L, name_len > 0 && name_len <= FRAME_MAX_ID, 2, "name must be 1 to 255 bytes");
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TTABLE);
    if (!lua_isnoneornil(L, 5)) luaL_checktype(L, 5, LUA_TFUNCTION);
    endpoint_options_t o;
    endpoint_options_init(&o);
    double timeout = s_opt_number(L, 3, "timeout", 5);
    luaL_argcheck(L, timeout > 0, 3, "timeout must be positive");
    double max_time = s_opt_number(L, 3, "max_handler_time", 0);
    double max_memory = s_opt_number(L, 3, "max_handler_memory", 0);
    double max_hook = s_opt_number(L, 3, "max_hook_time", 1);
    luaL_argcheck(L, max_time >= 0 && max_memory >= 0 && max_hook >= 0, 3,
                  "max_handler_time, max_handler_memory and max_hook_time must be >= 0");
    double linger = s_opt_number(L, 3, "linger", 1);
    o.linger_ms = linger < 0 ? -1 : (int)(linger * 1000);
    o.max_message_size = (int64_t)s_opt_number(L, 3, "max_message_size", (double)o.max_message_size);
    double budget = s_opt_number(L, 3, "max_peer_queue", (double)o.max_peer_queue);
    double max_peers = s_opt_number(L, 3, "max_peers", (double)o.max_peers);
    luaL_argcheck(L, budget >= 1 && budget <= (double)SIZE_MAX / 2, 3, "max_peer_queue must be a positive number of bytes");
    luaL_argcheck(L, max_peers >= 0 && max_peers <= 1e12, 3, "max_peers must be >= 0 (0: no bound)");
    o.max_peer_queue = (size_t)budget;
    o.max_peers = (size_t)max_peers;
    o.probe_router = client;
    o.queue_unroutable = client;          /* a server's peers come to it, or are gone */
    const char *identity = NULL;
    if (lua_getfield(L, 3, "identity") != LUA_TNIL) {
        size_t n;
        identity = luaL_checklstring(L, -1, &n);
        luaL_argcheck(L, n > 0 && n <= FRAME_MAX_ID && identity[0] != '\0', 3,
                      "identity must be 1 to 255 bytes, not starting with a zero byte");
    }
    o.routing_id = client ? identity : name;

    lendpoint_t *le = lua_newuserdatauv(L, sizeof *le, 0);
    memset(le, 0, sizeof *le);                    /* born closed */
    le->host = h;
    le->self_ref = le->registry = le->proxy_to = le->resolver = le->heartbeat_hook = LUA_NOREF;
    le->auth_gate = le->hello_hook = LUA_NOREF;
    le->timeout = timeout;
    le->limits.time = max_time;
    le->limits.memory = max_memory;
    le->max_message_size = o.max_message_size > 0 ? (size_t)o.max_message_size : 0;
    if (!client) host_set_max_hook_time(h, max_hook);   /* hooks are a server's: ZAP's too */
    luaL_setmetatable(L, ENDPOINT_MT);
    if (client) {
        memcpy(le->default_peer, name, name_len);
        le->default_peer_len = name_len;
    }
    endpoint_events_t ev;
    dispatch_events(le, &ev);
    le->ep = endpoint_new(host_zmq(h), host_loop(h), &o, &ev);
    if (!le->ep) return s_fail(L, "cannot create socket");
    if (host_add_endpoint(h, le) < 0) {
        endpoint_destroy(&le->ep);
        return luaL_error(L, "not enough memory");
    }
    lua_pushvalue(L, 4);
    le->registry = luaL_ref(L, LUA_REGISTRYINDEX);
    if (lua_isfunction(L, 5)) {
        lua_pushvalue(L, 5);
        le->resolver = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pushvalue(L, -1);
    le->self_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* the loop points at it now */
    return 1;
}

static int l_endpoint_bind(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    const char *address = luaL_checkstring(L, 2);
    char actual[512];
    if (endpoint_bind(le->ep, address, actual, sizeof actual) < 0)
        return s_fail(L, lua_pushfstring(L, "cannot bind '%s'", address));
    lua_pushstring(L, actual[0] ? actual : address);
    return 1;
}

static int l_endpoint_connect(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    const char *address = luaL_checkstring(L, 2);
    if (endpoint_connect(le->ep, address) < 0)
        return s_fail(L, lua_pushfstring(L, "cannot connect '%s'", address));
    lua_pushboolean(L, 1);
    return 1;
}

/* Where a call to user id `user` (NULL: the default peer) goes: its
 * routing id and the identity its reply must carry. Directory pointers:
 * valid until the directory changes, so call it right before sending. */
static int s_resolve(lendpoint_t *le, const char *user, size_t user_len,
                     const char *rid, size_t rid_len,
                     const char **peer, size_t *peer_len, const char **who, size_t *who_len) {
    *peer = le->default_peer; *peer_len = le->default_peer_len;
    *who = NULL; *who_len = 0;
    if (!user) return 1;
    /* A server's peers come to it, so one it has not heard from (or has
     * declared gone) is lost; a client's user ids are its servers. */
    peers_t *d = endpoint_peers(le->ep);
    endpoint_sync_peers(le->ep);
    int strict = endpoint_strict(le->ep);
    peer_t *p = peers_find_user(d, user, user_len);
    *who = user; *who_len = user_len;
    peer_t *q = rid ? peers_find(d, rid, rid_len) : NULL;   /* get_routing_id's hint */
    /* with authentication only a routing id carrying that very user id will
     * do; without it the routing id is the identity */
    if (q && (!strict || (q->user_id_len == user_len && memcmp(q->user_id, user, user_len) == 0))) {
        p = q;
        *who = q->user_id; *who_len = q->user_id_len;
    }
    if (p && p->closed && strict) p = NULL;        /* its connection is gone */
    if (p) { *peer = p->routing_id; *peer_len = p->routing_id_len; return 1; }
    *peer = user; *peer_len = user_len;
    if (le->default_peer_len == 0) return 0;       /* unknown */
    *who = NULL; *who_len = 0;                     /* a client naming its server */
    return 1;
}

/* ep:call(user_id|nil, hint|nil, name, args... [, kwargs]) -> future
 * A user id resolves by identity only (DESIGN.md 4.1): the routing id it was
 * last heard on, or hint.routing_id (a backend's get_routing_id) when that
 * routing id carries this user id now. nil: the default peer (a client's
 * server). */
static int l_endpoint_call(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    host_t *h = le->host;
    size_t user_len = 0, rid_len = 0, name_len;
    const char *user = NULL, *rid = NULL;
    if (!lua_isnoneornil(L, 2)) {
        user = luaL_checklstring(L, 2, &user_len);
        luaL_argcheck(L, user_len > 0 && user_len <= FRAME_MAX_ID, 2, "a user id is 1 to 255 bytes");
    } else if (le->default_peer_len == 0) {
        return luaL_argerror(L, 2, "no peer to call: use send_to(peer)");
    }
    if (lua_type(L, 3) == LUA_TTABLE) {            /* {routing_id = ...} from get_routing_id */
        lua_getfield(L, 3, "routing_id");
        lua_replace(L, 3);                          /* kept at 3 while rid is used */
        if (lua_type(L, 3) == LUA_TSTRING) rid = lua_tolstring(L, 3, &rid_len);
    }
    const char *name = luaL_checklstring(L, 4, &name_len);
    int top = lua_gettop(L), nargs = top - 4, has_kwargs = 0;
    if (nargs > 0 && luaL_testudata(L, top, CODEC_KWARGS_MT) == NULL && lua_istable(L, top) &&
        lua_getmetatable(L, top)) {
        luaL_getmetatable(L, CODEC_KWARGS_MT);
        has_kwargs = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        nargs -= has_kwargs;
    }
    codec_error_t err = { "msgpack: out of memory" };
    const codec_limits_t *lim = host_limits(h);
    msgpack_packer *pk = host_packer(h, le->max_message_size);
    int rc = message_pack_work_head(pk, name, name_len, (uint32_t)nargs);
    for (int i = 0; i < nargs && rc == 0; i++)
        rc = codec_pack_value(L, 5 + i, pk, lim, 2, &err);
    if (rc == 0) {
        if (has_kwargs) rc = codec_pack_value(L, top, pk, lim, 1, &err);
        else rc = msgpack_pack_map(pk, 0);
    }
    size_t body_len;
    int over;
    const char *body = host_packed(h, &body_len, &over);
    if (over)
        return s_raise_error(L, "MemoryError", lua_pushfstring(L, "the call would pack to more "
                             "than max_message_size (%I bytes) or max_elements (%I values)",
                             (lua_Integer)le->max_message_size, (lua_Integer)lim->max_elements));
    if (rc != 0) return s_raise_error(L, "TypeError", err.message);
    lfuture_t *fu = s_new_future(L);
    lua_pushvalue(L, -1);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);      /* pinned until settled */
    const char *peer, *who;
    size_t peer_len, who_len;
    int unknown = !s_resolve(le, user, user_len, rid, rid_len, &peer, &peer_len, &who, &who_len);
    fu->call = unknown ? NULL : endpoint_send_work(le->ep, peer, peer_len, who, who_len,
                                                   body, body_len, le->timeout, ref);
    if (!fu->call) {
        int e = unknown ? EHOSTUNREACH : errno;
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        if (e != EHOSTUNREACH && e != ENOBUFS)
            return s_raise_error(L, "RuntimeError", lua_pushfstring(L, "cannot send: %s", zmq_strerror(e)));
        /* unknown or departed peer, or one over its budget (refused, not
         * queued): a future that has already failed. `peer` may have pointed
         * into the directory entry the failure removed: name the peer as the
         * caller did. */
        if (lua_isnoneornil(L, 2)) lua_pushlstring(L, le->default_peer, le->default_peer_len);
        else lua_pushvalue(L, 2);
        if (e == ENOBUFS)
            task_push_error(L, "BusyError", lua_pushfstring(L, "too much is queued for peer '%s' "
                            "(max_peer_queue): wait for its replies, then try again", lua_tostring(L, -1)), "");
        else
            task_push_error(L, "PeerLostError",
                            lua_pushfstring(L, "no connected peer '%s'", lua_tostring(L, -1)), "");
        future_settle(host_sched(h), L, -4, FUTURE_FAILED);
        lua_pop(L, 2);
    }
    return 1;
}

/* Close `le` (host_close_endpoint calls this now, or once the endpoint
 * callback running Lua returns). */
static void s_endpoint_finish_close(lua_State *L, lendpoint_t *le) {
    if (le->ep) {
        host_remove_endpoint(le->host, le);
        endpoint_destroy(&le->ep);
    }
    if (le->registry != LUA_NOREF) { luaL_unref(L, LUA_REGISTRYINDEX, le->registry); le->registry = LUA_NOREF; }
    if (le->proxy_to != LUA_NOREF) { luaL_unref(L, LUA_REGISTRYINDEX, le->proxy_to); le->proxy_to = LUA_NOREF; }
    if (le->resolver != LUA_NOREF) { luaL_unref(L, LUA_REGISTRYINDEX, le->resolver); le->resolver = LUA_NOREF; }
    luaL_unref(L, LUA_REGISTRYINDEX, le->auth_gate);
    luaL_unref(L, LUA_REGISTRYINDEX, le->hello_hook);
    le->auth_gate = le->hello_hook = LUA_NOREF;
    if (le->heartbeat_hook != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, le->heartbeat_hook);
        le->heartbeat_hook = LUA_NOREF;
    }
    if (le->holds <= 0 && le->self_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, le->self_ref);
        le->self_ref = LUA_NOREF;
    }
}

static void s_endpoint_close(lua_State *L, lendpoint_t *le, int from_gc) {
    if (from_gc) le->in_gc = 1;   /* only lua_close collects an open endpoint */
    host_close_endpoint(le->host, L, le, s_endpoint_finish_close);
}

static int l_endpoint_close(lua_State *L) {
    lendpoint_t *le = luaL_checkudata(L, 1, ENDPOINT_MT);
    s_endpoint_close(L, le, 0);
    return 0;
}

static int l_endpoint_gc(lua_State *L) {
    lendpoint_t *le = luaL_checkudata(L, 1, ENDPOINT_MT);
    s_endpoint_close(L, le, 1);
    return 0;
}

/* ep:set_heartbeat(interval, timeout [, hook [, every_message]]): the
 * heartbeat policy; hook(event, user_id, routing_id) with event 'heartbeat'
 * (every message, only with every_message) or 'timeout'. */
static int l_endpoint_set_heartbeat(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    double interval = luaL_checknumber(L, 2), timeout = luaL_checknumber(L, 3);
    luaL_argcheck(L, interval >= 0, 2, "interval must be >= 0");
    luaL_argcheck(L, timeout >= 0, 3, "timeout must be >= 0");
    if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TFUNCTION);
    int every = lua_toboolean(L, 5);
    luaL_unref(L, LUA_REGISTRYINDEX, le->heartbeat_hook);
    le->heartbeat_hook = LUA_NOREF;
    if (lua_isfunction(L, 4)) {
        lua_pushvalue(L, 4);
        le->heartbeat_hook = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (endpoint_set_heartbeat(le->ep, interval, timeout, le->default_peer, le->default_peer_len,
                               every && le->heartbeat_hook != LUA_NOREF) < 0)
        return luaL_error(L, "not enough memory");
    return 0;
}

/* ep:set_security{...}: socket options for PLAIN and CURVE, before bind or
 * connect. Keys are Z85 (40 characters). Fields: zap_domain, plain_server,
 * plain_username, plain_password, curve_server, curve_publickey,
 * curve_secretkey, curve_serverkey. */
static int l_endpoint_set_security(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    void *sock = endpoint_socket(le->ep);
    static const struct { const char *field; int option; int is_flag; } opts[] = {
        { "zap_domain", ZMQ_ZAP_DOMAIN, 0 },
        { "plain_server", ZMQ_PLAIN_SERVER, 1 },
        { "plain_username", ZMQ_PLAIN_USERNAME, 0 },
        { "plain_password", ZMQ_PLAIN_PASSWORD, 0 },
        { "curve_server", ZMQ_CURVE_SERVER, 1 },
        { "curve_publickey", ZMQ_CURVE_PUBLICKEY, 0 },
        { "curve_secretkey", ZMQ_CURVE_SECRETKEY, 0 },
        { "curve_serverkey", ZMQ_CURVE_SERVERKEY, 0 },
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        int t = lua_getfield(L, 2, opts[i].field);
        int rc = 0;
        if (t != LUA_TNIL) {
            if (opts[i].is_flag) {
                int v = lua_toboolean(L, -1);
                rc = zmq_setsockopt(sock, opts[i].option, &v, sizeof v);
            } else {
                size_t n;
                const char *v = luaL_checklstring(L, -1, &n);
                rc = zmq_setsockopt(sock, opts[i].option, v, n);
            }
        }
        lua_pop(L, 1);
        /* never echo the value: it may be a secret */
        if (rc < 0) return luaL_error(L, "cannot set %s: %s", opts[i].field, zmq_strerror(errno));
    }
    /* peers prove who they are: replies are bound to that identity */
    if (lua_getfield(L, 2, "zap_domain") != LUA_TNIL) endpoint_set_strict(le->ep, 1);
    lua_pop(L, 1);
    return 0;
}

/* ep:set_auth_hooks(gate|nil, hello|nil): server side of the HELLO
 * handshake. gate(user_id, routing_id, logged_in) -> authenticated?;
 * hello(user_id, routing_id, login, password) -> ok, text [, user_id] or
 * check, text, user_id (core.password_check, verified off the loop). Both
 * run synchronously. */
static int l_endpoint_set_auth_hooks(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    endpoint_set_strict(le->ep, 1);
    int *refs[2] = { &le->auth_gate, &le->hello_hook };
    for (int i = 0; i < 2; i++) {
        if (!lua_isnoneornil(L, 2 + i)) luaL_checktype(L, 2 + i, LUA_TFUNCTION);
        luaL_unref(L, LUA_REGISTRYINDEX, *refs[i]);
        *refs[i] = LUA_NOREF;
        if (lua_isfunction(L, 2 + i)) {
            lua_pushvalue(L, 2 + i);
            *refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
        }
    }
    return 0;
}

/* ep:set_login(login, password [, max_retries=3]): client side of HELLO */
static int l_endpoint_set_login(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    size_t ln, pn;
    const char *login = luaL_checklstring(L, 2, &ln);
    const char *password = luaL_checklstring(L, 3, &pn);
    lua_Integer retries = luaL_optinteger(L, 4, 3);
    luaL_argcheck(L, retries >= 1 && retries <= 100, 4, "max_retries must be 1..100");
    if (endpoint_set_login(le->ep, login, ln, password, pn, (int)retries) < 0)
        return luaL_error(L, "not enough memory");
    return 0;
}

/* ep:set_proxy(other|nil): names not found here are looked up in other's registry */
static int l_endpoint_set_proxy(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    if (!lua_isnil(L, 2)) luaL_checkudata(L, 2, ENDPOINT_MT);
    luaL_unref(L, LUA_REGISTRYINDEX, le->proxy_to);
    lua_pushvalue(L, 2);
    le->proxy_to = lua_isnil(L, 2) ? (lua_pop(L, 1), LUA_NOREF) : luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* ep:start([stop_timeout]): run the loop until stop() or SIGINT/SIGTERM, let
 * in-flight handlers finish for up to stop_timeout seconds, close. */
static int l_endpoint_start(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    host_t *h = le->host;
    double drain = luaL_optnumber(L, 2, 2.0);
    if (task_current(L) || host_running(h))
        return luaL_error(L, "start() runs the loop: call it from the main chunk");
    /* a stop() asked before (by a handler run while the main chunk waited
     * for a reply) counts: start() then only drains and closes */
    loop_install_signal_handlers();
    host_serve(h, L, drain);
    s_endpoint_close(L, le, 0);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_endpoint_stop(lua_State *L) {
    luaL_checkudata(L, 1, ENDPOINT_MT);
    host_stop(HOST(L));
    return 0;
}

static int l_endpoint_pending(lua_State *L) {
    lendpoint_t *le = luaL_checkudata(L, 1, ENDPOINT_MT);
    lua_pushinteger(L, le->ep ? (lua_Integer)endpoint_pending_calls(le->ep) : 0);
    return 1;
}

/* ep:peers() -> { {user_id=, routing_id=, last_seen=epoch seconds}, ... }
 * oldest contact first */
static int l_endpoint_peers(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    peers_t *d = endpoint_peers(le->ep);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double wall = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9, mono = loop_now();
    lua_createtable(L, (int)peers_count(d), 0);
    int i = 0;
    for (peer_t *p = peers_oldest(d); p; p = p->newer) {
        lua_createtable(L, 0, 3);
        lua_pushlstring(L, p->user_id, p->user_id_len);
        lua_setfield(L, -2, "user_id");
        lua_pushlstring(L, p->routing_id, p->routing_id_len);
        lua_setfield(L, -2, "routing_id");
        lua_pushnumber(L, wall - (mono - p->last_seen));
        lua_setfield(L, -2, "last_seen");
        lua_rawseti(L, -2, ++i);
    }
    return 1;
}

static int l_endpoint_tostring(lua_State *L) {
    lendpoint_t *le = luaL_checkudata(L, 1, ENDPOINT_MT);
    lua_pushfstring(L, "pseud.Endpoint (%s%p)", le->ep ? "" : "closed, ", (void *)le);
    return 1;
}

/* --- pseud.Future --- */

static int s_future_result(lua_State *L, int f) {
    lfuture_t *fu = lua_touserdata(L, f);
    lua_getiuservalue(L, f, 1);
    if (fu->state == FUTURE_FAILED) return lua_error(L);
    return 1;
}

static int s_future_get_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status; (void)ctx;
    task_check_deadline(L);                       /* woken by its deadline */
    return s_future_result(L, 1);
}

/* f:get(): the value, or raises the error value. Yields inside a task; runs
 * the loop from the main chunk. */
static int l_future_get(lua_State *L) {
    lfuture_t *fu = check_future(L, 1);
    host_t *h = HOST(L);
    lua_settop(L, 1);
    if (fu->state == FUTURE_PENDING) {
        if (task_current(L)) return task_wait_future(L, 1, s_future_get_k);
        if (host_run(h, L, 1, -1) < 0 && fu->state == FUTURE_PENDING)
            return s_raise_error(L, "Interrupted", "stopped while waiting for a reply");
    }
    return s_future_result(L, 1);
}

static int l_future_done(lua_State *L) {
    lfuture_t *fu = check_future(L, 1);
    lua_pushboolean(L, fu->state != FUTURE_PENDING);
    return 1;
}

static int l_future_tostring(lua_State *L) {
    lfuture_t *fu = check_future(L, 1);
    static const char *const states[] = { "pending", "done", "failed" };
    lua_pushfstring(L, "pseud.Future (%s)", states[fu->state]);
    return 1;
}

/* --- tasks, sleep --- */

static int s_sleep_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status; (void)ctx;
    task_check_deadline(L);                       /* woken by its deadline */
    return 0;
}

static int l_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    host_t *h = HOST(L);
    if (!(s >= 0)) s = 0;
    if (task_current(L)) return task_sleep(L, s, s_sleep_k);
    host_run(h, L, 0, loop_now() + s);
    return 0;
}

static int l_spawn(lua_State *L) {
    host_t *h = HOST(L);
    luaL_checkany(L, 1);
    int nargs = lua_gettop(L) - 1;
    s_new_future(L);
    task_spawn(host_sched(h), L, nargs);
    return 1;
}

/* --- coroutines under the running task's limits --- */

/* coroutine.resume and coroutine.wrap as Lua's own (lcorolib.c), except
 * that the coroutine runs under the limits of the task that resumes it and
 * a slice that ends inside it yields the task to the loop (task.c). */

/* Check that co can be resumed and give it the `nargs` values on top of L.
 * Returns 0, or -1 with a message pushed. */
static int s_co_prepare(lua_State *L, lua_State *co, int nargs) {
    lua_Debug ar;
    int status = lua_status(co);
    if (task_current(co)) {
        lua_pushliteral(L, "cannot resume a coroutine that runs a pseud handler or task");
        return -1;
    }
    if (co == L || (status == LUA_OK && lua_getstack(co, 0, &ar))) {
        lua_pushliteral(L, "cannot resume non-suspended coroutine");
        return -1;
    }
    if ((status == LUA_OK && lua_gettop(co) == 0) || (status != LUA_OK && status != LUA_YIELD)) {
        lua_pushliteral(L, "cannot resume dead coroutine");
        return -1;
    }
    if (!lua_checkstack(co, nargs)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    lua_xmove(L, co, nargs);
    return 0;
}

static int s_co_resume_k(lua_State *L, int status, lua_KContext ctx);
static int s_co_wrapped_k(lua_State *L, int status, lua_KContext ctx);

/* Resume co (prepared) and push what coroutine.resume (wrap = 0) or a
 * wrapped function (wrap = 1) returns. */
static int s_co_continue(lua_State *L, lua_State *co, int nargs, int wrap) {
    int nres;
    int status = task_resume_nested(L, co, nargs, &nres);
    if (status == TASK_PASS_YIELD)                /* the task's slice ended: to the loop */
        return lua_yieldk(L, 0, 0, wrap ? s_co_wrapped_k : s_co_resume_k);
    if (status == LUA_OK || status == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            if (wrap) return luaL_error(L, "too many results to resume");
            lua_pushboolean(L, 0);
            lua_pushliteral(L, "too many results to resume");
            return 2;
        }
        if (!wrap) lua_pushboolean(L, 1);
        lua_xmove(co, L, nres);
        return nres + !wrap;
    }
    if (!wrap) {
        lua_pushboolean(L, 0);
        lua_xmove(co, L, 1);                      /* the error */
        return 2;
    }
    if (task_may_close(L, lua_upvalueindex(1)))
        status = lua_resetthread(co);             /* close its to-be-closed variables */
    lua_xmove(co, L, 1);
    if (status != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

static int s_co_resume_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status; (void)ctx;
    return s_co_continue(L, lua_tothread(L, 1), 0, 0);
}

static int l_co_resume(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    int nargs = lua_gettop(L) - 1;
    if (s_co_prepare(L, co, nargs) < 0) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    return s_co_continue(L, co, nargs, 0);
}

static int s_co_wrapped_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status; (void)ctx;
    return s_co_continue(L, lua_tothread(L, lua_upvalueindex(1)), 0, 1);
}

static int l_co_wrapped(lua_State *L) {
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int nargs = lua_gettop(L);
    if (s_co_prepare(L, co, nargs) < 0) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
        return lua_error(L);
    }
    return s_co_continue(L, co, nargs, 1);
}

/* coroutine.close: Lua's, under the running task's limits, refusing a
 * task's coroutine and one a limit stopped (see task_may_close). */
static int l_co_close(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    lua_Debug ar;
    int status = lua_status(co);
    if (task_current(co))
        return luaL_error(L, "cannot close a coroutine that runs a pseud handler or task");
    if (co == L || (status == LUA_OK && lua_getstack(co, 0, &ar)))
        return luaL_error(L, "cannot close a %s coroutine", co == L ? "running" : "normal");
    if (!task_may_close(L, 1)) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "a time limit stopped this coroutine: its __close handlers do not run");
        return 2;
    }
    task_cover(L, co);
    if (lua_resetthread(co) == LUA_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_xmove(co, L, 1);
    return 2;
}

static int l_co_wrap(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, l_co_wrapped, 1);
    return 1;
}

/* xpcall's message handler runs where the error was raised: after a kill
 * that is inside the count hook, where Lua calls no hook, so the script's
 * handler would run unbounded. This one passes a kill through untouched.
 * Upvalue 1: the script's handler. */
static int s_xpcall_msgh(lua_State *L) {
    if (task_killing(L)) return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int s_xpcall_k(lua_State *L, int status, lua_KContext first) {
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);                     /* the error */
        return 2;
    }
    return lua_gettop(L) - (int)first;            /* true and the results */
}

/* xpcall(f, msgh, ...) as Lua's, with msgh wrapped (s_xpcall_msgh). */
static int l_xpcall(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, s_xpcall_msgh, 1);
    lua_replace(L, 2);                            /* f, handler, args */
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);                          /* f, handler, true, f, args */
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, s_xpcall_k);
    return s_xpcall_k(L, status, 2);
}

/* debug.sethook, refused while a handler or a hook runs: the host's limits
 * are that hook. Lua's own is kept as a C pointer in the host, not as a Lua
 * value a script could reach (debug.getupvalue). */
static int l_debug_sethook(lua_State *L) {
    if (!task_may_sethook(L))
        return luaL_error(L, "debug.sethook cannot be used inside a handler or a hook "
                          "(the host's time limits use the hook)");
    lua_CFunction lua_sethook_fn = host_lua_sethook(HOST(L));
    if (!lua_sethook_fn) return 0;
    lua_pushcfunction(L, lua_sethook_fn);
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* Put the functions above in the coroutine and debug libraries, if loaded. */
static void s_seal_libraries(lua_State *L, int host) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, LUA_COLIBNAME) == LUA_TTABLE) {
        lua_pushcfunction(L, l_co_resume);
        lua_setfield(L, -2, "resume");
        lua_pushcfunction(L, l_co_wrap);
        lua_setfield(L, -2, "wrap");
        lua_pushcfunction(L, l_co_close);
        lua_setfield(L, -2, "close");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_xpcall);
    lua_setglobal(L, "xpcall");
    if (lua_getfield(L, -1, LUA_DBLIBNAME) == LUA_TTABLE &&
        lua_getfield(L, -1, "sethook") == LUA_TFUNCTION && lua_tocfunction(L, -1)) {
        host_set_lua_sethook(lua_touserdata(L, host), lua_tocfunction(L, -1));
        lua_pop(L, 1);
        lua_pushvalue(L, host);
        lua_pushcclosure(L, l_debug_sethook, 1);
        lua_setfield(L, -2, "sethook");
    } else {
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
}

/* core.counts() -> {tasks=, answering=, pooled=, pending_calls=, timers=,
 * registry=}: what is alive, for leak specs (registry: references held, not
 * counting the idle coroutines of the task pool) */
static int l_counts(lua_State *L) {
    host_counts_t c;
    host_get_counts(HOST(L), &c);
    lua_Integer refs = 0;                         /* live refs: a freed one holds a number */
    lua_pushnil(L);
    while (lua_next(L, LUA_REGISTRYINDEX)) {
        if (lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) != LUA_TNUMBER) refs++;
        lua_pop(L, 1);
    }
    refs -= c.pooled;                             /* each idle coroutine holds one */
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, c.tasks); lua_setfield(L, -2, "tasks");
    lua_pushinteger(L, c.answering); lua_setfield(L, -2, "answering");
    lua_pushinteger(L, c.pooled); lua_setfield(L, -2, "pooled");
    lua_pushinteger(L, (lua_Integer)c.pending_calls); lua_setfield(L, -2, "pending_calls");
    lua_pushinteger(L, (lua_Integer)c.timers); lua_setfield(L, -2, "timers");
    lua_pushinteger(L, refs); lua_setfield(L, -2, "registry");
    return 1;
}

/* core.hook_pcall(fn, ...) -> true, results... | false, pseud.Error: fn
 * bounded by max_hook_time (predicates, backend hooks called from Lua) */
static int l_hook_pcall(lua_State *L) {
    luaL_checkany(L, 1);
    luaL_checkstack(L, 8, "too many arguments");
    sched_t *s = host_sched(HOST(L));
    sched_error_t err;
    lua_pushcfunction(L, sched_msgh);
    lua_insert(L, 1);
    if (sched_pcall(s, L, lua_gettop(L) - 2, LUA_MULTRET, s->max_hook_time, &err) == LUA_OK) {
        lua_pushboolean(L, 1);
        lua_insert(L, 1);
        return lua_gettop(L);
    }
    lua_pushboolean(L, 0);
    task_push_error(L, err.name, err.message, err.traceback);
    return 2;
}

/* core.flush([seconds=1]): let messages waiting for their peer leave (the
 * end of a script) */
static int l_flush(lua_State *L) {
    double s = luaL_optnumber(L, 1, 1);
    if (!task_current(L)) host_flush(HOST(L), L, s);
    return 0;
}

/* core.set_zap_handler(fn): fn(request) -> user_id | nil, reason */
static int l_set_zap_handler(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    if (host_start_zap(HOST(L), L) < 0)
        return luaL_error(L, "cannot start the ZAP handler: %s", zmq_strerror(errno));
    return 0;
}

/* core.curve_keypair() -> public, secret (Z85) */
static int l_curve_keypair(lua_State *L) {
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) < 0) return luaL_error(L, "CURVE is not available: %s", zmq_strerror(errno));
    lua_pushstring(L, pub);
    lua_pushstring(L, sec);
    sodium_memzero(sec, sizeof sec);
    return 2;
}

/* core.curve_public(secret) -> public (Z85) */
static int l_curve_public(lua_State *L) {
    size_t n;
    const char *sec = luaL_checklstring(L, 1, &n);
    char pub[41];
    if (n != 40 || zmq_curve_public(pub, sec) < 0) return luaL_argerror(L, 1, "not a Z85 CURVE secret key");
    lua_pushstring(L, pub);
    return 1;
}

/* core.pwhash(password) -> argon2 string (libsodium crypto_pwhash_str) */
static int l_pwhash(lua_State *L) {
    size_t n;
    const char *pw = luaL_checklstring(L, 1, &n);
    char out[crypto_pwhash_STRBYTES];
    if (sodium_init() < 0 ||
        crypto_pwhash_str(out, pw, n, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        return luaL_error(L, "cannot hash the password (out of memory)");
    lua_pushstring(L, out);
    return 1;
}

/* core.pwhash_verify(hash, password) -> boolean */
static int l_pwhash_verify(lua_State *L) {
    size_t n;
    const char *hash = luaL_checkstring(L, 1);
    const char *pw = luaL_checklstring(L, 2, &n);
    lua_pushboolean(L, sodium_init() >= 0 && strlen(hash) < crypto_pwhash_STRBYTES &&
                       crypto_pwhash_str_verify(hash, pw, n) == 0);
    return 1;
}

/* core.passwd_start([threads [, max_pending]]): the pool that verifies
 * password checks off the loop (once per process; makes the dummy hash) */
static int l_passwd_start(lua_State *L) {
    lua_Integer threads = luaL_optinteger(L, 1, 0), pending = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, threads >= 0 && threads <= 16, 1, "threads must be 0..16");
    luaL_argcheck(L, pending >= 0 && pending <= 100000, 2, "max_pending must be 0..100000");
    if (host_start_passwd(HOST(L), (int)threads, (size_t)pending) < 0)
        return luaL_error(L, "cannot start the password checks: %s", strerror(errno));
    return 0;
}

/* core.passwd_stats() -> {checked=, dummy=, refused_busy=, delayed=, pending=, waiting=} | nil */
static int l_passwd_stats(lua_State *L) {
    passwd_stats_t st;
    if (host_passwd_stats(HOST(L), &st) < 0) return 0;
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, (lua_Integer)st.checked); lua_setfield(L, -2, "checked");
    lua_pushinteger(L, (lua_Integer)st.dummy); lua_setfield(L, -2, "dummy");
    lua_pushinteger(L, (lua_Integer)st.refused_busy); lua_setfield(L, -2, "refused_busy");
    lua_pushinteger(L, (lua_Integer)st.delayed); lua_setfield(L, -2, "delayed");
    lua_pushinteger(L, (lua_Integer)st.pending); lua_setfield(L, -2, "pending");
    lua_pushinteger(L, (lua_Integer)st.waiting); lua_setfield(L, -2, "waiting");
    return 1;
}

/* core.password_check(hash|nil, password) -> check: what a zap or
 * handle_hello hook returns to have `password` verified against `hash`
 * (nil: no such login) on the pool, off the loop. */
static int l_password_check(lua_State *L) {
    if (!lua_isnil(L, 1)) luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, 1); lua_setfield(L, -2, "hash");
    lua_pushvalue(L, 2); lua_setfield(L, -2, "password");
    luaL_setmetatable(L, PASSWORD_CHECK_MT);
    return 1;
}

/* --- key and credential files, password prompts (keyfile.c does the work) --- */

/* core.write_private(path, text [, mode]) -> true | nil, message: replace
 * path atomically (keyfile_replace); mode defaults to 0600, owner only. */
static int l_write_private(lua_State *L) {
    size_t plen, n;
    const char *path = luaL_checklstring(L, 1, &plen);
    const char *text = luaL_checklstring(L, 2, &n);
    lua_Integer mode = luaL_optinteger(L, 3, 0600);
    luaL_argcheck(L, plen > 0 && strlen(path) == plen && path[plen - 1] != '/', 1,
                  "not a file path");
    luaL_argcheck(L, mode >= 0 && mode <= 0777, 3, "mode must be permission bits (0 to 0777)");
    if (keyfile_replace(path, text, n, (mode_t)mode) < 0) {
        int e = errno;
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(e));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.lexists(path) -> boolean | nil, message: is anything at path? lstat,
 * so a dangling symlink counts: writing there would follow it. */
static int l_lexists(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    int found = lstat(path, &st) == 0;
    if (found || errno == ENOENT) {
        lua_pushboolean(L, found);
        return 1;
    }
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(e));
    return 2;
}

/* core.read_password(prompt) -> string | nil, message: one line of stdin
 * (fd 0 itself, not io.read's buffer), without its newline, at most
 * KEYFILE_PASSWORD_MAX bytes (a longer one is refused). On a terminal: the
 * prompt on stderr, echo off while reading, the terminal restored on every
 * path. Piped: read silently. */
/* Push buf[len] (under lua_pcall: the caller wipes buf on every path). */
static int s_push_secret(lua_State *L) {
    lua_pushlstring(L, lua_touserdata(L, 1), (size_t)lua_tointeger(L, 2));
    return 1;
}

static int l_read_password(lua_State *L) {
    const char *prompt = luaL_checkstring(L, 1);
    char buf[KEYFILE_PASSWORD_MAX];
    size_t len = 0;
    int rc = keyfile_read_password(isatty(STDIN_FILENO) ? prompt : NULL, buf, sizeof buf, &len);
    int e = errno;
    if (rc == KEYFILE_READ_OK) {
        lua_pushcfunction(L, s_push_secret);      /* pushing may raise: not over buf */
        lua_pushlightuserdata(L, buf);
        lua_pushinteger(L, (lua_Integer)len);
        int status = lua_pcall(L, 2, 1, 0);
        sodium_memzero(buf, sizeof buf);
        if (status != LUA_OK) return lua_error(L);
        return 1;
    }
    sodium_memzero(buf, sizeof buf);
    lua_pushnil(L);
    if (rc == KEYFILE_READ_EOF) lua_pushliteral(L, "no password on standard input");
    else if (rc == KEYFILE_READ_LONG)
        lua_pushfstring(L, "password longer than %d bytes: refused", KEYFILE_PASSWORD_MAX);
    else if (rc == KEYFILE_READ_SIGNAL) lua_pushliteral(L, "interrupted");
    else lua_pushfstring(L, "standard input: %s", strerror(e));
    return 2;
}

/* core.caller() -> user_id, routing_id of the call this handler answers */
static int l_caller(lua_State *L) {
    return dispatch_push_caller(L);
}

/* core.now(): monotonic seconds, the loop's clock */
static int l_now(lua_State *L) {
    lua_pushnumber(L, loop_now());
    return 1;
}

/* --- values --- */

static int l_error(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *message = luaL_optstring(L, 2, "");
    task_push_error(L, name, message, luaL_optstring(L, 3, ""));
    return 1;
}

static int l_error_tostring(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "name");
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "traceback");
    const char *tb = lua_tostring(L, 4);
    if (tb && tb[0]) lua_pushfstring(L, "%s: %s\n%s", lua_tostring(L, 2), lua_tostring(L, 3), tb);
    else lua_pushfstring(L, "%s: %s", lua_tostring(L, 2), lua_tostring(L, 3));
    return 1;
}

static int l_ext(lua_State *L) {
    lua_Integer type = luaL_checkinteger(L, 1);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    luaL_argcheck(L, type >= -128 && type <= 127, 1, "ext type must be -128..127");
    codec_push_ext(L, (int8_t)type, data, n);
    return 1;
}

static int l_ext_index(lua_State *L) {
    codec_ext_t *e = luaL_checkudata(L, 1, CODEC_EXT_MT);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "type") == 0) lua_pushinteger(L, e->type);
    else if (strcmp(k, "data") == 0) lua_pushlstring(L, e->data, e->size);
    else lua_pushnil(L);
    return 1;
}

static int l_ext_eq(lua_State *L) {
    codec_ext_t *a = luaL_checkudata(L, 1, CODEC_EXT_MT);
    codec_ext_t *b = luaL_checkudata(L, 2, CODEC_EXT_MT);
    lua_pushboolean(L, a->type == b->type && a->size == b->size &&
                       memcmp(a->data, b->data, a->size) == 0);
    return 1;
}

static int l_ext_tostring(lua_State *L) {
    codec_ext_t *e = luaL_checkudata(L, 1, CODEC_EXT_MT);
    lua_pushfstring(L, "pseud.ext(%d, %I bytes)", (int)e->type, (lua_Integer)e->size);
    return 1;
}

/* core.configure{max_depth=, max_string=, max_elements=, max_body=} */
static int l_configure(lua_State *L) {
    host_t *h = HOST(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    codec_limits_t lim = *host_limits(h);
    double d = s_opt_number(L, 1, "max_depth", lim.max_depth);
    luaL_argcheck(L, d >= 1 && d <= CODEC_DEFAULT_MAX_DEPTH, 1, "max_depth must be 1..32");
    lim.max_depth = (int)d;
    const char *sizes[] = { "max_string", "max_elements", "max_body" };
    size_t *fields[] = { &lim.max_string, &lim.max_elements, &lim.max_body };
    for (int i = 0; i < 3; i++) {
        double v = s_opt_number(L, 1, sizes[i], (double)*fields[i]);
        luaL_argcheck(L, v >= 1 && v <= 1e12, 1, "sizes must be 1..1e12");
        *fields[i] = (size_t)v;
    }
    host_set_limits(h, &lim);
    return 0;
}

static int l_password_check_tostring(lua_State *L) {
    lua_pushliteral(L, "pseud.PasswordCheck");
    return 1;
}

static int l_host_gc(lua_State *L) {
    host_close(lua_touserdata(L, 1));
    return 0;
}

/* --- module --- */

static const luaL_Reg endpoint_methods[] = {
    { "bind", l_endpoint_bind },
    { "connect", l_endpoint_connect },
    { "call", l_endpoint_call },
    { "close", l_endpoint_close },
    { "set_proxy", l_endpoint_set_proxy },
    { "set_heartbeat", l_endpoint_set_heartbeat },
    { "set_security", l_endpoint_set_security },
    { "set_auth_hooks", l_endpoint_set_auth_hooks },
    { "set_login", l_endpoint_set_login },
    { "start", l_endpoint_start },
    { "stop", l_endpoint_stop },
    { "pending", l_endpoint_pending },
    { "peers", l_endpoint_peers },
    { NULL, NULL }
};

static const luaL_Reg endpoint_meta[] = {
    { "__gc", l_endpoint_gc },
    { "__close", l_endpoint_close },
    { "__tostring", l_endpoint_tostring },
    { "__index", NULL },
    { NULL, NULL }
};

static const luaL_Reg future_methods[] = {
    { "get", l_future_get },
    { "done", l_future_done },
    { NULL, NULL }
};

static const luaL_Reg future_meta[] = {
    { "__tostring", l_future_tostring },
    { "__index", NULL },
    { NULL, NULL }
};

static const luaL_Reg core_functions[] = {
    { "endpoint", l_endpoint_new },
    { "sleep", l_sleep },
    { "spawn", l_spawn },
    { "now", l_now },
    { "caller", l_caller },
    { "set_zap_handler", l_set_zap_handler },
    { "curve_keypair", l_curve_keypair },
    { "curve_public", l_curve_public },
    { "pwhash", l_pwhash },
    { "pwhash_verify", l_pwhash_verify },
    { "passwd_start", l_passwd_start },
    { "passwd_stats", l_passwd_stats },
    { "password_check", l_password_check },
    { "write_private", l_write_private },
    { "lexists", l_lexists },
    { "read_password", l_read_password },
    { "error", l_error },
    { "ext", l_ext },
    { "configure", l_configure },
    { "counts", l_counts },
    { "flush", l_flush },
    { "hook_pcall", l_hook_pcall },
    { NULL, NULL }
};

/* Create metatable `name` with metamethods `meta` and methods as __index. */
static void s_new_class(lua_State *L, int host, const char *name, const luaL_Reg *meta,
                        const luaL_Reg *methods) {
    luaL_newmetatable(L, name);                   /* mt */
    lua_pushvalue(L, host);
    luaL_setfuncs(L, meta, 1);
    if (methods) {
        lua_newtable(L);                          /* mt, methods */
        lua_pushvalue(L, host);
        luaL_setfuncs(L, methods, 1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

int luaopen_pseud_core(lua_State *L) {
    /* Tasks are found through the extra space of their thread, which new
     * threads copy from the main thread; Lua leaves the main one unset. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    *(task_t **)lua_getextraspace(lua_tothread(L, -1)) = NULL;
    lua_pop(L, 1);
    host_t *h = lua_newuserdatauv(L, host_size(), 0);        /* host */
    int host = lua_gettop(L);
    if (host_init(h, L) < 0) return luaL_error(L, "pseud: cannot start the host: %s", strerror(errno));
    luaL_newmetatable(L, HOST_MT);
    lua_pushcfunction(L, l_host_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushboolean(L, 0);                        /* getmetatable(host) gives nothing to call */
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, host);
    lua_pushvalue(L, host);
    lua_rawsetp(L, LUA_REGISTRYINDEX, (void *)&luaopen_pseud_core);   /* lives as long as L */
    s_seal_libraries(L, host);

    s_new_class(L, host, ENDPOINT_MT, endpoint_meta, endpoint_methods);
    s_new_class(L, host, FUTURE_MT, future_meta, future_methods);
    luaL_newmetatable(L, ERROR_MT);
    lua_pushcfunction(L, l_error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, CODEC_EXT_MT);
    lua_pushcfunction(L, l_ext_index); lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_ext_eq); lua_setfield(L, -2, "__eq");
    lua_pushcfunction(L, l_ext_tostring); lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, CODEC_MAP_MT);
    lua_pop(L, 1);
    luaL_newmetatable(L, CODEC_KWARGS_MT);
    lua_pop(L, 1);
    luaL_newmetatable(L, ROUTES_MT);
    lua_pop(L, 1);
    luaL_newmetatable(L, PASSWORD_CHECK_MT);
    lua_pushliteral(L, "pseud.PasswordCheck");   /* tostring never shows the password */
    lua_setfield(L, -2, "__name");
    lua_pushcfunction(L, l_password_check_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_newlibtable(L, core_functions);                      /* host, core */
    lua_pushvalue(L, host);
    luaL_setfuncs(L, core_functions, 1);
    lua_newtable(L);                                          /* global callables */
    lua_pushvalue(L, -1);
    host_set_global_registry(h, luaL_ref(L, LUA_REGISTRYINDEX));
    lua_setfield(L, -2, "global_callables");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    luaL_getmetatable(L, CODEC_MAP_MT);
    lua_setfield(L, -2, "map_mt");
    luaL_getmetatable(L, CODEC_KWARGS_MT);
    lua_setfield(L, -2, "kwargs_mt");
    luaL_getmetatable(L, ERROR_MT);
    lua_setfield(L, -2, "error_mt");
    luaL_getmetatable(L, ROUTES_MT);
    lua_setfield(L, -2, "routes_mt");
    luaL_getmetatable(L, PASSWORD_CHECK_MT);
    lua_setfield(L, -2, "password_check_mt");
    return 1;
}
