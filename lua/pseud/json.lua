--- pseud.json: pseud values as JSON text and back, for the shell commands
-- (`pseud-lua call`, `ls`; lua/pseud/cli.lua).
--
-- Strict RFC 8259 text in, one value out, with what msgpack can say and JSON
-- cannot kept apart (docs/decisions.md "pseud-lua call: JSON"):
--   42 -> integer, 4.2 and 1e3 and 1.0 -> float; an integer past 64 bits is
--   refused, never rounded to a float; null -> pseud.null; [] -> array;
--   {} -> pseud.map (so an empty object stays a map on the wire).
--   Tagged objects (exactly these keys):
--     {"$base64": "..."}              bytes (travel as bin when not UTF-8)
--     {"$ext": TYPE, "data": "..."}   pseud.ext(TYPE, base64-decoded data)
--     {"$float": "inf"|"-inf"|"nan"}  the floats JSON has no literal for
-- Out: the same forms, compact, object keys sorted; a string that is not
-- valid UTF-8 prints as {"$base64": ...}; a float always shows a '.' or an
-- exponent (1.0, not 1) and the fewest digits that read back exactly.
--
-- Debian 12's lua-cjson (2.1.0) reads every number as a float (42 -> 42.0,
-- 2^53 + 1 rounded), cannot tell [] from {}, and prints 14 digits: hence
-- this small decoder and encoder. Speed does not matter here: one value per
-- command.
local core = require 'pseud.core'

local json = {}

