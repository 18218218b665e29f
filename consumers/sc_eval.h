/* SPDX-License-Identifier: Apache-2.0 */
/* The evaluating side of the scorer: exactly one scorer at a time holds the
 * Redis lease and, every tick, reads each active region's window, runs the
 * decision engine, and publishes lock decisions (fleet.region-locks, each
 * carrying the lease's fencing token, mirrored in Redis first where a stale
 * token is refused) and score rows (fleet.region-scores). Every scorer
 * follows the lock topic so a new evaluator starts from what is in force,
 * and the policies topic (sc_policyfeed) so it decides under the
 * operators' policies. */
#ifndef SC_EVAL_H
#define SC_EVAL_H

#include <stddef.h>

#include "fg_metrics.h"
#include "sc_config.h"
#include "sc_policy.h"
#include "sc_store.h"

struct event_base;

typedef struct sc_eval sc_eval;

/* engine is transferred on success. cfg, store and m are borrowed.
 * defaults and rails are the configuration's (sc_config_load), copied: a
 * tombstone on the policies topic gives a region back its configured
 * policy. NULL with errbuf on error. @thread the loop's */
sc_eval *sc_eval_new(struct event_base *base, const sc_config *cfg,
                     sc_store *store, sc_engine *engine,
                     const sc_policy *defaults, const sc_rails *rails,
                     fg_metrics *m, char *errbuf, size_t errlen);

/* What the evaluator waits for before its first decision, as a static
 * readiness reason: "lock_table_catching_up" until the lock topic has been
 * read to its end, then "policies_catching_up" until the policies topic
 * has (when scorer.policies_topic is set); NULL once both have. */
const char *sc_eval_waiting(const sc_eval *ev);

/* True when sc_eval_waiting is NULL. */
int sc_eval_ready(const sc_eval *ev);

/* True while this scorer holds the lease. */
int sc_eval_leader(const sc_eval *ev);

/* NULL is a no-op. @thread the loop's */
void sc_eval_free(sc_eval *ev);

#endif
