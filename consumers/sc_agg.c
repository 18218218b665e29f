/* SPDX-License-Identifier: Apache-2.0 */
/* Per-batch aggregation for the scorer: open-addressing tables for regions
 * and (region, bucket, device) membership, an arena for the device ids of
 * the batch, and a chained table for the per-partition seq memory. The
 * device id is hashed once per check-in; both tables keep that hash and the
 * id's length, so a probe compares integers before it compares bytes. */
#include "sc_agg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SC_ARENA_CHUNK (64 * 1024)

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    char data[];
} arena_chunk;

typedef struct ptr_vec {
    const char **p;
    size_t n, cap;
} ptr_vec;

typedef struct bucket_acc {
    int64_t bucket;
    uint64_t checkins;
    ptr_vec devices, grey;
} bucket_acc;

typedef struct region_acc {
    uint64_t key; /* the code packed into an integer, for lookups */
    char region[FG_REGION_MAX + 1];
    bucket_acc *b;
    size_t nb, capb;
    sc_bucket *out; /* built on demand for sc_agg_buckets */
    int64_t last_offset;
} region_acc;

/* (region, bucket, device) -> flags: 1 device listed, 2 grey listed. */
typedef struct member {
    const char *device; /* arena string; NULL = empty slot */
    uint64_t hash;      /* dev_hash of device */
    uint32_t region, bucket;
    uint16_t len;       /* strlen(device) */
    uint8_t flags;
} member;

typedef struct seq_node {
    struct seq_node *next;
    uint64_t hash; /* dev_hash of device */
    uint64_t seq;
    int64_t seen_ms;
    uint16_t len;  /* strlen(device) */
    char device[FG_DEVICE_ID_MAX + 1];
} seq_node;

/* Undo record of one seq memory update. */
typedef struct seq_undo {
    seq_node *node;
    uint64_t prev_seq; /* meaningful when existed */
    int existed;       /* 0: the node was created by the update */
} seq_undo;

typedef struct undo_vec {
    seq_undo *u;
    size_t n, cap;
} undo_vec;

struct sc_agg {
    int64_t bucket_ms, window_ms;
    const fg_market_map *m;
    arena_chunk *arena;
    region_acc *regions;
    size_t nregions, capregions;
    uint32_t *rindex;            /* region key -> index + 1; 0 = empty */
    size_t caprindex;            /* 0 or a power of two >= 2 * nregions */
    member *members;
    size_t nmembers, capmembers; /* capmembers is a power of two */
    seq_node **seq;
    size_t nseq, capseq;         /* capseq is a power of two */
    undo_vec filling, sealed;    /* journals of seq updates */
    size_t last_region;          /* index of the last region looked up */
};

/* Final avalanche of a 64-bit value (MurmurHash3's fmix64). */
static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Hash of n bytes of a device id, eight bytes at a time. */
static uint64_t dev_hash(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * 0x100000001b3ull;
    }
    return mix64(h);
}

/* Slot hash of a (region, bucket, device) membership. */
static uint64_t member_hash(uint64_t dev, uint32_t region, uint32_t bucket)
{
    return mix64(dev ^ ((uint64_t)region << 32 | bucket));
}

static const char *arena_dup(sc_agg *a, const char *s, size_t n)
{
    arena_chunk *c = a->arena;
    if (!c || c->cap - c->used < n + 1) {
        size_t cap = SC_ARENA_CHUNK > n + 1 ? SC_ARENA_CHUNK : n + 1;
        arena_chunk *nc = malloc(sizeof(*nc) + cap);
        if (!nc)
            return NULL;
        nc->next = a->arena;
        nc->used = 0;
        nc->cap = cap;
        a->arena = nc;
        c = nc;
    }
    char *d = c->data + c->used;
    memcpy(d, s, n);
    d[n] = '\0';
    c->used += n + 1;
    return d;
}

