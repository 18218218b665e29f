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
    /* "CU\u0000XX" is no region code, not CU (yajl hands back a string
     * cut at the NUL); an escaped backslash before u0000 is only text. */
    j = "{\"region\":\"CU\\u0000XX\",\"ts\":5,\"devices\":3,\"grey\":1,"
        "\"share\":0.3,\"lo\":0.2,\"hi\":0.4}";
    FG_CHECK_INT(ctl_score_decode(j, strlen(j), &s, err, sizeof(err)),
                 FG_EINVAL);
    FG_CHECK_STR(s.region, "");
    j = "{\"region\":\"CU\",\"note\":\"\\\\u0000\",\"ts\":5,\"devices\":3,"
        "\"grey\":1,\"share\":0.3,\"lo\":0.2,\"hi\":0.4}";
    FG_CHECK_INT(ctl_score_decode(j, strlen(j), &s, err, sizeof(err)), FG_OK);
    FG_CHECK_STR(s.region, "CU");
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

/* ---- history ---- */

/* What the change callback saw. */
static struct {
    int calls, rows, locks;
    int64_t last_row_ts;
    char last_lock_id[FG_LOCK_ID_MAX + 1];
} seen;

static void on_change(void *ud, const ctl_region *r, const ctl_score_row *row,
                      const fg_lock *lk)
{
    (void)ud;
    (void)r;
    seen.calls++;
    if (row) {
        seen.rows++;
        seen.last_row_ts = row->ts;
    }
    if (lk) {
        seen.locks++;
        snprintf(seen.last_lock_id, sizeof(seen.last_lock_id), "%s", lk->id);
    }
}

static void history_ts(const ctl_state *st, const char *region, int64_t *out,
                       size_t *n)
{
    const ctl_history *h = ctl_state_history(st, region);
    *n = ctl_history_scores(h);
    for (size_t i = 0; i < *n; i++)
        out[i] = ctl_history_score(h, i)->ts;
}

static fg_lock record(const char *region, fg_lock_state state,
                      const char *id, int64_t since)
{
    fg_lock lk = lock_of(region, state, state == FG_LOCK_LOCKED ? since + 60000
                                                                : 0);
    snprintf(lk.id, sizeof(lk.id), "%s", id);
    lk.since = since;
    return lk;
}

/* The ids of region's lock history, oldest first, joined with ','. */
static void history_ids(const ctl_state *st, const char *region, char *out,
                        size_t cap)
{
    const ctl_history *h = ctl_state_history(st, region);
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < ctl_history_locks(h); i++) {
        size_t len = 0;
        int64_t since = -1;
        const char *rec = ctl_history_lock(h, i, &len, &since);
        fg_lock lk;
        FG_CHECK_INT(fg_lock_decode(rec, len, &lk, NULL, 0), FG_OK);
        FG_CHECK_INT(lk.since, since);
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? "," : "",
                                 lk.id);
    }
}

