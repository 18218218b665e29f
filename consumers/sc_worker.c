/* SPDX-License-Identifier: Apache-2.0 */
/* Consumer-group member that counts check-ins into Redis exactly once.
 * Per partition: LOADING (fences and resume offset read from Redis, the
 * partition paused) -> ACTIVE (fill a batch; one batch in flight at a time;
 * a failed batch rolls the seq memory back and seeks to the checkpoint). */
#include "sc_worker.h"

#include <event2/event.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "fg_checkin.h"
#include "fg_kafka.h"
#include "fg_log.h"
#include "sc_agg.h"

#define SC_RETRY_MS 250
#define SC_LINGER_MS 100 /* how long a batch may fill before it is sent */

enum { P_IDLE = 0, P_LOADING, P_ACTIVE };

/* region code (<= 6 bytes) packed into a non-zero integer key */
static uint64_t region_key(const char *region)
{
    uint64_t k = 0;
    for (int i = 0; i < FG_REGION_MAX && region[i]; i++)
        k = (k << 8) | (unsigned char)region[i];
    return k;
}

typedef struct fence_map {
    uint64_t *keys;
    int64_t *vals;
    size_t n, cap; /* cap is 0 or a power of two */
} fence_map;

static int64_t fence_get(const fence_map *m, uint64_t key, int *found)
{
    *found = 0;
    if (!m->cap)
        return -1;
    size_t i = (size_t)(key * 0x9e3779b97f4a7c15ull) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->keys[i] == key) {
            *found = 1;
            return m->vals[i];
        }
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

static int fence_set(fence_map *m, uint64_t key, int64_t val)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        uint64_t *nk = calloc(ncap, sizeof(*nk));
        int64_t *nv = calloc(ncap, sizeof(*nv));
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return -1;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i])
                continue;
            size_t j = (size_t)(m->keys[i] * 0x9e3779b97f4a7c15ull) &
                       (ncap - 1);
            while (nk[j])
                j = (j + 1) & (ncap - 1);
            nk[j] = m->keys[i];
            nv[j] = m->vals[i];
        }
        free(m->keys);
        free(m->vals);
        m->keys = nk;
        m->vals = nv;
        m->cap = ncap;
    }
    size_t i = (size_t)(key * 0x9e3779b97f4a7c15ull) & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    if (!m->keys[i]) {
        m->keys[i] = key;
        m->n++;
    }
    m->vals[i] = val;
    return 0;
}

