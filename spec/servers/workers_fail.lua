-- spec/servers/workers_fail.lua: a script whose top level raises in worker 2
-- only (workers_spec.lua): the control logs it, stops and exits 1.
local pseud = require 'pseud'
local server = pseud.Server('service')
assert(server:bind('tcp://127.0.0.1:*'))
-- arg[1] 'tostring': the error value's __tostring never returns (an attack
-- round: worker 2 hung, its calls were lost, SIGTERM did not stop it)
local value = arg[1] == 'tostring' and setmetatable({}, { __tostring = function() while true do end end })
  or 'boom in worker two'
-- arg[1] 'exit': worker 2 calls os.exit(0) (it ended the process with
-- status 0 and no log line: an attack round)
if arg[1] == 'exit' and pseud.worker_id() == 2 then os.exit(0) end
if pseud.role() == 'worker' and pseud.worker_id() == 2 then error(value) end
server:start()
