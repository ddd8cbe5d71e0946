-- Proxying (pseud's test_server_can_proxy_another_server): names the front
-- server does not know are looked up in the registry of the RPC it proxies
-- to, and run by the front server.
-- Run: pseud-lua examples/proxy.lua
local pseud = require 'pseud'

local back = pseud.Server('back')
back:register_rpc('string.lower', string.lower)

local front = pseud.Server('front', { proxy_to = back })
front:register_rpc('hello', function(name) return 'Hello ' .. name end)
front:bind('inproc://proxy')

local client = pseud.Client('front')
client:connect('inproc://proxy')

print(client.hello('proxy'):get())             -- front's own
print(client.string.lower('PROXIED'):get())     -- found in back's registry
