--[[
spec/servers/reload.lua DIR [ENDPOINT]: a server for reload_spec.lua. The
spec runs a copy of it (DIR/server.lua), so that it can break the copy.
Reads DIR/version.txt at its top level: every handler answers that
version, so a call tells which run of the script registered it. Files in
DIR steer a run: fail.txt / spin.txt holding this version make that run
raise halfway through its registrations / loop forever there (tostring.txt:
raise a value whose __tostring loops forever; badreg.txt: give the server
a registry option that is not a registry, its __index spinning;
junkglobal.txt: replace pseud.registry.global with a table that is none); bind.txt /
client.txt make it bind a new address / make a new client; shared.txt
makes it register into the first run's global registry; timeout.txt is
the server's timeout option.
Prints `ready <endpoint>` on the first run only (pseud.reloading()).
]]
local pseud = require 'pseud'

local dir = arg[1]
local function read(name)
  local f = io.open(dir .. '/' .. name)
  if not f then return nil end
  local v = f:read('l')
  f:close()
  return v
end

local version = assert(read('version.txt'))
pseud.configure { max_reload_time = 0.5 }

-- badreg.txt: a registry option that is not a registry, whose __index spins
local registry_option
if read('badreg.txt') == version then
  registry_option = setmetatable({ name = 'bad', entries = {}, register = function() end },
    { __index = function() while true do end end })
end
local server = pseud.Server('service', { stop_timeout = 1, timeout = tonumber(read('timeout.txt') or 10),
                                         registry = registry_option })
local endpoint = assert(server:bind(arg[2] or 'tcp://127.0.0.1:*'))
if read('bind.txt') == version then server:bind('inproc://reload-spec-new') end   -- not done on a reload
if read('client.txt') == version then pseud.Client('other') end                    -- fails a reload

server:register_rpc('version', function() return version end)
pseud.register_rpc('global_version', function() return 'global ' .. version end)
server:register_rpc('only_' .. version, function() return version end)
-- tells the spec it runs and when it ends (on stdout, where the reload's
-- log line comes too), sleeping in between: a handler the reload finds
-- running
server:register_rpc('slow', function(seconds)
  io.stdout:write('slow ', version, '\n')
  io.stdout:flush()
  pseud.sleep(seconds)
  io.stdout:write('slow done ', version, '\n')
  io.stdout:flush()
  return version
end)
-- a handler blocked in a system call (a read on a pipe) when a SIGHUP
-- comes: says `reading` once it is, returns what it read or why it could not
server:register_rpc('blocking_read', function()
  local pipe = assert(io.popen('echo started; sleep 1; echo piped'))
  assert(pipe:read('l') == 'started')
  io.stdout:write('reading ', version, '\n')
  io.stdout:flush()
  local line, err = pipe:read('l')
  pipe:close()
  return line or ('failed: ' .. tostring(err))
end)
-- pseud.reload() from a handler: {true} or {false, why}
server:register_rpc('reload', function()
  local ok, why = pseud.reload()
  return { ok or false, why }
end)
pseud.register_predicate('vip', function(ctx) return ctx.args[1] == version end)
server:register_rpc('vip', function() return 'vip ' .. version end, { domain = 'vip' })

-- the global registry of the first run, kept across runs: a reload must
-- refuse to register into it (the host looks names up there until the swap)
rawset(_G, 'first_global', rawget(_G, 'first_global') or require('pseud.registry').global)
if read('shared.txt') == version then
  pseud.register_rpc('sneaky', function() return version end, { registry = rawget(_G, 'first_global') })
end
server:register_rpc('refs', function()
  collectgarbage()
  return require('pseud.core').counts().registry
end)

if read('fail.txt') == version then error('failing on purpose in ' .. version) end
if read('tostring.txt') == version then      -- an error value that never describes itself
  error(setmetatable({}, { __tostring = function() while true do end end }))
end
if read('spin.txt') == version then
  while true do end
end
server:register_rpc('after_' .. version, function() return version end)

if not pseud.reloading() then
  io.stdout:write('ready ', endpoint, '\n')
  io.stdout:flush()
end
-- junkglobal.txt: pseud's own global registry replaced, after the
-- registrations, by a table that is none
if read('junkglobal.txt') == version then require('pseud.registry').global = { name = 'junk' } end
server:start()
print('stopped')
