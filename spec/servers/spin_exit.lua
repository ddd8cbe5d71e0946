--[[
spec/servers/spin_exit.lua: tasks spawned from the main chunk (no limits)
that spin for good; prints `ready` once they run, then serves until SIGTERM.
The process must still exit cleanly, and free every task record (a
sanitizer run reports a leak otherwise).
]]
local pseud = require 'pseud'

local server = pseud.Server('spin-exit')
assert(server:bind('tcp://127.0.0.1:*'))
local started = 0
for _ = 1, 5 do pseud.spawn(function() started = started + 1; while true do end end) end
pseud.spawn(function()
  while started < 5 do pseud.sleep(0.001) end
  io.stdout:write('ready\n')
  io.stdout:flush()
end)
server:start()
print('stopped')
