--- pseud.tools: the helper commands of pseud-lua.
--   pseud-lua keygen [NAME]        CURVE keypair: NAME.key (public), NAME.key_secret (0600)
--   pseud-lua passwd FILE LOGIN    add or replace LOGIN's argon2 hash in FILE (password on stdin)
local core = require 'pseud.core'

local tools = {}

local function die(message)
  io.stderr:write('pseud-lua: ', message, '\n')
  os.exit(1)
end

function tools.keygen(name)
  name = name or 'pseud'
  local public, secret = core.curve_keypair()
  local ok, err = core.write_private(name .. '.key_secret', secret .. '\n')
  if not ok then die(err) end
  local f, ferr = io.open(name .. '.key', 'w')
  if not f then die(ferr) end
  f:write(public, '\n')
  f:close()
  print(('wrote %s.key (public) and %s.key_secret (secret, mode 0600)'):format(name, name))
end

function tools.passwd(file, login)
  if not file or not login then die('usage: pseud-lua passwd FILE LOGIN   (the password is read from stdin)') end
  if login:find('%s') or login:find('#', 1, true) then die('a login has no spaces and no #') end
  local password = io.read('l')
  if not password or password == '' then die('no password on standard input') end
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
