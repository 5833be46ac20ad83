/* bench/raw_curl.c - the limit for bench-http: the same POSTs client:create
 * makes, on one raw libcurl easy handle (keep-alive), nothing else.
 *
 *   raw_curl URL BODY_FILE HEADERS_FILE [CAINFO]
 *
 * HEADERS_FILE holds one request header a line (the bench writes either
 * only Content-Type, or exactly the client's headers). One untimed request
 * opens the connection, then it prints "ready". After that each line read
 * from stdin is a count N: it makes N requests on the same connection and
 * prints "seconds=S cpu=C status=CODE" (wall and process CPU time of the
 * N), until end of input. The process lives for the whole bench, so its
 * rounds can be as short as the client's and interleave with them.
 * Exits 1 on any failure or non-2xx answer.
 * With PLINK_EVICT set (bench/cold.lua), it writes over a 4 MB buffer
 * before each request, so each one starts from cold caches.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>

static size_t sink(char *p, size_t s, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return s * n;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

static double now(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* bench/cold.lua: a separate function, so the model can leave it out */
static volatile unsigned char *evict_buf;
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void evict(void)
{
    unsigned i;
    if (!evict_buf && !(evict_buf = calloc(1, 4u << 20)))
        return;
    for (i = 0; i < (4u << 20); i += 64)
        evict_buf[i] = (unsigned char)(evict_buf[i] + 1);
}

/* n POSTs on c; 0, or 1 after the first failure or non-2xx answer */
static int post(CURL *c, long n, long *status, int cold)
{
    long i;
    for (i = 0; i < n; i++) {
        CURLcode rc;
        if (cold)
            evict();
        rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
        if (rc != CURLE_OK || *status < 200 || *status > 299) {
            fprintf(stderr, "raw_curl: %s, HTTP %ld\n", curl_easy_strerror(rc), *status);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    size_t blen = 0, hlen = 0;
    char *body, *hdrs, *line, *save = NULL;
    struct curl_slist *list = NULL;
    long n, status = 0;
    char cmd[64];
    int cold = getenv("PLINK_EVICT") != NULL;
    CURL *c;

    if (argc < 4) {
        fprintf(stderr, "usage: raw_curl URL BODY_FILE HEADERS_FILE [CAINFO]\n");
        return 2;
    }
    body = slurp(argv[2], &blen);
    hdrs = slurp(argv[3], &hlen);
    if (!body || !hdrs)
        return 2;
    for (line = strtok_r(hdrs, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        list = curl_slist_append(list, line);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, argv[1]);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (argc > 4 && argv[4][0])
        curl_easy_setopt(c, CURLOPT_CAINFO, argv[4]);

    if (post(c, 1, &status, 0) != 0)
        return 1;
    printf("ready\n");
    fflush(stdout);
    while (fgets(cmd, sizeof cmd, stdin) && (n = atol(cmd)) > 0) {
        double t0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        if (post(c, n, &status, cold) != 0)
            return 1;
        printf("seconds=%.6f cpu=%.6f status=%ld\n", now(CLOCK_MONOTONIC) - t0,
               now(CLOCK_PROCESS_CPUTIME_ID) - c0, status);
        fflush(stdout);
    }
    curl_easy_cleanup(c);
    curl_slist_free_all(list);
    curl_global_cleanup();
    free(body);
    free(hdrs);
    return 0;
}
