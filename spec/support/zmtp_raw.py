#!/usr/bin/python3
"""zmtp_raw: a minimal ZMTP 3.0 peer on a plain TCP socket, for hostile specs.

pyzmq (libzmq's ZMQ_ROUTING_ID) cannot announce a routing id longer than 255
bytes, but a ROUTER accepts whatever Identity a peer puts in its READY
command: the property value has a 4-byte length, so a 1 MB id fits. This
peer speaks just enough of ZMTP 3.0 (RFC 23) with the NULL mechanism to
announce such an id and then talk pseud v1 to a server:

  greeting   64 bytes: signature FF 00*8 7F, version 3.0, mechanism "NULL"
             padded to 20 bytes, as-server 0, 31 bytes of filler;
  READY      a command frame: "\\x05READY", then properties, each a 1-byte
             name length, the name, a 4-byte big-endian value length, the
             value: Socket-Type (DEALER or ROUTER) and Identity;
  frames     flags (MORE 0x01, LONG 0x02, COMMAND 0x04), then the size in 1
             byte (short) or 8 bytes big-endian (LONG), then the body.

What goes on the wire is the same whether the peer calls itself ROUTER or
DEALER: a ROUTER application names the destination in its first frame and
libzmq strips it before the wire, so both send the pseud parts only,
["", "v1", uuid, type, body]; the server's ROUTER puts the announced
Identity in front. Replies arrive the same way, without routing id. (A
ROUTER with ZMQ_PROBE_ROUTER also sends one empty message first: --probe.)

  call HOST PORT --id-len N [--id-byte XX] [--count K] [--timeout S]
       [--socket-type DEALER|ROUTER] [--probe] [--name NAME] [--args JSON]
       [--expect any|reply|none] [--settle S]
     handshake with an id of N bytes XX (hex, default 41 'A'), send K WORK
     [NAME, ARGS, {}] (default 'hello', ["x"]), wait up to --timeout seconds
     after sending for K replies (with --expect none the whole --timeout is
     waited: a non-event), print one JSON line:
       {"replies": n, "types": [...], "connected": bool,
        "closed_by_server": bool, ...}
     exit 0 as asked: --expect reply: K well-formed replies carrying the
     uuids sent; --expect none: TCP connected and no reply (the server may
     close the connection, or refuse the handshake); --expect any (default):
     the handshake completed. 1 otherwise, 2 usage.

  flood HOST PORT --id-len N --count K [--timeout S]
     handshake with an id of N bytes 'A', send K WORK hello in one write
     (each costs the server's ROUTER a copy of the id), then, from a second
     connection with a 5-byte id, call hello once and time its reply: a
     good peer's latency behind the flood. One JSON line {"sent": K,
     "probe_reply": bool, "probe_seconds": s}; exit 0 when the probe was
     answered within --timeout.

It is also a library (wirefuzz.py): ZmtpPeer. Every wait has a deadline
(time.monotonic() seconds); nothing blocks past it.
"""

import argparse
import json
import select
import socket
import struct
import sys
import time
import uuid

import msgpack

SIGNATURE = b'\xff' + b'\x00' * 8 + b'\x7f'
FLAG_MORE, FLAG_LONG, FLAG_COMMAND = 0x01, 0x02, 0x04
MAX_FRAME = 64 << 20          # refuse to buffer a frame the server says is bigger
VERSION = b'v1'
OK, HELLO, WORK, AUTHENTICATED, HEARTBEAT, ERROR, UNAUTHORIZED = (
    0x01, 0x02, 0x03, 0x04, 0x06, 0x10, 0x11)


class ZmtpError(Exception):
    """The peer broke ZMTP (or the deadline passed during the handshake)."""


class ZmtpClosed(ZmtpError):
    """The server closed the connection."""


def greeting(as_server=False):
    """Our 64-byte ZMTP 3.0 greeting, NULL mechanism."""
    g = SIGNATURE + bytes([3, 0]) + b'NULL'.ljust(20, b'\x00') + bytes([1 if as_server else 0])
    return g + b'\x00' * 31


def frame(body, more=False, command=False):
    """One ZMTP frame: flags, short (1-byte) or long (8-byte) size, body."""
    flags = (FLAG_MORE if more else 0) | (FLAG_COMMAND if command else 0)
    if len(body) > 255:
        return bytes([flags | FLAG_LONG]) + struct.pack('>Q', len(body)) + body
    return bytes([flags, len(body)]) + body


