--[=[
spec/servers/backpressure.lua ENDPOINT BUDGET [MAX_PEERS [MAX_PEER_CALLS
[WORKERS [METRICS [HEARTBEAT [MAX_HANDLER_TIME]]]]]]: a server for
backpressure_spec.lua, with
max_peer_queue = BUDGET bytes, max_peers = MAX_PEERS, max_peer_calls =
MAX_PEER_CALLS, workers = WORKERS (default 1) and metrics served at METRICS
(`-` or absent: the host's default), the noop heartbeat backend, or with
HEARTBEAT `heartbeat` one that declares a silent peer gone after 60 s,
and max_handler_time = MAX_HANDLER_TIME seconds (`-`: none).
  hold(pad)      waits until the next release(), then returns #pad
  holding()      how many hold calls are waiting for a release
  hold_spawned() spawns a task that counts itself in spawned_done() after
                 the next release(), then holds as hold('') does
  spawned_done() how many such tasks got that far
  hold_closing() holds as hold('') does, with a to-be-closed value whose
                 __close notes the error it closed on (its name, or `none`)
  closed_by()    those notes, comma-separated
  stubborn()     sleeps 10 ms in a pcall, for good, whatever the sleep raises
  block(s, path) creates the file at path, then blocks the whole loop s
                 seconds (os.execute sleep)
  spin_forever() computes, for good
  release()      lets every hold waiting return
  fat(n, s)      a string of n bytes, after sleeping s seconds
  roundtrip(x)   calls cb(x) back on the caller and returns its answer
  echo(x)        returns x
  hello(name)    'Hello ' .. name
  peer_count()   entries in the directory
Prints `ready <endpoint>`, serves 'service' until SIGTERM.
]=]
local pseud = require 'pseud'

local function opt(i) return arg[i] ~= '-' and arg[i] or nil end

-- workers = 1 (unless told) even under pseud-lua --workers N: hold() and
-- release() share `generation` across peers, and module-level state is per
-- worker (docs/workers.md); a script like this one keeps its handlers together
if opt(7) == 'heartbeat' then
  pseud.register_heartbeat_backend {
    name = 'spec_slow_heartbeat', side = 'server', interval = 1, timeout = 60,
    handle_heartbeat = function() end, handle_timeout = function() end,
  }
end

local server = pseud.Server('service', {
  max_peer_queue = tonumber(arg[2]),
  max_peers = tonumber(opt(3)),
  max_peer_calls = tonumber(opt(4)),
  workers = tonumber(opt(5)) or 1,
  metrics = opt(6),
  heartbeat_plugin = opt(7) == 'heartbeat' and 'spec_slow_heartbeat' or nil,
  max_handler_time = tonumber(opt(8)),
})
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

local generation = 0                 -- release() lets the holds that started before it go
local holding = 0
server:register_rpc('hold', function(pad)
  local started = generation
  holding = holding + 1
  while generation == started do pseud.sleep(0.005) end
  holding = holding - 1
  return #pad
end)
server:register_rpc('holding', function() return holding end)
local spawned_done = 0
server:register_rpc('hold_spawned', function()
  local started = generation
  pseud.spawn(function()
    while generation == started do pseud.sleep(0.005) end
    spawned_done = spawned_done + 1
  end)
  while generation == started do pseud.sleep(0.005) end
  return true
end)
server:register_rpc('spawned_done', function() return spawned_done end)
local closed_by = {}
server:register_rpc('hold_closing', function()
  local started = generation
  local _ <close> = setmetatable({}, { __close = function(_, err)
    closed_by[#closed_by + 1] = type(err) == 'table' and err.name or tostring(err or 'none')
  end })
  while generation == started do pseud.sleep(0.005) end
  return true
end)
server:register_rpc('closed_by', function() return table.concat(closed_by, ',') end)
server:register_rpc('stubborn', function()
  while true do pcall(pseud.sleep, 0.01) end
end)
server:register_rpc('block', function(s, path)
  os.execute(('touch %q && sleep %s'):format(path, tonumber(s)))
  return true
end)
server:register_rpc('spin_forever', function() while true do end end)
server:register_rpc('roundtrip', function(x) return server:send_to(pseud.caller()).cb(x):get() end)
server:register_rpc('fat', function(n, s)
  pseud.sleep(s)
  return string.rep('x', n)
end)
server:register_rpc('release', function() generation = generation + 1 return true end)
server:register_rpc('echo', function(x) return x end)
server:register_rpc('hello', function(name) return 'Hello ' .. name end)
server:register_rpc('peer_count', function() return #server:peers() end)

io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()
server:start()
