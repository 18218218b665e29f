/* SPDX-License-Identifier: Apache-2.0 */
/* Control API: routes, authentication, actions that wait for the broker,
 * audit records, and the two topic readers that feed the region table. */
#include "ctl_api.h"

#include <event2/event.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>

#include "ctl_audit.h"
#include "ctl_auth.h"
#include "ctl_req.h"
#include "ctl_state.h"
#include "ctl_stream.h"
#include "ctl_store.h"
#include "ctl_web.h"
#include "fg_region.h"
#include "fg_http.h"
#include "fg_kafka.h"
#include "fg_lockfeed.h"
#include "fg_log.h"

#define REQ_ID_MAX 24 /* "req-" + 16 hex digits */
/* Pending two-person requests kept at once (expired and approved ones are
 * reused first); more gets 503. */
#define CTL_PENDING_MAX 64

/* A lock over the blast radius, waiting for a second admin. */
typedef struct ctl_pending {
    int used;     /* the slot holds a request */
    int approved; /* already approved (or being executed) */
    char id[REQ_ID_MAX + 1];
    char region[FG_REGION_MAX + 1];
    char actor[FG_LOCK_ACTOR_MAX + 1];
    int64_t created, expires; /* ms */
    int64_t estimate;
    ctl_lock_req lr;
} ctl_pending;

/* One region of a dry-run unlock, as it was when the request came: what
 * the answer lists next to the record that would be written. */
typedef struct ctl_held {
    int state;       /* ctl_region_state */
    int64_t devices; /* held back by a lock in force (grey or all, as its
                      * scope says); 0 without one; -1 unknown (no score) */
} ctl_held;

typedef struct ctl_action ctl_action;

struct ctl_api {
    struct event_base *base;
    const ctl_config *cfg;
    fg_metrics *m;
    ctl_state *state;
    fg_http_server *srv;
    fg_http_conn_budget budget;
    int port;
    rd_kafka_t *p;
    rd_kafka_topic_t *locks_rkt, *audit_rkt, *policies_rkt;
    ctl_pending pending[CTL_PENDING_MAX];
    rd_kafka_queue_t *pq;
    fg_kafka_pump *ppump;
    fg_lockfeed *feed;
    rd_kafka_t *sc;          /* score reader (its own consumer group) */
    rd_kafka_queue_t *scq;
    fg_kafka_pump *scpump;
    ctl_action *actions;     /* waiting on the broker */
    size_t nactions;
    fg_counter *c_denied_401, *c_denied_403, *c_invalid, *c_audit_fail,
        *c_records_fail, *c_rows, *c_rows_bad;
    fg_gauge *g_regions;
    ctl_stream *stream;          /* GET /v1/stream clients and event ring */
    rd_kafka_topic_t *dash_rkt;  /* JSON copies of stream events, or NULL */
    long dash_inflight;          /* dashboard records awaiting a report */
    fg_counter *c_dash_lost;
    ctl_store *store;        /* NULL without Redis (redis.host empty) */
};

/* One action in flight: its lock records, then its audit record. */
struct ctl_action {
    ctl_api *api;
    ctl_action *next, *prev;
    fg_http_req *req;
    ctl_route route;
    char req_id[REQ_ID_MAX + 1];
    ctl_principal who;
    char peer[64];
    char reason[FG_LOCK_REASON_MAX + 1];
    int dry_run;
    int64_t ttl_s, pin_s, estimate;
    fg_lock_scope scope;
    int has_scope;
    /* per region */
    size_t n;
    char (*regions)[FG_REGION_MAX + 1];
    fg_lock *before;       /* n records */
    unsigned char *had;    /* n flags: a before record existed */
    fg_lock *after;        /* n records */
    unsigned char *stored; /* n flags: the broker acknowledged after[i] */
    size_t waiting;        /* delivery reports still to come */
    int audit_ok;
    /* approve: the pending request and who asked for it */
    char approves[REQ_ID_MAX + 1];
    char requested_by[FG_LOCK_ACTOR_MAX + 1];
    /* policy: the validated policy and its JSON (malloc'd) */
    sc_policy policy;
    char *policy_json;
    size_t policy_len;
    /* dry-run unlock and unlock-all: n entries (malloc'd), else NULL */
    ctl_held *held;
};

/* Delivery-report opaque: which action, and which of its messages. */
typedef struct ctl_dr {
    ctl_action *a;
    size_t idx; /* region index, or (size_t)-1 for the audit record */
} ctl_dr;

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void new_req_id(char out[REQ_ID_MAX + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[8];
    static uint64_t fallback;
    if (RAND_bytes(b, sizeof(b)) != 1) {
        uint64_t x = (uint64_t)now_ms() ^ (++fallback << 40) ^
                     (uint64_t)getpid() << 20;
        memcpy(b, &x, sizeof(b));
    }
    memcpy(out, "req-", 4);
    for (size_t i = 0; i < sizeof(b); i++) {
        out[4 + 2 * i] = hex[b[i] >> 4];
        out[5 + 2 * i] = hex[b[i] & 15];
    }
    out[4 + 2 * sizeof(b)] = '\0';
}

/* ---- answers ---- */

static void count_status(ctl_api *api, ctl_route route, int status)
{
    char labels[96];
    snprintf(labels, sizeof(labels), "route=\"%s\",code=\"%d\"",
             ctl_route_str(route), status);
    fg_counter *c = fg_metrics_counter(api->m, "fleetgate_control_requests_total",
                                       "API requests answered, by route and "
                                       "status.", labels);
    if (c)
        fg_counter_add(c, 1);
}

/* Answers with the JSON in g (or a fixed error body when g failed). */
static void respond_gen(ctl_api *api, fg_http_req *req, ctl_route route,
                        int status, yajl_gen g, const char *req_id,
                        const char *extra)
{
    const unsigned char *buf = NULL;
    size_t len = 0;
    char headers[256];
    snprintf(headers, sizeof(headers), "X-Request-Id: %s\r\n%s", req_id,
             extra ? extra : "");
    count_status(api, route, status);
    if (!g || yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok) {
        static const char oom[] = "{\"error\":\"internal\"}";
        fg_http_respond(req, 500, "application/json", oom, sizeof(oom) - 1,
                        headers);
        return;
    }
    fg_http_respond(req, status, "application/json", buf, len, headers);
}

static yajl_gen gen_new(void)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (g)
        yajl_gen_config(g, yajl_gen_validate_utf8, 1);
    return g;
}

/* {"error":code,"field":...,"detail":...,"request_id":...} */
static void respond_error(ctl_api *api, fg_http_req *req, ctl_route route,
                          int status, const char *code, const char *field,
                          const char *detail, const char *req_id,
                          const char *extra)
{
    yajl_gen g = gen_new();
    if (g) {
        yajl_gen_map_open(g);
        ctl_json_str(g, "error", code);
        if (field && field[0])
            ctl_json_str(g, "field", field);
        if (detail && detail[0])
            ctl_json_str(g, "detail", detail);
        ctl_json_str(g, "request_id", req_id);
        yajl_gen_map_close(g);
    }
    respond_gen(api, req, route, status, g, req_id, extra);
    if (g)
        yajl_gen_free(g);
}

/* ---- audit ---- */

/* Produces the audit record; dr (transferred) is its report's opaque, or
 * NULL when nobody waits. Returns 0, or -1 (counted, logged, dr freed). */
static int produce_audit(ctl_api *api, const ctl_audit *au, ctl_dr *dr)
{
    char *json = NULL;
    size_t len = 0;
    if (ctl_audit_render(au, &json, &len) != FG_OK) {
        fg_counter_add(api->c_audit_fail, 1);
        fg_log_error("audit_not_written", "request_id=%s err=no_memory",
                     au->request_id);
        goto fail;
    }
    rd_kafka_resp_err_t err = rd_kafka_producev(
        api->p, RD_KAFKA_V_RKT(api->audit_rkt),
        RD_KAFKA_V_KEY(au->request_id, strlen(au->request_id)),
        RD_KAFKA_V_VALUE(json, len),
        RD_KAFKA_V_HEADER("content-type", "application/json", -1),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_OPAQUE(dr),
        RD_KAFKA_V_END);
    if (err) {
        free(json);
        fg_counter_add(api->c_audit_fail, 1);
        fg_log_error("audit_not_written", "request_id=%s err=%s",
                     au->request_id, rd_kafka_err2name(err));
        goto fail;
    }
    return 0;
fail:
    free(dr);
    return -1;
}

/* A request refused before any action: audited without waiting. */
static void audit_refusal(ctl_api *api, const char *req_id, ctl_route route,
                          const ctl_principal *who, const char *target,
                          const char *outcome, int status, const char *code,
                          const char *detail, const char *peer)
{
    ctl_audit au;
    memset(&au, 0, sizeof(au));
    au.ts = now_ms();
    au.request_id = req_id;
    au.instance = api->cfg->ctl_id;
    au.actor = who->actor;
    au.role = ctl_role_str(who->role);
    au.action = ctl_route_str(route);
    au.target = target && target[0] ? target : NULL;
    au.outcome = outcome;
    au.error = code;
    au.detail = detail;
    au.source = peer;
    au.status = status;
    au.ttl_s = au.pin_s = au.estimated_devices = -1;
    (void)produce_audit(api, &au, NULL); /* counted and logged on failure */
}

