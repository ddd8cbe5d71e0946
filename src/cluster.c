/*
 * cluster: the directory and the channels on Redis (see cluster.h and
 * docs/cluster.md).
 *
 * A link is two connections made together and lost together: commands,
 * and one SUBSCRIBEd to this incarnation's channel. Bringing it up: SCRIPT
 * LOAD the scripts and SUBSCRIBE; when both are answered, register a fresh
 * incarnation (its liveness key, the previous one's deleted) and every user
 * in batches; the last answer makes the link up. Anything wrong on either
 * connection (an error, EOF, a reply later than `timeout`, this node's
 * liveness key found lapsed) loses the link: both connections close, every
 * pending callback runs with DOWN (hiredis calls each with a NULL reply as
 * it frees a context), and a timer reconnects with a doubling backoff. A
 * new link is a new incarnation, so no entry an earlier one wrote can come
 * back to life: a node paused past its TTL, or cut off from Redis, never
 * resurrects users that left meanwhile.
 *
 * Requests in flight are kept oldest first; one watchdog timer looks at
 * the oldest (Redis answers a connection in order, so it is the one late).
 * Every multi-key change is one Lua script (EVALSHA), so a remove can
 * compare and delete, and a lookup can check liveness and collect, atomically.
 */
#include "cluster.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>
#include <uuid/uuid.h>

#include "cluster_scripts.h"
#include "idset.h"
#include "redis.h"

#define PREFIX "pseud:"
#define SYNC_BATCH 256                /* user ids per registering script run */
#define USER_PREFIX_MAX (16 + 255 + 2)  /* pseud:user:<len>:<service>: */
#define USER_KEY_MAX (USER_PREFIX_MAX + CLUSTER_MAX_USER)
#define CMD_REPLY_MAX 65536           /* the largest reply a command gets (a sha, a node id) */

/* ------------------------------------------------------------ state */

typedef enum { REQ_LOOKUP, REQ_PUBLISH, REQ_LOAD, REQ_REGISTER, REQ_ADD, REQ_REMOVE,
               REQ_REFRESH, REQ_SWEEP, REQ_LEAVE, REQ_SUBSCRIBE } req_kind_t;

typedef struct cluster_req {
    struct cluster_req *prev, *next;  /* in c->inflight (oldest first) or c->doomed */
    int listed;                       /* in one of them */
    cluster_t *c;
    req_kind_t kind;
    double sent_at;
    int index;                        /* LOAD: which script */
    int ends_sync;                    /* its answer makes the link up */
    cluster_lookup_fn lookup;
    cluster_publish_fn publish;
    void *arg;
} cluster_req_t;

typedef struct req_list { cluster_req_t *head, *tail; } req_list_t;

typedef enum { LINK_DOWN, LINK_CONNECTING, LINK_SYNCING, LINK_UP, LINK_CLOSING } link_state_t;

struct cluster {
    loop_t *loop;
    cluster_options_t opt;
    cluster_events_t ev;
    redis_address_t address;
    redis_lib_t lib;
    redis_conn_t *cmd, *sub;          /* the link's two connections, or NULL */
    link_state_t state;
    char id[CLUSTER_NODE_ID_LEN + 1];          /* this incarnation */
    char registered[CLUSTER_NODE_ID_LEN + 1];  /* the last one registered, or "" */
    char channel[64];                 /* pseud:chan:<id> */
    char info[128];                   /* the liveness key's value: who this is */
    char sha[NSCRIPTS][41];           /* from SCRIPT LOAD, per link */
    char key_prefix[USER_PREFIX_MAX]; /* pseud:user:[<len>:<service>:] */
    size_t key_prefix_len;
    int loads_pending;
    int subscribed;
    cluster_req_t sub_req;            /* the SUBSCRIBE, in flight until confirmed */
    req_list_t inflight;              /* sent, oldest first */
    req_list_t doomed;                /* to be told DOWN from the doom timer */
    idset_t *users;
    loop_timer_t *reconnect_timer, *refresh_timer, *watchdog, *doom_timer;
    int refresh_inflight;
    double backoff;                   /* the next reconnect delay */
    double up_at;                     /* loop_now() when the link last came up */
    double progress;                  /* when Redis last answered anything */
    char error[160];                  /* cluster_error */
    cluster_stats_t stats;
};

/* ------------------------------------------------------------ helpers */

