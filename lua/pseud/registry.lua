--- pseud.registry: where callables are registered and found.
--
-- A registry maps dotted names to callables. The host looks names up in C, in
-- the table `callables` of the endpoint's local registry, then in the global
-- one (pseud.register_rpc), so a lookup costs one table access per registry.
-- Domains and predicates keep their entries in `entries` (name -> list) for
-- the routing that builds on them.
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
function Registry:register(name, fn, opts)
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
  local list = self.entries[name]
  if not list then list = {}; self.entries[name] = list end
  for i = #list, 1, -1 do                      -- re-registering a domain replaces it
    if list[i].domain == domain then table.remove(list, i) end
  end
  list[#list + 1] = { domain = domain, fn = fn }
  if #list == 1 and domain == 'default' then
    self.callables[name] = fn
  else
    self.callables[name] = registry.router(self, name)
  end
  return fn
end

--- Is `name` registered here?
function Registry:has(name)
  return self.entries[name] ~= nil
end

--- The callable the host runs for a name with non-default domains: it picks
-- the entry by predicate. Replaced by pseud's routing when domains exist.
function registry.router(reg, name)
  return function(...)
    local list = reg.entries[name]
    for _, e in ipairs(list) do
      if e.domain ~= 'default' and registry.accepts(e.domain, name, ...) then return e.fn(...) end
    end
    for _, e in ipairs(list) do
      if e.domain == 'default' then return e.fn(...) end
    end
    error(core.error('ServiceNotFoundError', name), 0)
  end
end

local predicates = {}

--- pseud.register_predicate(domain, fn(ctx) -> boolean)
function registry.register_predicate(domain, fn)
  if type(domain) ~= 'string' or not is_callable(fn) then
    error(core.error('TypeError', 'register_predicate(domain, function)'), 2)
  end
  predicates[domain] = fn
end

--- Does the predicate of `domain` accept this call? No predicate: no.
function registry.accepts(domain, name, ...)
  local p = predicates[domain]
  if not p then return false end
  local ok, yes = pcall(p, { name = name, args = table.pack(...) })
  if not ok then
    io.stderr:write('pseud-lua: predicate for domain ', domain, ' failed: ', tostring(yes), '\n')
    return false
  end
  return yes and true or false
end

--- The process-wide registry, shared with the host.
registry.global = registry.new('global', core.global_callables)

return registry
