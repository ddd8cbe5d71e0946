#!/usr/bin/python3
"""backpressure: hostile and slow peers for backpressure_spec.lua.

Each subcommand drives spec/servers/backpressure.lua through raw pseud v1
frames (python3-zmq, python3-msgpack), prints one JSON object and exits 0;
every wait is bounded by a deadline.

  budget   ENDPOINT BUDGET EXTRA   two hold(pad) calls whose charges (WORK
           bodies plus WORK_COST each) add up to BUDGET + EXTRA bytes, then
           release() from another peer.
  slow     ENDPOINT PID CALLS SIZE  echo(bin SIZE) CALLS times, sent as fast as
           the socket takes them while replies are read 200 at a time with
           pauses; every call's one outcome, and the server's peak RSS.
  names    ENDPOINT PID COUNT SIZE   COUNT WORKs with a SIZE-byte unknown name
           from a peer that never reads; then a hello from another peer.
  churn    ENDPOINT COUNT            COUNT peers connect, call hello, close;
           then the directory's size, awaited from another peer.
  crowd    ENDPOINT COUNT            COUNT peers connected at once, each calls
           hello twice; the directory's size in between.
  tiny     ENDPOINT PID COUNT        COUNT hold('') calls (a few bytes each)
           from one peer, then release() until each has an outcome; the
           outcomes and the server's RSS.
  nowork   ENDPOINT PID COUNT KIND   COUNT messages that are not WORK (KIND
           hello: HELLO; bad: a WORK with a bad version, answered
           ProtocolError) from a peer that never reads; then a hello
           from another peer, and the server's RSS.
  fat      ENDPOINT PID URL COUNT SIZE   COUNT fat(SIZE, 0.2) calls (a few
           bytes each, for a SIZE-byte reply 0.2 s later: all are in before
           any reply exists) from a peer that never reads, until
           the server's metrics at URL count each answered, refused or
           waiting its turn; the server's peak RSS, then a hello from
           another peer.
  nested   ENDPOINT SIZE            fat(SIZE) read whole, then roundtrip(7):
           the server calls cb(7) back on this peer, whose cb calls the
           server's echo(7) before it answers.
  turns    ENDPOINT URL CALLS       CALLS hold() calls from one peer: how many
           run and wait (the metrics at URL), then after each release().
  vanish   ENDPOINT PID URL ROUNDS CALLS SIZE   ROUNDS times, a new peer
           sends CALLS hold(bin SIZE) calls, waits until the metrics at URL
           count them all in flight, and closes its socket; the rounds
           after which the server counted none in flight (within 10 s;
           the first that did not ends them), the longest it took, the
           metrics' count of errors and of calls stopped, the server's
           peak RSS, and a hello from another peer.
  spawned  ENDPOINT URL      hold_spawned() from a peer that closes once
           the metrics at URL count it in flight; once they count none,
           release(), then spawned_done() until it is 1 (10 s at most).
  gone     ENDPOINT URL NAME [AFTER...]   NAME() from a peer that closes
           once the metrics at URL count it in flight; whether they then
           count none (10 s at most), how long that took, and the outcome
           and value of each AFTER() called then.
  late     ENDPOINT URL        block(0.5) from one peer, which blocks the
           server's loop; once it does, another peer sends spin_forever()
           and closes: its WORK is read after its close. Whether the metrics
           at URL then count nothing in flight (10 s at most), how long
           that took, and the time-limit hits and calls stopped counted.
  settle   PID KIB SECONDS          the server's RSS, looked at every 0.1 s
           until it is at most KIB or SECONDS passed: the last figure and
           when it was read.
"""

import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid

import msgpack
import zmq

WORK, OK, ERROR = 0x03, 0x01, 0x10
SERVICE = b'service'
CTX = zmq.Context.instance()
WORK_COST = 1024                 # what the host charges a call beside its body (endpoint.c)


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + '\n')
    sys.stdout.flush()
    return 0


