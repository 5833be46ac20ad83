/* compat.h - the few Lua 5.1/LuaJIT vs 5.4 differences this module touches.
 *
 * One source builds against either ABI (OpenResty's LuaJIT speaks 5.1), in
 * the manner of lua-cjson and LPeg: small macros, no compat library.
 */
#ifndef PLINK_COMPAT_H
#define PLINK_COMPAT_H

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#if LUA_VERSION_NUM < 502
/* 5.1 / LuaJIT */
#define plink_rawlen(L, i)          lua_objlen((L), (i))    /* tables only */
#define plink_setfuncs(L, l)        luaL_register((L), NULL, (l))
#define LUA_OK 0
#else
#define plink_rawlen(L, i)          lua_rawlen((L), (i))
#define plink_setfuncs(L, l)        luaL_setfuncs((L), (l), 0)
#endif

/* lua_newuserdata is fine on every version we build for (5.4 keeps it as a
 * macro over lua_newuserdatauv with one user value). */

/* An integer-valued lua_Number check that works without lua_isinteger (5.1).
 * Writes the value to *out and returns 1 when the number at index i is an
 * integer in [-(2^53-1), 2^53-1]; 0 otherwise (floats with a fraction, NaN,
 * inf, out-of-range). */
int plink_tointeger53(lua_State *L, int i, long long *out);

/* Makes the metatable `name`: __index = itself, methods from l, __gc = gc
 * and, on 5.4, __close = close (none when close is NULL). A handle's
 * __close is its close method, which may run while the handle is in use (a
 * finalizer, or a to-be-closed variable in one); __gc never does. */
void plink_setmeta(lua_State *L, const char *name, const luaL_Reg *l,
                   lua_CFunction gc, lua_CFunction close);

#endif
