/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of consumers/sc_policyfeed.c: records of the policies topic as
 * fleetgate-control writes them (built here with its own parser and
 * serializer) decode to the very policy the operator set; keys a record
 * lacks keep the configured values; a ttl over the scorer's max_ttl is cut;
 * every kind of bad record is refused with the key named; and applied to an
 * engine, a `never` holds, an invalid record changes nothing (not even the
 * valid keys in it), and a tombstone gives the region its configured
 * policy back, so it locks again. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>

#include "ctl_req.h"
#include "fg_test.h"
#include "sc_config.h"
#include "sc_policyfeed.h"

#define T0 1718000000000LL

static sc_rails rails_with_max_ttl(int64_t max_ttl_ms)
{
    sc_rails r;
    sc_rails_default(&r);
    r.enforce = true;
    r.max_ttl_ms = max_ttl_ms;
    return r;
}

/* The record fleetgate-control publishes for PUT /v1/regions/{region}/policy
 * with body (parsed under the control service's rails), as handle_policy in
 * consumers/ctl_api.c builds it. Returns a malloc'd string; *pol gets the
 * policy the API answered with. */
static void gen_str(yajl_gen g, const char *key, const char *val)
{
    yajl_gen_string(g, (const unsigned char *)key, strlen(key));
    yajl_gen_string(g, (const unsigned char *)val, strlen(val));
}

static char *control_record(const char *region, const char *body,
                            const sc_rails *ctl_rails, sc_policy *pol)
{
    char reason[FG_LOCK_REASON_MAX + 1];
    ctl_req_error err;
    const unsigned char *buf = NULL;
    size_t n = 0;
    char *out = NULL;
    if (ctl_req_parse_policy(body, strlen(body), ctl_rails, pol, reason,
                             &err) != FG_OK) {
        fprintf(stderr, "control refused %s: %s %s\n", body, err.code,
                err.detail);
        return NULL;
    }
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g)
        return NULL;
    yajl_gen_map_open(g);
    gen_str(g, "region", region);
    gen_str(g, "actor", "root");
    gen_str(g, "reason", reason);
    gen_str(g, "request_id", "req-00000000cafef00d");
    yajl_gen_string(g, (const unsigned char *)"ts", 2);
    yajl_gen_integer(g, T0);
    yajl_gen_string(g, (const unsigned char *)"policy", 6);
    ctl_policy_json(g, pol);
    yajl_gen_map_close(g);
    if (yajl_gen_get_buf(g, &buf, &n) == yajl_gen_status_ok) {
        out = malloc(n + 1);
        if (out) {
            memcpy(out, buf, n);
            out[n] = '\0';
        }
    }
    yajl_gen_free(g);
    return out;
}

static bool policy_eq(const sc_policy *a, const sc_policy *b)
{
    return a->mode == b->mode && a->lock_at == b->lock_at &&
           a->unlock_at == b->unlock_at && a->min_devices == b->min_devices &&
           a->for_ms == b->for_ms && a->ttl_ms == b->ttl_ms &&
           a->cooldown_ms == b->cooldown_ms && a->scope == b->scope &&
           strcmp(a->message, b->message) == 0;
}

/* A scorer's configured policy, deliberately unlike the built-in defaults
 * the control service starts from. */
static sc_policy scorer_base(void)
{
    sc_policy p;
    sc_policy_default(&p);
    p.lock_at = 0.8;
    p.unlock_at = 0.2;
    p.min_devices = 5;
    p.for_ms = 1000;
    p.ttl_ms = 60000;
    p.cooldown_ms = 0;
    snprintf(p.message, sizeof(p.message), "Paused in {region} until {until}.");
    return p;
}

