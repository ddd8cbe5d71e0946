"""wiremsgs: what wirefuzz.py sends, and what may come back for it.

A seeded generator of values (Gen), the catalogue of valid and mutated
pseud v1 messages (make_message, FUZZ_KINDS), and for each message the
contract's expectation (Expect: must, may or never be answered, with which
reply types, a ProtocolError required or not, and a check of the value
when it is predictable), from DESIGN.md sections 1 and 4 and
docs/decisions.md ('What is answered'). Also a msgpack structure check that
accepts what python3-msgpack refuses to build.

It sends nothing and judges nothing itself: wirefuzz.py does.
"""

import random

import msgpack

VERSION = b'v1'
OK, HELLO, WORK, AUTHENTICATED, HEARTBEAT, ERROR, UNAUTHORIZED = (
    0x01, 0x02, 0x03, 0x04, 0x06, 0x10, 0x11)
TYPE_NAMES = {OK: 'OK', HELLO: 'HELLO', WORK: 'WORK', AUTHENTICATED: 'AUTHENTICATED',
              HEARTBEAT: 'HEARTBEAT', ERROR: 'ERROR', UNAUTHORIZED: 'UNAUTHORIZED'}

# What spec/servers/basic.lua registers ('sleep' is never called on purpose).
REGISTERED = {'hello', 'echo', 'this.is.a.name', 'lower', 'upper', 'shadowed', 'fail',
              'fail_value', 'kw', 'nargs', 'sleep', 'types'}


# ---------------------------------------------------------------- values

