/*
 * metrics: the host's counters and histograms, and their Prometheus text
 * exposition (format 0.0.4).
 *
 * It owns the per-name call counters (a small hash keyed by the names the
 * registry resolved: only registered names get a series; everything else
 * counts under the one fixed name "(unknown)", so a peer cannot grow the
 * label set), the handler latency histograms and the login counters. What
 * other parts keep themselves (calls in flight, peers, queued bytes,
 * refusals, preemptions, limit hits) comes in a metrics_sample_t at
 * scrape time. Counting is plain integer increments: no allocation per
 * call, no locks (everything runs on the loop thread). No Lua, no HTTP
 * (metrics_http.c serves what metrics_render writes).
 */
#ifndef PSEUD_METRICS_H
#define PSEUD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_UNKNOWN     "(unknown)"   /* the name label of every unregistered name */
#define METRICS_MAX_NAMES   10000         /* series past it count as "(unknown)" */
#define METRICS_NBUCKETS    14            /* finite histogram buckets; +Inf is one more */

/* How a call ended (the `outcome` label). */
enum metrics_outcome {
    METRICS_OK,                   /* the handler returned: OK */
    METRICS_ERROR,                /* it raised, or a limit stopped it: ERROR */
    METRICS_NOT_FOUND,            /* no callable (or every predicate said no) */
    METRICS_UNAUTHORIZED,         /* the backend said not authenticated: UNAUTHORIZED */
    METRICS_REFUSED,              /* refused before any lookup (ProtocolError, a failing hook) */
    METRICS_BUSY,                 /* its peer was over max_peer_queue: BusyError */
    METRICS_OUTCOMES
};

/* The `mechanism` label of logins: ZAP's three, and HELLO (pseud's own). */
enum metrics_mechanism {
    METRICS_MECH_NULL, METRICS_MECH_PLAIN, METRICS_MECH_CURVE, METRICS_MECH_HELLO,
    METRICS_MECHANISMS
};

/* The `limit` label of limit hits. */
enum metrics_limit {
    METRICS_LIMIT_TIME,           /* a handler or task past max_handler_time */
    METRICS_LIMIT_MEMORY,         /* an allocation refused past max_handler_memory */
    METRICS_LIMIT_HOOK_TIME,      /* a synchronous hook past max_hook_time */
    METRICS_LIMITS
};

/* One registered name's series. */
typedef struct metrics_name {
    uint64_t calls[METRICS_OUTCOMES];
    uint64_t bucket[METRICS_NBUCKETS + 1];   /* per bucket, not cumulative; last: +Inf */
    double sum;                              /* seconds, of every observation */
    struct metrics_name *hash_next;          /* bucket chain */
    struct metrics_name *next;               /* every name, in order of first call */
    size_t len;
    char name[];                             /* not NUL-terminated */
} metrics_name_t;

typedef struct metrics metrics_t;

/* What others keep, read when a scrape comes (the host fills it). */
typedef struct metrics_sample {
    uint64_t busy;                /* WORK answered (or left unanswered) BusyError, ever */
    uint64_t unstarted;           /* WORK that waited its turn and never started, ever */
    uint64_t preemptions;         /* tasks that used up their slice and yielded */
    uint64_t calls_stopped;       /* calls stopped: their caller's connection closed */
    uint64_t limit_hits[METRICS_LIMITS];
    double in_flight;             /* calls whose handler has not answered yet */
    double waiting;               /* calls admitted that wait their peer's turn (max_peer_calls,
                                     or its replies not leaving) */
    double peers;                 /* peers in the directories of open endpoints */
    double queued_bytes;          /* bytes held for or towards those peers */
    double lua_memory_bytes;      /* the Lua state's heap (0: unknown, not shown) */
    /* process basics; < 0: not known, not shown */
    double start_time, cpu_seconds, resident_bytes, open_fds, max_fds;
} metrics_sample_t;

/* A growing text buffer. `failed` is set (and stays) when it ran out of memory. */
typedef struct metrics_buf {
    char *data;
    size_t len, cap;
    int failed;
} metrics_buf_t;

/* New, empty; NULL when out of memory. */
metrics_t *metrics_new(void);
/* Free it and its names; takes NULL, clears *p. */
void metrics_destroy(metrics_t **p);

/* The series of registered name `name`, made on its first call; the
 * "(unknown)" series past METRICS_MAX_NAMES or when out of memory. Only
 * pass names the registry resolved. */
metrics_name_t *metrics_name(metrics_t *m, const char *name, size_t len);
/* The "(unknown)" series. */
metrics_name_t *metrics_unknown(metrics_t *m);

/* One call of `n` ended with `outcome`. */
void metrics_count(metrics_name_t *n, int outcome);
/* One handler of `n` ran `seconds` from its start to its answer. */
void metrics_observe(metrics_name_t *n, double seconds);

/* One login: the mechanism as ZAP names it ("NULL", "PLAIN", "CURVE") or
 * "HELLO"; `ok` 1 accepted, 0 refused (or failed). Other names are not counted. */
void metrics_login(metrics_t *m, const char *mechanism, int ok);

/* The histogram's upper bounds, seconds (METRICS_NBUCKETS of them). */
extern const double metrics_buckets[METRICS_NBUCKETS];

/* Process basics of this process into `s` (start time, read once by
 * metrics_new; CPU, memory, fds, read now). */
void metrics_process_sample(const metrics_t *m, metrics_sample_t *s);
/* The process's resident bytes (/proc/self/statm), or -1. */
double metrics_resident_bytes(void);

/* Append the whole exposition to `out`. Returns 0, or -1 when out of memory. */
int metrics_render(const metrics_t *m, const metrics_sample_t *s, metrics_buf_t *out);

/* Append a label value escaped as the format wants (backslash, double
 * quote, newline; bytes that are not UTF-8 become U+FFFD). */
void metrics_buf_label(metrics_buf_t *b, const char *value, size_t len);
void metrics_buf_free(metrics_buf_t *b);

#endif
