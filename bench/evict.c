/* evict.c - bench-only (make bench-cold): evict.touch() writes one byte of
 * every 64 in a 4 MB buffer, more than the simulated cache holds, so the
 * next request starts from cold caches as it does in bench-http, where the
 * sandbox runs on the same CPU between any two requests. Built by
 * `make bench-cold` only; not part of the module. */
#include <stdlib.h>
#include <lua.h>
#include <lauxlib.h>

#define EVICT_BYTES (4u << 20)

int luaopen_evict(lua_State *L);

static volatile unsigned char *evict_buf;

static int evict_touch(lua_State *L)
{
    unsigned i;
    if (!evict_buf && !(evict_buf = calloc(1, EVICT_BYTES)))
        return luaL_error(L, "evict: out of memory");
    for (i = 0; i < EVICT_BYTES; i += 64)
        evict_buf[i] = (unsigned char)(evict_buf[i] + 1);
    return 0;
}

int luaopen_evict(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, evict_touch);
    lua_setfield(L, -2, "touch");
    return 1;
}
