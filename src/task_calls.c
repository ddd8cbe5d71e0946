/*
 * task_calls: the tasks answering a WORK, found by the connection the
 * WORK came on (its endpoint and directory entry serial), so that a
 * connection that closes has its running calls stopped (sched_stop_calls)
 * instead of running on counted against no budget (README, Backpressure).
 *
 * Chained hashing on (owner, serial). Serials are the host's own counter,
 * never a peer's choice, so a multiplicative hash cannot be lined up. The
 * table doubles when it holds twice as many tasks as buckets; a task that
 * finds no memory to grow it goes into the table as it is (longer chains).
 */
#include "task.h"
#include "task_internal.h"

#include <stdlib.h>

#define CALLS_MIN_BUCKETS 64

static size_t s_bucket(const sched_t *s, const void *owner, uint64_t serial) {
    uint64_t h = (serial ^ ((uint64_t)(uintptr_t)owner >> 4)) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & s->calls_mask;
}

static void s_link(sched_t *s, task_t *t) {
    task_t **head = &s->calls[s_bucket(s, t->work.owner, t->work.serial)];
    t->call_prev = NULL;
    t->call_next = *head;
    if (*head) (*head)->call_prev = t;
    *head = t;
}

/* Twice the buckets (or the first ones): 0, or -1 out of memory. */
static int s_grow(sched_t *s) {
    size_t n = s->calls ? (s->calls_mask + 1) * 2 : CALLS_MIN_BUCKETS;
    task_t **old = s->calls, **fresh = calloc(n, sizeof *fresh);
    if (!fresh) return -1;
    size_t old_n = old ? s->calls_mask + 1 : 0;
    s->calls = fresh;
    s->calls_mask = n - 1;
    for (size_t i = 0; i < old_n; i++) {
        for (task_t *t = old[i], *next; t; t = next) {
            next = t->call_next;
            s_link(s, t);
        }
    }
    free(old);
    return 0;
}

void task_calls_add(sched_t *s, task_t *t) {
    if (!t->work.serial) return;                  /* counted against no entry: nothing to stop it */
    if ((!s->calls || s->ncalls >= 2 * (s->calls_mask + 1)) && s_grow(s) < 0 && !s->calls) return;
    s_link(s, t);
    t->indexed = 1;
    s->ncalls++;
}

void task_calls_remove(sched_t *s, task_t *t) {
    if (!t->indexed) return;
    if (t->call_prev) t->call_prev->call_next = t->call_next;
    else s->calls[s_bucket(s, t->work.owner, t->work.serial)] = t->call_next;
    if (t->call_next) t->call_next->call_prev = t->call_prev;
    t->call_next = t->call_prev = NULL;
    t->indexed = 0;
    s->ncalls--;
}

int sched_stop_calls(sched_t *s, const void *owner, uint64_t serial) {
    if (!s->calls || !serial) return 0;
    int n = 0;
    for (task_t *t = s->calls[s_bucket(s, owner, serial)]; t; t = t->call_next) {
        if (t->work.owner != owner || t->work.serial != serial || t->stopped || t->expired) continue;
        task_stop(s, t);
        n++;
    }
    s->calls_stopped += (uint64_t)n;
    return n;
}

void task_calls_close(sched_t *s) {
    free(s->calls);
    s->calls = NULL;
    s->calls_mask = 0;
    s->ncalls = 0;
}
