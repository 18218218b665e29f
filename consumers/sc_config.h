/* SPDX-License-Identifier: Apache-2.0 */
/* The scorer's configuration: its option table, the [policy] defaults,
 * [policy.<REGION>] overrides and [rails] that feed the decision engine,
 * and the librdkafka configurations built from [kafka]. */
#ifndef SC_CONFIG_H
#define SC_CONFIG_H

#include <librdkafka/rdkafka.h>
#include <stdint.h>

#include "fg_config.h"
#include "fg_region.h"
#include "sc_policy.h"

typedef struct sc_config {
    char *admin_listen;
    char *id;
    char *topic;
    char *group;
    char *locks_topic;
    char *policies_topic; /* "" = no policy feed */
    char *scores_topic;
    char *dlq_topic;
    char *scores_format;
    char *redis_host;
    char *log_level;
    int64_t redis_port;
    int64_t redis_timeout_ms;
    int64_t bucket_ms;
    int64_t window_ms;
    int64_t tick_ms;
    int64_t lease_ms;
    int64_t batch_max;
    int64_t dedupe_lookback_ms;
    int64_t batch_interval_ms;
    /* derived */
    char scorer_id[65];
    int scores_json;
    fg_conf_kvs kafka;   /* kafka.* */
    fg_conf_kvs markets; /* markets.* */
    fg_conf_kvs policy;  /* policy.<key> and policy.<REGION>.<key> */
    fg_conf_kvs rails;   /* rails.* */
} sc_config;

typedef enum sc_cli { SC_CLI_RUN = 0, SC_CLI_EXIT_OK = 1, SC_CLI_EXIT_FAIL = 2 } sc_cli;

/* Parses argv (-c FILE, --set k=v, --help, --version, --check-config) and
 * loads cfg (zeroed by the caller); builds and checks the engine's defaults
 * and rails into *defaults and *rails. Prints what it reports. @thread main */
sc_cli sc_config_load(sc_config *cfg, sc_policy *defaults, sc_rails *rails,
                      int argc, char **argv);

/* Applies every [policy.<REGION>] override to e. FG_EINVAL with errbuf
 * naming the key. */
fg_status sc_config_overrides(const sc_config *cfg, sc_engine *e,
                              char *errbuf, size_t errlen);

/* The configured policy of region: defaults with the region's
 * [policy.<REGION>] keys applied, in file order (what sc_config_overrides
 * gives the engine). *overridden is 1 when the region has such keys, else
 * 0 (out is then *defaults). FG_OK, or FG_EINVAL with errbuf naming the
 * key (not after a successful sc_config_load). All borrowed.
 * @thread any */
fg_status sc_config_region_policy(const sc_config *cfg,
                                  const sc_policy *defaults,
                                  const char *region, sc_policy *out,
                                  int *overridden, char *errbuf,
                                  size_t errlen);

/* Builds the market map (NULL with errbuf on error). */
fg_market_map *sc_config_markets(const sc_config *cfg, char *errbuf,
                                 size_t errlen);

/* librdkafka configurations: the group consumer of check-ins, the producer
 * of decisions/scores/DLQ records, and the reader of the lock topic. NULL
 * with errbuf naming the bad key. */
rd_kafka_conf_t *sc_config_consumer(const sc_config *cfg, char *errbuf,
                                    size_t errlen);
rd_kafka_conf_t *sc_config_producer(const sc_config *cfg, char *errbuf,
                                    size_t errlen);

void sc_config_free(sc_config *cfg);

#endif
