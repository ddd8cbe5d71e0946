--[==[
spec/clients/workers.lua ENDPOINT CASE [ARG]: what workers_spec.lua asks
of a server started with --workers 2 (spec/servers/workers.lua). Prints
result lines, then `done`.
Cases:
  whoami N      N calls one after the other: `role R worker W` each
  spin          spin(3) in one worker while 20 calls go one after the
                other: `spin_error NAME`, `others W...`, `max_ms MS`
  blocked       block(2.5) holds one worker in a C call; nap(0.9) goes to
                the other; 0.3 s into the block, whoami: `block W`,
                `probe W MS` (the worker that answered it, and when)
  held N        hold() in one worker while N whoami go one after the
                other; once it ends, two hold() at once: `held W` (the
                held call's worker), `during W...` (who answered the N),
                `after W...` (the two holds' workers)
  callback      send_to from a worker's handler back to this client, and
                a worker's client calling through the control's, and
                peers() from a worker: `callback W ANSWER`,
                `via_client W ANSWER`, `peers W IDS`
  many N K      K clients, N calls each, all in flight at once: `ok O`,
                `wrong X`, `failed F`, `workers W...`
  byuser K N    K clients with their own user ids, N calls each in flight:
                one line `user U workers W...` per client
  closed        (spec/servers/workers_close.lua) close_self, then
                close_then_fail, then hello on one connection (timeout
                2 s): `NAME OUTCOME` each, OUTCOME ok or the error's name
  guard         (spec/servers/workers_leave.lua guard) bob's sleep(0.3)
                keeps worker 1 busy, alice's wid goes elsewhere while
                worker 2's script sets up; then 3 more of alice's: `first O`,
                `later O O O` (O: ok or the error's name; timeout 3 s)
  nap           (spec/servers/workers_leave.lua nap) bob's sleep(0.3)
                keeps worker 1 busy, alice's sleep(3) goes there too
                (worker 2's script never serves: it returns at 1 s); then
                alice's wid: `long O`,
                `after O`
  stuck         (spec/servers/workers_leave.lua spin) 20 calls in flight
                on one connection: `answered N`
  twice PID     (spec/servers/workers_leave.lua none) a sleep(3) runs in a
                worker, the server is sent SIGTERM twice: `long O`
  twins E2      (spec/servers/workers_twins.lua) `which` on ENDPOINT, then
                on E2: `which ANSWER` each
  stopping PID  (spec/servers/workers_leave.lua exit) a sleep(1.5) runs in
                worker 1, the server is sent SIGTERM, then 10 more clients
                make a call each while the stop drains: `long O`, then
                `during O N` per outcome, sorted, then `ran in IDS` (the
                worker ids, 0 the control, that answered them)
]==]
local pseud = require 'pseud'

local endpoint, case = arg[1], arg[2]

-- a client of 'service' at `at` (default: ENDPOINT), timeout 10 s unless given
local function client(identity, timeout, at)
  local c = pseud.Client('service', { identity = identity, timeout = timeout or 10 })
  assert(c:connect(at or endpoint))
  return c
end

-- SIGTERM to the server (its PID is the case's third argument)
local function sigterm()
  os.execute('kill -TERM ' .. arg[3])
end

-- 'ok', or the error's name
local function outcome(f)
  local ok, v = pcall(f.get, f)
  return ok and 'ok' or v.name
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return table.concat(keys, ' ')
end

if case == 'whoami' then
  local c = client()
  for _ = 1, tonumber(arg[3]) do
    local r = c.whoami():get()
    print(('role %s worker %d'):format(r.role, r.worker))
  end
elseif case == 'spin' then
  local c = client()
  local spinning = c.spin(3)                   -- max_handler_time = 1 stops it
  local others, max = {}, 0
  for _ = 1, 20 do
    local t0 = pseud.now()
    local r = c.whoami():get()
    local dt = pseud.now() - t0
    if dt > max then max = dt end
    others[r.worker] = true
  end
  local ok, err = pcall(spinning.get, spinning)
  print('spin_error ' .. (ok and 'none' or tostring(err.name)))
  print('others ' .. sorted_keys(others))
  print(('max_ms %d'):format(math.ceil(max * 1000)))
elseif case == 'blocked' then
  local mark = os.tmpname()
  os.remove(mark)
  local blocking = client('blocker').block(2.5, mark)
  local deadline = pseud.now() + 5
  while not io.open(mark) and pseud.now() < deadline do pseud.sleep(0.01) end   -- the block began
  local started = pseud.now()
  local napping = client('napper').nap(0.9)    -- the other worker: the fewer calls in flight
  -- a worker counts as stuck once its loop has been away from poll 0.1 s
  pseud.sleep(0.3 - (pseud.now() - started))
  local t0 = pseud.now()
  local r = client('prober').whoami():get()
  local ms = math.ceil((pseud.now() - t0) * 1000)
  local ok, w = pcall(blocking.get, blocking)
  print('block ' .. (ok and tostring(w) or tostring(w.name)))
  napping:get()
  print(('probe %d %d'):format(r.worker, ms))
  os.remove(mark)
elseif case == 'held' then
  -- a fresh path for hold(), and its release: the file made
  local function mark()
    local path = os.tmpname()
    os.remove(path)
    return path
  end
  local function release(path) assert(io.open(path, 'w')):close() end
  local c = client()
  local first = mark()
  local held = c.hold(first)                   -- in flight: 1 on its worker, 0 on the other
  local during = {}
  for _ = 1, tonumber(arg[3]) do during[c.whoami():get().worker] = true end
  release(first)
  local ok, w = pcall(held.get, held)
  print('held ' .. (ok and tostring(w) or tostring(w.name)))
  print('during ' .. sorted_keys(during))
  local second = mark()
  local both = { c.hold(second), c.hold(second) }   -- the second goes where the first is not
  release(second)
  local after = {}
  for _, f in ipairs(both) do
    ok, w = pcall(f.get, f)
    after[ok and tostring(w) or tostring(w.name)] = true
  end
  print('after ' .. sorted_keys(after))
  os.remove(first)
  os.remove(second)
elseif case == 'callback' then
  local c = client('cb-client')
  c:register_rpc('double', function(x) return 2 * x end)
  local r = c.call_back('cb-client', 21):get()
  print(('callback %d %s'):format(r.worker, tostring(r.answer)))
  local v = c.via_client('Charly'):get()
  print(('via_client %d %s'):format(v.worker, v.answer))
  local p = c:call('peers'):get()
  print(('peers %d %s'):format(p.worker, table.concat(p.peers, ',')))
elseif case == 'many' then
  local n, k = tonumber(arg[3]), tonumber(arg[4])
  local clients, futures = {}, {}
  for i = 1, k do clients[i] = client('many-' .. i) end
  for j = 1, n do
    for i = 1, k do futures[#futures + 1] = { i * 100000 + j, clients[i].whoami_echo(i * 100000 + j) } end
  end
  local ok, wrong, failed, workers = 0, 0, 0, {}
  for _, f in ipairs(futures) do
    local good, r = pcall(f[2].get, f[2])
    if not good then failed = failed + 1
    elseif r.echo ~= f[1] then wrong = wrong + 1
    else ok = ok + 1; workers[r.worker] = true end
  end
  print('ok ' .. ok)
  print('wrong ' .. wrong)
  print('failed ' .. failed)
  print('workers ' .. sorted_keys(workers))
elseif case == 'byuser' then
  local k, n = tonumber(arg[3]), tonumber(arg[4])
  local per = {}
  for i = 1, k do
    local c = client('user-' .. i)
    per[i] = {}
    for _ = 1, n do per[i][#per[i] + 1] = c.whoami() end
  end
  for i = 1, k do
    local seen = {}
    for _, f in ipairs(per[i]) do seen[f:get().worker] = true end
    print(('user user-%d workers %s'):format(i, sorted_keys(seen)))
  end
elseif case == 'closed' then
  local c = client(nil, 2)
  for _, name in ipairs { 'close_self', 'close_then_fail', 'hello' } do
    local ok, v = pcall(function() return c[name]('x'):get() end)
    print(name .. ' ' .. (ok and 'ok' or v.name))
  end
elseif case == 'guard' then
  local bob, alice = client(nil, 3), client(nil, 3)
  local busy = bob.sleep(0.3)
  pseud.sleep(0.05)
  print('first ' .. outcome(alice.wid()))
  outcome(busy)
  pseud.sleep(1.2)                                    -- worker 2's script has ended by now
  local later = {}
  for i = 1, 3 do later[i] = outcome(alice.wid()) end
  print('later ' .. table.concat(later, ' '))
elseif case == 'stuck' then
  local c = client(nil, 3)
  local got = {}
  for i = 1, 20 do got[i] = c.wid() end
  local ok = 0
  for i = 1, 20 do if outcome(got[i]) == 'ok' then ok = ok + 1 end end
  print('answered ' .. ok)
elseif case == 'nap' then
  local bob, alice = client(nil, 5), client(nil, 5)
  local busy = bob.sleep(0.3)
  pseud.sleep(0.05)
  print('long ' .. outcome(alice.sleep(3)))
  outcome(busy)
  print('after ' .. outcome(alice.wid()))
elseif case == 'twice' then
  local long = client(nil, 5).sleep(3)
  pseud.sleep(0.2)
  sigterm()
  pseud.sleep(0.1)
  sigterm()                                           -- a stop cut short
  print('long ' .. outcome(long))
elseif case == 'twins' then
  for _, e in ipairs { endpoint, arg[3] } do
    print('which ' .. client(nil, 3, e).which():get())
  end
elseif case == 'stopping' then
  local long = client(nil, 5).sleep(1.5)
  pseud.sleep(0.2)
  sigterm()
  pseud.sleep(0.2)                                    -- the stop drains; worker 2 leaves slowly
  local fs = {}
  for i = 1, 10 do                                    -- a connection each: all admitted
    fs[i] = client(nil, 3).wid()
  end
  local counts, ran = {}, {}
  for i = 1, 10 do
    local ok, v = pcall(fs[i].get, fs[i])
    local o = ok and 'ok' or v.name
    counts[o] = (counts[o] or 0) + 1
    if ok then ran[v] = true end
  end
  print('long ' .. outcome(long))
  local names = {}
  for name in pairs(counts) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do print(('during %s %d'):format(name, counts[name])) end
  print('ran in ' .. sorted_keys(ran))
else
  error('unknown case ' .. tostring(case))
end
print('done')
