/* SPDX-License-Identifier: Apache-2.0 */
/* The Redis bridge: hiredis's async context on a libevent loop, wrapped in a
 * connection state machine (wait, resolve, connect, handshake, up) and in
 * command records that carry a deadline and guarantee one callback each,
 * plus the EVALSHA-then-EVAL path for Lua scripts. */
#include "fg_redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fg_log.h"

#define REDIS_HOST_MAX 255
#define REDIS_PASSWORD_MAX 512
#define REDIS_MAX_ADDRS 8
#define REDIS_COMMAND_CAP (1024u * 1024u * 1024u) /* Redis's query limit */

#define DEF_CONNECT_TIMEOUT_MS 2000
#define DEF_COMMAND_TIMEOUT_MS 2000
#define DEF_RECONNECT_MIN_MS 100
#define DEF_RECONNECT_MAX_MS 5000
#define DEF_MAX_INFLIGHT 10000
#define DEF_MAX_COMMAND_BYTES (16u * 1024u * 1024u)

typedef enum conn_state {
    ST_WAIT,      /* conn_ev is the delay before the next attempt */
    ST_RESOLVING, /* host name lookup on a helper thread */
    ST_CONNECTING,/* TCP connect in progress */
    ST_HANDSHAKE, /* AUTH / SELECT / PING sent, waiting for the PONG */
    ST_UP,        /* commands accepted */
    ST_CLOSED     /* fg_redis_free ran */
} conn_state;

/* One command from acceptance to its callback. The record is hiredis's
 * privdata: hiredis calls cmd_on_reply exactly once per record it holds,
 * with the reply or with NULL when the context is torn down. When the
 * connection ends, the records are completed (done) first, in conn_close,
 * and hiredis's later call only frees them: so the caller's callback never
 * depends on when hiredis gets around to it. */
typedef struct redis_cmd redis_cmd;
struct redis_cmd {
    redis_cmd *prev, *next; /* r->head .. r->tail, in deadline order */
    fg_redis *r;
    fg_redis_cb cb;
    void *ud;
    int64_t deadline_ms;
    int done;     /* called back; only hiredis's reference is left */
    int internal; /* a handshake step */
    /* EVALSHA awaiting its answer: the formatted command is kept so that
     * a NOSCRIPT answer can be resent as EVAL with the same arguments. */
    const fg_redis_script *script;
    char *buf;
    size_t len;
    size_t tail_off; /* where nkeys and the arguments start in buf */
    int nargs;
};

struct fg_redis_script {
    fg_redis_script *next;
    char sha[41];
    size_t len;
    char src[]; /* NUL-terminated */
};

/* A name lookup shared by the loop and a detached helper thread; whoever
 * drops the last reference frees it, so the loop can give up on a lookup
 * (timeout, free) while getaddrinfo is still running. */
typedef struct redis_dns {
    atomic_int refs;
    atomic_int ready; /* results written (release) */
    int fds[2];       /* the thread writes one byte when done */
    int rc;           /* getaddrinfo's */
    int n;
    char host[REDIS_HOST_MAX + 1];
    char addrs[REDIS_MAX_ADDRS][INET6_ADDRSTRLEN];
} redis_dns;

struct fg_redis {
    struct event_base *base;
    char host[REDIS_HOST_MAX + 1];
    char addr[REDIS_HOST_MAX + 16]; /* host:port for logs */
    int port;
    int numeric;
    char *password;
    int db;
    int connect_timeout_ms, command_timeout_ms;
    int reconnect_min_ms, reconnect_max_ms;
    unsigned max_inflight;
    size_t max_command_bytes;
    void (*on_up)(void *ud);
    void (*on_down)(void *ud);
    void *ud;

    conn_state state;
    redisAsyncContext *ac; /* ac->data == this while current */
    struct event *conn_ev; /* retry delay, or the deadline of a step */
    struct event *cmd_ev;  /* deadline of the oldest command */
    redis_dns *dns;
    struct event *dns_ev;
    /* Addresses of the current round: each is tried in turn, then the
     * round ends and the backoff applies. */
    char addrs[REDIS_MAX_ADDRS][INET6_ADDRSTRLEN];
    int naddrs, next_addr;
    char ip[INET6_ADDRSTRLEN]; /* address of the current attempt */
    int backoff_ms;     /* delay after the current round fails */
    unsigned attempts;  /* failed attempts since the last time up */
    int hs_failed;
    char conn_err[160]; /* why the current attempt failed, for the log */

    redis_cmd *head, *tail;
    unsigned ninflight; /* the caller's records among head..tail */

    fg_redis_script *scripts;
    fg_redis_stats stats;
    int depth;        /* nesting of entries from the loop */
    int closing;      /* fg_redis_free ran */
    int free_pending; /* release r when depth drops to 0 */
};

static void conn_close(fg_redis *r, fg_redis_outcome why, int hiredis_frees,
                       const char *reason);
static void cmd_on_reply(redisAsyncContext *ac, void *reply, void *privdata);

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void timer_arm(struct event *ev, int64_t ms)
{
    struct timeval tv;
    if (ms < 0)
        ms = 0;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    (void)evtimer_add(ev, &tv);
}

/* Entries from the loop (timers, hiredis callbacks, the lookup's pipe)
 * are bracketed so that fg_redis_free called from a nested callback only
 * releases r once the outermost entry returns. */
static void redis_enter(fg_redis *r)
{
    r->depth++;
}

static void redis_destroy(fg_redis *r);