static void s_log(cluster_t *c, int level, const char *msg, const log_field_t *fields) {
    if (c->ev.log) c->ev.log(c->ev.ctx, level, msg, fields);
}

static void s_push(req_list_t *l, cluster_req_t *q) {
    q->prev = l->tail;
    q->next = NULL;
    if (l->tail) l->tail->next = q; else l->head = q;
    l->tail = q;
    q->listed = 1;
}

static void s_unlink(req_list_t *l, cluster_req_t *q) {
    if (!q->listed) return;
    if (q->prev) q->prev->next = q->next; else l->head = q->next;
    if (q->next) q->next->prev = q->prev; else l->tail = q->prev;
    q->prev = q->next = NULL;
    q->listed = 0;
}

__attribute__((format(printf, 3, 4)))
static int s_refuse(cluster_t *c, int err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
    errno = err;
    return -1;
}

static int s_is_user(req_kind_t k) { return k == REQ_LOOKUP || k == REQ_PUBLISH; }

/* A user request's one callback: with Redis's answer, or DOWN (reply NULL). */
static void s_finish(cluster_t *c, cluster_req_t *q, int status, const char *node, size_t node_len,
                     long long receivers) {
    c->stats.pending--;
    if (q->kind == REQ_LOOKUP) q->lookup(q->arg, status, node, node_len);
    else q->publish(q->arg, receivers);
    free(q);
}

static void s_fail(cluster_t *c, cluster_req_t *q) {
    s_finish(c, q, CLUSTER_DOWN, NULL, 0, -1);
}

static void s_on_doom(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    cluster_t *c = arg;
    c->doom_timer = NULL;
    req_list_t now = c->doomed;               /* those doomed from here on wait a round */
    c->doomed.head = c->doomed.tail = NULL;
    while (now.head) {
        cluster_req_t *q = now.head;
        s_unlink(&now, q);
        s_fail(c, q);
    }
}

/* Fail a user request from a zero-delay timer, not from inside its call. */
static void s_doom(cluster_t *c, cluster_req_t *q) {
    s_push(&c->doomed, q);
    if (!c->doom_timer) c->doom_timer = loop_add_timer(c->loop, 0, s_on_doom, c);
}

static void s_link_lost(cluster_t *c, const char *why, int at_once);

/* Since when Redis owes an answer: the oldest request in flight, or the
 * last answer if one came after it was sent. A burst queued in our own
 * buffer is not Redis being silent: while answers keep coming, the link
 * holds; only `timeout` without any answer loses it. */
static double s_owed_since(const cluster_t *c) {
    double sent = c->inflight.head->sent_at;
    return c->progress > sent ? c->progress : sent;
}

static void s_on_watchdog(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    cluster_t *c = arg;
    c->watchdog = NULL;
    cluster_req_t *oldest = c->inflight.head;
    if (!oldest) return;
    double late = loop_now() - s_owed_since(c);
    if (late >= c->opt.timeout * 0.999) {
        char why[160];
        /* hiredis 0.14 drops an error answering SUBSCRIBE: a refusal looks like silence */
        snprintf(why, sizeof why, oldest->kind == REQ_SUBSCRIBE
                 ? "Redis did not confirm the SUBSCRIBE within %.3g s (an ACL without &pseud:*?)"
                 : "Redis answered nothing for %.3g s", c->opt.timeout);
        s_link_lost(c, why, 0);
        return;
    }
    c->watchdog = loop_add_timer(c->loop, c->opt.timeout - late, s_on_watchdog, c);
}

static void s_watch(cluster_t *c) {
    if (!c->watchdog && c->inflight.head && c->state != LINK_CLOSING)
        c->watchdog = loop_add_timer(c->loop, s_owed_since(c) + c->opt.timeout - loop_now(),
                                     s_on_watchdog, c);
}

static void s_on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Send argv on `conn` for request q (in flight from now); -1 when the
 * connection took nothing (q is not listed then). */
static int s_send(cluster_t *c, redis_conn_t *conn, cluster_req_t *q, int argc, const char **argv,
                  const size_t *lens) {
    if (redis_conn_command(conn, s_on_reply, q, argc, argv, lens) < 0) return -1;
    q->sent_at = loop_now();
    s_push(&c->inflight, q);
    s_watch(c);
    return 0;
}

static cluster_req_t *s_req(cluster_t *c, req_kind_t kind) {
    cluster_req_t *q = calloc(1, sizeof *q);
    if (q) { q->c = c; q->kind = kind; }
    return q;
}

