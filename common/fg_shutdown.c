/* SPDX-License-Identifier: Apache-2.0 */
/* SIGTERM and SIGINT on a daemon's main loop: the first signal starts the
 * daemon's shutdown, a second one ends the loop without waiting. */
#include "fg_shutdown.h"

#include <event2/event.h>
#include <signal.h>
#include <stdlib.h>

struct fg_shutdown {
    struct event_base *base;
    struct event *sigterm;
    struct event *sigint;
    fg_shutdown_fn on_first;
    fg_shutdown_fn on_again;
    void *ud;
    int signalled;
};

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    fg_shutdown *sd = arg;
    (void)what;
    if (sd->signalled) {
        if (sd->on_again)
            sd->on_again(sd->ud, (int)sig);
        event_base_loopexit(sd->base, NULL);
        return;
    }
    sd->signalled = 1;
    sd->on_first(sd->ud, (int)sig);
}

fg_shutdown *fg_shutdown_new(struct event_base *base, fg_shutdown_fn on_first,
                             fg_shutdown_fn on_again, void *ud)
{
    fg_shutdown *sd = calloc(1, sizeof(*sd));
    if (!sd)
        return NULL;
    sd->base = base;
    sd->on_first = on_first;
    sd->on_again = on_again;
    sd->ud = ud;
    sd->sigterm = evsignal_new(base, SIGTERM, on_signal, sd);
    sd->sigint = evsignal_new(base, SIGINT, on_signal, sd);
    if (!sd->sigterm || !sd->sigint || event_add(sd->sigterm, NULL) != 0 ||
        event_add(sd->sigint, NULL) != 0) {
        fg_shutdown_free(sd);
        return NULL;
    }
    return sd;
}

void fg_shutdown_free(fg_shutdown *sd)
{
    if (!sd)
        return;
    if (sd->sigterm)
        event_free(sd->sigterm);
    if (sd->sigint)
        event_free(sd->sigint);
    free(sd);
}
