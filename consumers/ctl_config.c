/* SPDX-License-Identifier: Apache-2.0 */
/* The control service's option table and command line. */
#include "ctl_config.h"

#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_store.h"
#include "fg_kafka.h"
#include "fg_log.h"

extern char **environ;

#define CTL_SLOT(name, type, def, field, min, max, desc)                    \
    { name, type, def, offsetof(ctl_config, field), min, max, desc }

static const fg_conf_slot ctl_slots[] = {
    CTL_SLOT("control.listen", FG_CONF_STR, "127.0.0.1:8081", listen, 0, 0,
             "Address of the control API (host:port)."),
    CTL_SLOT("control.admin_listen", FG_CONF_STR, "127.0.0.1:9182",
             admin_listen, 0, 0,
             "Address of /metrics, /healthz and /readyz (host:port)."),
    CTL_SLOT("control.id", FG_CONF_STR, NULL, id, 0, 0,
             "Instance id (logs, Kafka client id); default hostname-pid."),
    CTL_SLOT("control.locks_topic", FG_CONF_STR, "fleet.region-locks",
             locks_topic, 0, 0,
             "Compacted lock topic: followed from the start, and where "
             "operator decisions are written."),
    CTL_SLOT("control.scores_topic", FG_CONF_STR, "fleet.region-scores",
             scores_topic, 0, 0, "Per-region scores of the scorer, read from "
             "the start."),
    CTL_SLOT("control.audit_topic", FG_CONF_STR, "fleet.audit", audit_topic,
             0, 0, "Where every action and every denial is recorded (JSON)."),
    CTL_SLOT("control.max_ttl", FG_CONF_DURATION, "7d", max_ttl_ms, 1000,
             INT64_C(31536000000), "Longest lock an operator may place."),
    CTL_SLOT("control.default_ttl", FG_CONF_DURATION, "24h", default_ttl_ms,
             1000, INT64_C(31536000000),
             "Lock length when a request gives no ttl_s (at most max_ttl)."),
    CTL_SLOT("control.max_pin", FG_CONF_DURATION, "7d", max_pin_ms, 0,
             INT64_C(31536000000),
             "Longest pin (no automatic lock) an unlock may set."),
    CTL_SLOT("control.default_message", FG_CONF_STR,
             "Service is not available in this region.", default_message, 0,
             0, "Message for devices when a lock request gives none."),
    CTL_SLOT("control.max_body", FG_CONF_SIZE, "16k", max_body, 64,
             1024 * 1024, "Largest request body; larger gets 413."),
    CTL_SLOT("control.max_connections", FG_CONF_INT, "256", max_connections,
             1, 100000, "Open API connections; more are refused."),
    CTL_SLOT("control.read_timeout", FG_CONF_DURATION, "10s", read_timeout_ms,
             100, 600000, "Whole-request read deadline; then 408."),
    CTL_SLOT("control.publish_timeout", FG_CONF_DURATION, "10s",
             publish_timeout_ms, 1000, 300000,
             "A lock or audit record not acknowledged this long fails (503)."),
    CTL_SLOT("control.shutdown_timeout", FG_CONF_DURATION, "10s",
             shutdown_timeout_ms, 0, 600000,
             "SIGTERM: time allowed for requests waiting on the broker."),
    CTL_SLOT("control.policies_topic", FG_CONF_STR, "fleet.region-policies",
             policies_topic, 0, 0,
             "Compacted topic where PUT /v1/regions/{code}/policy writes the "
             "validated policy (key region, JSON value)."),
    CTL_SLOT("control.two_person_devices", FG_CONF_INT, "100000",
             two_person_devices, 0, INT64_C(1000000000000),
             "A lock estimated to reach more devices waits for a second "
             "admin's approval (0: every lock with an estimate does)."),
    CTL_SLOT("control.request_ttl", FG_CONF_DURATION, "15m", request_ttl_ms,
             1000, INT64_C(86400000),
             "How long a pending (two-person) lock request can be approved."),
    CTL_SLOT("control.history_scores", FG_CONF_INT, "60", history_scores, 1,
             1000, "Score rows GET /v1/regions/{code} keeps per region (its "
             "history.scores)."),
    CTL_SLOT("control.history_locks", FG_CONF_INT, "16", history_locks, 1,
             256, "Lock records GET /v1/regions/{code} keeps per region (its "
             "history.locks)."),
    CTL_SLOT("control.history_memory", FG_CONF_SIZE, "64m", history_memory,
             65536, INT64_C(17179869184),
             "Memory for all regions' history; what would not fit is left "
             "out (fleetgate_control_history_refused)."),
    CTL_SLOT("redis.host", FG_CONF_STR, "127.0.0.1", redis_host, 0, 0,
             "Redis that keeps the region picture and history across "
             "restarts; empty: history in memory only."),
    CTL_SLOT("redis.port", FG_CONF_INT, "6379", redis_port, 1, 65535,
             "Redis port."),
    CTL_SLOT("redis.timeout", FG_CONF_DURATION, "2s", redis_timeout_ms, 50,
             600000,
             "A Redis command not answered this long drops the connection."),
    CTL_SLOT("redis.prefix", FG_CONF_STR, "fg:ctl", redis_prefix, 0, 0,
             "Prefix of the control service's Redis keys "
             "(<prefix>:{REGION}:now|scores|locks, <prefix>:regions)."),
    CTL_SLOT("redis.ttl", FG_CONF_DURATION, "3d", redis_ttl_ms, 60000,
             INT64_C(31536000000),
             "A region's Redis keys expire this long after its last change."),
    CTL_SLOT("control.stream_max_connections", FG_CONF_INT, "64",
             stream_max_connections, 0, 100000,
             "Clients of GET /v1/stream (server-sent events) at once; more "
             "get 503 with Retry-After. Each also counts against "
             "control.max_connections. 0 turns the stream off."),
    CTL_SLOT("control.stream_ring", FG_CONF_INT, "1024", stream_ring, 1,
             1000000,
             "Stream events kept in memory, so that a client reconnecting "
             "with Last-Event-ID gets what it missed instead of a new "
             "snapshot."),
    CTL_SLOT("control.stream_client_buffer", FG_CONF_SIZE, "1m",
             stream_client_buffer, 4096, INT64_C(268435456),
             "Stream bytes held for one client that reads slower than events "
             "come (on top of its first snapshot or replay); over it the "
             "client is dropped."),
    CTL_SLOT("control.stream_ping", FG_CONF_DURATION, "15s", stream_ping_ms,
             100, 3600000,
             "Interval of the \": ping\" comment on every stream, which keeps "
             "proxies from closing quiet connections."),
    CTL_SLOT("control.dashboard_topic", FG_CONF_STR, "", dashboard_topic, 0,
             0,
             "When set, every stream event (score, lock) is also written to "
             "this topic as JSON (key region, the event's data plus "
             "\"event\"); empty: off."),
    CTL_SLOT("control.tls_cert", FG_CONF_STR, "", tls_cert, 0, 0,
             "PEM file with the API's TLS certificate, then any "
             "intermediates; set with control.tls_key to serve HTTPS (TLS "
             "1.2+). Both empty: plain HTTP."),
    CTL_SLOT("control.tls_key", FG_CONF_STR, "", tls_key, 0, 0,
             "PEM file with the private key of control.tls_cert."),
    CTL_SLOT("log.level", FG_CONF_STR, "info", log_level, 0, 0,
             "debug, info, warn or error."),
    FG_CONF_END,
};

