-- spec/servers/metrics_many.lua N: a server with N registered names, each
-- called once (through an inproc client of its own) so each has its
-- series, and metrics on a free port (metrics_spec.lua: a large page).
-- Prints `ready` once the calls are made (the URL is in its log).
local pseud = require 'pseud'

local n = tonumber(arg[1])
local server = pseud.Server('service', { metrics = 'tcp://127.0.0.1:0' })
assert(server:bind('inproc://metrics-many'))
local function name(i) return ('some.fairly.long.dotted.name.number_%06d'):format(i) end
for i = 1, n do server:register_rpc(name(i), function() return i end) end

local client = pseud.Client('service', { timeout = 10 })
assert(client:connect('inproc://metrics-many'))
local pending = {}
for i = 1, n do
  pending[#pending + 1] = client:call(name(i))
  if #pending == 200 or i == n then
    for _, f in ipairs(pending) do f:get() end
    pending = {}
  end
end
io.stdout:write('ready\n')
io.stdout:flush()
server:start()
