/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of common/fg_lock.c: the lock record codec (round trips, every
 * validation failure naming its field, hostile msgpack) and the lock table
 * (put/replace/remove, growth, clones) with the directive match rules. */
#include <math.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fg_lock.h"
#include "fg_test.h"

/* ---- building msgpack records ----------------------------------------- */

typedef enum vtype { V_STR, V_INT, V_DBL, V_BIN, V_NIL, V_SKIP } vtype;

typedef struct field {
    const char *key;
    vtype t;
    const char *s; /* V_STR / V_BIN bytes */
    size_t slen;   /* 0: strlen(s) */
    int64_t i;
    double d;
} field;

enum { BASE_N = 9 };

/* A valid locked record; tests copy it and edit entries. */
static void base_fields(field f[BASE_N])
{
    const field base[BASE_N] = {
        {"region", V_STR, "UA-43", 0, 0, 0},
        {"state", V_STR, "locked", 0, 0, 0},
        {"scope", V_STR, "all", 0, 0, 0},
        {"source", V_STR, "auto", 0, 0, 0},
        {"reason", V_STR, "grey_share", 0, 0, 0},
        {"message", V_STR, "Service paused in your region", 0, 0, 0},
        {"id", V_STR, "lk-0001", 0, 0, 0},
        {"since", V_INT, NULL, 0, 1000, 0},
        {"until", V_INT, NULL, 0, 5000, 0},
    };
    memcpy(f, base, sizeof(base));
}

static field *find_field(field *f, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(f[i].key, key) == 0)
            return &f[i];
    }
    return NULL;
}

/* Packs the non-skipped fields as one map into out; returns the length. */
static size_t pack_fields(const field *f, size_t n, char *out, size_t cap)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t live = 0, len;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (size_t i = 0; i < n; i++)
        live += f[i].t != V_SKIP;
    msgpack_pack_map(&pk, live);
    for (size_t i = 0; i < n; i++) {
        size_t sl = f[i].s ? (f[i].slen ? f[i].slen : strlen(f[i].s)) : 0;
        if (f[i].t == V_SKIP)
            continue;
        msgpack_pack_str_with_body(&pk, f[i].key, strlen(f[i].key));
        switch (f[i].t) {
        case V_STR: msgpack_pack_str_with_body(&pk, f[i].s, sl); break;
        case V_BIN: msgpack_pack_bin_with_body(&pk, f[i].s, sl); break;
        case V_INT: msgpack_pack_int64(&pk, f[i].i); break;
        case V_DBL: msgpack_pack_double(&pk, f[i].d); break;
        case V_NIL: msgpack_pack_nil(&pk); break;
        case V_SKIP: break;
        }
    }
    len = sb.size <= cap ? sb.size : 0;
    if (len)
        memcpy(out, sb.data, len);
    msgpack_sbuffer_destroy(&sb);
    return len;
}

static char buf[1 << 17];
static char errbuf[256];

static fg_status decode_fields(const field *f, size_t n, fg_lock *lk)
{
    size_t len = pack_fields(f, n, buf, sizeof(buf));
    errbuf[0] = '\0';
    return fg_lock_decode(buf, len, lk, errbuf, sizeof(errbuf));
}

/* Expects the record with f[key] replaced to be refused, naming key. */
static void expect_refused(const char *key, vtype t, const char *s,
                           size_t slen, int64_t i, int line)
{
    field f[BASE_N];
    fg_lock lk;
    fg_status st;
    base_fields(f);
    field *e = find_field(f, BASE_N, key);
    e->t = t;
    e->s = s;
    e->slen = slen;
    e->i = i;
    e->d = 0.5;
    st = decode_fields(f, BASE_N, &lk);
    if (st != FG_EINVAL || strncmp(errbuf, key, strlen(key)) != 0 ||
        errbuf[strlen(key)] != ':') {
        fg_test_failed++;
        fprintf(stderr, "test_lock.c:%d: %s: want EINVAL naming it, got %s "
                "\"%s\"\n", line, key, fg_status_str(st), errbuf);
    } else {
        fg_test_passed++;
    }
}

#define REFUSED(key, t, s, slen, i) expect_refused(key, t, s, slen, i, __LINE__)

static void fill_full(fg_lock *lk)
{
    memset(lk, 0, sizeof(*lk));
    strcpy(lk->region, "CU");
    lk->state = FG_LOCK_LOCKED;
    lk->scope = FG_SCOPE_GREY;
    lk->source = FG_SOURCE_OPS;
    strcpy(lk->reason, "grey_share_high");
    strcpy(lk->message, "Servicio suspendido \xe2\x80\x94 \xc2\xabpa\xc3\xads\xc2\xbb");
    strcpy(lk->actor, "ops@example.org");
    strcpy(lk->id, "01HZX3-lock");
    lk->since = 1764270901037;
    lk->until = 1764357301037;
    lk->pin_until = 1764280000000;
    lk->score = 0.4375;
    lk->devices = 123456;
    lk->token = UINT64_MAX - 7;
    lk->has = FG_LOCK_HAS_PIN | FG_LOCK_HAS_SCORE | FG_LOCK_HAS_DEVICES |
              FG_LOCK_HAS_TOKEN;
}

