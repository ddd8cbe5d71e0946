#!/usr/bin/python3
"""attacker: hostile pseud peers against spec/servers/identity.lua
(DESIGN.md section 4.1: a peer is its user id; a routing id is only an
address it chooses). Each scenario drives several pyzmq peers from one
thread, prints one JSON object and exits 0; every wait has a deadline.

  spoof     ENDPOINT       mallory (PLAIN) takes the routing id 'alice'
                           while user alice is not connected, then while
                           she is: send_to('alice') must never reach mallory
  takeover  ENDPOINT       alice calls slow(0.5) and leaves; mallory logs in
                           on routing id 'alice' (silent, then noisy): she
                           must get nothing of alice's
  takeover-anon ENDPOINT   the same without credentials (noop_auth_backend,
                           where the routing id is the user id)
  forged    ENDPOINT       the server calls alice; mallory, who learnt the
                           uuid, answers first: only alice's answer counts
  unknown   ENDPOINT       a PLAIN login that does not exist is verified
                           against the dummy hash (the pool's counters)
  flood     ENDPOINT N S   N peers (another process) log in with wrong
                           passwords for S seconds while a logged-in peer
                           calls whoami in a loop: its latencies (p50, p99,
                           max) and call count
  long      ENDPOINT       backend 'hello': peers log in by HELLO as 'u' * N
                           (N up to the 255-byte limit of a user id, and past
                           it) and call whoami and routed (a predicate reads
                           the id)
  curve     ENDPOINT SERVERKEY  untrusted_curve: alice logs in by HELLO and
                           serves whoami; bob asks the server to send_to('alice')
  churn     ENDPOINT N     N DEALERs, routing ids c0..cN-1, each send one
                           HEARTBEAT and close (any server): the connections
                           a peer can make come and go
  frontflood ENDPOINT RATE SECONDS
                           new connections at RATE a second for SECONDS, each
                           calling spin(0.02) once (every call a new idle
                           peer's: ahead of the queue, and each uses up a
                           slice); meanwhile a peer with two slow(0.01) calls
                           in flight (its woken handlers wait their turn):
                           when its first is answered
  deadline  ENDPOINT RATE  a busy peer queues 300 spin(0.02); a victim sends
                           slow(0.01) and slow(5) (its woken handler waits its
                           turn behind them); then new connections at RATE a
                           second, each calling spin(0.02) once, until the
                           victim's first call ends: when, and how
  autoid    ENDPOINT       mallory claims 00 6b 8b 45 67, the routing id an
                           unseeded libzmq 4.3 ROUTER gives its first anonymous
                           peer, and stays silent; then an anonymous DEALER
                           connects (libzmq asserts if its automatic id is
                           taken) and calls whoami: its reply and routing id
Passwords (see identity_spec.lua): alice/wonderland, bob/builder,
mallory/evil.
"""
import json
import sys
import time
import uuid

import msgpack
import zmq

VERSION = b'v1'
OK, HELLO, WORK, AUTHENTICATED, ERROR, UNAUTHORIZED = 0x01, 0x02, 0x03, 0x04, 0x10, 0x11
HEARTBEAT = 0x06
SERVICE = b'service'


def pack(v):
    return msgpack.packb(v, use_bin_type=True)


def unpack(b):
    return msgpack.unpackb(b, raw=False)


def peer(ctx, endpoint, user=None, password=None, identity=None, probe=True, curve=None):
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.ROUTER_MANDATORY, 1)
    if probe:
        s.setsockopt(zmq.PROBE_ROUTER, 1)
    if user is not None:
        s.setsockopt(zmq.PLAIN_USERNAME, user.encode())
        s.setsockopt(zmq.PLAIN_PASSWORD, password.encode())
    if curve:
        s.setsockopt(zmq.CURVE_SERVERKEY, curve['server'].encode())
        s.setsockopt(zmq.CURVE_PUBLICKEY, curve['public'].encode())
        s.setsockopt(zmq.CURVE_SECRETKEY, curve['secret'].encode())
    if identity is not None:
        s.setsockopt(zmq.ROUTING_ID, identity.encode())
    s.connect(endpoint)
    return s


def send(sock, typ, body, u=None, deadline=None):
    u = u or uuid.uuid4().bytes
    deadline = deadline or time.monotonic() + 5
    while True:
        try:
            sock.send_multipart([SERVICE, b'', VERSION, u, bytes([typ]), body], flags=zmq.NOBLOCK)
            return u
        except zmq.ZMQError as e:
            if e.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)            # not routable until the handshake is done


