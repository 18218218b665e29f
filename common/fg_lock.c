/* SPDX-License-Identifier: Apache-2.0 */
/* Region lock records: the msgpack codec of topic fleet.region-locks (with a
 * bounded pre-scan in front of msgpack-c and strict field validation) and the
 * open-addressing region -> lock table the gateway consults per request. */
#include "fg_lock.h"

#include <math.h>
#include <msgpack.h>
#include <msgpack/unpack_define.h> /* MSGPACK_EMBED_STACK_SIZE */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_mpbuf.h"
#include "fg_utf8.h"

/* Deepest container nesting the pre-scan accepts (a lock record needs 1). */
#define FG_LOCK_SCAN_DEPTH 16
_Static_assert(FG_LOCK_SCAN_DEPTH <= MSGPACK_EMBED_STACK_SIZE,
               "msgpack-c could not unpack what the pre-scan lets through");

const char *fg_lock_state_str(fg_lock_state s)
{
    switch (s) {
    case FG_LOCK_UNLOCKED: return "unlocked";
    case FG_LOCK_LOCKED: return "locked";
    case FG_LOCK_SHADOW: return "shadow";
    case FG_LOCK_SUPPRESSED: return "suppressed";
    }
    return "unknown";
}

const char *fg_lock_scope_str(fg_lock_scope s)
{
    switch (s) {
    case FG_SCOPE_GREY: return "grey";
    case FG_SCOPE_ALL: return "all";
    }
    return "unknown";
}

const char *fg_lock_source_str(fg_lock_source s)
{
    switch (s) {
    case FG_SOURCE_AUTO: return "auto";
    case FG_SOURCE_OPS: return "ops";
    }
    return "unknown";
}

/* ---- pre-scan --------------------------------------------------------- */

/* Reads a k-byte big-endian unsigned integer at p[*off], advancing *off.
 * Returns false when fewer than k bytes remain. */
static bool scan_be(const uint8_t *p, size_t len, size_t *off, size_t k,
                    uint64_t *out)
{
    uint64_t v = 0;
    if (len - *off < k)
        return false;
    for (size_t i = 0; i < k; i++)
        v = (v << 8) | p[*off + i];
    *off += k;
    *out = v;
    return true;
}

/* Walks one msgpack value starting at p[*off] without allocating, advancing
 * *off past it. Rejects truncated values, the never-used byte 0xc1, nesting
 * deeper than FG_LOCK_SCAN_DEPTH and any container that declares more
 * elements than bytes remain (every element takes at least one byte), so
 * msgpack-c is never asked to allocate for elements that are not there.
 * Work is linear in len; recursion is bounded by the depth cap. */
static bool scan_value(const uint8_t *p, size_t len, size_t *off, int depth)
{
    uint64_t n = 0;     /* payload bytes, or container elements */
    bool container = false;
    uint8_t b;

    if (*off >= len)
        return false;
    b = p[(*off)++];

    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return true; /* fixint, negative fixint, nil, bool */
    if (b >= 0x80 && b <= 0x8f) {
        n = 2u * (uint64_t)(b & 0x0f);
        container = true;
    } else if (b >= 0x90 && b <= 0x9f) {
        n = b & 0x0f;
        container = true;
    } else if (b >= 0xa0 && b <= 0xbf) {
        n = b & 0x1f;
    } else {
        switch (b) {
        case 0xc4: case 0xd9: /* bin8, str8 */
            if (!scan_be(p, len, off, 1, &n))
                return false;
            break;
        case 0xc5: case 0xda: /* bin16, str16 */
            if (!scan_be(p, len, off, 2, &n))
                return false;
            break;
        case 0xc6: case 0xdb: /* bin32, str32 */
            if (!scan_be(p, len, off, 4, &n))
                return false;
            break;
        case 0xc7: /* ext8: length, type, data */
            if (!scan_be(p, len, off, 1, &n))
                return false;
            n += 1;
            break;
        case 0xc8:
            if (!scan_be(p, len, off, 2, &n))
                return false;
            n += 1;
            break;
        case 0xc9:
            if (!scan_be(p, len, off, 4, &n))
                return false;
            n += 1;
            break;
        case 0xca: n = 4; break;               /* float32 */
        case 0xcb: n = 8; break;               /* float64 */
        case 0xcc: case 0xd0: n = 1; break;    /* uint8, int8 */
        case 0xcd: case 0xd1: n = 2; break;
        case 0xce: case 0xd2: n = 4; break;
        case 0xcf: case 0xd3: n = 8; break;
        case 0xd4: n = 2; break;               /* fixext1: type + 1 */
        case 0xd5: n = 3; break;
        case 0xd6: n = 5; break;
        case 0xd7: n = 9; break;
        case 0xd8: n = 17; break;
        case 0xdc: /* array16 */
            if (!scan_be(p, len, off, 2, &n))
                return false;
            container = true;
            break;
        case 0xdd: /* array32 */
            if (!scan_be(p, len, off, 4, &n))
                return false;
            container = true;
            break;
        case 0xde: /* map16 */
            if (!scan_be(p, len, off, 2, &n))
                return false;
            n *= 2;
            container = true;
            break;
        case 0xdf: /* map32 */
            if (!scan_be(p, len, off, 4, &n))
                return false;
            n *= 2;
            container = true;
            break;
        default: /* 0xc1 */
            return false;
        }
    }

    if (n > len - *off)
        return false;
    if (!container) {
        *off += (size_t)n;
        return true;
    }
    if (depth >= FG_LOCK_SCAN_DEPTH)
        return false;
    for (uint64_t i = 0; i < n; i++) {
        if (!scan_value(p, len, off, depth + 1))
            return false;
    }
    return true;
}