static void test_control_records_decode_to_the_operators_policy(void)
{
    sc_rails ctl = rails_with_max_ttl(7 * 86400000LL);
    sc_rails sc = rails_with_max_ttl(7 * 86400000LL);
    sc_policy base = scorer_base(), pol;
    sc_policy_record rec;
    char err[256] = "";
    const char *bodies[] = {
        "{\"reason\":\"DE stays open\",\"mode\":\"never\"}",
        ("{\"reason\":\"slow down\",\"mode\":\"monitor\",\"for\":\"2m\","
         "\"lock_at\":\"0.7\",\"unlock_at\":0.35,\"min_devices\":200,"
         "\"ttl\":\"6h\",\"cooldown\":\"1h\",\"scope\":\"all\"}"),
        ("{\"reason\":\"wording\",\"message\":\"Nutzung in {region} bis "
         "{until} gesperrt \\u2014 {{Support}} ({share} von {devices})\"}"),
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        char *text = control_record("DE", bodies[i], &ctl, &pol);
        FG_CHECK(text != NULL);
        if (!text)
            continue;
        FG_CHECK_INT(sc_policy_record_decode(text, strlen(text), "DE", &base,
                                             &sc, &rec, err, sizeof(err)),
                     FG_OK);
        /* Every key is in the record: the operator's policy, whole, not
         * the scorer's configured values. */
        FG_CHECK(policy_eq(&rec.policy, &pol));
        FG_CHECK_STR(rec.region, "DE");
        FG_CHECK_STR(rec.actor, "root");
        FG_CHECK_STR(rec.request_id, "req-00000000cafef00d");
        FG_CHECK_INT(rec.ts, T0);
        FG_CHECK_INT(rec.ttl_clamped, 0);
        free(text);
    }
    FG_CHECK_INT(rec.policy.mode, SC_MODE_AUTO); /* the last one: message only */
    FG_CHECK(strstr(rec.policy.message, "\xe2\x80\x94 {{Support}}") != NULL);
}

static void test_ttl_over_max_ttl_is_cut(void)
{
    /* The control service allows 7 d, this scorer's rails 1 h. */
    sc_rails ctl = rails_with_max_ttl(7 * 86400000LL);
    sc_rails sc = rails_with_max_ttl(3600000LL);
    sc_policy base = scorer_base(), pol;
    sc_policy_record rec;
    char err[256] = "";
    char *text = control_record("CU", "{\"reason\":\"r\",\"mode\":\"never\","
                                      "\"ttl\":\"3d\"}", &ctl, &pol);
    FG_CHECK(text != NULL);
    if (!text)
        return;
    FG_CHECK_INT(pol.ttl_ms, 3 * 86400000LL);
    FG_CHECK_INT(sc_policy_record_decode(text, strlen(text), "CU", &base, &sc,
                                         &rec, err, sizeof(err)),
                 FG_OK);
    FG_CHECK_INT(rec.policy.mode, SC_MODE_NEVER);
    FG_CHECK_INT(rec.policy.ttl_ms, 3600000LL);
    FG_CHECK_INT(rec.ttl_clamped, 1);
    free(text);
}

static void test_missing_keys_keep_the_configured_values(void)
{
    sc_rails sc = rails_with_max_ttl(7 * 86400000LL);
    sc_policy base = scorer_base();
    sc_policy_record rec;
    char err[256] = "";
    const char *text = "{\"policy\":{\"mode\":\"monitor\",\"for\":120000,"
                       "\"cooldown\":\"10m\"},\"region\":\"UA-43\","
                       "\"approved_by\":\"rita\",\"ts\":null}";
    FG_CHECK_INT(sc_policy_record_decode(text, strlen(text), "UA-43", &base,
                                         &sc, &rec, err, sizeof(err)),
                 FG_OK);
    FG_CHECK_INT(rec.policy.mode, SC_MODE_MONITOR);
    FG_CHECK_INT(rec.policy.for_ms, 120000);
    FG_CHECK_INT(rec.policy.cooldown_ms, 600000);
    FG_CHECK(rec.policy.lock_at == 0.8 && rec.policy.unlock_at == 0.2);
    FG_CHECK_INT(rec.policy.min_devices, 5);
    FG_CHECK_INT(rec.policy.ttl_ms, 60000);
    FG_CHECK_STR(rec.policy.message, base.message);
    FG_CHECK_STR(rec.actor, "");
    FG_CHECK_INT(rec.ts, -1);
    /* An empty policy object is the configured policy itself. */
    text = "{\"region\":\"CU\",\"policy\":{}}";
    FG_CHECK_INT(sc_policy_record_decode(text, strlen(text), "CU", &base, &sc,
                                         &rec, err, sizeof(err)),
                 FG_OK);
    FG_CHECK(policy_eq(&rec.policy, &base));
}

