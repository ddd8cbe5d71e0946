-- Heartbeats and liveness (DESIGN.md section 3): peers silent past their
-- timeout leave rpc:peers() and their calls end with PeerLostError; peers
-- that come back are listed again; a spinning handler makes no one time out.
local process = require 'spec.support.process'
local clock = require 'spec.support.clock'

local host = process.host()

local function one_shot(endpoint, identity, case, ...)
  local out, ok, code, log = process.run({ host, 'spec/clients/heartbeat.lua', endpoint, identity, '0.1', '0.3',
    case, ... }, { name = identity, timeout = 30 })
  assert(ok, ('%s exit %s\n%s\n%s'):format(case, tostring(code), out, io.open(log):read('a')))
  local lines = {}
  for line in out:gmatch('[^\n]+') do lines[#lines + 1] = line end
  assert.equal('done', table.remove(lines))
  return lines
end

local function start_client(endpoint, identity, interval, timeout)
  local p = process.start({ host, 'spec/clients/heartbeat.lua', endpoint, identity, interval, timeout },
    { name = identity })
  assert.equal('ready', p:read_line(), p:report())
  return p
end

describe('heartbeats', function()
  after_each(function() process.stop_all() end)

  it('drops a stopped client within timeout + interval, refuses send_to it, lists it again after SIGCONT', function()
    local server = process.start({ host, 'spec/servers/heartbeat.lua', '0.2', '0.6' }, { name = 'hb-server' })
    local endpoint = server:wait_for('^ready (%S+)', 10, 10)
    local client = start_client(endpoint, 'sleeper', '0.2', '0.6')
    assert.equal('sleeper', server:wait_for('^joined (sleeper)$', 10, 10))
    client:kill('STOP')
    local t0 = clock.now()
    assert.equal('sleeper', server:wait_for('^gone (%S+)$', 10, 3))
    -- gone once 0.6 s pass without a heartbeat, checked every 0.2 s: the last
    -- one came at most 0.2 s before STOP, so 0.4 .. 0.8 s after it, plus
    -- slack for a loaded machine on the upper bound only
    local took = clock.now() - t0
    assert.is_true(took >= 0.3 and took <= 1.5, ('gone %.2f s after SIGSTOP'):format(took))
    assert.same({ 'asker' }, one_shot(endpoint, 'asker', 'peers'))
    -- declared gone: send_to fails at once, though its connection is still up
    local outcome, seconds = one_shot(endpoint, 'asker', 'call_client', 'sleeper', '0')[1]:match('^(%S+)\t(%S+)$')
    assert.equal('PeerLostError', outcome)
    assert.is_true(tonumber(seconds) < 0.1)
    client:kill('CONT')
    assert.equal('sleeper', server:wait_for('^joined (sleeper)$', 10, 3))
    assert.same({ 'asker,sleeper' }, one_shot(endpoint, 'asker', 'peers'))
  end)

  it('ends a call to a client that is killed with PeerLostError within the heartbeat timeout', function()
    local server = process.start({ host, 'spec/servers/heartbeat.lua', '0.1', '0.3' }, { name = 'hb-server' })
    local endpoint = server:wait_for('^ready (%S+)', 10, 10)
    local victim = start_client(endpoint, 'victim', '0.1', '0.3')
    local caller = process.start({ host, 'spec/clients/heartbeat.lua', endpoint, 'caller', '0.1', '0.3',
      'call_client', 'victim', '30' }, { name = 'caller' })
    server:wait_for('^joined (caller)$', 10, 10)
    victim:kill('KILL')
    local line = caller:read_line()
    assert(line, caller:report())
    local outcome, seconds = line:match('^(%S+)\t(%S+)$')
    assert.equal('PeerLostError', outcome, line)
    assert.is_true(tonumber(seconds) < 2, line)
  end)

  it('keeps every peer alive and answers 100 calls while a handler spins for 3 s', function()
    local server = process.start({ host, 'spec/servers/heartbeat.lua', '0.1', '0.3' }, { name = 'hb-server' })
    local endpoint = server:wait_for('^ready (%S+)', 10, 10)
    local idle = start_client(endpoint, 'idle', '0.1', '0.3')
    assert.same({ '100\tduring', 'spun' }, one_shot(endpoint, 'spinner', 'spin_and_hello'))
    -- The server prints `spun` when the spin ends, before its answer: every
    -- line before it was printed during (or before) the spin. Read up to it;
    -- after it both peers may go, legitimately (they stop).
    server:wait_for('^spun$', 20, 10)
    local during = table.concat(server.lines, '\n')
    assert.matches('\njoined idle\n', during, nil, true)
    assert.matches('\njoined spinner\n', during, nil, true)
    for _, line in ipairs(server.lines) do
      assert.is_nil(line:match('^gone '), 'a peer timed out during the spin:\n' .. during)
    end
    idle:stop()
  end)

  it("fails a client's pending call when its server dies, and works with the next server", function()
    local server = process.start({ host, 'spec/servers/heartbeat.lua', '0.1', '0.3' }, { name = 'hb-server' })
    local endpoint = server:wait_for('^ready (%S+)', 10, 10)
    local client = process.start({ host, 'spec/clients/heartbeat.lua', endpoint, 'orphan', '0.1', '0.3',
      'server_dies' }, { name = 'orphan' })
    assert.equal('waiting', client:read_line(), client:report())
    server:kill('KILL')
    server:wait(10)
    assert.equal('PeerLostError\ttrue', client:read_line(), client:report())
    process.start({ host, 'spec/servers/heartbeat.lua', '0.1', '0.3', endpoint }, { name = 'hb-server-2' })
    assert.equal('Hello again', client:read_line(), client:report())
  end)

  it('lists an independent Python peer that sends HEARTBEATs, and expires it when silent', function()
    local server = process.start({ host, 'spec/servers/heartbeat.lua', '0.1', '0.3' }, { name = 'hb-server' })
    local endpoint = server:wait_for('^ready (%S+)', 10, 10)
    local r = process.pypeer { 'heartbeats', endpoint, 'service', '--identity', 'py-peer', '--count', '10',
      '--every', '0.1' }
    assert.is_true(r.sent >= 10)
    assert.equal('py-peer', server:wait_for('^joined (py%-peer)$', 10, 3))
    assert.equal('py-peer', server:wait_for('^gone (py%-peer)$', 10, 3))
  end)

  it('logs at most about 20 "peer silent" lines a second when 300 connections come and go', function()
    local server = process.start({ host, 'spec/servers/heartbeat.lua', '0.1', '0.3' }, { name = 'hb-server' })
    local endpoint = server:wait_for('^ready (%S+)', 10, 10)
    local out, ok, _, log = process.python('spec/support/attacker.py', { 'churn', endpoint, '300' })
    assert(ok, out .. io.open(log):read('a'))
    for _ = 1, 300 do server:wait_for('^gone c%d+$', 400, 20) end   -- every one expired
    local text = server:log_text()
    local _, lines = text:gsub('msg="peer silent: gone"', '')
    assert(lines >= 1 and lines <= 60, lines .. ' "peer silent: gone" lines for 300 peers in about a second')
  end)
end)
