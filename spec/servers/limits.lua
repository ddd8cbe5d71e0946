--[[
spec/servers/limits.lua [ENDPOINT]: handlers that misbehave, for
limits_spec.lua. max_handler_time = 1 s, max_handler_memory = 16 MB, max_hook_time = 0.5 s,
max_message_size = 1 MiB.
Prints `ready <endpoint>`, serves 'service' until SIGTERM.
]]
local pseud = require 'pseud'

local server = pseud.Server('service', { max_handler_time = 1, max_handler_memory = 16e6,
                                         max_hook_time = 0.5, max_message_size = 1048576 })
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

server:register_rpc('hello', function(name) return 'Hello ' .. name end)
-- computes without yielding for `s` seconds (under the time limit)
server:register_rpc('spin', function(s)
  local t0, n = pseud.now(), 0
  while pseud.now() - t0 < s do n = n + 1 end
  return n
end)
server:register_rpc('spin_forever', function() while true do end end)
server:register_rpc('spin_in_pcall', function()
  while true do pcall(function() while true do end end) end
end)
-- every instruction a large copy: the hook's clock look every 10,000
-- instructions came seconds apart (an own bug the limits must hold against)
server:register_rpc('copy_forever', function(n)
  local big = string.rep('x', n)
  while true do local _ = big .. 'y' end
end)
server:register_rpc('rep_forever', function(n)
  while true do local _ = string.rep('x', n) end
end)
-- one call doing long work without allocating, in a loop: nothing but
-- the count of what they did has the hook look in time (an attack round:
-- table.sort ran 88 s past the limit with 200,000 items)
server:register_rpc('sort_forever', function()
  local t = {}
  for i = 1, 50000 do t[i] = i end
  while true do table.sort(t) end
end)
server:register_rpc('collect_forever', function()
  local live = {}
  for i = 1, 100000 do live[i] = {} end
  while #live > 0 do collectgarbage() end
end)
server:register_rpc('find_forever', function()
  local s = string.rep('a', 8 << 20)
  while true do s:find('b', 1, true) end
end)
-- found by a review of that: gsub whose every match is replaced by
-- nothing, concat of empty strings and utf8.offset allocate nothing; a
-- find that raises ("pattern too complex") is counted at the next
server:register_rpc('gsub_forever', function()
  local s = string.rep('a', 1 << 20)
  while true do local _ = s:gsub('a', '') end
end)
server:register_rpc('concat_forever', function()
  local t = {}
  for i = 1, 200000 do t[i] = '' end
  while true do local _ = table.concat(t) end
end)
server:register_rpc('offset_forever', function()
  local s = string.rep('a', 4 << 20)
  while true do local _ = utf8.offset(s, #s) end
end)
server:register_rpc('raising_find_forever', function()
  local s, p = string.rep('a', 8192), ('a?'):rep(220) .. 'x'
  while true do pcall(string.find, s, p) end
end)
-- a __close run by coroutine.close, copying megabytes: it runs on the
-- closed coroutine, where the allocator's look did not reach (52 s); it
-- cannot be preempted there (README), only stopped
server:register_rpc('close_copying', function()
  local co = coroutine.create(function()
    local _ <close> = setmetatable({}, { __close = function()
      while true do local _ = string.rep('x', 4 << 20) end
    end })
    coroutine.yield()
  end)
  coroutine.resume(co)
  coroutine.close(co)
end)
-- a kill caught where no instruction follows to raise it again
local function spin() while true do end end
server:register_rpc('tail_close', function()
  local co = coroutine.create(function()
    local _ <close> = setmetatable({}, { __close = spin })
    coroutine.yield()
  end)
  coroutine.resume(co)
  return coroutine.close(co)
end)
server:register_rpc('tail_load', function() return load(spin) end)
server:register_rpc('hog', function()
  local t = {}
  while true do t[#t + 1] = string.rep('x', 65536) .. #t end
end)

-- what a careless script does (issue 10): each must be stopped by its limit
server:register_rpc('spin_in_coroutine', function()
  coroutine.wrap(function() while true do end end)()
end)
server:register_rpc('spin_resumed', function()
  local co = coroutine.create(function() while true do end end)
  return coroutine.resume(co)
end)
server:register_rpc('sethook_spin', function()
  pcall(debug.sethook)                 -- refused in a handler; caught, then spins
  while true do end
end)
server:register_rpc('loadlib_spin', function()
  -- Lua's own debug library opened again: its sethook was not sealed (an
  -- attack round: the spin was never stopped); refused now
  local open = package.loadlib('liblua5.4.so.0', 'luaopen_debug')
  if open then open().sethook() end
  while true do end
end)
server:register_rpc('require_spin', function()
  -- the same through require's C searcher: package.cpath at liblua, and a
  -- module name whose luaopen_ is luaopen_debug (a review)
  for line in io.lines('/proc/self/maps') do
    local lib = line:match('(/%S*liblua5%.4%.so[%.%d]*)$')
    if lib then package.cpath = lib break end
  end
  local ok, raw = pcall(require, 'debug-raw')
  if ok then raw.sethook() end
  while true do end
end)
server:register_rpc('bad_tostring', function()
  error(setmetatable({}, { __tostring = function() while true do end end }))
end)
server:register_rpc('slow', function(s) pseud.sleep(s) return 'late' end)
server:register_rpc('sized', function(n) return string.rep('x', n) end)
server:register_rpc('graph', function()
  local t = {}
  for _ = 1, 25 do t = { t, t } end
  return t
end)
-- a spawned task that spins: it has the limits of the handler that spawned it
local spawned
server:register_rpc('spawn_spin', function()
  spawned = pseud.spawn(function() while true do end end)
  return 'spawned'
end)
server:register_rpc('spawned_outcome', function()
  local ok, e = pcall(spawned.get, spawned)
  return ok and 'ok' or e.name
end)
pseud.register_predicate('spinning', function() while true do end end)
server:register_rpc('guarded', function() return 'reached' end, { domain = 'spinning' })

-- found by an adversarial review: each froze the loop before its fix
server:register_rpc('xpcall_spin', function() xpcall(spin, spin) end)
server:register_rpc('close_spin', function()
  local _ <close> = setmetatable({}, { __close = spin })
  spin()
end)
server:register_rpc('close_spin_nested', function()
  coroutine.wrap(function()
    local _ <close> = setmetatable({}, { __close = spin })
    spin()
  end)()
end)
local suspended = coroutine.create(function()       -- made in the main chunk
  local _ <close> = setmetatable({}, { __close = spin })
  coroutine.yield()
end)
coroutine.resume(suspended)
server:register_rpc('close_main', function() coroutine.close(suspended) end)
server:register_rpc('hog_catch', function()
  local keep = {}
  while true do pcall(function() while true do keep[#keep + 1] = {} end end) end
end)
server:register_rpc('spawn_many', function(k)
  for _ = 1, k do pseud.spawn(spin) end
  return 'spawned'
end)
-- finalizers: Lua runs a __gc with hooks off (an attack round: one that
-- spins hung the host for good); a well-behaved one still runs, and the
-- metatable still shows it
local finalized = 0
local counted = { __gc = function() finalized = finalized + 1 end }
local function garbage(mt) setmetatable({}, mt) end
server:register_rpc('gc_runs', function()
  local before = finalized
  garbage(counted)
  collectgarbage()
  for _ = 1, 100 do                        -- it runs from the loop, soon after
    if finalized > before then break end
    pseud.sleep(0.01)
  end
  return finalized == before + 1 and getmetatable(setmetatable({}, counted)).__gc == counted.__gc
end)
server:register_rpc('gc_spin', function()
  garbage({ __gc = spin })
  collectgarbage()
  return 'after'
end)
-- one name under 8 domains, each predicate spinning: the lookup's
-- predicates share one max_hook_time (an attack round: 20 such domains
-- froze the loop 20 times max_hook_time, and _pseud.describe as long)
for i = 1, 8 do
  local domain = 'slow' .. i
  pseud.register_predicate(domain, spin)
  server:register_rpc('multi', function() return 'reached' end, { domain = domain })
end
pseud.register_predicate('xpcalling', function() xpcall(spin, spin) end)
server:register_rpc('guarded_xpcall', function() return 'reached' end, { domain = 'xpcalling' })

io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()
server:start()
