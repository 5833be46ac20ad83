/* codec.c - core.validate and core.encode: one walk over a request table
 * that checks every rule of rules.c and writes the wire body as it goes.
 *
 *   core.validate(req, now [, max_body_bytes]) --> true | false, list
 *   core.encode(req, now [, max_body_bytes])   --> body | nil, list
 *
 * list is an array of {field =, code =, message =} (+ suggestion = for
 * unknown_field and enum), in a stable order: descriptor order within a
 * table, the unknown keys of that table after its known ones, sorted by
 * key (strings by bytes, then numbers, then the other types by type and
 * value), whatever the traversal order of the table.
 *
 * Wire body (DESIGN §1), exactly:
 *   {"payment_info":"<payment_info JSON, escaped as a string>","expired_at":N}
 * payment_info keys come in descriptor order (rules.c); absent optional
 * fields are left out. A body longer than max_body_bytes (default
 * PLINK_MAX_BODY, 1 MiB) is refused with "too_large" naming the field being
 * written when it passed the cap; the check runs while writing, so the
 * buffer never grows much past the cap.
 *
 * Caveats, in the manner of lua-cjson:
 *  - Tables are read raw (lua_rawget / lua_next): __index, __pairs and
 *    other metamethods are ignored, so no Lua code runs during the walk,
 *    except __gc finalizers the collector runs when the codec allocates
 *    (an error entry). Those may edit the request: every pointer the codec
 *    keeps into a Lua string is anchored (on the stack, or in the anchor
 *    table of the call) for as long as it is used.
 *  - custom_data: a table whose keys are exactly 1..n is an array; a table
 *    with only string keys is an object, written with its keys sorted by
 *    byte order (the output is deterministic); an empty table is written as
 *    an empty object {}. Sparse arrays, mixed keys, other key types, cycles,
 *    nesting deeper than 32 tables, NaN/inf, functions, userdata and threads
 *    are validation errors naming the path (cycles, nesting and NaN/inf
 *    are code "range", the others "type"). cjson.null (a NULL light
 *    userdata) is null. A table reachable twice without a cycle is written
 *    twice (the size cap bounds that).
 *  - Numbers: integers (the 5.4 integer subtype, and integral floats below
 *    2^63 in magnitude) are written with every digit, never an exponent
 *    (1e16 is 10000000000000000); other finite floats with the
 *    fewest of 15/16/17 significant digits that read back exactly.
 *  - Strings are written as RFC 8259 strings: '"', '\' and U+0000..U+001F
 *    escaped, '/' and valid UTF-8 verbatim. Request fields reject control
 *    characters (C0, DEL and C1); custom_data strings may hold them.
 *  - Field paths: "pay_methods[2].label" (1-based), "custom_data.items[3]",
 *    and custom_data["odd key"] for keys that are not identifiers.
 *
 * How the walk stays cheap (the body costs less than one lua-cjson encode):
 *  - each object is walked once with lua_next; a key is matched to its
 *    field by the address of its interned string (the names are interned
 *    once, at load), by content only when the address is unknown; the value
 *    is parked in a stack slot, one per field. Then the fields are checked
 *    and written in descriptor order, so the errors come in the same order
 *    whatever the table's traversal order. Unknown keys get a second walk
 *    only when there are some.
 *  - the path of the value being walked is a small stack of frames, turned
 *    into text only when an error is reported.
 *  - one pass over a string checks its UTF-8, counts its characters and
 *    says whether it needs escaping; most do not and are copied as they
 *    are. Wire keys are precomputed; enum values match by address too.
 *  - payment_info is written already escaped as a JSON string
 *    (plink_buf_addstring2): the same bytes as writing it and escaping it
 *    again, in one buffer and one pass.
 *  - only the fields present or required are visited (a bit mask); the
 *    entries of a list share one stack check (made again only after
 *    something that may run the collector); a pg that every entry
 *    repeats passes its format once: the same string object, anchored
 *    for the list, passes again without the scan.
 *
 * Memory: the output, path and scratch buffers live in a userdata (an
 * upvalue, reused between calls) whose __gc frees them, so a Lua memory
 * error raised anywhere in the walk leaks nothing. If a call begins while
 * another is running (a __gc finalizer calling encode), it uses a fresh
 * userdata and anchor table of its own; a call that finds the shared ones
 * marked in use by a walk that raised instead takes them back
 * (codec_inuse). Arguments are checked before anything is allocated.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "plink.h"
#include "jsonbuf.h"
#include "rules.h"
#include "rfc3339.h"
#include "utf8.h"

/* the per-value helpers of the walk, forced in line (the call overhead
 * was a tenth of an encode) */
#if defined(__GNUC__)
#define CODEC_HOT static inline __attribute__((always_inline))
#else
#define CODEC_HOT static inline
#endif

/* the error paths, out of the way of the walk (layout and registers) */
#if defined(__GNUC__)
#define CODEC_COLD __attribute__((cold, noinline))
#else
#define CODEC_COLD
#endif

#define CODEC_MT "portone.link.codec_buffers"
#define CODEC_KEEP (256 * 1024)   /* larger buffers are freed after a call */
#define CODEC_MAXF 32             /* fields of a schema, at most */

/* upvalues of validate and encode */
#define CODEC_UP_BUFS    lua_upvalueindex(1)   /* codec_bufs, shared */
#define CODEC_UP_NAMES   lua_upvalueindex(2)   /* keeps the interned names alive */
#define CODEC_UP_INDEX   lua_upvalueindex(3)   /* codec_names: their addresses */
#define CODEC_UP_ANCHORS lua_upvalueindex(4)   /* anchor table, shared */

/* stack of a call */
#define CODEC_ERRS    4   /* the error list, made on the first error */
#define CODEC_ANCHORS 5   /* the anchor table of this call */
#define CODEC_OWNBUFS 6   /* the buffers of a nested call (codec_walk) */

typedef struct codec_bufs {
    plink_buf out;     /* the body, payment_info written escaped */
    plink_buf path;    /* an error's field path, made when it is reported */
    plink_buf keys;    /* stack of key lists (codec_key) */
    plink_buf dups;    /* pay_methods keys seen (codec_dup) */
    int busy;
    lua_State *owner;  /* the thread of the walk that set busy (compared only) */
    const struct codec_names *nm;   /* the shared one's: the names' index */
} codec_bufs;

typedef struct codec_key {
    const char *s;     /* string keys: anchored in the anchor table */
    size_t n;
    lua_Number num;    /* number keys; 0/1 for booleans */
    int type;          /* lua_type of the key */
    int seq;           /* traversal order, to keep the sort stable */
    int val;           /* custom_data: the value's place in the anchor table */
} codec_key;

#define CODEC_DUPKEYS 4
typedef struct codec_dup {
    const char *s[CODEC_DUPKEYS];   /* anchored in the anchor table */
    size_t n[CODEC_DUPKEYS];
    long long index;
    unsigned long sig;              /* equal entries have equal sigs */
} codec_dup;

/* The addresses of the interned field names and enum values, hashed. */
#define CODEC_NH 128                /* > 2x the names, > 2x the values */
typedef struct codec_names {
    const char *name[CODEC_NH];
    signed char at[CODEC_NH][PLINK_NSCHEMAS];   /* field index, or -1 */
    const char *val[CODEC_NH];
    const char *const *list[CODEC_NH];          /* the enum list it is in */
    /* The names again, by the address of the string object itself
     * (lua_topointer): matching a key needs no lua_tolstring. Only when
     * the interpreter gives strings an address there (5.4, LuaJIT). */
    int byobj;
    struct {
        const void *obj;
        signed char at[PLINK_NSCHEMAS];
    } byo[CODEC_NH];        /* side by side: a lookup touches one cache line */
    /* per schema: the fields codec_object visits even when absent
     * (required, or one of a pair) */
    unsigned long must[PLINK_NSCHEMAS];
} codec_names;

/* index of the lowest set bit of m (m != 0) */
CODEC_HOT int codec_lowbit(unsigned long m)
{
#if defined(__GNUC__)
    return __builtin_ctzl(m);
#else
    int i = 0;
    while (!(m & 1)) {
        m >>= 1;
        i++;
    }
    return i;
#endif
}

