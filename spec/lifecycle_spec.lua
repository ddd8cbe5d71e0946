-- A stop that loses nothing silently, calls that leave after the script
-- ends, handler failures in the server's log, and nothing left behind after
-- 10,000 calls that end every way a call can (DESIGN.md section 4.2, issue 10).
local process = require 'spec.support.process'
local logfmt = require 'spec.support.logfmt'
local clock = require 'spec.support.clock'

local SERVER = 'spec/servers/lifecycle.lua'
local CLIENT = 'spec/clients/lifecycle.lua'

local function start_server(env)
  local argv = { process.host(), SERVER }
  if env then table.insert(argv, 1, env) table.insert(argv, 1, 'env') end
  local server = process.start(argv, { name = 'lifecycle-server' })
  local endpoint = server:wait_for('^ready (.*)$', 5, 10)
  return server, endpoint
end

local function run(endpoint, case, extra)
  return process.run_lines({ process.host(), CLIENT, endpoint, case, extra }, { name = case, timeout = 60 })
end

describe('lifecycle', function()
  after_each(function() process.stop_all() end)

  it('exits on SIGTERM with spawned tasks still spinning, and frees them', function()
    local server = process.start({ process.host(), 'spec/servers/spin_exit.lua' }, { name = 'spin-exit' })
    server:wait_for('^ready$', 5, 10)
    server:kill('TERM')
    local ok = server:wait(10)        -- the sanitizer run checks its log for leaks here
    assert.is_true(ok, server:report())
    assert.equal('stopped', server.lines[#server.lines])
  end)

  it('answers calls still running after stop_timeout with PeerLostError and exits', function()
    local server, endpoint = start_server()
    local client = process.start({ process.host(), CLIENT, endpoint, 'stop' }, { name = 'stop-client' })
    client:wait_for('^started$', 5, 10)
    local t0 = clock.now()
    server:kill('TERM')
    server:wait(10)
    local took = clock.now() - t0
    client:wait(10)
    assert.same({ 'forever\tPeerLostError\tserver stopping', 'spin\tPeerLostError\tserver stopping', 'done' },
      { client.lines[2], client.lines[3], client.lines[4] })
    assert.equal('stopped', server.lines[#server.lines])
    assert.is_true(took > 0.9 and took < 2.1, 'stopped after ' .. took .. ' s (stop_timeout 1 s)')
    logfmt.expect(server:log_text(), { level = 'warn',
      msg = 'stopped with calls still running: answered PeerLostError', calls = 2 })
  end)

  -- SIGHUP went back to its default (end the process) as serving ended,
  -- before the drain: a reload racing a stop lost every call still
  -- finishing and exited 129 (an attack round)
  it('finishes the calls in flight when a SIGHUP comes during the stop', function()
    local server, endpoint = start_server()
    local client = process.start({ process.host(), CLIENT, endpoint, 'naps' }, { name = 'naps-client' })
    client:wait_for('^started$', 5, 10)
    server:kill('TERM')
    local deadline = clock.now() + 5
    while not server:log_text():find('signal: finishing the calls in flight', 1, true) and clock.now() < deadline do
      os.execute('sleep 0.02')                     -- polls the log until the stop began
    end
    server:kill('HUP')
    local ok, how, code = server:wait(10)
    client:wait(10)
    assert.same({ 'answered\t5', 'done' }, { client.lines[2], client.lines[3] })
    assert.is_true(ok, ('%s %s\n%s'):format(how, code, server:report()))
  end)

  it('sends a call the script never waited for before pseud-lua exits', function()
    local _, endpoint = start_server()
    local token = 'note-' .. math.random(1e9)
    assert.same({}, run(endpoint, 'fire', token))
    assert.same({ token }, run(endpoint, 'notes'))
  end)

  it('logs a failing handler: name, class, message, where', function()
    local server, endpoint = start_server()
    assert.same({ 'LuaError\tspec/servers/lifecycle.lua:19: boom' }, run(endpoint, 'fail'))
    server:stop()
    local rec = logfmt.expect(server:log_text(), { level = 'warn', msg = 'handler failed', name = 'fail',
      error = 'LuaError', message = 'spec/servers/lifecycle.lua:19: boom' })
    assert.matches('^spec/servers/lifecycle.lua:19:', rec.at)
  end)

  it('keeps handler failures out of the log at PSEUD_LOG=error', function()
    local server, endpoint = start_server('PSEUD_LOG=error')
    assert.same({ 'LuaError\tspec/servers/lifecycle.lua:19: boom' }, run(endpoint, 'fail'))
    server:stop()
    assert.is_nil(server:log_text():find('handler', 1, true))
  end)

  it('leaves no task, call, timer or reference behind after 10,000 mixed calls', function()
    local _, endpoint = start_server()
    local lines = run(endpoint, 'leak')
    local expected = { 'LuaError=2500 PeerLostError=2500 TimeoutError=2500 ok=2500' }
    for _, side in ipairs { 'server', 'client' } do
      for _, k in ipairs { 'tasks', 'answering', 'pending_calls', 'timers', 'registry' } do
        expected[#expected + 1] = side .. '\t' .. k .. '\ttrue'
      end
    end
    assert.same(expected, lines)
  end)
end)
