/* SPDX-License-Identifier: Apache-2.0 */
/* The control service's live events (GET /v1/stream, server-sent events):
 * a hub that keeps the open streams, numbers every event, keeps the newest
 * ones in a ring so that a client reconnecting with Last-Event-ID gets
 * exactly what it missed, sends each new client a snapshot of every region
 * otherwise, keeps quiet connections alive with a ": ping" comment, caps
 * the number of clients, and drops a client that reads slower than events
 * come (fg_http's per-stream buffer cap). Not thread-safe: one loop thread
 * owns it.
 *
 * Wire format (text/event-stream), one event:
 *   id: <decimal id>\n event: snapshot|score|lock\n data: <JSON, one line>\n\n
 * Ids increase by 1 per published event. They start at the hub's start
 * time in microseconds, so an id from an earlier run of the service is
 * never taken for one of this run (it is too old, or unknown: snapshot). A
 * snapshot carries the id of the newest event it includes. */
#ifndef CTL_STREAM_H
#define CTL_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "ctl_state.h"
#include "fg_http.h"
#include "fg_metrics.h"
#include "fg_status.h"

struct event_base;

typedef struct ctl_stream ctl_stream;

typedef struct ctl_stream_limits {
    size_t max_clients;   /* open streams at once; 0 refuses every client */
    size_t ring;          /* events kept for Last-Event-ID, >= 1 */
    size_t client_buffer; /* bytes held for a slow client, beyond its first
                           * snapshot or replay; over it: dropped */
    int64_t ping_ms;      /* interval of ": ping", > 0 */
    int64_t stall_ms;     /* buffered output without progress this long
                           * drops the client; 0 = the server's write
                           * timeout */
} ctl_stream_limits;

/* Creates the hub on base (borrowed). Snapshots are drawn from st; the
 * gauge and counters (fleetgate_control_stream_*) are registered in m. st
 * and m are borrowed and must outlive the hub; lim is copied. NULL with
 * errbuf filled on bad limits or no memory. @thread the loop's */
ctl_stream *ctl_stream_new(struct event_base *base, const ctl_state *st,
                           const ctl_stream_limits *lim, fg_metrics *m,
                           char *errbuf, size_t errlen);

/* Makes req (an authorized GET /v1/stream) a client: answers 200
 * text/event-stream with extra_headers (borrowed, CRLF-terminated lines, or
 * NULL) and starts with the events after its Last-Event-ID header when the
 * ring still holds them all, else with a snapshot event
 * {"now":ms,"regions":[<ctl_region_json>...]}.
 * Returns FG_OK when req was answered (the stream runs, or the client had
 * gone); FG_AGAIN when the hub is at max_clients or draining, FG_ENOMEM
 * when out of memory: then req is untouched and the caller answers it
 * (503 with Retry-After). @thread the loop's */
fg_status ctl_stream_subscribe(ctl_stream *hub, fg_http_req *req,
                               const char *extra_headers);

/* Publishes one event to every client and into the ring: event is its name
 * (borrowed, "score", "lock"), data (borrowed, len bytes) a JSON value on
 * one line. A client whose buffer would go over its cap is dropped.
 * Returns the event's id, or 0 when nothing was published (data has a line
 * break, or no memory: logged). @thread the loop's */
uint64_t ctl_stream_publish(ctl_stream *hub, const char *event,
                            const char *data, size_t len);

/* Open streams. */
size_t ctl_stream_clients(const ctl_stream *hub);

/* Ends every stream (what is buffered is still sent, then the connection
 * closes; clients reconnect elsewhere with their Last-Event-ID) and
 * refuses new clients from now on. @thread the loop's */
void ctl_stream_drain(ctl_stream *hub);

/* Ends the streams still open and frees the hub. NULL is a no-op.
 * @thread the loop's */
void ctl_stream_free(ctl_stream *hub);

#endif
