/* http_easy.c - core.http_new: one blocking libcurl easy handle per client.
 *
 *   local h = core.http_new{ timeout = s, connect_timeout = s, cainfo = path,
 *                            proxy = url, max_response_bytes = n,
 *                            user_agent = str, share = core.share_new(),
 *                            error_headers_only = bool }
 *   h:request(method, url, headers, body[, max_sends])
 *       --> status, body, resp_headers, sends  |  nil, info (info.sends)
 *       (resp_headers nil for a 2xx when error_headers_only; method may
 *       also be HEAD)
 *   h:create(method, url, headers, body[, max_sends])
 *       --> as request, but a 2xx whose body is the usual create answer
 *       (answer.c) returns only {url =, id =, status =, attempts = sends},
 *       the client's result, read from the buffer: the client's fast path
 *   h:encode_create(method, url, headers, req, max_sends, now)
 *       --> as create, with the request table validated and encoded into
 *       the codec's buffer and sent from there (no body string); false,
 *       list for an invalid request; results other than the usual table
 *       end with the wire body (see plink_http_encode_create)
 *   h:bind_create(url, headers)
 *       --> fast(req): h:encode_create("POST", url, headers, req, 2,
 *       os.time()), nothing for a req that is not a table; the headers
 *       are those the table holds at the binding (a copy)
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
 * The prereq callback (http_common.c) counts every send and refuses the one
 * after max_sends (default 2), so a request goes out at most max_sends
 * times; `sends` reports how many times it did.
 *
 * The HTTP settings, callbacks and result tables are shared with the multi
 * transport (http_common.c), so both speak HTTP the same way.
 *
 * Memory discipline: no Lua error is raised while this file holds malloc'd
 * memory that Lua does not own. Arguments are checked first; the header list
 * (curl_slist) lives only between its build and the end of curl_easy_perform,
 * with no Lua call in between; the response buffers live in the userdata and
 * are freed by __gc / __close / close().
 *
 * Re-entrancy: building the result (body string, header table) allocates,
 * so a GC step may run a finalizer that uses this handle while the header
 * buffer is being read. For that span (`busy`, a protected call so an error
 * cannot leave it set) close only marks the handle closed and request frees
 * it after, and a nested request returns nil, info.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include "http_common.h"

#define HTTP_MT "portone.link.http_easy"

typedef struct {
    CURL *curl;
    int closed;
    int busy;              /* building a result: see above */
    long connects;         /* sum of CURLINFO_NUM_CONNECTS */
    plink_resp resp;       /* buffers of the current response */
    void *ca;              /* shared CA store (http_tls.c), or NULL */
    struct curl_slist *hlist;  /* request headers of the last call, reused */
    /* What the handle holds, so that an unchanged URL (parsed once) and
     * header list are not set again. */
    plink_url_held url;
    const struct curl_slist *hlist_set;
    /* The headers table of the bound create (h:bind_create) that hlist and
     * the URL held were last checked against, or NULL: its later sends
     * skip the check. Only a bound create sets it, with its own copy of
     * the headers (no one changes it, no other binding has it), kept
     * alive by its closure, so no other table can have that address
     * meanwhile; every other request and every new binding clears it. */
    const void *bound;
    int error_headers_only;    /* no response-header table on 2xx */
    plink_share *share;    /* the client's share handle, or NULL */
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
    if (rc == CURLE_OK) {
        /* The CA file is parsed here (once per process), not per connection. */
        h->ca = plink_ca_acquire(o.cainfo);
        h->share = plink_share_ref(o.share);
        h->error_headers_only = o.error_headers_only;
        rc = plink_easy_setup_tls(h->curl, h->ca, h->share);
    }
    if (rc != CURLE_OK)
        return luaL_error(L, "http_new: libcurl refused an option: %s", curl_easy_strerror(rc));
    return 1;
}

static void http_free(http_handle *h)
{
    if (h->curl) {
        curl_easy_cleanup(h->curl);
        h->curl = NULL;
    }
    /* after the handle: it used both */
    plink_ca_release(h->ca);
    h->ca = NULL;
    plink_share_unref(h->share);
    h->share = NULL;
    curl_slist_free_all(h->hlist);
    h->hlist = NULL;
    h->hlist_set = NULL;
    h->bound = NULL;
    plink_url_held_free(&h->url);         /* after the handle that used it */
    plink_resp_free(&h->resp);
    h->closed = 1;
}

/* Sets the request on the handle; the URL and header list only when they
 * differ from what the handle holds (libcurl keeps both between transfers,
 * as a raw libcurl loop does). Any failure forgets what is held, so the next
 * request sets everything again. */
