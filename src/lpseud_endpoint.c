/*
 * lpseud_endpoint: pseud.Endpoint, one part of the Lua binding pseud.core
 * (see lpseud_internal.h; the metatable is made in lpseud.c). An endpoint
 * userdata (lendpoint_t, dispatch.h) wraps one endpoint_t: bind, connect,
 * call, security and auth hooks, start/stop, close; __gc = __close.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <zmq.h>

#include "cluster_calls.h"
#include "codec.h"
#include "host.h"
#include "lpseud_internal.h"
#include "message.h"
#include "workers.h"

static lendpoint_t *check_endpoint(lua_State *L, int i) {
    lendpoint_t *le = luaL_checkudata(L, i, ENDPOINT_MT);
    if (!le->ep) luaL_argerror(L, i, "endpoint is closed");
    return le;
}

static int s_fail(lua_State *L, const char *what) {   /* nil, message, code */
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, zmq_strerror(e));
    lua_pushinteger(L, e);
    return 3;
}

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
    double timeout = lpseud_opt_number(L, 3, "timeout", 5);
    luaL_argcheck(L, timeout > 0, 3, "timeout must be positive");
    double max_time = lpseud_opt_number(L, 3, "max_handler_time", 0);
    double max_memory = lpseud_opt_number(L, 3, "max_handler_memory", 0);
    double max_hook = lpseud_opt_number(L, 3, "max_hook_time", 1);
    luaL_argcheck(L, max_time >= 0 && max_memory >= 0 && max_hook >= 0, 3,
                  "max_handler_time, max_handler_memory and max_hook_time must be >= 0");
    /* checked before the casts: a double past the type's range (1e300,
     * NaN) makes them undefined */
    double linger = lpseud_opt_number(L, 3, "linger", 1);
    luaL_argcheck(L, linger == linger && linger <= 86400, 3,
                  "linger must be seconds, at most 86400 (negative: wait for good)");
    o.linger_ms = linger < 0 ? -1 : (int)(linger * 1000);
    double max_size = lpseud_opt_number(L, 3, "max_message_size", (double)o.max_message_size);
    luaL_argcheck(L, max_size == max_size && max_size <= 0x1p53, 3,
                  "max_message_size must be bytes, at most 2^53 (0 or negative: no bound)");
    o.max_message_size = max_size < 0 ? -1 : (int64_t)max_size;
    double budget = lpseud_opt_number(L, 3, "max_peer_queue", (double)o.max_peer_queue);
    double max_peers = lpseud_opt_number(L, 3, "max_peers", (double)o.max_peers);
    double max_calls = lpseud_opt_number(L, 3, "max_peer_calls", (double)o.max_peer_calls);
    luaL_argcheck(L, budget >= 1 && budget <= (double)SIZE_MAX / 2, 3,
                  "max_peer_queue must be a positive number of bytes");
    luaL_argcheck(L, max_peers >= 0 && max_peers <= 1e12, 3, "max_peers must be >= 0 (0: no bound)");
    luaL_argcheck(L, max_calls >= 0 && max_calls <= 1e9 && max_calls == (double)(unsigned)max_calls, 3,
                  "max_peer_calls must be a whole number >= 0 (0: no bound)");
    o.max_peer_queue = (size_t)budget;
    o.max_peer_calls = (unsigned)max_calls;
    o.max_peers = (size_t)max_peers;
    o.probe_router = client;
    o.server_id = client ? name : NULL;
    o.server_id_len = client ? name_len : 0;
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
    le->auth_gate = le->hello_hook = le->reserved = LUA_NOREF;
    le->timeout = timeout;
    le->limits.time = max_time;
    le->limits.memory = max_memory;
    le->max_message_size = o.max_message_size > 0 ? (size_t)o.max_message_size : 0;
    if (!client) host_set_max_hook_time(h, max_hook);   /* hooks are a server's: ZAP's too */
    if (lua_getfield(L, 3, "max_tasks") != LUA_TNIL) {   /* the host's, as max_hook_time */
        lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
        luaL_argcheck(L, n >= 0 && n <= INT_MAX, 3, "max_tasks must be a whole number >= 0 (0: no bound)");
        if (!client) host_set_max_tasks(h, (int)n);
    }
    lua_pop(L, 1);
    int worker = host_worker_id(h) != 0;
    if (lua_getfield(L, 3, "workers") != LUA_TNIL) {   /* docs/workers.md */
        luaL_argcheck(L, !client, 3, "workers is a server's option");
        lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
        luaL_argcheck(L, n >= 1 && n <= WORKERS_MAX, 3, "workers must be a whole number from 1 to 64");
        if (!worker) host_set_workers(h, (int)n);
    }
    lua_pop(L, 1);
    int by_user = 0;
    if (lua_getfield(L, 3, "worker_by") != LUA_TNIL) {
        const char *by = lua_tostring(L, -1);
        luaL_argcheck(L, by && (strcmp(by, "user") == 0 || strcmp(by, "load") == 0), 3,
                      "worker_by must be 'load' (the default) or 'user'");
        by_user = strcmp(by, "user") == 0;
    }
    lua_pop(L, 1);
    le->worker_by_user = by_user;
    luaL_setmetatable(L, ENDPOINT_MT);
    if (client) {
        memcpy(le->default_peer, name, name_len);
        le->default_peer_len = name_len;
    } else {
        memcpy(le->name, name, name_len);
        le->name_len = name_len;
    }
    if ((worker || host_workers_running(h)) && workers_name_taken(h, le)) {
        lua_pushnil(L);                           /* the link tells endpoints apart by name */
        lua_pushfstring(L, client ? "client of '%s': with workers, another client of a server of that "
                                    "name is open in this process"
                                  : "server '%s': with workers, another server of that name is open in "
                                    "this process", name);
        return 2;
    }
    const char *cluster = NULL;
    cluster_options_t copt;
    cluster_options_default(&copt);
    int ctype = lua_getfield(L, 3, "cluster");
    if (ctype == LUA_TBOOLEAN) {
        luaL_argcheck(L, !lua_toboolean(L, -1), 3, "cluster = true: give a Redis URL");
    } else if (ctype != LUA_TNIL) {                 /* false: this server stays out */
        luaL_argcheck(L, !client, 3, "cluster is a server's option");
        if (ctype == LUA_TTABLE) {                /* { redis = URL, ttl =, refresh_interval =, timeout =, max_forwarded = } */
            int t = lua_gettop(L);
            copt.ttl = lpseud_opt_number(L, t, "ttl", copt.ttl);
            copt.refresh_interval = lpseud_opt_number(L, t, "refresh_interval", copt.refresh_interval);
            copt.timeout = lpseud_opt_number(L, t, "timeout", copt.timeout);
            double fwd = lpseud_opt_number(L, t, "max_forwarded", (double)copt.max_forwarded);
            luaL_argcheck(L, fwd >= 1 && fwd <= 1e7 && fwd == (double)(size_t)fwd, 3,
                          "cluster.max_forwarded must be a whole number from 1 to 10000000");
            copt.max_forwarded = (size_t)fwd;
            lua_getfield(L, t, "redis");
            lua_replace(L, t);                    /* the URL; the table stays in the options */
        }
        luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 3, "cluster must be a Redis URL or "
                      "{ redis = URL, ttl = s, refresh_interval = s, timeout = s, max_forwarded = n }");
        cluster = lua_tostring(L, -1);
    } else if (!client && !host_clustered(h)) {
        cluster = host_cluster_default(h);        /* pseud-lua --cluster URL: the first server */
    }
    lua_insert(L, -2);                            /* the endpoint on top again; the URL below it
                                                   * while `cluster` points into it (an __index
                                                   * may have made it: nothing else holds it) */
    if (worker) cluster = NULL;                   /* the control's, not a worker's */
    if (cluster && host_clustered(h)) {
        lua_pushnil(L);
        lua_pushfstring(L, "server '%s': only one server of a process joins a cluster "
                        "(server '%s' has)", name, host_clustered(h)->name);
        return 2;
    }
    endpoint_events_t ev;
    dispatch_events(le, &ev);
    le->ep = endpoint_new(host_zmq(h), host_loop(h), &o, &ev);
    if (!le->ep) return s_fail(L, "cannot create socket");
    if (host_add_endpoint(h, le) < 0) {
        endpoint_destroy(&le->ep);
        return luaL_error(L, "not enough memory");
    }
    if (worker && workers_proxy_endpoint(le) < 0) {   /* no socket of its own in use: the control's */
        host_remove_endpoint(h, le);
        endpoint_destroy(&le->ep);
        return luaL_error(L, "not enough memory");
    }
    if (cluster) {
        char why[256];
        le->cluster = cluster_calls_join(le, cluster, &copt, why, sizeof why);
        if (!le->cluster) {
            host_remove_endpoint(h, le);
            endpoint_destroy(&le->ep);
            lua_pushnil(L);
            lua_pushfstring(L, "server '%s': cluster: %s", name, why);
            return 2;
        }
        host_set_clustered(h, le);
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

/* The address named in messages about its calls (cut at 255 bytes). */
static void s_remember_address(lendpoint_t *le, const char *address) {
    size_t n = strlen(address);
    if (n >= sizeof le->address) n = sizeof le->address - 1;
    memcpy(le->address, address, n);
    le->address[n] = '\0';
}

static int l_endpoint_bind(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    const char *address = luaL_checkstring(L, 2);
    if (endpoint_is_proxy(le->ep)) {              /* a worker's: the control binds */
        lua_pushvalue(L, 2);
        return 1;
    }
    char actual[512];
    if (endpoint_bind(le->ep, address, actual, sizeof actual) < 0)
        return s_fail(L, lua_pushfstring(L, "cannot bind '%s'", address));
    s_remember_address(le, actual[0] ? actual : address);
    lua_pushstring(L, actual[0] ? actual : address);
    return 1;
}

static int l_endpoint_connect(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    const char *address = luaL_checkstring(L, 2);
    if (endpoint_is_proxy(le->ep)) {              /* a worker's: the control connects */
        lua_pushboolean(L, 1);
        return 1;
    }
    if (endpoint_connect(le->ep, address) < 0)
        return s_fail(L, lua_pushfstring(L, "cannot connect '%s'", address));
    s_remember_address(le, address);
    lua_pushboolean(L, 1);
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
        lua_pushliteral(L, "routing_id");          /* raw: an __index could close le (a round) */
        lua_rawget(L, 3);
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
    int rc = message_pack_work_head(pk, name, name_len, (uint32_t)nargs), failed = 0;
    for (int i = 0; i < nargs && rc == 0; i++)
        if ((rc = codec_pack_value(L, 5 + i, pk, lim, 2, &err)) != 0) failed = i + 1;
    if (rc == 0) {
        if (has_kwargs) rc = codec_pack_value(L, top, pk, lim, 1, &err);
        else rc = msgpack_pack_map(pk, 0);
    }
    size_t body_len;
    int over;
    const char *body = host_packed(h, &body_len, &over);
    if (over)
        return lpseud_raise_error(L, "MemoryError", lua_pushfstring(L, "the call would pack to more "
                             "than max_message_size (%I bytes) or max_elements (%I values)",
                             (lua_Integer)le->max_message_size, (lua_Integer)lim->max_elements));
    if (rc != 0) {                                 /* say which value of which call */
        char where[40] = "its keyword arguments";
        if (failed) snprintf(where, sizeof where, "argument %d", failed);
        return lpseud_raise_error(L, "TypeError", lua_pushfstring(L, "call '%s': %s: %s",
                                  name, where, err.message));
    }
    lfuture_t *fu = lpseud_new_future(L);
    lua_pushvalue(L, 4);                           /* the called name, for error messages */
    lua_setiuservalue(L, -2, 3);
    lua_pushvalue(L, -1);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);      /* pinned until settled */
    int e = 0;
    const char *why = NULL;
    fu->call = dispatch_send_call(le, user, user_len, rid, rid_len, body, body_len, le->timeout, ref,
                                  &e, &why);
    if (!fu->call) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        if (e != EHOSTUNREACH && e != ENOBUFS)
            return lpseud_raise_error(L, "RuntimeError", lua_pushfstring(L, "cannot send: %s", zmq_strerror(e)));
        /* unknown or departed peer, or one over its budget (refused, not
         * queued): a future that has already failed. `peer` may have pointed
         * into the directory entry the failure removed: name the peer as the
         * caller did. */
        if (lua_isnoneornil(L, 2)) lua_pushlstring(L, le->default_peer, le->default_peer_len);
        else lua_pushvalue(L, 2);
        if (e == ENOBUFS)
            task_push_error(L, "BusyError", lua_pushfstring(L, "too much is queued for peer '%s' "
                            "(max_peer_queue): wait for its replies, then try again", lua_tostring(L, -1)), "");
        else if (why)
            task_push_error(L, "PeerLostError", lua_pushfstring(L, "no connected peer '%s' here, "
                            "and the cluster cannot look for it: %s", lua_tostring(L, -1), why), "");
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
        /* its calls waiting their turn are answered now, so they count */
        endpoint_refuse_parked(le->ep, "PeerLostError", "the endpoint was closed before the call started");
        /* and those running, while its socket can still carry the answer:
         * a handler's answer after the close had nowhere to go, and its
         * caller waited for its timeout (an attack round) */
        if (!le->in_gc)
            sched_detach_owned(host_sched(le->host), L, le, "PeerLostError",
                               "the server was closed before the call ended");
        if (endpoint_is_proxy(le->ep)) workers_proxy_closed(le);
        host_remove_endpoint(le->host, le);
        endpoint_destroy(&le->ep);                /* relayed calls answer through the cluster */
    }
    if (le->cluster) {
        cluster_calls_leave(&le->cluster);
        host_set_clustered(le->host, NULL);
    }
    if (le->registry != LUA_NOREF) { luaL_unref(L, LUA_REGISTRYINDEX, le->registry); le->registry = LUA_NOREF; }
    if (le->proxy_to != LUA_NOREF) { luaL_unref(L, LUA_REGISTRYINDEX, le->proxy_to); le->proxy_to = LUA_NOREF; }
    if (le->resolver != LUA_NOREF) { luaL_unref(L, LUA_REGISTRYINDEX, le->resolver); le->resolver = LUA_NOREF; }
    if (le->reserved != LUA_NOREF) { luaL_unref(L, LUA_REGISTRYINDEX, le->reserved); le->reserved = LUA_NOREF; }
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
    /* raw: an __index could close le under the loop (an attack round) */
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        lua_pushstring(L, opts[i].field);
        int t = lua_rawget(L, 2);
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
    lua_pushliteral(L, "zap_domain");
    if (lua_rawget(L, 2) != LUA_TNIL) endpoint_set_strict(le->ep, 1);
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

