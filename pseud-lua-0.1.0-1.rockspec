-- pseud-lua for stock Lua 5.4 through luarocks: the C module pseud.core,
-- the Lua modules pseud.* and the pseud-lua host, built by CMakeLists.txt.
--   luarocks --lua-version=5.4 make --local      # from a checkout
-- The version here and CMakeLists.txt's project(VERSION) are the same
-- (spec/packaging_spec.lua checks it). The libraries come from the system
-- (Debian: libzmq3-dev libmsgpack-dev uuid-dev libsodium-dev pkg-config
-- cmake): CMake finds them with pkg-config, as in a build by hand.
rockspec_format = '3.0'
package = 'pseud-lua'
version = '0.1.0-1'

source = {
  -- `luarocks make` builds the checkout it runs in and never reads this.
  -- The project has no public repository yet: name it here when it does
  -- (a `luarocks install` from a rocks server needs it).
  url = 'git+https://example.invalid/pseud-lua.git',
  tag = 'v0.1.0',
}

description = {
  summary = 'Bidirectional RPC host for Lua 5.4, wire-compatible with Python pseud',
  detailed = [[
A C host runs the ZeroMQ loop and the pseud protocol v1 state machine
(msgpack bodies, CURVE and PLAIN authentication, heartbeats); Lua 5.4
scripts register the callables. Python pseud peers and pseud-lua peers
call each other. Installs pseud.core (C), pseud.* (Lua) and the pseud-lua
executable.
]],
  labels = { 'rpc', 'zeromq', 'msgpack' },
}

dependencies = {
  'lua >= 5.4, < 5.5',
}

-- Checked before the build, so a missing library is named at once.
external_dependencies = {
  ZMQ = { header = 'zmq.h' },
  MSGPACK = { header = 'msgpack.h' },
  UUID = { header = 'uuid/uuid.h' },
  SODIUM = { header = 'sodium.h' },
}

build = {
  type = 'cmake',
  variables = {
    CMAKE_BUILD_TYPE = 'Release',
    CMAKE_INSTALL_PREFIX = '$(PREFIX)',
    CMAKE_INSTALL_BINDIR = 'bin',
    PSEUD_INSTALL_LMOD = '$(LUADIR)',       -- pseud/*.lua -> the tree's share/lua/5.4
    PSEUD_INSTALL_CMOD = '$(LIBDIR)',       -- pseud/core.so -> the tree's lib/lua/5.4
    PSEUD_INSTALL_PKGCONFIG = 'OFF',        -- a rock is found through luarocks, not pkg-config
    BUILD_TESTING = 'OFF',                  -- no unit tests, fuzz harnesses or benchmarks
  },
}
