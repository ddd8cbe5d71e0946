-- bench/cluster_probe.lua ENDPOINT MODE N [USER] — N calls one at a time to a
-- node of scripts/cluster-bench; prints "p50=<us> p99=<us> calls=N".
--   MODE peer:  ENDPOINT is a node; with USER it stays connected as that peer,
--               answering pong(), and prints "registered" (then serves until
--               SIGTERM; N unused)
--   MODE noop:  noop() on the node
--   MODE ping:  ping_peer(USER) on the node
local pseud = require 'pseud'

local endpoint, mode, n, user = arg[1], arg[2], tonumber(arg[3]) or 1000, arg[4]
local client = pseud.Client('bench', { identity = mode == 'peer' and user or nil, timeout = 10 })
assert(client:connect(endpoint))
client:register_rpc('pong', function() return 'pong' end)
if mode == 'peer' then
  client:call('noop'):get()
  print('registered')
  io.stdout:flush()
  client:start()
  return
end
local times = {}
for i = 1, n do
  local t0 = pseud.now()
  if mode == 'noop' then client:call('noop'):get() else client:call('ping_peer', user):get() end
  times[i] = (pseud.now() - t0) * 1e6
end
table.sort(times)
print(('p50=%.0f p99=%.0f calls=%d'):format(times[math.ceil(n * 0.5)], times[math.ceil(n * 0.99)], n))
