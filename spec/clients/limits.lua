--[[
spec/clients/limits.lua ENDPOINT CASE: calls for limits_spec.lua; prints
result lines, then `done`.
]]
local pseud = require 'pseud'

local client = pseud.Client('service', { timeout = 10 })
assert(client:connect(arg[1]))
client.hello('warm-up'):get()

local function outcome(f)
  local t0 = pseud.now()
  local ok, v = pcall(f.get, f)
  local took = pseud.now() - t0
  if ok then return 'ok', took end
  return v.name, took
end

local cases = {}

function cases.preempted()
  local spin = client.spin(0.8)
  local hellos = {}
  for i = 1, 100 do hellos[i] = client.hello(i) end
  local good = 0
  for i = 1, 100 do if hellos[i]:get() == 'Hello ' .. i then good = good + 1 end end
  local answered_at = spin:done() and 'after the spin' or 'during the spin'
  print(good, answered_at)
  print((outcome(spin)))
end

function cases.time_limit()
  for _, name in ipairs { 'spin_forever', 'spin_in_pcall' } do
    local name_of, took = outcome(client[name]())
    print(name, name_of, took > 0.9 and took < 2.5)
  end
  print(client.hello('after'):get())
end

function cases.memory_limit()
  print((outcome(client.hog())))
  print(client.hello('after'):get())
end

cases[arg[2]]()
print('done')
