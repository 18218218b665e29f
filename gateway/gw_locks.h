/* SPDX-License-Identifier: Apache-2.0 */
/* The gateway's view of fleet.region-locks. The follower reads the compacted
 * topic from the beginning on the main loop and publishes an immutable
 * snapshot of the lock table after each batch; worker threads pick up the
 * newest snapshot with one atomic load per request and a mutex only when it
 * changed. */
#ifndef GW_LOCKS_H
#define GW_LOCKS_H

#include <stdint.h>

#include "fg_lock.h"
#include "fg_metrics.h"
#include "gw_config.h"

struct event_base;

typedef struct gw_lockstore gw_lockstore;
typedef struct gw_locksnap gw_locksnap;

/* A worker's reference to the newest snapshot. Zero-initialise it. */
typedef struct gw_lockview {
    gw_locksnap *snap;
    uint64_t version;
} gw_lockview;

/* NULL when out of memory. */
gw_lockstore *gw_lockstore_new(void);
/* Frees the store; every view must have been released. NULL is a no-op. */
void gw_lockstore_free(gw_lockstore *s);

/* The table to match against: the newest snapshot. Borrowed until the next
 * call with the same view. @thread any (one view per thread) */
const fg_lock_table *gw_lockview_get(gw_lockview *v, gw_lockstore *s);
/* Drops the view's reference. */
void gw_lockview_release(gw_lockview *v, gw_lockstore *s);

/* Regions in the newest snapshot. @thread any */
size_t gw_lockstore_size(gw_lockstore *s);

typedef struct gw_locks gw_locks;

/* Starts following cfg->locks_topic on base (the main loop). Finding the
 * topic's partitions is a blocking metadata request, so it runs on a helper
 * thread that retries until the topic exists. NULL with errbuf on error.
 * @thread main */
gw_locks *gw_locks_new(struct event_base *base, const gw_config *cfg,
                       gw_lockstore *store, fg_metrics *m, char *errbuf,
                       size_t errlen);

/* True once every partition has been read up to its end at least once.
 * @thread any */
int gw_locks_ready(const gw_locks *l);

/* Stops the helper thread and the consumer. NULL is a no-op. @thread main */
void gw_locks_free(gw_locks *l);

#endif
