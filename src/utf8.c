/* utf8.c - strict UTF-8 scan (see utf8.h). ASCII runs take the fast path,
 * eight bytes at a time. */
#include <stdint.h>
#include <string.h>
#include "utf8.h"

/* Byte k of the 8 bytes at s + i loaded into w, and the shape of two
 * 3-byte sequences (1110xxxx 10xxxxxx 10xxxxxx, twice) in the low six. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define u8_byte(w, k) ((unsigned)((w) >> (56 - 8 * (k))) & 0xff)
#define U8_SHAPE2_MASK 0xf0c0c0f0c0c00000ULL
#define U8_SHAPE2      0xe08080e080800000ULL
#else
#define u8_byte(w, k) ((unsigned)((w) >> (8 * (k))) & 0xff)
#define U8_SHAPE2_MASK 0x0000c0c0f0c0c0f0ULL
#define U8_SHAPE2      0x00008080e08080e0ULL
#endif

/* byte classes for the per-character path */
enum { U8_PLAIN, U8_ESC, U8_CTRL, U8_DEL, U8_LEAD2, U8_LEAD3, U8_OTHER };
static const unsigned char u8_class[256] = {
#define C8(x) x, x, x, x, x, x, x, x
#define C16(x) C8(x), C8(x)
    C16(U8_CTRL), C16(U8_CTRL),                               /* 00-1F */
    0, 0, U8_ESC, 0, 0, 0, 0, 0, C8(0),                       /* 20-2F */
    C16(0),                                                   /* 30-3F */
    C16(0),                                                   /* 40-4F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, U8_ESC, 0, 0, 0,      /* 50-5F */
    C16(0),                                                   /* 60-6F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, U8_DEL,      /* 70-7F */
    C16(U8_OTHER), C16(U8_OTHER), C16(U8_OTHER), C16(U8_OTHER), /* 80-BF */
    U8_OTHER, U8_OTHER, 0 + U8_LEAD2, U8_LEAD2, U8_LEAD2, U8_LEAD2,
    U8_LEAD2, U8_LEAD2, C8(U8_LEAD2),                         /* C0-CF */
    C16(U8_LEAD2),                                            /* D0-DF */
    C16(U8_LEAD3),                                            /* E0-EF */
    C16(U8_OTHER)                                             /* F0-FF */
#undef C16
#undef C8
};

/* The sequence at s[i] the hard way: the code point, or what is wrong. */
static int u8_general(const unsigned char *s, size_t n, size_t i, int noctrl,
                      size_t *len, unsigned long *cpp)
{
    unsigned char c = s[i];
    size_t need, k;
    unsigned long min, cp;
    if (c < 0x80) {
        *cpp = c;
        return PLINK_UTF8_CONTROL;          /* only controls come here */
    }
    if (c < 0xc0) return PLINK_UTF8_BADBYTE;
    if (c < 0xe0) { need = 1; cp = c & 0x1f; min = 0x80; }
    else if (c < 0xf0) { need = 2; cp = c & 0x0f; min = 0x800; }
    else if (c < 0xf8) { need = 3; cp = c & 0x07; min = 0x10000; }
    else return PLINK_UTF8_BADBYTE;
    for (k = 1; k <= need; k++) {
        if (i + k >= n || (s[i + k] & 0xc0) != 0x80)
            return PLINK_UTF8_TRUNCATED;
        cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    *cpp = cp;
    if (cp < min) return PLINK_UTF8_OVERLONG;
    if (cp >= 0xd800 && cp <= 0xdfff) return PLINK_UTF8_SURROGATE;
    if (cp > 0x10ffff) return PLINK_UTF8_TOOBIG;
    if (noctrl && cp <= 0x9f) return PLINK_UTF8_CONTROL;
    *len = need + 1;
    return PLINK_UTF8_OK;
}

int plink_utf8_scan(const char *s, size_t n, int flags, plink_utf8_info *info)
{
    return plink_utf8_scan_from(s, n, 0, flags, info);
}

/* 1 when the 3-byte sequence led by c (E0..EF, continuations checked)
 * whose first continuation is c1 is overlong (E0 80..9F) or a surrogate
 * (ED A0..BF): bit (c & 15) * 2 + (c1 >= A0) of a mask. */
#define u8_bad3(c, c1) ((0x08000001u >> ((((c) & 15u) << 1) | (((c1) >> 5) & 1u))) & 1u)

/* u8_bad3 of the sequence at byte k of w: on little-endian machines
 * two compares of the lead and the first continuation's bit 5 */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define u8_bad3at(w, k) u8_bad3(u8_byte((w), (k)), u8_byte((w), (k) + 1))
#else
#define u8_bad3at(w, k) (((((w) >> 8 * (k)) & 0x20ff) == 0x20ed) \
                         | ((((w) >> 8 * (k)) & 0x20ff) == 0x00e0))
#endif

int plink_utf8_scan_from(const char *str, size_t n, size_t plain, int flags,
                         plink_utf8_info *info)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = plain, chars = plain, esc = 0;
    int noctrl = flags & PLINK_UTF8_NOCTRL;
    int rc = PLINK_UTF8_OK;
    unsigned long cp = 0;
    uint64_t w;

    while (i < n) {
        unsigned char c = s[i];
        if (c >= 0x80) {
            /* Hangul and most scripts: 3-byte sequences, two at a time
             * while eight bytes can be read (lead, cont, cont, lead,
             * cont, cont in the low six), then one */
            while (n - i >= 8) {
                memcpy(&w, s + i, 8);
                if ((w & U8_SHAPE2_MASK) != U8_SHAPE2)
                    break;
                /* leads E1..EC (most of Hangul) need no more checks */
                if (((u8_byte(w, 0) - 0xe1) | (u8_byte(w, 3) - 0xe1)) >= 12
                    && (u8_bad3at(w, 0) || u8_bad3at(w, 3)))
                    break;
                i += 6;
                chars += 2;
            }
            if (i == n)
                break;
            c = s[i];
            if ((c & 0xf0) == 0xe0 && n - i >= 3
                && ((s[i + 1] & 0xc0) | ((s[i + 2] & 0xc0) >> 2)) == 0xa0
                && ((unsigned)(c - 0xe1) < 12 || !u8_bad3(c, s[i + 1]))) {
                i += 3;
                chars++;
                continue;
            }
            if (c < 0x80)
                continue;           /* the pairs ended at ASCII */
        } else if (n - i >= 8 && s[i + 7] < 0x80) {    /* eight plain bytes at once */
            memcpy(&w, s + i, 8);
            if (!plink_utf8_special8(w, noctrl)) {
                i += 8;
                chars += 8;
                continue;
            }
        }
        /* one character the slow way */
        switch (u8_class[c]) {
        case U8_PLAIN:
            i++;
            break;
        case U8_ESC:
            esc++;
            i++;
            break;
        case U8_CTRL:
            if (noctrl)
                goto general;
            esc++;
            i++;
            break;
        case U8_DEL:
            if (noctrl)
                goto general;
            i++;
            break;
        case U8_LEAD2:
            if (n - i >= 2 && (s[i + 1] & 0xc0) == 0x80
                && !(noctrl && c == 0xc2 && s[i + 1] < 0xa0)) {
                i += 2;
                break;
            }
            goto general;
        default:
        general: {
            size_t len = 0;
            rc = u8_general(s, n, i, noctrl, &len, &cp);
            if (rc)
                goto done;
            i += len;
            break;
        }
        }
        chars++;
    }
done:
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
