/*
 * peers: the directory of peers an endpoint has heard from. One entry per
 * routing id, with the user id its messages carried (ZAP User-Id, or the
 * routing id itself without authentication) and when it was last heard.
 * Entries are kept in a hash on the routing id and in a list ordered by last
 * contact, oldest first, so expiry walks from the head. No Lua, no ZeroMQ.
 */
#ifndef PSEUD_PEERS_H
#define PSEUD_PEERS_H

#include <stddef.h>

typedef struct peers peers_t;

typedef struct peer {
    char *routing_id;  size_t routing_id_len;
    char *user_id;     size_t user_id_len;
    double last_seen;                 /* monotonic seconds */
    /* private to peers.c */
    struct peer *hash_next;
    struct peer *older, *newer;       /* last-contact order */
} peer_t;

/* New, empty directory; NULL when out of memory. */
peers_t *peers_new(void);
/* Free it and every entry; takes NULL, clears *p. */
void peers_destroy(peers_t **p);

/* Record contact from `routing_id` carrying `user_id` (NULL or empty: the
 * routing id) at `now`; the entry moves to the newest end. Returns the entry,
 * or NULL when out of memory. `*is_new` tells whether it was just added. */
peer_t *peers_seen(peers_t *d, const char *routing_id, size_t routing_id_len,
                   const char *user_id, size_t user_id_len, double now, int *is_new);

/* The entry for a routing id, or NULL. */
peer_t *peers_find(peers_t *d, const char *routing_id, size_t len);

/* The most recently heard entry with this user id, or NULL. */
peer_t *peers_find_user(peers_t *d, const char *user_id, size_t len);

/* Remove and free `p`. */
void peers_remove(peers_t *d, peer_t *p);

/* The oldest entry (least recently heard), or NULL; then p->newer. */
peer_t *peers_oldest(peers_t *d);

size_t peers_count(const peers_t *d);

#endif
