--[[
spec/servers/introspection.lua [off]: the server of introspection_spec.lua.
'service' on a free port (introspection = false with `off`), proxying to a
server 'back' (not bound); prints `ready <endpoint>`. A caller whose user id
(routing id: no authentication) is 'admin' passes the 'admin' predicate.
  hello              doc 'greets NAME'
  admin.reset        domain admin only, doc 'admins only'
  who                default doc 'anyone', and under domain admin doc 'the admin version'
  dup                here (doc 'local') and in the global registry (doc 'global')
  plain              no doc
  back.ping          in the proxied server's registry, doc 'from back'
  global.time        global, doc 'from the global registry'
  shy                domain 'nobody' only (no predicate: accepts nobody)
]]
local pseud = require 'pseud'

pseud.register_predicate('admin', function(ctx) return ctx.user_id == 'admin' end)

local back = pseud.Server('back')
back:register_rpc('back.ping', function() return 'pong' end, { doc = 'from back' })

local server = pseud.Server('service', { proxy_to = back, introspection = arg[1] ~= 'off' })
local endpoint = assert(server:bind('tcp://127.0.0.1:*'))

server:register_rpc('hello', function(name) return 'Hello ' .. name end, { doc = 'greets NAME' })
server:register_rpc('admin.reset', function() return 'reset' end, { domain = 'admin', doc = 'admins only' })
server:register_rpc('who', function() return 'anyone' end, { doc = 'anyone' })
server:register_rpc('who', function() return 'admin' end, { domain = 'admin', doc = 'the admin version' })
server:register_rpc('dup', function() return 'local' end, { doc = 'local' })
server:register_rpc('plain', function() return 'plain' end)
server:register_rpc('shy', function() return 'shy' end, { domain = 'nobody' })
pseud.register_rpc('dup', function() return 'global' end, { doc = 'global' })
pseud.register_rpc('global.time', function() return 0 end, { doc = 'from the global registry' })

io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()
server:start()
