-- Authentication over ZAP (DESIGN.md sections 1 and 3): PLAIN and trusted
-- CURVE with real processes; the user id ZAP accepts is the peer's identity.
local process = require 'spec.support.process'
local logfmt = require 'spec.support.logfmt'

local host = process.host()
local dir

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

local function client(endpoint, backend, creds, case, carg)
  local argv = { host, 'spec/clients/auth.lua', endpoint, backend }
  for _, c in ipairs(creds) do argv[#argv + 1] = c end
  argv[#argv + 1] = '--'
  argv[#argv + 1] = case
  argv[#argv + 1] = carg
  return argv
end

local function run(argv)
  local out, ok, code, log = process.run(argv, { name = 'auth-client', timeout = 20 })
  assert(ok, ('exit %s\n%s\n%s'):format(tostring(code), out, io.open(log):read('a')))
  return (out:gsub('\n$', ''))
end

local function handled(server)
  local users = {}
  for _, line in ipairs(server.lines) do
    local u = line:match('^handled (.*)$')
    if u then users[#users + 1] = u end
  end
  return users
end

describe('authentication', function()
  lazy_setup(function()
    dir = process.tmpdir() .. '/auth'
    sh('mkdir -p ' .. dir)
    for _, name in ipairs { 'server', 'alice', 'mallory', 'other-server' } do
      sh(('cd %s && %s keygen %s >/dev/null'):format(dir, process.quote(host), name))
    end
    local f = assert(io.open(dir .. '/allow', 'w'))
    f:write('# user_id  public key\n', 'alice ', io.open(dir .. '/alice.key'):read('l'), '\n')
    f:close()
    sh(("printf 'wonderland\\n' | %s passwd %s/creds alice >/dev/null"):format(process.quote(host), dir))
    sh(("printf 'builder\\n' | %s passwd %s/creds bob >/dev/null"):format(process.quote(host), dir))
    sh(("printf 'sea\\n' | %s passwd %s/creds carol >/dev/null"):format(process.quote(host), dir))
    sh(("printf 'asks\\n' | %s passwd %s/creds dave >/dev/null"):format(process.quote(host), dir))
  end)
  after_each(function() process.stop_all() end)

  describe('PLAIN', function()
    local server, endpoint
    before_each(function()
      server, endpoint = process.server('spec/servers/auth.lua', 'plain', dir .. '/creds')
    end)

    it('lets the right password in, as that login', function()
      assert.equal('alice', run(client(endpoint, 'plain', { 'alice', 'wonderland' }, 'whoami')))
    end)

    it('keeps the wrong password out: no handler runs', function()
      -- refused by ZAP: the client is told at once (handshake refused by server)
      assert.equal('UnauthorizedError', run(client(endpoint, 'plain', { 'alice', 'guess' }, 'whoami')))
      assert.equal('UnauthorizedError', run(client(endpoint, 'plain', { 'nobody', 'x' }, 'whoami')))
      server:stop()
      assert.same({}, handled(server))
      local refused = false
      for _, rec in ipairs(logfmt.find_all(server:log_text(), { mechanism = 'PLAIN' })) do
        refused = refused or rec.msg:find('^handshake refused') ~= nil
      end
      assert.is_true(refused, server:log_text())
      assert.is_nil(server:log_text():find('guess', 1, true), 'a password reached the log')
    end)

    it('reaches the right client among three with send_to(user_id)', function()
      for _, c in ipairs { { 'alice', 'wonderland' }, { 'bob', 'builder' }, { 'carol', 'sea' } } do
        local p = process.start(client(endpoint, 'plain', c, 'serve', 'I am ' .. c[1]), { name = c[1] })
        assert.equal('ready', p:read_line(), p:report())
      end
      for _, user in ipairs { 'bob', 'carol', 'alice' } do
        assert.equal('I am ' .. user, run(client(endpoint, 'plain', { 'dave', 'asks' }, 'ask', user)))
      end
    end)

    it("does not give a user's work to another connection that takes its routing id", function()
      local alice = process.start(client(endpoint, 'plain', { 'alice', 'wonderland', 'shared-id' }, 'serve',
        'the real alice'), { name = 'alice' })
      assert.equal('ready', alice:read_line(), alice:report())
      local mallory = process.start(client(endpoint, 'plain', { 'bob', 'builder', 'shared-id' }, 'serve',
        'mallory'), { name = 'mallory' })
      mallory:read_line()
      assert.equal('the real alice', run(client(endpoint, 'plain', { 'carol', 'sea' }, 'ask', 'alice')))
    end)

    it('keeps a reconnecting client its identity', function()
      local first = process.start(client(endpoint, 'plain', { 'alice', 'wonderland' }, 'serve', 'first'),
        { name = 'first' })
      assert.equal('ready', first:read_line(), first:report())
      first:stop()
      local second = process.start(client(endpoint, 'plain', { 'alice', 'wonderland' }, 'serve', 'second'),
        { name = 'second' })
      assert.equal('ready', second:read_line(), second:report())
      assert.equal('second', run(client(endpoint, 'plain', { 'bob', 'builder' }, 'ask', 'alice')))
    end)
  end)

  describe('untrusted CURVE and the HELLO handshake', function()
    local server, endpoint
    local function key(name) return io.open(dir .. '/' .. name):read('l') end
    local function curve_args(extra)
      -- --opt=value: a Z85 key may start with '-', which argparse takes for an option
      local t = { '--curve-server-key=' .. key('server.key'), '--curve-public-key=' .. key('mallory.key'),
        '--curve-secret-key=' .. key('mallory.key_secret') }
      for _, a in ipairs(extra) do t[#t + 1] = a end
      return t
    end
    local function flow(extra)
      local argv = { 'hello-flow', endpoint, 'service', 'whoami', '[]' }
      for _, a in ipairs(curve_args(extra)) do argv[#argv + 1] = a end
      return process.pypeer(argv)
    end
    before_each(function()
      server, endpoint = process.server('spec/servers/auth.lua', 'untrusted_curve', dir .. '/server.key',
        dir .. '/creds')
    end)

    it('replays the call after a HELLO with the right password', function()
      local out = run(client(endpoint, 'untrusted_curve',
        { dir .. '/alice.key', dir .. '/server.key', 'alice', 'wonderland' }, 'whoami'))
      assert.equal('alice', out)                    -- the user id is the login (DESIGN 4.1)
      server:stop()
      assert.equal(1, #handled(server))
    end)

    it('fails with UnauthorizedError after the retries with a wrong password; no handler runs', function()
      assert.equal('UnauthorizedError', run(client(endpoint, 'untrusted_curve',
        { dir .. '/alice.key', dir .. '/server.key', 'alice', 'guess' }, 'whoami')))
      server:stop()
      assert.same({}, handled(server))
      assert.is_nil(server:log_text():find('guess', 1, true), 'a password reached the log')
    end)

    it('speaks the handshake byte for byte with an independent Python CURVE peer', function()
      local r = flow { '--login', 'alice', '--password', 'wonderland' }
      assert.equal(17, r.work.type)                 -- UNAUTHORIZED, same uuid
      assert.is_true(r.work.uuid_matches)
      assert.equal('Authentication Required', r.work.body_text)
      assert.same({}, r.work.problems)
      assert.equal(4, r.hello.type)                 -- AUTHENTICATED, the HELLO's uuid
      assert.is_true(r.hello.uuid_matches)
      assert.equal("Welcome 'alice'", r.hello_text)
      assert.equal(1, r.replay.type)                -- the WORK again: OK
      assert.is_true(r.replay.uuid_matches)
      assert.equal('alice', r.replay.body)          -- the login, not the key
    end)

    it('refuses hostile HELLOs and keeps serving others', function()
      local bodies = {
        '2a',                                       -- 42, not an array
        '93a161a162a163',                           -- three items
        '92a56c6f67696e2a',                         -- password not a string
        '92da0800' .. string.rep('61', 2048) .. 'a0', -- a 2 KiB login
        'c1',                                       -- not msgpack
      }
      for _, hex in ipairs(bodies) do
        local r = flow { '--hello-body', hex }
        assert.equal(17, r.hello.type, hex)
        assert.equal('Malformed HELLO', r.hello_text, hex)
      end
      for _ = 1, 5 do                               -- wrong passwords, many tries
        local r = flow { '--login', 'alice', '--password', 'guess' }
        assert.equal(17, r.hello.type)
        assert.equal('Invalid credentials', r.hello_text)
      end
      -- HELLO before any WORK works too, and others are still served
      local r = flow { '--login', 'bob', '--password', 'builder', '--hello-first' }
      assert.equal(4, r.hello.type)
      assert.equal(1, r.replay.type)
      assert.equal('alice', run(client(endpoint, 'untrusted_curve',
        { dir .. '/alice.key', dir .. '/server.key', 'alice', 'wonderland' }, 'whoami')))
    end)
  end)

  describe('trusted CURVE', function()
    local server, endpoint
    before_each(function()
      server, endpoint = process.server('spec/servers/auth.lua', 'trusted_curve', dir .. '/server.key',
        dir .. '/allow')
    end)

    it('lets a listed key in, as its user id', function()
      assert.equal('alice', run(client(endpoint, 'trusted_curve', { dir .. '/alice.key', dir .. '/server.key' },
        'whoami')))
    end)

    it('keeps an unlisted key and a wrong server key out: no handler runs', function()
      assert.equal('UnauthorizedError', run(client(endpoint, 'trusted_curve',
        { dir .. '/mallory.key', dir .. '/server.key' }, 'whoami')))
      -- a wrong server key: the handshake cannot even be read, no ZAP status comes back
      assert.equal('TimeoutError', run(client(endpoint, 'trusted_curve',
        { dir .. '/alice.key', dir .. '/other-server.key' }, 'whoami')))
      server:stop()
      assert.same({}, handled(server))
    end)

    it('authenticates an independent Python CURVE peer', function()
      local function key(name) return io.open(dir .. '/' .. name):read('l') end
      local r = process.pypeer { 'call', endpoint, 'service', 'whoami', '[]',
        '--curve-server-key=' .. key('server.key'), '--curve-public-key=' .. key('alice.key'),
        '--curve-secret-key=' .. key('alice.key_secret') }
      assert.equal(1, r.type)
      assert.equal('alice', r.body)
    end)
  end)
end)
