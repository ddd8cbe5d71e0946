-- The seed's "Remote Calls" example, client side.
-- Run: pseud-lua examples/remote_calls_client.lua [ENDPOINT]
local pseud = require 'pseud'

local client = pseud.Client('remote')
client:connect(arg[1] or 'tcp://127.0.0.1:5555')

local future1 = client.lower('ABC')
local future2 = client.upper('def')

assert(future1:get() == 'abc')
assert(future2:get() == 'DEF')
assert(client.this.is.a.name():get() == 'Done')
print(future1:get(), future2:get(), client.this.is.a.name():get())
