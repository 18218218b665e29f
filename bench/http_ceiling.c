/* SPDX-License-Identifier: Apache-2.0 */
/* http-ceiling: the "HTTP-only ceiling" of the gateway benchmarks. It serves
 * POST /v1/checkin and POST /v1/checkins on the gateway's own HTTP layer and
 * does every per-request step the gateway does (decode, validate, encode the
 * Kafka record, answer) except producing to Kafka. See bench/run. */
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fg_checkin.h"
#include "fg_http.h"

#define HC_MAX_THREADS 64
#define HC_MAX_BATCH 1000       /* the gateway's default gateway.max_batch */
#define HC_ITEM_REPLY_MAX 128   /* one batch item's answer, either format */
#define HC_REPLY_CAP (HC_MAX_BATCH * HC_ITEM_REPLY_MAX + 64)
#define HC_NEXT_CHECKIN_S 300

static const char hc_ok_json[] = "{\"status\":\"ok\",\"next_checkin_s\":300}";

/* A fixed-capacity output buffer; failed sticks once it would overflow. */
typedef struct hc_buf {
    char *p;
    size_t len, cap;
    int failed;
} hc_buf;

typedef struct hc_worker {
    int index;
    pthread_t th;
    int started;
    struct event_base *base;
    struct event *stop_ev;               /* activated by the main thread */
    fg_http_server *srv;
    const char *gw_id;
    hc_buf out;                          /* batch replies */
    char rec[FG_CHECKIN_RECORD_MAX];     /* the encoded record, discarded */
    int64_t recv_ts;
    int msgpack;                         /* format of the current reply */
    size_t items;                        /* batch items seen so far */
} hc_worker;

