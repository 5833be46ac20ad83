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
 * Memory discipline: no Lua error is raised while this file holds malloc'd
 * memory that Lua does not own. Arguments are checked first; the header list
 * (curl_slist) lives only between its build and the end of curl_easy_perform,
 * with no Lua call in between; the response buffers live in the userdata and
 * are freed by __gc / __close / close().
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include "plink.h"

#define HTTP_MT "portone.link.http_easy"
#define HTTP_DEFAULT_MAX (1024 * 1024)

typedef struct {
    char *p;
    size_t len, cap;
} http_buf;

typedef struct {
    CURL *curl;
    int closed;
    size_t max_bytes;      /* response body cap */
    int too_large;         /* set by the write callback when the cap is hit */
    int oom;               /* a buffer could not grow */
    long connects;         /* sum of CURLINFO_NUM_CONNECTS */
    http_buf body;         /* response body of the current request */
    http_buf hdr;          /* response header lines of the last response */
    char errbuf[CURL_ERROR_SIZE];
} http_handle;

/* ---- buffers ----------------------------------------------------------- */

static int buf_add(http_buf *b, const char *s, size_t n)
{
    if (n > (size_t)-1 - b->len - 1)
        return 0;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *np;
        while (cap < b->len + n + 1)
            cap = cap > ((size_t)-1) / 2 ? b->len + n + 1 : cap * 2;
        np = realloc(b->p, cap);
        if (!np)
            return 0;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 1;
}

static void buf_free(http_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Keeps memory between requests unless a big response grew it. */
static void buf_clear(http_buf *b)
{
    if (b->cap > 64 * 1024)
        buf_free(b);
    b->len = 0;
}

/* ---- libcurl callbacks (never call Lua) -------------------------------- */

static size_t http_on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    http_handle *h = ud;
    size_t n = size * nmemb;
    if (n > h->max_bytes || h->body.len > h->max_bytes - n) {
        h->too_large = 1;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    if (!buf_add(&h->body, ptr, n)) {
        h->oom = 1;
        return 0;
    }
    return n;
}

static size_t http_on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    http_handle *h = ud;
    size_t n = size * nmemb;
    /* A status line starts a new response (1xx interim answers, proxy
     * CONNECT): keep only the headers of the last one. */
    if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0)
        h->hdr.len = 0;
    if (h->hdr.len + n > 256 * 1024)
        return 0; /* libcurl caps headers too; this is a second fence */
    if (!buf_add(&h->hdr, ptr, n)) {
        h->oom = 1;
        return 0;
    }
    return n;
}

/* ---- helpers ----------------------------------------------------------- */

static http_handle *http_check(lua_State *L)
{
    return luaL_checkudata(L, 1, HTTP_MT);
}

static void http_free(http_handle *h)
{
    if (h->curl) {
        curl_easy_cleanup(h->curl);
        h->curl = NULL;
    }
    buf_free(&h->body);
    buf_free(&h->hdr);
    h->closed = 1;
}

/* Seconds (a positive number) -> milliseconds, at least 1. */
static long http_opt_ms(lua_State *L, const char *name, lua_Number def)
{
    lua_Number s = def;
    lua_getfield(L, 1, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "http_new: option '%s' must be a number of seconds", name);
        s = lua_tonumber(L, -1);
        if (!(s > 0 && s <= 86400))
            luaL_error(L, "http_new: option '%s' must be in (0, 86400] seconds", name);
    }
    lua_pop(L, 1);
    return s * 1000 < 1 ? 1 : (long)(s * 1000);
}

/* Optional string option without CR, LF or NUL; left on the stack (or nil). */
static const char *http_opt_str(lua_State *L, const char *name)
{
    size_t n;
    const char *s;
    lua_getfield(L, 1, name);
    if (lua_isnil(L, -1))
        return NULL;
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "http_new: option '%s' must be a string", name);
    s = lua_tolstring(L, -1, &n);
    if (strlen(s) != n || strpbrk(s, "\r\n"))
        luaL_error(L, "http_new: option '%s' must not contain CR, LF or NUL", name);
    return s;
}

