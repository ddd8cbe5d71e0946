-- PLAIN authentication: logins checked by a function here (or against a
-- credentials file of argon2 hashes made with `pseud-lua passwd FILE LOGIN`:
-- pass `credentials_file = FILE` instead). The accepted login is the
-- caller's user id.
-- Run: pseud-lua examples/auth_plain_server.lua [ENDPOINT]
--      pseud-lua examples/auth_plain_client.lua [ENDPOINT]
local pseud = require 'pseud'

local users = { alice = 'wonderland' }      -- use credentials_file in production

local server = pseud.Server('service', {
  security_plugin = 'plain',
  credentials = function(login, password) return users[login] == password end,
})
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:5555'))

server:register_rpc('whoami', function()
  local user_id = pseud.caller()
  return 'you are ' .. user_id
end)

print('PLAIN server listening on ' .. endpoint .. ' (Ctrl-C stops it)')
io.stdout:flush()
server:start()
