/* SPDX-License-Identifier: Apache-2.0 */
/* Redis side of the control service: the write script, the resync walk that
 * repairs lost writes from memory, and the start-up load of the history.
 * Key layout in ctl_store.h. */
#include "ctl_store.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <yajl/yajl_gen.h>

#include "fg_log.h"
#include "fg_redis.h"

/* Regions read back at once during the load. */
#define LOAD_WINDOW 64
/* Regions pushed per tick by the resync, which also leaves the connection
 * room for live writes. */
#define WALK_BATCH 64
#define WALK_INFLIGHT_MAX 256
#define TICK_MS 100
/* A load that failed with Redis up is tried again after this. */
#define LOAD_RETRY_MS 5000

/* KEYS: now, scores, locks of one region. ARGV: the view (JSON; '' leaves
 * it), the TTL in ms, then for scores and for locks: n, how many to keep,
 * n (score, member) pairs. ZADD makes a repeated write harmless. */
static const char put_lua[] =
    "local ttl = ARGV[2]\n"
    "if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl) end\n"
    "local a = 3\n"
    "for k = 2, 3 do\n"
    "  local n = tonumber(ARGV[a])\n"
    "  local keep = tonumber(ARGV[a + 1])\n"
    "  a = a + 2\n"
    "  if n > 0 then\n"
    "    redis.call('ZADD', KEYS[k], unpack(ARGV, a, a + 2 * n - 1))\n"
    "    redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -keep - 1)\n"
    "    a = a + 2 * n\n"
    "  end\n"
    "  redis.call('PEXPIRE', KEYS[k], ttl)\n"
    "end\n"
    "return 1\n";

/* KEYS: scores, locks. ARGV: how many of each (the newest). */
static const char load_lua[] =
    "return {redis.call('ZRANGE', KEYS[1], -tonumber(ARGV[1]), -1),\n"
    "        redis.call('ZRANGE', KEYS[2], -tonumber(ARGV[2]), -1)}\n";

struct ctl_store {
    ctl_state *st;
    fg_redis *r;
    fg_redis_script *put, *load;
    char prefix[CTL_STORE_PREFIX_MAX + 1];
    int64_t ttl_ms;
    size_t scores, locks;
    struct event *tick;
    int closing;
    /* writes */
    int failing;   /* writes are being lost (logged once per episode) */
    uint64_t lost; /* in the current episode */
    int resync;    /* push every region again once possible */
    int walking;
    size_t walk;   /* next region index of the resync */
    /* load */
    int loaded, loading, load_failed;
    unsigned load_gen;
    int64_t load_retry_at, load_started;
    char (*load_regions)[FG_REGION_MAX + 1];
    size_t load_n, load_next, load_inflight;
    size_t load_rows, load_records;
    fg_counter *c_write_err, *c_load_err;
    fg_gauge *g_up, *g_loaded;
};

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int ctl_store_prefix_ok(const char *prefix)
{
    size_t n = prefix ? strlen(prefix) : 0;
    if (n == 0 || n > CTL_STORE_PREFIX_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)prefix[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '{' || ch == '}')
            return 0;
    }
    return 1;
}

/* ---- command arguments ---- */

/* Copies the JSON g holds as one argument and frees g (NULL: a failed). */
static void args_json(fg_redis_args *a, yajl_gen g)
{
    const unsigned char *buf = NULL;
    size_t len = 0;
    if (!g || yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok)
        fg_redis_args_fail(a);
    else
        fg_redis_args_add(a, buf, len);
    if (g)
        yajl_gen_free(g);
}

static yajl_gen gen_new(void)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (g)
        yajl_gen_config(g, yajl_gen_validate_utf8, 1);
    return g;
}

/* ---- writes ---- */

static void write_ok(ctl_store *s)
{
    if (!s->failing)
        return;
    fg_log_info("history_stored_again", "lost=%" PRIu64 " resync=%d",
                s->lost, s->resync);
    s->failing = 0;
    s->lost = 0;
}

