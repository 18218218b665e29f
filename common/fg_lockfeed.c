/* SPDX-License-Identifier: Apache-2.0 */
/* Lock-topic follower: assign() every partition from the beginning, decode
 * each record, report end-of-partition to know when it caught up. */
#include "fg_lockfeed.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fg_kafka.h"
#include "fg_log.h"
#include "fg_region.h"

struct fg_lockfeed {
    struct event_base *base;
    fg_lockfeed_record_cb on_record;
    fg_lockfeed_batch_cb on_batch;
    void *ud;
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    fg_kafka_pump *pump;
    char *topic;
    struct event *assign_ev;
    pthread_t meta_thread;
    int meta_started;
    atomic_int stop;
    atomic_int npart;      /* set by the metadata thread */
    int64_t *next_offset;  /* per partition: next offset to read */
    unsigned char *at_end; /* per partition: reached its end once */
    int nassigned;
    atomic_int ready;
    size_t applied; /* records since the last batch callback */
    fg_counter *c_records, *c_invalid, *c_tombstones;
};

static void *meta_main(void *arg)
{
    fg_lockfeed *l = arg;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(l->rk, l->topic, NULL);
    int warned = 0;
    while (!atomic_load(&l->stop) && rkt) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(l->rk, 0, rkt, &md, 2000);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
            md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
            md->topics[0].partition_cnt > 0) {
            atomic_store(&l->npart, md->topics[0].partition_cnt);
            rd_kafka_metadata_destroy(md);
            event_active(l->assign_ev, EV_READ, 0);
            break;
        }
        /* Report the topic's own error when the request itself worked. */
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->topic_cnt == 1)
            err = md->topics[0].err;
        if (md)
            rd_kafka_metadata_destroy(md);
        if (!warned) {
            fg_log_warn("locks_topic_unavailable", "topic=%s err=%s",
                        l->topic, rd_kafka_err2name(err));
            warned = 1;
        }
        for (int i = 0; i < 10 && !atomic_load(&l->stop); i++)
            usleep(100 * 1000); /* a helper thread, not the loop */
    }
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return NULL;
}

static void on_assign(evutil_socket_t fd, short what, void *arg)
{
    fg_lockfeed *l = arg;
    (void)fd;
    (void)what;
    int n = atomic_load(&l->npart);
    if (n <= 0 || l->nassigned)
        return;
    l->next_offset = calloc((size_t)n, sizeof(*l->next_offset));
    l->at_end = calloc((size_t)n, 1);
    if (!l->next_offset || !l->at_end) {
        fg_log_error("locks_assign_failed", "err=no_memory");
        return;
    }
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(parts, l->topic, i)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t err = rd_kafka_assign(l->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err) {
        fg_log_error("locks_assign_failed", "err=%s", rd_kafka_err2name(err));
        return;
    }
    l->nassigned = n;
    fg_log_info("locks_following", "topic=%s partitions=%d", l->topic, n);
}

static void apply_message(fg_lockfeed *l, const rd_kafka_message_t *msg)
{
    char region[FG_REGION_MAX + 1];
    if (msg->partition >= 0 && msg->partition < l->nassigned)
        l->next_offset[msg->partition] = msg->offset + 1;
    if (!msg->key || msg->key_len == 0 || msg->key_len > FG_REGION_MAX ||
        !fg_region_valid(msg->key, msg->key_len)) {
        fg_counter_add(l->c_invalid, 1);
        fg_log_warn("lock_record_invalid", "offset=%lld err=bad_key",
                    (long long)msg->offset);
        return;
    }
    memcpy(region, msg->key, msg->key_len);
    region[msg->key_len] = '\0';
    if (!msg->payload) {
        fg_counter_add(l->c_tombstones, 1);
        l->on_record(l->ud, region, NULL);
        l->applied++;
        return;
    }
    fg_lock lk;
    char err[160];
    if (fg_lock_decode(msg->payload, msg->len, &lk, err, sizeof(err)) !=
        FG_OK) {
        char q[200];
        fg_counter_add(l->c_invalid, 1);
        fg_log_warn("lock_record_invalid", "region=%s offset=%lld err=%s",
                    region, (long long)msg->offset,
                    fg_log_quote(err, q, sizeof(q)));
        return;
    }
    if (strcmp(lk.region, region) != 0) {
        fg_counter_add(l->c_invalid, 1);
        fg_log_warn("lock_record_invalid",
                    "region=%s offset=%lld err=key_region_mismatch", region,
                    (long long)msg->offset);
        return;
    }
    fg_counter_add(l->c_records, 1);
    l->on_record(l->ud, region, &lk);
    l->applied++;
}

static void check_caught_up(fg_lockfeed *l)
{
    if (atomic_load(&l->ready) || l->nassigned == 0)
        return;
    for (int i = 0; i < l->nassigned; i++)
        if (!l->at_end[i])
            return;
    atomic_store(&l->ready, 1);
    fg_log_info("locks_caught_up", "topic=%s", l->topic);
}

