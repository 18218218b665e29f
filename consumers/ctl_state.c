/* SPDX-License-Identifier: Apache-2.0 */
/* Region table (sorted array, binary search), score-row decoding, the
 * per-region history (a ring of score rows and a since-ordered array of
 * encoded lock records, in an index of its own so that history read back
 * from Redis never makes a region appear in the table) and the JSON views
 * of regions and lock records. */
#include "ctl_state.h"

#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

/* One lock record of a history: the fields that identify it, and its
 * encoding (what the detail view decodes and Redis stores). */
typedef struct hist_lock {
    int64_t since;
    int state;
    char id[FG_LOCK_ID_MAX + 1];
    char *rec; /* malloc'd, len bytes */
    size_t len;
} hist_lock;

struct ctl_history {
    ctl_score_row *scores; /* ring of s_cap rows, after the struct */
    size_t s_cap, s_head, s_n;
    hist_lock *locks; /* l_cap slots, oldest first; NULL until a record */
    size_t l_cap, l_n;
};

typedef struct hist_slot {
    char region[FG_REGION_MAX + 1];
    ctl_history *h;
} hist_slot;

struct ctl_state {
    ctl_region *items;
    size_t n, cap;
    hist_slot *hist; /* sorted by region */
    size_t hn, hcap;
    ctl_history_limits lim;
    size_t hist_bytes; /* charged against lim.max_bytes */
    uint64_t hist_refused;
    ctl_state_change_cb on_change;
    void *on_change_ud;
};

/* ---- score rows ---- */

enum { SC_REGION = 1, SC_TS = 2, SC_DEV = 4, SC_GREY = 8, SC_SHARE = 16,
       SC_LO = 32, SC_HI = 64, SC_ALL = 127 };

/* Largest ts, devices or grey accepted, in either encoding: exact in a
 * double (msgpack integers are read through one). */
#define CTL_SCORE_COUNT_MAX 9.0e15

static const char *const score_names[] = {"region", "ts", "devices", "grey",
                                          "share", "lo", "hi"};

static int score_missing(unsigned have, char *errbuf, size_t errlen)
{
    for (int i = 0; i < 7; i++)
        if (!(have & (1u << i))) {
            snprintf(errbuf, errlen, "%s: missing", score_names[i]);
            return 1;
        }
    return 0;
}

static int set_region(ctl_score *out, const char *s, size_t n, char *errbuf,
                      size_t errlen)
{
    if (n > FG_REGION_MAX || !fg_region_valid(s, n)) {
        snprintf(errbuf, errlen, "region: not a region code");
        return -1;
    }
    memcpy(out->region, s, n);
    out->region[n] = '\0';
    return 0;
}

/* Keeps a mode of 1-15 visible ASCII bytes ("auto", "monitor", "never");
 * any other value is ignored like an unknown key. It is copied into the
 * API's JSON as is, where raw bytes from a msgpack str (not checked for
 * UTF-8) made yajl's generator drop the value and break the object. */
static void set_mode(ctl_score *out, const char *s, size_t n)
{
    if (n == 0 || n >= sizeof(out->mode))
        return;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return;
    memcpy(out->mode, s, n);
    out->mode[n] = '\0';
}

/* Deepest nesting a score row may have (its unknown keys' values). */
#define CTL_SCORE_DEPTH 16

/* How the msgpack types 0xc0..0xdf are laid out: a fixed payload of `n`
 * bytes; a payload whose length is the next `n` bytes, plus `extra` (the
 * ext type byte); an array or a map whose element count is the next `n`
 * bytes; or never used (0xc1). */
enum { MP_FIXED, MP_SIZED, MP_ARRAY, MP_MAP, MP_BAD };
static const struct {
    unsigned char kind, n, extra;
} mp_types[32] = {
    {MP_FIXED, 0, 0}, {MP_BAD, 0, 0},   {MP_FIXED, 0, 0}, {MP_FIXED, 0, 0},
    {MP_SIZED, 1, 0}, {MP_SIZED, 2, 0}, {MP_SIZED, 4, 0}, {MP_SIZED, 1, 1},
    {MP_SIZED, 2, 1}, {MP_SIZED, 4, 1}, {MP_FIXED, 4, 0}, {MP_FIXED, 8, 0},
    {MP_FIXED, 1, 0}, {MP_FIXED, 2, 0}, {MP_FIXED, 4, 0}, {MP_FIXED, 8, 0},
    {MP_FIXED, 1, 0}, {MP_FIXED, 2, 0}, {MP_FIXED, 4, 0}, {MP_FIXED, 8, 0},
    {MP_FIXED, 2, 0}, {MP_FIXED, 3, 0}, {MP_FIXED, 5, 0}, {MP_FIXED, 9, 0},
    {MP_FIXED, 17, 0}, {MP_SIZED, 1, 0}, {MP_SIZED, 2, 0}, {MP_SIZED, 4, 0},
    {MP_ARRAY, 2, 0}, {MP_ARRAY, 4, 0}, {MP_MAP, 2, 0}, {MP_MAP, 4, 0}};

