/* SPDX-License-Identifier: Apache-2.0 */
/* Drives a librdkafka queue from a libevent loop, with no polling thread and
 * no sleeps: librdkafka writes a byte to a non-blocking pipe when the queue
 * gets events (rd_kafka_queue_io_event_enable); the loop drains the pipe and
 * serves the queue until it is empty or a budget is spent, then comes back
 * through event_active so other work on the loop is not starved. Also holds
 * helpers to build a librdkafka configuration from pass-through keys. */
#ifndef FG_KAFKA_H
#define FG_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "fg_config.h"
#include "fg_status.h"

struct event_base;

typedef struct fg_kafka_pump fg_kafka_pump;

/* Called for each event taken off the queue. ev is borrowed: the pump
 * destroys it after the call. @thread the loop's */
typedef void (*fg_kafka_event_cb)(void *ud, rd_kafka_event_t *ev);

/* Wires q (borrowed; keep it alive until fg_kafka_pump_free) into base.
 * budget: events served per loop turn before yielding. Returns NULL and
 * fills errbuf on failure. @thread the loop's */
fg_kafka_pump *fg_kafka_pump_new(struct event_base *base, rd_kafka_queue_t *q,
                                 int budget, fg_kafka_event_cb cb, void *ud,
                                 char *errbuf, size_t errlen);

/* Called once at the end of each serve round with the number of events the
 * round handed to the event callback (0 when the queue was empty), so that
 * per-round work (reading the clock, arming a timer) is not done per event.
 * @thread the loop's */
typedef void (*fg_kafka_round_cb)(void *ud, int served);

/* Sets (or, with NULL, clears) the pump's round callback; it gets the ud
 * given to fg_kafka_pump_new. Off by default. @thread the loop's */
void fg_kafka_pump_set_round_cb(fg_kafka_pump *pump, fg_kafka_round_cb cb);

/* Serves the queue now, as if the pipe had fired (used after a flush).
 * @thread the loop's */
void fg_kafka_pump_run(fg_kafka_pump *pump);

/* Disables the queue's io event, closes the pipe and frees the pump.
 * NULL is a no-op. @thread the loop's */
void fg_kafka_pump_free(fg_kafka_pump *pump);

/* A topic to create when missing: name, partitions (replication factor is
 * the broker's default), and whether it is compacted. */
typedef struct fg_kafka_topic_spec {
    const char *name;
    int partitions;
    int compact;
} fg_kafka_topic_spec;

/* Asks the cluster, through rk's Admin API, to create the n topics that are
 * missing. Nothing blocks: the answer arrives on q as a
 * RD_KAFKA_EVENT_CREATETOPICS_RESULT, to be handed to
 * fg_kafka_log_topics_created. specs borrowed. @thread any */
void fg_kafka_create_topics(rd_kafka_t *rk, rd_kafka_queue_t *q,
                            const fg_kafka_topic_spec *specs, size_t n);

/* Logs a CreateTopics result: created topics at info, failures other than
 * TOPIC_ALREADY_EXISTS (the normal answer) at warn. */
void fg_kafka_log_topics_created(rd_kafka_event_t *ev);

/* A librdkafka log callback (rd_kafka_conf_set_log_cb) that writes through
 * fg_log: syslog levels 0-3 as error, 4-5 as warn, the rest as debug.
 * @thread any (librdkafka's threads call it) */
void fg_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                     const char *buf);

/* A new configuration with fleetgate's defaults every client shares:
 * bootstrap.servers 127.0.0.1:9092 (kafka.* keys override it later) and
 * client.id. Caller owns the result; NULL with errbuf on error. */
rd_kafka_conf_t *fg_kafka_conf_base(const char *client_id, char *errbuf,
                                    size_t errlen);

/* Applies every key of kvs to conf (borrowed) with rd_kafka_conf_set.
 * Returns FG_EINVAL with errbuf naming the first bad key ("kafka.<key>"). */
fg_status fg_kafka_conf_apply(rd_kafka_conf_t *conf, const fg_conf_kvs *kvs,
                              char *errbuf, size_t errlen);

/* Sets key=value on conf, or fills errbuf naming the key. */
fg_status fg_kafka_conf_set(rd_kafka_conf_t *conf, const char *key,
                            const char *value, char *errbuf, size_t errlen);

#endif
