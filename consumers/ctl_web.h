/* SPDX-License-Identifier: Apache-2.0 */
/* The control service's web dashboard: the static files of consumers/web/,
 * embedded into the binary at build time (consumers/web/embed.cmake
 * generates the table), served without authentication under a strict
 * Content-Security-Policy. The page holds no data: everything it shows
 * comes from the JSON API with the token the operator types. */
#ifndef CTL_WEB_H
#define CTL_WEB_H

#include <stddef.h>

#include "fg_http.h"

/* One embedded file. data holds len bytes and a NUL after them. */
typedef struct ctl_web_file {
    const char *name;          /* "dashboard.js": its name in consumers/web */
    const unsigned char *data; /* static */
    size_t len;
} ctl_web_file;

/* The embedded files, in name order (defined by the generated source). */
extern const ctl_web_file ctl_web_files[];
extern const size_t ctl_web_nfiles;

/* The file the path (len bytes, without the query) names: "/" is
 * dashboard.html, "/NAME" an embedded file; NULL otherwise. Static.
 * @thread any */
const ctl_web_file *ctl_web_find(const char *path, size_t len);

/* The Content-Type of f, from its extension ("text/html; charset=utf-8").
 * Static. @thread any */
const char *ctl_web_type(const ctl_web_file *f);

/* The security and caching headers every dashboard answer carries, CRLF
 * terminated (Content-Security-Policy default-src 'self', nosniff, ...).
 * Static. @thread any */
const char *ctl_web_headers(void);

/* Answers req when its path names an embedded file: GET and HEAD get 200
 * with the file, any other method 405 with Allow. Returns 1 when it
 * answered (req is then released), 0 when the path is not the dashboard's
 * (req untouched, for the API's router). @thread the loop's */
int ctl_web_serve(fg_http_req *req);

#endif
