/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for common/fg_http over TLS: a loopback server on a libevent
 * loop in the main thread, OpenSSL clients (blocking, verifying the test's
 * own self-signed certificate) in a second thread. Keep-alive, a body and
 * an answer of many records (the server's SSL_read leaves input in OpenSSL,
 * its SSL_write meets a full socket), close_notify at the end, a streamed
 * answer, plain HTTP sent to the TLS port, a client stalled in the
 * handshake, and the context builder's errors. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "fg_test_http.h"

#define BIG_BODY (100 * 1024)     /* request body: several TLS records */
#define BIG_ANSWER (600 * 1024)   /* more than the socket buffers hold */

static char dir[64], cert_path[96], key_path[96], other_key_path[96];

/* ---- a self-signed certificate for localhost ---- */

static EVP_PKEY *write_key(const char *path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    FILE *f = fopen(path, "w");
    FG_CHECK(k && f);
    if (k && f)
        FG_CHECK(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1);
    if (f)
        fclose(f);
    return k;
}

static void make_files(void)
{
    snprintf(dir, sizeof(dir), "/tmp/fg-tls-test-XXXXXX");
    FG_CHECK(mkdtemp(dir) != NULL);
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
    snprintf(other_key_path, sizeof(other_key_path), "%s/other.pem", dir);
    EVP_PKEY *k = write_key(key_path);
    EVP_PKEY_free(write_key(other_key_path));
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
                                              "DNS:localhost,IP:127.0.0.1");
    FG_CHECK(ext != NULL);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    FG_CHECK(X509_sign(x, k, EVP_sha256()) > 0);
    FILE *f = fopen(cert_path, "w");
    FG_CHECK(f != NULL);
    if (f) {
        PEM_write_X509(f, x);
        fclose(f);
    }
    X509_free(x);
    EVP_PKEY_free(k);
}

static void remove_files(void)
{
    unlink(cert_path);
    unlink(key_path);
    unlink(other_key_path);
    rmdir(dir);
}

/* ---- the server ---- */

typedef struct env {
    struct event_base *base;
    fg_http_server *srv;
    int port;
    fg_http_stream *s;
    struct event *tick;  /* writes the stream's chunks */
    int chunks;          /* written so far */
    int rejects;         /* tls_required answers */
    atomic_int done;     /* the client thread finished */
} env;

static void on_reject(void *ud, int status, const char *code)
{
    env *e = ud;
    if (status == 400 && strcmp(code, "tls_required") == 0)
        e->rejects++;
}

static void on_stream_close(void *ud, fg_http_stream_why why)
{
    env *e = ud;
    (void)why;
    e->s = NULL;
}

static void handler(void *ud, fg_http_req *req)
{
    env *e = ud;
    size_t plen, blen;
    const char *path = fg_http_req_path(req, &plen);
    const char *body = fg_http_req_body(req, &blen);
    if (plen == 2 && memcmp(path, "/s", 2) == 0) {
        e->s = fg_http_stream_begin(req, 200, "text/event-stream", NULL, NULL,
                                    on_stream_close, e);
        e->chunks = 0;
        struct timeval tv = {0, 20000};
        evtimer_add(e->tick, &tv);
        return;
    }
    if (plen == 4 && memcmp(path, "/big", 4) == 0) {
        char *big = malloc(BIG_ANSWER);
        for (size_t i = 0; i < BIG_ANSWER; i++)
            big[i] = (char)('a' + i % 26);
        fg_http_respond(req, 200, "text/plain", big, BIG_ANSWER, NULL);
        free(big);
        return;
    }
    /* Echo the body's length and a checksum of it. */
    unsigned sum = 0;
    for (size_t i = 0; i < blen; i++)
        sum = sum * 31 + (unsigned char)body[i];
    char out[64];
    int n = snprintf(out, sizeof(out), "len=%zu sum=%u", blen, sum);
    fg_http_respond(req, 200, "text/plain", out, (size_t)n, NULL);
}

