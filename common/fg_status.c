/* SPDX-License-Identifier: Apache-2.0 */
/* Names for fg_status values, for logs and error bodies. */
#include "fg_status.h"

#include <stdarg.h>
#include <stdio.h>

const char *fg_status_str(fg_status st)
{
    switch (st) {
    case FG_OK: return "ok";
    case FG_AGAIN: return "again";
    case FG_EINVAL: return "invalid";
    case FG_ENOMEM: return "no_memory";
    case FG_ETOOBIG: return "too_big";
    case FG_EIO: return "io_error";
    case FG_ENOTFOUND: return "not_found";
    }
    return "unknown";
}

void fg_errf(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!errbuf || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}
