/*
 * metrics_http: libmicrohttpd on the loop (see metrics_http.h).
 *
 * The listening socket is ours (bound here, so a port in use or a bad
 * address gets its own errno and message) and handed to MHD, which closes
 * it when stopped. After every MHD_run the one timer is armed again for
 * MHD_get_timeout: a connection's idle timeout, or 0 when MHD has ready
 * connections its epoll set will not signal again (it is edge-triggered).
 *
 * libmicrohttpd is loaded with dlopen when metrics are first served, not
 * linked: it brings GnuTLS and half a dozen libraries with it, whose
 * relocated pages cost every process about 2.5 MiB of RSS (idle RSS 6.3 ->
 * 8.9 MiB) whether it serves metrics or not.
 */
#include "metrics_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dlfcn.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <microhttpd.h>

#define MAX_ADDRESS 256
#define PAGE_REUSE 10             /* a page serves scrapes for this many times its rendering time */
#define PAGE_PINNED 4             /* past this many pages alive, the last one serves every scrape */


#ifndef PSEUD_MHD_SONAME
#define PSEUD_MHD_SONAME "libmicrohttpd.so.12"       /* Debian 12's; CMake passes the built one's */
#endif

/* The libmicrohttpd functions used, found with dlsym; typed from its header. */
typedef struct mhd_api {
    void *lib;
    __typeof__(&MHD_start_daemon) start_daemon;
    __typeof__(&MHD_stop_daemon) stop_daemon;
    __typeof__(&MHD_get_daemon_info) get_daemon_info;
    __typeof__(&MHD_run) run;
    __typeof__(&MHD_get_timeout) get_timeout;
    __typeof__(&MHD_create_response_from_buffer) create_response_from_buffer;
    __typeof__(&MHD_create_response_from_buffer_with_free_callback_cls) create_response_owned;
    __typeof__(&MHD_add_response_header) add_response_header;
    __typeof__(&MHD_queue_response) queue_response;
    __typeof__(&MHD_destroy_response) destroy_response;
} mhd_api_t;

struct metrics_http {
    mhd_api_t mhd;
    struct MHD_Daemon *daemon;
    loop_t *loop;
    int epoll_fd;                 /* MHD's, watched by the loop */
    loop_timer_t *timer;          /* MHD_get_timeout's, or NULL */
    metrics_http_render_fn render;
    void *ctx;
    struct MHD_Response *page;    /* the last page rendered, shared by the scrapes that come soon after */
    double page_at, page_cost;    /* when it was rendered, and how long that took (seconds) */
    size_t page_len;
    size_t pinned;                /* bytes of the pages alive: this one, and those still being sent */
    int port;
    char address[MAX_ADDRESS];    /* as given */
    char url[MAX_ADDRESS];        /* http://HOST:PORT/metrics, the port resolved */
};

/* A page's buffer, freed by MHD once no connection sends it. */
typedef struct page_buf {
    struct metrics_http *s;
    char *data;
    size_t len;
} page_buf_t;

static void s_page_free(void *cls) {
    page_buf_t *b = cls;
    b->s->pinned -= b->len;
    free(b->data);
    free(b);
}

/* --- the address --- */

/* tcp://HOST:PORT into `sa`; 0, or -1 with *why. */
static int s_parse(const char *address, struct sockaddr_storage *sa, socklen_t *len, const char **why) {
    char host[MAX_ADDRESS];
    if (strncmp(address, "tcp://", 6) != 0) { *why = "it must be tcp://HOST:PORT"; return -1; }
    const char *start = address + 6, *end_host, *colon;
    if (start[0] == '[') {                         /* [IPv6]:PORT */
        end_host = strchr(start, ']');
        if (!end_host || end_host[1] != ':') { *why = "an IPv6 host is written [ADDRESS]:PORT"; return -1; }
        start++;
        colon = end_host + 1;
    } else {
        colon = end_host = strrchr(start, ':');
        if (!colon) { *why = "it has no port (tcp://HOST:PORT)"; return -1; }
    }
    size_t hlen = (size_t)(end_host - start);
    if (hlen == 0 || hlen >= sizeof host) { *why = "its host is empty or too long"; return -1; }
    memcpy(host, start, hlen);
    host[hlen] = '\0';
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || *end || errno || port < 0 || port > 65535) {
        *why = "its port must be a number from 0 to 65535";
        return -1;
    }
    memset(sa, 0, sizeof *sa);
    struct sockaddr_in *in4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
    if (strcmp(host, "*") == 0) strcpy(host, "0.0.0.0");
    if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
    } else {
        *why = "its host must be an IP address, [IPv6 address], * or localhost";
        return -1;
    }
    return 0;
}

