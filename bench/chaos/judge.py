#!/usr/bin/python3
"""judge.py OUTDIR [TIMEOUT]: judge a driver.py run (scripts/cluster-chaos).

Every call must end exactly once at its caller (OK, or an error the
cluster documents: PeerLostError, TimeoutError, BusyError), within the
node's timeout plus slack unless its node was paused; no WORK may reach a
peer twice or the wrong peer; a call made in a calm spell to a peer
connected for a while must succeed; after the run every user is found
from every node, the directory names where each is, and stale keys go.
Prints the outcomes and each finding, and last a verdict line; exits 1
when anything was found.
"""
import collections, json, re, sys

OUT = sys.argv[1]
TIMEOUT = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
SLACK = 0.6
ev = [json.loads(l) for l in open(OUT + '/events.jsonl')]
calls = [json.loads(l) for l in open(OUT + '/calls.jsonl')]
works = [json.loads(l) for l in open(OUT + '/works.jsonl')]

chaos = [e for e in ev if e['kind'] in ('node_signal', 'redis_signal', 'node_started', 'redis_started')
         and e['t'] > 1]
kills = collections.defaultdict(list)       # node -> kill/term times
pauses = collections.defaultdict(list)      # node -> [start, end]
for e in ev:
    if e['kind'] == 'node_signal':
        if e['sig'] in ('SIGKILL', 'SIGTERM'): kills[e['node']].append(e['t'])
        elif e['sig'] == 'SIGSTOP': pauses[e['node']].append([e['t'], 1e9])
        elif e['sig'] == 'SIGCONT': pauses[e['node']][-1][1] = e['t']
conn = collections.defaultdict(list)        # user -> [(start, end, node)]
for e in ev:
    if e['kind'] == 'peer_connect': conn[e['user']].append([e['t'], 1e9, e['node']])
    elif e['kind'] == 'peer_close': conn[e['user']][-1][1] = e['t']

down = collections.defaultdict(list)        # node -> [killed or stopped at, started again at]
for e in ev:
    if e['kind'] == 'node_signal' and e['sig'] in ('SIGKILL', 'SIGTERM'):
        down[e['node']].append([e['t'], 1e9])
    elif e['kind'] == 'node_started' and down[e['node']] and down[e['node']][-1][1] == 1e9:
        down[e['node']][-1][1] = e['t']

def overlaps(iv, a, b): return any(s <= b and e >= a for s, e in iv)
def taken_at(c):
    # a call sent to a node that was down waits in the caller's socket
    # until the node is back: its time runs from then
    for s, e in down[c['origin']]:
        if s <= c['sent'] <= e: return e
    return c['sent']
def calm(a, b, quiet=8.0): return not any(a - quiet <= e['t'] <= b for e in chaos)
def stable(user, a, b, settle=1.5):
    return any(s <= a - settle and e >= b for s, e, _ in conn[user])

by_seq = {c['seq']: c for c in calls}
got = collections.defaultdict(list)
for w in works: got[w['seq']].append(w)

findings = collections.Counter(); examples = collections.defaultdict(list)
def flag(kind, obj):
    findings[kind] += 1
    if len(examples[kind]) < 6: examples[kind].append(obj)

outcomes = collections.Counter(); messages = collections.Counter()
for c in calls:
    n = len(c['replies'])
    end = c['sent'] + 25
    if n == 0:
        if any(c['sent'] - 0.1 <= k <= end for k in kills[c['origin']]):
            outcomes['no-reply:origin-killed'] += 1
        else:
            flag('MISSING_ENDING', c)
        continue
    if n > 1: flag('DUPLICATE_REPLY', c)
    r = c['replies'][0]; v = r['val']
    if (r['type'] != 1 and isinstance(v, list) and v[:2] == ['PeerLostError', 'server stopping']
            and any(c['sent'] - 3 <= k <= r['t'] for k in kills[c['origin']])):
        # README: a stop lets calls run stop_timeout (2 s), those that came
        # meanwhile too, and answers the rest so
        outcomes['PeerLostError:origin-stopping'] += 1
        continue
    if r['type'] != 1 or not isinstance(v, dict):
        flag('HANDLER_ERROR', c); continue
    paused = overlaps(pauses[c['origin']], c['sent'], r['t'])
    if v['ok']:
        outcomes['OK'] += 1
        if v['value'] != 'I am %s %s' % (c['user'], c['seq']): flag('WRONG_VALUE', c)
        if not any(w['user'] == c['user'] for w in got[c['seq']]): flag('OK_BUT_NOT_RECEIVED', c)
    else:
        key = v['error'] + ': ' + re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "N", re.sub(r"'u\d+'", "'U'", re.sub(r"\d+\.\d+ s", "X s", v['message'])))
        outcomes[v['error']] += 1; messages[key[:160]] += 1
        if v['error'] not in ('PeerLostError', 'TimeoutError', 'BusyError'): flag('ODD_ERROR', c)
        if v['error'] == 'TimeoutError' and c['delay'] < TIMEOUT - 0.5 and not paused:
            # timed out though the peer answers in time: who held it?
            w = got[c['seq']]
            tgt_paused = any(overlaps(pauses[x['node']], c['sent'], r['t']) for x in w)
            key2 = 'timeout:target-paused' if tgt_paused else 'timeout:unexplained'
            if not tgt_paused and calm(c['sent'], r['t'], 3) and stable(c['user'], c['sent'], r['t']):
                flag('TIMEOUT_IN_CALM', c)
            outcomes[key2] += 1
        if calm(c['sent'], r['t']) and stable(c['user'], c['sent'], r['t']) and c['delay'] < TIMEOUT - 0.5:
            flag('FAIL_IN_CALM', dict(c, peer_conn=[x for x in conn[c['user']] if x[1] >= c['sent'] - 5]))
    if v.get('dt', 0) > TIMEOUT + SLACK and not paused:
        flag('PAST_TIMEOUT', c)
    if r['t'] - taken_at(c) > TIMEOUT + 2 * SLACK and not paused:
        flag('LATE_AT_CALLER', c)

for seq, ws in got.items():
    if len(ws) > 1: flag('DUPLICATE_WORK', ws)
    c = by_seq.get(seq)
    for w in ws:
        if c and w['user'] != c['user']: flag('WRONG_RECIPIENT', dict(work=w, call=c))

print('calls', len(calls), 'works', len(works))
print('outcomes', dict(outcomes))
print('error messages:')
for m, k in messages.most_common(): print('  %5d %s' % (k, m))
print('findings', dict(findings))
for k, xs in examples.items():
    print('==', k)
    for x in xs: print('  ', json.dumps(x)[:900])
for e in ev:
    if e['kind'].isupper() or e['kind'].split('_')[0].isupper() or e['kind'] in (
            'node_dead', 'node_exit', 'caller_reply_unknown_uuid', 'peer_other_msg', 'verify_done',
            'outstanding_after_calm', 'live_ids', 'b_before_kill', 'final_rss'):
        print('event', json.dumps(e)[:600])

# the run's own checks: upper-case events are findings
bad_events = [e for e in ev if e['kind'].split('_')[0].isupper()]
verify = [e for e in ev if e['kind'] == 'verify_done']
if verify and verify[-1]['ok'] != verify[-1]['sent']:
    findings['VERIFY_INCOMPLETE'] += 1
total = sum(findings.values()) + len(bad_events)
print('verdict: %d calls, %d WORK at peers, %d findings%s' % (
    len(calls), len(works), total, '' if total == 0 else ' (' + ', '.join(
        sorted(set(list(findings) + [e['kind'] for e in bad_events]))) + ')'))
sys.exit(1 if total else 0)
