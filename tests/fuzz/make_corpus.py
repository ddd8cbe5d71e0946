#!/usr/bin/python3
"""Write the seed corpora of the fuzz harnesses.

    /usr/bin/python3 tests/fuzz/make_corpus.py      (Debian: python3-msgpack)

Owns tests/fuzz/corpus/{frame,codec,zap,hello,forward}/: it empties them
and writes every seed again, so the committed corpus is exactly what this
file says. A crash the fuzzer finds is kept as a regression by adding its
bytes to REGRESSIONS below (and a row to the C unit test that shows it), not
by copying the artifact in: the next run of this script would delete it.

Seeds are small (a fuzzer mutates small inputs fastest) and each stands for
one thing worth reaching: every message type well formed, each reason
frame_decode gives, every msgpack type and encoding width, the hostile
shapes codec_check must refuse (huge declared lengths, nesting one past the
limit, reserved bytes, trailing bytes).
"""
import os
import shutil
import struct
import sys

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# Crash inputs the fuzzer found, kept so that every build replays them:
# harness name -> {seed name: bytes}.
REGRESSIONS = {
    "frame": {},
    "codec": {},
    "zap": {},
    "hello": {
        # [b"", {}]: msgpack-c gives an empty str a NULL pointer; message.c's
        # views must be "" (test_message: "an empty name is \"\", not NULL")
        "empty-name": b"\x92\xa0\x80",
    },
    "forward": {},
}

# ------------------------------------------------------------------- frame

UUID = bytes.fromhex("6ba7b8109dad41d180b400c04fd430c8")   # a uuid4, fixed
OK, HELLO, WORK, AUTHENTICATED, HEARTBEAT, ERROR, UNAUTHORIZED = (
    b"\x01", b"\x02", b"\x03", b"\x04", b"\x06", b"\x10", b"\x11")


def parts(*frames, rest_last=True):
    """The fuzz_frame encoding: each part as a length then its bytes (one
    byte below 0xfe, or 0xfe and two bytes); the last part as 0xff and the
    rest of the input when rest_last."""
    out = bytearray()
    for i, f in enumerate(frames):
        if rest_last and i == len(frames) - 1:
            out += b"\xff" + f
        elif len(f) < 0xfe:
            out += bytes([len(f)]) + f
        else:
            out += b"\xfe" + struct.pack(">H", len(f)) + f
    return bytes(out)


def message(mtype, body, uuid=UUID, peer=b"client", version=b"v1"):
    return parts(peer, b"", version, uuid, mtype, body)


def frame_seeds():
    pack = msgpack.packb
    s = {}
    s["work"] = message(WORK, pack(["hello", ["Charly"], {}]))
    s["work-kwargs"] = message(WORK, pack(["this.is.a.name", [1, 2.5], {"greeting": "Hi"}]))
    s["ok"] = message(OK, pack("Hello Charly"))
    s["ok-empty-body"] = message(OK, b"")
    s["error"] = message(ERROR, pack(["ValueError", "bad input", "Traceback (most recent call last)"]))
    s["hello"] = message(HELLO, pack(["alice", "secret"]))
    s["authenticated"] = message(AUTHENTICATED, b"Welcome 'alice'")
    s["unauthorized"] = message(UNAUTHORIZED, b"Authentication Required")
    s["heartbeat"] = message(HEARTBEAT, b"", uuid=b"")
    s["heartbeat-uuid-text"] = message(HEARTBEAT, b"alive", uuid=UUID)
    s["heartbeat-uuid-1"] = message(HEARTBEAT, b"", uuid=b"\x01")
    s["heartbeat-uuid-15"] = message(HEARTBEAT, b"", uuid=UUID[:15])
    s["work-long-body"] = message(WORK, pack(["echo", ["x" * 600], {}]))
    s["work-long-peer"] = message(WORK, pack(["hello", [], {}]), peer=b"i" * 255)
    s["work-length-prefixed"] = parts(b"client", b"", b"v1", UUID, WORK, pack(["a", [], {}]),
                                      rest_last=False)
    s["probe"] = parts(b"client", b"")
    s["probe-not-empty"] = parts(b"client", b"x")
    s["empty"] = b""
    s["one-part"] = parts(b"client")
    s["one-empty-part"] = b"\x00"
    for n in (3, 4, 5):
        s["too-few-%d" % n] = parts(*[b"client", b"", b"v1", UUID, WORK][:n])
    for n in (7, 8, 9, 12):
        extra = [b"extra"] * (n - 6)
        s["too-many-%d" % n] = parts(b"client", b"", b"v1", UUID, WORK, b"body", *extra)
    s["no-delimiter"] = parts(b"client", b"x", b"v1", UUID, WORK, b"\x90")
    for name, v in (("v2", b"v2"), ("V1", b"V1"), ("v1x", b"v1x"), ("v", b"v"), ("none", b"")):
        s["version-" + name] = message(WORK, b"\x90", version=v)
    s["type-empty"] = message(b"", b"\x90")
    s["type-two-bytes"] = message(b"\x03\x03", b"\x90")
    for t in (0x00, 0x05, 0x07, 0x12, 0xff):
        s["type-unknown-%02x" % t] = message(bytes([t]), b"\x90")
    s["uuid-15"] = message(WORK, b"\x90", uuid=UUID[:15])
    s["uuid-17"] = message(WORK, b"\x90", uuid=UUID + b"\x00")
    s["uuid-empty-work"] = message(WORK, b"\x90", uuid=b"")
    s["uuid-empty-ok"] = message(OK, b"\xc0", uuid=b"")
    s["cut-short"] = parts(b"client", b"") + b"\x0a" + b"v1"     # a length past the end
    s["cut-16bit-length"] = b"\xfe\x01"
    s["hostile-body"] = message(WORK, b"\xdd\xff\xff\xff\xff")
    return s

