--[[
spec/servers/cluster.lua [ENDPOINT]: one node of cluster_spec.lua, serving
'service' ($PSEUD_SPEC_SERVICE if set) in the cluster whose Redis is at $PSEUD_SPEC_REDIS. Prints
`ready <endpoint> <node id>` once bound and in the cluster.
  call(user, name, args...)  send_to(user)[name](args...) ->
                             {ok = true, value = v} or {ok = false, error = class,
                             message = text, seconds = time taken}
  peers()                    the sorted user ids of rpc:peers()
  call_for(user, name, s)    send_to(user)[name]() again and again for s seconds:
                             {ok = n, failed = n}
  call_each(users, name, k)  send_to(u)[name]() for every user in turn, all in
                             flight at once; the k-th awaited first: its outcome
                             as call() gives it, then the others', counted
                             {ok = n, failed = n}
  node()                     this node's id now (a new one after each re-link)
  up()                       whether its link to Redis is up
  hold(seconds)              'held' after `seconds`, or sooner once release() is called
  release()
]]
local pseud = require 'pseud'

-- a short liveness TTL ($PSEUD_SPEC_TTL if set), so the spec sees a dead or
-- paused node collected soon
-- $PSEUD_SPEC_HEARTBEAT (seconds) switches the heartbeat backend on, with
-- that timeout: a peer's entry then outlives its connection until it lapses
local heartbeat = tonumber(os.getenv('PSEUD_SPEC_HEARTBEAT') or '')
local server = pseud.Server(os.getenv('PSEUD_SPEC_SERVICE') or 'service', {
  heartbeat_plugin = heartbeat and 'heartbeat' or nil, heartbeat_interval = heartbeat and 1 or nil,
  heartbeat_timeout = heartbeat,
  timeout = tonumber(os.getenv('PSEUD_SPEC_TIMEOUT')) or 3,
  cluster = { redis = assert(os.getenv('PSEUD_SPEC_REDIS')), ttl = tonumber(os.getenv('PSEUD_SPEC_TTL')) or 1,
              refresh_interval = 0.25, timeout = 0.75,
              max_forwarded = tonumber(os.getenv('PSEUD_SPEC_MAX_FORWARDED') or '') },
})
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

server:register_rpc('call', function(user, name, ...)
  local t0 = pseud.now()
  local ok, v = pcall(function(...) return server:send_to(user)[name](...):get() end, ...)
  if ok then return { ok = true, value = v } end
  return { ok = false, error = v.name, message = v.message, seconds = pseud.now() - t0 }
end)

server:register_rpc('call_each', function(users, name, k)
  local t0, futures = pseud.now(), {}
  for i, user in ipairs(users) do futures[i] = server:send_to(user)[name]() end
  local function outcome(f)
    local ok, v = pcall(f.get, f)
    if ok then return { ok = true, value = v } end
    return { ok = false, error = v.name, message = v.message, seconds = pseud.now() - t0 }
  end
  local first, rest = outcome(futures[k]), { ok = 0, failed = 0 }
  for i, f in ipairs(futures) do
    if i ~= k then
      local o = outcome(f)
      rest[o.ok and 'ok' or 'failed'] = rest[o.ok and 'ok' or 'failed'] + 1
    end
  end
  return { first = first, rest = rest }
end)

-- call_for(user, name, seconds): send_to(user)[name]() again and again (5 ms
-- apart) for `seconds`; how many ended {ok = n, failed = n}
server:register_rpc('call_for', function(user, name, seconds)
  local counts, deadline = { ok = 0, failed = 0 }, pseud.now() + seconds
  while pseud.now() < deadline do
    local ok = pcall(function() return server:send_to(user)[name]():get() end)
    counts[ok and 'ok' or 'failed'] = counts[ok and 'ok' or 'failed'] + 1
    pseud.sleep(0.005)
  end
  return counts
end)

server:register_rpc('peers', function()
  local ids = {}
  for _, p in ipairs(server:peers()) do ids[#ids + 1] = p.user_id end
  table.sort(ids)
  return ids
end)

server:register_rpc('node', function() return server:cluster().node end)
server:register_rpc('up', function() return server:cluster().up end)

local released = false
server:register_rpc('hold', function(seconds)
  released = false
  local deadline = pseud.now() + seconds
  while not released and pseud.now() < deadline do pseud.sleep(0.02) end
  return 'held'
end)
server:register_rpc('release', function() released = true; return true end)

-- in the cluster before saying ready: a spec's first cross-node call must
-- not meet a link still being made (bounded: the spec's own timeout reads;
-- $PSEUD_SPEC_UP_WAIT seconds if set, 0 for a Redis that never lets it up)
local deadline = pseud.now() + (tonumber(os.getenv('PSEUD_SPEC_UP_WAIT') or '') or 10)
while not server:cluster().up and pseud.now() < deadline do pseud.sleep(0.01) end
io.stdout:write('ready ', endpoint, ' ', server:cluster().node, '\n')
io.stdout:flush()
server:start()
