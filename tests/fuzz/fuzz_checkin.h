/* SPDX-License-Identifier: Apache-2.0 */
/* Shared by the check-in fuzz drivers: the round-trip oracle every accepted
 * check-in must pass, and the batch item callback that applies it. Static
 * functions: each driver is its own program. */
#ifndef FUZZ_CHECKIN_H
#define FUZZ_CHECKIN_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fg_checkin.h"

/* Aborts unless ci is internally consistent and round-trips through the
 * Kafka record encoding. */
static void roundtrip(const fg_checkin *ci)
{
    char out[FG_CHECKIN_RECORD_MAX];
    fg_checkin back;
    fg_checkin_meta meta;
    fg_checkin_error err;
    size_t n;

    if (ci->device_id_len == 0 || ci->device_id_len > FG_DEVICE_ID_MAX ||
        strlen(ci->device_id) != ci->device_id_len ||
        strlen(ci->sku_region) != ci->sku_region_len ||
        strlen(ci->region) != ci->region_len ||
        strlen(ci->model) != ci->model_len || strlen(ci->fw) != ci->fw_len ||
        !fg_region_valid(ci->region, ci->region_len) ||
        !fg_region_valid(ci->sku_region, ci->sku_region_len) ||
        ci->mcc > 999)
        abort();
    n = fg_checkin_encode(ci, -42, "fuzz-gw", out, sizeof(out));
    if (n == 0)
        abort();
    if (fg_checkin_decode_record(out, n, &back, &meta, &err) != FG_OK)
        abort();
    if (strcmp(back.device_id, ci->device_id) != 0 ||
        back.device_id_len != ci->device_id_len ||
        strcmp(back.sku_region, ci->sku_region) != 0 ||
        strcmp(back.region, ci->region) != 0 || back.has != ci->has ||
        back.model_len != ci->model_len ||
        memcmp(back.model, ci->model, ci->model_len) != 0 ||
        back.fw_len != ci->fw_len ||
        memcmp(back.fw, ci->fw, ci->fw_len) != 0 || back.mcc != ci->mcc ||
        back.seq != ci->seq || back.ts != ci->ts || meta.v != 1 ||
        meta.recv_ts != -42 || strcmp(meta.gw, "fuzz-gw") != 0)
        abort();
}

static fg_status item_cb(void *ud, size_t index, const fg_checkin *ci,
                         const fg_checkin_error *item_err)
{
    size_t *next = ud;
    if (index != *next)
        abort();
    (*next)++;
    if (ci)
        roundtrip(ci);
    else if (!item_err || !item_err->code)
        abort();
    return FG_OK;
}

#endif