def ready_command(properties):
    """The READY command body: short name, then name/value properties."""
    out = bytearray(b'\x05READY')
    for name, value in properties:
        out += bytes([len(name)]) + name + struct.pack('>I', len(value)) + value
    return bytes(out)


def parse_command(body):
    """(name, {property: value}) of a command body; properties parsed only
    for READY. Raises ZmtpError on a truncated body."""
    if not body or len(body) < 1 + body[0]:
        raise ZmtpError('command body too short')
    name = body[1:1 + body[0]].decode('ascii', 'replace')
    props = {}
    if name == 'READY':
        i = 1 + body[0]
        while i < len(body):
            nlen = body[i]
            if i + 1 + nlen + 4 > len(body):
                raise ZmtpError('READY property header truncated')
            pname = body[i + 1:i + 1 + nlen].decode('ascii', 'replace')
            (vlen,) = struct.unpack('>I', body[i + 1 + nlen:i + 5 + nlen])
            start = i + 5 + nlen
            if start + vlen > len(body):
                raise ZmtpError('READY property %r value truncated' % pname)
            props[pname] = body[start:start + vlen]
            i = start + vlen
    return name, props


class ZmtpPeer:
    """One TCP connection speaking ZMTP 3.0 as a client (NULL mechanism)."""

    def __init__(self, host, port, identity, socket_type='DEALER'):
        self.host, self.port = host, int(port)
        self.identity = bytes(identity)
        self.socket_type = socket_type
        self.sock = None
        self.buf = bytearray()
        self.parts = []                # parts of a message not yet complete
        self.tcp_connected = False     # the TCP connect succeeded
        self.connected = False         # the handshake completed
        self.closed_by_server = False
        self.server_greeting = None
        self.server_properties = {}
        self.commands = []             # command names seen after the handshake

    # -- low level ---------------------------------------------------------

    def _remaining(self, deadline):
        return deadline - time.monotonic()

    def _sendall(self, data, deadline):
        view = memoryview(data)
        while view:
            left = self._remaining(deadline)
            if left <= 0:
                raise ZmtpError('deadline passed while sending')
            _, writable, _ = select.select([], [self.sock], [], left)
            if not writable:
                continue
            try:
                n = self.sock.send(view)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:   # EPIPE, ECONNRESET: the server hung up
                self.closed_by_server = True
                raise ZmtpClosed('send failed: %s' % exc)
            view = view[n:]

    def _fill(self, timeout):
        """Read what arrives within `timeout` seconds (0: only what is
        there). Returns True when bytes came. Raises ZmtpClosed at EOF."""
        if self.sock is None:
            raise ZmtpClosed('not connected')
        readable, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not readable:
            return False
        try:
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self.closed_by_server = True
            raise ZmtpClosed('recv failed: %s' % exc)
        if not data:
            self.closed_by_server = True
            raise ZmtpClosed('the server closed the connection')
        self.buf += data
        return True

    def _take_frame(self):
        """(flags, body) of one complete frame from the buffer, or None."""
        if len(self.buf) < 2:
            return None
        flags = self.buf[0]
        if flags & ~(FLAG_MORE | FLAG_LONG | FLAG_COMMAND):
            raise ZmtpError('frame flags 0x%02x have reserved bits set' % flags)
        if flags & FLAG_LONG:
            if len(self.buf) < 9:
                return None
            (size,) = struct.unpack('>Q', bytes(self.buf[1:9]))
            head = 9
        else:
            size, head = self.buf[1], 2
        if size > MAX_FRAME:
            raise ZmtpError('frame of %d bytes announced' % size)
        if len(self.buf) < head + size:
            return None
        body = bytes(self.buf[head:head + size])
        del self.buf[:head + size]
        return flags, body

    def _read_frame(self, deadline):
        while True:
            got = self._take_frame()
            if got is not None:
                return got
            left = self._remaining(deadline)
            if left <= 0:
                raise ZmtpError('deadline passed while reading a frame')
            self._fill(left)

    def _recv_exact(self, n, deadline):
        while len(self.buf) < n:
            left = self._remaining(deadline)
            if left <= 0:
                raise ZmtpError('deadline passed after %d of %d bytes' % (len(self.buf), n))
            self._fill(left)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    # -- handshake ---------------------------------------------------------

    def connect(self, deadline):
        """TCP connect, greetings, READY both ways. Raises ZmtpError."""
        left = self._remaining(deadline)
        if left <= 0:
            raise ZmtpError('deadline passed before connecting')
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=left)
        except OSError as exc:
            raise ZmtpError('connect failed: %s' % exc)
        self.tcp_connected = True
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sendall(greeting(), deadline)
        g = self._recv_exact(64, deadline)
        self.server_greeting = g
        if g[0] != 0xff or g[9] != 0x7f:
            raise ZmtpError('bad greeting signature %s' % g[:10].hex())
        if g[10] < 3:
            raise ZmtpError('server speaks ZMTP %d.%d' % (g[10], g[11]))
        mechanism = g[12:32].rstrip(b'\x00')
        if mechanism != b'NULL':
            raise ZmtpError('server mechanism %r, not NULL' % mechanism)
        props = [(b'Socket-Type', self.socket_type.encode()), (b'Identity', self.identity)]
        self._sendall(frame(ready_command(props), command=True), deadline)
        flags, body = self._read_frame(deadline)
        if not flags & FLAG_COMMAND:
            raise ZmtpError('expected the READY command, got a message frame')
        name, sprops = parse_command(body)
        if name != 'READY':
            raise ZmtpError('expected READY, got command %r' % name)
        self.server_properties = sprops
        self.connected = True

    # -- messages ----------------------------------------------------------

    def send(self, parts, deadline):
        """Send one multipart message (a list of bytes, at least one)."""
        out = bytearray()
        for i, part in enumerate(parts):
            out += frame(bytes(part), more=i < len(parts) - 1)
        self._sendall(out, deadline)

    def _take_message(self):
        """One complete message from the buffer, or None. Commands after the
        handshake are recorded and skipped."""
        while True:
            got = self._take_frame()
            if got is None:
                return None
            flags, body = got
            if flags & FLAG_COMMAND:
                try:
                    self.commands.append(parse_command(body)[0])
                except ZmtpError:
                    self.commands.append('?')
                continue
            self.parts.append(body)
            if not flags & FLAG_MORE:
                msg, self.parts = self.parts, []
                return msg

    def recv(self, deadline):
        """One message (list of parts), or None when the deadline passes.
        Raises ZmtpClosed when the server hangs up."""
        while True:
            msg = self._take_message()
            if msg is not None:
                return msg
            left = self._remaining(deadline)
            if left <= 0:
                return None
            self._fill(left)

    def poll(self):
        """Every message that has arrived, without waiting. Returns
        (messages, closed): closed is True once the server has hung up."""
        out = []
        try:
            while self._fill(0):
                pass
        except ZmtpClosed:
            pass
        while True:
            msg = self._take_message()
            if msg is None:
                break
            out.append(msg)
        return out, self.closed_by_server

    def fileno(self):
        return self.sock.fileno() if self.sock else -1

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


