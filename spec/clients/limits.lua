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

-- each call: how it ended, and whether at about the 1 s limit
local function at_limit(names)
  for _, name in ipairs(names) do
    local name_of, took = outcome(client[name]())
    print(name, name_of, took > 0.9 and took < 2.5)
  end
  print(client.hello('after'):get())
end

function cases.time_limit() at_limit { 'spin_forever', 'spin_in_pcall' } end

function cases.memory_limit()
  print((outcome(client.hog())))
  print(client.hello('after'):get())
end

-- a misbehaving call, with hello probes while it runs: how it ended, whether
-- it took about the limit, and the slowest probe's latency
local function probed(name, limit, maxwait, ...)
  local t0 = pseud.now()
  local f = client[name](...)
  local worst, n = 0, 0
  while not f:done() and pseud.now() - t0 < 5 do
    local s = pseud.now()
    client.hello(n):get()
    worst = math.max(worst, pseud.now() - s)
    n = n + 1
    pseud.sleep(0.02)
  end
  local took = pseud.now() - t0
  local name_of = outcome(f)
  print(name, name_of, took > 0.8 * limit and took < limit + 1.5, worst < maxwait)
end

-- a handler whose every instruction copies megabytes is stopped at its
-- time limit and preempted within its slice meanwhile
function cases.copies()
  probed('copy_forever', 1, 0.25, 4 << 20)
  probed('rep_forever', 1, 0.25, 1 << 20)
  print(client.hello('after'):get())
end

-- long work without allocating, and a __close copying megabytes
function cases.heavy()
  probed('sort_forever', 1, 0.25)
  probed('collect_forever', 1, 0.25)
  probed('find_forever', 1, 0.25)
  probed('gsub_forever', 1, 0.25)
  probed('concat_forever', 1, 0.25)
  probed('offset_forever', 1, 0.25)
  probed('raising_find_forever', 1, 0.25)
  probed('close_copying', 1, 1.5)         -- a __close cannot yield: stopped, not preempted
  print(client.hello('after'):get())
end

-- killed in tail position: the kill stands (it was answered OK)
function cases.tails() at_limit { 'tail_close', 'tail_load' } end

function cases.sealed()
  probed('spin_in_coroutine', 1, 0.25)      -- max_handler_time; preempted meanwhile
  probed('spin_resumed', 1, 0.25)
  probed('sethook_spin', 1, 0.25)
  probed('loadlib_spin', 1, 0.25)
  probed('require_spin', 1, 0.25)
  probed('bad_tostring', 0.5, 0.25)         -- max_hook_time bounds a __tostring
  probed('slow', 1, 0.25, 3)
  print(client.hello('after'):get())
end

