--[[
spec/clients/heartbeat.lua ENDPOINT IDENTITY INTERVAL TIMEOUT [CASE]: a client
with the `heartbeat` backend. Without CASE: says hello, prints `ready`,
serves sleep(s) until killed. Cases print lines, then `done`.
]]
local pseud = require 'pseud'

local endpoint, identity, interval, timeout, case = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]), arg[5]
local client = pseud.Client('service', { identity = identity, timeout = 10, heartbeat_plugin = 'heartbeat',
  heartbeat_interval = interval, heartbeat_timeout = timeout })
assert(client:connect(endpoint))
client:register_rpc('sleep', function(s) pseud.sleep(s); return s end)

local function say(...)
  local t = table.pack(...)
  for i = 1, t.n do
    t[i] = type(t[i]) == 'table' and table.concat(t[i], '\t') or tostring(t[i])
  end
  io.stdout:write(table.concat(t, '\t', 1, t.n), '\n')
  io.stdout:flush()
end

if not case then
  client.hello('x'):get()
  say('ready')
  client:start()
elseif case == 'spin_and_hello' then
  local spin = client.spin(3)
  local hellos = {}
  for i = 1, 100 do hellos[i] = client.hello(i) end
  local good = 0
  for i = 1, 100 do if hellos[i]:get() == 'Hello ' .. i then good = good + 1 end end
  say(good, spin:done() and 'after' or 'during')
  say(spin:get())
elseif case == 'server_dies' then
  -- the spec kills the server after `waiting`; the pending call must end
  -- with PeerLostError within the heartbeat timeout, not the call timeout
  client.hello('x'):get()
  local f = client.spin(30)
  say('waiting')
  local t0 = pseud.now()
  local ok, e = pcall(f.get, f)
  say(ok and 'ok' or e.name, pseud.now() - t0 < timeout + interval + 1)
  -- a new server on the same endpoint: works again (the spec starts it)
  say(client.hello('again'):get())
else
  local args = {}
  for i = 6, #arg do args[#args + 1] = tonumber(arg[i]) or arg[i] end
  say(client:call(case, table.unpack(args)):get())
end
say('done')
