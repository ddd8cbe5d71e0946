#!/usr/bin/python3
"""pypeer: an independent pseud protocol v1 peer for the busted specs.

It speaks the wire format of DESIGN.md section 1 with python3-zmq and
python3-msgpack only (not the pseud library), so that a pseud-lua host is
checked against a second implementation written from the protocol text.
Every subcommand prints one JSON object on stdout and exits 0 when it saw
what it was asked to see; every wait is bounded by a deadline.

  call   ENDPOINT SERVICE NAME ARGS_JSON [--kwargs JSON] [--bin-arg HEX]
         [--count N] [--timeout S] [--settle S] [--identity ID]
         ROUTER client (ZMQ_PROBE_ROUTER, ZMQ_ROUTER_MANDATORY): sends WORK,
         waits for the reply, checks its frames byte for byte.
  batch  ENDPOINT SERVICE CALLS_JSON [--timeout S] [--settle S]
         several WORK ([[name, args, kwargs], ...]) sent at once on one
         socket; replies matched by uuid, arrival order reported.
  req    ENDPOINT NAME ARGS_JSON [--kwargs JSON] [--timeout S]
         the same through a REQ socket (pseud's SyncClient).
  raw    ENDPOINT SERVICE --frames F,F,... [--expect-reply|--expect-none]
         [--timeout S] [--settle S] [--then CALL_JSON]
         sends arbitrary frames after the routing id. Each F is hex, or parts
         joined by '+', a part being HEX or HEX*COUNT (repeated), so that a
         100,000-level body fits on a command line: '91*100000+c0'.
         --then sends one more WORK on the same connection afterwards and
         waits for its reply (reported as "then").
  server ENDPOINT SERVICE
         a ROUTER server answering WORK the way Python pseud 1.0 does; prints
         'ready <endpoint>' and runs until SIGTERM/SIGINT.

msgpack: packb(use_bin_type=True), unpackb(raw=False), as Python pseud.
Exit status: 0 as asked, 1 timeout or unexpected outcome, 2 usage,
3 a reply that breaks the wire format.
"""

import argparse
import json
import os
import signal
import sys
import time
import traceback
import uuid

import msgpack
import zmq

VERSION = b'v1'
OK, HELLO, WORK, AUTHENTICATED, HEARTBEAT, ERROR, UNAUTHORIZED = (
    0x01, 0x02, 0x03, 0x04, 0x06, 0x10, 0x11)


# ---------------------------------------------------------------- values

