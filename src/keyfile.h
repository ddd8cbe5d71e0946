/*
 * keyfile: the file and terminal work of `pseud-lua keygen` and `passwd`.
 * Key and credential files are replaced atomically (a crash leaves the old
 * file or the new one, never a partial one, and a symlink planted at the
 * target is replaced, never written through); a password is read from a
 * terminal with echo off. Stock Lua has neither a rename-safe write nor
 * termios; lpseud_keys.c exposes these to lua/pseud/tools.lua. No Lua here.
 */
#ifndef PSEUD_KEYFILE_H
#define PSEUD_KEYFILE_H

#include <stddef.h>
#include <sys/types.h>

#define KEYFILE_PASSWORD_MAX 4096   /* bytes in a password line; longer is refused, not cut */

enum keyfile_read {
    KEYFILE_READ_OK, KEYFILE_READ_EOF, KEYFILE_READ_LONG, KEYFILE_READ_ERROR, KEYFILE_READ_SIGNAL
};

/* Replace `path` with `text` (n bytes), permissions `mode`, through a temp
 * file beside it (O_EXCL | O_NOFOLLOW, 0600 from creation), fsync, rename,
 * fsync of the directory. Returns 0, or -1 and errno with the temp file
 * removed. */
int keyfile_replace(const char *path, const char *text, size_t n, mode_t mode);

/* One line of fd 0 into buf[cap] without its newline, nothing past it
 * consumed. With a `prompt` (fd 0 a terminal): the prompt on stderr, echo
 * off while reading, the terminal restored on every path, SIGINT/SIGTERM
 * ending the read and re-raised after. Returns an enum keyfile_read; on
 * KEYFILE_READ_ERROR, errno. The caller wipes buf. */
int keyfile_read_password(const char *prompt, char *buf, size_t cap, size_t *len);

#endif
