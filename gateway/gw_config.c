/* SPDX-License-Identifier: Apache-2.0 */
/* The gateway's option table and command line. Every option is a slot here:
 * name, type, default, bounds and the text --help prints. */
#include "gw_config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fg_kafka.h"
#include "fg_log.h"

extern char **environ;

#define GW_SLOT(name, type, def, field, min, max, desc)                     \
    { name, type, def, offsetof(gw_config, field), min, max, desc }

static const fg_conf_slot gw_slots[] = {
    GW_SLOT("gateway.listen", FG_CONF_STR, "127.0.0.1:8080", listen, 0, 0,
            "Address devices connect to (host:port)."),
    GW_SLOT("gateway.admin_listen", FG_CONF_STR, "127.0.0.1:9180", admin_listen,
            0, 0, "Address of /metrics, /healthz and /readyz (host:port)."),
    GW_SLOT("gateway.id", FG_CONF_STR, NULL, id, 0, 0,
            "Instance id stored in every record (gw); default hostname-pid."),
    GW_SLOT("gateway.topic", FG_CONF_STR, "fleet.checkins", topic, 0, 0,
            "Kafka topic check-ins are produced to."),
    GW_SLOT("gateway.locks_topic", FG_CONF_STR, "fleet.region-locks",
            locks_topic, 0, 0,
            "Compacted Kafka topic of region lock records, read from the start."),
    GW_SLOT("gateway.ack", FG_CONF_STR, "durable", ack_mode, 0, 0,
            "durable: answer after the broker acknowledged the record (acks=all). "
            "accept: answer once queued; records can be lost on a crash."),
    GW_SLOT("gateway.threads", FG_CONF_INT, "0", threads, 0, 256,
            "Worker threads, each with its own event loop and producer; 0 = one per core."),
    GW_SLOT("gateway.max_body", FG_CONF_SIZE, "1m", max_body, 64, 64 << 20,
            "Largest request body; larger gets 413."),
    GW_SLOT("gateway.max_batch", FG_CONF_INT, "1000", max_batch, 1, 100000,
            "Most check-ins in one POST /v1/checkins."),
    GW_SLOT("gateway.max_header_bytes", FG_CONF_SIZE, "16k", max_header_bytes,
            1024, 1 << 20, "Largest request line plus headers; larger gets 431."),
    GW_SLOT("gateway.max_connections", FG_CONF_INT, "20000", max_connections, 1,
            1000000, "Open device connections across all threads."),
    GW_SLOT("gateway.max_inflight_bytes", FG_CONF_SIZE, "256m",
            max_inflight_bytes, 0, (int64_t)1 << 40,
            "Request bodies held in memory at once, all threads; past it new "
            "requests get 503 with Retry-After. 0 = no limit."),
    GW_SLOT("gateway.read_timeout", FG_CONF_DURATION, "10s", read_timeout_ms, 100,
            3600000, "Deadline to receive a whole request once it started (408)."),
    GW_SLOT("gateway.idle_timeout", FG_CONF_DURATION, "60s", idle_timeout_ms, 100,
            86400000, "Keep-alive connections idle this long are closed."),
    GW_SLOT("gateway.write_timeout", FG_CONF_DURATION, "10s", write_timeout_ms,
            100, 3600000, "A client that does not read its answer this long is cut off."),
    GW_SLOT("gateway.shutdown_timeout", FG_CONF_DURATION, "10s",
            shutdown_timeout_ms, 0, 600000,
            "On SIGTERM, how long in-flight requests may take to finish."),
    GW_SLOT("gateway.next_checkin_s", FG_CONF_INT, "300", next_checkin_s, 1,
            86400 * 7, "Seconds until the device's next check-in, sent in every answer."),
    GW_SLOT("gateway.retry_after_s", FG_CONF_INT, "1", retry_after_s, 1, 3600,
            "Retry-After sent with 429 and 503."),
    GW_SLOT("gateway.broker_down_after", FG_CONF_DURATION, "5s", broker_down_ms,
            0, 3600000,
            "Once deliveries have failed or all brokers were down this long, "
            "new check-ins get 503 at once."),
    GW_SLOT("gateway.fault_injection", FG_CONF_BOOL, "false", fault_injection,
            0, 0,
            "For tests only: the admin listener takes POST /fault/kafka-fatal, "
            "which raises a real librdkafka fatal error in every producer."),
    GW_SLOT("log.level", FG_CONF_STR, "info", log_level, 0, 0,
            "debug, info, warn or error."),
    FG_CONF_END,
};

