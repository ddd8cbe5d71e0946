--- pseud.auth: the built-in authentication backends (DESIGN.md section 3):
-- plain (PLAIN over ZAP) and trusted_curve (CURVE with an allow list).
--
-- The host runs one ZAP handler for the process; each server backend gets a
-- ZAP domain of its own, so a request reaches the backend of the socket it
-- is about. The user id a backend's zap() returns is what every message of
-- that peer then carries, so a peer cannot choose its identity.
-- Secrets (passwords, secret keys) never reach a log or an error message.
local core = require 'pseud.core'
local backends = require 'pseud.backends'

local auth = {}

local by_domain = {}             -- ZAP domain -> backend instance
local next_domain = 0


local function zap_dispatch(req)
  local backend = by_domain[req.domain]
  if not backend or not backend.zap then return nil, 'no authentication for this domain' end
  return backend:zap(req)
end

--- Give `backend` (a server instance) a ZAP domain; returns the domain.
function auth.zap_domain(backend)
  core.set_zap_handler(zap_dispatch)
  next_domain = next_domain + 1
  local domain = 'pseud-' .. next_domain
  by_domain[domain] = backend
  return domain
end

local function fail(message)
  error(core.error('ValueError', message), 0)
end

--- Read `path` as lines of two words, skipping blank lines and lines that
-- start with # (only those: Z85 keys may contain '#'); returns a table
-- first word -> second word.
local function read_pairs(path, what)
  local f, err = io.open(path, 'r')
  if not f then fail(('cannot read %s: %s'):format(what, err)) end
  local t, n = {}, 0
  for line in f:lines() do
    n = n + 1
    local a, b = line:match('^%s*(%S+)%s+(%S+)%s*$')
    if line:match('^%s*#') or not line:match('%S') then -- luacheck: ignore 542
    elseif a then t[a] = b
    else fail(('%s line %d: expected two words'):format(what, n)) end
  end
  f:close()
  return t
end

local function need(opts, field, kind)
  if type(opts[field]) ~= 'string' or opts[field] == '' then
    fail(("%s needs the option '%s'"):format(kind, field))
  end
  return opts[field]
end

