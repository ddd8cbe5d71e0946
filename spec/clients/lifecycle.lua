--[[
spec/clients/lifecycle.lua ENDPOINT CASE [ARG]: calls for lifecycle_spec.lua;
prints result lines, then `done`.
]]
local pseud = require 'pseud'
local core = require 'pseud.core'

local endpoint = arg[1]
local client = pseud.Client('service', { timeout = 10 })
assert(client:connect(endpoint))

local function outcome(f)
  local ok, v = pcall(f.get, f)
  if ok then return 'ok', '' end
  return v.name, v.message
end

local cases = {}

-- two calls that are still running when the server is told to stop
function cases.stop()
  local forever, spin = client.forever(), client.spin()
  client.hello('x'):get()            -- answered after both handlers started
  print('started')
  io.stdout:flush()
  print('forever', outcome(forever))
  print('spin', outcome(spin))
end

-- five calls still sleeping (0.6 s) when the server is told to stop
function cases.naps()
  local naps = {}
  for i = 1, 5 do naps[i] = client.sleep(0.6) end
  client.hello('x'):get()            -- answered after they started
  print('started')
  io.stdout:flush()
  local ok = 0
  for i = 1, 5 do if outcome(naps[i]) == 'ok' then ok = ok + 1 end end
  print('answered', ok)
end

-- a call nobody waits for, made just before the script ends
function cases.fire()
  client.note(arg[3])
end

function cases.notes()
  print(table.concat(client.notes():get(), ','))
end

function cases.fail()
  print(outcome(client.fail()))
end

-- 10,000 calls ending every way a call ends; afterwards the counts of both
-- sides are back where they started
function cases.leak()
  local fast = pseud.Client('service', { timeout = 0.05 })
  assert(fast:connect(endpoint))
  fast.hello('warm-up'):get()
  local function settled_server(base)
    local deadline = pseud.now() + 10
    repeat
      local c = client.counts():get()
      if c.answering == base.answering and c.tasks == base.tasks then return c end
      pseud.sleep(0.02)
    until pseud.now() > deadline
    return client.counts():get()
  end
  local function await_naps(done)
    local deadline = pseud.now() + 10
    local n = client.napping():get()
    while not done(n) and pseud.now() < deadline do
      pseud.sleep(0.01)
      n = client.napping():get()
    end
    assert(done(n), 'naps in progress: ' .. n)
  end
  local server0 = client.counts():get()
  local client0 = core.counts()
  local tally = {}
  for _ = 1, 10 do
    local fs = {}
    for i = 1, 250 do fs[#fs + 1] = client.hello(i) end          -- OK
    for _ = 1, 250 do fs[#fs + 1] = client.fail() end            -- ERROR
    for _ = 1, 250 do fs[#fs + 1] = fast.sleep(0.1) end          -- timeout
    -- the caller goes away with 100 calls running (max_peer_calls) and
    -- 150 waiting their turn on the server
    await_naps(function(n) return n == 0 end)
    local gone = pseud.Client('service', { timeout = 5 })
    assert(gone:connect(endpoint))
    for _ = 1, 250 do fs[#fs + 1] = gone.nap(0.3) end
    await_naps(function(n) return n == 100 end)
    gone:close()
    for _, f in ipairs(fs) do
      local name = outcome(f)
      tally[name] = (tally[name] or 0) + 1
    end
  end
  local names = {}
  for name, n in pairs(tally) do names[#names + 1] = name .. '=' .. n end
  table.sort(names)
  print(table.concat(names, ' '))
  local server1 = settled_server(server0)
  local client1 = core.counts()
  -- timers may be fewer than at the start (an expiry timer armed then), never more
  local function same(k, a, b) return (k == 'timers' and b <= a or a == b) or (a .. ' -> ' .. b) end
  for _, k in ipairs { 'tasks', 'answering', 'pending_calls', 'timers', 'registry' } do
    print('server', k, same(k, server0[k], server1[k]))
  end
  for _, k in ipairs { 'tasks', 'answering', 'pending_calls', 'timers', 'registry' } do
    print('client', k, same(k, client0[k], client1[k]))
  end
end

cases[arg[2]]()
print('done')