# ------------------------------------------------------------------- codec


def nest(n, leaf, kind="array"):
    """n levels of one-element arrays (or maps {0: ...}) around leaf."""
    out = leaf
    for _ in range(n):
        out = (b"\x91" + out) if kind == "array" else (b"\x81\x00" + out)
    return out


def codec_seeds():
    def pack(v, **kw):
        return msgpack.packb(v, use_bin_type=True, **kw)

    s = {}
    # scalars, every encoding width
    s["nil"] = pack(None)
    s["true"] = pack(True)
    s["false"] = pack(False)
    for v in (0, 127, -1, -32, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32,
              2**63 - 1, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63):
        s["int%+d" % v] = pack(v)
    s["uint64-max"] = b"\xcf" + b"\xff" * 8            # does not fit a Lua integer
    s["uint64-2^63"] = b"\xcf\x80" + b"\x00" * 7       # one past LUA_MAXINTEGER
    s["int8-as-int64"] = b"\xd3" + struct.pack(">q", 5)  # wide encoding, packs back small
    s["float64-1.0"] = pack(1.0)                        # must stay a float
    s["float64--0.0"] = pack(-0.0)
    s["float64-nan"] = b"\xcb" + struct.pack(">Q", 0x7ff8000000000001)
    s["float64-inf"] = pack(float("inf"))
    s["float64--inf"] = pack(float("-inf"))
    s["float64-2^53"] = pack(2.0**53)
    s["float32-1.5"] = pack(1.5, use_single_float=True)
    s["float32-nan"] = b"\xca\x7f\xc0\x00\x01"
    # strings: str vs bin
    s["str-empty"] = pack("")
    s["str-fix"] = pack("hello")
    s["str-utf8"] = pack("h\u00e9llo \U0001f600")
    s["str8"] = pack("a" * 40)
    s["str16"] = pack("b" * 300)
    s["str32-small"] = b"\xdb\x00\x00\x00\x03abc"      # a wide header for a short string
    s["str-not-utf8"] = b"\xa2\xc0\x80"                # str type, overlong bytes: bin in #2
    s["str-surrogate"] = b"\xa3\xed\xa0\x80"
    s["bin-empty"] = pack(b"")
    s["bin8"] = pack(b"\xff\x00\xfe")
    s["bin8-utf8"] = pack(b"plain")                    # bin of UTF-8: str in #2
    s["bin16"] = pack(b"\x80" * 300)
    s["bin32-small"] = b"\xc6\x00\x00\x00\x02\xff\xfe"
    # ext: fixext 1..16, ext 8/16/32, negative types, the datetime pickles of pseud 1.0
    for n in (1, 2, 4, 8, 16):
        s["fixext%d" % n] = pack(msgpack.ExtType(5, b"e" * n))
    # (msgpack-python refuses the negative types msgpack keeps for itself;
    # a peer may send them all the same)
    s["ext8-empty-type-1"] = b"\xc7\x00\xff"
    s["ext8"] = pack(msgpack.ExtType(127, b"abc"))
    s["ext16-type-128"] = b"\xc8\x01\x2c\x80" + b"x" * 300
    s["fixext4-timestamp"] = b"\xd6\xff" + struct.pack(">I", 1700000000)
    s["ext32-small"] = b"\xc9\x00\x00\x00\x01\x07z"
    s["ext123-pickle"] = pack(msgpack.ExtType(123, b"\x80\x04\x95\x2b\x00"))
    # arrays and maps
    s["array-empty"] = pack([])
    s["array-mixed"] = pack([1, "two", 3.0, None, True, b"\xff", [], {}])
    s["array-nil-inside"] = pack([None, 1, None])
    s["array16"] = pack(list(range(20)))
    s["array32-small"] = b"\xdd\x00\x00\x00\x02\x01\x02"
    s["array-1000-nil"] = pack([None] * 1000)
    s["map-empty"] = pack({})
    s["map-str-keys"] = pack({"a": 1, "b": [1, 2], "c": {"d": None}})
    s["map-int-keys-1-n"] = pack({1: "a", 2: "b", 3: "c"})   # map, not array, in #2
    s["map-many-keys"] = pack({("k%d" % i): i for i in range(20)})
    s["map-odd-keys"] = pack({0: 1, -1: 2, 1.5: 3, True: 4, b"\xff": 5})
    s["map-nil-key"] = b"\x81\xc0\x01"
    s["map-array-key"] = b"\x81\x91\x01\x02"
    s["map-map-key"] = b"\x81\x81\x01\x02\x03"
    s["map-empty-table-keys"] = b"\x82\x90\x01\x90\x02"     # two keys that pack alike
    s["map-dup-keys"] = b"\x83\xa1a\x01\xa1a\x02\xa1b\x03"
    s["map-2.0-and-2"] = b"\x82\xcb" + struct.pack(">d", 2.0) + b"\x01\x02\x02"
    s["map-nan-key"] = b"\x81\xcb" + struct.pack(">Q", 0x7ff8000000000000) + b"\x01"
    s["map-ext-key"] = b"\x81\xd4\x01a\x01"
    s["map16-small"] = b"\xde\x00\x01\xa1k\xa1v"
    s["map32-small"] = b"\xdf\x00\x00\x00\x01\x01\x02"
    # pseud bodies
    s["work"] = pack(["hello", ["Charly"], {}])
    s["work-kwargs"] = pack(["greet", ["Ann"], {"greeting": "Hi", "n": 3}])
    s["ok"] = pack("Hello Charly")
    s["error"] = pack(["ServiceNotFoundError", "no.such.name", "Traceback ..."])
    s["hello"] = pack(["alice", "secret"])
    # hostile: huge declared lengths and counts, at most a few bytes there
    s["str32-huge"] = b"\xdb\xff\xff\xff\xffabc"
    s["str8-past-end"] = b"\xd9\xff" + b"x" * 10
    s["bin32-huge"] = b"\xc6\xff\xff\xff\xff\x00"
    s["ext32-huge"] = b"\xc9\xff\xff\xff\xff\x01\x00"
    s["ext32-max-minus-1"] = b"\xc9\xff\xff\xff\xfe\x01"
    s["array32-huge"] = b"\xdd\xff\xff\xff\xff\x01\x02"
    s["array16-huge"] = b"\xdc\xff\xff\x01\x02"
    s["map32-huge"] = b"\xdf\xff\xff\xff\xff\x01\x02"
    s["map-half-entry"] = b"\x82\x01\x02\x03"
    # nesting at the limit (32 levels) and one past it, arrays and maps
    s["depth-32"] = nest(32, b"\x01")
    s["depth-33"] = nest(33, b"\x01")
    s["depth-32-empty"] = nest(31, b"\x90")
    s["depth-33-empty"] = nest(32, b"\x90")
    s["depth-32-maps"] = nest(32, b"\x01", "map")
    s["depth-33-maps"] = nest(33, b"\x01", "map")
    s["depth-32-key"] = nest(31, b"\x81\x91\x01\x02", "map")   # a table key at the limit
    # malformed
    s["empty"] = b""
    s["reserved-c1"] = b"\xc1"
    s["reserved-c1-inside"] = b"\x92\x01\xc1"
    s["trailing"] = b"\x01\x02"
    s["truncated-uint16"] = b"\xcd\x01"
    s["truncated-float64"] = b"\xcb\x3f\xf0"
    s["truncated-fixext"] = b"\xd5\x01a"
    return s

