/* SPDX-License-Identifier: Apache-2.0 */
/* A small HTTP/1.1 server for libevent loops: non-blocking sockets read and
 * written directly (no bufferevents), requests parsed with http_parser,
 * keep-alive and pipelining (one request in flight per connection, the next
 * one parsed once the previous answer is queued), hard caps on header and
 * body size, a whole-request read deadline, an idle keep-alive timeout and a
 * connection cap. Handlers may answer later (after a Kafka delivery report)
 * from the same thread; a client that went away meanwhile costs nothing. An
 * answer may also be streamed (server-sent events) under a cap on what is
 * buffered for a slow client. A server may speak TLS (OpenSSL, driven by
 * the same loop); one without costs nothing extra. */
#ifndef FG_HTTP_H
#define FG_HTTP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fg_status.h"

struct event_base;
typedef struct ssl_ctx_st SSL_CTX; /* as <openssl/ssl.h> declares it */

typedef struct fg_http_server fg_http_server;
typedef struct fg_http_req fg_http_req;

typedef enum fg_http_method {
    FG_HTTP_OTHER = 0,
    FG_HTTP_GET,
    FG_HTTP_HEAD,
    FG_HTTP_POST,
    FG_HTTP_PUT,
    FG_HTTP_DELETE
} fg_http_method;

/* Called once per complete request on the server's loop thread. The handler
 * owns req until it calls fg_http_respond or fg_http_stream_begin (now or
 * later, on the same thread); it must call exactly one of them once. */
typedef void (*fg_http_handler)(void *ud, fg_http_req *req);

typedef struct fg_http_limits {
    size_t max_header_bytes;   /* request line + headers; over it: 431 */
    size_t max_body_bytes;     /* over it: 413 */
    int64_t read_timeout_ms;   /* first byte to complete request; then 408 */
    int64_t idle_timeout_ms;   /* keep-alive connection with nothing to do */
    int64_t write_timeout_ms;  /* a client that does not read its answer */
} fg_http_limits;

/* Counts open connections across every server that shares it, to enforce a
 * process-wide cap. */
typedef struct fg_http_conn_budget {
    atomic_long open;
    long max;
    /* Request bodies held in memory (being received or with a handler),
     * across every server sharing the budget; 0 = unbounded. A request
     * that would go over gets 503 with Retry-After and the connection is
     * closed. */
    atomic_long body_bytes;
    long max_body_bytes;
} fg_http_conn_budget;

/* Called when the HTTP layer answers a request itself (400 bad request,
 * 408, 413, 431, 503 over the memory budget), for metrics. */
typedef void (*fg_http_reject_cb)(void *ud, int status, const char *code);

/* Creates a server that accepts on fd (a bound, listening, non-blocking
 * socket; ownership transferred on success) on base (borrowed). limits is
 * copied; budget is borrowed and may be shared by servers on other threads.
 * Returns NULL and fills errbuf on failure. @thread the loop's */
fg_http_server *fg_http_server_new(struct event_base *base, int fd,
                                   const fg_http_limits *limits,
                                   fg_http_conn_budget *budget,
                                   fg_http_handler handler, void *ud,
                                   char *errbuf, size_t errlen);

/* Registers cb (called on the loop thread) for answers the layer gives on
 * its own. */
void fg_http_server_on_reject(fg_http_server *srv, fg_http_reject_cb cb);

/* Stops accepting (closes the listening socket). Open connections go on;
 * each closes after its current request has been answered, and idle ones
 * close now. Streamed answers end: each owner's on_close is called
 * (FG_HTTP_STREAM_SHUTDOWN), then the connection sends what is buffered
 * and closes. @thread the loop's */
void fg_http_server_drain(fg_http_server *srv);

/* Number of requests handed to the handler and not yet answered. */
size_t fg_http_server_inflight(const fg_http_server *srv);

/* Number of open connections of this server. */
size_t fg_http_server_connections(const fg_http_server *srv);

/* Closes every connection at once and frees the server. Requests still held
 * by a handler stay valid until fg_http_respond (or fg_http_stream_begin,
 * which then returns NULL), which then only frees them. Streams still open
 * get on_close (FG_HTTP_STREAM_SHUTDOWN) first. NULL is a no-op.
 * @thread the loop's */
void fg_http_server_free(fg_http_server *srv);

