-- bench_load's own ZMTP client (--wire raw, bench/wire.c) against the
-- benchmark's pseud-lua server: scripts/bench's figures rest on it, and it
-- is one more independent peer of the host's wire (greeting, READY, frames
-- cut anywhere across reads). bench_load checks every reply itself (uuid,
-- type, body byte for byte) and counts what is wrong in errors=.
local process = require 'spec.support.process'

local function bench_load()
  return (process.host():gsub('[^/]+$', 'bench/bench_load'))
end

local endpoint

local function load(args, name)
  local argv = { bench_load(), endpoint, 'bench', '--wire', 'raw', '--deadline', '20' }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local out, ok, code, log = process.run(argv, { name = name, timeout = 30 })
  return out, ok, code, process.read(log)
end

local function assert_all_answered(calls, args, name)
  local out, ok, code, err = load(args, name)
  assert(ok, ('bench_load exited %s:\n%s\n%s'):format(tostring(code), out, err))
  assert.equal(tostring(calls), out:match('calls=(%d+)'))
  assert.equal('0', out:match('errors=(%d+)'))
end

describe('bench_load --wire raw', function()
  lazy_setup(function()
    local _
    _, endpoint = process.server('bench/echo_server.lua')
  end)
  lazy_teardown(function() process.stop_all() end)

  it('has every hello answered and checked at window 1 and window 100', function()
    assert_all_answered(300, { '--calls', '300', '--window', '1' }, 'w1')
    assert_all_answered(5000, { '--calls', '5000', '--window', '100' }, 'w100')
  end)

  it('echoes 64 KiB bins whole, their frames cut across reads', function()
    assert_all_answered(40, { '--calls', '40', '--window', '4', '--payload', '65536' }, 'echo')
  end)

  it('drives many connections from one thread', function()
    assert_all_answered(400, { '--calls', '400', '--clients', '20' }, 'fan')
  end)

  it('refuses a server whose routing id is not the one named', function()
    local argv = { bench_load(), endpoint, 'not-bench', '--wire', 'raw', '--calls', '1' }
    local out, ok, _, log = process.run(argv, { name = 'wrong-id', timeout = 30 })
    assert.is_false(ok)
    assert.equal('', out)                -- no figures: it never started
    assert.matches("routing id is not 'not%-bench'", process.read(log))
  end)

  -- Against spec/support/zmtpserver.py, a server that misbehaves on purpose.
  local function against(mode, args)
    local server = process.start({ '/usr/bin/python3', '-u', 'spec/support/zmtpserver.py', mode },
                                 { name = 'zmtp-' .. mode })
    local at = server:wait_for('^ready (%S+)', 100, 10)
    local argv = { bench_load(), at, 'bench', '--wire', 'raw', '--deadline', '20' }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local out, ok, _, log = process.run(argv, { name = 'load-' .. mode, timeout = 30 })
    server:stop()
    return out, ok, process.read(log), server:log_text()
  end

  it("answers a server's PING with a PONG that carries its context", function()
    -- the server answers each call only once the PONG came back
    local out, ok, err, server_log = against('ping', { '--calls', '20' })
    assert(ok, out .. err)
    assert.equal('0', out:match('errors=(%d+)'))
    local _, pongs = server_log:gsub('pong\n', '')
    assert.equal(21, pongs)                      -- the warm-up call, then 20
  end)

  it('takes a message of 64 frames as a message, and refuses one of 65', function()
    local out, _, err = against('frames:64', { '--calls', '5' })
    assert.equal('5', out:match('calls=(%d+)'))
    assert.matches('not a v1 reply: 64 frames', err)
    out, _, err = against('frames:65', { '--calls', '5' })
    assert.equal('0', out:match('calls=(%d+)'))
    assert.matches('the server broke ZMTP: a message over %d+ bytes or 64 frames', err)
  end)

  it('takes a 64 MiB message, and refuses one of a byte more', function()
    local out, _, err = against('size:' .. (64 << 20), { '--calls', '5' })
    assert.equal('5', out:match('calls=(%d+)'))
    assert.matches('not a v1 reply: 1 frames', err)
    out, _, err = against('size:' .. ((64 << 20) + 1), { '--calls', '5' })
    assert.equal('0', out:match('calls=(%d+)'))
    assert.matches('the server broke ZMTP: a message over 67108864 bytes', err)
  end)

  it('is refused with CURVE, which only libzmq clients speak, and says so', function()
    local argv = { bench_load(), endpoint, 'bench', '--wire', 'raw', '--curve-server-key', ('x'):rep(40) }
    local _, ok, code, log = process.run(argv, { name = 'raw-curve', timeout = 30 })
    assert.is_false(ok)
    assert.equal(2, code)
    assert.matches('%-%-wire raw speaks no CURVE', process.read(log))
  end)
end)
