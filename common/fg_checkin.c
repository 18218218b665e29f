/* SPDX-License-Identifier: Apache-2.0 */
/* Check-in schema v1: JSON (jansson) and msgpack (msgpack-c, behind a bounded
 * pre-scan) bodies are turned into a format-neutral list of field values,
 * which one validator checks and copies into an fg_checkin; the Kafka record
 * value is written with msgpack_packer into the caller's fixed buffer. */
#include "fg_checkin.h"

#include <inttypes.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Deepest container nesting accepted in a msgpack body; msgpack-c's own
 * unpack stack (MSGPACK_EMBED_STACK_SIZE, 32 unless the library was built
 * otherwise) holds exactly this many. */
#define FG_MSGPACK_MAX_DEPTH 32

/* ---- fields ---------------------------------------------------------- */

/* Schema fields in validation order (the first bad one is reported), then
 * the gateway-side fields of a record. */
enum {
    F_DEVICE_ID,
    F_SKU_REGION,
    F_REGION,
    F_MODEL,
    F_FW,
    F_MCC,
    F_SEQ,
    F_TS,
    F_NCHECKIN, /* fields a device may send */
    F_V = F_NCHECKIN,
    F_RECV_TS,
    F_GW,
    F_NRECORD /* fields of a record value */
};

static const char *const field_name[F_NRECORD] = {
    "device_id", "sku_region", "region", "model", "fw", "mcc",
    "seq",       "ts",         "v",      "recv_ts", "gw"};

/* The field a key names, or -1; only the first nfields are considered. */
static int field_lookup(const char *k, size_t n, int nfields)
{
    int f = -1;
    switch (n) {
    case 1: f = k[0] == 'v' ? F_V : -1; break;
    case 2:
        if (k[0] == 'f' && k[1] == 'w')
            f = F_FW;
        else if (k[0] == 't' && k[1] == 's')
            f = F_TS;
        else if (k[0] == 'g' && k[1] == 'w')
            f = F_GW;
        break;
    case 3:
        if (memcmp(k, "mcc", 3) == 0)
            f = F_MCC;
        else if (memcmp(k, "seq", 3) == 0)
            f = F_SEQ;
        break;
    case 5: f = memcmp(k, "model", 5) == 0 ? F_MODEL : -1; break;
    case 6: f = memcmp(k, "region", 6) == 0 ? F_REGION : -1; break;
    case 7: f = memcmp(k, "recv_ts", 7) == 0 ? F_RECV_TS : -1; break;
    case 9: f = memcmp(k, "device_id", 9) == 0 ? F_DEVICE_ID : -1; break;
    case 10: f = memcmp(k, "sku_region", 10) == 0 ? F_SKU_REGION : -1; break;
    default: break;
    }
    return f < nfields ? f : -1;
}

/* One field value as found in the body, whatever the encoding. null and
 * nil count as absent. */
typedef enum val_kind {
    VK_ABSENT = 0,
    VK_STR,
    VK_UINT, /* non-negative integer in u */
    VK_NINT, /* negative integer in i */
    VK_OTHER /* any other type, named by type */
} val_kind;

typedef struct fg_val {
    val_kind kind;
    const char *type;
    const char *s;
    size_t len;
    uint64_t u;
    int64_t i;
} fg_val;

/* ---- errors ---------------------------------------------------------- */

static void err_clear(fg_checkin_error *err)
{
    err->code = NULL;
    err->field = NULL;
    err->detail[0] = '\0';
}

