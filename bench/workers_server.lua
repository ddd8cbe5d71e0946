-- bench/workers_server.lua — scripts/bench-workers' server.
--
-- hello(name) -> 'Hello ' .. name, as bench/echo_server.lua, after
-- computing for about PSEUD_BENCH_WORK_US microseconds (default 0: the
-- trivial handler). Each Lua state (the control and every worker) times
-- its own loop once at start, so the work is the same whoever runs it.
-- Usage: pseud-lua [--workers N] bench/workers_server.lua [ENDPOINT]
-- Prints "ready <actual endpoint>" (the control) once bound.

local pseud = require 'pseud'

local work_us = tonumber(os.getenv('PSEUD_BENCH_WORK_US') or '0') or 0

local function spin(n)
  local x = 0
  for i = 1, n do x = x + (i * 7) % 13 end
  return x
end

-- iterations of spin() per microsecond, measured over ~20 ms
local per_us = 0
if work_us > 0 then
  local n, t0 = 0, os.clock()
  repeat spin(10000); n = n + 10000 until os.clock() - t0 > 0.02
  per_us = n / ((os.clock() - t0) * 1e6)
end
local iterations = math.floor(work_us * per_us)

local server = pseud.Server('bench')
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

server:register_rpc('hello', function(name)
  if iterations > 0 then spin(iterations) end
  return 'Hello ' .. name
end)

if pseud.role() == 'control' then
  io.stdout:write('ready ', endpoint, '\n')
  io.stdout:flush()
end
server:start()
