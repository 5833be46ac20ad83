/* http_common.c - the HTTP settings, callbacks and result tables shared by
 * the easy and multi transports (see http_common.h for the why).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "http_common.h"

/* ---- buffers ----------------------------------------------------------- */

int plink_hbuf_add(plink_hbuf *b, const char *s, size_t n)
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

void plink_hbuf_free(plink_hbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Keeps memory between requests unless a big response grew it. */
void plink_hbuf_clear(plink_hbuf *b)
{
    if (b->cap > 64 * 1024)
        plink_hbuf_free(b);
    b->len = 0;
}

void plink_resp_reset(plink_resp *r)
{
    plink_hbuf_clear(&r->body);
    plink_hbuf_clear(&r->hdr);
    r->too_large = 0;
    r->oom = 0;
    r->hdr_too_large = 0;
    r->sends = 0;
    r->capped = 0;
    r->hdr_skip = 0;
    r->hdr_skipped = 0;
    r->errbuf[0] = '\0';
}

int plink_http_check_sends(lua_State *L, int idx)
{
    long long v = 0;
    if (lua_isnoneornil(L, idx))
        return PLINK_HTTP_SENDS_DEFAULT;
    if (lua_type(L, idx) != LUA_TNUMBER || !plink_tointeger53(L, idx, &v) ||
        v < 1 || v > PLINK_HTTP_SENDS_MAX)
        luaL_argerror(L, idx, "max_sends must be an integer in [1, 6]");
    return (int)v;
}

void plink_resp_free(plink_resp *r)
{
    plink_hbuf_free(&r->body);
    plink_hbuf_free(&r->hdr);
}

/* ---- libcurl callbacks (never call Lua) -------------------------------- */

static size_t plink_on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    plink_resp *r = ud;
    size_t n = size * nmemb;
    if (n > r->max_bytes || r->body.len > r->max_bytes - n) {
        r->too_large = 1;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    if (!plink_hbuf_add(&r->body, ptr, n)) {
        r->oom = 1;
        return 0;
    }
    return n;
}

/* 1 when the status line "HTTP/x yyy ..." has a 2xx code. */
static int plink_status_2xx(const char *p, size_t n)
{
    const char *sp = memchr(p, ' ', n);
    size_t rest = sp ? n - (size_t)(sp + 1 - p) : 0;
    return rest >= 3 && sp[1] == '2' && sp[2] >= '0' && sp[2] <= '9' && sp[3] >= '0' &&
           sp[3] <= '9';
}

static size_t plink_on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    plink_resp *r = ud;
    size_t n = size * nmemb;
    /* A status line starts a new response (1xx interim answers, proxy
     * CONNECT): keep only the headers of the last one. */
    if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        r->hdr.len = 0;
        r->hdr_skipped = 0;
        r->hdr_skip = r->hdr_errors_only && plink_status_2xx(ptr, n);
    }
    if (r->hdr.len + r->hdr_skipped + n > PLINK_HTTP_HEADER_MAX) {
        r->hdr_too_large = 1;
        return 0; /* libcurl caps headers too; this is a second fence */
    }
    if (r->hdr_skip && r->hdr.len > 0) {
        /* nobody reads a 2xx's headers: not copied, only counted (the
         * status line is kept, so hdr.len > 0 still says one came in) */
        r->hdr_skipped += n;
        return n;
    }
    if (!plink_hbuf_add(&r->hdr, ptr, n)) {
        r->oom = 1;
        return 0;
    }
    return n;
}

/* Called once per send, after the connection is up and before the request
 * goes out, also for libcurl's own re-send of a request whose reused
 * keep-alive connection died before any response byte (Curl_retry_request:
 * up to 5 of them, one per dead pooled connection). Refusing the send here
 * is what makes the bound on sends exact for every method, with or without
 * a body: a rewind-refusing seek callback would miss bodyless requests. */
