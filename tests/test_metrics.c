/*
 * test_metrics: the exposition (src/metrics.c): label escaping, the
 * "(unknown)" series, histogram buckets cumulative with +Inf, _sum and
 * _count, the name bound; and metrics_http.c on a real loop: 200 with the
 * content type, 404, 405, a bad address and a port in use named in the error,
 * an IPv6 address.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "loop.h"
#include "metrics.h"
#include "metrics_http.h"

static int g_checks, g_failed;
#include "check.h"

static int has(const char *text, const char *line) {
    return strstr(text, line) != NULL;
}

static char *render(metrics_t *m, const metrics_sample_t *s) {
    metrics_buf_t b = { 0 };
    CHECK(metrics_render(m, s, &b) == 0, "render succeeds");
    return b.data;
}

static void test_escaping(void) {
    metrics_buf_t b = { 0 };
    metrics_buf_label(&b, "a\\b\"c\nd", 7);
    CHECK(b.data && strcmp(b.data, "a\\\\b\\\"c\\nd") == 0, "backslash, quote, newline escaped: %s", b.data);
    metrics_buf_free(&b);
    metrics_buf_label(&b, "\xc3\xa9t\xff\xe2\x82", 6);
    CHECK(b.data && strcmp(b.data, "\xc3\xa9t\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd") == 0,
          "UTF-8 kept, stray bytes become U+FFFD: %s", b.data);
    metrics_buf_free(&b);
}

static void test_calls(void) {
    metrics_t *m = metrics_new();
    metrics_sample_t s = { .busy = 3, .in_flight = 2, .peers = 5, .queued_bytes = 1024,
                           .start_time = -1, .cpu_seconds = -1, .resident_bytes = -1,
                           .open_fds = -1, .max_fds = -1 };
    metrics_name_t *hello = metrics_name(m, "hello", 5);
    CHECK(metrics_name(m, "hello", 5) == hello, "one series a name");
    metrics_name_t *odd = metrics_name(m, "say \"hi\"\n", 9);
    metrics_count(hello, METRICS_OK);
    metrics_count(hello, METRICS_OK);
    metrics_count(hello, METRICS_ERROR);
    metrics_count(odd, METRICS_OK);
    metrics_count(metrics_unknown(m), METRICS_NOT_FOUND);
    metrics_login(m, "PLAIN", 1);
    metrics_login(m, "PLAIN", 0);
    metrics_login(m, "PLAIN", 0);
    metrics_login(m, "GSSAPI", 1);               /* not one of ours: not counted */
    char *text = render(m, &s);
    CHECK(has(text, "# TYPE pseud_calls_total counter\n"), "calls are a counter");
    CHECK(has(text, "\npseud_calls_total{name=\"hello\",outcome=\"ok\"} 2\n"), "ok counted");
    CHECK(has(text, "\npseud_calls_total{name=\"hello\",outcome=\"error\"} 1\n"), "error counted");
    CHECK(has(text, "\npseud_calls_total{name=\"say \\\"hi\\\"\\n\",outcome=\"ok\"} 1\n"), "label escaped");
    CHECK(has(text, "\npseud_calls_total{name=\"(unknown)\",outcome=\"not_found\"} 1\n"), "unknown counted");
    CHECK(has(text, "\npseud_calls_total{name=\"(unknown)\",outcome=\"busy\"} 3\n"), "busy from the sample");
    CHECK(has(text, "\npseud_calls_total{name=\"(unknown)\",outcome=\"unauthorized\"} 0\n"), "zeros shown");
    CHECK(!has(text, "name=\"(unknown)\",outcome=\"ok\""), "no ok series for unknown names");
    CHECK(has(text, "\npseud_logins_total{mechanism=\"PLAIN\",result=\"accepted\"} 1\n"), "login ok");
    CHECK(has(text, "\npseud_logins_total{mechanism=\"PLAIN\",result=\"refused\"} 2\n"), "login refused");
    CHECK(!has(text, "GSSAPI"), "unknown mechanisms are not a label");
    CHECK(has(text, "\npseud_calls_in_flight 2\n") && has(text, "\npseud_peers 5\n") &&
          has(text, "\npseud_peer_queue_bytes 1024\n"), "gauges from the sample");
    CHECK(!has(text, "process_start_time_seconds"), "unknown process values are left out");
    free(text);
    metrics_destroy(&m);
    CHECK(m == NULL, "destroy clears");
    metrics_destroy(&m);                         /* takes NULL */
}

