-- Mistakes that say so (issue 13, item 1): an option name nothing reads
-- raises ValueError naming it and the closest known name, before any
-- socket is made; a backend lists the option names it reads
-- (`option_names`), and one that does not may read any.
local process = require 'spec.support.process'
local logfmt = require 'spec.support.logfmt'

-- Run `code` in pseud-lua -e; returns stdout, ok, stderr.
local function run(code)
  local out, ok, _, log = process.run({ process.host(), '-e', "local pseud = require 'pseud'\n" .. code })
  local f = assert(io.open(log))
  local err = f:read('a')
  f:close()
  return out, ok, err
end

describe('an option name nothing reads', function()
  it('raises ValueError naming it and the closest known option', function()
    local out, ok, err = run("pseud.Server('x', { timout = 5 }); print('made')")
    assert.is_false(ok)
    assert.equal('', out)
    assert.matches("ValueError: unknown option 'timout' (did you mean 'timeout'?)", err, 1, true)
    out, ok, err = run("pseud.Client('x', { identiy = 'me' }); print('made')")
    assert.is_false(ok)
    assert.equal('', out)
    assert.matches("ValueError: unknown option 'identiy' (did you mean 'identity'?)", err, 1, true)
  end)

  it('names the backend that would read it', function()
    local _, ok, err = run("pseud.Server('x', { heartbeat_intervall = 1 })")
    assert.is_false(ok)
    assert.matches("unknown option 'heartbeat_intervall' (did you mean 'heartbeat_interval'? " ..
                   "heartbeat_plugin 'heartbeat' reads it)", err, 1, true)
    _, ok, err = run("pseud.Server('x', { credentials_file = 'users' })")
    assert.is_false(ok)
    assert.matches("unknown option 'credentials_file' (security_plugin 'plain' reads it)", err, 1, true)
  end)

  it('suggests nothing when nothing is close', function()
    local _, ok, err = run("pseud.Server('x', { zzz = 1 })")
    assert.is_false(ok)
    assert.matches("ValueError: unknown option 'zzz'\n", err, 1, true)
  end)

  it("checks the cluster table's names and its max_forwarded bound (1 to 10,000,000)", function()
    local url = "redis = 'redis://127.0.0.1:1'"   -- never reached: the checks come first
    local _, ok, err = run("pseud.Server('x', { cluster = { " .. url .. ", max_forwaded = 5 } })")
    assert.is_false(ok)
    assert.matches("ValueError: unknown cluster option 'max_forwaded' (did you mean 'max_forwarded'?)", err, 1, true)
    for _, bad in ipairs({ '0', '1.5', '10000001', '0/0' }) do
      _, ok, err = run("pseud.Server('x', { cluster = { " .. url .. ", max_forwarded = " .. bad .. " } })")
      assert.is_false(ok, bad)
      assert.matches('cluster.max_forwarded must be a whole number from 1 to 10000000', err, 1, true)
    end
    for _, good in ipairs({ '1', '10000000' }) do
      local out
      out, ok, err = run("local s = pseud.Server('x', { cluster = { " .. url .. ", max_forwarded = " .. good
        .. " } }); s:close(); print('made')")
      assert.is_true(ok, err)
      assert.equal('made\n', out)
    end
  end)

  it('refuses linger and max_message_size that no integer holds, before casting them', function()
    for _, bad in ipairs({ '1e300', '0/0', '86401' }) do
      local _, ok, err = run("pseud.Server('x', { linger = " .. bad .. " })")
      assert.is_false(ok, bad)
      assert.matches('linger must be seconds, at most 86400', err, 1, true)
    end
    for _, bad in ipairs({ '1e300', '0/0', '2^53 + 2' }) do
      local _, ok, err = run("pseud.Server('x', { max_message_size = " .. bad .. " })")
      assert.is_false(ok, bad)
      assert.matches('max_message_size must be bytes, at most 2^53', err, 1, true)
    end
    local out, ok, err = run("pseud.Server('x', { linger = 86400, max_message_size = 2^53 }):close(); print('made')")
    assert.is_true(ok, err)
    assert.equal('made\n', out)
  end)

  it('refuses a name that is not a string, and options that are not a table', function()
    local _, ok, err = run("pseud.Server('x', { 5 })")
    assert.is_false(ok)
    assert.matches('ValueError: option names are strings, not number', err, 1, true)
    _, ok, err = run("pseud.Server('x', 'fast')")
    assert.is_false(ok)
    assert.matches('TypeError: server: options must be a table', err, 1, true)
  end)

  it('accepts every option the README lists, with the backend that reads it', function()
    local out, ok, err = run([[
      local reg = pseud.create_local_registry('r')
      local back = pseud.Server('back')
      pseud.Server('a', { timeout = 1, identity = 'a', registry = reg, proxy_to = back,
        max_message_size = 1024, linger = 0, stop_timeout = 1, max_handler_time = 1,
        max_handler_memory = 1e6, max_hook_time = 1, max_peer_queue = 1e6, max_peers = 10,
        security_plugin = 'noop_auth_backend', heartbeat_plugin = 'heartbeat',
        heartbeat_interval = 1, heartbeat_timeout = 3 })
      pseud.Server('p', { security_plugin = 'plain', credentials = function() return true end,
        password_threads = 1, max_password_checks = 4 })
      pseud.Client('c', { security_plugin = 'plain', user_id = 'u', password = 'p' })
      local pub, sec = pseud.curve_keypair()
      pseud.Server('t', { security_plugin = 'trusted_curve', secret_key = sec,
        allow = function() return 'u' end })
      pseud.Client('u', { security_plugin = 'untrusted_curve', peer_public_key = pub,
        public_key = pub, secret_key = sec, user_id = 'u', password = 'p', max_retries = 2 })
      print('made')]])
    assert.is_true(ok, err)
    assert.equal('made\n', out)
  end)

  it("checks a backend's own option names when it lists them, and nothing when it does not", function()
    local backend = [[
      pseud.register_auth_backend { name = 'listed', option_names = { 'realm' } }
      pseud.register_auth_backend { name = 'unlisted' }
    ]]
    local out, ok, err = run(backend .. [[
      pseud.Server('a', { security_plugin = 'listed', realm = 'r' })
      pseud.Server('b', { security_plugin = 'unlisted', anything = 1, timout = 5 })
      print('made')]])
    assert.is_true(ok, err)
    assert.equal('made\n', out)
    out, ok, err = run(backend .. "pseud.Server('a', { security_plugin = 'listed', relam = 'r' }); print('made')")
    assert.is_false(ok)
    assert.equal('', out)
    assert.matches("unknown option 'relam' (did you mean 'realm'?)", err, 1, true)
  end)
end)

