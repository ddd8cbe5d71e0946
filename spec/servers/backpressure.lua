--[=[
spec/servers/backpressure.lua ENDPOINT BUDGET [MAX_PEERS [MAX_PEER_CALLS
[WORKERS [METRICS]]]]: a server for backpressure_spec.lua, with
max_peer_queue = BUDGET bytes, max_peers = MAX_PEERS, max_peer_calls =
MAX_PEER_CALLS, workers = WORKERS (default 1) and metrics served at METRICS
(`-` or absent: the host's default), the noop heartbeat backend.
  hold(pad)      waits until the next release(), then returns #pad
  holding()      how many hold calls are waiting for a release
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
local server = pseud.Server('service', {
  max_peer_queue = tonumber(arg[2]),
  max_peers = tonumber(opt(3)),
  max_peer_calls = tonumber(opt(4)),
  workers = tonumber(opt(5)) or 1,
  metrics = opt(6),
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
