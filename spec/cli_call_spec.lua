-- pseud-lua call and ls from the shell: JSON arguments and results (every
-- JSON type through an echo handler, byte for byte), keyword arguments,
-- remote errors, timeouts and unreachable peers, bad JSON, PLAIN and CURVE
-- logins, a Python peer as the server. Exit status: 0 ok, 1 ERROR, 2 usage,
-- 3 no answer, 4 an answer with no JSON form.
local process = require 'spec.support.process'
local clock = require 'spec.support.clock'

local host = process.host()

--- pseud-lua ARGV...: stdout, exit code, stderr.
local function run(argv, name)
  local cmd = { host }
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  local out, _, code, log = process.run(cmd, { name = name or 'cli' })
  return out, code, io.open(log):read('a')
end

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

describe('pseud-lua call', function()
  local endpoint
  lazy_setup(function()
    local _
    _, endpoint = process.server('spec/servers/cli.lua')
  end)
  lazy_teardown(function() process.stop_all() end)

  it("calls examples/hello_server.lua: prints \"Hello Charly\", exit 0; ls shows hello's doc", function()
    local proc = process.start({ host, 'examples/hello_server.lua', 'tcp://127.0.0.1:*' }, { name = 'hello_server' })
    local ep = proc:wait_for('listening on (%S+)', 10, 10)
    local out, code, err = run { 'call', ep, 'service', 'hello', '"Charly"' }
    local listed, lcode = run { 'ls', ep, 'service' }
    proc:stop()
    assert.equal(0, code, err)
    assert.equal('"Hello Charly"\n', out)
    assert.equal(0, lcode)
    assert.matches('\nhello            greets NAME\n$', listed)
  end)

  it('passes every JSON type through an echo handler byte for byte', function()
    local args = {
      '"text"', '"\\"quoted\\" \\\\ tab\\t nl\\n \\u0001"', '"héllo wörld ☃ 😀"', '""',
      '42', '-7', '0', '9223372036854775807', '-9223372036854775808', '9007199254740993',
      '4.2', '1.0', '-0.0', '0.1', '1e+300', '1.5e-07', '123456789.12345679',
      'true', 'false', 'null', '[]', '{}',
      '[1,[2,[3,{}]],null,"x"]',
      '{"a":{"b":{"c":[1,2.5,"x",null,true]}},"empty":{},"list":[],"z":null}',
      '{"$base64":"AP8B"}', '{"$ext":5,"data":"AQI="}', '{"$ext":-1,"data":""}',
      '{"$float":"inf"}', '{"$float":"-inf"}',
    }
    local argv = { 'call', endpoint, 'service', 'echo' }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local out, code, err = run(argv)
    assert.equal(0, code, err)
    assert.equal('[' .. table.concat(args, ',') .. ']\n', out)
    -- one argument comes back as itself
    out = run { 'call', endpoint, 'service', 'echo', '{"k":[1,2.0,{"n":null}]}' }
    assert.equal('{"k":[1,2.0,{"n":null}]}\n', out)
  end)

  it('prints bytes that are not UTF-8 as $base64, nothing as null', function()
    assert.equal('{"$base64":"AP8B"}\n', (run { 'call', endpoint, 'service', 'bytes' }))
    assert.equal('null\n', (run { 'call', endpoint, 'service', 'nothing' }))
  end)

  it('sends --kwargs as keyword arguments', function()
    local out, code, err = run { 'call', '--kwargs', '{"greeting":"Hi","n":2}', endpoint, 'service', 'kw', '"Ann"' }
    assert.equal(0, code, err)
    assert.equal('["Ann",{"greeting":"Hi","n":2}]\n', out)
    out = run { 'call', '--kwargs={}', endpoint, 'service', 'kw', '1' }
    assert.equal('[1,null]\n', out)               -- an empty kwargs map: no extra argument
  end)

  it('takes negative numbers after the ENDPOINT as arguments, not options', function()
    assert.equal('[-1,-2.5]\n', (run { 'call', endpoint, 'service', 'echo', '-1', '-2.5' }))
  end)

  it('exits 1 on a remote ERROR, with its class and message on stderr', function()
    local out, code, err = run { 'call', endpoint, 'service', 'fail' }
    local _
    assert.equal(1, code)
    assert.equal('', out)
    assert.matches('ValueError: bad input', err)
    assert.is_nil(err:find('traceback', 1, true))
    _, code, err = run { 'call', '--traceback', endpoint, 'service', 'fail' }
    assert.equal(1, code)
    assert.matches('ValueError: bad input\n.*stack traceback', err)
    _, code, err = run { 'call', endpoint, 'service', 'no.such.name' }
    assert.equal(1, code)
    assert.matches('ServiceNotFoundError: no.such.name', err)
  end)

  it('exits 3 within the timeout when the answer does not come', function()
    local t0 = clock.now()
    local _, code, err = run { 'call', '--timeout', '0.5', endpoint, 'service', 'sleep', '3' }
    local took = clock.now() - t0
    assert.equal(3, code)
    assert.matches("TimeoutError: no reply within 0.5 s %(call 'sleep' to 'service'", err)
    assert.is_true(took < 2, ('took %.2f s'):format(took))
  end)

  it('exits 3 within the timeout when nothing listens at the endpoint', function()
    local proc, free = process.server('spec/servers/cli.lua')
    proc:stop()                                    -- its port is free now
    local t0 = clock.now()
    local _, code, err = run { 'call', '--timeout=0.5', free, 'service', 'hello', '"x"' }
    local took = clock.now() - t0
    assert.equal(3, code)
    assert.matches('TimeoutError: no reply within 0.5 s', err)
    assert.is_true(took < 2, ('took %.2f s'):format(took))
  end)

  it('exits 2 naming the argument that is not JSON, and why', function()
    local out, code, err = run { 'call', endpoint, 'service', 'echo', '1', "'single'" }
    local _
    assert.equal(2, code)
    assert.equal('', out)
    assert.matches("argument 2 %('single'%): not JSON: expected a JSON value at character 1", err)
    _, code, err = run { 'call', endpoint, 'service', 'echo', '[1,2' }
    assert.equal(2, code)
    assert.matches("argument 1 %(%[1,2%): not JSON: expected ',' or ']' at character 5", err)
    _, code, err = run { 'call', endpoint, 'service', 'echo', '18446744073709551615' }
    assert.equal(2, code)
    assert.matches('argument 1 .*integer 18446744073709551615 does not fit in 64 bits', err)
    _, code, err = run { 'call', endpoint, 'service', 'echo', ('['):rep(40) .. (']'):rep(40) }
    assert.equal(2, code)
    assert.matches('nested deeper than 32 levels', err)
    _, code, err = run { 'call', '--kwargs', '[1]', endpoint, 'service', 'echo' }
    assert.equal(2, code)
    assert.matches('%-%-kwargs: must be a JSON object', err)
  end)

  it("lists long names, and never passes a server's control bytes to the terminal", function()
    local out, code, err = run { 'ls', endpoint, 'service' }
    assert.equal(0, code, err)
    assert.matches('\n' .. ('n'):rep(120) .. '  a long name\n', out, 1, true)
    assert.matches('\nansi +colours \\x1b%[31mred\\x1b%[0m\n', out)
    assert.is_nil(out:find('\27', 1, true))
    out, code, err = run { 'call', endpoint, 'service', 'ansi' }
    assert.equal('', out)
    assert.equal(1, code)
    assert.matches('ValueError: red \\x1b[31mtext', err, 1, true)
    assert.is_nil(err:find('\27', 1, true))
  end)

  it('exits 2 on a usage mistake', function()
    local _, code, err = run { 'call', '--frobnicate', endpoint, 'service', 'hello' }
    assert.equal(2, code)
    assert.matches("unknown option '%-%-frobnicate'", err)
    _, code = run { 'call', endpoint, 'service' }
    assert.equal(2, code)
    _, code, err = run { 'call', '--timeout', 'soon', endpoint, 'service', 'hello' }
    assert.equal(2, code)
    assert.matches('%-%-timeout', err)
    _, code, err = run { 'call', 'not-an-endpoint', 'service', 'hello', '"x"' }
    assert.equal(2, code)
    assert.matches("cannot connect 'not%-an%-endpoint'", err)
    local out
    out, code = run { 'call', '--help' }
    assert.equal(0, code)
    assert.matches('usage: pseud%-lua call', out)
  end)

  it('calls a Python pseud peer (pypeer server) and prints its values', function()
    local _, ep = process.pyserver('pyservice')
    local out, code, err = run { 'call', ep, 'pyservice', 'types' }
    assert.equal(0, code, err)
    assert.equal('{"big":1099511627776,"bytes":{"$base64":"AP8="},"empty_array":[],"empty_map":{},'
      .. '"float":1.0,"half":0.5,"int":1,"negative":-5,"nested":[1,[2,[3]]],"no":false,'
      .. '"null_in_array":[1,null,3],"str":"héllo","yes":true}\n', out)
    out, code = run { 'call', '--kwargs', '{"a":[1.5]}', ep, 'pyservice', 'kw' }
    assert.equal(0, code)
    assert.equal('{"a":[1.5]}\n', out)
    _, code, err = run { 'call', ep, 'pyservice', 'fail' }
    assert.equal(1, code)
    assert.matches('ValueError: bad input', err)
    _, code, err = run { 'ls', ep, 'pyservice' }
    assert.equal(1, code)
    assert.matches('no introspection', err)
  end)

  -- A reply whose body is well-formed msgpack but has no Lua value ended
  -- no call: the future was let go before the value was pushed, so neither
  -- the reply nor the timeout settled it, and `call` hung past --timeout.
  it('ends a call at once with ProtocolError when the reply has no Lua value', function()
    local _, ep = process.pyserver('pyservice')
    for _, body in ipairs {
      'cfffffffffffffffff',                   -- uint64 past 2^63-1
      '81cb7ff800000000000000' .. '01',        -- {NaN: 1}
    } do
      local t0 = clock.now()
      local out, code, err = run { 'call', '--timeout', '5', ep, 'pyservice', 'raw', '"' .. body .. '"' }
      local took = clock.now() - t0
      assert.equal(1, code, err)
      assert.equal('', out)
      assert.matches("ProtocolError: msgpack: .*%(call 'raw' to 'pyservice'", err)
      assert.is_true(took < 3, ('%s took %.2f s'):format(body, took))
    end
  end)

  -- core.error keeps a C string: the message stopped at its first NUL
  it('prints a remote error message with a NUL whole, the NUL escaped', function()
    local _, ep = process.pyserver('pyservice')
    -- ERROR ['ValueError', 'a\0b', '']
    local out, code, err = run { 'call', ep, 'pyservice', 'raw_error', '"93aa56616c75654572726f72a3610062a0"' }
    assert.equal(1, code)
    assert.equal('', out)
    assert.matches('ValueError: a\\x00b\n', err, 1, true)
  end)

  -- A map key that is a map, nested: each level escaped the text of the
  -- one inside it again, so a 66-byte reply 32 levels deep made gigabytes
  -- of JSON (an attack round)
  -- (a 4 MiB reply of 4 levels still made 128 MiB in 24 s: one level now)
  it('prints a map key that is a map, and exits 4 at once on one inside a key', function()
    local _, ep = process.pyserver('pyservice')
    local out, code, err = run { 'call', ep, 'pyservice', 'raw', '"' .. ('81'):rep(2) .. '01' .. ('02'):rep(2) .. '"' }
    assert.equal(0, code, err)
    assert.equal('{"{\\"1\\":2}":2}\n', out)
    out, code, err = run { 'call', ep, 'pyservice', 'raw', '"' .. ('81'):rep(3) .. '01' .. ('02'):rep(3) .. '"' }
    assert.equal('', out)
    assert.equal(4, code, err)
    assert.matches('the answer has no JSON form: map keys that are maps or arrays nested in one another', err,
                   1, true)
    assert.is_nil(err:find('traceback', 1, true))
    local t0 = clock.now()
    out, code = run { 'call', ep, 'pyservice', 'raw', '"' .. ('81'):rep(32) .. '01' .. ('02'):rep(32) .. '"' }
    assert.equal('', out)
    assert.is_true(code == 4 and clock.now() - t0 < 3, ('exit %s after %.2f s'):format(code, clock.now() - t0))
  end)

  it('prints a map key that is not UTF-8 as the JSON text of its $base64 form: valid JSON', function()
    local out, code, err = run { 'call', endpoint, 'service', 'bytes_key' }
    assert.equal(0, code, err)
    assert.equal('{"{\\"$base64\\":\\"/w==\\"}":1}\n', out)
    -- (dkjson, not pseud.json: busted's own Lua must not load pseud.core,
    -- which the sanitizer build cannot be loaded into)
    assert.is_not_nil(require('dkjson').decode(out))
  end)

  it('escapes the C1 controls of UTF-8 (CSI) in a remote error, as it does ESC', function()
    local out, code, err = run { 'call', endpoint, 'service', 'c1' }
    assert.equal('', out)
    assert.equal(1, code)
    assert.matches('ValueError: csi \\u009b31mred\n', err, 1, true)
    assert.is_nil(err:find('\194\155', 1, true))
  end)

  it("exits 1 on the peer's own ERROR TimeoutError: it answered", function()
    local out, code, err = run { 'call', endpoint, 'service', 'says_timeout' }
    assert.equal('', out)
    assert.equal(1, code, err)
    assert.matches('TimeoutError: the peer says so', err, 1, true)
  end)
end)

