/* SPDX-License-Identifier: Apache-2.0 */
/* The control service's region table (consumers/ctl_state.c): score rows
 * as the scorer publishes them, lock records, effective state, sorting,
 * filtering, dry-run estimates, and the audit record (ctl_audit.c). */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_audit.h"
#include "ctl_state.h"
#include "fg_test.h"

static int mp_put(void *data, const char *buf, size_t len)
{
    return msgpack_sbuffer_write(data, buf, len);
}

static void kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    msgpack_pack_str(pk, strlen(k));
    msgpack_pack_str_body(pk, k, strlen(k));
    msgpack_pack_str(pk, strlen(v));
    msgpack_pack_str_body(pk, v, strlen(v));
}

static void key(msgpack_packer *pk, const char *k)
{
    msgpack_pack_str(pk, strlen(k));
    msgpack_pack_str_body(pk, k, strlen(k));
}

/* A row shaped like sc_eval.c's publish_row. */
static void row(msgpack_sbuffer *sb, const char *region, int64_t ts,
                int64_t devices, int64_t grey, int with_hi)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, mp_put);
    msgpack_pack_map(&pk, with_hi ? 10 : 9);
    kv_str(&pk, "region", region);
    key(&pk, "ts");
    msgpack_pack_int64(&pk, ts);
    key(&pk, "devices");
    msgpack_pack_int64(&pk, devices);
    key(&pk, "grey");
    msgpack_pack_int64(&pk, grey);
    key(&pk, "share");
    msgpack_pack_double(&pk, devices ? (double)grey / (double)devices : 0);
    key(&pk, "lo");
    msgpack_pack_double(&pk, 0.1);
    if (with_hi) {
        key(&pk, "hi");
        msgpack_pack_double(&pk, 0.9);
    }
    kv_str(&pk, "mode", "auto");
    kv_str(&pk, "state", "unlocked");
    kv_str(&pk, "source", "auto");
}

static void test_score_rows(void)
{
    msgpack_sbuffer sb;
    ctl_score s;
    char err[128];
    msgpack_sbuffer_init(&sb);
    row(&sb, "CU", 1000, 20, 19, 1);
    FG_CHECK_INT(ctl_score_decode(sb.data, sb.size, &s, err, sizeof(err)), FG_OK);
    FG_CHECK_STR(s.region, "CU");
    FG_CHECK_INT(s.devices, 20);
    FG_CHECK_INT(s.grey, 19);
    FG_CHECK(s.share > 0.949 && s.share < 0.951);
    FG_CHECK_STR(s.mode, "auto");
    row(&sb, "CU", 1000, 20, 19, 0);
    FG_CHECK_INT(ctl_score_decode(sb.data, sb.size, &s, err, sizeof(err)),
                 FG_EINVAL);
    FG_CHECK_STR(err, "hi: missing");
    row(&sb, "cu", 1000, 20, 19, 1);
    FG_CHECK_INT(ctl_score_decode(sb.data, sb.size, &s, err, sizeof(err)),
                 FG_EINVAL);
    /* Trailing bytes. */
    row(&sb, "CU", 1000, 20, 19, 1);
    msgpack_sbuffer_write(&sb, "\xc0", 1);
    FG_CHECK_INT(ctl_score_decode(sb.data, sb.size, &s, err, sizeof(err)),
                 FG_EINVAL);
    msgpack_sbuffer_destroy(&sb);
    /* JSON rows (scores_format = json). */
    const char *j = "{\"region\":\"DE\",\"ts\":5,\"devices\":300,\"grey\":180,"
                    "\"share\":0.6,\"lo\":0.55,\"hi\":0.65,\"mode\":\"never\","
                    "\"state\":\"unlocked\",\"source\":\"auto\"}";
    FG_CHECK_INT(ctl_score_decode(j, strlen(j), &s, err, sizeof(err)), FG_OK);
    FG_CHECK_STR(s.region, "DE");
    FG_CHECK_INT(s.grey, 180);
    FG_CHECK_STR(s.mode, "never");
    j = "{\"region\":\"DE\",\"ts\":5,\"devices\":3.5,\"grey\":1,\"share\":0.6,"
        "\"lo\":0.5,\"hi\":0.7}";
    FG_CHECK_INT(ctl_score_decode(j, strlen(j), &s, err, sizeof(err)),
                 FG_EINVAL);
    FG_CHECK_INT(ctl_score_decode("", 0, &s, err, sizeof(err)), FG_EINVAL);
    char *big = calloc(1, CTL_SCORE_INPUT_MAX + 2);
    memset(big, ' ', CTL_SCORE_INPUT_MAX + 1);
    big[0] = '{';
    FG_CHECK_INT(ctl_score_decode(big, CTL_SCORE_INPUT_MAX + 1, &s, err,
                                  sizeof(err)), FG_ETOOBIG);
    free(big);
}