static void check_same(const fg_lock *a, const fg_lock *b)
{
    FG_CHECK_STR(a->region, b->region);
    FG_CHECK_INT(a->state, b->state);
    FG_CHECK_INT(a->scope, b->scope);
    FG_CHECK_INT(a->source, b->source);
    FG_CHECK_STR(a->reason, b->reason);
    FG_CHECK_STR(a->message, b->message);
    FG_CHECK_STR(a->actor, b->actor);
    FG_CHECK_STR(a->id, b->id);
    FG_CHECK_INT(a->since, b->since);
    FG_CHECK_INT(a->until, b->until);
    FG_CHECK_INT(a->pin_until, b->pin_until);
    FG_CHECK(a->score == b->score);
    FG_CHECK_INT(a->devices, b->devices);
    FG_CHECK(a->token == b->token);
    FG_CHECK_INT(a->has, b->has);
}

/* ---- codec tests ------------------------------------------------------ */

static void test_names(void)
{
    FG_CHECK_STR(fg_lock_state_str(FG_LOCK_LOCKED), "locked");
    FG_CHECK_STR(fg_lock_state_str(FG_LOCK_UNLOCKED), "unlocked");
    FG_CHECK_STR(fg_lock_state_str(FG_LOCK_SHADOW), "shadow");
    FG_CHECK_STR(fg_lock_state_str(FG_LOCK_SUPPRESSED), "suppressed");
    FG_CHECK_STR(fg_lock_scope_str(FG_SCOPE_ALL), "all");
    FG_CHECK_STR(fg_lock_scope_str(FG_SCOPE_GREY), "grey");
    FG_CHECK_STR(fg_lock_source_str(FG_SOURCE_AUTO), "auto");
    FG_CHECK_STR(fg_lock_source_str(FG_SOURCE_OPS), "ops");
}

static void test_roundtrip_full(void)
{
    fg_lock in, out;
    char enc[FG_LOCK_RECORD_MAX];
    size_t len;

    fill_full(&in);
    len = fg_lock_encode(&in, enc, sizeof(enc));
    FG_CHECK(len > 0);
    FG_CHECK_INT(fg_lock_decode(enc, len, &out, errbuf, sizeof(errbuf)),
                 FG_OK);
    check_same(&in, &out);

    /* Exactly len bytes suffice; one fewer is refused without overflow. */
    char tight[FG_LOCK_RECORD_MAX + 8];
    memset(tight, 0x5a, sizeof(tight));
    FG_CHECK_INT(fg_lock_encode(&in, tight, len), len);
    FG_CHECK(memcmp(tight, enc, len) == 0);
    FG_CHECK((unsigned char)tight[len] == 0x5a);
    memset(tight, 0x5a, sizeof(tight));
    FG_CHECK_INT(fg_lock_encode(&in, tight, len - 1), 0);
    FG_CHECK((unsigned char)tight[len - 1] == 0x5a);
    FG_CHECK_INT(fg_lock_encode(&in, tight, 0), 0);

    /* The largest possible record fits FG_LOCK_RECORD_MAX. */
    strcpy(in.region, "UA-43A");
    in.state = FG_LOCK_SUPPRESSED;
    memset(in.reason, 'r', FG_LOCK_REASON_MAX);
    in.reason[FG_LOCK_REASON_MAX] = '\0';
    memset(in.message, 'm', FG_LOCK_MESSAGE_MAX);
    in.message[FG_LOCK_MESSAGE_MAX] = '\0';
    memset(in.actor, 'a', FG_LOCK_ACTOR_MAX);
    in.actor[FG_LOCK_ACTOR_MAX] = '\0';
    memset(in.id, 'i', FG_LOCK_ID_MAX);
    in.id[FG_LOCK_ID_MAX] = '\0';
    in.since = in.until = in.pin_until = in.devices = INT64_MAX;
    in.score = -1e300;
    len = fg_lock_encode(&in, enc, sizeof(enc));
    FG_CHECK(len > 0 && len <= FG_LOCK_RECORD_MAX);
    FG_CHECK_INT(fg_lock_decode(enc, len, &out, errbuf, sizeof(errbuf)),
                 FG_OK);
    check_same(&in, &out);
}