def canon(value):
    """Python repr with dict keys sorted: exact types, stable text."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: repr(kv[0]))
        return '{' + ', '.join('%s: %s' % (canon(k), canon(v)) for k, v in items) + '}'
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(canon(v) for v in value) + ']'
    return repr(value)


def jsonable(value):
    """What json.dumps can print: bytes and ext become tagged objects."""
    if isinstance(value, (bytes, bytearray)):
        return {'__bytes__': bytes(value).hex()}
    if isinstance(value, msgpack.ExtType):
        return {'__ext__': value.code, 'data': value.data.hex()}
    if isinstance(value, dict):
        return {k if isinstance(k, str) else canon(k): jsonable(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def pack(value):
    return msgpack.packb(value, use_bin_type=True)


def unpack(body):
    return msgpack.unpackb(body, raw=False)


def parse_frame(spec):
    """'a1b2', '91*100000+c0', '' -> bytes."""
    out = bytearray()
    if spec == '':
        return bytes(out)
    for part in spec.split('+'):
        hexpart, star, count = part.partition('*')
        chunk = bytes.fromhex(hexpart)
        out += chunk * (int(count) if star else 1)
    return bytes(out)


def emit(obj, status=0):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + '\n')
    sys.stdout.flush()
    return status


def log(*parts):
    sys.stderr.write('pypeer[%d]: %s\n' % (os.getpid(), ' '.join(str(p) for p in parts)))
    sys.stderr.flush()


# ---------------------------------------------------------------- replies

def describe_reply(frames, service=None, sent_uuid=None, req=False):
    """Decode one reply and check it against the wire format.

    ROUTER side: [service, '', 'v1', uuid, type, body]; REQ side: the last four.
    `problems` lists every byte-level deviation; empty means well-formed.
    """
    problems = []
    out = {'frames_hex': [f.hex() for f in frames], 'frame_count': len(frames)}
    expect = 4 if req else 6
    if len(frames) != expect:
        problems.append('expected %d frames, got %d' % (expect, len(frames)))
    pseud = frames[-4:] if len(frames) >= 4 else [b''] * 4
    if not req and len(frames) == 6:
        if service is not None and frames[0] != service:
            problems.append('routing id %r is not the service %r' % (frames[0], service))
        if frames[1] != b'':
            problems.append('delimiter frame is not empty: %r' % frames[1])
    version, ruuid, rtype, body = pseud
    if version != VERSION:
        problems.append('version frame %r is not b"v1"' % version)
    out['uuid_hex'] = ruuid.hex()
    if sent_uuid is not None:
        out['uuid_matches'] = ruuid == sent_uuid
        if ruuid != sent_uuid:
            problems.append('uuid %s does not echo %s' % (ruuid.hex(), sent_uuid.hex()))
    if len(rtype) != 1:
        problems.append('type frame has %d bytes' % len(rtype))
        out['type'] = None
    else:
        out['type'] = rtype[0]
    out['body_hex'] = body.hex()
    if out['type'] in (OK, ERROR, HELLO, WORK):
        try:
            value = unpack(body)
            out['body'] = jsonable(value)
            out['body_repr'] = canon(value)
        except Exception as exc:  # a reply we cannot decode is a finding
            problems.append('body is not msgpack: %s' % exc)
        if out['type'] == ERROR and 'body' in out:
            value = unpack(body)
            if not (isinstance(value, list) and len(value) == 3
                    and all(isinstance(v, str) for v in value)):
                problems.append('ERROR body is not [str, str, str]: %s' % canon(value))
    else:
        out['body_text'] = body.decode('utf-8', 'replace')
    out['problems'] = problems
    out['well_formed'] = not problems
    return out


# ---------------------------------------------------------------- client side

CURVE_KEYS = {}   # set from --curve-* options: a CURVE client (keys in Z85)


def router_client(ctx, identity):
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    if CURVE_KEYS:
        sock.setsockopt(zmq.CURVE_SERVERKEY, CURVE_KEYS['server'].encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, CURVE_KEYS['public'].encode())
        sock.setsockopt(zmq.CURVE_SECRETKEY, CURVE_KEYS['secret'].encode())
    sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.setsockopt(zmq.PROBE_ROUTER, 1)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return sock


def send_when_routable(sock, frames, deadline):
    """ROUTER_MANDATORY: EHOSTUNREACH until the handshake with the server is
    done. Retry until the deadline; True when sent."""
    while True:
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:
            if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                raise
        if time.monotonic() >= deadline:
            return False
        # Nothing to await on the socket itself: the peer appears in the
        # ROUTER's table without an event. Back off briefly and retry.
        time.sleep(0.005)


def recv_until(sock, deadline):
    """One multipart message, or None when the deadline passes."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not sock.poll(int(remaining * 1000) + 1, zmq.POLLIN):
        return None
    return sock.recv_multipart()


def identity_of(args):
    if args.identity:
        return args.identity.encode()
    return b'pypeer-' + uuid.uuid4().hex[:12].encode()