/* A write Redis did not take. repair: it may not have run (refused,
 * timeout, connection lost), so the next resync pushes everything again;
 * an error reply would only fail again. */
static void write_lost(ctl_store *s, int repair, const char *why)
{
    char q[160];
    fg_counter_add(s->c_write_err, 1);
    s->lost++;
    if (repair)
        s->resync = 1;
    if (!s->failing) {
        s->failing = 1;
        fg_log_warn("history_not_stored", "err=%s resync=%d",
                    fg_log_quote(why, q, sizeof(q)), repair);
    }
}

static void on_written(void *ud, const fg_redis_result *res)
{
    ctl_store *s = ud;
    if (s->closing)
        return;
    if (res->outcome == FG_REDIS_REPLY)
        write_ok(s);
    else
        write_lost(s, res->outcome != FG_REDIS_ERROR_REPLY, res->err);
}

static const char *refusal(const ctl_store *s, fg_status st)
{
    if (st != FG_AGAIN)
        return fg_status_str(st);
    return fg_redis_is_up(s->r) ? "too_many_in_flight" : "redis_down";
}

/* The keys of put_lua, the view of r and the TTL. */
static void put_head(ctl_store *s, fg_redis_args *a, const ctl_region *r)
{
    fg_redis_args_fmt(a, "%s:{%s}:now", s->prefix, r->region);
    fg_redis_args_fmt(a, "%s:{%s}:scores", s->prefix, r->region);
    fg_redis_args_fmt(a, "%s:{%s}:locks", s->prefix, r->region);
    yajl_gen g = gen_new();
    if (g)
        ctl_region_json(g, r, now_ms());
    args_json(a, g);
    fg_redis_args_fmt(a, "%" PRId64, s->ttl_ms);
}

/* A score row's member: decodable by ctl_score_decode. */
static void put_score(fg_redis_args *a, const char *region, const ctl_score_row *row)
{
    fg_redis_args_fmt(a, "%" PRId64, row->ts);
    yajl_gen g = gen_new();
    if (g)
        ctl_score_row_json(g, region, row);
    args_json(a, g);
}

/* Sends c (put_lua) and, when Redis took it, the region's index entry. */
static void put_send(ctl_store *s, fg_redis_args *a, const char *region)
{
    fg_status st = fg_redis_args_eval(s->r, s->put, on_written, s, 3, a);
    if (st != FG_OK) {
        write_lost(s, 1, refusal(s, st));
        return;
    }
    st = fg_redis_command(s->r, on_written, s, "ZADD %s:regions %" PRId64 " %s",
                          s->prefix, now_ms(), region);
    if (st != FG_OK)
        write_lost(s, 1, refusal(s, st));
}

void ctl_store_put(ctl_store *s, const ctl_region *r, const ctl_score_row *row,
                   const fg_lock *lk)
{
    char rec[FG_LOCK_RECORD_MAX];
    if (!fg_redis_is_up(s->r)) {
        write_lost(s, 1, "redis_down");
        return;
    }
    size_t len = lk ? fg_lock_encode(lk, rec, sizeof(rec)) : 0;
    fg_redis_args a = {0};
    put_head(s, &a, r);
    fg_redis_args_fmt(&a, "%d", row ? 1 : 0);
    fg_redis_args_fmt(&a, "%zu", s->scores);
    if (row)
        put_score(&a, r->region, row);
    fg_redis_args_fmt(&a, "%d", len ? 1 : 0);
    fg_redis_args_fmt(&a, "%zu", s->locks);
    if (len) {
        fg_redis_args_fmt(&a, "%" PRId64, lk->since);
        fg_redis_args_ref(&a, rec, len);
    }
    put_send(s, &a, r->region);
    fg_redis_args_free(&a);
}

