/* SPDX-License-Identifier: Apache-2.0 */
/* A msgpack_packer sink into a fixed buffer (see fg_mpbuf.h). */
#include "fg_mpbuf.h"

#include <string.h>

int fg_mpbuf_write(void *data, const char *buf, size_t n)
{
    fg_mpbuf *mb = data;
    if (mb->overflow || n > mb->cap - mb->len) {
        mb->overflow = true;
        return -1;
    }
    memcpy(mb->out + mb->len, buf, n);
    mb->len += n;
    return 0;
}

size_t fg_mpbuf_len(const fg_mpbuf *mb)
{
    return mb->overflow ? 0 : mb->len;
}
