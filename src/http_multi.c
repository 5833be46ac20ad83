/* http_multi.c - core.multi_new: many transfers at once on libcurl's multi
 * interface, driven by the caller's loop (no threads, no callbacks into Lua).
 *
 *   local m = core.multi_new{ max_concurrent = n, timeout = s,
 *       connect_timeout = s, cainfo = path, proxy = url,
 *       max_response_bytes = n, user_agent = str, share = core.share_new(),
 *       max_opening = n (connections opened at once; 0: no cap),
 *       budget_ms = ms (time one perform spends starting transfers; 0: none),
 *       error_headers_only = bool (no headers table for a 2xx) }
 *   m:add(method, url, headers, body[, max_sends]) --> id (an integer, never reused)
 *   m:fresh(id)      --> the queued id opens a new connection, kept after
 *                        (client:warm); true if id was queued
 *   m:perform(timeout_ms)             --> completions, running
 *       completions: array of {id =, status =, body =, headers =, sends =}
 *                          or {id =, err = info}   (info as http_easy's)
 *       sends: times the request went out (libcurl re-sends one whose
 *       reused connection died, once per dead pooled connection; the
 *       prereq callback stops it at max_sends, default 2)
 *       running: transfers added and not yet reported (queued + in flight)
 *   m:timeout()      --> ms until libcurl wants perform again (-1: only on
 *                        socket activity; 0: now)
 *   m:fds()          --> readable, writable: arrays of fds to watch
 *   m:cancel(id)     --> true if the transfer was pending (never reported),
 *                        and whether it had started (so may have been sent)
 *   m:info()         --> {queued, in_flight, done, pooled, opening (connections
 *                        being opened), sockets (open), connections}
 *   m:connections()  --> connections libcurl opened so far
 *   m:close()        --> cancels everything, frees every handle (also __gc,
 *                        __close); later add raises, perform returns {}, 0
 *   core.monotonic() --> seconds on CLOCK_MONOTONIC (retry timers)
 *
 * Why our own queue: a transfer waits in a FIFO here until fewer than
 * max_concurrent are in flight. libcurl could queue them itself (pending
 * state under CURLMOPT_MAX_TOTAL_CONNECTIONS) but would count their time
 * against CURLOPT_TIMEOUT and would not bound HTTP/2 streams; here a
 * transfer's clock starts when it really starts.
 *
 * The attempt deadline (option timeout) is ours too, not CURLOPT_TIMEOUT:
 * libcurl checks its timeout before it reads, so a perform that came late
 * (a host loop that polls rarely or stalled) failed a transfer whose answer
 * was already waiting in the socket (a created link's URL thrown away). A
 * transfer past its deadline fails before a perform step only if it has not
 * been sent (as libcurl did: nothing left, a create may be retried), and
 * after the step otherwise, once what arrived has been read. Transfers start
 * in order and all have the same timeout, so the running list is sorted by
 * deadline: the first one is the next to expire.
 *
 * Keep-alive: the connection cache lives in the multi handle (sized by
 * CURLMOPT_MAXCONNECTS), so every easy handle reuses the open connections.
 * Easy handles are pooled too (up to max_concurrent): a finished transfer's
 * handle is kept with its buffers and set up again for the next one; new
 * ones are curl_easy_duphandle'd from a template that holds the constant
 * options (http_common.c, the same settings as http_easy).
 *
 * Memory discipline: arguments are checked before anything is allocated.
 * Every transfer (its copy of the URL and body, its header list, its easy
 * handle and response buffers) hangs off the userdata from the moment it is
 * allocated, in exactly one of its lists (queued, running, done, pool,
 * reported), so a Lua error while building results (out of memory; on 5.1
 * and LuaJIT also an error a finalizer raised) leaves nothing orphaned:
 * __gc frees every list. A finished transfer moves to `done` before its
 * result table is built, then to `reported`, and is recycled only once
 * perform returns the table; when perform raises instead, the reported
 * ones go back to `done` for the next perform.
 *
 * Re-entrancy: building the results allocates, so a GC step may run a
 * finalizer that uses this handle while perform still reads a transfer. So
 * perform marks the handle (`performing`) before its first allocation and
 * makes every allocation inside one protected call (multi_report, an
 * upvalue: pushing it allocates nothing), so an error cannot leave the mark
 * set. While it is set, close only marks the handle closed and perform
 * frees it when done (then reporting nothing), a nested perform reports
 * nothing (one that ran before the results were built took them all), and
 * cancel leaves the transfer being reported alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>
#include "http_common.h"

/* Per perform step, at most max_opening transfers are opening connections
 * (see multi_start_queued), and with budget_ms set, queued transfers start
 * MULTI_START_BATCH at a time only while the step is within its budget:
 * together what keeps a poll(0) within ~2 ms however many calls are queued
 * or finish at once. Sending a request on a kept-alive TLS connection costs
 * ~30 us of CPU here, so a batch is ~0.1 ms, the overshoot of the budget. */
