-- The pseud-lua command line: arg as in lua, -e, --version, --help, exit
-- status, and finding the Lua modules from a build tree and after install.
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