def same(a, b):
    """Equal with exact types: 1 is not 1.0, True is not 1, b'x' is not 'x'."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, msgpack.ExtType):
        return a.code == b.code and a.data == b.data
    return a == b


def short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...(%d chars)' % len(text)


def pack(value):
    return msgpack.packb(value, use_bin_type=True)


def ext_hook(code, data):
    # python3-msgpack's ExtType takes codes 0..127 only; a peer may use any.
    return msgpack.ExtType(code, data) if 0 <= code <= 127 else ('ext', code, data)


def unpack_reply(body):
    return msgpack.unpackb(body, raw=False, strict_map_key=False, ext_hook=ext_hook)


_FIXED = {0xc0: 0, 0xc2: 0, 0xc3: 0, 0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8,
          0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8, 0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17}
_SIZED = {0xc4: (1, 'bin'), 0xc5: (2, 'bin'), 0xc6: (4, 'bin'), 0xc7: (1, 'ext'), 0xc8: (2, 'ext'),
          0xc9: (4, 'ext'), 0xd9: (1, 'str'), 0xda: (2, 'str'), 0xdb: (4, 'str'),
          0xdc: (2, 'array'), 0xdd: (4, 'array'), 0xde: (2, 'map'), 0xdf: (4, 'map')}


def msgpack_walk(b):
    """Check that `b` is exactly one msgpack value whose str are valid
    UTF-8, without building it (python3-msgpack refuses some valid input,
    such as a timestamp ext of an odd length). Raises ValueError, or
    UnicodeDecodeError for a str that is not UTF-8."""
    i, todo = 0, 1                        # values still to read
    while todo:
        if i >= len(b):
            raise ValueError('truncated')
        t = b[i]
        i += 1
        todo -= 1
        if t <= 0x7f or t >= 0xe0:
            continue
        if 0x80 <= t <= 0x8f:
            todo += 2 * (t & 0x0f)
        elif 0x90 <= t <= 0x9f:
            todo += t & 0x0f
        elif 0xa0 <= t <= 0xbf:
            n = t & 0x1f
            b[i:i + n].decode('utf-8')
            i += n
        elif t in _FIXED:
            i += _FIXED[t]
        elif t in _SIZED:
            width, what = _SIZED[t]
            n = int.from_bytes(b[i:i + width], 'big')
            i += width
            if what == 'array':
                todo += n
            elif what == 'map':
                todo += 2 * n
            else:
                if what == 'ext':
                    n += 1
                if i + n > len(b):
                    raise ValueError('truncated')
                if what == 'str':
                    b[i:i + n].decode('utf-8')
                i += n
        else:
            raise ValueError('byte 0x%02x is no msgpack' % t)
        if i > len(b) or todo > len(b):
            raise ValueError('truncated')
    if i != len(b):
        raise ValueError('%d trailing bytes' % (len(b) - i))


class Opaque:
    """A reply value that is valid msgpack but python3-msgpack cannot build."""

    def __repr__(self):
        return '<valid msgpack python3-msgpack cannot decode>'


class Gen:
    """Everything random comes from here, so one seed gives one run."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def uuid(self):
        return self.rng.randbytes(16)

    def text(self, n=None):
        n = self.rng.randint(0, 12) if n is None else n
        pools = ('abcdefghijklmnopqrstuvwxyz', 'ABCxyz 0123456789._-',
                 '\u00e9\u00fc\u00df\u4e2d\u6587\u0416\U0001f600')
        pool = ''.join(self.rng.choice(pools) for _ in range(2))
        return ''.join(self.rng.choice(pool) for _ in range(n))

    def ascii(self, n=None):
        n = self.rng.randint(1, 12) if n is None else n
        return ''.join(self.rng.choice('abcdefghijklmnopqrstuvwxyzABCDEFGHIJ') for _ in range(n))

    def binary(self, n=None):
        """Bytes that are never valid UTF-8 (they hold 0xff), so a Lua string
        made of them travels back as bin, as it came."""
        n = self.rng.randint(1, 16) if n is None else max(n, 1)
        b = bytearray(self.rng.randbytes(n))
        b[self.rng.randrange(n)] = 0xff
        return bytes(b)

    def safe_value(self, depth=0, in_array=False):
        """A value that must come back from echo unchanged (DESIGN section 1)."""
        r = self.rng
        kinds = ['int', 'float', 'str', 'bin', 'bool', 'ext']
        if depth < 3:
            kinds += ['list', 'dict'] * 2
        if in_array:
            kinds.append('nil')
        k = r.choice(kinds)
        if k == 'int':
            return r.choice([0, 1, -1, 127, 128, -33, 65535, 1 << 40, -(1 << 62), r.randint(-1000, 1000)])
        if k == 'float':
            return r.choice([0.5, 1.0, -2.0, 3.25, 1e300, r.uniform(-1e6, 1e6)])
        if k == 'str':
            return self.text()
        if k == 'bin':
            return self.binary()
        if k == 'bool':
            return r.random() < 0.5
        if k == 'ext':
            return msgpack.ExtType(r.randint(1, 100), r.randbytes(r.randint(0, 8)))
        if k == 'nil':
            return None
        if k == 'list':
            return [self.safe_value(depth + 1, True) for _ in range(r.randint(0, 4))]
        return {self.ascii(): self.safe_value(depth + 1) for _ in range(r.randint(0, 4))}

    def wild_value(self, depth=0):
        """Anything msgpack can carry, edge cases included."""
        r = self.rng
        k = r.randrange(12 if depth < 4 else 9)
        if k == 0:
            return r.choice([0, -1, (1 << 64) - 1, -(1 << 63), (1 << 63), 1 << 32, r.randint(-10**9, 10**9)])
        if k == 1:
            return r.choice([float('nan'), float('inf'), -0.0, 1e-308, r.random()])
        if k == 2:
            return self.text(r.randint(0, 40))
        if k == 3:
            return r.randbytes(r.randint(0, 40))
        if k == 4:
            return None
        if k == 5:
            return r.random() < 0.5
        if k == 6:
            return msgpack.ExtType(r.randint(0, 127), r.randbytes(r.randint(0, 20)))
        if k == 7:
            return r.choice(sorted(REGISTERED - {'sleep'}) + ['no.such.name', ''])
        if k == 8:
            return self.ascii()
        if k == 9:
            return [self.wild_value(depth + 1) for _ in range(r.randint(0, 5))]
        if k == 10:
            out = {}
            for _ in range(r.randint(0, 4)):
                key = r.choice([self.ascii(), r.randint(-5, 5), r.randbytes(3), None, True, 1.5])
                out[key] = self.wild_value(depth + 1)
            return out
        return (self.wild_value(depth + 1), self.wild_value(depth + 1))


# ---------------------------------------------------------------- expectations

MUST, MAY, NEVER = 'must', 'may', 'never'


class Expect:
    """What a peer may get back for one message it sent with a 16-byte uuid."""

    def __init__(self, kind, rule, allowed, protocol_error=False, check=None):
        self.kind = kind
        self.rule = rule                  # MUST, MAY or NEVER be answered
        self.allowed = allowed            # reply types allowed
        self.protocol_error = protocol_error
        self.check = check                # fn(type, value) -> None | problem text
        self.answers = 0


def classify(frames):
    """(rule, allowed reply types, ProtocolError required) for the wire
    frames of a message (after the routing id), from DESIGN.md section 4
    and docs/decisions.md 'What is answered'."""
    n = len(frames)
    u = frames[2] if n >= 3 else None
    t = frames[3] if n >= 4 else None
    if u is None or len(u) != 16:
        return NEVER, set(), False        # nothing to answer with
    tb = t[0] if t is not None and len(t) == 1 else None
    if tb in (OK, ERROR, HEARTBEAT):
        return NEVER, set(), False        # a reply to a reply could ping-pong
    well = n == 5 and frames[0] == b'' and frames[1] == VERSION and tb is not None
    if tb in (UNAUTHORIZED, AUTHENTICATED):
        return MAY, {ERROR}, True         # a reply too: dropping it is as good
    if well and tb == WORK:
        return MUST, {OK, ERROR}, False
    if well and tb == HELLO:
        return MUST, {AUTHENTICATED, UNAUTHORIZED, ERROR}, False
    return MUST, {ERROR}, True            # malformed, or an unknown type: refused


