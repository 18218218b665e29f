/* SPDX-License-Identifier: Apache-2.0 */
/* Prometheus metrics registry. Registration and rendering take the registry
 * mutex; updates never do: counters and histograms keep one cache-line
 * padded shard per thread group (relaxed atomics), gauges a CAS'd double. */
#include "fg_metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FG_METRICS_SHARDS 8        /* update shards per counter/histogram */
#define FG_METRICS_LINE 64         /* cache line size assumed for padding */
#define FG_METRICS_HASH 256        /* series hash buckets (power of two) */
#define FG_METRICS_NAME_MAX 200    /* longest metric name */
#define FG_METRICS_LABELS_MAX 1024 /* longest label text */
#define FG_METRICS_HELP_MAX 1024   /* longest help text */
#define FG_METRICS_BOUNDS_MAX 64   /* histogram buckets, +Inf excluded */
#define FG_METRICS_RENDER_MAX (64u * 1024 * 1024) /* largest exposition */

typedef enum metric_kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } metric_kind;

typedef struct counter_shard {
    _Alignas(FG_METRICS_LINE) _Atomic uint64_t v;
} counter_shard;

struct fg_counter {
    counter_shard shards[FG_METRICS_SHARDS];
};

struct fg_gauge {
    _Alignas(FG_METRICS_LINE) _Atomic uint64_t bits; /* a double */
    double (*fn)(void *ud);
    void *ud;
};

/* cells holds FG_METRICS_SHARDS rows of stride cells: n + 1 bucket counts
 * (the last is +Inf, not cumulative) then the sum as double bits. */
struct fg_histogram {
    size_t n;
    double *bounds;
    size_t stride;
    _Atomic uint64_t *cells;
};

typedef struct family family;

typedef struct series {
    struct series *next;      /* in the family, registration order */
    struct series *hash_next; /* in the registry hash chain */
    family *fam;
    char *labels;
    union {
        fg_counter *c;
        fg_gauge *g;
        fg_histogram *h;
    } u;
} series;

struct family {
    family *next;
    char *name;
    char *help;
    metric_kind kind;
    series *first, *last;
};

struct fg_metrics {
    pthread_mutex_t mu;
    family *first, *last;
    series *hash[FG_METRICS_HASH];
};

/* Each thread takes a shard round-robin on its first update. */
static _Atomic unsigned next_shard;
static _Thread_local unsigned my_shard; /* shard + 1; 0 = not yet chosen */

static unsigned shard_index(void)
{
    unsigned s = my_shard;

    if (s == 0) {
        s = atomic_fetch_add_explicit(&next_shard, 1, memory_order_relaxed) %
                FG_METRICS_SHARDS + 1;
        my_shard = s;
    }
    return s - 1;
}

static uint64_t dbl_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double bits_dbl(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

/* Adds d to the double stored in *cell. Lock-free. */
static void atomic_add_double(_Atomic uint64_t *cell, double d)
{
    uint64_t old = atomic_load_explicit(cell, memory_order_relaxed);
    uint64_t want;

    do {
        want = dbl_bits(bits_dbl(old) + d);
    } while (!atomic_compare_exchange_weak_explicit(cell, &old, want, memory_order_relaxed,
                                                    memory_order_relaxed));
}

void fg_counter_add(fg_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->shards[shard_index()].v, n, memory_order_relaxed);
}

uint64_t fg_counter_value(const fg_counter *c)
{
    uint64_t sum = 0;

    for (size_t i = 0; i < FG_METRICS_SHARDS; i++)
        sum += atomic_load_explicit(&c->shards[i].v, memory_order_relaxed);
    return sum;
}

void fg_gauge_set(fg_gauge *g, double v)
{
    atomic_store_explicit(&g->bits, dbl_bits(v), memory_order_relaxed);
}

void fg_gauge_add(fg_gauge *g, double d)
{
    atomic_add_double(&g->bits, d);
}

