--- pseud: a bidirectional RPC host, wire-compatible with Python pseud.
--
-- This module is the public API (DESIGN.md section 2). It is a thin layer
-- over pseud.core, where the loop, the protocol and the handler coroutines
-- live: a Server or Client here is a table holding a core endpoint, plus the
-- proxies that turn `client.a.b(1, 2)` into a call of 'a.b'.
local core = require 'pseud.core'
local registry = require 'pseud.registry'
local backends = require 'pseud.backends'
local auth = require 'pseud.auth'
local reload = require 'pseud.reload'

-- error values point at the first line outside these files (their `where`)
core.set_library(debug.getinfo(1, 'S').source)

local pseud = {
  _VERSION = 'pseud-lua 0.1.0',
  null = core.null,
  ext = core.ext,
  error = core.error,
  RemoteError = core.error_mt,
  sleep = core.sleep,
  spawn = core.spawn,
  now = core.now,
  caller = core.caller,
  log = core.log,
  log_level = core.log_level,
  role = core.role,             -- 'control' or 'worker' (docs/workers.md)
  worker_id = core.worker_id,   -- 0 in the control, 1..N in worker N
}

--- Mark `t` as keyword arguments: the last argument of a call.
function pseud.kwargs(t)
  return setmetatable(t or {}, core.kwargs_mt)
end

--- Mark `t` to travel as a msgpack map, even when empty or a sequence.
function pseud.map(t)
  return setmetatable(t or {}, core.map_mt)
end

--- Is `v` a pseud error value (remote error, timeout, pseud.error)?
function pseud.is_error(v)
  return type(v) == 'table' and getmetatable(v) == core.error_mt
end

--- Wait for every future; returns their values in order. Raises the first
-- error after all have settled.
function pseud.gather(...)
  local futures = table.pack(...)
  local results, first_error = { n = futures.n }, nil
  for i = 1, futures.n do
    local ok, v = pcall(futures[i].get, futures[i])
    if ok then results[i] = v elseif first_error == nil then first_error = v end
  end
  if first_error ~= nil then error(first_error, 0) end
  return table.unpack(results, 1, results.n)
end

--- Limits: the codec's (max_depth, max_string, max_elements, max_body) and
-- max_reload_time (seconds the script may take to run again on a reload).
function pseud.configure(t)
  if type(t) == 'table' and t.max_reload_time ~= nil then
    local v = t.max_reload_time
    if type(v) ~= 'number' or not (v > 0 and v <= 3600) then
      error(core.error('ValueError', 'max_reload_time must be a number of seconds, > 0 and <= 3600'), 2)
    end
    reload.max_time = v
  end
  return core.configure(t)
end

--- Run the script again and swap its registrations in (as SIGHUP does),
-- between two turns of the loop: true, or nil and why it failed (the old
-- registrations stay). Waits in a handler or task; refused when not serving.
function pseud.reload()
  local f, why = core.reload()
  if not f then return nil, why end
  local ok, v = pcall(f.get, f)
  if not ok then return nil, tostring(v) end
  if v == true then return true end
  return nil, v
end

--- Is the script's top level running again for a reload? (Guard what must
-- not run twice: a spawned loop, a line printed for a supervisor.)
pseud.reloading = reload.active

function pseud.create_local_registry(name)
  return registry.new(name)
end

--- Register globally, or in `opts.registry`.
function pseud.register_rpc(name, fn, opts)
  local reg = opts and opts.registry or registry.global
  return reg:register(name, fn, opts)
end

pseud.register_predicate = registry.register_predicate
pseud.register_auth_backend = backends.register_auth
pseud.register_heartbeat_backend = backends.register_heartbeat
pseud.load_keypair = auth.load_keypair
pseud.curve_keypair = core.curve_keypair

-- Proxies: `rpc.name` and `proxy.more` build dotted names; calling one sends
-- the call. `rpc:name(...)` passes the rpc first: it is dropped. A proxy keeps
-- its state under a private key, so every string key is free for names
-- (`client.this.is.a.name`).
local STATE = {}
local Proxy = {}

