/*
 * metrics: counters, histograms and their text exposition (see metrics.h).
 *
 * Names are found by an FNV-1a hash over their bytes (a few instructions a
 * byte) in a table that doubles past 3/4 full; a name's series is made on
 * the first call the registry resolved for it and lives as long as the
 * host, so a handler's counters survive a re-registration. The histogram
 * keeps one count per bucket and writes them cumulative.
 */
#include "metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/resource.h>

const double metrics_buckets[METRICS_NBUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};

struct metrics {
    metrics_name_t **table;       /* hash buckets of registered names */
    size_t ntable, nnames;
    metrics_name_t *first, *last; /* every registered name, in order of first call */
    metrics_name_t *unknown;      /* "(unknown)": not in the table, nor in the list */
    uint64_t logins[METRICS_MECHANISMS][2];   /* [mechanism][ok] */
    double start_time;            /* the process's, seconds since the epoch; < 0: unknown */
};

static uint64_t s_hash(const char *s, size_t len) {
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211u;
    return h;
}

static metrics_name_t *s_name_new(const char *name, size_t len) {
    metrics_name_t *n = calloc(1, sizeof *n + len);
    if (!n) return NULL;
    n->len = len;
    memcpy(n->name, name, len);
    return n;
}

static double s_start_time(void);

metrics_t *metrics_new(void) {
    metrics_t *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->start_time = s_start_time();
    m->ntable = 64;
    m->table = calloc(m->ntable, sizeof *m->table);
    m->unknown = s_name_new(METRICS_UNKNOWN, sizeof METRICS_UNKNOWN - 1);
    if (!m->table || !m->unknown) {
        metrics_destroy(&m);
        return NULL;
    }
    return m;
}

void metrics_destroy(metrics_t **p) {
    if (!p || !*p) return;
    metrics_t *m = *p;
    for (metrics_name_t *n = m->first, *next; n; n = next) {
        next = n->next;
        free(n);
    }
    free(m->unknown);
    free(m->table);
    free(m);
    *p = NULL;
}

metrics_name_t *metrics_unknown(metrics_t *m) { return m->unknown; }

/* Twice the buckets; on failure the table stays as it was (only longer chains). */
static void s_grow(metrics_t *m) {
    size_t n = m->ntable * 2;
    metrics_name_t **table = calloc(n, sizeof *table);
    if (!table) return;
    for (metrics_name_t *x = m->first; x; x = x->next) {
        size_t i = s_hash(x->name, x->len) & (n - 1);
        x->hash_next = table[i];
        table[i] = x;
    }
    free(m->table);
    m->table = table;
    m->ntable = n;
}

static size_t s_utf8(const unsigned char *s, size_t n);
static metrics_name_t *s_name_find(metrics_t *m, const char *name, size_t len);

/* `name` as its label reads (bytes that are not UTF-8 as U+FFFD) in a new
 * buffer of *len bytes, or NULL when it is UTF-8 already (or no memory). */
static char *s_label_form(const char *name, size_t *len) {
    const unsigned char *s = (const unsigned char *)name;
    size_t i = 0, n = *len;
    while (i < n) {
        size_t k = s_utf8(s + i, n - i);
        if (k == 0) break;
        i += k;
    }
    if (i == n) return NULL;
    char *out = malloc(n * 3);                    /* each byte at most U+FFFD's three */
    if (!out) return NULL;
    size_t o = 0;
    for (i = 0; i < n;) {
        size_t k = s_utf8(s + i, n - i);
        if (k == 0) { memcpy(out + o, "\xef\xbf\xbd", 3); o += 3; i++; continue; }
        memcpy(out + o, name + i, k);
        o += k;
        i += k;
    }
    *len = o;
    return out;
}

/* The series of a registered name, keyed by its label: names that read the
 * same once bytes that are not UTF-8 are U+FFFD share one, as two series
 * with one label set would be invalid exposition (an attack round). */
