/* SPDX-License-Identifier: Apache-2.0 */
/* Follows a compacted topic keyed by region code from its beginning, on an
 * event loop, and hands every record to a callback: every partition is
 * assign()ed from the beginning (no group membership, nothing committed),
 * and end-of-partition reports tell when the feed has caught up. The lock
 * feed (fg_lockfeed) and the scorer's policy feed (sc_policyfeed) are built
 * on it; they decode the values, this module does the Kafka side and the
 * metrics every such table has. */
#ifndef FG_TOPICFEED_H
#define FG_TOPICFEED_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "fg_metrics.h"
#include "fg_status.h"

struct event_base;

typedef struct fg_topicfeed fg_topicfeed;

/* One record. region is the record's key, already checked to be a valid
 * region code (a record with a bad key never reaches the callback: it is
 * counted invalid). value is the payload (len bytes, not NUL-terminated) or
 * NULL for a tombstone. All borrowed for the call. Returns FG_OK when the
 * record was applied; any other status counts it as invalid (the callback
 * logs why, once). @thread the loop's */
typedef fg_status (*fg_topicfeed_record_cb)(void *ud, const char *region,
                                            const void *value, size_t len,
                                            int64_t offset);

/* Called after each batch of records that applied at least one, so a
 * caller can publish once per batch rather than per record. @thread the
 * loop's */
typedef void (*fg_topicfeed_batch_cb)(void *ud);

/* What to follow and how to name it. Strings are copied by
 * fg_topicfeed_new where kept.
 *   topic          the topic
 *   log_name       prefix of the topic-level log events: "locks" gives
 *                  locks_following, locks_caught_up, locks_topic_unavailable,
 *                  locks_assign_failed, locks_consume_error, locks_kafka_error
 *   invalid_event  log event of a record with a bad key ("lock_record_invalid")
 *   metric_prefix  "fleetgate_lock" gives fleetgate_lock_records_total,
 *                  _records_invalid_total, _tombstones_total,
 *                  _table_lag_records and _table_ready
 *   noun           what a record is, for the metrics' help ("lock")
 *   group_id       set as group.id when conf has none (never joined)
 *   on_record      required; on_batch may be NULL; ud is given to both */
typedef struct fg_topicfeed_spec {
    const char *topic;
    const char *log_name;
    const char *invalid_event;
    const char *metric_prefix;
    const char *noun;
    const char *group_id;
    fg_topicfeed_record_cb on_record;
    fg_topicfeed_batch_cb on_batch;
    void *ud;
} fg_topicfeed_spec;

/* Starts following spec->topic on base. conf is a consumer configuration,
 * always transferred (also on failure). Finding the topic's partitions is a
 * blocking metadata request, so it runs on a helper thread that retries
 * until the topic exists. The metrics named above are registered in m. NULL
 * with errbuf on error. @thread the loop's */
fg_topicfeed *fg_topicfeed_new(struct event_base *base, rd_kafka_conf_t *conf,
                               const fg_topicfeed_spec *spec, fg_metrics *m,
                               char *errbuf, size_t errlen);

/* True once every partition has been read to its end at least once (and
 * stays true). @thread any */
int fg_topicfeed_ready(const fg_topicfeed *f);

/* Records of the topic not handed to the callback yet (high watermark minus
 * position, over the partitions). @thread the loop's */
int64_t fg_topicfeed_lag(const fg_topicfeed *f);

/* Stops the helper thread and the consumer. NULL is a no-op. No callback
 * runs after it returns. @thread the loop's */
void fg_topicfeed_free(fg_topicfeed *f);

#endif