static int vec_push(ptr_vec *v, const char *s)
{
    if (v->n == v->cap) {
        size_t ncap = v->cap ? v->cap * 2 : 8;
        const char **np = realloc(v->p, ncap * sizeof(*np));
        if (!np)
            return -1;
        v->p = np;
        v->cap = ncap;
    }
    v->p[v->n++] = s;
    return 0;
}

sc_agg *sc_agg_new(int64_t bucket_ms, int64_t window_ms,
                   const fg_market_map *m)
{
    sc_agg *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->bucket_ms = bucket_ms > 0 ? bucket_ms : 60000;
    a->window_ms = window_ms > 0 ? window_ms : 15 * 60000;
    a->m = m;
    a->capmembers = 1024;
    a->members = calloc(a->capmembers, sizeof(*a->members));
    a->capseq = 1024;
    a->seq = calloc(a->capseq, sizeof(*a->seq));
    if (!a->members || !a->seq) {
        sc_agg_free(a);
        return NULL;
    }
    return a;
}

static void free_regions(sc_agg *a)
{
    for (size_t i = 0; i < a->nregions; i++) {
        region_acc *r = &a->regions[i];
        for (size_t j = 0; j < r->nb; j++) {
            free(r->b[j].devices.p);
            free(r->b[j].grey.p);
        }
        free(r->b);
        free(r->out);
    }
    a->nregions = 0;
}

void sc_agg_reset(sc_agg *a)
{
    if (a->nregions && a->rindex)
        memset(a->rindex, 0, a->caprindex * sizeof(*a->rindex));
    free_regions(a);
    while (a->arena) {
        arena_chunk *next = a->arena->next;
        free(a->arena);
        a->arena = next;
    }
    if (a->nmembers) {
        memset(a->members, 0, a->capmembers * sizeof(*a->members));
        a->nmembers = 0;
    }
}

void sc_agg_forget(sc_agg *a)
{
    a->filling.n = 0;
    a->sealed.n = 0;
    for (size_t i = 0; i < a->capseq; i++) {
        seq_node *n = a->seq[i];
        while (n) {
            seq_node *next = n->next;
            free(n);
            n = next;
        }
        a->seq[i] = NULL;
    }
    a->nseq = 0;
}

void sc_agg_free(sc_agg *a)
{
    if (!a)
        return;
    sc_agg_reset(a);
    if (a->seq)
        sc_agg_forget(a);
    free(a->regions);
    free(a->rindex);
    free(a->members);
    free(a->seq);
    free(a->filling.u);
    free(a->sealed.u);
    free(a);
}

static uint64_t region_key(const char *region)
{
    uint64_t k = 0;
    for (int i = 0; i < FG_REGION_MAX && region[i]; i++)
        k = (k << 8) | (unsigned char)region[i];
    return k;
}

static size_t rindex_slot(uint64_t key, size_t cap)
{
    return (size_t)(key * 0x9e3779b97f4a7c15ull >> 32) & (cap - 1);
}

/* Makes room in the region index for one more region. */
static int rindex_reserve(sc_agg *a)
{
    if ((a->nregions + 1) * 2 <= a->caprindex)
        return 0;
    size_t ncap = a->caprindex ? a->caprindex * 2 : 64;
    uint32_t *ni = calloc(ncap, sizeof(*ni));
    if (!ni)
        return -1;
    for (size_t i = 0; i < a->nregions; i++) {
        size_t j = rindex_slot(a->regions[i].key, ncap);
        while (ni[j])
            j = (j + 1) & (ncap - 1);
        ni[j] = (uint32_t)i + 1;
    }
    free(a->rindex);
    a->rindex = ni;
    a->caprindex = ncap;
    return 0;
}

