-- Calls for logs_spec: pseud-lua spec/clients/logs.lua ENDPOINT CASE [LOGIN PASSWORD]
-- Prints one line per call (OK value, or the error class), then 'done'.
local pseud = require 'pseud'

local endpoint, case, login, password = arg[1], arg[2], arg[3], arg[4]
local opts = { timeout = 5 }
if login then
  opts.security_plugin = 'plain'
  opts.user_id, opts.password = login, password
end
local client = pseud.Client('logs', opts)
assert(client:connect(endpoint))

local function show(f)
  local ok, v = pcall(f.get, f)
  print(ok and tostring(v) or (pseud.is_error(v) and v.name or tostring(v)))
end

if case == 'calls' then
  show(client.hello('Charly'))
  show(client.fail())
  show(client.no.such.name())
  show(client.guarded())
elseif case == 'say' then
  show(client.say('info', 'info from a handler'))
  show(client.say('debug', 'debug from a handler'))
  show(client.say('warn', 'warn from a handler'))
elseif case == 'hello' then
  show(client.hello('Charly'))
end
print('done')
