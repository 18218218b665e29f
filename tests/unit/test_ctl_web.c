/* SPDX-License-Identifier: Apache-2.0 */
/* ctl_web: which paths name the embedded dashboard files, their types, the
 * security headers, and that the embedded bytes are a whole page that loads
 * nothing from elsewhere. */
#include <string.h>

#include "ctl_web.h"
#include "fg_test.h"

static const ctl_web_file *find(const char *path)
{
    return ctl_web_find(path, strlen(path));
}

static void test_paths(void)
{
    const ctl_web_file *f = find("/");
    FG_CHECK(f != NULL);
    FG_CHECK_STR(f ? f->name : NULL, "dashboard.html");
    FG_CHECK(find("/dashboard.html") == f);
    f = find("/dashboard.js");
    FG_CHECK_STR(f ? f->name : NULL, "dashboard.js");
    f = find("/dashboard.css");
    FG_CHECK_STR(f ? f->name : NULL, "dashboard.css");
    f = find("/favicon.svg");
    FG_CHECK_STR(f ? f->name : NULL, "favicon.svg");
    /* Everything else is the API's to answer (404 there). */
    const char *others[] = {"", "dashboard.js", "//", "/dashboard.js/",
                            "/dashboard.jsx", "/DASHBOARD.JS", "/v1/regions",
                            "/../dashboard.js", "/dashboard", "/.js"};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        if (find(others[i]) != NULL)
            fprintf(stderr, "served: \"%s\"\n", others[i]);
        FG_CHECK(find(others[i]) == NULL);
    }
    /* The path's length counts, not a NUL: "/dashboard.js" cut at "/". */
    FG_CHECK(ctl_web_find("/dashboard.js", 1) == find("/"));
}

static void test_types(void)
{
    FG_CHECK_STR(ctl_web_type(find("/")), "text/html; charset=utf-8");
    FG_CHECK_STR(ctl_web_type(find("/dashboard.js")),
                 "text/javascript; charset=utf-8");
    FG_CHECK_STR(ctl_web_type(find("/dashboard.css")),
                 "text/css; charset=utf-8");
    FG_CHECK_STR(ctl_web_type(find("/favicon.svg")), "image/svg+xml");
}

static void test_headers(void)
{
    const char *h = ctl_web_headers();
    FG_CHECK(strstr(h, "Content-Security-Policy: default-src 'self';") != NULL);
    FG_CHECK(strstr(h, "script-src 'self';") != NULL);
    FG_CHECK(strstr(h, "unsafe-") == NULL);
    FG_CHECK(strstr(h, "X-Content-Type-Options: nosniff\r\n") != NULL);
    FG_CHECK(strstr(h, "Cache-Control: no-cache\r\n") != NULL);
    size_t n = strlen(h);
    FG_CHECK(n > 2 && strcmp(h + n - 2, "\r\n") == 0);
}

static void test_embedded_bytes(void)
{
    FG_CHECK(ctl_web_nfiles >= 3);
    for (size_t i = 0; i < ctl_web_nfiles; i++) {
        const ctl_web_file *f = &ctl_web_files[i];
        const char *text = (const char *)f->data;
        FG_CHECK(f->len > 100);
        FG_CHECK(f->data[f->len] == '\0');
        FG_CHECK_INT(strlen(text), f->len); /* text files, no NUL inside */
        /* Works offline: no other origin is ever referenced (the SVG
         * namespace is a name, not a fetch). */
        FG_CHECK(strstr(text, "https://") == NULL);
        const char *http = text;
        while ((http = strstr(http, "http://")) != NULL) {
            FG_CHECK(strncmp(http, "http://www.w3.org/2000/svg", 26) == 0);
            http += 7;
        }
        if (i > 0)
            FG_CHECK(strcmp(ctl_web_files[i - 1].name, f->name) < 0);
    }
    const char *html = (const char *)find("/")->data;
    FG_CHECK(strstr(html, "<script src=\"dashboard.js\"") != NULL);
    FG_CHECK(strstr(html, "href=\"dashboard.css\"") != NULL);
    /* No inline script: the CSP would refuse it. */
    FG_CHECK(strstr(html, "<script>") == NULL);
    FG_CHECK(strstr(html, " onclick=") == NULL);
    FG_CHECK(strstr(html, " style=") == NULL);
}

FG_TEST_MAIN(test_paths, test_types, test_headers, test_embedded_bytes)
