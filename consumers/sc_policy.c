/* SPDX-License-Identifier: Apache-2.0 */
/* The scorer's decision engine: Wilson bounds, policy and rails parsing,
 * message templates, and the per-region state machine that turns score
 * series into lock records with hysteresis, caps, pins and cooldowns.
 * Pure: no I/O and no clock; the caller passes the time of each tick. */
#include "sc_policy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_utf8.h"

#define SC_ACTOR "scorer"

/* ---- small helpers ---------------------------------------------------- */

/* Adds d to t without overflowing int64 (d >= 0). */
static int64_t add_sat(int64_t t, int64_t d)
{
    if (d > 0 && t > INT64_MAX - d)
        return INT64_MAX;
    return t + d;
}

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool eq_nocase(const char *a, const char *b)
{
    while (*a && *b) {
        if (ascii_lower(*a) != ascii_lower(*b))
            return false;
        a++;
        b++;
    }
    return *a == *b;
}

/* Unsigned decimal digits only, no sign, no spaces; fails on overflow.
 * *used gets the number of digits (at least one). */
static bool parse_digits(const char *s, size_t *used, uint64_t *out)
{
    uint64_t u = 0;
    size_t i = 0;
    while (s[i] >= '0' && s[i] <= '9') {
        unsigned d = (unsigned)(s[i] - '0');
        if (u > (UINT64_MAX - d) / 10)
            return false;
        u = u * 10 + d;
        i++;
    }
    if (i == 0)
        return false;
    *used = i;
    *out = u;
    return true;
}

static bool parse_int(const char *s, int64_t *out)
{
    size_t used;
    uint64_t u;
    if (!parse_digits(s, &used, &u) || s[used] != '\0' || u > INT64_MAX)
        return false;
    *out = (int64_t)u;
    return true;
}

/* Milliseconds: digits then nothing (ms), ms, s, m, h or d, any case; the
 * same grammar as fg_config's durations. */
static bool parse_duration(const char *s, int64_t *out)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"", 1},          {"ms", 1},         {"s", 1000},
                 {"m", 60000},     {"h", 3600000},    {"d", 86400000}};
    size_t used;
    uint64_t u;

    if (!parse_digits(s, &used, &u))
        return false;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (!eq_nocase(s + used, units[i].unit))
            continue;
        if (u > (uint64_t)INT64_MAX / units[i].mult)
            return false;
        *out = (int64_t)(u * units[i].mult);
        return true;
    }
    return false;
}

/* A plain decimal number ("0.6", "1", "1.5e-1"): no hex, inf, nan or
 * surrounding spaces. */
static bool parse_number(const char *s, double *out)
{
    char *end = NULL;
    double v;
    if (*s == '\0')
        return false;
    for (const char *c = s; *c; c++) {
        if (!((*c >= '0' && *c <= '9') || *c == '.' || *c == 'e' ||
              *c == 'E' || *c == '+' || *c == '-'))
            return false;
    }
    v = strtod(s, &end);
    if (end == s || *end != '\0' || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (eq_nocase(s, yes[i])) {
            *out = true;
            return true;
        }
        if (eq_nocase(s, no[i])) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* "5m", "90s", "1500ms", "7d": the largest unit that divides exactly. */
static void fmt_duration(int64_t ms, char *out, size_t cap)
{
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms > 0 && ms % units[i].mult == 0) {
            snprintf(out, cap, "%lld%s", (long long)(ms / units[i].mult),
                     units[i].unit);
            return;
        }
    }
    snprintf(out, cap, ms == 0 ? "0s" : "%lldms", (long long)ms);
}

/* Last millisecond with a four-digit year: 9999-12-31T23:59:59.999Z. */
#define SC_ISO_MAX_MS 253402300799999LL

/* ISO-8601 UTC with seconds, "2024-06-10T08:00:00Z", from ms since the
 * epoch, clamped to 1970..9999 so the text is always 20 bytes (days to a
 * proleptic Gregorian date by 400-year eras; no libc time functions, so no
 * time zone state is involved). */
static void fmt_iso8601(int64_t ms, char *out, size_t cap)
{
    int64_t secs, days, sod, z, era, doe, yoe, doy, mp, d, m, y;

    if (ms < 0)
        ms = 0;
    if (ms > SC_ISO_MAX_MS)
        ms = SC_ISO_MAX_MS;
    secs = ms / 1000;
    days = secs / 86400;
    sod = secs % 86400;
    z = days + 719468; /* days since 0000-03-01 */
    era = z / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y = yoe + era * 400 + (m <= 2);
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02dZ", (int)y, (int)m,
             (int)d, (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60));
}

/* ---- Wilson score interval -------------------------------------------- */

void sc_wilson(int64_t k, int64_t n, double z, double *lo, double *hi)
{
    double nn, p, z2, denom, centre, half;

    if (n <= 0) {
        *lo = 0.0;
        *hi = 1.0;
        return;
    }
    if (k < 0)
        k = 0;
    if (k > n)
        k = n;
    nn = (double)n;
    p = (double)k / nn;
    z2 = z * z;
    denom = 1.0 + z2 / nn;
    centre = (p + z2 / (2.0 * nn)) / denom;
    half = z * sqrt(p * (1.0 - p) / nn + z2 / (4.0 * nn * nn)) / denom;
    *lo = k == 0 ? 0.0 : fmax(0.0, centre - half);
    *hi = k == n ? 1.0 : fmin(1.0, centre + half);
}

