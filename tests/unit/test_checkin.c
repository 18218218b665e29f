/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for common/fg_checkin.c: every schema v1 validation rule in
 * JSON and msgpack, single and batch bodies, the msgpack reader against
 * hostile headers and every encoding width, and the record encode -> decode
 * round trip. */
#include <msgpack.h>
#include <stdarg.h>
#include <stdlib.h>

#include "fg_checkin.h"
#include "fg_test.h"

/* ---- helpers --------------------------------------------------------- */

static fg_status parse_json(const char *s, fg_checkin *ci, fg_checkin_error *err)
{
    return fg_checkin_parse_json(s, strlen(s), ci, err);
}

/* Expects the JSON body to be refused with code (and field, NULL = none). */
static void json_err_at(int line, const char *s, const char *code,
                        const char *field)
{
    fg_checkin ci;
    fg_checkin_error err;
    fg_status st = parse_json(s, &ci, &err);
    int ok = st == FG_EINVAL && err.code && strcmp(err.code, code) == 0 &&
             ((field == NULL && err.field == NULL) ||
              (field && err.field && strcmp(err.field, field) == 0));
    FG_CHECK(ok);
    if (!ok)
        fprintf(stderr, "  line %d: body %.120s: got %d %s/%s (%s), want %s/%s\n",
                line, s, st, err.code ? err.code : "-",
                err.field ? err.field : "-", err.detail, code,
                field ? field : "-");
}
#define JSON_ERR(s, code, field) json_err_at(__LINE__, s, code, field)

static void json_ok_at(int line, const char *s, fg_checkin *ci)
{
    fg_checkin_error err;
    fg_status st = parse_json(s, ci, &err);
    FG_CHECK_INT(st, FG_OK);
    if (st != FG_OK)
        fprintf(stderr, "  line %d: body %.120s: %s/%s (%s)\n", line, s,
                err.code ? err.code : "-", err.field ? err.field : "-",
                err.detail);
}
#define JSON_OK(s, ci) json_ok_at(__LINE__, s, ci)

/* A body with the required fields plus `extra` (",\"k\":v..." or ""). */
static const char *with_extra(const char *extra)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf),
             "{\"device_id\":\"dev-1\",\"sku_region\":\"CN\",\"region\":\"CU\"%s}",
             extra);
    return buf;
}

static char *repeat(const char *unit, size_t n)
{
    size_t ul = strlen(unit);
    char *s = malloc(ul * n + 1);
    if (!s)
        abort();
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * ul, unit, ul);
    s[ul * n] = '\0';
    return s;
}

/* msgpack body builder on an sbuffer. */
typedef struct mp {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} mp;

static void mp_init(mp *m)
{
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mp_str(mp *m, const char *s, size_t n)
{
    msgpack_pack_str_with_body(&m->pk, s, n);
}

static void mp_cstr(mp *m, const char *s)
{
    mp_str(m, s, strlen(s));
}

static void mp_kv_str(mp *m, const char *k, const char *v, size_t n)
{
    mp_cstr(m, k);
    mp_str(m, v, n);
}

/* Map of the three required fields plus `extra` more pairs the caller packs
 * next. */
static void mp_base(mp *m, uint32_t extra)
{
    mp_init(m);
    msgpack_pack_map(&m->pk, 3 + extra);
    mp_kv_str(m, "device_id", "dev-1", 5);
    mp_kv_str(m, "sku_region", "CN", 2);
    mp_kv_str(m, "region", "CU", 2);
}

static fg_status mp_parse(mp *m, fg_checkin *ci, fg_checkin_error *err)
{
    fg_status st = fg_checkin_parse_msgpack(m->sb.data, m->sb.size, ci, err);
    msgpack_sbuffer_destroy(&m->sb);
    return st;
}

static void mp_err_at(int line, mp *m, const char *code, const char *field)
{
    fg_checkin ci;
    fg_checkin_error err;
    fg_status st = mp_parse(m, &ci, &err);
    int ok = st == FG_EINVAL && err.code && strcmp(err.code, code) == 0 &&
             ((field == NULL && err.field == NULL) ||
              (field && err.field && strcmp(err.field, field) == 0));
    FG_CHECK(ok);
    if (!ok)
        fprintf(stderr, "  line %d: got %d %s/%s (%s), want %s/%s\n", line, st,
                err.code ? err.code : "-", err.field ? err.field : "-",
                err.detail, code, field ? field : "-");
}
#define MP_ERR(m, code, field) mp_err_at(__LINE__, m, code, field)

static void raw_err_at(int line, const char *buf, size_t len, const char *code)
{
    fg_checkin ci;
    fg_checkin_error err;
    fg_status st = fg_checkin_parse_msgpack(buf, len, &ci, &err);
    int ok = st == FG_EINVAL && err.code && strcmp(err.code, code) == 0;
    FG_CHECK(ok);
    if (!ok)
        fprintf(stderr, "  line %d: got %d %s (%s), want %s\n", line, st,
                err.code ? err.code : "-", err.detail, code);
}
#define RAW_ERR(buf, len, code) raw_err_at(__LINE__, buf, len, code)

/* Batch callback recorder. */
typedef struct rec {
    size_t n;
    size_t idx[16];
    int valid[16];
    char device[16][FG_DEVICE_ID_MAX + 1];
    const char *code[16];
    const char *field[16];
    size_t stop_at; /* return FG_AGAIN at this index; SIZE_MAX never */
} rec;

static fg_status rec_cb(void *ud, size_t index, const fg_checkin *ci,
                        const fg_checkin_error *item_err)
{
    rec *r = ud;
    if (r->n < 16) {
        r->idx[r->n] = index;
        r->valid[r->n] = ci != NULL;
        r->device[r->n][0] = '\0';
        r->code[r->n] = r->field[r->n] = NULL;
        if (ci)
            snprintf(r->device[r->n], sizeof(r->device[0]), "%s", ci->device_id);
        else {
            r->code[r->n] = item_err->code;
            r->field[r->n] = item_err->field;
        }
    }
    r->n++;
    return index == r->stop_at ? FG_AGAIN : FG_OK;
}

static void rec_init(rec *r)
{
    memset(r, 0, sizeof(*r));
    r->stop_at = SIZE_MAX;
}

/* ---- JSON: accepted bodies ------------------------------------------- */

static void test_json_full(void)
{
    fg_checkin ci;
    JSON_OK("{\"device_id\":\"A-z.0_9:x\",\"sku_region\":\"UA-43\","
            "\"region\":\"CU\",\"model\":\"Pixel 8\",\"fw\":\"14.2.1\","
            "\"mcc\":368,\"seq\":18446744,\"ts\":1718000000123}",
            &ci);
    FG_CHECK_STR(ci.device_id, "A-z.0_9:x");
    FG_CHECK_INT(ci.device_id_len, 9);
    FG_CHECK_STR(ci.sku_region, "UA-43");
    FG_CHECK_INT(ci.sku_region_len, 5);
    FG_CHECK_STR(ci.region, "CU");
    FG_CHECK_INT(ci.region_len, 2);
    FG_CHECK_STR(ci.model, "Pixel 8");
    FG_CHECK_INT(ci.model_len, 7);
    FG_CHECK_STR(ci.fw, "14.2.1");
    FG_CHECK_INT(ci.fw_len, 6);
    FG_CHECK_INT(ci.mcc, 368);
    FG_CHECK_INT(ci.seq, 18446744);
    FG_CHECK_INT(ci.ts, 1718000000123LL);
    FG_CHECK_INT(ci.has, FG_CHECKIN_HAS_MODEL | FG_CHECKIN_HAS_FW |
                             FG_CHECKIN_HAS_MCC | FG_CHECKIN_HAS_SEQ |
                             FG_CHECKIN_HAS_TS);
}

static void test_json_minimal_and_nulls(void)
{
    fg_checkin ci;
    JSON_OK(with_extra(""), &ci);
    FG_CHECK_INT(ci.has, 0);
    FG_CHECK_STR(ci.model, "");
    FG_CHECK_STR(ci.fw, "");
    /* A present optional field with a null value is absent. */
    JSON_OK(with_extra(",\"model\":null,\"fw\":null,\"mcc\":null,\"seq\":null,"
                       "\"ts\":null"),
            &ci);
    FG_CHECK_INT(ci.has, 0);
    /* Unknown fields are ignored, whatever their type. */
    JSON_OK(with_extra(",\"battery\":0.5,\"x\":{\"y\":[1,2,{}]},\"v\":7,"
                       "\"gw\":1,\"MODEL\":3"),
            &ci);
    FG_CHECK_INT(ci.has, 0);
    /* An empty model is a present, empty model. */
    JSON_OK(with_extra(",\"model\":\"\""), &ci);
    FG_CHECK_INT(ci.has, FG_CHECKIN_HAS_MODEL);
    FG_CHECK_INT(ci.model_len, 0);
    /* The buffer need not be NUL-terminated: only len bytes are read. */
    {
        const char *body = "{\"device_id\":\"d\",\"sku_region\":\"CN\","
                           "\"region\":\"CU\"}GARBAGE";
        fg_checkin_error err;
        FG_CHECK_INT(fg_checkin_parse_json(body, strlen(body) - 7, &ci, &err),
                     FG_OK);
        FG_CHECK_INT(fg_checkin_parse_json(body, strlen(body), &ci, &err),
                     FG_EINVAL);
    }
    /* err may be NULL. */
    FG_CHECK_INT(fg_checkin_parse_json("[]", 2, &ci, NULL), FG_EINVAL);
}

/* ---- JSON: each rule ------------------------------------------------- */

static void test_json_required(void)
{
    JSON_ERR("{\"sku_region\":\"CN\",\"region\":\"CU\"}", "missing_field",
             "device_id");
    JSON_ERR("{\"device_id\":\"d\",\"region\":\"CU\"}", "missing_field",
             "sku_region");
    JSON_ERR("{\"device_id\":\"d\",\"sku_region\":\"CN\"}", "missing_field",
             "region");
    JSON_ERR("{\"device_id\":null,\"sku_region\":\"CN\",\"region\":\"CU\"}",
             "missing_field", "device_id");
    JSON_ERR("{}", "missing_field", "device_id");
    /* The first bad field in schema order is the one reported. */
    JSON_ERR("{\"region\":7,\"device_id\":\"a b\"}", "invalid_value",
             "device_id");
    JSON_ERR("{\"region\":7,\"device_id\":\"d\",\"sku_region\":\"CN\","
             "\"mcc\":\"x\"}",
             "wrong_type", "region");
}

static void test_json_wrong_types(void)
{
    JSON_ERR("{\"device_id\":12,\"sku_region\":\"CN\",\"region\":\"CU\"}",
             "wrong_type", "device_id");
    JSON_ERR("{\"device_id\":[\"d\"],\"sku_region\":\"CN\",\"region\":\"CU\"}",
             "wrong_type", "device_id");
    JSON_ERR("{\"device_id\":\"d\",\"sku_region\":{},\"region\":\"CU\"}",
             "wrong_type", "sku_region");
    JSON_ERR("{\"device_id\":\"d\",\"sku_region\":\"CN\",\"region\":true}",
             "wrong_type", "region");
    JSON_ERR(with_extra(",\"model\":8"), "wrong_type", "model");
    JSON_ERR(with_extra(",\"model\":false"), "wrong_type", "model");
    JSON_ERR(with_extra(",\"fw\":{\"v\":1}"), "wrong_type", "fw");
    JSON_ERR(with_extra(",\"fw\":1.5"), "wrong_type", "fw");
    JSON_ERR(with_extra(",\"mcc\":\"368\""), "wrong_type", "mcc");
    JSON_ERR(with_extra(",\"mcc\":368.0"), "wrong_type", "mcc");
    JSON_ERR(with_extra(",\"mcc\":true"), "wrong_type", "mcc");
    JSON_ERR(with_extra(",\"mcc\":[1]"), "wrong_type", "mcc");
    JSON_ERR(with_extra(",\"seq\":1.0"), "wrong_type", "seq");
    JSON_ERR(with_extra(",\"seq\":1e3"), "wrong_type", "seq");
    JSON_ERR(with_extra(",\"seq\":\"5\""), "wrong_type", "seq");
    JSON_ERR(with_extra(",\"ts\":\"1718000000000\""), "wrong_type", "ts");
    JSON_ERR(with_extra(",\"ts\":1718000000000.0"), "wrong_type", "ts");
    JSON_ERR(with_extra(",\"ts\":{}"), "wrong_type", "ts");
    /* The detail names what was sent. */
    {
        fg_checkin ci;
        fg_checkin_error err;
        parse_json(with_extra(",\"mcc\":1.0"), &ci, &err);
        FG_CHECK(strstr(err.detail, "mcc") != NULL);
        FG_CHECK(strstr(err.detail, "integer") != NULL);
    }
}

static void test_json_device_id(void)
{
    fg_checkin ci;
    char body[512];
    char *id64 = repeat("a", 64), *id65 = repeat("a", 65);

    snprintf(body, sizeof(body),
             "{\"device_id\":\"%s\",\"sku_region\":\"CN\",\"region\":\"CU\"}",
             id64);
    JSON_OK(body, &ci);
    FG_CHECK_INT(ci.device_id_len, 64);
    FG_CHECK_STR(ci.device_id, id64);
    snprintf(body, sizeof(body),
             "{\"device_id\":\"%s\",\"sku_region\":\"CN\",\"region\":\"CU\"}",
             id65);
    JSON_ERR(body, "too_long", "device_id");
    JSON_OK("{\"device_id\":\"x\",\"sku_region\":\"CN\",\"region\":\"CU\"}", &ci);
    JSON_ERR("{\"device_id\":\"\",\"sku_region\":\"CN\",\"region\":\"CU\"}",
             "invalid_value", "device_id");
    static const char *const bad[] = {"a b", "a/b", "a+b", "a@b", "\\u00e9",
                                      "a\\tb", "a#", "{x}", "a,b", "\\u0001"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"device_id\":\"%s\",\"sku_region\":\"CN\",\"region\":\"CU\"}",
                 bad[i]);
        JSON_ERR(body, "invalid_value", "device_id");
    }
    free(id64);
    free(id65);
}