/* True when buf holds exactly one well-formed msgpack value. */
static bool scan_one(const char *buf, size_t len)
{
    size_t off = 0;
    if (!scan_value((const uint8_t *)buf, len, &off, 0))
        return false;
    return off == len;
}

/* ---- field validation ------------------------------------------------- */

static void set_err(char *errbuf, size_t errlen, const char *field,
                    const char *what)
{
    if (errbuf && errlen)
        snprintf(errbuf, errlen, "%s: %s", field, what);
}

typedef enum lock_field {
    F_REGION,
    F_STATE,
    F_SCOPE,
    F_SOURCE,
    F_REASON,
    F_MESSAGE,
    F_ACTOR,
    F_ID,
    F_SINCE,
    F_UNTIL,
    F_PIN_UNTIL,
    F_SCORE,
    F_DEVICES,
    F_TOKEN,
    F_COUNT
} lock_field;

static const char *const field_names[F_COUNT] = {
    "region", "state", "scope", "source", "reason", "message", "actor",
    "id", "since", "until", "pin_until", "score", "devices", "token"};

/* Fields every record must carry (until too, when state is locked). */
static const lock_field required[] = {F_REGION,  F_STATE,   F_SCOPE,
                                      F_SOURCE,  F_REASON,  F_MESSAGE,
                                      F_ID,      F_SINCE};

static int field_lookup(const char *key, size_t n)
{
    for (int f = 0; f < F_COUNT; f++) {
        if (strlen(field_names[f]) == n && memcmp(field_names[f], key, n) == 0)
            return f;
    }
    return -1;
}

/* Copies a msgpack str of at most cap bytes into dst (cap + 1 bytes). */
static fg_status take_str(const msgpack_object *o, const char *field,
                          char *dst, size_t cap, char *errbuf, size_t errlen)
{
    char what[64];
    if (o->type != MSGPACK_OBJECT_STR) {
        set_err(errbuf, errlen, field, "wrong type (want str)");
        return FG_EINVAL;
    }
    if (o->via.str.size > cap) {
        snprintf(what, sizeof(what), "too long (%u bytes, max %zu)",
                 (unsigned)o->via.str.size, cap);
        set_err(errbuf, errlen, field, what);
        return FG_EINVAL;
    }
    /* NUL would silently cut the C string short. */
    if (memchr(o->via.str.ptr, 0, o->via.str.size)) {
        set_err(errbuf, errlen, field, "contains NUL");
        return FG_EINVAL;
    }
    if (fg_utf8_check((const unsigned char *)o->via.str.ptr, o->via.str.size, 1,
                      NULL) != FG_UTF8_OK) {
        set_err(errbuf, errlen, field, "invalid UTF-8");
        return FG_EINVAL;
    }
    memcpy(dst, o->via.str.ptr, o->via.str.size);
    dst[o->via.str.size] = '\0';
    return FG_OK;
}

