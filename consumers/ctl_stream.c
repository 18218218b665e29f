/* SPDX-License-Identifier: Apache-2.0 */
/* The event-stream hub: clients in a doubly linked list, events as
 * preformatted SSE frames in a ring indexed by id, one ping timer for every
 * client. A frame is formatted once and written to each client as is. */
#include "ctl_stream.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <yajl/yajl_gen.h>

#include "fg_log.h"

/* Longest Last-Event-ID looked at (a uint64 has 20 digits). */
#define CTL_STREAM_ID_MAX 20

typedef struct ctl_frame {
    uint64_t id; /* 0: empty slot */
    char *text;  /* "id: ...\nevent: ...\ndata: ...\n\n" */
    size_t len;
} ctl_frame;

typedef struct ctl_sub {
    ctl_stream *hub;
    struct ctl_sub *prev, *next;
    fg_http_stream *s;
    char peer[48];
} ctl_sub;

struct ctl_stream {
    struct event_base *base;
    const ctl_state *st;
    ctl_stream_limits lim;
    ctl_sub *subs;
    size_t nsubs;
    int draining;
    ctl_frame *ring;     /* lim.ring slots; event id i lives at i % ring */
    uint64_t first_id;   /* id of the first event this run */
    uint64_t next_id;    /* id the next event gets */
    struct event *ping;
    fg_gauge *g_clients;
    fg_counter *c_events, *c_slow, *c_opened;
};

/* A growing byte buffer for a client's first burst. */
typedef struct ctl_buf {
    char *p;
    size_t len, cap;
    int failed;
} ctl_buf;

static void buf_add(ctl_buf *b, const void *data, size_t n)
{
    if (b->failed)
        return;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->failed = 1;
                return;
            }
            cap *= 2;
        }
        char *np = realloc(b->p, cap);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- clients ---- */

static void sub_unlink(ctl_sub *sub)
{
    ctl_stream *hub = sub->hub;
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        hub->subs = sub->next;
    if (sub->next)
        sub->next->prev = sub->prev;
    hub->nsubs--;
    fg_gauge_set(hub->g_clients, (double)hub->nsubs);
    free(sub);
}

/* fg_http ended the stream: the client went away, stalled, or the server
 * is shutting down. */
static void sub_on_close(void *ud, fg_http_stream_why why)
{
    ctl_sub *sub = ud;
    if (why == FG_HTTP_STREAM_STALLED) {
        fg_counter_add(sub->hub->c_slow, 1);
        fg_log_info("stream_client_dropped", "peer=%s why=stalled",
                    sub->peer);
    } else {
        fg_log_debug("stream_closed", "peer=%s why=%s", sub->peer,
                     fg_http_stream_why_str(why));
    }
    sub_unlink(sub);
}

/* Writes to one client; a failed write has closed its stream. Returns 0,
 * or -1 when sub is gone. */
static int sub_write(ctl_sub *sub, const char *p, size_t n)
{
    fg_status st = fg_http_stream_write(sub->s, p, n);
    if (st == FG_OK)
        return 0;
    if (st == FG_ETOOBIG) {
        fg_counter_add(sub->hub->c_slow, 1);
        fg_log_info("stream_client_dropped", "peer=%s why=slow", sub->peer);
    } else {
        fg_log_debug("stream_closed", "peer=%s why=%s", sub->peer,
                     fg_status_str(st));
    }
    sub_unlink(sub);
    return -1;
}

/* Writes to every client. A failing write only ever closes its own
 * stream (fg_http never calls back from inside a write). */
static void broadcast(ctl_stream *hub, const char *p, size_t n)
{
    ctl_sub *sub = hub->subs;
    while (sub) {
        ctl_sub *next = sub->next;
        (void)sub_write(sub, p, n);
        sub = next;
    }
}

static void on_ping(evutil_socket_t fd, short what, void *arg)
{
    static const char ping[] = ": ping\n\n";
    (void)fd;
    (void)what;
    broadcast(arg, ping, sizeof(ping) - 1);
}

/* ---- the ring ---- */

static uint64_t last_id(const ctl_stream *hub)
{
    return hub->next_id - 1;
}

/* Oldest id the ring still holds (next_id when empty). */
static uint64_t oldest_id(const ctl_stream *hub)
{
    uint64_t n = hub->next_id - hub->first_id;
    if (n > hub->lim.ring)
        return hub->next_id - hub->lim.ring;
    return hub->first_id;
}