static fg_status err_set(fg_checkin_error *err, const char *code,
                         const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static fg_status err_set(fg_checkin_error *err, const char *code,
                         const char *field, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    err->field = field;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
    va_end(ap);
    return FG_EINVAL;
}

/* ---- validation ------------------------------------------------------ */

enum { UTF8_OK = 0, UTF8_BAD = -1, UTF8_CONTROL = -2 };

/* Strict UTF-8 check (no overlongs, surrogates or code points over
 * U+10FFFF) that also refuses C0 controls, DEL and NUL. Counts code points
 * into *count. */
static int utf8_scan(const unsigned char *s, size_t len, size_t *count)
{
    size_t i = 0, n = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t need;
        unsigned lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return UTF8_CONTROL;
            i++;
            n++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0; /* overlong */
            else if (c == 0xed)
                hi = 0x9f; /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90; /* overlong */
            else if (c == 0xf4)
                hi = 0x8f; /* over U+10FFFF */
        } else {
            return UTF8_BAD;
        }
        if (need > len - i - 1)
            return UTF8_BAD;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return UTF8_BAD;
        for (size_t k = 2; k <= need; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return UTF8_BAD;
        }
        i += need + 1;
        n++;
    }
    *count = n;
    return UTF8_OK;
}

static bool device_id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
           c == '-';
}

static fg_status wrong_type(fg_checkin_error *err, int f, const char *want,
                            const fg_val *v)
{
    return err_set(err, "wrong_type", field_name[f], "%s must be %s, not %s",
                   field_name[f], want,
                   v->kind == VK_STR                         ? "a string"
                   : v->kind == VK_UINT || v->kind == VK_NINT ? "an integer"
                                                              : v->type);
}

static fg_status check_device_id(const fg_val *v, fg_checkin *ci,
                                 fg_checkin_error *err)
{
    const int f = F_DEVICE_ID;
    if (v->kind == VK_ABSENT)
        return err_set(err, "missing_field", field_name[f], "%s is required",
                       field_name[f]);
    if (v->kind != VK_STR)
        return wrong_type(err, f, "a string", v);
    if (v->len == 0)
        return err_set(err, "invalid_value", field_name[f],
                       "%s must not be empty", field_name[f]);
    if (v->len > FG_DEVICE_ID_MAX)
        return err_set(err, "too_long", field_name[f],
                       "%s is %zu bytes, at most %d allowed", field_name[f],
                       v->len, FG_DEVICE_ID_MAX);
    for (size_t i = 0; i < v->len; i++) {
        if (!device_id_char((unsigned char)v->s[i]))
            return err_set(err, "invalid_value", field_name[f],
                           "%s may only contain A-Z a-z 0-9 . _ : -",
                           field_name[f]);
    }
    memcpy(ci->device_id, v->s, v->len);
    ci->device_id[v->len] = '\0';
    ci->device_id_len = (uint16_t)v->len;
    return FG_OK;
}

static fg_status check_region(int f, const fg_val *v, char *out,
                              uint16_t *out_len, fg_checkin_error *err)
{
    if (v->kind == VK_ABSENT)
        return err_set(err, "missing_field", field_name[f], "%s is required",
                       field_name[f]);
    if (v->kind != VK_STR)
        return wrong_type(err, f, "a string", v);
    if (!fg_region_valid(v->s, v->len))
        return err_set(err, "invalid_value", field_name[f],
                       "%s must be an upper-case ISO 3166 code such as CU or "
                       "UA-43",
                       field_name[f]);
    memcpy(out, v->s, v->len);
    out[v->len] = '\0';
    *out_len = (uint16_t)v->len;
    return FG_OK;
}

/* model and fw: UTF-8 text of at most max code points. */
static fg_status check_text(int f, const fg_val *v, size_t max, char *out,
                            uint16_t *out_len, fg_checkin_error *err)
{
    size_t cps = 0;
    int rc;
    if (v->kind != VK_STR)
        return wrong_type(err, f, "a string", v);
    rc = utf8_scan((const unsigned char *)v->s, v->len, &cps);
    if (rc == UTF8_BAD)
        return err_set(err, "invalid_value", field_name[f],
                       "%s is not valid UTF-8", field_name[f]);
    if (rc == UTF8_CONTROL)
        return err_set(err, "invalid_value", field_name[f],
                       "%s contains a control character", field_name[f]);
    if (cps > max)
        return err_set(err, "too_long", field_name[f],
                       "%s is %zu characters, at most %zu allowed",
                       field_name[f], cps, max);
    /* Valid UTF-8 of at most max code points fits in max * 4 bytes. */
    if (v->len)
        memcpy(out, v->s, v->len);
    out[v->len] = '\0';
    *out_len = (uint16_t)v->len;
    return FG_OK;
}

