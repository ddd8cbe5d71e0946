/*
 * passwd: argon2 password checks off the loop thread (DESIGN.md section 4.1).
 *
 * A small pool of worker threads verifies passwords against argon2 hashes
 * (libsodium crypto_pwhash_str_verify). Requests wait in a bounded queue;
 * when every slot is taken a new check is refused at once (EAGAIN), so a
 * flood of logins costs the loop nothing. A result comes back to the loop
 * through an inproc PULL socket it watches, never by touching loop state
 * from a worker.
 *
 * A login that does not exist is verified against a dummy hash made with
 * the same parameters, so it costs what a wrong password costs. Failures
 * are counted per peer address: from the second on, each failed answer to
 * that address waits longer (doubling, capped). A success is answered at
 * once but does not clear the count (one good account must not reset the
 * backoff of guesses at another); 15 minutes without a failure do.
 * No Lua here.
 */
#ifndef PSEUD_PASSWD_H
#define PSEUD_PASSWD_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"

typedef struct passwd passwd_t;

/* Called on the loop thread with the outcome, after the address's backoff
 * delay: verified is 1 when the password matched a real hash, 0 when not,
 * -1 when the pool is destroyed first. */
typedef void (*passwd_done_fn)(void *ctx, int verified);

typedef struct passwd_options {
    int threads;                 /* worker threads (default 2) */
    size_t max_pending;          /* checks queued or running (default 32); one
                                    address may hold a quarter of them */
    double backoff_base;         /* seconds the second failure's answer waits (0.25) */
    double backoff_max;          /* cap of the delay, seconds (8) */
} passwd_options_t;

typedef struct passwd_stats {
    uint64_t checked;            /* checks a worker ran */
    uint64_t dummy;              /* of those, against the dummy hash (no such login) */
    uint64_t refused_busy;       /* refused at once: every slot taken */
    uint64_t delayed;            /* answers held back by the backoff */
    size_t pending;              /* queued or running now */
    size_t waiting;              /* answered, held back by the backoff now */
} passwd_stats_t;

void passwd_options_init(passwd_options_t *o);

/* Start the pool in `zmq_context`, watched by `loop`. Makes the dummy hash
 * first (one argon2 hash: about 0.1 s). NULL with errno. */
passwd_t *passwd_new(void *zmq_context, loop_t *loop, const passwd_options_t *o);
/* Stop the workers (a check in progress finishes first); every check not
 * answered yet is called back with verified = -1 (so its owner can free
 * what it holds), cancelled ones are not; takes NULL, clears *p. */
void passwd_destroy(passwd_t **p);

/* Verify `password` against `hash` (an argon2 string; NULL: the login does
 * not exist, check against the dummy and fail) for a peer at `address`
 * (the backoff key; NULL or "": none). Copies everything it needs; `done`
 * runs exactly once. Returns 0, or -1 with errno: EAGAIN (all slots, or the
 * address's share, taken), EINVAL (hash or password too long), ENOMEM. */
int passwd_check(passwd_t *p, const char *address, const char *hash,
                 const char *password, size_t password_len,
                 passwd_done_fn done, void *ctx);

void passwd_get_stats(const passwd_t *p, passwd_stats_t *out);

#endif