/* ---- names -------------------------------------------------------------- */

const char *sc_mode_str(sc_mode m)
{
    switch (m) {
    case SC_MODE_AUTO: return "auto";
    case SC_MODE_MONITOR: return "monitor";
    case SC_MODE_NEVER: return "never";
    }
    return "unknown";
}

static bool mode_parse(const char *s, sc_mode *m)
{
    static const sc_mode all[] = {SC_MODE_AUTO, SC_MODE_MONITOR, SC_MODE_NEVER};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcmp(s, sc_mode_str(all[i])) == 0) {
            *m = all[i];
            return true;
        }
    }
    return false;
}

/* ---- message templates ------------------------------------------------ */

/* The text is shown on a phone: strict UTF-8 without C0 controls or DEL.
 * Returns NULL or what is wrong. */
static const char *text_problem(const unsigned char *s, size_t n)
{
    switch (fg_utf8_check(s, n, 0, NULL)) {
    case FG_UTF8_OK:
        return NULL;
    case FG_UTF8_CONTROL:
        return "control character";
    default:
        return "invalid UTF-8";
    }
}

typedef enum tmpl_var {
    VAR_REGION,
    VAR_UNTIL,
    VAR_SHARE,
    VAR_DEVICES,
    VAR_NONE
} tmpl_var;

static const char *const tmpl_names[] = {"{region}", "{until}", "{share}",
                                         "{devices}"};

/* Which placeholder starts at s, or VAR_NONE. */
static tmpl_var tmpl_match(const char *s, size_t *len)
{
    for (size_t i = 0; i < sizeof(tmpl_names) / sizeof(tmpl_names[0]); i++) {
        size_t l = strlen(tmpl_names[i]);
        if (strncmp(s, tmpl_names[i], l) == 0) {
            *len = l;
            return (tmpl_var)i;
        }
    }
    return VAR_NONE;
}

/* Checks tmpl; with out != NULL also expands it (out has room for every
 * expansion of a valid template: see SC_EXPAND_MAX). */
static fg_status tmpl_run(const char *tmpl, const char *region,
                          int64_t until_ms, double share, int64_t devices,
                          char *out, size_t *outlen, char *errbuf,
                          size_t errlen)
{
    size_t n = strlen(tmpl), o = 0, i = 0;
    const char *bad;

    if (n > SC_TEMPLATE_MAX) {
        fg_errf(errbuf, errlen, "message: too long (%zu bytes, max %d)", n,
                SC_TEMPLATE_MAX);
        return FG_EINVAL;
    }
    bad = text_problem((const unsigned char *)tmpl, n);
    if (bad) {
        fg_errf(errbuf, errlen, "message: %s", bad);
        return FG_EINVAL;
    }
    while (i < n) {
        char val[64];
        size_t len = 0;
        tmpl_var v;
        if (tmpl[i] != '{') {
            if (out)
                out[o++] = tmpl[i];
            i++;
            continue;
        }
        if (tmpl[i + 1] == '{') {
            if (out)
                out[o++] = '{';
            i += 2;
            continue;
        }
        v = tmpl_match(tmpl + i, &len);
        if (v == VAR_NONE) {
            const char *close = strchr(tmpl + i, '}');
            int shown = close ? (int)(close - (tmpl + i) + 1) : 1;
            if (shown > 32)
                shown = 1;
            fg_errf(errbuf, errlen,
                    "message: unknown placeholder %.*s at byte %zu (known: "
                    "{region} {until} {share} {devices}; write {{ for {)",
                    shown, tmpl + i, i);
            return FG_EINVAL;
        }
        i += len;
        if (!out)
            continue;
        switch (v) {
        case VAR_REGION: snprintf(val, sizeof(val), "%s", region); break;
        case VAR_UNTIL: fmt_iso8601(until_ms, val, sizeof(val)); break;
        case VAR_SHARE:
            snprintf(val, sizeof(val), "%d%%",
                     (int)floor(fmin(fmax(share, 0.0), 1.0) * 100.0 + 0.5));
            break;
        case VAR_DEVICES:
            snprintf(val, sizeof(val), "%lld", (long long)devices);
            break;
        case VAR_NONE: val[0] = '\0'; break;
        }
        memcpy(out + o, val, strlen(val));
        o += strlen(val);
    }
    if (out) {
        out[o] = '\0';
        *outlen = o;
    }
    return FG_OK;
}

/* Room for any expansion of a valid template: every placeholder is at least
 * 7 bytes of template and at most 20 bytes of output ({until}). */
#define SC_EXPAND_MAX (SC_TEMPLATE_MAX * 3 + 1)

fg_status sc_message_format(const char *tmpl, const char *region,
                            int64_t until_ms, double share, int64_t devices,
                            char *out, size_t cap, char *errbuf,
                            size_t errlen)
{
    char buf[SC_EXPAND_MAX];
    size_t len = 0;
    fg_status st;

    if (cap == 0)
        return FG_EINVAL;
    out[0] = '\0';
    st = tmpl_run(tmpl, region ? region : "", until_ms, share, devices, buf,
                  &len, errbuf, errlen);
    if (st != FG_OK)
        return st;
    if (len > cap - 1) {
        len = cap - 1;
        /* Never end inside a character: back off over continuation bytes
         * to the lead byte, which is cut too. */
        while (len > 0 && ((unsigned char)buf[len] & 0xc0) == 0x80)
            len--;
    }
    memcpy(out, buf, len);
    out[len] = '\0';
    return FG_OK;
}

