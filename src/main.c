/*
 * main: the pseud-lua executable. Like lua.c: one Lua 5.4 state, the
 * standard libraries, `arg`, -e CODE, a script; plus pseud.core preloaded and
 * package.path pointing at the pseud Lua modules, found next to an installed
 * binary (PREFIX/share/lua/5.4) or, in a build tree, in the source tree.
 *
 * Errors are reported as lua.c does, through a message handler that adds a
 * traceback; the exit status is 0 on success, 1 on error, except for call
 * and ls, whose Lua main returns theirs (0-3, lua/pseud/cli.lua).
 */
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lpseud.h"
#include "workers.h"

static const char *s_progname = "pseud-lua";

static void s_usage(FILE *out) {
    fprintf(out,
        "usage: %s [options] [script [args]]\n"
        "       %s keygen [--force] [NAME]\n"
        "              write a CURVE keypair: NAME.key, NAME.key_secret (0600);\n"
        "              an existing one is replaced only with --force\n"
        "       %s passwd FILE LOGIN\n"
        "              add or replace LOGIN's argon2 hash in FILE (0600); the password\n"
        "              is read from stdin, without echo on a terminal\n"
        "       %s call [options] ENDPOINT SERVICE NAME [ARG...]\n"
        "              call NAME on a pseud server; ARGs and the result are JSON\n"
        "       %s ls [options] ENDPOINT SERVICE\n"
        "              list the names this caller may call, with their docs\n"
        "              (pseud-lua call --help: options, JSON forms, exit status)\n"
        "Run a Lua 5.4 script with the pseud RPC host (require 'pseud').\n"
        "  -e CODE     run CODE (may be given more than once)\n"
        "  --log-level LEVEL  error, warn, info (default), debug or quiet (sets PSEUD_LOG)\n"
        "  --metrics ADDRESS  serve Prometheus metrics at ADDRESS (tcp://HOST:PORT),\n"
        "              GET /metrics, from the start\n"
        "  --workers N  run handlers in N worker threads, each with its own Lua state\n"
        "              running the same script (1, the default: none; docs/workers.md)\n"
        "  --cluster URL  the first server without a cluster option joins the\n"
        "              cluster whose Redis is at URL (redis://[[USER]:PASSWORD@]HOST:PORT[/DB];\n"
        "              docs/cluster.md)\n"
        "  -v, --version  print the version\n"
        "  -h, --help  print this help\n"
        "  --          stop handling options\n"
        "  -           run standard input\n"
        "Environment: PSEUD_LOG=LEVEL as --log-level, PSEUD_CLUSTER=URL as --cluster (out of\n"
        "`ps`); the host logs to stderr, one logfmt\n"
        "line per event.\n"
        "Signals while start() serves: SIGINT, SIGTERM stop; SIGHUP runs the script\n"
        "again and swaps in what it registers (README, Hot reload).\n",
        s_progname, s_progname, s_progname, s_progname, s_progname);
}

/* Message handler: a traceback for strings and for error values, these
 * shown by their __tostring (pseud.Error: where, name, message, and a
 * remote peer's traceback): the user's line is in the traceback. */
static int s_msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) msg = lpseud_error_text(L, 1);   /* a __tostring that never returns is stopped */
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int s_report(lua_State *L, int status) {
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "%s: %s\n", s_progname, msg ? msg : "(error)");
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

static int s_docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, s_msghandler);
    lua_insert(L, base);
    int status = lua_pcall(L, narg, nres, base);
    lua_remove(L, base);
    return status;
}

static int s_file_exists(const char *path) {
    return access(path, R_OK) == 0;
}

/* Where are the pseud Lua modules? Installed beside the binary, or the
 * source tree of this build. */
static void s_lua_dir(char *out, size_t size) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char probe[PATH_MAX];
            int w = snprintf(out, size, "%s/../%s", exe, PSEUD_INSTALL_LUA_REL);
            int p = snprintf(probe, sizeof probe, "%s/pseud/init.lua", out);
            if (w > 0 && (size_t)w < size && p > 0 && (size_t)p < sizeof probe &&
                s_file_exists(probe))
                return;
        }
    }
    snprintf(out, size, "%s", PSEUD_SOURCE_LUA_DIR);
}

