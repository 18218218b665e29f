/* SPDX-License-Identifier: Apache-2.0 */
/* The audit record of the control service (value of fleet.audit, JSON, key
 * = request id): who did what to which region, why, what the region looked
 * like before and after, and how it ended. Every action and every denial
 * gets one. */
#ifndef CTL_AUDIT_H
#define CTL_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "fg_lock.h"
#include "fg_status.h"
#include "sc_policy.h"

/* Largest audit record rendered (an unlock-all over many regions is the
 * big one); beyond it the before/after maps are dropped and "truncated"
 * is true. */
#define CTL_AUDIT_MAX (4 * 1024 * 1024)

/* One audit entry. Strings are borrowed; NULL writes null. */
typedef struct ctl_audit {
    int64_t ts;             /* ms since the epoch */
    const char *request_id;
    const char *instance;   /* control service id */
    const char *actor;      /* "" or NULL when not authenticated */
    const char *role;       /* "none" when not authenticated */
    const char *action;     /* "lock", "unlock", "unlock_all", "list", ... */
    const char *target;     /* region code, "*" for every region */
    const char *reason;     /* the operator's reason */
    const char *outcome;    /* ok, dry_run, denied, invalid, failed, partial */
    const char *error;      /* error code when not ok */
    const char *detail;     /* human-readable detail of the error */
    const char *source;     /* peer address */
    int status;             /* HTTP status answered */
    int dry_run;
    const char *scope;      /* lock scope, or NULL */
    int64_t ttl_s;          /* -1: not part of the request */
    int64_t pin_s;          /* -1: not part of the request */
    int64_t estimated_devices; /* -1: unknown or not asked */
    /* Regions the action concerned: before[i] / after[i] are the records of
     * regions[i] (NULL: none). multi writes before and after as objects
     * keyed by region (unlock-all); otherwise the first entry's records
     * themselves (or null when n is 0). */
    size_t n;
    const char *const *regions;
    const fg_lock *const *before;
    const fg_lock *const *after;
    int multi;
    /* Optional (NULL: the key is left out): the policy a policy action set,
     * and, for an approval, the pending request it approved and who asked
     * for it. */
    const sc_policy *policy;
    const char *approves;
    const char *requested_by;
} ctl_audit;

/* Renders a as one JSON object into a malloc'd buffer (*out, caller frees;
 * *len its length, no NUL counted). FG_ENOMEM or FG_OK. @thread any */
fg_status ctl_audit_render(const ctl_audit *a, char **out, size_t *len);

/* "2026-11-27T20:55:01.037Z" for ms since the epoch. */
void ctl_iso_time(int64_t ms, char out[32]);

#endif
