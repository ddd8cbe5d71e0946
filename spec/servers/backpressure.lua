--[[
spec/servers/backpressure.lua ENDPOINT BUDGET [MAX_PEERS]: a server for
backpressure_spec.lua, with max_peer_queue = BUDGET bytes and max_peers =
MAX_PEERS (default: the host's), the noop heartbeat backend.
  hold(pad)      waits until the next release(), then returns #pad
  release()      lets every hold waiting return
  echo(x)        returns x
  hello(name)    'Hello ' .. name
  peer_count()   entries in the directory
Prints `ready <endpoint>`, serves 'service' until SIGTERM.
]]
local pseud = require 'pseud'

-- workers = 1 even under pseud-lua --workers N: hold() and release() share
-- `generation` across peers, and module-level state is per worker
-- (docs/workers.md); a script like this one keeps its handlers together
local server = pseud.Server('service', {
  max_peer_queue = tonumber(arg[2]),
  max_peers = arg[3] and tonumber(arg[3]) or nil,
  workers = 1,
})
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

local generation = 0                 -- release() lets the holds that started before it go
server:register_rpc('hold', function(pad)
  local started = generation
  while generation == started do pseud.sleep(0.005) end
  return #pad
end)
server:register_rpc('release', function() generation = generation + 1 return true end)
server:register_rpc('echo', function(x) return x end)
server:register_rpc('hello', function(name) return 'Hello ' .. name end)
server:register_rpc('peer_count', function() return #server:peers() end)

io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()
server:start()
