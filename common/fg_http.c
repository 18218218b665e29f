/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/1.1 server on raw non-blocking sockets driven by a libevent loop and
 * parsed by http_parser. Bytes are read into a per-server scratch buffer and
 * parsed in place; a connection only holds memory of its own while a request
 * is partly received, in flight, or its answer is partly written, so idle
 * keep-alive connections cost a few hundred bytes. A streamed answer turns
 * its connection into a one-way pipe: requests are no longer parsed, and
 * the output buffer is capped per stream. TLS connections read through
 * SSL_read in place of recv and queue answers in the output buffer, written
 * with SSL_write; a plain connection pays one branch per read or write. */
#include "fg_http.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <http_parser.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FG_HTTP_SCRATCH (64 * 1024)
#define FG_HTTP_MAX_HEADERS 64
#define FG_HTTP_ACCEPT_BATCH 64
#define FG_HTTP_READ_ROUNDS 4
#define FG_HTTP_REQ_CACHE 64
#define FG_HTTP_KEEP_ARENA 2048 /* arenas/bodies up to this size are reused */
/* Bytes a client may pipeline behind a request in flight before we stop
 * reading from it. */
#define FG_HTTP_IN_CAP (256 * 1024)

typedef struct fg_http_conn fg_http_conn;

/* A streamed answer; lives inside its connection and is freed with it. */
struct fg_http_stream {
    fg_http_conn *c;
    fg_http_stream_close_cb on_close;
    void *ud;
    size_t cap;                     /* max bytes buffered */
    struct timeval stall;           /* own stall timeout, when given */
    const struct timeval *tv_stall; /* &stall or the server's write one */
    fg_http_stream_why why;         /* reported when the connection ends */
    unsigned ended : 1;             /* the owner is done with it or was told */
};

typedef struct fg_http_hdr {
    uint32_t name, name_len, value, value_len; /* offsets into the arena */
} fg_http_hdr;

struct fg_http_req {
    fg_http_conn *c;
    fg_http_req *next_free;
    fg_http_method method;
    char *arena; /* url, header names and values, NUL-terminated */
    size_t arena_len, arena_cap;
    uint32_t url, url_len;
    fg_http_hdr hdr[FG_HTTP_MAX_HEADERS];
    int nhdr;
    int in_value; /* last header callback was a value */
    int url_done; /* the URL has been NUL-terminated */
    char *body;
    size_t body_len, body_cap;
    size_t reserved; /* bytes counted in budget->body_bytes */
    fg_http_conn_budget *budget;
    const char *path_cached;
    size_t path_len;
    const char *query;
    int error_status; /* set by parser callbacks: answer this and close */
    const char *error_code;
    int keep_alive;
    int head;
    int saw_te, saw_cl;
};

struct fg_http_conn {
    fg_http_server *srv;
    fg_http_conn *prev, *next;
    int fd;
    struct event rev, wev, tev;
    http_parser parser;
    fg_http_req *req;  /* being received or in flight */
    char *in;          /* unparsed bytes (paused parser or partial) */
    size_t in_len, in_cap;
    char *out;         /* answer bytes not yet written */
    size_t out_len, out_off, out_cap;
    fg_http_stream *stream; /* a streamed answer is running */
    SSL *ssl;                /* NULL: plain TCP */
    unsigned inflight : 1;   /* req is with the handler */
    unsigned in_handler : 1; /* inside the handler call */
    unsigned close_after : 1;
    unsigned peer_eof : 1;
    unsigned read_paused : 1;
    unsigned detached : 1;   /* server gone; freed on respond */
    unsigned tls_hs : 1;     /* TLS handshake not finished */
    unsigned tls_broken : 1; /* fatal TLS error: no close_notify */
    unsigned tls_closed : 1; /* close_notify sent */
    unsigned tls_rww : 1;    /* SSL_read waits for the socket to be writable */
    unsigned tls_wwr : 1;    /* SSL_write waits for it to be readable */
    char peer[INET6_ADDRSTRLEN];
};

struct fg_http_server {
    struct event_base *base;
    int lfd;
    struct event *lev;
    fg_http_limits lim;
    fg_http_conn_budget *budget;
    fg_http_handler handler;
    void *ud;
    fg_http_reject_cb on_reject;
    SSL_CTX *tls; /* NULL: plain HTTP */
    const struct timeval *tv_read, *tv_idle, *tv_write;
    fg_http_conn *conns;
    size_t nconns, inflight;
    int draining;
    fg_http_req *req_cache;
    int req_cached;
    char date[40];
    time_t date_sec;
    char scratch[FG_HTTP_SCRATCH];
};

static http_parser_settings fg_http_settings;

/* ---- request objects ---- */

static fg_http_req *req_get(fg_http_server *srv, fg_http_conn *c)
{
    fg_http_req *req = srv ? srv->req_cache : NULL;
    if (req) {
        srv->req_cache = req->next_free;
        srv->req_cached--;
    } else {
        req = calloc(1, sizeof(*req));
        if (!req)
            return NULL;
    }
    char *arena = req->arena, *body = req->body;
    size_t acap = req->arena_cap, bcap = req->body_cap;
    memset(req, 0, offsetof(fg_http_req, hdr));
    req->nhdr = 0;
    req->in_value = 0;
    req->url_done = 0;
    req->body_len = 0;
    req->path_cached = NULL;
    req->path_len = 0;
    req->query = NULL;
    req->error_status = 0;
    req->error_code = NULL;
    req->keep_alive = 0;
    req->head = 0;
    req->saw_te = req->saw_cl = 0;
    req->reserved = 0;
    req->arena = arena;
    req->arena_cap = acap;
    req->body = body;
    req->body_cap = bcap;
    req->c = c;
    req->budget = srv ? srv->budget : NULL;
    return req;
}

static void req_unreserve(fg_http_req *req)
{
    if (req->reserved && req->budget)
        atomic_fetch_sub(&req->budget->body_bytes, (long)req->reserved);
    req->reserved = 0;
}

/* Counts n more body bytes against the shared budget. */
static int req_reserve(fg_http_req *req, size_t n)
{
    fg_http_conn_budget *b = req->budget;
    if (!b || b->max_body_bytes <= 0 || n == 0)
        return 0;
    long after = atomic_fetch_add(&b->body_bytes, (long)n) + (long)n;
    if (after > b->max_body_bytes) {
        atomic_fetch_sub(&b->body_bytes, (long)n);
        return -1;
    }
    req->reserved += n;
    return 0;
}

static void req_put(fg_http_server *srv, fg_http_req *req)
{
    if (!req)
        return;
    req_unreserve(req);
    if (srv && srv->req_cached < FG_HTTP_REQ_CACHE) {
        if (req->arena_cap > FG_HTTP_KEEP_ARENA) {
            free(req->arena);
            req->arena = NULL;
            req->arena_cap = 0;
        }
        if (req->body_cap > FG_HTTP_KEEP_ARENA) {
            free(req->body);
            req->body = NULL;
            req->body_cap = 0;
        }
        req->next_free = srv->req_cache;
        srv->req_cache = req;
        srv->req_cached++;
        return;
    }
    free(req->arena);
    free(req->body);
    free(req);
}

