/* SPDX-License-Identifier: Apache-2.0 */
/* Status codes shared by every fleetgate module. Fallible functions return
 * fg_status: FG_OK (0) on success, FG_AGAIN for backpressure (the caller maps
 * it to 429/503 with Retry-After), and negative codes for hard errors. */
#ifndef FG_STATUS_H
#define FG_STATUS_H

#include <stddef.h>

typedef enum fg_status {
    FG_OK = 0,
    FG_AGAIN = -1,    /* temporarily full or unavailable: retry later */
    FG_EINVAL = -2,   /* invalid input (the caller's error object says why) */
    FG_ENOMEM = -3,   /* allocation failed */
    FG_ETOOBIG = -4,  /* input over a configured size cap */
    FG_EIO = -5,      /* system or library I/O error */
    FG_ENOTFOUND = -6 /* no such item */
} fg_status;

/* Static, human-readable name of a status ("ok", "again", ...). Never NULL. */
const char *fg_status_str(fg_status st);

/* printf into a caller's error buffer; a NULL buffer or errlen 0 is a
 * no-op, so optional errbuf parameters need no check. @thread any */
void fg_errf(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