/* Matches a msgpack str against names[0..n); *out is the index. */
static fg_status take_enum(const msgpack_object *o, const char *field,
                           const char *const *names, int n, int *out,
                           char *errbuf, size_t errlen)
{
    if (o->type != MSGPACK_OBJECT_STR) {
        set_err(errbuf, errlen, field, "wrong type (want str)");
        return FG_EINVAL;
    }
    for (int i = 0; i < n; i++) {
        if (strlen(names[i]) == o->via.str.size &&
            memcmp(names[i], o->via.str.ptr, o->via.str.size) == 0) {
            *out = i;
            return FG_OK;
        }
    }
    set_err(errbuf, errlen, field, "unknown value");
    return FG_EINVAL;
}

/* A non-negative integer that fits int64 (timestamps, counts). */
static fg_status take_i64(const msgpack_object *o, const char *field,
                          int64_t *out, char *errbuf, size_t errlen)
{
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        set_err(errbuf, errlen, field, "out of range (negative)");
        return FG_EINVAL;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        set_err(errbuf, errlen, field, "wrong type (want int)");
        return FG_EINVAL;
    }
    if (o->via.u64 > (uint64_t)INT64_MAX) {
        set_err(errbuf, errlen, field, "out of range");
        return FG_EINVAL;
    }
    *out = (int64_t)o->via.u64;
    return FG_OK;
}

/* Indexed by fg_lock_state / fg_lock_scope / fg_lock_source values. */
static const char *const state_names[] = {"unlocked", "locked", "shadow",
                                          "suppressed"};
static const char *const scope_names[] = {"grey", "all"};
static const char *const source_names[] = {"auto", "ops"};

static fg_status take_field(lock_field f, const msgpack_object *o,
                            fg_lock *lk, char *errbuf, size_t errlen)
{
    const char *name = field_names[f];
    fg_status st = FG_OK;
    int e = 0;

    switch (f) {
    case F_REGION:
        st = take_str(o, name, lk->region, FG_REGION_MAX, errbuf, errlen);
        if (st == FG_OK && !fg_region_valid(lk->region, strlen(lk->region))) {
            set_err(errbuf, errlen, name, "invalid region code");
            st = FG_EINVAL;
        }
        break;
    case F_STATE:
        st = take_enum(o, name, state_names, 4, &e, errbuf, errlen);
        lk->state = (fg_lock_state)e;
        break;
    case F_SCOPE:
        st = take_enum(o, name, scope_names, 2, &e, errbuf, errlen);
        lk->scope = (fg_lock_scope)e;
        break;
    case F_SOURCE:
        st = take_enum(o, name, source_names, 2, &e, errbuf, errlen);
        lk->source = (fg_lock_source)e;
        break;
    case F_REASON:
        st = take_str(o, name, lk->reason, FG_LOCK_REASON_MAX, errbuf, errlen);
        break;
    case F_MESSAGE:
        st = take_str(o, name, lk->message, FG_LOCK_MESSAGE_MAX, errbuf,
                      errlen);
        break;
    case F_ACTOR:
        st = take_str(o, name, lk->actor, FG_LOCK_ACTOR_MAX, errbuf, errlen);
        break;
    case F_ID:
        st = take_str(o, name, lk->id, FG_LOCK_ID_MAX, errbuf, errlen);
        break;
    case F_SINCE:
        st = take_i64(o, name, &lk->since, errbuf, errlen);
        break;
    case F_UNTIL:
        st = take_i64(o, name, &lk->until, errbuf, errlen);
        break;
    case F_PIN_UNTIL:
        st = take_i64(o, name, &lk->pin_until, errbuf, errlen);
        lk->has |= FG_LOCK_HAS_PIN;
        break;
    case F_DEVICES:
        st = take_i64(o, name, &lk->devices, errbuf, errlen);
        lk->has |= FG_LOCK_HAS_DEVICES;
        break;
    case F_SCORE:
        if (o->type == MSGPACK_OBJECT_FLOAT32 ||
            o->type == MSGPACK_OBJECT_FLOAT64) {
            lk->score = o->via.f64;
        } else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            lk->score = (double)o->via.u64;
        } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
            lk->score = (double)o->via.i64;
        } else {
            set_err(errbuf, errlen, name, "wrong type (want float)");
            st = FG_EINVAL;
            break;
        }
        if (!isfinite(lk->score)) {
            set_err(errbuf, errlen, name, "not finite");
            st = FG_EINVAL;
        }
        lk->has |= FG_LOCK_HAS_SCORE;
        break;
    case F_TOKEN:
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            set_err(errbuf, errlen, name, "wrong type (want uint)");
            st = FG_EINVAL;
            break;
        }
        lk->token = o->via.u64;
        lk->has |= FG_LOCK_HAS_TOKEN;
        break;
    case F_COUNT:
        break;
    }
    return st;
}

