/* SPDX-License-Identifier: Apache-2.0 */
/* The device-facing routes, POST /v1/checkin and POST /v1/checkins, on one
 * worker thread: decode and validate, encode the record, produce it with the
 * request as the message opaque, and answer from the delivery report with
 * the device's directive. */
#include "gw_ingest.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "fg_checkin.h"
#include "fg_kafka.h"
#include "fg_log.h"
#include "gw_reply.h"

enum { ROUTE_CHECKIN = 0, ROUTE_CHECKINS = 1, ROUTE_OTHER = 2, ROUTE_N = 3 };
static const char *const route_names[ROUTE_N] = {"/v1/checkin", "/v1/checkins",
                                                 "other"};
/* Answers the HTTP layer gives on its own (408, 413, 431...) are counted in
 * fleetgate_http_rejected_total instead. */
static const int known_codes[] = {200, 400, 404, 405, 415, 429, 500, 503};
#define N_CODES (sizeof(known_codes) / sizeof(known_codes[0]))

struct gw_ingest_metrics {
    fg_metrics *m;
    fg_counter *requests[ROUTE_N][N_CODES];
    fg_counter *accepted;
    fg_counter *locked;
    fg_counter *delivery_errors;
    fg_counter *produce_errors;
    fg_counter *producer_restarts;
    fg_histogram *latency;
};

/* The two kinds of message opaque. */
enum { CTX_SINGLE = 1, CTX_ITEM = 2 };

typedef struct gw_single {
    int kind;
    gw_worker *w;
    fg_http_req *req;
    gw_fmt fmt;
    char region[FG_REGION_MAX + 1];
    char sku[FG_REGION_MAX + 1];
} gw_single;

enum { ITEM_PENDING = 0, ITEM_OK, ITEM_INVALID, ITEM_RETRY };

typedef struct gw_batch gw_batch;

typedef struct gw_item {
    int kind;
    int state;
    gw_batch *b;
    const char *code, *field;
    char *detail; /* errors only */
    uint32_t val_off, val_len;
    uint16_t key_len;
    char key[FG_DEVICE_ID_MAX + 1];
    char region[FG_REGION_MAX + 1];
    char sku[FG_REGION_MAX + 1];
} gw_item;

struct gw_batch {
    gw_worker *w;
    fg_http_req *req;
    gw_fmt fmt;
    size_t n, cap, remaining;
    int retry_status; /* 429 or 503 when an item could not be queued */
    gw_item *items;
    char *vals; /* encoded records, pass one */
    size_t vals_len, vals_cap;
    int64_t recv_ts;
};

struct gw_worker {
    gw_shared *sh;
    gw_ingest_metrics *mx;
    int index;
    pthread_t th;
    int started;
    atomic_int done;
    struct event_base *base;
    fg_http_server *srv;
    /* The producer and its handles. Replaced on this worker's loop after a
     * fatal error; pmu guards them against the prober and metrics threads
     * while that happens (the loop itself never waits on it otherwise). */
    pthread_mutex_t pmu;
    rd_kafka_t *p;
    rd_kafka_topic_t *rkt;
    rd_kafka_queue_t *q;
    fg_kafka_pump *pump;
    struct event *stop_ev, *drain_tick, *rebuild_ev;
    int64_t drain_deadline;
    gw_lockview view;
    _Atomic int64_t down_since; /* ms; 0 = brokers fine */
    _Atomic int64_t last_probe;
    atomic_int fatal;
    atomic_int outq;
    char retry_after[48];
};

/* ---- metrics ---- */

gw_ingest_metrics *gw_ingest_metrics_new(fg_metrics *m)
{
    gw_ingest_metrics *mx = calloc(1, sizeof(*mx));
    if (!mx)
        return NULL;
    mx->m = m;
    for (int r = 0; r < ROUTE_N; r++) {
        for (size_t c = 0; c < N_CODES; c++) {
            char labels[96];
            snprintf(labels, sizeof(labels), "route=\"%s\",code=\"%d\"",
                     route_names[r], known_codes[c]);
            mx->requests[r][c] = fg_metrics_counter(
                m, "fleetgate_http_requests_total",
                "Device HTTP requests answered, by route and status code.",
                labels);
        }
    }
    mx->accepted = fg_metrics_counter(
        m, "fleetgate_checkins_accepted_total",
        "Check-ins the broker acknowledged (or queued, with ack = accept).", "");
    mx->locked = fg_metrics_counter(m, "fleetgate_directives_locked_total",
                                    "Answers that told a device it is locked.",
                                    "");
    mx->delivery_errors = fg_metrics_counter(
        m, "fleetgate_delivery_errors_total",
        "Records the broker did not acknowledge (the device got 503).", "");
    mx->produce_errors = fg_metrics_counter(
        m, "fleetgate_produce_errors_total",
        "Records refused at produce time (queue full or producer failed).", "");
    mx->producer_restarts = fg_metrics_counter(
        m, "fleetgate_producer_restarts_total",
        "Producers replaced after a fatal librdkafka error.", "");
    static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                    0.025,  0.05,  0.1,    0.25,  0.5,
                                    1,      2.5,   5,      10};
    mx->latency = fg_metrics_histogram(
        m, "fleetgate_produce_latency_seconds",
        "Time from produce to the broker's acknowledgement.", "", bounds,
        sizeof(bounds) / sizeof(bounds[0]));
    return mx;
}

