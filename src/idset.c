/*
 * idset: chained buckets, a power-of-two count that doubles when the load
 * passes 1 (see idset.h). One allocation per id: its chain link, length
 * and bytes together.
 */
#include "idset.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

typedef struct idset_entry {
    struct idset_entry *next;
    long count;                   /* 1 for a plain set's ids */
    unsigned char len;
    char id[];
} idset_entry_t;

struct idset {
    idset_entry_t **buckets;
    size_t nbuckets;              /* a power of two */
    size_t count;
    unsigned char key[crypto_shorthash_KEYBYTES];
};

static size_t s_bucket(const idset_t *s, const char *id, size_t len) {
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, (const unsigned char *)id, len, s->key);
    uint64_t v;
    memcpy(&v, h, sizeof v);
    return (size_t)v & (s->nbuckets - 1);
}

idset_t *idset_new(void) {
    if (sodium_init() < 0) return NULL;
    idset_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->nbuckets = 16;
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    if (!s->buckets) { free(s); return NULL; }
    randombytes_buf(s->key, sizeof s->key);
    return s;
}

void idset_destroy(idset_t **p) {
    if (!p || !*p) return;
    idset_t *s = *p;
    for (size_t b = 0; b < s->nbuckets; b++)
        for (idset_entry_t *e = s->buckets[b], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    free(s->buckets);
    free(s);
    *p = NULL;
}

static idset_entry_t **s_find(const idset_t *s, const char *id, size_t len) {
    idset_entry_t **slot = &s->buckets[s_bucket(s, id, len)];
    for (; *slot; slot = &(*slot)->next)
        if ((*slot)->len == len && memcmp((*slot)->id, id, len) == 0) break;
    return slot;
}

/* Twice the buckets; nothing changes when out of memory (chains grow). */
static void s_grow(idset_t *s) {
    size_t n = s->nbuckets * 2;
    idset_entry_t **b = calloc(n, sizeof *b);
    if (!b) return;
    idset_entry_t **old = s->buckets;
    size_t oldn = s->nbuckets;
    s->buckets = b;
    s->nbuckets = n;
    for (size_t i = 0; i < oldn; i++)
        for (idset_entry_t *e = old[i], *next; e; e = next) {
            next = e->next;
            idset_entry_t **slot = &b[s_bucket(s, e->id, e->len)];
            e->next = *slot;
            *slot = e;
        }
    free(old);
}

/* Put a new entry in the empty `slot`: 0, or -1 out of memory. */
static int s_insert(idset_t *s, idset_entry_t **slot, const char *id, size_t len) {
    idset_entry_t *e = malloc(sizeof *e + len);
    if (!e) return -1;
    e->next = NULL;
    e->count = 1;
    e->len = (unsigned char)len;
    memcpy(e->id, id, len);
    *slot = e;
    if (++s->count > s->nbuckets) s_grow(s);
    return 0;
}

int idset_add(idset_t *s, const char *id, size_t len) {
    if (len == 0 || len > IDSET_MAX_ID) return -1;
    idset_entry_t **slot = s_find(s, id, len);
    if (*slot) return 0;
    return s_insert(s, slot, id, len) < 0 ? -1 : 1;
}

long idset_incr(idset_t *s, const char *id, size_t len) {
    if (len == 0 || len > IDSET_MAX_ID) return -1;
    idset_entry_t **slot = s_find(s, id, len);
    if (*slot) return ++(*slot)->count;
    return s_insert(s, slot, id, len) < 0 ? -1 : 1;
}

long idset_decr(idset_t *s, const char *id, size_t len) {
    if (len == 0 || len > IDSET_MAX_ID) return 0;
    idset_entry_t **slot = s_find(s, id, len);
    idset_entry_t *e = *slot;
    if (!e) return 0;
    if (--e->count > 0) return e->count;
    *slot = e->next;
    free(e);
    s->count--;
    return 0;
}

long idset_get(const idset_t *s, const char *id, size_t len) {
    if (len == 0 || len > IDSET_MAX_ID) return 0;
    const idset_entry_t *e = *s_find(s, id, len);
    return e ? e->count : 0;
}

int idset_remove(idset_t *s, const char *id, size_t len) {
    if (len == 0 || len > IDSET_MAX_ID) return 0;
    idset_entry_t **slot = s_find(s, id, len);
    idset_entry_t *e = *slot;
    if (!e) return 0;
    *slot = e->next;
    free(e);
    s->count--;
    return 1;
}

int idset_has(const idset_t *s, const char *id, size_t len) {
    if (len == 0 || len > IDSET_MAX_ID) return 0;
    return *s_find(s, id, len) != NULL;
}

size_t idset_count(const idset_t *s) { return s->count; }

int idset_each(const idset_t *s, idset_each_fn fn, void *arg) {
    for (size_t b = 0; b < s->nbuckets; b++)
        for (const idset_entry_t *e = s->buckets[b]; e; e = e->next) {
            int rc = fn(arg, e->id, e->len);
            if (rc) return rc;
        }
    return 0;
}