static void test_roundtrip_required(void)
{
    field f[BASE_N];
    fg_lock lk, again;
    char enc[FG_LOCK_RECORD_MAX];
    size_t len;

    base_fields(f);
    FG_CHECK_INT(decode_fields(f, BASE_N, &lk), FG_OK);
    FG_CHECK_STR(lk.region, "UA-43");
    FG_CHECK_INT(lk.state, FG_LOCK_LOCKED);
    FG_CHECK_INT(lk.scope, FG_SCOPE_ALL);
    FG_CHECK_INT(lk.source, FG_SOURCE_AUTO);
    FG_CHECK_STR(lk.reason, "grey_share");
    FG_CHECK_STR(lk.message, "Service paused in your region");
    FG_CHECK_STR(lk.actor, "");
    FG_CHECK_STR(lk.id, "lk-0001");
    FG_CHECK_INT(lk.since, 1000);
    FG_CHECK_INT(lk.until, 5000);
    FG_CHECK_INT(lk.has, 0);
    FG_CHECK_INT(lk.pin_until, 0);
    FG_CHECK_INT(lk.devices, 0);

    len = fg_lock_encode(&lk, enc, sizeof(enc));
    FG_CHECK(len > 0);
    /* Absent optional fields stay absent on the wire. */
    FG_CHECK(memmem(enc, len, "pin_until", 9) == NULL);
    FG_CHECK(memmem(enc, len, "score", 5) == NULL);
    FG_CHECK(memmem(enc, len, "devices", 7) == NULL);
    FG_CHECK(memmem(enc, len, "token", 5) == NULL);
    FG_CHECK_INT(fg_lock_decode(enc, len, &again, errbuf, sizeof(errbuf)),
                 FG_OK);
    check_same(&lk, &again);

    /* An unlocked record needs no until, and does not grow one. */
    find_field(f, BASE_N, "state")->s = "unlocked";
    find_field(f, BASE_N, "until")->t = V_SKIP;
    FG_CHECK_INT(decode_fields(f, BASE_N, &lk), FG_OK);
    FG_CHECK_INT(lk.state, FG_LOCK_UNLOCKED);
    FG_CHECK_INT(lk.until, 0);
    len = fg_lock_encode(&lk, enc, sizeof(enc));
    FG_CHECK(memmem(enc, len, "until", 5) == NULL);
    FG_CHECK_INT(fg_lock_decode(enc, len, &again, errbuf, sizeof(errbuf)),
                 FG_OK);
    check_same(&lk, &again);

    /* Optional fields decode, an int score included; unknown keys are
     * ignored whatever their type. */
    field g[BASE_N + 7];
    base_fields(g);
    g[BASE_N + 0] = (field){"actor", V_STR, "alice", 0, 0, 0};
    g[BASE_N + 1] = (field){"pin_until", V_INT, NULL, 0, 7000, 0};
    g[BASE_N + 2] = (field){"score", V_INT, NULL, 0, 1, 0};
    g[BASE_N + 3] = (field){"devices", V_INT, NULL, 0, 42, 0};
    g[BASE_N + 4] = (field){"token", V_INT, NULL, 0, 9, 0};
    g[BASE_N + 5] = (field){"future_field", V_NIL, NULL, 0, 0, 0};
    g[BASE_N + 6] = (field){"Region", V_BIN, "xx", 0, 0, 0};
    FG_CHECK_INT(decode_fields(g, BASE_N + 7, &lk), FG_OK);
    FG_CHECK_STR(lk.actor, "alice");
    FG_CHECK_INT(lk.pin_until, 7000);
    FG_CHECK(lk.score == 1.0);
    FG_CHECK_INT(lk.devices, 42);
    FG_CHECK(lk.token == 9);
    FG_CHECK_INT(lk.has, FG_LOCK_HAS_PIN | FG_LOCK_HAS_SCORE |
                             FG_LOCK_HAS_DEVICES | FG_LOCK_HAS_TOKEN);
}

static void test_missing_fields(void)
{
    static const char *const required[] = {"region", "state", "scope",
                                           "source", "reason", "message",
                                           "id", "since", "until"};
    for (size_t r = 0; r < sizeof(required) / sizeof(required[0]); r++)
        REFUSED(required[r], V_SKIP, NULL, 0, 0);

    /* Without until, only a locked record is refused. */
    static const char *const states[] = {"unlocked", "shadow", "suppressed"};
    for (size_t s = 0; s < 3; s++) {
        field f[BASE_N];
        fg_lock lk;
        base_fields(f);
        find_field(f, BASE_N, "state")->s = states[s];
        find_field(f, BASE_N, "until")->t = V_SKIP;
        FG_CHECK_INT(decode_fields(f, BASE_N, &lk), FG_OK);
        FG_CHECK_INT(lk.state, (int)s == 0 ? FG_LOCK_UNLOCKED
                               : (int)s == 1 ? FG_LOCK_SHADOW
                                             : FG_LOCK_SUPPRESSED);
    }
}