/* ---- actions ---- */

static void action_free(ctl_action *a)
{
    if (!a)
        return;
    free(a->regions);
    free(a->before);
    free(a->had);
    free(a->after);
    free(a->stored);
    free(a->policy_json);
    free(a->held);
    free(a);
}

static ctl_action *action_new(ctl_api *api, fg_http_req *req, ctl_route route,
                              const char *req_id, const ctl_principal *who,
                              size_t n)
{
    ctl_action *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    size_t k = n ? n : 1;
    a->regions = calloc(k, sizeof(*a->regions));
    a->before = calloc(k, sizeof(*a->before));
    a->had = calloc(k, 1);
    a->after = calloc(k, sizeof(*a->after));
    a->stored = calloc(k, 1);
    if (!a->regions || !a->before || !a->had || !a->after || !a->stored) {
        action_free(a);
        return NULL;
    }
    a->api = api;
    a->req = req;
    a->route = route;
    a->n = n;
    a->who = *who;
    a->ttl_s = a->pin_s = a->estimate = -1;
    snprintf(a->req_id, sizeof(a->req_id), "%s", req_id);
    snprintf(a->peer, sizeof(a->peer), "%s", fg_http_req_peer(req));
    return a;
}

static void action_link(ctl_api *api, ctl_action *a)
{
    a->next = api->actions;
    if (api->actions)
        api->actions->prev = a;
    api->actions = a;
    api->nactions++;
}

static void action_unlink(ctl_api *api, ctl_action *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        api->actions = a->next;
    if (a->next)
        a->next->prev = a->prev;
    a->next = a->prev = NULL;
    api->nactions--;
}

static size_t action_stored(const ctl_action *a)
{
    size_t k = 0;
    for (size_t i = 0; i < a->n; i++)
        k += a->stored[i];
    return k;
}

static const char *action_outcome(const ctl_action *a)
{
    size_t k = action_stored(a);
    if (a->dry_run)
        return "dry_run";
    if (k == a->n)
        return "ok";
    return k == 0 ? "failed" : "partial";
}

/* A dry-run unlock's view of what it would lift: "regions", one object
 * per region it would write an unlocked record for (region, state now,
 * scope of the record in force or null, estimated_devices it holds back
 * or null when unknown), and "estimated_devices", their sum (null when no
 * region's estimate is known). */
static void held_json(yajl_gen g, const ctl_action *a)
{
    ctl_json_key(g, "regions");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < a->n; i++) {
        yajl_gen_map_open(g);
        ctl_json_str(g, "region", a->regions[i]);
        ctl_json_str(g, "state", ctl_state_name(a->held[i].state));
        if (a->had[i])
            ctl_json_str(g, "scope", fg_lock_scope_str(a->before[i].scope));
        else
            ctl_json_null(g, "scope");
        if (a->held[i].devices >= 0)
            ctl_json_int(g, "estimated_devices", a->held[i].devices);
        else
            ctl_json_null(g, "estimated_devices");
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    if (a->estimate >= 0)
        ctl_json_int(g, "estimated_devices", a->estimate);
    else
        ctl_json_null(g, "estimated_devices");
}

/* The answer of a finished action. */
static void action_respond(ctl_action *a)
{
    ctl_api *api = a->api;
    size_t k = action_stored(a);
    int status = 200;
    if (!a->dry_run && k < a->n) {
        status = 503;
    }
    yajl_gen g = gen_new();
    if (g) {
        yajl_gen_map_open(g);
        if (status != 200) {
            ctl_json_str(g, "error", k ? "partially_stored" : "not_stored");
            ctl_json_str(g, "detail",
                         k ? "the broker acknowledged only some records; "
                             "retry for the rest"
                           : "the broker did not acknowledge the record; "
                             "nothing changed");
        }
        ctl_json_str(g, "request_id", a->req_id);
        ctl_json_str(g, "action", ctl_route_str(a->route));
        ctl_json_bool(g, "dry_run", a->dry_run);
        if (a->route == CTL_ROUTE_UNLOCK_ALL) {
            ctl_json_key(g, "unlocked");
            yajl_gen_array_open(g);
            for (size_t i = 0; i < a->n; i++)
                if (a->stored[i])
                    yajl_gen_string(g, (const unsigned char *)a->regions[i],
                                    strlen(a->regions[i]));
            yajl_gen_array_close(g);
            /* A dry run stores nothing, and nothing failed. */
            ctl_json_key(g, "failed");
            yajl_gen_array_open(g);
            for (size_t i = 0; i < a->n; i++)
                if (!a->stored[i] && !a->dry_run)
                    yajl_gen_string(g, (const unsigned char *)a->regions[i],
                                    strlen(a->regions[i]));
            yajl_gen_array_close(g);
            ctl_json_key(g, "records");
            yajl_gen_array_open(g);
            for (size_t i = 0; i < a->n; i++)
                if (a->stored[i])
                    ctl_lock_json(g, &a->after[i]);
            yajl_gen_array_close(g);
            if (a->dry_run) {
                ctl_json_key(g, "would_write");
                yajl_gen_array_open(g);
                for (size_t i = 0; i < a->n; i++)
                    ctl_lock_json(g, &a->after[i]);
                yajl_gen_array_close(g);
            }
        } else {
            ctl_json_str(g, "region", a->regions[0]);
            if (a->route == CTL_ROUTE_APPROVE) {
                ctl_json_str(g, "approves", a->approves);
                ctl_json_str(g, "requested_by", a->requested_by);
            }
            if (a->route == CTL_ROUTE_LOCK && a->dry_run)
                ctl_json_bool(g, "needs_approval",
                              a->estimate > api->cfg->two_person_devices);
            if (a->route == CTL_ROUTE_LOCK || a->route == CTL_ROUTE_APPROVE) {
                ctl_json_str(g, "scope", fg_lock_scope_str(a->scope));
                if (a->estimate >= 0)
                    ctl_json_int(g, "estimated_devices", a->estimate);
                else
                    ctl_json_null(g, "estimated_devices");
            }
            if (a->route == CTL_ROUTE_POLICY) {
                ctl_json_str(g, "topic", api->cfg->policies_topic);
                ctl_json_key(g, "policy");
                ctl_policy_json(g, &a->policy);
            } else if (a->route == CTL_ROUTE_POLICY_RESET) {
                /* No operator policy any more: each scorer's own. */
                ctl_json_str(g, "topic", api->cfg->policies_topic);
                ctl_json_null(g, "policy");
            } else {
                ctl_json_key(g, "before");
                ctl_lock_json(g, a->had[0] ? &a->before[0] : NULL);
                ctl_json_key(g, a->dry_run ? "would_write" : "record");
                ctl_lock_json(g, &a->after[0]);
            }
        }
        if (a->held)
            held_json(g, a);
        ctl_json_bool(g, "audited", a->audit_ok);
        yajl_gen_map_close(g);
    }
    respond_gen(api, a->req, a->route, status, g, a->req_id, NULL);
    if (g)
        yajl_gen_free(g);
    a->req = NULL;
}

/* Every delivery report of the action's records arrived: record the
 * stored ones locally, then produce the audit record. Returns 0 when it was
 * produced (its report finishes the action), -1 when not. */
static int action_audit(ctl_action *a)
{
    ctl_api *api = a->api;
    size_t k = a->n ? a->n : 1;
    int rc = -1;
    const fg_lock **before = calloc(k, sizeof(*before));
    const fg_lock **after = calloc(k, sizeof(*after));
    const char **regions = calloc(k, sizeof(*regions));
    ctl_dr *dr = malloc(sizeof(*dr));
    int policy = a->route == CTL_ROUTE_POLICY ||
                 a->route == CTL_ROUTE_POLICY_RESET;
    for (size_t i = 0; i < a->n && !policy; i++) {
        if (!a->stored[i])
            continue;
        /* Read-your-writes, unless the feed already holds a newer record
         * (it delivers ours too, in topic order). */
        const ctl_region *r = ctl_state_get(api->state, a->regions[i]);
        if (!r || !r->has_lock || r->lock.since <= a->after[i].since)
            ctl_state_put_lock(api->state, a->regions[i], &a->after[i]);
    }
    if (!before || !after || !regions || !dr) {
        free(dr);
        fg_counter_add(api->c_audit_fail, 1);
        fg_log_error("audit_not_written", "request_id=%s err=no_memory",
                     a->req_id);
        goto out;
    }
    for (size_t i = 0; i < a->n; i++) {
        regions[i] = a->regions[i];
        before[i] = a->had[i] ? &a->before[i] : NULL;
        after[i] = a->dry_run || a->stored[i] ? &a->after[i] : NULL;
    }
    const char *outcome = action_outcome(a);
    int ok = strcmp(outcome, "ok") == 0 || a->dry_run;
    ctl_audit au;
    memset(&au, 0, sizeof(au));
    au.ts = now_ms();
    au.request_id = a->req_id;
    au.instance = api->cfg->ctl_id;
    au.actor = a->who.actor;
    au.role = ctl_role_str(a->who.role);
    au.action = ctl_route_str(a->route);
    au.target = a->route == CTL_ROUTE_UNLOCK_ALL ? "*" : a->regions[0];
    au.reason = a->reason;
    au.outcome = outcome;
    au.error = ok ? NULL : "not_stored";
    au.source = a->peer;
    au.status = ok ? 200 : 503;
    au.dry_run = a->dry_run;
    au.scope = a->has_scope ? fg_lock_scope_str(a->scope) : NULL;
    au.ttl_s = a->ttl_s;
    au.pin_s = a->pin_s;
    au.estimated_devices = a->estimate;
    au.n = a->n;
    au.regions = regions;
    au.before = before;
    au.after = after;
    au.multi = a->route == CTL_ROUTE_UNLOCK_ALL;
    if (policy) {
        /* No lock records: the policy itself, or for a reset nothing (the
         * service does not read the topic, so what it removed is not
         * known here). */
        au.n = 0;
        au.policy = a->route == CTL_ROUTE_POLICY ? &a->policy : NULL;
    }
    if (a->route == CTL_ROUTE_APPROVE) {
        au.approves = a->approves;
        au.requested_by = a->requested_by;
    }
    dr->a = a;
    dr->idx = (size_t)-1;
    rc = produce_audit(api, &au, dr);
    a->waiting = rc == 0 ? 1 : 0;
out:
    free(before);
    free(after);
    free(regions);
    return rc;
}

