-- The seed's "Server wants to make the client working": the server calls a
-- callable registered by the client whose identity is 'client'.
-- Run: pseud-lua examples/bidirectional_server.lua [ENDPOINT]
--      pseud-lua examples/bidirectional_client.lua [ENDPOINT]
local pseud = require 'pseud'

local server = pseud.Server('service')
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:5555'))

-- A client says it is ready; the server then sends it work, in a task of its
-- own so this reply is not held up.
server:register_rpc('ready', function()
  pseud.spawn(function()
    local sum = server:send_to('client').addition(2, 4):get()
    print(('client says 2 + 4 = %d'):format(sum))
    io.stdout:flush()
  end)
  return 'ok'
end)

print('bidirectional server listening on ' .. endpoint .. ' (Ctrl-C stops it)')
io.stdout:flush()
server:start()
