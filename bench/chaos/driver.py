#!/usr/bin/python3
"""Chaos run of a pseud-lua cluster (issue 14's judgement; scripts/cluster-chaos).

usage: driver.py OUTDIR --binary PATH [--duration S] [--peers N] [--rate R]
                 [--schedule full|full2|none] [--seed N] [--heartbeats 0|1]

One process starts redis-server and three nodes (bench/chaos/node.lua; C
with --workers 2) as children, each on a fixed free loopback port so a
restart binds the same address; a farm of Python pseud peers (one ROUTER
per user id) that move between nodes and leave for a while; one caller per
node calling its `call(user, seq, delay)`, which does
server:send_to(user).whoami(seq, delay). The schedule kills, pauses and
restarts nodes and Redis. Then a calm spell, every user called from every
node, the directory compared with where each user is, every peer leaving
(the directory must empty), and a node killed with users on it (its entries
must go). Every call, every WORK a peer got and every event go to
OUTDIR/*.jsonl; judge.py says what went wrong. The peers are not
pseud-lua clients: a node restarted on its address hears them again only
when they send (libzmq probes a socket's first connection only), so they
send a HEARTBEAT a second unless --heartbeats 0.
"""
import json, os, random, signal, socket, subprocess, sys, time, uuid
import msgpack, zmq

OUT = sys.argv[1]
args = sys.argv[2:]
def opt(name, default):
    if name in args:
        return type(default)(args[args.index(name) + 1])
    return default
BINARY = opt('--binary', '')
DURATION = opt('--duration', 240.0)
NPEERS = opt('--peers', 30)
RATE = opt('--rate', 20.0)          # calls a second per node
SCHEDULE = opt('--schedule', 'full')
SEED = opt('--seed', 1)
HEARTBEATS = opt('--heartbeats', 1)
hb_at = [0.0]
random.seed(SEED)
os.makedirs(OUT, exist_ok=True)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if not BINARY:
    sys.exit('driver.py: --binary PATH (a pseud-lua build) is required')
NODE_TIMEOUT = 3.0
T0 = time.monotonic()
def now(): return time.monotonic() - T0

def free_port():
    s = socket.socket(); s.bind(('127.0.0.1', 0)); p = s.getsockname()[1]; s.close(); return p

evlog = open(os.path.join(OUT, 'events.jsonl'), 'w')
def event(kind, **kw):
    kw.update(t=round(now(), 3), kind=kind)
    evlog.write(json.dumps(kw) + '\n'); evlog.flush()
    print('%7.2f %s %s' % (now(), kind, json.dumps({k: v for k, v in kw.items() if k not in ('t', 'kind')})), flush=True)

# ------------------------------------------------------------ processes
children = []   # every Popen we made

