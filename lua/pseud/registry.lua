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
--
-- Names that start with '_pseud.' are the host's (introspection:
-- '_pseud.describe'); registering one raises. registry.describe lists what
-- one caller may call, with the docs given at registration.
local core = require 'pseud.core'

local registry = {}

local Registry = {}
Registry.__index = Registry

local RESERVED = core.reserved_prefix            -- '_pseud.' (dispatch.h)

-- callables table -> the Registry that fills it (for the docs of plain entries)
local owners = setmetatable({}, { __mode = 'k' })

local function is_callable(f)
  if type(f) == 'function' then return true end
  local mt = getmetatable(f)
  return type(mt) == 'table' and mt.__call ~= nil
end

--- A new registry. `callables` may be given to wrap an existing table.
function registry.new(name, callables)
  local self = setmetatable({ name = name or 'local', callables = callables or {}, entries = {} }, Registry)
  owners[self.callables] = self
  return self
end

--- Register `fn` under the dotted `name`; `opts.domain` defaults to 'default';
-- `opts.doc` is a text introspection shows beside the name.
-- Registering the same name and domain again replaces the callable.
function Registry:register(name, fn, opts)
  if registry.guard then registry.guard(self) end      -- a reload runs (pseud.reload)
  if type(name) ~= 'string' or name == '' then
    error(core.error('TypeError', 'register_rpc: name must be a non-empty string'), 3)
  end
  if name:sub(1, #RESERVED) == RESERVED then
    error(core.error('ValueError', ("register_rpc: '%s': names starting with '%s' are reserved for the host")
      :format(name, RESERVED)), 3)
  end
  if not is_callable(fn) then
    error(core.error('TypeError', "register_rpc: '" .. name .. "' needs a function or a callable"), 3)
  end
  local domain = opts and opts.domain or 'default'
  if type(domain) ~= 'string' then
    error(core.error('TypeError', 'register_rpc: domain must be a string'), 3)
  end
  local doc = opts and opts.doc
  if doc ~= nil and type(doc) ~= 'string' then
    error(core.error('TypeError', 'register_rpc: doc must be a string'), 3)
  end
  local list = self.entries[name] or {}
  self.entries[name] = list
  for i = #list, 1, -1 do
    if list[i].domain == domain then table.remove(list, i) end
  end
  list[#list + 1] = { domain = domain, fn = fn, doc = doc }
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
    core.log('warn', 'predicate failed (refused)', { domain = domain, error = yes }, true)
    return false
  end
  return yes and true or false
end

-- The predicates of one lookup share one max_hook_time: each is bounded by
-- it, and none starts once that much has gone by since the lookup's first,
-- so a name under N domains holds the loop about twice max_hook_time at
-- most, not N times (an attack round). A describe shares one such budget
-- across all its names: it calls the resolver's budgeted form (below) with
-- its own end, never through state a killed describe could leave behind.
local budgeted = setmetatable({}, { __mode = 'k' })   -- resolver -> its form with an end

--- The resolver the host calls for route lists of an RPC whose auth backend
-- instance is `auth()` (a function, as the backend may be set up later).
-- ctx = auth:get_predicate_arguments(user_id) plus user_id, routing_id,
-- name, args (packed), kwargs. Returns the callable and its entry
-- ({domain=, fn=, doc=}; the host reads the first only), or nil (and true
-- when the budget ran out).
function registry.resolver(auth)
  local function resolve(until_, routes, name, user_id, routing_id, kwargs, ...)
    local ctx = {}
    local backend = auth()
    if backend and backend.get_predicate_arguments then
      local ok, extra = core.hook_pcall(backend.get_predicate_arguments, backend, user_id)
      if not ok then
        core.log('warn', 'auth backend hook failed', { hook = 'get_predicate_arguments', error = extra }, true)
      elseif type(extra) == 'table' then
        for k, v in next, extra do ctx[k] = v end   -- raw: a __pairs of its result is no hook of its own
      end
    end
    ctx.user_id, ctx.routing_id, ctx.name = user_id, routing_id, name
    ctx.args, ctx.kwargs = table.pack(...), kwargs
    if not until_ then
      local bound = core.hook_time()
      until_ = bound > 0 and core.now() + bound
    end
    for _, e in ipairs(routes) do
      if until_ and e.domain ~= 'default' and core.now() > until_ then
        core.log('warn', 'predicates ran past max_hook_time: the other domains refuse', { name = name }, true)
        return nil, nil, true
      end
      if accepts(e.domain, ctx) then return e.fn, e end
    end
    return nil
  end
  local function resolver(...) return resolve(nil, ...) end
  budgeted[resolver] = resolve
  return resolver
end

--- What `user_id` (on `routing_id`) may call through the registries
-- `tables` (callables tables in lookup order, as the host walks them:
-- ep:registries()), routing each name registered under domains with
-- `resolve` (the RPC's resolver) as a call of that name with no arguments
-- would be routed. A name counts once, with the doc of the entry a call
-- would reach; `extra` lists more {name=, doc=} (the host's own).
-- Returns { {name=, doc=|pseud.null}, ... } sorted by name, each a map.
function registry.describe(tables, resolve, user_id, routing_id, extra)
  local bound = core.hook_time()
  local until_ = bound > 0 and core.now() + bound or false
  local with_end = budgeted[resolve]
  local seen, list = {}, {}
  local function add(name, doc)
    seen[name] = true
    list[#list + 1] = setmetatable({ name = name, doc = doc or core.null }, core.map_mt)
  end
  for _, e in ipairs(extra or {}) do add(e.name, e.doc) end
  for _, callables in ipairs(tables) do
    local names = {}
    for name in pairs(callables) do
      if type(name) == 'string' and not seen[name] then names[#names + 1] = name end
    end
    table.sort(names)                         -- predicates run in a stable order
    for _, name in ipairs(names) do
      local v = callables[name]
      if getmetatable(v) == core.routes_mt then
        local fn, entry, out_of_time
        if with_end then fn, entry, out_of_time = with_end(until_, v, name, user_id, routing_id, nil)
        else fn, entry = resolve(v, name, user_id, routing_id, nil) end
        if out_of_time then
          error(core.error('TimeoutError', 'the predicates of the names guarded by domains ran past '
            .. 'max_hook_time: no list'), 0)
        end
        if fn ~= nil then add(name, entry and entry.doc) end
      elseif v ~= nil then
        local owner = owners[callables]
        local entries = owner and owner.entries[name]
        add(name, entries and entries[1] and entries[1].doc)
      end
    end
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return list
end

--- The process-wide registry, shared with the host. A reload replaces it
-- (and tells the host: core.set_global_callables).
registry.global = registry.new('global', core.global_callables)

return registry
