-- bench/echo_server.lua — pseud-lua's side of scripts/bench.
--
-- The same two callables as bench_echo_c (bench/echo_server.c), served by
-- the public Lua API, so the gap between the two is what the host costs:
--   hello(name) -> 'Hello ' .. name      echo(x) -> x
-- Usage: pseud-lua bench/echo_server.lua [ENDPOINT]   (default tcp://127.0.0.1:*)
-- Prints "ready <actual endpoint>" once bound; runs until SIGTERM or SIGINT.

local pseud = require 'pseud'

-- PSEUD_BENCH_HEARTBEAT="interval timeout" turns the built-in heartbeat
-- backend on, to measure what it costs and to expire churned peers.
local interval, timeout = (os.getenv('PSEUD_BENCH_HEARTBEAT') or ''):match('^(%S+)%s+(%S+)$')
-- PSEUD_BENCH_CURVE="public secret" (Z85) makes it a trusted_curve server
-- that lets every client key in, as user 'bench-client' (beside the C echo
-- with BENCH_CURVE_SECRET).
local public, secret = (os.getenv('PSEUD_BENCH_CURVE') or ''):match('^(%S+)%s+(%S+)$')
local options = {}
if interval then
  options.heartbeat_plugin = 'heartbeat'
  options.heartbeat_interval, options.heartbeat_timeout = tonumber(interval), tonumber(timeout)
end
if public then
  options.security_plugin = 'trusted_curve'
  options.public_key, options.secret_key = public, secret
  options.allow = function() return 'bench-client' end
end
local server = pseud.Server('bench', options)
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))

server:register_rpc('hello', function(name) return 'Hello ' .. name end)
server:register_rpc('echo', function(x) return x end)
server:register_rpc('peer_count', function() return #server:peers() end)

-- scripts/bench reads this line to learn the port it may connect to.
io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()

server:start()
