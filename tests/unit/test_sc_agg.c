/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for consumers/sc_agg: per-batch aggregation, duplicates,
 * fences, the window, and the seq memory. */
#include <stdio.h>
#include <string.h>

#include "fg_test.h"
#include "sc_agg.h"

#define MIN 60000
#define NOW (1000 * (int64_t)MIN)

/* Copies s into a cap-byte field (NUL-terminated, cut if longer) and
 * returns its length. */
static uint16_t copy_bounded(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n > cap - 1)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return (uint16_t)n;
}

static fg_checkin mk(const char *dev, const char *sku, const char *region,
                     int has_seq, uint64_t seq)
{
    fg_checkin ci;
    memset(&ci, 0, sizeof(ci));
    ci.device_id_len = copy_bounded(ci.device_id, sizeof(ci.device_id), dev);
    ci.sku_region_len = copy_bounded(ci.sku_region, sizeof(ci.sku_region), sku);
    ci.region_len = copy_bounded(ci.region, sizeof(ci.region), region);
    if (has_seq) {
        ci.has |= FG_CHECKIN_HAS_SEQ;
        ci.seq = seq;
    }
    return ci;
}

static size_t region_index(sc_agg *a, const char *region)
{
    for (size_t i = 0; i < sc_agg_regions(a); i++)
        if (strcmp(sc_agg_region(a, i), region) == 0)
            return i;
    return (size_t)-1;
}

static void test_groups_by_region_and_bucket(void)
{
    sc_agg *a = sc_agg_new(MIN, 15 * MIN, NULL);
    fg_status st;
    fg_checkin c1 = mk("d1", "CN", "CU", 0, 0);
    fg_checkin c2 = mk("d2", "CU", "CU", 0, 0);
    fg_checkin c3 = mk("d3", "DE", "DE", 0, 0);
    FG_CHECK_INT(sc_agg_add(a, 10, &c1, NOW, -1, NOW, &st), SC_ADD_COUNTED);
    FG_CHECK_INT(sc_agg_add(a, 11, &c2, NOW, -1, NOW, &st), SC_ADD_COUNTED);
    FG_CHECK_INT(sc_agg_add(a, 12, &c1, NOW, -1, NOW, &st), SC_ADD_COUNTED);
    FG_CHECK_INT(sc_agg_add(a, 13, &c3, NOW - MIN, -1, NOW, &st),
                 SC_ADD_COUNTED);
    FG_CHECK_INT(sc_agg_regions(a), 2);
    size_t cu = region_index(a, "CU");
    FG_CHECK(cu != (size_t)-1);
    const sc_bucket *b;
    FG_CHECK_INT(sc_agg_buckets(a, cu, &b), 1);
    FG_CHECK_INT(b[0].bucket, NOW / MIN);
    FG_CHECK_INT(b[0].checkins, 3);   /* no seq: every check-in counts */
    FG_CHECK_INT(b[0].ndevices, 2);   /* d1 listed once */
    FG_CHECK_INT(b[0].ngrey, 1);      /* CN in CU is grey, CU in CU is not */
    FG_CHECK_STR(b[0].grey[0], "d1");
    FG_CHECK_INT(sc_agg_region_last_offset(a, cu), 12);
    size_t de = region_index(a, "DE");
    FG_CHECK_INT(sc_agg_buckets(a, de, &b), 1);
    FG_CHECK_INT(b[0].bucket, NOW / MIN - 1);
    FG_CHECK_INT(b[0].ngrey, 0);
    sc_agg_free(a);
}

static void test_duplicate_seq_counts_once(void)
{
    sc_agg *a = sc_agg_new(MIN, 15 * MIN, NULL);
    fg_status st;
    fg_checkin s5 = mk("d1", "CN", "CU", 1, 5);
    fg_checkin s6 = mk("d1", "CN", "CU", 1, 6);
    FG_CHECK_INT(sc_agg_add(a, 1, &s5, NOW, -1, NOW, &st), SC_ADD_COUNTED);
    FG_CHECK_INT(sc_agg_add(a, 2, &s5, NOW, -1, NOW, &st), SC_ADD_DUPLICATE);
    FG_CHECK_INT(sc_agg_add(a, 3, &s6, NOW, -1, NOW, &st), SC_ADD_COUNTED);
    /* The memory outlives the batch: a retry in the next batch is caught. */
    sc_agg_reset(a);
    FG_CHECK_INT(sc_agg_add(a, 4, &s6, NOW, -1, NOW, &st), SC_ADD_DUPLICATE);
    const sc_bucket *b;
    FG_CHECK_INT(sc_agg_buckets(a, 0, &b), 1);
    FG_CHECK_INT(b[0].checkins, 0);
    FG_CHECK_INT(b[0].ndevices, 1); /* still an active device */
    /* Forgetting the partition forgets the memory. */
    sc_agg_forget(a);
    sc_agg_reset(a);
    FG_CHECK_INT(sc_agg_add(a, 5, &s6, NOW, -1, NOW, &st), SC_ADD_COUNTED);
    sc_agg_free(a);
}