/* Steps over the msgpack value at p[*off] without allocating. 0 when it is
 * cut short, uses 0xc1, nests deeper than CTL_SCORE_DEPTH, or has a
 * container that declares more elements than bytes remain (each takes one
 * at least). msgpack-c allocates a container's elements before reading
 * them, so five bytes declaring an array of 2^32 - 1 elements asked it for
 * about 100 GB. */
static int mp_skip(const unsigned char *p, size_t len, size_t *off,
                   int depth)
{
    uint64_t n = 0; /* payload bytes or elements */
    int kind;
    if (*off >= len)
        return 0;
    unsigned b = p[(*off)++];
    if (b <= 0x7f || b >= 0xe0) {
        return 1; /* fixint */
    } else if (b <= 0x8f) {
        kind = MP_MAP;
        n = b & 0x0f;
    } else if (b <= 0x9f) {
        kind = MP_ARRAY;
        n = b & 0x0f;
    } else if (b <= 0xbf) {
        kind = MP_FIXED; /* fixstr */
        n = b & 0x1f;
    } else {
        kind = mp_types[b - 0xc0].kind;
        n = mp_types[b - 0xc0].n;
        if (kind == MP_BAD)
            return 0;
        if (kind != MP_FIXED) {
            size_t w = (size_t)n;
            if (len - *off < w)
                return 0;
            n = 0;
            for (size_t i = 0; i < w; i++)
                n = n << 8 | p[*off + i];
            *off += w;
            n += mp_types[b - 0xc0].extra;
            if (kind == MP_SIZED)
                kind = MP_FIXED;
        }
    }
    if (kind == MP_MAP)
        n *= 2;
    if (n > len - *off)
        return 0;
    if (kind == MP_FIXED) {
        *off += (size_t)n;
        return 1;
    }
    if (depth >= CTL_SCORE_DEPTH)
        return 0;
    for (uint64_t i = 0; i < n; i++)
        if (!mp_skip(p, len, off, depth + 1))
            return 0;
    return 1;
}

static fg_status decode_msgpack(const char *buf, size_t len, ctl_score *out,
                                char *errbuf, size_t errlen)
{
    msgpack_unpacked u;
    size_t off = 0;
    unsigned have = 0;
    fg_status st = FG_EINVAL;
    size_t end = 0;
    msgpack_unpacked_init(&u);
    if (!mp_skip((const unsigned char *)buf, len, &end, 0) || end != len ||
        msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != len || u.data.type != MSGPACK_OBJECT_MAP) {
        snprintf(errbuf, errlen, "not one msgpack map");
        goto out;
    }
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        const msgpack_object *k = &u.data.via.map.ptr[i].key;
        const msgpack_object *v = &u.data.via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR)
            continue;
        const char *ks = k->via.str.ptr;
        size_t kn = k->via.str.size;