static void s_setup_paths(lua_State *L) {
    char dir[PATH_MAX];
    s_lua_dir(dir, sizeof dir);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_pseud_core);
    lua_setfield(L, -2, "pseud.core");
    lua_pop(L, 2);
}

/* The value of option `name` at argv[i] ("--name VALUE" or "--name=VALUE"),
 * advancing *i past it; NULL when argv[i] is not that option. A missing
 * value gives "". */
static const char *s_option_value(int argc, char **argv, int *i, const char *name) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] != '\0') return NULL;
    if (*i + 1 >= argc) return "";
    return argv[++*i];
}

/* --log-level, read before pseud.core starts the host: it sets PSEUD_LOG,
 * which the host (and any pseud-lua the script starts) reads. 0, or -1
 * after saying what is wrong. */
static int s_log_level_option(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-e") == 0) { i++; continue; }
        if (s_option_value(argc, argv, &i, "--metrics") || s_option_value(argc, argv, &i, "--cluster") ||
            s_option_value(argc, argv, &i, "--workers"))
            continue;                                                 /* and its value */
        if (strcmp(argv[i], "--") == 0 || argv[i][0] != '-' || strcmp(argv[i], "-") == 0) break;
        const char *v = s_option_value(argc, argv, &i, "--log-level");
        if (!v) continue;
        if (strcmp(v, "error") && strcmp(v, "warn") && strcmp(v, "info") && strcmp(v, "debug") &&
            strcmp(v, "quiet")) {
            fprintf(stderr, "%s: --log-level '%s': use error, warn, info, debug or quiet\n", s_progname, v);
            return -1;
        }
        setenv("PSEUD_LOG", v, 1);
    }
    return 0;
}

/* --metrics ADDRESS, --cluster URL: core.<fn>(value) -> true | nil, message
 * (the metrics served from now on; the cluster servers join). */
static int s_core_option(lua_State *L, const char *fn, const char *option, const char *value) {
    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "pseud.core");
    lua_getfield(L, -1, fn);
    lua_pushstring(L, value);
    int st = s_docall(L, 1, 2);
    if (st != LUA_OK) {
        s_report(L, st);
    } else if (lua_isnil(L, -2)) {
        fprintf(stderr, "%s: %s: %s\n", s_progname, option, lua_tostring(L, -1));
        st = LUA_ERRRUN;
    }
    lua_settop(L, top);
    return st;
}

