--- pseud.registry: where callables are registered, and how a call is routed.
--
-- A registry maps dotted names to callables. The host looks a name up in C,
-- in the `callables` table of the endpoint's registry, then of the endpoints
-- it proxies to, then of the global registry (pseud.register_rpc): one table
-- access per registry. A name registered only in the default domain maps to
-- its callable. A name registered under other domains maps to a route list
-- (metatable pseud.Routes): entries of non-default domains first, in the order
-- registered, then the default one; the RPC's resolver (registry.resolver)
-- picks the first whose domain predicate accepts the call, or none, and the
-- host goes on to the next registry.
local core = require 'pseud.core'

local registry = {}

local Registry = {}
Registry.__index = Registry

local function is_callable(f)
  if type(f) == 'function' then return true end
  local mt = getmetatable(f)
  return type(mt) == 'table' and mt.__call ~= nil
end

--- A new registry. `callables` may be given to wrap an existing table.
function registry.new(name, callables)
  return setmetatable({ name = name or 'local', callables = callables or {}, entries = {} }, Registry)
end

--- Register `fn` under the dotted `name`; `opts.domain` defaults to 'default'.
-- Registering the same name and domain again replaces the callable.
function Registry:register(name, fn, opts)
  if registry.guard then registry.guard(self) end      -- a reload runs (pseud.reload)
  if type(name) ~= 'string' or name == '' then
    error(core.error('TypeError', 'register_rpc: name must be a non-empty string'), 3)
  end
  if not is_callable(fn) then
    error(core.error('TypeError', "register_rpc: '" .. name .. "' needs a function or a callable"), 3)
  end
  local domain = opts and opts.domain or 'default'
  if type(domain) ~= 'string' then
    error(core.error('TypeError', 'register_rpc: domain must be a string'), 3)
  end
  local list = self.entries[name] or {}
  self.entries[name] = list
  for i = #list, 1, -1 do
    if list[i].domain == domain then table.remove(list, i) end
  end
  list[#list + 1] = { domain = domain, fn = fn }
  if #list == 1 and domain == 'default' then
    self.callables[name] = fn
  else
    local routes = setmetatable({}, core.routes_mt)
    for _, e in ipairs(list) do
      if e.domain ~= 'default' then routes[#routes + 1] = e end
    end
    for _, e in ipairs(list) do
      if e.domain == 'default' then routes[#routes + 1] = e end
    end
    self.callables[name] = routes
  end
  return fn
end

local predicates = {}

--- Make `t` the table of predicates (domain -> fn) and return the one it
-- replaces: a reload registers into a fresh one and keeps the one that wins.
function registry.swap_predicates(t)
  local old = predicates
  predicates = t
  return old
end

--- pseud.register_predicate(domain, fn(ctx) -> boolean)
function registry.register_predicate(domain, fn)
  if type(domain) ~= 'string' or not is_callable(fn) then
    error(core.error('TypeError', 'register_predicate(domain, function)'), 2)
  end
  predicates[domain] = fn
end


--- Does the predicate of `domain` accept `ctx`? Domain 'default' always
-- does; a domain without a predicate never does; a predicate that raises
-- refuses, and is logged.
local function accepts(domain, ctx)
  if domain == 'default' then return true end
  local p = predicates[domain]
  if not p then return false end
  local ok, yes = core.hook_pcall(p, ctx)       -- bounded by max_hook_time
  if not ok then
    core.log('warn', 'predicate failed (refused)', { domain = domain, error = yes })
    return false
  end
  return yes and true or false
end

--- The resolver the host calls for route lists of an RPC whose auth backend
-- instance is `auth()` (a function, as the backend may be set up later).
-- ctx = auth:get_predicate_arguments(user_id) plus user_id, routing_id,
-- name, args (packed), kwargs.
function registry.resolver(auth)
  return function(routes, name, user_id, routing_id, kwargs, ...)
    local ctx = {}
    local backend = auth()
    if backend and backend.get_predicate_arguments then
      local ok, extra = core.hook_pcall(backend.get_predicate_arguments, backend, user_id)
      if not ok then
        core.log('warn', 'auth backend hook failed', { hook = 'get_predicate_arguments', error = extra })
      elseif type(extra) == 'table' then
        for k, v in pairs(extra) do ctx[k] = v end
      end
    end
    ctx.user_id, ctx.routing_id, ctx.name = user_id, routing_id, name
    ctx.args, ctx.kwargs = table.pack(...), kwargs
    for _, e in ipairs(routes) do
      if accepts(e.domain, ctx) then return e.fn end
    end
    return nil
  end
end

--- The process-wide registry, shared with the host. A reload replaces it
-- (and tells the host: core.set_global_callables).
registry.global = registry.new('global', core.global_callables)

--- How many names `reg` holds (a route list counts once).
function registry.count(reg)
  local n = 0
  for _ in pairs(reg.entries) do n = n + 1 end
  return n
end

return registry