/* ---- policy and rails ------------------------------------------------- */

void sc_policy_default(sc_policy *p)
{
    memset(p, 0, sizeof(*p));
    p->mode = SC_MODE_AUTO;
    p->lock_at = 0.6;
    p->unlock_at = 0.3;
    p->min_devices = 50;
    p->for_ms = 5 * 60000;
    p->ttl_ms = 24 * 3600000LL;
    p->cooldown_ms = 30 * 60000;
    p->scope = FG_SCOPE_GREY;
    snprintf(p->message, sizeof(p->message),
             "This device cannot be used in {region} until {until}.");
}

void sc_rails_default(sc_rails *r)
{
    memset(r, 0, sizeof(*r));
    r->enforce = false;
    r->max_auto_locked_regions = 10;
    r->max_auto_locked_devices = 100000;
    r->max_ttl_ms = 7 * 86400000LL;
    r->z = 1.96;
}

static bool dur_ok(int64_t v, int64_t min)
{
    return v >= min && v <= SC_DURATION_MAX;
}

/* The policy keys, in the order errors are reported, with what each
 * accepts (the text of its error). */
typedef enum policy_key {
    PK_MODE,
    PK_LOCK_AT,
    PK_UNLOCK_AT,
    PK_MIN_DEVICES,
    PK_FOR,
    PK_TTL,
    PK_COOLDOWN,
    PK_SCOPE,
    PK_MESSAGE,
    PK_COUNT
} policy_key;

static const struct {
    const char *name;
    const char *rule;
} policy_keys[PK_COUNT] = {
    [PK_MODE] = {"mode", "must be auto, monitor or never"},
    [PK_LOCK_AT] = {"lock_at", "must be a number in (0, 1]"},
    [PK_UNLOCK_AT] = {"unlock_at", "must be a number in (0, 1)"},
    [PK_MIN_DEVICES] = {"min_devices", "must be an integer >= 1"},
    [PK_FOR] = {"for", "must be a duration from 0 to 3650d"},
    [PK_TTL] = {"ttl", "must be a duration from 1ms to 3650d"},
    [PK_COOLDOWN] = {"cooldown", "must be a duration from 0 to 3650d"},
    [PK_SCOPE] = {"scope", "must be grey or all"},
    [PK_MESSAGE] = {"message", "must be a valid template"},
};

/* Checks one field of p on its own. */
static fg_status policy_check_key(const sc_policy *p, policy_key k,
                                  char *errbuf, size_t errlen)
{
    bool ok = true;
    switch (k) {
    case PK_MODE:
        ok = p->mode == SC_MODE_AUTO || p->mode == SC_MODE_MONITOR ||
             p->mode == SC_MODE_NEVER;
        break;
    case PK_LOCK_AT: ok = p->lock_at > 0.0 && p->lock_at <= 1.0; break;
    case PK_UNLOCK_AT: ok = p->unlock_at > 0.0 && p->unlock_at < 1.0; break;
    case PK_MIN_DEVICES: ok = p->min_devices >= 1; break;
    case PK_FOR: ok = dur_ok(p->for_ms, 0); break;
    case PK_TTL: ok = dur_ok(p->ttl_ms, 1); break;
    case PK_COOLDOWN: ok = dur_ok(p->cooldown_ms, 0); break;
    case PK_SCOPE:
        ok = p->scope == FG_SCOPE_GREY || p->scope == FG_SCOPE_ALL;
        break;
    case PK_MESSAGE:
        if (memchr(p->message, '\0', sizeof(p->message)) == NULL) {
            fg_errf(errbuf, errlen, "message: not NUL-terminated");
            return FG_EINVAL;
        }
        return tmpl_run(p->message, NULL, 0, 0, 0, NULL, NULL, errbuf,
                        errlen);
    case PK_COUNT: break;
    }
    if (!ok) {
        fg_errf(errbuf, errlen, "%s: %s", policy_keys[k].name,
                policy_keys[k].rule);
        return FG_EINVAL;
    }
    return FG_OK;
}

fg_status sc_policy_check(const sc_policy *p, const sc_rails *r, char *errbuf,
                          size_t errlen)
{
    for (int k = 0; k < PK_COUNT; k++) {
        fg_status st = policy_check_key(p, (policy_key)k, errbuf, errlen);
        if (st != FG_OK)
            return st;
    }
    if (p->unlock_at >= p->lock_at) {
        fg_errf(errbuf, errlen, "unlock_at: must be below lock_at (%g)",
                p->lock_at);
        return FG_EINVAL;
    }
    if (p->ttl_ms > r->max_ttl_ms) {
        char a[32], b[32];
        fmt_duration(p->ttl_ms, a, sizeof(a));
        fmt_duration(r->max_ttl_ms, b, sizeof(b));
        fg_errf(errbuf, errlen, "ttl: %s is over max_ttl (%s)", a, b);
        return FG_EINVAL;
    }
    return FG_OK;
}

