/* codec.c - core.validate and core.encode: one walk over a request table
 * that checks every rule of rules.c and writes the wire body as it goes.
 *
 *   core.validate(req, now) --> true | false, list
 *   core.encode(req, now)   --> body | nil, list
 *
 * list is an array of {field =, code =, message =} (+ suggestion = for
 * unknown_field), in a stable order: descriptor order within a table, the
 * unknown keys of that table after its known ones, sorted by key.
 *
 * Wire body (DESIGN §1), exactly:
 *   {"payment_info":"<payment_info JSON, escaped as a string>","expired_at":N}
 * payment_info keys come in descriptor order (rules.c); absent optional
 * fields are left out.
 *
 * Caveats, in the manner of lua-cjson:
 *  - Tables are read raw (lua_rawget / lua_next): __index, __pairs and
 *    other metamethods are ignored, so no Lua code runs during the walk.
 *  - custom_data: a table whose keys are exactly 1..n is an array; a table
 *    with only string keys is an object, written with its keys sorted by
 *    byte order (the output is deterministic); an empty table is written as
 *    an empty object {}. Sparse arrays, mixed keys, other key types, cycles,
 *    nesting deeper than 32 tables, NaN/inf, functions, userdata and threads
 *    are validation errors naming the path (cycles, nesting and NaN/inf
 *    are code "range", the others "type"). cjson.null (a NULL light
 *    userdata) is null. A table reachable twice without a cycle is written
 *    twice.
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
 * The body is built in one buffer, in one pass: payment_info is written
 * already escaped as a JSON string (plink_buf_addstring2), which gives the
 * same bytes as writing it and escaping it again, without the second pass.
 *
 * Memory: the output, path and scratch buffers live in a userdata (an
 * upvalue, reused between calls) whose __gc frees them, so a Lua memory
 * error raised anywhere in the walk leaks nothing. If a call begins while
 * another is running (a __gc finalizer calling encode), it uses a fresh
 * userdata of its own. Arguments are checked before anything is allocated.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "plink.h"
#include "jsonbuf.h"
#include "rules.h"
#include "rfc3339.h"
#include "utf8.h"

#define CODEC_MT "portone.link.codec_buffers"
#define CODEC_KEEP (256 * 1024)   /* larger buffers are freed after a call */

typedef struct codec_bufs {
    plink_buf out;     /* the body, payment_info written escaped */
    plink_buf path;    /* field path of the value being walked */
    plink_buf keys;    /* stack of key lists (codec_key) */
    plink_buf dups;    /* pay_methods keys seen (codec_dup) */
    int busy;
} codec_bufs;

typedef struct codec_key {
    const char *s;     /* string keys: bytes owned by the table */
    size_t n;
    lua_Number num;    /* number keys */
    int type;          /* lua_type of the key */
    int seq;           /* traversal order, to keep the sort stable */
} codec_key;

#define CODEC_DUPKEYS 4
typedef struct codec_dup {
    const char *s[CODEC_DUPKEYS];
    size_t n[CODEC_DUPKEYS];
    long long index;
} codec_dup;

typedef struct codec {
    lua_State *L;
    codec_bufs *b;
    int errs;               /* stack index of the error list */
    int nerr;
    lua_Number now;
    long long amount;
    int amount_ok;
    long long expires;
    int depth;
    const void *anc[PLINK_MAX_DEPTH + 1];   /* tables on the custom_data path */
} codec;

/* ---- field paths -------------------------------------------------------- */

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
static void codec_quote(codec *c, plink_buf *b, const char *s, size_t n)
{
    lua_State *L = c->L;
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
            char tmp[8];
            int k = snprintf(tmp, sizeof tmp, "\\%u", (unsigned)ch);
            plink_buf_add(L, b, tmp, (size_t)k);
        } else {
            plink_buf_addc(L, b, (char)ch);
        }
    }
    plink_buf_addc(L, b, '"');
}

/* Appends ".key" ("key" at the top, ["odd key"] when not an identifier);
 * returns the length to restore. */
static size_t codec_path_key(codec *c, const char *s, size_t n)
{
    plink_buf *p = &c->b->path;
    size_t mark = p->len;
    if (codec_isident(s, n)) {
        if (p->len)
            plink_buf_addc(c->L, p, '.');
        plink_buf_add(c->L, p, s, n);
    } else {
        plink_buf_addc(c->L, p, '[');
        codec_quote(c, p, s, n);
        plink_buf_addc(c->L, p, ']');
    }
    return mark;
}

