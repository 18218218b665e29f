/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of consumers/sc_policy.c (issue 3): Wilson bounds against
 * independently computed values, policy/rails parsing, message templates,
 * and the decision engine on synthetic score series: hysteresis, the `for`
 * boundary, expiry and the max_ttl clamp, cooldown, both caps, shadow mode,
 * pins, never/monitor modes, min_devices, ops locks, idempotence. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fg_test.h"
#include "sc_policy.h"

#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define T0 1718000000000LL /* some time in June 2024 */

/* Counts out of 1000 devices and where their bounds fall with z = 1.96 and
 * the default thresholds (checked in test_series_values). */
#define N 1000
#define K_LOCK 800    /* lo 0.774 >= 0.6 */
#define K_BETWEEN 450 /* lo 0.419 < 0.6, hi 0.481 > 0.3 */
#define K_UNLOCK 200  /* hi 0.226 <= 0.3 */

/* ---- helpers ------------------------------------------------------------ */

static sc_decision g_out[16];
static size_t g_nout;
static sc_score_row g_rows[8];

static sc_region_score score(const char *region, int64_t n, int64_t k)
{
    sc_region_score s;
    memset(&s, 0, sizeof(s));
    snprintf(s.region, sizeof(s.region), "%s", region);
    s.devices = n;
    s.grey = k;
    return s;
}

/* Rails with enforcement on (the default is off) and roomy caps. */
static sc_rails rails_on(void)
{
    sc_rails r;
    sc_rails_default(&r);
    r.enforce = true;
    r.max_auto_locked_regions = 100;
    r.max_auto_locked_devices = 1000000;
    return r;
}

static sc_engine *engine(const sc_policy *p, const sc_rails *r)
{
    sc_policy dp;
    sc_rails dr = rails_on();
    char err[256] = "";
    sc_engine *e;
    sc_policy_default(&dp);
    e = sc_engine_new(p ? p : &dp, r ? r : &dr, err, sizeof(err));
    if (!e)
        fprintf(stderr, "sc_engine_new: %s\n", err);
    return e;
}

/* One tick with scores s[0..ns); decisions in g_out, rows in g_rows.
 * Returns the number of decisions. */
static size_t tickn(sc_engine *e, int64_t now, const sc_region_score *s,
                    size_t ns)
{
    fg_status st = sc_engine_tick(e, now, s, ns, g_rows, g_out, 16, &g_nout);
    if (st != FG_OK)
        fprintf(stderr, "tick at %lld: %s\n", (long long)now,
                fg_status_str(st));
    return st == FG_OK ? g_nout : 999;
}

static size_t tick1(sc_engine *e, int64_t now, const char *region, int64_t n,
                    int64_t k)
{
    sc_region_score s = score(region, n, k);
    return tickn(e, now, &s, 1);
}

/* Ticks every step from `from` to `to` inclusive with one region's counts;
 * returns the total decisions, the first of them in *first and its time in
 * *at (when not NULL). */
static size_t run(sc_engine *e, int64_t from, int64_t to, int64_t step,
                  const char *region, int64_t n, int64_t k, sc_decision *first,
                  int64_t *at)
{
    size_t total = 0;
    for (int64_t t = from; t <= to; t += step) {
        size_t nd = tick1(e, t, region, n, k);
        if (nd > 0 && total == 0) {
            if (first)
                *first = g_out[0];
            if (at)
                *at = t;
        }
        total += nd;
    }
    return total;
}

/* Feeds a decision back as if read from the lock topic. */
static void echo(sc_engine *e, const sc_decision *d)
{
    FG_CHECK_INT(sc_engine_observe_lock(e, &d->lk), FG_OK);
}

static fg_lock ops_record(const char *region, fg_lock_state state,
                          int64_t since, int64_t until)
{
    fg_lock lk;
    memset(&lk, 0, sizeof(lk));
    snprintf(lk.region, sizeof(lk.region), "%s", region);
    lk.state = state;
    lk.scope = FG_SCOPE_ALL;
    lk.source = FG_SOURCE_OPS;
    snprintf(lk.reason, sizeof(lk.reason), "operator");
    snprintf(lk.actor, sizeof(lk.actor), "alice");
    snprintf(lk.id, sizeof(lk.id), "ops-%lld", (long long)since);
    lk.since = since;
    lk.until = until;
    return lk;
}

/* Wilson bounds as the two roots of (p^ - p)^2 = z^2 p (1 - p) / n, solved
 * as a quadratic in p: a different derivation than sc_wilson's. */
static void wilson_roots(double k, double n, double z, double *lo, double *hi)
{
    double ph = k / n, z2 = z * z;
    double a = 1.0 + z2 / n, b = -(2.0 * ph + z2 / n), c = ph * ph;
    double disc = sqrt(b * b - 4.0 * a * c);
    *lo = (-b - disc) / (2.0 * a);
    *hi = (-b + disc) / (2.0 * a);
}

static bool near(double a, double b, double eps)
{
    return fabs(a - b) <= eps;
}

/* ---- Wilson -------------------------------------------------------------- */

static void test_wilson_known_values(void)
{
    static const struct {
        int64_t k, n;
        double lo, hi; /* published values, 4 decimals */
    } cases[] = {
        {0, 10, 0.0, 0.2775},
        {5, 10, 0.2366, 0.7634},
        {95, 100, 0.8882, 0.9785},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        double lo, hi, rlo, rhi;
        sc_wilson(cases[i].k, cases[i].n, 1.96, &lo, &hi);
        wilson_roots((double)cases[i].k, (double)cases[i].n, 1.96, &rlo, &rhi);
        FG_CHECK(near(lo, fmax(0.0, rlo), 1e-12));
        FG_CHECK(near(hi, fmin(1.0, rhi), 1e-12));
        FG_CHECK(near(lo, cases[i].lo, 5e-5));
        FG_CHECK(near(hi, cases[i].hi, 5e-5));
    }
    {
        double lo = -1, hi = -1;
        /* k = 0: exactly 0 (the formula alone gives -2.8e-17); k = n: 1. */
        sc_wilson(0, 10, 1.96, &lo, &hi);
        FG_CHECK(lo == 0.0);
        sc_wilson(10, 10, 1.96, &lo, &hi);
        FG_CHECK(hi == 1.0);
        FG_CHECK(near(lo, 1.0 - 0.2775, 5e-5));
        sc_wilson(0, 0, 1.96, &lo, &hi);
        FG_CHECK(lo == 0.0 && hi == 1.0);
    }
    {
        /* z matters: a wider quantile gives a wider interval. */
        double lo1, hi1, lo2, hi2, rlo, rhi;
        sc_wilson(5, 10, 1.0, &lo1, &hi1);
        sc_wilson(5, 10, 2.58, &lo2, &hi2);
        wilson_roots(5, 10, 2.58, &rlo, &rhi);
        FG_CHECK(lo2 < lo1 && hi2 > hi1);
        FG_CHECK(near(lo2, rlo, 1e-12) && near(hi2, rhi, 1e-12));
    }
}

/* The synthetic series mean what the other tests assume. */
static void test_series_values(void)
{
    double lo, hi;
    sc_wilson(K_LOCK, N, 1.96, &lo, &hi);
    FG_CHECK(lo >= 0.6);
    sc_wilson(K_BETWEEN, N, 1.96, &lo, &hi);
    FG_CHECK(lo < 0.6 && hi > 0.3);
    sc_wilson(K_UNLOCK, N, 1.96, &lo, &hi);
    FG_CHECK(hi <= 0.3);
}