fg_status fg_lock_decode(const char *buf, size_t len, fg_lock *lk,
                         char *errbuf, size_t errlen)
{
    msgpack_unpacked up;
    msgpack_unpack_return ur;
    const msgpack_object *root;
    uint32_t seen = 0;
    size_t off = 0;
    fg_status st = FG_OK;

    msgpack_unpacked_init(&up);
    memset(lk, 0, sizeof(*lk));
    if (errbuf && errlen)
        errbuf[0] = '\0';

    if (len > FG_LOCK_INPUT_MAX) {
        set_err(errbuf, errlen, "record", "too big");
        st = FG_ETOOBIG;
        goto cleanup;
    }
    if (!buf || !scan_one(buf, len)) {
        set_err(errbuf, errlen, "record", "invalid msgpack");
        st = FG_EINVAL;
        goto cleanup;
    }
    ur = msgpack_unpack_next(&up, buf, len, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        st = FG_ENOMEM;
        goto cleanup;
    }
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        set_err(errbuf, errlen, "record", "invalid msgpack");
        st = FG_EINVAL;
        goto cleanup;
    }
    root = &up.data;
    if (root->type != MSGPACK_OBJECT_MAP) {
        set_err(errbuf, errlen, "record", "not a map");
        st = FG_EINVAL;
        goto cleanup;
    }

    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object_kv *kv = &root->via.map.ptr[i];
        int f;
        if (kv->key.type != MSGPACK_OBJECT_STR)
            continue; /* not one of ours: ignored like any unknown key */
        f = field_lookup(kv->key.via.str.ptr, kv->key.via.str.size);
        if (f < 0)
            continue;
        /* Readers disagree on which duplicate wins; refuse the ambiguity. */
        if (seen & (1u << f)) {
            set_err(errbuf, errlen, field_names[f], "duplicate field");
            st = FG_EINVAL;
            goto cleanup;
        }
        seen |= 1u << f;
        st = take_field((lock_field)f, &kv->val, lk, errbuf, errlen);
        if (st != FG_OK)
            goto cleanup;
    }

    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (!(seen & (1u << required[i]))) {
            set_err(errbuf, errlen, field_names[required[i]], "missing");
            st = FG_EINVAL;
            goto cleanup;
        }
    }
    if (lk->state == FG_LOCK_LOCKED && !(seen & (1u << F_UNTIL))) {
        set_err(errbuf, errlen, "until", "missing (required when locked)");
        st = FG_EINVAL;
        goto cleanup;
    }

cleanup:
    msgpack_unpacked_destroy(&up);
    return st;
}

/* ---- encoding --------------------------------------------------------- */

static void pack_key(msgpack_packer *pk, const char *key)
{
    size_t n = strlen(key);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, key, n);
}