def call(sock, name, args, timeout=5.0, on_work=None):
    """WORK name(args); answer the server's WORK meanwhile with on_work."""
    u = send(sock, WORK, pack([name, args, {}]))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sock.poll(int((deadline - time.monotonic()) * 1000) + 1):
            break
        f = sock.recv_multipart()
        if len(f) == 6 and f[4] == bytes([WORK]) and on_work:
            on_work(sock, f)
        elif len(f) == 6 and f[3] == u:
            return f[4][0], unpack(f[5]) if f[4][0] in (OK, ERROR) else f[5]
    return None, None


def answer(text):
    def on_work(sock, f):
        sock.send_multipart([f[0], b'', VERSION, f[3], bytes([OK]), pack(text)])
    return on_work


def drain(socks, seconds, on_work=None):
    """Everything the sockets receive for `seconds`: {index: [frames...]}."""
    got = {i: [] for i in range(len(socks))}
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for s, _ in poller.poll(int((end - time.monotonic()) * 1000) + 1):
            f = s.recv_multipart()
            i = socks.index(s)
            got[i].append(f)
            if on_work and len(f) == 6 and f[4] == bytes([WORK]):
                on_work(i, s, f)
    return got


def registered(sock):
    """A call that proves the login went through (the server knows us).
    Also a barrier: the server reads a connection in order, so once this is
    answered it has read everything the socket sent before."""
    t, v = call(sock, 'whoami', [])
    return v if t == OK else None


def wait_stats(sock, done, timeout=5.0):
    """Poll the password pool's counters until done(stats) or the deadline;
    returns the last stats seen."""
    deadline = time.monotonic() + timeout
    while True:
        stats = call(sock, 'stats', [])[1]
        if (stats and done(stats)) or time.monotonic() >= deadline:
            return stats
        time.sleep(0.01)               # poll interval, bounded by the deadline


def scenario_spoof(ctx, ep):
    out = {}
    mallory = peer(ctx, ep, 'mallory', 'evil', identity='alice')
    bob = peer(ctx, ep, 'bob', 'builder')
    out['mallory_is'] = registered(mallory)
    out['bob_is'] = registered(bob)
    stolen = []
    # alice is not connected: the routing id 'alice' is mallory's
    u = send(bob, WORK, pack(['ask', ['alice'], {}]))
    got = drain([bob, mallory], 1.0,
                on_work=lambda i, s, f: (stolen.append(unpack(f[5])[0]),
                                         s.send_multipart([f[0], b'', VERSION, f[3], bytes([OK]),
                                                           pack('I am mallory')])) if i == 1 else None)
    replies = [unpack(f[5]) for f in got[0] if len(f) == 6 and f[3] == u]
    out['absent'] = replies[0] if replies else None
    # now alice is there (routing id a1): only she is asked
    alice = peer(ctx, ep, 'alice', 'wonderland', identity='a1')
    out['alice_is'] = registered(alice)
    u = send(bob, WORK, pack(['ask', ['alice'], {}]))

    def on_work(i, s, f):
        if i == 1:
            stolen.append(unpack(f[5])[0])
        s.send_multipart([f[0], b'', VERSION, f[3], bytes([OK]),
                          pack('I am alice' if i == 2 else 'I am mallory')])
    got = drain([bob, mallory, alice], 1.0, on_work=on_work)
    replies = [unpack(f[5]) for f in got[0] if len(f) == 6 and f[3] == u]
    out['present'] = replies[0] if replies else None
    out['mallory_got_work'] = stolen
    return out


def scenario_takeover(ctx, ep, noisy, anon=False):
    out = {}
    # A routing id of each run's own: the silent run's mallory may still
    # hold 'alice' at the server when the noisy run's alice connects, and
    # libzmq then leaves her connection unread (a duplicate id is not
    # handed over): both her calls went unanswered, 1 run in about 40.
    rid = 'alice-noisy' if noisy else 'alice'
    if anon:                             # noop_auth_backend: no credentials, the routing id is all
        alice = peer(ctx, ep, identity=rid)
    else:
        alice = peer(ctx, ep, 'alice', 'wonderland', identity=rid)
    out['alice_is'] = registered(alice)
    send(alice, WORK, pack(['slow', [0.6], {}]))
    out['alice_still'] = registered(alice)    # the server has read the WORK before she goes
    alice.close()
    if anon:
        mallory = peer(ctx, ep, identity=rid, probe=noisy)
    else:
        mallory = peer(ctx, ep, 'mallory', 'evil', identity=rid, probe=noisy)
    got = drain([mallory], 1.5)
    out['mallory_got'] = [[f[4].hex(), f[5].decode('utf-8', 'replace')] for f in got[0]
                          if len(f) == 6]
    if noisy:
        out['mallory_is'] = registered(mallory)
    return out