/* ---- parsing ------------------------------------------------------------- */

static void test_policy_parse(void)
{
    sc_policy p, before;
    sc_rails r;
    char err[256];

    sc_policy_default(&p);
    sc_rails_default(&r);
    FG_CHECK_INT(sc_policy_check(&p, &r, err, sizeof(err)), FG_OK);
    FG_CHECK(p.mode == SC_MODE_AUTO && p.lock_at == 0.6 &&
             p.unlock_at == 0.3 && p.min_devices == 50 &&
             p.for_ms == 5 * MIN && p.ttl_ms == DAY &&
             p.cooldown_ms == 30 * MIN && p.scope == FG_SCOPE_GREY);
    FG_CHECK(!r.enforce && r.max_ttl_ms == 7 * DAY && r.z == 1.96);

    FG_CHECK_INT(sc_policy_set(&p, "mode", "monitor", err, sizeof(err)), FG_OK);
    FG_CHECK(p.mode == SC_MODE_MONITOR);
    FG_CHECK_INT(sc_policy_set(&p, "mode", "never", err, sizeof(err)), FG_OK);
    FG_CHECK(p.mode == SC_MODE_NEVER);
    FG_CHECK_INT(sc_policy_set(&p, "lock_at", "0.75", err, sizeof(err)), FG_OK);
    FG_CHECK(p.lock_at == 0.75);
    FG_CHECK_INT(sc_policy_set(&p, "lock_at", "1", err, sizeof(err)), FG_OK);
    FG_CHECK_INT(sc_policy_set(&p, "unlock_at", "0.2", err, sizeof(err)), FG_OK);
    FG_CHECK(p.unlock_at == 0.2);
    FG_CHECK_INT(sc_policy_set(&p, "min_devices", "200", err, sizeof(err)),
                 FG_OK);
    FG_CHECK_INT(p.min_devices, 200);
    FG_CHECK_INT(sc_policy_set(&p, "for", "10m", err, sizeof(err)), FG_OK);
    FG_CHECK_INT(p.for_ms, 10 * MIN);
    FG_CHECK_INT(sc_policy_set(&p, "for", "0", err, sizeof(err)), FG_OK);
    FG_CHECK_INT(p.for_ms, 0);
    FG_CHECK_INT(sc_policy_set(&p, "ttl", "12h", err, sizeof(err)), FG_OK);
    FG_CHECK_INT(p.ttl_ms, 12 * HOUR);
    FG_CHECK_INT(sc_policy_set(&p, "cooldown", "90s", err, sizeof(err)), FG_OK);
    FG_CHECK_INT(p.cooldown_ms, 90 * SEC);
    FG_CHECK_INT(sc_policy_set(&p, "scope", "all", err, sizeof(err)), FG_OK);
    FG_CHECK(p.scope == FG_SCOPE_ALL);
    FG_CHECK_INT(sc_policy_set(&p, "message", "Locked in {region}", err,
                               sizeof(err)),
                 FG_OK);
    FG_CHECK_STR(p.message, "Locked in {region}");

    /* Every bad value names its key and leaves the policy unchanged. */
    static const struct {
        const char *key, *value;
    } bad[] = {
        {"mode", "AUTO"},        {"mode", "off"},
        {"lock_at", "0"},        {"lock_at", "1.01"},
        {"lock_at", "abc"},      {"lock_at", "nan"},
        {"lock_at", "0x1p-1"},   {"lock_at", " 0.5"},
        {"unlock_at", "0"},      {"unlock_at", "1"},
        {"unlock_at", "-0.1"},   {"min_devices", "0"},
        {"min_devices", "-5"},   {"min_devices", "5x"},
        {"for", "-1s"},          {"for", "5 m"},
        {"for", "3651d"},        {"ttl", "0"},
        {"ttl", "forever"},      {"cooldown", "1w"},
        {"scope", "GREY"},       {"scope", "region"},
        {"message", "until {untill}"}, {"message", "bad \xc3("},
        {"message", "tab\there"},     {"message", "{"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t kl = strlen(bad[i].key);
        before = p;
        err[0] = '\0';
        FG_CHECK_INT(sc_policy_set(&p, bad[i].key, bad[i].value, err,
                                   sizeof(err)),
                     FG_EINVAL);
        if (strncmp(err, bad[i].key, kl) != 0 || err[kl] != ':')
            fprintf(stderr, "  %s=%s gave \"%s\"\n", bad[i].key,
                    bad[i].value, err);
        FG_CHECK(strncmp(err, bad[i].key, kl) == 0 && err[kl] == ':');
        FG_CHECK(memcmp(&p, &before, sizeof(p)) == 0);
    }
    FG_CHECK_INT(sc_policy_set(&p, "lockat", "0.5", err, sizeof(err)),
                 FG_EINVAL);
    FG_CHECK(strncmp(err, "lockat:", 7) == 0);
    FG_CHECK(strstr(err, "unknown") != NULL);

    /* A long template is refused, naming message. */
    {
        char big[SC_TEMPLATE_MAX + 2];
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        FG_CHECK_INT(sc_policy_set(&p, "message", big, err, sizeof(err)),
                     FG_EINVAL);
        FG_CHECK(strncmp(err, "message:", 8) == 0);
        big[SC_TEMPLATE_MAX] = '\0';
        FG_CHECK_INT(sc_policy_set(&p, "message", big, err, sizeof(err)),
                     FG_OK);
    }

    /* Rules between keys. */
    sc_policy_default(&p);
    p.unlock_at = 0.6;
    FG_CHECK_INT(sc_policy_check(&p, &r, err, sizeof(err)), FG_EINVAL);
    FG_CHECK(strncmp(err, "unlock_at:", 10) == 0);
    FG_CHECK(strstr(err, "lock_at (0.6)") != NULL);
    p.unlock_at = 0.59;
    FG_CHECK_INT(sc_policy_check(&p, &r, err, sizeof(err)), FG_OK);
    p.ttl_ms = 7 * DAY + 1;
    FG_CHECK_INT(sc_policy_check(&p, &r, err, sizeof(err)), FG_EINVAL);
    FG_CHECK(strncmp(err, "ttl:", 4) == 0);
    FG_CHECK(strstr(err, "max_ttl (7d)") != NULL);
    p.ttl_ms = 7 * DAY;
    FG_CHECK_INT(sc_policy_check(&p, &r, err, sizeof(err)), FG_OK);
    p.mode = (sc_mode)7;
    FG_CHECK_INT(sc_policy_check(&p, &r, err, sizeof(err)), FG_EINVAL);
    FG_CHECK(strncmp(err, "mode:", 5) == 0);

    FG_CHECK_STR(sc_mode_str(SC_MODE_AUTO), "auto");
    FG_CHECK_STR(sc_mode_str(SC_MODE_MONITOR), "monitor");
    FG_CHECK_STR(sc_mode_str(SC_MODE_NEVER), "never");
}

static void test_rails_parse(void)
{
    sc_rails r, before;
    sc_policy p;
    char err[256];
    sc_engine *e;

    sc_rails_default(&r);
    FG_CHECK_INT(sc_rails_check(&r, err, sizeof(err)), FG_OK);
    FG_CHECK_INT(sc_rails_set(&r, "enforce", "on", err, sizeof(err)), FG_OK);
    FG_CHECK(r.enforce);
    FG_CHECK_INT(sc_rails_set(&r, "enforce", "false", err, sizeof(err)), FG_OK);
    FG_CHECK(!r.enforce);
    FG_CHECK_INT(sc_rails_set(&r, "max_auto_locked_regions", "0", err,
                              sizeof(err)),
                 FG_OK);
    FG_CHECK_INT(r.max_auto_locked_regions, 0);
    FG_CHECK_INT(sc_rails_set(&r, "max_auto_locked_devices", "250000", err,
                              sizeof(err)),
                 FG_OK);
    FG_CHECK_INT(r.max_auto_locked_devices, 250000);
    FG_CHECK_INT(sc_rails_set(&r, "max_ttl", "2d", err, sizeof(err)), FG_OK);
    FG_CHECK_INT(r.max_ttl_ms, 2 * DAY);
    FG_CHECK_INT(sc_rails_set(&r, "z", "2.576", err, sizeof(err)), FG_OK);
    FG_CHECK(r.z == 2.576);

    static const struct {
        const char *key, *value;
    } bad[] = {
        {"enforce", "maybe"},
        {"max_auto_locked_regions", "-1"},
        {"max_auto_locked_devices", "many"},
        {"max_ttl", "0"},
        {"max_ttl", "3651d"},
        {"z", "0"},
        {"z", "11"},
        {"z", "inf"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t kl = strlen(bad[i].key);
        before = r;
        FG_CHECK_INT(sc_rails_set(&r, bad[i].key, bad[i].value, err,
                                  sizeof(err)),
                     FG_EINVAL);
        FG_CHECK(strncmp(err, bad[i].key, kl) == 0 && err[kl] == ':');
        FG_CHECK(memcmp(&r, &before, sizeof(r)) == 0);
    }
    FG_CHECK_INT(sc_rails_set(&r, "enforced", "1", err, sizeof(err)),
                 FG_EINVAL);
    FG_CHECK(strncmp(err, "enforced:", 9) == 0);

    /* The engine refuses a bad configuration, naming the key. */
    sc_rails_default(&r);
    sc_policy_default(&p);
    p.ttl_ms = 8 * DAY;
    e = sc_engine_new(&p, &r, err, sizeof(err));
    FG_CHECK(e == NULL);
    FG_CHECK(strncmp(err, "ttl:", 4) == 0);
    sc_policy_default(&p);
    r.z = -1;
    e = sc_engine_new(&p, &r, err, sizeof(err));
    FG_CHECK(e == NULL);
    FG_CHECK(strncmp(err, "z:", 2) == 0);
    sc_engine_free(NULL);
}

/* ---- message templates -------------------------------------------------- */

static void test_message_template(void)
{
    char out[FG_LOCK_MESSAGE_MAX + 1], err[256];
    char tmpl[SC_TEMPLATE_MAX + 1];
    size_t o = 0;

    FG_CHECK_INT(sc_message_format("{region} locked until {until}: {share} "
                                   "of {devices} devices are grey {{ok}",
                                   "CU", 1718003600000LL, 0.724, 812, out,
                                   sizeof(out), err, sizeof(err)),
                 FG_OK);
    FG_CHECK_STR(out, "CU locked until 2024-06-10T07:13:20Z: 72% of 812 "
                      "devices are grey {ok}");
    FG_CHECK_INT(sc_message_format("{until}|{until}", "CU", 951782400000LL, 0,
                                   0, out, sizeof(out), err, sizeof(err)),
                 FG_OK);
    FG_CHECK_STR(out, "2000-02-29T00:00:00Z|2000-02-29T00:00:00Z");
    FG_CHECK_INT(sc_message_format("{until} {share}", "CU", 4102444799999LL,
                                   1.0, 0, out, sizeof(out), err, sizeof(err)),
                 FG_OK);
    FG_CHECK_STR(out, "2099-12-31T23:59:59Z 100%");
    /* Rounded to the nearest percent, not truncated. */
    FG_CHECK_INT(sc_message_format("{share}|{share}", "CU", 0, 0.726, 0, out,
                                   sizeof(out), err, sizeof(err)),
                 FG_OK);
    FG_CHECK_STR(out, "73%|73%");
    FG_CHECK_INT(sc_message_format("Ünïcödé ✓ {region}", "UA-43", 0, 0, 0,
                                   out, sizeof(out), err, sizeof(err)),
                 FG_OK);
    FG_CHECK_STR(out, "Ünïcödé ✓ UA-43");

    FG_CHECK_INT(sc_message_format("{untill}", "CU", 0, 0, 0, out, sizeof(out),
                                   err, sizeof(err)),
                 FG_EINVAL);
    FG_CHECK(strstr(err, "message: unknown placeholder {untill}") == err);
    FG_CHECK_STR(out, "");
    FG_CHECK_INT(sc_message_format("50% {", "CU", 0, 0, 0, out, sizeof(out),
                                   err, sizeof(err)),
                 FG_EINVAL);

    /* An expansion over the record's cap is cut between characters:
     * "{until}x" (21 bytes out) then 2-byte characters; 512 - 21 is odd, so
     * the cut falls inside one and backs off to 511 bytes. */
    o = 0;
    memcpy(tmpl, "{until}x", 8);
    o = 8;
    while (o + 2 <= SC_TEMPLATE_MAX - 1) {
        tmpl[o++] = (char)0xc3;
        tmpl[o++] = (char)0xa9;
    }
    tmpl[o] = '\0';
    FG_CHECK_INT(sc_message_format(tmpl, "CU", 0, 0, 0, out, sizeof(out), err,
                                   sizeof(err)),
                 FG_OK);
    FG_CHECK_INT(strlen(out), 511);
    FG_CHECK((unsigned char)out[509] == 0xc3 && (unsigned char)out[510] == 0xa9);
    FG_CHECK(strncmp(out, "1970-01-01T00:00:00Zx", 21) == 0);
    /* A tiny buffer: still a whole character. */
    FG_CHECK_INT(sc_message_format("é", "CU", 0, 0, 0, out, 2, err,
                                   sizeof(err)),
                 FG_OK);
    FG_CHECK_STR(out, "");
}

/* ---- the engine ---------------------------------------------------------- */

static void test_hysteresis(void)
{
    sc_engine *e = engine(NULL, NULL);
    sc_decision d = {0};
    int64_t at = 0, t;

    /* A brief crossing (2 minutes above, then between) does nothing. */
    FG_CHECK_INT(run(e, T0, T0 + 2 * MIN, 30 * SEC, "CU", N, K_LOCK, NULL,
                     NULL),
                 0);
    FG_CHECK_INT(tick1(e, T0 + 150 * SEC, "CU", N, K_BETWEEN), 0);
    /* The timer restarted: 4.5 more minutes above still does nothing ... */
    t = T0 + 180 * SEC;
    FG_CHECK_INT(run(e, t, t + 4 * MIN + 30 * SEC, 30 * SEC, "CU", N, K_LOCK,
                     NULL, NULL),
                 0);
    /* ... and at five minutes it locks, once. */
    FG_CHECK_INT(run(e, t + 5 * MIN, t + 10 * MIN, 30 * SEC, "CU", N, K_LOCK,
                     &d, &at),
                 1);
    FG_CHECK_INT(at, t + 5 * MIN);
    FG_CHECK_INT(d.lk.state, FG_LOCK_LOCKED);
    FG_CHECK_STR(d.lk.region, "CU");
    FG_CHECK_INT(d.lk.since, t + 5 * MIN);
    FG_CHECK_INT(g_rows[0].state, FG_LOCK_LOCKED);
    echo(e, &d);

    t += 11 * MIN;
    /* Between the thresholds for hours: the lock stays. */
    FG_CHECK_INT(run(e, t, t + 3 * HOUR, MIN, "CU", N, K_BETWEEN, NULL, NULL),
                 0);
    FG_CHECK_INT(g_rows[0].state, FG_LOCK_LOCKED);
    t += 3 * HOUR + MIN;
    /* Below unlock_at for 4 minutes, one tick between, 4 more: nothing. */
    FG_CHECK_INT(run(e, t, t + 4 * MIN, MIN, "CU", N, K_UNLOCK, NULL, NULL), 0);
    FG_CHECK_INT(tick1(e, t + 5 * MIN, "CU", N, K_BETWEEN), 0);
    t += 6 * MIN;
    FG_CHECK_INT(run(e, t, t + 4 * MIN, MIN, "CU", N, K_UNLOCK, NULL, NULL), 0);
    /* A tick without CU (no data) also restarts the unlock timer. */
    FG_CHECK_INT(tickn(e, t + 4 * MIN + 30 * SEC, NULL, 0), 0);
    t += 5 * MIN;
    FG_CHECK_INT(run(e, t, t + 4 * MIN, MIN, "CU", N, K_UNLOCK, NULL, NULL), 0);
    /* Sustained for five minutes: unlocked, once. */
    FG_CHECK_INT(run(e, t + 5 * MIN, t + 20 * MIN, MIN, "CU", N, K_UNLOCK, &d,
                     &at),
                 1);
    FG_CHECK_INT(at, t + 5 * MIN);
    FG_CHECK_INT(d.lk.state, FG_LOCK_UNLOCKED);
    FG_CHECK_INT(d.lk.since, t + 5 * MIN);
    FG_CHECK_INT(g_rows[0].state, FG_LOCK_UNLOCKED);
    sc_engine_free(e);
}

static void test_for_boundary(void)
{
    sc_policy p;
    sc_engine *e;
    sc_decision d = {0};
    int64_t at = 0;

    sc_policy_default(&p);
    p.for_ms = 5 * MIN;
    e = engine(&p, NULL);
    FG_CHECK_INT(tick1(e, T0, "CU", N, K_LOCK), 0);
    FG_CHECK_INT(tick1(e, T0 + 5 * MIN - 1, "CU", N, K_LOCK), 0);
    FG_CHECK_INT(tick1(e, T0 + 5 * MIN, "CU", N, K_LOCK), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_LOCKED);
    /* The same boundary for unlocking. */
    at = T0 + HOUR;
    FG_CHECK_INT(tick1(e, at, "CU", N, K_UNLOCK), 0);
    FG_CHECK_INT(tick1(e, at + 5 * MIN - 1, "CU", N, K_UNLOCK), 0);
    FG_CHECK_INT(tick1(e, at + 5 * MIN, "CU", N, K_UNLOCK), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_UNLOCKED);
    sc_engine_free(e);

    /* for = 0: the first tick that holds decides. */
    p.for_ms = 0;
    e = engine(&p, NULL);
    FG_CHECK_INT(run(e, T0, T0, SEC, "CU", N, K_LOCK, &d, &at), 1);
    FG_CHECK_INT(d.lk.state, FG_LOCK_LOCKED);
    sc_engine_free(e);
}

static void test_expiry_and_ttl_clamp(void)
{
    sc_policy p;
    sc_rails r = rails_on();
    sc_engine *e;
    int64_t since, until;
    char err[256];

    sc_policy_default(&p);
    p.for_ms = 0;
    p.ttl_ms = HOUR;
    e = engine(&p, &r);
    FG_CHECK_INT(tick1(e, T0, "CU", N, K_LOCK), 1);
    since = g_out[0].lk.since;
    until = g_out[0].lk.until;
    FG_CHECK_INT(since, T0);
    FG_CHECK_INT(until, T0 + HOUR);
    /* The lock condition holding on does not extend the lock. */
    FG_CHECK_INT(run(e, T0 + MIN, until - MIN, MIN, "CU", N, K_LOCK, NULL,
                     NULL),
                 0);
    /* until - 1: nothing; until (even without data): unlocked "expired". */
    FG_CHECK_INT(tickn(e, until - 1, NULL, 0), 0);
    FG_CHECK_INT(tickn(e, until, NULL, 0), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_UNLOCKED);
    FG_CHECK_STR(g_out[0].lk.reason, "expired");
    FG_CHECK_INT(g_out[0].lk.since, until);
    FG_CHECK_INT(g_out[0].lk.source, FG_SOURCE_AUTO);
    FG_CHECK_STR(g_out[0].lk.id, "CU:unlocked:1718003600000");
    FG_CHECK_INT(tickn(e, until + MIN, NULL, 0), 0);
    sc_engine_free(e);

    /* A late tick publishes the expiry once, with since = until. */
    e = engine(&p, &r);
    FG_CHECK_INT(tick1(e, T0, "CU", N, K_LOCK), 1);
    FG_CHECK_INT(tick1(e, T0 + 5 * HOUR, "CU", N, K_BETWEEN), 1);
    FG_CHECK_STR(g_out[0].lk.reason, "expired");
    FG_CHECK_INT(g_out[0].lk.since, T0 + HOUR);
    sc_engine_free(e);

    /* max_ttl clamps: ttl 24h under a max_ttl lowered to 2h at run time. */
    p.ttl_ms = DAY;
    e = engine(&p, &r);
    r.max_ttl_ms = 2 * HOUR;
    FG_CHECK_INT(sc_engine_set_rails(e, &r, err, sizeof(err)), FG_OK);
    FG_CHECK_INT(tick1(e, T0, "CU", N, K_LOCK), 1);
    FG_CHECK_INT(g_out[0].lk.until, T0 + 2 * HOUR);
    /* A region override beyond the ceiling is refused. */
    p.ttl_ms = 3 * HOUR;
    FG_CHECK_INT(sc_engine_set_policy(e, "DE", &p, err, sizeof(err)),
                 FG_EINVAL);
    FG_CHECK(strncmp(err, "ttl:", 4) == 0);
    sc_engine_free(e);

    /* The default: 24 hours. */
    e = engine(NULL, NULL);
    FG_CHECK_INT(run(e, T0, T0 + 5 * MIN, MIN, "CU", N, K_LOCK, NULL, NULL), 1);
    FG_CHECK_INT(g_out[0].lk.until - g_out[0].lk.since, DAY);
    sc_engine_free(e);
}

static void test_cooldown(void)
{
    sc_policy p;
    sc_engine *e;
    int64_t u, at = 0;
    sc_decision d = {0};
    fg_lock lk;

    sc_policy_default(&p);
    p.cooldown_ms = 30 * MIN;
    e = engine(&p, NULL);
    FG_CHECK_INT(run(e, T0, T0 + 5 * MIN, MIN, "CU", N, K_LOCK, NULL, NULL), 1);
    FG_CHECK_INT(run(e, T0 + 6 * MIN, T0 + 11 * MIN, MIN, "CU", N, K_UNLOCK,
                     &d, &at),
                 1);
    FG_CHECK_INT(d.lk.state, FG_LOCK_UNLOCKED);
    u = at;
    /* Grey again at once: sustained after 5 minutes, but no relock inside
     * the cooldown ... */
    FG_CHECK_INT(run(e, u + MIN, u + 29 * MIN, MIN, "CU", N, K_LOCK, NULL,
                     NULL),
                 0);
    FG_CHECK_INT(tick1(e, u + 30 * MIN - 1, "CU", N, K_LOCK), 0);
    /* ... and a relock as soon as it ends. */
    FG_CHECK_INT(tick1(e, u + 30 * MIN, "CU", N, K_LOCK), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_LOCKED);
    sc_engine_free(e);

    /* The cooldown also follows an expiry (from until) and an operator's
     * unlock (from its since). */
    p.for_ms = 0;
    p.ttl_ms = HOUR;
    e = engine(&p, NULL);
    FG_CHECK_INT(tick1(e, T0, "CU", N, K_LOCK), 1);
    FG_CHECK_INT(tick1(e, T0 + HOUR, "CU", N, K_LOCK), 1); /* expired */
    FG_CHECK_INT(run(e, T0 + HOUR + MIN, T0 + HOUR + 29 * MIN, MIN, "CU", N,
                     K_LOCK, NULL, NULL),
                 0);
    FG_CHECK_INT(tick1(e, T0 + HOUR + 30 * MIN, "CU", N, K_LOCK), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_LOCKED);
    echo(e, &g_out[0]);
    lk = ops_record("CU", FG_LOCK_UNLOCKED, T0 + 2 * HOUR, 0);
    FG_CHECK_INT(sc_engine_observe_lock(e, &lk), FG_OK);
    FG_CHECK_INT(run(e, T0 + 2 * HOUR, T0 + 2 * HOUR + 29 * MIN, MIN, "CU", N,
                     K_LOCK, NULL, NULL),
                 0);
    FG_CHECK_INT(tick1(e, T0 + 2 * HOUR + 30 * MIN, "CU", N, K_LOCK), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_LOCKED);
    sc_engine_free(e);
}

static void test_cap_regions(void)
{
    sc_policy p;
    sc_rails r = rails_on();
    sc_engine *e;
    sc_region_score s[2];
    const sc_decision *aa = NULL, *bb = NULL;

    sc_policy_default(&p);
    p.for_ms = 0;
    r.max_auto_locked_regions = 1;
    e = engine(&p, &r);
    /* BB is listed first but AA's lower bound is higher: AA takes the
     * only slot. */
    s[0] = score("BB", N, K_LOCK);
    s[1] = score("AA", N, 900);
    FG_CHECK_INT(tickn(e, T0, s, 2), 2);
    for (size_t i = 0; i < g_nout; i++) {
        if (strcmp(g_out[i].lk.region, "AA") == 0)
            aa = &g_out[i];
        else
            bb = &g_out[i];
    }
    FG_CHECK(aa && bb);
    if (!aa || !bb)
        goto out;
    FG_CHECK_INT(aa->lk.state, FG_LOCK_LOCKED);
    FG_CHECK_INT(bb->lk.state, FG_LOCK_SUPPRESSED);
    FG_CHECK(strstr(bb->lk.reason, "suppressed: 1 of max 1 auto-locked "
                                   "regions") != NULL);
    FG_CHECK(bb->lk.until > T0);
    FG_CHECK_INT(g_rows[0].state, FG_LOCK_SUPPRESSED);
    FG_CHECK_INT(g_rows[1].state, FG_LOCK_LOCKED);
    /* Not repeated. */
    FG_CHECK_INT(tickn(e, T0 + MIN, s, 2), 0);
    /* AA falls under unlock_at: its unlock frees the slot and BB, still
     * sustained, is locked in the same tick. */
    s[1] = score("AA", N, K_UNLOCK);
    FG_CHECK_INT(tickn(e, T0 + 2 * MIN, s, 2), 2);
    FG_CHECK_STR(g_out[0].lk.region, "AA");
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_UNLOCKED);
    FG_CHECK_STR(g_out[1].lk.region, "BB");
    FG_CHECK_INT(g_out[1].lk.state, FG_LOCK_LOCKED);
    sc_engine_free(e);

    /* A cap of 0 suppresses every lock. */
    r.max_auto_locked_regions = 0;
    e = engine(&p, &r);
    FG_CHECK_INT(tick1(e, T0, "CU", N, K_LOCK), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_SUPPRESSED);
out:
    sc_engine_free(e);
}

static void test_cap_devices(void)
{
    sc_policy p;
    sc_rails r = rails_on();
    sc_engine *e;
    fg_lock lk;

    sc_policy_default(&p);
    p.for_ms = 0;
    r.max_auto_locked_devices = 1000;
    e = engine(&p, &r);
    /* Scope grey: AA puts its 900 grey devices under the lock. */
    FG_CHECK_INT(tick1(e, T0, "AA", N, 900), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_LOCKED);
    /* BB's 800 more would make 1700 > 1000: suppressed. */
    FG_CHECK_INT(tick1(e, T0 + MIN, "BB", N, K_LOCK), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_SUPPRESSED);
    FG_CHECK(strstr(g_out[0].lk.reason,
                    "suppressed: 900 + 800 devices over max 1000") != NULL);
    /* CC's 100 fit exactly (900 + 100 = 1000). */
    FG_CHECK_INT(tick1(e, T0 + 2 * MIN, "CC", 100, 100), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_LOCKED);
    sc_engine_free(e);

    /* Scope all counts every device of the region. */
    p.scope = FG_SCOPE_ALL;
    e = engine(&p, &r);
    FG_CHECK_INT(tick1(e, T0, "AA", 600, 500), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_LOCKED);
    FG_CHECK_INT(g_out[0].lk.scope, FG_SCOPE_ALL);
    FG_CHECK_INT(tick1(e, T0 + MIN, "BB", 500, 450), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_SUPPRESSED);
    sc_engine_free(e);

    /* Auto locks read back from the topic count too (no score yet: the
     * record's devices). */
    p.scope = FG_SCOPE_GREY;
    e = engine(&p, &r);
    lk = ops_record("ZZ", FG_LOCK_LOCKED, T0 - HOUR, T0 + HOUR);
    lk.source = FG_SOURCE_AUTO;
    lk.devices = 950;
    lk.has = FG_LOCK_HAS_DEVICES;
    FG_CHECK_INT(sc_engine_observe_lock(e, &lk), FG_OK);
    FG_CHECK_INT(tick1(e, T0, "AA", 100, 90), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_SUPPRESSED);
    /* Once that lock has expired, AA fits (ZZ's expiry is published too). */
    FG_CHECK_INT(tick1(e, T0 + HOUR, "AA", 100, 90), 2);
    FG_CHECK_STR(g_out[0].lk.region, "ZZ");
    FG_CHECK_STR(g_out[0].lk.reason, "expired");
    FG_CHECK_STR(g_out[1].lk.region, "AA");
    FG_CHECK_INT(g_out[1].lk.state, FG_LOCK_LOCKED);
    sc_engine_free(e);
}

static void test_shadow_mode(void)
{
    sc_rails r = rails_on();
    sc_engine *e;
    sc_decision d = {0};
    int64_t at = 0;
    char err[256];

    r.enforce = false;
    e = engine(NULL, &r);
    FG_CHECK_INT(run(e, T0, T0 + HOUR, MIN, "CU", N, K_LOCK, &d, &at), 1);
    FG_CHECK_INT(at, T0 + 5 * MIN);
    FG_CHECK_INT(d.lk.state, FG_LOCK_SHADOW);
    FG_CHECK_INT(d.lk.until, at + DAY);
    FG_CHECK(strstr(d.lk.reason, "; shadow: enforce off") != NULL);
    FG_CHECK(d.lk.message[0] != '\0');
    FG_CHECK_INT(g_rows[0].state, FG_LOCK_SHADOW);
    /* Enforcement switched on while the condition holds: locked. */
    r.enforce = true;
    FG_CHECK_INT(sc_engine_set_rails(e, &r, err, sizeof(err)), FG_OK);
    FG_CHECK_INT(tick1(e, T0 + HOUR + MIN, "CU", N, K_LOCK), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_LOCKED);
    sc_engine_free(e);

    /* A shadow lock is released like a real one. */
    r.enforce = false;
    e = engine(NULL, &r);
    FG_CHECK_INT(run(e, T0, T0 + 5 * MIN, MIN, "CU", N, K_LOCK, NULL, NULL), 1);
    FG_CHECK_INT(run(e, T0 + 6 * MIN, T0 + HOUR, MIN, "CU", N, K_UNLOCK, &d,
                     &at),
                 1);
    FG_CHECK_INT(d.lk.state, FG_LOCK_UNLOCKED);
    FG_CHECK_INT(at, T0 + 11 * MIN);
    sc_engine_free(e);
}

static void test_pins(void)
{
    sc_engine *e = engine(NULL, NULL);
    fg_lock lk = ops_record("CU", FG_LOCK_UNLOCKED, T0 - 2 * HOUR, 0);
    int64_t pin = T0 + 2 * HOUR, at = 0;
    sc_decision d = {0};

    lk.pin_until = pin;
    lk.has = FG_LOCK_HAS_PIN;
    FG_CHECK_INT(sc_engine_observe_lock(e, &lk), FG_OK);
    /* Grey for two hours: no lock before pin_until, one right at it. */
    FG_CHECK_INT(run(e, T0, pin - MIN, MIN, "CU", N, K_LOCK, NULL, NULL), 0);
    FG_CHECK_INT(tick1(e, pin - 1, "CU", N, K_LOCK), 0);
    FG_CHECK_INT(run(e, pin, pin + HOUR, MIN, "CU", N, K_LOCK, &d, &at), 1);
    FG_CHECK_INT(at, pin);
    FG_CHECK_INT(d.lk.state, FG_LOCK_LOCKED);
    sc_engine_free(e);
}

static void test_never_and_monitor(void)
{
    sc_policy p;
    sc_engine *e;
    sc_decision d = {0};
    int64_t at = 0;
    fg_lock lk;
    char err[256];

    sc_policy_default(&p);
    p.mode = SC_MODE_NEVER;
    e = engine(&p, NULL);
    FG_CHECK_INT(run(e, T0, T0 + 2 * HOUR, MIN, "CU", N, K_LOCK, NULL, NULL),
                 0);
    FG_CHECK_INT(g_rows[0].mode, SC_MODE_NEVER);
    FG_CHECK_INT(g_rows[0].state, FG_LOCK_UNLOCKED);
    FG_CHECK(g_rows[0].lo >= 0.6);
    /* An auto lock already in place is neither unlocked nor expired. */
    lk = ops_record("CU", FG_LOCK_LOCKED, T0, T0 + 3 * HOUR);
    lk.source = FG_SOURCE_AUTO;
    FG_CHECK_INT(sc_engine_observe_lock(e, &lk), FG_OK);
    FG_CHECK_INT(run(e, T0 + 2 * HOUR, T0 + 3 * HOUR - 1, MIN, "CU", N,
                     K_UNLOCK, NULL, NULL),
                 0);
    FG_CHECK_INT(g_rows[0].state, FG_LOCK_LOCKED);
    FG_CHECK_INT(run(e, T0 + 3 * HOUR, T0 + 4 * HOUR, MIN, "CU", N, K_UNLOCK,
                     NULL, NULL),
                 0);
    /* The score rows still show that the lock has expired. */
    FG_CHECK_INT(g_rows[0].state, FG_LOCK_UNLOCKED);
    sc_engine_free(e);

    /* monitor: would-be locks are shadow records even with enforce on. */
    p.mode = SC_MODE_MONITOR;
    e = engine(&p, NULL);
    FG_CHECK_INT(run(e, T0, T0 + HOUR, MIN, "CU", N, K_LOCK, &d, &at), 1);
    FG_CHECK_INT(d.lk.state, FG_LOCK_SHADOW);
    FG_CHECK(strstr(d.lk.reason, "; shadow: monitor mode") != NULL);
    FG_CHECK_INT(g_rows[0].mode, SC_MODE_MONITOR);
    sc_engine_free(e);

    /* Per-region override: only DE is in monitor mode. */
    e = engine(NULL, NULL);
    FG_CHECK_INT(sc_engine_set_policy(e, "DE", &p, err, sizeof(err)), FG_OK);
    FG_CHECK(sc_engine_policy(e, "DE")->mode == SC_MODE_MONITOR);
    FG_CHECK(sc_engine_policy(e, "FR")->mode == SC_MODE_AUTO);
    FG_CHECK(sc_engine_policy(e, "DE-BY")->mode == SC_MODE_AUTO);
    {
        sc_region_score s[2] = {score("DE", N, K_LOCK), score("FR", N, K_LOCK)};
        for (int64_t t = T0; t < T0 + 5 * MIN; t += MIN)
            FG_CHECK_INT(tickn(e, t, s, 2), 0);
        FG_CHECK_INT(tickn(e, T0 + 5 * MIN, s, 2), 2);
        FG_CHECK_STR(g_out[0].lk.region, "DE");
        FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_SHADOW);
        FG_CHECK_STR(g_out[1].lk.region, "FR");
        FG_CHECK_INT(g_out[1].lk.state, FG_LOCK_LOCKED);
    }
    FG_CHECK_INT(sc_engine_set_policy(e, "DE", NULL, err, sizeof(err)), FG_OK);
    FG_CHECK(sc_engine_policy(e, "DE")->mode == SC_MODE_AUTO);
    FG_CHECK_INT(sc_engine_set_policy(e, "de", &p, err, sizeof(err)),
                 FG_EINVAL);
    sc_engine_free(e);
}