describe('pseud-lua call with authentication', function()
  local dir
  lazy_setup(function()
    dir = process.tmpdir() .. '/cli-auth'
    sh('mkdir -p ' .. dir)
    for _, name in ipairs { 'server', 'alice', 'mallory' } do
      sh(('cd %s && %s keygen %s >/dev/null'):format(dir, process.quote(host), name))
    end
    local f = assert(io.open(dir .. '/allow', 'w'))
    f:write('alice ', io.open(dir .. '/alice.key'):read('l'), '\n')
    f:close()
    sh(("printf 'wonderland\\n' | %s passwd %s/creds alice >/dev/null"):format(process.quote(host), dir))
  end)
  after_each(function() process.stop_all() end)

  it('logs in with --plain USER and $PSEUD_PASSWORD, as that user', function()
    local _, endpoint = process.server('spec/servers/auth.lua', 'plain', dir .. '/creds')
    local _, code, err = run { 'call', '--plain', 'alice', endpoint, 'service', 'whoami' }
    local out
    assert.equal(2, code)                          -- no password anywhere (stdin is /dev/null)
    assert.matches('%-%-plain alice: no password', err)
    out, _, code = process.run { 'env', 'PSEUD_PASSWORD=wonderland',
      host, 'call', '--plain', 'alice', endpoint, 'service', 'whoami' }
    assert.equal(0, code)
    assert.equal('"alice"\n', out)
    -- piped: the first line of stdin
    out, _, code = process.run { 'sh', '-c', 'printf "wonderland\\n" | exec "$@"', 'sh',
      host, 'call', '--plain', 'alice', endpoint, 'service', 'whoami' }
    assert.equal(0, code)
    assert.equal('"alice"\n', out)
  end)

  it('exits 3 when the PLAIN login is refused', function()
    local _, endpoint = process.server('spec/servers/auth.lua', 'plain', dir .. '/creds')
    local t0 = clock.now()
    local out, _, code, log = process.run { 'env', 'PSEUD_PASSWORD=guess',
      host, 'call', '--timeout', '1', '--plain', 'alice', endpoint, 'service', 'whoami' }
    assert.equal(3, code)
    assert.equal('', out)
    assert.matches('UnauthorizedError: handshake refused by server %(ZAP status 400%)', io.open(log):read('a'))
    assert.is_true(clock.now() - t0 < 3)
  end)

  -- a server that takes every login and refuses the call each time kept
  -- the client sending HELLO and the call again until its timeout (an
  -- attack round: about 2,900 HELLOs in 2 s)
  it('gives up on a call refused again after each login, after max_retries logins', function()
    local server, ep = process.pyserver('pyservice', nil, '--authloop')
    -- the login of untrusted_curve (a HELLO), without its CURVE
    local script = ([[
      local pseud = require 'pseud'
      local c = pseud.Client('pyservice', { timeout = 5 })
      c._core:set_login('alice', 'wonderland')
      c:connect('%s')
      local t0 = pseud.now()
      local ok, e = pcall(function() return c.whoami():get() end)
      print(ok, e.name, e.message, pseud.now() - t0 < 3)
    ]]):format(ep)
    local out = run { '-e', script }
    assert.matches('^false\tUnauthorizedError\tthe peer refused the call again after our login.*\ttrue\n$', out)
    server:stop()
    local hellos = 0
    for _ in server:log_text():gmatch('hello %d+') do hellos = hellos + 1 end
    assert.is_true(hellos >= 1 and hellos <= 4, hellos .. ' HELLOs')
  end)

  it('prompts for the password without echo on a terminal', function()
    local _, endpoint = process.server('spec/servers/auth.lua', 'plain', dir .. '/creds')
    local out = process.python('spec/support/ptyrun.py',
      { 'Password for alice: ', 'wonderland\n', '5', host, 'call', '--plain', 'alice', endpoint, 'service', 'whoami' })
    assert.matches('Password for alice: ', out)
    assert.matches('"alice"', out)
    assert.is_nil(out:find('wonderland', 1, true), 'the password was echoed')
    assert.matches('echo on', out)
    assert.matches('exit 0', out)
  end)

  it('connects with CURVE: the server key as Z85 or a file, the client key pair from keygen', function()
    local _, endpoint = process.server('spec/servers/auth.lua', 'trusted_curve', dir .. '/server.key', dir .. '/allow')
    local out, code, err = run { 'call', '--curve-server-key', dir .. '/server.key',
      '--curve-key', dir .. '/alice.key', endpoint, 'service', 'whoami' }
    assert.equal(0, code, err)
    assert.equal('"alice"\n', out)
    local z85 = io.open(dir .. '/server.key'):read('l')
    out, code = run { 'call', '--curve-server-key', z85, '--curve-key', dir .. '/alice.key',
      endpoint, 'service', 'whoami' }
    assert.equal(0, code)
    assert.equal('"alice"\n', out)
    -- a key not on the allow list: refused, no answer
    _, code = run { 'call', '--timeout', '1', '--curve-server-key', z85, '--curve-key', dir .. '/mallory.key',
      endpoint, 'service', 'whoami' }
    assert.equal(3, code)
    _, code, err = run { 'call', '--curve-key', dir .. '/alice.key', endpoint, 'service', 'whoami' }
    assert.equal(2, code)
    assert.matches('%-%-curve%-key needs %-%-curve%-server%-key', err)
    _, code, err = run { 'call', '--curve-server-key', dir .. '/nothing.key', endpoint, 'service', 'whoami' }
    assert.equal(2, code)
    assert.matches('%-%-curve%-server%-key: .*nothing%.key', err)
  end)
end)

