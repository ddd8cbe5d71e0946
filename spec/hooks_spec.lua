-- Backend hooks run synchronously in the loop, bounded by max_hook_time:
-- past it a hook counts as raising (refusal, logged), and other peers are
-- kept waiting at most that long (DESIGN.md section 4.2).
local process = require 'spec.support.process'

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
    assert.matches('handle_heartbeat of heartbeat backend spinning_heartbeat failed: '
      .. 'TimeoutError: the hook ran past max_hook_time', server:log_text())
  end)

  it('a spinning is_authenticated refuses the call', function()
    assert.same({ 'gatespin\tUnauthorizedError\ttrue' }, run('gatespin'))
    server:stop()
    assert.matches('is_authenticated of spinning_auth failed %(refused%): TimeoutError', server:log_text())
  end)

  it('a spinning zap hook refuses the handshake (ZAP 500)', function()
    assert.same({ 'zapspin\tTimeoutError\ttrue' }, run('zapspin'))
    server:stop()
    assert.matches('ZAP handler failed %(refused, 500%): TimeoutError: the hook ran past max_hook_time',
      server:log_text())
  end)
end)
