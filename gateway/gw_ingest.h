/* SPDX-License-Identifier: Apache-2.0 */
/* Ingest workers: each is a thread with its own event loop, its own
 * SO_REUSEPORT listener for devices and its own idempotent producer. A
 * check-in is validated, encoded, produced, and answered from its delivery
 * report (or at once with gateway.ack = accept). */
#ifndef GW_INGEST_H
#define GW_INGEST_H

#include <stddef.h>

#include "fg_http.h"
#include "fg_metrics.h"
#include "fg_region.h"
#include "gw_config.h"
#include "gw_locks.h"

typedef struct gw_ingest_metrics gw_ingest_metrics;

/* Registers the ingest metrics in m (borrowed). NULL when out of memory. */
gw_ingest_metrics *gw_ingest_metrics_new(fg_metrics *m);
/* Frees the handles (the series stay in m). NULL is a no-op. */
void gw_ingest_metrics_free(gw_ingest_metrics *mx);

/* What every worker shares; read-only once the workers run, except the
 * metrics (thread-safe) and the lock store (its own locking). */
typedef struct gw_shared {
    const gw_config *cfg;
    fg_metrics *m;
    gw_ingest_metrics *mx;
    gw_lockstore *locks;
    const fg_market_map *markets;
    fg_http_conn_budget budget;
} gw_shared;

typedef struct gw_worker gw_worker;

/* Creates worker index i: its loop, listener and producer. Nothing runs
 * until gw_worker_start. NULL with errbuf on error. @thread main */
gw_worker *gw_worker_new(gw_shared *sh, int index, char *errbuf,
                         size_t errlen);

/* Starts the worker's thread. Returns FG_OK or FG_EIO. */
fg_status gw_worker_start(gw_worker *w);

/* Asks the worker to stop: it stops accepting, answers what is in flight
 * (bounded by gateway.shutdown_timeout), flushes its producer and ends its
 * loop. @thread any */
void gw_worker_stop(gw_worker *w);

/* True once the worker's loop has ended. @thread any */
int gw_worker_done(const gw_worker *w);

/* True when the worker's producer can take check-ins (not fatally failed,
 * brokers not down beyond the bound). @thread any */
int gw_worker_healthy(const gw_worker *w);

/* Messages the worker's producer holds (queued, in flight or awaiting
 * their delivery report). @thread any */
int gw_worker_outq(const gw_worker *w);

/* Recovery probe: while a worker is marked down (deliveries failed, or all
 * brokers down), a thread asks the broker for the topic's metadata through
 * that worker's producer about once a second, and clears the mark when the
 * broker answers. Without it a gateway that a load balancer took out of
 * rotation would get no traffic to prove the broker is back. A frozen broker
 * does not answer, so the mark stays. */
typedef struct gw_prober gw_prober;

/* Starts the probe thread over workers (borrowed; n of them). NULL on
 * error. @thread main */
gw_prober *gw_prober_start(gw_worker **workers, int n);

/* Stops and joins the probe thread. NULL is a no-op. @thread main */
void gw_prober_stop(gw_prober *pr);

/* Joins the thread (if started) and frees everything. NULL is a no-op.
 * @thread main */
/* Raises a real librdkafka fatal error in w's producer (as a broker
 * fencing it would), for gateway.fault_injection. @thread any */
void gw_worker_inject_fatal(gw_worker *w);

void gw_worker_free(gw_worker *w);

#endif