class Redis:
    def __init__(self):
        self.port = free_port(); self.proc = None; self.n = 0
    def start(self):
        self.n += 1
        err = open(os.path.join(OUT, 'redis-%d.log' % self.n), 'w')
        self.proc = subprocess.Popen(['redis-server', '--port', str(self.port), '--bind', '127.0.0.1',
                                      '--save', '', '--appendonly', 'no', '--loglevel', 'notice'],
                                     stdout=err, stderr=subprocess.STDOUT)
        children.append(self.proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.cli('PING') == 'PONG': break
            time.sleep(0.05)
        event('redis_started', pid=self.proc.pid)
    def cli(self, *a):
        try:
            r = subprocess.run(['redis-cli', '-p', str(self.port), '--raw'] + list(a), capture_output=True,
                               timeout=5, text=True, errors='replace')
            return r.stdout.rstrip('\n')
        except subprocess.TimeoutExpired:
            return None

class Node:
    def __init__(self, name, workers, redis_port):
        self.name, self.workers = name, workers
        self.port = free_port(); self.endpoint = 'tcp://127.0.0.1:%d' % self.port
        self.redis_port = redis_port; self.proc = None; self.n = 0; self.paused = False
    def start(self):
        self.n += 1
        tag = '%s-%d' % (self.name, self.n)
        env = dict(os.environ, CHAOS_REDIS='redis://127.0.0.1:%d' % self.redis_port,
                   CHAOS_TIMEOUT=str(NODE_TIMEOUT),
                   LUA_PATH='%s/lua/?.lua;%s/lua/?/init.lua;;' % (REPO, REPO),
                   ASAN_OPTIONS='detect_leaks=1:abort_on_error=0:log_path=%s/asan-%s' % (OUT, tag))
        argv = [BINARY] + (['--workers', str(self.workers)] if self.workers > 1 else []) + \
               [os.path.join(REPO, 'bench/chaos/node.lua'), self.endpoint]
        self.out = os.path.join(OUT, 'node-%s.out' % tag); self.err = os.path.join(OUT, 'node-%s.err' % tag)
        self.proc = subprocess.Popen(argv, stdout=open(self.out, 'w'), stderr=open(self.err, 'w'), env=env)
        children.append(self.proc); self.paused = False
        event('node_started', node=self.name, pid=self.proc.pid, incarnation=self.n)
    def alive(self): return self.proc is not None and self.proc.poll() is None
    def signal(self, sig):
        if self.alive(): os.kill(self.proc.pid, sig)
    def rss_kb(self):
        try:
            for line in open('/proc/%d/status' % self.proc.pid):
                if line.startswith('VmRSS:'): return int(line.split()[1])
        except OSError:
            return None

# ------------------------------------------------------------ zmq
ctx = zmq.Context.instance()
poller = zmq.Poller()
SERVICE = b'service'
def pack(v): return msgpack.packb(v, use_bin_type=True)
def unpack(b): return msgpack.unpackb(b, raw=False)

works = open(os.path.join(OUT, 'works.jsonl'), 'w')   # what the peers got
calls_log = open(os.path.join(OUT, 'calls.jsonl'), 'w')

class Peer:
    """one user id; one socket at a time, connected to one node"""
    def __init__(self, uid):
        self.uid = uid; self.sock = None; self.node = None; self.since = None; self.gen = 0
    def connect(self, node):
        self.close()
        s = ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0); s.setsockopt(zmq.ROUTING_ID, self.uid.encode())
        s.setsockopt(zmq.PROBE_ROUTER, 1); s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        s.connect(node.endpoint)
        self.sock, self.node, self.since = s, node, now(); self.gen += 1
        poller.register(s, zmq.POLLIN); sock_owner[s] = self
        event('peer_connect', user=self.uid, node=node.name, gen=self.gen)
    def close(self):
        if self.sock is not None:
            poller.unregister(self.sock); del sock_owner[self.sock]; self.sock.close(0)
            event('peer_close', user=self.uid, node=self.node.name, gen=self.gen)
        self.sock = self.node = None

sock_owner = {}
pending_replies = []   # (due, peer, gen, frames)

class Caller:
    def __init__(self, node):
        self.node = node
        s = ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0); s.setsockopt(zmq.ROUTING_ID, ('caller-' + node.name).encode())
        s.setsockopt(zmq.PROBE_ROUTER, 1); s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        s.connect(node.endpoint); poller.register(s, zmq.POLLIN); sock_owner[s] = self
        self.sock = s; self.outstanding = {}; self.next_at = 0.0
    def close(self):
        poller.unregister(self.sock); del sock_owner[self.sock]; self.sock.close(0)

calls = {}     # uuid -> record
seq_counter = [0]
def pick_delay():
    r = random.random()
    if r < 0.75: return 0
    if r < 0.97: return round(random.uniform(0.1, 2.0), 2)
    return 4.0                       # past the node's 3 s timeout: expect TimeoutError

