/* SPDX-License-Identifier: Apache-2.0 */
/* Integration tests of common/fg_redis.c against real redis-servers: plain
 * commands against FG_TEST_REDIS (exported by tests/run), and the fault
 * cases (SIGSTOP, kill -9 and restart, server-side close, NOSCRIPT after
 * SCRIPT FLUSH, AUTH, SELECT) against a private redis-server that this test
 * forks on a free port and that dies with it. */
#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fg_log.h"
#include "fg_redis.h"
#include "fg_test.h"

static struct event_base *base;
static struct event *wake;
static char shared_host[256];
static int shared_port;
static char prefix[64]; /* fg_redis_test:<pid>: on the shared server */

/* ---- the loop ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* One loop turn, blocking at most until end (ms). 0 once end has passed. */
static int loop_step(int64_t end)
{
    int64_t left = end - now_ms();
    struct timeval tv;
    if (left <= 0)
        return 0;
    tv.tv_sec = (time_t)(left / 1000);
    tv.tv_usec = (suseconds_t)((left % 1000) * 1000);
    evtimer_add(wake, &tv);
    event_base_loop(base, EVLOOP_ONCE);
    evtimer_del(wake);
    return 1;
}

#define RUN_UNTIL(cond, ms)                                                   \
    do {                                                                      \
        int64_t end_ = now_ms() + (ms);                                       \
        while (!(cond) && loop_step(end_)) {                                  \
        }                                                                     \
    } while (0)

static void run_for(int ms)
{
    int64_t end = now_ms() + ms;
    while (loop_step(end)) {
    }
}

/* ---- callbacks ---- */

typedef struct call {
    int calls;
    fg_redis_outcome outcome;
    int type; /* reply type, -1 without a reply */
    long long integer;
    char str[256];
    size_t len;
    size_t elements;
    int64_t at_ms;
    fg_redis *free_r; /* freed from inside the callback when set */
} call;

static void on_result(void *ud, const fg_redis_result *res)
{
    call *c = ud;
    const redisReply *rep = res->reply;
    c->calls++;
    c->outcome = res->outcome;
    c->at_ms = now_ms();
    c->type = rep ? rep->type : -1;
    c->len = 0;
    c->str[0] = '\0';
    if (rep) {
        c->integer = rep->integer;
        c->elements = rep->elements;
        if (rep->str) {
            c->len = rep->len < sizeof(c->str) - 1 ? rep->len
                                                   : sizeof(c->str) - 1;
            memcpy(c->str, rep->str, c->len);
            c->str[c->len] = '\0';
        }
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
            rep->element[rep->elements - 1]->type == REDIS_REPLY_INTEGER)
            c->integer = rep->element[rep->elements - 1]->integer;
    } else {
        snprintf(c->str, sizeof(c->str), "%s", res->err);
    }
    if (c->free_r) {
        fg_redis *r = c->free_r;
        c->free_r = NULL;
        fg_redis_free(r);
    }
}

typedef struct updown {
    int up, down;
} updown;

static void on_up(void *ud)
{
    ((updown *)ud)->up++;
}

static void on_down(void *ud)
{
    ((updown *)ud)->down++;
}

/* A client with on_up/on_down counting into ud, up within 5 s. */
static fg_redis *client_up(const char *host, int port, fg_redis_opts *o,
                           updown *ud)
{
    char err[256] = "";
    fg_redis *r;
    o->on_up = on_up;
    o->on_down = on_down;
    o->ud = ud;
    r = fg_redis_new(base, host, port, o, err, sizeof(err));
    if (!r) {
        fprintf(stderr, "fg_redis_new %s:%d: %s\n", host, port, err);
        return NULL;
    }
    RUN_UNTIL(fg_redis_is_up(r), 5000);
    if (!fg_redis_is_up(r))
        fprintf(stderr, "redis %s:%d not up after 5 s\n", host, port);
    return r;
}

/* Sends a command and runs the loop until its callback (3 s at most). */
static fg_status sync_cmd(fg_redis *r, call *c, const char *fmt, ...)
{
    va_list ap;
    fg_status st;
    memset(c, 0, sizeof(*c));
    va_start(ap, fmt);
    st = fg_redis_vcommand(r, on_result, c, fmt, ap);
    va_end(ap);
    if (st == FG_OK)
        RUN_UNTIL(c->calls > 0, 3000);
    return st;
}

static fg_status sync_eval(fg_redis *r, const fg_redis_script *s, call *c,
                           int nkeys, int argc, const char **argv,
                           const size_t *argvlen)
{
    fg_status st;
    memset(c, 0, sizeof(*c));
    st = fg_redis_script_eval(r, s, on_result, c, nkeys, argc, argv, argvlen);
    if (st == FG_OK)
        RUN_UNTIL(c->calls > 0, 3000);
    return st;
}

/* ---- the private redis-server ---- */

static struct {
    pid_t pid;
    int port;
    char dir[64];
    char log[96];
} priv;

static int free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int port = -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* Answers PING on the private port (a blocking probe, outside the loop). */
static int priv_pings(void)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", priv.port, tv);
    redisReply *rep;
    int ok = 0;
    if (!c)
        return 0;
    if (!c->err) {
        rep = redisCommand(c, "PING");
        ok = rep && rep->type == REDIS_REPLY_STATUS &&
             strcmp(rep->str, "PONG") == 0;
        if (rep)
            freeReplyObject(rep);
    }
    redisFree(c);
    return ok;
}