#define KEY(lit) (kn == sizeof(lit) - 1 && memcmp(ks, lit, kn) == 0)
        if (KEY("region")) {
            if (v->type != MSGPACK_OBJECT_STR ||
                set_region(out, v->via.str.ptr, v->via.str.size, errbuf,
                           errlen))
                goto bad_region;
            have |= SC_REGION;
        } else if (KEY("mode")) {
            if (v->type == MSGPACK_OBJECT_STR)
                set_mode(out, v->via.str.ptr, v->via.str.size);
        } else {
            int idx = KEY("ts") ? 1 : KEY("devices") ? 2 : KEY("grey") ? 3
                    : KEY("share") ? 4 : KEY("lo") ? 5 : KEY("hi") ? 6 : -1;
            if (idx < 0)
                continue;
            double d;
            if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                d = (double)v->via.u64;
            else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                d = (double)v->via.i64;
            else if ((v->type == MSGPACK_OBJECT_FLOAT64 ||
                      v->type == MSGPACK_OBJECT_FLOAT32) && idx >= 4)
                d = v->via.f64;
            else {
                snprintf(errbuf, errlen, "%s: wrong type", score_names[idx]);
                goto out;
            }
            if (!isfinite(d) || d < 0 ||
                (idx < 4 && d > CTL_SCORE_COUNT_MAX)) {
                snprintf(errbuf, errlen, "%s: out of range", score_names[idx]);
                goto out;
            }
            switch (idx) {
            case 1: out->ts = (int64_t)d; break;
            case 2: out->devices = (int64_t)d; break;
            case 3: out->grey = (int64_t)d; break;
            case 4: out->share = d; break;
            case 5: out->lo = d; break;
            default: out->hi = d; break;
            }
            have |= 1u << idx;
        }
#undef KEY
    }
    if (score_missing(have, errbuf, errlen))
        goto out;
    st = FG_OK;
    goto out;
bad_region:
    snprintf(errbuf, errlen, "region: not a region code");
out:
    msgpack_unpacked_destroy(&u);
    return st;
}

static fg_status decode_json(const char *buf, size_t len, ctl_score *out,
                             char *errbuf, size_t errlen)
{
    char text[CTL_SCORE_INPUT_MAX + 1];
    unsigned have = 0;
    fg_status st = FG_EINVAL;
    /* yajl decodes \u0000 into a NUL: "CU\u0000XX" would read as CU. */
    if (memchr(buf, '\0', len) || ctl_req_json_has_nul(buf, len)) {
        snprintf(errbuf, errlen, "NUL in JSON");
        return FG_EINVAL;
    }
    memcpy(text, buf, len);
    text[len] = '\0';
    yajl_val root = yajl_tree_parse(text, NULL, 0);
    if (!root || !YAJL_IS_OBJECT(root)) {
        snprintf(errbuf, errlen, "not a JSON object");
        goto out;
    }
    for (size_t i = 0; i < root->u.object.len; i++) {
        const char *k = root->u.object.keys[i];
        yajl_val v = root->u.object.values[i];
        if (strcmp(k, "region") == 0) {
            if (!YAJL_IS_STRING(v) || set_region(out, v->u.string,
                                                 strlen(v->u.string), errbuf,
                                                 errlen))
                goto out;
            have |= SC_REGION;
        } else if (strcmp(k, "mode") == 0) {
            if (YAJL_IS_STRING(v))
                set_mode(out, v->u.string, strlen(v->u.string));
        } else {
            int idx = -1;
            for (int j = 1; j < 7; j++)
                if (strcmp(k, score_names[j]) == 0)
                    idx = j;
            if (idx < 0)
                continue;
            if (!YAJL_IS_NUMBER(v) || (idx < 4 && !YAJL_IS_INTEGER(v))) {
                snprintf(errbuf, errlen, "%s: wrong type", k);
                goto out;
            }
            double d = idx < 4 ? (double)YAJL_GET_INTEGER(v)
                               : YAJL_GET_DOUBLE(v);
            if (!isfinite(d) || d < 0 ||
                (idx < 4 && d > CTL_SCORE_COUNT_MAX)) {
                snprintf(errbuf, errlen, "%s: out of range", k);
                goto out;
            }
            switch (idx) {
            case 1: out->ts = YAJL_GET_INTEGER(v); break;
            case 2: out->devices = YAJL_GET_INTEGER(v); break;
            case 3: out->grey = YAJL_GET_INTEGER(v); break;
            case 4: out->share = d; break;
            case 5: out->lo = d; break;
            default: out->hi = d; break;
            }
            have |= 1u << idx;
        }
    }
    if (score_missing(have, errbuf, errlen))
        goto out;
    st = FG_OK;
out:
    yajl_tree_free(root);
    return st;
}

fg_status ctl_score_decode(const char *buf, size_t len, ctl_score *out,
                           char *errbuf, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!buf || len == 0) {
        snprintf(errbuf, errlen, "empty row");
        return FG_EINVAL;
    }
    if (len > CTL_SCORE_INPUT_MAX) {
        snprintf(errbuf, errlen, "row over %d bytes", CTL_SCORE_INPUT_MAX);
        return FG_ETOOBIG;
    }
    if (buf[0] == '{')
        return decode_json(buf, len, out, errbuf, errlen);
    return decode_msgpack(buf, len, out, errbuf, errlen);
}