static CURLcode http_set_request(http_handle *h, const plink_http_req *r,
                                 struct curl_slist *list)
{
    CURLcode rc = plink_url_hold(h->curl, r->url, r->url_len, &h->url);
    if (rc == CURLE_OK && h->hlist_set != list) {
        rc = curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, list);
        h->hlist_set = rc == CURLE_OK ? list : NULL;
    }
    if (rc == CURLE_OK)
        rc = plink_easy_set_method(h->curl, r->method, r->body, r->body_len);
    if (rc != CURLE_OK) {
        plink_url_forget(&h->url);
        h->hlist_set = NULL;
    }
    return rc;
}

/* http_report(h, curl_code, status, usual), under lua_pcall: the info table
 * of a failed transfer (curl_code set) and nil, or the body and header table
 * (nil for a 2xx with error_headers_only), or with `usual` (h:create) for a
 * 2xx whose body is the usual create answer, the result table
 * {url =, id =, status =, attempts = sends} and nil: no body string made. */
static int http_report(lua_State *L)
{
    http_handle *h = (http_handle *)lua_touserdata(L, 1);
    long status = (long)lua_tointeger(L, 3);
    plink_answer a;
    if (!lua_isnil(L, 2)) {
        plink_push_curl_info(L, (CURLcode)lua_tointeger(L, 2), &h->resp);
        lua_pushnil(L);
        return 2;
    }
    if (lua_toboolean(L, 4) && status >= 200 && status <= 299 &&
        plink_answer_parse(h->resp.body.p, h->resp.body.len, &a)) {
        lua_createtable(L, 0, 4);
        plink_answer_push(L, &a);
        lua_setfield(L, -3, "id");
        lua_setfield(L, -2, "url");
        lua_pushinteger(L, (lua_Integer)status);
        lua_setfield(L, -2, "status");
        lua_pushinteger(L, (lua_Integer)h->resp.sends);
        lua_setfield(L, -2, "attempts");
        lua_pushnil(L);
        return 2;
    }
    lua_pushlstring(L, h->resp.body.p ? h->resp.body.p : "", h->resp.body.len);
    if (plink_http_want_headers(h->error_headers_only, status))
        plink_push_headers(L, &h->resp.hdr);
    else
        lua_pushnil(L);
    return 2;
}

/* With `held` (the fused create, below): every result but the usual
 * answer's table gets the wire body as a fifth value (after nils up to
 * four), for the client's retries; then the codec's buffers are let go.
 * Without: the n results as they are. */
static int http_wire(lua_State *L, int n, int held)
{
    const char *p;
    size_t len;
    if (!held)
        return n;
    for (; n < 4; n++)
        lua_pushnil(L);
    p = plink_codec_body(L, held, &len);
    lua_pushlstring(L, p, len);
    plink_codec_release(L, held);
    return 5;
}

/* The transfer of the checked request r, and its results (http_report).
 * The arguments' slots up to `top` stay on the stack until the end: they
 * keep the body referenced (a string, or the codec's buffers at `held`). */
static int http_transfer(lua_State *L, http_handle *h, const plink_http_req *r,
                         int max_sends, int usual, int top, int held)
{
    struct curl_slist *list;
    CURLcode rc;
    long status = 0, nconn = 0;
    int sends;
    int prc, unsent = 0;

    if (h->closed || !h->curl || h->busy) {
        lua_pushnil(L);
        plink_push_info(L, "transport", h->busy ? "the HTTP handle is in use "
                        "(a request from a finalizer during a request)"
                        : "the HTTP handle is closed", -1, 0);
        return http_wire(L, 2, held);
    }

    /* No Lua errors from here until the transfer is over. The list is the
     * handle's (reused while the headers stay the same, freed by __gc). */
    list = r->headers_known ? h->hlist
         : plink_http_headers_cached(L, 4, r->nheaders, r->method != 0 && !r->body, &h->hlist);
    if (!list) {
        lua_pushnil(L);
        plink_push_info(L, "transport", "out of memory building headers", -1, 0);
        return http_wire(L, 2, held);
    }
    plink_resp_reset(&h->resp);
    h->resp.max_sends = max_sends;
    rc = http_set_request(h, r, list);
    if (rc == CURLE_OK) {
        rc = curl_easy_perform(h->curl);
        if (curl_easy_getinfo(h->curl, CURLINFO_NUM_CONNECTS, &nconn) == CURLE_OK)
            h->connects += nconn;
    } else {
        unsent = 1;           /* half set: must not run (a PUT as a POST) */
    }
    /* The body is the caller's: libcurl must not keep it. The header list
     * is the handle's own and stays set (freed after the handle). */
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, (char *)NULL);
    if (unsent) {
        lua_pushnil(L);
        plink_push_info(L, "transport", curl_easy_strerror(rc), (int)rc, 0);
        return http_wire(L, 2, held);
    }
    sends = h->resp.sends;

    /* Only Lua-owned memory from here on (buffers live in the userdata). */
    lua_settop(L, top);
    if (rc == CURLE_OK)
        curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
    /* Nothing below allocates before the protected call (http_report is
     * an upvalue), so no finalizer runs before busy is set. */
    h->busy = 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    if (rc != CURLE_OK)
        lua_pushinteger(L, (lua_Integer)rc);
    else
        lua_pushnil(L);
    lua_pushinteger(L, (lua_Integer)status);
    lua_pushboolean(L, usual);
    prc = lua_pcall(L, 4, 2, 0);                /* top + 1, top + 2 */
    h->busy = 0;
    if (h->closed)                       /* by a finalizer, while busy */
        http_free(h);
    else
        plink_resp_reset(&h->resp);
    if (prc != LUA_OK)
        return lua_error(L);
    if (rc != CURLE_OK) {                /* info, nil -> nil, info */
        lua_insert(L, top + 1);
        return http_wire(L, 2, held);
    }
    if (lua_istable(L, top + 1)) {       /* the usual answer's result */
        lua_settop(L, top + 1);
        if (held)
            plink_codec_release(L, held);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)status);
    lua_insert(L, top + 1);
    lua_pushinteger(L, sends);
    return http_wire(L, 4, held);        /* status, body, headers, sends */
}

