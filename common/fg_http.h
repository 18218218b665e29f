/* SPDX-License-Identifier: Apache-2.0 */
/* A small HTTP/1.1 server for libevent loops: non-blocking sockets read and
 * written directly (no bufferevents), requests parsed with http_parser,
 * keep-alive and pipelining (one request in flight per connection, the next
 * one parsed once the previous answer is queued), hard caps on header and
 * body size, a whole-request read deadline, an idle keep-alive timeout and a
 * connection cap. Handlers may answer later (after a Kafka delivery report)
 * from the same thread; a client that went away meanwhile costs nothing. */
#ifndef FG_HTTP_H
#define FG_HTTP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fg_status.h"

struct event_base;

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
 * owns req until it calls fg_http_respond (now or later, on the same
 * thread); it must call it exactly once. */
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
 * close now. @thread the loop's */
void fg_http_server_drain(fg_http_server *srv);

/* Number of requests handed to the handler and not yet answered. */
size_t fg_http_server_inflight(const fg_http_server *srv);

/* Number of open connections of this server. */
size_t fg_http_server_connections(const fg_http_server *srv);

/* Closes every connection at once and frees the server. Requests still held
 * by a handler stay valid until fg_http_respond, which then only frees them.
 * NULL is a no-op. @thread the loop's */
void fg_http_server_free(fg_http_server *srv);

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

#endif
