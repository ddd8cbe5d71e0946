/*
 * io_threads: set libzmq's threads apart from the host's loop thread, once,
 * as the host's own context starts them: PSEUD_IO_NICE lowers their
 * priority, and on one CPU (or with PSEUD_IO_BATCH=1) they run SCHED_BATCH
 * (README "Backpressure", docs/decisions.md). Refusals are logged; nothing
 * here fails the host.
 */
#ifndef PSEUD_IO_THREADS_H
#define PSEUD_IO_THREADS_H

#include "host.h"

/* Call before the context `h` owns has made its first socket: that socket
 * starts libzmq's threads, and only threads started then are touched. */
void io_threads_tune(host_t *h);

#endif
