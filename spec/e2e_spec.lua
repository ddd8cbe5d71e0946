-- End to end: pseud-lua clients against a pseud-lua server, real processes
-- on loopback (spec/servers/e2e.lua, spec/clients/cases.lua).
local process = require 'spec.support.process'

local endpoint

local function run_case(case, env)
  local prefix = 'env '
  for k, v in pairs(env or {}) do prefix = prefix .. k .. '=' .. v .. ' ' end
  local out, ok, code, log = process.run(prefix .. process.command_line {
    process.host(), 'spec/clients/cases.lua', endpoint, case }, { name = 'case-' .. case, timeout = 30 })
  local lines = {}
  for line in out:gmatch('[^\n]+') do lines[#lines + 1] = line end
  assert(ok and lines[#lines] == 'done', ('case %s failed (exit %s):\n%s\n-- stderr:\n%s'):format(
    case, tostring(code), out, io.open(log):read('a')))
  table.remove(lines)
  return lines, log
end

describe('pseud-lua server and client', function()
  lazy_setup(function()
    local _
    _, endpoint = process.server('spec/servers/e2e.lua')
  end)
  lazy_teardown(function() process.stop_all() end)

  it('answers hello as client.hello, client:hello and client:call', function()
    assert.same({ 'Hello Charly', 'Hello Charly', 'Hello Call' }, run_case('hello'))
  end)

  it('routes dotted names', function()
    assert.same({ 'Done' }, run_case('dotted'))
  end)

  it('finds local and global registrations', function()
    assert.same({ 'abc DEF' }, run_case('registry'))
  end)

  it('turns handler errors, unknown names and bad handlers into ERROR replies', function()
    local lines = run_case('errors')
    assert.matches('^error LuaError|.*boom|traceback$', lines[1])
    assert.equal('error ValueError|bad input|traceback', lines[2])
    assert.equal('error ServiceNotFoundError|no_such_thing|none', lines[3])
    assert.matches('^error LuaError|a handler yielded outside pseud', lines[4])
    assert.matches('^error TypeError|.*function', lines[5])
    assert.equal('Hello again', lines[6])
  end)

  it('carries the Lua traceback of a remote error', function()
    assert.same({ 'LuaError', 'spec/servers/e2e.lua:21: boom', 'has stack traceback', 'tostring ok',
                  ("call 'fail' to 'service' at " .. endpoint) }, run_case('traceback'))
  end)

  it('times out a call that is not answered in time and drops the late reply', function()
    local lines, log = run_case('timeout', { CASE_TIMEOUT = '0.3' })
    -- the message names the call, the service and the endpoint
    assert.equal(('error TimeoutError|no reply within 0.3 s (call \'sleep\' to \'service\' at %s)|none')
      :format(endpoint), lines[1])
    assert.equal('cpu ok', lines[2])
    assert.equal('timed out in time', lines[3])
    assert.equal('Hello after', lines[4])
    local text = io.open(log):read('a')
    assert.matches('msg="dropped a reply for no pending call %(late or forged%)" type=OK peer=', text)
  end)

  it('answers 1,000 calls in flight at once from one client', function()
    assert.same({ 'correct 1000 of 1000', 'pending 0' }, run_case('inflight'))
  end)

  it('passes kwargs as one extra last argument, only when sent', function()
    assert.same({ '1 x 2.5 float', '2 nil' }, run_case('kwargs'))
  end)

  it('keeps value types across the wire', function()
    assert.same({
      'integer 42 float -7 true',
      'true true 3 true 3',
      'true true deep true',
      '123 pickle-bytes true',
      'table 1 two nil',
    }, run_case('values'))
  end)

  it('keeps other calls going when handlers raise', function()
    assert.same({ 'correct 100 of 100' }, run_case('mixed'))
  end)

  it('serves two clients at once', function()
    local a = process.start({ process.host(), 'spec/clients/cases.lua', endpoint, 'inflight' }, { name = 'a' })
    local b = process.start({ process.host(), 'spec/clients/cases.lua', endpoint, 'inflight' }, { name = 'b' })
    for _, p in ipairs { a, b } do
      assert.equal('correct 1000 of 1000', p:read_line(), p:report())
      p:wait(30)
    end
  end)

  it("runs one client's sleeping handlers max_peer_calls (100) at a time: 200 of 0.2 s in two rounds", function()
    local lines = run_case('concurrent_sleep')
    local elapsed = tonumber(lines[1]:match('elapsed (%S+)'))
    assert.is_true(elapsed >= 0.4 and elapsed < 1.5, lines[1])
  end)
end)

describe('pseud-lua server shutdown', function()
  after_each(function() process.stop_all() end)

  it('finishes an in-flight call on SIGTERM, then exits 0', function()
    local srv, ep = process.server('spec/servers/e2e.lua')
    local client = process.start({ process.host(), 'spec/clients/cases.lua', ep, 'slow' },
      { name = 'slow-client' })
    srv:wait_for('^slow started$', 10, 10)
    srv:kill('TERM')
    assert.equal('finished', client:read_line(), client:report())
    local ok, how, code = srv:wait(10)
    assert.is_true(ok, ('%s %s\n%s'):format(how, code, srv:report()))
    assert.equal('stopped', srv.lines[#srv.lines])
  end)
end)