# --------------------------------------------------------------------- zap


def zap_seeds():
    """zap_parse: the parts after the envelope, in the fuzz_frame encoding."""
    return {
        "plain": parts(b"1.0", b"1", b"pseud-1", b"127.0.0.1", b"service", b"PLAIN",
                       b"alice", b"wonderland"),
        "curve": parts(b"1.0", b"2", b"pseud-2", b"::1", b"", b"CURVE", bytes(range(32))),
        "null": parts(b"1.0", b"3", b"d", b"a", b"id", b"NULL"),
        "bad-version": parts(b"2.0", b"1", b"d", b"a", b"id", b"NULL"),
        "long-domain": parts(b"1.0", b"1", b"x" * 300, b"a", b"id", b"NULL"),
        "nul-domain": parts(b"1.0", b"1", b"a\x00b", b"a", b"id", b"NULL"),
        "plain-short": parts(b"1.0", b"1", b"d", b"a", b"id", b"PLAIN", b"u"),
        "curve-bad-key": parts(b"1.0", b"1", b"d", b"a", b"id", b"CURVE", b"k" * 31),
        "too-many": parts(*([b"1.0"] + [b"x"] * 11)),
        "empty": b"",
    }


# ------------------------------------------------------------------- hello


def hello_seeds():
    """message.c's decoders (HELLO, WORK, OK, ERROR) and the ERROR text made
    from the same bytes."""
    def pk(v):
        return msgpack.packb(v, use_bin_type=True)
    return {
        "ok": pk(["alice", "wonderland"]),
        "bin": pk([b"alice", b"\xff\xfe"]),
        "three": pk(["a", "b", "c"]),
        "int": pk(42),
        "long-login": pk(["a" * 1025, "p"]),
        "at-limit": pk(["a" * 1024, "p" * 1024]),
        "not-msgpack": b"\xc1",
        "utf8-mix": "h\u00e9llo\u2028".encode() + b"\xff\xed\xa0\x80\xf4\x90\x80\x80",
        "bad-bytes-4k": b"\xff" * 4096,
        "nested": pk([[["x"]], "y"]),
        "empty": b"",
        "work": pk(["hello", ["Charly"], {}]),
        "work-kwargs": pk(["a.b", [1, None, True], {"k": 2}]),
        "work-two": pk(["x", []]),
        "error": pk(["ValueError", "bad input", "tb"]),
        "error-partial": pk([1, "m"]),
    }