#define MULTI_START_BATCH 4

#define MULTI_MT "portone.link.http_multi"
#define MULTI_DEFAULT_CONCURRENT 16
#define MULTI_MAX_CONCURRENT 4096

/* X_REPORTED: its result table is built in a perform that is still
 * running; recycled when that perform returns them, back to X_DONE when
 * it raises (see multi_report). */
enum { X_QUEUED, X_RUNNING, X_DONE, X_POOL, X_REPORTED, X_NLISTS };

typedef struct xfer {
    struct xfer *prev, *next;
    int list;                     /* which list holds it (X_*) */
    CURL *easy;                   /* NULL until first started */
    lua_Integer id;
    int method;
    char *data;                   /* url '\0' body: one allocation */
    size_t body_len;
    int has_body;
    int warm;                     /* a warm transfer: a fresh connection */
    struct curl_slist *headers;
    plink_url_held url;           /* kept with the easy handle, like headers */
    CURLcode rc;                  /* result, once done */
    int unsent;                   /* failed before it could be sent */
    int max_sends;
    double deadline;              /* ms (multi_now_ms) the attempt ends, once started */
    plink_resp resp;
} xfer;

typedef struct {
    xfer *head, *tail;
    size_t n;
} xlist;

typedef struct {
    CURLM *multi;
    CURL *tmpl;                   /* template with the constant options */
    int closed;
    int performing;               /* inside perform: see Re-entrancy */
    int max_concurrent;
    double timeout_ms;            /* one attempt's deadline (option timeout) */
    size_t max_bytes;
    lua_Integer next_id;
    long connects;
    int max_opening;              /* connections opened at once (0: no cap) */
    double budget_ms;             /* time a perform step spends starting (0: none) */
    int error_headers_only;       /* no response-header table on 2xx */
    int sockets;                  /* sockets libcurl holds open (connections) */
    void *ca;                     /* shared CA store (http_tls.c), or NULL */
    plink_share *share;           /* the client's share handle, or NULL */
    xlist lists[X_NLISTS];        /* indexed by X_* */
} multi_handle;

/* ---- lists ------------------------------------------------------------- */

static void xl_remove(multi_handle *m, xfer *x)
{
    xlist *l = &m->lists[x->list];
    if (x->prev) x->prev->next = x->next; else l->head = x->next;
    if (x->next) x->next->prev = x->prev; else l->tail = x->prev;
    x->prev = x->next = NULL;
    l->n--;
}

static void xl_append(multi_handle *m, xfer *x, int which)
{
    xlist *l = &m->lists[which];
    x->list = which;
    x->next = NULL;
    x->prev = l->tail;
    if (l->tail) l->tail->next = x; else l->head = x;
    l->tail = x;
    l->n++;
}

static void xl_move(multi_handle *m, xfer *x, int which)
{
    xl_remove(m, x);
    xl_append(m, x, which);
}

/* ---- transfers --------------------------------------------------------- */

static double multi_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Frees what one request owns, keeping the easy handle and buffers. */
static void xfer_release_request(xfer *x)
{
    if (x->easy)
        plink_easy_clear_request(x->easy);
    free(x->data);
    x->data = NULL;
}

static void xfer_destroy(xfer *x)
{
    xfer_release_request(x);
    curl_slist_free_all(x->headers);     /* kept between requests for reuse */
    x->headers = NULL;
    if (x->easy)
        curl_easy_cleanup(x->easy);
    plink_url_held_free(&x->url);        /* after the handle that used it */
    plink_resp_free(&x->resp);
    free(x);
}

/* A transfer that left the multi (or never entered it): back to the pool,
 * or freed when the pool is full. */
static void xfer_recycle(multi_handle *m, xfer *x)
{
    xl_remove(m, x);
    xfer_release_request(x);
    if (x->easy && (int)m->lists[X_POOL].n < m->max_concurrent) {
        plink_resp_reset(&x->resp);
        xl_append(m, x, X_POOL);
    } else {
        xfer_destroy(x);
    }
}

