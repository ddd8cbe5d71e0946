/*
 * login: who a peer is. The ZAP handler's decisions (RFC 27: the backend's
 * zap hook, or a password check) and the server side of HELLO (the
 * backend's handle_hello, or a password check), both through dispatch_call.
 * Password checks (argon2) never run here: they go to the passwd pool and
 * their answers come back through the loop (s_zap_checked, s_hello_checked).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <zmq.h>

#include "dispatch.h"
#include "host_state.h"
#include "login.h"
#include "message.h"

/* Why a user id a hook returned is refused (DESIGN.md 4.1), or NULL. */
static const char *s_bad_user_id(const char *s, size_t n) {
    if (n == 0) return "it is empty";
    if (n > FRAME_MAX_ID) return "it is over 255 bytes";
    if (memchr(s, '\0', n)) return "it holds a NUL byte";
    return NULL;
}

/* The hash (NULL: no such login) and password of the check at idx. */
static int s_password_fields(lua_State *L, int idx, const char **hash, const char **pw, size_t *pw_len) {
    lua_getfield(L, idx, "hash");
    lua_getfield(L, idx, "password");
    *hash = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    *pw = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, pw_len) : NULL;
    return *pw ? 0 : -1;                          /* both stay on the stack */
}

/* One login judged (counted only while metrics are served). */
static void s_count(host_t *h, const char *mechanism, int ok) {
    if (h->metrics) metrics_login(h->metrics, mechanism, ok);
}

typedef struct zap_job {
    host_t *h;
    const zap_request_t *req;
    zap_pending_t *pending;
    char *user_id, *reason;       /* ZAP_MAX_TEXT + 1 bytes each */
    int status;
} zap_job_t;

typedef struct zap_check {        /* a ZAP request waiting for its password check */
    host_t *h;
    zap_pending_t *pending;
    char mechanism[8];
    char address[ZAP_MAX_TEXT + 1];
    char user_id[];
} zap_check_t;

static void s_zap_checked(void *ctx, int verified) {
    zap_check_t *c = ctx;
    host_t *h = c->h;
    s_count(h, c->mechanism, verified == 1);
    if (verified == 1) {
        zap_answer(h->zap, c->pending, ZAP_OK, c->user_id, "OK");
    } else if (verified == 0) {
        HOST_LOG_LIMITED(h, LOG_WARN, "handshake refused: wrong login or password",
                         LOG_STR("mechanism", c->mechanism), LOG_STR("address", c->address));
        zap_answer(h->zap, c->pending, ZAP_REFUSED, NULL, "wrong login or password");
    } else {
        zap_answer(h->zap, c->pending, ZAP_INTERNAL, NULL, "shutting down");
    }
    free(c);
}

