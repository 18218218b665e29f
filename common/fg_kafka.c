/* SPDX-License-Identifier: Apache-2.0 */
/* librdkafka queues served from a libevent loop through a pipe, and
 * librdkafka configuration from fleetgate's pass-through keys. */
#include "fg_kafka.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fg_log.h"

struct fg_kafka_pump {
    rd_kafka_queue_t *q;
    int fds[2];
    struct event *ev;
    int budget;
    fg_kafka_event_cb cb;
    fg_kafka_round_cb round_cb;
    void *ud;
};

static void pump_serve(fg_kafka_pump *pump)
{
    int i;
    for (i = 0; i < pump->budget; i++) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(pump->q, 0);
        if (!ev)
            break;
        pump->cb(pump->ud, ev);
        rd_kafka_event_destroy(ev);
    }
    /* Budget spent with work left: come back after other events. */
    if (i == pump->budget)
        event_active(pump->ev, EV_READ, 0);
    if (pump->round_cb)
        pump->round_cb(pump->ud, i);
}

void fg_kafka_pump_set_round_cb(fg_kafka_pump *pump, fg_kafka_round_cb cb)
{
    pump->round_cb = cb;
}

static void pump_on_readable(evutil_socket_t fd, short what, void *arg)
{
    fg_kafka_pump *pump = arg;
    char drain[256];
    (void)what;
    for (;;) {
        ssize_t n = read(fd, drain, sizeof(drain));
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        break; /* EAGAIN or EOF */
    }
    pump_serve(pump);
}

fg_kafka_pump *fg_kafka_pump_new(struct event_base *base, rd_kafka_queue_t *q,
                                 int budget, fg_kafka_event_cb cb, void *ud,
                                 char *errbuf, size_t errlen)
{
    fg_kafka_pump *pump = calloc(1, sizeof(*pump));
    if (!pump) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    pump->fds[0] = pump->fds[1] = -1;
    pump->q = q;
    pump->budget = budget > 0 ? budget : 1000;
    pump->cb = cb;
    pump->ud = ud;
    if (pipe2(pump->fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(errbuf, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    pump->ev = event_new(base, pump->fds[0], EV_READ | EV_PERSIST,
                         pump_on_readable, pump);
    if (!pump->ev || event_add(pump->ev, NULL) != 0) {
        snprintf(errbuf, errlen, "cannot watch the kafka queue pipe");
        goto fail;
    }
    rd_kafka_queue_io_event_enable(q, pump->fds[1], "1", 1);
    /* Events queued before the pipe existed would never signal it. */
    event_active(pump->ev, EV_READ, 0);
    return pump;
fail:
    fg_kafka_pump_free(pump);
    return NULL;
}

void fg_kafka_pump_run(fg_kafka_pump *pump)
{
    pump_serve(pump);
}

void fg_kafka_pump_free(fg_kafka_pump *pump)
{
    if (!pump)
        return;
    if (pump->q && pump->fds[1] >= 0)
        rd_kafka_queue_io_event_enable(pump->q, -1, NULL, 0);
    if (pump->ev)
        event_free(pump->ev);
    if (pump->fds[0] >= 0)
        close(pump->fds[0]);
    if (pump->fds[1] >= 0)
        close(pump->fds[1]);
    free(pump);
}

fg_status fg_kafka_conf_set(rd_kafka_conf_t *conf, const char *key,
                            const char *value, char *errbuf, size_t errlen)
{
    char err[256];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof(err)) !=
        RD_KAFKA_CONF_OK) {
        snprintf(errbuf, errlen, "kafka.%s: %s", key, err);
        return FG_EINVAL;
    }
    return FG_OK;
}

fg_status fg_kafka_conf_apply(rd_kafka_conf_t *conf, const fg_conf_kvs *kvs,
                              char *errbuf, size_t errlen)
{
    for (size_t i = 0; kvs && i < kvs->n; i++) {
        fg_status st = fg_kafka_conf_set(conf, kvs->items[i].key,
                                         kvs->items[i].value, errbuf, errlen);
        if (st != FG_OK)
            return st;
    }
    return FG_OK;
}

void fg_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                     const char *buf)
{
    char q[512];
    fg_log(level <= 3 ? FG_LOG_ERROR : level <= 5 ? FG_LOG_WARN : FG_LOG_DEBUG,
           "librdkafka", "client=%s fac=%s text=%s", rd_kafka_name(rk), fac,
           fg_log_quote(buf, q, sizeof(q)));
}

void fg_kafka_create_topics(rd_kafka_t *rk, rd_kafka_queue_t *q,
                            const fg_kafka_topic_spec *specs, size_t n)
{
    rd_kafka_NewTopic_t *nt[16];
    char err[256];
    size_t k = 0;
    for (size_t i = 0; i < n && k < sizeof(nt) / sizeof(nt[0]); i++) {
        rd_kafka_NewTopic_t *t = rd_kafka_NewTopic_new(
            specs[i].name, specs[i].partitions, -1, err, sizeof(err));
        if (!t) {
            fg_log_warn("topic_create_failed", "topic=%s err=%s",
                        specs[i].name, err);
            continue;
        }
        if (specs[i].compact)
            rd_kafka_NewTopic_set_config(t, "cleanup.policy", "compact");
        nt[k++] = t;
    }
    if (k)
        rd_kafka_CreateTopics(rk, nt, k, NULL, q);
    for (size_t i = 0; i < k; i++)
        rd_kafka_NewTopic_destroy(nt[i]);
}

void fg_kafka_log_topics_created(rd_kafka_event_t *ev)
{
    const rd_kafka_CreateTopics_result_t *res =
        rd_kafka_event_CreateTopics_result(ev);
    size_t n = 0;
    const rd_kafka_topic_result_t **tr =
        res ? rd_kafka_CreateTopics_result_topics(res, &n) : NULL;
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(tr[i]);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            fg_log_info("topic_created", "topic=%s",
                        rd_kafka_topic_result_name(tr[i]));
        else if (err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            fg_log_warn("topic_create_failed", "topic=%s err=%s",
                        rd_kafka_topic_result_name(tr[i]),
                        rd_kafka_err2name(err));
    }
}

rd_kafka_conf_t *fg_kafka_conf_base(const char *client_id, char *errbuf,
                                    size_t errlen)
{
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    if (fg_kafka_conf_set(kc, "bootstrap.servers", "127.0.0.1:9092", errbuf,
                          errlen) != FG_OK ||
        fg_kafka_conf_set(kc, "client.id", client_id, errbuf, errlen) !=
            FG_OK) {
        rd_kafka_conf_destroy(kc);
        return NULL;
    }
    return kc;
}