/* Three chunks 20 ms apart, then the end. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    env *e = arg;
    (void)fd;
    (void)what;
    if (!e->s)
        return;
    if (e->chunks == 3) {
        fg_http_stream_end(e->s);
        e->s = NULL;
        return;
    }
    char line[32];
    int n = snprintf(line, sizeof(line), "data: %d\n\n", e->chunks++);
    if (fg_http_stream_write(e->s, line, (size_t)n) != FG_OK) {
        e->s = NULL;
        return;
    }
    struct timeval tv = {0, 20000};
    evtimer_add(e->tick, &tv);
}

static void env_init(env *e, int64_t read_timeout_ms)
{
    char err[256];
    memset(e, 0, sizeof(*e));
    e->base = event_base_new();
    e->tick = evtimer_new(e->base, on_tick, e);
    fg_http_limits lim = {.max_header_bytes = 8192,
                          .max_body_bytes = 1 << 20,
                          .read_timeout_ms = read_timeout_ms,
                          .idle_timeout_ms = 5000,
                          .write_timeout_ms = 5000};
    e->srv = fg_test_http_server(e->base, &lim, handler, e, &e->port);
    if (!e->srv)
        return;
    fg_http_server_on_reject(e->srv, on_reject);
    fg_http_tls_file bad = FG_HTTP_TLS_NONE;
    SSL_CTX *ctx = fg_http_tls_ctx_new(cert_path, key_path, &bad, err,
                                       sizeof(err));
    FG_CHECK(ctx != NULL);
    FG_CHECK_INT(fg_http_server_set_tls(e->srv, ctx), FG_OK);
    FG_CHECK_INT(fg_http_server_set_tls(e->srv, ctx), FG_EINVAL);
    SSL_CTX_free(ctx); /* the server holds its own reference */
}

static void env_free(env *e)
{
    fg_http_server_free(e->srv);
    event_free(e->tick);
    event_base_free(e->base);
}