/* Starts one queued transfer: easy handle from the pool or a new duplicate
 * of the template. A failure here completes the transfer with an error. */
static void xfer_start(multi_handle *m, xfer *x)
{
    CURLMcode mc;
    if (!x->easy) {
        x->easy = curl_easy_duphandle(m->tmpl);
        if (!x->easy) {
            x->rc = CURLE_OUT_OF_MEMORY;
            x->unsent = 1;
            xl_move(m, x, X_DONE);
            return;
        }
        /* A new handle holds no URL yet, whatever x->url says. */
        plink_url_held_free(&x->url);
        /* The duplicate points at the template's buffers: rebind. It does
         * not inherit the share handle either. */
        plink_easy_setup_tls(x->easy, m->ca, m->share);
        curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->resp.errbuf);
        curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, &x->resp);
        curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, &x->resp);
        curl_easy_setopt(x->easy, CURLOPT_PREREQDATA, &x->resp);
        x->resp.max_bytes = m->max_bytes;
    }
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, (void *)x);
    curl_easy_setopt(x->easy, CURLOPT_FRESH_CONNECT, (long)x->warm);
    plink_resp_reset(&x->resp);
    x->resp.max_sends = x->max_sends;
    x->unsent = 0;
    x->rc = plink_easy_set_request(x->easy, x->method, x->data, &x->url, x->headers,
                                   x->has_body ? x->data + strlen(x->data) + 1 : NULL,
                                   x->body_len);
    if (x->rc != CURLE_OK) {            /* half set: must not run */
        x->unsent = 1;
        xl_move(m, x, X_DONE);
        return;
    }
    mc = curl_multi_add_handle(m->multi, x->easy);
    if (mc != CURLM_OK) {
        x->rc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
        x->unsent = 1;
        xl_move(m, x, X_DONE);
        return;
    }
    x->deadline = multi_now_ms() + m->timeout_ms;
    xl_move(m, x, X_RUNNING);            /* at the tail: the latest deadline */
}

/* 1 while the transfer's connection is not yet ready to carry the request
 * (TCP, TLS handshake, or waiting for a connection slot). A reused
 * connection sends at once, in the perform step that started it. */
static int xfer_connecting(const xfer *x)
{
    curl_off_t pre = 0;
    long reqsize = 0;
    curl_easy_getinfo(x->easy, CURLINFO_PRETRANSFER_TIME_T, &pre);
    curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &reqsize);
    return pre == 0 && reqsize == 0;
}

/* Running transfers whose connection is not ready yet. Every running
 * transfer went through at least one perform step since it started. */
static int multi_count_opening(multi_handle *m)
{
    int n = 0;
    xfer *x;
    for (x = m->lists[X_RUNNING].head; x; x = x->next)
        n += xfer_connecting(x);
    return n;
}

/* Starts queued transfers while there is a slot, at most `limit` (0: no
 * limit); returns how many it started. With max_opening set, at
 * most that many connections are being opened at any time: a new TLS
 * connection costs ~0.5 ms of CPU (context, key share, then the chain
 * check in the step that finishes the handshake), so that bounds what one
 * perform(0) can spend on handshakes. A transfer needs a new connection
 * unless one is idle: libcurl's sockets (counted by the open/close socket
 * callbacks) minus the transfers running on them. Warm transfers open
 * theirs regardless (the caller waits for them on purpose). */
static int multi_start_queued(multi_handle *m, int limit)
{
    int opening = 0, idle = 0, started = 0;
    if (m->max_opening) {
        opening = multi_count_opening(m);
        /* each running transfer holds one socket, connecting or not */
        idle = m->sockets - (int)m->lists[X_RUNNING].n;
    }
    while (m->lists[X_QUEUED].head &&
           (int)m->lists[X_RUNNING].n < m->max_concurrent &&
           (!limit || started < limit)) {
        xfer *x = m->lists[X_QUEUED].head;
        if (m->max_opening && !x->warm) {
            if (idle > 0)
                idle--;                    /* will reuse an idle connection */
            else if (opening < m->max_opening)
                opening++;                 /* will open one */
            else
                break;
        }
        xfer_start(m, x);
        started++;
    }
    return started;
}

/* 1 when multi_start_queued would start a transfer now: m:timeout() must
 * not say 0 while max_opening holds the queue (a loop would spin). */
