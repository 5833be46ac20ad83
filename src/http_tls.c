/* http_tls.c - what keeps TLS and name resolution out of a poll(0):
 *
 *   - the CA store: parsed once per process and file (a system bundle of
 *     ~145 certificates takes ~16 ms), when a handle is made, and handed to
 *     every new TLS connection through CURLOPT_SSL_CTX_FUNCTION. Without
 *     this, libcurl 7.88 re-reads the whole bundle for every connection,
 *     inside the multi step that starts it: its own CA cache never applies
 *     while CURLOPT_CAPATH is set, which Debian's libcurl does by default,
 *     and it could only be filled by a connection anyway;
 *   - a share handle (core.share_new) per client: TLS sessions and the DNS
 *     cache shared by its easy and multi handles, so a reconnect resumes
 *     the session (no certificate chain to verify again);
 *   - CURLOPT_QUICK_EXIT: a transfer that times out or is cancelled while
 *     the threaded resolver still waits for DNS leaves the thread behind
 *     instead of joining it (the join held the caller until getaddrinfo
 *     gave up: about 2 s every 5 s against an unreachable resolver). libcurl
 *     is pinned in memory (RTLD_NODELETE) so that such a thread never runs
 *     in unmapped code after lua_close unloads this module.
 *
 * The store is used only when libcurl itself runs on the OpenSSL this file
 * was built with (same major version); otherwise, or when the file cannot
 * be read, the handle gets CURLOPT_CAINFO as before and libcurl reports the
 * problem on the first request, like any transport error.
 */
#define _GNU_SOURCE 1   /* dladdr, RTLD_NODELETE */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <openssl/err.h>
#include "http_common.h"

#define SHARE_MT "portone.link.share"

/* OpenSSL 1.1 has neither the 3.0 names below nor a major-version call. */
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#define plink_store_load(s, path) X509_STORE_load_file((s), (path))
#define plink_ssl_major() ((unsigned long)OPENSSL_version_major())
#elif OPENSSL_VERSION_NUMBER >= 0x10100000L
#define plink_store_load(s, path) X509_STORE_load_locations((s), (path), NULL)
#define plink_ssl_major() (OpenSSL_version_num() >> 28)
#elif defined(OPENSSL_VERSION_NUMBER) /* cppcheck reads no opensslv.h */
#error "portone-link needs OpenSSL 1.1 or later (libcurl's TLS library)"
#endif

/* ---- the CA store cache ------------------------------------------------ */

typedef struct ca_entry {
    struct ca_entry *next;
    char *path;
    struct stat st;        /* file identity when loaded: reload on change */
    X509_STORE *store;     /* the cache's reference */
} ca_entry;

static pthread_mutex_t ca_lock = PTHREAD_MUTEX_INITIALIZER;
static ca_entry *ca_cache;
static long ca_loads;        /* stores parsed so far (core.ca_loads) */

/* 1 when libcurl's TLS backend is the OpenSSL this file links: only then
 * is the SSL_CTX it hands our callback one we may call into. */
static int ca_usable(void)
{
    static int usable = -1;
    if (usable < 0) {
        const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
        char want[32];
        snprintf(want, sizeof want, "OpenSSL/%d.", (int)(OPENSSL_VERSION_NUMBER >> 28));
        usable = v && v->ssl_version && strncmp(v->ssl_version, want, strlen(want)) == 0
                 && plink_ssl_major() == (unsigned long)(OPENSSL_VERSION_NUMBER >> 28);
    }
    return usable;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size
        && a->st_mtime == b->st_mtime;
}

/* The store of `path`, parsed at most once per version of the file; a new
 * reference for the caller, or NULL (unreadable, not PEM, no memory). The
 * flags are those libcurl sets on its own store (trusted first, partial
 * chains: a CA file may hold an intermediate as its anchor). */
static X509_STORE *ca_acquire(const char *path)
{
    struct stat st;
    ca_entry *e;
    X509_STORE *s = NULL;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return NULL;
    pthread_mutex_lock(&ca_lock);
    for (e = ca_cache; e; e = e->next)
        if (strcmp(e->path, path) == 0)
            break;
    if (e && same_file(&e->st, &st)) {
        if (X509_STORE_up_ref(e->store))
            s = e->store;
        pthread_mutex_unlock(&ca_lock);
        return s;
    }
    s = X509_STORE_new();
    if (s && plink_store_load(s, path) == 1) {
        X509_STORE_set_flags(s, X509_V_FLAG_TRUSTED_FIRST | X509_V_FLAG_PARTIAL_CHAIN);
        ca_loads++;
        if (!e && (e = calloc(1, sizeof *e)) != NULL) {
            if ((e->path = strdup(path)) == NULL) {
                free(e);
                e = NULL;
            } else {
                e->next = ca_cache;
                ca_cache = e;
            }
        } else if (e) {
            X509_STORE_free(e->store);     /* the file changed: drop the old */
            e->store = NULL;
        }
        if (e && X509_STORE_up_ref(s)) {
            e->store = s;
            e->st = st;
        }
    } else {
        X509_STORE_free(s);
        s = NULL;
    }
    ERR_clear_error();
    pthread_mutex_unlock(&ca_lock);
    return s;
}

/* Runs inside libcurl's connect step, after it built the SSL_CTX of a new
 * connection: swap in the shared store (set1 takes a reference). */
static CURLcode ca_sslctx(CURL *c, void *sslctx, void *store)
{
    (void)c;
    SSL_CTX_set1_cert_store((SSL_CTX *)sslctx, (X509_STORE *)store);
    return CURLE_OK;
}

