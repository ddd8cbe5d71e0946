--- pseud.backends: registered authentication and heartbeat backends, and
-- the instance each RPC gets (DESIGN.md section 3).
--
-- An instance is a fresh table per RPC whose metatable falls back to the
-- backend table, with `rpc` and `options` set; hooks are called as methods.
-- The host asks hooks for decisions only; the protocol stays in C.
local core = require 'pseud.core'

local backends = { auth = {}, heartbeat = {} }

-- Edits (insert, delete, replace, swap two neighbours) from a to b.
local function distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 1, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      d[i][j] = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        d[i][j] = math.min(d[i][j], d[i - 2][j - 2] + 1)
      end
    end
  end
  return d[#a][#b]
end

--- The closest name to `key` among `names` (sorted: ties go the same way
-- every time), if it is close enough to be a slip; for "did you mean".
function backends.closest(key, names)
  local best, best_d
  for _, n in ipairs(names) do
    local d = distance(key, n)
    if not best_d or d < best_d then best, best_d = n, d end
  end
  if best_d and best_d <= math.max(2, #key // 3) then return best end
end

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
    local msg = ('no %s backend named %q'):format(kind, tostring(name))
    local names = {}
    for n in pairs(backends[kind]) do names[#names + 1] = n end
    table.sort(names)
    local near = type(name) == 'string' and backends.closest(name, names)
    if near then msg = msg .. (" (did you mean '%s'?)"):format(near) end
    error(core.error('ValueError', msg .. '; known: ' .. table.concat(names, ', ')), 4)
  end
  if t.side and t.side ~= 'both' and t.side ~= rpc_kind then
    error(core.error('ValueError', ('%s backend %q is for the %s side'):format(kind, name, t.side)), 4)
  end
  return setmetatable({ rpc = rpc, options = rpc.options }, { __index = t })
end


--- Hand the heartbeat policy of instance `hb` to the host: its fields
-- `interval` and `timeout` (seconds; 0 or nil: none) and its hooks. The host
-- runs the timers; a hook is called only when the backend defines it, and
-- `handle_heartbeat` (every message) only then.
function backends.start_heartbeat(hb, ep)
  local interval, timeout = tonumber(hb.interval) or 0, tonumber(hb.timeout) or 0
  local on_seen, on_gone = hb.handle_heartbeat, hb.handle_timeout
  if interval <= 0 and timeout <= 0 and not on_seen and not on_gone then return end
  local hooks = { heartbeat = 'handle_heartbeat', timeout = 'handle_timeout' }
  ep:set_heartbeat(interval, timeout, function(event, user_id, routing_id)
    local hook = hb[hooks[event]]
    if not hook then return end
    local ok, err = core.hook_pcall(hook, hb, user_id, routing_id)
    if not ok then
      core.log('warn', 'heartbeat backend hook failed', { hook = hooks[event], backend = tostring(hb.name),
                                                          error = err }, true)
    end
  end, on_seen ~= nil)
end

--- Hand the HELLO-handshake hooks of auth instance `a` (a server's) to the
-- host: is_authenticated(user_id, routing_id, logged_in) gates every WORK
-- (false: UNAUTHORIZED; logged_in: this connection passed a HELLO),
-- handle_hello(user_id, routing_id, login, password) answers a HELLO with
-- `ok, text [, user_id]` or `check, text, user_id` (core.password_check:
-- verified off the loop). The user id it gives becomes the connection's
-- identity (DESIGN.md 4.1). A hook that raises refuses, and is logged.
function backends.start_auth(a, ep, rpc_kind)
  if rpc_kind ~= 'server' or not (a.is_authenticated or a.handle_hello) then return end
  local gate, hello
  if a.is_authenticated then
    gate = function(user_id, routing_id, logged_in)
      local ok, yes = core.hook_pcall(a.is_authenticated, a, user_id, routing_id, logged_in)
      if not ok then
        core.log('warn', 'auth backend hook failed (refused)', { hook = 'is_authenticated',
                                                                backend = tostring(a.name), error = yes }, true)
      end
      return ok and yes and true or false
    end
  end
  if a.handle_hello then
    hello = function(user_id, routing_id, login, password)
      local ok, yes, text, new_id = core.hook_pcall(a.handle_hello, a, user_id, routing_id, login, password)
      if not ok then
        core.log('warn', 'auth backend hook failed (refused)', { hook = 'handle_hello', backend = tostring(a.name),
                                                                  error = yes }, true)
        return false, 'Authentication Required'
      end
      if getmetatable(yes) ~= core.password_check_mt then yes = yes and true or false end
      return yes, type(text) == 'string' and text or nil, type(new_id) == 'string' and new_id or nil
    end
  end
  ep:set_auth_hooks(gate, hello)
end

-- Built in: the defaults. Everyone is authenticated, the user id is the
-- routing id; no heartbeats, no expiry.
backends.register_auth { name = 'noop_auth_backend', side = 'both', option_names = {} }
backends.register_heartbeat { name = 'noop_heartbeat_backend', side = 'both', option_names = {} }

-- heartbeat: send every heartbeat_interval seconds (default 5); a peer
-- silent for heartbeat_timeout (default 3 intervals) is gone.
backends.register_heartbeat {
  name = 'heartbeat',
  side = 'both',
  option_names = { 'heartbeat_interval', 'heartbeat_timeout' },
  configure = function(self, rpc)
    local o = rpc.options
    self.interval = tonumber(o.heartbeat_interval) or 5
    self.timeout = tonumber(o.heartbeat_timeout) or 3 * self.interval
  end,
}

return backends