def send_call(caller, user, delay=None):
    seq_counter[0] += 1; seq = seq_counter[0]
    if delay is None: delay = pick_delay()
    u = uuid.uuid4().bytes
    body = pack(['call', [user, seq, delay], {}])
    try:
        caller.sock.send_multipart([SERVICE, b'', b'v1', u, b'\x03', body], flags=zmq.NOBLOCK)
    except zmq.ZMQError:
        return None                  # node not connected: not a call
    rec = dict(uuid=u.hex(), seq=seq, origin=caller.node.name, user=user, delay=delay, sent=now(), replies=[])
    calls[u] = rec; caller.outstanding[u] = rec
    return rec

def on_caller_msg(caller, frames):
    if len(frames) != 6:
        event('caller_odd_frames', origin=caller.node.name, n=len(frames)); return
    u, typ, body = frames[3], frames[4], frames[5]
    rec = calls.get(u)
    try: val = unpack(body)
    except Exception as e: val = 'undecodable: %s' % e
    if rec is None:
        event('caller_reply_unknown_uuid', origin=caller.node.name, uuid=u.hex()); return
    rec['replies'].append(dict(t=now(), type=typ[0], val=val))
    caller.outstanding.pop(u, None)
    if len(rec['replies']) > 1:
        event('DUPLICATE_caller_reply', seq=rec['seq'])

def on_peer_msg(peer, frames):
    if len(frames) == 6 and frames[4] == b'\x03':
        u = frames[3]
        try:
            name, a, kw = unpack(frames[5])
        except Exception as e:
            event('peer_bad_work', user=peer.uid, err=str(e)); return
        seq, delay = (a + [None, 0])[:2]
        works.write(json.dumps(dict(t=round(now(), 4), user=peer.uid, node=peer.node.name, gen=peer.gen,
                                    name=name, seq=seq, delay=delay, uuid=u.hex())) + '\n')
        value = 'I am %s %s' % (peer.uid, seq)
        rep = [SERVICE, b'', b'v1', u, b'\x01', pack(value)]
        pending_replies.append((now() + (delay or 0), peer, peer.gen, rep))
    elif len(frames) >= 2 and frames[1] == b'' and len(frames) == 2:
        pass                         # a probe
    else:
        event('peer_other_msg', user=peer.uid, frames=[f[:20].hex() for f in frames])

# ------------------------------------------------------------ setup
redis = Redis(); redis.start()
nodes = [Node('A', 1, redis.port), Node('B', 1, redis.port), Node('C', 2, redis.port)]
for n in nodes: n.start()
# wait for ready lines (bounded)
deadline = time.monotonic() + 30
while time.monotonic() < deadline and not all('ready' in open(n.out).read() for n in nodes):
    time.sleep(0.1)
for n in nodes: event('node_ready', node=n.name, line=open(n.out).read().strip())
peers = [Peer('u%02d' % i) for i in range(NPEERS)]
for i, p in enumerate(peers): p.connect(nodes[i % 3])
callers = [Caller(n) for n in nodes]
byname = {n.name: n for n in nodes}

# ------------------------------------------------------------ chaos schedule
def kill_node(name, sig):
    n = byname[name]
    if n.alive():
        event('node_signal', node=name, sig=signal.Signals(sig).name, pid=n.proc.pid)
        n.signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            for c in callers:
                if c.node is n: c.outstanding.clear()     # those will never be answered
        if sig == signal.SIGSTOP: n.paused = True
        if sig == signal.SIGCONT: n.paused = False

def restart_node(name):
    n = byname[name]
    try: rc = n.proc.wait(8)
    except subprocess.TimeoutExpired:
        event('NODE_NOT_EXITED', node=name); return
    event('node_exit', node=name, rc=rc, incarnation=n.n)
    n.start()

def redis_signal(sig):
    event('redis_signal', sig=signal.Signals(sig).name, pid=redis.proc.pid)
    os.kill(redis.proc.pid, sig)

def redis_restart():
    if redis.proc.poll() is None: return
    event('redis_exit', rc=redis.proc.wait(5))
    redis.start()

