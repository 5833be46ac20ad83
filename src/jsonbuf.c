/* jsonbuf.c - growable buffer and JSON scalar writers (see jsonbuf.h). */
#include <stdio.h>
#include <stdlib.h>
#include "jsonbuf.h"

void plink_buf_free(plink_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

char *plink_buf_grow(lua_State *L, plink_buf *b, size_t n)
{
    if (b->cap - b->len < n) {
        size_t need, cap;
        char *np;
        if (n > ((size_t)-1) / 4 - b->len)
            luaL_error(L, "portone.link: buffer too large");
        need = b->len + n;
        cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap *= 2;
        np = realloc(b->p, cap);
        if (!np)
            luaL_error(L, "not enough memory");
        b->p = np;
        b->cap = cap;
    }
    return b->p + b->len;
}

/* 0: copy verbatim; otherwise the character after the backslash, 'u' for
 * \u00XX. */
static const char jb_esc[256] = {
    'u','u','u','u','u','u','u','u','b','t','n','u','f','r','u','u',
    'u','u','u','u','u','u','u','u','u','u','u','u','u','u','u','u',
    0, 0, '"', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '\\', 0, 0, 0,
    /* the rest are zero */
};

void plink_buf_addescaped(lua_State *L, plink_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0, run;
    if (b->off)
        return;
    /* worst case 6 bytes out per byte in; grow once for the common case */
    plink_buf_grow(L, b, n + 16);
    while (i < n) {
        unsigned char ch;
        run = i;
        while (run < n && !jb_esc[(unsigned char)s[run]])
            run++;
        if (run > i) {
            plink_buf_add(L, b, s + i, run - i);
            i = run;
            if (i == n)
                break;
        }
        ch = (unsigned char)s[i++];
        {
            char *w = plink_buf_grow(L, b, 6);
            char e = jb_esc[ch];
            w[0] = '\\';
            if (e != 'u') {
                w[1] = e;
                b->len += 2;
            } else {
                w[1] = 'u'; w[2] = '0'; w[3] = '0';
                w[4] = hex[ch >> 4]; w[5] = hex[ch & 15];
                b->len += 6;
            }
        }
    }
}

void plink_buf_addstring(lua_State *L, plink_buf *b, const char *s, size_t n)
{
    if (b->off)
        return;
    plink_buf_addc(L, b, '"');
    plink_buf_addescaped(L, b, s, n);
    plink_buf_addc(L, b, '"');
}

void plink_buf_addint(lua_State *L, plink_buf *b, long long v)
{
    char tmp[24];
    char *e = tmp + sizeof tmp, *w = e;
    unsigned long long u;
    if (b->off)
        return;
    u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--w = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    if (v < 0)
        *--w = '-';
    plink_buf_add(L, b, w, (size_t)(e - w));
}

void plink_buf_addfloat(lua_State *L, plink_buf *b, double d)
{
    char tmp[64], out[64];
    int prec;
    size_t i, o = 0;
    if (b->off)
        return;
    for (prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        /* strtod reads the same locale snprintf wrote */
        if (strtod(tmp, NULL) == d)
            break;
    }
    /* Whatever the locale's decimal point is (one byte or several), it
     * becomes '.'. */
    for (i = 0; tmp[i] && o < sizeof out - 1; i++) {
        char ch = tmp[i];
        if ((ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == 'e'
            || ch == 'E') {
            out[o++] = ch;
        } else if (o == 0 || out[o - 1] != '.') {
            out[o++] = '.';
        }
    }
    plink_buf_add(L, b, out, o);
}
