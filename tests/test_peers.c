/*
 * test_peers: the peer directory (src/peers.c): insert, touch, order by last
 * contact, user-id lookup, removal, growth past the first bucket array, and
 * a routing id taken over by another user id, the identity listener.
 */
#include <stdio.h>
#include <string.h>

#include "peers.h"

static int g_checks, g_failed;
#include "check.h"

static peer_t *seen_on(peers_t *d, const char *rid, const char *uid, int fd, double now, int *is_new) {
    return peers_seen(d, rid, strlen(rid), uid, uid ? strlen(uid) : 0, fd, 0, now, is_new);
}

static peer_t *seen(peers_t *d, const char *rid, const char *uid, double now, int *is_new) {
    return seen_on(d, rid, uid, 7, now, is_new);
}

static void test_basics(void) {
    peers_t *d = peers_new(NULL, NULL);
    int is_new;
    CHECK(d && peers_count(d) == 0 && peers_oldest(d) == NULL, "a new directory is empty");
    peer_t *a = seen(d, "a", NULL, 1.0, &is_new);
    CHECK(a && is_new, "first contact adds");
    CHECK(a->user_id_len == 1 && memcmp(a->user_id, "a", 1) == 0, "no user id: the routing id");
    peer_t *b = seen(d, "b", "bob", 2.0, &is_new);
    CHECK(is_new && b->user_id_len == 3, "a user id is kept");
    CHECK(peers_oldest(d) == a && a->newer == b, "oldest first");
    CHECK(seen(d, "a", NULL, 3.0, &is_new) == a && !is_new, "contact again: same entry");
    CHECK(peers_oldest(d) == b && b->newer == a && a->last_seen == 3.0, "touched moves to newest");
    CHECK(peers_find(d, "b", 1) == b && peers_find(d, "c", 1) == NULL, "find by routing id");
    CHECK(peers_find_user(d, "bob", 3) == b, "find by user id");
    CHECK(peers_find_user(d, "b", 1) == NULL, "a routing id is not a user id when one was given");
    peer_t *b2 = seen(d, "b2", "bob", 4.0, &is_new);
    CHECK(peers_find_user(d, "bob", 3) == b2, "the most recent connection of a user wins");
    peer_t *b3 = seen(d, "b", "mallory", 5.0, &is_new);
    CHECK(is_new && peers_find_user(d, "bob", 3) == b2 && peers_find(d, "b", 1) == b3,
          "a routing id claimed by another user is a new peer");
    peers_remove(d, b2);
    CHECK(peers_find_user(d, "bob", 3) == NULL && peers_count(d) == 2, "removed");
    peers_destroy(&d);
    CHECK(d == NULL, "destroy clears the pointer");
    peers_destroy(&d);
}

/* DESIGN.md 4.1: identity per connection; a HELLO login is the identity */
static void test_identity(void) {
    peers_t *d = peers_new(NULL, NULL);
    int is_new;
    peer_t *a = seen_on(d, "r", "KEY", 10, 1.0, &is_new);
    CHECK(peers_find_fd(d, 10) == a && peers_find_fd(d, 11) == NULL, "found by connection");
    CHECK(peers_log_in(d, a, "alice", 5) == 0 && a->logged_in, "logged in");
    CHECK(peers_find_user(d, "alice", 5) == a && peers_find_user(d, "KEY", 3) == NULL,
          "after HELLO the login is the identity, not the key");
    CHECK(seen_on(d, "r", "KEY", 10, 2.0, &is_new) == a && !is_new && a->logged_in &&
          a->user_id_len == 5, "the same connection keeps its login");
    peer_t *b = seen_on(d, "r", "KEY", 12, 3.0, &is_new);
    CHECK(is_new && !b->logged_in && b->user_id_len == 3 && peers_find_user(d, "alice", 5) == NULL,
          "a new connection on that routing id starts over, even with the same key");
    peers_close_fd(d, 12);
    CHECK(b->closed && peers_find_fd(d, 12) == b, "a closed connection is marked");
    CHECK(peers_seen(d, "r", 1, "KEY", 3, 12, 1, 3.5, &is_new) == b && !is_new && b->closed,
          "a message still in flight from it keeps it closed");
    peer_t *b2 = peers_seen(d, "r", 1, "KEY", 3, 12, 0, 4.0, &is_new);
    CHECK(is_new && !b2->closed, "the fd open again: a new connection");
    b = b2;
    peers_detach(d, b);
    CHECK(peers_find(d, "r", 1) == NULL && peers_find_fd(d, 12) == NULL && peers_count(d) == 0,
          "detached from every index");
    peers_free(d, b);
    peers_destroy(&d);
}