/* An integer within [min, max]; absent values are the caller's business. */
static fg_status check_uint(int f, const fg_val *v, uint64_t max,
                            uint64_t *out, fg_checkin_error *err)
{
    if (v->kind == VK_NINT ||
        (v->kind == VK_UINT && v->u > max))
        return err_set(err, "out_of_range", field_name[f],
                       "%s must be between 0 and %" PRIu64, field_name[f],
                       max);
    if (v->kind != VK_UINT)
        return wrong_type(err, f, "an integer", v);
    *out = v->u;
    return FG_OK;
}

static fg_status check_int64(int f, const fg_val *v, int64_t *out,
                             fg_checkin_error *err)
{
    if (v->kind == VK_UINT && v->u > (uint64_t)INT64_MAX)
        return err_set(err, "out_of_range", field_name[f],
                       "%s must fit in a signed 64-bit integer",
                       field_name[f]);
    if (v->kind == VK_UINT) {
        *out = (int64_t)v->u;
        return FG_OK;
    }
    if (v->kind == VK_NINT) {
        *out = v->i;
        return FG_OK;
    }
    return wrong_type(err, f, "an integer", v);
}

/* Checks the schema fields in vals[0..F_NCHECKIN) and fills ci. */
static fg_status checkin_validate(const fg_val *vals, fg_checkin *ci,
                                  fg_checkin_error *err)
{
    fg_status st;
    uint64_t u;

    ci->device_id[0] = ci->sku_region[0] = ci->region[0] = '\0';
    ci->model[0] = ci->fw[0] = '\0';
    ci->device_id_len = ci->sku_region_len = ci->region_len = 0;
    ci->model_len = ci->fw_len = 0;
    ci->has = 0;
    ci->mcc = 0;
    ci->seq = 0;
    ci->ts = 0;

    st = check_device_id(&vals[F_DEVICE_ID], ci, err);
    if (st != FG_OK)
        goto cleanup;
    st = check_region(F_SKU_REGION, &vals[F_SKU_REGION], ci->sku_region,
                      &ci->sku_region_len, err);
    if (st != FG_OK)
        goto cleanup;
    st = check_region(F_REGION, &vals[F_REGION], ci->region, &ci->region_len,
                      err);
    if (st != FG_OK)
        goto cleanup;
    if (vals[F_MODEL].kind != VK_ABSENT) {
        st = check_text(F_MODEL, &vals[F_MODEL], FG_MODEL_MAX, ci->model,
                        &ci->model_len, err);
        if (st != FG_OK)
            goto cleanup;
        ci->has |= FG_CHECKIN_HAS_MODEL;
    }
    if (vals[F_FW].kind != VK_ABSENT) {
        st = check_text(F_FW, &vals[F_FW], FG_FW_MAX, ci->fw, &ci->fw_len,
                        err);
        if (st != FG_OK)
            goto cleanup;
        ci->has |= FG_CHECKIN_HAS_FW;
    }
    if (vals[F_MCC].kind != VK_ABSENT) {
        st = check_uint(F_MCC, &vals[F_MCC], 999, &u, err);
        if (st != FG_OK)
            goto cleanup;
        ci->mcc = (uint16_t)u;
        ci->has |= FG_CHECKIN_HAS_MCC;
    }
    if (vals[F_SEQ].kind != VK_ABSENT) {
        st = check_uint(F_SEQ, &vals[F_SEQ], UINT64_MAX, &ci->seq, err);
        if (st != FG_OK)
            goto cleanup;
        ci->has |= FG_CHECKIN_HAS_SEQ;
    }
    if (vals[F_TS].kind != VK_ABSENT) {
        st = check_int64(F_TS, &vals[F_TS], &ci->ts, err);
        if (st != FG_OK)
            goto cleanup;
        ci->has |= FG_CHECKIN_HAS_TS;
    }
    st = FG_OK;

cleanup:
    return st;
}