static void test_histogram(void) {
    metrics_t *m = metrics_new();
    metrics_sample_t s = { .start_time = -1, .cpu_seconds = -1, .resident_bytes = -1, .open_fds = -1,
                           .max_fds = -1 };
    metrics_name_t *n = metrics_name(m, "h", 1);
    metrics_observe(n, 0.0005);                  /* on a bound: in that bucket (le) */
    metrics_observe(n, 0.003);
    metrics_observe(n, 0.003);
    metrics_observe(n, 7);
    metrics_observe(n, 60);                      /* past the last bound: +Inf only */
    char *text = render(m, &s);
    CHECK(has(text, "# TYPE pseud_handler_duration_seconds histogram\n"), "a histogram");
    CHECK(has(text, "pseud_handler_duration_seconds_bucket{name=\"h\",le=\"0.0005\"} 1\n"), "first bucket");
    CHECK(has(text, "pseud_handler_duration_seconds_bucket{name=\"h\",le=\"0.0025\"} 1\n"), "below 3 ms");
    CHECK(has(text, "pseud_handler_duration_seconds_bucket{name=\"h\",le=\"0.005\"} 3\n"), "cumulative");
    CHECK(has(text, "pseud_handler_duration_seconds_bucket{name=\"h\",le=\"5\"} 3\n"), "still 3 at 5 s");
    CHECK(has(text, "pseud_handler_duration_seconds_bucket{name=\"h\",le=\"10\"} 4\n"), "7 s under 10");
    CHECK(has(text, "pseud_handler_duration_seconds_bucket{name=\"h\",le=\"+Inf\"} 5\n"), "+Inf: all");
    CHECK(has(text, "pseud_handler_duration_seconds_sum{name=\"h\"} 67.0065"), "sum: %s",
          strstr(text, "_sum"));
    CHECK(has(text, "pseud_handler_duration_seconds_count{name=\"h\"} 5\n"), "count = +Inf");
    /* bounds in order, each bucket line once */
    const char *at = text;
    for (int i = 0; i < METRICS_NBUCKETS; i++) {
        char le[64];
        snprintf(le, sizeof le, "{name=\"h\",le=\"%g\"}", metrics_buckets[i]);
        const char *next = strstr(at, le);
        CHECK(next != NULL, "bucket %g in order", metrics_buckets[i]);
        if (next) at = next;
    }
    free(text);
    metrics_destroy(&m);
}

static void test_bound(void) {
    metrics_t *m = metrics_new();
    char name[32];
    for (int i = 0; i < METRICS_MAX_NAMES; i++) {
        int n = snprintf(name, sizeof name, "n%d", i);
        metrics_count(metrics_name(m, name, (size_t)n), METRICS_OK);
    }
    CHECK(metrics_name(m, "n17", 3)->calls[METRICS_OK] == 1, "found after the table grew");
    CHECK(metrics_name(m, "one too many", 12) == metrics_unknown(m), "past the bound: (unknown)");
    metrics_destroy(&m);
}

/* --- HTTP on a loop --- */

static int g_renders;

static int render_fixed(void *ctx, metrics_buf_t *out) {
    (void)ctx;
    g_renders++;
    metrics_t *m = metrics_new();
    metrics_sample_t s = { .start_time = -1, .cpu_seconds = -1, .resident_bytes = -1, .open_fds = -1,
                           .max_fds = -1 };
    int rc = metrics_render(m, &s, out);
    metrics_destroy(&m);
    return rc;
}