metrics_name_t *metrics_name(metrics_t *m, const char *name, size_t len) {
    char *label = s_label_form(name, &len);
    if (label) name = label;
    metrics_name_t *found = s_name_find(m, name, len);
    free(label);
    return found;
}

static metrics_name_t *s_name_find(metrics_t *m, const char *name, size_t len) {
    size_t i = s_hash(name, len) & (m->ntable - 1);
    for (metrics_name_t *n = m->table[i]; n; n = n->hash_next)
        if (n->len == len && memcmp(n->name, name, len) == 0) return n;
    if (m->nnames >= METRICS_MAX_NAMES) return m->unknown;
    metrics_name_t *n = s_name_new(name, len);
    if (!n) return m->unknown;
    n->hash_next = m->table[i];
    m->table[i] = n;
    if (m->last) m->last->next = n; else m->first = n;
    m->last = n;
    if (++m->nnames > m->ntable / 4 * 3) s_grow(m);
    return n;
}

void metrics_count(metrics_name_t *n, int outcome) {
    n->calls[outcome]++;
}

void metrics_observe(metrics_name_t *n, double seconds) {
    int b = 0;
    while (b < METRICS_NBUCKETS && seconds > metrics_buckets[b]) b++;   /* le: upper bound included */
    n->bucket[b]++;
    n->sum += seconds;
}

static const char *const s_mechanisms[METRICS_MECHANISMS] = { "NULL", "PLAIN", "CURVE", "HELLO" };

void metrics_login(metrics_t *m, const char *mechanism, int ok) {
    for (int i = 0; i < METRICS_MECHANISMS; i++)
        if (strcmp(mechanism, s_mechanisms[i]) == 0) { m->logins[i][ok ? 1 : 0]++; return; }
}

/* --- process basics --- */

/* Seconds since the epoch when this process started: /proc/self/stat's
 * start time (ticks after boot) plus the boot time of /proc/stat. */
static double s_start_time(void) {
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');                 /* the command may hold spaces */
    unsigned long long ticks = 0;
    for (int field = 2; p && field < 22; field++) p = strchr(p + 1, ' ');
    if (!p || sscanf(p + 1, "%llu", &ticks) != 1) return -1;
    f = fopen("/proc/stat", "r");
    unsigned long long btime = 0;
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "btime %llu", &btime) == 1) break;
    if (f) fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    return btime && hz > 0 ? (double)btime + (double)ticks / (double)hz : -1;
}

double metrics_resident_bytes(void) {
    double bytes = -1;
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size, resident;
    if (f && fscanf(f, "%llu %llu", &size, &resident) == 2)
        bytes = (double)resident * (double)sysconf(_SC_PAGESIZE);
    if (f) fclose(f);
    return bytes;
}

void metrics_process_sample(const metrics_t *m, metrics_sample_t *s) {
    s->start_time = m->start_time;
    struct rusage ru;
    s->cpu_seconds = getrusage(RUSAGE_SELF, &ru) == 0
        ? (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
          ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) * 1e-6 : -1;
    s->resident_bytes = metrics_resident_bytes();
    DIR *d = opendir("/proc/self/fd");
    s->open_fds = -1;
    if (d) {
        double count = 0;
        struct dirent *e;
        while ((e = readdir(d))) if (e->d_name[0] != '.') count++;
        closedir(d);
        s->open_fds = count - 1;                  /* not the one opendir holds */
    }
    struct rlimit rl;
    s->max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
        ? (double)rl.rlim_cur : -1;
}

/* --- text --- */

void metrics_buf_free(metrics_buf_t *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

static int s_room(metrics_buf_t *b, size_t more) {
    if (b->failed) return -1;
    if (b->cap - b->len > more) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len <= more) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) { b->failed = 1; return -1; }
    b->data = data;
    b->cap = cap;
    return 0;
}