CODEC_HOT unsigned codec_hash(const void *p)
{
    return (unsigned)(((uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ULL) >> 57);
}

/* one step of a field path */
enum { FR_NAME, FR_KEY, FR_INDEX, FR_OTHER, FR_FIELD };
typedef struct codec_frame {
    const char *s;     /* FR_NAME, FR_KEY (anchored) */
    const plink_field *fld;   /* FR_FIELD: named by fld->name */
    size_t n;
    long long i;       /* FR_INDEX */
    lua_Number num;    /* FR_OTHER */
    int kind, type;
} codec_frame;
#define CODEC_MAXFR (PLINK_MAX_DEPTH + 8)

typedef struct codec {
    lua_State *L;
    codec_bufs *b;
    const codec_names *nm;
    int nerr;
    int nanc, maxanc;       /* anchor table: used slots, most ever used */
    lua_Number now;
    long long amount;
    int amount_ok;
    long long expires;
    size_t limit;           /* max_body_bytes */
    int big;                /* too_large reported: stop writing */
    int depth;
    int nfr;
    /* the strings codec_string read for the DUPKEY fields of the last
     * object (NULL: not a string); they stay at their slots until the
     * caller pops them */
    const char *dks[CODEC_MAXF];
    size_t dkn[CODEC_MAXF];
    unsigned char dkfmt[CODEC_MAXF];   /* and passed their ASCII format */
    int fi;                 /* the field codec_object is checking */
    /* a string that passed the ASCII format of field okfield and stays
     * anchored while codec_list runs (the pg every entry repeats): the
     * same object passes again without the check */
    const char *okstr;
    const plink_field *okfield;
    /* stack slots up to `room` are checked already (codec_object), unless
     * the collector may have run since (LuaJIT shrinks the stack of a
     * running C function in a GC step): gen counts the calls that may
     * allocate Lua objects, roomgen is gen at the check */
    int room;
    unsigned gen, roomgen;
    const void *anc[PLINK_MAX_DEPTH + 1];   /* tables on the custom_data path */
    codec_frame fr[CODEC_MAXFR];
} codec;

/* ---- field paths -------------------------------------------------------- */

CODEC_HOT void fr_push(codec *c, int kind, const char *s, size_t n, long long i)
{
    codec_frame *f;
    if (c->nfr >= CODEC_MAXFR)      /* cannot happen: the depth is capped */
        return;
    f = &c->fr[c->nfr++];
    f->kind = kind;
    f->s = s;
    f->n = n;
    f->i = i;
}

#define fr_name(c, s, n) fr_push((c), FR_NAME, (s), (n), 0)
#define fr_key(c, s, n)  fr_push((c), FR_KEY, (s), (n), 0)
#define fr_index(c, i)   fr_push((c), FR_INDEX, NULL, 0, (i))

static void fr_other(codec *c, const codec_key *k)
{
    fr_push(c, FR_OTHER, NULL, 0, 0);
    c->fr[c->nfr - 1].type = k->type;
    c->fr[c->nfr - 1].num = k->num;
}

CODEC_HOT void fr_pop(codec *c)
{
    c->nfr--;
}

static int codec_isident(const char *s, size_t n)
{
    size_t i;
    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* Appends a quoted key, escaping '"' and '\', control bytes, and - when
 * the key is not valid UTF-8 - every byte >= 0x80, as \ddd. */
static void codec_quote(lua_State *L, plink_buf *b, const char *s, size_t n)
{
    plink_utf8_info info;
    int raw8 = plink_utf8_scan(s, n, 0, &info) == PLINK_UTF8_OK;
    size_t i;
    plink_buf_addc(L, b, '"');
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            plink_buf_addc(L, b, '\\');
            plink_buf_addc(L, b, (char)ch);
        } else if (ch < 0x20 || ch == 0x7f || (ch >= 0x80 && !raw8)) {
            /* \ddd without leading zeros, as "%u" would write it */
            plink_buf_addc(L, b, '\\');
            if (ch >= 100)
                plink_buf_addc(L, b, (char)('0' + ch / 100));
            if (ch >= 10)
                plink_buf_addc(L, b, (char)('0' + ch / 10 % 10));
            plink_buf_addc(L, b, (char)('0' + ch % 10));
        } else {
            plink_buf_addc(L, b, (char)ch);
        }
    }
    plink_buf_addc(L, b, '"');
}

/* The path of the frames: "key" at the top, ".key" below, ["odd key"]
 * when not an identifier, [3] for an index, [true] for other keys. */
CODEC_COLD static void codec_render(codec *c)
{
    lua_State *L = c->L;
    plink_buf *p = &c->b->path;
    int i;
    p->len = 0;
    for (i = 0; i < c->nfr; i++) {
        const codec_frame *f = &c->fr[i];
        char tmp[48];
        int len;
        switch (f->kind) {
        case FR_FIELD:
            if (p->len)
                plink_buf_addc(L, p, '.');
            plink_buf_add(L, p, f->fld->name, f->fld->namelen);
            break;
        case FR_NAME:
        case FR_KEY:
            if (f->kind == FR_NAME || codec_isident(f->s, f->n)) {
                if (p->len)
                    plink_buf_addc(L, p, '.');
                plink_buf_add(L, p, f->s, f->n);
            } else {
                plink_buf_addc(L, p, '[');
                codec_quote(L, p, f->s, f->n);
                plink_buf_addc(L, p, ']');
            }
            break;
        case FR_INDEX:
            plink_buf_addc(L, p, '[');
            plink_buf_addint(L, p, f->i);
            plink_buf_addc(L, p, ']');
            break;
        default:
            if (f->type == LUA_TNUMBER) {
                if (floor(f->num) == f->num && fabs(f->num) < 1e15)
                    len = snprintf(tmp, sizeof tmp, "[%.0f]", f->num);
                else
                    len = snprintf(tmp, sizeof tmp, "[%.14g]", f->num);
            } else if (f->type == LUA_TBOOLEAN) {
                len = snprintf(tmp, sizeof tmp, "[%s]", f->num != 0 ? "true" : "false");
            } else {
                len = snprintf(tmp, sizeof tmp, "[%s]", lua_typename(L, f->type));
            }
            plink_buf_add(L, p, tmp, (size_t)len);
            break;
        }
    }
}

/* ---- errors --------------------------------------------------------------- */

/* Adds {field = <path>, code =, message = <fmt ...>} to the list and stops
 * the output: nothing written after an error is used (the buffer goes on
 * counting, for the size cap). The collector may run here, and with it
 * finalizers that edit the request. */
CODEC_COLD static void codec_err(codec *c, const char *code, const char *fmt, ...)
{
    lua_State *L = c->L;
    va_list ap;
    c->gen++;
    if (c->nerr == 0) {                     /* the list is made on demand */
        lua_newtable(L);
        lua_replace(L, CODEC_ERRS);
    }
    codec_render(c);
    lua_createtable(L, 0, 4);
    lua_pushlstring(L, c->b->path.p ? c->b->path.p : "", c->b->path.len);
    lua_setfield(L, -2, "field");
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_setfield(L, -2, "message");
    lua_rawseti(L, CODEC_ERRS, ++c->nerr);
    c->b->out.off = 1;
}

/* Adds suggestion = s to the last error. */
CODEC_COLD static void codec_suggest(codec *c, const char *s)
{
    lua_State *L = c->L;
    c->gen++;
    lua_rawgeti(L, CODEC_ERRS, c->nerr);
    lua_pushstring(L, s);
    lua_setfield(L, -2, "suggestion");
    lua_pop(L, 1);
}

CODEC_COLD static void codec_toolarge(codec *c)
{
    c->big = 1;
    codec_err(c, "too_large", "makes the body longer than %d bytes (max_body_bytes)",
              (int)(c->limit > 0x7fffffff ? 0x7fffffff : c->limit));
}

/* too_large once the body has passed the cap; 1 when it has */
CODEC_HOT int codec_checksize(codec *c)
{
    if (c->b->out.len <= c->limit)     /* the usual case, in one compare */
        return c->big;
    if (!c->big)
        codec_toolarge(c);
    return 1;
}

CODEC_COLD static const char *codec_typename(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL)
        return "null";
    if (t == LUA_TNUMBER) {
        lua_Number d = lua_tonumber(L, idx);
        if (floor(d) != d)
            return "non-integral number";
    }
    return lua_typename(L, t);
}

static const char *codec_lld(char *tmp, size_t size, long long v)
{
    snprintf(tmp, size, "%lld", v);
    return tmp;
}

/* ---- scalars ---------------------------------------------------------- */

enum { NUM_OK, NUM_NOTINT, NUM_RANGE };

/* 1 when d (finite, below 9.2e18 in magnitude) has no fraction: floor(d)
 * == d without the libm call (the cast is exact there) */
CODEC_HOT int codec_whole(lua_Number d)
{
    return (lua_Number)(long long)d == d;
}

/* Integer value of the number at idx, exact (5.4 integers, integral floats
 * within +-2^53 - 1). NUM_RANGE for integral values beyond, or inf. */
