/* utf8.c - strict UTF-8 scan (see utf8.h). ASCII runs take the fast path,
 * eight bytes at a time. */
#include <stdint.h>
#include <string.h>
#include "utf8.h"

#define U8_ONES  0x0101010101010101ULL
#define U8_HIGHS 0x8080808080808080ULL

/* Nonzero when one of the 8 bytes of w is >= 0x80, < 0x20, '"', '\\' or
 * (noctrl) 0x7F: that block needs the byte-by-byte path. Each test is the
 * exact "some byte is zero / below n" bit trick, so a zero means none. */
static uint64_t u8_special(uint64_t w, int noctrl)
{
    uint64_t q = w ^ (0x22ULL * U8_ONES), b = w ^ (0x5cULL * U8_ONES);
    uint64_t m = w | ((w - 0x20ULL * U8_ONES) & ~w);          /* >= 0x80, < 0x20 */
    m |= (q - U8_ONES) & ~q;                                  /* '"' */
    m |= (b - U8_ONES) & ~b;                                  /* '\\' */
    if (noctrl) {
        uint64_t del = w ^ (0x7fULL * U8_ONES);
        m |= (del - U8_ONES) & ~del;                          /* 0x7F */
    }
    return m & U8_HIGHS;
}

int plink_utf8_scan(const char *str, size_t n, int flags, plink_utf8_info *info)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, chars = 0, esc = 0;
    int noctrl = flags & PLINK_UTF8_NOCTRL;
    int rc = PLINK_UTF8_OK;
    unsigned long cp = 0;

    while (i < n) {
        unsigned char c;
        size_t need, k;
        unsigned long min;
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (u8_special(w, noctrl))
                break;
            i += 8;
            chars += 8;
        }
        if (i >= n)
            break;
        c = s[i];
        if (c < 0x80) {
            if (noctrl && (c < 0x20 || c == 0x7f)) {
                cp = c;
                rc = PLINK_UTF8_CONTROL;
                break;
            }
            if (c < 0x20 || c == '"' || c == '\\')
                esc++;
            i++;
            chars++;
            continue;
        }
        if (c < 0xc0) { rc = PLINK_UTF8_BADBYTE; break; }
        if (c < 0xe0) { need = 1; cp = c & 0x1f; min = 0x80; }
        else if (c < 0xf0) { need = 2; cp = c & 0x0f; min = 0x800; }
        else if (c < 0xf8) { need = 3; cp = c & 0x07; min = 0x10000; }
        else { rc = PLINK_UTF8_BADBYTE; break; }
        for (k = 1; k <= need; k++) {
            if (i + k >= n || (s[i + k] & 0xc0) != 0x80) {
                rc = PLINK_UTF8_TRUNCATED;
                break;
            }
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (rc)
            break;
        if (cp < min) { rc = PLINK_UTF8_OVERLONG; break; }
        if (cp >= 0xd800 && cp <= 0xdfff) { rc = PLINK_UTF8_SURROGATE; break; }
        if (cp > 0x10ffff) { rc = PLINK_UTF8_TOOBIG; break; }
        if (noctrl && cp <= 0x9f) { rc = PLINK_UTF8_CONTROL; break; }
        i += need + 1;
        chars++;
    }
    info->chars = chars;
    info->esc = esc;
    info->offset = i;
    info->cp = cp;
    return rc;
}

const char *plink_utf8_what(int code)
{
    switch (code) {
    case PLINK_UTF8_BADBYTE:   return "unexpected byte";
    case PLINK_UTF8_OVERLONG:  return "overlong encoding";
    case PLINK_UTF8_SURROGATE: return "UTF-16 surrogate";
    case PLINK_UTF8_TOOBIG:    return "code point above U+10FFFF";
    case PLINK_UTF8_TRUNCATED: return "truncated sequence";
    case PLINK_UTF8_CONTROL:   return "control character";
    default:                   return "ok";
    }
}