static void test_history_score_ring(void)
{
    ctl_state *st = ctl_state_new();
    ctl_history_limits lim = {4, 3, 1 << 20};
    int64_t ts[8];
    size_t n;
    memset(&seen, 0, sizeof(seen));
    FG_CHECK_INT(ctl_state_set_history(st, &lim), FG_OK);
    ctl_state_on_change(st, on_change, NULL);
    /* Ten rows through a ring of four: the newest four, oldest first. */
    for (int64_t t = 1; t <= 10; t++) {
        ctl_score s = score_of("CU", t * 1000, 100 + t, t);
        FG_CHECK_INT(ctl_state_put_score(st, &s), FG_OK);
    }
    history_ts(st, "CU", ts, &n);
    FG_CHECK_INT(n, 4);
    FG_CHECK_INT(ts[0], 7000);
    FG_CHECK_INT(ts[3], 10000);
    FG_CHECK_INT(ctl_history_score(ctl_state_history(st, "CU"), 3)->devices,
                 110);
    FG_CHECK(ctl_history_score(ctl_state_history(st, "CU"), 4) == NULL);
    FG_CHECK_INT(seen.rows, 10);
    FG_CHECK_INT(seen.last_row_ts, 10000);
    /* A row with the newest ts again replaces the view, not the history;
     * an older row changes neither. */
    ctl_score same = score_of("CU", 10000, 999, 1);
    FG_CHECK_INT(ctl_state_put_score(st, &same), FG_OK);
    ctl_score old = score_of("CU", 8500, 5, 5);
    FG_CHECK_INT(ctl_state_put_score(st, &old), FG_OK);
    history_ts(st, "CU", ts, &n);
    FG_CHECK_INT(n, 4);
    FG_CHECK_INT(ts[0], 7000);
    FG_CHECK_INT(ts[3], 10000);
    FG_CHECK_INT(ctl_history_score(ctl_state_history(st, "CU"), 3)->devices,
                 110);
    FG_CHECK_INT(ctl_state_get(st, "CU")->score.devices, 999);
    FG_CHECK_INT(seen.rows, 10);
    FG_CHECK_INT(seen.calls, 11); /* the same-ts row changed the view */
    /* Rows read back (Redis) go in ts order, duplicates skipped, and
     * never call back. */
    ctl_score_row r5 = {5000, 1, 1, 0.5, 0.4, 0.6};
    ctl_score_row r3 = {3000, 1, 1, 0.5, 0.4, 0.6};
    ctl_score_row r4 = {4000, 1, 1, 0.5, 0.4, 0.6};
    FG_CHECK_INT(ctl_state_history_add_score(st, "DE", &r5), FG_OK);
    FG_CHECK_INT(ctl_state_history_add_score(st, "DE", &r3), FG_OK);
    FG_CHECK_INT(ctl_state_history_add_score(st, "DE", &r4), FG_OK);
    FG_CHECK_INT(ctl_state_history_add_score(st, "DE", &r3), FG_OK);
    history_ts(st, "DE", ts, &n);
    FG_CHECK_INT(n, 3);
    FG_CHECK_INT(ts[0], 3000);
    FG_CHECK_INT(ts[1], 4000);
    FG_CHECK_INT(ts[2], 5000);
    FG_CHECK_INT(seen.calls, 11);
    /* History alone does not make a region appear in the table. */
    FG_CHECK(ctl_state_get(st, "DE") == NULL);
    /* Full: an older row than all is dropped, a middle one displaces the
     * oldest. */
    ctl_score_row r6 = {6000, 1, 1, 0.5, 0.4, 0.6};
    ctl_score_row r1 = {1000, 1, 1, 0.5, 0.4, 0.6};
    ctl_score_row r45 = {4500, 1, 1, 0.5, 0.4, 0.6};
    ctl_state_history_add_score(st, "DE", &r6);
    ctl_state_history_add_score(st, "DE", &r1);
    history_ts(st, "DE", ts, &n);
    FG_CHECK_INT(n, 4);
    FG_CHECK_INT(ts[0], 3000);
    ctl_state_history_add_score(st, "DE", &r45);
    history_ts(st, "DE", ts, &n);
    FG_CHECK_INT(n, 4);
    FG_CHECK_INT(ts[0], 4000);
    FG_CHECK_INT(ts[1], 4500);
    FG_CHECK_INT(ts[3], 6000);
    /* Bounds can only be set before the first row. */
    FG_CHECK_INT(ctl_state_set_history(st, &lim), FG_EINVAL);
    ctl_state *st2 = ctl_state_new();
    ctl_history_limits bad = {0, 3, 1 << 20};
    FG_CHECK_INT(ctl_state_set_history(st2, &bad), FG_EINVAL);
    bad.scores = CTL_HISTORY_SCORES_MAX + 1;
    FG_CHECK_INT(ctl_state_set_history(st2, &bad), FG_EINVAL);
    ctl_state_free(st2);
    ctl_state_free(st);
}

