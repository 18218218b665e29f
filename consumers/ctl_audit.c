/* SPDX-License-Identifier: Apache-2.0 */
/* Rendering of audit records as JSON (yajl_gen). */
#include "ctl_audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_gen.h>

#include "ctl_state.h"

void ctl_iso_time(int64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    char day[24];
    gmtime_r(&s, &tm);
    strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%s.%03dZ", day, (int)(ms % 1000));
}

static void opt_int(yajl_gen g, const char *key, int64_t v)
{
    if (v < 0)
        ctl_json_null(g, key);
    else
        ctl_json_int(g, key, v);
}

static void records(yajl_gen g, const char *key, const ctl_audit *a,
                    const fg_lock *const *recs, int keep)
{
    ctl_json_key(g, key);
    if (!keep) {
        yajl_gen_null(g);
        return;
    }
    if (!a->multi) {
        ctl_lock_json(g, a->n && recs ? recs[0] : NULL);
        return;
    }
    yajl_gen_map_open(g);
    for (size_t i = 0; i < a->n; i++) {
        ctl_json_key(g, a->regions[i]);
        ctl_lock_json(g, recs ? recs[i] : NULL);
    }
    yajl_gen_map_close(g);
}

static fg_status render(const ctl_audit *a, int keep, char **out, size_t *len)
{
    char iso[32];
    const unsigned char *buf;
    size_t n;
    fg_status st = FG_ENOMEM;
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g)
        return FG_ENOMEM;
    yajl_gen_config(g, yajl_gen_validate_utf8, 1);
    ctl_iso_time(a->ts, iso);
    yajl_gen_map_open(g);
    ctl_json_int(g, "ts", a->ts);
    ctl_json_str(g, "time", iso);
    ctl_json_str(g, "request_id", a->request_id);
    ctl_json_str(g, "instance", a->instance);
    ctl_json_str(g, "actor", a->actor && a->actor[0] ? a->actor : NULL);
    ctl_json_str(g, "role", a->role);
    ctl_json_str(g, "action", a->action);
    ctl_json_str(g, "target", a->target);
    ctl_json_str(g, "reason", a->reason);
    ctl_json_str(g, "outcome", a->outcome);
    ctl_json_int(g, "status", a->status);
    ctl_json_str(g, "error", a->error);
    ctl_json_str(g, "detail", a->detail);
    ctl_json_str(g, "source", a->source);
    ctl_json_bool(g, "dry_run", a->dry_run);
    ctl_json_key(g, "params");
    yajl_gen_map_open(g);
    ctl_json_str(g, "scope", a->scope);
    opt_int(g, "ttl_s", a->ttl_s);
    opt_int(g, "pin_s", a->pin_s);
    yajl_gen_map_close(g);
    opt_int(g, "estimated_devices", a->estimated_devices);
    if (a->policy) {
        ctl_json_key(g, "policy");
        ctl_policy_json(g, a->policy);
    }
    if (a->approves)
        ctl_json_str(g, "approves", a->approves);
    if (a->requested_by)
        ctl_json_str(g, "requested_by", a->requested_by);
    if (a->multi) {
        ctl_json_key(g, "regions");
        yajl_gen_array_open(g);
        for (size_t i = 0; i < a->n; i++)
            yajl_gen_string(g, (const unsigned char *)a->regions[i],
                            strlen(a->regions[i]));
        yajl_gen_array_close(g);
    }
    records(g, "before", a, a->before, keep);
    records(g, "after", a, a->after, keep);
    ctl_json_bool(g, "truncated", !keep);
    yajl_gen_map_close(g);
    if (yajl_gen_get_buf(g, &buf, &n) != yajl_gen_status_ok)
        goto out;
    if (n > CTL_AUDIT_MAX) {
        st = FG_ETOOBIG;
        goto out;
    }
    *out = malloc(n + 1);
    if (!*out)
        goto out;
    memcpy(*out, buf, n);
    (*out)[n] = '\0';
    *len = n;
    st = FG_OK;
out:
    yajl_gen_free(g);
    return st;
}

fg_status ctl_audit_render(const ctl_audit *a, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    fg_status st = render(a, 1, out, len);
    if (st == FG_ETOOBIG)
        st = render(a, 0, out, len);
    return st == FG_ETOOBIG ? FG_ENOMEM : st;
}