/* ---- JSON ------------------------------------------------------------ */

#define FG_JSON_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)

static void json_to_val(const json_t *j, fg_val *v)
{
    v->kind = VK_OTHER;
    switch (json_typeof(j)) {
    case JSON_STRING:
        v->kind = VK_STR;
        v->s = json_string_value(j);
        v->len = json_string_length(j);
        break;
    case JSON_INTEGER: {
        json_int_t n = json_integer_value(j);
        if (n < 0) {
            v->kind = VK_NINT;
            v->i = (int64_t)n;
        } else {
            v->kind = VK_UINT;
            v->u = (uint64_t)n;
        }
        break;
    }
    case JSON_NULL: v->kind = VK_ABSENT; break;
    case JSON_REAL: v->type = "a number with a fraction or exponent"; break;
    case JSON_TRUE:
    case JSON_FALSE: v->type = "a boolean"; break;
    case JSON_ARRAY: v->type = "an array"; break;
    case JSON_OBJECT: v->type = "an object"; break;
    default: v->type = "an unknown type"; break;
    }
}

static fg_status checkin_from_json(const json_t *obj, fg_checkin *ci,
                                   fg_checkin_error *err)
{
    fg_val vals[F_NCHECKIN];
    if (!json_is_object(obj))
        return err_set(err, "not_an_object", NULL,
                       "a check-in must be a JSON object");
    for (int f = 0; f < F_NCHECKIN; f++) {
        const json_t *j = json_object_get(obj, field_name[f]);
        vals[f].kind = VK_ABSENT;
        if (j)
            json_to_val(j, &vals[f]);
    }
    return checkin_validate(vals, ci, err);
}

static json_t *json_load(const char *buf, size_t len, fg_checkin_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, FG_JSON_FLAGS, &jerr);
    if (!root) {
        err_set(err, "invalid_json", NULL, "line %d column %d: %s",
                jerr.line, jerr.column, jerr.text);
        /* jansson quotes input bytes ("near '...'"), which may be invalid
         * UTF-8 or cut mid-character: keep the detail printable ASCII, it
         * goes back to the device. */
        for (char *c = err->detail; *c; c++) {
            if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
                *c = '?';
        }
    }
    return root;
}

fg_status fg_checkin_parse_json(const char *buf, size_t len, fg_checkin *ci,
                                fg_checkin_error *err)
{
    fg_checkin_error dummy;
    json_t *root;
    fg_status st;

    if (!err)
        err = &dummy;
    err_clear(err);
    root = json_load(buf, len, err);
    if (!root) {
        st = FG_EINVAL;
        goto cleanup;
    }
    st = checkin_from_json(root, ci, err);

cleanup:
    json_decref(root);
    return st;
}

fg_status fg_checkin_batch_parse_json(const char *buf, size_t len,
                                      size_t max_items, fg_checkin_item_cb cb,
                                      void *ud, fg_checkin_error *err)
{
    fg_checkin_error dummy;
    json_t *root;
    size_t n;
    fg_status st = FG_EINVAL;

    if (!err)
        err = &dummy;
    err_clear(err);
    root = json_load(buf, len, err);
    if (!root)
        goto cleanup;
    if (!json_is_array(root)) {
        err_set(err, "not_an_array", NULL,
                "a batch must be a JSON array of check-ins");
        goto cleanup;
    }
    n = json_array_size(root);
    if (n == 0) {
        err_set(err, "empty_batch", NULL, "the batch has no items");
        goto cleanup;
    }
    if (n > max_items) {
        err_set(err, "too_many_items", NULL,
                "the batch has %zu items, at most %zu allowed", n, max_items);
        goto cleanup;
    }
    st = FG_OK;
    for (size_t i = 0; i < n && st == FG_OK; i++) {
        fg_checkin ci;
        fg_checkin_error item_err;
        err_clear(&item_err);
        if (checkin_from_json(json_array_get(root, i), &ci, &item_err) ==
            FG_OK)
            st = cb(ud, i, &ci, NULL);
        else
            st = cb(ud, i, NULL, &item_err);
    }

cleanup:
    json_decref(root);
    return st;
}

