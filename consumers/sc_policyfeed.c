/* SPDX-License-Identifier: Apache-2.0 */
/* Policy feed: decodes operator policy records and applies them to the
 * engine; fg_topicfeed does the Kafka side. */
#include "sc_policyfeed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#include "fg_log.h"
#include "fg_topicfeed.h"

struct sc_policyfeed {
    fg_topicfeed *feed;
    const sc_config *cfg;
    sc_engine *engine;
    sc_policy defaults;
    sc_rails rails;
};

/* ---- decoding ---- */

static const char *const policy_keys[] = {
    "mode", "lock_at", "unlock_at", "min_devices", "for",
    "ttl",  "cooldown", "scope",    "message"};
#define NPOLICY_KEYS (sizeof(policy_keys) / sizeof(policy_keys[0]))

static int policy_key_index(const char *k)
{
    for (size_t i = 0; i < NPOLICY_KEYS; i++)
        if (strcmp(k, policy_keys[i]) == 0)
            return (int)i;
    return -1;
}

/* True when the JSON text has the escape \u0000, which would cut a C string
 * short (escapes only occur inside strings in valid JSON). */
static int has_nul_escape(const char *s, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] != '\\')
            continue;
        if (s[i + 1] == 'u' && i + 5 < len && memcmp(s + i + 2, "0000", 4) == 0)
            return 1;
        i++; /* skip the escaped character */
    }
    return 0;
}

/* An optional string of the record's header: null is absent. */
static fg_status take_meta(yajl_val v, const char *k, char *dst, size_t cap,
                           char *errbuf, size_t errlen)
{
    if (YAJL_IS_NULL(v))
        return FG_OK;
    if (!YAJL_IS_STRING(v)) {
        snprintf(errbuf, errlen, "%s: must be a string", k);
        return FG_EINVAL;
    }
    snprintf(dst, cap, "%s", v->u.string ? v->u.string : "");
    return FG_OK;
}

/* Applies the record's policy object over out->policy. */
static fg_status apply_policy(yajl_val pol, sc_policy_record *out,
                              char *errbuf, size_t errlen)
{
    unsigned seen = 0;
    char e[200];
    for (size_t i = 0; i < pol->u.object.len; i++) {
        const char *k = pol->u.object.keys[i];
        yajl_val v = pol->u.object.values[i];
        int idx = policy_key_index(k);
        const char *text;
        if (idx < 0) {
            snprintf(errbuf, errlen, "policy.%.40s: unknown policy key", k);
            return FG_EINVAL;
        }
        if (seen & (1u << idx)) {
            snprintf(errbuf, errlen, "policy.%s: given twice", k);
            return FG_EINVAL;
        }
        seen |= 1u << idx;
        if (YAJL_IS_STRING(v) && v->u.string)
            text = v->u.string;
        else if (YAJL_IS_NUMBER(v) && v->u.number.r)
            text = v->u.number.r; /* the number as written */
        else {
            snprintf(errbuf, errlen, "policy.%s: must be a string or a number",
                     k);
            return FG_EINVAL;
        }
        if (sc_policy_set(&out->policy, k, text, e, sizeof(e)) != FG_OK) {
            snprintf(errbuf, errlen, "policy.%s", e);
            return FG_EINVAL;
        }
    }
    return FG_OK;
}