static void action_finish(ctl_action *a)
{
    ctl_api *api = a->api;
    fg_log_info("action", "request_id=%s actor=%s action=%s target=%s "
                "outcome=%s audited=%d", a->req_id, a->who.actor,
                ctl_route_str(a->route),
                a->route == CTL_ROUTE_UNLOCK_ALL ? "*" : a->regions[0],
                action_outcome(a), a->audit_ok);
    if (a->req)
        action_respond(a);
    action_unlink(api, a);
    action_free(a);
}

/* Starts the audit phase; finishes at once when the audit record could not
 * be produced. */
static void action_to_audit(ctl_action *a)
{
    if (action_audit(a) != 0)
        action_finish(a);
}

/* Produces the action's records (dry runs have none). */
static void action_start(ctl_api *api, ctl_action *a)
{
    action_link(api, a);
    if (a->dry_run || a->n == 0) {
        action_to_audit(a);
        return;
    }
    a->waiting = a->n;
    for (size_t i = 0; i < a->n; i++) {
        char rec[FG_LOCK_RECORD_MAX];
        int policy = a->route == CTL_ROUTE_POLICY ||
                     a->route == CTL_ROUTE_POLICY_RESET;
        size_t len = policy ? 0
                            : fg_lock_encode(&a->after[i], rec, sizeof(rec));
        ctl_dr *dr = malloc(sizeof(*dr));
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__FAIL;
        if (dr && a->route == CTL_ROUTE_POLICY_RESET) {
            /* The tombstone: compaction keeps the key without a value, and
             * every scorer goes back to its configured policy. */
            dr->a = a;
            dr->idx = i;
            err = rd_kafka_producev(
                api->p, RD_KAFKA_V_RKT(api->policies_rkt),
                RD_KAFKA_V_KEY(a->regions[i], strlen(a->regions[i])),
                RD_KAFKA_V_VALUE(NULL, 0), RD_KAFKA_V_OPAQUE(dr),
                RD_KAFKA_V_END);
        } else if (dr && a->route == CTL_ROUTE_POLICY) {
            dr->a = a;
            dr->idx = i;
            err = rd_kafka_producev(
                api->p, RD_KAFKA_V_RKT(api->policies_rkt),
                RD_KAFKA_V_KEY(a->regions[i], strlen(a->regions[i])),
                RD_KAFKA_V_VALUE(a->policy_json, a->policy_len),
                RD_KAFKA_V_HEADER("content-type", "application/json", -1),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(dr),
                RD_KAFKA_V_END);
        } else if (dr && len) {
            dr->a = a;
            dr->idx = i;
            err = rd_kafka_producev(
                api->p, RD_KAFKA_V_RKT(api->locks_rkt),
                RD_KAFKA_V_KEY(a->regions[i], strlen(a->regions[i])),
                RD_KAFKA_V_VALUE(rec, len),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(dr),
                RD_KAFKA_V_END);
        }
        if (err) {
            free(dr);
            fg_counter_add(api->c_records_fail, 1);
            fg_log_error("record_not_produced", "request_id=%s region=%s "
                         "err=%s", a->req_id, a->regions[i],
                         rd_kafka_err2name(err));
            a->waiting--;
        }
    }
    if (a->waiting == 0)
        action_to_audit(a);
}

/* The delivery-report opaque of dashboard copies (their address only). */
static char dash_opaque;

static void on_delivery(ctl_api *api, const rd_kafka_message_t *msg)
{
    if (msg->_private == &dash_opaque) {
        /* A dashboard copy: nobody waits for it, losing one is counted. */
        api->dash_inflight--;
        if (msg->err)
            fg_counter_add(api->c_dash_lost, 1);
        return;
    }
    ctl_dr *dr = msg->_private;
    if (!dr) {
        /* A refusal's audit record: nobody waits for it. */
        if (msg->err) {
            fg_counter_add(api->c_audit_fail, 1);
            fg_log_error("audit_not_written", "err=%s",
                         rd_kafka_err2name(msg->err));
        }
        return;
    }
    ctl_action *a = dr->a;
    size_t idx = dr->idx;
    free(dr);
    if (idx == (size_t)-1) {
        a->audit_ok = !msg->err;
        if (msg->err) {
            fg_counter_add(api->c_audit_fail, 1);
            fg_log_error("audit_not_written", "request_id=%s err=%s",
                         a->req_id, rd_kafka_err2name(msg->err));
        }
        a->waiting = 0;
        action_finish(a);
        return;
    }
    if (!msg->err) {
        a->stored[idx] = 1;
    } else {
        fg_counter_add(api->c_records_fail, 1);
        fg_log_error("record_not_stored", "request_id=%s region=%s err=%s",
                     a->req_id, a->regions[idx], rd_kafka_err2name(msg->err));
    }
    if (--a->waiting == 0)
        action_to_audit(a);
}

static void on_producer_event(void *ud, rd_kafka_event_t *ev)
{
    ctl_api *api = ud;
    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_DR: {
        const rd_kafka_message_t *msg;
        while ((msg = rd_kafka_event_message_next(ev)) != NULL)
            on_delivery(api, msg);
        break;
    }
    case RD_KAFKA_EVENT_ERROR:
        fg_log_warn("kafka_error", "err=%s fatal=%d",
                    rd_kafka_err2name(rd_kafka_event_error(ev)),
                    rd_kafka_event_error_is_fatal(ev));
        break;
    case RD_KAFKA_EVENT_CREATETOPICS_RESULT:
        fg_kafka_log_topics_created(ev);
        break;
    default:
        break;
    }
}

/* ---- handlers ---- */

static int json_content(fg_http_req *req)
{
    const char *ct = fg_http_req_header(req, "content-type");
    if (!ct || strncasecmp(ct, "application/json", 16) != 0)
        return 0;
    return ct[16] == '\0' || ct[16] == ';' || ct[16] == ' ';
}

static void handle_list(ctl_api *api, fg_http_req *req, const char *req_id)
{
    ctl_list_query q;
    ctl_req_error err;
    if (ctl_req_list_query(fg_http_req_query(req), &q, &err) != FG_OK) {
        respond_error(api, req, CTL_ROUTE_LIST, 400, err.code, err.field,
                      err.detail, req_id, NULL);
        return;
    }
    size_t n = ctl_state_count(api->state);
    const ctl_region **rows = calloc(n ? n : 1, sizeof(*rows));
    yajl_gen g = gen_new();
    if (!rows || !g) {
        free(rows);
        if (g)
            yajl_gen_free(g);
        respond_error(api, req, CTL_ROUTE_LIST, 500, "no_memory", NULL, NULL,
                      req_id, NULL);
        return;
    }
    int64_t now = now_ms();
    size_t k = ctl_state_list(api->state, &q, now, rows, n);
    yajl_gen_map_open(g);
    ctl_json_int(g, "now", now);
    ctl_json_int(g, "count", (int64_t)k);
    ctl_json_key(g, "regions");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < k; i++)
        ctl_region_json(g, rows[i], now);
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    respond_gen(api, req, CTL_ROUTE_LIST, 200, g, req_id, NULL);
    yajl_gen_free(g);
    free(rows);
}

static void handle_region(ctl_api *api, fg_http_req *req, const char *region,
                          const char *req_id)
{
    const ctl_region *r = ctl_state_get(api->state, region);
    if (!r) {
        respond_error(api, req, CTL_ROUTE_REGION, 404, "unknown_region",
                      NULL, "no score or lock record for this region yet",
                      req_id, NULL);
        return;
    }
    yajl_gen g = gen_new();
    if (g)
        ctl_region_detail_json(g, api->state, r, now_ms());
    respond_gen(api, req, CTL_ROUTE_REGION, 200, g, req_id, NULL);
    if (g)
        yajl_gen_free(g);
}

