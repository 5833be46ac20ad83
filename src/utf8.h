/* utf8.h - UTF-8 validation and code point counting for request strings.
 *
 * Strict RFC 3629: overlong forms, surrogates (U+D800..U+DFFF), code points
 * above U+10FFFF, truncated sequences and stray continuation bytes are all
 * rejected. With PLINK_UTF8_NOCTRL, control characters are rejected as well:
 * C0 (U+0000..U+001F), DEL (U+007F) and C1 (U+0080..U+009F) - every code
 * point of Unicode category Cc. Request fields use that flag; custom_data
 * strings do not (JSON can carry them escaped).
 */
#ifndef PLINK_UTF8_H
#define PLINK_UTF8_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PLINK_UTF8_NOCTRL 1

enum {
    PLINK_UTF8_OK = 0,
    PLINK_UTF8_BADBYTE,     /* stray continuation byte, or 0xF8..0xFF */
    PLINK_UTF8_OVERLONG,    /* C0, C1, E0 80..9F, F0 80..8F */
    PLINK_UTF8_SURROGATE,   /* ED A0..BF */
    PLINK_UTF8_TOOBIG,      /* above U+10FFFF */
    PLINK_UTF8_TRUNCATED,   /* sequence cut short (end, or a non-continuation) */
    PLINK_UTF8_CONTROL      /* control character, with PLINK_UTF8_NOCTRL */
};

typedef struct plink_utf8_info {
    size_t chars;      /* code points (up to the error, if any) */
    size_t esc;        /* bytes a JSON string escapes: '"', '\\', < 0x20 */
    size_t offset;     /* byte offset of the bad sequence */
    unsigned long cp;  /* the control character found, for CONTROL */
} plink_utf8_info;

/* Returns PLINK_UTF8_OK or the first problem; fills *info either way.
 * One pass does the checking, the counting and tells the writer whether
 * the string can be copied as it is (esc == 0), which most can. */
int plink_utf8_scan(const char *s, size_t n, int flags, plink_utf8_info *info);

/* Nonzero when one of the 8 bytes of w is >= 0x80, < 0x20, '"', '\\' or
 * (noctrl) 0x7F: the bytes a scan must look at one by one. Each test is
 * the exact "some byte is zero / below n" bit trick, so a zero means none
 * (a borrow can only mark bytes above a byte that is marked already). */
static inline uint64_t plink_utf8_special8(uint64_t w, int noctrl)
{
    const uint64_t ones = 0x0101010101010101ULL;
    uint64_t q = w ^ (0x22ULL * ones), b = w ^ (0x5cULL * ones);
    uint64_t m = w | ((w - 0x20ULL * ones) & ~w);             /* >= 0x80, < 0x20 */
    m |= (q - ones) & ~q;                                     /* '"' */
    m |= (b - ones) & ~b;                                     /* '\\' */
    if (noctrl) {
        uint64_t del = w ^ (0x7fULL * ones);
        m |= (del - ones) & ~del;                             /* 0x7F */
    }
    return m & 0x8080808080808080ULL;
}

/* How many leading bytes of s are known plain (printable ASCII other than
 * '"' and '\\', and not DEL with PLINK_UTF8_NOCTRL): n when all are, which
 * is what most strings are, found a word at a time (the last word
 * overlapping the one before, short strings in one word) with no call and
 * no per-byte work. Otherwise a multiple of 8 at or before the first byte
 * that is not plain, where plink_utf8_scan_from picks up. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline size_t plink_utf8_plain(const char *s, size_t n, int flags)
{
    int noctrl = flags & PLINK_UTF8_NOCTRL;
    uint64_t w;
    size_t k;
    if (n && (unsigned char)s[0] >= 0x80)
        return 0;       /* Hangul and the like: straight to the scan */
    if (n >= 8) {
        for (k = 0; k + 8 <= n; k += 8) {
            memcpy(&w, s + k, 8);
            if (plink_utf8_special8(w, noctrl))
                return k;
        }
        if (k == n)
            return n;
        memcpy(&w, s + n - 8, 8);
        return plink_utf8_special8(w, noctrl) ? k : n;
    }
    if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        w = (uint64_t)a | (uint64_t)b << 32;
    } else {
        /* the missing bytes read as 'a' */
        if (n == 0)
            return 0;
        w = 0x6161616161000000ULL | (unsigned char)s[0]
            | (uint64_t)(unsigned char)s[n >> 1] << 8 | (uint64_t)(unsigned char)s[n - 1] << 16;
    }
    return plink_utf8_special8(w, noctrl) ? 0 : n;
}

/* plink_utf8_scan when the first `plain` bytes (a plink_utf8_plain
 * result) are known plain already. */
int plink_utf8_scan_from(const char *s, size_t n, size_t plain, int flags,
                         plink_utf8_info *info);

/* A short English phrase for a result code ("overlong encoding", ...). */
const char *plink_utf8_what(int code);

#endif
