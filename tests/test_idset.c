/*
 * test_idset: the cluster's set of registered users (no Lua, no I/O).
 *
 * Binary ids (NUL and 0xff bytes, ids that are prefixes of each other) are
 * told apart; lengths 1 and 255 are taken, 0 and 256 refused; adding twice
 * and removing what is not there say so; 20,000 random adds and removes over
 * 3,000 ids (the bucket array doubles many times) agree with a plain array
 * at every step, and idset_each lists each id once. Counted use (a
 * worker's calls per peer): counts go up and down per id, an id leaves at
 * 0, a decrement of an absent id changes nothing.
 */
#include "idset.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_checks, g_failed;

#include "check.h"

static int s_count_each(void *arg, const char *id, size_t len) {
    (void)id; (void)len;
    (*(size_t *)arg)++;
    return 0;
}

static int s_stop_at_first(void *arg, const char *id, size_t len) {
    (void)id; (void)len;
    (*(size_t *)arg)++;
    return 7;
}

static void test_basics(void) {
    idset_t *s = idset_new();
    CHECK(s != NULL, "idset_new");
    static const char a[] = "a\0b", b[] = "a\0c", ff[] = "\xff\xff";
    CHECK(idset_add(s, a, 3) == 1 && idset_add(s, b, 3) == 1, "two ids differing after a NUL");
    CHECK(idset_add(s, "a", 1) == 1, "a prefix of both is another id");
    CHECK(idset_add(s, ff, 2) == 1, "0xff bytes");
    CHECK(idset_add(s, a, 3) == 0, "added twice: 0");
    CHECK(idset_count(s) == 4, "4 ids (%zu)", idset_count(s));
    CHECK(idset_has(s, a, 3) && idset_has(s, b, 3) && idset_has(s, "a", 1) && idset_has(s, ff, 2), "all there");
    CHECK(!idset_has(s, "a\0", 2) && !idset_has(s, "\xff", 1), "their prefixes are not");
    CHECK(idset_remove(s, a, 3) == 1 && !idset_has(s, a, 3) && idset_has(s, b, 3), "remove one, the other stays");
    CHECK(idset_remove(s, a, 3) == 0, "removed twice: 0");

    char max[IDSET_MAX_ID + 1];
    memset(max, 'm', sizeof max);
    CHECK(idset_add(s, max, IDSET_MAX_ID) == 1, "255 bytes: taken");
    CHECK(idset_add(s, max, IDSET_MAX_ID + 1) == -1, "256 bytes: refused");
    CHECK(idset_add(s, max, 0) == -1, "0 bytes: refused");
    CHECK(idset_has(s, max, IDSET_MAX_ID) && !idset_has(s, max, IDSET_MAX_ID + 1), "has: 255 yes, 256 no");
    CHECK(idset_remove(s, max, IDSET_MAX_ID + 1) == 0, "remove 256 bytes: 0");
    size_t n = 0;
    CHECK(idset_each(s, s_count_each, &n) == 0 && n == idset_count(s), "each: %zu of %zu", n, idset_count(s));
    n = 0;
    CHECK(idset_each(s, s_stop_at_first, &n) == 7 && n == 1, "each stops on non-zero and returns it");
    idset_destroy(&s);
    CHECK(s == NULL, "destroy clears the pointer");
    idset_destroy(&s);
    idset_destroy(NULL);
}

enum { IDS = 3000, STEPS = 20000 };

static void test_random(void) {
    idset_t *s = idset_new();
    static char in[IDS];
    uint64_t x = 0x2545F4914F6CDD1DULL;
    size_t count = 0;
    int wrong = 0;
    for (int step = 0; step < STEPS; step++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int i = (int)(x % IDS);
        char id[8];
        memcpy(id, &i, sizeof i);                       /* binary, NULs included */
        id[4] = (char)0xff;
        size_t len = 5 + (size_t)(i % 3);
        memset(id + 5, 0, 3);
        if (x & 0x100) {
            int rc = idset_add(s, id, len);
            if (rc != (in[i] ? 0 : 1)) wrong++;
            if (!in[i]) { in[i] = 1; count++; }
        } else {
            int rc = idset_remove(s, id, len);
            if (rc != in[i]) wrong++;
            if (in[i]) { in[i] = 0; count--; }
        }
        if (idset_count(s) != count) wrong++;
    }
    CHECK(wrong == 0, "20,000 random steps agree with the reference (%d did not)", wrong);
    size_t n = 0;
    idset_each(s, s_count_each, &n);
    CHECK(n == count, "each lists %zu ids, %zu expected", n, count);
    idset_destroy(&s);
}

static void test_counts(void) {
    idset_t *s = idset_new();
    CHECK(idset_get(s, "p", 1) == 0, "absent: 0");
    CHECK(idset_incr(s, "p", 1) == 1 && idset_incr(s, "p", 1) == 2 && idset_incr(s, "q", 1) == 1,
          "counts up per id");
    CHECK(idset_count(s) == 2 && idset_get(s, "p", 1) == 2, "two ids, p twice");
    CHECK(idset_decr(s, "p", 1) == 1 && idset_has(s, "p", 1), "once less: still there");
    CHECK(idset_decr(s, "p", 1) == 0 && !idset_has(s, "p", 1) && idset_count(s) == 1, "at 0: gone");
    CHECK(idset_decr(s, "p", 1) == 0 && idset_count(s) == 1 && idset_get(s, "q", 1) == 1,
          "absent: 0, nothing else changes");
    CHECK(idset_incr(s, "", 0) == -1 && idset_decr(s, "", 0) == 0, "0 bytes: refused");
    CHECK(idset_add(s, "r", 1) == 1 && idset_get(s, "r", 1) == 1, "a plain add counts 1");
    idset_destroy(&s);
}

int main(void) {
    test_basics();
    test_counts();
    test_random();
    printf("test_idset: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