static void s_put(metrics_buf_t *b, const char *s, size_t len) {
    if (s_room(b, len) < 0) return;
    memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';
}

#define s_puts(b, literal) s_put((b), (literal), sizeof(literal) - 1)

static void s_printf(metrics_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_printf(metrics_buf_t *b, const char *fmt, ...) {
    for (size_t want = 256;;) {                   /* written in place; once more when longer */
        if (s_room(b, want) < 0) return;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) { b->data[b->len] = '\0'; return; }
        if ((size_t)n < b->cap - b->len) { b->len += (size_t)n; return; }
        want = (size_t)n + 1;
    }
}

/* Length of the well-formed UTF-8 sequence at s (n bytes left), or 0. */
static size_t s_utf8(const unsigned char *s, size_t n) {
    size_t len = s[0] < 0x80 ? 1 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : s[0] >= 0xe0 && s[0] < 0xf0 ? 3
               : s[0] >= 0xf0 && s[0] < 0xf5 ? 4 : 0;
    if (len == 0 || len > n) return 0;
    for (size_t i = 1; i < len; i++) if ((s[i] & 0xc0) != 0x80) return 0;
    if (len == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0))) return 0;
    if (len == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))) return 0;
    return len;
}

void metrics_buf_label(metrics_buf_t *b, const char *value, size_t len) {
    const unsigned char *s = (const unsigned char *)value;
    size_t i = 0;
    while (i < len) {
        if (s[i] == '\\') { s_puts(b, "\\\\"); i++; continue; }
        if (s[i] == '"') { s_puts(b, "\\\""); i++; continue; }
        if (s[i] == '\n') { s_puts(b, "\\n"); i++; continue; }
        size_t n = s_utf8(s + i, len - i);
        if (n == 0) { s_puts(b, "\xef\xbf\xbd"); i++; continue; }   /* U+FFFD */
        s_put(b, value + i, n);
        i += n;
    }
}

/* A value as the format writes it: integers exactly, "+Inf", Go-style floats. */
static void s_value(metrics_buf_t *b, double v) {
    if (v > -9e15 && v < 9e15 && v == (double)(int64_t)v) s_printf(b, "%lld", (long long)v);   /* range first */
    else s_printf(b, "%.17g", v);
}

static void s_help(metrics_buf_t *b, const char *name, const char *type, const char *help) {
    s_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void s_gauge(metrics_buf_t *b, const char *name, const char *type, const char *help, double v) {
    if (v < 0) return;                            /* not known here */
    s_help(b, name, type, help);
    s_printf(b, "%s ", name);
    s_value(b, v);
    s_put(b, "\n", 1);
}

static const char *const s_outcomes[METRICS_OUTCOMES] = {
    "ok", "error", "not_found", "unauthorized", "refused", "busy"
};

static void s_calls(metrics_buf_t *b, const metrics_name_t *n, int outcome, uint64_t extra) {
    s_puts(b, "pseud_calls_total{name=\"");
    metrics_buf_label(b, n->name, n->len);
    s_printf(b, "\",outcome=\"%s\"} %llu\n", s_outcomes[outcome],
             (unsigned long long)(n->calls[outcome] + extra));
}

static void s_histogram(metrics_buf_t *b, const metrics_name_t *n) {
    uint64_t count = 0;
    for (int i = 0; i <= METRICS_NBUCKETS; i++) {
        count += n->bucket[i];
        s_puts(b, "pseud_handler_duration_seconds_bucket{name=\"");
        metrics_buf_label(b, n->name, n->len);
        if (i < METRICS_NBUCKETS) s_printf(b, "\",le=\"%g\"} %llu\n", metrics_buckets[i], (unsigned long long)count);
        else s_printf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)count);
    }
    s_puts(b, "pseud_handler_duration_seconds_sum{name=\"");
    metrics_buf_label(b, n->name, n->len);
    s_puts(b, "\"} ");
    s_value(b, n->sum);
    s_puts(b, "\npseud_handler_duration_seconds_count{name=\"");
    metrics_buf_label(b, n->name, n->len);
    s_printf(b, "\"} %llu\n", (unsigned long long)count);
}