/* Runs the loop until the client thread is done (at most ms). */
static void run_client(env *e, void *(*fn)(void *), void *arg, int ms)
{
    pthread_t t;
    atomic_store(&e->done, 0);
    FG_CHECK(pthread_create(&t, NULL, fn, arg) == 0);
    int64_t end = fg_test_mono_ms() + ms;
    while (!atomic_load(&e->done) && fg_test_mono_ms() < end) {
        event_base_loop(e->base, EVLOOP_NONBLOCK);
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
    FG_CHECK(atomic_load(&e->done));
    pthread_join(t, NULL);
}

/* Runs the loop for ms. */
static void pump(env *e, int ms)
{
    fg_test_pump(e->base, ms, NULL);
}

/* ---- clients (second thread: no FG_CHECK here, results go back) ---- */

static int tcp_connect(int port)
{
    int fd = fg_test_connect(port, 0);
    struct timeval tv = {5, 0}; /* no test waits forever */
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

typedef struct tls_client {
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
} tls_client;

/* Connects and verifies the server as "localhost" against our cert. */
static int tls_open(tls_client *t, int port)
{
    memset(t, 0, sizeof(*t));
    t->fd = tcp_connect(port);
    t->ctx = SSL_CTX_new(TLS_client_method());
    if (t->fd < 0 || !t->ctx ||
        SSL_CTX_load_verify_locations(t->ctx, cert_path, NULL) != 1)
        return -1;
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    t->ssl = SSL_new(t->ctx);
    SSL_set_fd(t->ssl, t->fd);
    SSL_set_tlsext_host_name(t->ssl, "localhost");
    SSL_set1_host(t->ssl, "localhost");
    return SSL_connect(t->ssl) == 1 ? 0 : -1;
}

static void tls_close(tls_client *t)
{
    if (t->ssl)
        SSL_free(t->ssl);
    if (t->ctx)
        SSL_CTX_free(t->ctx);
    if (t->fd >= 0)
        close(t->fd);
}

static int tls_send(tls_client *t, const char *buf, size_t len)
{
    while (len > 0) {
        int w = SSL_write(t->ssl, buf, (int)len);
        if (w <= 0)
            return -1;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reads one answer with a Content-Length into buf (NUL-terminated); returns
 * the body's offset in buf, or -1. */
static long tls_answer(tls_client *t, char *buf, size_t cap, size_t *total)
{
    size_t len = 0;
    for (;;) {
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            const char *cl = strstr(buf, "Content-Length: ");
            if (!cl || cl > end)
                return -1;
            size_t want = (size_t)(end + 4 - buf) + strtoul(cl + 16, NULL, 10);
            if (want >= cap)
                return -1;
            if (len >= want) {
                *total = want;
                buf[want] = '\0';
                return end + 4 - buf;
            }
        }
        if (len + 1 >= cap)
            return -1;
        int n = SSL_read(t->ssl, buf + len, (int)(cap - 1 - len));
        if (n <= 0)
            return -1;
        len += (size_t)n;
    }
}

typedef struct keepalive_result {
    env *e;
    int connected, first_ok, body_ok, big_ok, close_notify;
    char first[256];
} keepalive_result;

static void *keepalive_client(void *arg)
{
    keepalive_result *r = arg;
    tls_client t;
    size_t total;
    char *buf = malloc(BIG_ANSWER + 4096);
    char *body = malloc(BIG_BODY);
    char head[128], want[64];
    r->connected = tls_open(&t, r->e->port) == 0;
    if (!r->connected)
        goto out;
    /* 1: a small GET. */
    static const char get[] = "GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n";
    long off;
    if (tls_send(&t, get, sizeof(get) - 1) == 0 &&
        (off = tls_answer(&t, buf, 4096, &total)) >= 0) {
        snprintf(r->first, sizeof(r->first), "%s", buf);
        r->first_ok = strcmp(buf + off, "len=0 sum=0") == 0;
    }
    /* 2: a body of many records on the same connection. */
    unsigned sum = 0;
    for (size_t i = 0; i < BIG_BODY; i++) {
        body[i] = (char)(i * 7);
        sum = sum * 31 + (unsigned char)body[i];
    }
    snprintf(head, sizeof(head),
             "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d"
             "\r\n\r\n", BIG_BODY);
    snprintf(want, sizeof(want), "len=%d sum=%u", BIG_BODY, sum);
    if (tls_send(&t, head, strlen(head)) == 0 &&
        tls_send(&t, body, BIG_BODY) == 0 &&
        (off = tls_answer(&t, buf, 4096, &total)) >= 0)
        r->body_ok = strcmp(buf + off, want) == 0;
    /* 3: an answer bigger than the socket buffers, read only after the
     * server has had to wait; then the server closes with close_notify. */
    static const char big[] =
        "GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if (tls_send(&t, big, sizeof(big) - 1) == 0) {
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        off = tls_answer(&t, buf, BIG_ANSWER + 4096, &total);
        if (off >= 0 && total - (size_t)off == BIG_ANSWER) {
            r->big_ok = 1;
            for (size_t i = 0; i < BIG_ANSWER; i++)
                if (buf[off + (long)i] != (char)('a' + i % 26))
                    r->big_ok = 0;
        }
        char c;
        int n = SSL_read(t.ssl, &c, 1);
        r->close_notify =
            n <= 0 && SSL_get_error(t.ssl, n) == SSL_ERROR_ZERO_RETURN;
    }
out:
    tls_close(&t);
    free(buf);
    free(body);
    atomic_store(&r->e->done, 1);
    return NULL;
}

/* Keep-alive over TLS: three requests on one connection, a request body
 * and an answer of many records each way, and close_notify at the end. */
static void test_keepalive_and_big_transfers(void)
{
    env e;
    keepalive_result r;
    env_init(&e, 5000);
    memset(&r, 0, sizeof(r));
    r.e = &e;
    run_client(&e, keepalive_client, &r, 10000);
    FG_CHECK(r.connected);
    FG_CHECK(r.first_ok);
    FG_CHECK(strncmp(r.first, "HTTP/1.1 200 OK\r\n", 17) == 0);
    FG_CHECK(strstr(r.first, "Connection: close") == NULL);
    FG_CHECK(r.body_ok);
    FG_CHECK(r.big_ok);
    FG_CHECK(r.close_notify);
    pump(&e, 50);
    FG_CHECK_INT(fg_http_server_connections(e.srv), 0);
    env_free(&e);
}

typedef struct stream_result {
    env *e;
    int connected;
    char text[2048];
    int close_notify;
} stream_result;

static void *stream_client(void *arg)
{
    stream_result *r = arg;
    tls_client t;
    static const char get[] = "GET /s HTTP/1.1\r\nHost: localhost\r\n\r\n";
    size_t len = 0;
    r->connected = tls_open(&t, r->e->port) == 0;
    if (r->connected && tls_send(&t, get, sizeof(get) - 1) == 0) {
        for (;;) {
            int n = SSL_read(t.ssl, r->text + len,
                             (int)(sizeof(r->text) - 1 - len));
            if (n <= 0) {
                r->close_notify =
                    SSL_get_error(t.ssl, n) == SSL_ERROR_ZERO_RETURN;
                break;
            }
            len += (size_t)n;
        }
    }
    r->text[len] = '\0';
    tls_close(&t);
    atomic_store(&r->e->done, 1);
    return NULL;
}

/* A streamed answer over TLS: the chunks as written, then a clean end. */
static void test_stream(void)
{
    env e;
    stream_result r;
    env_init(&e, 5000);
    memset(&r, 0, sizeof(r));
    r.e = &e;
    run_client(&e, stream_client, &r, 5000);
    FG_CHECK(r.connected);
    FG_CHECK(strncmp(r.text, "HTTP/1.1 200 OK\r\n", 17) == 0);
    FG_CHECK(strstr(r.text, "Connection: close\r\n") != NULL);
    const char *body = strstr(r.text, "\r\n\r\n");
    FG_CHECK(body &&
             strcmp(body + 4, "data: 0\n\ndata: 1\n\ndata: 2\n\n") == 0);
    FG_CHECK(r.close_notify);
    env_free(&e);
}

typedef struct plain_result {
    env *e;
    char answer[512];
    int tls_after;
} plain_result;

static void *plain_client(void *arg)
{
    plain_result *r = arg;
    int fd = tcp_connect(r->e->port);
    static const char get[] = "GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n";
    size_t len = 0;
    if (fd >= 0 && send(fd, get, sizeof(get) - 1, 0) > 0) {
        for (;;) {
            ssize_t n = recv(fd, r->answer + len, sizeof(r->answer) - 1 - len,
                             0);
            if (n <= 0)
                break;
            len += (size_t)n;
        }
    }
    r->answer[len] = '\0';
    if (fd >= 0)
        close(fd);
    tls_client t;
    r->tls_after = tls_open(&t, r->e->port) == 0;
    tls_close(&t);
    atomic_store(&r->e->done, 1);
    return NULL;
}

/* Plain HTTP to the TLS port: a plaintext 400 that says so, then the
 * close; the server goes on serving TLS. */
static void test_plain_http_refused(void)
{
    env e;
    plain_result r;
    env_init(&e, 5000);
    memset(&r, 0, sizeof(r));
    r.e = &e;
    run_client(&e, plain_client, &r, 5000);
    FG_CHECK(strncmp(r.answer, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    FG_CHECK(strstr(r.answer, "{\"error\":\"tls_required\"}") != NULL);
    FG_CHECK_INT(e.rejects, 1);
    FG_CHECK(r.tls_after);
    env_free(&e);
}

typedef struct stall_result {
    env *e;
    int stalled_fd;
    int other_ok;
    int64_t other_ms;
} stall_result;

static void *stall_client(void *arg)
{
    stall_result *r = arg;
    /* Part of a TLS record header, then nothing. */
    r->stalled_fd = tcp_connect(r->e->port);
    static const unsigned char part[] = {0x16, 0x03, 0x01, 0x02};
    if (r->stalled_fd >= 0)
        (void)send(r->stalled_fd, part, sizeof(part), 0);
    int64_t t0 = fg_test_mono_ms();
    tls_client t;
    static const char get[] =
        "GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    char buf[512];
    size_t total;
    if (tls_open(&t, r->e->port) == 0 &&
        tls_send(&t, get, sizeof(get) - 1) == 0 &&
        tls_answer(&t, buf, sizeof(buf), &total) >= 0)
        r->other_ok = 1;
    r->other_ms = fg_test_mono_ms() - t0;
    tls_close(&t);
    atomic_store(&r->e->done, 1);
    return NULL;
}

/* A client stalled in the handshake holds up nobody and is dropped when
 * the read timeout runs out. */
static void test_stalled_handshake_dropped(void)
{
    env e;
    stall_result r;
    env_init(&e, 400);
    memset(&r, 0, sizeof(r));
    r.e = &e;
    r.stalled_fd = -1;
    run_client(&e, stall_client, &r, 5000);
    FG_CHECK(r.other_ok);
    FG_CHECK(r.other_ms < 300);
    FG_CHECK(r.stalled_fd >= 0);
    /* Still open now; closed by the server once 400 ms have passed. */
    char c;
    FG_CHECK(recv(r.stalled_fd, &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN);
    pump(&e, 600);
    errno = 0;
    ssize_t n = recv(r.stalled_fd, &c, 1, MSG_DONTWAIT);
    FG_CHECK(n == 0 || (n < 0 && errno != EAGAIN));
    FG_CHECK_INT(fg_http_server_connections(e.srv), 0);
    close(r.stalled_fd);
    env_free(&e);
}

/* The context builder names the file at fault. */
static void test_ctx_errors(void)
{
    char err[512];
    fg_http_tls_file bad = FG_HTTP_TLS_NONE;
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/nope.pem", dir);
    FG_CHECK(fg_http_tls_ctx_new(missing, key_path, &bad, err, sizeof(err)) ==
             NULL);
    FG_CHECK_INT(bad, FG_HTTP_TLS_CERT);
    FG_CHECK(strstr(err, missing) != NULL);
    FG_CHECK(strstr(err, "No such file or directory") != NULL);
    bad = FG_HTTP_TLS_NONE;
    FG_CHECK(fg_http_tls_ctx_new(cert_path, missing, &bad, err, sizeof(err)) ==
             NULL);
    FG_CHECK_INT(bad, FG_HTTP_TLS_KEY);
    bad = FG_HTTP_TLS_NONE;
    /* A key as the certificate. */
    FG_CHECK(fg_http_tls_ctx_new(key_path, key_path, &bad, err, sizeof(err)) ==
             NULL);
    FG_CHECK_INT(bad, FG_HTTP_TLS_CERT);
    FG_CHECK(strstr(err, "no start line") != NULL);
    bad = FG_HTTP_TLS_NONE;
    FG_CHECK(fg_http_tls_ctx_new(cert_path, other_key_path, &bad, err,
                                 sizeof(err)) == NULL);
    FG_CHECK_INT(bad, FG_HTTP_TLS_KEY);
    FG_CHECK(strstr(err, "does not match") != NULL);
    SSL_CTX *ctx = fg_http_tls_ctx_new(cert_path, key_path, NULL, err,
                                       sizeof(err));
    FG_CHECK(ctx != NULL);
    FG_CHECK_INT(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    SSL_CTX_free(ctx);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    make_files();
}

FG_TEST_MAIN(setup, test_ctx_errors, test_keepalive_and_big_transfers,
             test_stream, test_plain_http_refused,
             test_stalled_handshake_dropped, remove_files)
