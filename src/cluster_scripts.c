/*
 * cluster_scripts: the Lua scripts cluster.c runs in Redis (see
 * cluster_scripts.h). Keys and channels all start "pseud:"; user ids
 * arrive as ARGV, binary-safe. Redis runs each atomically, so a remove can
 * compare and delete, and a lookup can check liveness and collect.
 */
#include "cluster_scripts.h"

#define COLLECT_BATCH "1000"          /* a dead node's entries collected per script run */
#define SWEEP_NODES "3"               /* nodes a sweep looks at */
/* A lookup looks at a user's newest entries only, and collects for the
 * first dead nodes among them: a key that held 100,000 dead node ids (a
 * rogue member's) held Redis 0.4 s a lookup, on to its watchdog. */
#define LOOKUP_ENTRIES "16"
#define LOOKUP_COLLECTS "2"

/* Collect up to `batch` of a dead node's entries: take the node out of each
 * user key it is in (a user that is also on a live node keeps that one);
 * forget the node once its set is empty. The set holds the user keys. */
#define LUA_COLLECT                                                              \
    "redis.replicate_commands()\n"                                               \
    "local function collect(node, batch)\n"                                      \
    "  local set = 'pseud:users:' .. node\n"                                     \
    "  for _, key in ipairs(redis.call('SPOP', set, batch)) do\n"                \
    "    redis.call('ZREM', key, node)\n"                                        \
    "  end\n"                                                                    \
    "  if redis.call('SCARD', set) == 0 then redis.call('SREM', 'pseud:nodes', node) end\n" \
    "  return 1\n"                                                               \
    "end\n"

/* A user key is a sorted set of the nodes the user is connected to, each
 * scored by when it came (Redis's clock, in microseconds): the latest
 * live one answers a lookup, and a user on two nodes stays found while
 * either holds it. */
const char *const cluster_scripts[NSCRIPTS] = {
    /* register(node, ttl_ms, info, previous): a new incarnation is alive */
    "redis.call('SET', 'pseud:node:' .. ARGV[1], ARGV[3], 'PX', ARGV[2])\n"
    "redis.call('SADD', 'pseud:nodes', ARGV[1])\n"
    "if ARGV[4] ~= '' then redis.call('DEL', 'pseud:node:' .. ARGV[4]) end\n"
    "return 1\n",
    /* add(node, key...): the users are on node; 0 (nothing written) when
     * node's liveness key is gone: it was taken for dead */
    "redis.replicate_commands()\n"
    "local node = ARGV[1]\n"
    "if redis.call('EXISTS', 'pseud:node:' .. node) == 0 then return 0 end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "for i = 2, #ARGV do\n"
    "  redis.call('ZADD', ARGV[i], now, node)\n"
    "  redis.call('SADD', 'pseud:users:' .. node, ARGV[i])\n"
    "end\n"
    "return 1\n",
    /* remove(node, key...): this node only; an empty key goes with it */
    "local node = ARGV[1]\n"
    "for i = 2, #ARGV do\n"
    "  redis.call('ZREM', ARGV[i], node)\n"
    "  redis.call('SREM', 'pseud:users:' .. node, ARGV[i])\n"
    "end\n"
    "return 1\n",
    /* lookup(key): the latest live node holding the user, or nil; dead
     * ones met on the way are collected */
    LUA_COLLECT
    "local key, collects = ARGV[1], 0\n"
    "for _, node in ipairs(redis.call('ZREVRANGE', key, 0, " LOOKUP_ENTRIES " - 1)) do\n"
    "  if redis.call('EXISTS', 'pseud:node:' .. node) == 1 then return node end\n"
    "  redis.call('ZREM', key, node)\n"
    "  redis.call('SREM', 'pseud:users:' .. node, key)\n"
    "  if collects < " LOOKUP_COLLECTS " then collects = collects + 1; collect(node, " COLLECT_BATCH ") end\n"
    "end\n"
    "return false\n",
    /* sweep(): collect from a few known nodes whose liveness key is gone,
     * so a dead node's entries go even when nobody looks them up */
    LUA_COLLECT
    "for _, node in ipairs(redis.call('SRANDMEMBER', 'pseud:nodes', " SWEEP_NODES ")) do\n"
    "  if redis.call('EXISTS', 'pseud:node:' .. node) == 0 then collect(node, " COLLECT_BATCH ") end\n"
    "end\n"
    "return 1\n",
    /* leave(node): a node stopping cleanly takes itself out at once: no
     * lookup finds it from here on, and what one batch leaves of its
     * entries the sweeps collect */
    LUA_COLLECT
    "redis.call('DEL', 'pseud:node:' .. ARGV[1])\n"
    "collect(ARGV[1], " COLLECT_BATCH ")\n"
    "return 1\n",
};
