/* SPDX-License-Identifier: Apache-2.0 */
/* Redis side of the scorer: Lua scripts and the argument vectors they take.
 * Key names are documented in docs/design-scorer.md. */
#include "sc_store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* KEYS[1] fence hash, then per bucket n, d, g keys.
 * ARGV: partition, expected, new, nbuckets, then per bucket:
 *       expire_at_ms, checkins, ndevices, devices..., ngrey, grey...
 * Keys expire (PEXPIREAT) when their bucket leaves the window; the fence an
 * hour after the newest of them. */
static const char apply_lua[] =
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not cur then cur = '-1' end\n"
    "if cur ~= ARGV[2] then return {0, cur} end\n"
    "local a = 5\n"
    "local k = 2\n"
    "local maxttl = 0\n"
    "for b = 1, tonumber(ARGV[4]) do\n"
    "  local ttl = tonumber(ARGV[a]); a = a + 1\n"
    "  if ttl > maxttl then maxttl = ttl end\n"
    "  local n = tonumber(ARGV[a]); a = a + 1\n"
    "  if n > 0 then\n"
    "    redis.call('INCRBY', KEYS[k], n)\n"
    "    redis.call('PEXPIREAT', KEYS[k], ttl)\n"
    "  end\n"
    "  for j = 1, 2 do\n"
    "    local cnt = tonumber(ARGV[a]); a = a + 1\n"
    "    local i = 0\n"
    "    while i < cnt do\n"
    "      local m = math.min(cnt - i, 1000)\n"
    "      redis.call('PFADD', KEYS[k + j], unpack(ARGV, a + i, a + i + m - 1))\n"
    "      i = i + m\n"
    "    end\n"
    "    if cnt > 0 then redis.call('PEXPIREAT', KEYS[k + j], ttl) end\n"
    "    a = a + cnt\n"
    "  end\n"
    "  k = k + 3\n"
    "end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])\n"
    "redis.call('PEXPIREAT', KEYS[1], maxttl + 3600000)\n"
    "return {1, ARGV[3]}\n";

/* KEYS: w counters, w device HLLs, w grey HLLs. ARGV[1] = w. */
static const char window_lua[] =
    "local w = tonumber(ARGV[1])\n"
    "local sum = 0\n"
    "local vals = redis.call('MGET', unpack(KEYS, 1, w))\n"
    "for i = 1, w do if vals[i] then sum = sum + tonumber(vals[i]) end end\n"
    "local d = redis.call('PFCOUNT', unpack(KEYS, w + 1, 2 * w))\n"
    "local g = redis.call('PFCOUNT', unpack(KEYS, 2 * w + 1, 3 * w))\n"
    "return {sum, d, g}\n";

