/* rules.c - field descriptors (DESIGN §1) and the format checkers they name.
 *
 * Decisions the design left open, as implemented here:
 *  - currency: any three upper-case ASCII letters (the docs list KRW, USD,
 *    EUR, JPY; PortOne adds currencies without notice).
 *  - user_code: "imp" followed by one or more ASCII digits.
 *  - buyer_tel: digits, '+', '-', '(', ')' and space, at least one digit.
 *  - buyer_email: exactly one '@' with text on both sides, no white space.
 *  - notice_url: http or https (any case), "://", a non-empty host, an
 *    optional numeric port <= 65535, no spaces; control characters are
 *    rejected for every field already.
 *  - pg and channelKey: [A-Za-z0-9_.-]{1,64}.
 *  - label (pay_methods entry): required, 1-64 characters.
 *  - Optional strings may be empty unless a format or enum says otherwise.
 */
#include <stdint.h>
#include <string.h>
#include "rules.h"

/* name, its length, and ,\"name\": - the key as the body carries it
 * inside the payment_info string (written without the comma first) */
#define NAME(s) .name = (s), .namelen = (unsigned char)(sizeof(s) - 1), \
                .wire = ",\\\"" s "\\\":"

static const char *const rules_lang[] = {"ko", "en", NULL};

static const char *const rules_pay_method[] = {
    "card", "trans", "vbank", "phone", "applepay", "naverpay", "samsungpay",
    "samsung", "kpay", "kakaopay", "payco", "lpay", "ssgpay", "tosspay",
    "cultureland", "smartculture", "culturegift", "booknlife", "point",
    "wechat", "alipay", "unionpay", "pinpay", "ssgpay_bank", "skpay",
    "naverpay_card", "naverpay_point", "paypal", "toss_brandpay",
    "tosspay_card", "tosspay_money", NULL
};

#define RULES_PAY_METHOD_TEXT \
    "card, trans, vbank, phone, applepay, naverpay, samsungpay, samsung, " \
    "kpay, kakaopay, payco, lpay, ssgpay, tosspay, cultureland, " \
    "smartculture, culturegift, booknlife, point, wechat, alipay, unionpay, " \
    "pinpay, ssgpay_bank, skpay, naverpay_card, naverpay_point, paypal, " \
    "toss_brandpay, tosspay_card, tosspay_money"

static int rules_digit(char c) { return c >= '0' && c <= '9'; }

/* byte classes of the format checks: one load per byte */
#define RC_DIGIT 1      /* 0-9 */
#define RC_TEL   2      /* + - ( ) space */
#define RC_PG    4      /* A-Z a-z 0-9 _ . - */
#define RC_URLEND 8     /* / ? # end the authority of a URL */
#define RC_URL   16     /* / ? # and @ : (rules_url looks at these) */
static const unsigned char rules_class[256] = {   /* bytes >= 0x80: 0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 0, 0, 24, 0, 0, 0, 0, 2, 2, 0, 2, 0, 6, 4, 24,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 16, 0, 0, 0, 0, 24,
    16, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 4,
    0, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0,
};

static const char *rules_user_code(const char *s, size_t n)
{
    size_t i;
    if (n < 4 || memcmp(s, "imp", 3) != 0)
        return "must be 'imp' followed by digits (e.g. imp68124833)";
    for (i = 3; i < n; i++)
        if (!(rules_class[(unsigned char)s[i]] & RC_DIGIT))
            return "must be 'imp' followed by digits (e.g. imp68124833)";
    return NULL;
}

static const char *rules_currency(const char *s, size_t n)
{
    size_t i;
    if (n != 3)
        return "must be a three-letter upper-case currency code (KRW, USD, EUR, JPY)";
    for (i = 0; i < n; i++)
        if (s[i] < 'A' || s[i] > 'Z')
            return "must be a three-letter upper-case currency code (KRW, USD, EUR, JPY)";
    return NULL;
}

static const char *rules_tel(const char *s, size_t n)
{
    size_t i;
    int digits = 0;
    for (i = 0; i < n; i++) {
        unsigned char k = rules_class[(unsigned char)s[i]];
        if (k & RC_DIGIT)
            digits++;
        else if (!(k & RC_TEL))
            return "may hold only digits, '+', '-', '(', ')' and spaces";
    }
    if (!digits)
        return "must contain a digit";
    return NULL;
}

/* memchr rather than a loop by hand: libc scans a word or more at once */
static const char *rules_email(const char *s, size_t n)
{
    const char *at;
    size_t i;
    if (memchr(s, ' ', n) || memchr(s, '\t', n))
        return "must not contain spaces";
    at = memchr(s, '@', n);                /* exactly one, not at either end */
    i = at ? (size_t)(at - s) : 0;
    if (!at || i == 0 || i == n - 1 || memchr(at + 1, '@', n - i - 1))
        return "must be an e-mail address (one '@' with text on both sides)";
    return NULL;
}

static int rules_ieq(const char *a, const char *lower, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        char c = a[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lower[i])
            return 0;
    }
    return 1;
}

