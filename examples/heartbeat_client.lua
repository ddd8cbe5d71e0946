-- A client with the built-in `heartbeat` backend: it tells the server it is
-- alive every second, asks who is there, and goes (the server then sees it
-- leave after its timeout).
local pseud = require 'pseud'

local client = pseud.Client('service', {
  identity = arg[2] or 'client',
  heartbeat_plugin = 'heartbeat', heartbeat_interval = 1, heartbeat_timeout = 3,
})
client:connect(arg[1] or 'tcp://127.0.0.1:5555')

print('live peers: ' .. table.concat(client.who():get(), ', '))