fg_status sc_policy_set(sc_policy *p, const char *key, const char *value,
                        char *errbuf, size_t errlen)
{
    sc_policy t = *p;
    policy_key k = PK_COUNT;
    bool ok = true;
    fg_status st;

    for (int i = 0; i < PK_COUNT; i++) {
        if (strcmp(key, policy_keys[i].name) == 0)
            k = (policy_key)i;
    }
    switch (k) {
    case PK_MODE: ok = mode_parse(value, &t.mode); break;
    case PK_LOCK_AT: ok = parse_number(value, &t.lock_at); break;
    case PK_UNLOCK_AT: ok = parse_number(value, &t.unlock_at); break;
    case PK_MIN_DEVICES: ok = parse_int(value, &t.min_devices); break;
    case PK_FOR: ok = parse_duration(value, &t.for_ms); break;
    case PK_TTL: ok = parse_duration(value, &t.ttl_ms); break;
    case PK_COOLDOWN: ok = parse_duration(value, &t.cooldown_ms); break;
    case PK_SCOPE:
        if (strcmp(value, "grey") == 0)
            t.scope = FG_SCOPE_GREY;
        else if (strcmp(value, "all") == 0)
            t.scope = FG_SCOPE_ALL;
        else
            ok = false;
        break;
    case PK_MESSAGE: {
        size_t n = strlen(value);
        if (n > SC_TEMPLATE_MAX) {
            fg_errf(errbuf, errlen, "message: too long (%zu bytes, max %d)",
                    n, SC_TEMPLATE_MAX);
            return FG_EINVAL;
        }
        memcpy(t.message, value, n + 1);
        break;
    }
    case PK_COUNT:
        fg_errf(errbuf, errlen,
                "%s: unknown policy key (mode, lock_at, unlock_at, "
                "min_devices, for, ttl, cooldown, scope, message)",
                key);
        return FG_EINVAL;
    }
    if (!ok) {
        fg_errf(errbuf, errlen, "%s: %s", policy_keys[k].name,
                policy_keys[k].rule);
        return FG_EINVAL;
    }
    st = policy_check_key(&t, k, errbuf, errlen);
    if (st != FG_OK)
        return st;
    *p = t;
    return FG_OK;
}

fg_status sc_rails_check(const sc_rails *r, char *errbuf, size_t errlen)
{
    if (r->max_auto_locked_regions < 0) {
        fg_errf(errbuf, errlen,
                "max_auto_locked_regions: must be an integer >= 0");
        return FG_EINVAL;
    }
    if (r->max_auto_locked_devices < 0) {
        fg_errf(errbuf, errlen,
                "max_auto_locked_devices: must be an integer >= 0");
        return FG_EINVAL;
    }
    if (!dur_ok(r->max_ttl_ms, 1)) {
        fg_errf(errbuf, errlen,
                "max_ttl: must be a duration from 1ms to 3650d");
        return FG_EINVAL;
    }
    if (!(r->z > 0.0 && r->z <= 10.0)) {
        fg_errf(errbuf, errlen, "z: must be a number in (0, 10]");
        return FG_EINVAL;
    }
    return FG_OK;
}

fg_status sc_rails_set(sc_rails *r, const char *key, const char *value,
                       char *errbuf, size_t errlen)
{
    sc_rails t = *r, probe;
    bool ok = true;
    fg_status st;

    /* probe: the defaults with only this key changed, so the check reports
     * this key and nothing else. */
    sc_rails_default(&probe);
    if (strcmp(key, "enforce") == 0) {
        if (!parse_bool(value, &t.enforce)) {
            fg_errf(errbuf, errlen,
                    "enforce: must be true/false/yes/no/on/off/1/0");
            return FG_EINVAL;
        }
    } else if (strcmp(key, "max_auto_locked_regions") == 0) {
        ok = parse_int(value, &t.max_auto_locked_regions);
        probe.max_auto_locked_regions = ok ? t.max_auto_locked_regions : -1;
    } else if (strcmp(key, "max_auto_locked_devices") == 0) {
        ok = parse_int(value, &t.max_auto_locked_devices);
        probe.max_auto_locked_devices = ok ? t.max_auto_locked_devices : -1;
    } else if (strcmp(key, "max_ttl") == 0) {
        ok = parse_duration(value, &t.max_ttl_ms);
        probe.max_ttl_ms = ok ? t.max_ttl_ms : -1;
    } else if (strcmp(key, "z") == 0) {
        ok = parse_number(value, &t.z);
        probe.z = ok ? t.z : -1;
    } else {
        fg_errf(errbuf, errlen,
                "%s: unknown rails key (enforce, max_auto_locked_regions, "
                "max_auto_locked_devices, max_ttl, z)",
                key);
        return FG_EINVAL;
    }
    st = sc_rails_check(&probe, errbuf, errlen);
    if (st != FG_OK)
        return st;
    *r = t;
    return FG_OK;
}

/* ---- engine state ------------------------------------------------------ */

/* What the engine knows and remembers about one region. */
typedef struct sc_region {
    char region[FG_REGION_MAX + 1];
    bool has_policy;
    sc_policy policy; /* override, when has_policy */

    bool has_known;
    fg_lock known; /* last record observed on the lock topic */
    bool has_pending;
    fg_lock pending; /* our decision, published but not yet observed */
    bool prev_has_unlock; /* cooldown before pending, for publish_failed */
    int64_t prev_last_unlock;

    bool has_unlock;
    int64_t last_unlock; /* latest unlock (cooldown start) */

    bool lock_on; /* lock condition holding since lock_since */
    int64_t lock_since;
    bool unlock_on; /* unlock condition holding since unlock_since */
    int64_t unlock_since;

    bool has_score; /* latest counts, for the cap's device estimate */
    int64_t n, k;

    uint64_t seen; /* tick number when the region had a score */
    size_t idx;    /* its index in that tick's scores */
    double lo, hi; /* that tick's bounds */
} sc_region;

