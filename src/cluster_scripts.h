/*
 * cluster_scripts: the Lua scripts of the cluster directory, loaded with
 * SCRIPT LOAD on every link and run with EVALSHA (docs/cluster.md lists
 * what each reads and writes). Text only: no Redis, no I/O.
 */
#ifndef PSEUD_CLUSTER_SCRIPTS_H
#define PSEUD_CLUSTER_SCRIPTS_H

enum {
    SCRIPT_REGISTER,   /* (node, ttl_ms, info, previous) -> 1 */
    SCRIPT_ADD,        /* (node, user key...) -> 1, or 0 when node's liveness key is gone */
    SCRIPT_REMOVE,     /* (node, user key...) -> 1: this node out of each */
    SCRIPT_LOOKUP,     /* (user key) -> latest live node id, or nil (dead ones collected) */
    SCRIPT_SWEEP,      /* () -> 1: collect a few dead nodes */
    SCRIPT_LEAVE,      /* (node) -> 1: node is gone (a clean stop): its key, a batch of its entries */
    NSCRIPTS
};

extern const char *const cluster_scripts[NSCRIPTS];

#endif