/* 400 for an authenticated request with bad input: answered and audited. */
static void refuse_invalid(ctl_api *api, fg_http_req *req, ctl_route route,
                           const ctl_principal *who, const char *target,
                           int status, const ctl_req_error *err,
                           const char *req_id)
{
    fg_counter_add(api->c_invalid, 1);
    audit_refusal(api, req_id, route, who, target, "invalid", status,
                  err->code, err->detail, fg_http_req_peer(req));
    respond_error(api, req, route, status, err->code, err->field, err->detail,
                  req_id, NULL);
}

/* Fills a's lock record of region from lr; lk_actor and lk_id go into the
 * record (the requester and the request that asked for it). */
static void lock_fill(ctl_api *api, ctl_action *a, const char *region,
                      const ctl_lock_req *lr, const char *lk_actor,
                      const char *lk_id, int64_t now)
{
    const ctl_region *r = ctl_state_get(api->state, region);
    snprintf(a->regions[0], sizeof(a->regions[0]), "%.*s", FG_REGION_MAX, region);
    snprintf(a->reason, sizeof(a->reason), "%s", lr->reason);
    if (r && r->has_lock) {
        a->before[0] = r->lock;
        a->had[0] = 1;
    }
    a->dry_run = lr->dry_run;
    a->ttl_s = lr->ttl_s;
    a->scope = lr->scope;
    a->has_scope = 1;
    a->estimate = ctl_region_estimate(r, lr->scope);
    fg_lock *lk = &a->after[0];
    snprintf(lk->region, sizeof(lk->region), "%.*s", FG_REGION_MAX, region);
    lk->state = FG_LOCK_LOCKED;
    lk->scope = lr->scope;
    lk->source = FG_SOURCE_OPS;
    snprintf(lk->reason, sizeof(lk->reason), "%s", lr->reason);
    snprintf(lk->message, sizeof(lk->message), "%s",
             lr->has_message ? lr->message : api->cfg->default_message);
    snprintf(lk->actor, sizeof(lk->actor), "%s", lk_actor);
    snprintf(lk->id, sizeof(lk->id), "%s", lk_id);
    lk->since = now;
    lk->until = now + lr->ttl_s * 1000;
    if (r && r->has_score) {
        lk->devices = r->score.devices;
        lk->has |= FG_LOCK_HAS_DEVICES;
    }
}

/* A free pending slot: unused, else the oldest expired or approved one;
 * NULL when every slot holds a live request. */
static ctl_pending *pending_slot(ctl_api *api, int64_t now)
{
    ctl_pending *best = NULL;
    for (size_t i = 0; i < CTL_PENDING_MAX; i++) {
        ctl_pending *pr = &api->pending[i];
        if (!pr->used)
            return pr;
        if ((pr->approved || now >= pr->expires) &&
            (!best || pr->created < best->created))
            best = pr;
    }
    return best;
}

static ctl_pending *pending_find(ctl_api *api, const char *id)
{
    for (size_t i = 0; i < CTL_PENDING_MAX; i++)
        if (api->pending[i].used && strcmp(api->pending[i].id, id) == 0)
            return &api->pending[i];
    return NULL;
}

/* Over the blast radius: keep the request for a second admin, audit it,
 * answer 202. */
static void lock_pending(ctl_api *api, fg_http_req *req, const char *region,
                         const ctl_principal *who, const char *req_id,
                         const ctl_lock_req *lr, int64_t estimate)
{
    int64_t now = now_ms();
    ctl_pending *pr = pending_slot(api, now);
    if (!pr) {
        respond_error(api, req, CTL_ROUTE_LOCK, 503, "too_many_pending", NULL,
                      "too many lock requests wait for approval",
                      req_id, "Retry-After: 60\r\n");
        return;
    }
    memset(pr, 0, sizeof(*pr));
    pr->used = 1;
    snprintf(pr->id, sizeof(pr->id), "%s", req_id);
    snprintf(pr->region, sizeof(pr->region), "%.*s", FG_REGION_MAX, region);
    snprintf(pr->actor, sizeof(pr->actor), "%s", who->actor);
    pr->created = now;
    pr->expires = now + api->cfg->request_ttl_ms;
    pr->estimate = estimate;
    pr->lr = *lr;
    char detail[160];
    snprintf(detail, sizeof(detail), "estimated %lld devices, over %lld: "
             "another admin must approve before %lld", (long long)estimate,
             (long long)api->cfg->two_person_devices, (long long)pr->expires);
    ctl_audit au;
    memset(&au, 0, sizeof(au));
    au.ts = now;
    au.request_id = req_id;
    au.instance = api->cfg->ctl_id;
    au.actor = who->actor;
    au.role = ctl_role_str(who->role);
    au.action = ctl_route_str(CTL_ROUTE_LOCK);
    au.target = pr->region;
    au.reason = lr->reason;
    au.outcome = "pending";
    au.detail = detail;
    au.source = fg_http_req_peer(req);
    au.status = 202;
    au.scope = fg_lock_scope_str(lr->scope);
    au.ttl_s = lr->ttl_s;
    au.pin_s = -1;
    au.estimated_devices = estimate;
    (void)produce_audit(api, &au, NULL); /* counted and logged on failure */
    fg_log_info("lock_pending", "request_id=%s actor=%s region=%s "
                "estimate=%lld", req_id, who->actor, pr->region,
                (long long)estimate);
    yajl_gen g = gen_new();
    if (g) {
        yajl_gen_map_open(g);
        ctl_json_str(g, "request_id", req_id);
        ctl_json_str(g, "status", "pending");
        ctl_json_str(g, "action", "lock");
        ctl_json_str(g, "region", pr->region);
        ctl_json_int(g, "estimated_devices", estimate);
        ctl_json_int(g, "threshold", api->cfg->two_person_devices);
        ctl_json_int(g, "expires_at", pr->expires);
        ctl_json_str(g, "approve", "POST /v1/requests/{request_id}/approve "
                     "by another admin");
        yajl_gen_map_close(g);
    }
    respond_gen(api, req, CTL_ROUTE_LOCK, 202, g, req_id, NULL);
    if (g)
        yajl_gen_free(g);
}

static void handle_lock(ctl_api *api, fg_http_req *req, const char *region,
                        const ctl_principal *who, const char *req_id)
{
    ctl_lock_req lr;
    ctl_req_error err;
    size_t len = 0;
    const char *body = fg_http_req_body(req, &len);
    if (ctl_req_parse_lock(body, len, &api->cfg->limits, &lr, &err) != FG_OK) {
        refuse_invalid(api, req, CTL_ROUTE_LOCK, who, region, 400, &err,
                       req_id);
        return;
    }
    /* Two-person rule: an unknown estimate (no score yet) is not over it. */
    int64_t estimate =
        ctl_region_estimate(ctl_state_get(api->state, region), lr.scope);
    if (!lr.dry_run && estimate > api->cfg->two_person_devices) {
        lock_pending(api, req, region, who, req_id, &lr, estimate);
        return;
    }
    ctl_action *a = action_new(api, req, CTL_ROUTE_LOCK, req_id, who, 1);
    if (!a) {
        respond_error(api, req, CTL_ROUTE_LOCK, 500, "no_memory", NULL, NULL,
                      req_id, NULL);
        return;
    }
    lock_fill(api, a, region, &lr, who->actor, req_id, now_ms());
    action_start(api, a);
}

/* POST /v1/requests/{id}/approve: a different admin executes a pending
 * lock. The record carries the requester as actor and the pending id. */
static void handle_approve(ctl_api *api, fg_http_req *req, const char *id,
                           const ctl_principal *who, const char *req_id)
{
    int64_t now = now_ms();
    ctl_pending *pr = pending_find(api, id);
    ctl_req_error err;
    int status = 0;
    const char *outcome = "invalid";
    memset(&err, 0, sizeof(err));
    if (!pr) {
        status = 404;
        err.code = "unknown_request";
        snprintf(err.detail, sizeof(err.detail), "no pending request %s", id);
    } else if (pr->approved) {
        status = 409;
        err.code = "already_approved";
        snprintf(err.detail, sizeof(err.detail), "%s was approved already",
                 pr->id);
    } else if (now >= pr->expires) {
        status = 410;
        outcome = "expired";
        err.code = "expired";
        snprintf(err.detail, sizeof(err.detail), "%s expired unapproved; "
                 "ask again", pr->id);
    } else if (strcmp(pr->actor, who->actor) == 0) {
        status = 403;
        outcome = "denied";
        err.code = "same_actor";
        snprintf(err.detail, sizeof(err.detail), "%.64s asked for %.24s; "
                 "a different admin must approve", pr->actor, pr->id);
    }
    if (status) {
        if (status == 403)
            fg_counter_add(api->c_denied_403, 1);
        else
            fg_counter_add(api->c_invalid, 1);
        audit_refusal(api, req_id, CTL_ROUTE_APPROVE, who, id, outcome, status,
                      err.code, err.detail, fg_http_req_peer(req));
        respond_error(api, req, CTL_ROUTE_APPROVE, status, err.code, NULL,
                      err.detail, req_id, NULL);
        return;
    }
    ctl_action *a = action_new(api, req, CTL_ROUTE_APPROVE, req_id, who, 1);
    if (!a) {
        respond_error(api, req, CTL_ROUTE_APPROVE, 500, "no_memory", NULL,
                      NULL, req_id, NULL);
        return;
    }
    /* Used once, whatever the broker says: a failed write is retried by
     * asking again. */
    pr->approved = 1;
    snprintf(a->approves, sizeof(a->approves), "%s", pr->id);
    snprintf(a->requested_by, sizeof(a->requested_by), "%s", pr->actor);
    lock_fill(api, a, pr->region, &pr->lr, pr->actor, pr->id, now);
    action_start(api, a);
}

