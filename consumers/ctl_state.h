/* SPDX-License-Identifier: Apache-2.0 */
/* The control service's picture of every region: the newest score row
 * (fleet.region-scores, as consumers/sc_eval.c publishes it, msgpack or
 * JSON) and the lock record in force (fleet.region-locks), kept in a table
 * sorted by region code, with the JSON views the API answers; and each
 * region's recent history (GET /v1/regions/{code}). Not thread-safe: one
 * loop thread owns it.
 *
 * History: per region, the newest K score rows in ts order and the newest L
 * lock records in since order (K, L from ctl_history_limits), allocated on
 * the region's first row. Memory is bounded twice: at most
 * CTL_STATE_MAX_REGIONS regions have a history (an index of 16 bytes
 * each), and all history together is charged against limits.max_bytes
 * (default 64 MiB): a region costs about 48 B x K once it has any history,
 * plus 96 B x L once it has a lock record, plus each record's encoding
 * (typically 150-400 B, at most FG_LOCK_RECORD_MAX). What would not fit is
 * refused (a lock record first displaces the region's own oldest ones) and
 * counted in ctl_history_stats.refused. The region table itself is at most
 * CTL_STATE_MAX_REGIONS x sizeof(ctl_region) (about 22 MB). */
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
 * is '{'. Required: region (valid code), ts, devices, grey (integers
 * 0..9e15), share, lo, hi (finite non-negative numbers); mode optional (1-15
 * visible ASCII bytes, any other value is ignored); unknown keys ignored.
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

/* Writes the region detail of GET /v1/regions/{code}: the object
 * ctl_region_json writes, with one more member, "history":
 * {"scores":[{"ts","devices","grey","share","lo","hi"}...],
 *  "locks":[<ctl_lock_json object>...]}, both oldest first (empty arrays
 * when the region has no history). @thread the owner's */
void ctl_region_detail_json(yajl_gen g, const ctl_state *st,
                            const ctl_region *r, int64_t now_ms);

/* Writes a lock record as a JSON object (null for lk == NULL). */
void ctl_lock_json(yajl_gen g, const fg_lock *lk);

/* ---- history ---- */

#define CTL_HISTORY_SCORES_DEFAULT 60
#define CTL_HISTORY_LOCKS_DEFAULT 16
#define CTL_HISTORY_BYTES_DEFAULT ((size_t)64 * 1024 * 1024)
#define CTL_HISTORY_SCORES_MAX 1000
#define CTL_HISTORY_LOCKS_MAX 256

/* One score row of a region's history. */
typedef struct ctl_score_row {
    int64_t ts, devices, grey;
    double share, lo, hi;
} ctl_score_row;

typedef struct ctl_history_limits {
    size_t scores;    /* K: rows kept per region, 1..CTL_HISTORY_SCORES_MAX */
    size_t locks;     /* L: records kept per region, 1..CTL_HISTORY_LOCKS_MAX */
    size_t max_bytes; /* all regions' history together, > 0 */
} ctl_history_limits;

typedef struct ctl_history_stats {
    size_t regions;   /* regions with a history */
    size_t bytes;     /* charged against max_bytes */
    uint64_t refused; /* rows and records refused for memory (or a full
                       * history index) since start */
} ctl_history_stats;

/* One region's history (opaque; read it with the accessors below). */
typedef struct ctl_history ctl_history;

/* Sets the history bounds (the defaults above until called). Only before
 * the first history row: FG_EINVAL afterwards or for values out of range.
 * lim is copied. */
fg_status ctl_state_set_history(ctl_state *st, const ctl_history_limits *lim);

/* Which puts append to the history:
 *   ctl_state_put_score: a row newer (ts) than the newest row held;
 *   ctl_state_put_lock: a record whose (id, state, since) is not in the
 *   history yet, placed in since order (a replayed or read-your-writes copy
 *   of a record is not a second entry); tombstones never.
 * When the history is full the oldest entry goes.
 *
 * Called after every put that changed a region (r borrowed for the call):
 * row is the score row and lk the lock record when the put appended them to
 * the history, both NULL otherwise (a tombstone, a row with the same ts, a
 * lock record already in the history). Not called by
 * ctl_state_history_add_*. It must not put into st. */
typedef void (*ctl_state_change_cb)(void *ud, const ctl_region *r,
                                    const ctl_score_row *row,
                                    const fg_lock *lk);

/* Sets (or with cb NULL clears) the change callback. */
void ctl_state_on_change(ctl_state *st, ctl_state_change_cb cb, void *ud);

/* Adds a row or a record read back from elsewhere (Redis) to region's
 * history, in order (a row older than every row held still goes in while
 * the history has room), without touching the region table and without
 * the change callback. Duplicates (same ts; same id, state, since) are
 * skipped. Returns FG_OK (also for skipped ones), FG_EINVAL for a bad
 * region code, FG_ETOOBIG when refused for memory or a full index,
 * FG_ENOMEM. */
fg_status ctl_state_history_add_score(ctl_state *st, const char *region,
                                      const ctl_score_row *row);
fg_status ctl_state_history_add_lock(ctl_state *st, const char *region,
                                     const fg_lock *lk);

/* The region's history or NULL. Borrowed until the next put or add. */
const ctl_history *ctl_state_history(const ctl_state *st, const char *region);

/* Score rows held; row i, 0 the oldest (NULL when i is out of range). */
size_t ctl_history_scores(const ctl_history *h);
const ctl_score_row *ctl_history_score(const ctl_history *h, size_t i);

/* Lock records held; record i, 0 the oldest, as fg_lock_encode wrote it
 * (msgpack, *len bytes; its since in *since unless since is NULL; NULL
 * when i is out of range). */
size_t ctl_history_locks(const ctl_history *h);
const char *ctl_history_lock(const ctl_history *h, size_t i, size_t *len,
                             int64_t *since);

void ctl_state_history_stats(const ctl_state *st, ctl_history_stats *out);

/* Writes row as one JSON object: "region" (left out when region is NULL,
 * as under a region's own history), "ts", "devices", "grey", "share",
 * "lo", "hi"; with a region, ctl_score_decode reads it back. */
void ctl_score_row_json(yajl_gen g, const char *region,
                        const ctl_score_row *row);

/* yajl_gen helpers: a key then a value. */
void ctl_json_str(yajl_gen g, const char *key, const char *val);
void ctl_json_int(yajl_gen g, const char *key, int64_t val);
void ctl_json_num(yajl_gen g, const char *key, double val);
void ctl_json_bool(yajl_gen g, const char *key, int val);
void ctl_json_null(yajl_gen g, const char *key);
void ctl_json_key(yajl_gen g, const char *key);

#endif
