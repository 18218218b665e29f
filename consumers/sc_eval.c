/* SPDX-License-Identifier: Apache-2.0 */
/* Evaluator: lease, tick, engine, publish. */
#include "sc_eval.h"

#include <event2/event.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "fg_kafka.h"
#include "fg_lockfeed.h"
#include "fg_log.h"
#include "sc_policyfeed.h"

struct sc_eval {
    struct event_base *base;
    const sc_config *cfg;
    sc_store *store;
    sc_engine *engine;
    fg_lockfeed *feed;
    sc_policyfeed *policies; /* NULL: scorer.policies_topic is empty */
    rd_kafka_t *p;
    rd_kafka_topic_t *locks_rkt, *scores_rkt;
    rd_kafka_queue_t *q;
    fg_kafka_pump *pump;
    struct event *tick;
    int64_t token;     /* > 0 while we hold the lease */
    int busy;          /* a tick is gathering windows */
    uint32_t tick_gen;
    sc_region_score *scores;
    size_t nscores, want, capscores;
    int64_t tick_now;
    fg_counter *c_decisions, *c_publish_fail, *c_stale, *c_ticks;
    fg_gauge *g_leader;
};

/* A published decision awaiting its delivery report. */
typedef struct pub_ctx {
    sc_eval *ev;
    char region[FG_REGION_MAX + 1];
    char id[FG_LOCK_ID_MAX + 1];
} pub_ctx;

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- lock topic ---- */

static void on_lock_record(void *ud, const char *region, const fg_lock *lk)
{
    sc_eval *ev = ud;
    fg_status st = lk ? sc_engine_observe_lock(ev->engine, lk)
                      : sc_engine_observe_tombstone(ev->engine, region);
    if (st != FG_OK)
        fg_log_warn("lock_record_ignored", "region=%s err=%s", region,
                    fg_status_str(st));
}

/* ---- publishing ---- */

static int policies_on(const sc_config *cfg)
{
    return cfg->policies_topic && cfg->policies_topic[0];
}

/* Creates the compacted lock and score topics, and the policies topic the
 * scorer waits for (so a scorer without a control service still starts),
 * when they are missing; the answer comes back on the loop like any other
 * event. */
static void ensure_topics(sc_eval *ev)
{
    const fg_kafka_topic_spec specs[] = {
        {ev->cfg->locks_topic, 1, 1},
        {ev->cfg->scores_topic, 3, 1},
        {ev->cfg->policies_topic, 1, 1},
    };
    fg_kafka_create_topics(ev->p, ev->q, specs, policies_on(ev->cfg) ? 3 : 2);
}

static void on_kafka_event(void *ud, rd_kafka_event_t *kev)
{
    sc_eval *ev = ud;
    if (rd_kafka_event_type(kev) == RD_KAFKA_EVENT_CREATETOPICS_RESULT) {
        fg_kafka_log_topics_created(kev);
        return;
    }
    if (rd_kafka_event_type(kev) != RD_KAFKA_EVENT_DR)
        return;
    const rd_kafka_message_t *m;
    while ((m = rd_kafka_event_message_next(kev)) != NULL) {
        pub_ctx *pc = m->_private;
        if (!pc)
            continue;
        if (!m->err) {
            fg_counter_add(ev->c_decisions, 1);
        } else {
            fg_counter_add(ev->c_publish_fail, 1);
            fg_log_error("decision_not_published", "region=%s id=%s err=%s",
                         pc->region, pc->id, rd_kafka_err2name(m->err));
            sc_engine_publish_failed(ev->engine, pc->region, pc->id);
        }
        free(pc);
    }
}

typedef struct mirror_ctx {
    sc_eval *ev;
    fg_lock lk;
    size_t len;
    char rec[FG_LOCK_RECORD_MAX];
} mirror_ctx;