/* PUT /v1/regions/{code}/policy: validated, written to the policies topic
 * (key region, JSON value), answered with the normalized policy. */
static void handle_policy(ctl_api *api, fg_http_req *req, const char *region,
                          const ctl_principal *who, const char *req_id)
{
    sc_rails rails;
    sc_policy pol;
    char reason[FG_LOCK_REASON_MAX + 1];
    ctl_req_error err;
    size_t len = 0;
    const char *body = fg_http_req_body(req, &len);
    sc_rails_default(&rails);
    rails.max_ttl_ms = api->cfg->max_ttl_ms;
    if (ctl_req_parse_policy(body, len, &rails, &pol, reason, &err) !=
        FG_OK) {
        refuse_invalid(api, req, CTL_ROUTE_POLICY, who, region, 400, &err,
                       req_id);
        return;
    }
    ctl_action *a = action_new(api, req, CTL_ROUTE_POLICY, req_id, who, 1);
    yajl_gen g = gen_new();
    const unsigned char *buf = NULL;
    size_t n = 0;
    if (a && g) {
        yajl_gen_map_open(g);
        ctl_json_str(g, "region", region);
        ctl_json_str(g, "actor", who->actor);
        ctl_json_str(g, "reason", reason);
        ctl_json_str(g, "request_id", req_id);
        ctl_json_int(g, "ts", now_ms());
        ctl_json_key(g, "policy");
        ctl_policy_json(g, &pol);
        yajl_gen_map_close(g);
        if (yajl_gen_get_buf(g, &buf, &n) == yajl_gen_status_ok && n > 0)
            a->policy_json = malloc(n);
    }
    if (!a || !a->policy_json) {
        if (g)
            yajl_gen_free(g);
        action_free(a);
        respond_error(api, req, CTL_ROUTE_POLICY, 500, "no_memory", NULL,
                      NULL, req_id, NULL);
        return;
    }
    memcpy(a->policy_json, buf, n);
    a->policy_len = n;
    yajl_gen_free(g);
    a->policy = pol;
    snprintf(a->regions[0], sizeof(a->regions[0]), "%.*s", FG_REGION_MAX,
             region);
    snprintf(a->reason, sizeof(a->reason), "%s", reason);
    action_start(api, a);
}

/* DELETE /v1/regions/{code}/policy: a tombstone for region on the
 * policies topic (key region, no value), answered once the broker has it.
 * A scorer that reads it drops the operator's policy and uses its
 * configured one ([policy.<REGION>] or [policy]) again. */
static void handle_policy_reset(ctl_api *api, fg_http_req *req,
                                const char *region, const ctl_principal *who,
                                const char *req_id)
{
    char reason[FG_LOCK_REASON_MAX + 1];
    ctl_req_error err;
    size_t len = 0;
    const char *body = fg_http_req_body(req, &len);
    if (ctl_req_parse_reason(body, len, reason, &err) != FG_OK) {
        refuse_invalid(api, req, CTL_ROUTE_POLICY_RESET, who, region, 400,
                       &err, req_id);
        return;
    }
    ctl_action *a =
        action_new(api, req, CTL_ROUTE_POLICY_RESET, req_id, who, 1);
    if (!a) {
        respond_error(api, req, CTL_ROUTE_POLICY_RESET, 500, "no_memory",
                      NULL, NULL, req_id, NULL);
        return;
    }
    snprintf(a->regions[0], sizeof(a->regions[0]), "%.*s", FG_REGION_MAX,
             region);
    snprintf(a->reason, sizeof(a->reason), "%s", reason);
    action_start(api, a);
}

/* The unlock record of region, from its current record (scope kept). */
static void unlock_record(ctl_action *a, size_t i, const ctl_region *r,
                          const ctl_unlock_req *ur, int64_t now)
{
    fg_lock *lk = &a->after[i];
    snprintf(a->regions[i], sizeof(a->regions[i]), "%s", r ? r->region : "");
    if (r && r->has_lock) {
        a->before[i] = r->lock;
        a->had[i] = 1;
    }
    memset(lk, 0, sizeof(*lk));
    snprintf(lk->region, sizeof(lk->region), "%s", a->regions[i]);
    lk->state = FG_LOCK_UNLOCKED;
    lk->scope = r && r->has_lock ? r->lock.scope : FG_SCOPE_GREY;
    lk->source = FG_SOURCE_OPS;
    snprintf(lk->reason, sizeof(lk->reason), "%s", ur->reason);
    snprintf(lk->actor, sizeof(lk->actor), "%s", a->who.actor);
    if (a->n > 1 || a->route == CTL_ROUTE_UNLOCK_ALL)
        snprintf(lk->id, sizeof(lk->id), "%s-%s", a->req_id, a->regions[i]);
    else
        snprintf(lk->id, sizeof(lk->id), "%s", a->req_id);
    lk->since = now;
    if (ur->pin_s > 0) {
        lk->pin_until = now + ur->pin_s * 1000;
        lk->has |= FG_LOCK_HAS_PIN;
    }
}

/* Makes a (its records filled by unlock_record) a dry run: nothing will
 * be produced, and the answer and the audit carry what each region holds
 * back now, i.e. the devices the unlock would let through again. Their
 * sum, over the regions whose estimate is known, is a->estimate (-1 when
 * none is). Reads the table at the same instant as unlock_record did.
 * Returns 0, or -1 when out of memory (a unchanged but for dry_run). */
static int unlock_dry_run(ctl_api *api, ctl_action *a, int64_t now)
{
    int64_t total = 0;
    size_t known = 0;
    a->dry_run = 1;
    a->held = calloc(a->n ? a->n : 1, sizeof(*a->held));
    if (!a->held)
        return -1;
    for (size_t i = 0; i < a->n; i++) {
        const ctl_region *r = ctl_state_get(api->state, a->regions[i]);
        ctl_held *h = &a->held[i];
        h->state = ctl_region_state(r, now);
        /* Only a lock in force holds devices back (expired, shadow and
         * suppressed records never apply at a gateway). */
        h->devices = h->state == FG_LOCK_LOCKED
                         ? ctl_region_estimate(r, r->lock.scope)
                         : 0;
        if (h->devices >= 0) {
            total += h->devices;
            known++;
        }
    }
    a->estimate = known || a->n == 0 ? total : -1;
    return 0;
}

static void handle_unlock(ctl_api *api, fg_http_req *req, const char *region,
                          const ctl_principal *who, const char *req_id)
{
    ctl_unlock_req ur;
    ctl_req_error err;
    size_t len = 0;
    const char *body = fg_http_req_body(req, &len);
    if (ctl_req_parse_unlock(body, len, &api->cfg->limits, &ur, &err) !=
        FG_OK) {
        refuse_invalid(api, req, CTL_ROUTE_UNLOCK, who, region, 400, &err,
                       req_id);
        return;
    }
    ctl_action *a = action_new(api, req, CTL_ROUTE_UNLOCK, req_id, who, 1);
    if (!a) {
        respond_error(api, req, CTL_ROUTE_UNLOCK, 500, "no_memory", NULL,
                      NULL, req_id, NULL);
        return;
    }
    const ctl_region *r = ctl_state_get(api->state, region);
    ctl_region none;
    if (!r) {
        memset(&none, 0, sizeof(none));
        snprintf(none.region, sizeof(none.region), "%.*s", FG_REGION_MAX, region);
        r = &none;
    }
    snprintf(a->reason, sizeof(a->reason), "%s", ur.reason);
    a->pin_s = ur.pin_s;
    int64_t now = now_ms();
    unlock_record(a, 0, r, &ur, now);
    if (ur.dry_run && unlock_dry_run(api, a, now) != 0) {
        action_free(a);
        respond_error(api, req, CTL_ROUTE_UNLOCK, 500, "no_memory", NULL,
                      NULL, req_id, NULL);
        return;
    }
    action_start(api, a);
}