static void test_min_devices(void)
{
    sc_policy p;
    sc_engine *e;
    int64_t at = 0;
    sc_decision d = {0};

    sc_policy_default(&p);
    p.ttl_ms = 6 * HOUR;
    e = engine(&p, NULL);
    /* 49 of 49 grey (lo 0.93) never locks with min_devices 50. */
    FG_CHECK_INT(run(e, T0, T0 + 2 * HOUR, MIN, "CU", 49, 49, NULL, NULL), 0);
    /* 50 of 50 does, after `for`. */
    FG_CHECK_INT(run(e, T0 + 2 * HOUR + MIN, T0 + 3 * HOUR, MIN, "CU", 50, 50,
                     &d, &at),
                 1);
    FG_CHECK_INT(at, T0 + 2 * HOUR + 6 * MIN);
    FG_CHECK_INT(d.lk.state, FG_LOCK_LOCKED);
    /* Too few devices, all of them legitimate (hi 0.07): no unlock ... */
    FG_CHECK_INT(run(e, T0 + 3 * HOUR + MIN, at + 6 * HOUR - MIN, MIN, "CU", 49,
                     0, NULL, NULL),
                 0);
    /* ... but the lock still expires. */
    FG_CHECK_INT(tick1(e, at + 6 * HOUR, "CU", 49, 0), 1);
    FG_CHECK_STR(g_out[0].lk.reason, "expired");
    sc_engine_free(e);

    /* A thin tick in the middle restarts the lock timer. */
    e = engine(&p, NULL);
    FG_CHECK_INT(run(e, T0, T0 + 4 * MIN, MIN, "CU", N, K_LOCK, NULL, NULL), 0);
    FG_CHECK_INT(tick1(e, T0 + 5 * MIN, "CU", 10, 10), 0);
    FG_CHECK_INT(run(e, T0 + 6 * MIN, T0 + 10 * MIN, MIN, "CU", N, K_LOCK, NULL,
                     NULL),
                 0);
    FG_CHECK_INT(tick1(e, T0 + 11 * MIN, "CU", N, K_LOCK), 1);
    sc_engine_free(e);
}