/* KEYS[1] owner, KEYS[2] token. ARGV: owner, ttl_ms. */
static const char lease_lua[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "end\n"
    "if not cur then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "  return redis.call('INCR', KEYS[2])\n"
    "end\n"
    "return 0\n";

/* KEYS[1] decision hash. ARGV: token, record, ttl_ms. */
static const char mirror_lua[] =
    "local t = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')\n"
    "if tonumber(ARGV[1]) < t then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'token', ARGV[1], 'record', ARGV[2])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "return 1\n";

struct sc_store {
    fg_redis *r;
    char *topic;
    int64_t bucket_ms, window_ms;
    fg_redis_script *apply, *window, *lease, *mirror;
};

sc_store *sc_store_new(fg_redis *r, const char *topic, int64_t bucket_ms,
                       int64_t window_ms)
{
    sc_store *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->r = r;
    s->topic = strdup(topic);
    s->bucket_ms = bucket_ms;
    s->window_ms = window_ms;
    s->apply = fg_redis_script_new(r, apply_lua);
    s->window = fg_redis_script_new(r, window_lua);
    s->lease = fg_redis_script_new(r, lease_lua);
    s->mirror = fg_redis_script_new(r, mirror_lua);
    if (!s->topic || !s->apply || !s->window || !s->lease || !s->mirror) {
        sc_store_free(s);
        return NULL;
    }
    return s;
}

void sc_store_free(sc_store *s)
{
    if (!s)
        return;
    /* Scripts are owned by the fg_redis connection. */
    free(s->topic);
    free(s);
}

int sc_store_up(const sc_store *s)
{
    return fg_redis_is_up(s->r);
}

/* ---- partition load ---- */

typedef struct load_ctx {
    sc_store *s;
    int32_t partition;
    sc_store_load_cb cb;
    void *ud;
    char **regions;
    int64_t *fences;
    size_t n, got;
    int failed;
    int64_t resume;
} load_ctx;

static void load_finish(load_ctx *lc, int ok)
{
    lc->cb(lc->ud, ok && !lc->failed, (const char *const *)lc->regions,
           lc->fences, lc->n, lc->resume);
    for (size_t i = 0; i < lc->n; i++)
        free(lc->regions[i]);
    free(lc->regions);
    free(lc->fences);
    free(lc);
}

static void on_resume(void *ud, const fg_redis_result *res)
{
    load_ctx *lc = ud;
    if (res->outcome != FG_REDIS_REPLY) {
        load_finish(lc, 0);
        return;
    }
    if (res->reply->type == REDIS_REPLY_STRING)
        lc->resume = strtoll(res->reply->str, NULL, 10);
    load_finish(lc, 1);
}

static void load_resume(load_ctx *lc)
{
    if (fg_redis_command(lc->s->r, on_resume, lc, "GET fg:{p:%s:%d}:resume",
                         lc->s->topic, (int)lc->partition) != FG_OK)
        load_finish(lc, 0);
}

typedef struct fence_ctx {
    load_ctx *lc;
    size_t i;
} fence_ctx;

static void on_fence(void *ud, const fg_redis_result *res)
{
    fence_ctx *fc = ud;
    load_ctx *lc = fc->lc;
    if (res->outcome != FG_REDIS_REPLY)
        lc->failed = 1;
    else if (res->reply->type == REDIS_REPLY_STRING)
        lc->fences[fc->i] = strtoll(res->reply->str, NULL, 10);
    free(fc);
    if (++lc->got == lc->n) {
        if (lc->failed)
            load_finish(lc, 0);
        else
            load_resume(lc);
    }
}

static void on_members(void *ud, const fg_redis_result *res)
{
    load_ctx *lc = ud;
    if (res->outcome != FG_REDIS_REPLY ||
        res->reply->type != REDIS_REPLY_ARRAY) {
        load_finish(lc, 0);
        return;
    }
    size_t n = res->reply->elements;
    if (n == 0) {
        load_resume(lc);
        return;
    }
    lc->regions = calloc(n, sizeof(*lc->regions));
    lc->fences = calloc(n, sizeof(*lc->fences));
    if (!lc->regions || !lc->fences) {
        load_finish(lc, 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        lc->regions[i] = strdup(res->reply->element[i]->str);
        lc->fences[i] = -1;
        if (!lc->regions[i])
            lc->failed = 1;
    }
    lc->n = n;
    if (lc->failed) {
        load_finish(lc, 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        fence_ctx *fc = malloc(sizeof(*fc));
        if (fc) {
            fc->lc = lc;
            fc->i = i;
        }
        if (!fc ||
            fg_redis_command(lc->s->r, on_fence, fc, "HGET fg:{%s}:fence %d",
                             lc->regions[i], (int)lc->partition) != FG_OK) {
            free(fc);
            lc->failed = 1;
            if (++lc->got == lc->n)
                load_finish(lc, 0);
        }
    }
}

fg_status sc_store_load_partition(sc_store *s, int32_t partition,
                                  sc_store_load_cb cb, void *ud)
{
    load_ctx *lc = calloc(1, sizeof(*lc));
    if (!lc)
        return FG_ENOMEM;
    lc->s = s;
    lc->partition = partition;
    lc->cb = cb;
    lc->ud = ud;
    lc->resume = -1;
    fg_status st = fg_redis_command(s->r, on_members, lc,
                                    "SMEMBERS fg:{p:%s:%d}:regions", s->topic,
                                    (int)partition);
    if (st != FG_OK)
        free(lc);
    return st;
}

/* ---- apply ---- */

typedef struct simple_ctx {
    sc_store_cb cb;
    void *ud;
    int want; /* 0: any non-error reply; 1: array {1, ...}; 2: integer 1 */
} simple_ctx;

static void on_simple(void *ud, const fg_redis_result *res)
{
    simple_ctx *sc = ud;
    int ok = res->outcome == FG_REDIS_REPLY;
    const char *err = res->err;
    if (ok && sc->want == 1) {
        ok = res->reply->type == REDIS_REPLY_ARRAY &&
             res->reply->elements == 2 &&
             res->reply->element[0]->type == REDIS_REPLY_INTEGER &&
             res->reply->element[0]->integer == 1;
        if (!ok)
            err = "fence";
    } else if (ok && sc->want == 2) {
        ok = res->reply->type == REDIS_REPLY_INTEGER &&
             res->reply->integer == 1;
        if (!ok)
            err = "stale";
    }
    if (sc->cb)
        sc->cb(sc->ud, ok, err);
    free(sc);
}

static simple_ctx *simple_new(sc_store_cb cb, void *ud, int want)
{
    simple_ctx *sc = malloc(sizeof(*sc));
    if (sc) {
        sc->cb = cb;
        sc->ud = ud;
        sc->want = want;
    }
    return sc;
}

fg_status sc_store_register(sc_store *s, int32_t partition,
                            const char *const *regions, size_t n,
                            sc_store_cb cb, void *ud)
{
    fg_redis_args a = {0};
    fg_redis_args_str(&a, "SADD");
    fg_redis_args_fmt(&a, "fg:{p:%s:%d}:regions", s->topic, (int)partition);
    for (size_t i = 0; i < n; i++)
        fg_redis_args_str(&a, regions[i]);
    simple_ctx *sc = simple_new(cb, ud, 0);
    fg_status st = sc ? fg_redis_args_command(s->r, on_simple, sc, &a)
                      : FG_ENOMEM;
    if (st != FG_OK)
        free(sc);
    fg_redis_args_free(&a);
    return st;
}

fg_status sc_store_apply(sc_store *s, const sc_agg *agg, size_t i,
                         int32_t partition, int64_t expected,
                         int64_t new_fence, sc_store_cb cb, void *ud)
{
    const char *region = sc_agg_region(agg, i);
    const sc_bucket *b;
    size_t nb = sc_agg_buckets(agg, i, &b);
    fg_redis_args a = {0};
    int nkeys = 1 + 3 * (int)nb;
    fg_redis_args_fmt(&a, "fg:{%s}:fence", region);
    for (size_t j = 0; j < nb; j++) {
        fg_redis_args_fmt(&a, "fg:{%s}:n:%" PRId64, region, b[j].bucket);
        fg_redis_args_fmt(&a, "fg:{%s}:d:%" PRId64, region, b[j].bucket);
        fg_redis_args_fmt(&a, "fg:{%s}:g:%" PRId64, region, b[j].bucket);
    }
    fg_redis_args_fmt(&a, "%d", (int)partition);
    fg_redis_args_fmt(&a, "%" PRId64, expected);
    fg_redis_args_fmt(&a, "%" PRId64, new_fence);
    fg_redis_args_fmt(&a, "%zu", nb);
    for (size_t j = 0; j < nb; j++) {
        /* A bucket is read until its end falls out of the window. */
        int64_t expire_at = (b[j].bucket + 1) * s->bucket_ms + s->window_ms;
        fg_redis_args_fmt(&a, "%" PRId64, expire_at);
        fg_redis_args_fmt(&a, "%" PRIu64, b[j].checkins);
        fg_redis_args_fmt(&a, "%zu", b[j].ndevices);
        for (size_t k = 0; k < b[j].ndevices; k++)
            fg_redis_args_str(&a, b[j].devices[k]);
        fg_redis_args_fmt(&a, "%zu", b[j].ngrey);
        for (size_t k = 0; k < b[j].ngrey; k++)
            fg_redis_args_str(&a, b[j].grey[k]);
    }
    simple_ctx *sc = simple_new(cb, ud, 1);
    fg_status st = sc ? fg_redis_args_eval(s->r, s->apply, on_simple, sc,
                                           nkeys, &a)
                      : FG_ENOMEM;
    if (st != FG_OK)
        free(sc);
    fg_redis_args_free(&a);
    return st;
}

fg_status sc_store_checkpoint(sc_store *s, int32_t partition, int64_t offset,
                              const char *const *regions, size_t n,
                              int64_t now_ms)
{
    fg_status st = fg_redis_command(s->r, NULL, NULL,
                                    "SET fg:{p:%s:%d}:resume %" PRId64,
                                    s->topic, (int)partition, offset);
    if (st != FG_OK || n == 0)
        return st;
    fg_redis_args a = {0};
    fg_redis_args_str(&a, "ZADD");
    fg_redis_args_str(&a, "fg:{active}:regions");
    for (size_t i = 0; i < n; i++) {
        fg_redis_args_fmt(&a, "%" PRId64, now_ms);
        fg_redis_args_str(&a, regions[i]);
    }
    st = fg_redis_args_command(s->r, NULL, NULL, &a);
    fg_redis_args_free(&a);
    return st;
}

/* ---- evaluator reads ---- */

typedef struct regions_ctx {
    sc_store_regions_cb cb;
    void *ud;
} regions_ctx;

static void on_regions(void *ud, const fg_redis_result *res)
{
    regions_ctx *rc = ud;
    if (res->outcome != FG_REDIS_REPLY ||
        res->reply->type != REDIS_REPLY_ARRAY) {
        rc->cb(rc->ud, 0, NULL, 0);
        free(rc);
        return;
    }
    size_t n = res->reply->elements;
    const char **names = malloc((n ? n : 1) * sizeof(*names));
    if (!names) {
        rc->cb(rc->ud, 0, NULL, 0);
        free(rc);
        return;
    }
    for (size_t i = 0; i < n; i++)
        names[i] = res->reply->element[i]->str;
    rc->cb(rc->ud, 1, names, n);
    free(names);
    free(rc);
}

fg_status sc_store_active_regions(sc_store *s, int64_t now_ms,
                                  sc_store_regions_cb cb, void *ud)
{
    int64_t from = now_ms - s->window_ms;
    fg_redis_command(s->r, NULL, NULL,
                     "ZREMRANGEBYSCORE fg:{active}:regions -inf (%" PRId64,
                     from);
    regions_ctx *rc = malloc(sizeof(*rc));
    if (!rc)
        return FG_ENOMEM;
    rc->cb = cb;
    rc->ud = ud;
    fg_status st = fg_redis_command(s->r, on_regions, rc,
                                    "ZRANGEBYSCORE fg:{active}:regions %" PRId64
                                    " +inf",
                                    from);
    if (st != FG_OK)
        free(rc);
    return st;
}

typedef struct window_ctx {
    sc_store_window_cb cb;
    void *ud;
    char region[FG_REGION_MAX + 1];
} window_ctx;

static void on_window(void *ud, const fg_redis_result *res)
{
    window_ctx *wc = ud;
    const redisReply *r = res->reply;
    if (res->outcome != FG_REDIS_REPLY || r->type != REDIS_REPLY_ARRAY ||
        r->elements != 3) {
        wc->cb(wc->ud, 0, wc->region, 0, 0, 0);
    } else {
        wc->cb(wc->ud, 1, wc->region, r->element[0]->integer,
               r->element[1]->integer, r->element[2]->integer);
    }
    free(wc);
}

fg_status sc_store_read_window(sc_store *s, const char *region, int64_t now_ms,
                               sc_store_window_cb cb, void *ud)
{
    int64_t w = s->window_ms / s->bucket_ms;
    int64_t last = now_ms / s->bucket_ms;
    fg_redis_args a = {0};
    static const char kinds[] = {'n', 'd', 'g'};
    for (int k = 0; k < 3; k++)
        for (int64_t b = last - w + 1; b <= last; b++)
            fg_redis_args_fmt(&a, "fg:{%s}:%c:%" PRId64, region, kinds[k], b);
    fg_redis_args_fmt(&a, "%" PRId64, w);
    window_ctx *wc = malloc(sizeof(*wc));
    fg_status st = FG_ENOMEM;
    if (wc) {
        wc->cb = cb;
        wc->ud = ud;
        snprintf(wc->region, sizeof(wc->region), "%s", region);
        st = fg_redis_args_eval(s->r, s->window, on_window, wc, (int)(3 * w),
                                &a);
        if (st != FG_OK)
            free(wc);
    }
    fg_redis_args_free(&a);
    return st;
}

typedef struct lease_ctx {
    sc_store_lease_cb cb;
    void *ud;
} lease_ctx;

static void on_lease(void *ud, const fg_redis_result *res)
{
    lease_ctx *lc = ud;
    if (res->outcome != FG_REDIS_REPLY ||
        res->reply->type != REDIS_REPLY_INTEGER)
        lc->cb(lc->ud, 0, 0);
    else
        lc->cb(lc->ud, 1, res->reply->integer);
    free(lc);
}

fg_status sc_store_lease(sc_store *s, const char *owner, int64_t ttl_ms,
                         sc_store_lease_cb cb, void *ud)
{
    fg_redis_args a = {0};
    fg_redis_args_str(&a, "fg:{lease}:owner");
    fg_redis_args_str(&a, "fg:{lease}:token");
    fg_redis_args_str(&a, owner);
    fg_redis_args_fmt(&a, "%" PRId64, ttl_ms);
    lease_ctx *lc = malloc(sizeof(*lc));
    fg_status st = FG_ENOMEM;
    if (lc) {
        lc->cb = cb;
        lc->ud = ud;
        st = fg_redis_args_eval(s->r, s->lease, on_lease, lc, 2, &a);
        if (st != FG_OK)
            free(lc);
    }
    fg_redis_args_free(&a);
    return st;
}

fg_status sc_store_mirror(sc_store *s, const char *region, uint64_t token,
                          const char *record, size_t len, sc_store_cb cb,
                          void *ud)
{
    fg_redis_args a = {0};
    fg_redis_args_fmt(&a, "fg:{%s}:decision", region);
    fg_redis_args_fmt(&a, "%" PRIu64, token);
    fg_redis_args_add(&a, record, len);
    fg_redis_args_fmt(&a, "%" PRId64, (int64_t)8 * 86400000);
    simple_ctx *sc = simple_new(cb, ud, 2);
    fg_status st = sc ? fg_redis_args_eval(s->r, s->mirror, on_simple, sc, 1,
                                           &a)
                      : FG_ENOMEM;
    if (st != FG_OK)
        free(sc);
    fg_redis_args_free(&a);
    return st;
}