#define HTTP_SET(opt, val) \
    do { if (curl_easy_setopt(h->curl, (opt), (val)) != CURLE_OK) \
             return luaL_error(L, "http_new: libcurl refused " #opt); } while (0)

/* core.http_new(opts) */
static int http_new(lua_State *L)
{
    http_handle *h;
    long timeout_ms, connect_ms;
    size_t max_bytes = HTTP_DEFAULT_MAX;
    const char *cainfo, *proxy, *ua;

    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    timeout_ms = http_opt_ms(L, "timeout", 10);
    connect_ms = http_opt_ms(L, "connect_timeout", 3);
    lua_getfield(L, 1, "max_response_bytes");
    if (!lua_isnil(L, -1)) {
        long long v;
        if (lua_type(L, -1) != LUA_TNUMBER || !plink_tointeger53(L, -1, &v) || v < 1)
            return luaL_error(L, "http_new: option 'max_response_bytes' must be a positive integer");
        max_bytes = (size_t)v;
    }
    lua_pop(L, 1);
    cainfo = http_opt_str(L, "cainfo");       /* stack: 2 */
    proxy = http_opt_str(L, "proxy");         /* stack: 3 */
    ua = http_opt_str(L, "user_agent");       /* stack: 4 */

    /* Everything from here on is owned by the userdata: raising is safe. */
    h = lua_newuserdata(L, sizeof *h);
    memset(h, 0, sizeof *h);
    luaL_getmetatable(L, HTTP_MT);
    lua_setmetatable(L, -2);
    h->max_bytes = max_bytes;
    h->curl = curl_easy_init();
    if (!h->curl)
        return luaL_error(L, "http_new: curl_easy_init failed");

    HTTP_SET(CURLOPT_NOSIGNAL, 1L);               /* threads and hosts own signals */
    HTTP_SET(CURLOPT_ERRORBUFFER, h->errbuf);
    HTTP_SET(CURLOPT_FOLLOWLOCATION, 0L);         /* never follow redirects */
    HTTP_SET(CURLOPT_PROTOCOLS_STR, "http,https");
    HTTP_SET(CURLOPT_SSL_VERIFYPEER, 1L);
    HTTP_SET(CURLOPT_SSL_VERIFYHOST, 2L);
    HTTP_SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    HTTP_SET(CURLOPT_TIMEOUT_MS, timeout_ms);
    HTTP_SET(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    HTTP_SET(CURLOPT_TCP_KEEPALIVE, 1L);
    HTTP_SET(CURLOPT_WRITEFUNCTION, http_on_body);
    HTTP_SET(CURLOPT_WRITEDATA, h);
    HTTP_SET(CURLOPT_HEADERFUNCTION, http_on_header);
    HTTP_SET(CURLOPT_HEADERDATA, h);
    /* cainfo replaces libcurl's default bundle, like `curl --cacert`. */
    if (cainfo)
        HTTP_SET(CURLOPT_CAINFO, cainfo);
    /* No proxy option: libcurl reads http_proxy / https_proxy / no_proxy. */
    if (proxy)
        HTTP_SET(CURLOPT_PROXY, proxy);
    if (ua)
        HTTP_SET(CURLOPT_USERAGENT, ua);
    return 1;
}

static const char *const http_methods[] = { "GET", "POST", "PUT", "DELETE", "PATCH", NULL };

/* Transport failures that surely happened before the request left. */
static int http_unsent(CURLcode c)
{
    switch (c) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        return 1;
    default:
        return 0;
    }
}

/* Pushes the header lines in h->hdr as a table of lower-case name -> value.
 * A repeated name keeps its values joined with ", ". */
static void http_push_headers(lua_State *L, http_handle *h)
{
    const char *p = h->hdr.p, *end = h->hdr.p + h->hdr.len;
    lua_newtable(L);
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon && colon > p &&
            !(line_end - p >= 5 && memcmp(p, "HTTP/", 5) == 0)) {
            const char *v = colon + 1, *ve = line_end;
            luaL_Buffer b;
            const char *q;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            luaL_buffinit(L, &b);
            for (q = p; q < colon; q++) {
                char c = *q;
                luaL_addchar(&b, (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c);
            }
            luaL_pushresult(&b);                  /* name */
            lua_pushvalue(L, -1);
            lua_rawget(L, -3);                    /* old value */
            if (lua_isstring(L, -1)) {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(ve - v));
            }
            lua_rawset(L, -3);
        }
        p = line_end + 1;
    }
}

static int http_fail(lua_State *L, const char *kind, const char *msg, int code, int sent)
{
    lua_pushnil(L);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
    if (code >= 0) {
        lua_pushinteger(L, code);
        lua_setfield(L, -2, "curl_code");
    }
    lua_pushboolean(L, sent);
    lua_setfield(L, -2, "sent");
    return 2;
}

