/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz driver for ctl_route_match. The first byte picks the method, the
 * rest is the path. Oracle: a separate matcher written from the route
 * table in ctl_req.h (literal prefix, one non-empty segment without '/',
 * literal suffix; DELETE on a policy path is its reset) must agree on the
 * route, the segment copied (cut at CTL_SEGMENT_MAX, NUL-terminated) and
 * whether the method is allowed, and the Allow header of a 405 must list
 * exactly the methods the path takes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_ctl.h"

static const struct {
    ctl_route r;
    const char *prefix, *suffix; /* suffix NULL: no {segment} */
} table[] = {
    {CTL_ROUTE_LIST, "/v1/regions", NULL},
    {CTL_ROUTE_REGION, "/v1/regions/", ""},
    {CTL_ROUTE_LOCK, "/v1/regions/", "/lock"},
    {CTL_ROUTE_UNLOCK, "/v1/regions/", "/unlock"},
    {CTL_ROUTE_POLICY, "/v1/regions/", "/policy"},
    {CTL_ROUTE_UNLOCK_ALL, "/v1/locks/unlock-all", NULL},
    {CTL_ROUTE_STREAM, "/v1/stream", NULL},
    {CTL_ROUTE_APPROVE, "/v1/requests/", "/approve"},
};

/* The route of a path the table named, for method m. */
static ctl_route for_method(ctl_route r, fg_http_method m)
{
    if (r == CTL_ROUTE_POLICY && m == FG_HTTP_DELETE)
        return CTL_ROUTE_POLICY_RESET;
    return r;
}

/* The route of path by the table (before for_method), with its segment in
 * *seg / *segn. */
static ctl_route reference(const char *path, size_t len, const char **seg,
                           size_t *segn)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        size_t pn = strlen(table[i].prefix);
        if (len < pn || memcmp(path, table[i].prefix, pn) != 0)
            continue;
        if (!table[i].suffix) {
            if (len == pn) {
                *seg = NULL;
                *segn = 0;
                return table[i].r;
            }
            continue;
        }
        size_t sn = strlen(table[i].suffix);
        if (len < pn + sn + 1 ||
            memcmp(path + len - sn, table[i].suffix, sn) != 0)
            continue;
        size_t mn = len - pn - sn;
        if (memchr(path + pn, '/', mn))
            continue;
        *seg = path + pn;
        *segn = mn;
        return table[i].r;
    }
    *seg = NULL;
    *segn = 0;
    return CTL_ROUTE_NONE;
}

static int allowed(ctl_route r, fg_http_method m)
{
    if (r == CTL_ROUTE_LIST || r == CTL_ROUTE_REGION)
        return m == FG_HTTP_GET || m == FG_HTTP_HEAD;
    if (r == CTL_ROUTE_STREAM)
        return m == FG_HTTP_GET;
    if (r == CTL_ROUTE_POLICY)
        return m == FG_HTTP_PUT;
    if (r == CTL_ROUTE_POLICY_RESET)
        return m == FG_HTTP_DELETE;
    return r != CTL_ROUTE_NONE && m == FG_HTTP_POST;
}

/* True when the Allow value ("GET, HEAD") lists method name. */
static int allow_lists(const char *allow, const char *name)
{
    size_t nn = strlen(name);
    for (const char *a = allow;;) {
        size_t k = strcspn(a, ",");
        if (k == nn && memcmp(a, name, nn) == 0)
            return 1;
        if (!a[k])
            return 0;
        a += k + 1;
        while (*a == ' ')
            a++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char region[CTL_SEGMENT_MAX + 1];
    int method_ok = -1;
    const char *seg;
    size_t segn;

    if (size == 0)
        return 0;
    fg_http_method m = (fg_http_method)(data[0] % (FG_HTTP_DELETE + 1));
    const char *path = (const char *)data + 1;
    size_t len = size - 1;
    memset(region, 0x5a, sizeof(region));
    ctl_route r = ctl_route_match(m, path, len, region, &method_ok);
    ctl_route table_r = reference(path, len, &seg, &segn);
    ctl_route want = for_method(table_r, m);
    if (r != want || method_ok != allowed(want, m))
        abort();
    if (!memchr(region, '\0', sizeof(region)))
        abort();
    size_t keep = segn < CTL_SEGMENT_MAX ? segn : CTL_SEGMENT_MAX;
    if (memcmp(region, seg ? seg : "", keep) != 0 || region[keep] != '\0')
        abort();
    if (r != CTL_ROUTE_NONE && strcmp(ctl_route_str(r), "none") == 0)
        abort();
    /* The Allow header lists exactly the methods some route of the path
     * takes. */
    static const char *const names[] = {"", "GET", "HEAD", "POST", "PUT",
                                        "DELETE"};
    if (r != CTL_ROUTE_NONE)
        for (int k = FG_HTTP_GET; k <= FG_HTTP_DELETE; k++) {
            fg_http_method mk = (fg_http_method)k;
            if (allow_lists(ctl_route_allow(r), names[k]) !=
                allowed(for_method(table_r, mk), mk))
                abort();
        }
    return 0;
}