/* ---- the table ---- */

ctl_state *ctl_state_new(void)
{
    ctl_state *st = calloc(1, sizeof(ctl_state));
    if (!st)
        return NULL;
    st->lim.scores = CTL_HISTORY_SCORES_DEFAULT;
    st->lim.locks = CTL_HISTORY_LOCKS_DEFAULT;
    st->lim.max_bytes = CTL_HISTORY_BYTES_DEFAULT;
    return st;
}

static void hist_free(ctl_history *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->l_n; i++)
        free(h->locks[i].rec);
    free(h->locks);
    free(h);
}

void ctl_state_free(ctl_state *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->hn; i++)
        hist_free(st->hist[i].h);
    free(st->hist);
    free(st->items);
    free(st);
}

/* The table and the history index are both arrays sorted by region code
 * whose elements start with the code; these two helpers serve both. */
_Static_assert(offsetof(ctl_region, region) == 0, "region code first");
_Static_assert(offsetof(hist_slot, region) == 0, "region code first");

/* Index of region in base (n elements of size bytes), or of where it would
 * go (with *found 0). */
static size_t region_search(const void *base, size_t n, size_t size,
                            const char *region, int *found)
{
    const char *at = base;
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(at + mid * size, region);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

/* Opens a zeroed element at index i of base (*n elements of size bytes in
 * room for *cap, which doubles from 64) and sets its region code. Returns
 * the array, perhaps moved; NULL when out of memory (base is unchanged). */
static void *region_insert(void *base, size_t *n, size_t *cap, size_t size,
                           size_t i, const char *region)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        void *grown = realloc(base, ncap * size);
        if (!grown)
            return NULL;
        base = grown;
        *cap = ncap;
    }
    char *at = (char *)base + i * size;
    memmove(at + size, at, (*n - i) * size);
    (*n)++;
    memset(at, 0, size);
    snprintf(at, FG_REGION_MAX + 1, "%s", region);
    return base;
}

static size_t find(const ctl_state *st, const char *region, int *found)
{
    return region_search(st->items, st->n, sizeof(*st->items), region, found);
}

static ctl_region *get_or_add(ctl_state *st, const char *region,
                              fg_status *err)
{
    int found;
    size_t i = find(st, region, &found);
    if (found)
        return &st->items[i];
    if (st->n >= CTL_STATE_MAX_REGIONS) {
        *err = FG_ETOOBIG;
        return NULL;
    }
    ctl_region *items = region_insert(st->items, &st->n, &st->cap,
                                      sizeof(*items), i, region);
    if (!items) {
        *err = FG_ENOMEM;
        return NULL;
    }
    st->items = items;
    return &items[i];
}

/* ---- history ---- */

fg_status ctl_state_set_history(ctl_state *st, const ctl_history_limits *lim)
{
    if (st->hn > 0 || lim->scores < 1 ||
        lim->scores > CTL_HISTORY_SCORES_MAX || lim->locks < 1 ||
        lim->locks > CTL_HISTORY_LOCKS_MAX || lim->max_bytes == 0)
        return FG_EINVAL;
    st->lim = *lim;
    return FG_OK;
}

void ctl_state_on_change(ctl_state *st, ctl_state_change_cb cb, void *ud)
{
    st->on_change = cb;
    st->on_change_ud = ud;
}

/* Takes n bytes from the budget; 0 when they do not fit. */
static int charge(ctl_state *st, size_t n)
{
    if (n > st->lim.max_bytes || st->hist_bytes > st->lim.max_bytes - n)
        return 0;
    st->hist_bytes += n;
    return 1;
}

static size_t hist_find(const ctl_state *st, const char *region, int *found)
{
    return region_search(st->hist, st->hn, sizeof(*st->hist), region, found);
}

/* The region's history, created (with its score ring) on first use.
 * NULL with *err FG_ETOOBIG (budget or index full; counted) or FG_ENOMEM. */