static fg_lock lock_of(const char *region, fg_lock_state st, int64_t until)
{
    fg_lock lk;
    memset(&lk, 0, sizeof(lk));
    snprintf(lk.region, sizeof(lk.region), "%s", region);
    lk.state = st;
    lk.scope = FG_SCOPE_GREY;
    lk.source = FG_SOURCE_OPS;
    snprintf(lk.reason, sizeof(lk.reason), "because");
    snprintf(lk.id, sizeof(lk.id), "id-%s", region);
    lk.since = 100;
    lk.until = until;
    return lk;
}

static ctl_score score_of(const char *region, int64_t ts, int64_t devices,
                          int64_t grey)
{
    ctl_score s;
    memset(&s, 0, sizeof(s));
    snprintf(s.region, sizeof(s.region), "%s", region);
    s.ts = ts;
    s.devices = devices;
    s.grey = grey;
    s.share = devices ? (double)grey / (double)devices : 0;
    return s;
}

static void test_table(void)
{
    ctl_state *st = ctl_state_new();
    ctl_score s;
    s = score_of("US", 10, 500, 10);
    FG_CHECK_INT(ctl_state_put_score(st, &s), FG_OK);
    s = score_of("CU", 10, 200, 190);
    FG_CHECK_INT(ctl_state_put_score(st, &s), FG_OK);
    s = score_of("DE", 10, 300, 180);
    FG_CHECK_INT(ctl_state_put_score(st, &s), FG_OK);
    /* An older row does not replace a newer one. */
    s = score_of("CU", 5, 1, 1);
    FG_CHECK_INT(ctl_state_put_score(st, &s), FG_OK);
    FG_CHECK_INT(ctl_state_get(st, "CU")->score.devices, 200);
    fg_lock lk = lock_of("CU", FG_LOCK_LOCKED, 5000);
    FG_CHECK_INT(ctl_state_put_lock(st, "CU", &lk), FG_OK);
    lk = lock_of("SY", FG_LOCK_LOCKED, 1500); /* a lock-only region */
    FG_CHECK_INT(ctl_state_put_lock(st, "SY", &lk), FG_OK);
    lk = lock_of("IR", FG_LOCK_SHADOW, 5000);
    FG_CHECK_INT(ctl_state_put_lock(st, "IR", &lk), FG_OK);
    FG_CHECK_INT(ctl_state_put_lock(st, "bad", &lk), FG_EINVAL);
    FG_CHECK_INT(ctl_state_count(st), 5);
    /* Code order. */
    const char *want[] = {"CU", "DE", "IR", "SY", "US"};
    for (size_t i = 0; i < 5; i++)
        FG_CHECK_STR(ctl_state_at(st, i)->region, want[i]);
    /* Effective state at t = 2000: SY has expired. */
    FG_CHECK_STR(ctl_state_name(ctl_region_state(ctl_state_get(st, "CU"), 2000)),
                 "locked");
    FG_CHECK_STR(ctl_state_name(ctl_region_state(ctl_state_get(st, "SY"), 2000)),
                 "expired");
    FG_CHECK_STR(ctl_state_name(ctl_region_state(ctl_state_get(st, "SY"), 1000)),
                 "locked");
    FG_CHECK_STR(ctl_state_name(ctl_region_state(ctl_state_get(st, "US"), 2000)),
                 "unlocked");
    /* Estimates. */
    FG_CHECK_INT(ctl_region_estimate(ctl_state_get(st, "CU"), FG_SCOPE_GREY), 190);
    FG_CHECK_INT(ctl_region_estimate(ctl_state_get(st, "CU"), FG_SCOPE_ALL), 200);
    FG_CHECK_INT(ctl_region_estimate(ctl_state_get(st, "SY"), FG_SCOPE_ALL), -1);
    FG_CHECK_INT(ctl_region_estimate(NULL, FG_SCOPE_ALL), -1);
    /* Sort and filter. */
    const ctl_region *rows[8];
    ctl_list_query q = {CTL_SORT_SHARE, -1};
    size_t n = ctl_state_list(st, &q, 2000, rows, 8);
    FG_CHECK_INT(n, 5);
    FG_CHECK_STR(rows[0]->region, "CU");
    FG_CHECK_STR(rows[1]->region, "DE");
    FG_CHECK_STR(rows[2]->region, "US");
    FG_CHECK_STR(rows[3]->region, "IR"); /* no score: last, by code */
    q.sort = CTL_SORT_DEVICES;
    n = ctl_state_list(st, &q, 2000, rows, 8);
    FG_CHECK_STR(rows[0]->region, "US");
    FG_CHECK_STR(rows[1]->region, "DE");
    q.sort = CTL_SORT_REGION;
    q.state = FG_LOCK_LOCKED;
    n = ctl_state_list(st, &q, 2000, rows, 8);
    FG_CHECK_INT(n, 1);
    FG_CHECK_STR(rows[0]->region, "CU");
    q.state = CTL_STATE_EXPIRED;
    n = ctl_state_list(st, &q, 2000, rows, 8);
    FG_CHECK_INT(n, 1);
    FG_CHECK_STR(rows[0]->region, "SY");
    /* A tombstone removes the record, the score stays. */
    FG_CHECK_INT(ctl_state_put_lock(st, "CU", NULL), FG_OK);
    FG_CHECK(!ctl_state_get(st, "CU")->has_lock);
    FG_CHECK(ctl_state_get(st, "CU")->has_score);
    /* JSON view. */
    yajl_gen g = yajl_gen_alloc(NULL);
    const unsigned char *buf;
    size_t len;
    ctl_region_json(g, ctl_state_get(st, "SY"), 2000);
    yajl_gen_get_buf(g, &buf, &len);
    FG_CHECK(strstr((const char *)buf, "\"state\":\"expired\"") != NULL);
    FG_CHECK(strstr((const char *)buf, "\"devices\":null") != NULL);
    FG_CHECK(strstr((const char *)buf, "\"until\":1500") != NULL);
    yajl_gen_free(g);
    ctl_state_free(st);
    ctl_state_free(NULL);
}