static void test_ops_locks_untouched(void)
{
    sc_policy p;
    sc_rails r = rails_on();
    sc_engine *e;
    fg_lock lk = ops_record("CU", FG_LOCK_LOCKED, T0, T0 + 5 * HOUR);

    sc_policy_default(&p);
    p.for_ms = 0;
    r.max_auto_locked_regions = 1;
    e = engine(&p, &r);
    FG_CHECK_INT(sc_engine_observe_lock(e, &lk), FG_OK);
    /* Sustained unlock condition: the operator's lock stays. */
    FG_CHECK_INT(run(e, T0, T0 + HOUR, MIN, "CU", N, K_UNLOCK, NULL, NULL), 0);
    FG_CHECK_INT(g_rows[0].state, FG_LOCK_LOCKED);
    FG_CHECK_INT(g_rows[0].source, FG_SOURCE_OPS);
    /* Sustained lock condition: not replaced by an auto lock either. */
    FG_CHECK_INT(run(e, T0 + HOUR, T0 + 2 * HOUR, MIN, "CU", N, K_LOCK, NULL,
                     NULL),
                 0);
    FG_CHECK(sc_engine_record(e, "CU")->source == FG_SOURCE_OPS);
    /* It does not count toward the auto caps: DE can take the one slot. */
    FG_CHECK_INT(tick1(e, T0 + 2 * HOUR, "DE", N, K_LOCK), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_LOCKED);
    /* Its expiry is not republished by automation; after it the region is
     * free for automation again (here the cap is full: suppressed). */
    FG_CHECK_INT(tickn(e, T0 + 5 * HOUR - 1, NULL, 0), 0);
    FG_CHECK_INT(tick1(e, T0 + 5 * HOUR, "CU", N, K_LOCK), 1);
    FG_CHECK_STR(g_out[0].lk.region, "CU");
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_SUPPRESSED);
    sc_engine_free(e);

    /* An operator's record ends our wait for a pending decision, and an
     * operator lifting our lock holds automation off for the cooldown. */
    e = engine(&p, NULL);
    FG_CHECK_INT(tick1(e, T0, "CU", N, K_LOCK), 1);
    FG_CHECK_INT(sc_engine_record(e, "CU")->source, FG_SOURCE_AUTO);
    lk = ops_record("CU", FG_LOCK_UNLOCKED, T0 + MIN, 0);
    FG_CHECK_INT(sc_engine_observe_lock(e, &lk), FG_OK);
    FG_CHECK_INT(sc_engine_record(e, "CU")->source, FG_SOURCE_OPS);
    FG_CHECK_INT(run(e, T0 + MIN, T0 + 30 * MIN, MIN, "CU", N, K_LOCK, NULL,
                     NULL),
                 0);
    FG_CHECK_INT(tick1(e, T0 + 31 * MIN, "CU", N, K_LOCK), 1);
    sc_engine_free(e);
}