static ctl_history *hist_get(ctl_state *st, const char *region,
                             fg_status *err)
{
    int found;
    size_t i = hist_find(st, region, &found);
    if (found)
        return st->hist[i].h;
    size_t bytes = sizeof(ctl_history) + st->lim.scores * sizeof(ctl_score_row);
    if (st->hn >= CTL_STATE_MAX_REGIONS || !charge(st, bytes)) {
        st->hist_refused++;
        *err = FG_ETOOBIG;
        return NULL;
    }
    ctl_history *h = calloc(1, bytes);
    hist_slot *slots = h ? region_insert(st->hist, &st->hn, &st->hcap,
                                         sizeof(*slots), i, region)
                         : NULL;
    if (!slots) {
        free(h);
        st->hist_bytes -= bytes;
        *err = FG_ENOMEM;
        return NULL;
    }
    h->scores = (ctl_score_row *)(h + 1);
    h->s_cap = st->lim.scores;
    h->l_cap = st->lim.locks;
    st->hist = slots;
    st->hist[i].h = h;
    return h;
}

static ctl_score_row *ring_at(const ctl_history *h, size_t i)
{
    return &h->scores[(h->s_head + i) % h->s_cap];
}

/* Puts row in ts order. Returns 1 when it went in; 0 when a row of that ts
 * is held, or the ring is full and row is older than all of it. */
static int hist_put_score(ctl_history *h, const ctl_score_row *row)
{
    size_t p = h->s_n;
    while (p > 0 && ring_at(h, p - 1)->ts >= row->ts) {
        if (ring_at(h, p - 1)->ts == row->ts)
            return 0;
        p--;
    }
    if (h->s_n == h->s_cap) {
        if (p == 0)
            return 0;
        h->s_head = (h->s_head + 1) % h->s_cap;
        h->s_n--;
        p--;
    }
    for (size_t i = h->s_n; i > p; i--)
        *ring_at(h, i) = *ring_at(h, i - 1);
    *ring_at(h, p) = *row;
    h->s_n++;
    return 1;
}

static void hist_drop_oldest_lock(ctl_state *st, ctl_history *h)
{
    st->hist_bytes -= h->locks[0].len;
    free(h->locks[0].rec);
    memmove(&h->locks[0], &h->locks[1], (h->l_n - 1) * sizeof(*h->locks));
    h->l_n--;
}

/* Puts lk in since order (after records with the same since). Returns 1
 * when it went in; 0 when it is there already, or the history is full and
 * lk is older than all of it; FG_ETOOBIG or FG_ENOMEM as a negative. */
static int hist_put_lock(ctl_state *st, ctl_history *h, const fg_lock *lk)
{
    char rec[FG_LOCK_RECORD_MAX];
    for (size_t i = 0; i < h->l_n; i++)
        if (h->locks[i].since == lk->since &&
            h->locks[i].state == (int)lk->state &&
            strcmp(h->locks[i].id, lk->id) == 0)
            return 0;
    size_t len = fg_lock_encode(lk, rec, sizeof(rec));
    if (len == 0)
        return FG_EINVAL;
    if (!h->locks) {
        size_t bytes = h->l_cap * sizeof(*h->locks);
        if (!charge(st, bytes)) {
            st->hist_refused++;
            return FG_ETOOBIG;
        }
        h->locks = calloc(h->l_cap, sizeof(*h->locks));
        if (!h->locks) {
            st->hist_bytes -= bytes;
            return FG_ENOMEM;
        }
    }
    size_t p = h->l_n;
    while (p > 0 && h->locks[p - 1].since > lk->since)
        p--;
    if (h->l_n == h->l_cap) {
        if (p == 0)
            return 0;
        hist_drop_oldest_lock(st, h);
        p--;
    }
    /* Over the budget, the region's own older records make room. */
    while (!charge(st, len)) {
        if (p == 0) {
            st->hist_refused++;
            return FG_ETOOBIG;
        }
        hist_drop_oldest_lock(st, h);
        p--;
    }
    char *copy = malloc(len);
    if (!copy) {
        st->hist_bytes -= len;
        return FG_ENOMEM;
    }
    memcpy(copy, rec, len);
    memmove(&h->locks[p + 1], &h->locks[p], (h->l_n - p) * sizeof(*h->locks));
    hist_lock *e = &h->locks[p];
    e->since = lk->since;
    e->state = (int)lk->state;
    snprintf(e->id, sizeof(e->id), "%s", lk->id);
    e->rec = copy;
    e->len = len;
    h->l_n++;
    return 1;
}

