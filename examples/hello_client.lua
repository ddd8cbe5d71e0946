-- The seed's first example, client side: call hello on 'service'.
-- Run: pseud-lua examples/hello_client.lua [ENDPOINT]
local pseud = require 'pseud'

local client = pseud.Client('service', { timeout = 5 })
client:connect(arg[1] or 'tcp://127.0.0.1:5555')

local response = client.hello('Charly'):get()
assert(response == 'Hello Charly')
print(response)
