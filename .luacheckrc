-- luacheck settings: Lua 5.4 (its std includes `arg`), no globals anywhere.
std = 'lua54'
max_line_length = 120

-- busted's globals in the specs, but not in the scripts the host runs there.
files['spec'] = { std = 'lua54+busted' }
files['spec/servers'] = { std = 'lua54' }
files['spec/clients'] = { std = 'lua54' }
files['spec/support'] = { std = 'lua54' }