/* ---- msgpack --------------------------------------------------------- */

static uint64_t be_read(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Verifies, without allocating, that p[0..len) is exactly one well-formed
 * msgpack value with containers nested at most FG_MSGPACK_MAX_DEPTH deep and
 * no declared element count larger than the bytes left (each element takes
 * at least one byte). msgpack-c sizes its allocations by declared counts, so
 * it only ever sees bodies that passed this. Returns NULL or why not. */
static const char *mp_prescan(const unsigned char *p, size_t len)
{
    uint64_t left[FG_MSGPACK_MAX_DEPTH + 1];
    size_t pos = 0, depth = 0;

    left[0] = 1;
    while (depth > 0 || left[0] > 0) {
        unsigned b;
        uint64_t skip = 0, children = 0;
        size_t hdr = 0;
        bool container = false;

        if (pos >= len)
            return "truncated";
        b = p[pos++];
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            skip = 0; /* fixint, nil, bool */
        } else if (b >= 0x80 && b <= 0x8f) {
            container = true;
            children = 2u * (b & 0x0fu);
        } else if (b >= 0x90 && b <= 0x9f) {
            container = true;
            children = b & 0x0fu;
        } else if (b >= 0xa0 && b <= 0xbf) {
            skip = b & 0x1fu;
        } else {
            switch (b) {
            case 0xc4: hdr = 1; break; /* bin 8/16/32: length follows */
            case 0xc5: hdr = 2; break;
            case 0xc6: hdr = 4; break;
            case 0xc7: hdr = 1; break; /* ext 8/16/32: length, type */
            case 0xc8: hdr = 2; break;
            case 0xc9: hdr = 4; break;
            case 0xca: skip = 4; break;
            case 0xcb: skip = 8; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break; /* fixext: type + data */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xd9: hdr = 1; break; /* str 8/16/32 */
            case 0xda: hdr = 2; break;
            case 0xdb: hdr = 4; break;
            case 0xdc: container = true; hdr = 2; break;
            case 0xdd: container = true; hdr = 4; break;
            case 0xde: container = true; hdr = 2; break;
            case 0xdf: container = true; hdr = 4; break;
            default: return "reserved type byte 0xc1";
            }
        }
        if (hdr) {
            uint64_t n;
            if (hdr > len - pos)
                return "truncated";
            n = be_read(p + pos, hdr);
            pos += hdr;
            if (!container)
                skip = n + ((b >= 0xc7 && b <= 0xc9) ? 1 : 0);
            else if (b == 0xde || b == 0xdf)
                children = 2 * n;
            else
                children = n;
        }
        left[depth]--;
        if (container) {
            if (depth + 1 > FG_MSGPACK_MAX_DEPTH)
                return "nested too deeply";
            if (children > len - pos)
                return "container count larger than the body";
            if (children > 0) {
                depth++;
                left[depth] = children;
            }
        } else {
            if (skip > len - pos)
                return "truncated";
            pos += (size_t)skip;
        }
        while (depth > 0 && left[depth] == 0)
            depth--;
    }
    if (pos != len)
        return "trailing bytes after the value";
    return NULL;
}

/* Unpacks one value that passed mp_prescan into up (initialised by the
 * caller, who destroys it whatever the result). */
static fg_status mp_unpack_scanned(const char *buf, size_t len,
                                   msgpack_unpacked *up,
                                   fg_checkin_error *err)
{
    size_t off = 0;
    msgpack_unpack_return ret = msgpack_unpack_next(up, buf, len, &off);
    if (ret == MSGPACK_UNPACK_NOMEM_ERROR) {
        err_set(err, "invalid_msgpack", NULL, "out of memory");
        return FG_ENOMEM;
    }
    if (ret != MSGPACK_UNPACK_SUCCESS || off != len)
        return err_set(err, "invalid_msgpack", NULL, "malformed msgpack");
    return FG_OK;
}