void fg_histogram_observe(fg_histogram *h, double v)
{
    _Atomic uint64_t *row = h->cells + (size_t)shard_index() * h->stride;
    size_t lo = 0, hi = h->n;

    /* First bucket whose upper bound is >= v; NaN lands in +Inf. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&row[lo], 1, memory_order_relaxed);
    atomic_add_double(&row[h->n + 1], v);
}

static bool name_valid(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > FG_METRICS_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
                     ch == ':';
        bool digit = ch >= '0' && ch <= '9';
        if (!alpha && !(digit && i > 0))
            return false;
    }
    return true;
}

static size_t series_hash(const char *name, const char *labels)
{
    uint64_t h = 1469598103934665603ull;

    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (const char *p = labels; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return (size_t)(h & (FG_METRICS_HASH - 1));
}

static void histogram_free(fg_histogram *h)
{
    if (!h)
        return;
    free(h->bounds);
    free(h->cells);
    free(h);
}

static void series_free(series *s, metric_kind kind)
{
    if (!s)
        return;
    switch (kind) {
    case KIND_COUNTER: free(s->u.c); break;
    case KIND_GAUGE: free(s->u.g); break;
    case KIND_HISTOGRAM: histogram_free(s->u.h); break;
    }
    free(s->labels);
    free(s);
}

static fg_histogram *histogram_new(const double *bounds, size_t n)
{
    fg_histogram *h = NULL;
    size_t per_line = FG_METRICS_LINE / sizeof(uint64_t);
    size_t cells;

    if (n > FG_METRICS_BOUNDS_MAX || (n > 0 && !bounds))
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (isnan(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            return NULL;
    }
    h = calloc(1, sizeof(*h));
    if (!h)
        goto fail;
    h->n = n;
    h->bounds = malloc((n ? n : 1) * sizeof(double));
    if (!h->bounds)
        goto fail;
    if (n)
        memcpy(h->bounds, bounds, n * sizeof(double));
    /* Round each shard's row up to whole cache lines. */
    h->stride = (n + 2 + per_line - 1) / per_line * per_line;
    cells = h->stride * FG_METRICS_SHARDS;
    h->cells = aligned_alloc(FG_METRICS_LINE, cells * sizeof(uint64_t));
    if (!h->cells)
        goto fail;
    for (size_t i = 0; i < cells; i++)
        atomic_init(&h->cells[i], 0);
    return h;

fail:
    histogram_free(h);
    return NULL;
}

/* Finds or creates name{labels} of the given kind. For a new histogram,
 * bounds/n give its buckets; for a new gauge, fn/ud its callback. */
static series *registry_get(fg_metrics *m, metric_kind kind, const char *name,
                            const char *help, const char *labels, const double *bounds,
                            size_t n, double (*fn)(void *), void *ud)
{
    series *s = NULL;
    series *found = NULL;
    family *fam = NULL;
    family *newfam = NULL;
    size_t slot;

    if (!m || !name || !name_valid(name))
        return NULL;
    if (!labels)
        labels = "";
    if (!help)
        help = "";
    if (strlen(labels) > FG_METRICS_LABELS_MAX || strlen(help) > FG_METRICS_HELP_MAX)
        return NULL;
    slot = series_hash(name, labels);

    pthread_mutex_lock(&m->mu);
    for (series *it = m->hash[slot]; it; it = it->hash_next) {
        if (strcmp(it->fam->name, name) == 0 && strcmp(it->labels, labels) == 0) {
            found = it;
            break;
        }
    }
    if (found) {
        /* Same name registered as another type is a programming error. */
        if (found->fam->kind != kind)
            found = NULL;
        goto unlock;
    }
    for (family *f = m->first; f; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            fam = f;
            break;
        }
    }
    if (fam && fam->kind != kind)
        goto unlock;

    s = calloc(1, sizeof(*s));
    if (!s)
        goto unlock;
    s->labels = strdup(labels);
    if (!s->labels)
        goto unlock;
    switch (kind) {
    case KIND_COUNTER:
        s->u.c = aligned_alloc(_Alignof(fg_counter), sizeof(fg_counter));
        if (!s->u.c)
            goto unlock;
        for (size_t i = 0; i < FG_METRICS_SHARDS; i++)
            atomic_init(&s->u.c->shards[i].v, 0);
        break;
    case KIND_GAUGE:
        s->u.g = aligned_alloc(_Alignof(fg_gauge), sizeof(fg_gauge));
        if (!s->u.g)
            goto unlock;
        atomic_init(&s->u.g->bits, dbl_bits(0.0));
        s->u.g->fn = fn;
        s->u.g->ud = ud;
        break;
    case KIND_HISTOGRAM:
        s->u.h = histogram_new(bounds, n);
        if (!s->u.h)
            goto unlock;
        break;
    }
    if (!fam) {
        newfam = calloc(1, sizeof(*newfam));
        if (!newfam)
            goto unlock;
        newfam->name = strdup(name);
        newfam->help = strdup(help);
        newfam->kind = kind;
        if (!newfam->name || !newfam->help)
            goto unlock;
        if (m->last)
            m->last->next = newfam;
        else
            m->first = newfam;
        m->last = newfam;
        fam = newfam;
        newfam = NULL;
    }
    s->fam = fam;
    if (fam->last)
        fam->last->next = s;
    else
        fam->first = s;
    fam->last = s;
    s->hash_next = m->hash[slot];
    m->hash[slot] = s;
    found = s;
    s = NULL;