static void test_fence_and_window(void)
{
    sc_agg *a = sc_agg_new(MIN, 15 * MIN, NULL);
    fg_status st;
    fg_checkin c = mk("d1", "CN", "CU", 0, 0);
    FG_CHECK_INT(sc_agg_add(a, 100, &c, NOW, 100, NOW, &st), SC_ADD_FENCED);
    FG_CHECK_INT(sc_agg_add(a, 101, &c, NOW, 100, NOW, &st), SC_ADD_COUNTED);
    FG_CHECK_INT(sc_agg_add(a, 102, &c, NOW - 15 * MIN - 1, -1, NOW, &st),
                 SC_ADD_TOO_OLD);
    FG_CHECK_INT(sc_agg_add(a, 103, &c, NOW - 15 * MIN, -1, NOW, &st),
                 SC_ADD_COUNTED);
    FG_CHECK_INT(st, FG_OK);
    sc_agg_free(a);
}

static void test_many_devices_and_expiry(void)
{
    sc_agg *a = sc_agg_new(MIN, 15 * MIN, NULL);
    fg_status st = FG_OK;
    char dev[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(dev, sizeof(dev), "dev-%05d", i);
        fg_checkin c = mk(dev, i % 4 ? "CU" : "CN", "CU", 1, 1);
        sc_agg_add(a, i, &c, NOW, -1, NOW - (i < 1000 ? 20 * MIN : 0), &st);
    }
    FG_CHECK_INT(st, FG_OK);
    const sc_bucket *b;
    FG_CHECK_INT(sc_agg_buckets(a, 0, &b), 1);
    FG_CHECK_INT(b[0].ndevices, 5000);
    FG_CHECK_INT(b[0].ngrey, 1250);
    FG_CHECK_INT(b[0].checkins, 5000);
    FG_CHECK_INT(sc_agg_seq_entries(a), 5000);
    sc_agg_expire(a, NOW); /* pending journal: nothing may be dropped */
    FG_CHECK_INT(sc_agg_seq_entries(a), 5000);
    sc_agg_seal(a);
    sc_agg_commit(a);
    sc_agg_expire(a, NOW); /* the first 1000 were last seen 20 min ago */
    FG_CHECK_INT(sc_agg_seq_entries(a), 4000);
    sc_agg_free(a);
}

static void test_rollback_restores_seq_memory(void)
{
    sc_agg *a = sc_agg_new(MIN, 15 * MIN, NULL);
    fg_status st;
    fg_checkin s5 = mk("d1", "CN", "CU", 1, 5);
    fg_checkin s6 = mk("d1", "CN", "CU", 1, 6);
    fg_checkin e1 = mk("d2", "CN", "CU", 1, 1);
    /* Batch 1 is taken by Redis. */
    FG_CHECK_INT(sc_agg_add(a, 1, &s5, NOW, -1, NOW, &st), SC_ADD_COUNTED);
    sc_agg_seal(a);
    sc_agg_reset(a);
    sc_agg_commit(a);
    /* Batch 2 is sent, batch 3 fills, then Redis fails batch 2. */
    FG_CHECK_INT(sc_agg_add(a, 2, &s6, NOW, -1, NOW, &st), SC_ADD_COUNTED);
    sc_agg_seal(a);
    sc_agg_reset(a);
    FG_CHECK_INT(sc_agg_add(a, 3, &e1, NOW, -1, NOW, &st), SC_ADD_COUNTED);
    sc_agg_rollback(a);
    FG_CHECK_INT(sc_agg_regions(a), 0);
    /* The replay from offset 2 counts both again, but seq 5 stays seen. */
    FG_CHECK_INT(sc_agg_add(a, 2, &s6, NOW, -1, NOW, &st), SC_ADD_COUNTED);
    FG_CHECK_INT(sc_agg_add(a, 3, &e1, NOW, -1, NOW, &st), SC_ADD_COUNTED);
    FG_CHECK_INT(sc_agg_add(a, 4, &s5, NOW, -1, NOW, &st), SC_ADD_DUPLICATE);
    FG_CHECK_INT(sc_agg_seq_entries(a), 2);
    sc_agg_free(a);
}