static region_acc *region_get(sc_agg *a, const char *region, size_t *index)
{
    uint64_t key = region_key(region);
    /* The last region hit first: consecutive records often share it. */
    if (a->last_region < a->nregions && a->regions[a->last_region].key == key) {
        *index = a->last_region;
        return &a->regions[a->last_region];
    }
    size_t j = 0;
    if (a->caprindex) {
        j = rindex_slot(key, a->caprindex);
        while (a->rindex[j]) {
            size_t i = a->rindex[j] - 1;
            if (a->regions[i].key == key) {
                *index = a->last_region = i;
                return &a->regions[i];
            }
            j = (j + 1) & (a->caprindex - 1);
        }
    }
    if (rindex_reserve(a) != 0)
        return NULL;
    j = rindex_slot(key, a->caprindex);
    while (a->rindex[j])
        j = (j + 1) & (a->caprindex - 1);
    if (a->nregions == a->capregions) {
        size_t ncap = a->capregions ? a->capregions * 2 : 16;
        region_acc *nr = realloc(a->regions, ncap * sizeof(*nr));
        if (!nr)
            return NULL;
        a->regions = nr;
        a->capregions = ncap;
    }
    region_acc *r = &a->regions[a->nregions];
    memset(r, 0, sizeof(*r));
    snprintf(r->region, sizeof(r->region), "%s", region);
    r->key = key;
    r->last_offset = -1;
    a->rindex[j] = (uint32_t)a->nregions + 1;
    *index = a->last_region = a->nregions++;
    return r;
}

static bucket_acc *bucket_get(region_acc *r, int64_t bucket, uint32_t *index)
{
    for (size_t i = 0; i < r->nb; i++) {
        if (r->b[i].bucket == bucket) {
            *index = (uint32_t)i;
            return &r->b[i];
        }
    }
    if (r->nb == r->capb) {
        size_t ncap = r->capb ? r->capb * 2 : 2;
        bucket_acc *nb = realloc(r->b, ncap * sizeof(*nb));
        if (!nb)
            return NULL;
        r->b = nb;
        r->capb = ncap;
    }
    bucket_acc *b = &r->b[r->nb];
    memset(b, 0, sizeof(*b));
    b->bucket = bucket;
    *index = (uint32_t)r->nb++;
    return b;
}

static int members_grow(sc_agg *a)
{
    size_t ncap = a->capmembers * 2;
    member *nm = calloc(ncap, sizeof(*nm));
    if (!nm)
        return -1;
    for (size_t i = 0; i < a->capmembers; i++) {
        member *m = &a->members[i];
        if (!m->device)
            continue;
        size_t j = (size_t)member_hash(m->hash, m->region, m->bucket) &
                   (ncap - 1);
        while (nm[j].device)
            j = (j + 1) & (ncap - 1);
        nm[j] = *m;
    }
    free(a->members);
    a->members = nm;
    a->capmembers = ncap;
    return 0;
}

/* The membership slot of (region, bucket, device), created empty if new.
 * h is dev_hash of the device id. */
static member *member_get(sc_agg *a, uint32_t region, uint32_t bucket,
                          const fg_checkin *ci, uint64_t h)
{
    if ((a->nmembers + 1) * 2 > a->capmembers && members_grow(a) != 0)
        return NULL;
    size_t j = (size_t)member_hash(h, region, bucket) & (a->capmembers - 1);
    while (a->members[j].device) {
        member *m = &a->members[j];
        if (m->hash == h && m->region == region && m->bucket == bucket &&
            m->len == ci->device_id_len &&
            memcmp(m->device, ci->device_id, ci->device_id_len) == 0)
            return m;
        j = (j + 1) & (a->capmembers - 1);
    }
    const char *dev = arena_dup(a, ci->device_id, ci->device_id_len);
    if (!dev)
        return NULL;
    member *m = &a->members[j];
    m->device = dev;
    m->hash = h;
    m->len = ci->device_id_len;
    m->region = region;
    m->bucket = bucket;
    m->flags = 0;
    a->nmembers++;
    return m;
}

