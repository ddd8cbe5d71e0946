--[[
spec/clients/hooks.lua ENDPOINT USER: calls as USER (whose hooks spin on the
server) while alice probes every 20 ms; prints USER, the call's outcome and
whether alice's slowest call stayed under 0.7 s, then `done`.
]]
local pseud = require 'pseud'

local endpoint, user = arg[1], arg[2]
local alice = pseud.Client('service', { security_plugin = 'plain', user_id = 'alice',
                                        password = 'x', timeout = 5 })
assert(alice:connect(endpoint))
alice.hello('warm-up'):get()

local victim = pseud.Client('service', { security_plugin = 'plain', user_id = user,
                                         password = 'x', timeout = 3 })
assert(victim:connect(endpoint))
local f = victim.hello(user)
local t0, worst = pseud.now(), 0
while not f:done() and pseud.now() - t0 < 10 do
  local s = pseud.now()
  alice.hello('probe'):get()
  worst = math.max(worst, pseud.now() - s)
  pseud.sleep(0.02)
end
victim:close()
local ok, v = pcall(f.get, f)
print(user, ok and v or v.name, worst < 0.7)
print('done')