static void test_json_regions(void)
{
    fg_checkin ci;
    char body[256];
    static const char *const good[] = {"CU", "UA-43", "UA-4", "GB-ENG",
                                       "US-CA", "FR-75C"};
    static const char *const bad[] = {"cu", "C", "CUB", "UA-", "UA-1234",
                                      "UA_43", "ua-43", "UA-4a", "U1", "",
                                      " CU", "CU ", "UA--4", "UA43"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"device_id\":\"d\",\"sku_region\":\"%s\",\"region\":\"%s\"}",
                 good[i], good[i]);
        JSON_OK(body, &ci);
        FG_CHECK_STR(ci.region, good[i]);
        FG_CHECK_STR(ci.sku_region, good[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"device_id\":\"d\",\"sku_region\":\"%s\",\"region\":\"CU\"}",
                 bad[i]);
        JSON_ERR(body, "invalid_value", "sku_region");
        snprintf(body, sizeof(body),
                 "{\"device_id\":\"d\",\"sku_region\":\"CU\",\"region\":\"%s\"}",
                 bad[i]);
        JSON_ERR(body, "invalid_value", "region");
    }
}

static void test_json_text_fields(void)
{
    fg_checkin ci;
    char body[2048];
    char *a64 = repeat("a", 64), *a65 = repeat("a", 65);
    char *e64 = repeat("\xc3\xa9", 64), *e65 = repeat("\xc3\xa9", 65);
    char *g64 = repeat("\xf0\x9f\x98\x80", 64); /* U+1F600, 4 bytes */
    char *u65 = repeat("\\u00e9", 65);
    char *f32 = repeat("\xe2\x82\xac", 32), *f33 = repeat("\xe2\x82\xac", 33);

#define BODY_WITH(field, val)                                                 \
    (snprintf(body, sizeof(body), ",\"%s\":\"%s\"", field, val), with_extra(body))

    JSON_OK(BODY_WITH("model", a64), &ci);
    FG_CHECK_INT(ci.model_len, 64);
    JSON_ERR(BODY_WITH("model", a65), "too_long", "model");
    JSON_OK(BODY_WITH("model", e64), &ci);
    FG_CHECK_INT(ci.model_len, 128);
    FG_CHECK_STR(ci.model, e64);
    JSON_ERR(BODY_WITH("model", e65), "too_long", "model");
    JSON_ERR(BODY_WITH("model", u65), "too_long", "model");
    JSON_OK(BODY_WITH("model", g64), &ci);
    FG_CHECK_INT(ci.model_len, 256);
    FG_CHECK_STR(ci.model, g64);
    JSON_OK(BODY_WITH("fw", f32), &ci);
    FG_CHECK_INT(ci.fw_len, 96);
    JSON_ERR(BODY_WITH("fw", f33), "too_long", "fw");
    JSON_OK(BODY_WITH("fw", "12345678901234567890123456789012"), &ci);
    JSON_ERR(BODY_WITH("fw", "123456789012345678901234567890123"), "too_long",
             "fw");
    /* Control characters: C0, tab, newline, DEL. */
    JSON_ERR(BODY_WITH("model", "a\\u0001b"), "invalid_value", "model");
    JSON_ERR(BODY_WITH("model", "a\\tb"), "invalid_value", "model");
    JSON_ERR(BODY_WITH("fw", "1\\n2"), "invalid_value", "fw");
    JSON_ERR(BODY_WITH("fw", "1\\u007f"), "invalid_value", "fw");
    JSON_ERR(BODY_WITH("model", "\\u001f"), "invalid_value", "model");
    /* Not control characters: space, U+0080 region, quotes. */
    JSON_OK(BODY_WITH("model", "a b \\\"q\\\" \\u00a0 \\u0080"), &ci);
    /* NUL inside a JSON string: the whole body is refused. */
    JSON_ERR(BODY_WITH("model", "a\\u0000b"), "invalid_json", NULL);
    /* Invalid UTF-8 in a JSON body: the whole body is refused. */
    JSON_ERR(BODY_WITH("model", "a\xc3("), "invalid_json", NULL);
    JSON_ERR(BODY_WITH("model", "\xed\xa0\x80"), "invalid_json", NULL);
    /* The error detail quotes the input but stays printable ASCII. */
    {
        fg_checkin_error err;
        int ascii = 1;
        parse_json(BODY_WITH("model", "\xc3\xa9\xc3\xa9\xff\x01"), &ci, &err);
        for (const char *c = err.detail; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
                ascii = 0;
        FG_CHECK(ascii);
        FG_CHECK_STR(err.code, "invalid_json");
    }
    /* A lone surrogate escape cannot be represented. */
    JSON_ERR(BODY_WITH("model", "\\ud800"), "invalid_json", NULL);
#undef BODY_WITH
    free(a64);
    free(a65);
    free(e64);
    free(e65);
    free(g64);
    free(u65);
    free(f32);
    free(f33);
}

static void test_json_integers(void)
{
    fg_checkin ci;
    JSON_OK(with_extra(",\"mcc\":0"), &ci);
    FG_CHECK_INT(ci.mcc, 0);
    FG_CHECK_INT(ci.has, FG_CHECKIN_HAS_MCC);
    JSON_OK(with_extra(",\"mcc\":999"), &ci);
    FG_CHECK_INT(ci.mcc, 999);
    JSON_ERR(with_extra(",\"mcc\":1000"), "out_of_range", "mcc");
    JSON_ERR(with_extra(",\"mcc\":-1"), "out_of_range", "mcc");
    JSON_ERR(with_extra(",\"mcc\":65536"), "out_of_range", "mcc");
    JSON_OK(with_extra(",\"seq\":0"), &ci);
    FG_CHECK_INT(ci.has, FG_CHECKIN_HAS_SEQ);
    JSON_OK(with_extra(",\"seq\":9223372036854775807"), &ci);
    FG_CHECK(ci.seq == (uint64_t)INT64_MAX);
    JSON_ERR(with_extra(",\"seq\":-1"), "out_of_range", "seq");
    /* seq takes the full uint64 range in JSON too (it stopped at 2^63-1
     * with jansson). */
    JSON_OK(with_extra(",\"seq\":9223372036854775808"), &ci);
    FG_CHECK(ci.seq == (uint64_t)INT64_MAX + 1);
    JSON_OK(with_extra(",\"ts\":-1"), &ci);
    FG_CHECK_INT(ci.ts, -1);
    FG_CHECK_INT(ci.has, FG_CHECKIN_HAS_TS);
    JSON_OK(with_extra(",\"ts\":-9223372036854775808"), &ci);
    FG_CHECK(ci.ts == INT64_MIN);
    JSON_OK(with_extra(",\"ts\":9223372036854775807"), &ci);
    FG_CHECK(ci.ts == INT64_MAX);
}

static void test_json_body_shape(void)
{
    JSON_ERR("", "invalid_json", NULL);
    JSON_ERR("   ", "invalid_json", NULL);
    JSON_ERR("{", "invalid_json", NULL);
    JSON_ERR("{\"device_id\":\"d\",}", "invalid_json", NULL);
    JSON_ERR("{} {}", "invalid_json", NULL);
    JSON_ERR("[]", "not_an_object", NULL);
    JSON_ERR("\"device\"", "not_an_object", NULL);
    JSON_ERR("42", "not_an_object", NULL);
    JSON_ERR("null", "not_an_object", NULL);
    /* Duplicate keys are refused, even with equal values. */
    JSON_ERR("{\"device_id\":\"a\",\"device_id\":\"a\",\"sku_region\":\"CN\","
             "\"region\":\"CU\"}",
             "invalid_json", NULL);
    JSON_ERR(with_extra(",\"x\":1,\"x\":2"), "invalid_json", NULL);
    /* Trailing whitespace is fine. */
    {
        fg_checkin ci;
        char body[4200];
        snprintf(body, sizeof(body), "%s \n", with_extra(""));
        JSON_OK(body, &ci);
    }
}

static void test_json_deep_nesting(void)
{
    size_t n = 100000;
    char *deep = malloc(n + 1), *deep_obj;
    fg_checkin ci;
    fg_checkin_error err;
    rec r;
    if (!deep)
        abort();
    memset(deep, '[', n);
    deep[n] = '\0';
    FG_CHECK_INT(fg_checkin_parse_json(deep, n, &ci, &err), FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_json");
    rec_init(&r);
    FG_CHECK_INT(fg_checkin_batch_parse_json(deep, n, 1000, rec_cb, &r, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_json");
    FG_CHECK_INT(r.n, 0);
    free(deep);
    deep_obj = repeat("{\"a\":", 50000);
    FG_CHECK_INT(parse_json(deep_obj, &ci, &err), FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_json");
    free(deep_obj);
}

/* ---- JSON batch ------------------------------------------------------ */

static fg_status batch_json(const char *s, size_t max, rec *r,
                            fg_checkin_error *err)
{
    rec_init(r);
    return fg_checkin_batch_parse_json(s, strlen(s), max, rec_cb, r, err);
}

static void test_json_batch(void)
{
    rec r;
    fg_checkin_error err;
    const char *good = "{\"device_id\":\"a\",\"sku_region\":\"CN\",\"region\":\"CU\"}";
    char body[1024];

    snprintf(body, sizeof(body),
             "[%s, 5, {\"device_id\":\"b\",\"region\":\"CU\"}, "
             "{\"device_id\":\"c\",\"sku_region\":\"UA\",\"region\":\"UA-43\"},"
             " [], {\"device_id\":\"e\",\"sku_region\":\"CN\",\"region\":\"CU\","
             "\"mcc\":1.0}]",
             good);
    FG_CHECK_INT(batch_json(body, 1000, &r, &err), FG_OK);
    FG_CHECK(err.code == NULL);
    FG_CHECK_INT(r.n, 6);
    for (size_t i = 0; i < 6; i++)
        FG_CHECK_INT(r.idx[i], i);
    FG_CHECK(r.valid[0] && !r.valid[1] && !r.valid[2] && r.valid[3] &&
             !r.valid[4] && !r.valid[5]);
    FG_CHECK_STR(r.device[0], "a");
    FG_CHECK_STR(r.device[3], "c");
    FG_CHECK_STR(r.code[1], "not_an_object");
    FG_CHECK(r.field[1] == NULL);
    FG_CHECK_STR(r.code[2], "missing_field");
    FG_CHECK_STR(r.field[2], "sku_region");
    FG_CHECK_STR(r.code[4], "not_an_object");
    FG_CHECK_STR(r.code[5], "wrong_type");
    FG_CHECK_STR(r.field[5], "mcc");

    /* Whole-body errors: no callback. */
    FG_CHECK_INT(batch_json(good, 1000, &r, &err), FG_EINVAL);
    FG_CHECK_STR(err.code, "not_an_array");
    FG_CHECK_INT(r.n, 0);
    FG_CHECK_INT(batch_json("\"x\"", 1000, &r, &err), FG_EINVAL);
    FG_CHECK_STR(err.code, "not_an_array");
    FG_CHECK_INT(batch_json("[]", 1000, &r, &err), FG_EINVAL);
    FG_CHECK_STR(err.code, "empty_batch");
    FG_CHECK_INT(r.n, 0);
    FG_CHECK_INT(batch_json("[1,2", 1000, &r, &err), FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_json");
    FG_CHECK_INT(batch_json("[{\"a\":1,\"a\":1}]", 1000, &r, &err), FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_json");
    FG_CHECK_INT(r.n, 0);

    /* max_items is inclusive. */
    snprintf(body, sizeof(body), "[%s,%s,%s]", good, good, good);
    FG_CHECK_INT(batch_json(body, 3, &r, &err), FG_OK);
    FG_CHECK_INT(r.n, 3);
    FG_CHECK_INT(batch_json(body, 2, &r, &err), FG_EINVAL);
    FG_CHECK_STR(err.code, "too_many_items");
    FG_CHECK_INT(r.n, 0);

    /* A callback status other than FG_OK stops the walk and is returned. */
    rec_init(&r);
    r.stop_at = 1;
    FG_CHECK_INT(fg_checkin_batch_parse_json(body, strlen(body), 10, rec_cb, &r,
                                             &err),
                 FG_AGAIN);
    FG_CHECK_INT(r.n, 2);
}

/* ---- JSON: the yajl front-end's own rules ---------------------------- */

/* Numbers are read as text: integer syntax for schema fields, the full
 * 64-bit ranges, and any number at all in unknown fields. */
static void test_json_number_text(void)
{
    fg_checkin ci;
    fg_checkin_error err;

    /* seq covers the full uint64 range in JSON too. */
    JSON_OK(with_extra(",\"seq\":18446744073709551615"), &ci);
    FG_CHECK(ci.seq == UINT64_MAX);
    JSON_OK(with_extra(",\"seq\":10000000000000000000"), &ci);
    FG_CHECK(ci.seq == 10000000000000000000ull);
    /* Past 64 bits in a schema field: the body is refused, naming it. */
    JSON_ERR(with_extra(",\"seq\":18446744073709551616"), "invalid_json",
             NULL);
    parse_json(with_extra(",\"seq\":99999999999999999999999999"), &ci, &err);
    FG_CHECK_STR(err.code, "invalid_json");
    FG_CHECK(strstr(err.detail, "seq") != NULL);
    FG_CHECK(strstr(err.detail, "64-bit") != NULL);
    JSON_ERR(with_extra(",\"ts\":-9223372036854775809"), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"mcc\":100000000000000000000"), "invalid_json",
             NULL);
    JSON_ERR(with_extra(",\"mcc\":-100000000000000000000"), "invalid_json",
             NULL);
    /* Within 64 bits, the field's own range decides. */
    JSON_ERR(with_extra(",\"ts\":9223372036854775808"), "out_of_range", "ts");
    JSON_ERR(with_extra(",\"ts\":18446744073709551615"), "out_of_range", "ts");
    JSON_ERR(with_extra(",\"seq\":-9223372036854775808"), "out_of_range",
             "seq");
    JSON_ERR(with_extra(",\"mcc\":18446744073709551615"), "out_of_range",
             "mcc");
    /* -0 is zero. */
    JSON_OK(with_extra(",\"seq\":-0,\"ts\":-0,\"mcc\":-0"), &ci);
    FG_CHECK(ci.seq == 0 && ci.ts == 0 && ci.mcc == 0);
    FG_CHECK_INT(ci.has, FG_CHECKIN_HAS_SEQ | FG_CHECKIN_HAS_TS |
                             FG_CHECKIN_HAS_MCC);
    /* A fraction or an exponent is never an integer, however large. */
    JSON_ERR(with_extra(",\"seq\":1E3"), "wrong_type", "seq");
    JSON_ERR(with_extra(",\"seq\":1e-3"), "wrong_type", "seq");
    JSON_ERR(with_extra(",\"ts\":-0.0"), "wrong_type", "ts");
    JSON_ERR(with_extra(",\"mcc\":1e+2"), "wrong_type", "mcc");
    JSON_ERR(with_extra(",\"seq\":123456789012345678901234567890.5"),
             "wrong_type", "seq");
    JSON_ERR(with_extra(",\"seq\":184467440737095516160e-1"), "wrong_type",
             "seq");
    JSON_ERR(with_extra(",\"ts\":1e999999"), "wrong_type", "ts");
    parse_json(with_extra(",\"seq\":2.5"), &ci, &err);
    FG_CHECK(strstr(err.detail, "fraction or exponent") != NULL);
    /* A number where a string belongs. */
    JSON_ERR(with_extra(",\"fw\":14"), "wrong_type", "fw");
    parse_json(with_extra(",\"fw\":14"), &ci, &err);
    FG_CHECK(strstr(err.detail, "an integer") != NULL);
    /* Unknown fields may hold any JSON number. */
    JSON_OK(with_extra(",\"big\":123456789012345678901234567890,"
                       "\"neg\":-99999999999999999999999,\"huge\":1e999999,"
                       "\"tiny\":-1.5e-999999,\"x\":[18446744073709551616]"),
            &ci);
    FG_CHECK_INT(ci.has, 0);
    /* JSON number syntax is still JSON's. */
    JSON_ERR(with_extra(",\"seq\":01"), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"seq\":+1"), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"seq\":.5"), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"seq\":1."), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"seq\":-"), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"seq\":0x10"), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"seq\":NaN"), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"x\":1e"), "invalid_json", NULL);
}

