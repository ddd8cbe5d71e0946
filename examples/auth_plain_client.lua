-- The client side of auth_plain_server.lua. A wrong password never gets a
-- handshake: the call fails at once with UnauthorizedError "handshake
-- refused by server" and the server logs the refusal.
local pseud = require 'pseud'

local client = pseud.Client('service', {
  security_plugin = 'plain', user_id = 'alice', password = 'wonderland', timeout = 2,
})
client:connect(arg[1] or 'tcp://127.0.0.1:5555')
print(client.whoami():get())
