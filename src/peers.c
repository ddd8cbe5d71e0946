/*
 * peers: the peer directory (see peers.h).
 *
 * Three hash indexes (routing id, identity, fd) share one power-of-two
 * bucket count that doubles when the load passes 1; FNV-1a hashes the byte
 * strings. The routing id and the carried user id share the entry's
 * allocation; a login set by HELLO is allocated apart.
 */
#include "peers.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EVICT_LOOK 8          /* entries looked at per insertion over max */

struct peers {
    peer_t **by_id, **by_user, **by_fd;
    size_t nbuckets, count;
    peer_t *oldest, *newest;
    uint64_t next_serial;
    size_t max;                /* 0: unbounded */
    peer_t *evict_from;        /* where the last look for idle entries stopped; NULL: the oldest */
    peer_t *last;              /* the last one found: a reply's lookups follow its WORK's */
    int (*busy)(const peer_t *p);
    peers_free_fn on_free;
    peers_identity_fn on_identity;
    void *ctx;
};

static size_t s_hash(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return (size_t)h;
}

static size_t s_fd_hash(int fd) { return (size_t)(unsigned)fd * 2654435761u; }

#define ID_SLOT(d, e)   (&(d)->by_id[s_hash((e)->routing_id, (e)->routing_id_len) & ((d)->nbuckets - 1)])
#define USER_SLOT(d, e) (&(d)->by_user[s_hash((e)->user_id, (e)->user_id_len) & ((d)->nbuckets - 1)])
#define FD_SLOT(d, e)   (&(d)->by_fd[s_fd_hash((e)->fd) & ((d)->nbuckets - 1)])

static int s_alloc_buckets(peers_t *d, size_t n) {
    peer_t **a = calloc(n, sizeof *a), **b = calloc(n, sizeof *b), **c = calloc(n, sizeof *c);
    if (!a || !b || !c) { free(a); free(b); free(c); return -1; }
    free(d->by_id); free(d->by_user); free(d->by_fd);
    d->by_id = a; d->by_user = b; d->by_fd = c;
    d->nbuckets = n;
    return 0;
}

static void s_link(peers_t *d, peer_t *e) {
    peer_t **s = ID_SLOT(d, e);
    e->hash_next = *s; *s = e;
    s = USER_SLOT(d, e);
    e->user_next = *s; *s = e;
    s = FD_SLOT(d, e);
    e->fd_next = *s; *s = e;
}

peers_t *peers_new(peers_free_fn on_free, void *ctx) {
    peers_t *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    if (s_alloc_buckets(d, 64) < 0) { free(d); return NULL; }
    d->on_free = on_free;
    d->ctx = ctx;
    return d;
}

void peers_set_identity_listener(peers_t *d, peers_identity_fn fn) { d->on_identity = fn; }

/* Open entry `e` has just left the user index, or closed: say so if no
 * other open entry carries its identity. An identity is present only
 * while an open connection carries it: under a heartbeat backend an entry
 * outlives its connection (closed, until the heartbeat timeout), and a
 * cluster that registers its users again after a Redis outage must not
 * claim one who has moved to another node. */
static void s_identity_left(peers_t *d, const peer_t *e) {
    if (!d->on_identity) return;
    const peer_t *f = peers_find_user(d, e->user_id, e->user_id_len);
    if (!f || f->closed) d->on_identity(d->ctx, e->user_id, e->user_id_len, 0);
}

void peers_set_max(peers_t *d, size_t max, int (*busy)(const peer_t *p)) {
    d->max = max;
    d->busy = busy;
}

void peers_free(peers_t *d, peer_t *p) {
    if (!p) return;
    if (d->last == p) d->last = NULL;
    if (d->on_free) d->on_free(d->ctx, p);
    free(p->login);
    free(p);
}

void peers_destroy(peers_t **p) {
    if (!p || !*p) return;
    peers_t *d = *p;
    d->last = NULL;
    for (peer_t *e = d->oldest, *next; e; e = next) { next = e->newer; peers_free(d, e); }
    free(d->by_id); free(d->by_user); free(d->by_fd);
    free(d);
    *p = NULL;
}

size_t peers_count(const peers_t *d) { return d->count; }
peer_t *peers_oldest(peers_t *d) { return d->oldest; }

peer_t *peers_find(peers_t *d, const char *rid, size_t len) {
    peer_t *e = d->last;
    if (e && e->routing_id_len == len && memcmp(e->routing_id, rid, len) == 0) return e;
    for (e = d->by_id[s_hash(rid, len) & (d->nbuckets - 1)]; e; e = e->hash_next)
        if (e->routing_id_len == len && memcmp(e->routing_id, rid, len) == 0) return d->last = e;
    return NULL;
}

peer_t *peers_find_user(peers_t *d, const char *uid, size_t len) {
    peer_t *best = NULL;
    for (peer_t *e = d->by_user[s_hash(uid, len) & (d->nbuckets - 1)]; e; e = e->user_next)
        if (e->user_id_len == len && memcmp(e->user_id, uid, len) == 0 &&
            (!best || (best->closed && !e->closed) ||
             (best->closed == e->closed && e->last_seen > best->last_seen)))
            best = e;
    return best;
}

