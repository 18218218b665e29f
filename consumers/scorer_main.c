/* SPDX-License-Identifier: Apache-2.0 */
/* fleetgate-scorer: start-up, signals and shutdown. One event loop runs the
 * consumer-group worker (counting), the evaluator (lease, tick, decisions),
 * the Redis connection and the admin listener. */
#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_admin.h"
#include "fg_log.h"
#include "fg_redis.h"
#include "fg_shutdown.h"
#include "sc_config.h"
#include "sc_eval.h"
#include "sc_store.h"
#include "sc_worker.h"

typedef struct sc_app {
    sc_config cfg;
    struct event_base *base;
    fg_redis *r;
    sc_store *store;
    sc_worker *worker;
    sc_eval *eval;
    fg_admin *admin;
} sc_app;

/* fg_redis logs the connection changes itself. */
static void on_redis_up(void *ud)
{
    sc_app *app = ud;
    if (app->worker)
        sc_worker_redis_up(app->worker);
}

static const char *readiness(void *ud)
{
    sc_app *app = ud;
    if (!fg_redis_is_up(app->r))
        return "redis_unavailable";
    return sc_eval_waiting(app->eval);
}

/* Any SIGTERM/SIGINT: nothing to drain, the loop ends at once. */
static void on_shutdown(void *ud, int sig)
{
    sc_app *app = ud;
    fg_log_info("shutdown", "signal=%d", sig);
    fg_admin_set_draining(app->admin);
    event_base_loopexit(app->base, NULL);
}

int main(int argc, char **argv)
{
    sc_app app;
    sc_policy defaults;
    sc_rails rails;
    char err[512], q[600];
    int rc = 1;
    fg_market_map *mm = NULL;
    fg_metrics *m = NULL;
    sc_engine *engine = NULL;
    fg_shutdown *sd = NULL;
    memset(&app, 0, sizeof(app));

    switch (sc_config_load(&app.cfg, &defaults, &rails, argc, argv)) {
    case SC_CLI_EXIT_OK:
        sc_config_free(&app.cfg);
        return 0;
    case SC_CLI_EXIT_FAIL:
        sc_config_free(&app.cfg);
        return 2;
    case SC_CLI_RUN:
        break;
    }
    fg_log_init("scorer", (fg_log_level)fg_log_level_parse(app.cfg.log_level));
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() != 0)
        goto out;
    mm = sc_config_markets(&app.cfg, err, sizeof(err));
    m = fg_metrics_new();
    app.base = event_base_new();
    if (!mm || !m || !app.base) {
        fg_log_error("startup_failed", "err=no_memory");
        goto out;
    }
    fg_redis_opts ro;
    memset(&ro, 0, sizeof(ro));
    ro.command_timeout_ms = (int)app.cfg.redis_timeout_ms;
    ro.on_up = on_redis_up;
    ro.ud = &app;
    app.r = fg_redis_new(app.base, app.cfg.redis_host, (int)app.cfg.redis_port,
                         &ro, err, sizeof(err));
    if (!app.r)
        goto fail_err;
    app.store = sc_store_new(app.r, app.cfg.topic, app.cfg.bucket_ms,
                             app.cfg.window_ms);
    engine = sc_engine_new(&defaults, &rails, err, sizeof(err));
    if (!app.store || !engine ||
        sc_config_overrides(&app.cfg, engine, err, sizeof(err)) != FG_OK)
        goto fail_err;
    app.eval = sc_eval_new(app.base, &app.cfg, app.store, engine, &defaults,
                           &rails, m, err, sizeof(err));
    if (!app.eval)
        goto fail_err;
    engine = NULL; /* owned by the evaluator */
    app.worker = sc_worker_new(app.base, &app.cfg, app.store, mm, m, err,
                               sizeof(err));
    if (!app.worker)
        goto fail_err;
    app.admin = fg_admin_new(app.base, app.cfg.admin_listen, m, readiness,
                             &app, err, sizeof(err));
    if (!app.admin)
        goto fail_err;
    sd = fg_shutdown_new(app.base, on_shutdown, on_shutdown, &app);
    if (!sd)
        goto out;
    fg_log_info("started",
                "id=%s admin=%s topic=%s group=%s policies=%s redis=%s:%lld "
                "enforce=%d",
                app.cfg.scorer_id, app.cfg.admin_listen, app.cfg.topic,
                app.cfg.group,
                app.cfg.policies_topic && app.cfg.policies_topic[0]
                    ? app.cfg.policies_topic
                    : "-",
                app.cfg.redis_host,
                (long long)app.cfg.redis_port, rails.enforce ? 1 : 0);
    event_base_dispatch(app.base);
    rc = 0;
    goto out;
fail_err:
    fg_log_error("startup_failed", "err=%s", fg_log_quote(err, q, sizeof(q)));
out:
    /* Redis first: it completes pending commands (outcome FREED), and their
     * callbacks reach the worker and the evaluator, which must still be
     * alive. Nothing calls Redis after this: the loop is not running. */
    fg_redis_free(app.r);
    app.r = NULL;
    sc_worker_free(app.worker);
    sc_eval_free(app.eval);
    sc_engine_free(engine);
    fg_admin_free(app.admin);
    sc_store_free(app.store);
    fg_shutdown_free(sd);
    if (app.base)
        event_base_free(app.base);
    fg_metrics_free(m);
    fg_market_map_free(mm);
    sc_config_free(&app.cfg);
    fg_log_info("stopped", "rc=%d", rc);
    return rc;
}
