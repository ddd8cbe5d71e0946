-- Logs (issue 13, item 5): one logfmt line per event with an ISO-8601 time
-- and a level; --log-level and PSEUD_LOG pick the least shown, for the
-- host's C lines and its Lua lines alike; a per-call access line at debug;
-- handler failures at warn; never a password.
local process = require 'spec.support.process'
local logfmt = require 'spec.support.logfmt'

local SERVER, CLIENT = 'spec/servers/logs.lua', 'spec/clients/logs.lua'

local function start(level_args, mode, env)
  local argv = { process.host() }
  if env then argv = { 'env', env, process.host() } end
  for _, a in ipairs(level_args) do argv[#argv + 1] = a end
  argv[#argv + 1] = SERVER
  argv[#argv + 1] = mode
  local server = process.start(argv, { name = 'logs-server' })
  return server, server:wait_for('^ready (%S+)', 5, 10)
end

local function run(endpoint, case, ...)
  return process.run_lines({ process.host(), CLIENT, endpoint, case, ... }, { name = 'logs-' .. case })
end

-- Every line of `text` is logfmt with time, level and msg.
local function assert_all_logfmt(text)
  local n = 0
  for line in text:gmatch('[^\n]+') do
    local rec = logfmt.parse(line)
    assert(rec, 'not a logfmt line: ' .. line)
    assert.matches('^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$', rec.time)
    assert.truthy(({ error = true, warn = true, info = true, debug = true })[rec.level], line)
    n = n + 1
  end
  return n
end

describe('logs', function()
  after_each(function() process.stop_all() end)

  it('at debug: an access line per call, handler failures at warn, every line logfmt', function()
    local server, endpoint = start({ '--log-level', 'debug' })
    assert.same({ 'Hello Charly', 'LuaError', 'ServiceNotFoundError', 'ServiceNotFoundError' },
      run(endpoint, 'calls'))
    server:stop()
    local log = server:log_text()
    assert.is_true(assert_all_logfmt(log) >= 5, log)
    local ok = logfmt.expect(log, { level = 'debug', msg = 'call', name = 'hello', outcome = 'OK' })
    assert.truthy(tonumber(ok.seconds) and tonumber(ok.seconds) >= 0, ok.seconds)
    assert.is_not_nil(ok.peer)
    logfmt.expect(log, { level = 'debug', msg = 'call', name = 'fail', outcome = 'LuaError' })
    logfmt.expect(log, { level = 'debug', msg = 'call', name = 'no.such.name', outcome = 'ServiceNotFoundError' })
    local failed = logfmt.expect(log, { level = 'warn', msg = 'handler failed', name = 'fail',
      error = 'LuaError' })
    assert.matches('boom', failed.message)
    assert.matches('^spec/servers/logs.lua:14:', failed.at)
    logfmt.expect(log, { level = 'warn', msg = 'predicate failed (refused)', domain = 'bad' })
  end)

  it('at the default level (info): no access lines; failures still logged', function()
    local server, endpoint = start({})
    run(endpoint, 'calls')
    server:stop()
    local log = server:log_text()
    assert_all_logfmt(log)
    assert.is_nil(logfmt.find(log, { level = 'debug' }), log)
    logfmt.expect(log, { level = 'warn', msg = 'handler failed' })
  end)

  it('PSEUD_LOG=error hides the warn lines of C and of Lua alike', function()
    local server, endpoint = start({}, nil, 'PSEUD_LOG=error')
    run(endpoint, 'calls')
    server:stop()
    local log = server:log_text()
    assert.is_nil(logfmt.find(log, { msg = 'handler failed' }), log)          -- C
    assert.is_nil(logfmt.find(log, { msg = 'predicate failed (refused)' }), log)   -- Lua
  end)

  it('pseud.log writes through the same level and format', function()
    local server, endpoint = start({ '--log-level=info' })
    assert.same({ 'info', 'info', 'info' }, run(endpoint, 'say'))
    server:stop()
    local log = server:log_text()
    logfmt.expect(log, { level = 'info', msg = 'info from a handler', from = 'script', n = 7 })
    logfmt.expect(log, { level = 'warn', msg = 'warn from a handler' })
    assert.is_nil(logfmt.find(log, { msg = 'debug from a handler' }), log)
  end)

  it('never logs a password, even at debug', function()
    local server, endpoint = start({ '--log-level', 'debug' }, 'plain')
    assert.same({ 'Hello Charly' }, run(endpoint, 'hello', 'alice', 'wonderland'))
    local out = process.run({ process.host(), CLIENT, endpoint, 'hello', 'alice', 'Guess-Pw-81x' },
      { name = 'logs-badlogin' })
    assert.matches('^UnauthorizedError', out)
    server:stop()
    local log = server:log_text()
    assert.is_nil(log:find('wonderland', 1, true), log)
    assert.is_nil(log:find('Guess-Pw-81x', 1, true), log)
    logfmt.expect(log, { level = 'debug', msg = 'call', name = 'hello', user = 'alice', outcome = 'OK' })
  end)

  it('refuses an unknown level, naming it', function()
    local out, ok, _, log = process.run({ process.host(), '--log-level', 'loud', '-e', 'print(1)' })
    assert.is_false(ok)
    assert.equal('', out)
    assert.matches("--log-level 'loud'", io.open(log):read('a'), 1, true)
    -- after another option's value too
    out, ok, _, log = process.run({ process.host(), '--metrics', 'tcp://127.0.0.1:0', '--log-level', 'loud',
      '-e', 'print(1)' })
    assert.is_false(ok)
    assert.equal('', out)
    assert.matches("--log-level 'loud'", io.open(log):read('a'), 1, true)
    local out2, ok2, _, log2 = process.run({ 'env', 'PSEUD_LOG=loud', process.host(), '-e',
      "print(require('pseud').log_level())" })
    assert.is_true(ok2)
    assert.equal('info\n', out2)
    logfmt.expect(io.open(log2):read('a'), { level = 'warn', value = 'loud' })
  end)
end)