struct sc_engine {
    sc_policy defaults;
    sc_rails rails;
    sc_region **regions; /* sorted by region code */
    size_t nregions, cap;
    sc_region **cand; /* scratch for lock candidates, cap entries */
    uint64_t tick;
};

sc_engine *sc_engine_new(const sc_policy *defaults, const sc_rails *rails,
                         char *errbuf, size_t errlen)
{
    sc_engine *e = NULL;

    if (sc_rails_check(rails, errbuf, errlen) != FG_OK)
        goto fail;
    if (sc_policy_check(defaults, rails, errbuf, errlen) != FG_OK)
        goto fail;
    e = calloc(1, sizeof(*e));
    if (!e) {
        fg_errf(errbuf, errlen, "out of memory");
        goto fail;
    }
    e->defaults = *defaults;
    e->rails = *rails;
    return e;
fail:
    free(e);
    return NULL;
}

void sc_engine_free(sc_engine *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->nregions; i++)
        free(e->regions[i]);
    free(e->regions);
    free(e->cand);
    free(e);
}

/* Index of region in the sorted array, or where it would be inserted. */
static size_t region_pos(const sc_engine *e, const char *region, bool *found)
{
    size_t lo = 0, hi = e->nregions;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(e->regions[mid]->region, region);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static sc_region *region_find(const sc_engine *e, const char *region)
{
    bool found;
    size_t i = region_pos(e, region, &found);
    return found ? e->regions[i] : NULL;
}

static bool region_ok(const char *region)
{
    return region && fg_region_valid(region, strnlen(region, FG_REGION_MAX + 1));
}

/* The region's state, created when new. *st gets FG_EINVAL, FG_ENOMEM or
 * FG_ETOOBIG when NULL is returned. */
static sc_region *region_get(sc_engine *e, const char *region, fg_status *st)
{
    bool found;
    size_t i;
    sc_region *r;

    if (!region_ok(region)) {
        *st = FG_EINVAL;
        return NULL;
    }
    i = region_pos(e, region, &found);
    if (found)
        return e->regions[i];
    if (e->nregions >= SC_REGIONS_MAX) {
        *st = FG_ETOOBIG;
        return NULL;
    }
    if (e->nregions == e->cap) {
        size_t ncap = e->cap ? e->cap * 2 : 64;
        sc_region **nr, **nc;
        if (ncap > SC_REGIONS_MAX)
            ncap = SC_REGIONS_MAX;
        nr = realloc(e->regions, ncap * sizeof(*nr));
        if (!nr) {
            *st = FG_ENOMEM;
            return NULL;
        }
        e->regions = nr;
        nc = realloc(e->cand, ncap * sizeof(*nc));
        if (!nc) {
            *st = FG_ENOMEM;
            return NULL;
        }
        e->cand = nc;
        e->cap = ncap;
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        *st = FG_ENOMEM;
        return NULL;
    }
    memcpy(r->region, region, strlen(region) + 1);
    memmove(&e->regions[i + 1], &e->regions[i],
            (e->nregions - i) * sizeof(*e->regions));
    e->regions[i] = r;
    e->nregions++;
    return r;
}

static const sc_policy *region_policy(const sc_engine *e, const sc_region *r)
{
    return r && r->has_policy ? &r->policy : &e->defaults;
}

fg_status sc_engine_set_rails(sc_engine *e, const sc_rails *r, char *errbuf,
                              size_t errlen)
{
    fg_status st = sc_rails_check(r, errbuf, errlen);
    if (st == FG_OK)
        e->rails = *r;
    return st;
}

fg_status sc_engine_set_policy(sc_engine *e, const char *region,
                               const sc_policy *p, char *errbuf,
                               size_t errlen)
{
    fg_status st = FG_OK;
    sc_region *r;

    if (!region_ok(region)) {
        fg_errf(errbuf, errlen, "region: invalid code");
        return FG_EINVAL;
    }
    if (p) {
        st = sc_policy_check(p, &e->rails, errbuf, errlen);
        if (st != FG_OK)
            return st;
    }
    r = region_get(e, region, &st);
    if (!r) {
        fg_errf(errbuf, errlen, "region: %s", fg_status_str(st));
        return st;
    }
    r->has_policy = p != NULL;
    if (p)
        r->policy = *p;
    return FG_OK;
}

const sc_policy *sc_engine_policy(const sc_engine *e, const char *region)
{
    return region_policy(e, region_ok(region) ? region_find(e, region) : NULL);
}

fg_status sc_engine_observe_lock(sc_engine *e, const fg_lock *lk)
{
    fg_status st = FG_OK;
    sc_region *r = region_get(e, lk->region, &st);

    if (!r)
        return st;
    r->known = *lk;
    r->has_known = true;
    if (r->has_pending && (strcmp(r->pending.id, lk->id) == 0 ||
                           lk->source == FG_SOURCE_OPS))
        r->has_pending = false;
    if (lk->state == FG_LOCK_UNLOCKED &&
        (!r->has_unlock || lk->since > r->last_unlock)) {
        r->has_unlock = true;
        r->last_unlock = lk->since;
    }
    return FG_OK;
}

fg_status sc_engine_observe_tombstone(sc_engine *e, const char *region)
{
    fg_status st = FG_OK;
    sc_region *r = region_get(e, region, &st);

    if (!r)
        return st;
    r->has_known = false;
    r->has_pending = false;
    return FG_OK;
}

fg_status sc_engine_publish_failed(sc_engine *e, const char *region,
                                   const char *id)
{
    sc_region *r = region_ok(region) ? region_find(e, region) : NULL;

    if (!r || !r->has_pending || strcmp(r->pending.id, id) != 0)
        return FG_ENOTFOUND;
    r->has_pending = false;
    r->has_unlock = r->prev_has_unlock;
    r->last_unlock = r->prev_last_unlock;
    return FG_OK;
}

static const fg_lock *region_record(const sc_region *r)
{
    if (r->has_pending)
        return &r->pending;
    return r->has_known ? &r->known : NULL;
}

const fg_lock *sc_engine_record(const sc_engine *e, const char *region)
{
    const sc_region *r = region_ok(region) ? region_find(e, region) : NULL;
    return r ? region_record(r) : NULL;
}

/* ---- the tick ---------------------------------------------------------- */

/* The automatic state of a region: what its record in force means to the
 * engine. */
typedef enum auto_state {
    AS_NONE,       /* no automatic record in force */
    AS_LOCKED,     /* auto, locked, not expired */
    AS_SHADOW,     /* auto, shadow, not expired */
    AS_SUPPRESSED, /* auto, suppressed, not expired */
    AS_EXPIRED     /* auto locked/shadow/suppressed whose until has come */
} auto_state;

static auto_state region_auto_state(const sc_region *r, int64_t now)
{
    const fg_lock *lk = region_record(r);

    if (!lk || lk->source != FG_SOURCE_AUTO || lk->state == FG_LOCK_UNLOCKED)
        return AS_NONE;
    if (now >= lk->until)
        return AS_EXPIRED;
    switch (lk->state) {
    case FG_LOCK_LOCKED: return AS_LOCKED;
    case FG_LOCK_SHADOW: return AS_SHADOW;
    case FG_LOCK_SUPPRESSED: return AS_SUPPRESSED;
    case FG_LOCK_UNLOCKED: break;
    }
    return AS_NONE;
}

static fg_lock_state auto_state_lock(auto_state a)
{
    switch (a) {
    case AS_LOCKED: return FG_LOCK_LOCKED;
    case AS_SHADOW: return FG_LOCK_SHADOW;
    case AS_SUPPRESSED: return FG_LOCK_SUPPRESSED;
    case AS_NONE:
    case AS_EXPIRED: break;
    }
    return FG_LOCK_UNLOCKED;
}

/* True when automation must leave the region alone this tick: mode never,
 * an operator's pin, or an operator's lock in force. */
static bool region_hands_off(const sc_region *r, const sc_policy *pol,
                             int64_t now)
{
    const fg_lock *lk = region_record(r);

    if (pol->mode == SC_MODE_NEVER)
        return true;
    if (!lk)
        return false;
    if ((lk->has & FG_LOCK_HAS_PIN) && now < lk->pin_until)
        return true;
    return lk->source == FG_SOURCE_OPS && lk->state == FG_LOCK_LOCKED &&
           now < lk->until;
}

static void timer_update(bool *on, int64_t *since, bool holds, int64_t now)
{
    if (!holds) {
        *on = false;
        return;
    }
    if (!*on || now < *since) {
        *on = true;
        *since = now;
    }
}

static bool timer_sustained(bool on, int64_t since, int64_t for_ms,
                            int64_t now)
{
    return on && now - since >= for_ms;
}

/* Everything a decision needs besides the state. */
typedef struct decision_in {
    int64_t now;
    const sc_region_score *sc; /* NULL for expiry */
    double bound;              /* lo for locks, hi for unlocks */
} decision_in;

/* Fills a record and makes it the region's pending decision. Returns false
 * (nothing changed) when out is full. */
static bool emit(sc_engine *e, sc_region *r, const sc_policy *pol,
                 fg_lock_state state, int64_t since, const char *reason,
                 const decision_in *in, sc_decision *out, size_t cap,
                 size_t *nd)
{
    fg_lock *lk;

    if (*nd >= cap)
        return false;
    lk = &out[*nd].lk;
    memset(lk, 0, sizeof(*lk));
    memcpy(lk->region, r->region, sizeof(lk->region));
    lk->state = state;
    lk->scope = pol->scope;
    lk->source = FG_SOURCE_AUTO;
    snprintf(lk->reason, sizeof(lk->reason), "%s", reason);
    snprintf(lk->actor, sizeof(lk->actor), "%s", SC_ACTOR);
    lk->since = since;
    snprintf(lk->id, sizeof(lk->id), "%s:%s:%lld", r->region,
             fg_lock_state_str(state), (long long)since);
    if (in->sc) {
        lk->score = in->bound;
        lk->devices = in->sc->devices;
        lk->has |= FG_LOCK_HAS_SCORE | FG_LOCK_HAS_DEVICES;
    }
    if (state != FG_LOCK_UNLOCKED) {
        int64_t ttl = pol->ttl_ms < e->rails.max_ttl_ms ? pol->ttl_ms
                                                        : e->rails.max_ttl_ms;
        double share = in->sc->devices > 0 ? (double)in->sc->grey /
                                                 (double)in->sc->devices
                                           : 0.0;
        lk->until = add_sat(since, ttl);
        /* The template was validated when the policy was accepted. */
        (void)sc_message_format(pol->message, r->region, lk->until, share,
                                in->sc->devices, lk->message,
                                sizeof(lk->message), NULL, 0);
    }
    r->prev_has_unlock = r->has_unlock;
    r->prev_last_unlock = r->last_unlock;
    if (state == FG_LOCK_UNLOCKED &&
        (!r->has_unlock || since > r->last_unlock)) {
        r->has_unlock = true;
        r->last_unlock = since;
    }
    r->pending = *lk;
    r->has_pending = true;
    (*nd)++;
    return true;
}

/* Devices a lock affects: all of them, or the grey ones for scope grey. */
static int64_t scope_devices(fg_lock_scope scope, int64_t n, int64_t k)
{
    return scope == FG_SCOPE_ALL ? n : k;
}

/* Sort: highest lower bound first, then region code. */
static int cand_cmp(const void *a, const void *b)
{
    const sc_region *ra = *(const sc_region *const *)a;
    const sc_region *rb = *(const sc_region *const *)b;
    if (ra->lo > rb->lo)
        return -1;
    if (ra->lo < rb->lo)
        return 1;
    return strcmp(ra->region, rb->region);
}

static fg_status tick_validate(const sc_region_score *scores, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const sc_region_score *s = &scores[i];
        if (!region_ok(s->region) || s->devices < 0 || s->grey < 0 ||
            s->grey > s->devices)
            return FG_EINVAL;
    }
    return FG_OK;
}