/* A non-blocking listening socket on `sa`; the fd, or -1 with errno. The
 * URL it serves (the port resolved) goes to `url`. */
static int s_listen(const struct sockaddr_storage *sa, socklen_t len, int *port, char *url, size_t size) {
    int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (sa->ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    if (bind(fd, (const struct sockaddr *)sa, len) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    char host[INET6_ADDRSTRLEN] = "?";
    int v6 = bound.ss_family == AF_INET6;
    inet_ntop(bound.ss_family, v6 ? (void *)&((struct sockaddr_in6 *)&bound)->sin6_addr
                                  : (void *)&((struct sockaddr_in *)&bound)->sin_addr, host, sizeof host);
    *port = ntohs(v6 ? ((struct sockaddr_in6 *)&bound)->sin6_port : ((struct sockaddr_in *)&bound)->sin_port);
    snprintf(url, size, v6 ? "http://[%s]:%d/metrics" : "http://%s:%d/metrics", host, *port);
    return fd;
}

/* --- the library --- */

/* Load libmicrohttpd into `m`; 0, or -1 with the reason in err. */
static int s_load(mhd_api_t *m, char *err, size_t err_size) {
    m->lib = dlopen(PSEUD_MHD_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!m->lib) {
        snprintf(err, err_size, "cannot serve metrics: libmicrohttpd is missing (%s)", dlerror());
        return -1;
    }
#define LOAD(field, name)                                                   \
    if (!(*(void **)&m->field = dlsym(m->lib, name))) {                     \
        snprintf(err, err_size, "cannot serve metrics: %s has no %s", PSEUD_MHD_SONAME, name); \
        dlclose(m->lib);                                                    \
        return -1;                                                          \
    }
    LOAD(start_daemon, "MHD_start_daemon")
    LOAD(stop_daemon, "MHD_stop_daemon")
    LOAD(get_daemon_info, "MHD_get_daemon_info")
    LOAD(run, "MHD_run")
    LOAD(get_timeout, "MHD_get_timeout")
    LOAD(create_response_from_buffer, "MHD_create_response_from_buffer")
    LOAD(create_response_owned, "MHD_create_response_from_buffer_with_free_callback_cls")
    LOAD(add_response_header, "MHD_add_response_header")
    LOAD(queue_response, "MHD_queue_response")
    LOAD(destroy_response, "MHD_destroy_response")
#undef LOAD
    return 0;
}

/* --- requests --- */

static enum MHD_Result s_answer(const mhd_api_t *m, struct MHD_Connection *c, unsigned status,
                                const char *text) {
    struct MHD_Response *r = m->create_response_from_buffer(strlen(text), (void *)text,
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    m->add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) m->add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = m->queue_response(c, status, r);
    m->destroy_response(r);
    return rc;
}

/* Every request is answered on its first call, when its headers are in
 * (a body, if any, is never read: the connection then closes). */
static enum MHD_Result s_request(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
    metrics_http_t *s = cls;
    (void)version; (void)upload_data; (void)upload_data_size; (void)con_cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return s_answer(&s->mhd, c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics is served here\n");
    if (strcmp(url, "/metrics") != 0)
        return s_answer(&s->mhd, c, MHD_HTTP_NOT_FOUND, "not found: the metrics are at /metrics\n");
    /* The page is rendered in the loop: a scrape within PAGE_REUSE times
     * its rendering time of the last one gets that page (one buffer, MHD
     * counts who holds it), so scrapers in a loop cost the loop at most a
     * tenth of its time; and while PAGE_PINNED pages are alive (slow
     * readers hold theirs), the last one serves every scrape (an attack
     * round: a page of 10,000 names, 18.8 MB, took four scrapers' loops to
     * half a second of RPC latency, and 16 that never read to 315 MB; a
     * review: 16 arriving 0.6 s apart to 147 MB). A page of a few KiB
     * renders in microseconds: it is all but always new. */
    double now = loop_now();
    if (!s->page || (now - s->page_at > PAGE_REUSE * s->page_cost && s->pinned < PAGE_PINNED * s->page_len)) {
        metrics_buf_t out = { 0 };
        page_buf_t *b = malloc(sizeof *b);
        if (!b || s->render(s->ctx, &out) < 0 || !out.data) {
            free(b);
            metrics_buf_free(&out);
            return s_answer(&s->mhd, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        }
        *b = (page_buf_t){ s, out.data, out.len };
        struct MHD_Response *r = s->mhd.create_response_owned(out.len, out.data, s_page_free, b);
        if (!r) { free(b); metrics_buf_free(&out); return MHD_NO; }
        s->pinned += out.len;
        s->page_len = out.len;
        s->mhd.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, METRICS_CONTENT_TYPE);
        if (s->page) s->mhd.destroy_response(s->page);   /* the scrapes still sending it keep it */
        s->page = r;
        s->page_at = now;
        s->page_cost = loop_now() - now;
    }
    return s->mhd.queue_response(c, MHD_HTTP_OK, s->page);
}

/* --- on the loop --- */

static void s_on_timer(loop_t *loop, loop_timer_t *timer, void *arg);

/* Connections MHD holds now. */
static unsigned s_connections(const metrics_http_t *s) {
    const union MHD_DaemonInfo *info = s->mhd.get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return info ? info->num_connections : 0;
}

/* Let MHD do what is ready, then arm the timer for when it must run again.
 * At its connection limit MHD takes the listening socket out of its epoll
 * set and puts it back only at the start of a later run: a run that closed
 * connections is followed by one more, or, the last connection gone, no
 * event would ever run it and no scrape would be answered again. */
static void s_run(metrics_http_t *s) {
    unsigned before = s_connections(s);
    s->mhd.run(s->daemon);
    /* at the limit a run may close one and accept another: the count
     * alone would not tell */
    if (s_connections(s) < before || before >= METRICS_HTTP_MAX_CONNECTIONS) s->mhd.run(s->daemon);
    if (s->timer) { loop_cancel_timer(s->loop, s->timer); s->timer = NULL; }
    MHD_UNSIGNED_LONG_LONG ms;
    if (s->mhd.get_timeout(s->daemon, &ms) == MHD_YES)
        s->timer = loop_add_timer(s->loop, (double)ms / 1000.0, s_on_timer, s);
}

static void s_on_timer(loop_t *loop, loop_timer_t *timer, void *arg) {
    metrics_http_t *s = arg;
    (void)loop; (void)timer;
    s->timer = NULL;                              /* the loop frees it */
    s_run(s);
}

static void s_on_ready(loop_t *loop, int fd, void *arg) {
    (void)loop; (void)fd;
    s_run(arg);
}

metrics_http_t *metrics_http_new(loop_t *loop, const char *address, metrics_http_render_fn render,
                                 void *ctx, char *err, size_t err_size) {
    struct sockaddr_storage sa;
    socklen_t len = 0;
    const char *why = NULL;
    if (strlen(address) >= MAX_ADDRESS) why = "it is too long";
    if (why || s_parse(address, &sa, &len, &why) < 0) {
        snprintf(err, err_size, "bad metrics address '%.200s': %s", address, why);
        return NULL;
    }
    metrics_http_t *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, err_size, "metrics at '%s': out of memory", address); return NULL; }
    if (s_load(&s->mhd, err, err_size) < 0) { free(s); return NULL; }
    s->loop = loop;
    s->render = render;
    s->ctx = ctx;
    snprintf(s->address, sizeof s->address, "%s", address);
    int fd = s_listen(&sa, len, &s->port, s->url, sizeof s->url);
    if (fd < 0) {
        snprintf(err, err_size, "cannot serve metrics at '%s': %s", address, strerror(errno));
        dlclose(s->mhd.lib);
        free(s);
        return NULL;
    }
    unsigned flags = MHD_USE_EPOLL | (sa.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    s->daemon = s->mhd.start_daemon(flags, 0, NULL, NULL, s_request, s,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_HTTP_MAX_CONNECTIONS,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)METRICS_HTTP_PER_ADDRESS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_HTTP_TIMEOUT,
        MHD_OPTION_END);
    const union MHD_DaemonInfo *info = s->daemon
        ? s->mhd.get_daemon_info(s->daemon, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (!info || loop_add_fd(loop, info->epoll_fd, s_on_ready, s) < 0) {
        snprintf(err, err_size, "cannot serve metrics at '%s': libmicrohttpd did not start", address);
        if (s->daemon) s->mhd.stop_daemon(s->daemon); else close(fd);
        dlclose(s->mhd.lib);
        free(s);
        return NULL;
    }
    s->epoll_fd = info->epoll_fd;
    return s;
}

void metrics_http_destroy(metrics_http_t **p) {
    if (!p || !*p) return;
    metrics_http_t *s = *p;
    loop_remove_fd(s->loop, s->epoll_fd);
    loop_cancel_timer(s->loop, s->timer);
    s->mhd.stop_daemon(s->daemon);                /* closes the listening socket too */
    if (s->page) s->mhd.destroy_response(s->page);
    dlclose(s->mhd.lib);
    free(s);
    *p = NULL;
}

const char *metrics_http_address(const metrics_http_t *s) { return s->address; }
int metrics_http_port(const metrics_http_t *s) { return s->port; }
const char *metrics_http_url(const metrics_http_t *s) { return s->url; }