static int codec_integer(lua_State *L, int idx, long long *v)
{
    lua_Number d;
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        if (i > (lua_Integer)PLINK_MAX_SAFE_INT || i < -(lua_Integer)PLINK_MAX_SAFE_INT) {
            *v = i < 0 ? -PLINK_MAX_SAFE_INT - 1 : PLINK_MAX_SAFE_INT + 1;
            return NUM_RANGE;
        }
        *v = (long long)i;
        return NUM_OK;
    }
#endif
    d = lua_tonumber(L, idx);
    /* NaN, or finite with a fraction (every double of 9.2e18 or more is
     * whole; NaN fails both compares) */
    if (d > -9.2e18 && d < 9.2e18 ? !codec_whole(d) : d != d)
        return NUM_NOTINT;
    if (d > (lua_Number)PLINK_MAX_SAFE_INT || d < -(lua_Number)PLINK_MAX_SAFE_INT) {
        *v = d < 0 ? -PLINK_MAX_SAFE_INT - 1 : PLINK_MAX_SAFE_INT + 1;
        return NUM_RANGE;
    }
    *v = (long long)d;
    return NUM_OK;
}

/* The error of a bad UTF-8 scan result rc; 0. */
CODEC_COLD static int codec_utf8_err(codec *c, int rc, const plink_utf8_info *info)
{
    if (rc == PLINK_UTF8_CONTROL) {
        char cp[16];
        snprintf(cp, sizeof cp, "U+%04lX", info->cp);
        codec_err(c, "format", "must not contain control characters (%s at character %d)",
                  cp, (int)info->chars + 1);
    } else {
        codec_err(c, "format", "is not valid UTF-8 (%s at byte %d)",
                  plink_utf8_what(rc), (int)info->offset + 1);
    }
    return 0;
}

/* Checks the UTF-8 of s; 0 and an error when it is bad. Plain ASCII
 * (most strings) is settled in line, without the call. */
CODEC_HOT int codec_utf8(codec *c, const char *s, size_t n, int flags,
                         plink_utf8_info *info)
{
    size_t plain = plink_utf8_plain(s, n, flags);
    int rc;
    if (plain == n) {
        info->chars = n;
        info->esc = 0;
        return 1;
    }
    rc = plink_utf8_scan_from(s, n, plain, flags, info);
    return rc == PLINK_UTF8_OK ? 1 : codec_utf8_err(c, rc, info);
}

/* Writes s (scanned: esc from the scan) as a string inside payment_info,
 * unless that takes the body past the cap. */
CODEC_HOT void codec_put(codec *c, const char *s, size_t n, size_t esc)
{
    plink_buf *out = &c->b->out;
    size_t len = esc ? plink_buf_len2(s, n) : n + 4;
    if (c->big)
        return;
    if (len > c->limit || out->len > c->limit - len) {
        codec_toolarge(c);
        return;
    }
    if (esc)
        plink_buf_addstring2(c->L, out, s, n);
    else
        plink_buf_addplain2(c->L, out, s, n);
}

/* 1 when s is one of f's enum values; else an "enum" error, with the
 * nearest value as a suggestion when one is close. */
/* 1 when s is the interned string of one of f's enum values */
CODEC_HOT int codec_enum_hit(const codec_names *nm, const plink_field *f, const char *s)
{
    unsigned h = codec_hash(s);
    for (; nm->val[h]; h = (h + 1) & (CODEC_NH - 1))
        if (nm->val[h] == s)
            return nm->list[h] == f->choices;
    return 0;
}

static int codec_enum(codec *c, const plink_field *f, const char *s, size_t n)
{
    const char *const *e;
    const char *near;
    if (codec_enum_hit(c->nm, f, s))
        return 1;
    /* not interned here (a long string, another list): by content */
    for (e = f->choices; *e; e++)
        if ((*e)[0] == s[0] && strlen(*e) == n && memcmp(*e, s, n) == 0)
            return 1;
    near = plink_rules_nearest(f->choices, s, n);
    if (near) {
        codec_err(c, "enum", "unknown value '%s', did you mean '%s'?", s, near);
        codec_suggest(c, near);
    } else {
        codec_err(c, "enum", "must be one of: %s", f->choices_text);
    }
    return 0;
}

static void codec_string(codec *c, const plink_field *f, int idx)
{
    lua_State *L = c->L;
    plink_utf8_info info;
    const char *s;
    size_t n;
    int fmt_ok = 0;
    if (lua_type(L, idx) != LUA_TSTRING) {
        codec_err(c, "type", "must be a string, got %s", codec_typename(L, idx));
        return;
    }
    s = lua_tolstring(L, idx, &n);
    if (f->flags & PLINK_F_DUPKEY) {     /* for codec_dupkey */
        c->dks[c->fi] = s;
        c->dkn[c->fi] = n;
    }
    /* Shortcuts that give the same verdict: a known enum value is plain
     * ASCII, and so is whatever an ASCII format accepts; only the other
     * strings need the UTF-8 scan (and, failing that, its error first). */
    if (f->choices && codec_enum_hit(c->nm, f, s)) {
        codec_put(c, s, n, 0);
        return;
    }
    if ((f->flags & PLINK_F_ASCII)
        && ((s == c->okstr && f == c->okfield) || f->format(s, n) == NULL)) {
        fmt_ok = 1;
        if (f->flags & PLINK_F_DUPKEY)
            c->dkfmt[c->fi] = 1;
        info.chars = n;
        info.esc = 0;
    } else if (!codec_utf8(c, s, n, PLINK_UTF8_NOCTRL, &info)) {
        return;
    }
    if (n == 0 && (f->flags & (PLINK_F_REQUIRED | PLINK_F_GROUP1 | PLINK_F_GROUP2))) {
        codec_err(c, "empty", "must not be empty");
        return;
    }
    if (f->maxlen && info.chars > f->maxlen) {
        codec_err(c, "too_long", "must be at most %d characters, got %d",
                  (int)f->maxlen, (int)info.chars);
        return;
    }
    if (f->choices && !codec_enum(c, f, s, n))
        return;
    if (f->format && !fmt_ok) {
        const char *msg = f->format(s, n);
        if (msg) {
            codec_err(c, "format", "%s", msg);
            return;
        }
    }
    codec_put(c, s, n, info.esc);
}

static void codec_int(codec *c, const plink_field *f, int idx)
{
    lua_State *L = c->L;
    long long v;
    char a[32], b[32];
    int rc;
    if (f->flags & PLINK_F_AMOUNT)
        c->amount_ok = 0;
    if (lua_type(L, idx) != LUA_TNUMBER) {
        codec_err(c, "type", "must be an integer, got %s", codec_typename(L, idx));
        return;
    }
    rc = codec_integer(L, idx, &v);
    if (rc == NUM_NOTINT) {
        codec_err(c, "type", "must be an integer, got %f", lua_tonumber(L, idx));
        return;
    }
    if (rc == NUM_RANGE || v < f->min || v > f->max) {
        if (v < f->min && f->min == 1)
            codec_err(c, "range", "must be greater than 0");
        else if (v < f->min)
            codec_err(c, "range", "must be at least %s", codec_lld(a, sizeof a, f->min));
        else
            codec_err(c, "range", "must be at most %s", codec_lld(a, sizeof a, f->max));
        return;
    }
    if ((f->flags & PLINK_F_LE_AMOUNT) && c->amount_ok && v > c->amount) {
        codec_err(c, "range", "must not exceed amount (%s > %s)",
                  codec_lld(a, sizeof a, v), codec_lld(b, sizeof b, c->amount));
        return;
    }
    if (f->flags & PLINK_F_AMOUNT) {
        c->amount = v;
        c->amount_ok = 1;
    }
    plink_buf_addint(L, &c->b->out, v);
}

/* whole seconds of a millisecond count (the division truncates on purpose) */
static lua_Number codec_ms_to_s(long long ms)
{
    long long s = ms / 1000;
    return (lua_Number)s;
}

/* The latest second an expiry may name: 9999-12-31T23:59:59Z. */
#define CODEC_MAX_EXPIRY 253402300799LL

