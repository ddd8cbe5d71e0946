--[[
spec/servers/metrics.lua: the pseud-lua process metrics_spec.lua scrapes.

  pseud-lua [--metrics ADDRESS] spec/servers/metrics.lua METRICS|-

Three servers in one process, all with `metrics = METRICS` (`-`: no
option; --metrics on the command line then serves them): 'svc' (hello,
fail, a name that needs escaping), 'tight' (max_peer_queue = 1: a second
call while `slow` runs is refused BusyError) and 'auth' (PLAIN, alice's
password is 'wonderland'). Prints `ready SVC TIGHT AUTH` (their endpoints),
then serves until SIGTERM.
]]
local pseud = require 'pseud'

local metrics = arg[1] ~= '-' and arg[1] or nil

local svc = pseud.Server('svc', { metrics = metrics })
local svc_at = assert(svc:bind('tcp://127.0.0.1:*'))
svc:register_rpc('hello', function(name) return 'hello ' .. name end)
svc:register_rpc('fail', function() error(pseud.error('ValueError', 'bad input')) end)
svc:register_rpc('say "hi"\\\n', function() return 'odd' end)

local tight = pseud.Server('tight', { metrics = metrics, max_peer_queue = 1 })
local tight_at = assert(tight:bind('tcp://127.0.0.1:*'))
tight:register_rpc('slow', function() pseud.sleep(0.2) return 'slow' end)

local auth = pseud.Server('auth', { metrics = metrics, security_plugin = 'plain',
  credentials = function(login, password) return login == 'alice' and password == 'wonderland' end })
local auth_at = assert(auth:bind('tcp://127.0.0.1:*'))
auth:register_rpc('whoami', function() return (pseud.caller()) end)

print(('ready %s %s %s'):format(svc_at, tight_at, auth_at))
io.stdout:flush()
svc:start()