unlock:
    pthread_mutex_unlock(&m->mu);
    if (newfam) {
        free(newfam->name);
        free(newfam->help);
        free(newfam);
    }
    series_free(s, kind);
    return found;
}

fg_metrics *fg_metrics_new(void)
{
    fg_metrics *m = calloc(1, sizeof(*m));

    if (!m)
        return NULL;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void fg_metrics_free(fg_metrics *m)
{
    family *f, *fnext;

    if (!m)
        return;
    for (f = m->first; f; f = fnext) {
        series *s, *snext;
        fnext = f->next;
        for (s = f->first; s; s = snext) {
            snext = s->next;
            series_free(s, f->kind);
        }
        free(f->name);
        free(f->help);
        free(f);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

fg_counter *fg_metrics_counter(fg_metrics *m, const char *name, const char *help,
                               const char *labels)
{
    series *s = registry_get(m, KIND_COUNTER, name, help, labels, NULL, 0, NULL, NULL);
    return s ? s->u.c : NULL;
}

fg_gauge *fg_metrics_gauge(fg_metrics *m, const char *name, const char *help,
                           const char *labels)
{
    series *s = registry_get(m, KIND_GAUGE, name, help, labels, NULL, 0, NULL, NULL);
    return s ? s->u.g : NULL;
}

fg_gauge *fg_metrics_gauge_fn(fg_metrics *m, const char *name, const char *help,
                              const char *labels, double (*fn)(void *ud), void *ud)
{
    series *s;

    if (!fn)
        return NULL;
    s = registry_get(m, KIND_GAUGE, name, help, labels, NULL, 0, fn, ud);
    return s ? s->u.g : NULL;
}

fg_histogram *fg_metrics_histogram(fg_metrics *m, const char *name, const char *help,
                                   const char *labels, const double *bounds, size_t n)
{
    series *s = registry_get(m, KIND_HISTOGRAM, name, help, labels, bounds, n, NULL, NULL);
    return s ? s->u.h : NULL;
}

/* Growable output with a hard cap; the first failure sticks. */
typedef struct outbuf {
    char *p;
    size_t len, cap;
    bool failed;
} outbuf;

static void out_reserve(outbuf *o, size_t more)
{
    size_t ncap;
    char *np;

    if (o->failed)
        return;
    if (more > FG_METRICS_RENDER_MAX - o->len - 1) {
        o->failed = true;
        return;
    }
    if (o->len + more + 1 <= o->cap)
        return;
    ncap = o->cap ? o->cap : 4096;
    while (ncap < o->len + more + 1)
        ncap *= 2;
    np = realloc(o->p, ncap);
    if (!np) {
        o->failed = true;
        return;
    }
    o->p = np;
    o->cap = ncap;
}

static void out_mem(outbuf *o, const char *s, size_t n)
{
    out_reserve(o, n);
    if (o->failed)
        return;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void out_str(outbuf *o, const char *s)
{
    out_mem(o, s, strlen(s));
}

static void out_printf(outbuf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(outbuf *o, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        o->failed = true;
        return;
    }
    out_mem(o, tmp, (size_t)n);
}

/* Formats v the shortest way that reads back exactly; whole numbers without
 * an exponent, and NaN/+Inf/-Inf as Prometheus spells them. */
static void fmt_double(double v, char *buf, size_t cap)
{
    if (isnan(v)) {
        snprintf(buf, cap, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, cap, "%.0f", v);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* HELP text escapes backslash and newline. */
static void out_help(outbuf *o, const family *f)
{
    out_printf(o, "# HELP %s ", f->name);
    for (const char *p = f->help; *p; p++) {
        if (*p == '\\')
            out_str(o, "\\\\");
        else if (*p == '\n')
            out_str(o, "\\n");
        else
            out_mem(o, p, 1);
    }
    out_str(o, "\n");
}

/* name{labels} or name{labels,extra} or name{extra} or name. */
static void out_series_name(outbuf *o, const char *name, const char *suffix,
                            const char *labels, const char *extra)
{
    out_str(o, name);
    out_str(o, suffix);
    if (!labels[0] && !extra)
        return;
    out_str(o, "{");
    out_str(o, labels);
    if (extra) {
        if (labels[0])
            out_str(o, ",");
        out_str(o, extra);
    }
    out_str(o, "}");
}

static void render_histogram(outbuf *o, const family *f, const series *s)
{
    const fg_histogram *h = s->u.h;
    uint64_t cum = 0;
    double sum = 0;
    char num[64], le[80];

    for (size_t b = 0; b <= h->n; b++) {
        for (size_t sh = 0; sh < FG_METRICS_SHARDS; sh++)
            cum += atomic_load_explicit(&h->cells[sh * h->stride + b], memory_order_relaxed);
        fmt_double(b < h->n ? h->bounds[b] : INFINITY, num, sizeof(num));
        snprintf(le, sizeof(le), "le=\"%s\"", num);
        out_series_name(o, f->name, "_bucket", s->labels, le);
        out_printf(o, " %" PRIu64 "\n", cum);
    }
    for (size_t sh = 0; sh < FG_METRICS_SHARDS; sh++)
        sum += bits_dbl(
            atomic_load_explicit(&h->cells[sh * h->stride + h->n + 1], memory_order_relaxed));
    fmt_double(sum, num, sizeof(num));
    out_series_name(o, f->name, "_sum", s->labels, NULL);
    out_printf(o, " %s\n", num);
    out_series_name(o, f->name, "_count", s->labels, NULL);
    out_printf(o, " %" PRIu64 "\n", cum);
}

char *fg_metrics_render(fg_metrics *m, size_t *len)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    outbuf o = {NULL, 0, 0, false};
    char num[64];

    if (!m)
        return NULL;
    out_reserve(&o, 0);
    if (o.failed)
        return NULL;
    o.p[0] = '\0';
    pthread_mutex_lock(&m->mu);
    for (const family *f = m->first; f && !o.failed; f = f->next) {
        out_help(&o, f);
        out_printf(&o, "# TYPE %s %s\n", f->name, type_names[f->kind]);
        for (const series *s = f->first; s; s = s->next) {
            switch (f->kind) {
            case KIND_COUNTER:
                out_series_name(&o, f->name, "", s->labels, NULL);
                out_printf(&o, " %" PRIu64 "\n", fg_counter_value(s->u.c));
                break;
            case KIND_GAUGE: {
                double v = s->u.g->fn ? s->u.g->fn(s->u.g->ud)
                                      : bits_dbl(atomic_load_explicit(
                                            &s->u.g->bits, memory_order_relaxed));
                fmt_double(v, num, sizeof(num));
                out_series_name(&o, f->name, "", s->labels, NULL);
                out_printf(&o, " %s\n", num);
                break;
            }
            case KIND_HISTOGRAM:
                render_histogram(&o, f, s);
                break;
            }
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (o.failed) {
        free(o.p);
        return NULL;
    }
    if (len)
        *len = o.len;
    return o.p;
}
