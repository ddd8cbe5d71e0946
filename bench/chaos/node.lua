--[[
bench/chaos/node.lua ENDPOINT: a node of the chaos run (bench/chaos/driver.py):
serves 'service' in the cluster at $CHAOS_REDIS (ttl 2 s, refresh 0.5 s),
calls time out after $CHAOS_TIMEOUT s (3). Prints `ready ENDPOINT NODE UP`
once its Redis link is up (at most 15 s), serves until SIGTERM.
]]
local pseud = require 'pseud'

local server = pseud.Server('service', {
  timeout = tonumber(os.getenv('CHAOS_TIMEOUT')) or 3,
  cluster = { redis = assert(os.getenv('CHAOS_REDIS')), ttl = 2, refresh_interval = 0.5, timeout = 1 },
})
local endpoint = assert(server:bind(arg[1]))

-- send_to(user).whoami(seq, delay): the outcome, with its own time
server:register_rpc('call', function(user, seq, delay)
  local t0 = pseud.now()
  local ok, v = pcall(function() return server:send_to(user).whoami(seq, delay):get() end)
  local dt = pseud.now() - t0
  if ok then return { ok = true, value = v, dt = dt } end
  if type(v) == 'table' then
    return { ok = false, error = v.name, message = v.message, dt = dt }
  end
  return { ok = false, error = 'lua', message = tostring(v), dt = dt }
end)

server:register_rpc('peers', function()
  local ids = {}
  for _, p in ipairs(server:peers()) do ids[#ids + 1] = p.user_id end
  return ids
end)

server:register_rpc('info', function()
  local c = server:cluster()
  return { node = c.node, up = c.up, role = pseud.role(), kb = collectgarbage('count') }
end)

if pseud.role() == 'control' then
  local deadline = pseud.now() + 15
  while not server:cluster().up and pseud.now() < deadline do pseud.sleep(0.01) end
  io.stdout:write('ready ', endpoint, ' ', server:cluster().node, ' ', tostring(server:cluster().up), '\n')
  io.stdout:flush()
end
server:start()
io.stderr:write('node exiting normally\n')