static void usage(FILE *out, const char *prog)
{
    fprintf(out,
            "Usage: %s [-c FILE] [--set KEY=VALUE]... [--check-config]\n"
            "\n"
            "fleetgate gateway: takes device check-ins over HTTP (JSON or msgpack),\n"
            "produces them to Kafka and answers each device with its directive.\n"
            "\n"
            "  -c, --config FILE   INI configuration file (see config/gateway.ini)\n"
            "      --set KEY=VALUE override one key (repeatable), e.g.\n"
            "                      --set gateway.listen=0.0.0.0:8080\n"
            "      --check-config  load the configuration, report, and exit\n"
            "  -h, --help          this text\n"
            "  -V, --version       print the version\n"
            "\n"
            "Sources, later wins: defaults, the file, FLEETGATE_* environment\n"
            "variables, --set. Keys under kafka.* go to librdkafka as they are\n"
            "(FLEETGATE_KAFKA_BOOTSTRAP_SERVERS sets kafka.bootstrap.servers);\n"
            "the producer always runs with enable.idempotence=true and acks=all.\n"
            "Keys under markets.* allow a market in more countries:\n"
            "  [markets]\n  EU = AT,BE,DE,FR\n"
            "\nOptions:\n",
            prog);
    fg_conf_help(gw_slots, out);
    fprintf(out, "  kafka.*  (librdkafka property, env FLEETGATE_KAFKA_*)\n"
                 "      Default kafka.bootstrap.servers = 127.0.0.1:9092.\n"
                 "  markets.<SKU> = <COUNTRY>[,<COUNTRY>...]\n"
                 "      Countries where devices sold for market SKU are not grey.\n");
}

static int derive(gw_config *cfg, char *errbuf, size_t errlen)
{
    if (strcmp(cfg->ack_mode, "durable") == 0)
        cfg->ack = GW_ACK_DURABLE;
    else if (strcmp(cfg->ack_mode, "accept") == 0)
        cfg->ack = GW_ACK_ACCEPT;
    else {
        snprintf(errbuf, errlen,
                 "gateway.ack: '%s' is not one of durable, accept",
                 cfg->ack_mode);
        return -1;
    }
    if (fg_log_level_parse(cfg->log_level) < 0) {
        snprintf(errbuf, errlen,
                 "log.level: '%s' is not one of debug, info, warn, error",
                 cfg->log_level);
        return -1;
    }
    if (fg_conf_instance_id(cfg->gw_id, sizeof(cfg->gw_id), cfg->id,
                            "gateway") != 0) {
        snprintf(errbuf, errlen, "gateway.id: longer than %zu bytes",
                 sizeof(cfg->gw_id) - 1);
        return -1;
    }
    if (cfg->threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->threads = n > 0 ? n : 1;
    }
    for (size_t i = 0; i < cfg->kafka.n; i++) {
        const fg_conf_kv *kv = &cfg->kafka.items[i];
        if (strcmp(kv->key, "enable.idempotence") == 0 &&
            strcasecmp(kv->value, "true") != 0) {
            snprintf(errbuf, errlen,
                     "kafka.enable.idempotence: the gateway requires true");
            return -1;
        }
        if ((strcmp(kv->key, "acks") == 0 ||
             strcmp(kv->key, "request.required.acks") == 0) &&
            strcmp(kv->value, "all") != 0 && strcmp(kv->value, "-1") != 0) {
            snprintf(errbuf, errlen, "kafka.%s: the gateway requires all",
                     kv->key);
            return -1;
        }
    }
    return 0;
}