static void test_no_duplicates(void)
{
    sc_engine *e = engine(NULL, NULL);
    sc_decision d = {0};
    int64_t at = 0;
    char id[FG_LOCK_ID_MAX + 1];

    /* Two hours of sustained grey, ticking every 10 s: one lock. */
    FG_CHECK_INT(run(e, T0, T0 + 2 * HOUR, 10 * SEC, "CU", N, K_LOCK, &d, &at),
                 1);
    FG_CHECK_INT(d.lk.state, FG_LOCK_LOCKED);
    FG_CHECK_STR(d.lk.id, "CU:locked:1718000300000");
    FG_CHECK_STR(d.lk.actor, "scorer");
    FG_CHECK_INT(d.lk.source, FG_SOURCE_AUTO);
    FG_CHECK_INT(d.lk.scope, FG_SCOPE_GREY);
    FG_CHECK(d.lk.has & FG_LOCK_HAS_SCORE);
    FG_CHECK(d.lk.has & FG_LOCK_HAS_DEVICES);
    FG_CHECK_INT(d.lk.devices, N);
    FG_CHECK(d.lk.score >= 0.6);
    /* Reading our own record back changes nothing; an old replayed record
     * does not either. */
    echo(e, &d);
    FG_CHECK_INT(run(e, T0 + 2 * HOUR, T0 + 3 * HOUR, 10 * SEC, "CU", N,
                     K_LOCK, NULL, NULL),
                 0);
    echo(e, &d);
    FG_CHECK_INT(run(e, T0 + 3 * HOUR, T0 + 4 * HOUR, 10 * SEC, "CU", N,
                     K_BETWEEN, NULL, NULL),
                 0);
    /* A failed publish is decided again, once. */
    FG_CHECK_INT(run(e, T0 + 4 * HOUR, T0 + 5 * HOUR, 10 * SEC, "CU", N,
                     K_UNLOCK, &d, &at),
                 1);
    FG_CHECK_INT(d.lk.state, FG_LOCK_UNLOCKED);
    snprintf(id, sizeof(id), "%s", d.lk.id);
    FG_CHECK_INT(sc_engine_publish_failed(e, "CU", "CU:locked:1"),
                 FG_ENOTFOUND);
    FG_CHECK_INT(sc_engine_publish_failed(e, "CU", id), FG_OK);
    FG_CHECK_INT(sc_engine_publish_failed(e, "CU", id), FG_ENOTFOUND);
    FG_CHECK_INT(run(e, T0 + 5 * HOUR + SEC, T0 + 6 * HOUR, 10 * SEC, "CU", N,
                     K_UNLOCK, &d, &at),
                 1);
    FG_CHECK_INT(d.lk.state, FG_LOCK_UNLOCKED);
    FG_CHECK_INT(at, T0 + 5 * HOUR + SEC);
    /* A failed unlock starts no cooldown: the lock was never lifted. Here
     * an operator then deletes the record, and automation may lock again
     * at once (the unlock at T0+5h+1s went through and does hold it off). */
    echo(e, &d);
    FG_CHECK_INT(run(e, T0 + 6 * HOUR, T0 + 6 * HOUR + 4 * MIN, MIN, "CU", N,
                     K_LOCK, NULL, NULL),
                 0);
    FG_CHECK_INT(tick1(e, T0 + 6 * HOUR + 5 * MIN, "CU", N, K_LOCK), 1);
    FG_CHECK_INT(g_out[0].lk.state, FG_LOCK_LOCKED);
    echo(e, &g_out[0]);
    FG_CHECK_INT(run(e, T0 + 7 * HOUR, T0 + 7 * HOUR + 5 * MIN, MIN, "CU", N,
                     K_UNLOCK, &d, &at),
                 1);
    FG_CHECK_INT(d.lk.state, FG_LOCK_UNLOCKED);
    FG_CHECK_INT(sc_engine_publish_failed(e, "CU", d.lk.id), FG_OK);
    FG_CHECK_INT(sc_engine_observe_tombstone(e, "CU"), FG_OK);
    FG_CHECK_INT(tick1(e, T0 + 7 * HOUR + 6 * MIN, "CU", N, K_LOCK), 0);
    FG_CHECK_INT(run(e, T0 + 7 * HOUR + 7 * MIN, T0 + 7 * HOUR + 11 * MIN,
                     MIN, "CU", N, K_LOCK, &d, &at),
                 1);
    FG_CHECK_INT(at, T0 + 7 * HOUR + 11 * MIN);
    FG_CHECK_INT(d.lk.state, FG_LOCK_LOCKED);
    /* A tombstone: the region has no record; nothing to release. */
    FG_CHECK_INT(sc_engine_observe_tombstone(e, "CU"), FG_OK);
    FG_CHECK(sc_engine_record(e, "CU") == NULL);
    FG_CHECK_INT(run(e, T0 + 8 * HOUR, T0 + 9 * HOUR, MIN, "CU", N, K_UNLOCK,
                     NULL, NULL),
                 0);
    sc_engine_free(e);
}