/* An internal request; out of memory or not taken loses the link (the
 * directory would be wrong otherwise). */
static void s_command(cluster_t *c, req_kind_t kind, int ends_sync, int argc, const char **argv,
                      const size_t *lens) {
    cluster_req_t *q = s_req(c, kind);
    if (!q) { s_link_lost(c, "out of memory", 0); return; }
    q->ends_sync = ends_sync;
    if (s_send(c, c->cmd, q, argc, argv, lens) < 0) {
        free(q);
        s_link_lost(c, "the command connection closed", 0);
    }
}

/* EVALSHA script 0 args...: users given as (uids, lens, n) after `first`. */
static void s_script(cluster_t *c, int script, req_kind_t kind, int ends_sync, const char **args,
                     const size_t *lens, int nargs) {
    const char *argv[SYNC_BATCH + 8];
    size_t argl[SYNC_BATCH + 8];
    argv[0] = "EVALSHA"; argl[0] = 7;
    argv[1] = c->sha[script]; argl[1] = 40;
    argv[2] = "0"; argl[2] = 1;
    for (int i = 0; i < nargs; i++) { argv[3 + i] = args[i]; argl[3 + i] = lens[i]; }
    s_command(c, kind, ends_sync, 3 + nargs, argv, argl);
}

/* ------------------------------------------------------------ the link */

static void s_link_up(cluster_t *c) {
    c->state = LINK_UP;
    c->up_at = loop_now();
    c->stats.links_up++;
    s_log(c, LOG_INFO, "cluster link up", LOG_FIELDS(LOG_STR("redis", c->address.shown),
          LOG_STR("node", c->id), LOG_INT("users", idset_count(c->users))));
    if (c->ev.on_link) c->ev.on_link(c->ev.ctx, 1);
}

static size_t s_user_key(const cluster_t *c, char *key, const char *uid, size_t len);

typedef struct sync_batch {
    cluster_t *c;
    const char *args[SYNC_BATCH + 1];
    size_t lens[SYNC_BATCH + 1];
    int n;                            /* args[0] is the node id */
    size_t left;                      /* users not yet in a batch */
    char *keys;                       /* SYNC_BATCH keys of USER_KEY_MAX bytes */
} sync_batch_t;

static int s_sync_one(void *arg, const char *uid, size_t len) {
    sync_batch_t *b = arg;
    char *key = b->keys + (size_t)(b->n - 1) * USER_KEY_MAX;
    b->args[b->n] = key;
    b->lens[b->n++] = s_user_key(b->c, key, uid, len);
    b->left--;
    if (b->n == SYNC_BATCH + 1 || b->left == 0) {
        s_script(b->c, SCRIPT_ADD, REQ_ADD, b->left == 0, b->args, b->lens, b->n);
        b->n = 1;
    }
    return b->c->state == LINK_SYNCING ? 0 : 1;   /* lost meanwhile: stop */
}

static void s_on_refresh(loop_t *loop, loop_timer_t *t, void *arg);

/* Scripts loaded and subscribed: register this incarnation and every user. */
static void s_register(cluster_t *c) {
    c->state = LINK_SYNCING;
    char ttl[32];
    snprintf(ttl, sizeof ttl, "%lld", (long long)ceil(c->opt.ttl * 1000.0));
    size_t users = idset_count(c->users);
    const char *args[4] = { c->id, ttl, c->info, c->registered };
    size_t lens[4] = { CLUSTER_NODE_ID_LEN, strlen(ttl), strlen(c->info), strlen(c->registered) };
    s_script(c, SCRIPT_REGISTER, REQ_REGISTER, users == 0, args, lens, 4);
    if (c->state != LINK_SYNCING) return;
    memcpy(c->registered, c->id, sizeof c->registered);
    if (users) {
        sync_batch_t b = { .c = c, .n = 1, .left = users, .keys = malloc((size_t)SYNC_BATCH * USER_KEY_MAX) };
        if (!b.keys) { s_link_lost(c, "out of memory", 0); return; }
        b.args[0] = c->id;
        b.lens[0] = CLUSTER_NODE_ID_LEN;
        idset_each(c->users, s_sync_one, &b);
        free(b.keys);
        if (c->state != LINK_SYNCING) return;
    }
    c->refresh_timer = loop_add_timer(c->loop, c->opt.refresh_interval, s_on_refresh, c);
}