/* Releases: expiry, and unlocks of automatic records. Fills the lock
 * candidates. Returns false when out is full. */
static bool tick_release(sc_engine *e, int64_t now,
                         const sc_region_score *scores, sc_decision *out,
                         size_t cap, size_t *nd, size_t *ncand)
{
    for (size_t i = 0; i < e->nregions; i++) {
        sc_region *r = e->regions[i];
        const sc_policy *pol = region_policy(e, r);
        const sc_region_score *sc =
            r->seen == e->tick ? &scores[r->idx] : NULL;
        auto_state as;
        char reason[FG_LOCK_REASON_MAX + 1], dur[32];
        decision_in in = {now, sc, 0.0};

        if (region_hands_off(r, pol, now))
            continue;
        as = region_auto_state(r, now);
        if (as == AS_EXPIRED) {
            in.sc = NULL;
            if (!emit(e, r, pol, FG_LOCK_UNLOCKED, region_record(r)->until,
                      "expired", &in, out, cap, nd))
                return false;
            continue;
        }
        /* Conditions only hold with data this tick (sc); the check keeps
         * that visible here. */
        if (!sc)
            continue;
        if (as != AS_NONE &&
            timer_sustained(r->unlock_on, r->unlock_since, pol->for_ms, now)) {
            fmt_duration(pol->for_ms, dur, sizeof(dur));
            snprintf(reason, sizeof(reason),
                     "grey share upper bound %.2f <= %.2f over %s with %lld "
                     "devices",
                     r->hi, pol->unlock_at, dur, (long long)sc->devices);
            in.bound = r->hi;
            if (!emit(e, r, pol, FG_LOCK_UNLOCKED, now, reason, &in, out, cap,
                      nd))
                return false;
            continue;
        }
        if (as != AS_LOCKED &&
            timer_sustained(r->lock_on, r->lock_since, pol->for_ms, now))
            e->cand[(*ncand)++] = r;
    }
    return true;
}