/* Pre-scans, then unpacks; same contract as mp_unpack_scanned. */
static fg_status mp_unpack(const char *buf, size_t len, msgpack_unpacked *up,
                           fg_checkin_error *err)
{
    const char *why = mp_prescan((const unsigned char *)buf, len);
    if (why)
        return err_set(err, "invalid_msgpack", NULL, "%s", why);
    return mp_unpack_scanned(buf, len, up, err);
}

static void mp_to_val(const msgpack_object *o, fg_val *v)
{
    v->kind = VK_OTHER;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: v->kind = VK_ABSENT; break;
    case MSGPACK_OBJECT_STR:
        v->kind = VK_STR;
        v->s = o->via.str.ptr;
        v->len = o->via.str.size;
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        v->kind = VK_UINT;
        v->u = o->via.u64;
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        /* msgpack-c may report a non-negative signed encoding here too. */
        if (o->via.i64 < 0) {
            v->kind = VK_NINT;
            v->i = o->via.i64;
        } else {
            v->kind = VK_UINT;
            v->u = (uint64_t)o->via.i64;
        }
        break;
    case MSGPACK_OBJECT_BOOLEAN: v->type = "a boolean"; break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: v->type = "a float"; break;
    case MSGPACK_OBJECT_ARRAY: v->type = "an array"; break;
    case MSGPACK_OBJECT_MAP: v->type = "a map"; break;
    case MSGPACK_OBJECT_BIN: v->type = "bin"; break;
    case MSGPACK_OBJECT_EXT: v->type = "ext"; break;
    default: v->type = "an unknown type"; break;
    }
}

/* Collects the first nfields known fields of a map. Keys that are not str
 * or not known are ignored; a known key given twice is refused. */
static fg_status mp_collect(const msgpack_object *o, int nfields,
                            fg_val *vals, fg_checkin_error *err)
{
    uint32_t seen = 0;
    if (o->type != MSGPACK_OBJECT_MAP)
        return err_set(err, "not_an_object", NULL,
                       "a check-in must be a msgpack map");
    for (int f = 0; f < nfields; f++)
        vals[f].kind = VK_ABSENT;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        int f;
        if (kv->key.type != MSGPACK_OBJECT_STR)
            continue;
        f = field_lookup(kv->key.via.str.ptr, kv->key.via.str.size, nfields);
        if (f < 0)
            continue;
        if (seen & (1u << f))
            return err_set(err, "invalid_msgpack", field_name[f],
                           "duplicate key %s", field_name[f]);
        seen |= 1u << f;
        mp_to_val(&kv->val, &vals[f]);
    }
    return FG_OK;
}

static fg_status checkin_from_mp(const msgpack_object *o, fg_checkin *ci,
                                 fg_checkin_error *err)
{
    fg_val vals[F_NCHECKIN];
    fg_status st = mp_collect(o, F_NCHECKIN, vals, err);
    if (st != FG_OK)
        return st;
    return checkin_validate(vals, ci, err);
}

fg_status fg_checkin_parse_msgpack(const char *buf, size_t len,
                                   fg_checkin *ci, fg_checkin_error *err)
{
    fg_checkin_error dummy;
    msgpack_unpacked up;
    fg_status st;

    if (!err)
        err = &dummy;
    err_clear(err);
    msgpack_unpacked_init(&up);
    st = mp_unpack(buf, len, &up, err);
    if (st != FG_OK)
        goto cleanup;
    st = checkin_from_mp(&up.data, ci, err);

cleanup:
    msgpack_unpacked_destroy(&up);
    return st;
}

