/* SPDX-License-Identifier: Apache-2.0 */
/* The check-in model, schema v1: decoding and validating device check-ins
 * from JSON (yajl, event API) and msgpack (a bounded, allocation-free reader),
 * single or batch, and encoding (msgpack-c)
 * the Kafka record value (msgpack map) the gateway produces and the consumers
 * read. See docs/protocol.md for the schema. */
#ifndef FG_CHECKIN_H
#define FG_CHECKIN_H

#include <stddef.h>
#include <stdint.h>

#include "fg_region.h"
#include "fg_status.h"

#define FG_DEVICE_ID_MAX 64 /* bytes of [A-Za-z0-9._:-] */
#define FG_MODEL_MAX 64     /* characters (UTF-8 code points) */
#define FG_FW_MAX 32        /* characters (UTF-8 code points) */
#define FG_GW_ID_MAX 64     /* bytes */
#define FG_CHECKIN_SCHEMA_VERSION 1

/* Upper bound of one encoded record value; fg_checkin_encode never needs
 * more than this. */
#define FG_CHECKIN_RECORD_MAX 768

enum {
    FG_CHECKIN_HAS_MODEL = 1u << 0,
    FG_CHECKIN_HAS_FW = 1u << 1,
    FG_CHECKIN_HAS_MCC = 1u << 2,
    FG_CHECKIN_HAS_SEQ = 1u << 3,
    FG_CHECKIN_HAS_TS = 1u << 4
};

/* One validated check-in. Strings are NUL-terminated, *_len excludes the NUL.
 * model and fw hold valid UTF-8 with no control characters. */
typedef struct fg_checkin {
    char device_id[FG_DEVICE_ID_MAX + 1];
    char sku_region[FG_REGION_MAX + 1];
    char region[FG_REGION_MAX + 1];
    char model[FG_MODEL_MAX * 4 + 1];
    char fw[FG_FW_MAX * 4 + 1];
    uint16_t device_id_len, sku_region_len, region_len, model_len, fw_len;
    uint32_t has;  /* FG_CHECKIN_HAS_* for the optional fields */
    uint16_t mcc;  /* 0..999 */
    uint64_t seq;  /* increasing per device */
    int64_t ts;    /* device clock, ms since the epoch */
} fg_checkin;

/* Why a body or an item was refused. code and field are static strings;
 * field is NULL when the error is not about one field.
 * Codes: "invalid_json", "invalid_msgpack", "not_an_object", "not_an_array",
 * "too_many_items", "empty_batch", "missing_field", "wrong_type",
 * "invalid_value", "too_long", "out_of_range". */
typedef struct fg_checkin_error {
    const char *code;
    const char *field;
    char detail[160];
} fg_checkin_error;

/* Gateway-side facts stored with each record. */
typedef struct fg_checkin_meta {
    int v;                          /* schema version, 1 */
    int64_t recv_ts;                /* gateway clock, ms */
    char gw[FG_GW_ID_MAX + 1];      /* gateway instance id */
} fg_checkin_meta;

/* Decodes and validates one check-in object. Unknown fields are ignored.
 * On FG_EINVAL, *err says why and *ci is unspecified. buf is borrowed and
 * need not be NUL-terminated. Never reads past buf+len.
 * @thread any */
fg_status fg_checkin_parse_json(const char *buf, size_t len, fg_checkin *ci,
                                fg_checkin_error *err);
fg_status fg_checkin_parse_msgpack(const char *buf, size_t len,
                                   fg_checkin *ci, fg_checkin_error *err);

/* Called once per batch item, in order. ci is the decoded item, or NULL when
 * the item is invalid, and then item_err says why. Both are borrowed for the
 * call only. Return FG_OK to go on; any other status stops the walk and is
 * returned by the batch parser. */
typedef fg_status (*fg_checkin_item_cb)(void *ud, size_t index,
                                        const fg_checkin *ci,
                                        const fg_checkin_error *item_err);

/* Decodes a batch: a JSON array / msgpack array of check-in objects, at most
 * max_items of them. Calls cb for every item. Returns FG_EINVAL with *err
 * filled when the body as a whole is bad (not parseable, not an array, empty,
 * over max_items); no callback is made in that case. Invalid items do not
 * fail the batch. @thread any */
fg_status fg_checkin_batch_parse_json(const char *buf, size_t len,
                                      size_t max_items, fg_checkin_item_cb cb,
                                      void *ud, fg_checkin_error *err);
fg_status fg_checkin_batch_parse_msgpack(const char *buf, size_t len,
                                         size_t max_items,
                                         fg_checkin_item_cb cb, void *ud,
                                         fg_checkin_error *err);

/* Encodes the Kafka record value: a msgpack map with the schema fields that
 * are present, plus "v" (1), "recv_ts" and "gw". Writes at most cap bytes to
 * out; returns the length, or 0 when cap is too small (never with
 * cap >= FG_CHECKIN_RECORD_MAX). gw_id is borrowed, at most FG_GW_ID_MAX
 * bytes. @thread any */
size_t fg_checkin_encode(const fg_checkin *ci, int64_t recv_ts,
                         const char *gw_id, char *out, size_t cap);

/* Decodes a record value written by fg_checkin_encode, re-validating every
 * field. meta may be NULL. @thread any */
fg_status fg_checkin_decode_record(const char *buf, size_t len,
                                   fg_checkin *ci, fg_checkin_meta *meta,
                                   fg_checkin_error *err);

#endif