/* Appends to the arena, keeping the whole head under the header cap. */
static int arena_append(fg_http_req *req, size_t cap, const char *p, size_t n)
{
    if (req->arena_len + n + 1 > cap)
        return -1;
    if (req->arena_len + n + 1 > req->arena_cap) {
        size_t ncap = req->arena_cap ? req->arena_cap : 512;
        while (ncap < req->arena_len + n + 1)
            ncap *= 2;
        if (ncap > cap)
            ncap = cap;
        char *na = realloc(req->arena, ncap);
        if (!na)
            return -1;
        req->arena = na;
        req->arena_cap = ncap;
    }
    memcpy(req->arena + req->arena_len, p, n);
    req->arena_len += n;
    return 0;
}

static void req_fail(fg_http_req *req, int status, const char *code)
{
    if (!req->error_status) {
        req->error_status = status;
        req->error_code = code;
    }
}

/* ---- parser callbacks ---- */

static int on_message_begin(http_parser *p)
{
    fg_http_conn *c = p->data;
    c->req = req_get(c->srv, c);
    if (!c->req)
        return -1;
    event_add(&c->tev, c->srv->tv_read);
    return 0;
}

static int head_append(http_parser *p, const char *at, size_t n)
{
    fg_http_conn *c = p->data;
    fg_http_req *req = c->req;
    if (arena_append(req, c->srv->lim.max_header_bytes, at, n) != 0) {
        req_fail(req, 431, "headers_too_large");
        return -1;
    }
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    fg_http_conn *c = p->data;
    if (c->req->url_len == 0)
        c->req->url = (uint32_t)c->req->arena_len;
    c->req->url_len += (uint32_t)n;
    return head_append(p, at, n);
}

static int terminate_piece(http_parser *p)
{
    return head_append(p, "", 1);
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    fg_http_conn *c = p->data;
    fg_http_req *req = c->req;
    if (!req->url_done) {
        if (terminate_piece(p) != 0) /* end of the URL */
            return -1;
        req->url_done = 1;
    }
    if (req->in_value || req->nhdr == 0) {
        if (req->in_value && terminate_piece(p) != 0)
            return -1;
        if (req->nhdr == FG_HTTP_MAX_HEADERS) {
            req_fail(req, 431, "too_many_headers");
            return -1;
        }
        fg_http_hdr *h = &req->hdr[req->nhdr++];
        h->name = (uint32_t)req->arena_len;
        h->name_len = 0;
        h->value = 0;
        h->value_len = 0;
        req->in_value = 0;
    }
    req->hdr[req->nhdr - 1].name_len += (uint32_t)n;
    return head_append(p, at, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    fg_http_conn *c = p->data;
    fg_http_req *req = c->req;
    fg_http_hdr *h = &req->hdr[req->nhdr - 1];
    if (!req->in_value) {
        if (terminate_piece(p) != 0)
            return -1;
        h->value = (uint32_t)req->arena_len;
        req->in_value = 1;
    }
    h->value_len += (uint32_t)n;
    return head_append(p, at, n);
}

static void conn_send_raw(fg_http_conn *c, const char *s, size_t n);

static int on_headers_complete(http_parser *p)
{
    fg_http_conn *c = p->data;
    fg_http_req *req = c->req;
    if (!req->url_done || req->in_value) {
        if (terminate_piece(p) != 0)
            return -1;
        req->url_done = 1;
        req->in_value = 0;
    }
    for (int i = 0; i < req->nhdr; i++) {
        const char *name = req->arena + req->hdr[i].name;
        if (strcasecmp(name, "transfer-encoding") == 0)
            req->saw_te = 1;
        else if (strcasecmp(name, "content-length") == 0)
            req->saw_cl = 1;
    }
    if (req->saw_te && req->saw_cl) {
        /* Request smuggling guard: RFC 9112 6.1. */
        req_fail(req, 400, "te_and_cl");
        return -1;
    }
    switch (p->method) {
    case HTTP_GET: req->method = FG_HTTP_GET; break;
    case HTTP_HEAD: req->method = FG_HTTP_HEAD; req->head = 1; break;
    case HTTP_POST: req->method = FG_HTTP_POST; break;
    case HTTP_PUT: req->method = FG_HTTP_PUT; break;
    case HTTP_DELETE: req->method = FG_HTTP_DELETE; break;
    default: req->method = FG_HTTP_OTHER; break;
    }
    req->keep_alive = http_should_keep_alive(p);
    size_t maxb = c->srv->lim.max_body_bytes;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > maxb) {
        req_fail(req, 413, "body_too_large");
        return -1;
    }
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > 0) {
        size_t want = (size_t)p->content_length;
        if (req_reserve(req, want) != 0) {
            req_fail(req, 503, "overloaded");
            return -1;
        }
        if (req->body_cap < want) {
            char *nb = realloc(req->body, want);
            if (!nb) {
                req_fail(req, 503, "no_memory");
                return -1;
            }
            req->body = nb;
            req->body_cap = want;
        }
    }
    const char *expect = fg_http_req_header(req, "expect");
    if (expect && strcasecmp(expect, "100-continue") == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        conn_send_raw(c, cont, sizeof(cont) - 1);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    fg_http_conn *c = p->data;
    fg_http_req *req = c->req;
    size_t maxb = c->srv->lim.max_body_bytes;
    if (req->body_len + n > maxb) {
        req_fail(req, 413, "body_too_large");
        return -1;
    }
    if (req->body_len + n > req->body_cap) {
        size_t ncap = req->body_cap ? req->body_cap : 1024;
        while (ncap < req->body_len + n)
            ncap *= 2;
        if (ncap > maxb)
            ncap = maxb;
        if (ncap > req->reserved &&
            req_reserve(req, ncap - req->reserved) != 0) {
            req_fail(req, 503, "overloaded");
            return -1;
        }
        char *nb = realloc(req->body, ncap);
        if (!nb) {
            req_fail(req, 503, "no_memory");
            return -1;
        }
        req->body = nb;
        req->body_cap = ncap;
    }
    memcpy(req->body + req->body_len, at, n);
    req->body_len += n;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    /* Stop here: the next pipelined request is parsed once this one is
     * answered, so answers leave in order. */
    http_parser_pause(p, 1);
    return 0;
}

/* ---- connections ---- */

/* Marks the stream over and tells its owner, once. The owner may write to
 * other streams from the callback, so callers that walk the connection list
 * start over afterwards. */
static void stream_notify(fg_http_conn *c)
{
    fg_http_stream *s = c->stream;
    if (!s || s->ended)
        return;
    s->ended = 1;
    if (s->on_close)
        s->on_close(s->ud, s->why);
}