/* OpenSSL fetches and caches its algorithms and error strings on first
 * use: the first SSL_CTX of a process costs a few ms. Pay that here, when
 * a handle is made, not in the perform step of the first connection. */
static void tls_preload_once(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx) {
        SSL *ssl = SSL_new(ctx);
        SSL_free(ssl);
        SSL_CTX_free(ctx);
    }
    ERR_clear_error();
}

void *plink_ca_acquire(const char *cainfo)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    const char *path = cainfo;
    if (!ca_usable())
        return NULL;
    pthread_once(&once, tls_preload_once);
    if (!path) {
        const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
        path = v ? v->cainfo : NULL;       /* libcurl's default bundle */
    }
    return path ? ca_acquire(path) : NULL;
}

void plink_ca_release(void *store)
{
    if (store)
        X509_STORE_free((X509_STORE *)store);
}

static CURLcode plink_ca_apply(CURL *c, void *store)
{
    CURLcode rc;
    /* libcurl loads nothing itself then; the callback brings the store. */
    if ((rc = curl_easy_setopt(c, CURLOPT_CAINFO, (char *)NULL)) != CURLE_OK ||
        (rc = curl_easy_setopt(c, CURLOPT_CAPATH, (char *)NULL)) != CURLE_OK ||
        (rc = curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, ca_sslctx)) != CURLE_OK)
        return rc;
    return curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, store);
}

/* core.ca_loads(): CA files parsed so far in this process (specs check that
 * connections do not parse them). */
static int tls_ca_loads(lua_State *L)
{
    long n;
    pthread_mutex_lock(&ca_lock);
    n = ca_loads;
    pthread_mutex_unlock(&ca_lock);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* ---- share handles ----------------------------------------------------- */

/* Reference-counted, so that the easy and multi handles that use it keep it
 * alive whatever order the collector finalizes them in. */
struct plink_share {
    CURLSH *sh;
    int refs;
};

typedef struct {
    plink_share *s;
} share_box;

plink_share *plink_share_ref(plink_share *s)
{
    if (s)
        s->refs++;
    return s;
}

void plink_share_unref(plink_share *s)
{
    if (s && --s->refs == 0) {
        curl_share_cleanup(s->sh);
        free(s);
    }
}

static CURLcode plink_share_apply(CURL *c, plink_share *s)
{
    return curl_easy_setopt(c, CURLOPT_SHARE, s ? s->sh : (CURLSH *)NULL);
}

plink_share *plink_share_check(lua_State *L, int idx)
{
    share_box *b = lua_touserdata(L, idx);
    int ok;
    if (!b || !lua_getmetatable(L, idx))
        return NULL;
    luaL_getmetatable(L, SHARE_MT);
    ok = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return ok ? b->s : NULL;
}

CURLcode plink_easy_setup_tls(CURL *c, void *ca, plink_share *s)
{
    CURLcode rc = CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075700
    rc = curl_easy_setopt(c, CURLOPT_QUICK_EXIT, 1L);
    if (rc != CURLE_OK)
        return rc;
#endif
    if (ca && (rc = plink_ca_apply(c, ca)) != CURLE_OK)
        return rc;
    if (s)
        rc = plink_share_apply(c, s);
    return rc;
}

/* core.share_new(): one per client. No lock functions: a client's handles
 * are used by one thread at a time. */
static int share_new(lua_State *L)
{
    share_box *b = lua_newuserdata(L, sizeof *b);
    plink_share *s;
    b->s = NULL;
    luaL_getmetatable(L, SHARE_MT);
    lua_setmetatable(L, -2);
    s = calloc(1, sizeof *s);
    if (!s)
        return luaL_error(L, "share_new: out of memory");
    s->sh = curl_share_init();
    if (!s->sh ||
        curl_share_setopt(s->sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
        curl_share_setopt(s->sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK) {
        if (s->sh)
            curl_share_cleanup(s->sh);
        free(s);
        return luaL_error(L, "share_new: libcurl could not make a share handle");
    }
    s->refs = 1;
    b->s = s;
    return 1;
}

static int share_gc(lua_State *L)
{
    share_box *b = luaL_checkudata(L, 1, SHARE_MT);
    plink_share_unref(b->s);
    b->s = NULL;
    return 0;
}

static const luaL_Reg share_methods[] = {
    { NULL, NULL }
};

/* ---- resolver threads -------------------------------------------------- */

/* Keeps the object holding `fn` mapped for the life of the process. */
static void *tls_pinned[2];     /* never closed: that is the point */
static void pin(void *fn, int i)
{
    Dl_info info;
    if (dladdr(fn, &info) && info.dli_fname)
        tls_pinned[i] = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

/* libcurl: a resolver thread that CURLOPT_QUICK_EXIT left behind may still
 * be inside it. This module: the CA store cache lives as long as the
 * process, so its list head must not be unmapped under it (lua_close
 * unloads C modules). */
static void pin_libcurl(void)
{
    pin((void *)curl_easy_init, 0);
    pin((void *)plink_http_tls_open, 1);
}

void plink_http_tls_open(lua_State *L)
{
    pin_libcurl();
    plink_setmeta(L, SHARE_MT, share_methods, share_gc, NULL);
    lua_pushcfunction(L, share_new);
    lua_setfield(L, -2, "share_new");
    lua_pushcfunction(L, tls_ca_loads);
    lua_setfield(L, -2, "ca_loads");
}