static int multi_can_start(multi_handle *m)
{
    xfer *x = m->lists[X_QUEUED].head;
    if (!x || (int)m->lists[X_RUNNING].n >= m->max_concurrent)
        return 0;
    if (!m->max_opening || x->warm)
        return 1;
    return m->sockets > (int)m->lists[X_RUNNING].n ||
           multi_count_opening(m) < m->max_opening;
}

/* libcurl's socket open/close, counted: the connections the multi holds
 * (idle or busy), for multi_start_queued. */
static curl_socket_t multi_open_socket(void *ud, curlsocktype purpose,
                                       struct curl_sockaddr *a)
{
    multi_handle *m = ud;
    curl_socket_t fd = socket(a->family, a->socktype, a->protocol);
    (void)purpose;
    if (fd != CURL_SOCKET_BAD)
        m->sockets++;
    return fd;
}

static int multi_close_socket(void *ud, curl_socket_t fd)
{
    multi_handle *m = ud;
    m->sockets--;
    return close(fd);
}

/* Moves every finished transfer from running to done. */
static void multi_collect(multi_handle *m)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        xfer *x;
        char *priv = NULL;
        long n = 0;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        x = (xfer *)(void *)priv;
        x->rc = msg->data.result;  /* read before the handle leaves */
        curl_multi_remove_handle(m->multi, x->easy);
        if (curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &n) == CURLE_OK)
            m->connects += n;
        xl_move(m, x, X_DONE);
    }
}

/* Fails the running transfers whose deadline passed with a timeout: with
 * `all` 0 (before a perform step) only those whose request has not gone out
 * (the prereq callback counts every send), with 1 (after it) every one. */
static void multi_expire(multi_handle *m, int all)
{
    double now = multi_now_ms();
    xfer *x, *next;
    for (x = m->lists[X_RUNNING].head; x && x->deadline <= now; x = next) {
        long n = 0;
        next = x->next;
        if (!all && x->resp.sends > 0)
            continue;
        curl_multi_remove_handle(m->multi, x->easy);
        if (curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &n) == CURLE_OK)
            m->connects += n;
        x->rc = CURLE_OPERATION_TIMEDOUT;
        snprintf(x->resp.errbuf, sizeof x->resp.errbuf,
                 "Operation timed out after %.0f milliseconds with %lu bytes received",
                 now - x->deadline + m->timeout_ms, (unsigned long)x->resp.body.len);
        xl_move(m, x, X_DONE);
    }
}

/* Milliseconds until the first running transfer's deadline (0: passed), or
 * -1 when none runs. */
static long multi_deadline_ms(multi_handle *m)
{
    double d;
    if (!m->lists[X_RUNNING].head)
        return -1;
    d = m->lists[X_RUNNING].head->deadline - multi_now_ms();
    return d <= 0 ? 0 : (long)d + 1;
}

static void multi_free(multi_handle *m)
{
    int i;
    for (i = 0; i < X_NLISTS; i++) {
        xfer *x = m->lists[i].head;
        while (x) {
            xfer *next = x->next;
            if (i == X_RUNNING && m->multi)
                curl_multi_remove_handle(m->multi, x->easy);
            xfer_destroy(x);
            x = next;
        }
        m->lists[i].head = m->lists[i].tail = NULL;
        m->lists[i].n = 0;
    }
    if (m->multi) {
        curl_multi_cleanup(m->multi);
        m->multi = NULL;
    }
    if (m->tmpl) {
        curl_easy_cleanup(m->tmpl);
        m->tmpl = NULL;
    }
    /* after every handle that used them */
    plink_ca_release(m->ca);
    m->ca = NULL;
    plink_share_unref(m->share);
    m->share = NULL;
    m->closed = 1;
}

static multi_handle *multi_check(lua_State *L)
{
    return luaL_checkudata(L, 1, MULTI_MT);
}

/* ---- Lua API ----------------------------------------------------------- */

/* Integer option `name` of the options table at 1, in [lo,
 * MULTI_MAX_CONCURRENT]; def when absent. Raises; allocates nothing. */
static int multi_opt_int(lua_State *L, const char *name, int lo, int def)
{
    long long v = def;
    lua_getfield(L, 1, name);
    if (!lua_isnil(L, -1) && (lua_type(L, -1) != LUA_TNUMBER || !plink_tointeger53(L, -1, &v) ||
                              v < lo || v > MULTI_MAX_CONCURRENT))
        luaL_error(L, "multi_new: option '%s' must be an integer in [%d, %d]", name, lo,
                   MULTI_MAX_CONCURRENT);
    lua_pop(L, 1);
    return (int)v;
}