def peer(endpoint, identity=None, rcvhwm=None):
    s = CTX.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.ROUTER_MANDATORY, 1)
    s.setsockopt(zmq.PROBE_ROUTER, 1)
    if identity:
        s.setsockopt(zmq.ROUTING_ID, identity)
    if rcvhwm is not None:
        s.setsockopt(zmq.RCVHWM, rcvhwm)
        s.setsockopt(zmq.RCVBUF, 65536)
    s.connect(endpoint)
    return s


def body(name, args):
    return msgpack.packb([name, args, {}], use_bin_type=True)


def send(s, b, deadline):
    """Send WORK `b` once the server is routable; returns its uuid."""
    u = uuid.uuid4().bytes
    while True:
        try:
            s.send_multipart([SERVICE, b'', b'v1', u, bytes([WORK]), b], zmq.DONTWAIT)
            return u
        except zmq.Again:
            if time.monotonic() > deadline:
                raise
            s.poll(10, zmq.POLLOUT)
        except zmq.ZMQError as e:            # EHOSTUNREACH: not connected yet
            if e.errno != zmq.EHOSTUNREACH or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def recv(s, timeout):
    """One reply: (uuid, type, decoded body), or None after `timeout` s."""
    if not s.poll(int(timeout * 1000)):
        return None
    while True:
        f = s.recv_multipart()
        if len(f) == 6:
            return f[3], f[4][0], msgpack.unpackb(f[5], raw=False)
        # the server's probe (routing id + empty): not a reply


def outcome(t, v):
    return 'OK' if t == OK else (v[0] if t == ERROR and isinstance(v, list) else 'type %d' % t)


def call(endpoint, name, args, timeout=10):
    s = peer(endpoint)
    try:
        u = send(s, body(name, args), time.monotonic() + timeout)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = recv(s, end - time.monotonic())
            if r and r[0] == u:
                return outcome(r[1], r[2]), r[2]
        return 'timeout', None
    finally:
        s.close()


def rss_kib(pid, field):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    return None


def cmd_budget(endpoint, budget, extra):
    s = peer(endpoint)
    deadline = time.monotonic() + 20
    first = body('hold', ['x' * 1000])
    # the second call fills the budget to BUDGET + EXTRA exactly (each call
    # is charged its body plus WORK_COST)
    fill = budget + extra - len(first) - 2 * WORK_COST
    pad = fill - len(body('hold', ['']))
    while len(body('hold', ['x' * pad])) > fill:
        pad -= 1
    second = body('hold', ['x' * pad])
    assert len(first) + len(second) + 2 * WORK_COST == budget + extra, (len(first), len(second))
    u1 = send(s, first, deadline)
    u2 = send(s, second, deadline)
    early = {}
    if extra > 0:                            # refused at once: wait for it before release
        r = recv(s, 10)
        if r:
            early[r[0]] = outcome(r[1], r[2])
    released = call(endpoint, 'release', [])[0]
    got = dict(early)
    while len(got) < 2 and time.monotonic() < deadline:
        r = recv(s, deadline - time.monotonic())
        if r is None:
            break
        got[r[0]] = outcome(r[1], r[2])
    s.close()
    return emit({'charged': len(first) + len(second) + 2 * WORK_COST, 'release': released,
                 'first': got.get(u1, 'timeout'), 'second': got.get(u2, 'timeout'),
                 'refused_before_release': sorted(early.values())})


