/* SPDX-License-Identifier: Apache-2.0 */
/* The control API's request side, pure and unit-tested: which route a
 * method and path name, the region code in a path, the query of
 * GET /v1/regions, and the JSON bodies of lock and unlock requests,
 * validated into structs or refused with a machine-readable error
 * (code, field, detail). */
#ifndef CTL_REQ_H
#define CTL_REQ_H

#include <stddef.h>
#include <stdint.h>

#include "fg_http.h"
#include "fg_lock.h"
#include "fg_region.h"
#include "fg_status.h"
#include "sc_policy.h"
#include <yajl/yajl_gen.h>

typedef enum ctl_route {
    CTL_ROUTE_NONE = 0,     /* unknown path: 404 */
    CTL_ROUTE_LIST,         /* GET /v1/regions */
    CTL_ROUTE_REGION,       /* GET /v1/regions/{code} */
    CTL_ROUTE_LOCK,         /* POST /v1/regions/{code}/lock */
    CTL_ROUTE_UNLOCK,       /* POST /v1/regions/{code}/unlock */
    CTL_ROUTE_UNLOCK_ALL,   /* POST /v1/locks/unlock-all */
    CTL_ROUTE_APPROVE,      /* POST /v1/requests/{id}/approve */
    CTL_ROUTE_POLICY,       /* PUT /v1/regions/{code}/policy */
    CTL_ROUTE_POLICY_RESET, /* DELETE /v1/regions/{code}/policy */
    CTL_ROUTE_STREAM        /* GET /v1/stream (server-sent events) */
} ctl_route;

/* A refused request: code is a static string ("invalid_json",
 * "missing_field", ...), field names the body field or query key ("" when
 * the error is not about one), detail is human-readable. */
typedef struct ctl_req_error {
    const char *code;
    char field[32];
    char detail[160];
} ctl_req_error;

/* Longest {code} or {id} segment a route keeps (longer is still routed, and
 * then refused as invalid_region or unknown request); a request id
 * ("req-" + 16 hex digits) fits. */
#define CTL_SEGMENT_MAX 24

/* The route of path (len bytes, without the query). region receives the
 * {code} segment (or the {id} of an approve; NUL-terminated, cut at
 * CTL_SEGMENT_MAX bytes) for the routes that have one, "" otherwise. The
 * policy path is two routes: DELETE names the reset, any other method the
 * policy itself. *method_ok is 1 when meth is the route's method (GET and
 * HEAD for reads, GET only for the event stream, PUT for a policy, DELETE
 * for its reset, POST for other actions), 0 when the answer must be 405.
 * @thread any */
ctl_route ctl_route_match(fg_http_method meth, const char *path, size_t len,
                          char region[CTL_SEGMENT_MAX + 1], int *method_ok);

/* Static names: "list", "region", "lock", "unlock", "unlock_all",
 * "approve", "policy", "policy_reset" (the audit record's action),
 * "stream", "none". */
const char *ctl_route_str(ctl_route r);

/* The methods a route's path takes, for Allow: "GET, HEAD", "GET",
 * "PUT, DELETE" (a policy and its reset) or "POST". */
const char *ctl_route_allow(ctl_route r);

/* True when region is a valid code (fg_region_valid). */
int ctl_req_region_ok(const char *region);

/* True when id has the form of the ids this service hands out: "req-" and
 * 16 lower-case hex digits. The {id} of an approve is any bytes the HTTP
 * parser let through until it passes. @thread any */
int ctl_req_id_ok(const char *id);

/* True when the JSON text s (len bytes) has the escape \u0000, which yajl
 * decodes into a NUL that cuts the C string it builds (a key or value
 * would then be read as its prefix). Escapes only occur inside strings in
 * valid JSON; an escaped backslash before "u0000" is text. @thread any */
int ctl_req_json_has_nul(const char *s, size_t len);

typedef enum ctl_sort {
    CTL_SORT_REGION = 0, /* ascending code */
    CTL_SORT_SHARE,      /* grey share, highest first */
    CTL_SORT_DEVICES     /* devices, most first */
} ctl_sort;

/* State filter of the list: -1 = none, else an fg_lock_state, or
 * CTL_STATE_EXPIRED. */
#define CTL_STATE_EXPIRED 4

typedef struct ctl_list_query {
    ctl_sort sort;
    int state; /* -1 or a state as above */
} ctl_list_query;

