/* SPDX-License-Identifier: Apache-2.0 */
/* One Redis connection driven by a libevent loop (hiredis async and its
 * libevent adapter): it connects and reconnects on its own with exponential
 * backoff, refuses commands while down instead of queueing them, bounds the
 * commands in flight, times every command out, and runs Lua scripts by SHA1
 * with a transparent EVAL fallback. Each accepted command's callback runs
 * exactly once. */
#ifndef FG_REDIS_H
#define FG_REDIS_H

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "fg_status.h"

struct event_base;

typedef struct fg_redis fg_redis;
typedef struct fg_redis_script fg_redis_script;

/* Longest Lua source fg_redis_script_new accepts. */
#define FG_REDIS_SCRIPT_MAX (1024 * 1024)

/* Options of fg_redis_new. A zero field takes its default, so
 * `fg_redis_opts o = {0};` is a valid start. */
typedef struct fg_redis_opts {
    int connect_timeout_ms;   /* deadline of each step of an attempt: name
                               * resolution, then TCP connect + handshake
                               * (AUTH, SELECT, PING) per address; 2000 */
    int command_timeout_ms;   /* answer deadline of every command; 2000 */
    int reconnect_min_ms;     /* first delay after a failure; 100 */
    int reconnect_max_ms;     /* the delay doubles up to this; 5000 */
    int max_inflight;         /* commands accepted and not called back;
                               * FG_AGAIN beyond; 10000 */
    size_t max_command_bytes; /* one formatted command; FG_ETOOBIG beyond;
                               * 16 MiB */
    int db;                   /* SELECT db after connecting when > 0 */
    const char *password;     /* AUTH password when non-empty (copied) */
    /* Called when the connection is up (handshake answered) and when an
     * established connection is lost, so the caller can pause and resume
     * its work. Not called by fg_redis_free. Either may be NULL. */
    void (*on_up)(void *ud);
    void (*on_down)(void *ud);
    void *ud;
} fg_redis_opts;

/* How a command ended. Any outcome but FG_REDIS_REPLY and
 * FG_REDIS_ERROR_REPLY means Redis's answer is unknown: the command may or
 * may not have run (a command that timed out against a stalled server can
 * still run when the server resumes). */
typedef enum fg_redis_outcome {
    FG_REDIS_REPLY = 0,     /* reply is Redis's answer, not an error */
    FG_REDIS_ERROR_REPLY,   /* Redis answered with an error (reply->str) */
    FG_REDIS_TIMEOUT,       /* no answer within command_timeout_ms; the
                             * connection was dropped and is reconnecting */
    FG_REDIS_DISCONNECTED,  /* the connection was lost before the answer */
    FG_REDIS_FREED          /* fg_redis_free ran before the answer */
} fg_redis_outcome;

/* What a command callback receives; borrowed for the call only. */
typedef struct fg_redis_result {
    fg_redis_outcome outcome;
    /* Redis's answer, freed after the callback returns (copy what you
     * keep). NULL unless outcome is FG_REDIS_REPLY or FG_REDIS_ERROR_REPLY;
     * nested error replies (inside arrays) come with FG_REDIS_REPLY. */
    const redisReply *reply;
    /* Never NULL: "" for FG_REDIS_REPLY, the error text for
     * FG_REDIS_ERROR_REPLY, a short reason otherwise. */
    const char *err;
} fg_redis_result;

/* Command callback: called exactly once per accepted command, never from
 * inside the call that accepted it. It may issue commands and may call
 * fg_redis_free. @thread the loop's */
typedef void (*fg_redis_cb)(void *ud, const fg_redis_result *res);

/* Counters for metrics and tests. */
typedef struct fg_redis_stats {
    uint64_t connects;         /* times the connection came up */
    uint64_t connect_failures; /* attempts that failed before coming up */
    uint64_t disconnects;      /* established connections lost */
    uint64_t timeouts;         /* commands ended with FG_REDIS_TIMEOUT */
    uint64_t script_fallbacks; /* EVALSHA answered NOSCRIPT, resent as EVAL */
    uint64_t rejected;         /* commands refused with FG_AGAIN */
    unsigned inflight;         /* accepted commands not yet called back */
    int retry_ms;              /* delay before the next attempt (backoff) */
} fg_redis_stats;

/* Creates a client of host:port that connects on base's loop: nothing
 * touches the network before the loop runs, and nothing ever blocks the
 * loop (a host name is resolved on a short-lived helper thread; numeric
 * addresses are used as they are; every address found is tried in turn).
 * After a failed attempt or a lost connection it tries again after a delay
 * that starts at reconnect_min_ms and doubles up to reconnect_max_ms; the
 * delay resets once the connection is up. The connection is up when Redis
 * answered the handshake (AUTH and SELECT when configured, then PING), so a
 * server that accepts TCP but does not answer (stopped, loading its data)
 * is not up.
 * host: borrowed, copied (at most 255 bytes). opts: borrowed, copied; NULL
 * means all defaults. base: borrowed, must outlive the client.
 * Returns NULL and fills errbuf (may be NULL) on invalid arguments or when
 * out of memory. The process must ignore SIGPIPE (hiredis uses write(2)).
 * @thread the loop's: every fg_redis function and callback runs on the
 * thread that runs base; none is thread-safe. */
fg_redis *fg_redis_new(struct event_base *base, const char *host, int port,
                       const fg_redis_opts *opts, char *errbuf,
                       size_t errlen);

/* Drops the connection and calls every pending command callback with
 * FG_REDIS_FREED, exactly once, before returning; on_down is not called.
 * Scripts of r are freed. May be called from inside any callback of r (the
 * memory is released when the callback returns; meanwhile commands are
 * refused with FG_AGAIN). NULL is a no-op. @thread the loop's */