def scenario_forged(ctx, ep):
    alice = peer(ctx, ep, 'alice', 'wonderland', identity='a1')
    mallory = peer(ctx, ep, 'mallory', 'evil', identity='m1')
    bob = peer(ctx, ep, 'bob', 'builder')
    out = {'alice_is': registered(alice), 'mallory_is': registered(mallory)}
    u = send(bob, WORK, pack(['ask', ['alice'], {}]))
    answered = []

    def on_work(i, s, f):
        if i == 1 and not answered:
            # mallory "learnt" the uuid: she answers first, then alice does
            mallory.send_multipart([SERVICE, b'', VERSION, f[3], bytes([OK]), pack('forged')])
            mallory.send_multipart([SERVICE, b'', VERSION, f[3], bytes([ERROR]),
                                    pack(['ValueError', 'forged', ''])])
            registered(mallory)        # the server has read both forgeries first
            s.send_multipart([f[0], b'', VERSION, f[3], bytes([OK]), pack('genuine')])
            answered.append(1)
    got = drain([bob, alice], 1.5, on_work=on_work)
    replies = [unpack(f[5]) for f in got[0] if len(f) == 6 and f[3] == u]
    out['bob_got'] = replies
    return out


def scenario_unknown(ctx, ep):
    bob = peer(ctx, ep, 'bob', 'builder')
    before = call(bob, 'stats', [])[1]
    # each handshake is refused (nothing comes to the socket): wait for the
    # pool to count its password check, then close before libzmq retries
    zed = peer(ctx, ep, 'zed', 'whatever', probe=True)
    wait_stats(bob, lambda s: s['dummy'] > before['dummy'])
    zed.close()
    wrong = peer(ctx, ep, 'alice', 'nope', probe=True)
    wait_stats(bob, lambda s: s['checked'] >= before['checked'] + 2)
    wrong.close()
    after = call(bob, 'stats', [])[1]
    return {'before': before, 'after': after}