static void codec_expiry(codec *c, int idx)
{
    lua_State *L = c->L;
    long long v;
    char a[32], b[32];
    int t = lua_type(L, idx);
    if (t == LUA_TNUMBER) {
        int rc = codec_integer(L, idx, &v);
        if (rc == NUM_NOTINT) {
            codec_err(c, "type", "must be whole unix seconds, got %f", lua_tonumber(L, idx));
            return;
        }
        /* v is clamped when out of range: never compare or send it. */
        if (rc == NUM_RANGE) {
            if (v > 0)
                codec_err(c, "range", "must be at most %s (year 9999)",
                          codec_lld(a, sizeof a, CODEC_MAX_EXPIRY));
            else
                codec_err(c, "range", "must be unix seconds above -(2^53)");
            return;
        }
    } else if (t == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (plink_rfc3339(s, n, &v) != 0) {
            codec_err(c, "format", "must be an RFC 3339 date-time with an offset "
                      "(e.g. 2026-12-01T00:00:00+09:00)");
            return;
        }
    } else {
        codec_err(c, "type", "must be unix seconds or an RFC 3339 string, got %s",
                  codec_typename(L, idx));
        return;
    }
    if ((lua_Number)v <= c->now) {
        lua_Number now = c->now;
        if (now < 9.2e18)       /* whole seconds; a larger now (inf) as Lua writes it */
            codec_err(c, "expired", "must be in the future (%s is not after now, %s)",
                      codec_lld(a, sizeof a, v), codec_lld(b, sizeof b, (long long)floor(now)));
        else
            codec_err(c, "expired", "must be in the future (%s is not after now, %f)",
                      codec_lld(a, sizeof a, v), now);
        return;
    }
    if (v > CODEC_MAX_EXPIRY) {
        /* Date.now() and most clocks outside Lua count milliseconds: a
         * value of 10^12 or more (2001 in milliseconds) that is a future
         * date once divided by 1000 is one. */
        if (t == LUA_TNUMBER && v >= 1000000000000LL && codec_ms_to_s(v) > c->now
            && v / 1000 <= CODEC_MAX_EXPIRY)
            codec_err(c, "range", "looks like milliseconds: must be unix seconds "
                      "(%s / 1000 = %s)", codec_lld(a, sizeof a, v),
                      codec_lld(b, sizeof b, v / 1000));
        else
            codec_err(c, "range", "must be at most %s (year 9999)",
                      codec_lld(a, sizeof a, CODEC_MAX_EXPIRY));
        return;
    }
    c->expires = v;
}

/* ---- key lists -------------------------------------------------------- */

static int codec_keycmp(const void *pa, const void *pb)
{
    const codec_key *a = pa, *b = pb;
    int ra = a->type == LUA_TSTRING ? 0 : a->type == LUA_TNUMBER ? 1 : 2;
    int rb = b->type == LUA_TSTRING ? 0 : b->type == LUA_TNUMBER ? 1 : 2;
    if (ra != rb)
        return ra - rb;
    if (ra == 0) {
        size_t m = a->n < b->n ? a->n : b->n;
        int r;
        /* most keys differ in their first byte: memcmp's verdict without
         * the call */
        if (m && a->s[0] != b->s[0])
            return (unsigned char)a->s[0] < (unsigned char)b->s[0] ? -1 : 1;
        r = memcmp(a->s, b->s, m);
        if (r)
            return r;
        if (a->n != b->n)
            return a->n < b->n ? -1 : 1;
    } else if (ra == 1 && a->num != b->num) {
        return a->num < b->num ? -1 : 1;
    } else if (ra == 2) {
        /* booleans false before true; keys of the other types (a table, a
         * function) give the same error whatever their order */
        if (a->type != b->type)
            return a->type - b->type;
        if (a->num != b->num)
            return a->num < b->num ? -1 : 1;
    }
    return a->seq - b->seq;
}

/* codec_keycmp(a, b) > 0, string keys that differ in their first byte
 * (the usual custom_data keys) in line */
CODEC_HOT int codec_keyafter(const codec_key *a, const codec_key *b)
{
    if (a->type == LUA_TSTRING && b->type == LUA_TSTRING && a->n && b->n
        && a->s[0] != b->s[0])
        return (unsigned char)a->s[0] > (unsigned char)b->s[0];
    return codec_keycmp(a, b) > 0;
}

/* Sorts n keys by codec_keycmp (a total order: seq breaks ties, so any
 * sort gives the same result); a few keys by insertion, without qsort's
 * setup. */
static void codec_sortkeys(codec_key *k, size_t n)
{
    size_t i, j;
    if (n > 12) {
        qsort(k, n, sizeof *k, codec_keycmp);
        return;
    }
    for (i = 1; i < n; i++) {
        codec_key t = k[i];
        for (j = i; j > 0 && codec_keyafter(&k[j - 1], &t); j--)
            k[j] = k[j - 1];
        k[j] = t;
    }
}

static codec_key *codec_keys_at(codec *c, size_t base)
{
    return (codec_key *)(void *)(c->b->keys.p + base);
}

/* Anchors the value at the top of the stack (pops it); returns its slot. */
static int codec_anchor(codec *c)
{
    lua_rawseti(c->L, CODEC_ANCHORS, ++c->nanc);
    if (c->nanc > c->maxanc)
        c->maxanc = c->nanc;
    return c->nanc;
}

/* Records the key at idx (a negative index: left there by lua_next) of
 * lua_type `type`, anchoring a string key when `anchor` (else the caller
 * keeps it on the stack). */
static codec_key *codec_keys_push_at(codec *c, int idx, int type, int seq, int anchor)
{
    lua_State *L = c->L;
    plink_buf *kb = &c->b->keys;
    codec_key *k = (codec_key *)(void *)plink_buf_room(L, kb, sizeof *k);
    k->type = type;
    k->s = NULL;
    k->n = 0;
    k->num = 0;
    k->seq = seq;
    k->val = 0;
    if (k->type == LUA_TSTRING) {
        k->s = lua_tolstring(L, idx, &k->n);  /* a string already: no conversion */
        if (anchor) {
            lua_pushvalue(L, idx);
            codec_anchor(c);
        }
    } else if (k->type == LUA_TNUMBER) {
        k->num = lua_tonumber(L, idx);
    } else if (k->type == LUA_TBOOLEAN) {
        k->num = lua_toboolean(L, idx);
    }
    kb->len += sizeof *k;
    return k;
}

#define codec_keys_push(c, seq) codec_keys_push_at((c), -1, lua_type((c)->L, -1), (seq), 1)

/* ---- tables ------------------------------------------------------------- */

static void codec_value(codec *c, const plink_field *f, int idx);

/* Index in sc of the field whose name is the string k (of n bytes), or
 * -1: by the address of the interned name, by content when unknown. */
CODEC_HOT int codec_field(codec *c, const plink_schema *sc, const char *k, size_t n)
{
    const codec_names *nm = c->nm;
    unsigned h = codec_hash(k);
    for (; nm->name[h]; h = (h + 1) & (CODEC_NH - 1))
        if (nm->name[h] == k)
            return nm->at[h][sc->id];
    return plink_rules_find(sc, k, n);
}

/* Index in sc of the field named by the key at -2 (left there by
 * lua_next), or -1 when it names none. */
CODEC_HOT int codec_keyfield(codec *c, const plink_schema *sc)
{
    lua_State *L = c->L;
    const codec_names *nm = c->nm;
    size_t kn;
    const char *k;
    if (nm->byobj) {
        const void *o = lua_topointer(L, -2);
        unsigned h = codec_hash(o);
        for (; nm->byo[h].obj; h = (h + 1) & (CODEC_NH - 1))
            if (nm->byo[h].obj == o) {
                /* A light userdata may hold any address. Nothing else
                 * can: lua_topointer of a table, function, thread, full
                 * userdata (its memory block) or cdata is an object of
                 * its own, never the live name string, and a light C
                 * function is code; numbers, booleans give NULL. So a
                 * key at this address that is no userdata is the name:
                 * lua_isuserdata says so for less than lua_type on
                 * LuaJIT (a third less); on 5.4 lua_type is the cheaper. */
#if LUA_VERSION_NUM >= 503
                if (lua_type(L, -2) == LUA_TSTRING)     /* cheaper on 5.4 */
#else
                if (!lua_isuserdata(L, -2))
#endif
                    return nm->byo[h].at[sc->id];
                return -1;
            }
    }
    if (lua_type(L, -2) != LUA_TSTRING)
        return -1;
    k = lua_tolstring(L, -2, &kn);
    return codec_field(c, sc, k, kn);
}

