/* SPDX-License-Identifier: Apache-2.0 */
/* The scorer's data in Redis (docs/design-scorer.md): windowed per-region
 * counters applied atomically with a per-(region, partition) offset fence,
 * the registry of regions a partition has fenced, resume offsets, the set of
 * active regions, the evaluator lease and the decision mirror. Every key of
 * a region carries the hash tag {REGION}; a script only touches one slot. */
#ifndef SC_STORE_H
#define SC_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "fg_redis.h"
#include "sc_agg.h"

typedef struct sc_store sc_store;

/* r is borrowed. topic names the check-in topic (part of partition keys).
 * NULL when out of memory. @thread the loop's */
sc_store *sc_store_new(fg_redis *r, const char *topic, int64_t bucket_ms,
                       int64_t window_ms);
void sc_store_free(sc_store *s);

/* True when Redis is connected (commands are accepted). */
int sc_store_up(const sc_store *s);

/* Result callbacks: ok is 1 when Redis answered as expected. */
typedef void (*sc_store_cb)(void *ud, int ok, const char *err);

/* Loads what a newly assigned partition needs: the regions it fenced and
 * each fence, and its resume offset. cb gets ok, the fences (region, fence
 * pairs, n of them, borrowed for the call) and the resume offset (-1 when
 * none). */
typedef void (*sc_store_load_cb)(void *ud, int ok, const char *const *regions,
                                 const int64_t *fences, size_t n,
                                 int64_t resume);
fg_status sc_store_load_partition(sc_store *s, int32_t partition,
                                  sc_store_load_cb cb, void *ud);

/* Adds regions to the partition's registry before their first apply (so a
 * fence is never written for a region the registry lacks). */
fg_status sc_store_register(sc_store *s, int32_t partition,
                            const char *const *regions, size_t n,
                            sc_store_cb cb, void *ud);

/* Applies region index i of agg for partition: counters and fence move from
 * expected to new_fence atomically, or nothing happens. cb's ok is 1 when
 * applied; 0 with err "fence" when the fence had moved (a zombie). */
fg_status sc_store_apply(sc_store *s, const sc_agg *agg, size_t i,
                         int32_t partition, int64_t expected,
                         int64_t new_fence, sc_store_cb cb, void *ud);

/* Records the partition's resume point and marks regions (n of them)
 * active at now_ms. Fire and forget: losing it only means a longer replay,
 * which the fences make harmless. */
fg_status sc_store_checkpoint(sc_store *s, int32_t partition, int64_t offset,
                              const char *const *regions, size_t n,
                              int64_t now_ms);

/* Regions active within the window, for the evaluator. */
typedef void (*sc_store_regions_cb)(void *ud, int ok,
                                    const char *const *regions, size_t n);
fg_status sc_store_active_regions(sc_store *s, int64_t now_ms,
                                  sc_store_regions_cb cb, void *ud);

/* A region's window at now_ms: check-ins, devices, grey devices. */
typedef void (*sc_store_window_cb)(void *ud, int ok, const char *region,
                                   int64_t checkins, int64_t devices,
                                   int64_t grey);
fg_status sc_store_read_window(sc_store *s, const char *region, int64_t now_ms,
                               sc_store_window_cb cb, void *ud);

/* Takes or renews the evaluator lease for owner for ttl_ms. cb gets the
 * fencing token (> 0) when owner holds the lease, 0 when someone else does. */
typedef void (*sc_store_lease_cb)(void *ud, int ok, int64_t token);
fg_status sc_store_lease(sc_store *s, const char *owner, int64_t ttl_ms,
                         sc_store_lease_cb cb, void *ud);

/* Mirrors a decision (msgpack lock record) for queries, refused when token
 * is below the region's stored token (a stale evaluator). cb's ok is 0 with
 * err "stale" then. */
fg_status sc_store_mirror(sc_store *s, const char *region, uint64_t token,
                          const char *record, size_t len, sc_store_cb cb,
                          void *ud);

#endif
