--[==[
spec/servers/workers_close.lua: a script that closes its own server from a
handler, run with --workers 2 by workers_spec.lua. max_peer_calls = 1: a
call the control never hears the end of holds its peer's only slot, and
every later call of that connection waits behind it.

  pseud-lua --workers 2 spec/servers/workers_close.lua [ENDPOINT]

Prints `ready <endpoint>` (from the control), serves 'service' until SIGTERM.
]==]
local pseud = require 'pseud'

local server = pseud.Server('service', { max_peer_calls = 1 })
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

server:register_rpc('hello', function(name) return 'Hello ' .. name end)
-- the worker's script closes the server (in a worker: its proxy) while this
-- very call runs, then returns
server:register_rpc('close_self', function()
  server:close()
  return 'closed'
end)
server:register_rpc('close_then_fail', function()
  server:close()
  error('after the close')
end)

if pseud.role() == 'control' then
  io.stdout:write('ready ', tostring(endpoint), '\n')
  io.stdout:flush()
end
server:start()
