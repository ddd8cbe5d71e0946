--[[
spec/servers/hooks.lua [ENDPOINT]: backend hooks that spin for some users,
for hooks_spec.lua. Each is stopped at max_hook_time (0.3 s) and counts as
raising. Prints `ready <endpoint>`, serves 'service' until SIGTERM.
]]
local pseud = require 'pseud'

local function spin() while true do end end

pseud.register_auth_backend {
  name = 'spinning_auth',
  side = 'server',
  configure = function(self, rpc)
    rpc._core:set_security { plain_server = true, zap_domain = require('pseud.auth').zap_domain(self) }
  end,
  zap = function(_, req)
    if req.username == 'zapspin' then spin() end
    return req.username
  end,
  is_authenticated = function(_, user_id)
    if user_id == 'gatespin' then spin() end
    if user_id == 'gatetail' then               -- the kill caught in tail position
      local co = coroutine.create(function()
        local _ <close> = setmetatable({}, { __close = spin })
        coroutine.yield()
      end)
      coroutine.resume(co)
      return coroutine.close(co)
    end
    return true
  end,
}

pseud.register_heartbeat_backend {
  name = 'spinning_heartbeat',
  side = 'server',
  handle_heartbeat = function(_, user_id)
    if user_id == 'hbspin' then spin() end
  end,
}

local server = pseud.Server('service', { security_plugin = 'spinning_auth',
  heartbeat_plugin = 'spinning_heartbeat', max_hook_time = 0.3 })
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:*'))
server:register_rpc('hello', function(name) return 'Hello ' .. name end)

io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()
server:start()