/* ---- TLS ----
 *
 * A TLS server runs the handshake on the loop (non-blocking, like the rest)
 * under the read timeout: a client that has not finished it and begun its
 * first request within read_timeout_ms of connecting is dropped, and a
 * stalled one never holds up others. Plain HTTP sent to a TLS server gets
 * a plaintext 400 {"error":"tls_required"} (counted through the reject
 * callback) and the connection closes; over the connection cap, a TLS
 * server closes without the 503 (it cannot answer before a handshake).
 * After the last answer the server sends close_notify before closing.
 * Streamed answers work the same over TLS; their cap counts plaintext
 * bytes. The process must ignore SIGPIPE (OpenSSL writes to sockets with
 * write(2)): the daemons do. */

/* Which file of a TLS configuration is at fault (fg_http_tls_ctx_new). */
typedef enum fg_http_tls_file {
    FG_HTTP_TLS_NONE = 0, /* neither: out of memory or an OpenSSL failure */
    FG_HTTP_TLS_CERT,
    FG_HTTP_TLS_KEY       /* unreadable, not a key, or not the cert's */
} fg_http_tls_file;

/* Builds a server context from PEM files: cert_file holds the certificate
 * then any intermediates, key_file its private key. TLS 1.2 and 1.3 only;
 * for 1.2, ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 and the
 * server's preference; no renegotiation, no compression; buffers of idle
 * connections released. Returns the context (free it with SSL_CTX_free), or
 * NULL with errbuf naming the file and OpenSSL's reason and *bad (may be
 * NULL) saying which file. Strings borrowed. @thread any */
SSL_CTX *fg_http_tls_ctx_new(const char *cert_file, const char *key_file,
                             fg_http_tls_file *bad, char *errbuf,
                             size_t errlen);

/* Makes srv speak TLS with ctx on every connection it accepts from now on
 * (call it right after fg_http_server_new). ctx is referenced
 * (SSL_CTX_up_ref) until the server is freed: the caller keeps, and frees,
 * its own reference. Returns FG_OK, or FG_EINVAL when srv already has a
 * context. @thread the loop's */
fg_status fg_http_server_set_tls(fg_http_server *srv, SSL_CTX *ctx);

/* Opens a listening TCP socket on "host:port" (IPv4 or [IPv6]), non-blocking,
 * with SO_REUSEADDR and, when reuseport, SO_REUSEPORT so that several threads
 * can each own one. Returns the fd or -1 with errbuf filled. */
int fg_http_listen(const char *addr, int reuseport, char *errbuf,
                   size_t errlen);

/* The port a listening socket is bound to (for ":0" listeners). */
int fg_http_bound_port(int fd);

/* Request accessors. Strings are borrowed and valid until fg_http_respond.
 * @thread the loop's */
fg_http_method fg_http_req_method(const fg_http_req *req);
/* The path without the query string. */
const char *fg_http_req_path(const fg_http_req *req, size_t *len);
/* The query string without '?', or NULL. */
const char *fg_http_req_query(const fg_http_req *req);
/* The value of the first header named name (case-insensitive), or NULL. */
const char *fg_http_req_header(const fg_http_req *req, const char *name);
const char *fg_http_req_body(const fg_http_req *req, size_t *len);
/* The peer address as text ("127.0.0.1"). */
const char *fg_http_req_peer(const fg_http_req *req);
/* True when the client has gone away; answering is still required and
 * then only frees the request. */
int fg_http_req_orphaned(const fg_http_req *req);

/* Answers req and releases it: status, Content-Type (may be NULL when
 * len is 0), body (copied), and extra_headers ("Retry-After: 1\r\n", each
 * line CRLF-terminated, or NULL). The connection stays open for the next
 * request unless the client asked to close or the server is draining. (When
 * the layer itself refuses a request, 400/408/413/431/503, the stream can't
 * be trusted and it always closes.) @thread the loop's */
void fg_http_respond(fg_http_req *req, int status, const char *content_type,
                     const void *body, size_t len, const char *extra_headers);

/* Answers with {"error":code,"detail":detail} as application/json. */
void fg_http_respond_error(fg_http_req *req, int status, const char *code,
                           const char *detail, const char *extra_headers);

/* Reason phrase of a status code ("OK", "Not Found"). */
const char *fg_http_status_text(int status);