/* The same for a descriptor's name (always an identifier). */
static size_t codec_path_name(codec *c, const plink_field *f)
{
    plink_buf *p = &c->b->path;
    size_t mark = p->len;
    if (p->len)
        plink_buf_addc(c->L, p, '.');
    plink_buf_add(c->L, p, f->name, f->namelen);
    return mark;
}

static size_t codec_path_index(codec *c, long long i)
{
    plink_buf *p = &c->b->path;
    size_t mark = p->len;
    plink_buf_addc(c->L, p, '[');
    plink_buf_addint(c->L, p, i);
    plink_buf_addc(c->L, p, ']');
    return mark;
}

/* [1], [1.5], [true], [table] ... for keys that are not strings */
static size_t codec_path_other(codec *c, const codec_key *k)
{
    plink_buf *p = &c->b->path;
    size_t mark = p->len;
    char tmp[48];
    int len;
    if (k->type == LUA_TNUMBER) {
        if (floor(k->num) == k->num && fabs(k->num) < 1e15)
            len = snprintf(tmp, sizeof tmp, "[%.0f]", k->num);
        else
            len = snprintf(tmp, sizeof tmp, "[%.14g]", k->num);
    } else if (k->type == LUA_TBOOLEAN) {
        len = snprintf(tmp, sizeof tmp, "[%s]", k->num != 0 ? "true" : "false");
    } else {
        len = snprintf(tmp, sizeof tmp, "[%s]", lua_typename(c->L, k->type));
    }
    plink_buf_add(c->L, p, tmp, (size_t)len);
    return mark;
}

static void codec_path_restore(codec *c, size_t mark)
{
    c->b->path.len = mark;
}

/* ---- errors --------------------------------------------------------------- */

/* Adds {field = <path>, code =, message = <fmt ...>} to the list and stops
 * the output: nothing written after an error is used. */
static void codec_err(codec *c, const char *code, const char *fmt, ...)
{
    lua_State *L = c->L;
    va_list ap;
    if (c->nerr == 0) {                     /* the list is made on demand */
        lua_newtable(L);
        lua_replace(L, c->errs);
    }
    lua_createtable(L, 0, 4);
    lua_pushlstring(L, c->b->path.p ? c->b->path.p : "", c->b->path.len);
    lua_setfield(L, -2, "field");
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_setfield(L, -2, "message");
    lua_rawseti(L, c->errs, ++c->nerr);
    c->b->out.off = 1;
}

static const char *codec_typename(lua_State *L, int idx)
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
    if (d != d || (floor(d) != d && !isinf(d)))
        return NUM_NOTINT;
    if (d > (lua_Number)PLINK_MAX_SAFE_INT || d < -(lua_Number)PLINK_MAX_SAFE_INT) {
        *v = d < 0 ? -PLINK_MAX_SAFE_INT - 1 : PLINK_MAX_SAFE_INT + 1;
        return NUM_RANGE;
    }
    *v = (long long)d;
    return NUM_OK;
}

/* Checks the UTF-8 of s; 0 and an error when it is bad. */
static int codec_utf8(codec *c, const char *s, size_t n, int flags,
                      size_t *chars)
{
    plink_utf8_info info;
    int rc = plink_utf8_scan(s, n, flags, &info);
    if (rc == PLINK_UTF8_OK) {
        *chars = info.chars;
        return 1;
    }
    if (rc == PLINK_UTF8_CONTROL) {
        char cp[16];
        snprintf(cp, sizeof cp, "U+%04lX", info.cp);
        codec_err(c, "format", "must not contain control characters (%s at character %d)",
                  cp, (int)info.chars + 1);
    } else {
        codec_err(c, "format", "is not valid UTF-8 (%s at byte %d)",
                  plink_utf8_what(rc), (int)info.offset + 1);
    }
    return 0;
}