/* Publishes once Redis accepted the decision under our token. */
static void on_mirrored(void *ud, int ok, const char *err)
{
    mirror_ctx *mc = ud;
    sc_eval *ev = mc->ev;
    if (!ok) {
        if (err && strcmp(err, "stale") == 0)
            fg_counter_add(ev->c_stale, 1);
        fg_log_warn("decision_refused", "region=%s id=%s err=%s", mc->lk.region,
                    mc->lk.id, err ? err : "?");
        sc_engine_publish_failed(ev->engine, mc->lk.region, mc->lk.id);
        free(mc);
        return;
    }
    pub_ctx *pc = malloc(sizeof(*pc));
    if (pc) {
        pc->ev = ev;
        snprintf(pc->region, sizeof(pc->region), "%s", mc->lk.region);
        snprintf(pc->id, sizeof(pc->id), "%s", mc->lk.id);
    }
    rd_kafka_resp_err_t perr = rd_kafka_producev(
        ev->p, RD_KAFKA_V_RKT(ev->locks_rkt),
        RD_KAFKA_V_KEY(mc->lk.region, strlen(mc->lk.region)),
        RD_KAFKA_V_VALUE(mc->rec, mc->len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(pc),
        RD_KAFKA_V_END);
    if (perr) {
        free(pc);
        sc_engine_publish_failed(ev->engine, mc->lk.region, mc->lk.id);
    } else {
        fg_log_info("decision", "region=%s state=%s scope=%s until=%" PRId64
                    " token=%" PRIu64 " id=%s", mc->lk.region,
                    fg_lock_state_str(mc->lk.state),
                    fg_lock_scope_str(mc->lk.scope), mc->lk.until,
                    mc->lk.token, mc->lk.id);
    }
    free(mc);
}

static void publish_decision(sc_eval *ev, const sc_decision *d)
{
    mirror_ctx *mc = malloc(sizeof(*mc));
    if (!mc)
        goto failed;
    mc->ev = ev;
    mc->lk = d->lk;
    mc->lk.token = (uint64_t)ev->token;
    mc->lk.has |= FG_LOCK_HAS_TOKEN;
    mc->len = fg_lock_encode(&mc->lk, mc->rec, sizeof(mc->rec));
    if (mc->len == 0 ||
        sc_store_mirror(ev->store, mc->lk.region, mc->lk.token, mc->rec,
                        mc->len, on_mirrored, mc) != FG_OK) {
        free(mc);
        goto failed;
    }
    return;
failed:
    sc_engine_publish_failed(ev->engine, d->lk.region, d->lk.id);
}

static int mp_put(void *data, const char *buf, size_t len)
{
    msgpack_sbuffer *sb = data;
    return msgpack_sbuffer_write(sb, buf, len);
}

static void mp_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    msgpack_pack_str(pk, strlen(k));
    msgpack_pack_str_body(pk, k, strlen(k));
    msgpack_pack_str(pk, strlen(v));
    msgpack_pack_str_body(pk, v, strlen(v));
}

static void mp_key(msgpack_packer *pk, const char *k)
{
    msgpack_pack_str(pk, strlen(k));
    msgpack_pack_str_body(pk, k, strlen(k));
}

