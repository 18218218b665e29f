/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz driver for fg_lock_decode (lock records read from Kafka): arbitrary
 * bytes must never crash it, and every record it accepts must survive an
 * encode/decode round trip field for field. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fg_lock.h"

static void same_or_abort(const fg_lock *a, const fg_lock *b)
{
    if (strcmp(a->region, b->region) != 0 || a->state != b->state ||
        a->scope != b->scope || a->source != b->source ||
        strcmp(a->reason, b->reason) != 0 ||
        strcmp(a->message, b->message) != 0 ||
        strcmp(a->actor, b->actor) != 0 || strcmp(a->id, b->id) != 0 ||
        a->since != b->since || a->until != b->until ||
        a->pin_until != b->pin_until ||
        memcmp(&a->score, &b->score, sizeof(a->score)) != 0 ||
        a->devices != b->devices || a->token != b->token || a->has != b->has)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fg_lock lk, again;
    char err[128];
    char enc[FG_LOCK_RECORD_MAX];
    size_t len;

    if (fg_lock_decode((const char *)data, size, &lk, err, sizeof(err)) !=
        FG_OK)
        return 0;
    len = fg_lock_encode(&lk, enc, sizeof(enc));
    if (len == 0)
        abort(); /* FG_LOCK_RECORD_MAX must always be enough */
    if (fg_lock_decode(enc, len, &again, err, sizeof(err)) != FG_OK)
        abort();
    same_or_abort(&lk, &again);
    return 0;
}
