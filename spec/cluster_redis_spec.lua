-- A node whose Redis misbehaves (docs/cluster.md, "Security of the cluster
-- link"): a Redis that answers in ways a healthy one never does must cost the
-- node a lost link, said in its log, never its memory or its CPU. The Redis
-- here is spec/support/fake_redis.py, which plays a healthy one but for the
-- answer each case names; the node is spec/servers/cluster.lua.
local process = require 'spec.support.process'
local logfmt = require 'spec.support.logfmt'

local PYTHON = '/usr/bin/python3'

-- fake_redis.py MODE [SECONDS]: its process and its port.
local function start_fake(mode, seconds)
  local p = process.start({ PYTHON, '-u', 'spec/support/fake_redis.py', mode, seconds and tostring(seconds) },
                          { name = 'fake-redis-' .. mode })
  return p, p:wait_for('^ready (%d+)$', 1, 10)
end

local function start_node(port, up_wait)
  local p = process.start({ 'env', 'PSEUD_SPEC_REDIS=redis://127.0.0.1:' .. port, 'PSEUD_SPEC_TIMEOUT=3',
                            'PSEUD_SPEC_TTL=1', 'PSEUD_SPEC_UP_WAIT=' .. (up_wait or 10),
                            process.host(), 'spec/servers/cluster.lua' }, { name = 'node' })
  local endpoint = p:wait_for('^ready (%S+)', 100, 20)
  return { proc = p, endpoint = endpoint }
end

local call = require('spec.support.cluster').call

-- The node's log records of its link going down whose reason has `text`.
local function link_losses(node, text)
  local hits = {}
  for _, rec in ipairs(logfmt.records(node.proc:log_text())) do
    if (rec.msg == 'cluster link lost' or rec.msg == 'cluster link not up')
        and (rec.reason or ''):find(text, 1, true) then
      hits[#hits + 1] = rec
    end
  end
  return hits
end

-- Bounded: until the log has such a record; returns the first.
local function await_loss(node, text)
  local deadline = os.time() + 10
  repeat
    local hits = link_losses(node, text)
    if hits[1] then return hits[1] end
    process.run({ 'sleep', '0.02' })
  until os.time() > deadline
  error(('no link loss saying %q in:\n%s'):format(text, node.proc:log_text()), 2)
end

local function rss_kib(node)
  local status = process.read('/proc/' .. node.proc.pid .. '/status')
  return assert(tonumber(status:match('VmRSS:%s*(%d+)')), 'no VmRSS for the node')
end

describe('a node whose Redis misbehaves', function()
  after_each(function() process.stop_all() end)

  it('reconnects at its backoff pace to a Redis that answers every EVALSHA with NOSCRIPT', function()
    -- as through a proxy that sends SCRIPT LOAD and EVALSHA to different
    -- servers: the link can never come up (an attack round: 3,500
    -- reconnections a second, the node's core pegged)
    local fake, port = start_fake('noscript', 2)
    local node = start_node(port, 0)
    local accepted = tonumber(fake:wait_for('^accepted (%d+)$', 100000, 10))
    -- two connections an attempt; backoff 0.1 s doubling: at most 7 attempts in 2 s
    assert.is_true(accepted >= 4, 'it kept trying: ' .. accepted)
    assert.is_true(accepted <= 16, 'connections in 2 s: ' .. accepted)
    local loss = link_losses(node, 'NOSCRIPT')[1] or link_losses(node, 'lost the scripts')[1]
    assert(loss, 'the log says why:\n' .. node.proc:log_text())
    assert.is_true(node.proc:alive())
  end)

  it('backs off as well from a Redis whose every lookup fails with NOSCRIPT once the link is up', function()
    -- a link that fails as soon as it is up must not come back at once each
    -- time: that is paced by nothing but the calls
    local fake, port = start_fake('noscript-lookups', 3)
    local node = start_node(port)
    local r = call(node, 'call_for', 'bob', 'whoami', 2)
    assert.is_true(r.ok + r.failed >= 20, 'it kept calling: ' .. (r.ok + r.failed))
    local accepted = tonumber(fake:wait_for('^accepted (%d+)$', 100000, 10))
    assert.is_true(accepted <= 20, 'connections in 3 s: ' .. accepted)
    assert(link_losses(node, 'lost the scripts')[1], 'the log says why:\n' .. node.proc:log_text())
  end)

  it('closes the link at once on an array header of 100,000,000 elements, its memory unspent', function()
    -- hiredis reserves a pointer per declared element before any comes:
    -- 800 MB for 14 bytes, freed in seconds that stopped the loop
    local _, port = start_fake('huge-array')
    local node = start_node(port)
    local before = rss_kib(node)
    local r = call(node, 'call', 'bob', 'whoami')        -- a lookup: answered with the header
    assert.is_false(r.ok)
    assert.is_true(r.seconds < 0.5, r.seconds)
    local loss = await_loss(node, 'Redis sent an array of 100000000 elements where the bound is 4')
    assert.equal('cluster link lost', loss.msg)
    assert.is_true(rss_kib(node) < before + 16 * 1024, ('RSS %d KiB, %d before'):format(rss_kib(node), before))
    -- the next link is healthy again
    local deadline = os.time() + 10
    while not call(node, 'up') and os.time() <= deadline do process.run({ 'sleep', '0.05' }) end
    assert.is_true(call(node, 'up'))
    assert.is_true(node.proc:alive())
  end)

  it('closes the subscription at once on a push whose payload is an array, its memory unspent', function()
    -- the subscription's connection owes nothing, so no watchdog would end
    -- it: the 2,000,000,000 elements streamed in until memory ran out
    local fake, port = start_fake('push-array')
    local node = start_node(port, 0)
    await_loss(node, 'Redis sent an array inside an array')
    assert.is_true(rss_kib(node) < 64 * 1024, 'RSS ' .. rss_kib(node) .. ' KiB')
    assert.is_true(node.proc:alive())
    fake:stop()
  end)

  it('closes the link on a reply nobody asked for, where hiredis would abort the process', function()
    local _, port = start_fake('stray')
    local node = start_node(port, 0)
    await_loss(node, 'Redis sent a reply nobody asked for')
    assert.is_true(node.proc:alive())
    local deadline = os.time() + 10                      -- the next link is healthy
    while not call(node, 'up') and os.time() <= deadline do process.run({ 'sleep', '0.05' }) end
    assert.is_true(call(node, 'up'))
  end)

  it('says so at once when Redis unsubscribes it before confirming, and links again', function()
    local _, port = start_fake('unsub-once')
    local node = start_node(port)
    assert.is_true(call(node, 'up'))
    local loss = await_loss(node, 'Redis unsubscribed this node from its channel')
    assert.equal('cluster link not up', loss.msg)
    assert.equal(1, #link_losses(node, ''))                -- and only that once
  end)
end)