def expect_for(kind, frames, check=None):
    rule, allowed, pe = classify(frames)
    return Expect(kind, rule, allowed, pe, check if rule == MUST else None)


def check_ok(expected):
    def check(rtype, value):
        if rtype != OK:
            return 'expected OK %s, got type %s %s' % (short(expected), TYPE_NAMES.get(rtype, rtype), short(value))
        if not same(value, expected):
            return 'expected OK %s, got %s' % (short(expected), short(value))
        return None
    return check


def check_error(*classes):
    def check(rtype, value):
        if rtype != ERROR or not isinstance(value, list) or not value or value[0] not in classes:
            return 'expected ERROR %s, got %s %s' % ('/'.join(classes), TYPE_NAMES.get(rtype, rtype), short(value))
        return None
    return check


def check_not_ok(rtype, value):
    if rtype == OK:
        return 'OK %s for a name that is not registered' % short(value)
    return None


# ---------------------------------------------------------------- messages

def valid_call(g):
    """(name, args, kwargs, check) of a well-formed WORK to basic.lua."""
    r = g.rng
    k = r.randrange(11)
    if k == 0:
        s = g.text()
        return 'hello', [s], {}, check_ok('Hello ' + s)
    if k == 1:
        v = g.safe_value()
        return 'echo', [v], {}, check_ok(v)
    if k == 2:
        s = g.ascii()
        return 'upper', [s], {}, check_ok(s.upper())
    if k == 3:
        s = g.ascii()
        return 'lower', [s], {}, check_ok(s.lower())
    if k == 4:
        return 'this.is.a.name', [], {}, check_ok('Done')
    if k == 5:
        return 'shadowed', [], {}, check_ok('local')
    if k == 6:
        args = [g.safe_value() for _ in range(r.randint(0, 5))]
        return 'nargs', args, {}, check_ok(len(args))
    if k == 7:
        return 'fail', [], {}, check_error('LuaError')
    if k == 8:
        return 'fail_value', [], {}, check_error('ValueError')
    if k == 9:
        kw = {g.ascii(): g.safe_value() for _ in range(r.randint(1, 3))}
        return 'kw', [1], kw, check_ok(kw)
    return 'no.such.' + g.ascii(), [], {}, check_error('ServiceNotFoundError')


def work_frames(g, body, u=None):
    return [b'', VERSION, u if u is not None else g.uuid(), bytes([WORK]), body]


def huge_length_body(g):
    r = g.rng
    big = r.choice([b'\xff\xff\xff\xff', b'\x7f\xff\xff\xff', b'\x01\x00\x00\x00', r.randbytes(4)])
    heads = [b'\xdb' + big, b'\xc6' + big, b'\xc9' + big + b'\x01', b'\xdd' + big, b'\xdf' + big]
    head = r.choice(heads)
    tail = r.randbytes(r.randint(0, 8))
    where = r.randrange(4)
    if where == 0:
        return head + tail                                   # the whole body
    if where == 1:
        return b'\x93' + head + tail                         # the name
    if where == 2:
        return b'\x93\xa5hello' + head + tail                # the args
    return b'\x93\xa5hello\x91\xa1x' + head + tail           # the kwargs


def deep_body(g):
    r = g.rng
    depth = r.choice([40, 100, 1000, 100000])
    level = r.choice([b'\x91', b'\x81\x00', b'\x81\xa1k'])
    return b'\x93\xa4echo' + level * depth + b'\xc0' + b'\x80'


def long_name_bytes(g, n=4096):
    """n bytes that are never valid UTF-8 and hold no NUL (a C string
    would stop there and hide how much of the name the host echoes)."""
    b = bytearray(g.rng.randbytes(n))
    for i in range(n):
        if i % 7 == 0 or b[i] == 0:
            b[i] = 0xff
    return bytes(b)


