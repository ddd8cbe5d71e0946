-- A server for logs_spec: hello, a failing handler, a domain whose predicate
-- raises, a line logged from Lua; with arg[1] == 'plain', PLAIN logins
-- checked by a function.
local pseud = require 'pseud'

local opts = {}
if arg[1] == 'plain' then
  opts.security_plugin = 'plain'
  opts.credentials = function(login, password) return login == 'alice' and password == 'wonderland' end
end
local server = pseud.Server('logs', opts)
local endpoint = assert(server:bind('tcp://127.0.0.1:*'))
server:register_rpc('hello', function(name) return 'Hello ' .. name end)
server:register_rpc('fail', function() error('boom') end)
server:register_rpc('say', function(level, text)
  pseud.log(level, text, { from = 'script', n = 7 })
  return pseud.log_level()
end)
pseud.register_predicate('bad', function() error('predicate boom') end)
server:register_rpc('guarded', function() return 'never' end, { domain = 'bad' })
print('ready ' .. endpoint)
io.stdout:flush()
server:start()
