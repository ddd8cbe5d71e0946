/*
 * peers: the peer directory (see peers.h).
 *
 * Routing ids are short byte strings (1..255); FNV-1a hashes them into a
 * power-of-two bucket array that doubles when the load passes 1. The user id
 * shares the entry's allocation, after the routing id.
 */
#include "peers.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct peers {
    peer_t **buckets;
    size_t nbuckets, count;
    peer_t *oldest, *newest;
};

static size_t s_hash(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return (size_t)h;
}

peers_t *peers_new(void) {
    peers_t *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->nbuckets = 64;
    d->buckets = calloc(d->nbuckets, sizeof *d->buckets);
    if (!d->buckets) { free(d); return NULL; }
    return d;
}

void peers_destroy(peers_t **p) {
    if (!p || !*p) return;
    peers_t *d = *p;
    for (peer_t *e = d->oldest, *next; e; e = next) { next = e->newer; free(e); }
    free(d->buckets);
    free(d);
    *p = NULL;
}

size_t peers_count(const peers_t *d) { return d->count; }
peer_t *peers_oldest(peers_t *d) { return d->oldest; }

peer_t *peers_find(peers_t *d, const char *rid, size_t len) {
    for (peer_t *e = d->buckets[s_hash(rid, len) & (d->nbuckets - 1)]; e; e = e->hash_next)
        if (e->routing_id_len == len && memcmp(e->routing_id, rid, len) == 0) return e;
    return NULL;
}

peer_t *peers_find_user(peers_t *d, const char *uid, size_t len) {
    /* the routing id is the user id without authentication: try that first */
    peer_t *e = peers_find(d, uid, len);
    if (e && e->user_id_len == len && memcmp(e->user_id, uid, len) == 0) return e;
    for (e = d->newest; e; e = e->older)
        if (e->user_id_len == len && memcmp(e->user_id, uid, len) == 0) return e;
    return NULL;
}

static void s_unlink_order(peers_t *d, peer_t *e) {
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
    size_t n = d->nbuckets * 2;
    peer_t **b = calloc(n, sizeof *b);
    if (!b) return;                                /* stay at this size: still correct */
    for (peer_t *e = d->oldest; e; e = e->newer) {
        size_t k = s_hash(e->routing_id, e->routing_id_len) & (n - 1);
        e->hash_next = b[k];
        b[k] = e;
    }
    free(d->buckets);
    d->buckets = b;
    d->nbuckets = n;
}

peer_t *peers_seen(peers_t *d, const char *rid, size_t rid_len,
                   const char *uid, size_t uid_len, double now, int *is_new) {
    if (!uid || uid_len == 0) { uid = rid; uid_len = rid_len; }
    peer_t *e = peers_find(d, rid, rid_len);
    *is_new = 0;
    if (e && (e->user_id_len != uid_len || memcmp(e->user_id, uid, uid_len) != 0)) {
        peers_remove(d, e);                        /* same routing id, new user: a new peer */
        e = NULL;
    }
    if (!e) {
        e = malloc(sizeof *e + rid_len + uid_len);
        if (!e) return NULL;
        e->routing_id = (char *)(e + 1);
        e->routing_id_len = rid_len;
        memcpy(e->routing_id, rid, rid_len);
        e->user_id = e->routing_id + rid_len;
        e->user_id_len = uid_len;
        memcpy(e->user_id, uid, uid_len);
        size_t k = s_hash(rid, rid_len) & (d->nbuckets - 1);
        e->hash_next = d->buckets[k];
        d->buckets[k] = e;
        e->older = e->newer = NULL;
        s_append_order(d, e);
        d->count++;
        *is_new = 1;
        if (d->count > d->nbuckets) s_grow(d);
    } else if (d->newest != e) {
        s_unlink_order(d, e);
        s_append_order(d, e);
    }
    e->last_seen = now;
    return e;
}

void peers_remove(peers_t *d, peer_t *e) {
    peer_t **pp = &d->buckets[s_hash(e->routing_id, e->routing_id_len) & (d->nbuckets - 1)];
    while (*pp != e) pp = &(*pp)->hash_next;
    *pp = e->hash_next;
    s_unlink_order(d, e);
    d->count--;
    free(e);
}
