--[[
spec/clients/cases.lua: pseud-lua client scenarios for e2e_spec.lua.

  pseud-lua spec/clients/cases.lua ENDPOINT CASE

Each case prints result lines on stdout that the spec compares; the last
line is `done`. Errors are printed as `error <name>|<message>`.
]]
local pseud = require 'pseud'

local endpoint, case = arg[1], arg[2]
local timeout = tonumber(os.getenv('CASE_TIMEOUT') or '5')
local client = pseud.Client('service', { timeout = timeout })
assert(client:connect(endpoint))

local function out(...)
  local words = table.pack(...)
  for i = 1, words.n do words[i] = tostring(words[i]) end
  io.stdout:write(table.concat(words, ' ', 1, words.n), '\n')
  io.stdout:flush()
end

local function try(f)
  local ok, v = pcall(f)
  if ok then return v end
  if pseud.is_error(v) then
    return ('error %s|%s|%s'):format(v.name, v.message, v.traceback ~= '' and 'traceback' or 'none')
  end
  return 'raised ' .. tostring(v)
end

local cases = {}

function cases.hello()
  out(client.hello('Charly'):get())
  out(client:hello('Charly'):get())
  out(client:call('hello', 'Call'):get())
end

function cases.dotted()
  out(client.this.is.a.name():get())
end

function cases.registry()
  out(client.lower('ABC'):get(), client.upper('def'):get())
end

function cases.errors()
  out(try(function() return client.fail():get() end))
  out(try(function() return client.fail_value():get() end))
  out(try(function() return client.no_such_thing():get() end))
  out(try(function() return client['yield']():get() end))
  out(try(function() return client.returns_function():get() end))
  -- the server still answers afterwards
  out(client.hello('again'):get())
end

function cases.traceback()
  local ok, e = pcall(function() return client.fail():get() end)
  assert(not ok)
  out(e.name)
  out(e.message)
  out(e.traceback:find('stack traceback', 1, true) and 'has stack traceback' or e.traceback)
  -- where (the line that waited), then class and message, then the remote traceback
  local shown = tostring(e)
  out(shown:find('^spec/clients/cases%.lua:%d+: LuaError: ') and shown:find('stack traceback', 1, true)
      and shown:find(e.call, 1, true) and 'tostring ok' or shown)
  -- which call, to which service, where
  out(e.call)
end

--- True once this process's stderr log ($PSEUD_SPEC_LOG, set by
-- spec/support/process.lua) has a line matching `pattern`.
local function logged(pattern)
  local path = assert(os.getenv('PSEUD_SPEC_LOG'), 'PSEUD_SPEC_LOG unset: run this case from the spec')
  local f = io.open(path, 'r')
  if not f then return false end
  local text = f:read('a')
  f:close()
  return text:find(pattern) ~= nil
end

function cases.timeout()
  local cpu0, t0 = os.clock(), pseud.now()
  out(try(function() return client.sleep(2):get() end))
  -- CPU time on purpose: waiting for the timeout must not spin
  out(os.clock() - cpu0 < 1 and 'cpu ok' or 'busy waiting')
  local waited = pseud.now() - t0
  out(waited >= 0.29 and waited < 1.5 and 'timed out in time' or ('timed out after ' .. waited))
  -- wait (bounded) for the late reply to arrive and be dropped, not
  -- delivered: the host logs it; pseud.sleep runs the loop that reads it
  local deadline = pseud.now() + 10
  while not logged('msg="dropped a reply for no pending call %(late or forged%)" type=OK') do
    if pseud.now() > deadline then out('late reply not dropped within 10 s') break end
    pseud.sleep(0.02)
  end
  out(client.hello('after'):get())
end

function cases.inflight()
  local n = tonumber(os.getenv('CASE_N') or '1000')
  local futures = {}
  for i = 1, n do futures[i] = client.echo(i) end
  local results = { pseud.gather(table.unpack(futures)) }
  local good = 0
  for i = 1, n do if results[i] == i then good = good + 1 end end
  out('correct', good, 'of', n)
  out('pending', client:pending())
end

function cases.kwargs()
  local r = client.kw(1, pseud.kwargs { b = 'x', c = 2.5 }):get()
  out(r.a, r.kwargs.b, r.kwargs.c, math.type(r.kwargs.c))
  r = client.kw(2):get()
  out(r.a, tostring(r.kwargs))
end

function cases.values()
  local v = {
    int = 42, float = 1.0, neg = -7, big = math.maxinteger, str = 'h\u{e9}', bin = '\0\255\1',
    arr = { 1, pseud.null, 3 }, empty = {}, map = pseud.map {}, nested = { { { 'deep' } } },
    ext = pseud.ext(123, 'pickle-bytes'), yes = true,
  }
  local r = client.echo(v):get()
  out(math.type(r.int), r.int, math.type(r.float), r.neg, r.big == math.maxinteger)
  out(r.str == v.str, r.bin == v.bin, #r.arr, r.arr[2] == pseud.null, r.arr[3])
  out(next(r.empty) == nil, getmetatable(r.map) ~= nil, r.nested[1][1][1], r.yes)
  out(r.ext.type, r.ext.data, r.ext == v.ext)
  local a, b = client.echo(1, 'two'):get()
  out(type(a), a[1], a[2], b)
end

function cases.mixed()
  local futures = {}
  for i = 1, 100 do
    futures[i] = (i % 2 == 0) and client.hello(tostring(i)) or client.fail()
  end
  local good = 0
  for i = 1, 100 do
    local ok, v = pcall(futures[i].get, futures[i])
    if i % 2 == 0 and ok and v == 'Hello ' .. i then good = good + 1 end
    if i % 2 == 1 and not ok and v.name == 'LuaError' then good = good + 1 end
  end
  out('correct', good, 'of', 100)
end

function cases.slow()
  out(client.slow(tonumber(os.getenv('CASE_SLOW') or '0.5')):get())
end

function cases.concurrent_sleep()
  local n, clock = 200, pseud.now
  local t0 = clock()
  local futures = {}
  for i = 1, n do futures[i] = client.sleep(0.2) end
  pseud.gather(table.unpack(futures))
  out('elapsed', ('%.2f'):format(clock() - t0))
end

assert(cases[case], 'no such case: ' .. tostring(case))
cases[case]()
out('done')
