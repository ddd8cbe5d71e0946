-- The cluster (docs/cluster.md): pseud-lua nodes that share one Redis, and a
-- send_to that reaches a peer connected to another node, end to end with
-- real processes: redis-server on a free loopback port, two or three nodes
-- (spec/servers/cluster.lua), Lua and Python pseud peers.
local process = require 'spec.support.process'
local json = require 'dkjson'
local logfmt = require 'spec.support.logfmt'

local PYTHON = '/usr/bin/python3'

local function free_port()
  local out = process.run({ PYTHON, '-c', 'import socket; s = socket.socket(); '
    .. "s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" })
  return assert(tonumber(out), 'no free port: ' .. out)
end

-- redis-server on `port`, nothing saved; returns its process once it serves.
local function start_redis(port)
  local p = process.start({ 'redis-server', '--port', port, '--bind', '127.0.0.1', '--save', '',
                            '--appendonly', 'no', '--loglevel', 'notice' }, { name = 'redis-' .. port })
  p:wait_for('Ready to accept connections', 200, 10)
  return p
end

local function redis(port, ...)
  local out, ok = process.run({ 'redis-cli', '-p', port, '--raw', ... }, { name = 'redis-cli' })
  assert(ok, 'redis-cli failed: ' .. out)
  return (out:gsub('\n$', ''))
end

-- Poll Redis (bounded) until `fn(port)` holds; returns what it last gave.
local function eventually(what, fn, seconds)
  local deadline = os.time() + (seconds or 10)
  local got
  repeat
    got = fn()
    if got then return got end
    process.run({ 'sleep', '0.02' })
  until os.time() > deadline
  error('never happened: ' .. what, 2)
end

local function start_node(url, timeout, service, ttl, heartbeat, max_forwarded)
  local p = process.start({ 'env', 'PSEUD_SPEC_REDIS=' .. url, 'PSEUD_SPEC_TIMEOUT=' .. (timeout or 3),
                            'PSEUD_SPEC_SERVICE=' .. (service or 'service'), 'PSEUD_SPEC_TTL=' .. (ttl or 1),
                            'PSEUD_SPEC_HEARTBEAT=' .. (heartbeat or ''),
                            'PSEUD_SPEC_MAX_FORWARDED=' .. (max_forwarded or ''),
                            process.host(), 'spec/servers/cluster.lua' }, { name = 'node' })
  local endpoint, node = p:wait_for('^ready (%S+) (%S+)', 100, 15)
  return { proc = p, endpoint = endpoint, node = node }
end

local function start_peer(node, identity, service)
  local p = process.start({ process.host(), 'spec/clients/cluster_peer.lua', node.endpoint, identity,
                            service or 'service' }, { name = 'peer-' .. identity })
  assert.equal('registered', p:read_line(), p:report())
  return p
end

