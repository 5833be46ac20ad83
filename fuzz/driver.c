/* driver.c - one libFuzzer entry point for every harness of portone-link.
 *
 * Built once per harness with -DFUZZ_HARNESS="codec" (or "response",
 * "webhook"). At init it makes one lua_State, preloads portone.link.core
 * (luaopen_portone_link_core, linked in from the core's objects built with
 * -fsanitize=fuzzer-no-link,address,undefined), points package.path at the
 * tree's lua/ and fuzz/ folders and package.cpath at Debian's lua-cjson, and
 * runs fuzz/<harness>.lua (helpers: fuzz/fuzzlib.lua), which returns a checker function. Each input is
 * handed to the checker as a string under pcall: a raised error means the
 * checker found a broken invariant, and the driver prints it and aborts, so
 * libFuzzer saves the input as a crash.
 *
 * Coverage: liblua5.4 is not instrumented, so a line hook feeds libFuzzer
 * "extra counters" with Lua-level edges (previous line -> this line, per
 * chunk); the C core's own edges come from -fsanitize=fuzzer-no-link.
 *
 * FUZZ_ROOT (compile time, default ".") is the repository root; the
 * environment variable PLINK_FUZZ_ROOT overrides it at run time.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#ifndef FUZZ_HARNESS
#error "define FUZZ_HARNESS"
#endif
#ifndef FUZZ_ROOT
#define FUZZ_ROOT "."
#endif
#ifndef FUZZ_CJSON
#define FUZZ_CJSON "/usr/lib/x86_64-linux-gnu/lua/5.4/?.so"
#endif

int luaopen_portone_link_core(lua_State *L);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_NCOUNTERS (1 << 16)
__attribute__((used, section("__libfuzzer_extra_counters")))
static uint8_t fz_counters[FZ_NCOUNTERS];
static uintptr_t fz_prev;

static lua_State *fz_L;
static int fz_check = LUA_NOREF;
static unsigned long fz_runs;

static int fz_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(non-string error)", 1);
    return 1;
}

static void fz_hook(lua_State *L, lua_Debug *ar)
{
    uintptr_t cur;
    if (!lua_getinfo(L, "S", ar))
        return;
    cur = ((uintptr_t)ar->source >> 4) * 2654435761u ^ (uintptr_t)ar->currentline * 40503u;
    cur &= FZ_NCOUNTERS - 1;
    {
        uint8_t *c = &fz_counters[(cur ^ fz_prev) & (FZ_NCOUNTERS - 1)];
        if (*c < 255)
            (*c)++;
    }
    fz_prev = cur >> 1;
}

static void fz_die(lua_State *L, const char *what)
{
    fprintf(stderr, "fuzz/" FUZZ_HARNESS ": %s: %s\n", what, lua_tostring(L, -1));
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    lua_State *L;
    const char *root = getenv("PLINK_FUZZ_ROOT");
    (void)argc; (void)argv;
    if (!root || !*root)
        root = FUZZ_ROOT;
    L = fz_L = luaL_newstate();
    if (!L)
        abort();
    luaL_openlibs(L);

    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/fuzz/?.lua", root, root, root);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, FUZZ_CJSON);
    lua_setfield(L, -2, "cpath");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_portone_link_core);
    lua_setfield(L, -2, "portone.link.core");
    lua_pop(L, 2);

    lua_pushcfunction(L, fz_traceback);
    lua_pushfstring(L, "%s/fuzz/" FUZZ_HARNESS ".lua", root);
    if (luaL_loadfile(L, lua_tostring(L, -1)) != LUA_OK)
        fz_die(L, "loading the checker");
    lua_remove(L, -2);
    if (lua_pcall(L, 0, 1, -2) != LUA_OK)
        fz_die(L, "loading the checker");
    if (lua_type(L, -1) != LUA_TFUNCTION) {
        lua_pushliteral(L, "the checker module must return a function");
        fz_die(L, "loading the checker");
    }
    fz_check = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = fz_L;
    int base = lua_gettop(L);
    lua_pushcfunction(L, fz_traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fz_check);
    lua_pushlstring(L, (const char *)data, size);
    fz_prev = 0;
    lua_sethook(L, fz_hook, LUA_MASKLINE, 0);
    if (lua_pcall(L, 1, 0, base + 1) != LUA_OK)
        fz_die(L, "invariant broken");
    lua_sethook(L, NULL, 0, 0);
    lua_settop(L, base);
    /* keep the heap small and the run deterministic enough */
    if (++fz_runs % 256 == 0)
        lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
