/*
 * log: one line per event, logfmt (https://brandur.org/logfmt):
 *
 *   time=2026-12-04T17:54:00.123Z level=warn msg="refused a HELLO" peer=m1 reason="bad login"
 *
 * so journald, Loki (| logfmt) or grep can pick fields out. Values are bytes
 * from peers as often as not: they are quoted when they need it and every
 * byte outside printable ASCII is written \xNN, so a line stays one line.
 * No state: the host keeps the level and the rate limit (host.c).
 */
#ifndef PSEUD_LOG_H
#define PSEUD_LOG_H

#include <stddef.h>
#include <stdio.h>

/* Levels, least verbose first; 0 ("quiet") shows nothing. */
enum { LOG_QUIET = 0, LOG_ERROR = 1, LOG_WARN = 2, LOG_INFO = 3, LOG_DEBUG = 4 };

enum { LOG_T_STR, LOG_T_BYTES, LOG_T_INT, LOG_T_NUM };

typedef struct log_field {
    const char *key;              /* NULL ends a list */
    int type;                     /* LOG_T_* */
    const char *s;                /* STR (NUL-terminated), BYTES (len bytes) */
    size_t len;
    long long i;                  /* INT */
    double d;                     /* NUM */
} log_field_t;

#define LOG_STR(k, v)      { (k), LOG_T_STR, (v), 0, 0, 0 }
#define LOG_BYTES(k, v, n) { (k), LOG_T_BYTES, (v), (n), 0, 0 }
#define LOG_INT(k, v)      { (k), LOG_T_INT, NULL, 0, (long long)(v), 0 }
#define LOG_NUM(k, v)      { (k), LOG_T_NUM, NULL, 0, 0, (double)(v) }
#define LOG_END            { NULL, 0, NULL, 0, 0, 0 }
/* At most `max` of `n` bytes. */
#define LOG_CAP(k, v, n, max) LOG_BYTES((k), (v), (n) < (max) ? (n) : (max))
/* A routing or user id (a peer's bytes): at most 48 of them. */
#define LOG_ID(k, v, n)    LOG_CAP((k), (v), (n), 48)
/* The fields listed inline, ended: host_log(h, level, msg, LOG_FIELDS(...)). */
#define LOG_FIELDS(...)    ((const log_field_t[]){ __VA_ARGS__ __VA_OPT__(,) LOG_END })

/* The level a name gives ("error", "warn", "info", "debug", "quiet"), or
 * -1 for another name. */
int log_level_parse(const char *name);
const char *log_level_name(int level);

/* Format one line (without the newline) into out: time, level, msg, then
 * the fields up to the one whose key is NULL. A line longer than `size`
 * ends in "..." (values are cut, never a quote left open). Returns its length. */
size_t log_format(char *out, size_t size, int level, const char *msg, const log_field_t *fields);

/* Format and write one line to `f` with a single write. */
void log_write(FILE *f, int level, const char *msg, const log_field_t *fields);

#endif
