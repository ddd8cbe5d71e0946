/*
 * passwd: argon2 checks on worker threads (see passwd.h).
 *
 * A job lives in one of four places, and only the loop thread frees it:
 *   QUEUED   in the queue (mutex), waiting for a worker
 *   RUNNING  a worker verifies it (outside the mutex)
 *   SENT     its pointer is in the inproc pipe back to the loop
 *   DELAYED  answered, but the backoff holds the answer (a loop timer)
 * Every job is also on the loop thread's `all` list, so destroy frees what
 * is left once the workers have joined.
 */
#include "passwd.h"

#include <errno.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <zmq.h>

#define PASSWD_MAX_THREADS   16
#define PASSWD_MAX_PASSWORD  4096
#define PASSWD_MAX_ADDRESS   64          /* bytes of an address kept (IPv6 fits) */
#define PASSWD_ADDRESSES     1024        /* addresses whose failures are counted */
#define PASSWD_FORGET_AFTER  900.0       /* seconds of quiet that clear a count */
#define PASSWD_NICE          19          /* worker threads yield the CPU to the loop */

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_SENT, JOB_DELAYED };

typedef struct job {
    struct job *next;                /* queue order (under the mutex) */
    struct job *all_prev, *all_next; /* the loop thread's list of every job */
    passwd_t *pool;
    int state;                       /* enum job_state (under the mutex until SENT) */
    int cancelled;                   /* no callback (under the mutex) */
    int dummy;                       /* no such login: verify against the dummy */
    int verified;
    loop_timer_t *timer;             /* while DELAYED */
    passwd_done_fn done;
    void *ctx;
    char address[PASSWD_MAX_ADDRESS];
    char hash[crypto_pwhash_STRBYTES];
    size_t password_len;
    char password[];                 /* wiped as soon as it is verified */
} job_t;

typedef struct address_entry {
    char address[PASSWD_MAX_ADDRESS];
    unsigned failures;
    double last;                     /* monotonic time of the last answer */
    size_t pending;                  /* its checks in flight */
} address_entry_t;

struct passwd {
    passwd_options_t opt;
    loop_t *loop;
    void *ctx;                       /* zmq context */
    void *pull;                      /* results, read by the loop thread */
    char endpoint[64];
    pthread_t threads[PASSWD_MAX_THREADS];
    int nthreads;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    job_t *head, *tail;              /* the queue (mutex) */
    int stopping;                    /* (mutex) */
    job_t *all;                      /* every job (loop thread) */
    size_t pending;                  /* jobs alive (loop thread) */
    passwd_stats_t stats;            /* checked, dummy: mutex; the rest: loop thread */
    char dummy[crypto_pwhash_STRBYTES];
    address_entry_t addresses[PASSWD_ADDRESSES];
    size_t naddresses;
};

void passwd_options_init(passwd_options_t *o) {
    o->threads = 2;
    o->max_pending = 32;
    o->backoff_base = 0.25;
    o->backoff_max = 8;
}

/* --- per-address failures (loop thread) --- */

static address_entry_t *s_address(passwd_t *p, const char *address, int create) {
    if (!address[0]) return NULL;
    double now = loop_now();
    address_entry_t *oldest = NULL;
    for (size_t i = 0; i < p->naddresses; i++) {
        address_entry_t *a = &p->addresses[i];
        if (strcmp(a->address, address) == 0) {
            if (now - a->last > PASSWD_FORGET_AFTER) a->failures = 0;
            return a;
        }
        if (a->pending == 0 && (!oldest || a->last < oldest->last)) oldest = a;
    }
    if (!create) return NULL;
    address_entry_t *a = p->naddresses < PASSWD_ADDRESSES ? &p->addresses[p->naddresses++] : oldest;
    if (!a) return NULL;                     /* every entry busy: not counted */
    memset(a, 0, sizeof *a);
    snprintf(a->address, sizeof a->address, "%s", address);
    a->last = now;
    return a;
}

/* Seconds to hold the answer of a check that `verified` (or not): a
 * failure after the first from the same address waits base, 2 base, 4
 * base... up to max; a success is answered at once and clears the count. */
static double s_backoff(passwd_t *p, address_entry_t *a, int verified) {
    if (!a) return 0;
    a->last = loop_now();
    if (verified) { a->failures = 0; return 0; }
    a->failures++;
    if (a->failures < 2) return 0;
    double delay = p->opt.backoff_base;
    for (unsigned i = 2; i < a->failures && delay < p->opt.backoff_max; i++) delay *= 2;
    return delay > p->opt.backoff_max ? p->opt.backoff_max : delay;
}