/* Forks redis-server on priv.port (no persistence) and waits until it
 * answers. It gets SIGKILL when this process dies. */
static int priv_start(void)
{
    char port[16];
    int64_t end = now_ms() + 10000;
    snprintf(port, sizeof(port), "%d", priv.port);
    priv.pid = fork();
    if (priv.pid < 0)
        return -1;
    if (priv.pid == 0) {
        FILE *f;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        f = freopen(priv.log, "a", stdout);
        if (f)
            dup2(fileno(f), STDERR_FILENO);
        execlp("redis-server", "redis-server", "--bind", "127.0.0.1",
               "--port", port, "--dir", priv.dir, "--save", "",
               "--appendonly", "no", "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    while (now_ms() < end) {
        int status;
        if (waitpid(priv.pid, &status, WNOHANG) == priv.pid) {
            fprintf(stderr, "redis-server exited during start-up (see %s)\n",
                    priv.log);
            priv.pid = 0;
            return -1;
        }
        if (priv_pings())
            return 0;
        usleep(20000);
    }
    fprintf(stderr, "redis-server not ready after 10 s (see %s)\n", priv.log);
    return -1;
}

static void priv_kill(void)
{
    if (priv.pid > 0) {
        kill(priv.pid, SIGKILL);
        waitpid(priv.pid, NULL, 0);
        priv.pid = 0;
    }
}

/* ---- tests ---- */

static void test_new_invalid(void)
{
    char err[256] = "";
    fg_redis_opts o = {0};
    FG_CHECK(fg_redis_new(base, NULL, 6379, NULL, err, sizeof(err)) == NULL);
    FG_CHECK(err[0] != '\0');
    err[0] = '\0';
    FG_CHECK(fg_redis_new(base, "127.0.0.1", 0, NULL, err, sizeof(err)) ==
             NULL);
    FG_CHECK(strstr(err, "port") != NULL);
    FG_CHECK(fg_redis_new(base, "127.0.0.1", 70000, NULL, NULL, 0) == NULL);
    o.reconnect_min_ms = 500;
    o.reconnect_max_ms = 100;
    FG_CHECK(fg_redis_new(base, "127.0.0.1", 6379, &o, err, sizeof(err)) ==
             NULL);
    FG_CHECK(strstr(err, "reconnect_max_ms") != NULL);
    fg_redis_free(NULL);
}

/* Nothing listens: no callbacks, FG_AGAIN, attempts spaced by the
 * backoff, and a clean free. */
static void test_nothing_listening(void)
{
    updown ud = {0, 0};
    fg_redis_opts o = {0};
    fg_redis_stats st;
    call c = {0};
    int port = free_port();
    fg_redis *r;
    o.reconnect_min_ms = 50;
    o.reconnect_max_ms = 100;
    o.on_up = on_up;
    o.on_down = on_down;
    o.ud = &ud;
    r = fg_redis_new(base, "127.0.0.1", port, &o, NULL, 0);
    FG_CHECK(r != NULL);
    if (!r)
        return;
    run_for(400);
    fg_redis_stats_get(r, &st);
    FG_CHECK(!fg_redis_is_up(r));
    FG_CHECK_INT(fg_redis_command(r, on_result, &c, "PING"), FG_AGAIN);
    /* attempts at about 0, 50, 150, 250, 350 ms: not a busy loop */
    FG_CHECK(st.connect_failures >= 3 && st.connect_failures <= 8);
    FG_CHECK_INT(st.connects, 0);
    FG_CHECK_INT(ud.up + ud.down, 0);
    fg_redis_free(r);
    FG_CHECK_INT(c.calls, 0);
}

static void test_basic(void)
{
    updown ud = {0, 0};
    fg_redis_opts o = {0};
    fg_redis_stats st;
    call pre = {0}, set = {0}, incr = {0}, get = {0}, bad = {0}, del = {0};
    char key[128], skey[128];
    fg_redis *r;

    snprintf(key, sizeof(key), "%scounter", prefix);
    snprintf(skey, sizeof(skey), "%sstring", prefix);
    o.on_up = on_up;
    o.on_down = on_down;
    o.ud = &ud;
    r = fg_redis_new(base, shared_host, shared_port, &o, NULL, 0);
    FG_CHECK(r != NULL);
    if (!r)
        return;
    /* Nothing happens before the loop runs. */
    FG_CHECK(!fg_redis_is_up(r));
    FG_CHECK_INT(fg_redis_command(r, on_result, &pre, "PING"), FG_AGAIN);
    RUN_UNTIL(fg_redis_is_up(r), 5000);
    FG_CHECK(fg_redis_is_up(r));
    FG_CHECK_INT(ud.up, 1);

    FG_CHECK_INT(fg_redis_command(r, on_result, &set, "SET %s %s", key, "41"),
                 FG_OK);
    FG_CHECK_INT(set.calls, 0); /* never called back from inside the call */
    FG_CHECK_INT(fg_redis_command(r, on_result, &incr, "INCRBY %s %d", key, 1),
                 FG_OK);
    FG_CHECK_INT(fg_redis_command(r, on_result, &get, "GET %s", key), FG_OK);
    RUN_UNTIL(get.calls > 0, 3000);
    FG_CHECK_INT(set.calls, 1);
    FG_CHECK_INT(set.outcome, FG_REDIS_REPLY);
    FG_CHECK_STR(set.str, "OK");
    FG_CHECK_INT(incr.calls, 1);
    FG_CHECK_INT(incr.type, REDIS_REPLY_INTEGER);
    FG_CHECK_INT(incr.integer, 42);
    FG_CHECK_INT(get.calls, 1);
    FG_CHECK_INT(get.type, REDIS_REPLY_STRING);
    FG_CHECK_STR(get.str, "42");

    /* An error reply is an answer, with its text. */
    FG_CHECK_INT(sync_cmd(r, &bad, "SET %s abc", skey), FG_OK);
    FG_CHECK_INT(sync_cmd(r, &bad, "INCRBY %s 1", skey), FG_OK);
    FG_CHECK_INT(bad.calls, 1);
    FG_CHECK_INT(bad.outcome, FG_REDIS_ERROR_REPLY);
    FG_CHECK(strstr(bad.str, "not an integer") != NULL);

    FG_CHECK_INT(sync_cmd(r, &del, "DEL %s %s", key, skey), FG_OK);
    FG_CHECK_INT(del.integer, 2);
    fg_redis_stats_get(r, &st);
    FG_CHECK_INT(st.connects, 1);
    FG_CHECK_INT(st.inflight, 0);
    fg_redis_free(r);
    FG_CHECK_INT(ud.down, 0); /* free is not a loss */
    FG_CHECK_INT(pre.calls, 0);
}

static void test_argv_binary(void)
{
    updown ud = {0, 0};
    fg_redis_opts o = {0};
    static const char val[] = {'a', '\0', 'b', '\r', '\n', '\0', (char)0xff};
    char key[128];
    size_t klen = strlen(prefix);
    call c = {0};
    fg_redis *r = client_up(shared_host, shared_port, &o, &ud);
    FG_CHECK(r && fg_redis_is_up(r));
    if (!r)
        return;
    memcpy(key, prefix, klen);
    memcpy(key + klen, "b\0n\r\n", 5); /* a key with NUL, CR, LF */
    klen += 5;
    {
        const char *argv[] = {"SET", key, val};
        size_t argvlen[] = {3, klen, sizeof(val)};
        memset(&c, 0, sizeof(c));
        FG_CHECK_INT(fg_redis_commandv(r, on_result, &c, 3, argv, argvlen),
                     FG_OK);
        RUN_UNTIL(c.calls > 0, 3000);
        FG_CHECK_INT(c.outcome, FG_REDIS_REPLY);
        FG_CHECK_STR(c.str, "OK");
    }
    {
        const char *argv[] = {"GET", key};
        size_t argvlen[] = {3, klen};
        memset(&c, 0, sizeof(c));
        FG_CHECK_INT(fg_redis_commandv(r, on_result, &c, 2, argv, argvlen),
                     FG_OK);
        RUN_UNTIL(c.calls > 0, 3000);
        FG_CHECK_INT(c.type, REDIS_REPLY_STRING);
        FG_CHECK_INT(c.len, sizeof(val));
        FG_CHECK(memcmp(c.str, val, sizeof(val)) == 0);
    }
    /* The printf form's %b is binary-safe too. */
    FG_CHECK_INT(sync_cmd(r, &c, "STRLEN %b", key, klen), FG_OK);
    FG_CHECK_INT(c.integer, (long long)sizeof(val));
    {
        const char *argv[] = {"DEL", key};
        size_t argvlen[] = {3, klen};
        memset(&c, 0, sizeof(c));
        FG_CHECK_INT(fg_redis_commandv(r, on_result, &c, 2, argv, argvlen),
                     FG_OK);
        RUN_UNTIL(c.calls > 0, 3000);
        FG_CHECK_INT(c.integer, 1);
    }
    /* argvlen NULL: C strings. */
    {
        const char *argv[] = {"ECHO", "plain"};
        memset(&c, 0, sizeof(c));
        FG_CHECK_INT(fg_redis_commandv(r, on_result, &c, 2, argv, NULL),
                     FG_OK);
        RUN_UNTIL(c.calls > 0, 3000);
        FG_CHECK_STR(c.str, "plain");
    }
    fg_redis_free(r);
}

/* Refused before anything is sent, with no callback. */
/* Argument vectors: copied, formatted and borrowed arguments in one
 * command, intact after the copies' buffer moved; a failed step sends
 * nothing. */
static void test_args(void)
{
    updown ud = {0, 0};
    fg_redis_opts o = {0};
    static const char bin[] = {'x', '\0', '\r', '\n', (char)0xfe};
    char key[128], pad[100], big[FG_REDIS_ARG_FMT_MAX + 2];
    call c = {0};
    fg_redis *r = client_up(shared_host, shared_port, &o, &ud);
    FG_CHECK(r && fg_redis_is_up(r));
    if (!r)
        return;
    snprintf(key, sizeof(key), "%sargs", prefix);
    memset(pad, 'p', sizeof(pad));

    /* RPUSH key first bin then 64 padded items: the copies outgrow the
     * first buffer after the first copied element. */
    fg_redis_args a = {0};
    fg_redis_args_str(&a, "RPUSH");
    fg_redis_args_fmt(&a, "%s", key);
    fg_redis_args_str(&a, "first");
    fg_redis_args_ref(&a, bin, sizeof(bin));
    for (int i = 0; i < 64; i++) {
        memcpy(pad, &"0123456789"[i % 10], 1);
        fg_redis_args_add(&a, pad, sizeof(pad));
    }
    FG_CHECK_INT(fg_redis_args_command(r, on_result, &c, &a), FG_OK);
    RUN_UNTIL(c.calls > 0, 3000);
    FG_CHECK_INT(c.integer, 66);
    fg_redis_args_free(&a);
    FG_CHECK(a.n == 0 && a.buf == NULL);
    FG_CHECK_INT(sync_cmd(r, &c, "LINDEX %s 0", key), FG_OK);
    FG_CHECK_STR(c.str, "first");
    FG_CHECK_INT(sync_cmd(r, &c, "LINDEX %s 1", key), FG_OK);
    FG_CHECK(c.len == sizeof(bin) && memcmp(c.str, bin, sizeof(bin)) == 0);
    FG_CHECK_INT(sync_cmd(r, &c, "LINDEX %s 65", key), FG_OK);
    FG_CHECK(c.len == sizeof(pad) && c.str[0] == '3' && c.str[1] == 'p');

    /* A script: the first nkeys arguments are its keys. */
    fg_redis_script *s = fg_redis_script_new(
        r, "return #KEYS * 1000 + #ARGV + tonumber(ARGV[2])");
    FG_CHECK(s != NULL);
    fg_redis_args_fmt(&a, "%s", key);
    fg_redis_args_str(&a, "k2");
    fg_redis_args_str(&a, "a1");
    fg_redis_args_fmt(&a, "%d", 40);
    memset(&c, 0, sizeof(c));
    FG_CHECK_INT(fg_redis_args_eval(r, s, on_result, &c, 2, &a), FG_OK);
    RUN_UNTIL(c.calls > 0, 3000);
    FG_CHECK_INT(c.type, REDIS_REPLY_INTEGER);
    FG_CHECK_INT(c.integer, 2042);
    fg_redis_args_free(&a);

    /* Too long a formatted argument, or the caller's own failure: nothing
     * is sent and the callback never runs. */
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memset(&c, 0, sizeof(c));
    fg_redis_args_str(&a, "DEL");
    fg_redis_args_fmt(&a, "%s", big);
    fg_redis_args_str(&a, key);
    FG_CHECK_INT(fg_redis_args_command(r, on_result, &c, &a), FG_ENOMEM);
    fg_redis_args_free(&a);
    fg_redis_args_str(&a, "DEL");
    fg_redis_args_str(&a, key);
    fg_redis_args_fail(&a);
    FG_CHECK_INT(fg_redis_args_eval(r, s, on_result, &c, 1, &a), FG_ENOMEM);
    fg_redis_args_free(&a);
    fg_redis_args_free(NULL);
    run_for(50);
    FG_CHECK_INT(c.calls, 0);
    FG_CHECK_INT(sync_cmd(r, &c, "EXISTS %s", key), FG_OK);
    FG_CHECK_INT(c.integer, 1);

    FG_CHECK_INT(sync_cmd(r, &c, "DEL %s", key), FG_OK);
    fg_redis_free(r);
}

static void test_invalid_commands(void)
{
    updown ud = {0, 0};
    fg_redis_opts o = {0};
    call c = {0};
    char big[2000];
    fg_redis_script *s;
    fg_redis *r;
    o.max_command_bytes = 1024;
    r = client_up(shared_host, shared_port, &o, &ud);
    FG_CHECK(r && fg_redis_is_up(r));
    if (!r)
        return;
    memset(big, 'x', sizeof(big));
    FG_CHECK_INT(fg_redis_command(r, on_result, &c, ""), FG_EINVAL);
    FG_CHECK_INT(fg_redis_command(r, on_result, &c, "SUBSCRIBE ch"),
                 FG_EINVAL);
    FG_CHECK_INT(fg_redis_command(r, on_result, &c, "psubscribe p*"),
                 FG_EINVAL);
    {
        const char *argv[] = {"monitor"};
        FG_CHECK_INT(fg_redis_commandv(r, on_result, &c, 1, argv, NULL),
                     FG_EINVAL);
        FG_CHECK_INT(fg_redis_commandv(r, on_result, &c, 0, argv, NULL),
                     FG_EINVAL);
    }
    {
        const char *argv[] = {"SET", "k", big};
        size_t argvlen[] = {3, 1, sizeof(big)};
        FG_CHECK_INT(fg_redis_commandv(r, on_result, &c, 3, argv, argvlen),
                     FG_ETOOBIG);
    }
    FG_CHECK_INT(fg_redis_command(r, on_result, &c, "SET k %b", big,
                                  sizeof(big)),
                 FG_ETOOBIG);
    s = fg_redis_script_new(r, "return 1");
    FG_CHECK(s != NULL);
    {
        const char *argv[] = {"k"};
        FG_CHECK_INT(fg_redis_script_eval(r, s, on_result, &c, 2, 1, argv,
                                          NULL),
                     FG_EINVAL);
    }
    run_for(50);
    FG_CHECK_INT(c.calls, 0);
    fg_redis_free(r);
    FG_CHECK_INT(c.calls, 0);
}

static void test_max_inflight(void)
{
    updown ud = {0, 0};
    fg_redis_opts o = {0};
    fg_redis_stats st;
    call c[6];
    fg_redis *r;
    o.max_inflight = 5;
    r = client_up(shared_host, shared_port, &o, &ud);
    FG_CHECK(r && fg_redis_is_up(r));
    if (!r)
        return;
    memset(c, 0, sizeof(c));
    for (int i = 0; i < 5; i++)
        FG_CHECK_INT(fg_redis_command(r, on_result, &c[i], "PING"), FG_OK);
    FG_CHECK_INT(fg_redis_command(r, on_result, &c[5], "PING"), FG_AGAIN);
    fg_redis_stats_get(r, &st);
    FG_CHECK_INT(st.inflight, 5);
    FG_CHECK(st.rejected >= 1);
    RUN_UNTIL(c[4].calls > 0, 3000);
    for (int i = 0; i < 5; i++) {
        FG_CHECK_INT(c[i].calls, 1);
        FG_CHECK_STR(c[i].str, "PONG");
    }
    FG_CHECK_INT(c[5].calls, 0);
    FG_CHECK_INT(sync_cmd(r, &c[5], "PING"), FG_OK);
    FG_CHECK_INT(c[5].calls, 1);
    fg_redis_free(r);
}

static void test_free_pending(void)
{
    updown ud = {0, 0};
    fg_redis_opts o = {0};
    enum { N = 100, M = 20 };
    static call c[N];
    char key[128];
    fg_redis *r;
    int ok;

    snprintf(key, sizeof(key), "%sfree", prefix);
    r = client_up(shared_host, shared_port, &o, &ud);
    FG_CHECK(r && fg_redis_is_up(r));
    if (!r)
        return;
    memset(c, 0, sizeof(c));
    for (int i = 0; i < N; i++)
        FG_CHECK_INT(fg_redis_command(r, on_result, &c[i], "INCR %s", key),
                     FG_OK);
    fg_redis_free(r);
    ok = 1;
    for (int i = 0; i < N; i++)
        ok &= c[i].calls == 1 && c[i].outcome == FG_REDIS_FREED &&
              c[i].type == -1 && strcmp(c[i].str, "client freed") == 0;
    FG_CHECK(ok);
    run_for(100);
    ok = 1;
    for (int i = 0; i < N; i++)
        ok &= c[i].calls == 1;
    FG_CHECK(ok);

    /* Freed from inside a callback: the rest are called back once. */
    r = client_up(shared_host, shared_port, &o, &ud);
    FG_CHECK(r && fg_redis_is_up(r));
    if (!r)
        return;
    memset(c, 0, sizeof(c));
    c[0].free_r = r;
    for (int i = 0; i < M; i++)
        FG_CHECK_INT(fg_redis_command(r, on_result, &c[i], "INCR %s", key),
                     FG_OK);
    RUN_UNTIL(c[M - 1].calls > 0, 3000);
    FG_CHECK_INT(c[0].calls, 1);
    FG_CHECK_INT(c[0].outcome, FG_REDIS_REPLY);
    ok = 1;
    for (int i = 1; i < M; i++)
        ok &= c[i].calls == 1 && c[i].outcome == FG_REDIS_FREED;
    FG_CHECK(ok);
    run_for(100);
    ok = 1;
    for (int i = 0; i < M; i++)
        ok &= c[i].calls == 1;
    FG_CHECK(ok);

    /* Freed before it ever connected. */
    r = fg_redis_new(base, shared_host, shared_port, &o, NULL, 0);
    FG_CHECK(r != NULL);
    fg_redis_free(r);
    run_for(50);

    r = client_up(shared_host, shared_port, &o, &ud);
    if (r) {
        FG_CHECK_INT(sync_cmd(r, &c[0], "DEL %s", key), FG_OK);
        fg_redis_free(r);
    }
}

static const char *const script_src =
    "return {KEYS[1], ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[2])}";

static void test_scripts(void)
{
    updown ud = {0, 0};
    fg_redis_opts o = {0};
    fg_redis_stats st;
    call c = {0};
    fg_redis_script *s, *s_err, *s_one, *s_echo;
    const char *argv[] = {"sk", "hello", "5"};
    fg_redis *r = client_up("127.0.0.1", priv.port, &o, &ud);
    FG_CHECK(r && fg_redis_is_up(r));
    if (!r)
        return;
    s = fg_redis_script_new(r, script_src);
    s_err = fg_redis_script_new(r, "return redis.call('NOPE')");
    s_one = fg_redis_script_new(r, "return 1");
    s_echo = fg_redis_script_new(r, "return ARGV[1]");
    FG_CHECK(s && s_err && s_one && s_echo);
    if (!s || !s_err || !s_one || !s_echo) {
        fg_redis_free(r);
        return;
    }
    /* SHA1("return 1"), as Redis names it. */
    FG_CHECK_STR(fg_redis_script_sha(s_one),
                 "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");

    FG_CHECK_INT(sync_cmd(r, &c, "SCRIPT FLUSH"), FG_OK);
    FG_CHECK_INT(sync_cmd(r, &c, "SCRIPT EXISTS %s", fg_redis_script_sha(s)),
                 FG_OK);
    FG_CHECK_INT(c.integer, 0);

    /* Unknown SHA: EVALSHA answers NOSCRIPT, EVAL runs it, one callback. */
    FG_CHECK_INT(sync_eval(r, s, &c, 1, 3, argv, NULL), FG_OK);
    FG_CHECK_INT(c.calls, 1);
    FG_CHECK_INT(c.outcome, FG_REDIS_REPLY);
    FG_CHECK_INT(c.type, REDIS_REPLY_ARRAY);
    FG_CHECK_INT(c.elements, 3);
    FG_CHECK_INT(c.integer, 5);
    fg_redis_stats_get(r, &st);
    FG_CHECK_INT(st.script_fallbacks, 1);
    FG_CHECK_INT(sync_cmd(r, &c, "SCRIPT EXISTS %s", fg_redis_script_sha(s)),
                 FG_OK);
    FG_CHECK_INT(c.integer, 1); /* cached by the EVAL */

    /* Known SHA: EVALSHA alone. */
    FG_CHECK_INT(sync_eval(r, s, &c, 1, 3, argv, NULL), FG_OK);
    FG_CHECK_INT(c.outcome, FG_REDIS_REPLY);
    FG_CHECK_INT(c.integer, 10);
    fg_redis_stats_get(r, &st);
    FG_CHECK_INT(st.script_fallbacks, 1);

    /* The script cache is flushed (as by a restart): still invisible. */
    FG_CHECK_INT(sync_cmd(r, &c, "SCRIPT FLUSH"), FG_OK);
    FG_CHECK_INT(sync_eval(r, s, &c, 1, 3, argv, NULL), FG_OK);
    FG_CHECK_INT(c.calls, 1);
    FG_CHECK_INT(c.outcome, FG_REDIS_REPLY);
    FG_CHECK_INT(c.integer, 15);
    fg_redis_stats_get(r, &st);
    FG_CHECK_INT(st.script_fallbacks, 2);

    /* The resent EVAL carries the same binary arguments. */
    {
        static const char bin[] = {'x', '\0', '\r', '\n', 'y'};
        const char *eargv[] = {bin};
        size_t eargvlen[] = {sizeof(bin)};
        FG_CHECK_INT(sync_eval(r, s_echo, &c, 0, 1, eargv, eargvlen), FG_OK);
        FG_CHECK_INT(c.outcome, FG_REDIS_REPLY);
        FG_CHECK_INT(c.len, sizeof(bin));
        FG_CHECK(memcmp(c.str, bin, sizeof(bin)) == 0);
    }

    /* A script error is the caller's answer, after one fallback. */
    FG_CHECK_INT(sync_eval(r, s_err, &c, 0, 0, NULL, NULL), FG_OK);
    FG_CHECK_INT(c.calls, 1);
    FG_CHECK_INT(c.outcome, FG_REDIS_ERROR_REPLY);
    FG_CHECK(strstr(c.str, "NOSCRIPT") == NULL);

    /* Our SHA1 is Redis's. */
    FG_CHECK_INT(sync_cmd(r, &c, "SCRIPT LOAD %s", script_src), FG_OK);
    FG_CHECK_STR(c.str, fg_redis_script_sha(s));
    FG_CHECK_INT(sync_cmd(r, &c, "DEL sk"), FG_OK);
    fg_redis_free(r);
}

/* SELECT, AUTH, a host name, and a server that closes the connection. */
static void test_handshake(void)
{
    updown ud0 = {0, 0}, ud1 = {0, 0}, udp = {0, 0}, udn = {0, 0};
    fg_redis_opts o0 = {0}, o1 = {0}, op = {0}, on = {0};
    fg_redis_stats st;
    call c = {0};
    fg_redis *r0, *r1, *rp, *rn, *rh;

    r0 = client_up("127.0.0.1", priv.port, &o0, &ud0);
    o1.db = 2;
    r1 = client_up("127.0.0.1", priv.port, &o1, &ud1);
    FG_CHECK(r0 && fg_redis_is_up(r0) && r1 && fg_redis_is_up(r1));
    if (!r0 || !r1)
        goto out;
    FG_CHECK_INT(sync_cmd(r1, &c, "SET dbkey in-db2"), FG_OK);
    FG_CHECK_INT(sync_cmd(r0, &c, "GET dbkey"), FG_OK);
    FG_CHECK_INT(c.type, REDIS_REPLY_NIL);
    FG_CHECK_INT(sync_cmd(r1, &c, "GET dbkey"), FG_OK);
    FG_CHECK_STR(c.str, "in-db2");

    FG_CHECK_INT(sync_cmd(r0, &c, "CONFIG SET requirepass s3cret"), FG_OK);
    FG_CHECK_INT(c.outcome, FG_REDIS_REPLY);
    op.password = "s3cret";
    rp = client_up("127.0.0.1", priv.port, &op, &udp);
    FG_CHECK(rp && fg_redis_is_up(rp));
    if (rp) {
        FG_CHECK_INT(sync_cmd(rp, &c, "PING"), FG_OK);
        FG_CHECK_STR(c.str, "PONG");
        fg_redis_free(rp);
    }
    /* Without the password the handshake fails: never up. */
    on.reconnect_min_ms = 50;
    on.reconnect_max_ms = 100;
    on.on_up = on_up;
    on.on_down = on_down;
    on.ud = &udn;
    rn = fg_redis_new(base, "127.0.0.1", priv.port, &on, NULL, 0);
    FG_CHECK(rn != NULL);
    run_for(400);
    FG_CHECK(!fg_redis_is_up(rn));
    FG_CHECK_INT(udn.up, 0);
    fg_redis_stats_get(rn, &st);
    FG_CHECK(st.connect_failures >= 2);
    fg_redis_free(rn);
    FG_CHECK_INT(sync_cmd(r0, &c, "CONFIG SET requirepass %s", ""), FG_OK);
    FG_CHECK_INT(c.outcome, FG_REDIS_REPLY);

    /* A host name, resolved off the loop. */
    {
        updown udh = {0, 0};
        fg_redis_opts oh = {0};
        rh = client_up("localhost", priv.port, &oh, &udh);
        FG_CHECK(rh && fg_redis_is_up(rh));
        if (rh) {
            FG_CHECK_INT(sync_cmd(rh, &c, "PING"), FG_OK);
            FG_CHECK_STR(c.str, "PONG");
            fg_redis_free(rh);
        }
    }

    /* The server closes an idle connection: down, then up again. */
    FG_CHECK_INT(sync_cmd(r1, &c, "QUIT"), FG_OK);
    RUN_UNTIL(ud1.down == 1, 2000);
    FG_CHECK_INT(ud1.down, 1);
    RUN_UNTIL(fg_redis_is_up(r1), 3000);
    FG_CHECK_INT(ud1.up, 2);
    FG_CHECK_INT(sync_cmd(r1, &c, "GET dbkey"), FG_OK);
    FG_CHECK_STR(c.str, "in-db2"); /* SELECT again after reconnecting */
    FG_CHECK_INT(sync_cmd(r1, &c, "DEL dbkey"), FG_OK);
out:
    fg_redis_free(r0);
    fg_redis_free(r1);
}

/* SIGSTOP: commands time out, down; no flapping while stopped; SIGCONT:
 * up again. */
static void test_sigstop(void)
{
    updown ud = {0, 0};
    fg_redis_opts o = {0};
    fg_redis_stats st;
    call t1 = {0}, t2 = {0}, x = {0}, c = {0};
    int64_t t0, took;
    fg_redis *r;
    o.command_timeout_ms = 300;
    o.connect_timeout_ms = 300;
    o.reconnect_min_ms = 50;
    o.reconnect_max_ms = 400;
    r = client_up("127.0.0.1", priv.port, &o, &ud);
    FG_CHECK(r && fg_redis_is_up(r));
    if (!r)
        return;
    FG_CHECK_INT(sync_cmd(r, &c, "SET stopkey 1"), FG_OK);
    FG_CHECK_INT(c.outcome, FG_REDIS_REPLY);

    kill(priv.pid, SIGSTOP);
    t0 = now_ms();
    FG_CHECK_INT(fg_redis_command(r, on_result, &t1, "INCR stopkey"), FG_OK);
    FG_CHECK_INT(fg_redis_command(r, on_result, &t2, "GET stopkey"), FG_OK);
    RUN_UNTIL(t1.calls > 0 && t2.calls > 0, 3000);
    took = t1.at_ms - t0;
    FG_CHECK_INT(t1.calls, 1);
    FG_CHECK_INT(t1.outcome, FG_REDIS_TIMEOUT);
    FG_CHECK_INT(t1.type, -1);
    FG_CHECK(took >= 290 && took <= 300 + 250);
    if (took < 290 || took > 550)
        fprintf(stderr, "timeout after %lld ms\n", (long long)took);
    FG_CHECK_INT(t2.calls, 1);
    FG_CHECK(t2.outcome == FG_REDIS_TIMEOUT ||
             t2.outcome == FG_REDIS_DISCONNECTED);
    FG_CHECK_INT(ud.down, 1);
    FG_CHECK(!fg_redis_is_up(r));
    fg_redis_stats_get(r, &st);
    FG_CHECK(st.timeouts >= 1);
    FG_CHECK_INT(st.disconnects, 1);
    FG_CHECK_INT(fg_redis_command(r, on_result, &x, "PING"), FG_AGAIN);

    /* TCP connects (the kernel accepts) but PING is not answered. */
    run_for(700);
    FG_CHECK(!fg_redis_is_up(r));
    FG_CHECK_INT(ud.up, 1);
    FG_CHECK_INT(ud.down, 1);
    fg_redis_stats_get(r, &st);
    FG_CHECK(st.connect_failures >= 1);

    kill(priv.pid, SIGCONT);
    RUN_UNTIL(fg_redis_is_up(r), 3000);
    FG_CHECK(fg_redis_is_up(r));
    FG_CHECK_INT(ud.up, 2);
    FG_CHECK_INT(ud.down, 1);
    FG_CHECK_INT(sync_cmd(r, &c, "PING"), FG_OK);
    FG_CHECK_STR(c.str, "PONG");
    FG_CHECK_INT(t1.calls, 1);
    FG_CHECK_INT(t2.calls, 1);
    FG_CHECK_INT(x.calls, 0);
    FG_CHECK_INT(sync_cmd(r, &c, "DEL stopkey"), FG_OK);
    fg_redis_free(r);
}

/* kill -9 with commands in flight, then a restart on the same port. */
static void test_kill_restart(void)
{
    updown ud = {0, 0};
    fg_redis_opts o = {0};
    fg_redis_stats st0, st1;
    call c = {0}, p[3], x = {0};
    int64_t t0, took;
    int ok;
    fg_redis *r;
    o.command_timeout_ms = 2000;
    o.connect_timeout_ms = 500;
    o.reconnect_min_ms = 100;
    o.reconnect_max_ms = 800;
    r = client_up("127.0.0.1", priv.port, &o, &ud);
    FG_CHECK(r && fg_redis_is_up(r));
    if (!r)
        return;
    FG_CHECK_INT(sync_cmd(r, &c, "SET killkey v"), FG_OK);

    /* Stopped first so that the commands are surely pending at the kill. */
    kill(priv.pid, SIGSTOP);
    memset(p, 0, sizeof(p));
    for (int i = 0; i < 3; i++)
        FG_CHECK_INT(fg_redis_command(r, on_result, &p[i], "GET killkey"),
                     FG_OK);
    run_for(50);
    t0 = now_ms();
    priv_kill();
    RUN_UNTIL(ud.down == 1 && p[2].calls > 0, 3000);
    FG_CHECK_INT(ud.down, 1);
    FG_CHECK(!fg_redis_is_up(r));
    ok = 1;
    for (int i = 0; i < 3; i++)
        ok &= p[i].calls == 1 && p[i].outcome == FG_REDIS_DISCONNECTED;
    FG_CHECK(ok);
    FG_CHECK(p[2].at_ms - t0 < 1000); /* the loss, not the timeout */

    t0 = now_ms();
    FG_CHECK_INT(fg_redis_command(r, on_result, &x, "PING"), FG_AGAIN);
    took = now_ms() - t0;
    FG_CHECK(took <= 20); /* no waiting: the command timeout is 2 s */
    FG_CHECK_INT(x.calls, 0);

    /* Backoff: 100, 200, 400 ms... a handful of attempts, not a spin. */
    fg_redis_stats_get(r, &st0);
    run_for(1000);
    fg_redis_stats_get(r, &st1);
    FG_CHECK(st1.connect_failures - st0.connect_failures >= 2);
    FG_CHECK(st1.connect_failures - st0.connect_failures <= 6);
    FG_CHECK(st1.retry_ms >= 400);
    FG_CHECK_INT(ud.up, 1);

    FG_CHECK_INT(priv_start(), 0);
    RUN_UNTIL(fg_redis_is_up(r), 5000);
    FG_CHECK(fg_redis_is_up(r));
    FG_CHECK_INT(ud.up, 2);
    FG_CHECK_INT(ud.down, 1);
    FG_CHECK_INT(sync_cmd(r, &c, "SET killkey again"), FG_OK);
    FG_CHECK_INT(sync_cmd(r, &c, "GET killkey"), FG_OK);
    FG_CHECK_STR(c.str, "again");
    FG_CHECK_INT(x.calls, 0);
    fg_redis_free(r);
}

static int parse_hostport(const char *s, char *host, size_t hostlen,
                          int *port)
{
    const char *colon = strrchr(s, ':');
    char *end;
    long v;
    if (!colon || colon == s || (size_t)(colon - s) >= hostlen)
        return -1;
    v = strtol(colon + 1, &end, 10);
    if (*end || v < 1 || v > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)v;
    return 0;
}

int main(void)
{
    const char *env = getenv("FG_TEST_REDIS");
    static const fg_test_fn shared_tests[] = {
        test_new_invalid, test_nothing_listening, test_basic,
        test_argv_binary, test_args, test_invalid_commands,
        test_max_inflight, test_free_pending};
    static const fg_test_fn private_tests[] = {test_scripts, test_handshake,
                                               test_sigstop,
                                               test_kill_restart};

    if (!env || parse_hostport(env, shared_host, sizeof(shared_host),
                               &shared_port) != 0) {
        fprintf(stderr,
                "test_fg_redis: FG_TEST_REDIS=host:port is %s: run "
                "tests/run, or start redis-server and export "
                "FG_TEST_REDIS=127.0.0.1:6379\n",
                env ? "malformed" : "not set");
        printf("0 passed, 1 failed\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    fg_log_init("test_fg_redis", FG_LOG_INFO);
    snprintf(prefix, sizeof(prefix), "fg_redis_test:%d:", (int)getpid());
    base = event_base_new();
    wake = base ? evtimer_new(base, on_wake, NULL) : NULL;
    if (!wake) {
        fprintf(stderr, "test_fg_redis: no event base\n");
        printf("0 passed, 1 failed\n");
        return 1;
    }

    for (size_t i = 0; i < sizeof(shared_tests) / sizeof(shared_tests[0]); i++)
        shared_tests[i]();

    snprintf(priv.dir, sizeof(priv.dir), "/tmp/fg_redis_test.XXXXXX");
    priv.port = free_port();
    if (!mkdtemp(priv.dir) || priv.port < 0) {
        fprintf(stderr, "test_fg_redis: cannot prepare a private redis\n");
        fg_test_failed++;
    } else {
        snprintf(priv.log, sizeof(priv.log), "%s/redis.log", priv.dir);
        if (priv_start() != 0) {
            fg_test_failed++;
        } else {
            for (size_t i = 0;
                 i < sizeof(private_tests) / sizeof(private_tests[0]); i++)
                private_tests[i]();
        }
        priv_kill();
        if (fg_test_failed == 0) {
            unlink(priv.log);
            rmdir(priv.dir);
        } else {
            fprintf(stderr, "private redis-server log kept in %s\n",
                    priv.log);
        }
    }

    event_free(wake);
    event_base_free(base);
    printf("%d passed, %d failed\n", fg_test_passed, fg_test_failed);
    return fg_test_failed ? 1 : 0;
}
