/*
 * host_metrics: the host's side of metrics (see host.h). It starts the
 * counters and the HTTP listener, and at each scrape reads what the other
 * parts keep (scheduler, endpoints, the Lua heap) into a metrics_sample_t
 * for metrics_render. Scrapes run on the loop thread (metrics_http.c), so
 * nothing here needs a lock.
 */
#include "host_state.h"
#include "host.h"

#include <stdio.h>
#include <string.h>

/* Everything the counters do not hold, as of now. */
static void s_sample(host_t *h, metrics_sample_t *s) {
    memset(s, 0, sizeof *s);
    metrics_process_sample(h->metrics, s);
    s->busy = h->busy_closed;
    s->unstarted = h->unstarted_closed;
    size_t peers = 0, held = 0, waiting = 0;
    for (int i = 0; i < h->nendpoints; i++) {
        endpoint_t *ep = h->endpoints[i]->ep;
        if (!ep) continue;
        s->busy += endpoint_stats(ep)->busy_refused;
        s->unstarted += endpoint_stats(ep)->calls_unstarted;
        peers += peers_count(endpoint_peers(ep));
        held += endpoint_held_bytes(ep);
        waiting += endpoint_parked_calls(ep);
    }
    s->waiting = (double)waiting;
    s->peers = (double)peers;
    s->queued_bytes = (double)held;
    uint64_t w[WORKERS_SCHED_COUNTS] = { 0 };     /* the workers' own, as they last said */
    workers_sched_totals(h->workers, w);
    s->in_flight = (double)h->sched.nanswering + (double)workers_inflight(h->workers);
    s->preemptions = h->sched.preemptions + w[0];
    s->limit_hits[METRICS_LIMIT_TIME] = h->sched.time_hits + w[1];
    s->limit_hits[METRICS_LIMIT_MEMORY] = h->sched.memory_hits + w[2];
    s->limit_hits[METRICS_LIMIT_HOOK_TIME] = h->sched.hook_time_hits + w[3];
    s->calls_stopped = h->sched.calls_stopped + w[4];
    /* reads two fields: no allocation, no Lua runs */
    s->lua_memory_bytes = (double)lua_gc(h->L, LUA_GCCOUNT, 0) * 1024.0 + lua_gc(h->L, LUA_GCCOUNTB, 0);
}

static int s_render(void *ctx, metrics_buf_t *out) {
    host_t *h = ctx;
    metrics_sample_t s;
    s_sample(h, &s);
    return metrics_render(h->metrics, &s, out);
}

int host_serve_metrics(host_t *h, const char *address, char *err, size_t err_size) {
    if (h->metrics_http) {
        if (strcmp(metrics_http_address(h->metrics_http), address) == 0) return 0;
        snprintf(err, err_size, "cannot serve metrics at '%s': this process serves them at '%s' "
                 "already (one address a process)", address, metrics_http_address(h->metrics_http));
        return -1;
    }
    if (!(h->metrics = metrics_new())) {
        snprintf(err, err_size, "cannot serve metrics at '%s': out of memory", address);
        return -1;
    }
    h->metrics_http = metrics_http_new(h->loop, address, s_render, h, err, err_size);
    if (!h->metrics_http) {
        metrics_destroy(&h->metrics);             /* nothing served: nothing counted */
        return -1;
    }
    HOST_LOG(h, LOG_INFO, "serving metrics", LOG_STR("url", metrics_http_url(h->metrics_http)),
             LOG_STR("address", address));
    return 0;
}
