/* sanlua.c - a minimal Lua 5.4 interpreter built with ASan+UBSan, for the
 * test gate's sanitizer suite.
 *
 * Why not LD_PRELOAD the sanitizer runtimes into the stock lua5.4: the
 * preload is inherited by every child the specs start (sh, ps, curl,
 * openssl, nginx), and a sanitizer runtime preloaded into those can
 * deadlock them (seen: ps stuck in a futex). Linking the runtime into the
 * interpreter itself keeps it out of the children.
 *
 *   sanlua SCRIPT [ARGS...]   runs SCRIPT with the global arg set as lua.c does
 *
 * Like lua.c it puts the collector in generational mode, so the specs see
 * the same finalizer timing here as under the stock lua5.4.
 */
#include <stdio.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

static int sanlua_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

int main(int argc, char **argv)
{
    lua_State *L;
    int i, status;
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRIPT [ARGS...]\n", argv[0]);
        return 2;
    }
    L = luaL_newstate();
    if (L == NULL)
        return 1;
    luaL_openlibs(L);
    lua_gc(L, LUA_GCGEN, 0, 0);         /* the collector mode lua.c (5.4) runs */
    lua_createtable(L, argc, 2);
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);      /* arg[0] = SCRIPT, arg[-1] = sanlua */
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, sanlua_traceback);
    status = luaL_loadfile(L, argv[1]);
    if (status == LUA_OK) {
        for (i = 2; i < argc; i++)
            lua_pushstring(L, argv[i]);
        status = lua_pcall(L, argc - 2, 0, 1);
    }
    if (status != LUA_OK)
        fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
    /* busted calls os.exit itself; reaching here means the script returned. */
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}
