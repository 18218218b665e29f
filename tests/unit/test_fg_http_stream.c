/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for common/fg_http's streamed answers, on a loopback listener
 * driven by a libevent loop in this thread: the head (no Content-Length,
 * Connection: close), bytes arriving as they are written, a client that
 * goes away, a client that does not read (dropped at the buffer cap, or by
 * the stall guard), end() flushing before closing, HEAD, pipelined requests
 * ignored, a stream started after the handler returned, a failure inside
 * the handler, and drain and free with streams open. */
#include <errno.h>
#include <stdlib.h>

#include "fg_test_http.h"

typedef struct env {
    struct event_base *base;
    fg_http_server *srv;
    int port;
    fg_http_stream *s;      /* the stream the handler began */
    fg_http_req *held;      /* a request kept for later */
    fg_http_stream_opts opts;
    int closes;             /* on_close calls */
    fg_http_stream_why why; /* the last one's reason */
    int hold;               /* the handler keeps the request */
    size_t burst;           /* the handler writes this many bytes at once */
    fg_status burst_st;
} env;

static void on_close(void *ud, fg_http_stream_why why)
{
    env *e = ud;
    e->closes++;
    e->why = why;
    e->s = NULL;
}

static void handler(void *ud, fg_http_req *req)
{
    env *e = ud;
    size_t plen;
    const char *path = fg_http_req_path(req, &plen);
    if (plen != 2 || memcmp(path, "/s", 2) != 0) {
        fg_http_respond(req, 200, "text/plain", "plain", 5, NULL);
        return;
    }
    if (e->hold) {
        e->held = req;
        return;
    }
    e->s = fg_http_stream_begin(req, 200, "text/event-stream",
                                "Cache-Control: no-store\r\n", &e->opts,
                                on_close, e);
    if (e->s && e->burst) {
        char *big = calloc(1, e->burst);
        e->burst_st = fg_http_stream_write(e->s, big, e->burst);
        if (e->burst_st != FG_OK)
            e->s = NULL;
        free(big);
    } else if (e->s) {
        FG_CHECK_INT(fg_http_stream_write(e->s, "hello\n", 6), FG_OK);
    }
}

static void env_init(env *e)
{
    memset(e, 0, sizeof(*e));
    e->base = event_base_new();
    fg_http_limits lim = {.max_header_bytes = 8192,
                          .max_body_bytes = 8192,
                          .read_timeout_ms = 5000,
                          .idle_timeout_ms = 5000,
                          .write_timeout_ms = 5000};
    e->srv = fg_test_http_server(e->base, &lim, handler, e, &e->port);
}

static void env_free(env *e)
{
    fg_http_server_free(e->srv);
    event_base_free(e->base);
}

/* Runs the loop for ms, or until *flag is non-zero (flag may be NULL). */
static void pump(env *e, int ms, const int *flag)
{
    fg_test_pump(e->base, ms, flag);
}

/* A client socket; rcvbuf > 0 shrinks its receive buffer first. */
static int client(env *e, int rcvbuf)
{
    int fd = fg_test_connect(e->port, rcvbuf);
    FG_CHECK(fd >= 0);
    return fd;
}

static void say(int fd, const char *req)
{
    FG_CHECK(send(fd, req, strlen(req), 0) == (ssize_t)strlen(req));
}

/* Reads what has arrived into buf (NUL-terminated, cap bytes); pumps the
 * loop meanwhile, for up to ms or until EOF (*eof set) or until want
 * bytes have arrived. Returns the length. */
