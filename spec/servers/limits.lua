--[[
spec/servers/limits.lua [ENDPOINT]: handlers that misbehave, for
limits_spec.lua. max_handler_time = 1 s, max_handler_memory = 16 MB.
Prints `ready <endpoint>`, serves 'service' until SIGTERM.
]]
local pseud = require 'pseud'

local server = pseud.Server('service', { max_handler_time = 1, max_handler_memory = 16e6 })
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

server:register_rpc('hello', function(name) return 'Hello ' .. name end)
-- computes without yielding for `s` seconds (under the time limit)
server:register_rpc('spin', function(s)
  local t0, n = pseud.now(), 0
  while pseud.now() - t0 < s do n = n + 1 end
  return n
end)
server:register_rpc('spin_forever', function() while true do end end)
server:register_rpc('spin_in_pcall', function()
  while true do pcall(function() while true do end end) end
end)
server:register_rpc('hog', function()
  local t = {}
  while true do t[#t + 1] = string.rep('x', 65536) .. #t end
end)

io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()
server:start()
