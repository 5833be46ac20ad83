/* walkfloor.c - bench-only: the physical floor of any C validator of a
 * request table. walk(t) visits every key and value of t and of the tables
 * in it once through the Lua C API (lua_next, lua_type, and lua_tolstring
 * of each string), with no checks and no output, and returns how many
 * strings it saw. bench/encode.lua prints its time beside link.encode.
 * Built by `make bench-encode` only; not part of the module. */
#include <lua.h>
#include <lauxlib.h>

int luaopen_walkfloor(lua_State *L);

static size_t wf_walk(lua_State *L, int t, int depth)
{
    size_t n = 0, len;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            lua_tolstring(L, -2, &len);
            n += len > 0;
        }
        switch (lua_type(L, -1)) {
        case LUA_TSTRING:
            lua_tolstring(L, -1, &len);
            n += len > 0;
            break;
        case LUA_TTABLE:
            if (depth < 32)
                n += wf_walk(L, lua_gettop(L), depth + 1);
            break;
        default:
            break;
        }
        lua_pop(L, 1);
    }
    return n;
}

static int wf_walk_l(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushinteger(L, (lua_Integer)wf_walk(L, 1, 0));
    return 1;
}

int luaopen_walkfloor(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, wf_walk_l);
    lua_setfield(L, -2, "walk");
    return 1;
}
