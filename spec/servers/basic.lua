--[[
spec/servers/basic.lua: the pseud-lua server that interop_spec.lua and
bad_input_spec.lua drive with the Python peer.

  pseud-lua spec/servers/basic.lua [ENDPOINT]

Binds ENDPOINT (default tcp://127.0.0.1:*, a free loopback port), prints
`ready <endpoint>` once it can be called, then serves as service 'service'
until SIGTERM.
]]
local pseud = require 'pseud'

local server = pseud.Server('service')
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

server:register_rpc('hello', function(name) return 'Hello ' .. name end)
server:register_rpc('echo', function(x) return x end)
server:register_rpc('this.is.a.name', function() return 'Done' end)

-- Local registration (this server only) and global (every RPC of the process).
server:register_rpc('lower', string.lower)
pseud.register_rpc('upper', string.upper)
-- The same name in both: the local one must win (pseud 1.0 lookup order).
server:register_rpc('shadowed', function() return 'local' end)
pseud.register_rpc('shadowed', function() return 'global' end)

server:register_rpc('fail', function() error('boom') end)
server:register_rpc('fail_value', function() error(pseud.error('ValueError', 'bad input')) end)

-- kwargs come as one extra last argument, only when the caller sent some.
server:register_rpc('kw', function(_, kwargs) return kwargs end)
server:register_rpc('nargs', function(...) return select('#', ...) end)

server:register_rpc('sleep', function(s)
  pseud.sleep(s)
  return s
end)

-- Exact types across the wire: integers, floats (1.0 stays a float), nested
-- arrays, an empty array, an empty map, a null inside an array, bin.
server:register_rpc('types', function()
  return {
    int = 1, negative = -5, big = 1 << 40, float = 1.0, half = 0.5,
    str = 'h\u{e9}llo', bytes = '\0\255', nested = { 1, { 2, { 3 } } },
    empty_array = {}, empty_map = pseud.map {}, null_in_array = { 1, pseud.null, 3 },
    yes = true, no = false,
  }
end)

io.stdout:write('ready ', tostring(endpoint), '\n')
io.stdout:flush()
server:start()