static int s_zap_protected(lua_State *L) {
    zap_job_t *job = lua_touserdata(L, 1);
    const zap_request_t *r = job->req;
    host_t *h = job->h;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->zap_handler);
    lua_createtable(L, 0, 7);
    lua_pushstring(L, r->mechanism); lua_setfield(L, -2, "mechanism");
    lua_pushstring(L, r->address); lua_setfield(L, -2, "address");
    lua_pushstring(L, r->domain); lua_setfield(L, -2, "domain");
    lua_pushlstring(L, r->routing_id, r->routing_id_len); lua_setfield(L, -2, "routing_id");
    if (r->username) {
        lua_pushlstring(L, r->username, r->username_len); lua_setfield(L, -2, "username");
        lua_pushlstring(L, r->password, r->password_len); lua_setfield(L, -2, "password");
    }
    if (r->client_key[0]) { lua_pushstring(L, r->client_key); lua_setfield(L, -2, "client_key"); }
    lua_call(L, 1, 2);
    int first = lua_gettop(L) - 1;
    int deferred = dispatch_is_marked(L, first, PASSWORD_CHECK_MT);
    int user = deferred ? first + 1 : first;      /* (check, user_id) or (user_id | nil, reason) */
    size_t ulen = 0;
    const char *u = lua_type(L, user) == LUA_TSTRING ? lua_tolstring(L, user, &ulen) : NULL;
    job->status = ZAP_REFUSED;
    if (!u && !deferred) {
        const char *why = lua_type(L, first + 1) == LUA_TSTRING ? lua_tostring(L, first + 1) : "refused";
        snprintf(job->reason, ZAP_MAX_TEXT + 1, "%s", why);
        return 0;
    }
    const char *bad = u ? s_bad_user_id(u, ulen) : "there is none";
    if (bad) {
        HOST_LOG_LIMITED(h, LOG_WARN, "handshake refused: the backend's user id is refused",
                         LOG_STR("mechanism", r->mechanism), LOG_STR("reason", bad));
        snprintf(job->reason, ZAP_MAX_TEXT + 1, "user id refused");
        return 0;
    }
    if (!deferred) {
        job->status = ZAP_OK;
        memcpy(job->user_id, u, ulen);
        job->user_id[ulen] = '\0';
        return 0;
    }
    const char *hash, *pw;
    size_t pw_len = 0;
    if (s_password_fields(L, first, &hash, &pw, &pw_len) < 0 || !h->passwd)
        return luaL_error(L, "a password check without a password, or before core.passwd_start");
    zap_check_t *c = malloc(sizeof *c + ulen + 1);    /* nothing below raises */
    if (!c) return luaL_error(L, "not enough memory");
    c->h = h;
    c->pending = job->pending;
    snprintf(c->mechanism, sizeof c->mechanism, "%s", r->mechanism);
    snprintf(c->address, sizeof c->address, "%s", r->address);
    memcpy(c->user_id, u, ulen);
    c->user_id[ulen] = '\0';
    if (passwd_check(h->passwd, r->address, hash, pw, pw_len, s_zap_checked, c) < 0) {
        int busy = errno == EAGAIN;
        free(c);
        job->status = busy ? ZAP_TEMPORARY : ZAP_INTERNAL;
        snprintf(job->reason, ZAP_MAX_TEXT + 1, "%s",
                 busy ? "too many logins in progress: try again later" : "internal error");
        HOST_LOG_LIMITED(h, LOG_WARN, "handshake refused", LOG_STR("mechanism", r->mechanism),
                         LOG_STR("address", r->address), LOG_STR("reason", job->reason));
        return 0;
    }
    job->status = ZAP_PENDING;
    return 0;
}

/* A ZAP request: the Lua handler decides now, or defers to a password
 * check; a handler that raises is an internal error (500). */
static int s_zap_decide(void *ctx, const zap_request_t *req, zap_pending_t *pending,
                        char *user_id, char *reason) {
    host_t *h = ctx;
    zap_job_t job = { h, req, pending, user_id, reason, ZAP_REFUSED };
    sched_error_t err;
    if (dispatch_call(h, s_zap_protected, &job, &err) < 0) {
        HOST_LOG_LIMITED(h, LOG_WARN, "ZAP handler failed (refused, 500)", LOG_STR("error", err.name),
                         LOG_STR("message", err.message));
        snprintf(reason, ZAP_MAX_TEXT + 1, "internal error");
        s_count(h, req->mechanism, 0);
        return ZAP_INTERNAL;
    }
    if (job.status != ZAP_PENDING) s_count(h, req->mechanism, job.status == ZAP_OK);
    if (job.status == ZAP_REFUSED)
        HOST_LOG_LIMITED(h, LOG_WARN, "handshake refused", LOG_STR("mechanism", req->mechanism),
                         LOG_STR("domain", req->domain), LOG_STR("address", req->address),
                         LOG_STR("reason", reason));
    return job.status;
}

int host_start_zap(host_t *h, lua_State *L) {
    luaL_unref(L, LUA_REGISTRYINDEX, h->zap_handler);
    h->zap_handler = luaL_ref(L, LUA_REGISTRYINDEX);
    if (h->zap) return 0;
    h->zap = zap_new(h->zmq, h->loop, s_zap_decide, h);
    return h->zap ? 0 : -1;
}

/* --- HELLO (server side) --- */

