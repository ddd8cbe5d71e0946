-- The client side of auth_curve_server.lua: its own keypair, and the
-- server's public key to check it is talking to the right server.
local pseud = require 'pseud'

local dir = arg[2] or '.'
local public, secret = pseud.load_keypair(dir .. '/alice.key')
local server_public = pseud.load_keypair(dir .. '/server.key')

local client = pseud.Client('service', {
  security_plugin = 'trusted_curve',
  public_key = public, secret_key = secret, peer_public_key = server_public, timeout = 2,
})
client:connect(arg[1] or 'tcp://127.0.0.1:5555')
print(client.whoami():get())
