/* core.c - luaopen_portone_link_core: gathers the parts into one module.
 *
 * libcurl's global init is not thread-safe before 7.84, so it runs here once,
 * at load time, which is when a host is still single-threaded.
 */
#include <curl/curl.h>
#include "plink.h"

/* The module's one exported symbol: it builds with -fvisibility=hidden, so
 * the calls between its parts are direct, not through the PLT. */
#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int luaopen_portone_link_core(lua_State *L);

static int core_curl_ready = 0;

/* core.call_noyield(f, ...): f(...), called from C without a continuation,
 * so a yield inside f raises ("attempt to yield across a C-call boundary")
 * instead of suspending the caller's coroutine. poll runs its callbacks
 * through it (async.lua): one that yields cannot leave poll suspended. */
static int core_call_noyield(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_call(L, lua_gettop(L) - 1, 0);
    return 0;
}

int luaopen_portone_link_core(lua_State *L)
{
    if (!core_curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return luaL_error(L, "portone.link.core: curl_global_init failed");
        core_curl_ready = 1;
    }
    lua_newtable(L);
    lua_pushliteral(L, PLINK_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
    lua_setfield(L, -2, "curl_version");
    lua_pushcfunction(L, core_call_noyield);
    lua_setfield(L, -2, "call_noyield");
    plink_codec_open(L);
    plink_http_easy_open(L);
    plink_http_multi_open(L);
    plink_answer_open(L);
    return 1;
}
