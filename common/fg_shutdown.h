/* SPDX-License-Identifier: Apache-2.0 */
/* SIGTERM and SIGINT on a daemon's main loop: the first signal starts the
 * daemon's own orderly shutdown, any later one ends the loop now. */
#ifndef FG_SHUTDOWN_H
#define FG_SHUTDOWN_H

struct event_base;

typedef struct fg_shutdown fg_shutdown;

/* Called with the signal number (SIGTERM or SIGINT). @thread the loop's */
typedef void (*fg_shutdown_fn)(void *ud, int sig);

/* Watches SIGTERM and SIGINT on base. The first signal calls
 * on_first(ud, sig) once: it logs and starts the drain, and ends the loop
 * itself (event_base_loopexit) when the drain is over. Every later signal
 * calls on_again(ud, sig) if not NULL, then event_base_loopexit(base) now.
 * base (borrowed) must outlive the handle; ud is borrowed. Returns NULL
 * when an event cannot be created or added (nothing is left behind).
 * @thread the loop's (the thread that runs base) */
fg_shutdown *fg_shutdown_new(struct event_base *base, fg_shutdown_fn on_first,
                             fg_shutdown_fn on_again, void *ud);

/* Stops watching the signals and frees sd. Call before event_base_free.
 * NULL is a no-op. @thread the loop's */
void fg_shutdown_free(fg_shutdown *sd);

#endif
