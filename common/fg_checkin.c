/* SPDX-License-Identifier: Apache-2.0 */
/* Check-in schema v1: JSON (yajl's event parser) and msgpack (a bounded
 * in-place reader) bodies are turned into a format-neutral list of field
 * values, which one validator checks and copies into an fg_checkin; the
 * Kafka record value is written with msgpack_packer into the caller's fixed
 * buffer. */
#include "fg_checkin.h"

#include <inttypes.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "fg_mpbuf.h"
#include "fg_utf8.h"

/* Deepest container nesting accepted in a msgpack body (the body itself is
 * level 1). */
#define FG_MSGPACK_MAX_DEPTH 32

/* ---- fields ---------------------------------------------------------- */

/* Schema fields in validation order (the first bad one is reported), then
 * the gateway-side fields of a record. */
enum {
    F_DEVICE_ID,
    F_SKU_REGION,
    F_REGION,
    F_MODEL,
    F_FW,
    F_MCC,
    F_SEQ,
    F_TS,
    F_NCHECKIN, /* fields a device may send */
    F_V = F_NCHECKIN,
    F_RECV_TS,
    F_GW,
    F_NRECORD /* fields of a record value */
};

static const char *const field_name[F_NRECORD] = {
    "device_id", "sku_region", "region", "model", "fw", "mcc",
    "seq",       "ts",         "v",      "recv_ts", "gw"};

/* The field a key names, or -1; only the first nfields are considered. */
static int field_lookup(const char *k, size_t n, int nfields)
{
    int f = -1;
    switch (n) {
    case 1: f = k[0] == 'v' ? F_V : -1; break;
    case 2:
        if (k[0] == 'f' && k[1] == 'w')
            f = F_FW;
        else if (k[0] == 't' && k[1] == 's')
            f = F_TS;
        else if (k[0] == 'g' && k[1] == 'w')
            f = F_GW;
        break;
    case 3:
        if (memcmp(k, "mcc", 3) == 0)
            f = F_MCC;
        else if (memcmp(k, "seq", 3) == 0)
            f = F_SEQ;
        break;
    case 5: f = memcmp(k, "model", 5) == 0 ? F_MODEL : -1; break;
    case 6: f = memcmp(k, "region", 6) == 0 ? F_REGION : -1; break;
    case 7: f = memcmp(k, "recv_ts", 7) == 0 ? F_RECV_TS : -1; break;
    case 9: f = memcmp(k, "device_id", 9) == 0 ? F_DEVICE_ID : -1; break;
    case 10: f = memcmp(k, "sku_region", 10) == 0 ? F_SKU_REGION : -1; break;
    default: break;
    }
    return f < nfields ? f : -1;
}

/* One field value as found in the body, whatever the encoding. null and
 * nil count as absent. */
typedef enum val_kind {
    VK_ABSENT = 0,
    VK_STR,
    VK_UINT, /* non-negative integer in u */
    VK_NINT, /* negative integer in i */
    VK_OTHER /* any other type, named by type */
} val_kind;

typedef struct fg_val {
    val_kind kind;
    const char *type;
    const char *s;
    size_t len;
    uint64_t u;
    int64_t i;
} fg_val;

/* ---- errors ---------------------------------------------------------- */

static void err_clear(fg_checkin_error *err)
{
    err->code = NULL;
    err->field = NULL;
    err->detail[0] = '\0';
}

