--- pseud.cli: `pseud-lua call` and `pseud-lua ls`, a pseud client from the shell.
--   pseud-lua call [options] ENDPOINT SERVICE NAME [ARG...]   ARGs are JSON values
--   pseud-lua ls [options] ENDPOINT SERVICE                   what this caller may call
-- Values go through pseud.json (integers stay integers, bytes as
-- {"$base64": ...}, ext as {"$ext": T, "data": ...}). main returns the exit
-- status: 0 done, 1 the peer answered ERROR, 2 usage (a bad option or
-- argument, named), 3 no answer (timeout, unreachable, refused handshake,
-- peer lost). The client is a fresh one per run, with a random identity.
local core = require 'pseud.core'
local pseud = require 'pseud'
local json = require 'pseud.json'

local cli = {}

local OK, REMOTE, USAGE, NO_ANSWER, UNPRINTABLE = 0, 1, 2, 3, 4

local USAGE_TEXT = [[
usage: pseud-lua call [options] ENDPOINT SERVICE NAME [ARG...]
       pseud-lua ls [options] ENDPOINT SERVICE
  call NAME on the pseud server SERVICE at ENDPOINT; each ARG is one JSON value
  ('"Charly"' 42 '{"a":1}' null); prints the result as JSON on stdout.
  ls prints the names this caller may call, one a line with its doc.
options (before ENDPOINT):
  --kwargs JSON            keyword arguments, a JSON object (call)
  --json                   print ls's list as JSON
  --timeout SECONDS        wait this long for the answer (default 5)
  --plain USER             PLAIN login; the password comes from $PSEUD_PASSWORD,
                           else a prompt without echo (or the first line of stdin)
  --curve-server-key KEY   CURVE: the server's public key (Z85) or a file holding it
  --curve-key FILE         CURVE: this client's key pair (FILE and FILE_secret, as
                           written by pseud-lua keygen); default: a new one per run
  --traceback              print the remote traceback of an ERROR (call)
JSON: integers stay integers, 1.0 is a float; bytes that are not UTF-8 are
{"$base64": "..."}; ext values {"$ext": TYPE, "data": "BASE64"}; inf and nan
{"$float": "inf"}. Exit: 0 ok, 1 the peer answered ERROR (class and message on
stderr), 2 usage, 3 no answer in time (unreachable, login refused, timeout),
4 the answer has no JSON form (map keys that are maps inside map keys).
]]

-- A server's text for the terminal: control bytes but tab and newline (an
-- escape sequence in a doc or an error message) as \xNN, and the C1
-- controls in UTF-8 (U+0080-U+009F: CSI, OSC) as \u00NN, so a peer cannot
-- drive the terminal.
local function printable(text)
  text = text:gsub('[%z\1-\8\11-\31\127]', function(c) return ('\\x%02x'):format(c:byte()) end)
  return (text:gsub('\194([\128-\159])', function(c) return ('\\u%04x'):format(c:byte()) end))
end

local function say(command, message)
  io.stderr:write('pseud-lua ', command, ': ', printable(message), '\n')
end

-- Raised by the parsing and calling code: a pseud.error value named
-- 'Exit' with the status in `code`; main turns it into that exit status.
local function quit(code, message)
  local e = core.error('Exit', '')
  e.message = message or ''                       -- as it is: core.error's is a C string, cut at a NUL
  e.code = code
  error(e, 0)
end

local VALUED = { ['--kwargs'] = 'call', ['--timeout'] = true, ['--plain'] = true,
                 ['--curve-server-key'] = true, ['--curve-key'] = true }
local FLAGS = { ['--json'] = 'ls', ['--traceback'] = 'call' }