-- replies bounded while they pack: max_message_size (1 MiB here) at the
-- limit and one past it, and a shared-table graph that would pack to 64 MiB
function cases.graph()
  local limit = 1048576
  print(#client.sized(limit - 5):get())     -- str32 header (5 bytes) + body = limit
  print((outcome(client.sized(limit - 4))))
  local t0 = pseud.now()
  local graph = client.graph()
  local s = pseud.now()
  print(client.hello('during'):get(), pseud.now() - s < 0.25)
  print((outcome(graph)), pseud.now() - t0 < 1)
  print(client.hello('after'):get())
end

function cases.spawn()
  print(client.spawn_spin():get())
  local t0, worst = pseud.now(), 0
  for i = 1, 40 do
    local s = pseud.now()
    client.hello(i):get()
    worst = math.max(worst, pseud.now() - s)
    pseud.sleep(0.05)
  end
  print('probes', worst < 0.25, pseud.now() - t0 > 1.5)
  print(client.spawned_outcome():get())
end

-- a predicate that spins: stopped at max_hook_time (0.5 s here) and counted
-- as refusing; hooks run in the loop, so other calls wait that long at most
function cases.predicate()
  local t0 = pseud.now()
  local name_of = outcome(client.guarded())
  local took = pseud.now() - t0
  print('guarded', name_of, took > 0.4 and took < 1.5)
  print(client.hello('after'):get())
end

-- one name under 8 spinning predicates (0.5 s each): the call is refused
-- within two max_hook_time, and so is a describe (TimeoutError), while
-- other callers wait no longer than that
function cases.predicates()
  for _, name in ipairs { 'multi', '_pseud.describe' } do
    local t0 = pseud.now()
    local name_of = outcome(client[name]())
    print(name, name_of, pseud.now() - t0 < 1.3)
  end
  print(client.hello('after'):get())
end

-- what an adversarial review found (each froze the loop before its fix)
function cases.review()
  probed('xpcall_spin', 1, 0.25)      -- a message handler after a kill
  probed('close_spin', 1, 0.25)       -- __close of a killed handler
  probed('close_spin_nested', 1, 0.25) -- the same in a wrapped coroutine
  -- closing a main-chunk coroutine: its __close runs inside coroutine.close,
  -- a C call that cannot yield: stopped at the limit, other callers wait
  probed('close_main', 1, 1.3)
  probed('hog_catch', 1, 0.25)        -- catching MemoryError in a loop
  local t0 = pseud.now()
  local name_of = outcome(client.guarded_xpcall())
  print('guarded_xpcall', name_of, pseud.now() - t0 < 1.5)
  print(client.hello('after'):get())
end

-- a finalizer runs as a task of its own from the loop, soon after the
-- collection: one that spins does not hold the handler whose allocation
-- ran the collection, nor other callers (it is preempted), and is stopped
-- at max_hook_time (0.5 s here; the server logs it)
function cases.finalizers()
  print('gc_runs', client.gc_runs():get())
  local t0 = pseud.now()
  print('gc_spin', client.gc_spin():get(), pseud.now() - t0 < 0.25)
  local worst = 0
  while pseud.now() - t0 < 0.8 do
    local s = pseud.now()
    client.hello('x'):get()
    worst = math.max(worst, pseud.now() - s)
    pseud.sleep(0.02)
  end
  print('probes', worst < 0.25)
  print(client.hello('after'):get())
end

-- 200 spinning tasks from one call: other callers still wait about a slice
function cases.fairness()
  print(client.spawn_many(200):get())
  local worst = 0
  for i = 1, 50 do
    local s = pseud.now()
    client.hello(i):get()
    worst = math.max(worst, pseud.now() - s)
    pseud.sleep(0.02)
  end
  print('probes', worst < 0.25)
end

-- Another peer queues N calls (arg 3, default 300) that each compute just
-- under a slice (9 ms, never preempted): the loop still polls between
-- them, so a fresh caller waits about a slice, not the rest of the queue.
function cases.queue()
  local n = tonumber(arg[3]) or 300
  local flood = pseud.Client('service', { timeout = 60 })
  assert(flood:connect(arg[1]))
  flood.hello('warm-up'):get()
  local calls = {}
  for i = 1, n do calls[i] = flood.spin(0.009) end
  calls[1]:get()                         -- the server is into the queue now
  local s = pseud.now()
  local reply = client.hello('probe'):get()
  local took = pseud.now() - s
  local ok = 0
  for i = 1, n do if outcome(calls[i]) == 'ok' then ok = ok + 1 end end
  print(reply, took < 0.25 or ('%.3f s'):format(took), ok)
end

-- Twelve peers call spin(0.004) in closed loops, each always with one call
-- in flight (so each call goes ahead of the queue's rest, as a probe's
-- does); meanwhile a handler that sleeps 10 ms (woken: behind them) and a
-- peer with two calls in flight (its second behind them) must still be
-- answered: a pass ended early must not leave its tail behind for good.
function cases.crowd()
  local running, started, loops = true, 0, {}
  for i = 1, 12 do
    local c = pseud.Client('service', { timeout = 10 })
    assert(c:connect(arg[1]))
    c.hello('w'):get()
    loops[i] = pseud.spawn(function()
      local n = 0
      while running do
        c.spin(0.004):get()
        n = n + 1
        if n == 1 then started = started + 1 end
      end
      return n
    end)
  end
  while started < 12 do pseud.sleep(0.01) end      -- polls a count, bounded by the client's timeout
  local worst = 0
  for _ = 1, 3 do
    local t0 = pseud.now()
    assert(client.slow(0.01):get() == 'late')
    local a, b = client.hello('a'), client.hello('b')
    assert(a:get() == 'Hello a' and b:get() == 'Hello b')
    worst = math.max(worst, pseud.now() - t0)
  end
  running = false
  for i = 1, 12 do loops[i]:get() end
  print('crowd', worst < 1 or ('%.3f s'):format(worst))
end

-- Another peer queues 300 calls of 20 ms (each preempted once, 6 s in
-- all); then this peer's handler sleeps 10 ms and wakes behind them.
-- 'woken': its call is the peer's only one, so it goes ahead: answered at
-- once. 'deadline': a second call keeps the peer busy, so the woken one
-- waits its turn; its max_handler_time (1 s) must still end it at about
-- 1 s, not when the queue reaches it (6 s).
local function behind_flood(busy)
  local flood = pseud.Client('service', { timeout = 60 })
  assert(flood:connect(arg[1]))
  flood.hello('warm-up'):get()
  local calls = {}
  for i = 1, 300 do calls[i] = flood.spin(0.02) end
  calls[1]:get()
  local mine = client.slow(0.01)
  local other = busy and client.slow(5)                  -- in flight (or queued) throughout
  local name, took = outcome(mine)
  if other then outcome(other) end
  for i = 1, 300 do outcome(calls[i]) end
  return name, took
end

function cases.woken()
  local name, took = behind_flood(false)
  print(name, took < 0.5 or ('%.3f s'):format(took))
end

function cases.deadline()
  local name, took = behind_flood(true)
  print(name, took < 1.5 or ('%.3f s'):format(took))
end

cases[arg[2]]()
print('done')