static fg_status err_set(fg_checkin_error *err, const char *code,
                         const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static fg_status err_set(fg_checkin_error *err, const char *code,
                         const char *field, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    err->field = field;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
    va_end(ap);
    return FG_EINVAL;
}

/* ---- validation ------------------------------------------------------ */

/* Bits lo..hi of a 64-bit mask, for the character classes below. */
#define FG_BITS(lo, hi) (((~0ull) >> (63 - ((hi) - (lo)))) << (lo))

/* A-Z a-z 0-9 . _ : - as a 128-bit set: characters 0-63, then 64-127. */
static const uint64_t device_id_set[2] = {
    FG_BITS('-', '.') | FG_BITS('0', ':'),
    FG_BITS('A' - 64, 'Z' - 64) | FG_BITS('_' - 64, '_' - 64) |
        FG_BITS('a' - 64, 'z' - 64)};

static bool device_id_char(unsigned char c)
{
    return c < 128 && ((device_id_set[c >> 6] >> (c & 63)) & 1u) != 0;
}

static fg_status wrong_type(fg_checkin_error *err, int f, const char *want,
                            const fg_val *v)
{
    return err_set(err, "wrong_type", field_name[f], "%s must be %s, not %s",
                   field_name[f], want,
                   v->kind == VK_STR                         ? "a string"
                   : v->kind == VK_UINT || v->kind == VK_NINT ? "an integer"
                                                              : v->type);
}

static fg_status check_device_id(const fg_val *v, fg_checkin *ci,
                                 fg_checkin_error *err)
{
    const int f = F_DEVICE_ID;
    if (v->kind == VK_ABSENT)
        return err_set(err, "missing_field", field_name[f], "%s is required",
                       field_name[f]);
    if (v->kind != VK_STR)
        return wrong_type(err, f, "a string", v);
    if (v->len == 0)
        return err_set(err, "invalid_value", field_name[f],
                       "%s must not be empty", field_name[f]);
    if (v->len > FG_DEVICE_ID_MAX)
        return err_set(err, "too_long", field_name[f],
                       "%s is %zu bytes, at most %d allowed", field_name[f],
                       v->len, FG_DEVICE_ID_MAX);
    for (size_t i = 0; i < v->len; i++) {
        if (!device_id_char((unsigned char)v->s[i]))
            return err_set(err, "invalid_value", field_name[f],
                           "%s may only contain A-Z a-z 0-9 . _ : -",
                           field_name[f]);
    }
    memcpy(ci->device_id, v->s, v->len);
    ci->device_id[v->len] = '\0';
    ci->device_id_len = (uint16_t)v->len;
    return FG_OK;
}

static fg_status check_region(int f, const fg_val *v, char *out,
                              uint16_t *out_len, fg_checkin_error *err)
{
    if (v->kind == VK_ABSENT)
        return err_set(err, "missing_field", field_name[f], "%s is required",
                       field_name[f]);
    if (v->kind != VK_STR)
        return wrong_type(err, f, "a string", v);
    if (!fg_region_valid(v->s, v->len))
        return err_set(err, "invalid_value", field_name[f],
                       "%s must be an upper-case ISO 3166 code such as CU or "
                       "UA-43",
                       field_name[f]);
    memcpy(out, v->s, v->len);
    out[v->len] = '\0';
    *out_len = (uint16_t)v->len;
    return FG_OK;
}

/* model and fw: UTF-8 text of at most max code points. */
static fg_status check_text(int f, const fg_val *v, size_t max, char *out,
                            uint16_t *out_len, fg_checkin_error *err)
{
    size_t cps = 0;
    int rc;
    if (v->kind != VK_STR)
        return wrong_type(err, f, "a string", v);
    rc = fg_utf8_check((const unsigned char *)v->s, v->len, 0, &cps);
    if (rc == FG_UTF8_BAD)
        return err_set(err, "invalid_value", field_name[f],
                       "%s is not valid UTF-8", field_name[f]);
    if (rc == FG_UTF8_CONTROL)
        return err_set(err, "invalid_value", field_name[f],
                       "%s contains a control character", field_name[f]);
    if (cps > max)
        return err_set(err, "too_long", field_name[f],
                       "%s is %zu characters, at most %zu allowed",
                       field_name[f], cps, max);
    /* Valid UTF-8 of at most max code points fits in max * 4 bytes. */
    if (v->len)
        memcpy(out, v->s, v->len);
    out[v->len] = '\0';
    *out_len = (uint16_t)v->len;
    return FG_OK;
}

/* An integer within [min, max]; absent values are the caller's business. */
static fg_status check_uint(int f, const fg_val *v, uint64_t max,
                            uint64_t *out, fg_checkin_error *err)
{
    if (v->kind == VK_NINT ||
        (v->kind == VK_UINT && v->u > max))
        return err_set(err, "out_of_range", field_name[f],
                       "%s must be between 0 and %" PRIu64, field_name[f],
                       max);
    if (v->kind != VK_UINT)
        return wrong_type(err, f, "an integer", v);
    *out = v->u;
    return FG_OK;
}

static fg_status check_int64(int f, const fg_val *v, int64_t *out,
                             fg_checkin_error *err)
{
    if (v->kind == VK_UINT && v->u > (uint64_t)INT64_MAX)
        return err_set(err, "out_of_range", field_name[f],
                       "%s must fit in a signed 64-bit integer",
                       field_name[f]);
    if (v->kind == VK_UINT) {
        *out = (int64_t)v->u;
        return FG_OK;
    }
    if (v->kind == VK_NINT) {
        *out = v->i;
        return FG_OK;
    }
    return wrong_type(err, f, "an integer", v);
}

/* Checks the schema fields in vals[0..F_NCHECKIN) and fills ci. */
static fg_status checkin_validate(const fg_val *vals, fg_checkin *ci,
                                  fg_checkin_error *err)
{
    fg_status st;
    uint64_t u = 0;

    ci->device_id[0] = ci->sku_region[0] = ci->region[0] = '\0';
    ci->model[0] = ci->fw[0] = '\0';
    ci->device_id_len = ci->sku_region_len = ci->region_len = 0;
    ci->model_len = ci->fw_len = 0;
    ci->has = 0;
    ci->mcc = 0;
    ci->seq = 0;
    ci->ts = 0;

    st = check_device_id(&vals[F_DEVICE_ID], ci, err);
    if (st != FG_OK)
        goto cleanup;
    st = check_region(F_SKU_REGION, &vals[F_SKU_REGION], ci->sku_region,
                      &ci->sku_region_len, err);
    if (st != FG_OK)
        goto cleanup;
    st = check_region(F_REGION, &vals[F_REGION], ci->region, &ci->region_len,
                      err);
    if (st != FG_OK)
        goto cleanup;
    if (vals[F_MODEL].kind != VK_ABSENT) {
        st = check_text(F_MODEL, &vals[F_MODEL], FG_MODEL_MAX, ci->model,
                        &ci->model_len, err);
        if (st != FG_OK)
            goto cleanup;
        ci->has |= FG_CHECKIN_HAS_MODEL;
    }
    if (vals[F_FW].kind != VK_ABSENT) {
        st = check_text(F_FW, &vals[F_FW], FG_FW_MAX, ci->fw, &ci->fw_len,
                        err);
        if (st != FG_OK)
            goto cleanup;
        ci->has |= FG_CHECKIN_HAS_FW;
    }
    if (vals[F_MCC].kind != VK_ABSENT) {
        st = check_uint(F_MCC, &vals[F_MCC], 999, &u, err);
        if (st != FG_OK)
            goto cleanup;
        ci->mcc = (uint16_t)u;
        ci->has |= FG_CHECKIN_HAS_MCC;
    }
    if (vals[F_SEQ].kind != VK_ABSENT) {
        st = check_uint(F_SEQ, &vals[F_SEQ], UINT64_MAX, &ci->seq, err);
        if (st != FG_OK)
            goto cleanup;
        ci->has |= FG_CHECKIN_HAS_SEQ;
    }
    if (vals[F_TS].kind != VK_ABSENT) {
        st = check_int64(F_TS, &vals[F_TS], &ci->ts, err);
        if (st != FG_OK)
            goto cleanup;
        ci->has |= FG_CHECKIN_HAS_TS;
    }
    st = FG_OK;

cleanup:
    return st;
}

/* ---- JSON ------------------------------------------------------------ */

/* JSON is read with yajl's event (SAX) parser straight into the fg_val
 * slots of the check-in being read: no tree and, on the common path, no
 * heap allocation (yajl's own handle and stacks live in a stack arena).
 * What yajl leaves to its caller is done around it: a pre-scan for strict
 * UTF-8 and sound \u escapes, duplicate keys in every object, a nesting
 * limit, and the integer syntax and 64-bit range of schema fields. */

/* Deepest container nesting accepted in a JSON body. */
#define FG_JSON_MAX_DEPTH 32
/* yajl 2 has no reset, so a handle cannot be kept per thread; instead each
 * parse allocates from a stack arena (about 130 ns cheaper than malloc).
 * Stack arena behind yajl's allocations: its handle, lexer and state stack
 * take about 500 bytes, the lexer's buffer 2048 (yajl_complete_parse always
 * fills it) and the string decode buffer 2048 more once a string has an
 * escape. Anything beyond goes to the heap. */
#define FG_JSON_ARENA_SIZE 6144
#define FG_JSON_ARENA_HDR 16 /* block header (the block size), alignment */

typedef struct json_arena {
    size_t used;
    unsigned char *last; /* newest block: it may grow in place */
    _Alignas(16) unsigned char mem[FG_JSON_ARENA_SIZE];
} json_arena;

static size_t arena_round(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

static bool arena_owns(const json_arena *a, const void *p)
{
    uintptr_t x = (uintptr_t)p, lo = (uintptr_t)a->mem;
    return x >= lo && x < lo + sizeof(a->mem);
}

static void *arena_malloc(void *ud, size_t sz)
{
    json_arena *a = ud;
    unsigned char *p;
    if (sz > sizeof(a->mem) ||
        FG_JSON_ARENA_HDR + arena_round(sz) > sizeof(a->mem) - a->used)
        return malloc(sz);
    p = a->mem + a->used + FG_JSON_ARENA_HDR;
    memcpy(p - FG_JSON_ARENA_HDR, &sz, sizeof(sz));
    a->used += FG_JSON_ARENA_HDR + arena_round(sz);
    a->last = p;
    return p;
}

/* Arena blocks are dropped with the arena; only the newest one is given
 * back at once. */
static void arena_free(void *ud, void *ptr)
{
    json_arena *a = ud;
    if (!arena_owns(a, ptr)) {
        free(ptr);
        return;
    }
    if (ptr == a->last) {
        a->used = (size_t)(a->last - a->mem) - FG_JSON_ARENA_HDR;
        a->last = NULL;
    }
}

static void *arena_realloc(void *ud, void *ptr, size_t sz)
{
    json_arena *a = ud;
    unsigned char *p = ptr, *q;
    size_t old, off;

    if (!ptr)
        return arena_malloc(ud, sz);
    if (!arena_owns(a, ptr))
        return realloc(ptr, sz);
    memcpy(&old, p - FG_JSON_ARENA_HDR, sizeof(old));
    off = (size_t)(p - a->mem);
    if (p == a->last && sz <= sizeof(a->mem) &&
        arena_round(sz) <= sizeof(a->mem) - off) {
        a->used = off + arena_round(sz);
        memcpy(p - FG_JSON_ARENA_HDR, &sz, sizeof(sz));
        return p;
    }
    if (sz <= old)
        return p;
    q = arena_malloc(ud, sz);
    if (q)
        memcpy(q, p, old);
    return q;
}

/* The four hex digits at p[0..n), or -1. */
static long hex4(const unsigned char *p, size_t n)
{
    long v = 0;
    if (n < 4)
        return -1;
    for (int k = 0; k < 4; k++) {
        unsigned c = p[k];
        if (c >= '0' && c <= '9')
            v = v * 16 + (c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            v = v * 16 + ((c | 0x20) - 'a' + 10);
        else
            return -1;
    }
    return v;
}

/* One pass over the body for what yajl accepts but schema v1 does not:
 * UTF-8 that is not strict (yajl checks the byte pattern only), the escape
 * \u0000, and \u surrogate escapes that do not pair up (yajl turns them
 * into other characters). Outside strings only ASCII without backslashes is
 * valid JSON, so checking the whole body checks every string and key; what
 * is not JSON at all is left to yajl. Returns NULL, or why not and the
 * offset in *at. */
static const char *json_prescan(const unsigned char *p, size_t len,
                                size_t *at)
{
    const uint64_t ones = 0x0101010101010101ull, highs = ones * 0x80;
    const uint64_t bslashes = ones * '\\';
    size_t i = 0;

    while (i < len) {
        size_t r;
        long cp, lo;

        /* Eight bytes at a time while there is no byte >= 0x80 and no
         * backslash (a zero byte in w ^ bslashes). */
        while (len - i >= 8) {
            uint64_t w, x;
            memcpy(&w, p + i, 8);
            x = w ^ bslashes;
            if (((w | ((x - ones) & ~x)) & highs) != 0)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        if (p[i] >= 0x80) {
            r = fg_utf8_seq(p + i, len - i);
            if (r == 0) {
                *at = i;
                return "invalid UTF-8";
            }
            i += r;
            continue;
        }
        if (p[i] != '\\') {
            i++;
            continue;
        }
        /* A run of backslashes: pairs are escaped backslashes; an odd one
         * out escapes the next byte. */
        r = 0;
        while (i + r < len && p[i + r] == '\\')
            r++;
        i += r;
        if (r % 2 == 0 || i >= len || p[i] != 'u')
            continue;
        cp = hex4(p + i + 1, len - i - 1);
        if (cp < 0)
            continue; /* yajl reports the bad escape */
        if (cp == 0) {
            *at = i - 1;
            return "\\u0000 is not allowed";
        }
        if (cp >= 0xdc00 && cp <= 0xdfff) {
            *at = i - 1;
            return "unpaired surrogate escape";
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
            lo = -1;
            if (len - i >= 11 && p[i + 5] == '\\' && p[i + 6] == 'u')
                lo = hex4(p + i + 7, len - i - 7);
            if (lo < 0xdc00 || lo > 0xdfff) {
                *at = i - 1;
                return "unpaired surrogate escape";
            }
            i += 11;
        } else {
            i += 5;
        }
    }
    return NULL;
}

/* What a value event is, for json_value. */
enum { J_SCALAR, J_MAP, J_ARRAY };

/* An object key remembered until its object closes. */
typedef struct json_key {
    const char *s;
    size_t len;
} json_key;

/* A batch item decoded during the parse, kept until the body is known good:
 * the check-in, or why it was refused. */
typedef struct json_item {
    bool ok;
    union {
        fg_checkin ci;
        fg_checkin_error err;
    } u;
} json_item;

/* Parse state shared by the yajl callbacks. The check-in being read is the
 * object at depth item_depth (1: the body; 2: a batch item). */
typedef struct json_ctx {
    yajl_handle h;
    const char *buf;
    size_t len;
    bool batch;
    bool top_ok;  /* the body is an object (single) or an array (batch) */
    bool in_item; /* a check-in object is open at item_depth */
    bool oom;
    int depth;    /* containers open */
    int item_depth;
    int field;    /* schema field the next value is for, or -1 */
    uint32_t seen; /* schema fields given so far: a second one is refused */
    fg_val vals[F_NCHECKIN];
    /* batch items; cur is the one being read */
    json_item *items;
    size_t nitems, item_cap, max_items, cur;
    /* copies of strings yajl unescaped into its own buffer: they total at
     * most len bytes, so one buffer of len bytes holds them all */
    char *esc;
    size_t esc_used;
    /* keys of the open objects other than schema fields of the check-in;
     * key_base[d] is the first of the object at depth d */
    json_key *keys;
    size_t nkeys, keys_cap;
    size_t key_base[FG_JSON_MAX_DEPTH + 1];
    char fail[96]; /* why a callback stopped the parse */
    json_arena arena;
} json_ctx;

/* Initialises only what the parse reads before writing: the arena and the
 * value slots stay untouched until used. */
static void json_ctx_init(json_ctx *c, const char *buf, size_t len,
                          bool batch, size_t max_items)
{
    c->h = NULL;
    c->buf = buf;
    c->len = len;
    c->batch = batch;
    c->top_ok = false;
    c->in_item = false;
    c->oom = false;
    c->depth = 0;
    c->item_depth = 0;
    c->field = -1;
    c->seen = 0;
    c->items = NULL;
    c->nitems = c->item_cap = c->cur = 0;
    c->max_items = max_items;
    c->esc = NULL;
    c->esc_used = 0;
    c->keys = NULL;
    c->nkeys = c->keys_cap = 0;
    c->key_base[0] = 0;
    c->fail[0] = '\0';
    c->arena.used = 0;
    c->arena.last = NULL;
}

static void json_ctx_free(json_ctx *c)
{
    if (c->h)
        yajl_free(c->h);
    free(c->items);
    free(c->esc);
    free(c->keys);
}

/* Stops the parse with a reason for the invalid_json detail. */
static int json_cancel(json_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int json_cancel(json_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->fail, sizeof(c->fail), fmt, ap);
    va_end(ap);
    return 0;
}

static int json_oom(json_ctx *c)
{
    c->oom = true;
    return json_cancel(c, "out of memory");
}

/* s[0..n) for keeping past the callback: the body itself when yajl points
 * into it, else a copy. NULL when out of memory. */
static const char *json_keep(json_ctx *c, const unsigned char *s, size_t n)
{
    uintptr_t x = (uintptr_t)s, lo = (uintptr_t)c->buf;
    char *p;
    if (n == 0)
        return "";
    if (x >= lo && x - lo <= c->len && n <= c->len - (x - lo))
        return (const char *)s;
    /* Unescaping never makes a string longer, so len bytes hold every
     * copy; check anyway. */
    if (!c->esc) {
        c->esc = malloc(c->len);
        if (!c->esc)
            return NULL;
    }
    if (n > c->len - c->esc_used)
        return NULL;
    p = c->esc + c->esc_used;
    memcpy(p, s, n);
    c->esc_used += n;
    return p;
}

/* Makes room for batch item c->cur (< max_items). */
static bool json_items_room(json_ctx *c)
{
    json_item *items;
    size_t cap;
    if (c->cur < c->item_cap)
        return true;
    cap = c->item_cap ? c->item_cap * 2 : 16;
    if (cap > c->max_items)
        cap = c->max_items;
    if (cap > SIZE_MAX / sizeof(*items))
        return false;
    items = realloc(c->items, cap * sizeof(*items));
    if (!items)
        return false;
    c->items = items;
    c->item_cap = cap;
    return true;
}

/* A batch item that is not an object. */
static int json_item_refused(json_ctx *c)
{
    json_item *it;
    c->cur = c->nitems++;
    if (c->cur >= c->max_items)
        return 1; /* too_many_items once the body is known good */
    if (!json_items_room(c))
        return json_oom(c);
    it = &c->items[c->cur];
    it->ok = false;
    err_set(&it->u.err, "not_an_object", NULL,
            "a check-in must be a JSON object");
    return 1;
}

static void json_item_begin(json_ctx *c)
{
    c->in_item = true;
    c->item_depth = c->depth;
    c->field = -1;
    c->seen = 0;
    for (int f = 0; f < F_NCHECKIN; f++)
        c->vals[f].kind = VK_ABSENT;
    if (c->batch)
        c->cur = c->nitems++;
}

/* A batch item object closed: validate it now, while its strings are at
 * hand; the callbacks come when the whole body has parsed. */
static int json_item_end(json_ctx *c)
{
    json_item *it;
    fg_checkin_error ierr;
    if (c->cur >= c->max_items)
        return 1;
    if (!json_items_room(c))
        return json_oom(c);
    it = &c->items[c->cur];
    err_clear(&ierr);
    it->ok = checkin_validate(c->vals, &it->u.ci, &ierr) == FG_OK;
    if (!it->ok)
        it->u.err = ierr;
    return 1;
}

/* Where a value event lands: *slot is the schema field it fills, or NULL.
 * Also notes the kind of the body and refuses batch items that are not
 * objects. Returns 0 to stop the parse. */
static int json_value(json_ctx *c, int what, fg_val **slot)
{
    *slot = NULL;
    if (c->in_item && c->depth == c->item_depth) {
        if (c->field >= 0)
            *slot = &c->vals[c->field];
        return 1;
    }
    if (c->depth == 0)
        c->top_ok = what == (c->batch ? J_ARRAY : J_MAP);
    else if (c->batch && c->depth == 1 && c->top_ok && what != J_MAP)
        return json_item_refused(c);
    return 1;
}

static int json_null(void *ud)
{
    fg_val *v;
    if (!json_value(ud, J_SCALAR, &v))
        return 0;
    if (v)
        v->kind = VK_ABSENT;
    return 1;
}

static int json_boolean(void *ud, int b)
{
    fg_val *v;
    (void)b;
    if (!json_value(ud, J_SCALAR, &v))
        return 0;
    if (v) {
        v->kind = VK_OTHER;
        v->type = "a boolean";
    }
    return 1;
}

/* Numbers come as text (yajl has checked the JSON number syntax). Only
 * schema fields are converted, so unknown fields may hold any number. */
static int json_number(void *ud, const char *s, size_t n)
{
    json_ctx *c = ud;
    fg_val *v;
    uint64_t u = 0;
    size_t i = 0;
    bool neg;

    if (!json_value(c, J_SCALAR, &v))
        return 0;
    if (!v)
        return 1;
    neg = n > 0 && s[0] == '-';
    i = neg ? 1 : 0;
    if (i == n)
        goto other;
    for (; i < n; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9)
            goto other; /* '.', 'e' or 'E' */
        if (__builtin_mul_overflow(u, 10, &u) ||
            __builtin_add_overflow(u, d, &u))
            goto range;
    }
    /* Finish the scan for a fraction or exponent before range errors. */
    if (!neg || u == 0) {
        v->kind = VK_UINT;
        v->u = u;
    } else if (u <= (uint64_t)INT64_MAX + 1) {
        v->kind = VK_NINT;
        v->i = u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
    } else {
        goto range;
    }
    return 1;

other:
    v->kind = VK_OTHER;
    v->type = "a number with a fraction or exponent";
    return 1;

range:
    /* Not an integer after all if a fraction or exponent follows. */
    for (; i < n; i++) {
        if (s[i] == '.' || s[i] == 'e' || s[i] == 'E')
            goto other;
    }
    return json_cancel(c, "%s is an integer outside the 64-bit range",
                       field_name[c->field]);
}

static int json_string(void *ud, const unsigned char *s, size_t n)
{
    json_ctx *c = ud;
    fg_val *v;
    if (!json_value(c, J_SCALAR, &v))
        return 0;
    if (v) {
        v->kind = VK_STR;
        v->s = json_keep(c, s, n);
        v->len = n;
        if (!v->s)
            return json_oom(c);
    }
    return 1;
}

static int json_open(json_ctx *c, int what)
{
    fg_val *v;
    bool item;
    if (c->depth >= FG_JSON_MAX_DEPTH)
        return json_cancel(c, "nested deeper than %d levels",
                           FG_JSON_MAX_DEPTH);
    if (!json_value(c, what, &v))
        return 0;
    if (v) {
        v->kind = VK_OTHER;
        v->type = what == J_MAP ? "an object" : "an array";
    }
    item = what == J_MAP &&
           (c->batch ? c->depth == 1 && c->top_ok : c->depth == 0);
    c->depth++;
    c->key_base[c->depth] = c->nkeys;
    if (item)
        json_item_begin(c);
    return 1;
}

static int json_start_map(void *ud)
{
    return json_open(ud, J_MAP);
}

static int json_start_array(void *ud)
{
    return json_open(ud, J_ARRAY);
}

static int json_end_array(void *ud)
{
    json_ctx *c = ud;
    c->depth--;
    return 1;
}

static int json_key_cmp(const void *a, const void *b)
{
    const json_key *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(x->s, y->s, x->len);
}

static int json_map_key(void *ud, const unsigned char *k, size_t n)
{
    json_ctx *c = ud;
    json_key *key;

    if (c->in_item && c->depth == c->item_depth) {
        int f = field_lookup((const char *)k, n, F_NCHECKIN);
        c->field = f;
        if (f >= 0) {
            if (c->seen & (1u << f))
                return json_cancel(c, "duplicate key %s", field_name[f]);
            c->seen |= 1u << f;
            return 1;
        }
    }
    /* Any other key is kept until its object closes, to find repeats. */
    if (c->nkeys == c->keys_cap) {
        size_t cap = c->keys_cap ? c->keys_cap * 2 : 16;
        json_key *keys;
        if (cap > SIZE_MAX / sizeof(*keys))
            return json_oom(c);
        keys = realloc(c->keys, cap * sizeof(*keys));
        if (!keys)
            return json_oom(c);
        c->keys = keys;
        c->keys_cap = cap;
    }
    key = &c->keys[c->nkeys];
    key->s = json_keep(c, k, n);
    key->len = n;
    if (!key->s)
        return json_oom(c);
    c->nkeys++;
    return 1;
}

static int json_end_map(void *ud)
{
    json_ctx *c = ud;
    size_t base = c->key_base[c->depth], n = c->nkeys - base;

    /* Sorting keeps hostile objects with many keys at n log n. */
    if (n > 1) {
        json_key *keys = c->keys + base;
        qsort(keys, n, sizeof(*keys), json_key_cmp);
        for (size_t i = 1; i < n; i++) {
            if (json_key_cmp(&keys[i - 1], &keys[i]) == 0)
                return json_cancel(c, "duplicate object key");
        }
    }
    c->nkeys = base;
    if (c->in_item && c->depth == c->item_depth) {
        c->in_item = false;
        if (c->batch && !json_item_end(c))
            return 0;
    }
    c->depth--;
    return 1;
}

static const yajl_callbacks json_callbacks = {
    .yajl_null = json_null,
    .yajl_boolean = json_boolean,
    .yajl_number = json_number,
    .yajl_string = json_string,
    .yajl_start_map = json_start_map,
    .yajl_map_key = json_map_key,
    .yajl_end_map = json_end_map,
    .yajl_start_array = json_start_array,
    .yajl_end_array = json_end_array,
};

/* invalid_json with the line and column of byte offset off. */
static fg_status json_error_at(fg_checkin_error *err, const char *buf,
                               size_t off, const char *why)
{
    size_t line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (buf[i] == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)buf[i] & 0xc0) != 0x80) {
            col++; /* columns count characters */
        }
    }
    err_set(err, "invalid_json", NULL, "line %zu column %zu: %s", line, col,
            why);
    /* The detail goes back to the device: keep it printable ASCII. */
    for (char *p = err->detail; *p; p++) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    }
    return FG_EINVAL;
}