typedef struct hello_job {
    lendpoint_t *le;
    const frame_message_t *m;
    message_hello_t hello;        /* its body, decoded (views into m and the zone) */
} hello_job_t;

typedef struct hello_check {      /* a HELLO waiting for its password check */
    lendpoint_t *le;              /* held (le->holds) until the answer */
    uint8_t uuid[FRAME_UUID_SIZE];
    int fd;                       /* the connection the HELLO came on */
    size_t peer_len, user_len, login_len, text_len;
    char data[];                  /* routing id, identity then, login, welcome text */
} hello_check_t;

static void s_hello_answer(lendpoint_t *le, const frame_message_t *m, int type, const char *text) {
    endpoint_reply(le->ep, m->peer, m->peer_len, NULL, 0, m->uuid, type, text, strlen(text));
}

static void s_hello_checked(void *ctx, int verified) {
    hello_check_t *c = ctx;
    lendpoint_t *le = c->le;
    host_t *h = le->host;
    const char *peer = c->data, *user = peer + c->peer_len, *login = user + c->user_len;
    const char *text = login + c->login_len;
    if (verified >= 0) s_count(h, "HELLO", verified == 1);
    if (verified >= 0 && le->ep) {
        endpoint_sync_peers(le->ep);              /* a disconnect read late must not pass */
        peers_t *d = endpoint_peers(le->ep);
        peer_t *p = peers_find(d, peer, c->peer_len);
        int same = p && !p->closed && p->fd == c->fd && p->user_id_len == c->user_len &&
                   memcmp(p->user_id, user, c->user_len) == 0;
        if (!same) {
            HOST_LOG_LIMITED(h, LOG_WARN, "answer to a HELLO dropped: that peer's connection is gone");
        } else if (verified && peers_log_in(d, p, login, c->login_len) == 0) {
            endpoint_reply(le->ep, peer, c->peer_len, NULL, 0, c->uuid, FRAME_AUTHENTICATED,
                           text, c->text_len);
        } else {
            static const char no[] = "Invalid credentials";
            endpoint_reply(le->ep, peer, c->peer_len, NULL, 0, c->uuid, FRAME_UNAUTHORIZED,
                           no, sizeof no - 1);
        }
    }
    if (verified >= 0) dispatch_unhold(host_thread(h), le);
    free(c);
}