S = signal
sched_full = [
    # (at, fn, args)
    (20, kill_node, ('B', S.SIGKILL)), (23, restart_node, ('B',)),
    (40, kill_node, ('A', S.SIGSTOP)), (44, kill_node, ('A', S.SIGCONT)),
    (60, redis_signal, (S.SIGKILL,)), (63, redis_restart, ()),
    (80, redis_signal, (S.SIGSTOP,)), (82.5, redis_signal, (S.SIGCONT,)),
    (100, kill_node, ('C', S.SIGSTOP)), (101.5, kill_node, ('C', S.SIGCONT)),
    (115, kill_node, ('C', S.SIGKILL)), (117, restart_node, ('C',)),
    (135, redis_signal, (S.SIGKILL,)), (135, kill_node, ('A', S.SIGKILL)),
    (137, redis_restart, ()), (138, restart_node, ('A',)),
    (155, kill_node, ('B', S.SIGSTOP)), (165, kill_node, ('B', S.SIGCONT)),
    (180, kill_node, ('A', S.SIGTERM)), (182, restart_node, ('A',)),
    (195, kill_node, ('C', S.SIGSTOP)), (196, redis_signal, (S.SIGKILL,)), (197, redis_restart, ()),
    (199, kill_node, ('C', S.SIGCONT)),
    (210, kill_node, ('B', S.SIGKILL)), (210.5, kill_node, ('C', S.SIGKILL)),
    (212, restart_node, ('B',)), (213, restart_node, ('C',)),
]
sched_full2 = [
    (15, redis_signal, (S.SIGSTOP,)), (19, redis_signal, (S.SIGCONT,)),          # Redis hangs past ttl
    (35, kill_node, ('C', S.SIGSTOP)), (40, kill_node, ('C', S.SIGCONT)),        # workers node paused past ttl
    (55, kill_node, ('A', S.SIGKILL)), (55.2, kill_node, ('B', S.SIGSTOP)), (58, restart_node, ('A',)),
    (60, kill_node, ('B', S.SIGCONT)),
    (75, redis_signal, (S.SIGKILL,)), (75.5, redis_restart, ()),
    (77, redis_signal, (S.SIGKILL,)), (80, redis_restart, ()),                    # twice in a row
    (95, kill_node, ('B', S.SIGTERM)), (95.2, kill_node, ('C', S.SIGSTOP)), (100, restart_node, ('B',)),
    (101, kill_node, ('C', S.SIGCONT)),
    (115, redis_signal, (S.SIGSTOP,)), (115.5, kill_node, ('A', S.SIGSTOP)), (117, redis_signal, (S.SIGCONT,)),
    (119, kill_node, ('A', S.SIGCONT)),
    (135, kill_node, ('C', S.SIGKILL)), (135.3, redis_signal, (S.SIGSTOP,)), (136.5, redis_signal, (S.SIGCONT,)),
    (137, restart_node, ('C',)),
    (150, kill_node, ('A', S.SIGSTOP)), (150, kill_node, ('B', S.SIGSTOP)), (150, kill_node, ('C', S.SIGSTOP)),
    (154, kill_node, ('A', S.SIGCONT)), (154.1, kill_node, ('B', S.SIGCONT)), (154.2, kill_node, ('C', S.SIGCONT)),
    (170, kill_node, ('B', S.SIGKILL)), (171, restart_node, ('B',)),
    (172, kill_node, ('B', S.SIGKILL)), (173, restart_node, ('B',)),              # crash loop
]
sched = {'full': sched_full, 'full2': sched_full2, 'none': []}[SCHEDULE]
sched = sorted(sched, key=lambda e: e[0])
CHAOS_END = DURATION
next_move = 5.0; away = {}          # uid -> back-at
rss = open(os.path.join(OUT, 'rss.jsonl'), 'w'); next_rss = 0

