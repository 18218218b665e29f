/* SPDX-License-Identifier: Apache-2.0 */
/* checkin-parse: CPU cost of the check-in codec on one core. Times
 * fg_checkin_parse_json, fg_checkin_parse_msgpack (same check-in as msgpack),
 * fg_checkin_encode, fg_checkin_decode_record (the encoded check-in) and the
 * JSON and msgpack batch parsers (100 items), and prints the median of 5
 * repeats in ns per call of process CPU time. */
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fg_checkin.h"

#define CP_REPEATS 5
#define CP_BATCH_ITEMS 100
#define CP_DEFAULT_ITERS 2000000L

/* The single check-in of the gateway benchmarks (120 bytes). */
static const char cp_body[] =
    "{\"device_id\":\"dev-00000042\",\"sku_region\":\"DE\",\"region\":\"DE\","
    "\"model\":\"Pixel 8\",\"fw\":\"1.4.2-rc1\",\"seq\":1,"
    "\"ts\":1764000000000}";

typedef struct cp_input {
    const char *json;
    size_t json_len;
    const char *mp;
    size_t mp_len;
    const char *batch;
    size_t batch_len;
    const char *mp_batch;
    size_t mp_batch_len;
    char record[FG_CHECKIN_RECORD_MAX];
    size_t record_len;
    fg_checkin ci;
} cp_input;

/* Sink for results, so the compiler cannot drop the calls. */
static volatile uint64_t cp_sink;

static double cp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static fg_status cp_item_cb(void *ud, size_t index, const fg_checkin *ci,
                            const fg_checkin_error *item_err)
{
    uint64_t *acc = ud;
    (void)index;
    (void)item_err;
    *acc += ci ? ci->seq : 1000;
    return FG_OK;
}

typedef uint64_t (*cp_fn)(const cp_input *in, long iters);

static uint64_t cp_parse_json(const cp_input *in, long iters)
{
    uint64_t acc = 0;
    for (long i = 0; i < iters; i++) {
        fg_checkin ci;
        fg_checkin_error err;
        if (fg_checkin_parse_json(in->json, in->json_len, &ci, &err) == FG_OK)
            acc += ci.seq;
    }
    return acc;
}

static uint64_t cp_parse_msgpack(const cp_input *in, long iters)
{
    uint64_t acc = 0;
    for (long i = 0; i < iters; i++) {
        fg_checkin ci;
        fg_checkin_error err;
        if (fg_checkin_parse_msgpack(in->mp, in->mp_len, &ci, &err) == FG_OK)
            acc += ci.seq;
    }
    return acc;
}

static uint64_t cp_encode(const cp_input *in, long iters)
{
    uint64_t acc = 0;
    char out[FG_CHECKIN_RECORD_MAX];
    for (long i = 0; i < iters; i++)
        acc += fg_checkin_encode(&in->ci, 1764000000001LL + i, "gw-bench:1",
                                 out, sizeof(out));
    return acc;
}

static uint64_t cp_batch_json(const cp_input *in, long iters)
{
    uint64_t acc = 0;
    for (long i = 0; i < iters; i++) {
        fg_checkin_error err;
        if (fg_checkin_batch_parse_json(in->batch, in->batch_len,
                                        CP_BATCH_ITEMS, cp_item_cb, &acc,
                                        &err) != FG_OK)
            acc += 7;
    }
    return acc;
}

static uint64_t cp_decode_record(const cp_input *in, long iters)
{
    uint64_t acc = 0;
    for (long i = 0; i < iters; i++) {
        fg_checkin ci;
        fg_checkin_meta meta;
        fg_checkin_error err;
        if (fg_checkin_decode_record(in->record, in->record_len, &ci, &meta,
                                     &err) == FG_OK)
            acc += ci.seq + (uint64_t)meta.recv_ts;
    }
    return acc;
}

static uint64_t cp_batch_msgpack(const cp_input *in, long iters)
{
    uint64_t acc = 0;
    for (long i = 0; i < iters; i++) {
        fg_checkin_error err;
        if (fg_checkin_batch_parse_msgpack(in->mp_batch, in->mp_batch_len,
                                           CP_BATCH_ITEMS, cp_item_cb, &acc,
                                           &err) != FG_OK)
            acc += 7;
    }
    return acc;
}

static int cp_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs fn for iters calls CP_REPEATS times (after a short warm-up) and
 * prints the median ns per call (and per item when items > 1). */
static void cp_run(const char *name, cp_fn fn, const cp_input *in, long iters,
                   int items)
{
    double ns[CP_REPEATS];
    cp_sink += fn(in, iters / 10 + 1);
    for (int r = 0; r < CP_REPEATS; r++) {
        double t0 = cp_now_ns();
        cp_sink += fn(in, iters);
        ns[r] = (cp_now_ns() - t0) / (double)iters;
    }
    qsort(ns, CP_REPEATS, sizeof(ns[0]), cp_cmp);
    if (items > 1)
        printf("%-28s %10.1f ns/call %8.1f ns/item  (min %.1f, max %.1f, "
               "%ld calls x %d)\n",
               name, ns[CP_REPEATS / 2], ns[CP_REPEATS / 2] / items, ns[0],
               ns[CP_REPEATS - 1], iters, CP_REPEATS);
    else
        printf("%-28s %10.1f ns/call                    (min %.1f, max %.1f, "
               "%ld calls x %d)\n",
               name, ns[CP_REPEATS / 2], ns[0], ns[CP_REPEATS - 1], iters,
               CP_REPEATS);
}