static int plink_on_prereq(void *ud, char *peer_ip, char *local_ip,
                           int peer_port, int local_port)
{
    plink_resp *r = ud;
    if (r->sends >= r->max_sends) {
        r->capped = 1;
        return CURL_PREREQFUNC_ABORT;   /* CURLE_ABORTED_BY_CALLBACK */
    }
    r->sends++;
    return CURL_PREREQFUNC_OK;
}

/* ---- options ----------------------------------------------------------- */

/* Seconds (a positive number) -> milliseconds, at least 1. */
static long plink_opt_ms(lua_State *L, int idx, const char *fname,
                         const char *name, lua_Number def)
{
    lua_Number s = def;
    lua_getfield(L, idx, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: option '%s' must be a number of seconds", fname, name);
        s = lua_tonumber(L, -1);
        if (!(s > 0 && s <= 86400))
            luaL_error(L, "%s: option '%s' must be in (0, 86400] seconds", fname, name);
    }
    lua_pop(L, 1);
    return s * 1000 < 1 ? 1 : (long)(s * 1000);
}

/* Optional string option without CR, LF or NUL. The string stays referenced
 * by the options table. */
static const char *plink_opt_str(lua_State *L, int idx, const char *fname,
                                 const char *name)
{
    size_t n;
    const char *s;
    lua_getfield(L, idx, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "%s: option '%s' must be a string", fname, name);
    s = lua_tolstring(L, -1, &n);
    if (strlen(s) != n || strpbrk(s, "\r\n"))
        luaL_error(L, "%s: option '%s' must not contain CR, LF or NUL", fname, name);
    lua_pop(L, 1);
    return s;
}

void plink_http_opts_read(lua_State *L, int idx, const char *fname,
                          plink_http_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_bytes = PLINK_HTTP_DEFAULT_MAX;
    o->timeout_ms = 10000;
    o->connect_ms = 3000;
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    o->timeout_ms = plink_opt_ms(L, idx, fname, "timeout", 10);
    o->connect_ms = plink_opt_ms(L, idx, fname, "connect_timeout", 3);
    lua_getfield(L, idx, "max_response_bytes");
    if (!lua_isnil(L, -1)) {
        long long v = 0;   /* luaL_error does not return; analyzers do not know */
        if (lua_type(L, -1) != LUA_TNUMBER || !plink_tointeger53(L, -1, &v) || v < 1)
            luaL_error(L, "%s: option 'max_response_bytes' must be a positive integer", fname);
        o->max_bytes = (size_t)v;
    }
    lua_pop(L, 1);
    o->cainfo = plink_opt_str(L, idx, fname, "cainfo");
    o->proxy = plink_opt_str(L, idx, fname, "proxy");
    o->user_agent = plink_opt_str(L, idx, fname, "user_agent");
    lua_getfield(L, idx, "error_headers_only");
    o->error_headers_only = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, idx, "share");
    if (!lua_isnil(L, -1) && (o->share = plink_share_check(L, -1)) == NULL)
        luaL_error(L, "%s: option 'share' must be a core.share_new() value", fname);
    lua_pop(L, 1);
}

#define PLINK_SET(opt, val) \
    do { CURLcode rc_ = curl_easy_setopt(c, (opt), (val)); \
         if (rc_ != CURLE_OK) return rc_; } while (0)

