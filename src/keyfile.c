/*
 * keyfile: atomic replacement of key and credential files, and the no-echo
 * password prompt (see keyfile.h).
 */
#define _GNU_SOURCE                 /* ppoll, for the password prompt */
#include "keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "loop.h"

/* Write all of text: write(2) may be short or interrupted. 0, or -1 and errno. */
static int s_write_all(int fd, const char *text, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, text, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        if (w == 0) { errno = EIO; return -1; }
        text += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync a directory so that a rename in it survives a crash. */
static int s_sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    if (rc < 0 && errno == EINVAL) rc = 0;   /* a file system that cannot sync directories */
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* Open a new temp file for `path` in its directory, `.NAME.tmp.XXXXXX` with a
 * random suffix: O_EXCL | O_NOFOLLOW, so never an existing file or a link an
 * attacker planted, and 0600 from creation. Fills tmp (size PATH_MAX) and
 * dir; returns the fd, or -1 and errno. */
static int s_open_temp(const char *path, char *tmp, char *dir) {
    static const char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    int prefix = slash ? (int)(slash - path) + 1 : 0;          /* "dir/" or "" */
    int n = !slash ? snprintf(dir, PATH_MAX, ".")
          : slash == path ? snprintf(dir, PATH_MAX, "/")
          : snprintf(dir, PATH_MAX, "%.*s", prefix - 1, path);
    int t = snprintf(tmp, PATH_MAX, "%.*s.%s.tmp.XXXXXX", prefix, path, base);
    if (n < 0 || n >= PATH_MAX || t < 0 || t >= PATH_MAX) { errno = ENAMETOOLONG; return -1; }
    for (int tries = 0; tries < 16; tries++) {
        unsigned char r[6];
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return -1;
        for (int i = 0; i < 6; i++) tmp[t - 6 + i] = digits[r[i] % (sizeof digits - 1)];
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;                                                  /* errno = EEXIST */
}

/* A crash at any point leaves the old file or the new one: rename replaces a
 * symlink at path itself, never writes through it. */
int keyfile_replace(const char *path, const char *text, size_t n, mode_t mode) {
    char tmp[PATH_MAX], dir[PATH_MAX];
    int fd = s_open_temp(path, tmp, dir);
    if (fd < 0) return -1;
    /* Keep the owner of the file replaced, as a rewrite in place did (root
     * editing a server's credentials must not take them from the server);
     * best effort: only root may give a file away. */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) &&
        (st.st_uid != geteuid() || st.st_gid != getegid()) &&
        fchown(fd, st.st_uid, st.st_gid) < 0) { /* keep ours */ }
    /* fchmod: the mode asked for, whatever the umask */
    if (fchmod(fd, mode) < 0 || s_write_all(fd, text, n) < 0 || fsync(fd) < 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    if (close(fd) < 0 || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return s_sync_dir(dir);   /* replaced; a failure here means "maybe not on disk yet" */
}

/* One line of fd 0 into buf[cap], newline dropped; unbuffered, so nothing
 * past the line is consumed. With `wait_mask`, each wait for input is a
 * ppoll under that mask: SIGINT/SIGTERM, blocked the rest of the time, can
 * only arrive there, so one sent at any moment ends the wait (a flag checked
 * before a plain read would miss one that came just before it). */
static int s_read_line(const sigset_t *wait_mask, char *buf, size_t cap, size_t *len) {
    size_t n = 0;
    for (;;) {
        if (wait_mask) {
            struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
            if (ppoll(&p, 1, NULL, wait_mask) < 0) {
                if (errno != EINTR) return KEYFILE_READ_ERROR;
                if (loop_signal_received()) return KEYFILE_READ_SIGNAL;
                continue;
            }
        }
        char c;
        ssize_t r = read(STDIN_FILENO, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return KEYFILE_READ_ERROR;
        if (r == 0 && n == 0) return KEYFILE_READ_EOF;
        if (r == 0 || c == '\n') break;
        if (n == cap) return KEYFILE_READ_LONG;
        buf[n++] = c;
    }
    *len = n;
    return KEYFILE_READ_OK;
}

/* Read a line from fd 0 with echo off, fd 0 being a terminal. SIGINT and
 * SIGTERM end the read (the loop's flag handler) so that the terminal is
 * restored before they take effect: re-raised under the handlers there
 * were before. */
static int s_read_quietly(const char *prompt, char *buf, size_t cap, size_t *len) {
    struct termios saved, quiet;
    struct sigaction old_int, old_term;
    sigset_t stop, old_mask, wait_mask;
    if (loop_signal_received()) return KEYFILE_READ_SIGNAL;
    if (tcgetattr(STDIN_FILENO, &saved) < 0) return KEYFILE_READ_ERROR;
    quiet = saved;
    quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, &old_mask);
    wait_mask = old_mask;
    sigdelset(&wait_mask, SIGINT);
    sigdelset(&wait_mask, SIGTERM);
    sigaction(SIGINT, NULL, &old_int);
    sigaction(SIGTERM, NULL, &old_term);
    loop_install_signal_handlers();
    int rc = KEYFILE_READ_ERROR;
    /* TCSAFLUSH drops what was typed (and echoed) before the prompt */
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0) {
        fputs(prompt, stderr);
        fflush(stderr);
        rc = s_read_line(&wait_mask, buf, cap, len);
        int e = errno;
        /* flush again: the rest of a refused line must not reach the shell */
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        fputc('\n', stderr);                   /* the user's Enter was not echoed */
        errno = e;
    }
    int e = errno;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);  /* one still pending goes to the old handler */
    int sig = loop_signal_received();
    if (sig) {
        loop_clear_signal();
        raise(sig);                            /* default: dies now, terminal restored */
        rc = KEYFILE_READ_SIGNAL;
    }
    errno = e;
    return rc;
}

int keyfile_read_password(const char *prompt, char *buf, size_t cap, size_t *len) {
    return prompt ? s_read_quietly(prompt, buf, cap, len) : s_read_line(NULL, buf, cap, len);
}
