--[[
spec/clients/reload.lua ENDPOINT CASE ...: calls for reload_spec.lua;
prints result lines, then `done`.
  load DIR WINDOW   'version' calls without a pause, WINDOW of them in
                    flight, until DIR/stop exists; prints `seen V` the first
                    time an answer is V, then the tally `ok=N failed=N`
  calls NAME[=ARG]  one call each, in turn: `NAME<TAB>ok<TAB>value` or
                    `NAME<TAB>ErrorName<TAB>message`
]]
local pseud = require 'pseud'

local endpoint, case = arg[1], arg[2]
local client = pseud.Client('service', { timeout = 10 })
assert(client:connect(endpoint))

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local cases = {}

function cases.load(dir, window)
  window = tonumber(window)
  local seen, ok, failed, first_failure = {}, 0, 0, nil
  local ring = {}
  for i = 1, window do ring[i] = client.version() end
  local i, stopping = 0, false
  while true do
    i = i % window + 1
    local f = ring[i]
    if not f then break end
    local good, v = pcall(f.get, f)
    if good then
      ok = ok + 1
      if not seen[v] then
        seen[v] = true
        print('seen ' .. v)
        io.stdout:flush()
      end
    else
      failed = failed + 1
      first_failure = first_failure or tostring(v)
    end
    if not stopping and ok % 20 == 0 then stopping = exists(dir .. '/stop') end
    ring[i] = not stopping and client.version() or nil
  end
  print(('ok=%d failed=%d'):format(ok, failed) .. (first_failure and ' ' .. first_failure or ''))
end

function cases.calls(...)
  for _, spec in ipairs({ ... }) do
    local name, a = spec:match('^([^=]+)=?(.*)$')
    local f = a ~= '' and client:call(name, a) or client:call(name)
    local good, v = pcall(f.get, f)
    if good then
      if type(v) == 'table' then
        local parts = {}
        for k = 1, 2 do parts[k] = tostring(v[k]) end
        v = table.concat(parts, ',')
      end
      print(name, 'ok', tostring(v))
    else
      print(name, v.name, v.message)
    end
  end
end

cases[case](table.unpack(arg, 3))
print('done')
