/* SPDX-License-Identifier: Apache-2.0 */
/* fleetgate-gateway: start-up, signals and shutdown. The main thread runs
 * the admin listener and the lock-topic follower; worker threads take
 * device traffic. */
#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_log.h"
#include "fg_admin.h"
#include "fg_shutdown.h"
#include "gw_config.h"
#include "gw_ingest.h"
#include "gw_locks.h"

typedef struct gw_app {
    gw_config cfg;
    struct event_base *base;
    gw_worker **workers;
    int nworkers;
    fg_admin *admin;
    gw_locks *locks;
    gw_prober *prober;
    fg_shutdown *sd;
    struct event *wait_tick;
} gw_app;

static void on_wait_tick(evutil_socket_t fd, short what, void *arg)
{
    gw_app *app = arg;
    (void)fd;
    (void)what;
    for (int i = 0; i < app->nworkers; i++) {
        if (!gw_worker_done(app->workers[i])) {
            struct timeval tv = {0, 20 * 1000};
            evtimer_add(app->wait_tick, &tv);
            return;
        }
    }
    event_base_loopexit(app->base, NULL);
}

/* The first SIGTERM/SIGINT: stop the workers, exit once all are done. */
static void on_shutdown(void *ud, int sig)
{
    gw_app *app = ud;
    fg_log_info("shutdown", "signal=%d timeout_ms=%lld", sig,
                (long long)app->cfg.shutdown_timeout_ms);
    fg_admin_set_draining(app->admin);
    for (int i = 0; i < app->nworkers; i++)
        gw_worker_stop(app->workers[i]);
    on_wait_tick(-1, 0, app);
}

/* A later signal; fg_shutdown then ends the loop without waiting. */
static void on_shutdown_forced(void *ud, int sig)
{
    (void)ud;
    fg_log_warn("shutdown_forced", "signal=%d", sig);
}

/* /readyz: the lock table caught up and every producer usable. */
static const char *readiness(void *ud)
{
    gw_app *app = ud;
    if (!app->locks || !gw_locks_ready(app->locks))
        return "lock_table_catching_up";
    for (int i = 0; i < app->nworkers; i++)
        if (!gw_worker_healthy(app->workers[i]))
            return "broker_unavailable";
    return NULL;
}

static double queue_depth_fn(void *ud)
{
    gw_app *app = ud;
    double n = 0;
    for (int i = 0; i < app->nworkers; i++)
        n += gw_worker_outq(app->workers[i]);
    return n;
}

/* POST /fault/kafka-fatal on the admin listener (gateway.fault_injection
 * only): every producer gets a real fatal error, as if the broker had
 * fenced it, so tests can watch the gateway replace them. */
static void on_fault_fatal(void *ud, fg_http_req *req)
{
    gw_app *app = ud;
    char body[64];
    for (int i = 0; i < app->nworkers; i++)
        gw_worker_inject_fatal(app->workers[i]);
    fg_log_warn("fault_injected", "kind=kafka_fatal workers=%d", app->nworkers);
    int n = snprintf(body, sizeof(body), "{\"injected\":%d}", app->nworkers);
    fg_http_respond(req, 202, "application/json", body, (size_t)n, NULL);
}

static double connections_fn(void *ud)
{
    return (double)atomic_load(&((gw_shared *)ud)->budget.open);
}

static double inflight_bytes_fn(void *ud)
{
    return (double)atomic_load(&((gw_shared *)ud)->budget.body_bytes);
}