describe('pseud.json (the JSON of call and ls)', function()
  -- pseud.json needs pseud.core: it runs inside pseud-lua, one row a line.
  local ROWS = {
    { '42', 'integer 42' }, { '-0', 'integer 0' }, { '4.2', 'float 4.2' }, { '1E2', 'float 100.0' },
    { '-0.0', 'float -0.0' }, { '9223372036854775807', 'integer 9223372036854775807' },
    { '9223372036854775808', 'error integer 9223372036854775808 does not fit in 64 bits at character 1' },
    { '1e400', 'error number 1e400 is too large for a float at character 1' },
    { '01', 'error bad number at character 1' }, { '1.', 'error bad number at character 1' },
    { '.5', 'error expected a JSON value at character 1' }, { '+1', 'error expected a JSON value at character 1' },
    { '"\\ud83d\\ude00"', 'string "😀"' }, { '"\\ud800"', 'error lone surrogate in \\u escape at character 2' },
    { '"\\udc00x"', 'error lone surrogate in \\u escape at character 2' },
    { '"a\tb"', 'error control character in string (escape it) at character 3' },
    { '"\\q"', 'error bad escape in string at character 2' },
    { '"\255"', 'error string is not valid UTF-8 (bytes go as {"$base64": "..."}) at character 1' },
    { '[1] 2', 'error text after the value at character 5' }, { '', 'error no value at character 1' },
    { '{"a" 1}', "error expected ':' at character 6" }, { '{1:2}', 'error expected a string key at character 2' },
    { 'True', 'error expected a JSON value at character 1' },
    { ('['):rep(32) .. (']'):rep(32), 'table ' .. ('['):rep(32) .. (']'):rep(32) },
    { ('['):rep(33) .. (']'):rep(33), 'error nested deeper than 32 levels at character 33' },
    { '{"$base64":"AP8"}', 'error "$base64": base64 length is not a multiple of 4 at character 1' },
    { '{"$base64":"A*8="}', 'error "$base64": its character 2 is not base64 at character 1' },
    { '{"$base64":"aGk="}', 'string "hi"' }, { '{"$base64":""}', 'string ""' },
    { '{"$base64":"aGk=","x":1}', 'table {"$base64":"aGk=","x":1}' },
    { '{"$ext":200,"data":""}', 'error "$ext" needs an integer -128..127 at character 1' },
    { '{"$float":"inf"}', 'float {"$float":"inf"}' }, { '{"$float":"Inf"}',
      'error "$float" is "inf", "-inf" or "nan" at character 1' },
    { '{"b":1,"a":2,"a":3}', 'table {"a":3,"b":1}' },
  }

  it('reads strictly, names the character, and prints what it read', function()
    local code = { "local json = require 'pseud.json'",
      'for line in io.lines(arg[1]) do',
      '  local text = line:gsub("\\\\n", "\\n")',
      '  local v, err = json.decode(text)',
      '  if v == nil then print("error " .. err)',
      '  else print((math.type(v) or type(v)) .. " " .. json.encode(v)) end',
      'end', 'print("done")' }
    local dir = process.tmpdir()
    local f = assert(io.open(dir .. '/json-rows', 'wb'))
    for _, row in ipairs(ROWS) do f:write((row[1]:gsub('\n', '\\n')), '\n') end
    f:close()
    local script = assert(io.open(dir .. '/json-rows.lua', 'w'))
    script:write(table.concat(code, '\n'), '\n')
    script:close()
    local lines = process.run_lines { host, dir .. '/json-rows.lua', dir .. '/json-rows' }
    for i, row in ipairs(ROWS) do
      assert.equal(row[2], lines[i], 'row ' .. i .. ': ' .. row[1])
    end
    assert.equal(#ROWS, #lines)
  end)
end)
