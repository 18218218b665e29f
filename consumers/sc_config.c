/* SPDX-License-Identifier: Apache-2.0 */
/* The scorer's option table and command line. */
#include "sc_config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_kafka.h"
#include "fg_log.h"

extern char **environ;

#define SC_SLOT(name, type, def, field, min, max, desc)                     \
    { name, type, def, offsetof(sc_config, field), min, max, desc }

static const fg_conf_slot sc_slots[] = {
    SC_SLOT("scorer.admin_listen", FG_CONF_STR, "127.0.0.1:9181", admin_listen,
            0, 0, "Address of /metrics, /healthz and /readyz (host:port)."),
    SC_SLOT("scorer.id", FG_CONF_STR, NULL, id, 0, 0,
            "Instance id (lease owner, logs); default hostname-pid."),
    SC_SLOT("scorer.topic", FG_CONF_STR, "fleet.checkins", topic, 0, 0,
            "Topic of check-ins to count."),
    SC_SLOT("scorer.group", FG_CONF_STR, "fleetgate-scorer", group, 0, 0,
            "Kafka consumer group of the scorer workers."),
    SC_SLOT("scorer.locks_topic", FG_CONF_STR, "fleet.region-locks",
            locks_topic, 0, 0,
            "Compacted topic decisions are published to and read back from."),
    SC_SLOT("scorer.policies_topic", FG_CONF_STR, "fleet.region-policies",
            policies_topic, 0, 0,
            "Compacted topic of operator policies (fleetgate-control's PUT "
            "/v1/regions/{code}/policy), followed from its beginning: a "
            "record overrides the region's configured policy, a tombstone "
            "restores it. Read to its end before the first decision. Empty: "
            "configured policies only."),
    SC_SLOT("scorer.scores_topic", FG_CONF_STR, "fleet.region-scores",
            scores_topic, 0, 0, "Topic of per-region scores, every tick."),
    SC_SLOT("scorer.dlq_topic", FG_CONF_STR, "fleet.checkins.dlq", dlq_topic, 0,
            0, "Where records that cannot be decoded go."),
    SC_SLOT("scorer.scores_format", FG_CONF_STR, "msgpack", scores_format, 0, 0,
            "Value format of fleet.region-scores: msgpack or json."),
    SC_SLOT("scorer.bucket", FG_CONF_DURATION, "60s", bucket_ms, 1000, 3600000,
            "Width of one counter bucket."),
    SC_SLOT("scorer.window", FG_CONF_DURATION, "15m", window_ms, 1000,
            86400000, "Window the counters cover (a multiple of the bucket)."),
    SC_SLOT("scorer.tick", FG_CONF_DURATION, "1s", tick_ms, 100, 600000,
            "How often the evaluator scores every region."),
    SC_SLOT("scorer.lease", FG_CONF_DURATION, "3s", lease_ms, 300, 600000,
            "Evaluator lease in Redis; another scorer takes over after it."),
    SC_SLOT("scorer.batch_max", FG_CONF_INT, "20000", batch_max, 1, 1000000,
            "Most check-ins aggregated into one Redis apply per partition."),
    SC_SLOT("scorer.batch_interval", FG_CONF_DURATION, "1s", batch_interval_ms,
            0, 600000,
            "Least time between two Redis applies of one partition (unless a "
            "batch is full): Redis work follows regions x partitions per "
            "interval, not the check-in rate."),
    SC_SLOT("scorer.dedupe_lookback", FG_CONF_DURATION, "60s",
            dedupe_lookback_ms, 0, 86400000,
            "After an assignment, how far before the resume point the "
            "partition is re-read (without counting) to remember recent "
            "(device_id, seq) pairs, so a device's retry is not counted twice."),
    SC_SLOT("redis.host", FG_CONF_STR, "127.0.0.1", redis_host, 0, 0,
            "Redis host."),
    SC_SLOT("redis.port", FG_CONF_INT, "6379", redis_port, 1, 65535,
            "Redis port."),
    SC_SLOT("redis.timeout", FG_CONF_DURATION, "2s", redis_timeout_ms, 50,
            600000, "A Redis command not answered this long drops the connection."),
    SC_SLOT("log.level", FG_CONF_STR, "info", log_level, 0, 0,
            "debug, info, warn or error."),
    FG_CONF_END,
};

static void usage(FILE *out, const char *prog)
{
    fprintf(out,
            "Usage: %s [-c FILE] [--set KEY=VALUE]... [--check-config]\n"
            "\n"
            "fleetgate scorer: counts check-ins per region in Redis (exactly once),\n"
            "scores every region and publishes lock decisions.\n"
            "\n"
            "  -c, --config FILE   INI configuration file\n"
            "      --set KEY=VALUE override one key (repeatable)\n"
            "      --check-config  load the configuration, report, and exit\n"
            "  -h, --help          this text\n"
            "  -V, --version       print the version\n"
            "\n"
            "Sources, later wins: defaults, the file, FLEETGATE_* environment\n"
            "variables, --set. kafka.* goes to librdkafka, markets.* as for the\n"
            "gateway. [policy] sets the defaults of every region (mode, lock_at,\n"
            "unlock_at, min_devices, for, ttl, cooldown, scope, message), and\n"
            "[policy.CU] overrides them for CU. [rails]: enforce,\n"
            "max_auto_locked_regions, max_auto_locked_devices, max_ttl, z.\n"
            "\nOptions:\n",
            prog);
    fg_conf_help(sc_slots, out);
}

