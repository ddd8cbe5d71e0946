-- spec/servers/workers_fail.lua: a script whose top level raises in worker 2
-- only (workers_spec.lua): the control logs it, stops and exits 1.
local pseud = require 'pseud'
local server = pseud.Server('service')
assert(server:bind('tcp://127.0.0.1:*'))
if pseud.role() == 'worker' and pseud.worker_id() == 2 then error('boom in worker two') end
server:start()