/* Parses buf[0..len) into c, which the caller initialised and frees.
 * FG_EINVAL (invalid_json) or FG_ENOMEM with *err filled. */
static fg_status json_run(json_ctx *c, fg_checkin_error *err)
{
    yajl_alloc_funcs af = {arena_malloc, arena_realloc, arena_free,
                           &c->arena};
    const unsigned char *p = (const unsigned char *)c->buf;
    yajl_status ys;
    size_t off = 0;
    const char *why;
    fg_status st = FG_EINVAL;

    why = json_prescan(p, c->len, &off);
    if (why) {
        json_error_at(err, c->buf, off, why);
        goto cleanup;
    }
    c->h = yajl_alloc(&json_callbacks, &af, c);
    if (!c->h) {
        st = FG_ENOMEM;
        err_set(err, "invalid_json", NULL, "out of memory");
        goto cleanup;
    }
    ys = yajl_parse(c->h, p, c->len);
    off = yajl_get_bytes_consumed(c->h);
    if (ys == yajl_status_ok) {
        ys = yajl_complete_parse(c->h);
        off = c->len;
    }
    if (ys == yajl_status_ok) {
        st = FG_OK;
    } else if (c->oom) {
        st = FG_ENOMEM;
        err_set(err, "invalid_json", NULL, "out of memory");
    } else if (ys == yajl_status_client_canceled) {
        json_error_at(err, c->buf, off, c->fail);
    } else {
        unsigned char *msg = yajl_get_error(c->h, 0, NULL, 0);
        char text[96];
        snprintf(text, sizeof(text), "%s", msg ? (const char *)msg : "error");
        text[strcspn(text, "\n")] = '\0';
        if (msg)
            yajl_free_error(c->h, msg);
        json_error_at(err, c->buf, off, text);
    }

cleanup:
    return st;
}