/* Auto locks in force and the devices under them. */
static void tick_count_locks(const sc_engine *e, int64_t now, int64_t *nlocked,
                             int64_t *ndevices)
{
    *nlocked = 0;
    *ndevices = 0;
    for (size_t i = 0; i < e->nregions; i++) {
        const sc_region *r = e->regions[i];
        const fg_lock *lk;
        int64_t est;
        if (region_auto_state(r, now) != AS_LOCKED)
            continue;
        lk = region_record(r);
        if (r->has_score)
            est = scope_devices(lk->scope, r->n, r->k);
        else
            est = (lk->has & FG_LOCK_HAS_DEVICES) ? lk->devices : 0;
        (*nlocked)++;
        *ndevices = add_sat(*ndevices, est);
    }
}

/* Locks, shadows and suppressions for the candidates. Returns false when
 * out is full. */
static bool tick_lock(sc_engine *e, int64_t now, const sc_region_score *scores,
                      size_t ncand, sc_decision *out, size_t cap, size_t *nd)
{
    int64_t nlocked, ndevices;

    tick_count_locks(e, now, &nlocked, &ndevices);
    if (ncand > 1) /* e->cand is NULL before the first region: no qsort */
        qsort(e->cand, ncand, sizeof(*e->cand), cand_cmp);
    for (size_t c = 0; c < ncand; c++) {
        sc_region *r = e->cand[c];
        const sc_policy *pol = region_policy(e, r);
        const sc_region_score *sc = &scores[r->idx];
        auto_state as = region_auto_state(r, now);
        int64_t est = scope_devices(pol->scope, sc->devices, sc->grey);
        fg_lock_state want;
        char reason[FG_LOCK_REASON_MAX + 1], dur[32], why[160] = "";
        size_t len;
        decision_in in = {now, sc, r->lo};

        if (as == AS_NONE && r->has_unlock &&
            now < add_sat(r->last_unlock, pol->cooldown_ms))
            continue;
        if (pol->mode == SC_MODE_MONITOR) {
            want = FG_LOCK_SHADOW;
            snprintf(why, sizeof(why), "; shadow: monitor mode");
        } else if (!e->rails.enforce) {
            want = FG_LOCK_SHADOW;
            snprintf(why, sizeof(why), "; shadow: enforce off");
        } else if (nlocked >= e->rails.max_auto_locked_regions) {
            want = FG_LOCK_SUPPRESSED;
            snprintf(why, sizeof(why),
                     "; suppressed: %lld of max %lld auto-locked regions",
                     (long long)nlocked,
                     (long long)e->rails.max_auto_locked_regions);
        } else if (ndevices > e->rails.max_auto_locked_devices ||
                   est > e->rails.max_auto_locked_devices - ndevices) {
            want = FG_LOCK_SUPPRESSED;
            snprintf(why, sizeof(why),
                     "; suppressed: %lld + %lld devices over max %lld under "
                     "auto-locks",
                     (long long)ndevices, (long long)est,
                     (long long)e->rails.max_auto_locked_devices);
        } else {
            want = FG_LOCK_LOCKED;
        }
        if (want == auto_state_lock(as))
            continue;
        fmt_duration(pol->for_ms, dur, sizeof(dur));
        snprintf(reason, sizeof(reason),
                 "grey share lower bound %.2f >= %.2f over %s with %lld "
                 "devices",
                 r->lo, pol->lock_at, dur, (long long)sc->devices);
        len = strlen(reason);
        snprintf(reason + len, sizeof(reason) - len, "%s", why);
        if (!emit(e, r, pol, want, now, reason, &in, out, cap, nd))
            return false;
        if (want == FG_LOCK_LOCKED) {
            nlocked++;
            ndevices = add_sat(ndevices, est);
        }
    }
    return true;
}

