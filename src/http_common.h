/* http_common.h - what the easy (http_easy.c) and multi (http_multi.c)
 * transports share, so that both speak HTTP the same way:
 *
 *   - the options table of core.http_new / core.multi_new, checked before
 *     anything is allocated (plink_http_opts_read raises on a bad value);
 *   - the constant libcurl settings (no redirects, http/https only, TLS
 *     verification, NOSIGNAL, timeouts, keep-alive), in one place;
 *   - the response buffers and the write/header callbacks with the body cap
 *     (the callbacks never call Lua);
 *   - request headers (CR/LF checked first, "Expect:" appended) and methods;
 *   - the error info table {kind, message, curl_code, sent, too_large} and the
 *     response header table (lower-case name -> value, repeats joined ", ").
 *
 * Memory discipline is the callers': nothing here raises a Lua error while it
 * holds memory, except plink_http_opts_read and plink_http_check_request,
 * which run before any allocation.
 */
#ifndef PLINK_HTTP_COMMON_H
#define PLINK_HTTP_COMMON_H

#include <stddef.h>
#include <curl/curl.h>
#include "plink.h"

#define PLINK_HTTP_DEFAULT_MAX (1024 * 1024)   /* response body cap, bytes */
#define PLINK_HTTP_HEADER_MAX (256 * 1024)     /* response header cap, bytes */
#define PLINK_HTTP_SENDS_DEFAULT 2             /* sends per request unless told */
#define PLINK_HTTP_SENDS_MAX 6                 /* libcurl's own limit (1 + 5) */

/* CURLOPT_PREREQFUNCTION (7.80) is what bounds libcurl's silent re-sends. */
#if defined(LIBCURL_VERSION_NUM) && LIBCURL_VERSION_NUM < 0x075000 /* cppcheck sees no curl.h */
#error "portone-link needs libcurl 7.80 or later (CURLOPT_PREREQFUNCTION)"
#endif

typedef struct {
    char *p;
    size_t len, cap;
} plink_hbuf;

/* One response being received: the callbacks' user data. */
typedef struct {
    size_t max_bytes;      /* body cap */
    int too_large;         /* the write callback hit the cap */
    int oom;               /* a buffer could not grow */
    int hdr_too_large;     /* the header callback hit PLINK_HTTP_HEADER_MAX */
    int sends;             /* times the request went out (libcurl re-sends) */
    int max_sends;         /* the prereq callback refuses the send after it */
    int capped;            /* a send was refused: max_sends reached */
    int hdr_errors_only;   /* option error_headers_only: keep no header of a 2xx */
    int hdr_skip;          /* the current response is a 2xx: skip its headers */
    size_t hdr_skipped;    /* header bytes skipped so far (for the cap) */
    plink_hbuf body;
    plink_hbuf hdr;         /* header lines of the last response */
    char errbuf[CURL_ERROR_SIZE];
} plink_resp;

/* A client's share handle (http_tls.c): TLS sessions and DNS cache. */
typedef struct plink_share plink_share;

/* The checked options. Strings point into the options table (valid while it
 * is referenced, i.e. during the constructor call). */
typedef struct {
    long timeout_ms, connect_ms;
    size_t max_bytes;
    const char *cainfo, *proxy, *user_agent;
    plink_share *share;    /* option 'share' (core.share_new), or NULL */
    int error_headers_only; /* option: no response-header table on 2xx */
} plink_http_opts;

int plink_hbuf_add(plink_hbuf *b, const char *s, size_t n);   /* 0 on OOM */
void plink_hbuf_free(plink_hbuf *b);
void plink_hbuf_clear(plink_hbuf *b);      /* keeps small buffers for reuse */

void plink_resp_reset(plink_resp *r);    /* before a request */
/* Reads the optional max_sends argument at idx (nil: the default), raising
 * like luaL_argerror; allocates nothing. */
int plink_http_check_sends(lua_State *L, int idx);
void plink_resp_free(plink_resp *r);

/* Reads the options table at idx (nil = defaults). Raises, naming fname, on a
 * bad value; allocates nothing. */
void plink_http_opts_read(lua_State *L, int idx, const char *fname,
                          plink_http_opts *o);

/* The constant settings of every handle, and the callbacks bound to r. */
CURLcode plink_easy_setup(CURL *c, const plink_http_opts *o, plink_resp *r);

/* Methods accepted by request/add (luaL_checkoption list). GET is index 0,
 * POST index 1. */
extern const char *const plink_http_methods[];
#define PLINK_HTTP_POST 1
#define PLINK_HTTP_HEAD 5

/* The arguments of request/add, checked. The strings stay on the stack. */
typedef struct {
    int method;              /* index into plink_http_methods */
    const char *url;
    size_t url_len;
    size_t nheaders;
    const char *body;        /* NULL: none */
    size_t body_len;
    int headers_known;       /* the headers are those of the known list */
} plink_http_req;

/* Checks (self, method, url, headers, body) at 1..5, raising like
 * luaL_argerror: method one of plink_http_methods; url a string without
 * white space, CR, LF or NUL (libcurl would stop at a NUL); headers nil or
 * an array of strings without CR, LF or NUL; body nil or a string. Headers
 * are checked last: nothing after them runs Lua code (a number converted to
 * a string allocates, and a finalizer could then change the table) before
 * plink_http_build_headers reads them. Allocates nothing. */