/* Parses a Last-Event-ID: decimal digits only (spaces around allowed).
 * Returns 0 and *id, or -1 for anything else. */
static int parse_id(const char *s, uint64_t *id)
{
    uint64_t v = 0;
    size_t digits = 0;
    while (*s == ' ' || *s == '\t')
        s++;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (++digits > CTL_STREAM_ID_MAX)
            return -1;
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    while (*s == ' ' || *s == '\t')
        s++;
    if (digits == 0 || *s)
        return -1;
    *id = v;
    return 0;
}

/* The events after `after` into b, when the ring holds every one of them
 * (`after` is the newest id or a held event's predecessor). Returns 0, or
 * -1 when it does not (too old, or not an id of this run). */
static int replay(const ctl_stream *hub, uint64_t after, ctl_buf *b)
{
    uint64_t last = last_id(hub);
    if (after > last || after + 1 < oldest_id(hub))
        return -1;
    for (uint64_t id = after + 1; id <= last; id++) {
        const ctl_frame *f = &hub->ring[id % hub->lim.ring];
        buf_add(b, f->text, f->len);
    }
    return 0;
}

/* A snapshot event of every region into b. */
static void snapshot(const ctl_stream *hub, ctl_buf *b)
{
    char head[64];
    const unsigned char *json = NULL;
    size_t jlen = 0;
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) {
        b->failed = 1;
        return;
    }
    yajl_gen_config(g, yajl_gen_validate_utf8, 1);
    int64_t now = wall_ms();
    yajl_gen_map_open(g);
    ctl_json_int(g, "now", now);
    ctl_json_key(g, "regions");
    yajl_gen_array_open(g);
    size_t n = ctl_state_count(hub->st);
    for (size_t i = 0; i < n; i++)
        ctl_region_json(g, ctl_state_at(hub->st, i), now);
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    if (yajl_gen_get_buf(g, &json, &jlen) != yajl_gen_status_ok) {
        b->failed = 1;
    } else {
        int hn = snprintf(head, sizeof(head),
                          "id: %llu\nevent: snapshot\ndata: ",
                          (unsigned long long)last_id(hub));
        buf_add(b, head, (size_t)hn);
        buf_add(b, json, jlen);
        buf_add(b, "\n\n", 2);
    }
    yajl_gen_free(g);
}

/* ---- API ---- */

ctl_stream *ctl_stream_new(struct event_base *base, const ctl_state *st,
                           const ctl_stream_limits *lim, fg_metrics *m,
                           char *errbuf, size_t errlen)
{
    if (lim->ring == 0 || lim->ping_ms <= 0 || lim->client_buffer == 0) {
        snprintf(errbuf, errlen, "stream limits: ring, ping and client "
                 "buffer must be positive");
        return NULL;
    }
    ctl_stream *hub = calloc(1, sizeof(*hub));
    if (!hub) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    hub->base = base;
    hub->st = st;
    hub->lim = *lim;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    hub->first_id = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
    hub->next_id = hub->first_id;
    hub->ring = calloc(lim->ring, sizeof(*hub->ring));
    hub->ping = event_new(base, -1, EV_PERSIST, on_ping, hub);
    hub->g_clients = fg_metrics_gauge(
        m, "fleetgate_control_stream_clients",
        "Open GET /v1/stream connections (server-sent events).", "");
    hub->c_opened = fg_metrics_counter(
        m, "fleetgate_control_stream_opened_total",
        "GET /v1/stream connections started.", "");
    hub->c_events = fg_metrics_counter(
        m, "fleetgate_control_stream_events_total",
        "Events published to the stream (each counted once, whatever the "
        "number of clients).", "");
    hub->c_slow = fg_metrics_counter(
        m, "fleetgate_control_stream_slow_dropped_total",
        "Stream clients dropped for reading too slowly (buffer cap "
        "control.stream_client_buffer, or no progress at all).", "");
    struct timeval ptv = {(time_t)(lim->ping_ms / 1000),
                          (suseconds_t)(lim->ping_ms % 1000) * 1000};
    if (!hub->ring || !hub->ping || !hub->g_clients || !hub->c_opened ||
        !hub->c_events || !hub->c_slow || event_add(hub->ping, &ptv) != 0) {
        snprintf(errbuf, errlen, "out of memory");
        ctl_stream_free(hub);
        return NULL;
    }
    return hub;
}