static void usage(FILE *out, const char *prog)
{
    fprintf(out,
            "Usage: %s [-c FILE] [--set KEY=VALUE]... [--check-config]\n"
            "       %s --hash-token < token-file\n"
            "\n"
            "fleetgate control service: an authenticated JSON API to see every\n"
            "region and to lock and unlock regions; decisions go to the lock\n"
            "topic, every action and denial to the audit topic.\n"
            "\n"
            "  -c, --config FILE   INI configuration file\n"
            "      --set KEY=VALUE override one key (repeatable)\n"
            "      --check-config  load the configuration, report, and exit\n"
            "      --hash-token    read a token on stdin, print its SHA-256 (hex)\n"
            "                      for the [tokens] section, and exit\n"
            "  -h, --help          this text\n"
            "  -V, --version       print the version\n"
            "\n"
            "Sources, later wins: defaults, the file, FLEETGATE_* environment\n"
            "variables, --set. kafka.* goes to librdkafka. [tokens] lists who may\n"
            "call the API, one actor per key: `alice = operator:<sha256 hex>`,\n"
            "roles viewer (read), operator (lock, unlock), admin (unlock-all,\n"
            "policies, approving mass locks).\n"
            "\nOptions:\n",
            prog, prog);
    fg_conf_help(ctl_slots, out);
}

int ctl_hash_token(FILE *in, FILE *out, FILE *err)
{
    char buf[CTL_TOKEN_MAX + 3];
    unsigned char d[CTL_SHA256_LEN];
    char hex[65];
    int rc = 2;
    size_t n = fread(buf, 1, sizeof(buf), in);
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n > CTL_TOKEN_MAX) {
        fprintf(err, "token: longer than %d bytes\n", CTL_TOKEN_MAX);
        goto out;
    }
    if (n < CTL_TOKEN_MIN) {
        fprintf(err, "token: %zu bytes; use at least %d random bytes "
                "(e.g. openssl rand -hex 32)\n", n, CTL_TOKEN_MIN);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f) {
            fprintf(err, "token: spaces and control characters are not "
                    "allowed\n");
            goto out;
        }
    if (ctl_sha256(buf, n, d) != 0) {
        fprintf(err, "token: hashing failed\n");
        goto out;
    }
    ctl_sha256_hex(d, hex);
    fprintf(out, "%s\n", hex);
    rc = 0;
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