/* unknown_field for every key of t that sc does not name, sorted */
CODEC_COLD static void codec_unknown(codec *c, int t, const plink_schema *sc)
{
    lua_State *L = c->L;
    size_t base = c->b->keys.len;
    int n = 0, i, nanc = c->nanc;
    c->gen++;                               /* lua_pushlstring below */
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t kn;
            const char *ks = lua_tolstring(L, -1, &kn);
            if (codec_field(c, sc, ks, kn) >= 0)
                continue;
        }
        codec_keys_push(c, n++);
    }
    /* n may be 0: a finalizer may have removed the unknown keys since the
     * first walk (and keys.p is NULL until something is pushed) */
    if (n > 1)
        codec_sortkeys(codec_keys_at(c, base), (size_t)n);
    for (i = 0; i < n; i++) {
        codec_key k = codec_keys_at(c, base)[i];   /* the buffer may move */
        if (k.type == LUA_TSTRING) {
            const char *sug = plink_rules_suggest(sc, k.s, k.n);
            plink_buf *p = &c->b->path;
            /* the message quotes the key as the path shows it */
            p->len = 0;
            if (codec_isident(k.s, k.n))
                plink_buf_add(L, p, k.s, k.n);
            else
                codec_quote(L, p, k.s, k.n);
            lua_pushlstring(L, p->p, p->len);
            fr_key(c, k.s, k.n);
            if (sug) {
                codec_err(c, "unknown_field", "unknown field '%s', did you mean '%s'?",
                          lua_tostring(L, -1), sug);
                codec_suggest(c, sug);
            } else {
                codec_err(c, "unknown_field", "unknown field '%s'", lua_tostring(L, -1));
            }
            lua_pop(L, 1);
        } else {
            fr_other(c, &k);
            codec_err(c, "unknown_field", "unknown field: keys must be strings, got %s",
                      lua_typename(L, k.type));
        }
        fr_pop(c);
    }
    c->b->keys.len = base;
    c->nanc = nanc;
}

/* An object of schema sc at index t: known fields in descriptor order,
 * then the unknown keys. Leaves the values of the fields on the stack,
 * above the returned index, for the caller to pop; slot[i] is where the
 * value of field i is, 0 when absent. */
/* custom_data objects keep this many keys and values on the stack */
#define CODEC_STACKKEYS 32
static int codec_object(codec *c, int t, const plink_schema *sc, int *slot)
{
    lua_State *L = c->L;
    plink_buf *out = &c->b->out;
    int nf = sc->nfields, base, key, i, unknown = 0, first = 1, g1 = 0;
    codec_frame *fr;
    unsigned long seen = 0, todo;
    base = lua_gettop(L);
    if (base + 2 * nf + 8 > c->room || c->gen != c->roomgen) {
        luaL_checkstack(L, 2 * nf + 8, "portone.link");
        c->room = base + 2 * nf + 8;        /* each entry of a list, once */
        c->roomgen = c->gen;
    }
    /* One walk: each value stays where lua_next put it, under a copy of
     * its key for the next step (the key is at `key`, its value above).
     * Nothing here allocates Lua objects, so no finalizer edits t during
     * lua_next. */
    key = base + 1;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int fi = codec_keyfield(c, sc);
        if (fi >= 0 && !(seen & (1UL << fi))) {
            seen |= 1UL << fi;
            slot[fi] = key + 1;
            lua_pushvalue(L, -2);
            key += 2;
            continue;
        }
        unknown = 1;
        lua_pop(L, 1);
    }
    plink_buf_addc(L, out, '{');
    /* one frame for the fields, renamed for each */
    fr_push(c, FR_FIELD, NULL, 0, 0);
    fr = &c->fr[c->nfr - 1];
    /* slot 0 for the absent fields; then in descriptor order the fields
     * that are present or must be (the others are absent and may be) */
    for (todo = nf ? ~seen & (~0UL >> (8 * sizeof todo - nf)) : 0; todo; todo &= todo - 1)
        slot[codec_lowbit(todo)] = 0;
    for (todo = seen | c->nm->must[sc->id]; todo; todo &= todo - 1) {
        const plink_field *f;
        int has;
        i = codec_lowbit(todo);
        f = &sc->fields[i];
        has = (int)((seen >> i) & 1);
        fr->fld = f;
        if (f->flags & PLINK_F_GROUP1)
            g1 = has;
        if (f->flags & PLINK_F_GROUP2) {
            if (has && g1) {
                codec_err(c, "conflict", "give either '%s' or '%s', not both",
                          f[-1].name, f->name);
            } else if (!has && !g1) {
                fr->fld = f - 1;                      /* named by the first */
                codec_err(c, "required", "is required (or '%s')", f->name);
            }
        } else if (!has && (f->flags & PLINK_F_REQUIRED)) {
            codec_err(c, "required", "is required");
        }
        if (has) {
            if (!(f->flags & PLINK_F_OUTER)) {
                plink_buf_add24(L, out, f->wire + first, (size_t)f->namelen + 6 - first);
                first = 0;
            }
            if (f->flags & PLINK_F_DUPKEY) {
                c->dks[i] = NULL;           /* stays NULL unless a string */
                c->dkfmt[i] = 0;
                c->fi = i;
            }
            codec_value(c, f, slot[i]);
            codec_checksize(c);
        }
    }
    fr_pop(c);
    plink_buf_addc(L, out, '}');
    if (unknown)
        codec_unknown(c, t, sc);
    return base;
}

static int codec_dupeq(const codec_dup *a, const codec_dup *b)
{
    int k;
    if (a->sig != b->sig)
        return 0;
    for (k = 0; k < CODEC_DUPKEYS; k++) {
        if (a->s[k] == b->s[k] && a->n[k] == b->n[k])
            continue;          /* interned: the same string */
        if ((a->s[k] == NULL) != (b->s[k] == NULL) || a->n[k] != b->n[k])
            return 0;
        if (a->s[k] && memcmp(a->s[k], b->s[k], a->n[k]) != 0)
            return 0;
    }
    return 1;
}

/* The DUPKEY values of an entry checked by codec_object (its slots; dk
 * lists the ndk DUPKEY fields of sc) into d, unless one is neither a
 * string nor absent (0). */
static int codec_dupkey(codec *c, const int *slot, const int *dk, int ndk, codec_dup *d)
{
    int k;
    memset(d, 0, sizeof *d);
    for (k = 0; k < ndk; k++) {
        if (slot[dk[k]]) {
            size_t n;
            const unsigned char *u;
            /* read by codec_string (every DUPKEY field is a string field,
             * checked at load): NULL when the value is not a string */
            if (!c->dks[dk[k]])
                return 0;
            d->s[k] = c->dks[dk[k]];
            d->n[k] = c->dkn[dk[k]];
            n = d->n[k];
            u = (const unsigned char *)d->s[k];
            d->sig = d->sig * 131 + n * 31 + (n ? u[0] * 7u + u[n - 1] : 0);
        }
        d->sig = d->sig * 3 + 1;        /* absent and "" differ */
    }
    return 1;
}

/* An array 1..n (n >= 1) of objects of schema sc, no two with the same
 * DUPKEY fields. */
static void codec_list(codec *c, int t, const plink_schema *sc)
{
    lua_State *L = c->L;
    plink_buf *out = &c->b->out, *db = &c->b->dups;
    long long n = 0, i, kmax = 0;
    int seq = 1, nanc = c->nanc, dk[CODEC_DUPKEYS], ndk, e;
    codec_frame *fr;
    size_t base = db->len, ndup = 0;
    uint64_t sigs = 0;          /* bit sig % 64 of every entry recorded */
    lua_pushnil(L);
    while (lua_next(L, t)) {
        long long k;
        lua_pop(L, 1);
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(L, -1)) {          /* the usual key, in one call less */
            lua_Integer v = lua_tointeger(L, -1);
            if (v < 1 || v > (lua_Integer)PLINK_MAX_SAFE_INT)
                seq = 0;
            else if (v > kmax)
                kmax = (long long)v;
        } else
#endif
        if (lua_type(L, -1) != LUA_TNUMBER || codec_integer(L, -1, &k) != NUM_OK
            || k < 1)
            seq = 0;
        else if (k > kmax)
            kmax = k;
        n++;
    }
    /* n distinct keys in 1..n are exactly 1..n; not #t == n, which a table
     * with a hole can give too ({a, nil, c, [5] = e}: a border at 3) */
    if (kmax != n)
        seq = 0;
    if (!seq) {
        codec_err(c, "type", "must be an array (keys 1..n) of tables");
        return;
    }
    if (n == 0) {
        codec_err(c, "empty", "must have at least one entry");
        return;
    }
    for (ndk = 0, e = 0; e < sc->nfields && ndk < CODEC_DUPKEYS; e++)
        if (sc->fields[e].flags & PLINK_F_DUPKEY)
            dk[ndk++] = e;
    luaL_checkstack(L, 4, "portone.link");
    plink_buf_addc(L, out, '[');
    fr_index(c, 0);                      /* one frame, renumbered */
    e = lua_gettop(L) + 1;
    fr = &c->fr[c->nfr - 1];
    for (i = 1; i <= n; i++) {
        fr->i = i;
        if (i > 1)
            plink_buf_addc(L, out, ',');
        lua_rawgeti(L, t, (int)i);           /* at e: the stack is back at e - 1 after each */
        if (!lua_istable(L, e)) {
            codec_err(c, "type", "must be a table, got %s", codec_typename(L, e));
        } else {
            codec_dup d;
            int slot[CODEC_MAXF];
            codec_object(c, e, sc, slot);
            /* the last entry is only compared with those before it: it is
             * not recorded, and a list of one has nothing to compare */
            if ((ndup > 0 || i < n) && codec_dupkey(c, slot, dk, ndk, &d)) {
                size_t j = ndup;
                uint64_t bit = (uint64_t)1 << (d.sig & 63);
                /* db->p is NULL until the first entry is recorded */
                codec_dup *seen = ndup ? (codec_dup *)(void *)(db->p + base) : NULL;
                if (sigs & bit) {           /* else no entry has its sig */
                    for (j = 0; j < ndup; j++)
                        if (codec_dupeq(&seen[j], &d))
                            break;
                }
                if (j < ndup) {
                    char a[32];
                    codec_err(c, "duplicate", "same pg/channelKey and pay_method as pay_methods[%s]",
                              codec_lld(a, sizeof a, seen[j].index));
                } else if (i < n) {
                    int k;
                    /* the entry may change under a finalizer: keep its
                     * strings (a known enum value is kept alive already) */
                    for (k = 0; k < ndk; k++) {
                        const plink_field *f = &sc->fields[dk[k]];
                        const char *ds = d.s[k];
                        size_t q;
                        if (!ds || (f->choices && codec_enum_hit(c->nm, f, ds)))
                            continue;
                        if (c->dkfmt[dk[k]]) {      /* kept below, until the end */
                            c->okstr = ds;
                            c->okfield = f;
                        }
                        /* the same string as an earlier entry's (the pg
                         * of each entry, mostly: the last one's) is kept
                         * already */
                        for (q = ndup; ds && q > 0; q--)
                            if (seen[q - 1].s[k] == ds)
                                ds = NULL;
                        if (ds) {
                            lua_pushvalue(L, slot[dk[k]]);
                            codec_anchor(c);
                        }
                    }
                    sigs |= bit;
                    d.index = i;
                    memcpy(plink_buf_room(L, db, sizeof d), &d, sizeof d);
                    db->len += sizeof d;
                    ndup++;
                }
            }
        }
        lua_settop(L, e - 1);
    }
    fr_pop(c);
    plink_buf_addc(L, out, ']');
    db->len = base;
    c->nanc = nanc;                     /* the anchors go: so does okstr */
    c->okstr = NULL;
    c->okfield = NULL;
}

