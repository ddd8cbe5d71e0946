#!/usr/bin/python3
"""scrapers: hostile clients of the metrics endpoint, for metrics_spec.lua.

Each subcommand prints one JSON object and exits 0; every wait is bounded.

  fill  HOST PORT LIMIT PER_ADDRESS   LIMIT connections that never send a
        byte, PER_ADDRESS from each of 127.0.0.2, .3, ... (the endpoint's
        own bounds), then one scrape more (answered or not: "full"); all of
        them shut down and closed at once, then a scrape every 0.2 s until one is answered or 10 s
        passed ("after": the seconds it took, or null).
  hold  HOST PORT COUNT PER_ADDRESS PID [PACE]   COUNT connections, PACE
        seconds apart, that send GET /metrics and never read; the server's
        RSS (KiB) before them, and once it stopped growing.
"""

import json
import socket
import sys
import time


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def cmd_hold(host, port, count, per_address, pid, pace):
    """COUNT connections (PER_ADDRESS from each of 127.0.0.2, .3, ...), PACE
    seconds apart, send GET /metrics and never read; the server's RSS
    before, and once it has not grown for 0.5 s (or after 10 s), after."""
    before = rss_kib(pid)
    held = []
    for i in range(count):
        if i and pace:
            time.sleep(pace)                        # the attack's shape: scrapes spread out
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(('127.0.0.%d' % (2 + i // per_address), 0))
        s.connect((host, port))
        s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n')
        held.append(s)
    t0 = time.monotonic()
    last, since = rss_kib(pid), time.monotonic()
    while time.monotonic() - t0 < 10 and time.monotonic() - since < 0.5:
        time.sleep(0.05)
        now = rss_kib(pid)
        if now > last:
            last, since = now, time.monotonic()
    for s in held:
        s.close()
    print(json.dumps({'before': before, 'after': last}, sort_keys=True), flush=True)
    print('done', flush=True)


def scrape(host, port, wait):
    """The status line of GET /metrics, or None without an answer within `wait` s."""
    s = socket.socket()
    s.settimeout(wait)
    try:
        s.connect((host, port))
        s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        data = b''
        while b'\r\n' not in data:
            part = s.recv(4096)
            if not part:
                break
            data += part
        return data.split(b'\r\n', 1)[0].decode('latin-1') if data else None
    except OSError:
        return None
    finally:
        s.close()


def cmd_fill(host, port, limit, per_address):
    held = []
    for i in range(limit):
        s = socket.socket()
        s.bind(('127.0.0.%d' % (2 + i // per_address), 0))
        s.connect((host, port))
        held.append(s)
    full = scrape(host, port, 2.0)
    for s in held:
        s.shutdown(socket.SHUT_RDWR)
    for s in held:
        s.close()
    t0 = time.monotonic()
    after = None
    while time.monotonic() - t0 < 10:
        if scrape(host, port, 0.2):
            after = round(time.monotonic() - t0, 3)
            break
    print(json.dumps({'full': full, 'after': after}, sort_keys=True), flush=True)
    print('done', flush=True)


def main(argv):
    if len(argv) in (6, 7) and argv[0] == 'hold':
        cmd_hold(argv[1], int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5]),
                 float(argv[6]) if len(argv) == 7 else 0)
        return 0
    if len(argv) == 5 and argv[0] == 'fill':
        cmd_fill(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