# ---------------------------------------------------------------- CLI

def describe(msg, sent):
    """A reply seen by the raw peer: ["", "v1", uuid, type, body]."""
    out = {'frame_count': len(msg), 'problems': []}
    if len(msg) != 5:
        out['problems'].append('expected 5 frames, got %d' % len(msg))
        return out
    delim, version, ruuid, rtype, body = msg
    if delim != b'':
        out['problems'].append('delimiter not empty')
    if version != VERSION:
        out['problems'].append('version %r' % version)
    out['uuid_hex'] = ruuid.hex()
    if ruuid not in sent:
        out['problems'].append('uuid %s was not sent' % ruuid.hex())
    out['type'] = rtype[0] if len(rtype) == 1 else None
    try:
        value = msgpack.unpackb(body, raw=False)
        out['body'] = value if isinstance(value, (str, int, float, list)) else repr(value)
    except Exception as exc:   # a reply we cannot decode is a finding
        out['problems'].append('body is not msgpack: %s' % exc)
    return out


def cmd_call(args):
    identity = bytes.fromhex(args.id_byte) * args.id_len
    name_args = json.loads(args.args)
    peer = ZmtpPeer(args.host, args.port, identity, args.socket_type)
    out = {'id_len': len(identity), 'replies': 0, 'types': [], 'connected': False,
           'tcp_connected': False, 'closed_by_server': False, 'error': None}
    deadline = time.monotonic() + args.timeout
    sent, got = set(), []
    try:
        peer.connect(deadline)
        out['server_identity'] = peer.server_properties.get('Identity', b'').decode('utf-8', 'replace')
        out['server_socket_type'] = peer.server_properties.get('Socket-Type', b'').decode('utf-8', 'replace')
        if args.probe:
            peer.send([b''], deadline)
        for _ in range(args.count):
            u = uuid.uuid4().bytes
            sent.add(u)
            body = msgpack.packb([args.name, name_args, {}], use_bin_type=True)
            peer.send([b'', VERSION, u, bytes([WORK]), body], deadline)
        # The wait starts once everything is out: a non-event gets the full
        # --timeout after sending.
        deadline = time.monotonic() + args.timeout
        while True:
            msg = peer.recv(deadline)
            if msg is None:
                break
            got.append(describe(msg, sent))
            if len(got) == args.count and args.expect != 'none':
                deadline = min(deadline, time.monotonic() + args.settle)
    except ZmtpError as exc:
        out['error'] = str(exc)
    finally:
        peer.close()
    out.update(connected=peer.connected, tcp_connected=peer.tcp_connected,
               closed_by_server=peer.closed_by_server, replies=len(got),
               types=[r.get('type') for r in got], reply_details=got,
               commands=peer.commands)
    if args.expect == 'reply':
        ok = (peer.connected and len(got) == args.count and
              all(not r['problems'] for r in got) and
              len({r['uuid_hex'] for r in got}) == args.count)
    elif args.expect == 'none':
        ok = peer.tcp_connected and not got
    else:
        ok = peer.connected and out['error'] is None
    sys.stdout.write(json.dumps(out, sort_keys=True) + '\n')
    sys.stdout.flush()
    return 0 if ok else 1