int metrics_render(const metrics_t *m, const metrics_sample_t *s, metrics_buf_t *out) {
    static const char *const limits[METRICS_LIMITS] = { "time", "memory", "hook_time" };
    s_help(out, "pseud_calls_total", "counter", "WORK received, by registered name (others: "
           "name=\"(unknown)\") and outcome.");
    for (const metrics_name_t *n = m->first; n; n = n->next) {
        s_calls(out, n, METRICS_OK, 0);
        s_calls(out, n, METRICS_ERROR, 0);
    }
    for (int o = METRICS_NOT_FOUND; o < METRICS_OUTCOMES; o++)
        s_calls(out, m->unknown, o, o == METRICS_BUSY ? s->busy : o == METRICS_REFUSED ? s->unstarted : 0);
    s_help(out, "pseud_handler_duration_seconds", "histogram",
           "Seconds from a call's WORK taken (queue wait included) to its answer, by registered name.");
    for (const metrics_name_t *n = m->first; n; n = n->next) s_histogram(out, n);
    s_gauge(out, "pseud_calls_in_flight", "gauge", "Calls whose handler has not answered yet.", s->in_flight);
    s_gauge(out, "pseud_calls_waiting", "gauge", "Calls admitted that wait until their peer may start "
            "another (max_peer_calls, or its replies not leaving).", s->waiting);
    s_gauge(out, "pseud_calls_stopped_total", "counter", "Calls stopped while running because their "
            "caller's connection closed (no answer could reach it).", (double)s->calls_stopped);
    s_gauge(out, "pseud_peers", "gauge", "Peers in the directories of the open servers and clients.", s->peers);
    s_gauge(out, "pseud_peer_queue_bytes", "gauge",
            "Bytes held for or queued towards peers (what max_peer_queue bounds).", s->queued_bytes);
    s_help(out, "pseud_logins_total", "counter", "Logins, by mechanism (ZAP's NULL, PLAIN, CURVE; "
           "HELLO) and result.");
    for (int i = 0; i < METRICS_MECHANISMS; i++)
        for (int ok = 1; ok >= 0; ok--)
            s_printf(out, "pseud_logins_total{mechanism=\"%s\",result=\"%s\"} %llu\n", s_mechanisms[i],
                     ok ? "accepted" : "refused", (unsigned long long)m->logins[i][ok]);
    s_gauge(out, "pseud_preemptions_total", "counter",
            "Times a task used up its time slice and yielded to the loop.", (double)s->preemptions);
    s_help(out, "pseud_limit_hits_total", "counter", "Times a limit stopped script code: time "
           "(max_handler_time), memory (allocations refused past max_handler_memory), hook_time "
           "(max_hook_time).");
    for (int i = 0; i < METRICS_LIMITS; i++)
        s_printf(out, "pseud_limit_hits_total{limit=\"%s\"} %llu\n", limits[i],
                 (unsigned long long)s->limit_hits[i]);
    if (s->lua_memory_bytes > 0)
        s_gauge(out, "pseud_lua_memory_bytes", "gauge", "Bytes in use by the Lua state.", s->lua_memory_bytes);
    s_gauge(out, "process_start_time_seconds", "gauge",
            "Start time of the process since unix epoch in seconds.", s->start_time);
    s_gauge(out, "process_cpu_seconds_total", "counter",
            "Total user and system CPU time spent in seconds.", s->cpu_seconds);
    s_gauge(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
            s->resident_bytes);
    s_gauge(out, "process_open_fds", "gauge", "Number of open file descriptors.", s->open_fds);
    s_gauge(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.", s->max_fds);
    return out->failed ? -1 : 0;
}
