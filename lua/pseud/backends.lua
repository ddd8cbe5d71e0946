--- pseud.backends: registered authentication and heartbeat backends, and
-- the instance each RPC gets (DESIGN.md section 3).
--
-- An instance is a fresh table per RPC whose metatable falls back to the
-- backend table, with `rpc` and `options` set; hooks are called as methods.
-- The host asks hooks for decisions only; the protocol stays in C.
local core = require 'pseud.core'

local backends = { auth = {}, heartbeat = {} }

local function register(kind, t)
  if type(t) ~= 'table' or type(t.name) ~= 'string' then
    error(core.error('TypeError', 'register_' .. kind .. '_backend: a table with a string name'), 3)
  end
  local side = t.side or 'both'
  if side ~= 'server' and side ~= 'client' and side ~= 'both' then
    error(core.error('ValueError', "backend side must be 'server', 'client' or 'both'"), 3)
  end
  backends[kind][t.name] = t
  return t
end

function backends.register_auth(t) return register('auth', t) end
function backends.register_heartbeat(t) return register('heartbeat', t) end

--- The instance of backend `name` of `kind` for `rpc` (kind 'server' or
-- 'client'); raises for an unknown name or the wrong side.
function backends.instance(kind, name, rpc, rpc_kind)
  local t = backends[kind][name]
  if not t then
    error(core.error('ValueError', ('no %s backend named %q'):format(kind, tostring(name))), 4)
  end
  if t.side and t.side ~= 'both' and t.side ~= rpc_kind then
    error(core.error('ValueError', ('%s backend %q is for the %s side'):format(kind, name, t.side)), 4)
  end
  return setmetatable({ rpc = rpc, options = rpc.options }, { __index = t })
end

-- Built in: the defaults. Everyone is authenticated, the user id is the
-- routing id; no heartbeats, no expiry.
backends.register_auth { name = 'noop_auth_backend', side = 'both' }
backends.register_heartbeat { name = 'noop_heartbeat_backend', side = 'both' }

return backends