fg_status fg_checkin_batch_parse_msgpack(const char *buf, size_t len,
                                         size_t max_items,
                                         fg_checkin_item_cb cb, void *ud,
                                         fg_checkin_error *err)
{
    fg_checkin_error dummy;
    msgpack_unpacked up;
    const unsigned char *p = (const unsigned char *)buf;
    const char *why;
    uint64_t n;
    fg_status st = FG_EINVAL;

    if (!err)
        err = &dummy;
    err_clear(err);
    msgpack_unpacked_init(&up);
    why = mp_prescan(p, len);
    if (why) {
        err_set(err, "invalid_msgpack", NULL, "%s", why);
        goto cleanup;
    }
    /* Well-formed, so the header bytes are there: count before unpacking. */
    if (p[0] >= 0x90 && p[0] <= 0x9f) {
        n = p[0] & 0x0fu;
    } else if (p[0] == 0xdc) {
        n = be_read(p + 1, 2);
    } else if (p[0] == 0xdd) {
        n = be_read(p + 1, 4);
    } else {
        err_set(err, "not_an_array", NULL,
                "a batch must be a msgpack array of check-ins");
        goto cleanup;
    }
    if (n == 0) {
        err_set(err, "empty_batch", NULL, "the batch has no items");
        goto cleanup;
    }
    if (n > max_items) {
        err_set(err, "too_many_items", NULL,
                "the batch has %" PRIu64 " items, at most %zu allowed", n,
                max_items);
        goto cleanup;
    }
    st = mp_unpack_scanned(buf, len, &up, err);
    if (st != FG_OK)
        goto cleanup;
    for (uint32_t i = 0; i < up.data.via.array.size && st == FG_OK; i++) {
        fg_checkin ci;
        fg_checkin_error item_err;
        err_clear(&item_err);
        if (checkin_from_mp(&up.data.via.array.ptr[i], &ci, &item_err) ==
            FG_OK)
            st = cb(ud, i, &ci, NULL);
        else
            st = cb(ud, i, NULL, &item_err);
    }

cleanup:
    msgpack_unpacked_destroy(&up);
    return st;
}

/* ---- record ---------------------------------------------------------- */

/* msgpack_packer sink: a fixed buffer with a sticky overflow flag. */
typedef struct fixed_buf {
    char *out;
    size_t cap, len;
    bool overflow;
} fixed_buf;

static int fixed_write(void *data, const char *b, size_t n)
{
    fixed_buf *fb = data;
    if (fb->overflow || n > fb->cap - fb->len) {
        fb->overflow = true;
        return -1;
    }
    memcpy(fb->out + fb->len, b, n);
    fb->len += n;
    return 0;
}

static void pack_key(msgpack_packer *pk, int f, size_t len)
{
    msgpack_pack_str_with_body(pk, field_name[f], len);
}

static void pack_strn(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str_with_body(pk, s, len);
}

size_t fg_checkin_encode(const fg_checkin *ci, int64_t recv_ts,
                         const char *gw_id, char *out, size_t cap)
{
    fixed_buf fb = {out, cap, 0, false};
    msgpack_packer pk;
    size_t gw_len = 0, n = 6;
    uint32_t has = ci->has;

    if (gw_id)
        gw_len = strnlen(gw_id, FG_GW_ID_MAX + 1);
    /* Lengths over the caps mean ci was not validated: refuse rather than
     * break the FG_CHECKIN_RECORD_MAX promise. */
    if (gw_len > FG_GW_ID_MAX || ci->device_id_len > FG_DEVICE_ID_MAX ||
        ci->sku_region_len > FG_REGION_MAX || ci->region_len > FG_REGION_MAX ||
        ci->model_len > FG_MODEL_MAX * 4 || ci->fw_len > FG_FW_MAX * 4)
        return 0;
    for (uint32_t bit = FG_CHECKIN_HAS_MODEL; bit <= FG_CHECKIN_HAS_TS;
         bit <<= 1) {
        if (has & bit)
            n++;
    }

    msgpack_packer_init(&pk, &fb, fixed_write);
    msgpack_pack_map(&pk, n);
    pack_key(&pk, F_DEVICE_ID, 9);
    pack_strn(&pk, ci->device_id, ci->device_id_len);
    pack_key(&pk, F_SKU_REGION, 10);
    pack_strn(&pk, ci->sku_region, ci->sku_region_len);
    pack_key(&pk, F_REGION, 6);
    pack_strn(&pk, ci->region, ci->region_len);
    if (has & FG_CHECKIN_HAS_MODEL) {
        pack_key(&pk, F_MODEL, 5);
        pack_strn(&pk, ci->model, ci->model_len);
    }
    if (has & FG_CHECKIN_HAS_FW) {
        pack_key(&pk, F_FW, 2);
        pack_strn(&pk, ci->fw, ci->fw_len);
    }
    if (has & FG_CHECKIN_HAS_MCC) {
        pack_key(&pk, F_MCC, 3);
        msgpack_pack_uint16(&pk, ci->mcc);
    }
    if (has & FG_CHECKIN_HAS_SEQ) {
        pack_key(&pk, F_SEQ, 3);
        msgpack_pack_uint64(&pk, ci->seq);
    }
    if (has & FG_CHECKIN_HAS_TS) {
        pack_key(&pk, F_TS, 2);
        msgpack_pack_int64(&pk, ci->ts);
    }
    pack_key(&pk, F_V, 1);
    msgpack_pack_int(&pk, FG_CHECKIN_SCHEMA_VERSION);
    pack_key(&pk, F_RECV_TS, 7);
    msgpack_pack_int64(&pk, recv_ts);
    pack_key(&pk, F_GW, 2);
    pack_strn(&pk, gw_id ? gw_id : "", gw_len);
    return fb.overflow ? 0 : fb.len;
}