--- Options (before the first word that is not one) and the words after.
local function parse(command, argv)
  local opts, words, i = {}, {}, 1
  while i <= #argv do
    local a = argv[i]
    if a == '--' then i = i + 1; break end
    if a == '-h' or a == '--help' then io.write(USAGE_TEXT); quit(OK) end
    if a:sub(1, 1) ~= '-' or a == '-' then break end
    local name, value = a:match('^(%-%-[%w-]+)=(.*)$')
    name = name or a
    local where = VALUED[name] or FLAGS[name]
    if not where or (where ~= true and where ~= command) then
      quit(USAGE, ("unknown option '%s' for %s (see --help)"):format(name, command))
    end
    if VALUED[name] then
      if not value then
        i = i + 1
        value = argv[i]
        if value == nil then quit(USAGE, ("option '%s' needs a value"):format(name)) end
      end
      opts[name:sub(3)] = value
    else
      if value then quit(USAGE, ("option '%s' takes no value"):format(name)) end
      opts[name:sub(3)] = true
    end
    i = i + 1
  end
  for j = i, #argv do words[#words + 1] = argv[j] end
  return opts, words
end

local function read_key_file(path, what)
  local f, err = io.open(path, 'r')
  if not f then quit(USAGE, ('%s: %s'):format(what, err)) end
  local key = f:read('l')
  f:close()
  if not key or #key ~= 40 then quit(USAGE, ('%s: %s does not hold a Z85 CURVE key'):format(what, path)) end
  return key
end

-- 16 random bytes as hex: this run's routing id is its own.
local function random_identity()
  local f = io.open('/dev/urandom', 'rb')
  local bytes = f and f:read(16)
  if f then f:close() end
  if not bytes or #bytes ~= 16 then bytes = tostring({}) .. os.time() .. os.clock() end
  return 'pseud-lua-' .. bytes:gsub('.', function(c) return ('%02x'):format(c:byte()) end):sub(1, 32)
end

--- The client options the command line asks for (auth, timeout).
local function client_options(opts)
  local timeout = 5
  if opts.timeout then
    timeout = tonumber(opts.timeout)
    if not timeout or timeout <= 0 or timeout ~= timeout or timeout == math.huge then
      quit(USAGE, ("--timeout: '%s' is not a positive number of seconds"):format(opts.timeout))
    end
  end
  local o = { timeout = timeout, identity = random_identity(), linger = 0 }
  if opts.plain then
    if opts.plain == '' then quit(USAGE, '--plain needs a login') end
    local password = os.getenv('PSEUD_PASSWORD')
    if not password then
      local err
      password, err = core.read_password(('Password for %s: '):format(opts.plain))
      if not password then quit(USAGE, ('--plain %s: %s (or set PSEUD_PASSWORD)'):format(opts.plain, err)) end
    end
    if password == '' then quit(USAGE, ('--plain %s: an empty password'):format(opts.plain)) end
    o.security_plugin, o.user_id, o.password = 'plain', opts.plain, password
  end
  local server_key = opts['curve-server-key']
  if server_key then
    if #server_key ~= 40 or core.lexists(server_key) then
      server_key = read_key_file(server_key, '--curve-server-key')
    end
    local public, secret
    if opts['curve-key'] then
      local path = opts['curve-key']
      public = read_key_file(path, '--curve-key')
      secret = read_key_file(path .. '_secret', '--curve-key')
    else
      public, secret = core.curve_keypair()
    end
    -- with a login too: the server takes any key, then the login (HELLO)
    o.security_plugin = o.user_id and 'untrusted_curve' or 'trusted_curve'
    o.peer_public_key, o.public_key, o.secret_key = server_key, public, secret
  elseif opts['curve-key'] then
    quit(USAGE, '--curve-key needs --curve-server-key')
  end
  return o
end

--- The positional arguments as pseud values; a bad one names itself.
local function decode_args(words, first, kwargs_text)
  local args = { n = 0 }
  for i = first, #words do
    local v, err = json.decode(words[i])
    if v == nil then
      quit(USAGE, ('argument %d (%s): not JSON: %s'):format(i - first + 1, words[i]:sub(1, 40), err))
    end
    args.n = args.n + 1
    args[args.n] = v
  end
  if kwargs_text then
    local kw, err = json.decode(kwargs_text)
    if kw == nil then quit(USAGE, ('--kwargs: not JSON: %s'):format(err)) end
    if getmetatable(kw) ~= core.map_mt then quit(USAGE, '--kwargs: must be a JSON object') end
    args.n = args.n + 1
    args[args.n] = pseud.kwargs(kw)
  end
  return args
end