static void test_history_locks(void)
{
    ctl_state *st = ctl_state_new();
    ctl_history_limits lim = {4, 3, 1 << 20};
    char ids[256];
    memset(&seen, 0, sizeof(seen));
    FG_CHECK_INT(ctl_state_set_history(st, &lim), FG_OK);
    ctl_state_on_change(st, on_change, NULL);
    fg_lock a = record("CU", FG_LOCK_LOCKED, "req-a", 100);
    fg_lock b = record("CU", FG_LOCK_UNLOCKED, "req-b", 200);
    FG_CHECK_INT(ctl_state_put_lock(st, "CU", &a), FG_OK);
    /* The feed's copy of a read-your-writes record: one entry. */
    FG_CHECK_INT(ctl_state_put_lock(st, "CU", &a), FG_OK);
    FG_CHECK_INT(seen.locks, 1);
    FG_CHECK_INT(ctl_state_put_lock(st, "CU", &b), FG_OK);
    /* A lagging feed delivers a again after b: the view follows the feed,
     * the history keeps one a. */
    FG_CHECK_INT(ctl_state_put_lock(st, "CU", &a), FG_OK);
    FG_CHECK_INT(ctl_state_get(st, "CU")->lock.since, 100);
    FG_CHECK_INT(ctl_state_put_lock(st, "CU", &b), FG_OK);
    history_ids(st, "CU", ids, sizeof(ids));
    FG_CHECK_STR(ids, "req-a,req-b");
    FG_CHECK_INT(seen.locks, 2);
    FG_CHECK_STR(seen.last_lock_id, "req-b");
    /* Same id and since, another state: a different record. */
    fg_lock a2 = record("CU", FG_LOCK_SHADOW, "req-a", 100);
    FG_CHECK_INT(ctl_state_put_lock(st, "CU", &a2), FG_OK);
    history_ids(st, "CU", ids, sizeof(ids));
    FG_CHECK_STR(ids, "req-a,req-a,req-b"); /* since order: a2 after a */
    /* Full (3): a newer record displaces the oldest; one older than all is
     * not kept. */
    fg_lock c = record("CU", FG_LOCK_LOCKED, "req-c", 300);
    FG_CHECK_INT(ctl_state_put_lock(st, "CU", &c), FG_OK);
    history_ids(st, "CU", ids, sizeof(ids));
    FG_CHECK_STR(ids, "req-a,req-b,req-c");
    fg_lock z = record("CU", FG_LOCK_LOCKED, "req-z", 50);
    FG_CHECK_INT(ctl_state_history_add_lock(st, "CU", &z), FG_OK);
    history_ids(st, "CU", ids, sizeof(ids));
    FG_CHECK_STR(ids, "req-a,req-b,req-c");
    /* Read back from Redis: in since order, between what is held. */
    fg_lock m = record("CU", FG_LOCK_UNLOCKED, "req-m", 250);
    FG_CHECK_INT(ctl_state_history_add_lock(st, "CU", &m), FG_OK);
    history_ids(st, "CU", ids, sizeof(ids));
    FG_CHECK_STR(ids, "req-b,req-m,req-c");
    /* A tombstone changes the view, never the history. */
    int calls = seen.calls;
    FG_CHECK_INT(ctl_state_put_lock(st, "CU", NULL), FG_OK);
    FG_CHECK_INT(seen.calls, calls + 1);
    FG_CHECK_INT(ctl_history_locks(ctl_state_history(st, "CU")), 3);
    /* ... and a tombstone of an unknown region changes nothing. */
    FG_CHECK_INT(ctl_state_put_lock(st, "DE", NULL), FG_OK);
    FG_CHECK_INT(seen.calls, calls + 1);
    FG_CHECK_INT(ctl_state_history_add_lock(st, "cu", &m), FG_EINVAL);
    ctl_state_free(st);
}

static char *json_of(const ctl_state *st, const char *region, int detail)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    const unsigned char *buf;
    size_t len;
    if (detail)
        ctl_region_detail_json(g, st, ctl_state_get(st, region), 2000);
    else
        ctl_region_json(g, ctl_state_get(st, region), 2000);
    yajl_gen_get_buf(g, &buf, &len);
    char *out = strndup((const char *)buf, len);
    yajl_gen_free(g);
    return out;
}