static int derive(ctl_config *cfg, char *errbuf, size_t errlen)
{
    char e[256];
    if (fg_log_level_parse(cfg->log_level) < 0) {
        snprintf(errbuf, errlen, "log.level: '%s' is not one of debug, info, "
                 "warn, error", cfg->log_level);
        return -1;
    }
    if (cfg->default_ttl_ms > cfg->max_ttl_ms) {
        snprintf(errbuf, errlen, "control.default_ttl: over control.max_ttl");
        return -1;
    }
    if (cfg->dashboard_topic[0] &&
        (strcmp(cfg->dashboard_topic, cfg->locks_topic) == 0 ||
         strcmp(cfg->dashboard_topic, cfg->scores_topic) == 0 ||
         strcmp(cfg->dashboard_topic, cfg->audit_topic) == 0 ||
         strcmp(cfg->dashboard_topic, cfg->policies_topic) == 0)) {
        /* JSON copies on the lock topic would replace lock records. */
        snprintf(errbuf, errlen, "control.dashboard_topic: '%s' is already "
                 "the lock, score, audit or policies topic; use a topic of "
                 "its own", cfg->dashboard_topic);
        return -1;
    }
    if (cfg->stream_max_connections >= cfg->max_connections) {
        snprintf(errbuf, errlen, "control.stream_max_connections: must be "
                 "below control.max_connections (%lld), or streams could "
                 "leave no connection for API calls",
                 (long long)cfg->max_connections);
        return -1;
    }
    if (cfg->redis_host[0] && !ctl_store_prefix_ok(cfg->redis_prefix)) {
        snprintf(errbuf, errlen, "redis.prefix: '%s' is not 1 to %d printable "
                 "bytes without spaces or braces", cfg->redis_prefix,
                 CTL_STORE_PREFIX_MAX);
        return -1;
    }
    if (strlen(cfg->default_message) > FG_LOCK_MESSAGE_MAX) {
        snprintf(errbuf, errlen, "control.default_message: over %d bytes",
                 FG_LOCK_MESSAGE_MAX);
        return -1;
    }
    if (!cfg->tls_cert[0] != !cfg->tls_key[0]) {
        snprintf(errbuf, errlen, "%s: must be set with %s (both or neither)",
                 cfg->tls_cert[0] ? "control.tls_key" : "control.tls_cert",
                 cfg->tls_cert[0] ? "control.tls_cert" : "control.tls_key");
        return -1;
    }
    if (cfg->tls_cert[0]) {
        fg_http_tls_file bad = FG_HTTP_TLS_NONE;
        cfg->tls = fg_http_tls_ctx_new(cfg->tls_cert, cfg->tls_key, &bad, e,
                                       sizeof(e));
        if (!cfg->tls) {
            snprintf(errbuf, errlen, "%s: %s",
                     bad == FG_HTTP_TLS_KEY ? "control.tls_key"
                                            : "control.tls_cert", e);
            return -1;
        }
    }
    /* A longer control.id is cut to fit. */
    (void)fg_conf_instance_id(cfg->ctl_id, sizeof(cfg->ctl_id), cfg->id,
                              "control");
    cfg->limits.max_ttl_s = cfg->max_ttl_ms / 1000;
    cfg->limits.default_ttl_s = cfg->default_ttl_ms / 1000;
    cfg->limits.max_pin_s = cfg->max_pin_ms / 1000;
    cfg->auth = ctl_auth_new();
    if (!cfg->auth) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->tokens.n; i++) {
        const fg_conf_kv *kv = &cfg->tokens.items[i];
        if (ctl_auth_add(cfg->auth, kv->key, kv->value, e, sizeof(e)) !=
            FG_OK) {
            snprintf(errbuf, errlen, "tokens.%s: %s", kv->key, e);
            return -1;
        }
    }
    return 0;
}

