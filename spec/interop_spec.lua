--[[
interop_spec: pseud-lua against an independent pseud v1 peer in Python
(spec/support/pypeer.py: python3-zmq + python3-msgpack, not the pseud library).

Part 1 starts spec/servers/basic.lua and calls it from Python over ROUTER and
REQ, checking the reply frames byte for byte and the decoded values with their
exact Python types. Part 2 starts the Python server and runs
spec/clients/basic.lua, one case per `it`, checking what the Lua client saw.
]]
local process = require 'spec.support.process'

local SERVICE = 'service'
local SERVICE_HEX = '73657276696365'
local HELLO_CHARLY_HEX = 'ac48656c6c6f20436861726c79'   -- msgpack str 'Hello Charly'
local OK, ERROR = 0x01, 0x10

--- Call NAME(ARGS) on the server through pypeer's ROUTER client.
local function call(endpoint, name, args_json, ...)
  local r, ok, raw = process.pypeer({ 'call', endpoint, SERVICE, name, args_json or '[]', ... })
  assert(ok, 'pypeer call ' .. name .. ' failed:\n' .. raw)
  assert.same({}, r.problems)
  assert.is_true(r.uuid_matches)
  return r
end

local function assert_ok(r, expected_repr)
  assert.equal(OK, r.type)
  assert.equal(expected_repr, r.body_repr)
end

