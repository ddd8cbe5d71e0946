-- Routing by domain (DESIGN.md section 2): local before global, non-default
-- domains before default, the first accepting predicate wins, none ->
-- ServiceNotFoundError; a predicate that raises refuses and is logged.
local process = require 'spec.support.process'

describe('routing by domain and predicate', function()
  local lines, log
  lazy_setup(function()
    local out, ok, code, logpath = process.run({ process.host(), 'spec/scripts/routing.lua' },
      { name = 'routing', timeout = 20 })
    log = io.open(logpath):read('a')
    assert(ok, ('exit %s\n%s\n%s'):format(tostring(code), out, log))
    lines = {}
    for line in out:gmatch('[^\n]+') do
      local k, v = line:match('^(%S+ ?%S*)\t(.*)$')
      if k then lines[k] = v end
    end
  end)

  it('falls through from a refused local entry to the global default', function()
    assert.equal('global default', lines['user layered'])
  end)

  it('lets an accepting predicate win over the default', function()
    assert.equal('local admin', lines['admin layered'])
  end)

  it('gives predicates the backend arguments plus user id, routing id, name, args, kwargs', function()
    assert.equal('admin-1\tadmin-1\tlayered\t1\t7\tv\tadmin', lines['ctx'])
  end)

  it('treats a raising predicate as a refusal and logs it', function()
    assert.equal('default', lines['user guarded'])
    assert.matches('msg="predicate failed (refused)" domain=broken error=LuaError', log, 1, true)
  end)

  it('answers ServiceNotFoundError when no domain accepts', function()
    assert.equal('ServiceNotFoundError: closed', lines['user closed'])
  end)
end)
