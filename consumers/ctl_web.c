/* SPDX-License-Identifier: Apache-2.0 */
/* Serves the embedded dashboard files (see ctl_web.h); the bytes come from
 * the source that consumers/web/embed.cmake generates in the build tree. */
#include "ctl_web.h"

#include <string.h>

/* Everything the page loads comes from this origin: no CDN, no inline
 * script or style, no plug-ins, no framing; forms are handled by script,
 * so a form that would navigate (and put a token in a URL) is refused. */
static const char web_headers[] =
    "Content-Security-Policy: default-src 'self'; script-src 'self'; "
    "style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "X-Frame-Options: DENY\r\n"
    "Referrer-Policy: no-referrer\r\n"
    /* Revalidated on every load: a new binary's page is seen at once. */
    "Cache-Control: no-cache\r\n";

const ctl_web_file *ctl_web_find(const char *path, size_t len)
{
    const char *name = "dashboard.html";
    size_t nlen = strlen(name);
    if (len == 0 || path[0] != '/')
        return NULL;
    if (len > 1) {
        name = path + 1;
        nlen = len - 1;
    }
    for (size_t i = 0; i < ctl_web_nfiles; i++) {
        const ctl_web_file *f = &ctl_web_files[i];
        if (strlen(f->name) == nlen && memcmp(f->name, name, nlen) == 0)
            return f;
    }
    return NULL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

const char *ctl_web_type(const ctl_web_file *f)
{
    if (ends_with(f->name, ".html"))
        return "text/html; charset=utf-8";
    if (ends_with(f->name, ".js"))
        return "text/javascript; charset=utf-8";
    if (ends_with(f->name, ".css"))
        return "text/css; charset=utf-8";
    if (ends_with(f->name, ".svg"))
        return "image/svg+xml";
    return "application/octet-stream";
}

const char *ctl_web_headers(void)
{
    return web_headers;
}

int ctl_web_serve(fg_http_req *req)
{
    size_t plen = 0;
    const char *path = fg_http_req_path(req, &plen);
    const ctl_web_file *f = ctl_web_find(path, plen);
    if (!f)
        return 0;
    fg_http_method meth = fg_http_req_method(req);
    if (meth != FG_HTTP_GET && meth != FG_HTTP_HEAD) {
        fg_http_respond_error(req, 405, "method_not_allowed",
                              "the dashboard is read with GET",
                              "Allow: GET, HEAD\r\n");
        return 1;
    }
    /* HEAD: fg_http sends the headers (with the length) and no body. */
    fg_http_respond(req, 200, ctl_web_type(f), f->data, f->len, web_headers);
    return 1;
}
