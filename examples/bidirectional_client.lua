-- The client side of bidirectional_server.lua: it registers `addition` and
-- serves it; its identity 'client' is how the server addresses it.
local pseud = require 'pseud'

local client = pseud.Client('service', { identity = 'client' })
client:connect(arg[1] or 'tcp://127.0.0.1:5555')

client:register_rpc('addition', function(a, b)
  print(('server asked for %d + %d'):format(a, b))
  client:stop()                 -- one call is all this example waits for
  return a + b
end)

assert(client.ready():get() == 'ok')
client:start()                  -- serve until stop()