static void hc_put(hc_buf *b, const void *s, size_t n)
{
    if (b->failed || n > b->cap - b->len) {
        b->failed = 1;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define HC_PUTS(b, lit) hc_put(b, lit, sizeof(lit) - 1)

static int hc_mp_write(void *data, const char *buf, size_t len)
{
    hc_buf *b = data;
    hc_put(b, buf, len);
    return b->failed ? -1 : 0;
}

static void hc_mp_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* Milliseconds since the epoch, from the loop's cached clock (as the
 * gateway does). */
static int64_t hc_now_ms(struct event_base *base)
{
    struct timeval tv;
    event_base_gettimeofday_cached(base, &tv);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* 1 for JSON, 2 for msgpack, 0 for anything else. */
static int hc_media_kind(const char *ct)
{
    if (!ct)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, "; \t");
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return 1;
    if (n == 19 && strncasecmp(ct, "application/msgpack", 19) == 0)
        return 2;
    return 0;
}

static void hc_reply_ok(hc_buf *b, int msgpack)
{
    if (!msgpack) {
        hc_put(b, hc_ok_json, sizeof(hc_ok_json) - 1);
        return;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, hc_mp_write);
    msgpack_pack_map(&pk, 2);
    hc_mp_str(&pk, "status");
    hc_mp_str(&pk, "ok");
    hc_mp_str(&pk, "next_checkin_s");
    msgpack_pack_int64(&pk, HC_NEXT_CHECKIN_S);
}

static void hc_reply_item_error(hc_buf *b, int msgpack,
                                const fg_checkin_error *err)
{
    const char *code = err && err->code ? err->code : "invalid";
    const char *field = err ? err->field : NULL;
    if (!msgpack) {
        /* Codes and field names are static identifiers: no escaping. */
        HC_PUTS(b, "{\"status\":\"error\",\"error\":\"");
        hc_put(b, code, strlen(code));
        if (field) {
            HC_PUTS(b, "\",\"field\":\"");
            hc_put(b, field, strlen(field));
        }
        HC_PUTS(b, "\"}");
        return;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, hc_mp_write);
    msgpack_pack_map(&pk, field ? 3 : 2);
    hc_mp_str(&pk, "status");
    hc_mp_str(&pk, "error");
    hc_mp_str(&pk, "error");
    hc_mp_str(&pk, code);
    if (field) {
        hc_mp_str(&pk, "field");
        hc_mp_str(&pk, field);
    }
}

static void hc_respond_error(fg_http_req *req, int status,
                             const fg_checkin_error *err)
{
    fg_http_respond_error(req, status, err && err->code ? err->code : "invalid",
                          err && err->detail[0] ? err->detail : NULL, NULL);
}

static void hc_single(hc_worker *w, fg_http_req *req, int msgpack)
{
    size_t len;
    const char *body = fg_http_req_body(req, &len);
    fg_checkin ci;
    fg_checkin_error err;
    memset(&err, 0, sizeof(err));
    fg_status st = msgpack ? fg_checkin_parse_msgpack(body, len, &ci, &err)
                           : fg_checkin_parse_json(body, len, &ci, &err);
    if (st != FG_OK) {
        hc_respond_error(req, 400, &err);
        return;
    }
    if (fg_checkin_encode(&ci, hc_now_ms(w->base), w->gw_id, w->rec,
                          sizeof(w->rec)) == 0) {
        fg_http_respond_error(req, 500, "encode_failed", NULL, NULL);
        return;
    }
    if (!msgpack) {
        fg_http_respond(req, 200, "application/json", hc_ok_json,
                        sizeof(hc_ok_json) - 1, NULL);
        return;
    }
    char tmp[64];
    hc_buf b = {tmp, 0, sizeof(tmp), 0};
    hc_reply_ok(&b, 1);
    fg_http_respond(req, 200, "application/msgpack", b.p, b.len, NULL);
}

static fg_status hc_item_cb(void *ud, size_t index, const fg_checkin *ci,
                            const fg_checkin_error *item_err)
{
    hc_worker *w = ud;
    w->items = index + 1;
    if (!w->msgpack && index > 0)
        HC_PUTS(&w->out, ",");
    if (!ci) {
        hc_reply_item_error(&w->out, w->msgpack, item_err);
        return w->out.failed ? FG_ETOOBIG : FG_OK;
    }
    if (fg_checkin_encode(ci, w->recv_ts, w->gw_id, w->rec,
                          sizeof(w->rec)) == 0)
        return FG_EIO;
    hc_reply_ok(&w->out, w->msgpack);
    return w->out.failed ? FG_ETOOBIG : FG_OK;
}

/* Writes the batch reply's opening for up to HC_MAX_BATCH items. The
 * msgpack array header needs the count before the items, so it is written
 * as array32 and patched once the count is known. */
static void hc_batch_open(hc_buf *b, int msgpack)
{
    if (!msgpack) {
        HC_PUTS(b, "{\"results\":[");
        return;
    }
    HC_PUTS(b, "\x81\xa7results\xdd\0\0\0\0");
}

static void hc_batch_close(hc_buf *b, int msgpack, size_t n)
{
    if (!msgpack) {
        HC_PUTS(b, "]}");
        return;
    }
    if (b->failed)
        return;
    unsigned char *hdr = (unsigned char *)b->p + 10;
    hdr[0] = (unsigned char)(n >> 24);
    hdr[1] = (unsigned char)(n >> 16);
    hdr[2] = (unsigned char)(n >> 8);
    hdr[3] = (unsigned char)n;
}

static void hc_batch(hc_worker *w, fg_http_req *req, int msgpack)
{
    size_t len;
    const char *body = fg_http_req_body(req, &len);
    fg_checkin_error err;
    memset(&err, 0, sizeof(err));
    w->items = 0;
    w->out.len = 0;
    w->out.failed = 0;
    w->msgpack = msgpack;
    w->recv_ts = hc_now_ms(w->base);
    hc_batch_open(&w->out, msgpack);
    fg_status st =
        msgpack ? fg_checkin_batch_parse_msgpack(body, len, HC_MAX_BATCH,
                                                 hc_item_cb, w, &err)
                : fg_checkin_batch_parse_json(body, len, HC_MAX_BATCH,
                                              hc_item_cb, w, &err);
    if (st == FG_EINVAL) {
        hc_respond_error(req, 400, &err);
        return;
    }
    hc_batch_close(&w->out, msgpack, w->items);
    if (st != FG_OK || w->out.failed) {
        fg_http_respond_error(req, 500, "internal", fg_status_str(st), NULL);
        return;
    }
    fg_http_respond(req, 200, msgpack ? "application/msgpack" : "application/json",
                    w->out.p, w->out.len, NULL);
}

static void hc_on_request(void *ud, fg_http_req *req)
{
    hc_worker *w = ud;
    size_t plen;
    const char *path = fg_http_req_path(req, &plen);
    int single = plen == 11 && memcmp(path, "/v1/checkin", 11) == 0;
    int batch = plen == 12 && memcmp(path, "/v1/checkins", 12) == 0;
    if (!single && !batch) {
        fg_http_respond_error(req, 404, "not_found", NULL, NULL);
        return;
    }
    if (fg_http_req_method(req) != FG_HTTP_POST) {
        fg_http_respond_error(req, 405, "method_not_allowed", "use POST",
                              "Allow: POST\r\n");
        return;
    }
    int kind = hc_media_kind(fg_http_req_header(req, "content-type"));
    if (kind == 0) {
        fg_http_respond_error(req, 415, "unsupported_media_type", NULL, NULL);
        return;
    }
    if (single)
        hc_single(w, req, kind == 2);
    else
        hc_batch(w, req, kind == 2);
}

static void hc_on_stop(evutil_socket_t fd, short what, void *arg)
{
    hc_worker *w = arg;
    (void)fd;
    (void)what;
    event_base_loopbreak(w->base);
}

static void *hc_worker_main(void *arg)
{
    hc_worker *w = arg;
    event_base_dispatch(w->base);
    /* The server belongs to this loop: free it on this thread. */
    fg_http_server_free(w->srv);
    w->srv = NULL;
    return NULL;
}

/* Creates worker w (zeroed by the caller) listening on addr. Returns 0, or
 * -1 with errbuf filled. */
static int hc_worker_init(hc_worker *w, int index, const char *addr,
                          const char *gw_id, fg_http_conn_budget *budget,
                          char *errbuf, size_t errlen)
{
    static const fg_http_limits lim = {
        /* The gateway's defaults. */
        .max_header_bytes = 16 * 1024,
        .max_body_bytes = 1024 * 1024,
        .read_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
        .write_timeout_ms = 10000,
    };
    w->index = index;
    w->gw_id = gw_id;
    w->out.cap = HC_REPLY_CAP;
    w->out.p = malloc(w->out.cap);
    w->base = event_base_new();
    if (w->base)
        w->stop_ev = event_new(w->base, -1, 0, hc_on_stop, w);
    if (!w->out.p || !w->base || !w->stop_ev) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    int fd = fg_http_listen(addr, 1, errbuf, errlen);
    if (fd < 0)
        return -1;
    w->srv = fg_http_server_new(w->base, fd, &lim, budget, hc_on_request, w,
                                errbuf, errlen);
    if (!w->srv) {
        close(fd);
        return -1;
    }
    return 0;
}

static void usage(FILE *fp, const char *prog)
{
    fprintf(fp,
            "Usage: %s [--listen HOST:PORT] [--threads N]\n"
            "The gateway's HTTP path without Kafka: POST /v1/checkin and\n"
            "/v1/checkins are decoded, validated and encoded, then answered ok.\n"
            "  -l, --listen HOST:PORT   default 127.0.0.1:38081\n"
            "  -t, --threads N          worker threads, each with its own loop\n"
            "                           and SO_REUSEPORT listener (default 1)\n"
            "SIGTERM or SIGINT stops it.\n",
            prog);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *addr = "127.0.0.1:38081";
    long nthreads = 1;
    hc_worker *workers = NULL;
    fg_http_conn_budget budget;
    char gw_id[FG_GW_ID_MAX + 1];
    char err[256];
    int rc = 1;
    int opt;

    while ((opt = getopt_long(argc, argv, "l:t:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            addr = optarg;
            break;
        case 't': {
            char *end = NULL;
            errno = 0;
            nthreads = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || nthreads < 1 ||
                nthreads > HC_MAX_THREADS) {
                fprintf(stderr, "http-ceiling: --threads: 1..%d\n",
                        HC_MAX_THREADS);
                return 2;
            }
            break;
        }
        case 'h':
            usage(stdout, argv[0]);
            return 0;
        default:
            usage(stderr, argv[0]);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr, argv[0]);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    /* Workers inherit this mask, so only sigwait below sees the signals. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    /* Lets the main thread break the workers' loops. */
    if (evthread_use_pthreads() != 0) {
        fprintf(stderr, "http-ceiling: evthread_use_pthreads failed\n");
        return 1;
    }

    snprintf(gw_id, sizeof(gw_id), "ceiling-%ld", (long)getpid());
    atomic_init(&budget.open, 0);
    budget.max = 20000;
    workers = calloc((size_t)nthreads, sizeof(*workers));
    if (!workers) {
        fprintf(stderr, "http-ceiling: out of memory\n");
        goto out;
    }
    for (long i = 0; i < nthreads; i++) {
        if (hc_worker_init(&workers[i], (int)i, addr, gw_id, &budget, err,
                           sizeof(err)) != 0) {
            fprintf(stderr, "http-ceiling: %s: %s\n", addr, err);
            goto out;
        }
    }
    for (long i = 0; i < nthreads; i++) {
        if (pthread_create(&workers[i].th, NULL, hc_worker_main,
                           &workers[i]) != 0) {
            fprintf(stderr, "http-ceiling: cannot start thread %ld\n", i);
            goto out;
        }
        workers[i].started = 1;
    }
    fprintf(stderr, "http-ceiling: listening on %s, %ld thread(s)\n", addr,
            nthreads);

    int sig = 0;
    while (sigwait(&stop, &sig) != 0)
        ;
    fprintf(stderr, "http-ceiling: signal %d, stopping\n", sig);
    rc = 0;
out:
    for (long i = 0; workers && i < nthreads; i++) {
        if (workers[i].started) {
            /* Unlike a loopbreak, an active event is not lost when the
             * thread has not entered its loop yet. */
            event_active(workers[i].stop_ev, EV_READ, 0);
            pthread_join(workers[i].th, NULL);
        }
    }
    for (long i = 0; workers && i < nthreads; i++) {
        fg_http_server_free(workers[i].srv);
        if (workers[i].stop_ev)
            event_free(workers[i].stop_ev);
        if (workers[i].base)
            event_base_free(workers[i].base);
        free(workers[i].out.p);
    }
    free(workers);
    return rc;
}
