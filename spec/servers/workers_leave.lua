--[==[
spec/servers/workers_leave.lua: worker 2 leaves slowly, run with --workers 2
by workers_spec.lua. max_peer_calls = 1: a call the control never hears
the end of holds its peer's only slot.

  pseud-lua --workers 2 spec/servers/workers_leave.lua ENDPOINT MODE

MODE 'guard': worker 2's script computes for 1 s, then returns without
serving (a role guard after a slow setup). MODE 'nap': worker 2's script
sleeps 1 s (the loop runs; no WORK comes before its start()), then returns. MODE 'none':
no worker leaves early. MODE 'spin': worker 2's script computes at its
top level for good (it never serves, never ends). MODE 'slow': it computes
7 s at its top level (past the 5 s the threads get after the drain), then serves. MODE 'exit': worker 2 serves,
and after its start() returns (the stop) computes for 1 s before its
thread ends. Calls the control handed it meanwhile must not be lost.
Prints `ready <endpoint>` (from the control), serves 'service'.
]==]
local pseud = require 'pseud'

local mode = arg[2]
local server = pseud.Server('service', { max_peer_calls = 1, stop_timeout = 5 })
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

server:register_rpc('wid', function() return pseud.worker_id() end)
server:register_rpc('sleep', function(s) pseud.sleep(s) return pseud.worker_id() end)

local function compute(seconds)
  local t0 = os.clock()
  while os.clock() - t0 < seconds do end
end

if mode == 'guard' and pseud.worker_id() == 2 then
  compute(1)
  return
end
if mode == 'spin' and pseud.worker_id() == 2 then compute(math.huge) end
if mode == 'slow' and pseud.worker_id() == 2 then compute(7) end
if mode == 'nap' and pseud.worker_id() == 2 then  -- runs the loop, then returns
  pseud.sleep(1)
  return
end
if pseud.role() == 'control' then
  io.stdout:write('ready ', tostring(endpoint), '\n')
  io.stdout:flush()
end
server:start()
if mode == 'exit' and pseud.worker_id() == 2 then compute(1) end