static void codec_string(codec *c, const plink_field *f, int idx)
{
    lua_State *L = c->L;
    const char *s;
    size_t n, chars;
    if (lua_type(L, idx) != LUA_TSTRING) {
        codec_err(c, "type", "must be a string, got %s", codec_typename(L, idx));
        return;
    }
    s = lua_tolstring(L, idx, &n);
    if (!codec_utf8(c, s, n, PLINK_UTF8_NOCTRL, &chars))
        return;
    if (n == 0 && (f->flags & (PLINK_F_REQUIRED | PLINK_F_GROUP1 | PLINK_F_GROUP2))) {
        codec_err(c, "empty", "must not be empty");
        return;
    }
    if (f->maxlen && chars > f->maxlen) {
        codec_err(c, "too_long", "must be at most %d characters, got %d",
                  (int)f->maxlen, (int)chars);
        return;
    }
    if (f->choices) {
        const char *const *e;
        for (e = f->choices; *e; e++)
            if ((*e)[0] == s[0] && strlen(*e) == n && memcmp(*e, s, n) == 0)
                break;
        if (!*e) {
            codec_err(c, "enum", "must be one of: %s", f->choices_text);
            return;
        }
    }
    if (f->format) {
        const char *msg = f->format(s, n);
        if (msg) {
            codec_err(c, "format", "%s", msg);
            return;
        }
    }
    plink_buf_addstring2(L, &c->b->out, s, n);
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
        long long inow = now >= 9.2e18 ? 0 : now <= -9.2e18 ? 0 : (long long)floor(now);
        codec_err(c, "expired", "must be in the future (%s is not after now, %s)",
                  codec_lld(a, sizeof a, v), codec_lld(b, sizeof b, inow));
        return;
    }
    if (v > CODEC_MAX_EXPIRY) {
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
        int r = memcmp(a->s, b->s, m);
        if (r)
            return r;
        if (a->n != b->n)
            return a->n < b->n ? -1 : 1;
    } else if (ra == 1 && a->num != b->num) {
        return a->num < b->num ? -1 : 1;
    }
    return a->seq - b->seq;
}

static codec_key *codec_keys_at(codec *c, size_t base)
{
    return (codec_key *)(void *)(c->b->keys.p + base);
}

/* Records the key at the top of the stack (left there by lua_next). */
static void codec_keys_push(codec *c, int seq)
{
    lua_State *L = c->L;
    plink_buf *kb = &c->b->keys;
    codec_key *k = (codec_key *)(void *)plink_buf_grow(L, kb, sizeof *k);
    k->type = lua_type(L, -1);
    k->s = NULL;
    k->n = 0;
    k->num = 0;
    k->seq = seq;
    if (k->type == LUA_TSTRING)
        k->s = lua_tolstring(L, -1, &k->n);   /* a string already: no conversion */
    else if (k->type == LUA_TNUMBER)
        k->num = lua_tonumber(L, -1);
    else if (k->type == LUA_TBOOLEAN)
        k->num = lua_toboolean(L, -1);
    kb->len += sizeof *k;
}

/* ---- tables ------------------------------------------------------------- */

/* Pushes the name of field i of sc from the cache (upvalue 2): an interned
 * string, so neither this nor the lua_rawget after it hashes the text. */
static void codec_pushname(lua_State *L, const plink_schema *sc, int i)
{
    lua_rawgeti(L, lua_upvalueindex(2), sc->base + i + 1);
}

static void codec_value(codec *c, const plink_field *f, int idx);

static int codec_count(lua_State *L, int t)
{
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        n++;
    }
    return n;
}

/* unknown_field for every key of t that sc does not name, sorted */
static void codec_unknown(codec *c, int t, const plink_schema *sc)
{
    lua_State *L = c->L;
    size_t base = c->b->keys.len;
    int n = 0, i;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t kn;
            const char *ks = lua_tolstring(L, -1, &kn);
            if (plink_rules_find(sc, ks, kn) >= 0)
                continue;
        }
        codec_keys_push(c, n++);
    }
    qsort(codec_keys_at(c, base), (size_t)n, sizeof(codec_key), codec_keycmp);
    for (i = 0; i < n; i++) {
        codec_key *k = codec_keys_at(c, base) + i;
        size_t mark;
        if (k->type == LUA_TSTRING) {
            const char *sug = plink_rules_suggest(sc, k->s, k->n);
            const char *ks = k->s;
            size_t kn = k->n;
            plink_buf *p = &c->b->path;
            size_t qs, qe;
            mark = codec_path_key(c, ks, kn);
            /* the message quotes the key as the path shows it */
            qs = p->len;
            if (codec_isident(ks, kn))
                plink_buf_add(L, p, ks, kn);
            else
                codec_quote(c, p, ks, kn);
            qe = p->len;
            lua_pushlstring(L, p->p + qs, qe - qs);
            p->len = qs;
            if (sug) {
                codec_err(c, "unknown_field", "unknown field '%s', did you mean '%s'?",
                          lua_tostring(L, -1), sug);
                lua_pushstring(L, sug);
                lua_rawgeti(L, c->errs, c->nerr);
                lua_insert(L, -2);
                lua_setfield(L, -2, "suggestion");
                lua_pop(L, 1);
            } else {
                codec_err(c, "unknown_field", "unknown field '%s'", lua_tostring(L, -1));
            }
            lua_pop(L, 1);
        } else {
            mark = codec_path_other(c, k);
            codec_err(c, "unknown_field", "unknown field: keys must be strings, got %s",
                      lua_typename(L, k->type));
        }
        codec_path_restore(c, mark);
    }
    c->b->keys.len = base;
}