static void publish_row(sc_eval *ev, const sc_score_row *r)
{
    char json[512];
    const char *val;
    size_t len;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (ev->cfg->scores_json) {
        int n = snprintf(json, sizeof(json),
                         "{\"region\":\"%s\",\"ts\":%" PRId64
                         ",\"devices\":%" PRId64 ",\"grey\":%" PRId64
                         ",\"share\":%.6f,\"lo\":%.6f,\"hi\":%.6f,"
                         "\"mode\":\"%s\",\"state\":\"%s\",\"source\":\"%s\"}",
                         r->region, r->ts, r->devices, r->grey, r->share, r->lo,
                         r->hi, sc_mode_str(r->mode),
                         fg_lock_state_str(r->state),
                         fg_lock_source_str(r->source));
        val = json;
        len = n > 0 && (size_t)n < sizeof(json) ? (size_t)n : 0;
    } else {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, mp_put);
        msgpack_pack_map(&pk, 10);
        mp_kv_str(&pk, "region", r->region);
        mp_key(&pk, "ts");
        msgpack_pack_int64(&pk, r->ts);
        mp_key(&pk, "devices");
        msgpack_pack_int64(&pk, r->devices);
        mp_key(&pk, "grey");
        msgpack_pack_int64(&pk, r->grey);
        mp_key(&pk, "share");
        msgpack_pack_double(&pk, r->share);
        mp_key(&pk, "lo");
        msgpack_pack_double(&pk, r->lo);
        mp_key(&pk, "hi");
        msgpack_pack_double(&pk, r->hi);
        mp_kv_str(&pk, "mode", sc_mode_str(r->mode));
        mp_kv_str(&pk, "state", fg_lock_state_str(r->state));
        mp_kv_str(&pk, "source", fg_lock_source_str(r->source));
        val = sb.data;
        len = sb.size;
    }
    if (len)
        rd_kafka_producev(ev->p, RD_KAFKA_V_RKT(ev->scores_rkt),
                          RD_KAFKA_V_KEY(r->region, strlen(r->region)),
                          RD_KAFKA_V_VALUE((void *)val, len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_END);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- the tick ---- */

static void run_engine(sc_eval *ev)
{
    size_t n = ev->nscores;
    sc_score_row *rows = calloc(n ? n : 1, sizeof(*rows));
    size_t cap = n + 64, nout = 0;
    sc_decision *out = calloc(cap, sizeof(*out));
    if (!rows || !out) {
        free(rows);
        free(out);
        return;
    }
    fg_status st = sc_engine_tick(ev->engine, ev->tick_now, ev->scores, n,
                                  rows, out, cap, &nout);
    if (st != FG_OK && st != FG_AGAIN)
        fg_log_error("tick_failed", "err=%s", fg_status_str(st));
    for (size_t i = 0; i < nout; i++)
        publish_decision(ev, &out[i]);
    if (st == FG_OK || st == FG_AGAIN)
        for (size_t i = 0; i < n; i++)
            publish_row(ev, &rows[i]);
    fg_counter_add(ev->c_ticks, 1);
    free(rows);
    free(out);
}

typedef struct win_ctx {
    sc_eval *ev;
    uint32_t gen;
} win_ctx;

static void on_window(void *ud, int ok, const char *region, int64_t checkins,
                      int64_t devices, int64_t grey)
{
    win_ctx *wc = ud;
    sc_eval *ev = wc->ev;
    uint32_t gen = wc->gen;
    free(wc);
    if (gen != ev->tick_gen)
        return;
    if (ok && ev->nscores < ev->capscores) {
        sc_region_score *s = &ev->scores[ev->nscores++];
        snprintf(s->region, sizeof(s->region), "%s", region);
        s->devices = devices;
        s->grey = grey > devices ? devices : grey;
    }
    (void)checkins;
    if (--ev->want == 0) {
        run_engine(ev);
        ev->busy = 0;
    }
}

static void on_regions(void *ud, int ok, const char *const *regions, size_t n)
{
    sc_eval *ev = ud;
    if (!ok) {
        ev->busy = 0;
        return;
    }
    ev->tick_gen++;
    ev->nscores = 0;
    if (n > ev->capscores) {
        sc_region_score *ns = realloc(ev->scores, n * sizeof(*ns));
        if (!ns) {
            ev->busy = 0;
            return;
        }
        ev->scores = ns;
        ev->capscores = n;
    }
    if (n == 0) {
        run_engine(ev);
        ev->busy = 0;
        return;
    }
    ev->want = 1; /* held until every read is sent */
    for (size_t i = 0; i < n; i++) {
        if (!fg_region_valid(regions[i], strlen(regions[i])))
            continue;
        win_ctx *wc = malloc(sizeof(*wc));
        if (!wc)
            break;
        wc->ev = ev;
        wc->gen = ev->tick_gen;
        ev->want++;
        if (sc_store_read_window(ev->store, regions[i], ev->tick_now,
                                 on_window, wc) != FG_OK) {
            ev->want--;
            free(wc);
        }
    }
    if (--ev->want == 0) {
        run_engine(ev);
        ev->busy = 0;
    }
}

static void on_lease(void *ud, int ok, int64_t token)
{
    sc_eval *ev = ud;
    int64_t was = ev->token;
    ev->token = ok ? token : 0;
    fg_gauge_set(ev->g_leader, ev->token > 0 ? 1 : 0);
    if (ev->token != was)
        fg_log_info(ev->token > 0 ? "evaluator_lease_held"
                                  : "evaluator_lease_lost",
                    "token=%" PRId64, ev->token);
    /* No decision before the locks in force and the operators' policies
     * are known: a `never` holds from the first tick after a restart. */
    if (ev->token <= 0 || sc_eval_waiting(ev)) {
        ev->busy = 0;
        return;
    }
    ev->tick_now = now_ms();
    if (sc_store_active_regions(ev->store, ev->tick_now, on_regions, ev) !=
        FG_OK)
        ev->busy = 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    sc_eval *ev = arg;
    (void)fd;
    (void)what;
    if (ev->busy || !sc_store_up(ev->store)) {
        if (!sc_store_up(ev->store) && ev->token > 0) {
            ev->token = 0; /* cannot renew: assume lost */
            fg_gauge_set(ev->g_leader, 0);
        }
        return;
    }
    ev->busy = 1;
    if (sc_store_lease(ev->store, ev->cfg->scorer_id, ev->cfg->lease_ms,
                       on_lease, ev) != FG_OK)
        ev->busy = 0;
}

sc_eval *sc_eval_new(struct event_base *base, const sc_config *cfg,
                     sc_store *store, sc_engine *engine,
                     const sc_policy *defaults, const sc_rails *rails,
                     fg_metrics *m, char *errbuf, size_t errlen)
{
    sc_eval *ev = calloc(1, sizeof(*ev));
    if (!ev) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    ev->base = base;
    ev->cfg = cfg;
    ev->store = store;
    rd_kafka_conf_t *kc = sc_config_producer(cfg, errbuf, errlen);
    if (!kc)
        goto fail;
    rd_kafka_conf_set_events(kc, RD_KAFKA_EVENT_DR);
    rd_kafka_conf_set_log_cb(kc, fg_kafka_log_cb);
    ev->p = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errbuf, errlen);
    if (!ev->p) {
        rd_kafka_conf_destroy(kc);
        goto fail;
    }
    ev->locks_rkt = rd_kafka_topic_new(ev->p, cfg->locks_topic, NULL);
    ev->scores_rkt = rd_kafka_topic_new(ev->p, cfg->scores_topic, NULL);
    ev->q = rd_kafka_queue_get_main(ev->p);
    ev->pump = fg_kafka_pump_new(base, ev->q, 1000, on_kafka_event, ev, errbuf,
                                 errlen);
    if (!ev->locks_rkt || !ev->scores_rkt || !ev->pump)
        goto fail;
    ensure_topics(ev);
    char gid[96];
    if (policies_on(cfg)) {
        kc = sc_config_consumer(cfg, errbuf, errlen);
        if (!kc)
            goto fail;
        snprintf(gid, sizeof(gid), "%s-policyfeed", cfg->group);
        if (fg_kafka_conf_set(kc, "group.id", gid, errbuf, errlen) != FG_OK) {
            rd_kafka_conf_destroy(kc);
            goto fail;
        }
        ev->policies = sc_policyfeed_new(base, kc, cfg, defaults, rails,
                                         engine, m, errbuf, errlen);
        if (!ev->policies)
            goto fail;
    }
    kc = sc_config_consumer(cfg, errbuf, errlen);
    if (!kc)
        goto fail;
    snprintf(gid, sizeof(gid), "%s-lockfeed", cfg->group);
    if (fg_kafka_conf_set(kc, "group.id", gid, errbuf, errlen) != FG_OK) {
        rd_kafka_conf_destroy(kc);
        goto fail;
    }
    ev->feed = fg_lockfeed_new(base, kc, cfg->locks_topic, on_lock_record, NULL,
                               ev, m, errbuf, errlen);
    if (!ev->feed)
        goto fail;
    ev->c_decisions = fg_metrics_counter(m, "fleetgate_scorer_decisions_total",
                                         "Lock decisions the broker acknowledged.", "");
    ev->c_publish_fail = fg_metrics_counter(
        m, "fleetgate_scorer_publish_failures_total",
        "Decisions the broker did not acknowledge (decided again).", "");
    ev->c_stale = fg_metrics_counter(
        m, "fleetgate_scorer_stale_token_refusals_total",
        "Decisions refused because a newer evaluator holds the lease.", "");
    ev->c_ticks = fg_metrics_counter(m, "fleetgate_scorer_ticks_total",
                                     "Evaluation ticks run as the leader.", "");
    ev->g_leader = fg_metrics_gauge(m, "fleetgate_scorer_leader",
                                    "1 while this scorer holds the evaluator "
                                    "lease.", "");
    struct timeval tv = {(time_t)(cfg->tick_ms / 1000),
                         (suseconds_t)((cfg->tick_ms % 1000) * 1000)};
    ev->tick = event_new(base, -1, EV_PERSIST, on_tick, ev);
    if (!ev->tick || event_add(ev->tick, &tv) != 0) {
        snprintf(errbuf, errlen, "cannot start the tick");
        goto fail;
    }
    ev->engine = engine;
    return ev;
fail:
    sc_eval_free(ev);
    return NULL;
}

