-- Handlers cannot starve the loop (DESIGN.md section 4): a handler that
-- computes without yielding is preempted, one that runs past
-- max_handler_time gets TimeoutError (even inside pcall), one that
-- allocates past max_handler_memory gets MemoryError; the server goes on.
local process = require 'spec.support.process'

describe('handler limits', function()
  local server, endpoint
  lazy_setup(function()
    server, endpoint = process.server('spec/servers/limits.lua')
  end)
  lazy_teardown(function() process.stop_all() end)

  local function run(case)
    return process.run_lines({ process.host(), 'spec/clients/limits.lua', endpoint, case },
      { name = case, timeout = 30 })
  end

  it('answers 100 calls while a handler computes for 0.8 s without yielding', function()
    assert.same({ '100\tduring the spin', 'ok' }, run('preempted'))
  end)

  it('stops a handler past max_handler_time with TimeoutError, pcall or not', function()
    assert.same({ 'spin_forever\tTimeoutError\ttrue', 'spin_in_pcall\tTimeoutError\ttrue', 'Hello after' },
      run('time_limit'))
  end)

  it('stops a handler past max_handler_memory with MemoryError and goes on', function()
    assert.same({ 'MemoryError', 'Hello after' }, run('memory_limit'))
  end)

  it('stops a handler whose every instruction copies megabytes at its limit, preempting it meanwhile', function()
    assert.same({ 'copy_forever\tTimeoutError\ttrue\ttrue', 'rep_forever\tTimeoutError\ttrue\ttrue',
      'Hello after' }, run('copies'))
  end)

  it('stops loops of long work that allocates nothing at the limit, preempting them meanwhile', function()
    assert.same({ 'sort_forever\tTimeoutError\ttrue\ttrue', 'collect_forever\tTimeoutError\ttrue\ttrue',
      'find_forever\tTimeoutError\ttrue\ttrue', 'gsub_forever\tTimeoutError\ttrue\ttrue',
      'concat_forever\tTimeoutError\ttrue\ttrue', 'offset_forever\tTimeoutError\ttrue\ttrue',
      'raising_find_forever\tTimeoutError\ttrue\ttrue', 'close_copying\tTimeoutError\ttrue\ttrue',
      'Hello after' }, run('heavy'))
  end)

  it('answers TimeoutError when the kill was caught in tail position', function()
    assert.same({ 'tail_close\tTimeoutError\ttrue', 'tail_load\tTimeoutError\ttrue', 'Hello after' },
      run('tails'))
  end)

  it('stops a spin inside a coroutine the handler made, resumed or wrapped', function()
    local lines = run('sealed')
    assert.same({
      'spin_in_coroutine\tTimeoutError\ttrue\ttrue',
      'spin_resumed\tTimeoutError\ttrue\ttrue',
      'sethook_spin\tTimeoutError\ttrue\ttrue',
      'loadlib_spin\tTimeoutError\ttrue\ttrue',
      'require_spin\tTimeoutError\ttrue\ttrue',
      'bad_tostring\tLuaError\ttrue\ttrue',
      'slow\tTimeoutError\ttrue\ttrue',
      'Hello after' }, lines)
  end)

  it('refuses a reply that would pack past max_message_size while packing', function()
    assert.same({ '1048571', 'MemoryError', 'Hello during\ttrue', 'MemoryError\ttrue', 'Hello after' },
      run('graph'))
  end)

  it('gives a spawned task the limits of the handler that spawned it', function()
    assert.same({ 'spawned', 'probes\ttrue\ttrue', 'TimeoutError' }, run('spawn'))
  end)

  it('stops a predicate past max_hook_time: the call is refused, others go on', function()
    assert.same({ 'guarded\tServiceNotFoundError\ttrue', 'Hello after' }, run('predicate'))
  end)

  it("bounds a lookup's predicates together, and a describe's", function()
    assert.same({ 'multi\tServiceNotFoundError\ttrue', '_pseud.describe\tTimeoutError\ttrue', 'Hello after' },
      run('predicates'))
  end)

  it('holds where a review broke it: xpcall, __close, main-chunk coroutines, MemoryError loops', function()
    assert.same({
      'xpcall_spin\tTimeoutError\ttrue\ttrue',
      'close_spin\tTimeoutError\ttrue\ttrue',
      'close_spin_nested\tTimeoutError\ttrue\ttrue',
      'close_main\tTimeoutError\ttrue\ttrue',
      'hog_catch\tTimeoutError\ttrue\ttrue',
      'guarded_xpcall\tServiceNotFoundError\ttrue',
      'Hello after' }, run('review'))
  end)

  it('runs finalizers, and stops one that spins at max_hook_time', function()
    assert.same({ 'gc_runs\ttrue', 'gc_spin\tafter\ttrue', 'probes\ttrue', 'Hello after' }, run('finalizers'))
    assert.matches('msg="a finalizer %(__gc%) failed"[^\n]* error=TimeoutError', server:log_text())   -- worker=N first
  end)

  it('serves other callers within a slice while 200 spawned tasks spin', function()
    assert.same({ 'spawned', 'probes\ttrue' }, run('fairness'))
  end)

  it("serves a new caller within a slice or two behind another peer's 300 calls of 9 ms each", function()
    assert.same({ 'Hello probe\ttrue\t300' }, run('queue'))
  end)

  it('still runs woken handlers and busy peers\' calls while twelve peers keep a call each in flight', function()
    assert.same({ 'crowd\ttrue' }, run('crowd'))
  end)

  it("runs a woken handler of a peer with no other call ahead of another peer's 300 calls of 20 ms", function()
    assert.same({ 'ok\ttrue' }, run('woken'))            -- answered within 0.5 s
  end)

  it("ends woken handlers at max_handler_time even when they wait their turn behind those calls", function()
    local lines = run('deadline')                          -- a second call in flight: behind the flood
    assert.equal(1, #lines)
    assert.matches('^%a+\ttrue$', lines[1])              -- ok or TimeoutError, by 1.5 s
  end)
end)

describe('the run queue under a stream of new peers', function()
  after_each(function() process.stop_all() end)

  it("still runs a busy peer's woken handler while new connections' calls each use up a slice", function()
    -- every new connection's call goes ahead of the queue and runs a whole
    -- slice; a pass must still give the rest one task (it starved for the
    -- whole attack, answered TimeoutError at 3.6 s of a 4 s stream)
    local _, endpoint = process.server('spec/servers/limits.lua')
    local out, ok, _, log = process.python('spec/support/attacker.py', { 'frontflood', endpoint, '100', '4' })
    local r = require('dkjson').decode(out)
    assert(ok and type(r) == 'table', out .. io.open(log):read('a'))
    assert.equal(1, r.first_type, out)                    -- OK
    assert(r.first_seconds < 1, out)
  end)

  it("stops a waiting handler at its deadline even while new connections' calls keep coming", function()
    -- its deadline moves it to the very head of the queue (the end of the
    -- front segment kept it 2-7 s late under such a stream)
    local _, endpoint = process.server('spec/servers/limits.lua')
    local out, ok, _, log = process.python('spec/support/attacker.py', { 'deadline', endpoint, '200' })
    local r = require('dkjson').decode(out)
    assert(ok and type(r) == 'table', out .. io.open(log):read('a'))
    assert.is_truthy(r.first_type == 0x10 or r.first_type == 1, out)   -- TimeoutError (or OK)
    assert(r.first_seconds < 1.6, out)                                   -- max_handler_time is 1 s
  end)
end)
