--[[
spec/servers/identity.lua BACKEND ARGS...: the server of identity_spec.lua.
  plain FILE                 credentials_file FILE
  hello                      a HELLO login is the user id, WORK is not gated
  untrusted_curve KEY FILE   keypair KEY, credentials_file FILE
  noop_auth_backend          everyone, user id = routing id (the default)
Prints `ready <endpoint>`.
  ask(user)     send_to(user).whoami(): what that peer answered, or the error name
  slow(s)       sleeps s seconds, returns the caller's user id
  whoami()      the caller's user id
  routed()      the same, under domain 'same' (a predicate reads ctx.user_id)
  stats()       the password pool's counters (checked, dummy, refused_busy, ...)
]]
local pseud = require 'pseud'
local core = require 'pseud.core'

local backend = arg[1]
local opts = { security_plugin = backend, timeout = 3 }
if backend == 'hello' then
  -- a HELLO login becomes the user id, with no gate on WORK: the host keeps
  -- the user id in C until a predicate asks for it (dispatch.c)
  pseud.register_auth_backend {
    name = 'hello', side = 'server',
    handle_hello = function(_, _, _, login) return true, 'welcome', login end,
  }
  -- the spec's logins are 'u' repeated: the predicate sees the whole id
  pseud.register_predicate('same', function(ctx) return ctx.user_id == ('u'):rep(#ctx.user_id) end)
elseif backend == 'plain' then
  opts.credentials_file = arg[2]
elseif backend == 'untrusted_curve' then
  opts.public_key, opts.secret_key = pseud.load_keypair(arg[2])
  opts.credentials_file = arg[3]
end
local server = pseud.Server('service', opts)
local endpoint = assert(server:bind('tcp://127.0.0.1:*'))

server:register_rpc('ask', function(user)
  local ok, v = pcall(function() return server:send_to(user).whoami():get() end)
  if ok then return v end
  return v.name
end)
server:register_rpc('slow', function(s)
  pseud.sleep(s)
  return (pseud.caller())
end)
server:register_rpc('whoami', function() return (pseud.caller()) end)
server:register_rpc('routed', function() return (pseud.caller()) end, { domain = 'same' })
server:register_rpc('stats', function() return pseud.map(core.passwd_stats() or {}) end)

io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()
server:start()