def make_message(g, kind):
    """(frames after the routing id, Expect or None when there is no uuid to
    expect an answer for) of one message of `kind`."""
    r = g.rng
    name, args, kwargs, check = valid_call(g)
    body = pack([name, args, kwargs])
    base = work_frames(g, body)
    if kind == 'valid_work':
        frames = base
        return frames, expect_for(kind, frames, check)
    if kind == 'valid_hello':
        hb = pack([g.ascii(), g.ascii()]) if r.random() < 0.7 else pack(g.wild_value())
        frames = [b'', VERSION, g.uuid(), bytes([HELLO]), hb]
        return frames, expect_for(kind, frames)
    if kind == 'heartbeat':
        frames = [b'', VERSION, r.choice([b'', g.uuid()]), bytes([HEARTBEAT]),
                  r.choice([b'', b'ping', r.randbytes(5)])]
        return frames, expect_for(kind, frames)
    if kind == 'forged_reply':
        t = r.choice([OK, ERROR, UNAUTHORIZED, AUTHENTICATED])
        rb = r.choice([pack('x'), pack(['ValueError', 'forged', '']), b'', r.randbytes(6), b'\xc1'])
        frames = [b'', VERSION, g.uuid(), bytes([t]), rb]
        if r.random() < 0.3:
            frames.append(r.randbytes(2))                    # a malformed reply
        return frames, expect_for(kind, frames)
    if kind == 'probe':
        return [b''], None
    if kind == 'truncated_frames':
        frames = base[:r.randint(1, 4)]
    elif kind == 'extended_frames':
        frames = base + [r.randbytes(r.randint(0, 20)) for _ in range(r.randint(1, 12))]
    elif kind == 'wrong_version':
        frames = list(base)
        frames[1] = r.choice([b'v2', b'', b'v', b'v1\x00', b'V1', b'v0', r.randbytes(r.randint(1, 8))])
    elif kind == 'bad_delimiter':
        frames = list(base)
        if r.random() < 0.5:
            frames[0] = r.randbytes(r.randint(1, 4))
        else:
            frames = frames[1:]
    elif kind == 'random_type':
        frames = list(base)
        frames[3] = r.choice([bytes([r.randrange(256)]), b'', r.randbytes(2), bytes([0x7f]), bytes([0])])
    elif kind == 'bad_uuid':
        frames = list(base)
        frames[2] = r.randbytes(r.choice([0, 1, 8, 15, 17, 32, 100]))
    elif kind == 'random_body':
        if r.random() < 0.5:
            wb = pack([g.wild_value(), g.wild_value(), g.wild_value()][:r.randint(0, 4)])
        elif r.random() < 0.5:
            wb = pack(g.wild_value())
        else:
            wb = r.randbytes(r.randint(0, 64))
        frames = work_frames(g, wb)
        check = None
        try:
            v = unpack_reply(wb)
            if (isinstance(v, list) and len(v) in (2, 3) and isinstance(v[0], str)
                    and v[0] not in REGISTERED):
                check = check_not_ok
        except Exception:
            pass
        return frames, expect_for(kind, frames, check)
    elif kind == 'flipped_body':
        b = bytearray(body)
        for _ in range(r.randint(1, 4)):
            b[r.randrange(len(b))] ^= r.randint(1, 255)
        frames = work_frames(g, bytes(b))
    elif kind == 'truncated_body':
        frames = work_frames(g, body[:r.randrange(len(body))])
        return frames, expect_for(kind, frames, check_error('ProtocolError'))
    elif kind == 'trailing_body':
        frames = work_frames(g, body + r.randbytes(r.randint(1, 8)))
        return frames, expect_for(kind, frames, check_error('ProtocolError'))
    elif kind == 'huge_length':
        frames = work_frames(g, huge_length_body(g))
        return frames, expect_for(kind, frames, check_error('ProtocolError'))
    elif kind == 'deep_nesting':
        frames = work_frames(g, deep_body(g))
        return frames, expect_for(kind, frames, check_error('ProtocolError'))
    elif kind == 'long_bin_name':
        # DESIGN section 4: ServiceNotFoundError, text valid UTF-8, at most
        # 1 KiB of the peer's bytes echoed.
        frames = work_frames(g, pack([long_name_bytes(g), [], {}]))
        e = expect_for(kind, frames, check_error('ServiceNotFoundError'))
        return frames, e
    elif kind == 'long_str_name':
        raw = long_name_bytes(g)
        frames = work_frames(g, b'\x93\xda' + len(raw).to_bytes(2, 'big') + raw + b'\x90\x80')
        return frames, expect_for(kind, frames, check_error('ServiceNotFoundError', 'ProtocolError'))
    else:
        raise ValueError(kind)
    return frames, expect_for(kind, frames)


FUZZ_KINDS = [
    ('valid_work', 14), ('valid_hello', 3), ('heartbeat', 4), ('forged_reply', 6), ('probe', 1),
    ('truncated_frames', 5), ('extended_frames', 5), ('wrong_version', 4), ('bad_delimiter', 4),
    ('random_type', 5), ('bad_uuid', 4), ('random_body', 10), ('flipped_body', 10),
    ('truncated_body', 4), ('trailing_body', 2), ('huge_length', 5), ('deep_nesting', 3),
    ('long_bin_name', 2), ('long_str_name', 1),
]
