/* SPDX-License-Identifier: Apache-2.0 */
/* The control service's picture of every region kept in Redis, so the
 * region history of GET /v1/regions/{code} survives a restart (the
 * compacted topics only hold each region's newest record). Writes are best
 * effort and never block: while Redis is down nothing is queued, lost
 * writes are counted, and once Redis is back every region is pushed again
 * from memory (the writes are idempotent). On the first connection the
 * history is read back into the region table's history.
 *
 * Keys (P = redis.prefix, default "fg:ctl"; {CU} a hash tag, so a region's
 * keys share one Redis Cluster slot and one script can write them):
 *   P:{CU}:now     string: the region object of GET /v1/regions (JSON) as
 *                  of the last change; for dashboards and redis-cli
 *   P:{CU}:scores  zset: score = ts (ms), member = the row as JSON
 *                  {"region","ts","devices","grey","share","lo","hi"};
 *                  the newest K kept
 *   P:{CU}:locks   zset: score = since (ms), member = the lock record as
 *                  fleet.region-locks carries it (msgpack); newest L kept
 *   P:regions      zset: score = last write (ms), member = region code.
 *                  Not hash-tagged: one small key (at most
 *                  CTL_STATE_MAX_REGIONS members) on one shard, read once
 *                  at start; entries idle longer than the TTL are pruned
 *                  then.
 * Every region key gets the TTL again on each write, so a region nobody
 * scores or locks any more disappears after it.
 *
 * Memory: besides the region table's history, only commands in flight
 * (at most CTL_STORE_MAX_INFLIGHT, each at most one region's history) and,
 * during the start-up load, the list of region codes. */
#ifndef CTL_STORE_H
#define CTL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "ctl_state.h"
#include "fg_metrics.h"

struct event_base;

/* Commands accepted by the Redis connection and not answered yet; further
 * writes are refused (and counted as lost) until answers come back. */
#define CTL_STORE_MAX_INFLIGHT 4096
/* Longest redis.prefix. */
#define CTL_STORE_PREFIX_MAX 64

typedef struct ctl_store ctl_store;

typedef struct ctl_store_opts {
    const char *host;   /* Redis host (copied) */
    int port;
    int timeout_ms;     /* connect and command deadline */
    const char *prefix; /* key prefix (copied); see ctl_store_prefix_ok */
    int64_t ttl_ms;     /* a region's keys expire this long after its last
                         * write */
    size_t scores;      /* K: score rows kept per region */
    size_t locks;       /* L: lock records kept per region */
} ctl_store_opts;

/* 1 when prefix can name keys: 1..CTL_STORE_PREFIX_MAX printable ASCII
 * bytes without spaces or braces (a brace would break the hash tags).
 * @thread any */
int ctl_store_prefix_ok(const char *prefix);

/* Starts the connection on base (nothing blocks; it connects and
 * reconnects on its own). st is borrowed and must outlive the store: the
 * load adds to its history, the resync reads it. Metrics are registered in
 * m (borrowed, must outlive the store): fleetgate_control_redis_errors_total
 * {op="write"|"load"}, fleetgate_control_redis_up,
 * fleetgate_control_redis_history_loaded. opts is borrowed for the call.
 * NULL with errbuf on bad options or out of memory. The process must
 * ignore SIGPIPE. @thread the loop's */
ctl_store *ctl_store_new(struct event_base *base, ctl_state *st,
                         fg_metrics *m, const ctl_store_opts *opts,
                         char *errbuf, size_t errlen);

/* Drops the connection; writes in flight are lost (the topics still hold
 * the newest records). NULL is a no-op. @thread the loop's */
void ctl_store_free(ctl_store *s);

/* Writes region r's change (the ctl_state_change_cb arguments, all
 * borrowed for the call): its current view, and row or lk when they were
 * appended to its history. Never blocks and never fails from the caller's
 * point of view: a write Redis does not take is counted, logged once per
 * outage, and repaired by the next resync. @thread the loop's */
void ctl_store_put(ctl_store *s, const ctl_region *r, const ctl_score_row *row,
                   const fg_lock *lk);

/* True while Redis is connected. */
int ctl_store_up(const ctl_store *s);

/* True once the history was read back from Redis. */
int ctl_store_loaded(const ctl_store *s);

#endif
