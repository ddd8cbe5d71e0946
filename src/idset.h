/*
 * idset: a set of ids, byte strings of 1 to 255 bytes (any byte, NUL too),
 * with O(1) add, remove and membership. The cluster keeps in one the users
 * it registered, so it can register them all again when Redis comes back.
 *
 * The ids are a peer's to choose, so buckets are picked with SipHash under
 * a random key per set (libsodium's crypto_shorthash): nobody can line up
 * ids that share one chain. No Lua, no I/O.
 */
#ifndef PSEUD_IDSET_H
#define PSEUD_IDSET_H

#include <stddef.h>

#define IDSET_MAX_ID 255

typedef struct idset idset_t;

/* New, empty set; NULL when out of memory. */
idset_t *idset_new(void);
/* Free it and its ids; takes NULL, clears *p. */
void idset_destroy(idset_t **p);

/* 1 added (a copy), 0 already there, -1 out of memory or a length outside
 * 1..IDSET_MAX_ID. */
int idset_add(idset_t *s, const char *id, size_t len);
/* 1 removed, 0 was not there. */
int idset_remove(idset_t *s, const char *id, size_t len);
int idset_has(const idset_t *s, const char *id, size_t len);
size_t idset_count(const idset_t *s);

/* Counted use (a worker's calls per peer; the count costs every entry 8
 * bytes, plain sets too): idset_incr adds the id with
 * count 1 or counts it once more, and returns the new count (-1 out of
 * memory or a bad length); idset_decr counts it once less, removes it at
 * 0 and returns what is left (0 when it was not there); idset_get is the
 * count, 0 when absent. idset_add puts an id in with count 1. */
long idset_incr(idset_t *s, const char *id, size_t len);
long idset_decr(idset_t *s, const char *id, size_t len);
long idset_get(const idset_t *s, const char *id, size_t len);

/* Call fn(arg, id, len) for every id, in no order; stops early when fn
 * returns non-zero (and returns that). The set must not change meanwhile. */
typedef int (*idset_each_fn)(void *arg, const char *id, size_t len);
int idset_each(const idset_t *s, idset_each_fn fn, void *arg);

#endif
