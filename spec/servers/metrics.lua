--[[
spec/servers/metrics.lua: the pseud-lua process metrics_spec.lua scrapes.

  pseud-lua [--metrics ADDRESS] spec/servers/metrics.lua METRICS|-

Four servers in one process, all with `metrics = METRICS` (`-`: no
option; --metrics on the command line then serves them): 'svc' (hello,
fail, a name that needs escaping), 'tight' (max_peer_queue = 1: a second
call while `slow` runs is refused BusyError), 'auth' (PLAIN, alice's
password is 'wonderland') and 'limited' (spin runs past max_handler_time
0.3 s, hog past max_handler_memory 4 MB, guarded's predicate past
max_hook_time 0.2 s). Prints `ready SVC TIGHT AUTH
LIMITED` (their endpoints), then serves until SIGTERM.
]]
local pseud = require 'pseud'

local metrics = arg[1] ~= '-' and arg[1] or nil

local svc = pseud.Server('svc', { metrics = metrics })
local svc_at = assert(svc:bind('tcp://127.0.0.1:*'))
svc:register_rpc('hello', function(name) return 'hello ' .. name end)
svc:register_rpc('fail', function() error(pseud.error('ValueError', 'bad input')) end)
svc:register_rpc('say "hi"\\\n', function() return 'odd' end)
-- three names that read the same once bytes that are not UTF-8 become
-- U+FFFD: one series (an attack round found three alike)
for _, name in ipairs { 'a\xff', 'a\xfe', 'a\u{FFFD}' } do svc:register_rpc(name, function() return 'alike' end) end

local tight = pseud.Server('tight', { metrics = metrics, max_peer_queue = 1 })
local tight_at = assert(tight:bind('tcp://127.0.0.1:*'))
tight:register_rpc('slow', function() pseud.sleep(0.2) return 'slow' end)

local auth = pseud.Server('auth', { metrics = metrics, security_plugin = 'plain',
  credentials = function(login, password) return login == 'alice' and password == 'wonderland' end })
local auth_at = assert(auth:bind('tcp://127.0.0.1:*'))
auth:register_rpc('whoami', function() return (pseud.caller()) end)

local limited = pseud.Server('limited', { metrics = metrics, max_handler_time = 0.3,
  max_handler_memory = 4e6, max_hook_time = 0.2 })
local limited_at = assert(limited:bind('tcp://127.0.0.1:*'))
limited:register_rpc('spin', function() while true do end end)
pseud.register_predicate('spinning', function() while true do end end)
limited:register_rpc('guarded', function() return 'never' end, { domain = 'spinning' })
limited:register_rpc('hog', function()
  local t = {}
  for i = 1, 1e7 do t[i] = ('x'):rep(64) .. i end
  return #t
end)

print(('ready %s %s %s %s'):format(svc_at, tight_at, auth_at, limited_at))
io.stdout:flush()
svc:start()
