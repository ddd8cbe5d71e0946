-- The seed's "Heartbeating": a heartbeat backend of our own that logs peers
-- joining and leaving, and a who() call that lists the live ones.
-- Run: pseud-lua examples/heartbeat_server.lua [ENDPOINT]
--      pseud-lua examples/heartbeat_client.lua [ENDPOINT] [NAME]
local pseud = require 'pseud'

local live = {}

pseud.register_heartbeat_backend {
  name = 'my_heartbeat_backend',
  side = 'server',
  interval = 1,         -- seconds between the HEARTBEATs this side sends
  timeout = 3,          -- silence after which a peer is gone

  configure = function(self, rpc) self.server = rpc end,
  -- every message from a peer counts as a heartbeat
  handle_heartbeat = function(_, user_id)
    if not live[user_id] then
      live[user_id] = true
      print('joined: ' .. user_id)
      io.stdout:flush()
    end
  end,
  handle_timeout = function(_, user_id)
    live[user_id] = nil
    print('gone:   ' .. user_id)
    io.stdout:flush()
  end,
  stop = function() end,
}

local server = pseud.Server('service', { heartbeat_plugin = 'my_heartbeat_backend' })
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:5555'))

server:register_rpc('who', function()
  local ids = {}
  for _, p in ipairs(server:peers()) do ids[#ids + 1] = p.user_id end
  table.sort(ids)
  return ids
end)

print('heartbeat server listening on ' .. endpoint .. ' (Ctrl-C stops it)')
io.stdout:flush()
server:start()
