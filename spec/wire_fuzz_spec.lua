--[[
wire_fuzz_spec: a seeded, bounded wire-level fuzz of one pseud-lua server
(spec/servers/basic.lua), driven by spec/support/wirefuzz.py.

From one seed ($PSEUD_FUZZ_SEED, else DEFAULT_SEED; printed with the
summary) the driver sends COUNT messages from pyzmq ROUTER and DEALER peers
and from raw ZMTP peers (spec/support/zmtp_raw.py) while a good caller
interleaves valid calls to hello and echo. Fuzz peers send valid and
mutated pseud messages (frames cut and added, wrong versions, delimiters,
type bytes and uuids, random, flipped, truncated, huge and deep msgpack
bodies, forged replies, an unknown name of 4 KiB of non-UTF-8 bytes). Every
reply any peer gets is judged against DESIGN.md sections 1 and 4 (see the
driver's header); each violation has a rule, and each rule a group that one
`it` below asserts empty, so a failure names what broke.

Two runs, each against its own server:
  - raw routing ids of 1..255 bytes: everything but over-long ids, so a
    crash on long ids cannot hide the other findings;
  - raw routing ids of 1..2000 bytes (the first two 255 and 256), where a
    peer over 255 bytes must get nothing and the server must live on.
Bounded: at most TIME_LIMIT seconds of sending, a few more for answers
still due; the whole driver is killed after RUN_TIMEOUT.
]]
local process = require 'spec.support.process'
local json = require 'dkjson'

local SERVICE = 'service'
local WIREFUZZ = 'spec/support/wirefuzz.py'
local DEFAULT_SEED = 20240611
local COUNT = 3000                          -- messages per run
local TIME_LIMIT = 20                       -- seconds of sending, at most
local RUN_TIMEOUT = 60                      -- the driver is killed past this
local OK = 0x01

local SEED = tonumber(os.getenv('PSEUD_FUZZ_SEED') or '') or DEFAULT_SEED

--- The keys of a table of counts, sorted, as "k=v k=v".
local function counts(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = ('%s=%s'):format(k, tostring(t[k])) end
  return table.concat(out, ' ')
end

--- One line for the log of the run.
local function summary_line(label, r)
  return ('wire-fuzz [%s] seed=%d: sent %d/%d in %.2fs (%s); replies %d (%s); good caller %d/%d OK; '
    .. 'raw peers %d (%d over 255 bytes); final call %s; violations %d%s%s'):format(
    label, r.seed, r.sent, r.count, r.sending_seconds, counts(r.sent_by_transport), r.replies,
    counts(r.replies_by_type), r.good_ok, r.good_calls, r.raw_peers, r.raw_long_ids,
    r.final_ok and 'OK' or 'FAILED', r.violations,
    r.violations > 0 and ' (' .. counts(r.violations_by_rule) .. ')' or '',
    r.aborted ~= json.null and r.aborted and ('; aborted: ' .. r.aborted) or '')
end

for _, run in ipairs({
  { label = 'routing ids up to 255 bytes', max_id_len = 255 },
  { label = 'routing ids of 1..2000 bytes', max_id_len = 2000 },
}) do
  describe('a seeded, bounded wire-level fuzz, ' .. run.label, function()
    local server, endpoint, result, raw

    lazy_setup(function()
      server, endpoint = process.server('spec/servers/basic.lua')
      -- -B: the helpers it imports leave no .pyc in the tree
      local out, _, code, log = process.run(
        { '/usr/bin/python3', '-B', WIREFUZZ, endpoint, SERVICE, '--seed', tostring(SEED), '--count', tostring(COUNT),
          '--time-limit', tostring(TIME_LIMIT), '--max-id-len', tostring(run.max_id_len) },
        { name = 'wirefuzz', timeout = RUN_TIMEOUT })
      local f = io.open(log, 'rb')
      raw = out .. '\n-- stderr:\n' .. (f and f:read('a') or '')
      if f then f:close() end
      result = json.decode(out, 1, json.null)
      if type(result) ~= 'table' then
        error(('wirefuzz: exit %s, no JSON:\n%s\n-- server:\n%s'):format(tostring(code), raw, server:report()))
      end
      print(summary_line(run.label, result))
    end)

    lazy_teardown(function()
      process.stop_all()
    end)

    --- Assert that no violation of `group` was seen; show samples if any.
    local function none_in(group)
      local n = result.violations_by_group[group] or 0
      if n == 0 then return end
      local lines = {}
      for rule, samples in pairs(result.violation_samples) do
        for _, s in ipairs(samples) do
          if s.group == group then
            lines[#lines + 1] = ('  %s [%s, %s, id of %s bytes]: %s'):format(rule, tostring(s.peer),
              tostring(s.kind), tostring(s.id_len), tostring(s.detail):sub(1, 300))
          end
        end
      end
      table.sort(lines)
      error(('%d violation(s) in group %q (seed %d; all rules: %s); samples:\n%s\n-- server:\n%s'):format(
        n, group, result.seed, counts(result.violations_by_rule), table.concat(lines, '\n'),
        server:report()), 2)
    end

    it('sends every message within its time bound', function()
      assert(result.aborted == json.null, 'the fuzz stopped early: ' .. tostring(result.aborted))
      assert.equal(COUNT, result.sent)
      assert.truthy(result.sending_seconds < TIME_LIMIT)
      none_in('liveness')
    end)

    it('answers the good caller every call exactly once, correctly', function()
      assert.truthy(result.good_calls > 0)
      none_in('good')
      assert.equal(result.good_calls, result.good_ok)
    end)

    it('answers only messages that asked, once, with their uuid, as the contract says', function()
      none_in('replies')
      none_in('other')
    end)

    it('writes every ERROR as three valid UTF-8 str of a known class, host text bounded', function()
      none_in('error-text')
    end)

    it('answers an unknown 4 KiB non-UTF-8 name with ServiceNotFoundError, valid UTF-8, at most ~1.1 KiB',
      function()
        assert.truthy((result.sent_by_kind.long_bin_name or 0) >= 2)
        none_in('name-echo')
      end)

    if run.max_id_len > 255 then
      it('never answers a peer whose routing id is over 255 bytes', function()
        assert.truthy(result.raw_long_ids > 0, 'no raw peer had a long id')
        none_in('long-ids')
      end)
    end

    it('is alive at the end and answers a new caller', function()
      assert.is_true(result.final_ok, 'the driver\'s last call failed:\n' .. raw)
      assert(server:alive(), 'the server died:\n' .. server:report())
      local r, ok, out = process.pypeer({ 'call', endpoint, SERVICE, 'hello', '["after fuzz"]' })
      assert(ok, out .. '\n-- server:\n' .. server:report())
      assert.equal(OK, r.type)
      assert.equal('Hello after fuzz', r.body)
    end)

    it('has no violation at all', function()
      assert.equal(0, result.violations, summary_line(run.label, result))
    end)
  end)
end