static void test_fenced_replay_rebuilds_seq_memory(void)
{
    sc_agg *a = sc_agg_new(MIN, 15 * MIN, NULL);
    fg_status st;
    fg_checkin s7 = mk("d9", "CN", "CU", 1, 7);
    /* A new owner re-reads the window before its resume point (fence 50). */
    FG_CHECK_INT(sc_agg_add(a, 40, &s7, NOW, 50, NOW, &st), SC_ADD_FENCED);
    FG_CHECK_INT(sc_agg_regions(a), 0); /* nothing to apply */
    sc_agg_rollback(a);                 /* a failed batch must not undo it */
    /* A device retry of seq 7 after the resume point is a duplicate. */
    FG_CHECK_INT(sc_agg_add(a, 60, &s7, NOW, 50, NOW, &st), SC_ADD_DUPLICATE);
    sc_agg_free(a);
}

/* More regions than the region index starts with, over two batches: each
 * keeps its own counts, and a reset forgets the first batch's regions. */
static void test_many_regions_across_batches(void)
{
    sc_agg *a = sc_agg_new(MIN, 15 * MIN, NULL);
    fg_status st = FG_OK;
    char region[8], dev[32];
    for (int round = 0; round < 2; round++) {
        int nreg = round ? 300 : 600;
        for (int i = 0; i < 3 * nreg; i++) {
            int r = (i * 7) % nreg; /* not in first-seen order */
            snprintf(region, sizeof(region), "%c%c-%d", 'A' + r % 26,
                     'A' + r / 26 % 26, r % 7);
            snprintf(dev, sizeof(dev), "dev-%d", r);
            fg_checkin c = mk(dev, region, region, 0, 0);
            FG_CHECK_INT(sc_agg_add(a, i, &c, NOW, -1, NOW, &st),
                         SC_ADD_COUNTED);
        }
        FG_CHECK_INT(st, FG_OK);
        FG_CHECK_INT(sc_agg_regions(a), nreg);
        int ok = 0;
        for (int r = 0; r < nreg; r++) {
            snprintf(region, sizeof(region), "%c%c-%d", 'A' + r % 26,
                     'A' + r / 26 % 26, r % 7);
            size_t ri = region_index(a, region);
            const sc_bucket *b;
            if (ri != (size_t)-1 && sc_agg_buckets(a, ri, &b) == 1 &&
                b[0].checkins == 3 && b[0].ndevices == 1)
                ok++;
        }
        FG_CHECK_INT(ok, nreg);
        sc_agg_reset(a);
        FG_CHECK_INT(sc_agg_regions(a), 0);
    }
    sc_agg_free(a);
}

/* Device ids that share prefixes or differ only in their last byte, at
 * lengths around the hash's 8-byte words, are distinct devices. */
static void test_similar_device_ids(void)
{
    static const char *ids[] = {"d", "d1", "d10", "d100", "abcdefg",
                                "abcdefgh", "abcdefgi", "abcdefghi",
                                "abcdefghj", "abcdefghabcdefgh",
                                "abcdefghabcdefgi", "abcdefghabcdefgh1"};
    size_t n = sizeof(ids) / sizeof(ids[0]);
    sc_agg *a = sc_agg_new(MIN, 15 * MIN, NULL);
    fg_status st;
    for (size_t i = 0; i < n; i++) {
        fg_checkin c = mk(ids[i], "CN", "CU", 1, 3);
        FG_CHECK_INT(sc_agg_add(a, (int64_t)i, &c, NOW, -1, NOW, &st),
                     SC_ADD_COUNTED);
    }
    for (size_t i = 0; i < n; i++) {
        fg_checkin c = mk(ids[i], "CN", "CU", 1, 3);
        FG_CHECK_INT(sc_agg_add(a, (int64_t)(n + i), &c, NOW, -1, NOW, &st),
                     SC_ADD_DUPLICATE);
    }
    const sc_bucket *b;
    FG_CHECK_INT(sc_agg_buckets(a, 0, &b), 1);
    FG_CHECK_INT(b[0].checkins, n);
    FG_CHECK_INT(b[0].ndevices, n);
    FG_CHECK_INT(b[0].ngrey, n);
    FG_CHECK_INT(sc_agg_seq_entries(a), n);
    for (size_t i = 0; i < n; i++)
        FG_CHECK_STR(b[0].devices[i], ids[i]);
    sc_agg_free(a);
}

FG_TEST_MAIN(test_many_regions_across_batches, test_similar_device_ids,
             test_fenced_replay_rebuilds_seq_memory, test_rollback_restores_seq_memory, test_groups_by_region_and_bucket, test_duplicate_seq_counts_once,
             test_fence_and_window, test_many_devices_and_expiry)
