/* SPDX-License-Identifier: Apache-2.0 */
/* Control API request validation (consumers/ctl_req.c): routes, the list
 * query, and lock/unlock bodies refused with the right error code. */
#include <string.h>

#include "ctl_req.h"
#include "fg_test.h"

static const ctl_req_limits LIM = {3600, 600, 86400};

static ctl_route route(fg_http_method m, const char *path, char *region,
                       int *ok)
{
    return ctl_route_match(m, path, strlen(path), region, ok);
}

static void test_routes(void)
{
    char region[CTL_SEGMENT_MAX + 1];
    int ok;
    FG_CHECK_INT(route(FG_HTTP_GET, "/v1/regions", region, &ok), CTL_ROUTE_LIST);
    FG_CHECK(ok);
    FG_CHECK_INT(route(FG_HTTP_HEAD, "/v1/regions/CU", region, &ok),
                 CTL_ROUTE_REGION);
    FG_CHECK(ok);
    FG_CHECK_STR(region, "CU");
    FG_CHECK_INT(route(FG_HTTP_POST, "/v1/regions/UA-43/lock", region, &ok),
                 CTL_ROUTE_LOCK);
    FG_CHECK(ok);
    FG_CHECK_STR(region, "UA-43");
    FG_CHECK_INT(route(FG_HTTP_POST, "/v1/regions/CU/unlock", region, &ok),
                 CTL_ROUTE_UNLOCK);
    FG_CHECK_INT(route(FG_HTTP_POST, "/v1/locks/unlock-all", region, &ok),
                 CTL_ROUTE_UNLOCK_ALL);
    FG_CHECK(ok);
    FG_CHECK_STR(region, "");
    /* Wrong method: routed, method_ok 0 (405). */
    FG_CHECK_INT(route(FG_HTTP_GET, "/v1/regions/CU/lock", region, &ok),
                 CTL_ROUTE_LOCK);
    FG_CHECK(!ok);
    FG_CHECK_INT(route(FG_HTTP_POST, "/v1/regions", region, &ok),
                 CTL_ROUTE_LIST);
    FG_CHECK(!ok);
    FG_CHECK_INT(route(FG_HTTP_DELETE, "/v1/locks/unlock-all", region, &ok),
                 CTL_ROUTE_UNLOCK_ALL);
    FG_CHECK(!ok);
    FG_CHECK_STR(ctl_route_allow(CTL_ROUTE_LOCK), "POST");
    /* Unknown paths. */
    const char *const none[] = {"/", "", "/v1", "/v1/", "/v1/regions/",
                                "/v1//regions", "/v2/regions",
                                "/v1/regions/CU/lock/x", "/v1/regions/CU/pin",
                                "/v1/locks", "/v1/locks/unlock-all/",
                                "v1/regions"};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
        FG_CHECK_INT(route(FG_HTTP_GET, none[i], region, &ok), CTL_ROUTE_NONE);
    /* A long segment is cut, and then refused as a region. */
    FG_CHECK_INT(route(FG_HTTP_POST, "/v1/regions/ABCDEFGHIJKLMNOPQRSTUVWXYZ0123/lock",
                       region, &ok), CTL_ROUTE_LOCK);
    FG_CHECK_INT(strlen(region), CTL_SEGMENT_MAX);
    FG_CHECK(!ctl_req_region_ok(region));
    FG_CHECK(ctl_req_region_ok("CU"));
    FG_CHECK(ctl_req_region_ok("UA-43"));
    FG_CHECK(!ctl_req_region_ok("cu"));
    FG_CHECK(!ctl_req_region_ok("CUB"));
    FG_CHECK(!ctl_req_region_ok("C"));
    FG_CHECK(!ctl_req_region_ok(""));
}