/* core.multi_new(opts) */
static int multi_new(lua_State *L)
{
    plink_http_opts o;
    multi_handle *m;
    plink_resp scratch;
    int maxc = MULTI_DEFAULT_CONCURRENT, max_opening = 0;
    double budget_ms = 0;
    CURLcode rc;

    lua_settop(L, 1);
    plink_http_opts_read(L, 1, "multi_new", &o);
    if (lua_istable(L, 1)) {
        maxc = multi_opt_int(L, "max_concurrent", 1, maxc);
        max_opening = multi_opt_int(L, "max_opening", 0, max_opening);
        lua_getfield(L, 1, "budget_ms");
        if (!lua_isnil(L, -1)) {
            lua_Number v = lua_tonumber(L, -1);
            if (lua_type(L, -1) != LUA_TNUMBER || !(v >= 0 && v <= 1000))
                return luaL_error(L, "multi_new: option 'budget_ms' must be a number "
                                     "in [0, 1000]");
            budget_ms = (double)v;
        }
        lua_pop(L, 1);
    }

    /* Everything from here on is owned by the userdata: raising is safe. */
    m = lua_newuserdata(L, sizeof *m);
    memset(m, 0, sizeof *m);
    luaL_getmetatable(L, MULTI_MT);
    lua_setmetatable(L, -2);
    m->max_concurrent = maxc;
    m->timeout_ms = (double)o.timeout_ms;
    m->max_opening = max_opening;
    m->budget_ms = budget_ms;
    m->error_headers_only = o.error_headers_only;
    m->max_bytes = o.max_bytes;
    m->next_id = 1;
    m->multi = curl_multi_init();
    m->tmpl = curl_easy_init();
    if (!m->multi || !m->tmpl)
        return luaL_error(L, "multi_new: libcurl could not make its handles");
    /* The template's callbacks point at a scratch response; each duplicate
     * is rebound to its own. The template never runs a transfer. */
    memset(&scratch, 0, sizeof scratch);
    rc = plink_easy_setup(m->tmpl, &o, &scratch);
    /* The CA file is parsed here (once per process), never in perform. */
    m->ca = plink_ca_acquire(o.cainfo);
    m->share = plink_share_ref(o.share);
    if (rc == CURLE_OK)
        rc = plink_easy_setup_tls(m->tmpl, m->ca, NULL);   /* duplicates get the share */
    if (rc == CURLE_OK)                  /* the deadline is ours: multi_expire */
        rc = curl_easy_setopt(m->tmpl, CURLOPT_TIMEOUT_MS, 0L);
    curl_easy_setopt(m->tmpl, CURLOPT_OPENSOCKETFUNCTION, multi_open_socket);
    curl_easy_setopt(m->tmpl, CURLOPT_OPENSOCKETDATA, (void *)m);
    curl_easy_setopt(m->tmpl, CURLOPT_CLOSESOCKETFUNCTION, multi_close_socket);
    curl_easy_setopt(m->tmpl, CURLOPT_CLOSESOCKETDATA, (void *)m);
    curl_easy_setopt(m->tmpl, CURLOPT_ERRORBUFFER, (char *)NULL);
    curl_easy_setopt(m->tmpl, CURLOPT_WRITEDATA, (void *)NULL);
    curl_easy_setopt(m->tmpl, CURLOPT_HEADERDATA, (void *)NULL);
    curl_easy_setopt(m->tmpl, CURLOPT_PREREQDATA, (void *)NULL);
    if (rc != CURLE_OK)
        return luaL_error(L, "multi_new: libcurl refused an option: %s",
                          curl_easy_strerror(rc));
    /* One connection per transfer in flight (HTTP/1.1), all kept alive. */
    curl_multi_setopt(m->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)maxc);
    curl_multi_setopt(m->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)maxc);
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, (long)maxc);
    return 1;
}