/* s is one of the static enum names. */
static void pack_kv_name(msgpack_packer *pk, const char *key, const char *s)
{
    size_t n = strlen(s);
    pack_key(pk, key);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* s is a fixed array of cap + 1 bytes; never read past it. */
static void pack_kv_str(msgpack_packer *pk, const char *key, const char *s,
                        size_t cap)
{
    size_t n = strnlen(s, cap);
    pack_key(pk, key);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_kv_i64(msgpack_packer *pk, const char *key, int64_t v)
{
    pack_key(pk, key);
    msgpack_pack_int64(pk, v);
}

size_t fg_lock_encode(const fg_lock *lk, char *out, size_t cap)
{
    fg_mpbuf mb = {out, cap, 0, false};
    msgpack_packer pk;
    size_t entries = 9; /* the required fields and actor */
    bool with_until = lk->state == FG_LOCK_LOCKED || lk->until != 0;

    entries += with_until;
    entries += (lk->has & FG_LOCK_HAS_PIN) != 0;
    entries += (lk->has & FG_LOCK_HAS_SCORE) != 0;
    entries += (lk->has & FG_LOCK_HAS_DEVICES) != 0;
    entries += (lk->has & FG_LOCK_HAS_TOKEN) != 0;

    msgpack_packer_init(&pk, &mb, fg_mpbuf_write);
    msgpack_pack_map(&pk, entries);
    pack_kv_str(&pk, "region", lk->region, FG_REGION_MAX);
    pack_kv_name(&pk, "state", fg_lock_state_str(lk->state));
    pack_kv_name(&pk, "scope", fg_lock_scope_str(lk->scope));
    pack_kv_name(&pk, "source", fg_lock_source_str(lk->source));
    pack_kv_str(&pk, "reason", lk->reason, FG_LOCK_REASON_MAX);
    pack_kv_str(&pk, "message", lk->message, FG_LOCK_MESSAGE_MAX);
    pack_kv_str(&pk, "actor", lk->actor, FG_LOCK_ACTOR_MAX);
    pack_kv_str(&pk, "id", lk->id, FG_LOCK_ID_MAX);
    pack_kv_i64(&pk, "since", lk->since);
    if (with_until)
        pack_kv_i64(&pk, "until", lk->until);
    if (lk->has & FG_LOCK_HAS_PIN)
        pack_kv_i64(&pk, "pin_until", lk->pin_until);
    if (lk->has & FG_LOCK_HAS_SCORE) {
        pack_key(&pk, "score");
        msgpack_pack_double(&pk, lk->score);
    }
    if (lk->has & FG_LOCK_HAS_DEVICES)
        pack_kv_i64(&pk, "devices", lk->devices);
    if (lk->has & FG_LOCK_HAS_TOKEN) {
        pack_key(&pk, "token");
        msgpack_pack_uint64(&pk, lk->token);
    }
    return fg_mpbuf_len(&mb);
}

/* ---- table ------------------------------------------------------------ */

/* Keys are region codes (1..6 bytes) packed little-endian into a uint64, so
 * a probe compares one word; 0 marks an empty slot. Linear probing with
 * backward-shift deletion keeps the table free of tombstones. */
typedef struct fg_lock_slot {
    uint64_t key;
    fg_lock *lk; /* owned */
} fg_lock_slot;

struct fg_lock_table {
    fg_lock_slot *slots;
    size_t cap;   /* power of two */
    unsigned bits; /* log2(cap) */
    size_t size;
};

#define FG_LOCK_TABLE_MIN_BITS 4

/* The packed key of a NUL-terminated region, or 0 when it is empty or
 * longer than FG_REGION_MAX. Reads at most FG_REGION_MAX + 1 bytes and never
 * past the NUL. */
static uint64_t region_key(const char *region)
{
    uint64_t k = 0;
    size_t i;
    for (i = 0; i <= FG_REGION_MAX && region[i] != '\0'; i++)
        k |= (uint64_t)(unsigned char)region[i] << (8 * i);
    if (i == 0 || i > FG_REGION_MAX)
        return 0;
    return k;
}

static size_t slot_home(const fg_lock_table *t, uint64_t key)
{
    /* Fibonacci hashing: the top bits of the product mix every key byte. */
    return (size_t)((key * 0x9e3779b97f4a7c15ull) >> (64 - t->bits));
}

/* Index of key's slot, or of the empty slot where it would go. */
static size_t slot_find(const fg_lock_table *t, uint64_t key)
{
    size_t mask = t->cap - 1;
    size_t i = slot_home(t, key);
    while (t->slots[i].key != 0 && t->slots[i].key != key)
        i = (i + 1) & mask;
    return i;
}

static fg_lock_table *table_alloc(unsigned bits)
{
    fg_lock_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->bits = bits;
    t->cap = (size_t)1 << bits;
    t->slots = calloc(t->cap, sizeof(*t->slots));
    if (!t->slots) {
        free(t);
        return NULL;
    }
    return t;
}

fg_lock_table *fg_lock_table_new(void)
{
    return table_alloc(FG_LOCK_TABLE_MIN_BITS);
}

void fg_lock_table_free(fg_lock_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->cap; i++)
        free(t->slots[i].lk);
    free(t->slots);
    free(t);
}

static fg_status table_grow(fg_lock_table *t)
{
    unsigned bits = t->bits + 1;
    size_t cap = (size_t)1 << bits;
    fg_lock_slot *old = t->slots;
    size_t old_cap = t->cap;
    fg_lock_slot *slots = calloc(cap, sizeof(*slots));

    if (!slots)
        return FG_ENOMEM;
    t->slots = slots;
    t->cap = cap;
    t->bits = bits;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].key != 0)
            t->slots[slot_find(t, old[i].key)] = old[i];
    }
    free(old);
    return FG_OK;
}

static void table_remove_at(fg_lock_table *t, size_t i)
{
    size_t mask = t->cap - 1;
    size_t j = i;

    free(t->slots[i].lk);
    /* Shift later members of the probe run back over the hole unless their
     * home lies cyclically in (i, j], where they already are reachable. */
    for (;;) {
        size_t h;
        bool stays;
        j = (j + 1) & mask;
        if (t->slots[j].key == 0)
            break;
        h = slot_home(t, t->slots[j].key);
        stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (stays)
            continue;
        t->slots[i] = t->slots[j];
        i = j;
    }
    t->slots[i].key = 0;
    t->slots[i].lk = NULL;
    t->size--;
}

