#!/usr/bin/python3
"""fake_redis.py MODE [SECONDS] -- a Redis that misbehaves, for
cluster_redis_spec.lua.

It speaks just enough RESP for a pseud-lua node's cluster link (SCRIPT LOAD,
SUBSCRIBE, EVALSHA, SET, PUBLISH, AUTH, SELECT, PING) and answers as a
healthy Redis would, except where MODE says:

  noscript      every EVALSHA is answered -NOSCRIPT (as through a proxy that
                sends SCRIPT LOAD and EVALSHA to different servers)
  noscript-lookups  a directory lookup is answered -NOSCRIPT, the rest as
                a healthy Redis: the link comes up, then fails at each lookup
  huge-array    a directory lookup is answered with the 14 bytes
                "*100000000\\r\\n", an array header and nothing after it
  push-array    once subscribed, a push whose payload is an array of
                2,000,000,000 elements, then as many ":1" as the node takes
  unsub-once    the first SUBSCRIBE is answered with an "unsubscribe" push
  stray         the first EVALSHA's answer (the registration) is followed
                by "+SURPRISE", a reply nobody asked for

Listens on a free 127.0.0.1 port and prints "ready PORT"; prints
"accept N" at each connection. With SECONDS it stops after that long and
prints "accepted N"; without, it stops on SIGTERM (or after 60 s).
"""
import hashlib
import selectors
import signal
import socket
import sys
import time

mode = sys.argv[1]
window = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0


def bulk(b):
    return b'$%d\r\n%s\r\n' % (len(b), b)


def array(*items):
    return b'*%d\r\n' % len(items) + b''.join(items)


def parse(buf):
    """(argv, rest) for one whole command at the start of buf, or (None, buf)."""
    if not buf.startswith(b'*'):
        return None, buf
    end = buf.find(b'\r\n')
    if end < 0:
        return None, buf
    n, p, argv = int(buf[1:end]), end + 2, []
    for _ in range(n):
        end = buf.find(b'\r\n', p)
        if end < 0:
            return None, buf
        size = int(buf[p + 1:end])
        p = end + 2
        if len(buf) < p + size + 2:
            return None, buf
        argv.append(buf[p:p + size])
        p += size + 2
    return argv, buf[p:]


class Conn:
    def __init__(self, sock):
        self.sock, self.inbuf, self.out, self.stream = sock, b'', b'', False


subscribes = 0
evals = 0


def answer(c, argv):
    global subscribes, evals
    cmd = argv[0].upper()
    if cmd == b'SCRIPT':
        return bulk(hashlib.sha1(argv[2]).hexdigest().encode())
    if cmd == b'SUBSCRIBE':
        subscribes += 1
        if mode == 'unsub-once' and subscribes == 1:
            return array(bulk(b'unsubscribe'), bulk(argv[1]), b':0\r\n')
        reply = array(bulk(b'subscribe'), bulk(argv[1]), b':1\r\n')
        if mode == 'push-array':
            c.stream = True
            reply += b'*3\r\n' + bulk(b'message') + bulk(argv[1]) + b'*2000000000\r\n'
        return reply
    if cmd == b'EVALSHA':
        evals += 1
        if mode == 'stray' and evals == 1:
            return b':1\r\n+SURPRISE\r\n'
        if mode == 'noscript':
            return b'-NOSCRIPT No matching script. Please use EVAL.\r\n'
        if len(argv) == 4 and argv[3].startswith(b'pseud:user:'):    # a lookup
            if mode == 'noscript-lookups':
                return b'-NOSCRIPT No matching script. Please use EVAL.\r\n'
            return b'*100000000\r\n' if mode == 'huge-array' else b'$-1\r\n'
        return b':1\r\n'
    if cmd == b'PUBLISH':
        return b':0\r\n'
    if cmd in (b'SET', b'AUTH', b'SELECT', b'PING'):
        return b'+OK\r\n'
    return b'-ERR unknown command\r\n'


def main():
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(64)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    print('ready %d' % listener.getsockname()[1], flush=True)
    accepted, conns = 0, []
    deadline = time.monotonic() + window
    filler = b':1\r\n' * 16384
    while not stop and time.monotonic() < deadline:
        for key, _ in sel.select(0.02):
            if key.data is None:
                sock, _ = listener.accept()
                sock.setblocking(False)
                c = Conn(sock)
                conns.append(c)
                sel.register(sock, selectors.EVENT_READ, c)
                accepted += 1
                print('accept %d' % accepted, flush=True)
                continue
            c = key.data
            try:
                data = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionError:
                data = b''
            if not data:
                sel.unregister(c.sock)
                c.sock.close()
                conns.remove(c)
                continue
            c.inbuf += data
            while True:
                argv, c.inbuf = parse(c.inbuf)
                if argv is None:
                    break
                c.out += answer(c, argv)
        for c in conns:
            if c.stream and len(c.out) < 1 << 20:
                c.out += filler
            if c.out:
                try:
                    c.out = c.out[c.sock.send(c.out[:1 << 20]):]
                except (BlockingIOError, InterruptedError, ConnectionError):
                    pass
    if not stop:
        print('accepted %d' % accepted, flush=True)


main()
