/*
 * io_threads: libzmq's threads (its I/O thread, its reaper) against the
 * host's loop thread when they share CPUs (see io_threads.h).
 */
#define _GNU_SOURCE                    /* sched_getaffinity, CPU_COUNT */
#include "io_threads.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/resource.h>

#include <zmq.h>

#include "host_state.h"

/* The threads of this process, up to `cap` of them; how many. */
static size_t s_threads(pid_t *tids, size_t cap) {
    DIR *d = opendir("/proc/self/task");
    size_t n = 0;
    struct dirent *e;
    while (d && n < cap && (e = readdir(d)))
        if (e->d_name[0] != '.') tids[n++] = (pid_t)strtol(e->d_name, NULL, 10);
    if (d) closedir(d);
    return n;
}

/* libzmq's threads (its I/O thread, its reaper) against the loop thread,
 * when both share CPUs. libzmq's own thread options cannot do it: its
 * priority option only raises one, and its policy option aborts the
 * process if the kernel refuses. So its threads are found as those its
 * context's first socket starts (the process's other threads are not ours
 * to touch) and set here, a refusal logged.
 *
 * PSEUD_IO_NICE=N: they run N nice levels below the loop. The loop decides
 * every peer's latency; the I/O thread only moves bytes. When both share
 * one core and a peer floods large messages, an I/O thread at a higher
 * nice value gives the core to the loop as soon as it wakes instead of
 * finishing its slice. Off by default: on one core it also costs
 * throughput where the I/O thread is the busier one (docs/bench-history.md).
 *
 * PSEUD_IO_BATCH=1|0, by default 1 exactly when the process may run on one
 * CPU only (taskset, CPUAffinity=): they run SCHED_BATCH. Woken, they wait
 * for the loop to block instead of preempting it, with their weight
 * unchanged, so the replies to a batch of calls leave in one wake-up of
 * the I/O thread instead of one each: at window 100 on one core, 8-35%
 * more calls a second (docs/decisions.md). With more CPUs the I/O thread
 * wakes on another, so there is nothing to gain, and on a busy machine it
 * would wait for others' time slices. */
#define MAX_THREADS_SEEN 64

/* Is thread `tid` one of libzmq's, done setting itself up? libzmq names
 * its threads ("ZMQbg/...") just after applying their scheduling, which
 * would undo what is set earlier. Waits for the name (bounded: ~50 ms). */
static int s_is_zmq_thread(pid_t tid) {
    char path[64], comm[32];
    snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)tid);
    for (int tries = 0; tries < 1000; tries++) {
        FILE *f = fopen(path, "r");
        if (!f) return 0;                        /* gone */
        int named = fgets(comm, sizeof comm, f) && strncmp(comm, "ZMQbg/", 6) == 0;
        fclose(f);
        if (named) return 1;
        struct timespec pause = { 0, 50000 };
        nanosleep(&pause, NULL);
    }
    return 0;                                    /* not libzmq's, or never named */
}

/* PSEUD_IO_NICE: 0..19, 0 when unset or bad (logged). */
static int s_io_nice(host_t *h) {
    const char *env = getenv("PSEUD_IO_NICE");
    char *end;
    if (!env || !*env) return 0;
    long delta = strtol(env, &end, 10);
    if (*end || delta < 0 || delta > 19) {
        HOST_LOG(h, LOG_WARN, "PSEUD_IO_NICE ignored: not a whole number from 0 to 19",
                 LOG_STR("value", env));
        return 0;
    }
    return (int)delta;
}

/* PSEUD_IO_BATCH: 1 or 0; unset (or bad, logged): whether this process may
 * run on one CPU only. */
static int s_io_batch(host_t *h) {
    const char *env = getenv("PSEUD_IO_BATCH");
    if (env && (strcmp(env, "0") == 0 || strcmp(env, "1") == 0)) return env[0] == '1';
    if (env && *env) HOST_LOG(h, LOG_WARN, "PSEUD_IO_BATCH ignored: not 0 or 1", LOG_STR("value", env));
    cpu_set_t cpus;
    return sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) == 1;
}

void io_threads_tune(host_t *h) {
    pid_t before[MAX_THREADS_SEEN], after[MAX_THREADS_SEEN];
    int delta = s_io_nice(h), batch = s_io_batch(h);
    if (delta == 0 && !batch) return;
    size_t nb = s_threads(before, MAX_THREADS_SEEN);
    void *first = zmq_socket(h->zmq, ZMQ_PAIR);  /* a context starts its threads with its first socket */
    if (first) zmq_close(first);
    size_t na = s_threads(after, MAX_THREADS_SEEN), found = 0, lowered = 0, batched = 0;
    int batch_errno = 0;
    for (size_t i = 0; nb < MAX_THREADS_SEEN && na < MAX_THREADS_SEEN && i < na; i++) {
        size_t j = 0;
        while (j < nb && before[j] != after[i]) j++;
        if (j < nb || !s_is_zmq_thread(after[i])) continue;   /* not libzmq's */
        found++;
        if (delta > 0) {
            errno = 0;
            int nice = getpriority(PRIO_PROCESS, (id_t)after[i]);
            if (errno == 0 && setpriority(PRIO_PROCESS, (id_t)after[i], nice + delta > 19 ? 19 : nice + delta) == 0)
                lowered++;
        }
        if (batch) {
            struct sched_param none = { .sched_priority = 0 };
            if (sched_setscheduler(after[i], SCHED_BATCH, &none) == 0) batched++;
            else batch_errno = errno;
        }
    }
    if (delta > 0 && lowered == 0)
        HOST_LOG(h, LOG_WARN, "PSEUD_IO_NICE: found none of libzmq's threads to lower",
                 LOG_INT("value", delta));
    if (batch && (found == 0 || batched < found))
        HOST_LOG(h, LOG_WARN, "libzmq's threads keep their scheduling policy (not SCHED_BATCH)",
                 LOG_STR("reason", strerror(batch_errno)));
}