static void test_list_query(void)
{
    ctl_list_query q;
    ctl_req_error e;
    FG_CHECK_INT(ctl_req_list_query(NULL, &q, &e), FG_OK);
    FG_CHECK_INT(q.sort, CTL_SORT_REGION);
    FG_CHECK_INT(q.state, -1);
    FG_CHECK_INT(ctl_req_list_query("sort=share&state=locked", &q, &e), FG_OK);
    FG_CHECK_INT(q.sort, CTL_SORT_SHARE);
    FG_CHECK_INT(q.state, 1);
    FG_CHECK_INT(ctl_req_list_query("state=expired&sort=devices", &q, &e), FG_OK);
    FG_CHECK_INT(q.sort, CTL_SORT_DEVICES);
    FG_CHECK_INT(q.state, CTL_STATE_EXPIRED);
    const char *const bad[] = {"sort=name", "sort=share&sort=region",
                               "state=LOCKED", "limit=5", "sort", "sort=sh%61re",
                               "&", "sort=share&&state=locked"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        e.code = NULL;
        FG_CHECK_INT(ctl_req_list_query(bad[i], &q, &e), FG_EINVAL);
        FG_CHECK_STR(e.code, "invalid_query");
    }
}

static fg_status lock(const char *body, ctl_lock_req *lr, ctl_req_error *e)
{
    e->code = NULL;
    return ctl_req_parse_lock(body, strlen(body), &LIM, lr, e);
}

static void test_lock_body_ok(void)
{
    ctl_lock_req lr;
    ctl_req_error e;
    FG_CHECK_INT(lock("{\"reason\":\"grey wave\"}", &lr, &e), FG_OK);
    FG_CHECK_STR(lr.reason, "grey wave");
    FG_CHECK_INT(lr.ttl_s, 600); /* the default */
    FG_CHECK_INT(lr.scope, FG_SCOPE_GREY);
    FG_CHECK(!lr.dry_run && !lr.has_message);
    FG_CHECK_INT(lock("{\"ttl_s\":3600,\"scope\":\"all\",\"reason\":\"r\","
                      "\"message\":\"Paused \\u00e9\",\"dry_run\":true}", &lr, &e),
                 FG_OK);
    FG_CHECK_INT(lr.ttl_s, 3600);
    FG_CHECK_INT(lr.scope, FG_SCOPE_ALL);
    FG_CHECK(lr.dry_run && lr.has_message);
    FG_CHECK_STR(lr.message, "Paused \xc3\xa9");
    /* null is absent. */
    FG_CHECK_INT(lock("{\"reason\":\"r\",\"ttl_s\":null,\"scope\":null}", &lr, &e),
                 FG_OK);
    FG_CHECK_INT(lr.ttl_s, 600);
    /* A body that is not NUL-terminated is read to its length only. */
    const char buf[] = "{\"reason\":\"r\"}GARBAGE";
    FG_CHECK_INT(ctl_req_parse_lock(buf, 14, &LIM, &lr, &e), FG_OK);
}

static void expect(const char *body, const char *code, const char *field)
{
    ctl_lock_req lr;
    ctl_req_error e;
    FG_CHECK_INT(lock(body, &lr, &e), FG_EINVAL);
    FG_CHECK_STR(e.code, code);
    FG_CHECK_STR(e.field, field);
}

