--[[
spec/clients/auth.lua ENDPOINT BACKEND CREDS... -- CASE [ARG]
  plain USER PASSWORD [IDENTITY]
  trusted_curve KEY SERVERKEY
  untrusted_curve KEY SERVERKEY USER PASSWORD
Cases: whoami (print the answer or the error name), serve NAME (print
`ready`, answer whoami with NAME until stopped), ask USER.
]]
local pseud = require 'pseud'

local endpoint, backend = arg[1], arg[2]
local opts = { security_plugin = backend, timeout = 1.5 }
local i
if backend == 'plain' then
  opts.user_id, opts.password = arg[3], arg[4]
  if arg[5] ~= '--' then opts.identity = arg[5]; i = 6 else i = 5 end
else
  opts.public_key, opts.secret_key = pseud.load_keypair(arg[3])
  opts.peer_public_key = pseud.load_keypair(arg[4])
  i = 5
  if backend == 'untrusted_curve' then
    opts.user_id, opts.password, opts.max_retries = arg[5], arg[6], 2
    i = 7
  end
end
assert(arg[i] == '--', 'usage')
local case, carg = arg[i + 1], arg[i + 2]

local client = pseud.Client('service', opts)
assert(client:connect(endpoint))

local function try(f)
  local ok, v = pcall(f)
  return ok and tostring(v) or v.name
end

if case == 'whoami' then
  print(try(function() return client.whoami():get() end))
elseif case == 'serve' then
  client:register_rpc('whoami', function() return carg end)
  print(try(function() return client.whoami():get() end) and 'ready')
  io.stdout:flush()
  client:start()
elseif case == 'ask' then
  print(try(function() return client.ask(carg):get() end))
end
