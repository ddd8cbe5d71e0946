--- Read the host's log lines (logfmt, src/log.h) back into tables, so specs
-- check fields rather than wording.
local logfmt = {}

local function unescape(v)
  return (v:gsub('\\x(%x%x)', function(h) return string.char(tonumber(h, 16)) end)
           :gsub('\\(["\\])', '%1'))
end

--- The fields of one line as a table of strings, or nil if it is not a
-- logfmt line with time, level and msg.
function logfmt.parse(line)
  local rec, pos = {}, 1
  while pos <= #line do
    local key, after = line:match('^([%w_]+)=()', pos)
    if not key then
      if line:sub(pos, pos + 3) == '...' then break end   -- a cut line
      return nil
    end
    local value
    if line:sub(after, after) == '"' then
      local i, buf = after + 1, {}
      while true do
        local c = line:sub(i, i)
        if c == '' then return nil end
        if c == '\\' then buf[#buf + 1] = line:sub(i, i + 1); i = i + 2
        elseif c == '"' then break
        else buf[#buf + 1] = c; i = i + 1 end
      end
      value, pos = unescape(table.concat(buf)), i + 1
    else
      local raw, stop = line:match('^([^ ]*)()', after)
      value, pos = raw, stop
    end
    rec[key] = value
    pos = line:match('^ *()', pos)
  end
  if not (rec.time and rec.level and rec.msg) then return nil end
  return rec
end

--- Every logfmt line of `text`, parsed (other lines are left out).
function logfmt.records(text)
  local out = {}
  for line in text:gmatch('[^\n]+') do out[#out + 1] = logfmt.parse(line) end
  return out
end

--- The records of `text` having every field of `want` (exact values), in order.
function logfmt.find_all(text, want)
  local hits = {}
  for _, rec in ipairs(logfmt.records(text)) do
    local ok = true
    for k, v in pairs(want) do
      if rec[k] ~= tostring(v) then ok = false; break end
    end
    if ok then hits[#hits + 1] = rec end
  end
  return hits
end

--- The first such record, or nil.
function logfmt.find(text, want)
  return logfmt.find_all(text, want)[1]
end

--- Assert one record matches `want`; show the log if not.
function logfmt.expect(text, want)
  local rec = logfmt.find(text, want)
  if rec then return rec end
  local parts = {}
  for k, v in pairs(want) do parts[#parts + 1] = k .. '=' .. tostring(v) end
  table.sort(parts)
  error(('no log line with %s in:\n%s'):format(table.concat(parts, ' '), text), 2)
end

return logfmt
