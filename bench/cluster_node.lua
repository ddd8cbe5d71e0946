-- bench/cluster_node.lua — one node of scripts/cluster-bench: server 'bench'
-- in the cluster at $PSEUD_BENCH_REDIS. Prints "ready <endpoint> <node>" once
-- in the cluster; serves until SIGTERM.
--   noop()            nothing: the probe's own round trip to this node
--   ping_peer(user)   send_to(user).pong(): a local or a cross-node send_to
local pseud = require 'pseud'

local server = pseud.Server('bench', { cluster = assert(os.getenv('PSEUD_BENCH_REDIS')) })
local endpoint = assert(server:bind('tcp://127.0.0.1:*'))
server:register_rpc('noop', function() return true end)
server:register_rpc('ping_peer', function(user) return server:send_to(user).pong():get() end)

local deadline = pseud.now() + 10
while not server:cluster().up and pseud.now() < deadline do pseud.sleep(0.01) end
io.stdout:write('ready ', endpoint, ' ', server:cluster().node, '\n')
io.stdout:flush()
server:start()