/* ep:set_registry(t): its names, as the host looks them up, are t's from
 * now on (the end of a reload); a closed endpoint has none to replace */
static int l_endpoint_set_registry(lua_State *L) {
    lendpoint_t *le = luaL_checkudata(L, 1, ENDPOINT_MT);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!le->ep) return 0;
    lua_settop(L, 2);
    /* into the old table's slot: setting a slot that exists allocates
     * nothing, so a reload's swap cannot fail halfway */
    if (le->registry != LUA_NOREF) lua_rawseti(L, LUA_REGISTRYINDEX, le->registry);
    else le->registry = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* ep:set_reserved(t|nil): the endpoint's own '_pseud.*' names (name ->
 * callable; introspection); nil: none, they are unknown names */
static int l_endpoint_set_reserved(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    luaL_unref(L, LUA_REGISTRYINDEX, le->reserved);
    lua_pushvalue(L, 2);
    le->reserved = lua_isnil(L, 2) ? (lua_pop(L, 1), LUA_NOREF) : luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* ep:registries() -> { callables, ... }: the name -> callable tables a call
 * to this endpoint looks in, in lookup order (dispatch_walk_next) */
static int l_endpoint_registries(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    dispatch_walk_t w = { le, 0, 0 };
    int reg, n = 0;
    lua_createtable(L, DISPATCH_MAX_REGISTRIES, 0);          /* list */
    while ((reg = dispatch_walk_next(L, le->host, &w)) != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, reg);              /* list callables */
        lua_rawseti(L, -2, ++n);                             /* list */
    }
    return 1;
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
    if (!host_worker_id(h)) loop_install_signal_handlers();   /* the control's */
    host_serve(h, L, drain);
    s_endpoint_close(L, le, 0);
    if (host_worker_failure(h))                   /* the process ends in error: say why */
        return lpseud_raise_error(L, "RuntimeError", host_worker_failure(h));
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
typedef struct peers_push {
    lua_State *L;
    int n;
} peers_push_t;

static void s_push_peer(void *ctx, const char *user, size_t user_len, const char *rid, size_t rid_len,
                        double last_seen) {
    peers_push_t *pp = ctx;
    lua_State *L = pp->L;
    luaL_checkstack(L, 4, "peers");
    lua_createtable(L, 0, 3);
    lua_pushlstring(L, user, user_len);
    lua_setfield(L, -2, "user_id");
    lua_pushlstring(L, rid, rid_len);
    lua_setfield(L, -2, "routing_id");
    lua_pushnumber(L, last_seen);
    lua_setfield(L, -2, "last_seen");
    lua_rawseti(L, -2, ++pp->n);
}

/* peers() in a worker: the control's directory, asked for and waited for.
 * Runs under lua_pcall (a push may raise: the link's frames stay below). */
static int s_peers_protected(lua_State *L) {
    lendpoint_t *le = lua_touserdata(L, 1);
    char *err = lua_touserdata(L, 2);
    lua_newtable(L);
    peers_push_t pp = { L, 0 };
    if (workers_query_peers(le, s_push_peer, &pp, err, 200) < 0) return 0;
    return 1;
}

static int l_endpoint_peers(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    if (endpoint_is_proxy(le->ep)) {
        char err[200] = "";
        lua_pushcfunction(L, s_peers_protected);
        lua_pushlightuserdata(L, le);
        lua_pushlightuserdata(L, err);
        if (lua_pcall(L, 2, 1, 0) != LUA_OK) return lua_error(L);
        if (lua_isnil(L, -1)) return lpseud_raise_error(L, "RuntimeError", lua_pushfstring(L, "peers(): %s", err));
        return 1;
    }
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

/* ep:cluster() -> {node = id, up = bool} | nil: its place in a cluster. */
static int l_endpoint_cluster(lua_State *L) {
    lendpoint_t *le = check_endpoint(L, 1);
    int up = 0;
    const char *node;
    char buf[256], err[200];
    if (endpoint_is_proxy(le->ep)) {              /* a worker's: the control's server's */
        if (workers_query_cluster(le, buf, sizeof buf, &up, err, sizeof err) < 0)
            return lpseud_raise_error(L, "RuntimeError", lua_pushfstring(L, "cluster(): %s", err));
        if (!buf[0]) return 0;
        node = buf;
    } else {
        if (!le->cluster) return 0;
        node = cluster_calls_node(le->cluster, &up);
    }
    lua_createtable(L, 0, 2);
    lua_pushstring(L, node);
    lua_setfield(L, -2, "node");
    lua_pushboolean(L, up);
    lua_setfield(L, -2, "up");
    return 1;
}

static int l_endpoint_tostring(lua_State *L) {
    lendpoint_t *le = luaL_checkudata(L, 1, ENDPOINT_MT);
    lua_pushfstring(L, "pseud.Endpoint (%s%p)", le->ep ? "" : "closed, ", (void *)le);
    return 1;
}

const luaL_Reg lpseud_endpoint_methods[] = {
    { "bind", l_endpoint_bind },
    { "connect", l_endpoint_connect },
    { "call", l_endpoint_call },
    { "close", l_endpoint_close },
    { "set_proxy", l_endpoint_set_proxy },
    { "set_registry", l_endpoint_set_registry },
    { "set_reserved", l_endpoint_set_reserved },
    { "registries", l_endpoint_registries },
    { "set_heartbeat", l_endpoint_set_heartbeat },
    { "set_security", l_endpoint_set_security },
    { "set_auth_hooks", l_endpoint_set_auth_hooks },
    { "set_login", l_endpoint_set_login },
    { "start", l_endpoint_start },
    { "stop", l_endpoint_stop },
    { "pending", l_endpoint_pending },
    { "peers", l_endpoint_peers },
    { "cluster", l_endpoint_cluster },
    { NULL, NULL }
};

const luaL_Reg lpseud_endpoint_meta[] = {
    { "__gc", l_endpoint_gc },
    { "__close", l_endpoint_close },
    { "__tostring", l_endpoint_tostring },
    { "__index", NULL },
    { NULL, NULL }
};

const luaL_Reg lpseud_endpoint_functions[] = {
    { "endpoint", l_endpoint_new },
    { NULL, NULL }
};
