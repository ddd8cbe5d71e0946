#!/usr/bin/python3
"""wirefuzz: a seeded, bounded wire-level fuzz of a pseud v1 server.

  wirefuzz.py ENDPOINT SERVICE [--seed N] [--count N] [--time-limit S]
              [--max-id-len N] [--raw-share F]

From one seed (printed; $PSEUD_FUZZ_SEED when --seed is not given) it sends
--count messages from several peers at once, in one thread (a zmq.Poller
over every socket, so what is sent depends on the seed alone):

  router-N   pyzmq ROUTER peers (ZMQ_PROBE_ROUTER, ROUTER_MANDATORY)
  dealer-N   pyzmq DEALER peers
  raw-N      spec/support/zmtp_raw.py peers (DEALER over a plain TCP socket),
             one routing id each of random length 1..--max-id-len bytes (the
             first two 255 and 256 when the maximum allows them); each sends
             a few messages, then only listens
  good       a pyzmq ROUTER caller interleaving valid calls to hello and echo

Fuzz peers send valid and mutated pseud messages (spec/support/wiremsgs.py
makes them, with what may come back for each): valid WORK/HELLO, forged
OK/ERROR/UNAUTHORIZED/AUTHENTICATED, HEARTBEATs, probes, truncated and
extended frame lists, wrong versions and delimiters, random type bytes,
uuids of wrong lengths, random and byte-flipped msgpack bodies, truncated
bodies, huge declared lengths, deep nesting, and an unknown name of 4 KiB
of non-UTF-8 bytes (sent first by one ROUTER and one DEALER peer, then at
random).

Every reply any peer gets is judged against DESIGN.md sections 1 and 4:
  - it answers a message of that peer that asked (a uuid of 16 bytes at its
    place, a type that is not OK, ERROR or HEARTBEAT), with its uuid, at most
    once; well-formed WORK and HELLO, and malformed messages that carry a
    uuid (unless their type is a reply's), are answered exactly once;
  - a malformed message is refused with ERROR ProtocolError;
  - an ERROR body is a msgpack array of three str, valid UTF-8, of a known
    class; text the host writes itself (ProtocolError, ServiceNotFoundError,
    ...) is at most HOST_TEXT_MAX bytes (1 KiB of echoed peer bytes + room);
  - a peer whose routing id is over 255 bytes gets nothing at all;
  - the good caller gets every reply exactly once and right;
  - at the end the server answers a fresh caller.

Prints one JSON line: the summary (sent per kind, replies per type,
violations per rule with samples). Exit 0 when there is no violation, 1
otherwise, 2 usage. Bounded: --time-limit for sending, DRAIN_WAIT for the
answers still due, FINAL_WAIT for the last call.
"""

import argparse
import json
import os
import sys
import time

import msgpack
import zmq

import zmtp_raw
from wiremsgs import (AUTHENTICATED, ERROR, FUZZ_KINDS, HEARTBEAT, MUST, NEVER, OK, TYPE_NAMES,
                      UNAUTHORIZED, VERSION, WORK, Expect, Gen, Opaque, check_not_ok, check_ok,
                      make_message, msgpack_walk, pack, short, unpack_reply)

MAX_ROUTING_ID = 255
# DESIGN.md section 1: the classes a pseud peer maps, plus what a Lua handler
# raises in the basic server (LuaError, ValueError).
ERROR_CLASSES = {'ServiceNotFoundError', 'TimeoutError', 'UnauthorizedError', 'PeerLostError',
                 'MemoryError', 'ProtocolError', 'BusyError', 'LuaError', 'ValueError'}
# Classes whose message the host writes itself, from peer bytes at most 1 KiB.
HOST_CLASSES = {'ServiceNotFoundError', 'ProtocolError', 'BusyError', 'MemoryError',
                'TimeoutError', 'UnauthorizedError', 'PeerLostError'}
HOST_TEXT_MAX = 1152        # bytes of UTF-8: 1 KiB echoed + the host's own words