def run_calls(args, calls):
    """Send every (name, args, kwargs) at once; wait for one reply each.
    Returns (replies in send order, arrival order of indexes, extra replies)."""
    ctx = zmq.Context.instance()
    service = args.service.encode()
    sock = router_client(ctx, identity_of(args))
    sock.connect(args.endpoint)
    deadline = time.monotonic() + args.timeout
    uuids = []
    for name, cargs, ckwargs in calls:
        u = uuid.uuid4().bytes
        uuids.append(u)
        body = pack([name, cargs, ckwargs])
        if not send_when_routable(sock, [service, b'', VERSION, u, bytes([WORK]), body], deadline):
            sock.close()
            return None, 'server %s never became routable' % args.endpoint, []
    index = {u: i for i, u in enumerate(uuids)}
    replies = [None] * len(calls)
    order, extra = [], []
    while len(order) < len(calls):
        frames = recv_until(sock, deadline)
        if frames is None:
            break
        if len(frames) == 2 and frames[1] == b'':
            continue  # the server's own probe, if it ever sends one
        ruuid = frames[3] if len(frames) == 6 else None
        i = index.get(ruuid)
        if i is None or replies[i] is not None:
            extra.append(describe_reply(frames, service))
            continue
        replies[i] = describe_reply(frames, service, uuids[i])
        replies[i]['sent_uuid_hex'] = uuids[i].hex()
        order.append(i)
    # Exactly one outcome per call: linger --settle seconds for duplicates.
    settle_deadline = time.monotonic() + args.settle
    while args.settle > 0:
        frames = recv_until(sock, settle_deadline)
        if frames is None:
            break
        extra.append(describe_reply(frames, service))
    sock.close()
    return replies, order, extra


def json_arg(text, what):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SystemExit('pypeer: %s is not JSON: %s' % (what, exc))


def cmd_call(args):
    cargs = json_arg(args.args, 'ARGS_JSON')
    if not isinstance(cargs, list):
        raise SystemExit('pypeer: ARGS_JSON must be a JSON array')
    for hexarg in args.bin_arg or []:
        cargs.append(bytes.fromhex(hexarg))
    ckwargs = json_arg(args.kwargs, '--kwargs')
    calls = [(args.name, cargs, ckwargs)] * args.count
    replies, order, extra = run_calls(args, calls)
    if replies is None:
        return emit({'error': order}, 1)
    missing = sum(1 for r in replies if r is None)
    if args.count == 1:
        out = replies[0] or {'error': 'no reply within %.2fs' % args.timeout}
    else:
        out = {'replies': replies, 'missing': missing}
    out['extra'] = extra
    if missing:
        return emit(out, 1)
    if extra or any(not r['well_formed'] for r in replies):
        return emit(out, 3)
    return emit(out)


def cmd_batch(args):
    calls = json_arg(args.calls, 'CALLS_JSON')
    if not (isinstance(calls, list) and all(isinstance(c, list) and len(c) == 3 for c in calls)):
        raise SystemExit('pypeer: CALLS_JSON must be [[name, args, kwargs], ...]')
    replies, order, extra = run_calls(args, [tuple(c) for c in calls])
    if replies is None:
        return emit({'error': order}, 1)
    missing = sum(1 for r in replies if r is None)
    out = {'replies': replies, 'order': [i + 1 for i in order],  # 1-based for Lua
           'missing': missing, 'extra': extra}
    if missing:
        return emit(out, 1)
    if extra or any(not r['well_formed'] for r in replies):
        return emit(out, 3)
    return emit(out)


def cmd_req(args):
    cargs = json_arg(args.args, 'ARGS_JSON')
    ckwargs = json_arg(args.kwargs, '--kwargs')
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)
    deadline = time.monotonic() + args.timeout
    u = uuid.uuid4().bytes
    # REQ adds the empty delimiter itself and queues until connected.
    sock.send_multipart([VERSION, u, bytes([WORK]), pack([args.name, cargs, ckwargs])])
    frames = recv_until(sock, deadline)
    sock.close()
    if frames is None:
        return emit({'error': 'no reply within %.2fs' % args.timeout}, 1)
    out = describe_reply(frames, sent_uuid=u, req=True)
    out['sent_uuid_hex'] = u.hex()
    return emit(out, 0 if out['well_formed'] else 3)


