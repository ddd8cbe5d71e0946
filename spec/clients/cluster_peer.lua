--[[
spec/clients/cluster_peer.lua ENDPOINT IDENTITY [SERVICE]: a peer of one node of
cluster_spec.lua. Prints `registered` once the node has heard from it, then
serves until stop() is called:
  whoami()   'I am IDENTITY'
  echo(x)    x
  stall()    prints `stalling`, then sleeps 60 s (a call that stays in flight)
  slow(s)    'slept S' after s seconds
  stop()     stops this client
]]
local pseud = require 'pseud'

local endpoint, identity = arg[1], arg[2]
local client = pseud.Client(arg[3] or 'service', { identity = identity, timeout = 5 })
assert(client:connect(endpoint))
client:register_rpc('whoami', function() return 'I am ' .. identity end)
client:register_rpc('echo', function(x) return x end)
client:register_rpc('stall', function()
  io.stdout:write('stalling\n')
  io.stdout:flush()
  pseud.sleep(60)
end)
client:register_rpc('slow', function(seconds)
  pseud.sleep(seconds)
  return 'slept ' .. seconds
end)
client:register_rpc('stop', function() client:stop(); return identity .. ' stopping' end)

client:call('peers'):get()        -- one round trip: the node has heard from us
print('registered')
io.stdout:flush()
client:start()
print('stopped')
