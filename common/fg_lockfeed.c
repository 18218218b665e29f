/* SPDX-License-Identifier: Apache-2.0 */
/* Lock-topic follower: fg_topicfeed does the Kafka side; this file decodes
 * and checks each record before the caller sees it. */
#include "fg_lockfeed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_log.h"
#include "fg_topicfeed.h"

struct fg_lockfeed {
    fg_topicfeed *feed;
    fg_lockfeed_record_cb on_record;
    fg_lockfeed_batch_cb on_batch;
    void *ud;
};

static fg_status on_record(void *ud, const char *region, const void *value,
                           size_t len, int64_t offset)
{
    fg_lockfeed *l = ud;
    fg_lock lk;
    char err[160], q[200];
    if (!value) {
        l->on_record(l->ud, region, NULL);
        return FG_OK;
    }
    if (fg_lock_decode(value, len, &lk, err, sizeof(err)) != FG_OK) {
        fg_log_warn("lock_record_invalid", "region=%s offset=%lld err=%s",
                    region, (long long)offset,
                    fg_log_quote(err, q, sizeof(q)));
        return FG_EINVAL;
    }
    if (strcmp(lk.region, region) != 0) {
        fg_log_warn("lock_record_invalid",
                    "region=%s offset=%lld err=key_region_mismatch", region,
                    (long long)offset);
        return FG_EINVAL;
    }
    l->on_record(l->ud, region, &lk);
    return FG_OK;
}

static void on_batch(void *ud)
{
    fg_lockfeed *l = ud;
    if (l->on_batch)
        l->on_batch(l->ud);
}

fg_lockfeed *fg_lockfeed_new(struct event_base *base, rd_kafka_conf_t *conf,
                             const char *topic, fg_lockfeed_record_cb on_rec,
                             fg_lockfeed_batch_cb on_bat, void *ud,
                             fg_metrics *m, char *errbuf, size_t errlen)
{
    fg_lockfeed *l = calloc(1, sizeof(*l));
    if (!l) {
        snprintf(errbuf, errlen, "out of memory");
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    l->on_record = on_rec;
    l->on_batch = on_bat;
    l->ud = ud;
    const fg_topicfeed_spec spec = {
        .topic = topic,
        .log_name = "locks",
        .invalid_event = "lock_record_invalid",
        .metric_prefix = "fleetgate_lock",
        .noun = "lock",
        .group_id = "fleetgate-lockfeed",
        .on_record = on_record,
        .on_batch = on_batch,
        .ud = l,
    };
    l->feed = fg_topicfeed_new(base, conf, &spec, m, errbuf, errlen);
    if (!l->feed) {
        free(l);
        return NULL;
    }
    return l;
}

int fg_lockfeed_ready(const fg_lockfeed *f)
{
    return fg_topicfeed_ready(f->feed);
}

int64_t fg_lockfeed_lag(const fg_lockfeed *f)
{
    return fg_topicfeed_lag(f->feed);
}

void fg_lockfeed_free(fg_lockfeed *f)
{
    if (!f)
        return;
    fg_topicfeed_free(f->feed);
    free(f);
}