--- Nesting allowed in a decoded value (the codec's own default limit).
json.MAX_DEPTH = 32

local EXT_MT = getmetatable(core.ext(0, ''))

-- --- base64 (RFC 4648, standard alphabet, padded) ---

local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local B64_VALUE = {}
for i = 1, 64 do B64_VALUE[B64:byte(i)] = i - 1 end

-- Two base64 characters for each 12-bit value: a group of 3 bytes is two
-- lookups (a 16 MiB bin took 5 s and 376 MB with a table per group).
local B64_PAIR = {}
for i = 0, 4095 do
  B64_PAIR[i] = B64:sub((i >> 6) + 1, (i >> 6) + 1) .. B64:sub((i & 63) + 1, (i & 63) + 1)
end

function json.base64_encode(s)
  local out, chunk, n = {}, {}, 0
  local whole = #s - #s % 3
  for i = 1, whole, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a << 16 | b << 8 | c
    n = n + 1
    chunk[n] = B64_PAIR[v >> 12] .. B64_PAIR[v & 4095]
    if n == 4096 then out[#out + 1], chunk, n = table.concat(chunk), {}, 0 end
  end
  out[#out + 1] = table.concat(chunk)
  local rest = #s - whole
  if rest > 0 then
    local a, b = s:byte(whole + 1, whole + 2)
    local v = a << 16 | (b or 0) << 8
    out[#out + 1] = (B64_PAIR[v >> 12] .. B64_PAIR[v & 4095]):sub(1, rest + 1) .. ('='):rep(3 - rest)
  end
  return table.concat(out)
end

--- The bytes of `s`, or nil and why.
function json.base64_decode(s)
  local pad = #s:match('=*$')
  local body = s:sub(1, #s - pad)
  if #s % 4 ~= 0 or pad > 2 then return nil, 'base64 length is not a multiple of 4' end
  local bad = body:find('[^A-Za-z0-9+/]')
  if bad then return nil, ('its character %d is not base64'):format(bad) end
  body = body .. ('A'):rep(pad)
  local out = {}
  for i = 1, #body, 4 do
    local a, b, c, d = body:byte(i, i + 3)
    local n = (B64_VALUE[a] << 18) | (B64_VALUE[b] << 12) | (B64_VALUE[c] << 6) | B64_VALUE[d]
    out[#out + 1] = string.char((n >> 16) & 255, (n >> 8) & 255, n & 255)
  end
  return table.concat(out):sub(1, #body // 4 * 3 - pad)
end

-- --- decoding ---

local function fail(pos, message)
  error({ pos = pos, message = message }, 0)
end

local ESCAPES = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

local function skip(text, pos)
  return text:find('[^ \t\r\n]', pos) or #text + 1
end

local function decode_string(text, pos)          -- pos at the opening quote
  local parts, i = {}, pos + 1
  while true do
    local j = text:find('[\0-\31"\\]', i)
    if not j then fail(pos, 'unterminated string') end
    parts[#parts + 1] = text:sub(i, j - 1)
    local c = text:sub(j, j)
    if c == '"' then
      local s = table.concat(parts)
      if not utf8.len(s) then
        fail(pos, 'string is not valid UTF-8 (bytes go as {"$base64": "..."})')
      end
      return s, j + 1
    elseif c == '\\' then
      local e = text:sub(j + 1, j + 1)
      if ESCAPES[e] then
        parts[#parts + 1] = ESCAPES[e]
        i = j + 2
      elseif e == 'u' then
        local hex = text:match('^%x%x%x%x', j + 2)
        if not hex then fail(j, 'bad \\u escape') end
        local cp = tonumber(hex, 16)
        i = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF then             -- a surrogate pair
          local low = text:match('^\\u(%x%x%x%x)', i)
          low = low and tonumber(low, 16)
          if not low or low < 0xDC00 or low > 0xDFFF then fail(j, 'lone surrogate in \\u escape') end
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
          i = i + 6
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          fail(j, 'lone surrogate in \\u escape')
        end
        parts[#parts + 1] = utf8.char(cp)
      else
        fail(j, 'bad escape in string')
      end
    else
      fail(j, 'control character in string (escape it)')
    end
  end
end

local function decode_number(text, pos)
  local int = text:match('^-?%d+', pos)
  if not int or int:match('^-?0%d') then fail(pos, 'bad number') end
  local i = pos + #int
  local frac = text:match('^%.%d+', i) or ''
  i = i + #frac
  local exp = text:match('^[eE][-+]?%d+', i) or ''
  i = i + #exp
  if text:match('^[.eE]', i) then fail(pos, 'bad number') end
  local s = int .. frac .. exp
  local n = tonumber(s)
  if frac == '' and exp == '' then
    if math.type(n) ~= 'integer' then fail(pos, ('integer %s does not fit in 64 bits'):format(s)) end
  else                                      -- a '.' or an exponent: tonumber gives a float
    if n == math.huge or n == -math.huge then fail(pos, ('number %s is too large for a float'):format(s)) end
  end
  return n, i
end

-- A decoded object that is a tagged value becomes that value.
local function untag(obj, pos)
  local keys = {}
  for k in pairs(obj) do keys[#keys + 1] = k end
  table.sort(keys)
  local shape = table.concat(keys, ',')
  if shape == '$base64' then
    if type(obj['$base64']) ~= 'string' then fail(pos, '"$base64" needs a string') end
    local bytes, err = json.base64_decode(obj['$base64'])
    if not bytes then fail(pos, '"$base64": ' .. err) end
    return bytes
  elseif shape == '$ext,data' then
    local t, data = obj['$ext'], obj.data
    if math.type(t) ~= 'integer' or t < -128 or t > 127 then fail(pos, '"$ext" needs an integer -128..127') end
    if type(data) ~= 'string' then fail(pos, '"$ext" needs "data", a base64 string') end
    local bytes, err = json.base64_decode(data)
    if not bytes then fail(pos, '"$ext" data: ' .. err) end
    return core.ext(t, bytes)
  elseif shape == '$float' then
    local f = ({ inf = math.huge, ['-inf'] = -math.huge, nan = 0.0 / 0.0 })[obj['$float']]
    if not f then fail(pos, '"$float" is "inf", "-inf" or "nan"') end
    return f
  end
  return obj
end

local decode_value

local function decode_container(text, pos, depth, close)
  if depth > json.MAX_DEPTH then fail(pos, ('nested deeper than %d levels'):format(json.MAX_DEPTH)) end
  local object = close == '}'
  local t = object and setmetatable({}, core.map_mt) or {}
  local n, i = 0, skip(text, pos + 1)
  if text:sub(i, i) == close then
    return object and untag(t, pos) or t, i + 1
  end
  while true do
    local key
    if object then
      if text:sub(i, i) ~= '"' then fail(i, 'expected a string key') end
      key, i = decode_string(text, i)
      i = skip(text, i)
      if text:sub(i, i) ~= ':' then fail(i, "expected ':'") end
      i = skip(text, i + 1)
    end
    local v
    v, i = decode_value(text, i, depth)
    if object then t[key] = v else n = n + 1; t[n] = v end
    i = skip(text, i)
    local c = text:sub(i, i)
    if c == close then
      return object and untag(t, pos) or t, i + 1
    elseif c ~= ',' then
      fail(i, ("expected ',' or '%s'"):format(close))
    end
    i = skip(text, i + 1)
  end
end

local LITERALS = { ['true'] = true, ['false'] = false }

decode_value = function(text, pos, depth)
  local c = text:sub(pos, pos)
  if c == '{' then return decode_container(text, pos, depth + 1, '}')
  elseif c == '[' then return decode_container(text, pos, depth + 1, ']')
  elseif c == '"' then return decode_string(text, pos)
  elseif c == '-' or c:match('%d') then return decode_number(text, pos)
  end
  local word = text:match('^%a+', pos)
  if word == 'null' then return core.null, pos + 4 end
  if LITERALS[word] ~= nil then return LITERALS[word], pos + #word end
  fail(pos, c == '' and 'no value' or 'expected a JSON value')
end

--- The pseud value of the JSON `text`, or nil and why (naming the
-- character where it went wrong).
function json.decode(text)
  local ok, value, pos = pcall(function()
    local v, i = decode_value(text, skip(text, 1), 0)
    i = skip(text, i)
    if i <= #text then fail(i, 'text after the value') end
    return v, i
  end)
  if ok then return value, pos end
  if type(value) ~= 'table' then error(value, 0) end          -- a bug, not the text
  return nil, ('%s at character %d'):format(value.message, value.pos)
end

-- --- encoding ---

local function encode_float(x)
  if x ~= x then return '{"$float":"nan"}' end
  if x == math.huge then return '{"$float":"inf"}' end
  if x == -math.huge then return '{"$float":"-inf"}' end
  local s
  for digits = 15, 17 do
    s = ('%.' .. digits .. 'g'):format(x)
    if tonumber(s) == x then break end
  end
  if not s:find('[.e]') then s = s .. '.0' end     -- reads back as a float
  return s
end

local CONTROL = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n',
                  ['\r'] = '\\r', ['\t'] = '\\t' }

local function encode_string(s)
  if not utf8.len(s) then return '{"$base64":"' .. json.base64_encode(s) .. '"}' end
  return '"' .. s:gsub('[\0-\31"\\]', function(c)
    return CONTROL[c] or ('\\u%04x'):format(c:byte())
  end) .. '"'
end

local encode

local function is_array(t)
  local mt = getmetatable(t)
  if mt == core.map_mt or mt == core.kwargs_mt then return false end
  local n, count = #t, 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

-- How many map keys that are maps or arrays may nest in one another: each
-- level escapes the text of the one inside it again, doubling it (a
-- 66-byte reply of 32 such levels made gigabytes; a 4 MiB one of 4 levels,
-- 128 MiB in 24 s). A key may be a map or an array whose keys are not.
local MAX_KEY_NESTING = 1

-- JSON keys are strings: other msgpack keys print as their JSON text, and
-- so does a string key that is not UTF-8 ({"$base64": ...} as a string).
local function key_text(k, depth, keys)
  if type(k) == 'string' then
    local text = encode_string(k)
    return text:sub(1, 1) == '"' and text or encode_string(text)
  end
  if type(k) == 'table' and keys >= MAX_KEY_NESTING then
    error(core.error('ValueError', 'map keys that are maps or arrays nested in one another: no JSON for them'), 0)
  end
  return encode_string(encode(k, depth, keys + 1))
end

encode = function(v, depth, keys)
  depth, keys = depth or 0, keys or 0
  if depth > 64 then error(core.error('ValueError', 'value nested too deep for JSON'), 0) end
  local kind = type(v)
  if v == nil or v == core.null then return 'null'
  elseif kind == 'boolean' then return tostring(v)
  elseif math.type(v) == 'integer' then return ('%d'):format(v)
  elseif kind == 'number' then return encode_float(v)
  elseif kind == 'string' then return encode_string(v)
  elseif getmetatable(v) == EXT_MT then
    return ('{"$ext":%d,"data":"%s"}'):format(v.type, json.base64_encode(v.data))
  elseif kind == 'table' then
    local out = {}
    if is_array(v) then
      for i = 1, #v do out[i] = encode(v[i], depth + 1, keys) end
      return '[' .. table.concat(out, ',') .. ']'
    end
    for k, x in pairs(v) do out[#out + 1] = { key_text(k, depth + 1, keys), x } end
    table.sort(out, function(a, b) return a[1] < b[1] end)
    for i, kv in ipairs(out) do out[i] = kv[1] .. ':' .. encode(kv[2], depth + 1, keys) end
    return '{' .. table.concat(out, ',') .. '}'
  end
  return encode_string(tostring(v))         -- nothing else arrives from msgpack
end

--- JSON text of the pseud value `v` (compact, keys sorted).
function json.encode(v)
  return encode(v)
end

return json
