/* SPDX-License-Identifier: Apache-2.0 */
/* What the fg_http unit tests share: an fg_http server on a loopback port
 * driven by a libevent loop in the test's thread, a monotonic clock, the
 * loop pump and loopback client sockets. Header-only, like fg_test.h. */
#ifndef FG_TEST_HTTP_H
#define FG_TEST_HTTP_H

#include <event2/event.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fg_http.h"
#include "fg_test.h"

static inline int64_t fg_test_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs base's loop without blocking, about once a millisecond, for ms or
 * until *flag is non-zero (flag may be NULL). */
static inline void fg_test_pump(struct event_base *base, int ms,
                                const int *flag)
{
    int64_t end = fg_test_mono_ms() + ms;
    while (fg_test_mono_ms() < end && !(flag && *flag)) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* A blocking TCP connection to 127.0.0.1:port, or -1; rcvbuf > 0 shrinks
 * its receive buffer first. No FG_CHECK: client threads call it too. */
static inline int fg_test_connect(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A server on 127.0.0.1 and a port of the kernel's choice (in *port) with
 * lim, on base; checked with FG_CHECK, NULL when it could not start. */
static inline fg_http_server *fg_test_http_server(struct event_base *base,
                                                  const fg_http_limits *lim,
                                                  fg_http_handler handler,
                                                  void *ud, int *port)
{
    char err[256];
    int fd = fg_http_listen("127.0.0.1:0", 0, err, sizeof(err));
    FG_CHECK(fd >= 0);
    if (fd < 0)
        return NULL;
    *port = fg_http_bound_port(fd);
    fg_http_server *srv = fg_http_server_new(base, fd, lim, NULL, handler, ud,
                                             err, sizeof(err));
    FG_CHECK(srv != NULL);
    if (!srv)
        close(fd);
    return srv;
}

#endif