/* h:request(method, url, headers, body[, max_sends]); with `usual`
 * (h:create, the same arguments) a usual create answer comes back as the
 * client's result table alone (see http_report). */
static int http_perform(lua_State *L, int usual)
{
    http_handle *h = http_check(L);
    plink_http_req r;
    int max_sends;
    h->bound = NULL;                /* it may set other headers */
    /* the URL and headers the handle holds were checked when they were set */
    plink_http_check_request_known(L, "request", &r, &h->url, &h->hlist, 1);
    max_sends = plink_http_check_sends(L, 6);
    return http_transfer(L, h, &r, max_sends, usual, 5, 0);
}

/* encode_create's work after its checks, on its stack (1 h, 2 method,
 * 3 URL, 4 headers, 5 req, 6 and 7 free): the walk of the request with
 * now, then the transfer. `bound`: the headers table of a bound create
 * (else NULL); when the handle's list and URL were checked against it
 * already, they are taken as they are. */
static int http_encode_send(lua_State *L, http_handle *h, lua_Number now, int max_sends,
                            const void *bound)
{
    plink_http_req r;
    lua_pushvalue(L, lua_upvalueindex(2));       /* the walk (codec.c) */
    lua_pushvalue(L, 5);
    lua_pushnumber(L, now);
    lua_call(L, 2, 2);                           /* 8, 9 */
    if (!lua_toboolean(L, 8))
        return 2;                                /* false, list */
    lua_settop(L, 8);                            /* the buffers, held */
    r.body = plink_codec_body(L, 8, &r.body_len);
    /* read after the walk: a finalizer it ran may have sent a request of
     * its own on this handle, which clears h->bound */
    if (bound && h->bound == bound && h->hlist) {
        r.method = PLINK_HTTP_POST;
        r.url = lua_tolstring(L, 3, &r.url_len);
        r.nheaders = 0;                          /* unused: the list is known */
        r.headers_known = 1;
    } else {
        h->bound = NULL;
        plink_http_check_request_known(L, "encode_create", &r, &h->url, &h->hlist, 0);
        if (bound && r.headers_known)
            h->bound = bound;                    /* hlist holds these headers */
    }
    return http_transfer(L, h, &r, max_sends, 1, 8, 8);
}

/* h:encode_create(method, url, headers, req, max_sends, now): h:create
 * with the request table in place of the body. The request is validated
 * and encoded first (the walk of core.encode, into the codec's buffers)
 * and the body sent from there: it becomes a string only when the client
 * needs it again. Returns false, list for a request that is not valid
 * (nothing sent); the usual answer's result table; else what h:create
 * returns, then the wire body: nil, info, nil, nil, body or status, body,
 * headers, sends, body.
 * The other arguments are checked after the walk: it allocates, so a
 * finalizer may run during it (and change a headers table, or this
 * handle's list through a request of its own); nothing runs Lua code
 * between the check and the transfer. A raise while the buffers are held
 * leaves them busy for the next walk to take back (codec.c). */
int plink_http_encode_create(lua_State *L)
{
    http_handle *h = http_check(L);
    int max_sends;
    lua_Number now;
    lua_settop(L, 7);
    luaL_checktype(L, 5, LUA_TTABLE);
    max_sends = plink_http_check_sends(L, 6);
    now = luaL_checknumber(L, 7);
    luaL_argcheck(L, now == now, 7, "now must not be NaN");
    h->bound = NULL;                /* it may set other headers */
    return http_encode_send(L, h, now, max_sends, NULL);
}