static void s_on_refresh(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    cluster_t *c = arg;
    c->refresh_timer = NULL;
    if (c->state != LINK_SYNCING && c->state != LINK_UP) return;
    if (!c->refresh_inflight) {
        char key[80], ttl[32];
        int kn = snprintf(key, sizeof key, PREFIX "node:%s", c->id);
        int tn = snprintf(ttl, sizeof ttl, "%lld", (long long)ceil(c->opt.ttl * 1000.0));
        const char *argv[6] = { "SET", key, c->info, "XX", "PX", ttl };
        size_t lens[6] = { 3, (size_t)kn, strlen(c->info), 2, 2, (size_t)tn };
        c->refresh_inflight = 1;
        s_command(c, REQ_REFRESH, 0, 6, argv, lens);
        if (c->state != LINK_SYNCING && c->state != LINK_UP) return;
        s_script(c, SCRIPT_SWEEP, REQ_SWEEP, 0, NULL, NULL, 0);
        if (c->state != LINK_SYNCING && c->state != LINK_UP) return;
    }
    c->refresh_timer = loop_add_timer(c->loop, c->opt.refresh_interval, s_on_refresh, c);
}

static void s_on_closed(void *arg, redis_conn_t *conn, const char *why) {
    cluster_t *c = arg;
    char text[200];
    snprintf(text, sizeof text, "%s connection: %s", conn == c->sub ? "subscription" : "command", why);
    s_link_lost(c, text, 0);
}

static void s_connect(cluster_t *c);

static void s_on_reconnect(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    cluster_t *c = arg;
    c->reconnect_timer = NULL;
    s_connect(c);
}

/* Lose the link (idempotent): tell on_link, close both connections (their
 * pending callbacks run now, with DOWN), reconnect later, or at once when
 * only the incarnation is stale. */
static void s_link_lost(cluster_t *c, const char *why, int at_once) {
    if (c->state == LINK_DOWN || c->state == LINK_CLOSING) return;
    int was_up = c->state == LINK_UP;
    /* A link that held for backoff_max starts the backoff over, and may
     * come back at once; one whose setup fails (a Redis that answers every
     * EVALSHA with NOSCRIPT: 3,500 reconnections a second), or that fails
     * as soon as it is up, waits its doubling backoff like any other. */
    int held = was_up && loop_now() - c->up_at >= c->opt.backoff_max;
    if (held) c->backoff = c->opt.backoff_min;
    else at_once = 0;
    c->state = LINK_DOWN;
    c->subscribed = 0;
    c->refresh_inflight = 0;
    loop_cancel_timer(c->loop, c->refresh_timer);
    loop_cancel_timer(c->loop, c->watchdog);
    c->refresh_timer = c->watchdog = NULL;
    /* jitter from libsodium, not rand(): every node seeded alike would come back in step */
    double delay = at_once ? 0 : c->backoff * (0.5 + 0.5 * (double)randombytes_uniform(1001) / 1000.0);
    if (!at_once) c->backoff = fmin(c->backoff * 2, c->opt.backoff_max);
    c->reconnect_timer = loop_add_timer(c->loop, delay, s_on_reconnect, c);
    s_log(c, was_up ? LOG_WARN : LOG_INFO, was_up ? "cluster link lost" : "cluster link not up",
          LOG_FIELDS(LOG_STR("redis", c->address.shown), LOG_STR("node", c->id), LOG_STR("reason", why),
                     LOG_NUM("retry_in", delay)));
    if (was_up) {
        c->stats.links_lost++;
        if (c->ev.on_link) c->ev.on_link(c->ev.ctx, 0);
    }
    redis_conn_close(c->cmd, why);
    redis_conn_close(c->sub, why);
}

static void s_new_id(cluster_t *c) {
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, c->id);
    snprintf(c->channel, sizeof c->channel, PREFIX "chan:%s", c->id);
}

/* Open both connections under a fresh incarnation id; the rest follows
 * from their answers. */
