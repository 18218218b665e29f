/* SPDX-License-Identifier: Apache-2.0 */
/* Compacted-topic follower: assign() every partition from the beginning,
 * check each record's key, hand it on, and report end-of-partition to know
 * when the table caught up. */
#include "fg_topicfeed.h"

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

/* Longest log event name built from spec->log_name ("<name>_topic_unavailable"). */
#define EV_MAX 64

struct fg_topicfeed {
    struct event_base *base;
    fg_topicfeed_record_cb on_record;
    fg_topicfeed_batch_cb on_batch;
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
    /* Log events, built once from spec->log_name. */
    char ev_unavailable[EV_MAX], ev_assign_failed[EV_MAX],
        ev_following[EV_MAX], ev_caught_up[EV_MAX], ev_consume_error[EV_MAX],
        ev_kafka_error[EV_MAX], ev_invalid[EV_MAX];
};

static void *meta_main(void *arg)
{
    fg_topicfeed *f = arg;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(f->rk, f->topic, NULL);
    int warned = 0;
    while (!atomic_load(&f->stop) && rkt) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(f->rk, 0, rkt, &md, 2000);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
            md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
            md->topics[0].partition_cnt > 0) {
            atomic_store(&f->npart, md->topics[0].partition_cnt);
            rd_kafka_metadata_destroy(md);
            event_active(f->assign_ev, EV_READ, 0);
            break;
        }
        /* Report the topic's own error when the request itself worked. */
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->topic_cnt == 1)
            err = md->topics[0].err;
        if (md)
            rd_kafka_metadata_destroy(md);
        if (!warned) {
            fg_log_warn(f->ev_unavailable, "topic=%s err=%s", f->topic,
                        rd_kafka_err2name(err));
            warned = 1;
        }
        for (int i = 0; i < 10 && !atomic_load(&f->stop); i++)
            usleep(100 * 1000); /* a helper thread, not the loop */
    }
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return NULL;
}

static void on_assign(evutil_socket_t fd, short what, void *arg)
{
    fg_topicfeed *f = arg;
    (void)fd;
    (void)what;
    int n = atomic_load(&f->npart);
    if (n <= 0 || f->nassigned)
        return;
    f->next_offset = calloc((size_t)n, sizeof(*f->next_offset));
    f->at_end = calloc((size_t)n, 1);
    if (!f->next_offset || !f->at_end) {
        fg_log_error(f->ev_assign_failed, "topic=%s err=no_memory", f->topic);
        return;
    }
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(parts, f->topic, i)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t err = rd_kafka_assign(f->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err) {
        fg_log_error(f->ev_assign_failed, "topic=%s err=%s", f->topic,
                     rd_kafka_err2name(err));
        return;
    }
    f->nassigned = n;
    fg_log_info(f->ev_following, "topic=%s partitions=%d", f->topic, n);
}

static void apply_message(fg_topicfeed *f, const rd_kafka_message_t *msg)
{
    char region[FG_REGION_MAX + 1];
    if (msg->partition >= 0 && msg->partition < f->nassigned)
        f->next_offset[msg->partition] = msg->offset + 1;
    if (!msg->key || msg->key_len == 0 || msg->key_len > FG_REGION_MAX ||
        !fg_region_valid(msg->key, msg->key_len)) {
        fg_counter_add(f->c_invalid, 1);
        fg_log_warn(f->ev_invalid, "offset=%lld err=bad_key",
                    (long long)msg->offset);
        return;
    }
    memcpy(region, msg->key, msg->key_len);
    region[msg->key_len] = '\0';
    if (f->on_record(f->ud, region, msg->payload, msg->payload ? msg->len : 0,
                     msg->offset) != FG_OK) {
        fg_counter_add(f->c_invalid, 1);
        return;
    }
    fg_counter_add(msg->payload ? f->c_records : f->c_tombstones, 1);
    f->applied++;
}