--- Password check shared by plain and untrusted_curve: the `credentials`
-- function (the operator's own code, run as it is: true or false), or the
-- `credentials_file` of argon2 hashes: then a core.password_check that the
-- host verifies on its worker threads, off the loop. A login that is not in
-- the file is checked against a dummy hash, so it costs the same.
-- Options `password_threads` and `max_password_checks` size that pool.
local function password_checker(opts, kind)
  if opts.credentials then
    return function(login, password)
      local ok, yes = core.hook_pcall(opts.credentials, login, password)
      if not ok then
        core.log('warn', 'credentials function failed (refused)', { backend = kind, error = yes }, true)
      end
      return ok and yes == true
    end
  end
  local hashes = read_pairs(need(opts, 'credentials_file', kind), 'credentials_file')
  core.passwd_start(tonumber(opts.password_threads) or 0, tonumber(opts.max_password_checks) or 0)
  return function(login, password)
    return core.password_check(hashes[login], password)
  end
end

backends.register_auth {
  name = 'plain',
  side = 'both',
  option_names = { 'credentials', 'credentials_file', 'max_password_checks', 'password',
                   'password_threads', 'user_id' },
  configure = function(self, rpc)
    local o = rpc.options
    if rpc._kind == 'server' then
      self.check = password_checker(o, 'plain')
      rpc._core:set_security { plain_server = true, zap_domain = auth.zap_domain(self) }
    else
      rpc._core:set_security { plain_username = need(o, 'user_id', 'plain'),
                               plain_password = need(o, 'password', 'plain') }
    end
  end,
  zap = function(self, req)
    if req.mechanism ~= 'PLAIN' then return nil, 'PLAIN required' end
    local verdict = self.check(req.username, req.password)
    if verdict == true then return req.username end
    if verdict == false then return nil, 'wrong login or password' end
    return verdict, req.username               -- verified off the loop
  end,
}

-- The CURVE socket options of both curve backends.
local function curve_server(self, rpc, kind)
  rpc._core:set_security { curve_server = true, curve_secretkey = need(rpc.options, 'secret_key', kind),
                           zap_domain = auth.zap_domain(self) }
end

local function curve_client(rpc, kind)
  local o = rpc.options
  rpc._core:set_security { curve_serverkey = need(o, 'peer_public_key', kind),
                           curve_publickey = need(o, 'public_key', kind),
                           curve_secretkey = need(o, 'secret_key', kind) }
end

backends.register_auth {
  name = 'trusted_curve',
  side = 'both',
  option_names = { 'allow', 'allow_list', 'peer_public_key', 'public_key', 'secret_key' },
  configure = function(self, rpc)
    local o = rpc.options
    if rpc._kind == 'server' then
      if o.allow then
        self.allow = o.allow
      else
        local users = read_pairs(need(o, 'allow_list', 'trusted_curve'), 'allow_list')
        local keys = {}
        for user, key in pairs(users) do keys[key] = user end
        self.allow = function(key) return keys[key] end
      end
      curve_server(self, rpc, 'trusted_curve')
    else
      curve_client(rpc, 'trusted_curve')
    end
  end,
  zap = function(self, req)
    if req.mechanism ~= 'CURVE' then return nil, 'CURVE required' end
    local ok, user = core.hook_pcall(self.allow, req.client_key)
    if not ok then
      core.log('warn', 'allow function failed (refused)', { backend = 'trusted_curve', error = user }, true)
      return nil, 'refused'
    end
    if type(user) == 'string' and user ~= '' then return user end
    return nil, 'client key not allowed'
  end,
}

-- untrusted_curve: CURVE with any client key; WORK is answered UNAUTHORIZED
-- until a HELLO login/password passes (credentials / credentials_file, as
-- plain); from then on that connection's user id is the login (the host
-- keeps it per connection: a new connection starts over), so send_to(login),
-- ctx.user_id, pseud.caller() and peers() see the login, as in Python pseud.
-- Predicates also get it as ctx.login.
backends.register_auth {
  name = 'untrusted_curve',
  side = 'both',
  option_names = { 'credentials', 'credentials_file', 'max_password_checks', 'max_retries',
                   'password', 'password_threads', 'peer_public_key', 'public_key', 'secret_key',
                   'user_id' },
  configure = function(self, rpc)
    local o = rpc.options
    if rpc._kind == 'server' then
      self.check = password_checker(o, 'untrusted_curve')
      curve_server(self, rpc, 'untrusted_curve')
    else
      curve_client(rpc, 'untrusted_curve')
      rpc._core:set_login(need(o, 'user_id', 'untrusted_curve'), need(o, 'password', 'untrusted_curve'),
                          tonumber(o.max_retries) or 3)
    end
  end,
  zap = function(_, req)
    if req.mechanism ~= 'CURVE' then return nil, 'CURVE required' end
    return req.client_key
  end,
  is_authenticated = function(_, _, _, logged_in)
    return logged_in
  end,
  handle_hello = function(self, _, _, login, password)
    local welcome = ("Welcome '%s'"):format(login)
    local verdict = self.check(login, password)
    if verdict == true then return true, welcome, login end
    if verdict == false then return false, 'Invalid credentials' end
    return verdict, welcome, login             -- verified off the loop
  end,
  get_predicate_arguments = function(_, user_id)
    return { login = user_id }
  end,
}

--- pseud.load_keypair(path): the Z85 keys in `path` (public) and
-- `path .. '_secret'` (as written by `pseud-lua keygen`).
function auth.load_keypair(path)
  local function read(p)
    local f, err = io.open(p, 'r')
    if not f then error(core.error('ValueError', 'cannot read key: ' .. tostring(err)), 3) end
    local key = f:read('l')
    f:close()
    if not key or #key ~= 40 then error(core.error('ValueError', p .. ': not a Z85 CURVE key'), 3) end
    return key
  end
  return read(path), read(path .. '_secret')
end

return auth
