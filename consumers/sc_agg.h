/* SPDX-License-Identifier: Apache-2.0 */
/* Local aggregation of one poll batch of one partition, before Redis sees
 * it: check-ins are grouped per region and time bucket, with the distinct
 * devices and grey devices of each bucket, so Redis gets one script call per
 * region touched instead of one write per check-in. Also the per-partition
 * (device_id -> highest seq) memory that makes a repeated (device_id, seq)
 * count once. Pure logic: no I/O. */
#ifndef SC_AGG_H
#define SC_AGG_H

#include <stddef.h>
#include <stdint.h>

#include "fg_checkin.h"
#include "fg_region.h"
#include "fg_status.h"

/* What sc_agg_add did with a check-in. */
typedef enum sc_add {
    SC_ADD_COUNTED = 0,  /* counted in its region's bucket */
    SC_ADD_DUPLICATE,    /* (device_id, seq) seen before: devices only */
    SC_ADD_TOO_OLD,      /* recv_ts before the window: ignored */
    SC_ADD_FENCED        /* offset already applied to this region: ignored */
} sc_add;

/* One bucket of one region in a batch. Device ids are distinct within the
 * bucket; grey ones are also listed in devices. Strings are borrowed from
 * the aggregate and valid until its next reset. */
typedef struct sc_bucket {
    int64_t bucket;     /* recv_ts / bucket_ms */
    uint64_t checkins;  /* counted check-ins */
    const char **devices;
    size_t ndevices;
    const char **grey;
    size_t ngrey;
} sc_bucket;

typedef struct sc_agg sc_agg;

/* bucket_ms and window_ms as configured; m (borrowed, may be NULL) decides
 * who is grey. NULL when out of memory. */
sc_agg *sc_agg_new(int64_t bucket_ms, int64_t window_ms,
                   const fg_market_map *m);
/* NULL is a no-op. */
void sc_agg_free(sc_agg *a);

/* Forgets the batch's counts (not the seq memory nor its journal). */
void sc_agg_reset(sc_agg *a);

/* Forgets the seq memory too (the partition was revoked). */
void sc_agg_forget(sc_agg *a);

/* Adds a decoded check-in read at offset. fence is the highest offset
 * already applied to the check-in's region for this partition (-1 for none):
 * a check-in at or below it was counted before and is skipped, but its
 * (device_id, seq) is remembered (not journaled: it is settled), which is
 * how the memory is rebuilt after an assignment by re-reading the window
 * that precedes the resume point. now_ms bounds
 * the window. Returns what happened; FG_ENOMEM is reported through *st. */
sc_add sc_agg_add(sc_agg *a, int64_t offset, const fg_checkin *ci,
                  int64_t recv_ts, int64_t fence, int64_t now_ms,
                  fg_status *st);

/* Regions touched by the batch, and for each its buckets. index runs from
 * 0 to sc_agg_regions(a) - 1. */
size_t sc_agg_regions(const sc_agg *a);
const char *sc_agg_region(const sc_agg *a, size_t index);
size_t sc_agg_buckets(const sc_agg *a, size_t index,
                      const sc_bucket **buckets);
/* Highest offset added to that region in this batch (-1 when none). */
int64_t sc_agg_region_last_offset(const sc_agg *a, size_t index);

/* The seq memory is transactional, so that a batch Redis did not take can
 * be replayed from Kafka and counted again:
 *  - sc_agg_seal: the batch was sent; its seq updates wait for the answer
 *    (one sealed batch at a time; the next batch can fill meanwhile).
 *  - sc_agg_commit: Redis took the sealed batch; its updates stay.
 *  - sc_agg_rollback: undo the updates of the sealed and the filling batch
 *    (newest first) and drop the filling batch: the caller rewinds the
 *    partition to its last checkpoint. */
void sc_agg_seal(sc_agg *a);
void sc_agg_commit(sc_agg *a);
void sc_agg_rollback(sc_agg *a);

/* Drops seq memory of devices not seen since before now_ms - window. Does
 * nothing while a batch is sealed or the filling batch has updates. */
void sc_agg_expire(sc_agg *a, int64_t now_ms);

/* Number of devices in the seq memory. */
size_t sc_agg_seq_entries(const sc_agg *a);

#endif
