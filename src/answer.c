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

int plink_answer_parse(const char *s, size_t len, plink_answer *a)
{
    const char *p, *end;
    a->esc = 0;
    if (!s)
        return 0;
    p = s;
    end = s + len;
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
    a->url = p;
    /* [Hh][Tt][Tt][Pp][Ss]?:// (each / maybe escaped) */
    if (end - p < 5 || (p[0] | 32) != 'h' || (p[1] | 32) != 't' || (p[2] | 32) != 't' ||
        (p[3] | 32) != 'p')
        return 0;
    p += 4;
    if ((*p | 32) == 's')
        p++;
    a->colon = p;
    if (p == end || *p++ != ':' || !(p = answer_slash(p, end, &a->esc)) ||
        !(p = answer_slash(p, end, &a->esc)))
        return 0;
    a->host = p;
    while (p < end && answer_host_char((unsigned char)*p))
        p++;
    a->host_end = p;
    if (p == a->host || !(p = answer_slash(p, end, &a->esc)))
        return 0;
    a->id = p;
    while (p < end && answer_id_char((unsigned char)*p))
        p++;
    a->id_end = p;
    if (a->id_end == a->id || a->id_end - a->id > ANSWER_MAX_ID || p == end || *p++ != '"')
        return 0;
    p = answer_ws(p, end);
    if (p == end || *p++ != '}')
        return 0;
    return answer_ws(p, end) == end;
}

void plink_answer_push(lua_State *L, const plink_answer *a)
{
    if (!a->esc) {
        lua_pushlstring(L, a->url, (size_t)(a->id_end - a->url));
    } else {               /* the decoded URL: scheme "://" host "/" id */
        /* in a stack buffer when it fits (a luaL_Buffer costs ~1,000
         * instructions here) */
        size_t ns = (size_t)(a->colon - a->url), nh = (size_t)(a->host_end - a->host),
               ni = (size_t)(a->id_end - a->id);
        char buf[256];
        if (ns + 3 + nh + 1 + ni <= sizeof buf) {
            memcpy(buf, a->url, ns);
            memcpy(buf + ns, "://", 3);
            memcpy(buf + ns + 3, a->host, nh);
            buf[ns + 3 + nh] = '/';
            memcpy(buf + ns + 4 + nh, a->id, ni);
            lua_pushlstring(L, buf, ns + 4 + nh + ni);
        } else {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            luaL_addlstring(&b, a->url, ns);
            luaL_addlstring(&b, "://", 3);
            luaL_addlstring(&b, a->host, nh);
            luaL_addchar(&b, '/');
            luaL_addlstring(&b, a->id, ni);
            luaL_pushresult(&b);
        }
    }
    lua_pushlstring(L, a->id, (size_t)(a->id_end - a->id));
}

static int answer_usual(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    plink_answer a;
    if (!plink_answer_parse(s, len, &a))
        return 0;
    plink_answer_push(L, &a);
    return 2;
}

void plink_answer_open(lua_State *L)
{
    lua_pushcfunction(L, answer_usual);
    lua_setfield(L, -2, "usual_answer");
}