/* "CU.lock_at" -> region "CU", key "lock_at"; "lock_at" -> no region. */
static int split_policy_key(const char *k, char *region, size_t rcap,
                            const char **key)
{
    const char *dot = strchr(k, '.');
    if (!dot) {
        region[0] = '\0';
        *key = k;
        return 0;
    }
    size_t n = (size_t)(dot - k);
    if (n == 0 || n >= rcap)
        return -1;
    memcpy(region, k, n);
    region[n] = '\0';
    *key = dot + 1;
    return 0;
}

static int derive(sc_config *cfg, sc_policy *defaults, sc_rails *rails,
                  char *errbuf, size_t errlen)
{
    char e[256];
    if (fg_log_level_parse(cfg->log_level) < 0) {
        snprintf(errbuf, errlen, "log.level: '%s' is not one of debug, info, "
                 "warn, error", cfg->log_level);
        return -1;
    }
    if (strcmp(cfg->scores_format, "msgpack") != 0 &&
        strcmp(cfg->scores_format, "json") != 0) {
        snprintf(errbuf, errlen,
                 "scorer.scores_format: '%s' is not one of msgpack, json",
                 cfg->scores_format);
        return -1;
    }
    cfg->scores_json = strcmp(cfg->scores_format, "json") == 0;
    if (cfg->window_ms % cfg->bucket_ms != 0) {
        snprintf(errbuf, errlen,
                 "scorer.window: must be a multiple of scorer.bucket");
        return -1;
    }
    /* A longer scorer.id is cut to fit. */
    (void)fg_conf_instance_id(cfg->scorer_id, sizeof(cfg->scorer_id), cfg->id,
                              "scorer");
    sc_rails_default(rails);
    for (size_t i = 0; i < cfg->rails.n; i++) {
        if (sc_rails_set(rails, cfg->rails.items[i].key,
                         cfg->rails.items[i].value, e, sizeof(e)) != FG_OK) {
            snprintf(errbuf, errlen, "rails.%s", e);
            return -1;
        }
    }
    if (sc_rails_check(rails, e, sizeof(e)) != FG_OK) {
        snprintf(errbuf, errlen, "rails.%s", e);
        return -1;
    }
    sc_policy_default(defaults);
    for (size_t i = 0; i < cfg->policy.n; i++) {
        char region[16];
        const char *key;
        if (split_policy_key(cfg->policy.items[i].key, region, sizeof(region),
                             &key) != 0) {
            snprintf(errbuf, errlen, "policy.%s: bad key",
                     cfg->policy.items[i].key);
            return -1;
        }
        if (region[0])
            continue; /* a per-region override: sc_config_overrides */
        if (sc_policy_set(defaults, key, cfg->policy.items[i].value, e,
                          sizeof(e)) != FG_OK) {
            snprintf(errbuf, errlen, "policy.%s", e);
            return -1;
        }
    }
    if (sc_policy_check(defaults, rails, e, sizeof(e)) != FG_OK) {
        snprintf(errbuf, errlen, "policy.%s", e);
        return -1;
    }
    return 0;
}