CURLcode plink_easy_setup(CURL *c, const plink_http_opts *o, plink_resp *r)
{
    r->max_bytes = o->max_bytes;
    r->hdr_errors_only = o->error_headers_only;
    PLINK_SET(CURLOPT_NOSIGNAL, 1L);               /* threads and hosts own signals */
    PLINK_SET(CURLOPT_ERRORBUFFER, r->errbuf);
    PLINK_SET(CURLOPT_FOLLOWLOCATION, 0L);         /* never follow redirects */
    PLINK_SET(CURLOPT_PROTOCOLS_STR, "http,https");
    PLINK_SET(CURLOPT_SSL_VERIFYPEER, 1L);
    PLINK_SET(CURLOPT_SSL_VERIFYHOST, 2L);
    PLINK_SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    PLINK_SET(CURLOPT_TIMEOUT_MS, o->timeout_ms);
    PLINK_SET(CURLOPT_CONNECTTIMEOUT_MS, o->connect_ms);
    PLINK_SET(CURLOPT_TCP_KEEPALIVE, 1L);
    PLINK_SET(CURLOPT_WRITEFUNCTION, plink_on_body);
    PLINK_SET(CURLOPT_WRITEDATA, r);
    PLINK_SET(CURLOPT_HEADERFUNCTION, plink_on_header);
    PLINK_SET(CURLOPT_HEADERDATA, r);
    PLINK_SET(CURLOPT_PREREQFUNCTION, plink_on_prereq);
    PLINK_SET(CURLOPT_PREREQDATA, r);
    /* cainfo replaces libcurl's default bundle, like `curl --cacert`. */
    if (o->cainfo)
        PLINK_SET(CURLOPT_CAINFO, o->cainfo);
    /* No proxy option: libcurl reads http_proxy / https_proxy / no_proxy. */
    if (o->proxy)
        PLINK_SET(CURLOPT_PROXY, o->proxy);
    if (o->user_agent)
        PLINK_SET(CURLOPT_USERAGENT, o->user_agent);
    return CURLE_OK;
}

/* ---- requests ---------------------------------------------------------- */

const char *const plink_http_methods[] = { "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD",
                                            NULL };

static size_t plink_http_check_headers(lua_State *L, int idx, int arg, const char *fname)
{
    size_t nh, i;
    if (lua_isnoneornil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    nh = plink_rawlen(L, idx);
    for (i = 1; i <= nh; i++) {
        size_t n;
        const char *s;
        lua_rawgeti(L, idx, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "bad argument #%d to '%s' (header %d is not a string)",
                       arg, fname, (int)i);
        s = lua_tolstring(L, -1, &n);
        if (strlen(s) != n || strpbrk(s, "\r\n"))
            luaL_error(L, "bad argument #%d to '%s' (header %d contains CR, LF or NUL)",
                       arg, fname, (int)i);
        lua_pop(L, 1);
    }
    return nh;
}

static int plink_headers_equal(lua_State *L, int idx, size_t n, int bodyless,
                               const struct curl_slist *list);

void plink_http_check_request(lua_State *L, const char *fname, plink_http_req *r)
{
    plink_http_check_request_known(L, fname, r, NULL, NULL, 1);
}

void plink_http_check_request_known(lua_State *L, const char *fname, plink_http_req *r,
                                    const plink_url_held *known_url,
                                    struct curl_slist *const *known_list, int body_at_5)
{
    /* the conversions first (a number becomes a string: that allocates,
     * and a finalizer may run); what the handle holds is read after */
    r->method = luaL_checkoption(L, 2, NULL, plink_http_methods);
    r->url = luaL_checklstring(L, 3, &r->url_len);
    if (body_at_5) {
        r->body = NULL;
        r->body_len = 0;
        if (!lua_isnoneornil(L, 5))
            r->body = luaL_checklstring(L, 5, &r->body_len);
    }
    if (!(known_url && known_url->url && known_url->len == r->url_len &&
          memcmp(known_url->url, r->url, r->url_len) == 0) &&
        (strlen(r->url) != r->url_len || strpbrk(r->url, "\r\n \t")))
        luaL_argerror(L, 3, "URL contains white space, CR/LF or NUL");
    r->headers_known = 0;
    if (known_list && *known_list && lua_type(L, 4) == LUA_TTABLE) {
        size_t n = plink_rawlen(L, 4);
        if (plink_headers_equal(L, 4, n, r->method != 0 && !r->body, *known_list)) {
            r->nheaders = n;
            r->headers_known = 1;
            return;
        }
    }
    r->nheaders = plink_http_check_headers(L, 4, 3, fname);  /* #3 after self */
}

struct curl_slist *plink_http_build_headers(lua_State *L, int idx, size_t n,
                                            int bodyless)
{
    struct curl_slist *list = NULL, *nl;
    size_t i;
    /* Header strings stay referenced by the table; curl_slist_append copies. */
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (int)i);
        nl = curl_slist_append(list, lua_tostring(L, -1));
        lua_pop(L, 1);
        if (!nl) {
            curl_slist_free_all(list);
            return NULL;
        }
        list = nl;
    }
    /* No "Expect: 100-continue" wait on bodies. */
    nl = curl_slist_append(list, "Expect:");
    if (nl && bodyless) {
        list = nl;
        nl = curl_slist_append(list, "Content-Type:");
    }
    if (!nl) {
        curl_slist_free_all(list);
        return NULL;
    }
    return nl;
}

