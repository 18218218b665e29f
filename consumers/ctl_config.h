/* SPDX-License-Identifier: Apache-2.0 */
/* The control service's configuration: its option table, the [tokens]
 * section (actor = role:sha256hex) turned into the authentication table,
 * the command line (with --hash-token) and the librdkafka configurations
 * built from [kafka]. */
#ifndef CTL_CONFIG_H
#define CTL_CONFIG_H

#include <librdkafka/rdkafka.h>
#include <stdint.h>

#include "ctl_auth.h"
#include "ctl_req.h"
#include "fg_config.h"
#include "fg_http.h"

typedef struct ctl_config {
    char *listen;
    char *admin_listen;
    char *id;
    char *locks_topic;
    char *scores_topic;
    char *audit_topic;
    char *default_message;
    char *log_level;
    int64_t max_ttl_ms;
    int64_t default_ttl_ms;
    int64_t max_pin_ms;
    int64_t max_body;
    int64_t max_connections;
    int64_t read_timeout_ms;
    int64_t publish_timeout_ms;
    int64_t shutdown_timeout_ms;
    char *policies_topic;
    int64_t two_person_devices;
    int64_t request_ttl_ms;
    int64_t history_scores;
    int64_t history_locks;
    int64_t history_memory;
    char *redis_host;     /* "" = no Redis: history in memory only */
    int64_t redis_port;
    int64_t redis_timeout_ms;
    char *redis_prefix;
    int64_t redis_ttl_ms;
    int64_t stream_max_connections; /* GET /v1/stream clients at once */
    int64_t stream_ring;            /* events kept for Last-Event-ID */
    int64_t stream_client_buffer;   /* bytes buffered per slow client */
    int64_t stream_ping_ms;         /* ": ping" comment interval */
    char *dashboard_topic;          /* "" = no JSON copy of stream events */
    char *tls_cert;                 /* PEM chain; "" (and tls_key): HTTP */
    char *tls_key;                  /* PEM private key of tls_cert */
    /* derived */
    char ctl_id[65];
    ctl_req_limits limits;
    ctl_auth *auth;      /* from tokens.* */
    SSL_CTX *tls;        /* from tls_cert and tls_key; NULL: plain HTTP */
    fg_conf_kvs kafka;   /* kafka.* */
    fg_conf_kvs tokens;  /* tokens.<actor> = role:sha256hex */
} ctl_config;

typedef enum ctl_cli { CTL_CLI_RUN = 0, CTL_CLI_EXIT_OK = 1, CTL_CLI_EXIT_FAIL = 2 } ctl_cli;

/* Parses argv (-c FILE, --set k=v, --help, --version, --check-config, and
 * --hash-token, which reads a token from stdin, prints its SHA-256 in hex
 * and exits) and loads cfg (zeroed by the caller), checking every key and
 * building cfg->auth. Prints what it reports. @thread main */
ctl_cli ctl_config_load(ctl_config *cfg, int argc, char **argv);

/* Reads one token from in (at most CTL_TOKEN_MAX bytes; one trailing
 * newline, LF or CRLF, is dropped), and writes its hash in hex and a
 * newline to out. Returns 0, or 2 after a message on err when the token is
 * empty, shorter than CTL_TOKEN_MIN, too long, or has spaces or control
 * characters. @thread main */
int ctl_hash_token(FILE *in, FILE *out, FILE *err);

/* librdkafka configurations: the producer of lock and audit records
 * (idempotent, acks=all) and the readers of the lock and score topics.
 * NULL with errbuf naming the bad key. */
rd_kafka_conf_t *ctl_config_producer(const ctl_config *cfg, char *errbuf,
                                     size_t errlen);
rd_kafka_conf_t *ctl_config_consumer(const ctl_config *cfg,
                                     const char *group, char *errbuf,
                                     size_t errlen);

/* Frees what cfg owns. */
void ctl_config_free(ctl_config *cfg);

#endif