/* The function h:bind_create returns: fast(req) is
 * h:encode_create("POST", url, headers, req, 2, os.time()) with h, "POST",
 * url and headers its upvalues 3-6 (1 and 2 are encode_create's own), and
 * without encode_create's checks (h is checked by bind_create; the URL and
 * headers on the first send, and again after any other request); returns
 * nothing for a req that is not a table. It is the client's usual create
 * (client.lua): one C call where the Lua front half read the token, the
 * clock, the cached URL and headers and called encode_create (~90 of the
 * ~750 cache lines a create missed more than raw libcurl, make bench-cold),
 * and, once checked, without the compare of the URL and header list. */
int plink_http_bound_create(lua_State *L)
{
    http_handle *h = (http_handle *)lua_touserdata(L, lua_upvalueindex(3));
    if (lua_type(L, 1) != LUA_TTABLE)
        return 0;                   /* the client's checks say what is wrong */
    lua_settop(L, 7);               /* h, "POST", url, headers, req, -, - */
    lua_pushvalue(L, 1);
    lua_replace(L, 5);
    lua_pushvalue(L, lua_upvalueindex(3));
    lua_replace(L, 1);
    lua_pushvalue(L, lua_upvalueindex(4));
    lua_replace(L, 2);
    lua_pushvalue(L, lua_upvalueindex(5));
    lua_replace(L, 3);
    lua_pushvalue(L, lua_upvalueindex(6));
    lua_replace(L, 4);
    return http_encode_send(L, h, (lua_Number)time(NULL), 2, lua_topointer(L, 4));
}

/* h:bind_create(url, headers) --> fast(req) (above). The URL and headers
 * are checked when fast sends, as encode_create's are. fast keeps a copy
 * of the headers (the array part, as sent), taken here: h->bound stands
 * for "checked against this table", which holds only for a table no one
 * else can change, nor bind again with another URL that was never
 * checked. */
static int http_bind_create(lua_State *L)
{
    http_handle *h = http_check(L);
    size_t n, i;
    luaL_checktype(L, 2, LUA_TSTRING);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushvalue(L, 1);
    lua_pushliteral(L, "POST");
    lua_pushvalue(L, 2);
    n = plink_rawlen(L, 3);
    lua_createtable(L, n < 64 ? (int)n : 64, 0);
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, 3, (int)i);
        lua_rawseti(L, -2, (int)i);
    }
    lua_pushcclosure(L, plink_http_bound_create, 6);
    /* a table of an old binding, since collected, may have had this
     * headers table's address */
    h->bound = NULL;
    return 1;
}

static int http_request(lua_State *L)
{
    return http_perform(L, 0);
}

static int http_create(lua_State *L)
{
    return http_perform(L, 1);
}

static int http_connections(lua_State *L)
{
    http_handle *h = http_check(L);
    lua_pushinteger(L, (lua_Integer)h->connects);
    return 1;
}

/* close and __close: frees libcurl and the buffers (request does it when
 * it is busy with them); safe to repeat. */
static int http_close(lua_State *L)
{
    http_handle *h = http_check(L);
    h->closed = 1;
    if (!h->busy)
        http_free(h);
    return 0;
}

/* __gc: nothing can be using the handle any more. */
static int http_gc(lua_State *L)
{
    http_free(http_check(L));
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
    { "connections", http_connections },
    { "close", http_close },
    { "__tostring", http_tostring },
    { NULL, NULL }
};

void plink_http_easy_open(lua_State *L)
{
    plink_http_tls_open(L);
    plink_setmeta(L, HTTP_MT, http_methods_reg, http_gc, http_close);
    luaL_getmetatable(L, HTTP_MT);
    lua_pushcfunction(L, http_report);
    lua_pushcclosure(L, http_request, 1);
    lua_setfield(L, -2, "request");
    lua_pushcfunction(L, http_report);
    lua_pushcclosure(L, http_create, 1);
    lua_setfield(L, -2, "create");
    lua_pushcfunction(L, http_report);
    lua_getfield(L, LUA_REGISTRYINDEX, PLINK_CODEC_HELD);   /* codec.c, opened first */
    lua_pushcclosure(L, plink_http_encode_create, 2);
    lua_setfield(L, -2, "encode_create");
    lua_pushcfunction(L, http_report);
    lua_getfield(L, LUA_REGISTRYINDEX, PLINK_CODEC_HELD);
    lua_pushcclosure(L, http_bind_create, 2);
    lua_setfield(L, -2, "bind_create");
    lua_pop(L, 1);
    lua_pushcfunction(L, http_new);
    lua_setfield(L, -2, "http_new");
    lua_pushcfunction(L, http_sleep);
    lua_setfield(L, -2, "sleep");
}