static void s_connect(cluster_t *c) {
    redis_conn_destroy(&c->cmd);      /* closed by now: their callbacks have all run */
    redis_conn_destroy(&c->sub);
    s_new_id(c);
    c->state = LINK_CONNECTING;
    c->loads_pending = NSCRIPTS;
    c->subscribed = 0;
    char err[256];
    c->cmd = redis_conn_new(c->loop, &c->lib, &c->address, 1, CMD_REPLY_MAX, 0, s_on_closed, c, err, sizeof err);
    c->sub = c->cmd ? redis_conn_new(c->loop, &c->lib, &c->address, 0, c->opt.max_message, 1, s_on_closed, c,
                                     err, sizeof err) : NULL;
    if (!c->cmd || !c->sub) { s_link_lost(c, err, 0); return; }
    for (int i = 0; i < NSCRIPTS && c->state == LINK_CONNECTING; i++) {
        const char *argv[3] = { "SCRIPT", "LOAD", cluster_scripts[i] };
        size_t lens[3] = { 6, 4, strlen(cluster_scripts[i]) };
        cluster_req_t *q = s_req(c, REQ_LOAD);
        if (q) q->index = i;
        if (!q || s_send(c, c->cmd, q, 3, argv, lens) < 0) { free(q); s_link_lost(c, "cannot send SCRIPT LOAD", 0); return; }
    }
    const char *argv[2] = { "SUBSCRIBE", c->channel };
    size_t lens[2] = { 9, strlen(c->channel) };
    s_unlink(&c->inflight, &c->sub_req);         /* never answered: still listed */
    c->sub_req = (cluster_req_t){ .c = c, .kind = REQ_SUBSCRIBE };
    if (s_send(c, c->sub, &c->sub_req, 2, argv, lens) < 0) s_link_lost(c, "cannot send SUBSCRIBE", 0);
}

/* ------------------------------------------------------------ answers */

static int s_error_reply(cluster_t *c, const redisReply *r, const char *what) {
    if (r->type != REDIS_REPLY_ERROR) return 0;
    c->stats.errors++;
    s_log(c, LOG_ERROR, "Redis refused a cluster command", LOG_FIELDS(LOG_STR("command", what),
          LOG_CAP("error", r->str, r->len, 200)));
    if (strncmp(r->str, "NOSCRIPT", 8) == 0) s_link_lost(c, "Redis lost the scripts (SCRIPT FLUSH?)", 1);
    return 1;
}

/* A message on the channel, or the SUBSCRIBE's confirmation. */
static void s_on_subscription(cluster_t *c, redisAsyncContext *ac, const redisReply *r) {
    if (!r) {                                        /* the subscription is gone */
        char why[200];
        snprintf(why, sizeof why, "subscription: %s", redis_conn_why(ac));
        s_unlink(&c->inflight, &c->sub_req);
        s_link_lost(c, why, 0);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || r->element[0]->type != REDIS_REPLY_STRING) return;
    const char *kind = r->element[0]->str;
    const redisReply *data = r->element[2];
    if (strcmp(kind, "subscribe") == 0) {
        s_unlink(&c->inflight, &c->sub_req);
        c->subscribed = 1;
        if (c->state == LINK_CONNECTING && c->loads_pending == 0) s_register(c);
    } else if (strcmp(kind, "unsubscribe") == 0) {
        /* hiredis forgets the channel's callback here: nothing more would
         * come of this subscription, not even its confirmation */
        s_unlink(&c->inflight, &c->sub_req);
        s_link_lost(c, "Redis unsubscribed this node from its channel", 0);
    } else if (strcmp(kind, "message") == 0) {
        if (data->type != REDIS_REPLY_STRING || data->len > c->opt.max_message) {
            c->stats.oversize++;
            if ((c->stats.oversize & (c->stats.oversize - 1)) == 0)   /* 1st, 2nd, 4th...: no flood */
                s_log(c, LOG_WARN, "dropped a cluster message over max_message",
                      LOG_FIELDS(LOG_INT("max_message", c->opt.max_message), LOG_INT("dropped", c->stats.oversize)));
            return;
        }
        c->stats.messages++;
        if (c->ev.on_message) c->ev.on_message(c->ev.ctx, data->str, data->len);
    }
}