describe('a backend name nothing registered', function()
  it('raises ValueError naming the closest and every known backend', function()
    local out, ok, err = run("pseud.Server('x', { security_plugin = 'plian' }); print('made')")
    assert.is_false(ok)
    assert.equal('', out)
    assert.matches([[ValueError: no auth backend named "plian" (did you mean 'plain'?); known: ]] ..
                   'noop_auth_backend, plain, trusted_curve, untrusted_curve', err, 1, true)
    out, ok, err = run("pseud.Client('x', { heartbeat_plugin = 'nope' }); print('made')")
    assert.is_false(ok)
    assert.equal('', out)
    assert.matches([[ValueError: no heartbeat backend named "nope"; known: heartbeat, ]] ..
                   'noop_heartbeat_backend', err, 1, true)
  end)
end)

describe('start() with nothing bound or connected', function()
  it('raises, saying to bind or connect first', function()
    local out, ok, err = run("pseud.Server('lonely'):start(); print('served')")
    assert.is_false(ok)
    assert.equal('', out)
    assert.matches("RuntimeError: server 'lonely': start() with nothing bound or connected: " ..
                   'call bind() or connect() first', err, 1, true)
  end)

  it('raises with the reason the last bind failed (port in use)', function()
    local out, ok, err = run([[
      local first = pseud.Server('first')
      local endpoint = assert(first:bind('tcp://127.0.0.1:*'))
      local second = pseud.Server('second')
      local bound, why = second:bind(endpoint)
      print(bound, why ~= nil)
      second:start()
      print('served')]])
    assert.is_false(ok)
    assert.equal('nil\ttrue\n', out)
    assert.matches("RuntimeError: server 'second': start%(%) with nothing bound or connected: " ..
                   "the last bind or connect failed: cannot bind 'tcp://127%.0%.0%.1:%d+': " ..
                   'Address already in use', err)
  end)

  it('serves when one bind worked, whatever failed after it', function()
    local out, ok, err = run([[
      local s = pseud.Server('s')
      assert(s:bind('tcp://127.0.0.1:*'))
      assert(not s:bind('tcp://no-such-transport'))
      pseud.spawn(function() s:stop() end)
      s:start()
      print('served')]])
    assert.is_true(ok, err)
    assert.equal('served\n', out)
  end)
end)