static void redis_leave(fg_redis *r)
{
    r->depth--;
    if (r->depth == 0 && r->free_pending)
        redis_destroy(r);
}

/* ---- command records ---- */

static void cmd_link_tail(fg_redis *r, redis_cmd *c)
{
    c->next = NULL;
    c->prev = r->tail;
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    if (!c->internal)
        r->ninflight++;
}

static void cmd_unlink(fg_redis *r, redis_cmd *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        r->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        r->tail = c->prev;
    c->prev = c->next = NULL;
    if (!c->internal)
        r->ninflight--;
}

static void cmd_destroy(redis_cmd *c)
{
    free(c->buf);
    free(c);
}

static const char *outcome_err(fg_redis_outcome outcome,
                               const redisReply *reply)
{
    switch (outcome) {
    case FG_REDIS_REPLY: return "";
    case FG_REDIS_ERROR_REPLY: return reply && reply->str ? reply->str : "error";
    case FG_REDIS_TIMEOUT: return "command timed out";
    case FG_REDIS_DISCONNECTED: return "connection lost";
    case FG_REDIS_FREED: return "client freed";
    }
    return "unknown";
}

/* Unlinks c, marks it done and calls its callback: the one call. */
static void cmd_finish(fg_redis *r, redis_cmd *c, fg_redis_outcome outcome,
                       const redisReply *reply)
{
    fg_redis_result res;
    cmd_unlink(r, c);
    c->done = 1;
    c->script = NULL;
    free(c->buf);
    c->buf = NULL;
    if (outcome == FG_REDIS_TIMEOUT && !c->internal)
        r->stats.timeouts++;
    res.outcome = outcome;
    res.reply = reply;
    res.err = outcome_err(outcome, reply);
    if (c->cb)
        c->cb(c->ud, &res);
}

/* Hands buf (malloc'd, len bytes; always taken) to hiredis with a new
 * record. script, tail_off, nargs: for EVALSHA (buf is then kept). */
static fg_status cmd_submit(fg_redis *r, fg_redis_cb cb, void *ud, char *buf,
                            size_t len, int internal,
                            const fg_redis_script *script, size_t tail_off,
                            int nargs)
{
    fg_status st = FG_OK;
    redis_cmd *c = calloc(1, sizeof(*c));
    if (!c) {
        st = FG_ENOMEM;
        goto done;
    }
    c->r = r;
    c->cb = cb;
    c->ud = ud;
    c->internal = internal;
    if (redisAsyncFormattedCommand(r->ac, cmd_on_reply, c, buf, len) !=
        REDIS_OK) {
        free(c);
        st = FG_AGAIN;
        goto done;
    }
    c->deadline_ms = mono_ms() + r->command_timeout_ms;
    cmd_link_tail(r, c);
    if (!evtimer_pending(r->cmd_ev, NULL))
        timer_arm(r->cmd_ev, r->command_timeout_ms);
    if (script) {
        c->script = script;
        c->buf = buf;
        c->len = len;
        c->tail_off = tail_off;
        c->nargs = nargs;
        buf = NULL;
    }
done:
    if (st == FG_AGAIN && !internal)
        r->stats.rejected++;
    free(buf);
    return st;
}

/* Fail fast: refuses while not up or at the in-flight bound. */
static fg_status cmd_admit(fg_redis *r)
{
    if (r->state != ST_UP || r->ninflight >= r->max_inflight) {
        r->stats.rejected++;
        return FG_AGAIN;
    }
    return FG_OK;
}

/* Commands that would turn the connection into a push stream, which
 * breaks one-reply-per-command (and hiredis asserts on stray pushes). */
static int cmd_refused(const char *name, size_t n)
{
    static const char *const names[] = {
        "subscribe",   "psubscribe",   "ssubscribe", "unsubscribe",
        "punsubscribe", "sunsubscribe", "monitor"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i]) == n && strncasecmp(name, names[i], n) == 0)
            return 1;
    }
    return 0;
}

/* ---- RESP formatting ---- */

