--[[
spec/clients/cluster_call.lua ENDPOINT NAME [ARG...]: call NAME(ARG...) on
a node of cluster_spec.lua (ARGs are JSON) and print the result as JSON on
one line.
]]
local pseud = require 'pseud'
local json = require 'dkjson'

local client = pseud.Client('service', { timeout = tonumber(os.getenv('PSEUD_SPEC_TIMEOUT')) or 10 })
assert(client:connect(arg[1]))
local args = {}
for i = 3, #arg do args[#args + 1] = json.decode(arg[i]) end
-- values JSON has no form for (pseud.null, binary) print as their tostring
local function other(_, value) return json.quotestring(tostring(value)) end
print(json.encode(client:call(arg[2], table.unpack(args)):get(), { exception = other }))