/* arg: script at 0, its arguments from 1, the interpreter and options below */
static void s_create_arg(lua_State *L, char **argv, int argc, int script) {
    lua_createtable(L, argc - script, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

typedef struct run_args {
    int argc;
    char **argv;
    int status;
    int exit_code;                /* what a helper command asked for (call, ls), else 0 */
} run_args_t;

/* --- a worker thread (docs/workers.md) --- */

static void s_flush(lua_State *L, int failed);

/* A worker's state: the libraries, the paths, marked as the worker's, then
 * the script with its arguments. Under lua_pcall. */
static int s_worker_pmain(lua_State *L) {
    struct workers_slot *slot = lua_touserdata(L, 1);
    luaL_openlibs(L);
    s_setup_paths(L);
    lpseud_mark_worker(L, slot);
    luaL_requiref(L, "pseud.core", luaopen_pseud_core, 0);
    lua_pop(L, 1);
    int nargs;
    char **args;
    const char *path = workers_slot_script(slot, &nargs, &args);
    lua_createtable(L, nargs, 1);
    lua_pushstring(L, s_progname);
    lua_rawseti(L, -2, -1);
    lua_pushstring(L, path);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < nargs; i++) {
        lua_pushstring(L, args[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    int st = luaL_loadfile(L, path);
    if (st == LUA_OK) {
        luaL_checkstack(L, nargs + 3, "too many arguments to script");
        for (int i = 0; i < nargs; i++) lua_pushstring(L, args[i]);
        lpseud_set_script(L, path, nargs, args);
        st = s_docall(L, nargs, 0);
    }
    if (st != LUA_OK) return lua_error(L);
    return 0;
}

static void s_worker_main(struct workers_slot *slot) {
    lua_State *L = luaL_newstate();
    if (!L) {
        workers_slot_failed(slot, "cannot create Lua state: not enough memory");
        return;
    }
    memset(lua_getextraspace(L), 0, LUA_EXTRASPACE);
    lua_pushcfunction(L, s_worker_pmain);
    lua_pushlightuserdata(L, slot);
    int status = lua_pcall(L, 1, 0, 0);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "%s: worker %d: %s\n", s_progname, workers_slot_id(slot), msg ? msg : "(error)");
        fflush(stderr);
        workers_slot_failed(slot, msg ? msg : "(error)");
        lua_pop(L, 1);
    }
    s_flush(L, status != LUA_OK);
    lpseud_closing(L);
    lua_close(L);
}

/* Everything that may raise runs here, under lua_pcall from main. */
static int s_pmain(lua_State *L) {
    run_args_t *a = lua_touserdata(L, 1);
    int argc = a->argc, script = 0, i;
    char **argv = a->argv;
    luaL_checkversion(L);
    if (s_log_level_option(argc, argv) < 0) { a->status = LUA_ERRRUN; return 0; }
    luaL_openlibs(L);
    s_setup_paths(L);
    /* pseud.core first, before any script line: it replaces debug.sethook
     * and coroutine.resume/wrap, and a script must not keep the originals
     * (they would let a handler switch its limits off) */
    luaL_requiref(L, "pseud.core", luaopen_pseud_core, 0);
    lua_pop(L, 1);
    lpseud_set_worker_main(L, s_worker_main);
    a->status = LUA_OK;
    /* helper commands: pseud-lua keygen|passwd ... (lua/pseud/tools.lua),
     * call|ls ... (lua/pseud/cli.lua, which returns the exit status) */
    const char *module = NULL;
    if (argc >= 2) {
        if (strcmp(argv[1], "keygen") == 0 || strcmp(argv[1], "passwd") == 0) module = "pseud.tools";
        else if (strcmp(argv[1], "call") == 0 || strcmp(argv[1], "ls") == 0) module = "pseud.cli";
    }
    if (module) {
        lua_getglobal(L, "require");
        lua_pushstring(L, module);
        int st = s_docall(L, 1, 1);
        if (st == LUA_OK) {
            lua_getfield(L, -1, "main");
            luaL_checkstack(L, argc + 3, "too many arguments");
            for (i = 1; i < argc; i++) lua_pushstring(L, argv[i]);
            st = s_docall(L, argc - 1, 1);
            if (st == LUA_OK && lua_isinteger(L, -1)) a->exit_code = (int)lua_tointeger(L, -1);
        }
        a->status = s_report(L, st);
        return 0;
    }
    /* first pass: find the script */
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-e") == 0) { i++; continue; }
        if (s_option_value(argc, argv, &i, "--log-level") || s_option_value(argc, argv, &i, "--metrics") ||
            s_option_value(argc, argv, &i, "--cluster") || s_option_value(argc, argv, &i, "--workers"))
            continue;
        if (strcmp(argv[i], "--") == 0) { script = i + 1 < argc ? i + 1 : 0; break; }
        if (argv[i][0] != '-' || strcmp(argv[i], "-") == 0) { script = i; break; }
    }
    s_create_arg(L, argv, argc, script ? script : argc);
    /* PSEUD_CLUSTER=URL as --cluster URL (which, given too, wins): a
     * password in the environment is not in everybody's `ps` */
    const char *cluster_env = getenv("PSEUD_CLUSTER");
    if (cluster_env && *cluster_env && s_core_option(L, "cluster", "PSEUD_CLUSTER", cluster_env) != LUA_OK) {
        a->status = LUA_ERRRUN;
        return 0;
    }
    int ran = 0;
    const char *value;
    for (i = 1; i < argc && (script == 0 || i < script); i++) {
        if (strcmp(argv[i], "-e") == 0) {
            if (i + 1 >= argc) { s_usage(stderr); a->status = LUA_ERRRUN; return 0; }
            const char *code = argv[++i];
            int st = luaL_loadbuffer(L, code, strlen(code), "=(command line)");
            if (st == LUA_OK) st = s_docall(L, 0, 0);
            if (s_report(L, st) != LUA_OK) { a->status = st; return 0; }
            ran = 1;
        } else if ((value = s_option_value(argc, argv, &i, "--metrics"))) {
            if (!*value) { s_usage(stderr); a->status = LUA_ERRRUN; return 0; }
            if (s_core_option(L, "metrics", "--metrics", value) != LUA_OK) { a->status = LUA_ERRRUN; return 0; }
        } else if ((value = s_option_value(argc, argv, &i, "--workers"))) {
            char *end;
            long n = strtol(value, &end, 10);
            if (!*value || *end || n < 1 || n > WORKERS_MAX) {
                fprintf(stderr, "%s: --workers '%s': use a whole number from 1 to %d\n", s_progname, value,
                        WORKERS_MAX);
                a->status = LUA_ERRRUN;
                return 0;
            }
            lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
            lua_getfield(L, -1, "pseud.core");
            lua_getfield(L, -1, "workers");
            lua_pushinteger(L, n);
            lua_call(L, 1, 0);
            lua_pop(L, 2);
        } else if ((value = s_option_value(argc, argv, &i, "--cluster"))) {
            if (!*value) { s_usage(stderr); a->status = LUA_ERRRUN; return 0; }
            if (s_core_option(L, "cluster", "--cluster", value) != LUA_OK) { a->status = LUA_ERRRUN; return 0; }
        } else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--version") == 0) {
            printf("pseud-lua %s (%s)\n", PSEUD_VERSION, LUA_RELEASE);
            ran = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            s_usage(stdout);
            ran = 1;
        } else if (s_option_value(argc, argv, &i, "--log-level")) {
            continue;                             /* read before the host started */
        } else if (strcmp(argv[i], "--") == 0) {
            break;
        } else {
            fprintf(stderr, "%s: unknown option '%s'\n", s_progname, argv[i]);
            s_usage(stderr);
            a->status = LUA_ERRRUN;
            return 0;
        }
    }
    if (script) {
        const char *fname = strcmp(argv[script], "-") == 0 ? NULL : argv[script];
        int st = luaL_loadfile(L, fname);
        if (st == LUA_OK) {
            int n = argc - script - 1;
            luaL_checkstack(L, n + 3, "too many arguments to script");
            for (int j = 1; j <= n; j++) lua_pushstring(L, argv[script + j]);
            if (fname) lpseud_set_script(L, fname, n, argv + script + 1);   /* for a reload */
            st = s_docall(L, n, 0);
        }
        a->status = s_report(L, st);
    } else if (!ran) {
        s_usage(stderr);
        a->status = LUA_ERRRUN;
    }
    return 0;
}