/* An object of schema sc at index t: known fields in descriptor order,
 * then the unknown keys. */
static void codec_object(codec *c, int t, const plink_schema *sc)
{
    lua_State *L = c->L;
    plink_buf *out = &c->b->out;
    int i, present = 0, first = 1, g1 = 0;
    luaL_checkstack(L, 6, "portone.link");
    plink_buf_addc(L, out, '{');
    for (i = 0; i < sc->nfields; i++) {
        const plink_field *f = &sc->fields[i];
        size_t mark;
        int has;
        codec_pushname(L, sc, i);
        lua_rawget(L, t);
        has = !lua_isnil(L, -1);
        mark = codec_path_name(c, f);
        if (f->flags & PLINK_F_GROUP1)
            g1 = has;
        if (f->flags & PLINK_F_GROUP2) {
            if (has && g1) {
                codec_err(c, "conflict", "give either '%s' or '%s', not both",
                          f[-1].name, f->name);
            } else if (!has && !g1) {
                codec_path_restore(c, mark);
                mark = codec_path_name(c, f - 1);
                codec_err(c, "required", "is required (or '%s')", f->name);
            }
        } else if (!has && (f->flags & PLINK_F_REQUIRED)) {
            codec_err(c, "required", "is required");
        }
        if (has) {
            present++;
            if (!(f->flags & PLINK_F_OUTER)) {
                if (!first)
                    plink_buf_addc(L, out, ',');
                first = 0;
                plink_buf_addlit(L, out, "\\\"");
                plink_buf_add(L, out, f->name, f->namelen);
                plink_buf_addlit(L, out, "\\\":");
            }
            codec_value(c, f, lua_gettop(L));
        }
        codec_path_restore(c, mark);
        lua_pop(L, 1);
    }
    plink_buf_addc(L, out, '}');
    if (codec_count(L, t) != present)
        codec_unknown(c, t, sc);
}

/* the DUPKEY strings of the entry at t; 0 when one is not a string */
static int codec_dupkey(codec *c, int t, const plink_schema *sc, codec_dup *d)
{
    lua_State *L = c->L;
    int i, k = 0, ok = 1;
    for (i = 0; i < sc->nfields && k < CODEC_DUPKEYS; i++) {
        const plink_field *f = &sc->fields[i];
        if (!(f->flags & PLINK_F_DUPKEY))
            continue;
        codec_pushname(L, sc, i);
        lua_rawget(L, t);
        d->s[k] = NULL;
        d->n[k] = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            d->s[k] = lua_tolstring(L, -1, &d->n[k]);  /* owned by the entry */
        else if (!lua_isnil(L, -1))
            ok = 0;
        lua_pop(L, 1);
        k++;
    }
    for (; k < CODEC_DUPKEYS; k++) {
        d->s[k] = NULL;
        d->n[k] = 0;
    }
    return ok;
}

static int codec_dupeq(const codec_dup *a, const codec_dup *b)
{
    int k;
    for (k = 0; k < CODEC_DUPKEYS; k++) {
        if ((a->s[k] == NULL) != (b->s[k] == NULL) || a->n[k] != b->n[k])
            return 0;
        if (a->s[k] && memcmp(a->s[k], b->s[k], a->n[k]) != 0)
            return 0;
    }
    return 1;
}