static int s_hello_protected(lua_State *L) {
    hello_job_t *job = lua_touserdata(L, 1);
    lendpoint_t *le = job->le;
    host_t *h = le->host;
    const frame_message_t *m = job->m;
    const message_hello_t hello = job->hello;
    lua_pushlstring(L, m->peer, m->peer_len);     /* 2: kept, the entry may change */
    lua_pushlstring(L, m->user, m->user_len);     /* 3 */
    lua_rawgeti(L, LUA_REGISTRYINDEX, le->hello_hook);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 2);
    lua_pushlstring(L, hello.login, hello.login_len);
    lua_pushlstring(L, hello.password, hello.password_len);
    lua_call(L, 4, 3);                            /* 4: ok | check, 5: text, 6: user id */
    int deferred = dispatch_is_marked(L, 4, PASSWORD_CHECK_MT);
    if (!deferred && !lua_toboolean(L, 4)) {
        s_hello_answer(le, m, FRAME_UNAUTHORIZED,
                       lua_type(L, 5) == LUA_TSTRING ? lua_tostring(L, 5) : "Invalid credentials");
        s_count(h, "HELLO", 0);
        return 0;
    }
    size_t text_len, login_len;
    const char *text = lua_type(L, 5) == LUA_TSTRING ? lua_tolstring(L, 5, &text_len) : NULL;
    if (!text) { text = "Welcome"; text_len = 7; }
    if (lua_type(L, 6) != LUA_TSTRING) lua_copy(L, 3, 6);   /* no new identity: keep it */
    const char *login = lua_tolstring(L, 6, &login_len);
    const char *bad = s_bad_user_id(login, login_len);
    if (bad) {
        HOST_LOG_LIMITED(h, LOG_WARN, "refused a HELLO: the backend's user id is refused",
                         LOG_STR("reason", bad));
        s_hello_answer(le, m, FRAME_UNAUTHORIZED, "Invalid credentials");
        s_count(h, "HELLO", 0);
        return 0;
    }
    if (!deferred) {
        peers_t *d = endpoint_peers(le->ep);
        peer_t *p = peers_find(d, m->peer, m->peer_len);
        if (!p) return 0;                         /* forgotten by the hook: nobody to answer */
        if (peers_log_in(d, p, login, login_len) < 0) return luaL_error(L, "not enough memory");
        endpoint_reply(le->ep, m->peer, m->peer_len, NULL, 0, m->uuid, FRAME_AUTHENTICATED,
                       text, text_len);
        s_count(h, "HELLO", 1);
        return 0;
    }
    const char *hash, *pw;
    size_t pw_len = 0;
    if (s_password_fields(L, 4, &hash, &pw, &pw_len) < 0 || !h->passwd)
        return luaL_error(L, "a password check without a password, or before core.passwd_start");
    size_t peer_len, user_len;
    const char *peer = lua_tolstring(L, 2, &peer_len), *user = lua_tolstring(L, 3, &user_len);
    hello_check_t *c = malloc(sizeof *c + peer_len + user_len + login_len + text_len);
    if (!c) return luaL_error(L, "not enough memory");   /* nothing below raises */
    c->le = le;
    memcpy(c->uuid, m->uuid, FRAME_UUID_SIZE);
    c->fd = m->fd;
    c->peer_len = peer_len; c->user_len = user_len; c->login_len = login_len; c->text_len = text_len;
    char *at = c->data;
    memcpy(at, peer, peer_len); at += peer_len;
    memcpy(at, user, user_len); at += user_len;
    memcpy(at, login, login_len); at += login_len;
    memcpy(at, text, text_len);
    const char *address = m->kept > 1 ? zmq_msg_gets((zmq_msg_t *)&m->parts[1], "Peer-Address") : NULL;
    if (passwd_check(h->passwd, address, hash, pw, pw_len, s_hello_checked, c) < 0) {
        int busy = errno == EAGAIN;
        free(c);
        HOST_LOG_LIMITED(h, LOG_WARN, "refused a HELLO", LOG_STR("address", address ? address : "?"),
                         LOG_STR("reason", busy ? "too many logins in progress" : "internal error"));
        s_hello_answer(le, m, FRAME_UNAUTHORIZED,
                       busy ? "Too many logins in progress: try again later" : "Authentication Required");
        s_count(h, "HELLO", 0);
        return 0;
    }
    le->holds++;                                  /* the answer needs it */
    return 0;
}

void login_on_hello(void *ctx, endpoint_t *ep, const frame_message_t *m) {
    lendpoint_t *le = ctx;
    hello_job_t job = { le, m, { 0 } };
    const char *why;
    if (message_decode_hello(m->body, m->body_len, &le->host->limits, &le->host->zone,
                             &job.hello, &why) < 0) {     /* under every backend, none too */
        HOST_LOG_LIMITED(le->host, LOG_WARN, "refused a HELLO", LOG_STR("reason", why));
        s_hello_answer(le, m, FRAME_UNAUTHORIZED, "Malformed HELLO");
        s_count(le->host, "HELLO", 0);
        return;
    }
    if (le->hello_hook == LUA_NOREF) {            /* no backend asks: welcome */
        static const char text[] = "Welcome";
        endpoint_reply(ep, m->peer, m->peer_len, NULL, 0, m->uuid, FRAME_AUTHENTICATED,
                       text, sizeof text - 1);
        return;
    }
    sched_error_t err;
    if (dispatch_call(le->host, s_hello_protected, &job, &err) < 0) {
        HOST_LOG_LIMITED(le->host, LOG_WARN, "refused a HELLO: the backend failed",
                         LOG_STR("error", err.name), LOG_STR("message", err.message));
        s_hello_answer(le, m, FRAME_UNAUTHORIZED, "Authentication Required");
        s_count(le->host, "HELLO", 0);
    }
}