int main(int argc, char **argv)
{
    gw_app app;
    gw_shared sh;
    char err[512];
    int rc = 1;
    fg_market_map *markets = NULL;
    fg_metrics *m = NULL;
    gw_lockstore *store = NULL;
    memset(&app, 0, sizeof(app));
    memset(&sh, 0, sizeof(sh));

    switch (gw_config_load(&app.cfg, argc, argv)) {
    case GW_CLI_EXIT_OK:
        gw_config_free(&app.cfg);
        return 0;
    case GW_CLI_EXIT_FAIL:
        gw_config_free(&app.cfg);
        return 2;
    case GW_CLI_RUN:
        break;
    }
    fg_log_init("gateway", (fg_log_level)fg_log_level_parse(app.cfg.log_level));
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() != 0) {
        fg_log_error("startup_failed", "err=%s", "evthread_use_pthreads");
        goto out;
    }
    markets = gw_config_markets(&app.cfg, err, sizeof(err));
    m = fg_metrics_new();
    store = gw_lockstore_new();
    app.base = event_base_new();
    if (!markets || !m || !store || !app.base) {
        fg_log_error("startup_failed", "err=no_memory");
        goto out;
    }
    sh.cfg = &app.cfg;
    sh.m = m;
    sh.locks = store;
    sh.markets = markets;
    sh.budget.max = (long)app.cfg.max_connections;
    sh.budget.max_body_bytes = (long)app.cfg.max_inflight_bytes;
    sh.mx = gw_ingest_metrics_new(m);
    if (!sh.mx)
        goto out;

    app.nworkers = (int)app.cfg.threads;
    app.workers = calloc((size_t)app.nworkers, sizeof(*app.workers));
    if (!app.workers)
        goto out;
    for (int i = 0; i < app.nworkers; i++) {
        app.workers[i] = gw_worker_new(&sh, i, err, sizeof(err));
        if (!app.workers[i]) {
            char q[600];
            fg_log_error("startup_failed", "worker=%d err=%s", i,
                         fg_log_quote(err, q, sizeof(q)));
            goto out;
        }
    }
    app.locks = gw_locks_new(app.base, &app.cfg, store, m, err, sizeof(err));
    if (!app.locks) {
        char q[600];
        fg_log_error("startup_failed", "err=%s", fg_log_quote(err, q, sizeof(q)));
        goto out;
    }
    app.admin = fg_admin_new(app.base, app.cfg.admin_listen, m, readiness,
                             &app, err, sizeof(err));
    if (!app.admin) {
        char q[600];
        fg_log_error("startup_failed", "err=%s", fg_log_quote(err, q, sizeof(q)));
        goto out;
    }
    if (app.cfg.fault_injection &&
        fg_admin_post_route(app.admin, "/fault/kafka-fatal", on_fault_fatal,
                            &app) != FG_OK)
        goto out;
    fg_metrics_gauge_fn(m, "fleetgate_producer_queue_depth",
                        "Records held by the producers (queued, in flight or "
                        "awaiting their delivery report).",
                        "", queue_depth_fn, &app);
    fg_metrics_gauge_fn(m, "fleetgate_http_inflight_body_bytes",
                        "Request body bytes held in memory.", "",
                        inflight_bytes_fn, &sh);
    fg_metrics_gauge_fn(m, "fleetgate_http_connections",
                        "Open device connections.", "", connections_fn, &sh);
    app.wait_tick = evtimer_new(app.base, on_wait_tick, &app);
    if (!app.wait_tick)
        goto out;
    app.sd = fg_shutdown_new(app.base, on_shutdown, on_shutdown_forced, &app);
    if (!app.sd)
        goto out;
    for (int i = 0; i < app.nworkers; i++) {
        if (gw_worker_start(app.workers[i]) != FG_OK) {
            fg_log_error("startup_failed", "err=cannot_start_worker worker=%d", i);
            goto out;
        }
    }
    app.prober = gw_prober_start(app.workers, app.nworkers);
    if (!app.prober) {
        fg_log_error("startup_failed", "err=cannot_start_prober");
        goto out;
    }
    fg_log_info("started",
                "listen=%s admin=%s threads=%d id=%s ack=%s topic=%s locks_topic=%s",
                app.cfg.listen, app.cfg.admin_listen, app.nworkers,
                app.cfg.gw_id, app.cfg.ack_mode, app.cfg.topic,
                app.cfg.locks_topic);
    event_base_dispatch(app.base);
    rc = 0;
    fg_log_info("stopped", "rc=%d", rc);
out:
    if (rc != 0 && app.workers) {
        /* Started workers must end before they are freed. */
        for (int i = 0; i < app.nworkers; i++)
            if (app.workers[i])
                gw_worker_stop(app.workers[i]);
    }
    gw_prober_stop(app.prober);
    for (int i = 0; app.workers && i < app.nworkers; i++)
        gw_worker_free(app.workers[i]);
    free(app.workers);
    fg_admin_free(app.admin);
    gw_locks_free(app.locks);
    fg_shutdown_free(app.sd);
    if (app.wait_tick)
        event_free(app.wait_tick);
    if (app.base)
        event_base_free(app.base);
    gw_ingest_metrics_free(sh.mx);
    gw_lockstore_free(store);
    fg_metrics_free(m);
    fg_market_map_free(markets);
    gw_config_free(&app.cfg);
    return rc;
}
