--[[
spec/clients/basic.lua: a pseud-lua client that interop_spec.lua runs against
the Python peer's server (spec/support/pypeer.py server ENDPOINT service).

  pseud-lua spec/clients/basic.lua ENDPOINT CASE

Runs one CASE and prints `key<TAB>value` lines, values written as Python's
repr would write them ('str', 1, 1.0, [..], {..}, None, True, b'\xff'), so
the spec compares exact types. Ends with `done<TAB>CASE`; exits non-zero on
an unexpected Lua error.
]]
local pseud = require 'pseud'

local endpoint, case = arg[1], arg[2]
assert(endpoint and case, 'usage: basic.lua ENDPOINT CASE')

local MAP_MT = getmetatable(pseud.map {})

--- Python-repr-like text of a decoded value; dict keys sorted.
local function describe(v)
  local t = type(v)
  if v == nil or v == pseud.null then return 'None' end
  if t == 'boolean' then return v and 'True' or 'False' end
  if t == 'number' then
    if math.type(v) == 'integer' then return ('%d'):format(v) end
    if v == math.floor(v) and math.abs(v) < 1e15 then return ('%.1f'):format(v) end
    return ('%.17g'):format(v)
  end
  if t == 'string' then
    if utf8.len(v) then return "'" .. v:gsub('[\\\']', '\\%0') .. "'" end
    return "b'" .. v:gsub('.', function(c) return ('\\x%02x'):format(c:byte()) end) .. "'"
  end
  if t == 'table' then
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    if getmetatable(v) ~= MAP_MT and n == #v then
      local items = {}
      for i = 1, #v do items[i] = describe(v[i]) end
      return '[' .. table.concat(items, ', ') .. ']'
    end
    local items = {}
    for k, x in pairs(v) do items[#items + 1] = { describe(k), describe(x) } end
    table.sort(items, function(a, b) return a[1] < b[1] end)
    for i, kv in ipairs(items) do items[i] = kv[1] .. ': ' .. kv[2] end
    return '{' .. table.concat(items, ', ') .. '}'
  end
  return '<' .. t .. ' ' .. tostring(v) .. '>'
end

local function out(key, value)
  io.stdout:write(key, '\t', (describe(value):gsub('\n', '\\n')), '\n')
  io.stdout:flush()
end

--- Print the fields of an error value raised by :get().
local function out_error(prefix, ok, err)
  out(prefix .. '.ok', ok)
  if ok then return end
  out(prefix .. '.type', type(err))
  if type(err) == 'table' or type(err) == 'userdata' then
    out(prefix .. '.name', err.name)
    out(prefix .. '.message', err.message)
    local tb = err.traceback
    out(prefix .. '.traceback_first_line', type(tb) == 'string' and tb:match('^[^\n]*') or tb)
    local text = tostring(err)
    out(prefix .. '.tostring_shows_all',
      text:find(tostring(err.name), 1, true) ~= nil
      and text:find(tostring(err.message), 1, true) ~= nil
      and type(tb) == 'string' and text:find(tb:match('^[^\n]*'), 1, true) ~= nil)
  else
    out(prefix .. '.value', tostring(err))
  end
end

local client = pseud.Client('service', { timeout = 1 })
client:connect(endpoint)

local cases = {}

function cases.hello()
  out('hello', client.hello('Charly'):get())
  out('hello_method', client:hello('Charly'):get())
  out('call', client:call('hello', 'Charly'):get())
end

function cases.dotted()
  out('dotted', client.this.is.a.name():get())
end

function cases.echo()
  out('echo', client.echo({ 1, 1.0, -2.25, 'x', {}, pseud.map {}, { 1, pseud.null, 3 },
                             '\0\255', 1 << 40, true, false }):get())
end

function cases.types()
  out('types', client.types():get())
end

function cases.fail()
  out_error('fail', pcall(function() return client.fail():get() end))
end

function cases.notfound()
  out_error('notfound', pcall(function() return client.no_such_thing():get() end))
end

function cases.kwargs()
  out('kw', client.kw(pseud.kwargs { a = 1, b = 'x' }):get())
end

function cases.never()
  local t0 = pseud.now()
  out_error('never', pcall(function() return client.never():get() end))
  out('never.seconds', pseud.now() - t0)
end

-- A pending call does not hold up the others; it still ends in TimeoutError.
function cases.overlap()
  local slow = client.never()
  local quick = client.hello('quick')
  out('quick', quick:get())
  out('slow.done_before', slow:done())
  out_error('slow', pcall(function() return slow:get() end))
  out('slow.done_after', slow:done())
end

-- Many calls in a row on one connection: each gets its own answer.
function cases.many()
  local good = 0
  for i = 1, 200 do
    if client.echo(i):get() == i then good = good + 1 end
  end
  out('many', good)
end

local run = cases[case]
if not run then error('unknown case ' .. case) end
run()
out('done', case)