/* The resync: r's view and whole history, again. */
static void walk_region(ctl_store *s, const ctl_region *r)
{
    const ctl_history *h = ctl_state_history(s->st, r->region);
    size_t ns = ctl_history_scores(h), nl = ctl_history_locks(h);
    fg_redis_args a = {0};
    put_head(s, &a, r);
    fg_redis_args_fmt(&a, "%zu", ns);
    fg_redis_args_fmt(&a, "%zu", s->scores);
    for (size_t i = 0; i < ns; i++)
        put_score(&a, r->region, ctl_history_score(h, i));
    fg_redis_args_fmt(&a, "%zu", nl);
    fg_redis_args_fmt(&a, "%zu", s->locks);
    for (size_t i = 0; i < nl; i++) {
        size_t len = 0;
        int64_t since = 0;
        const char *rec = ctl_history_lock(h, i, &len, &since);
        fg_redis_args_fmt(&a, "%" PRId64, since);
        fg_redis_args_ref(&a, rec, len);
    }
    put_send(s, &a, r->region);
    fg_redis_args_free(&a);
}

static void walk_step(ctl_store *s)
{
    fg_redis_stats rs;
    size_t n = ctl_state_count(s->st);
    fg_redis_stats_get(s->r, &rs);
    for (int k = 0; k < WALK_BATCH && s->walk < n &&
                    rs.inflight + 2 <= WALK_INFLIGHT_MAX;
         k++) {
        walk_region(s, ctl_state_at(s->st, s->walk++));
        rs.inflight += 2;
    }
    if (s->walk >= n) {
        s->walking = 0;
        fg_log_info("history_resynced", "regions=%zu", n);
    }
}

/* ---- load ---- */

typedef struct load_req {
    ctl_store *s;
    unsigned gen;
    size_t i; /* region index; SIZE_MAX for the index read */
} load_req;

static void load_end(ctl_store *s)
{
    s->loading = 0;
    free(s->load_regions);
    s->load_regions = NULL;
    if (s->load_failed) {
        fg_counter_add(s->c_load_err, 1);
        fg_log_warn("history_not_loaded", "regions=%zu retry_ms=%d",
                    s->load_n, LOAD_RETRY_MS);
        s->load_retry_at = now_ms() + LOAD_RETRY_MS;
        return;
    }
    s->loaded = 1;
    fg_gauge_set(s->g_loaded, 1);
    fg_log_info("history_loaded", "regions=%zu scores=%zu locks=%zu ms=%lld",
                s->load_n, s->load_rows, s->load_records,
                (long long)(now_ms() - s->load_started));
}

static void on_region_loaded(void *ud, const fg_redis_result *res);

static load_req *load_req_new(ctl_store *s, size_t i)
{
    load_req *lr = malloc(sizeof(*lr));
    if (lr) {
        lr->s = s;
        lr->gen = s->load_gen;
        lr->i = i;
    }
    return lr;
}

static void load_pump(ctl_store *s)
{
    char ks[CTL_STORE_PREFIX_MAX + 32], kl[CTL_STORE_PREFIX_MAX + 32];
    char ns[24], nl[24];
    snprintf(ns, sizeof(ns), "%zu", s->scores);
    snprintf(nl, sizeof(nl), "%zu", s->locks);
    while (!s->load_failed && s->load_next < s->load_n &&
           s->load_inflight < LOAD_WINDOW) {
        const char *region = s->load_regions[s->load_next];
        snprintf(ks, sizeof(ks), "%s:{%s}:scores", s->prefix, region);
        snprintf(kl, sizeof(kl), "%s:{%s}:locks", s->prefix, region);
        const char *argv[] = {ks, kl, ns, nl};
        load_req *lr = load_req_new(s, s->load_next);
        if (!lr || fg_redis_script_eval(s->r, s->load, on_region_loaded, lr, 2,
                                        4, argv, NULL) != FG_OK) {
            free(lr);
            s->load_failed = 1;
            break;
        }
        s->load_next++;
        s->load_inflight++;
    }
    if (s->load_inflight == 0 && (s->load_failed || s->load_next == s->load_n))
        load_end(s);
}

/* Adds one region's rows and records to the history (what does not decode
 * is skipped: another writer's keys, or an older format). */