ctl_cli ctl_config_load(ctl_config *cfg, int argc, char **argv)
{
    fg_conf_cli cli;
    ctl_cli rc = CTL_CLI_EXIT_FAIL;
    char err[512];
    memset(&cli, 0, sizeof(cli));
    /* --hash-token stands alone: it never reads a configuration. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--hash-token") == 0) {
            if (argc != 2) {
                fprintf(stderr, "%s: --hash-token takes no other argument\n",
                        argv[0]);
                return CTL_CLI_EXIT_FAIL;
            }
            return ctl_hash_token(stdin, stdout, stderr) == 0
                       ? CTL_CLI_EXIT_OK
                       : CTL_CLI_EXIT_FAIL;
        }
    switch (fg_conf_cli_start(&cli, argc, argv, "fleetgate-control", usage)) {
    case FG_CONF_CLI_EXIT_OK: rc = CTL_CLI_EXIT_OK; goto out;
    case FG_CONF_CLI_EXIT_FAIL: goto out;
    case FG_CONF_CLI_CONTINUE: break;
    }
    fg_conf_passthrough pt[] = {
        {"kafka.", &cfg->kafka},
        {"tokens.", &cfg->tokens},
        {NULL, NULL},
    };
    if (fg_conf_load(ctl_slots, cfg, pt, cli.path, environ, cli.sets,
                     cli.nsets, err, sizeof(err)) != FG_OK ||
        derive(cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: configuration error: %s\n", argv[0], err);
        goto out;
    }
    rd_kafka_conf_t *kc = ctl_config_producer(cfg, err, sizeof(err));
    if (kc) {
        rd_kafka_conf_destroy(kc);
        kc = ctl_config_consumer(cfg, "check", err, sizeof(err));
    }
    if (!kc) {
        fprintf(stderr, "%s: configuration error: %s\n", argv[0], err);
        goto out;
    }
    rd_kafka_conf_destroy(kc);
    if (cli.check_only) {
        printf("configuration ok (%zu tokens)\n", ctl_auth_count(cfg->auth));
        rc = CTL_CLI_EXIT_OK;
        goto out;
    }
    rc = CTL_CLI_RUN;
out:
    fg_conf_cli_free(&cli);
    return rc;
}

rd_kafka_conf_t *ctl_config_producer(const ctl_config *cfg, char *errbuf,
                                     size_t errlen)
{
    char timeout[32];
    rd_kafka_conf_t *kc = fg_kafka_conf_base(cfg->ctl_id, errbuf, errlen);
    if (!kc)
        return NULL;
    snprintf(timeout, sizeof(timeout), "%lld",
             (long long)cfg->publish_timeout_ms);
    const char *const defs[][2] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "1"},
        {"message.timeout.ms", timeout},
    };
    for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++)
        if (fg_kafka_conf_set(kc, defs[i][0], defs[i][1], errbuf, errlen) !=
            FG_OK)
            goto fail;
    if (fg_kafka_conf_apply(kc, &cfg->kafka, errbuf, errlen) != FG_OK)
        goto fail;
    /* Operator decisions are never at-most-once, whatever kafka.* says. */
    if (fg_kafka_conf_set(kc, "enable.idempotence", "true", errbuf, errlen) !=
            FG_OK ||
        fg_kafka_conf_set(kc, "acks", "all", errbuf, errlen) != FG_OK)
        goto fail;
    return kc;
fail:
    rd_kafka_conf_destroy(kc);
    return NULL;
}

rd_kafka_conf_t *ctl_config_consumer(const ctl_config *cfg, const char *group,
                                     char *errbuf, size_t errlen)
{
    /* Producer-only keys mean nothing to a consumer: skip them. */
    static const char *const producer_only[] = {
        "enable.idempotence", "acks", "request.required.acks", "linger.ms",
        "queue.buffering.max.ms", "message.timeout.ms", "delivery.timeout.ms",
        "queue.buffering.max.messages", "queue.buffering.max.kbytes",
        "compression.codec", "compression.type", "batch.num.messages",
        "batch.size", "message.send.max.retries", "retries",
        "retry.backoff.ms", "partitioner", "sticky.partitioning.linger.ms",
        "request.timeout.ms", "compression.level", "max.in.flight",
        "max.in.flight.requests.per.connection",
    };
    rd_kafka_conf_t *kc = fg_kafka_conf_base(cfg->ctl_id, errbuf, errlen);
    if (!kc)
        return NULL;
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
    const char *const defs[][2] = {
        {"group.id", group},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"enable.partition.eof", "true"},
        {"auto.offset.reset", "earliest"},
        {"fetch.wait.max.ms", "100"},
    };
    for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++)
        if (fg_kafka_conf_set(kc, defs[i][0], defs[i][1], errbuf, errlen) !=
            FG_OK)
            goto fail;
    return kc;
fail:
    rd_kafka_conf_destroy(kc);
    return NULL;
}

void ctl_config_free(ctl_config *cfg)
{
    fg_conf_free(ctl_slots, cfg);
    fg_conf_kvs_free(&cfg->kafka);
    if (cfg->tokens.items)
        for (size_t i = 0; i < cfg->tokens.n; i++)
            if (cfg->tokens.items[i].value)
                OPENSSL_cleanse(cfg->tokens.items[i].value,
                                strlen(cfg->tokens.items[i].value));
    fg_conf_kvs_free(&cfg->tokens);
    ctl_auth_free(cfg->auth);
    cfg->auth = NULL;
    SSL_CTX_free(cfg->tls);
    cfg->tls = NULL;
}
