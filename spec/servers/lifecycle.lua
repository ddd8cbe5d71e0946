--[[
spec/servers/lifecycle.lua [ENDPOINT]: a server for lifecycle_spec.lua
(stop, flush, handler error logs, leaks). stop_timeout = 1 s, no handler
limits. Prints `ready <endpoint>`, serves 'service' until SIGTERM, then
prints `stopped`.
]]
local pseud = require 'pseud'
local core = require 'pseud.core'

-- workers = 1 (a server's option wins over --workers, PSEUD_SPEC_WORKERS):
-- `napping` is module-level, so per worker, and the leaving caller's naps
-- come from a second connection, which worker_by = 'user' would send to
-- another worker than the one the counter is asked of
local server = pseud.Server('service', { stop_timeout = 1, workers = 1 })
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

local notes = {}
server:register_rpc('hello', function(name) return 'Hello ' .. name end)
server:register_rpc('fail', function() error('boom') end)
server:register_rpc('sleep', function(s) pseud.sleep(s) return s end)
server:register_rpc('forever', function() pseud.sleep(3600) end)
server:register_rpc('spin', function() while true do end end)
server:register_rpc('note', function(x) notes[#notes + 1] = x end)
server:register_rpc('notes', function() return notes end)
server:register_rpc('counts', function() return core.counts() end)
local napping = 0                    -- nap: a sleep that counts the ones in progress
local awake = { __close = function() napping = napping - 1 end }
server:register_rpc('nap', function(s)
  napping = napping + 1
  -- a caller's close stops its naps with PeerLostError: counted out then too
  local _ <close> = setmetatable({}, awake)
  pseud.sleep(s)
end)
server:register_rpc('napping', function() return napping end)

io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()
server:start()
print('stopped')