def pump(until, issue=True, moves=True):
    global next_move, next_rss
    while now() < until:
        t = now()
        while sched and sched[0][0] <= t:
            at, fn, a = sched.pop(0); fn(*a)
        # peer farm: moves and departures
        if moves and t >= next_move:
            next_move = t + 0.7
            p = random.choice(peers)
            if p.uid in away: pass
            elif random.random() < 0.2:
                p.close(); away[p.uid] = t + random.uniform(4, 10)
            else:
                p.connect(random.choice([n for n in nodes if n is not p.node]))
        for uid, back in list(away.items()):
            if t >= back:
                del away[uid]; next(p for p in peers if p.uid == uid).connect(random.choice(nodes))
        if HEARTBEATS and t >= hb_at[0]:
            hb_at[0] = t + 1.0
            for p in peers:
                if p.sock is not None:
                    try: p.sock.send_multipart([SERVICE, b'', b'v1', b'', b'\x06', b''], flags=zmq.NOBLOCK)
                    except zmq.ZMQError: pass
        # callers
        if issue:
            for c in callers:
                if t >= c.next_at and len(c.outstanding) < 8:
                    c.next_at = t + random.expovariate(RATE)
                    send_call(c, random.choice(peers).uid)
        # replies due
        if pending_replies:
            pending_replies.sort(key=lambda r: r[0])
            while pending_replies and pending_replies[0][0] <= t:
                _, p, gen, rep = pending_replies.pop(0)
                if p.gen == gen and p.sock is not None:
                    try: p.sock.send_multipart(rep, flags=zmq.NOBLOCK)
                    except zmq.ZMQError as e: event('peer_reply_unroutable', user=p.uid, err=str(e))
        if t >= next_rss:
            next_rss = t + 5
            rss.write(json.dumps(dict(t=round(t, 1), **{n.name: [n.n, n.rss_kb()] for n in nodes})) + '\n'); rss.flush()
        for s, ev in poller.poll(5):
            owner = sock_owner.get(s)
            while owner is not None:
                try: frames = s.recv_multipart(zmq.NOBLOCK)
                except zmq.ZMQError: break
                if isinstance(owner, Caller): on_caller_msg(owner, frames)
                else: on_peer_msg(owner, frames)
        # unexpected node deaths
        for n in nodes:
            if n.proc.poll() is not None and not getattr(n, 'reported_%d' % n.n, False):
                setattr(n, 'reported_%d' % n.n, True)
                event('node_dead', node=n.name, rc=n.proc.returncode, incarnation=n.n)

def dump_calls():
    with open(os.path.join(OUT, 'calls.jsonl'), 'w') as f:
        for rec in calls.values():
            f.write(json.dumps(rec, default=str) + '\n')

def directory_snapshot(tag):
    keys = (redis.cli('KEYS', 'pseud:*') or '').split('\n')
    snap = {'tag': tag, 't': round(now(), 2), 'keys': {}}
    for k in sorted(x for x in keys if x):
        typ = redis.cli('TYPE', k)
        if typ == 'zset': v = redis.cli('ZRANGE', k, '0', '-1', 'WITHSCORES').split('\n')
        elif typ == 'set': v = sorted(redis.cli('SMEMBERS', k).split('\n'))
        elif typ == 'string': v = [redis.cli('GET', k), redis.cli('PTTL', k)]
        else: v = typ
        snap['keys'][k] = v
    with open(os.path.join(OUT, 'directory.jsonl'), 'a') as f: f.write(json.dumps(snap) + '\n')
    return snap

def live_ids():
    """node name -> incarnation id, from the liveness keys (pid in the value)"""
    out = {}
    for k in (redis.cli('KEYS', 'pseud:node:*') or '').split('\n'):
        if not k: continue
        v = redis.cli('GET', k) or ''
        pid = v.split('pid=')[-1]
        for n in nodes:
            if n.alive() and str(n.proc.pid) == pid: out.setdefault(n.name, []).append(k[len('pseud:node:'):])
    return out

