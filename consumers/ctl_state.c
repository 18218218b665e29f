/* SPDX-License-Identifier: Apache-2.0 */
/* Region table (sorted array, binary search), score-row decoding and the
 * JSON views of regions and lock records. */
#include "ctl_state.h"

#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

struct ctl_state {
    ctl_region *items;
    size_t n, cap;
};

/* ---- score rows ---- */

enum { SC_REGION = 1, SC_TS = 2, SC_DEV = 4, SC_GREY = 8, SC_SHARE = 16,
       SC_LO = 32, SC_HI = 64, SC_ALL = 127 };

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

static fg_status decode_msgpack(const char *buf, size_t len, ctl_score *out,
                                char *errbuf, size_t errlen)
{
    msgpack_unpacked u;
    size_t off = 0;
    unsigned have = 0;
    fg_status st = FG_EINVAL;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
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
            if (v->type == MSGPACK_OBJECT_STR &&
                v->via.str.size < sizeof(out->mode)) {
                memcpy(out->mode, v->via.str.ptr, v->via.str.size);
                out->mode[v->via.str.size] = '\0';
            }
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
            if (!isfinite(d) || d < 0 || (idx < 4 && d > 9.0e15)) {
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
    if (memchr(buf, '\0', len)) {
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
            if (YAJL_IS_STRING(v) && strlen(v->u.string) < sizeof(out->mode))
                snprintf(out->mode, sizeof(out->mode), "%s", v->u.string);
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
            if (!isfinite(d) || d < 0) {
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
    return calloc(1, sizeof(ctl_state));
}

void ctl_state_free(ctl_state *st)
{
    if (!st)
        return;
    free(st->items);
    free(st);
}

/* Index of region, or of where it would go (with *found 0). */
static size_t find(const ctl_state *st, const char *region, int *found)
{
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->items[mid].region, region);
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
    if (st->n == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 64;
        ctl_region *items = realloc(st->items, cap * sizeof(*items));
        if (!items) {
            *err = FG_ENOMEM;
            return NULL;
        }
        st->items = items;
        st->cap = cap;
    }
    memmove(&st->items[i + 1], &st->items[i], (st->n - i) * sizeof(*st->items));
    st->n++;
    memset(&st->items[i], 0, sizeof(st->items[i]));
    snprintf(st->items[i].region, sizeof(st->items[i].region), "%s", region);
    return &st->items[i];
}

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
        }
        return FG_OK;
    }
    ctl_region *r = get_or_add(st, region, &err);
    if (!r)
        return err;
    r->lock = *lk;
    r->has_lock = 1;
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

void ctl_region_json(yajl_gen g, const ctl_region *r, int64_t now_ms)
{
    const fg_lock *lk = r->has_lock ? &r->lock : NULL;
    const ctl_score *s = r->has_score ? &r->score : NULL;
    yajl_gen_map_open(g);
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
    yajl_gen_map_close(g);
}