describe('a script that never runs the loop', function()
  it('is warned at its end when it registered handlers or made calls', function()
    local out, ok, err = run([[
      local server = pseud.Server('s')
      assert(server:bind('tcp://127.0.0.1:*'))
      server:register_rpc('hello', function() return 'hi' end)
      print('set up')]])
    assert.is_true(ok)
    assert.equal('set up\n', out)
    logfmt.expect(err, { level = 'warn', handlers = 'never served a call', unread_replies = 0,
      msg = 'the script ended without running the loop (call server:start(), or wait for a reply with :get())' })
    out, ok, err = run([[
      local client = pseud.Client('s')
      client:connect('tcp://127.0.0.1:9')
      client.hello()]])
    assert.is_true(ok)
    assert.equal('', out)
    assert.equal('1', logfmt.expect(err, { msg = 'the script ended without running the loop '
      .. '(call server:start(), or wait for a reply with :get())', handlers = 'none' }).unread_replies)
  end)

  it('is not warned when the loop ran, when it set nothing up, or when it failed', function()
    local out, ok, err = run([[
      local server = pseud.Server('s')
      assert(server:bind('tcp://127.0.0.1:*'))
      server:register_rpc('hello', function() return 'hi' end)
      pseud.spawn(function() server:stop() end)
      server:start()
      pseud.Client('c')
      print('ran')]])
    assert.is_true(ok, err)
    assert.equal('ran\n', out)
    assert.is_nil(err:find('without running the loop', 1, true))
    out, ok, err = run([[
      local server = pseud.Server('s')
      server:register_rpc('hello', function() return 'hi' end)
      error('the script failed')]])
    assert.is_false(ok)
    assert.equal('', out)
    assert.matches('the script failed', err, 1, true)
    assert.is_nil(err:find('without running the loop', 1, true))
  end)
end)

describe('a call with a value that cannot travel', function()
  it('raises TypeError naming the call and the argument', function()
    local out, ok, err = run([[
      local client = pseud.Client('s')
      client:connect('tcp://127.0.0.1:9')
      client.hello('Charly', print)
      print('sent')]])
    assert.is_false(ok)
    assert.equal('', out)
    assert.matches("TypeError: call 'hello': argument 2: msgpack: cannot pack a function", err, 1, true)
    out, ok, err = run([[
      local client = pseud.Client('s')
      client:connect('tcp://127.0.0.1:9')
      client.hello(pseud.kwargs { greet = print })
      print('sent')]])
    assert.is_false(ok)
    assert.equal('', out)
    assert.matches("TypeError: call 'hello': its keyword arguments: msgpack: cannot pack a function",
                   err, 1, true)
  end)
end)

describe('a call that ends without a reply', function()
  it('names the call, the service and the endpoint in its error', function()
    local out, ok, err = run([[
      local client = pseud.Client('svc', { timeout = 0.2 })
      assert(client:connect('tcp://127.0.0.1:9'))
      client.hello('Charly'):get()]])
    assert.is_false(ok)
    assert.equal('', out)
    assert.matches("TimeoutError: no reply within 0.2 s (call 'hello' to 'svc' at tcp://127.0.0.1:9)",
                   err, 1, true)
  end)
end)