static void check_caught_up(fg_topicfeed *f)
{
    if (atomic_load(&f->ready) || f->nassigned == 0)
        return;
    for (int i = 0; i < f->nassigned; i++)
        if (!f->at_end[i])
            return;
    atomic_store(&f->ready, 1);
    fg_log_info(f->ev_caught_up, "topic=%s", f->topic);
}

static void mark_end(fg_topicfeed *f, int32_t partition)
{
    if (partition >= 0 && partition < f->nassigned)
        f->at_end[partition] = 1;
}

static void on_event(void *ud, rd_kafka_event_t *ev)
{
    fg_topicfeed *f = ud;
    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_FETCH: {
        const rd_kafka_message_t *msg;
        while ((msg = rd_kafka_event_message_next(ev)) != NULL) {
            if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                mark_end(f, msg->partition);
                continue;
            }
            if (msg->err) {
                fg_log_warn(f->ev_consume_error, "topic=%s err=%s", f->topic,
                            rd_kafka_err2name(msg->err));
                continue;
            }
            apply_message(f, msg);
        }
        break;
    }
    case RD_KAFKA_EVENT_ERROR: {
        rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
        if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* End of a partition: arrives as a partition-level error. */
            rd_kafka_topic_partition_t *tp = rd_kafka_event_topic_partition(ev);
            if (tp) {
                mark_end(f, tp->partition);
                rd_kafka_topic_partition_destroy(tp);
            }
            break;
        }
        fg_log_warn(f->ev_kafka_error, "topic=%s err=%s fatal=%d", f->topic,
                    rd_kafka_err2name(err), rd_kafka_event_error_is_fatal(ev));
        break;
    }
    default:
        break;
    }
    if (f->applied && f->on_batch)
        f->on_batch(f->ud);
    f->applied = 0;
    check_caught_up(f);
}

int64_t fg_topicfeed_lag(const fg_topicfeed *f)
{
    int64_t lag = 0;
    for (int i = 0; i < f->nassigned; i++) {
        int64_t lo = 0, hi = 0;
        if (rd_kafka_get_watermark_offsets(f->rk, f->topic, i, &lo, &hi) ==
                RD_KAFKA_RESP_ERR_NO_ERROR &&
            hi > f->next_offset[i] && hi > lo)
            lag += hi - (f->next_offset[i] > lo ? f->next_offset[i] : lo);
    }
    return lag;
}

static double lag_fn(void *ud)
{
    return (double)fg_topicfeed_lag(ud);
}

static double ready_fn(void *ud)
{
    return fg_topicfeed_ready(ud) ? 1.0 : 0.0;
}

/* Registers the five metrics; 0, or -1 with errbuf. */
static int register_metrics(fg_topicfeed *f, const fg_topicfeed_spec *spec,
                            fg_metrics *m, char *errbuf, size_t errlen)
{
    const char *p = spec->metric_prefix, *noun = spec->noun;
    char name[128], help[160];
    snprintf(name, sizeof(name), "%s_records_total", p);
    snprintf(help, sizeof(help), "Records of the %s topic applied.", noun);
    f->c_records = fg_metrics_counter(m, name, help, "");
    snprintf(name, sizeof(name), "%s_records_invalid_total", p);
    snprintf(help, sizeof(help),
             "Records of the %s topic ignored as invalid (logged).", noun);
    f->c_invalid = fg_metrics_counter(m, name, help, "");
    snprintf(name, sizeof(name), "%s_tombstones_total", p);
    snprintf(help, sizeof(help), "Tombstones of the %s topic (region removed).",
             noun);
    f->c_tombstones = fg_metrics_counter(m, name, help, "");
    snprintf(name, sizeof(name), "%s_table_lag_records", p);
    snprintf(help, sizeof(help),
             "Records of the %s topic not yet applied (high watermark minus "
             "position).", noun);
    fg_gauge *lag = fg_metrics_gauge_fn(m, name, help, "", lag_fn, f);
    snprintf(name, sizeof(name), "%s_table_ready", p);
    snprintf(help, sizeof(help),
             "1 once the %s table caught up with its topic.", noun);
    fg_gauge *ready = fg_metrics_gauge_fn(m, name, help, "", ready_fn, f);
    if (!f->c_records || !f->c_invalid || !f->c_tombstones || !lag || !ready) {
        snprintf(errbuf, errlen, "cannot register the %s metrics", p);
        return -1;
    }
    return 0;
}