def cmd_raw(args):
    ctx = zmq.Context.instance()
    service = args.service.encode()
    frames = [parse_frame(f) for f in args.frames.split(',')]
    sock = router_client(ctx, identity_of(args))
    sock.connect(args.endpoint)
    deadline = time.monotonic() + args.timeout
    if not send_when_routable(sock, [service] + frames, deadline):
        sock.close()
        return emit({'error': 'server %s never became routable' % args.endpoint}, 1)
    # The wait starts once the frames are out: a non-event is awaited for the
    # full --timeout after sending.
    deadline = time.monotonic() + args.timeout
    replies = []
    while True:
        got = recv_until(sock, deadline)
        if got is None:
            break
        replies.append(describe_reply(got, service))
        if args.expect == 'reply' and len(replies) == 1:
            # One reply is what was asked; linger --settle seconds so that a
            # second one (a message answered twice) is seen too.
            deadline = time.monotonic() + args.settle
    out = {'replies': replies, 'sent_sizes': [len(f) for f in frames]}
    then_ok = True
    if args.then:
        # A well-formed call on the same connection: ZeroMQ keeps one
        # connection's messages in order, so its reply proves the server has
        # handled (and logged) the frames above.
        name, cargs, ckwargs = json_arg(args.then, '--then')
        u = uuid.uuid4().bytes
        sock.send_multipart([service, b'', VERSION, u, bytes([WORK]), pack([name, cargs, ckwargs])])
        deadline = time.monotonic() + args.then_timeout
        out['then'] = None
        while True:
            got = recv_until(sock, deadline)
            if got is None:
                break
            if len(got) == 6 and got[3] == u:
                out['then'] = describe_reply(got, service, u)
                break
            replies.append(describe_reply(got, service))
        then_ok = out['then'] is not None and out['then']['well_formed']
    sock.close()
    if args.expect == 'reply':
        return emit(out, 0 if replies and then_ok else 1)
    if args.expect == 'none':
        return emit(out, 0 if not replies and then_ok else 1)
    return emit(out, 0 if then_ok else 1)


# ---------------------------------------------------------------- server side

class ServiceNotFoundError(Exception):
    pass


def _hello(name):
    return 'Hello ' + name


def _echo(x):
    return x


def _fail():
    raise ValueError('bad input')


def _kw(**kw):
    return kw


def _dotted():
    return 'Done'


def _types():
    # The same value as spec/servers/basic.lua's types().
    return {'int': 1, 'negative': -5, 'big': 1 << 40, 'float': 1.0, 'half': 0.5,
            'str': 'h\u00e9llo', 'bytes': b'\x00\xff', 'nested': [1, [2, [3]]],
            'empty_array': [], 'empty_map': {}, 'null_in_array': [1, None, 3],
            'yes': True, 'no': False}


def _addition(a, b):
    return a + b


CALLABLES = {'hello': _hello, 'echo': _echo, 'fail': _fail, 'kw': _kw,
             'this.is.a.name': _dotted, 'types': _types, 'addition': _addition}
NO_REPLY = {'never'}


def serve_work(body):
    """(type, value) for a WORK body, as pseud 1.0's server computes them;
    None for calls that are never answered."""
    try:
        name, cargs, ckwargs = unpack(body)
        if name in NO_REPLY:
            return None
        fn = CALLABLES.get(name)
        if fn is None:
            raise ServiceNotFoundError(name)
        return OK, fn(*cargs, **ckwargs)
    except Exception as exc:  # pseud turns any exception into ERROR
        return ERROR, [type(exc).__name__, str(exc), traceback.format_exc()]


def raw_reply(body):
    """raw(HEX) is answered OK, raw_error(HEX) ERROR, with the bytes HEX
    spells as the body, as they are: a hostile server's reply (type, body),
    or None for every other call."""
    try:
        name, cargs, _ = unpack(body)
        if name in ('raw', 'raw_error') and len(cargs) == 1 and isinstance(cargs[0], str):
            return (OK if name == 'raw' else ERROR), bytes.fromhex(cargs[0])
    except Exception:
        pass
    return None


