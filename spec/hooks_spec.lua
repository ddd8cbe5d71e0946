-- Backend hooks run synchronously in the loop, bounded by max_hook_time:
-- past it a hook counts as raising (refusal, logged), and other peers are
-- kept waiting at most that long (DESIGN.md section 4.2).
local process = require 'spec.support.process'
local logfmt = require 'spec.support.logfmt'

describe('backend hooks past max_hook_time', function()
  local server, endpoint
  before_each(function()
    server = process.start({ process.host(), 'spec/servers/hooks.lua' }, { name = 'hooks-server' })
    endpoint = server:wait_for('^ready (.*)$', 5, 10)
  end)
  after_each(function() process.stop_all() end)

  local function run(user)
    return process.run_lines({ process.host(), 'spec/clients/hooks.lua', endpoint, user },
      { name = user, timeout = 30 })
  end

  it('a spinning heartbeat hook is stopped and logged; the call is served', function()
    assert.same({ 'hbspin\tHello hbspin\ttrue' }, run('hbspin'))
    server:stop()
    logfmt.expect(server:log_text(), { level = 'warn', msg = 'heartbeat backend hook failed',
      hook = 'handle_heartbeat', backend = 'spinning_heartbeat',
      error = 'TimeoutError', message = 'the hook ran past max_hook_time' })
  end)

  it('a spinning is_authenticated refuses the call', function()
    assert.same({ 'gatespin\tUnauthorizedError\ttrue' }, run('gatespin'))
    server:stop()
    logfmt.expect(server:log_text(), { msg = 'auth backend hook failed (refused)',
      hook = 'is_authenticated', backend = 'spinning_auth', error = 'TimeoutError' })
  end)

  it('a hook killed where its kill was caught in tail position still counts as timed out', function()
    assert.same({ 'gatetail\tUnauthorizedError\ttrue' }, run('gatetail'))
    server:stop()
    logfmt.expect(server:log_text(), { msg = 'auth backend hook failed (refused)',
      hook = 'is_authenticated', backend = 'spinning_auth', error = 'TimeoutError' })
  end)

  it('a spinning zap hook refuses the handshake (ZAP 500)', function()
    assert.same({ 'zapspin\tUnauthorizedError\ttrue' }, run('zapspin'))
    server:stop()
    logfmt.expect(server:log_text(), { msg = 'ZAP handler failed (refused, 500)', error = 'TimeoutError',
      message = 'the hook ran past max_hook_time' })
  end)
end)
