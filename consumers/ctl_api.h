/* SPDX-License-Identifier: Apache-2.0 */
/* The control service on one event loop: it follows fleet.region-locks and
 * fleet.region-scores into its region table, serves the JSON API (bearer
 * tokens, roles), writes operator decisions to the lock topic with an
 * idempotent acks=all producer and answers only after the broker
 * acknowledged them, and records every action and denial on fleet.audit. */
#ifndef CTL_API_H
#define CTL_API_H

#include <stddef.h>

#include "ctl_config.h"
#include "fg_metrics.h"

struct event_base;

typedef struct ctl_api ctl_api;

/* Starts everything on base: listener, producer, lock feed, score reader.
 * cfg and m are borrowed and must outlive the api. NULL with errbuf on
 * error. @thread the loop's */
ctl_api *ctl_api_new(struct event_base *base, const ctl_config *cfg,
                     fg_metrics *m, char *errbuf, size_t errlen);

/* NULL when ready; else a static reason ("lock_table_catching_up"). */
const char *ctl_api_ready(const ctl_api *api);

/* The port of the API listener. */
int ctl_api_port(const ctl_api *api);

/* Stops accepting; requests being served go on. @thread the loop's */
void ctl_api_drain(ctl_api *api);

/* Actions waiting on the broker (lock, unlock, unlock-all, their audit). */
size_t ctl_api_pending(const ctl_api *api);

/* Flushes the producer (bounded by timeout_ms), answers any action still
 * waiting with 503, and frees everything. NULL is a no-op.
 * @thread the loop's (the loop need not run any more) */
void ctl_api_free(ctl_api *api, int timeout_ms);

#endif
