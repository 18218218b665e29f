/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of common/fg_shutdown.c: real SIGTERM/SIGINT raised inside a
 * running loop; the first reaches on_first once, a second ends the loop. */
#include <event2/event.h>
#include <signal.h>
#include <string.h>

#include "fg_shutdown.h"
#include "fg_test.h"

typedef struct probe {
    struct event_base *base;
    int first, again, first_sig;
    int raises; /* signals to raise from the timer */
} probe;

static void on_first(void *ud, int sig)
{
    probe *p = ud;
    p->first++;
    p->first_sig = sig;
}

static void on_again(void *ud, int sig)
{
    probe *p = ud;
    (void)sig;
    p->again++;
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    probe *p = arg;
    (void)fd;
    (void)what;
    raise(SIGTERM);
    if (p->raises > 1)
        raise(SIGINT);
}

/* Ends the loop if nothing else did, so a broken helper fails, not hangs. */
static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    probe *p = arg;
    (void)fd;
    (void)what;
    event_base_loopbreak(p->base);
}

static int run(probe *p, fg_shutdown_fn again)
{
    struct timeval soon = {0, 10 * 1000}, later = {2, 0};
    p->base = event_base_new();
    fg_shutdown *sd = fg_shutdown_new(p->base, on_first, again, p);
    struct event *kick = evtimer_new(p->base, on_kick, p);
    struct event *guard = evtimer_new(p->base, on_guard, p);
    FG_CHECK(sd && kick && guard);
    evtimer_add(kick, &soon);
    evtimer_add(guard, &later);
    event_base_dispatch(p->base);
    int broke = event_base_got_break(p->base);
    event_free(kick);
    event_free(guard);
    fg_shutdown_free(sd);
    event_base_free(p->base);
    return broke;
}

static void test_first_signal_only_calls_back(void)
{
    probe p;
    memset(&p, 0, sizeof(p));
    p.raises = 1;
    /* The helper must not end the loop itself: the guard does. */
    FG_CHECK_INT(run(&p, on_again), 1);
    FG_CHECK_INT(p.first, 1);
    FG_CHECK_INT(p.first_sig, SIGTERM);
    FG_CHECK_INT(p.again, 0);
}

static void test_second_signal_exits(void)
{
    probe p;
    memset(&p, 0, sizeof(p));
    p.raises = 2;
    FG_CHECK_INT(run(&p, on_again), 0);
    FG_CHECK_INT(p.first, 1);
    FG_CHECK_INT(p.again, 1);
}

static void test_second_signal_exits_without_hook(void)
{
    probe p;
    memset(&p, 0, sizeof(p));
    p.raises = 2;
    FG_CHECK_INT(run(&p, NULL), 0);
    FG_CHECK_INT(p.first, 1);
}

FG_TEST_MAIN(test_first_signal_only_calls_back, test_second_signal_exits,
             test_second_signal_exits_without_hook)