GOOD_TIMEOUT = 5.0          # a good call unanswered this long: the server is gone
SEND_WAIT = 2.0             # a send that cannot go out this long: stalled
DRAIN_WAIT = 5.0            # after sending: wait this long, at most, for answers due
SETTLE = 0.3                # then this long for duplicates and replies to non-requests
FINAL_WAIT = 3.0            # the fresh caller at the end

SAMPLES_PER_RULE = 5

# Which `it` of wire_fuzz_spec.lua a rule belongs to.
RULE_GROUPS = {
    'good-missing': 'good', 'good-wrong': 'good', 'good-twice': 'good',
    'answered-non-request': 'replies', 'answered-twice': 'replies',
    'reply-to-unknown-uuid': 'replies', 'misrouted': 'replies', 'must-answer-missing': 'replies',
    'reply-malformed': 'replies', 'wrong-reply-type': 'replies', 'wrong-result': 'replies',
    'ok-for-unknown-name': 'replies', 'not-protocol-error': 'replies',
    'error-body': 'error-text', 'error-class': 'error-text', 'error-not-utf8': 'error-text',
    'host-text-too-long': 'error-text', 'text-not-utf8': 'error-text',
    'ok-body': 'error-text',
    'long-name-error': 'name-echo',
    'long-id-answered': 'long-ids',
    'peer-closed': 'liveness', 'raw-connect-failed': 'liveness', 'send-stalled': 'liveness',
    'final-call': 'liveness', 'aborted': 'liveness',
}


# ---------------------------------------------------------------- peers

class Peer:
    def __init__(self, name, transport, identity):
        self.name = name
        self.transport = transport        # 'router', 'dealer', 'raw' or 'good'
        self.identity = identity
        self.expects = {}                 # uuid -> Expect
        self.replies = 0
        self.closed = False
        self.stalled = False
        self.sent = 0

    @property
    def long_id(self):
        return len(self.identity) > MAX_ROUTING_ID