static void test_many(void) {
    peers_t *d = peers_new(NULL, NULL);
    int is_new;
    char id[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "peer-%d", i);
        seen(d, id, NULL, (double)i, &is_new);
    }
    CHECK(peers_count(d) == 10000, "10,000 peers");
    int found = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "peer-%d", i);
        peer_t *p = peers_find(d, id, strlen(id));
        found += p && p->last_seen == (double)i;
    }
    CHECK(found == 10000, "all found after the table grew (%d)", found);
    double last = -1;
    int ordered = 1, n = 0;
    for (peer_t *p = peers_oldest(d); p; p = p->newer, n++) {
        if (p->last_seen < last) ordered = 0;
        last = p->last_seen;
    }
    CHECK(ordered && n == 10000, "walk is in last-contact order");
    while (peers_oldest(d) && peers_oldest(d)->last_seen < 9000) peers_remove(d, peers_oldest(d));
    CHECK(peers_count(d) == 1000, "expiry from the oldest end");
    peers_destroy(&d);
}

static int g_freed;
static void s_count_free(void *ctx, peer_t *p) { (void)p; (*(int *)ctx)++; }
static int s_busy_if_even(const peer_t *p) { return p->inflight % 2 == 0 && p->inflight > 0; }

/* max_peers: past it the least recently heard idle entries go, busy ones
 * are passed over, the newest is never evicted; on_free runs for each. */
static void test_bound(void) {
    peers_t *d = peers_new(s_count_free, &g_freed);
    peers_set_max(d, 3, s_busy_if_even);
    int is_new;
    peer_t *a = seen(d, "a", NULL, 1.0, &is_new);
    seen(d, "b", NULL, 2.0, &is_new);
    seen(d, "c", NULL, 3.0, &is_new);
    CHECK(peers_count(d) == 3 && g_freed == 0, "at the bound: all kept");
    a->inflight = 2;                           /* something is held for a */
    seen(d, "d", NULL, 4.0, &is_new);
    CHECK(peers_count(d) == 3 && g_freed == 1, "one past it: one entry goes (%zu, %d)",
          peers_count(d), g_freed);
    CHECK(peers_find(d, "a", 1) == a && !peers_find(d, "b", 1) && peers_find(d, "d", 1),
          "the oldest idle one (b), not the busy older one (a)");
    CHECK(a->serial > 0 && peers_find(d, "d", 1)->serial > peers_find(d, "c", 1)->serial,
          "serials grow per entry");
    peers_set_max(d, 1, s_busy_if_even);
    seen(d, "e", NULL, 5.0, &is_new);
    CHECK(peers_count(d) == 2 && peers_find(d, "a", 1) && peers_find(d, "e", 1),
          "a busy entry may keep the directory over its bound, the newest stays (%zu)",
          peers_count(d));
    peers_destroy(&d);
    CHECK(g_freed == 5, "on_free ran for every entry, %d", g_freed);
}

/* Busy entries at the old end (peers that started long calls and went
 * silent) do not stop eviction: the look goes on past them. */
static void test_bound_past_busy(void) {
    g_freed = 0;
    peers_t *d = peers_new(s_count_free, &g_freed);
    peers_set_max(d, 4, s_busy_if_even);
    int is_new;
    char id[32];
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof id, "busy-%d", i);
        seen(d, id, NULL, (double)i, &is_new)->inflight = 2;
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "idle-%d", i);
        seen(d, id, NULL, 100.0 + i, &is_new);
    }
    CHECK(peers_count(d) <= 8 + 4 + 1, "8 busy entries at the old end: the directory stays near "
          "its bound, %zu entries", peers_count(d));
    int busy_kept = 0;
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof id, "busy-%d", i);
        busy_kept += peers_find(d, id, strlen(id)) != NULL;
    }
    CHECK(busy_kept == 8, "the busy ones are all kept (%d)", busy_kept);
    peers_destroy(&d);
}


