--[[
clock: a monotonic clock for timing assertions in the specs (the busted
process), where pseud.now is not at hand: loading pseud.core here would start
a host (ZeroMQ context, signal handlers, counting allocator) inside busted.

os.time() has a resolution of one second and follows the wall clock; os.clock()
is CPU time, which stands still while a spec waits. /proc/uptime is seconds
since boot (CLOCK_BOOTTIME, 10 ms steps): it never goes back and is not moved
by setting the date. Linux only, as the rest of spec/support (setsid, /proc).

Scripts run by pseud-lua (spec/clients, spec/servers) use pseud.now instead.
]]
local clock = {}

--- Monotonic seconds (10 ms resolution).
function clock.now()
  local f = assert(io.open('/proc/uptime', 'r'))
  local seconds = f:read('n')
  f:close()
  return assert(seconds, '/proc/uptime: no number')
end

return clock
