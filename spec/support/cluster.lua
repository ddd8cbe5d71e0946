--- What cluster_spec.lua and cluster_redis_spec.lua share: a call to one
-- node of spec/servers/cluster.lua, made by spec/clients/cluster_call.lua.
local process = require 'spec.support.process'
local json = require 'dkjson'

local cluster = {}

--- call(node, name, args...) -> the decoded result; `node.endpoint` is the
-- node's; the arguments go as JSON.
function cluster.call(node, name, ...)
  local argv = { process.host(), 'spec/clients/cluster_call.lua', node.endpoint, name }
  for _, a in ipairs({ ... }) do argv[#argv + 1] = json.encode(a) end
  local out, ok, code, log = process.run(argv, { name = 'call-' .. name, timeout = 20 })
  assert(ok, ('call %s exited %s:\n%s\n%s'):format(name, tostring(code), out, process.read(log)))
  return json.decode(out)
end

return cluster