/* Sends close_notify, once, when the session is sound: best effort, the
 * socket is about to close either way. */
static void tls_notify(fg_http_conn *c)
{
    if (!c->ssl || c->tls_hs || c->tls_broken || c->tls_closed || c->fd < 0)
        return;
    c->tls_closed = 1;
    ERR_clear_error();
    (void)SSL_shutdown(c->ssl);
    ERR_clear_error();
}

/* Ends our side after the last answer: close_notify, then FIN. */
static void conn_end_output(fg_http_conn *c)
{
    tls_notify(c);
    shutdown(c->fd, SHUT_WR);
}

/* Stops c's events and closes its socket (once). */
static void conn_close_fd(fg_http_conn *c)
{
    if (c->fd < 0)
        return;
    event_del(&c->rev);
    event_del(&c->wev);
    event_del(&c->tev);
    close(c->fd);
    c->fd = -1;
}

static void conn_free(fg_http_conn *c)
{
    stream_notify(c);
    fg_http_server *srv = c->srv;
    tls_notify(c);
    conn_close_fd(c);
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (!c->detached && srv) {
        if (c->prev)
            c->prev->next = c->next;
        else
            srv->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        srv->nconns--;
        if (srv->budget)
            atomic_fetch_sub(&srv->budget->open, 1);
    }
    req_put(c->detached ? NULL : srv, c->req);
    free(c->in);
    free(c->out);
    free(c->stream);
    free(c);
}

/* Closes the socket now; the struct lives on while a handler holds its
 * request. */
static void conn_close(fg_http_conn *c)
{
    if (c->inflight) {
        conn_close_fd(c);
        c->peer_eof = 1;
        return;
    }
    conn_free(c);
}

/* Closes the socket of a connection that broke while the handler may be on
 * the stack (the parse loop frees it when the handler returns), else frees
 * it. Never tells a stream's owner: it learns it from a return value. */
static void conn_drop(fg_http_conn *c)
{
    if (c->stream)
        c->stream->ended = 1;
    if (!c->in_handler) {
        conn_free(c);
        return;
    }
    conn_close_fd(c);
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg);
static void conn_on_write(evutil_socket_t fd, short what, void *arg);
static void conn_on_timer(evutil_socket_t fd, short what, void *arg);

static const char *date_header(fg_http_server *srv)
{
    struct timeval tv;
    event_base_gettimeofday_cached(srv->base, &tv);
    if (tv.tv_sec != srv->date_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        strftime(srv->date, sizeof(srv->date), "%a, %d %b %Y %H:%M:%S GMT",
                 &tm);
        srv->date_sec = tv.tv_sec;
    }
    return srv->date;
}

/* ---- TLS I/O ----
 * OpenSSL may need the other direction of the socket to go on (an SSL_read
 * that must write, say to answer a key update, or an SSL_write that must
 * read): the operation waits with a flag set (tls_rww, tls_wwr), and the
 * other direction's callback resumes it. Renegotiation is off, so SSL_write
 * needing to read is not expected in practice. */

/* recv() for either kind of connection: bytes read, 0 at the end of the
 * peer's data (close_notify, or TCP FIN without it), -1 with errno (EAGAIN
 * when there is nothing now). */
static ssize_t conn_recv(fg_http_conn *c, char *buf, size_t n)
{
    if (!c->ssl)
        return recv(c->fd, buf, n, 0);
    ERR_clear_error();
    errno = 0;
    int r = SSL_read(c->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        c->tls_rww = 1;
        event_add(&c->wev, NULL);
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    c->tls_broken = 1;
    /* A TCP FIN without close_notify: the end of the input as for plain
     * HTTP (requests carry their own length); anything else broke. */
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)
        return 0;
    if (e == SSL_ERROR_SSL &&
        ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
        return 0;
    errno = ECONNRESET;
    return -1;
}

/* True when OpenSSL holds input already taken from the socket: the read
 * event will not fire for it, so the reader must come back by itself. */
static int conn_tls_pending(const fg_http_conn *c)
{
    return c->ssl && SSL_has_pending(c->ssl);
}

/* Writes c->out through TLS. Returns 0 when all of it went, 1 when the rest
 * waits for the socket (its event is armed), -1 when the connection broke.
 * *progress (may be NULL) is set when some bytes went. */
static int tls_flush(fg_http_conn *c, int *progress)
{
    while (c->out_off < c->out_len) {
        size_t left = c->out_len - c->out_off;
        ERR_clear_error();
        /* A retry after WANT_WRITE passes the same bytes again, perhaps
         * moved and with more behind them: SSL_MODE_ACCEPT_MOVING_WRITE_
         * BUFFER and SSL_MODE_ENABLE_PARTIAL_WRITE (set on every SSL). */
        int w = SSL_write(c->ssl, c->out + c->out_off,
                          left > INT_MAX ? INT_MAX : (int)left);
        if (w > 0) {
            c->out_off += (size_t)w;
            if (progress)
                *progress = 1;
            continue;
        }
        int e = SSL_get_error(c->ssl, w);
        if (e == SSL_ERROR_WANT_WRITE) {
            event_add(&c->wev, NULL);
            return 1;
        }
        if (e == SSL_ERROR_WANT_READ) {
            c->tls_wwr = 1; /* the read callback comes back here */
            event_del(&c->wev);
            return 1;
        }
        c->tls_broken = 1;
        return -1;
    }
    return 0;
}

/* Plain HTTP sent to a TLS server: OpenSSL recognises a request line in
 * place of a ClientHello and sends no alert, so a plaintext answer says
 * what is wrong. The rest of the request is drained first, so that closing
 * sends FIN rather than a reset that could discard the answer. */
static void tls_refuse_plain(fg_http_conn *c)
{
    static const char msg[] =
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
        "Connection: close\r\nContent-Length: 24\r\n\r\n"
        "{\"error\":\"tls_required\"}";
    for (int i = 0; i < FG_HTTP_READ_ROUNDS; i++)
        if (recv(c->fd, c->srv->scratch, sizeof(c->srv->scratch),
                 MSG_DONTWAIT) <= 0)
            break;
    ssize_t w = send(c->fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    shutdown(c->fd, SHUT_WR);
    if (c->srv->on_reject)
        c->srv->on_reject(c->srv->ud, 400, "tls_required");
}

/* Advances the handshake. Returns 1 when it is done, 0 when it waits for
 * the socket, -1 when it failed and c was freed. */
static int tls_handshake(fg_http_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls_hs = 0;
        event_del(&c->wev);
        return 1;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        event_del(&c->wev);
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        event_add(&c->wev, NULL);
        return 0;
    }
    c->tls_broken = 1;
    if (e == SSL_ERROR_SSL &&
        ERR_GET_REASON(ERR_peek_error()) == SSL_R_HTTP_REQUEST)
        tls_refuse_plain(c);
    ERR_clear_error();
    conn_free(c);
    return -1;
}

/* Drops the output buffer once everything in it went. */
static void out_release(fg_http_conn *c)
{
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = c->out_cap = 0;
}

/* Appends the bytes of iov after the first skip ones to the output buffer,
 * which grows geometrically (a stream appends many small pieces) and is
 * compacted before it grows. Returns -1 when out of memory. */
static int out_keep(fg_http_conn *c, const struct iovec *iov, int n,
                    size_t skip)
{
    size_t rest = 0;
    for (int i = 0; i < n; i++)
        rest += iov[i].iov_len;
    rest -= skip;
    size_t pending = c->out_len - c->out_off;
    if (c->out_cap - c->out_len < rest && c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, pending);
        c->out_len = pending;
        c->out_off = 0;
    }
    if (c->out_cap - c->out_len < rest) {
        if (rest > SIZE_MAX / 2 - pending)
            return -1;
        size_t ncap = c->out_cap * 2;
        if (ncap < pending + rest)
            ncap = pending + rest;
        char *nb = realloc(c->out, ncap);
        if (!nb)
            return -1;
        c->out = nb;
        c->out_cap = ncap;
    }
    for (int i = 0; i < n; i++) {
        const char *b = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(c->out + c->out_len, b + skip, len - skip);
        c->out_len += len - skip;
        skip = 0;
    }
    return 0;
}