static void s_on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    cluster_req_t *q = privdata;
    cluster_t *c = q->c;
    const redisReply *r = reply;
    if (r) c->progress = loop_now();
    if (q->kind == REQ_SUBSCRIBE) { s_on_subscription(c, ac, r); return; }
    s_unlink(&c->inflight, q);
    if (!r) {                                        /* the connection went first */
        char why[200];
        snprintf(why, sizeof why, "command connection: %s", redis_conn_why(ac));
        s_link_lost(c, why, 0);
        if (s_is_user(q->kind)) s_fail(c, q); else free(q);
        return;
    }
    switch (q->kind) {
    case REQ_LOOKUP:
        if (r->type == REDIS_REPLY_STRING && r->len > 0 && r->len <= 64)
            s_finish(c, q, CLUSTER_FOUND, r->str, r->len, 0);
        else if (r->type == REDIS_REPLY_NIL)
            s_finish(c, q, CLUSTER_ABSENT, NULL, 0, 0);
        else if (s_error_reply(c, r, "lookup"))    /* the link is fine: say what Redis said */
            s_finish(c, q, CLUSTER_REFUSED, r->str, r->len < 100 ? r->len : 100, 0);
        else
            s_finish(c, q, CLUSTER_REFUSED, "an answer that is not a node id", 31, 0);
        return;
    case REQ_PUBLISH:
        if (r->type == REDIS_REPLY_INTEGER) s_finish(c, q, 0, NULL, 0, r->integer);
        else { s_error_reply(c, r, "PUBLISH"); s_fail(c, q); }
        return;
    case REQ_LOAD:
        if (r->type == REDIS_REPLY_STRING && r->len == 40) {
            memcpy(c->sha[q->index], r->str, 40);
            c->sha[q->index][40] = '\0';
            if (--c->loads_pending == 0 && c->subscribed && c->state == LINK_CONNECTING) s_register(c);
        } else {
            char why[200];
            snprintf(why, sizeof why, "SCRIPT LOAD refused: %.150s", r->type == REDIS_REPLY_ERROR ? r->str : "(not a sha)");
            s_log(c, LOG_ERROR, "Redis refused a cluster command", LOG_FIELDS(LOG_STR("error", why)));
            c->stats.errors++;
            s_link_lost(c, why, 0);
        }
        break;
    case REQ_REGISTER:
    case REQ_ADD:
        if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
            s_link_lost(c, "this node's liveness key lapsed: it was taken for dead", 1);
        } else if (s_error_reply(c, r, q->kind == REQ_ADD ? "add users" : "register")) {
            if (q->kind == REQ_REGISTER) s_link_lost(c, "Redis refused the registration", 0);
            else if (q->ends_sync && c->state == LINK_SYNCING) s_link_up(c);
        } else if (q->ends_sync && c->state == LINK_SYNCING) {
            s_link_up(c);
        }
        break;
    case REQ_REFRESH:
        c->refresh_inflight = 0;
        if (r->type == REDIS_REPLY_NIL) s_link_lost(c, "this node's liveness key lapsed: it was taken for dead", 1);
        else s_error_reply(c, r, "liveness refresh");
        break;
    case REQ_REMOVE:
    case REQ_SWEEP:
        s_error_reply(c, r, q->kind == REQ_REMOVE ? "remove user" : "sweep");
        break;
    case REQ_LEAVE:                                  /* never: its connection closes first */
        break;
    case REQ_SUBSCRIBE:
        break;
    }
    free(q);
}

/* ------------------------------------------------------------ the API */

void cluster_options_default(cluster_options_t *o) {
    *o = (cluster_options_t){
        .refresh_interval = 1.0, .ttl = 3.0, .timeout = 2.0,
        .backoff_min = 0.1, .backoff_max = 5.0,
        .max_pending = 10000, .max_message = 16 * 1024 * 1024 + 65536,
        .max_forwarded = 10000,
    };
}

static const char *s_check_options(const cluster_options_t *o) {
    if (!(o->refresh_interval >= 0.01 && o->refresh_interval <= 3600))
        return "refresh_interval must be from 0.01 to 3600 seconds";
    if (!(o->ttl >= 2 * o->refresh_interval && o->ttl <= 86400))
        return "ttl must be at least twice refresh_interval (a refresh may be late) and at most 86400 s";
    if (!(o->timeout > 0 && o->timeout <= o->ttl))
        return "timeout must be above 0 and at most ttl";
    if (!(o->backoff_min > 0 && o->backoff_max >= o->backoff_min && o->backoff_max <= 3600))
        return "backoff_min must be above 0 and at most backoff_max (at most 3600 s)";
    if (o->max_pending < 1) return "max_pending must be at least 1";
    if (o->max_forwarded < 1) return "max_forwarded must be at least 1";
    if (o->max_message < 1024 || o->max_message > 512u * 1024 * 1024)
        return "max_message must be from 1 KiB to 512 MiB (Redis's own limit)";
    return NULL;
}

