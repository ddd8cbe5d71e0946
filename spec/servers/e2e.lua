--[[
spec/servers/e2e.lua: the pseud-lua server that e2e_spec.lua calls from
pseud-lua clients (spec/clients/cases.lua).

  pseud-lua spec/servers/e2e.lua [ENDPOINT]

Prints `ready <endpoint>`, then serves 'service' until SIGTERM. `slow(s)`
prints `slow started` when it begins, so a spec can signal the server while
a call is in flight.
]]
local pseud = require 'pseud'

local server = pseud.Server('service')
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

server:register_rpc('hello', function(name) return 'Hello ' .. name end)
server:register_rpc('echo', function(...) return ... end)
server:register_rpc('this.is.a.name', function() return 'Done' end)
server:register_rpc('lower', string.lower)
pseud.register_rpc('upper', string.upper)
server:register_rpc('fail', function() error('boom') end)
server:register_rpc('fail_value', function() error(pseud.error('ValueError', 'bad input')) end)
server:register_rpc('kw', function(a, kwargs) return { a = a, kwargs = kwargs } end)
server:register_rpc('sleep', function(s) pseud.sleep(s); return s end)
server:register_rpc('slow', function(s)
  io.stdout:write('slow started\n'); io.stdout:flush()
  pseud.sleep(s)
  return 'finished'
end)
server:register_rpc('yield', function() coroutine.yield() end)
server:register_rpc('returns_function', function() return print end)
server:register_rpc('stop', function() server:stop(); return 'stopping' end)

io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()
server:start()
io.stdout:write('stopped\n')