sc_cli sc_config_load(sc_config *cfg, sc_policy *defaults, sc_rails *rails,
                      int argc, char **argv)
{
    fg_conf_cli cli;
    sc_cli rc = SC_CLI_EXIT_FAIL;
    char err[512];
    memset(&cli, 0, sizeof(cli));
    switch (fg_conf_cli_start(&cli, argc, argv, "fleetgate-scorer", usage)) {
    case FG_CONF_CLI_EXIT_OK: rc = SC_CLI_EXIT_OK; goto out;
    case FG_CONF_CLI_EXIT_FAIL: goto out;
    case FG_CONF_CLI_CONTINUE: break;
    }
    fg_conf_passthrough pt[] = {
        {"kafka.", &cfg->kafka},
        {"markets.", &cfg->markets},
        {"policy.", &cfg->policy},
        {"rails.", &cfg->rails},
        {NULL, NULL},
    };
    if (fg_conf_load(sc_slots, cfg, pt, cli.path, environ, cli.sets, cli.nsets, err,
                     sizeof(err)) != FG_OK ||
        derive(cfg, defaults, rails, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: configuration error: %s\n", argv[0], err);
        goto out;
    }
    /* Check the overrides and librdkafka keys now, so a typo stops start-up. */
    sc_engine *e = sc_engine_new(defaults, rails, err, sizeof(err));
    if (!e || sc_config_overrides(cfg, e, err, sizeof(err)) != FG_OK) {
        fprintf(stderr, "%s: configuration error: %s\n", argv[0], err);
        sc_engine_free(e);
        goto out;
    }
    sc_engine_free(e);
    fg_market_map *mm = sc_config_markets(cfg, err, sizeof(err));
    if (!mm) {
        fprintf(stderr, "%s: configuration error: %s\n", argv[0], err);
        goto out;
    }
    fg_market_map_free(mm);
    rd_kafka_conf_t *kc = sc_config_consumer(cfg, err, sizeof(err));
    if (!kc) {
        fprintf(stderr, "%s: configuration error: %s\n", argv[0], err);
        goto out;
    }
    rd_kafka_conf_destroy(kc);
    if (cli.check_only) {
        printf("configuration ok\n");
        rc = SC_CLI_EXIT_OK;
        goto out;
    }
    rc = SC_CLI_RUN;
out:
    fg_conf_cli_free(&cli);
    return rc;
}

fg_status sc_config_overrides(const sc_config *cfg, sc_engine *e,
                              char *errbuf, size_t errlen)
{
    /* Gather every override of a region into one policy, then set it. */
    for (size_t i = 0; i < cfg->policy.n; i++) {
        char region[16], e2[256];
        const char *key;
        if (split_policy_key(cfg->policy.items[i].key, region, sizeof(region),
                             &key) != 0 ||
            !region[0])
            continue;
        if (!fg_region_valid(region, strlen(region))) {
            snprintf(errbuf, errlen, "policy.%s: '%s' is not a region code",
                     cfg->policy.items[i].key, region);
            return FG_EINVAL;
        }
        sc_policy p = *sc_engine_policy(e, region);
        if (sc_policy_set(&p, key, cfg->policy.items[i].value, e2,
                          sizeof(e2)) != FG_OK ||
            sc_engine_set_policy(e, region, &p, e2, sizeof(e2)) != FG_OK) {
            snprintf(errbuf, errlen, "policy.%s.%s", region, e2);
            return FG_EINVAL;
        }
    }
    return FG_OK;
}

fg_status sc_config_region_policy(const sc_config *cfg,
                                  const sc_policy *defaults,
                                  const char *region, sc_policy *out,
                                  int *overridden, char *errbuf, size_t errlen)
{
    *out = *defaults;
    *overridden = 0;
    for (size_t i = 0; i < cfg->policy.n; i++) {
        char r[16], e2[256];
        const char *key;
        if (split_policy_key(cfg->policy.items[i].key, r, sizeof(r), &key) !=
                0 ||
            strcmp(r, region) != 0)
            continue;
        if (sc_policy_set(out, key, cfg->policy.items[i].value, e2,
                          sizeof(e2)) != FG_OK) {
            snprintf(errbuf, errlen, "policy.%s.%s", region, e2);
            return FG_EINVAL;
        }
        *overridden = 1;
    }
    return FG_OK;
}

fg_market_map *sc_config_markets(const sc_config *cfg, char *errbuf,
                                 size_t errlen)
{
    return fg_market_map_from(&cfg->markets, errbuf, errlen);
}

static rd_kafka_conf_t *conf_with(const sc_config *cfg,
                                  const char *const (*defs)[2], size_t ndefs,
                                  char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *kc = fg_kafka_conf_base(cfg->scorer_id, errbuf, errlen);
    if (!kc)
        return NULL;
    for (size_t i = 0; i < ndefs; i++)
        if (fg_kafka_conf_set(kc, defs[i][0], defs[i][1], errbuf, errlen) !=
            FG_OK)
            goto fail;
    if (fg_kafka_conf_apply(kc, &cfg->kafka, errbuf, errlen) != FG_OK)
        goto fail;
    return kc;
fail:
    rd_kafka_conf_destroy(kc);
    return NULL;
}

rd_kafka_conf_t *sc_config_consumer(const sc_config *cfg, char *errbuf,
                                    size_t errlen)
{
    const char *const defs[][2] = {
        {"group.id", cfg->group},
        {"partition.assignment.strategy", "cooperative-sticky"},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"enable.partition.eof", "false"},
        {"fetch.wait.max.ms", "100"},
    };
    return conf_with(cfg, defs, sizeof(defs) / sizeof(defs[0]), errbuf,
                     errlen);
}

rd_kafka_conf_t *sc_config_producer(const sc_config *cfg, char *errbuf,
                                    size_t errlen)
{
    const char *const defs[][2] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "5"},
    };
    return conf_with(cfg, defs, sizeof(defs) / sizeof(defs[0]), errbuf,
                     errlen);
}

void sc_config_free(sc_config *cfg)
{
    fg_conf_free(sc_slots, cfg);
    fg_conf_kvs_free(&cfg->kafka);
    fg_conf_kvs_free(&cfg->markets);
    fg_conf_kvs_free(&cfg->policy);
    fg_conf_kvs_free(&cfg->rails);
}