/* What the identity listener heard, as "+alice -bob ..." */
static char g_heard[256];

static void s_heard(void *ctx, const char *uid, size_t len, int present) {
    (void)ctx;
    size_t n = strlen(g_heard);
    snprintf(g_heard + n, sizeof g_heard - n, "%s%c%.*s", n ? " " : "", present ? '+' : '-', (int)len, uid);
}

static void test_identity_listener(void) {
    peers_t *d = peers_new(NULL, NULL);
    peers_set_identity_listener(d, s_heard);
    int is_new;
    g_heard[0] = '\0';
    peer_t *a = seen_on(d, "r1", "alice", 5, 1.0, &is_new);
    seen_on(d, "r1", "alice", 5, 2.0, &is_new);               /* heard again: nothing */
    peer_t *a2 = seen_on(d, "r2", "alice", 6, 3.0, &is_new);  /* a second connection */
    CHECK(strcmp(g_heard, "+alice +alice") == 0, "each new entry says so: '%s'", g_heard);
    g_heard[0] = '\0';
    peers_remove(d, a);
    CHECK(g_heard[0] == '\0', "alice still has an entry: nothing said, got '%s'", g_heard);
    peers_remove(d, a2);
    CHECK(strcmp(g_heard, "-alice") == 0, "her last entry gone: '%s'", g_heard);
    g_heard[0] = '\0';
    peer_t *b = seen_on(d, "r3", NULL, 7, 4.0, &is_new);
    CHECK(peers_log_in(d, b, "bob", 3) == 0, "log in");
    CHECK(strcmp(g_heard, "+r3 -r3 +bob") == 0, "a login moves the identity: '%s'", g_heard);
    g_heard[0] = '\0';
    seen_on(d, "r3", NULL, 8, 5.0, &is_new);                  /* another connection on r3 */
    CHECK(strcmp(g_heard, "-bob +r3") == 0, "a replaced entry leaves, the new one comes: '%s'", g_heard);
    g_heard[0] = '\0';
    peers_destroy(&d);
    CHECK(g_heard[0] == '\0', "destroy says nothing: '%s'", g_heard);
}

/* Under a heartbeat backend an entry outlives its connection (closed,
 * until the heartbeat timeout), but the identity is present only while an
 * open connection carries it: a cluster that re-registers its users after
 * a Redis outage must not claim one who has left for another node. */
static void test_identity_closed(void) {
    peers_t *d = peers_new(NULL, NULL);
    peers_set_identity_listener(d, s_heard);
    int is_new;
    g_heard[0] = '\0';
    peer_t *a = seen_on(d, "r1", "carol", 10, 1.0, &is_new);
    peer_t *a2 = seen_on(d, "r2", "carol", 11, 1.0, &is_new);
    g_heard[0] = '\0';
    peers_close_fd(d, 10);
    CHECK(a->closed && g_heard[0] == '\0', "one of two connections closed: nothing said, got '%s'", g_heard);
    peers_close_fd(d, 11);
    CHECK(a2->closed && strcmp(g_heard, "-carol") == 0, "the last open one closed: '%s'", g_heard);
    g_heard[0] = '\0';
    peers_remove(d, a);
    peers_remove(d, a2);
    CHECK(g_heard[0] == '\0', "the closed entries' end says nothing more: '%s'", g_heard);
    g_heard[0] = '\0';
    peer_t *late = peers_seen(d, "r4", 2, "dave", 4, 12, 1, 2.0, &is_new);   /* read after its close */
    CHECK(late && late->closed && g_heard[0] == '\0', "a closed connection's entry is no presence: '%s'", g_heard);
    peers_seen(d, "r4", 2, "dave", 4, 13, 0, 3.0, &is_new);                 /* back, open */
    CHECK(strcmp(g_heard, "+dave") == 0, "an open connection on it is: '%s'", g_heard);
    peers_destroy(&d);
}

int main(void) {
    test_basics();
    test_identity();
    test_identity_listener();
    test_identity_closed();
    test_many();
    test_bound();
    test_bound_past_busy();
    printf("test_peers: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
