/* SPDX-License-Identifier: Apache-2.0 */
/* Strict UTF-8 for text that reaches a phone, a log or an audit record: no
 * overlong forms, no UTF-16 surrogates (U+D800..U+DFFF), nothing above
 * U+10FFFF, no truncated sequence. One implementation for the check-in
 * decoder (hot path), lock records and message templates. */
#ifndef FG_UTF8_H
#define FG_UTF8_H

#include <stddef.h>

typedef enum fg_utf8_result {
    FG_UTF8_OK = 0,
    FG_UTF8_BAD = -1,     /* not strict UTF-8 */
    FG_UTF8_CONTROL = -2  /* valid, but holds a C0 control, DEL or NUL */
} fg_utf8_result;

/* Length (2..4) of the strict sequence at p[0..n) whose lead byte p[0] is
 * >= 0x80, or 0 when it is not one. n must be >= 1. @thread any */
static inline size_t fg_utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0], lo = 0x80, hi = 0xbf;
    size_t need;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* over U+10FFFF */
    } else {
        return 0; /* continuation byte, overlong lead 0xc0/0xc1, 0xf5.. */
    }
    if (need >= n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k <= need; k++) {
        if (p[k] < 0x80 || p[k] > 0xbf)
            return 0;
    }
    return need + 1;
}

/* Checks s[0..len). With controls == 0, C0 controls, DEL and NUL give
 * FG_UTF8_CONTROL. When count is not NULL it receives the number of code
 * points (valid only with FG_UTF8_OK). Printable ASCII is checked eight
 * bytes at a time. @thread any */
fg_utf8_result fg_utf8_check(const unsigned char *s, size_t len, int controls,
                             size_t *count);

#endif
