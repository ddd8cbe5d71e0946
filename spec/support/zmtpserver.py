#!/usr/bin/env python3
"""A ZMTP 3.1 server that misbehaves on purpose, for bench_load --wire raw.

Usage: zmtpserver.py MODE   (prints "ready tcp://127.0.0.1:PORT", serves
until killed; routing id "bench", NULL mechanism, answers every WORK with
OK "Hello Charly").
  ping      before each reply, a PING (context b'ctx'); the reply only once
            the PONG came back with that context (each PONG logged on stderr)
  frames:N  before the first reply, a message of N empty frames
  size:N    before the first reply, a one-frame message of N bytes, whose
            header comes first and alone (the body follows only if the
            client is still there)
"""
import signal
import socket
import struct
import sys
import threading
import time

MODE = sys.argv[1]
ANSWER = b'\xacHello Charly'


def frame(data, more=False, command=False):
    flags = (1 if more else 0) | (4 if command else 0)
    if len(data) > 255:
        return bytes([flags | 2]) + struct.pack('>Q', len(data)) + data
    return bytes([flags, len(data)]) + data


def recv_exactly(conn, n):
    data = b''
    while len(data) < n:
        part = conn.recv(n - len(data))
        if not part:
            raise EOFError
        data += part
    return data


def read_frame(conn):
    flags, size = recv_exactly(conn, 2)
    if flags & 2:
        size = struct.unpack('>Q', bytes([size]) + recv_exactly(conn, 7))[0]
    return flags, recv_exactly(conn, size)


def prop(name, value):
    return bytes([len(name)]) + name + struct.pack('>I', len(value)) + value


def serve(conn):
    greeting = bytearray(64)
    greeting[0], greeting[9], greeting[10], greeting[11] = 0xff, 0x7f, 3, 1
    greeting[12:16] = b'NULL'
    conn.sendall(bytes(greeting))
    recv_exactly(conn, 64)
    read_frame(conn)                                  # the client's READY
    conn.sendall(frame(b'\x05READY' + prop(b'Socket-Type', b'ROUTER') + prop(b'Identity', b'bench'),
                       command=True))
    first = True
    while True:
        parts = []
        while True:
            flags, data = read_frame(conn)
            if flags & 4:
                break                                 # a command: not a message
            parts.append(data)
            if not flags & 1:
                break
        if len(parts) != 5:
            continue                                  # the probe
        if MODE == 'ping':
            conn.sendall(frame(b'\x04PING\x00\x0actx', command=True))
            flags, data = read_frame(conn)
            if flags & 4 and data == b'\x04PONGctx':
                sys.stderr.write('pong\n')
                sys.stderr.flush()
        elif first and MODE.startswith('frames:'):
            n = int(MODE.split(':')[1])
            conn.sendall(b''.join(frame(b'', more=i < n - 1) for i in range(n)))
        elif first and MODE.startswith('size:'):
            n = int(MODE.split(':')[1])
            conn.sendall(b'\x02' + struct.pack('>Q', n))
            time.sleep(0.2)                           # a refusal comes before the body
            conn.sendall(b'\0' * n)
        first = False
        conn.sendall(frame(b'', True) + frame(b'v1', True) + frame(parts[2], True)
                     + frame(b'\x01', True) + frame(ANSWER))


def serve_quietly(conn):
    try:
        serve(conn)
    except (EOFError, OSError):
        pass


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))   # stopped: a clean exit
listener = socket.socket()
listener.bind(('127.0.0.1', 0))
listener.listen(16)
print('ready tcp://127.0.0.1:%d' % listener.getsockname()[1], flush=True)
while True:
    client, _ = listener.accept()
    threading.Thread(target=serve_quietly, args=(client,), daemon=True).start()
