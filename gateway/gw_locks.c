/* SPDX-License-Identifier: Apache-2.0 */
/* Lock-topic follower and the snapshot store shared with worker threads. */
#include "gw_locks.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fg_lockfeed.h"
#include "fg_log.h"

/* ---- snapshots ---- */

struct gw_locksnap {
    fg_lock_table *t;
    long refs; /* guarded by the store mutex */
};

struct gw_lockstore {
    pthread_mutex_t mu;
    gw_locksnap *cur;
    _Atomic uint64_t version;
    _Atomic size_t size;
};

static gw_locksnap *snap_new(fg_lock_table *t)
{
    gw_locksnap *sn = calloc(1, sizeof(*sn));
    if (!sn)
        return NULL;
    sn->t = t;
    sn->refs = 1;
    return sn;
}

static void snap_unref_locked(gw_locksnap *sn)
{
    if (sn && --sn->refs == 0) {
        fg_lock_table_free(sn->t);
        free(sn);
    }
}

gw_lockstore *gw_lockstore_new(void)
{
    gw_lockstore *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    fg_lock_table *t = fg_lock_table_new();
    s->cur = t ? snap_new(t) : NULL;
    if (!s->cur) {
        fg_lock_table_free(t);
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    atomic_store(&s->version, 1);
    return s;
}

void gw_lockstore_free(gw_lockstore *s)
{
    if (!s)
        return;
    snap_unref_locked(s->cur);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Publishes a copy of t as the newest snapshot. @thread main */
static fg_status store_publish(gw_lockstore *s, const fg_lock_table *t)
{
    fg_lock_table *copy = fg_lock_table_clone(t);
    gw_locksnap *sn = copy ? snap_new(copy) : NULL;
    if (!sn) {
        fg_lock_table_free(copy);
        return FG_ENOMEM;
    }
    pthread_mutex_lock(&s->mu);
    gw_locksnap *old = s->cur;
    s->cur = sn;
    snap_unref_locked(old);
    atomic_store(&s->size, fg_lock_table_size(t));
    atomic_fetch_add_explicit(&s->version, 1, memory_order_release);
    pthread_mutex_unlock(&s->mu);
    return FG_OK;
}

const fg_lock_table *gw_lockview_get(gw_lockview *v, gw_lockstore *s)
{
    uint64_t ver = atomic_load_explicit(&s->version, memory_order_acquire);
    if (ver != v->version) {
        pthread_mutex_lock(&s->mu);
        snap_unref_locked(v->snap);
        v->snap = s->cur;
        v->snap->refs++;
        v->version = atomic_load_explicit(&s->version, memory_order_relaxed);
        pthread_mutex_unlock(&s->mu);
    }
    return v->snap->t;
}

void gw_lockview_release(gw_lockview *v, gw_lockstore *s)
{
    pthread_mutex_lock(&s->mu);
    snap_unref_locked(v->snap);
    pthread_mutex_unlock(&s->mu);
    v->snap = NULL;
    v->version = 0;
}

size_t gw_lockstore_size(gw_lockstore *s)
{
    return atomic_load(&s->size);
}

/* ---- follower ---- */

struct gw_locks {
    gw_lockstore *store;
    fg_lock_table *master; /* main thread's working copy */
    fg_lockfeed *feed;
    int dirty;
};

static void on_record(void *ud, const char *region, const fg_lock *lk)
{
    gw_locks *l = ud;
    if (fg_lock_table_put(l->master, region, lk) == FG_OK)
        l->dirty = 1;
}

static void on_batch(void *ud)
{
    gw_locks *l = ud;
    if (l->dirty && store_publish(l->store, l->master) == FG_OK)
        l->dirty = 0;
}

static double size_fn(void *ud)
{
    return (double)gw_lockstore_size(((gw_locks *)ud)->store);
}

gw_locks *gw_locks_new(struct event_base *base, const gw_config *cfg,
                       gw_lockstore *store, fg_metrics *m, char *errbuf,
                       size_t errlen)
{
    gw_locks *l = calloc(1, sizeof(*l));
    if (!l) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    l->store = store;
    l->master = fg_lock_table_new();
    rd_kafka_conf_t *kc = l->master ? gw_config_consumer(cfg, errbuf, errlen)
                                    : NULL;
    if (!kc)
        goto fail;
    /* fg_lockfeed_new owns kc from here, on success and on failure. */
    l->feed = fg_lockfeed_new(base, kc, cfg->locks_topic, on_record, on_batch,
                              l, m, errbuf, errlen);
    if (!l->feed)
        goto fail;
    fg_metrics_gauge_fn(m, "fleetgate_lock_table_regions",
                        "Regions with a lock record in the gateway's table.", "",
                        size_fn, l);
    return l;
fail:
    gw_locks_free(l);
    return NULL;
}

int gw_locks_ready(const gw_locks *l)
{
    return fg_lockfeed_ready(l->feed);
}

void gw_locks_free(gw_locks *l)
{
    if (!l)
        return;
    fg_lockfeed_free(l->feed);
    fg_lock_table_free(l->master);
    free(l);
}