/* The first 8 bytes of s (n >= 8) begin with http:// (n7) or https://
 * (else), letters in any case: rules_ieq in one compare. Both sides are
 * loaded the same way, so the byte order does not matter. */
static int rules_scheme(const char *s, int n7)
{
    uint64_t w, lit, fold, mask;
    memcpy(&w, s, 8);
    if (n7) {
        memcpy(&lit, "http://", 8);             /* and its NUL, masked */
        memcpy(&fold, "\x20\x20\x20\x20\0\0\0\0", 8);
        memcpy(&mask, "\xff\xff\xff\xff\xff\xff\xff\0", 8);
    } else {
        memcpy(&lit, "https://", 8);
        memcpy(&fold, "\x20\x20\x20\x20\x20\0\0\0", 8);
        mask = ~(uint64_t)0;
    }
    /* b | 0x20 is the letter exactly when b is it or its capital */
    return (((w | fold) ^ lit) & mask) == 0;
}

static const char *rules_url(const char *s, size_t n)
{
    static const char bad[] = "must be an absolute http(s) URL (e.g. https://example.com/hook)";
    size_t i, start, end, host_start, host_end, at, colon;
    if (memchr(s, ' ', n))
        return "must not contain spaces";
    if (n > 7 && rules_scheme(s, 1))
        start = 7;
    else if (n > 8 && rules_scheme(s, 0))
        start = 8;
    else
        return bad;
    /* one pass to the end of the authority: the last '@' (user:info@host)
     * and the first ':' after it */
    at = colon = 0;
    for (end = start; end < n; end++) {
        unsigned char k = rules_class[(unsigned char)s[end]];
        if (!(k & RC_URL))
            continue;
        if (k & RC_URLEND)
            break;
        if (s[end] == '@') {
            at = end + 1;
            colon = 0;
        } else if (!colon) {
            colon = end;
        }
    }
    host_start = at ? at : start;
    if (host_start < end && s[host_start] == '[') {     /* [v6]:port */
        for (i = host_start; i < end && s[i] != ']'; i++)
            ;
        if (i == end || i == host_start + 1)
            return bad;
        host_end = i + 1;
    } else {
        host_end = colon ? colon : end;
    }
    if (host_end == host_start)
        return bad;
    if (host_end < end) {                 /* port */
        long port = 0;
        if (s[host_end] != ':' || host_end + 1 == end)
            return bad;
        for (i = host_end + 1; i < end; i++) {
            if (!rules_digit(s[i]))
                return bad;
            port = port * 10 + (s[i] - '0');
            if (port > 65535)
                return bad;
        }
    }
    return NULL;
}

static const char *rules_pg(const char *s, size_t n)
{
    size_t i;
    if (n > 64)
        return "must be at most 64 characters of A-Z a-z 0-9 _ . -";
    for (i = 0; i < n; i++)
        if (!(rules_class[(unsigned char)s[i]] & RC_PG))
            return "may hold only A-Z a-z 0-9 _ . -";
    return NULL;
}

/* Shorthands for the tables below. */
#define STR(nm, fl, maxl, fmt) \
    { NAME(nm), .kind = PLINK_K_STRING, .flags = (fl), .maxlen = (maxl), .format = (fmt) }
#define ENUM(nm, fl, list, text) \
    { NAME(nm), .kind = PLINK_K_STRING, .flags = (fl), .choices = (list), .choices_text = (text) }
#define INT(nm, fl, lo, hi) \
    { NAME(nm), .kind = PLINK_K_INTEGER, .flags = (fl), .min = (lo), .max = (hi) }
#define SUB(nm, kd, fl, schema) \
    { NAME(nm), .kind = (kd), .flags = (fl), .sub = &(schema) }
#define OTHER(nm, kd, fl) \
    { NAME(nm), .kind = (kd), .flags = (fl) }

#define REQ PLINK_F_REQUIRED
#define ASC PLINK_F_ASCII

static const plink_field rules_pay_method_fields[] = {
    STR("pg",         PLINK_F_GROUP1 | PLINK_F_DUPKEY | ASC, 0, rules_pg),
    STR("channelKey", PLINK_F_GROUP2 | PLINK_F_DUPKEY | ASC, 0, rules_pg),
    ENUM("pay_method", REQ | PLINK_F_DUPKEY, rules_pay_method, RULES_PAY_METHOD_TEXT),
    STR("label",      REQ, 64, NULL),
};

static const plink_field rules_direct_fields[] = {
    STR("pg",         PLINK_F_GROUP1 | ASC, 0, rules_pg),
    STR("channelKey", PLINK_F_GROUP2 | ASC, 0, rules_pg),
    ENUM("pay_method", REQ, rules_pay_method, RULES_PAY_METHOD_TEXT),
};

