/* compat.c - helpers behind compat.h. */
#include <math.h>
#include "compat.h"

#define PLINK_MAX_SAFE 9007199254740991.0 /* 2^53 - 1 */

int plink_tointeger53(lua_State *L, int i, long long *out)
{
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, i)) {
        lua_Integer v = lua_tointeger(L, i);
        if (v > (lua_Integer)9007199254740991LL ||
            v < -(lua_Integer)9007199254740991LL)
            return 0;
        *out = (long long)v;
        return 1;
    }
#endif
    {
        lua_Number n = lua_tonumber(L, i);
        if (!(n >= -PLINK_MAX_SAFE && n <= PLINK_MAX_SAFE)) /* NaN fails too */
            return 0;
        if (floor(n) != n)
            return 0;
        *out = (long long)n;
        return 1;
    }
}

void plink_setmeta(lua_State *L, const char *name, const luaL_Reg *l,
                   lua_CFunction gc, lua_CFunction close)
{
    luaL_newmetatable(L, name);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    plink_setfuncs(L, l);
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
    if (close) {
        lua_pushcfunction(L, close);
        lua_setfield(L, -2, "__close");
    }
#else
    (void)close;
#endif
    lua_pop(L, 1);
}
