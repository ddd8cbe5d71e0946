-- Robustness: inputs and scripts that once broke the host (found in review),
-- each in its own process so a crash shows as a failed run.
local process = require 'spec.support.process'

local function run(case)
  return process.run_lines({ process.host(), 'spec/scripts/robustness.lua', case },
    { name = case, timeout = 20 })
end

describe('host robustness', function()
  it('takes a call with 3,000 arguments (the coroutine stack grows first)', function()
    assert.same({ '3000', '3000' }, run('many_arguments'))
  end)

  it('answers a handler error whose __tostring raises, and goes on', function()
    assert.same({ 'false LuaError (the error value could not be turned into a message)',
      'Hello after' }, run('bad_tostring'))
  end)

  it('refuses to wait where Lua cannot yield, leaving the future usable', function()
    assert.same({ 'false true Hello inner' }, run('wait_in_gsub'))
  end)

  it('settles a spawn with its first value, or its error', function()
    assert.same({ '1', 'false KeyError k' }, run('spawn_values'))
  end)

  it("lets an auth backend's get_routing_id say where send_to goes", function()
    assert.same({ 'I am client-42' }, run('get_routing_id'))
  end)

  -- an attack round: 20,000 nested closes overflowed the C stack (SIGSEGV)
  it('refuses coroutine.close nested past the C stack, and goes on', function()
    assert.same({ 'true nil', 'false C stack overflow', 'false C stack overflow', 'Hello after' },
      run('close_chain'))
  end)

  it('refuses pseud.spawn past max_tasks spawned tasks alive', function()
    assert.same({ 'lit', 'true true 0', 'Hello after' }, run('spawn_bomb'))
  end)

  it('routes guarded names as before after a describe stopped by its time limit', function()
    assert.same({ 'fine', 'false TimeoutError', 'fine' }, run('describe_killed'))
  end)

  it('survives pseud.core opened a second time', function()
    assert.same({ 'true 1,2,3 2 ac 3' }, run('core_twice'))
  end)

  it('bounds a finalizer that allocates, and a __gc no bound could hold', function()
    assert.same({ 'true true', 'false true' }, run('finalizer_memory'))
  end)

  it("describes a handler's error raw and bounded, whatever pseud.RemoteError's __index does", function()
    assert.same({ 'false ValueError true', 'Hello after' }, run('error_index'))
  end)

  it("runs no __gc a script put in the metatables of the host's own values", function()
    assert.same({ 'Hello after true true', 'table true true', 'Hello last' }, run('class_gc'))
  end)

  it("refuses the debug library's ways into the host's own state", function()
    assert.same({ 'true true true true true true', 'table true', 'up 2 Hello f Hello after',
      'true true changed', 'true true', "nil attempt to load a binary chunk (mode is 't')" },
      run('debug_host'))
  end)

  it('runs the finalizers left at the end within 5 s together, and none of them can wait', function()
    local t0 = os.time()
    local out, ok = process.run({ process.host(), 'spec/scripts/robustness.lua', 'finalizer_at_end' },
      { name = 'at-end', timeout = 40 })
    assert.is_true(ok, out)
    assert.is_true(os.time() - t0 < 7, os.time() - t0)    -- 3 spinning ones, 1 s each, no 5 s sleep
    assert.matches('queued\ndone\n', out, 1, true)
    assert.matches('done\n.*at the end false true', out)
  end)

  it('gives finalizers room of their own, apart from max_tasks', function()
    assert.same({ 'true 200' }, run('finalizer_burst'))
  end)

  it("reads a hint and security options raw: their __index cannot close the endpoint under the C side", function()
    assert.same({ 'Hello hint', 'true' }, run('raw_reads'))
  end)

  it('runs no finalizer inside a call being made, but in the loop after', function()
    assert.same({ 'survived true' }, run('finalizer_in_call'))
  end)

  it('answers the calls still running PeerLostError when the server is closed', function()
    local closed = 'false PeerLostError the server was closed before the call ended'
    assert.same({ 'closing', closed, closed, closed, 'true' }, run('close_running'))
  end)

  it('ends pending calls with PeerLostError when the endpoint is closed by <close>', function()
    assert.same({ 'false PeerLostError' }, run('close_pending'))
  end)
end)