--- The JSON text of an answer, or quits: some values have none.
local function shown(v)
  local ok, text = pcall(json.encode, v)
  if ok then return text end
  quit(UNPRINTABLE, 'the answer has no JSON form: ' .. (pseud.is_error(text) and text.message or tostring(text)))
end

--- Call `name` with `args` through a new client; the result, or quits.
local function remote_call(command, opts, endpoint, service, name, args)
  local copts = client_options(opts)
  local ok, client = pcall(pseud.Client, service, copts)
  if not ok then quit(USAGE, tostring(client)) end
  local attached, err = client:connect(endpoint)
  if not attached then client:close(); quit(USAGE, err) end
  local sent, future = pcall(client.call, client, name, table.unpack(args, 1, args.n))
  if not sent then
    client:close()
    quit(USAGE, pseud.is_error(future) and future.message or tostring(future))
  end
  local got, result = pcall(future.get, future)
  client:close()
  if got then return result end
  if not pseud.is_error(result) then quit(REMOTE, tostring(result)) end
  -- no answer: none came, or the server refused our handshake (our login
  -- or key; ZAP's refusal reaches us as UnauthorizedError 'handshake refused').
  -- Only errors raised here: the peer's own ERROR carries the call it
  -- answered (err.call), whatever its class says.
  local refused = result.name == 'UnauthorizedError' and result.message:find('^handshake refused')
  if result.call == nil and (result.name == 'TimeoutError' or result.name == 'PeerLostError'
                             or result.name == 'Interrupted' or refused) then
    quit(NO_ANSWER, ('%s: %s'):format(result.name, result.message))
  end
  if command == 'ls' and result.name == 'ServiceNotFoundError' then
    quit(REMOTE, ("%s: %s (the server offers no introspection: introspection = false, or not pseud-lua)")
      :format(result.name, result.message))
  end
  local text = ('%s: %s'):format(result.name, result.message)
  if opts.traceback and type(result.traceback) == 'string' and result.traceback ~= '' then
    text = text .. '\n' .. result.traceback
  end
  quit(REMOTE, text)
end

function cli.call(argv)
  local opts, words = parse('call', argv)
  if #words < 3 then quit(USAGE, 'usage: pseud-lua call [options] ENDPOINT SERVICE NAME [ARG...] (see --help)') end
  local endpoint, service, name = words[1], words[2], words[3]
  local args = decode_args(words, 4, opts.kwargs)
  local result = remote_call('call', opts, endpoint, service, name, args)
  io.write(shown(result), '\n')
  return OK
end

function cli.ls(argv)
  local opts, words = parse('ls', argv)
  if #words ~= 2 then quit(USAGE, 'usage: pseud-lua ls [options] ENDPOINT SERVICE (see --help)') end
  local list = remote_call('ls', opts, words[1], words[2], '_pseud.describe', { n = 0 })
  if opts.json then
    io.write(shown(list), '\n')
    return OK
  end
  if type(list) ~= 'table' then quit(REMOTE, 'the answer is not a list: ' .. shown(list)) end
  local width = 0                         -- the names' column, at most 40 wide
  for _, e in ipairs(list) do
    if type(e) == 'table' and type(e.name) == 'string' then width = math.max(width, math.min(#e.name, 40)) end
  end
  for _, e in ipairs(list) do
    if type(e) == 'table' and type(e.name) == 'string' then
      local name = printable(e.name)
      local doc = type(e.doc) == 'string' and printable((e.doc:gsub('%s+', ' '))) or ''
      local pad = (' '):rep(math.max(width - #name, 0) + 2)
      io.write(doc == '' and name or name .. pad .. doc, '\n')
    end
  end
  return OK
end

--- pseud-lua call|ls ARGS...: returns the exit status.
function cli.main(command, ...)
  local fn = (command == 'call' or command == 'ls') and cli[command]
  if not fn then say(tostring(command), 'unknown command'); return USAGE end
  local ok, status = pcall(fn, { ... })
  if ok then return status end
  if pseud.is_error(status) and status.name == 'Exit' then
    if status.message ~= '' then say(command, status.message) end
    return status.code
  end
  error(status, 0)
end

return cli