static void test_lock_body_refused(void)
{
    expect("", "invalid_json", "");
    expect("{", "invalid_json", "");
    expect("{\"reason\":\"r\",}", "invalid_json", "");
    expect("{\"reason\":\"r\"} {}", "invalid_json", "");
    expect("[]", "not_an_object", "");
    expect("\"reason\"", "not_an_object", "");
    expect("{}", "missing_field", "reason");
    expect("{\"ttl_s\":60}", "missing_field", "reason");
    expect("{\"reason\":null}", "missing_field", "reason");
    expect("{\"reason\":\"\"}", "invalid_value", "reason");
    expect("{\"reason\":\"   \"}", "invalid_value", "reason");
    expect("{\"reason\":\"a\\nb\"}", "invalid_value", "reason");
    expect("{\"reason\":\"a\\u0000b\"}", "invalid_json", "");
    expect("{\"reason\":7}", "wrong_type", "reason");
    expect("{\"reason\":\"r\",\"reason\":\"s\"}", "invalid_json", "reason");
    expect("{\"reason\":\"r\",\"ttl_s\":3601}", "out_of_range", "ttl_s");
    expect("{\"reason\":\"r\",\"ttl_s\":0}", "out_of_range", "ttl_s");
    expect("{\"reason\":\"r\",\"ttl_s\":-5}", "out_of_range", "ttl_s");
    expect("{\"reason\":\"r\",\"ttl_s\":60.0}", "wrong_type", "ttl_s");
    expect("{\"reason\":\"r\",\"ttl_s\":\"60\"}", "wrong_type", "ttl_s");
    expect("{\"reason\":\"r\",\"ttl_s\":99999999999999999999}", "wrong_type",
           "ttl_s");
    expect("{\"reason\":\"r\",\"scope\":\"some\"}", "invalid_value", "scope");
    expect("{\"reason\":\"r\",\"dry_run\":1}", "wrong_type", "dry_run");
    expect("{\"reason\":\"r\",\"ttl\":60}", "unknown_field", "ttl");
    expect("{\"reason\":\"r\",\"message\":\"\\u0007\"}", "invalid_value",
           "message");
    /* Invalid UTF-8. */
    expect("{\"reason\":\"\xff\"}", "invalid_json", "");
    /* Caps: 256 bytes of reason are fine, 257 are not. */
    char body[700];
    char r256[257];
    memset(r256, 'r', 256);
    r256[256] = '\0';
    ctl_lock_req lr;
    ctl_req_error e;
    snprintf(body, sizeof(body), "{\"reason\":\"%s\"}", r256);
    FG_CHECK_INT(lock(body, &lr, &e), FG_OK);
    snprintf(body, sizeof(body), "{\"reason\":\"%sx\"}", r256);
    expect(body, "too_long", "reason");
    /* A raw NUL byte in the body. */
    const char nul[] = "{\"reason\":\"r\"}\0";
    FG_CHECK_INT(ctl_req_parse_lock(nul, sizeof(nul) - 1, &LIM, &lr, &e),
                 FG_EINVAL);
    FG_CHECK_STR(e.code, "invalid_json");
}

static void test_unlock_body(void)
{
    ctl_unlock_req ur;
    ctl_req_error e;
    const char *b = "{\"reason\":\"all clear\",\"pin_s\":3600}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_OK);
    FG_CHECK_STR(ur.reason, "all clear");
    FG_CHECK_INT(ur.pin_s, 3600);
    b = "{\"reason\":\"ok\"}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_OK);
    FG_CHECK_INT(ur.pin_s, 0);
    b = "{\"pin_s\":60}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_EINVAL);
    FG_CHECK_STR(e.code, "missing_field");
    FG_CHECK_STR(e.field, "reason");
    b = "{\"reason\":\"x\",\"pin_s\":86401}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_EINVAL);
    FG_CHECK_STR(e.code, "out_of_range");
    FG_CHECK_STR(e.field, "pin_s");
    b = "{\"reason\":\"x\",\"ttl_s\":5}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_EINVAL);
    FG_CHECK_STR(e.code, "unknown_field");
    b = "not json";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_EINVAL);
    FG_CHECK_STR(e.code, "invalid_json");
}

/* unlock and unlock-all take dry_run like a lock (the dashboard previews
 * every action with one); it is off unless true, and only a boolean. */
