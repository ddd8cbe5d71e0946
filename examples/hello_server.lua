-- The seed's first example: a server named 'service' with one callable.
-- Run: pseud-lua examples/hello_server.lua [ENDPOINT]
-- Then: pseud-lua call tcp://127.0.0.1:5555 service hello '"Charly"'
--       pseud-lua ls tcp://127.0.0.1:5555 service
local pseud = require 'pseud'

local server = pseud.Server('service')
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:5555'))

server:register_rpc('hello', function(name)
  return 'Hello ' .. name
end, { doc = 'greets NAME' })   -- the doc is what `pseud-lua ls` shows beside the name

print('hello server listening on ' .. endpoint .. ' (Ctrl-C stops it)')
io.stdout:flush()
server:start()   -- runs the loop until server:stop(), SIGINT or SIGTERM
