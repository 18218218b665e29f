/* SPDX-License-Identifier: Apache-2.0 */
/* Shared by the control-service fuzz drivers (fuzz_ctl_*): the checks every
 * answer must pass whatever the input. Strings the service puts into its
 * JSON answers and audit records must be strict UTF-8 without control
 * characters (yajl's generator validates UTF-8, and a browser or Python
 * client decodes strictly), NUL-terminated inside their arrays. Static
 * inline functions, so a driver needs only the ones it uses. */
#ifndef FUZZ_CTL_H
#define FUZZ_CTL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>

#include "ctl_req.h"

/* Strict UTF-8 (no overlongs, surrogates, code points over U+10FFFF, cut
 * sequences) without C0 controls or DEL. Written here rather than taken
 * from the code under test, so a lax validator there can't hide itself. */
static inline int fz_text_ok(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return 0;
            i++;
            continue;
        }
        size_t need;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            min = 0x10000;
        } else {
            return 0;
        }
        if (n - i - 1 < need)
            return 0;
        cp = c & (0x3fu >> need);
        for (size_t j = 1; j <= need; j++) {
            if ((u[i + j] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (u[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* A NUL-terminated string inside arr[cap] that is clean text. */
static inline void fz_check_str(const char *arr, size_t cap)
{
    const char *nul = memchr(arr, '\0', cap);
    if (!nul || !fz_text_ok(arr, (size_t)(nul - arr)))
        abort();
}

/* A refusal the API can answer: a code of [a-z_], and field and detail
 * that are clean text (they are copied into the JSON error and the audit
 * record). */
static inline void fz_check_err(const ctl_req_error *err)
{
    if (!err->code || !err->code[0])
        abort();
    for (const char *c = err->code; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || *c == '_'))
            abort();
    fz_check_str(err->field, sizeof(err->field));
    fz_check_str(err->detail, sizeof(err->detail));
}

/* A generator whose buffer is the canonical JSON of what a driver builds;
 * aborts on any generator error (a value the API could not write). */
static inline yajl_gen fz_gen(void)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g)
        abort();
    yajl_gen_config(g, yajl_gen_validate_utf8, 1);
    return g;
}

static inline void fz_ok(yajl_gen_status s)
{
    if (s != yajl_gen_status_ok)
        abort();
}

static inline void fz_key(yajl_gen g, const char *k)
{
    fz_ok(yajl_gen_string(g, (const unsigned char *)k, strlen(k)));
}

#endif
