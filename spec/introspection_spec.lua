-- Introspection: '_pseud.describe' lists what the caller may call, after
-- domains and predicates, from the endpoint's registry, the proxied one and
-- the global one (spec/servers/introspection.lua); a Python peer sees one
-- more callable; `introspection = false` makes it an unknown name; '_pseud.'
-- names are reserved.
local process = require 'spec.support.process'

local host = process.host()

local function describe_as(endpoint, identity, name)
  return process.run_lines({ host, 'spec/clients/describe.lua', endpoint, identity, name },
    { name = 'describe-' .. identity })
end

local EVERYONE = {
  '_pseud.describe|the names you may call here, with their docs',
  'back.ping|from back',
  'dup|local',
  'global.time|from the global registry',
  'hello|greets NAME',
  'plain|-',
}

describe('introspection (_pseud.describe)', function()
  after_each(function() process.stop_all() end)

  describe('on (the default)', function()
    local endpoint
    before_each(function()
      local _
      _, endpoint = process.server('spec/servers/introspection.lua')
    end)

    it('lists a caller the predicate refuses only what it may call, sorted, with docs', function()
      local lines = describe_as(endpoint, 'bob')
      local expected = { table.unpack(EVERYONE) }
      table.insert(expected, 'who|anyone')
      table.sort(expected)
      assert.same(expected, lines)
    end)

    it("shows the domain's names to a caller the predicate accepts, with the doc of what it would reach", function()
      local lines = describe_as(endpoint, 'admin')
      local expected = { table.unpack(EVERYONE) }
      table.insert(expected, 'admin.reset|admins only')
      table.insert(expected, 'who|the admin version')
      table.sort(expected)
      assert.same(expected, lines)
      -- and a real call of those names is routed the same way
      assert.same({ 'admin' }, describe_as(endpoint, 'admin', 'who'))
      assert.same({ 'anyone' }, describe_as(endpoint, 'bob', 'who'))
      assert.same({ 'error ServiceNotFoundError|admin.reset' }, describe_as(endpoint, 'bob', 'admin.reset'))
    end)

    it('answers a Python peer with a list of maps {name, doc}, doc None when none', function()
      local r, ok, raw = process.pypeer({ 'call', endpoint, 'service', '_pseud.describe', '[]',
                                          '--identity', 'bob' })
      assert(ok, raw)
      assert.equal(1, r.type)                              -- OK
      assert.truthy(r.well_formed, raw)
      assert.matches("^%[{'doc': 'the names you may call here, with their docs', 'name': '_pseud.describe'}, "
        .. "{'doc': 'from back', 'name': 'back.ping'}, ", r.body_repr)
      assert.truthy(r.body_repr:find("{'doc': None, 'name': 'plain'}", 1, true), r.body_repr)
      assert.is_nil(r.body_repr:find('admin.reset', 1, true))
    end)

    it('leaves other _pseud. names unknown', function()
      assert.same({ 'error ServiceNotFoundError|_pseud.nothing' }, describe_as(endpoint, 'bob', '_pseud.nothing'))
    end)

    it('is listed by pseud-lua ls, one name a line with its doc, or as JSON', function()
      local out, ok, code, log = process.run { host, 'ls', endpoint, 'service' }
      assert(ok, ('exit %s\n%s\n%s'):format(tostring(code), out, io.open(log):read('a')))
      assert.equal(table.concat({
        '_pseud.describe  the names you may call here, with their docs',
        'back.ping        from back',
        'dup              local',
        'global.time      from the global registry',
        'hello            greets NAME',
        'plain',
        'who              anyone',
      }, '\n') .. '\n', out)
      out, ok = process.run { host, 'ls', '--json', endpoint, 'service' }
      assert.is_true(ok)
      assert.matches('^%[{"doc":"the names you may call here, with their docs","name":"_pseud.describe"},', out)
      assert.truthy(out:find('{"doc":null,"name":"plain"}', 1, true), out)
    end)
  end)

  describe('off (introspection = false)', function()
    it('makes _pseud.describe an unknown name like any other', function()
      local _, endpoint = process.server('spec/servers/introspection.lua', 'off')
      assert.same({ 'error ServiceNotFoundError|_pseud.describe' }, describe_as(endpoint, 'bob'))
      assert.same({ 'Hello x' }, process.run_lines({ host, '-e', ([[
        local pseud = require 'pseud'
        local c = pseud.Client('service'); c:connect(%q)
        print(c.hello('x'):get()); print('done')]]):format(endpoint) }))
      local _, ok, code, log = process.run { host, 'ls', endpoint, 'service' }
      assert.is_false(ok)
      assert.equal(1, code)
      assert.matches('ServiceNotFoundError: _pseud.describe %(the server offers no introspection',
        io.open(log):read('a'))
    end)
  end)

  it('reserves _pseud. names: registering one raises, locally and globally', function()
    local lines = process.run_lines { host, '-e', [[
      local pseud = require 'pseud'
      local s = pseud.Server('x')
      local ok, e = pcall(s.register_rpc, s, '_pseud.describe', print)
      print(ok, e.name, e.message)
      ok, e = pcall(pseud.register_rpc, '_pseud.x', print)
      print(ok, e.name)
      print(pcall(pseud.register_rpc, '_pseudo', print))
      print(pcall(pseud.Server, 'y', { introspection = 'no' }))
      s:close()
      print('done')]] }
    assert.equal("false\tValueError\tregister_rpc: '_pseud.describe': names starting with '_pseud.' "
      .. 'are reserved for the host', lines[1])
    assert.equal('false\tValueError', lines[2])
    assert.matches('^true', lines[3])
    assert.matches('^false\t%(command line%):8: TypeError: server: introspection must be true or false', lines[4])
  end)
end)