static size_t dec_len(size_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

static char *put_dec(char *p, size_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_bulk(char *p, const char *s, size_t n)
{
    *p++ = '$';
    p = put_dec(p, n);
    *p++ = '\r';
    *p++ = '\n';
    if (n)
        memcpy(p, s, n);
    p += n;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

static fg_status arg_len(const char **argv, const size_t *argvlen, int i,
                         size_t *n)
{
    if (argvlen) {
        if (!argv[i] && argvlen[i])
            return FG_EINVAL;
        *n = argvlen[i];
    } else {
        if (!argv[i])
            return FG_EINVAL;
        *n = strlen(argv[i]);
    }
    return FG_OK;
}

/* Formats npre fixed arguments (pre, prelen) then argc caller arguments as
 * one RESP array into a malloc'd *out of *outlen bytes, at most cap.
 * offs[i] (when offs is not NULL) is the offset just past pre argument i. */
static fg_status resp_format(size_t cap, int npre, const char *const *pre,
                             const size_t *prelen, int argc,
                             const char **argv, const size_t *argvlen,
                             char **out, size_t *outlen, size_t *offs)
{
    size_t total, n;
    char *buf, *p;
    fg_status st;
    if (argc < 0 || argc > INT_MAX - npre || npre + argc == 0 ||
        (argc > 0 && !argv))
        return FG_EINVAL;
    total = 1 + dec_len((size_t)(npre + argc)) + 2;
    for (int i = 0; i < npre + argc; i++) {
        if (i < npre) {
            n = prelen[i];
        } else {
            st = arg_len(argv, argvlen, i - npre, &n);
            if (st != FG_OK)
                return st;
        }
        /* cap <= 1 GiB, so none of these sums can overflow. */
        if (n > cap)
            return FG_ETOOBIG;
        total += 1 + dec_len(n) + 2 + n + 2;
        if (total > cap)
            return FG_ETOOBIG;
    }
    buf = malloc(total);
    if (!buf)
        return FG_ENOMEM;
    p = buf;
    *p++ = '*';
    p = put_dec(p, (size_t)(npre + argc));
    *p++ = '\r';
    *p++ = '\n';
    for (int i = 0; i < npre; i++) {
        p = put_bulk(p, pre[i], prelen[i]);
        if (offs)
            offs[i] = (size_t)(p - buf);
    }
    for (int i = 0; i < argc; i++) {
        (void)arg_len(argv, argvlen, i, &n);
        p = put_bulk(p, argv[i], n);
    }
    *out = buf;
    *outlen = (size_t)(p - buf);
    return FG_OK;
}

/* The first argument (the command name) of a formatted command. */
static int resp_first(const char *buf, size_t len, const char **name,
                      size_t *n)
{
    const char *p = buf, *end = buf + len;
    char *stop;
    unsigned long v;
    if (len < 4 || p[0] != '*')
        return -1;
    v = strtoul(p + 1, &stop, 10);
    if (v == 0 || stop + 2 > end || stop[0] != '\r')
        return -1;
    p = stop + 2;
    if (p >= end || p[0] != '$')
        return -1;
    v = strtoul(p + 1, &stop, 10);
    if (stop + 2 > end || stop[0] != '\r' || v > (size_t)(end - stop - 2))
        return -1;
    *name = stop + 2;
    *n = v;
    return 0;
}

/* ---- name resolution ---- */

static void dns_release(redis_dns *d)
{
    if (atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) == 1) {
        close(d->fds[0]);
        close(d->fds[1]);
        free(d);
    }
}

static void *dns_thread(void *arg)
{
    redis_dns *d = arg;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    /* No AI_ADDRCONFIG: it drops "localhost" on hosts with only a
     * loopback interface; unusable addresses just fail in turn. */
    hints.ai_socktype = SOCK_STREAM;
    d->rc = getaddrinfo(d->host, NULL, &hints, &res);
    for (struct addrinfo *ai = res; ai && d->n < REDIS_MAX_ADDRS;
         ai = ai->ai_next) {
        const void *src = NULL;
        if (ai->ai_family == AF_INET)
            src = &((const struct sockaddr_in *)ai->ai_addr)->sin_addr;
        else if (ai->ai_family == AF_INET6)
            src = &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        if (src && inet_ntop(ai->ai_family, src, d->addrs[d->n],
                             sizeof(d->addrs[0])))
            d->n++;
    }
    if (res)
        freeaddrinfo(res);
    atomic_store_explicit(&d->ready, 1, memory_order_release);
    /* One byte into an empty pipe cannot block or fail short. */
    if (write(d->fds[1], "r", 1) < 0) {
        /* nothing to do: the loop's deadline ends the attempt */
    }
    dns_release(d);
    return NULL;
}

static void dns_abandon(fg_redis *r)
{
    if (r->dns_ev) {
        event_free(r->dns_ev);
        r->dns_ev = NULL;
    }
    if (r->dns) {
        dns_release(r->dns);
        r->dns = NULL;
    }
}

static void conn_connect(fg_redis *r);

static void dns_on_done(evutil_socket_t fd, short what, void *arg)
{
    fg_redis *r = arg;
    redis_dns *d = r->dns;
    char err[160];
    (void)fd;
    (void)what;
    redis_enter(r);
    err[0] = '\0';
    if (!atomic_load_explicit(&d->ready, memory_order_acquire))
        snprintf(err, sizeof(err), "name resolution failed");
    else if (d->rc != 0)
        snprintf(err, sizeof(err), "resolve: %s", gai_strerror(d->rc));
    else if (d->n == 0)
        snprintf(err, sizeof(err), "resolve: no address");
    else {
        memcpy(r->addrs, d->addrs, sizeof(r->addrs));
        r->naddrs = d->n;
        r->next_addr = 0;
    }
    dns_abandon(r);
    if (err[0])
        conn_close(r, FG_REDIS_DISCONNECTED, 0, err);
    else
        conn_connect(r);
    redis_leave(r);
}

/* Starts a lookup of r->host on a detached thread; results come back
 * through a pipe watched by the loop. */
static void dns_start(fg_redis *r)
{
    redis_dns *d = calloc(1, sizeof(*d));
    const char *err = NULL;
    pthread_attr_t attr;
    pthread_t tid;
    sigset_t all, old;
    int rc;
    r->ip[0] = '\0';
    if (!d) {
        err = "out of memory";
        goto fail;
    }
    d->fds[0] = d->fds[1] = -1;
    atomic_init(&d->refs, 1);
    atomic_init(&d->ready, 0);
    snprintf(d->host, sizeof(d->host), "%s", r->host);
    r->dns = d; /* dns_abandon releases it from here on */
    if (pipe2(d->fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        err = "pipe failed";
        goto fail;
    }
    r->dns_ev = event_new(r->base, d->fds[0], EV_READ, dns_on_done, r);
    if (!r->dns_ev || event_add(r->dns_ev, NULL) != 0) {
        err = "cannot watch the lookup";
        goto fail;
    }
    atomic_fetch_add_explicit(&d->refs, 1, memory_order_relaxed);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* The helper must not take the process's signals. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&tid, &attr, dns_thread, d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_fetch_sub_explicit(&d->refs, 1, memory_order_relaxed);
        err = "cannot start the lookup";
        goto fail;
    }
    r->state = ST_RESOLVING;
    timer_arm(r->conn_ev, r->connect_timeout_ms);
    return;
fail:
    conn_close(r, FG_REDIS_DISCONNECTED, 0, err); /* a failed attempt */
}

/* ---- connection ---- */

/* After a failed attempt or a lost connection: the next address of the
 * round right away, else the backoff delay (which then doubles). */
static void retry_schedule(fg_redis *r, int was_up, const char *reason)
{
    char qerr[256];
    const char *ip = r->ip[0] ? r->ip : "-";
    int delay;
    if (!was_up && r->next_addr < r->naddrs) {
        delay = 0;
    } else {
        delay = r->backoff_ms;
        r->backoff_ms = r->backoff_ms > r->reconnect_max_ms / 2
                            ? r->reconnect_max_ms
                            : r->backoff_ms * 2;
    }
    fg_log_quote(reason, qerr, sizeof(qerr));
    if (was_up)
        fg_log_warn("redis_down", "addr=%s ip=%s err=%s retry_ms=%d",
                    r->addr, ip, qerr, delay);
    else
        fg_log_warn("redis_connect_failed",
                    "addr=%s ip=%s err=%s attempt=%u retry_ms=%d", r->addr,
                    ip, qerr, r->attempts, delay);
    if (delay > 0) {
        r->naddrs = 0;
        r->next_addr = 0;
    }
    r->state = ST_WAIT;
    r->stats.retry_ms = delay;
    timer_arm(r->conn_ev, delay);
}

/* Ends the current attempt or connection: retry (or closed), on_down when
 * it was up, then every pending command is called back with why (a
 * command still within its deadline gets FG_REDIS_DISCONNECTED instead of
 * FG_REDIS_TIMEOUT), then hiredis's context is freed unless hiredis is
 * already freeing it (hiredis_frees). Safe against callbacks re-entering
 * r, including fg_redis_free. */
static void conn_close(fg_redis *r, fg_redis_outcome why, int hiredis_frees,
                       const char *reason)
{
    redisAsyncContext *ac = r->ac;
    int was_up = r->state == ST_UP;
    int64_t now = mono_ms();
    redis_cmd *c;

    r->ac = NULL;
    if (ac)
        ac->data = NULL; /* its connect/disconnect callbacks now ignore it */
    dns_abandon(r);
    evtimer_del(r->cmd_ev);
    evtimer_del(r->conn_ev);
    r->hs_failed = 0;
    if (r->closing) {
        r->state = ST_CLOSED;
    } else if (was_up) {
        r->stats.disconnects++;
        retry_schedule(r, 1, reason);
    } else {
        r->stats.connect_failures++;
        r->attempts++;
        retry_schedule(r, 0, reason);
    }
    if (was_up && !r->closing && r->on_down)
        r->on_down(r->ud);
    while ((c = r->head) != NULL) {
        fg_redis_outcome o = why;
        if (o == FG_REDIS_TIMEOUT && c->deadline_ms > now)
            o = FG_REDIS_DISCONNECTED;
        cmd_finish(r, c, o, NULL);
    }
    /* Inside a hiredis callback this only flags the context, and hiredis
     * frees it when the callback returns; the records it still holds are
     * done, so cmd_on_reply just frees them. */
    if (ac && !hiredis_frees)
        redisAsyncFree(ac);
}

static void conn_up(fg_redis *r)
{
    r->state = ST_UP;
    evtimer_del(r->conn_ev);
    r->backoff_ms = r->reconnect_min_ms;
    r->attempts = 0;
    r->stats.connects++;
    r->stats.retry_ms = 0;
    fg_log_info("redis_up", "addr=%s ip=%s db=%d", r->addr, r->ip, r->db);
    /* The next round resolves the name again. */
    r->naddrs = 0;
    r->next_addr = 0;
    if (r->on_up)
        r->on_up(r->ud);
}

/* AUTH and SELECT answers: remember the first error for hs_done. */
static void hs_step(void *ud, const fg_redis_result *res)
{
    fg_redis *r = ud;
    if (res->outcome == FG_REDIS_ERROR_REPLY && !r->hs_failed) {
        r->hs_failed = 1;
        snprintf(r->conn_err, sizeof(r->conn_err), "handshake: %s",
                 res->err);
    }
}

/* The PING answer ends the handshake. Outcomes without an answer mean the
 * attempt is already being closed. */
static void hs_done(void *ud, const fg_redis_result *res)
{
    fg_redis *r = ud;
    if (res->outcome != FG_REDIS_REPLY && res->outcome != FG_REDIS_ERROR_REPLY)
        return;
    if (res->outcome == FG_REDIS_ERROR_REPLY && !r->hs_failed) {
        r->hs_failed = 1;
        snprintf(r->conn_err, sizeof(r->conn_err), "handshake: %s",
                 res->err);
    }
    if (r->hs_failed)
        conn_close(r, FG_REDIS_DISCONNECTED, 0, r->conn_err);
    else
        conn_up(r);
}

static fg_status hs_send(fg_redis *r, fg_redis_cb cb, int argc,
                         const char **argv)
{
    char *buf = NULL;
    size_t len = 0;
    fg_status st = resp_format(REDIS_COMMAND_CAP, 0, NULL, NULL, argc, argv,
                               NULL, &buf, &len, NULL);
    if (st != FG_OK)
        return st;
    return cmd_submit(r, cb, r, buf, len, 1, NULL, 0, 0);
}

static fg_status handshake_start(fg_redis *r)
{
    fg_status st = FG_OK;
    char db[16];
    r->state = ST_HANDSHAKE;
    r->hs_failed = 0;
    if (r->password) {
        const char *argv[] = {"AUTH", r->password};
        st = hs_send(r, hs_step, 2, argv);
    }
    if (st == FG_OK && r->db > 0) {
        const char *argv[] = {"SELECT", db};
        snprintf(db, sizeof(db), "%d", r->db);
        st = hs_send(r, hs_step, 2, argv);
    }
    if (st == FG_OK) {
        const char *argv[] = {"PING"};
        st = hs_send(r, hs_done, 1, argv);
    }
    return st;
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    fg_redis *r = ac->data;
    if (!r)
        return;
    redis_enter(r);
    if (status != REDIS_OK) {
        /* hiredis frees ac when this returns. */
        conn_close(r, FG_REDIS_DISCONNECTED, 1,
                   ac->c.errstr[0] ? ac->c.errstr : "connect failed");
    } else if (handshake_start(r) != FG_OK) {
        /* ac must not be freed inside its connect callback (hiredis uses
         * it afterwards): let the attempt's deadline fire now. */
        snprintf(r->conn_err, sizeof(r->conn_err), "cannot send handshake");
        event_active(r->conn_ev, EV_TIMEOUT, 0);
    }
    redis_leave(r);
}

/* Called by hiredis while it frees a context that was connected. When it
 * is still r's current one, the server closed it or an I/O error ended it
 * with no command pending (pending ones are seen first, in cmd_on_reply). */
static void on_disconnect(const redisAsyncContext *cac, int status)
{
    fg_redis *r = cac->data;
    (void)status;
    if (!r)
        return;
    redis_enter(r);
    conn_close(r, FG_REDIS_DISCONNECTED, 1,
               cac->c.errstr[0] ? cac->c.errstr : "connection closed");
    redis_leave(r);
}

/* Connects to the next address of the round. */
static void conn_connect(fg_redis *r)
{
    const char *ip = r->addrs[r->next_addr++];
    redisAsyncContext *ac;
    char err[160];
    r->conn_err[0] = '\0';
    snprintf(r->ip, sizeof(r->ip), "%s", ip);
    ac = redisAsyncConnect(ip, r->port);
    if (!ac) {
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    if (ac->err || redisEnableKeepAlive(&ac->c) != REDIS_OK ||
        redisLibeventAttach(ac, r->base) != REDIS_OK) {
        snprintf(err, sizeof(err), "%s",
                 ac->c.errstr[0] ? ac->c.errstr : "connect failed");
        redisAsyncFree(ac);
        goto fail;
    }
    ac->data = r;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = ST_CONNECTING;
    timer_arm(r->conn_ev, r->connect_timeout_ms);
    return;
fail:
    conn_close(r, FG_REDIS_DISCONNECTED, 0, err); /* a failed attempt */
}

static void conn_start(fg_redis *r)
{
    if (r->next_addr >= r->naddrs) {
        r->naddrs = 0;
        r->next_addr = 0;
        if (!r->numeric) {
            dns_start(r);
            return;
        }
        /* inet_pton accepted it: at most 45 bytes, checked in new */
        memcpy(r->addrs[0], r->host, strlen(r->host) + 1);
        r->naddrs = 1;
    }
    conn_connect(r);
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    fg_redis *r = arg;
    (void)fd;
    (void)what;
    redis_enter(r);
    switch (r->state) {
    case ST_WAIT:
        conn_start(r);
        break;
    case ST_RESOLVING:
        conn_close(r, FG_REDIS_DISCONNECTED, 0, "name resolution timed out");
        break;
    case ST_CONNECTING:
    case ST_HANDSHAKE:
        conn_close(r, FG_REDIS_DISCONNECTED, 0,
                   r->conn_err[0] ? r->conn_err : "connect timed out");
        break;
    case ST_UP:
    case ST_CLOSED:
        break;
    }
    redis_leave(r);
}

static void cmd_on_timer(evutil_socket_t fd, short what, void *arg)
{
    fg_redis *r = arg;
    redis_cmd *c = r->head;
    int64_t now = mono_ms();
    (void)fd;
    (void)what;
    if (!c)
        return;
    if (c->deadline_ms > now) {
        timer_arm(r->cmd_ev, c->deadline_ms - now);
        return;
    }
    redis_enter(r);
    conn_close(r, FG_REDIS_TIMEOUT, 0, "command timed out");
    redis_leave(r);
}

/* NOSCRIPT: resend c as EVAL with the source, same arguments, same
 * record (so still one callback), with a fresh deadline. If that cannot
 * be done the caller gets the NOSCRIPT answer. */
static void script_resend(fg_redis *r, redis_cmd *c, const redisReply *reply)
{
    const fg_redis_script *s = c->script;
    size_t tail = c->len - c->tail_off;
    char head[64];
    int hn = snprintf(head, sizeof(head), "*%d\r\n$4\r\nEVAL\r\n$%zu\r\n",
                      c->nargs, s->len);
    size_t len = (size_t)hn + s->len + 2 + tail;
    char *buf = malloc(len);
    char *p = buf;
    if (!buf)
        goto fail;
    memcpy(p, head, (size_t)hn);
    p += hn;
    memcpy(p, s->src, s->len);
    p += s->len;
    memcpy(p, "\r\n", 2);
    p += 2;
    memcpy(p, c->buf + c->tail_off, tail);
    if (redisAsyncFormattedCommand(r->ac, cmd_on_reply, c, buf, len) !=
        REDIS_OK)
        goto fail;
    free(buf);
    r->stats.script_fallbacks++;
    c->script = NULL; /* once */
    free(c->buf);
    c->buf = NULL;
    cmd_unlink(r, c);
    c->deadline_ms = mono_ms() + r->command_timeout_ms;
    cmd_link_tail(r, c);
    if (!evtimer_pending(r->cmd_ev, NULL))
        timer_arm(r->cmd_ev, r->command_timeout_ms);
    return;
fail:
    free(buf);
    cmd_finish(r, c, FG_REDIS_ERROR_REPLY, reply);
}

static int is_noscript(const redisReply *reply)
{
    return reply->type == REDIS_REPLY_ERROR && reply->str &&
           reply->len >= 8 && strncmp(reply->str, "NOSCRIPT", 8) == 0;
}

/* hiredis's callback for every record, exactly once per hand-over. */
static void cmd_on_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    redis_cmd *c = privdata;
    redisReply *reply = reply_;
    fg_redis *r;
    if (c->done) {
        cmd_destroy(c);
        return;
    }
    r = c->r;
    redis_enter(r);
    if (!reply) {
        /* hiredis tears the connection down on its own (EOF, I/O or
         * protocol error): the first NULL answer closes it for all. */
        conn_close(r, FG_REDIS_DISCONNECTED, 1,
                   ac->c.errstr[0] ? ac->c.errstr : "connection lost");
    } else if (c->script && is_noscript(reply)) {
        script_resend(r, c, reply);
    } else {
        cmd_finish(r, c,
                   reply->type == REDIS_REPLY_ERROR ? FG_REDIS_ERROR_REPLY
                                                    : FG_REDIS_REPLY,
                   reply);
    }
    if (c->done)
        cmd_destroy(c);
    redis_leave(r);
}

/* ---- public API ---- */

fg_redis *fg_redis_new(struct event_base *base, const char *host, int port,
                       const fg_redis_opts *opts, char *errbuf, size_t errlen)
{
    fg_redis_opts o;
    fg_redis *r = NULL;
    unsigned char in6[sizeof(struct in6_addr)];
    size_t hlen;

    memset(&o, 0, sizeof(o));
    if (opts)
        o = *opts;
    if (!base || !host) {
        fg_errf(errbuf, errlen, "redis: base and host are required");
        goto fail;
    }
    hlen = strnlen(host, REDIS_HOST_MAX + 1);
    if (hlen == 0 || hlen > REDIS_HOST_MAX) {
        fg_errf(errbuf, errlen, "redis: host must be 1 to %d bytes",
                REDIS_HOST_MAX);
        goto fail;
    }
    if (port < 1 || port > 65535) {
        fg_errf(errbuf, errlen, "redis: port %d out of range", port);
        goto fail;
    }
    if (o.connect_timeout_ms < 0 || o.command_timeout_ms < 0 ||
        o.reconnect_min_ms < 0 || o.reconnect_max_ms < 0 ||
        o.max_inflight < 0 || o.db < 0) {
        fg_errf(errbuf, errlen, "redis: negative option");
        goto fail;
    }
    if (o.max_command_bytes > REDIS_COMMAND_CAP) {
        fg_errf(errbuf, errlen, "redis: max_command_bytes over %u",
                REDIS_COMMAND_CAP);
        goto fail;
    }
    if (o.password && strnlen(o.password, REDIS_PASSWORD_MAX + 1) >
                          REDIS_PASSWORD_MAX) {
        fg_errf(errbuf, errlen, "redis: password over %d bytes",
                REDIS_PASSWORD_MAX);
        goto fail;
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        fg_errf(errbuf, errlen, "out of memory");
        goto fail;
    }
    r->base = base;
    memcpy(r->host, host, hlen);
    r->port = port;
    r->numeric = (inet_pton(AF_INET, host, in6) == 1 ||
                  inet_pton(AF_INET6, host, in6) == 1) &&
                 hlen < sizeof(r->addrs[0]);
    snprintf(r->addr, sizeof(r->addr), strchr(host, ':') ? "[%s]:%d" : "%s:%d",
             r->host, port);
    r->connect_timeout_ms =
        o.connect_timeout_ms ? o.connect_timeout_ms : DEF_CONNECT_TIMEOUT_MS;
    r->command_timeout_ms =
        o.command_timeout_ms ? o.command_timeout_ms : DEF_COMMAND_TIMEOUT_MS;
    r->reconnect_min_ms =
        o.reconnect_min_ms ? o.reconnect_min_ms : DEF_RECONNECT_MIN_MS;
    r->reconnect_max_ms =
        o.reconnect_max_ms ? o.reconnect_max_ms : DEF_RECONNECT_MAX_MS;
    if (r->reconnect_max_ms < r->reconnect_min_ms) {
        fg_errf(errbuf, errlen,
                "redis: reconnect_max_ms %d below reconnect_min_ms %d",
                r->reconnect_max_ms, r->reconnect_min_ms);
        goto fail;
    }
    r->max_inflight =
        (unsigned)(o.max_inflight ? o.max_inflight : DEF_MAX_INFLIGHT);
    r->max_command_bytes =
        o.max_command_bytes ? o.max_command_bytes : DEF_MAX_COMMAND_BYTES;
    r->db = o.db;
    r->on_up = o.on_up;
    r->on_down = o.on_down;
    r->ud = o.ud;
    r->backoff_ms = r->reconnect_min_ms;
    if (o.password && o.password[0]) {
        r->password = strdup(o.password);
        if (!r->password) {
            fg_errf(errbuf, errlen, "out of memory");
            goto fail;
        }
    }
    r->conn_ev = evtimer_new(base, conn_on_timer, r);
    r->cmd_ev = evtimer_new(base, cmd_on_timer, r);
    if (!r->conn_ev || !r->cmd_ev) {
        fg_errf(errbuf, errlen, "redis: cannot create timers");
        goto fail;
    }
    /* The first attempt runs on the loop, never inside this call. */
    r->state = ST_WAIT;
    timer_arm(r->conn_ev, 0);
    return r;
fail:
    if (r)
        redis_destroy(r);
    return NULL;
}

static void redis_destroy(fg_redis *r)
{
    dns_abandon(r);
    if (r->conn_ev)
        event_free(r->conn_ev);
    if (r->cmd_ev)
        event_free(r->cmd_ev);
    while (r->scripts) {
        fg_redis_script *s = r->scripts;
        r->scripts = s->next;
        free(s);
    }
    if (r->password) {
        explicit_bzero(r->password, strlen(r->password));
        free(r->password);
    }
    free(r);
}

void fg_redis_free(fg_redis *r)
{
    if (!r || r->closing)
        return;
    redis_enter(r);
    r->closing = 1;
    conn_close(r, FG_REDIS_FREED, 0, "freed");
    r->free_pending = 1;
    redis_leave(r);
}

int fg_redis_is_up(const fg_redis *r)
{
    return r && r->state == ST_UP;
}

fg_status fg_redis_vcommand(fg_redis *r, fg_redis_cb cb, void *ud,
                            const char *fmt, va_list ap)
{
    char *buf = NULL;
    const char *name;
    size_t n;
    int len;
    fg_status st;
    if (!r || !fmt)
        return FG_EINVAL;
    st = cmd_admit(r);
    if (st != FG_OK)
        return st;
    len = redisvFormatCommand(&buf, fmt, ap);
    if (len == -1)
        return FG_ENOMEM;
    if (len < 0)
        return FG_EINVAL;
    if (resp_first(buf, (size_t)len, &name, &n) != 0 || cmd_refused(name, n)) {
        free(buf);
        return FG_EINVAL;
    }
    if ((size_t)len > r->max_command_bytes) {
        free(buf);
        return FG_ETOOBIG;
    }
    return cmd_submit(r, cb, ud, buf, (size_t)len, 0, NULL, 0, 0);
}

fg_status fg_redis_command(fg_redis *r, fg_redis_cb cb, void *ud,
                           const char *fmt, ...)
{
    va_list ap;
    fg_status st;
    va_start(ap, fmt);
    st = fg_redis_vcommand(r, cb, ud, fmt, ap);
    va_end(ap);
    return st;
}

fg_status fg_redis_commandv(fg_redis *r, fg_redis_cb cb, void *ud, int argc,
                            const char **argv, const size_t *argvlen)
{
    char *buf = NULL;
    size_t len = 0, n0;
    fg_status st;
    if (!r || argc <= 0 || !argv)
        return FG_EINVAL;
    if (arg_len(argv, argvlen, 0, &n0) != FG_OK || cmd_refused(argv[0], n0))
        return FG_EINVAL;
    st = cmd_admit(r);
    if (st != FG_OK)
        return st;
    st = resp_format(r->max_command_bytes, 0, NULL, NULL, argc, argv, argvlen,
                     &buf, &len, NULL);
    if (st != FG_OK)
        return st;
    return cmd_submit(r, cb, ud, buf, len, 0, NULL, 0, 0);
}

fg_redis_script *fg_redis_script_new(fg_redis *r, const char *lua_source)
{
    fg_redis_script *s;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t len;
    static const char hex[] = "0123456789abcdef";
    if (!r || !lua_source)
        return NULL;
    len = strnlen(lua_source, (size_t)FG_REDIS_SCRIPT_MAX + 1);
    if (len > FG_REDIS_SCRIPT_MAX)
        return NULL;
    s = malloc(sizeof(*s) + len + 1);
    if (!s)
        return NULL;
    if (EVP_Digest(lua_source, len, md, &mdlen, EVP_sha1(), NULL) != 1 ||
        mdlen != 20) {
        free(s);
        return NULL;
    }
    for (unsigned i = 0; i < 20; i++) {
        s->sha[2 * i] = hex[md[i] >> 4];
        s->sha[2 * i + 1] = hex[md[i] & 15];
    }
    s->sha[40] = '\0';
    s->len = len;
    memcpy(s->src, lua_source, len + 1);
    s->next = r->scripts;
    r->scripts = s;
    return s;
}

const char *fg_redis_script_sha(const fg_redis_script *script)
{
    return script ? script->sha : "";
}

fg_status fg_redis_script_eval(fg_redis *r, const fg_redis_script *script,
                               fg_redis_cb cb, void *ud, int nkeys, int argc,
                               const char **argv, const size_t *argvlen)
{
    char nk[16];
    const char *pre[3];
    size_t prelen[3], offs[3];
    char *buf = NULL;
    size_t len = 0;
    fg_status st;
    if (!r || !script || argc < 0 || nkeys < 0 || nkeys > argc ||
        (argc > 0 && !argv) || argc > INT_MAX - 3)
        return FG_EINVAL;
    st = cmd_admit(r);
    if (st != FG_OK)
        return st;
    snprintf(nk, sizeof(nk), "%d", nkeys);
    pre[0] = "EVALSHA";
    prelen[0] = 7;
    pre[1] = script->sha;
    prelen[1] = 40;
    pre[2] = nk;
    prelen[2] = strlen(nk);
    st = resp_format(r->max_command_bytes, 3, pre, prelen, argc, argv,
                     argvlen, &buf, &len, offs);
    if (st != FG_OK)
        return st;
    return cmd_submit(r, cb, ud, buf, len, 0, script, offs[1], 3 + argc);
}

/* ---- argument vectors ---- */

/* A free slot at a->n, or -1 (then a has failed). */
static int args_slot(fg_redis_args *a)
{
    if (a->failed)
        return -1;
    if (a->n < a->cap)
        return 0;
    int cap = a->cap ? a->cap * 2 : 32;
    const char **argv = realloc(a->argv, (size_t)cap * sizeof(*argv));
    if (argv)
        a->argv = argv;
    size_t *lens = argv ? realloc(a->lens, (size_t)cap * sizeof(*lens)) : NULL;
    if (lens)
        a->lens = lens;
    size_t *offs = lens ? realloc(a->offs, (size_t)cap * sizeof(*offs)) : NULL;
    if (!offs) {
        a->failed = 1;
        return -1;
    }
    a->offs = offs;
    a->cap = cap;
    return 0;
}

void fg_redis_args_add(fg_redis_args *a, const void *p, size_t len)
{
    if (args_slot(a) != 0)
        return;
    if (len > a->bcap - a->len) {
        size_t cap = a->bcap ? a->bcap : 1024;
        while (len > cap - a->len) {
            if (cap > SIZE_MAX / 2) {
                a->failed = 1;
                return;
            }
            cap *= 2;
        }
        char *buf = realloc(a->buf, cap);
        if (!buf) {
            a->failed = 1;
            return;
        }
        a->buf = buf;
        a->bcap = cap;
    }
    if (len)
        memcpy(a->buf + a->len, p, len);
    /* An offset, not a pointer: buf may still move. */
    a->argv[a->n] = NULL;
    a->lens[a->n] = len;
    a->offs[a->n] = a->len;
    a->len += len;
    a->n++;
}

void fg_redis_args_str(fg_redis_args *a, const char *s)
{
    fg_redis_args_add(a, s, strlen(s));
}

void fg_redis_args_fmt(fg_redis_args *a, const char *fmt, ...)
{
    char tmp[FG_REDIS_ARG_FMT_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        a->failed = 1;
        return;
    }
    fg_redis_args_add(a, tmp, (size_t)n);
}

void fg_redis_args_ref(fg_redis_args *a, const void *p, size_t len)
{
    if (args_slot(a) != 0)
        return;
    a->argv[a->n] = p;
    a->lens[a->n] = len;
    a->offs[a->n] = SIZE_MAX;
    a->n++;
}

void fg_redis_args_fail(fg_redis_args *a)
{
    a->failed = 1;
}

/* Points argv at the copied arguments. -1 when a step failed. */
static int args_resolve(fg_redis_args *a)
{
    if (a->failed)
        return -1;
    for (int i = 0; i < a->n; i++)
        if (a->offs[i] != SIZE_MAX)
            a->argv[i] = a->buf + a->offs[i];
    return 0;
}

fg_status fg_redis_args_command(fg_redis *r, fg_redis_cb cb, void *ud,
                                fg_redis_args *a)
{
    if (args_resolve(a) != 0)
        return FG_ENOMEM;
    return fg_redis_commandv(r, cb, ud, a->n, a->argv, a->lens);
}

fg_status fg_redis_args_eval(fg_redis *r, const fg_redis_script *script,
                             fg_redis_cb cb, void *ud, int nkeys,
                             fg_redis_args *a)
{
    if (args_resolve(a) != 0)
        return FG_ENOMEM;
    return fg_redis_script_eval(r, script, cb, ud, nkeys, a->n, a->argv,
                                a->lens);
}

void fg_redis_args_free(fg_redis_args *a)
{
    if (!a)
        return;
    free(a->argv);
    free(a->lens);
    free(a->offs);
    free(a->buf);
    memset(a, 0, sizeof(*a));
}

void fg_redis_stats_get(const fg_redis *r, fg_redis_stats *st)
{
    if (!st)
        return;
    if (!r) {
        memset(st, 0, sizeof(*st));
        return;
    }
    *st = r->stats;
    st->inflight = r->ninflight;
}

const char *fg_redis_outcome_str(fg_redis_outcome outcome)
{
    switch (outcome) {
    case FG_REDIS_REPLY: return "reply";
    case FG_REDIS_ERROR_REPLY: return "error_reply";
    case FG_REDIS_TIMEOUT: return "timeout";
    case FG_REDIS_DISCONNECTED: return "disconnected";
    case FG_REDIS_FREED: return "freed";
    }
    return "unknown";
}