/* An array 1..n (n >= 1) of objects of schema sc, no two with the same
 * DUPKEY fields. */
static void codec_list(codec *c, int t, const plink_schema *sc)
{
    lua_State *L = c->L;
    plink_buf *out = &c->b->out, *db = &c->b->dups;
    long long n = 0, i;
    int seq = 1;
    size_t base = db->len, ndup = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        long long k;
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER || codec_integer(L, -1, &k) != NUM_OK
            || k < 1)
            seq = 0;
        n++;
    }
    if (seq && n > 0 && (long long)plink_rawlen(L, t) != n)
        seq = 0;
    if (!seq) {
        codec_err(c, "type", "must be an array (keys 1..n) of tables");
        return;
    }
    if (n == 0) {
        codec_err(c, "empty", "must have at least one entry");
        return;
    }
    luaL_checkstack(L, 4, "portone.link");
    plink_buf_addc(L, out, '[');
    for (i = 1; i <= n; i++) {
        size_t mark = codec_path_index(c, i);
        int e;
        if (i > 1)
            plink_buf_addc(L, out, ',');
        lua_rawgeti(L, t, (int)i);
        e = lua_gettop(L);
        if (!lua_istable(L, e)) {
            codec_err(c, "type", "must be a table, got %s", codec_typename(L, e));
        } else {
            codec_dup d;
            codec_object(c, e, sc);
            if (codec_dupkey(c, e, sc, &d)) {
                size_t j;
                /* db->p is NULL until the first entry is recorded */
                codec_dup *seen = ndup ? (codec_dup *)(void *)(db->p + base) : NULL;
                for (j = 0; j < ndup; j++)
                    if (codec_dupeq(&seen[j], &d))
                        break;
                if (j < ndup) {
                    char a[32];
                    codec_err(c, "duplicate", "same pg/channelKey and pay_method as pay_methods[%s]",
                              codec_lld(a, sizeof a, seen[j].index));
                } else {
                    d.index = i;
                    memcpy(plink_buf_grow(L, db, sizeof d), &d, sizeof d);
                    db->len += sizeof d;
                    ndup++;
                }
            }
        }
        lua_pop(L, 1);
        codec_path_restore(c, mark);
    }
    plink_buf_addc(L, out, ']');
    db->len = base;
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
    if (floor(d) == d && fabs(d) < 9.2e18)    /* exact in a long long */
        plink_buf_addint(L, out, (long long)d);
    else
        plink_buf_addfloat(L, out, d);
}

static void codec_json_table(codec *c, int t)
{
    lua_State *L = c->L;
    plink_buf *out = &c->b->out;
    const void *me = lua_topointer(L, t);
    long long n = 0, k;
    int nstr = 0, nint = 0, i;
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
    luaL_checkstack(L, 6, "portone.link");
    /* classify the keys: 1..n, strings, or something JSON cannot hold */
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int kt = lua_type(L, -2);
        lua_pop(L, 1);
        n++;
        if (kt == LUA_TSTRING)
            nstr++;
        else if (kt == LUA_TNUMBER && codec_integer(L, -1, &k) == NUM_OK && k >= 1)
            nint++;
    }
    if (n == 0) {
        plink_buf_addlit(L, out, "{}");
        return;
    }
    c->anc[c->depth++] = me;
    if (nint == n && (long long)plink_rawlen(L, t) == n) {
        plink_buf_addc(L, out, '[');
        for (k = 1; k <= n; k++) {
            size_t mark = codec_path_index(c, k);
            if (k > 1)
                plink_buf_addc(L, out, ',');
            lua_rawgeti(L, t, (int)k);
            codec_json(c, lua_gettop(L));
            lua_pop(L, 1);
            codec_path_restore(c, mark);
        }
        plink_buf_addc(L, out, ']');
    } else if (nstr == n) {
        size_t base = c->b->keys.len;
        int j = 0;
        lua_pushnil(L);
        while (lua_next(L, t)) {
            lua_pop(L, 1);
            codec_keys_push(c, j++);
        }
        qsort(codec_keys_at(c, base), (size_t)n, sizeof(codec_key), codec_keycmp);
        plink_buf_addc(L, out, '{');
        for (i = 0; i < (int)n; i++) {
            /* re-read: the recursion may have moved the key buffer */
            const char *ks = codec_keys_at(c, base)[i].s;
            size_t kn = codec_keys_at(c, base)[i].n, chars;
            size_t mark = codec_path_key(c, ks, kn);
            if (i > 0)
                plink_buf_addc(L, out, ',');
            if (codec_utf8(c, ks, kn, 0, &chars)) {
                plink_buf_addstring2(L, out, ks, kn);
                plink_buf_addc(L, out, ':');
            }
            lua_pushlstring(L, ks, kn);
            lua_rawget(L, t);
            codec_json(c, lua_gettop(L));
            lua_pop(L, 1);
            codec_path_restore(c, mark);
        }
        plink_buf_addc(L, out, '}');
        c->b->keys.len = base;
    } else if (nstr + nint == n && nstr > 0) {
        codec_err(c, "type", "has both string and number keys: neither a JSON array nor an object");
    } else if (nint == n) {
        codec_err(c, "type", "is a sparse array: keys must be exactly 1..n");
    } else {
        codec_err(c, "type", "has keys that are neither strings nor 1..n integers");
    }
    c->depth--;
}