/* Calls a script made and never waited for still leave: messages waiting
 * for their peer (not yet connected) get up to a second (the default
 * linger) before the endpoints close. */
static void s_flush(lua_State *L, int failed) {
    int top = lua_gettop(L);
    if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE &&
        lua_getfield(L, -1, "pseud.core") == LUA_TTABLE &&
        lua_getfield(L, -1, "flush") == LUA_TFUNCTION) {
        lua_pushnumber(L, 1);
        lua_pushboolean(L, failed);              /* a script that failed has said enough */
        lua_pcall(L, 2, 0, 0);
    }
    lua_settop(L, top);
}

int main(int argc, char **argv) {
    if (argv[0] && argv[0][0]) s_progname = argv[0];
    /* Large bodies come and go at the heap's top (Lua strings, zmq messages
     * freed across threads); glibc's default trims and re-faults those pages
     * on nearly every call, which halved 64 KiB echo throughput. Keep up to
     * 8 MiB of free heap instead. Setting a threshold turns off glibc's
     * sliding mmap threshold, which would otherwise leave 128 KiB: every
     * reply buffer of a 64 KiB echo was then an mmap, 17 page faults and a
     * munmap with a TLB flush in the I/O thread. Blocks up to 4 MiB come
     * from the heap, as the sliding threshold would have let them. */
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "%s: cannot create Lua state: not enough memory\n", s_progname);
        return EXIT_FAILURE;
    }
    memset(lua_getextraspace(L), 0, LUA_EXTRASPACE);   /* copied into every thread */
    run_args_t a = { argc, argv, LUA_OK, 0 };
    lua_pushcfunction(L, s_pmain);
    lua_pushlightuserdata(L, &a);
    int status = lua_pcall(L, 1, 0, 0);
    s_report(L, status);
    s_flush(L, status != LUA_OK || a.status != LUA_OK);
    fflush(stdout);
    lpseud_closing(L);
    lua_close(L);                  /* closes endpoints: queued replies get their linger */
    if (status != LUA_OK || a.status != LUA_OK) return EXIT_FAILURE;
    return a.exit_code;
}