/* 1 when list holds the n strings at idx, then "Expect:" (and
 * "Content-Type:" when bodyless), and nothing else. */
static int plink_headers_equal(lua_State *L, int idx, size_t n, int bodyless,
                               const struct curl_slist *list)
{
    size_t i, len;
    for (i = 1; i <= n; i++, list = list->next) {
        const char *s;
        int same;
        if (!list)
            return 0;
        lua_rawgeti(L, idx, (int)i);
        /* Also called on unchecked values (plink_http_check_request_known):
         * only a string is read (no conversion), and the lengths are
         * compared first, so an embedded NUL never matches. */
        s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        same = s && strlen(list->data) == len && memcmp(list->data, s, len) == 0;
        lua_pop(L, 1);
        if (!same)
            return 0;
    }
    if (!list || strcmp(list->data, "Expect:") != 0)
        return 0;
    list = list->next;
    if (bodyless) {
        if (!list || strcmp(list->data, "Content-Type:") != 0)
            return 0;
        list = list->next;
    }
    return list == NULL;
}

struct curl_slist *plink_http_headers_cached(lua_State *L, int idx, size_t n,
                                             int bodyless, struct curl_slist **cache)
{
    struct curl_slist *list;
    if (*cache && plink_headers_equal(L, idx, n, bodyless, *cache))
        return *cache;
    list = plink_http_build_headers(L, idx, n, bodyless);
    if (list) {
        curl_slist_free_all(*cache);
        *cache = list;
    }
    return list;
}

int plink_http_want_headers(int error_headers_only, long status)
{
    return !error_headers_only || status < 200 || status > 299;
}

/* Sets url on c as a URL handle (CURLOPT_CURLU); *u is the one set on c
 * now, or NULL, and is replaced (the old one freed once c no longer points
 * at it). A URL curl_url_set refuses goes to CURLOPT_URL instead (*u NULL),
 * so libcurl reports it as it always did. */