describe('a refused handshake', function()
  after_each(function() process.stop_all() end)

  -- A server refusing every PLAIN login but alice's, and every CURVE key.
  local SERVER = [[
    local pseud = require 'pseud'
    local kind = arg[1]
    local opts
    if kind == 'plain' then
      opts = { security_plugin = 'plain',
               credentials = function(login, password) return login == 'alice' and password == 'pw' end }
    else
      local public, secret = pseud.curve_keypair()
      opts = { security_plugin = 'trusted_curve', public_key = public, secret_key = secret,
               allow = function() return nil end }
      print('key ' .. public)
    end
    local server = pseud.Server('svc', opts)
    server:register_rpc('hello', function() return 'hi' end)
    print('ready ' .. assert(server:bind('tcp://127.0.0.1:*')))
    io.stdout:flush()
    server:start()]]

  local function start(kind)
    local server = process.start({ process.host(), '-e', SERVER, '-', kind }, { name = 'refusing-' .. kind })
    local key = kind == 'curve' and server:wait_for('^key (%S+)', 1, 10) or nil
    return server:wait_for('^ready (%S+)', 2, 10), key
  end

  it('is UnauthorizedError "handshake refused by server", long before the timeout (PLAIN)', function()
    local endpoint = start('plain')
    local out, ok, err = run(([[
      local client = pseud.Client('svc', { security_plugin = 'plain', user_id = 'alice',
                                           password = 'wrong', timeout = 30 })
      assert(client:connect(%q))
      local t0 = pseud.now()
      local ok, e = pcall(function() return client.hello():get() end)
      print(ok, e.name, pseud.now() - t0 < 10)
      -- a call made after the refusal ends the same way
      ok, e = pcall(function() return client.hello():get() end)
      print(ok, e.name)
      client.hello():get()]]):format(endpoint))
    assert.is_false(ok)
    assert.equal('false\tUnauthorizedError\ttrue\nfalse\tUnauthorizedError\n', out)
    assert.matches("UnauthorizedError: handshake refused by server (ZAP status 400) (call 'hello' to 'svc' at "
                   .. endpoint .. ')', err, 1, true)
  end)

  it('is UnauthorizedError for a CURVE key the server does not allow', function()
    local endpoint, key = start('curve')
    local out, ok = run(([[
      local public, secret = pseud.curve_keypair()
      local client = pseud.Client('svc', { security_plugin = 'trusted_curve', public_key = public,
                                           secret_key = secret, peer_public_key = %q, timeout = 30 })
      assert(client:connect(%q))
      local ok, e = pcall(function() return client.hello():get() end)
      print(ok, e.name, e.message)]]):format(key, endpoint))
    assert.is_true(ok)
    assert.matches('^false\tUnauthorizedError\thandshake refused by server', out)
  end)

  it('leaves a client that logs in right alone', function()
    local endpoint = start('plain')
    local out, ok = run(([[
      local client = pseud.Client('svc', { security_plugin = 'plain', user_id = 'alice', password = 'pw' })
      assert(client:connect(%q))
      print(client.hello():get())]]):format(endpoint))
    assert.is_true(ok)
    assert.equal('hi\n', out)
  end)
end)

describe("an error the library raises", function()
  it("points at the user's line, and pseud-lua prints a traceback for an uncaught one", function()
    -- in a folder named pseud, as a user's own project may be: still the user's line
    local dir = process.tmpdir() .. '/pseud'
    assert(os.execute('mkdir -p ' .. dir))
    local path = dir .. '/where.lua'
    local f = assert(io.open(path, 'w'))
    f:write([[
local pseud = require 'pseud'
local client = pseud.Client('svc', { timeout = 0.2 })
assert(client:connect('tcp://127.0.0.1:9'))
local ok, e = pcall(function() return client.hello():get() end)
print(ok, e.where, e.name)
local ok2, e2 = pcall(pseud.Server, 'x', { timout = 1 })
print(ok2, e2.where, e2.name)
pseud.Client('x', { identiy = 'me' })
]])
    f:close()
    local out, ok, _, log = process.run({ process.host(), path })
    assert.is_false(ok)
    assert.equal(('false\t%s:4\tTimeoutError\nfalse\t%s:6\tValueError\n'):format(path, path), out)
    local err = io.open(log):read('a')
    assert.matches(path .. ":8: ValueError: unknown option 'identiy'", err, 1, true)
    assert.matches('stack traceback:', err, 1, true)
    assert.matches(path .. ':8: in main chunk', err, 1, true)
  end)
end)
