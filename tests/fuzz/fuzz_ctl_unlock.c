/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz driver for ctl_req_parse_unlock, the body of both POST
 * /v1/regions/{code}/unlock and POST /v1/locks/unlock-all, and
 * ctl_req_parse_reason, the body of DELETE /v1/regions/{code}/policy.
 * Every accepted body must give fields within their documented bounds and
 * round-trip through JSON; a body with a reason only is an unlock body
 * too, so what the reason parser takes the unlock parser takes alike;
 * every refusal must be answerable (fuzz_ctl.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_ctl.h"

static const ctl_req_limits lim = {
    .max_ttl_s = 7 * 86400, .default_ttl_s = 3600, .max_pin_s = 86400};

static void roundtrip(const ctl_unlock_req *ur)
{
    yajl_gen g = fz_gen();
    const unsigned char *buf;
    size_t len;
    ctl_unlock_req again;
    ctl_req_error err;

    fz_ok(yajl_gen_map_open(g));
    fz_key(g, "reason");
    fz_key(g, ur->reason);
    fz_key(g, "pin_s");
    fz_ok(yajl_gen_integer(g, ur->pin_s));
    fz_key(g, "dry_run");
    fz_ok(yajl_gen_bool(g, ur->dry_run));
    fz_ok(yajl_gen_map_close(g));
    fz_ok(yajl_gen_get_buf(g, &buf, &len));
    if (ctl_req_parse_unlock((const char *)buf, len, &lim, &again, &err) !=
        FG_OK)
        abort();
    if (again.pin_s != ur->pin_s || strcmp(again.reason, ur->reason) != 0 ||
        again.dry_run != ur->dry_run)
        abort();
    yajl_gen_free(g);
}

/* The reason parser against the unlock parser's verdict st / ur. */
static void check_reason(const uint8_t *data, size_t size, fg_status st,
                         const ctl_unlock_req *ur)
{
    char reason[FG_LOCK_REASON_MAX + 1];
    ctl_req_error err;
    memset(&err, 0, sizeof(err));
    fg_status rst = ctl_req_parse_reason((const char *)data, size, reason,
                                         &err);
    if (rst == FG_OK) {
        if (st != FG_OK || strcmp(reason, ur->reason) != 0 ||
            ur->pin_s != 0 || ur->dry_run != 0)
            abort();
    } else if (rst == FG_EINVAL) {
        fz_check_err(&err);
    } else if (rst != FG_ENOMEM) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ctl_unlock_req ur;
    ctl_req_error err;
    fg_status st;

    memset(&err, 0, sizeof(err));
    st = ctl_req_parse_unlock((const char *)data, size, &lim, &ur, &err);
    if (st == FG_OK) {
        size_t rn;
        fz_check_str(ur.reason, sizeof(ur.reason));
        rn = strlen(ur.reason);
        if (rn == 0 || strspn(ur.reason, " ") == rn)
            abort();
        if (ur.pin_s < 0 || ur.pin_s > lim.max_pin_s)
            abort();
        if (ur.dry_run != 0 && ur.dry_run != 1)
            abort();
        roundtrip(&ur);
    } else if (st == FG_EINVAL) {
        fz_check_err(&err);
    } else if (st != FG_ENOMEM) {
        abort();
    }
    check_reason(data, size, st, &ur);
    return 0;
}
