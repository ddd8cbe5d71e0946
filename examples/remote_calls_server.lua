-- The seed's "Remote Calls" example: string.lower registered for this server
-- only, string.upper for every RPC of the process, and a dotted name.
-- Run: pseud-lua examples/remote_calls_server.lua [ENDPOINT]
local pseud = require 'pseud'

local server = pseud.Server('remote')
local endpoint = assert(server:bind(arg[1] or 'tcp://127.0.0.1:5555'))

-- register locally for this server only
server:register_rpc('lower', string.lower)
-- register globally for all rpc instances
pseud.register_rpc('upper', string.upper)
-- a dotted name of your own
pseud.register_rpc('this.is.a.name', function() return 'Done' end)

print('remote server listening on ' .. endpoint .. ' (Ctrl-C stops it)')
io.stdout:flush()
server:start()