/* --- jobs (loop thread) --- */

static void s_job_free(passwd_t *p, job_t *j) {
    if (j->all_prev) j->all_prev->all_next = j->all_next; else p->all = j->all_next;
    if (j->all_next) j->all_next->all_prev = j->all_prev;
    address_entry_t *a = s_address(p, j->address, 0);
    if (a && a->pending > 0) a->pending--;
    p->pending--;
    sodium_memzero(j->password, j->password_len);
    free(j);
}

static void s_answer(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop; (void)t;
    job_t *j = arg;
    passwd_t *p = j->pool;
    j->timer = NULL;
    passwd_done_fn done = j->done;
    void *ctx = j->ctx;
    int verified = j->verified;
    s_job_free(p, j);                        /* before the callback: it may check again */
    done(ctx, verified);
}

/* A worker is done with `j`: answer now, or after the address's backoff. */
static void s_finished(passwd_t *p, job_t *j) {
    pthread_mutex_lock(&p->mutex);
    int cancelled = j->cancelled;
    pthread_mutex_unlock(&p->mutex);
    if (cancelled) { s_job_free(p, j); return; }
    double delay = s_backoff(p, s_address(p, j->address, 1), j->verified);
    if (delay > 0) {
        j->state = JOB_DELAYED;
        j->timer = loop_add_timer(p->loop, delay, s_answer, j);
        if (j->timer) { p->stats.delayed++; return; }
    }
    s_answer(p->loop, NULL, j);
}

static void s_on_results(loop_t *loop, void *socket, void *arg) {
    (void)loop;
    passwd_t *p = arg;
    for (int i = 0; i < 64; i++) {
        job_t *j;
        if (zmq_recv(socket, &j, sizeof j, ZMQ_DONTWAIT) != (int)sizeof j) break;
        s_finished(p, j);
    }
}

/* --- workers --- */

static void *s_worker(void *arg) {
    passwd_t *p = arg;
    /* argon2 is meant to be slow: on a busy machine the loop thread, which
     * serves every peer, goes first (Linux nice is per thread) */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), PASSWD_NICE);
    void *push = zmq_socket(p->ctx, ZMQ_PUSH);
    int linger = 0;
    if (push) {
        zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_connect(push, p->endpoint) < 0) { zmq_close(push); push = NULL; }
    }
    pthread_mutex_lock(&p->mutex);
    for (;;) {
        while (!p->stopping && !p->head) pthread_cond_wait(&p->wake, &p->mutex);
        if (p->stopping) break;
        job_t *j = p->head;
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        j->state = JOB_RUNNING;
        int skip = j->cancelled || !push;
        pthread_mutex_unlock(&p->mutex);
        int ok = 0;
        if (!skip) {
            /* the dummy is checked all the same, so no such login costs as much as a wrong password */
            ok = crypto_pwhash_str_verify(j->dummy ? p->dummy : j->hash, j->password,
                                          j->password_len) == 0 && !j->dummy;
        }
        sodium_memzero(j->password, j->password_len);
        pthread_mutex_lock(&p->mutex);
        if (!skip) { p->stats.checked++; if (j->dummy) p->stats.dummy++; }
        j->verified = ok;
        j->state = JOB_SENT;
        pthread_mutex_unlock(&p->mutex);
        if (push) zmq_send(push, &j, sizeof j, 0);   /* the loop frees it */
        pthread_mutex_lock(&p->mutex);
    }
    pthread_mutex_unlock(&p->mutex);
    if (push) zmq_close(push);
    return NULL;
}

/* --- life cycle --- */