#define RULES_N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const plink_field rules_request_fields[] = {
    STR("title",            REQ, 256, NULL),
    STR("user_code",        REQ | ASC, 0, rules_user_code),
    INT("amount",           REQ | PLINK_F_AMOUNT, 1, PLINK_MAX_SAFE_INT),
    STR("merchant_uid",     REQ, 40, NULL),
    STR("name",             REQ, 40, NULL),
    INT("tax_free",         PLINK_F_LE_AMOUNT, 0, PLINK_MAX_SAFE_INT),
    STR("currency",         REQ | ASC, 0, rules_currency),
    ENUM("language",        0, rules_lang, "ko, en"),
    STR("buyer_name",       0, 16, NULL),
    STR("buyer_tel",        REQ | ASC, 16, rules_tel),
    STR("buyer_addr",       0, 128, NULL),
    STR("buyer_email",      0, 64, rules_email),
    STR("buyer_postcode",   0, 8, NULL),
    OTHER("custom_data",    PLINK_K_JSON, 0),
    STR("notice_url",       0, 0, rules_url),
    ENUM("display_language", 0, rules_lang, "ko, en"),
    SUB("pay_methods",      PLINK_K_LIST, REQ, plink_pay_method_schema),
    SUB("direct",           PLINK_K_OBJECT, 0, plink_direct_schema),
    OTHER("expired_at",     PLINK_K_EXPIRY, PLINK_F_GROUP1 | PLINK_F_OUTER),
    OTHER("expire_at",      PLINK_K_EXPIRY, PLINK_F_GROUP2 | PLINK_F_OUTER),
};

const plink_schema plink_request_schema = {
    rules_request_fields, RULES_N(rules_request_fields), 0, 0
};

const plink_schema plink_pay_method_schema = {
    rules_pay_method_fields, RULES_N(rules_pay_method_fields),
    RULES_N(rules_request_fields), 1
};

const plink_schema plink_direct_schema = {
    rules_direct_fields, RULES_N(rules_direct_fields),
    RULES_N(rules_request_fields) + RULES_N(rules_pay_method_fields), 2
};

const plink_schema *const plink_schemas[PLINK_NSCHEMAS] = {
    &plink_request_schema, &plink_pay_method_schema, &plink_direct_schema
};

int plink_rules_find(const plink_schema *s, const char *k, size_t n)
{
    int i;
    for (i = 0; i < s->nfields; i++)
        if (s->fields[i].namelen == n && memcmp(s->fields[i].name, k, n) == 0)
            return i;
    return -1;
}

#define RULES_MAXKEY 64

/* optimal string alignment distance, capped inputs (callers check lengths) */
static size_t rules_osa(const char *a, size_t an, const char *b, size_t bn)
{
    size_t d[RULES_MAXKEY + 1][RULES_MAXKEY + 1];
    size_t i, j;
    for (i = 0; i <= an; i++) d[i][0] = i;
    for (j = 0; j <= bn; j++) d[0][j] = j;
    for (i = 1; i <= an; i++) {
        for (j = 1; j <= bn; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]
                && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[an][bn];
}

const char *plink_rules_nearest(const char *const *list, const char *k, size_t n)
{
    const char *best = NULL;
    size_t bestd = 4, limit = n / 2;
    const char *const *e;
    if (n == 0 || n > RULES_MAXKEY)
        return NULL;
    for (e = list; *e; e++)         /* "KO" -> "ko", "Card" -> "card" */
        if (strlen(*e) == n && rules_ieq(k, *e, n))
            return *e;
    if (limit < bestd - 1)
        bestd = limit + 1;
    for (e = list; *e && bestd > 1; e++) {    /* 1 is the least possible */
        size_t len = strlen(*e), dd;
        /* the distance is at least the difference in length */
        if (len + bestd <= n || n + bestd <= len || len > RULES_MAXKEY)
            continue;
        dd = rules_osa(k, n, *e, len);
        if (dd < bestd) {
            bestd = dd;
            best = *e;
        }
    }
    return best;
}

const char *plink_rules_suggest(const plink_schema *s, const char *k, size_t n)
{
    const char *best = NULL;
    size_t bestd = 4, limit = n / 2;    /* at most 3, at most half of k */
    int i;
    if (n == 0 || n > RULES_MAXKEY)
        return NULL;
    if (limit < bestd - 1)
        bestd = limit + 1;
    for (i = 0; i < s->nfields; i++) {
        const plink_field *f = &s->fields[i];
        size_t dd;
        if (f->namelen > n + 3 || n > (size_t)f->namelen + 3)
            continue;
        dd = rules_osa(k, n, f->name, f->namelen);
        if (dd < bestd) {
            bestd = dd;
            best = f->name;
        }
    }
    return best;
}
