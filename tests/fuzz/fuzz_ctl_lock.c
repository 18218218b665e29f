/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz driver for ctl_req_parse_lock (the body of POST
 * /v1/regions/{code}/lock). Every accepted body must give fields within
 * their documented bounds and survive a round trip: the request written
 * back as JSON parses to the same request. Every refusal must be
 * answerable (fuzz_ctl.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_ctl.h"

static const ctl_req_limits lim = {
    .max_ttl_s = 7 * 86400, .default_ttl_s = 3600, .max_pin_s = 86400};

static void check_fields(const ctl_lock_req *lr)
{
    size_t rn;
    fz_check_str(lr->reason, sizeof(lr->reason));
    fz_check_str(lr->message, sizeof(lr->message));
    rn = strlen(lr->reason);
    if (rn == 0 || strspn(lr->reason, " ") == rn)
        abort(); /* reason is required and not blank */
    if (lr->ttl_s < 1 || lr->ttl_s > lim.max_ttl_s)
        abort();
    if (lr->scope != FG_SCOPE_GREY && lr->scope != FG_SCOPE_ALL)
        abort();
    if ((lr->dry_run != 0 && lr->dry_run != 1) ||
        (lr->has_message != 0 && lr->has_message != 1) ||
        (!lr->has_message && lr->message[0]))
        abort();
}

static void roundtrip(const ctl_lock_req *lr)
{
    yajl_gen g = fz_gen();
    const unsigned char *buf;
    size_t len;
    ctl_lock_req again;
    ctl_req_error err;

    fz_ok(yajl_gen_map_open(g));
    fz_key(g, "reason");
    fz_key(g, lr->reason);
    fz_key(g, "ttl_s");
    fz_ok(yajl_gen_integer(g, lr->ttl_s));
    fz_key(g, "scope");
    fz_key(g, lr->scope == FG_SCOPE_ALL ? "all" : "grey");
    if (lr->has_message) {
        fz_key(g, "message");
        fz_key(g, lr->message);
    }
    fz_key(g, "dry_run");
    fz_ok(yajl_gen_bool(g, lr->dry_run));
    fz_ok(yajl_gen_map_close(g));
    fz_ok(yajl_gen_get_buf(g, &buf, &len));
    if (ctl_req_parse_lock((const char *)buf, len, &lim, &again, &err) !=
        FG_OK)
        abort();
    if (again.ttl_s != lr->ttl_s || again.scope != lr->scope ||
        strcmp(again.reason, lr->reason) != 0 ||
        strcmp(again.message, lr->message) != 0 ||
        again.has_message != lr->has_message || again.dry_run != lr->dry_run)
        abort();
    yajl_gen_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ctl_lock_req lr;
    ctl_req_error err;
    fg_status st;

    memset(&err, 0, sizeof(err));
    st = ctl_req_parse_lock((const char *)data, size, &lim, &lr, &err);
    if (st == FG_OK) {
        check_fields(&lr);
        roundtrip(&lr);
    } else if (st == FG_EINVAL) {
        fz_check_err(&err);
    } else if (st != FG_ENOMEM) {
        abort();
    }
    return 0;
}
