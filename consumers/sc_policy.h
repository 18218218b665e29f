/* SPDX-License-Identifier: Apache-2.0 */
/* The scorer's decision engine (issue 3): Wilson bounds of each region's grey
 * share, per-region lock policies with hysteresis, and the safety rails
 * (shadow mode, caps, operator pins and locks). A pure module: no I/O, no
 * clock reads (time is a parameter), so every rule is unit-testable. */
#ifndef SC_POLICY_H
#define SC_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fg_lock.h"
#include "fg_region.h"
#include "fg_status.h"

/* ---- scoring ----------------------------------------------------------- */

/* Wilson score interval of a proportion k/n with normal quantile z:
 *   centre = (p + z^2/2n) / (1 + z^2/n)
 *   half   = z * sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)
 * lo = centre - half, hi = centre + half, clamped to [0, 1]; k = 0 gives
 * lo = 0 exactly and k = n gives hi = 1 exactly. n <= 0 (no sample) gives
 * lo = 0, hi = 1. k is clamped into [0, n]. lo and hi must not be NULL.
 * @thread any */
void sc_wilson(int64_t k, int64_t n, double z, double *lo, double *hi);

/* ---- configuration ----------------------------------------------------- */

typedef enum sc_mode {
    SC_MODE_AUTO = 0,    /* decide and enforce (subject to the rails) */
    SC_MODE_MONITOR = 1, /* score; would-be locks are published as shadow */
    SC_MODE_NEVER = 2    /* score only; no automatic record at all */
} sc_mode;

/* Longest message template, bytes (the expanded text has the same cap). */
#define SC_TEMPLATE_MAX FG_LOCK_MESSAGE_MAX
/* Longest duration any key accepts (ten years), so now + ttl never
 * overflows. */
#define SC_DURATION_MAX (3650LL * 86400000LL)
/* Most regions one engine tracks; more is FG_ETOOBIG. */
#define SC_REGIONS_MAX 65536

/* The policy of one region. Plain data: copy it freely. Keys (for
 * sc_policy_set) and defaults (sc_policy_default):
 *   mode        auto | monitor | never                      auto
 *   lock_at     lock when the LOWER bound >= lock_at, in (0, 1]  0.6
 *   unlock_at   unlock when the UPPER bound <= unlock_at, in (0, lock_at)  0.3
 *   min_devices fewer devices never lock, never unlock; >= 1    50
 *   for         how long a condition must hold continuously     5m
 *   ttl         lifetime of a lock; > 0, <= the rails' max_ttl  24h
 *   cooldown    no new lock this long after an unlock           30m
 *   scope       grey | all                                      grey
 *   message     template of the text the device shows (below)
 * Durations are "250ms", "5s", "2m", "1h", "7d" or a bare number of ms,
 * 0..SC_DURATION_MAX.
 *
 * Message template: the text is copied as is, except for placeholders
 *   {region}   the region code ("CU")
 *   {until}    the lock's expiry, ISO-8601 UTC ("2024-06-10T08:00:00Z";
 *              times outside the years 1970..9999 are clamped to them)
 *   {share}    the grey share k/n as a whole percent with its sign ("72%")
 *   {devices}  devices counted in the region ("812")
 * and "{{", which stands for one "{". Any other "{" is an error, so a typo
 * such as "{untill}" stops start-up instead of reaching a phone. The template
 * must be valid UTF-8 without control characters, at most SC_TEMPLATE_MAX
 * bytes. An expansion longer than FG_LOCK_MESSAGE_MAX bytes is cut at a
 * character boundary. */
typedef struct sc_policy {
    sc_mode mode;
    double lock_at;
    double unlock_at;
    int64_t min_devices;
    int64_t for_ms;
    int64_t ttl_ms;
    int64_t cooldown_ms;
    fg_lock_scope scope;
    char message[SC_TEMPLATE_MAX + 1];
} sc_policy;

/* Global safety rails. Keys (for sc_rails_set) and defaults:
 *   enforce                  bool: off publishes every would-be lock as
 *                            shadow (gateways ignore shadow)        false
 *   max_auto_locked_regions  regions under an automatic lock at once, >= 0
 *                            (0: every lock is suppressed)         10
 *   max_auto_locked_devices  estimated devices under automatic locks, >= 0
 *                            (0: every lock is suppressed)         100000
 *   max_ttl                  ceiling of every automatic lock's lifetime,
 *                            1ms..SC_DURATION_MAX                  7d
 *   z                        normal quantile of the Wilson bounds, (0, 10]
 *                                                                   1.96
 * enforce defaults to off on purpose: a new deployment publishes shadow
 * records until an operator has seen them and turns enforcement on.
 * max_ttl is a rail rather than a policy key so that no per-region override
 * can escape it; lowering it at run time shortens later locks (ttl is
 * clamped), not those already published. */
typedef struct sc_rails {
    bool enforce;
    int64_t max_auto_locked_regions;
    int64_t max_auto_locked_devices;
    int64_t max_ttl_ms;
    double z;
} sc_rails;

