--[[
spec/scripts/routing.lua: routing by domain in one process (inproc), for
routing_spec.lua. Prints `key value` lines, then `done`.
]]
local pseud = require 'pseud'

local seen_ctx
pseud.register_auth_backend {
  name = 'roles', side = 'server',
  -- its result's fields are copied raw: a __pairs that spins (an attack
  -- round) made every call fail LuaError at max_hook_time
  get_predicate_arguments = function(_, user_id)
    return setmetatable({ role = user_id:match('^(%a+)') }, { __pairs = function() while true do end end })
  end,
}
pseud.register_predicate('admins', function(ctx)
  seen_ctx = ctx
  return ctx.role == 'admin'
end)
pseud.register_predicate('broken', function() error('predicate bug') end)
pseud.register_predicate('nobody', function() return false end)

local server = pseud.Server('service', { security_plugin = 'roles' })
server:bind('inproc://routing')
-- local restricted entry, global default: a refused local entry falls through
server:register_rpc('layered', function() return 'local admin' end, { domain = 'admins' })
pseud.register_rpc('layered', function() return 'global default' end)
-- a raising predicate refuses; the default answers
server:register_rpc('guarded', function() return 'broken domain' end, { domain = 'broken' })
server:register_rpc('guarded', function() return 'default' end)
-- no domain accepts and there is no default
server:register_rpc('closed', function() return 'never' end, { domain = 'nobody' })

local function client(identity)
  local c = pseud.Client('service', { identity = identity, timeout = 2 })
  c:connect('inproc://routing')
  return c
end
local user, admin = client('user-1'), client('admin-1')

local function try(f)
  local ok, v = pcall(f)
  if ok then return v end
  return v.name .. ': ' .. v.message
end

print('user layered', try(function() return user.layered():get() end))
print('admin layered', try(function() return admin.layered(7, pseud.kwargs { k = 'v' }):get() end))
print('ctx', seen_ctx.user_id, seen_ctx.routing_id, seen_ctx.name, seen_ctx.args.n, seen_ctx.args[1],
  seen_ctx.kwargs.k, seen_ctx.role)
print('user guarded', try(function() return user.guarded():get() end))
print('user closed', try(function() return user.closed():get() end))
print('done')