def cmd_slow(endpoint, pid, calls, size):
    rss0 = rss_kib(pid, 'VmRSS')
    s = peer(endpoint, rcvhwm=50)
    payload = body('echo', [b'\x00' * size])
    start = time.monotonic()
    deadline = start + 120
    sent, outcomes, counts, dup = [], {}, {}, 0
    send(s, body('hello', ['warm up']), deadline)      # routable before the flood
    while recv(s, 10) is None and time.monotonic() < deadline:
        pass
    while (len(sent) < calls or len(outcomes) < len(sent)) and time.monotonic() < deadline:
        for _ in range(500):                 # a burst of calls, as fast as the socket takes them
            if len(sent) >= calls:
                break
            u = uuid.uuid4().bytes
            try:
                s.send_multipart([SERVICE, b'', b'v1', u, bytes([WORK]), payload], zmq.DONTWAIT)
            except zmq.Again:
                break
            sent.append(u)
        flooding = len(sent) < calls
        for _ in range(100 if flooding else 1000000):   # then only 100 replies, and a pause
            r = recv(s, 0 if flooding else min(5.0, max(0.0, deadline - time.monotonic())))
            if r is None:
                break
            if r[0] in outcomes:
                dup += 1
                continue
            o = outcome(r[1], r[2])
            outcomes[r[0]] = o
            counts[o] = counts.get(o, 0) + 1
        if flooding:
            time.sleep(0.2)
        elif len(outcomes) < len(sent) and r is None:
            break                            # nothing more for 5 s: the rest is lost
    s.close()
    missing = sum(1 for u in sent if u not in outcomes)
    return emit({'sent': len(sent), 'outcomes': counts, 'missing': missing, 'duplicates': dup,
                 'rss_start_kib': rss0, 'rss_peak_kib': rss_kib(pid, 'VmHWM'),
                 'seconds': round(time.monotonic() - start, 1)})