static void on_event(void *ud, rd_kafka_event_t *ev)
{
    fg_lockfeed *l = ud;
    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_FETCH: {
        const rd_kafka_message_t *msg;
        while ((msg = rd_kafka_event_message_next(ev)) != NULL) {
            if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (msg->partition >= 0 && msg->partition < l->nassigned)
                    l->at_end[msg->partition] = 1;
                continue;
            }
            if (msg->err) {
                fg_log_warn("locks_consume_error", "err=%s",
                            rd_kafka_err2name(msg->err));
                continue;
            }
            apply_message(l, msg);
        }
        break;
    }
    case RD_KAFKA_EVENT_ERROR: {
        rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
        if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* End of a partition: arrives as a partition-level error. */
            rd_kafka_topic_partition_t *tp = rd_kafka_event_topic_partition(ev);
            if (tp && tp->partition >= 0 && tp->partition < l->nassigned)
                l->at_end[tp->partition] = 1;
            if (tp)
                rd_kafka_topic_partition_destroy(tp);
            break;
        }
        fg_log_warn("locks_kafka_error", "err=%s fatal=%d",
                    rd_kafka_err2name(err), rd_kafka_event_error_is_fatal(ev));
        break;
    }
    default:
        break;
    }
    if (l->applied && l->on_batch)
        l->on_batch(l->ud);
    l->applied = 0;
    check_caught_up(l);
}

int64_t fg_lockfeed_lag(const fg_lockfeed *f)
{
    const fg_lockfeed *l = f;
    int64_t lag = 0;
    for (int i = 0; i < l->nassigned; i++) {
        int64_t lo = 0, hi = 0;
        if (rd_kafka_get_watermark_offsets(l->rk, l->topic, i, &lo, &hi) ==
                RD_KAFKA_RESP_ERR_NO_ERROR &&
            hi > l->next_offset[i] && hi > lo)
            lag += hi - (l->next_offset[i] > lo ? l->next_offset[i] : lo);
    }
    return lag;
}

static double lag_fn(void *ud)
{
    return (double)fg_lockfeed_lag(ud);
}

static double ready_fn(void *ud)
{
    return fg_lockfeed_ready(ud) ? 1.0 : 0.0;
}

fg_lockfeed *fg_lockfeed_new(struct event_base *base, rd_kafka_conf_t *conf,
                             const char *topic, fg_lockfeed_record_cb on_record,
                             fg_lockfeed_batch_cb on_batch, void *ud,
                             fg_metrics *m, char *errbuf, size_t errlen)
{
    fg_lockfeed *l = calloc(1, sizeof(*l));
    char gid[8];
    size_t gl = sizeof(gid);
    if (!l) {
        snprintf(errbuf, errlen, "out of memory");
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    l->base = base;
    l->on_record = on_record;
    l->on_batch = on_batch;
    l->ud = ud;
    l->topic = strdup(topic);
    if (!l->topic) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    /* A consumer queue needs a group id; the feed never joins the group. */
    if (rd_kafka_conf_get(conf, "group.id", gid, &gl) != RD_KAFKA_CONF_OK ||
        gl <= 1) {
        if (fg_kafka_conf_set(conf, "group.id", "fleetgate-lockfeed", errbuf,
                              errlen) != FG_OK)
            goto fail;
    }
    if (fg_kafka_conf_set(conf, "enable.auto.commit", "false", errbuf,
                          errlen) != FG_OK ||
        fg_kafka_conf_set(conf, "enable.partition.eof", "true", errbuf,
                          errlen) != FG_OK ||
        fg_kafka_conf_set(conf, "auto.offset.reset", "earliest", errbuf,
                          errlen) != FG_OK)
        goto fail;
    rd_kafka_conf_set_log_cb(conf, fg_kafka_log_cb);
    rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_ERROR);
    l->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errbuf, errlen);
    if (!l->rk)
        goto fail;
    conf = NULL; /* owned by rk now */
    rd_kafka_poll_set_consumer(l->rk);
    l->q = rd_kafka_queue_get_consumer(l->rk);
    if (!l->q) {
        snprintf(errbuf, errlen, "no consumer queue");
        goto fail;
    }
    l->pump = fg_kafka_pump_new(base, l->q, 1000, on_event, l, errbuf, errlen);
    if (!l->pump)
        goto fail;
    l->assign_ev = event_new(base, -1, 0, on_assign, l);
    if (!l->assign_ev) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    l->c_records = fg_metrics_counter(m, "fleetgate_lock_records_total",
                                      "Lock records applied from the lock topic.", "");
    l->c_invalid = fg_metrics_counter(m, "fleetgate_lock_records_invalid_total",
                                      "Lock records ignored as invalid.", "");
    l->c_tombstones = fg_metrics_counter(m, "fleetgate_lock_tombstones_total",
                                         "Lock tombstones (region removed).", "");
    fg_metrics_gauge_fn(m, "fleetgate_lock_table_lag_records",
                        "Lock-topic records not yet applied (high watermark minus position).",
                        "", lag_fn, l);
    fg_metrics_gauge_fn(m, "fleetgate_lock_table_ready",
                        "1 once the lock table caught up with the topic.", "",
                        ready_fn, l);
    if (pthread_create(&l->meta_thread, NULL, meta_main, l) != 0) {
        snprintf(errbuf, errlen, "cannot start the metadata thread");
        goto fail;
    }
    l->meta_started = 1;
    return l;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    fg_lockfeed_free(l);
    return NULL;
}

int fg_lockfeed_ready(const fg_lockfeed *f)
{
    return atomic_load(&((fg_lockfeed *)f)->ready);
}

void fg_lockfeed_free(fg_lockfeed *l)
{
    if (!l)
        return;
    atomic_store(&l->stop, 1);
    if (l->meta_started)
        pthread_join(l->meta_thread, NULL);
    fg_kafka_pump_free(l->pump);
    if (l->assign_ev)
        event_free(l->assign_ev);
    if (l->rk) {
        rd_kafka_assign(l->rk, NULL);
        if (l->q)
            rd_kafka_queue_destroy(l->q);
        rd_kafka_consumer_close(l->rk);
        rd_kafka_destroy(l->rk);
    }
    free(l->next_offset);
    free(l->at_end);
    free(l->topic);
    free(l);
}