cluster_t *cluster_new(loop_t *loop, const char *url, const cluster_options_t *opt,
                       const cluster_events_t *ev, char *err, size_t err_len) {
    cluster_t *c = calloc(1, sizeof *c);
    if (!c) { snprintf(err, err_len, "cluster: out of memory"); return NULL; }
    if (opt) c->opt = *opt; else cluster_options_default(&c->opt);
    const char *bad = s_check_options(&c->opt);
    if (bad) { snprintf(err, err_len, "bad cluster option: %s", bad); free(c); return NULL; }
    size_t service_len = c->opt.service ? strlen(c->opt.service) : 0;
    if (c->opt.service && (service_len == 0 || service_len > 255)) {
        snprintf(err, err_len, "bad cluster option: service must be 1 to 255 bytes");
        free(c);
        return NULL;
    }
    /* the service's length first: no two services' keys can meet,
     * whatever bytes their names or user ids hold */
    int kn = c->opt.service
        ? snprintf(c->key_prefix, sizeof c->key_prefix, PREFIX "user:%zu:%s:", service_len, c->opt.service)
        : snprintf(c->key_prefix, sizeof c->key_prefix, PREFIX "user:");
    c->key_prefix_len = (size_t)kn;
    c->opt.service = NULL;                       /* not kept: the prefix is */
    if (redis_address_parse(url, &c->address, err, err_len) < 0) { free(c); return NULL; }
    if (redis_lib_load(&c->lib, err, err_len) < 0) { free(c); return NULL; }
    c->users = idset_new();
    if (!c->users) { snprintf(err, err_len, "cluster: out of memory"); redis_lib_unload(&c->lib); free(c); return NULL; }
    if (ev) c->ev = *ev;
    c->loop = loop;
    c->backoff = c->opt.backoff_min;
    char host[64] = "?";
    gethostname(host, sizeof host - 1);
    snprintf(c->info, sizeof c->info, "host=%.63s pid=%ld", host, (long)getpid());
    s_connect(c);
    return c;
}

void cluster_destroy(cluster_t **p) {
    if (!p || !*p) return;
    cluster_t *c = *p;
    int registered = c->state == LINK_UP || c->state == LINK_SYNCING;
    c->state = LINK_CLOSING;                          /* s_link_lost does nothing from here */
    if (registered) {
        /* Say goodbye: this incarnation's key goes (lookups of its users say
         * ABSENT at once, not after ttl) with a batch of its entries. One
         * non-blocking write, no answer awaited: what does not go out
         * lapses with the key, as after a crash. */
        const char *args[1] = { c->id };
        size_t lens[1] = { CLUSTER_NODE_ID_LEN };
        s_script(c, SCRIPT_LEAVE, REQ_LEAVE, 0, args, lens, 1);   /* a failure: s_link_lost, a no-op now */
        redis_conn_flush(c->cmd);
    }
    loop_cancel_timer(c->loop, c->reconnect_timer);
    loop_cancel_timer(c->loop, c->refresh_timer);
    loop_cancel_timer(c->loop, c->watchdog);
    loop_cancel_timer(c->loop, c->doom_timer);
    c->reconnect_timer = c->refresh_timer = c->watchdog = c->doom_timer = NULL;
    redis_conn_destroy(&c->cmd);      /* in-flight callbacks run here, DOWN */
    redis_conn_destroy(&c->sub);
    while (c->doomed.head) {
        cluster_req_t *q = c->doomed.head;
        s_unlink(&c->doomed, q);
        s_fail(c, q);
    }
    idset_destroy(&c->users);
    redis_lib_unload(&c->lib);
    free(c);
    *p = NULL;
}

const char *cluster_node_id(const cluster_t *c) { return c->id; }
int cluster_is_up(const cluster_t *c) { return c->state == LINK_UP; }
const char *cluster_error(const cluster_t *c) { return c->error; }

double cluster_rebuilding(const cluster_t *c) {
    if (c->state != LINK_UP || c->stats.links_up < 2) return -1;
    double since = loop_now() - c->up_at;
    return since < c->opt.backoff_max + c->opt.ttl ? since : -1;
}

void cluster_stats(const cluster_t *c, cluster_stats_t *out) {
    *out = c->stats;
    out->users = idset_count(c->users);
}

/* Writes go out once the registration is under way (SYNCING: after it on
 * the same connection, so in order); before, the resync will carry them. */
static int s_writes(const cluster_t *c) { return c->state == LINK_SYNCING || c->state == LINK_UP; }

