/* SPDX-License-Identifier: Apache-2.0 */
/* A msgpack_packer sink writing into the caller's fixed buffer, for the
 * record encoders (check-ins, lock records). Overflow is sticky, so an
 * encoder packs everything and checks once at the end. */
#ifndef FG_MPBUF_H
#define FG_MPBUF_H

#include <stdbool.h>
#include <stddef.h>

/* Start with `fg_mpbuf mb = {out, cap, 0, false};` (out borrowed: cap
 * bytes the packed value goes to). */
typedef struct fg_mpbuf {
    char *out;
    size_t cap, len;
    bool overflow;
} fg_mpbuf;

/* The write callback for msgpack_packer_init(&pk, &mb, fg_mpbuf_write):
 * appends n bytes; 0, or -1 (and from then on always) when they do not
 * fit. @thread any */
int fg_mpbuf_write(void *data, const char *buf, size_t n);

/* Bytes packed, or 0 after an overflow. */
size_t fg_mpbuf_len(const fg_mpbuf *mb);

#endif