/* ---- custom_data: any JSON value -------------------------------------- */

static void codec_json(codec *c, int idx);

static void codec_json_number(codec *c, int idx)
{
    lua_State *L = c->L;
    plink_buf *out = &c->b->out;
    lua_Number d;
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        plink_buf_addint(L, out, (long long)lua_tointeger(L, idx));
        return;
    }
#endif
    d = lua_tonumber(L, idx);
    if (d != d || isinf(d)) {
        codec_err(c, "range", "NaN and infinity cannot be written as JSON");
        return;
    }
    if (fabs(d) < 9.2e18 && codec_whole(d))  /* exact in a long long */
        plink_buf_addint(L, out, (long long)d);
    else
        plink_buf_addfloat(L, out, d);
}

static void codec_json_table(codec *c, int t)
{
    lua_State *L = c->L;
    plink_buf *out = &c->b->out;
    const void *me = lua_topointer(L, t);
    size_t kbase = c->b->keys.len;
    long long n = 0, k, kmax = 0;
    int nstr = 0, nint = 0, i, nanc = c->nanc, base;
    if (c->depth >= PLINK_MAX_DEPTH) {
        codec_err(c, "range", "nested deeper than %d tables", PLINK_MAX_DEPTH);
        return;
    }
    for (i = 0; i < c->depth; i++) {
        if (c->anc[i] == me) {
            codec_err(c, "range", "refers back to a table that contains it (a cycle)");
            return;
        }
    }
    luaL_checkstack(L, 2 * 8 + 6, "portone.link");
    base = lua_gettop(L);
    /* classify the keys: 1..n, strings, or something JSON cannot hold;
     * while they are all strings, keep each key and value: the first
     * CODEC_STACKKEYS on the stack, as lua_next leaves them (a copy of the
     * key goes on top for the next step; val is then minus the value's
     * index), the others in the anchor table (val is the slot) */
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int kt = lua_type(L, -2);
        n++;
        if (kt == LUA_TSTRING) {
            if (++nstr == n) {
                if (n <= CODEC_STACKKEYS) {
                    /* the value is at base + 2n: every key so far
                     * left its value and a copy of itself */
                    codec_keys_push_at(c, -2, kt, (int)n, 0)->val = -(base + 2 * (int)n);
                    if (n % 8 == 0)
                        luaL_checkstack(L, 2 * 8 + 6, "portone.link");
                    lua_pushvalue(L, -2);
                } else {
                    int val = codec_anchor(c);      /* pops the value */
                    codec_keys_push(c, (int)n)->val = val;
                }
                continue;
            }
        } else if (kt == LUA_TNUMBER && codec_integer(L, -2, &k) == NUM_OK && k >= 1) {
            nint++;
            if (k > kmax)
                kmax = k;
        }
        lua_pop(L, 1);
    }
    if (n == 0) {
        plink_buf_addlit(L, out, "{}");
        return;
    }
    c->anc[c->depth++] = me;
    /* n distinct keys in 1..n are exactly 1..n (#t == n is not enough:
     * see codec_list) */
    if (nint == n && kmax == n) {
        plink_buf_addc(L, out, '[');
        for (k = 1; k <= n && !c->big; k++) {
            fr_index(c, k);
            if (k > 1)
                plink_buf_addc(L, out, ',');
            lua_rawgeti(L, t, (int)k);       /* at base + 1: no key was kept */
            codec_json(c, base + 1);
            lua_pop(L, 1);
            codec_checksize(c);
            fr_pop(c);
        }
        plink_buf_addc(L, out, ']');
    } else if (nstr == n) {
        if (n > 1)
            codec_sortkeys(codec_keys_at(c, kbase), (size_t)n);
        plink_buf_addc(L, out, '{');
        for (i = 0; i < (int)n && !c->big; i++) {
            /* a copy: the recursion may move the key buffer */
            codec_key key = codec_keys_at(c, kbase)[i];
            plink_utf8_info info;
            fr_key(c, key.s, key.n);
            if (i > 0)
                plink_buf_addc(L, out, ',');
            if (codec_utf8(c, key.s, key.n, 0, &info)) {
                codec_put(c, key.s, key.n, info.esc);
                plink_buf_addc(L, out, ':');
            }
            if (key.val < 0) {
                codec_json(c, -key.val);
            } else {
                lua_rawgeti(L, CODEC_ANCHORS, key.val);
                codec_json(c, lua_gettop(L));
                lua_pop(L, 1);
            }
            codec_checksize(c);
            fr_pop(c);
        }
        plink_buf_addc(L, out, '}');
    } else if (nstr + nint == n && nstr > 0) {
        codec_err(c, "type", "has both string and number keys: neither a JSON array nor an object");
    } else if (nint == n) {
        codec_err(c, "type", "is a sparse array: keys must be exactly 1..n");
    } else {
        codec_err(c, "type", "has keys that are neither strings nor 1..n integers");
    }
    c->b->keys.len = kbase;
    c->nanc = nanc;
    c->depth--;
    lua_settop(L, base);
}

static void codec_json(codec *c, int idx)
{
    lua_State *L = c->L;
    plink_buf *out = &c->b->out;
    if (c->big)
        return;
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            plink_buf_addlit(L, out, "true");
        else
            plink_buf_addlit(L, out, "false");
        break;
    case LUA_TNUMBER:
        codec_json_number(c, idx);
        break;
    case LUA_TSTRING: {
        plink_utf8_info info;
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (codec_utf8(c, s, n, 0, &info))
            codec_put(c, s, n, info.esc);
        break;
    }
    case LUA_TTABLE:
        codec_json_table(c, idx);
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            plink_buf_addlit(L, out, "null");
            break;
        }
        /* fall through */
    default:
        codec_err(c, "type", "cannot be written as JSON: %s", codec_typename(L, idx));
        break;
    }
}

/* ---- dispatch and entry points ---------------------------------------- */

static void codec_value(codec *c, const plink_field *f, int idx)
{
    switch (f->kind) {
    case PLINK_K_STRING:
        codec_string(c, f, idx);
        break;
    case PLINK_K_INTEGER:
        codec_int(c, f, idx);
        break;
    case PLINK_K_JSON:
        c->depth = 0;
        codec_json(c, idx);
        break;
    case PLINK_K_LIST:
        if (!lua_istable(c->L, idx))
            codec_err(c, "type", "must be an array of tables, got %s",
                      codec_typename(c->L, idx));
        else
            codec_list(c, idx, f->sub);
        break;
    case PLINK_K_OBJECT:
        if (!lua_istable(c->L, idx))
            codec_err(c, "type", "must be a table, got %s", codec_typename(c->L, idx));
        else {
            int slot[CODEC_MAXF];
            lua_settop(c->L, codec_object(c, idx, f->sub, slot));
        }
        break;
    case PLINK_K_EXPIRY:
        codec_expiry(c, idx);
        break;
    }
}