class Fuzz:
    def __init__(self, args):
        self.args = args
        self.g = Gen(args.seed)
        host_port = args.endpoint.rsplit('/', 1)[-1]
        self.host, port = host_port.rsplit(':', 1)
        self.port = int(port)
        self.service = args.service.encode()
        self.ctx = zmq.Context.instance()
        self.poller = zmq.Poller()
        self.peers = []
        self.by_socket = {}
        self.raw_active = []
        self.raw_lengths = [n for n in (MAX_ROUTING_ID, MAX_ROUTING_ID + 1) if n <= args.max_id_len]
        # Unique per process: two drivers on one server must not share an id.
        self.good_id = b'good-caller-%d' % os.getpid()
        self.final_id = b'final-caller-%d' % os.getpid()
        self.used_ids = {self.good_id, self.final_id}
        self.uuid_owner = {}
        self.violations = {}
        self.samples = {}
        self.sent_by_kind = {}
        self.sent_by_transport = {}
        self.replies_by_type = {}
        self.good_pending = {}            # uuid of a good call -> when it was sent
        self.good_calls = 0
        self.good_ok = 0
        self.aborted = None
        self.server_probes = 0

    # -- bookkeeping -------------------------------------------------------

    def violation(self, rule, peer, detail, kind=None):
        self.violations[rule] = self.violations.get(rule, 0) + 1
        samples = self.samples.setdefault(rule, [])
        if len(samples) < SAMPLES_PER_RULE:
            samples.append({'peer': peer.name if peer else None, 'id_len': len(peer.identity) if peer else None,
                            'kind': kind, 'detail': detail, 'group': RULE_GROUPS.get(rule, 'other')})

    def new_id(self, n):
        while True:
            ident = bytearray(self.g.rng.randbytes(n))
            ident[0] = self.g.rng.randint(1, 255)            # no leading zero byte
            ident = bytes(ident)
            if ident not in self.used_ids:
                self.used_ids.add(ident)
                return ident

    # -- peers ---------------------------------------------------------------

    def zmq_peer(self, name, transport, identity):
        sock = self.ctx.socket(zmq.ROUTER if transport in ('router', 'good') else zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, identity)
        if transport in ('router', 'good'):
            sock.setsockopt(zmq.PROBE_ROUTER, 1)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.connect(self.args.endpoint)
        peer = Peer(name, transport, identity)
        peer.sock = sock
        self.poller.register(sock, zmq.POLLIN)
        self.by_socket[sock] = peer
        self.peers.append(peer)
        return peer

    def raw_peer(self):
        if self.raw_lengths:
            n = self.raw_lengths.pop(0)
        else:
            n = self.g.rng.randint(1, self.args.max_id_len)
        identity = self.new_id(n)
        peer = Peer('raw-%d' % len([p for p in self.peers if p.transport == 'raw']), 'raw', identity)
        peer.budget = self.g.rng.randint(3, 20)
        peer.conn = zmtp_raw.ZmtpPeer(self.host, self.port, identity, 'DEALER')
        self.peers.append(peer)
        try:
            peer.conn.connect(time.monotonic() + SEND_WAIT)
        except zmtp_raw.ZmtpError as exc:
            peer.closed = True
            if not peer.long_id or not peer.conn.tcp_connected:
                # A long id may be refused at the handshake; nothing else may.
                self.violation('raw-connect-failed', peer, str(exc))
            if not peer.conn.tcp_connected and not self.aborted:
                self.aborted = 'the server refuses TCP connections: it is gone (%s)' % exc
            return peer
        self.poller.register(peer.conn.sock, zmq.POLLIN)
        self.by_socket[peer.conn.sock.fileno()] = peer      # Poller reports plain sockets by fd
        return peer

    def send(self, peer, frames, deadline):
        """Send `frames` (after the routing id); False when it could not go."""
        if peer.transport == 'raw':
            try:
                peer.conn.send(frames, deadline)
                return True
            except zmtp_raw.ZmtpError as exc:
                self.raw_closed(peer, str(exc))
                return False
        parts = ([self.service] if peer.transport in ('router', 'good') else []) + frames
        while True:
            try:
                peer.sock.send_multipart(parts, flags=zmq.NOBLOCK)
                return True
            except zmq.ZMQError as exc:
                if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                    raise
            if time.monotonic() >= deadline:
                return False
            self.pump(0.005)                  # read replies while the route comes up

    def raw_closed(self, peer, why):
        if peer.closed:
            return
        peer.closed = True
        if peer.conn.sock is not None:
            try:
                self.poller.unregister(peer.conn.sock)
            except KeyError:
                pass
            self.by_socket.pop(peer.conn.sock.fileno(), None)
        if not peer.long_id:
            # The host may disconnect an over-long id; a legal one it serves.
            self.violation('peer-closed', peer, why)
        peer.conn.close()

    # -- receiving and judging -----------------------------------------------

    def pump(self, timeout):
        """Read and judge everything that arrives within `timeout` seconds."""
        events = dict(self.poller.poll(int(timeout * 1000)))
        for key in events:
            if isinstance(key, zmq.Socket):
                peer = self.by_socket[key]
                while True:
                    try:
                        frames = key.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.judge(peer, frames)
            else:
                peer = self.by_socket.get(key)
                if peer is None or peer.closed:
                    continue
                msgs, closed = peer.conn.poll()
                for frames in msgs:
                    self.judge(peer, frames)
                if closed:
                    self.raw_closed(peer, 'the server closed the connection')

    def judge(self, peer, frames):
        if peer.transport in ('router', 'good'):
            if not frames or frames[0] != self.service:
                self.violation('reply-malformed', peer, 'first frame %s is not the service' % short(frames[:1]))
                return
            frames = frames[1:]
        if frames == [b'']:
            self.server_probes += 1           # the server's own probe: not a reply
            return
        peer.replies += 1
        if peer.long_id:
            self.violation('long-id-answered', peer, 'got %s' % short([f[:40] for f in frames]))
            return
        if (len(frames) != 5 or frames[0] != b'' or frames[1] != VERSION
                or len(frames[2]) != 16 or len(frames[3]) != 1):
            self.violation('reply-malformed', peer, short([f[:40] for f in frames]))
            return
        _, _, ruuid, rtype, body = frames
        rtype = rtype[0]
        tname = TYPE_NAMES.get(rtype, '0x%02x' % rtype)
        self.replies_by_type[tname] = self.replies_by_type.get(tname, 0) + 1
        e = peer.expects.get(ruuid)
        if e is None:
            owner = self.uuid_owner.get(ruuid)
            if owner is not None:
                self.violation('misrouted', peer, 'a reply to a message of %s' % owner.name)
            else:
                self.violation('reply-to-unknown-uuid', peer, 'uuid %s, type %s' % (ruuid.hex(), rtype))
            return
        e.answers += 1
        good = peer.transport == 'good'
        if good:
            self.good_pending.pop(ruuid, None)
        if e.answers > 1:
            self.violation('good-twice' if good else 'answered-twice', peer, 'uuid %s' % ruuid.hex(), e.kind)
            return
        if e.rule == NEVER:
            self.violation('answered-non-request', peer, 'a %s answered with type %s' % (e.kind, rtype), e.kind)
            return
        if rtype not in e.allowed:
            self.violation('good-wrong' if good else 'wrong-reply-type', peer,
                           'type %s to a %s' % (TYPE_NAMES.get(rtype, rtype), e.kind), e.kind)
            return
        value = self.decode_body(peer, rtype, body, e.kind)
        if value is _BAD:
            if good:
                self.violation('good-wrong', peer, 'undecodable reply body', e.kind)
            return
        if rtype == ERROR:
            if e.protocol_error and value[0] != 'ProtocolError':
                self.violation('not-protocol-error', peer, 'a malformed %s got %s' % (e.kind, short(value)), e.kind)
            if value[0] in HOST_CLASSES and len(value[1].encode()) > HOST_TEXT_MAX:
                self.violation('host-text-too-long', peer, '%s message of %d bytes' % (
                    value[0], len(value[1].encode())), e.kind)
                if e.kind == 'long_bin_name':
                    self.violation('long-name-error', peer, 'message of %d bytes' % len(value[1].encode()), e.kind)
        if e.check is not None:
            problem = e.check(rtype, value)
            if problem:
                rule = 'good-wrong' if good else ('ok-for-unknown-name' if e.check is check_not_ok
                                                  else 'wrong-result')
                self.violation(rule, peer, problem, e.kind)
                if e.kind == 'long_bin_name':
                    self.violation('long-name-error', peer, problem, e.kind)
                return
        if good and rtype == OK:
            self.good_ok += 1

    def decode_body(self, peer, rtype, body, kind):
        """The reply's value, or _BAD after recording why."""
        if rtype in (AUTHENTICATED, UNAUTHORIZED, HEARTBEAT):
            try:
                return body.decode('utf-8')
            except UnicodeDecodeError:
                self.violation('text-not-utf8', peer, 'a %s body %s' % (TYPE_NAMES[rtype], short(body)), kind)
                return _BAD
        try:
            try:
                value = unpack_reply(body)
            except UnicodeDecodeError:    # a ValueError too: keep it for below
                raise
            except Exception:
                msgpack_walk(body)        # valid after all? then judge it as such
                value = Opaque()
        except UnicodeDecodeError as exc:
            rule = 'error-not-utf8' if rtype == ERROR else 'ok-body'
            self.violation(rule, peer, 'a str that is not UTF-8 (%s) in %s' % (exc, short(body[:120])), kind)
            if kind == 'long_bin_name':
                self.violation('long-name-error', peer, 'ERROR text is not valid UTF-8', kind)
            if rtype == ERROR:
                self.check_raw_error_text(peer, body, kind)
            return _BAD
        except Exception as exc:
            self.violation('error-body' if rtype == ERROR else 'ok-body', peer,
                           'not msgpack (%s): %s' % (exc, short(body[:120])), kind)
            return _BAD
        if rtype == ERROR:
            if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value)):
                self.violation('error-body', peer, 'not [str, str, str]: %s' % short(value), kind)
                return _BAD
            if value[0] not in ERROR_CLASSES:
                self.violation('error-class', peer, 'class %r' % value[0], kind)
        return value

    def check_raw_error_text(self, peer, body, kind):
        """The length rule, for an ERROR whose text did not decode as UTF-8."""
        try:
            value = msgpack.unpackb(body, raw=True)
        except Exception:
            return
        if (isinstance(value, list) and len(value) == 3 and isinstance(value[0], bytes)
                and isinstance(value[1], bytes) and value[0].decode('utf-8', 'replace') in HOST_CLASSES
                and len(value[1]) > HOST_TEXT_MAX):
            self.violation('host-text-too-long', peer, '%s message of %d bytes' % (
                value[0].decode('utf-8', 'replace'), len(value[1])), kind)
            if kind == 'long_bin_name':
                self.violation('long-name-error', peer, 'message of %d bytes' % len(value[1]), kind)

    # -- the run ---------------------------------------------------------------

    def fuzz_send(self, peer, kind, deadline):
        frames, e = make_message(self.g, kind)
        # The uuid is frame 2 (after the delimiter and version): a reply may
        # carry that one only; any other 16-byte frame must never come back.
        uuids = [f for i, f in enumerate(frames) if len(f) == 16 and i != 2]
        if e is not None and len(frames) > 2 and len(frames[2]) == 16:
            uuids.insert(0, frames[2])
        else:
            e = None
        for i, u in enumerate(uuids):
            peer.expects.setdefault(u, e if i == 0 and e is not None else Expect(kind, NEVER, set()))
            self.uuid_owner[u] = peer
        if self.send(peer, frames, min(deadline, time.monotonic() + SEND_WAIT)):
            peer.sent += 1
            self.sent_by_kind[kind] = self.sent_by_kind.get(kind, 0) + 1
            self.sent_by_transport[peer.transport] = self.sent_by_transport.get(peer.transport, 0) + 1
            return True
        for u in uuids:
            peer.expects.pop(u, None)
        if peer.transport != 'raw':
            peer.stalled = True
            self.violation('send-stalled', peer, 'a %s could not be sent in %.1fs' % (kind, SEND_WAIT), kind)
        return False

    def good_send(self, good, deadline):
        r = self.g.rng
        if r.random() < 0.5:
            s = self.g.text()
            name, args, check = 'hello', [s], check_ok('Hello ' + s)
        else:
            v = self.g.safe_value()
            name, args, check = 'echo', [v], check_ok(v)
        u = self.g.uuid()
        frames = [b'', VERSION, u, bytes([WORK]), pack([name, args, {}])]
        e = Expect('good_' + name, MUST, {OK}, False, check)
        good.expects[u] = e
        self.uuid_owner[u] = good
        if not self.send(good, frames, min(deadline, time.monotonic() + SEND_WAIT)):
            del good.expects[u]
            self.violation('send-stalled', good, 'a good call could not be sent')
            return False
        self.good_calls += 1
        self.good_pending[u] = time.monotonic()
        self.sent_by_kind['good_' + name] = self.sent_by_kind.get('good_' + name, 0) + 1
        self.sent_by_transport['good'] = self.sent_by_transport.get('good', 0) + 1
        return True

    def run(self):
        a = self.args
        start = time.monotonic()
        deadline = start + a.time_limit
        good = self.zmq_peer('good', 'good', self.good_id)
        fuzzers = []
        for i in range(a.router_peers):
            fuzzers.append(self.zmq_peer('router-%d' % i, 'router', self.new_id(self.g.rng.randint(1, 255))))
        for i in range(a.dealer_peers):
            fuzzers.append(self.zmq_peer('dealer-%d' % i, 'dealer', self.new_id(self.g.rng.randint(1, 255))))
        kinds = [k for k, _ in FUZZ_KINDS]
        weights = [w for _, w in FUZZ_KINDS]
        sent = 0
        # First, the fixed probe of DESIGN section 4's text rule: an unknown
        # name of 4 KiB of non-UTF-8 bytes, from a ROUTER and a DEALER.
        for peer in fuzzers[:1] + fuzzers[a.router_peers:a.router_peers + 1]:
            if self.fuzz_send(peer, 'long_bin_name', deadline):
                sent += 1
        while sent < a.count and not self.aborted:
            now = time.monotonic()
            if now >= deadline:
                self.aborted = 'time limit %.1fs reached after %d of %d messages' % (a.time_limit, sent, a.count)
                break
            late = [u for u, t in self.good_pending.items() if now - t > GOOD_TIMEOUT]
            if late:
                self.aborted = 'a good call got no reply in %.1fs: the server is gone or stuck' % GOOD_TIMEOUT
                break
            roll = self.g.rng.random()
            if roll < 0.1:
                if self.good_send(good, deadline):
                    sent += 1
            elif roll < 0.1 + a.raw_share:
                self.raw_active = [p for p in self.raw_active if not p.closed and p.budget > 0]
                if len(self.raw_active) < 3:
                    self.raw_active.append(self.raw_peer())
                peer = self.g.rng.choice(self.raw_active)
                if not peer.closed:
                    peer.budget -= 1
                    kind = self.g.rng.choices(kinds, weights)[0]
                    if self.fuzz_send(peer, kind, deadline):
                        sent += 1
                else:
                    peer.budget = 0
            else:
                live = [p for p in fuzzers if not p.stalled]
                if not live:
                    self.aborted = 'every fuzz peer stalled'
                    break
                peer = self.g.rng.choice(live)
                kind = self.g.rng.choices(kinds, weights)[0]
                if self.fuzz_send(peer, kind, deadline):
                    sent += 1
            self.pump(0)
        self.sent = sent
        self.sending_time = time.monotonic() - start
        self.drain()
        self.final_check()
        if self.aborted:
            self.violation('aborted', None, self.aborted)
        self.elapsed = time.monotonic() - start

    def due(self):
        return sum(1 for p in self.peers if not p.long_id and not p.closed and not p.stalled
                   for e in p.expects.values() if e.rule == MUST and e.answers == 0)

    def drain(self):
        """Wait (bounded) for every answer still due, then SETTLE for extras."""
        end = time.monotonic() + DRAIN_WAIT
        while self.due() and time.monotonic() < end:
            self.pump(min(0.05, max(end - time.monotonic(), 0)))
        end = time.monotonic() + SETTLE
        while time.monotonic() < end:
            self.pump(max(end - time.monotonic(), 0))
        for p in self.peers:
            if p.long_id:
                continue
            for u, e in p.expects.items():
                if e.rule == MUST and e.answers == 0:
                    if p.transport == 'good':
                        self.violation('good-missing', p, 'no reply to a %s' % e.kind, e.kind)
                    elif not p.closed and not p.stalled:
                        self.violation('must-answer-missing', p, 'no reply to a %s (uuid %s)' % (e.kind, u.hex()), e.kind)
                        if e.kind == 'long_bin_name':
                            self.violation('long-name-error', p, 'no reply', e.kind)

    def final_check(self):
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, self.final_id)
        sock.setsockopt(zmq.PROBE_ROUTER, 1)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.connect(self.args.endpoint)
        end = time.monotonic() + FINAL_WAIT
        u = self.g.uuid()
        msg = [self.service, b'', VERSION, u, bytes([WORK]), pack(['hello', ['final'], {}])]
        self.final_ok = False
        while time.monotonic() < end:
            try:
                sock.send_multipart(msg, flags=zmq.NOBLOCK)
                break
            except zmq.ZMQError as exc:
                if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                    raise
            sock.poll(5)                      # nothing to await: the route appears silently
        while time.monotonic() < end:
            if not sock.poll(max(int((end - time.monotonic()) * 1000), 1)):
                break
            frames = sock.recv_multipart()
            if len(frames) == 6 and frames[3] == u:
                try:
                    self.final_ok = frames[4] == bytes([OK]) and unpack_reply(frames[5]) == 'Hello final'
                except Exception:
                    self.final_ok = False
                break
        sock.close()
        if not self.final_ok:
            self.violation('final-call', None, 'a fresh caller got no OK within %.1fs' % FINAL_WAIT)

    def close(self):
        for p in self.peers:
            if p.transport == 'raw':
                p.conn.close()
            else:
                p.sock.close()

    def summary(self):
        raw = [p for p in self.peers if p.transport == 'raw']
        total = sum(self.violations.values())
        groups = {}
        for rule, n in self.violations.items():
            g = RULE_GROUPS.get(rule, 'other')
            groups[g] = groups.get(g, 0) + n
        return {
            'seed': self.args.seed, 'count': self.args.count, 'sent': self.sent,
            'sent_by_kind': self.sent_by_kind, 'sent_by_transport': self.sent_by_transport,
            'replies': sum(p.replies for p in self.peers), 'replies_by_type': self.replies_by_type,
            'server_probes': self.server_probes,
            'good_calls': self.good_calls, 'good_ok': self.good_ok,
            'raw_peers': len(raw), 'raw_long_ids': sum(1 for p in raw if p.long_id),
            'raw_id_lengths': sorted(len(p.identity) for p in raw),
            'raw_closed': sum(1 for p in raw if p.closed),
            'aborted': self.aborted, 'final_ok': self.final_ok,
            'sending_seconds': round(self.sending_time, 2), 'elapsed_seconds': round(self.elapsed, 2),
            'violations': total, 'violations_by_rule': self.violations,
            'violations_by_group': groups, 'violation_samples': self.samples,
        }


