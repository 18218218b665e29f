/* SPDX-License-Identifier: Apache-2.0 */
/* Structured logs: one logfmt line per event on stderr,
 *   ts=2026-11-27T20:55:01.037Z level=info comp=gateway msg=listening addr=127.0.0.1:8080
 * The caller's format adds key=value pairs after msg. Lines are written with
 * one write(2) so threads do not interleave. */
#ifndef FG_LOG_H
#define FG_LOG_H

#include <stdarg.h>
#include <stddef.h>

/* Longest line, newline included. Longer lines are cut between whole UTF-8
 * characters, a value cut inside quotes is closed, and the line ends with
 * " truncated=1". */
#define FG_LOG_LINE_MAX 2048

typedef enum fg_log_level {
    FG_LOG_DEBUG = 0,
    FG_LOG_INFO = 1,
    FG_LOG_WARN = 2,
    FG_LOG_ERROR = 3
} fg_log_level;

/* Sets the component name (borrowed, must outlive logging) and the minimum
 * level. Call once at start-up. @thread main */
void fg_log_init(const char *comp, fg_log_level min);

/* Parses "debug", "info", "warn", "error". Returns -1 when unknown. */
int fg_log_level_parse(const char *s);

/* True when lvl would be written. @thread any */
int fg_log_enabled(fg_log_level lvl);

/* Logs msg (a short identifier, no spaces: "listening") with the key=value
 * pairs of fmt. Values containing spaces or quotes should be passed through
 * fg_log_quote by the caller or formatted with %s of a quoted buffer.
 * Control characters in the formatted pairs are escaped (\n, \u001b) so an
 * event is always one line. fmt may be NULL or "". errno is preserved.
 * @thread any */
void fg_log(fg_log_level lvl, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes s as a logfmt value into out (quoted and escaped when needed),
 * truncating to cap. Returns out. @thread any
 * The value is quoted when it is empty or has a space, '=', '"', '\\' or a
 * control character; inside quotes '"' and '\\' are backslash-escaped,
 * newline, CR and tab become \n \r \t and other control characters
 * \u00XX. Truncation keeps the closing quote, never splits an escape or a
 * UTF-8 character, and always NUL-terminates (cap 0 writes nothing; NULL s
 * is treated as ""). */
char *fg_log_quote(const char *s, char *out, size_t cap);

#define fg_log_debug(msg, ...) fg_log(FG_LOG_DEBUG, msg, __VA_ARGS__)
#define fg_log_info(msg, ...) fg_log(FG_LOG_INFO, msg, __VA_ARGS__)
#define fg_log_warn(msg, ...) fg_log(FG_LOG_WARN, msg, __VA_ARGS__)
#define fg_log_error(msg, ...) fg_log(FG_LOG_ERROR, msg, __VA_ARGS__)

#endif
