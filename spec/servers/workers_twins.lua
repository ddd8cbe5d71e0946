--[==[
spec/servers/workers_twins.lua: two servers named 'service' on two
endpoints, run with --workers 2 by workers_spec.lua. The link between the
control and the workers names a server by its name, so the host serves
these without workers (and says why) rather than mix them up.

  pseud-lua --workers 2 spec/servers/workers_twins.lua

Prints `ready <endpoint one> <endpoint two>` (from the control).
]==]
local pseud = require 'pseud'

local one, two = pseud.Server('service'), pseud.Server('service')
local e1, e2 = assert(one:bind('tcp://127.0.0.1:*')), assert(two:bind('tcp://127.0.0.1:*'))
one:register_rpc('which', function() return 'one ' .. pseud.worker_id() end)
two:register_rpc('which', function() return 'two ' .. pseud.worker_id() end)
if pseud.role() == 'control' then
  io.stdout:write('ready ', tostring(e1), ' ', tostring(e2), '\n')
  io.stdout:flush()
end
pseud.spawn(function() one:start() end)
two:start()
