--[[
process: start, read and stop the real processes that the end-to-end specs
drive (pseud-lua servers and clients, the Python peer), with stock Lua only.

There is no lua-posix here, so a child is started as
  sh -c 'setsid <cmd> 2>LOG </dev/null & echo $!; wait $!'
through io.popen in read mode: the first line is the child's PID, the next
lines are its stdout, EOF means it (and the shell waiting for it) is gone.
setsid makes the child lead its own process group: signals go to the group,
so nothing it started survives it holding our pipe open.
Its stderr goes to a log file in one temp dir per run, so a failing spec can
show what the host said; the child finds that file's path in $PSEUD_SPEC_LOG
(a client that must wait for a line it logs itself reads it there). Every wait is bounded: a read that might block
forever is covered by a watchdog that KILLs the child when time is up, which
turns the hang into an EOF the reader sees.

Every started process is tracked; `process.stop_all()` belongs in the
`lazy_teardown`/`after_each` of every spec that starts one.

It does not parse protocol data (pypeer.py does) and starts nothing remote:
every endpoint the specs use is on loopback.
]]

local json = require 'dkjson'

local process = {}

local PYTHON = '/usr/bin/python3'          -- Debian's, which has zmq and msgpack
local PYPEER = 'spec/support/pypeer.py'
local STOP_GRACE = 3                       -- seconds between TERM and KILL
local RUN_TIMEOUT = 30                     -- default bound for run-to-completion

local running = {}                         -- started and not yet stopped, in order
local counter = 0
local tmpdir

--- Quote one word for sh.
local function quote(word)
  return "'" .. tostring(word):gsub("'", "'\\''") .. "'"
end
process.quote = quote

--- Join argv words into a quoted command line (a string passes as is).
local function command_line(argv)
  if type(argv) == 'string' then return argv end
  local words = {}
  for i, w in ipairs(argv) do words[i] = quote(w) end
  return table.concat(words, ' ')
end
process.command_line = command_line

local function read_file(path)
  local f = io.open(path, 'rb')
  if not f then return '' end
  local text = f:read('a')
  f:close()
  return text
end

--- A file's bytes; raises when it cannot be read.
function process.read(path)
  local f = assert(io.open(path, 'rb'))
  local text = f:read('a')
  f:close()
  return text
end

--- Write `text` to `path` (replacing it); raises when it cannot.
function process.write(path, text)
  local f = assert(io.open(path, 'wb'))
  f:write(text)
  f:close()
end

--- The spec file's temp dir (made on first use): under scripts/test's run
-- dir ($PSEUD_SPEC_TMPDIR, removed when everything passed), else in $TMPDIR.
function process.tmpdir()
  if not tmpdir then
    local h = assert(io.popen('if [ -d "${PSEUD_SPEC_TMPDIR:-}" ]; then mktemp -d "$PSEUD_SPEC_TMPDIR/XXX"; '
      .. 'else mktemp -d "${TMPDIR:-/tmp}/pseud-spec.XXXXXX"; fi', 'r'))
    tmpdir = h:read('l')
    h:close()
    assert(tmpdir and tmpdir ~= '', 'mktemp -d failed')
  end
  return tmpdir
end

--- Absolute path of a file relative to the repository root (the cwd).
local cwd
function process.abspath(path)
  if path:sub(1, 1) == '/' then return path end
  if not cwd then
    cwd = os.getenv('PWD')
    if not cwd then
      local h = assert(io.popen('pwd', 'r'))
      cwd = h:read('l')
      h:close()
    end
  end
  return cwd .. '/' .. path
end

--- A watchdog: a shell in its own session that sleeps SECS, then sends SIG
-- to the process group PID. It prints its own PID once it runs in that
-- session, so cancelling (a TERM to its whole group: shell and sleep) cannot
-- race with its start. Returns the canceller.
local function watchdog(pid, secs, sig)
  local script = ('echo $$; exec >/dev/null; sleep %s; kill -%s -%d 2>/dev/null || kill -%s %d 2>/dev/null')
    :format(secs, sig or 'KILL', pid, sig or 'KILL', pid)
  local h = assert(io.popen(('setsid sh -c %s 2>/dev/null </dev/null &'):format(quote(script)), 'r'))
  local wpid = tonumber(h:read('l'))
  h:close()
  return function()
    if wpid then
      os.execute(('kill -TERM -%d 2>/dev/null'):format(wpid))
      wpid = nil
    end
  end
