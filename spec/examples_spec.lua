-- The examples run as they are: each server with its client, on a free port.
local process = require 'spec.support.process'

local function pair(server_script, client_script, expected)
  local server = process.start({ process.host(), server_script, 'tcp://127.0.0.1:*' },
    { name = server_script:match('[^/]+$') })
  local endpoint = server:wait_for('listening on (%S+)', 10, 10)
  local out, ok, code, log = process.run({ process.host(), client_script, endpoint },
    { name = client_script:match('[^/]+$'), timeout = 20 })
  assert(ok, ('%s exited %s:\n%s\n%s'):format(client_script, tostring(code), out,
    io.open(log):read('a')))
  assert.equal(expected, out)
end

describe('examples', function()
  after_each(function() process.stop_all() end)

  it('hello_server.lua answers hello_client.lua', function()
    pair('examples/hello_server.lua', 'examples/hello_client.lua', 'Hello Charly\n')
  end)

  it('remote_calls_server.lua answers remote_calls_client.lua', function()
    pair('examples/remote_calls_server.lua', 'examples/remote_calls_client.lua', 'abc\tDEF\tDone\n')
  end)
end)

describe('heartbeat example', function()
  after_each(function() process.stop_all() end)

  it('heartbeat_server.lua logs joins and departures and lists live peers', function()
    local server = process.start({ process.host(), 'examples/heartbeat_server.lua', 'tcp://127.0.0.1:*' },
      { name = 'heartbeat_server.lua' })
    local endpoint = server:wait_for('listening on (%S+)', 10, 10)
    local function client(name)
      local out, ok = process.run({ process.host(), 'examples/heartbeat_client.lua', endpoint, name },
        { name = name })
      assert.is_true(ok, out)
      return out
    end
    assert.equal('live peers: alice\n', client('alice'))
    assert.equal('live peers: alice, bob\n', client('bob'))
    assert.equal('alice', server:wait_for('^joined: (%S+)$', 10, 5))
    assert.equal('bob', server:wait_for('^joined: (%S+)$', 10, 5))
    assert.equal('alice', server:wait_for('^gone:%s+(%S+)$', 10, 6))
    assert.equal('bob', server:wait_for('^gone:%s+(%S+)$', 10, 6))
  end)
end)

describe('authentication examples', function()
  after_each(function() process.stop_all() end)

  it('auth_plain_server.lua knows auth_plain_client.lua as alice', function()
    pair('examples/auth_plain_server.lua', 'examples/auth_plain_client.lua', 'you are alice\n')
  end)

  it('auth_curve_server.lua knows auth_curve_client.lua by its key', function()
    local dir = process.tmpdir() .. '/curve-example'
    local host = process.quote(process.host())
    assert(os.execute(('mkdir -p %s && cd %s && %s keygen server >/dev/null && %s keygen alice >/dev/null'
      .. ' && echo "alice $(cat alice.key)" > allow_list'):format(dir, dir, host, host)))
    local server = process.start({ process.host(), 'examples/auth_curve_server.lua', 'tcp://127.0.0.1:*', dir },
      { name = 'auth_curve_server.lua' })
    local endpoint = server:wait_for('listening on (%S+)', 10, 10)
    local out, ok = process.run({ process.host(), 'examples/auth_curve_client.lua', endpoint, dir },
      { name = 'auth_curve_client.lua' })
    assert.is_true(ok, out)
    assert.equal('you are alice\n', out)
  end)

  it('custom_auth_backend.lua routes by the admin flag its backend gives', function()
    local out, ok = process.run({ process.host(), 'examples/custom_auth_backend.lua' }, { name = 'custom' })
    assert.is_true(ok, out)
    assert.equal('guest: small power\nroot: great power\n', out)
  end)
end)
