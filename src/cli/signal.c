/* signal.c - portone.cli.signal: lets `portone-link batch` and `create`
 * notice Ctrl-C and SIGTERM instead of dying between a create and the line
 * that records it.
 *
 * Plain Lua has no signal API, and the stock interpreter turns SIGINT into a
 * Lua error ("interrupted!") raised at whatever instruction runs next, which
 * may be between a request's answer and the write that records it. This
 * module only counts signals: the handler touches nothing but two
 * sig_atomic_t variables (async-signal-safe), and the batch loop reads them
 * between polls, so the decision of what to do runs in ordinary Lua.
 *
 *   local sig = require "portone.cli.signal"
 *   sig.catch()               -- SIGINT and SIGTERM are counted from now on
 *   local n, first = sig.count()   -- signals so far, the first one's number
 *   sig.release()             -- default dispositions again
 *   sig.ignore_pipe()         -- a write to a closed pipe fails (EPIPE)
 *                             -- instead of killing the process
 *
 * SA_RESTART keeps the stdio writes of the loop from failing with EINTR.
 */
#include <signal.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

static volatile sig_atomic_t sig_count = 0;
static volatile sig_atomic_t sig_first = 0;

static void on_signal(int signo)
{
    if (sig_first == 0) sig_first = signo;
    if (sig_count < 1000) sig_count = sig_count + 1;
}

/* Installs fn for SIGINT and SIGTERM; pushes true, or nil and a message. */
static int set_handlers(lua_State *L, void (*fn)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, "sigaction failed");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* catch() --> true: count SIGINT and SIGTERM from now on (resets the count). */
static int sg_catch(lua_State *L)
{
    sig_count = 0;
    sig_first = 0;
    return set_handlers(L, on_signal);
}

/* count() --> signals received since catch(), the first one's number (0: none). */
static int sg_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sig_count);
    lua_pushinteger(L, (lua_Integer)sig_first);
    return 2;
}

/* release() --> true: default dispositions for SIGINT and SIGTERM again. */
static int sg_release(lua_State *L)
{
    return set_handlers(L, SIG_DFL);
}

/* ignore_pipe() --> true: SIGPIPE ignored, so a write to a closed pipe
 * returns EPIPE and the CLI can still report a created link on stderr. */
static int sg_ignore_pipe(lua_State *L)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, "sigaction failed");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg sg_funcs[] = {
    {"catch", sg_catch},
    {"ignore_pipe", sg_ignore_pipe},
    {"count", sg_count},
    {"release", sg_release},
    {NULL, NULL}
};

/* The module's one exported symbol (the build uses -fvisibility=hidden). */
#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int luaopen_portone_cli_signal(lua_State *L);

int luaopen_portone_cli_signal(lua_State *L)
{
    lua_newtable(L);
#if LUA_VERSION_NUM < 502
    luaL_register(L, NULL, sg_funcs);
#else
    luaL_setfuncs(L, sg_funcs, 0);
#endif
    lua_pushinteger(L, SIGINT);
    lua_setfield(L, -2, "SIGINT");
    lua_pushinteger(L, SIGTERM);
    lua_setfield(L, -2, "SIGTERM");
    return 1;
}