static ctl_score_row row_of(const ctl_score *s)
{
    ctl_score_row row = {s->ts, s->devices, s->grey, s->share, s->lo, s->hi};
    return row;
}

fg_status ctl_state_history_add_score(ctl_state *st, const char *region,
                                      const ctl_score_row *row)
{
    fg_status err = FG_OK;
    if (!fg_region_valid(region, strlen(region)))
        return FG_EINVAL;
    ctl_history *h = hist_get(st, region, &err);
    if (!h)
        return err;
    (void)hist_put_score(h, row);
    return FG_OK;
}

fg_status ctl_state_history_add_lock(ctl_state *st, const char *region,
                                     const fg_lock *lk)
{
    fg_status err = FG_OK;
    if (!fg_region_valid(region, strlen(region)))
        return FG_EINVAL;
    ctl_history *h = hist_get(st, region, &err);
    if (!h)
        return err;
    int rc = hist_put_lock(st, h, lk);
    return rc < 0 ? (fg_status)rc : FG_OK;
}

const ctl_history *ctl_state_history(const ctl_state *st, const char *region)
{
    int found;
    size_t i = hist_find(st, region, &found);
    return found ? st->hist[i].h : NULL;
}

size_t ctl_history_scores(const ctl_history *h)
{
    return h ? h->s_n : 0;
}

const ctl_score_row *ctl_history_score(const ctl_history *h, size_t i)
{
    return h && i < h->s_n ? ring_at(h, i) : NULL;
}

size_t ctl_history_locks(const ctl_history *h)
{
    return h ? h->l_n : 0;
}

const char *ctl_history_lock(const ctl_history *h, size_t i, size_t *len,
                             int64_t *since)
{
    if (!h || i >= h->l_n)
        return NULL;
    *len = h->locks[i].len;
    if (since)
        *since = h->locks[i].since;
    return h->locks[i].rec;
}

void ctl_state_history_stats(const ctl_state *st, ctl_history_stats *out)
{
    out->regions = st->hn;
    out->bytes = st->hist_bytes;
    out->refused = st->hist_refused;
}

static void changed(ctl_state *st, const ctl_region *r,
                    const ctl_score_row *row, const fg_lock *lk)
{
    if (st->on_change)
        st->on_change(st->on_change_ud, r, row, lk);
}

/* ---- puts ---- */

fg_status ctl_state_put_lock(ctl_state *st, const char *region,
                             const fg_lock *lk)
{
    fg_status err = FG_OK;
    if (!fg_region_valid(region, strlen(region)))
        return FG_EINVAL;
    if (!lk) {
        int found;
        size_t i = find(st, region, &found);
        if (found) {
            st->items[i].has_lock = 0;
            memset(&st->items[i].lock, 0, sizeof(st->items[i].lock));
            changed(st, &st->items[i], NULL, NULL);
        }
        return FG_OK;
    }
    ctl_region *r = get_or_add(st, region, &err);
    if (!r)
        return err;
    r->lock = *lk;
    r->has_lock = 1;
    /* History is best effort: a refusal is counted, the put stands. */
    ctl_history *h = hist_get(st, region, &err);
    int added = h && hist_put_lock(st, h, lk) == 1;
    changed(st, r, NULL, added ? lk : NULL);
    return FG_OK;
}

fg_status ctl_state_put_score(ctl_state *st, const ctl_score *s)
{
    fg_status err = FG_OK;
    ctl_region *r = get_or_add(st, s->region, &err);
    if (!r)
        return err;
    if (r->has_score && r->score.ts > s->ts)
        return FG_OK; /* an older row (another partition's replay) */
    r->score = *s;
    r->has_score = 1;
    ctl_score_row row = row_of(s);
    ctl_history *h = hist_get(st, s->region, &err);
    int added = h && (h->s_n == 0 || ring_at(h, h->s_n - 1)->ts < row.ts) &&
                hist_put_score(h, &row);
    changed(st, r, added ? &row : NULL, NULL);
    return FG_OK;
}

const ctl_region *ctl_state_get(const ctl_state *st, const char *region)
{
    int found;
    size_t i = find(st, region, &found);
    return found ? &st->items[i] : NULL;
}

size_t ctl_state_count(const ctl_state *st)
{
    return st->n;
}

const ctl_region *ctl_state_at(const ctl_state *st, size_t i)
{
    return i < st->n ? &st->items[i] : NULL;
}