def cmd_server(args):
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, args.service.encode())
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.bind(args.endpoint)
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    sys.stdout.write('ready %s\n' % endpoint)
    sys.stdout.flush()
    hellos = 0
    while not stopping:
        try:
            if not sock.poll(100, zmq.POLLIN):
                continue  # wakes to look at the stop flag
            frames = sock.recv_multipart()
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EINTR:
                continue
            raise
        log('recv', ' '.join(f.hex() for f in frames))
        if len(frames) != 6 or frames[1] != b'' or frames[2] != VERSION or len(frames[4]) != 1:
            continue  # probes, heartbeats without body, garbage
        peer, _, _, muuid, mtype, body = frames
        if args.authloop and mtype[0] in (HELLO, WORK):
            hellos += mtype[0] == HELLO
            if mtype[0] == HELLO:
                log('hello', hellos)
            answer = AUTHENTICATED if mtype[0] == HELLO else UNAUTHORIZED
            sock.send_multipart([peer, b'', VERSION, muuid, bytes([answer]), b'welcome'], flags=zmq.NOBLOCK)
            continue
        if mtype[0] != WORK:
            continue
        raw = raw_reply(body)
        if raw is not None:
            reply = [peer, b'', VERSION, muuid, bytes([raw[0]]), raw[1]]
        else:
            outcome = serve_work(body)
            if outcome is None:
                continue
            rtype, value = outcome
            reply = [peer, b'', VERSION, muuid, bytes([rtype]), pack(value)]
        log('send', ' '.join(f.hex() for f in reply))
        try:
            sock.send_multipart(reply, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log('reply lost:', exc)
    sock.close()
    ctx.term()
    return 0


def cmd_heartbeats(args):
    """Send pseud HEARTBEATs ([service, '', 'v1', '', 0x06, '']) every
    --every seconds, --count times, then go silent (close)."""
    ctx = zmq.Context.instance()
    service = args.service.encode()
    sock = router_client(ctx, identity_of(args))
    sock.connect(args.endpoint)
    deadline = time.monotonic() + args.timeout
    sent = 0
    for _ in range(args.count):
        if not send_when_routable(sock, [service, b'', VERSION, b'', bytes([HEARTBEAT]), b''], deadline):
            break
        sent += 1
        time.sleep(args.every)  # the cadence is the point here, not a synchronisation
    sock.close()
    emit({'sent': sent}, 0 if sent == args.count else 1)
    return 0 if sent == args.count else 1


def cmd_hello_flow(args):
    """pseud's login conversation, frame by frame: WORK -> UNAUTHORIZED,
    HELLO [login, password] -> AUTHENTICATED or UNAUTHORIZED, then (when
    authenticated) the same WORK again -> OK. Prints every reply."""
    ctx = zmq.Context.instance()
    service = args.service.encode()
    sock = router_client(ctx, identity_of(args))
    sock.connect(args.endpoint)
    deadline = time.monotonic() + args.timeout
    work_uuid = uuid.uuid4().bytes
    work = [service, b'', VERSION, work_uuid, bytes([WORK]), pack([args.name, json_arg(args.args, 'ARGS'), {}])]
    out = {}
    hello_uuid = uuid.uuid4().bytes
    body = bytes.fromhex(args.hello_body) if args.hello_body else pack([args.login, args.password])
    hello = [service, b'', VERSION, hello_uuid, bytes([HELLO]), body]
    if not send_when_routable(sock, hello if args.hello_first else work, deadline):
        emit({'error': 'server never became routable'}, 1)
        return 1
    if not args.hello_first:
        out['work'] = describe_reply(recv_until(sock, deadline) or [], service, work_uuid)
        sock.send_multipart(hello)
    frames = recv_until(sock, deadline) or []
    out['hello'] = describe_reply(frames, service, hello_uuid)
    out['hello_text'] = frames[5].decode('utf-8', 'replace') if len(frames) == 6 else None
    if len(frames) == 6 and frames[4] == bytes([AUTHENTICATED]):
        sock.send_multipart(work)
        out['replay'] = describe_reply(recv_until(sock, deadline) or [], service, work_uuid)
    sock.close()
    emit(out, 0)
    return 0


def cmd_callee(args):
    """A pseud client with callables of its own (pseud's bidirectional
    mode): call NAME on the server and, until its reply comes, answer the
    WORK the server sends us. Prints the reply and every WORK served, with
    its frames checked."""
    ctx = zmq.Context.instance()
    service = args.service.encode()
    sock = router_client(ctx, identity_of(args))
    sock.connect(args.endpoint)
    deadline = time.monotonic() + args.timeout
    u = uuid.uuid4().bytes
    body = pack([args.name, json_arg(args.args, 'ARGS'), {}])
    if not send_when_routable(sock, [service, b'', VERSION, u, bytes([WORK]), body], deadline):
        emit({'error': 'server never became routable'}, 1)
        return 1
    served, reply = [], None
    while reply is None:
        frames = recv_until(sock, deadline)
        if frames is None:
            break
        if len(frames) == 6 and frames[4] == bytes([WORK]):
            ok = (frames[0] == service and frames[1] == b'' and frames[2] == VERSION
                  and len(frames[3]) == 16)
            name, cargs, _ = unpack(frames[5])
            served.append({'name': name, 'args': jsonable(cargs), 'frames_ok': ok,
                           'body': frames[5].hex()})
            rtype, value = serve_work(frames[5])
            sock.send_multipart([frames[0], b'', VERSION, frames[3], bytes([rtype]), pack(value)])
        elif len(frames) == 6 and frames[3] == u:
            reply = describe_reply(frames, service, u)
    sock.close()
    emit({'reply': reply, 'served': served}, 0 if reply else 1)
    return 0 if reply else 1


# ---------------------------------------------------------------- main

def main(argv):
    parser = argparse.ArgumentParser(prog='pypeer', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)

    def common(p, service=True):
        p.add_argument('endpoint')
        if service:
            p.add_argument('service')
        p.add_argument('--timeout', type=float, default=5.0)
        p.add_argument('--identity')
        p.add_argument('--curve-server-key')
        p.add_argument('--curve-public-key')
        p.add_argument('--curve-secret-key')

    p = sub.add_parser('call')
    common(p)
    p.add_argument('name')
    p.add_argument('args')
    p.add_argument('--kwargs', default='{}')
    p.add_argument('--bin-arg', action='append')
    p.add_argument('--count', type=int, default=1)
    p.add_argument('--settle', type=float, default=0.0,
                   help='after the last reply, wait this long for duplicates')
    p.set_defaults(func=cmd_call)

    p = sub.add_parser('batch')
    common(p)
    p.add_argument('calls')
    p.add_argument('--settle', type=float, default=0.0,
                   help='after the last reply, wait this long for duplicates')
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser('req')
    common(p, service=False)
    p.add_argument('name')
    p.add_argument('args')
    p.add_argument('--kwargs', default='{}')
    p.set_defaults(func=cmd_req)

    p = sub.add_parser('raw')
    common(p)
    p.add_argument('--frames', required=True)
    p.add_argument('--settle', type=float, default=0.0,
                   help='with --expect-reply: after the reply, wait this long for another')
    p.add_argument('--then', help='then send this [name, args, kwargs] WORK on the same '
                   'connection and wait for its reply')
    p.add_argument('--then-timeout', type=float, default=5.0)
    group = p.add_mutually_exclusive_group()
    group.add_argument('--expect-reply', dest='expect', action='store_const', const='reply')
    group.add_argument('--expect-none', dest='expect', action='store_const', const='none')
    p.set_defaults(func=cmd_raw, expect=None)

    p = sub.add_parser('heartbeats')
    common(p)
    p.add_argument('--count', type=int, default=10)
    p.add_argument('--every', type=float, default=0.1)
    p.set_defaults(func=cmd_heartbeats)

    p = sub.add_parser('hello-flow')
    common(p)
    p.add_argument('name')
    p.add_argument('args')
    p.add_argument('--login', default='')
    p.add_argument('--password', default='')
    p.add_argument('--hello-body', help='a raw HELLO body in hex instead of [login, password]')
    p.add_argument('--hello-first', action='store_true', help='HELLO before any WORK')
    p.set_defaults(func=cmd_hello_flow)

    p = sub.add_parser('callee')
    common(p)
    p.add_argument('name')
    p.add_argument('args')
    p.set_defaults(func=cmd_callee)

    p = sub.add_parser('server')
    p.add_argument('endpoint')
    p.add_argument('service')
    p.add_argument('--authloop', action='store_true',
                   help='a hostile server: every HELLO AUTHENTICATED, every WORK UNAUTHORIZED '
                        '(each HELLO logged "hello N")')
    p.set_defaults(func=cmd_server)

    args = parser.parse_args(argv)
    if getattr(args, 'curve_server_key', None):
        CURVE_KEYS.update(server=args.curve_server_key, public=args.curve_public_key,
                          secret=args.curve_secret_key)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