fg_status fg_checkin_parse_json(const char *buf, size_t len, fg_checkin *ci,
                                fg_checkin_error *err)
{
    fg_checkin_error dummy;
    json_ctx c;
    fg_status st;

    if (!err)
        err = &dummy;
    err_clear(err);
    json_ctx_init(&c, buf, len, false, 1);
    st = json_run(&c, err);
    if (st != FG_OK)
        goto cleanup;
    if (!c.top_ok) {
        st = err_set(err, "not_an_object", NULL,
                     "a check-in must be a JSON object");
        goto cleanup;
    }
    st = checkin_validate(c.vals, ci, err);

cleanup:
    json_ctx_free(&c);
    return st;
}

/* The checks of a batch body's shape both encodings share: an array (of
 * the encoding named by what, "JSON" or "msgpack"), not empty, at most
 * max_items. FG_OK, or FG_EINVAL with *err. */
static fg_status batch_shape(fg_checkin_error *err, const char *what,
                             bool is_array, uint64_t n, size_t max_items)
{
    if (!is_array)
        return err_set(err, "not_an_array", NULL,
                       "a batch must be a %s array of check-ins", what);
    if (n == 0)
        return err_set(err, "empty_batch", NULL, "the batch has no items");
    if (n > max_items)
        return err_set(err, "too_many_items", NULL,
                       "the batch has %" PRIu64 " items, at most %zu allowed",
                       n, max_items);
    return FG_OK;
}

