#!/usr/bin/python3
"""churn: the ROUTER-memory attack, bounded. N short-lived peers, each with a
fresh routing id, connect to a pseud v1 server, make one hello call, and
vanish without a word. Prints one JSON line: peers made, calls answered.

usage: churn.py ENDPOINT SERVICE [--peers N] [--deadline S]
Uses python3-zmq and python3-msgpack (Debian's /usr/bin/python3).
"""
import argparse
import json
import sys
import time
import uuid

import msgpack
import zmq


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument('endpoint')
    ap.add_argument('service')
    ap.add_argument('--peers', type=int, default=5000)
    ap.add_argument('--deadline', type=float, default=120.0)
    args = ap.parse_args(argv)
    ctx = zmq.Context.instance()
    service = args.service.encode()
    body = msgpack.packb(['hello', ['churn'], {}], use_bin_type=True)
    end = time.monotonic() + args.deadline
    made = answered = 0
    for _ in range(args.peers):
        if time.monotonic() > end:
            break
        s = ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTING_ID, b'churn-' + uuid.uuid4().hex.encode())
        s.setsockopt(zmq.PROBE_ROUTER, 1)
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        s.connect(args.endpoint)
        made += 1
        u = uuid.uuid4().bytes
        frames = [service, b'', b'v1', u, b'\x03', body]
        give_up = time.monotonic() + 5
        while True:
            try:
                s.send_multipart(frames, flags=zmq.NOBLOCK)
                break
            except zmq.ZMQError as exc:
                if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN) or time.monotonic() > give_up:
                    break
                time.sleep(0.0005)   # not yet routable: the handshake has no event to await
        while s.poll(2000, zmq.POLLIN):
            reply = s.recv_multipart()
            if len(reply) == 6 and reply[3] == u:
                answered += 1
                break
        s.close()
    print(json.dumps({'peers': made, 'answered': answered}))
    return 0 if answered == made else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