/* Send `request` to 127.0.0.1:port, turn the loop until the server closes
 * (HTTP/1.0), return what came back (malloc'd). */
static char *http(loop_t *loop, int port, const char *request) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { close(fd); return NULL; }
    if (write(fd, request, strlen(request)) < 0) { close(fd); return NULL; }
    size_t cap = 1 << 16, len = 0;
    char *buf = calloc(1, cap);
    for (int turns = 0; turns < 200; turns++) {
        loop_run_once(loop, 0.02);
        ssize_t n = recv(fd, buf + len, cap - len - 1, MSG_DONTWAIT);
        if (n == 0) break;                       /* closed: the whole answer is in */
        if (n > 0) len += (size_t)n;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

static void test_http(void) {
    loop_t *loop = loop_new();
    char err[512];
    metrics_http_t *s = metrics_http_new(loop, "tcp://127.0.0.1:0", render_fixed, NULL, err, sizeof err);
    CHECK(s != NULL, "serves on a free port: %s", s ? "" : err);
    if (!s) { loop_destroy(&loop); return; }
    int port = metrics_http_port(s);
    CHECK(port > 0, "a port was picked");
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    CHECK(strcmp(metrics_http_url(s), url) == 0, "the URL names the port: %s", metrics_http_url(s));
    char *r = http(loop, port, "GET /metrics HTTP/1.0\r\n\r\n");
    CHECK(r && strncmp(r, "HTTP/1.1 200", 12) == 0, "200: %.40s", r ? r : "(nothing)");
    CHECK(r && has(r, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "content type");
    CHECK(r && has(r, "\r\n\r\n# HELP pseud_calls_total"), "the exposition as body");
    CHECK(g_renders == 1, "rendered once");
    free(r);
    r = http(loop, port, "GET /other HTTP/1.0\r\n\r\n");
    CHECK(r && strncmp(r, "HTTP/1.1 404", 12) == 0, "404 for another path: %.40s", r ? r : "");
    free(r);
    r = http(loop, port, "POST /metrics HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi");
    CHECK(r && strncmp(r, "HTTP/1.1 405", 12) == 0 && has(r, "Allow: GET, HEAD\r\n"),
          "405 for POST: %.60s", r ? r : "");
    free(r);
    CHECK(g_renders == 1, "only GET /metrics renders");

    char address[64];
    snprintf(address, sizeof address, "tcp://127.0.0.1:%d", port);
    metrics_http_t *again = metrics_http_new(loop, address, render_fixed, NULL, err, sizeof err);
    CHECK(!again && has(err, address) && has(err, "Address already in use"), "port in use: %s", err);
    metrics_http_destroy(&again);
    const char *bad[] = { "127.0.0.1:9101", "tcp://127.0.0.1", "tcp://127.0.0.1:99999",
                          "tcp://example.invalid:80", "tcp://[::1:80", "tcp://:80" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        metrics_http_t *x = metrics_http_new(loop, bad[i], render_fixed, NULL, err, sizeof err);
        CHECK(!x && has(err, bad[i]) && has(err, "bad metrics address"), "refused '%s': %s", bad[i], err);
    }
    metrics_http_t *v6 = metrics_http_new(loop, "tcp://[::1]:0", render_fixed, NULL, err, sizeof err);
    CHECK(v6 && strncmp(metrics_http_url(v6), "http://[::1]:", 13) == 0, "IPv6 in brackets: %s",
          v6 ? metrics_http_url(v6) : err);
    metrics_http_destroy(&v6);
    metrics_http_destroy(&s);
    CHECK(s == NULL, "destroy clears");
    CHECK(loop_timer_count(loop) == 0, "no timer left on the loop");
    loop_destroy(&loop);
}

int main(void) {
    test_escaping();
    test_calls();
    test_histogram();
    test_bound();
    test_http();
    printf("test_metrics: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