fg_status ctl_stream_subscribe(ctl_stream *hub, fg_http_req *req,
                               const char *extra_headers)
{
    static const char fixed[] = "Cache-Control: no-store\r\n"
                                "X-Accel-Buffering: no\r\n";
    char headers[512];
    ctl_buf b = {NULL, 0, 0, 0};
    uint64_t after;
    if (hub->draining || hub->nsubs >= hub->lim.max_clients)
        return FG_AGAIN;
    const char *lei = fg_http_req_header(req, "last-event-id");
    int resumed = lei && parse_id(lei, &after) == 0 &&
                  replay(hub, after, &b) == 0;
    if (!resumed) {
        b.len = 0;
        snapshot(hub, &b);
    }
    ctl_sub *sub = calloc(1, sizeof(*sub));
    int n = snprintf(headers, sizeof(headers), "%s%s", fixed,
                     extra_headers ? extra_headers : "");
    if (!sub || b.failed || n < 0 || (size_t)n >= sizeof(headers)) {
        free(sub);
        free(b.p);
        return FG_ENOMEM;
    }
    sub->hub = hub;
    snprintf(sub->peer, sizeof(sub->peer), "%s", fg_http_req_peer(req));
    /* The first burst (a snapshot can be large) does not count against
     * the client's cap: the cap is about keeping up afterwards. */
    fg_http_stream_opts opts = {
        .max_buffered = hub->lim.client_buffer + b.len,
        .stall_timeout_ms = hub->lim.stall_ms,
    };
    sub->s = fg_http_stream_begin(req, 200, "text/event-stream", headers,
                                  &opts, sub_on_close, sub);
    if (!sub->s) {
        free(sub);
        free(b.p);
        return FG_OK; /* the client is gone; req was released */
    }
    sub->next = hub->subs;
    if (hub->subs)
        hub->subs->prev = sub;
    hub->subs = sub;
    hub->nsubs++;
    fg_gauge_set(hub->g_clients, (double)hub->nsubs);
    fg_counter_add(hub->c_opened, 1);
    fg_log_debug("stream_opened", "peer=%s resumed=%d bytes=%zu", sub->peer,
                 resumed, b.len);
    if (b.len)
        (void)sub_write(sub, b.p, b.len);
    free(b.p);
    return FG_OK;
}

uint64_t ctl_stream_publish(ctl_stream *hub, const char *event,
                            const char *data, size_t len)
{
    char head[96];
    if (memchr(data, '\n', len) || memchr(data, '\r', len)) {
        fg_log_error("stream_event_refused", "event=%s err=line_break",
                     event);
        return 0;
    }
    uint64_t id = hub->next_id;
    int hn = snprintf(head, sizeof(head), "id: %llu\nevent: %s\ndata: ",
                      (unsigned long long)id, event);
    if (hn < 0 || (size_t)hn >= sizeof(head))
        return 0;
    char *text = malloc((size_t)hn + len + 2);
    if (!text) {
        fg_log_error("stream_event_refused", "event=%s err=no_memory", event);
        return 0;
    }
    memcpy(text, head, (size_t)hn);
    memcpy(text + hn, data, len);
    memcpy(text + (size_t)hn + len, "\n\n", 2);
    ctl_frame *f = &hub->ring[id % hub->lim.ring];
    free(f->text);
    f->id = id;
    f->text = text;
    f->len = (size_t)hn + len + 2;
    hub->next_id++;
    fg_counter_add(hub->c_events, 1);
    broadcast(hub, f->text, f->len);
    return id;
}

size_t ctl_stream_clients(const ctl_stream *hub)
{
    return hub->nsubs;
}

/* Ends every client's stream (buffered bytes still go). */
static void end_all(ctl_stream *hub)
{
    while (hub->subs) {
        ctl_sub *sub = hub->subs;
        fg_http_stream_end(sub->s);
        sub_unlink(sub);
    }
}

void ctl_stream_drain(ctl_stream *hub)
{
    hub->draining = 1;
    if (hub->ping)
        event_del(hub->ping);
    end_all(hub);
}

void ctl_stream_free(ctl_stream *hub)
{
    if (!hub)
        return;
    end_all(hub);
    if (hub->ping)
        event_free(hub->ping);
    if (hub->ring)
        for (size_t i = 0; i < hub->lim.ring; i++)
            free(hub->ring[i].text);
    free(hub->ring);
    free(hub);
}
