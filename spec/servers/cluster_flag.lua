--[[
spec/servers/cluster_flag.lua [ENDPOINT]: a node of cluster_spec.lua whose
script names no cluster: it joins by `pseud-lua --cluster URL` or
$PSEUD_CLUSTER, which apply to the first server made without a `cluster`
option. Three servers: 'outside' (cluster = false: kept out), 'service'
(the first without the option: joins) and 'later' (without it too, made
once the process has joined: stays out). Prints `ready <endpoint> <node
id>` once 'service' is in the cluster (`none` when it is in none), then
serves 'service':
  clusters()   what cluster() says of each server: { outside =, service =,
               later = }, false for nil
]]
local pseud = require 'pseud'

local outside = pseud.Server('outside', { cluster = false })
local server = pseud.Server('service')
local later = pseud.Server('later')
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

server:register_rpc('clusters', function()
  return { outside = outside:cluster() or false, service = server:cluster() or false,
           later = later:cluster() or false }
end)

-- in the cluster before saying ready (bounded: the spec's own timeout reads)
local deadline = pseud.now() + 10
while server:cluster() and not server:cluster().up and pseud.now() < deadline do pseud.sleep(0.01) end
io.stdout:write('ready ', endpoint, ' ', (server:cluster() or { node = 'none' }).node, '\n')
io.stdout:flush()
server:start()
