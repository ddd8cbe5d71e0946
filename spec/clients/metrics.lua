--[[
spec/clients/metrics.lua ENDPOINT SERVICE CASE [ARG]: the calls
metrics_spec.lua counts. Prints one line per call: the value, or the
error's class name; then `done`.
  calls          hello, fail, nope (unknown), the name that needs escaping
  busy           slow and slow again at once: the second is refused (BusyError)
  unknown N      N distinct unknown names at once
  login USER PW  whoami over PLAIN (timeout 0.5 s)
  limits         spin (stopped by its time limit), hog (by its memory limit),
                 guarded (its predicate stopped by max_hook_time)
]]
local pseud = require 'pseud'

local endpoint, service, case = arg[1], arg[2], arg[3]
local opts = { timeout = 5 }
if case == 'login' then
  opts = { timeout = 0.5, security_plugin = 'plain', user_id = arg[4], password = arg[5] }
end
local client = pseud.Client(service, opts)
assert(client:connect(endpoint))

local function show(f)
  local ok, v = pcall(f.get, f)
  print(ok and tostring(v) or v.name)
end

if case == 'calls' then
  show(client.hello('you'))
  show(client.fail())
  show(client.nope())
  show(client:call('say "hi"\\\n'))
elseif case == 'alike' then
  for _, name in ipairs { 'a\xff', 'a\xfe', 'a\u{FFFD}' } do show(client:call(name)) end
elseif case == 'busy' then
  local first, second = client.slow(), client.slow()
  show(first)
  show(second)
elseif case == 'unknown' then
  local futures = {}
  for i = 1, tonumber(arg[4]) do futures[i] = client:call('unknown.' .. i) end
  local counts = {}
  for _, f in ipairs(futures) do
    local ok, v = pcall(f.get, f)
    local k = ok and 'ok' or v.name
    counts[k] = (counts[k] or 0) + 1
  end
  for k, n in pairs(counts) do print(k .. ' ' .. n) end
elseif case == 'login' then
  show(client.whoami())
elseif case == 'limits' then
  show(client.spin())
  show(client.hog())
  show(client.guarded())
end
print('done')