/* Fill in the defaults listed above. @thread any */
void sc_policy_default(sc_policy *p);
void sc_rails_default(sc_rails *r);

/* Static names: "auto", "monitor", "never" ("unknown" otherwise). */
const char *sc_mode_str(sc_mode m);

/* Sets one key of p (bare name: "lock_at", not "scorer.lock_at") from text,
 * checking the value's own syntax and range. Cross-key rules are
 * sc_policy_check's. Returns FG_OK, or FG_EINVAL with errbuf "<key>:
 * <problem>" on an unknown key or a bad value (p is unchanged then). key,
 * value borrowed; errbuf may be NULL. @thread any */
fg_status sc_policy_set(sc_policy *p, const char *key, const char *value,
                        char *errbuf, size_t errlen);

/* Checks every field of p and the rules between keys: 0 < unlock_at <
 * lock_at <= 1, for/cooldown within 0..SC_DURATION_MAX, 0 < ttl <=
 * r->max_ttl_ms, min_devices >= 1, a valid mode, scope and template.
 * Returns FG_OK or FG_EINVAL with errbuf naming the key ("unlock_at: must be
 * below lock_at (0.6)"). Both borrowed; errbuf may be NULL. @thread any */
fg_status sc_policy_check(const sc_policy *p, const sc_rails *r, char *errbuf,
                          size_t errlen);

/* sc_policy_set / sc_policy_check for the rails. @thread any */
fg_status sc_rails_set(sc_rails *r, const char *key, const char *value,
                       char *errbuf, size_t errlen);
fg_status sc_rails_check(const sc_rails *r, char *errbuf, size_t errlen);

/* Expands template tmpl (validated as for the message key) into out, at most
 * cap - 1 bytes plus a NUL, cut at a UTF-8 character boundary. share is k/n
 * in [0, 1]. Returns FG_OK, or FG_EINVAL (errbuf "message: ...") when tmpl
 * is not a valid template; out then holds "". cap must be > 0. All strings
 * borrowed. @thread any */
fg_status sc_message_format(const char *tmpl, const char *region,
                            int64_t until_ms, double share, int64_t devices,
                            char *out, size_t cap, char *errbuf,
                            size_t errlen);

/* ---- the engine -------------------------------------------------------- */

/* One region's counts for one tick (the input). */
typedef struct sc_region_score {
    char region[FG_REGION_MAX + 1];
    int64_t devices; /* n: devices seen in the region's window, >= 0 */
    int64_t grey;    /* k: grey devices among them, 0..devices */
} sc_region_score;

/* One row for topic fleet.region-scores (the output beside decisions). */
typedef struct sc_score_row {
    char region[FG_REGION_MAX + 1];
    int64_t ts;        /* the tick's now_ms */
    int64_t devices;   /* n */
    int64_t grey;      /* k */
    double share;      /* k/n, 0 when n = 0 */
    double lo, hi;     /* Wilson bounds with the rails' z */
    sc_mode mode;      /* the region's policy mode */
    fg_lock_state state;   /* the region's record in force after this tick:
                            * locked / shadow / suppressed, or unlocked when
                            * there is none or it expired */
    fg_lock_source source; /* who wrote that record (auto when unlocked and
                            * no record) */
} sc_score_row;

/* A record to publish on fleet.region-locks, key = lk.region. lk.source is
 * auto, lk.actor "scorer", lk.id "<region>:<state>:<since>" (deterministic:
 * a retried publish carries the same id). has holds FG_LOCK_HAS_SCORE (the
 * bound that decided: lower for a lock, upper for an unlock) and
 * FG_LOCK_HAS_DEVICES, except on expiry. The fencing token is the caller's:
 * set lk.token and FG_LOCK_HAS_TOKEN before encoding if it uses one. */
typedef struct sc_decision {
    fg_lock lk;
} sc_decision;

/* Per-region state plus the policies and rails. Opaque. Not thread-safe:
 * one owner thread calls everything. */
typedef struct sc_engine sc_engine;

/* Creates an engine with default policy defaults (copied) and rails
 * (copied), both checked as by sc_policy_check / sc_rails_check. Returns
 * NULL with errbuf filled on a bad configuration or out of memory. */
sc_engine *sc_engine_new(const sc_policy *defaults, const sc_rails *rails,
                         char *errbuf, size_t errlen);

/* Frees e; NULL is a no-op. */
void sc_engine_free(sc_engine *e);

/* Replaces the rails (copied, checked) at run time, e.g. the control plane
 * switching enforcement. A policy whose ttl exceeds a lowered max_ttl is
 * clamped, not refused. Returns FG_OK or FG_EINVAL (rails unchanged). */
fg_status sc_engine_set_rails(sc_engine *e, const sc_rails *r, char *errbuf,
                              size_t errlen);

/* Sets the policy override of exactly this region (copied, checked against
 * the current rails); p == NULL removes the override, so the defaults
 * apply. A subdivision does not inherit its country's override. A changed
 * policy applies to the next decision; records already published stay.
 * Returns FG_OK, FG_EINVAL (bad region or policy; errbuf says which),
 * FG_ENOMEM or FG_ETOOBIG (SC_REGIONS_MAX reached). */