void gw_ingest_metrics_free(gw_ingest_metrics *mx)
{
    free(mx);
}

static void count_request(gw_worker *w, int route, int status)
{
    for (size_t c = 0; c < N_CODES; c++) {
        if (known_codes[c] == status) {
            fg_counter_add(w->mx->requests[route][c], 1);
            return;
        }
    }
    char labels[96];
    snprintf(labels, sizeof(labels), "route=\"%s\",code=\"%d\"",
             route_names[route], status);
    fg_counter_add(fg_metrics_counter(w->mx->m, "fleetgate_http_requests_total",
                                      "Device HTTP requests answered, by route "
                                      "and status code.",
                                      labels),
                   1);
}

static void count_rejected(gw_worker *w, const char *reason, uint64_t n)
{
    char labels[96];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", reason);
    fg_counter_add(fg_metrics_counter(w->mx->m, "fleetgate_checkins_rejected_total",
                                      "Check-ins refused, by reason.", labels),
                   n);
}

/* ---- helpers ---- */

static int64_t now_ms(gw_worker *w)
{
    struct timeval tv;
    event_base_gettimeofday_cached(w->base, &tv);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int producer_usable(gw_worker *w, int64_t now)
{
    if (atomic_load(&w->fatal))
        return 0;
    int64_t since = atomic_load(&w->down_since);
    if (since == 0 || now - since < w->sh->cfg->broker_down_ms)
        return 1;
    /* Let one check-in through per second as a probe, so recovery is seen
     * without anything answering 200 before its record is acknowledged. */
    int64_t last = atomic_load(&w->last_probe);
    if (now - last >= 1000) {
        atomic_store(&w->last_probe, now);
        return 1;
    }
    return 0;
}

static void mark_down(gw_worker *w, int64_t since)
{
    int64_t zero = 0;
    atomic_compare_exchange_strong(&w->down_since, &zero, since > 0 ? since : 1);
}

static const fg_lock *directive_for(gw_worker *w, const char *region,
                                    const char *sku, int64_t now)
{
    /* fg_lock_table_match reads only the two region fields. */
    fg_checkin ci;
    memcpy(ci.region, region, sizeof(ci.region));
    memcpy(ci.sku_region, sku, sizeof(ci.sku_region));
    ci.region_len = (uint16_t)strlen(region);
    ci.sku_region_len = (uint16_t)strlen(sku);
    const fg_lock_table *t = gw_lockview_get(&w->view, w->sh->locks);
    const fg_lock *lk = fg_lock_table_match(t, w->sh->markets, &ci, now);
    if (lk)
        fg_counter_add(w->mx->locked, 1);
    return lk;
}

static void send_buf(gw_worker *w, fg_http_req *req, int route, int status,
                     gw_buf *b, gw_fmt f, const char *extra)
{
    if (b->failed) {
        count_request(w, route, 500);
        fg_http_respond_error(req, 500, "reply_too_large", NULL, NULL);
        return;
    }
    count_request(w, route, status);
    fg_http_respond(req, status, gw_fmt_mime(f), b->p, b->len, extra);
}

static void send_error(gw_worker *w, fg_http_req *req, int route, int status,
                       gw_fmt f, const char *code, const char *field,
                       const char *detail, const char *extra)
{
    gw_buf b;
    gw_buf_init(&b);
    gw_reply_error(&b, f, code, field, detail, 0, 0);
    send_buf(w, req, route, status, &b, f, extra);
    gw_buf_free(&b);
}

static void send_directive(gw_worker *w, fg_http_req *req, gw_fmt f,
                           const char *region, const char *sku, int64_t now)
{
    gw_buf b;
    gw_buf_init(&b);
    gw_reply_directive(&b, f, directive_for(w, region, sku, now),
                       w->sh->cfg->next_checkin_s);
    send_buf(w, req, ROUTE_CHECKIN, 200, &b, f, NULL);
    gw_buf_free(&b);
}

/* Content types: 1 JSON, 2 msgpack, 0 other. */
static int media_kind(const char *ct)
{
    if (!ct)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, "; \t");
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return 1;
    if ((n == 19 && strncasecmp(ct, "application/msgpack", 19) == 0) ||
        (n == 21 && strncasecmp(ct, "application/x-msgpack", 21) == 0) ||
        (n == 23 && strncasecmp(ct, "application/vnd.msgpack", 23) == 0))
        return 2;
    return 0;
}

