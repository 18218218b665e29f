/* SPDX-License-Identifier: Apache-2.0 */
/* The control service's picture of every region: the newest score row
 * (fleet.region-scores, as consumers/sc_eval.c publishes it, msgpack or
 * JSON) and the lock record in force (fleet.region-locks), kept in a table
 * sorted by region code, with the JSON views the API answers. Not
 * thread-safe: one loop thread owns it. */
#ifndef CTL_STATE_H
#define CTL_STATE_H

#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_gen.h>

#include "ctl_req.h"
#include "fg_lock.h"
#include "fg_region.h"
#include "fg_status.h"

/* Most regions the table holds; records of further regions are refused. */
#define CTL_STATE_MAX_REGIONS 20000
/* Largest score row decoded. */
#define CTL_SCORE_INPUT_MAX 4096

/* One score row. */
typedef struct ctl_score {
    char region[FG_REGION_MAX + 1];
    int64_t ts;      /* ms */
    int64_t devices; /* unique devices in the window */
    int64_t grey;    /* unique grey devices */
    double share, lo, hi;
    char mode[16];   /* the region's policy mode: auto, monitor, never */
} ctl_score;

typedef struct ctl_region {
    char region[FG_REGION_MAX + 1];
    int has_score;
    ctl_score score;
    int has_lock;
    fg_lock lock;
} ctl_region;

typedef struct ctl_state ctl_state;

/* Decodes a score row: a msgpack map, or a JSON object when the first byte
 * is '{'. Required: region (valid code), ts, devices, grey (non-negative
 * integers), share, lo, hi (numbers); mode optional; unknown keys ignored.
 * FG_EINVAL with errbuf, FG_ETOOBIG over CTL_SCORE_INPUT_MAX. @thread any */
fg_status ctl_score_decode(const char *buf, size_t len, ctl_score *out,
                           char *errbuf, size_t errlen);

/* NULL when out of memory. */
ctl_state *ctl_state_new(void);
void ctl_state_free(ctl_state *st);

/* Stores the lock record of region (lk copied; NULL = tombstone: the
 * region has no record any more). FG_ETOOBIG when the table is full. */
fg_status ctl_state_put_lock(ctl_state *st, const char *region,
                             const fg_lock *lk);

/* Stores s when it is not older than the row held for its region. */
fg_status ctl_state_put_score(ctl_state *st, const ctl_score *s);

/* The region's entry or NULL. Borrowed until the next put. */
const ctl_region *ctl_state_get(const ctl_state *st, const char *region);

/* Number of regions. */
size_t ctl_state_count(const ctl_state *st);

/* The entry at index i (0..count-1), in code order. */
const ctl_region *ctl_state_at(const ctl_state *st, size_t i);

/* The state a device would see now: an fg_lock_state, or
 * CTL_STATE_EXPIRED for a locked record past its until; FG_LOCK_UNLOCKED
 * without a record. */
int ctl_region_state(const ctl_region *r, int64_t now_ms);

/* Static name of a ctl_region_state value ("locked", "expired", ...). */
const char *ctl_state_name(int state);

/* Devices a lock of scope would reach, from the newest score: grey devices
 * for grey, all devices for all; -1 when no score is known. */
int64_t ctl_region_estimate(const ctl_region *r, fg_lock_scope scope);

/* Fills out (capacity cap) with the entries matching q at now_ms, sorted as
 * q says; returns how many. @thread the owner's */
size_t ctl_state_list(const ctl_state *st, const ctl_list_query *q,
                      int64_t now_ms, const ctl_region **out, size_t cap);

/* Writes the region as a JSON object: region, devices, grey, share, lo, hi,
 * score_ts, mode, state, scope, source, reason, message, actor, since,
 * until, pin_until, lock_id (null when unknown). @thread the owner's */
void ctl_region_json(yajl_gen g, const ctl_region *r, int64_t now_ms);

/* Writes a lock record as a JSON object (null for lk == NULL). */
void ctl_lock_json(yajl_gen g, const fg_lock *lk);

/* yajl_gen helpers: a key then a value. */
void ctl_json_str(yajl_gen g, const char *key, const char *val);
void ctl_json_int(yajl_gen g, const char *key, int64_t val);
void ctl_json_num(yajl_gen g, const char *key, double val);
void ctl_json_bool(yajl_gen g, const char *key, int val);
void ctl_json_null(yajl_gen g, const char *key);
void ctl_json_key(yajl_gen g, const char *key);

#endif
