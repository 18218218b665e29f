/* SPDX-License-Identifier: Apache-2.0 */
/* Structured logger: formats one logfmt line per event into a stack buffer
 * (bounded, truncated safely with truncated=1) and emits it on stderr with a
 * single write(2), so concurrent threads never interleave within a line. */
#include "fg_log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Room kept at the end of a line for an optional closing quote and
 * " truncated=1\n". */
static const char fg_log_trunc_tail[] = " truncated=1\n";
#define FG_LOG_TAIL_RESERVE (sizeof(fg_log_trunc_tail) - 1 + 1)

#define FG_LOG_COMP_MAX 128 /* bytes of the quoted component name */
#define FG_LOG_MSG_MAX 256  /* bytes of the quoted msg */

static _Atomic int fg_log_min = FG_LOG_INFO;
static _Atomic(const char *) fg_log_comp = "fleetgate";

static const char *const fg_log_names[] = {"debug", "info", "warn", "error"};

void fg_log_init(const char *comp, fg_log_level min)
{
    atomic_store(&fg_log_comp, comp ? comp : "fleetgate");
    atomic_store(&fg_log_min, (int)min);
}

int fg_log_level_parse(const char *s)
{
    if (!s)
        return -1;
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, fg_log_names[i]) == 0)
            return i;
    }
    return -1;
}

int fg_log_enabled(fg_log_level lvl)
{
    return (int)lvl >= atomic_load_explicit(&fg_log_min, memory_order_relaxed);
}

/* Length of the unit starting at s[0] (s NUL-terminated): a whole UTF-8
 * sequence as far as its continuation bytes go, else one byte. Truncation
 * cuts only between units, so a multi-byte character is never split. */
static size_t unit_len(const unsigned char *s)
{
    size_t want = 1, n = 1;
    if (s[0] >= 0xf0 && s[0] <= 0xf7)
        want = 4;
    else if (s[0] >= 0xe0)
        want = s[0] <= 0xef ? 3 : 1;
    else if (s[0] >= 0xc0)
        want = 2;
    while (n < want && (s[n] & 0xc0) == 0x80)
        n++;
    return n;
}

static bool is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* Escaped form of the unit u (ulen bytes) into rep; returns its length. */
static size_t escape_unit(const unsigned char *u, size_t ulen, char rep[8])
{
    if (ulen == 1) {
        switch (u[0]) {
        case '"': memcpy(rep, "\\\"", 2); return 2;
        case '\\': memcpy(rep, "\\\\", 2); return 2;
        case '\n': memcpy(rep, "\\n", 2); return 2;
        case '\r': memcpy(rep, "\\r", 2); return 2;
        case '\t': memcpy(rep, "\\t", 2); return 2;
        default:
            if (is_ctl(u[0])) {
                snprintf(rep, 8, "\\u%04x", u[0]);
                return 6;
            }
        }
    }
    memcpy(rep, u, ulen);
    return ulen;
}

char *fg_log_quote(const char *s, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    bool quote = p[0] == '\0';
    size_t o = 0;

    if (!out || cap == 0)
        return out;
    for (const unsigned char *q = p; *q && !quote; q++) {
        if (*q == ' ' || *q == '=' || *q == '"' || *q == '\\' || is_ctl(*q))
            quote = true;
    }
    if (!quote) {
        while (*p) {
            size_t n = unit_len(p);
            if (o + n + 1 > cap)
                break;
            memcpy(out + o, p, n);
            o += n;
            p += n;
        }
        out[o] = '\0';
        return out;
    }
    if (cap < 3) { /* not even room for "" */
        out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    while (*p) {
        char rep[8];
        size_t n = unit_len(p);
        size_t r = escape_unit(p, n, rep);
        if (o + r + 2 > cap) /* keep room for the closing quote and NUL */
            break;
        memcpy(out + o, rep, r);
        o += r;
        p += n;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

/* Whether text[0..n) ends inside a quoted value, and whether it ends with a
 * backslash that escapes nothing yet. */
static void quote_state(const char *text, size_t n, bool *in_quote,
                        bool *dangling)
{
    bool q = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        if (esc) {
            esc = false;
        } else if (q && text[i] == '\\') {
            esc = true;
        } else if (text[i] == '"') {
            q = !q;
        }
    }
    *in_quote = q;
    *dangling = esc;
}

void fg_log(fg_log_level lvl, const char *msg, const char *fmt, ...)
{
    char line[FG_LOG_LINE_MAX];
    char pairs[FG_LOG_LINE_MAX];
    char qcomp[FG_LOG_COMP_MAX], qmsg[FG_LOG_MSG_MAX];
    char ts[64];
    struct timespec now;
    struct tm tm;
    const size_t limit = sizeof(line) - FG_LOG_TAIL_RESERVE;
    size_t n, start;
    bool truncated = false;
    int saved_errno = errno;
    int li;
    int hl;

    if (!fg_log_enabled(lvl))
        return;
    li = (int)lvl;
    if (li < 0)
        li = 0;
    if (li > 3)
        li = 3;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(now.tv_nsec / 1000000));
    /* The head is bounded by the quote caps, far below limit. */
    hl = snprintf(line, limit, "ts=%s level=%s comp=%s msg=%s", ts,
                  fg_log_names[li],
                  fg_log_quote(atomic_load(&fg_log_comp), qcomp, sizeof(qcomp)),
                  fg_log_quote(msg, qmsg, sizeof(qmsg)));
    n = hl < 0 ? 0 : (size_t)hl;
    if (n >= limit)
        n = limit - 1;
    start = n;

    if (fmt && fmt[0]) {
        va_list ap;
        int want;
        va_start(ap, fmt);
        want = vsnprintf(pairs, sizeof(pairs), fmt, ap);
        va_end(ap);
        if (want < 0) {
            pairs[0] = '\0';
        } else if ((size_t)want >= sizeof(pairs)) {
            truncated = true;
        }
        if (pairs[0] && n + 1 < limit)
            line[n++] = ' ';
        start = n;
        /* Copy the caller's pairs, escaping control characters so a stray
         * newline cannot split the line; cut only between whole units. */
        for (const unsigned char *p = (const unsigned char *)pairs; *p;) {
            char rep[8];
            size_t ul = unit_len(p);
            size_t r;
            if (ul == 1 && is_ctl(*p)) {
                r = escape_unit(p, ul, rep);
            } else {
                memcpy(rep, p, ul);
                r = ul;
            }
            if (n + r > limit) {
                truncated = true;
                break;
            }
            memcpy(line + n, rep, r);
            n += r;
            p += ul;
        }
    }

    if (truncated) {
        bool in_quote, dangling;
        quote_state(line + start, n - start, &in_quote, &dangling);
        if (dangling)
            n--;
        if (in_quote)
            line[n++] = '"';
        memcpy(line + n, fg_log_trunc_tail, sizeof(fg_log_trunc_tail) - 1);
        n += sizeof(fg_log_trunc_tail) - 1;
    } else {
        line[n++] = '\n';
    }

    for (size_t off = 0; off < n;) {
        ssize_t w = write(STDERR_FILENO, line + off, n - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break; /* nowhere left to report a logging failure */
        }
        off += (size_t)w;
    }
    errno = saved_errno;
}