static gw_fmt reply_fmt(const char *accept, gw_fmt in)
{
    if (!accept)
        return in;
    int has_mp = strcasestr(accept, "msgpack") != NULL;
    int has_json = strcasestr(accept, "json") != NULL;
    if (has_mp && !has_json)
        return GW_FMT_MSGPACK;
    if (has_json && !has_mp)
        return GW_FMT_JSON;
    return in;
}

/* Status for a record that could not be queued. */
static int produce_refusal(rd_kafka_resp_err_t err)
{
    return err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? 429 : 503;
}

static rd_kafka_resp_err_t produce(gw_worker *w, const char *key,
                                   size_t key_len, const char *val,
                                   size_t val_len, void *opaque)
{
    rd_kafka_resp_err_t err = rd_kafka_producev(
        w->p, RD_KAFKA_V_RKT(w->rkt), RD_KAFKA_V_KEY(key, key_len),
        RD_KAFKA_V_VALUE((void *)val, val_len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADER("content-type", "application/msgpack", 19),
        RD_KAFKA_V_HEADER("schema", "fleetgate.checkin.v1", 20),
        RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    if (err)
        fg_counter_add(w->mx->produce_errors, 1);
    return err;
}

/* ---- POST /v1/checkin ---- */

static void handle_single(gw_worker *w, fg_http_req *req, gw_fmt in,
                          gw_fmt out)
{
    size_t len;
    const char *body = fg_http_req_body(req, &len);
    fg_checkin ci;
    fg_checkin_error err;
    memset(&err, 0, sizeof(err));
    fg_status st = in == GW_FMT_JSON
                       ? fg_checkin_parse_json(body, len, &ci, &err)
                       : fg_checkin_parse_msgpack(body, len, &ci, &err);
    if (st != FG_OK) {
        count_rejected(w, err.code ? err.code : "invalid", 1);
        send_error(w, req, ROUTE_CHECKIN, 400, out,
                   err.code ? err.code : "invalid", err.field, err.detail,
                   NULL);
        return;
    }
    int64_t now = now_ms(w);
    char val[FG_CHECKIN_RECORD_MAX];
    size_t vlen = fg_checkin_encode(&ci, now, w->sh->cfg->gw_id, val,
                                    sizeof(val));
    if (vlen == 0) {
        send_error(w, req, ROUTE_CHECKIN, 500, out, "encode_failed", NULL,
                   NULL, NULL);
        return;
    }
    if (w->sh->cfg->ack == GW_ACK_ACCEPT) {
        rd_kafka_resp_err_t perr =
            produce(w, ci.device_id, ci.device_id_len, val, vlen, NULL);
        if (perr) {
            send_error(w, req, ROUTE_CHECKIN, produce_refusal(perr), out,
                       "unavailable", NULL, rd_kafka_err2str(perr),
                       w->retry_after);
            return;
        }
        fg_counter_add(w->mx->accepted, 1);
        send_directive(w, req, out, ci.region, ci.sku_region, now);
        return;
    }
    gw_single *ctx = malloc(sizeof(*ctx));
    if (!ctx) {
        send_error(w, req, ROUTE_CHECKIN, 503, out, "no_memory", NULL, NULL,
                   w->retry_after);
        return;
    }
    ctx->kind = CTX_SINGLE;
    ctx->w = w;
    ctx->req = req;
    ctx->fmt = out;
    memcpy(ctx->region, ci.region, sizeof(ctx->region));
    memcpy(ctx->sku, ci.sku_region, sizeof(ctx->sku));
    rd_kafka_resp_err_t perr =
        produce(w, ci.device_id, ci.device_id_len, val, vlen, ctx);
    if (perr) {
        free(ctx);
        send_error(w, req, ROUTE_CHECKIN, produce_refusal(perr), out,
                   "unavailable", NULL, rd_kafka_err2str(perr),
                   w->retry_after);
    }
    /* Answered from the delivery report. */
}

static void single_delivered(gw_single *ctx, rd_kafka_resp_err_t err)
{
    gw_worker *w = ctx->w;
    if (err) {
        send_error(w, ctx->req, ROUTE_CHECKIN, 503, ctx->fmt, "not_persisted",
                   NULL, rd_kafka_err2str(err), w->retry_after);
    } else {
        fg_counter_add(w->mx->accepted, 1);
        send_directive(w, ctx->req, ctx->fmt, ctx->region, ctx->sku,
                       now_ms(w));
    }
    free(ctx);
}

/* ---- POST /v1/checkins ---- */

static void batch_free(gw_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        free(b->items[i].detail);
    free(b->items);
    free(b->vals);
    free(b);
}

static fg_status batch_item_cb(void *ud, size_t index, const fg_checkin *ci,
                               const fg_checkin_error *item_err)
{
    gw_batch *b = ud;
    (void)index;
    if (b->n == b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 16;
        gw_item *ni = realloc(b->items, ncap * sizeof(*ni));
        if (!ni)
            return FG_ENOMEM;
        b->items = ni;
        b->cap = ncap;
    }
    gw_item *it = &b->items[b->n++];
    memset(it, 0, offsetof(gw_item, key));
    it->kind = CTX_ITEM;
    it->b = b;
    if (!ci) {
        it->state = ITEM_INVALID;
        it->code = item_err && item_err->code ? item_err->code : "invalid";
        it->field = item_err ? item_err->field : NULL;
        if (item_err && item_err->detail[0])
            it->detail = strdup(item_err->detail);
        return FG_OK;
    }
    if (b->vals_cap - b->vals_len < FG_CHECKIN_RECORD_MAX) {
        size_t ncap = b->vals_cap ? b->vals_cap * 2 : 16 * 1024;
        char *nv = realloc(b->vals, ncap);
        if (!nv)
            return FG_ENOMEM;
        b->vals = nv;
        b->vals_cap = ncap;
    }
    size_t vlen = fg_checkin_encode(ci, b->recv_ts, b->w->sh->cfg->gw_id,
                                    b->vals + b->vals_len,
                                    b->vals_cap - b->vals_len);
    if (vlen == 0)
        return FG_EIO;
    it->state = ITEM_PENDING;
    it->val_off = (uint32_t)b->vals_len;
    it->val_len = (uint32_t)vlen;
    b->vals_len += vlen;
    it->key_len = ci->device_id_len;
    memcpy(it->key, ci->device_id, ci->device_id_len + 1u);
    memcpy(it->region, ci->region, sizeof(it->region));
    memcpy(it->sku, ci->sku_region, sizeof(it->sku));
    return FG_OK;
}

static void batch_finish(gw_batch *b)
{
    gw_worker *w = b->w;
    int64_t now = now_ms(w);
    size_t retry = 0;
    for (size_t i = 0; i < b->n; i++)
        retry += b->items[i].state == ITEM_RETRY;
    if (retry == b->n) {
        send_error(w, b->req, ROUTE_CHECKINS,
                   b->retry_status ? b->retry_status : 503, b->fmt,
                   "unavailable", NULL, "no check-in of the batch was stored",
                   w->retry_after);
        batch_free(b);
        return;
    }
    gw_buf out;
    gw_buf_init(&out);
    gw_reply_batch_open(&out, b->fmt, b->n);
    for (size_t i = 0; i < b->n; i++) {
        gw_item *it = &b->items[i];
        gw_reply_batch_sep(&out, b->fmt, i);
        switch (it->state) {
        case ITEM_OK:
            gw_reply_directive(&out, b->fmt,
                               directive_for(w, it->region, it->sku, now),
                               w->sh->cfg->next_checkin_s);
            break;
        case ITEM_INVALID:
            gw_reply_error(&out, b->fmt, it->code, it->field, it->detail, 1, 0);
            break;
        default:
            gw_reply_error(&out, b->fmt, "unavailable", NULL,
                           it->detail ? it->detail : "not stored, retry", 1, 1);
            break;
        }
    }
    gw_reply_batch_close(&out, b->fmt);
    send_buf(w, b->req, ROUTE_CHECKINS, 200, &out, b->fmt,
             retry ? w->retry_after : NULL);
    gw_buf_free(&out);
    batch_free(b);
}

static void handle_batch(gw_worker *w, fg_http_req *req, gw_fmt in,
                         gw_fmt out)
{
    size_t len;
    const char *body = fg_http_req_body(req, &len);
    gw_batch *b = calloc(1, sizeof(*b));
    if (!b) {
        send_error(w, req, ROUTE_CHECKINS, 503, out, "no_memory", NULL, NULL,
                   w->retry_after);
        return;
    }
    b->w = w;
    b->req = req;
    b->fmt = out;
    b->recv_ts = now_ms(w);
    fg_checkin_error err;
    memset(&err, 0, sizeof(err));
    size_t max = (size_t)w->sh->cfg->max_batch;
    fg_status st =
        in == GW_FMT_JSON
            ? fg_checkin_batch_parse_json(body, len, max, batch_item_cb, b, &err)
            : fg_checkin_batch_parse_msgpack(body, len, max, batch_item_cb, b,
                                             &err);
    if (st == FG_EINVAL) {
        count_rejected(w, err.code ? err.code : "invalid", 1);
        send_error(w, req, ROUTE_CHECKINS, 400, out,
                   err.code ? err.code : "invalid", err.field, err.detail,
                   NULL);
        batch_free(b);
        return;
    }
    if (st != FG_OK) {
        send_error(w, req, ROUTE_CHECKINS, 503, out, "no_memory", NULL, NULL,
                   w->retry_after);
        batch_free(b);
        return;
    }
    int ack_now = w->sh->cfg->ack == GW_ACK_ACCEPT;
    b->remaining = 0;
    for (size_t i = 0; i < b->n; i++) {
        gw_item *it = &b->items[i];
        if (it->state == ITEM_INVALID) {
            count_rejected(w, it->code, 1);
            continue;
        }
        /* Count before producing: a delivery report cannot arrive before
         * this function returns (it is served by this same loop). */
        rd_kafka_resp_err_t perr =
            produce(w, it->key, it->key_len, b->vals + it->val_off,
                    it->val_len, ack_now ? NULL : it);
        if (perr) {
            it->state = ITEM_RETRY;
            b->retry_status = produce_refusal(perr);
            continue;
        }
        if (ack_now) {
            it->state = ITEM_OK;
            fg_counter_add(w->mx->accepted, 1);
        } else {
            b->remaining++;
        }
    }
    if (b->remaining == 0)
        batch_finish(b);
}

static void item_delivered(gw_item *it, rd_kafka_resp_err_t err)
{
    gw_batch *b = it->b;
    if (err) {
        it->state = ITEM_RETRY;
        free(it->detail);
        it->detail = strdup(rd_kafka_err2str(err));
    } else {
        it->state = ITEM_OK;
        fg_counter_add(b->w->mx->accepted, 1);
    }
    if (--b->remaining == 0)
        batch_finish(b);
}

/* ---- routing ---- */

static void on_request(void *ud, fg_http_req *req)
{
    gw_worker *w = ud;
    size_t plen;
    const char *path = fg_http_req_path(req, &plen);
    int route = ROUTE_OTHER;
    if (plen == 11 && memcmp(path, "/v1/checkin", 11) == 0)
        route = ROUTE_CHECKIN;
    else if (plen == 12 && memcmp(path, "/v1/checkins", 12) == 0)
        route = ROUTE_CHECKINS;
    const char *accept = fg_http_req_header(req, "accept");
    if (route == ROUTE_OTHER) {
        send_error(w, req, route, 404, reply_fmt(accept, GW_FMT_JSON),
                   "not_found", NULL, NULL, NULL);
        return;
    }
    if (fg_http_req_method(req) != FG_HTTP_POST) {
        send_error(w, req, route, 405, reply_fmt(accept, GW_FMT_JSON),
                   "method_not_allowed", NULL, "use POST", "Allow: POST\r\n");
        return;
    }
    int kind = media_kind(fg_http_req_header(req, "content-type"));
    if (kind == 0) {
        send_error(w, req, route, 415, reply_fmt(accept, GW_FMT_JSON),
                   "unsupported_media_type", NULL,
                   "use application/json or application/msgpack", NULL);
        return;
    }
    gw_fmt in = kind == 1 ? GW_FMT_JSON : GW_FMT_MSGPACK;
    gw_fmt out = reply_fmt(accept, in);
    if (!producer_usable(w, now_ms(w))) {
        send_error(w, req, route, 503, out, "unavailable", NULL,
                   "the broker is unreachable", w->retry_after);
        return;
    }
    if (route == ROUTE_CHECKIN)
        handle_single(w, req, in, out);
    else
        handle_batch(w, req, in, out);
}

/* The HTTP layer answered on its own (malformed, too large, too slow,
 * over the memory budget). */
static void on_reject(void *ud, int status, const char *code)
{
    gw_worker *w = ud;
    char labels[96];
    snprintf(labels, sizeof(labels), "code=\"%d\",reason=\"%s\"", status,
             code);
    fg_counter_add(fg_metrics_counter(w->mx->m, "fleetgate_http_rejected_total",
                                      "Requests the HTTP layer refused before "
                                      "routing, by status and reason.",
                                      labels),
                   1);
}

/* ---- Kafka events ---- */

static int err_means_down(rd_kafka_resp_err_t err)
{
    return err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT ||
           err == RD_KAFKA_RESP_ERR__TIMED_OUT ||
           err == RD_KAFKA_RESP_ERR__TRANSPORT ||
           err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
           err == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT ||
           err == RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS ||
           err == RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND;
}

static void on_kafka_event(void *ud, rd_kafka_event_t *ev)
{
    gw_worker *w = ud;
    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_DR: {
        const rd_kafka_message_t *msg;
        int64_t now = now_ms(w);
        while ((msg = rd_kafka_event_message_next(ev)) != NULL) {
            int64_t lat_us = rd_kafka_message_latency(msg);
            if (lat_us >= 0)
                fg_histogram_observe(w->mx->latency, (double)lat_us / 1e6);
            if (msg->err) {
                fg_counter_add(w->mx->delivery_errors, 1);
                if (err_means_down(msg->err))
                    mark_down(w, now - (lat_us > 0 ? lat_us / 1000 : 0));
            } else {
                atomic_store(&w->down_since, 0);
            }
            int *kind = msg->_private;
            if (!kind)
                continue;
            if (*kind == CTX_SINGLE)
                single_delivered((gw_single *)kind, msg->err);
            else
                item_delivered((gw_item *)kind, msg->err);
        }
        atomic_store(&w->outq, rd_kafka_outq_len(w->p));
        break;
    }
    case RD_KAFKA_EVENT_ERROR: {
        rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
        int fatal = rd_kafka_event_error_is_fatal(ev);
        char q[256];
        fg_log(fatal ? FG_LOG_ERROR : FG_LOG_WARN, "kafka_error",
               "worker=%d err=%s fatal=%d text=%s", w->index,
               rd_kafka_err2name(err), fatal,
               fg_log_quote(rd_kafka_event_error_string(ev), q, sizeof(q)));
        if (fatal && !atomic_exchange(&w->fatal, 1)) {
            /* The producer can't be used again (its idempotence state is
             * gone): replace it once the loop is back from this event. */
            struct timeval now = {0, 0};
            evtimer_add(w->rebuild_ev, &now);
        }
        if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
            mark_down(w, now_ms(w));
        break;
    }
    default:
        break;
    }
}

/* ---- lifecycle ---- */

static void finish_loop(gw_worker *w)
{
    if (w->p && rd_kafka_outq_len(w->p) > 0) {
        /* Out of time: anything not acknowledged is answered 503. */
        rd_kafka_purge(w->p, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        fg_kafka_pump_run(w->pump);
    }
    fg_http_server_free(w->srv);
    w->srv = NULL;
    event_base_loopbreak(w->base);
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    gw_worker *w = arg;
    (void)fd;
    (void)what;
    int busy = fg_http_server_inflight(w->srv) > 0 ||
               fg_http_server_connections(w->srv) > 0 ||
               (w->p && rd_kafka_outq_len(w->p) > 0);
    if (busy && now_ms(w) < w->drain_deadline) {
        struct timeval tv = {0, 20 * 1000};
        evtimer_add(w->drain_tick, &tv);
        return;
    }
    fg_log_info("worker_stopped", "worker=%d unacked=%d", w->index,
                w->p ? rd_kafka_outq_len(w->p) : 0);
    finish_loop(w);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    gw_worker *w = arg;
    (void)fd;
    (void)what;
    if (!w->srv)
        return;
    fg_http_server_drain(w->srv);
    w->drain_deadline = now_ms(w) + w->sh->cfg->shutdown_timeout_ms;
    on_drain_tick(-1, 0, w);
}

/* Creates the worker's producer, topic handle, queue and pump.
 * 0, or -1 with errbuf. */
static int producer_open(gw_worker *w, char *errbuf, size_t errlen)
{
    const gw_config *cfg = w->sh->cfg;
    rd_kafka_conf_t *kc = gw_config_producer(cfg, errbuf, errlen);
    if (!kc)
        return -1;
    char cid[96];
    snprintf(cid, sizeof(cid), "%s-w%d", cfg->gw_id, w->index);
    if (fg_kafka_conf_set(kc, "client.id", cid, errbuf, errlen) != FG_OK) {
        rd_kafka_conf_destroy(kc);
        return -1;
    }
    rd_kafka_conf_set_events(kc, RD_KAFKA_EVENT_DR | RD_KAFKA_EVENT_ERROR);
    rd_kafka_conf_set_log_cb(kc, fg_kafka_log_cb);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errbuf, errlen);
    if (!p) {
        rd_kafka_conf_destroy(kc);
        return -1;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(p, cfg->topic, NULL);
    rd_kafka_queue_t *q = rkt ? rd_kafka_queue_get_main(p) : NULL;
    fg_kafka_pump *pump = q ? fg_kafka_pump_new(w->base, q, 2000, on_kafka_event,
                                                w, errbuf, errlen)
                            : NULL;
    if (!pump) {
        if (!rkt)
            snprintf(errbuf, errlen, "cannot create topic handle %s", cfg->topic);
        if (q)
            rd_kafka_queue_destroy(q);
        if (rkt)
            rd_kafka_topic_destroy(rkt);
        rd_kafka_destroy(p);
        return -1;
    }
    pthread_mutex_lock(&w->pmu);
    w->p = p;
    w->rkt = rkt;
    w->q = q;
    w->pump = pump;
    pthread_mutex_unlock(&w->pmu);
    return 0;
}

static void producer_close(gw_worker *w)
{
    pthread_mutex_lock(&w->pmu);
    fg_kafka_pump_free(w->pump);
    if (w->q)
        rd_kafka_queue_destroy(w->q);
    if (w->rkt)
        rd_kafka_topic_destroy(w->rkt);
    if (w->p)
        rd_kafka_destroy(w->p);
    w->pump = NULL;
    w->q = NULL;
    w->rkt = NULL;
    w->p = NULL;
    pthread_mutex_unlock(&w->pmu);
}

/* After a fatal error: every record the old producer still holds fails
 * (its device gets 503 and retries; none was answered 200), then a new
 * producer (a new idempotent identity) takes over. Retried every 5 s while
 * a new one can't be created. */
static void on_rebuild(evutil_socket_t fd, short what, void *arg)
{
    gw_worker *w = arg;
    char err[256], q[300];
    (void)fd;
    (void)what;
    if (w->p) {
        int left = rd_kafka_outq_len(w->p);
        /* Blocking purge: the failed records' delivery reports are on the
         * queue when it returns; answer them before their pump goes. */
        rd_kafka_purge(w->p, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        fg_kafka_pump_run(w->pump);
        fg_log_warn("producer_replacing", "worker=%d purged=%d", w->index, left);
        producer_close(w);
    }
    if (producer_open(w, err, sizeof(err)) != 0) {
        fg_log_error("producer_replace_failed", "worker=%d err=%s", w->index,
                     fg_log_quote(err, q, sizeof(q)));
        struct timeval later = {5, 0};
        evtimer_add(w->rebuild_ev, &later);
        return;
    }
    atomic_store(&w->down_since, 0);
    atomic_store(&w->fatal, 0);
    fg_counter_add(w->mx->producer_restarts, 1);
    fg_log_info("producer_replaced", "worker=%d", w->index);
}

static void *worker_main(void *arg)
{
    gw_worker *w = arg;
    event_base_dispatch(w->base);
    atomic_store(&w->done, 1);
    return NULL;
}

gw_worker *gw_worker_new(gw_shared *sh, int index, char *errbuf,
                         size_t errlen)
{
    gw_worker *w = calloc(1, sizeof(*w));
    int fd = -1;
    if (!w) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&w->pmu, NULL);
    w->sh = sh;
    w->mx = sh->mx;
    w->index = index;
    snprintf(w->retry_after, sizeof(w->retry_after), "Retry-After: %lld\r\n",
             (long long)sh->cfg->retry_after_s);
    w->base = event_base_new();
    if (!w->base) {
        snprintf(errbuf, errlen, "cannot create an event loop");
        goto fail;
    }
    if (producer_open(w, errbuf, errlen) != 0)
        goto fail;
    fd = fg_http_listen(sh->cfg->listen, 1, errbuf, errlen);
    if (fd < 0)
        goto fail;
    fg_http_limits lim = {
        .max_header_bytes = (size_t)sh->cfg->max_header_bytes,
        .max_body_bytes = (size_t)sh->cfg->max_body,
        .read_timeout_ms = sh->cfg->read_timeout_ms,
        .idle_timeout_ms = sh->cfg->idle_timeout_ms,
        .write_timeout_ms = sh->cfg->write_timeout_ms,
    };
    w->srv = fg_http_server_new(w->base, fd, &lim, &sh->budget, on_request, w,
                                errbuf, errlen);
    if (!w->srv)
        goto fail;
    fd = -1;
    fg_http_server_on_reject(w->srv, on_reject);
    w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
    w->drain_tick = evtimer_new(w->base, on_drain_tick, w);
    w->rebuild_ev = evtimer_new(w->base, on_rebuild, w);
    if (!w->stop_ev || !w->drain_tick || !w->rebuild_ev) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    return w;
fail:
    if (fd >= 0)
        close(fd);
    gw_worker_free(w);
    return NULL;
}

fg_status gw_worker_start(gw_worker *w)
{
    if (pthread_create(&w->th, NULL, worker_main, w) != 0)
        return FG_EIO;
    w->started = 1;
    return FG_OK;
}

void gw_worker_stop(gw_worker *w)
{
    event_active(w->stop_ev, EV_READ, 0);
}

int gw_worker_done(const gw_worker *w)
{
    return atomic_load(&((gw_worker *)w)->done);
}

int gw_worker_healthy(const gw_worker *w)
{
    gw_worker *mw = (gw_worker *)w;
    if (atomic_load(&mw->fatal))
        return 0;
    int64_t since = atomic_load(&mw->down_since);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    return since == 0 || now - since < mw->sh->cfg->broker_down_ms;
}

int gw_worker_outq(const gw_worker *w)
{
    gw_worker *mw = (gw_worker *)w;
    pthread_mutex_lock(&mw->pmu);
    int n = mw->p ? rd_kafka_outq_len(mw->p) : 0;
    pthread_mutex_unlock(&mw->pmu);
    return n;
}

void gw_worker_inject_fatal(gw_worker *w)
{
    pthread_mutex_lock(&w->pmu);
    if (w->p && !atomic_load(&w->fatal))
        rd_kafka_test_fatal_error(w->p, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                  "fault injection (gateway.fault_injection)");
    pthread_mutex_unlock(&w->pmu);
}

/* ---- recovery probe ---- */

struct gw_prober {
    gw_worker **workers;
    int n;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
};

static void probe_worker(gw_worker *w)
{
    if (atomic_load(&w->down_since) == 0 || atomic_load(&w->fatal))
        return;
    const struct rd_kafka_metadata *md = NULL;
    pthread_mutex_lock(&w->pmu);
    rd_kafka_resp_err_t err = w->p ? rd_kafka_metadata(w->p, 0, w->rkt, &md, 1000)
                                   : RD_KAFKA_RESP_ERR__STATE;
    pthread_mutex_unlock(&w->pmu);
    int ok = err == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->topic_cnt == 1 &&
             md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
             md->broker_cnt > 0;
    if (md)
        rd_kafka_metadata_destroy(md);
    if (ok) {
        atomic_store(&w->down_since, 0);
        fg_log_info("broker_reachable", "worker=%d", w->index);
    }
}

static void *prober_main(void *arg)
{
    gw_prober *pr = arg;
    pthread_mutex_lock(&pr->mu);
    while (!pr->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&pr->cv, &pr->mu, &ts);
        if (pr->stop)
            break;
        pthread_mutex_unlock(&pr->mu);
        for (int i = 0; i < pr->n; i++)
            probe_worker(pr->workers[i]);
        pthread_mutex_lock(&pr->mu);
    }
    pthread_mutex_unlock(&pr->mu);
    return NULL;
}

gw_prober *gw_prober_start(gw_worker **workers, int n)
{
    gw_prober *pr = calloc(1, sizeof(*pr));
    if (!pr)
        return NULL;
    pr->workers = workers;
    pr->n = n;
    pthread_mutex_init(&pr->mu, NULL);
    pthread_cond_init(&pr->cv, NULL);
    if (pthread_create(&pr->th, NULL, prober_main, pr) != 0) {
        pthread_cond_destroy(&pr->cv);
        pthread_mutex_destroy(&pr->mu);
        free(pr);
        return NULL;
    }
    return pr;
}

void gw_prober_stop(gw_prober *pr)
{
    if (!pr)
        return;
    pthread_mutex_lock(&pr->mu);
    pr->stop = 1;
    pthread_cond_signal(&pr->cv);
    pthread_mutex_unlock(&pr->mu);
    pthread_join(pr->th, NULL);
    pthread_cond_destroy(&pr->cv);
    pthread_mutex_destroy(&pr->mu);
    free(pr);
}

void gw_worker_free(gw_worker *w)
{
    if (!w)
        return;
    if (w->started)
        pthread_join(w->th, NULL);
    fg_http_server_free(w->srv);
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->drain_tick)
        event_free(w->drain_tick);
    if (w->rebuild_ev)
        event_free(w->rebuild_ev);
    producer_close(w);
    pthread_mutex_destroy(&w->pmu);
    if (w->view.snap)
        gw_lockview_release(&w->view, w->sh->locks);
    if (w->base)
        event_base_free(w->base);
    free(w);
}