static int codec_gc(lua_State *L)
{
    codec_bufs *b = (codec_bufs *)luaL_checkudata(L, 1, CODEC_MT);
    plink_buf_free(&b->out);
    plink_buf_free(&b->path);
    plink_buf_free(&b->keys);
    plink_buf_free(&b->dups);
    return 0;
}

static codec_bufs *codec_newbufs(lua_State *L)
{
    codec_bufs *b = (codec_bufs *)lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, CODEC_MT);
    lua_setmetatable(L, -2);
    return b;
}

static void codec_trim(plink_buf *b)
{
    b->len = 0;
    b->off = 0;
    if (b->cap > CODEC_KEEP)
        plink_buf_free(b);
}

/* The shared walk. Leaves the error list at CODEC_ERRS; returns its
 * length. On success with `encode`, the body is in b->out. */
static int codec_walk(lua_State *L, int encode, lua_Number now, lua_Number limit,
                      codec_bufs **bufs);

static int codec_run(lua_State *L, int encode, codec_bufs **bufs)
{
    lua_Number now, limit;
    luaL_checktype(L, 1, LUA_TTABLE);
    now = luaL_checknumber(L, 2);
    /* NaN compares false with every expiry: it would accept any of them */
    luaL_argcheck(L, now == now, 2, "now must not be NaN");
    limit = luaL_optnumber(L, 3, PLINK_MAX_BODY);
    luaL_argcheck(L, limit >= 64, 3, "max_body_bytes must be at least 64");
    lua_settop(L, 3);
    return codec_walk(L, encode, now, limit, bufs);
}

static int codec_validate(lua_State *L);
static int codec_encode(lua_State *L);
static int codec_link_encode(lua_State *L);
static int codec_encode_held(lua_State *L);

/* Called when b->busy is found set: 1 when a walk on the shared buffers
 * may really be running below this call (a __gc finalizer calling us),
 * else 0. A raise inside a walk (out of memory; on 5.1 and LuaJIT also an
 * error in a finalizer its allocations ran) leaves busy set, and every
 * later call would take the fresh-buffers path for good. A running walk is
 * a frame of one of the codec's functions on its thread: one on another
 * thread (a coroutine a finalizer resumed) is never cleared, which is
 * safe; on the same thread, no such frame below this one means the flag
 * is stale. Rare path: the stack is only walked when busy is set. */
static int codec_inuse(lua_State *L, const codec_bufs *b)
{
    lua_Debug ar;
    int level;
    if (b->owner != L)
        return 1;
    for (level = 1; lua_getstack(L, level, &ar); level++) {
        lua_CFunction f;
        lua_getinfo(L, "f", &ar);          /* pushes the function */
        f = lua_tocfunction(L, -1);
        lua_pop(L, 1);
        if (f == codec_validate || f == codec_encode || f == codec_link_encode
            || f == codec_encode_held)
            return 1;
        /* a fused create holding the body while it sends it; not the one
         * that called us (level 1), which holds nothing yet */
        if (level > 1 && (f == plink_http_encode_create || f == plink_http_bound_create))
            return 1;
    }
    return 0;
}

/* Empties the anchor table at CODEC_ANCHORS (clearing existing fields
 * during a traversal is allowed, and allocates nothing). */
static void codec_unanchor_all(lua_State *L)
{
    lua_pushnil(L);
    while (lua_next(L, CODEC_ANCHORS)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, CODEC_ANCHORS);
    }
}

/* The walk itself: the request at 1, slots 2 and 3 free to use, the
 * arguments checked (now not NaN, limit >= 64). */
static int codec_walk(lua_State *L, int encode, lua_Number now, lua_Number limit,
                      codec_bufs **bufs)
{
    codec c;
    codec_bufs *b;
    int i;
    c.now = now;
    lua_pushnil(L);                          /* 4: error list, once needed */
    b = (codec_bufs *)lua_touserdata(L, CODEC_UP_BUFS);
    c.nm = b->nm;
    if (b->busy && codec_inuse(L, b)) {     /* a finalizer calling us */
        lua_newtable(L);                     /* 5: anchors of our own */
        b = codec_newbufs(L);                /* 6 (CODEC_OWNBUFS) */
    } else {
        lua_pushvalue(L, CODEC_UP_ANCHORS);  /* 5 */
        if (b->busy)                         /* stale: let go what it anchored */
            codec_unanchor_all(L);
    }
    b->busy = 1;
    b->owner = L;
    b->out.len = b->path.len = b->keys.len = b->dups.len = 0;
    b->out.off = !encode;
    c.L = L;
    c.b = b;
    c.nerr = 0;
    c.nanc = c.maxanc = 0;
    c.amount = 0;
    c.amount_ok = 0;
    c.expires = 0;
    c.limit = limit >= 1e15 ? (size_t)1e15 : (size_t)limit;
    c.big = 0;
    c.depth = 0;
    c.nfr = 0;
    c.okstr = NULL;
    c.okfield = NULL;
    c.room = 0;
    c.gen = c.roomgen = 0;
    /* payment_info is written already escaped (plink_buf_addstring2), so
     * the body is built in one buffer, in one pass */
    plink_buf_addlit(L, &b->out, "{\"payment_info\":\"");
    {
        int slot[CODEC_MAXF];
        lua_settop(L, codec_object(&c, 1, &plink_request_schema, slot));
    }
    /* the tail counts toward the cap too (validate counts what encode
     * writes, so both give the same list) */
    plink_buf_addlit(L, &b->out, "\",\"expired_at\":");
    plink_buf_addint(L, &b->out, c.expires);
    plink_buf_addc(L, &b->out, '}');
    fr_name(&c, "expired_at", 10);
    codec_checksize(&c);
    fr_pop(&c);
    /* let the anchored strings go */
    for (i = 1; i <= c.maxanc; i++) {
        lua_pushnil(L);
        lua_rawseti(L, CODEC_ANCHORS, i);
    }
    *bufs = b;
    return c.nerr;
}

/* Releases the buffers after the results are on the stack. */
static void codec_done(codec_bufs *b)
{
    codec_trim(&b->out);
    codec_trim(&b->path);
    codec_trim(&b->keys);
    codec_trim(&b->dups);
    b->busy = 0;
}

