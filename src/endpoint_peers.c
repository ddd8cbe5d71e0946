/*
 * endpoint_peers: who is there (see endpoint_internal.h).
 *
 * The socket's monitor says when a connection closes, naming its fd, and
 * every message carries the fd it came on (ZMQ_SRCFD): together they tie a
 * disconnect to the routing ids heard on it (Debian 12's libzmq has no
 * ZMQ_ROUTER_NOTIFY). Closed entries are forgotten at once, unless a
 * heartbeat timeout is set: then the sweep reports them (their calls fail
 * with PeerLostError, the backend's timeout hook runs), as for any peer gone
 * silent. Heartbeats go to every entry, oldest first.
 */
#include "endpoint_internal.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int endpoint_fd_closed(const endpoint_t *ep, int fd) {
    return fd >= 0 && (size_t)fd / 8 < ep->closed_fds_size &&
           (ep->closed_fds[fd / 8] >> (fd % 8)) & 1;
}

static void s_mark_fd(endpoint_t *ep, int fd, int closed) {
    if (fd < 0 || fd > (1 << 24)) return;
    size_t byte = (size_t)fd / 8;
    if (byte >= ep->closed_fds_size) {
        if (!closed) return;
        size_t n = byte + 64;
        uint8_t *b = realloc(ep->closed_fds, n);
        if (!b) return;                          /* then only the user check guards it */
        memset(b + ep->closed_fds_size, 0, n - ep->closed_fds_size);
        ep->closed_fds = b;
        ep->closed_fds_size = n;
    }
    if (closed) ep->closed_fds[byte] |= (uint8_t)(1u << (fd % 8));
    else ep->closed_fds[byte] &= (uint8_t)~(1u << (fd % 8));
}

/* --- handshakes we started --- */

int endpoint_note_connect(endpoint_t *ep, const char *address) {
    for (int i = 0; i < ep->nconnects; i++)
        if (strcmp(ep->connects[i].address, address) == 0) return 0;
    if (ep->nconnects >= ENDPOINT_MAX_CONNECTS) { ep->connects_untracked = 1; return 0; }
    if (!ep->connects) {
        ep->connects = calloc(ENDPOINT_MAX_CONNECTS, sizeof *ep->connects);
        if (!ep->connects) return -1;
    }
    char *copy = strdup(address);
    if (!copy) return -1;
    ep->connects[ep->nconnects].address = copy;
    ep->connects[ep->nconnects].handshaken = 0;
    ep->connects[ep->nconnects++].refused = 0;
    return 0;
}

void endpoint_connects_free(endpoint_t *ep) {
    for (int i = 0; i < ep->nconnects; i++) free(ep->connects[i].address);
    free(ep->connects);
    ep->connects = NULL;
    ep->nconnects = ep->nrefused = 0;
    loop_cancel_timer(ep->loop, ep->refuse);
    ep->refuse = NULL;
}

int endpoint_all_refused(const endpoint_t *ep) {
    return ep->nconnects > 0 && ep->nrefused == ep->nconnects && !ep->connects_untracked;
}

static endpoint_connect_t *s_connect_of(endpoint_t *ep, const char *address) {
    for (int i = 0; i < ep->nconnects; i++)
        if (strcmp(ep->connects[i].address, address) == 0) return &ep->connects[i];
    return NULL;
}

/* End every pending call `match` says yes to with error `name`: `msg`.
 * One at a time from the head: callbacks may end other calls; calls they
 * make wait (the budget). Returns 1 when that destroyed the endpoint. */
static int s_fail_calls(endpoint_t *ep, int (*match)(endpoint_t *, const endpoint_call_t *, const void *),
                        const void *arg, const char *name, const char *msg) {
    size_t budget = ep->ncalls;
    endpoint_call_t *c = ep->first;
    while (c && budget > 0) {
        if (!match(ep, c, arg)) { c = c->next; continue; }
        budget--;
        if (endpoint_fail_call(ep, c, name, msg)) return 1;
        c = ep->first;
    }
    return 0;
}

static int s_unconnected(endpoint_t *ep, const endpoint_call_t *c, const void *arg) {
    (void)arg;
    if (c->peer_len == 0) return 0;              /* tracked: its WORK went another way */
    peer_t *p = peers_find(ep->peers, c->peer, c->peer_len);
    return !p || p->closed;
}

/* Every handshake we started was refused: calls to peers we have no
 * connection to end with UnauthorizedError now rather than by their
 * timeout. One at a time from the head: callbacks may end calls. */