void plink_http_check_request(lua_State *L, const char *fname, plink_http_req *r);

/* Builds the curl_slist of the (checked) headers at idx plus "Expect:", and
 * for a request with a method but no body (deactivate's PUT) "Content-Type:",
 * which drops the application/x-www-form-urlencoded libcurl would add.
 * NULL when out of memory (nothing left allocated). */
struct curl_slist *plink_http_build_headers(lua_State *L, int idx, size_t n,
                                            int bodyless);

/* The same list, but *cache is returned as it is when it already holds
 * exactly these headers and trailer (a client sends the same ones on every
 * call: no mallocs); else a new list replaces it (the old one freed).
 * NULL when out of memory (*cache kept). The cache is the caller's to free. */
struct curl_slist *plink_http_headers_cached(lua_State *L, int idx, size_t n,
                                             int bodyless, struct curl_slist **cache);

/* 1 when the header table is to be built for this status: always, unless
 * the handle was made with error_headers_only and status is 2xx (no caller
 * reads the headers of a success). */
int plink_http_want_headers(int error_headers_only, long status);

/* The URL an easy handle holds, as a URL handle libcurl does not parse
 * again: given CURLOPT_URL, libcurl parses the string at the start of
 * every request (~14,000 instructions a request with 7.88, a sixth of its
 * work on a kept-alive HTTPS POST); given CURLOPT_CURLU, it reads the
 * parts. u is the URL handle set on the easy handle (NULL when libcurl got
 * CURLOPT_URL: a URL curl_url_set refuses, which libcurl then reports as it
 * always did); url (len bytes) is a copy of what is set, or NULL: unknown,
 * set it. Zeroed to start; freed after the easy handle. */
typedef struct {
    CURLU *u;
    char *url;
    size_t len;
} plink_url_held;
/* plink_http_check_request, but a url equal to the one *known_url holds,
 * and headers that make exactly the list *known_list (both checked when
 * they were set), are not checked again; r->headers_known then says
 * *known_list can be sent as it is (http_easy.c: a client sends the same
 * URL and headers on every create). Both are read through the pointers
 * after the arguments are converted: converting a number allocates, and a
 * finalizer may then make a request of its own on the handle, which frees
 * what it held. With body_at_5 0, argument 5 is not read: the caller has
 * set r->body (not NULL) and r->body_len. */
void plink_http_check_request_known(lua_State *L, const char *fname, plink_http_req *r,
                                    const plink_url_held *known_url,
                                    struct curl_slist *const *known_list, int body_at_5);
/* Sets url on c unless held says c holds it already. */
CURLcode plink_url_hold(CURL *c, const char *url, size_t len, plink_url_held *held);
/* Forgets what is set (the next plink_url_hold sets the URL again). */
void plink_url_forget(plink_url_held *held);
void plink_url_held_free(plink_url_held *held);

/* Per-request settings; body may be NULL (an empty body for non-GET). The
 * body and list must outlive the transfer. Not CURLE_OK when libcurl could
 * not copy a string (out of memory): the handle is then half set (no URL,
 * or a PUT that would go out as a POST) and must not run. */
CURLcode plink_easy_set_request(CURL *c, int method, const char *url, plink_url_held *held,
                                struct curl_slist *list, const char *body, size_t len);
/* The method and body part of plink_easy_set_request, for a handle that
 * keeps its URL and header list set while they stay the same (http_easy.c);
 * half set on failure too. */
CURLcode plink_easy_set_method(CURL *c, int method, const char *body, size_t len);
/* Drops the per-request pointers (headers, body) from the handle. */
void plink_easy_clear_request(CURL *c);

/* Pushes the info table for a failed transfer: {kind, message, curl_code,
 * sent, sends[, too_large]} from rc and the response state. `sent` is
 * whether the request went out at all (sends > 0). */
void plink_push_curl_info(lua_State *L, CURLcode rc, const plink_resp *r);
/* Pushes an info table made by hand (code < 0: no curl_code). */
void plink_push_info(lua_State *L, const char *kind, const char *msg, int code, int sent);

/* Pushes the response headers in hdr as a table. */
void plink_push_headers(lua_State *L, const plink_hbuf *hdr);

/* ---- http_tls.c: CA store, share handle, resolver (see there) ---------- */

/* The parsed CA store of cainfo (NULL: libcurl's default bundle), loaded at
 * most once per process and file version; a reference, or NULL when it
 * cannot be used (libcurl then loads cainfo itself, per connection). */
void *plink_ca_acquire(const char *cainfo);
void plink_ca_release(void *ca);
plink_share *plink_share_ref(plink_share *s);
void plink_share_unref(plink_share *s);
/* The share at idx (a core.share_new value) or NULL. Never raises. */
plink_share *plink_share_check(lua_State *L, int idx);
/* After plink_easy_setup: the shared CA store (ca may be NULL), the share
 * handle (s may be NULL) and CURLOPT_QUICK_EXIT. */
CURLcode plink_easy_setup_tls(CURL *c, void *ca, plink_share *s);
void plink_http_tls_open(lua_State *L);

#endif
