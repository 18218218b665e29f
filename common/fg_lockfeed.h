/* SPDX-License-Identifier: Apache-2.0 */
/* Follows the compacted lock topic (fleet.region-locks) from its beginning
 * on an event loop and hands every record, decoded and validated, to a
 * callback. Used by the gateway (its lock table) and the scorer (its view of
 * the locks in force). Knows when it has caught up: every partition read to
 * its end once. The Kafka side is fg_topicfeed's. */
#ifndef FG_LOCKFEED_H
#define FG_LOCKFEED_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "fg_lock.h"
#include "fg_metrics.h"

struct event_base;

typedef struct fg_lockfeed fg_lockfeed;

/* One record: lk is the decoded record, or NULL for a tombstone (the region
 * has no record any more). region is the record's key. Both borrowed for the
 * call. @thread the loop's */
typedef void (*fg_lockfeed_record_cb)(void *ud, const char *region,
                                      const fg_lock *lk);

/* Called after each batch of records (so a caller can publish once per
 * batch rather than per record). May be NULL. */
typedef void (*fg_lockfeed_batch_cb)(void *ud);

/* Starts following topic on base. conf is a consumer configuration
 * (always transferred, also on failure; a group.id is set if missing, never joined: the
 * feed uses assign() and commits nothing). Finding the topic's partitions
 * is a blocking metadata request, so it runs on a helper thread that
 * retries until the topic exists. Metrics (counters of records, invalid
 * records, tombstones, a lag gauge and a ready gauge) are registered in m
 * under the prefix fleetgate_lock. NULL with errbuf on error.
 * @thread the loop's */
fg_lockfeed *fg_lockfeed_new(struct event_base *base, rd_kafka_conf_t *conf,
                             const char *topic, fg_lockfeed_record_cb on_record,
                             fg_lockfeed_batch_cb on_batch, void *ud,
                             fg_metrics *m, char *errbuf, size_t errlen);

/* True once every partition has been read to its end at least once.
 * @thread any */
int fg_lockfeed_ready(const fg_lockfeed *f);

/* Records of the topic not applied yet (high watermark minus position).
 * @thread the loop's */
int64_t fg_lockfeed_lag(const fg_lockfeed *f);

/* Stops the helper thread and the consumer. NULL is a no-op.
 * @thread the loop's */
void fg_lockfeed_free(fg_lockfeed *f);

#endif
