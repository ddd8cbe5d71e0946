-- The seed's MyAuthenticationBackend, written from scratch in Lua: every hook
-- is optional and called as a method on a per-RPC instance (self.rpc,
-- self.options). This one checks PLAIN logins against a table through ZAP
-- and tells predicates who is an admin.
-- Run: pseud-lua examples/custom_auth_backend.lua
local pseud = require 'pseud'

local accounts = {
  root = { password = 'toor', admin = true },
  guest = { password = 'guest', admin = false },
}

pseud.register_auth_backend {
  name = 'my_auth_backend',
  side = 'server',
  option_names = {},  -- it reads no option of its own: misspelt ones are refused

  configure = function(self, rpc)
    -- PLAIN, with this backend answering the ZAP requests of this server
    rpc._core:set_security { plain_server = true,
                             zap_domain = require('pseud.auth').zap_domain(self) }
  end,
  -- one ZAP request: return the user id, or nil and a reason
  zap = function(_, req)
    local account = accounts[req.username]
    if req.mechanism == 'PLAIN' and account and account.password == req.password then
      return req.username
    end
    return nil, 'unknown login'
  end,
  get_predicate_arguments = function(_, user_id)
    return { admin = accounts[user_id] and accounts[user_id].admin }
  end,
  stop = function() end,
}

pseud.register_predicate('admin', function(ctx) return ctx.admin end)

local server = pseud.Server('service', { security_plugin = 'my_auth_backend' })
local endpoint = assert(server:bind('tcp://127.0.0.1:*'))
server:register_rpc('power', function() return 'small power' end)
server:register_rpc('power', function() return 'great power' end, { domain = 'admin' })

for _, login in ipairs { 'guest', 'root' } do
  local client = pseud.Client('service', { security_plugin = 'plain', user_id = login,
                                           password = accounts[login].password })
  client:connect(endpoint)
  print(login .. ': ' .. client.power():get())
end