fg_status fg_checkin_batch_parse_json(const char *buf, size_t len,
                                      size_t max_items, fg_checkin_item_cb cb,
                                      void *ud, fg_checkin_error *err)
{
    fg_checkin_error dummy;
    json_ctx c;
    fg_status st;

    if (!err)
        err = &dummy;
    err_clear(err);
    json_ctx_init(&c, buf, len, true, max_items);
    st = json_run(&c, err);
    if (st != FG_OK)
        goto cleanup;
    st = batch_shape(err, "JSON", c.top_ok, c.nitems, max_items);
    for (size_t i = 0; i < c.nitems && st == FG_OK; i++) {
        const json_item *it = &c.items[i];
        st = it->ok ? cb(ud, i, &it->u.ci, NULL) : cb(ud, i, NULL, &it->u.err);
    }

cleanup:
    json_ctx_free(&c);
    return st;
}

/* ---- msgpack --------------------------------------------------------- */

/* msgpack is read in place by a bounded cursor, without allocating and
 * without recursion: every length and count is checked against the bytes
 * left before it is used (an element takes at least one byte, so a few
 * bytes declaring 2^32 elements are refused at once), containers nest at
 * most FG_MSGPACK_MAX_DEPTH deep, and a body is exactly one value. The
 * fields of a check-in map land in the same fg_val slots as JSON's. */

