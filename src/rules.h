/* rules.h - THE table of field descriptors for a payment-link request.
 *
 * Three schemas share one descriptor type: the request (payment_info fields
 * plus the expiry, which travels outside payment_info), one pay_methods
 * entry, and direct. codec.c walks them generically; every rule of DESIGN §1
 * is data here, or a format function named by the descriptor.
 *
 * Descriptor order is the wire order of the keys and the order of the
 * errors. The two members of an "exactly one of" pair (pg / channelKey,
 * expired_at / expire_at) are adjacent, PLINK_F_GROUP1 then PLINK_F_GROUP2.
 */
#ifndef PLINK_RULES_H
#define PLINK_RULES_H

#include <stddef.h>

enum plink_kind {
    PLINK_K_STRING,     /* UTF-8 text, no control characters */
    PLINK_K_INTEGER,    /* integer in [min, max]; an integral float is fine */
    PLINK_K_JSON,       /* any JSON value (custom_data) */
    PLINK_K_LIST,       /* array 1..n of objects of schema `sub` */
    PLINK_K_OBJECT,     /* object of schema `sub` */
    PLINK_K_EXPIRY      /* unix seconds or RFC 3339 string, > now */
};

#define PLINK_F_REQUIRED   0x01  /* absent -> required */
#define PLINK_F_GROUP1     0x02  /* first of an exactly-one-of pair */
#define PLINK_F_GROUP2     0x04  /* second of the pair (the field before) */
#define PLINK_F_OUTER      0x08  /* not written into payment_info */
#define PLINK_F_LE_AMOUNT  0x10  /* integer must not exceed `amount` */
#define PLINK_F_AMOUNT     0x20  /* this is the amount the above refers to */
#define PLINK_F_DUPKEY     0x40  /* part of the no-duplicates key of a list */
#define PLINK_F_ASCII      0x80  /* what its format accepts is printable ASCII
                                    with no '"' or '\\': no UTF-8 scan needed */

/* Returns NULL when s is fine, else a message ("must be ..."). */
typedef const char *(*plink_format_fn)(const char *s, size_t n);

struct plink_schema;

/* What every walk of a field reads comes first, in one 64-byte cache line
 * (the struct is aligned to it): flags, kind, lengths, the wire name and
 * the checks of strings. The name, the integer bounds and the enum text
 * (integers, errors) come after. Each request misses these lines (the
 * sandbox runs between any two requests in bench-http): a field in two
 * lines cost one more miss. rules.c fills it with designated
 * initializers. */
/* room for ,\"name\": padded with zeros: the writer copies it in whole
 * words (PLINK_WIRE_COPY bytes from wire or wire + 1), names of up to
 * PLINK_WIRE_COPY - 6 bytes (checked at load) */
#define PLINK_WIRE_COPY 24
#define PLINK_WIRE_SIZE 32

typedef struct plink_field {
    unsigned char flags;         /* PLINK_F_* */
    unsigned char kind;          /* enum plink_kind */
    unsigned char namelen;
    unsigned short maxlen;       /* strings: max code points, 0 = no cap */
    char wire[PLINK_WIRE_SIZE];  /* ,\"name\": as it reads in the body */
    plink_format_fn format;      /* NULL or a checker */
    const char *const *choices;  /* enum values, NULL-terminated, or NULL */
    const struct plink_schema *sub;
    const char *name;
    long long min, max;          /* integers */
    const char *choices_text;    /* "ko, en" for the message */
}
#if defined(__GNUC__)
__attribute__((aligned(64)))
#endif
plink_field;

typedef struct plink_schema {
    const plink_field *fields;
    int nfields;
    int base;     /* number of the first field among all schemas (0-based) */
    int id;       /* index in plink_schemas */
} plink_schema;

/* All schemas' fields, numbered base + index: codec.c keeps their names as
 * interned Lua strings in that order, so a lookup does not hash them. */
#define PLINK_NSCHEMAS 3
extern const plink_schema *const plink_schemas[PLINK_NSCHEMAS];

extern const plink_schema plink_request_schema;   /* top level */
extern const plink_schema plink_pay_method_schema;
extern const plink_schema plink_direct_schema;

/* Index of the field called k in s, or -1. */
int plink_rules_find(const plink_schema *s, const char *k, size_t n);

/* The known key nearest to k by edit distance (optimal string alignment,
 * i.e. Damerau-Levenshtein without repeated edits), or NULL when none is
 * close: distance <= 3 and at most half the length of k. Ties go to the
 * first in descriptor order. */
const char *plink_rules_suggest(const plink_schema *s, const char *k, size_t n);

/* The value of the NULL-terminated list nearest to k: one that differs
 * only in case, else the nearest by the distance above (same limits); or
 * NULL. For "did you mean" on enum values. */
const char *plink_rules_nearest(const char *const *list, const char *k, size_t n);

/* The default cap on a body's size (the max_body_bytes option): a real
 * link's body is a few kilobytes; this leaves room for a large custom_data
 * and refuses the runaway ones (a table reachable twice at each level). */
#define PLINK_MAX_BODY (1024 * 1024)

#define PLINK_MAX_SAFE_INT 9007199254740991LL   /* 2^53 - 1 */
#define PLINK_MAX_DEPTH 32                      /* custom_data nesting */

#endif