/* Output over TLS goes through the output buffer, so that a small answer
 * is one TLS record: appends iov and, unless older output waits already,
 * writes. FG_OK when all of it went, FG_AGAIN when some waits for the
 * socket (its event is armed), FG_ENOMEM, or FG_EIO when the connection
 * broke. */
static fg_status tls_send(fg_http_conn *c, const struct iovec *iov, int n)
{
    int waiting = c->out_len != c->out_off;
    if (out_keep(c, iov, n, 0) != 0)
        return FG_ENOMEM;
    if (waiting)
        return FG_AGAIN;
    int r = tls_flush(c, NULL);
    if (r < 0)
        return FG_EIO;
    if (r > 0)
        return FG_AGAIN;
    out_release(c);
    return FG_OK;
}

/* Plain TCP: sends what the socket takes of iov now. The bytes sent (0
 * when it takes none), or -1 when the connection broke. */
static ssize_t plain_send(fg_http_conn *c, const struct iovec *iov, int n)
{
    struct msghdr mh;
    ssize_t w;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = (struct iovec *)iov;
    mh.msg_iovlen = (size_t)n;
    do {
        w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    if (w < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    return w;
}

/* Writes what it can; the rest is kept and written when the socket allows.
 * Returns -1 when the connection broke (caller closes). */
static int conn_write(fg_http_conn *c, const struct iovec *iov, int n)
{
    if (c->ssl) {
        fg_status st = tls_send(c, iov, n);
        if (st == FG_OK)
            return 0;
        if (st != FG_AGAIN)
            return -1;
        event_add(&c->tev, c->srv ? c->srv->tv_write : NULL);
        return 0;
    }
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    ssize_t w = 0;
    if (c->out_len == c->out_off) {
        w = plain_send(c, iov, n);
        if (w < 0)
            return -1;
        if ((size_t)w == total)
            return 0;
    }
    /* Keep the unwritten tail. */
    if (out_keep(c, iov, n, (size_t)w) != 0)
        return -1;
    event_add(&c->wev, NULL);
    event_add(&c->tev, c->srv ? c->srv->tv_write : NULL);
    return 0;
}

static void conn_send_raw(fg_http_conn *c, const char *s, size_t n)
{
    struct iovec iov = {(void *)s, n};
    if (conn_write(c, &iov, 1) != 0)
        c->close_after = 1;
}

/* After an answer is fully written: close, or go on with the next request. */
static void conn_next(fg_http_conn *c)
{
    fg_http_server *srv = c->srv;
    if (c->close_after || c->peer_eof || c->detached ||
        (srv && srv->draining)) {
        conn_end_output(c);
        conn_free(c);
        return;
    }
    http_parser_pause(&c->parser, 0);
    if (c->read_paused) {
        c->read_paused = 0;
        event_add(&c->rev, NULL);
    }
    if (c->in_len > 0 || conn_tls_pending(c)) {
        event_active(&c->rev, EV_READ, 1);
    } else {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
        event_add(&c->tev, srv->tv_idle);
    }
}

/* Appends s (n bytes) at *at when it fits under end. */
static void head_put(char **at, const char *end, const char *s, size_t n)
{
    if ((size_t)(end - *at) < n)
        n = (size_t)(end - *at);
    memcpy(*at, s, n);
    *at += n;
}

/* format_head's len for an answer delimited by the end of the connection. */
#define FG_HTTP_NO_LENGTH SIZE_MAX

/* Room format_head needs: the fixed headers and a content type. */
#define FG_HTTP_HEAD_MAX 512

/* The status line and fixed headers, without snprintf: this runs once per
 * answer. Returns the length written (at most cap). */
static size_t format_head(char *out, size_t cap, int status, const char *date,
                          size_t len, const char *content_type, int close)
{
    char num[24];
    char *at = out;
    const char *end = out + cap;
    head_put(&at, end, "HTTP/1.1 ", 9);
    num[0] = (char)('0' + (status / 100) % 10);
    num[1] = (char)('0' + (status / 10) % 10);
    num[2] = (char)('0' + status % 10);
    num[3] = ' ';
    head_put(&at, end, num, 4);
    const char *reason = fg_http_status_text(status);
    head_put(&at, end, reason, strlen(reason));
    static const char fixed[] = "\r\nServer: fleetgate\r\nDate: ";
    head_put(&at, end, fixed, sizeof(fixed) - 1);
    head_put(&at, end, date, strlen(date));
    head_put(&at, end, "\r\n", 2);
    if (len != FG_HTTP_NO_LENGTH) {
        head_put(&at, end, "Content-Length: ", 16);
        int i = (int)sizeof(num);
        do {
            num[--i] = (char)('0' + len % 10);
            len /= 10;
        } while (len && i > 0);
        head_put(&at, end, num + i, sizeof(num) - (size_t)i);
        head_put(&at, end, "\r\n", 2);
    }
    if (content_type) {
        head_put(&at, end, "Content-Type: ", 14);
        head_put(&at, end, content_type, strlen(content_type));
        head_put(&at, end, "\r\n", 2);
    }
    if (close)
        head_put(&at, end, "Connection: close\r\n", 19);
    return (size_t)(at - out);
}

/* The head of an answer as iov[0..2]: the status line and fixed headers
 * (format_head into head, FG_HTTP_HEAD_MAX bytes), the caller's extra
 * headers when any (borrowed), the blank line. Returns the entries used. */
static int head_iov(struct iovec *iov, char *head, fg_http_server *srv,
                    int status, size_t len, const char *content_type,
                    int close, const char *extra_headers)
{
    int n = 0;
    iov[n].iov_base = head;
    iov[n++].iov_len = format_head(head, FG_HTTP_HEAD_MAX, status,
                                   date_header(srv), len, content_type,
                                   close);
    if (extra_headers) {
        iov[n].iov_base = (void *)extra_headers;
        iov[n++].iov_len = strlen(extra_headers);
    }
    iov[n].iov_base = (void *)"\r\n";
    iov[n++].iov_len = 2;
    return n;
}

void fg_http_respond(fg_http_req *req, int status, const char *content_type,
                     const void *body, size_t len, const char *extra_headers)
{
    fg_http_conn *c = req->c;
    fg_http_server *srv = c->srv;
    int was_inflight = c->inflight;
    c->inflight = 0;
    if (was_inflight && srv && !c->detached)
        srv->inflight--;
    if (c->fd < 0 || c->detached) { /* nobody to answer */
        c->req = NULL;
        req_put(c->detached ? NULL : srv, req);
        conn_free(c);
        return;
    }
    if (!req->keep_alive || srv->draining)
        c->close_after = 1;
    char head[FG_HTTP_HEAD_MAX];
    struct iovec iov[4];
    int n = head_iov(iov, head, srv, status, len, content_type,
                     c->close_after, extra_headers);
    if (len && !req->head) {
        iov[n].iov_base = (void *)body;
        iov[n++].iov_len = len;
    }
    c->req = NULL;
    req_put(srv, req);
    if (conn_write(c, iov, n) != 0) {
        conn_drop(c);
        return;
    }
    if (c->in_handler)
        return; /* the parse loop goes on after the handler returns */
    if (c->out_len == c->out_off)
        conn_next(c);
}

void fg_http_respond_error(fg_http_req *req, int status, const char *code,
                           const char *detail, const char *extra_headers)
{
    char body[512];
    int n;
    if (detail)
        n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"detail\":\"%s\"}",
                     code, detail);
    else
        n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", code);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", code);
    fg_http_respond(req, status, "application/json", body, (size_t)n,
                    extra_headers);
}