passwd_t *passwd_new(void *zmq_context, loop_t *loop, const passwd_options_t *o) {
    if (sodium_init() < 0) { errno = ENOSYS; return NULL; }
    passwd_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    if (o) p->opt = *o; else passwd_options_init(&p->opt);
    if (p->opt.threads < 1) p->opt.threads = 1;
    if (p->opt.threads > PASSWD_MAX_THREADS) p->opt.threads = PASSWD_MAX_THREADS;
    if (p->opt.max_pending < 1) p->opt.max_pending = 1;
    p->loop = loop;
    p->ctx = zmq_context;
    snprintf(p->endpoint, sizeof p->endpoint, "inproc://pseud-passwd-%p", (void *)p);
    unsigned char secret[32];
    randombytes_buf(secret, sizeof secret);
    int rc = crypto_pwhash_str(p->dummy, (const char *)secret, sizeof secret,
                               crypto_pwhash_OPSLIMIT_INTERACTIVE,
                               crypto_pwhash_MEMLIMIT_INTERACTIVE);
    sodium_memzero(secret, sizeof secret);
    if (rc != 0) { free(p); errno = ENOMEM; return NULL; }
    pthread_mutex_init(&p->mutex, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->pull = zmq_socket(zmq_context, ZMQ_PULL);
    int linger = 0;
    if (!p->pull || zmq_setsockopt(p->pull, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_bind(p->pull, p->endpoint) < 0 || loop_add_socket(loop, p->pull, s_on_results, p) < 0) {
        int e = errno;
        if (p->pull) zmq_close(p->pull);
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->mutex);
        free(p);
        errno = e;
        return NULL;
    }
    for (int i = 0; i < p->opt.threads; i++) {
        if (pthread_create(&p->threads[i], NULL, s_worker, p) != 0) break;
        p->nthreads++;
    }
    if (p->nthreads == 0) { passwd_destroy(&p); errno = EAGAIN; return NULL; }
    return p;
}

void passwd_destroy(passwd_t **pp) {
    if (!pp || !*pp) return;
    passwd_t *p = *pp;
    *pp = NULL;
    pthread_mutex_lock(&p->mutex);
    p->stopping = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    while (p->all) {
        job_t *j = p->all;
        if (j->timer) loop_cancel_timer(p->loop, j->timer);
        passwd_done_fn done = j->cancelled ? NULL : j->done;
        void *ctx = j->ctx;
        s_job_free(p, j);
        if (done) done(ctx, -1);
    }
    loop_remove_socket(p->loop, p->pull);
    zmq_close(p->pull);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mutex);
    sodium_memzero(p->dummy, sizeof p->dummy);
    free(p);
}

void *passwd_check(passwd_t *p, const char *address, const char *hash,
                   const char *password, size_t password_len,
                   passwd_done_fn done, void *ctx) {
    if (password_len > PASSWD_MAX_PASSWORD || (hash && strlen(hash) >= crypto_pwhash_STRBYTES)) {
        errno = EINVAL;
        return NULL;
    }
    if (!address) address = "";
    address_entry_t *a = s_address(p, address, 1);
    /* one address may hold half the slots: a flood from one place leaves
     * room for logins from elsewhere */
    size_t per_address = p->opt.max_pending > 1 ? p->opt.max_pending / 2 : 1;
    if (p->pending >= p->opt.max_pending || (a && a->pending >= per_address)) {
        p->stats.refused_busy++;
        errno = EAGAIN;
        return NULL;
    }
    job_t *j = calloc(1, sizeof *j + password_len + 1);
    if (!j) { errno = ENOMEM; return NULL; }
    j->pool = p;
    j->done = done;
    j->ctx = ctx;
    j->dummy = hash == NULL;
    if (hash) snprintf(j->hash, sizeof j->hash, "%s", hash);
    snprintf(j->address, sizeof j->address, "%s", address);
    memcpy(j->password, password, password_len);
    j->password_len = password_len;
    j->all_next = p->all;
    if (p->all) p->all->all_prev = j;
    p->all = j;
    p->pending++;
    if (a) a->pending++;
    pthread_mutex_lock(&p->mutex);
    j->state = JOB_QUEUED;
    if (p->tail) p->tail->next = j; else p->head = j;
    p->tail = j;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    return j;
}

void passwd_cancel(passwd_t *p, void *handle) {
    job_t *j = handle;
    if (!j) return;
    pthread_mutex_lock(&p->mutex);
    j->cancelled = 1;
    int delayed = j->state == JOB_DELAYED;
    pthread_mutex_unlock(&p->mutex);
    if (delayed) {                           /* only the loop thread touches it now */
        loop_cancel_timer(p->loop, j->timer);
        s_job_free(p, j);
    }
}

void passwd_get_stats(const passwd_t *p, passwd_stats_t *out) {
    pthread_mutex_lock((pthread_mutex_t *)&p->mutex);
    *out = p->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&p->mutex);
    out->pending = p->pending;
}