# ----------------------------------------------------------------- forward


def forward_seeds():
    """The envelopes nodes of a cluster exchange (src/forward.h)."""
    def pk(v):
        return msgpack.packb(v, use_bin_type=True)
    uuid = bytes(range(16))
    work = pk(["hello", ["Charly"], {}])
    return {
        "call": pk([1, "svc", "node-a", uuid, b"alice", 2.5, work]),
        "call-int-timeout": pk([1, "svc", "node-a", uuid, b"al\x00ice", 5, work]),
        "call-long-user": pk([1, "svc", "node-a", uuid, b"u" * 255, 1.0, b""]),
        "call-nan": pk([1, "svc", "n", uuid, b"u", float("nan"), b""]),
        "result-ok": pk([2, "svc", "node-b", uuid, 1, pk("Hello Charly")]),
        "result-error": pk([2, "svc", "node-b", uuid, 16, pk(["E", "m", ""])]),
        "result-bad-type": pk([2, "svc", "node-b", uuid, 3, b""]),
        "short-uuid": pk([2, "svc", "node-b", uuid[:15], 1, b""]),
        "nested": pk([2, ["svc"], "n", uuid, 1, b""]),
        "empty": b"",
    }


# -------------------------------------------------------------------- main


def write(name, seeds):
    folder = os.path.join(CORPUS, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    seeds = dict(seeds)
    for key, data in REGRESSIONS[name].items():
        seeds["regress-" + key] = data
    for key, data in sorted(seeds.items()):
        with open(os.path.join(folder, key), "wb") as f:
            f.write(data)
    print("%s: %d seeds in %s" % (name, len(seeds), os.path.relpath(folder)))


def main():
    write("frame", frame_seeds())
    write("codec", codec_seeds())
    write("zap", zap_seeds())
    write("hello", hello_seeds())
    write("forward", forward_seeds())
    return 0


if __name__ == "__main__":
    sys.exit(main())