static void handle_unlock_all(ctl_api *api, fg_http_req *req,
                              const ctl_principal *who, const char *req_id)
{
    ctl_unlock_req ur;
    ctl_req_error err;
    size_t len = 0;
    const char *body = fg_http_req_body(req, &len);
    if (ctl_req_parse_unlock(body, len, &api->cfg->limits, &ur, &err) !=
        FG_OK) {
        refuse_invalid(api, req, CTL_ROUTE_UNLOCK_ALL, who, "*", 400, &err,
                       req_id);
        return;
    }
    int64_t now = now_ms();
    size_t total = ctl_state_count(api->state), n = 0;
    for (size_t i = 0; i < total; i++)
        if (ctl_region_state(ctl_state_at(api->state, i), now) ==
            FG_LOCK_LOCKED)
            n++;
    ctl_action *a = action_new(api, req, CTL_ROUTE_UNLOCK_ALL, req_id, who, n);
    if (!a) {
        respond_error(api, req, CTL_ROUTE_UNLOCK_ALL, 500, "no_memory", NULL,
                      NULL, req_id, NULL);
        return;
    }
    snprintf(a->reason, sizeof(a->reason), "%s", ur.reason);
    a->pin_s = ur.pin_s;
    size_t k = 0;
    for (size_t i = 0; i < total && k < n; i++) {
        const ctl_region *r = ctl_state_at(api->state, i);
        if (ctl_region_state(r, now) == FG_LOCK_LOCKED)
            unlock_record(a, k++, r, &ur, now);
    }
    if (ur.dry_run && unlock_dry_run(api, a, now) != 0) {
        action_free(a);
        respond_error(api, req, CTL_ROUTE_UNLOCK_ALL, 500, "no_memory", NULL,
                      NULL, req_id, NULL);
        return;
    }
    action_start(api, a);
}

/* GET /v1/stream: the request becomes a server-sent event stream, or 503
 * at the client cap (or while shutting down). */
static void handle_stream(ctl_api *api, fg_http_req *req, const char *req_id)
{
    char headers[64];
    snprintf(headers, sizeof(headers), "X-Request-Id: %s\r\n", req_id);
    fg_status st = ctl_stream_subscribe(api->stream, req, headers);
    if (st == FG_OK) {
        count_status(api, CTL_ROUTE_STREAM, 200);
        return;
    }
    if (st == FG_AGAIN)
        respond_error(api, req, CTL_ROUTE_STREAM, 503, "too_many_streams",
                      NULL, "every stream slot is taken "
                      "(control.stream_max_connections) or the service is "
                      "stopping; retry later", req_id, "Retry-After: 5\r\n");
    else
        respond_error(api, req, CTL_ROUTE_STREAM, 503, "no_memory", NULL,
                      NULL, req_id, "Retry-After: 5\r\n");
}

static void on_request(void *ud, fg_http_req *req)
{
    /* The dashboard's static files need no token (the page asks for one). */
    if (ctl_web_serve(req))
        return;
    ctl_api *api = ud;
    char req_id[REQ_ID_MAX + 1], region[CTL_SEGMENT_MAX + 1];
    int method_ok = 0;
    size_t plen = 0;
    const char *path = fg_http_req_path(req, &plen);
    ctl_principal who;
    new_req_id(req_id);
    ctl_route route = ctl_route_match(fg_http_req_method(req), path, plen,
                                      region, &method_ok);
    if (route == CTL_ROUTE_NONE) {
        respond_error(api, req, route, 404, "not_found", NULL, NULL, req_id,
                      NULL);
        return;
    }
    if (!method_ok) {
        char allow[48];
        snprintf(allow, sizeof(allow), "Allow: %s\r\n", ctl_route_allow(route));
        respond_error(api, req, route, 405, "method_not_allowed", NULL, NULL,
                      req_id, allow);
        return;
    }
    ctl_role need = route == CTL_ROUTE_LIST || route == CTL_ROUTE_REGION ||
                            route == CTL_ROUTE_STREAM
                        ? CTL_ROLE_VIEWER
                    : route == CTL_ROUTE_UNLOCK_ALL ||
                            route == CTL_ROUTE_APPROVE ||
                            route == CTL_ROUTE_POLICY ||
                            route == CTL_ROUTE_POLICY_RESET
                        ? CTL_ROLE_ADMIN
                        : CTL_ROLE_OPERATOR;
    /* A denial's audit names the target only when the path segment has the
     * form of one: it is raw request bytes (any text up to
     * CTL_SEGMENT_MAX bytes that the HTTP parser let through). */
    const char *target = route == CTL_ROUTE_UNLOCK_ALL ? "*"
                         : route == CTL_ROUTE_APPROVE
                             ? (ctl_req_id_ok(region) ? region : NULL)
                         : ctl_req_region_ok(region) ? region
                                                     : NULL;
    ctl_auth_result ar = ctl_auth_check(
        api->cfg->auth, fg_http_req_header(req, "authorization"), &who);
    if (ar != CTL_AUTH_OK) {
        fg_counter_add(api->c_denied_401, 1);
        fg_log_warn("denied", "request_id=%s status=401 route=%s why=%s "
                    "peer=%s", req_id, ctl_route_str(route),
                    ctl_auth_result_str(ar), fg_http_req_peer(req));
        audit_refusal(api, req_id, route, &who, target, "denied", 401,
                      "unauthorized", ctl_auth_result_str(ar),
                      fg_http_req_peer(req));
        respond_error(api, req, route, 401, "unauthorized", NULL, NULL, req_id,
                      "WWW-Authenticate: Bearer realm=\"fleetgate\"\r\n");
        return;
    }
    if (!ctl_role_allows(who.role, need)) {
        char detail[96];
        snprintf(detail, sizeof(detail), "needs role %s; %s has %s",
                 ctl_role_str(need), who.actor, ctl_role_str(who.role));
        fg_counter_add(api->c_denied_403, 1);
        fg_log_warn("denied", "request_id=%s status=403 route=%s actor=%s "
                    "role=%s need=%s peer=%s", req_id, ctl_route_str(route),
                    who.actor, ctl_role_str(who.role), ctl_role_str(need),
                    fg_http_req_peer(req));
        audit_refusal(api, req_id, route, &who, target, "denied", 403,
                      "forbidden", detail, fg_http_req_peer(req));
        respond_error(api, req, route, 403, "forbidden", NULL, detail, req_id,
                      NULL);
        return;
    }
    if (route == CTL_ROUTE_APPROVE && !ctl_req_id_ok(region)) {
        ctl_req_error err = {"invalid_request_id", "id",
                             "not a request id (req- and 16 hex digits)"};
        refuse_invalid(api, req, route, &who, NULL, 400, &err, req_id);
        return;
    }
    if (route != CTL_ROUTE_LIST && route != CTL_ROUTE_UNLOCK_ALL &&
        route != CTL_ROUTE_APPROVE && route != CTL_ROUTE_STREAM &&
        !ctl_req_region_ok(region)) {
        ctl_req_error err = {"invalid_region", "region",
                             "not a region code (CU, UA-43)"};
        if (route == CTL_ROUTE_REGION)
            respond_error(api, req, route, 400, err.code, err.field,
                          err.detail, req_id, NULL);
        else
            refuse_invalid(api, req, route, &who, NULL, 400, &err, req_id);
        return;
    }
    /* An action on a code of the right shape that names no country (a
     * typo such as "UK" for GB) would lock or pin nothing real. */
    if ((route == CTL_ROUTE_LOCK || route == CTL_ROUTE_UNLOCK ||
         route == CTL_ROUTE_POLICY || route == CTL_ROUTE_POLICY_RESET) &&
        !fg_region_country_assigned(region)) {
        ctl_req_error err = {"unknown_region", "region",
                             "not an assigned ISO 3166-1 country code"};
        refuse_invalid(api, req, route, &who, NULL, 400, &err, req_id);
        return;
    }
    if ((route == CTL_ROUTE_LOCK || route == CTL_ROUTE_UNLOCK ||
         route == CTL_ROUTE_UNLOCK_ALL || route == CTL_ROUTE_POLICY ||
         route == CTL_ROUTE_POLICY_RESET) &&
        !json_content(req)) {
        ctl_req_error err = {"unsupported_media_type", "",
                             "send Content-Type: application/json"};
        refuse_invalid(api, req, route, &who, target, 415, &err, req_id);
        return;
    }
    switch (route) {
    case CTL_ROUTE_LIST: handle_list(api, req, req_id); break;
    case CTL_ROUTE_REGION: handle_region(api, req, region, req_id); break;
    case CTL_ROUTE_LOCK: handle_lock(api, req, region, &who, req_id); break;
    case CTL_ROUTE_UNLOCK: handle_unlock(api, req, region, &who, req_id); break;
    case CTL_ROUTE_APPROVE: handle_approve(api, req, region, &who, req_id); break;
    case CTL_ROUTE_POLICY: handle_policy(api, req, region, &who, req_id); break;
    case CTL_ROUTE_POLICY_RESET:
        handle_policy_reset(api, req, region, &who, req_id);
        break;
    case CTL_ROUTE_STREAM: handle_stream(api, req, req_id); break;
    default: handle_unlock_all(api, req, &who, req_id); break;
    }
}

static void on_reject(void *ud, int status, const char *code)
{
    ctl_api *api = ud;
    (void)code;
    count_status(api, CTL_ROUTE_NONE, status);
}