/* Escapes and UTF-8: what yajl alone would let through. */
static void test_json_strings_strict(void)
{
    fg_checkin ci;
    fg_checkin_error err;
    char *big;

    /* Escaped schema strings are unescaped and kept. */
    JSON_OK("{\"device_id\":\"d\\u0065v\\u003a1\",\"sku_region\":\"\\u0043N\","
            "\"region\":\"C\\u0055\",\"model\":\"\\u00c9cran \\\"8\\\"\","
            "\"fw\":\"\\ud83d\\ude00\"}",
            &ci);
    FG_CHECK_STR(ci.device_id, "dev:1");
    FG_CHECK_INT(ci.device_id_len, 5);
    FG_CHECK_STR(ci.sku_region, "CN");
    FG_CHECK_STR(ci.region, "CU");
    FG_CHECK_STR(ci.model, "\xc3\x89" "cran \"8\"");
    FG_CHECK_STR(ci.fw, "\xf0\x9f\x98\x80");
    FG_CHECK_INT(ci.fw_len, 4);
    /* An escaped backslash before u0000 is text, not the escape. */
    JSON_OK(with_extra(",\"model\":\"a\\\\u0000\""), &ci);
    FG_CHECK_STR(ci.model, "a\\u0000");
    JSON_ERR(with_extra(",\"model\":\"a\\\\\\u0000\""), "invalid_json", NULL);
    /* \u0000 anywhere: schema field, unknown value, key, nested. */
    JSON_ERR(with_extra(",\"x\":\"\\u0000\""), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"\\u0000\":1"), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"x\":[{\"y\":\"a\\u0000\"}]"), "invalid_json", NULL);
    JSON_ERR("{\"device_id\":\"d\\u0000\",\"sku_region\":\"CN\","
             "\"region\":\"CU\"}",
             "invalid_json", NULL);
    parse_json(with_extra(",\"x\":\"\\u0000\""), &ci, &err);
    FG_CHECK(strstr(err.detail, "u0000") != NULL);
    /* Surrogate escapes must pair up. */
    JSON_ERR(with_extra(",\"model\":\"\\udc00\""), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"model\":\"\\ud800\\u0041\""), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"model\":\"\\ud800\\\\u0041\""), "invalid_json",
             NULL);
    JSON_ERR(with_extra(",\"model\":\"\\ud83d\""), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"x\":\"\\ud83dx\""), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"\\ude00\":1"), "invalid_json", NULL);
    JSON_OK(with_extra(",\"model\":\"\\uD83D\\uDE00\\udbff\\udfff\""), &ci);
    FG_CHECK_STR(ci.model, "\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf");
    /* Strict UTF-8 in every string, not only schema fields. */
    JSON_ERR(with_extra(",\"x\":\"\xc0\xaf\""), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"x\":\"\xe0\x80\xaf\""), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"x\":\"\xf0\x80\x80\xaf\""), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"x\":\"\xf4\x90\x80\x80\""), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"x\":\"\xf5\x80\x80\x80\""), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"\xed\xbf\xbf\":1"), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"x\":\"\xe2\x82\""), "invalid_json", NULL);
    JSON_OK(with_extra(",\"model\":\"\xf4\x8f\xbf\xbf\xed\x9f\xbf\"," 
                       "\"\xc3\xa9\":\"\xe2\x82\xac\""),
            &ci);
    FG_CHECK_INT(ci.model_len, 7);
    /* Raw control characters are not JSON. */
    JSON_ERR(with_extra(",\"model\":\"a\tb\""), "invalid_json", NULL);
    /* Long escaped strings (past yajl's first decode buffer and the stack
     * arena): counted and checked in full. */
    big = repeat("\\u00e9", 3000);
    {
        char *body = malloc(3 * strlen(big) + 256);
        if (!body)
            abort();
        sprintf(body, "%s", with_extra(""));
        body[strlen(body) - 1] = '\0';
        strcat(body, ",\"");
        strcat(body, big);
        strcat(body, "\":\"");
        strcat(body, big);
        strcat(body, "\",\"model\":\"");
        strcat(body, big);
        strcat(body, "\"}");
        parse_json(body, &ci, &err);
        FG_CHECK_STR(err.code, "too_long");
        FG_CHECK_STR(err.field, "model");
        FG_CHECK(strstr(err.detail, "3000") != NULL);
        free(body);
    }
    free(big);
}

/* Every object refuses a repeated key (the known-field bitmask and the
 * sorted key list must agree with each other). */
static void test_json_duplicates(void)
{
    fg_checkin ci;
    fg_checkin_error err;
    char *many, *body;
    size_t cap = 200000;

    JSON_ERR(with_extra(",\"model\":null,\"model\":\"x\""), "invalid_json",
             NULL);
    parse_json(with_extra(",\"fw\":\"1\",\"fw\":\"1\""), &ci, &err);
    FG_CHECK(strstr(err.detail, "duplicate") != NULL);
    FG_CHECK(strstr(err.detail, "fw") != NULL);
    /* An escaped key is the same key. */
    JSON_ERR("{\"device_id\":\"a\",\"dev\\u0069ce_id\":\"b\","
             "\"sku_region\":\"CN\",\"region\":\"CU\"}",
             "invalid_json", NULL);
    JSON_ERR(with_extra(",\"x\":1,\"\\u0078\":2"), "invalid_json", NULL);
    JSON_ERR(with_extra(",\"x\":{\"a\":1,\"b\":2,\"a\":3}"), "invalid_json",
             NULL);
    JSON_ERR(with_extra(",\"x\":[1,{\"\":1,\"\":2}]"), "invalid_json", NULL);
    /* The same key in different objects, or at other depths, is fine. */
    JSON_OK(with_extra(",\"x\":{\"a\":1,\"b\":{\"a\":2,\"x\":3}},"
                       "\"y\":{\"a\":1},\"a\":[{\"a\":1},{\"a\":1}],"
                       "\"z\":{\"device_id\":1,\"model\":2}"),
            &ci);
    FG_CHECK_INT(ci.has, 0);
    FG_CHECK_STR(ci.device_id, "dev-1");
    /* Keys that differ only in length or case are different keys. */
    JSON_OK(with_extra(",\"ab\":1,\"a\":1,\"abc\":1,\"AB\":1,\"Model\":1"), &ci);
    /* Many distinct keys are accepted; one repeat among them is not. */
    many = malloc(cap);
    body = malloc(cap + 256);
    if (!many || !body)
        abort();
    many[0] = '\0';
    for (int i = 0, n = 0; i < 8000; i++)
        n += snprintf(many + n, cap - (size_t)n, ",\"k%d\":%d", i, i);
    /* (with_extra's buffer is too small for these) */
    snprintf(body, cap + 256,
             "{\"device_id\":\"d\",\"sku_region\":\"CN\",\"region\":\"CU\"%s}",
             many);
    JSON_OK(body, &ci);
    strcat(many, ",\"k4321\":0");
    snprintf(body, cap + 256,
             "{\"device_id\":\"d\",\"sku_region\":\"CN\",\"region\":\"CU\"%s}",
             many);
    JSON_ERR(body, "invalid_json", NULL);
    free(many);
    free(body);
}

/* Containers nest at most 32 deep, counting the body itself. */
static void test_json_depth_limit(void)
{
    char body[512], *open31 = repeat("[", 31), *close31 = repeat("]", 31);
    fg_checkin ci;
    fg_checkin_error err;
    rec r;

    /* The check-in object is level 1: 31 more are allowed inside it. */
    snprintf(body, sizeof(body), ",\"x\":%s%s", open31, close31);
    JSON_OK(with_extra(body), &ci);
    snprintf(body, sizeof(body), ",\"x\":[%s%s]", open31, close31);
    parse_json(with_extra(body), &ci, &err);
    FG_CHECK_STR(err.code, "invalid_json");
    FG_CHECK(err.field == NULL);
    FG_CHECK(strstr(err.detail, "32") != NULL);
    /* A schema field holding a deep container is still a wrong type. */
    snprintf(body, sizeof(body), ",\"model\":%s%s", open31, close31);
    JSON_ERR(with_extra(body), "wrong_type", "model");
    /* In a batch, the array is level 1 and each item level 2. */
    {
        char *open30 = repeat("{\"a\":", 29), *close30 = repeat("}", 29);
        char b[1024];
        snprintf(b, sizeof(b), "[{\"device_id\":\"a\",\"sku_region\":\"CN\","
                               "\"region\":\"CU\",\"x\":[%s1%s]}]",
                 open30, close30);
        FG_CHECK_INT(batch_json(b, 10, &r, &err), FG_OK);
        FG_CHECK_INT(r.n, 1);
        FG_CHECK(r.valid[0]);
        snprintf(b, sizeof(b), "[{\"device_id\":\"a\",\"sku_region\":\"CN\","
                               "\"region\":\"CU\",\"x\":[[%s1%s]]}]",
                 open30, close30);
        FG_CHECK_INT(batch_json(b, 10, &r, &err), FG_EINVAL);
        FG_CHECK_STR(err.code, "invalid_json");
        FG_CHECK_INT(r.n, 0);
        free(open30);
        free(close30);
    }
    free(open31);
    free(close31);
}