static int s_check_user(cluster_t *c, size_t len) {
    if (c->state == LINK_CLOSING) return s_refuse(c, ESHUTDOWN, "cluster: shutting down");
    if (len == 0 || len > CLUSTER_MAX_USER)
        return s_refuse(c, EINVAL, "cluster: a user id of %zu bytes (1 to %d)", len, CLUSTER_MAX_USER);
    return 0;
}

/* The key of user `uid` (USER_KEY_MAX bytes of room): its length. */
static size_t s_user_key(const cluster_t *c, char *key, const char *uid, size_t len) {
    memcpy(key, c->key_prefix, c->key_prefix_len);
    memcpy(key + c->key_prefix_len, uid, len);
    return c->key_prefix_len + len;
}

int cluster_user_add(cluster_t *c, const char *uid, size_t len) {
    if (s_check_user(c, len) < 0) return -1;
    if (idset_add(c->users, uid, len) < 0) return s_refuse(c, ENOMEM, "cluster: out of memory");
    if (s_writes(c)) {                /* again when already there: it may have moved and come back */
        char key[USER_KEY_MAX];
        const char *args[2] = { c->id, key };
        size_t lens[2] = { CLUSTER_NODE_ID_LEN, s_user_key(c, key, uid, len) };
        s_script(c, SCRIPT_ADD, REQ_ADD, 0, args, lens, 2);
    }
    return 0;
}

int cluster_user_remove(cluster_t *c, const char *uid, size_t len) {
    if (s_check_user(c, len) < 0) return -1;
    if (idset_remove(c->users, uid, len) == 1 && s_writes(c)) {
        char key[USER_KEY_MAX];
        const char *args[2] = { c->id, key };
        size_t lens[2] = { CLUSTER_NODE_ID_LEN, s_user_key(c, key, uid, len) };
        s_script(c, SCRIPT_REMOVE, REQ_REMOVE, 0, args, lens, 2);
    }
    return 0;
}

/* A user request, or -1: refused. Sent when up, else doomed. */
static int s_user_request(cluster_t *c, cluster_req_t *q, int argc, const char **argv, const size_t *lens) {
    c->stats.pending++;
    if (c->state != LINK_UP || s_send(c, c->cmd, q, argc, argv, lens) < 0) s_doom(c, q);
    return 0;
}

static cluster_req_t *s_user_req(cluster_t *c, req_kind_t kind) {
    if (c->stats.pending >= c->opt.max_pending) {
        s_refuse(c, EBUSY, "cluster: %zu lookups and publishes are pending, the most max_pending (%zu) allows",
                 c->stats.pending, c->opt.max_pending);
        return NULL;
    }
    cluster_req_t *q = s_req(c, kind);
    if (!q) s_refuse(c, ENOMEM, "cluster: out of memory");
    return q;
}

int cluster_lookup(cluster_t *c, const char *uid, size_t len, cluster_lookup_fn cb, void *arg) {
    if (s_check_user(c, len) < 0) return -1;
    cluster_req_t *q = s_user_req(c, REQ_LOOKUP);
    if (!q) return -1;
    q->lookup = cb;
    q->arg = arg;
    c->stats.lookups++;
    char key[USER_KEY_MAX];
    const char *argv[4] = { "EVALSHA", c->sha[SCRIPT_LOOKUP], "0", key };
    size_t lens[4] = { 7, 40, 1, s_user_key(c, key, uid, len) };
    return s_user_request(c, q, 4, argv, lens);
}

int cluster_publish(cluster_t *c, const char *node, size_t node_len, const char *data, size_t len,
                    cluster_publish_fn cb, void *arg) {
    if (c->state == LINK_CLOSING) return s_refuse(c, ESHUTDOWN, "cluster: shutting down");
    if (node_len == 0 || node_len > 64)
        return s_refuse(c, EINVAL, "cluster: a node id of %zu bytes (1 to 64)", node_len);
    if (len > c->opt.max_message)
        return s_refuse(c, EMSGSIZE, "cluster: a message of %zu bytes, over max_message (%zu)", len, c->opt.max_message);
    cluster_req_t *q = s_user_req(c, REQ_PUBLISH);
    if (!q) return -1;
    q->publish = cb;
    q->arg = arg;
    c->stats.publishes++;
    char channel[80];
    int n = snprintf(channel, sizeof channel, PREFIX "chan:%.*s", (int)node_len, node);
    const char *argv[3] = { "PUBLISH", channel, data };
    size_t lens[3] = { 7, (size_t)n, len };
    return s_user_request(c, q, 3, argv, lens);
}