fg_status fg_checkin_decode_record(const char *buf, size_t len,
                                   fg_checkin *ci, fg_checkin_meta *meta,
                                   fg_checkin_error *err)
{
    fg_checkin_error dummy;
    msgpack_unpacked up;
    fg_val vals[F_NRECORD];
    const fg_val *gw;
    int64_t recv_ts = 0;
    uint64_t v = 0;
    fg_status st;

    if (!err)
        err = &dummy;
    err_clear(err);
    msgpack_unpacked_init(&up);
    st = mp_unpack(buf, len, &up, err);
    if (st != FG_OK)
        goto cleanup;
    st = mp_collect(&up.data, F_NRECORD, vals, err);
    if (st != FG_OK)
        goto cleanup;
    st = checkin_validate(vals, ci, err);
    if (st != FG_OK)
        goto cleanup;

    if (vals[F_V].kind == VK_ABSENT) {
        st = err_set(err, "missing_field", "v", "v is required");
        goto cleanup;
    }
    st = check_uint(F_V, &vals[F_V], UINT64_MAX, &v, err);
    if (st != FG_OK)
        goto cleanup;
    if (v != FG_CHECKIN_SCHEMA_VERSION) {
        st = err_set(err, "invalid_value", "v",
                     "unsupported schema version %" PRIu64, v);
        goto cleanup;
    }
    if (vals[F_RECV_TS].kind == VK_ABSENT) {
        st = err_set(err, "missing_field", "recv_ts", "recv_ts is required");
        goto cleanup;
    }
    st = check_int64(F_RECV_TS, &vals[F_RECV_TS], &recv_ts, err);
    if (st != FG_OK)
        goto cleanup;
    gw = &vals[F_GW];
    if (gw->kind == VK_ABSENT) {
        st = err_set(err, "missing_field", "gw", "gw is required");
        goto cleanup;
    }
    if (gw->kind != VK_STR) {
        st = wrong_type(err, F_GW, "a string", gw);
        goto cleanup;
    }
    if (gw->len > FG_GW_ID_MAX) {
        st = err_set(err, "too_long", "gw", "gw is longer than %d bytes",
                     FG_GW_ID_MAX);
        goto cleanup;
    }
    if (gw->len && memchr(gw->s, '\0', gw->len)) {
        st = err_set(err, "invalid_value", "gw", "gw contains a NUL byte");
        goto cleanup;
    }
    if (meta) {
        meta->v = (int)v;
        meta->recv_ts = recv_ts;
        if (gw->len)
            memcpy(meta->gw, gw->s, gw->len);
        meta->gw[gw->len] = '\0';
    }
    st = FG_OK;

cleanup:
    msgpack_unpacked_destroy(&up);
    return st;
}
