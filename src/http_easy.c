/* http_easy.c - core.http_new: one blocking libcurl easy handle per client.
 *
 *   local h = core.http_new{ timeout = s, connect_timeout = s, cainfo = path,
 *                            proxy = url, max_response_bytes = n,
 *                            user_agent = str }
 *   h:request(method, url, headers, body) --> status, body, resp_headers
 *                                         --> nil, info
 *   h:connections()  --> connections libcurl opened so far (sum of NUM_CONNECTS)
 *   h:close()        --> frees the curl handle; later requests return nil, info
 *   core.sleep(seconds)   nanosleep, for the retry back-off of the curl transport
 *
 * Why the handle is reused: libcurl keeps its connection cache in the easy
 * handle, so every request on one handle goes over the same keep-alive
 * connection while the server keeps it open.
 *
 * libcurl re-sends a request by itself when a *reused* connection dies before
 * any response byte arrives (Curl_retry_request, any method, up to 5 times).
 * A create is therefore at-least-once in that one window; PortOne refuses a
 * second payment for the same merchant_uid, so no double charge follows. The
 * Lua layer must never add a retry of its own on top of that for a create.
 *
 * The HTTP settings, callbacks and result tables are shared with the multi
 * transport (http_common.c), so both speak HTTP the same way.
 *
 * Memory discipline: no Lua error is raised while this file holds malloc'd
 * memory that Lua does not own. Arguments are checked first; the header list
 * (curl_slist) lives only between its build and the end of curl_easy_perform,
 * with no Lua call in between; the response buffers live in the userdata and
 * are freed by __gc / __close / close().
 */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include "http_common.h"

#define HTTP_MT "portone.link.http_easy"

typedef struct {
    CURL *curl;
    int closed;
    long connects;         /* sum of CURLINFO_NUM_CONNECTS */
    plink_resp resp;       /* buffers of the current response */
} http_handle;

static http_handle *http_check(lua_State *L)
{
    return luaL_checkudata(L, 1, HTTP_MT);
}

/* core.http_new(opts) */
static int http_new(lua_State *L)
{
    plink_http_opts o;
    http_handle *h;
    CURLcode rc;

    plink_http_opts_read(L, 1, "http_new", &o);  /* raises; allocates nothing */
    /* Everything from here on is owned by the userdata: raising is safe. The
     * option strings stay referenced by the options table (argument 1). */
    h = lua_newuserdata(L, sizeof *h);
    memset(h, 0, sizeof *h);
    luaL_getmetatable(L, HTTP_MT);
    lua_setmetatable(L, -2);
    h->curl = curl_easy_init();
    if (!h->curl)
        return luaL_error(L, "http_new: curl_easy_init failed");
    rc = plink_easy_setup(h->curl, &o, &h->resp);
    if (rc != CURLE_OK)
        return luaL_error(L, "http_new: libcurl refused an option: %s", curl_easy_strerror(rc));
    return 1;
}

/* h:request(method, url, headers, body) */
static int http_request(lua_State *L)
{
    http_handle *h = http_check(L);
    int m = luaL_checkoption(L, 2, NULL, plink_http_methods);
    const char *url = luaL_checkstring(L, 3);
    const char *body = NULL;
    size_t body_len = 0, nh;
    struct curl_slist *list;
    CURLcode rc;
    long status = 0, nconn = 0;

    nh = plink_http_check_headers(L, 4, 3, "request");
    if (!lua_isnoneornil(L, 5))
        body = luaL_checklstring(L, 5, &body_len);
    if (strpbrk(url, "\r\n \t"))
        return luaL_argerror(L, 3, "URL contains white space or CR/LF");
    if (h->closed || !h->curl) {
        lua_pushnil(L);
        plink_push_info(L, "transport", "the HTTP handle is closed", -1, 0);
        return 2;
    }

    /* No Lua errors from here until the slist is freed. */
    list = plink_http_build_headers(L, 4, nh, m != 0 && !body);
    if (!list) {
        lua_pushnil(L);
        plink_push_info(L, "transport", "out of memory building headers", -1, 0);
        return 2;
    }
    plink_resp_reset(&h->resp);
    /* The body string stays on the Lua stack for the whole transfer. */
    plink_easy_set_request(h->curl, m, url, list, body, body_len);
    rc = curl_easy_perform(h->curl);
    plink_easy_clear_request(h->curl);
    curl_slist_free_all(list);
    if (curl_easy_getinfo(h->curl, CURLINFO_NUM_CONNECTS, &nconn) == CURLE_OK)
        h->connects += nconn;

    /* Only Lua-owned memory from here on (buffers live in the userdata). */
    if (rc != CURLE_OK) {
        lua_pushnil(L);
        plink_push_curl_info(L, h->curl, rc, &h->resp);
        plink_resp_reset(&h->resp);
        return 2;
    }
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
    lua_pushinteger(L, (lua_Integer)status);
    lua_pushlstring(L, h->resp.body.p ? h->resp.body.p : "", h->resp.body.len);
    plink_push_headers(L, &h->resp.hdr);
    plink_resp_reset(&h->resp);
    return 3;
}

static int http_connections(lua_State *L)
{
    http_handle *h = http_check(L);
    lua_pushinteger(L, (lua_Integer)h->connects);
    return 1;
}

/* close, __gc and __close: frees libcurl and the buffers; safe to repeat. */
static int http_close(lua_State *L)
{
    http_handle *h = http_check(L);
    if (h->curl) {
        curl_easy_cleanup(h->curl);
        h->curl = NULL;
    }
    plink_resp_free(&h->resp);
    h->closed = 1;
    return 0;
}

static int http_tostring(lua_State *L)
{
    http_handle *h = http_check(L);
    lua_pushfstring(L, "portone.link.http_easy (%s)", h->closed ? "closed" : "open");
    return 1;
}

/* core.sleep(seconds): blocks the thread without spinning (retry back-off of
 * the curl transport). Capped at one hour. */
static int http_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    struct timespec ts, rem;
    if (!(s > 0))
        return 0;
    if (s > 3600)
        s = 3600;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
    if (ts.tv_nsec > 999999999L)
        ts.tv_nsec = 999999999L;
    while (nanosleep(&ts, &rem) != 0 && errno == EINTR)
        ts = rem;
    return 0;
}

static const luaL_Reg http_methods_reg[] = {
    { "request", http_request },
    { "connections", http_connections },
    { "close", http_close },
    { "__tostring", http_tostring },
    { NULL, NULL }
};

void plink_http_easy_open(lua_State *L)
{
    plink_setmeta(L, HTTP_MT, http_methods_reg, http_close, http_close);
    lua_pushcfunction(L, http_new);
    lua_setfield(L, -2, "http_new");
    lua_pushcfunction(L, http_sleep);
    lua_setfield(L, -2, "sleep");
}
