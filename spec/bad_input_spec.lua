--[[
bad_input_spec: DESIGN.md section 4 against one running pseud-lua server
(spec/servers/basic.lua). Each `it` is one attack, sent as raw frames by the
Python peer (spec/support/pypeer.py raw):

  - where the message carries a 16-byte uuid in its place and could be a
    request, the answer is ERROR ['ProtocolError', reason, traceback] for
    that uuid;
  - where it has none, or is itself a reply (OK/ERROR/UNAUTHORIZED), nothing
    comes back: the peer waits NONE_WAIT seconds for the non-event;
  - the server logs a reason (checked once a hello sent after the attack on
    the same connection is answered: one connection's messages stay in order);
  - afterwards the same server still answers hello on a new connection.

Frames are given after the routing id (pypeer's ROUTER adds 'service'), in
hex; 'HEX*N' repeats, '+' joins, so a 100,000-level body stays short.
]]
local process = require 'spec.support.process'

local SERVICE = 'service'
local OK, ERROR = 0x01, 0x10
local NONE_WAIT = '0.3'                    -- seconds a non-event is awaited
local REPLY_WAIT = '3'                     -- seconds a reply may take, at most
local SETTLE = '0.1'                       -- seconds a duplicate reply is awaited

-- msgpack of ['hello', ['x'], {}]: a well-formed WORK body.
local HELLO_BODY = '93a568656c6c6f91a17880'
local VERSION = '7631'                      -- 'v1'

--- 16 random bytes in hex, a fresh uuid per attack.
local function new_uuid()
  local t = {}
  for i = 1, 16 do t[i] = ('%02x'):format(math.random(0, 255)) end
  return table.concat(t)
end

describe('a pseud-lua server given hostile input', function()
  local server, endpoint

  lazy_setup(function()
    math.randomseed(os.time())
    server, endpoint = process.server('spec/servers/basic.lua')
  end)

  lazy_teardown(function()
    process.stop_all()
  end)

  --- Send `frames`, then hello on the same connection; return pypeer's
  -- result and what the server logged meanwhile. `expect`: 'reply'|'none';
  -- `quiet`: a log line is not required (a probe is normal traffic).
  local function send(frames, expect, quiet)
    local before = #server:log_text()
    local args = { 'raw', endpoint, SERVICE, '--frames=' .. table.concat(frames, ','),
                   '--expect-' .. expect, '--then', '["hello", ["then"], {}]' }
    args[#args + 1] = '--timeout'
    args[#args + 1] = expect == 'none' and NONE_WAIT or REPLY_WAIT
    if expect == 'reply' then                -- and no second reply after it
      args[#args + 1] = '--settle'
      args[#args + 1] = SETTLE
    end
    local r, ok, raw = process.pypeer(args)
    if not ok then
      error(('expected %s, then hello answered, got:\n%s\n-- server:\n%s'):format(
        expect == 'none' and 'no reply' or 'a reply', raw, server:report()), 2)
    end
    assert.equal('Hello then', r['then'].body)
    -- The hello on the same connection was answered after the attack was
    -- handled, so the reason for refusing it is in the log by now.
    local logged = server:log_text():sub(before + 1)
    if not quiet then
      assert(logged:find('%S'), 'the server logged no reason for refusing it (DESIGN.md section 4)')
    end
    return r, logged
  end

  --- The same server still answers hello correctly on a new connection.
  local function still_serves()
    assert(server:alive(), 'the server died:\n' .. server:report())
    local r, ok, raw = process.pypeer({ 'call', endpoint, SERVICE, 'hello', '["again"]' })
    assert(ok, 'hello after the attack failed:\n' .. raw .. '\n-- server:\n' .. server:report())
    assert.equal(OK, r.type)
    assert.equal('Hello again', r.body)
  end

  --- The attack is answered by ERROR ProtocolError for `uuid`, then hello works.
  local function refused_with_error(frames, uuid)
    local r = send(frames, 'reply')
    assert.equal(1, #r.replies)
    local reply = r.replies[1]
    assert.same({}, reply.problems)
    assert.equal(uuid, reply.uuid_hex)
    assert.equal(ERROR, reply.type)
    assert.equal('ProtocolError', reply.body[1])
    assert.equal('string', type(reply.body[2]))
    assert.truthy(#reply.body[2] > 0, 'ProtocolError carries a reason')
    assert.equal('string', type(reply.body[3]))
    still_serves()
  end

  --- The attack is dropped: no reply within NONE_WAIT, then hello works.
  local function dropped(frames, quiet)
    local r = send(frames, 'none', quiet)
    assert.same({}, r.replies)
    still_serves()
  end

  --- A WORK message with this body and a fresh uuid, refused with ERROR.
  local function work_body_refused(body)
    local uuid = new_uuid()
    refused_with_error({ '', VERSION, uuid, '03', body }, uuid)
  end

  it('answers hello before any attack', function()
    still_serves()
  end)

  -- Frame counts and shapes.

  it('drops a message of a delimiter and a version only (too few frames, no uuid)', function()
    dropped({ '', VERSION })
  end)

  it('drops a lone empty frame (a probe) without answering', function()
    dropped({ '' }, 'quiet')                  -- every ZMQ_PROBE_ROUTER peer sends one: no log
  end)

  it('refuses too few frames (no body) with ProtocolError', function()
    local uuid = new_uuid()
    refused_with_error({ '', VERSION, uuid, '03' }, uuid)
  end)

  it('refuses too many frames (a frame after the body) with ProtocolError', function()
    local uuid = new_uuid()
    refused_with_error({ '', VERSION, uuid, '03', HELLO_BODY, '00' }, uuid)
  end)

  it('refuses a hundred extra frames with ProtocolError', function()
    local uuid = new_uuid()
    local frames = { '', VERSION, uuid, '03', HELLO_BODY }
    for _ = 1, 100 do frames[#frames + 1] = 'ff' end
    refused_with_error(frames, uuid)
  end)

  it('drops a message without the empty delimiter', function()
    dropped({ VERSION, new_uuid(), '03', HELLO_BODY })
  end)

  it('refuses a non-empty delimiter frame with ProtocolError', function()
    local uuid = new_uuid()
    refused_with_error({ '00', VERSION, uuid, '03', HELLO_BODY }, uuid)
  end)

  -- Version, uuid and type frames.

  it("refuses version 'v2' with ProtocolError", function()
    local uuid = new_uuid()
    refused_with_error({ '', '7632', uuid, '03', HELLO_BODY }, uuid)
  end)

  it('refuses an empty version frame with ProtocolError', function()
    local uuid = new_uuid()
    refused_with_error({ '', '', uuid, '03', HELLO_BODY }, uuid)
  end)

  it('drops WORK whose uuid is 4 bytes', function()
    dropped({ '', VERSION, '01020304', '03', HELLO_BODY })
  end)

  it('drops WORK whose uuid is 17 bytes', function()
    dropped({ '', VERSION, new_uuid() .. '00', '03', HELLO_BODY })
  end)

  it('drops WORK whose uuid is empty', function()
    dropped({ '', VERSION, '', '03', HELLO_BODY })
  end)

  it('refuses an unknown type byte 0x7f with ProtocolError', function()
    local uuid = new_uuid()
    refused_with_error({ '', VERSION, uuid, '7f', HELLO_BODY }, uuid)
  end)

  it('refuses a type frame of two bytes with ProtocolError', function()
    local uuid = new_uuid()
    refused_with_error({ '', VERSION, uuid, '0300', HELLO_BODY }, uuid)
  end)

  it('refuses an empty type frame with ProtocolError', function()
    local uuid = new_uuid()
    refused_with_error({ '', VERSION, uuid, '', HELLO_BODY }, uuid)
  end)

  -- Replies nobody asked for: never answered (no ping-pong).

  it('drops an OK for an unknown uuid', function()
    dropped({ '', VERSION, new_uuid(), '01', 'a26f6b' })
  end)

  it('drops an ERROR for an unknown uuid', function()
    -- ['ValueError', 'forged', '']
    dropped({ '', VERSION, new_uuid(), '10', '93aa56616c75654572726f72a6666f72676564a0' })
  end)

  it('drops an UNAUTHORIZED for an unknown uuid', function()
    dropped({ '', VERSION, new_uuid(), '11', '' })
  end)

  it('drops an OK with an unknown uuid and a body that is not msgpack', function()
    dropped({ '', VERSION, new_uuid(), '01', 'c1' })
  end)

  it('drops a malformed ERROR (an extra frame) instead of answering it', function()
    dropped({ '', VERSION, new_uuid(), '10', '93a0a0a0', '00' })
  end)

  -- msgpack bodies.

  it('answers a malformed HELLO UNAUTHORIZED under the default backend (a well-formed one is welcomed)', function()
    -- not msgpack, three items, not an array, a login over 1 KiB
    for _, body in ipairs { 'c1', '93010203', '2a', '92da0401' .. ('61'):rep(1025) .. 'a0' } do
      local r = send({ '', VERSION, new_uuid(), '02', body }, 'reply')
      assert.equal(1, #r.replies, body)
      assert.equal(0x11, r.replies[1].type, body)
      assert.equal('Malformed HELLO', r.replies[1].body_text, body)
    end
    local r = send({ '', VERSION, new_uuid(), '02', '92a161a162' }, 'reply', 'quiet')
    assert.equal(0x04, r.replies[1].type)                    -- AUTHENTICATED
  end)

  it('refuses an empty WORK body with ProtocolError', function()
    work_body_refused('')
  end)

  it('refuses a truncated msgpack body with ProtocolError', function()
    work_body_refused('93a568656c')
  end)

  it('refuses the never-used byte 0xc1 with ProtocolError', function()
    work_body_refused('c1')
  end)

  it('refuses trailing bytes after the body with ProtocolError', function()
    work_body_refused(HELLO_BODY .. 'c0')
  end)

  it('refuses a body nested 100,000 levels deep with ProtocolError', function()
    -- ['hello', [[[...[nil]...]]], {}]: well-formed, far past any depth limit
    work_body_refused('93a568656c6c6f+91*100000+c080')
  end)

  it('refuses args nested 100,000 levels deep as maps with ProtocolError', function()
    -- {0: {0: ... nil}} as the args: map nesting, not only arrays
    work_body_refused('93a568656c6c6f+8100*100000+c080')
  end)

  -- Well-formed msgpack that has no Lua value: refused as the peer's fault,
  -- not reported as the host's (LuaError).
  it('refuses an argument that is a uint64 past 2^63-1 with ProtocolError', function()
    work_body_refused('93a4656368' .. '6f91cfffffffffffffffff80')     -- echo(2^64-1)
  end)

  it('refuses a uint64 of 2^63 in the kwargs with ProtocolError (2^63-1 is served)', function()
    work_body_refused('93a46563686f90' .. '81a178cf8000000000000000')   -- echo(x=2^63)
    local r, ok, raw = process.pypeer({ 'call', endpoint, SERVICE, 'echo', '[9223372036854775807]' })
    assert(ok, raw)
    assert.equal(OK, r.type)
  end)

  it('refuses a map key that is NaN with ProtocolError (float64 and float32)', function()
    work_body_refused('93a4656368' .. '6f9181cb7ff8000000000000' .. '0180')   -- echo({NaN: 1})
    work_body_refused('93a4656368' .. '6f9181ca7fc00000' .. '0180')           -- float32 NaN
  end)

  it('refuses a body declaring a 4 GiB string with ProtocolError', function()
    work_body_refused('dbffffffff414141')
  end)

  it('refuses a name declaring a 4 GiB string with ProtocolError', function()
    work_body_refused('93dbffffffff41414191a17880')
  end)

  it('refuses a body declaring a 4 GiB bin with ProtocolError', function()
    work_body_refused('c6ffffffff0001')
  end)

  it('refuses a body declaring a 4 GiB ext with ProtocolError', function()
    work_body_refused('c9ffffffff0100')
  end)

  it('refuses a map declaring 2^32-1 entries with ProtocolError', function()
    work_body_refused('dfffffffffa16101')
  end)

  it('refuses kwargs declaring 2^32-1 entries with ProtocolError', function()
    work_body_refused('93a568656c6c6f91a178dfffffffff')
  end)

  it('refuses an array declaring 2^32-1 elements with ProtocolError', function()
    work_body_refused('ddffffffff01')
  end)

  it('refuses args declaring 2^32-1 elements with ProtocolError', function()
    work_body_refused('93a568656c6c6fddffffffff80')
  end)

  -- Valid msgpack that is not [name, args, kwargs].

  it('refuses a WORK body that is a bare integer with ProtocolError', function()
    work_body_refused('2a')
  end)

  it('refuses a WORK body whose name is not a string with ProtocolError', function()
    work_body_refused('93019080')               -- [1, [], {}]
  end)

  it('refuses a WORK body whose args are not an array with ProtocolError', function()
    work_body_refused('93a568656c6c6f0180')     -- ['hello', 1, {}]
  end)

  it('refuses a WORK body whose kwargs are not a map with ProtocolError', function()
    work_body_refused('93a568656c6c6f91a17801') -- ['hello', ['x'], 1]
  end)

  it('refuses a WORK body that is an empty array with ProtocolError', function()
    work_body_refused('90')
  end)

  -- Handlers that raise.

  it('keeps other calls right while handlers raise', function()
    local calls = {}
    for i = 1, 10 do
      calls[#calls + 1] = '["fail", [], {}]'
      calls[#calls + 1] = ('["hello", ["n%d"], {}]'):format(i)
      calls[#calls + 1] = '["fail_value", [], {}]'
      calls[#calls + 1] = '["no.such.name", [], {}]'
    end
    local r, ok, raw = process.pypeer({ 'batch', endpoint, SERVICE,
      '[' .. table.concat(calls, ',') .. ']', '--settle', '0.2', '--timeout', '10' })
    assert(ok, raw)
    assert.equal(0, r.missing)
    assert.same({}, r.extra)                    -- exactly one outcome per call
    for i = 1, 10 do
      local base = (i - 1) * 4
      assert.equal(ERROR, r.replies[base + 1].type)
      assert.equal('LuaError', r.replies[base + 1].body[1])
      assert.equal(OK, r.replies[base + 2].type)
      assert.equal('Hello n' .. i, r.replies[base + 2].body)
      assert.equal('ValueError', r.replies[base + 3].body[1])
      assert.equal('ServiceNotFoundError', r.replies[base + 4].body[1])
    end
    still_serves()
  end)

  it('is still the same live process after every attack', function()
    assert(server:alive(), server:report())
    still_serves()
  end)
end)
