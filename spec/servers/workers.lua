--[==[
spec/servers/workers.lua: the server workers_spec.lua drives.

  pseud-lua --workers N spec/servers/workers.lua [ENDPOINT [WORKER_BY [WORKERS]]]

WORKERS, when given, is the server's `workers` option (instead of --workers).

Prints `ready <endpoint>` (from the control only) once it can be called,
then serves as service 'service' until SIGTERM. Every handler says which
state ran it, so a spec can see where a call went.
]==]
local pseud = require 'pseud'

local server = pseud.Server('service', { max_handler_time = 1,
  worker_by = arg[2] ~= '' and arg[2] or nil, workers = tonumber(arg[3]) })
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

server:register_rpc('whoami', function()
  return { role = pseud.role(), worker = pseud.worker_id() }
end)

server:register_rpc('echo', function(x) return x end)
server:register_rpc('whoami_echo', function(x) return { worker = pseud.worker_id(), echo = x } end)
server:register_rpc('hello', function(name) return 'Hello ' .. name end)

-- Creates the file at `path`, then holds its whole worker `seconds` in a
-- blocking C call (what no hook can cut), then says which worker it was.
server:register_rpc('block', function(seconds, path)
  os.execute(('touch %q && sleep %s'):format(path, tonumber(seconds)))
  return pseud.worker_id()
end)
-- Waits `seconds` (its worker's loop goes on meanwhile).
server:register_rpc('nap', function(seconds)
  pseud.sleep(seconds)
  return pseud.worker_id()
end)

-- Waits (its worker's loop goes on) until a file exists at `path`, then
-- says which worker it was: the caller makes the file to release it, a
-- flag every worker's state sees (max_handler_time bounds the wait).
local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end
server:register_rpc('hold', function(path)
  while not exists(path) do pseud.sleep(0.01) end
  return pseud.worker_id()
end)

-- Busy for `seconds` without yielding (a preempted handler: the count hook
-- slices it, max_handler_time stops it).
server:register_rpc('spin', function(seconds)
  local t0 = pseud.now()
  while pseud.now() - t0 < seconds do end
  return pseud.worker_id()
end)

-- A call back to a connected client, from whatever state runs this.
server:register_rpc('call_back', function(user, x)
  return { worker = pseud.worker_id(), answer = server:send_to(user).double(x):get() }
end)

-- A client of this very server: in a worker it is a proxy, and its calls
-- go through the control's client of the same name.
local loopback = pseud.Client('service', { identity = 'loopback-client' })
assert(loopback:connect(endpoint))
server:register_rpc('via_client', function(name)
  return { worker = pseud.worker_id(), answer = loopback.hello(name):get() }
end)

-- pseud.reload() from a handler: refused as SIGHUP is (it reloaded the
-- worker it ran in alone: an attack round)
server:register_rpc('reload', function() return { pseud.reload() } end)

server:register_rpc('peers', function()
  local ids = {}
  for _, p in ipairs(server:peers()) do ids[#ids + 1] = p.user_id end
  table.sort(ids)
  return { worker = pseud.worker_id(), peers = ids }
end)

io.stdout:write(('role %s %d\n'):format(pseud.role(), pseud.worker_id()))
if pseud.role() == 'control' then io.stdout:write('ready ', tostring(endpoint), '\n') end
io.stdout:flush()
server:start()
