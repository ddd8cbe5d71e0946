--[[
spec/servers/heartbeat.lua INTERVAL TIMEOUT [ENDPOINT]: the server of
heartbeat_spec.lua, with a heartbeat backend that prints `joined <user>` and
`gone <user>` (stdout) as peers come and go.
  peers()              sorted user ids of rpc:peers()
  call_client(u, s)    send_to(u).sleep(s): {outcome, seconds taken}
  spin(s)              computes s seconds without yielding, then prints `spun`
  hello(name)
]]
local pseud = require 'pseud'

local live = {}
local function say(...) io.stdout:write(table.concat({ ... }, ' '), '\n'); io.stdout:flush() end

pseud.register_heartbeat_backend {
  name = 'spec_heartbeat', side = 'server',
  interval = tonumber(arg[1]), timeout = tonumber(arg[2]),
  handle_heartbeat = function(_, user_id)
    if not live[user_id] then live[user_id] = true; say('joined', user_id) end
  end,
  handle_timeout = function(_, user_id)
    live[user_id] = nil
    say('gone', user_id)
  end,
}

local server = pseud.Server('service', { heartbeat_plugin = 'spec_heartbeat', timeout = 10 })
local endpoint = assert(server:bind(arg[3] or 'tcp://127.0.0.1:*'))

server:register_rpc('hello', function(name) return 'Hello ' .. name end)
server:register_rpc('peers', function()
  local ids = {}
  for _, p in ipairs(server:peers()) do ids[#ids + 1] = p.user_id end
  table.sort(ids)
  return table.concat(ids, ',')
end)
server:register_rpc('call_client', function(user, s)
  local t0 = pseud.now()
  local ok, v = pcall(function() return server:send_to(user).sleep(s):get() end)
  return { ok and 'ok' or v.name, pseud.now() - t0 }
end)
server:register_rpc('spin', function(s)
  local t0 = pseud.now()
  while pseud.now() - t0 < s do end
  say('spun')
  return 'spun'
end)

say('ready', endpoint)
server:start()