/* m:add(method, url, headers, body) */
static int multi_add(lua_State *L)
{
    multi_handle *m = multi_check(L);
    plink_http_req r;
    size_t url_len, body_len;
    const char *url, *body;
    xfer *x;
    int max_sends;

    plink_http_check_request(L, "add", &r);
    max_sends = plink_http_check_sends(L, 6);
    url = r.url;
    url_len = r.url_len;
    body = r.body;
    body_len = r.body_len;
    if (m->closed)
        return luaL_error(L, "add: the multi handle is closed");
    if (url_len + body_len + 2 < url_len)
        return luaL_error(L, "add: request too large");

    /* A pooled transfer brings its easy handle and buffers along. */
    x = m->lists[X_POOL].head;
    if (x) {
        xl_remove(m, x);
    } else if ((x = calloc(1, sizeof *x)) == NULL) {
        return luaL_error(L, "add: out of memory");
    }
    x->warm = 0;
    x->data = malloc(url_len + body_len + 2);
    /* A pooled transfer's header list is reused when the headers are the
     * same (the usual case: a client sends the same ones every call). */
    if (!x->data ||
        !plink_http_headers_cached(L, 4, r.nheaders, r.method != 0 && !body, &x->headers)) {
        free(x->data);
        x->data = NULL;
        if (x->easy)
            xl_append(m, x, X_POOL);
        else
            free(x);
        return luaL_error(L, "add: out of memory");
    }
    memcpy(x->data, url, url_len + 1);
    if (body)
        memcpy(x->data + url_len + 1, body, body_len);
    x->data[url_len + 1 + body_len] = '\0';
    x->has_body = body != NULL;
    x->body_len = body_len;
    x->method = r.method;
    x->max_sends = max_sends;
    x->id = m->next_id++;
    xl_append(m, x, X_QUEUED);
    lua_pushinteger(L, x->id);
    return 1;
}

/* m:fresh(id): the queued transfer id opens a new connection (kept in the
 * cache afterwards) even when an idle one exists, and is not held back by
 * max_opening: what client:warm uses to open n connections ahead of time.
 * True when id was queued. */