fg_status fg_lock_table_put(fg_lock_table *t, const char *region,
                            const fg_lock *lk)
{
    uint64_t key = region_key(region);
    fg_lock *copy = NULL;
    size_t i;
    fg_status st = FG_OK;

    if (key == 0) {
        st = FG_EINVAL;
        goto cleanup;
    }
    i = slot_find(t, key);
    if (!lk) {
        if (t->slots[i].key != 0)
            table_remove_at(t, i);
        goto cleanup;
    }
    if (t->slots[i].key != 0) {
        if (t->slots[i].lk != lk)
            *t->slots[i].lk = *lk;
        goto cleanup;
    }
    copy = malloc(sizeof(*copy));
    if (!copy) {
        st = FG_ENOMEM;
        goto cleanup;
    }
    *copy = *lk;
    /* Keep the load factor at or below 3/4 so probe runs stay short. */
    if ((t->size + 1) * 4 > t->cap * 3) {
        st = table_grow(t);
        if (st != FG_OK)
            goto cleanup;
        i = slot_find(t, key);
    }
    t->slots[i].key = key;
    t->slots[i].lk = copy;
    copy = NULL;
    t->size++;

cleanup:
    free(copy);
    return st;
}

static const fg_lock *table_lookup(const fg_lock_table *t, uint64_t key)
{
    size_t i;
    if (!t || key == 0 || t->size == 0)
        return NULL;
    i = slot_find(t, key);
    return t->slots[i].key != 0 ? t->slots[i].lk : NULL;
}

const fg_lock *fg_lock_table_get(const fg_lock_table *t, const char *region)
{
    if (!region)
        return NULL;
    return table_lookup(t, region_key(region));
}

size_t fg_lock_table_size(const fg_lock_table *t)
{
    return t ? t->size : 0;
}

fg_lock_table *fg_lock_table_clone(const fg_lock_table *t)
{
    fg_lock_table *c = NULL;

    if (!t)
        goto cleanup;
    c = table_alloc(t->bits);
    if (!c)
        goto cleanup;
    /* Same capacity and hash, so every record keeps its slot. */
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].key == 0)
            continue;
        c->slots[i].lk = malloc(sizeof(fg_lock));
        if (!c->slots[i].lk) {
            fg_lock_table_free(c);
            c = NULL;
            goto cleanup;
        }
        *c->slots[i].lk = *t->slots[i].lk;
        c->slots[i].key = t->slots[i].key;
        c->size++;
    }

cleanup:
    return c;
}

void fg_lock_table_foreach(const fg_lock_table *t,
                           void (*cb)(void *ud, const fg_lock *lk), void *ud)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].key != 0)
            cb(ud, t->slots[i].lk);
    }
}

/* True when lk locks the device now. *grey caches fg_region_is_grey across
 * the exact and the country record (-1 = not computed yet). */
static bool lock_applies(const fg_lock *lk, const fg_market_map *m,
                         const fg_checkin *ci, int64_t now_ms, int *grey)
{
    if (!lk || lk->state != FG_LOCK_LOCKED || now_ms >= lk->until)
        return false;
    if (lk->scope == FG_SCOPE_ALL)
        return true;
    if (*grey < 0)
        *grey = fg_region_is_grey(m, ci->sku_region, ci->region) ? 1 : 0;
    return *grey == 1;
}

const fg_lock *fg_lock_table_match(const fg_lock_table *t,
                                   const fg_market_map *m,
                                   const fg_checkin *ci, int64_t now_ms)
{
    const fg_lock *lk;
    int grey = -1;
    char country[3];

    if (!t || t->size == 0)
        return NULL;
    lk = table_lookup(t, region_key(ci->region));
    if (lock_applies(lk, m, ci, now_ms, &grey))
        return lk;
    /* A subdivision whose own record does not apply is still covered by a
     * lock of its country. */
    if (ci->region[0] == '\0' || ci->region[1] == '\0' || ci->region[2] != '-')
        return NULL;
    fg_region_country(ci->region, country);
    lk = table_lookup(t, region_key(country));
    if (lock_applies(lk, m, ci, now_ms, &grey))
        return lk;
    return NULL;
}