/* ---- streamed answers ----
 *
 * A streamed answer (server-sent events, a long download) is a status line
 * and headers without Content-Length, then bytes written as they come, until
 * one side closes: the connection ends with the stream (Connection: close,
 * no keep-alive after it). While it runs, the read, idle and whole-answer
 * write deadlines are off; what stays is a stall guard (buffered output that
 * makes no progress for stall_timeout_ms closes the connection) and a cap on
 * the bytes buffered for a client that reads slower than we write (a write
 * that would go over it fails and closes the connection: a slow client is
 * dropped, never buffered without bound). Bytes the client sends after the
 * request are read and ignored; end of file or a reset from the client ends
 * the stream (like a browser closing the page). */

typedef struct fg_http_stream fg_http_stream;

/* Why a stream ended without its owner asking for it. */
typedef enum fg_http_stream_why {
    FG_HTTP_STREAM_PEER_GONE = 0, /* the client closed or reset, or a send
                                     failed */
    FG_HTTP_STREAM_STALLED,       /* buffered output made no progress for
                                     the stall timeout */
    FG_HTTP_STREAM_SHUTDOWN       /* fg_http_server_drain or _free */
} fg_http_stream_why;

/* Tells the owner that its stream is over (see fg_http_stream_why). Called
 * at most once per stream, on the loop thread, never from inside a
 * fg_http_stream_* call on that same stream; the handle is invalid as soon
 * as the callback is entered: forget it, don't pass it to any fg_http_*
 * function. The callback may write to or end other streams, but must not
 * free the server. */
typedef void (*fg_http_stream_close_cb)(void *ud, fg_http_stream_why why);

/* Default of fg_http_stream_opts.max_buffered. */
#define FG_HTTP_STREAM_MAX_BUFFERED (256 * 1024)

typedef struct fg_http_stream_opts {
    /* Most bytes held for the client (written by the owner, not yet taken
     * by the kernel); 0 = FG_HTTP_STREAM_MAX_BUFFERED. The status line and
     * headers count too. */
    size_t max_buffered;
    /* Buffered output that makes no progress for this long closes the
     * connection (FG_HTTP_STREAM_STALLED); 0 = the server's
     * write_timeout_ms. */
    int64_t stall_timeout_ms;
} fg_http_stream_opts;

/* Starts a streamed answer to req and releases req (as fg_http_respond
 * does; call exactly one of them). Sends the status line, Server, Date,
 * Content-Type (content_type borrowed; may be NULL), "Connection: close"
 * and extra_headers ("Cache-Control: no-store\r\n", each line
 * CRLF-terminated, borrowed, or NULL); never Content-Length. opts is copied
 * (NULL = defaults). on_close (may be NULL) and ud are kept until the
 * stream ends.
 * Returns the stream, owned by the connection: it lives until the owner
 * calls fg_http_stream_end, a write fails, or on_close is called. Returns
 * NULL, and never calls on_close, when there is nothing to stream to: the
 * client has gone away, the request was HEAD (the head is sent, then the
 * connection closes), the server is draining (answered 503 shutting_down
 * with Retry-After), or memory ran out (answered 503).
 * May be called from the handler or later. @thread the loop's */
fg_http_stream *fg_http_stream_begin(fg_http_req *req, int status,
                                     const char *content_type,
                                     const char *extra_headers,
                                     const fg_http_stream_opts *opts,
                                     fg_http_stream_close_cb on_close,
                                     void *ud);

/* Appends len bytes of buf (borrowed, copied when they can't be sent at
 * once) to the stream's output; what the socket does not take now is sent
 * when it can, in order. Returns FG_OK; otherwise the connection is closed
 * at once, the stream is gone (s is invalid; on_close is not called) and
 * the status says why: FG_ETOOBIG when the bytes buffered would go over
 * max_buffered (a slow client), FG_EIO when the connection broke,
 * FG_ENOMEM. @thread the loop's */
fg_status fg_http_stream_write(fg_http_stream *s, const void *buf,
                               size_t len);

/* Bytes written to s and not yet taken by the kernel. @thread the loop's */
size_t fg_http_stream_buffered(const fg_http_stream *s);

/* Ends the stream: the buffered bytes are sent (still under the stall
 * guard), then the connection closes. s is invalid afterwards; on_close is
 * not called. @thread the loop's */
void fg_http_stream_end(fg_http_stream *s);

/* Static name of a reason: "peer_gone", "stalled", "shutdown". */
const char *fg_http_stream_why_str(fg_http_stream_why why);

#endif