static void test_bad_records_are_refused_naming_the_key(void)
{
    static const struct {
        const char *json, *err;
        fg_status st;
    } cases[] = {
        {"", "record: not JSON", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"mode\":\"never\"}", "not JSON",
         FG_EINVAL},
        {"[\"DE\"]", "record: not a JSON object", FG_EINVAL},
        {"\"never\"", "record: not a JSON object", FG_EINVAL},
        {"{\"policy\":{\"mode\":\"never\"}}", "region: missing", FG_EINVAL},
        {"{\"region\":\"CU\",\"policy\":{\"mode\":\"never\"}}",
         "region: must be the record's key (DE)", FG_EINVAL},
        {"{\"region\":7,\"policy\":{}}", "region: must be", FG_EINVAL},
        {"{\"region\":\"DE\"}", "policy: missing", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":\"never\"}", "policy: must be an object",
         FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":null}", "policy: must be an object",
         FG_EINVAL},
        {"{\"region\":\"DE\",\"region\":\"DE\",\"policy\":{}}",
         "region: given twice", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"mode\":\"never\",\"lock_share\":0.8}}",
         "policy.lock_share: unknown policy key", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"mode\":\"never\",\"mode\":\"auto\"}}",
         "policy.mode: given twice", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"mode\":null}}",
         "policy.mode: must be a string or a number", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"min_devices\":[5]}}",
         "policy.min_devices: must be a string or a number", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"scope\":true}}",
         "policy.scope: must be a string or a number", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"mode\":\"sometimes\"}}",
         "policy.mode:", FG_EINVAL},
        /* Valid keys in a record with a bad one: the whole is refused. */
        {"{\"region\":\"DE\",\"policy\":{\"mode\":\"auto\",\"lock_at\":\"x\"}}",
         "policy.lock_at:", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"lock_at\":1.5}}", "policy.lock_at:",
         FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"for\":\"soon\"}}", "policy.for:",
         FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"for\":1.5}}", "policy.for:",
         FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"ttl\":0}}", "policy.ttl:", FG_EINVAL},
        /* Each fine alone, not together (the base's lock_at is 0.8). */
        {"{\"region\":\"DE\",\"policy\":{\"unlock_at\":0.9}}",
         "policy.unlock_at: must be below lock_at", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"message\":\"until {untill}\"}}",
         "policy.message:", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"message\":\"a\\u0000b\"}}",
         "record: has a NUL character", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"message\":\"a\\nb\"}}",
         "policy.message:", FG_EINVAL},
        {"{\"region\":\"DE\",\"actor\":42,\"policy\":{}}",
         "actor: must be a string", FG_EINVAL},
        {"{\"region\":\"DE\",\"ts\":\"today\",\"policy\":{}}",
         "ts: must be an integer", FG_EINVAL},
        {"{\"region\":\"DE\",\"policy\":{\"message\":\"\xff\xfe\"}}", "not JSON",
         FG_EINVAL},
    };
    sc_rails sc = rails_with_max_ttl(7 * 86400000LL);
    sc_policy base = scorer_base();
    sc_policy_record rec;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        fg_status st = sc_policy_record_decode(cases[i].json,
                                               strlen(cases[i].json), "DE",
                                               &base, &sc, &rec, err,
                                               sizeof(err));
        FG_CHECK_INT(st, cases[i].st);
        if (!strstr(err, cases[i].err)) {
            fprintf(stderr, "case %zu (%s): error \"%s\" lacks \"%s\"\n", i,
                    cases[i].json, err, cases[i].err);
            FG_CHECK(0);
        }
    }
    /* Bytes after the NUL of a C string are still part of the record. */
    const char nul[] = "{\"region\":\"DE\",\"policy\":{}}\0junk";
    char err[256] = "";
    FG_CHECK_INT(sc_policy_record_decode(nul, sizeof(nul) - 1, "DE", &base,
                                         &sc, &rec, err, sizeof(err)),
                 FG_EINVAL);
    /* Over the size cap, whatever it holds. */
    size_t big = SC_POLICY_RECORD_MAX + 1;
    char *huge = malloc(big);
    FG_CHECK(huge != NULL);
    if (huge) {
        memset(huge, ' ', big);
        FG_CHECK_INT(sc_policy_record_decode(huge, big, "DE", &base, &sc, &rec,
                                             err, sizeof(err)),
                     FG_ETOOBIG);
        free(huge);
    }
}