/* ---- streamed answers ---- */

/* Sends iov now, or buffers what the socket does not take, under the
 * stream's cap. The stall guard starts when output starts waiting. */
static fg_status stream_send(fg_http_conn *c, const struct iovec *iov, int n)
{
    fg_http_stream *s = c->stream;
    size_t total = 0, w = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    size_t pending = c->out_len - c->out_off;
    if (c->ssl) {
        fg_status st = tls_send(c, iov, n);
        if (st != FG_AGAIN)
            return st;
        if (c->out_len - c->out_off > s->cap)
            return FG_ETOOBIG;
        if (pending == 0)
            event_add(&c->tev, s->tv_stall);
        return FG_OK;
    }
    if (pending == 0) {
        ssize_t sent = plain_send(c, iov, n);
        if (sent < 0)
            return FG_EIO;
        w = (size_t)sent;
        if (w == total)
            return FG_OK;
    }
    if (total - w > s->cap || pending > s->cap - (total - w))
        return FG_ETOOBIG;
    if (out_keep(c, iov, n, w) != 0)
        return FG_ENOMEM;
    event_add(&c->wev, NULL);
    if (pending == 0)
        event_add(&c->tev, s->tv_stall);
    return FG_OK;
}

fg_http_stream *fg_http_stream_begin(fg_http_req *req, int status,
                                     const char *content_type,
                                     const char *extra_headers,
                                     const fg_http_stream_opts *opts,
                                     fg_http_stream_close_cb on_close,
                                     void *ud)
{
    fg_http_conn *c = req->c;
    fg_http_server *srv = c->srv;
    if (c->fd < 0 || c->detached) {
        /* Nobody to stream to: fg_http_respond only frees. */
        fg_http_respond(req, status, NULL, NULL, 0, NULL);
        return NULL;
    }
    if (srv->draining) {
        fg_http_respond_error(req, 503, "shutting_down", NULL,
                              "Retry-After: 1\r\n");
        return NULL;
    }
    fg_http_stream *s = calloc(1, sizeof(*s));
    if (!s) {
        fg_http_respond_error(req, 503, "no_memory", NULL,
                              "Retry-After: 1\r\n");
        return NULL;
    }
    s->c = c;
    s->on_close = on_close;
    s->ud = ud;
    s->cap = opts && opts->max_buffered ? opts->max_buffered
                                        : FG_HTTP_STREAM_MAX_BUFFERED;
    s->tv_stall = srv->tv_write;
    if (opts && opts->stall_timeout_ms > 0) {
        s->stall.tv_sec = (time_t)(opts->stall_timeout_ms / 1000);
        s->stall.tv_usec = (suseconds_t)(opts->stall_timeout_ms % 1000) * 1000;
        s->tv_stall = &s->stall;
    }
    s->why = FG_HTTP_STREAM_PEER_GONE;
    int head_only = req->head;
    if (c->inflight) {
        c->inflight = 0;
        srv->inflight--;
    }
    /* From here on the connection carries this answer only: pipelined
     * bytes are dropped, deadlines other than the stall guard are off. */
    c->stream = s;
    c->close_after = 1;
    c->req = NULL;
    req_put(srv, req);
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
    event_del(&c->tev);
    if (c->read_paused) {
        c->read_paused = 0;
        event_add(&c->rev, NULL);
    }
    char head[FG_HTTP_HEAD_MAX];
    struct iovec iov[3];
    int n = head_iov(iov, head, srv, status, FG_HTTP_NO_LENGTH, content_type,
                     1, extra_headers);
    if (stream_send(c, iov, n) != FG_OK) {
        conn_drop(c);
        return NULL;
    }
    if (head_only) {
        fg_http_stream_end(s);
        return NULL;
    }
    return s;
}

fg_status fg_http_stream_write(fg_http_stream *s, const void *buf,
                               size_t len)
{
    fg_http_conn *c = s->c;
    if (s->ended || c->fd < 0)
        return FG_EIO; /* a misuse; the connection is on its way out */
    if (len == 0)
        return FG_OK;
    struct iovec iov = {(void *)buf, len};
    fg_status st = stream_send(c, &iov, 1);
    if (st != FG_OK)
        conn_drop(c);
    return st;
}

size_t fg_http_stream_buffered(const fg_http_stream *s)
{
    return s->c->out_len - s->c->out_off;
}

/* Marks s done; the write callback sends what is left, then closes (now,
 * through the loop, when nothing is left: the caller may be walking a list
 * that holds the connection). */
static void stream_finish(fg_http_stream *s)
{
    fg_http_conn *c = s->c;
    s->ended = 1;
    if (c->fd >= 0 && c->out_len == c->out_off)
        event_active(&c->wev, EV_WRITE, 1);
}

