"""ptyrun: run a command on a pseudo-terminal, type one answer at its prompt,
and print what the terminal showed (the command's stdout and stderr, and any
echo of what was typed), then `echo on|off` (the terminal's ECHO flag after
the command ended) and `exit N` (its exit status, 128 + n after signal n).

usage: ptyrun.py PROMPT ANSWER SECONDS ARGV...

ANSWER is typed once PROMPT shows, or after SECONDS without it (a command
that never prompts still gets it, and its echo shows). Bounded: the command
is killed 2 x SECONDS after its start.
"""
import os
import pty
import select
import signal
import sys
import termios
import time


def main():
    prompt, answer = sys.argv[1].encode(), sys.argv[2].encode()
    seconds = float(sys.argv[3])
    argv = sys.argv[4:]
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    start = time.monotonic()
    out, sent = b'', False
    while True:
        elapsed = time.monotonic() - start
        if not sent and (prompt in out or elapsed >= seconds):
            os.write(fd, answer)
            sent = True
        if elapsed >= 2 * seconds:
            os.kill(pid, signal.SIGKILL)
            break
        wait = (2 * seconds if sent else seconds) - elapsed
        ready, _, _ = select.select([fd], [], [], max(wait, 0))
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:            # EIO: the command is gone, and its terminal
            data = b''
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    echo = termios.tcgetattr(fd)[3] & termios.ECHO   # the master sees the slave's modes
    code = os.waitstatus_to_exitcode(status)
    sys.stdout.buffer.write(out)
    sys.stdout.write('\necho %s\nexit %d\n' % ('on' if echo else 'off', code if code >= 0 else 128 - code))


main()