static void test_audit_record(void)
{
    fg_lock before = lock_of("CU", FG_LOCK_LOCKED, 5000);
    fg_lock after = lock_of("CU", FG_LOCK_UNLOCKED, 0);
    after.pin_until = 9000;
    after.has |= FG_LOCK_HAS_PIN;
    const char *regions[] = {"CU"};
    const fg_lock *b[] = {&before}, *a[] = {&after};
    ctl_audit au;
    memset(&au, 0, sizeof(au));
    au.ts = 1795814078949;
    au.request_id = "req-1";
    au.actor = "root";
    au.role = "admin";
    au.action = "unlock_all";
    au.target = "*";
    au.reason = "all \"clear\"";
    au.outcome = "ok";
    au.source = "127.0.0.1";
    au.status = 200;
    au.ttl_s = -1;
    au.pin_s = 60;
    au.estimated_devices = -1;
    au.n = 1;
    au.regions = regions;
    au.before = b;
    au.after = a;
    au.multi = 1;
    char *json = NULL;
    size_t len = 0;
    FG_CHECK_INT(ctl_audit_render(&au, &json, &len), FG_OK);
    FG_CHECK(json && strlen(json) == len);
    FG_CHECK(strstr(json, "\"actor\":\"root\"") != NULL);
    FG_CHECK(strstr(json, "\"reason\":\"all \\\"clear\\\"\"") != NULL);
    FG_CHECK(strstr(json, "\"time\":\"2026-11-27T21:14:38.949Z\"") != NULL);
    FG_CHECK(strstr(json, "\"before\":{\"CU\":{") != NULL);
    FG_CHECK(strstr(json, "\"pin_until\":9000") != NULL);
    FG_CHECK(strstr(json, "\"ttl_s\":null,\"pin_s\":60") != NULL);
    free(json);
    /* A denial: no actor, no records. */
    memset(&au, 0, sizeof(au));
    au.request_id = "req-2";
    au.role = "none";
    au.action = "lock";
    au.outcome = "denied";
    au.error = "unauthorized";
    au.status = 401;
    au.ttl_s = au.pin_s = au.estimated_devices = -1;
    FG_CHECK_INT(ctl_audit_render(&au, &json, &len), FG_OK);
    FG_CHECK(strstr(json, "\"actor\":null") != NULL);
    FG_CHECK(strstr(json, "\"before\":null,\"after\":null") != NULL);
    FG_CHECK(strstr(json, "\"outcome\":\"denied\"") != NULL);
    free(json);
}

FG_TEST_MAIN(test_score_rows, test_table, test_audit_record)
