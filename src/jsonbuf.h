/* jsonbuf.h - a growable byte buffer and the JSON writers that fill it.
 *
 * The buffers used by the codec live inside a Lua userdata (see codec.c), so
 * plink_buf_grow may raise a Lua memory error: the memory stays reachable
 * from that userdata and its __gc frees it. Nothing here holds memory of
 * its own across a call.
 *
 * `off` turns a buffer into a counter: validate-only runs, and an encode
 * that has already found an error, skip the writing but keep the same code
 * path, and `len` still counts the bytes the body would have (the size cap
 * is checked the same way in both).
 */
#ifndef PLINK_JSONBUF_H
#define PLINK_JSONBUF_H

#include <stddef.h>
#include <string.h>
#include "compat.h"

typedef struct plink_buf {
    char *p;
    size_t len, cap;
    int off;             /* 1: appends are only counted in len */
} plink_buf;

void plink_buf_free(plink_buf *b);

/* Makes room for n more bytes; returns where they go. Raises on OOM. */
char *plink_buf_grow(lua_State *L, plink_buf *b, size_t n);

/* memcpy for the short strings a body is made of, without the call: two
 * overlapping loads and stores cover 4..16 bytes, four 16..32 (the keys
 * and most values; Hangul takes three bytes a character). */
static inline void plink_copy(char *d, const char *s, size_t n)
{
    if (n >= 8 && n <= 16) {
        unsigned long long a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n > 16 && n <= 32) {
        unsigned long long a, b, e, f;
        memcpy(&a, s, 8);
        memcpy(&b, s + 8, 8);
        memcpy(&e, s + n - 16, 8);
        memcpy(&f, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + 8, &b, 8);
        memcpy(d + n - 16, &e, 8);
        memcpy(d + n - 8, &f, 8);
    } else if (n >= 4 && n < 8) {
        unsigned int a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else if (n < 4) {
        size_t i;
        for (i = 0; i < n; i++)
            d[i] = s[i];
    } else {
        memcpy(d, s, n);
    }
}

static inline void plink_buf_add(lua_State *L, plink_buf *b,
                                 const char *s, size_t n)
{
    if (b->off) {
        b->len += n;
        return;
    }
    if (b->cap - b->len < n)
        plink_buf_grow(L, b, n);
    plink_copy(b->p + b->len, s, n);
    b->len += n;
}

/* Room for n more bytes at the end of b (as plink_buf_grow), without the
 * call when there is room already: the common case of a reused buffer. */
static inline char *plink_buf_room(lua_State *L, plink_buf *b, size_t n)
{
    if (b->cap - b->len < n)
        return plink_buf_grow(L, b, n);
    return b->p + b->len;
}

static inline void plink_buf_addc(lua_State *L, plink_buf *b, char ch)
{
    if (b->off) {
        b->len++;
        return;
    }
    if (b->cap == b->len)
        plink_buf_grow(L, b, 1);
    b->p[b->len++] = ch;
}

/* n <= 24 bytes from s, where 24 can be read: one fixed-size copy (three
 * word moves) instead of a copy by length; the bytes past n are
 * overwritten by what comes next. */
static inline void plink_buf_add24(lua_State *L, plink_buf *b,
                                   const char *s, size_t n)
{
    if (b->off) {
        b->len += n;
        return;
    }
    if (b->cap - b->len < 24)
        plink_buf_grow(L, b, 24);
    memcpy(b->p + b->len, s, 24);
    b->len += n;
}

#define plink_buf_addlit(L, b, lit) plink_buf_add((L), (b), "" lit, sizeof(lit) - 1)

/* The string "s" as it reads inside another JSON string, quotes included:
 * first the escapes of RFC 8259 ('"', '\' and U+0000..U+001F escaped as
 * \b \f \n \r \t or \u00XX; '/' and every byte >= 0x20 verbatim, so valid
 * UTF-8 passes unchanged; the caller checks the UTF-8), then escaped once
 * more (quote -> \", '"' -> \\\", newline -> \\n ...). Writing payment_info
 * this way gives the same bytes as writing it and then escaping the whole
 * text, in one pass. */
void plink_buf_addstring2(lua_State *L, plink_buf *b, const char *s, size_t n);

/* Its length: what plink_buf_addstring2 would add. */
size_t plink_buf_len2(const char *s, size_t n);

/* The same for a string the caller knows needs no escape (no '"', '\\'
 * or byte < 0x20): \" s \" copied in one go. */
static inline void plink_buf_addplain2(lua_State *L, plink_buf *b,
                                       const char *s, size_t n)
{
    char *w;
    if (b->off) {
        b->len += n + 4;
        return;
    }
    w = b->cap - b->len < n + 4 ? plink_buf_grow(L, b, n + 4) : b->p + b->len;
    w[0] = '\\';
    w[1] = '"';
    plink_copy(w + 2, s, n);
    w[n + 2] = '\\';
    w[n + 3] = '"';
    b->len += n + 4;
}

/* Every digit of v, never an exponent. */
void plink_buf_addint(lua_State *L, plink_buf *b, long long v);

/* A finite double with the fewest of 15/16/17 significant digits that reads
 * back to the same value; the decimal point is '.' whatever the C locale. */
void plink_buf_addfloat(lua_State *L, plink_buf *b, double d);

#endif
