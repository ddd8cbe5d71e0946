/*
 * passwd: argon2 checks on worker threads (see passwd.h).
 *
 * A job is queued (under the mutex) until a worker takes it, verified
 * outside the mutex, and its pointer sent back to the loop thread over an
 * inproc PUSH/PULL pair; only the loop thread frees it. An answer the
 * backoff holds waits on a loop timer and no longer takes a pool slot.
 * Every job is on the loop thread's `all` list, so destroy answers (-1) and
 * frees what is left once the workers have joined.
 */
#include "passwd.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sodium.h>
#include <zmq.h>

#define PASSWD_MAX_THREADS   16
#define PASSWD_MAX_PASSWORD  4096
#define PASSWD_MAX_ADDRESS   64          /* bytes of an address kept (IPv6 fits) */
#define PASSWD_ADDRESSES     1024        /* addresses whose failures are counted */
#define PASSWD_MAX_WAITING   4096        /* answers held back at once; past it, no delay */
#define PASSWD_FORGET_AFTER  900.0       /* seconds without a failure that clear a count */
#define PASSWD_NICE          19          /* worker threads yield the CPU to the loop */

typedef struct job {
    struct job *next;                /* queue order (under the mutex) */
    struct job *all_prev, *all_next; /* the loop thread's list of every job */
    passwd_t *pool;
    int dummy;                       /* no such login: verify against the dummy */
    int verified;                    /* set by the worker before it sends the job back */
    loop_timer_t *timer;             /* while the backoff holds its answer */
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
    double last_failure;             /* monotonic */
    size_t pending;                  /* its checks queued or running */
} address_entry_t;

struct passwd {
    passwd_options_t opt;
    loop_t *loop;
    void *pull;                      /* results, read by the loop thread */
    void *push[PASSWD_MAX_THREADS];  /* one per worker, made here, used there */
    pthread_t threads[PASSWD_MAX_THREADS];
    int nthreads;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    job_t *head, *tail;              /* the queue (mutex) */
    int stopping;                    /* (mutex) */
    job_t *all;                      /* every job (loop thread) */
    size_t pending, waiting;         /* jobs in the pool, answers held (loop thread) */
    passwd_stats_t stats;            /* checked, dummy: mutex; the rest: loop thread */
    char dummy[crypto_pwhash_STRBYTES];
    address_entry_t addresses[PASSWD_ADDRESSES];
    size_t naddresses;
};

typedef struct worker_arg { passwd_t *pool; void *push; } worker_arg_t;

void passwd_options_init(passwd_options_t *o) {
    o->threads = 2;
    o->max_pending = 32;
    o->backoff_base = 0.25;
    o->backoff_max = 8;
}

/* --- per-address failures (loop thread) --- */

/* The entry of `address` (already cut to PASSWD_MAX_ADDRESS - 1 bytes),
 * made when `create`; NULL for no address, or every entry busy. */
static address_entry_t *s_address(passwd_t *p, const char *address, int create) {
    if (!address[0]) return NULL;
    address_entry_t *oldest = NULL;
    for (size_t i = 0; i < p->naddresses; i++) {
        address_entry_t *a = &p->addresses[i];
        if (strcmp(a->address, address) == 0) return a;
        if (a->pending == 0 && (!oldest || a->last_failure < oldest->last_failure)) oldest = a;
    }
    if (!create) return NULL;
    address_entry_t *a = p->naddresses < PASSWD_ADDRESSES ? &p->addresses[p->naddresses++] : oldest;
    if (!a) return NULL;
    memset(a, 0, sizeof *a);
    memcpy(a->address, address, strlen(address) + 1);
    return a;
}

/* Seconds to hold a failed answer: from the second failure in a row, base,
 * 2 base, 4 base... up to max. A success is never held. */
static double s_backoff(passwd_t *p, address_entry_t *a, int verified) {
    if (!a || verified) return 0;
    double now = loop_now();
    if (now - a->last_failure > PASSWD_FORGET_AFTER) a->failures = 0;
    a->last_failure = now;
    if (++a->failures < 2) return 0;
    double delay = p->opt.backoff_base;
    for (unsigned i = 2; i < a->failures && delay < p->opt.backoff_max; i++) delay *= 2;
    return delay > p->opt.backoff_max ? p->opt.backoff_max : delay;
}