static void test_unlock_body_dry_run(void)
{
    ctl_unlock_req ur;
    ctl_req_error e;
    const char *b = "{\"reason\":\"ok\"}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_OK);
    FG_CHECK(!ur.dry_run);
    b = "{\"reason\":\"what if\",\"pin_s\":600,\"dry_run\":true}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_OK);
    FG_CHECK(ur.dry_run);
    FG_CHECK_INT(ur.pin_s, 600);
    FG_CHECK_STR(ur.reason, "what if");
    b = "{\"dry_run\":false,\"reason\":\"r\"}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_OK);
    FG_CHECK(!ur.dry_run);
    b = "{\"reason\":\"r\",\"dry_run\":null}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_OK);
    FG_CHECK(!ur.dry_run);
    static const char *const wrong[] = {
        "{\"reason\":\"r\",\"dry_run\":1}",
        "{\"reason\":\"r\",\"dry_run\":\"true\"}",
        "{\"reason\":\"r\",\"dry_run\":[true]}",
        "{\"reason\":\"r\",\"dry_run\":{}}",
    };
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        FG_CHECK_INT(ctl_req_parse_unlock(wrong[i], strlen(wrong[i]), &LIM,
                                          &ur, &e), FG_EINVAL);
        FG_CHECK_STR(e.code, "wrong_type");
        FG_CHECK_STR(e.field, "dry_run");
    }
    /* A dry run still needs a reason, and the other rules still hold. */
    b = "{\"dry_run\":true}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_EINVAL);
    FG_CHECK_STR(e.code, "missing_field");
    FG_CHECK_STR(e.field, "reason");
    b = "{\"reason\":\"r\",\"dry_run\":true,\"dry_run\":false}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_EINVAL);
    FG_CHECK_STR(e.code, "invalid_json");
    FG_CHECK_STR(e.field, "dry_run");
    b = "{\"reason\":\"r\",\"dry_run\":true,\"pin_s\":-1}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_EINVAL);
    FG_CHECK_STR(e.code, "out_of_range");
    b = "{\"reason\":\"r\",\"dryrun\":true}";
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_EINVAL);
    FG_CHECK_STR(e.code, "unknown_field");
    FG_CHECK_STR(e.field, "dryrun");
}

/* Issue 4: approve and policy routes, and the policy body. */
static void test_approve_and_policy_routes(void)
{
    char region[CTL_SEGMENT_MAX + 1];
    int ok = 0;
    FG_CHECK_INT(route(FG_HTTP_POST, "/v1/requests/req-0123456789abcdef/approve",
                       region, &ok), CTL_ROUTE_APPROVE);
    FG_CHECK(ok);
    FG_CHECK_STR(region, "req-0123456789abcdef");
    FG_CHECK_INT(route(FG_HTTP_GET, "/v1/requests/x/approve", region, &ok),
                 CTL_ROUTE_APPROVE);
    FG_CHECK(!ok);
    FG_CHECK_INT(route(FG_HTTP_PUT, "/v1/regions/CU/policy", region, &ok),
                 CTL_ROUTE_POLICY);
    FG_CHECK(ok);
    FG_CHECK_STR(region, "CU");
    FG_CHECK_INT(route(FG_HTTP_POST, "/v1/regions/CU/policy", region, &ok),
                 CTL_ROUTE_POLICY);
    FG_CHECK(!ok);
    FG_CHECK_STR(ctl_route_allow(CTL_ROUTE_POLICY), "PUT, DELETE");
    FG_CHECK_STR(ctl_route_str(CTL_ROUTE_APPROVE), "approve");
    FG_CHECK_INT(route(FG_HTTP_POST, "/v1/requests/x", region, &ok),
                 CTL_ROUTE_NONE);
}