void fg_redis_free(fg_redis *r);

/* True when the connection is up and commands are accepted. */
int fg_redis_is_up(const fg_redis *r);

/* Sends a command formatted like hiredis's redisCommand (%s a C string, %b
 * a pointer and a size_t length for binary-safe values, %d and friends).
 * On FG_OK, cb (may be NULL) is called exactly once later. Otherwise cb is
 * never called:
 *   FG_AGAIN     the connection is not up, or max_inflight commands are in
 *                flight: retry later (nothing is queued while down)
 *   FG_EINVAL    bad format, empty command, or a command that would change
 *                the reply stream (SUBSCRIBE family, MONITOR)
 *   FG_ETOOBIG   the formatted command is over max_command_bytes
 *   FG_ENOMEM    out of memory
 * Commands that silence replies (CLIENT REPLY OFF) or reset the connection
 * (RESET) are not supported. @thread the loop's */
fg_status fg_redis_command(fg_redis *r, fg_redis_cb cb, void *ud,
                           const char *fmt, ...);
fg_status fg_redis_vcommand(fg_redis *r, fg_redis_cb cb, void *ud,
                            const char *fmt, va_list ap);

/* Same, with argc arguments argv[i] of argvlen[i] bytes (binary-safe; all
 * borrowed for the call only). argvlen NULL means strlen of each. */
fg_status fg_redis_commandv(fg_redis *r, fg_redis_cb cb, void *ud, int argc,
                            const char **argv, const size_t *argvlen);

/* Registers a Lua script: copies lua_source (NUL-terminated, at most
 * FG_REDIS_SCRIPT_MAX bytes) and computes its SHA1. The script belongs to r
 * and lives until fg_redis_free(r). Returns NULL when out of memory or
 * lua_source is too long. Sends nothing. @thread the loop's */
fg_redis_script *fg_redis_script_new(fg_redis *r, const char *lua_source);

/* The script's SHA1 in 40 lower-case hex digits (what SCRIPT LOAD
 * returns). Borrowed from script. */
const char *fg_redis_script_sha(const fg_redis_script *script);

/* Runs script with EVALSHA sha nkeys argv...: argv holds the nkeys keys,
 * then the other arguments (argc in all; argv and argvlen borrowed for the
 * call only; argvlen NULL means strlen). When Redis answers NOSCRIPT (its
 * script cache was flushed or it restarted), the command is resent once
 * with EVAL and the full source, which caches the script again; the caller
 * only sees the final answer, with one callback. Return codes and callback
 * as for fg_redis_command; FG_EINVAL also when nkeys is not in 0..argc.
 * @thread the loop's */
fg_status fg_redis_script_eval(fg_redis *r, const fg_redis_script *script,
                               fg_redis_cb cb, void *ud, int nkeys, int argc,
                               const char **argv, const size_t *argvlen);

/* ---- argument vectors ----
 * The arguments of one command, added one at a time, for commands whose
 * argument count is known only at run time (a batch of members, a region's
 * buckets). `fg_redis_args a = {0};` is an empty vector; release it with
 * fg_redis_args_free. A step that fails (out of memory, a formatted
 * argument over FG_REDIS_ARG_FMT_MAX bytes) marks the vector failed and
 * later steps do nothing, so a caller adds everything and learns of a
 * failure once, from the send. The fields are private. Not tied to a
 * connection. @thread any (one thread per vector) */
typedef struct fg_redis_args {
    const char **argv; /* borrowed arguments; copied ones when sent */
    size_t *lens;
    size_t *offs;      /* of copied arguments in buf; SIZE_MAX: borrowed */
    int n, cap;
    char *buf;         /* the copied arguments, back to back */
    size_t len, bcap;
    int failed;
} fg_redis_args;

/* Longest argument fg_redis_args_fmt formats. */
#define FG_REDIS_ARG_FMT_MAX 159

/* Appends a copy of len bytes at p (binary-safe). */
void fg_redis_args_add(fg_redis_args *a, const void *p, size_t len);

/* Appends a copy of the C string s. */
void fg_redis_args_str(fg_redis_args *a, const char *s);

/* Appends a printf-formatted argument of at most FG_REDIS_ARG_FMT_MAX
 * bytes (longer: the vector fails). */
void fg_redis_args_fmt(fg_redis_args *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends len bytes at p without copying them: borrowed, they must stay
 * valid until the vector is sent. */
void fg_redis_args_ref(fg_redis_args *a, const void *p, size_t len);

/* Marks the vector failed, for a step of the caller's own (building a
 * value) that failed: the send then refuses it. */
void fg_redis_args_fail(fg_redis_args *a);

/* fg_redis_commandv, and fg_redis_script_eval with the first nkeys
 * arguments as keys, with a's arguments. a is borrowed for the call (free
 * it afterwards). FG_ENOMEM, with nothing sent and cb never called, when a
 * step of a failed; otherwise as those functions. @thread the loop's */
fg_status fg_redis_args_command(fg_redis *r, fg_redis_cb cb, void *ud,
                                fg_redis_args *a);
fg_status fg_redis_args_eval(fg_redis *r, const fg_redis_script *script,
                             fg_redis_cb cb, void *ud, int nkeys,
                             fg_redis_args *a);

/* Releases a's memory and leaves it empty; NULL is a no-op. */
void fg_redis_args_free(fg_redis_args *a);

/* Copies r's counters into *st. */
void fg_redis_stats_get(const fg_redis *r, fg_redis_stats *st);

/* Static name of an outcome ("reply", "error_reply", "timeout",
 * "disconnected", "freed"). Never NULL. */
const char *fg_redis_outcome_str(fg_redis_outcome outcome);

#endif
