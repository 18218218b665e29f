/* SPDX-License-Identifier: Apache-2.0 */
#include "fg_utf8.h"

#include <stdint.h>
#include <string.h>

fg_utf8_result fg_utf8_check(const unsigned char *s, size_t len, int controls,
                             size_t *count)
{
    const uint64_t ones = 0x0101010101010101ull, highs = ones * 0x80;
    size_t i = 0, n = 0;
    while (i < len) {
        /* Eight bytes at a time while none has its high bit set and, unless
         * controls are allowed, none is below 0x20 or DEL (a zero byte of
         * w ^ DELs). */
        while (len - i >= 8) {
            uint64_t w, x, bad;
            memcpy(&w, s + i, 8);
            if (controls) {
                bad = w;
            } else {
                x = w ^ (ones * 0x7f);
                bad = w | ((w - ones * 0x20) & ~w) | ((x - ones) & ~x);
            }
            if ((bad & highs) != 0)
                break;
            i += 8;
            n += 8;
        }
        if (i >= len)
            break;
        unsigned c = s[i];
        if (c < 0x80) {
            if (!controls && (c < 0x20 || c == 0x7f))
                return FG_UTF8_CONTROL;
            i++;
            n++;
            continue;
        }
        size_t k = fg_utf8_seq(s + i, len - i);
        if (k == 0)
            return FG_UTF8_BAD;
        i += k;
        n++;
    }
    if (count)
        *count = n;
    return FG_UTF8_OK;
}
