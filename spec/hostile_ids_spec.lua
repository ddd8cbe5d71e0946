--[[
hostile_ids_spec: routing ids of any length (DESIGN.md section 4).

ZeroMQ caps ZMQ_ROUTING_ID at 255 bytes only for a socket setting its own;
a peer may announce any length in its ZMTP READY command, and a ROUTER
takes it. spec/support/zmtp_raw.py is such a peer (a plain TCP socket
speaking ZMTP 3.0), since pyzmq cannot do it.

The contract: a routing id longer than 255 bytes is refused (logged, its
messages dropped unanswered; the host may also disconnect it), never copied
into a fixed buffer; 255 bytes is legal and served. Each row gets a fresh
server (spec/servers/basic.lua), so a row that kills it fails alone, and
checks, after the attack: the raw peer got exactly what the contract says,
the server process is alive, its log says why (over-long rows), and a good
caller (pypeer, a pyzmq ROUTER) gets its OK.
]]
local process = require 'spec.support.process'
local json = require 'dkjson'

local SERVICE = 'service'
local ZMTP_RAW = 'spec/support/zmtp_raw.py'
local OK = 0x01
local NONE_WAIT = '0.5'                    -- seconds a non-event is awaited
local REPLY_WAIT = '5'                     -- seconds a reply may take, at most
local LOG_WAIT = 5                         -- seconds the refusal may take to reach the log

--- Run zmtp_raw.py call against `endpoint`; returns its JSON result, whether
-- it exited 0, and its raw output plus stderr for messages.
local function raw_call(endpoint, args)
  local host, port = endpoint:match('^tcp://([^:]+):(%d+)$')
  assert(host, 'not a tcp endpoint: ' .. tostring(endpoint))
  local argv = { 'call', host, port }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local out, ok, code, log = process.python(ZMTP_RAW, argv)
  local value = json.decode(out, 1, json.null)
  local f = io.open(log, 'rb')
  local err = f and f:read('a') or ''
  if f then f:close() end
  if type(value) ~= 'table' then
    error(('zmtp_raw %s: exit %s, no JSON:\n%s\n-- stderr:\n%s'):format(
      table.concat(argv, ' '), tostring(code), out, err), 2)
  end
  return value, ok, out .. err
end

--- The log text written after byte `from` mentions a refused routing id.
-- Loose on purpose: the wording is the host's ("refused message from a
-- peer with a 4000-byte routing id (over 255): dropped", say).
local function refusal_logged(text)
  local lower = text:lower()
  return lower:find('routing id', 1, true) ~= nil and lower:find('refused', 1, true) ~= nil
end

--- Wait (bounded) until the server's log after byte `from` says the id was
-- refused; returns that log text, or nil and what was logged. The raw peer
-- has already waited NONE_WAIT seconds for its non-reply, so the line is
-- normally there at the first look; the polling only covers a loaded machine.
local function wait_refusal_logged(server, from)
  local text
  for _ = 1, LOG_WAIT * 20 do
    text = server:log_text():sub(from + 1)
    if refusal_logged(text) then return text end
    if not server:alive() then break end
    os.execute('sleep 0.05')
  end
  return nil, text
end

describe('routing ids of any length', function()
  local server, endpoint

  before_each(function()
    server, endpoint = process.server('spec/servers/basic.lua')
  end)

  after_each(function()
    process.stop_all()
  end)

  --- The server is alive and a good caller right after gets its OK.
  local function still_serves()
    assert(server:alive(), 'the server died:\n' .. server:report())
    local r, ok, raw = process.pypeer({ 'call', endpoint, SERVICE, 'hello', '["after"]' })
    assert(ok, 'a good call after the attack failed:\n' .. raw .. '\n-- server:\n' .. server:report())
    assert.equal(OK, r.type)
    assert.equal('Hello after', r.body)
    assert(server:alive(), 'the server died:\n' .. server:report())
  end

  it('serves a peer whose routing id is 255 bytes (the longest legal one)', function()
    local r, ok, raw = raw_call(endpoint, { '--id-len', '255', '--count', '2',
                                            '--expect', 'reply', '--timeout', REPLY_WAIT })
    assert(ok, 'expected two OKs for a 255-byte id, got:\n' .. raw .. '\n-- server:\n' .. server:report())
    assert.is_true(r.connected)
    assert.equal('service', r.server_identity)
    assert.same({ OK, OK }, r.types)
    for _, reply in ipairs(r.reply_details) do
      assert.same({}, reply.problems)
      assert.equal('Hello x', reply.body)
    end
    still_serves()
  end)

  for _, row in ipairs({
    { len = 256, what = '256 bytes (one past the limit)' },
    { len = 4000, what = '4000 bytes' },
    { len = 1000000, what = '1,000,000 bytes' },
  }) do
    it('refuses a peer whose routing id is ' .. row.what .. ': no reply, logged, server lives', function()
      local before = #server:log_text()
      local r, ok, raw = raw_call(endpoint, { '--id-len', tostring(row.len), '--count', '3',
                                              '--expect', 'none', '--timeout', NONE_WAIT })
      local context = raw .. '\n-- server:\n' .. server:report()
      -- The handshake itself is libzmq's; the host may close the connection
      -- afterwards (closed_by_server), but must never answer.
      assert.is_true(r.tcp_connected, context)
      assert.equal(row.len, r.id_len)
      assert.equal(0, r.replies, 'a peer with a ' .. row.len .. '-byte routing id was answered:\n' .. context)
      assert(ok, context)
      assert(server:alive(), 'the server died:\n' .. context)
      local logged, seen = wait_refusal_logged(server, before)
      assert(logged, ('the log does not say the %d-byte routing id was refused; it says:\n%s\n-- server:\n%s')
        :format(row.len, seen or '', server:report()))
      still_serves()
    end)
  end

  it('keeps serving others beside 250 messages under an 8 MiB routing id (each costs libzmq a copy)', function()
    -- libzmq copies a message's routing id into a frame of its own on every
    -- receive: about 20 ms for 8 MiB here. A read batch of 256 of them held
    -- every other call 5 s; the batch now ends after a few MiB read.
    local host, port = endpoint:match('^tcp://([^:]+):(%d+)$')
    local out, ok, _, log = process.python(ZMTP_RAW, { 'flood', host, port, '--id-len', tostring(8 << 20),
                                                       '--count', '250', '--timeout', '30' })
    local r = json.decode(out, 1, json.null)
    assert(ok and type(r) == 'table', out .. io.open(log):read('a'))
    assert.equal(250, r.sent)
    assert.is_true(r.probe_reply)
    assert(r.probe_seconds < 0.5, ('the probe waited %.3f s behind the flood'):format(r.probe_seconds))
    still_serves()
  end)
end)
