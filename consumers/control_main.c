/* SPDX-License-Identifier: Apache-2.0 */
/* fleetgate-control: start-up, signals and shutdown of the control service.
 * One event loop runs the API listener, the producer of lock and audit
 * records, the lock-topic and score-topic readers and the admin listener. */
#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "ctl_api.h"
#include "ctl_config.h"
#include "fg_admin.h"
#include "fg_log.h"
#include "fg_shutdown.h"

typedef struct ctl_app {
    ctl_config cfg;
    struct event_base *base;
    ctl_api *api;
    fg_admin *admin;
    struct event *drain_tick;
    int64_t drain_left_ms;
} ctl_app;

static const char *readiness(void *ud)
{
    ctl_app *app = ud;
    return ctl_api_ready(app->api);
}

/* While draining: stop once no action waits on the broker, or at the
 * shutdown deadline. */
static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    ctl_app *app = arg;
    (void)fd;
    (void)what;
    app->drain_left_ms -= 50;
    if (ctl_api_pending(app->api) == 0 || app->drain_left_ms <= 0) {
        if (ctl_api_pending(app->api))
            fg_log_warn("shutdown_timeout", "pending=%zu",
                        ctl_api_pending(app->api));
        event_base_loopexit(app->base, NULL);
    }
}

/* The first SIGTERM/SIGINT; fg_shutdown ends the loop on a second one. */
static void on_shutdown(void *ud, int sig)
{
    ctl_app *app = ud;
    fg_log_info("shutdown", "signal=%d pending=%zu", sig,
                ctl_api_pending(app->api));
    fg_admin_set_draining(app->admin);
    ctl_api_drain(app->api);
    app->drain_left_ms = app->cfg.shutdown_timeout_ms;
    app->drain_tick = event_new(app->base, -1, EV_PERSIST, on_drain_tick, app);
    struct timeval tv = {0, 50 * 1000};
    if (!app->drain_tick || event_add(app->drain_tick, &tv) != 0)
        event_base_loopexit(app->base, NULL);
}

int main(int argc, char **argv)
{
    ctl_app app;
    char err[512], q[600];
    int rc = 1;
    fg_metrics *m = NULL;
    fg_shutdown *sd = NULL;
    memset(&app, 0, sizeof(app));

    switch (ctl_config_load(&app.cfg, argc, argv)) {
    case CTL_CLI_EXIT_OK:
        ctl_config_free(&app.cfg);
        return 0;
    case CTL_CLI_EXIT_FAIL:
        ctl_config_free(&app.cfg);
        return 2;
    case CTL_CLI_RUN:
        break;
    }
    fg_log_init("control",
                (fg_log_level)fg_log_level_parse(app.cfg.log_level));
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() != 0)
        goto out;
    m = fg_metrics_new();
    app.base = event_base_new();
    if (!m || !app.base) {
        fg_log_error("startup_failed", "err=no_memory");
        goto out;
    }
    if (ctl_auth_count(app.cfg.auth) == 0)
        fg_log_warn("no_tokens", "detail=%s",
                    fg_log_quote("no [tokens] configured: every API request "
                                 "will be refused", q, sizeof(q)));
    app.api = ctl_api_new(app.base, &app.cfg, m, err, sizeof(err));
    if (!app.api)
        goto fail_err;
    app.admin = fg_admin_new(app.base, app.cfg.admin_listen, m, readiness,
                             &app, err, sizeof(err));
    if (!app.admin)
        goto fail_err;
    sd = fg_shutdown_new(app.base, on_shutdown, NULL, &app);
    if (!sd)
        goto out;
    fg_log_info("started",
                "id=%s listen=%s port=%d admin=%s locks_topic=%s "
                "scores_topic=%s audit_topic=%s tokens=%zu",
                app.cfg.ctl_id, app.cfg.listen, ctl_api_port(app.api),
                app.cfg.admin_listen, app.cfg.locks_topic,
                app.cfg.scores_topic, app.cfg.audit_topic,
                ctl_auth_count(app.cfg.auth));
    event_base_dispatch(app.base);
    rc = 0;
    goto out;
fail_err:
    fg_log_error("startup_failed", "err=%s", fg_log_quote(err, q, sizeof(q)));
out:
    ctl_api_free(app.api, 2000);
    fg_admin_free(app.admin);
    if (app.drain_tick)
        event_free(app.drain_tick);
    fg_shutdown_free(sd);
    if (app.base)
        event_base_free(app.base);
    fg_metrics_free(m);
    ctl_config_free(&app.cfg);
    fg_log_info("stopped", "rc=%d", rc);
    return rc;
}
