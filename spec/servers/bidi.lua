--[[
spec/servers/bidi.lua [ENDPOINT]: the server of bidirectional_spec.lua.
Prints `ready <endpoint>`, serves 'service' until SIGTERM.
  roundtrip(x)     calls addition(x, 1) back on the caller, returns 10 * it
  fanout()         calls whoami() on every peer but the caller, returns {user_id = answer}
                   for those that answered
  peers()          the user ids of rpc:peers()
  call_unknown()   send_to a peer that never connected: {error name, seconds taken}
  bye(user)        tells that client to stop
]]
local pseud = require 'pseud'

local server = pseud.Server('service', { timeout = 3 })
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

server:register_rpc('roundtrip', function(x)
  local caller = pseud.caller()
  return 10 * server:send_to(caller).addition(x, 1):get()
end)

server:register_rpc('fanout', function()
  local me = pseud.caller()
  local users, futures = {}, {}
  for _, p in ipairs(server:peers()) do
    if p.user_id ~= me then
      users[#users + 1] = p.user_id
      futures[#futures + 1] = server:send_to(p.user_id).whoami()
    end
  end
  local result = pseud.map {}
  for i, user in ipairs(users) do             -- peers gone since are skipped
    local ok, answer = pcall(futures[i].get, futures[i])
    if ok then result[user] = answer end
  end
  return result
end)

server:register_rpc('peers', function()
  local ids = {}
  for _, p in ipairs(server:peers()) do ids[#ids + 1] = p.user_id end
  table.sort(ids)
  return ids
end)

server:register_rpc('call_unknown', function()
  local t0 = pseud.now()
  local ok, e = pcall(function() return server:send_to('nobody').addition(1, 1):get() end)
  return { ok, e.name, pseud.now() - t0 }
end)

server:register_rpc('bye', function(user) return server:send_to(user).stop():get() end)

io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()
server:start()
