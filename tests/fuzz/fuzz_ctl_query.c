/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz driver for ctl_req_list_query (the query of GET /v1/regions). The
 * input is the query string (cut at the first NUL, as a C string). An
 * accepted query must name a known sort and state, use only the keys sort
 * and state, and its canonical form must parse to the same result; a
 * refusal must be answerable (fuzz_ctl.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_ctl.h"

static const char *const sorts[] = {"region", "share", "devices"};
static const char *const states[] = {"unlocked", "locked", "shadow",
                                     "suppressed", "expired"};

/* Every '&'-separated piece is sort=... or state=... (the last may be
 * empty: one trailing '&' is tolerated). */
static void keys_or_abort(const char *q)
{
    const char *p = q;
    while (*p) {
        size_t n = strcspn(p, "&");
        if (strncmp(p, "sort=", 5) != 0 && strncmp(p, "state=", 6) != 0)
            abort();
        if (strcspn(p, "=") >= n)
            abort();
        p += n;
        if (*p == '&')
            p++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *q = malloc(size + 1);
    ctl_list_query lq, again;
    ctl_req_error err;
    char canon[64];

    if (!q)
        return 0;
    memcpy(q, data, size);
    q[size] = '\0';
    memset(&err, 0, sizeof(err));
    if (ctl_req_list_query(q, &lq, &err) == FG_OK) {
        if (lq.sort < CTL_SORT_REGION || lq.sort > CTL_SORT_DEVICES ||
            lq.state < -1 || lq.state > CTL_STATE_EXPIRED)
            abort();
        keys_or_abort(q);
        if (lq.state >= 0)
            snprintf(canon, sizeof(canon), "state=%s&sort=%s",
                     states[lq.state], sorts[lq.sort]);
        else
            snprintf(canon, sizeof(canon), "sort=%s", sorts[lq.sort]);
        if (ctl_req_list_query(canon, &again, &err) != FG_OK ||
            again.sort != lq.sort || again.state != lq.state)
            abort();
    } else {
        fz_check_err(&err);
    }
    free(q);
    return 0;
}
