/* SPDX-License-Identifier: Apache-2.0 */
/* The gateway's configuration: the option table, command-line handling
 * (-c FILE, --set key=value, --help) and the librdkafka configurations
 * built from it. */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

#include "fg_config.h"
#include "fg_region.h"

typedef enum gw_ack { GW_ACK_DURABLE = 0, GW_ACK_ACCEPT = 1 } gw_ack;

typedef struct gw_config {
    char *listen;
    char *admin_listen;
    char *id;
    char *topic;
    char *locks_topic;
    char *ack_mode;
    char *log_level;
    int64_t threads;
    int64_t max_body;
    int64_t max_batch;
    int64_t max_header_bytes;
    int64_t max_connections;
    int64_t max_inflight_bytes;
    int64_t read_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t write_timeout_ms;
    int64_t shutdown_timeout_ms;
    int64_t next_checkin_s;
    int64_t retry_after_s;
    int64_t broker_down_ms;
    bool fault_injection;
    /* derived */
    gw_ack ack;
    char gw_id[65];
    fg_conf_kvs kafka;   /* kafka.* pass-through */
    fg_conf_kvs markets; /* markets.* : sku -> allowed countries */
} gw_config;

/* What the command line asked for. */
typedef enum gw_cli {
    GW_CLI_RUN = 0,
    GW_CLI_EXIT_OK = 1,   /* --help or --version printed */
    GW_CLI_EXIT_FAIL = 2  /* bad arguments or configuration, reported */
} gw_cli;

/* Parses argv and loads the configuration into cfg (zeroed by the caller).
 * Prints --help / --version / errors itself. @thread main */
gw_cli gw_config_load(gw_config *cfg, int argc, char **argv);

/* Frees what cfg owns. */
void gw_config_free(gw_config *cfg);

/* Builds the market map from cfg->markets. NULL with errbuf on error. */
fg_market_map *gw_config_markets(const gw_config *cfg, char *errbuf,
                                 size_t errlen);

/* A new librdkafka configuration for the check-in producer (idempotent,
 * acks=all, then every kafka.* key) or the lock-topic consumer. NULL with
 * errbuf naming the bad key. Caller owns the result. */
rd_kafka_conf_t *gw_config_producer(const gw_config *cfg, char *errbuf,
                                    size_t errlen);
rd_kafka_conf_t *gw_config_consumer(const gw_config *cfg, char *errbuf,
                                    size_t errlen);

#endif