static int multi_fresh(lua_State *L)
{
    multi_handle *m = multi_check(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    xfer *x;
    for (x = m->closed ? NULL : m->lists[X_QUEUED].head; x; x = x->next) {
        if (x->id == id) {
            x->warm = 1;
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_pushboolean(L, 0);
    return 1;
}

/* Pushes the result table of a done transfer. */
static void multi_push_result(lua_State *L, multi_handle *m, xfer *x)
{
    long status = 0;
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, x->id);
    lua_setfield(L, -2, "id");
    if (x->rc != CURLE_OK) {
        if (x->unsent) {
            plink_push_info(L, "transport", curl_easy_strerror(x->rc), (int)x->rc, 0);
            lua_pushinteger(L, 0);
            lua_setfield(L, -2, "sends");
        }
        else
            plink_push_curl_info(L, x->rc, &x->resp);
        lua_setfield(L, -2, "err");
        return;
    }
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    lua_pushinteger(L, (lua_Integer)status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, x->resp.body.p ? x->resp.body.p : "", x->resp.body.len);
    lua_setfield(L, -2, "body");
    if (plink_http_want_headers(m->error_headers_only, status)) {
        plink_push_headers(L, &x->resp.hdr);
        lua_setfield(L, -2, "headers");
    }
    lua_pushinteger(L, x->resp.sends);
    lua_setfield(L, -2, "sends");
}

/* multi_report(m), under lua_pcall: the completions table, one table per
 * done transfer, each moved to X_REPORTED once its table is built. Stops
 * when a finalizer closed the handle (the transfers are still there: close
 * waits for `performing` to end). The caller recycles the reported
 * transfers when the call returns, or, when it raised (out of memory; on
 * 5.1 and LuaJIT also an error a finalizer raised), puts them back in
 * front of X_DONE: the table they were in is lost, so the next perform
 * reports them. */
static int multi_report(lua_State *L)
{
    multi_handle *m = (multi_handle *)lua_touserdata(L, 1);
    int n = 0;
    lua_createtable(L, (int)m->lists[X_DONE].n, 0);
    while (!m->closed && m->lists[X_DONE].head) {
        xfer *x = m->lists[X_DONE].head;
        multi_push_result(L, m, x);
        lua_rawseti(L, 2, ++n);
        xl_move(m, x, X_REPORTED);
    }
    return 1;
}

/* After multi_report: the reported transfers recycled (delivered), or put
 * back in front of X_DONE in their order (not delivered). */
static void multi_reported(multi_handle *m, int delivered)
{
    xlist *r = &m->lists[X_REPORTED], *d = &m->lists[X_DONE];
    xfer *x;
    if (delivered) {
        while ((x = r->head) != NULL)
            xfer_recycle(m, x);
        return;
    }
    if (!r->head)
        return;
    for (x = r->head; x; x = x->next)
        x->list = X_DONE;
    r->tail->next = d->head;
    if (d->head)
        d->head->prev = r->tail;
    else
        d->tail = r->tail;
    d->head = r->head;
    d->n += r->n;
    r->head = r->tail = NULL;
    r->n = 0;
}

/* m:perform([timeout_ms]): runs the transfers until at least one finishes,
 * none is left, or timeout_ms passed (0: one non-blocking step). */
static int multi_perform(lua_State *L)
{
    multi_handle *m = multi_check(L);
    lua_Number t = luaL_optnumber(L, 2, 0);
    double start, deadline;
    int still, batch, rc;

    luaL_argcheck(L, t >= 0, 2, "timeout must be >= 0 ms");
    if (m->closed || m->performing) {    /* performing: called by a finalizer */
        lua_newtable(L);
        lua_pushinteger(L, m->closed ? 0 : (lua_Integer)(m->lists[X_QUEUED].n
                                                         + m->lists[X_RUNNING].n));
        return 2;
    }
    /* No allocation (so no finalizer) from here to the protected call. */
    m->performing = 1;
    if (t > 86400000.0)
        t = 86400000.0;
    start = multi_now_ms();
    deadline = start + t;
    batch = m->budget_ms > 0 ? MULTI_START_BATCH : 0;
    for (;;) {
        double left;
        long due;
        multi_expire(m, 0);              /* never sent: not sent late */
        multi_start_queued(m, batch);
        curl_multi_perform(m->multi, &still);
        multi_collect(m);
        multi_expire(m, 1);              /* what had arrived was read */
        if (m->lists[X_DONE].n > 0 ||
            (m->lists[X_RUNNING].n == 0 && m->lists[X_QUEUED].n == 0))
            break;
        left = deadline - multi_now_ms();
        if (left < 1)
            break;
        if (batch && multi_can_start(m))
            continue;                    /* more to start before waiting */
        due = multi_deadline_ms(m);
        if (due >= 0 && due < left)
            left = (double)due;
        /* Returns early on socket activity or when libcurl's own timer is
         * due; the loop then decides whether to wait again. */
        curl_multi_poll(m->multi, NULL, 0, (int)left, NULL);
    }
    /* Keep the pipeline full: what waited for a slot starts now, not at the
     * next call; with a budget, a batch at a time while time is left (what
     * is left over starts in the next call: m:timeout() says 0). */
    while (m->lists[X_QUEUED].n > 0 &&
           (!batch || multi_now_ms() - start < m->budget_ms)) {
        if (!multi_start_queued(m, batch))
            break;
        curl_multi_perform(m->multi, &still);
        multi_collect(m);
        if (!batch)
            break;
    }
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));         /* multi_report */
    lua_pushvalue(L, 1);
    rc = lua_pcall(L, 1, 1, 0);                    /* 2: completions */
    m->performing = 0;
    if (m->closed)                       /* by a finalizer, while performing */
        multi_free(m);
    else
        multi_reported(m, rc == LUA_OK);
    if (rc != LUA_OK)
        return lua_error(L);
    if (m->closed) {                     /* close cancels what it interrupted */
        lua_newtable(L);
        lua_pushinteger(L, 0);
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)(m->lists[X_QUEUED].n + m->lists[X_RUNNING].n));
    return 2;
}

/* m:timeout(): how long an external loop may sleep before calling perform. */
static int multi_timeout(lua_State *L)
{
    multi_handle *m = multi_check(L);
    long ms = -1;
    if (m->closed) {
        lua_pushinteger(L, -1);
        return 1;
    }
    if (m->lists[X_DONE].n > 0 || multi_can_start(m)) {
        ms = 0;
    } else {
        long due = multi_deadline_ms(m);
        if (curl_multi_timeout(m->multi, &ms) != CURLM_OK)
            ms = -1;
        if (due >= 0 && (ms < 0 || due < ms))
            ms = due;
    }
    lua_pushinteger(L, (lua_Integer)ms);
    return 1;
}