end

--- Fail loudly when a child's stderr holds a sanitizer report (ASan, UBSan,
-- LSan): under `scripts/test --sanitize` a server that misbehaves while being
-- stopped would otherwise only leave a line in its log.
-- One failure is the sanitizer runtime's own, not a report: LeakSanitizer's
-- tracer (the forked process that stops the threads to scan them) now and
-- then dies of a SIGSEGV at exit ("Tracer caught signal 11", then "has
-- encountered a fatal error" and its HINT lines; google/sanitizers#1353,
-- seen twice in this project's CI, each time at a server's exit). No leak check was made then: it
-- is said on stderr, and only another sanitizer line left fails the run.
local TRACER_DIED = { '^Tracer caught signal %d+:[^\n]*\n', '^==%d+==LeakSanitizer has encountered a fatal error%.\n',
  '^==%d+==HINT: [^\n]*\n' }

local function without_tracer_death(text)
  local kept, died = {}, false
  for line in text:gmatch('[^\n]*\n?') do
    local tool = false
    for _, pattern in ipairs(TRACER_DIED) do
      if line:find(pattern) then tool = true end
    end
    if tool then died = true else kept[#kept + 1] = line end
  end
  return table.concat(kept), died
end

local function check_sanitizers(log, what)
  local text, died = without_tracer_death(read_file(log))
  if text:find('Sanitizer', 1, true) or text:find('runtime error:', 1, true) then
    error(('sanitizer report from %s (%s):\n%s'):format(what, log, read_file(log)), 0)
  end
  if died then
    io.stderr:write(('note: LeakSanitizer\'s tracer died at the exit of %s (%s): no leak check made\n')
      :format(what, log))
  end
end
process.check_sanitizers = check_sanitizers

--- `--workers N` when $PSEUD_SPEC_WORKERS asks for N > 1 (the whole suite
-- run with workers, docs/workers.md), else nothing: words to put before
-- the script in a pseud-lua command line.
function process.workers_args()
  local n = tonumber(os.getenv('PSEUD_SPEC_WORKERS') or '')
  if n and n > 1 then return { '--workers', tostring(math.floor(n)) } end
  return {}
end

local HELPERS = { call = true, ls = true, keygen = true, passwd = true }

--- argv with `--workers N` after the host when $PSEUD_SPEC_WORKERS asks
-- for it and argv runs a script file with pseud-lua (not a helper command,
-- not -e code, not one that chose its own --workers). Workers start only
-- when a script serves, so clients are unchanged.
local function with_workers(argv)
  local extra = process.workers_args()
  if #extra == 0 or type(argv) ~= 'table' or argv[1] ~= process.host() then return argv end
  local first = argv[2]
  if type(first) ~= 'string' or HELPERS[first] or first:sub(1, 1) == '-' then return argv end
  local out = { argv[1] }
  for _, w in ipairs(extra) do out[#out + 1] = w end
  for i = 2, #argv do out[#out + 1] = argv[i] end
  return out
end

local Proc = {}
Proc.__index = Proc

--- Start `cmd` (a string for sh, or an argv table). opts.name labels messages.
function process.start(cmd, opts)
  opts = opts or {}
  counter = counter + 1
  local log = ('%s/%d-%s.log'):format(process.tmpdir(), counter,
    (opts.name or 'proc'):gsub('[^%w_.-]', '_'))
  local line = command_line(with_workers(cmd))
  local sh = ('sh -c %s'):format(
    quote(('PSEUD_SPEC_LOG=%s setsid %s 2>%s </dev/null & echo $!; wait $!'):format(
      quote(log), line, quote(log))))
  local h = assert(io.popen(sh, 'r'))
  local pid = tonumber(h:read('l'))
  if not pid then
    h:close()
    error(('could not start %s: no PID (log %s)\n%s'):format(line, log, read_file(log)))
  end
  local proc = setmetatable({ pid = pid, log = log, cmd = line, name = opts.name or line,
                              h = h, lines = {} }, Proc)
  running[#running + 1] = proc
  return proc
end

--- The child's next stdout line, or nil at EOF (the child is gone).
function Proc:read_line()
  if not self.h then return nil end
  local line = self.h:read('l')
  if line then self.lines[#self.lines + 1] = line end
  return line
end

--- What the child wrote to stderr so far.
function Proc:log_text()
  return read_file(self.log)
end

--- The last `n` lines of `text`.
local function tail(text, n)
  local lines = {}
  for line in text:gmatch('[^\n]*\n?') do
    if line ~= '' then lines[#lines + 1] = line end
  end
  if #lines <= n then return text end
  return ('[%d lines before]\n'):format(#lines - n) .. table.concat(lines, '', #lines - n + 1)
end

--- A description for error messages: command, stdout seen, stderr log tail.
function Proc:report(seen)
  return ('%s (pid %d)\n-- stdout lines seen:\n%s\n-- stderr (%s), last lines:\n%s'):format(
    self.cmd, self.pid, table.concat(seen or self.lines, '\n'), self.log, tail(self:log_text(), 30))
end

--- Read lines until one matches `pattern`; return its captures (or the line).
-- Errors with the lines seen if the child ends first, or after max_lines, or
-- when `timeout` seconds pass (default 10: the child is KILLed by a watchdog,
-- which ends the read).
function Proc:wait_for(pattern, max_lines, timeout)
  max_lines = max_lines or 1000
  local cancel = watchdog(self.pid, timeout or 10, 'KILL')
  local seen = {}
  local ok, result = pcall(function()
    for _ = 1, max_lines do
      local line = self:read_line()
      if not line then
        error(('%s ended before printing a line matching %q:\n%s'):format(
          self.name, pattern, self:report(seen)), 0)
      end
      seen[#seen + 1] = line
      local caps = table.pack(line:match(pattern))
      if caps[1] ~= nil then return caps end
    end
    error(('%s printed %d lines, none matching %q:\n%s'):format(
      self.name, max_lines, pattern, self:report(seen)), 0)
  end)
  cancel()
  if not ok then error(result, 2) end
  return table.unpack(result, 1, result.n)
end

--- Send a signal (default TERM) to the child's process group (to the child
-- alone if it has not reached setsid yet).
function Proc:kill(sig)
  sig = sig or 'TERM'
  return os.execute(('kill -%s -%d 2>/dev/null || kill -%s %d 2>/dev/null'):format(
    sig, self.pid, sig, self.pid))
end

--- True while the child runs and has not been stopped here.
function Proc:alive()
  if not self.h then return false end
  return os.execute(('kill -0 %d 2>/dev/null'):format(self.pid)) == true
end

--- TERM the child, KILL it if it is still there after STOP_GRACE seconds,
-- collect its remaining stdout and its exit status. Idempotent.
-- Returns ok, how ('exit'|'signal'), code as io.popen's close does for the
-- shell (whose status is the child's: 128+n after signal n).
function Proc:stop()
  if self.h then self:kill('TERM') end
  return self:collect(STOP_GRACE)
end

--- Wait (bounded) for the child to end by itself; returns like stop().
function Proc:wait(timeout)
  return self:collect(timeout or RUN_TIMEOUT)
end

--- Read the child's output to its end (KILLing it after `grace` seconds),
-- reap it, forget it, and check its log for sanitizer reports. Idempotent.
function Proc:collect(grace)
  if self.h then
    local cancel = watchdog(self.pid, grace, 'KILL')
    local rest = self.h:read('a')            -- EOF once the child is gone
    for line in rest:gmatch('[^\n]+') do self.lines[#self.lines + 1] = line end
    self.status = table.pack(self.h:close())
    self.h = nil
    cancel()
    for i, p in ipairs(running) do
      if p == self then table.remove(running, i) break end
    end
    check_sanitizers(self.log, self.name)
  end
  return table.unpack(self.status, 1, self.status.n)
end

--- Stop every process started and not yet stopped, newest first.
function process.stop_all()
  local first_error
  for i = #running, 1, -1 do
    local p = running[i]
    if p then
      local ok, err = pcall(p.stop, p)
      if not ok and not first_error then first_error = err end
    end
  end
  if first_error then error(first_error, 0) end
end

--- Path of the pseud-lua host: $PSEUD_LUA or build/pseud-lua, absolute.
function process.host()
  return process.abspath(os.getenv('PSEUD_LUA') or 'build/pseud-lua')
end

--- Start `pseud-lua script args...`; wait for `ready <endpoint>`.
-- Returns proc, endpoint.
function process.server(script, ...)
  local argv = { process.host(), script, ... }
  local proc = process.start(argv, { name = script:match('[^/]+$') })
  local endpoint = proc:wait_for('^ready (%S+)', 100, 10)
  return proc, endpoint
end

--- Start the Python peer's server; returns proc, endpoint. Options after
-- the endpoint go to pypeer's server command (--authloop).
function process.pyserver(service, endpoint, ...)
  local argv = { PYTHON, '-u', PYPEER, 'server', endpoint or 'tcp://127.0.0.1:*', service, ... }
  local proc = process.start(argv, { name = 'pypeer-server' })
  local ep = proc:wait_for('^ready (%S+)', 10, 10)
  return proc, ep
end

--- Run `argv` to completion (bounded by opts.timeout seconds via coreutils
-- timeout, KILL 2 s after TERM). Returns stdout, ok, code; stderr goes to a
-- log file whose path is the 4th result (and the child's $PSEUD_SPEC_LOG).
function process.run(argv, opts)
  opts = opts or {}
  counter = counter + 1
  local log = ('%s/%d-%s.log'):format(process.tmpdir(), counter,
    (opts.name or 'run'):gsub('[^%w_.-]', '_'))
  local cmd = ('PSEUD_SPEC_LOG=%s timeout -k 2 %s %s 2>%s </dev/null'):format(
    quote(log), opts.timeout or RUN_TIMEOUT, command_line(with_workers(argv)), quote(log))
  local h = assert(io.popen(cmd, 'r'))
  local out = h:read('a')
  local ok, _, code = h:close()
  check_sanitizers(log, opts.name or 'run')
  return out, ok == true, code, log
end

--- Run a script that prints result lines and ends with `done`: returns
-- the lines before `done`; errors with its output and log when it failed.
function process.run_lines(argv, opts)
  local out, ok, code, log = process.run(argv, opts)
  local lines = {}
  for line in out:gmatch('[^\n]+') do lines[#lines + 1] = line end
  if not (ok and lines[#lines] == 'done') then
    error(('%s: exit %s\n%s\n%s'):format(command_line(argv), tostring(code), out, read_file(log)), 2)
  end
  table.remove(lines)
  return lines
end

--- Run `/usr/bin/python3 script args` to completion: stdout, ok, code.
-- `args` is an argv table (each word quoted) or a string passed to sh.
function process.python(script, args)
  local line = command_line({ PYTHON, script })
  if type(args) == 'table' then
    line = line .. ' ' .. command_line(args)
  elseif args then
    line = line .. ' ' .. args
  end
  return process.run(line, { name = 'python' })
end

--- Run pypeer.py with argv `args`; returns its decoded JSON result, ok,
-- and the raw stdout plus stderr for messages.
function process.pypeer(args)
  local out, ok, code, log = process.python(PYPEER, args)
  local value, _, err = json.decode(out, 1, json.null)
  if type(value) ~= 'table' then
    error(('pypeer %s: exit %s, no JSON (%s):\n%s\n-- stderr:\n%s'):format(
      command_line(args), tostring(code), tostring(err), out, read_file(log)), 2)
  end
  return value, ok, out .. read_file(log)
end

process.null = json.null

return process