def flood_logins(ctx, ep, n, seconds):
    """Keep n wrong PLAIN logins in the air for `seconds` (libzmq retries a
    refused handshake by itself); fresh attackers replace half of them every
    0.1 s. Returns how many sockets were made."""
    floods, made = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        while len(floods) < n:
            floods.append(peer(ctx, ep, 'alice', 'guess%d' % made))
            made += 1
        time.sleep(0.1)
        for s in floods[:n // 2]:
            s.close()
        floods = floods[n // 2:]
    for s in floods:
        s.close()
    return made


def scenario_flood(ctx, ep, n, seconds):
    """The flood runs in a process of its own, so what the good client
    measures is the server, not this process's sockets."""
    import subprocess
    good = peer(ctx, ep, 'bob', 'builder')
    assert registered(good) == 'bob'
    child = None
    if n > 0:
        child = subprocess.Popen([sys.executable, __file__, 'flood-only', ep, str(n), str(seconds)],
                                 stdout=subprocess.PIPE)
        # Kept: the flood is under way before measuring. Waiting instead for
        # its first logins to reach the pool (wait_stats) starts measuring at
        # the flood's very start, and then a call sometimes waits ~0.2 s
        # (max < 0.09 fails, on 2 CPUs): not yet known whether that is the
        # server or the flood process's start-up taking the CPUs.
        time.sleep(0.2)
    lat = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        t, v = call(good, 'whoami', [], timeout=5)
        lat.append(time.monotonic() - t0)
        if t != OK:
            return {'error': 'call failed', 'type': t}
    made = 0
    if child:
        out, _ = child.communicate(timeout=seconds + 30)
        made = json.loads(out)['made']
    lat.sort()
    stats = call(good, 'stats', [])[1]
    return {'calls': len(lat), 'p50': lat[len(lat) // 2], 'p99': lat[int(len(lat) * 0.99)],
            'max': lat[-1], 'logins': made, 'stats': stats}


def scenario_curve(ctx, ep, keys):
    def hello_flow(sock, login, password):
        u = send(sock, WORK, pack(['whoami', [], {}]))
        deadline = time.monotonic() + 5
        state = 'work'
        while time.monotonic() < deadline and sock.poll(int((deadline - time.monotonic()) * 1000) + 1):
            f = sock.recv_multipart()
            if f[4][0] == UNAUTHORIZED and state == 'work':
                send(sock, HELLO, pack([login, password]))
                state = 'hello'
            elif f[4][0] == AUTHENTICATED:
                send(sock, WORK, pack(['whoami', [], {}]), u=u)   # replayed
                state = 'replay'
            elif f[4][0] == OK and f[3] == u:
                return unpack(f[5])
            elif f[4][0] == UNAUTHORIZED:
                return 'UNAUTHORIZED'
        return None
    alice = peer(ctx, ep, curve=keys['alice'], identity='py-alice')
    bob = peer(ctx, ep, curve=keys['bob'])
    out = {'alice_is': hello_flow(alice, 'alice', 'wonderland'),
           'bob_is': hello_flow(bob, 'bob', 'builder')}
    t, v = call(bob, 'ask', ['alice'], timeout=5, on_work=None) if False else (None, None)
    u = send(bob, WORK, pack(['ask', ['alice'], {}]))
    got = drain([bob, alice], 1.5, on_work=lambda i, s, f: s.send_multipart(
        [f[0], b'', VERSION, f[3], bytes([OK]), pack('python alice')]) if i == 1 else None)
    replies = [unpack(f[5]) for f in got[0] if len(f) == 6 and f[3] == u]
    out['ask_alice'] = replies[0] if replies else None
    return out


def scenario_long(ctx, ep):
    out = {}
    for n in (1, 254, 255, 256):
        login = 'u' * n
        s = peer(ctx, ep)
        u = send(s, HELLO, pack([login, 'pw']))
        deadline = time.monotonic() + 5
        got = None
        while got is None and time.monotonic() < deadline and \
                s.poll(int((deadline - time.monotonic()) * 1000) + 1):
            f = s.recv_multipart()
            if len(f) == 6 and f[3] == u:
                got = f[4][0]
        res = {'hello': got}
        for name in ('whoami', 'routed'):
            t, v = call(s, name, [])
            res[name] = v if t == OK else [t, v if not isinstance(v, bytes) else v.hex()]
        out[str(n)] = json.loads(json.dumps(res, default=lambda b: b.hex()))
        s.close()
    return out


def handshaken(sock):
    """A monitor on `sock` that its handshake completed (bounded wait)."""
    mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    ok = mon.poll(5000) != 0
    if ok:
        mon.recv_multipart()
    sock.disable_monitor()
    mon.close(0)
    return ok


class NewPeers:
    """A stream of newcomers: a new connection every 1/rate seconds, each
    sending one WORK `body` and closed a second later."""

    def __init__(self, ctx, ep, rate, body):
        self.ctx, self.ep, self.rate, self.body = ctx, ep, rate, body
        self.made, self.open = 0, []

    def step(self, elapsed, opening=True):
        while opening and self.made < self.rate * elapsed:
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(self.ep)
            s.send_multipart([b'', VERSION, uuid.uuid4().bytes, bytes([WORK]), self.body])
            self.open.append((time.monotonic(), s))
            self.made += 1
        while self.open and time.monotonic() - self.open[0][0] > 1.0:
            self.open.pop(0)[1].close(0)

    def close(self):
        for _, s in self.open:
            s.close(0)
        self.open = []


def scenario_frontflood(ctx, ep, rate, seconds):
    victim = peer(ctx, ep, identity='victim')
    registered(victim)                          # connected and answered once
    stream = NewPeers(ctx, ep, rate, pack(['spin', [0.02], {}]))
    start, sent_at, first, kind = time.monotonic(), None, None, None
    while time.monotonic() - start < seconds + 10 and first is None:
        now = time.monotonic() - start
        stream.step(now, now < seconds)
        if sent_at is None and now > 0.5:
            us = [send(victim, WORK, pack(['slow', [0.01], {}])) for _ in range(2)]
            sent_at = time.monotonic()
        if sent_at is not None and victim.poll(10):
            f = victim.recv_multipart()
            if len(f) == 6 and f[3] in us:
                first, kind = time.monotonic() - sent_at, f[4][0]
    stream.close()
    victim.close(0)
    return {'connections': stream.made, 'first_seconds': first, 'first_type': kind,
            'attack_seconds': seconds}


def scenario_deadline(ctx, ep, rate):
    victim = peer(ctx, ep, identity='victim')
    registered(victim)
    busy = peer(ctx, ep, identity='busy')
    registered(busy)
    spin = pack(['spin', [0.02], {}])
    for _ in range(300):
        send(busy, WORK, spin)
    registered(victim)                          # the 300 are read (in order, before this)
    us = [send(victim, WORK, pack(['slow', [t], {}])) for t in (0.01, 5)]
    stream = NewPeers(ctx, ep, rate, spin)
    sent, first, kind = time.monotonic(), None, None
    while first is None and time.monotonic() - sent < 15:
        now = time.monotonic() - sent
        stream.step(now, now < 8)
        if victim.poll(10):
            f = victim.recv_multipart()
            if len(f) == 6 and f[3] == us[0]:
                first, kind = time.monotonic() - sent, f[4][0]
    stream.close()
    return {'connections': stream.made, 'first_seconds': first, 'first_type': kind}


def scenario_autoid(ctx, ep):
    mallory = ctx.socket(zmq.DEALER)
    mallory.setsockopt(zmq.LINGER, 0)
    mallory.setsockopt(zmq.ROUTING_ID, bytes.fromhex('006b8b4567'))
    mon = mallory.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    mallory.connect(ep)
    out = {'mallory_handshake': mon.poll(5000) != 0}
    mallory.disable_monitor()
    mon.close(0)
    anon = ctx.socket(zmq.DEALER)               # no routing id: the ROUTER picks one
    anon.setsockopt(zmq.LINGER, 0)
    mon = anon.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    anon.connect(ep)
    out['anon_handshake'] = mon.poll(5000) != 0
    anon.disable_monitor()
    mon.close(0)
    u = uuid.uuid4().bytes
    anon.send_multipart([b'', VERSION, u, bytes([WORK]), pack(['whoami', [], {}])])
    out['reply'] = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and anon.poll(int((deadline - time.monotonic()) * 1000) + 1):
        f = anon.recv_multipart()
        if len(f) == 5 and f[2] == u and f[3] == bytes([OK]):
            v = unpack(f[4])
            out['reply'] = 'OK'
            # the host sends a string as msgpack str when its bytes are UTF-8
            # (then decoded here: encode them back as UTF-8), else as bin
            out['anon_id'] = v.hex() if isinstance(v, bytes) else v.encode('utf-8').hex()
            break
    mallory.close(0)
    anon.close(0)
    return out


def scenario_churn(ctx, ep, n):
    socks = []
    for i in range(n):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 2000)           # the HEARTBEAT leaves before the close
        s.setsockopt(zmq.ROUTING_ID, b'c%d' % i)
        s.connect(ep)
        s.send_multipart([b'', VERSION, b'', bytes([HEARTBEAT]), b''])
        socks.append(s)
    for s in socks:
        s.close()
    return {'sent': n}


def main(argv):
    ctx = zmq.Context.instance()
    what, ep = argv[1], argv[2]
    if what == 'spoof':
        out = scenario_spoof(ctx, ep)
    elif what == 'takeover':
        out = {'silent': scenario_takeover(ctx, ep, False), 'noisy': scenario_takeover(ctx, ep, True)}
    elif what == 'takeover-anon':
        out = {'silent': scenario_takeover(ctx, ep, False, True),
               'noisy': scenario_takeover(ctx, ep, True, True)}
    elif what == 'forged':
        out = scenario_forged(ctx, ep)
    elif what == 'unknown':
        out = scenario_unknown(ctx, ep)
    elif what == 'flood':
        out = scenario_flood(ctx, ep, int(argv[3]), float(argv[4]))
    elif what == 'flood-only':
        out = {'made': flood_logins(ctx, ep, int(argv[3]), float(argv[4]))}
    elif what == 'long':
        out = scenario_long(ctx, ep)
    elif what == 'churn':
        out = scenario_churn(ctx, ep, int(argv[3]))
    elif what == 'frontflood':
        out = scenario_frontflood(ctx, ep, float(argv[3]), float(argv[4]))
    elif what == 'deadline':
        out = scenario_deadline(ctx, ep, float(argv[3]))
    elif what == 'autoid':
        out = scenario_autoid(ctx, ep)
    elif what == 'curve':
        keys = json.loads(argv[3])
        out = scenario_curve(ctx, ep, keys)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(out))
    sys.stdout.flush()
    ctx.destroy(linger=0)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
