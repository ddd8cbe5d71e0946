-- bench/workers_server.lua — scripts/bench-workers' server.
--
-- hello(name) -> 'Hello ' .. name, as bench/echo_server.lua, after
-- PSEUD_BENCH_ITERATIONS rounds of a small arithmetic loop (default 0: the
-- trivial handler). scripts/bench-workers measures once, in a process of
-- its own and in CPU time, how many rounds take 50 µs, and passes that
-- count to every run: each state timing itself at start would count the
-- others' start on a shared machine, and the work would differ per run.
-- Usage: pseud-lua [--workers N] bench/workers_server.lua [ENDPOINT]
-- Prints "ready <actual endpoint>" (the control) once bound.
--        pseud-lua bench/workers_server.lua --calibrate US
-- prints the rounds that take about US microseconds of CPU.

local pseud = require 'pseud'

local function spin(n)
  local x = 0
  for i = 1, n do x = x + (i * 7) % 13 end
  return x
end

if arg[1] == '--calibrate' then
  local n, t0 = 0, os.clock()
  repeat spin(10000); n = n + 10000 until os.clock() - t0 > 0.3
  print(math.floor(tonumber(arg[2]) * n / ((os.clock() - t0) * 1e6)))
  os.exit(0)
end

local iterations = tonumber(os.getenv('PSEUD_BENCH_ITERATIONS') or '0') or 0

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
