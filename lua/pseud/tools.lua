--- pseud.tools: the helper commands of pseud-lua.
--   pseud-lua keygen [--force] [NAME]  CURVE keypair: NAME.key (public), NAME.key_secret (0600);
--                                      an existing key is replaced only with --force
--   pseud-lua passwd FILE LOGIN        add or replace LOGIN's argon2 hash in FILE (0600); the
--                                      password is read from stdin, without echo on a terminal
-- Every file is written by core.write_private: a temp file renamed over the
-- target, so a crash leaves the old file or the new one, and a symlink at the
-- target is replaced, never written through.
local core = require 'pseud.core'

local tools = {}

local PUBLIC_MODE = tonumber('644', 8)

local function die(message)
  io.stderr:write('pseud-lua: ', message, '\n')
  os.exit(1)
end

function tools.keygen(...)
  local force, name = false, nil
  for _, word in ipairs { ... } do
    if word == '--force' then
      force = true
    elseif word:sub(1, 1) == '-' or name then
      die('usage: pseud-lua keygen [--force] [NAME]')
    else
      name = word
    end
  end
  name = name or 'pseud'
  -- A key pair is replaced only when asked: losing a secret key locks out
  -- every peer that trusts it. lexists: a dangling symlink counts too.
  if not force then
    for _, path in ipairs { name .. '.key_secret', name .. '.key' } do
      local exists, err = core.lexists(path)
      if exists == nil then die(err) end
      if exists then die(path .. ' exists: not overwriting it (use --force to replace the key pair)') end
    end
  end
  local public, secret = core.curve_keypair()
  local ok, err = core.write_private(name .. '.key_secret', secret .. '\n')
  if not ok then die(err) end
  ok, err = core.write_private(name .. '.key', public .. '\n', PUBLIC_MODE)
  if not ok then die(err) end
  print(('wrote %s.key (public) and %s.key_secret (secret, mode 0600)'):format(name, name))
end

function tools.passwd(file, login)
  if not file or not login then die('usage: pseud-lua passwd FILE LOGIN   (the password is read from stdin)') end
  if login:find('%s') or login:find('#', 1, true) then die('a login has no spaces and no #') end
  local password, perr = core.read_password(('Password for %s: '):format(login))
  if not password then die(perr) end
  if password == '' then die('an empty password is refused') end
  local lines, replaced = {}, false
  local f = io.open(file, 'r')
  if f then
    for line in f:lines() do
      if line:match('^%s*(%S+)') == login then
        if not replaced then lines[#lines + 1] = login .. ' ' .. core.pwhash(password) end
        replaced = true
      else
        lines[#lines + 1] = line
      end
    end
    f:close()
  end
  if not replaced then lines[#lines + 1] = login .. ' ' .. core.pwhash(password) end
  local ok, err = core.write_private(file, table.concat(lines, '\n') .. '\n')
  if not ok then die(err) end
  print(('%s %s in %s'):format(replaced and 'updated' or 'added', login, file))
end

function tools.main(command, ...)
  local fn = tools[command]
  if not fn or command == 'main' then die('unknown command ' .. tostring(command)) end
  fn(...)
end

return tools
