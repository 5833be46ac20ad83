/* answer.c - core.usual_answer(body): the usual answer of a create,
 *
 *     {"shortenedUrl":"https://impay.link/4bdf239e"}
 *
 * (JSON white space allowed around the tokens), read in one anchored pass:
 * url, id, or nothing when the body has any other shape. The client's fast
 * path (client.lua); every other body goes to the general decoder (lua-cjson
 * and the URL rules in protocol.lua), which gives the same result for the
 * bodies accepted here: one key (so no `code`), a string whose one escape
 * is `\/` (a JSON encoder that escapes slashes, as lua-cjson and so the
 * sandbox do, writes "https:\/\/host\/ID"; decoded, that is "/"), an
 * http(s) URL whose path is one segment, the id [A-Za-z0-9_-]{1,64}.
 * A Lua pattern did the same in ~11,000 instructions, and the general path
 * (cjson, the URL patterns) ~29,000; this takes a few hundred, which matters
 * beside a ~100,000-instruction libcurl request.
 */
#include <string.h>
#include "plink.h"

#define ANSWER_KEY "\"shortenedUrl\""
#define ANSWER_MAX_ID 64

static const char *answer_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* What Lua's %s and %c match in the C locale, plus " \ ? # and /: none may
 * be in the host (a ? or # would start a query or fragment). */
static int answer_host_char(unsigned char c)
{
    return c > 32 && c != 127 && c != '"' && c != '\\' && c != '?' && c != '#' && c != '/';
}

static int answer_id_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

/* Past a "/" or its JSON escape "\/" at p, or NULL; *esc set on an escape. */
static const char *answer_slash(const char *p, const char *end, int *esc)
{
    if (p < end && *p == '/')
        return p + 1;
    if (end - p >= 2 && p[0] == '\\' && p[1] == '/') {
        *esc = 1;
        return p + 2;
    }
    return NULL;
}

static int answer_usual(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *p = s, *end = s + len, *url, *colon, *host, *host_end, *id, *id_end;
    int esc = 0;
    p = answer_ws(p, end);
    if (p == end || *p++ != '{')
        return 0;
    p = answer_ws(p, end);
    if ((size_t)(end - p) < sizeof ANSWER_KEY - 1 || memcmp(p, ANSWER_KEY, sizeof ANSWER_KEY - 1) != 0)
        return 0;
    p = answer_ws(p + sizeof ANSWER_KEY - 1, end);
    if (p == end || *p++ != ':')
        return 0;
    p = answer_ws(p, end);
    if (p == end || *p++ != '"')
        return 0;
    url = p;
    /* [Hh][Tt][Tt][Pp][Ss]?:// (each / maybe escaped) */
    if (end - p < 5 || (p[0] | 32) != 'h' || (p[1] | 32) != 't' || (p[2] | 32) != 't' ||
        (p[3] | 32) != 'p')
        return 0;
    p += 4;
    if ((*p | 32) == 's')
        p++;
    colon = p;
    if (p == end || *p++ != ':' || !(p = answer_slash(p, end, &esc)) ||
        !(p = answer_slash(p, end, &esc)))
        return 0;
    host = p;
    while (p < end && answer_host_char((unsigned char)*p))
        p++;
    host_end = p;
    if (p == host || !(p = answer_slash(p, end, &esc)))
        return 0;
    id = p;
    while (p < end && answer_id_char((unsigned char)*p))
        p++;
    id_end = p;
    if (id_end == id || id_end - id > ANSWER_MAX_ID || p == end || *p++ != '"')
        return 0;
    p = answer_ws(p, end);
    if (p == end || *p++ != '}')
        return 0;
    if (answer_ws(p, end) != end)
        return 0;
    if (!esc) {
        lua_pushlstring(L, url, (size_t)(id_end - url));
    } else {               /* the decoded URL: scheme "://" host "/" id */
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addlstring(&b, url, (size_t)(colon - url));
        luaL_addlstring(&b, "://", 3);
        luaL_addlstring(&b, host, (size_t)(host_end - host));
        luaL_addchar(&b, '/');
        luaL_addlstring(&b, id, (size_t)(id_end - id));
        luaL_pushresult(&b);
    }
    lua_pushlstring(L, id, (size_t)(id_end - id));
    return 2;
}

void plink_answer_open(lua_State *L)
{
    lua_pushcfunction(L, answer_usual);
    lua_setfield(L, -2, "usual_answer");
}
