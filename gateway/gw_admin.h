/* SPDX-License-Identifier: Apache-2.0 */
/* The admin listener (loopback by default): GET /metrics (Prometheus text),
 * GET /healthz (the process and its loop answer) and GET /readyz (ready to
 * take devices: lock table caught up, producers usable, not draining). */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <stddef.h>

#include "fg_metrics.h"
#include "gw_ingest.h"
#include "gw_locks.h"

struct event_base;

typedef struct gw_admin gw_admin;

/* Listens on addr on base (the main loop). workers (n of them), locks and m
 * are borrowed and must outlive the admin server. NULL with errbuf on
 * error. @thread main */
gw_admin *gw_admin_new(struct event_base *base, const char *addr,
                       fg_metrics *m, gw_locks *locks, gw_worker **workers,
                       int n, char *errbuf, size_t errlen);

/* From now on /readyz answers 503 "draining". @thread main */
void gw_admin_set_draining(gw_admin *a);

/* NULL is a no-op. @thread main */
void gw_admin_free(gw_admin *a);

#endif