fg_topicfeed *fg_topicfeed_new(struct event_base *base, rd_kafka_conf_t *conf,
                               const fg_topicfeed_spec *spec, fg_metrics *m,
                               char *errbuf, size_t errlen)
{
    fg_topicfeed *f = calloc(1, sizeof(*f));
    char gid[8];
    size_t gl = sizeof(gid);
    if (!f) {
        snprintf(errbuf, errlen, "out of memory");
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    f->base = base;
    f->on_record = spec->on_record;
    f->on_batch = spec->on_batch;
    f->ud = spec->ud;
    const char *ln = spec->log_name;
    snprintf(f->ev_unavailable, EV_MAX, "%s_topic_unavailable", ln);
    snprintf(f->ev_assign_failed, EV_MAX, "%s_assign_failed", ln);
    snprintf(f->ev_following, EV_MAX, "%s_following", ln);
    snprintf(f->ev_caught_up, EV_MAX, "%s_caught_up", ln);
    snprintf(f->ev_consume_error, EV_MAX, "%s_consume_error", ln);
    snprintf(f->ev_kafka_error, EV_MAX, "%s_kafka_error", ln);
    snprintf(f->ev_invalid, EV_MAX, "%s", spec->invalid_event);
    f->topic = strdup(spec->topic);
    if (!f->topic) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    /* A consumer queue needs a group id; the feed never joins the group. */
    if (rd_kafka_conf_get(conf, "group.id", gid, &gl) != RD_KAFKA_CONF_OK ||
        gl <= 1) {
        if (fg_kafka_conf_set(conf, "group.id", spec->group_id, errbuf,
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
    f->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errbuf, errlen);
    if (!f->rk)
        goto fail;
    conf = NULL; /* owned by rk now */
    rd_kafka_poll_set_consumer(f->rk);
    f->q = rd_kafka_queue_get_consumer(f->rk);
    if (!f->q) {
        snprintf(errbuf, errlen, "no consumer queue");
        goto fail;
    }
    f->pump = fg_kafka_pump_new(base, f->q, 1000, on_event, f, errbuf, errlen);
    if (!f->pump)
        goto fail;
    f->assign_ev = event_new(base, -1, 0, on_assign, f);
    if (!f->assign_ev) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    if (register_metrics(f, spec, m, errbuf, errlen) != 0)
        goto fail;
    if (pthread_create(&f->meta_thread, NULL, meta_main, f) != 0) {
        snprintf(errbuf, errlen, "cannot start the metadata thread");
        goto fail;
    }
    f->meta_started = 1;
    return f;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    fg_topicfeed_free(f);
    return NULL;
}

int fg_topicfeed_ready(const fg_topicfeed *f)
{
    return atomic_load(&((fg_topicfeed *)f)->ready);
}

void fg_topicfeed_free(fg_topicfeed *f)
{
    if (!f)
        return;
    atomic_store(&f->stop, 1);
    if (f->meta_started)
        pthread_join(f->meta_thread, NULL);
    fg_kafka_pump_free(f->pump);
    if (f->assign_ev)
        event_free(f->assign_ev);
    if (f->rk) {
        rd_kafka_assign(f->rk, NULL);
        if (f->q)
            rd_kafka_queue_destroy(f->q);
        rd_kafka_consumer_close(f->rk);
        rd_kafka_destroy(f->rk);
    }
    free(f->next_offset);
    free(f->at_end);
    free(f->topic);
    free(f);
}