static void load_merge(ctl_store *s, const char *region,
                       const redisReply *scores, const redisReply *locks)
{
    char err[128];
    for (size_t i = 0; i < scores->elements; i++) {
        const redisReply *m = scores->element[i];
        ctl_score sc;
        if (m->type != REDIS_REPLY_STRING ||
            ctl_score_decode(m->str, m->len, &sc, err, sizeof(err)) != FG_OK ||
            strcmp(sc.region, region) != 0)
            continue;
        ctl_score_row row = {sc.ts, sc.devices, sc.grey, sc.share, sc.lo,
                             sc.hi};
        if (ctl_state_history_add_score(s->st, region, &row) == FG_OK)
            s->load_rows++;
    }
    fg_lock *lk = malloc(sizeof(*lk));
    if (!lk && locks->elements > 0)
        s->load_failed = 1; /* tried again as a whole; adding is idempotent */
    for (size_t i = 0; lk && i < locks->elements; i++) {
        const redisReply *m = locks->element[i];
        if (m->type != REDIS_REPLY_STRING ||
            fg_lock_decode(m->str, m->len, lk, NULL, 0) != FG_OK ||
            strcmp(lk->region, region) != 0)
            continue;
        if (ctl_state_history_add_lock(s->st, region, lk) == FG_OK)
            s->load_records++;
    }
    free(lk);
}

static void on_region_loaded(void *ud, const fg_redis_result *res)
{
    load_req *lr = ud;
    ctl_store *s = lr->s;
    size_t i = lr->i;
    unsigned gen = lr->gen;
    free(lr);
    if (s->closing || gen != s->load_gen || !s->loading)
        return;
    s->load_inflight--;
    const redisReply *rep = res->reply;
    if (res->outcome == FG_REDIS_REPLY && rep->type == REDIS_REPLY_ARRAY &&
        rep->elements == 2 && rep->element[0]->type == REDIS_REPLY_ARRAY &&
        rep->element[1]->type == REDIS_REPLY_ARRAY)
        load_merge(s, s->load_regions[i], rep->element[0], rep->element[1]);
    else
        s->load_failed = 1;
    load_pump(s);
}

static void on_index(void *ud, const fg_redis_result *res)
{
    load_req *lr = ud;
    ctl_store *s = lr->s;
    unsigned gen = lr->gen;
    free(lr);
    if (s->closing || gen != s->load_gen || !s->loading)
        return;
    const redisReply *rep = res->reply;
    if (res->outcome != FG_REDIS_REPLY || rep->type != REDIS_REPLY_ARRAY) {
        s->load_failed = 1;
        load_end(s);
        return;
    }
    s->load_regions = calloc(rep->elements ? rep->elements : 1,
                             sizeof(*s->load_regions));
    if (!s->load_regions) {
        s->load_failed = 1;
        load_end(s);
        return;
    }
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *m = rep->element[i];
        if (m->type == REDIS_REPLY_STRING && m->len <= FG_REGION_MAX &&
            fg_region_valid(m->str, m->len)) {
            memcpy(s->load_regions[s->load_n], m->str, m->len);
            s->load_regions[s->load_n][m->len] = '\0';
            s->load_n++;
        }
    }
    load_pump(s);
}

static void load_start(ctl_store *s)
{
    int64_t now = now_ms();
    s->loading = 1;
    s->load_failed = 0;
    s->load_gen++;
    s->load_started = now;
    s->load_n = s->load_next = s->load_inflight = 0;
    s->load_rows = s->load_records = 0;
    /* Regions idle past the TTL have no keys left. */
    (void)fg_redis_command(s->r, NULL, NULL,
                           "ZREMRANGEBYSCORE %s:regions -inf (%" PRId64,
                           s->prefix, now - s->ttl_ms);
    load_req *lr = load_req_new(s, SIZE_MAX);
    /* Newest first, so a cap keeps the regions that matter now. */
    if (!lr || fg_redis_command(s->r, on_index, lr, "ZREVRANGE %s:regions 0 %d",
                                s->prefix, CTL_STATE_MAX_REGIONS - 1) != FG_OK) {
        free(lr);
        s->load_failed = 1;
        load_end(s);
    }
}

