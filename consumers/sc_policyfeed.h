/* SPDX-License-Identifier: Apache-2.0 */
/* The scorer's policy feed: follows the compacted topic of operator policies
 * (scorer.policies_topic, fleet.region-policies, written by fleetgate-control
 * for PUT /v1/regions/{code}/policy) from its beginning and applies each
 * record to the decision engine. A record's policy overrides the configured
 * one of its region (a key the record lacks keeps the configured value); a
 * tombstone gives the region its configured policy back. A record that does
 * not decode or check is counted and logged and changes nothing, so the
 * region keeps the policy it had. */
#ifndef SC_POLICYFEED_H
#define SC_POLICYFEED_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "fg_lock.h"
#include "fg_metrics.h"
#include "fg_region.h"
#include "fg_status.h"
#include "sc_config.h"
#include "sc_policy.h"

struct event_base;

/* Largest record value decoded; longer ones are invalid. A full policy with
 * a 512-byte template, escaped, is under 4 KiB. */
#define SC_POLICY_RECORD_MAX 16384

/* One record of the policies topic, decoded. */
typedef struct sc_policy_record {
    char region[FG_REGION_MAX + 1];
    /* Who and why, for the log only: absent is "", longer is cut. */
    char actor[FG_LOCK_ACTOR_MAX + 1];
    char reason[FG_LOCK_REASON_MAX + 1];
    char request_id[FG_LOCK_ID_MAX + 1];
    int64_t ts;       /* ms since the epoch, -1 when absent */
    sc_policy policy; /* the base with the record's keys applied, checked */
    int ttl_clamped;  /* the record's ttl was over max_ttl: cut to it */
    /* Set by sc_policy_record_apply only: */
    int tombstone;    /* the record was a tombstone */
    int configured;   /* the region has [policy.<REGION>] keys */
} sc_policy_record;

/* Decodes value (len bytes, need not be NUL-terminated), the record keyed
 * key. The value is one JSON object, as fleetgate-control writes it:
 *   {"region":"DE","actor":"root","reason":"...","request_id":"req-...",
 *    "ts":1718000000000,"policy":{"mode":"never","lock_at":0.6,...}}
 *  - region: string, required, equal to key.
 *  - policy: object, required. Its keys are sc_policy's (mode, lock_at,
 *    unlock_at, min_devices, for, ttl, cooldown, scope, message), each at
 *    most once, a string or a number (durations in ms), applied with
 *    sc_policy_set over *base (the region's configured policy); a key left
 *    out keeps base's value. Any other key, a null, or another type makes
 *    the record invalid: a policy the scorer cannot follow in full is not
 *    followed in part.
 *  - actor, reason, request_id: strings, ts: an integer; optional.
 *  - other top-level keys are ignored (a newer writer may add some).
 * A ttl over rails->max_ttl_ms is cut to it (ttl_clamped set), as the rails
 * cut every automatic lock: a control service allowing longer locks does not
 * make the operator's mode void. Then the whole policy is checked with
 * sc_policy_check. Returns FG_OK with *out filled, or FG_EINVAL (FG_ETOOBIG
 * over SC_POLICY_RECORD_MAX, FG_ENOMEM) with errbuf saying why ("policy.
 * lock_at: must be a number in (0, 1]"); *out is then unspecified. All
 * borrowed. @thread any */
fg_status sc_policy_record_decode(const void *value, size_t len,
                                  const char *key, const sc_policy *base,
                                  const sc_rails *rails,
                                  sc_policy_record *out, char *errbuf,
                                  size_t errlen);

/* Applies one record of the policies topic to engine, as the feed does:
 * value (len bytes) is decoded with sc_policy_record_decode over the
 * region's configured policy (sc_config_region_policy of cfg and
 * defaults), then set as the region's policy; value NULL (a tombstone)
 * sets the configured policy back (the region's override, or none so the
 * defaults apply). On success *rec (not NULL) describes what was applied:
 * rec->policy is the region's policy now. Any error (FG_EINVAL, FG_ETOOBIG,
 * FG_ENOMEM from decoding or the engine) leaves the engine as it was, with
 * errbuf saying why. All borrowed. @thread the engine's owner */
fg_status sc_policy_record_apply(sc_engine *engine, const sc_config *cfg,
                                 const sc_policy *defaults,
                                 const sc_rails *rails, const char *region,
                                 const void *value, size_t len,
                                 sc_policy_record *rec, char *errbuf,
                                 size_t errlen);

typedef struct sc_policyfeed sc_policyfeed;

/* Starts following cfg->policies_topic (must not be empty) on base and
 * applying it to engine. conf is a consumer configuration, always
 * transferred (also on failure). cfg and engine are borrowed and must
 * outlive the feed; defaults (the configured [policy]) and rails are
 * copied. Metrics: fleetgate_policy_records_total, _records_invalid_total,
 * _tombstones_total, _table_lag_records, _table_ready. NULL with errbuf on
 * error. @thread the loop's */
sc_policyfeed *sc_policyfeed_new(struct event_base *base,
                                 rd_kafka_conf_t *conf, const sc_config *cfg,
                                 const sc_policy *defaults,
                                 const sc_rails *rails, sc_engine *engine,
                                 fg_metrics *m, char *errbuf, size_t errlen);

/* True once the topic has been read to its end (every record in it at
 * start-up applied). @thread any */
int sc_policyfeed_ready(const sc_policyfeed *pf);

/* NULL is a no-op. Policies already applied stay in the engine.
 * @thread the loop's */
void sc_policyfeed_free(sc_policyfeed *pf);

#endif