static void test_wrong_types(void)
{
    REFUSED("region", V_BIN, "UA", 0, 0);
    REFUSED("region", V_INT, NULL, 0, 7);
    REFUSED("state", V_INT, NULL, 0, 1);
    REFUSED("state", V_STR, "Locked", 0, 0);
    REFUSED("state", V_STR, "", 0, 0);
    REFUSED("scope", V_STR, "some", 0, 0);
    REFUSED("scope", V_NIL, NULL, 0, 0);
    REFUSED("source", V_STR, "robot", 0, 0);
    REFUSED("reason", V_BIN, "why", 0, 0);
    REFUSED("message", V_INT, NULL, 0, 3);
    REFUSED("id", V_NIL, NULL, 0, 0);
    REFUSED("since", V_STR, "1000", 0, 0);
    REFUSED("since", V_DBL, NULL, 0, 0);
    REFUSED("since", V_INT, NULL, 0, -1);
    REFUSED("until", V_NIL, NULL, 0, 0);
    REFUSED("until", V_INT, NULL, 0, INT64_MIN);

    field f[BASE_N + 1];
    fg_lock lk;
    static const struct {
        field extra;
    } bad[] = {
        {{"score", V_STR, "0.5", 0, 0, 0}},
        {{"devices", V_DBL, NULL, 0, 0, 1.5}},
        {{"devices", V_INT, NULL, 0, -5, 0}},
        {{"token", V_INT, NULL, 0, -1, 0}},
        {{"pin_until", V_STR, "soon", 0, 0, 0}},
        {{"actor", V_INT, NULL, 0, 1, 0}},
        {{"score", V_DBL, NULL, 0, 0, INFINITY}},
        {{"score", V_DBL, NULL, 0, 0, NAN}},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        base_fields(f);
        f[BASE_N] = bad[i].extra;
        FG_CHECK_INT(decode_fields(f, BASE_N + 1, &lk), FG_EINVAL);
        FG_CHECK(strncmp(errbuf, bad[i].extra.key,
                         strlen(bad[i].extra.key)) == 0);
    }

    /* A known key twice is ambiguous and refused. */
    base_fields(f);
    f[BASE_N] = (field){"state", V_STR, "unlocked", 0, 0, 0};
    FG_CHECK_INT(decode_fields(f, BASE_N + 1, &lk), FG_EINVAL);
    FG_CHECK(strstr(errbuf, "state") != NULL);
}

static void test_caps(void)
{
    static char big[1024];
    field f[BASE_N + 1];
    fg_lock lk;
    memset(big, 'x', sizeof(big) - 1);

    static const struct {
        const char *key;
        size_t cap;
    } caps[] = {{"reason", FG_LOCK_REASON_MAX},
                {"message", FG_LOCK_MESSAGE_MAX},
                {"actor", FG_LOCK_ACTOR_MAX},
                {"id", FG_LOCK_ID_MAX}};
    for (size_t c = 0; c < 4; c++) {
        base_fields(f);
        f[BASE_N] = (field){"actor", V_STR, "a", 0, 0, 0};
        field *e = find_field(f, BASE_N + 1, caps[c].key);
        e->t = V_STR;
        e->s = big;
        e->slen = caps[c].cap;
        FG_CHECK_INT(decode_fields(f, BASE_N + 1, &lk), FG_OK);
        e->slen = caps[c].cap + 1;
        FG_CHECK_INT(decode_fields(f, BASE_N + 1, &lk), FG_EINVAL);
        FG_CHECK(strncmp(errbuf, caps[c].key, strlen(caps[c].key)) == 0);
        FG_CHECK(strstr(errbuf, "too long") != NULL);
    }
    /* Exact sizes: reason of 256 bytes survives whole. */
    base_fields(f);
    find_field(f, BASE_N, "reason")->s = big;
    find_field(f, BASE_N, "reason")->slen = 256;
    FG_CHECK_INT(decode_fields(f, BASE_N, &lk), FG_OK);
    FG_CHECK_INT(strlen(lk.reason), 256);
    find_field(f, BASE_N, "reason")->slen = 257;
    FG_CHECK_INT(decode_fields(f, BASE_N, &lk), FG_EINVAL);
    FG_CHECK(strstr(errbuf, "reason") == errbuf);

    REFUSED("region", V_STR, "UA-4300", 0, 0);
    REFUSED("region", V_STR, "ua", 0, 0);
    REFUSED("region", V_STR, "U", 0, 0);
    REFUSED("region", V_STR, "UA-", 0, 0);
    REFUSED("region", V_STR, "", 0, 0);
}

