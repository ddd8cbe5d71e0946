--[[
spec/servers/auth.lua BACKEND ARGS... : the server of auth_spec.lua.
  plain FILE                 credentials_file FILE
  trusted_curve KEY ALLOW    keypair KEY(.key, .key_secret), allow_list ALLOW
  untrusted_curve KEY FILE   keypair KEY, credentials_file FILE
Prints `ready <endpoint>`; every handler run prints `handled <user_id>`.
  whoami()     the caller's user id
  ask(user)    send_to(user).whoami(): what that client says it is
]]
local pseud = require 'pseud'

local backend = arg[1]
local opts = { security_plugin = backend, timeout = 3 }
if backend == 'plain' then
  opts.credentials_file = arg[2]
elseif backend == 'untrusted_curve' then
  opts.public_key, opts.secret_key = pseud.load_keypair(arg[2])
  opts.credentials_file = arg[3]
else
  opts.public_key, opts.secret_key = pseud.load_keypair(arg[2])
  opts.allow_list = arg[3]
end
local server = pseud.Server('service', opts)
local endpoint = assert(server:bind('tcp://127.0.0.1:*'))

local function handled()
  local user = pseud.caller()
  io.stdout:write('handled ', user, '\n')
  io.stdout:flush()
  return user
end

server:register_rpc('whoami', function() return handled() end)
server:register_rpc('ask', function(user)
  handled()
  return server:send_to(user).whoami():get()
end)

io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()
server:start()