static CURLcode plink_easy_set_url(CURL *c, const char *url, CURLU **u)
{
    CURLU *nu = curl_url();
    if (nu && curl_url_set(nu, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_easy_setopt(c, CURLOPT_CURLU, nu) == CURLE_OK) {
        curl_url_cleanup(*u);             /* replaced on the handle above */
        *u = nu;
        return CURLE_OK;
    }
    curl_url_cleanup(nu);
    curl_easy_setopt(c, CURLOPT_CURLU, (CURLU *)NULL);
    curl_url_cleanup(*u);
    *u = NULL;
    return curl_easy_setopt(c, CURLOPT_URL, url);
}

CURLcode plink_url_hold(CURL *c, const char *url, size_t len, plink_url_held *held)
{
    CURLcode rc;
    if (held->url && held->len == len && memcmp(held->url, url, len) == 0)
        return CURLE_OK;                  /* still set on c */
    plink_url_forget(held);
    rc = plink_easy_set_url(c, url, &held->u);
    /* without a copy (out of memory) the URL is only set again next time */
    if (rc == CURLE_OK && (held->url = malloc(len + 1)) != NULL) {
        memcpy(held->url, url, len + 1);
        held->len = len;
    }
    return rc;
}

void plink_url_forget(plink_url_held *held)
{
    free(held->url);
    held->url = NULL;
}

void plink_url_held_free(plink_url_held *held)
{
    plink_url_forget(held);
    curl_url_cleanup(held->u);
    held->u = NULL;
}

CURLcode plink_easy_set_request(CURL *c, int method, const char *url, plink_url_held *held,
                                struct curl_slist *list, const char *body, size_t len)
{
    /* Every per-request option is set each time, so nothing leaks from the
     * previous request on a reused handle, except an unchanged URL, which
     * stays set. The URL is parsed (it can fail); the others only store a
     * value. */
    CURLcode rc = plink_url_hold(c, url, strlen(url), held);
    if (rc != CURLE_OK)
        return rc;
    PLINK_SET(CURLOPT_HTTPHEADER, list);
    return plink_easy_set_method(c, method, body, len);
}

CURLcode plink_easy_set_method(CURL *c, int method, const char *body, size_t len)
{
    /* CUSTOMREQUEST is copied (it can fail). */
    PLINK_SET(CURLOPT_CUSTOMREQUEST, (char *)NULL);
    /* First: NOBODY 0 turns a HEAD handle back into a GET, which the lines
     * below then make what this request needs. */
    PLINK_SET(CURLOPT_NOBODY, (long)(method == PLINK_HTTP_HEAD));
    if (method == PLINK_HTTP_HEAD) {   /* client:warm: a connection, no body */
        return CURLE_OK;
    } else if (method == 0) {          /* GET */
        PLINK_SET(CURLOPT_HTTPGET, 1L);
    } else {
        /* POST, or another method with a (possibly empty) body: PUT without
         * a body sends Content-Length: 0. POSTFIELDS does not copy. */
        PLINK_SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        PLINK_SET(CURLOPT_POSTFIELDS, body ? body : "");
        if (method != 1)
            PLINK_SET(CURLOPT_CUSTOMREQUEST, plink_http_methods[method]);
    }
    return CURLE_OK;
}

void plink_easy_clear_request(CURL *c)
{
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, (char *)NULL);
}

/* ---- results ----------------------------------------------------------- */

void plink_push_info(lua_State *L, const char *kind, const char *msg, int code, int sent)
{
    lua_createtable(L, 0, 6);
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
}

void plink_push_curl_info(lua_State *L, CURLcode rc, const plink_resp *r)
{
    char msg[CURL_ERROR_SIZE + 160];
    const char *kind = "transport";
    /* The prereq callback sees every send: none means the request never
     * left (DNS, connect, TLS, a timeout before it), whatever rc says. */
    int sent = r->sends > 0, too_large = 0;
    if (r->too_large) {
        snprintf(msg, sizeof msg, "response body larger than %lu bytes",
                 (unsigned long)r->max_bytes);
        sent = too_large = 1;
    } else if (r->hdr_too_large) {
        snprintf(msg, sizeof msg, "response headers larger than %d bytes",
                 PLINK_HTTP_HEADER_MAX);
        sent = too_large = 1;
    } else if (r->capped) {
        snprintf(msg, sizeof msg, "the connection closed before any response after "
                 "the request was sent %d time%s (a reused keep-alive connection "
                 "died); not sent again", r->sends, r->sends == 1 ? "" : "s");
        sent = 1;
    } else if (r->oom) {
        snprintf(msg, sizeof msg, "out of memory reading the response");
    } else if (rc == CURLE_OUT_OF_MEMORY && r->hdr.len > 0) {
        /* libcurl refuses a header line over 100 KB (CURL_MAX_HTTP_HEADER)
         * with CURLE_OUT_OF_MEMORY and no message, after the status line
         * came in: say what it most likely is. */
        snprintf(msg, sizeof msg, "response header too large (a header line over "
                 "libcurl's 100 KB limit)");
        too_large = 1;
    } else {
        snprintf(msg, sizeof msg, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
        if (rc == CURLE_OPERATION_TIMEDOUT)
            kind = "timeout";
    }
    plink_push_info(L, kind, msg, (int)rc, sent);
    if (too_large) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "too_large");
    }
    lua_pushinteger(L, r->sends);
    lua_setfield(L, -2, "sends");
}

void plink_push_headers(lua_State *L, const plink_hbuf *hdr)
{
    const char *p = hdr->p, *end = hdr->p + hdr->len;
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
                char ch = *q;
                luaL_addchar(&b, (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch);
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