static void test_policy_body(void)
{
    sc_rails rails;
    sc_policy p;
    char reason[FG_LOCK_REASON_MAX + 1];
    ctl_req_error e;
    sc_rails_default(&rails);
    const char *b = "{\"reason\":\"DE stays open\",\"mode\":\"never\","
                    "\"lock_at\":0.8,\"unlock_at\":\"0.2\",\"for\":\"2m\","
                    "\"ttl\":3600000,\"scope\":\"all\",\"min_devices\":10}";
    FG_CHECK_INT(ctl_req_parse_policy(b, strlen(b), &rails, &p, reason, &e),
                 FG_OK);
    FG_CHECK_INT(p.mode, SC_MODE_NEVER);
    FG_CHECK(p.lock_at > 0.79 && p.lock_at < 0.81);
    FG_CHECK(p.unlock_at > 0.19 && p.unlock_at < 0.21);
    FG_CHECK_INT(p.for_ms, 120000);
    FG_CHECK_INT(p.ttl_ms, 3600000);
    FG_CHECK_INT(p.min_devices, 10);
    FG_CHECK_INT(p.scope, FG_SCOPE_ALL);
    FG_CHECK_STR(reason, "DE stays open");
    /* A bad value names its key. */
    b = "{\"reason\":\"x\",\"mode\":\"sometimes\"}";
    FG_CHECK_INT(ctl_req_parse_policy(b, strlen(b), &rails, &p, reason, &e),
                 FG_EINVAL);
    FG_CHECK_STR(e.code, "invalid_value");
    FG_CHECK_STR(e.field, "mode");
    /* Cross-key rule: unlock_at must be below lock_at. */
    b = "{\"reason\":\"x\",\"lock_at\":0.5,\"unlock_at\":0.7}";
    FG_CHECK_INT(ctl_req_parse_policy(b, strlen(b), &rails, &p, reason, &e),
                 FG_EINVAL);
    FG_CHECK_STR(e.field, "unlock_at");
    /* ttl over the rails' max_ttl. */
    rails.max_ttl_ms = 3600000;
    b = "{\"reason\":\"x\",\"ttl\":\"2h\"}";
    FG_CHECK_INT(ctl_req_parse_policy(b, strlen(b), &rails, &p, reason, &e),
                 FG_EINVAL);
    FG_CHECK_STR(e.field, "ttl");
    /* An absent ttl follows the lower max_ttl. */
    b = "{\"reason\":\"x\"}";
    FG_CHECK_INT(ctl_req_parse_policy(b, strlen(b), &rails, &p, reason, &e),
                 FG_OK);
    FG_CHECK_INT(p.ttl_ms, 3600000);
    b = "{\"reason\":\"x\",\"message\":\"until {untill}\"}";
    FG_CHECK_INT(ctl_req_parse_policy(b, strlen(b), &rails, &p, reason, &e),
                 FG_EINVAL);
    FG_CHECK_STR(e.field, "message");
    b = "{\"mode\":\"auto\"}";
    FG_CHECK_INT(ctl_req_parse_policy(b, strlen(b), &rails, &p, reason, &e),
                 FG_EINVAL);
    FG_CHECK_STR(e.code, "missing_field");
    b = "{\"reason\":\"x\",\"lock_at\":true}";
    FG_CHECK_INT(ctl_req_parse_policy(b, strlen(b), &rails, &p, reason, &e),
                 FG_EINVAL);
    FG_CHECK_STR(e.code, "wrong_type");
    FG_CHECK_STR(e.field, "lock_at");
    b = "{\"reason\":\"x\",\"colour\":\"red\"}";
    FG_CHECK_INT(ctl_req_parse_policy(b, strlen(b), &rails, &p, reason, &e),
                 FG_EINVAL);
    FG_CHECK_STR(e.code, "unknown_field");
}

/* DELETE /v1/regions/{code}/policy is the reset (its own route, so that
 * the audit, the answer and the metrics say policy_reset); PUT stays the
 * policy; any other method on the path is 405 with Allow naming both. */
static void test_policy_reset_route(void)
{
    char region[CTL_SEGMENT_MAX + 1];
    int ok = 0;
    FG_CHECK_INT(route(FG_HTTP_DELETE, "/v1/regions/UA-43/policy", region, &ok),
                 CTL_ROUTE_POLICY_RESET);
    FG_CHECK(ok);
    FG_CHECK_STR(region, "UA-43");
    FG_CHECK_STR(ctl_route_str(CTL_ROUTE_POLICY_RESET), "policy_reset");
    FG_CHECK_STR(ctl_route_allow(CTL_ROUTE_POLICY_RESET), "PUT, DELETE");
    FG_CHECK_INT(route(FG_HTTP_PUT, "/v1/regions/UA-43/policy", region, &ok),
                 CTL_ROUTE_POLICY);
    FG_CHECK(ok);
    const fg_http_method wrong[] = {FG_HTTP_GET, FG_HTTP_HEAD, FG_HTTP_POST,
                                    FG_HTTP_OTHER};
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        ok = -1;
        FG_CHECK_INT(route(wrong[i], "/v1/regions/CU/policy", region, &ok),
                     CTL_ROUTE_POLICY);
        FG_CHECK_INT(ok, 0);
    }
    /* DELETE elsewhere is still a wrong method, not a reset. */
    FG_CHECK_INT(route(FG_HTTP_DELETE, "/v1/regions/CU/lock", region, &ok),
                 CTL_ROUTE_LOCK);
    FG_CHECK(!ok);
    FG_CHECK_INT(route(FG_HTTP_DELETE, "/v1/regions/CU", region, &ok),
                 CTL_ROUTE_REGION);
    FG_CHECK(!ok);
    FG_CHECK_INT(route(FG_HTTP_DELETE, "/v1/regions/CU/policy/x", region, &ok),
                 CTL_ROUTE_NONE);
}