/* Body shapes and error details of the event parser. */
static void test_json_shapes_details(void)
{
    fg_checkin ci;
    fg_checkin_error err;
    rec r;

    /* Whitespace around and inside. */
    JSON_OK(" \r\n\t{ \"device_id\" : \"d\" ,\n \"sku_region\":\"CN\","
            "\"region\":\"CU\" } \n",
            &ci);
    /* The body must be an object; its contents are still parsed first. */
    JSON_ERR("[{\"device_id\":\"d\",\"sku_region\":\"CN\",\"region\":\"CU\"}]",
             "not_an_object", NULL);
    JSON_ERR("[1,2", "invalid_json", NULL);
    JSON_ERR("[{\"a\":1,\"a\":2}]", "invalid_json", NULL);
    JSON_ERR("true", "not_an_object", NULL);
    JSON_ERR("-1e5", "not_an_object", NULL);
    JSON_ERR("123456789012345678901234567890", "not_an_object", NULL);
    JSON_ERR("{}[]", "invalid_json", NULL);
    JSON_ERR("{}x", "invalid_json", NULL);
    JSON_ERR("{\"device_id\":\"d\" \"sku_region\":\"CN\"}", "invalid_json",
             NULL);
    JSON_ERR("{\"device_id\":'d'}", "invalid_json", NULL);
    JSON_ERR("{\"a\":1 /* c */}", "invalid_json", NULL);
    JSON_ERR("{\"a\":tru}", "invalid_json", NULL);
    JSON_ERR("{\"a\":\"\\x\"}", "invalid_json", NULL);
    JSON_ERR("{\"a\":\"\\u12G4\"}", "invalid_json", NULL);
    JSON_ERR("{\"a\":\"abc", "invalid_json", NULL);
    JSON_ERR("{1:2}", "invalid_json", NULL);
    /* A syntax error wins over schema errors found before it. */
    JSON_ERR("{\"device_id\":\"a b\",\"sku_region\":\"x\",", "invalid_json",
             NULL);
    /* The detail locates the error by line and column, in ASCII. */
    parse_json("{\"device_id\":\"d\",\n\"sku_region\":\"CN\",\n  \"region\" 1}",
               &ci, &err);
    FG_CHECK_STR(err.code, "invalid_json");
    FG_CHECK(strstr(err.detail, "line 3") != NULL);
    parse_json("{\"x\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc0\"}", &ci, &err);
    FG_CHECK_STR(err.code, "invalid_json");
    FG_CHECK(strstr(err.detail, "line 1 column 10") != NULL);
    FG_CHECK(strstr(err.detail, "UTF-8") != NULL);

    /* Batch: the shape is judged after the whole body parsed. */
    FG_CHECK_INT(batch_json("{\"a\":[1,2]}", 10, &r, &err), FG_EINVAL);
    FG_CHECK_STR(err.code, "not_an_array");
    FG_CHECK_INT(batch_json("[{}, 1, 2] x", 2, &r, &err), FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_json");
    FG_CHECK_INT(r.n, 0);
    FG_CHECK_INT(batch_json("[{}, 1, {\"x\":1,\"x\":1}]", 2, &r, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_json");
    FG_CHECK_INT(batch_json("[{}]", 0, &r, &err), FG_EINVAL);
    FG_CHECK_STR(err.code, "too_many_items");
    FG_CHECK_INT(r.n, 0);
    FG_CHECK_INT(batch_json(" [ ] ", 10, &r, &err), FG_EINVAL);
    FG_CHECK_STR(err.code, "empty_batch");
    /* An item's huge number in a schema field fails the whole body, as
     * jansson did; in an unknown field it is nothing. */
    FG_CHECK_INT(batch_json("[{\"device_id\":\"a\",\"sku_region\":\"CN\","
                            "\"region\":\"CU\"},{\"seq\":1e1,\"mcc\":"
                            "99999999999999999999}]",
                            10, &r, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_json");
    FG_CHECK_INT(r.n, 0);
    FG_CHECK_INT(batch_json("[{\"device_id\":\"a\",\"sku_region\":\"CN\","
                            "\"region\":\"CU\",\"n\":99999999999999999999}]",
                            10, &r, &err),
                 FG_OK);
    FG_CHECK(r.valid[0]);
    /* Items that are arrays are not objects, and what they hold is not an
     * item; nested objects are not items either. */
    FG_CHECK_INT(batch_json("[[{\"device_id\":\"a\",\"sku_region\":\"CN\","
                            "\"region\":\"CU\"}],null,\"s\",{\"device_id\":"
                            "\"b\",\"sku_region\":\"CN\",\"region\":\"CU\","
                            "\"x\":{\"device_id\":\"c\"}}]",
                            10, &r, &err),
                 FG_OK);
    FG_CHECK_INT(r.n, 4);
    FG_CHECK(!r.valid[0] && !r.valid[1] && !r.valid[2] && r.valid[3]);
    FG_CHECK_STR(r.code[0], "not_an_object");
    FG_CHECK_STR(r.code[1], "not_an_object");
    FG_CHECK_STR(r.code[2], "not_an_object");
    FG_CHECK_STR(r.device[3], "b");
}

/* Every item of a large batch arrives, in order, with its own values, and
 * escaped strings of one item do not leak into the next. */
static fg_status seq_cb(void *ud, size_t index, const fg_checkin *ci,
                        const fg_checkin_error *item_err)
{
    size_t *bad = ud;
    char want[32];
    (void)item_err;
    snprintf(want, sizeof(want), "d%zu\xc3\xa9", index);
    if (index % 7 == 3) {
        if (ci || !item_err || strcmp(item_err->code, "invalid_value") != 0)
            (*bad)++;
        return FG_OK;
    }
    if (!ci || ci->seq != index * 3 || strcmp(ci->model, want) != 0 ||
        ci->model_len != strlen(want))
        (*bad)++;
    return FG_OK;
}

static void test_json_batch_large(void)
{
    size_t n = 1000, cap = n * 160 + 16, len = 0, bad = 0;
    char *body = malloc(cap);
    fg_checkin_error err;
    if (!body)
        abort();
    body[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        len += (size_t)snprintf(
            body + len, cap - len,
            "%s{\"device_id\":\"d\\u002d%zu\",\"sku_region\":\"%s\","
            "\"region\":\"CU\",\"model\":\"d%zu\\u00e9\",\"seq\":%zu}",
            i ? "," : "", i, i % 7 == 3 ? "cn" : "CN", i, i * 3);
    }
    body[len++] = ']';
    FG_CHECK_INT(fg_checkin_batch_parse_json(body, len, n, seq_cb, &bad, &err),
                 FG_OK);
    FG_CHECK_INT(bad, 0);
    FG_CHECK_INT(fg_checkin_batch_parse_json(body, len, n - 1, seq_cb, &bad,
                                             &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "too_many_items");
    FG_CHECK(strstr(err.detail, "1000") != NULL);
    FG_CHECK_INT(bad, 0);
    free(body);
}

/* ---- msgpack: single ------------------------------------------------- */

static void test_mp_full(void)
{
    mp m;
    fg_checkin ci;
    fg_checkin_error err;

    mp_base(&m, 5);
    mp_kv_str(&m, "model", "Galaxy \xc3\xa9", 9);
    mp_kv_str(&m, "fw", "1.0", 3);
    mp_cstr(&m, "mcc");
    msgpack_pack_uint64(&m.pk, 250);
    mp_cstr(&m, "seq");
    msgpack_pack_uint64(&m.pk, UINT64_MAX);
    mp_cstr(&m, "ts");
    msgpack_pack_int64(&m.pk, -5);
    FG_CHECK_INT(mp_parse(&m, &ci, &err), FG_OK);
    FG_CHECK_STR(ci.device_id, "dev-1");
    FG_CHECK_STR(ci.sku_region, "CN");
    FG_CHECK_STR(ci.region, "CU");
    FG_CHECK_STR(ci.model, "Galaxy \xc3\xa9");
    FG_CHECK_INT(ci.model_len, 9);
    FG_CHECK_STR(ci.fw, "1.0");
    FG_CHECK_INT(ci.mcc, 250);
    FG_CHECK(ci.seq == UINT64_MAX);
    FG_CHECK_INT(ci.ts, -5);
    FG_CHECK_INT(ci.has, 31);

    /* nil is absent; non-str keys and unknown keys are ignored. */
    mp_base(&m, 5);
    mp_cstr(&m, "model");
    msgpack_pack_nil(&m.pk);
    msgpack_pack_int(&m.pk, 1);
    msgpack_pack_str_with_body(&m.pk, "x", 1);
    msgpack_pack_bin_with_body(&m.pk, "mcc", 3); /* a bin key, not "mcc" */
    msgpack_pack_str_with_body(&m.pk, "x", 1);
    mp_cstr(&m, "extra");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_double(&m.pk, 1.5);
    msgpack_pack_bin_with_body(&m.pk, "\xff", 1);
    mp_kv_str(&m, "Model", "\xff", 1); /* keys are case-sensitive */
    FG_CHECK_INT(mp_parse(&m, &ci, &err), FG_OK);
    FG_CHECK_INT(ci.has, 0);

    /* A record's gateway fields in a device body are just unknown keys. */
    mp_base(&m, 2);
    mp_cstr(&m, "v");
    msgpack_pack_str_with_body(&m.pk, "x", 1);
    mp_cstr(&m, "gw");
    msgpack_pack_int(&m.pk, 5);
    FG_CHECK_INT(mp_parse(&m, &ci, &err), FG_OK);
}

static void test_mp_fields(void)
{
    mp m;
    fg_checkin ci;
    fg_checkin_error err;

    /* required */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 2);
    mp_kv_str(&m, "sku_region", "CN", 2);
    mp_kv_str(&m, "region", "CU", 2);
    MP_ERR(&m, "missing_field", "device_id");
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_str(&m, "device_id", "d", 1);
    mp_cstr(&m, "sku_region");
    msgpack_pack_nil(&m.pk);
    mp_kv_str(&m, "region", "CU", 2);
    MP_ERR(&m, "missing_field", "sku_region");
    mp_init(&m);
    msgpack_pack_map(&m.pk, 2);
    mp_kv_str(&m, "device_id", "d", 1);
    mp_kv_str(&m, "sku_region", "CN", 2);
    MP_ERR(&m, "missing_field", "region");

    /* str types only: bin, int, bool, float, array, map, ext are wrong */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_cstr(&m, "device_id");
    msgpack_pack_bin_with_body(&m.pk, "dev", 3);
    mp_kv_str(&m, "sku_region", "CN", 2);
    mp_kv_str(&m, "region", "CU", 2);
    MP_ERR(&m, "wrong_type", "device_id");
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_str(&m, "device_id", "d", 1);
    mp_cstr(&m, "sku_region");
    msgpack_pack_int(&m.pk, 86);
    mp_kv_str(&m, "region", "CU", 2);
    MP_ERR(&m, "wrong_type", "sku_region");
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_str(&m, "device_id", "d", 1);
    mp_kv_str(&m, "sku_region", "CN", 2);
    mp_cstr(&m, "region");
    msgpack_pack_array(&m.pk, 0);
    MP_ERR(&m, "wrong_type", "region");
    mp_base(&m, 1);
    mp_cstr(&m, "model");
    msgpack_pack_bin_with_body(&m.pk, "Pixel", 5);
    MP_ERR(&m, "wrong_type", "model");
    mp_base(&m, 1);
    mp_cstr(&m, "fw");
    msgpack_pack_true(&m.pk);
    MP_ERR(&m, "wrong_type", "fw");
    mp_base(&m, 1);
    mp_cstr(&m, "mcc");
    msgpack_pack_double(&m.pk, 250.0);
    MP_ERR(&m, "wrong_type", "mcc");
    mp_base(&m, 1);
    mp_cstr(&m, "mcc");
    msgpack_pack_float(&m.pk, 1.0f);
    MP_ERR(&m, "wrong_type", "mcc");
    mp_base(&m, 1);
    mp_cstr(&m, "seq");
    mp_cstr(&m, "12");
    MP_ERR(&m, "wrong_type", "seq");
    mp_base(&m, 1);
    mp_cstr(&m, "seq");
    msgpack_pack_map(&m.pk, 0);
    MP_ERR(&m, "wrong_type", "seq");
    mp_base(&m, 1);
    mp_cstr(&m, "ts");
    msgpack_pack_ext_with_body(&m.pk, "\0\0\0\0", 4, -1); /* timestamp ext */
    MP_ERR(&m, "wrong_type", "ts");
    mp_base(&m, 1);
    mp_cstr(&m, "ts");
    msgpack_pack_false(&m.pk);
    MP_ERR(&m, "wrong_type", "ts");

    /* integer ranges */
    mp_base(&m, 1);
    mp_cstr(&m, "mcc");
    msgpack_pack_int8(&m.pk, -1);
    MP_ERR(&m, "out_of_range", "mcc");
    mp_base(&m, 1);
    mp_cstr(&m, "mcc");
    msgpack_pack_uint16(&m.pk, 1000);
    MP_ERR(&m, "out_of_range", "mcc");
    mp_base(&m, 1);
    mp_cstr(&m, "mcc");
    msgpack_pack_uint64(&m.pk, UINT64_MAX);
    MP_ERR(&m, "out_of_range", "mcc");
    mp_base(&m, 1);
    mp_cstr(&m, "seq");
    msgpack_pack_int64(&m.pk, INT64_MIN);
    MP_ERR(&m, "out_of_range", "seq");
    mp_base(&m, 1);
    mp_cstr(&m, "ts");
    msgpack_pack_uint64(&m.pk, (uint64_t)INT64_MAX + 1);
    MP_ERR(&m, "out_of_range", "ts");
    mp_base(&m, 1);
    mp_cstr(&m, "ts");
    msgpack_pack_uint64(&m.pk, (uint64_t)INT64_MAX);
    FG_CHECK_INT(mp_parse(&m, &ci, &err), FG_OK);
    FG_CHECK(ci.ts == INT64_MAX);
    mp_base(&m, 1);
    mp_cstr(&m, "ts");
    msgpack_pack_int64(&m.pk, INT64_MIN);
    FG_CHECK_INT(mp_parse(&m, &ci, &err), FG_OK);
    FG_CHECK(ci.ts == INT64_MIN);

    /* Wide encodings of small values are fine (int64 0xd3 carrying 999). */
    {
        const char body[] = "\x84\xa9" "device_id\xa1" "d\xaa" "sku_region\xa2"
                            "CN\xa6" "region\xa2" "CU\xa3" "mcc"
                            "\xd3\x00\x00\x00\x00\x00\x00\x03\xe7";
        FG_CHECK_INT(fg_checkin_parse_msgpack(body, sizeof(body) - 1, &ci, &err),
                     FG_OK);
        FG_CHECK_INT(ci.mcc, 999);
    }

    /* a known key given twice */
    mp_base(&m, 1);
    mp_kv_str(&m, "region", "CU", 2);
    MP_ERR(&m, "invalid_msgpack", "region");

    /* not a map */
    mp_init(&m);
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_map(&m.pk, 0);
    MP_ERR(&m, "not_an_object", NULL);
    mp_init(&m);
    msgpack_pack_int(&m.pk, 7);
    MP_ERR(&m, "not_an_object", NULL);
    mp_init(&m);
    msgpack_pack_map(&m.pk, 0);
    MP_ERR(&m, "missing_field", "device_id");
}

static void test_mp_strings(void)
{
    mp m;
    fg_checkin ci;
    fg_checkin_error err;
    char *s;
    static const struct {
        const char *bytes;
        size_t len;
    } bad_utf8[] = {
        {"\xc0\x80", 2},             /* overlong NUL */
        {"\xc1\xbf", 2},             /* overlong */
        {"\xe0\x80\xaf", 3},         /* overlong '/' */
        {"\xf0\x8f\xbf\xbf", 4},     /* overlong U+FFFF */
        {"\xed\xa0\x80", 3},         /* surrogate U+D800 */
        {"\xed\xbf\xbf", 3},         /* surrogate U+DFFF */
        {"\xf4\x90\x80\x80", 4},     /* U+110000 */
        {"\xf5\x80\x80\x80", 4},     /* lead byte over range */
        {"\xff", 1},
        {"\x80", 1},                 /* lone continuation */
        {"a\xe2\x82", 3},            /* truncated at end */
        {"\xe2\x28\xa1", 3},         /* bad continuation */
        {"\xc3\xa9\xc3", 3},
    };

    for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
        mp_base(&m, 1);
        mp_kv_str(&m, "model", bad_utf8[i].bytes, bad_utf8[i].len);
        MP_ERR(&m, "invalid_value", "model");
        mp_base(&m, 1);
        mp_kv_str(&m, "fw", bad_utf8[i].bytes, bad_utf8[i].len);
        MP_ERR(&m, "invalid_value", "fw");
    }
    /* The largest code points of each length are fine. */
    mp_base(&m, 1);
    mp_kv_str(&m, "model", "\x7e\xdf\xbf\xef\xbf\xbf\xf4\x8f\xbf\xbf\xee\x80\x80", 13);
    FG_CHECK_INT(mp_parse(&m, &ci, &err), FG_OK);
    FG_CHECK_INT(ci.model_len, 13);
    /* NUL, C0 controls and DEL. */
    mp_base(&m, 1);
    mp_kv_str(&m, "model", "a\0b", 3);
    MP_ERR(&m, "invalid_value", "model");
    mp_base(&m, 1);
    mp_kv_str(&m, "fw", "1\x1f", 2);
    MP_ERR(&m, "invalid_value", "fw");
    mp_base(&m, 1);
    mp_kv_str(&m, "fw", "\x7f", 1);
    MP_ERR(&m, "invalid_value", "fw");
    mp_base(&m, 1);
    mp_kv_str(&m, "model", "\r", 1);
    MP_ERR(&m, "invalid_value", "model");
    /* NUL in device_id and regions. */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_str(&m, "device_id", "ab\0", 3);
    mp_kv_str(&m, "sku_region", "CN", 2);
    mp_kv_str(&m, "region", "CU", 2);
    MP_ERR(&m, "invalid_value", "device_id");
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_str(&m, "device_id", "ab", 2);
    mp_kv_str(&m, "sku_region", "CN", 2);
    mp_kv_str(&m, "region", "C\0", 2);
    MP_ERR(&m, "invalid_value", "region");
    /* Lengths in code points: 64 two-byte characters ok, 65 not. */
    s = repeat("\xd0\x96", 64);
    mp_base(&m, 1);
    mp_kv_str(&m, "model", s, strlen(s));
    FG_CHECK_INT(mp_parse(&m, &ci, &err), FG_OK);
    FG_CHECK_INT(ci.model_len, 128);
    free(s);
    s = repeat("\xd0\x96", 65);
    mp_base(&m, 1);
    mp_kv_str(&m, "model", s, strlen(s));
    MP_ERR(&m, "too_long", "model");
    free(s);
    s = repeat("\xf0\x9f\x98\x80", 32);
    mp_base(&m, 1);
    mp_kv_str(&m, "fw", s, strlen(s));
    FG_CHECK_INT(mp_parse(&m, &ci, &err), FG_OK);
    FG_CHECK_INT(ci.fw_len, 128);
    FG_CHECK_STR(ci.fw, s);
    free(s);
    s = repeat("x", 33);
    mp_base(&m, 1);
    mp_kv_str(&m, "fw", s, strlen(s));
    MP_ERR(&m, "too_long", "fw");
    free(s);
    /* device_id 64 / 65 bytes. */
    s = repeat("Z", 65);
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_str(&m, "device_id", s, 64);
    mp_kv_str(&m, "sku_region", "CN", 2);
    mp_kv_str(&m, "region", "CU", 2);
    FG_CHECK_INT(mp_parse(&m, &ci, &err), FG_OK);
    FG_CHECK_INT(ci.device_id_len, 64);
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv_str(&m, "device_id", s, 65);
    mp_kv_str(&m, "sku_region", "CN", 2);
    mp_kv_str(&m, "region", "CU", 2);
    MP_ERR(&m, "too_long", "device_id");
    free(s);
}

/* ---- msgpack: hostile framing ---------------------------------------- */

static void test_mp_prescan(void)
{
    fg_checkin ci;
    fg_checkin_error err;
    rec r;
    mp m;

    /* Huge declared counts in a few bytes: refused before any allocation. */
    RAW_ERR("\xdd\xff\xff\xff\xff", 5, "invalid_msgpack");
    RAW_ERR("\xdf\xff\xff\xff\xff", 5, "invalid_msgpack");
    RAW_ERR("\xdc\xff\xff\x00", 4, "invalid_msgpack");
    RAW_ERR("\x81\xdf\x7f\xff\xff\xff\xc0", 7, "invalid_msgpack");
    RAW_ERR("\xdb\xff\xff\xff\xff" "abc", 8, "invalid_msgpack");
    RAW_ERR("\xc6\xff\xff\xff\xff", 5, "invalid_msgpack");
    RAW_ERR("\xc9\xff\xff\xff\xff\x01", 6, "invalid_msgpack");
    /* A map count needs two bytes per entry. */
    RAW_ERR("\x81\xc0", 2, "invalid_msgpack");
    /* Empty, truncated, trailing bytes, reserved byte. */
    RAW_ERR("", 0, "invalid_msgpack");
    RAW_ERR("\x82\xa1" "a", 3, "invalid_msgpack");
    RAW_ERR("\xcf\x00\x00", 3, "invalid_msgpack");
    RAW_ERR("\xd8\x01\x02", 3, "invalid_msgpack");
    RAW_ERR("\x80\x80", 2, "invalid_msgpack");
    RAW_ERR("\x80\xc0", 2, "invalid_msgpack");
    RAW_ERR("\xc1", 1, "invalid_msgpack");
    RAW_ERR("\x81\xa1" "a\xc1", 4, "invalid_msgpack");
    {
        char batch[5] = "\xdd\xff\xff\xff\xff";
        rec_init(&r);
        FG_CHECK_INT(fg_checkin_batch_parse_msgpack(batch, 5, 1000, rec_cb, &r,
                                                    &err),
                     FG_EINVAL);
        FG_CHECK_STR(err.code, "invalid_msgpack");
        FG_CHECK_INT(r.n, 0);
    }

    /* Depth: 32 nested containers (the map + 31 in an unknown field) are
     * fine, 33 are not. */
    for (int depth = 32; depth <= 33; depth++) {
        mp_base(&m, 1);
        mp_cstr(&m, "deep");
        for (int i = 0; i < depth - 2; i++)
            msgpack_pack_array(&m.pk, 1);
        msgpack_pack_array(&m.pk, 0);
        if (depth == 32)
            FG_CHECK_INT(mp_parse(&m, &ci, &err), FG_OK);
        else
            MP_ERR(&m, "invalid_msgpack", NULL);
    }
    {
        size_t n = 100000;
        char *deep = malloc(n);
        if (!deep)
            abort();
        memset(deep, 0x91, n);
        RAW_ERR(deep, n, "invalid_msgpack");
        rec_init(&r);
        FG_CHECK_INT(fg_checkin_batch_parse_msgpack(deep, n, 1000, rec_cb, &r,
                                                    &err),
                     FG_EINVAL);
        FG_CHECK_STR(err.code, "invalid_msgpack");
        free(deep);
    }
}

/* ---- msgpack batch --------------------------------------------------- */

static void mp_item(mp *m, const char *id, const char *sku, const char *region)
{
    msgpack_pack_map(&m->pk, 3);
    mp_kv_str(m, "device_id", id, strlen(id));
    mp_kv_str(m, "sku_region", sku, strlen(sku));
    mp_kv_str(m, "region", region, strlen(region));
}

static void test_mp_batch(void)
{
    mp m;
    rec r;
    fg_checkin_error err;
    fg_status st;

    mp_init(&m);
    msgpack_pack_array(&m.pk, 5);
    mp_item(&m, "a", "CN", "CU");
    msgpack_pack_str_with_body(&m.pk, "b", 1);
    mp_item(&m, "c", "CN", "cu");
    mp_item(&m, "d", "UA-43", "UA");
    msgpack_pack_nil(&m.pk);
    rec_init(&r);
    st = fg_checkin_batch_parse_msgpack(m.sb.data, m.sb.size, 1000, rec_cb, &r,
                                        &err);
    FG_CHECK_INT(st, FG_OK);
    FG_CHECK_INT(r.n, 5);
    for (size_t i = 0; i < 5; i++)
        FG_CHECK_INT(r.idx[i], i);
    FG_CHECK(r.valid[0] && !r.valid[1] && !r.valid[2] && r.valid[3] &&
             !r.valid[4]);
    FG_CHECK_STR(r.device[0], "a");
    FG_CHECK_STR(r.device[3], "d");
    FG_CHECK_STR(r.code[1], "not_an_object");
    FG_CHECK_STR(r.code[2], "invalid_value");
    FG_CHECK_STR(r.field[2], "region");
    FG_CHECK_STR(r.code[4], "not_an_object");

    /* max_items inclusive, checked on the header before decoding items. */
    rec_init(&r);
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack(m.sb.data, m.sb.size, 5, rec_cb,
                                                &r, &err),
                 FG_OK);
    FG_CHECK_INT(r.n, 5);
    rec_init(&r);
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack(m.sb.data, m.sb.size, 4, rec_cb,
                                                &r, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "too_many_items");
    FG_CHECK_INT(r.n, 0);

    /* A stop status from the callback is returned. */
    rec_init(&r);
    r.stop_at = 0;
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack(m.sb.data, m.sb.size, 5, rec_cb,
                                                &r, &err),
                 FG_AGAIN);
    FG_CHECK_INT(r.n, 1);
    msgpack_sbuffer_destroy(&m.sb);

    /* array16 and array32 headers */
    mp_init(&m);
    msgpack_pack_array(&m.pk, 20);
    for (int i = 0; i < 20; i++)
        mp_item(&m, "x", "CN", "CU");
    rec_init(&r);
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack(m.sb.data, m.sb.size, 1000,
                                                rec_cb, &r, &err),
                 FG_OK);
    FG_CHECK_INT(r.n, 20);
    rec_init(&r);
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack(m.sb.data, m.sb.size, 19,
                                                rec_cb, &r, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "too_many_items");
    FG_CHECK_INT(r.n, 0);
    msgpack_sbuffer_destroy(&m.sb);
    {
        char body[64] = "\xdd\x00\x00\x00\x01\x83";
        size_t n = 6;
        memcpy(body + n, "\xa9" "device_id\xa1" "d", 12);
        n += 12;
        memcpy(body + n, "\xaa" "sku_region\xa2" "CN", 14);
        n += 14;
        memcpy(body + n, "\xa6" "region\xa2" "UA", 10);
        n += 10;
        rec_init(&r);
        FG_CHECK_INT(fg_checkin_batch_parse_msgpack(body, n, 1, rec_cb, &r,
                                                    &err),
                     FG_OK);
        FG_CHECK_INT(r.n, 1);
        FG_CHECK(r.valid[0]);
    }

    /* Whole-body errors. */
    mp_init(&m);
    mp_item(&m, "a", "CN", "CU");
    rec_init(&r);
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack(m.sb.data, m.sb.size, 10,
                                                rec_cb, &r, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "not_an_array");
    FG_CHECK_INT(r.n, 0);
    msgpack_sbuffer_destroy(&m.sb);
    rec_init(&r);
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack("\x90", 1, 10, rec_cb, &r, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "empty_batch");
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack("\xdc\x00\x00", 3, 10, rec_cb,
                                                &r, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "empty_batch");
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack("\x92\x80", 2, 10, rec_cb, &r,
                                                &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_msgpack");
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack("", 0, 10, rec_cb, &r, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_msgpack");
    FG_CHECK_INT(r.n, 0);
}

/* ---- record ---------------------------------------------------------- */

static void fill_full(fg_checkin *ci)
{
    fg_checkin_error err;
    const char *body =
        "{\"device_id\":\"imei:35-1234.x_y\",\"sku_region\":\"UA-43\","
        "\"region\":\"GB-ENG\",\"model\":\"\\u00c9cran \\ud83d\\ude00 8\","
        "\"fw\":\"v1.2\",\"mcc\":255,\"seq\":42,\"ts\":-1718000000000}";
    if (fg_checkin_parse_json(body, strlen(body), ci, &err) != FG_OK)
        abort();
}

static int same_checkin(const fg_checkin *a, const fg_checkin *b)
{
    return strcmp(a->device_id, b->device_id) == 0 &&
           a->device_id_len == b->device_id_len &&
           strcmp(a->sku_region, b->sku_region) == 0 &&
           a->sku_region_len == b->sku_region_len &&
           strcmp(a->region, b->region) == 0 && a->region_len == b->region_len &&
           a->has == b->has && a->model_len == b->model_len &&
           memcmp(a->model, b->model, a->model_len + 1) == 0 &&
           a->fw_len == b->fw_len && memcmp(a->fw, b->fw, a->fw_len + 1) == 0 &&
           a->mcc == b->mcc && a->seq == b->seq && a->ts == b->ts;
}

static void test_record_roundtrip(void)
{
    fg_checkin ci, back;
    fg_checkin_meta meta;
    fg_checkin_error err;
    char out[FG_CHECKIN_RECORD_MAX];
    size_t n;

    fill_full(&ci);
    n = fg_checkin_encode(&ci, 1718000000999LL, "gw-a:1", out, sizeof(out));
    FG_CHECK(n > 0);
    memset(&back, 0x5a, sizeof(back));
    memset(&meta, 0x5a, sizeof(meta));
    FG_CHECK_INT(fg_checkin_decode_record(out, n, &back, &meta, &err), FG_OK);
    FG_CHECK(same_checkin(&ci, &back));
    FG_CHECK_INT(back.has, 31);
    FG_CHECK_INT(back.ts, -1718000000000LL);
    FG_CHECK_INT(meta.v, 1);
    FG_CHECK_INT(meta.recv_ts, 1718000000999LL);
    FG_CHECK_STR(meta.gw, "gw-a:1");
    /* meta may be NULL */
    FG_CHECK_INT(fg_checkin_decode_record(out, n, &back, NULL, &err), FG_OK);

    /* Optional fields absent: they stay absent. */
    JSON_OK(with_extra(""), &ci);
    n = fg_checkin_encode(&ci, -7, "", out, sizeof(out));
    FG_CHECK(n > 0);
    memset(&back, 0x5a, sizeof(back));
    FG_CHECK_INT(fg_checkin_decode_record(out, n, &back, &meta, &err), FG_OK);
    FG_CHECK(same_checkin(&ci, &back));
    FG_CHECK_INT(back.has, 0);
    FG_CHECK_INT(meta.recv_ts, -7);
    FG_CHECK_STR(meta.gw, "");

    /* Each optional field alone, at its extremes. */
    static const char *const extras[] = {
        ",\"model\":\"\"", ",\"fw\":\"x\"", ",\"mcc\":0", ",\"mcc\":999",
        ",\"seq\":0", ",\"seq\":9223372036854775807",
        ",\"ts\":-9223372036854775808", ",\"ts\":9223372036854775807"};
    for (size_t i = 0; i < sizeof(extras) / sizeof(extras[0]); i++) {
        JSON_OK(with_extra(extras[i]), &ci);
        n = fg_checkin_encode(&ci, 0, "g", out, sizeof(out));
        FG_CHECK(n > 0);
        FG_CHECK_INT(fg_checkin_decode_record(out, n, &back, NULL, &err), FG_OK);
        FG_CHECK(same_checkin(&ci, &back));
    }
    /* seq beyond JSON's reach: full uint64 from msgpack. */
    {
        mp m;
        mp_base(&m, 1);
        mp_cstr(&m, "seq");
        msgpack_pack_uint64(&m.pk, UINT64_MAX);
        FG_CHECK_INT(mp_parse(&m, &ci, &err), FG_OK);
        n = fg_checkin_encode(&ci, 0, "g", out, sizeof(out));
        FG_CHECK_INT(fg_checkin_decode_record(out, n, &back, NULL, &err), FG_OK);
        FG_CHECK(back.seq == UINT64_MAX);
    }
}

static void test_record_sizes(void)
{
    fg_checkin ci, back;
    fg_checkin_error err;
    char out[FG_CHECKIN_RECORD_MAX + 64];
    char gw[FG_GW_ID_MAX + 2];
    char body[2048];
    char *id = repeat("d", 64), *model = repeat("\xf0\x9f\x98\x80", 64);
    char *fw = repeat("\xf0\x9f\x98\x80", 32);
    size_t n;

    /* The largest record fits in FG_CHECKIN_RECORD_MAX. */
    snprintf(body, sizeof(body),
             "{\"device_id\":\"%s\",\"sku_region\":\"UA-ABC\",\"region\":"
             "\"GB-ENG\",\"model\":\"%s\",\"fw\":\"%s\",\"mcc\":999,"
             "\"seq\":9223372036854775807,\"ts\":-9223372036854775808}",
             id, model, fw);
    JSON_OK(body, &ci);
    memset(gw, 'g', FG_GW_ID_MAX);
    gw[FG_GW_ID_MAX] = '\0';
    n = fg_checkin_encode(&ci, INT64_MIN, gw, out, FG_CHECKIN_RECORD_MAX);
    FG_CHECK(n > 0 && n <= FG_CHECKIN_RECORD_MAX);
    FG_CHECK_INT(fg_checkin_decode_record(out, n, &back, NULL, &err), FG_OK);
    FG_CHECK(same_checkin(&ci, &back));

    /* Every cap below the needed length fails; the exact length works. */
    {
        int all_zero = 1;
        for (size_t cap = 0; cap < n; cap++) {
            if (fg_checkin_encode(&ci, INT64_MIN, gw, out, cap) != 0)
                all_zero = 0;
        }
        FG_CHECK(all_zero);
        FG_CHECK_INT(fg_checkin_encode(&ci, INT64_MIN, gw, out, n), n);
    }
    /* A cap too small never writes past it. */
    memset(out, 0x77, sizeof(out));
    FG_CHECK_INT(fg_checkin_encode(&ci, 0, gw, out, 100), 0);
    FG_CHECK((unsigned char)out[100] == 0x77);

    /* gw_id longer than FG_GW_ID_MAX is refused; NULL is "". */
    memset(gw, 'g', FG_GW_ID_MAX + 1);
    gw[FG_GW_ID_MAX + 1] = '\0';
    FG_CHECK_INT(fg_checkin_encode(&ci, 0, gw, out, sizeof(out)), 0);
    n = fg_checkin_encode(&ci, 0, NULL, out, sizeof(out));
    FG_CHECK(n > 0);
    {
        fg_checkin_meta meta;
        FG_CHECK_INT(fg_checkin_decode_record(out, n, &back, &meta, &err), FG_OK);
        FG_CHECK_STR(meta.gw, "");
    }
    free(id);
    free(model);
    free(fw);
}

/* The record on the wire: a msgpack map with exactly the documented keys. */
static void test_record_wire(void)
{
    fg_checkin ci;
    char out[FG_CHECKIN_RECORD_MAX];
    size_t n, off = 0;
    msgpack_unpacked up;
    char keys[512] = "";

    fill_full(&ci);
    n = fg_checkin_encode(&ci, 5, "gw1", out, sizeof(out));
    msgpack_unpacked_init(&up);
    FG_CHECK_INT(msgpack_unpack_next(&up, out, n, &off), MSGPACK_UNPACK_SUCCESS);
    FG_CHECK_INT(off, n);
    FG_CHECK_INT(up.data.type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; up.data.type == MSGPACK_OBJECT_MAP &&
                         i < up.data.via.map.size; i++) {
        const msgpack_object_kv *kv = &up.data.via.map.ptr[i];
        FG_CHECK_INT(kv->key.type, MSGPACK_OBJECT_STR);
        strncat(keys, kv->key.via.str.ptr, kv->key.via.str.size);
        strcat(keys, ",");
        if (kv->key.via.str.size == 1 && kv->key.via.str.ptr[0] == 'v') {
            FG_CHECK_INT(kv->val.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
            FG_CHECK_INT(kv->val.via.u64, 1);
        }
    }
    FG_CHECK_STR(keys, "device_id,sku_region,region,model,fw,mcc,seq,ts,v,"
                       "recv_ts,gw,");
    msgpack_unpacked_destroy(&up);
}

/* Hand-made records: decode_record re-validates everything. */
static void test_record_decode_errors(void)
{
    fg_checkin ci;
    fg_checkin_error err;
    mp m;

    struct {
        int v_kind;        /* 0 absent, 1 int, 2 string */
        int64_t v;
        int recv;          /* 0 absent, 1 int, 2 float */
        int gw;            /* 0 absent, 1 ok, 2 too long, 3 int, 4 NUL */
        const char *code, *field;
    } cases[] = {
        {1, 1, 1, 1, NULL, NULL},
        {0, 0, 1, 1, "missing_field", "v"},
        {1, 2, 1, 1, "invalid_value", "v"},
        {1, 0, 1, 1, "invalid_value", "v"},
        {1, -1, 1, 1, "out_of_range", "v"},
        {2, 0, 1, 1, "wrong_type", "v"},
        {1, 1, 0, 1, "missing_field", "recv_ts"},
        {1, 1, 2, 1, "wrong_type", "recv_ts"},
        {1, 1, 1, 0, "missing_field", "gw"},
        {1, 1, 1, 2, "too_long", "gw"},
        {1, 1, 1, 3, "wrong_type", "gw"},
        {1, 1, 1, 4, "invalid_value", "gw"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char longgw[FG_GW_ID_MAX + 1];
        fg_status st;
        int ok;
        memset(longgw, 'g', sizeof(longgw));
        mp_base(&m, (cases[i].v_kind ? 1 : 0) + (cases[i].recv ? 1 : 0) +
                        (cases[i].gw ? 1 : 0));
        if (cases[i].v_kind == 1) {
            mp_cstr(&m, "v");
            msgpack_pack_int64(&m.pk, cases[i].v);
        } else if (cases[i].v_kind == 2) {
            mp_kv_str(&m, "v", "1", 1);
        }
        if (cases[i].recv == 1) {
            mp_cstr(&m, "recv_ts");
            msgpack_pack_int64(&m.pk, 12);
        } else if (cases[i].recv == 2) {
            mp_cstr(&m, "recv_ts");
            msgpack_pack_double(&m.pk, 12.0);
        }
        if (cases[i].gw == 1)
            mp_kv_str(&m, "gw", "gw-1", 4);
        else if (cases[i].gw == 2)
            mp_kv_str(&m, "gw", longgw, sizeof(longgw));
        else if (cases[i].gw == 3) {
            mp_cstr(&m, "gw");
            msgpack_pack_int(&m.pk, 3);
        } else if (cases[i].gw == 4)
            mp_kv_str(&m, "gw", "g\0w", 3);
        st = fg_checkin_decode_record(m.sb.data, m.sb.size, &ci, NULL, &err);
        msgpack_sbuffer_destroy(&m.sb);
        if (!cases[i].code)
            ok = st == FG_OK;
        else
            ok = st == FG_EINVAL && err.code && err.field &&
                 strcmp(err.code, cases[i].code) == 0 &&
                 strcmp(err.field, cases[i].field) == 0;
        FG_CHECK(ok);
        if (!ok)
            fprintf(stderr, "  record case %zu: %d %s/%s (%s)\n", i, st,
                    err.code ? err.code : "-", err.field ? err.field : "-",
                    err.detail);
    }

    /* Schema fields are re-validated: a bad region in a record. */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 6);
    mp_kv_str(&m, "device_id", "d", 1);
    mp_kv_str(&m, "sku_region", "CN", 2);
    mp_kv_str(&m, "region", "Cuba", 4);
    mp_cstr(&m, "v");
    msgpack_pack_int(&m.pk, 1);
    mp_cstr(&m, "recv_ts");
    msgpack_pack_int(&m.pk, 1);
    mp_kv_str(&m, "gw", "g", 1);
    FG_CHECK_INT(fg_checkin_decode_record(m.sb.data, m.sb.size, &ci, NULL, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_value");
    FG_CHECK_STR(err.field, "region");
    msgpack_sbuffer_destroy(&m.sb);

    /* Framing: truncated record, trailing byte, JSON bytes. */
    {
        char out[FG_CHECKIN_RECORD_MAX + 1];
        size_t n;
        fill_full(&ci);
        n = fg_checkin_encode(&ci, 1, "g", out, sizeof(out));
        FG_CHECK_INT(fg_checkin_decode_record(out, n - 1, &ci, NULL, &err),
                     FG_EINVAL);
        FG_CHECK_STR(err.code, "invalid_msgpack");
        out[n] = '\0';
        FG_CHECK_INT(fg_checkin_decode_record(out, n + 1, &ci, NULL, &err),
                     FG_EINVAL);
        FG_CHECK_STR(err.code, "invalid_msgpack");
        FG_CHECK_INT(fg_checkin_decode_record("{}", 2, &ci, NULL, &err),
                     FG_EINVAL);
    }
}

/* ---- msgpack: every encoding, read in place -------------------------- */

/* A hand-made msgpack body, for encodings msgpack_packer never picks (str 8
 * keys, int 64 for small values, ...). */
typedef struct raw {
    char b[1024];
    size_t n;
} raw;

static void raw_bytes(raw *r, const void *p, size_t n)
{
    if (n > sizeof(r->b) - r->n)
        abort();
    memcpy(r->b + r->n, p, n);
    r->n += n;
}

static void raw_u8(raw *r, unsigned v)
{
    unsigned char c = (unsigned char)v;
    raw_bytes(r, &c, 1);
}

/* v big-endian in width bytes. */
static void raw_be(raw *r, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--)
        raw_u8(r, (unsigned)(v >> (8 * i)) & 0xffu);
}

/* A str of the given width: 0 fixstr, 1, 2 or 4 for str 8/16/32. */
static void raw_str(raw *r, int width, const char *s)
{
    size_t n = strlen(s);
    if (width == 0)
        raw_u8(r, 0xa0u | (unsigned)n);
    else {
        raw_u8(r, width == 1 ? 0xd9 : width == 2 ? 0xda : 0xdb);
        raw_be(r, n, width);
    }
    raw_bytes(r, s, n);
}

/* A map (fixmap up to 15 pairs, else map 16) of the three required fields
 * plus `extra` more pairs. */
static void raw_base(raw *r, unsigned extra)
{
    r->n = 0;
    if (3 + extra <= 15) {
        raw_u8(r, 0x80u | (3 + extra));
    } else {
        raw_u8(r, 0xde);
        raw_be(r, 3 + extra, 2);
    }
    raw_str(r, 0, "device_id");
    raw_str(r, 0, "dev-1");
    raw_str(r, 0, "sku_region");
    raw_str(r, 0, "CN");
    raw_str(r, 0, "region");
    raw_str(r, 0, "CU");
}

/* Expects r to parse (single) with code/field, or FG_OK when code is NULL. */
static void raw_expect_at(int line, const raw *r, const char *code,
                          const char *field, fg_checkin *ci)
{
    fg_checkin_error err;
    fg_status st = fg_checkin_parse_msgpack(r->b, r->n, ci, &err);
    int ok = st == FG_OK;
    if (code)
        ok = st == FG_EINVAL && err.code && strcmp(err.code, code) == 0 &&
             ((field == NULL && err.field == NULL) ||
              (field && err.field && strcmp(err.field, field) == 0));
    FG_CHECK(ok);
    if (!ok)
        fprintf(stderr, "  line %d: got %d %s/%s (%s), want %s/%s\n", line, st,
                err.code ? err.code : "-", err.field ? err.field : "-",
                err.detail, code ? code : "ok", field ? field : "-");
}
#define RAW_EXPECT(r, code, field, ci) \
    raw_expect_at(__LINE__, r, code, field, ci)

/* Integers of every width and signedness, as the schema sees them. */
static void test_mp_int_widths(void)
{
    static const struct {
        const char *key;
        const char *bytes;
        size_t len;
        const char *code; /* NULL: accepted with value */
        int64_t value;    /* seq as int64_t bits, ts, mcc */
    } cases[] = {
        {"seq", "\x7f", 1, NULL, 127},
        {"seq", "\xcc\xff", 2, NULL, 255},
        {"seq", "\xcd\x01\x00", 3, NULL, 256},
        {"seq", "\xce\xff\xff\xff\xff", 5, NULL, 4294967295LL},
        {"seq", "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, NULL, -1 /* max */},
        {"seq", "\xd0\x05", 2, NULL, 5},
        {"seq", "\xd1\x7f\xff", 3, NULL, 32767},
        {"seq", "\xd2\x7f\xff\xff\xff", 5, NULL, 2147483647LL},
        {"seq", "\xd3\x7f\xff\xff\xff\xff\xff\xff\xff", 9, NULL, INT64_MAX},
        {"seq", "\xd0\xff", 2, "out_of_range", 0},
        {"seq", "\xe0", 1, "out_of_range", 0},
        {"seq", "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9, "out_of_range", 0},
        {"ts", "\xff", 1, NULL, -1},
        {"ts", "\xe0", 1, NULL, -32},
        {"ts", "\xd0\x80", 2, NULL, -128},
        {"ts", "\xd1\x80\x00", 3, NULL, -32768},
        {"ts", "\xd2\x80\x00\x00\x00", 5, NULL, -2147483648LL},
        {"ts", "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9, NULL, INT64_MIN},
        {"ts", "\xd3\xff\xff\xff\xff\xff\xff\xff\xfe", 9, NULL, -2},
        {"ts", "\xce\xff\xff\xff\xff", 5, NULL, 4294967295LL},
        {"ts", "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", 9, NULL, INT64_MAX},
        {"ts", "\xcf\x80\x00\x00\x00\x00\x00\x00\x00", 9, "out_of_range", 0},
        {"ts", "\xca\x3f\x80\x00\x00", 5, "wrong_type", 0},
        {"mcc", "\xd3\x00\x00\x00\x00\x00\x00\x03\xe7", 9, NULL, 999},
        {"mcc", "\xcd\x03\xe8", 3, "out_of_range", 0},
        {"mcc", "\xd1\xff\xff", 3, "out_of_range", 0},
        {"mcc", "\xcb\x40\x6f\x40\x00\x00\x00\x00\x00", 9, "wrong_type", 0},
        {"mcc", "\xc0", 1, NULL, -7 /* nil: absent */},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        raw r;
        fg_checkin ci;
        raw_base(&r, 1);
        raw_str(&r, 0, cases[i].key);
        raw_bytes(&r, cases[i].bytes, cases[i].len);
        RAW_EXPECT(&r, cases[i].code, cases[i].code ? cases[i].key : NULL,
                   &ci);
        if (cases[i].code)
            continue;
        if (strcmp(cases[i].key, "seq") == 0) {
            FG_CHECK_INT(ci.has, FG_CHECKIN_HAS_SEQ);
            FG_CHECK(ci.seq == (uint64_t)cases[i].value);
        } else if (strcmp(cases[i].key, "ts") == 0) {
            FG_CHECK_INT(ci.has, FG_CHECKIN_HAS_TS);
            FG_CHECK(ci.ts == cases[i].value);
        } else if (cases[i].value < 0) {
            FG_CHECK_INT(ci.has, 0);
        } else {
            FG_CHECK_INT(ci.has, FG_CHECKIN_HAS_MCC);
            FG_CHECK_INT(ci.mcc, cases[i].value);
        }
    }
}

/* Keys and values as str 8/16/32; unknown values and non-str keys of every
 * type are stepped over whole. */
static void test_mp_encodings(void)
{
    raw r;
    fg_checkin ci;
    char long_model[41];

    /* Keys and values in every str width. */
    memset(long_model, 'm', 40);
    long_model[40] = '\0';
    r.n = 0;
    raw_u8(&r, 0xde);
    raw_be(&r, 5, 2); /* map 16 */
    raw_str(&r, 1, "device_id");
    raw_str(&r, 2, "dev-wide");
    raw_str(&r, 2, "sku_region");
    raw_str(&r, 4, "CN");
    raw_str(&r, 4, "region");
    raw_str(&r, 1, "UA-43");
    raw_str(&r, 0, "model");
    raw_str(&r, 1, long_model);
    raw_str(&r, 4, "fw");
    raw_str(&r, 1, "");
    RAW_EXPECT(&r, NULL, NULL, &ci);
    FG_CHECK_STR(ci.device_id, "dev-wide");
    FG_CHECK_STR(ci.sku_region, "CN");
    FG_CHECK_STR(ci.region, "UA-43");
    FG_CHECK_INT(ci.model_len, 40);
    FG_CHECK_INT(ci.fw_len, 0);
    FG_CHECK_INT(ci.has, FG_CHECKIN_HAS_MODEL | FG_CHECKIN_HAS_FW);
    /* map 32 header */
    r.n = 0;
    raw_u8(&r, 0xdf);
    raw_be(&r, 3, 4);
    raw_str(&r, 0, "device_id");
    raw_str(&r, 0, "d");
    raw_str(&r, 0, "sku_region");
    raw_str(&r, 0, "CN");
    raw_str(&r, 0, "region");
    raw_str(&r, 0, "CU");
    RAW_EXPECT(&r, NULL, NULL, &ci);

    /* Unknown fields holding every other type, then a schema field. */
    {
        static const struct {
            const char *bytes;
            size_t len;
        } unknown[] = {
            {"\xc4\x02xy", 4},                       /* bin 8 */
            {"\xc5\x00\x01z", 4},                    /* bin 16 */
            {"\xc6\x00\x00\x00\x00", 5},             /* bin 32 */
            {"\xc7\x01\x05q", 4},                    /* ext 8 */
            {"\xc8\x00\x00\x05", 4},                 /* ext 16 */
            {"\xc9\x00\x00\x00\x02\x05qq", 8},        /* ext 32 */
            {"\xd4\x01q", 3},                        /* fixext 1 */
            {"\xd5\x01qq", 4},                       /* fixext 2 */
            {"\xd6\x01qqqq", 6},                     /* fixext 4 */
            {"\xd7\x01qqqqqqqq", 10},                /* fixext 8 */
            {"\xd8\x01qqqqqqqqqqqqqqqq", 18},        /* fixext 16 */
            {"\xca\x00\x00\x00\x00", 5},             /* float 32 */
            {"\xcb\x00\x00\x00\x00\x00\x00\x00\x00", 9}, /* float 64 */
            {"\xc3", 1},                              /* true */
            {"\xd2\xff\xff\xff\xff", 5},             /* int 32 */
            /* array 16 of map 16 of (str 32 key, array 32 of nil) */
            {"\xdc\x00\x01\xde\x00\x01\xdb\x00\x00\x00\x01k"
             "\xdd\x00\x00\x00\x01\xc0",
             18},
        };
        size_t nu = sizeof(unknown) / sizeof(unknown[0]);
        raw_base(&r, (unsigned)nu + 1);
        for (size_t i = 0; i < nu; i++) {
            char key[2] = {(char)('a' + i), '\0'};
            raw_str(&r, 0, key);
            raw_bytes(&r, unknown[i].bytes, unknown[i].len);
        }
        raw_str(&r, 0, "seq");
        raw_u8(&r, 0x2a);
    }
    RAW_EXPECT(&r, NULL, NULL, &ci);
    FG_CHECK(ci.seq == 42);
    FG_CHECK_INT(ci.has, FG_CHECKIN_HAS_SEQ);

    /* Keys that are not str: the pair is skipped, whatever the value. */
    raw_base(&r, 7);
    raw_bytes(&r, "\x01\xa2" "XX", 4);                    /* int key */
    raw_bytes(&r, "\xc0\xa2" "XX", 4);                    /* nil key */
    raw_bytes(&r, "\xc4\x06" "region\xa2" "XX", 11);      /* bin key */
    raw_bytes(&r, "\x92\xa6" "region\x80\xa2" "XX", 12);  /* array key */
    raw_bytes(&r, "\x81\xa3" "seq\x91\x01\x05", 8);       /* map key */
    raw_bytes(&r, "\xd4\x00\x00\x91\xc0", 5);             /* fixext key */
    raw_bytes(&r, "\xca\x00\x00\x00\x00\xc3", 6);         /* float key */
    RAW_EXPECT(&r, NULL, NULL, &ci);
    FG_CHECK_STR(ci.region, "CU");
    FG_CHECK_INT(ci.has, 0);
    /* ... and a container key counts towards the nesting limit. */
    for (int depth = 32; depth <= 33; depth++) {
        raw_base(&r, 1);
        for (int i = 0; i < depth - 2; i++)
            raw_u8(&r, 0x91);
        raw_u8(&r, 0x90);
        raw_u8(&r, 0xc0);
        RAW_EXPECT(&r, depth == 32 ? NULL : "invalid_msgpack", NULL, &ci);
    }

    /* A schema value of a type the schema does not take: wrong_type, named. */
    {
        static const struct {
            const char *bytes;
            size_t len;
            const char *type;
        } other[] = {
            {"\xc4\x01x", 3, "bin"},
            {"\xd4\x01x", 3, "ext"},
            {"\xc7\x00\x01", 3, "ext"},
            {"\xc2", 1, "boolean"},
            {"\xca\x00\x00\x00\x00", 5, "float"},
            {"\x90", 1, "array"},
            {"\x80", 1, "map"},
            {"\x05", 1, "integer"},
        };
        for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
            fg_checkin_error err;
            raw_base(&r, 1);
            raw_str(&r, 0, "model");
            raw_bytes(&r, other[i].bytes, other[i].len);
            FG_CHECK_INT(fg_checkin_parse_msgpack(r.b, r.n, &ci, &err),
                         FG_EINVAL);
            FG_CHECK_STR(err.code, "wrong_type");
            FG_CHECK_STR(err.field, "model");
            FG_CHECK(strstr(err.detail, other[i].type) != NULL);
        }
    }
}

/* Framing: truncation anywhere, trailing bytes, huge declared sizes in any
 * position, duplicates against damage further on. */
static void test_mp_reader_framing(void)
{
    fg_checkin ci;
    fg_checkin_error err;
    raw r, item;
    rec rc;
    mp m;
    char out[FG_CHECKIN_RECORD_MAX + 1];
    size_t n;

    /* Every proper prefix of a record, and the record plus one byte, is
     * invalid_msgpack to all three readers; no batch callback is made. */
    fill_full(&ci);
    n = fg_checkin_encode(&ci, 77, "gw-1", out, sizeof(out));
    FG_CHECK(n > 0);
    {
        int bad_single = 0, bad_record = 0, bad_batch = 0;
        char body[FG_CHECKIN_RECORD_MAX + 2];
        body[0] = (char)0x91; /* a batch of the same bytes */
        memcpy(body + 1, out, n);
        out[n] = '\0';
        body[n + 1] = '\0';
        for (size_t k = 0; k <= n + 1; k++) {
            const char *want = k == n ? NULL : "invalid_msgpack";
            fg_status st;
            st = fg_checkin_parse_msgpack(out, k, &ci, &err);
            if (want ? st != FG_EINVAL || strcmp(err.code, want) != 0
                     : st != FG_OK)
                bad_single++;
            st = fg_checkin_decode_record(out, k, &ci, NULL, &err);
            if (want ? st != FG_EINVAL || strcmp(err.code, want) != 0
                     : st != FG_OK)
                bad_record++;
            rec_init(&rc);
            st = fg_checkin_batch_parse_msgpack(body, k + 1, 10, rec_cb, &rc,
                                                &err);
            if (want ? st != FG_EINVAL || strcmp(err.code, want) != 0 ||
                           rc.n != 0
                     : st != FG_OK || rc.n != 1 || !rc.valid[0])
                bad_batch++;
        }
        FG_CHECK_INT(bad_single, 0);
        FG_CHECK_INT(bad_record, 0);
        FG_CHECK_INT(bad_batch, 0);
    }

    /* Sizes declared far past the end, as a value, a key and an item. */
    {
        static const struct {
            const char *bytes;
            size_t len;
        } huge[] = {
            {"\xdb\xff\xff\xff\xff", 5},      /* str 32 */
            {"\xda\x01\x00", 3},              /* str 16 */
            {"\xd9\x02", 2},                  /* str 8 */
            {"\xc6\xff\xff\xff\xff", 5},      /* bin 32 */
            {"\xc9\x7f\xff\xff\xff\x01", 6},  /* ext 32 */
            {"\xc7\x00", 2},                  /* ext 8 without its type */
            {"\xd8\x01", 2},                  /* fixext 16 */
            {"\xdd\xff\xff\xff\xff", 5},      /* array 32 */
            {"\xdf\x80\x00\x00\x00", 5},      /* map 32 */
            {"\xde\x00\x01\xc0", 4},          /* map 16: one pair, 1 byte */
            {"\xcf\x00", 2},                  /* uint 64 */
            {"\xd3", 1},                      /* int 64 */
        };
        for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
            raw_base(&r, 1);
            raw_str(&r, 0, "model");
            raw_bytes(&r, huge[i].bytes, huge[i].len);
            RAW_EXPECT(&r, "invalid_msgpack", NULL, &ci);
            raw_base(&r, 1);
            raw_bytes(&r, huge[i].bytes, huge[i].len);
            RAW_EXPECT(&r, "invalid_msgpack", NULL, &ci);
            FG_CHECK_INT(fg_checkin_decode_record(r.b, r.n, &ci, NULL, &err),
                         FG_EINVAL);
            FG_CHECK_STR(err.code, "invalid_msgpack");
            raw_base(&item, 0);
            r.n = 0;
            raw_u8(&r, 0x92);
            raw_bytes(&r, item.b, item.n);
            raw_bytes(&r, huge[i].bytes, huge[i].len);
            rec_init(&rc);
            FG_CHECK_INT(fg_checkin_batch_parse_msgpack(r.b, r.n, 10, rec_cb,
                                                        &rc, &err),
                         FG_EINVAL);
            FG_CHECK_STR(err.code, "invalid_msgpack");
            FG_CHECK_INT(rc.n, 0);
        }
    }
    FG_CHECK_INT(fg_checkin_decode_record("\xdf\xff\xff\xff\xff", 5, &ci, NULL,
                                          &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_msgpack");

    /* Not a map, but broken inside: the damage is reported. */
    RAW_ERR("\x91\xc1", 2, "invalid_msgpack");
    RAW_ERR("\x92\x01", 2, "invalid_msgpack");
    RAW_ERR("\xa1", 1, "invalid_msgpack");
    RAW_ERR("\x01\x02", 2, "invalid_msgpack");
    RAW_ERR("\x91\x01", 2, "not_an_object");
    RAW_ERR("\xc4\x00", 2, "not_an_object");

    /* A duplicate schema key; a nil counts as given. */
    raw_base(&r, 1);
    raw_str(&r, 1, "region"); /* the same key as str 8 */
    raw_str(&r, 0, "UA");
    RAW_EXPECT(&r, "invalid_msgpack", "region", &ci);
    raw_base(&r, 2);
    raw_str(&r, 0, "model");
    raw_u8(&r, 0xc0);
    raw_str(&r, 0, "model");
    raw_str(&r, 0, "Pixel");
    RAW_EXPECT(&r, "invalid_msgpack", "model", &ci);
    FG_CHECK_INT(fg_checkin_parse_msgpack(r.b, r.n, &ci, &err), FG_EINVAL);
    FG_CHECK(strstr(err.detail, "duplicate") != NULL);
    /* ... but a body broken after the duplicate is reported as broken. */
    r.b[0] = (char)0x86;
    raw_str(&r, 0, "x");
    raw_u8(&r, 0xc1);
    RAW_EXPECT(&r, "invalid_msgpack", NULL, &ci);
    r.b[0] = (char)0x85;
    r.n -= 3;
    raw_u8(&r, 0x00); /* trailing byte */
    RAW_EXPECT(&r, "invalid_msgpack", NULL, &ci);
    /* Unknown keys may repeat; so may record keys in a check-in body, but
     * not in a record. */
    raw_base(&r, 4);
    raw_str(&r, 0, "x");
    raw_u8(&r, 1);
    raw_str(&r, 0, "x");
    raw_u8(&r, 2);
    raw_str(&r, 0, "v");
    raw_u8(&r, 1);
    raw_str(&r, 0, "v");
    raw_u8(&r, 1);
    RAW_EXPECT(&r, NULL, NULL, &ci);
    FG_CHECK_INT(fg_checkin_decode_record(r.b, r.n, &ci, NULL, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_msgpack");
    FG_CHECK_STR(err.field, "v");

    /* A record written with other encodings than fg_checkin_encode's. */
    r.n = 0;
    raw_u8(&r, 0x86);
    raw_str(&r, 1, "gw");
    raw_str(&r, 2, "g");
    raw_str(&r, 0, "recv_ts");
    raw_bytes(&r, "\xd3\xff\xff\xff\xff\xff\xff\xff\xfd", 9);
    raw_str(&r, 4, "v");
    raw_bytes(&r, "\xcf\x00\x00\x00\x00\x00\x00\x00\x01", 9);
    raw_str(&r, 0, "region");
    raw_str(&r, 0, "CU");
    raw_str(&r, 0, "sku_region");
    raw_str(&r, 0, "CN");
    raw_str(&r, 0, "device_id");
    raw_str(&r, 0, "d");
    {
        fg_checkin_meta meta;
        FG_CHECK_INT(fg_checkin_decode_record(r.b, r.n, &ci, &meta, &err),
                     FG_OK);
        FG_CHECK_INT(meta.v, 1);
        FG_CHECK_INT(meta.recv_ts, -3);
        FG_CHECK_STR(meta.gw, "g");
    }

    /* msgpack_packer's own output still reads (sanity for the builders). */
    mp_base(&m, 0);
    FG_CHECK_INT(mp_parse(&m, &ci, &err), FG_OK);
}

/* Batch bodies through the reader: item map widths, nesting counted from
 * the array, damage anywhere stops the batch before any callback. */
static void test_mp_batch_reader(void)
{
    fg_checkin_error err;
    rec rc;
    raw r;
    raw item;

    /* Items as fixmap, map 16 and map 32; a duplicate in one item refuses
     * that item only; an array item is not_an_object and is not entered. */
    raw_base(&item, 0);
    r.n = 0;
    raw_u8(&r, 0x95);
    raw_bytes(&r, item.b, item.n);
    raw_u8(&r, 0xde);
    raw_be(&r, 3, 2);
    raw_bytes(&r, item.b + 1, item.n - 1);
    raw_u8(&r, 0xdf);
    raw_be(&r, 4, 4);
    raw_bytes(&r, item.b + 1, item.n - 1);
    raw_str(&r, 0, "sku_region");
    raw_str(&r, 0, "CN");
    raw_u8(&r, 0x91);
    raw_bytes(&r, item.b, item.n);
    raw_bytes(&r, item.b, item.n);
    rec_init(&rc);
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack(r.b, r.n, 10, rec_cb, &rc,
                                                &err),
                 FG_OK);
    FG_CHECK_INT(rc.n, 5);
    FG_CHECK(rc.valid[0] && rc.valid[1] && !rc.valid[2] && !rc.valid[3] &&
             rc.valid[4]);
    FG_CHECK_STR(rc.code[2], "invalid_msgpack");
    FG_CHECK_STR(rc.field[2], "sku_region");
    FG_CHECK_STR(rc.code[3], "not_an_object");
    FG_CHECK_STR(rc.device[4], "dev-1");

    /* Nesting: the array is level 1 and the item 2, so an unknown field
     * may hold 30 more levels, not 31. */
    for (int depth = 32; depth <= 33; depth++) {
        raw_base(&item, 1);
        raw_str(&item, 0, "deep");
        for (int i = 0; i < depth - 3; i++)
            raw_u8(&item, 0x91);
        raw_u8(&item, 0x90);
        r.n = 0;
        raw_u8(&r, 0x92);
        raw_bytes(&r, item.b, item.n);
        raw_bytes(&r, item.b, item.n);
        rec_init(&rc);
        FG_CHECK_INT(fg_checkin_batch_parse_msgpack(r.b, r.n, 10, rec_cb, &rc,
                                                    &err),
                     depth == 32 ? FG_OK : FG_EINVAL);
        FG_CHECK_INT(rc.n, depth == 32 ? 2 : 0);
        if (depth == 33)
            FG_CHECK_STR(err.code, "invalid_msgpack");
    }

    /* Good items, then damage: no callback at all. */
    raw_base(&item, 0);
    {
        static const struct {
            const char *tail;
            size_t len;
            unsigned count;
        } bad[] = {
            {"\xc1", 1, 3},         /* reserved byte */
            {"\x81\xa1x", 3, 3},    /* truncated item */
            {"\x80\x80", 2, 3},     /* one item too many */
            {"", 0, 3},             /* one item missing */
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            r.n = 0;
            raw_u8(&r, 0x90u | bad[i].count);
            raw_bytes(&r, item.b, item.n);
            raw_bytes(&r, item.b, item.n);
            raw_bytes(&r, bad[i].tail, bad[i].len);
            rec_init(&rc);
            FG_CHECK_INT(fg_checkin_batch_parse_msgpack(r.b, r.n, 10, rec_cb,
                                                        &rc, &err),
                         FG_EINVAL);
            FG_CHECK_STR(err.code, "invalid_msgpack");
            FG_CHECK_INT(rc.n, 0);
        }
    }
    /* Broken and too many items: broken wins; not an array but broken:
     * broken wins. */
    rec_init(&rc);
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack("\x93\x80\x80", 3, 1, rec_cb,
                                                &rc, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_msgpack");
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack("\x81\x01", 2, 1, rec_cb, &rc,
                                                &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "invalid_msgpack");
    FG_CHECK_INT(fg_checkin_batch_parse_msgpack("\x81\x01\x02", 3, 1, rec_cb,
                                                &rc, &err),
                 FG_EINVAL);
    FG_CHECK_STR(err.code, "not_an_array");
    FG_CHECK_INT(rc.n, 0);
}

FG_TEST_MAIN(test_json_full, test_json_minimal_and_nulls, test_json_required,
             test_json_wrong_types, test_json_device_id, test_json_regions,
             test_json_text_fields, test_json_integers, test_json_body_shape,
             test_json_deep_nesting, test_json_batch, test_json_number_text,
             test_json_strings_strict, test_json_duplicates,
             test_json_depth_limit, test_json_shapes_details,
             test_json_batch_large, test_mp_full,
             test_mp_fields, test_mp_strings, test_mp_prescan, test_mp_batch,
             test_record_roundtrip, test_record_sizes, test_record_wire,
             test_record_decode_errors, test_mp_int_widths,
             test_mp_encodings, test_mp_reader_framing, test_mp_batch_reader)