def cmd_names(endpoint, pid, count, size):
    rss0 = rss_kib(pid, 'VmRSS')
    s = peer(endpoint, rcvhwm=1)
    deadline = time.monotonic() + 60
    name = 'n' * size
    b = body(name, [])
    for _ in range(count):
        send(s, b, deadline)
    # another peer is served while this one reads nothing
    served = call(endpoint, 'hello', ['after'])
    peak = rss_kib(pid, 'VmHWM')
    s.close()
    return emit({'hello': served[1], 'rss_start_kib': rss0, 'rss_peak_kib': peak,
                 'sent_mib': count * len(b) // (1 << 20)})


def count_peers(endpoint):
    return call(endpoint, 'peer_count', [])[1]


def cmd_churn(endpoint, count):
    before = count_peers(endpoint)
    for i in range(count):
        o = call(endpoint, 'hello', ['churn %d' % i])
        if o[0] != 'OK':
            return emit({'error': 'call %d: %s' % (i, o)})
    # disconnects reach the server asynchronously: await the count, bounded
    end, after = time.monotonic() + 20, None
    while time.monotonic() < end:
        after = count_peers(endpoint)    # its own probe peer counts while it calls
        if after is not None and after <= before:
            break
        time.sleep(0.05)
    return emit({'before': before, 'after': after})


def cmd_crowd(endpoint, count):
    socks = [peer(endpoint, identity=b'crowd-%d' % i) for i in range(count)]
    deadline = time.monotonic() + 30
    first = []
    for s in socks:
        u = send(s, body('hello', ['one']), deadline)
        r = recv(s, 10)
        first.append(r is not None and r[0] == u and r[1] == OK)
    during = count_peers(endpoint)
    second = []
    for s in socks:
        u = send(s, body('hello', ['two']), deadline)
        r = recv(s, 10)
        second.append(r is not None and r[0] == u and r[1] == OK)
    for s in socks:
        s.close()
    return emit({'first_ok': sum(first), 'second_ok': sum(second), 'during': during})


def cmd_tiny(endpoint, pid, count):
    rss0 = rss_kib(pid, 'VmRSS')
    s = peer(endpoint)
    deadline = time.monotonic() + 60
    b = body('hold', [''])
    # what is refused comes back at once (read as it comes); the rest is
    # held until release()
    counts, seen, sent = {}, set(), []
    while len(sent) < count:
        sent.append(send(s, b, deadline))
        while len(sent) % 100 == 0:
            r = recv(s, 0)
            if r is None:
                break
            seen.add(r[0])
            o = outcome(r[1], r[2])
            counts[o] = counts.get(o, 0) + 1
    while True:
        r = recv(s, 1.0)
        if r is None:
            break
        seen.add(r[0])
        o = outcome(r[1], r[2])
        counts[o] = counts.get(o, 0) + 1
    held = rss_kib(pid, 'VmRSS')
    released = call(endpoint, 'release', [], timeout=30)[0]
    # max_peer_calls of them run at once: once their answers stop coming,
    # release the next ones
    while len(seen) < len(sent) and time.monotonic() < deadline:
        r = recv(s, 0.05)
        if r is None:
            if call(endpoint, 'holding', [])[1]:
                call(endpoint, 'release', [])
            continue
        seen.add(r[0])
        o = outcome(r[1], r[2])
        counts[o] = counts.get(o, 0) + 1
    s.close()
    return emit({'sent': len(sent), 'outcomes': counts, 'release': released,
                 'bytes': count * len(b), 'rss_start_kib': rss0, 'rss_held_kib': held,
                 'rss_peak_kib': rss_kib(pid, 'VmHWM')})


def cmd_nowork(endpoint, pid, count, kind):
    rss0 = rss_kib(pid, 'VmRSS')
    s = peer(endpoint)
    s.setsockopt(zmq.RCVHWM, 1)              # reads nothing (the kernel's buffer as it is)
    deadline = time.monotonic() + 15
    send(s, body('hello', ['warm up']), deadline)      # routable before the flood
    pad = b'p' * 200
    sent = 0
    while sent < count and time.monotonic() < deadline:
        u = uuid.uuid4().bytes
        if kind == 'hello':
            frames = [SERVICE, b'', b'v1', u, bytes([0x02]), msgpack.packb([pad, b'pw'])]
        else:
            frames = [SERVICE, b'', b'v9', u, bytes([WORK]), pad]
        try:
            s.send_multipart(frames, zmq.DONTWAIT)
            sent += 1
        except zmq.Again:
            s.poll(10, zmq.POLLOUT)
    time.sleep(1.0)
    served = call(endpoint, 'hello', ['after'])
    peak = rss_kib(pid, 'VmHWM')
    s.close()
    return emit({'sent': sent, 'hello': served[1], 'rss_start_kib': rss0, 'rss_peak_kib': peak})


def metric(url, name, *labels):
    """The sum of `name`'s samples carrying every label given."""
    total = 0.0
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            key, _, value = line.rpartition(' ')
            if key == name or (key.startswith(name + '{') and all(l in key for l in labels)):
                total += float(value)
    return total


def await_true(what, seconds=30):
    """Poll `what()` (a state only a scrape or a call shows) until true."""
    end = time.monotonic() + seconds
    while not what():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def cmd_fat(endpoint, pid, url, count, size):
    rss0 = rss_kib(pid, 'VmRSS')
    s = peer(endpoint, rcvhwm=1)
    deadline = time.monotonic() + 60
    b = body('fat', [size, 0.2])
    for _ in range(count):
        send(s, b, deadline)
    state = {}

    def settled():
        state['ok'] = metric(url, 'pseud_calls_total', 'name="fat"', 'outcome="ok"')
        state['busy'] = metric(url, 'pseud_calls_total', 'outcome="busy"')
        state['waiting'] = metric(url, 'pseud_calls_waiting')
        return state['ok'] + state['busy'] + state['waiting'] >= count
    state['settled'] = await_true(settled, 60)
    peak = rss_kib(pid, 'VmHWM')
    served = call(endpoint, 'hello', ['after'])
    s.close()
    # whole replies the kernel's socket buffers can take off the host's
    # hands (the host's send buffer grows to tcp_wmem's maximum; this
    # peer's receive buffer is 64 KiB, which the kernel doubles)
    with open('/proc/sys/net/ipv4/tcp_wmem') as f:
        wmem_max = int(f.read().split()[2])
    state.update({'hello': served[1], 'rss_start_kib': rss0, 'rss_peak_kib': peak,
                  'asked_mib': count * size // (1 << 20),
                  'kernel_replies': -(-(wmem_max + 2 * 65536) // size)})
    return emit(state)


def cmd_nested(endpoint, size):
    s = peer(endpoint, identity=b'nest')
    deadline = time.monotonic() + 20
    u = send(s, body('fat', [size, 0]), deadline)
    r = recv(s, 10)
    fat = outcome(r[1], r[2]) if r and r[0] == u and len(r[2]) == size else 'no reply'
    start = time.monotonic()
    u = send(s, body('roundtrip', [7]), deadline)
    cb, echo, result = None, None, ('timeout', None)
    while time.monotonic() < deadline:
        r = recv(s, deadline - time.monotonic())
        if r is None:
            break
        if r[1] == WORK and r[2][0] == 'cb':             # the server calls back
            cb = r[0]
            echo = send(s, body('echo', r[2][1]), deadline)
        elif r[0] == echo and cb:                        # our own call, inside cb
            s.send_multipart([SERVICE, b'', b'v1', cb, bytes([OK]), msgpack.packb(r[2])])
        elif r[0] == u:
            result = (outcome(r[1], r[2]), r[2])
            break
    s.close()
    return emit({'fat': fat, 'roundtrip': result[0], 'value': result[1],
                 'seconds': round(time.monotonic() - start, 2)})


def cmd_turns(endpoint, url, calls):
    s = peer(endpoint)
    deadline = time.monotonic() + 20
    sent = [send(s, body('hold', ['']), deadline) for _ in range(calls)]
    steps = []

    def look():
        return {'holding': call(endpoint, 'holding', [])[1],
                'waiting': int(metric(url, 'pseud_calls_waiting'))}
    answered = set()
    while len(answered) < calls and time.monotonic() < deadline:
        # settled: every call either runs (holds) or waits
        await_true(lambda: sum(look().values()) == calls - len(answered), 10)
        steps.append(look())
        if call(endpoint, 'release', [])[0] != 'OK':
            break
        before = len(answered)
        # a release lets every running hold answer
        while len(answered) < before + steps[-1]['holding']:
            r = recv(s, 10)
            if r is None:
                break
            if r[1] == OK and r[0] in sent:
                answered.add(r[0])
        if len(answered) == before:
            break
    s.close()
    return emit({'steps': steps, 'answered': len(answered)})


def cmd_vanish(endpoint, pid, url, rounds, calls, size):
    rss0 = rss_kib(pid, 'VmRSS')
    b = body('hold', [b'z' * size])
    stopped, slowest = 0, 0.0
    for _ in range(rounds):
        s = peer(endpoint)
        deadline = time.monotonic() + 20
        for _ in range(calls):
            send(s, b, deadline)
        running = await_true(lambda: metric(url, 'pseud_calls_in_flight') >= calls, 20)
        s.close()
        if not running:
            break
        start = time.monotonic()
        gone = await_true(lambda: metric(url, 'pseud_calls_in_flight') == 0, 10)
        slowest = max(slowest, time.monotonic() - start)
        if not gone:
            break
        stopped += 1
    peak = rss_kib(pid, 'VmHWM')
    served = call(endpoint, 'hello', ['after'])
    lost = metric(url, 'pseud_calls_total', 'name="hold"', 'outcome="error"')
    counted = metric(url, 'pseud_calls_stopped_total')
    return emit({'stopped': stopped, 'slowest': round(slowest, 2), 'errors': int(lost),
                 'counted_stopped': int(counted),
                 'hello': served[1], 'rss_start_kib': rss0, 'rss_peak_kib': peak})


def cmd_spawned(endpoint, url):
    s = peer(endpoint)
    send(s, body('hold_spawned', []), time.monotonic() + 10)
    running = await_true(lambda: metric(url, 'pseud_calls_in_flight') == 1, 10)
    s.close()
    stopped = running and await_true(lambda: metric(url, 'pseud_calls_in_flight') == 0, 10)
    released = call(endpoint, 'release', [])[0]
    done = await_true(lambda: call(endpoint, 'spawned_done', [])[1] == 1, 10)
    return emit({'running': running, 'stopped': stopped, 'release': released, 'spawned_done': done})


def cmd_gone(endpoint, url, name, after):
    s = peer(endpoint)
    send(s, body(name, []), time.monotonic() + 10)
    running = await_true(lambda: metric(url, 'pseud_calls_in_flight') == 1, 10)
    s.close()
    start = time.monotonic()
    stopped = running and await_true(lambda: metric(url, 'pseud_calls_in_flight') == 0, 10)
    seconds = time.monotonic() - start
    return emit({'running': running, 'stopped': stopped, 'seconds': round(seconds, 2),
                 'after': [list(call(endpoint, a, [])) for a in after]})


def cmd_late(endpoint, url):
    mark = tempfile.mktemp(prefix='pseud-block-')
    blocker = peer(endpoint)
    send(blocker, body('block', [0.5, mark]), time.monotonic() + 10)
    running = await_true(lambda: os.path.exists(mark), 10)  # the loop is blocked from now
    s = peer(endpoint)
    s.setsockopt(zmq.LINGER, 2000)                 # sent before the close takes it down
    send(s, body('spin_forever', []), time.monotonic() + 10)
    s.close()
    start = time.monotonic()
    blocked = recv(blocker, 10)
    settled = await_true(lambda: metric(url, 'pseud_calls_in_flight') == 0, 10)
    blocker.close()
    if running:
        os.unlink(mark)
    return emit({'running': running, 'blocked': blocked is not None and blocked[1] == OK,
                 'settled': settled, 'seconds': round(time.monotonic() - start, 2),
                 'time_hits': int(metric(url, 'pseud_limit_hits_total', 'limit="time"')),
                 'stopped': int(metric(url, 'pseud_calls_stopped_total'))})


def cmd_settle(pid, kib, seconds):
    start = time.monotonic()
    rss = rss_kib(pid, 'VmRSS')
    while rss > kib and time.monotonic() - start < seconds:
        time.sleep(0.1)
        rss = rss_kib(pid, 'VmRSS')
    return emit({'rss_kib': rss, 'seconds': round(time.monotonic() - start, 1)})


def main(argv):
    cmd, rest = argv[1], argv[2:]
    if cmd == 'fat':
        return cmd_fat(rest[0], int(rest[1]), rest[2], int(rest[3]), int(rest[4]))
    if cmd == 'nested':
        return cmd_nested(rest[0], int(rest[1]))
    if cmd == 'turns':
        return cmd_turns(rest[0], rest[1], int(rest[2]))
    if cmd == 'budget':
        return cmd_budget(rest[0], int(rest[1]), int(rest[2]))
    if cmd == 'slow':
        return cmd_slow(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
    if cmd == 'names':
        return cmd_names(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
    if cmd == 'churn':
        return cmd_churn(rest[0], int(rest[1]))
    if cmd == 'tiny':
        return cmd_tiny(rest[0], int(rest[1]), int(rest[2]))
    if cmd == 'nowork':
        return cmd_nowork(rest[0], int(rest[1]), int(rest[2]), rest[3])
    if cmd == 'late':
        return cmd_late(rest[0], rest[1])
    if cmd == 'gone':
        return cmd_gone(rest[0], rest[1], rest[2], rest[3:])
    if cmd == 'spawned':
        return cmd_spawned(rest[0], rest[1])
    if cmd == 'vanish':
        return cmd_vanish(rest[0], int(rest[1]), rest[2], int(rest[3]), int(rest[4]), int(rest[5]))
    if cmd == 'settle':
        return cmd_settle(int(rest[0]), int(rest[1]), float(rest[2]))
    if cmd == 'crowd':
        return cmd_crowd(rest[0], int(rest[1]))
    sys.stderr.write(__doc__)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
