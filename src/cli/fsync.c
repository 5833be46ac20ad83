/* fsync.c - portone.cli.fsync: lets `portone-link batch` put its results
 * file on the disk before the requests it records can leave.
 *
 * A flushed write is only in the kernel's page cache: after a power loss
 * or an OS crash, the "sending" line of a request that did leave may be
 * gone, and `--resume` would then send it again (a second link for the
 * order); a lost "created" line loses the link's URL. Plain Lua has no
 * fsync, so this module is the CLI's own, like portone.cli.signal: the core
 * never needs it.
 *
 *   local fsync = require "portone.cli.fsync"
 *   fsync.file(f)       -- flushes f and its data to the disk (fdatasync):
 *                       -- true, or nil and a message; a pipe or a terminal
 *                       -- (nothing to sync) is true
 *   fsync.dir(path)     -- the directory's entries to the disk (fsync), so
 *                       -- that a file just created there stays: true, or
 *                       -- nil and a message (true for a directory that
 *                       -- cannot be opened for reading: nothing to do)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

/* The FILE of io file handle `idx`, or NULL when it is closed. Lua 5.2+
 * keep a luaL_Stream (closed: closef is NULL); Lua 5.1 a FILE *, and
 * LuaJIT a struct whose first field is the FILE * (closed: NULL). */
static FILE *fs_stream(lua_State *L, int idx)
{
#if LUA_VERSION_NUM >= 502
    luaL_Stream *p = (luaL_Stream *)luaL_checkudata(L, idx, LUA_FILEHANDLE);
    return p->closef ? p->f : NULL;
#else
    FILE **p = (FILE **)luaL_checkudata(L, idx, LUA_FILEHANDLE);
    return *p;
#endif
}

static int fs_fail(lua_State *L, const char *what, int err)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, strerror(err));
    return 2;
}

/* file(f) --> true | nil, message */
static int fs_file(lua_State *L)
{
    FILE *f = fs_stream(L, 1);
    if (!f)
        return luaL_argerror(L, 1, "closed file");
    if (fflush(f) != 0)
        return fs_fail(L, "flush", errno);
    /* EINVAL: a pipe, a socket or a terminal, no disk behind it */
    if (fdatasync(fileno(f)) != 0 && errno != EINVAL && errno != EROFS)
        return fs_fail(L, "fdatasync", errno);
    lua_pushboolean(L, 1);
    return 1;
}

/* dir(path) --> true | nil, message */
static int fs_dir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc, err;
    /* a directory one may write in but not read (mode -wx) cannot be
     * opened to sync: the file is still written, as before this module */
    if (fd < 0 && (errno == EACCES || errno == EPERM)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (fd < 0)
        return fs_fail(L, path, errno);
    rc = fsync(fd);
    err = errno;
    close(fd);
    if (rc != 0 && err != EINVAL && err != EROFS)
        return fs_fail(L, path, err);
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg fs_funcs[] = {
    {"file", fs_file},
    {"dir", fs_dir},
    {NULL, NULL}
};

/* The module's one exported symbol (the build uses -fvisibility=hidden). */
#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int luaopen_portone_cli_fsync(lua_State *L);

int luaopen_portone_cli_fsync(lua_State *L)
{
    lua_newtable(L);
#if LUA_VERSION_NUM < 502
    luaL_register(L, NULL, fs_funcs);
#else
    luaL_setfuncs(L, fs_funcs, 0);
#endif
    return 1;
}
