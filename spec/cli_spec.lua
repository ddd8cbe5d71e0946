-- The pseud-lua command line: arg as in lua, -e, --version, --help, exit
-- status, and finding the Lua modules from a build tree and after install;
-- the key-file tools (keygen, passwd) against existing files, planted
-- symlinks, refused passwords and a terminal that must not echo.
local process = require 'spec.support.process'

local function run(argv, opts)
  local out, ok, code, log = process.run(argv, opts)
  return out, ok, code, io.open(log):read('a')
end

describe('pseud-lua command line', function()
  local host = process.host()

  it('prints its version', function()
    local out, ok = run { host, '--version' }
    assert.is_true(ok)
    assert.matches('^pseud%-lua %d+%.%d+%.%d+ %(Lua 5%.4', out)
  end)

  it('prints help', function()
    local out, ok = run { host, '--help' }
    assert.is_true(ok)
    assert.matches('usage: .*%-e CODE', out)
  end)

  it('runs -e code with pseud available', function()
    local out, ok = run { host, '-e', "print(require('pseud')._VERSION)" }
    assert.is_true(ok)
    assert.equal('pseud-lua 0.1.0\n', out)
  end)

  it('passes script arguments in arg as lua does', function()
    local dir = process.tmpdir()
    local f = assert(io.open(dir .. '/args.lua', 'w'))
    f:write("print(#arg, arg[0]:match('args.lua$'), arg[1], arg[2], ...)\n")
    f:close()
    local out, ok = run { host, dir .. '/args.lua', 'one', 'two' }
    assert.is_true(ok)
    assert.equal('2\targs.lua\tone\ttwo\tone\ttwo\n', out)
  end)

  it('exits 1 with the message and a traceback when the script fails', function()
    local _, ok, code, err = run { host, '-e', "error('nope')" }
    assert.is_false(ok)
    assert.equal(1, code)
    assert.matches('nope', err)
    assert.matches('stack traceback', err)
  end)

  it('shows a pseud error value readably when it is not caught', function()
    local _, ok, _, err = run { host, '-e', "error(require('pseud').error('ValueError', 'bad'))" }
    assert.is_false(ok)
    assert.matches('ValueError: bad', err)
  end)

  -- an attack round: a __tostring that never returns hung the exit for good
  it("exits 1 when an uncaught error value's __tostring never returns, within max_hook_time", function()
    local t0 = os.time()
    local _, ok, code, err = run { host, '-e',
      "error(setmetatable({}, { __tostring = function() while true do end end }))" }
    assert.is_false(ok)
    assert.equal(1, code)
    assert.matches('error object is a table value', err)
    assert.is_true(os.time() - t0 < 5)
  end)

  it('refuses an unknown option', function()
    local _, ok, code, err = run { host, '--frobnicate' }
    assert.is_false(ok)
    assert.equal(1, code)
    assert.matches("unknown option '%-%-frobnicate'", err)
  end)

  it('finds the Lua modules from the install prefix after cmake --install', function()
    local prefix = process.tmpdir() .. '/prefix'
    local build = host:match('^(.*)/[^/]+$')
    local out, ok = run({ 'cmake', '--install', build, '--prefix', prefix }, { timeout = 60 })
    assert.is_true(ok, out)
    out, ok = run { prefix .. '/bin/pseud-lua', '-e',
      "print(package.searchpath('pseud', package.path)); print(require('pseud')._VERSION)" }
    assert.is_true(ok, out)
    local path = out:match('^([^\n]+)')
    assert.matches('^' .. prefix:gsub('%p', '%%%0') .. '/bin/%.%./share/lua/5%.4/pseud/init%.lua$', path)
  end)
end)