static int codec_validate(lua_State *L)
{
    codec_bufs *b;
    int nerr = codec_run(L, 0, &b);
    codec_done(b);
    if (nerr == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_pushvalue(L, CODEC_ERRS);
    return 2;
}

/* The results of an encode walk: the body, or nil and the error list (at
 * CODEC_ERRS); the buffers are released after the body is copied. */
static int codec_encode_result(lua_State *L, codec_bufs *b, int nerr)
{
    if (nerr == 0) {
        lua_pushlstring(L, b->out.p, b->out.len);
        codec_done(b);
        return 1;
    }
    codec_done(b);
    lua_pushnil(L);
    lua_pushvalue(L, CODEC_ERRS);
    return 2;
}

static int codec_encode(lua_State *L)
{
    codec_bufs *b;
    int nerr = codec_run(L, 1, &b);
    return codec_encode_result(L, b, nerr);
}

/* The walk of encode for the fused create of the blocking handle
 * (plink_http_encode_create, http_easy.c): the body is left in the
 * buffers, not copied into a string. Returns the buffers (a userdata,
 * which the caller keeps on its stack while it reads the body: the shared
 * ones, or a nested call's own) or false and the error list. The buffers
 * stay busy until plink_codec_release; while they are held, codec_inuse
 * sees the caller's frame, so a nested walk takes buffers of its own. */
static int codec_encode_held(lua_State *L)
{
    codec_bufs *b;
    int nerr = codec_run(L, 1, &b);
    if (nerr != 0) {
        codec_done(b);
        lua_pushboolean(L, 0);
        lua_pushvalue(L, CODEC_ERRS);
        return 2;
    }
    if (b == lua_touserdata(L, CODEC_UP_BUFS))
        lua_pushvalue(L, CODEC_UP_BUFS);
    else
        lua_pushvalue(L, CODEC_OWNBUFS);
    return 1;
}

const char *plink_codec_body(lua_State *L, int idx, size_t *len)
{
    codec_bufs *b = (codec_bufs *)lua_touserdata(L, idx);
    *len = b->out.len;
    return b->out.p;
}

void plink_codec_release(lua_State *L, int idx)
{
    codec_done((codec_bufs *)lua_touserdata(L, idx));
}

/* link.encode(req [, opts]) itself (made by core.bind_encode): the common
 * call - a table, and opts absent or a plain table (no metatable) whose
 * `now` is absent or a number other than NaN and without max_body_bytes -
 * runs here, without a Lua frame in between (a tenth of an encode). Any
 * other call goes to the Lua function it was bound with, which checks the
 * arguments and raises as before; so does nothing here raise.
 * Upvalues: those of encode, then that Lua function, errors.validation
 * and os.time, then the names "max_body_bytes" and "now". */
#define CODEC_UP_SLOW  lua_upvalueindex(5)
#define CODEC_UP_TOERR lua_upvalueindex(6)
#define CODEC_UP_TIME  lua_upvalueindex(7)
#define CODEC_UP_KMAX  lua_upvalueindex(8)
#define CODEC_UP_KNOW  lua_upvalueindex(9)
static int codec_link_encode(lua_State *L)
{
    codec_bufs *b;
    int nerr, common = 0, hasnow = 0;
    lua_Number now = 0;
    lua_settop(L, 2);
    if (lua_type(L, 1) == LUA_TTABLE) {
        int t2 = lua_type(L, 2);
        if (t2 == LUA_TNIL) {
            common = 1;
        } else if (t2 == LUA_TTABLE && !lua_getmetatable(L, 2)) {
            /* no metatable: a raw get by the interned names is what
             * lua_getfield would find, without interning them per call */
            lua_pushvalue(L, CODEC_UP_KMAX);
            lua_rawget(L, 2);                    /* 3 */
            if (lua_type(L, 3) == LUA_TNIL) {
                int tn;
                lua_pushvalue(L, CODEC_UP_KNOW);
                lua_rawget(L, 2);                /* 4 */
                tn = lua_type(L, 4);
                if (tn == LUA_TNUMBER) {
                    now = lua_tonumber(L, 4);
                    hasnow = common = now == now;
                } else {
                    common = tn == LUA_TNIL;
                }
            }
        }
    }
    if (!common) {
        lua_settop(L, 2);
        lua_pushvalue(L, CODEC_UP_SLOW);
        lua_insert(L, 1);
        lua_call(L, 2, LUA_MULTRET);
        return lua_gettop(L);
    }
    lua_settop(L, 3);                            /* (req, opts, -) */
    if (!hasnow) {                               /* now = os.time() */
        lua_pushvalue(L, CODEC_UP_TIME);
        lua_call(L, 0, 1);
        lua_replace(L, 3);
        if (lua_type(L, 3) != LUA_TNUMBER || lua_tonumber(L, 3) != lua_tonumber(L, 3)) {
            /* os.time replaced by something odd: core.encode's checks */
            lua_remove(L, 2);
            nerr = codec_run(L, 1, &b);
            goto done;
        }
        now = lua_tonumber(L, 3);
    }
    nerr = codec_walk(L, 1, now, PLINK_MAX_BODY, &b);
done:
    if (codec_encode_result(L, b, nerr) == 1)
        return 1;
    /* nil, errors.validation(list) */
    lua_pushvalue(L, CODEC_UP_TOERR);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
    return 2;
}

/* core.bind_encode(slow, to_error, time) --> link.encode (above) */
static int codec_bind_encode(lua_State *L)
{
    int i;
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_settop(L, 3);
    for (i = 1; i <= 4; i++)
        lua_pushvalue(L, lua_upvalueindex(i));
    for (i = 1; i <= 3; i++)
        lua_pushvalue(L, i);
    lua_pushliteral(L, "max_body_bytes");
    lua_pushliteral(L, "now");
    lua_pushcclosure(L, codec_link_encode, 9);
    return 1;
}

/* Interns s (kept alive in the table at -2, slot ++*n), returns its
 * address and the hash slot it takes in keys (existing, or the first free). */
static unsigned codec_intern(lua_State *L, const char *const *keys,
                             const char *s, size_t len, int *n, const char **p)
{
    unsigned h;
    lua_pushlstring(L, s, len);
    *p = lua_tostring(L, -1);
    lua_rawseti(L, -2, ++*n);
    for (h = codec_hash(*p); keys[h] && keys[h] != *p; h = (h + 1) & (CODEC_NH - 1))
        ;
    return h;
}

void plink_codec_open(lua_State *L)
{
    static const luaL_Reg none[] = {{NULL, NULL}};
    codec_names *nm;
    codec_bufs *bufs;
    int k, i, n = 0;
    for (k = 0; k < PLINK_NSCHEMAS; k++) {   /* codec_object's bit set */
        if (plink_schemas[k]->nfields > CODEC_MAXF)
            luaL_error(L, "portone.link.core: a schema has more than %d fields", CODEC_MAXF);
        for (i = 0; i < plink_schemas[k]->nfields; i++) {
            if (plink_schemas[k]->fields[i].namelen + 6 > PLINK_WIRE_COPY)  /* add24 */
                luaL_error(L, "portone.link.core: a field name is too long");
            if ((plink_schemas[k]->fields[i].flags & PLINK_F_DUPKEY)
                && plink_schemas[k]->fields[i].kind != PLINK_K_STRING)
                luaL_error(L, "portone.link.core: a DUPKEY field must be a string field");
        }
    }
    plink_setmeta(L, CODEC_MT, none, codec_gc, NULL);   /* never handed out */
    bufs = codec_newbufs(L);                 /* shared by both functions */
    lua_newtable(L);                         /* the interned names */
    nm = (codec_names *)lua_newuserdata(L, sizeof *nm);
    memset(nm, 0, sizeof *nm);
    bufs->nm = nm;                           /* kept alive by the upvalue */
    nm->byobj = 1;                           /* unless a name has no address */
    for (k = 0; k < PLINK_NSCHEMAS; k++)
        for (i = 0; i < plink_schemas[k]->nfields; i++)
            if (plink_schemas[k]->fields[i].flags
                & (PLINK_F_REQUIRED | PLINK_F_GROUP1 | PLINK_F_GROUP2))
                nm->must[k] |= 1UL << i;
    lua_pushvalue(L, -2);                    /* the names table, on top */
    for (k = 0; k < PLINK_NSCHEMAS; k++) {
        const plink_schema *sc = plink_schemas[k];
        for (i = 0; i < sc->nfields; i++) {
            const plink_field *f = &sc->fields[i];
            const char *p;
            unsigned h;
            const void *o;
            h = codec_intern(L, nm->name, f->name, f->namelen, &n, &p);
            lua_rawgeti(L, -1, n);           /* the name, kept in the table */
            o = lua_topointer(L, -1);
            lua_pop(L, 1);
            if (o) {
                unsigned ho = codec_hash(o);
                for (; nm->byo[ho].obj && nm->byo[ho].obj != o; ho = (ho + 1) & (CODEC_NH - 1))
                    ;
                if (!nm->byo[ho].obj) {
                    int s;
                    nm->byo[ho].obj = o;
                    for (s = 0; s < PLINK_NSCHEMAS; s++)
                        nm->byo[ho].at[s] = -1;
                }
                nm->byo[ho].at[k] = (signed char)i;
            } else {
                nm->byobj = 0;
            }
            if (!nm->name[h]) {
                int s;
                nm->name[h] = p;
                for (s = 0; s < PLINK_NSCHEMAS; s++)
                    nm->at[h][s] = -1;
            }
            nm->at[h][k] = (signed char)i;
            if (f->choices) {
                const char *const *e;
                for (e = f->choices; *e; e++) {
                    unsigned v = codec_intern(L, nm->val, *e, strlen(*e), &n, &p);
                    if (!nm->val[v]) {
                        nm->val[v] = p;
                        nm->list[v] = f->choices;
                    }
                }
            }
        }
    }
    lua_pop(L, 1);
    lua_newtable(L);                         /* the anchor table */
    /* stack: module, bufs, names, index, anchors */
    for (k = 0; k < 3; k++) {
        static const char *const fname[] = {"validate", "encode", "bind_encode"};
        static const lua_CFunction fn[] = {codec_validate, codec_encode, codec_bind_encode};
        lua_pushvalue(L, -4);
        lua_pushvalue(L, -4);
        lua_pushvalue(L, -4);
        lua_pushvalue(L, -4);
        lua_pushcclosure(L, fn[k], 4);
        lua_setfield(L, -6, fname[k]);
    }
    lua_pushcclosure(L, codec_encode_held, 4);   /* for http_easy.c */
    lua_setfield(L, LUA_REGISTRYINDEX, PLINK_CODEC_HELD);
}
