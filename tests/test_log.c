/*
 * test_log: logfmt lines (src/log.c): the head (time, level, msg), quoting
 * and escaping of hostile bytes, numbers, level names, and a line cut at its
 * size that still closes its quotes.
 */
#include <stdio.h>
#include <string.h>

#include "log.h"

static int g_checks, g_failed;
#include "check.h"

/* The line without its time= field (it changes). */
static const char *s_body(const char *line) {
    const char *sp = strchr(line, ' ');
    return sp ? sp + 1 : line;
}

static void test_head(void) {
    char line[256];
    log_field_t none[] = { LOG_END };
    log_format(line, sizeof line, LOG_WARN, "refused a HELLO", none);
    CHECK(strncmp(line, "time=", 5) == 0 && line[15] == 'T' && strchr(line, 'Z') != NULL,
          "an ISO-8601 UTC time first: %s", line);
    CHECK(strcmp(s_body(line), "level=warn msg=\"refused a HELLO\"") == 0, "level and msg: %s", line);
    log_format(line, sizeof line, LOG_DEBUG, "call", none);
    CHECK(strcmp(s_body(line), "level=debug msg=call") == 0, "a bare word is not quoted: %s", line);
}

static void test_fields(void) {
    char line[512];
    static const char bytes[] = { 'a', '\0', '"', '\\', '\n', '=', (char)0xff };
    log_field_t f[] = { LOG_STR("peer", "m1"), LOG_BYTES("id", bytes, sizeof bytes),
                        LOG_STR("empty", ""), LOG_INT("n", -42), LOG_NUM("seconds", 0.25),
                        LOG_STR("reason", "wrong login or password"), LOG_END };
    log_format(line, sizeof line, LOG_INFO, "x", f);
    CHECK(strcmp(s_body(line), "level=info msg=x peer=m1 id=\"a\\x00\\\"\\\\\\x0a=\\xff\" empty=\"\" "
                 "n=-42 seconds=0.25 reason=\"wrong login or password\"") == 0,
          "quoted when needed, every byte outside printable ASCII escaped: %s", line);
    CHECK(strchr(line, '\n') == NULL, "one line, whatever the bytes");
    /* keys come from scripts too: none can break the line or fake a field */
    log_field_t k[] = { LOG_INT("k\ntime=0 level=error msg=forged", 1), LOG_INT("", 2),
                        LOG_INT("a.b-c_d", 3), LOG_END };
    log_format(line, sizeof line, LOG_INFO, "x", k);
    CHECK(strcmp(s_body(line), "level=info msg=x k_time_0_level_error_msg_forged=1 _=2 a.b-c_d=3") == 0,
          "other bytes of a key become '_': %s", line);
}

static void test_levels(void) {
    CHECK(log_level_parse("error") == LOG_ERROR && log_level_parse("warn") == LOG_WARN &&
          log_level_parse("info") == LOG_INFO && log_level_parse("debug") == LOG_DEBUG &&
          log_level_parse("quiet") == LOG_QUIET, "every level name parses");
    CHECK(log_level_parse("verbose") == -1 && log_level_parse("") == -1, "others do not");
    CHECK(strcmp(log_level_name(LOG_DEBUG), "debug") == 0, "names back");
}

static void test_cut(void) {
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[10] = ' ';                                /* quoted */
    log_field_t f[] = { LOG_STR("a", big), LOG_STR("b", "never"), LOG_END };
    char line[300];
    size_t n = log_format(line, sizeof line, LOG_WARN, "long", f);
    CHECK(n < sizeof line && strlen(line) == n, "the line stays in its buffer (%zu)", n);
    CHECK(n >= 5 && strcmp(line + n - 5, "\" ...") == 0, "a cut value closes its quote, then ...: %s",
          line + (n > 40 ? n - 40 : 0));
    CHECK(strstr(line, "b=never") == NULL, "nothing after the cut");
    /* every size from tiny up: never past the buffer, always terminated */
    for (size_t size = 8; size < 120; size++) {
        char small[120];
        memset(small, '#', sizeof small);
        size_t m = log_format(small, size, LOG_WARN, "long", f);
        CHECK(m < size && small[m] == '\0' && small[size] == '#', "size %zu: stays inside", size);
    }
}

int main(void) {
    test_head();
    test_fields();
    test_levels();
    test_cut();
    printf("test_log: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