describe('pseud-lua keygen and passwd (hostile file systems)', function()
  local host = process.host()
  local KEY = '^[%w%.%-:+=^!/*?&<>()%[%]{}@%%$#]+\n$'   -- one Z85 line
  local count = 0

  --- A new empty directory for one spec.
  local function fresh_dir()
    count = count + 1
    local dir = ('%s/keys-%d'):format(process.tmpdir(), count)
    assert(os.execute('mkdir -p ' .. process.quote(dir)))
    return dir
  end

  local function read(path)
    local f = io.open(path, 'rb')
    if not f then return nil end
    local text = f:read('a')
    f:close()
    return text
  end

  local function write(path, text)
    local f = assert(io.open(path, 'wb'))
    f:write(text)
    f:close()
  end

  --- Output of a shell command, without its last newline.
  local function shell(cmd)
    local h = assert(io.popen(cmd .. ' 2>&1', 'r'))
    local out = h:read('a')
    h:close()
    return (out:gsub('\n$', ''))
  end

  local function mode(path) return shell('stat -c %a ' .. process.quote(path)) end
  local function inode(path) return shell('stat -c %i ' .. process.quote(path)) end
  local function is_link(path) return os.execute('test -L ' .. process.quote(path)) == true end

  --- pseud-lua keygen ARGS... run in `dir`.
  local function keygen(dir, ...)
    return run { 'sh', '-c', 'cd "$1" && shift && exec "$@"', 'sh', dir, host, 'keygen', ... }
  end

  --- pseud-lua passwd FILE LOGIN with `password` and a newline piped in.
  local function passwd(file, login, password)
    return run { 'sh', '-c', 'printf "%s\\n" "$1" | "$2" passwd "$3" "$4"', 'sh', password, host, file, login }
  end

  --- Does FILE hold an argon2 hash of `password` for `login`?
  local function verifies(file, login, password)
    local code = ([[
      local core = require('pseud.core')
      for line in io.lines(%q) do
        local l, h = line:match('^(%%S+) (%%S+)$')
        if l == %q then print(core.pwhash_verify(h, %q)) end
      end]]):format(file, login, password)
    local out = run { host, '-e', code }
    return out == 'true\n'
  end

  --- pseud-lua passwd FILE LOGIN on a pseudo-terminal, `answer` typed at the
  -- prompt: what the terminal showed.
  local function passwd_on_tty(file, login, answer)
    local out = process.python('spec/support/ptyrun.py',
      { 'Password for ' .. login .. ': ', answer, '5', host, 'passwd', file, login })
    return out
  end

  it('keygen refuses to overwrite an existing key pair without --force', function()
    local dir = fresh_dir()
    local out, ok = keygen(dir, 'server')
    assert.is_true(ok, out)
    local secret, public = read(dir .. '/server.key_secret'), read(dir .. '/server.key')
    assert.matches(KEY, secret)
    assert.equal('600', mode(dir .. '/server.key_secret'))
    local _, again, code, err = keygen(dir, 'server')
    assert.is_false(again)
    assert.equal(1, code)
    assert.matches('server%.key_secret exists.*%-%-force', err)
    assert.equal(secret, read(dir .. '/server.key_secret'))
    assert.equal(public, read(dir .. '/server.key'))
    -- the public key alone is enough to refuse, and nothing is written
    assert(os.remove(dir .. '/server.key_secret'))
    _, again, code, err = keygen(dir, 'server')
    assert.is_false(again)
    assert.equal(1, code)
    assert.matches('server%.key exists.*%-%-force', err)
    assert.equal(public, read(dir .. '/server.key'))
    assert.is_nil(read(dir .. '/server.key_secret'))
  end)

  it('keygen --force replaces an existing key pair', function()
    local dir = fresh_dir()
    assert.is_true(select(2, keygen(dir, 'server')))
    local secret, public = read(dir .. '/server.key_secret'), read(dir .. '/server.key')
    local out, ok, _, err = keygen(dir, '--force', 'server')
    assert.is_true(ok, err)
    assert.matches('wrote server%.key', out)
    local secret2, public2 = read(dir .. '/server.key_secret'), read(dir .. '/server.key')
    assert.matches(KEY, secret2)
    assert.matches(KEY, public2)
    assert.not_equal(secret, secret2)
    assert.not_equal(public, public2)
    assert.equal('600', mode(dir .. '/server.key_secret'))
    assert.equal('644', mode(dir .. '/server.key'))
    assert.equal('server.key\nserver.key_secret', shell('ls -A ' .. process.quote(dir)))   -- no temp left
  end)

  it('keygen does not write through a symlink planted at NAME.key_secret', function()
    local dir = fresh_dir()
    write(dir .. '/victim', 'precious\n')
    assert(os.execute(('cd %s && ln -s victim server.key_secret && ln -s missing other.key_secret')
      :format(process.quote(dir))))
    local _, ok, code, err = keygen(dir, 'server')
    assert.is_false(ok)
    assert.equal(1, code)
    assert.matches('server%.key_secret exists.*%-%-force', err)
    _, ok, code, err = keygen(dir, 'other')                   -- a dangling link counts
    assert.is_false(ok)
    assert.equal(1, code)
    assert.matches('other%.key_secret exists.*%-%-force', err)
    assert.equal('precious\n', read(dir .. '/victim'))
    assert.is_nil(read(dir .. '/missing'))
    assert.is_true(is_link(dir .. '/server.key_secret'))
    -- --force replaces the links themselves with regular 0600 files
    for _, name in ipairs { 'server', 'other' } do
      local out
      out, ok, _, err = keygen(dir, '--force', name)
      assert.is_true(ok, out .. err)
      local path = dir .. '/' .. name .. '.key_secret'
      assert.is_false(is_link(path))
      assert.equal('600', mode(path))
      assert.matches(KEY, read(path))
    end
    assert.equal('precious\n', read(dir .. '/victim'))
    assert.is_nil(read(dir .. '/missing'))
  end)

  it('passwd adds and replaces logins by renaming a new 0600 file over FILE, never rewriting it in place', function()
    local dir = fresh_dir()
    local file = dir .. '/creds'
    write(file, '# logins\n')
    assert(os.execute('chmod 644 ' .. process.quote(file)))
    local before = inode(file)
    -- held open, the old file keeps its inode number: a temp file made after
    -- the first rename cannot reuse it and look like the file rewritten in place
    local held = assert(io.open(file))
    local out, ok, _, err = passwd(file, 'alice', 'wonderland')
    assert.is_true(ok, err)
    assert.equal('added alice in ' .. file .. '\n', out)
    _, ok, _, err = passwd(file, 'bob', 'builder')
    assert.is_true(ok, err)
    out, ok, _, err = passwd(file, 'alice', 'looking-glass')
    assert.is_true(ok, err)
    assert.equal('updated alice in ' .. file .. '\n', out)
    local lines = {}
    for line in read(file):gmatch('[^\n]+') do lines[#lines + 1] = line end
    assert.equal(3, #lines)
    assert.equal('# logins', lines[1])
    assert.matches('^alice %$argon2id%$', lines[2])
    assert.matches('^bob %$argon2id%$', lines[3])
    assert.is_true(verifies(file, 'alice', 'looking-glass'))
    assert.is_false(verifies(file, 'alice', 'wonderland'))
    assert.is_true(verifies(file, 'bob', 'builder'))
    assert.equal('600', mode(file))
    assert.not_equal(before, inode(file))                     -- a new file, renamed over the old one
    held:close()
    assert.equal('creds', shell('ls -A ' .. process.quote(dir)))   -- no temp left
  end)

  it('passwd refuses an empty or over-long password and leaves FILE byte-for-byte unchanged', function()
    local dir = fresh_dir()
    local file = dir .. '/creds'
    assert.is_true(select(2, passwd(file, 'alice', 'wonderland')))
    local text, ino = read(file), inode(file)
    local _, ok, code, err = passwd(file, 'alice', '')
    assert.is_false(ok)
    assert.equal(1, code)
    assert.matches('empty password', err)
    _, ok, code, err = passwd(file, 'bob', ('x'):rep(4097))  -- one past the limit: refused, not cut
    assert.is_false(ok)
    assert.equal(1, code)
    assert.matches('longer than 4096 bytes', err)
    assert.equal(text, read(file))
    assert.equal(ino, inode(file))
    assert.equal('creds', shell('ls -A ' .. process.quote(dir)))
    -- at the limit: accepted
    _, ok, _, err = passwd(file, 'carol', ('y'):rep(4096))
    assert.is_true(ok, err)
    assert.is_true(verifies(file, 'carol', ('y'):rep(4096)))
  end)

  it('passwd on a terminal prompts on stderr and does not echo the password', function()
    local file = fresh_dir() .. '/creds'
    local out = passwd_on_tty(file, 'alice', 'tty-secret-Q7x\n')
    assert.matches('Password for alice: ', out, 1, true)
    assert.is_nil(out:find('tty-secret-Q7x', 1, true), out)
    assert.matches('added alice', out)
    assert.matches('\necho on\nexit 0\n$', out)
    assert.is_true(verifies(file, 'alice', 'tty-secret-Q7x'))
  end)

  it('passwd interrupted by Ctrl-C at the prompt restores echo and leaves FILE unchanged', function()
    local file = fresh_dir() .. '/creds'
    assert.is_true(select(2, passwd(file, 'alice', 'wonderland')))
    local text = read(file)
    local out = passwd_on_tty(file, 'bob', '\3')
    assert.matches('Password for bob: ', out, 1, true)
    assert.matches('\necho on\nexit 130\n$', out)
    assert.equal(text, read(file))
  end)
end)