/* m:fds(): the sockets libcurl waits on, for loops that watch fds. */
static int multi_fds(lua_State *L)
{
    multi_handle *m = multi_check(L);
    fd_set r, w, e;
    int maxfd = -1, fd, nr = 0, nw = 0;
    lua_newtable(L);
    lua_newtable(L);
    if (m->closed)
        return 2;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_ZERO(&e);
    if (curl_multi_fdset(m->multi, &r, &w, &e, &maxfd) != CURLM_OK)
        return 2;
    for (fd = 0; fd <= maxfd; fd++) {
        if (FD_ISSET(fd, &r)) {
            lua_pushinteger(L, fd);
            lua_rawseti(L, -3, ++nr);
        }
        if (FD_ISSET(fd, &w)) {
            lua_pushinteger(L, fd);
            lua_rawseti(L, -2, ++nw);
        }
    }
    return 2;
}

/* m:cancel(id) */
static int multi_cancel(lua_State *L)
{
    multi_handle *m = multi_check(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    int i;
    if (!m->closed) {
        for (i = X_QUEUED; i <= X_DONE; i++) {
            xfer *x;
            for (x = m->lists[i].head; x; x = x->next) {
                if (x->id != id)
                    continue;
                if (m->performing && x == m->lists[X_DONE].head)
                    goto reported;               /* being reported right now */
                if (i == X_RUNNING)
                    curl_multi_remove_handle(m->multi, x->easy);
                xfer_recycle(m, x);
                lua_pushboolean(L, 1);
                /* started: it may have been sent (and, done, answered) */
                lua_pushboolean(L, i != X_QUEUED);
                return 2;
            }
        }
    }
reported:
    lua_pushboolean(L, 0);
    return 1;
}

static int multi_info(lua_State *L)
{
    multi_handle *m = multi_check(L);
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, (lua_Integer)m->lists[X_QUEUED].n);
    lua_setfield(L, -2, "queued");
    lua_pushinteger(L, (lua_Integer)m->lists[X_RUNNING].n);
    lua_setfield(L, -2, "in_flight");
    lua_pushinteger(L, (lua_Integer)m->lists[X_DONE].n);
    lua_setfield(L, -2, "done");
    lua_pushinteger(L, (lua_Integer)m->lists[X_POOL].n);
    lua_setfield(L, -2, "pooled");
    lua_pushinteger(L, (lua_Integer)(m->closed ? 0 : multi_count_opening(m)));
    lua_setfield(L, -2, "opening");
    lua_pushinteger(L, (lua_Integer)m->sockets);
    lua_setfield(L, -2, "sockets");
    lua_pushinteger(L, (lua_Integer)m->connects);
    lua_setfield(L, -2, "connections");
    lua_pushinteger(L, (lua_Integer)m->max_concurrent);
    lua_setfield(L, -2, "max_concurrent");
    lua_pushboolean(L, m->closed);
    lua_setfield(L, -2, "closed");
    return 1;
}

static int multi_connections(lua_State *L)
{
    multi_handle *m = multi_check(L);
    lua_pushinteger(L, (lua_Integer)m->connects);
    return 1;
}

/* close and __close: while perform runs, it frees the handle itself. */
static int multi_close(lua_State *L)
{
    multi_handle *m = multi_check(L);
    m->closed = 1;
    if (!m->performing)
        multi_free(m);
    return 0;
}

/* __gc: nothing can be using the handle any more. */
static int multi_gc(lua_State *L)
{
    multi_free(multi_check(L));
    return 0;
}

static int multi_tostring(lua_State *L)
{
    multi_handle *m = multi_check(L);
    lua_pushfstring(L, "portone.link.http_multi (%s)", m->closed ? "closed" : "open");
    return 1;
}

static const luaL_Reg multi_methods[] = {
    { "add", multi_add },
    { "fresh", multi_fresh },
    { "timeout", multi_timeout },
    { "fds", multi_fds },
    { "cancel", multi_cancel },
    { "info", multi_info },
    { "connections", multi_connections },
    { "close", multi_close },
    { "__tostring", multi_tostring },
    { NULL, NULL }
};

/* core.monotonic(): seconds on a clock that never jumps (for retry timers). */
static int multi_monotonic(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)(multi_now_ms() / 1000.0));
    return 1;
}

void plink_http_multi_open(lua_State *L)
{
    plink_setmeta(L, MULTI_MT, multi_methods, multi_gc, multi_close);
    luaL_getmetatable(L, MULTI_MT);
    lua_pushcfunction(L, multi_report);
    lua_pushcclosure(L, multi_perform, 1);
    lua_setfield(L, -2, "perform");
    lua_pop(L, 1);
    lua_pushcfunction(L, multi_new);
    lua_setfield(L, -2, "multi_new");
    lua_pushcfunction(L, multi_monotonic);
    lua_setfield(L, -2, "monotonic");
}