static void codec_json(codec *c, int idx)
{
    lua_State *L = c->L;
    plink_buf *out = &c->b->out;
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
        size_t n, chars;
        const char *s = lua_tolstring(L, idx, &n);
        if (codec_utf8(c, s, n, 0, &chars))
            plink_buf_addstring2(L, out, s, n);
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
        else
            codec_object(c, idx, f->sub);
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

/* The shared walk. Leaves the error list at index 3; returns its length.
 * On success with `encode`, the body is in b->out. */
static int codec_run(lua_State *L, int encode, codec_bufs **bufs)
{
    codec c;
    codec_bufs *b;
    luaL_checktype(L, 1, LUA_TTABLE);
    c.now = luaL_checknumber(L, 2);
    /* NaN compares false with every expiry: it would accept any of them */
    luaL_argcheck(L, c.now == c.now, 2, "now must not be NaN");
    lua_settop(L, 2);
    lua_pushnil(L);                          /* 3: error list, once needed */
    b = (codec_bufs *)lua_touserdata(L, lua_upvalueindex(1));
    if (b->busy)
        b = codec_newbufs(L);                /* 4: a private set */
    b->busy = 1;
    b->out.len = b->path.len = b->keys.len = b->dups.len = 0;
    b->out.off = !encode;
    c.L = L;
    c.b = b;
    c.errs = 3;
    c.nerr = 0;
    c.amount = 0;
    c.amount_ok = 0;
    c.expires = 0;
    c.depth = 0;
    /* payment_info is written already escaped (plink_buf_addstring2), so
     * the body is built in one buffer, in one pass */
    plink_buf_addlit(L, &b->out, "{\"payment_info\":\"");
    codec_object(&c, 1, &plink_request_schema);
    if (encode && c.nerr == 0) {
        plink_buf *w = &b->out;
        plink_buf_addlit(L, w, "\",\"expired_at\":");
        plink_buf_addint(L, w, c.expires);
        plink_buf_addc(L, w, '}');
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
    lua_pushvalue(L, 3);
    return 2;
}

static int codec_encode(lua_State *L)
{
    codec_bufs *b;
    int nerr = codec_run(L, 1, &b);
    if (nerr == 0) {
        lua_pushlstring(L, b->out.p, b->out.len);
        codec_done(b);
        return 1;
    }
    codec_done(b);
    lua_pushnil(L);
    lua_pushvalue(L, 3);
    return 2;
}

void plink_codec_open(lua_State *L)
{
    static const luaL_Reg none[] = {{NULL, NULL}};
    int k, i, n = 0;
    plink_setmeta(L, CODEC_MT, none, codec_gc, NULL);   /* never handed out */
    codec_newbufs(L);                        /* shared by both functions */
    lua_newtable(L);                         /* field names, by number */
    for (k = 0; k < PLINK_NSCHEMAS; k++) {
        const plink_schema *sc = plink_schemas[k];
        for (i = 0; i < sc->nfields; i++) {
            lua_pushlstring(L, sc->fields[i].name, sc->fields[i].namelen);
            lua_rawseti(L, -2, ++n);
        }
    }
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, codec_validate, 2);
    lua_setfield(L, -4, "validate");
    lua_pushcclosure(L, codec_encode, 2);
    lua_setfield(L, -2, "encode");
}