local function proxy(rpc, peer, hint, name)
  return setmetatable({ [STATE] = { rpc = rpc, peer = peer, hint = hint, name = name } }, Proxy)
end

Proxy.__index = function(p, key)
  if type(key) ~= 'string' then return nil end
  local st = rawget(p, STATE)
  local child = proxy(st.rpc, st.peer, st.hint, st.name .. '.' .. key)
  rawset(p, key, child)
  return child
end

local function call_dropping_self(st, _, ...)
  return st.rpc._core:call(st.peer, st.hint, st.name, ...)
end

Proxy.__call = function(p, ...)
  local st = rawget(p, STATE)
  if select('#', ...) > 0 and (...) == st.rpc then return call_dropping_self(st, ...) end
  return st.rpc._core:call(st.peer, st.hint, st.name, ...)
end

Proxy.__tostring = function(p)
  return "pseud proxy for '" .. rawget(p, STATE).name .. "'"
end

local RPC = {}

local function rpc_index(self, key)
  local method = RPC[key]
  if method ~= nil then return method end
  if type(key) ~= 'string' then return nil end
  local cache = rawget(self, '_proxies')
  local p = cache[key]
  if not p then
    p = proxy(self, nil, nil, key)
    cache[key] = p
  end
  return p
end

-- The option names an RPC reads itself; its backends add theirs (their
-- `option_names`).
local CORE_OPTIONS = {
  'cluster', 'heartbeat_plugin', 'identity', 'introspection', 'linger', 'max_handler_memory', 'max_handler_time',
  'max_hook_time', 'max_message_size', 'max_peer_calls', 'max_peer_queue', 'max_peers', 'max_tasks', 'metrics',
  'proxy_to',
  'registry', 'security_plugin', 'stop_timeout', 'timeout', 'worker_by', 'workers',
}

-- What a `cluster` table may hold (docs/cluster.md).
local CLUSTER_OPTION_NAMES = { 'max_forwarded', 'redis', 'refresh_interval', 'timeout', 'ttl' }
local CLUSTER_OPTIONS = {}
for _, n in ipairs(CLUSTER_OPTION_NAMES) do CLUSTER_OPTIONS[n] = true end

