-- Packaging: what `cmake --install` puts where (the host, the Lua and C
-- modules, the man page, pseud-lua.pc) and that it runs from there; one
-- version everywhere (CMakeLists.txt, the rockspec, the man page, the
-- host, pseud._VERSION, pkg-config); the man page renders without a
-- warning and documents every option of --help; the systemd unit's
-- essentials; and a luarocks tree made from the rockspec (offline: the
-- rock's only dependency is lua itself) that stock lua5.4 serves from.
local process = require 'spec.support.process'

local quote = process.quote

local read = process.read

local function exists(path)
  local f = io.open(path, 'rb')
  if f then f:close() end
  return f ~= nil
end

--- Run argv, or a shell command line (a string), to completion: stdout, ok, stderr.
local function sh(command, timeout)
  if type(command) == 'string' then command = { 'sh', '-c', command } end
  local out, ok, _, log = process.run(command, { timeout = timeout or 60 })
  return out, ok, read(log)
end

local function literal(s) return (s:gsub('%p', '%%%0')) end

local function project_version()
  return assert(read('CMakeLists.txt'):match('project%(pseud%-lua VERSION (%d+%.%d+%.%d+)'),
    'no project(pseud-lua VERSION x.y.z) in CMakeLists.txt')
end

--- The rockspec in the repository root (there must be exactly one): its
--- file name and its fields, read as Lua in an empty environment.
local function rockspec()
  local names = {}
  local h = assert(io.popen('ls pseud-lua-*.rockspec 2>/dev/null', 'r'))
  for name in h:lines() do names[#names + 1] = name end
  h:close()
  assert.equal(1, #names, 'one pseud-lua-*.rockspec in the root')
  local fields = {}
  assert(load(read(names[1]), '@' .. names[1], 't', fields))()
  return names[1], fields
end

local host = process.host()
local build = host:match('^(.*)/[^/]+$')
-- A sanitizer build's core.so cannot be loaded by a stock lua5.4 (the ASan
-- runtime must come first), and the rock builds the same sources again.
local sanitized = exists(build .. '/CMakeCache.txt')
  and read(build .. '/CMakeCache.txt'):find('\nPSEUD_SANITIZE:BOOL=ON') ~= nil

describe('cmake --install', function()
  local prefix, pcdir
  local version = project_version()

  lazy_setup(function()
    prefix = process.tmpdir() .. '/pkg-prefix'
    local out, ok, err = sh({ 'cmake', '--install', build, '--prefix', prefix })
    assert(ok, out .. err)
    out = sh('find ' .. quote(prefix) .. ' -name pseud-lua.pc')
    pcdir = assert(out:match('^(.*)/pseud%-lua%.pc\n$'), 'one pseud-lua.pc installed: ' .. out)
  end)

  local function pkg_config(...)
    local out, ok, err = sh(('PKG_CONFIG_PATH=%s pkg-config %s'):format(quote(pcdir),
      process.command_line { ... }))
    assert(ok, err)
    return (out:gsub('\n$', ''))
  end

  it('installs the host, every Lua module, pseud.core, the man page and pseud-lua.pc', function()
    assert.is_true(os.execute('test -x ' .. quote(prefix .. '/bin/pseud-lua')))
    local h = assert(io.popen('ls lua/pseud', 'r'))
    for name in h:lines() do
      assert.is_true(exists(prefix .. '/share/lua/5.4/pseud/' .. name), name)
    end
    h:close()
    assert.is_true(exists(prefix .. '/share/man/man1/pseud-lua.1'))
    assert.equal(prefix .. '/share/lua/5.4', pkg_config('--variable=lmod', 'pseud-lua'))
    assert.is_true(exists(pkg_config('--variable=cmod', 'pseud-lua') .. '/pseud/core.so'))
    assert.equal(prefix .. '/bin/pseud-lua', pkg_config('--variable=pseud_lua', 'pseud-lua'))
  end)

  it('writes a pseud-lua.pc that gives the project version and nothing to link', function()
    assert.equal(version, pkg_config('--modversion', 'pseud-lua'))
    assert.equal('', pkg_config('--cflags', '--libs', 'pseud-lua'))
  end)

  it('runs the installed host with the installed modules, from anywhere', function()
    local out, ok, err = sh(('cd / && %s -e %s'):format(quote(prefix .. '/bin/pseud-lua'),
      quote("print(package.searchpath('pseud', package.path)); print(require('pseud')._VERSION)")))
    assert(ok, err)
    assert.matches('^' .. literal(prefix) .. '/bin/%.%./share/lua/5%.4/pseud/init%.lua\npseud%-lua '
      .. literal(version) .. '\n$', out)
  end)

  it('serves stock lua5.4 from the directories pseud-lua.pc names', function()
    if sanitized then pending('sanitizer build: stock lua5.4 cannot load its core.so') return end
    local lmod, cmod = pkg_config('--variable=lmod', 'pseud-lua'), pkg_config('--variable=cmod', 'pseud-lua')
    local out, ok, err = sh(('cd / && LUA_PATH=%s LUA_CPATH=%s lua5.4 -e %s'):format(
      quote(lmod .. '/?.lua;' .. lmod .. '/?/init.lua'), quote(cmod .. '/?.so'),
      quote("require 'pseud'; print(package.searchpath('pseud.core', package.cpath))")))
    assert(ok, err)
    assert.equal(cmod .. '/pseud/core.so\n', out)
  end)
end)

describe('one version', function()
  local version = project_version()

  it('in the rockspec, its file name, the man page, the host and pseud._VERSION', function()
    local name, rock = rockspec()
    assert.equal('pseud-lua', rock.package)
    assert.equal(version .. '-1', rock.version)
    assert.equal('pseud-lua-' .. rock.version .. '.rockspec', name)
    assert.equal('cmake', rock.build.type)
    assert.matches('^%.TH PSEUD%-LUA 1 "[^"]*" "pseud%-lua ' .. literal(version) .. '"',
      read('man/pseud-lua.1'):match('\n(%.TH[^\n]*)'))
    local out, ok = sh({ host, '-e', "print(require('pseud')._VERSION)", '--version' })
    assert.is_true(ok)
    assert.equal(('pseud-lua %s\npseud-lua %s (Lua 5.4'):format(version, version),
      out:sub(1, #('pseud-lua %s\npseud-lua %s (Lua 5.4'):format(version, version)))
  end)
end)

describe('the man page', function()
  it('renders without a warning', function()
    local out, ok, err = sh('groff -man -Tutf8 -ww -z man/pseud-lua.1')
    assert.is_true(ok)
    assert.equal('', out .. err)
  end)

  it('documents every option --help shows, the commands, the environment and the exit status', function()
    local text = sh('groff -man -Tascii -P-cbou man/pseud-lua.1 2>/dev/null')
    local help, ok = sh({ host, '--help' })
    assert.is_true(ok)
    for option in help:gmatch('%f[%w-]%-%-?%a[%w-]*') do
      assert.truthy(text:find(option, 1, true), option .. ' (from --help) is not in the man page')
    end
    for _, word in ipairs { 'keygen', 'passwd', 'call', 'ls', '--metrics', '--log-level', 'SIGHUP',
                            'SIGTERM', 'PSEUD_LOG', 'PSEUD_PASSWORD', 'PSEUD_IO_NICE', 'PSEUD_IO_BATCH',
                            'EXIT STATUS', 'FILES', 'SEE ALSO' } do
      assert.truthy(text:find(word, 1, true), word)
    end
  end)
end)

describe('examples/pseud-lua.service', function()
  local unit = read('examples/pseud-lua.service')

  local function values(key)
    local found = {}
    for value in unit:gmatch('\n' .. key .. '=([^\n]*)') do found[#found + 1] = value end
    return table.concat(found, ' ')
  end

  it('stops with SIGTERM, reloads with SIGHUP, restarts on failure, and is hardened', function()
    assert.equal('exec', values('Type'))
    assert.equal('/usr/local/bin/pseud-lua /etc/pseud-lua/server.lua', values('ExecStart'))
    assert.equal('/bin/kill -HUP $MAINPID', values('ExecReload'))
    assert.equal('SIGTERM', values('KillSignal'))
    assert.equal('on-failure', values('Restart'))
    for _, key in ipairs { 'DynamicUser', 'ProtectHome', 'PrivateTmp', 'NoNewPrivileges' } do
      assert.equal('yes', values(key), key)
    end
    assert.equal('strict', values('ProtectSystem'))
    assert.equal('AF_INET AF_INET6 AF_UNIX', values('RestrictAddressFamilies'))
  end)

  it('passes systemd-analyze verify with an installed host', function()
    if not os.execute('command -v systemd-analyze >/dev/null') then
      pending('systemd-analyze is not installed (Debian package systemd)')
      return
    end
    local prefix = process.tmpdir() .. '/unit-prefix'
    local out, ok, err = sh({ 'cmake', '--install', build, '--prefix', prefix })
    assert(ok, out .. err)
    local dir = process.tmpdir() .. '/unit'
    assert(os.execute('mkdir -p ' .. quote(dir)))
    local f = assert(io.open(dir .. '/pseud-lua.service', 'w'))
    f:write((unit:gsub('/usr/local/bin/pseud%-lua', prefix .. '/bin/pseud-lua')))
    f:close()
    out, ok, err = sh(('MANPATH=%s systemd-analyze verify %s'):format(quote(prefix .. '/share/man'),
      quote(dir .. '/pseud-lua.service')))
    assert(ok, out .. err)
    assert.equal('', out .. err)
  end)
end)

describe('luarocks make', function()
  it('builds a tree offline from which stock lua5.4 and the rock\'s pseud-lua serve a call', function()
    if sanitized then pending('sanitizer run: the rock is a separate Release build') return end
    local name = rockspec()
    local src, tree = process.tmpdir() .. '/rock-src', process.tmpdir() .. '/rock-tree'
    -- A copy, so that build.luarocks/ lands there and not in the checkout.
    assert(os.execute(('mkdir -p %s && cp -r CMakeLists.txt pseud-lua.pc.in README.md src lua man %s %s')
      :format(quote(src), quote(name), quote(src))))
    local out, ok, err = sh(('cd %s && CMAKE_BUILD_PARALLEL_LEVEL=2 luarocks --lua-version=5.4 make --tree %s %s')
      :format(quote(src), quote(tree), quote(name)), 300)
    assert(ok, out .. err)
    local call = [[
      local pseud = require 'pseud'
      local server = pseud.Server('svc')
      local endpoint = assert(server:bind('tcp://127.0.0.1:*'))
      server:register_rpc('hello', function(name) return 'Hello ' .. name end)
      local client = pseud.Client('svc', { timeout = 10 })
      client:connect(endpoint)
      print(package.searchpath('pseud', package.path), client.hello('rock'):get())
    ]]
    local paths = ('eval "$(luarocks --lua-version=5.4 --tree %s path)"'):format(quote(tree))
    out, ok, err = sh(('cd / && %s && lua5.4 -e %s'):format(paths, quote(call)))
    assert(ok, out .. err)
    assert.equal(tree .. '/share/lua/5.4/pseud/init.lua\tHello rock\n', out)
    out, ok, err = sh(('cd / && %s && %s -e %s'):format(paths, quote(tree .. '/bin/pseud-lua'), quote(call)))
    assert(ok, out .. err)
    assert.equal(tree .. '/bin/../share/lua/5.4/pseud/init.lua\tHello rock\n', out)
  end)
end)