typedef enum mp_kind {
    MK_NIL,
    MK_BOOL,
    MK_UINT,  /* non-negative integer of any encoding, in u */
    MK_NINT,  /* negative integer, in i */
    MK_FLOAT, /* float 32 or 64 */
    MK_STR,   /* n bytes at s */
    MK_BIN,
    MK_EXT,
    MK_ARRAY, /* n elements follow */
    MK_MAP    /* n key/value pairs follow */
} mp_kind;

/* One value as read by mp_next; for a container only its header. */
typedef struct mp_tok {
    mp_kind kind;
    uint64_t n;
    const unsigned char *s;
    uint64_t u;
    int64_t i;
} mp_tok;

/* The body and how far it has been read. */
typedef struct mp_cur {
    const unsigned char *p;
    size_t len, pos;
} mp_cur;

static uint64_t be_read(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Reads one value at the cursor into *t: a scalar whole (str, bin and ext
 * payloads are skipped, a str's bytes stay in the body), a container's
 * header only, after checking that its elements could fit in the bytes
 * left. Returns NULL, or why the body is not msgpack (the cursor is then
 * unspecified). */
static inline __attribute__((always_inline)) const char *
mp_next(mp_cur *c, mp_tok *t)
{
    const unsigned char *p = c->p;
    size_t pos = c->pos, hdr = 0, extra = 0;
    unsigned b;
    uint64_t v;

    if (pos >= c->len)
        return "truncated";
    b = p[pos++];
    if (b <= 0x7f) {
        t->kind = MK_UINT;
        t->u = b;
        goto done;
    }
    if (b >= 0xe0) {
        t->kind = MK_NINT;
        t->i = (int64_t)b - 256;
        goto done;
    }
    if (b >= 0xa0 && b <= 0xbf) {
        t->kind = MK_STR;
        t->n = b & 0x1fu;
        goto payload;
    }
    if (b <= 0x8f) {
        t->kind = MK_MAP;
        t->n = b & 0x0fu;
        goto container;
    }
    if (b <= 0x9f) {
        t->kind = MK_ARRAY;
        t->n = b & 0x0fu;
        goto container;
    }
    switch (b) {
    case 0xc0: t->kind = MK_NIL; goto done;
    case 0xc2:
    case 0xc3: t->kind = MK_BOOL; goto done;
    case 0xc4: case 0xc5: case 0xc6: /* bin 8/16/32 */
        t->kind = MK_BIN;
        hdr = (size_t)1 << (b - 0xc4);
        break;
    case 0xc7: case 0xc8: case 0xc9: /* ext 8/16/32: length, type, data */
        t->kind = MK_EXT;
        hdr = (size_t)1 << (b - 0xc7);
        extra = 1;
        break;
    case 0xca: case 0xcb:
        t->kind = MK_FLOAT;
        t->n = b == 0xca ? 4 : 8;
        goto payload;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: /* uint 8/16/32/64 */
        hdr = (size_t)1 << (b - 0xcc);
        if (hdr > c->len - pos)
            return "truncated";
        t->kind = MK_UINT;
        t->u = be_read(p + pos, hdr);
        pos += hdr;
        goto done;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: /* int 8/16/32/64 */
        hdr = (size_t)1 << (b - 0xd0);
        if (hdr > c->len - pos)
            return "truncated";
        v = be_read(p + pos, hdr);
        pos += hdr;
        if (hdr < 8 && (v >> (hdr * 8 - 1)) != 0)
            v |= ~(uint64_t)0 << (hdr * 8); /* sign-extend */
        if ((v >> 63) == 0) {
            t->kind = MK_UINT;
            t->u = v;
        } else {
            t->kind = MK_NINT;
            t->i = (int64_t)(v - ((uint64_t)INT64_MAX + 1)) + INT64_MIN;
        }
        goto done;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: /* fixext */
        t->kind = MK_EXT;
        t->n = (uint64_t)1 << (b - 0xd4);
        extra = 1;
        goto payload;
    case 0xd9: case 0xda: case 0xdb: /* str 8/16/32 */
        t->kind = MK_STR;
        hdr = (size_t)1 << (b - 0xd9);
        break;
    case 0xdc: case 0xdd: /* array 16/32 */
        hdr = (size_t)2 << (b - 0xdc);
        if (hdr > c->len - pos)
            return "truncated";
        t->kind = MK_ARRAY;
        t->n = be_read(p + pos, hdr);
        pos += hdr;
        goto container;
    case 0xde: case 0xdf: /* map 16/32 */
        hdr = (size_t)2 << (b - 0xde);
        if (hdr > c->len - pos)
            return "truncated";
        t->kind = MK_MAP;
        t->n = be_read(p + pos, hdr);
        pos += hdr;
        goto container;
    default: return "reserved type byte 0xc1";
    }
    /* str, bin or ext with a length field */
    if (hdr > c->len - pos)
        return "truncated";
    t->n = be_read(p + pos, hdr);
    pos += hdr;

payload:
    if (t->n + extra > c->len - pos)
        return "truncated";
    t->s = p + pos + extra;
    pos += (size_t)t->n + extra;
    goto done;

container:
    /* A map entry is two values. */
    if ((t->kind == MK_MAP ? 2 * t->n : t->n) > c->len - pos)
        return "container count larger than the body";

done:
    c->pos = pos;
    return NULL;
}

/* mp_next out of line, for the rare paths. */
static __attribute__((noinline)) const char *mp_next_call(mp_cur *c,
                                                          mp_tok *t)
{
    return mp_next(c, t);
}

/* Skips what follows the value t just read: the elements of a container,
 * nothing for a scalar. depth is how many containers enclose t; t itself
 * counts as one more level, and no level may go past
 * FG_MSGPACK_MAX_DEPTH. Iterative, with one counter per open container. */
static const char *mp_skip_rest(mp_cur *c, const mp_tok *t, int depth)
{
    uint64_t outer[FG_MSGPACK_MAX_DEPTH]; /* what is left of enclosing ones */
    uint64_t left;                        /* ... and of the innermost */
    int open; /* containers open within this skip; t is the first */
    mp_cur k = *c;
    const char *why = NULL;

    if (t->kind != MK_ARRAY && t->kind != MK_MAP)
        return NULL;
    if (depth + 1 > FG_MSGPACK_MAX_DEPTH)
        return "nested too deeply";
    left = t->kind == MK_MAP ? 2 * t->n : t->n;
    if (left == 0)
        return NULL;
    open = 1;
    while (open > 0) {
        mp_tok e;
        why = mp_next(&k, &e);
        if (why)
            break;
        left--;
        if (e.kind == MK_ARRAY || e.kind == MK_MAP) {
            if (depth + open + 1 > FG_MSGPACK_MAX_DEPTH) {
                why = "nested too deeply";
                break;
            }
            if (e.n > 0) {
                outer[open - 1] = left;
                open++;
                left = e.kind == MK_MAP ? 2 * e.n : e.n;
                continue;
            }
        }
        while (left == 0 && open > 0) {
            open--;
            if (open > 0)
                left = outer[open - 1];
        }
    }
    c->pos = k.pos;
    return why;
}

/* The fg_val of a value read by mp_next. */
static void mp_to_val(const mp_tok *t, fg_val *v)
{
    v->kind = VK_OTHER;
    switch (t->kind) {
    case MK_NIL: v->kind = VK_ABSENT; break;
    case MK_STR:
        v->kind = VK_STR;
        v->s = (const char *)t->s;
        v->len = (size_t)t->n;
        break;
    case MK_UINT:
        v->kind = VK_UINT;
        v->u = t->u;
        break;
    case MK_NINT:
        v->kind = VK_NINT;
        v->i = t->i;
        break;
    case MK_BOOL: v->type = "a boolean"; break;
    case MK_FLOAT: v->type = "a float"; break;
    case MK_ARRAY: v->type = "an array"; break;
    case MK_MAP: v->type = "a map"; break;
    case MK_BIN: v->type = "bin"; break;
    case MK_EXT: v->type = "ext"; break;
    }
}

/* Reads the pairs of the map whose header (pairs entries, at nesting level
 * `level`) was just read, collecting the first nfields known fields into
 * vals. Keys that are not str or not known are skipped with their values.
 * A known key given twice is noted in *dup (the first such field, else -1)
 * and reading goes on, so that a body broken further on is reported as
 * such. Returns NULL or why the body is not msgpack. */
static const char *mp_collect(mp_cur *c, uint64_t pairs, int level,
                              int nfields, fg_val *vals, int *dup)
{
    mp_cur k = *c; /* a local copy keeps the position in a register */
    uint32_t seen = 0;
    const char *why = NULL;

    *dup = -1;
    for (int f = 0; f < nfields; f++)
        vals[f].kind = VK_ABSENT;
    for (uint64_t i = 0; i < pairs; i++) {
        mp_tok t;
        int f = -1;
        /* Keys are nearly always fixstr: those are read here. */
        if (k.pos < k.len && (k.p[k.pos] & 0xe0u) == 0xa0u) {
            size_t n = k.p[k.pos] & 0x1fu;
            if (n > k.len - k.pos - 1) {
                why = "truncated";
                break;
            }
            f = field_lookup((const char *)k.p + k.pos + 1, n, nfields);
            k.pos += n + 1;
        } else {
            why = mp_next_call(&k, &t);
            if (why)
                break;
            if (t.kind == MK_STR)
                f = field_lookup((const char *)t.s, (size_t)t.n, nfields);
            else if (t.kind == MK_ARRAY || t.kind == MK_MAP)
                why = mp_skip_rest(&k, &t, level);
            if (why)
                break;
        }
        why = mp_next(&k, &t);
        if (why)
            break;
        if (f >= 0) {
            if (seen & (1u << f)) {
                if (*dup < 0)
                    *dup = f;
            } else {
                seen |= 1u << f;
                mp_to_val(&t, &vals[f]);
            }
        }
        if (t.kind == MK_ARRAY || t.kind == MK_MAP) {
            why = mp_skip_rest(&k, &t, level);
            if (why)
                break;
        }
    }
    c->pos = k.pos;
    return why;
}

static fg_status mp_malformed(fg_checkin_error *err, const char *why)
{
    return err_set(err, "invalid_msgpack", NULL, "%s", why);
}

static fg_status mp_not_a_map(fg_checkin_error *err)
{
    return err_set(err, "not_an_object", NULL,
                   "a check-in must be a msgpack map");
}

static fg_status mp_duplicate(fg_checkin_error *err, int f)
{
    return err_set(err, "invalid_msgpack", field_name[f], "duplicate key %s",
                   field_name[f]);
}

/* Reads a body that must be exactly one map, collecting its first nfields
 * known fields into vals. Errors, first found first: not msgpack, not a
 * map, a duplicate known key. */
static fg_status mp_read_map(const char *buf, size_t len, int nfields,
                             fg_val *vals, fg_checkin_error *err)
{
    mp_cur c = {(const unsigned char *)buf, len, 0};
    mp_tok t;
    int dup = -1;
    const char *why = mp_next(&c, &t);

    if (!why) {
        if (t.kind == MK_MAP)
            why = mp_collect(&c, t.n, 1, nfields, vals, &dup);
        else
            why = mp_skip_rest(&c, &t, 0);
    }
    if (!why && c.pos != len)
        why = "trailing bytes after the value";
    if (why)
        return mp_malformed(err, why);
    if (t.kind != MK_MAP)
        return mp_not_a_map(err);
    if (dup >= 0)
        return mp_duplicate(err, dup);
    return FG_OK;
}

fg_status fg_checkin_parse_msgpack(const char *buf, size_t len,
                                   fg_checkin *ci, fg_checkin_error *err)
{
    fg_checkin_error dummy;
    fg_val vals[F_NCHECKIN];
    fg_status st;

    if (!err)
        err = &dummy;
    err_clear(err);
    st = mp_read_map(buf, len, F_NCHECKIN, vals, err);
    if (st != FG_OK)
        goto cleanup;
    st = checkin_validate(vals, ci, err);

cleanup:
    return st;
}

/* One batch item at the cursor (nesting level 2), in a body already known
 * to be well-formed: FG_OK with *ci filled, or FG_EINVAL with *err. */
static fg_status mp_batch_item(mp_cur *c, fg_checkin *ci,
                               fg_checkin_error *err)
{
    fg_val vals[F_NCHECKIN];
    mp_tok t;
    int dup = -1;
    const char *why = mp_next(c, &t);

    if (!why) {
        if (t.kind == MK_MAP)
            why = mp_collect(c, t.n, 2, F_NCHECKIN, vals, &dup);
        else
            why = mp_skip_rest(c, &t, 1);
    }
    if (why)
        return mp_malformed(err, why);
    if (t.kind != MK_MAP)
        return mp_not_a_map(err);
    if (dup >= 0)
        return mp_duplicate(err, dup);
    return checkin_validate(vals, ci, err);
}

fg_status fg_checkin_batch_parse_msgpack(const char *buf, size_t len,
                                         size_t max_items,
                                         fg_checkin_item_cb cb, void *ud,
                                         fg_checkin_error *err)
{
    fg_checkin_error dummy;
    mp_cur c = {(const unsigned char *)buf, len, 0};
    mp_tok t;
    size_t first;
    const char *why;
    fg_status st = FG_EINVAL;

    if (!err)
        err = &dummy;
    err_clear(err);
    /* No callback for a bad body: a structural pass over the whole body
     * (cheaper than keeping decoded items until its end), then the items. */
    why = mp_next(&c, &t);
    first = c.pos;
    if (!why)
        why = mp_skip_rest(&c, &t, 0);
    if (!why && c.pos != len)
        why = "trailing bytes after the value";
    if (why) {
        mp_malformed(err, why);
        goto cleanup;
    }
    st = batch_shape(err, "msgpack", t.kind == MK_ARRAY, t.n, max_items);
    if (st != FG_OK)
        goto cleanup;
    c.pos = first;
    for (size_t i = 0; i < t.n && st == FG_OK; i++) {
        fg_checkin ci;
        fg_checkin_error item_err;
        err_clear(&item_err);
        if (mp_batch_item(&c, &ci, &item_err) == FG_OK)
            st = cb(ud, i, &ci, NULL);
        else
            st = cb(ud, i, NULL, &item_err);
    }

cleanup:
    return st;
}

/* ---- record ---------------------------------------------------------- */

static void pack_key(msgpack_packer *pk, int f, size_t len)
{
    msgpack_pack_str_with_body(pk, field_name[f], len);
}

static void pack_strn(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str_with_body(pk, s, len);
}

size_t fg_checkin_encode(const fg_checkin *ci, int64_t recv_ts,
                         const char *gw_id, char *out, size_t cap)
{
    fg_mpbuf mb = {out, cap, 0, false};
    msgpack_packer pk;
    size_t gw_len = 0, n = 6;
    uint32_t has = ci->has;

    if (gw_id)
        gw_len = strnlen(gw_id, FG_GW_ID_MAX + 1);
    /* Lengths over the caps mean ci was not validated: refuse rather than
     * break the FG_CHECKIN_RECORD_MAX promise. */
    if (gw_len > FG_GW_ID_MAX || ci->device_id_len > FG_DEVICE_ID_MAX ||
        ci->sku_region_len > FG_REGION_MAX || ci->region_len > FG_REGION_MAX ||
        ci->model_len > FG_MODEL_MAX * 4 || ci->fw_len > FG_FW_MAX * 4)
        return 0;
    for (uint32_t bit = FG_CHECKIN_HAS_MODEL; bit <= FG_CHECKIN_HAS_TS;
         bit <<= 1) {
        if (has & bit)
            n++;
    }

    msgpack_packer_init(&pk, &mb, fg_mpbuf_write);
    msgpack_pack_map(&pk, n);
    pack_key(&pk, F_DEVICE_ID, 9);
    pack_strn(&pk, ci->device_id, ci->device_id_len);
    pack_key(&pk, F_SKU_REGION, 10);
    pack_strn(&pk, ci->sku_region, ci->sku_region_len);
    pack_key(&pk, F_REGION, 6);
    pack_strn(&pk, ci->region, ci->region_len);
    if (has & FG_CHECKIN_HAS_MODEL) {
        pack_key(&pk, F_MODEL, 5);
        pack_strn(&pk, ci->model, ci->model_len);
    }
    if (has & FG_CHECKIN_HAS_FW) {
        pack_key(&pk, F_FW, 2);
        pack_strn(&pk, ci->fw, ci->fw_len);
    }
    if (has & FG_CHECKIN_HAS_MCC) {
        pack_key(&pk, F_MCC, 3);
        msgpack_pack_uint16(&pk, ci->mcc);
    }
    if (has & FG_CHECKIN_HAS_SEQ) {
        pack_key(&pk, F_SEQ, 3);
        msgpack_pack_uint64(&pk, ci->seq);
    }
    if (has & FG_CHECKIN_HAS_TS) {
        pack_key(&pk, F_TS, 2);
        msgpack_pack_int64(&pk, ci->ts);
    }
    pack_key(&pk, F_V, 1);
    msgpack_pack_int(&pk, FG_CHECKIN_SCHEMA_VERSION);
    pack_key(&pk, F_RECV_TS, 7);
    msgpack_pack_int64(&pk, recv_ts);
    pack_key(&pk, F_GW, 2);
    pack_strn(&pk, gw_id ? gw_id : "", gw_len);
    return fg_mpbuf_len(&mb);
}

fg_status fg_checkin_decode_record(const char *buf, size_t len,
                                   fg_checkin *ci, fg_checkin_meta *meta,
                                   fg_checkin_error *err)
{
    fg_checkin_error dummy;
    fg_val vals[F_NRECORD];
    const fg_val *gw;
    int64_t recv_ts = 0;
    uint64_t v = 0;
    fg_status st;

    if (!err)
        err = &dummy;
    err_clear(err);
    st = mp_read_map(buf, len, F_NRECORD, vals, err);
    if (st != FG_OK)
        goto cleanup;
    st = checkin_validate(vals, ci, err);
    if (st != FG_OK)
        goto cleanup;

    if (vals[F_V].kind == VK_ABSENT) {
        st = err_set(err, "missing_field", "v", "v is required");
        goto cleanup;
    }
    st = check_uint(F_V, &vals[F_V], UINT64_MAX, &v, err);
    if (st != FG_OK)
        goto cleanup;
    if (v != FG_CHECKIN_SCHEMA_VERSION) {
        st = err_set(err, "invalid_value", "v",
                     "unsupported schema version %" PRIu64, v);
        goto cleanup;
    }
    if (vals[F_RECV_TS].kind == VK_ABSENT) {
        st = err_set(err, "missing_field", "recv_ts", "recv_ts is required");
        goto cleanup;
    }
    st = check_int64(F_RECV_TS, &vals[F_RECV_TS], &recv_ts, err);
    if (st != FG_OK)
        goto cleanup;
    gw = &vals[F_GW];
    if (gw->kind == VK_ABSENT) {
        st = err_set(err, "missing_field", "gw", "gw is required");
        goto cleanup;
    }
    if (gw->kind != VK_STR) {
        st = wrong_type(err, F_GW, "a string", gw);
        goto cleanup;
    }
    if (gw->len > FG_GW_ID_MAX) {
        st = err_set(err, "too_long", "gw", "gw is longer than %d bytes",
                     FG_GW_ID_MAX);
        goto cleanup;
    }
    if (gw->len && memchr(gw->s, '\0', gw->len)) {
        st = err_set(err, "invalid_value", "gw", "gw contains a NUL byte");
        goto cleanup;
    }
    if (meta) {
        meta->v = (int)v;
        meta->recv_ts = recv_ts;
        if (gw->len)
            memcpy(meta->gw, gw->s, gw->len);
        meta->gw[gw->len] = '\0';
    }
    st = FG_OK;

cleanup:
    return st;
}