void fg_http_stream_end(fg_http_stream *s)
{
    if (!s || s->ended)
        return;
    stream_finish(s);
}

const char *fg_http_stream_why_str(fg_http_stream_why why)
{
    switch (why) {
    case FG_HTTP_STREAM_PEER_GONE: return "peer_gone";
    case FG_HTTP_STREAM_STALLED: return "stalled";
    case FG_HTTP_STREAM_SHUTDOWN: return "shutdown";
    }
    return "unknown";
}

/* Answers a request the parser refused and closes after writing. */
static void conn_fail(fg_http_conn *c, int status, const char *code)
{
    fg_http_req *req = c->req;
    if (!req) {
        req = req_get(c->srv, c);
        if (!req) {
            conn_free(c);
            return;
        }
        c->req = req;
    }
    req->keep_alive = 0;
    c->close_after = 1;
    c->inflight = 0;
    c->in_len = 0;
    event_del(&c->rev);
    if (c->srv && c->srv->on_reject)
        c->srv->on_reject(c->srv->ud, status, code);
    const char *retry = status == 503 ? "Retry-After: 1\r\n" : NULL;
    const char *accept = fg_http_req_header(req, "accept");
    size_t cl = strlen(code);
    if (accept && strcasestr(accept, "msgpack") && !strcasestr(accept, "json") &&
        cl < 32) {
        /* {"error": code} as msgpack: fixmap(1), fixstr "error", fixstr. */
        char mp[40];
        mp[0] = (char)0x81;
        mp[1] = (char)0xa5;
        memcpy(mp + 2, "error", 5);
        mp[7] = (char)(0xa0 | cl);
        memcpy(mp + 8, code, cl);
        fg_http_respond(req, status, "application/msgpack", mp, 8 + cl, retry);
        return;
    }
    fg_http_respond_error(req, status, code, NULL, retry);
}

/* Parses data (which may be c->in itself). Returns -1 when c was freed. */
static int conn_parse(fg_http_conn *c, const char *data, size_t len)
{
    fg_http_server *srv = c->srv;
    size_t n = http_parser_execute(&c->parser, &fg_http_settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (c->req && c->req->error_status) {
        conn_fail(c, c->req->error_status, c->req->error_code);
        return -1;
    }
    if (err != HPE_OK && err != HPE_PAUSED) {
        if (err == HPE_HEADER_OVERFLOW)
            conn_fail(c, 431, "headers_too_large");
        else
            conn_fail(c, 400, "bad_request");
        return -1;
    }
    /* Keep the unparsed rest. */
    size_t rest = len - n;
    if (data == c->in) {
        memmove(c->in, c->in + n, rest);
        c->in_len = rest;
    } else if (rest > 0) {
        if (c->in_cap < rest) {
            size_t ncap = rest < 4096 ? 4096 : rest;
            char *ni = realloc(c->in, ncap);
            if (!ni) {
                conn_free(c);
                return -1;
            }
            c->in = ni;
            c->in_cap = ncap;
        }
        memcpy(c->in, data + n, rest);
        c->in_len = rest;
    }
    if (err != HPE_PAUSED) {
        /* Headers of an unfinished request count toward the header cap
         * even when they arrive in small pieces. */
        return 0;
    }
    /* A complete request: hand it over. */
    event_del(&c->tev);
    c->inflight = 1;
    srv->inflight++;
    c->in_handler = 1;
    srv->handler(srv->ud, c->req);
    c->in_handler = 0;
    if (c->fd < 0 && !c->inflight) {
        conn_free(c);
        return -1;
    }
    if (c->stream)
        return -1; /* a streamed answer: no more requests on c */
    if (!c->inflight && c->out_len == c->out_off) {
        if (c->close_after || srv->draining) {
            conn_end_output(c);
            conn_free(c);
            return -1;
        }
        http_parser_pause(&c->parser, 0);
        if (c->in_len == 0)
            event_add(&c->tev, srv->tv_idle);
        return 1; /* answered at once: the caller may parse more */
    }
    return 0;
}

/* A streaming connection reads only to learn that the client went away;
 * what it sends is dropped. */
static void stream_on_read(fg_http_conn *c)
{
    for (int round = 0; round < FG_HTTP_READ_ROUNDS; round++) {
        ssize_t n = conn_recv(c, c->srv->scratch, sizeof(c->srv->scratch));
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        c->stream->why = FG_HTTP_STREAM_PEER_GONE;
        conn_free(c);
        return;
    }
    if (conn_tls_pending(c))
        event_active(&c->rev, EV_READ, 1);
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
    fg_http_conn *c = arg;
    fg_http_server *srv = c->srv;
    (void)what;
    if (c->ssl) {
        if (c->tls_wwr) {
            c->tls_wwr = 0;
            event_active(&c->wev, EV_WRITE, 1);
        }
        if (c->tls_hs && tls_handshake(c) <= 0)
            return;
    }
    if (c->stream) {
        stream_on_read(c);
        return;
    }
    /* Pipelined bytes first. */
    while (!c->inflight && c->in_len > 0 && c->out_len == c->out_off) {
        int r = conn_parse(c, c->in, c->in_len);
        if (r < 0)
            return;
        if (r == 0)
            break;
    }
    for (int round = 0; round < FG_HTTP_READ_ROUNDS; round++) {
        int buffered = c->inflight || c->in_len > 0 ||
                       c->out_len != c->out_off;
        char *dst;
        size_t space;
        if (buffered) {
            if (c->in_len >= FG_HTTP_IN_CAP) {
                event_del(&c->rev);
                c->read_paused = 1;
                return;
            }
            if (c->in_cap - c->in_len < 4096) {
                size_t ncap = c->in_cap ? c->in_cap * 2 : 8192;
                char *ni = realloc(c->in, ncap);
                if (!ni) {
                    conn_close(c);
                    return;
                }
                c->in = ni;
                c->in_cap = ncap;
            }
            dst = c->in + c->in_len;
            space = c->in_cap - c->in_len;
        } else {
            dst = srv->scratch;
            space = sizeof(srv->scratch);
        }
        ssize_t n = conn_recv(c, dst, space);
        if (n == 0) {
            c->peer_eof = 1;
            event_del(&c->rev);
            if (!c->inflight && c->out_len == c->out_off)
                conn_free(c);
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            conn_close(c);
            return;
        }
        if (buffered) {
            c->in_len += (size_t)n;
            if (c->inflight || c->out_len != c->out_off)
                continue;
            int r = conn_parse(c, c->in, c->in_len);
            if (r < 0)
                return;
        } else {
            int r = conn_parse(c, dst, (size_t)n);
            if (r < 0)
                return;
            while (r == 1 && !c->inflight && c->in_len > 0 &&
                   c->out_len == c->out_off) {
                r = conn_parse(c, c->in, c->in_len);
                if (r < 0)
                    return;
            }
        }
        if ((size_t)n < space && !conn_tls_pending(c))
            return;
    }
    /* Out of rounds: the socket's event fires again, input OpenSSL already
     * holds would not make it. */
    if (conn_tls_pending(c))
        event_active(&c->rev, EV_READ, 1);
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
    fg_http_conn *c = arg;
    int progress = 0;
    (void)what;
    if (c->ssl) {
        if (c->tls_hs) {
            if (tls_handshake(c) == 1)
                event_active(&c->rev, EV_READ, 1);
            return;
        }
        if (c->tls_rww) {
            c->tls_rww = 0;
            event_active(&c->rev, EV_READ, 1);
            if (c->out_len == c->out_off &&
                !(c->stream && c->stream->ended)) {
                event_del(&c->wev); /* only the reader was waiting */
                return;
            }
        }
        int r = tls_flush(c, &progress);
        if (r < 0) {
            conn_close(c);
            return;
        }
        if (r > 0) {
            if (progress && c->stream)
                event_add(&c->tev, c->stream->tv_stall);
            return;
        }
    }
    while (c->out_off < c->out_len) {
        ssize_t w = send(fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                /* A stream's guard is against stalls, not slow progress
                 * (the buffer cap bounds that): restart it. */
                if (progress && c->stream)
                    event_add(&c->tev, c->stream->tv_stall);
                return;
            }
            conn_close(c);
            return;
        }
        c->out_off += (size_t)w;
        progress = 1;
    }
    out_release(c);
    event_del(&c->wev);
    event_del(&c->tev);
    if (c->stream && !c->stream->ended)
        return; /* more will come */
    if (!c->inflight)
        conn_next(c);
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    fg_http_conn *c = arg;
    (void)fd;
    (void)what;
    if (c->stream) {
        c->stream->why = FG_HTTP_STREAM_STALLED;
        conn_free(c);
        return;
    }
    if (c->out_len != c->out_off || c->inflight) {
        conn_close(c); /* a client that does not read its answers */
        return;
    }
    if (c->req) {
        conn_fail(c, 408, "request_timeout");
        return;
    }
    conn_free(c); /* idle keep-alive */
}

