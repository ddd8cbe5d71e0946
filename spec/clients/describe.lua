--[[
spec/clients/describe.lua ENDPOINT IDENTITY [NAME]: a Lua client with that
identity calls client._pseud.describe() (or NAME) on 'service' and prints
one line `name|doc` per entry (doc `-` when null), or `error CLASS|MESSAGE`,
then `done`.
]]
local pseud = require 'pseud'

local client = pseud.Client('service', { identity = arg[2], timeout = 5 })
assert(client:connect(arg[1]))
local ok, list = pcall(function()
  if arg[3] then return client:call(arg[3]):get() end
  return client._pseud.describe():get()
end)
if not ok then
  print(('error %s|%s'):format(list.name, list.message))
elseif type(list) == 'table' then
  for _, e in ipairs(list) do
    print(('%s|%s'):format(e.name, e.doc == pseud.null and '-' or e.doc))
  end
else
  print(tostring(list))
end
print('done')