-- " (... reads it)" when another registered backend reads `key` or a name
-- close to it, else "".
local function other_reader(key)
  for _, kind in ipairs({ 'auth', 'heartbeat' }) do
    local bnames = {}
    for bname in pairs(backends[kind]) do bnames[#bnames + 1] = bname end
    table.sort(bnames)
    for _, bname in ipairs(bnames) do
      local theirs = backends[kind][bname].option_names
      local hit = theirs and backends.closest(key, theirs)
      local plugin = kind == 'auth' and 'security_plugin' or 'heartbeat_plugin'
      if hit == key then return (" (%s '%s' reads it)"):format(plugin, bname) end
      if hit then return (" (did you mean '%s'? %s '%s' reads it)"):format(hit, plugin, bname) end
    end
  end
  return ''
end

-- Raise for an option name that nothing reads, naming the closest known
-- one (or the backend that would read it). A backend that does not list its
-- option names may read any: then nothing is checked (README "Options").
local function check_options(opts, auth_backend, heartbeat_backend)
  if not (auth_backend and auth_backend.option_names and heartbeat_backend
          and heartbeat_backend.option_names) then
    return
  end
  local known, names = {}, {}
  for _, list in ipairs({ CORE_OPTIONS, auth_backend.option_names, heartbeat_backend.option_names }) do
    for _, n in ipairs(list) do
      if not known[n] then known[n] = true; names[#names + 1] = n end
    end
  end
  table.sort(names)
  for key in pairs(opts) do
    if type(key) ~= 'string' then
      error(core.error('ValueError', ('option names are strings, not %s'):format(type(key))), 4)
    elseif not known[key] then
      local msg = ("unknown option '%s'"):format(key)
      local best = backends.closest(key, names)
      if best then
        msg = msg .. (" (did you mean '%s'?)"):format(best)
      else
        msg = msg .. other_reader(key)
      end
      error(core.error('ValueError', msg), 4)
    end
  end
end

local DESCRIBE_DOC = 'the names you may call here, with their docs'

-- The host's own names for an endpoint: '_pseud.describe' lists what the
-- caller may call, walking the registries as a call would (ep:registries(),
-- the lookup order of dispatch.c) and routing names under domains with
-- the endpoint's own resolver, so predicates see this caller.
local function introspection(ep, resolve)
  return {
    ['_pseud.describe'] = function()
      local user_id, routing_id = core.caller()
      return registry.describe(ep:registries(), resolve, user_id, routing_id,
        { { name = '_pseud.describe', doc = DESCRIBE_DOC } })
    end,
  }
end

local function new_rpc(kind, name, opts)
  if type(name) ~= 'string' then
    error(core.error('TypeError', kind .. ': the service name must be a string'), 3)
  end
  opts = opts or {}
  if type(opts) ~= 'table' then
    error(core.error('TypeError', kind .. ': options must be a table'), 3)
  end
  check_options(opts, backends.auth[opts.security_plugin or 'noop_auth_backend'],
    backends.heartbeat[opts.heartbeat_plugin or 'noop_heartbeat_backend'])
  if opts.introspection ~= nil and type(opts.introspection) ~= 'boolean' then
    error(core.error('TypeError', kind .. ': introspection must be true or false'), 3)
  end
  if reload.active() then return reload.claim(kind, name, opts) end
  -- In a worker (docs/workers.md) an RPC is a proxy of the control's of the
  -- same name: the control owns the socket, security, heartbeats, metrics
  -- and the cluster; handlers and predicates run here.
  local worker = core.role() == 'worker'
  if opts.metrics ~= nil and not worker then  -- the process's metrics (README "Metrics")
    if type(opts.metrics) ~= 'string' then
      error(core.error('TypeError', "option 'metrics' must be an address, e.g. 'tcp://127.0.0.1:9101'"), 3)
    end
    local ok, err = core.metrics(opts.metrics)
    if not ok then error(core.error('RuntimeError', err), 3) end
  end
  local cluster = opts.cluster                 -- docs/cluster.md
  if cluster ~= nil and cluster ~= false and type(cluster) ~= 'string' and
     not (type(cluster) == 'table' and type(cluster.redis) == 'string') then
    error(core.error('TypeError', "option 'cluster' must be a Redis URL, e.g. 'redis://127.0.0.1:6379', "
      .. "{ redis = URL, ttl = seconds, refresh_interval = seconds, timeout = seconds, max_forwarded = n }, "
      .. "or false"), 3)
  end
  if type(cluster) == 'table' then             -- a misspelt bound would be the default, silently
    for key in pairs(cluster) do
      if not CLUSTER_OPTIONS[key] then
        local best = type(key) == 'string' and backends.closest(key, CLUSTER_OPTION_NAMES)
        error(core.error('ValueError', ("unknown cluster option '%s'%s"):format(tostring(key),
          best and (" (did you mean '%s'?)"):format(best) or '')), 3)
      end
    end
  end
  local reg = opts.registry or registry.new(name)
  local self = { _kind = kind, name = name, options = opts, registry = reg,
                 _proxies = setmetatable({}, { __mode = 'v' }), _addresses = {} }
  local resolve = registry.resolver(function() return self._auth end)
  local ep, err = core.endpoint(kind, name, opts, reg.callables, resolve)
  if not ep then error(core.error('RuntimeError', err), 3) end
  self._core = ep
  if opts.introspection ~= false then ep:set_reserved(introspection(ep, resolve)) end
  setmetatable(self, { __index = rpc_index, __name = 'pseud.' .. kind })
  self._auth = backends.instance('auth', opts.security_plugin or 'noop_auth_backend', self, kind)
  self._heartbeat = backends.instance('heartbeat', opts.heartbeat_plugin or 'noop_heartbeat_backend',
    self, kind)
  if not worker then
    if self._auth.configure then self._auth:configure(self) end
    if self._heartbeat.configure then self._heartbeat:configure(self) end
    backends.start_heartbeat(self._heartbeat, ep)
    backends.start_auth(self._auth, ep, kind)
  end
  if opts.proxy_to then ep:set_proxy(opts.proxy_to._core) end
  -- the cluster is the control's: said once a process, not once a worker
  if not worker and ep:cluster() and (opts.security_plugin or 'noop_auth_backend') == 'noop_auth_backend' then
    -- without authentication a peer's user id is the routing id it picks:
    -- across nodes nothing stops two peers picking the same (docs/cluster.md)
    core.log('warn', 'cluster without authentication: any peer on any node can claim any user id',
             { server = name })
  end
  reload.track(self, opts)
  return self
end

-- bind and connect remember whether one worked and why the last one
-- failed, so that start() can say why it would serve nothing.
local function attach(self, how, address)
  if reload.active() then return reload.attach(self, how, address) end
  local result, err, code = self._core[how](self._core, address)
  if result then
    rawset(self, '_attached', true)
    rawget(self, '_addresses')[how .. ' ' .. tostring(address)] = table.pack(result, err, code)
  else
    rawset(self, '_attach_failure', err)
  end
  return result, err, code
end

function RPC:bind(address)
  return attach(self, 'bind', address)
end

function RPC:connect(address)
  return attach(self, 'connect', address)
end

function RPC:register_rpc(name, fn, opts)
  local reg = opts and opts.registry or self.registry
  return reg:register(name, fn, opts)
end

--- Call `name` on the default peer (a client's server).
function RPC:call(name, ...)
  return self._core:call(nil, nil, name, ...)
end

--- A proxy for calls to `peer` (a user id): server:send_to('alice').add(1, 2)
-- The call goes to the connection where that user id was last heard, or to
-- the routing id the auth backend's get_routing_id names when that routing
-- id carries this user id; never to a routing id that merely equals it.
function RPC:send_to(peer)
  if type(peer) ~= 'string' then
    error(core.error('TypeError', 'send_to: the peer must be a user id (string)'), 2)
  end
  local auth_backend, hint = self._auth, nil
  if auth_backend.get_routing_id then        -- the backend says where this user is
    local ok, rid = core.hook_pcall(auth_backend.get_routing_id, auth_backend, peer)
    if ok and type(rid) == 'string' and rid ~= '' then
      hint = { routing_id = rid }
    elseif not ok then
      core.log('warn', 'auth backend hook failed (using the directory)',
               { hook = 'get_routing_id', error = rid }, true)
    end
  end
  return setmetatable({}, { __index = function(_, key) return proxy(self, peer, hint, key) end })
end

function RPC:start(stop_timeout)
  if reload.active() then return reload.start() end    -- the end of a reload's run
  if not rawget(self, '_attached') then
    local why = rawget(self, '_attach_failure')
    error(core.error('RuntimeError', ("%s '%s': start() with nothing bound or connected: %s")
      :format(self._kind, self.name, why and 'the last bind or connect failed: ' .. why
                                       or 'call bind() or connect() first')), 2)
  end
  reload.served()
  return self._core:start(stop_timeout or self.options.stop_timeout)
end

function RPC:stop()
  return self._core:stop()
end

function RPC:close()
  if self._auth.stop then self._auth:stop() end
  if self._heartbeat.stop then self._heartbeat:stop() end
  return self._core:close()
end

function RPC:pending()
  return self._core:pending()
end

--- The peers heard from: { {user_id=, routing_id=, last_seen=}, ... },
-- least recently heard first; last_seen in seconds since the epoch.
function RPC:peers()
  return self._core:peers()
end

--- Its place in a cluster (docs/cluster.md): { node = id, up = bool }, or
-- nil for a server without the `cluster` option.
function RPC:cluster()
  return self._core:cluster()
end

function pseud.Server(name, opts)
  return new_rpc('server', name, opts)
end

function pseud.Client(name, opts)
  return new_rpc('client', name, opts)
end

return pseud
