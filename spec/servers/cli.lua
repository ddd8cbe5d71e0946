--[[
spec/servers/cli.lua: the server of cli_call_spec.lua ('service', a free port).
Prints `ready <endpoint>`.
  hello(name)      'Hello ' .. name
  echo(...)        its arguments back (several travel as an array)
  kw(a, kwargs)    {a, kwargs}: the keyword arguments as the handler got them
  fail()           ERROR ValueError 'bad input'
  sleep(s)         answers after s seconds
  nothing()        answers nil
  bytes()          a string that is not UTF-8 (travels as bin)
  (a 120-byte name, and 'ansi' whose doc and error carry a terminal escape)
  c1()             ERROR whose message carries a C1 control in UTF-8 (CSI, U+009B)
  says_timeout()   ERROR TimeoutError: the peer's own, not this call's
  bytes_key()      a map whose key is not UTF-8
]]
local pseud = require 'pseud'

local server = pseud.Server('service')
local endpoint = assert(server:bind('tcp://127.0.0.1:*'))

server:register_rpc('hello', function(name) return 'Hello ' .. name end, { doc = 'greets NAME' })
server:register_rpc('echo', function(...) return ... end, { doc = 'returns its arguments' })
server:register_rpc('kw', function(a, kwargs) return { a, kwargs or pseud.null } end)
server:register_rpc('fail', function() error(pseud.error('ValueError', 'bad input')) end)
server:register_rpc('sleep', function(s) pseud.sleep(s); return 'slept' end)
server:register_rpc('nothing', function() end)
server:register_rpc('bytes', function() return '\0\255\1' end)
server:register_rpc(('n'):rep(120), function() return 'long' end, { doc = 'a long name' })
server:register_rpc('ansi', function() error(pseud.error('ValueError', 'red \27[31mtext')) end,
                    { doc = 'colours \27[31mred\27[0m' })
server:register_rpc('c1', function() error(pseud.error('ValueError', 'csi \194\15531mred')) end)
server:register_rpc('says_timeout', function() error(pseud.error('TimeoutError', 'the peer says so')) end)
server:register_rpc('bytes_key', function() return { ['\255'] = 1 } end)

io.stdout:write('ready ', endpoint, '\n')
io.stdout:flush()
server:start()