try:
    pump(DURATION)
    event('chaos_over')
    # make sure everything runs
    for n in nodes:
        if n.paused: kill_node(n.name, S.SIGCONT)
        if not n.alive(): restart_node(n.name)
    if redis.proc.poll() is not None: redis_restart()
    for uid in list(away): away[uid] = 0
    pump(now() + 0.5, issue=False)
    # calm: no moves, no calls, 12 s (ttl 2 + backoff_max 5 + slack)
    pump(now() + 12, issue=False, moves=False)
    for c in callers:
        if c.outstanding: event('outstanding_after_calm', origin=c.node.name, n=len(c.outstanding))
    snap = directory_snapshot('calm')
    ids = live_ids(); event('live_ids', ids=ids)
    # verification: every user from every node, one at a time per node
    event('verify_start')
    vrecs = []
    for p in peers:
        for c in callers:
            r = send_call(c, p.uid, 0)
            if r: r['verify'] = True; vrecs.append(r)
            else: event('verify_unsendable', origin=c.node.name)
        pump(now() + 0.05, issue=False, moves=False)
    pump(now() + 5, issue=False, moves=False)
    okv = sum(1 for r in vrecs if r['replies'] and r['replies'][0]['val'].get('ok'))
    event('verify_done', sent=len(vrecs), ok=okv)
    for r in vrecs:
        if not (r['replies'] and r['replies'][0]['val'].get('ok')):
            event('VERIFY_FAIL', user=r['user'], origin=r['origin'], replies=r['replies'],
                  peer_node=next(p.node.name for p in peers if p.uid == r['user']))
    # where Redis says each user is vs where it is
    ids = live_ids()
    for p in peers:
        members = (redis.cli('ZREVRANGE', 'pseud:user:7:service:' + p.uid, '0', '-1') or '').split('\n')
        members = [m for m in members if m]
        want = ids.get(p.node.name, [])
        if members[:1] != want[:1] or len(members) != 1:
            event('DIRECTORY_MISMATCH', user=p.uid, at=p.node.name, want=want, members=members)
    # departure: all peers and callers leave; directory must empty (ttl 2)
    for p in peers: p.close()
    for c in callers: c.close()
    callers = []
    pump(now() + 8, issue=False, moves=False)
    snap = directory_snapshot('all_left')
    ids = live_ids(); event('live_ids', ids=ids)
    live = {i for v in ids.values() for i in v}
    for k, v in snap['keys'].items():
        if k == 'pseud:nodes':
            extra = set(v) - live
            if extra: event('STALE_nodes_member', extra=sorted(extra))
        elif k.startswith('pseud:node:') and k[11:] in live: pass
        else: event('STALE_key', key=k, value=v)
    # a node killed with users on it: its entries must go after ttl
    for p in peers[:6]: p.connect(byname['B'])
    pump(now() + 2, issue=False, moves=False)
    bid = live_ids().get('B', ['?'])[0]
    event('b_before_kill', id=bid, users=redis.cli('SCARD', 'pseud:users:' + bid))
    kill_node('B', S.SIGKILL)
    pump(now() + 8, issue=False, moves=False)
    snap = directory_snapshot('B_killed')
    for k, v in snap['keys'].items():
        if bid in k or (isinstance(v, list) and bid in v): event('STALE_after_kill', key=k, value=v)
    for p in peers: p.close()
    # RSS and exit codes at the end: TERM the rest
    for n in nodes:
        if n.alive():
            event('final_rss', node=n.name, incarnation=n.n, rss=n.rss_kb())
            n.signal(S.SIGTERM)
    for n in nodes:
        try: event('node_exit', node=n.name, rc=n.proc.wait(10), incarnation=n.n)
        except subprocess.TimeoutExpired: event('NODE_HUNG_ON_TERM', node=n.name); n.signal(S.SIGKILL)
    time.sleep(1)
    directory_snapshot('all_stopped')
finally:
    dump_calls()
    for p in children:
        if p.poll() is None:
            try: os.kill(p.pid, signal.SIGCONT); os.kill(p.pid, signal.SIGKILL); p.wait(5)
            except Exception: pass
    event('done')
