#!/usr/bin/python3
"""slowpeer: the slow consumer of scripts/slowpeer (a benchmark, not a test;
the probe beside it is bench_load --interval 20).

  consumer ENDPOINT SECONDS SIZE  a slow consumer: keeps echo(bin SIZE) calls
                                  coming as fast as the socket takes them,
                                  reads 100 replies per 0.2 s; then reads
                                  everything left; prints OK / BusyError /
                                  other / missing counts.

Raw pseud v1 frames over python3-zmq and python3-msgpack.
"""

import json
import sys
import time
import uuid

import msgpack
import zmq

WORK, OK, ERROR = 0x03, 0x01, 0x10
SERVICE = b'bench'


def sock(endpoint, rcvhwm=None):
    s = zmq.Context.instance().socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.ROUTER_MANDATORY, 1)
    s.setsockopt(zmq.PROBE_ROUTER, 1)
    if rcvhwm:
        s.setsockopt(zmq.RCVHWM, rcvhwm)
    s.connect(endpoint)
    return s


def work(s, name, args):
    u = uuid.uuid4().bytes
    s.send_multipart([SERVICE, b'', b'v1', u, bytes([WORK]),
                      msgpack.packb([name, args, {}], use_bin_type=True)], zmq.DONTWAIT)
    return u


def reply(s, timeout_ms):
    while s.poll(timeout_ms):
        f = s.recv_multipart()
        if len(f) == 6:
            return f[3], f[4][0], f[5]
        timeout_ms = 0
    return None


def routable(s, deadline):
    while time.monotonic() < deadline:
        try:
            u = work(s, 'hello', ['warm up'])
        except zmq.ZMQError:
            time.sleep(0.01)
            continue
        while True:
            r = reply(s, 1000)
            if r is None or r[0] == u:
                break
        if r is not None:
            return
    raise SystemExit('slowpeer: server not reachable')


def consumer(endpoint, seconds, size):
    s = sock(endpoint, rcvhwm=50)
    routable(s, time.monotonic() + 10)
    payload = [b'\0' * size]
    sent, got, counts = set(), set(), {'OK': 0, 'BusyError': 0, 'other': 0}
    end = time.monotonic() + seconds

    def take(timeout_ms):
        r = reply(s, timeout_ms)
        if r is None or r[0] in got:
            return r
        got.add(r[0])
        if r[1] == OK:
            counts['OK'] += 1
        else:
            v = msgpack.unpackb(r[2], raw=False)
            counts['BusyError' if r[1] == ERROR and v[0] == 'BusyError' else 'other'] += 1
        return r

    while time.monotonic() < end:
        for _ in range(500):
            try:
                sent.add(work(s, 'echo', payload))
            except zmq.Again:
                break
        for _ in range(100):
            if take(0) is None:
                break
        time.sleep(0.2)
    drain_end = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < drain_end:
        if take(2000) is None:
            break
    counts['sent'] = len(sent)
    counts['missing'] = len(sent - got)
    print(json.dumps(counts))


if __name__ == '__main__':
    cmd = sys.argv[1]
    if cmd == 'consumer':
        consumer(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
