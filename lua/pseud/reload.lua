--- pseud.reload: hot reload (SIGHUP, pseud.reload()).
--
-- The host calls reload.run between two turns of its loop while serving,
-- never inside a handler (host.c). It runs the script file again in
-- "reload mode", bounded by max_reload_time, and swaps what that run
-- registered in at once:
--   - pseud.Server / pseud.Client return the RPC the first run made with the
--     same kind, name and identity (the n-th such call, the n-th such RPC);
--     its socket, peers, calls and backends are kept; options that differ
--     are kept as they were and logged (a restart applies them); a new RPC
--     fails the reload;
--   - bind / connect to an address done before return what they returned
--     then; a new address is not bound (nil, reason; logged);
--   - register_rpc, register_predicate and each re-made RPC's registry go to
--     fresh tables;
--   - start() ends the run: the rest of the chunk (usually cleanup) never
--     runs (start() yields a private mark out of the chunk's coroutine).
-- Success: the host's lookups see the fresh tables from the next call on
-- (one synchronous swap; handlers already running keep the function they
-- run). Failure (syntax error, an error, past the bound): every fresh table
-- is dropped, the old ones stay as they were.
--
-- Nothing else runs while the script re-runs (the loop stands still), so
-- the Lua-side pointers (registry.global, the predicates, rpc.registry) can
-- point at the fresh tables during the run and be put back on failure.
local core = require 'pseud.core'
local registry = require 'pseud.registry'

local reload = {
  max_time = 2,            -- seconds the script may take to re-run (pseud.configure)
}

local MARK = setmetatable({}, { __name = 'pseud.reload mark' })   -- what start() yields
local made = {}            -- the RPCs the script made before it first served: { key=, rpc= }
local served = false       -- start() has run: RPCs made from now on are not the script's
local run                  -- the reload in progress, or nil

local function key_of(kind, name, opts)
  return kind .. '\0' .. name .. '\0' .. tostring(opts.identity or '')
end

--- Is a reload running (the script's top level re-runs)?
function reload.active()
  return run ~= nil
end

--- A new RPC (not during a reload): the script's own while it has not
-- served yet, so that a reload finds it again.
function reload.track(rpc, opts)
  if not served then made[#made + 1] = { key = key_of(rpc._kind, rpc.name, opts), rpc = rpc } end
end

--- start() ran (not during a reload).
function reload.served()
  served = true
end

-- A closure is new on every run: two functions cannot tell a change.
local function changed(old, new)
  if type(old) == 'function' and type(new) == 'function' then return false end
  return not rawequal(old, new)
end

--- pseud.Server / pseud.Client during a reload: the RPC the first run made,
-- with a fresh registry (opts.registry, or a new one).
function reload.claim(kind, name, opts)
  local key = key_of(kind, name, opts)
  local nth = (run.seen[key] or 0) + 1
  run.seen[key] = nth
  local rpc
  for _, e in ipairs(made) do
    if e.key == key then
      nth = nth - 1
      if nth == 0 then rpc = e.rpc break end
    end
  end
  if not rpc then
    error(core.error('RuntimeError', ("%s '%s' is new: a reload keeps the servers and clients "
      .. 'the script made first; restart to add one'):format(kind, name)), 4)
  end
  local keys = {}
  for k in pairs(opts) do keys[#keys + 1] = k end
  for k in pairs(rpc.options) do
    if opts[k] == nil then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    if k ~= 'registry' and changed(rpc.options[k], opts[k]) then
      run.notes[#run.notes + 1] = ("option '%s' of %s '%s' changed: kept as it was, restart to apply")
        :format(tostring(k), kind, name)
    end
  end
  if opts.registry and run.live[opts.registry] then
    error(core.error('RuntimeError', ("%s '%s': its registry option is a registry in use; a reload "
      .. 'needs a new one (pseud.create_local_registry at the top level)'):format(kind, name)), 4)
  end
  if run.old[rpc] == nil then run.old[rpc] = rpc.registry end
  rpc.registry = opts.registry or registry.new(name)
  return rpc
end

--- rpc:bind / rpc:connect during a reload: what it returned before, or
-- nil, reason for an address it never had.
function reload.attach(rpc, how, address)
  local done = rawget(rpc, '_addresses')[how .. ' ' .. tostring(address)]
  if done then return table.unpack(done, 1, done.n) end
  local why = ("%s '%s' of %s '%s' not done during a reload: restart to add an address")
    :format(how, tostring(address), rpc._kind, rpc.name)
  run.notes[#run.notes + 1] = why
  return nil, why
end

--- rpc:start() during a reload: the end of the run.
function reload.start()
  if coroutine.running() ~= run.co then
    error(core.error('RuntimeError', 'start() during a reload from a coroutine the script made: '
      .. 'the reload can end only at the top level'), 3)
  end
  coroutine.yield(MARK)     -- never resumed
end

-- The innermost line of the script file on co's stack, as 'path:line'.
local function where(co, path)
  for level = 0, 1000 do
    local info = debug.getinfo(co, level, 'Sl')
    if not info then return nil end
    if info.source == '@' .. path and info.currentline > 0 then
      return path .. ':' .. info.currentline
    end
  end
end

-- tostring(v) under max_hook_time: an error value's __tostring that never
-- returned hung the process for good, past any stop (an attack round)
local function text_of(v)
  if type(v) == 'string' then return v end
  local ok, text = core.hook_pcall(tostring, v)
  if ok and type(text) == 'string' then return text end
  return ('(a %s error value whose __tostring failed)'):format(type(v))
end

-- One line for an error value the script raised in co, `took` seconds
-- into its run.
local function describe(e, co, path, took)
  local text
  if type(e) == 'table' and getmetatable(e) == core.error_mt then
    text = text_of(rawget(e, 'name')) .. ': ' .. text_of(rawget(e, 'message'))
    if rawget(e, 'name') == 'TimeoutError' and rawget(e, 'message') == 'the hook ran past max_hook_time' then
      text = took < reload.max_time
        and 'Interrupted: a stop cut the reload short'
        or ('TimeoutError: the script ran past max_reload_time (%g s)'):format(reload.max_time)
    end
  else
    text = text_of(e)
  end
  local at = where(co, path)
  if at and text:sub(1, #at + 1) ~= at .. ':' then text = text .. ' (at ' .. at .. ')' end
  return text
end

-- Registry:register during a reload: never into a registry in use.
local function guard(reg)
  if run.live[reg] then
    error(core.error('RuntimeError', ("register_rpc into registry '%s' during a reload: it is in use; "
      .. 'a reload registers into new registries only (one kept in a module outlives the run)')
      :format(tostring(reg.name))), 4)
  end
end

-- Run the chunk in run.co, bounded. Returns nil on success, else why not.
local function execute(script)
  local t0 = core.now()
  local ok, resumed, value = core.bounded_pcall(reload.max_time, coroutine.resume, run.co,
    table.unpack(script, 1, script.n))
  local took = core.now() - t0
  if not ok then return describe(resumed, run.co, script.path, took) end    -- the bound, outside co
  if not resumed then return describe(value, run.co, script.path, took) end
  if coroutine.status(run.co) == 'suspended' and value ~= MARK then
    local at = where(run.co, script.path)
    return 'the script yielded outside pseud' .. (at and ' (at ' .. at .. ')' or '')
  end
  return nil                                  -- start() reached, or the chunk returned
end

-- A registry's `entries` or `callables`, read raw ({} or nil when it has
-- none): a registry option is the script's own table.
local function field_of(reg, k)
  local v = type(reg) == 'table' and rawget(reg, k)
  return type(v) == 'table' and v or nil
end

-- What commit() swaps in, read raw and checked while nothing is swapped
-- yet, or nil, why not. The run's bound ends with execute(): an __index
-- or __pairs on a script's registry that ran here spun unbounded with the
-- loop standing still, and one that raised in the swap left some servers
-- swapped and the reload reported failed (an attack round).
local function plan()
  local swaps = { global = field_of(registry.global, 'callables') }
  if not swaps.global then
    return nil, 'the global registry (pseud.registry.global) is not a registry: the script replaced it'
  end
  for rpc in next, run.old do
    local callables, entries = field_of(rpc.registry, 'callables'), field_of(rpc.registry, 'entries')
    if not (callables and entries) then
      return nil, ("%s '%s': its registry option is not a registry (make one with "
        .. 'pseud.create_local_registry)'):format(rpc._kind, rpc.name)
    end
    swaps[#swaps + 1] = { rpc = rpc, callables = callables, entries = entries }
  end
  return swaps
end

-- Make the fresh tables the ones the host looks names up in. Synchronous:
-- no handler runs between two lines of it, and no script code either.
local function commit(swaps)
  for _, swap in ipairs(swaps) do swap.rpc._core:set_registry(swap.callables) end
  core.set_global_callables(swaps.global)
  -- the predicates are already in place (registry.swap_predicates)
end

local function rollback()
  registry.global = run.global
  registry.swap_predicates(run.predicates)
  for rpc, old in pairs(run.old) do rpc.registry = old end
end

local function count(entries)
  local n = 0
  for _ in next, entries do n = n + 1 end
  return n
end

-- Names the host looks up after the swap: each registry counted once.
local function count_names(swaps)
  local global = field_of(registry.global, 'entries') or {}
  local seen, n = { [global] = true }, count(global)
  for _, swap in ipairs(swaps) do
    if not seen[swap.entries] then
      seen[swap.entries] = true
      n = n + count(swap.entries)
    end
  end
  return n
end

-- The names an old registry had and its replacement has not, over every
-- registry swapped, for the log: a name that vanished by mistake (one a
-- cached module registered, say) shows there.
local function gone_names(swaps)
  local gone, seen = {}, {}
  local function compare(old, new)
    if old == new then return end
    for name in next, old do
      if rawget(new, name) == nil and not seen[name] then
        seen[name] = true
        gone[#gone + 1] = name
      end
    end
  end
  compare(field_of(run.global, 'entries') or {}, field_of(registry.global, 'entries') or {})
  for _, swap in ipairs(swaps) do compare(field_of(run.old[swap.rpc], 'entries') or {}, swap.entries) end
  table.sort(gone, function(a, b) return tostring(a) < tostring(b) end)
  if #gone == 0 then return nil end
  local shown = {}
  for i = 1, math.min(#gone, 10) do shown[i] = tostring(gone[i]) end
  return table.concat(shown, ', ') .. (#gone > 10 and (', and %d more'):format(#gone - 10) or '')
end

--- The reloader the host runs: -> true, line to log | false, line to log.
function reload.run()
  if run then                  -- a run this function could not finish (out of memory)
    registry.guard = nil
    rollback()
    run = nil
  end
  local script = core.script()
  if not script then
    local why = 'no script file to run again (pseud-lua ran -e code or stdin)'
    core.log('warn', 'reload asked: nothing to reload', { reason = why })
    return false, 'reload asked: ' .. why
  end
  local path = script.path
  local chunk, err = loadfile(path)
  if not chunk then
    core.log('warn', 'reload failed, kept the old registries', { script = path, error = err })
    return false, ('reload of %s failed, kept the old registries: %s'):format(path, err)
  end
  run = { co = coroutine.create(chunk), seen = {}, old = {}, notes = {}, live = {},
          global = registry.global, predicates = registry.swap_predicates({}) }
  -- the registries the host looks names up in now: a registration into
  -- one of them would be seen at once, and kept by a run that fails
  run.live[registry.global] = true
  for _, e in ipairs(made) do run.live[e.rpc.registry] = true end
  registry.guard = guard
  registry.global = registry.new('global')
  local done, why = pcall(execute, script)       -- our own code failing still rolls back
  registry.guard = nil
  if done and why == nil then
    for _, e in ipairs(made) do
      if run.old[e.rpc] == nil then
        run.notes[#run.notes + 1] = ("%s '%s' was not made again by the script: it keeps its old names")
          :format(e.rpc._kind, e.rpc.name)
      end
    end
    local swaps, bad = plan()
    if swaps then
      local n, gone, notes = count_names(swaps), gone_names(swaps), run.notes
      commit(swaps)
      run = nil
      for _, note in ipairs(notes) do core.log('warn', note) end
      core.log('info', 'reloaded', { script = path, names = n, gone = gone })
      return true, ('reloaded %s: %d names%s'):format(path, n, gone and ' (gone: ' .. gone .. ')' or '')
    end
    why = bad
  end
  rollback()
  run = nil
  core.log('warn', 'reload failed, kept the old registries', { script = path, error = why })
  return false, ('reload of %s failed, kept the old registries: %s'):format(path, tostring(why))
end

core.set_reloader(reload.run)

return reload