local function assert_error(r, class)
  assert.equal(ERROR, r.type)
  assert.equal('table', type(r.body))
  assert.equal(3, #r.body)
  assert.equal(class, r.body[1])
  assert.equal('string', type(r.body[2]))
  assert.equal('string', type(r.body[3]))
  return r.body[2], r.body[3]
end

describe('a pseud-lua server called by a Python pseud peer', function()
  local server, endpoint

  lazy_setup(function()
    server, endpoint = process.server('spec/servers/basic.lua')
  end)

  lazy_teardown(function()
    process.stop_all()
  end)

  after_each(function()
    assert(server:alive(), 'the server died:\n' .. server:report())
  end)

  it('answers hello over ROUTER with the exact frames', function()
    local r = call(endpoint, 'hello', '["Charly"]')
    assert.same({ SERVICE_HEX, '', '7631', r.sent_uuid_hex, '01', HELLO_CHARLY_HEX }, r.frames_hex)
    assert.equal('Hello Charly', r.body)
  end)

  it('answers hello over REQ (SyncClient) with the exact frames', function()
    local r, ok, raw = process.pypeer({ 'req', endpoint, 'hello', '["Charly"]' })
    assert(ok, raw)
    assert.same({ '7631', r.sent_uuid_hex, '01', HELLO_CHARLY_HEX }, r.frames_hex)
    assert.is_true(r.uuid_matches)
  end)

  it('serves a dotted name', function()
    assert_ok(call(endpoint, 'this.is.a.name'), "'Done'")
  end)

  it('serves a locally registered callable', function()
    assert_ok(call(endpoint, 'lower', '["ABC"]'), "'abc'")
  end)

  it('serves a globally registered callable', function()
    assert_ok(call(endpoint, 'upper', '["abc"]'), "'ABC'")
  end)

  it('prefers the local registration over the global one', function()
    assert_ok(call(endpoint, 'shadowed'), "'local'")
  end)

  it('passes kwargs as one extra last argument', function()
    assert_ok(call(endpoint, 'kw', '[1]', '--kwargs', '{"b": 2, "c": "x"}'), "{'b': 2, 'c': 'x'}")
  end)

  it('passes no extra argument for an empty kwargs map', function()
    assert_ok(call(endpoint, 'kw', '[1]', '--kwargs', '{}'), 'None')
    assert_ok(call(endpoint, 'nargs', '[1, 2]', '--kwargs', '{}'), '2')
    assert_ok(call(endpoint, 'nargs', '[1, 2]', '--kwargs', '{"x": 1}'), '3')
  end)

  it('returns str as str and bin as bin', function()
    assert_ok(call(endpoint, 'echo', '["h\\u00e9llo"]'), "'h\u{e9}llo'")
    assert_ok(call(endpoint, 'echo', '[]', '--bin-arg', '00ff'), "b'\\x00\\xff'")
  end)

  it('keeps integers, floats, arrays, maps and nulls with their types', function()
    assert_ok(call(endpoint, 'types'),
      "{'big': 1099511627776, 'bytes': b'\\x00\\xff', 'empty_array': [], 'empty_map': {}, " ..
      "'float': 1.0, 'half': 0.5, 'int': 1, 'negative': -5, 'nested': [1, [2, [3]]], " ..
      "'no': False, 'null_in_array': [1, None, 3], 'str': 'h\u{e9}llo', 'yes': True}")
  end)

  it('echoes integers and floats without converting them', function()
    assert_ok(call(endpoint, 'echo', '[[1, 1.0, -2.25, 9007199254740993, -1]]'),
      '[1, 1.0, -2.25, 9007199254740993, -1]')
  end)

  it('answers error() with ERROR LuaError [class, message, traceback]', function()
    local message, traceback = assert_error(call(endpoint, 'fail'), 'LuaError')
    assert.truthy(message:find('boom', 1, true), message)
    assert.truthy(traceback:find('traceback', 1, true), traceback)
  end)

  it('answers pseud.error() with the class it names', function()
    local message, traceback = assert_error(call(endpoint, 'fail_value'), 'ValueError')
    assert.equal('bad input', message)
    assert.truthy(#traceback > 0)
  end)

  it('answers an unknown name with ServiceNotFoundError', function()
    local message = assert_error(call(endpoint, 'no.such.name'), 'ServiceNotFoundError')
    assert.truthy(message:find('no.such.name', 1, true), message)
  end)

  it('keeps serving while a handler sleeps', function()
    local r, ok, raw = process.pypeer({ 'batch', endpoint, SERVICE,
      '[["sleep", [0.3], {}], ["hello", ["a"], {}], ["hello", ["b"], {}]]', '--settle', '0.1' })
    assert(ok, raw)
    assert_ok(r.replies[1], '0.3')
    assert_ok(r.replies[2], "'Hello a'")
    assert_ok(r.replies[3], "'Hello b'")
    assert.equal(1, r.order[3], 'the sleeping call should answer last: ' .. raw)
    assert.same({}, r.extra)
  end)

  it('answers each of many calls exactly once', function()
    local r, ok, raw = process.pypeer({ 'call', endpoint, SERVICE, 'echo', '[7]',
      '--count', '200', '--timeout', '10', '--settle', '0.2' })
    assert(ok, raw)
    assert.equal(0, r.missing)
    assert.same({}, r.extra)
    for _, reply in ipairs(r.replies) do assert_ok(reply, '7') end
  end)
end)

describe('a pseud-lua client calling a Python pseud server', function()
  local endpoint

  lazy_setup(function()
    local _
    _, endpoint = process.pyserver(SERVICE)
  end)

  lazy_teardown(function()
    process.stop_all()
  end)

  --- Run one case of spec/clients/basic.lua; its `key<TAB>value` lines.
  local function client(case)
    local out, ok, code, log = process.run(
      { process.host(), 'spec/clients/basic.lua', endpoint, case },
      { name = 'client-' .. case, timeout = 20 })
    local f = io.open(log)
    local err = f and f:read('a') or ''
    if f then f:close() end
    local result = {}
    for key, value in out:gmatch('([^\t\n]+)\t([^\n]*)') do result[key] = value end
    assert(ok and result.done == "'" .. case .. "'",
      ('client %s: exit %s\n-- stdout:\n%s\n-- stderr:\n%s'):format(case, tostring(code), out, err))
    return result
  end

  it('gets hello as a field, a method and through call()', function()
    local r = client('hello')
    assert.equal("'Hello Charly'", r.hello)
    assert.equal("'Hello Charly'", r.hello_method)
    assert.equal("'Hello Charly'", r.call)
  end)

  it('calls a dotted name', function()
    assert.equal("'Done'", client('dotted').dotted)
  end)

  it('round-trips values through Python with their types', function()
    assert.equal("[1, 1.0, -2.25, 'x', [], {}, [1, None, 3], b'\\x00\\xff', 1099511627776, True, False]",
      client('echo').echo)
  end)

  it('decodes a Python value with its types', function()
    assert.equal(
      "{'big': 1099511627776, 'bytes': b'\\x00\\xff', 'empty_array': [], 'empty_map': {}, " ..
      "'float': 1.0, 'half': 0.5, 'int': 1, 'negative': -5, 'nested': [1, [2, [3]]], " ..
      "'no': False, 'null_in_array': [1, None, 3], 'str': 'h\u{e9}llo', 'yes': True}",
      client('types').types)
  end)

  it('raises a RemoteError with name, message and traceback for ERROR', function()
    local r = client('fail')
    assert.equal('False', r['fail.ok'])
    assert.equal("'ValueError'", r['fail.name'])
    assert.equal("'bad input'", r['fail.message'])
    assert.equal("'Traceback (most recent call last):'", r['fail.traceback_first_line'])
    assert.equal('True', r['fail.tostring_shows_all'])
  end)

  it('raises ServiceNotFoundError for a name the server lacks', function()
    local r = client('notfound')
    assert.equal('False', r['notfound.ok'])
    assert.equal("'ServiceNotFoundError'", r['notfound.name'])
    assert.equal("'no_such_thing'", r['notfound.message'])
  end)

  it('sends pseud.kwargs as the kwargs map', function()
    assert.equal("{'a': 1, 'b': 'x'}", client('kwargs').kw)
  end)

  it('raises TimeoutError when no reply comes within timeout', function()
    local r = client('never')
    assert.equal('False', r['never.ok'])
    assert.equal("'TimeoutError'", r['never.name'])
    local seconds = tonumber(r['never.seconds'])
    assert.truthy(seconds >= 0.99 and seconds <= 2, 'timeout = 1 s took ' .. r['never.seconds'])
  end)

  it('answers a quick call while another one is pending', function()
    local r = client('overlap')
    assert.equal("'Hello quick'", r.quick)
    assert.equal('False', r['slow.done_before'])
    assert.equal("'TimeoutError'", r['slow.name'])
    assert.equal('True', r['slow.done_after'])
  end)

  it('gets its own answer for each of 200 calls in a row', function()
    assert.equal('200', client('many').many)
  end)
end)