/* Parses the query of GET /v1/regions (NULL or "" = defaults):
 * sort=share|devices|region and state=locked|unlocked|shadow|suppressed|
 * expired. An unknown key, a repeated key, a bad value or a '%' escape is
 * FG_EINVAL with code invalid_query. @thread any */
fg_status ctl_req_list_query(const char *query, ctl_list_query *q,
                             ctl_req_error *err);

/* Limits that validation needs, from the configuration. */
typedef struct ctl_req_limits {
    int64_t max_ttl_s;     /* ttl_s above it: out_of_range */
    int64_t default_ttl_s; /* ttl_s absent */
    int64_t max_pin_s;     /* pin_s above it: out_of_range */
} ctl_req_limits;

/* POST /v1/regions/{code}/lock. */
typedef struct ctl_lock_req {
    int64_t ttl_s;
    fg_lock_scope scope;
    char reason[FG_LOCK_REASON_MAX + 1];
    char message[FG_LOCK_MESSAGE_MAX + 1];
    int has_message; /* else the configured default */
    int dry_run;
} ctl_lock_req;

/* POST /v1/regions/{code}/unlock and /v1/locks/unlock-all. */
typedef struct ctl_unlock_req {
    char reason[FG_LOCK_REASON_MAX + 1];
    int64_t pin_s; /* 0 = no pin */
    int dry_run;   /* answer what would be unlocked, write nothing */
} ctl_unlock_req;

/* Parses a lock body: one JSON object (valid UTF-8, no duplicate keys, no
 * \u0000) with
 *   reason   string, required, 1-256 bytes, not blank, no control chars
 *   ttl_s    integer 1..max_ttl_s, default default_ttl_s
 *   scope    "grey" (default) or "all"
 *   message  string, at most 512 bytes, no control chars
 *   dry_run  boolean, default false
 * null counts as absent; any other key is unknown_field. body (len bytes,
 * need not be NUL-terminated) is borrowed. FG_OK or FG_EINVAL with *err
 * filled; FG_ENOMEM. @thread any */
fg_status ctl_req_parse_lock(const char *body, size_t len,
                             const ctl_req_limits *lim, ctl_lock_req *out,
                             ctl_req_error *err);

/* Parses an unlock body: reason (as above, required), pin_s (integer
 * 0..max_pin_s, default 0) and dry_run (boolean, default false). Same
 * rules otherwise. */
fg_status ctl_req_parse_unlock(const char *body, size_t len,
                               const ctl_req_limits *lim, ctl_unlock_req *out,
                               ctl_req_error *err);

/* DELETE /v1/regions/{code}/policy: a JSON object with reason (required,
 * as for a lock; null counts as absent) and nothing else. reason (cap
 * FG_LOCK_REASON_MAX + 1) receives it. FG_OK, FG_EINVAL with *err filled,
 * FG_ENOMEM. @thread any */
fg_status ctl_req_parse_reason(const char *body, size_t len, char *reason,
                               ctl_req_error *err);

/* PUT /v1/regions/{code}/policy: a JSON object with reason (required, as
 * for a lock) and any of the sc_policy keys mode, lock_at, unlock_at,
 * min_devices, for, ttl, cooldown, scope, message. Values are strings
 * ("5m", "auto") or numbers (durations in ms); each goes through
 * sc_policy_set over sc_policy_default, then the whole through
 * sc_policy_check against rails (borrowed). Absent keys keep their
 * defaults (an absent ttl is cut to rails->max_ttl_ms); null counts as
 * absent. Errors name the key in err->field:
 * invalid_value (the policy's own message in detail), wrong_type,
 * unknown_field, missing_field, invalid_json. reason (cap
 * FG_LOCK_REASON_MAX + 1) receives the reason. FG_OK, FG_EINVAL, FG_ENOMEM.
 * @thread any */
fg_status ctl_req_parse_policy(const char *body, size_t len,
                               const sc_rails *rails, sc_policy *out,
                               char *reason, ctl_req_error *err);

/* Writes p as the normalized JSON object the API answers and publishes:
 * mode, scope (strings), lock_at, unlock_at (numbers), min_devices, and
 * for, ttl, cooldown in ms (integers), message. @thread any */
void ctl_policy_json(yajl_gen g, const sc_policy *p);

#endif