/* The reset's body: reason and nothing else. */
static void test_reason_body(void)
{
    char reason[FG_LOCK_REASON_MAX + 1];
    ctl_req_error e;
    const char *b = "{\"reason\":\"back to the config\"}";
    FG_CHECK_INT(ctl_req_parse_reason(b, strlen(b), reason, &e), FG_OK);
    FG_CHECK_STR(reason, "back to the config");
    static const struct {
        const char *body, *code, *field;
    } bad[] = {
        {"", "invalid_json", ""},
        {"{}", "missing_field", "reason"},
        {"{\"reason\":null}", "missing_field", "reason"},
        {"{\"reason\":\"  \"}", "invalid_value", "reason"},
        {"{\"reason\":1}", "wrong_type", "reason"},
        {"{\"reason\":\"r\",\"mode\":\"auto\"}", "unknown_field", "mode"},
        {"{\"reason\":\"r\",\"dry_run\":true}", "unknown_field", "dry_run"},
        {"{\"reason\":\"a\\u0000b\"}", "invalid_json", ""},
        {"[\"reason\"]", "not_an_object", ""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&e, 0, sizeof(e));
        FG_CHECK_INT(ctl_req_parse_reason(bad[i].body, strlen(bad[i].body),
                                          reason, &e), FG_EINVAL);
        FG_CHECK_STR(e.code, bad[i].code);
        FG_CHECK_STR(e.field, bad[i].field);
    }
}

/* The {id} of an approve: only the form new ids have. */
static void test_request_id(void)
{
    FG_CHECK(ctl_req_id_ok("req-0123456789abcdef"));
    FG_CHECK(!ctl_req_id_ok("req-0123456789ABCDEF"));
    FG_CHECK(!ctl_req_id_ok("req-0123456789abcde"));
    FG_CHECK(!ctl_req_id_ok("req-0123456789abcdef0"));
    FG_CHECK(!ctl_req_id_ok("REQ-0123456789abcdef"));
    FG_CHECK(!ctl_req_id_ok("req_0123456789abcdef"));
    FG_CHECK(!ctl_req_id_ok("req-0123456789abcdeg"));
    FG_CHECK(!ctl_req_id_ok("req-%30123456789abcd"));
    FG_CHECK(!ctl_req_id_ok("\xe2\x80\xae" "CU*")); /* U+202E */
    FG_CHECK(!ctl_req_id_ok("*"));
    FG_CHECK(!ctl_req_id_ok(""));
    /* A segment cut at CTL_SEGMENT_MAX never passes for a whole id. */
    char region[CTL_SEGMENT_MAX + 1];
    int ok = 0;
    FG_CHECK_INT(route(FG_HTTP_POST,
                       "/v1/requests/req-0123456789abcdefXXXXXXXX/approve",
                       region, &ok), CTL_ROUTE_APPROVE);
    FG_CHECK(!ctl_req_id_ok(region));
    /* The \u0000 escape, but not an escaped backslash before u0000. */
    FG_CHECK(ctl_req_json_has_nul("\"\\u0000\"", 8));
    FG_CHECK(!ctl_req_json_has_nul("\"\\\\u0000\"", 9));
    FG_CHECK(ctl_req_json_has_nul("\"\\\\\\u0000\"", 10));
    FG_CHECK(!ctl_req_json_has_nul("\"\\u000\"", 7));
}

/* GET /v1/stream: GET only (HEAD and POST get 405 with Allow: GET); no
 * segment; nothing under it. */