fg_status sc_policy_record_decode(const void *value, size_t len,
                                  const char *key, const sc_policy *base,
                                  const sc_rails *rails,
                                  sc_policy_record *out, char *errbuf,
                                  size_t errlen)
{
    enum { F_REGION = 1, F_POLICY = 2, F_ACTOR = 4, F_REASON = 8,
           F_REQUEST = 16, F_TS = 32 };
    fg_status st = FG_EINVAL;
    yajl_val root = NULL, pol = NULL;
    char perr[128], e[200];
    unsigned seen = 0;
    char *text = NULL;

    memset(out, 0, sizeof(*out));
    out->ts = -1;
    out->policy = *base;
    if (len > SC_POLICY_RECORD_MAX) {
        snprintf(errbuf, errlen, "record: %zu bytes, over %d", len,
                 SC_POLICY_RECORD_MAX);
        return FG_ETOOBIG;
    }
    /* yajl_tree_parse wants a C string. */
    text = malloc(len + 1);
    if (!text) {
        snprintf(errbuf, errlen, "out of memory");
        return FG_ENOMEM;
    }
    memcpy(text, value, len);
    text[len] = '\0';
    if (memchr(text, '\0', len) || has_nul_escape(text, len)) {
        snprintf(errbuf, errlen, "record: has a NUL character");
        goto out;
    }
    root = yajl_tree_parse(text, perr, sizeof(perr));
    if (!root) {
        /* yajl's message spans lines; the first says what. */
        perr[strcspn(perr, "\r\n")] = '\0';
        snprintf(errbuf, errlen, "record: not JSON (%s)", perr);
        goto out;
    }
    if (!YAJL_IS_OBJECT(root)) {
        snprintf(errbuf, errlen, "record: not a JSON object");
        goto out;
    }
    for (size_t i = 0; i < root->u.object.len; i++) {
        const char *k = root->u.object.keys[i];
        yajl_val v = root->u.object.values[i];
        unsigned f = strcmp(k, "region") == 0       ? F_REGION
                     : strcmp(k, "policy") == 0     ? F_POLICY
                     : strcmp(k, "actor") == 0      ? F_ACTOR
                     : strcmp(k, "reason") == 0     ? F_REASON
                     : strcmp(k, "request_id") == 0 ? F_REQUEST
                     : strcmp(k, "ts") == 0         ? F_TS
                                                    : 0;
        if (!f)
            continue; /* a newer writer's field */
        if (seen & f) {
            snprintf(errbuf, errlen, "%s: given twice", k);
            goto out;
        }
        seen |= f;
        switch (f) {
        case F_REGION:
            if (!YAJL_IS_STRING(v) || !v->u.string ||
                strcmp(v->u.string, key) != 0) {
                snprintf(errbuf, errlen, "region: must be the record's key (%s)",
                         key);
                goto out;
            }
            snprintf(out->region, sizeof(out->region), "%s", key);
            break;
        case F_POLICY:
            if (!YAJL_IS_OBJECT(v)) {
                snprintf(errbuf, errlen, "policy: must be an object");
                goto out;
            }
            pol = v;
            break;
        case F_ACTOR:
            if (take_meta(v, k, out->actor, sizeof(out->actor), errbuf,
                          errlen) != FG_OK)
                goto out;
            break;
        case F_REASON:
            if (take_meta(v, k, out->reason, sizeof(out->reason), errbuf,
                          errlen) != FG_OK)
                goto out;
            break;
        case F_REQUEST:
            if (take_meta(v, k, out->request_id, sizeof(out->request_id),
                          errbuf, errlen) != FG_OK)
                goto out;
            break;
        default: /* F_TS */
            if (!YAJL_IS_NULL(v) && !YAJL_IS_INTEGER(v)) {
                snprintf(errbuf, errlen, "ts: must be an integer");
                goto out;
            }
            if (YAJL_IS_INTEGER(v))
                out->ts = YAJL_GET_INTEGER(v);
            break;
        }
    }
    if (!(seen & F_REGION) || !pol) {
        snprintf(errbuf, errlen, "%s: missing",
                 !(seen & F_REGION) ? "region" : "policy");
        goto out;
    }
    if (apply_policy(pol, out, errbuf, errlen) != FG_OK)
        goto out;
    if (out->policy.ttl_ms > rails->max_ttl_ms) {
        out->policy.ttl_ms = rails->max_ttl_ms;
        out->ttl_clamped = 1;
    }
    if (sc_policy_check(&out->policy, rails, e, sizeof(e)) != FG_OK) {
        snprintf(errbuf, errlen, "policy.%s", e);
        goto out;
    }
    st = FG_OK;
out:
    yajl_tree_free(root);
    free(text);
    return st;
}