peer_t *peers_find_fd(peers_t *d, int fd) {
    for (peer_t *e = d->by_fd[s_fd_hash(fd) & (d->nbuckets - 1)]; e; e = e->fd_next)
        if (e->fd == fd) return e;
    return NULL;
}

void peers_close_fd(peers_t *d, int fd) {
    for (peer_t *e = d->by_fd[s_fd_hash(fd) & (d->nbuckets - 1)]; e; e = e->fd_next)
        if (e->fd == fd && !e->closed) {
            e->closed = 1;
            s_identity_left(d, e);
        }
}

static void s_unlink_chain(peer_t **slot, peer_t *e, size_t next_offset) {
    while (*slot && *slot != e) slot = (peer_t **)((char *)*slot + next_offset);
    if (*slot) *slot = *(peer_t **)((char *)e + next_offset);
}

static void s_unlink_order(peers_t *d, peer_t *e) {
    if (d->evict_from == e) d->evict_from = e->newer;
    if (e->older) e->older->newer = e->newer; else d->oldest = e->newer;
    if (e->newer) e->newer->older = e->older; else d->newest = e->older;
    e->older = e->newer = NULL;
}

static void s_append_order(peers_t *d, peer_t *e) {
    e->older = d->newest;
    e->newer = NULL;
    if (d->newest) d->newest->newer = e; else d->oldest = e;
    d->newest = e;
}

static void s_grow(peers_t *d) {
    if (s_alloc_buckets(d, d->nbuckets * 2) < 0) return;   /* stay at this size: still correct */
    for (peer_t *e = d->oldest; e; e = e->newer) s_link(d, e);
}

void peers_detach(peers_t *d, peer_t *e) {
    if (d->last == e) d->last = NULL;
    s_unlink_chain(ID_SLOT(d, e), e, offsetof(peer_t, hash_next));
    s_unlink_chain(USER_SLOT(d, e), e, offsetof(peer_t, user_next));
    s_unlink_chain(FD_SLOT(d, e), e, offsetof(peer_t, fd_next));
    s_unlink_order(d, e);
    d->count--;
    if (!e->closed) s_identity_left(d, e);      /* a closed one's was said at its close */
}

void peers_remove(peers_t *d, peer_t *e) {
    peers_detach(d, e);
    peers_free(d, e);
}

/* Over max: idle entries go, least recently heard first, never `keep`.
 * The look goes on where the last one stopped, so busy entries at the old
 * end are passed over once per round rather than blocking every eviction
 * (a few busy peers that go silent must not unbound the directory). */
static void s_evict(peers_t *d, peer_t *keep) {
    peer_t *e = d->evict_from ? d->evict_from : d->oldest;
    for (int look = 0; e && d->count > d->max && look < EVICT_LOOK; look++) {
        peer_t *next = e->newer;
        if (e != keep && !(d->busy && d->busy(e))) peers_remove(d, e);
        e = next;
    }
    d->evict_from = e;                           /* NULL at the newest end: the oldest again */
}

int peers_log_in(peers_t *d, peer_t *e, const char *login, size_t len) {
    char *copy = malloc(len + 1);
    if (!copy) return -1;
    memcpy(copy, login, len);
    copy[len] = '\0';
    s_unlink_chain(USER_SLOT(d, e), e, offsetof(peer_t, user_next));
    if (!e->closed) s_identity_left(d, e);
    free(e->login);
    e->login = copy;
    e->user_id = copy;
    e->user_id_len = len;
    e->logged_in = 1;
    peer_t **s = USER_SLOT(d, e);
    e->user_next = *s;
    *s = e;
    if (d->on_identity && !e->closed) d->on_identity(d->ctx, e->user_id, e->user_id_len, 1);
    return 0;
}

peer_t *peers_seen(peers_t *d, const char *rid, size_t rid_len,
                   const char *uid, size_t uid_len, int fd, int fd_closed,
                   double now, int *is_new) {
    if (!uid || uid_len == 0) { uid = rid; uid_len = rid_len; }
    peer_t *e = peers_find(d, rid, rid_len);
    *is_new = 0;
    if (e && (e->fd != fd || e->carried_len != uid_len || memcmp(e->carried, uid, uid_len) != 0 ||
              (e->closed && !fd_closed))) {
        peers_remove(d, e);                        /* another connection on that routing id */
        e = NULL;
    }
    if (!e) {
        e = calloc(1, sizeof *e + rid_len + uid_len);
        if (!e) return NULL;
        e->routing_id = (char *)(e + 1);
        e->routing_id_len = rid_len;
        memcpy(e->routing_id, rid, rid_len);
        e->carried = e->routing_id + rid_len;
        e->carried_len = uid_len;
        memcpy(e->carried, uid, uid_len);
        e->user_id = e->carried;
        e->user_id_len = uid_len;
        e->fd = fd;
        e->closed = fd_closed;
        e->serial = ++d->next_serial;
        s_link(d, e);
        s_append_order(d, e);
        d->count++;
        *is_new = 1;
        if (d->on_identity && !e->closed) d->on_identity(d->ctx, e->user_id, e->user_id_len, 1);
        if (d->count > d->nbuckets) s_grow(d);
        if (d->max && d->count > d->max) s_evict(d, e);
    } else if (d->newest != e) {
        s_unlink_order(d, e);
        s_append_order(d, e);
    }
    e->last_seen = now;
    return e;
}