const char *sc_eval_waiting(const sc_eval *ev)
{
    if (!fg_lockfeed_ready(ev->feed))
        return "lock_table_catching_up";
    if (ev->policies && !sc_policyfeed_ready(ev->policies))
        return "policies_catching_up";
    return NULL;
}

int sc_eval_ready(const sc_eval *ev)
{
    return sc_eval_waiting(ev) == NULL;
}

int sc_eval_leader(const sc_eval *ev)
{
    return ev->token > 0;
}

void sc_eval_free(sc_eval *ev)
{
    if (!ev)
        return;
    if (ev->tick)
        event_free(ev->tick);
    fg_lockfeed_free(ev->feed);
    sc_policyfeed_free(ev->policies); /* before the engine it applies to */
    if (ev->p)
        rd_kafka_flush(ev->p, 0);
    fg_kafka_pump_free(ev->pump);
    if (ev->locks_rkt)
        rd_kafka_topic_destroy(ev->locks_rkt);
    if (ev->scores_rkt)
        rd_kafka_topic_destroy(ev->scores_rkt);
    if (ev->q)
        rd_kafka_queue_destroy(ev->q);
    if (ev->p)
        rd_kafka_destroy(ev->p);
    sc_engine_free(ev->engine);
    free(ev->scores);
    free(ev);
}