/* Over the connection cap: a plaintext 503, or for TLS (which cannot
 * answer before a handshake we will not spend on it) just the close. */
static void conn_reject_busy(int fd, int tls)
{
    static const char busy[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        "Retry-After: 1\r\nConnection: close\r\nContent-Length: 32\r\n\r\n"
        "{\"error\":\"too_many_connections\"}";
    if (!tls) {
        ssize_t w = send(fd, busy, sizeof(busy) - 1,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    close(fd);
}

/* The TLS session of a new connection, or NULL. */
static SSL *tls_new(SSL_CTX *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    /* See tls_flush for the write modes. A TCP FIN without close_notify
     * ends the input as it does for plain HTTP: requests carry their own
     * length, so a cut one is never taken for whole. */
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    return ssl;
}

static void srv_on_accept(evutil_socket_t lfd, short what, void *arg)
{
    fg_http_server *srv = arg;
    (void)what;
    for (int i = 0; i < FG_HTTP_ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or EMFILE: the event fires again later */
        if (srv->budget &&
            atomic_fetch_add(&srv->budget->open, 1) >= srv->budget->max) {
            atomic_fetch_sub(&srv->budget->open, 1);
            conn_reject_busy(fd, srv->tls != NULL);
            continue;
        }
        fg_http_conn *c = calloc(1, sizeof(*c));
        if (c && srv->tls) {
            c->ssl = tls_new(srv->tls, fd);
            c->tls_hs = 1;
            if (!c->ssl) {
                free(c);
                c = NULL;
            }
        }
        if (!c) {
            if (srv->budget)
                atomic_fetch_sub(&srv->budget->open, 1);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->srv = srv;
        c->fd = fd;
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->peer,
                      sizeof(c->peer));
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
                      c->peer, sizeof(c->peer));
        http_parser_init(&c->parser, HTTP_REQUEST);
        c->parser.data = c;
        event_assign(&c->rev, srv->base, fd, EV_READ | EV_PERSIST,
                     conn_on_read, c);
        event_assign(&c->wev, srv->base, fd, EV_WRITE | EV_PERSIST,
                     conn_on_write, c);
        evtimer_assign(&c->tev, srv->base, conn_on_timer, c);
        c->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = c;
        srv->conns = c;
        srv->nconns++;
        event_add(&c->rev, NULL);
        event_add(&c->tev, srv->tv_read);
    }
}

/* ---- server ---- */

static const struct timeval *common_timeout(struct event_base *base,
                                            int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    const struct timeval *ct = event_base_init_common_timeout(base, &tv);
    return ct;
}

fg_http_server *fg_http_server_new(struct event_base *base, int fd,
                                   const fg_http_limits *limits,
                                   fg_http_conn_budget *budget,
                                   fg_http_handler handler, void *ud,
                                   char *errbuf, size_t errlen)
{
    fg_http_settings.on_message_begin = on_message_begin;
    fg_http_settings.on_url = on_url;
    fg_http_settings.on_header_field = on_header_field;
    fg_http_settings.on_header_value = on_header_value;
    fg_http_settings.on_headers_complete = on_headers_complete;
    fg_http_settings.on_body = on_body;
    fg_http_settings.on_message_complete = on_message_complete;

    fg_http_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    srv->base = base;
    srv->lfd = fd;
    srv->lim = *limits;
    srv->budget = budget;
    srv->handler = handler;
    srv->ud = ud;
    srv->tv_read = common_timeout(base, limits->read_timeout_ms);
    srv->tv_idle = common_timeout(base, limits->idle_timeout_ms);
    srv->tv_write = common_timeout(base, limits->write_timeout_ms);
    srv->lev = event_new(base, fd, EV_READ | EV_PERSIST, srv_on_accept, srv);
    if (!srv->lev || !srv->tv_read || !srv->tv_idle || !srv->tv_write ||
        event_add(srv->lev, NULL) != 0) {
        snprintf(errbuf, errlen, "cannot register the listener");
        if (srv->lev)
            event_free(srv->lev);
        free(srv);
        return NULL;
    }
    return srv;
}

void fg_http_server_on_reject(fg_http_server *srv, fg_http_reject_cb cb)
{
    srv->on_reject = cb;
}

fg_status fg_http_server_set_tls(fg_http_server *srv, SSL_CTX *ctx)
{
    if (srv->tls || !ctx || SSL_CTX_up_ref(ctx) != 1)
        return FG_EINVAL;
    srv->tls = ctx;
    return FG_OK;
}

/* OpenSSL's reason for the oldest error in the queue (the cause: "No such
 * file or directory", "no start line"; later ones only say which layer
 * gave up), which it empties. */
static const char *tls_reason(void)
{
    unsigned long e = ERR_peek_error();
    const char *r = NULL;
    if (e && ERR_SYSTEM_ERROR(e))
        r = strerror(ERR_GET_REASON(e)); /* fopen's errno */
    else if (e)
        r = ERR_reason_error_string(e);
    ERR_clear_error();
    return r ? r : "unknown error";
}

/* True when the oldest queued error says a key is not the certificate's. */
static int tls_key_mismatch(void)
{
    unsigned long e = ERR_peek_error();
    return ERR_GET_LIB(e) == ERR_LIB_X509 &&
           ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
}

/* TLS 1.2 suites: forward secrecy and AEAD only, strongest first. TLS 1.3
 * keeps OpenSSL's defaults (all AEAD). */
#define FG_HTTP_TLS12_CIPHERS                                                  \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"               \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"               \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"

SSL_CTX *fg_http_tls_ctx_new(const char *cert_file, const char *key_file,
                             fg_http_tls_file *bad, char *errbuf,
                             size_t errlen)
{
    fg_http_tls_file which = FG_HTTP_TLS_NONE;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(errbuf, errlen, "cannot create a TLS context: %s",
                 tls_reason());
        goto fail;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, FG_HTTP_TLS12_CIPHERS) != 1) {
        snprintf(errbuf, errlen, "cannot set the TLS versions and ciphers: %s",
                 tls_reason());
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle keep-alive connections give their record buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        which = FG_HTTP_TLS_CERT;
        snprintf(errbuf, errlen, "cannot load the certificate chain from %s: "
                 "%s", cert_file, tls_reason());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        which = FG_HTTP_TLS_KEY;
        if (tls_key_mismatch()) {
            ERR_clear_error();
            snprintf(errbuf, errlen, "the private key in %s does not match "
                     "the certificate in %s", key_file, cert_file);
        } else {
            snprintf(errbuf, errlen, "cannot load the private key from %s: "
                     "%s", key_file, tls_reason());
        }
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    if (bad)
        *bad = which;
    return NULL;
}

/* Tells the owner of every running stream that the server shuts down.
 * flush: the connection then sends what is buffered and closes; otherwise
 * the caller frees it. An owner's callback may write to (and so close)
 * other streams: the walk starts over after each. */
static void streams_shut(fg_http_server *srv, int flush)
{
restart:
    for (fg_http_conn *c = srv->conns; c; c = c->next) {
        if (c->stream && !c->stream->ended) {
            c->stream->why = FG_HTTP_STREAM_SHUTDOWN;
            if (flush && c->out_len == c->out_off)
                event_active(&c->wev, EV_WRITE, 1);
            stream_notify(c);
            goto restart;
        }
    }
}

void fg_http_server_drain(fg_http_server *srv)
{
    if (srv->draining)
        return;
    srv->draining = 1;
    if (srv->lev) {
        event_free(srv->lev);
        srv->lev = NULL;
    }
    if (srv->lfd >= 0) {
        close(srv->lfd);
        srv->lfd = -1;
    }
    /* Streams end: each owner learns it now; what was written still goes. */
    streams_shut(srv, 1);
    fg_http_conn *c = srv->conns;
    while (c) {
        fg_http_conn *next = c->next;
        if (!c->inflight && !c->req && c->out_len == c->out_off)
            conn_free(c);
        c = next;
    }
}

size_t fg_http_server_inflight(const fg_http_server *srv)
{
    return srv->inflight;
}

size_t fg_http_server_connections(const fg_http_server *srv)
{
    return srv->nconns;
}

void fg_http_server_free(fg_http_server *srv)
{
    if (!srv)
        return;
    if (srv->lev)
        event_free(srv->lev);
    if (srv->lfd >= 0)
        close(srv->lfd);
    streams_shut(srv, 0); /* owners first */
    fg_http_conn *c = srv->conns;
    while (c) {
        fg_http_conn *next = c->next;
        if (srv->budget)
            atomic_fetch_sub(&srv->budget->open, 1);
        if (c->inflight) {
            /* The handler still holds the request: keep the struct. */
            conn_close_fd(c);
            c->detached = 1;
            c->srv = NULL;
        } else {
            c->detached = 1;
            conn_free(c);
        }
        c = next;
    }
    while (srv->req_cache) {
        fg_http_req *r = srv->req_cache;
        srv->req_cache = r->next_free;
        free(r->arena);
        free(r->body);
        free(r);
    }
    SSL_CTX_free(srv->tls);
    free(srv);
}

/* ---- listening sockets ---- */

int fg_http_listen(const char *addr, int reuseport, char *errbuf,
                   size_t errlen)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1]) {
        snprintf(errbuf, errlen, "bad listen address '%s' (want host:port)",
                 addr);
        return -1;
    }
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof(host)) {
        snprintf(errbuf, errlen, "listen host too long");
        return -1;
    }
    memcpy(host, addr, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (rc != 0) {
        snprintf(errbuf, errlen, "cannot resolve '%s': %s", addr,
                 gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    if (fd < 0) {
        snprintf(errbuf, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
        listen(fd, 4096) != 0) {
        snprintf(errbuf, errlen, "cannot listen on %s: %s", addr,
                 strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

int fg_http_bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

/* ---- accessors ---- */

fg_http_method fg_http_req_method(const fg_http_req *req)
{
    return req->method;
}

static void split_url(fg_http_req *req)
{
    const char *url = req->arena + req->url;
    const char *q = memchr(url, '?', req->url_len);
    req->path_cached = url;
    req->path_len = q ? (size_t)(q - url) : req->url_len;
    if (q) {
        /* Cut the path at '?' so both halves are NUL-terminated. */
        ((char *)q)[0] = '\0';
        req->query = q + 1;
    }
}

const char *fg_http_req_path(const fg_http_req *req, size_t *len)
{
    fg_http_req *r = (fg_http_req *)req;
    if (!r->path_cached)
        split_url(r);
    if (len)
        *len = r->path_len;
    return r->path_cached;
}

const char *fg_http_req_query(const fg_http_req *req)
{
    fg_http_req *r = (fg_http_req *)req;
    if (!r->path_cached)
        split_url(r);
    return r->query;
}

const char *fg_http_req_header(const fg_http_req *req, const char *name)
{
    size_t nl = strlen(name);
    for (int i = 0; i < req->nhdr; i++) {
        if (req->hdr[i].name_len == nl &&
            strcasecmp(req->arena + req->hdr[i].name, name) == 0)
            return req->hdr[i].value ? req->arena + req->hdr[i].value : "";
    }
    return NULL;
}

const char *fg_http_req_body(const fg_http_req *req, size_t *len)
{
    *len = req->body_len;
    return req->body_len ? req->body : "";
}

const char *fg_http_req_peer(const fg_http_req *req)
{
    return req->c->peer;
}

int fg_http_req_orphaned(const fg_http_req *req)
{
    return req->c->fd < 0 || req->c->detached;
}

const char *fg_http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    }
    return "Unknown";
}