int ctl_region_state(const ctl_region *r, int64_t now_ms)
{
    if (!r || !r->has_lock)
        return FG_LOCK_UNLOCKED;
    if (r->lock.state == FG_LOCK_LOCKED && now_ms >= r->lock.until)
        return CTL_STATE_EXPIRED;
    return (int)r->lock.state;
}

const char *ctl_state_name(int state)
{
    return state == CTL_STATE_EXPIRED ? "expired"
                                      : fg_lock_state_str((fg_lock_state)state);
}

int64_t ctl_region_estimate(const ctl_region *r, fg_lock_scope scope)
{
    if (!r || !r->has_score)
        return -1;
    return scope == FG_SCOPE_ALL ? r->score.devices : r->score.grey;
}

static int cmp_regions(const void *a, const void *b, void *arg)
{
    ctl_sort sort = *(const ctl_sort *)arg;
    const ctl_region *x = *(const ctl_region *const *)a;
    const ctl_region *y = *(const ctl_region *const *)b;
    if (sort == CTL_SORT_SHARE) {
        double sx = x->has_score ? x->score.share : -1.0;
        double sy = y->has_score ? y->score.share : -1.0;
        if (sx != sy)
            return sx < sy ? 1 : -1;
    } else if (sort == CTL_SORT_DEVICES) {
        int64_t dx = x->has_score ? x->score.devices : -1;
        int64_t dy = y->has_score ? y->score.devices : -1;
        if (dx != dy)
            return dx < dy ? 1 : -1;
    }
    return strcmp(x->region, y->region);
}

size_t ctl_state_list(const ctl_state *st, const ctl_list_query *q,
                      int64_t now_ms, const ctl_region **out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < st->n && n < cap; i++) {
        const ctl_region *r = &st->items[i];
        if (q->state >= 0 && ctl_region_state(r, now_ms) != q->state)
            continue;
        out[n++] = r;
    }
    ctl_sort sort = q->sort;
    if (n > 1 && sort != CTL_SORT_REGION)
        qsort_r(out, n, sizeof(*out), cmp_regions, &sort);
    return n;
}

/* ---- JSON ---- */

void ctl_json_key(yajl_gen g, const char *key)
{
    yajl_gen_string(g, (const unsigned char *)key, strlen(key));
}

void ctl_json_str(yajl_gen g, const char *key, const char *val)
{
    ctl_json_key(g, key);
    if (!val) {
        yajl_gen_null(g);
        return;
    }
    /* Strings come from validated records; a bad one becomes "?". */
    if (yajl_gen_string(g, (const unsigned char *)val, strlen(val)) !=
        yajl_gen_status_ok)
        yajl_gen_string(g, (const unsigned char *)"?", 1);
}

void ctl_json_int(yajl_gen g, const char *key, int64_t val)
{
    ctl_json_key(g, key);
    yajl_gen_integer(g, (long long)val);
}

void ctl_json_num(yajl_gen g, const char *key, double val)
{
    char num[32];
    ctl_json_key(g, key);
    if (!isfinite(val)) {
        yajl_gen_null(g);
        return;
    }
    int n = snprintf(num, sizeof(num), "%.6f", val);
    yajl_gen_number(g, num, (size_t)n);
}

void ctl_json_bool(yajl_gen g, const char *key, int val)
{
    ctl_json_key(g, key);
    yajl_gen_bool(g, val);
}

void ctl_json_null(yajl_gen g, const char *key)
{
    ctl_json_key(g, key);
    yajl_gen_null(g);
}

void ctl_lock_json(yajl_gen g, const fg_lock *lk)
{
    if (!lk) {
        yajl_gen_null(g);
        return;
    }
    yajl_gen_map_open(g);
    ctl_json_str(g, "region", lk->region);
    ctl_json_str(g, "state", fg_lock_state_str(lk->state));
    ctl_json_str(g, "scope", fg_lock_scope_str(lk->scope));
    ctl_json_str(g, "source", fg_lock_source_str(lk->source));
    ctl_json_str(g, "reason", lk->reason);
    ctl_json_str(g, "message", lk->message);
    ctl_json_str(g, "actor", lk->actor);
    ctl_json_str(g, "id", lk->id);
    ctl_json_int(g, "since", lk->since);
    if (lk->state == FG_LOCK_LOCKED || lk->until)
        ctl_json_int(g, "until", lk->until);
    else
        ctl_json_null(g, "until");
    if (lk->has & FG_LOCK_HAS_PIN)
        ctl_json_int(g, "pin_until", lk->pin_until);
    else
        ctl_json_null(g, "pin_until");
    if (lk->has & FG_LOCK_HAS_DEVICES)
        ctl_json_int(g, "devices", lk->devices);
    yajl_gen_map_close(g);
}