/* ---- inputs ---- */

/* Dashboard records waiting for their delivery report at most: beyond it
 * copies are dropped (counted), so that they can never crowd lock and
 * audit records out of the producer's queue. */
#define CTL_DASH_INFLIGHT_MAX 10000

/* The JSON copy of a stream event on control.dashboard_topic: key region,
 * value {"event":event, <the members of data>} (data is an object). */
static void dashboard_produce(ctl_api *api, const char *event,
                              const char *region, const char *data,
                              size_t len)
{
    if (len < 2 || data[0] != '{' ||
        api->dash_inflight >= CTL_DASH_INFLIGHT_MAX) {
        fg_counter_add(api->c_dash_lost, 1);
        return;
    }
    size_t en = strlen(event);
    size_t vlen = sizeof("{\"event\":\"\",") - 1 + en + len - 1;
    char *val = malloc(vlen);
    if (!val) {
        fg_counter_add(api->c_dash_lost, 1);
        return;
    }
    int hn = snprintf(val, vlen, "{\"event\":\"%s\",", event);
    memcpy(val + hn, data + 1, len - 1);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        api->p, RD_KAFKA_V_RKT(api->dash_rkt),
        RD_KAFKA_V_KEY(region, strlen(region)), RD_KAFKA_V_VALUE(val, vlen),
        RD_KAFKA_V_HEADER("content-type", "application/json", -1),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
        RD_KAFKA_V_OPAQUE(&dash_opaque), RD_KAFKA_V_END);
    if (err) {
        free(val);
        fg_counter_add(api->c_dash_lost, 1);
        return;
    }
    api->dash_inflight++;
}

/* Publishes region's current object (as in GET /v1/regions) as a stream
 * event, and its dashboard copy when configured. */
static void publish_region(ctl_api *api, const char *event,
                           const char *region)
{
    const ctl_region *r = ctl_state_get(api->state, region);
    const unsigned char *buf = NULL;
    size_t len = 0;
    if (!r)
        return;
    yajl_gen g = gen_new();
    if (!g)
        return;
    ctl_region_json(g, r, now_ms());
    if (yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok) {
        ctl_stream_publish(api->stream, event, (const char *)buf, len);
        if (api->dash_rkt)
            dashboard_produce(api, event, region, (const char *)buf, len);
    }
    yajl_gen_free(g);
}

static int score_same(const ctl_score *a, const ctl_score *b)
{
    return a->ts == b->ts && a->devices == b->devices && a->grey == b->grey &&
           a->share == b->share && a->lo == b->lo && a->hi == b->hi &&
           strcmp(a->mode, b->mode) == 0;
}

/* Stores s; true when the table changed (not an older row, nor the same
 * row again: a replay or another partition's copy). */
static int put_score_changed(ctl_api *api, const ctl_score *s)
{
    const ctl_region *r = ctl_state_get(api->state, s->region);
    ctl_score before;
    int had = r && r->has_score;
    if (had)
        before = r->score;
    if (ctl_state_put_score(api->state, s) != FG_OK)
        return 0;
    r = ctl_state_get(api->state, s->region);
    return r && r->has_score && (!had || !score_same(&before, &r->score));
}

static void on_lock_record(void *ud, const char *region, const fg_lock *lk)
{
    ctl_api *api = ud;
    if (ctl_state_put_lock(api->state, region, lk) != FG_OK)
        fg_log_warn("lock_record_dropped", "region=%s err=table_full", region);
    else
        publish_region(api, "lock", region);
    fg_gauge_set(api->g_regions, (double)ctl_state_count(api->state));
}

static void on_score_event(void *ud, rd_kafka_event_t *ev)
{
    ctl_api *api = ud;
    if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_ERROR) {
        rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
        if (e != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            fg_log_warn("scores_kafka_error", "err=%s", rd_kafka_err2name(e));
        return;
    }
    if (rd_kafka_event_type(ev) != RD_KAFKA_EVENT_FETCH)
        return;
    const rd_kafka_message_t *msg;
    while ((msg = rd_kafka_event_message_next(ev)) != NULL) {
        ctl_score s;
        char err[128], q[160];
        if (msg->err) {
            if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fg_log_warn("scores_consume_error", "err=%s",
                            rd_kafka_err2name(msg->err));
            continue;
        }
        if (!msg->payload)
            continue;
        if (ctl_score_decode(msg->payload, msg->len, &s, err, sizeof(err)) !=
            FG_OK) {
            fg_counter_add(api->c_rows_bad, 1);
            fg_log_debug("score_row_invalid", "offset=%lld err=%s",
                         (long long)msg->offset,
                         fg_log_quote(err, q, sizeof(q)));
            continue;
        }
        fg_counter_add(api->c_rows, 1);
        if (put_score_changed(api, &s))
            publish_region(api, "score", s.region);
    }
    fg_gauge_set(api->g_regions, (double)ctl_state_count(api->state));
}

static int start_scores(ctl_api *api, char *errbuf, size_t errlen)
{
    char group[160], rnd[REQ_ID_MAX + 1];
    new_req_id(rnd);
    /* A group of its own, never committed: every instance reads the whole
     * (compacted) topic. */
    snprintf(group, sizeof(group), "fleetgate-control-scores-%s-%s",
             api->cfg->ctl_id, rnd + 4);
    rd_kafka_conf_t *kc = ctl_config_consumer(api->cfg, group, errbuf, errlen);
    if (!kc)
        return -1;
    if (fg_kafka_conf_set(kc, "enable.partition.eof", "false", errbuf,
                          errlen) != FG_OK) {
        rd_kafka_conf_destroy(kc);
        return -1;
    }
    rd_kafka_conf_set_log_cb(kc, fg_kafka_log_cb);
    api->sc = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errbuf, errlen);
    if (!api->sc) {
        rd_kafka_conf_destroy(kc);
        return -1;
    }
    rd_kafka_poll_set_consumer(api->sc);
    rd_kafka_topic_partition_list_t *topics =
        rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, api->cfg->scores_topic,
                                      RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(api->sc, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        snprintf(errbuf, errlen, "subscribe %s: %s", api->cfg->scores_topic,
                 rd_kafka_err2str(err));
        return -1;
    }
    api->scq = rd_kafka_queue_get_consumer(api->sc);
    api->scpump = fg_kafka_pump_new(api->base, api->scq, 1000, on_score_event,
                                    api, errbuf, errlen);
    return api->scpump ? 0 : -1;
}

/* Creates the topics we write or read when missing (the answer comes back
 * on the producer's queue). */
static void ensure_topics(ctl_api *api)
{
    const fg_kafka_topic_spec specs[] = {
        {api->cfg->locks_topic, 1, 1},
        {api->cfg->scores_topic, 3, 1},
        {api->cfg->audit_topic, 3, 0},
        {api->cfg->policies_topic, 1, 1},
        {api->cfg->dashboard_topic, 3, 0},
    };
    fg_kafka_create_topics(api->p, api->pq, specs,
                           api->cfg->dashboard_topic[0] ? 5 : 4);
}

/* Every change of the region table (feeds, read-your-writes) reaches
 * Redis; the history itself is kept by ctl_state. */
static void on_state_change(void *ud, const ctl_region *r,
                            const ctl_score_row *row, const fg_lock *lk)
{
    ctl_api *api = ud;
    if (api->store)
        ctl_store_put(api->store, r, row, lk);
}

static double history_bytes(void *ud)
{
    ctl_history_stats hs;
    ctl_state_history_stats(((ctl_api *)ud)->state, &hs);
    return (double)hs.bytes;
}

static double history_refused(void *ud)
{
    ctl_history_stats hs;
    ctl_state_history_stats(((ctl_api *)ud)->state, &hs);
    return (double)hs.refused;
}

/* History bounds, the change hook, the history gauges and the Redis
 * store (which reads the history back once connected). */
static int start_history(ctl_api *api, char *errbuf, size_t errlen)
{
    const ctl_config *cfg = api->cfg;
    ctl_history_limits lim = {(size_t)cfg->history_scores,
                              (size_t)cfg->history_locks,
                              (size_t)cfg->history_memory};
    if (ctl_state_set_history(api->state, &lim) != FG_OK) {
        snprintf(errbuf, errlen, "control.history_*: out of range");
        return -1;
    }
    ctl_state_on_change(api->state, on_state_change, api);
    if (!fg_metrics_gauge_fn(api->m, "fleetgate_control_history_bytes",
                             "Memory held by the region history "
                             "(control.history_memory caps it).", "",
                             history_bytes, api) ||
        !fg_metrics_gauge_fn(api->m, "fleetgate_control_history_refused",
                             "History rows and records left out for memory "
                             "since start.", "", history_refused, api)) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    if (!cfg->redis_host[0])
        return 0;
    ctl_store_opts so = {
        .host = cfg->redis_host,
        .port = (int)cfg->redis_port,
        .timeout_ms = (int)cfg->redis_timeout_ms,
        .prefix = cfg->redis_prefix,
        .ttl_ms = cfg->redis_ttl_ms,
        .scores = lim.scores,
        .locks = lim.locks,
    };
    api->store = ctl_store_new(api->base, api->state, api->m, &so, errbuf,
                               errlen);
    return api->store ? 0 : -1;
}