def cmd_flood(args):
    out = {'sent': 0, 'probe_reply': False, 'probe_seconds': None, 'error': None}
    deadline = time.monotonic() + args.timeout
    flooder = ZmtpPeer(args.host, args.port, b'A' * args.id_len)
    probe = ZmtpPeer(args.host, args.port, b'probe')
    try:
        flooder.connect(deadline)
        probe.connect(deadline)
        body = msgpack.packb(['hello', ['x'], {}], use_bin_type=True)
        one = b''.join(frame(part, more=i < 4) for i, part in
                       enumerate([b'', VERSION, b'u' * 16, bytes([WORK]), body]))
        flooder._sendall(one * args.count, deadline)
        out['sent'] = args.count
        u = uuid.uuid4().bytes
        started = time.monotonic()
        probe.send([b'', VERSION, u, bytes([WORK]), msgpack.packb(['hello', ['probe'], {}])], deadline)
        while True:
            msg = probe.recv(deadline)
            if msg is None:
                break
            if len(msg) == 5 and msg[2] == u:
                out['probe_reply'] = msg[3] == bytes([OK])
                out['probe_seconds'] = round(time.monotonic() - started, 4)
                break
    except ZmtpError as exc:
        out['error'] = str(exc)
    finally:
        flooder.close()
        probe.close()
    sys.stdout.write(json.dumps(out, sort_keys=True) + '\n')
    sys.stdout.flush()
    return 0 if out['probe_reply'] else 1


def main(argv):
    parser = argparse.ArgumentParser(prog='zmtp_raw', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('call')
    p.add_argument('host')
    p.add_argument('port', type=int)
    p.add_argument('--id-len', type=int, required=True)
    p.add_argument('--id-byte', default='41', help='the id byte, in hex (default 41)')
    p.add_argument('--count', type=int, default=1)
    p.add_argument('--timeout', type=float, default=5.0)
    p.add_argument('--socket-type', choices=('DEALER', 'ROUTER'), default='DEALER')
    p.add_argument('--probe', action='store_true', help='send an empty message first, as ZMQ_PROBE_ROUTER')
    p.add_argument('--name', default='hello')
    p.add_argument('--args', default='["x"]')
    p.add_argument('--expect', choices=('any', 'reply', 'none'), default='any')
    p.add_argument('--settle', type=float, default=0.1,
                   help='after the K-th reply, wait this long for more')
    p.set_defaults(func=cmd_call)
    f = sub.add_parser('flood')
    f.add_argument('host')
    f.add_argument('port', type=int)
    f.add_argument('--id-len', type=int, required=True)
    f.add_argument('--count', type=int, default=1)
    f.add_argument('--timeout', type=float, default=30.0)
    f.set_defaults(func=cmd_flood, id_byte='41')
    args = parser.parse_args(argv)
    if args.id_len < 0 or len(bytes.fromhex(args.id_byte)) != 1:
        parser.error('--id-len must be >= 0 and --id-byte one hex byte')
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