static void test_stream_route(void)
{
    char region[CTL_SEGMENT_MAX + 1];
    int ok = 0;
    FG_CHECK_INT(route(FG_HTTP_GET, "/v1/stream", region, &ok),
                 CTL_ROUTE_STREAM);
    FG_CHECK(ok);
    FG_CHECK_STR(region, "");
    FG_CHECK_INT(route(FG_HTTP_HEAD, "/v1/stream", region, &ok),
                 CTL_ROUTE_STREAM);
    FG_CHECK(!ok);
    FG_CHECK_INT(route(FG_HTTP_POST, "/v1/stream", region, &ok),
                 CTL_ROUTE_STREAM);
    FG_CHECK(!ok);
    FG_CHECK_STR(ctl_route_allow(CTL_ROUTE_STREAM), "GET");
    FG_CHECK_STR(ctl_route_str(CTL_ROUTE_STREAM), "stream");
    FG_CHECK_INT(route(FG_HTTP_GET, "/v1/stream/CU", region, &ok),
                 CTL_ROUTE_NONE);
    FG_CHECK_INT(route(FG_HTTP_GET, "/v1/stream/", region, &ok),
                 CTL_ROUTE_NONE);
    FG_CHECK_INT(route(FG_HTTP_GET, "/v1/streams", region, &ok),
                 CTL_ROUTE_NONE);
}

/* Found by tests/fuzz/fuzz_ctl_lock: yajl accepts UTF-8 that is not
 * strict (a lone surrogate from "\udc01", an overlong form), which
 * fg_lock_decode then refuses, so the lock would be published and ignored
 * by every reader; and an error's field cut inside a character made the
 * JSON answer malformed. */
static void test_fuzz_text_rules(void)
{
    ctl_lock_req lr;
    ctl_unlock_req ur;
    ctl_list_query q;
    ctl_req_error e;
    char body[256], key[81];
    expect("{\"reason\":\"ca\\udc01\"}", "invalid_value", "reason");
    expect("{\"reason\":\"r\",\"message\":\"\\udfff\"}", "invalid_value",
           "message");
    expect("{\"reason\":\"over\xc0\xaelong\"}", "invalid_value", "reason");
    expect("{\"reason\":\"\xed\xa0\x80\"}", "invalid_value", "reason");
    const char *b = "{\"reason\":\"\xf4\x90\x80\x80\"}"; /* over U+10FFFF */
    FG_CHECK_INT(ctl_req_parse_unlock(b, strlen(b), &LIM, &ur, &e), FG_EINVAL);
    FG_CHECK_STR(e.field, "reason");
    /* A surrogate pair is a real character. */
    FG_CHECK_INT(lock("{\"reason\":\"\\ud83d\\ude00\"}", &lr, &e), FG_OK);
    FG_CHECK_STR(lr.reason, "\xf0\x9f\x98\x80");
    /* 40 two-byte characters as an unknown key: the field keeps 15 whole
     * characters (30 of its 31 bytes), not 15 and a half. */
    for (int i = 0; i < 40; i++)
        memcpy(key + 2 * i, "\xc3\xa9", 2);
    key[80] = '\0';
    snprintf(body, sizeof(body), "{\"%s\":1,\"reason\":\"r\"}", key);
    FG_CHECK_INT(lock(body, &lr, &e), FG_EINVAL);
    FG_CHECK_STR(e.code, "unknown_field");
    FG_CHECK_INT((int)strlen(e.field), 30);
    FG_CHECK(memcmp(e.field, key, 30) == 0);
    /* Raw bytes of a query key are named as '?', not copied. */
    FG_CHECK_INT(ctl_req_list_query("\xff\xfe=1", &q, &e), FG_EINVAL);
    FG_CHECK_STR(e.field, "??");
}

FG_TEST_MAIN(test_routes, test_list_query, test_lock_body_ok,
             test_lock_body_refused, test_unlock_body,
             test_unlock_body_dry_run, test_approve_and_policy_routes,
             test_policy_body, test_policy_reset_route, test_reason_body,
             test_request_id, test_stream_route, test_fuzz_text_rules)
