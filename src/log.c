/*
 * log: logfmt lines (see log.h).
 */
#include "log.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LINE_MAX_BYTES 2048       /* longer lines are cut: a log line is not a dump */

static const char *const s_names[] = { "quiet", "error", "warn", "info", "debug" };

int log_level_parse(const char *name) {
    for (int i = 0; i <= LOG_DEBUG; i++)
        if (strcmp(name, s_names[i]) == 0) return i;
    return -1;
}

const char *log_level_name(int level) {
    return level >= 0 && level <= LOG_DEBUG ? s_names[level] : "?";
}

typedef struct out {
    char *p;
    size_t size, len;             /* len < size always: room for the NUL */
    int cut;
} out_t;

static void s_put(out_t *o, const char *s, size_t n) {
    if (o->cut) return;
    if (n + 6 > o->size - o->len) {          /* room for " ..." stays */
        o->cut = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

/* Does a value need quotes? Empty, or holding a space, '=', '"' or any
 * byte that is written escaped. */
static int s_needs_quotes(const char *s, size_t n) {
    if (n == 0) return 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '=' || c == '"' || c == '\\') return 1;
    }
    return 0;
}

/* Write a key: letters, digits, '_', '.' and '-' as they are, any other
 * byte as '_' (keys come from scripts too: pseud.log), so a key can
 * neither end the line nor fake another field. */
static void s_put_key(out_t *o, const char *key) {
    char k[64];
    size_t n = 0;
    for (; key[n] && n < sizeof k; n++) {
        unsigned char c = (unsigned char)key[n];
        k[n] = (isalnum(c) && c < 0x80) || c == '_' || c == '.' || c == '-' ? (char)c : '_';
    }
    if (n == 0) k[n++] = '_';
    s_put(o, k, n);
}

/* Write a value, quoted and escaped as needed. Room is kept for a closing
 * quote and " ...": a value cut short still closes its quotes, so the line
 * parses; then o->cut is set and nothing more is written. */
static void s_put_value(out_t *o, const char *s, size_t n) {
    const size_t reserve = 6;     /* '"', " ...", NUL */
    if (o->cut || o->size - o->len <= reserve + 1) { o->cut = 1; return; }
    size_t end = o->size - reserve;
    int quote = s_needs_quotes(s, n);
    if (quote) o->p[o->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[5];
        size_t k = 1;
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; k = 2; }
        else if (c < 0x20 || c >= 0x7f) k = (size_t)snprintf(esc, sizeof esc, "\\x%02x", c);
        else esc[0] = (char)c;
        if (o->len + k > end) { o->cut = 1; break; }
        memcpy(o->p + o->len, esc, k);
        o->len += k;
    }
    if (quote) o->p[o->len++] = '"';
    o->p[o->len] = '\0';
}

size_t log_format(char *buf, size_t size, int level, const char *msg, const log_field_t *fields) {
    out_t o = { buf, size, 0, 0 };
    buf[0] = '\0';
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char head[64];
    int n = snprintf(head, sizeof head, "time=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, log_level_name(level));
    s_put(&o, head, (size_t)n);
    s_put_value(&o, msg, strlen(msg));
    for (const log_field_t *f = fields; f && f->key; f++) {
        if (o.cut || o.size - o.len < 100) { o.cut = 1; break; }   /* key (<= 64) and a number fit */
        s_put(&o, " ", 1);
        s_put_key(&o, f->key);
        s_put(&o, "=", 1);
        char num[40];
        switch (f->type) {
        case LOG_T_STR:   s_put_value(&o, f->s ? f->s : "", f->s ? strlen(f->s) : 0); break;
        case LOG_T_BYTES: s_put_value(&o, f->s, f->len); break;
        case LOG_T_INT:   s_put(&o, num, (size_t)snprintf(num, sizeof num, "%lld", f->i)); break;
        default:          s_put(&o, num, (size_t)snprintf(num, sizeof num, "%.6g", f->d)); break;
        }
    }
    if (o.cut) {                  /* s_put_value kept room for it */
        memcpy(o.p + o.len, " ...", 5);
        o.len += 4;
    }
    return o.len;
}

void log_write(FILE *f, int level, const char *msg, const log_field_t *fields) {
    char line[LINE_MAX_BYTES + 1];
    size_t n = log_format(line, sizeof line - 1, level, msg, fields);
    line[n] = '\n';
    fwrite(line, 1, n + 1, f);
    fflush(f);
}