/* ---- connection ---- */

static void on_up(void *ud)
{
    ctl_store *s = ud;
    fg_gauge_set(s->g_up, 1);
    if (s->loaded)
        s->resync = 1; /* Redis may have restarted without our keys */
    else if (!s->loading)
        load_start(s);
}

static void on_down(void *ud)
{
    ctl_store *s = ud;
    fg_gauge_set(s->g_up, 0);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    ctl_store *s = arg;
    (void)fd;
    (void)what;
    if (!fg_redis_is_up(s->r))
        return;
    if (!s->loaded && !s->loading && now_ms() >= s->load_retry_at)
        load_start(s);
    if (s->loading)
        return;
    if (s->resync && !s->walking) {
        s->resync = 0;
        s->walking = 1;
        s->walk = 0;
    }
    if (s->walking)
        walk_step(s);
}

ctl_store *ctl_store_new(struct event_base *base, ctl_state *st,
                         fg_metrics *m, const ctl_store_opts *opts,
                         char *errbuf, size_t errlen)
{
    if (!ctl_store_prefix_ok(opts->prefix)) {
        snprintf(errbuf, errlen, "redis.prefix: 1 to %d printable bytes "
                 "without spaces or braces", CTL_STORE_PREFIX_MAX);
        return NULL;
    }
    ctl_store *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    s->st = st;
    snprintf(s->prefix, sizeof(s->prefix), "%s", opts->prefix);
    s->ttl_ms = opts->ttl_ms;
    s->scores = opts->scores;
    s->locks = opts->locks;
    s->c_write_err = fg_metrics_counter(
        m, "fleetgate_control_redis_errors_total",
        "Redis commands of the control service that failed: history writes "
        "not stored (Redis down, too many in flight, timeout, error reply) "
        "and history loads.", "op=\"write\"");
    s->c_load_err = fg_metrics_counter(
        m, "fleetgate_control_redis_errors_total", NULL, "op=\"load\"");
    s->g_up = fg_metrics_gauge(m, "fleetgate_control_redis_up",
                               "1 while the control service's Redis "
                               "connection is up.", "");
    s->g_loaded = fg_metrics_gauge(
        m, "fleetgate_control_redis_history_loaded",
        "1 once the region history was read back from Redis.", "");
    if (!s->c_write_err || !s->c_load_err || !s->g_up || !s->g_loaded) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    fg_redis_opts ro;
    memset(&ro, 0, sizeof(ro));
    ro.connect_timeout_ms = opts->timeout_ms;
    ro.command_timeout_ms = opts->timeout_ms;
    ro.max_inflight = CTL_STORE_MAX_INFLIGHT;
    ro.on_up = on_up;
    ro.on_down = on_down;
    ro.ud = s;
    s->r = fg_redis_new(base, opts->host, opts->port, &ro, errbuf, errlen);
    if (!s->r)
        goto fail;
    s->put = fg_redis_script_new(s->r, put_lua);
    s->load = fg_redis_script_new(s->r, load_lua);
    s->tick = event_new(base, -1, EV_PERSIST, on_tick, s);
    struct timeval tv = {0, TICK_MS * 1000};
    if (!s->put || !s->load || !s->tick || event_add(s->tick, &tv) != 0) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    fg_log_info("history_store", "redis=%s:%d prefix=%s ttl_ms=%" PRId64,
                opts->host, opts->port, s->prefix, s->ttl_ms);
    return s;
fail:
    ctl_store_free(s);
    return NULL;
}

void ctl_store_free(ctl_store *s)
{
    if (!s)
        return;
    /* Callbacks run inside fg_redis_free: they see closing and do nothing. */
    s->closing = 1;
    if (s->tick)
        event_free(s->tick);
    fg_redis_free(s->r);
    free(s->load_regions);
    free(s);
}

int ctl_store_up(const ctl_store *s)
{
    return fg_redis_is_up(s->r);
}

int ctl_store_loaded(const ctl_store *s)
{
    return s->loaded;
}
