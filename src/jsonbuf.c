/* jsonbuf.c - growable buffer and JSON scalar writers (see jsonbuf.h). */
#include <stdint.h>
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

/* bytes the double escape adds: \\\u00XX +6, \\\n +2, \\\" and \\\\ +3 */
static const unsigned char jb_extra2[256] = {
    6, 6, 6, 6, 6, 6, 6, 6, 2, 2, 2, 6, 2, 2, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0,
};

static size_t jb_extra(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *e = p + n;
    size_t extra = 0;
    for (; p < e; p++)
        extra += jb_extra2[*p];
    return extra;
}

size_t plink_buf_len2(const char *s, size_t n)
{
    return n + jb_extra(s, n) + 4;
}

void plink_buf_addstring2(lua_State *L, plink_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p, *e = (const unsigned char *)s + n;
    size_t extra = jb_extra(s, n);
    char *w;
    if (b->off) {
        b->len += n + extra + 4;
        return;
    }
    if (extra > ((size_t)-1) / 2 - n)
        luaL_error(L, "portone.link: string too large");
    w = plink_buf_grow(L, b, n + extra + 4);
    *w++ = '\\';
    *w++ = '"';
    if (extra == 0) {
        memcpy(w, s, n);
        w += n;
    } else {
        for (p = (const unsigned char *)s; p < e; p++) {
            unsigned char ch = *p;
            char x = jb_esc[ch];
            if (!x) {
                *w++ = (char)ch;
            } else if (x == '"' || x == '\\') {
                *w++ = '\\'; *w++ = '\\'; *w++ = '\\'; *w++ = x;
            } else if (x != 'u') {
                *w++ = '\\'; *w++ = '\\'; *w++ = x;
            } else {
                *w++ = '\\'; *w++ = '\\'; *w++ = 'u'; *w++ = '0'; *w++ = '0';
                *w++ = hex[ch >> 4]; *w++ = hex[ch & 15];
            }
        }
    }
    *w++ = '\\';
    *w++ = '"';
    b->len += n + extra + 4;
}

static const char jb_digits2[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

void plink_buf_addint(lua_State *L, plink_buf *b, long long v)
{
    char tmp[24];
    char *e = tmp + sizeof tmp, *w = e;
    unsigned long long u;
    u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    if (b->off) {      /* only the length counts */
        size_t k = v < 0 ? 2 : 1;
        while (u >= 10) {
            u /= 10;
            k++;
        }
        b->len += k;
        return;
    }
    /* two digits a division, in 32 bits once the rest fits (most
     * numbers: a cheaper division) */
    while (u > 0xffffffffULL) {
        unsigned d = (unsigned)(u % 100) * 2;
        u /= 100;
        *--w = jb_digits2[d + 1];
        *--w = jb_digits2[d];
    }
    {
        uint32_t u32 = (uint32_t)u;
        while (u32 >= 100) {
            unsigned d = (unsigned)(u32 % 100) * 2;
            u32 /= 100;
            *--w = jb_digits2[d + 1];
            *--w = jb_digits2[d];
        }
        if (u32 >= 10) {
            unsigned d = (unsigned)u32 * 2;
            *--w = jb_digits2[d + 1];
            *--w = jb_digits2[d];
        } else {
            *--w = (char)('0' + (int)u32);
        }
    }
    if (v < 0)
        *--w = '-';
    plink_buf_add(L, b, w, (size_t)(e - w));
}

void plink_buf_addfloat(lua_State *L, plink_buf *b, double d)
{
    char tmp[64], out[64];
    int prec;
    size_t i, o = 0;
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