static void tick_rows(const sc_engine *e, int64_t now,
                      const sc_region_score *scores, size_t n,
                      sc_score_row *rows)
{
    for (size_t i = 0; i < n; i++) {
        const sc_region *r = region_find(e, scores[i].region);
        const fg_lock *lk = region_record(r);
        sc_score_row *row = &rows[i];

        memset(row, 0, sizeof(*row));
        memcpy(row->region, r->region, sizeof(row->region));
        row->ts = now;
        row->devices = scores[i].devices;
        row->grey = scores[i].grey;
        row->share = row->devices > 0
                         ? (double)row->grey / (double)row->devices
                         : 0.0;
        row->lo = r->lo;
        row->hi = r->hi;
        row->mode = region_policy(e, r)->mode;
        row->state = FG_LOCK_UNLOCKED;
        row->source = lk ? lk->source : FG_SOURCE_AUTO;
        if (lk && lk->state != FG_LOCK_UNLOCKED && now < lk->until)
            row->state = lk->state;
    }
}

fg_status sc_engine_tick(sc_engine *e, int64_t now_ms,
                         const sc_region_score *scores, size_t n,
                         sc_score_row *rows, sc_decision *out, size_t cap,
                         size_t *nout)
{
    fg_status st = FG_OK;
    size_t nd = 0, ncand = 0;

    if (now_ms < 0 || (n > 0 && !scores)) {
        st = FG_EINVAL;
        goto done;
    }
    st = tick_validate(scores, n);
    if (st != FG_OK)
        goto done;
    e->tick++;
    for (size_t i = 0; i < n; i++) {
        sc_region *r = region_get(e, scores[i].region, &st);
        if (!r)
            goto done;
        if (r->seen == e->tick) {
            st = FG_EINVAL; /* the same region twice */
            goto done;
        }
        r->seen = e->tick;
        r->idx = i;
    }

    /* Conditions and their timers, for every region (no data: not held). */
    for (size_t i = 0; i < e->nregions; i++) {
        sc_region *r = e->regions[i];
        const sc_policy *pol = region_policy(e, r);
        bool lock_holds = false, unlock_holds = false;
        if (r->seen == e->tick) {
            const sc_region_score *sc = &scores[r->idx];
            sc_wilson(sc->grey, sc->devices, e->rails.z, &r->lo, &r->hi);
            r->has_score = true;
            r->n = sc->devices;
            r->k = sc->grey;
            lock_holds = sc->devices >= pol->min_devices &&
                         r->lo >= pol->lock_at;
            unlock_holds = sc->devices >= pol->min_devices &&
                           r->hi <= pol->unlock_at;
        }
        timer_update(&r->lock_on, &r->lock_since, lock_holds, now_ms);
        timer_update(&r->unlock_on, &r->unlock_since, unlock_holds, now_ms);
    }

    if (!tick_release(e, now_ms, scores, out, cap, &nd, &ncand) ||
        !tick_lock(e, now_ms, scores, ncand, out, cap, &nd))
        st = FG_AGAIN;
    if (rows)
        tick_rows(e, now_ms, scores, n, rows);
done:
    if (nout)
        *nout = nd;
    return st;
}