/* The members of ctl_region_json's object (shared with the detail view so
 * the two never drift apart). */
static void region_members(yajl_gen g, const ctl_region *r, int64_t now_ms)
{
    const fg_lock *lk = r->has_lock ? &r->lock : NULL;
    const ctl_score *s = r->has_score ? &r->score : NULL;
    ctl_json_str(g, "region", r->region);
    if (s) {
        ctl_json_int(g, "devices", s->devices);
        ctl_json_int(g, "grey", s->grey);
        ctl_json_num(g, "share", s->share);
        ctl_json_num(g, "lo", s->lo);
        ctl_json_num(g, "hi", s->hi);
        ctl_json_int(g, "score_ts", s->ts);
        ctl_json_str(g, "mode", s->mode[0] ? s->mode : NULL);
    } else {
        static const char *const none[] = {"devices", "grey", "share", "lo",
                                           "hi", "score_ts", "mode"};
        for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
            ctl_json_null(g, none[i]);
    }
    ctl_json_str(g, "state", ctl_state_name(ctl_region_state(r, now_ms)));
    ctl_json_str(g, "scope", lk ? fg_lock_scope_str(lk->scope) : NULL);
    ctl_json_str(g, "source", lk ? fg_lock_source_str(lk->source) : NULL);
    ctl_json_str(g, "reason", lk ? lk->reason : NULL);
    ctl_json_str(g, "message", lk ? lk->message : NULL);
    ctl_json_str(g, "actor", lk ? lk->actor : NULL);
    ctl_json_str(g, "lock_id", lk ? lk->id : NULL);
    if (lk)
        ctl_json_int(g, "since", lk->since);
    else
        ctl_json_null(g, "since");
    if (lk && (lk->state == FG_LOCK_LOCKED || lk->until))
        ctl_json_int(g, "until", lk->until);
    else
        ctl_json_null(g, "until");
    if (lk && (lk->has & FG_LOCK_HAS_PIN))
        ctl_json_int(g, "pin_until", lk->pin_until);
    else
        ctl_json_null(g, "pin_until");
}

void ctl_region_json(yajl_gen g, const ctl_region *r, int64_t now_ms)
{
    yajl_gen_map_open(g);
    region_members(g, r, now_ms);
    yajl_gen_map_close(g);
}

void ctl_score_row_json(yajl_gen g, const char *region,
                        const ctl_score_row *row)
{
    yajl_gen_map_open(g);
    if (region)
        ctl_json_str(g, "region", region);
    ctl_json_int(g, "ts", row->ts);
    ctl_json_int(g, "devices", row->devices);
    ctl_json_int(g, "grey", row->grey);
    ctl_json_num(g, "share", row->share);
    ctl_json_num(g, "lo", row->lo);
    ctl_json_num(g, "hi", row->hi);
    yajl_gen_map_close(g);
}

void ctl_region_detail_json(yajl_gen g, const ctl_state *st,
                            const ctl_region *r, int64_t now_ms)
{
    const ctl_history *h = ctl_state_history(st, r->region);
    yajl_gen_map_open(g);
    region_members(g, r, now_ms);
    ctl_json_key(g, "history");
    yajl_gen_map_open(g);
    ctl_json_key(g, "scores");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < ctl_history_scores(h); i++)
        ctl_score_row_json(g, NULL, ctl_history_score(h, i));
    yajl_gen_array_close(g);
    ctl_json_key(g, "locks");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < ctl_history_locks(h); i++) {
        fg_lock lk;
        size_t len = 0;
        const char *rec = ctl_history_lock(h, i, &len, NULL);
        /* Our own encoding of a validated record: decoding cannot fail
         * short of memory, and then the entry is left out. */
        if (fg_lock_decode(rec, len, &lk, NULL, 0) == FG_OK)
            ctl_lock_json(g, &lk);
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    yajl_gen_map_close(g);
}