/* The event-stream hub (before the feeds: they publish to it). */
static int start_stream(ctl_api *api, char *errbuf, size_t errlen)
{
    const ctl_config *cfg = api->cfg;
    ctl_stream_limits lim = {
        .max_clients = (size_t)cfg->stream_max_connections,
        .ring = (size_t)cfg->stream_ring,
        .client_buffer = (size_t)cfg->stream_client_buffer,
        .ping_ms = cfg->stream_ping_ms,
        .stall_ms = 0, /* the listener's write timeout */
    };
    api->stream = ctl_stream_new(api->base, api->state, &lim, api->m, errbuf,
                                 errlen);
    api->c_dash_lost = fg_metrics_counter(
        api->m, "fleetgate_control_dashboard_lost_total",
        "Stream events not written to control.dashboard_topic (producer "
        "busy or failed, or not acknowledged).", "");
    if (api->stream && !api->c_dash_lost)
        snprintf(errbuf, errlen, "out of memory");
    return api->stream && api->c_dash_lost ? 0 : -1;
}

ctl_api *ctl_api_new(struct event_base *base, const ctl_config *cfg,
                     fg_metrics *m, char *errbuf, size_t errlen)
{
    ctl_api *api = calloc(1, sizeof(*api));
    int fd = -1;
    if (!api) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    api->base = base;
    api->cfg = cfg;
    api->m = m;
    api->state = ctl_state_new();
    api->c_denied_401 = fg_metrics_counter(
        m, "fleetgate_control_denied_total", "Requests refused by "
        "authentication (401) or authorization (403).", "status=\"401\"");
    api->c_denied_403 = fg_metrics_counter(
        m, "fleetgate_control_denied_total", NULL, "status=\"403\"");
    api->c_invalid = fg_metrics_counter(
        m, "fleetgate_control_invalid_total",
        "Authenticated actions refused for bad input (nothing written).", "");
    api->c_audit_fail = fg_metrics_counter(
        m, "fleetgate_control_audit_failures_total",
        "Audit records the broker did not acknowledge (see the log).", "");
    api->c_records_fail = fg_metrics_counter(
        m, "fleetgate_control_record_failures_total",
        "Lock records the broker did not acknowledge (answered 503).", "");
    api->c_rows = fg_metrics_counter(m, "fleetgate_control_score_rows_total",
                                     "Score rows read.", "");
    api->c_rows_bad = fg_metrics_counter(
        m, "fleetgate_control_score_rows_invalid_total",
        "Score rows that did not decode.", "");
    api->g_regions = fg_metrics_gauge(m, "fleetgate_control_regions",
                                      "Regions in the table.", "");
    if (!api->state || !api->c_denied_401 || !api->c_denied_403 ||
        !api->c_invalid || !api->c_audit_fail || !api->c_records_fail ||
        !api->c_rows || !api->c_rows_bad || !api->g_regions) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    if (start_history(api, errbuf, errlen) != 0)
        goto fail;
    if (start_stream(api, errbuf, errlen) != 0)
        goto fail;
    /* Producer. */
    rd_kafka_conf_t *kc = ctl_config_producer(cfg, errbuf, errlen);
    if (!kc)
        goto fail;
    rd_kafka_conf_set_events(kc, RD_KAFKA_EVENT_DR | RD_KAFKA_EVENT_ERROR);
    rd_kafka_conf_set_log_cb(kc, fg_kafka_log_cb);
    api->p = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errbuf, errlen);
    if (!api->p) {
        rd_kafka_conf_destroy(kc);
        goto fail;
    }
    api->locks_rkt = rd_kafka_topic_new(api->p, cfg->locks_topic, NULL);
    api->audit_rkt = rd_kafka_topic_new(api->p, cfg->audit_topic, NULL);
    api->policies_rkt = rd_kafka_topic_new(api->p, cfg->policies_topic, NULL);
    api->pq = rd_kafka_queue_get_main(api->p);
    api->ppump = fg_kafka_pump_new(base, api->pq, 1000, on_producer_event, api,
                                   errbuf, errlen);
    if (!api->locks_rkt || !api->audit_rkt || !api->policies_rkt ||
        !api->ppump)
        goto fail;
    if (cfg->dashboard_topic[0]) {
        api->dash_rkt = rd_kafka_topic_new(api->p, cfg->dashboard_topic, NULL);
        if (!api->dash_rkt) {
            snprintf(errbuf, errlen, "control.dashboard_topic: %s",
                     rd_kafka_err2str(rd_kafka_last_error()));
            goto fail;
        }
    }
    ensure_topics(api);
    /* Lock feed (owns its configuration from here on). */
    char group[96];
    snprintf(group, sizeof(group), "fleetgate-control-locks");
    kc = ctl_config_consumer(cfg, group, errbuf, errlen);
    if (!kc)
        goto fail;
    api->feed = fg_lockfeed_new(base, kc, cfg->locks_topic, on_lock_record,
                                NULL, api, m, errbuf, errlen);
    if (!api->feed)
        goto fail;
    if (start_scores(api, errbuf, errlen) != 0)
        goto fail;
    /* The API listener. */
    fd = fg_http_listen(cfg->listen, 0, errbuf, errlen);
    if (fd < 0)
        goto fail;
    api->port = fg_http_bound_port(fd);
    fg_http_limits lim = {
        .max_header_bytes = 16 * 1024,
        .max_body_bytes = (size_t)cfg->max_body,
        .read_timeout_ms = cfg->read_timeout_ms,
        .idle_timeout_ms = 60000,
        .write_timeout_ms = 10000,
    };
    api->budget.max = (long)cfg->max_connections;
    api->budget.max_body_bytes = (long)(cfg->max_connections * cfg->max_body);
    api->srv = fg_http_server_new(base, fd, &lim, &api->budget, on_request,
                                  api, errbuf, errlen);
    if (!api->srv)
        goto fail;
    fd = -1;
    fg_http_server_on_reject(api->srv, on_reject);
    /* HTTPS when control.tls_cert/tls_key are set (loaded and checked with
     * the configuration; the server takes its own reference). */
    if (cfg->tls && fg_http_server_set_tls(api->srv, cfg->tls) != FG_OK) {
        snprintf(errbuf, errlen, "control.tls_cert: cannot enable TLS");
        goto fail;
    }
    return api;
fail:
    if (fd >= 0)
        close(fd);
    ctl_api_free(api, 0);
    return NULL;
}

const char *ctl_api_ready(const ctl_api *api)
{
    if (!fg_lockfeed_ready(api->feed))
        return "lock_table_catching_up";
    return NULL;
}

int ctl_api_port(const ctl_api *api)
{
    return api->port;
}

void ctl_api_drain(ctl_api *api)
{
    /* Streams never finish on their own: end them now, so that clients
     * reconnect elsewhere (with Last-Event-ID) while we stop. */
    if (api->stream)
        ctl_stream_drain(api->stream);
    if (api->srv)
        fg_http_server_drain(api->srv);
}

size_t ctl_api_pending(const ctl_api *api)
{
    return api->nactions;
}

void ctl_api_free(ctl_api *api, int timeout_ms)
{
    if (!api)
        return;
    if (api->p) {
        rd_kafka_flush(api->p, timeout_ms);
        if (api->ppump)
            fg_kafka_pump_run(api->ppump);
    }
    /* What the broker never answered: the client learns it failed. A
     * record may still have been stored; the audit trail says "failed". */
    while (api->actions) {
        ctl_action *a = api->actions;
        if (a->req) {
            respond_error(api, a->req, a->route, 503, "shutting_down", NULL,
                          "the service stopped before the broker answered; "
                          "check the region and retry", a->req_id,
                          "Retry-After: 1\r\n");
            a->req = NULL;
        }
        action_unlink(api, a);
        action_free(a);
    }
    fg_http_server_free(api->srv);
    fg_lockfeed_free(api->feed);
    fg_kafka_pump_free(api->scpump);
    if (api->scq)
        rd_kafka_queue_destroy(api->scq);
    if (api->sc) {
        rd_kafka_consumer_close(api->sc);
        rd_kafka_destroy(api->sc);
    }
    fg_kafka_pump_free(api->ppump);
    if (api->locks_rkt)
        rd_kafka_topic_destroy(api->locks_rkt);
    if (api->audit_rkt)
        rd_kafka_topic_destroy(api->audit_rkt);
    if (api->policies_rkt)
        rd_kafka_topic_destroy(api->policies_rkt);
    if (api->dash_rkt)
        rd_kafka_topic_destroy(api->dash_rkt);
    if (api->pq)
        rd_kafka_queue_destroy(api->pq);
    if (api->p)
        rd_kafka_destroy(api->p);
    /* After the producer's last reports (they may still change regions). */
    ctl_store_free(api->store);
    /* The feeds that publish are gone; the server told the hub about
     * every stream it closed. */
    ctl_stream_free(api->stream);
    ctl_state_free(api->state);
    free(api);
}
