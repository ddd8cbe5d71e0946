/*
 * peers: the directory of peers an endpoint has heard from (DESIGN.md
 * section 4.1: a peer is its user id, a routing id only its address).
 *
 * One entry per routing id: the connection it was heard on (the socket fd
 * libzmq reports, ZMQ_SRCFD), the user id its messages carry (ZAP User-Id,
 * or the routing id itself without authentication), its identity (that user
 * id, or the login of a HELLO it passed on this connection) and when it was
 * last heard. A message with the same routing id but another connection or
 * another carried user id is a new peer: the old entry, and whatever it had
 * proved, is gone. Entries are indexed by routing id, by identity and by fd,
 * and listed by last contact, oldest first. No Lua, no ZeroMQ.
 */
#ifndef PSEUD_PEERS_H
#define PSEUD_PEERS_H

#include <stddef.h>
#include <stdint.h>

typedef struct peers peers_t;

typedef struct peer {
    char *routing_id;  size_t routing_id_len;
    char *user_id;     size_t user_id_len;     /* its identity */
    double last_seen;                          /* monotonic seconds */
    int fd;                                    /* its connection, or -1 (inproc) */
    int logged_in;                             /* passed a HELLO on this connection */
    int closed;                                /* its connection closed: nothing goes to it */
    uint64_t serial;                           /* unique per entry: which connection an answer is for */
    /* the endpoint's, for its budget (DESIGN.md 4.2); peers.c only keeps them */
    size_t work_bytes;                         /* bodies of its WORK still being answered */
    unsigned inflight;                         /* how many of them were handed on (running) */
    struct endpoint_parked *park_head, *park_tail; /* admitted calls waiting their turn */
    struct peer *parked_prev, *parked_next;    /* in the endpoint's list of peers with such */
    size_t reply_max;                          /* its largest reply so far, bytes */
    struct endpoint_out *out_head, *out_tail;  /* messages waiting to leave towards it */
    size_t out_bytes;                          /* their bytes, entries and all */
    struct peer *blocked_prev, *blocked_next;  /* in the endpoint's list of peers with a queue */
    struct endpoint_meter *meter;              /* bytes handed to ZeroMQ that have not left */
    /* private to peers.c */
    char *carried;     size_t carried_len;     /* the user id its messages carry */
    char *login;                               /* malloc'd identity after HELLO, or NULL */
    struct peer *hash_next, *user_next, *fd_next;
    struct peer *older, *newer;                /* last-contact order */
} peer_t;

/* Called for every entry just before it is freed (replaced by a new
 * connection, removed, evicted, destroyed), so its owner can release what
 * it hung on it. */
typedef void (*peers_free_fn)(void *ctx, peer_t *p);

/* Told when an identity becomes present (`present` 1: an open connection's
 * entry now carries it, by a new entry or a login) and when it stops being
 * (0: the last open entry carrying it closed, or was removed, replaced,
 * evicted or logged in as another), so a cluster can publish where its
 * users are. A closed entry (a heartbeat backend keeps it until its
 * timeout) is no presence. Not told by peers_destroy. The listener must not change
 * the directory. */
typedef void (*peers_identity_fn)(void *ctx, const char *user_id, size_t len, int present);

/* New, empty directory; NULL when out of memory. */
peers_t *peers_new(peers_free_fn on_free, void *ctx);

/* Listen to identities coming and going (NULL: nobody does); `ctx` is
 * peers_new's. */
void peers_set_identity_listener(peers_t *d, peers_identity_fn fn);

/* At most `max` entries (0: no bound): past it, the least recently heard
 * entries that `busy` says are idle are evicted, oldest first (a few are
 * looked at per insertion, so a directory of busy peers can stay over). */
void peers_set_max(peers_t *d, size_t max, int (*busy)(const peer_t *p));
/* Free it and every entry; takes NULL, clears *p. */
void peers_destroy(peers_t **p);

/* Record contact from `routing_id` on connection `fd` carrying `user_id`
 * (NULL or empty: the routing id) at `now`; the entry moves to the newest
 * end. `fd_closed`: that fd's connection closed and no new one was accepted
 * on it since (the message was still in flight): the entry is closed. An
 * entry that is closed while its fd is open again is a new connection.
 * Returns the entry, or NULL when out of memory. `*is_new` tells whether it
 * was just added (a new routing id or a new connection on it). */
peer_t *peers_seen(peers_t *d, const char *routing_id, size_t routing_id_len,
                   const char *user_id, size_t user_id_len, int fd, int fd_closed,
                   double now, int *is_new);

/* Connection `fd` closed: its entries are marked closed (the listener
 * hears the identities no open entry carries any more). */
void peers_close_fd(peers_t *d, int fd);

/* The entry for a routing id, or NULL. */
peer_t *peers_find(peers_t *d, const char *routing_id, size_t len);

/* The most recently heard entry whose identity is `user_id`, open ones
 * first, or NULL. */
peer_t *peers_find_user(peers_t *d, const char *user_id, size_t len);

/* The first entry heard on connection `fd`, or NULL; the others follow it
 * on p->fd_next, which is a hash chain: skip those whose p->fd differs. */
peer_t *peers_find_fd(peers_t *d, int fd);

/* `p` passed a HELLO as `login`: that is its identity from now on, for this
 * connection. Returns 0, or -1 when out of memory (nothing changed). */
int peers_log_in(peers_t *d, peer_t *p, const char *login, size_t len);

/* Take `p` out of the directory without freeing it (peers_free later). */
void peers_detach(peers_t *d, peer_t *p);
/* Free a detached entry (on_free runs first); takes NULL. */
void peers_free(peers_t *d, peer_t *p);

/* Remove and free `p`. */
void peers_remove(peers_t *d, peer_t *p);

/* The oldest entry (least recently heard), or NULL; then p->newer. */
peer_t *peers_oldest(peers_t *d);

size_t peers_count(const peers_t *d);

#endif