fg_status sc_engine_set_policy(sc_engine *e, const char *region,
                               const sc_policy *p, char *errbuf,
                               size_t errlen);

/* The policy in force for region (override or defaults). Borrowed: valid
 * until the next set_policy / free. Never NULL. */
const sc_policy *sc_engine_policy(const sc_engine *e, const char *region);

/* Feeds one record read back from fleet.region-locks (any source: ours,
 * another scorer's, an operator's). lk is copied. Call it for the whole
 * topic before the first tick, then for every record as it arrives.
 *  - It becomes the region's known record. A record with the id of our
 *    pending decision confirms it; an ops record also ends the wait for a
 *    pending decision (the operator's word is newer than our guess).
 *  - An unlocked record starts the cooldown at its since (an operator lifting
 *    a lock also holds automation off for the cooldown).
 *  - pin_until of the current record blocks every automatic record for the
 *    region until that time.
 * Returns FG_OK, FG_EINVAL (region not a valid code), FG_ENOMEM or
 * FG_ETOOBIG. */
fg_status sc_engine_observe_lock(sc_engine *e, const fg_lock *lk);

/* Feeds a tombstone (null value) for region: the region has no record, and
 * no pending decision. Same returns as sc_engine_observe_lock. */
fg_status sc_engine_observe_tombstone(sc_engine *e, const char *region);

/* Tells the engine a decision could not be published: the pending record of
 * region with this id is dropped (the cooldown it started too), so the next
 * tick decides again (with a new id if the time moved on). Returns FG_OK,
 * or FG_ENOTFOUND when no such decision is pending. */
fg_status sc_engine_publish_failed(sc_engine *e, const char *region,
                                   const char *id);

/* The record in force for region as the engine sees it: its pending
 * decision, else the last observed record; NULL when none. Borrowed: valid
 * until the next call that changes e. */
const fg_lock *sc_engine_record(const sc_engine *e, const char *region);

/* Runs one tick at now_ms (milliseconds since the epoch; should not go
 * backwards, a condition timer that would is restarted).
 *  scores: this tick's counts, n of them, at most one per region (borrowed).
 *          A region tracked by the engine but absent here counts as "no
 *          data": both its condition timers restart, expiry still applies.
 *  rows:   NULL, or n rows filled for fleet.region-scores in scores' order.
 *  out:    decisions to publish, at most cap; *nout gets their count.
 * Each published decision is pending until observed (or publish_failed), so
 * a later tick never repeats it. Rules, per region:
 *  - Nothing at all when the region's mode is never, while a pin holds
 *    (now < pin_until), or while an ops lock is in force (now < until): the
 *    engine never unlocks, replaces or expires an operator's lock. An
 *    expired ops lock counts as no lock; its expiry is not republished.
 *  - An automatic locked / shadow / suppressed record whose until has come
 *    (now >= until) is followed by an unlocked record, reason "expired",
 *    since = until.
 *  - Lock condition: devices >= min_devices and lo >= lock_at. Unlock
 *    condition: devices >= min_devices and hi <= unlock_at. Each has a timer
 *    that starts at the first tick where it holds and restarts at any tick
 *    where it does not; it is sustained when now - start >= for. Between
 *    the thresholds, and with too few devices, nothing changes (too few
 *    devices restart both timers, so they never unlock by themselves:
 *    expiry still applies).
 *  - A sustained unlock condition ends an automatic locked, shadow or
 *    suppressed record with an unlocked one (since = now). Releasing is
 *    always allowed: enforce off or monitor mode do not keep a phone locked.
 *  - A sustained lock condition, with no automatic record in force and
 *    now >= last unlock + cooldown, places a record until now + min(ttl,
 *    max_ttl): shadow when enforce is off or the mode is monitor; else
 *    locked, unless one more auto-locked region or its estimated devices
 *    (devices for scope all, grey devices for scope grey) would exceed a
 *    cap: then suppressed. Auto locks in force (observed or decided,
 *    not expired) count toward the caps; for a locked region the estimate
 *    is from its latest score, else the record's devices. A shadow or
 *    suppressed record is replaced by locked (or suppressed) once the
 *    condition is still sustained and the rails and caps allow it.
 *  - Releases are decided before locks, so an unlock frees capacity in the
 *    same tick; competing locks are taken highest lower bound first.
 * Returns FG_OK; FG_AGAIN when out was too small (the decisions left out are
 * not recorded and come next tick; *nout = cap); FG_EINVAL when a score is
 * bad (invalid region, negative count, grey > devices, a region twice) —
 * nothing is decided then; FG_ENOMEM / FG_ETOOBIG when a new region cannot
 * be tracked. */
fg_status sc_engine_tick(sc_engine *e, int64_t now_ms,
                         const sc_region_score *scores, size_t n,
                         sc_score_row *rows, sc_decision *out, size_t cap,
                         size_t *nout);

#endif