static int seq_grow(sc_agg *a)
{
    size_t ncap = a->capseq * 2;
    seq_node **ns = calloc(ncap, sizeof(*ns));
    if (!ns)
        return -1;
    for (size_t i = 0; i < a->capseq; i++) {
        seq_node *n = a->seq[i];
        while (n) {
            seq_node *next = n->next;
            size_t j = (size_t)n->hash & (ncap - 1);
            n->next = ns[j];
            ns[j] = n;
            n = next;
        }
    }
    free(a->seq);
    a->seq = ns;
    a->capseq = ncap;
    return 0;
}

static int undo_push(undo_vec *v, seq_node *node, uint64_t prev, int existed)
{
    if (v->n == v->cap) {
        size_t ncap = v->cap ? v->cap * 2 : 256;
        seq_undo *nu = realloc(v->u, ncap * sizeof(*nu));
        if (!nu)
            return -1;
        v->u = nu;
        v->cap = ncap;
    }
    v->u[v->n].node = node;
    v->u[v->n].prev_seq = prev;
    v->u[v->n].existed = existed;
    v->n++;
    return 0;
}

/* Returns 1 when (device, seq) is new and remembers it, 0 when seen, -1 on
 * allocation failure. h is dev_hash of the device id. */
static int seq_check(sc_agg *a, const fg_checkin *ci, uint64_t h,
                     int64_t now_ms, int journal)
{
    size_t j = (size_t)h & (a->capseq - 1);
    for (seq_node *n = a->seq[j]; n; n = n->next) {
        if (n->hash == h && n->len == ci->device_id_len &&
            memcmp(n->device, ci->device_id, ci->device_id_len) == 0) {
            n->seen_ms = now_ms;
            if (ci->seq <= n->seq)
                return 0;
            if (journal && undo_push(&a->filling, n, n->seq, 1) != 0)
                return -1;
            n->seq = ci->seq;
            return 1;
        }
    }
    if (a->nseq + 1 > a->capseq && seq_grow(a) != 0)
        return -1;
    j = (size_t)h & (a->capseq - 1);
    seq_node *n = malloc(sizeof(*n));
    if (!n)
        return -1;
    n->hash = h;
    n->len = ci->device_id_len;
    memcpy(n->device, ci->device_id, ci->device_id_len);
    n->device[ci->device_id_len] = '\0';
    n->seq = ci->seq;
    n->seen_ms = now_ms;
    if (journal && undo_push(&a->filling, n, 0, 0) != 0) {
        free(n);
        return -1;
    }
    n->next = a->seq[j];
    a->seq[j] = n;
    a->nseq++;
    return 1;
}

static void unlink_node(sc_agg *a, seq_node *node)
{
    size_t j = (size_t)node->hash & (a->capseq - 1);
    for (seq_node **pp = &a->seq[j]; *pp; pp = &(*pp)->next) {
        if (*pp == node) {
            *pp = node->next;
            free(node);
            a->nseq--;
            return;
        }
    }
}

static void undo_apply(sc_agg *a, undo_vec *v)
{
    while (v->n > 0) {
        seq_undo *u = &v->u[--v->n];
        if (u->existed)
            u->node->seq = u->prev_seq;
        else
            unlink_node(a, u->node);
    }
}

void sc_agg_seal(sc_agg *a)
{
    /* The sealed journal must be settled first (commit or rollback). */
    undo_vec t = a->sealed;
    a->sealed = a->filling;
    a->filling = t;
    a->filling.n = 0;
}

void sc_agg_commit(sc_agg *a)
{
    a->sealed.n = 0;
}

void sc_agg_rollback(sc_agg *a)
{
    undo_apply(a, &a->filling);
    undo_apply(a, &a->sealed);
    sc_agg_reset(a);
}

