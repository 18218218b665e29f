/* SPDX-License-Identifier: Apache-2.0 */
/* The counting side of the scorer: a member of the consumer group on
 * fleet.checkins (cooperative-sticky), driven by the event loop. Each
 * assigned partition resumes from the offset stored in Redis, aggregates
 * its poll batches locally (sc_agg) and applies them with fenced scripts
 * (sc_store); a batch Redis did not take is replayed from Kafka. Records
 * that do not decode go to the dead-letter topic. */
#ifndef SC_WORKER_H
#define SC_WORKER_H

#include <stddef.h>

#include "fg_metrics.h"
#include "fg_region.h"
#include "sc_config.h"
#include "sc_store.h"

struct event_base;

typedef struct sc_worker sc_worker;

/* Joins the group on base. cfg, store, mm and m are borrowed and outlive
 * the worker. NULL with errbuf on error. @thread the loop's */
sc_worker *sc_worker_new(struct event_base *base, const sc_config *cfg,
                         sc_store *store, const fg_market_map *mm,
                         fg_metrics *m, char *errbuf, size_t errlen);

/* Redis came back: retry what waited for it. @thread the loop's */
void sc_worker_redis_up(sc_worker *w);

/* Partitions assigned and counting. @thread the loop's */
size_t sc_worker_active_partitions(const sc_worker *w);

/* Leaves the group (revokes, closes the consumer) and frees. NULL is a
 * no-op. @thread the loop's */
void sc_worker_free(sc_worker *w);

#endif
