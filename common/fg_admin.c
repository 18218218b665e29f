/* SPDX-License-Identifier: Apache-2.0 */
/* Admin HTTP routes on the fg_http layer, shared by every daemon. */
#include "fg_admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fg_http.h"

struct fg_admin {
    fg_http_server *srv;
    fg_metrics *m;
    fg_admin_ready_fn ready;
    void *ud;
    int draining;
    int port;
    struct {
        const char *path;
        fg_http_handler handler;
        void *ud;
    } routes[FG_ADMIN_MAX_ROUTES];
    size_t nroutes;
};

static void on_admin(void *ud, fg_http_req *req)
{
    fg_admin *a = ud;
    const char *path = fg_http_req_path(req, NULL);
    fg_http_method meth = fg_http_req_method(req);
    for (size_t i = 0; i < a->nroutes; i++) {
        if (strcmp(path, a->routes[i].path) != 0)
            continue;
        if (meth != FG_HTTP_POST) {
            fg_http_respond_error(req, 405, "method_not_allowed", "use POST",
                                  "Allow: POST\r\n");
            return;
        }
        a->routes[i].handler(a->routes[i].ud, req);
        return;
    }
    if (strcmp(path, "/metrics") != 0 && strcmp(path, "/healthz") != 0 &&
        strcmp(path, "/readyz") != 0) {
        fg_http_respond_error(req, 404, "not_found", NULL, NULL);
        return;
    }
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
        const char *why = a->draining ? "draining"
                          : a->ready  ? a->ready(a->ud)
                                      : NULL;
        char body[160];
        int n = why ? snprintf(body, sizeof(body),
                               "{\"status\":\"not_ready\",\"reason\":\"%s\"}",
                               why)
                    : snprintf(body, sizeof(body), "{\"status\":\"ready\"}");
        fg_http_respond(req, why ? 503 : 200, "application/json", body,
                        (size_t)n, NULL);
        return;
    }
}

fg_admin *fg_admin_new(struct event_base *base, const char *addr,
                       fg_metrics *m, fg_admin_ready_fn ready, void *ud,
                       char *errbuf, size_t errlen)
{
    fg_admin *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    a->m = m;
    a->ready = ready;
    a->ud = ud;
    int fd = fg_http_listen(addr, 0, errbuf, errlen);
    if (fd < 0) {
        free(a);
        return NULL;
    }
    a->port = fg_http_bound_port(fd);
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

fg_status fg_admin_post_route(fg_admin *a, const char *path,
                              fg_http_handler handler, void *ud)
{
    if (a->nroutes == FG_ADMIN_MAX_ROUTES)
        return FG_ETOOBIG;
    a->routes[a->nroutes].path = path;
    a->routes[a->nroutes].handler = handler;
    a->routes[a->nroutes].ud = ud;
    a->nroutes++;
    return FG_OK;
}

void fg_admin_set_draining(fg_admin *a)
{
    a->draining = 1;
}

int fg_admin_port(const fg_admin *a)
{
    return a->port;
}

void fg_admin_free(fg_admin *a)
{
    if (!a)
        return;
    fg_http_server_free(a->srv);
    free(a);
}
