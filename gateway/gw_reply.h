/* SPDX-License-Identifier: Apache-2.0 */
/* Answers to devices: the directive (ok, or locked with region, reason,
 * message and expiry), per-item batch results and error bodies, written as
 * JSON or msgpack into a growable buffer with a hard cap. */
#ifndef GW_REPLY_H
#define GW_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "fg_checkin.h"
#include "fg_lock.h"

typedef enum gw_fmt { GW_FMT_JSON = 0, GW_FMT_MSGPACK = 1 } gw_fmt;

/* A byte buffer that starts in inline storage and grows on the heap up to
 * GW_BUF_CAP; past it the buffer is marked failed. */
#define GW_BUF_INLINE 512
#define GW_BUF_CAP (16u << 20)
typedef struct gw_buf {
    char *p;
    size_t len, cap;
    int failed;
    char inline_[GW_BUF_INLINE];
} gw_buf;

void gw_buf_init(gw_buf *b);
void gw_buf_free(gw_buf *b);

/* The MIME type of a format. */
const char *gw_fmt_mime(gw_fmt f);

/* Writes one directive: {"status":"ok","next_checkin_s":N} or
 * {"status":"locked","region","reason","message","until","next_checkin_s"}.
 * lk (borrowed) NULL means ok. */
void gw_reply_directive(gw_buf *b, gw_fmt f, const fg_lock *lk,
                        int64_t next_checkin_s);

/* Writes {"error":code,"field":field,"detail":detail} (field omitted when
 * NULL); as a batch item it also has "status":"error". retry adds
 * "retry":true for errors the device should retry. */
void gw_reply_error(gw_buf *b, gw_fmt f, const char *code, const char *field,
                    const char *detail, int as_item, int retry);

/* Batch framing: {"results":[ item, item, ... ]}. */
void gw_reply_batch_open(gw_buf *b, gw_fmt f, size_t n);
void gw_reply_batch_sep(gw_buf *b, gw_fmt f, size_t index);
void gw_reply_batch_close(gw_buf *b, gw_fmt f);

#endif
