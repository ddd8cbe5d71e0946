-- The seed's "Job Routing": one name registered twice, in the default and in
-- a 'restricted' domain; a predicate lets only admins reach the restricted
-- one. A small auth backend says who is an admin (here: by user id).
-- Run: pseud-lua examples/job_routing.lua
local pseud = require 'pseud'

pseud.register_auth_backend {
  name = 'users',
  side = 'server',
  -- what predicates get in ctx, besides user_id, name, args and kwargs
  get_predicate_arguments = function(_, user_id)
    return { user = { name = user_id, admin = (user_id == 'admin') } }
  end,
}

pseud.register_predicate('restricted', function(ctx)
  return ctx.user.admin
end)

pseud.register_rpc('try_to_call_me', function() return 'small power' end)
pseud.register_rpc('try_to_call_me', function() return 'great power' end,
                   { domain = 'restricted' })

local server = pseud.Server('service', { security_plugin = 'users' })
server:bind('inproc://job-routing')

-- Without authentication a client's user id is its routing id (identity).
local lambda = pseud.Client('service', { identity = 'lambda' })
lambda:connect('inproc://job-routing')
local admin = pseud.Client('service', { identity = 'admin' })
admin:connect('inproc://job-routing')

print('lambda: ' .. lambda.try_to_call_me():get())
print('admin:  ' .. admin.try_to_call_me():get())