static void test_reason_and_message(void)
{
    sc_policy p;
    sc_engine *e;
    char err[256], want[FG_LOCK_REASON_MAX + 1];
    double lo, hi;

    sc_policy_default(&p);
    FG_CHECK_INT(sc_policy_set(&p, "message",
                               "{region}: blocked until {until} ({share})",
                               err, sizeof(err)),
                 FG_OK);
    e = engine(&p, NULL);
    FG_CHECK_INT(run(e, T0, T0 + 5 * MIN, MIN, "UA-43", 812, 700, NULL, NULL),
                 1);
    sc_wilson(700, 812, 1.96, &lo, &hi);
    snprintf(want, sizeof(want),
             "grey share lower bound %.2f >= 0.60 over 5m with 812 devices",
             lo);
    FG_CHECK_STR(g_out[0].lk.reason, want);
    FG_CHECK(g_out[0].lk.score == lo);
    /* until = T0 + 5m + 24h = 2024-06-11T06:18:20Z; 700/812 = 86%. */
    FG_CHECK_STR(g_out[0].lk.message,
                 "UA-43: blocked until 2024-06-11T06:18:20Z (86%)");
    FG_CHECK_STR(g_out[0].lk.id, "UA-43:locked:1718000300000");
    /* Rows carry what fleet.region-scores needs. */
    FG_CHECK_STR(g_rows[0].region, "UA-43");
    FG_CHECK_INT(g_rows[0].ts, T0 + 5 * MIN);
    FG_CHECK_INT(g_rows[0].devices, 812);
    FG_CHECK_INT(g_rows[0].grey, 700);
    FG_CHECK(near(g_rows[0].share, 700.0 / 812.0, 1e-15));
    FG_CHECK(g_rows[0].lo == lo && g_rows[0].hi == hi);
    FG_CHECK_INT(g_rows[0].mode, SC_MODE_AUTO);
    FG_CHECK_INT(g_rows[0].state, FG_LOCK_LOCKED);
    /* The unlock explains its numbers as well. */
    FG_CHECK_INT(run(e, T0 + 6 * MIN, T0 + 11 * MIN, MIN, "UA-43", 812, 100,
                     NULL, NULL),
                 1);
    sc_wilson(100, 812, 1.96, &lo, &hi);
    snprintf(want, sizeof(want),
             "grey share upper bound %.2f <= 0.30 over 5m with 812 devices",
             hi);
    FG_CHECK_STR(g_out[0].lk.reason, want);
    FG_CHECK_STR(g_out[0].lk.message, "");
    FG_CHECK_INT(g_out[0].lk.until, 0);
    sc_engine_free(e);
}