/* --- jobs (loop thread) --- */

static void s_job_free(passwd_t *p, job_t *j) {
    if (j->all_prev) j->all_prev->all_next = j->all_next; else p->all = j->all_next;
    if (j->all_next) j->all_next->all_prev = j->all_prev;
    sodium_memzero(j->password, j->password_len);
    free(j);
}

/* A job leaves the pool (its worker is done): the slots it held free up. */
static void s_leave_pool(passwd_t *p, job_t *j) {
    address_entry_t *a = s_address(p, j->address, 0);
    if (a && a->pending > 0) a->pending--;
    p->pending--;
}

static void s_answer(loop_t *loop, loop_timer_t *t, void *arg) {
    (void)loop;
    job_t *j = arg;
    passwd_t *p = j->pool;
    if (t) { j->timer = NULL; p->waiting--; }
    passwd_done_fn done = j->done;
    void *ctx = j->ctx;
    int verified = j->verified;
    s_job_free(p, j);                        /* before the callback: it may check again */
    done(ctx, verified);
}

static void s_on_results(loop_t *loop, void *socket, void *arg) {
    (void)loop;
    passwd_t *p = arg;
    for (int i = 0; i < 64; i++) {
        job_t *j;
        if (zmq_recv(socket, &j, sizeof j, ZMQ_DONTWAIT) != (int)sizeof j) break;
        s_leave_pool(p, j);
        double delay = s_backoff(p, s_address(p, j->address, 1), j->verified);
        if (delay > 0 && p->waiting < PASSWD_MAX_WAITING &&
            (j->timer = loop_add_timer(p->loop, delay, s_answer, j))) {
            p->waiting++;
            p->stats.delayed++;
            continue;
        }
        s_answer(p->loop, NULL, j);
    }
}

/* --- workers --- */

static void *s_worker(void *arg) {
    worker_arg_t w = *(worker_arg_t *)arg;
    passwd_t *p = w.pool;
    free(arg);
    /* signals are the loop thread's (its poll must see EINTR); argon2 is
     * meant to be slow, so on a busy machine the loop goes first */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), PASSWD_NICE);
    pthread_mutex_lock(&p->mutex);
    for (;;) {
        while (!p->stopping && !p->head) pthread_cond_wait(&p->wake, &p->mutex);
        if (p->stopping) break;
        job_t *j = p->head;
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        pthread_mutex_unlock(&p->mutex);
        /* the dummy is checked all the same: no such login costs what a wrong password costs */
        int ok = crypto_pwhash_str_verify(j->dummy ? p->dummy : j->hash, j->password,
                                          j->password_len) == 0 && !j->dummy;
        sodium_memzero(j->password, j->password_len);
        pthread_mutex_lock(&p->mutex);
        p->stats.checked++;
        if (j->dummy) p->stats.dummy++;
        j->verified = ok;
        pthread_mutex_unlock(&p->mutex);
        zmq_send(w.push, &j, sizeof j, 0);   /* no high-water mark: never blocks */
        pthread_mutex_lock(&p->mutex);
    }
    pthread_mutex_unlock(&p->mutex);
    return NULL;
}

/* --- life cycle --- */

static int s_no_hwm(void *socket, int option) {
    int zero = 0;
    return zmq_setsockopt(socket, option, &zero, sizeof zero);
}