static void fence_clear(fence_map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

typedef struct part {
    int state;
    uint32_t gen;
    int loading;        /* a load request is out */
    fence_map fences;   /* regions known to the registry -> fence */
    sc_agg *agg;
    int64_t fill_last;  /* last offset taken into the filling batch */
    size_t fill_count;
    int64_t checkpoint; /* last offset Redis took */
    int flying;
    int paused;         /* paused by us (batch full, rewind, loading) */
    int need_retry;     /* a failed batch waits for Redis */
    int64_t last_flush; /* when the last batch was sent (ms) */
} part;

typedef struct flight {
    struct sc_worker *w;
    int32_t p;
    uint32_t gen;
    size_t pending;
    int failed;
    int conflict; /* a region's fence had moved: another owner applied */
    int64_t last;
    size_t n;
    char (*regions)[FG_REGION_MAX + 1];
    int64_t *newf;
} flight;

/* A blocking offsets-for-times lookup, done on the lookup thread. */
typedef struct lookup_job {
    struct lookup_job *next;
    int32_t p;
    uint32_t gen;
    int64_t ts;     /* find the first offset at or after this time */
    int64_t resume; /* the Redis resume point */
    int64_t found;  /* result; -1 when none or on error */
} lookup_job;

struct sc_worker {
    struct event_base *base;
    pthread_t lk_th;
    int lk_started, lk_stop;
    pthread_mutex_t lk_mu;
    pthread_cond_t lk_cv;
    lookup_job *lk_todo, *lk_done;
    struct event *lk_ev;
    const sc_config *cfg;
    sc_store *store;
    const fg_market_map *mm;
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    fg_kafka_pump *pump;
    rd_kafka_topic_t *rkt;
    rd_kafka_t *dlq;
    rd_kafka_topic_t *dlq_rkt;
    rd_kafka_queue_t *dlq_q;
    fg_kafka_pump *dlq_pump;
    struct event *tick;
    struct event *flush; /* runs after the pump's current burst */
    part *parts;
    int32_t nparts;
    int rebalanced; /* a rebalance event has been served */
    /* The pump's current serve round (reset by on_round): the loop does
     * not turn within a round, so its cached clock is read once, and the
     * outcome counters are published once. */
    int round_fetched;     /* the round has served a fetch event */
    int64_t round_now;     /* now_ms when it did */
    uint64_t round_n[4];   /* check-ins per sc_add outcome */
    fg_counter *c_counted, *c_dup, *c_old, *c_fenced, *c_dlq, *c_ok, *c_fail,
        *c_zombie;
};

static int64_t now_ms(sc_worker *w)
{
    struct timeval tv;
    event_base_gettimeofday_cached(w->base, &tv);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static part *part_get(sc_worker *w, int32_t p, int create)
{
    if (p < 0)
        return NULL;
    if (p >= w->nparts) {
        if (!create)
            return NULL;
        int32_t n = p + 1;
        part *np = realloc(w->parts, (size_t)n * sizeof(*np));
        if (!np)
            return NULL;
        memset(np + w->nparts, 0, (size_t)(n - w->nparts) * sizeof(*np));
        w->parts = np;
        w->nparts = n;
    }
    part *pt = &w->parts[p];
    if (!pt->agg && create) {
        pt->agg = sc_agg_new(w->cfg->bucket_ms, w->cfg->window_ms, w->mm);
        if (!pt->agg)
            return NULL;
    }
    return pt;
}

static void set_paused(sc_worker *w, int32_t p, int pause)
{
    part *pt = &w->parts[p];
    if (pt->paused == pause)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, w->cfg->topic, p);
    if (pause)
        rd_kafka_pause_partitions(w->rk, l);
    else
        rd_kafka_resume_partitions(w->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    pt->paused = pause;
}

/* ---- dead letters ---- */

static void to_dlq(sc_worker *w, const rd_kafka_message_t *msg,
                   const fg_checkin_error *e)
{
    char err[256], src[64];
    snprintf(err, sizeof(err), "%s%s%s: %s", e->code ? e->code : "invalid",
             e->field ? " " : "", e->field ? e->field : "", e->detail);
    snprintf(src, sizeof(src), "%s/%d/%" PRId64, w->cfg->topic,
             (int)msg->partition, msg->offset);
    rd_kafka_resp_err_t perr = rd_kafka_producev(
        w->dlq, RD_KAFKA_V_RKT(w->dlq_rkt),
        RD_KAFKA_V_KEY(msg->key, msg->key_len),
        RD_KAFKA_V_VALUE(msg->payload, msg->len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADER("error", err, -1), RD_KAFKA_V_HEADER("source", src, -1),
        RD_KAFKA_V_END);
    fg_counter_add(w->c_dlq, 1);
    if (perr)
        fg_log_error("dlq_produce_failed", "source=%s err=%s", src,
                     rd_kafka_err2name(perr));
}

static void on_dlq_event(void *ud, rd_kafka_event_t *ev)
{
    (void)ud;
    if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_DR) {
        const rd_kafka_message_t *m;
        while ((m = rd_kafka_event_message_next(ev)) != NULL)
            if (m->err)
                fg_log_error("dlq_delivery_failed", "err=%s",
                             rd_kafka_err2name(m->err));
    }
}

/* ---- batches ---- */

static void maybe_flush(sc_worker *w, int32_t p);
static void start_load(sc_worker *w, int32_t p);

/* Forgets what this worker believes about partition p and loads it again
 * from Redis (fences, resume point), then replays from there: the fences
 * make that exact. Used when Redis came back and when a fence conflict shows
 * that our view is stale. */
static void reload_partition(sc_worker *w, int32_t p)
{
    part *pt = &w->parts[p];
    pt->gen++;
    pt->state = P_LOADING;
    pt->loading = 0; /* a load still out is stale now: its answer is dropped */
    pt->flying = 0;
    pt->need_retry = 0;
    sc_agg_rollback(pt->agg);
    fence_clear(&pt->fences);
    set_paused(w, p, 1);
    start_load(w, p);
}

static void flight_free(flight *fl)
{
    free(fl->regions);
    free(fl->newf);
    free(fl);
}

static void flight_done(flight *fl)
{
    sc_worker *w = fl->w;
    part *pt = part_get(w, fl->p, 0);
    if (!pt || pt->gen != fl->gen || pt->state != P_ACTIVE) {
        flight_free(fl); /* revoked meanwhile: the new owner replays */
        return;
    }
    pt->flying = 0;
    if (fl->failed) {
        /* Redis did not take it all: undo the seq memory, replay from the
         * checkpoint. Regions that were applied are fenced. */
        fg_counter_add(w->c_fail, 1);
        sc_agg_rollback(pt->agg);
        pt->fill_last = pt->checkpoint;
        pt->fill_count = 0;
        set_paused(w, fl->p, 1);
        rd_kafka_seek(w->rkt, fl->p,
                      pt->checkpoint >= 0 ? pt->checkpoint + 1
                                          : RD_KAFKA_OFFSET_BEGINNING,
                      0);
        pt->need_retry = 1;
        flight_free(fl);
        return;
    }
    if (fl->conflict) {
        /* Another owner applied past us: no checkpoint from this stale
         * view (it could move the resume point backwards or forwards);
         * reload the partition as Redis has it. */
        int32_t p = fl->p;
        flight_free(fl);
        reload_partition(w, p);
        return;
    }
    fg_counter_add(w->c_ok, 1);
    for (size_t i = 0; i < fl->n; i++)
        fence_set(&pt->fences, region_key(fl->regions[i]), fl->newf[i]);
    sc_agg_commit(pt->agg);
    pt->checkpoint = fl->last;
    const char **names = malloc((fl->n ? fl->n : 1) * sizeof(*names));
    if (names) {
        for (size_t i = 0; i < fl->n; i++)
            names[i] = fl->regions[i];
        sc_store_checkpoint(w->store, fl->p, fl->last, names, fl->n,
                            now_ms(w));
        free(names);
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, w->cfg->topic, fl->p)->offset =
        fl->last + 1;
    rd_kafka_commit(w->rk, l, 1); /* for lag monitoring only */
    rd_kafka_topic_partition_list_destroy(l);
    if (pt->fill_count == 0)
        sc_agg_expire(pt->agg, now_ms(w));
    flight_free(fl);
    if (pt->paused && pt->fill_count < (size_t)w->cfg->batch_max)
        set_paused(w, (int32_t)(pt - w->parts), 0);
    maybe_flush(w, (int32_t)(pt - w->parts));
}

static void flight_cb(void *ud, int ok, const char *err)
{
    flight *fl = ud;
    if (!ok) {
        if (err && strcmp(err, "fence") == 0) {
            /* Another owner moved the fence: it counted these itself. */
            fg_counter_add(fl->w->c_zombie, 1);
            fl->conflict = 1;
        } else {
            fl->failed = 1;
        }
    }
    if (--fl->pending == 0)
        flight_done(fl);
}

/* Seals the filling batch and sends it: the registry update first (same
 * connection, so Redis runs it first), then one script per region. */
static void start_flight(sc_worker *w, int32_t p)
{
    part *pt = &w->parts[p];
    sc_agg *a = pt->agg;
    size_t n = sc_agg_regions(a);
    flight *fl = calloc(1, sizeof(*fl));
    if (!fl)
        return;
    fl->w = w;
    fl->p = p;
    fl->gen = pt->gen;
    fl->last = pt->fill_last;
    fl->n = n;
    fl->regions = calloc(n ? n : 1, sizeof(*fl->regions));
    fl->newf = calloc(n ? n : 1, sizeof(*fl->newf));
    const char **fresh = calloc(n ? n : 1, sizeof(*fresh));
    if (!fl->regions || !fl->newf || !fresh) {
        free(fresh);
        flight_free(fl);
        return;
    }
    size_t nfresh = 0;
    for (size_t i = 0; i < n; i++) {
        int found;
        snprintf(fl->regions[i], sizeof(fl->regions[i]), "%s",
                 sc_agg_region(a, i));
        fence_get(&pt->fences, region_key(fl->regions[i]), &found);
        if (!found)
            fresh[nfresh++] = fl->regions[i];
    }
    pt->flying = 1;
    fl->pending = 1; /* held until every command is sent */
    if (nfresh) {
        fl->pending++;
        if (sc_store_register(w->store, p, fresh, nfresh, flight_cb, fl) !=
            FG_OK) {
            fl->pending--;
            fl->failed = 1;
        }
    }
    for (size_t i = 0; i < n && !fl->failed; i++) {
        int found;
        int64_t expected =
            fence_get(&pt->fences, region_key(fl->regions[i]), &found);
        fl->newf[i] = sc_agg_region_last_offset(a, i);
        fl->pending++;
        if (sc_store_apply(w->store, a, i, p, expected, fl->newf[i], flight_cb,
                           fl) != FG_OK) {
            fl->pending--;
            fl->failed = 1;
        }
    }
    free(fresh);
    sc_agg_seal(a);
    sc_agg_reset(a);
    pt->fill_count = 0;
    flight_cb(fl, 1, NULL); /* release the hold */
}

static void maybe_flush(sc_worker *w, int32_t p)
{
    part *pt = &w->parts[p];
    if (pt->state != P_ACTIVE || pt->flying || pt->need_retry ||
        pt->fill_last <= pt->checkpoint)
        return;
    if (!sc_store_up(w->store))
        return;
    int64_t wait = pt->last_flush + w->cfg->batch_interval_ms - now_ms(w);
    if (wait > 0 && pt->fill_count < (size_t)w->cfg->batch_max) {
        /* Too soon after the last batch: come back when it is time. */
        if (!evtimer_pending(w->flush, NULL)) {
            struct timeval tv = {(time_t)(wait / 1000),
                                 (suseconds_t)((wait % 1000) * 1000)};
            evtimer_add(w->flush, &tv);
        }
        return;
    }
    pt->last_flush = now_ms(w);
    start_flight(w, p);
}

/* ---- assignment ---- */

static void on_loaded(void *ud, int ok, const char *const *regions,
                      const int64_t *fences, size_t n, int64_t resume);

typedef struct load_req {
    sc_worker *w;
    int32_t p;
    uint32_t gen;
} load_req;

static void start_load(sc_worker *w, int32_t p)
{
    part *pt = &w->parts[p];
    load_req *lr = malloc(sizeof(*lr));
    if (!lr)
        return;
    lr->w = w;
    lr->p = p;
    lr->gen = pt->gen;
    if (sc_store_load_partition(w->store, p, on_loaded, lr) != FG_OK) {
        free(lr);
        return; /* retried by the tick */
    }
    pt->loading = 1;
}

/* Starts reading partition p at offset from (counting only what is past
 * the checkpoint). */
static void activate(sc_worker *w, int32_t p, int64_t from, size_t nregions)
{
    part *pt = &w->parts[p];
    pt->state = P_ACTIVE;
    pt->fill_last = from >= 0 ? from - 1 : pt->checkpoint;
    rd_kafka_seek(w->rkt, p, from, 0);
    fg_log_info("partition_active", "topic=%s partition=%d resume=%" PRId64
                " from=%" PRId64 " regions=%zu", w->cfg->topic, (int)p,
                pt->checkpoint, from, nregions);
    set_paused(w, p, 0);
}

static void on_loaded(void *ud, int ok, const char *const *regions,
                      const int64_t *fences, size_t n, int64_t resume)
{
    load_req *lr = ud;
    sc_worker *w = lr->w;
    part *pt = part_get(w, lr->p, 0);
    if (!pt || pt->gen != lr->gen || pt->state != P_LOADING) {
        free(lr);
        return;
    }
    pt->loading = 0;
    if (!ok) {
        free(lr);
        return; /* the tick retries */
    }
    fence_clear(&pt->fences);
    for (size_t i = 0; i < n; i++)
        fence_set(&pt->fences, region_key(regions[i]), fences[i]);
    pt->checkpoint = resume;
    pt->fill_count = 0;
    if (resume < 0) {
        activate(w, lr->p, RD_KAFKA_OFFSET_BEGINNING, n);
        free(lr);
        return;
    }
    /* Re-read the window before the resume point to rebuild the seq
     * memory (those records are fenced: nothing is counted twice). */
    lookup_job *job = calloc(1, sizeof(*job));
    if (!job) {
        activate(w, lr->p, resume + 1, n);
        free(lr);
        return;
    }
    job->p = lr->p;
    job->gen = pt->gen;
    job->ts = now_ms(w) - (w->cfg->dedupe_lookback_ms < w->cfg->window_ms
                               ? w->cfg->dedupe_lookback_ms
                               : w->cfg->window_ms);
    job->resume = resume;
    pthread_mutex_lock(&w->lk_mu);
    job->next = w->lk_todo;
    w->lk_todo = job;
    pthread_cond_signal(&w->lk_cv);
    pthread_mutex_unlock(&w->lk_mu);
    free(lr);
}

static void *lookup_main(void *arg)
{
    sc_worker *w = arg;
    pthread_mutex_lock(&w->lk_mu);
    while (!w->lk_stop) {
        lookup_job *job = w->lk_todo;
        if (!job) {
            pthread_cond_wait(&w->lk_cv, &w->lk_mu);
            continue;
        }
        w->lk_todo = job->next;
        pthread_mutex_unlock(&w->lk_mu);
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, w->cfg->topic, job->p)->offset =
            job->ts;
        job->found = -1;
        if (rd_kafka_offsets_for_times(w->rk, l, 5000) ==
                RD_KAFKA_RESP_ERR_NO_ERROR &&
            l->elems[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            job->found = l->elems[0].offset;
        rd_kafka_topic_partition_list_destroy(l);
        pthread_mutex_lock(&w->lk_mu);
        job->next = w->lk_done;
        w->lk_done = job;
        event_active(w->lk_ev, EV_READ, 0);
    }
    pthread_mutex_unlock(&w->lk_mu);
    return NULL;
}

static void on_lookups(evutil_socket_t fd, short what, void *arg)
{
    sc_worker *w = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&w->lk_mu);
    lookup_job *job = w->lk_done;
    w->lk_done = NULL;
    pthread_mutex_unlock(&w->lk_mu);
    while (job) {
        lookup_job *next = job->next;
        part *pt = part_get(w, job->p, 0);
        if (pt && pt->gen == job->gen && pt->state == P_LOADING) {
            int64_t from = job->resume + 1;
            if (job->found >= 0 && job->found <= job->resume)
                from = job->found;
            activate(w, job->p, from, pt->fences.n);
        }
        free(job);
        job = next;
    }
}

static void on_rebalance(sc_worker *w, rd_kafka_event_t *ev)
{
    rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
    rd_kafka_topic_partition_list_t *l = rd_kafka_event_topic_partition_list(ev);
    w->rebalanced = 1;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* Start every new partition at an absolute offset, so librdkafka
         * does not fetch the committed offset: that fetch completes after
         * our seek to the Redis resume point (or the look-back) and would
         * win over it. */
        for (int i = 0; i < l->cnt; i++)
            l->elems[i].offset = 0;
        rd_kafka_error_t *e = rd_kafka_incremental_assign(w->rk, l);
        if (e) {
            fg_log_error("assign_failed", "err=%s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            return;
        }
        for (int i = 0; i < l->cnt; i++) {
            int32_t p = l->elems[i].partition;
            part *pt = part_get(w, p, 1);
            if (!pt)
                continue;
            pt->gen++;
            pt->state = P_LOADING;
            pt->loading = 0; /* as in reload_partition */
            pt->flying = 0;
            pt->need_retry = 0;
            pt->paused = 0;
            sc_agg_forget(pt->agg);
            sc_agg_reset(pt->agg);
            fence_clear(&pt->fences);
            set_paused(w, p, 1);
            start_load(w, p);
        }
        fg_log_info("partitions_assigned", "count=%d", l->cnt);
    } else {
        for (int i = 0; i < l->cnt; i++) {
            part *pt = part_get(w, l->elems[i].partition, 0);
            if (!pt)
                continue;
            pt->gen++;
            pt->state = P_IDLE;
            pt->flying = 0;
            pt->loading = 0;
            pt->paused = 0;
            sc_agg_forget(pt->agg);
            sc_agg_reset(pt->agg);
            fence_clear(&pt->fences);
        }
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(w->rk, l);
        if (e)
            rd_kafka_error_destroy(e);
        fg_log_info("partitions_revoked", "count=%d lost=%d", l->cnt,
                    rd_kafka_assignment_lost(w->rk));
    }
}

/* ---- messages ---- */

static void on_message(sc_worker *w, const rd_kafka_message_t *msg,
                       int64_t now)
{
    part *pt = part_get(w, msg->partition, 0);
    if (!pt || pt->state != P_ACTIVE || pt->need_retry ||
        msg->offset <= pt->fill_last)
        return; /* not ours yet, or before a pending rewind */
    fg_checkin ci;
    fg_checkin_meta meta;
    fg_checkin_error e;
    memset(&e, 0, sizeof(e));
    /* Records at or below the checkpoint are the look-back re-read after
     * an assignment: below their region's fence (as they should all be),
     * they only refresh the seq memory. They do not fill the
     * batch (no flight would ever take them, so a full batch of them would
     * pause the partition for good), and their dead letters were sent by
     * whoever read them first. */
    int reread = msg->offset <= pt->checkpoint;
    pt->fill_last = msg->offset;
    if (!reread)
        pt->fill_count++;
    if (!msg->payload ||
        fg_checkin_decode_record(msg->payload, msg->len, &ci, &meta, &e) !=
            FG_OK) {
        if (!reread)
            to_dlq(w, msg, &e);
        return;
    }
    int found;
    int64_t fence = fence_get(&pt->fences, region_key(ci.region), &found);
    fg_status st;
    sc_add res = sc_agg_add(pt->agg, msg->offset, &ci, meta.recv_ts, fence,
                            now, &st);
    if ((unsigned)res < sizeof(w->round_n) / sizeof(w->round_n[0]))
        w->round_n[res]++;
    if (st != FG_OK)
        fg_log_error("aggregate_failed", "err=no_memory");
    if (pt->fill_count >= (size_t)w->cfg->batch_max) {
        set_paused(w, msg->partition, 1);
        event_active(w->flush, EV_TIMEOUT, 0);
    }
}

static void on_event(void *ud, rd_kafka_event_t *ev)
{
    sc_worker *w = ud;
    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_FETCH: {
        const rd_kafka_message_t *msg;
        if (!w->round_fetched) {
            w->round_now = now_ms(w);
            w->round_fetched = 1;
        }
        int64_t now = w->round_now;
        while ((msg = rd_kafka_event_message_next(ev)) != NULL) {
            if (msg->err) {
                if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    fg_log_warn("consume_error", "err=%s",
                                rd_kafka_err2name(msg->err));
                continue;
            }
            on_message(w, msg, now);
        }
        break; /* on_round arms the flush timer */
    }
    case RD_KAFKA_EVENT_REBALANCE:
        on_rebalance(w, ev);
        break;
    case RD_KAFKA_EVENT_ERROR:
        fg_log_warn("kafka_error", "err=%s fatal=%d",
                    rd_kafka_err2name(rd_kafka_event_error(ev)),
                    rd_kafka_event_error_is_fatal(ev));
        break;
    default:
        break;
    }
}

/* End of a pump round: work that is per round, not per fetch event. */
static void on_round(void *ud, int served)
{
    sc_worker *w = ud;
    (void)served;
    if (!w->round_fetched)
        return;
    w->round_fetched = 0;
    /* A batch goes out a linger after its first message, or at once
     * when full (on_message), so Redis sees regions x batches. */
    if (w->flush && !evtimer_pending(w->flush, NULL)) {
        struct timeval tv = {0, SC_LINGER_MS * 1000};
        evtimer_add(w->flush, &tv);
    }
    fg_counter *c[4] = {w->c_counted, w->c_dup, w->c_old, w->c_fenced};
    for (int i = 0; i < 4; i++) {
        if (w->round_n[i])
            fg_counter_add(c[i], w->round_n[i]);
        w->round_n[i] = 0;
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    sc_worker *w = arg;
    (void)fd;
    (void)what;
    int up = sc_store_up(w->store);
    for (int32_t p = 0; p < w->nparts; p++) {
        part *pt = &w->parts[p];
        if (pt->state == P_LOADING && !pt->loading && up)
            start_load(w, p);
        if (pt->state == P_ACTIVE && pt->need_retry && up) {
            pt->need_retry = 0;
            set_paused(w, p, 0);
        }
        maybe_flush(w, p);
    }
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    sc_worker *w = arg;
    (void)fd;
    (void)what;
    for (int32_t p = 0; p < w->nparts; p++)
        maybe_flush(w, p);
}

void sc_worker_redis_up(sc_worker *w)
{
    /* Redis may have come back from a crash with fewer writes than we saw
     * acknowledged (an fsync window). Reload every partition from what Redis
     * has now and replay from there: the fences make the replay exact. */
    for (int32_t p = 0; p < w->nparts; p++)
        if (w->parts[p].state == P_ACTIVE)
            reload_partition(w, p);
    on_tick(-1, 0, w);
}

size_t sc_worker_active_partitions(const sc_worker *w)
{
    size_t n = 0;
    for (int32_t p = 0; p < w->nparts; p++)
        n += w->parts[p].state == P_ACTIVE;
    return n;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    char q[512];
    fg_log(level <= 3 ? FG_LOG_ERROR : level <= 5 ? FG_LOG_WARN : FG_LOG_DEBUG,
           "librdkafka", "client=%s fac=%s text=%s", rd_kafka_name(rk), fac,
           fg_log_quote(buf, q, sizeof(q)));
}

sc_worker *sc_worker_new(struct event_base *base, const sc_config *cfg,
                         sc_store *store, const fg_market_map *mm,
                         fg_metrics *m, char *errbuf, size_t errlen)
{
    sc_worker *w = calloc(1, sizeof(*w));
    rd_kafka_conf_t *kc = NULL;
    if (!w) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    w->base = base;
    w->cfg = cfg;
    w->store = store;
    w->mm = mm;
    static const char *help = "Check-ins read by the scorer, by what became of them.";
    w->c_counted = fg_metrics_counter(m, "fleetgate_scorer_checkins_total", help,
                                      "result=\"counted\"");
    w->c_dup = fg_metrics_counter(m, "fleetgate_scorer_checkins_total", help,
                                  "result=\"duplicate\"");
    w->c_old = fg_metrics_counter(m, "fleetgate_scorer_checkins_total", help,
                                  "result=\"too_old\"");
    w->c_fenced = fg_metrics_counter(m, "fleetgate_scorer_checkins_total", help,
                                     "result=\"already_applied\"");
    w->c_dlq = fg_metrics_counter(m, "fleetgate_scorer_dead_letters_total",
                                  "Records sent to the dead-letter topic.", "");
    w->c_ok = fg_metrics_counter(m, "fleetgate_scorer_batches_total",
                                 "Batches applied to Redis, by outcome.",
                                 "result=\"applied\"");
    w->c_fail = fg_metrics_counter(m, "fleetgate_scorer_batches_total",
                                   "Batches applied to Redis, by outcome.",
                                   "result=\"replayed\"");
    w->c_zombie = fg_metrics_counter(m, "fleetgate_scorer_fence_conflicts_total",
                                     "Region applies refused because another "
                                     "owner had moved the fence.", "");
    /* Dead-letter producer. */
    kc = sc_config_producer(cfg, errbuf, errlen);
    if (!kc)
        goto fail;
    rd_kafka_conf_set_events(kc, RD_KAFKA_EVENT_DR);
    rd_kafka_conf_set_log_cb(kc, log_cb);
    w->dlq = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errbuf, errlen);
    if (!w->dlq)
        goto fail;
    kc = NULL;
    w->dlq_rkt = rd_kafka_topic_new(w->dlq, cfg->dlq_topic, NULL);
    w->dlq_q = rd_kafka_queue_get_main(w->dlq);
    w->dlq_pump = fg_kafka_pump_new(base, w->dlq_q, 1000, on_dlq_event, w,
                                    errbuf, errlen);
    if (!w->dlq_rkt || !w->dlq_pump)
        goto fail;
    /* Group consumer. */
    kc = sc_config_consumer(cfg, errbuf, errlen);
    if (!kc)
        goto fail;
    rd_kafka_conf_set_events(kc, RD_KAFKA_EVENT_REBALANCE |
                                     RD_KAFKA_EVENT_ERROR);
    rd_kafka_conf_set_log_cb(kc, log_cb);
    w->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errbuf, errlen);
    if (!w->rk)
        goto fail;
    kc = NULL;
    rd_kafka_poll_set_consumer(w->rk);
    w->q = rd_kafka_queue_get_consumer(w->rk);
    w->rkt = rd_kafka_topic_new(w->rk, cfg->topic, NULL);
    if (!w->q || !w->rkt) {
        snprintf(errbuf, errlen, "cannot set up the consumer queue");
        goto fail;
    }
    w->pump = fg_kafka_pump_new(base, w->q, 5000, on_event, w, errbuf, errlen);
    if (!w->pump)
        goto fail;
    fg_kafka_pump_set_round_cb(w->pump, on_round);
    pthread_mutex_init(&w->lk_mu, NULL);
    pthread_cond_init(&w->lk_cv, NULL);
    w->lk_ev = event_new(base, -1, 0, on_lookups, w);
    if (!w->lk_ev || pthread_create(&w->lk_th, NULL, lookup_main, w) != 0) {
        snprintf(errbuf, errlen, "cannot start the lookup thread");
        goto fail;
    }
    w->lk_started = 1;
    struct timeval tv = {0, SC_RETRY_MS * 1000};
    w->tick = event_new(base, -1, EV_PERSIST, on_tick, w);
    w->flush = evtimer_new(base, on_flush, w);
    if (!w->tick || !w->flush || event_add(w->tick, &tv) != 0) {
        snprintf(errbuf, errlen, "cannot start the retry timer");
        goto fail;
    }
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, cfg->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(w->rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        snprintf(errbuf, errlen, "subscribe %s: %s", cfg->topic,
                 rd_kafka_err2str(err));
        goto fail;
    }
    return w;
fail:
    if (kc)
        rd_kafka_conf_destroy(kc);
    sc_worker_free(w);
    return NULL;
}

