/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz driver for the JSON check-in parsers (single and batch): every
 * check-in they accept must survive fg_checkin_encode -> decode_record with
 * all fields intact; any difference aborts. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_checkin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fg_checkin ci;
    fg_checkin_error err;
    size_t next = 0;
    fg_status st;

    if (fg_checkin_parse_json((const char *)data, size, &ci, &err) == FG_OK)
        roundtrip(&ci);
    else if (!err.code)
        abort();
    st = fg_checkin_batch_parse_json((const char *)data, size, 1000, item_cb,
                                     &next, &err);
    if (st != FG_OK && (next != 0 || !err.code))
        abort();
    return 0;
}