/* ---- applied to an engine ---- */

static sc_region_score score(const char *region, int64_t n, int64_t k)
{
    sc_region_score s;
    memset(&s, 0, sizeof(s));
    snprintf(s.region, sizeof(s.region), "%s", region);
    s.devices = n;
    s.grey = k;
    return s;
}

/* Runs one tick with DE and CU at 95% grey; returns how many lock records
 * for region it decided. */
static int locks_decided(sc_engine *e, int64_t now, const char *region)
{
    sc_region_score s[2] = {score("CU", 100, 95), score("DE", 100, 95)};
    sc_decision out[8];
    size_t nout = 0;
    int n = 0;
    FG_CHECK_INT(sc_engine_tick(e, now, s, 2, NULL, out, 8, &nout), FG_OK);
    for (size_t i = 0; i < nout; i++) {
        /* Confirm it, as the lock topic would, so it is not pending. */
        sc_engine_observe_lock(e, &out[i].lk);
        if (strcmp(out[i].lk.region, region) == 0 &&
            out[i].lk.state == FG_LOCK_LOCKED)
            n++;
    }
    return n;
}

static void test_apply_never_invalid_and_tombstone(void)
{
    char *argv[] = {"fleetgate-scorer",
                    "--set", "policy.min_devices=5",
                    "--set", "policy.for=0",
                    "--set", "policy.cooldown=0",
                    "--set", "policy.ttl=1m",
                    "--set", "policy.DE.lock_at=0.8",
                    "--set", "policy.DE.message=DE closed until {until}",
                    "--set", "rails.enforce=true",
                    "--set", "scorer.policies_topic=itest.policies",
                    NULL};
    sc_config cfg;
    sc_policy defaults;
    sc_rails rails;
    sc_policy_record rec;
    char err[256] = "";
    memset(&cfg, 0, sizeof(cfg));
    FG_CHECK_INT(sc_config_load(&cfg, &defaults, &rails,
                                (int)(sizeof(argv) / sizeof(argv[0])) - 1, argv),
                 SC_CLI_RUN);
    FG_CHECK_STR(cfg.policies_topic, "itest.policies");
    sc_engine *e = sc_engine_new(&defaults, &rails, err, sizeof(err));
    FG_CHECK(e != NULL);
    if (!e) {
        sc_config_free(&cfg);
        return;
    }
    FG_CHECK_INT(sc_config_overrides(&cfg, e, err, sizeof(err)), FG_OK);
    sc_policy de_conf = *sc_engine_policy(e, "DE");
    FG_CHECK(de_conf.lock_at == 0.8);

    /* The configured region policy matches what the engine got. */
    sc_policy p;
    int configured = -1;
    FG_CHECK_INT(sc_config_region_policy(&cfg, &defaults, "DE", &p,
                                         &configured, err, sizeof(err)),
                 FG_OK);
    FG_CHECK(configured == 1 && policy_eq(&p, &de_conf));
    FG_CHECK_INT(sc_config_region_policy(&cfg, &defaults, "CU", &p,
                                         &configured, err, sizeof(err)),
                 FG_OK);
    FG_CHECK(configured == 0 && policy_eq(&p, &defaults));

    /* An operator's never for DE: CU locks, DE does not. */
    const char *never = "{\"region\":\"DE\",\"actor\":\"root\",\"reason\":"
                        "\"stays open\",\"policy\":{\"mode\":\"never\"}}";
    FG_CHECK_INT(sc_policy_record_apply(e, &cfg, &defaults, &rails, "DE", never,
                                        strlen(never), &rec, err, sizeof(err)),
                 FG_OK);
    FG_CHECK_INT(sc_engine_policy(e, "DE")->mode, SC_MODE_NEVER);
    /* Keys the record lacks are DE's configured ones. */
    FG_CHECK(sc_engine_policy(e, "DE")->lock_at == 0.8);
    FG_CHECK_STR(sc_engine_policy(e, "DE")->message, "DE closed until {until}");
    FG_CHECK_INT(locks_decided(e, T0, "DE"), 0);
    FG_CHECK_INT(locks_decided(e, T0 + 1000, "DE"), 0);
    FG_CHECK(sc_engine_record(e, "CU") != NULL &&
             sc_engine_record(e, "CU")->state == FG_LOCK_LOCKED);

    /* A bad record, even one whose mode is valid, changes nothing. */
    const char *bad = "{\"region\":\"DE\",\"policy\":{\"mode\":\"auto\","
                      "\"lock_at\":\"high\"}}";
    FG_CHECK_INT(sc_policy_record_apply(e, &cfg, &defaults, &rails, "DE", bad,
                                        strlen(bad), &rec, err, sizeof(err)),
                 FG_EINVAL);
    FG_CHECK(strstr(err, "policy.lock_at") != NULL);
    FG_CHECK_INT(sc_engine_policy(e, "DE")->mode, SC_MODE_NEVER);
    FG_CHECK_INT(locks_decided(e, T0 + 2000, "DE"), 0);

    /* The tombstone: DE's configured policy again, and DE locks. */
    FG_CHECK_INT(sc_policy_record_apply(e, &cfg, &defaults, &rails, "DE", NULL,
                                        0, &rec, err, sizeof(err)),
                 FG_OK);
    FG_CHECK(rec.tombstone == 1 && rec.configured == 1);
    FG_CHECK(policy_eq(sc_engine_policy(e, "DE"), &de_conf));
    FG_CHECK_INT(locks_decided(e, T0 + 3000, "DE"), 1);
    FG_CHECK_STR(sc_engine_record(e, "DE")->message,
                 "DE closed until 2024-06-10T06:14:23Z");

    /* A region without an override goes back to the defaults. */
    const char *mon = "{\"region\":\"US\",\"policy\":{\"mode\":\"monitor\","
                      "\"lock_at\":0.9}}";
    FG_CHECK_INT(sc_policy_record_apply(e, &cfg, &defaults, &rails, "US", mon,
                                        strlen(mon), &rec, err, sizeof(err)),
                 FG_OK);
    FG_CHECK(sc_engine_policy(e, "US")->lock_at == 0.9);
    FG_CHECK_INT(sc_policy_record_apply(e, &cfg, &defaults, &rails, "US", NULL,
                                        0, &rec, err, sizeof(err)),
                 FG_OK);
    FG_CHECK(rec.configured == 0);
    FG_CHECK(policy_eq(sc_engine_policy(e, "US"), &defaults));

    sc_engine_free(e);
    sc_config_free(&cfg);
}

FG_TEST_MAIN(test_control_records_decode_to_the_operators_policy,
             test_ttl_over_max_ttl_is_cut,
             test_missing_keys_keep_the_configured_values,
             test_bad_records_are_refused_naming_the_key,
             test_apply_never_invalid_and_tombstone)