void sc_worker_free(sc_worker *w)
{
    if (!w)
        return;
    if (w->tick)
        event_free(w->tick);
    if (w->flush)
        event_free(w->flush);
    if (w->lk_started) {
        pthread_mutex_lock(&w->lk_mu);
        w->lk_stop = 1;
        pthread_cond_signal(&w->lk_cv);
        pthread_mutex_unlock(&w->lk_mu);
        pthread_join(w->lk_th, NULL);
    }
    while (w->lk_todo || w->lk_done) {
        lookup_job **head = w->lk_todo ? &w->lk_todo : &w->lk_done;
        lookup_job *job = *head;
        *head = job->next;
        free(job);
    }
    if (w->lk_ev)
        event_free(w->lk_ev);
    if (w->rk) {
        fg_kafka_pump_free(w->pump);
        w->pump = NULL;
        if (w->q && !w->rebalanced) {
            /* librdkafka 2.0.2 with cooperative-sticky asserts when a member
             * closes between joining and its first assignment (fixed in
             * 2.3.0): wait, bounded, for that assignment first. */
            for (int i = 0; i < 50 && !w->rebalanced; i++) {
                rd_kafka_event_t *ev = rd_kafka_queue_poll(w->q, 100);
                if (!ev)
                    continue;
                if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                    on_rebalance(w, ev);
                rd_kafka_event_destroy(ev);
            }
        }
        if (w->q) {
            /* Leave the group: serve the final revoke ourselves (bounded by
             * librdkafka's own timeouts) instead of blocking in close. */
            rd_kafka_error_t *e = rd_kafka_consumer_close_queue(w->rk, w->q);
            if (e)
                rd_kafka_error_destroy(e);
            while (!rd_kafka_consumer_closed(w->rk)) {
                rd_kafka_event_t *ev = rd_kafka_queue_poll(w->q, 100);
                if (!ev)
                    continue;
                if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                    on_rebalance(w, ev);
                rd_kafka_event_destroy(ev);
            }
        }
        if (w->rkt)
            rd_kafka_topic_destroy(w->rkt);
        if (w->q)
            rd_kafka_queue_destroy(w->q);
        rd_kafka_destroy(w->rk);
    }
    fg_kafka_pump_free(w->dlq_pump);
    if (w->dlq) {
        rd_kafka_flush(w->dlq, 0);
        if (w->dlq_rkt)
            rd_kafka_topic_destroy(w->dlq_rkt);
        if (w->dlq_q)
            rd_kafka_queue_destroy(w->dlq_q);
        rd_kafka_destroy(w->dlq);
    }
    for (int32_t p = 0; p < w->nparts; p++) {
        sc_agg_free(w->parts[p].agg);
        fence_clear(&w->parts[p].fences);
    }
    free(w->parts);
    free(w);
}
