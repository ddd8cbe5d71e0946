#!/usr/bin/python3
"""idlepeers: N connected, idle pseud peers for scripts/idlepeers (a benchmark).

  idlepeers.py ENDPOINT SERVICE N SECONDS INTERVAL

Opens N ROUTER sockets (each its own connection), makes one hello call on
each so the server knows it, prints "connected N" and then keeps them for
SECONDS: with INTERVAL > 0 each sends a HEARTBEAT every INTERVAL seconds (as
a pseud client does under the heartbeat backend) and all incoming messages
are read and dropped. Prints one JSON line at the end: heartbeats sent and
received. Raw pseud v1 frames over python3-zmq.
"""

import json
import sys
import time
import uuid

import msgpack
import zmq

WORK, HEARTBEAT = 0x03, 0x06


def main(endpoint, service, n, seconds, interval):
    ctx = zmq.Context.instance()
    service = service.encode()
    socks = []
    for _ in range(n):
        s = ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        s.setsockopt(zmq.PROBE_ROUTER, 1)
        s.connect(endpoint)
        socks.append(s)
    body = msgpack.packb(['hello', ['idle'], {}], use_bin_type=True)
    deadline = time.monotonic() + 60
    for s in socks:                          # one call each: the server has heard of it
        u = uuid.uuid4().bytes
        while True:
            try:
                s.send_multipart([service, b'', b'v1', u, bytes([WORK]), body])
                break
            except zmq.ZMQError:
                if time.monotonic() > deadline:
                    raise SystemExit('idlepeers: server not reachable')
                time.sleep(0.005)
        while True:
            if not s.poll(10000):
                raise SystemExit('idlepeers: no reply to hello')
            f = s.recv_multipart()
            if len(f) == 6 and f[3] == u:
                break
    print('connected %d' % n, flush=True)
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    sent = received = 0
    end = time.monotonic() + seconds
    next_beat = time.monotonic() + interval if interval > 0 else end
    while time.monotonic() < end:
        now = time.monotonic()
        if interval > 0 and now >= next_beat:
            for s in socks:
                try:
                    s.send_multipart([service, b'', b'v1', b'', bytes([HEARTBEAT]), b''], zmq.DONTWAIT)
                    sent += 1
                except zmq.ZMQError:
                    pass
            next_beat += interval
        wait = max(0, min(next_beat, end) - time.monotonic())
        for s, _ in poller.poll(int(wait * 1000) + 1):
            while True:
                try:
                    s.recv_multipart(zmq.DONTWAIT)
                    received += 1
                except zmq.Again:
                    break
    print(json.dumps({'heartbeats_sent': sent, 'messages_received': received}), flush=True)
    for s in socks:
        s.close()


if __name__ == '__main__':
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