static void s_end_refused(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    endpoint_t *ep = arg;
    ep->refuse = NULL;
    if (!endpoint_all_refused(ep)) return;
    unsigned status = ep->connects[0].refused;
    char msg[160];
    snprintf(msg, sizeof msg, "handshake refused by server (ZAP status %u)%s", status,
             ep->nconnects > 1 ? " at every address connected to" : "");
    s_fail_calls(ep, s_unconnected, NULL, "UnauthorizedError", msg);
}

void endpoint_arm_refusal(endpoint_t *ep) {
    if (!ep->refuse && !ep->closing) ep->refuse = loop_add_timer(ep->loop, 0, s_end_refused, ep);
}

/* A client's probe of its server, as ZMQ_PROBE_ROUTER's (an empty
 * message): libzmq sends that on a socket's first connection only, and a
 * connection made again (the server restarted) keeps the socket's pipe,
 * so a client that sends nothing was never heard by the new server, and
 * its send_to failed for good (a chaos run of the cluster). Only then:
 * a second probe on the first connection is one more message for the
 * server's hooks (a spinning heartbeat hook ran once more). Best effort. */
static void s_probe_server(endpoint_t *ep) {
    loop_touch(ep->loop, ep->socket);
    if (frame_send_part(ep->socket, ep->server_id, ep->server_id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        frame_send_part(ep->socket, "", 0, ZMQ_DONTWAIT);
}

static void s_on_handshake(endpoint_t *ep, uint16_t event, uint32_t status, const char *address) {
    endpoint_connect_t *c = s_connect_of(ep, address);
    if (!c) return;                              /* a peer's handshake with us: ZAP logs those */
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        if (c->handshaken && ep->server_id_len) s_probe_server(ep);
        c->handshaken = 1;
        if (c->refused) ep->nrefused--;
        c->refused = 0;
        return;
    }
    if (!c->refused) ep->nrefused++;
    c->refused = status ? status : 1;
    ENDPOINT_REFUSAL(ep, "our handshake was refused", LOG_STR("address", address),
                     LOG_INT("zap_status", status));
    if (endpoint_all_refused(ep) && ep->ncalls) endpoint_arm_refusal(ep);
}

/* Read the monitor's events. A connection that closed (DISCONNECTED, with
 * its fd) marks the entries heard on it closed: nothing bound to them goes
 * to their routing id again, so whoever takes it over later gets nothing
 * meant for them (DESIGN.md 4.1). Messages still in flight from it may be
 * read after the event: they keep the entry closed until a connection is
 * accepted on that fd again (ACCEPTED, CONNECTED). Messages carry their fd
 * (ZMQ_SRCFD); Debian 12's libzmq has no ZMQ_ROUTER_NOTIFY. */
void endpoint_drain_monitor(endpoint_t *ep) {
    if (!ep->monitor) return;
    for (;;) {                                   /* to the end: a stale entry must not pass */
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (frame_recv_part(&ev, ep->monitor, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&ev); break; }
        uint16_t event = 0;
        uint32_t value = 0;
        if (zmq_msg_size(&ev) >= 6) {
            memcpy(&event, zmq_msg_data(&ev), 2);
            memcpy(&value, (char *)zmq_msg_data(&ev) + 2, 4);
        }
        int more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        char address[256] = "";
        while (more) {                           /* the endpoint address: for handshakes */
            zmq_msg_init(&addr);
            if (frame_recv_part(&addr, ep->monitor, 0) < 0) { zmq_msg_close(&addr); break; }
            if (!address[0]) {
                size_t n = zmq_msg_size(&addr) < sizeof address - 1 ? zmq_msg_size(&addr) : sizeof address - 1;
                memcpy(address, zmq_msg_data(&addr), n);
                address[n] = '\0';
            }
            more = zmq_msg_more(&addr);
            zmq_msg_close(&addr);
        }
        if (event == ZMQ_EVENT_DISCONNECTED) {
            s_mark_fd(ep, (int)value, 1);
            /* the entries this close closes (fd_next is a hash chain); those
             * closed before had their calls stopped then */
            for (peer_t *q = peers_find_fd(ep->peers, (int)value); q; q = q->fd_next)
                if (q->fd == (int)value && !q->closed) endpoint_caller_gone(ep, q);
            peers_close_fd(ep->peers, (int)value);
            peer_t *p;
            while ((p = peers_find_fd(ep->peers, (int)value)) && endpoint_forget_closed(ep, p)) {}
            endpoint_park_wake(ep, 0);       /* a closed peer's waiting calls are dropped */
        } else if (event == ZMQ_EVENT_ACCEPTED || event == ZMQ_EVENT_CONNECTED) {
            s_mark_fd(ep, (int)value, 0);
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            s_on_handshake(ep, event, value, address);
        }
    }
}

/* Every drain ends on EAGAIN, and nothing else reads the monitor but the
 * loop's ZMQ_EVENTS look, which runs the drain when it finds an event: so
 * an event that came since the last drain has made its fd readable, and
 * one poll(2) of it now sees what a drain now would. */
void endpoint_catch_up_monitor(endpoint_t *ep) {
    if (!ep->monitor) return;
    struct pollfd p = { .fd = ep->monitor_fd, .events = POLLIN };
    if (ep->monitor_fd >= 0 && poll(&p, 1, 0) == 0) return;
    endpoint_drain_monitor(ep);
}

static void s_on_monitor(loop_t *loop, void *socket, void *arg) {
    (void)loop; (void)socket;
    endpoint_t *ep = arg;
    if (!ep->closing) endpoint_drain_monitor(ep);
}

void endpoint_sync_peers(endpoint_t *ep) { endpoint_drain_monitor(ep); }

void endpoint_caller_gone(endpoint_t *ep, const peer_t *p) {
    ep->callers_gone++;
    if (p->inflight && !ep->closing && ep->ev.on_caller_gone)
        ep->ev.on_caller_gone(ep->ev.ctx, ep, p->serial, p->routing_id, p->routing_id_len);
}

void endpoint_recheck_caller(endpoint_t *ep, uint64_t serial, const char *peer, size_t peer_len) {
    if (!serial || ep->closing || !ep->ev.on_caller_gone) return;
    const peer_t *p = peers_find(ep->peers, peer, peer_len);
    if (!p || p->closed || p->serial != serial) ep->ev.on_caller_gone(ep->ev.ctx, ep, serial, peer, peer_len);
}

int endpoint_forget_closed(endpoint_t *ep, peer_t *p) {
    if (!p->closed || ep->hb_timeout > 0) return 0;
    peers_remove(ep->peers, p);
    return 1;
}

/* Watch the socket's disconnects: libzmq names the fd, and messages carry
 * their fd (ZMQ_SRCFD), which ties a disconnect to the routing ids heard on
 * it (Debian 12's libzmq has no ZMQ_ROUTER_NOTIFY). */
int endpoint_monitor_start(endpoint_t *ep, void *zmq_context) {
    /* a fresh name each time: a closed socket's inproc name is released
     * later, by libzmq's reaper, so an address could still be taken */
    char address[64] = "inproc://pseud-monitor-";
    uint8_t id[FRAME_UUID_SIZE];
    frame_new_uuid(id);
    for (int i = 0; i < FRAME_UUID_SIZE; i++)
        snprintf(address + 23 + 2 * i, 3, "%02x", id[i]);
    if (zmq_socket_monitor(ep->socket, address, ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_ACCEPTED |
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED) < 0)
        return -1;
    ep->monitor = zmq_socket(zmq_context, ZMQ_PAIR);
    int zero = 0;
    size_t fd_len = sizeof ep->monitor_fd;
    ep->monitor_fd = -1;
    if (!ep->monitor || zmq_setsockopt(ep->monitor, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_getsockopt(ep->monitor, ZMQ_FD, &ep->monitor_fd, &fd_len) < 0 ||
        zmq_connect(ep->monitor, address) < 0 ||
        loop_add_socket(ep->loop, ep->monitor, s_on_monitor, ep) < 0) {
        if (ep->monitor) zmq_close(ep->monitor);
        ep->monitor = NULL;
        return -1;
    }
    return 0;
}

void endpoint_monitor_stop(endpoint_t *ep) {
    if (!ep->monitor) return;
    zmq_socket_monitor(ep->socket, NULL, 0);
    zmq_close(ep->monitor);
    ep->monitor = NULL;
}

/* --- heartbeats --- */

static void s_heartbeat_to(endpoint_t *ep, const char *peer, size_t len) {
    /* best effort: a peer that cannot take it now will be heard from, or not */
    loop_touch(ep->loop, ep->socket);
    frame_send(ep->socket, peer, len, NULL, 0, FRAME_HEARTBEAT, NULL, 0);
}

static void s_hb_send(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    endpoint_t *ep = arg;
    ep->hb_send = NULL;
    int sent_default = 0;
    for (peer_t *p = peers_oldest(ep->peers); p; p = p->newer) {
        s_heartbeat_to(ep, p->routing_id, p->routing_id_len);
        if (p->routing_id_len == ep->hb_peer_len &&
            memcmp(p->routing_id, ep->hb_peer, ep->hb_peer_len) == 0)
            sent_default = 1;
    }
    if (ep->hb_peer_len && !sent_default) s_heartbeat_to(ep, ep->hb_peer, ep->hb_peer_len);
    ep->hb_send = loop_add_timer(ep->loop, ep->hb_interval, s_hb_send, ep);
}

/* End every pending call to `peer` with PeerLostError. Returns 1 when that
 * destroyed the endpoint. */
static int s_to_peer(endpoint_t *ep, const endpoint_call_t *c, const void *arg) {
    (void)ep;
    const peer_t *p = arg;
    return c->peer_len == p->routing_id_len && memcmp(c->peer, p->routing_id, c->peer_len) == 0;
}

static int s_fail_calls_to(endpoint_t *ep, const peer_t *p, const char *why) {
    char who[64], msg[160];
    snprintf(msg, sizeof msg, "peer '%s' was declared gone (%s)",
             endpoint_peer_text(p->routing_id, p->routing_id_len, who, sizeof who), why);
    return s_fail_calls(ep, s_to_peer, p, "PeerLostError", msg);
}

static void s_hb_sweep(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    endpoint_t *ep = arg;
    ep->hb_sweep = NULL;
    double now = loop_now();
    endpoint_enter(ep);
    peer_t *p;
    while (!ep->closing && (p = peers_oldest(ep->peers)) && now - p->last_seen > ep->hb_timeout) {
        /* a peer can cause it per connection: limited */
        ENDPOINT_LOG_LIMITED(ep, LOG_INFO, "peer silent: gone", LOG_ID("user", p->user_id, p->user_id_len),
                     LOG_NUM("silent_seconds", now - p->last_seen));
        /* out of the directory first: callbacks see it gone */
        peers_detach(ep->peers, p);
        if (s_fail_calls_to(ep, p, "heartbeat timeout")) {
            peers_free(ep->peers, p);
            break;
        }
        if (ep->ev.on_peer_gone) ep->ev.on_peer_gone(ep->ev.ctx, ep, p);
        peers_free(ep->peers, p);
    }
    if (endpoint_leave(ep)) return;
    /* a callback may have set a new policy (and armed its own sweep) */
    if (ep->hb_sweep || ep->hb_timeout <= 0) return;
    double next = ep->hb_timeout / 4;
    if ((p = peers_oldest(ep->peers))) {
        double due = p->last_seen + ep->hb_timeout - now;
        if (due < next) next = due;
    }
    if (next < 0.005) next = 0.005;
    ep->hb_sweep = loop_add_timer(ep->loop, next, s_hb_sweep, ep);
}

int endpoint_set_heartbeat(endpoint_t *ep, double interval, double timeout,
                           const char *default_peer, size_t default_peer_len, int notify_seen) {
    loop_cancel_timer(ep->loop, ep->hb_send);
    loop_cancel_timer(ep->loop, ep->hb_sweep);
    ep->hb_send = ep->hb_sweep = NULL;
    ep->hb_interval = interval > 0 ? interval : 0;
    ep->hb_timeout = timeout > 0 ? timeout : 0;
    ep->notify_seen = notify_seen;
    ep->hb_peer_len = default_peer && default_peer_len <= FRAME_MAX_ID ? default_peer_len : 0;
    if (ep->hb_peer_len) memcpy(ep->hb_peer, default_peer, ep->hb_peer_len);
    if (ep->hb_interval > 0 &&
        !(ep->hb_send = loop_add_timer(ep->loop, ep->hb_interval, s_hb_send, ep)))
        return -1;
    if (ep->hb_timeout > 0 &&
        !(ep->hb_sweep = loop_add_timer(ep->loop, ep->hb_timeout / 4, s_hb_sweep, ep)))
        return -1;
    return 0;
}

void endpoint_heartbeat_stop(endpoint_t *ep) {
    loop_cancel_timer(ep->loop, ep->hb_send);
    loop_cancel_timer(ep->loop, ep->hb_sweep);
    ep->hb_send = ep->hb_sweep = NULL;
}