gw_cli gw_config_load(gw_config *cfg, int argc, char **argv)
{
    fg_conf_cli cli;
    gw_cli rc = GW_CLI_EXIT_FAIL;
    char err[512];
    memset(&cli, 0, sizeof(cli));
    switch (fg_conf_cli_start(&cli, argc, argv, "fleetgate-gateway", usage)) {
    case FG_CONF_CLI_EXIT_OK: rc = GW_CLI_EXIT_OK; goto out;
    case FG_CONF_CLI_EXIT_FAIL: goto out;
    case FG_CONF_CLI_CONTINUE: break;
    }
    fg_conf_passthrough pt[] = {
        {"kafka.", &cfg->kafka},
        {"markets.", &cfg->markets},
        {NULL, NULL},
    };
    if (fg_conf_load(gw_slots, cfg, pt, cli.path, environ, cli.sets, cli.nsets, err,
                     sizeof(err)) != FG_OK ||
        derive(cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: configuration error: %s\n", argv[0], err);
        goto out;
    }
    fg_market_map *mm = gw_config_markets(cfg, err, sizeof(err));
    if (!mm) {
        fprintf(stderr, "%s: configuration error: %s\n", argv[0], err);
        goto out;
    }
    fg_market_map_free(mm);
    rd_kafka_conf_t *kc = gw_config_producer(cfg, err, sizeof(err));
    if (!kc) {
        fprintf(stderr, "%s: configuration error: %s\n", argv[0], err);
        goto out;
    }
    rd_kafka_conf_destroy(kc);
    if (cli.check_only) {
        printf("configuration ok\n");
        rc = GW_CLI_EXIT_OK;
        goto out;
    }
    rc = GW_CLI_RUN;
out:
    fg_conf_cli_free(&cli);
    return rc;
}

void gw_config_free(gw_config *cfg)
{
    fg_conf_free(gw_slots, cfg);
    fg_conf_kvs_free(&cfg->kafka);
    fg_conf_kvs_free(&cfg->markets);
}

fg_market_map *gw_config_markets(const gw_config *cfg, char *errbuf,
                                 size_t errlen)
{
    return fg_market_map_from(&cfg->markets, errbuf, errlen);
}

rd_kafka_conf_t *gw_config_producer(const gw_config *cfg, char *errbuf,
                                    size_t errlen)
{
    rd_kafka_conf_t *kc = fg_kafka_conf_base(cfg->gw_id, errbuf, errlen);
    if (!kc)
        return NULL;
    static const char *defaults[][2] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "2"},
        {"message.timeout.ms", "10000"},
        {"queue.buffering.max.messages", "200000"},
        {"queue.buffering.max.kbytes", "65536"},
    };
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        if (fg_kafka_conf_set(kc, defaults[i][0], defaults[i][1], errbuf,
                              errlen) != FG_OK)
            goto fail;
    }
    if (fg_kafka_conf_apply(kc, &cfg->kafka, errbuf, errlen) != FG_OK)
        goto fail;
    return kc;
fail:
    rd_kafka_conf_destroy(kc);
    return NULL;
}

rd_kafka_conf_t *gw_config_consumer(const gw_config *cfg, char *errbuf,
                                    size_t errlen)
{
    rd_kafka_conf_t *kc = fg_kafka_conf_base(cfg->gw_id, errbuf, errlen);
    if (!kc)
        return NULL;
    /* Producer-only keys are meaningless here: keep the shared ones. */
    static const char *producer_only[] = {
        "enable.idempotence", "acks", "request.required.acks", "linger.ms",
        "queue.buffering.max.ms", "message.timeout.ms", "delivery.timeout.ms",
        "queue.buffering.max.messages", "queue.buffering.max.kbytes",
        "compression.codec", "compression.type", "batch.num.messages",
        "batch.size", "message.send.max.retries", "retries",
        "retry.backoff.ms", "partitioner", "sticky.partitioning.linger.ms",
        "request.timeout.ms", "compression.level", "max.in.flight",
        "max.in.flight.requests.per.connection",
    };
    for (size_t i = 0; i < cfg->kafka.n; i++) {
        const fg_conf_kv *kv = &cfg->kafka.items[i];
        int skip = 0;
        for (size_t j = 0; j < sizeof(producer_only) / sizeof(*producer_only);
             j++)
            skip |= strcmp(kv->key, producer_only[j]) == 0;
        if (!skip &&
            fg_kafka_conf_set(kc, kv->key, kv->value, errbuf, errlen) != FG_OK)
            goto fail;
    }
    static const char *defaults[][2] = {
        /* Needed for a consumer queue; never joined: the follower uses
         * assign(), reads from the beginning and commits nothing. */
        {"group.id", "fleetgate-gateway-locks"},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"enable.partition.eof", "true"},
        {"auto.offset.reset", "earliest"},
        {"fetch.wait.max.ms", "100"},
    };
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        if (fg_kafka_conf_set(kc, defaults[i][0], defaults[i][1], errbuf,
                              errlen) != FG_OK)
            goto fail;
    }
    return kc;
fail:
    rd_kafka_conf_destroy(kc);
    return NULL;
}