static size_t slurp(env *e, int fd, char *buf, size_t cap, size_t want,
                    int ms, int *eof)
{
    size_t len = 0;
    int64_t end = fg_test_mono_ms() + ms;
    *eof = 0;
    while (fg_test_mono_ms() < end && len < want) {
        event_base_loop(e->base, EVLOOP_NONBLOCK);
        ssize_t n = recv(fd, buf + len, cap - 1 - len, MSG_DONTWAIT);
        if (n == 0) {
            *eof = 1;
            break;
        }
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            *eof = 1;
            break;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    buf[len] = '\0';
    return len;
}

static const char get_s[] = "GET /s HTTP/1.1\r\nHost: t\r\n\r\n";

/* The head has no length and says close; bytes arrive as written; the
 * client closing tells the owner (peer_gone) and frees the connection. */
static void test_head_bytes_and_peer_gone(void)
{
    env e;
    char buf[8192];
    int eof;
    env_init(&e);
    int fd = client(&e, 0);
    say(fd, get_s);
    size_t n = slurp(&e, fd, buf, sizeof(buf), SIZE_MAX, 300, &eof);
    FG_CHECK(e.s != NULL && !eof);
    FG_CHECK(n > 0 && strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    FG_CHECK(strstr(buf, "Content-Type: text/event-stream\r\n") != NULL);
    FG_CHECK(strstr(buf, "Connection: close\r\n") != NULL);
    FG_CHECK(strstr(buf, "Cache-Control: no-store\r\n") != NULL);
    FG_CHECK(strstr(buf, "Content-Length") == NULL);
    const char *body = strstr(buf, "\r\n\r\n");
    FG_CHECK_STR(body ? body + 4 : NULL, "hello\n");
    FG_CHECK_INT(fg_http_server_inflight(e.srv), 0);
    /* Later writes arrive too, with no deadline in between (the read
     * timeout would otherwise not apply anyway; idle would). */
    FG_CHECK_INT(fg_http_stream_write(e.s, "more\n", 5), FG_OK);
    n = slurp(&e, fd, buf, sizeof(buf), 5, 1000, &eof);
    FG_CHECK_STR(buf, "more\n");
    FG_CHECK_INT(fg_http_stream_buffered(e.s), 0);
    close(fd);
    pump(&e, 1000, &e.closes);
    FG_CHECK_INT(e.closes, 1);
    FG_CHECK_INT(e.why, FG_HTTP_STREAM_PEER_GONE);
    FG_CHECK_INT(fg_http_server_connections(e.srv), 0);
    env_free(&e);
}

/* A client that never reads: writes succeed while the kernel takes them,
 * then buffer, and the first write over the cap fails and closes the
 * connection without calling on_close; buffered never passes the cap. */
static void test_slow_client_dropped_at_cap(void)
{
    env e;
    char chunk[4096];
    env_init(&e);
    e.opts.max_buffered = 64 * 1024;
    int fd = client(&e, 4096);
    say(fd, get_s);
    pump(&e, 200, NULL);
    FG_CHECK(e.s != NULL);
    memset(chunk, 'x', sizeof(chunk));
    fg_status st = FG_OK;
    size_t written = 0, max_buffered = 0;
    while (e.s && written < 64u * 1024 * 1024) {
        st = fg_http_stream_write(e.s, chunk, sizeof(chunk));
        if (st != FG_OK)
            break;
        written += sizeof(chunk);
        if (fg_http_stream_buffered(e.s) > max_buffered)
            max_buffered = fg_http_stream_buffered(e.s);
        event_base_loop(e.base, EVLOOP_NONBLOCK);
    }
    FG_CHECK_INT(st, FG_ETOOBIG);
    FG_CHECK(max_buffered <= e.opts.max_buffered);
    FG_CHECK(max_buffered > e.opts.max_buffered - sizeof(chunk));
    FG_CHECK(written < 16u * 1024 * 1024); /* dropped, not fed forever */
    FG_CHECK_INT(e.closes, 0);
    FG_CHECK_INT(fg_http_server_connections(e.srv), 0);
    close(fd);
    env_free(&e);
}

/* Buffered output with no progress for the stall timeout closes the
 * connection and tells the owner (stalled). */
static void test_stall_guard(void)
{
    env e;
    char chunk[4096];
    env_init(&e);
    e.opts.max_buffered = 8 * 1024 * 1024;
    e.opts.stall_timeout_ms = 200;
    int fd = client(&e, 4096);
    say(fd, get_s);
    pump(&e, 200, NULL);
    FG_CHECK(e.s != NULL);
    memset(chunk, 'y', sizeof(chunk));
    for (int i = 0; i < 4096 && e.s && fg_http_stream_buffered(e.s) == 0; i++)
        FG_CHECK_INT(fg_http_stream_write(e.s, chunk, sizeof(chunk)), FG_OK);
    FG_CHECK(e.s && fg_http_stream_buffered(e.s) > 0);
    int64_t t0 = fg_test_mono_ms();
    pump(&e, 3000, &e.closes);
    FG_CHECK_INT(e.closes, 1);
    FG_CHECK_INT(e.why, FG_HTTP_STREAM_STALLED);
    FG_CHECK(fg_test_mono_ms() - t0 >= 150);
    FG_CHECK_INT(fg_http_server_connections(e.srv), 0);
    close(fd);
    env_free(&e);
}

/* end() sends every buffered byte, then closes; on_close is not called. A
 * request pipelined behind the stream's is never answered. */
static void test_end_flushes_then_closes(void)
{
    env e;
    static char buf[2 * 1024 * 1024];
    int eof;
    env_init(&e);
    e.opts.max_buffered = 1024 * 1024;
    int fd = client(&e, 0);
    char two[256];
    snprintf(two, sizeof(two), "%sGET /other HTTP/1.1\r\nHost: t\r\n\r\n",
             get_s);
    say(fd, two);
    pump(&e, 200, NULL);
    FG_CHECK(e.s != NULL);
    static char big[600 * 1024];
    memset(big, 'z', sizeof(big));
    FG_CHECK_INT(fg_http_stream_write(e.s, big, sizeof(big)), FG_OK);
    fg_http_stream_end(e.s);
    e.s = NULL;
    size_t n = slurp(&e, fd, buf, sizeof(buf), SIZE_MAX, 5000, &eof);
    FG_CHECK(eof);
    const char *body = strstr(buf, "\r\n\r\n");
    FG_CHECK(body != NULL);
    if (body) {
        size_t blen = n - (size_t)(body + 4 - buf);
        FG_CHECK_INT(blen, 6 + sizeof(big)); /* hello\n + big */
    }
    FG_CHECK(strstr(buf, "plain") == NULL);
    FG_CHECK_INT(e.closes, 0);
    pump(&e, 50, NULL);
    FG_CHECK_INT(fg_http_server_connections(e.srv), 0);
    close(fd);
    env_free(&e);
}

/* HEAD gets the head and a close; a request held by the handler can be
 * streamed later; a write over the cap inside the handler drops the
 * connection cleanly. */
static void test_head_later_and_in_handler_failure(void)
{
    env e;
    char buf[8192];
    int eof;
    env_init(&e);
    int fd = client(&e, 0);
    say(fd, "HEAD /s HTTP/1.1\r\nHost: t\r\n\r\n");
    slurp(&e, fd, buf, sizeof(buf), SIZE_MAX, 1000, &eof);
    FG_CHECK(eof);
    FG_CHECK(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    FG_CHECK(strstr(buf, "hello") == NULL);
    FG_CHECK(e.s == NULL && e.closes == 0);
    close(fd);

    e.hold = 1;
    fd = client(&e, 0);
    say(fd, get_s);
    pump(&e, 200, NULL);
    FG_CHECK(e.held != NULL);
    FG_CHECK_INT(fg_http_server_inflight(e.srv), 1);
    e.s = fg_http_stream_begin(e.held, 200, "text/plain", NULL, NULL,
                               on_close, &e);
    e.held = NULL;
    FG_CHECK(e.s != NULL);
    FG_CHECK_INT(fg_http_server_inflight(e.srv), 0);
    FG_CHECK_INT(fg_http_stream_write(e.s, "late\n", 5), FG_OK);
    slurp(&e, fd, buf, sizeof(buf), SIZE_MAX, 300, &eof);
    FG_CHECK(strstr(buf, "\r\n\r\nlate\n") != NULL);
    close(fd);
    pump(&e, 1000, &e.closes);
    FG_CHECK_INT(e.closes, 1);
    e.hold = 0;
    e.closes = 0;

    e.opts.max_buffered = 1024;
    e.burst = 32 * 1024 * 1024;
    fd = client(&e, 4096);
    say(fd, get_s);
    pump(&e, 300, NULL);
    FG_CHECK_INT(e.burst_st, FG_ETOOBIG);
    FG_CHECK_INT(fg_http_server_connections(e.srv), 0);
    FG_CHECK_INT(e.closes, 0);
    close(fd);
    env_free(&e);
}

/* Drain tells every owner (shutdown) and closes after the buffered bytes;
 * free with a stream open tells its owner too. */
static void test_drain_and_free(void)
{
    env e;
    char buf[8192];
    int eof;
    env_init(&e);
    int fd = client(&e, 0);
    say(fd, get_s);
    pump(&e, 200, NULL);
    FG_CHECK(e.s != NULL);
    fg_http_server_drain(e.srv);
    FG_CHECK_INT(e.closes, 1);
    FG_CHECK_INT(e.why, FG_HTTP_STREAM_SHUTDOWN);
    slurp(&e, fd, buf, sizeof(buf), SIZE_MAX, 1000, &eof);
    FG_CHECK(eof);
    FG_CHECK(strstr(buf, "\r\n\r\nhello\n") != NULL);
    close(fd);
    env_free(&e);

    env_init(&e);
    fd = client(&e, 0);
    say(fd, get_s);
    pump(&e, 200, NULL);
    FG_CHECK(e.s != NULL);
    fg_http_server_free(e.srv);
    e.srv = NULL;
    FG_CHECK_INT(e.closes, 1);
    FG_CHECK_INT(e.why, FG_HTTP_STREAM_SHUTDOWN);
    close(fd);
    env_free(&e);
}

FG_TEST_MAIN(test_head_bytes_and_peer_gone, test_slow_client_dropped_at_cap,
             test_stall_guard, test_end_flushes_then_closes,
             test_head_later_and_in_handler_failure, test_drain_and_free)