static void test_utf8(void)
{
    field f[BASE_N];
    fg_lock lk;
    /* 2-, 3- and 4-byte characters, and the largest code point. */
    static const char good[] = "Ky\xd1\x97v \xe2\x80\x94 \xf0\x9f\x94\x92 "
                               "\xf4\x8f\xbf\xbf \xed\x9f\xbf \xee\x80\x80";
    base_fields(f);
    find_field(f, BASE_N, "message")->s = good;
    FG_CHECK_INT(decode_fields(f, BASE_N, &lk), FG_OK);
    FG_CHECK_STR(lk.message, good);

    static const char *const bad[] = {
        "\xc0\xaf",         /* overlong '/' */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\xaf",     /* overlong 3-byte */
        "\xf0\x80\x80\xaf", /* overlong 4-byte */
        "\xed\xa0\x80",     /* surrogate U+D800 */
        "\xed\xbf\xbf",     /* surrogate U+DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80", /* lead past U+10FFFF */
        "\xff",             /* never valid */
        "ok\x80",           /* stray continuation */
        "\xe2\x82",         /* truncated */
        "\xe2\x28\xa1",     /* bad continuation */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        REFUSED("message", V_STR, bad[i], 0, 0);
        REFUSED("reason", V_STR, bad[i], 0, 0);
    }
    /* An embedded NUL would cut the C string short: refused too. */
    REFUSED("id", V_STR, "ab\0cd", 5, 0);
}

