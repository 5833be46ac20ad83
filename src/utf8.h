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

/* A short English phrase for a result code ("overlong encoding", ...). */
const char *plink_utf8_what(int code);

#endif
