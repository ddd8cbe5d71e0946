--[[
spec/clients/bidi.lua ENDPOINT IDENTITY [CALL ARG]: a client that serves
addition, whoami and stop. Without CALL it prints `registered` once the
server knows it, then serves until the server calls stop(). With CALL it
calls that name and prints the result as lines.
]]
local pseud = require 'pseud'

local endpoint, identity, call, callarg = arg[1], arg[2], arg[3], arg[4]
local client = pseud.Client('service', { identity = identity, timeout = 5 })
assert(client:connect(endpoint))
client:register_rpc('addition', function(a, b) return a + b end)
client:register_rpc('whoami', function() return 'I am ' .. identity end)
client:register_rpc('stop', function() client:stop(); return identity .. ' stopping' end)

local function show(v)
  if type(v) ~= 'table' then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. '=' .. show(v[k]) end
  return '{' .. table.concat(parts, ',') .. '}'
end

if not call then
  client:call('peers'):get()      -- one round trip: the server has heard from us
  print('registered')
  io.stdout:flush()
  client:start()
  print('stopped')
else
  print(show(client:call(call, tonumber(callarg) or callarg):get()))
end
