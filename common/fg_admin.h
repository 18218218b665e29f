/* SPDX-License-Identifier: Apache-2.0 */
/* The admin listener every daemon runs (loopback by default): GET /metrics
 * (Prometheus text), GET /healthz (the process and its loop answer) and
 * GET /readyz (the daemon's own readiness check decides). */
#ifndef FG_ADMIN_H
#define FG_ADMIN_H

#include <stddef.h>

#include "fg_http.h"
#include "fg_metrics.h"

struct event_base;

typedef struct fg_admin fg_admin;

/* Decides /readyz: returns NULL when ready, else a short static reason
 * ("draining", "lock_table_catching_up"). @thread the admin loop's */
typedef const char *(*fg_admin_ready_fn)(void *ud);

/* Listens on addr ("host:port") on base. m (borrowed) must outlive the
 * server. ready(ud) is asked on every /readyz. NULL with errbuf on error.
 * @thread the loop's */
fg_admin *fg_admin_new(struct event_base *base, const char *addr,
                       fg_metrics *m, fg_admin_ready_fn ready, void *ud,
                       char *errbuf, size_t errlen);

/* Most extra routes one admin listener takes. */
#define FG_ADMIN_MAX_ROUTES 4

/* Adds POST path (exact match; borrowed, must outlive the listener) served
 * by handler(ud, req), which answers as any fg_http handler. For operator
 * or test hooks a daemon opts into; GET routes stay the fixed three.
 * FG_ETOOBIG past FG_ADMIN_MAX_ROUTES. @thread the loop's */
fg_status fg_admin_post_route(fg_admin *a, const char *path,
                              fg_http_handler handler, void *ud);

/* From now on /readyz answers 503 "draining". @thread the loop's */
void fg_admin_set_draining(fg_admin *a);

/* The port the listener is bound to (useful with ":0"). */
int fg_admin_port(const fg_admin *a);

/* NULL is a no-op. @thread the loop's */
void fg_admin_free(fg_admin *a);

#endif