fg_status sc_policy_record_apply(sc_engine *engine, const sc_config *cfg,
                                 const sc_policy *defaults,
                                 const sc_rails *rails, const char *region,
                                 const void *value, size_t len,
                                 sc_policy_record *rec, char *errbuf,
                                 size_t errlen)
{
    sc_policy conf;
    int configured = 0;
    fg_status st = sc_config_region_policy(cfg, defaults, region, &conf,
                                           &configured, errbuf, errlen);
    if (st != FG_OK)
        return st;
    if (value) {
        st = sc_policy_record_decode(value, len, region, &conf, rails, rec,
                                     errbuf, errlen);
        if (st != FG_OK)
            return st;
    } else {
        /* Back to the file's word: its override, or the defaults. */
        memset(rec, 0, sizeof(*rec));
        snprintf(rec->region, sizeof(rec->region), "%s", region);
        rec->ts = -1;
        rec->policy = conf;
        rec->tombstone = 1;
    }
    rec->configured = configured;
    return sc_engine_set_policy(engine, region,
                                value || configured ? &rec->policy : NULL,
                                errbuf, errlen);
}

/* ---- the feed ---- */

static fg_status on_record(void *ud, const char *region, const void *value,
                           size_t len, int64_t offset)
{
    sc_policyfeed *pf = ud;
    sc_policy_record rec;
    char err[256], q[300], qa[300], qi[160];
    fg_status st = sc_policy_record_apply(pf->engine, pf->cfg, &pf->defaults,
                                          &pf->rails, region, value, len,
                                          &rec, err, sizeof(err));
    const sc_policy *p = &rec.policy;
    if (st != FG_OK) {
        fg_log_warn("policy_record_invalid", "region=%s offset=%lld err=%s",
                    region, (long long)offset,
                    fg_log_quote(err, q, sizeof(q)));
        return st;
    }
    if (rec.tombstone) {
        fg_log_info("policy_reverted", "region=%s mode=%s configured=%d "
                    "offset=%lld", region, sc_mode_str(p->mode),
                    rec.configured, (long long)offset);
        return FG_OK;
    }
    fg_log_info("policy_applied",
                "region=%s mode=%s lock_at=%g unlock_at=%g min_devices=%lld "
                "for_ms=%lld ttl_ms=%lld%s cooldown_ms=%lld scope=%s actor=%s "
                "reason=%s request_id=%s offset=%lld",
                region, sc_mode_str(p->mode), p->lock_at, p->unlock_at,
                (long long)p->min_devices, (long long)p->for_ms,
                (long long)p->ttl_ms, rec.ttl_clamped ? " ttl_clamped=1" : "",
                (long long)p->cooldown_ms, fg_lock_scope_str(p->scope),
                fg_log_quote(rec.actor, qa, sizeof(qa)),
                fg_log_quote(rec.reason, q, sizeof(q)),
                fg_log_quote(rec.request_id, qi, sizeof(qi)),
                (long long)offset);
    return FG_OK;
}

sc_policyfeed *sc_policyfeed_new(struct event_base *base,
                                 rd_kafka_conf_t *conf, const sc_config *cfg,
                                 const sc_policy *defaults,
                                 const sc_rails *rails, sc_engine *engine,
                                 fg_metrics *m, char *errbuf, size_t errlen)
{
    sc_policyfeed *pf = calloc(1, sizeof(*pf));
    if (!pf) {
        snprintf(errbuf, errlen, "out of memory");
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    pf->cfg = cfg;
    pf->engine = engine;
    pf->defaults = *defaults;
    pf->rails = *rails;
    const fg_topicfeed_spec spec = {
        .topic = cfg->policies_topic,
        .log_name = "policies",
        .invalid_event = "policy_record_invalid",
        .metric_prefix = "fleetgate_policy",
        .noun = "policy",
        .group_id = "fleetgate-policyfeed",
        .on_record = on_record,
        .on_batch = NULL,
        .ud = pf,
    };
    pf->feed = fg_topicfeed_new(base, conf, &spec, m, errbuf, errlen);
    if (!pf->feed) {
        free(pf);
        return NULL;
    }
    return pf;
}

int sc_policyfeed_ready(const sc_policyfeed *pf)
{
    return fg_topicfeed_ready(pf->feed);
}

void sc_policyfeed_free(sc_policyfeed *pf)
{
    if (!pf)
        return;
    fg_topicfeed_free(pf->feed);
    free(pf);
}
