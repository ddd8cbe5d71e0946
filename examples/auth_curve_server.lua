-- CURVE with trusted client keys. Make the keys first:
--   pseud-lua keygen server && pseud-lua keygen alice
--   echo "alice $(cat alice.key)" > allow_list
-- Run: pseud-lua examples/auth_curve_server.lua [ENDPOINT] [KEYDIR]
--      pseud-lua examples/auth_curve_client.lua [ENDPOINT] [KEYDIR]
local pseud = require 'pseud'

local dir = arg[2] or '.'
local public, secret = pseud.load_keypair(dir .. '/server.key')

local server = pseud.Server('service', {
  security_plugin = 'trusted_curve',
  public_key = public, secret_key = secret,
  allow_list = dir .. '/allow_list',        -- lines: user_id Z85-public-key
})
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:5555'))

server:register_rpc('whoami', function()
  return 'you are ' .. pseud.caller()
end)

print('CURVE server listening on ' .. endpoint .. ' (Ctrl-C stops it)')
io.stdout:flush()
server:start()