sc_add sc_agg_add(sc_agg *a, int64_t offset, const fg_checkin *ci,
                  int64_t recv_ts, int64_t fence, int64_t now_ms,
                  fg_status *st)
{
    *st = FG_OK;
    uint64_t h = dev_hash(ci->device_id, ci->device_id_len);
    if (offset <= fence) {
        /* Counted before (a replay): only refresh the seq memory, outside
         * any journal, so duplicates of it are still caught after a
         * rebalance or a restart. */
        if ((ci->has & FG_CHECKIN_HAS_SEQ) && recv_ts >= now_ms - a->window_ms &&
            seq_check(a, ci, h, now_ms, 0) < 0)
            *st = FG_ENOMEM;
        return SC_ADD_FENCED;
    }
    if (recv_ts < now_ms - a->window_ms)
        return SC_ADD_TOO_OLD;
    size_t ri;
    region_acc *r = region_get(a, ci->region, &ri);
    if (!r)
        goto nomem;
    uint32_t bi;
    bucket_acc *b = bucket_get(r, recv_ts / a->bucket_ms, &bi);
    if (!b)
        goto nomem;
    if (offset > r->last_offset)
        r->last_offset = offset;
    sc_add res = SC_ADD_COUNTED;
    if (ci->has & FG_CHECKIN_HAS_SEQ) {
        int fresh = seq_check(a, ci, h, now_ms, 1);
        if (fresh < 0)
            goto nomem;
        if (!fresh)
            res = SC_ADD_DUPLICATE;
    }
    if (res == SC_ADD_COUNTED)
        b->checkins++;
    member *mb = member_get(a, (uint32_t)ri, bi, ci, h);
    if (!mb)
        goto nomem;
    if (!(mb->flags & 1)) {
        if (vec_push(&b->devices, mb->device) != 0)
            goto nomem;
        mb->flags |= 1;
    }
    if (!(mb->flags & 2) &&
        fg_region_is_grey(a->m, ci->sku_region, ci->region)) {
        if (vec_push(&b->grey, mb->device) != 0)
            goto nomem;
        mb->flags |= 2;
    }
    return res;
nomem:
    *st = FG_ENOMEM;
    return SC_ADD_TOO_OLD;
}

size_t sc_agg_regions(const sc_agg *a)
{
    return a->nregions;
}

const char *sc_agg_region(const sc_agg *a, size_t index)
{
    return a->regions[index].region;
}

size_t sc_agg_buckets(const sc_agg *a, size_t index,
                      const sc_bucket **buckets)
{
    region_acc *r = &a->regions[index];
    free(r->out);
    r->out = calloc(r->nb ? r->nb : 1, sizeof(*r->out));
    if (!r->out) {
        *buckets = NULL;
        return 0;
    }
    for (size_t i = 0; i < r->nb; i++) {
        r->out[i].bucket = r->b[i].bucket;
        r->out[i].checkins = r->b[i].checkins;
        r->out[i].devices = r->b[i].devices.p;
        r->out[i].ndevices = r->b[i].devices.n;
        r->out[i].grey = r->b[i].grey.p;
        r->out[i].ngrey = r->b[i].grey.n;
    }
    *buckets = r->out;
    return r->nb;
}

int64_t sc_agg_region_last_offset(const sc_agg *a, size_t index)
{
    return a->regions[index].last_offset;
}

void sc_agg_expire(sc_agg *a, int64_t now_ms)
{
    if (a->filling.n || a->sealed.n)
        return; /* journals point at nodes */
    int64_t cutoff = now_ms - a->window_ms;
    for (size_t i = 0; i < a->capseq; i++) {
        seq_node **pp = &a->seq[i];
        while (*pp) {
            seq_node *n = *pp;
            if (n->seen_ms < cutoff) {
                *pp = n->next;
                free(n);
                a->nseq--;
            } else {
                pp = &n->next;
            }
        }
    }
}

size_t sc_agg_seq_entries(const sc_agg *a)
{
    return a->nseq;
}