/* The same check-in as cp_body, as a msgpack map. */
static void cp_pack_msgpack(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 7);
    msgpack_pack_str_with_body(pk, "device_id", 9);
    msgpack_pack_str_with_body(pk, "dev-00000042", 12);
    msgpack_pack_str_with_body(pk, "sku_region", 10);
    msgpack_pack_str_with_body(pk, "DE", 2);
    msgpack_pack_str_with_body(pk, "region", 6);
    msgpack_pack_str_with_body(pk, "DE", 2);
    msgpack_pack_str_with_body(pk, "model", 5);
    msgpack_pack_str_with_body(pk, "Pixel 8", 7);
    msgpack_pack_str_with_body(pk, "fw", 2);
    msgpack_pack_str_with_body(pk, "1.4.2-rc1", 9);
    msgpack_pack_str_with_body(pk, "seq", 3);
    msgpack_pack_uint64(pk, 1);
    msgpack_pack_str_with_body(pk, "ts", 2);
    msgpack_pack_int64(pk, 1764000000000LL);
}

int main(int argc, char **argv)
{
    long iters = CP_DEFAULT_ITERS;
    cp_input in;
    msgpack_sbuffer sb, sbb;
    msgpack_packer pk;
    fg_checkin_error err;
    size_t blen = 2 + CP_BATCH_ITEMS * sizeof(cp_body);
    char *batch = malloc(blen);
    size_t n = 0;
    int rc = 1;

    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_init(&sbb);
    if (argc > 2 || (argc == 2 && (iters = strtol(argv[1], NULL, 10)) < 100)) {
        fprintf(stderr, "usage: checkin-parse [ITERATIONS >= 100, default "
                        "%ld]\n", CP_DEFAULT_ITERS);
        goto cleanup;
    }
    if (!batch)
        goto cleanup;
    batch[n++] = '[';
    for (int i = 0; i < CP_BATCH_ITEMS; i++) {
        if (i)
            batch[n++] = ',';
        memcpy(batch + n, cp_body, sizeof(cp_body) - 1);
        n += sizeof(cp_body) - 1;
    }
    batch[n++] = ']';

    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    cp_pack_msgpack(&pk);
    msgpack_packer_init(&pk, &sbb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, CP_BATCH_ITEMS);
    for (int i = 0; i < CP_BATCH_ITEMS; i++)
        cp_pack_msgpack(&pk);
    in.json = cp_body;
    in.json_len = sizeof(cp_body) - 1;
    in.mp = sb.data;
    in.mp_len = sb.size;
    in.batch = batch;
    in.batch_len = n;
    in.mp_batch = sbb.data;
    in.mp_batch_len = sbb.size;

    /* Every input must be accepted, or the numbers mean nothing. */
    if (fg_checkin_parse_json(in.json, in.json_len, &in.ci, &err) != FG_OK ||
        fg_checkin_parse_msgpack(in.mp, in.mp_len, &in.ci, &err) != FG_OK) {
        fprintf(stderr, "checkin-parse: body refused: %s (%s)\n",
                err.code ? err.code : "?", err.detail);
        goto cleanup;
    }
    in.record_len = fg_checkin_encode(&in.ci, 1764000000001LL, "gw-bench:1",
                                      in.record, sizeof(in.record));
    if (in.record_len == 0 ||
        fg_checkin_decode_record(in.record, in.record_len, &in.ci, NULL,
                                 &err) != FG_OK) {
        fprintf(stderr, "checkin-parse: record refused: %s (%s)\n",
                err.code ? err.code : "?", err.detail);
        goto cleanup;
    }
    {
        uint64_t acc = 0, macc = 0;
        if (fg_checkin_batch_parse_json(in.batch, in.batch_len,
                                        CP_BATCH_ITEMS, cp_item_cb, &acc,
                                        &err) != FG_OK ||
            acc != CP_BATCH_ITEMS ||
            fg_checkin_batch_parse_msgpack(in.mp_batch, in.mp_batch_len,
                                           CP_BATCH_ITEMS, cp_item_cb, &macc,
                                           &err) != FG_OK ||
            macc != CP_BATCH_ITEMS) {
            fprintf(stderr, "checkin-parse: batch refused: %s (%s)\n",
                    err.code ? err.code : "?", err.detail);
            goto cleanup;
        }
    }

    printf("check-in: %zu bytes JSON, %zu bytes msgpack, %zu bytes record; "
           "batch: %d items, %zu bytes JSON, %zu bytes msgpack\n",
           in.json_len, in.mp_len, in.record_len, CP_BATCH_ITEMS,
           in.batch_len, in.mp_batch_len);
    cp_run("fg_checkin_parse_json", cp_parse_json, &in, iters, 1);
    cp_run("fg_checkin_parse_msgpack", cp_parse_msgpack, &in, iters, 1);
    cp_run("fg_checkin_encode", cp_encode, &in, iters, 1);
    cp_run("fg_checkin_decode_record", cp_decode_record, &in, iters, 1);
    cp_run("fg_checkin_batch_parse_json", cp_batch_json, &in,
           iters / CP_BATCH_ITEMS > 0 ? iters / CP_BATCH_ITEMS : 1,
           CP_BATCH_ITEMS);
    cp_run("fg_checkin_batch_parse_msgpack", cp_batch_msgpack, &in,
           iters / CP_BATCH_ITEMS > 0 ? iters / CP_BATCH_ITEMS : 1,
           CP_BATCH_ITEMS);
    rc = 0;

cleanup:
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&sbb);
    free(batch);
    return rc;
}
