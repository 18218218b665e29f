/* SPDX-License-Identifier: Apache-2.0 */
/* Region lock records (the value of topic fleet.region-locks, key = region)
 * and the in-memory lock table that turns them into a device's directive.
 * Schema in docs/protocol.md. */
#ifndef FG_LOCK_H
#define FG_LOCK_H

#include <stddef.h>
#include <stdint.h>

#include "fg_checkin.h"
#include "fg_region.h"
#include "fg_status.h"

#define FG_LOCK_REASON_MAX 256  /* bytes */
#define FG_LOCK_MESSAGE_MAX 512 /* bytes */
#define FG_LOCK_ACTOR_MAX 128   /* bytes */
#define FG_LOCK_ID_MAX 64       /* bytes */
/* Upper bound of one encoded lock record. */
#define FG_LOCK_RECORD_MAX 1400
/* Largest input fg_lock_decode accepts (records from other writers may carry
 * unknown keys); longer inputs are refused with FG_ETOOBIG. */
#define FG_LOCK_INPUT_MAX 65536

typedef enum fg_lock_state {
    FG_LOCK_UNLOCKED = 0,
    FG_LOCK_LOCKED = 1,
    FG_LOCK_SHADOW = 2,     /* would-be lock published in shadow mode */
    FG_LOCK_SUPPRESSED = 3  /* lock refused by a safety cap */
} fg_lock_state;

typedef enum fg_lock_scope {
    FG_SCOPE_GREY = 0, /* only grey devices (see fg_region_is_grey) */
    FG_SCOPE_ALL = 1
} fg_lock_scope;

typedef enum fg_lock_source { FG_SOURCE_AUTO = 0, FG_SOURCE_OPS = 1 } fg_lock_source;

enum {
    FG_LOCK_HAS_PIN = 1u << 0,     /* pin_until present */
    FG_LOCK_HAS_SCORE = 1u << 1,   /* score present */
    FG_LOCK_HAS_DEVICES = 1u << 2, /* devices present */
    FG_LOCK_HAS_TOKEN = 1u << 3    /* fencing token present */
};

/* One lock record. Strings are NUL-terminated valid UTF-8. */
typedef struct fg_lock {
    char region[FG_REGION_MAX + 1];
    fg_lock_state state;
    fg_lock_scope scope;
    fg_lock_source source;
    char reason[FG_LOCK_REASON_MAX + 1];
    char message[FG_LOCK_MESSAGE_MAX + 1];
    char actor[FG_LOCK_ACTOR_MAX + 1];
    char id[FG_LOCK_ID_MAX + 1];
    int64_t since;     /* ms */
    int64_t until;     /* ms; required when state is locked */
    int64_t pin_until; /* ms; no automatic lock before it */
    double score;      /* scorer's grey share bound at decision time */
    int64_t devices;   /* estimated devices in the region */
    uint64_t token;    /* evaluator fencing token */
    uint32_t has;      /* FG_LOCK_HAS_* */
} fg_lock;

/* Static names: "unlocked", "locked", "shadow", "suppressed"; "all", "grey";
 * "auto", "ops". */
const char *fg_lock_state_str(fg_lock_state s);
const char *fg_lock_scope_str(fg_lock_scope s);
const char *fg_lock_source_str(fg_lock_source s);

/* Decodes and validates a msgpack lock record. Required: region (valid code),
 * state, scope, source, reason, message, since, id, and until when state is
 * locked. Unknown keys are ignored. On FG_EINVAL errbuf names the field.
 * buf is borrowed. @thread any
 *
 * Details: buf must hold exactly one msgpack value (no trailing bytes, at
 * most 16 levels deep), a map. Strings must be msgpack str, valid UTF-8
 * without NUL, within the FG_LOCK_*_MAX byte caps (longer is FG_EINVAL, never
 * truncated). since, until, pin_until and devices are non-negative ints;
 * token is an unsigned int; score is a finite float or an int. A known key
 * that appears twice is FG_EINVAL. Absent optional fields are 0 / "" with
 * their has bit clear. errbuf reads "<field>: <problem>", e.g.
 * "reason: too long (257 bytes, max 256)" or "until: missing ...".
 * Returns FG_OK, FG_EINVAL, FG_ETOOBIG (len > FG_LOCK_INPUT_MAX) or
 * FG_ENOMEM. errbuf may be NULL. */
fg_status fg_lock_decode(const char *buf, size_t len, fg_lock *lk,
                         char *errbuf, size_t errlen);

/* Encodes lk as a msgpack map into out (at most cap bytes). Returns the
 * length, or 0 when cap is too small (never with cap >= FG_LOCK_RECORD_MAX).
 * Fields whose has bit is clear are omitted; actor is always written (maybe
 * ""); until is written when state is locked or until != 0, so
 * fg_lock_decode(fg_lock_encode(lk)) reproduces every field of a decoded lk.
 * @thread any */
size_t fg_lock_encode(const fg_lock *lk, char *out, size_t cap);

/* A region -> lock map. Not thread-safe: one writer, or readers of a table
 * nobody writes (the gateway gives each worker its own clone). Opaque. */
typedef struct fg_lock_table fg_lock_table;

/* Returns NULL when out of memory. */
fg_lock_table *fg_lock_table_new(void);
/* NULL is a no-op. */
void fg_lock_table_free(fg_lock_table *t);

/* Inserts or replaces the record of region (NUL-terminated, borrowed); lk is
 * copied. lk == NULL removes the region (a compaction tombstone).
 * Returns FG_OK or FG_ENOMEM, or FG_EINVAL when region is empty or longer
 * than FG_REGION_MAX (the table is unchanged then). */
fg_status fg_lock_table_put(fg_lock_table *t, const char *region,
                            const fg_lock *lk);

/* The record stored for exactly this region, or NULL. Borrowed: valid until
 * the next put/free. */
const fg_lock *fg_lock_table_get(const fg_lock_table *t, const char *region);

/* Number of regions with a record (of any state). */
size_t fg_lock_table_size(const fg_lock_table *t);

/* Deep copy; NULL when out of memory. */
fg_lock_table *fg_lock_table_clone(const fg_lock_table *t);

/* Calls cb for every record, in no particular order. */
void fg_lock_table_foreach(const fg_lock_table *t,
                           void (*cb)(void *ud, const fg_lock *lk), void *ud);

/* The directive for a device: the lock that applies to ci at now_ms, or NULL
 * when the device is ok. A record applies when its state is locked, it has
 * not expired (now_ms < until), and its scope is all, or grey and the device
 * is grey (fg_region_is_grey with m). The record of the exact region is
 * checked first, then the record of its country ("UA" covers "UA-43").
 * The country record is consulted whenever the exact record does not apply
 * (absent, not locked, expired, or grey-scoped and the device not grey): a
 * subdivision record that is unlocked does not lift a lock of its country.
 * Shadow, suppressed and unlocked records never apply. Borrowed result.
 * No allocation; m may be NULL.
 * @thread any, on a table nobody writes */
const fg_lock *fg_lock_table_match(const fg_lock_table *t,
                                   const fg_market_map *m,
                                   const fg_checkin *ci, int64_t now_ms);

#endif
