/* signal.c - portone.cli.signal: lets `portone-link batch` and `create`
 * notice Ctrl-C, SIGTERM and SIGHUP instead of dying between a create and
 * the line that records it.
 *
 * Plain Lua has no signal API, and the stock interpreter turns SIGINT into a
 * Lua error ("interrupted!") raised at whatever instruction runs next, which
 * may be between a request's answer and the write that records it. This
 * module only counts signals: the handler touches nothing but two
 * sig_atomic_t variables (async-signal-safe), and the batch loop reads them
 * between polls, so the decision of what to do runs in ordinary Lua.
 *
 *   local sig = require "portone.cli.signal"
 *   sig.catch()               -- SIGINT, SIGTERM and SIGHUP are counted
 *                             -- from now on (an ignored SIGHUP stays so)
 *   local n, first = sig.count()   -- signals so far, the first one's number
 *   sig.release()             -- the dispositions catch() found, again
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

/* The signals counted: Ctrl-C, a kill, and a hangup (the terminal or the
 * SSH session gone), each of which would end the process between a
 * request's answer and the line that records it. */
static const int sg_signals[] = { SIGINT, SIGTERM, SIGHUP };
#define SG_N ((int)(sizeof sg_signals / sizeof sg_signals[0]))

/* Which of them catch() took over, and what each had before. A hangup
 * ignored before (nohup) stays ignored. SIGINT and SIGTERM are always
 * taken: a shell starts background jobs with SIGINT ignored, and a
 * `kill -INT` sent to one must still stop the batch in order. release()
 * puts back what catch() found. */
static int sg_taken[SG_N];
static struct sigaction sg_old[SG_N];

/* catch: installs the counter for each signal (but an ignored SIGHUP),
 * keeping what was there; release: puts that back. Pushes true, or nil and
 * a message. */
static int set_handlers(lua_State *L, int catching)
{
    struct sigaction sa, old;
    int i;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < SG_N; i++) {
        if (catching) {
            if (sg_taken[i])     /* caught already: keep the first old action */
                continue;
            if (sigaction(sg_signals[i], NULL, &old) != 0)
                goto fail;
            if (sg_signals[i] == SIGHUP && old.sa_handler == SIG_IGN)
                continue;
            if (sigaction(sg_signals[i], &sa, NULL) != 0)
                goto fail;
            sg_old[i] = old;
            sg_taken[i] = 1;
        } else if (sg_taken[i]) {
            if (sigaction(sg_signals[i], &sg_old[i], NULL) != 0)
                goto fail;
            sg_taken[i] = 0;
        }
    }
    lua_pushboolean(L, 1);
    return 1;
fail:
    lua_pushnil(L);
    lua_pushstring(L, "sigaction failed");
    return 2;
}

/* catch() --> true: count SIGINT, SIGTERM and SIGHUP from now on (resets
 * the count); a SIGHUP that is ignored (nohup) stays ignored. */
static int sg_catch(lua_State *L)
{
    sig_count = 0;
    sig_first = 0;
    return set_handlers(L, 1);
}

/* count() --> signals received since catch(), the first one's number (0: none). */
static int sg_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sig_count);
    lua_pushinteger(L, (lua_Integer)sig_first);
    return 2;
}

/* release() --> true: what catch() found is put back. */
static int sg_release(lua_State *L)
{
    return set_handlers(L, 0);
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
    lua_pushinteger(L, SIGHUP);
    lua_setfield(L, -2, "SIGHUP");
    return 1;
}