-- call(node's endpoint, name, args...) -> the decoded result
local call = require('spec.support.cluster').call

-- A call's result that is a PeerLostError given in under a second.
local function fails_fast(r)
  assert.is_false(r.ok)
  assert.equal('PeerLostError', r.error, r.message)
  assert.is_true(r.seconds < 1, r.seconds)
  return r
end

-- Where Redis says `user` of service 'service' is last ('' when nowhere).
local function directory(port, user)
  return redis(port, 'ZREVRANGE', 'pseud:user:7:service:' .. user, '0', '0')
end

describe('a cluster of nodes on Redis', function()
  local port, url, rds, a, b

  lazy_setup(function()
    port = free_port()
    url = 'redis://127.0.0.1:' .. port
    rds = start_redis(port)
    a, b = start_node(url), start_node(url)
  end)
  lazy_teardown(function() process.stop_all() end)

  it('send_to reaches a peer connected to another node, and fails fast for nobody', function()
    local alice = start_peer(b, 'alice')
    eventually('alice in the directory', function() return directory(port, 'alice') == b.node end)
    assert.same({ ok = true, value = 'I am alice' }, call(a, 'call', 'alice', 'whoami'))
    assert.same({ ok = true, value = { 1, 'two', { three = 3 } } },
                call(a, 'call', 'alice', 'echo', { 1, 'two', { three = 3 } }))
    local r = fails_fast(call(a, 'call', 'nobody', 'whoami'))
    assert.matches("no connected peer 'nobody' on any node of the cluster", r.message, 1, true)
    call(b, 'call', 'alice', 'stop')
    alice:wait(10)
    eventually('alice gone from the directory', function() return directory(port, 'alice') == '' end)
  end)

  it('forwarded calls write nothing to Redis: its writes follow connects, disconnects and refreshes', function()
    local hal = start_peer(b, 'hal')
    eventually('hal in the directory', function() return directory(port, 'hal') == b.node end)
    local function counts()                      -- commands run, those of scripts included
      local n = {}
      for cmd, calls in redis(port, 'INFO', 'commandstats'):gmatch('cmdstat_(%w+):calls=(%d+)') do
        n[cmd] = tonumber(calls)
      end
      return n
    end
    local before, t0 = counts(), os.time()
    local users = {}
    for i = 1, 200 do users[i] = 'hal' end
    local r = call(a, 'call_each', users, 'whoami', 1)
    assert.same({ ok = true, value = 'I am hal' }, r.first)
    assert.same({ ok = 199, failed = 0 }, r.rest)
    local after, seconds = counts(), os.time() - t0 + 1
    local function delta(cmd) return (after[cmd] or 0) - (before[cmd] or 0) end
    assert.is_true(delta('publish') >= 400, 'work and results went through Redis: ' .. delta('publish'))
    -- the caller's own connection to A is the only connect and disconnect
    local writes = 0
    for _, cmd in ipairs({ 'zadd', 'zrem', 'sadd', 'srem', 'spop', 'del', 'expire', 'pexpire' }) do
      writes = writes + delta(cmd)
    end
    assert.is_true(writes <= 8, 'directory writes during 200 forwarded calls: ' .. writes)
    -- refreshes: one SET a node every 0.25 s
    assert.is_true(delta('set') <= 2 * (seconds * 4 + 2), ('%d SETs in %d s'):format(delta('set'), seconds))
    call(b, 'call', 'hal', 'stop')
    hal:wait(10)
  end)

  it('a forwarded call reaches a Python pseud peer byte for byte as a local one does', function()
    local py = process.start({ PYTHON, '-u', 'spec/support/pypeer.py', 'callee', b.endpoint, 'service',
                               'hold', '[10]', '--identity', 'py-alice', '--timeout', '15' },
                             { name = 'py-alice' })
    eventually('py-alice in the directory', function() return directory(port, 'py-alice') == b.node end)
    local remote = call(a, 'call', 'py-alice', 'types')
    local here = call(b, 'call', 'py-alice', 'types')
    assert.is_true(remote.ok, json.encode(remote))
    assert.same(here, remote)
    call(b, 'release')
    local out = json.decode(py:read_line())
    py:wait(10)
    assert.equal(2, #out.served)
    assert.equal('types', out.served[1].name)
    assert.is_true(out.served[1].frames_ok and out.served[2].frames_ok)
    assert.equal(out.served[2].body, out.served[1].body)   -- the WORK body, as B itself sends it
  end)

  it('a user moving between nodes: the directory follows, in either order', function()
    -- connects to A before leaving B: B's removal must not erase A's entry
    local on_b = start_peer(b, 'mover')
    eventually('mover on B', function() return directory(port, 'mover') == b.node end)
    local on_a = start_peer(a, 'mover')
    eventually('mover on A', function() return directory(port, 'mover') == a.node end)
    call(b, 'call', 'mover', 'stop')
    on_b:wait(10)
    for _, user in ipairs(call(b, 'peers')) do assert.not_equal('mover', user) end  -- B let it go...
    assert.equal(a.node, directory(port, 'mover'))          -- ...and A keeps it
    assert.same({ ok = true, value = 'I am mover' }, call(b, 'call', 'mover', 'whoami'))
    -- leaves A, then connects to B
    call(a, 'call', 'mover', 'stop')
    on_a:wait(10)
    eventually('mover gone', function() return directory(port, 'mover') == '' end)
    on_b = start_peer(b, 'mover')
    eventually('mover on B again', function() return directory(port, 'mover') == b.node end)
    assert.same({ ok = true, value = 'I am mover' }, call(a, 'call', 'mover', 'whoami'))
    call(b, 'call', 'mover', 'stop')
    on_b:wait(10)
  end)

  it('a user on two nodes at once stays found while either holds it', function()
    local on_a = start_peer(a, 'twice')
    eventually('twice on A', function() return directory(port, 'twice') == a.node end)
    local on_b = start_peer(b, 'twice')
    eventually('twice on B too', function() return directory(port, 'twice') == b.node end)
    call(b, 'call', 'twice', 'stop')                        -- leaves B, still on A
    on_b:wait(10)
    eventually('B let it go', function() return directory(port, 'twice') == a.node end)
    assert.same({ ok = true, value = 'I am twice' }, call(b, 'call', 'twice', 'whoami'))
    call(a, 'call', 'twice', 'stop')
    on_a:wait(10)
    eventually('twice gone', function() return directory(port, 'twice') == '' end)
  end)

  it('another service on the same Redis keeps its users apart', function()
    local other = start_node(url, 3, 'other')
    local mine = start_peer(b, 'shared')
    local theirs = start_peer(other, 'shared', 'other')
    eventually('shared on B', function() return directory(port, 'shared') == b.node end)
    assert.same({ ok = true, value = 'I am shared' }, call(a, 'call', 'shared', 'whoami'))
    call(b, 'call', 'shared', 'stop')
    mine:wait(10)
    fails_fast(call(a, 'call', 'shared', 'whoami'))      -- theirs is not ours
    theirs:stop()
    other.proc:stop()
  end)

  it('a forwarded call that outlasts three probe rounds ends with its answer; the probes go unsaid', function()
    local hank = start_peer(b, 'hank')
    eventually('hank on B', function() return directory(port, 'hank') == b.node end)
    local before = #b.proc:log_text()
    -- A probes B's channel every 0.5 s while this call is in flight there
    assert.same({ ok = true, value = 'slept 1.6' }, call(a, 'call', 'hank', 'slow', 1.6))
    local said = b.proc:log_text():sub(before + 1)
    assert.is_nil(said:find('refused a message', 1, true), said)
    call(b, 'call', 'hank', 'stop')
    hank:wait(10)
  end)

  it('with calls in flight to more nodes than a probe round asks (32), every node takes its turn', function()
    -- 40 nodes that Redis lists and a redis-cli listens for (they never answer);
    -- the 40th, the last that A's calls list, is the one that goes
    local nodes, users = {}, {}
    for i = 1, 40 do
      nodes[i], users[i] = ('fake-node-%02d'):format(i), ('fake-user-%02d'):format(i)
      redis(port, 'SET', 'pseud:node:' .. nodes[i], 'spec', 'EX', '60')
      redis(port, 'ZADD', 'pseud:user:7:service:' .. users[i], '1', nodes[i])
    end
    local function listener(from, to)
      local argv = { 'redis-cli', '-p', port, 'SUBSCRIBE' }
      for i = from, to do argv[#argv + 1] = 'pseud:chan:' .. nodes[i] end
      local p = process.start(argv, { name = 'listener' })
      p:wait_for('^' .. ('pseud:chan:' .. nodes[to]):gsub('%p', '%%%0') .. '$', 200, 10)
      return p
    end
    local most, last = listener(1, 39), listener(40, 40)
    local caller = process.start({ process.host(), 'spec/clients/cluster_call.lua', a.endpoint, 'call_each',
                                   json.encode(users), '"whoami"', '40' }, { name = 'call-each' })
    -- A has published all 40 once the last node's listener took its call
    last:wait_for('whoami', 200, 10)
    last:stop()                                   -- node 40 goes: its channel has nobody
    caller:wait(20)
    local r = json.decode(table.concat(caller.lines, '\n'))
    assert.equal('PeerLostError', r.first.error, r.first.message)
    assert.matches('left it with the call in flight', r.first.message, 1, true)
    assert.is_true(r.first.seconds < 2.5, r.first.seconds)   -- not its 3 s timeout
    assert.same({ ok = 0, failed = 39 }, r.rest)               -- the others: their timeout
    most:stop()
    for i = 1, 40 do redis(port, 'DEL', 'pseud:node:' .. nodes[i], 'pseud:user:7:service:' .. users[i]) end
  end)

  it('crafted messages on a node channel: refused, no peer sees them, the node keeps serving', function()
    local frank = start_peer(b, 'frank')
    eventually('frank on B', function() return directory(port, 'frank') == b.node end)
    -- each crafted with Python's msgpack (not our packer) and PUBLISHed as raw bytes
    local crafted = {
      "b'\\xc1garbage'",                                                      -- not msgpack
      "packb([2, 'service', 'no-such-node', b'0123456789abcdef', 1, packb('forged')])",  -- a forged result
      "packb([1, 'service', '" .. a.node .. "', b'0123456789abcdef', b'frank', 1.0, b'\\xc1junk'])",  -- junk WORK
      "packb([1, 'other', '" .. a.node .. "', b'0123456789abcdef', b'frank', 1.0, packb(['whoami', [], {}])])",
      "packb([1, 'service', '" .. a.node .. "', b'0123456789abcde', b'frank', 1.0, b''])",  -- short uuid
    }
    for i, expr in ipairs(crafted) do
      local file = process.tmpdir() .. '/crafted-' .. i
      local out, ok = process.run({ PYTHON, '-c', 'import sys; from msgpack import packb; '
        .. 'open(sys.argv[1], "wb").write(' .. expr .. ')', file })
      assert(ok, out)
      out, ok = process.run({ 'sh', '-c', ('redis-cli -p %d -x PUBLISH %s < %s'):format(
        port, process.quote('pseud:chan:' .. b.node), process.quote(file)) })
      assert(ok, out)
      assert.equal('1', (out:gsub('%s+$', '')))          -- B took each
    end
    assert.same({ ok = true, value = 'I am frank' }, call(a, 'call', 'frank', 'whoami'))
    assert.same({ ok = true, value = 'I am frank' }, call(b, 'call', 'frank', 'whoami'))
    local log = b.proc:log_text()
    assert.matches('refused a message on this node', log, 1, true)
    assert.matches('refused a message for another server', log, 1, true)
    assert.matches('dropped a result for no call forwarded there', log, 1, true)
    call(b, 'call', 'frank', 'stop')
    frank:wait(10)
    assert.is_nil(frank:log_text():find('ProtocolError', 1, true), frank:log_text())  -- no junk reached it
  end)

  it('a publisher holds no node past its own timeout, nor more than max_forwarded calls at once', function()
    -- Redis access is membership, but a member's bytes are a peer's: calls
    -- published with a timeout of 1e6 s to a peer that never answers were
    -- held that long, as many as were published (an attack round)
    local c = start_node(url, 2, 'service', 1, nil, 2)
    local ivy = start_peer(c, 'ivy')
    eventually('ivy on C', function() return directory(port, 'ivy') == c.node end)
    local spy = process.start({ 'redis-cli', '-p', port, 'SUBSCRIBE', 'pseud:chan:spy-node' }, { name = 'spy' })
    spy:wait_for('^pseud:chan:spy%-node$', 200, 10)
    local function publish(uuid)
      local file = process.tmpdir() .. '/held-' .. uuid
      local out, ok = process.run({ PYTHON, '-c', 'import sys; from msgpack import packb; '
        .. 'open(sys.argv[1], "wb").write(packb([1, "service", "spy-node", sys.argv[2].encode(), b"ivy", '
        .. '1e6, packb(["stall", [], {}])]))', file, uuid })
      assert(ok, out)
      out, ok = process.run({ 'sh', '-c', ('redis-cli -p %d -x PUBLISH %s < %s'):format(
        port, process.quote('pseud:chan:' .. c.node), process.quote(file)) })
      assert(ok, out)
      assert.equal('1', (out:gsub('%s+$', '')))
    end
    local t0 = os.time()
    publish('held-call-000001')
    publish('held-call-000002')
    ivy:wait_for('^stalling$', 200, 10)
    ivy:wait_for('^stalling$', 200, 10)
    publish('held-call-000003')                   -- one past max_forwarded = 2
    local busy = spy:wait_for('held%-call%-000003.*', 200, 10)
    assert.matches('BusyError', busy, 1, true)
    assert.matches('max_forwarded', busy, 1, true)
    -- the two held ones end by C's own timeout (2 s), not the 1e6 s asked
    local first = spy:wait_for('held%-call%-00000[12].*', 200, 10)
    local second = spy:wait_for('held%-call%-00000[12].*', 200, 10)
    assert.matches('TimeoutError', first, 1, true)
    assert.matches('TimeoutError', second, 1, true)
    assert.is_true(os.time() - t0 < 10)
    -- and the slots are free again: a fourth is taken, not refused
    publish('held-call-000004')
    assert.matches('TimeoutError', spy:wait_for('held%-call%-000004.*', 200, 10), 1, true)
    spy:stop()
    ivy:stop()
    c.proc:stop()
  end)

  it("a user key made of the wrong type: the error says Redis refused, and its log lines are limited", function()
    -- it was "the cluster is unreachable (Redis link down)" while the link
    -- was up, and every lookup wrote a log line of its own
    redis(port, 'SET', 'pseud:user:7:service:mallory', 'not a sorted set')
    local r = fails_fast(call(a, 'call', 'mallory', 'whoami'))
    assert.matches("no connected peer 'mallory' here, and the cluster's Redis refused to say where it is: WRONGTYPE",
                   r.message, 1, true)
    local before = select(2, a.proc:log_text():gsub('Redis refused a cluster command', ''))
    local users = {}
    for i = 1, 200 do users[i] = 'mallory' end
    local out = call(a, 'call_each', users, 'whoami', 1)
    assert.equal('PeerLostError', out.first.error)
    assert.same({ ok = 0, failed = 199 }, out.rest)
    local after = select(2, a.proc:log_text():gsub('Redis refused a cluster command', ''))
    assert.is_true(after - before <= 40, after - before)    -- 20 a second at most, not 200
    assert.same({ ok = true, value = true }, { ok = true, value = call(a, 'up') })   -- the link stayed up
    redis(port, 'DEL', 'pseud:user:7:service:mallory')
  end)

  it('Redis killed and started again empty: local calls go on, cross-node ones fail fast, then work again', function()
    local carol = start_peer(b, 'carol')
    eventually('carol in the directory', function() return directory(port, 'carol') == b.node end)
    rds:kill('KILL')
    rds:wait(10)
    assert.same({ ok = true, value = 'I am carol' }, call(b, 'call', 'carol', 'whoami'))
    assert.matches('cluster', fails_fast(call(a, 'call', 'carol', 'whoami')).message)
    rds = start_redis(port)
    -- each node comes back on its own backoff (up to 5 s between tries)
    eventually('both nodes linked again', function() return call(a, 'up') and call(b, 'up') end, 15)
    -- a user found nowhere just after: says the directory may still be
    -- filling (other nodes re-register on their own backoff), not only "gone"
    local r = fails_fast(call(a, 'call', 'nobody', 'whoami'))
    assert.matches("no connected peer 'nobody' on any node of the cluster yet: this node's Redis link came back",
                   r.message, 1, true)
    a.node, b.node = call(a, 'node'), call(b, 'node')
    eventually('carol registered again', function() return directory(port, 'carol') == b.node end, 15)
    assert.same({ ok = true, value = 'I am carol' }, call(a, 'call', 'carol', 'whoami'))
    call(b, 'call', 'carol', 'stop')
    carol:wait(10)
  end)

  it('a node paused (SIGSTOP) is taken for dead, then comes back under a new id with its users', function()
    a.node, b.node = call(a, 'node'), call(b, 'node')
    local dave = start_peer(b, 'dave')
    eventually('dave in the directory', function() return directory(port, 'dave') == b.node end)
    local old = b.node
    b.proc:kill('STOP')
    local r = eventually('a call to dave fails fast once B lapsed', function()
      local got = call(a, 'call', 'dave', 'whoami')
      return not got.ok and got.seconds < 1 and got or nil
    end, 15)
    assert.equal('PeerLostError', r.error)
    assert.equal('0', redis(port, 'EXISTS', 'pseud:node:' .. old))
    b.proc:kill('CONT')
    local new = eventually('B re-registered', function()
      local node = directory(port, 'dave')
      return node ~= '' and node ~= old and node or nil
    end, 15)
    assert.equal(new, call(b, 'node'))
    b.node = new
    assert.equal('0', redis(port, 'EXISTS', 'pseud:users:' .. old))
    -- the whole entry: the new incarnation alone, no stale one beneath it
    assert.equal(new, redis(port, 'ZRANGE', 'pseud:user:7:service:dave', '0', '-1'))
    assert.equal('0', redis(port, 'SISMEMBER', 'pseud:nodes', old))
    assert.same({ ok = true, value = 'I am dave' }, call(a, 'call', 'dave', 'whoami'))
    call(b, 'call', 'dave', 'stop')
    dave:wait(10)
  end)

  it('under a heartbeat backend, a node that comes back does not claim a user who left it for another', function()
    -- the backend keeps a closed connection's entry until its heartbeat
    -- timeout (30 s here); the user was taken for present until then, and a
    -- node that re-linked registered it again, newest: calls went to the
    -- node it had left (found by a chaos run: 11 s of PeerLostError)
    local hb, hc = start_node(url, 3, 'service', 1, 30), start_node(url, 3, 'service', 1, 30)
    local dan = start_peer(hb, 'dan')
    eventually('dan on B', function() return directory(port, 'dan') == hb.node end)
    dan:kill('KILL')
    dan:wait(10)
    local dan2 = start_peer(hc, 'dan')
    eventually('dan on C', function() return directory(port, 'dan') == hc.node end)
    local old = hb.node
    hb.proc:kill('STOP')                                  -- taken for dead (ttl 1 s), then back
    eventually('B lapsed', function() return redis(port, 'EXISTS', 'pseud:node:' .. old) == '0' end, 15)
    hb.proc:kill('CONT')
    eventually('B linked again', function() local n = call(hb, 'node'); return n ~= old and call(hb, 'up') end, 15)
    assert.equal(hc.node, directory(port, 'dan'))
    assert.same({ ok = true, value = 'I am dan' }, call(a, 'call', 'dan', 'whoami'))
    call(hc, 'call', 'dan', 'stop')
    dan2:wait(10)
    hb.proc:stop()
    hc.proc:stop()
  end)

  it('a node killed (SIGKILL) with calls to its users in flight: each ends once, soon; new ones fail fast', function()
    local c = start_node(url, 3)
    local erin, fred = start_peer(c, 'erin'), start_peer(c, 'fred')
    eventually('erin and fred in the directory', function()
      return directory(port, 'erin') == c.node and directory(port, 'fred') == c.node
    end)
    -- six calls in flight from A and B (three callers each), to both users
    local callers, held = {}, { erin = 0, fred = 0 }
    for i = 1, 6 do
      local user = i % 2 == 1 and 'erin' or 'fred'
      local via = i <= 3 and a or b
      callers[i] = process.start({ process.host(), 'spec/clients/cluster_call.lua', via.endpoint, 'call',
                                   json.encode(user), '"stall"' }, { name = 'in-flight-' .. i })
      held[user] = held[user] + 1
    end
    for user, n in pairs(held) do
      local peer = user == 'erin' and erin or fred
      for _ = 1, n do assert.equal('stalling', peer:read_line(), peer:report()) end
    end
    c.proc:kill('KILL')
    c.proc:wait(10)
    for i, caller in ipairs(callers) do
      local lines = {}
      for line in function() return caller:read_line() end do lines[#lines + 1] = line end
      caller:wait(10)
      assert.equal(1, #lines, ('caller %d: %s'):format(i, table.concat(lines, '\n')))
      local ended = json.decode(lines[1])
      assert.is_false(ended.ok)
      -- the origin's probe of C's channel finds nobody listening: not its 3 s timeout
      assert.equal('PeerLostError', ended.error, ended.message)
      assert.matches('which left it with the call in flight', ended.message, 1, true)
      assert.is_true(ended.seconds < 3, ended.seconds)
    end
    fails_fast(call(a, 'call', 'erin', 'whoami'))
    fails_fast(call(b, 'call', 'fred', 'whoami'))
    -- no origin heard of any of them from C again
    for _, node in ipairs({ a, b }) do
      assert.is_nil(logfmt.find(node.proc:log_text(), { node = c.node,
        msg = 'cluster: dropped a result for no call forwarded there (late, or forged)' }))
    end
    erin:stop()
    fred:stop()
  end)

  it('a node stopped cleanly (SIGTERM) leaves at once: its key and entries go, calls to its users fail fast', function()
    local d = start_node(url, 3, nil, 60)          -- a TTL that cannot be what takes it out
    local gina = start_peer(d, 'gina')
    eventually('gina in the directory', function() return directory(port, 'gina') == d.node end)
    assert.equal('1', redis(port, 'EXISTS', 'pseud:node:' .. d.node))
    d.proc:kill('TERM')
    local ok, how, code = d.proc:wait(10)
    assert(ok, ('the node ended %s %s:\n%s'):format(how, code, d.proc:report()))
    -- written before it exited; Redis may still be running it when we ask
    eventually('its liveness key gone, well before its TTL', function()
      return redis(port, 'EXISTS', 'pseud:node:' .. d.node) == '0'
    end, 5)
    eventually('its entries collected', function()
      return directory(port, 'gina') == '' and redis(port, 'EXISTS', 'pseud:users:' .. d.node) == '0'
        and redis(port, 'SISMEMBER', 'pseud:nodes', d.node) == '0'
    end, 5)
    fails_fast(call(a, 'call', 'gina', 'whoami'))
    gina:stop()
  end)

  it('5,000 peers churned across two nodes leave Redis as they found it', function()
    a.node, b.node = call(a, 'node'), call(b, 'node')      -- as they are now
    local function users(node) return tonumber(redis(port, 'SCARD', 'pseud:users:' .. node.node)) end
    local function scripts_run()
      return tonumber(redis(port, 'INFO', 'commandstats'):match('cmdstat_evalsha:calls=(%d+)'))
    end
    -- nothing left from the tests before: no users, and no other node's
    -- keys (a node killed there lapses, then is swept, while this runs)
    eventually('only A and B in Redis, without users', function()
      return users(a) + users(b) == 0 and redis(port, 'SCARD', 'pseud:nodes') == '2'
        and redis(port, 'DBSIZE') == '3'          -- pseud:nodes and their liveness keys
    end, 30)
    local function memory() return tonumber(redis(port, 'INFO', 'memory'):match('used_memory:(%d+)')) end
    local keys0, memory0, runs0 = tonumber(redis(port, 'DBSIZE')), memory(), scripts_run()
    for _, node in ipairs({ a, b }) do
      local out, ok = process.run({ PYTHON, 'bench/churn.py', node.endpoint, 'service', '--peers', '2500',
                                    '--deadline', '60' }, { name = 'churn', timeout = 90 })
      assert(ok, out)
      assert.equal(2500, json.decode(out).peers)
    end
    -- every churned peer was written and taken out again (an add and a remove each)
    assert.is_true(scripts_run() - runs0 >= 2 * 5000, 'script runs: ' .. (scripts_run() - runs0))
    eventually('Redis back to its keys', function()
      return tonumber(redis(port, 'DBSIZE')) == keys0 and users(a) + users(b) == 0
    end, 20)
    -- and to its memory: 5,000 entries hold about 1 MB (docs/cluster.md: ~210
    -- bytes a user); what may stay is Redis's own slack (its keyspace table
    -- shrinks in its cron, client buffers), a small fraction of that
    eventually('Redis back to its memory', function() return memory() - memory0 < 128 * 1024 end, 10)
  end)
end)

describe('pseud-lua --cluster URL, PSEUD_CLUSTER=URL', function()
  local port, url

  lazy_setup(function()
    port = free_port()
    url = 'redis://127.0.0.1:' .. port
    start_redis(port)
  end)
  lazy_teardown(function() process.stop_all() end)

  it('join the first server made without a cluster option, and no other, to the cluster at URL', function()
    -- every other spec names the cluster in its script; this one's names
    -- none (spec/servers/cluster_flag.lua). Given both, the flag wins
    -- (pseud-lua(1)): the variable then names a port where nothing listens.
    local nowhere = 'redis://127.0.0.1:' .. free_port()
    for _, how in ipairs({
      { 'the flag', process.host(), '--cluster', url },
      { 'the variable', 'env', 'PSEUD_CLUSTER=' .. url, process.host() },
      { 'both', 'env', 'PSEUD_CLUSTER=' .. nowhere, process.host(), '--cluster', url },
    }) do
      local argv = { table.unpack(how, 2) }
      argv[#argv + 1] = 'spec/servers/cluster_flag.lua'
      local p = process.start(argv, { name = 'node-flag' })
      local endpoint, id = p:wait_for('^ready (%S+) (%S+)', 100, 15)
      assert.same({ outside = false, service = { node = id, up = true }, later = false },
                  call({ endpoint = endpoint }, 'clusters'), how[1])
      assert.equal('1', redis(port, 'EXISTS', 'pseud:node:' .. id), how[1])   -- its liveness key
      local ok, stopped, code = p:stop()
      assert(ok, ('%s: the node ended %s %s:\n%s'):format(how[1], stopped, code, p:report()))
      eventually('its liveness key gone', function() return redis(port, 'EXISTS', 'pseud:node:' .. id) == '0' end)
    end
  end)
end)