passwd_t *passwd_new(void *zmq_context, loop_t *loop, const passwd_options_t *o) {
    if (sodium_init() < 0) { errno = ENOSYS; return NULL; }
    passwd_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    if (o) p->opt = *o; else passwd_options_init(&p->opt);
    if (p->opt.threads < 1) p->opt.threads = 1;
    if (p->opt.threads > PASSWD_MAX_THREADS) p->opt.threads = PASSWD_MAX_THREADS;
    if (p->opt.max_pending < 1) p->opt.max_pending = 1;
    p->loop = loop;
    unsigned char secret[32];
    randombytes_buf(secret, sizeof secret);
    int rc = crypto_pwhash_str(p->dummy, (const char *)secret, sizeof secret,
                               crypto_pwhash_OPSLIMIT_INTERACTIVE,
                               crypto_pwhash_MEMLIMIT_INTERACTIVE);
    sodium_memzero(secret, sizeof secret);
    if (rc != 0) { free(p); errno = ENOMEM; return NULL; }
    pthread_mutex_init(&p->mutex, NULL);
    pthread_cond_init(&p->wake, NULL);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "inproc://pseud-passwd-%p", (void *)p);
    p->pull = zmq_socket(zmq_context, ZMQ_PULL);
    int ok = p->pull && s_no_hwm(p->pull, ZMQ_RCVHWM) == 0 && zmq_bind(p->pull, endpoint) == 0;
    for (int i = 0; ok && i < p->opt.threads; i++) {
        p->push[i] = zmq_socket(zmq_context, ZMQ_PUSH);
        ok = p->push[i] && s_no_hwm(p->push[i], ZMQ_SNDHWM) == 0 &&
             zmq_connect(p->push[i], endpoint) == 0;
    }
    ok = ok && loop_add_socket(loop, p->pull, s_on_results, p) == 0;
    for (int i = 0; ok && i < p->opt.threads; i++) {
        worker_arg_t *w = malloc(sizeof *w);
        if (w) *w = (worker_arg_t){ p, p->push[i] };
        if (!w || pthread_create(&p->threads[i], NULL, s_worker, w) != 0) { free(w); break; }
        p->nthreads++;
    }
    if (!ok || p->nthreads == 0) {
        int e = ok ? EAGAIN : errno;
        if (ok) loop_remove_socket(loop, p->pull);
        passwd_destroy(&p);
        errno = e;
        return NULL;
    }
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
    while (p->all) {                         /* queued, sent back unread, or held */
        job_t *j = p->all;
        if (j->timer) loop_cancel_timer(p->loop, j->timer);
        j->timer = NULL;
        j->verified = -1;
        s_answer(p->loop, NULL, j);
    }
    if (p->nthreads > 0) loop_remove_socket(p->loop, p->pull);
    for (int i = 0; i < PASSWD_MAX_THREADS; i++) if (p->push[i]) zmq_close(p->push[i]);
    if (p->pull) zmq_close(p->pull);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mutex);
    sodium_memzero(p->dummy, sizeof p->dummy);
    free(p);
}

int passwd_check(passwd_t *p, const char *address, const char *hash,
                 const char *password, size_t password_len,
                 passwd_done_fn done, void *ctx) {
    if (password_len > PASSWD_MAX_PASSWORD || (hash && strlen(hash) >= crypto_pwhash_STRBYTES)) {
        errno = EINVAL;
        return -1;
    }
    char key[PASSWD_MAX_ADDRESS];
    snprintf(key, sizeof key, "%s", address ? address : "");   /* cut once: the key is this */
    address_entry_t *a = s_address(p, key, 1);
    /* one address may hold a quarter of the slots: a flood from one place
     * leaves room for logins from elsewhere */
    size_t share = p->opt.max_pending >= 4 ? p->opt.max_pending / 4 : 1;
    if (p->pending >= p->opt.max_pending || (a && a->pending >= share)) {
        p->stats.refused_busy++;
        errno = EAGAIN;
        return -1;
    }
    job_t *j = calloc(1, sizeof *j + password_len + 1);
    if (!j) { errno = ENOMEM; return -1; }
    j->pool = p;
    j->done = done;
    j->ctx = ctx;
    j->dummy = hash == NULL;
    if (hash) memcpy(j->hash, hash, strlen(hash) + 1);
    memcpy(j->address, key, sizeof key);
    memcpy(j->password, password, password_len);
    j->password_len = password_len;
    j->all_next = p->all;
    if (p->all) p->all->all_prev = j;
    p->all = j;
    p->pending++;
    if (a) a->pending++;
    pthread_mutex_lock(&p->mutex);
    if (p->tail) p->tail->next = j; else p->head = j;
    p->tail = j;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    return 0;
}

void passwd_get_stats(const passwd_t *p, passwd_stats_t *out) {
    pthread_mutex_lock((pthread_mutex_t *)&p->mutex);
    *out = p->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&p->mutex);
    out->pending = p->pending;
    out->waiting = p->waiting;
}
