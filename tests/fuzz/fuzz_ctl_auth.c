/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz driver for ctl_auth_check's parsing of the Authorization header.
 * The input is the header value (cut at the first NUL, as the HTTP layer
 * hands it over; empty input stands for an absent header). Oracle: a
 * separate reading of the documented syntax ("Bearer", case-insensitive,
 * then spaces or tabs, a token of 1..CTL_TOKEN_MAX visible ASCII bytes,
 * optional spaces or tabs around) against a table with two known tokens
 * must agree on the result, the actor and the role. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl_auth.h"

static const struct {
    const char *actor, *role, *token;
    ctl_role r;
} known[] = {
    {"alice", "viewer", "fuzz-viewer-token-0001", CTL_ROLE_VIEWER},
    {"bob@ops", "admin", "fuzz-admin-token-0002!", CTL_ROLE_ADMIN},
};

static ctl_auth *table(void)
{
    static ctl_auth *a;
    if (a)
        return a;
    a = ctl_auth_new();
    if (!a)
        abort();
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        unsigned char d[CTL_SHA256_LEN];
        char hex[65], value[96], err[128];
        if (ctl_sha256(known[i].token, strlen(known[i].token), d) != 0)
            abort();
        ctl_sha256_hex(d, hex);
        snprintf(value, sizeof(value), "%s:%s", known[i].role, hex);
        if (ctl_auth_add(a, known[i].actor, value, err, sizeof(err)) != FG_OK)
            abort();
    }
    return a;
}

static int blank(char c)
{
    return c == ' ' || c == '\t';
}

/* The documented reading; *idx gets the matching entry on CTL_AUTH_OK. */
static ctl_auth_result reference(const char *h, size_t *idx)
{
    if (!h)
        return CTL_AUTH_MISSING;
    while (blank(*h))
        h++;
    if (strncasecmp(h, "bearer", 6) != 0 || !blank(h[6]))
        return CTL_AUTH_MALFORMED;
    h += 6;
    while (blank(*h))
        h++;
    size_t n = strlen(h);
    while (n && blank(h[n - 1]))
        n--;
    if (n == 0 || n > CTL_TOKEN_MAX)
        return CTL_AUTH_MALFORMED;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)h[i] < 0x21 || (unsigned char)h[i] > 0x7e)
            return CTL_AUTH_MALFORMED;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strlen(known[i].token) == n && memcmp(known[i].token, h, n) == 0) {
            *idx = i;
            return CTL_AUTH_OK;
        }
    return CTL_AUTH_UNKNOWN;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ctl_auth *a = table();
    ctl_principal who;
    size_t idx = 0;
    char *h = NULL;

    if (size > 0) {
        h = malloc(size + 1);
        if (!h)
            return 0;
        memcpy(h, data, size);
        h[size] = '\0';
    }
    memset(&who, 0x5a, sizeof(who));
    ctl_auth_result got = ctl_auth_check(a, h, &who);
    ctl_auth_result want = reference(h, &idx);
    if (got != want)
        abort();
    if (!memchr(who.actor, '\0', sizeof(who.actor)))
        abort();
    if (got == CTL_AUTH_OK) {
        if (strcmp(who.actor, known[idx].actor) != 0 ||
            who.role != known[idx].r)
            abort();
    } else if (who.actor[0] || who.role != CTL_ROLE_NONE) {
        abort();
    }
    free(h);
    return 0;
}