class _Bad:
    pass


_BAD = _Bad()


def main(argv):
    parser = argparse.ArgumentParser(prog='wirefuzz', description=__doc__.split('\n')[0])
    parser.add_argument('endpoint', help='tcp://HOST:PORT of the server')
    parser.add_argument('service')
    parser.add_argument('--seed', type=int, default=None, help='default: $PSEUD_FUZZ_SEED, else 1')
    parser.add_argument('--count', type=int, default=3000, help='messages to send')
    parser.add_argument('--time-limit', type=float, default=20.0, help='seconds of sending, at most')
    parser.add_argument('--max-id-len', type=int, default=2000, help='longest raw routing id')
    parser.add_argument('--raw-share', type=float, default=0.3, help='share of messages from raw peers')
    parser.add_argument('--router-peers', type=int, default=2)
    parser.add_argument('--dealer-peers', type=int, default=2)
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = int(os.environ.get('PSEUD_FUZZ_SEED') or 1)
    if not args.endpoint.startswith('tcp://') or args.router_peers < 1 or args.dealer_peers < 1:
        parser.error('a tcp:// endpoint and at least one ROUTER and one DEALER peer')
    if not 1 <= args.max_id_len <= 1 << 20 or not 0 <= args.raw_share <= 0.9:
        parser.error('--max-id-len 1..1048576, --raw-share 0..0.9')
    sys.stderr.write('wirefuzz: seed %d (set PSEUD_FUZZ_SEED or --seed to replay)\n' % args.seed)
    sys.stderr.flush()
    fuzz = Fuzz(args)
    try:
        fuzz.run()
    finally:
        fuzz.close()
    out = fuzz.summary()
    sys.stdout.write(json.dumps(out, sort_keys=True) + '\n')
    sys.stdout.flush()
    return 0 if out['violations'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
