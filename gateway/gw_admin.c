/* SPDX-License-Identifier: Apache-2.0 */
/* Admin HTTP routes served on the main loop. */
#include "gw_admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fg_http.h"

struct gw_admin {
    fg_http_server *srv;
    fg_metrics *m;
    gw_locks *locks;
    gw_worker **workers;
    int n;
    int draining;
};

static void on_admin(void *ud, fg_http_req *req)
{
    gw_admin *a = ud;
    size_t plen;
    const char *path = fg_http_req_path(req, &plen);
    fg_http_method meth = fg_http_req_method(req);
    if (meth != FG_HTTP_GET && meth != FG_HTTP_HEAD) {
        fg_http_respond_error(req, 405, "method_not_allowed", "use GET",
                              "Allow: GET, HEAD\r\n");
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        size_t len = 0;
        char *text = fg_metrics_render(a->m, &len);
        if (!text) {
            fg_http_respond_error(req, 500, "no_memory", NULL, NULL);
            return;
        }
        fg_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                        text, len, NULL);
        free(text);
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        static const char ok[] = "{\"status\":\"ok\"}";
        fg_http_respond(req, 200, "application/json", ok, sizeof(ok) - 1,
                        NULL);
        return;
    }
    if (strcmp(path, "/readyz") == 0) {
        const char *why = NULL;
        if (a->draining)
            why = "draining";
        else if (!gw_locks_ready(a->locks))
            why = "lock_table_catching_up";
        for (int i = 0; !why && i < a->n; i++)
            if (!gw_worker_healthy(a->workers[i]))
                why = "broker_unavailable";
        char body[128];
        int n = why ? snprintf(body, sizeof(body),
                               "{\"status\":\"not_ready\",\"reason\":\"%s\"}",
                               why)
                    : snprintf(body, sizeof(body), "{\"status\":\"ready\"}");
        fg_http_respond(req, why ? 503 : 200, "application/json", body,
                        (size_t)n, NULL);
        return;
    }
    fg_http_respond_error(req, 404, "not_found", NULL, NULL);
}

gw_admin *gw_admin_new(struct event_base *base, const char *addr,
                       fg_metrics *m, gw_locks *locks, gw_worker **workers,
                       int n, char *errbuf, size_t errlen)
{
    gw_admin *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    a->m = m;
    a->locks = locks;
    a->workers = workers;
    a->n = n;
    int fd = fg_http_listen(addr, 0, errbuf, errlen);
    if (fd < 0) {
        free(a);
        return NULL;
    }
    fg_http_limits lim = {
        .max_header_bytes = 16 * 1024,
        .max_body_bytes = 4096,
        .read_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
        .write_timeout_ms = 10000,
    };
    a->srv = fg_http_server_new(base, fd, &lim, NULL, on_admin, a, errbuf,
                                errlen);
    if (!a->srv) {
        close(fd);
        free(a);
        return NULL;
    }
    return a;
}

void gw_admin_set_draining(gw_admin *a)
{
    a->draining = 1;
}

void gw_admin_free(gw_admin *a)
{
    if (!a)
        return;
    fg_http_server_free(a->srv);
    free(a);
}