/* h:request(method, url, headers, body) */
static int http_request(lua_State *L)
{
    http_handle *h = http_check(L);
    int m = luaL_checkoption(L, 2, NULL, http_methods);
    const char *url = luaL_checkstring(L, 3);
    const char *body = NULL;
    size_t body_len = 0, nh, i;
    struct curl_slist *list = NULL;
    CURLcode rc;
    long status = 0, nconn = 0;
    int sent;

    if (!lua_isnoneornil(L, 4))
        luaL_checktype(L, 4, LUA_TTABLE);
    if (!lua_isnoneornil(L, 5))
        body = luaL_checklstring(L, 5, &body_len);
    nh = lua_istable(L, 4) ? plink_rawlen(L, 4) : 0;
    /* Check every header before anything is allocated. */
    for (i = 1; i <= nh; i++) {
        size_t n;
        const char *s;
        lua_rawgeti(L, 4, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "bad argument #3 to 'request' (header %d is not a string)", (int)i);
        s = lua_tolstring(L, -1, &n);
        if (strlen(s) != n || strpbrk(s, "\r\n"))
            return luaL_error(L, "bad argument #3 to 'request' (header %d contains CR, LF or NUL)", (int)i);
        lua_pop(L, 1);
    }
    if (strpbrk(url, "\r\n \t"))
        return luaL_argerror(L, 3, "URL contains white space or CR/LF");
    if (h->closed || !h->curl)
        return http_fail(L, "transport", "the HTTP handle is closed", -1, 0);

    /* No Lua errors from here until the slist is freed. Header strings stay
     * referenced by the table argument; curl_slist_append copies them. */
    for (i = 1; i <= nh; i++) {
        struct curl_slist *nl;
        lua_rawgeti(L, 4, (int)i);
        nl = curl_slist_append(list, lua_tostring(L, -1));
        lua_pop(L, 1);
        if (!nl) {
            curl_slist_free_all(list);
            return http_fail(L, "transport", "out of memory building headers", -1, 0);
        }
        list = nl;
    }
    {
        /* No "Expect: 100-continue" wait on bodies. */
        struct curl_slist *nl = curl_slist_append(list, "Expect:");
        if (!nl) {
            curl_slist_free_all(list);
            return http_fail(L, "transport", "out of memory building headers", -1, 0);
        }
        list = nl;
    }

    buf_clear(&h->body);
    buf_clear(&h->hdr);
    h->too_large = 0;
    h->oom = 0;
    h->errbuf[0] = '\0';

    /* Every per-request option is set each time, so nothing leaks from the
     * previous request (curl_easy_reset would also do, but would drop the
     * options set once in http_new). */
    curl_easy_setopt(h->curl, CURLOPT_URL, url);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    if (m == 0) {                 /* GET */
        curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
    } else {
        /* POST, or another method with a (possibly empty) body: PUT without
         * a body sends Content-Length: 0. The body string stays on the Lua
         * stack for the whole transfer, so POSTFIELDS need not copy it. */
        curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body ? body : "");
        if (m != 1)
            curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, http_methods[m]);
    }

    rc = curl_easy_perform(h->curl);

    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, (char *)NULL);
    curl_slist_free_all(list);
    list = NULL;
    if (curl_easy_getinfo(h->curl, CURLINFO_NUM_CONNECTS, &nconn) == CURLE_OK)
        h->connects += nconn;

    if (rc != CURLE_OK) {
        char msg[CURL_ERROR_SIZE + 64];
        if (h->too_large) {
            int r;
            snprintf(msg, sizeof msg, "response body larger than %lu bytes",
                     (unsigned long)h->max_bytes);
            buf_clear(&h->body);
            r = http_fail(L, "transport", msg, (int)rc, 1);
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "too_large");
            return r;
        }
        if (h->oom) {
            buf_clear(&h->body);
            return http_fail(L, "transport", "out of memory reading the response", (int)rc, 1);
        }
        sent = !http_unsent(rc);
        if (rc == CURLE_OPERATION_TIMEDOUT) {
            /* A timeout before the request went out (connect, TLS) is as
             * unsent as a refused connection. */
            curl_off_t pre = 0;
            long reqsize = 0;
            curl_easy_getinfo(h->curl, CURLINFO_PRETRANSFER_TIME_T, &pre);
            curl_easy_getinfo(h->curl, CURLINFO_REQUEST_SIZE, &reqsize);
            sent = pre > 0 || reqsize > 0;
        }
        snprintf(msg, sizeof msg, "%s", h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
        buf_clear(&h->body);
        return http_fail(L, rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "transport",
                         msg, (int)rc, sent);
    }

    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
    lua_pushinteger(L, (lua_Integer)status);
    lua_pushlstring(L, h->body.p ? h->body.p : "", h->body.len);
    http_push_headers(L, h);
    buf_clear(&h->body);
    buf_clear(&h->hdr);
    return 3;
}

static int http_connections(lua_State *L)
{
    http_handle *h = http_check(L);
    lua_pushinteger(L, (lua_Integer)h->connects);
    return 1;
}

static int http_close(lua_State *L)
{
    http_handle *h = http_check(L);
    http_free(h);
    return 0;
}

static int http_tostring(lua_State *L)
{
    http_handle *h = http_check(L);
    lua_pushfstring(L, "portone.link.http_easy (%s)", h->closed ? "closed" : "open");
    return 1;
}

/* core.sleep(seconds): blocks the thread without spinning. */
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
    plink_setmeta(L, HTTP_MT, http_methods_reg, http_close);
    lua_pushcfunction(L, http_new);
    lua_setfield(L, -2, "http_new");
    lua_pushcfunction(L, http_sleep);
    lua_setfield(L, -2, "sleep");
}
