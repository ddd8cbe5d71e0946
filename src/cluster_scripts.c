/*
 * cluster_scripts: the Lua scripts cluster.c runs in Redis (see
 * cluster_scripts.h). Keys and channels all start "pseud:"; user ids
 * arrive as ARGV, binary-safe. Redis runs each atomically, so a remove can
 * compare and delete, and a lookup can check liveness and collect.
 */
#include "cluster_scripts.h"

#define COLLECT_BATCH "1000"          /* a dead node's entries collected per script run */
#define SWEEP_NODES "3"               /* nodes a sweep looks at */

/* Collect up to `batch` of a dead node's users: delete each entry only if
 * it still points at that node (a user that moved keeps its new entry);
 * forget the node once its set is empty. */
#define LUA_COLLECT                                                              \
    "redis.replicate_commands()\n"                                               \
    "local function collect(node, batch)\n"                                      \
    "  local set = 'pseud:users:' .. node\n"                                     \
    "  for _, uid in ipairs(redis.call('SPOP', set, batch)) do\n"                \
    "    local key = 'pseud:user:' .. uid\n"                                     \
    "    if redis.call('GET', key) == node then redis.call('DEL', key) end\n"    \
    "  end\n"                                                                    \
    "  if redis.call('SCARD', set) == 0 then redis.call('SREM', 'pseud:nodes', node) end\n" \
    "  return 1\n"                                                               \
    "end\n"

const char *const cluster_scripts[NSCRIPTS] = {
    /* register(node, ttl_ms, info, previous): a new incarnation is alive */
    "redis.call('SET', 'pseud:node:' .. ARGV[1], ARGV[3], 'PX', ARGV[2])\n"
    "redis.call('SADD', 'pseud:nodes', ARGV[1])\n"
    "if ARGV[4] ~= '' then redis.call('DEL', 'pseud:node:' .. ARGV[4]) end\n"
    "return 1\n",
    /* add(node, uid...): the users are on node; 0 (nothing written) when
     * node's liveness key is gone: it was taken for dead */
    "local node = ARGV[1]\n"
    "if redis.call('EXISTS', 'pseud:node:' .. node) == 0 then return 0 end\n"
    "for i = 2, #ARGV do\n"
    "  local key = 'pseud:user:' .. ARGV[i]\n"
    "  local old = redis.call('GET', key)\n"
    "  redis.call('SET', key, node)\n"
    "  redis.call('SADD', 'pseud:users:' .. node, ARGV[i])\n"
    "  if old and old ~= node then redis.call('SREM', 'pseud:users:' .. old, ARGV[i]) end\n"
    "end\n"
    "return 1\n",
    /* remove(node, uid...): compare and delete */
    "local node = ARGV[1]\n"
    "for i = 2, #ARGV do\n"
    "  local key = 'pseud:user:' .. ARGV[i]\n"
    "  if redis.call('GET', key) == node then redis.call('DEL', key) end\n"
    "  redis.call('SREM', 'pseud:users:' .. node, ARGV[i])\n"
    "end\n"
    "return 1\n",
    /* lookup(uid): its node if alive, else nil and the dead node collected */
    LUA_COLLECT
    "local key = 'pseud:user:' .. ARGV[1]\n"
    "local node = redis.call('GET', key)\n"
    "if not node then return false end\n"
    "if redis.call('EXISTS', 'pseud:node:' .. node) == 1 then return node end\n"
    "redis.call('DEL', key)\n"
    "redis.call('SREM', 'pseud:users:' .. node, ARGV[1])\n"
    "collect(node, " COLLECT_BATCH ")\n"
    "return false\n",
    /* sweep(): collect from a few known nodes whose liveness key is gone,
     * so a dead node's entries go even when nobody looks them up */
    LUA_COLLECT
    "for _, node in ipairs(redis.call('SRANDMEMBER', 'pseud:nodes', " SWEEP_NODES ")) do\n"
    "  if redis.call('EXISTS', 'pseud:node:' .. node) == 0 then collect(node, " COLLECT_BATCH ") end\n"
    "end\n"
    "return 1\n",
};
