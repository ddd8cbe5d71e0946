/*
 * metrics_http: GET /metrics over HTTP, served by libmicrohttpd on the
 * host's loop: no thread of its own, no locks. MHD runs in its external
 * epoll mode; the loop watches its one epoll fd and arms one timer for
 * MHD_get_timeout, and MHD_run answers on the loop thread, so rendering
 * reads the counters where they are written.
 *
 * Bounded against hostile scrapers: at most METRICS_HTTP_MAX_CONNECTIONS
 * connections (4 per client address), idle ones closed after
 * METRICS_HTTP_TIMEOUT seconds, only GET (and HEAD) of /metrics answered
 * 200 (other paths 404, other methods 405). No Lua here.
 */
#ifndef PSEUD_METRICS_HTTP_H
#define PSEUD_METRICS_HTTP_H

#include <stddef.h>

#include "loop.h"
#include "metrics.h"

#define METRICS_HTTP_MAX_CONNECTIONS 16
#define METRICS_HTTP_PER_ADDRESS     4
#define METRICS_HTTP_TIMEOUT         10     /* seconds */
#define METRICS_CONTENT_TYPE         "text/plain; version=0.0.4; charset=utf-8"

typedef struct metrics_http metrics_http_t;

/* Write the exposition into `out` (0, or -1: answered 500). */
typedef int (*metrics_http_render_fn)(void *ctx, metrics_buf_t *out);

/* Listen on `address`: tcp://HOST:PORT, HOST an IPv4 or [IPv6] literal,
 * `*` (every IPv4 address) or `localhost`; port 0 picks a free one. NULL
 * with a message naming the address in `err` (bad address, port in use). */
metrics_http_t *metrics_http_new(loop_t *loop, const char *address, metrics_http_render_fn render,
                                 void *ctx, char *err, size_t err_size);
/* Close every connection and the listening socket; takes NULL, clears *p. */
void metrics_http_destroy(metrics_http_t **p);

/* The address as given, the port listened on, and the URL to scrape
 * (http://HOST:PORT/metrics, the port resolved). */
const char *metrics_http_address(const metrics_http_t *s);
int metrics_http_port(const metrics_http_t *s);
const char *metrics_http_url(const metrics_http_t *s);

#endif
