/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz driver for ctl_req_parse_policy (the body of PUT
 * /v1/regions/{code}/policy). An accepted policy must pass sc_policy_check
 * against the same rails (the scorer would take it), carry a clean reason,
 * and survive a round trip: the normalized JSON the API answers with
 * (ctl_policy_json) plus the reason parses to the same policy. Every
 * refusal must be answerable (fuzz_ctl.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_ctl.h"

static void same_or_abort(const sc_policy *a, const sc_policy *b)
{
    if (a->mode != b->mode || a->scope != b->scope ||
        memcmp(&a->lock_at, &b->lock_at, sizeof(a->lock_at)) != 0 ||
        memcmp(&a->unlock_at, &b->unlock_at, sizeof(a->unlock_at)) != 0 ||
        a->min_devices != b->min_devices || a->for_ms != b->for_ms ||
        a->ttl_ms != b->ttl_ms || a->cooldown_ms != b->cooldown_ms ||
        strcmp(a->message, b->message) != 0)
        abort();
}

static void roundtrip(const sc_policy *p, const char *reason,
                      const sc_rails *rails)
{
    yajl_gen g = fz_gen();
    const unsigned char *buf;
    size_t len;
    sc_policy again;
    char reason2[FG_LOCK_REASON_MAX + 1];
    ctl_req_error err;

    ctl_policy_json(g, p);
    /* Reopen the object to add the reason: write it as a second document
     * would not parse, so splice the text instead. */
    fz_ok(yajl_gen_get_buf(g, &buf, &len));
    if (len < 2 || buf[len - 1] != '}')
        abort();
    yajl_gen r = fz_gen();
    const unsigned char *rbuf;
    size_t rlen;
    fz_key(r, reason);
    fz_ok(yajl_gen_get_buf(r, &rbuf, &rlen));
    size_t cap = len + rlen + 16;
    char *text = malloc(cap);
    if (!text)
        abort();
    memcpy(text, buf, len - 1);
    size_t n = len - 1;
    memcpy(text + n, ",\"reason\":", 10);
    n += 10;
    memcpy(text + n, rbuf, rlen);
    n += rlen;
    text[n++] = '}';
    if (ctl_req_parse_policy(text, n, rails, &again, reason2, &err) != FG_OK)
        abort();
    same_or_abort(p, &again);
    if (strcmp(reason, reason2) != 0)
        abort();
    free(text);
    yajl_gen_free(r);
    yajl_gen_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sc_rails rails;
    sc_policy p;
    char reason[FG_LOCK_REASON_MAX + 1];
    ctl_req_error err;
    fg_status st;

    sc_rails_default(&rails);
    memset(&err, 0, sizeof(err));
    st = ctl_req_parse_policy((const char *)data, size, &rails, &p, reason,
                              &err);
    if (st == FG_OK) {
        size_t rn;
        fz_check_str(reason, sizeof(reason));
        rn = strlen(reason);
        if (rn == 0 || strspn(reason, " ") == rn)
            abort();
        if (sc_policy_check(&p, &rails, NULL, 0) != FG_OK)
            abort();
        fz_check_str(p.message, sizeof(p.message));
        roundtrip(&p, reason, &rails);
    } else if (st == FG_EINVAL) {
        fz_check_err(&err);
    } else if (st != FG_ENOMEM) {
        abort();
    }
    return 0;
}