static void test_tick_input(void)
{
    sc_policy p;
    sc_engine *e;
    sc_region_score s[3];
    sc_decision out[3];
    size_t nout = 99;

    sc_policy_default(&p);
    p.for_ms = 0;
    e = engine(&p, NULL);
    s[0] = score("CU", 10, 11);
    FG_CHECK_INT(sc_engine_tick(e, T0, s, 1, NULL, out, 3, &nout), FG_EINVAL);
    FG_CHECK_INT(nout, 0);
    s[0] = score("CU", -1, 0);
    FG_CHECK_INT(sc_engine_tick(e, T0, s, 1, NULL, out, 3, &nout), FG_EINVAL);
    s[0] = score("cu", N, K_LOCK);
    FG_CHECK_INT(sc_engine_tick(e, T0, s, 1, NULL, out, 3, &nout), FG_EINVAL);
    s[0] = score("CU", N, K_LOCK);
    s[1] = score("CU", N, K_LOCK);
    FG_CHECK_INT(sc_engine_tick(e, T0, s, 2, NULL, out, 3, &nout), FG_EINVAL);
    FG_CHECK_INT(nout, 0);
    FG_CHECK_INT(sc_engine_tick(e, -1, s, 1, NULL, out, 3, &nout), FG_EINVAL);

    /* Room for one decision of three: the others come next tick. */
    s[0] = score("AA", N, 900);
    s[1] = score("BB", N, 850);
    s[2] = score("CC", N, K_LOCK);
    FG_CHECK_INT(sc_engine_tick(e, T0, s, 3, NULL, out, 1, &nout), FG_AGAIN);
    FG_CHECK_INT(nout, 1);
    FG_CHECK_STR(out[0].lk.region, "AA");
    FG_CHECK_INT(sc_engine_tick(e, T0 + SEC, s, 3, NULL, out, 3, &nout), FG_OK);
    FG_CHECK_INT(nout, 2);
    FG_CHECK_STR(out[0].lk.region, "BB");
    FG_CHECK_STR(out[1].lk.region, "CC");
    FG_CHECK_INT(sc_engine_tick(e, T0 + 2 * SEC, s, 3, NULL, out, 3, &nout),
                 FG_OK);
    FG_CHECK_INT(nout, 0);
    sc_engine_free(e);
}

FG_TEST_MAIN(test_wilson_known_values, test_series_values, test_policy_parse,
             test_rails_parse, test_message_template, test_hysteresis,
             test_for_boundary, test_expiry_and_ttl_clamp, test_cooldown,
             test_cap_regions, test_cap_devices, test_shadow_mode, test_pins,
             test_never_and_monitor, test_min_devices,
             test_ops_locks_untouched, test_no_duplicates,
             test_reason_and_message, test_tick_input)