static void test_malformed(void)
{
    fg_lock lk;
    field f[BASE_N];
    size_t len;

    /* Not a map. */
    static const char arr[] = "\x92\x01\x02";
    FG_CHECK_INT(fg_lock_decode(arr, 3, &lk, errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK_INT(fg_lock_decode("", 0, &lk, errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK_INT(fg_lock_decode("\xc1", 1, &lk, NULL, 0), FG_EINVAL);

    /* Declared counts far beyond the input: refused before msgpack-c can
     * allocate for them. */
    static const char huge_arr[] = "\xdd\xff\xff\xff\xff";
    static const char huge_map[] = "\xdf\xff\xff\xff\xff";
    static const char huge_str[] = "\xdb\xff\xff\xff\xff";
    static const char huge_inner[] = "\x81\xa1k\xdd\x7f\xff\xff\xff";
    FG_CHECK_INT(fg_lock_decode(huge_arr, 5, &lk, errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK_INT(fg_lock_decode(huge_map, 5, &lk, errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK_INT(fg_lock_decode(huge_str, 5, &lk, errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK_INT(fg_lock_decode(huge_inner, 8, &lk, errbuf, sizeof(errbuf)),
                 FG_EINVAL);

    /* Truncations and a trailing byte of a valid record. */
    base_fields(f);
    len = pack_fields(f, BASE_N, buf, sizeof(buf));
    FG_CHECK_INT(fg_lock_decode(buf, len, &lk, errbuf, sizeof(errbuf)),
                 FG_OK);
    for (size_t cut = 0; cut < len; cut++)
        FG_CHECK(fg_lock_decode(buf, cut, &lk, errbuf, sizeof(errbuf)) ==
                 FG_EINVAL);
    buf[len] = '\0';
    FG_CHECK_INT(fg_lock_decode(buf, len + 1, &lk, errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK(strstr(errbuf, "msgpack") != NULL);

    /* Nesting: an unknown key may hold a value 16 containers deep in all
     * (the record map plus 15), not 17. */
    for (int depth = 15; depth <= 16; depth++) {
        char rec[512];
        size_t n = pack_fields(f, BASE_N, rec, sizeof(rec));
        rec[0] = (char)(0x80 | (BASE_N + 1)); /* fixmap with one more */
        rec[n++] = '\xa1';
        rec[n++] = 'z';
        for (int d = 0; d < depth; d++)
            rec[n++] = '\x91';
        rec[n++] = '\x00';
        FG_CHECK_INT(fg_lock_decode(rec, n, &lk, errbuf, sizeof(errbuf)),
                     depth == 15 ? FG_OK : FG_EINVAL);
    }

    /* Over the input cap. */
    FG_CHECK_INT(fg_lock_decode(buf, FG_LOCK_INPUT_MAX + 1, &lk, errbuf,
                                sizeof(errbuf)),
                 FG_ETOOBIG);
}

/* ---- table ------------------------------------------------------------ */

static fg_lock make_lock(const char *region, fg_lock_state state,
                         fg_lock_scope scope, int64_t until)
{
    fg_lock lk;
    memset(&lk, 0, sizeof(lk));
    snprintf(lk.region, sizeof(lk.region), "%s", region);
    lk.state = state;
    lk.scope = scope;
    lk.source = FG_SOURCE_AUTO;
    strcpy(lk.reason, "grey_share");
    strcpy(lk.id, region);
    lk.since = 100;
    lk.until = until;
    return lk;
}

/* Region code number i (i < 6760): "AA".."ZZ", then "AA-1".."ZZ-1", ... */
static void region_name(int i, char out[FG_REGION_MAX + 1])
{
    int cc = i % 676;
    int sub = i / 676;
    size_t n = 0;
    out[n++] = (char)('A' + cc / 26);
    out[n++] = (char)('A' + cc % 26);
    if (sub > 0) {
        out[n++] = '-';
        out[n++] = (char)('0' + sub);
    }
    out[n] = '\0';
}

static void count_cb(void *ud, const fg_lock *lk)
{
    size_t *n = ud;
    (*n)++;
    (void)lk;
}

static void test_table_basic(void)
{
    fg_lock_table *t = fg_lock_table_new();
    fg_lock a = make_lock("UA", FG_LOCK_LOCKED, FG_SCOPE_ALL, 10);
    const fg_lock *got;

    FG_CHECK(t != NULL);
    FG_CHECK_INT(fg_lock_table_size(t), 0);
    FG_CHECK(fg_lock_table_get(t, "UA") == NULL);
    FG_CHECK_INT(fg_lock_table_put(t, "UA", &a), FG_OK);
    FG_CHECK_INT(fg_lock_table_size(t), 1);
    got = fg_lock_table_get(t, "UA");
    FG_CHECK(got != NULL && got != &a);
    FG_CHECK(got && got->until == 10);
    FG_CHECK(fg_lock_table_get(t, "UA-43") == NULL);
    FG_CHECK(fg_lock_table_get(t, "U") == NULL);

    /* Replace keeps the size; the stored copy is independent of a. */
    a.until = 20;
    FG_CHECK(fg_lock_table_get(t, "UA")->until == 10);
    FG_CHECK_INT(fg_lock_table_put(t, "UA", &a), FG_OK);
    FG_CHECK_INT(fg_lock_table_size(t), 1);
    FG_CHECK(fg_lock_table_get(t, "UA")->until == 20);
    /* Putting the stored record back on itself is harmless. */
    FG_CHECK_INT(fg_lock_table_put(t, "UA", fg_lock_table_get(t, "UA")),
                 FG_OK);
    FG_CHECK(fg_lock_table_get(t, "UA")->until == 20);

    /* Tombstones: removing present and absent regions. */
    FG_CHECK_INT(fg_lock_table_put(t, "UA", NULL), FG_OK);
    FG_CHECK_INT(fg_lock_table_size(t), 0);
    FG_CHECK(fg_lock_table_get(t, "UA") == NULL);
    FG_CHECK_INT(fg_lock_table_put(t, "CU", NULL), FG_OK);
    FG_CHECK_INT(fg_lock_table_size(t), 0);

    /* Keys that are not region-sized are refused. */
    FG_CHECK_INT(fg_lock_table_put(t, "", &a), FG_EINVAL);
    FG_CHECK_INT(fg_lock_table_put(t, "UA-4300", &a), FG_EINVAL);
    FG_CHECK_INT(fg_lock_table_size(t), 0);
    FG_CHECK(fg_lock_table_get(t, "UA-4300") == NULL);

    fg_lock_table_free(t);
    fg_lock_table_free(NULL);
}

static void test_table_grow(void)
{
    enum { N = 1500 };
    fg_lock_table *t = fg_lock_table_new();
    char name[FG_REGION_MAX + 1];
    size_t bad = 0, n = 0;

    for (int i = 0; i < N; i++) {
        region_name(i, name);
        fg_lock lk = make_lock(name, FG_LOCK_LOCKED, FG_SCOPE_ALL, 1000 + i);
        FG_CHECK(fg_lock_table_put(t, name, &lk) == FG_OK);
    }
    FG_CHECK_INT(fg_lock_table_size(t), N);
    for (int i = 0; i < N; i++) {
        region_name(i, name);
        const fg_lock *lk = fg_lock_table_get(t, name);
        bad += !lk || lk->until != 1000 + i || strcmp(lk->region, name) != 0;
    }
    FG_CHECK_INT(bad, 0);
    fg_lock_table_foreach(t, count_cb, &n);
    FG_CHECK_INT(n, N);

    /* Remove every third region: the rest stay reachable (deletion must not
     * break probe chains), the removed ones are gone. */
    for (int i = 0; i < N; i += 3) {
        region_name(i, name);
        FG_CHECK(fg_lock_table_put(t, name, NULL) == FG_OK);
    }
    bad = 0;
    for (int i = 0; i < N; i++) {
        region_name(i, name);
        const fg_lock *lk = fg_lock_table_get(t, name);
        if (i % 3 == 0)
            bad += lk != NULL;
        else
            bad += !lk || lk->until != 1000 + i;
    }
    FG_CHECK_INT(bad, 0);
    FG_CHECK_INT(fg_lock_table_size(t), N - (N + 2) / 3);
    n = 0;
    fg_lock_table_foreach(t, count_cb, &n);
    FG_CHECK_INT(n, N - (N + 2) / 3);

    /* Clone: equal contents, then independent in both directions. */
    fg_lock_table *c = fg_lock_table_clone(t);
    FG_CHECK(c != NULL);
    FG_CHECK_INT(fg_lock_table_size(c), fg_lock_table_size(t));
    region_name(1, name);
    fg_lock changed = make_lock(name, FG_LOCK_UNLOCKED, FG_SCOPE_ALL, 1);
    FG_CHECK_INT(fg_lock_table_put(t, name, &changed), FG_OK);
    FG_CHECK(fg_lock_table_get(c, name)->until == 1001);
    FG_CHECK(fg_lock_table_get(c, name)->state == FG_LOCK_LOCKED);
    region_name(2, name);
    FG_CHECK_INT(fg_lock_table_put(c, name, NULL), FG_OK);
    FG_CHECK(fg_lock_table_get(t, name) != NULL);
    fg_lock_table_free(t);
    /* The clone survives its original. */
    region_name(4, name);
    FG_CHECK(fg_lock_table_get(c, name) && fg_lock_table_get(c, name)->until == 1004);
    fg_lock_table_free(c);
}

/* ---- match ------------------------------------------------------------ */

static fg_checkin device(const char *sku, const char *region)
{
    fg_checkin ci;
    memset(&ci, 0, sizeof(ci));
    snprintf(ci.device_id, sizeof(ci.device_id), "dev-1");
    snprintf(ci.sku_region, sizeof(ci.sku_region), "%s", sku);
    snprintf(ci.region, sizeof(ci.region), "%s", region);
    ci.sku_region_len = (uint16_t)strlen(ci.sku_region);
    ci.region_len = (uint16_t)strlen(ci.region);
    return ci;
}

static void put(fg_lock_table *t, fg_lock lk)
{
    FG_CHECK_INT(fg_lock_table_put(t, lk.region, &lk), FG_OK);
}

static void test_match_scope_and_expiry(void)
{
    fg_lock_table *t = fg_lock_table_new();
    fg_checkin grey = device("US", "CU");   /* US phone in Cuba: grey */
    fg_checkin local = device("CU", "CU");  /* Cuban phone in Cuba */
    const fg_lock *m;

    FG_CHECK(fg_lock_table_match(t, NULL, &grey, 0) == NULL);

    put(t, make_lock("CU", FG_LOCK_LOCKED, FG_SCOPE_ALL, 5000));
    m = fg_lock_table_match(t, NULL, &grey, 1000);
    FG_CHECK(m && strcmp(m->region, "CU") == 0);
    FG_CHECK(fg_lock_table_match(t, NULL, &local, 1000) != NULL);

    put(t, make_lock("CU", FG_LOCK_LOCKED, FG_SCOPE_GREY, 5000));
    FG_CHECK(fg_lock_table_match(t, NULL, &grey, 1000) != NULL);
    FG_CHECK(fg_lock_table_match(t, NULL, &local, 1000) == NULL);

    /* Expiry: locked up to until - 1, free from until on. */
    FG_CHECK(fg_lock_table_match(t, NULL, &grey, 4999) != NULL);
    FG_CHECK(fg_lock_table_match(t, NULL, &grey, 5000) == NULL);
    FG_CHECK(fg_lock_table_match(t, NULL, &grey, 9000) == NULL);

    /* Only locked records ever apply. */
    static const fg_lock_state never[] = {FG_LOCK_UNLOCKED, FG_LOCK_SHADOW,
                                          FG_LOCK_SUPPRESSED};
    for (int i = 0; i < 3; i++) {
        put(t, make_lock("CU", never[i], FG_SCOPE_ALL, 5000));
        FG_CHECK(fg_lock_table_match(t, NULL, &grey, 1000) == NULL);
        FG_CHECK(fg_lock_table_match(t, NULL, &local, 1000) == NULL);
    }

    /* A market map that allows US phones in CU makes them not grey. */
    fg_market_map *mm = fg_market_map_new();
    char eb[128];
    FG_CHECK(mm != NULL);
    FG_CHECK_INT(fg_market_map_allow(mm, "US", "CU", eb, sizeof(eb)), FG_OK);
    put(t, make_lock("CU", FG_LOCK_LOCKED, FG_SCOPE_GREY, 5000));
    FG_CHECK(fg_lock_table_match(t, NULL, &grey, 1000) != NULL);
    FG_CHECK(fg_lock_table_match(t, mm, &grey, 1000) == NULL);
    fg_market_map_free(mm);

    /* Tombstone: the lock is gone. */
    put(t, make_lock("CU", FG_LOCK_LOCKED, FG_SCOPE_ALL, 5000));
    FG_CHECK(fg_lock_table_match(t, NULL, &local, 1000) != NULL);
    FG_CHECK_INT(fg_lock_table_put(t, "CU", NULL), FG_OK);
    FG_CHECK(fg_lock_table_match(t, NULL, &local, 1000) == NULL);
    fg_lock_table_free(t);
}

static void test_match_country(void)
{
    fg_lock_table *t = fg_lock_table_new();
    fg_checkin grey_sub = device("US", "UA-43");
    fg_checkin local_sub = device("UA", "UA-43");
    fg_checkin local_country = device("UA", "UA");
    fg_checkin other_sub = device("UA", "UA-30");
    const fg_lock *m;

    /* A country lock covers its subdivisions. */
    put(t, make_lock("UA", FG_LOCK_LOCKED, FG_SCOPE_ALL, 5000));
    m = fg_lock_table_match(t, NULL, &local_sub, 1000);
    FG_CHECK(m && strcmp(m->region, "UA") == 0);
    FG_CHECK(fg_lock_table_match(t, NULL, &local_country, 1000) != NULL);

    /* A locked subdivision record wins over the country record. */
    put(t, make_lock("UA-43", FG_LOCK_LOCKED, FG_SCOPE_ALL, 3000));
    m = fg_lock_table_match(t, NULL, &local_sub, 1000);
    FG_CHECK(m && strcmp(m->region, "UA-43") == 0);
    /* Once it expires, the country lock still covers the device. */
    m = fg_lock_table_match(t, NULL, &local_sub, 3000);
    FG_CHECK(m && strcmp(m->region, "UA") == 0);

    /* An unlocked subdivision does not lift its country's lock. */
    put(t, make_lock("UA-43", FG_LOCK_UNLOCKED, FG_SCOPE_ALL, 0));
    m = fg_lock_table_match(t, NULL, &local_sub, 1000);
    FG_CHECK(m && strcmp(m->region, "UA") == 0);

    /* Grey-scoped subdivision, non-grey device: falls to the country. */
    put(t, make_lock("UA-43", FG_LOCK_LOCKED, FG_SCOPE_GREY, 5000));
    m = fg_lock_table_match(t, NULL, &local_sub, 1000);
    FG_CHECK(m && strcmp(m->region, "UA") == 0);
    m = fg_lock_table_match(t, NULL, &grey_sub, 1000);
    FG_CHECK(m && strcmp(m->region, "UA-43") == 0);

    /* Without the country record, the subdivision lock stays local. */
    FG_CHECK_INT(fg_lock_table_put(t, "UA", NULL), FG_OK);
    FG_CHECK(fg_lock_table_match(t, NULL, &local_sub, 1000) == NULL);
    FG_CHECK(fg_lock_table_match(t, NULL, &grey_sub, 1000) != NULL);
    FG_CHECK(fg_lock_table_match(t, NULL, &other_sub, 1000) == NULL);
    /* A subdivision lock never covers the country itself. */
    put(t, make_lock("UA-43", FG_LOCK_LOCKED, FG_SCOPE_ALL, 5000));
    FG_CHECK(fg_lock_table_match(t, NULL, &local_country, 1000) == NULL);

    /* A grey-scoped country lock: only grey devices of the subdivision. */
    FG_CHECK_INT(fg_lock_table_put(t, "UA-43", NULL), FG_OK);
    put(t, make_lock("UA", FG_LOCK_LOCKED, FG_SCOPE_GREY, 5000));
    FG_CHECK(fg_lock_table_match(t, NULL, &grey_sub, 1000) != NULL);
    FG_CHECK(fg_lock_table_match(t, NULL, &local_sub, 1000) == NULL);
    fg_lock_table_free(t);
}

/* Decoded records feed the table: the gateway path end to end. */
static void test_decode_into_table(void)
{
    field f[BASE_N];
    fg_lock lk;
    fg_lock_table *t = fg_lock_table_new();
    fg_checkin ci = device("UA", "UA-43");

    base_fields(f);
    find_field(f, BASE_N, "region")->s = "UA";
    FG_CHECK_INT(decode_fields(f, BASE_N, &lk), FG_OK);
    FG_CHECK_INT(fg_lock_table_put(t, lk.region, &lk), FG_OK);
    const fg_lock *m = fg_lock_table_match(t, NULL, &ci, 4999);
    FG_CHECK(m && strcmp(m->message, "Service paused in your region") == 0);
    FG_CHECK(fg_lock_table_match(t, NULL, &ci, 5000) == NULL);
    fg_lock_table_free(t);
}

FG_TEST_MAIN(test_names, test_roundtrip_full, test_roundtrip_required,
             test_missing_fields, test_wrong_types, test_caps, test_utf8,
             test_malformed, test_table_basic, test_table_grow,
             test_match_scope_and_expiry, test_match_country,
             test_decode_into_table)