static void test_history_detail_json(void)
{
    ctl_state *st = ctl_state_new();
    ctl_score s = score_of("CU", 1000, 200, 50);
    s.lo = 0.2;
    s.hi = 0.3;
    ctl_state_put_score(st, &s);
    s = score_of("CU", 2000, 210, 60);
    ctl_state_put_score(st, &s);
    fg_lock a = record("CU", FG_LOCK_LOCKED, "req-a", 1500);
    fg_lock b = record("CU", FG_LOCK_UNLOCKED, "req-b", 1800);
    ctl_state_put_lock(st, "CU", &a);
    ctl_state_put_lock(st, "CU", &b);
    char *list = json_of(st, "CU", 0);
    char *detail = json_of(st, "CU", 1);
    /* The list object, then "history" before its closing brace. */
    size_t n = strlen(list);
    FG_CHECK(strncmp(list, detail, n - 1) == 0);
    const char *want = ",\"history\":{\"scores\":[{\"ts\":1000,\"devices\":200,"
                       "\"grey\":50,\"share\":0.250000,\"lo\":0.200000,"
                       "\"hi\":0.300000},{\"ts\":2000,";
    FG_CHECK(strncmp(detail + n - 1, want, strlen(want)) == 0);
    const char *locks = strstr(detail, "\"locks\":[{\"region\":\"CU\"");
    FG_CHECK(locks != NULL);
    const char *pa = strstr(detail, "\"id\":\"req-a\"");
    const char *pb = strstr(detail, "\"id\":\"req-b\"");
    FG_CHECK(pa && pb && locks < pa && pa < pb);
    FG_CHECK(strstr(detail, "\"state\":\"unlocked\",\"scope\":\"grey\"") != NULL);
    FG_CHECK(strcmp(detail + strlen(detail) - 3, "]}}") == 0);
    free(list);
    free(detail);
    /* No history: empty arrays. */
    ctl_state *st2 = ctl_state_new();
    ctl_history_limits tiny = {4, 3, 1}; /* nothing fits */
    ctl_state_set_history(st2, &tiny);
    s = score_of("DE", 1000, 10, 1);
    FG_CHECK_INT(ctl_state_put_score(st2, &s), FG_OK);
    detail = json_of(st2, "DE", 1);
    FG_CHECK(strstr(detail, ",\"history\":{\"scores\":[],\"locks\":[]}}") !=
             NULL);
    free(detail);
    ctl_state_free(st2);
    ctl_state_free(st);
}

static void test_history_memory_cap(void)
{
    ctl_state *st = ctl_state_new();
    ctl_history_limits lim = {10, 4, 16 * 1024};
    ctl_history_stats hs;
    char code[3] = "AA";
    FG_CHECK_INT(ctl_state_set_history(st, &lim), FG_OK);
    /* 100 regions' score rings do not fit in 16 KiB: later regions get no
     * history, but their rows still reach the table. */
    for (int i = 0; i < 100; i++) {
        code[0] = (char)('A' + i / 26);
        code[1] = (char)('A' + i % 26);
        ctl_score s = score_of(code, 1000, 10, 1);
        FG_CHECK_INT(ctl_state_put_score(st, &s), FG_OK);
    }
    ctl_state_history_stats(st, &hs);
    FG_CHECK(hs.bytes <= 16 * 1024);
    FG_CHECK(hs.regions > 0 && hs.regions < 100);
    FG_CHECK_INT(hs.refused, 100 - hs.regions);
    FG_CHECK_INT(ctl_state_count(st), 100);
    FG_CHECK(ctl_state_history(st, "DV") == NULL);
    FG_CHECK(ctl_state_get(st, "DV") != NULL);
    /* Lock records within a full budget: the region's own oldest records
     * make room, the total never goes over. */
    ctl_state *ls = ctl_state_new();
    ctl_history_limits ll = {1, 16, 4096};
    FG_CHECK_INT(ctl_state_set_history(ls, &ll), FG_OK);
    char id[16];
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof(id), "req-%d", i);
        fg_lock lk = record("CU", FG_LOCK_LOCKED, id, 1000 + i);
        snprintf(lk.message, sizeof(lk.message), "%0200d", i);
        FG_CHECK_INT(ctl_state_put_lock(ls, "CU", &lk), FG_OK);
        ctl_state_history_stats(ls, &hs);
        FG_CHECK(hs.bytes <= 4096);
    }
    const ctl_history *h = ctl_state_history(ls, "CU");
    size_t kept = ctl_history_locks(h);
    FG_CHECK(kept > 1 && kept < 16);
    /* The newest survive. */
    char ids[512];
    history_ids(ls, "CU", ids, sizeof(ids));
    FG_CHECK(strlen(ids) >= 6 && strcmp(ids + strlen(ids) - 6, "req-39") == 0);
    ctl_state_free(ls);
    ctl_state_free(st);
}

FG_TEST_MAIN(test_score_rows, test_table, test_audit_record,
             test_history_score_ring, test_history_locks,
             test_history_detail_json, test_history_memory_cap)
