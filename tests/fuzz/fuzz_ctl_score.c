/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz driver for ctl_score_decode (rows of fleet.region-scores, msgpack or
 * JSON). An accepted row must hold a valid region code, counts and numbers
 * in range and a mode that can go into the API's JSON as is; and both
 * encodings must agree: the row written back as msgpack and as JSON decodes
 * to the same row, field for field. */
#include <math.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_state.h"
#include "fuzz_ctl.h"

/* Largest count either encoding accepts (exact in a double). */
#define FZ_COUNT_MAX 9.0e15

static void same_or_abort(const ctl_score *a, const ctl_score *b)
{
    if (strcmp(a->region, b->region) != 0 || a->ts != b->ts ||
        a->devices != b->devices || a->grey != b->grey ||
        memcmp(&a->share, &b->share, sizeof(double)) != 0 ||
        memcmp(&a->lo, &b->lo, sizeof(double)) != 0 ||
        memcmp(&a->hi, &b->hi, sizeof(double)) != 0 ||
        strcmp(a->mode, b->mode) != 0)
        abort();
}

static void pack_key(msgpack_packer *pk, const char *k)
{
    msgpack_pack_str(pk, strlen(k));
    msgpack_pack_str_body(pk, k, strlen(k));
}

static void via_msgpack(const ctl_score *s)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    ctl_score back;
    char err[128];

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, s->mode[0] ? 8 : 7);
    pack_key(&pk, "region");
    pack_key(&pk, s->region);
    pack_key(&pk, "ts");
    msgpack_pack_int64(&pk, s->ts);
    pack_key(&pk, "devices");
    msgpack_pack_int64(&pk, s->devices);
    pack_key(&pk, "grey");
    msgpack_pack_int64(&pk, s->grey);
    pack_key(&pk, "share");
    msgpack_pack_double(&pk, s->share);
    pack_key(&pk, "lo");
    msgpack_pack_double(&pk, s->lo);
    pack_key(&pk, "hi");
    msgpack_pack_double(&pk, s->hi);
    if (s->mode[0]) {
        pack_key(&pk, "mode");
        pack_key(&pk, s->mode);
    }
    if (ctl_score_decode(sb.data, sb.size, &back, err, sizeof(err)) != FG_OK)
        abort();
    same_or_abort(s, &back);
    msgpack_sbuffer_destroy(&sb);
}

static void via_json(const ctl_score *s)
{
    yajl_gen g = fz_gen();
    const unsigned char *buf;
    size_t len;
    ctl_score back;
    char err[128];

    fz_ok(yajl_gen_map_open(g));
    fz_key(g, "region");
    fz_key(g, s->region);
    fz_key(g, "ts");
    fz_ok(yajl_gen_integer(g, s->ts));
    fz_key(g, "devices");
    fz_ok(yajl_gen_integer(g, s->devices));
    fz_key(g, "grey");
    fz_ok(yajl_gen_integer(g, s->grey));
    fz_key(g, "share");
    fz_ok(yajl_gen_double(g, s->share));
    fz_key(g, "lo");
    fz_ok(yajl_gen_double(g, s->lo));
    fz_key(g, "hi");
    fz_ok(yajl_gen_double(g, s->hi));
    if (s->mode[0]) {
        fz_key(g, "mode");
        fz_key(g, s->mode); /* the API writes it the same way */
    }
    fz_ok(yajl_gen_map_close(g));
    fz_ok(yajl_gen_get_buf(g, &buf, &len));
    if (ctl_score_decode((const char *)buf, len, &back, err, sizeof(err)) !=
        FG_OK)
        abort();
    same_or_abort(s, &back);
    yajl_gen_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ctl_score s;
    char err[128];

    if (ctl_score_decode((const char *)data, size, &s, err, sizeof(err)) !=
        FG_OK)
        return 0;
    if (!fg_region_valid(s.region, strlen(s.region)))
        abort();
    if (s.ts < 0 || s.ts > FZ_COUNT_MAX || s.devices < 0 ||
        s.devices > FZ_COUNT_MAX || s.grey < 0 || s.grey > FZ_COUNT_MAX)
        abort();
    if (!isfinite(s.share) || s.share < 0 || !isfinite(s.lo) || s.lo < 0 ||
        !isfinite(s.hi) || s.hi < 0)
        abort();
    fz_check_str(s.mode, sizeof(s.mode));
    via_msgpack(&s);
    via_json(&s);
    return 0;
}
